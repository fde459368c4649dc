"""What a model call costs in US dollars: the ``llm.prices`` table of the kernel configuration.

Prices are per million tokens, as providers publish them::

    llm:
      prices:
        gemini-2.5-flash: {input: 0.30, output: 2.50, cached_input: 0.03}

``output`` covers thinking tokens too (providers bill them as output).
``cached_input`` is the price of prompt tokens served from a context cache; it
defaults to ``input``. A model missing from the table is *unpriced*: its calls
cost nothing and are reported as unpriced.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .types import Usage

PER = 1_000_000


@dataclass(frozen=True)
class Price:
    """USD per million tokens of one model."""

    input: float
    output: float
    cached_input: float

    def input_cost(self, tokens: int) -> float:
        """The most ``tokens`` prompt tokens can cost (none of them cached)."""
        return tokens * self.input / PER

    def output_cost(self, tokens: int) -> float:
        return tokens * self.output / PER

    def cost(self, usage: Usage) -> float:
        """What one answer cost. Tokens counted in the total beyond prompt and output (Gemini's
        ``toolUsePromptTokenCount``) are input the provider added, priced as input."""
        cached = min(usage.cached, usage.prompt)
        extra = max(0, usage.total - usage.prompt - usage.output)
        return ((usage.prompt - cached + extra) * self.input + cached * self.cached_input
                + usage.output * self.output) / PER

    @classmethod
    def from_mapping(cls, raw: Any, where: str) -> Price:
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where}: expected a mapping {{input, output, cached_input}} of USD "
                             f"per million tokens, got {raw!r}")
        unknown = set(raw) - {"input", "output", "cached_input"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)} (known: input, output, "
                             "cached_input)")
        for key in ("input", "output"):
            if key not in raw:
                raise ValueError(f"{where}.{key}: required (USD per million tokens)")
        price_in = _usd(raw["input"], f"{where}.input")
        return cls(input=price_in, output=_usd(raw["output"], f"{where}.output"),
                   cached_input=_usd(raw.get("cached_input", price_in), f"{where}.cached_input"))


@dataclass(frozen=True)
class Prices:
    """The price table, by model id (``models/x`` and ``x`` are the same model)."""

    table: Mapping[str, Price]

    def of(self, model: str) -> Price | None:
        return self.table.get(model.removeprefix("models/"))

    def dearest(self, models: Iterable[str]) -> tuple[Price | None, list[str]]:
        """The price that bounds a call that may use any of ``models`` (the highest input and
        the highest output price among them), and those of them with no price."""
        priced = []
        unpriced = []
        for model in models:
            price = self.of(model)
            if price is None:
                unpriced.append(model)
            else:
                priced.append(price)
        if not priced:
            return None, unpriced
        return Price(input=max(p.input for p in priced), output=max(p.output for p in priced),
                     cached_input=max(p.cached_input for p in priced)), unpriced

    @classmethod
    def from_mapping(cls, raw: Any, where: str = "llm.prices") -> Prices:
        if raw is None:
            return cls({})
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where}: expected a mapping of model ids to prices, got {raw!r}")
        table = {}
        for model, entry in raw.items():
            if not isinstance(model, str) or not model.strip():
                raise ValueError(f"{where}: model ids must be non-empty strings, got {model!r}")
            table[model.removeprefix("models/")] = Price.from_mapping(entry, f"{where}.{model}")
        return cls(table)


def _usd(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise ValueError(f"{where}: expected a non-negative number of US dollars, got {value!r}")
    return float(value)
