"""A fake OpenAI-compatible server (``POST /v1/chat/completions``) for the second provider's tests.

It streams like llama.cpp / vLLM do: LF-framed ``data:`` events, tool-call
arguments in fragments keyed by index, an optional usage chunk, ``data: [DONE]``.
"""
from __future__ import annotations

import itertools
import time
from typing import Any

import ujson
from aiohttp import web

from ._server import FakeServer
from .script import Reply, count_tokens, sample_args, split_text

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 429: "rate_limit_error"}


class FakeOpenAI(FakeServer):
    """Scriptable Chat Completions server; with ``api_key`` set, requires ``Bearer <api_key>``."""

    def __init__(self, *, api_key: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.api_key = api_key
        self._ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        """What to configure as the provider's base URL (it ends in ``/v1``)."""
        return f"{self.url}/v1"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._complete)

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        recorded = await self.record(request)
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return error_response(401, "Incorrect API key provided.")
        body = recorded.body
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
            return error_response(400, "'messages' is a required property")
        reply = self.next_reply() or _default_reply(body)
        if not await self.delay_answer(reply):
            return error_response(503, "shutting down")
        if reply.status is not None:
            return error_response(reply.status, reply.message, reply.retry_delay)
        if reply.malformed:
            return web.Response(status=200, text='{"choices": [', content_type="application/json")
        completion_id = f"chatcmpl-{next(self._ids)}"
        calls: list[dict[str, Any]] = [{"id": f"call_{next(self._ids)}", "type": "function",
                  "function": {"name": c["name"], "arguments": ujson.dumps(c.get("args") or {})}}
                 for c in reply.function_calls]
        usage = _usage(body, reply)
        finish = "tool_calls" if calls else {"STOP": "stop", "MAX_TOKENS": "length",
                                             "SAFETY": "content_filter"}.get(reply.finish_reason, "stop")
        common = {"id": completion_id, "created": int(time.time()), "model": body.get("model", "")}
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": reply.text if not calls or reply.text else None}
            if calls:
                message["tool_calls"] = calls
            return web.json_response({**common, "object": "chat.completion", "usage": usage,
                                      "choices": [{"index": 0, "message": message,
                                                   "finish_reason": finish}]})
        chunks: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        chunks += [{"content": piece} for piece in split_text(reply.text, reply.chunks)]
        for index, call in enumerate(calls):
            arguments = call["function"]["arguments"]
            half = len(arguments) // 2
            chunks.append({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                           "function": {"name": call["function"]["name"],
                                                        "arguments": arguments[:half]}}]})
            chunks.append({"tool_calls": [{"index": index, "function": {"arguments": arguments[half:]}}]})
        events = [{**common, "object": "chat.completion.chunk",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": None}]} for delta in chunks]
        events.append({**common, "object": "chat.completion.chunk",
                       "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({**common, "object": "chat.completion.chunk", "choices": [], "usage": usage})
        error = {"error": {"message": "internal error", "type": "server_error", "code": 500}}
        return await self.send_events(request, reply, events, error, b"\n", done=b"data: [DONE]\n\n")


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


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(item.get("text", "") for item in content if isinstance(item, dict))
    return content if isinstance(content, str) else ""


def _usage(body: dict[str, Any], reply: Reply) -> dict[str, int]:
    prompt = count_tokens("".join(_text(m.get("content")) for m in body["messages"])) or 1
    output = count_tokens(reply.text) + sum(count_tokens(ujson.dumps(c)) for c in reply.function_calls)
    return {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output}


def error_response(status: int, message: str = "", retry_delay: float | None = None) -> web.Response:
    """An OpenAI-shaped error; a retry delay travels in ``Retry-After`` as OpenAI sends it."""
    headers = {"Retry-After": f"{retry_delay:g}"} if retry_delay is not None else {}
    body = {"error": {"message": message or f"HTTP {status}", "type": _ERROR_TYPES.get(status, "server_error"),
                      "param": None, "code": None}}
    return web.json_response(body, status=status, headers=headers)
