"""The Elasticsearch client as configured: against a real local TLS server, it trusts only the
configured CA or pinned fingerprint, checks the hostname, sends the credentials, and a refusal
names the setting to fix (never the secret)."""

from __future__ import annotations

import asyncio
import base64
import logging
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from tests.unit.tls_certificates import Authority, authority
from tests.unit.tls_servers import HttpsPeer, https_peer, server_context
from tether.collector.config import ElasticsearchSinkConfig
from tether.collector.metrics import CollectorMetrics
from tether.collector.sinks.elasticsearch import ElasticsearchSink
from tether.elasticsearch_security import ElasticsearchConnection
from tether.query.client import LogQuery, Reader, Unavailable

SECRET = "es-Secret-value-9f8e"
EMPTY_SEARCH = {"hits": {"hits": [], "total": {"value": 0}}}
SECURITY_401 = {
    "error": {
        "type": "security_exception",
        "reason": "unable to authenticate user [tether] for REST request [/]",
    },
    "status": 401,
}


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return authority(tmp_path / "ca")


def connect(peer: HttpsPeer, **settings: Any) -> ElasticsearchConnection:
    return ElasticsearchConnection.model_validate({"url": peer.url, **settings})


async def read_logs(connection: ElasticsearchConnection) -> None:
    async with Reader(connection, timeout=5) as reader:
        await reader.logs(LogQuery())


async def test_trusted_ca_and_basic_auth(ca: Authority) -> None:
    async with https_peer(server_context(ca.issue("server"))) as peer:
        peer.answers = [(200, EMPTY_SEARCH)]
        await read_logs(connect(peer, username="tether", password=SECRET, tls={"ca_file": ca.ca_file}))
    path, headers = peer.requests[0]
    assert path.endswith("/_search")
    assert headers["Authorization"] == "Basic " + base64.b64encode(f"tether:{SECRET}".encode()).decode()


async def test_api_key_id_and_key_are_sent_encoded(ca: Authority) -> None:
    async with https_peer(server_context(ca.issue("server"))) as peer:
        peer.answers = [(200, EMPTY_SEARCH)]
        await read_logs(connect(peer, api_key_id="key-1", api_key=SECRET, tls={"ca_file": ca.ca_file}))
    expected = base64.b64encode(f"key-1:{SECRET}".encode()).decode()
    assert peer.requests[0][1]["Authorization"] == f"ApiKey {expected}"


async def test_untrusted_ca_names_ca_file(tmp_path: Path, ca: Authority) -> None:
    other = authority(tmp_path / "other", "some other CA")
    async with https_peer(server_context(ca.issue("server"))) as peer:
        with pytest.raises(Unavailable) as caught:
            await read_logs(connect(peer, username="u", password=SECRET, tls={"ca_file": other.ca_file}))
    assert str(caught.value).startswith("elasticsearch.tls.ca_file: certificate verify failed")
    assert peer.requests == []  # nothing, credentials least of all, went to an untrusted server
    assert SECRET not in str(caught.value)


async def test_wrong_hostname_names_url(ca: Authority) -> None:
    async with https_peer(server_context(ca.issue("server", ("elsewhere.example",)))) as peer:
        with pytest.raises(Unavailable) as by_address:
            await read_logs(connect(peer, tls={"ca_file": ca.ca_file}))
        assert str(by_address.value).startswith("elasticsearch.url: certificate verify failed")
        assert "IP address mismatch" in str(by_address.value)
        by_name = ElasticsearchConnection.model_validate(
            {"url": peer.url.replace("127.0.0.1", "localhost"), "tls": {"ca_file": ca.ca_file}}
        )
        with pytest.raises(Unavailable) as caught:
            await read_logs(by_name)
        assert str(caught.value).startswith("elasticsearch.url: certificate verify failed")
        assert "Hostname mismatch" in str(caught.value)
        peer.answers = [(200, EMPTY_SEARCH)]
        await read_logs(connect(peer, tls={"ca_file": ca.ca_file, "verify_hostname": False}))
    assert len(peer.requests) == 1


async def test_https_to_a_plain_http_server_names_url(ca: Authority) -> None:
    async with https_peer(None) as peer:
        with pytest.raises(Unavailable) as caught:
            await read_logs(connect(peer, tls={"ca_file": ca.ca_file}))
    assert str(caught.value).startswith(f"elasticsearch.url: {peer.url} does not speak https")


async def test_pinned_fingerprint(ca: Authority) -> None:
    server = ca.issue("server")
    async with https_peer(server_context(server)) as peer:
        peer.answers = [(200, EMPTY_SEARCH)]
        # no CA at all: the fingerprint is the trust
        await read_logs(connect(peer, tls={"ssl_assert_fingerprint": server.sha256.upper()}))
        assert len(peer.requests) == 1
        with pytest.raises(Unavailable) as caught:
            await read_logs(connect(peer, tls={"ssl_assert_fingerprint": "00" * 32}))
    assert str(caught.value).startswith("elasticsearch.tls.ssl_assert_fingerprint:")
    assert server.sha256 in str(caught.value)
    assert len(peer.requests) == 1


async def test_client_certificate_is_presented(tmp_path: Path, ca: Authority) -> None:
    clients = authority(tmp_path / "clients", "client CA")
    client = clients.issue("client", ("tether-collector",), client=True)
    async with https_peer(server_context(ca.issue("server"), client_ca=clients)) as peer:
        peer.answers = [(200, EMPTY_SEARCH)]
        tls = {"ca_file": ca.ca_file, "cert_file": client.cert_file, "key_file": client.key_file}
        await read_logs(connect(peer, tls=tls))
        assert len(peer.requests) == 1
        with pytest.raises(Unavailable):  # without one, the server refuses the handshake
            await read_logs(connect(peer, tls={"ca_file": ca.ca_file}))
    assert len(peer.requests) == 1


async def test_wrong_password_names_password_not_the_secret(ca: Authority) -> None:
    async with https_peer(server_context(ca.issue("server"))) as peer:
        peer.answers = [(401, SECURITY_401)]
        with pytest.raises(Unavailable) as caught:
            await read_logs(connect(peer, username="tether", password=SECRET, tls={"ca_file": ca.ca_file}))
    assert str(caught.value).startswith("elasticsearch.password: authentication failed")
    assert "unable to authenticate user [tether]" in str(caught.value)
    assert SECRET not in str(caught.value)


async def test_missing_privilege_names_the_user(ca: Authority) -> None:
    forbidden = {
        "error": {
            "type": "security_exception",
            "reason": "action [indices:data/read/search] is unauthorized for user [reader]",
        },
        "status": 403,
    }
    async with https_peer(server_context(ca.issue("server"))) as peer:
        peer.answers = [(403, forbidden)]
        with pytest.raises(Unavailable) as caught:
            await read_logs(connect(peer, username="reader", password=SECRET, tls={"ca_file": ca.ca_file}))
    assert str(caught.value).startswith("elasticsearch.username: not allowed")
    assert "docs/security.md" in str(caught.value)


async def test_collector_holds_on_401_until_fixed_and_is_not_ready(
    ca: Authority, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused password does not end the collector: it retries with backoff, unhealthy, and
    carries on once Elasticsearch accepts (here: the server starts accepting)."""
    async with https_peer(server_context(ca.issue("server"))) as peer:
        peer.answers = [(401, SECURITY_401), (401, SECURITY_401), (200, {"acknowledged": True})]
        config = ElasticsearchSinkConfig.model_validate(
            {"url": peer.url, "username": "tether", "password": SECRET, "tls": {"ca_file": ca.ca_file}}
        )
        sink = ElasticsearchSink(config, CollectorMetrics())
        health: list[bool] = []

        async def watch() -> None:
            while True:
                health.append(sink.healthy)
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch())
        # the client's own request log too (another test's configure_logging may have quieted it)
        with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, "elastic_transport"):
            try:
                await asyncio.wait_for(sink.install_templates(), 30)
            finally:
                watcher.cancel()
                await sink.close()
    refusals = [  # this sink's: tasks of other tests may still be retrying on the same loop
        r
        for r in caplog.records
        if r.getMessage() == "Elasticsearch refused the connection; retrying"
        and peer.url in str(getattr(r, "error", ""))
    ]
    assert len(refusals) == 2
    assert all(str(r.error).startswith("elasticsearch.password: authentication failed") for r in refusals)  # type: ignore[attr-defined]
    assert False in health and sink.healthy
    metrics = generate_latest(sink.metrics.registry).decode()
    assert 'bulk_retries_total{reason="security"} 2.0' in metrics.replace("tether_collector_", "")
    assert SECRET not in metrics
    # the client's own debug log of each request is on here too: neither the password nor the
    # Authorization header it travels in may show
    header = base64.b64encode(f"tether:{SECRET}".encode()).decode()
    assert any(r.name.startswith("elastic_transport") for r in caplog.records)
    for record in caplog.records:
        text = record.getMessage() + str(record.__dict__)
        assert SECRET not in text and header not in text


async def test_bulk_item_refused_for_privilege_is_held_not_deadlettered(ca: Authority) -> None:
    from tether.collector.sinks.elasticsearch import IndexRequest

    refused = {
        "errors": True,
        "items": [
            {
                "index": {
                    "status": 403,
                    "_index": "tether-logs-2026.01.01",
                    "error": {
                        "type": "security_exception",
                        "reason": "action [indices:data/write/bulk[s]] is unauthorized",
                    },
                }
            }
        ],
    }
    async with https_peer(server_context(ca.issue("server"))) as peer:
        peer.answers = [(200, refused), (200, {"errors": False, "items": [{"index": {"status": 201}}]})]
        config = ElasticsearchSinkConfig.model_validate({"url": peer.url, "tls": {"ca_file": ca.ca_file}})
        sink = ElasticsearchSink(config, CollectorMetrics())
        try:
            rejections = await asyncio.wait_for(
                sink.index([IndexRequest("tether-logs", "id-1", 1_767_225_600 * 10**9, {"message": "x"})]), 30
            )
        finally:
            await sink.close()
    assert rejections == []
    assert len(peer.requests) == 2  # retried, not sent to the dead-letter index
