"""A manifest's per-agent ``egress``: checked entry by entry with file:line, canonical, and
sent as SPAWN's ``egress`` (absent: the agent inherits the kernel's list)."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from agentos.manifest import Manifest, ManifestError, load


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "agent.py").write_text("print('hello')\n")
    path = tmp_path / "m.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def valid(tmp_path: Path, text: str) -> Manifest:
    return load(write(tmp_path, text))


def errors(tmp_path: Path, text: str) -> list[tuple[int, int, str, str]]:
    path = write(tmp_path, text)
    with pytest.raises(ManifestError) as info:
        load(path)
    assert all(p.mark.file == str(path) for p in info.value.problems)
    return [(p.mark.line, p.mark.column, p.message, p.fix) for p in info.value.problems]


FORMS = ("write a host (example.com), host:port, *.example.com, an IP address, or a CIDR block "
         "(10.0.0.0/8), each optionally with :port")


def test_egress_goes_to_spawn_canonical(tmp_path: Path) -> None:
    manifest = valid(tmp_path, """\
        agents:
          fetcher:
            script: agent.py
            permissions: [http]
            egress: [Docs.Example.com., "*.api.test:443", "[::1]:8080", 10.0.0.0/8]
          plain: {script: agent.py}
        """)
    fetcher, plain = manifest.agents
    assert fetcher.egress == ("docs.example.com", "*.api.test:443", "[::1]:8080", "10.0.0.0/8")
    assert fetcher.to_spawn_request()["egress"] == list(fetcher.egress)
    assert plain.egress is None and "egress" not in plain.to_spawn_request()


def test_an_empty_list_means_no_egress_at_all(tmp_path: Path) -> None:
    spec = valid(tmp_path, "agents: {a: {script: agent.py, permissions: [http], egress: []}}\n").agents[0]
    assert spec.to_spawn_request()["egress"] == []


def test_bad_entries_are_reported_where_they_are(tmp_path: Path) -> None:
    assert errors(tmp_path, """\
        agents:
          a:
            script: agent.py
            permissions: [http, think]
            egress:
              - example.com
              - http://example.com/
              - "127.1"
              - example.com:99999
              - 42
              - EXAMPLE.com
        """) == [
        (7, 9, "agents.a.egress[1]: 'http://example.com/' is not a host: write the host alone, without "
         "scheme, path or zone id", FORMS),
        (8, 9, "agents.a.egress[2]: '127.1' is neither a valid address nor a host name", FORMS),
        (9, 9, "agents.a.egress[3]: 'example.com:99999' has port '99999', not a number from 1 to 65535", FORMS),
        (10, 9, "agents.a.egress[4]: expected a host, got an integer (42)", "write a host, e.g. egress: example.com"),
        (11, 9, "agents.a.egress: example.com is listed twice", "remove the repeated entry"),
    ]


def test_egress_must_be_a_list(tmp_path: Path) -> None:
    assert errors(tmp_path, "agents: {a: {script: agent.py, permissions: [http], egress: example.com}}\n") == [
        (1, 61, "agents.a.egress: expected a list, got a string ('example.com')",
         "write a list, e.g. egress: [example.com]")]


def test_egress_without_http_has_no_effect(tmp_path: Path) -> None:
    assert errors(tmp_path, """\
        agents:
          a:
            script: agent.py
            egress: [example.com]
        """) == [(4, 5, "agents.a.egress: has no effect without the 'http' permission",
                  "add http to permissions, or remove egress")]
    assert valid(tmp_path, "agents: {a: {script: agent.py, permissions: [admin], egress: [a.test]}}\n")
