"""Who is thinking: an agent or an outside client, with the policy and defaults that apply.

An agent the kernel spawned is ``agent:<id>`` for scheduling and usage reports,
and owns contexts and budgets by name within its project (``name:<name>``, or
``name:<project>/<name>`` for an agent of a project: two teams' ``worker``s never share
a budget or a conversation), so a restarted agent finds its conversations again and
cannot start over with a fresh budget; its policy comes from ``llm.agents`` (by id,
then ``project/name``, then name) and
from its manifest's ``llm`` section (SPAWN's ``llm``), which the processes service hands
over as it starts the agent (``Callers.agent_started``). An outside client is scheduled per
process (``client:<uid>:<pid>``) and owns contexts and budgets per user (``uid:<uid>``).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from msgspec import UnsetType

from ..protocol.requests import LLMWire, given
from .config import AgentPolicy, LLMConfig
from .request import ThinkArgs, model_chain

if TYPE_CHECKING:
    from ..kernel.identity import Identity

log = logging.getLogger("agentos.llm")


@dataclass(frozen=True)
class AgentDefaults:
    """An agent's manifest ``llm`` section: THINK defaults and budget overrides."""

    model: str | None = None
    #: The rest of the manifest's fallback chain, tried in order after ``model``.
    fallbacks: tuple[str, ...] = ()
    system: str | None = None
    temperature: float | None = None
    tokens: int | None = None
    calls_per_minute: int | None = None
    usd: float | None = None

    @classmethod
    def from_wire(cls, llm: LLMWire) -> AgentDefaults:
        """SPAWN's ``llm``, as its declared request typed it."""
        model = given(llm.model)
        try:
            # A model named twice is tried once.
            chain = model_chain(list(dict.fromkeys(model)) if isinstance(model, list) else model,
                                "llm.model")
        except ValueError:
            chain = ()  # a name of blanks: SPAWN's type lets it through, no model has it
        return cls(model=chain[0] if chain else None, fallbacks=chain[1:],
                   system=given(llm.system), temperature=given(llm.temperature),
                   tokens=given(llm.tokens), calls_per_minute=given(llm.calls_per_minute),
                   usd=given(llm.usd))

    def apply(self, policy: AgentPolicy) -> AgentPolicy:
        """The policy with this manifest's budgets, and its model allowed."""
        return replace(
            policy,
            max_tokens=self.tokens if self.tokens is not None else policy.max_tokens,
            calls_per_minute=(self.calls_per_minute if self.calls_per_minute is not None
                              else policy.calls_per_minute),
            max_usd=float(self.usd) if self.usd is not None else policy.max_usd,
            models=(*policy.models, self.model, *self.fallbacks) if self.model else policy.models)

    def fill(self, args: ThinkArgs) -> ThinkArgs:
        """``args`` with the manifest's model chain, system and temperature where the call set none."""
        options = args.options
        if self.temperature is not None and options.temperature is None:
            options = replace(options, temperature=float(self.temperature))
        if args.model is None and self.model is not None:
            args = replace(args, model=self.model, fallbacks=self.fallbacks)
        return replace(args, system=args.system or self.system, options=options)


@dataclass(frozen=True)
class Caller:
    """Who a THINK is for: the key usage is reported under (and scheduled by), the owner
    of its contexts and budget, the policy."""

    key: str
    owner: str
    policy: AgentPolicy
    admin: bool
    defaults: AgentDefaults | None = None


class Callers:
    """Resolves identities to callers; learns agents' names and manifests from lifecycle events."""

    def __init__(self, config: LLMConfig) -> None:
        self.config = config
        #: An agent's name, as ``project/name`` for an agent of a project.
        self._names: dict[str, str] = {}
        self._defaults: dict[str, AgentDefaults] = {}
        #: The agent that spawned each agent (agents an outside client spawned have none).
        self._parents: dict[str, str] = {}
        #: Each caller as ``of`` made it, by agent id or (uid, pid, admin): every THINK asks, and
        #: making one (its keys, an agent's policy down its spawn tree) costs ~15k instructions.
        #: Emptied whenever what they are made of changes (``agent_started``, ``forget``).
        self._made: dict[str | tuple[int, int, bool], Caller] = {}

    def of(self, identity: Identity) -> Caller:
        agent_id = identity.agent_id
        found = self._made.get(agent_id if agent_id is not None
                               else (identity.uid, identity.pid, identity.admin))
        return found if found is not None else self._make(identity)

    def _make(self, identity: Identity) -> Caller:
        if len(self._made) >= _MAX_MADE:
            self._made.clear()  # callers come and go; the live ones are made again
        if identity.agent_id is not None:
            key = agent_key(identity.agent_id)
            # Contexts and budgets belong to the agent's name (in its project), which outlives its id.
            name = self._names.get(identity.agent_id)
            caller = self._made[identity.agent_id] = Caller(
                key=key, owner=f"name:{name}" if name else key, policy=self.policy_of(key),
                admin=False, defaults=self._defaults.get(identity.agent_id))
            return caller
        caller = self._made[identity.uid, identity.pid, identity.admin] = Caller(
            key=f"client:{identity.uid}:{identity.pid}", owner=f"uid:{identity.uid}",
            policy=self.config.defaults, admin=identity.admin)
        return caller

    def policy_of(self, key: str) -> AgentPolicy:
        """The policy behind a caller key (outside clients have the defaults). A spawned
        agent's budgets are never looser than its spawner's, however either was configured."""
        if not key.startswith("agent:"):
            return self.config.defaults
        agent_id = key.removeprefix("agent:")
        name = self._names.get(agent_id)
        policy = self.config.policy_for(agent_id, name, name and name.rpartition("/")[2])
        defaults = self._defaults.get(agent_id)
        if defaults is not None:
            policy = defaults.apply(policy)
        parent = self._parents.get(agent_id)
        return policy if parent is None else policy.within(self.policy_of(agent_key(parent)))

    def team_of(self, key: str) -> str:
        """The team a caller key's usage adds up in: an agent's is the top of its spawn tree
        (the agent an outside client started), by name; an outside client's, its user."""
        if not key.startswith("agent:"):
            return "uid:" + key.split(":")[1]
        agent_id = key.removeprefix("agent:")
        while agent_id in self._parents:
            agent_id = self._parents[agent_id]
        name = self._names.get(agent_id)
        return f"name:{name}" if name else agent_key(agent_id)

    def agent_started(self, agent_id: str, name: str, project: str | None, parent: str | None,
                      llm: LLMWire | UnsetType | None = None) -> None:
        """The process service started agent ``agent_id``, spawned by the agent ``parent`` (None:
        by an outside client), with SPAWN's ``llm`` (its THINK defaults and budgets)."""
        self._made.clear()
        self._names[agent_id] = f"{project}/{name}" if project else name
        if parent is not None:
            self._parents[agent_id] = parent
        if isinstance(llm, LLMWire):
            self._defaults[agent_id] = AgentDefaults.from_wire(llm)
            provider = given(llm.provider)
            if provider is not None and provider != self.config.provider:
                log.warning("agent %s asks for LLM provider %r; this kernel serves %r only",
                            self._names[agent_id], provider, self.config.provider)

    def forget(self, agent_ids: Iterable[str]) -> None:
        """Agents the kernel forgot (ended, past ``processes.keep_ended``)."""
        self._made.clear()
        for agent_id in agent_ids:
            self._names.pop(agent_id, None)
            self._defaults.pop(agent_id, None)
            self._parents.pop(agent_id, None)

    def __len__(self) -> int:
        return len(self._names.keys() | self._defaults.keys() | self._parents.keys())


#: Callers ``of`` keeps made at most (agents and client processes).
_MAX_MADE = 4096


def agent_key(agent_id: str) -> str:
    return f"agent:{agent_id}"
