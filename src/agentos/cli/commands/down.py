"""``agentos down [FILE]``: stop a team (or every agent), and a kernel ``agentos up -d`` started."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ...cgroups import clean_dead_kernels
from ...client import Client
from ...errors import KernelNotRunning, NotFound
from ..launch import add_socket_option, duration_option, marker_path, socket_path, stop_kernel_pid
from .validate import load_or_report


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("down", help="stop a manifest's agents (all agents without FILE) and a kernel "
                       "`agentos up -d` started")
    p.add_argument("file", type=Path, nargs="?", help="the manifest whose agents to stop")
    p.add_argument("--grace", type=duration_option, default="10s", help="how long each agent gets to exit after SIGTERM (default 10s)")
    add_socket_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    manifest = None
    if args.file is not None:
        manifest = load_or_report(args.file)
        if manifest is None:
            return 1
    socket = socket_path(args.socket, manifest)
    try:
        client = Client(socket)
    except KernelNotRunning:
        print(f"no kernel is running on {socket}: nothing to stop")
        marker_path(socket).unlink(missing_ok=True)
        _clean_dead_kernels()
        return 0
    with client:
        if manifest is not None:
            names = [name for spec in reversed(manifest.start_order()) for name in spec.instance_names()]
        else:
            names = [agent["name"] for agent in client.list_agents(status="running")]
        for name in names:
            try:
                info = client.kill(name, grace=args.grace)
            except NotFound:
                continue
            if info["killed"]:
                print(f"stopped {name} ({info['status']})")
        kernel_pid = client.hello()["pid"]
    marker = marker_path(socket)
    if marker.exists() and marker.read_text().strip() == str(kernel_pid):
        stop_kernel_pid(kernel_pid)
        print(f"stopped the kernel (pid {kernel_pid})")
    marker.unlink(missing_ok=True)
    _clean_dead_kernels()
    return 0


def _clean_dead_kernels() -> None:
    """A kernel killed with -9 left its agents' cgroups (and what ran in them): remove them now,
    not at the next kernel's start. Live kernels' cgroups are never touched."""
    try:
        cleanup = clean_dead_kernels()
    except OSError as exc:
        print(f"agentos down: cannot look for cgroups of kernels that died: {exc}", file=sys.stderr)
        return
    if cleanup.removed:
        print(f"removed {len(cleanup.removed)} cgroup(s) a kernel that died left behind")
    for failure in cleanup.failed:
        print(f"agentos down: cannot remove a dead kernel's cgroup: {failure}", file=sys.stderr)
