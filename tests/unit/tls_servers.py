"""Local TLS servers started in-process by the TLS tests: they show what a client sent and let the
test choose the answer. The certificates come from tests/unit/tls_certificates.py."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.unit.tls_certificates import Authority, Certificate


def server_context(certificate: Certificate, client_ca: Authority | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate.cert_file, certificate.key_file)
    if client_ca is not None:  # mutual TLS: a client certificate from this CA is required
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=str(client_ca.ca_file))
    return context


@dataclass
class HttpsPeer:
    """Answers every request with `answers` in turn (the last one repeats), as Elasticsearch would
    frame them (its product header), and keeps each request's headers and path."""

    url: str
    answers: list[tuple[int, Any]] = field(default_factory=lambda: [(200, {})])
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.requests.append((request.path, dict(request.headers)))
        status, body = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return web.Response(
            status=status,
            body=orjson.dumps(body),
            headers={"Content-Type": "application/json", "X-Elastic-Product": "Elasticsearch"},
        )


@asynccontextmanager
async def https_peer(context: ssl.SSLContext | None, host: str = "127.0.0.1") -> AsyncIterator[HttpsPeer]:
    """With context None, a plain http server (its url still says https, as a misconfigured one would)."""
    peer = HttpsPeer(url="")
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", peer.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    peer.url = f"https://{host}:{port}"
    try:
        yield peer
    finally:
        await runner.cleanup()
