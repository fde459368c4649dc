from __future__ import annotations

import pytest

from agentos.cgroups import Limits
from agentos.cgroups.limits import MAX_CPU, MAX_MEMORY, MAX_PIDS, PID_MAX_LIMIT, cpu_quota_us, pids_max


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


@pytest.mark.parametrize("fields", [
    {"cpu": float("inf")}, {"cpu": float("nan")}, {"cpu": -1.0}, {"cpu": True}, {"cpu": MAX_CPU * 2},
    {"memory": 0}, {"memory": 1.5}, {"memory": MAX_MEMORY + 1}, {"memory": "1Gi"},
    {"pids": 0}, {"pids": MAX_PIDS + 1}, {"pids": False},
])
def test_limits_no_driver_could_write_are_refused_however_they_are_built(fields: dict[str, object]) -> None:
    name = next(iter(fields))
    with pytest.raises(ValueError, match=f"limits.{name}"):
        Limits(**fields)  # type: ignore[arg-type]


def test_a_fuzzed_infinite_cpu_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="limits.cpu"):
        Limits.from_request({"cpu": 1e400})


def test_values_are_written_in_the_kernels_ranges() -> None:
    assert pids_max(MAX_PIDS) == str(PID_MAX_LIMIT) and pids_max(16) == "16"
    assert cpu_quota_us(0.5) == 50_000 and cpu_quota_us(1e-9) == 1000
