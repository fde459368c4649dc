"""``agentos down [FILE]``: stop a team (its project's agents, or every agent), and the kernel
``agentos up -d`` started once nothing else runs on it."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ...cgroups import clean_dead_kernels
from ...client import Client
from ...errors import AgentOSError, KernelNotRunning, NotFound
from ...kernel.config import default_state_dir
from ...processes.ledger import stand_down
from ..launch import add_socket_option, duration_option, marker_path, socket_path, stop_kernel_pid
from ..projects import add_project_option, describe_running
from .validate import load_or_report


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("down", help="stop a manifest's project (every agent without FILE or -p), and a "
                       "kernel `agentos up -d` started once nothing else runs on it")
    p.add_argument("file", type=Path, nargs="?", help="the manifest whose project to stop")
    p.add_argument("--grace", type=duration_option, default="10s",
                   help="how long each agent gets to exit after SIGTERM (default 10s)")
    p.add_argument("-v", "--volumes", action="store_true",
                   help="also remove the project's mailboxes, state, registered names and volumes (agentos purge)")
    add_project_option(p)
    add_socket_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    manifest = None
    if args.file is not None:
        manifest = load_or_report(args.file)
        if manifest is None:
            return 1
    project = args.project or (manifest.project if manifest is not None else None)
    if args.volumes and project is None:
        print("agentos down: error: --volumes needs a project: give FILE or -p NAME", file=sys.stderr)
        return 2
    socket = socket_path(args.socket, manifest)
    try:
        client = Client(socket)
    except KernelNotRunning:
        print(f"no kernel is running on {socket}: nothing to stop")
        # A kernel that died still has the team in its ledger: the next one must not bring it back.
        state_dir = (manifest.kernel.state_dir if manifest is not None else None) or default_state_dir()
        if stand_down(state_dir, project):
            print(f"{'project ' + project if project else 'its agents'} will not be restored by the next kernel")
        marker_path(socket).unlink(missing_ok=True)
        _clean_dead_kernels()
        return 0
    status = 0
    with client:
        running = client.list_agents(status="running", project=project)
        # The manifest's agents dependents first, then whatever else of the project still runs
        # (by id: without a project, names of two teams may be the same).
        declared = [name for spec in reversed(manifest.start_order()) for name in spec.instance_names()] \
            if manifest is not None else []
        targets: list[dict[str, Any]] = [{"agent": f"{project}/{name}"} for name in declared]
        targets += [{"id": a["id"]} for a in running if a["name"] not in declared]
        for target in targets:
            try:
                info = client.kill(**target, grace=args.grace)
            except NotFound:
                continue
            if info["killed"]:
                print(f"stopped {info['name']} ({info['status']})")
        if args.volumes:
            assert project is not None
            try:
                removed = client.purge(project)
            except AgentOSError as exc:
                print(f"agentos down: error: cannot remove project {project}'s data: {exc}", file=sys.stderr)
                status = 1
            else:
                print(f"removed project {project}'s data: {_removed(removed)}")
        kernel_pid = client.hello()["pid"]
        others = client.list_agents(status="running")
    marker = marker_path(socket)
    if marker.exists() and marker.read_text().strip() == str(kernel_pid):
        if others:
            # Started for this team, but others run on it now: not this command's to stop.
            print(f"kernel left running (pid {kernel_pid}): {describe_running(others)}")
            return status
        stop_kernel_pid(kernel_pid)
        print(f"stopped the kernel (pid {kernel_pid})")
    marker.unlink(missing_ok=True)
    _clean_dead_kernels()
    return status


def _removed(counts: dict[str, object]) -> str:
    kinds = ("messages", "dead_letters", "names", "keys", "volumes")
    return ", ".join(f"{counts.get(kind, 0)} {kind.replace('_', ' ')}" for kind in kinds)


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
