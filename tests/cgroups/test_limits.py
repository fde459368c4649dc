from __future__ import annotations

import pytest

from agentos.cgroups import Limits


def test_human_units() -> None:
    limits = Limits.from_request({"memory": "256Mi", "pids": 64, "cpu": 0.5})
    assert limits == Limits(memory=256 * 1024 * 1024, pids=64, cpu=0.5)
    assert limits.requested() == ("memory", "pids", "cpu")


def test_seed_fields() -> None:
    # The seed's names: bytes, max_pids, and cpu_quota in microseconds per 100 ms.
    limits = Limits.from_request({"memory": 64 * 1024 * 1024, "max_pids": 16, "cpu_quota": 50_000})
    assert limits == Limits(memory=64 * 1024 * 1024, pids=16, cpu=0.5)


def test_nothing_requested() -> None:
    assert Limits.from_request(None).requested() == ()
    assert Limits.from_request({}).requested() == ()


@pytest.mark.parametrize("raw, message", [
    ({"memroy": "1Gi"}, "unknown field"),
    ({"memory": "lots"}, "limits.memory"),
    ({"memory": -5}, "limits.memory"),
    ({"pids": 0}, "limits.pids"),
    ({"pids": "8"}, "limits.pids"),
    ({"pids": True}, "limits.pids"),
    ({"cpu": 0}, "limits.cpu"),
    ({"cpu": 0.5, "cpu_quota": 50000}, "not both"),
    ({"pids": 1, "max_pids": 1}, "not both"),
    ([1, 2], "expected an object"),
])
def test_bad_limits_name_the_field(raw: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Limits.from_request(raw)  # type: ignore[arg-type]
