"""The ops endpoint every tether process serves: Prometheus /metrics, /healthz and /readyz."""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import Field

from tether.config import HostPort, Section

log = logging.getLogger("tether.ops")

# Each tier's default, so an agent and a collector can share a host.
AGENT_OPS_ENDPOINT = "127.0.0.1:9464"
COLLECTOR_OPS_ENDPOINT = "127.0.0.1:9465"


class OpsConfig(Section):
    """The `ops` section of both tiers."""

    endpoint: HostPort = Field(description="host:port of /metrics, /healthz, /readyz")


class OpsServer:
    """Liveness says the process serves; readiness says it can accept work (e.g. Kafka reachable)."""

    def __init__(
        self,
        endpoint: str,
        registry: CollectorRegistry,
        ready: Callable[[], bool],
        not_ready_reason: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.host, _, port = endpoint.rpartition(":")
        self.port = int(port)
        self.registry = registry
        self.ready = ready
        self.not_ready_reason = not_ready_reason  # said in /readyz's body when not ready
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        log.info(
            "ops endpoint listening",
            extra={"endpoint": f"{self.host}:{self.port}", "paths": ["/metrics", "/healthz", "/readyz"]},
        )

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        # `?name[]=...` (Prometheus federation's and prometheus_client's own filter): a poller
        # that wants one counter does not pay for every series (RED metrics alone are thousands).
        names = request.query.getall("name[]", [])
        registry = self.registry.restricted_registry(names) if names else self.registry
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _: web.Request) -> web.Response:
        ready = self.ready()
        if ready:
            return web.json_response({"ready": True})
        reason = self.not_ready_reason()
        body: dict[str, object] = {"ready": False} if reason is None else {"ready": False, "reason": reason}
        return web.json_response(body, status=503)
