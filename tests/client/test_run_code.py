"""``Sandbox.run_code`` against a real kernel: one interpreter whose names outlive cells,
separate streams (subprocesses' too), results and rich outputs as MIME bundles, structured
errors, stdin, output caps, streaming, interrupt, timeouts and a dead or lying interpreter."""
from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from agentos import Client, InvalidArgument
from agentos.client._sync_api import Sandbox
from agentos.testing.kernel import KernelProcess

from .test_sandbox import eventually, interpreters


@pytest.fixture(scope="module")
def kernel_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelProcess]:
    k = KernelProcess(tmp_path_factory.mktemp("run_code") / "k").start()
    try:
        yield k
        assert eventually(lambda: interpreters(k) == []), "an interpreter was left"
    finally:
        k.stop_checked()


@pytest.fixture(scope="module")
def client(kernel_process: KernelProcess) -> Client:
    return kernel_process.client(timeout=60)


@pytest.fixture
def sb(client: Client) -> Iterator[Sandbox]:
    with client.sandbox(limits={"memory": "256Mi", "pids": 64}) as sandbox:
        yield sandbox


def cell(source: str) -> str:
    return textwrap.dedent(source).strip("\n")


def test_names_outlive_cells_and_the_last_expression_is_the_result(sb: Sandbox) -> None:
    first = sb.run_code("x = 1")
    assert (first.result, first.error, first.stdout, first.state_lost) == (None, None, "", False)
    second = sb.run_code("x + 1")
    assert second.text == "2" and second.result == {"text/plain": "2"}
    assert sb.run_code("_ * 10").text == "20"  # the last result, as in a notebook
    assert sb.run_code("def f(n):\n    return n * x\nf(5)").text == "5"
    assert sb.run_code("None").result is None and sb.run_code("'a' * 3").text == "'aaa'"
    assert second.cell < sb.run_code("1").cell


def test_stdout_and_stderr_are_separate_and_include_subprocesses(sb: Sandbox) -> None:
    run = sb.run_code(cell("""
        import os, subprocess, sys
        print("print")
        print("warn", file=sys.stderr)
        os.write(1, b"fd1\\n")
        subprocess.run(["sh", "-c", "echo child; echo child-err >&2"])
        os.system("echo system")
        print("end", end="")
    """))
    assert run.stdout == "print\nfd1\nchild\nsystem\nend"
    assert run.stderr == "warn\nchild-err\n" and run.error is None


def test_errors_are_structured_and_keep_the_state(sb: Sandbox) -> None:
    sb.run_code("kept = 'yes'")
    run = sb.run_code(cell("""
        def inner():
            raise ValueError("bad value")
        print("before")
        inner()
    """))
    assert run.stdout == "before\n" and run.error is not None
    assert (run.error.name, run.error.value) == ("ValueError", "bad value")
    assert run.error.traceback[0] == "Traceback (most recent call last):"
    assert run.error.traceback[-1] == "ValueError: bad value"
    assert not any("interpreter.py" in line for line in run.error.traceback)
    assert [(f["lineno"], f["name"], f["line"]) for f in run.error.frames] == [
        (4, "<module>", "inner()"), (2, "inner", 'raise ValueError("bad value")')]
    assert all(f["filename"] == f"<cell {run.cell}>" for f in run.error.frames)
    syntax = sb.run_code("1 +")
    assert syntax.error is not None and syntax.error.name == "SyntaxError" and syntax.error.frames == []
    exited = sb.run_code("import sys; sys.exit(4)")
    assert exited.error is not None and exited.error.name == "SystemExit"
    assert sb.run_code("kept").text == "'yes'"


RICH = cell("""
    class Rich:
        def _repr_png_(self):
            return b"\\x89PNG fake"
        def _repr_html_(self):
            return "<b>rich</b>"
        def _repr_json_(self):
            return {"a": [1, 2]}
        def _repr_svg_(self):
            raise RuntimeError("a failing repr is left out")
        def __repr__(self):
            return "Rich()"
""")


def test_rich_results_and_displays_are_mime_bundles(sb: Sandbox) -> None:
    sb.run_code(RICH)
    result = sb.run_code("Rich()").result
    assert result == {"image/png": b"\x89PNG fake", "text/html": "<b>rich</b>",
                      "application/json": {"a": [1, 2]}, "text/plain": "Rich()"}
    shown = sb.run_code("display(Rich(), 7)\nprint('after')")
    assert shown.displays == [result, {"text/plain": "7"}] and shown.stdout == "after\n"
    assert sb.run_code("Rich").result == {"text/plain": "<class '__main__.Rich'>"}


def test_open_matplotlib_figures_come_back_as_png(sb: Sandbox) -> None:
    # matplotlib is not installed here: a stand-in pyplot with its figure API.
    sb.run_code(cell("""
        import sys, types
        pyplot = types.ModuleType("matplotlib.pyplot")
        figures = {}
        class Figure:
            def __init__(self, n): self.n = n
            def savefig(self, out, format): out.write(b"\\x89PNG figure %d" % self.n)
            def __repr__(self): return f"<Figure {self.n}>"
        pyplot.get_fignums = lambda: sorted(figures)
        pyplot.figure = lambda n: figures.setdefault(n, Figure(n))
        pyplot.close = lambda which: figures.clear()
        sys.modules["matplotlib.pyplot"] = pyplot
    """))
    run = sb.run_code("pyplot.figure(1); pyplot.figure(2); None")
    assert run.displays == [{"image/png": b"\x89PNG figure 1", "text/plain": "<Figure 1>"},
                            {"image/png": b"\x89PNG figure 2", "text/plain": "<Figure 2>"}]
    assert sb.run_code("pyplot.get_fignums()").text == "[]"  # shown once, then closed


def test_stdin_reaches_the_cell_and_its_subprocesses(sb: Sandbox) -> None:
    assert sb.run_code("import sys; sys.stdin.read().upper()", stdin="abc").text == "'ABC'"
    piped = sb.run_code("import subprocess; subprocess.run(['wc', '-c'], capture_output=True).stdout",
                        stdin=b"\x00" * 100000)
    assert piped.text == "b'100000\\n'"
    assert sb.run_code("input()").error.name == "EOFError"  # type: ignore[union-attr]


def test_output_past_max_output_is_counted_not_kept(sb: Sandbox) -> None:
    run = sb.run_code("import sys\nfor _ in range(50): sys.stdout.write('x' * 100000)\n'done'",
                      max_output=1000)
    assert run.stdout == "x" * 1000 and run.dropped["stdout"] == 5000000 - 1000 and run.text == "'done'"
    assert sb.run_code("print('fresh budget')").stdout == "fresh budget\n"


def test_output_streams_and_interrupt_keeps_the_state(sb: Sandbox) -> None:
    sb.run_code("before = 1")
    chunks: list[str] = []

    def on_stdout(text: str) -> None:
        chunks.append(text)
        if "waiting" in text:
            assert sb.interrupt()

    run = sb.run_code("import time\nprint('waiting', flush=True)\ntime.sleep(600)", on_stdout=on_stdout)
    assert run.error is not None and run.error.name == "KeyboardInterrupt" and not run.timed_out
    assert "".join(chunks) == run.stdout == "waiting\n"
    assert sb.run_code("before + 1").text == "2"
    assert sb.interrupt()  # delivered, and ignored between cells
    assert sb.run_code("before").text == "1"


def test_a_timeout_kills_the_interpreter_and_the_next_cell_says_state_lost(
        sb: Sandbox, kernel_process: KernelProcess) -> None:
    sb.run_code("lost = True")
    [old] = interpreters(kernel_process)
    run = sb.run_code("print('spinning', flush=True)\nwhile True: pass", timeout=1)
    assert run.timed_out and run.error is not None and run.error.name == "TimeoutError"
    assert run.stdout == "spinning\n"
    assert eventually(lambda: old not in interpreters(kernel_process))
    fresh = sb.run_code("lost")
    assert fresh.state_lost and fresh.error is not None and fresh.error.name == "NameError"
    assert not sb.run_code("1").state_lost


def test_a_dead_interpreter_is_reported_and_replaced(sb: Sandbox) -> None:
    sb.run_code("y = 1")
    died = sb.run_code("import os; os._exit(3)")
    assert died.error is not None and died.error.name == "InterpreterDied"
    assert died.error.value == "the interpreter exited with code 3"
    again = sb.run_code("'y' in globals()")
    assert again.state_lost and again.text == "False"


def test_a_cell_lying_on_the_protocol_fd_only_breaks_its_own_interpreter(sb: Sandbox) -> None:
    lie = cell("""
        import os
        for fd in range(3, 64):
            try:
                os.write(fd, b"\\xff\\xff\\xff\\xff garbage")
            except OSError:
                pass
    """)
    broken = sb.run_code(lie)
    assert broken.error is not None and broken.error.name == "InterpreterDied"
    assert "protocol" in broken.error.value
    assert sb.run_code("6 * 7").text == "42"


def test_a_forked_child_never_answers_for_its_parent(sb: Sandbox) -> None:
    run = sb.run_code("import os\npid = os.fork()\nprint('parent' if pid else 'child')\n"
                      "if pid: os.waitpid(pid, 0)\npid > 0")
    assert run.text == "True" and sorted(run.stdout.split()) == ["child", "parent"]
    for n in range(3):
        assert sb.run_code(f"{n} + 1").text == str(n + 1)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"code": b"1"}, "code"), ({"code": "1", "timeout": 0}, "timeout"),
    ({"code": "1", "timeout": "1s"}, "timeout"), ({"code": "1", "max_output": -1}, "max_output"),
    ({"code": "1", "stdin": 5}, "stdin")])
def test_malformed_arguments_are_named(sb: Sandbox, kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        sb.run_code(**kwargs)
    assert refused.value.details.get("field") == field


def test_a_cells_forks_end_with_it_orphans_included(sb: Sandbox) -> None:
    # A child and its grandchild that would sleep for good; the child exits at once, so the
    # grandchild is an orphan (a fork bomb's forks are, as their parents fail and exit).
    forked = sb.run_code(textwrap.dedent("""\
        import os, time
        read, write = os.pipe()
        child = os.fork()
        if child == 0:
            if os.fork() == 0:
                os.write(write, str(os.getpid()).encode())
                time.sleep(600)
            os._exit(0)
        os.close(write)
        [child, int(os.read(read, 32))]"""))
    assert forked.error is None and forked.text, forked.error
    child, grandchild = json.loads(forked.text)

    def ended() -> bool:  # gone, or a zombie its subreaper has not reaped yet
        return sb.run_code(f"import os\n[p for p in {[child, grandchild]} if os.path.exists(f'/proc/{{p}}') "
                           f"and open(f'/proc/{{p}}/stat').read().rsplit(')', 1)[1].split()[0] != 'Z']").text == "[]"

    assert eventually(ended)


def test_a_pool_kept_across_cells_keeps_its_workers(sb: Sandbox) -> None:
    # Its idle workers are live forks: killed at the cell's end, they would take the lock of its
    # task queue with them and the next cell's map would hang.
    made = sb.run_code("import multiprocessing\npool = multiprocessing.Pool(2)\npool.map(abs, [-1, -2])", timeout=60)
    assert made.text == "[1, 2]", made.error
    used = sb.run_code("pool.map(abs, [-3, -4])", timeout=60)
    assert used.text == "[3, 4]" and not used.timed_out, used.error
    assert sb.run_code("pool.terminate()", timeout=60).error is None


def test_a_fork_bomb_stops_at_the_pids_limit_and_leaves_nothing(sb: Sandbox) -> None:
    bomb = sb.run_code("import os\nwhile True:\n    os.fork()", timeout=60)
    assert bomb.error is not None and bomb.error.name == "BlockingIOError" and not bomb.timed_out

    def recovered() -> bool:  # the bomb's children reaped: forking works again
        return sb.run_code("import subprocess; subprocess.run(['true']).returncode").text == "0"

    assert eventually(recovered)
    assert sb.exec("echo alive").stdout == b"alive\n"
