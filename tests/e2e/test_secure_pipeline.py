"""The whole pipeline through `tether stack up --secure`, and what happens when security refuses.

The agent produces over SASL_SSL (SCRAM, the stack's CA, the password as a `*_file`); the collector
consumes the same way, writes to Elasticsearch over https as a user holding exactly the
`tether_collector` role of docs/security.md (read from the docs, so the test checks them), and
exports to Jaeger's OTLP receiver over TLS. The negative tests start a real process with one wrong
setting, check it keeps running, names the setting and is not ready, then restart it with the
setting fixed and check that what it held (the agent's spool, the collector's uncommitted records)
arrives exactly once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from elasticsearch import AsyncElasticsearch

from tests.e2e import test_pipeline
from tests.e2e.agent_harness import PARTITIONS, TetherProcess, free_port, log_records
from tests.e2e.collector_harness import Producer, TraceSpec
from tether.stack import SecureStack
from tether.stack.credentials import ELASTICSEARCH_SUPERUSER
from tether.stack.kafka import ensure_topics
from tether.stack.secure_kafka_acls import AclBinding, create_acls, documented_acls, users_of

pytestmark = pytest.mark.stack

DOCS = Path(__file__).resolve().parents[2] / "docs" / "security.md"
WRONG_HOSTNAME = "wrong-host.tether.invalid"


def documented_collector_role() -> dict[str, Any]:
    """The body of `POST /_security/role/tether_collector` in docs/security.md, as documented."""
    match = re.search(r"POST /_security/role/tether_collector\n(.*?)\n```", DOCS.read_text(), re.DOTALL)
    assert match, "docs/security.md no longer documents the tether_collector role"
    role: dict[str, Any] = json.loads(match.group(1))
    return role


def least_privilege_user(stack: SecureStack, secrets: Path) -> tuple[str, Path]:
    """A native user with exactly the documented role; its password in a file, as a Secret mounts it."""
    suffix = uuid.uuid4().hex[:8]
    admin = stack.elasticsearch_admin
    admin.put_role(f"tether_collector_{suffix}", documented_collector_role())
    password = f"pw-{uuid.uuid4().hex}"
    admin.put_user(f"collector-{suffix}", password, [f"tether_collector_{suffix}"])
    password_file = secrets / f"collector-{suffix}-password"
    password_file.write_text(password + "\n")
    return f"collector-{suffix}", password_file


def kafka_yaml(
    stack: SecureStack,
    logs_topic: str,
    spans_topic: str,
    password_file: Path,
    client_cert: str = "",
    username: str | None = None,
    bootstrap: str | None = None,
) -> str:
    return f"""
kafka:
  bootstrap_servers: "{bootstrap or stack.kafka.bootstrap}"
  logs_topic: {logs_topic}
  spans_topic: {spans_topic}
  security_protocol: SASL_SSL
  tls: {{ca_file: "{stack.certificates.ca.cert}"{client_cert}}}
  sasl: {{mechanism: SCRAM-SHA-512, username: {username or stack.credentials.kafka_username},
          password_file: "{password_file}"}}
"""


def documented_kafka_user(stack: SecureStack, username: str) -> tuple[str, Path]:
    """A Kafka user of docs/security.md's ACLs (the stack created exactly those) and its password
    file; the ACLs must name it, or the doc no longer documents what this test runs."""
    assert username in users_of(documented_acls()), f"docs/security.md grants {username} no ACLs"
    return username, stack.credentials.secret_file(f"kafka-password-{username}")


def client_certificate(paths: Any) -> str:
    return f', cert_file: "{paths.cert}", key_file: "{paths.key}"'


def collector_yaml(
    stack: SecureStack,
    logs_topic: str,
    spans_topic: str,
    group: str,
    elasticsearch_auth: str,
    ops_port: int,
    elasticsearch_ca: Path | None = None,
    jaeger_server_name: str | None = None,
    elasticsearch_client_cert: str = "",
    kafka_user: tuple[str, Path] | None = None,
) -> str:
    server_name = f", server_name: {jaeger_server_name}" if jaeger_server_name else ""
    username, password_file = kafka_user or (None, stack.secrets_dir / "kafka-password")
    return (
        kafka_yaml(stack, logs_topic, spans_topic, password_file, username=username)
        + f"""  group_id: "{group}"
correlation: {{wait_seconds: 3}}
elasticsearch:
  url: "{stack.elasticsearch.url}"
  replicas: 0
  tls: {{ca_file: "{elasticsearch_ca or stack.certificates.ca.cert}"{elasticsearch_client_cert}}}
  {elasticsearch_auth}
jaeger:
  endpoint: "{stack.jaeger.otlp_grpc_endpoint}"
  tls: {{ca_file: "{stack.certificates.ca.cert}"{server_name}}}
ops: {{endpoint: "127.0.0.1:{ops_port}"}}
"""
    )


def admin_elasticsearch(stack: SecureStack) -> AsyncElasticsearch:
    """The test's own reader, as `elastic` (not the collector's credentials under test)."""
    return AsyncElasticsearch(
        stack.elasticsearch.url,
        ca_certs=str(stack.certificates.ca.cert),
        basic_auth=(ELASTICSEARCH_SUPERUSER, stack.credentials.elastic_password),
    )


async def wait_for_hits(
    stack: SecureStack, index: str, query: dict[str, Any], expected: int, within: float = 90.0
) -> list[dict[str, Any]]:
    es = admin_elasticsearch(stack)
    try:
        return await test_pipeline._wait_for(es, index, query, expected, within)
    finally:
        await es.close()


async def create_topics(stack: SecureStack, *topics: str) -> None:
    await ensure_topics(stack.kafka.bootstrap, list(topics), PARTITIONS, **stack.kafka.client_options())


def wait_for_output(process: TetherProcess, text: str, within: float = 45.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert process.process is not None
        if process.process.poll() is not None:
            raise AssertionError(
                f"{process.kind} exited with {process.process.returncode}:\n{process.tail()}"
            )
        if text in process.tail(200_000):
            return
        time.sleep(0.25)
    raise AssertionError(f"{process.kind} never logged {text!r}:\n{process.tail()}")


def assert_refusing_but_alive(process: TetherProcess, setting: str) -> None:
    """Names the setting to fix, keeps running (retrying), and says not ready."""
    wait_for_output(process, setting)
    time.sleep(3)  # past the first retry: a process that gives up would exit here
    assert process.process is not None and process.process.poll() is None, process.tail()
    status, body = process.get("/readyz")
    assert status != 200, body
    deadline = time.monotonic() + 20  # backoff with jitter: the next attempt may take a while
    while process.tail(200_000).count(setting) < 2:
        assert time.monotonic() < deadline, f"no retry logged:\n{process.tail()}"
        time.sleep(0.25)
    assert process.process.poll() is None, process.tail()


# The whole pipeline


def _bodies(lines: list[str]) -> list[str]:
    """The records' bodies of these lines: the level is carried by the record, not the body
    (schemas/README.md, "Routing keys leave the body")."""
    return [json.dumps({k: v for k, v in json.loads(line).items() if k != "level"}) for line in lines]


async def test_secured_pipeline_delivers_once_with_the_documented_role(
    secure_stack: SecureStack, tmp_path: Path
) -> None:
    stack = secure_stack
    run = f"secure-{uuid.uuid4().hex[:10]}"
    # The stack's own topics and the documented group, as the documented Kafka users: the stack
    # granted them exactly the ACLs of docs/security.md, so this proves those are enough.
    logs_topic, spans_topic = stack.config.topics
    agent_user = documented_kafka_user(stack, "tether-agent")
    collector_user = documented_kafka_user(stack, "tether-collector")
    username, password_file = least_privilege_user(stack, tmp_path)
    otlp_port, agent_ops, collector_ops = free_port(), free_port(), free_port()
    (tmp_path / "logs").mkdir()
    log_path = tmp_path / "logs" / "app.log"
    log_path.touch()
    agent_config = tmp_path / "agent.yaml"
    agent_config.write_text(
        f"""
agent_id: e2e-{run}
data_dir: {tmp_path / "agent-state"}
files: {{include: ["{tmp_path}/logs/*.log"], poll_interval_seconds: 0.1}}
otlp: {{grpc_endpoint: "127.0.0.1:{otlp_port}", http_endpoint: "127.0.0.1:{free_port()}"}}
ops: {{endpoint: "127.0.0.1:{agent_ops}"}}
"""
        + kafka_yaml(stack, logs_topic, spans_topic, agent_user[1], username=agent_user[0])
    )
    collector_config = tmp_path / "collector.yaml"
    collector_config.write_text(
        collector_yaml(
            stack,
            logs_topic,
            spans_topic,
            "tether-collector",
            f'username: {username}\n  password_file: "{password_file}"',
            collector_ops,
            kafka_user=collector_user,
        )
    )
    agent_log, collector_log = tmp_path / "agent.out", tmp_path / "collector.out"
    agent = TetherProcess("agent", agent_config, agent_log, agent_ops)
    collector = TetherProcess("collector", collector_config, collector_log, collector_ops)
    agent.launch()
    collector.launch()
    try:
        agent.wait_listening(otlp_port)
        logs_written = await asyncio.to_thread(
            test_pipeline._generate, f"127.0.0.1:{otlp_port}", log_path, run
        )
        trace_ids = sorted({entry["trace_id"] for entry in logs_written})
        span_hits = await wait_for_hits(
            stack,
            "tether-spans",
            {"terms": {"trace.id": trace_ids}},
            test_pipeline.TRACES * test_pipeline.SPANS_PER_TRACE,
        )
        log_hits = await wait_for_hits(
            stack, "tether-logs", {"match_phrase": {"message": run}}, len(logs_written) + 2
        )
        assert collector.get("/readyz")[0] == 200, collector.tail()
    finally:
        agent_status = agent.stop()
        collector_status = collector.stop()
    diagnostics = f"\nagent log:\n{agent.tail(2000)}\ncollector log:\n{collector.tail(2000)}"
    await asyncio.to_thread(
        test_pipeline.assert_delivered_once,
        stack,
        run,
        log_path,
        logs_written,
        span_hits,
        log_hits,
        diagnostics,
    )
    assert "security_exception" not in collector.tail(200_000), diagnostics
    assert agent_status == 0, diagnostics
    assert collector_status == 0, diagnostics


# The agent refused by Kafka: it spools, and delivers once fixed


async def consume_secure(stack: SecureStack, topic: str, expected: int, within: float = 60.0) -> list[Any]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.kafka.bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **stack.kafka.client_options(),
    )
    await consumer.start()
    records: list[tuple[int, bytes]] = []
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, messages in batch.items():
                records.extend((tp.partition, m.value) for m in messages)
            if len(log_records(records)) >= expected:
                await asyncio.sleep(2)  # stragglers (duplicates) would show up now
                for tp, messages in (await consumer.getmany(timeout_ms=1000)).items():
                    records.extend((tp.partition, m.value) for m in messages)
                break
    finally:
        await consumer.stop()
    return log_records(records)


@pytest.mark.parametrize(
    "refusal", ["wrong password", "expired client certificate", "untrusted client certificate"]
)
async def test_agent_refused_by_kafka_retries_then_delivers_spooled_once(
    secure_stack: SecureStack, tmp_path: Path, refusal: str
) -> None:
    stack = secure_stack
    run = f"agent-{uuid.uuid4().hex[:10]}"
    logs_topic, spans_topic = f"e2e.{run}.logs", f"e2e.{run}.spans"
    await create_topics(stack, logs_topic, spans_topic)
    good_password = stack.secrets_dir / "kafka-password"
    if refusal == "wrong password":
        wrong = tmp_path / "kafka-password"
        wrong.write_text("not-the-password\n")
        bad_kafka, setting = kafka_yaml(stack, logs_topic, spans_topic, wrong), "kafka.sasl.password"
        good_kafka = kafka_yaml(stack, logs_topic, spans_topic, good_password)
    else:  # the listener that requires a client certificate; a wrong one fails the TLS handshake
        wrong_certificate = (
            stack.certificates.expired_client
            if refusal == "expired client certificate"
            else stack.certificates.untrusted_server  # signed by a CA the broker does not trust
        )
        bad_kafka, good_kafka = (
            kafka_yaml(
                stack,
                logs_topic,
                spans_topic,
                good_password,
                client_certificate(certificate),
                bootstrap=stack.kafka.mtls_bootstrap,
            )
            for certificate in (wrong_certificate, stack.certificates.client)
        )
        setting = "kafka.tls.cert_file"
    (tmp_path / "logs").mkdir()
    log_path = tmp_path / "logs" / "app.log"
    ops_port = free_port()
    common = f"""
agent_id: {run}
data_dir: {tmp_path / "state"}
files: {{include: ["{tmp_path}/logs/*.log"], poll_interval_seconds: 0.1}}
otlp: {{grpc_endpoint: "127.0.0.1:{free_port()}", http_endpoint: "127.0.0.1:{free_port()}"}}
ops: {{endpoint: "127.0.0.1:{ops_port}"}}
"""
    config = tmp_path / "agent.yaml"
    config.write_text(common + bad_kafka)
    agent = TetherProcess("agent", config, tmp_path / "agent.out", ops_port)
    lines = [json.dumps({"level": "info", "message": f"{run} line {n}"}) for n in range(40)]
    log_path.write_text("\n".join(lines[:20]) + "\n")
    agent.launch()
    try:
        agent.wait_listening(ops_port)
        with log_path.open("a") as handle:  # while refused, too
            handle.write("\n".join(lines[20:]) + "\n")
        await asyncio.to_thread(assert_refusing_but_alive, agent, setting)
    finally:
        assert agent.stop() == 0, agent.tail()
    config.write_text(common + good_kafka)
    agent.launch()
    try:
        records = await consume_secure(stack, logs_topic, len(lines))
        ready = agent.get("/readyz")[0]
    finally:
        status = agent.stop()
    # Every line arrives. The spooled batches and the file read again from its last acknowledged
    # checkpoint both reach Kafka (at least once); each line keeps one record id, which makes the
    # copy one document in Elasticsearch. Measured: each of the 40 lines twice (80 records), as a
    # file's checkpoint advances only once Kafka acknowledged (docs/architecture.md), never when
    # the batch is spooled; at most twice, or something else sends again.
    copies = Counter(record["id"] for record in records)
    assert max(copies.values()) <= 2, copies
    ids_by_body: dict[str, set[str]] = {}
    for record in records:
        ids_by_body.setdefault(record["body"], set()).add(record["id"])
    assert sorted(ids_by_body) == sorted(_bodies(lines)), agent.tail()
    assert all(len(ids) == 1 for ids in ids_by_body.values()), ids_by_body
    assert len({r["id"] for r in records}) == len(lines)
    assert ready == 200 and status == 0, agent.tail()


async def test_agent_without_the_acls_is_refused_then_delivers_once_granted(
    secure_stack: SecureStack, tmp_path: Path
) -> None:
    """The documented agent user, on topics its ACLs do not name: refused (the key and the ACLs to
    grant), spooling, not ready; once the doc's ACLs are granted on these topics, it connects on
    its own and what it spooled arrives."""
    stack = secure_stack
    run = f"acl-{uuid.uuid4().hex[:10]}"
    logs_topic, spans_topic = f"e2e.{run}.logs", f"e2e.{run}.spans"
    await create_topics(stack, logs_topic, spans_topic)
    username, password_file = documented_kafka_user(stack, "tether-agent")
    (tmp_path / "logs").mkdir()
    log_path = tmp_path / "logs" / "app.log"
    lines = [json.dumps({"level": "info", "message": f"{run} line {n}"}) for n in range(20)]
    log_path.write_text("\n".join(lines) + "\n")
    ops_port = free_port()
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"""
agent_id: {run}
data_dir: {tmp_path / "state"}
files: {{include: ["{tmp_path}/logs/*.log"], poll_interval_seconds: 0.1}}
otlp: {{grpc_endpoint: "127.0.0.1:{free_port()}", http_endpoint: "127.0.0.1:{free_port()}"}}
ops: {{endpoint: "127.0.0.1:{ops_port}"}}
"""
        + kafka_yaml(stack, logs_topic, spans_topic, password_file, username=username)
    )
    agent = TetherProcess("agent", config, tmp_path / "agent.out", ops_port)
    agent.launch()
    try:
        agent.wait_listening(ops_port)
        refusal = "kafka.sasl.username: Kafka refused this user access to topic"
        await asyncio.to_thread(assert_refusing_but_alive, agent, refusal)
        status, body = agent.get("/readyz")
        assert status == 503 and b"Write and Describe on kafka.logs_topic" in body, body
        renamed = {"tether.logs": logs_topic, "tether.spans": spans_topic}
        granted = [
            AclBinding(b.principal, b.resource_type, renamed[b.resource_name], b.operation)
            for b in documented_acls()
            if b.username == username
        ]
        await create_acls(stack.kafka.bootstrap, granted, **stack.kafka.client_options())
        records = await consume_secure(stack, logs_topic, len(lines), within=75.0)
        ready = agent.get("/readyz")[0]
    finally:
        status = agent.stop()
    assert sorted(r["body"] for r in records) == sorted(_bodies(lines)), agent.tail()
    assert ready == 200 and status == 0, agent.tail()


async def test_agent_that_may_describe_but_not_write_spools_then_delivers_once_granted(
    secure_stack: SecureStack, tmp_path: Path
) -> None:
    """The documented agent user with Describe but not Write on its topics: it connects (the
    metadata is allowed) but every send is refused. It says the key and the ACLs to grant, is not
    ready, spools; once Write is granted the spool drains on its own, every line once."""
    stack = secure_stack
    run = f"wacl-{uuid.uuid4().hex[:10]}"
    logs_topic, spans_topic = f"e2e.{run}.logs", f"e2e.{run}.spans"
    await create_topics(stack, logs_topic, spans_topic)
    username, password_file = documented_kafka_user(stack, "tether-agent")
    renamed = {"tether.logs": logs_topic, "tether.spans": spans_topic}
    grants = documented_grants(username, renamed, "topic")
    describe = [b for b in grants if b.operation == "Describe"]
    assert describe and len(describe) < len(grants), grants  # the doc grants more than Describe
    await create_acls(stack.kafka.bootstrap, describe, **stack.kafka.client_options())
    (tmp_path / "logs").mkdir()
    log_path = tmp_path / "logs" / "app.log"
    lines = [json.dumps({"level": "info", "message": f"{run} line {n}"}) for n in range(20)]
    log_path.write_text("\n".join(lines[:10]) + "\n")
    ops_port = free_port()
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"""
agent_id: {run}
data_dir: {tmp_path / "state"}
files: {{include: ["{tmp_path}/logs/*.log"], poll_interval_seconds: 0.1}}
otlp: {{grpc_endpoint: "127.0.0.1:{free_port()}", http_endpoint: "127.0.0.1:{free_port()}"}}
ops: {{endpoint: "127.0.0.1:{ops_port}"}}
spool: {{spill_after_seconds: 1}}
"""
        + kafka_yaml(stack, logs_topic, spans_topic, password_file, username=username)
    )
    agent = TetherProcess("agent", config, tmp_path / "agent.out", ops_port)
    agent.launch()
    try:
        agent.wait_listening(ops_port)
        wait_for_output(agent, "connected to Kafka")  # Describe is enough for that
        refusal = f"kafka.sasl.username: Kafka refused this user access to topic '{logs_topic}'"
        await asyncio.to_thread(assert_refusing_but_alive, agent, refusal)
        with log_path.open("a") as handle:  # while refused, too
            handle.write("\n".join(lines[10:]) + "\n")
        status, body = agent.get("/readyz")
        assert status == 503 and b"Write and Describe on kafka.logs_topic" in body, body
        deadline = time.monotonic() + 10
        while agent.samples().get("tether_agent_spool_batches", 0) < 2:  # both writes, spooled
            assert time.monotonic() < deadline, agent.tail()
            await asyncio.sleep(0.25)
        await create_acls(stack.kafka.bootstrap, grants, **stack.kafka.client_options())
        records = await consume_secure(stack, logs_topic, len(lines), within=30.0)
        deadline = time.monotonic() + 10
        while (ready := agent.get("/readyz")[0]) != 200 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.25)
        spooled = agent.samples().get("tether_agent_spool_batches")
    finally:
        status = agent.stop()
    assert sorted(r["body"] for r in records) == sorted(_bodies(lines)), agent.tail()  # each line once
    assert "Kafka accepts the agent's sends again" in agent.tail(200_000), agent.tail()
    assert ready == 200 and spooled == 0 and status == 0, agent.tail()


# The collector refused by Elasticsearch or Jaeger: it holds, and delivers once fixed


@pytest.mark.parametrize(
    "refusal",
    [
        "revoked API key",
        "unknown API key",
        "untrusted CA",
        "wrong hostname",
        "expired client certificate",
    ],
)
async def test_collector_refused_retries_then_delivers_uncommitted_once(
    secure_stack: SecureStack, tmp_path: Path, refusal: str
) -> None:
    stack = secure_stack
    run = f"coll-{uuid.uuid4().hex[:10]}"
    logs_topic, spans_topic = f"e2e.{run}.logs", f"e2e.{run}.spans"
    await create_topics(stack, logs_topic, spans_topic)
    traces = [TraceSpec.make(n, run=run) for n in range(4)]
    async with Producer(
        stack, logs_topic, spans_topic, agent_id=run, **stack.kafka.client_options()
    ) as producer:
        for trace in traces:
            await producer.lines(trace.lines)
            await producer.spans(trace.span_request(trace.spans))
    api_key_file = stack.secrets_dir / "api-key-encoded"
    good: dict[str, Any] = {"elasticsearch_auth": f'api_key_file: "{api_key_file}"'}
    bad: dict[str, Any] = dict(good)
    why = ""  # what the refusal must also say, past the setting
    if refusal == "revoked API key":
        key = stack.elasticsearch_admin.create_api_key(
            f"revoked-{run}", {"tether_collector": documented_collector_role()}
        )
        stack.elasticsearch_admin.invalidate_api_key(key.id)
        revoked = tmp_path / "api-key"
        revoked.write_text(key.encoded + "\n")
        bad["elasticsearch_auth"], setting = f'api_key_file: "{revoked}"', "elasticsearch.api_key"
        why = f"api key [{key.id}] has been invalidated"
    elif refusal == "unknown API key":  # well formed, but no cluster ever made it
        unknown_id = uuid.uuid4().hex[:20]
        unknown = tmp_path / "api-key"
        unknown.write_text(base64.b64encode(f"{unknown_id}:{uuid.uuid4().hex}".encode()).decode() + "\n")
        bad["elasticsearch_auth"], setting = f'api_key_file: "{unknown}"', "elasticsearch.api_key"
        why = f"unable to find apikey with id {unknown_id}"
    elif refusal == "untrusted CA":
        bad["elasticsearch_ca"], setting = stack.certificates.untrusted_ca.cert, "elasticsearch.tls.ca_file"
    elif refusal == "wrong hostname":
        bad["jaeger_server_name"], setting = WRONG_HOSTNAME, "jaeger.endpoint"
    else:  # Elasticsearch verifies a client certificate when one is presented (Kafka does not)
        bad["elasticsearch_client_cert"] = client_certificate(stack.certificates.expired_client)
        good["elasticsearch_client_cert"] = client_certificate(stack.certificates.client)
        setting = "elasticsearch.tls.cert_file"
    ops_port = free_port()
    config = tmp_path / "collector.yaml"
    config.write_text(collector_yaml(stack, logs_topic, spans_topic, f"e2e-{run}", ops_port=ops_port, **bad))
    collector = TetherProcess("collector", config, tmp_path / "collector.out", ops_port)
    collector.launch()
    try:
        await asyncio.to_thread(assert_refusing_but_alive, collector, setting)
        assert why in collector.tail(200_000), collector.tail()
    finally:
        assert collector.stop() == 0, collector.tail()
    config.write_text(collector_yaml(stack, logs_topic, spans_topic, f"e2e-{run}", ops_port=ops_port, **good))
    collector.launch()
    try:
        expected_logs = sum(len(t.lines) for t in traces)
        expected_spans = sum(len(t.spans) for t in traces)
        trace_ids = [t.trace_id.hex() for t in traces]
        log_hits = await wait_for_hits(
            stack, "tether-logs", {"match_phrase": {"message": run}}, expected_logs
        )
        span_hits = await wait_for_hits(
            stack, "tether-spans", {"terms": {"trace.id": trace_ids}}, expected_spans
        )
        jaeger = {
            trace_id: await asyncio.to_thread(jaeger_span_ids, stack, trace_id) for trace_id in trace_ids
        }
        ready = collector.get("/readyz")[0]
    finally:
        status = collector.stop()
    diagnostics = collector.tail()
    assert len(log_hits) == expected_logs, diagnostics
    assert len({hit["_id"] for hit in log_hits}) == expected_logs
    assert Counter(hit["_source"]["message"] for hit in log_hits).most_common(1)[0][1] == 1
    assert all(hit["_source"]["tether"]["correlation"] == "span" for hit in log_hits)
    assert len(span_hits) == expected_spans, diagnostics
    assert len({hit["_id"] for hit in span_hits}) == expected_spans
    for trace in traces:  # Jaeger has every span of every trace, once
        assert sorted(jaeger[trace.trace_id.hex()]) == sorted(s.span_id.hex() for s in trace.spans), (
            diagnostics
        )
    assert ready == 200 and status == 0, diagnostics


def documented_grants(username: str, renamed: dict[str, str], resource_type: str) -> list[AclBinding]:
    """docs/security.md's ACLs of `username` on `resource_type`, for the resources `renamed` maps."""
    return [
        AclBinding(b.principal, b.resource_type, renamed[b.resource_name], b.operation)
        for b in documented_acls()
        if b.username == username and b.resource_type == resource_type
    ]


async def test_collector_without_the_acls_is_refused_then_consumes_once_granted(
    secure_stack: SecureStack, tmp_path: Path
) -> None:
    """The documented collector user on topics and a group its ACLs do not name: refused the
    topics (not "does not exist"), then, once those are granted, refused the group; each time
    it names the user and the ACLs to grant, retries and is not ready. Once the doc's ACLs are
    granted it consumes on its own, and every record arrives once."""
    stack = secure_stack
    run = f"cacl-{uuid.uuid4().hex[:10]}"
    logs_topic, spans_topic, group = f"e2e.{run}.logs", f"e2e.{run}.spans", f"e2e-{run}"
    await create_topics(stack, logs_topic, spans_topic)
    traces = [TraceSpec.make(n, run=run) for n in range(3)]
    async with Producer(
        stack, logs_topic, spans_topic, agent_id=run, **stack.kafka.client_options()
    ) as producer:
        for trace in traces:
            await producer.lines(trace.lines)
            await producer.spans(trace.span_request(trace.spans))
    ops_port = free_port()
    config = tmp_path / "collector.yaml"
    config.write_text(
        collector_yaml(
            stack,
            logs_topic,
            spans_topic,
            group,
            f'api_key_file: "{stack.secrets_dir / "api-key-encoded"}"',
            ops_port,
            kafka_user=documented_kafka_user(stack, "tether-collector"),
        )
    )
    collector = TetherProcess("collector", config, tmp_path / "collector.out", ops_port)
    collector.launch()
    refused = "kafka.sasl.username: Kafka refused this user access to"
    try:
        await asyncio.to_thread(assert_refusing_but_alive, collector, f"{refused} topic '{logs_topic}'")
        assert "does not exist" not in collector.tail(200_000), collector.tail()
        assert "Read and Describe on kafka.logs_topic" in collector.tail(200_000), collector.tail()
        renamed = {"tether.logs": logs_topic, "tether.spans": spans_topic, "tether-collector": group}
        await create_acls(
            stack.kafka.bootstrap,
            documented_grants("tether-collector", renamed, "topic"),
            **stack.kafka.client_options(),
        )
        await asyncio.to_thread(assert_refusing_but_alive, collector, f"{refused} group '{group}'")
        await create_acls(
            stack.kafka.bootstrap,
            documented_grants("tether-collector", renamed, "group"),
            **stack.kafka.client_options(),
        )
        expected_logs = sum(len(t.lines) for t in traces)
        expected_spans = sum(len(t.spans) for t in traces)
        log_hits = await wait_for_hits(
            stack, "tether-logs", {"match_phrase": {"message": run}}, expected_logs, within=45.0
        )
        span_hits = await wait_for_hits(
            stack,
            "tether-spans",
            {"terms": {"trace.id": [t.trace_id.hex() for t in traces]}},
            expected_spans,
            within=20.0,
        )
        ready = collector.get("/readyz")[0]
    finally:
        status = collector.stop()
    diagnostics = collector.tail()
    assert "Kafka accepts the collector's user again" in collector.tail(200_000), diagnostics
    assert len(log_hits) == expected_logs, diagnostics
    assert Counter(hit["_source"]["message"] for hit in log_hits).most_common(1)[0][1] == 1
    assert len({hit["_id"] for hit in span_hits}) == len(span_hits) == expected_spans, diagnostics
    assert ready == 200 and status == 0, diagnostics


def jaeger_span_ids(stack: SecureStack, trace_id: str, within: float = 30.0) -> list[str]:
    """The span ids Jaeger's query API has for `trace_id` (duplicates kept), once it has them."""
    deadline = time.monotonic() + within
    while True:
        try:
            body = test_pipeline._jaeger_trace(stack, trace_id)
            return [s["spanID"] for trace in body["data"] for s in trace["spans"]]
        except urllib.error.HTTPError as error:
            if error.code != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.5)
