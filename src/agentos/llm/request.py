"""THINK payloads -> a validated request: the seed's plain text or the JSON form.

Every mistake is an ``InvalidArgument`` naming the field, so an agent learns
what to fix from the error alone.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidArgument
from ..protocol.function_calls import function_response_parts
from ..protocol.payload import decode_json
from ..protocol.requests import TRACEPARENT_PATTERN
from ..units import MAX_SECONDS
from .safety import SafetySettings, parse_safety
from .types import Content, GenerationOptions

#: Gemini's rule for function names (letters, digits, ``_ . : -``; at most 128).
_FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,127}\Z")
#: Standard or URL-safe base64, padded or not (what proto3 JSON accepts for bytes).
_BASE64 = re.compile(r"^[A-Za-z0-9+/_-]*={0,2}\Z")
_THINKING_LEVELS = ("minimal", "low", "medium", "high")
_FUNCTION_MODES = ("auto", "any", "none")
_ROLES = {"user": "user", "model": "model", "assistant": "model"}
#: Models one call may name: a primary and its fallbacks.
MAX_CHAIN = 8
#: Gemini's candidateCount tops out at 8.
MAX_CANDIDATES = 8
#: Gemini's stopSequences limit.
MAX_STOP = 5
FIELDS = ("prompt", "messages", "system", "temperature", "top_p", "top_k", "max_output_tokens",
          "stop", "seed", "thinking_budget", "thinking_level", "include_thoughts", "json",
          "response_schema", "images", "functions", "function_mode", "allowed_functions",
          "function_responses", "context", "stream", "model", "safety", "candidates", "timeout",
          "traceparent", "tools")
_TRACEPARENT = re.compile(TRACEPARENT_PATTERN)


@dataclass
class ThinkArgs:
    """A parsed THINK: the turns it adds, and how to call the model."""

    turns: list[Content]
    system: str | None = None
    options: GenerationOptions = field(default_factory=GenerationOptions)
    functions: tuple[dict[str, Any], ...] = ()
    function_mode: str | None = None
    allowed_functions: tuple[str, ...] = ()
    context: str | None = None
    stream: bool = False
    model: str | None = None
    #: The models to try after ``model``, in order, when it is rate limited, failing or too slow.
    fallbacks: tuple[str, ...] = ()
    safety: SafetySettings = ()
    #: Seconds the whole call may take (``llm.max_deadline`` at most); None is ``llm.deadline``.
    timeout: float | None = None
    #: The seed's plain-text form, answered as ``{content, tokens, error}``.
    plain: bool = False
    #: The caller's W3C trace context: the kernel's span of the call joins its trace.
    traceparent: str | None = None
    #: ``tools: "mcp"``: the kernel offers the agent's MCP tools and runs the tool loop (mcp/routing.py).
    mcp_tools: bool = False


def parse_think(payload: bytes) -> ThinkArgs:
    """A JSON object payload is the JSON form; anything else is a plain-text prompt."""
    data = bytes(payload)
    try:
        # Strict JSON (no NaN or Infinity); anything else is the plain-text form.
        value = decode_json(data) if data.lstrip().startswith(b"{") else None
    except ValueError as exc:
        # An object only strictness refuses (NaN, a lone surrogate, deep nesting) was meant as
        # the JSON form: refused, not sent to the model (and billed) as a prompt.
        if _lenient_object(data):
            raise InvalidArgument(f"THINK: the payload is not strict JSON ({exc})") from None
        value = None
    if isinstance(value, dict):
        return parse_json(value)
    text = data.decode("utf-8", errors="replace").strip()
    if not text:
        raise InvalidArgument("THINK needs a prompt: send text, or JSON with 'prompt' or 'messages'")
    return ThinkArgs(turns=[{"role": "user", "parts": [{"text": text}]}], plain=True)


def _lenient_object(data: bytes) -> bool:
    """Whether ``data`` is a JSON object to a lenient reader (Python's ``json``)."""
    try:
        return isinstance(json.loads(data), dict)
    except RecursionError:
        return True
    except ValueError:
        return False


_FIELDS = frozenset(FIELDS)
_OPTION_FIELDS = frozenset(("temperature", "top_p", "top_k", "max_output_tokens", "stop", "seed",
                            "thinking_budget", "thinking_level", "include_thoughts", "json",
                            "response_schema", "candidates"))
_DEFAULT_OPTIONS = GenerationOptions()


def parse_json(args: dict[str, Any]) -> ThinkArgs:
    if len(args) == 1 and type(args.get("prompt")) is str:
        # What ``think("...")`` sends, most calls: the checks below would all pass on it.
        return ThinkArgs(turns=[{"role": "user", "parts": [{"text": args["prompt"]}]}],
                         options=_DEFAULT_OPTIONS)
    unknown = sorted(args.keys() - _FIELDS)
    if unknown:
        raise InvalidArgument(f"THINK: unknown fields {unknown}; known: {', '.join(FIELDS)}")
    system = _opt_str(args, "system")
    turns, message_system = _messages(args.get("messages"))
    if message_system:
        system = "\n\n".join(s for s in (system, message_system) if s)
    last: list[dict[str, Any]] = function_response_parts(args.get("function_responses"))
    prompt = _opt_str(args, "prompt")
    if prompt is not None:
        last.append({"text": prompt})
    last += _images(args.get("images"))
    if last:
        turns.append({"role": "user", "parts": last})
    if not turns:
        raise InvalidArgument("THINK needs 'prompt', 'messages' or 'function_responses'")
    if turns[-1]["role"] != "user":
        raise InvalidArgument("THINK: the conversation must end with a user turn "
                              "(add 'prompt' or 'function_responses')")
    mode = _opt_str(args, "function_mode")
    if mode is not None and mode.lower() not in _FUNCTION_MODES:
        raise InvalidArgument(f"THINK: function_mode must be one of {_FUNCTION_MODES}")
    allowed = args.get("allowed_functions") or []
    if not (isinstance(allowed, list) and all(isinstance(n, str) for n in allowed)):
        raise InvalidArgument("THINK: allowed_functions must be a list of function names")
    # Most calls set no option: skip their validation and share one default.
    options = _options(args) if not _OPTION_FIELDS.isdisjoint(args) else _DEFAULT_OPTIONS
    stream = _flag(args, "stream")
    if stream and (options.candidates or 1) > 1:
        raise InvalidArgument("THINK: candidates > 1 cannot be streamed (the chunks of several "
                              "answers would interleave); ask without stream")
    chain = model_chain(args.get("model"), "THINK: model", InvalidArgument)
    safety: SafetySettings = ()
    if args.get("safety") is not None:
        try:
            safety = parse_safety(args["safety"], "safety")
        except ValueError as exc:
            raise InvalidArgument(f"THINK: {exc}") from None
    return ThinkArgs(
        turns=turns, system=system, options=options,
        functions=_functions(args.get("functions")),
        function_mode=mode.upper() if mode else None,
        allowed_functions=tuple(allowed),
        context=_opt_str(args, "context"), stream=stream,
        model=chain[0] if chain else None, fallbacks=chain[1:], safety=safety,
        timeout=_timeout(args.get("timeout")), traceparent=_traceparent(args.get("traceparent")),
        mcp_tools=_mcp_tools(args))


def _mcp_tools(args: dict[str, Any]) -> bool:
    value = args.get("tools")
    if value is None:
        return False
    if value != "mcp":
        raise InvalidArgument(f"THINK: tools must be \"mcp\" (the agent's MCP tools), got {value!r:.80}",
                              field="tools")
    if args.get("functions") or args.get("function_responses"):
        # The kernel runs the loop: the agent's own functions would need answers it never sees.
        raise InvalidArgument("THINK: tools \"mcp\" cannot be combined with functions or "
                              "function_responses", field="tools")
    return True


def _traceparent(value: Any) -> str | None:
    if value is not None and not (isinstance(value, str) and _TRACEPARENT.match(value)):
        raise InvalidArgument(f"THINK: traceparent must be a W3C trace context "
                              f"(00-<32 hex>-<16 hex>-<2 hex>), got {value!r:.80}", field="traceparent")
    return value


def _timeout(value: Any) -> float | None:
    if value is None:
        return None
    # False for NaN too; the cap keeps a huge integer from overflowing float().
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_SECONDS:
        raise InvalidArgument(f"THINK: timeout must be a number of seconds above 0 (at most "
                              f"{int(MAX_SECONDS)}), got {value!r}")
    return float(value)


def model_chain(raw: Any, where: str, error: type[Exception] = ValueError) -> tuple[str, ...]:
    """A model or a fallback chain (a list tried in order) as a tuple; None is the empty tuple.

    Shared by THINK (``InvalidArgument``), the kernel's ``llm`` section and agents' manifests
    (``ValueError``), so all three take the same spelling.
    """
    if raw is None:
        return ()
    models = [raw] if isinstance(raw, str) else raw
    if not (isinstance(models, (list, tuple)) and 1 <= len(models) <= MAX_CHAIN):
        raise error(f"{where} must be a model name or a list of 1 to {MAX_CHAIN} model names "
                    "(a fallback chain)")
    for index, model in enumerate(models):
        place = where if isinstance(raw, str) else f"{where}[{index}]"
        if not (isinstance(model, str) and model.strip()):
            raise error(f"{place} must be a non-empty model name, got {model!r}")
        if model in models[:index]:
            raise error(f"{place}: {model!r} is already in the chain")
    return tuple(models)


def _options(args: dict[str, Any]) -> GenerationOptions:
    budget, level = args.get("thinking_budget"), _opt_str(args, "thinking_level")
    if budget is not None and level is not None:
        raise InvalidArgument("THINK: give thinking_budget or thinking_level, not both")
    if level is not None and level.lower() not in _THINKING_LEVELS:
        raise InvalidArgument(f"THINK: thinking_level must be one of {_THINKING_LEVELS}")
    schema = args.get("response_schema")
    if schema is not None and not isinstance(schema, dict):
        raise InvalidArgument("THINK: response_schema must be a JSON Schema object")
    stop = args.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and len(stop) <= MAX_STOP
                                 and all(isinstance(s, str) and s for s in stop)):
        raise InvalidArgument(f"THINK: stop must be a non-empty string or a list of at most "
                              f"{MAX_STOP} of them (Gemini's limit)")
    return GenerationOptions(
        temperature=_number(args, "temperature", 0.0, 2.0),
        top_p=_number(args, "top_p", 0.0, 1.0),
        top_k=_integer(args, "top_k", 1),
        max_output_tokens=_integer(args, "max_output_tokens", 1),
        stop=tuple(stop or ()),
        seed=_integer(args, "seed", None),
        thinking_budget=_integer(args, "thinking_budget", -1),
        thinking_level=level,
        include_thoughts=_flag(args, "include_thoughts"),
        response_mime_type="application/json" if _flag(args, "json") else None,
        response_schema=schema,
        candidates=_integer(args, "candidates", 1, MAX_CANDIDATES))


def _messages(raw: Any) -> tuple[list[Content], str | None]:
    if raw is None:
        return [], None
    if not isinstance(raw, list):
        raise InvalidArgument("THINK: messages must be a list of {role, content} or {role, parts}")
    turns: list[Content] = []
    system: list[str] = []
    for index, message in enumerate(raw):
        where = f"THINK: messages[{index}]"
        if not isinstance(message, dict):
            raise InvalidArgument(f"{where} must be an object")
        role = message.get("role", "user")
        if role == "system":
            if not isinstance(message.get("content"), str):
                raise InvalidArgument(f"{where}: a system message needs text 'content'")
            system.append(message["content"])
            continue
        if not isinstance(role, str) or role not in _ROLES:
            raise InvalidArgument(f"{where}: role must be user, model, assistant or system, "
                                  f"got {role!r}")
        if "parts" in message:
            parts = message["parts"]
            if not (isinstance(parts, list) and parts and all(isinstance(p, dict) for p in parts)):
                raise InvalidArgument(f"{where}: parts must be a non-empty list of objects")
            # Kept verbatim: model turns carry thought signatures that must be replayed as sent.
            turns.append({"role": _ROLES[role], "parts": parts})
        elif isinstance(message.get("content"), str):
            turns.append({"role": _ROLES[role], "parts": [{"text": message["content"]}]})
        else:
            raise InvalidArgument(f"{where} needs text 'content' or a 'parts' list")
    return turns, "\n\n".join(system) or None


def _images(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidArgument("THINK: images must be a list of {mime_type, data (base64)}")
    parts = []
    for index, image in enumerate(raw):
        if not (isinstance(image, dict) and isinstance(image.get("mime_type"), str)
                and isinstance(image.get("data"), str)):
            raise InvalidArgument(f"THINK: images[{index}] needs 'mime_type' and base64 'data'")
        if not _BASE64.match(image["data"]):
            raise InvalidArgument(f"THINK: images[{index}].data is not base64")
        parts.append({"inlineData": {"mimeType": image["mime_type"], "data": image["data"]}})
    return parts


def _functions(raw: Any) -> tuple[dict[str, Any], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidArgument("THINK: functions must be a list of {name, description, parameters}")
    out = []
    for index, decl in enumerate(raw):
        name = decl.get("name") if isinstance(decl, dict) else None
        if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
            raise InvalidArgument(f"THINK: functions[{index}].name {name!r} is invalid: start with a "
                                  "letter or _, then letters, digits, _ . : - (at most 128)")
        params = decl.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise InvalidArgument(f"THINK: functions[{index}].parameters must be a JSON Schema object")
        out.append({k: v for k, v in decl.items() if k in ("name", "description", "parameters")})
    return tuple(out)


def _opt_str(args: dict[str, Any], key: str) -> str | None:
    value = args.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidArgument(f"THINK: {key} must be a string, got {type(value).__name__}")
    return value


def _flag(args: dict[str, Any], key: str) -> bool:
    value = args.get(key, False)
    if not isinstance(value, bool):
        raise InvalidArgument(f"THINK: {key} must be true or false")
    return value


def _number(args: dict[str, Any], key: str, low: float, high: float) -> float | None:
    value = args.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise InvalidArgument(f"THINK: {key} must be a number from {low} to {high}, got {value!r}")
    return float(value)


def _integer(args: dict[str, Any], key: str, low: int | None,
             high: int | None = None) -> int | None:
    value = args.get(key)
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low)
            or (high is not None and value > high)):
        bound = (f" from {low} to {high}" if high is not None
                 else f" >= {low}" if low is not None else "")
        raise InvalidArgument(f"THINK: {key} must be an integer{bound}, got {value!r}")
    return value
