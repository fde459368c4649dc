"""Scripting the fakes per caller: replies matched on the request (model, last user text,
system instruction, the context's replayed history, any callable), the shared queue as the
fallback; over real HTTP, then through a real kernel with two agents at once."""
from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agentos.testing import FakeGemini, FakeOpenAI, FakeServer, Prompt, call_reply, text_reply
from agentos.testing.kernel import KernelProcess, start_against

Ask = Callable[..., Awaitable[dict[str, Any]]]


async def ask_gemini(session: aiohttp.ClientSession, fake: FakeServer, user: str, *, model: str = "gemini-test",
                     system: str | None = None, history: tuple[str, ...] = (),
                     headers: dict[str, str] | None = None) -> dict[str, Any]:
    """generateContent; the answer as ``{"text", "calls"}``."""
    turns = [{"role": "user" if n % 2 == 0 else "model", "parts": [{"text": t}]} for n, t in enumerate(history)]
    body: dict[str, Any] = {"contents": [*turns, {"role": "user", "parts": [{"text": user}]}]}
    if system is not None:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    async with session.post(f"{fake.url}/v1beta/models/{model}:generateContent", json=body,
                            headers={"x-goog-api-key": "fake-key", **(headers or {})}) as resp:
        answer = await resp.json()
    parts = answer["candidates"][0]["content"]["parts"]
    return {"text": "".join(p.get("text", "") for p in parts),
            "calls": [{"name": p["functionCall"]["name"], "args": p["functionCall"]["args"]}
                      for p in parts if "functionCall" in p]}


async def ask_openai(session: aiohttp.ClientSession, fake: FakeServer, user: str, *, model: str = "gpt-test",
                     system: str | None = None, history: tuple[str, ...] = (),
                     headers: dict[str, str] | None = None) -> dict[str, Any]:
    """chat/completions; the answer as ``{"text", "calls"}``."""
    messages = [{"role": "system", "content": system}] if system is not None else []
    messages += [{"role": "user" if n % 2 == 0 else "assistant", "content": t} for n, t in enumerate(history)]
    messages.append({"role": "user", "content": user})
    async with session.post(f"{fake.url}/v1/chat/completions", json={"model": model, "messages": messages},
                            headers={"Authorization": "Bearer fake-key", **(headers or {})}) as resp:
        answer = await resp.json()
    message = answer["choices"][0]["message"]
    return {"text": message.get("content") or "",
            "calls": [{"name": c["function"]["name"], "args": json.loads(c["function"]["arguments"])}
                      for c in message.get("tool_calls") or []]}


FAKES: dict[str, tuple[Callable[[], FakeServer], Ask]] = {
    "gemini": (FakeGemini, ask_gemini), "openai": (lambda: FakeOpenAI(api_key="fake-key"), ask_openai)}


def scripted(kind: str, scenario: Callable[[FakeServer, Ask], Awaitable[Any]]) -> Any:
    make, ask = FAKES[kind]

    async def main() -> Any:
        async with make() as fake, aiohttp.ClientSession() as session:
            async def bound(user: str, **kwargs: Any) -> dict[str, Any]:
                return await ask(session, fake, user, **kwargs)
            return await scenario(fake, bound)

    return asyncio.run(main())


both = pytest.mark.parametrize("kind", sorted(FAKES))


@both
def test_match_by_model(kind: str) -> None:
    async def scenario(fake: FakeServer, ask: Ask) -> list[str]:
        fake.script(text_reply("from the big model"), model="big-model")
        return [(await ask("hi", model="small-model"))["text"], (await ask("hi", model="big-model"))["text"],
                (await ask("hi", model="big-model"))["text"]]

    assert scripted(kind, scenario) == ["echo: hi", "from the big model", "echo: hi"]


@both
def test_match_by_substring_of_the_last_user_text(kind: str) -> None:
    async def scenario(fake: FakeServer, ask: Ask) -> list[str]:
        fake.script(text_reply("weather answer"), user="weather")
        return [(await ask("what is the time"))["text"],
                # Only the last user turn counts: "weather" in history does not match.
                (await ask("and now?", history=("weather today?", "sunny")))["text"],
                (await ask("the weather in Oslo"))["text"]]

    assert scripted(kind, scenario) == ["echo: what is the time", "echo: and now?", "weather answer"]


@both
def test_match_by_system_instruction(kind: str) -> None:
    async def scenario(fake: FakeServer, ask: Ask) -> list[str]:
        fake.script(text_reply("planner 1"), text_reply("planner 2"), system="You are the planner")
        fake.script(text_reply("critic 1"), system="You are the critic")
        return [(await ask("go", system="You are the critic."))["text"],
                (await ask("go", system="You are the planner."))["text"],
                (await ask("go"))["text"],
                (await ask("go", system="You are the planner."))["text"],
                (await ask("go", system="You are the critic."))["text"]]

    assert scripted(kind, scenario) == ["critic 1", "planner 1", "echo: go", "planner 2", "echo: go"]


@both
def test_match_by_context_history(kind: str) -> None:
    async def scenario(fake: FakeServer, ask: Ask) -> list[str]:
        fake.script(text_reply("apples again"), history="topic: apples")
        fake.script(text_reply("pears again"), history="topic: pears")
        return [(await ask("more", history=("topic: pears", "ok")))["text"],
                (await ask("more", history=("topic: apples", "ok")))["text"]]

    assert scripted(kind, scenario) == ["pears again", "apples again"]


@both
def test_match_by_callable_on_the_request(kind: str) -> None:
    seen: list[Prompt] = []

    def tagged(prompt: Prompt) -> bool:
        seen.append(prompt)
        return prompt.headers.get("X-Test-Agent") == "b" and len(prompt.turns) == 3

    async def scenario(fake: FakeServer, ask: Ask) -> list[str]:
        fake.script(text_reply("b's third turn"), when=tagged)
        return [(await ask("q", headers={"X-Test-Agent": "b"}))["text"],
                (await ask("q", history=("one", "two"), headers={"X-Test-Agent": "a"}))["text"],
                (await ask("q", history=("one", "two"), headers={"X-Test-Agent": "b"}))["text"]]

    assert scripted(kind, scenario) == ["echo: q", "echo: q", "b's third turn"]
    last = seen[-1]
    assert [role for role, _ in last.turns] == ["user", "model", "user"]
    assert (last.user, last.history) == ("q", "one\ntwo\nq")


@both
def test_every_condition_must_hold_and_queues_are_tried_in_order(kind: str) -> None:
    async def scenario(fake: FakeServer, ask: Ask) -> list[str]:
        fake.script(text_reply("narrow"), user="report", system="auditor")
        fake.script(text_reply("wide 1"), text_reply("wide 2"), user="report")
        fake.script(text_reply("shared"))
        return [(await ask("report please", system="the auditor"))["text"],
                (await ask("report please", system="the auditor"))["text"],
                (await ask("something else"))["text"],
                (await ask("report please"))["text"],
                (await ask("report please"))["text"]]

    assert scripted(kind, scenario) == ["narrow", "wide 1", "shared", "wide 2", "echo: report please"]


@both
def test_matched_function_calls(kind: str) -> None:
    async def scenario(fake: FakeServer, ask: Ask) -> dict[str, Any]:
        fake.script(call_reply(("run_code", {"source": "print(1)"}), ("search", {"q": "x", "n": 2})),
                    user="please run")
        return await ask("please run it")

    answer = scripted(kind, scenario)
    assert answer["calls"] == [{"name": "run_code", "args": {"source": "print(1)"}},
                               {"name": "search", "args": {"q": "x", "n": 2}}]


@both
def test_reset_forgets_matchers(kind: str) -> None:
    async def scenario(fake: FakeServer, ask: Ask) -> str:
        fake.script(text_reply("never"), user="hi")
        fake.reset()
        return (await ask("hi"))["text"]

    assert scripted(kind, scenario) == "echo: hi"


@both
def test_control_endpoint_scripts_with_a_match(kind: str) -> None:
    async def scenario(fake: FakeServer, ask: Ask) -> tuple[Any, ...]:
        async with aiohttp.ClientSession() as session:
            async def control(payload: dict[str, Any]) -> tuple[int, Any]:
                async with session.post(f"{fake.url}/_fake/script", json=payload) as resp:
                    return resp.status, await resp.json()
            ok = await control({"replies": [{"text": "matched"}], "match": {"system": "agent-7"}})
            unknown = await control({"replies": [{"text": "x"}], "match": {"agent": "7"}})
            not_text = await control({"replies": [{"text": "x"}], "match": {"user": 7}})
        return (ok, unknown[0], not_text[0], (await ask("hi"))["text"],
                (await ask("hi", system="I am agent-7"))["text"])

    ok, unknown, not_text, plain, matched = scripted(kind, scenario)
    assert ok == (200, {"queued": 1})
    assert (unknown, not_text) == (400, 400)
    assert (plain, matched) == ("echo: hi", "matched")


AGENT = textwrap.dedent("""
    import json
    import sys

    import agentos

    with agentos.Client() as kernel:
        kernel.context("create", "work")
        for n in range(int(sys.argv[1])):
            reply = kernel.think(f"step {n}", context="work")
            print(json.dumps(reply.content if reply.success else reply.error), flush=True)
""")


def run_two_agents(client: Any, tmp_path: Path, fake: FakeServer, turns: int = 3) -> dict[str, list[Any]]:
    """Agents ``alpha`` and ``beta`` (distinct SPAWN ``llm.system``), each ``turns`` THINKs in its
    own context, at the same time; what each was answered, in order."""
    for name in ("alpha", "beta"):
        fake.script(*(text_reply(f"{name} answer {n}") for n in range(turns)), system=f"You are {name}.")
    script = tmp_path / "thinker.py"
    script.write_text(AGENT)
    for name in ("alpha", "beta"):
        client.spawn(name, str(script), args=[str(turns)], sandboxed=False, llm={"system": f"You are {name}."})
    answers = {}
    for name in ("alpha", "beta"):
        assert client.wait(name, timeout=120)["exit_code"] == 0, client.logs(name)
        answers[name] = [json.loads(line) for line in client.logs(name).splitlines() if line.strip()]
    return answers


def test_two_agents_in_one_kernel_each_get_their_own_answers_gemini(llm_kernel, tmp_path: Path) -> None:
    with llm_kernel.client() as client:
        answers = run_two_agents(client, tmp_path, llm_kernel.fake)
    assert answers == {name: [f"{name} answer {n}" for n in range(3)] for name in ("alpha", "beta")}
    # Each agent's later turns replayed its own context, never the other's.
    for request in llm_kernel.fake.requests:
        text = json.dumps(request.body)
        assert ("alpha answer" in text) <= ("You are alpha." in text)
        assert ("beta answer" in text) <= ("You are beta." in text)


def test_two_agents_in_one_kernel_each_get_their_own_answers_openai(tmp_path: Path) -> None:
    with FakeOpenAI().running_in_thread() as fake:
        env = {"AGENTOS_LLM_PROVIDER": "openai", "AGENTOS_OPENAI_BASE_URL": fake.base_url,
               "AGENTOS_OPENAI_MODEL": "llama-test", "GEMINI_API_KEY": "", "GOOGLE_API_KEY": ""}
        kernel = KernelProcess(tmp_path / "k", env=env)
        start_against(kernel, fake)
        try:
            with kernel.client() as client:
                answers = run_two_agents(client, tmp_path, fake)
        finally:
            kernel.stop_checked()
    assert answers == {name: [f"{name} answer {n}" for n in range(3)] for name in ("alpha", "beta")}


def test_one_client_two_contexts_scripted_by_history(llm_kernel) -> None:
    fake = llm_kernel.fake
    fake.script(text_reply("apples 1"), text_reply("apples 2"), history="topic: apples")
    fake.script(text_reply("pears 1"), text_reply("pears 2"), history="topic: pears")
    with llm_kernel.client() as client:
        for topic in ("apples", "pears"):
            client.context("create", topic)
        order = ["apples", "pears", "pears", "apples"]
        got = [client.think(f"topic: {topic}" if n < 2 else "go on", context=topic).content
               for n, topic in enumerate(order)]
    assert got == ["apples 1", "pears 1", "pears 2", "apples 2"]
