"""A fake OpenAI-compatible server for the second provider's tests.

Routes: ``POST /v1/chat/completions`` (``n``, ``stop``, ``stream`` with
``stream_options.include_usage``), ``POST /v1/embeddings`` (``dimensions``,
``encoding_format`` float or base64), ``GET /v1/models`` and
``GET /v1/models/{id}``; control routes as FakeGemini's (``/_fake/script``,
``/_fake/requests``, ``/_fake/reset``, ``/_fake/models``).

It streams like llama.cpp / vLLM do: LF-framed ``data:`` events, tool-call
arguments in fragments keyed by index, an optional usage chunk, ``data: [DONE]``.

Token rule: a prompt counts ``ceil(len(T) / 4)`` tokens (at least 1), ``T`` the
text of every message joined in order; an answer counts the same rule over its
text plus ``ceil(len(args JSON) / 4)`` per tool call, and ``reasoning_tokens``
(``Reply.thoughts_tokens``, else the rule over ``Reply.thoughts``) are added to
``completion_tokens``. Prompt caching is automatic as OpenAI's: a prompt that
shares a prefix of at least 1024 tokens with an earlier one reports that prefix,
rounded down to 1024 + a multiple of 128, as ``cached_tokens``.
"""
from __future__ import annotations

import array
import base64
import itertools
import sys
import time
from collections import deque
from typing import Any

import ujson
from aiohttp import web

from ._server import FakeServer
from ._vectors import embedding_vector
from .script import Prompt, Reply, count_tokens, sample_args, split_text

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "invalid_request_error", 429: "rate_limit_error"}
#: Native embedding size per model; ada-002 cannot be shortened.
EMBEDDING_SIZES = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
DEFAULT_MODELS = ("gpt-test", "gpt-4o-mini", "gpt-4.1-mini", "text-embedding-3-small", "text-embedding-3-large")
MAX_EMBEDDING_INPUTS = 2048
MAX_STOP = 4
MAX_CHOICES = 128
CACHE_MIN_TOKENS = 1024
CACHE_STEP = 128


class RequestError(Exception):
    """A request OpenAI refuses with 400, naming the parameter."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


class FakeOpenAI(FakeServer):
    """Scriptable OpenAI-compatible server; with ``api_key`` set, requires ``Bearer <api_key>``."""

    def __init__(self, *, api_key: str | None = None, models: Any = DEFAULT_MODELS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.api_key = api_key
        self.set_models(models)
        self._ids = itertools.count(1)
        #: Recent prompt texts, for automatic prompt caching.
        self._prompts: deque[str] = deque(maxlen=64)

    @property
    def base_url(self) -> str:
        """What to configure as the provider's base URL (it ends in ``/v1``)."""
        return f"{self.url}/v1"

    def model_record(self, model: str | dict[str, Any]) -> dict[str, Any]:
        given = {"id": model} if isinstance(model, str) else dict(model)
        if not given.get("id"):
            raise ValueError("a model needs an id")
        return {"id": given["id"], "object": "model", "created": 1700000000, "owned_by": "system", **given}

    def reset(self) -> None:
        super().reset()
        self._prompts.clear()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._complete)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._list_models, allow_head=False)
        app.router.add_get("/v1/models/{model:.+}", self._get_model, allow_head=False)
        app.router.add_route("*", "/{tail:.*}", self._not_found)

    async def _authorized(self, request: web.Request) -> tuple[Any, web.Response | None]:
        recorded = await self.record(request)
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return recorded.body, error_response(401, "Incorrect API key provided.", code="invalid_api_key")
        return recorded.body, None

    # --- models --------------------------------------------------------------------------------

    async def _list_models(self, request: web.Request) -> web.Response:
        _body, denied = await self._authorized(request)
        return denied or web.json_response({"object": "list", "data": self.models})

    async def _get_model(self, request: web.Request) -> web.Response:
        _body, denied = await self._authorized(request)
        if denied:
            return denied
        wanted = request.match_info["model"]
        found = next((m for m in self.models if m["id"] == wanted), None)
        if found is None:
            return error_response(404, f"The model `{wanted}` does not exist or you do not have access to it.",
                                  param="model", code="model_not_found")
        return web.json_response(found)

    async def _not_found(self, request: web.Request) -> web.Response:
        await self.record(request)
        return error_response(404, f"Invalid URL ({request.method} {request.path})")

    # --- embeddings ----------------------------------------------------------------------------

    async def _embeddings(self, request: web.Request) -> web.Response:
        body, denied = await self._authorized(request)
        if denied:
            return denied
        try:
            answer = _embed(body)
        except RequestError as error:
            return error_response(400, error.message, param=error.param, code=error.code)
        return web.json_response(answer)

    # --- chat ----------------------------------------------------------------------------------

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        body, denied = await self._authorized(request)
        if denied:
            return denied
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
            return error_response(400, "'messages' is a required property", param="messages")
        try:
            choices, stops = _check_chat(body)
        except RequestError as error:
            return error_response(400, error.message, param=error.param, code=error.code)
        reply = self.next_reply(_prompt(body, request.headers)) or _default_reply(body)
        if not await self.delay_answer(reply):
            return error_response(503, "shutting down")
        if reply.status is not None:
            return error_response(reply.status, reply.message, reply.retry_delay)
        if reply.malformed:
            return web.Response(status=200, text='{"choices": [', content_type="application/json")
        answers = [self._choice(reply, index, stops) for index in range(choices)]
        usage = self._usage(body, reply, answers)
        common = {"id": f"chatcmpl-{next(self._ids)}", "created": int(time.time()), "model": body.get("model", "")}
        if not body.get("stream"):
            return web.json_response({**common, "object": "chat.completion", "usage": usage, "choices": [
                {"index": index, "message": _message(text, calls), "finish_reason": finish, "logprobs": None}
                for index, (text, calls, finish) in enumerate(answers)]})
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        extra = {"usage": None} if with_usage else {}
        events = [{**common, "object": "chat.completion.chunk", "choices": [{"index": index, "delta": delta,
                                                                             "finish_reason": None}], **extra}
                  for index, (text, calls, _finish) in enumerate(answers)
                  for delta in _deltas(text, calls, reply.chunks)]
        events += [{**common, "object": "chat.completion.chunk",
                    "choices": [{"index": index, "delta": {}, "finish_reason": finish}], **extra}
                   for index, (_text, _calls, finish) in enumerate(answers)]
        if with_usage:
            events.append({**common, "object": "chat.completion.chunk", "choices": [], "usage": usage})
        failure = {"error": {"message": "internal error", "type": "server_error", "code": 500}}
        return await self.send_events(request, reply, events, failure, b"\n", done=b"data: [DONE]\n\n")

    def _choice(self, reply: Reply, index: int, stops: list[str]) -> tuple[str, list[dict[str, Any]], str]:
        """(text, tool calls, finish_reason) of choice ``index``; a stop sequence ends the text before it."""
        text = reply.text if index == 0 or index > len(reply.alternatives) else reply.alternatives[index - 1]
        calls = [{"id": f"call_{next(self._ids)}", "type": "function",
                  "function": {"name": c["name"], "arguments": ujson.dumps(c.get("args") or {})}}
                 for c in (reply.function_calls if index == 0 else [])]
        found = [i for i in (text.find(s) for s in stops) if i >= 0]
        if found:
            return text[:min(found)], [], "stop"
        finish = "tool_calls" if calls else {"STOP": "stop", "MAX_TOKENS": "length",
                                             "SAFETY": "content_filter"}.get(reply.finish_reason, "stop")
        return text, calls, finish

    def _usage(self, body: dict[str, Any], reply: Reply,
               answers: list[tuple[str, list[dict[str, Any]], str]]) -> dict[str, Any]:
        text = "".join(_text(m.get("content")) for m in body["messages"] if isinstance(m, dict))
        prompt = count_tokens(text) or 1
        cached = self._cached_prefix(text, prompt)
        reasoning = reply.thoughts_tokens or count_tokens(reply.thoughts)
        output = sum(count_tokens(t) + sum(count_tokens(c["function"]["arguments"]) for c in calls)
                     for t, calls, _ in answers) + reasoning
        return {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output,
                "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}

    def _cached_prefix(self, text: str, prompt: int) -> int:
        """Tokens of ``text`` an earlier prompt already covered, in OpenAI's cache granularity."""
        shared = max((_common_prefix(text, seen) for seen in self._prompts), default=0)
        self._prompts.append(text)
        tokens = min(shared // 4, prompt)
        if tokens < CACHE_MIN_TOKENS:
            return 0
        return CACHE_MIN_TOKENS + (tokens - CACHE_MIN_TOKENS) // CACHE_STEP * CACHE_STEP


def _check_chat(body: dict[str, Any]) -> tuple[int, list[str]]:
    choices = body.get("n", 1) if body.get("n") is not None else 1
    if not isinstance(choices, int) or isinstance(choices, bool):
        raise RequestError(f"Invalid type for 'n': expected an integer, but got {type(choices).__name__} instead.",
                           "n", "invalid_type")
    if choices < 1:
        raise RequestError(f"Invalid 'n': integer below minimum value. Expected a value >= 1, but got {choices} "
                           "instead.", "n", "integer_below_min_value")
    if choices > MAX_CHOICES:
        raise RequestError(f"Invalid 'n': integer above maximum value. Expected a value <= {MAX_CHOICES}, but got "
                           f"{choices} instead.", "n", "integer_above_max_value")
    stop = body.get("stop")
    stops = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise RequestError("Invalid type for 'stop': expected a string or an array of strings.", "stop",
                           "invalid_type")
    if len(stops) > MAX_STOP:
        raise RequestError(f"Invalid 'stop': array too long. Expected an array with maximum length {MAX_STOP}, but "
                           f"got an array with length {len(stops)} instead.", "stop", "array_above_max_length")
    return choices, [s for s in stops if s]


def _embed(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or "input" not in body:
        raise RequestError("'input' is a required property", "input")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("you must provide a model parameter", "model")
    texts = _inputs(body["input"])
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise RequestError(f"Invalid value for 'encoding_format': {fmt!r}. Expected 'float' or 'base64'.",
                           "encoding_format", "invalid_value")
    full = EMBEDDING_SIZES.get(model, 1536)
    size = body.get("dimensions")
    if size is not None:
        if model == "text-embedding-ada-002":
            raise RequestError("This model does not support specifying dimensions.", "dimensions")
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= full:
            raise RequestError(f"Invalid value for 'dimensions' = {size}. Must be between 1 and {full}.",
                               "dimensions", "invalid_value")
    data = []
    for index, text in enumerate(texts):
        vector = embedding_vector(model, text, size or full, full, renormalize=True)
        data.append({"object": "embedding", "index": index,
                     "embedding": _base64_floats(vector) if fmt == "base64" else vector})
    tokens = sum(count_tokens(t) for t in texts)
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _inputs(value: Any) -> list[str]:
    """The texts of ``input``: a string, strings, a token array, or token arrays (ids joined as text)."""
    invalid = RequestError("'$.input' is invalid. Please check the API reference: "
                           "https://platform.openai.com/docs/api-reference.", "input")
    if isinstance(value, str):
        items: list[Any] = [value]
    elif isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        items = [value]
    elif isinstance(value, list):
        items = value
    else:
        raise invalid
    if not items or len(items) > MAX_EMBEDDING_INPUTS:
        raise invalid
    texts = []
    for item in items:
        if isinstance(item, list) and item and all(isinstance(t, int) and not isinstance(t, bool) for t in item):
            texts.append(" ".join(str(t) for t in item))
        elif isinstance(item, str) and item:
            texts.append(item)
        else:
            raise invalid
    return texts


def _base64_floats(vector: list[float]) -> str:
    """Little-endian float32s in base64, as OpenAI sends ``encoding_format: base64``."""
    packed = array.array("f", vector)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()


def _common_prefix(a: str, b: str) -> int:
    limit = min(len(a), len(b))
    if a[:limit] == b[:limit]:
        return limit
    low, high = 0, limit  # a[:low] matches, a[:high] does not
    while high - low > 1:
        middle = (low + high) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle
    return low


def _message(text: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text if not calls or text else None,
                               "refusal": None}
    if calls:
        message["tool_calls"] = calls
    return message


def _deltas(text: str, calls: list[dict[str, Any]], chunks: int) -> list[dict[str, Any]]:
    """One choice's stream deltas: the role, text pieces, then each call's arguments in two fragments."""
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    deltas += [{"content": piece} for piece in split_text(text, chunks)]
    for index, call in enumerate(calls):
        arguments = call["function"]["arguments"]
        half = len(arguments) // 2
        deltas.append({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                       "function": {"name": call["function"]["name"],
                                                    "arguments": arguments[:half]}}]})
        deltas.append({"tool_calls": [{"index": index, "function": {"arguments": arguments[half:]}}]})
    return deltas


def _default_reply(body: dict[str, Any]) -> Reply:
    """Unscripted: call the first tool once, else echo the last user text."""
    last = body["messages"][-1]
    tools = body.get("tools") or []
    if tools and last.get("role") != "tool":
        function = tools[0].get("function") or {}
        return Reply(function_calls=[{"name": function.get("name", ""),
                                      "args": sample_args(function.get("parameters") or {})}])
    if last.get("role") == "tool":
        return Reply(text=f"Function results: {last.get('content')}")
    return Reply(text=f"echo: {_text(last.get('content'))}")


_ROLES = {"user": "user", "assistant": "model", "tool": "tool", "function": "tool"}


def _prompt(body: dict[str, Any], headers: Any) -> Prompt:
    """A chat request as script matchers see it: system and developer messages are the system
    instruction; an assistant's tool call is its name followed by its arguments."""
    system, turns = [], []
    for message in body["messages"]:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(_text(message.get("content")))
        elif role in _ROLES:
            calls = [str(call.get("function", {}).get("name", "")) + str(call.get("function", {}).get("arguments", ""))
                     for call in message.get("tool_calls") or [] if isinstance(call, dict)]
            turns.append((_ROLES[role], " ".join([_text(message.get("content")), *calls]).strip()))
    return Prompt(model=str(body.get("model", "")), system=" ".join(system), turns=tuple(turns),
                  headers=dict(headers), body=body)


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(item.get("text", "") for item in content if isinstance(item, dict))
    return content if isinstance(content, str) else ""


def error_response(status: int, message: str = "", retry_delay: float | None = None, *,
                   param: str | None = None, code: str | None = None) -> web.Response:
    """An OpenAI-shaped error; a retry delay travels in ``Retry-After`` as OpenAI sends it."""
    headers = {"Retry-After": f"{retry_delay:g}"} if retry_delay is not None else {}
    body = {"error": {"message": message or f"HTTP {status}", "type": _ERROR_TYPES.get(status, "server_error"),
                      "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)

