"""Mail that cannot crash-loop: delivery counts, dead letters and requeueing through a real
kernel, its SDK, its CLI and a real agent under a restart policy."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentos import InvalidArgument, PermissionDenied, Timeout
from agentos.testing.kernel import KernelProcess

from .test_names import run_agent

POISON_EATER = str(Path(__file__).with_name("agents") / "poison_eater.py")


def kill_by_recv(kernel: KernelProcess, name: str, times: int) -> None:
    """``times`` receivers that each get the next message of ``name`` and never ACK it (each a
    fresh connection: an agent that crashed and was restarted)."""
    for _ in range(times):
        with kernel.client() as c:
            c.recv(timeout=5, name=name, max_deliveries=times)


def test_deliveries_are_counted_and_a_message_dies_after_max_deliveries(kernel) -> None:
    c = kernel.client()
    c.register("box")
    poison = c.send("box", {"code": "while True: fork()"})
    healthy = c.send("box", "fine")
    seen = []
    for _ in range(3):
        with kernel.client() as reader:
            got = reader.recv(timeout=5, name="box", max_deliveries=3)
            seen.append((got["id"], got["deliveries"]))
    assert seen == [(poison, 1), (poison, 2), (poison, 3)]
    with kernel.client() as reader:
        after = reader.recv(timeout=5, name="box", max_deliveries=3)
    assert (after["id"], after["deliveries"]) == (healthy, 1), "the next message comes instead"
    listed = c.dead_letters(name="box")
    assert listed["more"] is False
    [dead] = listed["dead"]
    assert (dead["id"], dead["to"], dead["from"], dead["deliveries"], dead["body"]) == (
        poison, "name:box", "uid:0", 3, {"code": "while True: fork()"})
    assert c.dead_letters()["dead"] == [], "the caller's own mailbox (uid:0) has none"
    assert [d["id"] for d in c.dead_letters("*")["dead"]] == [poison]


def test_requeue_resets_the_count_and_drop_deletes(kernel) -> None:
    c = kernel.client()
    c.register("box")
    first, second = c.send("box", 1), c.send("box", 2)
    with kernel.client() as reader:
        reader.recv(timeout=5, name="box", max_deliveries=1)
        reader.recv(timeout=5, name="box", max_deliveries=1)
    with kernel.client() as reader, pytest.raises(Timeout):
        reader.recv(timeout=0, name="box", max_deliveries=1)
    assert [d["id"] for d in c.dead_letters(name="box")["dead"]] == [first, second]

    # A reader waiting on the mailbox is woken by the requeue.
    waiting = kernel.client()
    reply = c.requeue(first, 999_999)
    [moved] = reply["requeued"]
    assert (moved["id"], moved["to"], reply["missing"], reply["full"]) == (first, "name:box", [999_999], [])
    got = waiting.recv(timeout=30, name="box")
    assert (got["id"], got["body"], got["deliveries"]) == (moved["new_id"], 1, 1)
    assert c.drop_dead_letters(second, first) == [second]
    assert c.dead_letters(name="box")["dead"] == []
    with pytest.raises(InvalidArgument):
        c.requeue()


def test_dead_letters_survive_a_kernel_restart(kernel) -> None:
    c = kernel.client()
    c.register("box")
    poison = c.send("box", "poison")
    kept = c.send("box", "kept")
    kill_by_recv(kernel, "box", 2)
    with kernel.client() as reader:
        assert reader.recv(timeout=5, name="box", max_deliveries=2)["id"] == kept
    kernel.restart()
    c = kernel.client()
    assert [d["id"] for d in c.dead_letters(name="box")["dead"]] == [poison]
    again = c.recv(timeout=5, name="box", max_deliveries=2)
    assert (again["id"], again["deliveries"]) == (kept, 2), "the count survived too"


def test_a_poison_message_cannot_crash_loop_its_agent(tmp_path: Path) -> None:
    """The code runner of issue 11: a message that kills its agent every time used to be
    redelivered after every restart until the supervisor gave up on the agent."""
    manifest = tmp_path / "kernel.yaml"
    manifest.write_text("version: 1\nkernel:\n  messaging: {max_deliveries: 3}\n"
                        "agents:\n  unused: {command: [sh, -c, 'true']}\n")
    with KernelProcess(tmp_path / "k", args=["--manifest", str(manifest)]) as kernel:
        root = kernel.client()
        assert root.hello()["capabilities"]["messaging"]["max_deliveries"] == 3
        root.register("results")
        with root.subscribe("agent.*") as events:
            root.spawn("runner", POISON_EATER, sandboxed=False,
                       restart={"policy": "on-failure", "max_restarts": 10, "window": "1h",
                                "backoff": "10ms", "backoff_max": "10ms"})
            poison = root.send("runner", "poison")
            root.send("runner", "job-1")
            root.send("runner", "job-2")
            handled = [root.recv(timeout=120, name="results", ack=True)["body"] for _ in range(2)]
            assert handled == [{"handled": "job-1", "deliveries": 1},
                               {"handled": "job-2", "deliveries": 1}]
            root.send("runner", "stop")
            assert root.wait("runner", timeout=60)["exit_code"] == 0, root.logs("runner")
            topics = []
            for event in events:
                if event.get("name") == "runner":
                    topics.append(event["topic"])
                    if event["topic"] == "agent.exited" and topics.count("agent.started") == 4:
                        break
        assert topics.count("agent.restarted") == 3, topics
        assert "agent.given_up" not in topics, "the supervisor never gave up on it"
        [dead] = root.dead_letters("runner")["dead"]
        assert (dead["id"], dead["body"], dead["deliveries"], dead["to"]) == (
            poison, "poison", 3, "uid:0/runner")
        assert "dead letter after 3 deliveries" in kernel.log()


def test_only_a_mailboxs_owner_or_an_admin_sees_its_dead_letters(kernel) -> None:
    root = kernel.client()
    run_agent(root, "victim", "ready")
    secret = root.send("victim", "secret")
    assert run_agent(root, "victim", "take=30")["take=30"]["ok"]["id"] == secret
    assert run_agent(root, "victim", "take=0")["take=0"]["error"] == "Timeout"

    thief = run_agent(root, "thief", "dead=victim", "dead=uid:0/victim", "dead=*", "dead=",
                      f"requeue={secret}", f"drop={secret}")
    for step in ("dead=victim", "dead=uid:0/victim"):
        assert thief[step]["error"] == "PermissionDenied", thief
        assert thief[step]["details"]["field"] == "mailbox"
    assert thief["dead=*"]["ok"]["dead"] == [] and thief["dead="]["ok"]["dead"] == []
    assert thief[f"requeue={secret}"]["ok"]["missing"] == [secret]
    assert thief[f"drop={secret}"]["ok"] == []

    assert [d["id"] for d in root.dead_letters("victim")["dead"]] == [secret], "an admin sees it"
    owner = run_agent(root, "victim", "dead=", f"requeue={secret}", "take=30")
    assert [d["body"] for d in owner["dead="]["ok"]["dead"]] == ["secret"]
    assert owner[f"requeue={secret}"]["ok"]["requeued"][0]["id"] == secret
    assert owner["take=30"]["ok"]["body"] == "secret"
    assert owner["take=30"]["ok"]["deliveries"] == 1


def mail(kernel: KernelProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agentos", "mail", *args, "--socket",
                           str(kernel.socket_path)], capture_output=True, text=True, timeout=60)


def test_cli_lists_requeues_and_drops_dead_letters(kernel) -> None:
    c = kernel.client()
    c.register("box")
    assert mail(kernel, "dead").stdout == "no dead letters\n"
    first, second = c.send("box", {"n": 1}), c.send("box", {"n": 2})
    kill_by_recv(kernel, "box", 1)
    with kernel.client() as reader:
        reader.recv(timeout=5, name="box", max_deliveries=1)
    with kernel.client() as reader, pytest.raises(Timeout):
        reader.recv(timeout=0, name="box", max_deliveries=1)

    listed = mail(kernel, "dead")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["ID", "TO", "FROM", "DELIVERIES", "DIED", "BODY"]
    assert [row.split()[:4] for row in rows] == [[str(first), "name:box", "uid:0", "1"],
                                                 [str(second), "name:box", "uid:0", "1"]]
    as_json: list[dict[str, Any]] = json.loads(mail(kernel, "dead", "box", "--json").stdout)
    assert [d["body"] for d in as_json] == [{"n": 1}, {"n": 2}]

    requeued = mail(kernel, "requeue", str(first), "424242")
    assert requeued.returncode == 1
    assert requeued.stdout.startswith(f"{first} requeued to name:box as ")
    assert "424242: no dead letter of yours has this id" in requeued.stderr
    assert c.recv(timeout=5, name="box")["body"] == {"n": 1}
    dropped = mail(kernel, "drop", str(second))
    assert (dropped.returncode, dropped.stdout) == (0, f"{second} dropped\n")
    assert mail(kernel, "dead", "box").stdout == "no dead letters\n"
    unknown = mail(kernel, "dead", "nobody")
    assert unknown.returncode == 1 and "nobody" in unknown.stderr


def test_bad_dead_letter_calls_are_refused(kernel) -> None:
    root = kernel.client()
    with pytest.raises(InvalidArgument):
        root.dead_letters(limit=0)
    with pytest.raises(PermissionDenied):
        root.dead_letters(name="never-registered")
