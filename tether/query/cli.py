"""`tether trace ID` and `tether logs`: reading what the collector indexed, in a terminal.

Exit status: 0 ok, 1 no such trace, 2 bad arguments, 3 Elasticsearch unreachable or failing.
Elasticsearch and rich are imported when a command runs, so `tether --help` stays quick.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer

ElasticsearchOption = Annotated[
    str | None,
    typer.Option(
        "--elasticsearch-url",
        envvar="ELASTICSEARCH_URL",
        help="Elasticsearch to read from [default: the config file's, or http://127.0.0.1:9200].",
        show_default=False,
    ),
]
ElasticsearchConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--elasticsearch-config",
        envvar="TETHER_ELASTICSEARCH_CONFIG",
        help="YAML file whose `elasticsearch` section says how to connect (TLS, credentials; a "
        "collector's config works). ELASTICSEARCH_USERNAME, _PASSWORD(_FILE), _API_KEY(_FILE), "
        "_API_KEY_ID, _CLOUD_ID, _CA_FILE, _SSL_ASSERT_FINGERPRINT override it.",
        exists=True,
        dir_okay=False,
    ),
]
JaegerOption = Annotated[
    str,
    typer.Option("--jaeger-url", envvar="JAEGER_URL", help="Jaeger UI for trace links (<url>/trace/<id>)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]

EXIT_NOT_FOUND, EXIT_USAGE, EXIT_UNAVAILABLE = 1, 2, 3

if TYPE_CHECKING:
    from tether.elasticsearch_security import ElasticsearchConnection


def _fail(message: str, code: int) -> typer.Exit:
    typer.secho(f"tether: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def _connection(url: str | None, config_file: Path | None) -> ElasticsearchConnection:
    from tether.config import ConfigError
    from tether.query.connection import load_connection

    try:
        return load_connection(url, config_file)
    except ConfigError as error:
        raise _fail(str(error), EXIT_USAGE) from None


def trace(
    trace_id: Annotated[str, typer.Argument(help="The trace id, 32 hex digits.", show_default=False)],
    elasticsearch_url: ElasticsearchOption = None,
    elasticsearch_config: ElasticsearchConfigOption = None,
    jaeger_url: JaegerOption = "http://127.0.0.1:16686",
    as_json: JsonOption = False,
    max_spans: Annotated[int, typer.Option(min=1, help="Read at most this many spans.")] = 5000,
    max_logs: Annotated[int, typer.Option(min=1, help="Read at most this many logs.")] = 5000,
) -> None:
    """Draw one trace as a waterfall of its spans, each span's logs beneath it in time order."""
    from rich.console import Console

    from tether.query.client import BadArgument, Reader, Unavailable, normalize_trace_id
    from tether.query.model import TraceView
    from tether.query.render import render_trace

    try:
        trace_id = normalize_trace_id(trace_id)
    except BadArgument as error:
        raise _fail(str(error), EXIT_USAGE) from None
    connection = _connection(elasticsearch_url, elasticsearch_config)

    async def read() -> TraceView:
        async with Reader(connection) as reader:
            return await reader.trace(trace_id, max_spans=max_spans, max_logs=max_logs)

    try:
        view = asyncio.run(read())
    except Unavailable as error:
        raise _fail(str(error), EXIT_UNAVAILABLE) from None
    if view.empty:
        raise _fail(f"no trace {trace_id} in tether-traces, tether-spans or tether-logs", EXIT_NOT_FOUND)
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(view.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
        return
    render_trace(view, Console(highlight=False), jaeger_url)


def logs(
    text: Annotated[
        str | None, typer.Argument(help="Free text searched in the message (simple query syntax).")
    ] = None,
    service: Annotated[
        list[str] | None, typer.Option("--service", "-s", help="service.name (repeatable).")
    ] = None,
    level: Annotated[list[str] | None, typer.Option("--level", "-l", help="log.level (repeatable).")] = None,
    since: Annotated[
        str | None, typer.Option(help="From a duration ago (30s, 15m, 2h, 1d) or an ISO time.")
    ] = None,
    trace_id: Annotated[str | None, typer.Option("--trace", "-t", help="Only this trace's logs.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000, help="The newest N.")] = 100,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep polling for new logs.")] = False,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between polls with --follow.")] = 1.0,
    elasticsearch_url: ElasticsearchOption = None,
    elasticsearch_config: ElasticsearchConfigOption = None,
    jaeger_url: JaegerOption = "http://127.0.0.1:16686",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Search logs (newest N, printed oldest first) with their trace links; --follow for new ones."""
    from rich.console import Console

    from tether.query.client import (
        BadArgument,
        LogQuery,
        Reader,
        Unavailable,
        normalize_trace_id,
        parse_since,
    )
    from tether.query.model import LogLine
    from tether.query.render import log_text

    try:
        query = LogQuery(
            services=service or [],
            levels=level or [],
            since_ns=parse_since(since) if since else None,
            trace_id=normalize_trace_id(trace_id) if trace_id else None,
            text=text,
        )
    except BadArgument as error:
        raise _fail(str(error), EXIT_USAGE) from None
    connection = _connection(elasticsearch_url, elasticsearch_config)
    console = Console(highlight=False)

    def emit(line: LogLine) -> None:
        if as_json:
            sys.stdout.buffer.write(orjson.dumps(line.to_json()) + b"\n")
            sys.stdout.buffer.flush()  # --follow output is read as it comes, often through a pipe
        else:
            console.print(log_text(line, jaeger_url), soft_wrap=True)
            console.file.flush()

    async def run() -> None:
        async with Reader(connection) as reader:
            if follow:
                async for line in reader.follow(query, limit=limit, interval=interval):
                    emit(line)
            else:
                for line in await reader.logs(query, limit=limit):
                    emit(line)

    try:
        asyncio.run(run())
    except Unavailable as error:
        raise _fail(str(error), EXIT_UNAVAILABLE) from None
    except KeyboardInterrupt:  # the way out of --follow
        raise typer.Exit(0) from None


def register(app: typer.Typer) -> None:
    app.command("trace")(trace)
    app.command("logs")(logs)
