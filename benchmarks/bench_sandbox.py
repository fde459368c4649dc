"""Sandbox benchmarks (issue 12): ``client.sandbox()``, EXEC into it and ``run_code``, each figure
beside a reference measured in the same run, alternating call by call so the machine's other
load hits both alike:

Each sandbox figure is also measured, in the same run, for the way a sandbox was served before
its pid 1 became agentos-init (``zygote``): the same idle program spawned from a copy, so the
kernel does not recognise it and serves every exec through the zygote (a fork, a namespace join
and the confinement steps again), as it still does for agents whose pid 1 is their own program.

- create -> first exec output: ``with client.sandbox() as sb: sb.exec(["echo", "hi"])`` with the
  full sandbox, from the call to the output in hand (the kill on leaving is not counted). Goals:
  p50 <= 5 ms, p99 <= 15 ms. Reference: bubblewrap running ``echo hi`` with the same view,
  namespaces and seccomp filter (no Landlock, no cgroup), reported as absent when ``bwrap`` is not
  installed; docker/podman only when one is installed with a working daemon (said either way).
- exec round trip into a running sandbox (``echo hi``): p50 <= 2 ms. Reference: ``nsenter`` (as
  root) into the same sandbox's namespaces running ``echo hi`` (no uid change, Landlock, seccomp or
  cgroup: a floor, not the same work).
- ``run_code("1")`` in a warm interpreter: p50 <= 1 ms. Reference: a NOOP round trip on the same
  connection.
- 1,000 idle sandboxes (100 of the zygote's kind): their total memory (USS and PSS of each
  sandbox's pid 1, from /proc/PID/smaps_rollup, and the cgroup's memory.current), the kernel's
  RSS growth and the time to start them, a scaled-down stand-in for the issue's 10,000
  (``IDLE_SANDBOXES=10000`` runs that many, by hand: not in the suite).

Goals are reported (met / NOT MET) in the "agentos goals" summary, never asserted. Every sandbox
is killed and the kernel stopped at the end; the module fails if one was left running.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from harness import Goals, bwrap_argv, percentile, process_cpu_ns

from agentos import Client
from agentos.client.sandbox import IDLE
from agentos.sandbox import seccomp
from agentos.testing.kernel import KernelProcess

ECHO = ["echo", "hi"]
CREATE_ROUNDS = 100
EXEC_ROUNDS = 300
CELL_ROUNDS = 500
WARMUP = 10
IDLE_SANDBOXES = int(os.environ.get("IDLE_SANDBOXES", "1000"))
#: Idle sandboxes of the zygote's kind, for the same-run comparison (an interpreter each).
IDLE_ZYGOTE_SANDBOXES = 100
RESULTS: dict[str, Any] = {}
#: Work after a timed call (killing what it started), outside its clock.
_AFTER: list[Callable[[], object]] = []
#: The idle program copied where the kernel does not recognise it (``zygote_sandbox``).
_IDLE_COPY: list[str] = []


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def _summary(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(samples) * 1e3, 3),
            "p99_ms": round(percentile(samples, 0.99) * 1e3, 3), "rounds": len(samples)}


def _timed(call: Callable[[], bytes]) -> float:
    started = time.perf_counter()
    out = call()
    elapsed = time.perf_counter() - started
    assert out == b"hi\n", out
    while _AFTER:
        _AFTER.pop()()
    return elapsed


class ZygoteSandbox:
    """A sandbox served the way it was before agentos-init: its idle program from a copy, every
    exec through the zygote. Enough of ``Sandbox`` for these benchmarks."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.info = client.spawn(f"zygote-sandbox-{os.urandom(6).hex()}", _IDLE_COPY[0], sandboxed=True,
                                 timeout="10m")
        self.id = self.info["id"]
        assert "init" not in self.info["isolation"]["sandbox"]

    def exec(self, command: list[str]) -> Any:
        return self.client.exec(None, command, id=self.id)

    def kill(self) -> None:
        self.client.kill(id=self.id, grace=0)


def _alternate(benchmark: Any, calls: dict[str, Callable[[], bytes]], rounds: int) -> dict[str, list[float]]:
    """Time each of ``calls`` once per round, in turn; pytest-benchmark times the whole round."""
    samples: dict[str, list[float]] = {name: [] for name in calls}

    def one_round() -> None:
        for name, call in calls.items():
            samples[name].append(_timed(call))

    benchmark.pedantic(one_round, rounds=rounds, warmup_rounds=WARMUP)
    return {name: taken[-rounds:] for name, taken in samples.items()}


@pytest.fixture(scope="module")
def kernel() -> Iterator[KernelProcess]:
    # At the kernel's default log level (INFO), as deployed: the harness's DEBUG logs a line per
    # exec more, a tenth of an exec's kernel time on this box.
    k = KernelProcess(Path(tempfile.mkdtemp(prefix="agentos-bench-sandbox-")), args=["--log-level", "INFO"]).start()
    copy = k.root / "zygote-idle" / "idle.py"
    copy.parent.mkdir(mode=0o755)
    shutil.copy(IDLE, copy)
    copy.chmod(0o644)
    _IDLE_COPY[:] = [str(copy)]
    try:
        yield k
        with k.client() as client:
            left = [a["name"] for a in client.list_agents("running")]
        assert not left, f"sandboxes left running: {left}"
    finally:
        status = k.stop()
        assert status == 0, k.log()
        shutil.rmtree(k.root)  # kept when the kernel failed: its log says why
        out = Path(".benchmarks")
        out.mkdir(exist_ok=True)
        (out / "sandbox.json").write_text(json.dumps(RESULTS, indent=2) + "\n")


@pytest.fixture(scope="module")
def client(kernel: KernelProcess) -> Iterator[Client]:
    with kernel.client() as c:
        yield c


def _bwrap_echo() -> bytes:
    filter_fd = os.memfd_create("seccomp")
    try:
        os.write(filter_fd, seccomp.default_filter())
        os.lseek(filter_fd, 0, os.SEEK_SET)
        proc = subprocess.Popen(bwrap_argv(ECHO, seccomp_fd=filter_fd, env={"PATH": "/usr/bin:/bin"}),
                                pass_fds=[filter_fd], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    finally:
        os.close(filter_fd)
    assert proc.stdout is not None
    with proc.stdout:
        out = proc.stdout.readline()  # the output in hand, as for the sandbox; the exit is not timed
    proc.wait()
    return out


def _container_engines() -> dict[str, str]:
    """Why docker and podman are (or are not) compared: a client without a daemon does not count."""
    found = {}
    for engine in ("docker", "podman"):
        if shutil.which(engine) is None:
            found[engine] = "not installed"
            continue
        probe = subprocess.run([engine, "info"], capture_output=True, text=True, timeout=20, check=False)
        found[engine] = "usable" if probe.returncode == 0 else \
            f"installed, but `{engine} info` fails (no daemon): not compared"
    return found


def test_create_to_first_exec_output(benchmark: Any, client: Client, goals: Goals) -> None:
    def sandbox_echo() -> bytes:
        sb = client.sandbox().start()
        _AFTER.append(sb.kill)  # after the clock stops
        return sb.exec(ECHO).stdout

    def zygote_echo() -> bytes:
        sb = ZygoteSandbox(client)
        _AFTER.append(sb.kill)
        return cast(bytes, sb.exec(ECHO).stdout)

    calls = {"sandbox": sandbox_echo, "zygote": zygote_echo}
    if shutil.which("bwrap"):
        calls["bwrap"] = _bwrap_echo
    engines = _container_engines()
    for engine, state in engines.items():
        if state == "usable":  # only when present already: pulling images is not a benchmark
            calls[engine] = lambda engine=engine: subprocess.run(  # type: ignore[misc]
                [engine, "run", "--rm", "--network=none", "debian:stable-slim", *ECHO],
                capture_output=True, check=True).stdout
    samples = _alternate(benchmark, calls, CREATE_ROUNDS)
    ours = samples["sandbox"]
    p50, p99 = statistics.median(ours), percentile(ours, 0.99)
    refs = {name: _summary(s) for name, s in samples.items() if name != "sandbox"}
    RESULTS["create -> first exec output"] = {"sandbox": _summary(ours), **refs,
                                              "absent": {**({} if "bwrap" in calls else {
                                                  "bwrap": "not installed (apt-get install bubblewrap)"}),
                                                  **{e: s for e, s in engines.items() if s != "usable"}}}
    benchmark.extra_info.update(RESULTS["create -> first exec output"])
    others = "; ".join(f"{name} p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms "
                       f"(sandbox p50 = {statistics.median(ours) * 1e3 / r['p50_ms']:.2f}x)"
                       for name, r in refs.items())
    absent = "; ".join(f"{e}: {s}" for e, s in engines.items() if s != "usable")
    detail = f"{others}; {absent}; {CREATE_ROUNDS} alternating rounds"
    print(f"\ncreate -> first exec output: sandbox p50 {_ms(p50)}, p99 {_ms(p99)}; {detail}")
    goals.add("sandbox create -> exec output p50", _ms(p50), "<= 5 ms", p50 <= 5e-3, detail)
    goals.add("sandbox create -> exec output p99", _ms(p99), "<= 15 ms", p99 <= 15e-3)


def _kernel_cpu_per_call(kernel: KernelProcess, call: Callable[[], object], rounds: int) -> float:
    """The kernel process's CPU time per call, in ms (its own time: the sandbox's is not in it)."""
    before = process_cpu_ns(kernel.pid)
    for _ in range(rounds):
        call()
    return (process_cpu_ns(kernel.pid) - before) / rounds / 1e6


def test_exec_round_trip(benchmark: Any, client: Client, kernel: KernelProcess, goals: Goals) -> None:
    with client.sandbox() as sb:
        old = ZygoteSandbox(client)
        try:
            nsenter = ["nsenter", "--target", str(sb.info["pid"]), "--mount", "--uts", "--ipc", "--net",
                       "--pid", "--cgroup", "--", *ECHO]
            calls = {"sandbox": lambda: sb.exec(ECHO).stdout, "zygote": lambda: old.exec(ECHO).stdout,
                     "nsenter": lambda: subprocess.run(nsenter, capture_output=True, check=True).stdout}
            samples = _alternate(benchmark, calls, EXEC_ROUNDS)
            cpu = {"sandbox": _kernel_cpu_per_call(kernel, lambda: sb.exec(ECHO), 50),
                   "zygote": _kernel_cpu_per_call(kernel, lambda: old.exec(ECHO), 50)}
        finally:
            old.kill()
    p50, ref = statistics.median(samples["sandbox"]), statistics.median(samples["nsenter"])
    before = statistics.median(samples["zygote"])
    RESULTS["exec round trip"] = {"sandbox": _summary(samples["sandbox"]), "zygote": _summary(samples["zygote"]),
                                  "nsenter": _summary(samples["nsenter"]),
                                  "kernel_cpu_per_exec_ms": {k: round(v, 3) for k, v in cpu.items()}}
    benchmark.extra_info.update(RESULTS["exec round trip"])
    detail = (f"the zygote's way p50 {_ms(before)} (init {before / p50:.1f}x faster); nsenter into its "
              f"namespaces p50 {_ms(ref)} (ratio {p50 / ref:.2f}x); p99 "
              f"{_ms(percentile(samples['sandbox'], 0.99))} vs zygote "
              f"{_ms(percentile(samples['zygote'], 0.99))} vs nsenter {_ms(percentile(samples['nsenter'], 0.99))}; "
              f"kernel process CPU per exec {cpu['sandbox']:.2f} ms (zygote {cpu['zygote']:.2f} ms); "
              f"{EXEC_ROUNDS} alternating rounds")
    print(f"\nexec round trip: sandbox p50 {_ms(p50)}; {detail}")
    goals.add("sandbox exec round trip p50", _ms(p50), "<= 2 ms", p50 <= 2e-3, detail)


def test_run_code_warm_cell(benchmark: Any, client: Client, goals: Goals) -> None:
    with client.sandbox() as sb:
        assert sb.run_code("1").text == "1"  # starts the interpreter: not what is measured

        def cell() -> bytes:
            assert sb.run_code("1").text == "1"
            return b"hi\n"

        samples = _alternate(benchmark, {"run_code": cell,
                                         "noop": lambda: client.noop(b"") or b"hi\n"}, CELL_ROUNDS)
    p50, noop = statistics.median(samples["run_code"]), statistics.median(samples["noop"])
    RESULTS["run_code warm cell"] = {"run_code": _summary(samples["run_code"]),
                                     "noop": _summary(samples["noop"])}
    benchmark.extra_info.update(RESULTS["run_code warm cell"])
    detail = (f"NOOP round trip p50 {_ms(noop)} (cell = {p50 / noop:.1f}x NOOP, {_ms(p50 - noop)} more); "
              f"p99 {_ms(percentile(samples['run_code'], 0.99))}; {CELL_ROUNDS} alternating pairs")
    print(f"\nrun_code('1') warm: p50 {_ms(p50)}; {detail}")
    goals.add("run_code trivial cell p50", _ms(p50), "<= 1 ms", p50 <= 1e-3, detail)


def _memory_kib(pid: int) -> tuple[int, int]:
    """USS (Private_Clean + Private_Dirty) and PSS of ``pid``, in KiB."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        fields = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f if ":" in line)
                  if v.strip().endswith("kB")}
    return fields["Private_Clean"] + fields["Private_Dirty"], fields["Pss"]


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def _idle(client: Client, kernel: KernelProcess, count: int, start: Callable[[], Any]) -> dict[str, Any]:
    """Start ``count`` idle sandboxes one after another, read their memory, kill them."""
    sandboxes: list[Any] = []
    kernel_before = _rss_kib(kernel.pid)
    try:
        started = time.perf_counter()
        for _ in range(count):
            sandboxes.append(start())
        elapsed = time.perf_counter() - started
        time.sleep(0.5)  # let each finish starting up before its memory is read
        uss, pss = zip(*(_memory_kib(sb.info["pid"]) for sb in sandboxes))
        ids = {sb.id for sb in sandboxes}
        cgroup = [a["usage"]["memory_current"] for a in client.list_agents("running") if a["id"] in ids]
        kernel_growth = _rss_kib(kernel.pid) - kernel_before
        available = _meminfo_kib("MemAvailable")
    finally:
        for sb in sandboxes:
            sb.kill()
    return {"sandboxes": count, "start_seconds": round(elapsed, 2),
            "uss_total_mib": round(sum(uss) / 1024, 1), "pss_total_mib": round(sum(pss) / 1024, 1),
            "uss_per_sandbox_kib": round(statistics.median(uss)),
            "pss_per_sandbox_kib": round(statistics.median(pss)),
            "cgroup_memory_current_total_mib": round(sum(cgroup) / 2**20, 1),
            "cgroup_memory_current_per_sandbox_kib": round(statistics.median(cgroup) / 1024),
            "kernel_rss_growth_kib": kernel_growth, "host_memavailable_mib_while_up": available // 1024}


def _meminfo_kib(name: str) -> int:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(f"{name}:"))


def test_idle_sandboxes_memory(benchmark: Any, client: Client, kernel: KernelProcess, goals: Goals) -> None:
    """IDLE_SANDBOXES idle sandboxes at once, scaled down from the issue's 10,000; and, for the
    same-run comparison, IDLE_ZYGOTE_SANDBOXES of the zygote's kind."""
    assert kernel.proc is not None
    before = _idle(client, kernel, IDLE_ZYGOTE_SANDBOXES, lambda: ZygoteSandbox(client))
    summary: dict[str, Any] = {}
    benchmark.pedantic(lambda: summary.update(_idle(client, kernel, IDLE_SANDBOXES,
                                                    lambda: client.sandbox().start())), rounds=1)
    RESULTS[f"{IDLE_SANDBOXES} idle sandboxes"] = summary
    RESULTS[f"{IDLE_ZYGOTE_SANDBOXES} idle sandboxes, the zygote's kind"] = before
    benchmark.extra_info.update(summary)
    # The larger of the two per-sandbox figures, plus the kernel's own bookkeeping per sandbox.
    per_sandbox_kib = max(summary["pss_per_sandbox_kib"], summary["cgroup_memory_current_per_sandbox_kib"])
    per_10k_gib = (per_sandbox_kib + summary["kernel_rss_growth_kib"] / IDLE_SANDBOXES) * 10_000 / 2**20
    detail = (f"started one after another in {summary['start_seconds']:.2f} s; total USS "
              f"{summary['uss_total_mib']} MiB, PSS {summary['pss_total_mib']} MiB, cgroup memory.current "
              f"{summary['cgroup_memory_current_total_mib']} MiB; per sandbox (median) USS "
              f"{summary['uss_per_sandbox_kib']} KiB, PSS {summary['pss_per_sandbox_kib']} KiB, cgroup "
              f"{summary['cgroup_memory_current_per_sandbox_kib']} KiB; kernel RSS "
              f"+{summary['kernel_rss_growth_kib']} KiB; the zygote's kind (an interpreter each): PSS "
              f"{before['pss_per_sandbox_kib']} KiB, cgroup {before['cgroup_memory_current_per_sandbox_kib']} KiB "
              f"per sandbox; extrapolated to 10,000: {per_10k_gib:.1f} GiB of 24")
    print(f"\n{IDLE_SANDBOXES} idle sandboxes: {detail}")
    goals.add(f"{IDLE_SANDBOXES} idle sandboxes (scaled from 10,000)",
              f"{summary['pss_total_mib']} MiB PSS", "fits 10k in 24 GiB", per_10k_gib < 24, detail)
