"""LIST in pages (``limit``, ``cursor``, ``processes.list_page``) and as a stream whose pages
leave the event loop to everyone else: a request behind a LIST of hundreds of agents is
answered before that LIST ends (order of frames, never time)."""
from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentos.client import Client
from agentos.errors import InvalidArgument
from agentos.protocol import Flag, FrameDecoder, Op, encode_frame
from agentos.testing.kernel import KernelProcess

PAGE = 5
#: Agents LISTed at once by the stream test: 40 pages.
MANY = 200

MANIFEST = f"""
kernel:
  processes:
    list_page: {PAGE}
    keep_ended: 1000
agents:
  unused: {{command: [sh, -c, 'true']}}
"""


@pytest.fixture(scope="module")
def paged_kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelProcess]:
    root = tmp_path_factory.mktemp("paged")
    manifest = root / "kernel.yaml"
    manifest.write_text(MANIFEST)
    kernel = KernelProcess(root / "k", args=["--manifest", str(manifest)]).start()
    try:
        yield kernel
    finally:
        kernel.stop_checked()


def _sleepers(client: Client, prefix: str, count: int, project: str | None = None) -> list[str]:
    return [client.spawn(f"{prefix}{n}", command=["sleep", "600"], sandboxed=False, project=project)["id"]
            for n in range(count)]


def _ended(client: Client, prefix: str, count: int) -> list[str]:
    ids = []
    for n in range(count):
        info = client.spawn(f"{prefix}{n}", command=["true"], sandboxed=False)
        client.wait(id=info["id"], timeout=60)
        ids.append(info["id"])
    return ids


def test_pages_walk_every_agent_once_in_order_and_resume_after_changes(paged_kernel: KernelProcess) -> None:
    client = paged_kernel.client()
    ids = _sleepers(client, "pager", 12, "pg")
    late = ""
    try:
        first = client.list_page(project="pg", limit=100)  # clamped to processes.list_page
        assert [a["id"] for a in first["agents"]] == ids[:PAGE]
        assert first["cursor"] is not None
        # The table changes between pages: a listed agent ends, an unlisted one ends, one starts.
        client.kill(id=ids[0], grace=0)
        client.kill(id=ids[7], grace=0)
        late = client.spawn("pager-late", command=["sleep", "600"], sandboxed=False, project="pg")["id"]
        seen = [a["id"] for a in first["agents"]]
        cursor = first["cursor"]
        while cursor is not None:
            page = client.list_page(status="running", project="pg", cursor=cursor)
            assert len(page["agents"]) <= PAGE
            seen += [a["id"] for a in page["agents"]]
            cursor = page["cursor"]
        assert seen == ids[:PAGE] + [i for i in ids[PAGE:] if i != ids[7]] + [late]
        two = client.list_page(status="running", project="pg", limit=2)
        assert len(two["agents"]) == 2 and two["cursor"] is not None
        # The SDK walks the pages itself (one streamed LIST).
        assert [a["id"] for a in client.list_agents(status="running", project="pg")] == ids[1:7] + ids[8:] + [late]
        assert [a["id"] for a in client.list_agents(status="running", project="pg", limit=3)] == ids[1:4]
        after_two = client.list_agents(status="running", project="pg", cursor=two["cursor"])
        assert [a["id"] for a in after_two][:2] == ids[3:5]
        assert [a["name"] for a in client.list_agents(name="pager3")] == ["pager3"]
    finally:
        for agent_id in [*ids, late] if late else ids:
            client.kill(id=agent_id, grace=0)


def test_usage_is_read_off_the_loop_and_says_its_age(paged_kernel: KernelProcess) -> None:
    client = paged_kernel.client()
    [sleeper] = _sleepers(client, "aged", 1)
    try:
        [entry] = client.list_agents(name="aged0")
        assert entry["usage_age"] is not None and entry["usage_age"] >= 0
        assert entry["usage"]["pids_current"] >= 1
    finally:
        end = client.kill(id=sleeper, grace=0)
    assert end["usage_age"] is None  # its final figures
    [entry] = client.list_agents(name="aged0")
    assert entry["status"] == "killed" and entry["usage_age"] is None


def test_bad_paging_values_are_refused_by_field(paged_kernel: KernelProcess) -> None:
    client = paged_kernel.client()
    for fields, field in (({"cursor": "x1"}, "cursor"), ({"limit": 0}, "limit"),
                          ({"limit": "5"}, "limit"), ({"stream": 1}, "stream")):
        with pytest.raises(InvalidArgument, match=field):
            client._call(Op.LIST, fields)  # noqa: SLF001 - malformed on purpose


def test_a_list_of_many_agents_leaves_the_loop_to_other_requests(paged_kernel: KernelProcess) -> None:
    """Two streamed LISTs of 200 agents (40 pages each) and a HELLO, written at once on one
    connection: the kernel reads them in order, so if a LIST held the loop until it ended,
    its END would precede every frame of the later requests. It does not: the pages of both
    LISTs alternate, and the HELLO is answered before either LIST ends."""
    client = paged_kernel.client()
    _ended(client, "many", MANY)
    ask = json.dumps({"status": "exited", "stream": True}).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(60)
        conn.connect(str(paged_kernel.socket_path))
        conn.sendall(encode_frame(Op.LIST, 1, ask) + encode_frame(Op.LIST, 2, ask) + encode_frame(Op.HELLO, 3))
        order = _frames_until_both_end(conn)
    listed = {1: 0, 2: 0}
    for request_id, flags, payload in order:
        if request_id in listed and flags & Flag.STREAM and not flags & Flag.END:
            listed[request_id] += len(json.loads(payload)["agents"])
    assert listed == {1: MANY, 2: MANY}
    ends = {request_id: at for at, (request_id, flags, _) in enumerate(order) if flags & Flag.END}
    hello = next(at for at, (request_id, _, _) in enumerate(order) if request_id == 3)
    assert hello < min(ends.values()), "HELLO waited for a LIST to end"
    first_of_2 = next(at for at, (request_id, _, _) in enumerate(order) if request_id == 2)
    assert first_of_2 < ends[1], "the second LIST started only after the first ended"
    assert any(request_id == 1 for request_id, _, _ in order[first_of_2:ends[1]]), "no alternation"


def _frames_until_both_end(conn: socket.socket) -> list[tuple[int, int, bytes]]:
    decoder = FrameDecoder()
    order: list[tuple[int, int, bytes]] = []
    ended: set[int] = set()
    while ended != {1, 2} or not any(request_id == 3 for request_id, _, _ in order):
        data = conn.recv(1 << 16)
        assert data, "the kernel closed the connection"
        for frame in decoder.feed(data):
            assert not frame.flags & Flag.ERROR, bytes(frame.payload)
            order.append((frame.request_id, frame.flags, bytes(frame.payload)))
            if frame.flags & Flag.END:
                ended.add(frame.request_id)
    return order


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    from agentos.processes.settings import ProcessSettings

    for value in (0, -1, "5", True):
        with pytest.raises(ValueError, match="processes.list_page"):
            ProcessSettings.from_section({"list_page": value})


def test_usage_figures_are_every_counter() -> None:
    from dataclasses import fields

    from agentos.cgroups import CgroupStats

    stats = CgroupStats(*range(len(fields(CgroupStats))))
    assert stats.to_dict() == {f.name: getattr(stats, f.name) for f in fields(CgroupStats)}
