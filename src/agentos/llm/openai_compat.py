"""OpenAI-compatible Chat Completions (Ollama, llama.cpp ``llama-server``, vLLM).

Turns stay in Gemini's Content shape inside the kernel; this module converts
them to ``messages`` on the way out and the answer back into a model Content.
Wire format: llm-wire-formats §8.
"""
from __future__ import annotations

from typing import Any

import ujson

from .errors import ErrorKind, LLMError, error_in_event
from .provider import Provider
from .schema import to_json_schema
from .types import (
    Candidate,
    ChunkSink,
    Completion,
    Content,
    EmbeddingRequest,
    Embeddings,
    ModelInfo,
    ModelRequest,
    Usage,
)

_FINISH = {"stop": "stop", "length": "max_tokens", "tool_calls": "stop", "function_call": "stop"}
_TOOL_CHOICE = {"AUTO": "auto", "ANY": "required", "NONE": "none"}


class OpenAICompatProvider(Provider):
    """``POST {base_url}/chat/completions``, streamed with ``stream_options.include_usage``."""

    name = "openai"

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        return headers

    async def _generate_once(self, request: ModelRequest, on_chunk: ChunkSink | None) -> Completion:
        body = build_body(request, request.model or self.config.model, stream=on_chunk is not None)
        url = f"{self.config.base_url}/chat/completions"
        assembler = ChoiceAssembler(request.model or self.config.model)
        if on_chunk is None:
            assembler.feed_message(await self.http.post_json(url, body, self._headers()))
            return assembler.finish(streamed=False)
        async for event in self.http.post_events(url, body, self._headers()):
            for delta in assembler.feed_chunk(event):
                await on_chunk(delta)
        completion = assembler.finish(streamed=True)
        # Tool-call arguments arrive in fragments; each call is surfaced once it is whole.
        for call in completion.function_calls:
            await on_chunk({"function_call": call})
        return completion

    async def _count_once(self, request: ModelRequest) -> int:
        # Chat Completions has no count endpoint, and a local tokenizer would only guess.
        raise LLMError(ErrorKind.UNSUPPORTED, "openai: an OpenAI-compatible server has no token "
                       "counting endpoint; THINK's answer reports the tokens it used",
                       reason="count_tokens")

    async def _embed_once(self, request: EmbeddingRequest) -> Embeddings:
        body: dict[str, Any] = {"model": request.model, "input": list(request.texts),
                                "encoding_format": "float"}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        answer = await self.http.post_json(f"{self.config.base_url}/embeddings", body,
                                           self._headers())
        data = answer.get("data")
        if not isinstance(data, list) or len(data) != len(request.texts):
            raise LLMError(ErrorKind.UNAVAILABLE, f"openai: asked for {len(request.texts)} "
                           "embeddings, the answer has "
                           f"{len(data) if isinstance(data, list) else 'none'}", retryable=True)
        # Each item says which input it embeds; servers need not keep the order.
        ordered = sorted(data, key=lambda item: item.get("index", 0) if isinstance(item, dict) else 0)
        usage = answer.get("usage")
        tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        return Embeddings(vectors=[_vector(item) for item in ordered],
                          model=str(answer.get("model") or request.model),
                          tokens=tokens if isinstance(tokens, int) and tokens >= 0 else None)

    async def _list_models_once(self) -> list[ModelInfo]:
        answer = await self.http.send_json("GET", f"{self.config.base_url}/models", None,
                                           self._headers())
        data = answer.get("data")
        # The list publishes ids only: no limits, no methods.
        return [ModelInfo(name=str(item["id"]), display_name=str(item["id"]))
                for item in data if isinstance(item, dict) and item.get("id")] \
            if isinstance(data, list) else []


def _detail(usage: dict[str, Any], group: str, key: str) -> Any:
    details = usage.get(group)
    return details.get(key) if isinstance(details, dict) else None


def _vector(item: Any) -> list[float]:
    values = item.get("embedding") if isinstance(item, dict) else None
    if not (isinstance(values, list) and values
            and all(type(v) is float or type(v) is int for v in values)):
        raise LLMError(ErrorKind.UNAVAILABLE, "openai: an embedding in the answer is not a list of "
                       "numbers (the kernel asks for encoding_format float)", retryable=True)
    return values


def build_body(request: ModelRequest, model: str, stream: bool) -> dict[str, Any]:
    """A Chat Completions request (snake_case throughout)."""
    body: dict[str, Any] = {"model": model, "messages": to_messages(request.contents, request.system)}
    opts = request.options
    for key, value in (("temperature", opts.temperature), ("top_p", opts.top_p),
                       ("top_k", opts.top_k), ("max_tokens", opts.max_output_tokens),
                       ("seed", opts.seed), ("n", opts.candidates)):
        if value is not None:
            body[key] = value
    if opts.stop:
        body["stop"] = list(opts.stop)
    if opts.thinking_level is not None:
        body["reasoning_effort"] = opts.thinking_level.lower()
    if opts.response_schema is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": {
            "name": "response", "schema": to_json_schema(opts.response_schema)}}
    elif opts.response_mime_type == "application/json":
        body["response_format"] = {"type": "json_object"}
    if request.functions:
        body["tools"] = [{"type": "function", "function": {
            key: to_json_schema(value) if key == "parameters" else value
            for key, value in f.items() if key in ("name", "description", "parameters")}}
            for f in request.functions]
    if request.function_mode:
        if request.function_mode == "ANY" and len(request.allowed_functions) == 1:
            body["tool_choice"] = {"type": "function",
                                   "function": {"name": request.allowed_functions[0]}}
        else:
            body["tool_choice"] = _TOOL_CHOICE.get(request.function_mode, "auto")
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def to_messages(contents: list[Content], system: str | None) -> list[dict[str, Any]]:
    """Gemini Contents as Chat Completions messages (tool results become ``role: tool``)."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for content in contents:
        parts = content.get("parts") or []
        if content.get("role") == "model":
            text = "".join(p["text"] for p in parts if "text" in p and not p.get("thought"))
            calls = [p["functionCall"] for p in parts if "functionCall" in p]
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                message["tool_calls"] = [
                    {"id": c.get("id") or f"call_{i}", "type": "function",
                     "function": {"name": c["name"], "arguments": ujson.dumps(c.get("args") or {})}}
                    for i, c in enumerate(calls)]
            messages.append(message)
            continue
        for index, part in enumerate(parts):
            if "functionResponse" in part:
                answer = part["functionResponse"]
                messages.append({"role": "tool", "tool_call_id": answer.get("id") or f"call_{index}",
                                 "content": ujson.dumps(answer.get("response"))})
        items: list[dict[str, Any]] = []
        for part in parts:
            if "text" in part:
                items.append({"type": "text", "text": part["text"]})
            elif "inlineData" in part:
                data = part["inlineData"]
                items.append({"type": "image_url", "image_url": {
                    "url": f"data:{data['mimeType']};base64,{data['data']}"}})
        if len(items) == 1 and items[0]["type"] == "text":
            messages.append({"role": "user", "content": items[0]["text"]})
        elif items:
            messages.append({"role": "user", "content": items})
    return messages


class ChoiceAssembler:
    """The choices of a completion (``n``) or the first of a chunk stream, as a Completion."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.text: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] = {}
        self.saw_choice = False
        #: The choices after the first (a call with ``n`` > 1), each assembled on its own.
        self.more: list[ChoiceAssembler] = []

    def feed_message(self, response: dict[str, Any]) -> None:
        self._common(response)
        message = (self._choice(response) or {}).get("message") or {}
        if isinstance(message.get("content"), str):
            self.text.append(message["content"])
        for index, call in enumerate(message.get("tool_calls") or []):
            function = call.get("function") or {}
            self.calls[index] = {"id": call.get("id"), "name": function.get("name", ""),
                                 "arguments": function.get("arguments") or ""}
        for choice in (response.get("choices") or [])[1:]:
            other = ChoiceAssembler(self.model)
            other.feed_message({"choices": [choice]})
            self.more.append(other)

    def feed_chunk(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        self._common(chunk)
        delta = (self._choice(chunk) or {}).get("delta") or {}
        for fragment in delta.get("tool_calls") or []:
            slot = self.calls.setdefault(int(fragment.get("index", len(self.calls))),
                                         {"id": None, "name": "", "arguments": ""})
            function = fragment.get("function") or {}
            if fragment.get("id"):
                slot["id"] = fragment["id"]
            if function.get("name"):
                slot["name"] = function["name"]
            slot["arguments"] += function.get("arguments") or ""
        piece = delta.get("content")
        if isinstance(piece, str) and piece:
            self.text.append(piece)
            return [{"text": piece}]
        return []

    def _common(self, response: dict[str, Any]) -> None:
        error = error_in_event(response, "openai")
        if error is not None:
            raise error
        if isinstance(response.get("usage"), dict):
            self.usage = response["usage"]
        if response.get("model"):
            self.model = str(response["model"])

    def _choice(self, response: dict[str, Any]) -> dict[str, Any] | None:
        choices = response.get("choices") or []  # vLLM may send null
        if not choices:
            return None
        self.saw_choice = True
        choice = choices[0]
        if choice.get("finish_reason"):
            self.finish_reason = str(choice["finish_reason"])
        return choice

    def finish(self, streamed: bool) -> Completion:
        if not self.saw_choice:
            raise LLMError(ErrorKind.UNAVAILABLE, "openai: the answer had no choices", retryable=True)
        if self.finish_reason is None and streamed:
            raise LLMError(ErrorKind.UNAVAILABLE, "openai: the stream ended before finish_reason",
                           retryable=True)
        first = self.candidate()
        parts: list[dict[str, Any]] = [{"text": first.text}] if first.text else []
        parts += [{"functionCall": c} for c in first.function_calls]
        # Servers without these details (most local ones) send null or nothing.
        reasoning = _detail(self.usage, "completion_tokens_details", "reasoning_tokens")
        cached = _detail(self.usage, "prompt_tokens_details", "cached_tokens")
        return Completion(
            text=first.text, function_calls=first.function_calls,
            finish_reason=first.finish_reason, safety=first.safety,
            candidates=[first, *(other.candidate() for other in self.more)],
            # completion_tokens includes the reasoning tokens.
            usage=Usage.reported(prompt=self.usage.get("prompt_tokens"),
                                 output=self.usage.get("completion_tokens"),
                                 total=self.usage.get("total_tokens"), thoughts=reasoning,
                                 cached=cached),
            model=self.model, turn={"role": "model", "parts": parts})

    def candidate(self) -> Candidate:
        """This choice; one a content filter withheld is answered as ``safety``, not an error."""
        reason = self.finish_reason or "stop"
        filtered = reason == "content_filter"
        return Candidate(
            text="".join(self.text),
            function_calls=[self._call(self.calls[i]) for i in sorted(self.calls)],
            finish_reason="safety" if filtered else _FINISH.get(reason, reason),
            safety={"blocked": True, "source": "answer", "reason": reason} if filtered else None)

    @staticmethod
    def _call(raw: dict[str, Any]) -> dict[str, Any]:
        try:
            args = ujson.loads(raw["arguments"]) if raw["arguments"].strip() else {}
        except ValueError:
            raise LLMError(ErrorKind.INVALID_REQUEST, f"openai: the model produced arguments for "
                           f"{raw['name']!r} that are not JSON: {raw['arguments'][:200]!r}",
                           reason="malformed_function_call") from None
        call: dict[str, Any] = {"name": raw["name"], "args": args if isinstance(args, dict) else
                                {"value": args}}
        if raw.get("id"):
            call["id"] = raw["id"]
        return call
