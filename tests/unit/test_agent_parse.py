"""agent.parse: JSON log lines in the common formats, timestamps and ids."""

from __future__ import annotations

import calendar
from typing import Any

import orjson
import pytest

from tether.agent.parse import ParsedLine, parse_line, parse_timestamp
from tether.schemas.log_fields import default_mapping

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
NS = 1_000_000_000
# 2024-01-02T03:04:05Z: 2024-01-01 is 1704067200, plus one day, 3 h, 4 min and 5 s.
T0_S = 1_704_067_200 + 86_400 + 3 * 3600 + 4 * 60 + 5
T0 = T0_S * NS


def parse(record: Any) -> ParsedLine:
    return parse_line(orjson.dumps(record), default_mapping())


def test_reference_second_is_right() -> None:
    assert calendar.timegm((2024, 1, 2, 3, 4, 5, 0, 0, 0)) == T0_S


def test_tether_format() -> None:
    raw = orjson.dumps(
        {
            "@timestamp": "2024-01-02T03:04:05.123Z",
            "level": "INFO",
            "service": "checkout",
            "trace_id": TRACE,
            "span_id": SPAN,
            "message": "order placed",
            "data": {"order": 7},
        }
    )
    parsed = parse_line(raw, default_mapping())
    assert parsed == ParsedLine(
        text=raw.decode(),
        time_unix_nano=T0 + 123_000_000,
        level="INFO",
        severity_number=9,
        trace_id=bytes.fromhex(TRACE),
        span_id=bytes.fromhex(SPAN),
        service="checkout",
        parse_error=False,
    )


def test_tether_format_without_span_id() -> None:
    parsed = parse(
        {"@timestamp": "2024-01-02T03:04:05Z", "level": "error", "service": "s", "trace_id": TRACE}
    )
    assert parsed.trace_id == bytes.fromhex(TRACE)
    assert parsed.span_id == b""
    assert parsed.severity_number == 17


def test_ecs_flat_keys() -> None:
    parsed = parse(
        {
            "@timestamp": "2024-01-02T05:04:05+02:00",
            "log.level": "warn",
            "trace.id": TRACE,
            "span.id": SPAN,
            "service.name": "checkout",
            "message": "m",
        }
    )
    assert parsed.time_unix_nano == T0
    assert (parsed.level, parsed.severity_number) == ("warn", 13)
    assert parsed.trace_id == bytes.fromhex(TRACE)
    assert parsed.span_id == bytes.fromhex(SPAN)
    assert parsed.service == "checkout"
    assert not parsed.parse_error


def test_ecs_nested_objects() -> None:
    parsed = parse(
        {
            "@timestamp": "2024-01-02T03:04:05Z",
            "log": {"level": "error", "logger": "app"},
            "trace": {"id": TRACE},
            "span": {"id": SPAN},
            "message": "m",
        }
    )
    assert parsed.time_unix_nano == T0
    assert (parsed.level, parsed.severity_number) == ("error", 17)
    assert parsed.trace_id == bytes.fromhex(TRACE)
    assert parsed.span_id == bytes.fromhex(SPAN)
    assert not parsed.parse_error


def test_ecs_nested_service_name() -> None:
    # ECS writes {"service": {"name": ...}}; the service is its name, not the object's repr.
    parsed = parse({"@timestamp": "2024-01-02T03:04:05Z", "service": {"name": "checkout"}, "message": "m"})
    assert parsed.service == "checkout"


def test_otel_style_keys() -> None:
    parsed = parse(
        {
            "timeUnixNano": "1704164645123456789",
            "severityText": "ERROR",
            "traceId": TRACE,
            "spanId": SPAN,
            "body": "boom",
            "serviceName": "payments",
        }
    )
    assert parsed.time_unix_nano == 1_704_164_645_123_456_789
    assert (parsed.level, parsed.severity_number) == ("ERROR", 17)
    assert parsed.trace_id == bytes.fromhex(TRACE)
    assert parsed.span_id == bytes.fromhex(SPAN)
    assert parsed.service == "payments"


def test_ts_msg_lvl_keys() -> None:
    parsed = parse({"ts": 1704164645.5, "lvl": "debug", "msg": "hello", "app": "web"})
    assert abs(parsed.time_unix_nano - (T0 + 500_000_000)) < 1000
    assert (parsed.level, parsed.severity_number) == ("debug", 5)
    assert parsed.service == "web"
    assert parsed.trace_id == b""
    assert not parsed.parse_error


def test_time_key_with_epoch_milliseconds() -> None:
    parsed = parse({"time": T0_S * 1000 + 250, "msg": "x", "level": "info"})
    assert parsed.time_unix_nano == T0 + 250_000_000


def test_time_key_with_rfc3339() -> None:
    assert parse({"time": "2024-01-02T03:04:05Z", "msg": "x"}).time_unix_nano == T0


def test_first_listed_key_wins() -> None:
    parsed = parse({"ts": 0, "@timestamp": "2024-01-02T03:04:05Z", "lvl": "error", "level": "info"})
    assert parsed.time_unix_nano == T0
    assert parsed.level == "info"


def test_missing_fields_are_empty() -> None:
    assert parse({"message": "only a message"}) == ParsedLine(
        text='{"message":"only a message"}',
        time_unix_nano=0,
        level="",
        severity_number=0,
        trace_id=b"",
        span_id=b"",
        service="",
        parse_error=False,
    )


def test_unknown_level_keeps_its_text() -> None:
    parsed = parse({"level": "CHATTY"})
    assert (parsed.level, parsed.severity_number) == ("CHATTY", 0)


@pytest.mark.parametrize(
    "raw",
    [b"{not json}", b'{"unterminated": ', b' \t{"a": 1', b'{"a": 1} trailing'],
)
def test_lines_that_start_as_an_object_and_are_none_are_parse_errors(raw: bytes) -> None:
    parsed = parse_line(raw, default_mapping())
    assert parsed == ParsedLine(raw.decode(), 0, "", 0, b"", b"", "", True)


@pytest.mark.parametrize(
    "raw",
    [
        b"plain text, not json",
        b"",
        b"[1, 2, 3]",
        b'"a json string"',
        b"42",
        b"null",
        b"true",
        b"\tat com.example.Main.run(Main.java:12)",
        b"Traceback (most recent call last):",
    ],
)
def test_plain_text_lines_are_messages_not_parse_errors(raw: bytes) -> None:
    parsed = parse_line(raw, default_mapping())
    assert parsed == ParsedLine(raw.decode(), 0, "", 0, b"", b"", "", False)


def test_trailing_newline_is_still_json() -> None:
    parsed = parse_line(b'{"level":"info","trace_id":"' + TRACE.encode() + b'"}\n', default_mapping())
    assert not parsed.parse_error
    assert parsed.trace_id == bytes.fromhex(TRACE)


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xfe not utf-8 at all", b'{"message": "caf\xe9", "level": "info"}', b"\xc3\x28"],
)
def test_invalid_utf8_is_replaced_not_raised(raw: bytes) -> None:
    parsed = parse_line(raw, default_mapping())
    assert "\ufffd" in parsed.text
    assert parsed.text == raw.decode("utf-8", errors="replace")
    assert parsed.text.encode("utf-8")  # representable: it goes into a protobuf string field


@pytest.mark.parametrize(
    "value",
    [
        "",
        "abc",
        TRACE[:-2],
        TRACE + "00",
        "g" * 32,
        "0x" + TRACE[2:],
        "0" * 32,
        12345,
        None,
        [TRACE],
        {"id": 1},
    ],
)
def test_invalid_trace_ids_are_empty(value: Any) -> None:
    parsed = parse({"trace_id": value, "span_id": SPAN})
    assert parsed.trace_id == b""
    assert parsed.span_id == bytes.fromhex(SPAN)


@pytest.mark.parametrize("value", ["", SPAN[:-1], SPAN + "0", "z" * 16, "0" * 16, 7, None])
def test_invalid_span_ids_are_empty(value: Any) -> None:
    parsed = parse({"trace_id": TRACE, "span_id": value})
    assert parsed.span_id == b""
    assert parsed.trace_id == bytes.fromhex(TRACE)


@pytest.mark.parametrize(
    ("key", "value", "size"),
    [
        ("trace_id", "  " + TRACE[2:], 16),  # 32 characters, only 15 bytes of hex
        ("trace_id", TRACE[:16] + "  " + TRACE[18:], 16),
        ("trace_id", " ".join(TRACE[i : i + 2] for i in range(0, 22, 2)), 16),
        ("span_id", SPAN[:8] + "  " + SPAN[10:], 8),  # 16 characters, only 7 bytes
    ],
)
def test_ids_with_whitespace_are_invalid(key: str, value: str, size: int) -> None:
    assert len(value) == size * 2
    parsed = parse({key: value})
    assert getattr(parsed, key) == b""


# ---------------------------------------------------------------- parse_timestamp


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-02T03:04:05Z", T0),
        ("2024-01-02T03:04:05.123Z", T0 + 123_000_000),
        ("2024-01-02T03:04:05.123456Z", T0 + 123_456_000),
        ("2024-01-02T03:04:05+00:00", T0),
        ("2024-01-02T05:04:05+02:00", T0),
        ("2024-01-02T05:04:05.5+02:00", T0 + 500_000_000),
        ("2024-01-01T22:04:05-05:00", T0),
        ("2024-01-02T08:34:05+05:30", T0),
        ("2024-01-02T03:04:05", T0),  # no offset: read as UTC
        ("  2024-01-02T03:04:05Z  ", T0),
    ],
)
def test_rfc3339(value: str, expected: int) -> None:
    assert parse_timestamp(value) == expected


def test_rfc3339_with_nanoseconds_keeps_them() -> None:
    # Go's RFC3339Nano and OpenTelemetry exporters write nine fractional digits.
    assert parse_timestamp("2024-01-02T03:04:05.123456789Z") == T0 + 123_456_789


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (T0_S, T0),
        (T0_S * 1000 + 123, T0 + 123_000_000),
        (T0_S * 1_000_000 + 123_456, T0 + 123_456_000),
        (T0 + 123_456_789, T0 + 123_456_789),
        (str(T0_S), T0),
        (str(T0_S * 1000 + 123), T0 + 123_000_000),
        (str(T0_S * 1_000_000 + 123_456), T0 + 123_456_000),
        (str(T0 + 123_456_789), T0 + 123_456_789),
        (0, 0),
        (1, NS),
    ],
)
def test_epoch_integers_and_numeric_strings(value: int | str, expected: int) -> None:
    assert parse_timestamp(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (T0_S + 0.25, T0 + 250_000_000),
        (T0_S * 1000 + 123.5, T0 + 123_500_000),
        (float(T0_S * 1_000_000 + 7), T0 + 7_000),
        (f"{T0_S}.25", T0 + 250_000_000),
        (f"{T0_S * 1000}.5", T0 + 500_000),
    ],
)
def test_epoch_floats(value: float | str, expected: int) -> None:
    # Floats carry about 16 significant digits: allow one microsecond of rounding.
    assert abs(parse_timestamp(value) - expected) <= 1000


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        "",
        "   ",
        "yesterday",
        "12:00:00",
        "2024-13-45T00:00:00Z",
        "1.2.3",
        "NaN",
        [T0_S],
        {"seconds": T0_S},
    ],
)
def test_garbage_is_zero(value: Any) -> None:
    assert parse_timestamp(value) == 0


@pytest.mark.parametrize("value", [-1, -1.5, "-5", 1e300, 10**23, str(10**23), 2**64])
def test_out_of_range_epochs_are_unusable(value: Any) -> None:
    # The result becomes a fixed64 protobuf field (LogRecord.time_unix_nano): a timestamp that
    # cannot be stored there is no usable timestamp (0), not a value that fails encoding later.
    result = parse_timestamp(value)
    assert 0 <= result < 2**64
