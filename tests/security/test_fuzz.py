"""A short run of the fuzzer (fuzz.py) against each kernel mode: junk of every shape to every
opcode over several connections. The 10^6-frame run is ``python -m tests.security.fuzz``."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import HostileKernel, Users, hostile_kernel_in
from .fuzz import Report, fuzz

FRAMES = 20_000


@pytest.fixture(scope="module")
def fuzzed(kernel_mode: str, users: Users, scripts: Path) -> Iterator[tuple[HostileKernel, Report]]:
    with hostile_kernel_in(kernel_mode, users, scripts, allow_tracebacks=True, api_key="") as kernel:
        yield kernel, fuzz(str(kernel.process.socket_path), FRAMES, seed=9)


def test_kernel_survives_the_fuzz(fuzzed: tuple[HostileKernel, Report]) -> None:
    kernel, report = fuzzed
    assert report.sent == FRAMES
    assert not report.kernel_crashed and report.disconnects == 0
    assert kernel.alive()


def test_every_request_ends_with_exactly_one_final_frame(fuzzed: tuple[HostileKernel, Report]) -> None:
    _, report = fuzzed
    assert dict(report.unanswered) == {}
    assert report.extra_frames == 0


def test_kernel_fds_and_memory_back_near_baseline(fuzzed: tuple[HostileKernel, Report]) -> None:
    _, report = fuzzed
    assert report.fds_after <= report.fds_before
    assert report.rss_after - report.rss_before < 48 * 1024 * 1024


def test_no_input_is_answered_internal(fuzzed: tuple[HostileKernel, Report]) -> None:
    _, report = fuzzed
    assert dict(report.internal) == {}, report.summary()["replies_by_opcode"]
