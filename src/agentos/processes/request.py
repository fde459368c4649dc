"""SPAWN's typed request, resolved on the host and narrowed to what the spawner holds.

The wire form (``protocol.requests.SpawnRequestWire``) has already checked every
type and range. Here each path is resolved (symlinks and ``..`` included) and
checked against the spawner's ``Confinement``: a child is never looser than its
parent in any field. Widening is ``PermissionDenied`` naming the field; a value
that cannot be used at all is ``InvalidArgument``.
"""
from __future__ import annotations

import os
import shutil
import stat
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec

from ..cgroups import Limits
from ..errors import InvalidArgument, PermissionDenied
from ..protocol.requests import (
    DEFAULT_CPU,
    DEFAULT_MEMORY,
    DEFAULT_PIDS,
    RESERVED_ENV_PREFIX,
    KillRequest,
    LimitsWire,
    SpawnRequestWire,
    VolumeWire,
    WorkspaceWire,
)
from ..protocol.requests import given as _given
from ..sandbox.mounts import inside
from ..sandbox.spec import WORKSPACE_PATH
from ..sandbox.templates import Template
from ..supervision.policy import RestartPolicy
from ..units import parse_bytes, parse_cpu, parse_duration
from .volumes import VolumeGrant, VolumeMount, path_problem

#: The private /tmp of an agent without a memory limit.
_TMP_UNLIMITED = 1 << 30
#: Share of the memory limit the private /tmp gets by default (tmpfs pages count as memory).
_TMP_SHARE = 4
#: The smallest workspace: its file system needs room for its own tables.
MIN_WORKSPACE = 1 << 20


#: One place an agent's view shows a host path: the bind's root, and the host uid the agent
#: acts as beneath it (None: no file permission narrows it, as for the kernel's own uid).
Bind = tuple[str, "int | None"]


@dataclass(frozen=True)
class Confinement:
    """What an agent holds, which its children can only narrow.

    Paths are real host paths (no symlinks). ``readable`` is every host path its view
    shows, each with the uid whose file permissions decide what it can read there: a
    root kernel's agent runs as an unprivileged uid and acts as a bind's owner only
    beneath an idmapped bind, so a child is given only what its parent could itself
    read, never a root-only file the sandbox would show it through an idmap.
    ``writable`` likewise. An admin's confinement is the whole host.
    """

    sandboxed: bool
    network: bool
    allow_degraded: bool
    readable: tuple[Bind, ...]
    writable: tuple[Bind, ...]
    limits: Limits
    #: LLM budgets (``tokens``, ``calls_per_minute``, ``usd``) that bound its children's.
    llm_budget: dict[str, float] = field(default_factory=dict)
    #: The largest workspace a child may get, in bytes: the agent's own workspace's size,
    #: 0 when it has none; None (an outside client): no bound.
    workspace: int | None = None
    #: When (``time.monotonic()``) the agent's ``timeout`` kills it; no child outlives it. None: never.
    deadline: float | None = None
    #: The named volumes it has mounted, the only ones its children may mount; None (an outside
    #: client): any of its own uid's.
    volumes: tuple[VolumeGrant, ...] | None = None

    def sees(self, path: str) -> bool:
        return _reaches(self.readable, path, write=False)

    def may_write(self, path: str) -> bool:
        return _reaches(self.writable, path, write=True)


#: An admin (an outside client of the kernel's uid): anything the host has.
HOST = Confinement(sandboxed=False, network=True, allow_degraded=True, readable=(("/", None),),
                   writable=(("/", None),), limits=Limits())


def outside_user(uid: int) -> Confinement:
    """A non-admin outside client: sandboxed agents only, with what ``uid`` itself may access."""
    return replace(HOST, sandboxed=True, readable=(("/", uid),), writable=(("/", uid),))


def _reaches(binds: tuple[Bind, ...], path: str, *, write: bool) -> bool:
    """Whether one of ``binds`` shows ``path`` with the access asked for (the deepest bind
    decides: it is what the view shows there)."""
    showing = [(root, uid) for root, uid in binds if inside(path, root)]
    if not showing:
        return False
    root, uid = max(showing, key=lambda bind: len(bind[0]))
    return uid is None or _uid_may(root, path, uid, write=write)


@dataclass
class SpawnRequest:
    """A SPAWN, checked and resolved: what to start, and the confinement it will hold."""

    name: str
    argv: list[str]
    #: The Python file when the agent is a script: it runs as ``sys.argv = [script, *argv[1:]]``
    #: (``argv[0]`` is then the interpreter).
    script: str | None
    env: dict[str, str]
    cwd: str | None
    limits: Limits
    #: Limits that were defaults rather than asked for (reported, not required, where unenforceable).
    default_limits: tuple[str, ...]
    #: Size of the private /tmp in bytes.
    tmp_size: int
    sandboxed: bool
    network: bool
    allow_degraded: bool
    writable_paths: list[str] = field(default_factory=list)
    readonly_paths: list[str] = field(default_factory=list)
    #: The agent's hostname in its own UTS namespace (sandboxed only); None: its name.
    hostname: str | None = None
    #: THINK defaults and budgets (model, system, temperature, tokens, calls_per_minute, usd), if given.
    llm: dict[str, Any] | None = None
    #: Capability names asked for; None: the defaults, trimmed to the spawner's.
    capabilities: list[str] | None = None
    #: Egress allow entries asked for; None: the spawner's.
    egress: list[str] | None = None
    #: The supervisor's restart policy, checked here: the supervisor reads it from the agent.
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    #: Size in bytes of its workspace (a file system of its own at /workspace), if it asked for one.
    workspace: int | None = None
    #: Seconds from start before the kernel kills it, and the ``time.monotonic()`` that is; a child
    #: that asks for none inherits its spawner's remaining time.
    timeout: float | None = None
    deadline: float | None = None
    #: Seconds without a syscall before the kernel kills it.
    idle_timeout: float | None = None
    #: Named volumes to mount, and whose they are: the uid of the spawner's own volumes (an
    #: agent's), None for an outside client's own.
    volumes: list[VolumeMount] = field(default_factory=list)
    volume_owner: int | None = None
    #: The kernel's template it starts from (``sandbox.templates``), if it named one.
    template: Template | None = None

    def confinement(self, system: Iterable[str], agent_uid: int | None,
                    volumes: tuple[VolumeGrant, ...] = ()) -> Confinement:
        """What the started agent holds (its children are checked against it).

        ``system``: the host paths every sandboxed agent sees read-only; ``agent_uid``: the
        host uid a sandboxed agent runs as (None when it keeps the kernel's own); ``volumes``
        what it mounted.
        """
        if not self.sandboxed:
            readable: tuple[Bind, ...] = (("/", None),)
            writable: tuple[Bind, ...] = (("/", None),)
        else:
            own = [*self.readonly_paths, *(self.template.python_path if self.template else ())]
            if self.script is not None:
                own.append(os.path.dirname(self.script))
            # A template's root is shown as it is, never idmapped: the agent reads it as one of the others.
            base = [self.template.root] if self.template is not None and self.template.root is not None else []
            readable = (*((p, agent_uid) for p in [*system, *base]),
                        *((p, _acts_as(p, agent_uid, readonly=True)) for p in own),
                        *((p, _acts_as(p, agent_uid, readonly=False)) for p in self.writable_paths))
            writable = tuple((p, _acts_as(p, agent_uid, readonly=False)) for p in self.writable_paths)
        budget: dict[str, float] = {key: self.llm[key] for key in ("tokens", "calls_per_minute", "usd")
                                    if self.llm and key in self.llm}
        return Confinement(sandboxed=self.sandboxed, network=self.network,
                           allow_degraded=self.allow_degraded, readable=readable, writable=writable,
                           limits=self.limits, llm_budget=budget, workspace=self.workspace or 0,
                           deadline=self.deadline, volumes=volumes)

    @classmethod
    def parse(cls, wire: SpawnRequestWire, parent: Confinement,
              templates: Mapping[str, Template] | None = None) -> SpawnRequest:
        """Resolve ``wire`` on this host and check it is no looser than ``parent``; ``templates``
        are the kernel's (``sandbox.templates``)."""
        sandboxed = _flag(wire.sandboxed, True)
        if not sandboxed and parent is not HOST:
            raise PermissionDenied("sandboxed: only an admin (an outside client of the kernel's uid) "
                                   "may start an unsandboxed agent", field="sandboxed")
        network = _flag(wire.network, False)
        if network and not parent.network:
            raise PermissionDenied("network: the spawner has no network, so its child cannot have it",
                                   field="network")
        allow_degraded = _flag(wire.allow_degraded, False)
        if allow_degraded and not parent.allow_degraded:
            raise PermissionDenied("allow_degraded: the spawner runs with full isolation, so its child "
                                   "must too", field="allow_degraded")
        cwd = _given(wire.cwd)
        if cwd is not None:
            cwd = _resolve(cwd, None, "cwd")
            _require_seen(parent, cwd, "cwd")
        env = dict(_given(wire.env) or {})
        reserved = sorted(name for name in env if name.startswith(RESERVED_ENV_PREFIX))
        if reserved:
            raise InvalidArgument(f"env: {reserved[0]}: names starting {RESERVED_ENV_PREFIX} are set by the "
                                  "kernel and cannot be given", field=f"env.{reserved[0]}")
        extra = list(_given(wire.args) or [])
        script, command = _given(wire.script), _given(wire.command)
        if (script is None) == (command is None):
            raise InvalidArgument("SPAWN needs exactly one of script (a Python file) or command "
                                  "(a program and its arguments)")
        if script is not None:
            path: str | None = _resolve(script, cwd, "script")
            assert path is not None
            _require_seen(parent, path, "script")
            if not os.path.isfile(path):
                raise InvalidArgument(f"script {path!r} does not exist or is not a file", field="script")
            argv = [sys.executable, *extra]
        else:
            argv = [*_command(command, env, cwd, parent), *extra]
            path = None
        name = _given(wire.name)
        if name is None:
            name = _default_name(path or argv[0])
        readonly = [_resolve(p, cwd, "readonly_paths") for p in _given(wire.readonly_paths) or []]
        writable = [_resolve(p, cwd, "writable_paths") for p in _given(wire.writable_paths) or []]
        for p in readonly:
            _require_seen(parent, p, "readonly_paths")
        for p in writable:
            if not parent.may_write(p):
                raise PermissionDenied(f"writable_paths: {p} is not writable by the spawner",
                                       field="writable_paths", path=p)
        hostname = _given(wire.hostname)
        if hostname is not None and not sandboxed:
            raise InvalidArgument("hostname needs sandboxed: only a sandboxed agent has its own hostname",
                                  field="hostname")
        limits, defaults, tmp_size = _limits(_given(wire.limits), parent.limits)
        workspace = _workspace(_given(wire.workspace), sandboxed, parent.workspace)
        volumes, volume_owner = _volumes(_given(wire.volumes), sandboxed, workspace is not None, parent.volumes)
        llm = msgspec.to_builtins(wire.llm) if wire.llm else None
        _check_llm_budget(llm, parent.llm_budget)
        restart = restart_policy(wire)
        timeout, deadline = _timeout(_given(wire.timeout), parent.deadline)
        idle_timeout = _seconds(_given(wire.idle_timeout), "idle_timeout")
        template = _template(_given(wire.template), sandboxed, parent, templates or {})
        return cls(name=name, argv=argv, script=path, env=env, cwd=cwd, limits=limits,
                   default_limits=defaults, tmp_size=tmp_size, sandboxed=sandboxed, network=network,
                   allow_degraded=allow_degraded, writable_paths=writable, readonly_paths=readonly,
                   hostname=hostname, llm=llm, capabilities=_given(wire.capabilities),
                   egress=_given(wire.egress), restart=restart, workspace=workspace,
                   timeout=timeout, deadline=deadline, idle_timeout=idle_timeout, volumes=volumes,
                   volume_owner=volume_owner, template=template)


def restart_policy(wire: SpawnRequestWire) -> RestartPolicy:
    """SPAWN's ``restart`` as the supervisor's policy (``never`` if it has none)."""
    try:
        return RestartPolicy.from_request(msgspec.to_builtins(wire.restart) if wire.restart else None)
    except ValueError as exc:
        raise InvalidArgument(str(exc), field=str(exc).partition(":")[0]) from None


def parse_grace(request: KillRequest, default: float) -> float:
    grace = _given(request.grace)
    return default if grace is None else _unit(parse_duration, grace, "grace")


def parse_timeout(value: float | str | None | Any) -> float | None:
    value = _given(value)
    return None if value is None else _unit(parse_duration, value, "timeout")


def _unit(parse: Callable[[Any, str], Any], value: Any, what: str) -> Any:
    """``parse(value)``: text the wire pattern let through can still be out of range ("0", "2000T")."""
    try:
        return parse(value, what)
    except ValueError as exc:
        raise InvalidArgument(str(exc), field=what) from None


def _flag(value: Any, default: bool) -> bool:
    value = _given(value)
    return default if value is None else bool(value)


def _default_name(path: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    cleaned = "".join(c if c.isalnum() or c in "_.-" else "-" for c in stem).lstrip("_.-")[:60]
    return cleaned or "agent"


def _resolve(path: str, cwd: str | None, what: str) -> str:
    """The real host path: absolute, symlinks and ``..`` resolved (what is checked is what binds)."""
    if not os.path.isabs(path):
        if cwd is None:
            raise InvalidArgument(f"{what}: {path!r} is relative; give an absolute path or a cwd", field=what)
        path = os.path.join(cwd, path)
    real = os.path.realpath(path)
    if not os.path.lexists(real):
        raise InvalidArgument(f"{what}: {path} does not exist", field=what, path=path)
    return real


def _require_seen(parent: Confinement, path: str, what: str) -> None:
    if not parent.sees(path):
        raise PermissionDenied(f"{what}: {path} is outside the spawner's view", field=what, path=path)


def _command(command: str | list[str], env: dict[str, str], cwd: str | None,
             parent: Confinement) -> list[str]:
    argv = [command] if isinstance(command, str) else list(command)
    if not argv:
        raise InvalidArgument("command must be a program path or a non-empty list of strings "
                              "(no shell is involved)", field="command")
    program = argv[0]
    if "/" in program:
        if not os.path.isabs(program) and cwd is None:
            raise InvalidArgument(f"command: {program!r} is relative; give an absolute path or a cwd",
                                  field="command")
        found: str | None = os.path.normpath(os.path.join(cwd or "/", program))
    else:
        found = shutil.which(program, path=env.get("PATH", os.defpath))
    if found is None or not os.path.isfile(found) or not os.access(found, os.X_OK):
        raise InvalidArgument(f"command {program!r} is not an executable file (looked up in PATH "
                              "when it has no '/')", field="command", command=program)
    # What it really is must be in view; the name stays (a multi-call binary reads argv[0]),
    # and the child's own view, checked the same way, is all it can resolve in.
    _require_seen(parent, os.path.realpath(found), "command")
    return [found, *argv[1:]]


def _limits(wire: LimitsWire | None, parent: Limits) -> tuple[Limits, tuple[str, ...], int]:
    """The child's limits, its defaulted fields and its /tmp size; never above ``parent``'s.

    Absent means the default (512Mi, 128 pids, 1 core), capped at the parent's; null
    means unlimited, which only a spawner without that limit may ask for.
    """
    given: dict[str, Any] = msgspec.to_builtins(wire) if wire is not None else {}
    for alias, key in (("max_pids", "pids"), ("cpu_quota", "cpu")):
        if alias in given:
            if key in given:
                raise InvalidArgument(f"limits: give either {key} or {alias}, not both", field=f"limits.{alias}")
            value = given.pop(alias)
            given[key] = value / 100_000 if alias == "cpu_quota" and value is not None else value
    parsers: dict[str, Callable[[Any, str], Any]] = {
        "memory": parse_bytes, "pids": lambda value, _: value, "cpu": parse_cpu}
    defaults = {"memory": DEFAULT_MEMORY, "pids": DEFAULT_PIDS, "cpu": DEFAULT_CPU}
    values: dict[str, Any] = {}
    defaulted: list[str] = []
    for key, parse in parsers.items():
        ceiling = getattr(parent, key)
        if key not in given:
            default = defaults[key]
            values[key] = default if ceiling is None else min(default, ceiling)
            defaulted.append(key)
            continue
        raw = given[key]
        value = None if raw is None else _unit(parse, raw, f"limits.{key}")
        if ceiling is not None and (value is None or value > ceiling):
            raise PermissionDenied(f"limits.{key}: {'unlimited' if value is None else value} is more "
                                   f"than the spawner's {ceiling}", field=f"limits.{key}")
        values[key] = value
    limits = Limits(**values)
    tmp = given.get("tmp")
    if tmp is not None:
        tmp_size = _unit(parse_bytes, tmp, "limits.tmp")
        if limits.memory is not None and tmp_size > limits.memory:
            raise InvalidArgument(f"limits.tmp: {tmp_size} is more than the memory limit {limits.memory} "
                                  "(the private /tmp is memory)", field="limits.tmp")
    else:
        tmp_size = _TMP_UNLIMITED if limits.memory is None else max(limits.memory // _TMP_SHARE, 1 << 20)
    return limits, tuple(defaulted), tmp_size


def _workspace(wire: WorkspaceWire | None, sandboxed: bool, ceiling: int | None) -> int | None:
    """The workspace's size in bytes; never more than the spawner's own (``ceiling``)."""
    if wire is None:
        return None
    if not sandboxed:
        raise InvalidArgument("workspace needs sandboxed: it is bound into the agent's own view",
                              field="workspace")
    size: int = _unit(parse_bytes, wire.size, "workspace.size")
    if size < MIN_WORKSPACE:
        raise InvalidArgument(f"workspace.size: {size} is less than {MIN_WORKSPACE} bytes (1Mi), the room "
                              "its file system needs for itself", field="workspace.size")
    if ceiling == 0:
        raise PermissionDenied("workspace: the spawner has no workspace, so its child cannot have one "
                               "(a child's workspace is carved out of its parent's)", field="workspace")
    if ceiling is not None and size > ceiling:
        raise PermissionDenied(f"workspace.size: {size} is more than the spawner's workspace ({ceiling})",
                               field="workspace.size")
    return size


def _volumes(wire: list[VolumeWire] | None, sandboxed: bool, workspace: bool,
             held: tuple[VolumeGrant, ...] | None) -> tuple[list[VolumeMount], int | None]:
    """The volumes to mount, checked in shape and against what the spawner holds (``held``),
    and the uid whose volumes they are (None: the caller's own)."""
    if not wire:
        return [], None
    if not sandboxed:
        raise InvalidArgument("volumes need sandboxed: they are bound into the agent's own view", field="volumes")
    mounts: list[VolumeMount] = []
    owner = None
    for i, entry in enumerate(wire):
        where = f"volumes[{i}]"
        path = entry.path
        problem = path_problem(path)
        if problem is not None:
            raise InvalidArgument(f"{where}.path: {path!r} {problem}", field=f"{where}.path", path=path)
        if path == WORKSPACE_PATH and workspace:
            raise InvalidArgument(f"{where}.path: {WORKSPACE_PATH} is the agent's own workspace; give the "
                                  "volume another path, or drop workspace", field=f"{where}.path")
        for other in mounts:
            if other.name == entry.name:
                raise InvalidArgument(f"{where}.name: volume {entry.name!r} is listed twice",
                                      field=f"{where}.name")
            if inside(path, other.path) or inside(other.path, path):
                raise InvalidArgument(f"{where}.path: {path} overlaps {other.path}", field=f"{where}.path")
        size = None if entry.size is msgspec.UNSET else _unit(parse_bytes, entry.size, f"{where}.size")
        if size is not None and size < MIN_WORKSPACE:
            raise InvalidArgument(f"{where}.size: {size} is less than {MIN_WORKSPACE} bytes (1Mi), the room "
                                  "its file system needs for itself", field=f"{where}.size")
        read_only = entry.read_only is True
        if held is not None:
            grant = next((g for g in held if g.name == entry.name), None)
            if grant is None:
                raise PermissionDenied(f"{where}.name: the spawner has not mounted volume {entry.name!r}, so "
                                       "its child cannot", field=f"{where}.name", volume=entry.name)
            if not read_only and not grant.writable:
                raise PermissionDenied(f"{where}.read_only: the spawner has volume {entry.name!r} read-only, "
                                       "so its child must too", field=f"{where}.read_only")
            if size is not None and size > grant.size:
                raise PermissionDenied(f"{where}.size: {size} is more than the spawner's volume "
                                       f"({grant.size})", field=f"{where}.size")
            owner = grant.uid
        mounts.append(VolumeMount(entry.name, path, size, read_only))
    return mounts, owner


def _template(name: str | None, sandboxed: bool, parent: Confinement,
              templates: Mapping[str, Template]) -> Template | None:
    """The template asked for: one of the kernel's, whose root and python_path the spawner could
    ask for itself as readonly_paths (so a template never shows a child more than its spawner
    sees: an agent may use its own template, and any other within its view)."""
    if name is None:
        return None
    template = templates.get(name)
    if template is None:
        raise InvalidArgument(f"template: no template {name!r} (the kernel's: {sorted(templates) or 'none'})",
                              field="template", template=name)
    if template.root is not None and not sandboxed:
        raise InvalidArgument(f"template: {name!r} has a root, shown in a sandboxed agent's own view only; "
                              "drop sandboxed: false", field="template")
    for path in [*([template.root] if template.root is not None else []), *template.python_path]:
        if not parent.sees(path):
            raise PermissionDenied(f"template: {name!r} shows {path}, which is outside the spawner's view",
                                   field="template", template=name)
    return template


def _timeout(value: Any, ceiling: float | None) -> tuple[float | None, float | None]:
    """The child's ``timeout`` and deadline, never past the spawner's deadline (``ceiling``)."""
    now = time.monotonic()
    remaining = None if ceiling is None else max(0.0, ceiling - now)
    seconds = _seconds(value, "timeout")
    if seconds is None:
        return remaining, ceiling
    if remaining is not None and seconds > remaining:
        raise PermissionDenied(f"timeout: {seconds:g}s is more than the spawner's remaining {remaining:.3f}s "
                               "(a child never outlives its spawner's timeout)", field="timeout")
    return seconds, now + seconds


def _seconds(value: Any, what: str) -> float | None:
    """A positive duration in seconds, or None when not given."""
    if value is None:
        return None
    seconds: float = _unit(parse_duration, value, what)
    if seconds <= 0:
        raise InvalidArgument(f"{what}: must be more than 0 seconds, got {value!r}", field=what)
    return seconds


def _check_llm_budget(llm: dict[str, Any] | None, budget: dict[str, float]) -> None:
    for key, ceiling in budget.items():
        value = (llm or {}).get(key)
        if value is not None and value > ceiling:
            raise PermissionDenied(f"llm.{key}: {value} is more than the spawner's {ceiling}",
                                   field=f"llm.{key}")


def _uid_may(root: str, path: str, uid: int, *, write: bool) -> bool:
    """Whether ``uid`` (no supplementary groups) could read, or write, ``path`` beneath the
    bind ``root``: search on every directory from ``root`` down to it, then the access
    itself. Above ``root`` the view has directories of its own, open to all."""
    try:
        info = os.stat(path)
        directory = path
        while directory != root and directory != "/":
            directory = os.path.dirname(directory)
            if not _permits(os.stat(directory), uid, 0o1):
                return False
    except OSError:
        return False
    return _permits(info, uid, 0o2 if write else 0o4)


def _acts_as(bind: str, agent_uid: int | None, *, readonly: bool) -> int | None:
    """The host uid an agent running as ``agent_uid`` acts as beneath its bind of ``bind``.

    The sandbox's rule (``sandbox.mounts``): a writable bind, and a read-only one that
    others could not read, is idmapped so the agent acts as its owner; otherwise the
    agent is one of the others.
    """
    if agent_uid is None:
        return None
    try:
        info = os.stat(bind)
    except OSError:
        return agent_uid
    needed = (0o005 if stat.S_ISDIR(info.st_mode) else 0o004) if readonly else 0
    idmapped = info.st_uid != agent_uid and (not readonly or info.st_mode & needed != needed)
    return info.st_uid if idmapped else agent_uid


def _permits(info: os.stat_result, uid: int, bit: int) -> bool:
    if info.st_uid == uid:
        return bool(info.st_mode & (bit << 6))
    return bool(info.st_mode & bit)
