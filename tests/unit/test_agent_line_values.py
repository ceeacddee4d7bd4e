"""What the agent reads of a line's level and trace context, on both encoders: level names in any
case and abbreviation, numeric levels, Go slog's steps, a level implied by Serilog's CLEF, ids in
either case, W3C traceparent and Google Cloud trace names, and plain text that is no parse error."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from tether.agent.chunks import ChunkEncoder, NativeChunkEncoder, PythonChunkEncoder
from tether.native import extension
from tether.schemas.log_fields import default_mapping
from tether.schemas.records import ATTR_PARSE_ERROR

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
OTHER_SPAN = "b7ad6b7169203331"


def _encoders() -> list[ChunkEncoder]:
    common: dict[str, Any] = {
        "agent_id": "agent-7",
        "partitions": 4,
        "mapping": default_mapping(),
        "max_line_bytes": 1 << 16,
    }
    encoders: list[ChunkEncoder] = [PythonChunkEncoder(**common)]
    if extension() is not None:
        encoders.append(NativeChunkEncoder(**common))
    return encoders


def _record(encoder: ChunkEncoder, line: bytes) -> LogRecord:
    encoded = encoder.encode(
        line + b"\n", 0, fingerprint="fp", path="/var/log/a.log", untraced_partition=0, observed_ns=1
    )
    [value] = encoded.records.values()
    [record] = ExportLogsServiceRequest.FromString(value).resource_logs[0].scope_logs[0].log_records
    return record


@pytest.fixture(params=_encoders(), ids=lambda e: e.name)
def encoder(request: pytest.FixtureRequest) -> ChunkEncoder:
    return request.param  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("fields", "text", "number"),
    [
        ({"level": 30}, "30", 9),  # pino, bunyan
        ({"level": 50}, "50", 17),
        ({"level": 60}, "60", 21),
        ({"level": "40"}, "40", 13),
        ({"level": 35}, "35", 0),  # no numeric level of the table
        ({"level": "WRN"}, "WRN", 13),
        ({"level": "Information"}, "Information", 9),
        ({"level": "INFO+2"}, "INFO+2", 11),  # Go slog
        ({"level": "DEBUG-4"}, "DEBUG-4", 1),
        ({"@l": "Warning", "@mt": "x"}, "Warning", 13),  # Serilog CLEF
        ({"@mt": "Hello {Name}", "Name": "x"}, "", 9),  # CLEF leaves out Information
        ({"@m": "Hello"}, "", 9),
        ({"msg": "no level"}, "", 0),
        ({"LogLevel": "Critical"}, "Critical", 21),  # Microsoft.Extensions.Logging
        ({"levelname": "WARNING"}, "WARNING", 13),  # python logging
        ({"record": {"level": {"name": "SUCCESS", "no": 25}}}, "SUCCESS", 0),  # loguru's own level
        ({"record": {"level": {"name": "ERROR", "no": 40}}}, "ERROR", 17),
        ({"severity": "ALERT"}, "ALERT", 22),  # Google Cloud
        ({"level": True}, "True", 0),
    ],
)
def test_levels(encoder: ChunkEncoder, fields: dict[str, Any], text: str, number: int) -> None:
    record = _record(encoder, orjson.dumps(fields))
    assert (record.severity_text, record.severity_number) == (text, number)


@pytest.mark.parametrize(
    ("fields", "trace", "span"),
    [
        ({"trace_id": TRACE.upper(), "span_id": SPAN.upper()}, TRACE, SPAN),
        ({"traceparent": f"00-{TRACE}-{SPAN}-01"}, TRACE, SPAN),
        ({"traceparent": f"00-{TRACE.upper()}-{SPAN}-01", "span_id": OTHER_SPAN}, TRACE, OTHER_SPAN),
        ({"traceparent": f"00-{'0' * 32}-{SPAN}-01"}, "", ""),  # an invalid trace names no span
        ({"traceparent": f"0x-{TRACE}-{SPAN}-01"}, "", ""),
        ({"traceparent": f"00_{TRACE}_{SPAN}_01"}, "", ""),
        ({"logging.googleapis.com/trace": f"projects/my-project/traces/{TRACE}"}, TRACE, ""),
        (
            {
                "logging.googleapis.com/trace": f"projects/p/traces/{TRACE}",
                "logging.googleapis.com/spanId": SPAN,
            },
            TRACE,
            SPAN,
        ),
        ({"trace_id": f"projects/p/traces/{TRACE}"}, TRACE, ""),
        ({"trace_id": f"other/p/traces/{TRACE}"}, "", ""),
        ({"@tr": TRACE, "@sp": SPAN}, TRACE, SPAN),  # Serilog CLEF
        ({"otelTraceID": TRACE, "otelSpanID": SPAN}, TRACE, SPAN),  # OpenTelemetry logging
        ({"fields": {"trace_id": TRACE, "span_id": SPAN}}, TRACE, SPAN),  # tracing-subscriber
        ({"record": {"extra": {"trace_id": TRACE, "span_id": SPAN}}}, TRACE, SPAN),  # loguru
        ({"trace_id": TRACE[:30]}, "", ""),  # 15 bytes: no id at all
        ({"trace_id": TRACE, "span_id": SPAN[:14]}, TRACE, ""),
    ],
)
def test_trace_context(encoder: ChunkEncoder, fields: dict[str, Any], trace: str, span: str) -> None:
    record = _record(encoder, orjson.dumps(fields))
    assert (record.trace_id.hex(), record.span_id.hex()) == (trace, span)


@pytest.mark.parametrize(
    ("line", "parse_error"),
    [
        (b"plain text from a container", False),
        (b"\tat com.example.Main.run(Main.java:12)", False),
        (b"[1, 2]", False),
        (b"  {broken json", True),
        (b'{"a": 1} trailing', True),
    ],
)
def test_only_lines_that_start_as_objects_can_be_parse_errors(
    encoder: ChunkEncoder, line: bytes, parse_error: bool
) -> None:
    record = _record(encoder, line)
    assert record.body.string_value == line.decode()
    assert any(a.key == ATTR_PARSE_ERROR for a in record.attributes) is parse_error
