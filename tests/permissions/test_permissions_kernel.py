"""Identity and capabilities enforced by a real kernel on clients of another uid.

The forked clients drop to uid 65534 before connecting, so SO_PEERCRED, the
guard and the audit log all see a genuinely unprivileged caller.
"""
from __future__ import annotations

import pytest

from agentos import Busy
from agentos.protocol import Op

from .identities import NOBODY, configured_kernel, run_as

LIMITED = {"permissions": {"uids": {str(NOBODY): ["message", "state_own"]}},
           "messaging": {"mailbox_size": 50}}


def test_unconfigured_uid_is_refused_and_audited() -> None:
    with configured_kernel({}, world_reachable=True) as kernel:
        result = run_as(NOBODY, kernel.socket_path, lambda c: c.hello())
        assert result["error"] == "PermissionDenied"
        assert f"uid {NOBODY} may not use this kernel" in result["message"]
        root = kernel.client()
        assert root.get_perms()["admin"] is True
        records = list(root.audit(f"uid:{NOBODY}"))
        assert [(r["op"], r["outcome"]) for r in records] == [("HELLO", "permission_denied")]


@pytest.fixture
def limited_kernel():
    with configured_kernel(LIMITED, world_reachable=True) as kernel:
        yield kernel


def test_configured_uid_gets_exactly_its_capabilities(limited_kernel) -> None:
    perms = run_as(NOBODY, limited_kernel.socket_path, lambda c: c.get_perms())["ok"]
    assert perms["capabilities"] == ["message", "state_own"]
    assert perms["admin"] is False and perms["principal"] == f"uid:{NOBODY}"

    def own_state(c):
        c.store("mine", 1)
        c.register("nobody-box")
        return c.fetch("mine")

    assert run_as(NOBODY, limited_kernel.socket_path, own_state) == {"ok": 1}


@pytest.mark.parametrize("attempt, message", [
    (lambda c: c.set_perms(["admin"], uid=NOBODY), "'admin' capability"),
    (lambda c: c.fetch("k", scope="shared"), "'state_shared' capability"),
    (lambda c: c.fetch("secret", agent="uid:0"), "only an admin may use another agent's state"),
    (lambda c: c.http("http://127.0.0.1:9/"), "'http' capability"),
    (lambda c: c.publish("agent.exited", {"id": "forged"}), "system topic"),
    (lambda c: list(c.audit()), "'admin' capability"),
    (lambda c: c._call(Op.SPAWN, {"command": ["true"]}), "'spawn' capability"),
    (lambda c: c._call(Op.KILL, {"name": "anything"}), "'kill' capability"),
    (lambda c: c.get_perms(agent="someone"), "only an admin"),
], ids=["raise-own-perms", "shared-state", "another-agents-state", "http", "forge-lifecycle",
        "audit", "spawn", "kill", "others-perms"])
def test_adversarial_calls_are_refused_and_kernel_unharmed(limited_kernel, attempt, message) -> None:
    root = limited_kernel.client()
    root.store("secret", "root's")
    result = run_as(NOBODY, limited_kernel.socket_path, attempt)
    assert result.get("error") == "PermissionDenied", result
    assert message in result["message"]
    assert root.fetch("secret") == "root's"
    assert root.get_perms()["admin"] is True
    # The attempt is in the audit log as a denial, payload-free: at most its identifying
    # arguments (tests/permissions/test_audit_arguments.py checks which).
    denied = [r for r in root.audit(f"uid:{NOBODY}") if r["outcome"] == "permission_denied"]
    assert denied and set(denied[-1]) - {"args"} == {"ts", "agent", "name", "uid", "pid", "op",
                                                     "outcome", "latency_ms"}


def test_admin_grants_and_revokes_at_runtime(limited_kernel) -> None:
    root = limited_kernel.client()
    assert root.set_perms(["message", "state"], uid=NOBODY)["capabilities"] == [
        "message", "state_own", "state_shared"]
    assert run_as(NOBODY, limited_kernel.socket_path,
                  lambda c: c.store("k", 1, scope="shared")) == {"ok": 1}
    root.set_perms([], uid=NOBODY)
    result = run_as(NOBODY, limited_kernel.socket_path, lambda c: c.store("k", 2))
    assert result["error"] == "PermissionDenied"
    assert root.fetch("k", scope="shared") == 1


def test_flooding_a_mailbox_is_refused_to_the_sender(limited_kernel) -> None:
    root = limited_kernel.client()
    root.register("victim")

    def flood(c):
        sent = 0
        for n in range(51):
            try:
                c.send("victim", n)
                sent += 1
            except Busy as exc:  # the 51st
                return {"sent": sent, "error": type(exc).__name__}
        return {"sent": sent}

    result = run_as(NOBODY, limited_kernel.socket_path, flood)["ok"]
    assert result == {"sent": 50, "error": "Busy"}
    first = root.recv(timeout=0, name="victim")
    assert first["from"] == f"uid:{NOBODY}" and first["body"] == 0
    assert root.hello()["version"]
