"""The fake Gemini for the THINK benchmarks, in its own process, with a per-model 429 storm.

usage: python fake_models.py API_KEY
Prints "listening on URL", serves until SIGTERM, then exits 0. Besides
``agentos.testing.FakeGemini``'s control API (``/_fake/script`` for the delay of every
answer), ``POST /_fake/storm {"models": [...], "retry_delay": SEC}`` makes those models
answer every call 429 with ``RetryInfo`` (an empty list ends the storm), and
``GET /_fake/count`` returns ``{"requests": N, "storm_hits": M}``: model calls answered
and storm answers sent so far. The benchmarks reset the fake (``/_fake/reset``) between
tests, so the requests it records do not pile up over tens of thousands of calls.
"""
from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

from aiohttp import web

from agentos.testing import FakeGemini
from agentos.testing.fake_gemini import error_response


class StormyGemini(FakeGemini):
    """FakeGemini whose storm models answer only 429s, the others as usual.

    The storm and the count are a middleware, so they rely on nothing of FakeGemini
    but its ``routes`` hook.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.storm_models: frozenset[str] = frozenset()
        self.storm_delay = 1.0
        self.storm_hits = 0
        self.count = 0

    def routes(self, app: web.Application) -> None:
        app.middlewares.append(self._storm)
        app.router.add_post("/_fake/storm", self._control_storm)
        app.router.add_get("/_fake/count", self._control_count)
        super().routes(app)

    @web.middleware
    async def _storm(self, request: web.Request, handler: Any) -> web.StreamResponse:
        _, found, model_action = request.path.partition("/models/")
        if not found:
            return await handler(request)
        if model_action.partition(":")[0] in self.storm_models:
            self.storm_hits += 1
            return error_response(429, retry_delay=self.storm_delay)
        self.count += 1
        return await handler(request)

    async def _control_storm(self, request: web.Request) -> web.Response:
        raw = await request.json()
        self.storm_models = frozenset(raw.get("models", ()))
        self.storm_delay = float(raw.get("retry_delay", self.storm_delay))
        return await self._control_count(request)

    async def _control_count(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": self.count, "storm_hits": self.storm_hits})


async def serve(api_key: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with StormyGemini(api_key=api_key) as server:
        print(f"listening on {server.url}", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
