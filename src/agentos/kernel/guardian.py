"""The kernel's guardian: nothing the kernel started outlives it, however it ends.

``agentos kernel`` forks: the child runs the kernel, and the parent execs this file as a
small interpreter of its own (imports: ``os``, ``signal``, ``sys``, ``time``) that
waits for the kernel to exit. The guardian is a child subreaper
(``PR_SET_CHILD_SUBREAPER``), an ancestor of every process the kernel starts: what an
agent leaves behind (a ``setsid``, double-forked daemon) is reparented to it, never to
pid 1, and it reaps them as they end. When the kernel exits, for whatever reason
(``kill -9``, a crash, the OOM killer, or a clean stop), the guardian

1. SIGKILLs every process that is its child now (agents, their daemons, the zygote),
2. kills and removes the cgroups of that kernel's instance (``agentos/<pid>-<start>``;
   ``cgroups.clean_dead_kernels``, the same code a starting kernel runs for dead ones),
3. SIGKILLs and reaps its children again until it has none (each death hands it the
   dead process's own children), and
4. exits with the kernel's status, ``128 + signal`` for a kernel killed by a signal.

The cgroups catch what left the process tree (nothing can leave a subreaper's subtree
by forking; only another service manager, asked over IPC, starts processes elsewhere);
the walk catches everything where there are no cgroups (an unprivileged user).

SIGTERM, SIGINT and SIGHUP sent to the guardian are passed on to the kernel, which
stops gracefully. The kernel's parent-death signal is SIGTERM: ``kill -9`` of the
guardian stops the kernel gracefully too (its agents and their cgroups go with it).
"""
from __future__ import annotations

import os
import signal
import sys
import time

#: Asked of the guardian, meant for the kernel: each stops it gracefully.
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
#: How long the guardian keeps killing what the kernel left before it gives up on the rest
#: (a process in uninterruptible sleep, or a setuid one an unprivileged guardian may not kill).
REAP_TIMEOUT = 10.0


def guard_this_kernel(log_json: bool = False) -> None:
    """Fork. Returns in the child, which goes on to run the kernel; the parent becomes the
    guardian and never returns (it exits with the kernel's status)."""
    # Imported here: the guardian's own process is replaced by a small one before it waits.
    from ..cgroups import instance_name
    from ..sandbox._linux import linux

    # Before the fork: no process of the kernel's can be orphaned before its guardian adopts it.
    linux.set_child_subreaper(True)
    # Held back until the guardian can pass them on; the kernel takes them as it always did.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    sys.stdout.flush()
    sys.stderr.flush()
    guardian = os.getpid()
    kernel = os.fork()
    if kernel == 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        linux.set_pdeathsig(signal.SIGTERM)
        if os.getppid() != guardian:
            os._exit(128 + signal.SIGTERM)  # the guardian died before the line above took effect
        return
    argv = [str(kernel), instance_name(kernel), *(["--log-json"] if log_json else [])]
    try:
        # A fresh, small interpreter: the command line's imports would cost the guardian
        # their pages for as long as the kernel runs (measured in docs/architecture.md).
        os.execv(sys.executable, [sys.executable, "-P", os.path.abspath(__file__), *argv])
    except OSError as exc:
        _say(log_json, "warning", f"cannot exec a small guardian ({exc}); guarding from this process")
    os._exit(main(argv))


def main(argv: list[str]) -> int:
    """``<kernel pid> <instance> [--log-json]``: guard the kernel, a child of this process."""
    kernel, instance, log_json = int(argv[0]), argv[1], "--log-json" in argv[2:]
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # an inherited SIG_IGN would reap behind our back
    # A pidfd, not the pid: a signal that arrives after the kernel is reaped must not reach
    # a process that took its number.
    pidfd = os.pidfd_open(kernel)

    def forward(signum: int, _frame: object) -> None:
        try:
            signal.pidfd_send_signal(pidfd, signum)
        except ProcessLookupError:
            pass

    for sig in FORWARDED:
        # One ignored by whoever started us (nohup) stays ignored: the kernel inherited that too.
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    while True:
        # Each ended orphan is reaped here; signals run forward() and the wait resumes (PEP 475).
        pid, status = os.waitpid(-1, 0)
        if pid == kernel:
            break
    for sig in FORWARDED:
        signal.signal(sig, signal.SIG_IGN)  # the clean-up below is what a stop would ask for
    os.close(pidfd)
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        _say(log_json, "warning", f"the kernel (pid {kernel}) was killed by {signal.Signals(-code).name}; "
                                  "killing what it left")
        code = 128 - code
    killed = _kill_children()
    cgroups = _clean_cgroups(instance, log_json)
    killed += _kill_children(until_none=True, log_json=log_json)
    if killed or cgroups:
        _say(log_json, "info", f"killed {killed} process(es) and removed {cgroups} cgroup(s) the kernel "
                               f"(pid {kernel}) left")
    return code


def _kill_children(until_none: bool = False, log_json: bool = False) -> int:
    """SIGKILL every child (reaping the dead); with ``until_none``, again as long as children
    remain, within ``REAP_TIMEOUT``. Returns how many processes were signalled."""
    killed = 0
    deadline = time.monotonic() + REAP_TIMEOUT
    delay = 0.001
    while True:
        refused = []
        for pid in _children():
            try:
                os.kill(pid, signal.SIGKILL)  # our unreaped child: its pid cannot be reused yet
                killed += 1
            except ProcessLookupError:
                pass
            except PermissionError:
                refused.append(pid)
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return killed  # no child left, dead or alive
        if not until_none:
            return killed
        if time.monotonic() > deadline:
            _say(log_json, "error", f"processes the kernel left survive SIGKILL: {_children()}"
                                    + (f" (not ours to kill: {refused})" if refused else ""))
            return killed
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _children() -> list[int]:
    """Live children of this process, from /proc (zombies only wait to be reaped)."""
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        # After the command name's ")": state, then parent pid.
        state, ppid = stat[stat.rindex(b")") + 2:].split()[:2]
        if int(ppid) == me and state != b"Z":
            found.append(int(name))
    return found


def _clean_cgroups(instance: str, log_json: bool) -> int:
    """Kill and remove the cgroups of the kernel's instance; how many agent cgroups went."""
    try:
        from agentos.cgroups import clean_dead_kernels

        cleanup = clean_dead_kernels(instance=instance)
    except Exception as exc:  # the walk still runs: the guardian must outlast any failure here
        _say(log_json, "error", f"cannot clean the cgroups of kernel instance {instance}: "
                                f"{type(exc).__name__}: {exc}")
        return 0
    for failure in cleanup.failed:
        _say(log_json, "warning", f"cgroup of the kernel's agent not removed: {failure}")
    return len(cleanup.removed)


def _say(log_json: bool, level: str, message: str) -> None:
    """One line on stderr, shaped as the kernel's own log lines (agentos.cli.commands.kernel)."""
    now = time.time()
    if log_json:
        import json

        line = json.dumps({"ts": round(now, 6), "level": level, "logger": "agentos.guardian", "msg": message})
    else:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        line = f"{stamp}.{int(now % 1 * 1000):03d}Z {level.upper():<5} agentos.guardian: {message}"
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        pass  # nowhere to say it: the guarantee does not depend on being heard


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
