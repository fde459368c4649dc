"""A fake Gemini API on 127.0.0.1 speaking the real wire format, for offline tests and demos.

Routes (``{ver}`` is ``v1beta`` or ``v1``; anything else is a Google-shaped 404):

- ``POST /{ver}/models/{model}:generateContent`` and ``:streamGenerateContent?alt=sse``
- ``POST /{ver}/models/{model}:countTokens`` (``contents``, or ``generateContentRequest``)
- ``POST /{ver}/models/{model}:embedContent`` and ``:batchEmbedContents`` (at most 100 requests)
- ``GET /{ver}/models`` (``pageSize``/``pageToken``) and ``GET /{ver}/models/{model}``
- ``POST|GET /{ver}/cachedContents``, ``GET|PATCH|DELETE /{ver}/cachedContents/{id}``
- control: ``POST /_fake/script``, ``GET /_fake/requests``, ``POST /_fake/reset``,
  ``POST /_fake/models`` (``{"models": [id or partial Model, ...]}``), ``POST /_fake/clock``
  (``{"advance": seconds}``, moves cache expiry time forward)

Requests are checked like the real server checks them (key, roles, thought
signatures of replayed function calls, safety settings, cache rules), answered
from the script queue or by a deterministic default, and every one is recorded.

The token rule, one for countTokens and usageMetadata so the two always agree:
a request counts ``ceil(len(T) / 4)`` tokens (at least 1), where ``T`` joins, in
order, every part of ``contents``, then of ``systemInstruction``, then the
compact sorted-key JSON of each ``tools`` entry; a text part gives its text, a
functionCall (functionResponse) part its name followed by the compact sorted-key
JSON of its ``args`` (``response``); a media part adds ``media_tokens`` (258 an
image, 258 a PDF page, a token per 16 bytes of other inline data). With a ``cachedContent``, the prompt counts
the cache's own tokens (the same rule on its contents, systemInstruction and
tools) plus the request's, and ``cachedContentTokenCount`` is the cache's. An
answer counts the same rule over each candidate's non-thought parts;
thoughts count ``Reply.thoughts_tokens``, else the rule over ``Reply.thoughts``.
"""
from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import ujson
from aiohttp import web

from ._gemini_wire import (
    ACTION_METHODS,
    DEFAULT_MESSAGES,
    DEFAULT_MODELS,
    EMBEDDING_SIZE,
    TASK_TYPES,
    WireError,
    camelize,
    check_contents,
    check_generation,
    decode_bytes,
    error_body,
    error_response,
    invalid_enum,
    json_response,
    model_info,
    not_found_response,
    page,
    parse_duration,
    parse_time,
    part_text,
    prompt_tokens,
    rfc3339,
    stop_cut,
)
from ._server import FakeServer, RecordedRequest
from ._vectors import embedding_vector
from .script import Prompt, Reply, count_tokens, safety_ratings, sample_args, split_text, tokens_for

__all__ = ["FakeGemini", "camelize", "decode_bytes", "error_response", "prompt_tokens"]

API_VERSIONS = ("v1beta", "v1")
#: The real API's cap on requests in one batchEmbedContents call.
MAX_EMBED_BATCH = 100
#: A cache lives this long when created without ttl/expireTime (the real default).
DEFAULT_CACHE_TTL = 3600.0
_CACHE_GONE = "CachedContent not found (or permission denied)"
_CACHE_EXCLUSIVE = ("CachedContent can not be used with GenerateContent request setting system_instruction, "
                    "tools or tool_config.\n\nProposed fix: move those values to CachedContent from "
                    "GenerateContent request.")

Handler = Callable[[web.Request, RecordedRequest], Awaitable[web.StreamResponse]]


class FakeGemini(FakeServer):
    """Scriptable fake of ``generativelanguage.googleapis.com``.

    ``api_key`` is the only key accepted. With ``strict`` on, a replayed function
    call that lost its thought signature, or an unknown ``functionResponse.id``,
    is answered 400 as Gemini 3 does. ``models`` is what ``GET models`` lists
    (ids or partial Model records); a listed model answers only the methods in its
    ``supportedGenerationMethods``, an unlisted id is served for every method.
    A cache below ``min_cache_tokens`` is refused, as the real API refuses one
    under the model's minimum (1024 tokens on current Flash models).
    """

    def __init__(self, *, api_key: str = "fake-key", strict: bool = True,
                 models: Iterable[str | dict[str, Any]] = DEFAULT_MODELS, min_cache_tokens: int = 1024,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.api_key = api_key
        self.strict = strict
        self.min_cache_tokens = min_cache_tokens
        self.set_models(models)
        #: name -> stored cache record (its wire fields plus what generation needs).
        self.caches: dict[str, dict[str, Any]] = {}
        #: Seconds added to the wall clock for cache expiry (``advance``).
        self.clock_offset = 0.0
        self._ids = itertools.count(1)
        #: functionCall id -> the thought signature the fake sent with it (or None).
        self.issued_calls: dict[str, str | None] = {}

    # --- configuration -----------------------------------------------------------------------

    def model_record(self, model: str | dict[str, Any]) -> dict[str, Any]:
        return model_info(model)

    def advance(self, seconds: float) -> None:
        """Move the fake's clock forward, so caches expire without a test sleeping."""
        self.clock_offset += seconds

    def now(self) -> float:
        return time.time() + self.clock_offset

    def reset(self) -> None:
        super().reset()
        self.caches.clear()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/_fake/clock", self._control_clock)
        api: list[tuple[str, str, Handler]] = [
            ("POST", "/{version}/models/{model_action}", self._model_action),
            ("GET", "/{version}/models", self._list_models),
            ("GET", "/{version}/models/{model}", self._get_model),
            ("POST", "/{version}/cachedContents", self._create_cache),
            ("GET", "/{version}/cachedContents", self._list_caches),
            ("GET", "/{version}/cachedContents/{cache}", self._get_cache),
            ("PATCH", "/{version}/cachedContents/{cache}", self._update_cache),
            ("DELETE", "/{version}/cachedContents/{cache}", self._delete_cache)]
        for method, path, handler in api:
            app.router.add_route(method, path, self._guarded(handler))
        app.router.add_route("*", "/{tail:.*}", self._not_found)

    def _guarded(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """Record, then check the version and key as every API route does; WireError -> its answer."""
        async def route(request: web.Request) -> web.StreamResponse:
            recorded = await self.record(request)
            if request.match_info["version"] not in API_VERSIONS:
                return not_found_response(request.path)
            denied = self._check_key(request)
            if denied is not None:
                return denied
            if request.method in ("POST", "PATCH") and not isinstance(recorded.body, dict):
                return error_response(400, "Invalid JSON payload received.")
            try:
                return await handler(request, recorded)
            except WireError as error:
                return error.response()
        return route

    # --- models/{model}:{action} ---------------------------------------------------------------

    async def _model_action(self, request: web.Request, recorded: RecordedRequest) -> web.StreamResponse:
        version = request.match_info["version"]
        model, _, action = request.match_info["model_action"].partition(":")
        method = ACTION_METHODS.get(action)
        if method is None:
            return not_found_response(request.path)
        info = self._model(model)
        if info is not None and method not in info["supportedGenerationMethods"]:
            return error_response(404, f"models/{model} is not found for API version {version}, or is not "
                                       f"supported for {action}. Call ListModels to see the list of available "
                                       "models and their supported methods.")
        body = camelize(recorded.body)
        if action == "countTokens":
            return json_response(self._count(body, model))
        if action == "embedContent":
            return json_response({"embedding": self._embed(body, model, version, "EmbedContentRequest")})
        if action == "batchEmbedContents":
            return json_response(self._embed_batch(body, model, version))
        return await self._generate(request, body, model, action)

    async def _generate(self, request: web.Request, body: dict[str, Any], model: str,
                        action: str) -> web.StreamResponse:
        version = request.match_info["version"]
        check_contents(body.get("contents"))
        check_generation(body, version)
        if self.strict:
            self._check_function_turns(body["contents"])
        full, cached = self._with_cache(body, model)
        reply = self.next_reply(_prompt(full, model, request.headers)) or self._default_reply(full)
        if not await self.delay_answer(reply):
            return error_response(503, "shutting down")
        if reply.status is not None:
            return error_response(reply.status, reply.message, reply.retry_delay)
        if reply.malformed:
            return web.Response(status=200, text='{"candidates": [{"content": ',
                                content_type="application/json")
        events = self._render(reply, full, model, _prompt_usage(prompt_tokens(body) + cached, cached))
        if action == "generateContent":
            return json_response(_merge(events))
        if request.query.get("alt") != "sse":
            return error_response(400, "This fake only streams with alt=sse.")
        # Gemini frames events with CRLF and has no end marker: the body just ends.
        return await self.send_events(request, reply, events,
                                      error_body(500, DEFAULT_MESSAGES[500]), b"\r\n")

    def _count(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        if "generateContentRequest" in body:
            if body.get("contents"):
                raise WireError(400, "* CountTokensRequest: contents and generate_content_request are "
                                     "mutually exclusive.")
            inner = body["generateContentRequest"]
            if not isinstance(inner, dict):
                raise WireError(400, "Invalid JSON payload received. Unknown name \"generateContentRequest\".")
            check_contents(inner.get("contents"))
            _full, cached = self._with_cache(inner, model)
            usage = _prompt_usage(prompt_tokens(inner) + cached, cached)
        else:
            check_contents(body.get("contents"), "CountTokensRequest")
            usage = _prompt_usage(prompt_tokens(body), 0)
        answer = {"totalTokens": usage["promptTokenCount"], "promptTokensDetails": usage["promptTokensDetails"]}
        if "cachedContentTokenCount" in usage:
            answer.update(cachedContentTokenCount=usage["cachedContentTokenCount"],
                          cacheTokensDetails=usage["cacheTokensDetails"])
        return answer

    def _embed(self, body: dict[str, Any], model: str, version: str, where: str) -> dict[str, Any]:
        content = body.get("content")
        if not isinstance(content, dict):
            raise WireError(400, f"* {where}.content: content is not specified", "content")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            raise WireError(400, f"* {where}.content.parts: contents.parts must not be empty.", "content.parts")
        for index, part in enumerate(parts):
            # proto3 drops an empty string, which leaves the part's data oneof unset
            if not part_text(part):
                raise WireError(400, f"* {where}.content.parts[{index}].data: required oneof field 'data' "
                                     "must have one initialized field", f"content.parts[{index}].data")
        task = body.get("taskType", "TASK_TYPE_UNSPECIFIED")
        if task not in TASK_TYPES:
            raise invalid_enum("task_type", "TaskType", task, version)
        size = body.get("outputDimensionality", EMBEDDING_SIZE)
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= EMBEDDING_SIZE:
            raise WireError(400, f"* {where}.output_dimensionality: must be between 1 and {EMBEDDING_SIZE}, "
                                 f"got {size!r}.", "output_dimensionality")
        text = "".join(part_text(p) for p in parts)
        seed_task = "" if task == "TASK_TYPE_UNSPECIFIED" else task
        return {"values": embedding_vector(f"models/{model}", text, size, EMBEDDING_SIZE, task=seed_task)}

    def _embed_batch(self, body: dict[str, Any], model: str, version: str) -> dict[str, Any]:
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise WireError(400, "* BatchEmbedContentsRequest.requests: requests is not specified", "requests")
        if len(requests) > MAX_EMBED_BATCH:
            raise WireError(400, f"* BatchEmbedContentsRequest.requests: at most {MAX_EMBED_BATCH} requests "
                                 "can be in one batch", "requests")
        embeddings = []
        for index, item in enumerate(requests):
            item = item if isinstance(item, dict) else {}
            named = item.get("model", f"models/{model}")
            if named != f"models/{model}":
                raise WireError(400, f"* BatchEmbedContentsRequest.requests[{index}].model: the model of each "
                                     f"request ({named}) must match the model of the batch (models/{model}).",
                                f"requests[{index}].model")
            embeddings.append(self._embed(item, model, version, f"BatchEmbedContentsRequest.requests[{index}]"))
        return {"embeddings": embeddings}

    # --- models --------------------------------------------------------------------------------

    def _model(self, model: str) -> dict[str, Any] | None:
        return next((m for m in self.models if m["name"] == f"models/{model}"), None)

    async def _list_models(self, request: web.Request, recorded: RecordedRequest) -> web.Response:
        models, following = page(self.models, request.query)
        return json_response(_listing("models", models, following))

    async def _get_model(self, request: web.Request, recorded: RecordedRequest) -> web.Response:
        info = self._model(request.match_info["model"])
        if info is None:
            return error_response(404, f"models/{request.match_info['model']} is not found for API version "
                                       f"{request.match_info['version']}, or is not supported for GetModel. "
                                       "Call ListModels to see the list of available models and their "
                                       "supported methods.")
        return json_response(info)

    # --- cachedContents ------------------------------------------------------------------------

    async def _create_cache(self, request: web.Request, recorded: RecordedRequest) -> web.Response:
        body = camelize(recorded.body)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise WireError(400, "* CreateCachedContentRequest.cached_content.model: model is not specified",
                            "cached_content.model")
        model = f"models/{model.removeprefix('models/')}"
        info = self._model(model.removeprefix("models/"))
        if info is not None and "createCachedContent" not in info["supportedGenerationMethods"]:
            return error_response(404, f"{model} is not found for API version {request.match_info['version']}, "
                                       "or is not supported for createCachedContent.")
        if "contents" in body:
            check_contents(body["contents"], "CreateCachedContentRequest.cached_content")
        stored = {k: body[k] for k in ("contents", "systemInstruction", "tools", "toolConfig") if k in body}
        tokens = prompt_tokens(stored)
        if tokens < self.min_cache_tokens:
            raise WireError(400, f"Cached content is too small. total_token_count={tokens}, "
                                 f"min_total_token_count={self.min_cache_tokens}")
        now = self.now()
        number = next(self._ids)
        name = "cachedContents/" + hashlib.sha256(f"{id(self)}:{number}".encode()).hexdigest()[:40]
        self.caches[name] = {"stored": stored, "tokens": tokens, "number": number, "created": now,
                             "updated": now, "expires": self._expiry(body, now, DEFAULT_CACHE_TTL),
                             "model": model, "displayName": str(body.get("displayName") or "")}
        return json_response(self._cache_view(name))

    async def _list_caches(self, request: web.Request, recorded: RecordedRequest) -> web.Response:
        live = [name for name in list(self.caches) if self._live_cache(name) is not None]
        names, following = page(live, request.query, default_size=10)
        return json_response(_listing("cachedContents", [self._cache_view(n) for n in names], following))

    async def _get_cache(self, request: web.Request, recorded: RecordedRequest) -> web.Response:
        name = self._cache_name(request)
        return json_response(self._cache_view(name))

    async def _update_cache(self, request: web.Request, recorded: RecordedRequest) -> web.Response:
        name = self._cache_name(request)
        body = camelize(recorded.body)
        if "ttl" not in body and "expireTime" not in body:
            raise WireError(400, "* UpdateCachedContentRequest: only ttl or expire_time can be updated, and one "
                                 "of them must be set.", "cached_content.expiration")
        now = self.now()
        record = self.caches[name]
        record.update(expires=self._expiry(body, now, None), updated=now)
        return json_response(self._cache_view(name))

    async def _delete_cache(self, request: web.Request, recorded: RecordedRequest) -> web.Response:
        del self.caches[self._cache_name(request)]
        return json_response({})

    def _cache_name(self, request: web.Request) -> str:
        name = f"cachedContents/{request.match_info['cache']}"
        if self._live_cache(name) is None:
            raise WireError(403, _CACHE_GONE)
        return name

    def _live_cache(self, name: str) -> dict[str, Any] | None:
        record = self.caches.get(name)
        if record is not None and record["expires"] <= self.now():
            del self.caches[name]
            return None
        return record

    def _expiry(self, body: dict[str, Any], now: float, default: float | None) -> float:
        if "ttl" in body and "expireTime" in body:
            raise WireError(400, "* CachedContent: ttl and expire_time are mutually exclusive.", "expiration")
        if "ttl" in body:
            return now + parse_duration(body["ttl"], "cached_content.ttl")
        if "expireTime" in body:
            return parse_time(body["expireTime"], "cached_content.expire_time")
        assert default is not None
        return now + default

    def _cache_view(self, name: str) -> dict[str, Any]:
        record = self.caches[name]
        return {"name": name, "model": record["model"], "createTime": rfc3339(record["created"]),
                "updateTime": rfc3339(record["updated"]), "expireTime": rfc3339(record["expires"]),
                "displayName": record["displayName"], "usageMetadata": {"totalTokenCount": record["tokens"]}}

    def _with_cache(self, body: dict[str, Any], model: str) -> tuple[dict[str, Any], int]:
        """The request with its cachedContent's prefix applied, and the cache's token count (0 without)."""
        name = body.get("cachedContent")
        if not name:
            return body, 0
        if any(k in body for k in ("systemInstruction", "tools", "toolConfig")):
            raise WireError(400, _CACHE_EXCLUSIVE)
        record = self._live_cache(str(name))
        if record is None:
            raise WireError(403, _CACHE_GONE)
        if record["model"] != f"models/{model}":
            raise WireError(400, f"Model used by GenerateContent request (models/{model}) and CachedContent "
                                 f"({record['model']}) has to be the same.")
        stored = record["stored"]
        full = {**body, **{k: v for k, v in stored.items() if k != "contents"},
                "contents": list(stored.get("contents") or []) + list(body["contents"])}
        return full, int(record["tokens"])

    # --- control -------------------------------------------------------------------------------

    async def _control_clock(self, request: web.Request) -> web.Response:
        raw = await request.json()
        try:
            self.advance(float(raw["advance"]))
        except (KeyError, TypeError, ValueError) as exc:
            return web.json_response({"error": f"advance: {exc}"}, status=400)
        return web.json_response({"offset": self.clock_offset})

    async def _not_found(self, request: web.Request) -> web.Response:
        await self.record(request)
        return not_found_response(request.path)

    # --- checks --------------------------------------------------------------------------------

    def _check_key(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not key:
            return error_response(403, "Method doesn't allow unregistered callers (callers without "
                                  "established identity). Please use API Key or other form of API "
                                  "consumer identity to call this API.")
        if key.strip() != self.api_key:
            return error_response(400, "API key not valid. Please pass a valid API key.",
                                  reason="API_KEY_INVALID")
        return None

    def _check_function_turns(self, contents: list[dict[str, Any]]) -> None:
        for content in contents:
            for part in content.get("parts", []):
                call = part.get("functionCall") if isinstance(part, dict) else None
                if content.get("role") == "model" and call and call.get("id") in self.issued_calls:
                    expected = self.issued_calls[call["id"]]
                    # bytes fields travel as base64 in either alphabet, padded or not: clients
                    # (google-genai) re-encode what they received, so compare what it decodes to
                    if expected is not None and not _same_bytes(part.get("thoughtSignature"), expected):
                        raise WireError(400, "Function call is missing a thought_signature in functionCall "
                                             "parts. This is required for tools to work correctly.")
                answer = part.get("functionResponse") if isinstance(part, dict) else None
                if answer and answer.get("id") and answer["id"] not in self.issued_calls:
                    raise WireError(400, "functionResponse.id does not match functionCall.id")

    # --- answers -------------------------------------------------------------------------------

    def _default_reply(self, body: dict[str, Any]) -> Reply:
        """Unscripted: call the first declared function once, else echo the last user text."""
        last = body["contents"][-1]
        answered = [p["functionResponse"] for p in last.get("parts", []) if "functionResponse" in p]
        declarations = [d for tool in body.get("tools") or [] for d in tool.get("functionDeclarations") or []]
        if declarations and not answered:
            first = declarations[0]
            schema = first.get("parameters") or first.get("parametersJsonSchema") or {}
            return Reply(function_calls=[{"name": first["name"], "args": sample_args(schema)}])
        if answered:
            return Reply(text="Function results: " + ujson.dumps([a.get("response") for a in answered]))
        text = " ".join(p.get("text", "") for p in last.get("parts", []) if "text" in p)
        return Reply(text=f"echo: {text}")

    def _render(self, reply: Reply, body: dict[str, Any], model: str,
                prompt: dict[str, Any]) -> list[dict[str, Any]]:
        """The reply as the list of stream events (one event when it is a single response)."""
        common = {"modelVersion": model, "responseId": f"fake-{next(self._ids)}"}
        prompt_count = prompt["promptTokenCount"]
        if reply.block_reason:
            feedback: dict[str, Any] = {"blockReason": reply.block_reason}
            if reply.safety_ratings is not None or reply.block_reason == "SAFETY":
                feedback["safetyRatings"] = reply.safety_ratings or safety_ratings("HARM_CATEGORY_DANGEROUS_CONTENT")
            return [{"promptFeedback": feedback, "usageMetadata": {**prompt, "totalTokenCount": prompt_count},
                     **common}]
        config = body.get("generationConfig") or {}
        include_thoughts = bool((config.get("thinkingConfig") or {}).get("includeThoughts"))
        thoughts = reply.thoughts_tokens or count_tokens(reply.thoughts)
        # maxOutputTokens bounds what is billed as output, thinking first (as Gemini 2.5 does):
        # what thinking leaves bounds the text, which is cut there with MAX_TOKENS.
        limit = config.get("maxOutputTokens")
        room = None
        if isinstance(limit, int) and not isinstance(limit, bool):
            thoughts = min(thoughts, limit)
            room = limit - thoughts
        candidates = [self._candidate(reply, index, config.get("stopSequences") or [], include_thoughts, room)
                      for index in range(config.get("candidateCount", 1))]
        steps = max(1, *(len(groups) for groups, _ in candidates))
        events: list[dict[str, Any]] = []
        # Characters of each candidate's answer so far: an event reports the tokens to date,
        # and summing every earlier group again would make a long stream quadratic.
        sent = [0] * len(candidates)
        for step in range(steps):
            last = step == steps - 1
            entries: list[dict[str, Any]] = []
            output = 0
            for index, (groups, finish) in enumerate(candidates):
                if step < len(groups):
                    sent[index] += sum(len(part_text(p)) for p in groups[step] if not p.get("thought"))
                output += tokens_for(sent[index])
                parts = groups[step] if step < len(groups) else []
                if not parts and not last:
                    continue
                entry: dict[str, Any] = {}
                if parts:
                    entry["content"] = {"parts": parts, "role": "model"}
                elif finish != "SAFETY":
                    entry["content"] = {"role": "model"}
                if last:
                    entry["finishReason"] = finish
                    if finish == "SAFETY":
                        entry["safetyRatings"] = reply.safety_ratings or safety_ratings(
                            "HARM_CATEGORY_DANGEROUS_CONTENT")
                entry["index"] = index
                entries.append(entry)
            usage: dict[str, Any] = dict(prompt)
            if output or last:
                usage["candidatesTokenCount"] = output
            if thoughts:
                usage["thoughtsTokenCount"] = thoughts
            usage["totalTokenCount"] = prompt_count + output + thoughts
            events.append({"candidates": entries, "usageMetadata": usage, **common})
        return events

    def _candidate(self, reply: Reply, index: int, stops: list[str], include_thoughts: bool,
                   room: int | None = None) -> tuple[list[list[dict[str, Any]]], str]:
        """One candidate's parts, grouped as they are streamed, and its finishReason.

        Candidate 0 answers the reply; the others answer ``reply.alternatives`` (text only).
        A stop sequence ends the text before it, drops later calls, and finishes with STOP;
        text over ``room`` output tokens is cut there, drops the calls, and finishes with MAX_TOKENS.
        """
        text = reply.text if index == 0 or index > len(reply.alternatives) else reply.alternatives[index - 1]
        calls = reply.function_calls if index == 0 else []
        finish = reply.finish_reason
        cut = stop_cut(text, stops)
        if cut is not None:
            text, calls, finish = text[:cut], [], "STOP"
        if room is not None and count_tokens(text) > room:
            text, calls, finish = text[:4 * room], [], "MAX_TOKENS"
        groups: list[list[dict[str, Any]]] = []
        if include_thoughts and reply.thoughts:
            groups.append([{"text": reply.thoughts, "thought": True}])
        groups += [[{"text": piece}] for piece in split_text(text, reply.chunks)]
        for number, call in enumerate(calls):
            call_id = f"call_{next(self._ids)}"
            part: dict[str, Any] = {"functionCall": {"id": call_id, "name": call["name"],
                                                     "args": call.get("args") or {}}}
            signature = reply.thought_signature if number == 0 else None
            if signature:
                part["thoughtSignature"] = signature
            self.issued_calls[call_id] = signature
            groups.append([part])  # parallel calls arrive one per event
        if reply.thought_signature and not calls and index == 0:
            groups.append([{"text": "", "thoughtSignature": reply.thought_signature}])
        return groups, finish


def _prompt_usage(total: int, cached: int) -> dict[str, Any]:
    usage: dict[str, Any] = {"promptTokenCount": total,
                             "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total}]}
    if cached:
        usage.update(cachedContentTokenCount=cached, cacheTokensDetails=[{"modality": "TEXT", "tokenCount": cached}])
    return usage


def _merge(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The single generateContent response equivalent to a list of stream events."""
    if "candidates" not in events[-1]:
        return events[-1]
    parts: dict[int, list[dict[str, Any]]] = {}
    for event in events:
        for candidate in event["candidates"]:
            merged = parts.setdefault(candidate["index"], [])
            for part in candidate.get("content", {}).get("parts", []):
                if merged and set(part) == {"text"} and set(merged[-1]) == {"text"}:
                    merged[-1] = {"text": merged[-1]["text"] + part["text"]}
                else:
                    merged.append(part)
    candidates = []
    for candidate in events[-1]["candidates"]:
        whole = dict(candidate)
        found = parts.get(candidate["index"], [])
        if found:
            whole["content"] = {"parts": found, "role": "model"}
        candidates.append(whole)
    return {**events[-1], "candidates": candidates}


def _prompt(body: dict[str, Any], model: str, headers: Any) -> Prompt:
    """A generate request as script matchers see it; a user turn of function results only is ``tool``."""
    system = body.get("systemInstruction")
    turns = []
    for content in body["contents"]:
        parts = [p for p in content.get("parts") or [] if isinstance(p, dict)]
        role = content.get("role") or "user"
        if role == "user" and parts and all("functionResponse" in p for p in parts):
            role = "tool"
        turns.append((role, " ".join(part_text(p) for p in parts)))
    system_parts = system.get("parts") or [] if isinstance(system, dict) else []
    return Prompt(model=model, system=" ".join(part_text(p) for p in system_parts), turns=tuple(turns),
                  headers=dict(headers), body=body)


def _listing(key: str, items: list[Any], following: str) -> dict[str, Any]:
    """A List response as proto3 JSON writes it: empty fields left out (so an empty list is ``{}``)."""
    answer: dict[str, Any] = {key: items} if items else {}
    if following:
        answer["nextPageToken"] = following
    return answer


def _same_bytes(sent: Any, expected: str) -> bool:
    decoded = decode_bytes(expected)
    return sent == expected if decoded is None else decode_bytes(sent) == decoded
