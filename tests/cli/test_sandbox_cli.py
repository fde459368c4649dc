"""``agentos sandbox create|ls|kill|connect`` against a real kernel, run as the CLI runs them, with
the general commands (``exec``, ``cp``) driving the sandbox in between."""
from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentos import Client
from agentos.cli.main import main
from agentos.client.sandbox import IDLE
from agentos.testing.kernel import KernelProcess


@pytest.fixture(scope="module")
def kernel_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelProcess]:
    k = KernelProcess(tmp_path_factory.mktemp("sandbox-cli") / "k").start()
    try:
        yield k
    finally:
        k.stop_checked()


@pytest.fixture(scope="module")
def client(kernel_process: KernelProcess) -> Iterator[Client]:
    with kernel_process.client(timeout=60) as c:
        yield c


def cli(capsys: pytest.CaptureFixture[str], k: KernelProcess, *args: str) -> tuple[int, str, str]:
    command, *rest = args
    verb_args = [command, *rest[:1]] if command == "sandbox" else [command]
    tail = rest[1:] if command == "sandbox" else rest
    code = main([*verb_args, "--socket", str(k.socket_path), *tail])
    out, err = capsys.readouterr()
    return code, out, err


def test_create_ls_exec_cp_kill(kernel_process: KernelProcess, client: Client, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, kernel_process, "sandbox", "create", "--memory", "128Mi", "--pids", "32")
    assert code == 0 and err == ""
    name = out.strip()
    assert name.startswith("sandbox-") and out == f"{name}\n"
    [row] = client.list_agents(name=name)
    assert row["argv"] == [IDLE] and row["sandboxed"] and row["status"] == "running"
    assert row["limits"]["pids"] == 32 and row["timeout"] == 600

    code, out, _ = cli(capsys, kernel_process, "sandbox", "ls")
    header, *lines = out.splitlines()
    assert code == 0 and header.split() == ["NAME", "ID", "STATUS", "UPTIME", "EXPIRES", "MEMORY", "TEMPLATE"]
    [line] = [line for line in lines if line.split()[0] == name]
    assert line.split()[1:3] == [row["id"], "running"]

    # Driven by the general commands: exec, and files in and out through cp.
    code, out, _ = cli(capsys, kernel_process, "exec", name, "--", "sh", "-c", "echo made > /tmp/out.txt; id -u")
    assert code == 0 and out == "65533\n"
    local = tmp_path / "in.txt"
    local.write_text("from the host\n")
    assert cli(capsys, kernel_process, "cp", str(local), f"{name}:/tmp/in.txt")[0] == 0
    code, out, _ = cli(capsys, kernel_process, "exec", name, "--", "cat", "/tmp/in.txt")
    assert (code, out) == (0, "from the host\n")
    assert cli(capsys, kernel_process, "cp", f"{name}:/tmp/out.txt", str(tmp_path / "out.txt"))[0] == 0
    assert (tmp_path / "out.txt").read_text() == "made\n"

    code, out, _ = cli(capsys, kernel_process, "sandbox", "kill", name)
    assert code == 0 and out == f"{name} ({row['id']}) killed: killed\n"
    code, out, _ = cli(capsys, kernel_process, "sandbox", "ls")
    assert code == 0 and name not in out
    code, out, _ = cli(capsys, kernel_process, "sandbox", "ls", "--all")
    assert code == 0 and any(line.split()[:3] == [name, row["id"], "killed"] for line in out.splitlines())


def test_json_for_scripts(kernel_process: KernelProcess, client: Client,
                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, kernel_process, "sandbox", "create", "--json", "--name", "scripted", "-p", "cli-team",
                       "--timeout", "none", "--network", "-e", "GREETING=hi")
    info = json.loads(out)
    assert code == 0 and (info["name"], info["project"]) == ("scripted", "cli-team")
    assert info["isolation"]["sandbox"]["network"] == "host"
    try:
        code, out, _ = cli(capsys, kernel_process, "sandbox", "ls", "--json", "-p", "cli-team")
        [row] = json.loads(out)
        assert code == 0 and (row["id"], row["project"], row["timeout"]) == (info["id"], "cli-team", None)
        code, out, _ = cli(capsys, kernel_process, "sandbox", "ls", "-p", "cli-team")
        assert out.splitlines()[1].split()[:2] == ["cli-team/scripted", info["id"]]
        code, out, _ = cli(capsys, kernel_process, "exec", "cli-team/scripted", "--", "sh", "-c", "echo $GREETING")
        assert (code, out) == (0, "hi\n")
    finally:
        code, out, _ = cli(capsys, kernel_process, "sandbox", "kill", "--json", "cli-team/scripted")
    [ended] = json.loads(out)
    assert code == 0 and (ended["id"], ended["status"]) == (info["id"], "killed")
    assert json.loads(cli(capsys, kernel_process, "sandbox", "ls", "--json", "-p", "cli-team")[1]) == []


def test_refusals_are_one_line(kernel_process: KernelProcess, client: Client,
                               capsys: pytest.CaptureFixture[str]) -> None:
    agent = client.spawn("not-a-sandbox", command=["/bin/sleep", "100000"])
    try:
        code, out, err = cli(capsys, kernel_process, "sandbox", "kill", "not-a-sandbox", "ghost")
        assert (code, out) == (1, "")
        assert err.splitlines() == [
            "agentos sandbox kill: not-a-sandbox: 'not-a-sandbox' is an agent, not a sandbox: "
            "`agentos kill not-a-sandbox` stops it",
            "agentos sandbox kill: ghost: no running sandbox 'ghost'"]
        assert client.list_agents(name="not-a-sandbox")[0]["status"] == "running"
        code, out, _ = cli(capsys, kernel_process, "sandbox", "ls")
        assert "not-a-sandbox" not in out
    finally:
        client.kill(id=agent["id"], grace=0)
    code, _, err = cli(capsys, kernel_process, "sandbox", "create", "--memory", "lots")
    assert code == 1 and "memory" in err and err.count("\n") == 1
    code, _, err = cli(capsys, kernel_process, "sandbox", "create", "--template", "no-such-template")
    assert code == 1 and "template" in err
    code, _, err = cli(capsys, kernel_process, "sandbox", "create", "--name", "bad name!")
    assert code == 1 and "name" in err
    assert [row for row in client.list_agents() if row["argv"] == [IDLE] and row["status"] == "running"] == []


def test_volumes_and_paths_from_the_command_line(kernel_process: KernelProcess, client: Client, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    (shared / "in.txt").write_text("from the host\n")
    (shared / "in.txt").chmod(0o644)

    def create(*options: str) -> str:
        code, out, err = cli(capsys, kernel_process, "sandbox", "create", *options)
        assert code == 0, err
        return out.strip()

    def run(name: str, script: str) -> tuple[int, str]:
        code, out, _ = cli(capsys, kernel_process, "exec", name, "--", "sh", "-c", script)
        return code, out

    writer = create("--volume", "cli-notes:/workspace:size=16Mi", "--readonly", str(shared), "--tmp", "8Mi")
    try:
        assert run(writer, f"pwd; cat {shared}/in.txt; echo kept > notes.txt") == (0, "/workspace\nfrom the host\n")
        assert run(writer, f"echo no > {shared}/out.txt 2>/dev/null || echo refused") == (0, "refused\n")
    finally:
        assert cli(capsys, kernel_process, "sandbox", "kill", writer)[0] == 0
    # The volume outlived its sandbox; the next one mounts it read-only, beside a private workspace.
    reader = create("-v", "cli-notes:/data:ro", "--workspace", "4Mi")
    try:
        assert run(reader, "pwd; cat /data/notes.txt") == (0, "/workspace\nkept\n")
        assert run(reader, "echo no > /data/more.txt 2>/dev/null || echo refused") == (0, "refused\n")
    finally:
        assert cli(capsys, kernel_process, "sandbox", "kill", reader)[0] == 0

    # Malformed values and escapes: invalid_argument naming the entry, one line, nothing started.
    for options, field in [
            (["--volume", "cli-notes"], "volumes[0]"),
            (["--volume", "cli-notes:/data:rw,size"], "volumes[0]"),
            (["--volume", "cli-notes:/data:ro,ro"], "volumes[0]"),
            (["-v", "other:/other", "--volume", "cli-notes:/workspace/../etc"], "volumes[1].path"),
            (["--volume", "cli-notes:etc"], "volumes[0].path"),
            (["--volume", "cli-notes:/proc/self"], "volumes[0].path"),
            (["--volume", "../../etc:/data"], "volumes[0].name"),
            (["--volume", "cli-notes:/data:size=1k"], "volumes[0].size")]:
        code, out, err = cli(capsys, kernel_process, "sandbox", "create", *options)
        assert (code, out) == (1, "") and field in err and err.count("\n") == 1, (options, err)
    assert [row for row in client.list_agents() if row["argv"] == [IDLE] and row["status"] == "running"] == []
    assert [v["name"] for v in client.list_volumes()] == ["cli-notes"]
    assert client.remove_volume("cli-notes")["removed"]


def test_connect_is_a_shell_on_a_terminal(kernel_process: KernelProcess, client: Client,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, kernel_process, "sandbox", "create", "--name", "term")
    assert code == 0
    try:
        base = [sys.executable, "-m", "agentos", "sandbox", "connect", "--socket", str(kernel_process.socket_path)]
        master, slave = pty.openpty()
        shell = subprocess.Popen([*base, "term"], stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        try:
            _await_raw(master, shell)
            # The exec's own terminal echoes and answers: a real interactive shell in the sandbox.
            os.write(master, b"echo answer-$((40 + 2)); id -u; test -t 0 && echo on-a-tty; exit 3\r")
            output = _read_until_closed(master)
            assert shell.wait(timeout=120) == 3
        finally:
            os.close(master)
            if shell.poll() is None:
                shell.kill()
                shell.wait()
        text = output.replace(b"\r", b"").decode(errors="replace")
        assert "answer-42\n65533\non-a-tty\n" in text
        # As nobody, with a variable, and a command instead of the shell.
        master, slave = pty.openpty()
        ran = subprocess.Popen([*base, "--user", "nobody", "-e", "WHO=nobody-here", "term", "--", "sh", "-c",
                                "echo $WHO; id -u"], stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        try:
            output = _read_until_closed(master)
            assert ran.wait(timeout=120) == 0
        finally:
            os.close(master)
        assert output.replace(b"\r", b"").strip().endswith(b"nobody-here\n65534")
        # Without a terminal it says what to do instead.
        piped = subprocess.run([*base, "term"], input=b"", capture_output=True, timeout=120)
        assert piped.returncode == 2 and b"needs a terminal" in piped.stderr
    finally:
        assert cli(capsys, kernel_process, "sandbox", "kill", "term")[0] == 0
    assert [ex for ex in client.exec_list() if ex["status"] == "running"] == []


def _await_raw(master: int, process: subprocess.Popen[bytes], limit: float = 120.0) -> None:
    """Until the CLI has put its terminal in raw mode (typing earlier would be flushed by it);
    the limit only bounds a broken run."""
    deadline = time.monotonic() + limit
    while termios.tcgetattr(master)[3] & termios.ICANON:
        assert process.poll() is None, "connect ended before taking the terminal"
        assert time.monotonic() < deadline, "connect never took the terminal"
        time.sleep(0.02)


def _read_until_closed(master: int, limit: float = 120.0) -> bytes:
    """All a terminal's slave side wrote, until its last holder closed it (EIO on Linux);
    the limit only bounds a broken run."""
    output = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if not ready:
            continue
        try:
            data = os.read(master, 65536)
        except OSError:
            return output
        if not data:
            return output
        output += data
    raise AssertionError(f"the terminal stayed open: {output[-500:]!r}")
