"""The price table (``llm.prices``), what an answer costs, and the usage split providers report."""
from __future__ import annotations

from typing import Any

import pytest

from agentos.llm.config import LLMConfig
from agentos.llm.gemini import TurnAssembler
from agentos.llm.openai_compat import ChoiceAssembler
from agentos.llm.pricing import Price, Prices
from agentos.llm.types import Usage


def test_prices_are_read_per_model_with_cached_input_defaulting_to_input() -> None:
    config = LLMConfig.from_section({"prices": {
        "gemini-2.5-flash": {"input": 0.3, "output": 2.5, "cached_input": 0.03},
        "models/gemini-2.5-pro": {"input": 1.25, "output": 10}}}, {})
    assert config.prices.of("gemini-2.5-flash") == Price(0.3, 2.5, 0.03)
    assert config.prices.of("models/gemini-2.5-pro") == Price(1.25, 10.0, 1.25)
    assert config.prices.of("gemini-2.5-pro") is config.prices.of("models/gemini-2.5-pro")
    assert config.prices.of("llama3.2") is None


@pytest.mark.parametrize(("prices", "key"), [
    ("cheap", "llm.prices"),
    ({"m": 3}, "llm.prices.m"),
    ({"m": {"input": 1}}, "llm.prices.m.output"),
    ({"m": {"input": -1, "output": 1}}, "llm.prices.m.input"),
    ({"m": {"input": "1", "output": 1}}, "llm.prices.m.input"),
    ({"m": {"input": 1, "output": 1, "cached_input": float("nan")}}, "llm.prices.m.cached_input"),
    ({"m": {"input": 1, "output": 1, "batch": 1}}, "llm.prices.m"),
    ({"": {"input": 1, "output": 1}}, "llm.prices"),
])
def test_a_bad_price_table_is_a_config_error_naming_the_key(prices: Any, key: str) -> None:
    with pytest.raises(ValueError, match=f"^{key.replace('.', '[.]')}"):
        LLMConfig.from_section({"prices": prices}, {})


def test_cost_prices_cached_prompt_tokens_cheaper_and_thoughts_as_output() -> None:
    price = Price(input=2.0, output=8.0, cached_input=0.5)
    # 1000 prompt tokens of which 400 cached; 300 output of which 100 thinking.
    usage = Usage(prompt=1000, output=300, total=1300, thoughts=100, cached=400)
    assert price.cost(usage) == pytest.approx((600 * 2.0 + 400 * 0.5 + 300 * 8.0) / 1e6)
    # Gemini's tool-use prompt tokens are in the total only: priced as input.
    assert price.cost(Usage(prompt=10, output=0, total=15)) == pytest.approx(15 * 2.0 / 1e6)


def test_the_dearest_price_bounds_a_chain_and_names_the_unpriced() -> None:
    prices = Prices({"a": Price(1.0, 9.0, 0.1), "b": Price(3.0, 4.0, 3.0)})
    assert prices.dearest(["a", "b", "c"]) == (Price(3.0, 9.0, 3.0), ["c"])
    assert prices.dearest(["c"]) == (None, ["c"])


def test_gemini_usage_metadata_is_split_into_prompt_output_thoughts_and_cached() -> None:
    turn = TurnAssembler("gemini-test")
    turn.feed({"candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]},
                               "finishReason": "STOP"}],
               "usageMetadata": {"promptTokenCount": 1200, "cachedContentTokenCount": 1024,
                                 "candidatesTokenCount": 7, "thoughtsTokenCount": 40,
                                 "totalTokenCount": 1247}})
    usage = turn.finish(streamed=False).usage
    assert usage.to_dict() == {"prompt": 1200, "output": 47, "total": 1247, "thoughts": 40,
                               "cached": 1024, "cost_usd": None}


@pytest.mark.parametrize(("details", "thoughts", "cached"), [
    ({"completion_tokens_details": {"reasoning_tokens": 64},
      "prompt_tokens_details": {"cached_tokens": 128}}, 64, 128),
    ({"completion_tokens_details": None, "prompt_tokens_details": None}, 0, 0),
    ({}, 0, 0),
])
def test_openai_usage_details_give_reasoning_and_cached_tokens(details: dict[str, Any], thoughts: int,
                                                               cached: int) -> None:
    choice = ChoiceAssembler("gpt-test")
    choice.feed_message({"choices": [{"message": {"role": "assistant", "content": "hi"},
                                      "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 200, "completion_tokens": 90, "total_tokens": 290,
                                   **details}})
    usage = choice.finish(streamed=False).usage
    assert (usage.prompt, usage.output, usage.total, usage.thoughts, usage.cached) == \
        (200, 90, 290, thoughts, cached)
