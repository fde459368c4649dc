"""HTTP egress through a real kernel against a local aiohttp server on 127.0.0.1."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Self

import pytest
from aiohttp import web

from agentos import InvalidArgument, PermissionDenied, Timeout, TooLarge

from .identities import configured_kernel


class LocalServer:
    """An aiohttp app on 127.0.0.1 in its own thread and loop; records the paths it served."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(request.path)
        if request.path == "/hello":
            return web.Response(text="hello from 127.0.0.1", headers={"X-Test": "yes"})
        if request.path == "/echo":
            body = await request.text()
            return web.json_response({"method": request.method, "body": body,
                                      "agent_header": request.headers.get("X-Agent")})
        if request.path == "/binary":
            return web.Response(body=bytes(range(256)), content_type="application/octet-stream")
        if request.path == "/big":
            return web.Response(body=b"x" * (2 * 1024 * 1024))
        if request.path == "/chunked-big":
            resp = web.StreamResponse()
            await resp.prepare(request)
            for _ in range(64):
                await resp.write(b"y" * 65536)
            return resp
        if request.path == "/slow":
            await asyncio.sleep(30)
        if request.path == "/redirect-inside":
            raise web.HTTPFound("/hello")
        if request.path == "/redirect-outside":
            raise web.HTTPFound(f"http://localhost:{self.port}/hello")
        return web.Response(status=404, text="no such page")

    def __enter__(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _stop(self) -> None:
        await self._runner.cleanup()
        # Handlers still sleeping (/slow after the kernel gave up on it) end here.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer() as s:
        yield s


@pytest.fixture
def kernel_with_egress():
    sections = {"egress": {"allow": ["127.0.0.1"], "max_bytes": "1Mi", "timeout": "10s"}}
    with configured_kernel(sections) as kernel:
        yield kernel


def test_allowed_fetches(kernel_with_egress, server: LocalServer) -> None:
    c = kernel_with_egress.client()
    base = f"http://127.0.0.1:{server.port}"
    reply = c.http(f"{base}/hello")
    assert reply["status"] == 200 and reply["body"] == "hello from 127.0.0.1"
    assert reply["headers"]["X-Test"] == "yes"
    echoed = c.http(f"{base}/echo", method="POST", body="payload", headers={"X-Agent": "a1"})
    assert echoed["body"] == '{"method": "POST", "body": "payload", "agent_header": "a1"}'
    binary = c.http(f"{base}/binary")
    assert "body" not in binary and len(binary["body_base64"]) == 344
    assert c.http(f"{base}/missing")["status"] == 404
    followed = c.http(f"{base}/redirect-inside")
    assert followed["body"] == "hello from 127.0.0.1" and followed["url"].endswith("/hello")


def test_refusals(kernel_with_egress, server: LocalServer) -> None:
    c = kernel_with_egress.client()
    base = f"http://127.0.0.1:{server.port}"
    with pytest.raises(PermissionDenied, match="localhost is not an allowed egress domain"):
        c.http(f"http://localhost:{server.port}/hello")
    with pytest.raises(PermissionDenied, match="localhost"):
        c.http(f"{base}/redirect-outside")
    assert server.hits.count("/hello") == 0, "a refused host must never be contacted"
    with pytest.raises(TooLarge):
        c.http(f"{base}/big")
    with pytest.raises(TooLarge):
        c.http(f"{base}/chunked-big")
    with pytest.raises(TooLarge):
        c.http(f"{base}/hello", max_bytes=5)
    with pytest.raises(Timeout):
        c.http(f"{base}/slow", timeout=0.3)
    with pytest.raises(InvalidArgument, match="only http and https"):
        c.http("file:///etc/passwd")
    with pytest.raises(InvalidArgument, match="set by the kernel"):
        c.http(f"{base}/hello", headers={"Host": "evil"})
    with pytest.raises(InvalidArgument, match="method"):
        c.http(f"{base}/hello", method="CONNECT")
    assert c.http(f"{base}/hello")["status"] == 200, "the kernel is unharmed"


def test_no_allowlist_means_no_egress(kernel, server: LocalServer) -> None:
    with pytest.raises(PermissionDenied):
        kernel.client().http(f"http://127.0.0.1:{server.port}/hello")
    assert server.hits == []
