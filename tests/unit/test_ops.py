"""The ops endpoint: /metrics whole, or only the series a poller names."""

from __future__ import annotations

import asyncio
import socket
import urllib.request

from prometheus_client import CollectorRegistry, Counter, Gauge

from tether.ops import OpsServer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def samples(text: str) -> dict[str, str]:
    return dict(line.split()[:2] for line in text.splitlines() if not line.startswith("#"))


async def test_metrics_gives_every_series_or_only_the_named_ones() -> None:
    registry = CollectorRegistry()
    Counter("tether_test_records_in", "records", registry=registry).inc(3)
    Gauge("tether_test_buffered", "buffered", registry=registry).set(7)
    port = _free_port()
    server = OpsServer(f"127.0.0.1:{port}", registry, ready=lambda: True)
    await server.start()
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        whole = await asyncio.to_thread(_get, url)
        named = await asyncio.to_thread(_get, url + "?name[]=tether_test_records_in_total")
        both = await asyncio.to_thread(
            _get, url + "?name[]=tether_test_records_in_total&name[]=tether_test_buffered"
        )
    finally:
        await server.stop()
    assert samples(whole) == {
        "tether_test_records_in_total": "3.0",
        "tether_test_records_in_created": samples(whole)["tether_test_records_in_created"],
        "tether_test_buffered": "7.0",
    }
    assert samples(named) == {"tether_test_records_in_total": "3.0"}
    assert set(samples(both)) == {"tether_test_records_in_total", "tether_test_buffered"}
