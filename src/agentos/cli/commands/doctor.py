"""``agentos doctor``: what this host and its kernel can do, and what to fix."""
from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import AgentOSError
from ..launch import add_socket_option, connect, socket_path

if TYPE_CHECKING:
    from ...cgroups.trial import Trial
    from ...sandbox.probe import HostSupport

#: Exit status when something agentos needs is missing (warnings alone leave it 0).
_BROKEN = 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("doctor", help="check what a kernel run by this user enforces: isolation, cgroups, "
                       "the kernel, LLM keys")
    p.add_argument("--json", action="store_true", help="one JSON object: {ok, uid, checks: [{check, level, "
                   "detail, ...}]}, for scripts")
    p.add_argument("--fix", action="store_true", help="also remove the cgroups kernels that died (kill -9) "
                   "left behind, killing what still runs in them")
    p.add_argument("--cluster", nargs="?", const="", metavar="ADDR", help="also check each node of a Ray "
                   "cluster (the agentos[ray] extra): what the sandbox can do there, and Ray's own state; ADDR "
                   "as `agentos kernel --cluster` takes it (default: the running kernel's cluster, else auto)")
    add_socket_option(p)
    p.set_defaults(func=run)


class Report:
    """The checks' findings, printed as they come (text) or as one object at the end (``--json``)."""

    def __init__(self, as_json: bool) -> None:
        self.failed = False
        self.as_json = as_json
        self.checks: list[dict[str, Any]] = []

    def line(self, level: str, what: str, detail: str, **data: Any) -> None:
        """One finding; ``node=ID`` in ``data``: about that cluster node, not this host."""
        self.failed |= level == "FAIL"
        self.checks.append({"check": what, "level": level.lower(), "detail": detail, **data})
        if not self.as_json:
            where = f"node {data['node'][:8]} " if data.get("node") else ""
            print(f"{level:<4}  {where}{what}: {detail}")

    def finish(self) -> int:
        if self.as_json:
            print(json.dumps({"ok": not self.failed, "uid": os.geteuid(), "checks": self.checks}, indent=2))
        return _BROKEN if self.failed else 0


def run(args: argparse.Namespace) -> int:
    report = Report(args.json)
    _python(report)
    hello = _kernel(report, args)
    _cgroups(report, hello)
    _leftovers(report, args.fix)
    _sandbox(report)
    _root(report, hello)
    _llm_keys(report, hello)
    _llm_endpoint(report, hello)
    if args.cluster is not None:
        from .doctor_cluster import check_cluster

        check_cluster(report, args.cluster, hello)
    return report.finish()


def _python(report: Report) -> None:
    from ... import protocol  # noqa: F401  (importing it decides which twins load)
    from ..._extensions import EXTENSIONS_LOADED

    version = ".".join(map(str, sys.version_info[:3]))
    report.line("ok" if sys.version_info >= (3, 11) else "FAIL", "python", version)
    missing = sorted(name for name, loaded in EXTENSIONS_LOADED.items() if not loaded)
    if missing:
        report.line("warn", "compiled modules", f"using the pure-Python twins of {', '.join(missing)} "
                    "(slower); reinstall agentos to build them")
    else:
        report.line("ok", "compiled modules", ", ".join(sorted(EXTENSIONS_LOADED)) or "none needed yet")


def _leftovers(report: Report, fix: bool) -> None:
    """Cgroups of kernels that died (their agents' processes may still run in them): named, or
    with ``--fix`` removed. A live kernel's are never counted."""
    from ...cgroups import clean_dead_kernels, open_driver

    try:
        driver = open_driver()
        stale = sorted(cgroup.agent_id for cgroup in driver.stale())
        if stale and fix:
            cleanup = clean_dead_kernels(driver)
            if cleanup.failed:
                report.line("warn", "dead kernels' cgroups", f"removed {len(cleanup.removed)}, could not remove "
                            f"{'; '.join(cleanup.failed)}", removed=cleanup.removed, failed=cleanup.failed)
            else:
                report.line("ok", "dead kernels' cgroups", f"removed {len(cleanup.removed)} "
                            f"({', '.join(cleanup.removed)})", removed=cleanup.removed)
            return
    except OSError as exc:
        report.line("warn", "dead kernels' cgroups", f"cannot look for them: {exc}")
        return
    if stale:
        report.line("warn", "dead kernels' cgroups", f"{len(stale)} agent cgroup(s) of a kernel that died remain "
                    f"({', '.join(stale)}); `agentos doctor --fix` or `agentos down` removes them", stale=stale)
    else:
        report.line("ok", "dead kernels' cgroups", "none left behind")


#: The limits a manifest asks for by default; a kernel that cannot enforce them runs agents degraded.
_LIMITS = frozenset({"memory", "pids", "cpu"})


def _cgroups(report: Report, hello: dict[str, Any] | None) -> None:
    """What the kernel will enforce: the running kernel's own answer, else a trial run of what a
    kernel started by this user does (make, then remove, its cgroup directories)."""
    from ...cgroups.trial import Trial, trial

    if hello is not None:
        described = hello.get("capabilities", {}).get("processes", {}).get("cgroups", {})
        who = f"the running kernel (pid {hello['pid']})"
        found = Trial(described.get("driver", "none"), [Path(r) for r in described.get("roots", [])],
                      frozenset(described.get("enforceable", [])), described.get("reason"),
                      bool(described.get("delegated")))
    else:
        who = f"a kernel run by uid {os.geteuid()}"
        found = trial()
    cgroups_line(report, who, found, lambda: _how_to_get_cgroups(found.driver, found.roots, found.delegated))


def cgroups_line(report: Report, who: str, found: Trial, advice: Callable[[], str], **extra: Any) -> None:
    """The cgroups finding of ``who`` (this host's kernel, or a cluster node's); ``advice``: how
    to get what is missing there."""
    driver, roots, enforced, reason, delegated = (found.driver, found.roots, found.enforceable, found.reason,
                                                  found.delegated)
    where = f"{who}: delegated v2 subtree at {roots[0]}," if delegated else who
    data = {"driver": driver, "enforced": sorted(enforced), "not_enforced": sorted(_LIMITS - enforced),
            "delegated": str(roots[0]) if delegated else None, **extra}
    if enforced >= _LIMITS:
        report.line("ok", "cgroups", f"{where} enforces {', '.join(sorted(enforced))} ({driver} driver)", **data)
        return
    missing = ", ".join(sorted(_LIMITS - enforced))
    if reason is None and delegated:
        reason = f"{roots[0] / 'cgroup.controllers'} offers none of their controllers"
    report.line("warn", "cgroups", f"{where} will NOT enforce {missing}"
                + (f" ({reason})" if reason else f" (the {driver} driver cannot here)")
                + "; an agent asking for them fails to start unless it sets allow_degraded, and then runs "
                "without them (`agentos up` prints DEGRADED). " + advice(),
                **data, **({"reason": reason} if reason else {}))


#: A normal user's way to a delegated cgroup v2 subtree.
_SCOPE = "`systemd-run --user --scope -p Delegate=yes agentos up FILE`"


def _how_to_get_cgroups(driver: str, roots: list[Path], delegated: bool) -> str:
    """The concrete commands that give this user's kernel its cgroups."""
    if os.geteuid() == 0:
        return "Run `agentos kernel` as root on a host with the memory, pids and cpu controllers mounted."
    from ...cgroups import TOP, V1Driver, detect

    layout = detect()
    if driver == "none" and layout.kind != "none":
        # Refused at the root and not delegated: the advice is the hierarchy root would use's.
        driver = layout.driver_name()
        roots = V1Driver(layout.v1_mounts).roots if driver == "v1" else [Path(str(layout.v2_mount))]
    user = os.environ.get("USER") or str(os.geteuid())
    if delegated:
        if not _LIMITS <= layout.v2_controllers:
            held = ", ".join(sorted(_LIMITS & layout.v2_controllers)) or "none"
            return (f"This host's cgroup v2 hierarchy ({layout.v2_mount}) holds {held} of the limit controllers, "
                    "so no delegation can offer more"
                    + (" (a hybrid host: the rest are bound to v1 hierarchies)" if layout.kind == "hybrid" else "")
                    + "; run the kernel as root for limits.")
        return ("systemd delegates to users only the controllers user@.service names: give them more with a "
                "drop-in (root, once), /etc/systemd/system/user@.service.d/delegate.conf holding `[Service]` "
                "and `Delegate=cpu memory pids`, then `sudo systemctl daemon-reload` and a new login.")
    if driver == "v2":
        # Not "chown <mount>/agentos": v2 moves a process only by a cgroup.procs the mover may write
        # in the common ancestor, so the kernel itself must be inside what it is given.
        return (f"cgroup v2: run the kernel in a cgroup systemd delegates to you: {_SCOPE} (or "
                "`agentos kernel` the same way), which needs a systemd user session (`loginctl enable-linger "
                f"{user}` for one without a login); or run the kernel as root.")
    if driver == "v1":
        tops = " ".join(str(root / TOP) for root in roots)
        return (f"cgroup v1 hierarchies are not delegated to users (systemd's Delegate= covers only v2, and "
                f"this host's v2 hierarchy holds none of the limit controllers): have root delegate a subtree in "
                f"each, once: `sudo mkdir -p {tops} && sudo chown {user} {tops}`; or run the kernel as root.")
    return "No cgroup hierarchy is mounted: mount cgroup2 on /sys/fs/cgroup (root), or run as root."


def _sandbox(report: Report) -> None:
    try:
        from ...sandbox.probe import probe

        support = probe()
    except (ImportError, OSError) as exc:
        report.line("FAIL", "sandbox", f"cannot probe this host ({exc}); agents can only run with the sandbox off")
        return
    sandbox_lines(report, support)


def sandbox_lines(report: Report, support: HostSupport, runner: str = "the kernel", **extra: Any) -> None:
    """What the sandbox can do where ``support`` was probed (this host, or a cluster node, whose
    agents are started by ``runner``)."""
    missing = sorted(name for name, ok in support.namespaces.items() if not ok)
    if missing:
        notes = "; ".join(f"{name}: {support.notes.get(name, 'unavailable')}" for name in missing)
        report.line("warn", "namespaces", f"unavailable: {notes}", **extra)
    else:
        report.line("ok", "namespaces", ", ".join(sorted(support.namespaces)), **extra)
    if not support.root:
        report.line("ok" if support.user_namespaces else "warn", "rootless",
                    "user namespaces work" if support.user_namespaces
                    else f"no user namespaces ({support.notes.get('user', 'unavailable')}): run {runner} as root",
                    **extra)
    report.line("ok" if support.seccomp else "warn", "seccomp",
                "filters available" if support.seccomp else support.notes.get("seccomp", "unavailable"), **extra)
    report.line("ok" if support.landlock_abi else "warn", "landlock",
                f"ABI {support.landlock_abi}" if support.landlock_abi else support.notes.get("landlock", "off"),
                **extra)


def _kernel(report: Report, args: argparse.Namespace) -> dict[str, Any] | None:
    try:
        with connect(args) as client:
            hello: dict[str, Any] = client.hello()
    except AgentOSError as exc:
        report.line("info", "kernel", f"none reachable at {socket_path(args.socket)} ({exc.__class__.__name__}); "
                    "`agentos up FILE` or `agentos kernel` starts one")
        return None
    report.line("ok", "kernel", f"agentos {hello['version']}, pid {hello['pid']}, "
                f"{len(hello.get('syscalls', []))} syscalls, at {socket_path(args.socket)}")
    return hello


def _root(report: Report, hello: dict[str, Any] | None) -> None:
    """A root kernel runs sandboxed agents as a dedicated uid, but an unsandboxed one as root."""
    root = (hello.get("capabilities", {}).get("processes", {}).get("sandbox", {}).get("root")
            if hello is not None else os.geteuid() == 0)
    if not root:
        return
    who = "the running kernel runs" if hello is not None else "a kernel started here would run"
    report.line("warn", "root", f"{who} as root: an agent with `sandbox: {{enabled: false}}` runs as root and "
                "can read every file on this host (/etc/shadow, ssh and API keys); keep agents sandboxed "
                "(they then run as processes.agent_uid and see host files only read-only, as that uid), or "
                "run the kernel as a normal user")


def _llm_keys(report: Report, hello: dict[str, Any] | None) -> None:
    if hello is not None:
        llm = hello.get("capabilities", {}).get("llm", {})
        if llm.get("configured"):
            report.line("ok", "LLM key", f"the running kernel holds a key for {llm.get('provider')}")
        else:
            report.line("warn", "LLM key", f"the running kernel has no key for {llm.get('provider')}: THINK "
                        "fails until it is restarted with GEMINI_API_KEY (or OPENAI_API_KEY) in its environment")
        return
    found = [name for name in ("GOOGLE_API_KEY", "GEMINI_API_KEY", "OPENAI_API_KEY") if os.environ.get(name)]
    if found:
        report.line("ok", "LLM key", f"{', '.join(found)} set in this environment, which a kernel "
                    "`agentos up` starts from here inherits")
    else:
        report.line("warn", "LLM key", "none set in this environment, so a kernel `agentos up` starts from here "
                    "has none: export GEMINI_API_KEY first to use THINK")


def _llm_endpoint(report: Report, hello: dict[str, Any] | None) -> None:
    """The running kernel's check of its model endpoint; with no kernel, a check of the endpoint
    this shell's environment configures (``AGENTOS_LLM_CONFIG``, ``AGENTOS_*_BASE_URL``, keys)."""
    from ...llm.config import LLMConfig, environment_section
    from ...llm.probe import EndpointStatus, probe_config

    if hello is not None:
        raw = hello.get("capabilities", {}).get("llm", {}).get("endpoint")
        if raw is None:
            return  # a kernel from before the check
        status = EndpointStatus.from_dict(raw)
        source = "" if status.checked_at is None else (
            f" (checked by the kernel at "
            f"{datetime.datetime.fromtimestamp(status.checked_at):%H:%M:%S})")
    else:
        try:
            config = LLMConfig.from_section(environment_section(os.environ), os.environ)
        except ValueError as exc:
            report.line("FAIL", "LLM endpoint", f"this environment's llm configuration: {exc}")
            return
        status = asyncio.run(probe_config(config))
        source = " (checked from here, as this environment configures it)"
    level = {"ok": "ok", "unreachable": "FAIL", "key_refused": "FAIL", "error": "warn"}
    report.line(level.get(status.state, "info"), "LLM endpoint", status.summary() + source)
