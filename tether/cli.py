"""The `tether` command: run the agent or the collector, and manage the local stack."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from tether.query.cli import register as register_query_commands

if TYPE_CHECKING:
    from pydantic import BaseModel

    from tether.stack import Stack

Model = TypeVar("Model", bound="BaseModel")

app = typer.Typer(
    help="tether ships logs and traces through Kafka and ties every log line to its trace.",
    no_args_is_help=True,
    add_completion=False,
)
stack_app = typer.Typer(
    help="A real local Kafka, Elasticsearch and Jaeger on 127.0.0.1, provisioned from package "
    "registries into a cache directory.",
    no_args_is_help=True,
)
app.add_typer(stack_app, name="stack")

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config",
        "-c",
        help="YAML config file (${ENV} is substituted).",
        exists=True,
        dir_okay=False,
        readable=True,
    ),
]
CacheDirOption = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help="Where servers are provisioned and keep data and logs "
        "[default: $TETHER_STACK_DIR or ~/.cache/tether/stack].",
    ),
]


agent_app = typer.Typer(help="The agent: tail JSON log files, receive OTLP, produce both to Kafka.")
collector_app = typer.Typer(
    help="A collector: consume logs and spans from Kafka, correlate by trace id, index into "
    "Elasticsearch and export spans to Jaeger."
)
app.add_typer(agent_app, name="agent")
app.add_typer(collector_app, name="collector")
register_query_commands(app)  # tether trace, tether logs
OptionalConfig = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config file (${ENV} is substituted).", dir_okay=False),
]


@agent_app.callback(invoke_without_command=True)
def agent(ctx: typer.Context, config: OptionalConfig = None) -> None:
    """Run the agent with --config (or check a config with `tether agent validate`)."""
    if ctx.invoked_subcommand is not None:
        return
    from tether.agent.config import AgentConfig
    from tether.agent.service import run_agent

    asyncio.run(run_agent(_load(_required(config), AgentConfig)))


@agent_app.command("validate")
def agent_validate(config: ConfigOption) -> None:
    """Check an agent config: every problem with its key path, exit 2 if there is any."""
    from tether.agent.config import AgentConfig

    _load(config, AgentConfig)
    typer.echo(f"{config}: valid agent configuration")


@collector_app.callback(invoke_without_command=True)
def collector(ctx: typer.Context, config: OptionalConfig = None) -> None:
    """Run a collector with --config (or check a config with `tether collector validate`)."""
    if ctx.invoked_subcommand is not None:
        return
    from tether.collector.config import CollectorConfig
    from tether.collector.service import run_collector

    asyncio.run(run_collector(_load(_required(config), CollectorConfig)))


@collector_app.command("validate")
def collector_validate(config: ConfigOption) -> None:
    """Check a collector config: every problem with its key path, exit 2 if there is any."""
    from tether.collector.config import CollectorConfig

    _load(config, CollectorConfig)
    typer.echo(f"{config}: valid collector configuration")


def _required(config: Path | None) -> Path:
    if config is None:
        typer.secho("--config FILE is required (see deploy/examples/)", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    if not config.is_file():
        typer.secho(f"{config}: no such file", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    return config


def _load(path: Path, model: type[Model]) -> Model:
    """The validated config, or every problem printed with its key path and exit status 2."""
    from tether.config import ConfigError, load_config

    try:
        return load_config(path, model)
    except ConfigError as error:
        typer.secho(str(error), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from error


SecureOption = Annotated[
    bool,
    typer.Option(
        "--secure",
        help="The secure stack: Kafka SASL_SSL with SCRAM, Elasticsearch https with users and an API "
        "key, Jaeger OTLP over TLS, on their own ports (19092, 19200, 24317) and state directory "
        "[default: $TETHER_SECURE_STACK_DIR or ~/.cache/tether/stack-secure].",
    ),
]


ClusterOption = Annotated[
    bool,
    typer.Option(
        "--cluster",
        help="The cluster stack: 3 Kafka brokers (KRaft; topics with replication factor 3 and "
        "min.insync.replicas 2), 2 Elasticsearch nodes (one replica per shard) and Jaeger, on their own "
        "ports (29092.., 29200.., 34317) and state directory ($TETHER_CLUSTER_STACK_DIR or "
        "~/.cache/tether/stack-cluster). See docs/cluster-stack.md.",
    ),
]
BrokersOption = Annotated[
    int | None,
    typer.Option("--brokers", min=3, help="Kafka brokers of the cluster stack (implies --cluster) [3]."),
]
ElasticsearchNodesOption = Annotated[
    int | None,
    typer.Option(
        "--es-nodes", min=2, help="Elasticsearch nodes of the cluster stack (implies --cluster) [2]."
    ),
]


def _stack(
    cache_dir: Path | None,
    secure: bool = False,
    cluster: bool = False,
    brokers: int | None = None,
    es_nodes: int | None = None,
) -> Stack:
    from tether.stack import (
        ClusterStack,
        ClusterStackConfig,
        SecureStack,
        SecureStackConfig,
        Stack,
        StackConfig,
    )
    from tether.stack.health import StackError

    if cluster or brokers is not None or es_nodes is not None:
        if secure:
            typer.secho("--secure and the cluster stack cannot be combined", fg=typer.colors.RED, err=True)
            raise typer.Exit(2)
        try:
            config = ClusterStackConfig(brokers=brokers or 3, elasticsearch_nodes=es_nodes or 2)
            if cache_dir:
                config = dataclasses.replace(config, cache_dir=cache_dir)
        except StackError as error:
            typer.secho(str(error), fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from error
        return ClusterStack(config)
    if secure:
        return SecureStack(SecureStackConfig(cache_dir=cache_dir) if cache_dir else None)
    return Stack(StackConfig(cache_dir=cache_dir) if cache_dir else None)


@stack_app.command("up")
def stack_up(
    cache_dir: CacheDirOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each server to be healthy.")] = 180.0,
    secure: SecureOption = False,
    cluster: ClusterOption = False,
    brokers: BrokersOption = None,
    es_nodes: ElasticsearchNodesOption = None,
) -> None:
    """Provision (cached), start and health-check Kafka, Elasticsearch and Jaeger. Idempotent."""
    from tether.stack.health import StackError

    stack = _stack(cache_dir, secure, cluster, brokers, es_nodes)
    try:
        stack.up(report=typer.echo, timeout=timeout)
    except StackError as error:
        typer.secho(f"stack up failed: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from error
    _print_status(stack)


@stack_app.command("down")
def stack_down(
    cache_dir: CacheDirOption = None,
    secure: SecureOption = False,
    cluster: ClusterOption = False,
    brokers: BrokersOption = None,
    es_nodes: ElasticsearchNodesOption = None,
) -> None:
    """Stop exactly the processes `stack up` started (by pid). Data stays in the cache directory."""
    from tether.stack.health import StackError

    stack = _stack(cache_dir, secure, cluster, brokers, es_nodes)
    try:
        stack.down(report=typer.echo)
    except StackError as error:
        typer.secho(f"stack down failed: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from error


@stack_app.command("status")
def stack_status(
    cache_dir: CacheDirOption = None,
    secure: SecureOption = False,
    cluster: ClusterOption = False,
    brokers: BrokersOption = None,
    es_nodes: ElasticsearchNodesOption = None,
) -> None:
    """Tell which servers are up, where they listen and where their logs are. Exit 1 if any is down."""
    stack = _stack(cache_dir, secure, cluster, brokers, es_nodes)
    if not _print_status(stack):
        raise typer.Exit(1)


def _print_status(stack: Stack) -> bool:
    all_up = True
    for name, pid, description, log_file in stack.status():
        state = f"up (pid {pid})" if pid else "down"
        all_up = all_up and pid is not None
        typer.echo(f"{name:<14} {state:<16} {description}\n{'':<14} log: {log_file}")
    for note in stack.status_notes():
        typer.echo(note)
    return all_up
