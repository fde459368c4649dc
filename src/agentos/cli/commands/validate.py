"""``agentos validate FILE``: check a manifest without starting anything."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from ...manifest import AgentSpec, Manifest, ManifestError, load


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("validate", help="check a manifest: every error with file:line:column and its fix")
    p.add_argument("file", type=Path, help="the manifest (YAML)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing when the manifest is valid")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        manifest = load(args.file)
    except ManifestError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    if not args.quiet:
        print(summary(manifest, str(args.file)))
    return 0


def summary(manifest: Manifest, shown_as: str) -> str:
    """What the manifest will start, one agent a line, in start order."""
    count = sum(spec.replicas for spec in manifest.agents)
    lines = [f"{shown_as}: valid, {count} agent{'s' if count != 1 else ''}"]
    order = manifest.start_order()
    width = max(len(spec.name) for spec in order)
    for spec in order:
        lines.append(f"  {spec.name:<{width}}  {_describe(spec, manifest.directory)}")
    return "\n".join(lines)


def _describe(spec: AgentSpec, base: Path) -> str:
    if spec.script is not None:
        what = f"script {_relative(spec.script, base)}"
    else:
        what = "command " + " ".join(spec.command or ())
    parts = [what]
    if spec.replicas > 1:
        parts.append(f"x{spec.replicas}")
    box = spec.sandbox
    parts.append(("sandbox on" if box.enabled else "sandbox OFF") + (", network on" if box.has_network else ""))
    limits = spec.limits
    parts.append(f"memory {_size(limits.memory)}, cpu {_amount(limits.cpu)}, pids {_amount(limits.pids)}")
    parts.append(f"restart {spec.restart.policy}")
    if spec.depends_on:
        parts.append("after " + ", ".join(spec.depends_on))
    return "; ".join(parts)


def _relative(path: Path, base: Path) -> str:
    relative = os.path.relpath(path, base)
    return str(path) if relative.startswith("..") else relative


def _size(value: int | None) -> str:
    if value is None:
        return "unlimited"
    for suffix, factor in (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if value % factor == 0:
            return f"{value // factor}{suffix}"
    return f"{value}B"


def _amount(value: float | None) -> str:
    return "unlimited" if value is None else f"{value:g}"
