"""What a caller asks for (``SandboxSpec``), what it gets back (``Launched``), and how it fails.

Validation happens here, before anything touches the kernel: a spec that cannot be
honoured is refused with ``SandboxError("spec", EINVAL, ...)`` naming the field.
"""
from __future__ import annotations

import errno as errno_
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentos.errors import AgentOSError
from agentos.protocol.requests import MAX_UID
from agentos.sandbox._linux import linux

if TYPE_CHECKING:
    from agentos.sandbox.initd import InitChannel

__all__ = ["DEFAULT_AGENT_UID", "WORKSPACE_PATH", "Launched", "SandboxError", "SandboxSpec", "VolumeBind",
           "symlink_refused"]

#: Longest hostname the UTS namespace accepts (HOST_NAME_MAX).
_HOSTNAME_MAX = 64
#: Descriptors cross to the zygote in one message (SCM_MAX_FD is 253, with 4 of ours
#: and the idmappings of the binds).
_MAX_PASS_FDS = 200
#: The uid and gid agents of a root launcher run as unless told otherwise: owned by no
#: account, no file and no other service (nobody, 65534, is shared with NFS and daemons).
DEFAULT_AGENT_UID = 65533
#: Where an agent's workspace appears in its view.
WORKSPACE_PATH = "/workspace"


class SandboxError(AgentOSError):
    """A sandbox could not be set up; ``step`` says where, ``errno`` why.

    Raised by ``launch`` for every failure before the agent runs, so a bad spec or
    a kernel that refuses a step is an error for the caller, never a dead agent.
    """

    def __init__(self, step: str, errno: int, message: str) -> None:
        super().__init__(f"{step}: {message}" + (f" [{errno_.errorcode.get(errno, errno)}]" if errno else ""))
        self.step = step
        self.errno = errno
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (SandboxError, (self.step, self.errno, self.message))


@dataclass(frozen=True)
class VolumeBind:
    """A directory of the caller's own (a mounted volume's, inside its masked state dir) bound at
    ``dest`` in the view: like the workspace, exempt from the masks, named by nothing an agent sends."""

    source: str
    dest: str
    read_only: bool = False


@dataclass
class SandboxSpec:
    """One agent process to start, and the isolation to put around it.

    ``argv`` is the program and its arguments (``argv[0]`` is looked up in
    ``env["PATH"]``). With ``python_script`` set, the agent is instead forked from
    the pre-warmed zygote and runs that script with ``sys.argv = [python_script,
    *argv[1:]]``; the script's directory is visible read-only, as ``sys.path[0]``.
    Paths are real host paths (resolve symlinks first); binds appear at the same path
    inside. No symlink in them is ever followed: a path that has one when the agent's
    view is built (or its script is read) fails the launch, so a path checked as real
    cannot be swapped for a symlink to somewhere else before it is bound.
    """

    argv: list[str]
    python_script: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    #: Working directory inside the sandbox; defaults to the workspace, else ``workdir``, else ``/``.
    cwd: str | None = None
    hostname: str | None = None
    #: Descriptors the caller opened (log files); None means /dev/null.
    stdin_fd: int | None = None
    stdout_fd: int | None = None
    stderr_fd: int | None = None
    #: caller fd -> fd number in the child (>= 3), e.g. the agent's kernel socket.
    pass_fds: dict[int, int] = field(default_factory=dict)
    #: False: a plain child in its own session with pdeathsig, nothing else.
    sandboxed: bool = True
    #: False: a new network namespace with only loopback up; True: the host's network.
    network: bool = False
    #: None: a user namespace only when not root (rootless); True/False to force.
    user_namespace: bool | None = None
    #: Per-agent writable directory, bind-mounted at the same path; the default cwd.
    workdir: str | None = None
    #: The agent's workspace, writable at ``WORKSPACE_PATH`` (the default cwd before ``workdir``):
    #: a host directory to bind there, or a size in bytes for a private tmpfs. The directory is
    #: the caller's own (the kernel's mounted disk image, inside its masked state dir), so the
    #: masks do not apply to it; nothing of an agent's request may name it.
    workspace: str | int | None = None
    #: Named volumes: host directories bound at paths of the view (the default cwd is a volume
    #: at ``WORKSPACE_PATH``, when there is no ``workspace``).
    volumes: list[VolumeBind] = field(default_factory=list)
    writable_paths: list[str] = field(default_factory=list)
    readonly_paths: list[str] = field(default_factory=list)
    #: Read-only host view; None means the system dirs plus this Python installation.
    system_paths: list[str] | None = None
    #: Size limit of the private /tmp in bytes (None: the tmpfs default, half of RAM).
    tmp_size: int | None = None
    #: Host paths hidden in the view, whatever binds show them (a bind at or inside one is refused).
    masked_paths: list[str] = field(default_factory=list)
    #: The host uid (and gid) a root launcher's agents run as; never 0. A launcher that is not
    #: root runs its agents as its own uid, whatever this says.
    agent_uid: int = DEFAULT_AGENT_UID
    seccomp: bool = True
    landlock: bool = True
    #: Run with whatever isolation this host supports instead of refusing.
    allow_degraded: bool = False
    #: Called in the parent with the child's pid once it exists, before the agent runs.
    before_exec: Callable[[int], None] | None = None

    def validate(self) -> None:
        """Raise ``SandboxError("spec", EINVAL, ...)`` naming the first bad field."""
        if not isinstance(self.argv, list) or not self.argv or not all(isinstance(a, str) for a in self.argv):
            _bad("argv must be a non-empty list of strings")
        if any("\0" in a for a in self.argv):
            _bad("argv contains a NUL byte")
        if self.python_script is not None:
            _file(self.python_script, "python_script")
        for key, value in self.env.items():
            if not isinstance(key, str) or not isinstance(value, str):
                _bad("env keys and values must be strings")
            if not key or "=" in key or "\0" in key or "\0" in value:
                _bad(f"env key {key!r} is not a valid variable name")
        if self.hostname is not None:
            if not self.hostname or len(self.hostname.encode()) > _HOSTNAME_MAX or "\0" in self.hostname:
                _bad(f"hostname must be 1..{_HOSTNAME_MAX} bytes")
            if not self.sandboxed:
                _bad("hostname needs sandboxed=True (its own UTS namespace)")
        for name in ("stdin_fd", "stdout_fd", "stderr_fd"):
            fd = getattr(self, name)
            if fd is not None:
                _open_fd(fd, name)
        if len(self.pass_fds) > _MAX_PASS_FDS:
            _bad(f"pass_fds: at most {_MAX_PASS_FDS} descriptors")
        targets = set()
        for source, target in self.pass_fds.items():
            _open_fd(source, "pass_fds")
            if not isinstance(target, int) or target < 3 or target > 1023:
                _bad(f"pass_fds target {target!r} must be an int in 3..1023")
            if target in targets:
                _bad(f"pass_fds maps two descriptors to {target}")
            targets.add(target)
        if self.workdir is not None:
            _dir(self.workdir, "workdir")
        if isinstance(self.workspace, str):
            _dir(self.workspace, "workspace")
        elif self.workspace is not None and (isinstance(self.workspace, bool) or not isinstance(self.workspace, int)
                                             or self.workspace <= 0):
            _bad("workspace must be a directory or a positive number of bytes")
        if self.workspace is not None and not self.sandboxed:
            _bad("workspace needs sandboxed=True (it is bound into the agent's own view)")
        self._check_volumes()
        for path in self.writable_paths:
            _exists(path, "writable_paths")
        for path in self.readonly_paths:
            _exists(path, "readonly_paths")
        for path in self.system_paths or ():
            _absolute(path, "system_paths")
        if self.cwd is not None:
            _absolute(self.cwd, "cwd")
        if self.tmp_size is not None and (not isinstance(self.tmp_size, int) or self.tmp_size <= 0):
            _bad("tmp_size must be a positive number of bytes")
        if isinstance(self.agent_uid, bool) or not isinstance(self.agent_uid, int) \
                or not 0 < self.agent_uid <= MAX_UID:
            _bad(f"agent_uid must be a uid in 1..{MAX_UID} (agents never run as root)")
        if self.sandboxed:
            self._check_masks()
        if self.before_exec is not None and not callable(self.before_exec):
            _bad("before_exec must be callable")


    def _check_volumes(self) -> None:
        if self.volumes and not self.sandboxed:
            _bad("volumes need sandboxed=True (they are bound into the agent's own view)")
        dests: list[str] = [WORKSPACE_PATH] if self.workspace is not None else []
        for volume in self.volumes:
            _dir(volume.source, "volumes")
            _absolute(volume.dest, "volumes")
            if os.path.normpath(volume.dest) != volume.dest or volume.dest == "/":
                _bad(f"volumes: {volume.dest!r} is not a normalized path below /")
            # Nested, the outer one would hold the inner one's mount point (made in its file system).
            clash = next((d for d in dests if d == volume.dest or d.startswith(volume.dest + "/")
                          or volume.dest.startswith(d + "/")), None)
            if clash is not None:
                _bad(f"volumes: {volume.dest} overlaps {clash}")
            dests.append(volume.dest)

    def _check_masks(self) -> None:
        """Refuse a bind that would show a masked path itself (a bind of a parent is masked)."""
        masks = []
        for path in self.masked_paths:
            _absolute(path, "masked_paths")
            masks.append(os.path.realpath(path))
        if not masks:
            return
        binds = [("readonly_paths", p) for p in self.readonly_paths]
        binds += [("writable_paths", p) for p in self.writable_paths]
        if self.workdir is not None:
            binds.append(("workdir", self.workdir))
        if self.python_script is not None:
            binds.append(("python_script", os.path.dirname(os.path.abspath(self.python_script))))
        for name, path in binds:
            # What it leads to now, and what is bound (the path itself, which must then have no symlink).
            for real in (os.path.realpath(path), os.path.normpath(path)):
                for mask in masks:
                    if real == mask or real.startswith(mask.rstrip("/") + "/"):
                        raise SandboxError("spec", errno_.EPERM, f"{name}: {path} is inside the masked path "
                                           f"{mask}, which no agent may see")


@dataclass
class Launched:
    """A started agent: its host pid, a pidfd the caller owns, and the isolation applied.

    The caller is the agent's parent: it reaps it (``poll``/``wait`` here, or
    ``os.waitid(os.P_PIDFD, pidfd, ...)``) and closes ``pidfd``.
    ``isolation`` reports each namespace, seccomp, Landlock ABI, rootless and the
    reasons for anything degraded.
    """

    pid: int
    pidfd: int
    isolation: dict[str, Any]
    returncode: int | None = None
    #: What a process exec'd into this agent starts from (``Launcher.enter``): a ``Plan``.
    entry: Any = None
    #: The kernel's end of its init's control socket when the agent is a sandbox served by
    #: agentos-init; None otherwise.
    init: InitChannel | None = None
    #: Its setup's steps as its child timed them, each ``(name, time.monotonic_ns() at its end)``
    #: in order, the last ``exec`` (None: the child reported none).
    steps: list[tuple[str, int]] | None = None

    def poll(self) -> int | None:
        """Reap the agent if it has exited; its return code (negative: killed by signal)."""
        if self.returncode is None:
            self._reap(os.WNOHANG)
        return self.returncode

    def wait(self) -> int:
        """Block until the agent exits; its return code."""
        if self.returncode is None:
            self._reap(0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Signal the agent through its pidfd (never a recycled pid)."""
        if self.returncode is None:
            linux.pidfd_send_signal(self.pidfd, sig)

    def close(self) -> None:
        """Close the pidfd (after the agent was reaped, or to stop tracking it)."""
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1

    def _reap(self, options: int) -> None:
        result = os.waitid(os.P_PIDFD, self.pidfd, os.WEXITED | options)
        if result is not None:
            self.returncode = returncode(result)


@dataclass(frozen=True)
class Ending:
    """How a reaped child ended: its exit code, or the signal that killed it."""

    exit_code: int | None = None
    signal: int | None = None
    #: Someone else reaped it first, so how it ended is unknown.
    lost: bool = False


def reap(pidfd: int) -> Ending | None:
    """Reap the child behind ``pidfd`` if it has ended; None while it runs."""
    return reap_by(os.P_PIDFD, pidfd)


def reap_by(idtype: int, ident: int, options: int = 0) -> Ending | None:
    """Reap the child ``waitid(idtype, ident)`` names if it has ended (extra ``options``, such
    as __WALL); None while it runs."""
    try:
        result = os.waitid(idtype, ident, os.WEXITED | os.WNOHANG | options)
    except ChildProcessError:
        return Ending(lost=True)
    if result is None:
        return None
    if result.si_code == os.CLD_EXITED:
        return Ending(exit_code=result.si_status)
    return Ending(signal=result.si_status)


def returncode(result: os.waitid_result) -> int:
    """subprocess-style return code of a waitid result: exit status, or -signal."""
    if result.si_code == os.CLD_EXITED:
        return result.si_status
    return -result.si_status


def symlink_refused(path: str) -> str:
    """Why a launch stops at a symlink in one of its paths (``path``)."""
    return (f"{path} has a symlink in it, and a sandbox follows none in its paths (they are real "
            "paths, so this one was changed after it was checked, or never resolved): refused rather "
            "than bind or read what the symlink leads to")


def _bad(message: str) -> None:
    raise SandboxError("spec", errno_.EINVAL, message)


def _absolute(path: object, name: str) -> None:
    if not isinstance(path, str) or not os.path.isabs(path) or "\0" in path:
        _bad(f"{name}: {path!r} is not an absolute path")


def _exists(path: str, name: str) -> os.stat_result:
    _absolute(path, name)
    try:
        return os.stat(path)
    except OSError as exc:
        raise SandboxError("spec", exc.errno or errno_.EINVAL, f"{name}: {path}: {exc.strerror}") from None


def _dir(path: str, name: str) -> None:
    if not stat.S_ISDIR(_exists(path, name).st_mode):
        _bad(f"{name}: {path} is not a directory")


def _file(path: str, name: str) -> None:
    if not stat.S_ISREG(_exists(path, name).st_mode):
        _bad(f"{name}: {path} is not a regular file")


def _open_fd(fd: object, name: str) -> None:
    if not isinstance(fd, int) or isinstance(fd, bool) or fd < 0:
        raise SandboxError("spec", errno_.EINVAL, f"{name}: {fd!r} is not a file descriptor")
    try:
        os.fstat(fd)
    except OSError as exc:
        raise SandboxError("spec", exc.errno or errno_.EBADF, f"{name}: descriptor {fd} is not open") from None
