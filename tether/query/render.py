"""Drawing a trace as a waterfall, and log lines, with rich.

The waterfall is one table: a span's row (tree guides by parent, a bar placed by start and
duration on a fixed width), then its logs and child spans in time order beneath it; logs whose
span is not in the trace come last. Error spans are red.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from rich.text import Text

from tether.query.model import LogLine, SpanNode, TraceView

DEFAULT_JAEGER_URL = "http://127.0.0.1:16686"
ERROR_STYLE = "bold red"
ERROR_MARK = "✗"
SPAN_BAR = "█"
LOG_MARK = "•"
LEVEL_STYLES = {
    "fatal": "bold white on red",
    "critical": "bold white on red",
    "error": "bold red",
    "warn": "yellow",
    "warning": "yellow",
    "info": "green",
    "debug": "blue",
    "trace": "dim",
}
# Bars take a colour per service so a call into another service stands out; errors override it.
_OFFSET_WIDTH, _DURATION_WIDTH = 9, 8
_SERVICE_COLOURS = ("cyan", "magenta", "green", "blue", "yellow", "bright_cyan", "bright_magenta")


def jaeger_link(jaeger_url: str, trace_id: str) -> str:
    return f"{jaeger_url.rstrip('/')}/trace/{trace_id}"


def format_duration(ns: int) -> str:
    if ns < 1_000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return f"{ns / 1_000:.0f}µs"
    if ns < 1_000_000_000:
        return f"{ns / 1_000_000:.2f}ms"
    if ns < 60_000_000_000:
        return f"{ns / 1_000_000_000:.2f}s"
    return f"{ns // 60_000_000_000}m{(ns % 60_000_000_000) / 1_000_000_000:02.0f}s"


def format_time(ns: int, date: bool = True) -> str:
    seconds, fraction = divmod(ns, 1_000_000_000)
    pattern = "%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S"
    return time.strftime(pattern, time.gmtime(seconds)) + f".{fraction // 1_000_000:03d}"


def bar_cells(start_ns: int, duration_ns: int, t0_ns: int, total_ns: int, width: int) -> tuple[int, int]:
    """(first cell, number of cells) of a bar on `width` cells spanning `total_ns` from `t0_ns`.
    Every span gets at least one cell, so an instant one is still seen."""
    total_ns = max(total_ns, 1)
    first = min(max((start_ns - t0_ns) * width // total_ns, 0), width - 1)
    cells = math.ceil(max(duration_ns, 0) * width / total_ns)
    return first, max(1, min(cells, width - first))


def level_style(level: str) -> str:
    return LEVEL_STYLES.get(level.lower(), "")


@dataclass(slots=True)
class _Row:
    """What one table row shows; kept apart from rich so its layout can be reasoned about."""

    offset_ns: int
    tree: Text
    bar: Text
    duration: str


def render_trace(
    view: TraceView,
    console: Console,
    jaeger_url: str = DEFAULT_JAEGER_URL,
    bar_width: int | None = None,
) -> None:
    width = bar_width or max(16, min(60, console.width // 3))
    t0, end = view.bounds()
    total = max(end - t0, 1)
    colours: dict[str, str] = {}

    console.print(_header(view, jaeger_url), soft_wrap=True)
    for note in view.notes:
        console.print(Text(f"note: {note}", style="yellow"), soft_wrap=True)

    # Every column has a fixed width, so the bars line up and only messages are cut short.
    tree_width = max(console.width - _OFFSET_WIDTH - _DURATION_WIDTH - width - 6, 20)
    table = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 1), expand=False)
    table.add_column("start", justify="right", no_wrap=True, style="dim", width=_OFFSET_WIDTH)
    table.add_column("span / log", no_wrap=True, overflow="ellipsis", width=tree_width)
    table.add_column(_scale(total, width), no_wrap=True, width=width)
    table.add_column("duration", justify="right", no_wrap=True, width=_DURATION_WIDTH)

    rows: list[_Row] = []
    for i, root in enumerate(view.roots):
        _span_rows(root, "", None, rows, t0, total, width, colours)
        if i < len(view.roots) - 1:
            rows.append(_Row(-1, Text(""), Text(""), ""))
    for row in rows:
        offset = "" if row.offset_ns < 0 else f"+{format_duration(row.offset_ns)}"
        table.add_row(offset, row.tree, row.bar, row.duration)
    if view.orphan_logs:
        table.add_section()
        table.add_row("", Text("logs without a span in this trace", style="italic dim"), "", "")
        for i, log in enumerate(view.orphan_logs):
            last = i == len(view.orphan_logs) - 1
            row = _log_row(log, "", last, t0, total, width)
            table.add_row(f"+{format_duration(row.offset_ns)}", row.tree, row.bar, row.duration)
    if rows or view.orphan_logs:
        console.print(table)


def _header(view: TraceView, jaeger_url: str) -> Text:
    text = Text()
    text.append("trace ", style="bold")
    text.append(view.trace_id, style="bold")
    summary = view.summary
    spans = list(view.walk())
    errors = sum(span.error for span in spans)
    logs = sum(len(span.logs) for span in spans) + len(view.orphan_logs)
    if summary is not None and summary.root_operation:
        text.append(f"  {summary.root_service}: {summary.root_operation}")
    elif view.roots:
        text.append(f"  {view.roots[0].service}: {view.roots[0].name}")
    status = "ERROR" if errors or (summary is not None and summary.status == "ERROR") else "OK"
    text.append(f"  {status}", style=ERROR_STYLE if status == "ERROR" else "green")
    t0, end = view.bounds()
    text.append(f"\nstart {format_time(t0)} UTC · {format_duration(end - t0)}")
    text.append(f" · {len(spans)} span{'s' * (len(spans) != 1)}")
    if errors:
        text.append(f" ({errors} error{'s' * (errors != 1)})", style=ERROR_STYLE)
    text.append(f" · {logs} log{'s' * (logs != 1)}")
    if summary is not None:
        if summary.logs_by_level:
            by_level = ", ".join(f"{k or 'unknown'} {v}" for k, v in sorted(summary.logs_by_level.items()))
            text.append(f" ({by_level})")
        if not summary.complete:
            text.append(" · no root span yet", style="yellow")
        if summary.services:  # on a line of its own: a trace can cross many services
            text.append(f"\nservices {', '.join(summary.services)}")
    else:
        text.append(" · no summary in tether-traces yet", style="yellow")
    link = jaeger_link(jaeger_url, view.trace_id)
    text.append("\njaeger ")
    text.append(link, style=f"link {link}")
    return text


def _scale(total_ns: int, width: int) -> str:
    """The bar column's heading: 0 on the left, the trace's length on the right."""
    right = format_duration(total_ns)
    return "0" + right.rjust(width - 1) if width > len(right) + 1 else right


def _span_rows(
    span: SpanNode,
    prefix: str,
    last: bool | None,
    rows: list[_Row],
    t0: int,
    total: int,
    width: int,
    colours: dict[str, str],
    parent_service: str | None = None,
) -> None:
    """The span's row, then its logs and children merged in time order. `last` is None for a root
    (no connector), else whether it is its parent's last item. The service is named where it
    changes, and an error is marked before the name, so a long name cut short still shows both."""
    connector = "" if last is None else ("└─ " if last else "├─ ")
    below = prefix if last is None else prefix + ("   " if last else "│  ")
    colour = colours.setdefault(span.service, _SERVICE_COLOURS[len(colours) % len(_SERVICE_COLOURS)])
    style = ERROR_STYLE if span.error else ""
    tree = Text()
    tree.append(prefix + connector, style="dim")
    if span.error:
        tree.append(f"{ERROR_MARK} ", style=ERROR_STYLE)
    tree.append(span.name or "(unnamed)", style=style or "bold")
    if span.error:
        tree.append(f" ERROR{': ' + span.status_message if span.status_message else ''}", style=ERROR_STYLE)
    if span.service != parent_service:
        tree.append(f" {span.service}", style=colour)
    if span.parent_missing:
        tree.append(f" (parent {span.parent_id} not found)", style="yellow")
    first, cells = bar_cells(span.start_ns, span.duration_ns, t0, total, width)
    bar = Text(" " * first)
    bar.append(SPAN_BAR * cells, style="red" if span.error else colour)
    rows.append(_Row(span.start_ns - t0, tree, bar, format_duration(span.duration_ns)))

    # Logs before a child span that starts at the same instant: they were written first.
    items: list[tuple[int, int, SpanNode | LogLine]] = [(log.timestamp_ns, 0, log) for log in span.logs]
    items += [(child.start_ns, 1, child) for child in span.children]
    items.sort(key=lambda item: (item[0], item[1]))
    for i, (_, _, item) in enumerate(items):
        is_last = i == len(items) - 1
        if isinstance(item, SpanNode):
            _span_rows(item, below, is_last, rows, t0, total, width, colours, span.service)
        else:
            rows.append(_log_row(item, below, is_last, t0, total, width))


def _log_row(log: LogLine, prefix: str, last: bool, t0: int, total: int, width: int) -> _Row:
    tree = Text()
    tree.append(prefix + ("└─ " if last else "├─ "), style="dim")
    level = (log.level or "-").upper()
    tree.append(f"{level:<5}", style=level_style(log.level) or "dim")
    tree.append(" ")
    tree.append(log.message.replace("\n", " ⏎ "))
    first, _ = bar_cells(log.timestamp_ns, 0, t0, total, width)
    bar = Text(" " * first)
    bar.append(LOG_MARK, style=level_style(log.level) or "dim")
    return _Row(log.timestamp_ns - t0, tree, bar, "")


def log_text(log: LogLine, jaeger_url: str = DEFAULT_JAEGER_URL) -> Text:
    """One log line for `tether logs`: time, level, service, message, and its trace link."""
    text = Text()
    text.append(format_time(log.timestamp_ns), style="dim")
    text.append(" ")
    text.append(f"{(log.level or '-').upper():<5}", style=level_style(log.level) or "dim")
    text.append(" ")
    text.append(log.service or "-", style="cyan")
    text.append(" ")
    text.append(log.message.replace("\n", " ⏎ "))
    if log.trace_id:
        link = jaeger_link(jaeger_url, log.trace_id)
        text.append("  ")
        text.append(link, style=f"dim link {link}")
        if log.span_id:
            text.append(f" span {log.span_id}", style="dim")
    return text


def render_logs(logs: list[LogLine], console: Console, jaeger_url: str = DEFAULT_JAEGER_URL) -> None:
    for log in logs:
        # soft_wrap: a long line stays one line when piped, for grep and for terminals that wrap.
        console.print(log_text(log, jaeger_url), soft_wrap=True)
