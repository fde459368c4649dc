"""docs/manifest.md stays true: its reference is the schema's, and its YAML examples are valid manifests."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from agentos.manifest import loads
from agentos.manifest.schema import reference_markdown

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "manifest.md").read_text()
YAML_BLOCKS = re.findall(r"```yaml\n(.*?)```", DOC, re.DOTALL)


def test_reference_is_generated_from_the_schema() -> None:
    reference = DOC.split("<!-- reference:start -->\n", 1)[1].split("<!-- reference:end -->", 1)[0]
    assert reference.strip() == reference_markdown().strip(), (
        "docs/manifest.md is out of date: paste `python -m agentos.manifest.schema` between the reference markers")


def test_every_schema_key_is_in_the_reference() -> None:
    from agentos.manifest.schema import SECTIONS
    for section in SECTIONS:
        for field in section.fields:
            assert f"| `{field.key}`" in DOC, f"{section.path}.{field.key}"


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=[f"block{i}" for i in range(len(YAML_BLOCKS))])
def test_yaml_examples_are_valid_next_to_the_example_agents(block: str) -> None:
    # The examples name agents/examples/hello_agent.py, so they are read as if saved there.
    dedented = "\n".join(line[2:] if line.startswith("  ") and block.startswith("  ") else line
                         for line in block.splitlines())
    manifest = loads(dedented, ROOT / "agents" / "examples" / "doc.yaml")
    assert manifest.agents
