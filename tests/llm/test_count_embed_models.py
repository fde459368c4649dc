"""COUNT, EMBED and MODELS: the providers against the fakes over HTTP, and the syscalls through a
real kernel, the SDK and the CLI."""
from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agentos import AsyncClient, InvalidArgument
from agentos.cli.main import main as cli_main
from agentos.client.think import ThinkError
from agentos.kernel.config import KernelConfig
from agentos.kernel.events import EventBus
from agentos.kernel.identity import Identity
from agentos.kernel.syscalls import Call
from agentos.llm.budgets import estimate_input_tokens
from agentos.llm.errors import ErrorKind, LLMError
from agentos.llm.http import new_session
from agentos.llm.provider import Provider, make_provider
from agentos.llm.service import LLMService
from agentos.llm.types import EmbeddingRequest, GenerationOptions, ModelRequest
from agentos.protocol import Op
from agentos.testing import FakeGemini, FakeOpenAI, count_tokens

ADD = {"name": "add", "description": "Add two integers",
       "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


def _checking(llm: dict[str, Any]) -> bool:
    """Whether the kernel's start-up check of the endpoint (a models list) is still under way."""
    return "endpoint" in llm and llm["endpoint"]["checked_at"] is None


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(v * v for v in vector))


# --- Gemini provider -----------------------------------------------------------------------------

def test_gemini_count_sends_contents_alone_or_the_whole_request(gemini) -> None:
    async def scenario(fake: FakeGemini, provider: Provider):
        bare = await provider.count_tokens(ModelRequest(contents=[user("x" * 40)]))
        framed = await provider.count_tokens(ModelRequest(
            contents=[user("x" * 40)], system="y" * 40, functions=(ADD,), function_mode="AUTO",
            options=GenerationOptions(temperature=0.5), model="gemini-2.5-pro"))
        return bare, framed, fake.requests

    bare, framed, (first, second) = gemini(scenario)
    assert bare == count_tokens("x" * 40) == 10
    assert first.path == "/v1beta/models/gemini-test:countTokens"
    assert first.body == {"contents": [user("x" * 40)]}
    # System instruction and tools are counted only through generateContentRequest.
    assert second.path == "/v1beta/models/gemini-2.5-pro:countTokens"
    inner = second.body["generateContentRequest"]
    assert set(second.body) == {"generateContentRequest"}
    assert inner["model"] == "models/gemini-2.5-pro"
    assert inner["systemInstruction"] == {"parts": [{"text": "y" * 40}]}
    assert inner["tools"][0]["functionDeclarations"][0]["name"] == "add"
    assert inner["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    assert "generationConfig" not in inner, "output settings cost no input tokens"
    assert framed > count_tokens("x" * 80)


def test_gemini_embeds_one_text_with_embed_content_and_many_in_one_batch(gemini) -> None:
    async def scenario(fake: FakeGemini, provider: Provider):
        one = await provider.embed(EmbeddingRequest(texts=("hello",), model="gemini-embedding-001"))
        many = await provider.embed(EmbeddingRequest(
            texts=("hello", "world", "hello"), model="models/gemini-embedding-001",
            task_type="RETRIEVAL_DOCUMENT", dimensions=768))
        return one, many, fake.requests

    one, many, (single, batch) = gemini(scenario)
    assert single.path == "/v1beta/models/gemini-embedding-001:embedContent"
    assert single.body == {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "hello"}]}}
    assert batch.path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert [r["content"]["parts"][0]["text"] for r in batch.body["requests"]] == ["hello", "world", "hello"]
    assert all(r["model"] == "models/gemini-embedding-001" and r["taskType"] == "RETRIEVAL_DOCUMENT"
               and r["outputDimensionality"] == 768 for r in batch.body["requests"])
    assert len(one.vectors) == 1 and len(one.vectors[0]) == 3072
    assert abs(norm(one.vectors[0]) - 1) < 1e-6
    assert [len(v) for v in many.vectors] == [768, 768, 768]
    assert many.vectors[0] == many.vectors[2] != many.vectors[1], "one vector per text, in order"
    assert one.model == many.model == "gemini-embedding-001"
    assert one.tokens is None and many.tokens is None, "the Gemini API reports no embedding tokens"


def test_gemini_embedding_failures_are_typed_errors(gemini) -> None:
    async def scenario(fake: FakeGemini, provider: Provider):
        caught = []
        for request in (EmbeddingRequest(texts=("x",), model="gemini-test"),  # generates, cannot embed
                        EmbeddingRequest(texts=("x",), model="gemini-embedding-001", dimensions=5000)):
            with pytest.raises(LLMError) as error:
                await provider.embed(request)
            caught.append(error.value)
        return caught, len(fake.requests)

    (wrong_model, too_long), sent = gemini(scenario)
    assert wrong_model.kind is ErrorKind.INVALID_REQUEST and wrong_model.status == 404
    assert too_long.kind is ErrorKind.INVALID_REQUEST and too_long.status == 400
    assert sent == 2, "a 4xx is not retried"


def test_gemini_model_list_follows_every_page(gemini) -> None:
    names = [f"gemini-{i}" for i in range(1200)] + ["gemini-embedding-001"]

    async def scenario(fake: FakeGemini, provider: Provider):
        fake.set_models(names)
        return await provider.list_models(), fake.requests

    listed, requests = gemini(scenario)
    assert [m.name for m in listed] == names
    assert [r.query.get("pageSize") for r in requests] == ["1000", "1000"]
    assert "pageToken" not in requests[0].query and requests[1].query["pageToken"]
    first, embedder = listed[0], listed[-1]
    assert (first.input_token_limit, first.output_token_limit) == (1048576, 65536)
    assert "generateContent" in first.methods and "countTokens" in first.methods
    assert "embedContent" in embedder.methods and "generateContent" not in embedder.methods


def test_gemini_without_a_key_never_calls(gemini) -> None:
    async def scenario(fake: FakeGemini, provider: Provider):
        kinds = []
        for attempt in (provider.count_tokens(ModelRequest(contents=[user("x")])),
                        provider.embed(EmbeddingRequest(texts=("x",), model="gemini-embedding-001")),
                        provider.list_models()):
            with pytest.raises(LLMError) as error:
                await attempt
            kinds.append(error.value.kind)
        return kinds, fake.requests

    kinds, requests = gemini(scenario, api_key=None)
    assert kinds == [ErrorKind.NOT_CONFIGURED] * 3 and requests == []


# --- OpenAI-compatible provider ------------------------------------------------------------------

def _openai(config_for, scenario):
    async def main():
        async with FakeOpenAI(api_key="local-key") as fake:
            config = config_for(fake.base_url, provider="openai", model="llama-test",
                                api_key="local-key", embedding_model=None)
            async with new_session(config) as session:
                return await scenario(fake, make_provider(config, session))
    return asyncio.run(main())


def test_openai_cannot_count_tokens_and_says_so(config_for) -> None:
    async def scenario(fake, provider):
        with pytest.raises(LLMError) as error:
            await provider.count_tokens(ModelRequest(contents=[user("x")]))
        return error.value, fake.requests

    error, requests = _openai(config_for, scenario)
    assert error.kind is ErrorKind.UNSUPPORTED and error.reason == "count_tokens"
    assert requests == [] and not error.retryable


def test_openai_embeddings_and_model_list(config_for) -> None:
    async def scenario(fake, provider):
        vectors = await provider.embed(EmbeddingRequest(texts=("a", "b"), model="embed-test",
                                                        task_type="CLUSTERING", dimensions=64))
        return vectors, await provider.list_models(), fake.requests

    vectors, listed, (embedded, models) = _openai(config_for, scenario)
    assert embedded.path == "/v1/embeddings"
    assert embedded.headers["Authorization"] == "Bearer local-key"
    assert embedded.body == {"model": "embed-test", "input": ["a", "b"], "encoding_format": "float",
                             "dimensions": 64}, "task_type is Gemini's: not sent"
    assert [len(v) for v in vectors.vectors] == [64, 64] and vectors.vectors[0] != vectors.vectors[1]
    assert vectors.tokens is not None and vectors.tokens > 0
    assert (models.method, models.path) == ("GET", "/v1/models")
    assert listed and all(m.display_name == m.name and m.input_token_limit is None for m in listed)


# --- through the kernel --------------------------------------------------------------------------

def test_count_is_what_think_is_billed_for_its_input(llm_kernel) -> None:
    with llm_kernel.client() as c:
        counted = c.count_tokens("Hello kernel", system="Answer briefly.")
        think = c.think("Hello kernel", system="Answer briefly.")
        c.context("create", "talk", system="You are terse.")
        c.think("first question", context="talk")
        in_context = c.count_tokens("second question", context="talk")
        answered = c.think("second question", context="talk")
        bare = c.count_tokens("second question")
        plain = c._call(Op.COUNT, b"Hello kernel")
    assert counted.model == "gemini-test"
    assert counted.tokens == think.tokens["prompt"] == count_tokens("Hello kernelAnswer briefly.")
    assert in_context.tokens == answered.tokens["prompt"] > bare.tokens, "the stored turns are counted"
    assert plain == {"success": True, "tokens": count_tokens("Hello kernel"), "model": "gemini-test",
                     "error": None}


def test_embed_through_the_kernel_is_charged_to_the_budget(llm_kernel) -> None:
    texts = ["the cat sat", "on the mat", "the cat sat"]
    with llm_kernel.client() as c:
        before = c.usage()
        batch = c.embed(texts, task_type="semantic_similarity", dimensions=256)
        one = c.embed("the cat sat", dimensions=256)
        after = c.usage()
    assert batch.model == one.model == "gemini-embedding-001"
    assert [len(v) for v in batch.vectors] == [256] * 3
    assert batch.vectors[0] == batch.vectors[2] and batch.vectors[0] != one.vectors[0], \
        "the task type changes the vector"
    (sent_batch, sent_one) = [r for r in llm_kernel.fake.requests if "mbed" in r.path]
    assert sent_batch.body["requests"][0]["taskType"] == "SEMANTIC_SIMILARITY"
    assert "taskType" not in sent_one.body
    # The fake, like the Gemini API, reports no tokens: the kernel charges its own estimate.
    assert batch.tokens is None
    expected = sum(estimate_input_tokens(ModelRequest(contents=[user(t) for t in batch_texts]))
                   for batch_texts in (texts, ["the cat sat"]))
    mine, was = after["agents"][after["you"]], before["agents"].get(before["you"], {"calls": 0})
    assert mine["calls"] - was["calls"] == 2
    assert mine["tokens"]["prompt"] == mine["tokens"]["total"] == expected


@pytest.mark.llm_env(AGENTOS_LLM_CONFIG=json.dumps({"defaults": {"tokens": 40}}))
def test_embed_stops_when_the_token_budget_is_spent(llm_kernel) -> None:
    with llm_kernel.client() as c:
        spent = c.embed(["x" * 90])  # an estimate of ~35 tokens of the 40
        with pytest.raises(ThinkError) as refused:
            c.embed(["y" * 90])
        still = c.count_tokens("counting is free")
    assert spent.vectors and refused.value.kind == "budget_exhausted" and refused.value.reason == "tokens"
    assert still.tokens > 0
    embeds = [r for r in llm_kernel.fake.requests if "mbed" in r.path]
    assert len(embeds) == 1, "the refused EMBED never reached the provider"


def test_malformed_count_and_embed_are_invalid_argument_naming_the_field(llm_kernel) -> None:
    cases: list[tuple[Op, Any, str]] = [
        (Op.EMBED, {"texts": ["a"], "text": "b"}, "texts"),
        (Op.EMBED, {}, "texts"),
        (Op.EMBED, {"texts": []}, "texts"),
        (Op.EMBED, {"texts": ["x"] * 101}, "texts"),
        (Op.EMBED, {"texts": ["a", ""]}, "texts[1]"),
        (Op.EMBED, {"text": "a", "task_type": "RANKING"}, "task_type"),
        (Op.EMBED, {"text": "a", "dimensions": 0}, "dimensions"),
        (Op.EMBED, {"text": "a", "colour": "red"}, "colour"),
        (Op.COUNT, {"prompt": "a", "stream": True}, "stream"),
        (Op.COUNT, {"prompt": "a", "functions": [{"name": "f", "parameters": {
            "type": "object", "properties": {"a": {"$ref": "#/$defs/gone"}}}}]},
         "functions[0].parameters.properties.a.$ref"),
        (Op.MODELS, {"refresh": True}, "refresh"),
    ]
    with llm_kernel.client() as c:
        for op, payload, field in cases:
            with pytest.raises(InvalidArgument) as error:
                c._call(op, payload)
            assert error.value.details.get("field") == field, (op, payload, error.value)
        with pytest.raises(InvalidArgument, match="temperature"):
            c.count_tokens("x", temperature=7)
        assert c.count_tokens("still fine").tokens == 3
    assert [r.path for r in llm_kernel.fake.requests if r.method == "POST"] == [
        "/v1beta/models/gemini-test:countTokens"]


def test_models_are_listed_once_per_minute_with_the_defaults(llm_kernel) -> None:
    async def main():
        async with await AsyncClient.connect(llm_kernel.process.socket_path) as c:
            counted, embedded = await c.count_tokens("abcd"), await c.embed(["abcd"])
            assert counted.tokens == 1 and len(embedded.vectors) == 1
            return await asyncio.gather(*(c.models() for _ in range(5)))

    def lists() -> int:
        return len([r for r in llm_kernel.fake.requests if r.path == "/v1beta/models"])

    with llm_kernel.client() as c:
        # The kernel's start-up check of the endpoint lists the models too: let it finish first.
        while _checking(c.hello()["capabilities"]["llm"]):
            time.sleep(0.01)
    probed = lists()
    listings = asyncio.run(main())
    with llm_kernel.client() as c:
        again = c.models()
    assert all(listing == again for listing in listings)
    assert lists() == probed + 1, "concurrent and later callers share one fetch"
    assert again.default == "gemini-test" and again.embedding_default == "gemini-embedding-001"
    by_name = {m.name: m for m in again.models}
    assert by_name["gemini-test"].display_name == "Gemini Test"
    assert "embedContent" in by_name["gemini-embedding-001"].methods
    assert all(m.allowed for m in again.models), "an admin may use every model"


AGENT = """
import json, sys
from agentos import Client, SyscallError
from agentos.client.think import ThinkError

def attempt(call):
    try:
        return call()
    except SyscallError as error:
        return type(error).__name__

with Client() as c:
    listed = attempt(c.models)
    print(json.dumps({
        "models": listed if isinstance(listed, str) else {m.name: m.allowed for m in listed.models},
        "count": attempt(lambda: c.count_tokens("hi").tokens),
        "count_other": attempt(lambda: c.count_tokens("hi", model="gemini-3.5-flash").tokens),
        "count_allowed": attempt(lambda: c.count_tokens("hi", model="gemini-2.5-pro").model),
        "embed": attempt(lambda: len(c.embed("hi").vectors)),
        "embed_other": attempt(lambda: c.embed("hi", model="text-embedding-other")),
    }), flush=True)
"""


@pytest.mark.llm_env(AGENTOS_LLM_CONFIG=json.dumps({"agents": {"picker": {"models": ["gemini-2.5-pro"]}}}))
def test_agents_need_think_and_their_policy_for_the_model(llm_kernel, tmp_path: Path) -> None:
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    results = {}
    with llm_kernel.client() as c:
        for name, capabilities in (("picker", ["think"]), ("mute", ["message"])):
            c.spawn(name, script, sandboxed=False, allow_degraded=True, capabilities=capabilities)
            c.wait(name, timeout=60)
            results[name] = json.loads(c.logs(name).strip().splitlines()[-1])
    picker, mute = results["picker"], results["mute"]
    assert mute == {key: "PermissionDenied" for key in mute}, "no think capability, no model API"
    assert picker["models"]["gemini-test"] and picker["models"]["gemini-embedding-001"]
    assert picker["models"]["gemini-2.5-pro"] and not picker["models"]["gemini-3.5-flash"]
    assert picker["count"] == 1 and picker["count_allowed"] == "gemini-2.5-pro"
    assert picker["count_other"] == "PermissionDenied" and picker["embed_other"] == "PermissionDenied"
    assert picker["embed"] == 1


def test_cli_lists_models_and_counts_a_prompt(llm_kernel, capsys) -> None:
    socket = ["--socket", str(llm_kernel.process.socket_path)]
    assert cli_main(["think", *socket, "--list-models"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["MODEL", "INPUT", "OUTPUT", "ALLOWED", "METHODS"]
    rows = {line[2:].split()[0]: line for line in table[1:]}
    assert set(rows) == {"gemini-test", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.5-pro",
                         "gemini-3.5-flash", "gemini-embedding-001"}
    assert rows["gemini-test"].startswith("* ") and rows["gemini-embedding-001"].startswith("* ")
    assert rows["gemini-2.5-pro"].startswith("  ")
    assert rows["gemini-test"].split()[2:5] == ["1,048,576", "65,536", "yes"]
    assert cli_main(["think", *socket, "--list-models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["default"] == "gemini-test" and {"name", "allowed"} <= set(listed["models"][0])
    assert cli_main(["think", *socket, "--count", "--system", "be brief", "x" * 40]) == 0
    assert capsys.readouterr().out == f"{count_tokens('x' * 40 + 'be brief')} tokens (gemini-test)\n"
    assert cli_main(["think", *socket]) == 2
    assert "a prompt is needed" in capsys.readouterr().err


# --- in-process: the service's answers to an outside uid and to agents -----------------------------

def _call(kernel: Any, op: Op, body: dict[str, Any], agent_id: str | None = None, uid: int = 1000) -> Call:
    conn = SimpleNamespace(context=Identity(pid=4242, uid=uid, gid=uid, agent_id=agent_id))
    call = Call(kernel, conn, int(op), 1, json.dumps(body).encode())
    call.decode()
    return call


def test_a_model_failure_is_an_answer_and_the_list_is_not_cached(tmp_path, monkeypatch) -> None:
    async def main():
        async with FakeGemini() as fake:
            monkeypatch.setenv("AGENTOS_GEMINI_BASE_URL", fake.url)
            monkeypatch.setenv("GEMINI_API_KEY", "wrong-key")
            monkeypatch.setenv("AGENTOS_GEMINI_MODEL", "gemini-test")
            monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
            monkeypatch.delenv("AGENTOS_LLM_CONFIG", raising=False)
            kernel = SimpleNamespace(config=KernelConfig(state_dir=tmp_path, sections={"llm": {}}),
                                     events=EventBus(), check_reply=lambda call, payload: None)
            service = LLMService(kernel)
            handlers = service.syscalls()
            await service.start()
            try:
                while _checking(service.capabilities()):
                    await asyncio.sleep(0.01)  # the start-up check lists the models too
                probes = len(fake.requests)
                answers = [await handlers[op](_call(kernel, op, body)) for op, body in (
                    (Op.COUNT, {"prompt": "x"}), (Op.EMBED, {"text": "x"}), (Op.MODELS, {}),
                    (Op.MODELS, {}))]
                return [json.loads(a) if isinstance(a, bytes) else a for a in answers], fake.requests[probes:]
            finally:
                await service.stop()

    (count, embed, models, again), requests = asyncio.run(main())
    assert count == {"success": False, "tokens": None, "model": "gemini-test",
                     "error": count["error"]} and count["error"]["type"] == "auth"
    assert not embed["success"] and embed["embeddings"] == [] and embed["error"]["type"] == "auth"
    assert not models["success"] and models["error"]["type"] == "auth" and models["default"] == "gemini-test"
    assert len([r for r in requests if r.path == "/v1beta/models"]) == 2, "a failure is not cached"
    assert again == models


def test_an_openai_compatible_kernel_embeds_lists_and_cannot_count(tmp_path) -> None:
    from agentos.testing.kernel import KernelProcess

    with FakeOpenAI().running_in_thread() as fake:
        env = {"AGENTOS_LLM_PROVIDER": "openai", "AGENTOS_OPENAI_BASE_URL": fake.base_url,
               "AGENTOS_OPENAI_MODEL": "gpt-test", "GEMINI_API_KEY": "", "GOOGLE_API_KEY": ""}
        kernel = KernelProcess(tmp_path / "k", env=env).start()
        try:
            with kernel.client() as c:
                with pytest.raises(ThinkError) as counted:
                    c.count_tokens("hello")
                with pytest.raises(InvalidArgument) as unnamed:
                    c.embed("hello")
                embedded = c.embed(["hello", "world"], model="text-embedding-3-small", dimensions=32)
                listed = c.models()
                usage = c.usage()
        finally:
            kernel.stop_checked()
    assert counted.value.kind == "unsupported" and "counting" in counted.value.message
    assert unnamed.value.details == {"field": "model"}
    assert [len(v) for v in embedded.vectors] == [32, 32]
    # The server reports the tokens, and they are what is charged.
    assert embedded.tokens == count_tokens("hello") + count_tokens("world")
    assert usage["agents"][usage["you"]]["tokens"]["total"] == embedded.tokens
    assert listed.default == "gpt-test" and listed.embedding_default is None
    assert {m.name for m in listed.models} >= {"gpt-test", "text-embedding-3-small"}
