"""Request payloads for the process syscalls, shared by ``Client`` and ``AsyncClient``.

The kernel validates everything; these only shape arguments, and turn a local
script path into an absolute one (the kernel does not share the caller's cwd).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal


def spawn_request(name: str | None = None, script: str | os.PathLike[str] | None = None, *,
                  command: str | Sequence[str] | None = None, args: Sequence[str] = (),
                  env: Mapping[str, str] | None = None, cwd: str | os.PathLike[str] | None = None,
                  sandboxed: bool = True, network: bool = False,
                  limits: Mapping[str, Any] | None = None, allow_degraded: bool = False,
                  capabilities: Sequence[str] | None = None, hostname: str | None = None,
                  writable_paths: Sequence[str] = (), readonly_paths: Sequence[str] = (),
                  restart: Mapping[str, Any] | None = None, llm: Mapping[str, Any] | None = None,
                  egress: Sequence[str] | None = None,
                  workspace: int | str | Mapping[str, Any] | None = None,
                  volumes: Sequence[Mapping[str, Any]] | None = None,
                  timeout: float | str | None = None,
                  idle_timeout: float | str | None = None,
                  project: str | None = None, template: str | None = None,
                  tools: Sequence[str | Mapping[str, Any]] | None = None,
                  placement: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The SPAWN payload: a Python ``script`` or a ``command``.

    Args:
        name: The agent's name, unique in its project (default: the script's file name).
        script: A Python file to run (made absolute here).
        command: A program to run instead of ``script``: an argv list, or one string (no shell).
        args: Arguments after ``script`` or ``command``.
        env: Variables added to the agent's environment.
        cwd: Its working directory (made absolute here; default: the sandbox's).
        sandboxed: Run it in the sandbox (namespaces, seccomp, Landlock); False: admins only.
        network: Give a sandboxed agent the host's network (otherwise only ``lo``).
        limits: Resource limits of it and its subtree: ``memory``, ``pids``/``max_pids``,
            ``cpu``/``cpu_quota``, ``tmp`` (sizes as ``"512Mi"``, CPU as ``"500m"``).
        allow_degraded: Run even when a limit or sandbox layer asked for cannot be enforced.
        capabilities: What it may do (default: ``permissions.default_child``), at most the
            spawner's.
        hostname: Its hostname in its own UTS namespace (sandboxed agents only).
        writable_paths: Host paths it may write (made absolute here).
        readonly_paths: Host paths it may read (made absolute here).
        restart: The supervisor's policy: ``policy`` (never, on-failure, always),
            ``max_restarts``, ``window``, ``backoff``, ``backoff_max``.
        llm: Its THINK defaults and budgets: ``provider``, ``model``, ``system``,
            ``temperature``, ``tokens``, ``calls_per_minute``, ``usd``.
        egress: Hosts it may fetch through HTTP (default: the spawner's list).
        workspace: A private writable /workspace with this disk quota: a size
            (``"256Mi"``) or ``{"size": ...}``.
        volumes: Named volumes of its project to mount, each ``{"name": "data", "path": "/data",
            "size": "1Gi", "read_only": False}`` (``size`` and ``read_only`` optional; ``size`` is
            the quota of a volume this creates). A volume at ``/workspace`` is its cwd.
        timeout: Wall time from its start after which the kernel kills it (seconds or
            ``"10m"``).
        idle_timeout: Time without a syscall of its own after which the kernel kills it.
        project: The team it belongs to (an agent's children are always in its own).
        template: One of the kernel's templates (``sandbox.templates``, listed in HELLO's
            ``capabilities.processes.templates``): its root directory read-only under the view,
            and forked by its zygote with its ``preload`` modules already imported.
        tools: The MCP tools its ``think(tools="mcp")`` may call (docs/mcp.md): ``server.tool``
            or a ``*`` pattern, or ``{"tool": ..., "approve": True}`` to have a human approve
            each call; within the spawner's own.
        placement: Where on a cluster it runs (a kernel with ``--cluster``; docs/cluster.md):
            ``labels`` its node must carry, custom ``resources``, ``gpus``, ``cpus``, how long
            it may wait for a node (``timeout``), and the placement ``group`` it is a member of
            (``{"name": ..., "size": members, "strategy": "pack" | "spread" | "strict-pack" |
            "strict-spread"}``). A kernel without a cluster runs it here.
    """
    payload: dict[str, Any] = {"sandboxed": sandboxed, "network": network}
    if name is not None:
        payload["name"] = name
    if project is not None:
        payload["project"] = project
    if script is not None:
        payload["script"] = os.path.abspath(script)
    if command is not None:
        payload["command"] = command if isinstance(command, str) else list(command)
    if args:
        payload["args"] = list(args)
    if env:
        payload["env"] = dict(env)
    if cwd is not None:
        payload["cwd"] = os.path.abspath(cwd)
    if limits is not None:
        payload["limits"] = dict(limits)
    if allow_degraded:
        payload["allow_degraded"] = True
    if capabilities is not None:
        payload["capabilities"] = list(capabilities)
    if hostname is not None:
        payload["hostname"] = hostname
    if writable_paths:
        payload["writable_paths"] = [os.path.abspath(p) for p in writable_paths]
    if readonly_paths:
        payload["readonly_paths"] = [os.path.abspath(p) for p in readonly_paths]
    if restart is not None:
        payload["restart"] = dict(restart)
    if llm is not None:
        payload["llm"] = dict(llm)
    if egress is not None:
        payload["egress"] = list(egress)
    if workspace is not None:
        payload["workspace"] = dict(workspace) if isinstance(workspace, Mapping) else {"size": workspace}
    if volumes is not None:
        payload["volumes"] = [dict(volume) for volume in volumes]
    if timeout is not None:
        payload["timeout"] = timeout
    if idle_timeout is not None:
        payload["idle_timeout"] = idle_timeout
    if template is not None:
        payload["template"] = template
    if placement is not None:
        payload["placement"] = dict(placement)
    if tools is not None:
        payload["tools"] = [t if isinstance(t, str) else dict(t) for t in tools]
    return payload


def volumes_request(action: str, name: str | None, project: str | None, uid: int | None) -> dict[str, Any]:
    """The VOLUMES payload."""
    payload: dict[str, Any] = {"action": action}
    for key, value in (("name", name), ("project", project), ("uid", uid)):
        if value is not None:
            payload[key] = value
    return payload


def target(agent: str | None = None, *, id: str | None = None, name: str | None = None) -> dict[str, Any]:
    """``{"id": ...}`` or ``{"name": ...}``; a bare ``agent`` is taken as a name (seed style)."""
    if agent is not None:
        if id is not None or name is not None:
            raise TypeError("give the agent positionally, or as id= or name=, not both")
        name = agent
    if id is None and name is None:
        raise TypeError("name the agent: kill('worker'), kill(id=...) or kill(name=...)")
    out: dict[str, Any] = {}
    if id is not None:
        out["id"] = id
    if name is not None:
        out["name"] = name
    return out


def kill_request(agent: str | None = None, *, id: str | None = None, name: str | None = None,
                 grace: float | str | None = None, wait: bool = True) -> dict[str, Any]:
    """The KILL payload.

    Args:
        agent: The agent's name (or ``project/name``), as ``name``.
        id: The agent's id, instead of its name.
        name: The agent's name, instead of ``agent``.
        grace: Time between SIGTERM and SIGKILL (seconds or ``"5s"``; the kernel's default
            if None).
        wait: Answer once the agent has ended (False: once it has been signalled).
    """
    payload = target(agent, id=id, name=name)
    if grace is not None:
        payload["grace"] = grace
    if not wait:
        payload["wait"] = False
    return payload


def list_request(status: str | Sequence[str] | None = None, name: str | None = None,
                 project: str | None = None, include: Sequence[str] = (), *, limit: int | None = None,
                 cursor: str | None = None, stream: bool = False) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    if limit is not None:
        payload["limit"] = limit
    if cursor is not None:
        payload["cursor"] = cursor
    if stream:
        payload["stream"] = True
    if include:
        payload["include"] = list(include)
    if project is not None:
        payload["project"] = project
    if status is not None:
        payload["status"] = status if isinstance(status, str) else list(status)
    if name is not None:
        payload["name"] = name
    return payload


def wait_request(agent: str | None = None, *, id: str | None = None, name: str | None = None,
                 timeout: float | str | None = None,
                 until: Literal["exit", "ready"] = "exit") -> dict[str, Any]:
    """The WAIT payload.

    Args:
        agent: The agent's name (or ``project/name``), as ``name``.
        id: The agent's id, instead of its name.
        name: The agent's name, instead of ``agent``.
        timeout: Wait at most this long (seconds or ``"30s"``; forever if None), then
            ``Timeout``.
        until: ``"exit"``: until the agent ends; ``"ready"``: until it calls ``ready()``.
    """
    payload = target(agent, id=id, name=name)
    if timeout is not None:
        payload["timeout"] = timeout
    if until != "exit":
        payload["until"] = until
    return payload


def logs_request(agent: str | None = None, *, id: str | None = None, name: str | None = None,
                 tail: int | None = None, follow: bool = False) -> dict[str, Any]:
    payload = target(agent, id=id, name=name)
    if tail is not None:
        payload["tail"] = tail
    if follow:
        payload["follow"] = True
    return payload
