"""A fake Gemini API on 127.0.0.1 speaking the real wire format, for offline tests and demos.

Routes: ``POST /{v1beta|v1}/models/{model}:generateContent | streamGenerateContent?alt=sse
| countTokens``, ``GET /{ver}/models[/{model}]``; anything else is a Google-shaped 404.
Requests are checked like the real server checks them (key, roles, thought
signatures of replayed function calls), answered from the script queue or by a
deterministic default, and recorded.
"""
from __future__ import annotations

import base64
import binascii
import itertools
import re
from typing import Any

import ujson
from aiohttp import web

from ._server import FakeServer
from .script import Reply, count_tokens, sample_args, split_text

API_VERSIONS = ("v1beta", "v1")
_STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                 404: "NOT_FOUND", 408: "DEADLINE_EXCEEDED", 429: "RESOURCE_EXHAUSTED",
                 500: "INTERNAL", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
_DEFAULT_MESSAGES = {429: "You exceeded your current quota, please check your plan and billing details.",
                     500: "An internal error has occurred. Please retry or report in "
                          "https://developers.generativeai.google/guide/troubleshooting",
                     503: "The model is overloaded. Please try again later.",
                     504: "Deadline expired before operation could complete."}
# Values the fake must not camelize: user data and schemas with free-form keys.
_OPAQUE = {"args", "response", "properties", "parametersJsonSchema", "responseJsonSchema"}


class FakeGemini(FakeServer):
    """Scriptable fake of ``generativelanguage.googleapis.com``.

    ``api_key`` is the only key accepted. With ``strict`` on, a replayed function
    call that lost its thought signature, or an unknown ``functionResponse.id``,
    is answered 400 as Gemini 3 does.
    """

    def __init__(self, *, api_key: str = "fake-key", strict: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.api_key = api_key
        self.strict = strict
        self._ids = itertools.count(1)
        #: functionCall id -> the thought signature the fake sent with it (or None).
        self.issued_calls: dict[str, str | None] = {}

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/{version}/models/{model_action}", self._generate)
        app.router.add_get("/{version}/models", self._list_models)
        app.router.add_get("/{version}/models/{model}", self._get_model)
        app.router.add_route("*", "/{tail:.*}", self._not_found)

    # --- handlers --------------------------------------------------------------------------

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        recorded = await self.record(request)
        version = request.match_info["version"]
        model, _, action = request.match_info["model_action"].partition(":")
        if version not in API_VERSIONS:
            return _not_found_response(request.path)
        denied = self._check_key(request)
        if denied is not None:
            return denied
        if not isinstance(recorded.body, dict):
            return error_response(400, "Invalid JSON payload received.")
        body = camelize(recorded.body)
        if action == "countTokens":
            return web.json_response({"totalTokens": _prompt_tokens(body),
                                      "promptTokensDetails": [{"modality": "TEXT",
                                                               "tokenCount": _prompt_tokens(body)}]})
        if action not in ("generateContent", "streamGenerateContent"):
            return _not_found_response(request.path)
        invalid = self._validate(body)
        if invalid is not None:
            return error_response(400, invalid)
        reply = self.next_reply() or self._default_reply(body)
        if not await self.delay_answer(reply):
            return error_response(503, "shutting down")
        if reply.status is not None:
            return error_response(reply.status, reply.message, reply.retry_delay)
        if reply.malformed:
            return web.Response(status=200, text='{"candidates": [{"content": ',
                                content_type="application/json")
        responses = self._render(reply, body, model)
        if action == "generateContent":
            return web.Response(status=200, text=ujson.dumps(_merge(responses), indent=2),
                                content_type="application/json", charset="UTF-8")
        if request.query.get("alt") != "sse":
            return error_response(400, "This fake only streams with alt=sse.")
        # Gemini frames events with CRLF and has no end marker: the body just ends.
        return await self.send_events(request, reply, responses,
                                      _error_body(500, _DEFAULT_MESSAGES[500], None), b"\r\n")

    async def _list_models(self, request: web.Request) -> web.Response:
        denied = self._check_key(request)
        if denied is not None:
            return denied
        return web.json_response({"models": [_model_info("gemini-test")]})

    async def _get_model(self, request: web.Request) -> web.Response:
        denied = self._check_key(request)
        if denied is not None:
            return denied
        return web.json_response(_model_info(request.match_info["model"]))

    async def _not_found(self, request: web.Request) -> web.Response:
        await self.record(request)
        return _not_found_response(request.path)

    # --- checks ----------------------------------------------------------------------------

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

    def _validate(self, body: dict[str, Any]) -> str | None:
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            return "* GenerateContentRequest.contents: contents is not specified"
        for index, content in enumerate(contents):
            role = content.get("role", "user") if isinstance(content, dict) else None
            if role not in ("user", "model"):
                return f"Please use a valid role: user, model. (contents[{index}].role={role!r})"
            parts = content.get("parts")
            if not isinstance(parts, list) or not parts:
                return f"* GenerateContentRequest.contents[{index}].parts: contents.parts must not be empty."
        thinking = (body.get("generationConfig") or {}).get("thinkingConfig") or {}
        if "thinkingBudget" in thinking and "thinkingLevel" in thinking:
            return "thinking_budget and thinking_level are not supported together."
        if self.strict:
            return self._check_function_turns(contents)
        return None

    def _check_function_turns(self, contents: list[dict[str, Any]]) -> str | None:
        for content in contents:
            for part in content.get("parts", []):
                call = part.get("functionCall") if isinstance(part, dict) else None
                if content.get("role") == "model" and call and call.get("id") in self.issued_calls:
                    expected = self.issued_calls[call["id"]]
                    # bytes fields travel as base64 in either alphabet, padded or not: clients
                    # (google-genai) re-encode what they received, so compare what it decodes to
                    if expected is not None and not _same_bytes(part.get("thoughtSignature"), expected):
                        return ("Function call is missing a thought_signature in functionCall parts. "
                                "This is required for tools to work correctly.")
                answer = part.get("functionResponse") if isinstance(part, dict) else None
                if answer and answer.get("id") and answer["id"] not in self.issued_calls:
                    return "functionResponse.id does not match functionCall.id"
        return None

    # --- answers ---------------------------------------------------------------------------

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

    def _render(self, reply: Reply, body: dict[str, Any], model: str) -> list[dict[str, Any]]:
        """The reply as the list of stream events (one event when it is a single response)."""
        response_id = f"fake-{next(self._ids)}"
        prompt = _prompt_tokens(body)
        common = {"modelVersion": model, "responseId": response_id}
        if reply.block_reason:
            return [{"promptFeedback": {"blockReason": reply.block_reason},
                     "usageMetadata": {"promptTokenCount": prompt, "totalTokenCount": prompt},
                     **common}]
        part_events: list[list[dict[str, Any]]] = [[{"text": t}] for t in split_text(reply.text, reply.chunks)]
        for index, call in enumerate(reply.function_calls):
            call_id = f"call_{next(self._ids)}"
            part: dict[str, Any] = {"functionCall": {"id": call_id, "name": call["name"],
                                                     "args": call.get("args") or {}}}
            signature = reply.thought_signature if index == 0 else None
            if signature:
                part["thoughtSignature"] = signature
            self.issued_calls[call_id] = signature
            part_events.append([part])  # parallel calls arrive one per event
        if reply.thought_signature and not reply.function_calls:
            part_events.append([{"text": "", "thoughtSignature": reply.thought_signature}])
        output = count_tokens(reply.text) + sum(count_tokens(ujson.dumps(c)) for c in reply.function_calls)
        events: list[dict[str, Any]] = []
        emitted = 0
        for index, parts in enumerate(part_events or [[]]):
            emitted += sum(count_tokens(p.get("text", "")) for p in parts)
            last = index == max(len(part_events) - 1, 0)
            candidate: dict[str, Any] = {"content": {"role": "model"}}
            if parts:
                candidate["content"]["parts"] = parts
            usage = {"promptTokenCount": prompt, "totalTokenCount": prompt}
            if last:
                candidate["finishReason"] = reply.finish_reason
                usage = {"promptTokenCount": prompt, "candidatesTokenCount": output,
                         "totalTokenCount": prompt + output + reply.thoughts_tokens}
                if reply.thoughts_tokens:
                    usage["thoughtsTokenCount"] = reply.thoughts_tokens
            elif emitted:
                usage = {"promptTokenCount": prompt, "candidatesTokenCount": emitted,
                         "totalTokenCount": prompt + emitted}
            candidate["index"] = 0
            events.append({"candidates": [candidate], "usageMetadata": usage, **common})
        return events


def _merge(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The single generateContent response equivalent to a list of stream events."""
    if "candidates" not in events[-1]:
        return events[-1]
    parts: list[dict[str, Any]] = []
    for event in events:
        for part in event["candidates"][0]["content"].get("parts", []):
            if parts and set(part) == {"text"} and set(parts[-1]) == {"text"}:
                parts[-1] = {"text": parts[-1]["text"] + part["text"]}
            else:
                parts.append(part)
    merged = dict(events[-1])
    candidate = dict(merged["candidates"][0])
    candidate["content"] = {"role": "model", **({"parts": parts} if parts else {})}
    merged["candidates"] = [candidate]
    return merged


def _prompt_tokens(body: dict[str, Any]) -> int:
    texts = [p.get("text", "") for c in body.get("contents") or [] if isinstance(c, dict)
             for p in c.get("parts") or [] if isinstance(p, dict)]
    system = body.get("systemInstruction") or {}
    texts += [p.get("text", "") for p in system.get("parts") or [] if isinstance(p, dict)]
    return count_tokens("".join(str(t) for t in texts)) or 1


def _error_body(status: int, message: str, retry_delay: float | None,
                reason: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": status, "message": message or _DEFAULT_MESSAGES.get(status, "error"),
                             "status": _STATUS_NAMES.get(status, "UNKNOWN")}
    details: list[dict[str, Any]] = []
    if reason:
        details.append({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
                        "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"}})
    if retry_delay is not None:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo",
                        "retryDelay": f"{retry_delay:g}s"})
    if details:
        error["details"] = details
    return {"error": error}


def error_response(status: int, message: str = "", retry_delay: float | None = None,
                   reason: str | None = None) -> web.Response:
    """A Google-shaped error answer."""
    return web.Response(status=status, text=ujson.dumps(_error_body(status, message, retry_delay, reason),
                                                        indent=2),
                        content_type="application/json", charset="UTF-8")


def _not_found_response(path: str) -> web.Response:
    return error_response(404, f"The requested URL {path} was not found on this server.")


def _model_info(model: str) -> dict[str, Any]:
    return {"name": f"models/{model}", "displayName": model, "version": "fake",
            "inputTokenLimit": 1048576, "outputTokenLimit": 65536,
            "supportedGenerationMethods": ["generateContent", "countTokens"]}


def decode_bytes(value: Any) -> bytes | None:
    """A proto3 JSON ``bytes`` value: standard or URL-safe base64, padded or not; None if not one."""
    if not isinstance(value, str):
        return None
    text = value.strip().rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _same_bytes(sent: Any, expected: str) -> bool:
    decoded = decode_bytes(expected)
    return sent == expected if decoded is None else decode_bytes(sent) == decoded


_SNAKE = re.compile(r"_([a-z])")


def camelize(value: Any) -> Any:
    """snake_case keys to camelCase, as Google's JSON front end accepts both."""
    if isinstance(value, list):
        return [camelize(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        name = _SNAKE.sub(lambda m: m.group(1).upper(), key) if "_" in key else key
        out[name] = item if name in _OPAQUE else camelize(item)
    return out

