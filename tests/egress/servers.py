"""Local HTTP servers that stand for internal services, and a resolver of our own.

Nothing here leaves loopback: every "name" is answered from a table, and every
address in it is 127.0.0.0/8.
"""
from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence

from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult


class TableResolver(AbstractResolver):
    """Answers names from ``table``; a name with several answers gives them in turn (the last
    one from then on), which is how a rebinding DNS server behaves. Counts every lookup."""

    def __init__(self, table: Mapping[str, Sequence[str]]) -> None:
        self.table = {name: list(answers) for name, answers in table.items()}
        self.lookups: list[str] = []

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self.lookups.append(host)
        answers = self.table.get(host.rstrip("."))
        if not answers:
            raise OSError(f"no such host {host}")
        address = answers.pop(0) if len(answers) > 1 else answers[0]
        return [ResolveResult(hostname=host, host=address, port=port, family=socket.AF_INET,
                              proto=0, flags=socket.AI_NUMERICHOST)]

    async def close(self) -> None:
        pass


class Internal:
    """One aiohttp app listening on the same port of 127.0.0.1 and 127.0.0.2; records which
    local address served each request, so a test sees where a connection really went."""

    def __init__(self) -> None:
        self.hits: list[tuple[str, str]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> Internal:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        first = web.TCPSite(self._runner, "127.0.0.1", 0)
        await first.start()
        self.port = first._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        await web.TCPSite(self._runner, "127.0.0.2", self.port).start()
        return self

    async def stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def served_by(self, address: str) -> list[str]:
        return [path for local, path in self.hits if local == address]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        local = request.transport.get_extra_info("sockname")[0]  # type: ignore[union-attr]
        self.hits.append((local, request.path))
        if request.path.startswith("/redirect/"):
            # Set by hand: web.HTTPFound would refuse a malformed target, and a hostile server sends any.
            return web.Response(status=302, headers={
                "Location": f"http://{request.path.removeprefix('/redirect/')}/secret"})
        return web.json_response({"served_by": local, "host": request.headers.get("Host"),
                                  "path": request.path})
