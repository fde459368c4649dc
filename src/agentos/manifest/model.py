"""A validated manifest as typed, immutable objects: what ``agentos up`` and the kernel consume.

Every class mirrors one section of :mod:`.schema` field for field and takes its
defaults from there, so objects built in code get the same secure defaults as
ones loaded from YAML. Paths are absolute (resolved against the manifest's
directory), sizes are bytes, cpu is cores and durations are seconds.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..kernel.config import KernelConfig
from ..mcp.policy import to_wire
from ..sandbox.spec import WORKSPACE_PATH
from . import schema


def _default(section: schema.Section, key: str) -> Any:
    value = section.get(key).default  # type: ignore[union-attr]
    if isinstance(value, dict):
        return dataclasses.field(default_factory=dict)
    return dataclasses.field(default=value)


@dataclass(frozen=True)
class Sandbox:
    """Isolation of one agent (schema: ``agents.<name>.sandbox``)."""

    enabled: bool = _default(schema.SANDBOX, "enabled")
    network: bool = _default(schema.SANDBOX, "network")
    writable: tuple[Path, ...] = _default(schema.SANDBOX, "writable")
    readonly: tuple[Path, ...] = _default(schema.SANDBOX, "readonly")
    hostname: str | None = _default(schema.SANDBOX, "hostname")
    workspace: int | None = _default(schema.SANDBOX, "workspace")
    allow_degraded: bool = _default(schema.SANDBOX, "allow_degraded")

    @property
    def has_network(self) -> bool:
        """Whether the agent reaches the host's network: without a sandbox nothing cuts it off."""
        return self.network or not self.enabled


@dataclass(frozen=True)
class Volume:
    """One named volume an agent mounts (schema: an entry of ``agents.<name>.volumes``)."""

    name: str
    #: Where the agent sees it.
    path: str
    #: Its quota in bytes, if this agent may be the one creating it (None: the kernel's default).
    size: int | None = None
    read_only: bool = False

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"name": self.name, "path": self.path}
        if self.size is not None:
            wire["size"] = self.size
        if self.read_only:
            wire["read_only"] = True
        return wire


@dataclass(frozen=True)
class Limits:
    """Resource limits; None is unlimited (schema: ``agents.<name>.limits``)."""

    memory: int | None = _default(schema.LIMITS, "memory")
    cpu: float | None = _default(schema.LIMITS, "cpu")
    pids: int | None = _default(schema.LIMITS, "pids")
    llm_tokens: int | None = _default(schema.LIMITS, "llm_tokens")
    llm_calls_per_minute: int | None = _default(schema.LIMITS, "llm_calls_per_minute")
    llm_usd: float | None = _default(schema.LIMITS, "llm_usd")


@dataclass(frozen=True)
class Restart:
    """Restart policy, enforced by the kernel's supervisor (schema: ``agents.<name>.restart``)."""

    policy: str = _default(schema.RESTART, "policy")
    max_restarts: int = _default(schema.RESTART, "max_restarts")
    window: float = _default(schema.RESTART, "window")
    backoff: float = _default(schema.RESTART, "backoff")
    backoff_max: float = _default(schema.RESTART, "backoff_max")


@dataclass(frozen=True)
class AgentLLM:
    """Defaults for an agent's THINK calls; None defers to the kernel (schema: ``agents.<name>.llm``)."""

    provider: str | None = _default(schema.AGENT_LLM, "provider")
    #: One model, or a fallback chain.
    model: str | tuple[str, ...] | None = _default(schema.AGENT_LLM, "model")
    system: str | None = _default(schema.AGENT_LLM, "system")
    temperature: float | None = _default(schema.AGENT_LLM, "temperature")


@dataclass(frozen=True)
class Readiness:
    """When an agent counts as started (schema: ``agents.<name>.readiness``)."""

    kind: str
    pattern: str | None = _default(schema.READINESS, "pattern")
    delay: float | None = _default(schema.READINESS, "delay")
    timeout: float = _default(schema.READINESS, "timeout")


@dataclass(frozen=True)
class PlacementGroup:
    """A placement group as its members' SPAWNs name it: its name, and how many members it has
    (the replicas of every agent of the manifest that names it)."""

    name: str
    size: int


@dataclass(frozen=True)
class Placement:
    """Where on a cluster the agent runs (schema: ``agents.<name>.placement``)."""

    labels: dict[str, Any] = _default(schema.PLACEMENT, "labels")
    resources: dict[str, Any] = _default(schema.PLACEMENT, "resources")
    gpus: float | None = _default(schema.PLACEMENT, "gpus")
    cpus: float | None = _default(schema.PLACEMENT, "cpus")
    timeout: float | None = _default(schema.PLACEMENT, "timeout")
    group: PlacementGroup | None = None
    strategy: str = _default(schema.PLACEMENT, "strategy")

    def to_wire(self) -> dict[str, Any]:
        wire = {key: getattr(self, key) for key in ("labels", "resources", "gpus", "cpus", "timeout")
                if getattr(self, key) not in (None, {})}
        if self.group is not None:
            wire["group"] = {"name": self.group.name, "size": self.group.size, "strategy": self.strategy}
        return wire


@dataclass(frozen=True)
class AgentSpec:
    """One declared agent (schema: ``agents.<name>``); exactly one of ``script`` and ``command`` is set."""

    name: str
    script: Path | None = _default(schema.AGENT, "script")
    command: tuple[str, ...] | None = _default(schema.AGENT, "command")
    args: tuple[str, ...] = _default(schema.AGENT, "args")
    env: dict[str, str] = _default(schema.AGENT, "env")
    cwd: Path | None = _default(schema.AGENT, "cwd")
    replicas: int = _default(schema.AGENT, "replicas")
    sandbox: Sandbox = dataclasses.field(default_factory=Sandbox)
    limits: Limits = dataclasses.field(default_factory=Limits)
    restart: Restart = dataclasses.field(default_factory=Restart)
    llm: AgentLLM = dataclasses.field(default_factory=AgentLLM)
    permissions: tuple[str, ...] = _default(schema.AGENT, "permissions")
    #: Canonical allow entries; None inherits the spawner's list (the kernel's, under ``agentos up``).
    egress: tuple[str, ...] | None = _default(schema.AGENT, "egress")
    #: Seconds after its start, and without a syscall, after which the kernel kills it (None: never).
    timeout: float | None = _default(schema.AGENT, "timeout")
    idle_timeout: float | None = _default(schema.AGENT, "idle_timeout")
    #: A volume's name, mounted at /workspace as the agent's cwd.
    workspace: str | None = _default(schema.AGENT, "workspace")
    volumes: tuple[Volume, ...] = _default(schema.AGENT, "volumes")
    #: One of the kernel's templates (``sandbox.templates``).
    template: str | None = _default(schema.AGENT, "template")
    #: MCP tools its THINKs may call (``mcp.policy.ToolRule``s); none by default.
    tools: tuple[Any, ...] = _default(schema.AGENT, "tools")
    depends_on: tuple[str, ...] = _default(schema.AGENT, "depends_on")
    #: Read by ``agentos up`` only: the kernel never sees it.
    expect: str = _default(schema.AGENT, "expect")
    readiness: Readiness | None = None
    #: Where on a cluster it runs; None: on the kernel's machine.
    placement: Placement | None = None

    def instance_names(self) -> tuple[str, ...]:
        """The names the replicas run under: the agent's name, or ``name-1`` ... ``name-N``."""
        if self.replicas == 1:
            return (self.name,)
        return tuple(f"{self.name}-{i}" for i in range(1, self.replicas + 1))

    def to_spawn_request(self, instance: str | None = None, project: str | None = None) -> dict[str, Any]:
        """The SPAWN payload for one replica (the first when ``instance`` is None), in ``project``."""
        names = self.instance_names()
        name = names[0] if instance is None else instance
        if name not in names:
            raise ValueError(f"{name!r} is not a replica of agent {self.name!r} (replicas: {', '.join(names)})")
        request: dict[str, Any] = {"name": name}
        if project is not None:
            request["project"] = project
        if self.script is not None:
            request["script"] = str(self.script)
        if self.command is not None:
            request["command"] = list(self.command)
        request["args"] = list(self.args)
        request["env"] = dict(self.env)
        if self.cwd is not None:
            request["cwd"] = str(self.cwd)
        request["sandboxed"] = self.sandbox.enabled
        request["network"] = self.sandbox.has_network
        request["allow_degraded"] = self.sandbox.allow_degraded
        if self.sandbox.enabled:
            request["writable_paths"] = [str(p) for p in self.sandbox.writable]
            request["readonly_paths"] = [str(p) for p in self.sandbox.readonly]
        # None is sent as null: unlimited (an absent limit would get the kernel's default).
        request["limits"] = {key: getattr(self.limits, key) for key in _CGROUP_LIMITS}
        request["capabilities"] = list(self.permissions)
        if self.egress is not None:
            request["egress"] = list(self.egress)
        request["restart"] = dataclasses.asdict(self.restart)
        # Only when asked for: a kernel that cannot honour them refuses the SPAWN rather than ignore them.
        if self.sandbox.hostname is not None:
            request["hostname"] = self.sandbox.hostname
        if self.sandbox.workspace is not None:
            request["workspace"] = {"size": self.sandbox.workspace}
        volumes = [*self.volumes, *([Volume(self.workspace, WORKSPACE_PATH)] if self.workspace else [])]
        if volumes:
            request["volumes"] = [volume.to_wire() for volume in volumes]
        if self.timeout is not None:
            request["timeout"] = self.timeout
        if self.idle_timeout is not None:
            request["idle_timeout"] = self.idle_timeout
        if self.template is not None:
            request["template"] = self.template
        if self.tools:
            request["tools"] = to_wire(self.tools)
        if self.placement is not None:
            request["placement"] = self.placement.to_wire()
        llm = {**_without_none(self.llm), **self.llm_budget()}
        if llm:
            request["llm"] = llm
        return request

    def llm_budget(self) -> dict[str, float]:
        """The LLM gateway's per-agent policy keys (``tokens``, ``calls_per_minute``, ``usd``) that
        are set."""
        budget = {"tokens": self.limits.llm_tokens, "calls_per_minute": self.limits.llm_calls_per_minute,
                  "usd": self.limits.llm_usd}
        return {key: value for key, value in budget.items() if value is not None}


@dataclass(frozen=True)
class KernelLLM:
    """The kernel's LLM gateway settings (schema: ``kernel.llm``)."""

    provider: str = _default(schema.KERNEL_LLM, "provider")
    model: str | tuple[str, ...] | None = _default(schema.KERNEL_LLM, "model")
    embedding_model: str | None = _default(schema.KERNEL_LLM, "embedding_model")
    safety: dict[str, Any] | None = _default(schema.KERNEL_LLM, "safety")
    base_url: str | None = _default(schema.KERNEL_LLM, "base_url")
    api_version: str | None = _default(schema.KERNEL_LLM, "api_version")
    max_concurrency: int | None = _default(schema.KERNEL_LLM, "max_concurrency")
    deadline: float | None = _default(schema.KERNEL_LLM, "deadline")
    max_deadline: float | None = _default(schema.KERNEL_LLM, "max_deadline")
    prices: dict[str, Any] | None = _default(schema.KERNEL_LLM, "prices")
    cache: dict[str, Any] | None = _default(schema.KERNEL_LLM, "cache")


@dataclass(frozen=True)
class KernelConnections:
    """How many connections one client may hold at once (schema: ``kernel.connections``)."""

    per_uid: int = _default(schema.KERNEL_CONNECTIONS, "per_uid")
    per_agent: int = _default(schema.KERNEL_CONNECTIONS, "per_agent")


@dataclass(frozen=True)
class KernelSection:
    """How to start a kernel for this manifest (schema: ``kernel``); None defers to KernelConfig."""

    socket: Path | None = _default(schema.KERNEL, "socket")
    state_dir: Path | None = _default(schema.KERNEL, "state_dir")
    log_level: str = _default(schema.KERNEL, "log_level")
    llm: KernelLLM = dataclasses.field(default_factory=KernelLLM)
    connections: KernelConnections = dataclasses.field(default_factory=KernelConnections)
    processes: dict[str, Any] = _default(schema.KERNEL, "processes")
    sandbox: dict[str, Any] = _default(schema.KERNEL, "sandbox")
    state: dict[str, Any] = _default(schema.KERNEL, "state")
    messaging: dict[str, Any] = _default(schema.KERNEL, "messaging")
    permissions: dict[str, Any] = _default(schema.KERNEL, "permissions")
    egress: dict[str, Any] = _default(schema.KERNEL, "egress")
    audit: dict[str, Any] = _default(schema.KERNEL, "audit")
    supervision: dict[str, Any] = _default(schema.KERNEL, "supervision")
    telemetry: dict[str, Any] = _default(schema.KERNEL, "telemetry")
    mcp: dict[str, Any] = _default(schema.KERNEL, "mcp")
    cluster: dict[str, Any] = _default(schema.KERNEL, "cluster")

    def sections(self) -> dict[str, dict[str, Any]]:
        """Per-subsystem settings for KernelConfig.sections (``llm``, ``connections``, the pass-through ones)."""
        sections = {name: dict(getattr(self, name)) for name in schema.SUBSYSTEMS if getattr(self, name)}
        llm = _without_none(self.llm)
        if "max_concurrency" in llm:
            # The gateway's name for the same setting.
            llm["max_inflight"] = llm.pop("max_concurrency")
        sections["llm"] = llm
        sections["connections"] = dataclasses.asdict(self.connections)
        return sections

    def to_config(self) -> KernelConfig:
        """A KernelConfig: this section's settings over the environment's defaults."""
        config = KernelConfig(log_level=self.log_level, sections=self.sections())
        if self.socket is not None:
            config.socket_path = self.socket
        if self.state_dir is not None:
            config.state_dir = self.state_dir
        return config


@dataclass(frozen=True)
class Manifest:
    """A whole manifest file (schema: top level); ``agents`` in declaration order."""

    path: Path
    agents: tuple[AgentSpec, ...]
    kernel: KernelSection = dataclasses.field(default_factory=KernelSection)
    version: int = _default(schema.MANIFEST, "version")
    name: str | None = _default(schema.MANIFEST, "name")
    #: The MCP servers the kernel runs (``mcp.config``), relative paths already made absolute.
    mcp_servers: dict[str, Any] = _default(schema.MANIFEST, "mcp_servers")

    @property
    def directory(self) -> Path:
        """Where relative paths in the manifest were resolved from."""
        return self.path.parent

    @property
    def project(self) -> str:
        """The team's project: ``name``, else the manifest's directory name made a valid one."""
        return self.name or project_name(self.directory.name)

    def agent(self, name: str) -> AgentSpec:
        """The agent declared as ``name``; KeyError if none."""
        for spec in self.agents:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def start_order(self) -> list[AgentSpec]:
        """Agents in an order where each comes after everything it depends on; ties keep declaration order."""
        declared = {spec.name for spec in self.agents}
        for spec in self.agents:
            unknown = [d for d in spec.depends_on if d not in declared]
            if unknown:
                raise ValueError(f"agent {spec.name!r} depends on undeclared {', '.join(unknown)}")
        started: set[str] = set()
        order: list[AgentSpec] = []
        waiting = list(self.agents)
        while waiting:
            startable = next((s for s in waiting if started.issuperset(s.depends_on)), None)
            if startable is None:
                raise ValueError("dependency cycle among " + ", ".join(s.name for s in waiting))
            waiting.remove(startable)
            started.add(startable.name)
            order.append(startable)
        return order

    def kernel_config(self) -> KernelConfig:
        """The kernel section as a KernelConfig. The agents' LLM budgets are not in it: each
        travels in its agent's SPAWN request (``llm``), so a kernel shared by several projects
        never applies one team's budget to another team's agent of the same name."""
        config = self.kernel.to_config()
        if self.mcp_servers:
            config.sections["mcp"] = {**config.sections.get("mcp", {}), "servers": self.mcp_servers}
        return config

    def spawn_requests(self, project: str | None = None) -> Iterator[dict[str, Any]]:
        """SPAWN payloads for every replica of every agent, in start order, in ``project`` (the
        manifest's own by default)."""
        for spec in self.start_order():
            for name in spec.instance_names():
                yield spec.to_spawn_request(name, project or self.project)


def project_name(text: str) -> str:
    """``text`` (a directory's name) as a project name, as compose makes one: lower case, every
    run of other characters a ``-``; ``default`` if nothing is left."""
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:63].rstrip("-")
    return name or "default"


#: Limits that go to the agent's cgroup; the LLM ones go to the gateway.
_CGROUP_LIMITS = ("memory", "pids", "cpu")


def _without_none(obj: Any) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(obj).items() if v is not None}
