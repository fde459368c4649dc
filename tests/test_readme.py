"""README's SDK examples run as written against a real kernel (THINK served by the fake Gemini)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from agentos.testing import FakeGemini
from agentos.testing.kernel import KernelProcess

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_readme_has_sdk_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code: str, tmp_path: Path) -> None:
    with FakeGemini().running_in_thread() as fake:
        env = {"AGENTOS_GEMINI_BASE_URL": fake.url, "GEMINI_API_KEY": fake.api_key,
               "GOOGLE_API_KEY": ""}
        with KernelProcess(tmp_path / "k", env=env) as kernel:
            proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=kernel.env,
                                  capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
            assert proc.stdout.strip(), "the example printed nothing"
        assert "Traceback" not in kernel.log(), kernel.log()
