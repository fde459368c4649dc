"""THINK errors: every provider failure becomes one ``LLMError`` of a stable kind.

The kinds are what an agent sees in ``reply.error.type``; ``retryable`` is what
the retry loop looks at. HTTP statuses and Google / OpenAI error bodies are
mapped here, in one place, for both providers.
"""
from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any


class ErrorKind(str, enum.Enum):
    """The structured THINK error types."""

    AUTH = "auth"
    INVALID_REQUEST = "invalid_request"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"
    #: The call's one deadline (THINK ``timeout``, else ``llm.deadline``) passed: every attempt
    #: and wait together took too long. Not retried: the time is spent.
    DEADLINE_EXCEEDED = "deadline_exceeded"
    BUDGET_EXHAUSTED = "budget_exhausted"
    NOT_CONFIGURED = "not_configured"
    CANCELLED = "cancelled"
    #: The provider has no such operation (counting tokens on an OpenAI-compatible server).
    UNSUPPORTED = "unsupported"


#: HTTP statuses worth another attempt (the official SDKs' list).
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class LLMError(Exception):
    """A THINK that did not produce an answer, with enough detail to act on."""

    def __init__(self, kind: ErrorKind, message: str, *, retry_after: float | None = None,
                 reason: str | None = None, status: int | None = None,
                 retryable: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after = retry_after
        self.reason = reason
        self.status = status
        self.retryable = retryable

    def to_dict(self) -> dict[str, Any]:
        """The ``error`` object of a THINK answer."""
        out: dict[str, Any] = {"type": self.kind.value, "message": self.message}
        if self.retry_after is not None:
            out["retry_after"] = round(self.retry_after, 3)
        if self.reason is not None:
            out["reason"] = self.reason
        if self.status is not None:
            out["status"] = self.status
        return out

    def __repr__(self) -> str:
        return f"LLMError({self.kind.value!r}, {self.message!r})"


class ConnectFailed(LLMError):
    """No connection to the endpoint (refused, DNS, unreachable, connect timeout): nothing was
    sent. Retried only briefly (``retry.connect_attempts``): a server that is not there rarely
    appears within seconds, and the agent should hear so at once."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorKind.UNAVAILABLE, message, reason="connect_failed", retryable=True)


def parse_duration_string(value: Any) -> float | None:
    """A protobuf Duration such as ``"15s"`` / ``"1.5s"``, or a number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return max(0.0, float(value))
    if isinstance(value, str):
        text = value.strip().lower()
        scale = 1.0
        if text.endswith("ms"):
            text, scale = text[:-2], 0.001
        elif text.endswith("s"):
            text = text[:-1]
        try:
            return max(0.0, float(text) * scale)
        except ValueError:
            return None
    return None


def retry_after_from(body: Mapping[str, Any] | None, headers: Mapping[str, str]) -> float | None:
    """Server-requested delay: ``google.rpc.RetryInfo`` first, then ``retry-after-ms`` / ``Retry-After``."""
    error = body.get("error") if isinstance(body, Mapping) else None
    details = error.get("details") if isinstance(error, Mapping) else None
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, Mapping) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            delay = parse_duration_string(detail.get("retryDelay"))
            if delay is not None:
                return delay
    millis = headers.get("retry-after-ms")
    if millis is not None:
        seconds = parse_duration_string(millis)
        if seconds is not None:
            return seconds / 1000
    return parse_duration_string(headers.get("retry-after"))


def _error_fields(body: Any, fallback: str) -> tuple[str, str, list[Any]]:
    """(message, status name, details) from a Google, OpenAI or plain-text error body."""
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, str):
            return error, "", []
        if isinstance(error, Mapping):
            message = str(error.get("message") or fallback)
            status = str(error.get("status") or error.get("type") or "")
            details = error.get("details")
            return message, status, details if isinstance(details, list) else []
    if isinstance(body, str) and body.strip():
        return body.strip()[:500], "", []
    return fallback, "", []


def _reason_of(details: list[Any]) -> str | None:
    for detail in details:
        if isinstance(detail, Mapping) and detail.get("reason"):
            return str(detail["reason"])
    return None


def error_from_http(status: int, body: Any, headers: Mapping[str, str], provider: str) -> LLMError:
    """Map a non-2xx answer to its THINK error; ``body`` is parsed JSON or raw text."""
    message, status_name, details = _error_fields(body, f"HTTP {status}")
    reason = _reason_of(details)
    text = f"{provider}: {message}"
    retryable = status in RETRYABLE_STATUSES
    if status in (401, 403) or reason == "API_KEY_INVALID":
        return LLMError(ErrorKind.AUTH, f"{text} (check GEMINI_API_KEY / GOOGLE_API_KEY)"
                        if provider == "gemini" else text, reason=reason, status=status)
    if status == 429:
        return LLMError(ErrorKind.RATE_LIMITED, text, status=status, reason=reason,
                        retry_after=retry_after_from(body if isinstance(body, Mapping) else None, headers),
                        retryable=True)
    if status in (408, 504):
        return LLMError(ErrorKind.TIMEOUT, text, status=status, retryable=True)
    if status >= 500:
        return LLMError(ErrorKind.UNAVAILABLE, text, status=status, reason=status_name or None,
                        retry_after=retry_after_from(body if isinstance(body, Mapping) else None, headers),
                        retryable=retryable)
    return LLMError(ErrorKind.INVALID_REQUEST, text, status=status, reason=reason or status_name or None)


def error_in_event(event: Mapping[str, Any], provider: str) -> LLMError | None:
    """A mid-stream ``{"error": {...}}`` event, mapped like the HTTP status it names."""
    error = event.get("error")
    if error is None:
        return None
    code = error.get("code") if isinstance(error, Mapping) else None
    status = code if isinstance(code, int) and 400 <= code < 600 else 500
    return error_from_http(status, dict(event), {}, provider)
