"""``run_code``'s interpreter under attack from its own cells, both kernel modes (root and
unprivileged). It is not a new program: the zygote that forked the sandbox forks it, so a cell
starts with the zygote's whole memory, its Python state (``sys.modules``) included. Attacks: read
another agent's script out of that memory, find a descriptor of the zygote's or the kernel's, and
(a cell, or a command agentos-init started) signal the subreaper that holds the exec's control
socket and ends its tree."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import HostileKernel

#: The shape of the constant the other agent's script holds (split: this file never matches it).
_SHAPE = "AOS" + "SCRIPT-"
#: Run as a cell: every match of the shape in this process's writable memory, and the scripts the
#: zygote module, already imported, says it has compiled.
_SCAN = r"""
import re, sys
shape = re.compile(SHAPE.encode() + rb"[0-9a-f]{32}")
found = set()
with open("/proc/self/maps") as f:
    maps = f.read().splitlines()
with open("/proc/self/mem", "rb", buffering=0) as mem:
    for line in maps:
        span, perms = line.split()[:2]
        if not perms.startswith("rw"):
            continue
        start, end = (int(x, 16) for x in span.split("-"))
        try:
            mem.seek(start)
            data = mem.read(end - start)
        except OSError:
            continue
        found.update(m.decode() for m in shape.findall(data))
zygote = sys.modules.get("agentos.sandbox.zygote")
(sorted(found), zygote is not None, sorted(getattr(zygote, "_scripts", ())))
"""


@pytest.fixture(scope="module")
def private_scripts() -> Iterator[Path]:
    """A directory for scripts of other agents, readable by either kernel, in no sandbox's view."""
    directory = Path(tempfile.mkdtemp(prefix="agentos-sec-private-"))
    try:
        directory.chmod(0o755)
        yield directory
    finally:
        shutil.rmtree(directory)


def test_another_agents_script_is_not_in_a_cells_memory(hostile: HostileKernel, private_scripts: Path) -> None:
    secret = _SHAPE + os.urandom(16).hex()
    script = private_scripts / f"holder-{hostile.mode}.py"
    script.write_text(f"HELD = {secret!r}\nprint('held')\n")
    script.chmod(0o644)
    holder = hostile.admin.spawn(f"holder-{hostile.mode}", str(script))
    assert hostile.admin.wait(id=holder["id"], timeout=60)["status"] == "exited"
    with hostile.admin.sandbox() as sb:
        # The scan finds the shape where a cell put it, so its silence elsewhere means absence.
        kept = _SHAPE + os.urandom(16).hex()
        assert sb.run_code(f"SHAPE = {_SHAPE!r}\nkept = {kept!r}").error is None
        cell = sb.run_code(_SCAN)
        assert cell.error is None, cell.error
        found, warm, compiled = eval(cell.text or "")
    assert warm  # the zygote's way: its modules are the interpreter's
    assert kept in found
    assert secret not in found and str(script) not in compiled, (found, compiled)


def test_a_cell_holds_no_descriptor_of_the_zygote_or_the_kernel(hostile: HostileKernel) -> None:
    with hostile.admin.sandbox() as sb:
        cell = sb.run_code("import os, sys\n"
                           "fds = {}\n"
                           "for fd in os.listdir('/proc/self/fd'):\n"
                           "    try:\n"
                           "        fds[int(fd)] = os.readlink(f'/proc/self/fd/{fd}')\n"
                           "    except FileNotFoundError:\n"
                           "        pass  # the listing's own\n"
                           "('agentos.sandbox.zygote' in sys.modules, fds)")
        assert cell.error is None, cell.error
        warm, fds = eval(cell.text or "")
    assert warm
    # Its stdio, the interpreter's copies of 0 and 1 and its capture pipes: no socket (the zygote's
    # to the kernel, the subreaper's control socket, the launch's handshake), no file, nothing else.
    assert {target.split(":")[0] for target in fds.values()} == {"/dev/null", "pipe"}, sorted(fds.items())


#: Signal the parent (the exec's subreaper: sandbox/subreaper.py, or agentos-init's leader), which
#: holds the exec's control socket and ends the exec's tree with it: stopped and let go again, a
#: harmless probe of the SIGKILL that would orphan the caller, out of reach of the exec's timeout.
_SIGNAL_PARENT = r"""
import errno, os, signal
def verdict():
    try:
        os.kill(os.getppid(), signal.SIGSTOP)
        os.kill(os.getppid(), signal.SIGCONT)
        return "done"
    except OSError as e:
        return errno.errorcode[e.errno]
"""


def test_neither_a_cell_nor_a_command_can_signal_its_subreaper(hostile: HostileKernel) -> None:
    python = hostile.admin.hello()["capabilities"]["processes"]["python"]
    with hostile.admin.sandbox() as sb:
        cell = sb.run_code(_SIGNAL_PARENT + "verdict()")
        command = sb.exec([python, "-c", _SIGNAL_PARENT + "print(verdict())"])
        assert cell.error is None, cell.error
        assert (cell.text, command.stdout) == ("'EPERM'", b"EPERM\n"), command.stderr
        assert sb.run_code("1 + 1").text == "2"  # the interpreter's subreaper still serves it
