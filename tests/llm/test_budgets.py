"""Per-agent budgets: reservations of tokens and USD, calls per minute, usage reports, ceilings."""
from __future__ import annotations

import random

import pytest

from agentos.kernel.identity import Identity
from agentos.llm.budgets import (
    MEDIA_TOKENS,
    MIN_OUTPUT_TOKENS,
    UNCAPPED_OUTPUT_TOKENS,
    Budgets,
    Reservation,
    estimate_input_tokens,
)
from agentos.llm.callers import Callers
from agentos.llm.config import AgentPolicy, LLMConfig
from agentos.llm.errors import ErrorKind, LLMError
from agentos.llm.gemini import build_body
from agentos.llm.pricing import Price, Prices
from agentos.llm.types import GenerationOptions, ModelRequest, Usage
from agentos.protocol.requests import LLMWire
from agentos.testing.fake_gemini import prompt_tokens

MODEL = ("gemini-test",)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def request(prompt: str = "x" * 40, max_output: int | None = None, candidates: int | None = None,
            system: str | None = None) -> ModelRequest:
    return ModelRequest(contents=[{"role": "user", "parts": [{"text": prompt}]}], system=system,
                        options=GenerationOptions(max_output_tokens=max_output, candidates=candidates))


def admit(budgets: Budgets, policy: AgentPolicy, key: str = "a", account: str = "a",
          **ask: object) -> Reservation:
    return budgets.admit(key, account, policy, MODEL, request(**ask))  # type: ignore[arg-type]


def test_a_call_reserves_its_prompt_estimate_plus_its_max_output_then_settles_at_real_usage() -> None:
    budgets = Budgets()
    policy = AgentPolicy(max_tokens=1000)
    held = admit(budgets, policy, max_output=100)
    prompt = estimate_input_tokens(request())
    assert held.tokens == prompt + 100 and held.max_output_tokens is None  # fits: sent as asked
    assert budgets.report("a", policy)["budget"]["tokens_left"] == 1000 - prompt - 100
    budgets.settle(held, Usage(prompt=10, output=30, total=40, thoughts=12, cached=4))
    report = budgets.report("a", policy)
    assert report["tokens"] == {"prompt": 10, "output": 30, "total": 40, "thoughts": 12, "cached": 4}
    assert report["budget"]["tokens_left"] == 960
    assert report["budget"]["reserved"] == {"tokens": 0, "usd": 0.0}
    budgets.settle(held, Usage(total=500))  # settling twice changes nothing
    assert budgets.report("a", policy)["tokens"]["total"] == 40


def test_the_output_limit_is_cut_to_what_is_left_and_a_call_that_cannot_fit_is_refused() -> None:
    budgets = Budgets()
    policy = AgentPolicy(max_tokens=300)
    prompt = estimate_input_tokens(request())
    first = admit(budgets, policy, max_output=200)
    assert first.max_output_tokens is None
    second = admit(budgets, policy, max_output=200)  # only what the first left
    assert second.max_output_tokens == 300 - 2 * prompt - 200
    assert budgets.report("a", policy)["budget"]["tokens_left"] == 0
    with pytest.raises(LLMError) as caught:
        admit(budgets, policy, max_output=200)
    assert caught.value.kind is ErrorKind.BUDGET_EXHAUSTED and caught.value.reason == "tokens"
    budgets.failed("a", first)  # a failure gives its reservation back
    third = admit(budgets, policy)  # no limit asked: all that is left, sent as the limit
    assert third.max_output_tokens == 300 - 2 * prompt - second.max_output_tokens
    budgets.failed("a", second)
    budgets.failed("a", third)
    tight = 300 - prompt - MIN_OUTPUT_TOKENS + 1
    budgets.settle(admit(budgets, policy, max_output=1), Usage(total=tight))
    with pytest.raises(LLMError, match="cannot pay for this call's prompt"):
        admit(budgets, policy)
    admit(budgets, policy, max_output=MIN_OUTPUT_TOKENS - 1)  # it asks for less than the minimum
    assert budgets.usage("a").errors == 3


def test_a_call_with_no_limit_reserves_the_largest_model_output_and_sends_none() -> None:
    budgets = Budgets()
    held = admit(budgets, AgentPolicy(max_tokens=10_000_000))
    assert held.max_output_tokens is None
    assert held.tokens == estimate_input_tokens(request()) + UNCAPPED_OUTPUT_TOKENS


def test_every_candidate_gets_the_output_allowance() -> None:
    budgets = Budgets()
    policy = AgentPolicy(max_tokens=1000)
    prompt = estimate_input_tokens(request())
    held = admit(budgets, policy, max_output=300, candidates=4)
    assert held.max_output_tokens == (1000 - prompt) // 4
    assert held.tokens <= 1000


def test_a_call_cut_off_is_charged_its_whole_reservation() -> None:
    budgets = Budgets()
    policy = AgentPolicy(max_tokens=1000)
    held = admit(budgets, policy, max_output=100)
    budgets.cut_off(held)
    assert budgets.report("a", policy)["budget"]["tokens_left"] == 1000 - held.tokens
    budgets.cut_off(None)  # refused before it reserved anything


def test_unbudgeted_calls_reserve_nothing() -> None:
    budgets = Budgets()
    for _ in range(1000):
        held = admit(budgets, AgentPolicy())
        assert held.tokens == 0 and held.max_output_tokens is None
    assert budgets.report("a", AgentPolicy())["budget"] == {
        "tokens": None, "calls_per_minute": None, "usd": None, "tokens_left": None,
        "usd_left": None, "reserved": {"tokens": 0, "usd": 0.0}}


def test_calls_per_minute_is_a_rolling_window() -> None:
    clock = Clock()
    budgets = Budgets(clock=clock)
    policy = AgentPolicy(calls_per_minute=2)
    admit(budgets, policy)
    clock.now += 10
    admit(budgets, policy)
    clock.now += 5
    with pytest.raises(LLMError) as caught:
        admit(budgets, policy)
    assert caught.value.reason == "calls_per_minute"
    assert caught.value.retry_after == pytest.approx(45.0)
    clock.now += 45.01
    admit(budgets, policy)
    assert budgets.usage("a").calls == 3


def test_a_new_key_on_the_same_account_inherits_the_spent_budget() -> None:
    budgets = Budgets()
    policy = AgentPolicy(max_tokens=100, calls_per_minute=3)
    held = admit(budgets, policy, key="agent:old", account="name:worker", max_output=20)
    budgets.settle(held, Usage(prompt=50, output=50, total=100))
    with pytest.raises(LLMError, match="token budget"):
        admit(budgets, policy, key="agent:new", account="name:worker")  # restarted under a new id
    assert budgets.report("agent:new", policy)["budget"]["tokens_left"] == 0
    assert budgets.report("agent:old", policy)["tokens"]["total"] == 100
    assert budgets.report("agent:new", policy)["tokens"]["total"] == 0, "usage stays per key"


# --- money -------------------------------------------------------------------------------------

PRICES = Prices({"gemini-test": Price(input=1.0, output=10.0, cached_input=0.25),
                 "gemini-cheap": Price(input=0.1, output=0.4, cached_input=0.1)})


def test_a_usd_budget_reserves_the_priced_worst_case_and_cuts_the_output_to_what_it_can_pay() -> None:
    budgets = Budgets(PRICES)
    policy = AgentPolicy(max_usd=0.001)  # 100 output tokens at $10 per million, less the prompt
    prompt = estimate_input_tokens(request())
    held = admit(budgets, policy, max_output=1000)
    assert held.max_output_tokens == int((0.001 - prompt * 1e-6) / 1e-5)
    assert held.usd <= 0.001
    usage = Usage(prompt=10, output=50, total=60, cached=4)
    usage.cost_usd = cost = budgets.cost(held, usage, "gemini-test")
    assert cost is not None and cost == pytest.approx((6 * 1.0 + 4 * 0.25 + 50 * 10.0) / 1e6)
    budgets.settle(held, usage)
    report = budgets.report("a", policy)
    assert report["cost_usd"] == pytest.approx(usage.cost_usd)
    assert report["budget"]["usd_left"] == pytest.approx(0.001 - cost)
    with pytest.raises(LLMError) as caught:
        admit(budgets, AgentPolicy(max_usd=0.00001), key="b", account="b", max_output=1000)
    assert caught.value.reason == "usd"


def test_a_usd_budget_refuses_a_model_with_no_price_and_without_one_it_costs_nothing() -> None:
    budgets = Budgets(PRICES)
    with pytest.raises(LLMError, match="gemini-free has no price") as caught:
        budgets.admit("a", "a", AgentPolicy(max_usd=1.0), ("gemini-test", "gemini-free"), request())
    assert caught.value.reason == "usd"
    held = budgets.admit("a", "a", AgentPolicy(), ("gemini-free",), request())
    usage = Usage(prompt=5, output=5, total=10)
    usage.cost_usd = budgets.cost(held, usage, "gemini-free")
    budgets.settle(held, usage)
    assert usage.cost_usd is None and budgets.unpriced_models == {"gemini-free"}
    assert budgets.report("a", AgentPolicy())["unpriced_calls"] == 1


def test_a_fallback_chain_reserves_at_its_dearest_model_and_pays_the_one_that_answered() -> None:
    budgets = Budgets(PRICES)
    held = budgets.admit("a", "a", AgentPolicy(max_usd=1.0), ("gemini-cheap", "gemini-test"),
                         request(max_output=100))
    assert held.price == Price(input=1.0, output=10.0, cached_input=0.25)
    usage = Usage(prompt=10, output=10, total=20)
    assert budgets.cost(held, usage, "models/gemini-cheap") == pytest.approx(10 * 0.5 / 1e6)
    # An answer naming a version the table lacks is priced as reserved.
    assert budgets.cost(held, usage, "gemini-cheap-002") == pytest.approx(10 * 11.0 / 1e6)


# --- the prompt estimate ------------------------------------------------------------------------

def test_the_estimate_never_counts_fewer_tokens_than_the_fake_does() -> None:
    rng = random.Random(10)
    alphabet = "abc xyz 0123456789 {}[]\"\\\n\té€😀中文"
    for _ in range(300):
        turns = [{"role": rng.choice(["user", "model"]),
                  "parts": [{"text": "".join(rng.choice(alphabet) for _ in range(rng.randrange(200)))}
                            for _ in range(rng.randrange(1, 4))]}
                 for _ in range(rng.randrange(1, 5))]
        system = "s" * rng.randrange(50) or None
        functions = tuple({"name": f"f{n}", "description": "d" * rng.randrange(40),
                           "parameters": {"type": "object", "properties": {
                               "q": {"type": "string", "enum": ["a", "b"]}, "n": {"type": "integer"}},
                               "required": ["q"], "additionalProperties": False}}
                          for n in range(rng.randrange(3)))
        ask = ModelRequest(contents=turns, system=system, functions=functions)
        assert estimate_input_tokens(ask) >= prompt_tokens(build_body(ask))


def test_the_estimate_counts_media_by_the_part_not_by_its_bytes() -> None:
    image = {"inlineData": {"mimeType": "image/png", "data": "A" * 1_000_000}}
    ask = ModelRequest(contents=[{"role": "user", "parts": [{"text": "look"}, image]}])
    assert MEDIA_TOKENS <= estimate_input_tokens(ask) < MEDIA_TOKENS + 20


# --- ceilings ---------------------------------------------------------------------------------

def test_a_spawned_agents_budgets_are_never_looser_than_its_spawners() -> None:
    config = LLMConfig.from_section({"defaults": {"tokens": 1000},
                                     "agents": {"boss": {"tokens": 500, "usd": 2},
                                                "worker": {"tokens": 100_000, "usd": 50,
                                                           "calls_per_minute": 10}}}, {})
    callers = Callers(config)
    callers.agent_started("a1", "boss", None, None)
    callers.agent_started("a2", "worker", None, "a1", LLMWire(tokens=9_999, usd=1.5))
    callers.agent_started("a3", "helper", None, "a2")
    worker = callers.policy_of("agent:a2")
    assert (worker.max_tokens, worker.max_usd, worker.calls_per_minute) == (500, 1.5, 10)
    helper = callers.policy_of("agent:a3")
    assert (helper.max_tokens, helper.max_usd, helper.calls_per_minute) == (500, 1.5, 10)
    assert callers.team_of("agent:a3") == callers.team_of("agent:a1") == "name:boss"
    assert callers.team_of("client:1000:42") == "uid:1000"


def test_a_caller_is_made_again_once_its_agent_or_its_spawner_changes() -> None:
    """``Callers.of`` keeps the callers it made until an agent starts or is forgotten."""
    callers = Callers(LLMConfig.from_section({"agents": {"boss": {"tokens": 500}}}, {}))
    child = Identity(pid=7, uid=1000, gid=1000, agent_id="a2")
    before = callers.of(child)
    assert (before.owner, before.policy.max_tokens, before.defaults) == ("agent:a2", None, None)
    assert callers.of(child) is before
    callers.agent_started("a1", "boss", None, None)
    callers.agent_started("a2", "worker", None, "a1", LLMWire(system="be brief"))
    after = callers.of(child)
    assert (after.owner, after.policy.max_tokens) == ("name:worker", 500)
    assert after.defaults is not None and after.defaults.system == "be brief"
    callers.forget(["a1", "a2"])
    assert (callers.of(child).owner, callers.of(child).policy.max_tokens) == ("agent:a2", None)
    client, admin = Identity(pid=42, uid=1000, gid=1000), Identity(pid=42, uid=1000, gid=1000, admin=True)
    assert (callers.of(client).key, callers.of(client).admin, callers.of(admin).admin) == (
        "client:1000:42", False, True)


@pytest.mark.parametrize(("key", "value", "where"), [
    ("usd", 0, "llm.defaults.usd"), ("usd", "5", "llm.defaults.usd"), ("usd", True, "llm.defaults.usd")])
def test_a_bad_usd_budget_is_a_config_error_naming_the_key(key: str, value: object, where: str) -> None:
    with pytest.raises(ValueError, match=where):
        LLMConfig.from_section({"defaults": {key: value}}, {})
