"""The capability table on its own: admission, spawn narrowing, kill lineage, the opcode policy."""
from __future__ import annotations

import os

import pytest

from agentos.errors import InvalidArgument, NotFound, PermissionDenied
from agentos.kernel.identity import Identity
from agentos.permissions import Capability, Permissions, parse_capabilities
from agentos.permissions.policy import required_capability, state_scope
from agentos.protocol import Op
from agentos.protocol.requests import decode_request

ROOT = Identity(pid=1, uid=0, gid=0, admin=True)
STRANGER = Identity(pid=2, uid=54321, gid=54321)


def agent(agent_id: str) -> Identity:
    return Identity(pid=100, uid=os.geteuid(), gid=0, agent_id=agent_id)


def spawn(perms: Permissions, parent: Identity, agent_id: str, requested=None) -> Identity:
    caps = perms.child_capabilities(parent, requested)
    perms.register_agent(agent_id, caps, parent, name=f"name-{agent_id}")
    return agent(agent_id)


def test_outside_uids_admin_configured_or_refused() -> None:
    perms = Permissions(uid_capabilities={1001: parse_capabilities(["think"])})
    assert perms.is_admin(ROOT)
    assert perms.is_admin(Identity(pid=3, uid=os.geteuid(), gid=0))
    assert perms.capabilities_of(Identity(pid=4, uid=1001, gid=0)) == {Capability.THINK}
    with pytest.raises(PermissionDenied, match="uid 54321 may not use this kernel"):
        perms.capabilities_of(STRANGER)
    perms.set_uid(54321, ["message"])
    assert perms.capabilities_of(STRANGER) == {Capability.MESSAGE}


def test_config_section_is_parsed_and_validated() -> None:
    perms = Permissions.from_section({"admin_uids": [1500], "uids": {"1600": ["state", "http"]},
                                      "default_child": ["think"]})
    assert perms.is_admin(Identity(pid=1, uid=1500, gid=0))
    assert perms.capabilities_of(Identity(pid=1, uid=1600, gid=0)) == {
        Capability.STATE_OWN, Capability.STATE_SHARED, Capability.HTTP}
    assert perms.child_capabilities(ROOT, None) == {Capability.THINK}
    with pytest.raises(InvalidArgument, match="unknown capability 'fly'"):
        Permissions.from_section({"uids": {"1600": ["fly"]}})
    with pytest.raises(ValueError, match="not a uid"):
        Permissions.from_section({"admin_uids": ["bob"]})


def test_a_child_never_gets_more_than_its_parent() -> None:
    perms = Permissions()
    parent = spawn(perms, ROOT, "p", ["think", "spawn", "message"])
    assert perms.child_capabilities(parent, None) == {Capability.THINK, Capability.MESSAGE}
    assert perms.child_capabilities(parent, ["think"]) == {Capability.THINK}
    with pytest.raises(PermissionDenied, match="cannot give a child http") as exc:
        perms.child_capabilities(parent, ["think", "http"])
    assert exc.value.details["capabilities"] == ["http"]
    with pytest.raises(PermissionDenied, match="admin"):
        perms.child_capabilities(parent, ["admin"])
    with pytest.raises(InvalidArgument):
        perms.child_capabilities(parent, "think")
    # An admin may grant anything, admin included.
    assert Capability.ADMIN in perms.child_capabilities(ROOT, ["admin"])


def test_unregistered_agent_holds_nothing() -> None:
    perms = Permissions()
    ghost = agent("ghost")
    assert perms.capabilities_of(ghost) == frozenset()
    with pytest.raises(PermissionDenied, match="lacks the 'message' capability"):
        perms.require(ghost, Capability.MESSAGE)


def test_kill_only_descendants() -> None:
    perms = Permissions()
    a = spawn(perms, ROOT, "a", ["spawn", "kill", "think"])
    b = spawn(perms, a, "b", ["spawn", "kill"])
    c = spawn(perms, b, "c", [])
    other = spawn(perms, ROOT, "other", ["kill"])
    perms.check_kill(a, "b")
    perms.check_kill(a, "c")  # grandchild
    perms.check_kill(b, "c")
    perms.check_kill(ROOT, "a")
    for killer, target in [(b, "a"), (c, "b"), (other, "a"), (other, "c"), (a, "a"), (a, "other")]:
        with pytest.raises(PermissionDenied):
            perms.check_kill(killer, target)
    with pytest.raises(PermissionDenied, match="lacks the 'kill' capability"):
        perms.check_kill(c, "c")


def test_set_and_describe() -> None:
    perms = Permissions()
    a = spawn(perms, ROOT, "a", ["think"])
    assert perms.describe(a) == {"principal": "uid:0/name-a", "agent": "a", "name": "name-a",
                                 "uid": None, "parent": "uid:0", "admin": False,
                                 "capabilities": ["think"]}
    perms.set_agent("a", ["think", "http"])
    assert perms.describe(a)["capabilities"] == ["http", "think"]
    perms.set_agent("a", ["admin"])
    assert perms.describe(a)["admin"] and perms.is_admin(a)
    with pytest.raises(NotFound):
        perms.set_agent("nobody", ["think"])
    with pytest.raises(InvalidArgument, match="admin uid"):
        perms.set_uid(0, ["think"])
    assert perms.id_of("name-a") == "a" and perms.name_of("a") == "name-a"
    perms.forget_agent("a")
    assert perms.capabilities_of(a) == frozenset()


@pytest.mark.parametrize("op, request_, needed", [
    (Op.NOOP, None, None), (Op.HELLO, None, None), (Op.GET_PERMS, None, None),
    (Op.THINK, None, Capability.THINK), (Op.SPAWN, None, Capability.SPAWN),
    (Op.KILL, None, Capability.KILL), (Op.SEND, None, Capability.MESSAGE),
    (Op.SUBSCRIBE, None, Capability.MESSAGE), (Op.SET_PERMS, None, Capability.ADMIN),
    (Op.HTTP, None, Capability.HTTP), (Op.AUDIT, None, Capability.ADMIN),
    (Op.STORE, b'{"key": "k", "value": 1}', Capability.STATE_OWN),
    (Op.FETCH, b'{"key": "k", "scope": "own"}', Capability.STATE_OWN),
    (Op.CAS, b'{"key": "k", "value": 1, "scope": "shared"}', Capability.STATE_SHARED),
    (0xEE, None, Capability.ADMIN),
])
def test_policy_table(op: int, request_: bytes | None, needed) -> None:
    # A state syscall's scope comes from its decoded request, as the guard reads it.
    scope = state_scope(decode_request(op, request_)) if request_ is not None else "own"
    assert required_capability(op, scope) == needed


def test_every_opcode_has_a_decided_policy() -> None:
    from agentos.permissions.policy import OPEN, REQUIRED, STATE_OPS
    assert set(Op) == set(OPEN) | set(REQUIRED) | set(STATE_OPS)


def test_bad_scope_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="scope"):
        required_capability(Op.STORE, "everyone")


def test_principal_is_the_spawn_path_and_survives_a_restart() -> None:
    perms = Permissions()
    team = spawn(perms, ROOT, "t1", ["spawn", "message"])
    worker = spawn(perms, team, "w1")
    assert perms.principal(worker) == "uid:0/name-t1/name-w1"
    assert perms.principal(ROOT) == "uid:0"
    # Restarted by the same spawner under the same name: a new id, the same principal.
    perms.register_agent("w2", perms.child_capabilities(team, None), team, name="name-w1")
    assert perms.principal(agent("w2")) == perms.principal(worker)
    assert perms.find_path("uid:0/name-t1/name-w1") == "w2"
    # A same-named child of another spawner is someone else.
    other = spawn(perms, ROOT, "o1", ["spawn"])
    perms.register_agent("w3", [], other, name="name-w1")
    assert perms.principal(agent("w3")) == "uid:0/name-o1/name-w1"
