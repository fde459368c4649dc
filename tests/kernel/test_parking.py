"""Parked threads (agentos.parking): the compiled reactor keeps the GIL in epoll_wait only while
no other thread could want it, and a thread woken by the loop still runs while the loop waits.

Each case runs in a fresh interpreter: threads other tests left in this one would change what
the reactor sees.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agentos.testing.kernel import KernelProcess
from tests.observability.test_metrics import scrape, value

_PROBE = textwrap.dedent("""
    import json, os, sys, threading, time
    from agentos.parking import ParkingExecutor, ParkingQueue
    if sys.argv[1] == "compiled":
        from agentos._fast import reactor as twin
    else:
        from agentos.kernel import reactor as twin

    reactor = twin.Reactor(lambda *a: None, lambda *a: None, lambda *a: None)

    def kept():
        # Waits that kept the GIL during one short select().
        before = reactor.waits_holding_gil
        reactor.select(0.002)
        return reactor.waits_holding_gil - before

    def eventually_kept():
        # Long for the compiled reactor (a loaded machine), short for its twin, which never keeps it.
        deadline = time.monotonic() + float(sys.argv[2])
        while time.monotonic() < deadline:
            if kept():
                return True
        return False

    seen = {"alone": kept() > 0}
    pool = ParkingExecutor(2, thread_name_prefix="probe")
    pool.submit(lambda: None).result()
    seen["idle_pool_worker"] = eventually_kept()

    # The loop wakes a parked worker just before it waits: the worker must get to run meanwhile,
    # or the loop would sleep on the GIL the worker needs to wake it.
    r, w = os.pipe()
    reactor.register(r, twin.EVENT_READ)
    pool.submit(os.write, w, b"x")
    seen["woken_worker_ran"] = bool(reactor.select(30))
    reactor.unregister(r)

    event = threading.Event()
    waiter = threading.Thread(target=event.wait)
    waiter.start()
    seen["thread_in_event_wait"] = kept() > 0
    event.set()
    waiter.join()

    queue = ParkingQueue()
    parked = threading.Thread(target=queue.get)
    parked.start()
    seen["thread_in_parking_queue"] = eventually_kept()
    queue.put("item")  # it is woken: until it took the item, it may want the GIL
    seen["item_put_not_yet_taken"] = kept() > 0
    parked.join()

    timed = threading.Thread(target=lambda: ParkingQueue().get(timeout=1))
    timed.start()
    seen["thread_in_timed_get"] = kept() > 0
    timed.join()

    left = ParkingQueue()
    left.put("nobody takes this")
    seen["item_left_in_a_queue"] = kept() > 0
    left.get()

    pool.shutdown()
    seen["after_shutdown"] = eventually_kept()
    print(json.dumps(seen))
""")


def _probe(twin: str) -> dict[str, bool]:
    env_twin = "1" if twin == "python" else "0"
    patience = "1" if twin == "python" else "30"
    done = subprocess.run([sys.executable, "-c", _PROBE, twin, patience], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "AGENTOS_NO_EXTENSIONS": env_twin})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_compiled_reactor_keeps_the_gil_only_while_every_other_thread_is_parked() -> None:
    assert _probe("compiled") == {
        "alone": True,
        "idle_pool_worker": True,
        "woken_worker_ran": True,
        "thread_in_event_wait": False,
        "thread_in_parking_queue": True,
        "item_put_not_yet_taken": False,
        "thread_in_timed_get": False,
        "item_left_in_a_queue": False,
        "after_shutdown": True,
    }


def test_python_reactor_always_releases_the_gil_and_wakes_workers() -> None:
    seen = _probe("python")
    assert seen["woken_worker_ran"] is True
    assert not any(kept for name, kept in seen.items() if name != "woken_worker_ran")


@pytest.mark.parametrize("twin", ["compiled", "python"])
def test_an_idle_kernel_waits_holding_the_gil_after_work_on_every_thread(tmp_path: Path, twin: str) -> None:
    """Every long-lived thread of a real kernel parks once idle, after work that used each
    (a sandboxed spawn: launcher owner, spare cgroups, teardown; STORE and SEND: the SQLite
    writers; AUDIT: the audit reader), so sequential NOOPs cost no GIL hand-over."""
    env = {"AGENTOS_NO_EXTENSIONS": "1" if twin == "python" else "0"}
    kernel = KernelProcess(tmp_path / "k", env=env, args=["--metrics", "127.0.0.1:0"]).start()
    try:
        with kernel.client(timeout=60) as client:
            telemetry = client.hello()["capabilities"]["telemetry"]
            agent = client.spawn("worker", command=["true"])
            client.wait(id=agent["id"], timeout=60)
            client.store("key", b"value")
            client.send(agent["id"], b"hello")
            client.audit(limit=5)
            name = "agentos_kernel_loop_waits_holding_gil_total"
            # The pure-Python twin never keeps the GIL: one round shows it.
            deadline = time.monotonic() + (60 if twin == "compiled" else 0)
            gained = 0.0
            while True:
                before = value(scrape(telemetry), name)
                for _ in range(200):
                    client.noop()
                gained = value(scrape(telemetry), name) - before
                if gained >= 100 or time.monotonic() > deadline:
                    break
    finally:
        kernel.stop_checked()
    if twin == "compiled":
        assert gained >= 100, "the kernel's threads never all parked"
    else:
        assert gained == 0
