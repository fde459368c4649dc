"""Turn a validated ``SandboxSpec`` into a ``Plan``: every decision made before any fork.

The plan is plain data (it crosses to the zygote by pickle): which namespaces,
which mounts in which order, which Landlock paths, the seccomp program, how to
arrange descriptors, what to run. Whatever the host cannot do is decided here:
refused with ``SandboxError`` unless the spec allows degrading, in which case the
reason goes into the isolation report. The child then only executes the plan.
"""
from __future__ import annotations

import dataclasses
import errno
import os
from dataclasses import dataclass, field
from typing import Any

from agentos.sandbox import seccomp, userns
from agentos.sandbox.mounts import plan_mounts, view_program
from agentos.sandbox.namespaces import NAMESPACES, clone_flags
from agentos.sandbox.probe import HostSupport
from agentos.sandbox.spec import WORKSPACE_PATH, SandboxError, SandboxSpec

__all__ = ["Plan", "entry_plan", "make_plan"]

_SANDBOX_NAMESPACES = ("pid", "mount", "uts", "ipc", "net", "cgroup")
#: Hostname of an agent whose spec names none (never the host's own name).
_DEFAULT_HOSTNAME = "agent"
#: What to do when a kernel that is not root finds no user namespace to isolate its agents in.
_NO_USERNS_ADVICE = (
    "; a kernel that is not root isolates agents in a user namespace: allow unprivileged user "
    "namespaces (sysctl user.max_user_namespaces > 0, kernel.unprivileged_userns_clone=1 where it "
    "exists, kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile for the kernel "
    "on Ubuntu >= 23.10; `agentos doctor` shows which), or run the kernel as root. With "
    "allow_degraded the agent runs without any namespace, with only no_new_privs, Landlock and "
    "seccomp around it: it sees the host's files, processes and network")


@dataclass
class Plan:
    """Everything the child does, in data. Built by ``make_plan``."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    python_script: str | None = None
    #: Target fd numbers, in the order the descriptors are handed over (0, 1, 2, then pass_fds).
    fd_targets: list[int] = field(default_factory=list)
    clone_flags: int = 0
    #: (uid, gid) outside, mapped to themselves inside a new user namespace.
    user_map: tuple[int, int] | None = None
    #: (uid, gid) to become once the sandbox is built (a root launcher's agents); None: stay.
    run_as: tuple[int, int] | None = None
    #: The file-system view as a program for ``linux.run_view`` (empty: no mount namespace).
    view: bytes = b""
    #: Owners (uid, gid) of the view's idmapped binds, shown to the agent as ``run_as``.
    idmaps: tuple[tuple[int, int], ...] = ()
    hostname: str | None = None
    loopback: bool = False
    cgroup_namespace: bool = False
    sandboxed: bool = False
    #: Landlock ABI to restrict with (0: no Landlock) and its writable dirs.
    landlock_abi: int = 0
    writable: list[str] = field(default_factory=list)
    seccomp_program: bytes | None = None
    #: Empty the bounding set too (needs CAP_SETPCAP: root, or inside a user namespace).
    drop_bounding: bool = True
    #: Namespaces (CLONE_NEW* flags) of a running agent to join, through its pidfd handed
    #: over after the descriptors, instead of making new ones (a process exec'd into it).
    join: int = 0
    #: stdin is a terminal: make it the controlling terminal of the new session.
    terminal: bool = False
    #: Stay as the command's child subreaper (``sandbox/subreaper.py``, EXEC): a control
    #: socket follows the three descriptors.
    subreaper: bool = False
    #: The template whose zygote forked the agent: a Python script exec'd into it warm
    #: (``Launcher.enter``'s ``python_script``) is forked by that zygote too, its modules imported.
    template: str | None = None


def make_plan(spec: SandboxSpec, support: HostSupport, new_root: str = "",
              base: str | None = None) -> tuple[Plan, dict[str, Any]]:
    """Validate ``spec`` against this host; the plan and its isolation report.

    ``new_root`` is the empty directory a mount namespace builds its root on; ``base`` a
    template's read-only root, shown under the view (``mounts.plan_mounts``).
    """
    spec.validate()
    cwd = spec.cwd or spec.workdir or "/"
    plan = Plan(argv=list(spec.argv), env=dict(spec.env), cwd=cwd, python_script=spec.python_script,
                fd_targets=[0, 1, 2, *spec.pass_fds.values()], sandboxed=spec.sandboxed)
    report: dict[str, Any] = {"sandboxed": spec.sandboxed, "namespaces": [], "rootless": False,
                              "network": "host", "seccomp": False, "landlock_abi": 0,
                              "no_new_privs": False, "capabilities": "inherited", "degraded": [],
                              "uid": os.geteuid(), "masked": []}
    if not spec.sandboxed:
        return plan, report
    degraded: list[str] = report["degraded"]

    def unavailable(feature: str, why: str, advice: str = "") -> bool:
        """Refuse, or (allow_degraded) record why ``feature`` is left out; True if left out."""
        if not spec.allow_degraded:
            raise SandboxError("plan", errno.ENOTSUP, f"{feature} is not available here: {why}"
                               f"{advice} (or set allow_degraded to run without it)")
        degraded.append(f"{feature}: {why}")
        return True

    use_user = userns.wants_user_namespace(spec.user_namespace)
    wanted = [n for n in _SANDBOX_NAMESPACES if n != "net" or not spec.network]
    if use_user:
        wanted.insert(0, "user")
        if not support.namespaces.get("user"):
            unavailable("user namespace", support.notes.get("user", "refused"), _NO_USERNS_ADVICE)
            # Without a user namespace an unprivileged process can create no other one.
            degraded += [f"{n} namespace: needs a user namespace" for n in wanted[1:]]
            wanted = []
    names = [n for n in wanted
             if support.namespaces.get(n) or not unavailable(f"{n} namespace", support.notes.get(n, "refused"))]
    if "mount" in names and not support.mount_setattr:
        unavailable("mount namespace", "mount_setattr(2) is missing (Linux >= 5.12 needed)")
        names.remove("mount")
    if spec.workspace is not None and "mount" not in names:
        unavailable("workspace", "it is bound into the agent's own mount namespace, which it has not")
    if spec.volumes and "mount" not in names:
        unavailable("volumes", "they are bound into the agent's own mount namespace, which it has not")
    if base is not None and "mount" not in names:
        unavailable("template root", "it is shown in the agent's own mount namespace, which it has not")
    plan.clone_flags = clone_flags(names)
    report["namespaces"] = names
    if "user" in names:
        plan.user_map = (os.geteuid(), os.getegid())
        report["rootless"] = os.geteuid() != 0
    elif os.geteuid() == 0:
        # Root's uid would own root's files: the agent becomes an unprivileged user instead.
        plan.run_as = (spec.agent_uid, spec.agent_uid)
        report["uid"] = spec.agent_uid
    else:
        # No user namespace and no privilege: no capability to drop but the bounding set's,
        # which no_new_privs already keeps exec from ever using.
        plan.drop_bounding = False
    if "mount" in names:
        readonly = list(spec.readonly_paths)
        if spec.python_script:
            # Like ``python script.py``: the modules next to the script are importable.
            readonly.append(os.path.dirname(os.path.abspath(spec.python_script)))
        if not os.path.isdir(new_root):
            raise SandboxError("plan", errno.ENOENT, f"no directory to build the new root on: {new_root!r}")
        view = plan_mounts(system_paths=spec.system_paths, readonly_paths=readonly,
                           writable_paths=spec.writable_paths, workdir=spec.workdir, tmp_size=spec.tmp_size,
                           masked_paths=spec.masked_paths, agent_ids=plan.run_as, workspace=spec.workspace,
                           volumes=spec.volumes, base=base)
        plan.view = view_program(view.ops, new_root)
        plan.idmaps = view.idmaps
        report["masked"] = list(view.masked)
        at_workspace = spec.workspace is not None or any(v.dest == WORKSPACE_PATH for v in spec.volumes)
        if at_workspace and spec.cwd is None:
            plan.cwd = WORKSPACE_PATH
    if "uts" in names:
        plan.hostname = spec.hostname or _DEFAULT_HOSTNAME
    plan.loopback = "net" in names
    report["network"] = "loopback" if "net" in names else "host"
    plan.cgroup_namespace = "cgroup" in names
    report["no_new_privs"] = True
    report["capabilities"] = "none" if plan.drop_bounding else "none held (bounding set kept)"
    if spec.landlock and (support.landlock_abi or not unavailable("landlock", support.notes.get("landlock", ""))):
        plan.landlock_abi = support.landlock_abi
        plan.writable = _writable(spec, with_mount_ns="mount" in names)
        report["landlock_abi"] = support.landlock_abi
    if spec.seccomp and (support.seccomp or not unavailable("seccomp", support.notes.get("seccomp", ""))):
        plan.seccomp_program = seccomp.default_filter()
        report["seccomp"] = True
    return plan, report


def entry_plan(plan: Plan) -> Plan:
    """The plan of a process started later inside the agent of ``plan`` (EXEC).

    It is confined exactly as the agent is (uid, capabilities, no_new_privs, Landlock with
    the same writable paths, seccomp) and holds nothing more: the agent's namespaces are
    joined instead of made, its view is used as it is instead of built, its environment is
    the starting point. It keeps the agent's environment, so it stays with the kernel:
    like every plan, it crosses to the zygote without it.
    """
    joined = plan.clone_flags | (NAMESPACES["cgroup"] if plan.cgroup_namespace else 0)
    return dataclasses.replace(plan, argv=[], python_script=None, fd_targets=[0, 1, 2], clone_flags=0,
                               user_map=None, view=b"", idmaps=(), hostname=None, loopback=False,
                               cgroup_namespace=False, join=joined)


def _writable(spec: SandboxSpec, *, with_mount_ns: bool) -> list[str]:
    paths = list(spec.writable_paths)
    if spec.workdir:
        paths.append(spec.workdir)
    if with_mount_ns:
        # The private /tmp, /dev/shm and the workspace exist only in the agent's own view.
        paths += ["/tmp", "/dev/shm"]
        if spec.workspace is not None:
            paths.append(WORKSPACE_PATH)
        paths += [v.dest for v in spec.volumes if not v.read_only]
    return paths

