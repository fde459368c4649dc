"""The Gemini API (native REST): generateContent, streamGenerateContent (SSE), countTokens.

Wire format: docs/reference llm-wire-formats (§2 request, §3 response, §4 stream).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .config import LLMConfig
from .errors import ErrorKind, LLMError, error_in_event
from .http import HttpSession
from .provider import Provider
from .schema import gemini_declarations
from .types import (
    Candidate,
    ChunkSink,
    Completion,
    EmbeddingRequest,
    Embeddings,
    ModelInfo,
    ModelRequest,
    Usage,
    token_count,
)

if TYPE_CHECKING:
    from .prefix_cache import PrefixCache

#: Finish reasons meaning the output was withheld rather than finished: answered as ``safety``.
BLOCKING_FINISH_REASONS = frozenset({
    "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION"})


class GeminiProvider(Provider):
    """Google's Gemini API over the kernel's pooled HTTP session."""

    name = "gemini"

    def __init__(self, config: LLMConfig, session: HttpSession,
                 prefix_cache: PrefixCache | None = None) -> None:
        super().__init__(config, session)
        self.prefix_cache = prefix_cache
        # The config is frozen: every call's URL (by model and action) and headers are the same
        # strings, built once instead of on every THINK.
        self._urls: dict[tuple[str | None, str], str] = {}
        self._header_map = request_headers(config)

    def check_functions(self, functions: Sequence[dict[str, Any]]) -> None:
        gemini_declarations(functions)

    def _url(self, model: str | None, action: str) -> str:
        url = self._urls.get((model, action))
        if url is None:
            if len(self._urls) >= _MAX_URLS:
                self._urls.clear()  # models a call may name are a handful in practice
            name = (model or self.config.model).removeprefix("models/")
            url = self._urls[model, action] = (f"{api_root(self.config)}/models/"
                                               f"{quote(name, safe='.-_')}:{action}")
        return url

    def _headers(self) -> dict[str, str]:
        return self._header_map

    async def _generate_once(self, request: ModelRequest, on_chunk: ChunkSink | None) -> Completion:
        body = build_body(request)
        if self.prefix_cache is None:
            return await self._send(request, body, on_chunk)
        return await self.prefix_cache.generate(request.model or self.config.model, body,
                                                lambda sent: self._send(request, sent, on_chunk))

    async def _send(self, request: ModelRequest, body: dict[str, Any],
                    on_chunk: ChunkSink | None) -> Completion:
        turn = TurnAssembler(request.model or self.config.model)
        if on_chunk is None:
            turn.feed(await self.http.post_json(self._url(request.model, "generateContent"),
                                                body, self._headers()))
            return turn.finish(streamed=False)
        url = self._url(request.model, "streamGenerateContent") + "?alt=sse"
        async for event in self.http.post_events(url, body, self._headers()):
            for delta in turn.feed(event):
                await on_chunk(delta)
        return turn.finish(streamed=True)

    async def _count_once(self, request: ModelRequest) -> int:
        model = request.model or self.config.model
        body: dict[str, Any] = {"contents": request.contents}
        if request.system or request.functions:
            # Only the full form counts the system instruction and the function declarations.
            full = build_body(request)
            body = {"generateContentRequest": {
                "model": _resource(model),
                **{key: full[key] for key in _COUNTED if key in full}}}
        answer = await self.http.post_json(self._url(model, "countTokens"), body, self._headers())
        # proto3 JSON leaves a zero out: an empty answer counts nothing.
        return _count(answer.get("totalTokens", 0), "totalTokens")

    async def _embed_once(self, request: EmbeddingRequest) -> Embeddings:
        if len(request.texts) == 1:
            answer = await self.http.post_json(self._url(request.model, "embedContent"),
                                               _embed_body(request, request.texts[0]),
                                               self._headers())
            vectors = [_vector(answer.get("embedding"))]
        else:
            body = {"requests": [_embed_body(request, text) for text in request.texts]}
            answer = await self.http.post_json(self._url(request.model, "batchEmbedContents"),
                                               body, self._headers())
            listed = answer.get("embeddings")
            if not isinstance(listed, list) or len(listed) != len(request.texts):
                raise LLMError(ErrorKind.UNAVAILABLE, f"gemini: asked for {len(request.texts)} "
                               f"embeddings, the answer has {_length(listed)}", retryable=True)
            vectors = [_vector(item) for item in listed]
        # The Gemini API reports an embedding's input tokens only in some versions.
        usage = answer.get("usageMetadata")
        tokens = usage.get("promptTokenCount") if isinstance(usage, dict) else None
        return Embeddings(vectors=vectors, model=request.model.removeprefix("models/"),
                          tokens=None if tokens is None else _count(tokens, "promptTokenCount"))

    async def _list_models_once(self) -> list[ModelInfo]:
        url = f"{self.config.base_url}/{self.config.api_version}/models?pageSize={_PAGE_SIZE}"
        models: list[ModelInfo] = []
        token: str | None = None
        for _ in range(_MAX_PAGES):
            page = await self.http.send_json("GET", url + (f"&pageToken={quote(token)}" if token else ""),
                                              None, self._headers())
            models += [_model_info(raw) for raw in page.get("models") or ()
                       if isinstance(raw, dict) and raw.get("name")]
            token = page.get("nextPageToken") or None
            if not isinstance(token, str):
                return models
        raise LLMError(ErrorKind.UNAVAILABLE, f"gemini: the model list did not end after "
                       f"{_MAX_PAGES} pages")


def api_root(config: LLMConfig) -> str:
    """Where the API's resources live: ``{base_url}/{api_version}``."""
    return f"{config.base_url}/{config.api_version}"


def request_headers(config: LLMConfig) -> dict[str, str]:
    """The key goes in a header only, never in a URL (URLs end up in logs)."""
    return {"Content-Type": "application/json", "x-goog-api-key": config.api_key or ""}


#: What countTokens counts of a GenerateContentRequest: the input (output settings count nothing).
_COUNTED = ("contents", "systemInstruction", "tools", "toolConfig")
#: Cached request URLs (models x actions) kept at most.
_MAX_URLS = 1024
#: models.list's largest page; a model list is a handful of pages at most.
_PAGE_SIZE = 1000
_MAX_PAGES = 50


def _resource(model: str) -> str:
    return model if model.startswith("models/") else f"models/{model}"


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise LLMError(ErrorKind.UNAVAILABLE, f"gemini: {what} in the answer is not a count: "
                       f"{value!r}", retryable=True)
    return value


def _length(value: Any) -> str:
    return str(len(value)) if isinstance(value, list) else "none"


def _embed_body(request: EmbeddingRequest, text: str) -> dict[str, Any]:
    """One EmbedContentRequest (batchEmbedContents takes a list of them)."""
    body: dict[str, Any] = {"model": _resource(request.model), "content": {"parts": [{"text": text}]}}
    if request.task_type is not None:
        body["taskType"] = request.task_type
    if request.dimensions is not None:
        body["outputDimensionality"] = request.dimensions
    return body


def _vector(embedding: Any) -> list[float]:
    values = embedding.get("values") if isinstance(embedding, dict) else None
    if not (isinstance(values, list) and values
            and all(type(v) is float or type(v) is int for v in values)):
        raise LLMError(ErrorKind.UNAVAILABLE, "gemini: an embedding in the answer has no numbers "
                       "in 'values'", retryable=True)
    return values


def _model_info(raw: dict[str, Any]) -> ModelInfo:
    name = str(raw.get("name") or "").removeprefix("models/")
    methods = raw.get("supportedGenerationMethods")
    return ModelInfo(name=name, display_name=str(raw.get("displayName") or name),
                     input_token_limit=_limit(raw.get("inputTokenLimit")),
                     output_token_limit=_limit(raw.get("outputTokenLimit")),
                     methods=tuple(m for m in methods if isinstance(m, str))
                     if isinstance(methods, list) else ())


def _limit(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def build_body(request: ModelRequest) -> dict[str, Any]:
    """A GenerateContentRequest in canonical camelCase."""
    body: dict[str, Any] = {"contents": request.contents}
    if request.system:
        body["systemInstruction"] = {"parts": [{"text": request.system}]}
    body["generationConfig"] = _generation_config(request)
    if request.safety:
        body["safetySettings"] = [{"category": category, "threshold": threshold}
                                  for category, threshold in request.safety]
    if request.functions:
        body["tools"] = [{"functionDeclarations": gemini_declarations(request.functions)}]
    if request.function_mode:
        calling: dict[str, Any] = {"mode": request.function_mode}
        if request.allowed_functions:
            calling["allowedFunctionNames"] = list(request.allowed_functions)
        body["toolConfig"] = {"functionCallingConfig": calling}
    return body


def _generation_config(request: ModelRequest) -> dict[str, Any]:
    opts = request.options
    config: dict[str, Any] = {}
    for key, value in (("temperature", opts.temperature), ("topP", opts.top_p),
                       ("topK", opts.top_k), ("maxOutputTokens", opts.max_output_tokens),
                       ("seed", opts.seed), ("responseMimeType", opts.response_mime_type),
                       ("candidateCount", opts.candidates)):
        if value is not None:
            config[key] = value
    if opts.stop:
        config["stopSequences"] = list(opts.stop)
    if opts.response_schema is not None:
        config["responseMimeType"] = "application/json"
        # responseJsonSchema takes JSON Schema as agents write it; never sent with responseSchema.
        config["responseJsonSchema"] = opts.response_schema
    thinking: dict[str, Any] = {}
    # Gemini 3 rejects a request carrying both; the request parser already refused that.
    if opts.thinking_budget is not None:
        thinking["thinkingBudget"] = opts.thinking_budget
    elif opts.thinking_level is not None:
        thinking["thinkingLevel"] = opts.thinking_level.upper()
    if opts.include_thoughts:
        thinking["includeThoughts"] = True
    if thinking:
        config["thinkingConfig"] = thinking
    return config


class TurnAssembler:
    """Builds the model's turn from a response or a stream of chunks, yielding deltas as it goes.

    Every candidate is kept (``candidateCount``); only the first one's deltas are yielded,
    as only an unstreamed call may ask for more than one.
    """

    def __init__(self, model: str) -> None:
        self.model = model
        self.candidates: dict[int, _CandidateTurn] = {}
        self.usage: dict[str, Any] = {}
        #: ``promptFeedback`` of a prompt Gemini refused to answer.
        self.prompt_blocked: dict[str, Any] | None = None

    def feed(self, response: dict[str, Any]) -> list[dict[str, Any]]:
        """Take one GenerateContentResponse; return the deltas it adds to the first candidate."""
        if "error" in response:  # answers without one (nearly all) skip the call
            error = error_in_event(response, "gemini")
            if error is not None:
                raise error
        feedback = response.get("promptFeedback")
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            self.prompt_blocked = feedback
        if isinstance(response.get("usageMetadata"), dict):
            self.usage = response["usageMetadata"]  # cumulative: the last one wins
        if response.get("modelVersion"):
            self.model = str(response["modelVersion"])
        deltas: list[dict[str, Any]] = []
        for position, candidate in enumerate(response.get("candidates") or []):
            if not isinstance(candidate, dict):
                continue
            # ``index`` is often omitted, in stream chunks above all: then it is the position.
            index = candidate.get("index")
            index = index if isinstance(index, int) and not isinstance(index, bool) else position
            turn = self.candidates.get(index)
            if turn is None:
                turn = self.candidates[index] = _CandidateTurn()
            found = turn.feed(candidate)
            if index == 0:
                deltas = found
        return deltas

    def finish(self, streamed: bool) -> Completion:
        thoughts = token_count(self.usage.get("thoughtsTokenCount"))
        usage = Usage.reported(prompt=self.usage.get("promptTokenCount"),
                               output=token_count(self.usage.get("candidatesTokenCount")) + thoughts,
                               total=self.usage.get("totalTokenCount"), thoughts=thoughts,
                               cached=self.usage.get("cachedContentTokenCount"))
        if self.prompt_blocked is not None:
            # An answer, not an error: the agent learns why and may rephrase; nothing to retry.
            safety = _safety(True, "prompt", self.prompt_blocked.get("blockReason"),
                             self.prompt_blocked.get("safetyRatings"))
            return Completion(text="", function_calls=[], finish_reason="safety", usage=usage,
                              model=self.model, turn={"role": "model", "parts": []}, safety=safety,
                              candidates=[Candidate("", [], "safety", safety)])
        if not self.candidates:
            raise LLMError(ErrorKind.UNAVAILABLE, "gemini: the answer had no candidates",
                           retryable=True)
        # map, not comprehensions: in Python 3.11 each comprehension is a call of its own,
        # on every answer.
        turns = list(map(self.candidates.__getitem__, sorted(self.candidates)))
        if turns[0].finish_reason is None and streamed:
            raise LLMError(ErrorKind.UNAVAILABLE, "gemini: the stream ended before finishReason",
                           retryable=True)
        candidates = list(map(_CandidateTurn.candidate, turns))
        first = candidates[0]
        # By position (text, function_calls, finish_reason, usage, model, turn, safety,
        # candidates): keywords to a class cost ~400 instructions each, on every answer.
        return Completion(first.text, first.function_calls, first.finish_reason, usage, self.model,
                          {"role": "model", "parts": turns[0].parts}, first.safety, candidates)


class _CandidateTurn:
    """One candidate's parts, finish reason and safety ratings, merged across stream chunks."""

    def __init__(self) -> None:
        self.parts: list[dict[str, Any]] = []
        self.finish_reason: str | None = None
        self.ratings: Any = None

    def feed(self, candidate: dict[str, Any]) -> list[dict[str, Any]]:
        if candidate.get("finishReason"):
            self.finish_reason = str(candidate["finishReason"])
        if candidate.get("safetyRatings"):
            self.ratings = candidate["safetyRatings"]
        deltas: list[dict[str, Any]] = []
        for part in (candidate.get("content") or {}).get("parts") or []:
            if not isinstance(part, dict):
                continue
            self._keep(part)
            if "functionCall" in part:
                deltas.append({"function_call": _function_call(part["functionCall"])})
            elif isinstance(part.get("text"), str) and part["text"] and not part.get("thought"):
                deltas.append({"text": part["text"]})
        return deltas

    def _keep(self, part: dict[str, Any]) -> None:
        # Plain text pieces of a stream merge; anything else (signatures, calls, thoughts)
        # is kept as its own part, verbatim.
        if self.parts and set(part) == {"text"} and set(self.parts[-1]) == {"text"}:
            self.parts[-1] = {"text": self.parts[-1]["text"] + part["text"]}
        else:
            self.parts.append(dict(part))

    def candidate(self) -> Candidate:
        reason = self.finish_reason or "STOP"
        blocked = reason in BLOCKING_FINISH_REASONS
        safety = (_safety(True, "answer", reason, self.ratings) if blocked
                  else _safety(False, None, None, self.ratings) if self.ratings else None)
        # One pass, and Candidate's fields by position: every answer passes here.
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for part in self.parts:
            text = part.get("text")
            if isinstance(text, str) and not part.get("thought"):
                texts.append(text)
            if "functionCall" in part:
                calls.append(_function_call(part["functionCall"]))
        return Candidate("".join(texts), calls, "safety" if blocked else reason.lower(), safety)


def _safety(blocked: bool, source: str | None, reason: Any, ratings: Any) -> dict[str, Any]:
    """An answer's ``safety``: whether it was withheld, by which check (``prompt`` or
    ``answer``) and why, with Gemini's ratings as it sent them."""
    out: dict[str, Any] = {"blocked": blocked}
    if source is not None:
        out["source"] = source
        out["reason"] = str(reason)
    if isinstance(ratings, list) and ratings:
        out["ratings"] = ratings
    return out


def _function_call(call: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": str(call.get("name", "")), "args": call.get("args") or {}}
    if call.get("id"):
        out["id"] = str(call["id"])
    return out
