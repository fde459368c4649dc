"""``agentos fake-gemini``: a local fake of the Gemini API (or an OpenAI-compatible server)."""
from __future__ import annotations

import argparse
import asyncio


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("fake-gemini", help="serve a fake Gemini API on 127.0.0.1 for offline tests",
                       description="Serve a fake Gemini API on 127.0.0.1. Point the kernel at it with "
                       "AGENTOS_GEMINI_BASE_URL=http://127.0.0.1:PORT and GEMINI_API_KEY=<key>. "
                       "Script replies and faults with POST /_fake/script, read requests with "
                       "GET /_fake/requests (see docs/llm.md).")
    p.add_argument("--port", type=int, default=8089, help="TCP port on 127.0.0.1 (0 picks one)")
    p.add_argument("--api-key", default="fake-key", help="the only key accepted (default fake-key)")
    p.add_argument("--delay", type=float, default=0.0,
                   help="seconds every unscripted answer takes (to simulate a slow model)")
    p.add_argument("--openai", action="store_true",
                   help="speak OpenAI-compatible Chat Completions (/v1/chat/completions) instead")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        pass
    return 0


async def _serve(args: argparse.Namespace) -> None:
    from ...testing import FakeGemini, FakeOpenAI

    if args.openai:
        server: FakeGemini | FakeOpenAI = FakeOpenAI(api_key=args.api_key, port=args.port)
        hint = "AGENTOS_LLM_PROVIDER=openai AGENTOS_OPENAI_BASE_URL={url}/v1 OPENAI_API_KEY={key}"
    else:
        server = FakeGemini(api_key=args.api_key, port=args.port)
        hint = "AGENTOS_GEMINI_BASE_URL={url} GEMINI_API_KEY={key}"
    server.delay = args.delay
    async with server:
        kind = "OpenAI-compatible" if args.openai else "Gemini"
        print(f"fake {kind} API listening on {server.url}\n"
              f"  export {hint.format(url=server.url, key=args.api_key)}", flush=True)
        await asyncio.Event().wait()
