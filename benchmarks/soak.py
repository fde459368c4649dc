"""Soak (issue 17): one kernel under steady churn for N minutes; fails if anything grows.

One kernel (started as bench_scale starts it, with a fake Gemini on 127.0.0.1 for THINK) and
one worker process per loop, each on its own connection, each running its operation back to
back (``--pause`` seconds apart):

- ``spawn-sandboxed`` / ``spawn-plain``: spawn an idle agent (``sleep``), keep the newest
  ``LIVE`` running, kill the oldest (one op = a SPAWN and, once full, a KILL);
- ``store``: STORE over a fixed set of 1,000 keys (so the state itself stays the same size);
- ``send-recv``: SEND to a registered mailbox, then RECV it with ack on a second connection;
- ``think``: one THINK answered by the fake model at once.

Every ``--interval`` (10) seconds the kernel is sampled: RSS, open fds (``/proc/PID/fd``),
threads, the cgroup directories under its ``agentos/<instance>`` parents, its children in Z
state (zombies), its CPU time, the size of its state dir; plus the NOOP p50/p99 of a bystander
(a thread here sending one NOOP per millisecond on its own connection) and each loop's ops,
errors and latency over the interval. Each sample is one JSON line of ``--samples``.

At the end the kernel gets SIGTERM, and the run FAILS (exit 1, figures printed) if over the
second half of the run the least-squares slope of RSS, fds, cgroups or zombies exceeds its
bound per hour (``BOUNDS``), if fds, cgroups or zombies are not flat after the warm-up
(max - min over the samples past ``warm-up`` above ``FLAT``: what the churn itself moves
them by, the agents in flight), if an operation failed, or if an agent process or a cgroup
outlived the kernel. The curves go to ``--png``; ``--plot SAMPLES.jsonl`` re-plots (and
re-judges) a finished run.

Run (as root, for the sandbox): ``.venv/bin/python benchmarks/soak.py --minutes 60``.
Latency figures on a shared 2-core box measure the box as much as the kernel.
Not part of any test run.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench_scale import cpu_times, kernel_cgroups, open_fds, rss_mb
from bench_think import KEY, MODEL, FakeProcess
from harness import PYTHON, Goals, percentile

from agentos import AsyncClient
from agentos.cgroups import TOP, detect, instance_name, open_driver
from agentos.protocol import HEADER_SIZE, Op, encode_frame
from agentos.testing.kernel import KernelProcess

LOOPS = ("spawn-sandboxed", "spawn-plain", "store", "send-recv", "think")
#: Agents each spawn loop keeps running (it kills the oldest when it starts one more).
LIVE = 4
#: Seconds the agents sleep, unique to a run (its pid): how its leftover agents are found.
MARK = str(1_700_000_000 + os.getpid())
#: Growth allowed per hour, fitted over the second half of the run.
BOUNDS = {"rss_mb": 5.0, "fds": 10.0, "cgroups": 10.0, "zombies": 2.0}
#: Largest max - min after the warm-up. The spawn loops move the kernel's fds and cgroups as their
#: agents come and go (LIVE or LIVE + 1 running each, one more being killed): 12 fds and 10 cgroups
#: in a 90 s run. The bounds leave room for that and still catch a leak of one a minute.
FLAT = {"fds": 32, "cgroups": 48, "zombies": 2}
#: One operation of a loop, or what ends it.
Step = Callable[[], Awaitable[Any]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--pause", type=float, default=0.005, help="seconds between two ops of a loop")
    parser.add_argument("--samples", type=Path, default=Path(".benchmarks/soak.jsonl"))
    parser.add_argument("--png", type=Path, default=Path(".benchmarks/soak.png"))
    parser.add_argument("--plot", type=Path, metavar="SAMPLES.jsonl", help="only re-plot a finished run")
    parser.add_argument("--worker", nargs=4, metavar=("LOOP", "SOCKET", "PAUSE", "MARK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        loop, socket_path, pause, mark = args.worker
        asyncio.run(worker(loop, socket_path, float(pause), mark))
        return 0
    if args.plot:
        samples, end = load(args.plot)
    else:
        args.samples.parent.mkdir(parents=True, exist_ok=True)
        samples, end = soak(args.minutes * 60, args.interval, args.pause, args.samples)
    goals = judge(samples, end)
    print("\n".join(goals.render()))
    plot(samples, goals, args.png)
    print(f"samples: {args.plot or args.samples}\nplot: {args.png}")
    return 0 if all(row["met"] for row in goals.rows) else 1


# -- the run ------------------------------------------------------------------------------


def soak(seconds: float, interval: float, pause: float, path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    root = Path(tempfile.mkdtemp(prefix="agentos-soak-"))
    fake = FakeProcess()
    env = {"AGENTOS_GEMINI_BASE_URL": fake.url, "GEMINI_API_KEY": KEY, "GOOGLE_API_KEY": "",
           "AGENTOS_GEMINI_MODEL": MODEL}
    kernel = KernelProcess(root / "k", env=env, args=["--log-level", "WARNING"])
    samples: list[dict[str, Any]] = []
    end: dict[str, Any] = {}
    workers: list[Worker] = []
    try:
        kernel.start()
        cgroup_roots = [r / TOP / instance_name(kernel.pid) for r in open_driver(detect()).roots]
        bystander = Bystander(kernel.socket_path)
        workers = [Worker(loop, kernel.socket_path, pause) for loop in LOOPS]
        started = time.monotonic()
        with path.open("w") as out:
            for n in itertools.count(1):
                time.sleep(max(0.0, started + n * interval - time.monotonic()))
                sample = {"t": round(time.monotonic() - started, 1), **probe(kernel, cgroup_roots),
                          "noop": bystander.take(), "loops": {w.loop: w.take() for w in workers}}
                fake.prepare()  # it records every request: forget them, so only the kernel grows
                samples.append(sample)
                out.write(json.dumps(sample) + "\n")
                out.flush()
                print(f"{sample['t']:7.0f} s  rss {sample['rss_mb']:6.1f} MB  fds {sample['fds']:4}  "
                      f"cgroups {sample['cgroups']:4}  zombies {sample['zombies']}  "
                      f"noop p99 {sample['noop']['p99_ms']:.2f} ms  ops "
                      + " ".join(f"{k}={v['ops']}" for k, v in sample["loops"].items()), flush=True)
                if sample["t"] >= seconds:
                    break
        for w in workers:
            w.close()
        bystander.close()
        end["exit_status"] = kernel.stop(timeout=120)
    finally:
        for w in workers:
            w.kill()
        if kernel.proc is not None and kernel.proc.poll() is None:
            kernel.kill()
            end["exit_status"] = "killed"
        fake.stop()
        if end.get("exit_status") != 0:
            print(kernel.log()[-4000:])
        shutil.rmtree(root, ignore_errors=True)
    end["left_processes"] = len(subprocess.run(["pgrep", "-f", f"sleep {MARK}$"], capture_output=True,
                                               text=True, check=False).stdout.split())
    end["left_cgroups"] = [str(p) for p in kernel_cgroups(kernel.pid)] if kernel.pid else []
    with path.open("a") as out:
        out.write(json.dumps({"end": end}) + "\n")
    return samples, end


def probe(kernel: KernelProcess, cgroup_roots: list[Path]) -> dict[str, Any]:
    """The kernel's resources now."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{kernel.pid}/status").read_text().splitlines())
    user, system = cpu_times(kernel.pid)
    state_bytes = state_files = 0
    for dirpath, _, files in os.walk(kernel.state_dir):
        for name in files:
            try:
                state_bytes += os.lstat(os.path.join(dirpath, name)).st_size
                state_files += 1
            except FileNotFoundError:
                pass  # rotated or deleted meanwhile
    return {"rss_mb": round(rss_mb(kernel.pid), 2), "fds": open_fds(kernel.pid),
            "threads": int(status["Threads"]), "cgroups": count_cgroups(cgroup_roots),
            "zombies": zombies(kernel.pid), "cpu_s": round(user + system, 2),
            "state_mb": round(state_bytes / 2**20, 2), "state_files": state_files}


def count_cgroups(roots: list[Path]) -> int:
    """Cgroup directories under the kernel's ``agentos/<instance>`` parents (them included)."""
    return sum(1 + sum(len(dirs) for _, dirs, _ in os.walk(root)) for root in roots if root.is_dir())


def zombies(pid: int) -> int:
    """Children of ``pid`` that exited and were not reaped."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # it just went away
            count += fields[0] == "Z" and int(fields[1]) == pid
    return count


def latency(seconds: list[float]) -> dict[str, Any]:
    if not seconds:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {"n": len(seconds), "p50_ms": round(percentile(seconds, 0.5) * 1e3, 3),
            "p99_ms": round(percentile(seconds, 0.99) * 1e3, 3), "max_ms": round(max(seconds) * 1e3, 3)}


class Bystander:
    """A thread sending one NOOP per millisecond on its own connection, timing each reply."""

    def __init__(self, socket_path: Path) -> None:
        self.conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.conn.connect(str(socket_path))
        self.times: list[float] = []
        self.running = True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        for request in itertools.count(1):
            if not self.running:
                return
            started = time.perf_counter()
            self.conn.sendall(encode_frame(Op.NOOP, request))
            if len(self.conn.recv(HEADER_SIZE, socket.MSG_WAITALL)) < HEADER_SIZE:
                raise RuntimeError("the kernel closed the bystander's connection")
            self.times.append(time.perf_counter() - started)
            time.sleep(0.001)

    def take(self) -> dict[str, Any]:
        if not self.thread.is_alive():
            raise RuntimeError("the bystander stopped")
        taken, self.times = self.times, []
        return latency(taken)

    def close(self) -> None:
        self.running = False
        self.thread.join(5)
        self.conn.close()


class Child:
    """A helper process told what to do by stdin lines, answering in JSON lines on stdout."""

    def __init__(self, argv: list[str], what: str) -> None:
        self.what = what
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def line(self, expect: str | None = None) -> str:
        """The next JSON line (or the line ``expect``)."""
        # Other lines are not ours: an editable install logs its rebuild to stdout on import.
        for line in self.proc.stdout:  # type: ignore[union-attr]
            if expect is None and line.startswith("{") or line.strip() == expect:
                return line
        raise RuntimeError(f"the {self.what} exited with {self.proc.wait()}")

    def close(self, timeout: float = 120) -> None:
        """Close its stdin, its signal to finish, and wait for it to exit."""
        self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Worker(Child):
    """One loop in a ``soak.py --worker`` process (which, closed, kills the agents it left running);
    ``take()`` asks for its figures since the last."""

    def __init__(self, loop: str, socket_path: Path, pause: float) -> None:
        super().__init__([*PYTHON, __file__, "--worker", loop, str(socket_path), str(pause), MARK],
                         f"{loop} worker")
        self.loop = loop
        self.line("ready")

    def take(self) -> dict[str, Any]:
        self.proc.stdin.write("take\n")  # type: ignore[union-attr]
        return json.loads(self.line())  # type: ignore[no-any-return]


async def worker(loop: str, socket_path: str, pause: float, mark: str) -> None:
    """A worker process: runs ``loop`` back to back; answers each stdin line with its figures."""
    async with await AsyncClient.connect(socket_path, timeout=120) as client:
        op, cleanup = await setup(loop, client, socket_path, mark)
        times: list[float] = []
        errors: Counter[str] = Counter()

        async def run() -> None:
            while True:
                started = time.perf_counter()
                try:
                    await op()
                except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                    errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
                else:
                    times.append(time.perf_counter() - started)
                await asyncio.sleep(pause)

        task = asyncio.ensure_future(run())
        print("ready", flush=True)
        while await asyncio.to_thread(sys.stdin.readline):
            taken, times = times, []
            print(json.dumps({"ops": len(taken), "errors": dict(errors), **latency(taken)}), flush=True)
            errors.clear()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await cleanup()


async def setup(loop: str, client: AsyncClient, socket_path: str, mark: str) -> tuple[Step, Step]:
    """The operation a loop repeats, and what ends it."""
    counter = itertools.count()

    async def nothing() -> None:
        pass

    if loop.startswith("spawn-"):
        live: deque[str] = deque()

        async def spawn_kill() -> None:
            name = f"{loop}-{next(counter)}"
            await client.spawn(name, command=["sleep", mark], sandboxed=loop == "spawn-sandboxed")
            live.append(name)
            if len(live) > LIVE:
                await client.kill(live.popleft())

        async def kill_all() -> None:
            for name in live:
                await client.kill(name)
        return spawn_kill, kill_all
    if loop == "store":
        async def store() -> None:
            n = next(counter)
            await client.store(f"soak-{n % 1000}", {"n": n, "pad": "x" * 200})
        return store, nothing
    if loop == "send-recv":
        inbox = await AsyncClient.connect(socket_path, timeout=120)
        await inbox.register("soak-inbox")

        async def send_recv() -> None:
            await client.send("soak-inbox", {"n": next(counter)})
            await inbox.recv(timeout=30, name="soak-inbox", ack=True)
        return send_recv, inbox.close

    async def think() -> None:
        (await client.think(f"soak {next(counter)}")).raise_for_error()
    return think, nothing


# -- the verdict and the plot ----------------------------------------------------------------


def load(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    samples, end = [], {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if "end" in record:
            end = record["end"]
        else:
            samples.append(record)
    return samples, end


def warmup(samples: list[dict[str, Any]]) -> float:
    """Seconds at the start that the flatness check ignores: caches and pools filling."""
    return min(120.0, 0.2 * samples[-1]["t"])


def slope_per_hour(samples: list[dict[str, Any]], key: str) -> tuple[float, float]:
    """Least-squares slope (per hour) and intercept of ``key`` over the second half of the run."""
    half = [s for s in samples if s["t"] >= samples[-1]["t"] / 2]
    if len(half) < 2:
        return 0.0, half[0][key] if half else 0.0
    fit = statistics.linear_regression([s["t"] for s in half], [float(s[key]) for s in half])
    return fit.slope * 3600, fit.intercept


def judge(samples: list[dict[str, Any]], end: dict[str, Any]) -> Goals:
    goals = Goals()
    if not samples:
        goals.add("samples", "none", ">= 2", False)
        return goals
    minutes = samples[-1]["t"] / 60
    warm = [s for s in samples if s["t"] >= warmup(samples)]
    for key, unit in (("rss_mb", "MB"), ("fds", ""), ("cgroups", ""), ("zombies", "")):
        slope, _ = slope_per_hour(samples, key)
        values = [s[key] for s in warm]
        goals.add(f"{key} slope, 2nd half", f"{slope:+.2f} {unit}/h", f"<= {BOUNDS[key]:g}/h",
                  slope <= BOUNDS[key], f"{samples[0][key]} -> {samples[-1][key]} over {minutes:.0f} min")
        if key in FLAT:
            spread = max(values) - min(values)
            goals.add(f"{key} flat after warm-up", f"{min(values)}..{max(values)}", f"spread <= {FLAT[key]}",
                      spread <= FLAT[key], f"{len(warm)} samples past {warmup(samples):.0f} s")
    slope, _ = slope_per_hour(samples, "threads")
    goals.add("threads slope, 2nd half", f"{slope:+.2f} /h", "-", True,
              f"{min(s['threads'] for s in warm)}..{max(s['threads'] for s in warm)} after warm-up")
    slope, _ = slope_per_hour(samples, "state_mb")
    goals.add("state dir slope, 2nd half", f"{slope:+.1f} MB/h", "-", True,
              f"{samples[-1]['state_mb']:.1f} MB in {samples[-1]['state_files']:,} files at the end")
    noop = [s["noop"]["p99_ms"] for s in warm if s["noop"]["p99_ms"] is not None]
    if noop:
        goals.add("bystander NOOP p99", f"{statistics.median(noop):.2f} ms", "-", True,
                  f"median of {len(noop)} samples, worst {max(noop):.1f} ms")
    for loop in samples[0]["loops"]:
        ops = sum(s["loops"][loop]["ops"] for s in samples)
        errors: Counter[str] = Counter()
        for s in samples:
            errors.update(s["loops"][loop]["errors"])
        p99 = [s["loops"][loop]["p99_ms"] for s in warm if s["loops"][loop]["p99_ms"] is not None]
        detail = f"p99 median {statistics.median(p99):.1f} ms" if p99 else "no ops after warm-up"
        if errors:
            detail += "; " + "; ".join(f"{n}x {what}" for what, n in errors.most_common(3))
        goals.add(f"{loop} ops", f"{ops:,} ({ops / samples[-1]['t']:.1f}/s)", "0 errors",
                  ops > 0 and not errors, detail)
    if end:
        clean = end["left_processes"] == 0 and not end["left_cgroups"]
        goals.add("kernel exit, left behind", f"{end['exit_status']}, {end['left_processes']} proc, "
                  f"{len(end['left_cgroups'])} cg", "0, nothing", clean and end["exit_status"] == 0)
    else:
        goals.add("kernel exit", "unknown", "0, nothing", False, "the run did not finish")
    return goals


def plot(samples: list[dict[str, Any]], goals: Goals, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not samples:
        return
    minutes = [s["t"] / 60 for s in samples]
    fig, axes = plt.subplots(3, 2, figsize=(12, 10), sharex=True)
    ax = axes[0][0]
    ax.plot(minutes, [s["rss_mb"] for s in samples], label="kernel RSS")
    slope, intercept = slope_per_hour(samples, "rss_mb")
    half = [s["t"] for s in samples if s["t"] >= samples[-1]["t"] / 2]
    ax.plot([t / 60 for t in half], [intercept + slope * t / 3600 for t in half], "--",
            label=f"fit, 2nd half: {slope:+.2f} MB/h")
    ax.set_ylabel("MB")
    ax.legend(loc="lower right")
    for ax, keys in ((axes[0][1], ("fds", "threads")), (axes[1][0], ("cgroups", "zombies"))):
        for key in keys:
            ax.plot(minutes, [s[key] for s in samples], label=key)
        ax.set_ylim(bottom=0)
        ax.legend(loc="lower right")
    ax = axes[1][1]
    ax.plot(minutes, [s["state_mb"] for s in samples], label="state dir (MB)")
    ax.plot(minutes, [s["state_files"] / 100 for s in samples], label="state dir files / 100")
    ax.legend(loc="upper left")
    ax = axes[2][0]
    for q in ("p50_ms", "p99_ms"):
        ax.plot(minutes, [s["noop"][q] for s in samples], label=f"bystander NOOP {q[:3]}")
    ax.set_yscale("log")
    ax.set_ylabel("ms")
    ax.legend(loc="upper left")
    ax = axes[2][1]
    for loop in samples[0]["loops"]:
        ax.plot(minutes, [s["loops"][loop]["p99_ms"] for s in samples], label=f"{loop} p99")
    ax.set_yscale("log")
    ax.set_ylabel("ms")
    ax.legend(loc="upper left", fontsize="small")
    for ax in axes[2]:
        ax.set_xlabel("minutes")
    failed = [row["name"] for row in goals.rows if not row["met"]]
    fig.suptitle(f"agentos soak, {minutes[-1]:.0f} min: " + (f"FAILED ({', '.join(failed)})" if failed else "passed"))
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
