"""`tether stack up --secure` with plain clients: each server accepts the stack's credentials over TLS
verified by the stack's CA, and refuses the wrong ones.

These check the stack itself (what later tests of tether's secured pipeline stand on), with the
clients every user has: aiokafka, urllib, the OpenTelemetry SDK's OTLP exporter.

The `tether` Elasticsearch user is a file-realm one; the API key and the users and roles tests make
through the API live in the `.security` index, which this distribution can create only with the
stack's small analysis plugin (docs/secure-stack.md).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import grpc
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from tether.stack import SecureStack
from tether.stack.kafka import ensure_topics
from tether.stack.secure_kafka import kafka_client_options

pytestmark = pytest.mark.stack


# Kafka: SASL_SSL with SCRAM


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_kafka_produce_and_consume_over_sasl_ssl(secure_stack: SecureStack, mechanism: str) -> None:
    options = kafka_client_options(secure_stack.certificates, secure_stack.credentials, mechanism)
    topic = f"secure-e2e-{uuid.uuid4().hex[:10]}"
    await ensure_topics(secure_stack.kafka.bootstrap, [topic], 1, **options)
    producer = AIOKafkaProducer(bootstrap_servers=secure_stack.kafka.bootstrap, acks="all", **options)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"over tls, " + mechanism.encode())
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=secure_stack.kafka.bootstrap,
        group_id=f"{topic}-group",  # the group coordinator is reached over the same listener
        auto_offset_reset="earliest",
        **kafka_client_options(secure_stack.certificates, secure_stack.credentials, mechanism),
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), timeout=30)
        assert record.value == b"over tls, " + mechanism.encode()
        await consumer.commit()
    finally:
        await consumer.stop()


async def test_kafka_refuses_a_wrong_password(
    secure_stack: SecureStack, caplog: pytest.LogCaptureFixture
) -> None:
    options = kafka_client_options(
        secure_stack.certificates, secure_stack.credentials, "SCRAM-SHA-512", password="not-the-password"
    )
    producer = AIOKafkaProducer(bootstrap_servers=secure_stack.kafka.bootstrap, **options)
    with caplog.at_level(logging.ERROR, logger="aiokafka"), pytest.raises(KafkaConnectionError):
        await producer.start()
    await producer.stop()
    assert "Authentication failed" in caplog.text  # the broker said why, not a network error


async def test_kafka_is_not_trusted_through_another_ca(
    secure_stack: SecureStack, caplog: pytest.LogCaptureFixture
) -> None:
    options = kafka_client_options(secure_stack.certificates, secure_stack.credentials)
    options["ssl_context"] = ssl.create_default_context(
        cafile=str(secure_stack.certificates.untrusted_ca.cert)
    )
    producer = AIOKafkaProducer(bootstrap_servers=secure_stack.kafka.bootstrap, **options)
    with caplog.at_level(logging.ERROR, logger="aiokafka"), pytest.raises(KafkaConnectionError):
        await producer.start()
    await producer.stop()
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


# Elasticsearch: https, users, service account token, API keys


def es_request(
    stack: SecureStack,
    method: str,
    path: str,
    authorization: str | None,
    *,
    cafile: str | None = None,
    body: dict[str, Any] | None = None,
) -> tuple[int, dict[str, Any]]:
    context = ssl.create_default_context(cafile=cafile or str(stack.certificates.ca.cert))
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    request = urllib.request.Request(
        f"{stack.elasticsearch.url}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers=headers,
    )
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), json.loads(error.read() or b"{}")


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def test_elasticsearch_user_over_https_can_write_and_read(secure_stack: SecureStack) -> None:
    c = secure_stack.credentials
    user = basic(c.elasticsearch_username, c.elasticsearch_password)
    assert secure_stack.elasticsearch.url.startswith("https://")
    status, me = es_request(secure_stack, "GET", "/_security/_authenticate", user)
    assert (status, me["username"], me["roles"]) == (200, "tether", ["superuser"])
    assert me["authentication_realm"]["type"] == "file"
    index = f"secure-e2e-{uuid.uuid4().hex[:10]}"
    try:
        status, _ = es_request(secure_stack, "PUT", f"/{index}/_doc/1?refresh=true", user, body={"m": "x"})
        assert status == 201
        status, found = es_request(secure_stack, "GET", f"/{index}/_doc/1", user)
        assert (status, found["_source"]) == (200, {"m": "x"})
    finally:
        es_request(secure_stack, "DELETE", f"/{index}", user)


def test_elasticsearch_service_token_authenticates(secure_stack: SecureStack) -> None:
    c = secure_stack.credentials
    assert c.service_token_name == "elastic/fleet-server/tether" and c.service_token is not None
    bearer = f"Bearer {c.service_token}"
    status, me = es_request(secure_stack, "GET", "/_security/_authenticate", bearer)
    assert status == 200, me
    assert (me["username"], me["authentication_type"]) == ("elastic/fleet-server", "token")
    assert me["token"]["name"] == "tether"
    assert es_request(secure_stack, "GET", "/_cluster/health", bearer)[0] == 200  # the account's monitor
    assert es_request(secure_stack, "GET", "/_cluster/health", f"Bearer {c.service_token[:-4]}AAAA")[0] == 401


def test_elasticsearch_api_key_authenticates(secure_stack: SecureStack) -> None:
    c = secure_stack.credentials
    assert c.api_key_id is not None and c.api_key is not None and c.api_key_encoded is not None
    status, me = es_request(secure_stack, "GET", "/_security/_authenticate", f"ApiKey {c.api_key_encoded}")
    assert status == 200
    assert me["authentication_type"] == "api_key"
    assert me["api_key"]["id"] == c.api_key_id
    status, _ = es_request(secure_stack, "GET", "/_cluster/health", f"ApiKey {c.api_key_encoded}")
    assert status == 200


def test_elasticsearch_without_credentials_is_401(secure_stack: SecureStack) -> None:
    status, body = es_request(secure_stack, "GET", "/_cluster/health", None)
    assert status == 401, body
    c = secure_stack.credentials
    status, _ = es_request(secure_stack, "GET", "/_cluster/health", basic(c.elasticsearch_username, "wrong"))
    assert status == 401


def test_elasticsearch_through_the_untrusted_ca_fails_verification(secure_stack: SecureStack) -> None:
    c = secure_stack.credentials
    with pytest.raises(urllib.error.URLError) as raised:
        es_request(
            secure_stack,
            "GET",
            "/_cluster/health",
            basic(c.elasticsearch_username, c.elasticsearch_password),
            cafile=str(secure_stack.certificates.untrusted_ca.cert),
        )
    assert isinstance(raised.value.reason, ssl.SSLCertVerificationError)


def test_elasticsearch_invalidated_api_key_is_refused(secure_stack: SecureStack) -> None:
    admin = secure_stack.elasticsearch_admin
    key = admin.create_api_key(f"secure-e2e-{uuid.uuid4().hex[:8]}")
    assert es_request(secure_stack, "GET", "/_security/_authenticate", f"ApiKey {key.encoded}")[0] == 200
    admin.invalidate_api_key(key.id)
    assert es_request(secure_stack, "GET", "/_security/_authenticate", f"ApiKey {key.encoded}")[0] == 401


def test_elasticsearch_user_with_a_narrow_role_gets_only_that(secure_stack: SecureStack) -> None:
    admin, suffix = secure_stack.elasticsearch_admin, uuid.uuid4().hex[:8]
    admin.put_role(f"monitor-only-{suffix}", {"cluster": ["monitor"], "indices": []})
    admin.put_user(f"watcher-{suffix}", f"pw-{suffix}-long-enough", [f"monitor-only-{suffix}"])
    user = basic(f"watcher-{suffix}", f"pw-{suffix}-long-enough")
    assert es_request(secure_stack, "GET", "/_cluster/health", user)[0] == 200
    status, body = es_request(secure_stack, "PUT", f"/secure-e2e-{suffix}", user)
    assert status == 403, body


# Jaeger: OTLP gRPC over TLS


class _Recorder(SpanExporter):
    """Keeps the SDK's finished spans, so the test hands them to each exporter itself."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Any) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def finished_span(name: str) -> ReadableSpan:
    recorder = _Recorder()
    provider = TracerProvider(resource=Resource.create({"service.name": "secure-stack-e2e"}))
    provider.add_span_processor(SimpleSpanProcessor(recorder))
    with provider.get_tracer("secure-stack-e2e").start_as_current_span(name):
        pass
    provider.shutdown()
    return recorder.spans[0]


def test_jaeger_accepts_otlp_over_tls_given_the_ca(secure_stack: SecureStack) -> None:
    span = finished_span(f"secure-{uuid.uuid4().hex[:8]}")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=secure_stack.certificates.ca.cert.read_bytes()
    )
    exporter = OTLPSpanExporter(
        endpoint=secure_stack.jaeger.otlp_grpc_endpoint, credentials=credentials, timeout=10
    )
    try:
        assert exporter.export([span]) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    stored = stored_trace(secure_stack, f"{span.context.trace_id:032x}")
    assert [s["operationName"] for s in stored] == [span.name]


def stored_trace(stack: SecureStack, trace_id: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The spans Jaeger's query API returns for `trace_id`, once its batch processor has stored it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{stack.jaeger.query_url}/api/traces/{trace_id}", timeout=5) as r:
                spans: list[dict[str, Any]] = json.loads(r.read())["data"][0]["spans"]
                return spans
        except urllib.error.HTTPError as error:
            if error.code != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.2)


@pytest.mark.parametrize("client", ["plaintext", "untrusted CA"])
def test_jaeger_refuses_clients_without_the_stacks_tls(secure_stack: SecureStack, client: str) -> None:
    endpoint = secure_stack.jaeger.otlp_grpc_endpoint
    if client == "plaintext":
        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=3)
    else:
        untrusted = secure_stack.certificates.untrusted_ca.cert.read_bytes()
        exporter = OTLPSpanExporter(
            endpoint=endpoint,
            credentials=grpc.ssl_channel_credentials(root_certificates=untrusted),
            timeout=3,
        )
    try:
        assert exporter.export([finished_span("refused")]) == SpanExportResult.FAILURE
    finally:
        exporter.shutdown()
