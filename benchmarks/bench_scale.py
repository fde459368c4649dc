"""Scale on one box (issue 17): thousands of live sandboxed agents, and a bystander who should
not notice them.

One kernel; ``SCALE_AGENTS`` (10,000) idle sandboxed agents (``sleep``) are spawned from
``SCALE_CLIENTS`` (16) connections, stopping early, and saying so, if the box runs short of
memory (less than ``SCALE_MIN_FREE_GIB``, 3, available) or a SPAWN fails. Meanwhile a
bystander process sends one NOOP a millisecond on its own connection and records each round
trip, tagged with the phase it fell in. Reported against the issue's goals:

- time to spawn them all (goal <= 60 s), and the spawn rate over the last ``window`` spawns
  (~N live) over that of the first ``window`` (~0 live) (goal >= 0.8), with the kernel's CPU
  per spawn in both windows beside it (the wall rate on a shared box also measures the box);
- the kernel's RSS with them all running (goal <= 200 MB), and the memory each idle agent
  costs the host: the drop of MemAvailable over N (goal <= 3 MiB);
- the bystander's NOOP p99 while the agents are spawned, while LIST (every page, streamed)
  lists all of them again and again, and while the kernel shuts down (goal <= 2 ms each);
- the shutdown itself: SIGTERM to exit with every agent running (goal <= 10 s), and that
  nothing is left behind (no agent process, no cgroup of the kernel's).

Run: ``.venv/bin/python benchmarks/bench_scale.py`` (as root, for the sandbox; ~2-4 minutes
for 10,000), ``SCALE_AGENTS=1000`` for a quick one, ``SCALE_SANDBOXED=0`` for plain agents,
``SCALE_LIST_PAUSE=0.02`` for a lister that leaves the box some CPU between LISTs.
Not part of any test run: it fills the box.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from harness import Goals, percentile

from agentos.client.aio import AsyncClient
from agentos.protocol import HEADER_SIZE, Op, encode_frame
from agentos.testing.kernel import KernelProcess

AGENTS = int(os.environ.get("SCALE_AGENTS", "10000"))
CLIENTS = int(os.environ.get("SCALE_CLIENTS", "16"))
SANDBOXED = os.environ.get("SCALE_SANDBOXED", "1") != "0"
MIN_FREE = float(os.environ.get("SCALE_MIN_FREE_GIB", "3")) * 2**30
#: A number no other process on the box sleeps for: how leftovers are found.
MARK = "1000017"
LIST_SECONDS = 5.0
#: Seconds between two LISTs (0: back to back, a client saturating a core of a 2-core box).
LIST_PAUSE = float(os.environ.get("SCALE_LIST_PAUSE", "0"))
#: Seconds the kernel gets to stop before it is killed (and the shutdown reported as failed).
STOP_TIMEOUT = float(os.environ.get("SCALE_STOP_TIMEOUT", "600"))
#: The kernel's descriptors per idle agent, in its own table (issue 17; docs/endurance.md).
FD_BUDGET = 1.8


def main() -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    kernel = KernelProcess(root / "k", args=["--log-level", "WARNING"])
    kernel.start()
    figures: dict[str, Any] = {"asked": AGENTS, "sandboxed": SANDBOXED}
    bystander = Bystander(kernel.socket_path)
    try:
        bystander.phase("idle")
        time.sleep(2)
        figures["rss_idle_mb"] = rss_mb(kernel.pid)
        figures["fds_idle"] = open_fds(kernel.pid)
        available = mem_available()
        bystander.phase("spawn")
        figures.update(asyncio.run(spawn_all(kernel)))
        bystander.phase("settle")
        time.sleep(5)
        figures["rss_mb"] = rss_mb(kernel.pid)
        figures["fds"], figures["holder_fds"] = open_fds(kernel.pid), holder_fds(kernel.pid)
        figures["per_agent_mib"] = (available - mem_available()) / figures["spawned"] / 2**20
        bystander.phase("list")
        figures.update(asyncio.run(list_all(kernel)))
        bystander.phase("shutdown")
        started = time.monotonic()
        try:
            figures["exit_status"] = kernel.stop(timeout=STOP_TIMEOUT)
        except RuntimeError:
            figures["exit_status"] = None  # it ignored SIGTERM that long: reported, then killed
        figures["shutdown_s"] = time.monotonic() - started
    finally:
        if kernel.proc is not None and kernel.proc.poll() is None:
            kernel.kill()
        figures["noop"] = bystander.finish()
    figures["left_processes"] = leftovers()
    figures["left_cgroups"] = [str(path) for path in kernel_cgroups(kernel.pid)]
    shutil.rmtree(root, ignore_errors=True)  # the kernel's state and socket dir: nothing to keep
    return figures


async def spawn_all(kernel: KernelProcess) -> dict[str, Any]:
    clients = [await AsyncClient.connect(kernel.socket_path, timeout=600) for _ in range(CLIENTS)]
    done: list[float] = []  # when each SPAWN was answered
    cpu: dict[int, tuple[float, float]] = {0: cpu_times(kernel.pid)}
    window = max(50, min(500, AGENTS // 10))
    stop: list[str] = []
    started = time.monotonic()
    issued = 0

    async def spawner(client: AsyncClient) -> None:
        nonlocal issued
        while issued < AGENTS and not stop:
            n = issued
            issued += 1
            if n % 100 == 0 and mem_available() < MIN_FREE:
                stop.append(f"MemAvailable under {MIN_FREE / 2**30:.0f} GiB after {len(done)} agents")
                return
            if n % 100 == 0 and open_fds(kernel.pid) > 0.97 * fd_limit(kernel.pid):
                stop.append(f"the kernel holds {open_fds(kernel.pid):,} fds of its limit "
                            f"{fd_limit(kernel.pid):,} after {len(done)} agents")
                return
            try:
                await client.spawn(f"idle{n}", command=["sleep", MARK], sandboxed=SANDBOXED)
            except Exception as exc:  # noqa: BLE001 - the first failure ends the ramp, and is reported
                stop.append(f"SPAWN {n} failed: {type(exc).__name__}: {exc}")
                return
            done.append(time.monotonic())
            if len(done) % 50 == 0:
                cpu[len(done)] = cpu_times(kernel.pid)

    await asyncio.gather(*(spawner(client) for client in clients))
    for client in clients:
        await client.close()
    spawned = len(done)
    result: dict[str, Any] = {"spawned": spawned, "spawn_s": done[-1] - started if done else 0.0,
                              "stopped": stop[0] if stop else None, "window": window}
    if spawned >= 2 * window:
        first = window / (done[window - 1] - started)
        last = window / (done[spawned - 1] - done[spawned - window - 1])
        result.update(rate_first=first, rate_last=last)
        end = max(cpu)
        for key, (a, b) in (("first", (0, window)), ("last", (end - window, end))):
            if a in cpu and b in cpu:
                # The kernel process's user and system CPU (all its threads) per spawn.
                result[f"user_ms_{key}"] = (cpu[b][0] - cpu[a][0]) / window * 1e3
                result[f"sys_ms_{key}"] = (cpu[b][1] - cpu[a][1]) / window * 1e3
    return result


async def list_all(kernel: KernelProcess) -> dict[str, Any]:
    async with await AsyncClient.connect(kernel.socket_path, timeout=600) as client:
        times, counts = [], []
        until = time.monotonic() + LIST_SECONDS
        while time.monotonic() < until:
            started = time.monotonic()
            counts.append(len(await client.list_agents()))
            times.append(time.monotonic() - started)
            await asyncio.sleep(LIST_PAUSE)
    return {"list_s": statistics.median(times), "listed": max(counts), "lists": len(times)}


class Bystander:
    """Another client: a process that sends one NOOP every millisecond and times each reply."""

    def __init__(self, socket_path: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--bystander", str(socket_path)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def phase(self, name: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(name + "\n")

    def finish(self) -> dict[str, dict[str, float]]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        report: dict[str, dict[str, float]] = json.loads(self.proc.stdout.read())
        self.proc.wait()
        return report


def bystander(socket_path: str) -> None:
    """The bystander process: NOOPs until its stdin closes or the kernel hangs up."""
    phase = ["start"]
    samples: dict[str, list[float]] = {}

    def follow() -> None:
        for line in sys.stdin:
            phase[0] = line.strip()
        phase[0] = ""

    threading.Thread(target=follow, daemon=True).start()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(socket_path)
    request = 0
    while phase[0]:
        request += 1
        tag = phase[0]
        started = time.perf_counter()
        try:
            conn.sendall(encode_frame(Op.NOOP, request))
            if len(conn.recv(HEADER_SIZE, socket.MSG_WAITALL)) < HEADER_SIZE:
                break  # the kernel closed the connection (its shutdown)
        except OSError:
            break
        samples.setdefault(tag, []).append(time.perf_counter() - started)
        time.sleep(0.001)
    while phase[0]:
        time.sleep(0.05)  # wait for the end of the run before reporting
    print(json.dumps({tag: {"n": len(got), "p50_ms": percentile(got, 0.5) * 1e3,
                            "p99_ms": percentile(got, 0.99) * 1e3, "max_ms": max(got) * 1e3}
                      for tag, got in samples.items()}))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def holder_fds(pid: int) -> int:
    """Descriptors in the kernel's holder threads' own tables (processes/holder.py)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "comm").read_text().strip() == "agentos-holder":
                total += len(os.listdir(task / "fd"))
        except FileNotFoundError:
            continue
    return total


def fd_limit(pid: int) -> int:
    """The kernel's soft RLIMIT_NOFILE (it raises it to the hard limit at start)."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise RuntimeError(f"no open-file limit for {pid}")


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def leftovers() -> int:
    """Agent processes still alive after the kernel exited."""
    found = subprocess.run(["pgrep", "-f", f"sleep {MARK}"], capture_output=True, text=True, check=False)
    return len(found.stdout.split())


def kernel_cgroups(pid: int) -> list[Path]:
    """The kernel's instance cgroup directories that still exist (its name is ``<pid>-*``)."""
    return [path for path in Path("/sys/fs/cgroup").glob(f"*/agentos/{pid}-*") if path.exists()]


def report(f: dict[str, Any]) -> Goals:
    goals = Goals()
    n = f["spawned"]
    goals.add("live agents", f"{n:,} of {f['asked']:,}", f"{f['asked']:,}", n == f["asked"],
              f["stopped"] or ("sandboxed" if f["sandboxed"] else "plain (not sandboxed)"))
    goals.add("time to spawn all", f"{f['spawn_s']:.1f} s", "<= 60 s", f["spawn_s"] <= 60 and n == f["asked"],
              f"{n / f['spawn_s']:.0f}/s" if f["spawn_s"] else "")
    if "rate_last" in f:
        ratio = f["rate_last"] / f["rate_first"]
        cpu = (f"; kernel CPU per spawn user {f['user_ms_first']:.2f} -> {f['user_ms_last']:.2f} ms, "
               f"system {f['sys_ms_first']:.2f} -> {f['sys_ms_last']:.2f} ms" if "user_ms_last" in f else "")
        goals.add(f"spawn rate at {n:,} / at 0 live", f"x{ratio:.2f}", ">= 0.8", ratio >= 0.8,
                  f"{f['rate_first']:.0f}/s -> {f['rate_last']:.0f}/s over {f['window']} spawns{cpu}")
    per_agent = (f["fds"] - f["fds_idle"]) / n if n else 0.0
    goals.add("kernel fds per idle agent", f"{per_agent:.2f}", f"<= {FD_BUDGET}", per_agent <= FD_BUDGET,
              f"{f['fds']:,} in its table ({f['fds_idle']} idle); {f['holder_fds']:,} in its holder threads'")
    goals.add("kernel RSS", f"{f['rss_mb']:.0f} MB", "<= 200 MB", f["rss_mb"] <= 200,
              f"{f['rss_idle_mb']:.0f} MB idle")
    goals.add("memory per idle agent", f"{f['per_agent_mib']:.2f} MiB", "<= 3 MiB", f["per_agent_mib"] <= 3,
              "MemAvailable drop / agents")
    for phase, what in (("idle", "idle (the box)"), ("settle", "idle, all running"), ("spawn", "spawn storm"),
                        ("list", "LIST of all"), ("shutdown", "shutdown")):
        got = f["noop"].get(phase)
        if got is None:
            goals.add(f"NOOP p99 during {what}", "no samples", "<= 2 ms", False)
            continue
        goals.add(f"NOOP p99 during {what}", f"{got['p99_ms']:.2f} ms", "<= 2 ms", got["p99_ms"] <= 2,
                  f"p50 {got['p50_ms']:.2f}, max {got['max_ms']:.1f} ms, {got['n']:,} NOOPs")
    goals.add("LIST of all", f"{f['list_s'] * 1e3:.0f} ms", "-", True, f"{f['listed']:,} agents, {f['lists']} LISTs")
    stopped = f["exit_status"] is not None
    goals.add("shutdown with all running", f"{f['shutdown_s']:.1f} s" if stopped else f"> {STOP_TIMEOUT:.0f} s",
              "<= 10 s", stopped and f["shutdown_s"] <= 10 and f["exit_status"] == 0,
              f"exit status {f['exit_status']}" if stopped else "killed: it had not stopped")
    clean = f["left_processes"] == 0 and not f["left_cgroups"]
    goals.add("left behind", f"{f['left_processes']} proc, {len(f['left_cgroups'])} cg", "nothing", clean)
    return goals


def test_scale() -> None:
    figures = main()
    print("\n" + "\n".join(report(figures).render()))
    out = Path(".benchmarks")
    out.mkdir(exist_ok=True)
    (out / "scale.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--bystander"]:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        bystander(sys.argv[2])
    else:
        test_scale()
