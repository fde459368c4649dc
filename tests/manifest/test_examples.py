"""Every example manifest under agents/ loads, and what it produces is accepted by the subsystems it feeds."""
from __future__ import annotations

from pathlib import Path

import pytest

from agentos.cgroups.limits import Limits as CgroupLimits
from agentos.llm.config import LLMConfig
from agentos.manifest import load
from agentos.permissions import parse_capabilities

AGENTS_DIR = Path(__file__).resolve().parents[2] / "agents"
EXAMPLES = sorted(AGENTS_DIR.glob("**/*.yaml"))


def test_the_examples_are_found() -> None:
    assert AGENTS_DIR / "examples" / "team.yaml" in EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(AGENTS_DIR)))
def test_example_manifest_is_valid(path: Path) -> None:
    manifest = load(path)
    assert manifest.agents
    requests = list(manifest.spawn_requests())
    assert len(requests) == sum(spec.replicas for spec in manifest.agents)
    for request in requests:
        if "script" in request:
            assert Path(request["script"]).is_absolute()
        CgroupLimits.from_request(request["limits"])
        parse_capabilities(request["capabilities"])
    LLMConfig.from_section(manifest.kernel_config().section("llm"), environ={})
