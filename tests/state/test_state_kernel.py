"""STORE/FETCH/DELETE/KEYS/CAS through a real kernel, and state surviving restarts."""
from __future__ import annotations

import time

import pytest

from agentos import InvalidArgument, NotFound, TooLarge
from agentos.client.state import ABSENT


def test_round_trip_scopes_and_errors(kernel) -> None:
    c = kernel.client()
    assert c.store("cfg/a", {"depth": 3}) == 1
    assert c.store("cfg/a", {"depth": 4}) == 2
    c.store("cfg/b", [1, "two", None])
    c.store("other", True)
    assert c.fetch("cfg/a") == {"depth": 4}
    assert c.keys("cfg/") == ["cfg/a", "cfg/b"]
    # The shared scope is a different namespace.
    with pytest.raises(NotFound, match="cfg/a"):
        c.fetch("cfg/a", scope="shared")
    c.store("cfg/a", "shared value", scope="shared")
    assert c.fetch("cfg/a", scope="shared") == "shared value"
    assert c.fetch("cfg/a") == {"depth": 4}
    assert c.delete("cfg/b") is True
    assert c.delete("cfg/b") is False
    assert c.keys() == ["cfg/a", "other"]
    with pytest.raises(InvalidArgument, match="scope"):
        c._call(0x30, {"key": "k", "value": 1, "scope": "everyone"})
    with pytest.raises(InvalidArgument, match="value"):
        c._call(0x30, {"key": "k"})
    with pytest.raises(TooLarge):
        c.store("big", "x" * (2 * 1024 * 1024))
    assert c.hello()["version"]  # the kernel is unharmed


def test_cas(kernel) -> None:
    c = kernel.client()
    assert c.cas("lock", ABSENT, {"owner": "me"}) is True
    assert c.cas("lock", ABSENT, {"owner": "you"}) is False
    assert c.cas("lock", {"owner": "you"}, {"owner": "x"}) is False
    assert c.cas("lock", {"owner": "me"}, None) is True
    assert c.fetch("lock") is None


def test_ttl_expires(kernel) -> None:
    c = kernel.client()
    c.store("brief", 1, ttl=0.3)
    c.store("long", 1, ttl=3600)
    assert c.fetch("brief") == 1
    time.sleep(0.5)  # waiting out the TTL, not measuring speed
    with pytest.raises(NotFound):
        c.fetch("brief")
    assert c.keys() == ["long"]


def test_state_survives_a_kernel_restart(kernel) -> None:
    c = kernel.client()
    c.store("kept", {"n": 1})
    c.store("kept", {"n": 2}, scope="shared")
    kernel.restart()
    c = kernel.client()
    assert c.fetch("kept") == {"n": 1}
    assert c.fetch("kept", scope="shared") == {"n": 2}
    assert c.store("kept", {"n": 3}) == 2, "versions continue after a restart"
