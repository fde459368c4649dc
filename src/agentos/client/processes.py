"""Request payloads for the process syscalls, shared by ``Client`` and ``AsyncClient``.

The kernel validates everything; these only shape arguments, and turn a local
script path into an absolute one (the kernel does not share the caller's cwd).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any


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
                  timeout: float | str | None = None,
                  idle_timeout: float | str | None = None,
                  project: str | None = None) -> dict[str, Any]:
    """The SPAWN payload: a Python ``script`` or a ``command`` (argv list or program path).

    ``workspace``: its size (``"256Mi"``) or the whole ``{"size": ...}``, for a private
    writable directory at /workspace with that disk quota. ``timeout``: the kernel kills
    the agent that long after its start; ``idle_timeout``: after that long without a
    syscall of its own (seconds, or ``"10m"``). ``project``: the team it belongs to (its
    name is unique there; an agent's children are always in its own).
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
    if timeout is not None:
        payload["timeout"] = timeout
    if idle_timeout is not None:
        payload["idle_timeout"] = idle_timeout
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
    payload = target(agent, id=id, name=name)
    if grace is not None:
        payload["grace"] = grace
    if not wait:
        payload["wait"] = False
    return payload


def list_request(status: str | Sequence[str] | None = None, name: str | None = None,
                 project: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    if project is not None:
        payload["project"] = project
    if status is not None:
        payload["status"] = status if isinstance(status, str) else list(status)
    if name is not None:
        payload["name"] = name
    return payload


def wait_request(agent: str | None = None, *, id: str | None = None, name: str | None = None,
                 timeout: float | str | None = None, until: str = "exit") -> dict[str, Any]:
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
