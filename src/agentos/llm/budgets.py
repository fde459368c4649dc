"""Per-agent usage accounting and the budgets the kernel enforces on it: tokens, calls, US dollars.

Usage is reported per caller key (``agent:<id>``), but budgets are charged to
the caller's account (its name, see ``callers``), so an agent restarted under a
new id cannot start over with a fresh budget.

A budgeted call *reserves* the most it can cost before it is sent, and *settles*
at what it really cost once its answer is delivered:

- reservation = the prompt's estimated tokens (``estimate_input_tokens``, never
  fewer than the fake's count and meant to be above a real tokenizer's) + the
  call's output allowance. The allowance is the call's ``max_output_tokens``
  (``UNCAPPED_OUTPUT_TOKENS`` when it sets none), cut down to what is left of the
  budget after the prompt; the call is then sent with that smaller limit
  (``maxOutputTokens`` / ``max_tokens``), so the provider cannot exceed it.
  Every candidate asked for gets the allowance. In money, the same tokens at the
  dearest price of the models the call may use.
- A call whose prompt plus ``MIN_OUTPUT_TOKENS`` does not fit in what is left
  (spent and reserved both count) is refused with ``budget_exhausted``.
- A failed call, and an answer refused as too large for its client, release
  their reservation (nothing charged). A call cut off mid-way (its client hung
  up, its agent was killed) is charged its whole reservation: the provider may
  have billed it, and the kernel cannot know how much.

So however many calls run at once, spent + reserved never passes the cap, and
what a call really costs never passes what it reserved (as long as the provider
counts the prompt no higher than the estimate).
"""
from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ujson

from .config import AgentPolicy
from .errors import ErrorKind, LLMError
from .pricing import PER, Price, Prices
from .types import ModelRequest, Usage

WINDOW = 60.0
#: Chains of models whose price ``admit`` keeps worked out, at most.
_MAX_CHAINS = 1024
#: A budgeted call must be able to produce at least this many output tokens (or what it
#: asked for, if less), else it is refused rather than sent to be cut off at once.
MIN_OUTPUT_TOKENS = 16
#: The output a call that sets no limit may produce, for its reservation: the largest
#: limit of current Gemini models. Below it the kernel sends the budget's own limit.
UNCAPPED_OUTPUT_TOKENS = 65_536
#: The estimate's rule: one token per 3 bytes of UTF-8 (English runs ~4 characters per token,
#: code ~3, CJK ~1 character of 3 bytes), plus per-turn framing.
BYTES_PER_TOKEN = 3
TURN_BYTES = 16
#: An image or file part, whatever its size (Gemini 3 bills 1,120 tokens per image at
#: high resolution; Gemini 2.x tiles large images at 258 tokens per 768x768 tile).
MEDIA_TOKENS = 1_120


def has_media(request: ModelRequest) -> bool:
    """Whether ``request`` carries an image or a file, whose tokens only the provider can count."""
    return any("inlineData" in part or "fileData" in part
               for content in request.contents for part in content.get("parts") or ())


def estimate_input_tokens(request: ModelRequest) -> int:
    """A conservative count of the tokens the provider will bill for ``request``'s prompt.

    Text counts its UTF-8 bytes, any other part (function calls and responses,
    signatures) its JSON, the function declarations their JSON; media parts a fixed
    ``MEDIA_TOKENS``. Bytes are divided by ``BYTES_PER_TOKEN``, rounded up.
    """
    size = 0
    media = 0
    for content in request.contents:
        size += TURN_BYTES
        for part in content.get("parts") or ():
            text = part.get("text")
            if isinstance(text, str) and len(part) == 1:
                size += len(text.encode())
            elif "inlineData" in part or "fileData" in part:
                media += 1
            else:
                size += len(ujson.dumps(part, ensure_ascii=False).encode())
    if request.system:
        size += TURN_BYTES + len(request.system.encode())
    if request.functions:
        size += len(ujson.dumps(request.functions, ensure_ascii=False).encode())
    return -(-size // BYTES_PER_TOKEN) + media * MEDIA_TOKENS


@dataclass
class Reservation:
    """What one admitted call holds of its account's budgets until it settles."""

    key: str
    account: str
    #: The models the call may use (a fallback chain), and the price bounding them all.
    models: tuple[str, ...]
    price: Price | None
    #: Some of ``models`` have no price.
    unpriced: bool = False
    #: Of ``tokens``, the prompt's estimate.
    prompt: int = 0
    tokens: int = 0
    usd: float = 0.0
    #: The output limit the call must be sent with; None leaves the call's own.
    max_output_tokens: int | None = None
    closed: bool = False


@dataclass
class ModelUsage:
    """One model's share of a caller's calls: a fallback chain spreads a call over several."""

    calls: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "errors": self.errors,
                "tokens": {"prompt": self.prompt_tokens, "output": self.output_tokens,
                           "total": self.total_tokens}}


@dataclass
class AgentUsage:
    """What one caller key has spent since the kernel started."""

    account: str
    calls: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    thoughts_tokens: int = 0
    cached_tokens: int = 0
    usd: float = 0.0
    #: Answered calls whose model has no price (they count no USD).
    unpriced_calls: int = 0
    #: By the model name a call asked for (a chain entry), not the version that answered.
    models: dict[str, ModelUsage] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "errors": self.errors,
                "tokens": {"prompt": self.prompt_tokens, "output": self.output_tokens,
                           "total": self.total_tokens, "thoughts": self.thoughts_tokens,
                           "cached": self.cached_tokens},
                "cost_usd": self.usd, "unpriced_calls": self.unpriced_calls,
                "models": {model: usage.to_dict() for model, usage in self.models.items()}}


@dataclass
class Account:
    """What the budget looks at: spent and reserved, and recent call times, across restarts."""

    total_tokens: int = 0
    usd: float = 0.0
    reserved_tokens: int = 0
    reserved_usd: float = 0.0
    #: Reservations not yet settled or released.
    open: int = 0
    recent: deque[float] = field(default_factory=deque)


class Budgets:
    """Usage per caller key, budgets per account, checked against each caller's policy."""

    def __init__(self, prices: Prices | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.prices = prices or Prices({})
        self._clock = clock
        self._usage: dict[str, AgentUsage] = {}
        self._accounts: dict[str, Account] = {}
        #: Models that answered with no price in the table.
        self.unpriced_models: set[str] = set()
        #: ``prices.dearest`` of each chain of models calls named (the table does not change).
        self._dearest: dict[tuple[str, ...], tuple[Price | None, list[str]]] = {}

    def usage(self, key: str, account: str | None = None) -> AgentUsage:
        entry = self._usage.get(key)
        if entry is None:
            entry = self._usage[key] = AgentUsage(account=account or key)
        return entry

    def agents(self) -> list[str]:
        return list(self._usage)

    def forget(self, keys: Iterable[str]) -> None:
        """Usage of callers that will not call again (agents the kernel forgot); their accounts,
        which belong to names, stay."""
        for key in keys:
            self._usage.pop(key, None)

    def admit(self, key: str, account: str, policy: AgentPolicy, models: Sequence[str],
              request: ModelRequest, counted: int | None = None) -> Reservation:
        """Count a new call and reserve what it may cost, or raise ``budget_exhausted``
        (``reason``: ``tokens``, ``usd`` or ``calls_per_minute`` with ``retry_after``).
        ``counted`` is the prompt's count by the provider, when it was asked (media)."""
        entry = self.usage(key, account)
        spent = self._account(account)
        models = tuple(models)
        dearest = self._dearest.get(models)
        if dearest is None:
            if len(self._dearest) >= _MAX_CHAINS:
                self._dearest.clear()
            dearest = self._dearest[models] = self.prices.dearest(models)
        price, unpriced = dearest
        # By position (key, account, models, price, unpriced): keywords to a class cost ~400
        # instructions each, on every call.
        reservation = Reservation(key, account, models, price, bool(unpriced))
        if policy.max_tokens is not None and spent.total_tokens + spent.reserved_tokens >= policy.max_tokens:
            raise _exhausted("tokens", f"token budget exhausted: {spent.total_tokens} of "
                             f"{policy.max_tokens} tokens used, {spent.reserved_tokens} held by "
                             "calls in flight")
        if policy.max_usd is not None:
            if unpriced:
                raise _exhausted("usd", f"{', '.join(unpriced)} has no price in llm.prices, so the "
                                 f"USD budget of this agent cannot bound its calls")
            if spent.usd + spent.reserved_usd >= policy.max_usd:
                raise _exhausted("usd", f"USD budget exhausted: ${spent.usd:.6f} of "
                                 f"${policy.max_usd:g} spent, ${spent.reserved_usd:.6f} held by "
                                 "calls in flight")
        now = self._clock()
        while spent.recent and spent.recent[0] <= now - WINDOW:
            spent.recent.popleft()
        if policy.calls_per_minute is not None and len(spent.recent) >= policy.calls_per_minute:
            raise LLMError(ErrorKind.BUDGET_EXHAUSTED,
                           f"call rate budget exhausted: {policy.calls_per_minute} calls per minute",
                           reason="calls_per_minute",
                           retry_after=spent.recent[0] + WINDOW - now)
        if policy.max_tokens is not None or policy.max_usd is not None:
            self._reserve(reservation, spent, policy, request, counted)
        spent.recent.append(now)
        entry.calls += 1
        return reservation

    def _reserve(self, reservation: Reservation, spent: Account, policy: AgentPolicy,
                 request: ModelRequest, counted: int | None) -> None:
        prompt = max(estimate_input_tokens(request), counted or 0)
        asked = request.options.max_output_tokens
        candidates = request.options.candidates or 1
        cap = asked or UNCAPPED_OUTPUT_TOKENS
        room, reason = cap, ""
        if policy.max_tokens is not None:
            left = policy.max_tokens - spent.total_tokens - spent.reserved_tokens - prompt
            if left // candidates < room:
                room, reason = left // candidates, "tokens"
        price = reservation.price
        if policy.max_usd is not None:
            assert price is not None  # admit refused unpriced models
            left_usd = policy.max_usd - spent.usd - spent.reserved_usd - price.input_cost(prompt)
            affordable = (math.floor(left_usd * PER / price.output / candidates) if price.output
                          else cap if left_usd >= 0 else -1)
            # Rounding must never let the reservation cost more than what is left.
            while affordable > 0 and price.output_cost(affordable * candidates) > left_usd:
                affordable -= 1
            if affordable < room:
                room, reason = affordable, "usd"
        if room < min(cap, MIN_OUTPUT_TOKENS):
            what = "tokens" if reason == "tokens" else "US dollars"
            raise _exhausted(reason, f"budget exhausted: what is left in {what} cannot pay for "
                             f"this call's prompt (~{prompt} tokens) and {min(cap, MIN_OUTPUT_TOKENS)} "
                             "output tokens")
        output = room * candidates
        reservation.prompt = prompt
        reservation.tokens = prompt + output
        reservation.usd = price.input_cost(prompt) + price.output_cost(output) if price else 0.0
        reservation.max_output_tokens = room if room < cap else None
        spent.reserved_tokens += reservation.tokens
        spent.reserved_usd += reservation.usd
        spent.open += 1

    def cost(self, reservation: Reservation, usage: Usage, model: str) -> float | None:
        """What ``usage`` cost in USD; None when unpriced. Priced as the model that answered when
        it is one the call named (no dearer than what was reserved), else at the reservation's
        price (the answer may name a version of an alias)."""
        name = model.removeprefix("models/")
        if name in reservation.models:
            price = self.prices.of(name)
        else:
            price = None if reservation.unpriced else reservation.price
        if price is None:
            self.unpriced_models.add(name)
            return None
        return price.cost(usage)

    @staticmethod
    def unreported(reservation: Reservation) -> Usage:
        """What an answer is charged when its provider reported no usage: its whole reservation,
        the most it may have cost (as for a cut-off call), never nothing."""
        return Usage(prompt=reservation.prompt, output=reservation.tokens - reservation.prompt,
                     total=reservation.tokens)

    def settle(self, reservation: Reservation, usage: Usage) -> None:
        """Charge what the delivered answer cost (``usage.cost_usd`` set by the caller) and
        release the reservation."""
        if not self._close(reservation):
            return
        entry = self.usage(reservation.key)
        entry.prompt_tokens += usage.prompt
        entry.output_tokens += usage.output
        entry.total_tokens += usage.total
        entry.thoughts_tokens += usage.thoughts
        entry.cached_tokens += usage.cached
        if usage.cost_usd is None:
            entry.unpriced_calls += 1
        else:
            entry.usd += usage.cost_usd
        spent = self._account(reservation.account)
        spent.total_tokens += usage.total
        spent.usd += usage.cost_usd or 0.0

    def model_used(self, key: str, model: str, usage: Usage | None) -> None:
        """``model`` answered one of ``key``'s calls (with ``usage``), or failed it (None)."""
        models = self.usage(key).models
        entry = models.get(model)
        if entry is None:
            entry = models[model] = ModelUsage()
        entry.calls += 1
        if usage is None:
            entry.errors += 1
            return
        entry.prompt_tokens += usage.prompt
        entry.output_tokens += usage.output
        entry.total_tokens += usage.total

    def failed(self, key: str, reservation: Reservation | None) -> None:
        """A call that failed or was refused: counted as an error, nothing charged."""
        self.usage(key).errors += 1
        if reservation is not None:
            self._close(reservation)

    def cut_off(self, reservation: Reservation | None) -> None:
        """A call stopped mid-way: charged its whole reservation."""
        if reservation is None or not self._close(reservation):
            return
        entry = self.usage(reservation.key)
        entry.errors += 1
        entry.total_tokens += reservation.tokens
        entry.usd += reservation.usd
        spent = self._account(reservation.account)
        spent.total_tokens += reservation.tokens
        spent.usd += reservation.usd

    def report(self, key: str, policy: AgentPolicy) -> dict[str, Any]:
        """Usage plus the budget and what is left of it (spent and reserved both count)."""
        entry = self.usage(key)
        out = entry.to_dict()
        spent = self._account(entry.account)
        out["budget"] = {
            "tokens": policy.max_tokens, "calls_per_minute": policy.calls_per_minute,
            "usd": policy.max_usd,
            "tokens_left": None if policy.max_tokens is None
            else max(0, policy.max_tokens - spent.total_tokens - spent.reserved_tokens),
            "usd_left": None if policy.max_usd is None
            else max(0.0, policy.max_usd - spent.usd - spent.reserved_usd),
            "reserved": {"tokens": spent.reserved_tokens, "usd": spent.reserved_usd}}
        return out

    def _close(self, reservation: Reservation) -> bool:
        """Give back what ``reservation`` holds; False when it was closed already."""
        if reservation.closed:
            return False
        reservation.closed = True
        if reservation.tokens or reservation.usd:
            spent = self._account(reservation.account)
            spent.open -= 1
            if spent.open:
                spent.reserved_tokens -= reservation.tokens
                spent.reserved_usd -= reservation.usd
            else:
                # Nothing in flight: no float residue may linger in the reserve.
                spent.reserved_tokens, spent.reserved_usd = 0, 0.0
        return True

    def _account(self, account: str) -> Account:
        spent = self._accounts.get(account)
        if spent is None:
            spent = self._accounts[account] = Account()
        return spent


def team_totals(reports: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """USD and tokens per team, summed over the ``report`` of each of its caller keys."""
    teams: dict[str, dict[str, Any]] = {}
    for key, report in reports.items():
        team = teams.setdefault(report["team"], {"cost_usd": 0.0, "tokens": 0, "calls": 0,
                                                 "agents": []})
        team["cost_usd"] += report["cost_usd"]
        team["tokens"] += report["tokens"]["total"]
        team["calls"] += report["calls"]
        team["agents"].append(key)
    return teams


def _exhausted(reason: str, message: str) -> LLMError:
    return LLMError(ErrorKind.BUDGET_EXHAUSTED, message, reason=reason)
