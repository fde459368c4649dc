"""What both fake model servers share: lifecycle (in a loop or a thread), scripts, recording."""
from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Self

import ujson
from aiohttp import web

from .script import Match, Prompt, Reply


@dataclass
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    #: ``time.monotonic()`` at arrival, so tests can check retry spacing.
    at: float = field(default_factory=time.monotonic)
    #: The route pattern that served it, e.g. ``/{version}/models/{model_action}``.
    route: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "query": self.query,
                "headers": self.headers, "body": self.body, "at": self.at, "route": self.route}


class FakeServer:
    """An aiohttp.web app on 127.0.0.1 with scripted replies and a control API under ``/_fake/``.

    Use ``async with`` inside a running loop, or ``with server.running_in_thread()``
    from synchronous code (a kernel subprocess test). ``script()`` and
    ``requests`` work from any thread.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        #: The shared queue: replies for any request no matcher claims.
        self.replies: deque[Reply] = deque()
        #: Queues for the requests their ``Match`` accepts, consulted first, oldest first.
        self.rules: list[tuple[Match, deque[Reply]]] = []
        self.requests: list[RecordedRequest] = []
        #: Default latency added to every unscripted answer (benchmarks, contention demos).
        self.delay = 0.0
        #: What the models routes list, as wire records (``set_models`` / ``POST /_fake/models``).
        self.models: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None

    # --- scripting -------------------------------------------------------------------------

    def script(self, *replies: Reply, model: str | None = None, user: str | None = None,
               system: str | None = None, history: str | None = None,
               when: Callable[[Prompt], bool] | None = None) -> None:
        """Queue replies. Without conditions they go to the shared queue: each request takes
        the next one. With conditions (``Match``'s) they answer, in order, only requests
        that meet them all; such queues are consulted first, in the order scripted, and
        the shared queue, then the unscripted defaults, serve whatever none claims."""
        match = Match(model=model, user=user, system=system, history=history, when=when)
        if match:
            self.rules.append((match, deque(replies)))
        else:
            self.replies.extend(replies)

    def reset(self) -> None:
        self.replies.clear()
        self.rules.clear()
        self.requests.clear()

    def next_reply(self, prompt: Prompt) -> Reply | None:
        """The reply scripted for ``prompt``: its first matching queue's next, else the shared
        queue's next, else None (the default answer)."""
        for match, queue in list(self.rules):
            if queue and match(prompt):
                return queue.popleft()
        try:
            return self.replies.popleft()
        except IndexError:
            return None

    def set_models(self, models: Iterable[str | dict[str, Any]]) -> None:
        """Replace the model list: ids, or partial records whose missing fields get defaults."""
        self.models = [self.model_record(m) for m in models]

    def model_record(self, model: str | dict[str, Any]) -> dict[str, Any]:
        """One model as this provider's models routes show it."""
        raise NotImplementedError

    @property
    def url(self) -> str:
        """Base URL to give a client, e.g. ``http://127.0.0.1:43121``."""
        return f"http://{self.host}:{self.port}"

    # --- lifecycle -------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        self._closing = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/_fake/script", self._control_script)
        app.router.add_get("/_fake/requests", self._control_requests)
        app.router.add_post("/_fake/reset", self._control_reset)
        app.router.add_post("/_fake/models", self._control_models)
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, reuse_address=True).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._closing is not None:
            self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @contextmanager
    def running_in_thread(self) -> Iterator[Self]:
        """Serve from a private event loop in a daemon thread until the block exits."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        thread = threading.Thread(target=self._thread_main, args=(loop, ready),
                                  name="fake-model-server", daemon=True)
        thread.start()
        ready.wait()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout=30)
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout=30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
            loop.close()

    @staticmethod
    def _thread_main(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()

    async def pause(self, seconds: float) -> bool:
        """Sleep, but wake at shutdown; returns False when the server is closing."""
        assert self._closing is not None
        try:
            await asyncio.wait_for(self._closing.wait(), timeout=seconds)
        except TimeoutError:
            return True
        return False

    async def delay_answer(self, reply: Reply) -> bool:
        """Wait the reply's (or the server's) delay; False when the server is closing meanwhile."""
        wait = reply.delay or self.delay
        return not wait or await self.pause(wait)

    async def send_events(self, request: web.Request, reply: Reply, events: list[Any],
                          error: Any, newline: bytes, done: bytes = b"") -> web.StreamResponse:
        """Stream ``events`` as SSE ``data:`` lines, applying the reply's stream faults."""
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for index, event in enumerate(events):
            if reply.stall_after is not None and index >= reply.stall_after:
                await self.stall()
                return resp
            if reply.truncate_after is not None and index >= reply.truncate_after:
                return resp  # closes without the finishing event
            if reply.error_after is not None and index >= reply.error_after:
                await resp.write(b"data: " + ujson.dumps(error).encode() + newline * 2)
                return resp
            if index and reply.chunk_delay and not await self.pause(reply.chunk_delay):
                return resp
            await resp.write(b"data: " + ujson.dumps(event).encode() + newline * 2)
        if done:
            await resp.write(done)
        await resp.write_eof()
        return resp

    async def stall(self) -> None:
        """Never answer again (until shutdown)."""
        assert self._closing is not None
        await self._closing.wait()

    # --- recording and control ---------------------------------------------------------

    async def record(self, request: web.Request) -> RecordedRequest:
        raw = await request.read()
        try:
            body: Any = await request.json() if raw else None
        except ValueError:
            body = raw.decode("utf-8", errors="replace")
        resource = request.match_info.route.resource
        entry = RecordedRequest(method=request.method, path=request.path,
                                query=dict(request.query), headers=dict(request.headers), body=body,
                                route=resource.canonical if resource is not None else "")
        self.requests.append(entry)
        return entry

    async def _control_script(self, request: web.Request) -> web.Response:
        raw = await request.json()
        try:
            replies = [Reply.from_dict(r) for r in raw.get("replies", [])]
            match = Match.from_dict(raw.get("match", {}))
        except (TypeError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if "delay" in raw:
            self.delay = float(raw["delay"])
        self.script(*replies, model=match.model, user=match.user, system=match.system,
                    history=match.history)
        return web.json_response({"queued": len(self.replies) + sum(len(q) for _, q in self.rules)})

    async def _control_models(self, request: web.Request) -> web.Response:
        raw = await request.json()
        try:
            self.set_models(raw["models"])
        except (KeyError, TypeError, ValueError) as exc:
            return web.json_response({"error": f"models: {exc!r}"}, status=400)
        return web.json_response({"models": len(self.models)})

    async def _control_requests(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": [r.to_dict() for r in self.requests]})

    async def _control_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})
