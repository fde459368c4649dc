"""The subreaper of one exec: what its command orphans is reaped, and nothing of it outlives it.

An exec'd process lives in its agent's pid namespace, whose pid 1 is the agent's own
program. What the command orphans (a double fork, a ``setsid`` daemon) would be handed to
that pid 1, and a pid 1 that never waits (``sleep``, a script) would keep each as a zombie,
counted in the agent's ``pids`` limit, until the agent ends. So the exec child, confined
already, starts the command as its own child (``posix_spawn``) and stays as its parent, a
child subreaper (``PR_SET_CHILD_SUBREAPER``) that adopts and reaps every orphan of the
command's tree. When the command ends, it kills what is left of that tree (setsid'd daemons too),
reaps it and exits with the command's status (a signal's death is re-raised), so the kernel
reaps one process and sees the command's ending.

It is the exec's process-group leader and ignores the signals sent to the group (the
command gets them); it speaks with the kernel over a ``SOCK_SEQPACKET`` control socket:

- to the kernel, once, before the launch is reported done: ``P<pid>``, the command's pid
  in the agent's view;
- from the kernel: ``S<signal>``, a signal for the command alone; ``K``, kill the whole tree
  and die of SIGKILL (a timeout, a client gone); end of file means the same.

It holds exactly what the command holds (it forks after the confinement), imports nothing
new and costs one process per running exec.
"""
from __future__ import annotations

import os
import select
import signal
from typing import NoReturn

__all__ = ["serve"]

#: Signals only the kernel's fault handling raises: never ignored, never sent to a group.
_FAULTS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGTRAP, signal.SIGSYS}
_UNCATCHABLE = {signal.SIGKILL, signal.SIGSTOP}


def serve(command: int, control: int, handshake: int) -> NoReturn:
    """Run as the subreaper of ``command`` (a child already exec'd) until it ends; never
    returns. Closing ``handshake``, the launch's socket, tells the kernel it runs, once the
    ``P`` message is sent."""
    for sig in signal.valid_signals():
        if sig not in _FAULTS | _UNCATCHABLE | {signal.SIGCHLD}:
            try:
                signal.signal(sig, signal.SIG_IGN)
            except (OSError, ValueError):
                pass  # a signal number the C library keeps for itself
    wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, _ignore)
    # The output pipes and the terminal are the command's: their end is its tree's end.
    for fd in (0, 1, 2):
        os.close(fd)
    try:
        os.write(control, b"P%d" % command)
    except OSError:
        pass  # the kernel gave up on this exec: end of file on the control socket follows
    os.close(handshake)  # end of file: the kernel's "started"
    poller = select.poll()
    poller.register(control, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    while (status := _reap(command)) is None:
        for fd, _ in poller.poll():
            if fd == wake_r:
                _drain(wake_r)
            elif not _obey(control, command):
                _end_tree()
                _die(signal.SIGKILL)
    _end_tree()
    if os.WIFSIGNALED(status):
        _die(os.WTERMSIG(status))
    os._exit(os.waitstatus_to_exitcode(status))


def _ignore(*_: object) -> None:
    """SIGCHLD's handler: its work is done on the loop (the wakeup fd makes ``poll`` return)."""


def _obey(control: int, command: int) -> bool:
    """Act on one message of the kernel's; False when the tree must end."""
    try:
        message = os.read(control, 64)
    except BlockingIOError:
        return True
    except OSError:
        return False
    if message.startswith(b"S") and message[1:].isdigit():
        try:
            os.kill(command, int(message[1:]))
        except (ProcessLookupError, OSError):
            pass  # ended meanwhile, or a number that is no signal: the kernel checked it
        return True
    return False


def _reap(command: int) -> int | None:
    """Reap every child that has ended; the command's wait status once it is among them."""
    found = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return found
        if pid == 0:
            return found
        if pid == command:
            found = status


def _children() -> list[int]:
    """This process's children (adopted orphans included), zombies too."""
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children") as f:
            return [int(pid) for pid in f.read().split()]
    except OSError:
        return []  # no /proc in the view: the kernel's SIGKILL to the group is all there is


def _end_tree() -> None:
    """SIGKILL every descendant and reap them all: each death hands us its children."""
    while children := _children():
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    _reap(-1)


def _die(sig: int) -> NoReturn:
    """End as the command ended: killed by ``sig`` (no core dump of this process)."""
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sig not in _UNCATCHABLE:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)  # a signal whose default is not to end a process: an exit says which


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass
