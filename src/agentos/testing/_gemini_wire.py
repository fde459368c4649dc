"""Pieces of the Gemini wire format the fake shares between its routes: errors, the token rule,
request checks, model records, pagination and time stamps."""
from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from typing import Any

import ujson
from aiohttp import web

from .script import HARM_CATEGORIES, count_tokens

_STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                 404: "NOT_FOUND", 408: "DEADLINE_EXCEEDED", 429: "RESOURCE_EXHAUSTED",
                 500: "INTERNAL", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
DEFAULT_MESSAGES = {400: "Request contains an invalid argument.",
                    401: "Request had invalid authentication credentials.",
                    403: "The caller does not have permission",
                    404: "Requested entity was not found.",
                    429: "You exceeded your current quota, please check your plan and billing details.",
                    500: "An internal error has occurred. Please retry or report in "
                         "https://developers.generativeai.google/guide/troubleshooting",
                    503: "The model is overloaded. Please try again later.",
                    504: "Deadline expired before operation could complete."}
THRESHOLDS = ("HARM_BLOCK_THRESHOLD_UNSPECIFIED", "BLOCK_LOW_AND_ABOVE", "BLOCK_MEDIUM_AND_ABOVE",
              "BLOCK_ONLY_HIGH", "BLOCK_NONE", "OFF")
TASK_TYPES = ("TASK_TYPE_UNSPECIFIED", "RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY",
              "CLASSIFICATION", "CLUSTERING", "QUESTION_ANSWERING", "FACT_VERIFICATION", "CODE_RETRIEVAL_QUERY")
MAX_CANDIDATES = 8
MAX_STOP_SEQUENCES = 5
# Values the fake must not camelize: user data and schemas with free-form keys.
_OPAQUE = {"args", "response", "properties", "parametersJsonSchema", "responseJsonSchema"}


class WireError(Exception):
    """A request the real API refuses: raised deep in a check, answered by the route."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field

    def response(self) -> web.Response:
        details = None
        if self.field is not None:
            details = [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                        "fieldViolations": [{"field": self.field, "description": self.message}]}]
        return error_response(self.status, self.message, details=details)


def invalid_enum(field: str, enum: str, value: Any, version: str) -> WireError:
    """The proto3 JSON parser's answer to an enum value it does not know."""
    return WireError(400, f"Invalid value at '{field}' (type.googleapis.com/google.ai.generativelanguage."
                          f"{version}.{enum}), {ujson.dumps(value)}", field)


# --- errors ----------------------------------------------------------------------------------

def error_body(status: int, message: str, retry_delay: float | None = None, reason: str | None = None,
               details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": status, "message": message or DEFAULT_MESSAGES.get(status, "error"),
                             "status": _STATUS_NAMES.get(status, "UNKNOWN")}
    details = list(details or [])
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
                   reason: str | None = None, details: list[dict[str, Any]] | None = None) -> web.Response:
    """A Google-shaped error answer."""
    return json_response(error_body(status, message, retry_delay, reason, details), status)


def json_response(body: Any, status: int = 200) -> web.Response:
    """JSON as Google sends it: pretty-printed, UTF-8."""
    return web.Response(status=status, text=ujson.dumps(body, indent=2), content_type="application/json",
                        charset="UTF-8")


def not_found_response(path: str) -> web.Response:
    return error_response(404, f"The requested URL {path} was not found on this server.")


# --- the token rule ----------------------------------------------------------------------------

def part_text(part: Any) -> str:
    """What one part contributes to a count: its text, or a call's/result's name and compact JSON."""
    if not isinstance(part, dict):
        return ""
    if isinstance(part.get("text"), str):
        return str(part["text"])
    for key, payload in (("functionCall", "args"), ("functionResponse", "response")):
        item = part.get(key)
        if isinstance(item, dict):
            return str(item.get("name", "")) + ujson.dumps(item.get(payload) or {}, sort_keys=True)
    return ""


def prompt_text(body: dict[str, Any]) -> str:
    """The text the token rule counts in a request: contents, then systemInstruction, then tools."""
    pieces = [part_text(p) for c in body.get("contents") or [] if isinstance(c, dict)
              for p in c.get("parts") or []]
    system = body.get("systemInstruction")
    if isinstance(system, dict):
        pieces += [part_text(p) for p in system.get("parts") or []]
    pieces += [ujson.dumps(tool, sort_keys=True) for tool in body.get("tools") or []]
    return "".join(pieces)


def prompt_tokens(body: dict[str, Any]) -> int:
    """The fake's token count of a request (camelCase keys), never below 1."""
    media = sum(media_tokens(p) for c in body.get("contents") or [] if isinstance(c, dict)
                for p in c.get("parts") or [])
    return count_tokens(prompt_text(body)) + media or 1


#: Gemini bills an image (up to a 768x768 tile) and a PDF page 258 tokens each.
MEDIA_UNIT = 258


def media_tokens(part: Any) -> int:
    """What a media part counts: an image or a file reference ``MEDIA_UNIT``; a PDF
    ``MEDIA_UNIT`` per page (its ``/Type /Page`` objects); other inline data (audio, video)
    one token per 16 bytes, as a stand-in for Gemini's per-second rates."""
    if not isinstance(part, dict):
        return 0
    if isinstance(part.get("fileData"), dict):
        return MEDIA_UNIT
    inline = part.get("inlineData")
    if not isinstance(inline, dict):
        return 0
    mime = str(inline.get("mimeType", ""))
    data = decode_bytes(inline.get("data")) or b""
    if mime.startswith("image/"):
        return MEDIA_UNIT
    if mime == "application/pdf":
        return MEDIA_UNIT * max(1, len(re.findall(rb"/Type\s*/Page\b", data)))
    return -(-len(data) // 16)


# --- request checks ----------------------------------------------------------------------------

def check_contents(contents: Any, where: str = "GenerateContentRequest") -> None:
    if not isinstance(contents, list) or not contents:
        raise WireError(400, f"* {where}.contents: contents is not specified")
    for index, content in enumerate(contents):
        role = content.get("role", "user") if isinstance(content, dict) else None
        if role not in ("user", "model"):
            raise WireError(400, f"Please use a valid role: user, model. (contents[{index}].role={role!r})")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            raise WireError(400, f"* {where}.contents[{index}].parts: contents.parts must not be empty.")


def check_generation(body: dict[str, Any], version: str) -> None:
    """generationConfig and safetySettings as the real API checks them."""
    config = body.get("generationConfig") or {}
    thinking = config.get("thinkingConfig") or {}
    if "thinkingBudget" in thinking and "thinkingLevel" in thinking:
        raise WireError(400, "thinking_budget and thinking_level are not supported together.")
    count = config.get("candidateCount", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_CANDIDATES:
        raise WireError(400, f"* GenerateContentRequest.generation_config.candidate_count: must be between 1 "
                             f"and {MAX_CANDIDATES}, got {count!r}.", "generation_config.candidate_count")
    stops = config.get("stopSequences", [])
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise WireError(400, "* GenerateContentRequest.generation_config.stop_sequences: each stop sequence "
                             "must be a non-empty string.", "generation_config.stop_sequences")
    if len(stops) > MAX_STOP_SEQUENCES:
        raise WireError(400, f"* GenerateContentRequest.generation_config.stop_sequences: at most "
                             f"{MAX_STOP_SEQUENCES} stop sequences are allowed.", "generation_config.stop_sequences")
    settings = body.get("safetySettings") or []
    if not isinstance(settings, list):
        raise WireError(400, "Invalid JSON payload received. Proto field is not repeating, cannot start list.")
    seen: set[str] = set()
    for index, setting in enumerate(settings):
        setting = setting if isinstance(setting, dict) else {}
        category, threshold = setting.get("category"), setting.get("threshold")
        if category not in HARM_CATEGORIES:
            raise invalid_enum(f"safety_settings[{index}].category", "HarmCategory", category, version)
        if threshold not in THRESHOLDS:
            raise invalid_enum(f"safety_settings[{index}].threshold", "SafetySetting.HarmBlockThreshold",
                               threshold, version)
        if category in seen:
            raise WireError(400, f"* GenerateContentRequest.safety_settings[{index}]: duplicate category "
                                 f"{category}.", f"safety_settings[{index}].category")
        seen.add(category)


def stop_cut(text: str, stops: list[str]) -> int | None:
    """Where the first stop sequence starts in ``text``, if one occurs."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


# --- models ------------------------------------------------------------------------------------

GENERATION_METHODS = ["generateContent", "countTokens", "createCachedContent", "batchGenerateContent"]
EMBEDDING_METHODS = ["embedContent", "countTextTokens", "countTokens", "asyncBatchEmbedContent"]
#: Which supportedGenerationMethods entry allows each action of ``models/{m}:{action}``.
ACTION_METHODS = {"generateContent": "generateContent", "streamGenerateContent": "generateContent",
                  "countTokens": "countTokens", "embedContent": "embedContent",
                  "batchEmbedContents": "embedContent"}
#: Embedding size of the fake's embedding models (gemini-embedding-001's default and maximum).
EMBEDDING_SIZE = 3072


def model_info(model: str | dict[str, Any]) -> dict[str, Any]:
    """A Model record: an id (or partial record) completed with realistic fields."""
    given = {"name": model} if isinstance(model, str) else dict(model)
    name = str(given.get("name") or "")
    if not name:
        raise ValueError("a model needs a name")
    short = name.removeprefix("models/")
    embedding = "embedding" in short
    info: dict[str, Any] = {
        "name": f"models/{short}", "version": "001",
        "displayName": " ".join(w.capitalize() for w in short.replace("-", " ").split()),
        "description": f"Fake {'embedding' if embedding else 'generative'} model {short}.",
        "inputTokenLimit": 2048 if embedding else 1048576, "outputTokenLimit": 1 if embedding else 65536,
        "supportedGenerationMethods": list(EMBEDDING_METHODS if embedding else GENERATION_METHODS)}
    if not embedding:
        info.update(temperature=1, topP=0.95, topK=64, maxTemperature=2, thinking=True)
    info.update({k: v for k, v in given.items() if k != "name"})
    return info


DEFAULT_MODELS = ("gemini-test", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.5-pro",
                  "gemini-3.5-flash", "gemini-embedding-001")


# --- pagination and time -----------------------------------------------------------------------

def page(items: list[Any], query: Any, *, default_size: int = 50, max_size: int = 1000) -> tuple[list[Any], str]:
    """One page of ``items`` for ``pageSize``/``pageToken``, and the token of the next ('' at the end)."""
    try:
        size = int(query.get("pageSize") or default_size)
    except ValueError:
        raise WireError(400, f"Invalid value at 'page_size' (TYPE_INT32), \"{query.get('pageSize')}\"",
                        "page_size") from None
    if size < 0:
        raise WireError(400, "* page_size: must not be negative.", "page_size")
    size = min(size or default_size, max_size)
    token = query.get("pageToken") or ""
    start = 0
    if token:
        decoded = decode_bytes(token)
        if decoded is None or not decoded.startswith(b"offset:") or not decoded[7:].isdigit():
            raise WireError(400, "Invalid page token.", "page_token")
        start = int(decoded[7:])
    end = start + size
    following = base64.urlsafe_b64encode(f"offset:{end}".encode()).decode() if end < len(items) else ""
    return items[start:end], following


def rfc3339(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_DURATION = re.compile(r"^(\d+(?:\.\d{1,9})?)s$")


def parse_duration(value: Any, field: str) -> float:
    """A protobuf Duration string such as ``"300s"`` or ``"1.5s"``."""
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise WireError(400, f"Invalid value at '{field}' (type.googleapis.com/google.protobuf.Duration), "
                             f"{ujson.dumps(value)}", field)
    return float(match.group(1))


def parse_time(value: Any, field: str) -> float:
    """An RFC 3339 timestamp (``Z`` or an offset)."""
    try:
        stamp = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        stamp = None
    if stamp is None or stamp.tzinfo is None:
        raise WireError(400, f"Invalid value at '{field}' (type.googleapis.com/google.protobuf.Timestamp), "
                             f"{ujson.dumps(value)}", field)
    return stamp.timestamp()


# --- encoding ----------------------------------------------------------------------------------

def decode_bytes(value: Any) -> bytes | None:
    """A proto3 JSON ``bytes`` value: standard or URL-safe base64, padded or not; None if not one."""
    if not isinstance(value, str):
        return None
    text = value.strip().rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


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
