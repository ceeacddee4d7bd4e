"""Write the .NET logger corpus files BY SPECIFICATION, NOT PRODUCED BY THE LIBRARY.

.NET cannot be installed on this machine, so Serilog and Microsoft.Extensions.Logging
cannot be run. This script writes lines the way their published formats and formatter
sources say the libraries write them (see README.md beside this file for the sources):

- dotnet-serilog-clef-compact: Serilog.Formatting.Compact CompactJsonFormatter
- dotnet-serilog-clef-rendered: Serilog.Formatting.Compact RenderedCompactJsonFormatter
- dotnet-mel-json-console: Microsoft.Extensions.Logging.Console JsonConsoleFormatter
  (IncludeScopes, TimestampFormat "O", UseUtcTimestamp, ActivityTrackingOptions
  SpanId|TraceId|ParentId as the .NET Generic Host sets them)

The trace/span ids are random W3C ids standing in for System.Diagnostics.Activity ids.
Each <name>.expected.jsonl is written from what the script passed in (never by parsing
the written lines), with the clock read around the writing of each line.

Usage: python spec_lines.py OUTPUT_DIR
"""

from __future__ import annotations

import json
import re
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

NS_PER_SECOND = 1_000_000_000
NS_PER_MS = 1_000_000
NS_PER_DOTNET_TICK = 100


# ---------------------------------------------------------------- values and events


@dataclass(frozen=True)
class Structure:
    """A destructured object ({@Cart} in a Serilog template): properties plus a type tag."""

    type_tag: str
    properties: tuple[tuple[str, Value], ...]


Value = Union[int, float, str, Structure, None]  # noqa: UP007 (a recursive alias needs Union)


@dataclass(frozen=True)
class Span:
    """Stands in for a W3C System.Diagnostics.Activity: random ids, no parent."""

    trace_id: str = field(default_factory=lambda: secrets.token_hex(16))
    span_id: str = field(default_factory=lambda: secrets.token_hex(8))
    parent_span_id: str = "0000000000000000"


@dataclass(frozen=True)
class Event:
    """One log call: level (canonical name), template and the values it was given."""

    level: str
    template: str
    arguments: tuple[Value, ...] = ()
    exception: str | None = None
    span: Span | None = None
    # Serilog: properties from enrichers / ForContext, written after the template's.
    context: tuple[tuple[str, Value], ...] = ()
    # Microsoft.Extensions.Logging only.
    event_id: int = 0
    scope: tuple[str, tuple[Value, ...]] | None = None


TOKEN = re.compile(r"\{(?P<hint>[@$]?)(?P<name>[A-Za-z0-9_]+)(?::(?P<format>[^}]+))?\}")


@dataclass(frozen=True)
class Token:
    hint: str
    name: str
    format: str | None
    start: int
    end: int


def template_tokens(template: str) -> list[Token]:
    return [
        Token(m.group("hint"), m.group("name"), m.group("format"), m.start(), m.end())
        for m in TOKEN.finditer(template)
    ]


# .NET custom numeric formats used by the templates below, and the Python spec for each.
NUMERIC_FORMATS = {"0.0": ".1f", "0.00": ".2f"}


def dotnet_number(value: int | float) -> str:
    """Invariant-culture number text; .NET Core 3+ prints doubles shortest round-trip, like repr."""
    return str(value) if isinstance(value, int) else repr(value)


def apply_format(value: Value, dotnet_format: str) -> str:
    if not isinstance(value, int | float):
        raise ValueError(f"format {dotnet_format!r} needs a number, got {value!r}")
    return format(value, NUMERIC_FORMATS[dotnet_format])


def render(template: str, values: Sequence[Value], render_value: Callable[[Value], str]) -> str:
    out: list[str] = []
    position = 0
    for token, value in zip(template_tokens(template), values, strict=True):
        out.append(template[position : token.start])
        out.append(apply_format(value, token.format) if token.format else render_value(value))
        position = token.end
    out.append(template[position:])
    return "".join(out)


def bind(template: str, values: Sequence[Value]) -> list[tuple[str, Value]]:
    return [(t.name, v) for t, v in zip(template_tokens(template), values, strict=True)]


# ---------------------------------------------------------------- Serilog


def serilog_quote(text: str) -> str:
    """Serilog JsonValueFormatter.WriteQuotedJsonString: escapes only '"', '\\' and
    control characters (short forms for \\n \\r \\f \\t, else \\uXXXX upper case); non-ASCII
    stays raw."""
    short = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\f": "\\f", "\t": "\\t"}
    out = []
    for ch in text:
        if ch in short:
            out.append(short[ch])
        elif ord(ch) < 32:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def serilog_json_value(value: Value) -> str:
    if value is None:
        return "null"
    if isinstance(value, Structure):
        members = [f"{serilog_quote(k)}:{serilog_json_value(v)}" for k, v in value.properties]
        members.append(f'"$type":{serilog_quote(value.type_tag)}')  # the type tag comes last
        return "{" + ",".join(members) + "}"
    if isinstance(value, str):
        return serilog_quote(value)
    return dotnet_number(value)


def serilog_render_value(value: Value) -> str:
    """How Serilog renders a property into message text: strings in double quotes (inner
    quotes escaped with a backslash), numbers plain, structures as Type { A: 1 }."""
    if value is None:
        return "null"
    if isinstance(value, Structure):
        inner = ", ".join(f"{k}: {serilog_render_value(v)}" for k, v in value.properties)
        return f"{value.type_tag} {{ {inner} }}"
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    return dotnet_number(value)


SERILOG_LEVELS = {
    "trace": "Verbose",
    "debug": "Debug",
    "info": "Information",
    "warn": "Warning",
    "error": "Error",
    "fatal": "Fatal",
}


def dotnet_utc_roundtrip(ns: int, suffix: str) -> str:
    """DateTime.ToString("O") of a UTC time: seven fractional digits (100 ns ticks)."""
    seconds, rest = divmod(ns, NS_PER_SECOND)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{rest // NS_PER_DOTNET_TICK:07d}{suffix}"


def event_id_hash(template: str) -> str:
    """Serilog.Formatting.Compact EventIdHash: Jenkins one-at-a-time over UTF-16 units."""
    units = template.encode("utf-16-le")
    h = 0
    mask = 0xFFFFFFFF
    for i in range(0, len(units), 2):
        h = (h + int.from_bytes(units[i : i + 2], "little")) & mask
        h = (h + (h << 10)) & mask
        h ^= h >> 6
    h = (h + (h << 3)) & mask
    h ^= h >> 11
    h = (h + (h << 15)) & mask
    return f"{h:08x}"


def serilog_properties(event: Event) -> list[tuple[str, Value]]:
    return bind(event.template, event.arguments) + list(event.context)


def serilog_property_members(event: Event) -> list[str]:
    members = []
    for name, value in serilog_properties(event):
        escaped = "@" + name if name.startswith("@") else name  # CLEF: @name is written @@name
        members.append(f"{serilog_quote(escaped)}:{serilog_json_value(value)}")
    return members


def serilog_level_exception_ids(event: Event) -> list[str]:
    members = []
    if event.level != "info":  # Information is the level CLEF leaves out
        members.append(f'"@l":"{SERILOG_LEVELS[event.level]}"')
    if event.exception is not None:
        members.append(f'"@x":{serilog_quote(event.exception)}')
    if event.span is not None:
        members.append(f'"@tr":"{event.span.trace_id}"')
        members.append(f'"@sp":"{event.span.span_id}"')
    return members


def clef_compact_line(event: Event, ns: int) -> str:
    members = [f'"@t":"{dotnet_utc_roundtrip(ns, "Z")}"', f'"@mt":{serilog_quote(event.template)}']
    formatted = [
        (t, v) for t, v in zip(template_tokens(event.template), event.arguments, strict=True) if t.format
    ]
    if formatted:
        renderings = [serilog_quote(apply_format(v, t.format or "")) for t, v in formatted]
        members.append('"@r":[' + ",".join(renderings) + "]")
    members += serilog_level_exception_ids(event) + serilog_property_members(event)
    return "{" + ",".join(members) + "}"


def clef_rendered_line(event: Event, ns: int) -> str:
    message = render(event.template, event.arguments, serilog_render_value)
    members = [
        f'"@t":"{dotnet_utc_roundtrip(ns, "Z")}"',
        f'"@m":{serilog_quote(message)}',
        f'"@i":"{event_id_hash(event.template)}"',
    ]
    members += serilog_level_exception_ids(event) + serilog_property_members(event)
    return "{" + ",".join(members) + "}"


# ---------------------------------------------------------------- Microsoft.Extensions.Logging

# System.Text.Json's default JavaScriptEncoder: ASCII printable stays raw except these
# HTML-sensitive characters; everything else (all non-ASCII included) becomes \uXXXX.
STJ_ESCAPED_ASCII = set("\"&'+<>`")
STJ_SHORT = {"\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def stj_quote(text: str) -> str:
    out = []
    for ch in text:
        if ch in STJ_SHORT:
            out.append(STJ_SHORT[ch])
        elif 0x20 <= ord(ch) < 0x7F and ch not in STJ_ESCAPED_ASCII:
            out.append(ch)
        else:
            utf16 = ch.encode("utf-16-be")
            for i in range(0, len(utf16), 2):
                out.append(f"\\u{int.from_bytes(utf16[i : i + 2], 'big'):04X}")
    return '"' + "".join(out) + '"'


@dataclass
class JsonObject:
    """A JSON object whose members keep the order the formatter writes them in."""

    members: list[tuple[str, StjValue]]


StjValue = Union[str, int, float, bool, None, JsonObject, list["StjValue"]]  # noqa: UP007


def stj_dumps(value: StjValue) -> str:
    """A compact Utf8JsonWriter rendering with the default encoder."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return stj_quote(value)
    if isinstance(value, int | float):
        return dotnet_number(value)
    if isinstance(value, JsonObject):
        return "{" + ",".join(f"{stj_quote(k)}:{stj_dumps(v)}" for k, v in value.members) + "}"
    return "[" + ",".join(stj_dumps(v) for v in value) + "]"


def mel_render_value(value: Value) -> str:
    """LogValuesFormatter: values are written with ToString, strings without quotes."""
    if value is None:
        return "(null)"
    if isinstance(value, Structure):
        raise ValueError("Microsoft.Extensions.Logging does not destructure objects")
    if isinstance(value, str):
        return value
    return dotnet_number(value)


def mel_state_value(value: Value) -> StjValue:
    """JsonConsoleFormatter.WriteItem: numbers as numbers, null as null, others as strings."""
    if value is None or isinstance(value, int | float):
        return value
    return mel_render_value(value)


def mel_log_values(template: str, arguments: Sequence[Value]) -> JsonObject:
    """FormattedLogValues as the formatter writes it: Message, the values, {OriginalFormat} last."""
    members: list[tuple[str, StjValue]] = [("Message", render(template, arguments, mel_render_value))]
    members += [(name, mel_state_value(v)) for name, v in bind(template, arguments)]
    members.append(("{OriginalFormat}", template))
    return JsonObject(members)


MEL_LEVELS = {
    "trace": "Trace",
    "debug": "Debug",
    "info": "Information",
    "warn": "Warning",
    "error": "Error",
    "fatal": "Critical",
}
MEL_CATEGORY = "Checkout.PaymentService"


def mel_json_console_line(event: Event, ns: int) -> str:
    members: list[tuple[str, StjValue]] = [
        ("Timestamp", dotnet_utc_roundtrip(ns, "+00:00")),  # DateTimeOffset.UtcNow.ToString("O")
        ("EventId", event.event_id),
        ("LogLevel", MEL_LEVELS[event.level]),
        ("Category", MEL_CATEGORY),
        ("Message", render(event.template, event.arguments, mel_render_value)),
    ]
    if event.exception is not None:
        # Not indented: the formatter replaces Environment.NewLine ("\n" on Linux) by a space.
        members.append(("Exception", event.exception.replace("\n", " ")))
    members.append(("State", mel_log_values(event.template, event.arguments)))
    scopes: list[StjValue] = []
    if event.span is not None:  # the Activity scope comes first, before pushed scopes
        span = event.span
        activity_items = [
            ("SpanId", span.span_id),
            ("TraceId", span.trace_id),
            ("ParentId", span.parent_span_id),  # all zeros for a root Activity
        ]
        text = ", ".join(f"{k}:{v}" for k, v in activity_items)
        scopes.append(JsonObject([("Message", text), *activity_items]))
    if event.scope is not None:
        scopes.append(mel_log_values(*event.scope))
    members.append(("Scopes", scopes))  # IncludeScopes: written even when empty
    return stj_dumps(JsonObject(members))


# ---------------------------------------------------------------- the corpus

EXCEPTION = (
    "System.InvalidOperationException: Card declined: insufficient funds\n"
    "   at Checkout.PaymentService.ChargeAsync(Decimal amount) in /src/Checkout/PaymentService.cs:line 42\n"
    "   at Checkout.OrderController.SubmitAsync(Int32 orderId) in /src/Checkout/OrderController.cs:line 17"
)
CART = Structure("Cart", (("Items", 3), ("Total", 19.99)))
SOURCE_CONTEXT = (("SourceContext", "Checkout.PaymentService"),)
# A non-ASCII template and a value with double quotes.
UNICODE_TEMPLATE = "Café order shipped to {City}"
UNICODE_CITY = 'Zürich "HQ" ✓'


def serilog_events(span: Span) -> list[Event]:
    return [
        Event("trace", "Cache lookup for {CacheKey}", ("cart:42",), context=SOURCE_CONTEXT),
        Event("debug", "Cache warmed in {Elapsed:0.0} ms", (12.345,), context=SOURCE_CONTEXT),
        Event("info", "User {UserId} logged in with plan {Plan}", (42, "pro"), context=SOURCE_CONTEXT),
        Event("warn", "Disk usage at {Percent}%", (91,), context=SOURCE_CONTEXT),
        Event("error", "Payment {PaymentId} failed", ("pay_123",), EXCEPTION, context=SOURCE_CONTEXT),
        Event("info", "Charging card for {@Cart}", (CART,), span=span, context=SOURCE_CONTEXT),
        Event("fatal", "Payment provider unreachable", context=SOURCE_CONTEXT),
        # A property whose name starts with "@" (from ForContext): CLEF writes it as "@@origin".
        Event("info", "Request finished with status {StatusCode}", (200,), context=(("@origin", "web"),)),
        Event("info", UNICODE_TEMPLATE, (UNICODE_CITY,), context=SOURCE_CONTEXT),
    ]


def mel_events(span: Span) -> list[Event]:
    return [
        Event("trace", "Cache lookup for {CacheKey}", ("cart:42",)),
        Event("debug", "Cache warmed in {Elapsed:0.0} ms", (12.345,)),
        Event("info", "User {UserId} logged in with plan {Plan}", (42, "pro")),
        Event("warn", "Disk usage at {Percent}%", (91,), event_id=2001),
        Event("error", "Payment {PaymentId} failed", ("pay_123",), EXCEPTION, event_id=1001),
        Event(
            "info",
            "Charging card for order {OrderId}",
            (1234,),
            span=span,
            scope=("Request {RequestPath}", ("/checkout",)),
        ),
        Event("fatal", "Payment provider unreachable"),
        Event("info", "Request finished with status {StatusCode}", (200,)),
        Event("info", UNICODE_TEMPLATE, (UNICODE_CITY,)),
    ]


@dataclass(frozen=True)
class Keys:
    message: str
    level: str | None
    time: str
    trace_id: str | None
    span_id: str | None


def expected_object(event: Event, message: str, keys: Keys, before_ns: int, after_ns: int) -> str:
    span = event.span
    obj = {
        "message": message,
        "level": event.level,
        "trace_id": span.trace_id if span else None,
        "span_id": span.span_id if span else None,
        "service": None,  # neither library names a service in these formats
        "time_min_ns": before_ns // NS_PER_SECOND * NS_PER_SECOND,
        "time_max_ns": after_ns + NS_PER_MS,
        "keys": {
            "message": keys.message,
            "level": keys.level,
            "time": keys.time,
            "trace_id": keys.trace_id if span else None,
            "span_id": keys.span_id if span else None,
            "service": None,
        },
    }
    return json.dumps(obj, ensure_ascii=False)


def serilog_keys(event: Event, message_key: str) -> Keys:
    return Keys(message_key, None if event.level == "info" else "@l", "@t", "@tr", "@sp")


def write_serilog(out_dir: Path) -> None:
    compact_lines: list[str] = []
    rendered_lines: list[str] = []
    compact_expected: list[str] = []
    rendered_expected: list[str] = []
    for event in serilog_events(Span()):
        # One event through both formatters, as two sinks of one logger would write it.
        before = time.time_ns()
        compact_lines.append(clef_compact_line(event, before))
        rendered_lines.append(clef_rendered_line(event, before))
        after = time.time_ns()
        message = render(event.template, event.arguments, serilog_render_value)
        compact_expected.append(expected_object(event, message, serilog_keys(event, "@mt"), before, after))
        rendered_expected.append(expected_object(event, message, serilog_keys(event, "@m"), before, after))
    write_file(out_dir / "dotnet-serilog-clef-compact.jsonl", compact_lines)
    write_file(out_dir / "dotnet-serilog-clef-compact.expected.jsonl", compact_expected)
    write_file(out_dir / "dotnet-serilog-clef-rendered.jsonl", rendered_lines)
    write_file(out_dir / "dotnet-serilog-clef-rendered.expected.jsonl", rendered_expected)


def write_mel(out_dir: Path) -> None:
    lines: list[str] = []
    expected: list[str] = []
    keys = Keys("Message", "LogLevel", "Timestamp", "Scopes.0.TraceId", "Scopes.0.SpanId")
    for event in mel_events(Span()):
        before = time.time_ns()
        lines.append(mel_json_console_line(event, before))
        after = time.time_ns()
        message = render(event.template, event.arguments, mel_render_value)
        expected.append(expected_object(event, message, keys, before, after))
    write_file(out_dir / "dotnet-mel-json-console.jsonl", lines)
    write_file(out_dir / "dotnet-mel-json-console.expected.jsonl", expected)


def write_file(path: Path, lines: list[str]) -> None:
    for number, line in enumerate(lines, 1):
        json.loads(line)  # every line must be one valid JSON object
        if "\n" in line:
            raise ValueError(f"{path.name} line {number} spans more than one line")
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: spec_lines.py OUTPUT_DIR", file=sys.stderr)
        return 2
    out_dir = Path(argv[1])
    write_serilog(out_dir)
    write_mel(out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
