"""The llm service in-process: cancel on agent death, model override policy, agent identity."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from agentos.errors import PermissionDenied
from agentos.kernel.config import KernelConfig
from agentos.kernel.events import EventBus
from agentos.kernel.identity import Identity
from agentos.kernel.syscalls import Call
from agentos.llm.service import LLMService
from agentos.protocol import Op
from agentos.protocol.requests import LLMWire
from agentos.testing import FakeGemini, Reply


def _think(kernel, agent_id: str | None, body: dict, uid: int = 1000) -> Call:
    conn = SimpleNamespace(context=Identity(pid=4242, uid=uid, gid=uid, agent_id=agent_id))
    return Call(kernel, conn, int(Op.THINK), 1, json.dumps(body).encode())


async def _service(tmp_path: Path, fake: FakeGemini, monkeypatch, section: dict) -> tuple:
    monkeypatch.setenv("AGENTOS_GEMINI_BASE_URL", fake.url)
    monkeypatch.setenv("GEMINI_API_KEY", fake.api_key)
    monkeypatch.setenv("AGENTOS_GEMINI_MODEL", "gemini-test")
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.delenv("AGENTOS_LLM_CONFIG", raising=False)
    kernel = SimpleNamespace(config=KernelConfig(state_dir=tmp_path, sections={"llm": section}),
                             events=EventBus(), check_reply=lambda call, payload: None)
    service = LLMService(kernel)  # type: ignore[arg-type]  # a stand-in with what the service uses
    await service.start()
    # The start-up endpoint check (a models list) is the kernel's own request, not the test's.
    while service.endpoint.status.checked_at is None:
        await asyncio.sleep(0.01)
    fake.requests.clear()
    return kernel, service


def test_agent_killed_cancels_its_queued_and_running_calls(tmp_path, monkeypatch) -> None:
    async def main():
        async with FakeGemini() as fake:
            kernel, service = await _service(tmp_path, fake, monkeypatch, {"max_inflight": 1})
            try:
                fake.script(Reply(text="late", delay=60), Reply(text="never"))
                running = asyncio.ensure_future(service.think(_think(kernel, "a1", {"prompt": "1"})))
                queued = asyncio.ensure_future(service.think(_think(kernel, "a1", {"prompt": "2"})))
                other = asyncio.ensure_future(service.think(_think(kernel, "b2", {"prompt": "3"})))
                # Kill only once the first call is really at the model (it took the slow reply).
                while not fake.requests or service.scheduler.queued() < 2:
                    await asyncio.sleep(0.01)
                kernel.events.publish("agent.killed", {"id": "a1", "name": "worker"})
                answers = await asyncio.gather(running, queued)
                survivor = await other
                return answers, survivor, service.scheduler.in_flight, service.scheduler.queued()
            finally:
                await service.stop()

    answers, survivor, in_flight, queued = asyncio.run(main())
    assert [json.loads(a)["error"]["type"] for a in answers] == ["cancelled", "cancelled"]
    survivor = json.loads(survivor)
    assert survivor["success"] and survivor["content"] == "never"
    assert (in_flight, queued) == (0, 0)


def test_model_override_needs_the_agents_permission(tmp_path, monkeypatch) -> None:
    section = {"agents": {"researcher": {"models": ["gemini-pro-test"], "priority": 2}}}

    async def main():
        async with FakeGemini() as fake:
            kernel, service = await _service(tmp_path, fake, monkeypatch, section)
            try:
                body = {"prompt": "x", "model": "gemini-pro-test"}
                with pytest.raises(PermissionDenied, match="model override"):
                    await service.think(_think(kernel, "a1", body))
                service.callers.agent_started("a1", "researcher", None, None)
                answer = json.loads(await service.think(_think(kernel, "a1", body)))
                return answer, [r.path for r in fake.requests]
            finally:
                await service.stop()

    answer, paths = asyncio.run(main())
    assert answer["success"] and answer["model"] == "gemini-pro-test"
    assert paths == ["/v1beta/models/gemini-pro-test:generateContent"]


def test_agents_and_outside_clients_have_separate_contexts(tmp_path, monkeypatch) -> None:
    async def main():
        async with FakeGemini() as fake:
            kernel, service = await _service(tmp_path, fake, monkeypatch, {})
            try:
                conn = SimpleNamespace(context=Identity(pid=1, uid=1000, gid=1000, agent_id="a1"))
                create = Call(kernel, conn, int(Op.CONTEXT), 1, b'{"op": "create", "id": "mine"}')
                await service.context(create)
                outsider = _think(kernel, None, {"prompt": "x", "context": "mine"})
                from agentos.errors import NotFound
                with pytest.raises(NotFound):
                    await service.think(outsider)
                # A restarted agent has a new id but the same name: it finds its context again.
                service.callers.agent_started("a1", "scribe", None, None)
                await service.context(Call(kernel, conn, int(Op.CONTEXT), 2,
                                           b'{"op": "create", "id": "named"}'))
                again = SimpleNamespace(context=Identity(pid=2, uid=1000, gid=1000, agent_id="a2"))
                service.callers.agent_started("a2", "scribe", None, None)
                found = await service.context(Call(kernel, again, int(Op.CONTEXT), 3,
                                                   b'{"op": "get", "id": "named"}'))
                return ((tmp_path / "llm" / "contexts" / "agent%3Aa1" / "mine.json").exists()
                        and found["id"] == "named"
                        and (tmp_path / "llm" / "contexts" / "name%3Ascribe" / "named.json").exists())
            finally:
                await service.stop()

    assert asyncio.run(main())


def test_the_agents_manifest_llm_section_sets_defaults_and_budgets(tmp_path, monkeypatch) -> None:
    async def main():
        async with FakeGemini() as fake:
            kernel, service = await _service(tmp_path, fake, monkeypatch, {})
            try:
                service.callers.agent_started("a1", "writer", None, None, LLMWire(
                    model="gemini-writer", system="Write poems.", temperature=0.9, tokens=40))
                first = json.loads(await service.think(_think(kernel, "a1", {"prompt": "a poem please"})))
                second = json.loads(await service.think(_think(kernel, "a1", {"prompt": "another"})))
                own = json.loads(await service.think(_think(kernel, "b2", {"prompt": "x"})))
                return first, second, own, fake.requests
            finally:
                await service.stop()

    first, second, own, requests = asyncio.run(main())
    assert first["success"] and first["model"] == "gemini-writer"
    assert requests[0].path == "/v1beta/models/gemini-writer:generateContent"
    assert requests[0].body["systemInstruction"] == {"parts": [{"text": "Write poems."}]}
    # The budget leaves the call less than the model's own output limit, so it is sent as one.
    assert requests[0].body["generationConfig"] == {"temperature": 0.9, "maxOutputTokens": 21}
    assert second["error"]["type"] == "budget_exhausted", "the manifest's token budget applies"
    assert own["success"] and requests[1].path == "/v1beta/models/gemini-test:generateContent"
