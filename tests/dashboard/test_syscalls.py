"""What the dashboard reads from the kernel besides LIST and USAGE, without a browser: LIST's
``include: ["isolation"]`` and DEAD_LETTERS' ``stats`` (mailbox depths), each as a user may see
them, refusals naming their field."""
from __future__ import annotations

import pytest

from agentos import Client, InvalidArgument
from tests.permissions.identities import NOBODY, configured_kernel, run_as


def test_list_carries_isolation_only_when_asked() -> None:
    sections = {"permissions": {"uids": {str(NOBODY): ["observe", "spawn"]}}}
    with configured_kernel(sections, world_reachable=True) as kernel:
        with kernel.client(timeout=60) as client:
            spawned = client.spawn("boxed", command=["sleep", "60"])
            [plain] = client.list_agents(name="boxed")
            [detailed] = client.list_agents(name="boxed", include=["isolation"])
            assert "isolation" not in plain
            assert detailed["isolation"] == spawned["isolation"] and "sandbox" in detailed["isolation"]
            assert {k: v for k, v in detailed.items() if k not in ("isolation", "usage", "usage_age")} == {
                k: v for k, v in plain.items() if k not in ("usage", "usage_age")}
            for bad in (["spec"], "isolation", [1]):
                with pytest.raises(InvalidArgument) as refused:
                    client._call(0x12, {"include": bad})  # noqa: SLF001 - the SDK sends only valid ones
                assert refused.value.details["field"].startswith("include"), refused.value.details
            # Another user who may observe every agent sees root's, but not how it is held (its
            # volumes and workspace are in it, as in the SPAWN request only spawners see); its own, yes.
            seen = run_as(NOBODY, kernel.socket_path, lambda c: [
                c.spawn("own", command=["true"]), c.list_agents(include=["isolation"])])["ok"][1]
            by_name = {agent["name"]: agent for agent in seen}
            assert "isolation" not in by_name["boxed"] and "spec" not in by_name["boxed"]
            assert "sandbox" in by_name["own"]["isolation"]
            client.kill(id=spawned["id"], grace=0)


def test_mailbox_stats_count_what_waits_for_whom_may_see_it() -> None:
    sections = {"permissions": {"uids": {str(NOBODY): ["message", "spawn"]}}}
    with configured_kernel(sections, world_reachable=True) as kernel, \
            Client(kernel.socket_path, timeout=60) as client:
        inbox = client.spawn("inbox", command=["sleep", "60"])
        other = client.spawn("other", command=["sleep", "60"])
        for n in range(3):
            client.send("inbox", {"n": n})
        client.send("other", {"n": 0})
        stats = client.mailbox_stats()  # root is an admin: every mailbox
        depths = {m["mailbox"]: (m["depth"], m["dead"]) for m in stats["mailboxes"]}
        assert sorted(depths.values()) == [(1, 0), (3, 0)] and stats["more"] is False
        assert [m["depth"] for m in stats["mailboxes"]] == [3, 1]  # deepest first
        limited = client.mailbox_stats(limit=1)
        assert [m["depth"] for m in limited["mailboxes"]] == [3] and limited["more"] is True
        [only] = client.mailbox_stats("inbox")["mailboxes"]
        assert only["depth"] == 3
        with pytest.raises(InvalidArgument) as refused:
            client.mailbox_stats(limit=0)
        assert refused.value.details["field"] == "limit"

        # Another user sees only the mailboxes it manages: none of root's.
        assert run_as(NOBODY, kernel.socket_path, lambda c: c.mailbox_stats()) == {
            "ok": {"mailboxes": [], "more": False}}
        refusal = run_as(NOBODY, kernel.socket_path, lambda c: c.mailbox_stats("inbox"))
        assert refusal["code"] == "permission_denied", refusal
        for agent in (inbox, other):
            client.kill(id=agent["id"], grace=0)
