"""Run a program as an unprivileged uid while this interpreter stays reachable for it.

A dev checkout often has its Python under a 0700 directory (pyenv in /root). The
child gets a private mount namespace in which each such directory is replaced by a
world-traversable tmpfs holding binds of just the entries needed; nothing changes
for the host. Then it drops every privilege and execs.

Two ways in: ``become(...)`` as a ``preexec_fn``, or this file as a command wrapper
(``python tests/unprivileged.py UID GID [SOURCE:TARGET...] -- argv...``) for helpers that take a
command, such as ``KernelProcess(command=...)``.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from agentos.sandbox import mounts
from agentos.sandbox._linux import linux

#: sitecustomize that keeps a dev (editable) install from rebuilding as an unprivileged uid.
DEV_SITE = str(Path(__file__).parent / "sandbox" / "agents" / "dev_site")
WRAPPER = str(Path(__file__).resolve())


def blocked_ancestors(paths: Iterable[str]) -> dict[str, set[str]]:
    """Directories that an unprivileged uid cannot traverse on the way to ``paths``, with
    the entries below them that it needs (e.g. /root (0700) -> {.pyenv})."""
    blocked: dict[str, set[str]] = {}
    for path in paths:
        parts = path.strip("/").split("/")
        for depth in range(1, len(parts)):
            parent = "/" + "/".join(parts[:depth])
            if not os.stat(parent).st_mode & 0o001:
                blocked.setdefault(parent, set()).add(parts[depth])
                break
    return blocked


def become(uid: int, gid: int, argv: list[str], env: Mapping[str, str], reachable: Iterable[str] = (),
           binds: Iterable[tuple[str, str]] = ()) -> None:
    """In a forked child of root: make this interpreter and ``reachable`` traversable,
    bind each ``(source, target)`` (e.g. a delegated cgroup over its hierarchy's root),
    drop to ``uid``/``gid`` with no supplementary groups, exec ``argv``. Never returns."""
    linux.unshare(linux.CLONE_NEWNS)
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    for source, target in binds:
        linux.mount(source, target, None, linux.MS_BIND)
    for directory, entries in blocked_ancestors([*mounts.python_paths(), *reachable]).items():
        keep = {entry: os.open(f"{directory}/{entry}", os.O_PATH) for entry in entries}
        linux.mount("tmpfs", directory, "tmpfs", 0, "mode=0755")
        for entry, fd in keep.items():
            os.mkdir(f"{directory}/{entry}")
            linux.mount(f"/proc/self/fd/{fd}", f"{directory}/{entry}", None, linux.MS_BIND | linux.MS_REC)
            os.close(fd)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    os.execve(argv[0], argv, dict(env))


def unprivileged_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` fit for another uid: no HOME or runtime dir of root's, the dev-install site first."""
    out = {k: v for k, v in env.items() if k not in ("HOME", "XDG_RUNTIME_DIR", "PYTHONPATH")}
    out["HOME"] = "/"
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [DEV_SITE, env.get("PYTHONPATH")]))
    return out


def wrapper(uid: int, gid: int, binds: Iterable[tuple[str, str]] = ()) -> list[str]:
    """The command prefix that runs what follows it as ``uid``/``gid`` (see the module doc)."""
    return [sys.executable, WRAPPER, str(uid), str(gid), *[f"{s}:{t}" for s, t in binds], "--"]


if __name__ == "__main__":
    separator = sys.argv.index("--")
    uid, gid, *bind_args = sys.argv[1:separator]
    command = sys.argv[separator + 1:]
    assert command, "usage: unprivileged.py UID GID [SOURCE:TARGET...] -- argv..."
    become(int(uid), int(gid), command, unprivileged_env(os.environ),
           binds=[tuple(arg.split(":", 1)) for arg in bind_args])  # type: ignore[misc]
