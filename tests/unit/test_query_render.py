"""The terminal trace view: a hand-built trace drawn into a fixed-width rich Console."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from tether.query.client import BadArgument, LogQuery, normalize_trace_id, parse_since
from tether.query.model import LogLine, SpanNode, build_trace, iso, parse_ns
from tether.query.render import bar_cells, log_text, render_logs, render_trace

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
T0 = 1_700_000_000_000_000_000
US = 1_000
BAR = 20
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def span(
    span_id: str, parent: str, name: str, start_us: int, duration_us: int, status: str = "OK"
) -> SpanNode:
    return SpanNode(
        span_id=span_id,
        parent_id=parent,
        name=name,
        service="shop" if not parent else "payments",
        kind="server",
        status=status,
        status_message="card declined" if status == "ERROR" else "",
        start_ns=T0 + start_us * US,
        duration_ns=duration_us * US,
    )


def log(span_id: str, at_us: int, message: str, level: str = "info") -> LogLine:
    return LogLine(f"id-{message}", T0 + at_us * US, level, message, "shop", TRACE, span_id, "span")


def trace_model() -> list[SpanNode | LogLine]:
    """root 0..1000us; charge 250..750us (error) with a child 300..400us; ship 800..1000us."""
    return [
        span("00000000000000a1", "", "GET /checkout", 0, 1000),
        span("00000000000000b2", "00000000000000a1", "charge card", 250, 500, status="ERROR"),
        span("00000000000000c3", "00000000000000b2", "POST /acquirer", 300, 100),
        span("00000000000000d4", "00000000000000a1", "ship", 800, 200),
        # Deliberately out of order: the view sorts each span's logs by time.
        log("00000000000000b2", 700, "charge failed", "error"),
        log("00000000000000b2", 260, "charging 12.00 EUR"),
        log("00000000000000a1", 10, "checkout started"),
        log("00000000000000a1", 900, "checkout done"),
        log("", 500, "a log without span", "warn"),
        log("00000000000000ff", 600, "a log of a span that never arrived", "debug"),
    ]


def rendered() -> tuple[list[str], list[str]]:
    """(plain lines, lines with ANSI styles) of the trace drawn 120 columns wide."""
    items = trace_model()
    view = build_trace(
        TRACE,
        None,
        [s for s in items if isinstance(s, SpanNode)],
        [entry for entry in items if isinstance(entry, LogLine)],
    )
    console = Console(
        width=120, record=True, file=io.StringIO(), force_terminal=True, color_system="standard"
    )
    render_trace(view, console, bar_width=BAR)
    styled = console.export_text(styles=True).splitlines()
    return [ANSI.sub("", line) for line in styled], styled


def row(lines: list[str], text: str) -> int:
    """The one table row holding `text` (the header above the table names the root too)."""
    table = next(i for i, line in enumerate(lines) if "span / log" in line)
    (index,) = [i for i, line in enumerate(lines) if text in line and i > table]
    return index


def indentation(line: str) -> int:
    """The column where a row's text starts, after the offset and the tree guides."""
    match = re.match(r"\s*\+\S+\s+[│├└─ ]*", line)
    assert match is not None, line
    return match.end()


def test_spans_are_indented_by_depth_parents_first() -> None:
    lines, _ = rendered()
    names = ("GET /checkout", "charge card", "POST /acquirer", "ship")
    columns = {name: indentation(lines[row(lines, name)]) for name in names}
    # Three columns of tree guide per level below the root.
    assert columns["charge card"] - columns["GET /checkout"] == 3
    assert columns["ship"] - columns["GET /checkout"] == 3
    assert columns["POST /acquirer"] - columns["GET /checkout"] == 6
    order = [row(lines, name) for name in ("GET /checkout", "charge card", "POST /acquirer", "ship")]
    assert order == sorted(order)


def test_error_span_is_red_and_says_why() -> None:
    lines, styled = rendered()
    error_row = styled[row(lines, "charge card")]
    assert "✗ charge card ERROR: card declined payments" in lines[row(lines, "charge card")]
    for red in ("✗ ", "charge card", " ERROR: card declined"):
        assert f"\x1b[1;31m{red}\x1b[0m" in error_row
    assert lines[row(lines, "charge card")][indentation(lines[row(lines, "charge card")])] == "✗"
    for name in ("GET /checkout", "ship", "POST /acquirer"):
        assert "\x1b[1;31m" + name not in styled[row(lines, name)]
        assert "ERROR" not in lines[row(lines, name)] and "✗" not in lines[row(lines, name)]
    assert "1 error" in "\n".join(lines[:3])


def test_logs_sit_under_their_span_in_time_order() -> None:
    lines, styled = rendered()
    charge, acquirer, ship = row(lines, "charge card"), row(lines, "POST /acquirer"), row(lines, "ship ")
    charging, failed = row(lines, "charging 12.00 EUR"), row(lines, "charge failed")
    # charge card's own logs and child, merged by time: log at 260us, child at 300us, log at 700us.
    assert charge < charging < acquirer < failed < ship
    started, done = row(lines, "checkout started"), row(lines, "checkout done")
    assert row(lines, "GET /checkout") < started < charge and ship < done
    # Levels are shown and coloured.
    assert "ERROR charge failed" in lines[failed]
    assert "\x1b[1;31mERROR" in styled[failed]
    assert "INFO  checkout started" in lines[started]


def test_logs_without_their_span_come_last() -> None:
    lines, _ = rendered()
    heading = row(lines, "logs without a span in this trace")
    assert heading > row(lines, "checkout done")
    assert heading < row(lines, "a log without span") < row(lines, "a log of a span that never arrived")


def test_bars_are_placed_by_start_and_duration() -> None:
    lines, _ = rendered()
    header = next(line for line in lines if "span / log" in line)
    left = header.index("0 ")  # the waterfall's scale starts at 0 for the trace start
    assert header[left:].split()[1] == "1.00ms"

    def bar(name: str) -> str:
        return lines[row(lines, name)][left : left + BAR]

    assert bar("GET /checkout") == "█" * 20
    assert bar("charge card") == " " * 5 + "█" * 10 + " " * 5  # 250..750 of 1000us on 20 cells
    assert bar("POST /acquirer") == " " * 6 + "█" * 2 + " " * 12
    assert bar("ship ") == " " * 16 + "█" * 4
    assert bar("charge failed") == " " * 14 + "•" + " " * 5
    assert lines[row(lines, "charge card")].rstrip().endswith("500µs")
    assert lines[row(lines, "charge card")].lstrip().startswith("+250µs")


def test_bar_cells() -> None:
    assert bar_cells(T0, 0, T0, 1000, 20) == (0, 1)  # an instant span is still one cell
    assert bar_cells(T0 + 999, 1, T0, 1000, 20) == (19, 1)
    assert bar_cells(T0 + 1000, 50, T0, 1000, 20) == (19, 1)  # clamped into the width
    assert bar_cells(T0, 1000, T0, 1000, 20) == (0, 20)
    assert bar_cells(T0 + 500, 10_000, T0, 1000, 20) == (10, 10)


def test_missing_parent_and_cycles_become_roots() -> None:
    spans = [
        span("00000000000000a1", "00000000000000ee", "orphan child", 0, 10),
        span("00000000000000b1", "00000000000000b2", "loop one", 1, 10),
        span("00000000000000b2", "00000000000000b1", "loop two", 2, 10),
    ]
    view = build_trace(TRACE, None, spans, [])
    walked = list(view.walk())
    assert sorted(s.name for s in walked) == ["loop one", "loop two", "orphan child"]
    assert view.roots[0].name == "orphan child" and view.roots[0].parent_missing
    assert {s.depth for s in walked} == {0, 1}
    lines = io.StringIO()
    render_trace(view, Console(width=160, file=lines))
    assert "(parent 00000000000000ee not found)" in lines.getvalue()


def test_log_lines_carry_their_trace_link() -> None:
    console = Console(width=200, record=True, file=io.StringIO())
    render_logs([log("00000000000000b2", 700, "charge failed", "error")], console, "http://jaeger:16686/")
    text = console.export_text()
    assert "ERROR shop charge failed" in text
    assert f"http://jaeger:16686/trace/{TRACE} span 00000000000000b2" in text
    styled = Console(width=200, file=io.StringIO(), force_terminal=True, color_system="standard")
    with styled.capture() as capture:
        render_logs([log("00000000000000b2", 700, "charge failed", "error")], styled)
    assert "\x1b[1;31mERROR" in capture.get()
    assert "\x1b[2m charge failed" not in capture.get()  # only the time and the link are dim
    untraced = LogLine("x", T0, "warn", "no trace here", "shop", "", "", "untraced")
    assert "/trace/" not in log_text(untraced).plain


def test_times_round_trip_in_nanoseconds() -> None:
    assert parse_ns("2026-11-21T15:20:24.011471789Z") == 1795274424011471789
    assert iso(1795274424011471789) == "2026-11-21T15:20:24.011471789Z"
    assert parse_ns("2026-11-21T16:20:24.5+01:00") == 1795274424500000000
    assert parse_ns("2026-11-21T15:20:24Z") == 1795274424000000000


def test_since_and_trace_id_arguments() -> None:
    now = 1795274424 * 10**9
    assert parse_since("15m", now) == now - 900 * 10**9
    assert parse_since("2h", now) == now - 7200 * 10**9
    assert parse_since("1d", now) == now - 86400 * 10**9
    assert parse_since("2026-11-21T15:20:24Z", now) == now
    assert parse_since("2026-11-21", now) == parse_ns("2026-11-21T00:00:00Z")
    for bad in ("yesterday", "15 parsecs", ""):
        with pytest.raises(BadArgument):
            parse_since(bad, now)
    assert normalize_trace_id(TRACE.upper()) == TRACE
    for bad in ("xyz", TRACE[:-1], "0" * 32, TRACE + "00"):
        with pytest.raises(BadArgument):
            normalize_trace_id(bad)


def test_log_query_filters() -> None:
    query = LogQuery(services=["shop"], levels=["ERROR"], trace_id=TRACE, text="card -declined").query()
    filters = query["bool"]["filter"]
    assert {"terms": {"service.name": ["shop"]}} in filters
    assert {"terms": {"log.level": ["error"]}} in filters  # levels are indexed lower-case
    assert {"term": {"trace.id": TRACE}} in filters
    assert query["bool"]["must"][0]["simple_query_string"]["query"] == "card -declined"


def test_levels_are_asked_for_as_the_collector_indexes_them() -> None:
    filters = LogQuery(levels=["WARNING", "wrn", "50", "Chatty"]).filters()
    assert filters == [{"terms": {"log.level": ["chatty", "error", "warn"]}}]
