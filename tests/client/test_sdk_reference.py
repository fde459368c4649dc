"""docs/sdk.md is what ``python -m agentos.client.reference`` renders from the SDK, and the
SDK documents every public member it shows."""
from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from agentos import AsyncClient, Client
from agentos.client import reference
from agentos.client._async_api import AsyncSandbox

PAGE = Path(__file__).resolve().parents[2] / "docs" / "sdk.md"
#: Everything the page lists members of (the async twins too: their docstrings are read
#: by editors and ``help()``).
DOCUMENTED = [Client, AsyncClient, AsyncSandbox, *(cls for _, _, types in reference.AREAS for cls in types)]


def test_docs_sdk_md_is_current() -> None:
    assert PAGE.read_text() == reference.render(), \
        "docs/sdk.md is out of date: run `python -m agentos.client.reference --write docs/sdk.md`"


def test_the_command_writes_the_page(tmp_path: Path) -> None:
    out = tmp_path / "sdk.md"
    done = subprocess.run([sys.executable, "-m", "agentos.client.reference", "--write", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert out.read_text() == reference.render()


@pytest.mark.parametrize("cls", DOCUMENTED, ids=lambda cls: cls.__name__)
def test_every_public_member_has_a_docstring(cls: type) -> None:
    members = reference.public_members(cls)
    missing = [name for name, member in members.items()
               if not inspect.getdoc(member if isinstance(member, property) else getattr(cls, name))]
    assert missing == [], f"{cls.__name__}: no docstring on {missing}"


def test_every_client_method_is_on_the_page_in_its_area() -> None:
    page = reference.render()
    for name, member in reference.public_members(Client).items():
        owner = "Client" if isinstance(member, classmethod) else "client"
        assert f"### `{owner}.{name}`\n" in page, name
    areas = page.split("\n## ")
    processes = next(area for area in areas if area.startswith("Processes\n"))
    assert "`client.spawn`" in processes and "- `idle_timeout`: " in processes
    llm = next(area for area in areas if area.startswith("LLM\n"))
    assert "`client.think_stream`" in llm and "### `ThinkReply`" in llm and "*async: `AsyncThinkStream`*" in llm
    events = next(area for area in areas if area.startswith("Events\n"))
    assert "`client.subscribe`" in events and "### `Subscription`" in events
    assert "| `InvalidArgument` | `SyscallError` | `invalid_argument` |" in page


def test_a_section_without_an_area_fails_the_rendering(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reference, "AREAS", reference.AREAS[1:])
    with pytest.raises(ValueError, match=r"no place in reference.AREAS: \['core', 'the transport'\]"):
        reference.render()
