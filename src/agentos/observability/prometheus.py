"""The Prometheus endpoint: ``GET /metrics`` in the text exposition format, on the kernel's loop.

Served by the kernel's own aiohttp (already loaded for the LLM gateway), so no thread and no
second HTTP stack. Loopback only unless ``telemetry.metrics_remote`` says otherwise: the
metrics name agents, projects and models, and the endpoint asks for no credentials.
"""
from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .metrics import KernelMetrics

#: What Prometheus asks for and prometheus_client writes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def parse_address(text: object, remote: bool) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as an IP literal and a port; ValueError naming
    ``telemetry.metrics`` for anything else, or for a non-loopback host unless ``remote``."""
    key = "telemetry.metrics"
    if not isinstance(text, str) or ":" not in text:
        raise ValueError(f"{key}: expected HOST:PORT (e.g. 127.0.0.1:9464), got {text!r}")
    host, _, port_text = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if host == "localhost":
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{key}: {host!r} is not an IP address (e.g. 127.0.0.1:9464)") from None
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{key}: port must be 0-65535 (0: any free port), got {port_text!r}")
    if not address.is_loopback and not remote:
        raise ValueError(f"{key}: {host} is not a loopback address; the metrics name agents, "
                         "projects and models and need no credentials, so serving them beyond "
                         "this host takes telemetry.metrics_remote: true (--metrics-remote)")
    return str(address), int(port_text)


class MetricsServer:
    """``GET /metrics`` on ``address``; ``url`` says where once started (port 0 is resolved)."""

    def __init__(self, metrics: KernelMetrics, address: str, remote: bool) -> None:
        self.metrics = metrics
        self.host, self.port = parse_address(address, remote)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._scrape)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _scrape(self, request: web.Request) -> web.Response:
        body = await self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
