"""Restart policies: parsing SPAWN's ``restart``, which endings restart, backoff and escalation."""
from __future__ import annotations

import pytest

from agentos.supervision import RestartHistory, RestartPolicy


def test_absent_means_never() -> None:
    assert RestartPolicy.from_request(None) == RestartPolicy(policy="never")


def test_durations_take_units() -> None:
    policy = RestartPolicy.from_request({"policy": "always", "max_restarts": 2, "window": "2m",
                                         "backoff": "250ms", "backoff_max": 4})
    assert policy == RestartPolicy("always", 2, 120.0, 0.25, 4.0)


@pytest.mark.parametrize(("raw", "message"), [
    ([], "restart: expected an object, got list"),
    ({"polcy": "always"}, ("restart: unknown field(s) ['polcy']; known: ['policy', 'max_restarts', 'window', "
                          "'backoff', 'backoff_max']")),
    ({"policy": "sometimes"}, "restart.policy: 'sometimes' is not one of never, on-failure, always"),
    ({"max_restarts": 0}, "restart.max_restarts: expected a positive integer, got 0"),
    ({"max_restarts": True}, "restart.max_restarts: expected a positive integer, got True"),
    ({"window": 0}, "restart.window: must be longer than 0"),
    ({"backoff": "soon"}, "restart.backoff: 'soon' is not a duration (examples: 30s, 250ms, 5m)"),
    ({"backoff": 10, "backoff_max": 5}, "restart.backoff_max: must be at least restart.backoff"),
])
def test_bad_requests_name_the_field(raw: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        RestartPolicy.from_request(raw)  # type: ignore[arg-type]
    assert str(info.value) == message


@pytest.mark.parametrize(("policy", "restarted"), [
    ("never", set()),
    ("on-failure", {"failed", "oom_killed"}),
    ("always", {"exited", "failed", "oom_killed"}),
])
def test_which_endings_restart(policy: str, restarted: set[str]) -> None:
    # A clean exit is not a failure, and an agent someone killed is never restarted.
    endings = {"exited", "failed", "oom_killed", "killed"}
    assert {s for s in endings if RestartPolicy(policy).restarts_after(s)} == restarted


def test_backoff_doubles_to_the_cap_then_escalates() -> None:
    history = RestartHistory(RestartPolicy("always", max_restarts=8, window=1000.0, backoff=1.0, backoff_max=60.0))
    delays = [history.next_delay(float(t)) for t in range(9)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, None]
    assert history.total == 8


def test_restarts_leave_the_window() -> None:
    history = RestartHistory(RestartPolicy("on-failure", max_restarts=2, window=10.0, backoff=0.5, backoff_max=60.0))
    assert [history.next_delay(t) for t in (0.0, 1.0, 2.0)] == [0.5, 1.0, None]
    # At t=10.5 the restart at t=0 has left the window: one restart back, so the delay halves.
    assert history.next_delay(10.5) == 1.0
    assert history.recent == 2 and history.total == 3
    # Long after, the agent starts over from the base delay.
    assert history.next_delay(100.0) == 0.5


def test_huge_limits_do_not_overflow() -> None:
    history = RestartHistory(RestartPolicy("always", max_restarts=10**6, window=1e9, backoff=1.0, backoff_max=60.0))
    assert [history.next_delay(float(t)) for t in range(2000)][-1] == 60.0
