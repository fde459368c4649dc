"""Is the model endpoint there? Checked at kernel start, so an agent is not the first to find out.

One request for the models list with the key (``Provider.check_endpoint``),
unretried and bounded by ``connect_timeout``, run in the background: the kernel
starts without waiting for it. Its outcome is logged (a warning when the
endpoint does not answer or refuses the key) and kept, for HELLO's
``capabilities.llm.endpoint`` and ``agentos doctor``. Messages name the base URL,
never the key (it travels in a header only).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from .config import LLMConfig
from .errors import ErrorKind, LLMError
from .http import new_session
from .provider import Provider, make_provider

log = logging.getLogger("agentos.llm")

#: HTTP answers that only say the endpoint lists no models (some local servers): it is there.
_NO_MODELS_LIST = frozenset({404, 405})


@dataclass(frozen=True)
class EndpointStatus:
    """The last check of the endpoint."""

    url: str
    #: Whether it answered with an HTTP status at all; None until checked, or when it is not
    #: checked (no key to check it with).
    reachable: bool | None = None
    #: Unix time of the check.
    checked_at: float | None = None
    #: What a THINK would meet, in a THINK answer's ``error`` shape; ``type`` ``auth`` is a
    #: refused key, ``not_configured`` a missing one.
    error: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> EndpointStatus:
        """From ``to_dict()``'s shape (HELLO's ``capabilities.llm.endpoint``)."""
        return cls(raw["url"], raw.get("reachable"), raw.get("checked_at"), raw.get("error"))

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "reachable": self.reachable, "checked_at": self.checked_at,
                "error": self.error}

    @property
    def state(self) -> str:
        """``ok``, ``unchecked`` (not yet, or no key to check with), ``unreachable``,
        ``key_refused`` or ``error`` (it answered, with something else wrong)."""
        kind = (self.error or {}).get("type")
        if self.reachable is None:
            return "unchecked"
        if not self.reachable:
            return "unreachable"
        if kind is None:
            return "ok"
        return "key_refused" if kind == ErrorKind.AUTH.value else "error"

    def summary(self) -> str:
        """What the check found, in one line."""
        message = (self.error or {}).get("message")
        return {"ok": f"{self.url} answered",
                "unchecked": f"{self.url}: {message or 'not checked yet'}",
                "unreachable": f"{self.url} is unreachable: {message}; THINK calls fail until it "
                               "answers",
                "key_refused": f"{self.url} refused the API key: {message}",
                "error": f"{self.url} answered the check with an error: {message}"}[self.state]


async def probe(provider: Provider) -> EndpointStatus:
    """Check the endpoint ``provider`` talks to; never raises for what the endpoint does."""
    config = provider.config
    if config.needs_key and not config.api_key:
        # No key, no THINK: the start-up log says so already, and a keyless kernel stays off the network.
        return EndpointStatus(config.base_url, error=LLMError(
            ErrorKind.NOT_CONFIGURED, f"not checked: no API key ({config.key_variable})").to_dict())
    checked_at = time.time()
    try:
        async with asyncio.timeout(config.connect_timeout):
            await provider.check_endpoint()
    except TimeoutError:
        error = LLMError(ErrorKind.TIMEOUT, f"{provider.name}: {config.base_url} did not answer "
                         f"within connect_timeout ({config.connect_timeout:g}s)")
        return EndpointStatus(config.base_url, False, checked_at, error.to_dict())
    except LLMError as error:
        if error.status in _NO_MODELS_LIST:
            return EndpointStatus(config.base_url, True, checked_at)
        return EndpointStatus(config.base_url, error.status is not None, checked_at, error.to_dict())
    return EndpointStatus(config.base_url, True, checked_at)


async def probe_config(config: LLMConfig) -> EndpointStatus:
    """``probe`` with a session of its own: for ``agentos doctor`` when no kernel runs."""
    async with new_session(config) as session:
        return await probe(make_provider(config, session))


def report(status: EndpointStatus) -> None:
    """Log the outcome: a warning when THINK cannot work as configured."""
    if status.state == "unchecked":
        return  # no key: the start-up line warned already
    log.log(logging.INFO if status.state == "ok" else logging.WARNING, "LLM endpoint %s",
            status.summary())


class EndpointCheck:
    """The kernel's background check, and its latest result (``status``)."""

    def __init__(self, config: LLMConfig) -> None:
        self.status = EndpointStatus(config.base_url)
        self._task: asyncio.Task[None] | None = None

    def start(self, provider: Provider) -> None:
        self._task = asyncio.create_task(self._run(provider), name="llm-endpoint-check")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])  # unlike awaiting it, keeps stop() itself cancellable
            self._task = None

    async def _run(self, provider: Provider) -> None:
        self.status = await probe(provider)
        report(self.status)
