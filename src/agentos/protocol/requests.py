"""Every syscall's request payload, declared once as a typed structure.

The kernel decodes each JSON payload into its opcode's ``Request`` before any guard
or handler runs (``decode_request``), in one strict pass: JSON as RFC 8259 has it
(no NaN, no Infinity, no lone surrogates), no unknown fields, every field of its
declared type and within its declared range. So a handler only ever sees values
it can use, and every bad value is answered ``invalid_argument`` with the field's
path and the expected type, never ``internal``.

msgspec does the decoding: one C pass that parses, type-checks and range-checks,
with the failing field's path in its error; faster than ``json`` plus hand checks
and stricter than ujson (which accepts NaN). Semantic checks that need the host or
the caller (a path exists, a child is no looser than its parent) stay with the
services; this module knows nothing of the kernel.

Optional fields are ``UNSET`` when absent, so ``Request.fields()`` gives back the
same mapping the client sent, only checked.
"""
from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, TypeAlias, get_args

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from ..errors import InvalidArgument
from ..units import MAX_BYTES, MAX_CORES, MAX_SECONDS
from .constants import Op, op_name

__all__ = ["AGENT_NAME_PATTERN", "AGENT_REF_PATTERN", "PROJECT_PATTERN", "DEFAULT_CPU", "DEFAULT_MEMORY",
           "DEFAULT_PIDS", "MIN_DECLARED_PAYLOAD", "REQUESTS", "Request", "SpawnRequestWire", "TEMPLATE_NAME_PATTERN",
           "decode_object", "decode_request", "given"]

#: The name rules, each written once here and anchored below; a pattern that combines two
#: (``project/name``) is built from them, so neither can drift. Every rule ends in ``\Z``:
#: ``$`` would let a trailing newline through.
_AGENT_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,59}"
_PROJECT = r"[a-z0-9][a-z0-9-]{0,62}"
_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,255}"
_MCP_SERVER = r"[A-Za-z0-9_-]{1,64}"
#: Agent names: usable as a hostname, a cgroup and a file name. The manifest, the CLI and
#: every service check names with this one pattern (tests/protocol/test_names.py).
AGENT_NAME_PATTERN = rf"^{_AGENT_NAME}\Z"
#: Template names (``sandbox.templates`` of the kernel configuration).
TEMPLATE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z"
#: A W3C trace context (``traceparent``): version, trace id, parent span id, flags, in lower-case
#: hex; the ids never all zeros and the version never ff, as the W3C recommendation has it.
TRACEPARENT_PATTERN = r"^(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}\Z"
#: Project names (a team, as compose has them): a short DNS label, lower case.
PROJECT_PATTERN = rf"^{_PROJECT}\Z"
#: An agent named by a request: ``name`` within the caller's project first, or ``project/name``.
AGENT_REF_PATTERN = rf"^(?:{_PROJECT}/)?{_AGENT_NAME}\Z"
#: A host name (SPAWN's ``hostname``, the manifest's): one DNS label, dots allowed, no ``_``.
HOSTNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9.-]{0,62}\Z"
#: Environment variable names (SPAWN's and EXEC's ``env``, a manifest's, a template's).
ENV_NAME_PATTERN = rf"^{_ENV_NAME}\Z"
#: The same names in a JSON Schema (an MCP tool's ``env``): ECMA-262 has no ``\Z``, and there
#: ``$`` is the end of the text. What passes reaches a SPAWN or EXEC, which checks it again.
ENV_NAME_SCHEMA_PATTERN = rf"^{_ENV_NAME}$"
#: Variables the kernel sets for every agent (its connection, its identity) start with this;
#: the whole prefix is the kernel's, so a variable it adds later cannot be forged either.
RESERVED_ENV_PREFIX = "AGENTOS_"
#: The variable an agent finds its kernel connection's descriptor in (the SDK reads it once).
FD_ENV = "AGENTOS_FD"
#: An MCP server's name (``mcp.servers`` of the kernel configuration).
MCP_SERVER_PATTERN = rf"^{_MCP_SERVER}\Z"
#: Named volumes (a file name under the kernel's state dir, so never ``.`` or ``..``).
VOLUME_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z"
#: Registered mail names and CONTEXT ids: the agent names' alphabet, a little longer.
ALIAS_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z"
#: Durations as text: ``30``, ``1.5s``, ``250ms``, ``5m``, ``2h`` (units.parse_duration reads them).
DURATION_PATTERN = r"^\s*\d{1,9}(?:\.\d{1,9})?\s*(?:ms|s|m|h)?\s*\Z"
#: Sizes as text: ``512Mi``, ``1G``, ``1048576`` (units.parse_bytes reads them).
SIZE_PATTERN = r"^\s*\d{1,15}(?:\.\d{1,9})?\s*(?:[KMGTkmgt]i?)?[bB]?\s*\Z"
#: CPU as text: ``0.5``, ``500m`` (millicores), ``50%`` (units.parse_cpu reads them).
CPU_PATTERN = r"^\s*\d{1,6}(?:\.\d{1,9})?\s*(?:m|%)?\s*\Z"

#: What every SPAWN gets for a limit it does not mention (the manifest's defaults too).
DEFAULT_MEMORY = 512 * 1024 * 1024
DEFAULT_PIDS = 128
DEFAULT_CPU = 1.0

#: The largest uid anything may name: one more, (uid_t)-1, means "unchanged" to the kernel.
MAX_UID = 0xFFFFFFFE

#: Longest path (PATH_MAX) and longest free text field.
_PATH_MAX = 4096
_TEXT_MAX = 1 << 20


Seconds: TypeAlias = Annotated[float, Meta(ge=0, le=MAX_SECONDS)] | Annotated[str, Meta(pattern=DURATION_PATTERN)]
Size: TypeAlias = Annotated[int, Meta(gt=0, le=MAX_BYTES)] | Annotated[str, Meta(pattern=SIZE_PATTERN)]
Cores: TypeAlias = Annotated[float, Meta(gt=0, le=MAX_CORES)] | Annotated[str, Meta(pattern=CPU_PATTERN)]
Count: TypeAlias = Annotated[int, Meta(ge=1, le=1 << 31)]
AgentName: TypeAlias = Annotated[str, Meta(pattern=AGENT_NAME_PATTERN)]
AgentRefName: TypeAlias = Annotated[str, Meta(pattern=AGENT_REF_PATTERN)]
ProjectName: TypeAlias = Annotated[str, Meta(pattern=PROJECT_PATTERN)]
#: A project, or ``""`` for no project. One pattern: msgspec tries only one of several str
#: types, so ``Literal[""]`` beside ``ProjectName`` never matched.
ProjectFilter: TypeAlias = Annotated[str, Meta(pattern=rf"^(?:{_PROJECT})?\Z")]
VolumeName: TypeAlias = Annotated[str, Meta(pattern=VOLUME_NAME_PATTERN)]
Alias: TypeAlias = Annotated[str, Meta(pattern=ALIAS_PATTERN)]
AgentId: TypeAlias = Annotated[str, Meta(min_length=1, max_length=64)]
Path: TypeAlias = Annotated[str, Meta(min_length=1, max_length=_PATH_MAX, pattern=r"^[^\x00]*\Z")]
Text: TypeAlias = Annotated[str, Meta(max_length=_TEXT_MAX)]
Word: TypeAlias = Annotated[str, Meta(min_length=1, max_length=256)]
MessageId: TypeAlias = Annotated[int, Meta(ge=0, le=(1 << 63) - 1)]


def given(value: Any) -> Any:
    """A field of a decoded request: None when the client left it out (``UNSET``) or sent null."""
    return None if value is UNSET else value


class Request(Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every syscall's request. ``op`` is the opcode it belongs to."""

    op: ClassVar[Op]
    #: The caller's trace context: the kernel's span of this syscall joins its trace.
    traceparent: Annotated[str, Meta(pattern=TRACEPARENT_PATTERN)] | UnsetType = UNSET

    def fields(self) -> dict[str, Any]:
        """The fields the client sent, as plain values (nested requests as mappings), without
        ``traceparent`` (what the call is about, not how it is traced)."""
        result: dict[str, Any] = msgspec.to_builtins(self)
        result.pop("traceparent", None)
        return result


# -- processes ------------------------------------------------------------------------

class LimitsWire(Struct, forbid_unknown_fields=True, kw_only=True):
    """``limits`` of SPAWN: resources that bound the agent and its whole subtree."""

    memory: Size | None | UnsetType = UNSET
    pids: Count | None | UnsetType = UNSET
    max_pids: Count | None | UnsetType = UNSET
    cpu: Cores | None | UnsetType = UNSET
    cpu_quota: Count | None | UnsetType = UNSET
    #: Size of the agent's private /tmp (default: a quarter of its memory limit).
    tmp: Size | None | UnsetType = UNSET


class WorkspaceWire(Struct, forbid_unknown_fields=True, kw_only=True):
    """``workspace`` of SPAWN: a private writable directory with a disk quota, at /workspace."""

    #: The quota: the size of the file system behind the workspace (at least 1Mi).
    size: Size


#: A Ray node label's key or value, and a custom resource's name (docs/cluster.md).
LABEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_./-]*\Z"
MAX_LABEL = 253
_Label: TypeAlias = Annotated[str, Meta(min_length=1, max_length=MAX_LABEL, pattern=LABEL_PATTERN)]
#: The most of a resource (or GPUs, CPUs) one agent may reserve; labels and resources one may name.
MAX_AMOUNT = 1_000_000
MAX_LABELS = 32
_Amount: TypeAlias = Annotated[float, Meta(ge=0, le=MAX_AMOUNT)]


#: How a placement group's members are placed (Ray's PACK, SPREAD, STRICT_PACK, STRICT_SPREAD):
#: onto as few nodes as hold them, or across as many; a strict one waits rather than do otherwise.
GroupStrategy: TypeAlias = Literal["pack", "spread", "strict-pack", "strict-spread"]
GROUP_STRATEGIES: tuple[str, ...] = get_args(GroupStrategy)
#: Members one placement group may have.
MAX_GROUP = 1000


class GroupWire(Struct, forbid_unknown_fields=True, kw_only=True):
    """``placement.group``: the agent is one of ``size`` members placed together by ``strategy``
    (a Ray placement group of one bundle per member; docs/cluster.md)."""

    name: _Label
    size: Annotated[int, Meta(ge=1, le=MAX_GROUP)]
    strategy: GroupStrategy | UnsetType = UNSET


class PlacementWire(Struct, forbid_unknown_fields=True, kw_only=True):
    """``placement`` of SPAWN: run the agent on a cluster node (a kernel with ``--cluster``); a
    kernel without a cluster runs it here and says so (docs/cluster.md)."""

    #: Node labels the node must carry (Ray's ``label_selector``).
    labels: Annotated[dict[_Label, _Label], Meta(max_length=MAX_LABELS)] | None | UnsetType = UNSET
    #: Custom resources it reserves on its node (Ray's ``resources``).
    resources: Annotated[dict[_Label, _Amount], Meta(max_length=MAX_LABELS)] | None | UnsetType = UNSET
    gpus: _Amount | None | UnsetType = UNSET
    cpus: _Amount | None | UnsetType = UNSET
    #: How long it may wait for a node before SPAWN fails ``unavailable``.
    timeout: Seconds | None | UnsetType = UNSET
    #: The placement group it is a member of (not inherited by its children).
    group: GroupWire | None | UnsetType = UNSET


class VolumeWire(Struct, forbid_unknown_fields=True, kw_only=True):
    """One entry of SPAWN's ``volumes``: a named volume of the caller's project, mounted in the view."""

    name: VolumeName
    #: Where the agent sees it: an absolute, normalized path of its view.
    path: Path
    #: The quota of a volume this SPAWN creates (one that exists keeps its own).
    size: Size | UnsetType = UNSET
    read_only: bool | UnsetType = UNSET


#: Volumes one agent may mount.
MAX_VOLUMES = 32


class RestartWire(Struct, forbid_unknown_fields=True, kw_only=True):
    """``restart`` of SPAWN: the supervisor's policy for this agent."""

    policy: Literal["never", "on-failure", "always"] | UnsetType = UNSET
    max_restarts: Count | UnsetType = UNSET
    window: Seconds | UnsetType = UNSET
    backoff: Seconds | UnsetType = UNSET
    backoff_max: Seconds | UnsetType = UNSET


class LLMWire(Struct, forbid_unknown_fields=True, kw_only=True):
    """``llm`` of SPAWN: the agent's THINK defaults and budgets."""

    provider: Word | UnsetType = UNSET
    #: A model, or a fallback chain tried in order (llm.request.MAX_CHAIN at most).
    model: Word | Annotated[list[Word], Meta(min_length=1, max_length=8)] | UnsetType = UNSET
    system: Text | UnsetType = UNSET
    temperature: Annotated[float, Meta(ge=0, le=2)] | UnsetType = UNSET
    tokens: Count | UnsetType = UNSET
    calls_per_minute: Count | UnsetType = UNSET
    #: US dollars the agent may spend on THINK (priced by the kernel's ``llm.prices``).
    usd: Annotated[float, Meta(gt=0, le=1e9)] | UnsetType = UNSET


#: An MCP tool an agent may use: ``server.tool``, or a pattern whose ``*`` matches any run of characters.
TOOL_PATTERN = rf"^{_MCP_SERVER}\.[A-Za-z0-9_.*:-]{{1,128}}\Z"
ToolPattern: TypeAlias = Annotated[str, Meta(pattern=TOOL_PATTERN)]
MAX_TOOL_RULES = 256


class ToolRuleWire(Struct, forbid_unknown_fields=True, kw_only=True):
    """An entry of SPAWN's ``tools`` that asks a human to approve each call (``approve: true``)."""

    tool: ToolPattern
    approve: bool | UnsetType = UNSET


class SpawnRequestWire(Request):
    """SPAWN: start an agent. Exactly one of ``script`` and ``command``."""

    op = Op.SPAWN
    name: AgentName | None | UnsetType = UNSET
    script: Path | None | UnsetType = UNSET
    command: Path | list[Path] | None | UnsetType = UNSET
    args: list[Annotated[str, Meta(max_length=_TEXT_MAX, pattern=r"^[^\x00]*\Z")]] | None | UnsetType = UNSET
    env: dict[_EnvName, _EnvValue] | None | UnsetType = UNSET
    cwd: Path | None | UnsetType = UNSET
    sandboxed: bool | None | UnsetType = UNSET
    network: bool | None | UnsetType = UNSET
    limits: LimitsWire | None | UnsetType = UNSET
    allow_degraded: bool | None | UnsetType = UNSET
    writable_paths: list[Path] | None | UnsetType = UNSET
    readonly_paths: list[Path] | None | UnsetType = UNSET
    hostname: Annotated[str, Meta(pattern=HOSTNAME_PATTERN)] | None | UnsetType = UNSET
    restart: RestartWire | None | UnsetType = UNSET
    llm: LLMWire | None | UnsetType = UNSET
    capabilities: list[Word] | None | UnsetType = UNSET
    #: Hosts the agent may fetch through HTTP; each must be allowed to the spawner too.
    egress: list[Word] | None | UnsetType = UNSET
    #: A private writable directory with a disk quota (sandboxed agents only).
    workspace: WorkspaceWire | None | UnsetType = UNSET
    #: Named volumes of its project, each with a disk quota, mounted where it says (sandboxed agents only).
    volumes: Annotated[list[VolumeWire], Meta(max_length=MAX_VOLUMES)] | None | UnsetType = UNSET
    #: Wall time from start after which the kernel kills the agent (paused time counts).
    timeout: Seconds | None | UnsetType = UNSET
    #: Time without a syscall of the agent's after which the kernel kills it (paused time does not count).
    idle_timeout: Seconds | None | UnsetType = UNSET
    #: The team it belongs to (an agent's children are always in its own).
    project: ProjectName | None | UnsetType = UNSET
    #: A template of the kernel's (``sandbox.templates``): its root under the view, its modules preloaded.
    template: Annotated[str, Meta(pattern=TEMPLATE_NAME_PATTERN)] | None | UnsetType = UNSET
    #: The MCP tools its THINKs may use (``server.tool`` or a ``*`` pattern), each within its spawner's.
    tools: Annotated[list[ToolPattern | ToolRuleWire], Meta(max_length=MAX_TOOL_RULES)] | None | UnsetType = UNSET
    #: Where on a cluster it runs (node labels, resources, gpus, cpus); ignored without one.
    placement: PlacementWire | None | UnsetType = UNSET


class _AgentRef(Request):
    """Names one agent by ``id`` or ``name``."""

    id: AgentId | None | UnsetType = UNSET
    name: AgentRefName | None | UnsetType = UNSET


class KillRequest(_AgentRef, kw_only=True):
    op = Op.KILL
    grace: Seconds | None | UnsetType = UNSET
    wait: bool | UnsetType = UNSET


#: ``pending``: placed on a cluster and still waiting for a node (docs/cluster.md).
_STATUS = Literal["running", "paused", "exited", "failed", "killed", "oom_killed", "timed_out", "lost",
                  "pending"]


class PauseRequest(_AgentRef, kw_only=True):
    """PAUSE: freeze the agent and its descendants (cgroup freezer) until RESUME."""

    op = Op.PAUSE


class ResumeRequest(_AgentRef, kw_only=True):
    """RESUME: thaw what the caller's PAUSE of this agent froze."""

    op = Op.RESUME


class StartRequest(_AgentRef, kw_only=True):
    """START: spawn an ended agent again from the SPAWN request the kernel remembers of it."""

    op = Op.START


class ListRequest(Request):
    op = Op.LIST
    status: _STATUS | list[_STATUS] | None | UnsetType = UNSET
    name: AgentRefName | None | UnsetType = UNSET
    #: Only this project's agents; ``""`` only agents of no project.
    project: ProjectFilter | None | UnsetType = UNSET
    #: Entries carry these too (left out by default: a LIST of thousands stays small);
    #: ``registries`` (admins only): the reply says how big each per-agent registry is.
    include: list[Literal["isolation", "registries"]] | UnsetType = UNSET
    #: At most this many entries (default, and at most, the kernel's ``processes.list_page``);
    #: with ``stream``, in all, sent a page at a time (default: every one).
    limit: Annotated[int, Meta(ge=1, le=1_000_000)] | UnsetType = UNSET
    #: Go on after the page whose reply gave this ``cursor``.
    cursor: Annotated[str, Meta(min_length=1, max_length=20, pattern=r"^[0-9]+\Z")] | UnsetType = UNSET
    #: Send the entries as STREAM chunks of a page each, the END carrying the ``cursor``.
    stream: bool | UnsetType = UNSET


class WaitRequest(_AgentRef, kw_only=True):
    op = Op.WAIT
    until: Literal["exit", "ready"] | UnsetType = UNSET
    timeout: Seconds | None | UnsetType = UNSET


class LogsRequest(_AgentRef, kw_only=True):
    op = Op.LOGS
    tail: Annotated[int, Meta(ge=0, le=16 * 1024 * 1024)] | UnsetType = UNSET
    follow: bool | UnsetType = UNSET


class ReadyRequest(Request):
    op = Op.READY


class PurgeRequest(Request):
    """PURGE: remove a project's mailboxes, state and registered names (its agents must have ended)."""

    op = Op.PURGE
    project: ProjectName


#: Environment variable names (SPAWN's and EXEC's ``env``) and their values.
_EnvName: TypeAlias = Annotated[str, Meta(pattern=ENV_NAME_PATTERN)]
_EnvValue: TypeAlias = Annotated[str, Meta(max_length=_TEXT_MAX, pattern=r"^[^\x00]*\Z")]
#: An EXEC handle, as the kernel made it.
ExecId: TypeAlias = Annotated[str, Meta(pattern=r"^[0-9a-f]{1,32}\Z")]
_Base64: TypeAlias = Annotated[str, Meta(max_length=_TEXT_MAX * 2)]


_TerminalSide: TypeAlias = Annotated[int, Meta(ge=1, le=65535)]


class TerminalWire(Struct, forbid_unknown_fields=True, kw_only=True):
    """``pty`` of EXEC: the terminal's size."""

    rows: _TerminalSide = 24
    cols: _TerminalSide = 80


#: An exec's ``user``: a uid, or a user name (letters, digits, ``_.-``) or a uid as text
#: (``\Z``: ``$`` would let a final newline through).
ExecUser: TypeAlias = (Annotated[int, Meta(ge=0, le=MAX_UID)]
                       | Annotated[str, Meta(pattern=r"^(?:[A-Za-z_][A-Za-z0-9_.-]{0,31}|[0-9]{1,10})\Z")])


class ExecRequest(_AgentRef, kw_only=True):
    """EXEC: run ``argv`` (or ``cmd`` through ``/bin/sh -c``) inside the agent ``id``/``name``;
    or ``attach`` to a running or ended exec; or ``list`` the execs the caller may see."""

    op = Op.EXEC
    argv: Annotated[list[Annotated[str, Meta(max_length=_TEXT_MAX, pattern=r"^[^\x00]*\Z")]],
                    Meta(min_length=1, max_length=4096)] | None | UnsetType = UNSET
    cmd: Annotated[str, Meta(min_length=1, max_length=_TEXT_MAX, pattern=r"^[^\x00]*\Z")] | None | UnsetType = UNSET
    env: dict[_EnvName, _EnvValue] | None | UnsetType = UNSET
    cwd: Path | None | UnsetType = UNSET
    stdin: Text | None | UnsetType = UNSET
    stdin_base64: _Base64 | None | UnsetType = UNSET
    #: Keep stdin open after ``stdin`` for EXEC_INPUT (else it is closed: the process reads EOF).
    stdin_open: bool | UnsetType = UNSET
    timeout: Seconds | None | UnsetType = UNSET
    background: bool | UnsetType = UNSET
    pty: TerminalWire | None | UnsetType = UNSET
    attach: ExecId | None | UnsetType = UNSET
    #: Who to run as: the agent's user (default), or ``nobody``/65534 where that widens nothing.
    user: ExecUser | None | UnsetType = UNSET
    #: ``list`` on the wire (a field named so would hide the type in this class).
    listing: bool | UnsetType = msgspec.field(default=UNSET, name="list")


class ExecInputRequest(Request):
    """EXEC_INPUT: more stdin for a running exec, and/or its end."""

    op = Op.EXEC_INPUT
    exec: ExecId
    data: Text | None | UnsetType = UNSET
    data_base64: _Base64 | None | UnsetType = UNSET
    eof: bool | UnsetType = UNSET


class ExecSignalRequest(Request):
    """EXEC_SIGNAL: a signal to a running exec's process group (or only its process)."""

    op = Op.EXEC_SIGNAL
    exec: ExecId
    signal: Annotated[int, Meta(ge=1, le=64)] | Annotated[str, Meta(pattern=r"^(SIG)?[A-Z0-9+-]{2,12}\Z")]
    group: bool | UnsetType = UNSET


class ExecResizeRequest(Request):
    """EXEC_RESIZE: a new size for a ``pty`` exec's terminal."""

    op = Op.EXEC_RESIZE
    exec: ExecId
    rows: _TerminalSide
    cols: _TerminalSide


#: An EXPOSE handle, as the kernel made it.
ExposureId: TypeAlias = Annotated[str, Meta(pattern=r"^[0-9a-f]{1,32}\Z")]


class ExposeRequest(_AgentRef, kw_only=True):
    """EXPOSE: forward a host address to ``port`` on the loopback of the agent ``id``/``name``,
    for as long as the stream is open; or ``list`` the exposures the caller may see."""

    op = Op.EXPOSE
    port: Annotated[int, Meta(ge=1, le=65535)] | UnsetType = UNSET
    #: Also a 127.0.0.1 port (opt-in: see docs/processes.md for who may connect to it).
    tcp: bool | UnsetType = UNSET
    listing: bool | UnsetType = msgspec.field(default=UNSET, name="list")


class UnexposeRequest(Request):
    """UNEXPOSE: end an exposure (its EXPOSE stream ends with its counts)."""

    op = Op.UNEXPOSE
    exposure: ExposureId


# -- files ----------------------------------------------------------------------------

_FileMode: TypeAlias = Annotated[int, Meta(ge=0, le=0o777)]
_Offset: TypeAlias = Annotated[int, Meta(ge=0, le=(1 << 62))]
#: A streamed write's or upload's handle, as the kernel made it.
_FileHandle: TypeAlias = Annotated[str, Meta(pattern=r"^[0-9a-f]{1,32}\Z")]


class _FileRequest(_AgentRef, kw_only=True):
    """A path of the agent's view (relative: to the agent's working directory)."""

    path: Path


class FileReadRequest(_FileRequest, kw_only=True):
    """FILE_READ: a file's bytes, streamed; ``length`` from ``offset`` (default: to its end)."""

    op = Op.FILE_READ
    offset: _Offset | None | UnsetType = UNSET
    length: _Offset | None | UnsetType = UNSET


class FileWriteRequest(_FileRequest, kw_only=True):
    """FILE_WRITE: ``data`` into a file (created, truncated unless ``append`` or ``offset``);
    ``more`` keeps it open for FILE_DATA."""

    op = Op.FILE_WRITE
    data: Text | None | UnsetType = UNSET
    data_base64: _Base64 | None | UnsetType = UNSET
    append: bool | UnsetType = UNSET
    offset: _Offset | None | UnsetType = UNSET
    create: bool | UnsetType = UNSET
    exclusive: bool | UnsetType = UNSET
    mode: _FileMode | None | UnsetType = UNSET
    more: bool | UnsetType = UNSET


class FileListRequest(_AgentRef, kw_only=True):
    """FILE_LIST: a directory's entries, ``depth`` levels down (1: its own)."""

    op = Op.FILE_LIST
    path: Path | None | UnsetType = UNSET
    depth: Annotated[int, Meta(ge=1, le=64)] | None | UnsetType = UNSET


class FileStatRequest(_FileRequest, kw_only=True):
    op = Op.FILE_STAT
    follow: bool | UnsetType = UNSET


class FileMkdirRequest(_FileRequest, kw_only=True):
    op = Op.FILE_MKDIR
    parents: bool | UnsetType = UNSET
    mode: _FileMode | None | UnsetType = UNSET


class FileRemoveRequest(_FileRequest, kw_only=True):
    op = Op.FILE_REMOVE
    recursive: bool | UnsetType = UNSET


class FileRenameRequest(_FileRequest, kw_only=True):
    op = Op.FILE_RENAME
    to: Path
    overwrite: bool | UnsetType = UNSET


class FileUploadRequest(_FileRequest, kw_only=True):
    """FILE_UPLOAD: a tar archive unpacked into the directory ``path``; ``more``: FILE_DATA follows."""

    op = Op.FILE_UPLOAD
    data_base64: _Base64 | None | UnsetType = UNSET
    more: bool | UnsetType = UNSET


class FileDownloadRequest(_FileRequest, kw_only=True):
    """FILE_DOWNLOAD: the directory ``path`` as one tar archive, streamed."""

    op = Op.FILE_DOWNLOAD


class FileWatchRequest(_FileRequest, kw_only=True):
    """FILE_WATCH: changes under the directory ``path``, streamed as events."""

    op = Op.FILE_WATCH
    recursive: bool | UnsetType = UNSET


class FileDataRequest(Request):
    """FILE_DATA: the next chunk of a streamed FILE_WRITE or FILE_UPLOAD (the last without ``more``)."""

    op = Op.FILE_DATA
    handle: _FileHandle
    data: Text | None | UnsetType = UNSET
    data_base64: _Base64 | None | UnsetType = UNSET
    more: bool | UnsetType = UNSET


# -- core and permissions --------------------------------------------------------------

#: The smallest reply limit a client may declare: every error frame and stream chunk fits.
MIN_DECLARED_PAYLOAD = 64 * 1024


class HelloRequest(Request):
    op = Op.HELLO
    #: The largest payload this client accepts; the kernel refuses a longer reply with
    #: ``too_large`` instead of sending it (the connection's default: the kernel's own limit).
    max_payload: Annotated[int, Meta(ge=MIN_DECLARED_PAYLOAD, le=(1 << 32) - 1)] | UnsetType = UNSET


class GetPermsRequest(Request):
    op = Op.GET_PERMS
    agent: AgentId | None | UnsetType = UNSET


class SetPermsRequest(Request):
    op = Op.SET_PERMS
    capabilities: list[Word]
    agent: AgentId | UnsetType = UNSET
    uid: Annotated[int, Meta(ge=0, le=MAX_UID)] | UnsetType = UNSET


# -- LLM -------------------------------------------------------------------------------
# THINK is read by the gateway itself (it also takes a plain-text prompt), strictly; COUNT
# takes THINK's payload and is read the same way.

class ContextRequest(Request):
    op = Op.CONTEXT
    op_: Literal["create", "get", "list", "clear", "fork", "delete"] = msgspec.field(name="op")
    id: Alias | None | UnsetType = UNSET
    system: Text | None | UnsetType = UNSET
    new_id: Alias | None | UnsetType = UNSET


class UsageRequest(Request):
    op = Op.USAGE


#: Texts one EMBED may carry: Gemini's batchEmbedContents takes at most 100.
MAX_EMBED_TEXTS = 100
_EmbedText: TypeAlias = Annotated[str, Meta(min_length=1, max_length=_TEXT_MAX)]
EmbedTaskType: TypeAlias = Literal["RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY",
                                   "CLASSIFICATION", "CLUSTERING", "QUESTION_ANSWERING",
                                   "FACT_VERIFICATION", "CODE_RETRIEVAL_QUERY"]


class EmbedRequest(Request):
    """EMBED: one vector per text. Exactly one of ``texts`` and ``text``."""

    op = Op.EMBED
    texts: Annotated[list[_EmbedText], Meta(min_length=1, max_length=MAX_EMBED_TEXTS)] | UnsetType = UNSET
    text: _EmbedText | UnsetType = UNSET
    #: The embedding model; the kernel's ``llm.embedding_model`` when absent.
    model: Word | UnsetType = UNSET
    #: What the vectors are for (Gemini ``taskType``); an OpenAI-compatible server ignores it.
    task_type: EmbedTaskType | UnsetType = UNSET
    #: Length of each vector, for models that can shorten theirs.
    dimensions: Annotated[int, Meta(ge=1, le=65536)] | UnsetType = UNSET


class ModelsRequest(Request):
    op = Op.MODELS


# -- messaging and pub/sub ---------------------------------------------------------------

class SendRequest(Request):
    op = Op.SEND
    #: A name, an agent id, an agent principal (``uid:0/team/worker``) or ``uid:<n>``.
    to: Annotated[str, Meta(min_length=1, max_length=4096)]
    body: Any


class RecvRequest(Request):
    op = Op.RECV
    timeout: Annotated[float, Meta(ge=0, le=MAX_SECONDS)] | None | UnsetType = UNSET
    name: Alias | None | UnsetType = UNSET
    ack: bool | UnsetType = UNSET
    #: Deliveries without ACK after which the next message is a dead letter instead.
    max_deliveries: Annotated[int, Meta(ge=1, le=1_000_000)] | UnsetType = UNSET


class BroadcastRequest(Request):
    op = Op.BROADCAST
    body: Any


class RegisterRequest(Request):
    op = Op.REGISTER
    name: Alias


class AckRequest(Request):
    op = Op.ACK
    ids: Annotated[list[MessageId], Meta(min_length=1, max_length=10_000)] | UnsetType = UNSET
    id: MessageId | UnsetType = UNSET
    name: Alias | None | UnsetType = UNSET


class DeadLettersRequest(Request):
    """List, requeue or drop dead letters (messages delivered too often without ACK), or count
    what each mailbox holds."""

    op = Op.DEAD_LETTERS
    #: ``stats``: messages waiting and dead letters kept per mailbox (those holding any).
    action: Literal["list", "requeue", "drop", "stats"] | UnsetType = UNSET
    #: Whose: ``*`` for every mailbox you manage, else resolved as SEND's ``to``.
    mailbox: Annotated[str, Meta(min_length=1, max_length=4096)] | UnsetType = UNSET
    name: Alias | None | UnsetType = UNSET
    ids: Annotated[list[MessageId], Meta(min_length=1, max_length=10_000)] | UnsetType = UNSET
    limit: Annotated[int, Meta(ge=1, le=10_000)] | UnsetType = UNSET
    #: ``list``/``stats`` only this project's agents' mailboxes (among those the call may see).
    project: ProjectName | UnsetType = UNSET


_TOPIC = Annotated[str, Meta(min_length=1, max_length=256)]


class SubscribeRequest(Request):
    op = Op.SUBSCRIBE
    topics: _TOPIC | Annotated[list[_TOPIC], Meta(min_length=1, max_length=64)]


class UnsubscribeRequest(Request):
    op = Op.UNSUBSCRIBE
    subscription: Annotated[int, Meta(ge=0, le=(1 << 63) - 1)]


class PublishRequest(Request):
    op = Op.PUBLISH
    topic: _TOPIC
    data: Any = None


# -- state --------------------------------------------------------------------------------

_SCOPE = Literal["own", "shared"]
_KEY = Annotated[str, Meta(min_length=1, max_length=1024)]
_TTL = Annotated[float, Meta(gt=0, le=MAX_SECONDS * 10)]


class _StateRequest(Request):
    scope: _SCOPE | UnsetType = UNSET
    #: Another agent's own state (admin only): its id or name.
    agent: Word | None | UnsetType = UNSET


class StoreRequest(_StateRequest, kw_only=True):
    op = Op.STORE
    key: _KEY
    value: Any
    ttl: _TTL | None | UnsetType = UNSET


class FetchRequest(_StateRequest, kw_only=True):
    op = Op.FETCH
    key: _KEY


class DeleteRequest(_StateRequest, kw_only=True):
    op = Op.DELETE
    key: _KEY


class KeysRequest(_StateRequest, kw_only=True):
    op = Op.KEYS
    prefix: Annotated[str, Meta(max_length=1024)] | UnsetType = UNSET
    limit: Annotated[int, Meta(ge=1, le=10_000)] | UnsetType = UNSET


class CasRequest(_StateRequest, kw_only=True):
    op = Op.CAS
    key: _KEY
    value: Any
    expected: Any = UNSET
    ttl: _TTL | None | UnsetType = UNSET


# -- volumes --------------------------------------------------------------------------------

class VolumesRequest(Request):
    """VOLUMES: list (``ls``), describe (``inspect``) or remove (``rm``) named volumes."""

    op = Op.VOLUMES
    action: Literal["ls", "inspect", "rm"] | UnsetType = UNSET
    #: The volume (``inspect``, ``rm``).
    name: VolumeName | UnsetType = UNSET
    #: Its project; ``""`` is no project. ``ls`` without it lists every project's.
    project: ProjectFilter | None | UnsetType = UNSET
    #: Another uid's volumes (admins only); the caller's own when absent.
    uid: Annotated[int, Meta(ge=0, le=MAX_UID)] | UnsetType = UNSET


# -- approvals -------------------------------------------------------------------------------

class ApprovalsRequest(Request):
    """APPROVALS: list the tool calls waiting for a human (``list``), or settle one."""

    op = Op.APPROVALS
    action: Literal["list", "approve", "deny"] | UnsetType = UNSET
    #: The approval (``approve``, ``deny``).
    id: Annotated[str, Meta(pattern=r"^[0-9a-f]{16}\Z")] | UnsetType = UNSET
    #: Why it was denied (or approved), kept in the audit log and told to the model.
    reason: Annotated[str, Meta(max_length=1024)] | None | UnsetType = UNSET


# -- egress and audit ----------------------------------------------------------------------

class HttpRequest(Request):
    op = Op.HTTP
    url: Annotated[str, Meta(min_length=1, max_length=8192)]
    method: Annotated[str, Meta(pattern=r"(?i)^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS)$")] | UnsetType = UNSET
    headers: Annotated[dict[Annotated[str, Meta(min_length=1, max_length=256)],
                            Annotated[str, Meta(max_length=8192)]],
                       Meta(max_length=128)] | None | UnsetType = UNSET
    body: Text | None | UnsetType = UNSET
    body_base64: Annotated[str, Meta(max_length=_TEXT_MAX * 2)] | None | UnsetType = UNSET
    timeout: Annotated[float, Meta(gt=0, le=MAX_SECONDS)] | None | UnsetType = UNSET
    max_bytes: Annotated[int, Meta(gt=0, le=MAX_BYTES)] | None | UnsetType = UNSET


class AuditRequest(Request):
    op = Op.AUDIT
    agent: Word | None | UnsetType = UNSET
    limit: Annotated[int, Meta(ge=0, le=1_000_000)] | UnsetType = UNSET
    follow: bool | UnsetType = UNSET
    #: Only records with ``since <= ts < until`` (Unix seconds).
    since: Annotated[float, Meta(ge=0, le=1e11)] | None | UnsetType = UNSET
    until: Annotated[float, Meta(ge=0, le=1e11)] | None | UnsetType = UNSET


REQUESTS: dict[Op, type[Request]] = {cls.op: cls for cls in (
    SpawnRequestWire, KillRequest, ListRequest, WaitRequest, LogsRequest, ReadyRequest, PurgeRequest,
    ExecRequest, ExecInputRequest, ExecSignalRequest, ExecResizeRequest,
    ExposeRequest, UnexposeRequest,
    PauseRequest, ResumeRequest, StartRequest,
    HelloRequest, GetPermsRequest, SetPermsRequest, ContextRequest, UsageRequest,
    EmbedRequest, ModelsRequest,
    SendRequest, RecvRequest, BroadcastRequest, RegisterRequest, AckRequest, DeadLettersRequest,
    SubscribeRequest, UnsubscribeRequest, PublishRequest,
    StoreRequest, FetchRequest, DeleteRequest, KeysRequest, CasRequest,
    HttpRequest, AuditRequest,
    FileReadRequest, FileWriteRequest, FileListRequest, FileStatRequest, FileMkdirRequest,
    FileRemoveRequest, FileRenameRequest, FileUploadRequest, FileDownloadRequest, FileWatchRequest,
    FileDataRequest, VolumesRequest, ApprovalsRequest,
)}

_DECODERS: dict[int, msgspec.json.Decoder[Any]] = {int(op): msgspec.json.Decoder(cls)
                                                   for op, cls in REQUESTS.items()}
_ANY = msgspec.json.Decoder()
_AT = re.compile(r" - at (`key` in )?`\$\.?(.*)`$")
_NAMED = re.compile(r"field `([^`]*)`")


def decode_request(op: int, payload: bytes | memoryview) -> Request | None:
    """``payload`` as ``op``'s declared request; None for opcodes that declare none.

    An empty payload is ``{}``. Raises ``InvalidArgument`` naming the field.
    """
    decoder = _DECODERS.get(op)
    if decoder is None:
        return None
    try:
        return decoder.decode(payload if len(payload) else b"{}")  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        raise invalid(op, exc) from None
    except msgspec.DecodeError as exc:
        raise InvalidArgument(f"{op_name(op)}: payload is not valid JSON: {exc}") from None
    except RecursionError:
        raise _too_deep(op) from None


def decode_object(op: int, payload: bytes | memoryview) -> dict[str, Any]:
    """Strict JSON (no NaN, Infinity or lone surrogates) that must be an object; ``{}`` if empty."""
    if not len(payload):
        return {}
    try:
        value = _ANY.decode(payload)
    except msgspec.DecodeError as exc:
        raise InvalidArgument(f"{op_name(op)}: payload is not valid JSON: {exc}") from None
    except RecursionError:
        raise _too_deep(op) from None
    if not isinstance(value, dict):
        raise InvalidArgument(f"{op_name(op)}: payload must be a JSON object, got {type(value).__name__}")
    return value


def invalid(op: int, exc: msgspec.ValidationError) -> InvalidArgument:
    """msgspec's message (expected type, path) as an ``InvalidArgument`` with ``field`` set."""
    message = str(exc)
    at = _AT.search(message)
    path = at.group(2) if at else ""
    if at and at.group(1):
        path += "{key}"  # a mapping's key, not one of its values
    named = _NAMED.search(message)
    if named:
        path = f"{path}.{named.group(1)}" if path else named.group(1)
    return InvalidArgument(f"{op_name(op)}: {message}", field=path or "(payload)")


def _too_deep(op: int) -> InvalidArgument:
    return InvalidArgument(f"{op_name(op)}: payload is nested too deeply")
