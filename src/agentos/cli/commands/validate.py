"""``agentos validate FILE``: check a manifest without starting anything."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from ...manifest import AgentSpec, Manifest, ManifestError, load
from ..output import amount, size


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("validate", help="check a manifest: every error with file:line:column and its fix")
    p.add_argument("file", type=Path, help="the manifest (YAML)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing when the manifest is valid")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    manifest = load_or_report(args.file)
    if manifest is None:
        return 1
    if not args.quiet:
        print(summary(manifest, str(args.file)))
    return 0


def load_or_report(path: Path) -> Manifest | None:
    """The manifest at ``path``, or None after printing each of its problems on stderr."""
    try:
        return load(path)
    except ManifestError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


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
        what = "command " + shlex.join(spec.command or ())
    parts = [what]
    if spec.replicas > 1:
        parts.append(f"x{spec.replicas}")
    box = spec.sandbox
    parts.append(("sandbox on" if box.enabled else "sandbox OFF") + (", network on" if box.has_network else ""))
    limits = spec.limits
    parts.append(f"memory {size(limits.memory)}, cpu {amount(limits.cpu)}, pids {amount(limits.pids)}")
    parts.append(f"restart {spec.restart.policy}")
    if spec.workspace is not None:
        parts.append(f"workspace {spec.workspace}")
    if spec.volumes:
        parts.append("volumes " + ", ".join(f"{v.name}:{v.path}" + (":ro" if v.read_only else "")
                                            for v in spec.volumes))
    if spec.depends_on:
        parts.append("after " + ", ".join(spec.depends_on))
    return "; ".join(parts)


def _relative(path: Path, base: Path) -> str:
    relative = os.path.relpath(path, base)
    return str(path) if relative.startswith("..") else relative
