"""THINK end to end: a real kernel subprocess, the SDK, and a fake Gemini over HTTP."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from agentos import AsyncClient
from agentos.client.think import ThinkError
from agentos.client.tools import Toolbox
from agentos.errors import InvalidArgument, NotFound
from agentos.protocol import Op
from agentos.testing import Reply, call_reply, count_tokens, error_reply, text_reply


def test_seed_plain_text_prompt(llm_kernel) -> None:
    llm_kernel.fake.script(text_reply("Hi from the fake"))
    with llm_kernel.client() as c:
        answer = c._call(Op.THINK, b"Hello kernel")
    assert answer == {"content": "Hi from the fake", "error": None,
                      "tokens": count_tokens("Hello kernel") + count_tokens("Hi from the fake")}
    (sent,) = llm_kernel.fake.requests
    assert sent.body["contents"] == [{"role": "user", "parts": [{"text": "Hello kernel"}]}]
    assert "LLM: provider gemini, model gemini-test" in llm_kernel.log()


@pytest.mark.llm_env(GEMINI_API_KEY="", GOOGLE_API_KEY="")
def test_no_key_is_a_clear_error_and_logged_at_start(llm_kernel) -> None:
    with llm_kernel.client() as c:
        plain = c._call(Op.THINK, b"Hello")
        reply = c.think("Hello")
        hello = c.hello()
    assert plain["content"] is None and "GEMINI_API_KEY" in plain["error"]
    assert not reply.success and reply.error["type"] == "not_configured"
    assert "GEMINI_API_KEY" in reply.error["message"]
    with pytest.raises(ThinkError, match="GEMINI_API_KEY"):
        reply.raise_for_error()
    assert llm_kernel.fake.requests == []
    assert "NO API KEY" in llm_kernel.log() and "GEMINI_API_KEY" in llm_kernel.log()
    assert hello["capabilities"]["llm"]["configured"] is False


def test_json_form_options_reach_gemini_and_the_answer_is_complete(llm_kernel) -> None:
    llm_kernel.fake.script(text_reply('{"answer": 42}'))
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}}
    with llm_kernel.client() as c:
        reply = c.think("Meaning of life?", system="Reply in JSON.", temperature=0.3, top_p=0.8,
                        top_k=20, max_output_tokens=100, stop=["END"], thinking_level="low",
                        response_schema=schema, images=[b"\x89PNG\r\n\x1a\nfake"])
    assert reply.success and reply.content == '{"answer": 42}' and reply.error is None
    assert reply.finish_reason == "stop" and reply.model == "gemini-test"
    assert reply.tokens["total"] == reply.tokens["prompt"] + reply.tokens["output"]
    body = llm_kernel.fake.requests[0].body
    assert body["systemInstruction"] == {"parts": [{"text": "Reply in JSON."}]}
    assert body["generationConfig"] == {
        "temperature": 0.3, "topP": 0.8, "topK": 20, "maxOutputTokens": 100, "stopSequences": ["END"],
        "responseMimeType": "application/json", "responseJsonSchema": schema,
        "thinkingConfig": {"thinkingLevel": "LOW"}}
    parts = body["contents"][0]["parts"]
    assert parts[0] == {"text": "Meaning of life?"}
    assert parts[1]["inlineData"]["mimeType"] == "image/png"
    assert "x-goog-api-key" in llm_kernel.fake.requests[0].headers


def test_bad_requests_are_invalid_argument(llm_kernel) -> None:
    with llm_kernel.client() as c:
        with pytest.raises(InvalidArgument, match="unknown fields"):
            c._call(Op.THINK, {"prompt": "x", "temprature": 1})
        with pytest.raises(InvalidArgument, match="temperature"):
            c.think("x", temperature=7)
        with pytest.raises(InvalidArgument, match="not both"):
            c.think("x", thinking_budget=0, thinking_level="low")
        with pytest.raises(InvalidArgument, match="THINK needs a prompt"):
            c._call(Op.THINK, b"   ")
        assert c.think("still fine").success


def test_stream_chunks_then_a_final_frame_with_usage(llm_kernel) -> None:
    text = "Streaming is a series of small deltas."
    llm_kernel.fake.script(text_reply(text, chunks=4))
    with llm_kernel.client() as c:
        stream = c.think_stream("Tell me about streams")
        pieces = list(stream)
    assert len(pieces) == 4 and "".join(pieces) == text
    assert stream.reply is not None and stream.reply.success and stream.reply.content == text
    assert stream.reply.finish_reason == "stop"
    assert stream.reply.tokens["output"] == count_tokens(text)
    assert llm_kernel.fake.requests[0].query == {"alt": "sse"}


def test_async_client_stream(llm_kernel) -> None:
    import asyncio

    llm_kernel.fake.script(text_reply("one two three", chunks=3))

    async def main():
        async with await AsyncClient.connect(llm_kernel.process.socket_path) as c:
            stream = c.think_stream("count")
            pieces = [p async for p in stream]
            usage = await c.usage()
            return pieces, stream.reply, usage

    pieces, reply, usage = asyncio.run(main())
    assert "".join(pieces) == "one two three" and reply.success
    mine = usage["agents"][usage["you"]]
    assert mine["calls"] == 1 and mine["tokens"]["total"] == reply.tokens["total"]


def get_weather(city: str, unit: str = "celsius") -> str:
    """Current weather for a city.

    Args:
        city: Name of the city.
        unit: celsius or fahrenheit.
    """
    return {"Paris": "sunny, 21", "Rome": "rain, 15"}[city] + " " + unit


def test_function_calling_round_trip_with_the_toolbox(llm_kernel) -> None:
    llm_kernel.fake.script(
        call_reply(("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"}),
                   thought_signature="c2lnLTE="),
        text_reply("Paris is sunny and Rome is rainy."))
    with llm_kernel.client() as c:
        reply = Toolbox(get_weather).run(c, "Weather in Paris and Rome?", max_steps=3)
    assert reply.success and reply.content == "Paris is sunny and Rome is rainy."
    first, second = (r.body for r in llm_kernel.fake.requests)
    declared = first["tools"][0]["functionDeclarations"][0]
    assert declared["name"] == "get_weather" and declared["description"] == "Current weather for a city."
    assert declared["parameters"]["properties"]["city"] == {"type": "STRING",
                                                            "description": "Name of the city."}
    assert declared["parameters"]["required"] == ["city"]
    model_turn, results = second["contents"][1], second["contents"][2]
    assert model_turn["parts"][0]["thoughtSignature"] == "c2lnLTE=", "model turn replayed verbatim"
    assert [p["functionResponse"]["response"] for p in results["parts"]] == [
        {"result": "sunny, 21 celsius"}, {"result": "rain, 15 celsius"}]
    ids = [p["functionCall"]["id"] for p in model_turn["parts"]]
    assert [p["functionResponse"]["id"] for p in results["parts"]] == ids


def test_function_calling_in_a_context_keeps_the_history_in_the_kernel(llm_kernel) -> None:
    llm_kernel.fake.script(call_reply(("get_weather", {"city": "Rome"}), thought_signature="c2ln"),
                           text_reply("Rainy."))
    with llm_kernel.client() as c:
        c.context("create", "weather")
        reply = Toolbox(get_weather).run(c, "Rome?", context="weather")
        history = c.context("get", "weather")["contents"]
    assert reply.content == "Rainy."
    assert [t["role"] for t in history] == ["user", "model", "user", "model"]
    assert history[1]["parts"][0]["thoughtSignature"] == "c2ln"
    assert "functionResponse" in history[2]["parts"][0]


def test_step_limit_stops_a_model_that_keeps_calling(llm_kernel) -> None:
    from agentos.client.tools import StepLimitExceeded

    llm_kernel.fake.script(*[call_reply(("get_weather", {"city": "Paris"}))] * 3)
    with llm_kernel.client() as c, pytest.raises(StepLimitExceeded):
        Toolbox(get_weather).run(c, "loop forever", max_steps=2)
    assert len(llm_kernel.fake.requests) == 3


def test_contexts_survive_a_kernel_restart(llm_kernel) -> None:
    llm_kernel.fake.script(text_reply("Nice to meet you, Ada."), text_reply("You are Ada."))
    with llm_kernel.client() as c:
        created = c.context("create", "intro", system="You are a concise assistant.")
        assert created["id"] == "intro" and created["turns"] == 0
        assert c.think("My name is Ada.", context="intro").success
    llm_kernel.restart()
    with llm_kernel.client() as c:
        listed = c.context("list")["contexts"]
        assert [(x["id"], x["turns"]) for x in listed] == [("intro", 2)]
        reply = c.think("What is my name?", context="intro")
        assert reply.content == "You are Ada." and reply.context == "intro"
        fork = c.context("fork", "intro", new_id="intro-2")
        cleared = c.context("clear", "intro")
        c.context("delete", "intro-2")
        with pytest.raises(NotFound):
            c.context("get", "intro-2")
        with pytest.raises(NotFound):
            c.think("x", context="missing")
    second = llm_kernel.fake.requests[1].body
    assert second["systemInstruction"] == {"parts": [{"text": "You are a concise assistant."}]}
    assert [t["parts"][0]["text"] for t in second["contents"]] == [
        "My name is Ada.", "Nice to meet you, Ada.", "What is my name?"]
    assert fork["turns"] == 4 and cleared["turns"] == 0


def test_provider_errors_are_structured_answers(llm_kernel) -> None:
    fake = llm_kernel.fake
    fake.script(*[error_reply(429, retry_delay=0.02)] * 5)
    with llm_kernel.client() as c:
        limited = c.think("x")
        fake.reset()
        fake.script(Reply(block_reason="SAFETY"))
        blocked = c.think("x")
        fake.script(error_reply(404, "models/gemini-test is not found for API version v1beta"))
        missing = c.think("x")
        fake.script(error_reply(500), text_reply("recovered"))
        recovered = c.think("x")
        usage = c.usage()
    assert limited.error["type"] == "rate_limited" and limited.error["retry_after"] == 0.02
    # A blocked prompt is an answer the agent can act on, not a failure.
    assert blocked.success and blocked.finish_reason == "safety" and blocked.content == ""
    assert blocked.safety is not None and blocked.safety["source"] == "prompt"
    assert missing.error["type"] == "invalid_request" and missing.error["status"] == 404
    assert recovered.content == "recovered"
    mine = usage["agents"][usage["you"]]
    assert mine["calls"] == 4 and mine["errors"] == 2


@pytest.mark.llm_env(AGENTOS_LLM_CONFIG=json.dumps({"defaults": {"tokens": 50}}))
def test_budgets_are_enforced_by_the_kernel(llm_kernel) -> None:
    with llm_kernel.client() as c:
        # Reserves its prompt (estimated high) and the rest as its output limit; spends 15 + 17
        # (the fake echoes).
        first = c.think("a" * 60)
        second = c.think("b" * 60)  # its prompt alone no longer fits what is left
        third = c.think("c")  # its prompt fits, but not with the minimum of output
        report = c.usage()
    assert first.success and first.tokens["total"] == 32
    assert 0 < llm_kernel.fake.requests[0].body["generationConfig"]["maxOutputTokens"] < 50 - 15
    for refused in (second, third):
        assert refused.error["type"] == "budget_exhausted" and refused.error["reason"] == "tokens"
    assert len(llm_kernel.fake.requests) == 1
    mine = report["agents"][report["you"]]
    assert mine["tokens"]["total"] == 32
    assert mine["budget"]["tokens"] == 50 and mine["budget"]["tokens_left"] == 18


@pytest.mark.llm_env(AGENTOS_LLM_CONFIG=json.dumps({"defaults": {"calls_per_minute": 2}}))
def test_calls_per_minute_budget(llm_kernel) -> None:
    with llm_kernel.client() as c:
        replies = [c.think(str(i)) for i in range(3)]
    assert [r.success for r in replies] == [True, True, False]
    assert replies[2].error["reason"] == "calls_per_minute" and replies[2].error["retry_after"] > 50


@pytest.mark.llm_env(AGENTOS_LLM_CONFIG=json.dumps({"max_inflight": 1}))
def test_a_greedy_client_cannot_starve_another(llm_kernel) -> None:
    llm_kernel.fake.delay = 0.05
    greedy = subprocess.Popen([sys.executable, "-m", "agentos.testing.think_flood",
                               str(llm_kernel.process.socket_path), "30", "greedy"],
                              stdout=subprocess.PIPE, text=True)
    assert greedy.stdout is not None
    try:
        assert greedy.stdout.readline().strip() == "sent"
        with llm_kernel.client() as c:
            while c.usage()["queued"] < 20:  # the backlog is queued in the kernel
                time.sleep(0.01)
            reply = c.think("polite")
        assert reply.success
    finally:
        assert greedy.wait(timeout=60) == 0
        greedy.stdout.close()
    prompts = [r.body["contents"][0]["parts"][0]["text"] for r in llm_kernel.fake.requests]
    polite = prompts.index("polite")
    # Queued behind >= 20 greedy calls, FIFO would serve it 31st; round robin serves it
    # right after the greedy call in flight (12th at worst; the margin absorbs a slow test host).
    assert polite <= 15, prompts


AGENT = """
from agentos import Client
c = Client()
c.ready()
c.think("never answered")
"""


def test_killing_an_agent_cancels_its_calls_in_flight(llm_kernel, tmp_path) -> None:
    script = tmp_path / "thinker.py"
    script.write_text(AGENT)
    llm_kernel.fake.script(Reply(text="late", delay=120))
    with llm_kernel.client() as c:
        agent = c.spawn("thinker", script, sandboxed=False, allow_degraded=True)
        deadline = time.monotonic() + 60
        while f"agent:{agent['id']}" not in c.usage()["agents"] or c.usage()["in_flight"] == 0:
            assert time.monotonic() < deadline, llm_kernel.log()
            time.sleep(0.02)
        c.kill("thinker", grace=0.2)
        while c.usage()["in_flight"]:
            assert time.monotonic() < deadline, "the killed agent's THINK is still in flight"
            time.sleep(0.02)
        assert c.usage()["agents"][f"agent:{agent['id']}"]["in_flight"] == 0


def test_the_api_key_never_reaches_clients_or_logs(llm_kernel) -> None:
    key = llm_kernel.fake.api_key
    llm_kernel.fake.script(error_reply(403, "Permission denied"), text_reply("fine"))
    with llm_kernel.client() as c:
        seen = [c.hello(), c.usage(), c.think("x").error, c.think("y").content,
                c._call(Op.THINK, b"plain")]
    assert key not in json.dumps(seen)
    assert key not in llm_kernel.log()


def test_openai_compatible_provider_selected_by_configuration(tmp_path) -> None:
    from agentos.testing import FakeOpenAI
    from agentos.testing.kernel import KernelProcess, start_against

    with FakeOpenAI().running_in_thread() as fake:
        fake.script(text_reply("local model says hi", chunks=2))
        env = {"AGENTOS_LLM_PROVIDER": "openai", "AGENTOS_OPENAI_BASE_URL": fake.base_url,
               "AGENTOS_OPENAI_MODEL": "llama-test", "GEMINI_API_KEY": "", "GOOGLE_API_KEY": ""}
        kernel = KernelProcess(tmp_path / "k", env=env)
        endpoint = start_against(kernel, fake)
        try:
            with kernel.client() as c:
                stream = c.think_stream("hello", system="Be brief.")
                pieces = list(stream)
                hello = c.hello()
        finally:
            assert kernel.stop() == 0
        log = kernel.log()
    assert stream.reply is not None
    assert "".join(pieces) == "local model says hi" and stream.reply.success
    assert stream.reply.model == "llama-test"
    assert hello["capabilities"]["llm"]["provider"] == "openai"
    assert endpoint["reachable"] and endpoint["error"] is None
    assert fake.requests[0].body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert "LLM: provider openai, model llama-test" in log and "Traceback" not in log


def test_async_toolbox_awaits_coroutine_tools(llm_kernel) -> None:
    import asyncio

    async def lookup(word: str) -> str:
        """Dictionary lookup.

        :param word: the word to define
        """
        await asyncio.sleep(0)
        return f"{word}: a small thing"

    llm_kernel.fake.script(call_reply(("lookup", {"word": "mote"})), text_reply("A mote is small."))

    async def main():
        async with await AsyncClient.connect(llm_kernel.process.socket_path) as c:
            return await Toolbox(lookup).arun(c, "What is a mote?")

    reply = asyncio.run(main())
    assert reply.content == "A mote is small."
    sent = llm_kernel.fake.requests[1].body["contents"][2]["parts"][0]["functionResponse"]
    assert sent["response"] == {"result": "mote: a small thing"}
    declared = llm_kernel.fake.requests[0].body["tools"][0]["functionDeclarations"][0]
    assert declared["parameters"]["properties"]["word"]["description"] == "the word to define"
