"""End to end: one client floods a model that answers 429 RetryInfo; another model stays served."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from agentos.testing import FakeGemini
from agentos.testing.fake_gemini import error_response
from agentos.testing.kernel import KernelProcess

LIMITED = "gemini-low-quota"
PAUSE = 4.0

FLOOD = f"""
import asyncio, json, sys
from agentos import AsyncClient

async def main():
    async with await AsyncClient.connect(sys.argv[1]) as c:
        replies = await asyncio.gather(*(c.think(f"flood {{i}}", model={LIMITED!r}) for i in range(8)))
    print(json.dumps([r.success for r in replies]), flush=True)

asyncio.run(main())
"""


class QuotaGemini(FakeGemini):
    """Answers ``LIMITED`` with 429 RetryInfo for ``PAUSE`` seconds after its first call, as a
    per-model quota does; every other model is served normally."""

    def __init__(self) -> None:
        super().__init__()
        self.resumes_at: float | None = None
        self.refused = 0

    async def _generate(self, request: web.Request, body: dict[str, Any], model: str,
                        action: str) -> web.StreamResponse:
        if model == LIMITED:
            now = time.monotonic()
            if self.resumes_at is None:
                self.resumes_at = now + PAUSE
            if now < self.resumes_at:
                self.refused += 1
                return error_response(429, retry_delay=round(self.resumes_at - now, 3))
        return await super()._generate(request, body, model, action)


def _prompt(request) -> str:
    return request.body["contents"][0]["parts"][0]["text"]


def test_a_rate_limited_model_never_delays_another_models_calls(tmp_path: Path) -> None:
    with QuotaGemini().running_in_thread() as fake:
        env = {"AGENTOS_GEMINI_BASE_URL": fake.url, "GEMINI_API_KEY": fake.api_key,
               "AGENTOS_GEMINI_MODEL": "gemini-test", "AGENTOS_LLM_BACKOFF_BASE": "0.01",
               "GOOGLE_API_KEY": "", "AGENTOS_LLM_CONFIG": json.dumps({"max_inflight": 2})}
        kernel = KernelProcess(tmp_path / "k", env=env).start()
        flood = subprocess.Popen([sys.executable, "-c", FLOOD, str(kernel.socket_path)],
                                 stdout=subprocess.PIPE, text=True)
        try:
            flooder = f"client:{os.getuid()}:{flood.pid}"
            with kernel.client() as c:
                deadline = time.monotonic() + 60
                while True:  # all eight admitted, refused once or held back, none holding a slot
                    usage = c.usage()
                    mine = usage["agents"].get(flooder, {})
                    if (mine.get("calls") == 8 and fake.refused and usage["in_flight"] == 0
                            and usage["queued"] == 0):
                        break
                    assert flood.poll() is None and time.monotonic() < deadline, \
                        f"the flood's calls never all waited without a slot: {usage}"
                    time.sleep(0.01)
                reply = c.think("healthy")
                during = c.usage()
            assert reply.success and reply.content == "echo: healthy", reply.error
            waiting = during["agents"][flooder]
            assert waiting["in_flight"] == 0 and waiting["queued"] == 0 and waiting["errors"] == 0
            out, _ = flood.communicate(timeout=60)
        finally:
            if flood.poll() is None:
                flood.kill()
                flood.wait()
            status = kernel.stop()
        log = kernel.log()
    assert status == 0 and "Traceback" not in log, log
    assert json.loads(out) == [True] * 8
    # The kernel's start-up endpoint check (a models list) is not a call.
    calls = [r for r in fake.requests if r.method == "POST"]
    prompts = [_prompt(r) for r in calls]
    healthy = prompts.index("healthy")
    refused, answered = prompts[:fake.refused], prompts[fake.refused:]
    # Only the calls already in flight when the first 429 came back reached the limited model
    # during its pause; the healthy call went before any of the flood's retries; each flood
    # call was answered exactly once, and none was sent before the time the server asked for.
    assert 1 <= fake.refused <= 2 and all(p.startswith("flood") for p in refused)
    assert healthy == fake.refused, prompts
    assert sorted(p for p in answered if p != "healthy") == [f"flood {i}" for i in range(8)]
    assert fake.resumes_at is not None
    assert all(r.at >= fake.resumes_at for r in calls[healthy + 1:])
