"""Egress through a real kernel: names resolved by the host's resolver path (answered from a
table of our own, so no DNS and no traffic off loopback), checked by address, and allowlists
that narrow from the kernel's to each agent and its children, attacked from inside agents."""
from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentos import PermissionDenied
from agentos.protocol import Op
from agentos.testing.kernel import KernelProcess

from .servers import Internal

HERE = Path(__file__).parent
FETCHER = str(HERE / "agents" / "fetcher.py")
#: loopback.test stands for an internal service whose address the kernel's list names;
#: internal.test for one whose address it does not.
HOSTS = {"loopback.test": "127.0.0.1", "internal.test": "127.0.0.2"}


class ServerThread:
    """servers.Internal on a loop of its own, for a kernel in another process to reach."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = Internal()

    def __enter__(self) -> Internal:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self.server

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[KernelProcess, Internal]]:
    root = Path(tempfile.mkdtemp(prefix="agentos-egress-"))
    try:
        with ServerThread() as server:
            allow = ["loopback.test", "internal.test", f"127.0.0.1:{server.port}"]
            (root / "hosts.json").write_text(json.dumps(HOSTS))
            (root / "sections.json").write_text(json.dumps({"egress": {"allow": allow, "timeout": "20s"}}))
            kernel = KernelProcess(root / "k", command=[sys.executable, str(HERE / "resolving_kernel.py"),
                                                        str(root / "hosts.json"), str(root / "sections.json")])
            kernel.start()
            try:
                yield kernel, server
            finally:
                kernel.stop_checked()
            assert server.served_by("127.0.0.2") == [], "an internal address the list does not name was reached"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def url(server: Internal, host: str) -> str:
    return f"http://{host}:{server.port}/hello"


def run_fetcher(kernel: KernelProcess, name: str, egress: list[str] | None, *attempts: str,
                capabilities: tuple[str, ...] = ("http",)) -> dict[str, dict[str, Any]]:
    client = kernel.client()
    request: dict[str, Any] = {"name": name, "script": FETCHER, "args": list(attempts),
                               "capabilities": list(capabilities)}
    if egress is not None:
        request["egress"] = egress
    client._call(Op.SPAWN, request)
    ended = client.wait(name, timeout=60)
    logs = client.logs(name)
    assert ended["exit_code"] == 0, logs
    results = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    return {r["attempt"]: r for r in results}


def test_outside_client_reaches_names_by_their_checked_address(setup) -> None:
    kernel, server = setup
    client = kernel.client()
    reply = client.http(url(server, "loopback.test"))
    assert json.loads(reply["body"]) == {"served_by": "127.0.0.1", "host": f"loopback.test:{server.port}",
                                         "path": "/hello"}
    with pytest.raises(PermissionDenied, match="internal.test resolves to an address that is not public"):
        client.http(url(server, "internal.test"))
    with pytest.raises(PermissionDenied, match="is not an allowed egress domain"):
        client.http(f"http://127.0.0.2:{server.port}/hello")


def test_spawn_cannot_widen_the_kernel_list(setup) -> None:
    kernel, _ = setup
    for wider in (["elsewhere.test"], ["loopback.test", "127.0.0.0/8"], ["*.test"]):
        with pytest.raises(PermissionDenied) as info:
            kernel.client()._call(Op.SPAWN, {"name": "wide", "script": FETCHER, "capabilities": ["http"],
                                             "egress": wider})
        assert info.value.details["field"] == "egress"


def test_an_agent_fetches_within_its_own_list_and_its_children_within_that(setup) -> None:
    kernel, server = setup
    loopback, internal = url(server, "loopback.test"), url(server, "internal.test")
    # It inherits the kernel's list: the listed address is reached, the other is not.
    inherits = run_fetcher(kernel, "inherits", None, f"http={loopback}", f"http={internal}")
    assert inherits[f"http={loopback}"]["ok"]["body"]["served_by"] == "127.0.0.1"
    assert inherits[f"http={internal}"]["error"] == "permission_denied"
    # Narrowed to the name alone, the same internal address is out of reach.
    narrow = run_fetcher(kernel, "narrow", ["loopback.test"], f"http={loopback}",
                         "spawn=loopback.test,127.0.0.1", "spawn=internal.test", "spawn=",
                         f"child-http={loopback}", capabilities=("http", "spawn"))
    assert narrow[f"http={loopback}"]["error"] == "permission_denied"
    for wider, entry in (("spawn=loopback.test,127.0.0.1", "127.0.0.1"), ("spawn=internal.test", "internal.test")):
        assert narrow[wider]["error"] == "permission_denied", narrow[wider]
        assert narrow[wider]["details"] == {"field": "egress", "entry": entry}
    # A child that inherits gets its parent's narrow list, not the kernel's.
    child = json.loads(narrow["spawn="]["ok"]["logs"].splitlines()[0])
    assert child["attempt"] == f"http={loopback}" and child["error"] == "permission_denied"
