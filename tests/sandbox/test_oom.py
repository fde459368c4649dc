"""An OOM kill inside a sandbox is reported as one: an exec'd command that outgrows the
sandbox's memory limit ends ``oom_killed`` (a kill -9 of another hand does not), and a
``run_code`` cell's interpreter taken by the OOM killer says so in its ``InterpreterDied``."""
from __future__ import annotations

from agentos.testing.kernel import KernelProcess

#: Far past the limit in one allocation, every page written (bytearray zero-fills it).
HOG = "bytearray(512 << 20)"
LIMITS = {"memory": "64Mi", "pids": 32}


def test_an_exec_killed_at_the_memory_limit_is_oom_killed(kernel: KernelProcess) -> None:
    client = kernel.client(timeout=120)
    python = client.hello()["capabilities"]["processes"]["python"]
    with client.sandbox(limits=LIMITS) as sb:
        hog = sb.exec([python, "-c", HOG], timeout=120)
        assert (hog.signal, hog.oom_killed, hog.timed_out) == (9, True, False), hog
        assert hog.info["oom_killed"] is True
        killed = sb.exec(["/bin/sh", "-c", "kill -9 $$"], timeout=120)  # a SIGKILL, no OOM
        assert (killed.signal, killed.oom_killed) == (9, False), killed
        fine = sb.exec(["/bin/sh", "-c", "exit 3"], timeout=120)
        assert (fine.exit_code, fine.signal, fine.oom_killed) == (3, None, False), fine


def test_a_cell_killed_at_the_memory_limit_says_the_oom_killer_took_it(kernel: KernelProcess) -> None:
    client = kernel.client(timeout=120)
    with client.sandbox(limits=LIMITS) as sb:
        assert sb.run_code("kept = 41", timeout=120).error is None
        hog = sb.run_code(HOG, timeout=120)
        assert not hog.timed_out and hog.error is not None and hog.error.name == "InterpreterDied"
        assert "OOM killer" in hog.error.value, hog.error
        after = sb.run_code("'kept' in globals()", timeout=120)
        assert after.state_lost and after.text == "False"
