"""FILE_* against a real kernel: files of a running agent read, written, listed, moved, packed
and watched by a worker inside it (sandboxed and not); bounds; malformed fields; no leaks."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentos import Client
from agentos.errors import AlreadyExists, InvalidArgument, NotFound, TooLarge
from agentos.testing.kernel import KernelProcess

from .conftest import pid_alive

MANIFEST = """\
version: 1
kernel:
  processes: {files: {max_bytes: 2Mi, idle_timeout: 0.5s, watch_queue: 16}}
agents:
  unused: {command: [sh, -c, "true"]}
"""


@pytest.fixture(scope="module")
def kernel_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelProcess]:
    root = tmp_path_factory.mktemp("files")
    manifest = root / "kernel.yaml"
    manifest.write_text(MANIFEST)
    k = KernelProcess(root / "k", args=["--manifest", str(manifest)]).start()
    try:
        yield k
    finally:
        k.stop_checked()


@pytest.fixture(scope="module")
def kernel(kernel_process: KernelProcess) -> Iterator[Client]:
    with kernel_process.client(timeout=60) as client:
        yield client


@pytest.fixture(scope="module", params=[True, False], ids=["sandboxed", "plain"])
def box(request: pytest.FixtureRequest, kernel: Client,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """An idle agent, and a directory of its to work in (its /tmp, or a host directory)."""
    name = f"fbox-{'s' if request.param else 'p'}"
    agent = kernel.spawn(name, command=["/bin/sleep", "100000"], sandboxed=request.param, limits={"pids": 64})
    base = "/tmp" if request.param else str(tmp_path_factory.mktemp("plain"))
    try:
        yield {**agent, "base": base}
    finally:
        kernel.kill(id=agent["id"], grace=0)


def test_write_and_read_bytes_text_offsets(kernel: Client, box: dict[str, Any]) -> None:
    path = f"{box['base']}/a.bin"
    assert kernel.write_file(box["name"], path, b"\x00\xff0123456789") == {"path": path, "written": 12, "size": 12}
    assert kernel.read_file(box["name"], path) == b"\x00\xff0123456789"
    assert kernel.read_file(None, path, id=box["id"], offset=4, length=3) == b"234"
    kernel.write_file(box["name"], path, "ab", append=True)
    kernel.write_file(box["name"], path, "XY", offset=0)
    assert kernel.read_file(box["name"], path, text=True, offset=2) == "0123456789ab"
    assert kernel.read_file(box["name"], path)[:2] == b"XY"
    kernel.write_file(box["name"], f"{box['base']}/t.txt", "héllo", mode=0o600)
    entry = kernel.stat(box["name"], f"{box['base']}/t.txt")
    assert (entry.type, entry.size, entry.mode) == ("file", 6, 0o600)
    with pytest.raises(AlreadyExists):
        kernel.write_file(box["name"], path, b"", exclusive=True)
    with pytest.raises(NotFound):
        kernel.read_file(box["name"], f"{box['base']}/missing")
    with pytest.raises(NotFound):
        kernel.write_file(box["name"], f"{box['base']}/missing", b"x", create=False)


def test_large_files_stream_both_ways(kernel: Client, box: dict[str, Any]) -> None:
    data = os.urandom(1024 * 1024 + 12345) * 1 + os.urandom(300_000)  # more than one request
    path = f"{box['base']}/big"
    assert kernel.write_file(box["name"], path, data)["size"] == len(data)
    chunks = list(kernel.read_file_stream(box["name"], path))
    assert b"".join(chunks) == data and max(map(len, chunks)) < 64 * 1024
    kernel.remove(box["name"], path)


def test_the_bound_of_one_transfer(kernel: Client, box: dict[str, Any]) -> None:
    path = f"{box['base']}/toobig"
    with pytest.raises(TooLarge) as refused:
        kernel.write_file(box["name"], path, b"x" * (3 * 1024 * 1024))  # max_bytes is 2Mi here
    assert refused.value.details["limit"] == 2 * 1024 * 1024
    kernel.write_file(box["name"], path, b"y" * (1024 * 1024))
    kernel.write_file(box["name"], path, b"y" * (1024 * 1024 + 10), append=True)
    with pytest.raises(TooLarge):
        kernel.read_file(box["name"], path)
    assert len(kernel.read_file(box["name"], path, offset=10)) == 2 * 1024 * 1024
    kernel.remove(box["name"], path)


def test_list_stat_mkdir_rename_remove(kernel: Client, box: dict[str, Any]) -> None:
    top = f"{box['base']}/tree"
    assert kernel.mkdir(box["name"], f"{top}/a/b", parents=True)["created"]
    assert not kernel.mkdir(box["name"], f"{top}/a/b", parents=True)["created"]
    with pytest.raises(AlreadyExists):
        kernel.mkdir(box["name"], f"{top}/a")
    kernel.write_file(box["name"], f"{top}/a/b/f", b"12345")
    kernel.exec(box["name"], ["ln", "-s", "a/b/f", f"{top}/link"])
    shallow = kernel.list_dir(box["name"], top)
    assert [(e.path, e.type) for e in shallow] == [("a", "dir"), ("link", "symlink")]
    assert shallow[1].target == "a/b/f"
    deep = {e.path: e for e in kernel.list_dir(box["name"], top, depth=3)}
    assert sorted(deep) == ["a", "a/b", "a/b/f", "link"] and deep["a/b/f"].size == 5
    assert kernel.stat(box["name"], f"{top}/link").type == "symlink"
    assert kernel.stat(box["name"], f"{top}/link", follow=True).type == "file"
    kernel.write_file(box["name"], f"{top}/g", b"g")
    with pytest.raises(AlreadyExists):
        kernel.rename(box["name"], f"{top}/g", f"{top}/link", overwrite=False)
    kernel.rename(box["name"], f"{top}/g", f"{top}/a/g")
    assert kernel.read_file(box["name"], f"{top}/a/g") == b"g"
    with pytest.raises(InvalidArgument) as not_empty:
        kernel.remove(box["name"], f"{top}/a")
    assert not_empty.value.details["field"] == "path"
    kernel.remove(box["name"], f"{top}/link")
    assert kernel.read_file(box["name"], f"{top}/a/b/f") == b"12345"  # a symlink goes, not its target
    kernel.remove(box["name"], top, recursive=True)
    with pytest.raises(NotFound):
        kernel.stat(box["name"], top)


def test_relative_paths_are_the_agents(kernel: Client, box: dict[str, Any]) -> None:
    cwd = kernel.exec(box["name"], ["pwd"]).stdout.decode().strip()
    listed = {e.path for e in kernel.list_dir(box["name"], ".")}
    assert listed == {e.path for e in kernel.list_dir(box["name"], cwd)}


def test_upload_and_download_a_tree(kernel: Client, box: dict[str, Any], tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "sub" / "deeper").mkdir(parents=True)
    (source / "one.txt").write_text("one")
    (source / "sub" / "two.bin").write_bytes(os.urandom(200_000))
    (source / "sub" / "deeper" / "x").write_text("x")
    (source / "sub" / "rel").symlink_to("two.bin")
    (source / "one.txt").chmod(0o640)
    target = f"{box['base']}/up/here"
    done = kernel.upload_dir(box["name"], source, target)
    assert (done["files"], done["dirs"], done["symlinks"]) == (3, 2, 1)
    assert kernel.read_file(box["name"], f"{target}/sub/deeper/x") == b"x"
    assert kernel.stat(box["name"], f"{target}/one.txt").mode == 0o640
    out = tmp_path / "out"
    archive = kernel.download_dir(box["name"], target, out)
    names = tarfile.open(fileobj=io.BytesIO(archive)).getnames()
    assert sorted(names) == ["one.txt", "sub", "sub/deeper", "sub/deeper/x", "sub/rel", "sub/two.bin"]
    assert (out / "sub" / "two.bin").read_bytes() == (source / "sub" / "two.bin").read_bytes()
    assert os.readlink(out / "sub" / "rel") == "two.bin"
    kernel.remove(box["name"], f"{box['base']}/up", recursive=True)


def test_watch_reports_changes(kernel: Client, kernel_process: KernelProcess, box: dict[str, Any]) -> None:
    top = f"{box['base']}/watched"
    kernel.mkdir(box["name"], top)
    events: list[Any] = []
    ready = threading.Event()

    def watch(client: Client) -> None:
        for event in client.watch(box["name"], top, recursive=True):
            events.append(event)
            if event.event == "ready":
                ready.set()
            if event.event == "deleted" and event.path == "sub/n2":
                return

    # A watch of its own connection: closing it is what ends the watch and its worker.
    with kernel_process.client(timeout=60) as watcher:
        thread = threading.Thread(target=watch, args=(watcher,))
        thread.start()
        assert ready.wait(60)
        kernel.write_file(box["name"], f"{top}/f", b"1")
        kernel.rename(box["name"], f"{top}/f", f"{top}/g")
        kernel.mkdir(box["name"], f"{top}/sub")
        time.sleep(0.2)  # lets the watch add the new directory before writing in it (no assert on time)
        kernel.write_file(box["name"], f"{top}/sub/n2", b"2")
        kernel.remove(box["name"], f"{top}/sub/n2")
        thread.join(60)
    seen = [(e.event, e.path, e.to) for e in events if e.event != "modified"]
    assert seen[0] == ("ready", "", None)
    assert ("created", "f", None) in seen and ("moved", "f", "g") in seen
    assert ("created", "sub", None) in seen and ("created", "sub/n2", None) in seen
    assert ("deleted", "sub/n2", None) in seen
    kernel.remove(box["name"], top, recursive=True)


def test_malformed_fields_are_named(kernel: Client, box: dict[str, Any]) -> None:
    from agentos.protocol import Op

    cases = [
        (Op.FILE_READ, {"name": box["name"]}, "path"),
        (Op.FILE_READ, {"name": box["name"], "path": ""}, "path"),
        (Op.FILE_READ, {"name": box["name"], "path": "x" * 5000}, "path"),
        (Op.FILE_READ, {"name": box["name"], "path": "/tmp", "offset": -1}, "offset"),
        (Op.FILE_WRITE, {"name": box["name"], "path": "/tmp/x", "data": "a", "data_base64": "YQ=="}, "data"),
        (Op.FILE_WRITE, {"name": box["name"], "path": "/tmp/x", "data_base64": "!!"}, "data_base64"),
        (Op.FILE_WRITE, {"name": box["name"], "path": "/tmp/x", "mode": 0o4755}, "mode"),
        (Op.FILE_WRITE, {"name": box["name"], "path": "/tmp/x", "append": True, "offset": 1}, "offset"),
        (Op.FILE_LIST, {"name": box["name"], "depth": 0}, "depth"),
        (Op.FILE_RENAME, {"name": box["name"], "path": "/tmp/x"}, "to"),
        (Op.FILE_DATA, {"handle": "zz"}, "handle"),
        (Op.FILE_REMOVE, {"name": box["name"], "path": f"{box['base']}/.."}, "path"),
        (Op.FILE_READ, {"name": box["name"], "path": f"{box['base']}/{'n' * 300}"}, "path"),
    ]
    for op, payload, field in cases:
        with pytest.raises(InvalidArgument) as refused:
            kernel._call(op, payload)
        assert refused.value.details.get("field") == field, (op, payload, refused.value)
    with pytest.raises(NotFound):
        kernel._call(Op.FILE_DATA, {"handle": "0123abcd", "data": "x"})


def test_workers_are_reaped_when_idle_and_with_their_agent(kernel: Client,
                                                           kernel_process: KernelProcess) -> None:
    assert kernel_process.proc is not None
    agent = kernel.spawn("fworkers", command=["/bin/sleep", "100000"])
    try:
        kernel.write_file("fworkers", "/tmp/x", b"x")
        assert _workers(kernel_process.pid)
        deadline = time.monotonic() + 60  # bounds a broken run only
        while _workers(kernel_process.pid):  # idle_timeout is 0.5 s here
            assert time.monotonic() < deadline
            time.sleep(0.05)
        stream = kernel.watch("fworkers", "/tmp")
        assert next(iter(stream)).event == "ready"
        pids = _workers(kernel_process.pid)
        assert len(pids) == 1
    finally:
        kernel.kill(id=agent["id"], grace=0)
    deadline = time.monotonic() + 60
    while any(pid_alive(p) for p in pids):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    stream.close()  # type: ignore[attr-defined]


def _workers(kernel_pid: int) -> list[int]:
    """File workers the kernel started (its children running fileworker.py)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == kernel_pid and b"fileworker.py" in cmdline:
            found.append(int(entry))
    return found


def test_cli_cp_and_ls(kernel: Client, kernel_process: KernelProcess, tmp_path: Path) -> None:
    agent = kernel.spawn("fcli", command=["/bin/sleep", "100000"])
    try:
        tree = tmp_path / "tree"
        (tree / "sub").mkdir(parents=True)
        (tree / "sub" / "f.txt").write_text("f")
        (tmp_path / "one.txt").write_text("one")

        def agentos(*argv: str) -> str:
            done = subprocess.run([sys.executable, "-m", "agentos", *argv, "--socket",
                                   str(kernel_process.socket_path)], capture_output=True, text=True, check=True)
            return done.stdout

        agentos("cp", str(tree), "fcli:/tmp/copied")
        agentos("cp", str(tmp_path / "one.txt"), "fcli:/tmp/copied/")
        assert agentos("ls", "fcli", "/tmp/copied", "-R", "2").split() == ["one.txt", "sub/", "sub/f.txt"]
        agentos("cp", "fcli:/tmp/copied", str(tmp_path / "back"))
        agentos("cp", "fcli:/tmp/copied/one.txt", str(tmp_path / "one-back.txt"))
        assert (tmp_path / "back" / "sub" / "f.txt").read_text() == "f"
        assert (tmp_path / "one-back.txt").read_text() == "one"
    finally:
        kernel.kill(id=agent["id"], grace=0)
