"""The kernel's metrics, named once here (``docs/observability.md`` lists them; the names are
stable): counted as syscalls end (the observer, after each reply has gone out), sampled from
the kernel's state when read (agents by status, queues, budgets, mailboxes).

prometheus_client holds them: its counters and histograms cost a dict lookup and an add, and it
writes the exposition format Prometheus reads. The process's memory, CPU and fds are its
``ProcessCollector``'s standard ``process_*`` metrics. The same registry is what
``otlp_metrics`` exports over OTLP: one set of counters, read by both.

Series labelled by ``agent`` go some time after their agent ended (``series_grace``), unless an
agent of the same name runs again by then: the series count follows the agents alive, not
every agent the kernel ever ran.
"""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..permissions.policy import STATE_OPS, required_capability, state_scope
from ..protocol import Op, op_name
from ..protocol.lifecycle import Status
from ..state.database import DatabaseClosed
from .telemetry import caller_of

if TYPE_CHECKING:
    from ..kernel.daemon import Kernel
    from ..kernel.syscalls import Call
    from ..llm.service import LLMService
    from ..messaging.service import MessagingService
    from ..processes.table import AgentTable
    from .notes import Notes
    from .telemetry import Caller

# One series per name: the ``_created`` twins prometheus_client adds by default double them.
disable_created_metrics()

#: Syscalls take from microseconds (HELLO) to minutes (WAIT, RECV, a long THINK).
SYSCALL_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                   0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
SPAWN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
THINK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
#: How often the loop's lag is measured (a timer's lateness), seconds; ended agents' series are
#: looked at as often.
LAG_INTERVAL = 0.5
#: How long an ended agent's series stay (seconds) unless ``telemetry.series_grace`` says: long
#: enough for a scrape or an export every minute to see its last values.
SERIES_GRACE = 300.0


class KernelMetrics:
    """The registry the Prometheus endpoint renders."""

    def __init__(self, kernel: Kernel, agents: AgentTable, llm: LLMService, messaging: MessagingService,
                 series_grace: float = SERIES_GRACE) -> None:
        self.kernel = kernel
        self.agents = agents
        self.llm = llm
        self.series_grace = series_grace
        self.registry = registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=registry)
        self.syscalls = Counter("agentos_syscalls", "Syscalls served (NOOP excepted), by outcome: "
                                "ok, an error code, or cancelled", ["op", "outcome"], registry=registry)
        self.syscall_seconds = Histogram("agentos_syscall_duration_seconds", "Syscall latency in the "
                                         "kernel, from dispatch to reply", ["op"],
                                         buckets=SYSCALL_BUCKETS, registry=registry)
        self.denials = Counter("agentos_denials", "Syscalls refused with permission_denied, by the "
                               "capability their opcode needs", ["capability", "op"], registry=registry)
        self.spawn_seconds = Histogram("agentos_spawn_duration_seconds", "Latency of SPAWNs that "
                                       "started an agent", buckets=SPAWN_BUCKETS, registry=registry)
        self.spawn_step_seconds = Histogram("agentos_spawn_step_duration_seconds", "Each step of "
                                            "those SPAWNs", ["step"], buckets=SPAWN_BUCKETS,
                                            registry=registry)
        self.think_seconds = Histogram("agentos_think_duration_seconds", "THINK latency, model "
                                       "included", ["model", "agent"], buckets=THINK_BUCKETS,
                                       registry=registry)
        self.think_calls = Counter("agentos_think_calls", "THINK calls by outcome: ok, or the "
                                   "error's type (rate_limited, budget_exhausted ...)",
                                   ["model", "agent", "outcome"], registry=registry)
        self.think_tokens = Counter("agentos_think_tokens", "Tokens of answered THINKs, by type "
                                    "(input, output)", ["model", "agent", "type"], registry=registry)
        self.think_cost = Counter("agentos_think_cost_usd", "US dollars of answered THINKs (by the "
                                  "kernel's llm.prices)", ["model", "agent"], registry=registry)
        self.loop_lag = Histogram("agentos_kernel_loop_lag_seconds", "How late the kernel's event "
                                  f"loop runs a timer, sampled every {LAG_INTERVAL}s",
                                  buckets=LAG_BUCKETS, registry=registry)
        #: The metrics with an ``agent`` label (the budget gauges are sampled from live budgets).
        self._per_agent = (self.think_seconds, self.think_calls, self.think_tokens, self.think_cost)
        #: ``agent`` labels of ended agents -> when their series go (the loop's time).
        self._ended: dict[str, float] = {}
        #: The children of the labelled metrics that every syscall or THINK updates.
        self._syscall_series: dict[tuple[int, str], tuple[Any, Any]] = {}
        self._think_series: dict[tuple[str, str], _ThinkSeries] = {}
        self._state = _KernelState(kernel, agents, llm, messaging)
        registry.register(self._state)
        self._lag_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._lag_task = self.kernel.loop.create_task(self._measure_lag())

    async def stop(self) -> None:
        if self._lag_task is not None:
            self._lag_task.cancel()
            await asyncio.gather(self._lag_task, return_exceptions=True)

    async def sample(self) -> None:
        """Sample the kernel's state into the registry (before it is read)."""
        self.forget_ended()
        await self._state.sample()

    async def render(self) -> bytes:
        """The exposition text, with the kernel's state sampled now."""
        await self.sample()
        return generate_latest(self.registry)

    def agent_ended(self, label: str) -> None:
        """The agent labelled ``label`` ended: its series go after the grace period."""
        self._ended[label] = self.kernel.loop.time() + self.series_grace

    def forget_ended(self) -> None:
        """Drop the series of ended agents whose grace is over, unless one of that name runs again."""
        if not self._ended:
            return
        now = self.kernel.loop.time()
        due = [label for label, at in self._ended.items() if at <= now]
        if not due:
            return
        alive = {agent.qualified_name for agent in self.agents
                 if agent.shown_status in Status.LIVE}
        for label in due:
            del self._ended[label]
            if label not in alive:
                for key in [key for key in self._think_series if key[1] == label]:
                    del self._think_series[key]
                for metric in self._per_agent:
                    metric.remove_by_labels({"agent": label})

    def syscall(self, call: Call, outcome: str, latency_s: float, notes: Notes | None,
                caller: Caller) -> None:
        key = (call.op, outcome)
        series = self._syscall_series.get(key)
        if series is None:
            op = op_name(call.op)
            series = self._syscall_series[key] = (self.syscalls.labels(op, outcome),
                                                  self.syscall_seconds.labels(op))
        series[0].inc()
        series[1].observe(latency_s)
        if outcome == "permission_denied":
            needed = required_capability(call.op, state_scope(call.request) if call.op in STATE_OPS else "own")
            self.denials.labels(needed.value if needed is not None else "none", op_name(call.op)).inc()
        if notes is None:
            return
        if call.op == Op.SPAWN and outcome == "ok":
            self.spawn_seconds.observe(latency_s)
            for step, start_ns, end_ns in notes.steps:
                self.spawn_step_seconds.labels(step).observe((end_ns - start_ns) / 1e9)
            for step, inner in (notes.inner or {}).items():
                for name, start_ns, end_ns in inner:
                    self.spawn_step_seconds.labels(f"{step}.{name}").observe((end_ns - start_ns) / 1e9)
        elif call.op == Op.THINK:
            self._think(outcome, latency_s, notes, caller.label)

    def _think(self, outcome: str, latency_s: float, notes: Notes, agent: str) -> None:
        completion = notes.answer
        if completion is not None:
            series = self._think_of(completion.model, agent)
            usage = completion.usage
            series.input_tokens.inc(usage.prompt)
            series.output_tokens.inc(usage.output)
            if usage.cost_usd:
                if series.cost is None:  # made with the first priced answer: no $0 series for others
                    series.cost = self.think_cost.labels(series.model, agent)
                series.cost.inc(usage.cost_usd)
            result = outcome
        else:
            series = self._think_of(notes.model or self._default_model(), agent)
            result = notes.error.kind.value if notes.error is not None else outcome
        calls = series.calls.get(result)
        if calls is None:
            calls = series.calls[result] = self.think_calls.labels(series.model, agent, result)
        calls.inc()
        series.seconds.observe(latency_s)

    def _think_of(self, model: str, agent: str) -> _ThinkSeries:
        """The THINK series of ``model`` and ``agent``, looked up once (``labels()`` takes a lock
        and formats the label values on every call)."""
        series = self._think_series.get((model, agent))
        if series is None:
            series = self._think_series[(model, agent)] = _ThinkSeries(
                model, self.think_seconds.labels(model, agent), self.think_tokens.labels(model, agent, "input"),
                self.think_tokens.labels(model, agent, "output"))
        return series

    def _default_model(self) -> str:
        return self.llm.config.model

    async def _measure_lag(self) -> None:
        loop = self.kernel.loop
        while True:
            due = loop.time() + LAG_INTERVAL
            await asyncio.sleep(LAG_INTERVAL)
            self.loop_lag.observe(max(0.0, loop.time() - due))
            self.forget_ended()


@dataclass(slots=True)
class _ThinkSeries:
    """One model's and agent's THINK series (``calls`` by outcome, as they come)."""

    model: str
    seconds: Any
    input_tokens: Any
    output_tokens: Any
    cost: Any = None
    calls: dict[str, Any] = field(default_factory=dict)


class _KernelState(Collector):
    """What is sampled when scraped rather than counted as it happens."""

    def __init__(self, kernel: Kernel, agents: AgentTable, llm: LLMService, messaging: MessagingService) -> None:
        self.kernel = kernel
        self.agents = agents
        self.llm = llm
        self.messaging = messaging
        self._families: list[Metric] = []

    async def sample(self) -> None:
        kernel = self.kernel
        families: list[Metric] = []
        # Every status is exported, 0 included, so a series never vanishes.
        by_status = dict.fromkeys(Status.ALL, 0)
        for agent in self.agents:
            by_status[agent.shown_status] = by_status.get(agent.shown_status, 0) + 1
        agents = GaugeMetricFamily("agentos_agents", "Agents the kernel knows, by status (ended "
                                   "ones until pruned)", labels=["status"])
        for status, count in by_status.items():
            agents.add_metric([status], count)
        families.append(agents)
        families += self._llm()
        families += await self._mailboxes()
        rounds = CounterMetricFamily("agentos_kernel_loop_iterations", "Event loop iterations "
                                     "(reactor select() calls; NOOPs are answered inside them)")
        rounds.add_metric([], kernel.reactor.rounds)
        families.append(rounds)
        kept = CounterMetricFamily("agentos_kernel_loop_waits_holding_gil", "Reactor waits that "
                                   "kept the GIL, every other thread being parked (compiled reactor)")
        kept.add_metric([], kernel.reactor.waits_holding_gil)
        families.append(kept)
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)

    def _llm(self) -> list[Metric]:
        llm = self.llm
        queued = GaugeMetricFamily("agentos_llm_queue_depth", "THINK calls waiting for a "
                                   "scheduler slot", value=llm.scheduler.queued())
        in_flight = GaugeMetricFamily("agentos_llm_in_flight", "THINK calls holding a scheduler "
                                      "slot (llm.max_inflight at most)", value=llm.scheduler.in_flight)
        families: list[Metric] = [queued, in_flight]
        labels = ["agent"]
        used_tokens = GaugeMetricFamily("agentos_llm_budget_used_tokens", "Tokens spent and "
                                        "reserved against a token budget", labels=labels)
        limit_tokens = GaugeMetricFamily("agentos_llm_budget_limit_tokens", "Token budgets",
                                         labels=labels)
        used_usd = GaugeMetricFamily("agentos_llm_budget_used_usd", "US dollars spent and "
                                     "reserved against a USD budget", labels=labels)
        limit_usd = GaugeMetricFamily("agentos_llm_budget_limit_usd", "USD budgets", labels=labels)
        for key in llm.budgets.agents():
            budget = llm.budgets.report(key, llm.callers.policy_of(key))["budget"]
            if budget["tokens"] is None and budget["usd"] is None:
                continue
            label = [self._agent_label(key)]
            if budget["tokens"] is not None:
                limit_tokens.add_metric(label, budget["tokens"])
                used_tokens.add_metric(label, budget["tokens"] - budget["tokens_left"])
            if budget["usd"] is not None:
                limit_usd.add_metric(label, budget["usd"])
                used_usd.add_metric(label, budget["usd"] - budget["usd_left"])
        return [*families, used_tokens, limit_tokens, used_usd, limit_usd]

    def _agent_label(self, key: str) -> str:
        """A budget's key (``agent:ID``, ``client:UID:PID``) as the ``agent`` label THINK's use."""
        kind, _, rest = key.partition(":")
        if kind == "agent":
            return caller_of(self.agents, -1, rest).label
        return f"uid:{rest.partition(':')[0]}" if kind == "client" else key

    async def _mailboxes(self) -> list[Metric]:
        try:
            found = await self.messaging.boxes.depths(None)
        except DatabaseClosed:
            return []  # the kernel is stopping: the last export has no mailboxes to sample
        depth = GaugeMetricFamily("agentos_mailbox_depth", "Messages waiting (unacknowledged) in "
                                  "each mailbox", labels=["mailbox"])
        letters = GaugeMetricFamily("agentos_mailbox_dead_letters", "Dead letters kept for each "
                                    "mailbox", labels=["mailbox"])
        for mailbox, (waiting, dead) in found.items():
            if waiting:
                depth.add_metric([mailbox], waiting)
            if dead:
                letters.add_metric([mailbox], dead)
        return [depth, letters]
