"""The Prometheus endpoint: ``GET /metrics`` in the text exposition format, on the kernel's loop.

Served by the kernel's own aiohttp (already loaded for the LLM gateway), so no thread and no
second HTTP stack. The metrics name every uid's agents, projects, models and budgets, more than
LIST or USAGE show any one caller, and on a shared host every local user reaches a loopback
port: so a scrape must carry a bearer token (Prometheus' ``authorization: credentials_file``),
kept in a 0600 file beside the kernel's state, and the address is loopback unless
``telemetry.metrics_remote`` says otherwise.
"""
from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from ..state.private import open_private

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


def load_token(path: Path) -> str:
    """The scrape token kept in ``path`` (0600), made on first use and kept across restarts so a
    Prometheus configured with the file goes on scraping."""
    fd = open_private(path, os.O_RDWR)
    with os.fdopen(fd, "r+") as file:
        token = file.read().strip()
        if len(token) < 32:
            token = secrets.token_urlsafe(32)
            file.seek(0)
            file.truncate()
            file.write(token + "\n")
    return token


class MetricsServer:
    """``GET /metrics`` on ``address`` for a bearer of the token in ``token_file``; ``url`` says
    where once started (port 0 is resolved)."""

    def __init__(self, metrics: KernelMetrics, address: str, remote: bool, token_file: Path) -> None:
        self.metrics = metrics
        self.host, self.port = parse_address(address, remote)
        self.token_file = token_file
        self._expected = b""
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    async def start(self) -> None:
        self._expected = f"Bearer {load_token(self.token_file)}".encode()
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
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, self._expected):
            return web.Response(status=401, text=f"a bearer token is needed: the one in {self.token_file}\n",
                                headers={"WWW-Authenticate": 'Bearer realm="agentos"'})
        body = await self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
