"""The manifest schema: every key, its type, its default and what it means.

This table is the single source of truth. The validator walks it, the model's
dataclasses mirror it field for field (a test checks), and the reference tables
in docs/manifest.md are generated from it (``python -m agentos.manifest.schema``).
Defaults are the secure choice: sandbox on, network off, bounded memory and pids,
no restarts, and only the capabilities an ordinary agent needs.
"""
from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..kernel.config import ConnectionLimits
from ..llm.config import PROVIDERS
from ..permissions.capabilities import DEFAULT_CHILD_CAPABILITIES, Capability
from ..protocol.lifecycle import Status
from ..protocol.requests import DEFAULT_CPU, DEFAULT_MEMORY, DEFAULT_PIDS, GROUP_STRATEGIES
from ..supervision.policy import POLICIES

#: Capability names an agent may hold (agentos.permissions); ``state`` means both state scopes.
CAPABILITIES = (*(c.value for c in Capability), "state")
DEFAULT_CAPABILITIES = tuple(c.value for c in Capability if c in DEFAULT_CHILD_CAPABILITIES)

#: How an agent may end without failing `agentos up` (``exited``: exit 0; ``failed``: non-zero or a signal).
EXPECTED_ENDINGS = (Status.EXITED, Status.FAILED, Status.OOM_KILLED, "any")
READINESS_KINDS = ("ready-call", "log-line", "delay")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

#: Value a size, cores or count limit takes to mean "no limit".
UNLIMITED = "unlimited"


class Type(enum.Enum):
    """How a value is written in YAML; the value is the name the docs show."""

    STRING = "string"
    BOOL = "boolean"
    INT = "integer"
    NUMBER = "number"
    SIZE = "size"
    CPU = "cores"
    DURATION = "duration"
    PATH = "path"
    PATHS = "list of paths"
    STRINGS = "list of strings"
    COMMAND = "string or list of strings"
    MODELS = "model id or list of model ids"
    ENV = "mapping of names to strings"
    CHOICE = "one of"
    CHOICES = "list, each one of"
    NAMES = "list of agent names"
    VOLUME = "volume name"
    VOLUMES = "list of volume mounts"
    HOSTS = "list of egress entries"
    TOOLS = "list of MCP tools"
    SECTION = "mapping"
    AGENTS = "mapping of names to agents"
    SETTINGS = "mapping, passed through"


@dataclass(frozen=True)
class Field:
    """One key of a section."""

    key: str
    type: Type
    doc: str
    default: Any = None
    #: How the default reads in the docs when ``default`` alone would mislead.
    default_doc: str | None = None
    required: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    #: Accepts ``unlimited`` (becoming None).
    unlimited: bool = False
    #: For paths: "file", "dir" or "any" must exist once resolved; None: need not exist.
    exists: str | None = None
    section: Section | None = None


@dataclass(frozen=True)
class Section:
    """A mapping of known keys. ``path`` names it in messages and docs."""

    path: str
    doc: str
    fields: tuple[Field, ...]
    #: Keys refused with a specific fix rather than "unknown key".
    refused: Mapping[str, str] = field(default_factory=dict)

    def get(self, key: str) -> Field | None:
        for f in self.fields:
            if f.key == key:
                return f
        return None

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(f.key for f in self.fields)


SANDBOX = Section("agents.<name>.sandbox", "How the agent is isolated from the host and from other agents.", (
    Field("enabled", Type.BOOL, "Run the agent in its own namespaces (pid, mount, uts, ipc, net, cgroup) "
          "with seccomp, Landlock and no_new_privs. Turning it off runs a plain child process.", True),
    Field("network", Type.BOOL, "Share the host's network. Off, the agent sees only its own loopback.", False),
    Field("writable", Type.PATHS, "Host paths bound read-write into the sandbox; the only places outside its "
          "private /tmp and work dir it may write. Must exist.", (), exists="any"),
    Field("readonly", Type.PATHS, "Extra host paths bound read-only into the sandbox. Must exist.", (), exists="any"),
    Field("hostname", Type.STRING, "Hostname inside the sandbox.", None, default_doc="the agent's name"),
    Field("workspace", Type.SIZE, "A private writable directory at /workspace (the default cwd) with this "
          "disk quota, e.g. 256Mi (at least 1Mi): its own file system, removed when the agent ends. Needs a "
          "root kernel (a rootless one gives a tmpfs of that size only with allow_degraded).", None,
          default_doc="none"),
    Field("allow_degraded", Type.BOOL, "Start even if a requested isolation layer or limit cannot be enforced "
          "on this host (the spawn report says which). Off, SPAWN fails instead.", False),
))

LIMITS = Section("agents.<name>.limits", "Resources the agent may use, enforced by the kernel.", (
    Field("memory", Type.SIZE, "Memory (cgroup), e.g. 256Mi or 1Gi; over it the agent is OOM-killed.",
          DEFAULT_MEMORY, default_doc="512Mi", unlimited=True),
    Field("cpu", Type.CPU, "CPU time in cores: 0.5, 2, or 500m.", DEFAULT_CPU, unlimited=True),
    Field("pids", Type.INT, "Processes and threads in the agent's tree.", DEFAULT_PIDS, minimum=1,
          unlimited=True),
    Field("llm_tokens", Type.INT, "Total LLM tokens the agent may use.", None, minimum=1, unlimited=True,
          default_doc="unlimited"),
    Field("llm_calls_per_minute", Type.INT, "THINK calls per minute.", None, minimum=1, unlimited=True,
          default_doc="unlimited"),
    Field("llm_usd", Type.NUMBER, "US dollars the agent may spend on LLM calls, priced by `kernel.llm.prices` "
          "(a model without a price is refused under this budget).", None, minimum=0.01, unlimited=True,
          default_doc="unlimited"),
))

RESTART = Section("agents.<name>.restart", "What the kernel does when the agent exits.", (
    Field("policy", Type.CHOICE, "`never`; `on-failure`: restart after a non-zero exit, a signal, an OOM kill "
          "or a timeout (a clean exit 0 is not a failure); `always`: restart after any exit.", "never",
          choices=POLICIES),
    Field("max_restarts", Type.INT, "Restarts allowed within `window`; one more marks the agent failed.",
          5, minimum=1),
    Field("window", Type.DURATION, "The sliding window `max_restarts` counts in.", 60.0, default_doc="60s"),
    Field("backoff", Type.DURATION, "Delay before the first restart; doubles on each consecutive restart.",
          1.0, default_doc="1s"),
    Field("backoff_max", Type.DURATION, "Longest delay between restarts.", 60.0, default_doc="60s"),
))

AGENT_LLM = Section("agents.<name>.llm", "Defaults for the agent's THINK calls.", (
    Field("provider", Type.CHOICE, "LLM provider.", None, choices=PROVIDERS, default_doc="the kernel's"),
    Field("model", Type.MODELS, "Model id, or a fallback chain: a list of model ids tried in order when one "
          "is rate limited, failing or too slow (docs/llm.md).", None, default_doc="the kernel's"),
    Field("system", Type.STRING, "System instruction sent with every call.", None, default_doc="none"),
    Field("temperature", Type.NUMBER, "Sampling temperature.", None, minimum=0.0, maximum=2.0,
          default_doc="the model's"),
))

READINESS = Section("agents.<name>.readiness", "When the agent counts as started, so its dependents may start. "
                    "Without this section it is ready once spawned.", (
    Field("kind", Type.CHOICE, "`ready-call`: the agent calls `client.ready()`; `log-line`: a line of its output "
          "matches `pattern`; `delay`: `delay` after it started.", None, default_doc="required", required=True,
          choices=READINESS_KINDS),
    Field("pattern", Type.STRING, "Regular expression (Python syntax) for `log-line`.", None),
    Field("delay", Type.DURATION, "How long to wait for `delay`.", None),
    Field("timeout", Type.DURATION, "Give up (and stop the team) if not ready after this long.", 30.0,
          default_doc="30s"),
))

PLACEMENT = Section("agents.<name>.placement", "Where it runs when the kernel drives a Ray cluster (`kernel.cluster`, "
                    "docs/cluster.md): on a node that has these labels and resources. A kernel without a "
                    "cluster runs the agent on its own machine and says so in its isolation report "
                    "(`placement`). `placement: {}` asks for any node.", (
    Field("labels", Type.SETTINGS, "Node labels its node must carry, label to value (`pool: gpu`): Ray's "
          "`label_selector`.", {}, default_doc="{}"),
    Field("resources", Type.SETTINGS, "Custom resources it reserves on its node, name to amount "
          "(`agent_slots: 1`), as `ray start --resources` declared them.", {}, default_doc="{}"),
    Field("gpus", Type.NUMBER, "GPUs it reserves on its node.", None, minimum=0, default_doc="none"),
    Field("cpus", Type.NUMBER, "CPUs it reserves in Ray's accounting (its cgroup's `limits.cpu` is what "
          "bounds it). Its `limits.memory` is reserved as Ray's `memory`.", None, minimum=0,
          default_doc="none"),
    Field("timeout", Type.DURATION, "How long it may wait for a node; then its SPAWN fails `unavailable` "
          "(meanwhile `agentos ps` shows it `pending`, with why).", None,
          default_doc="the kernel's `cluster.placement_timeout` (60s)"),
    Field("group", Type.STRING, "A placement group (a Ray placement group) of this agent's replicas and every "
          "other agent naming it: when its first member starts, a bundle is reserved for each member (what one "
          "reserves: `limits.memory`, `cpus`, `gpus`, `resources`) on nodes `strategy` picks. Every member "
          "must ask for the same reservation, labels and strategy. Not inherited by an agent's children.",
          None, default_doc="none"),
    Field("strategy", Type.CHOICE, "How the group's members are placed: `pack` onto as few nodes as hold "
          "them, `spread` across as many; `strict-pack` all on one node, `strict-spread` each on a node of "
          "its own (the members wait for room rather than be placed otherwise).", "pack",
          choices=GROUP_STRATEGIES),
))

AGENT = Section("agents.<name>", "One agent. The key is its name.", (
    Field("script", Type.PATH, "Python file run with the agent SDK available. Exactly one of `script` and "
          "`command`.", None, exists="file"),
    Field("command", Type.COMMAND, "Program and arguments for a non-Python agent; a string is split like a "
          "shell would (no shell runs). A relative program path resolves against the manifest's directory, "
          "a bare name is looked up on PATH.", None),
    Field("args", Type.STRINGS, "Arguments after the script or command.", ()),
    Field("env", Type.ENV, "Environment variables. Names starting AGENTOS_ are the kernel's.", {},
          default_doc="{}"),
    Field("cwd", Type.PATH, "Working directory.", None, exists="dir", default_doc="the agent's work dir"),
    Field("replicas", Type.INT, "Identical copies to run, named `<name>-1`, `<name>-2` ... when more than one.",
          1, minimum=1, maximum=1000),
    Field("sandbox", Type.SECTION, SANDBOX.doc, section=SANDBOX),
    Field("limits", Type.SECTION, LIMITS.doc, section=LIMITS),
    Field("restart", Type.SECTION, RESTART.doc, section=RESTART),
    Field("llm", Type.SECTION, AGENT_LLM.doc, section=AGENT_LLM),
    Field("permissions", Type.CHOICES, "Capabilities: which families of syscalls the agent may use "
          "(see Permissions below).", DEFAULT_CAPABILITIES, choices=CAPABILITIES),
    Field("egress", Type.HOSTS, "Where the agent may fetch through the kernel's HTTP syscall (with the `http` "
          "permission): `example.com`, `example.com:8443`, `*.example.com`, an IP address or a CIDR block. "
          "Each must be within the kernel's `egress.allow`. A name that resolves to a loopback, private or "
          "link-local address is refused unless that address is listed too (docs/egress.md).", None,
          default_doc="the kernel's `egress.allow`"),
    Field("timeout", Type.DURATION, "The kernel kills the agent this long after it starts (paused time "
          "counts); it ends `timed_out`, a failure to `restart`. A child agent never outlives its "
          "spawner's timeout.", None, minimum=0.001, default_doc="none"),
    Field("idle_timeout", Type.DURATION, "The kernel kills the agent after this long without a syscall of its "
          "own starting or finishing (output is not activity; paused time does not count). It ends "
          "`timed_out`, a failure to `restart`.", None, minimum=0.001, default_doc="none"),
    Field("workspace", Type.VOLUME, "A named volume of the project as the agent's working directory: mounted "
          "at /workspace (its cwd unless `cwd` is set), created on first use with a 1Gi disk quota (for another "
          "size, list it under `volumes` with `path: /workspace`). Shared by every agent that names it, kept "
          "after they end (`agentos volume rm`, `agentos down --volumes` remove it). Not with "
          "`sandbox.workspace`.", None, default_doc="none"),
    Field("volumes", Type.VOLUMES, "Named volumes of the project, each `NAME:/path[:ro,size=SIZE]` or "
          "`{name, path, size, read_only}`: directories with a disk quota (`size`, set when the volume is "
          "created: default 1Gi) that outlive the agent and the kernel. Needs a root kernel (a rootless "
          "one gives a plain directory without a quota, only with `allow_degraded`).", (), default_doc="[]"),
    Field("template", Type.STRING, "One of the kernel's templates (`kernel.sandbox.templates`): the agent "
          "sees the template's `root` read-only under its usual view, and a script agent is forked with the "
          "template's `preload` modules already imported (docs/sandboxes.md, Templates). The kernel refuses a "
          "name it does not have, and one whose root lies outside what the spawner may read.", None,
          default_doc="none"),
    Field("tools", Type.TOOLS, "The MCP tools its THINKs with `tools: mcp` may call (docs/mcp.md): "
          "`server.tool` or a pattern such as `fs.*`, each plain or `{tool: fs.write_file, approve: true}` "
          "(every call then waits for a human: `agentos approve`). A child agent gets only tools its "
          "spawner has.", (), default_doc="none"),
    Field("depends_on", Type.NAMES, "Agents that must be ready before this one starts (all their replicas).", ()),
    Field("expect", Type.CHOICE, "How the agent is expected to end, for `agentos up`'s exit status: `exited` "
          "(exit 0), `failed` (a non-zero exit, a signal, or restarts given up), `oom_killed` (killed at its "
          "memory limit) or `any`. An agent that ends otherwise makes `up` exit 1; one stopped by KILL "
          "is never a failure.", "exited", choices=EXPECTED_ENDINGS),
    Field("readiness", Type.SECTION, READINESS.doc, section=READINESS, default_doc="ready once spawned"),
    Field("placement", Type.SECTION, PLACEMENT.doc, section=PLACEMENT, default_doc="the kernel's machine"),
), refused={"name": "the agent's name is its key under agents:, e.g. 'agents: {worker: {script: ...}}'"})

KERNEL_LLM = Section("kernel.llm", "The kernel's LLM gateway. API keys never go in a manifest: the kernel reads "
                     "GEMINI_API_KEY (or GOOGLE_API_KEY) or OPENAI_API_KEY from its environment.", (
    Field("provider", Type.CHOICE, "Provider used when an agent names none.", "gemini", choices=PROVIDERS),
    Field("model", Type.MODELS, "Default model id, or a fallback chain (a list tried in order).", None,
          default_doc="the provider's default"),
    Field("embedding_model", Type.STRING, "Model EMBED uses when a call names none.", None,
          default_doc="gemini-embedding-001 (gemini); none (openai: calls must name one)"),
    Field("safety", Type.SETTINGS, "Gemini safety settings for every call: category to threshold, e.g. "
          "`harassment: block_only_high` (docs/llm.md). Checked when the kernel starts.", None,
          default_doc="the model's"),
    Field("base_url", Type.STRING, "Provider endpoint, e.g. a local OpenAI-compatible server.", None,
          default_doc="the provider's"),
    Field("api_version", Type.STRING, "Gemini API version (v1beta, v1).", None, default_doc="the provider's"),
    Field("max_concurrency", Type.INT, "LLM calls in flight at once, across all agents.", None, minimum=1,
          default_doc="the gateway's"),
    Field("deadline", Type.DURATION, "A THINK's whole time, queueing, retries and waits included; a call's "
          "`timeout` may ask for another, up to `max_deadline`.", None, default_doc="300s"),
    Field("max_deadline", Type.DURATION, "The longest `timeout` a THINK may ask for; a longer one is cut to "
          "it.", None, default_doc="900s, or `deadline` if longer"),
    Field("prices", Type.SETTINGS, "USD per million tokens by model: `gemini-2.5-flash: {input: 0.3, "
          "output: 2.5, cached_input: 0.03}`; what `llm_usd` budgets and USAGE costs are priced with "
          "(docs/llm.md). Checked when the kernel starts.", None, default_doc="none (calls are unpriced)"),
    Field("cache", Type.SETTINGS, "Caching of long shared prompt prefixes (Gemini): `enabled`, `min_tokens`, "
          "`ttl`; see docs/llm.md. Checked when the kernel starts.", None,
          default_doc="enabled, 1024 tokens, 1h"),
), refused={"api_key": "export GEMINI_API_KEY or OPENAI_API_KEY in the kernel's environment instead"})

KERNEL_CONNECTIONS = Section("kernel.connections", "How many connections one client may hold at once "
                             "(docs/protocol.md, Connection limits). Past a cap a new connection is answered "
                             "`busy`, naming the cap, and closed; the client's others carry on.", (
    Field("per_uid", Type.INT, "Connections of one outside client uid (by SO_PEERCRED), the kernel's own uid "
          "included.", ConnectionLimits.per_uid, minimum=1),
    Field("per_agent", Type.INT, "Connections of one agent: the one it inherits (counted, never refused) and "
          "any it opens by path.", ConnectionLimits.per_agent, minimum=1),
))

#: Subsystems whose settings a manifest passes through to the kernel unchanged (KernelConfig.sections).
SUBSYSTEMS = ("processes", "sandbox", "state", "messaging", "permissions", "egress", "audit", "supervision",
              "telemetry", "mcp", "cluster")
_SUBSYSTEM_DOCS = {
    "telemetry": "Traces and metrics (docs/observability.md): `traces` (true/false; unset: on when "
                 "OTEL_* variables name an exporter), `metrics` (`HOST:PORT` of a Prometheus endpoint, "
                 "loopback unless `metrics_remote: true`), `series_grace` (seconds an ended agent's "
                 "metric series stay; 300). Metrics over OTLP follow the OTEL_* variables. Checked when "
                 "the kernel starts.",
    "sandbox": "Templates: `templates: {NAME: {root, preload, python_path, env, eager}}`, "
               "`template_zygotes` (4) and `template_zygote_memory` (1Gi); see Templates below. Checked here, "
               "relative paths from the manifest's directory.",
    "mcp": "Tool routing (docs/mcp.md): `approval_timeout` (5m), `max_steps` (8), `start_timeout` (60s); "
           "the servers are the top-level `mcp_servers`.",
    "cluster": "Drive a Ray cluster (docs/cluster.md, the `agentos[ray]` extra): `address` (`HOST:PORT` of its "
               "head, `ray://HOST:PORT`, or `auto`), `placement_timeout` (60s), `hosts` (`node`: one host actor "
               "per node runs its agents, the default; `agent`: one per agent). Agents with a `placement` run "
               "on its nodes. `agentos kernel --cluster ADDR` sets `address`.",
}

KERNEL = Section("kernel", "How `agentos up` starts a kernel when none is running.", (
    Field("socket", Type.PATH, "Unix socket the kernel listens on.", None,
          default_doc="$AGENTOS_SOCKET, /run/agentos/kernel.sock for root, else the user's runtime dir"),
    Field("state_dir", Type.PATH, "Where logs, state and contexts live.", None,
          default_doc="$AGENTOS_STATE_DIR, /var/lib/agentos for root, else ~/.local/state/agentos"),
    Field("log_level", Type.CHOICE, "Kernel log level.", "INFO", choices=LOG_LEVELS),
    Field("llm", Type.SECTION, KERNEL_LLM.doc, section=KERNEL_LLM),
    Field("connections", Type.SECTION, KERNEL_CONNECTIONS.doc, section=KERNEL_CONNECTIONS),
    *(Field(name, Type.SETTINGS, _SUBSYSTEM_DOCS.get(name, f"Settings for the {name} subsystem, passed "
            "through unchanged."), {}, default_doc="{}") for name in SUBSYSTEMS),
))

MANIFEST = Section("", "A manifest file. Top-level keys starting `x-` are ignored, to hold YAML anchors.", (
    Field("version", Type.INT, "Manifest format version.", 1, minimum=1, maximum=1),
    Field("name", Type.STRING, "The project: the team's name on the kernel. Agent names are unique within a "
          "project, and its mail, state and registered names are its own (`agentos down --volumes` wipes "
          "them). Lower-case letters, digits and `-`, at most 63, starting with a letter or digit. "
          "`agentos up -p NAME` overrides it.", None,
          default_doc="the manifest's directory name, lower-cased, other characters as `-`"),
    Field("kernel", Type.SECTION, KERNEL.doc, section=KERNEL),
    Field("agents", Type.AGENTS, "The agents, by name, in the order they are declared.", None, required=True,
          default_doc="required"),
    Field("mcp_servers", Type.SETTINGS, "MCP servers the kernel runs, each as a sandboxed agent `mcp/<name>`: "
          "`{NAME: {command, env, cwd, network (false), writable_paths, readonly_paths, limits, restart, "
          "approve, call_timeout, egress}}` (docs/mcp.md). Their tools are `<name>.<tool>`.", {},
          default_doc="{}"),
))

SECTIONS = (MANIFEST, KERNEL, KERNEL_LLM, KERNEL_CONNECTIONS, AGENT, SANDBOX, LIMITS, RESTART, AGENT_LLM, READINESS,
            PLACEMENT)


def _default_text(f: Field) -> str:
    if f.default_doc is not None:
        return f.default_doc
    if f.section is not None:
        return "see below"
    if f.default is None:
        return "none"
    if isinstance(f.default, bool):
        return str(f.default).lower()
    if isinstance(f.default, tuple):
        return "[" + ", ".join(f.default) + "]"
    if isinstance(f.default, float) and f.type is Type.CPU:
        return f"{f.default:g}"
    return str(f.default)


def _type_text(f: Field) -> str:
    text = f.type.value
    if f.choices:
        text += " " + ", ".join(f"`{c}`" for c in f.choices)
    if f.minimum is not None or f.maximum is not None:
        low = "" if f.minimum is None else f"{f.minimum:g}"
        high = "" if f.maximum is None else f"{f.maximum:g}"
        text += f" ({low}..{high})" if low != high else f" (only {low})"
    if f.unlimited:
        text += " or `unlimited`"
    return text


def reference_markdown() -> str:
    """The reference tables of docs/manifest.md, one per section."""
    lines: list[str] = []
    for section in SECTIONS:
        lines += [f"### `{section.path or '(top level)'}`", "", section.doc, "",
                  "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        for f in section.fields:
            key = f"`{f.key}`" + (" (required)" if f.required else "")
            lines.append(f"| {key} | {_type_text(f)} | {_default_text(f)} | {f.doc} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference_markdown(), end="")
