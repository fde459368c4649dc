"""``client.sandbox()`` against a real kernel: an isolated agent that idles until driven, exec
into it, pause/resume, idle_timeout kept off by being driven, reaped orphans, its end with
the ``with`` block, and the same API on both clients."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentos import AsyncClient, Client, InvalidArgument, Unavailable
from agentos.client._async_api import AsyncSandbox
from agentos.client._sync_api import Sandbox
from agentos.client.sandbox import IDLE
from agentos.testing.kernel import KernelProcess

from .test_api_parity import api_differences


@pytest.fixture(scope="module")
def kernel_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelProcess]:
    k = KernelProcess(tmp_path_factory.mktemp("sandbox") / "k").start()
    try:
        yield k
        assert interpreters(k) == [], "an interpreter outlived its sandbox"
    finally:
        k.stop_checked()


@pytest.fixture(scope="module")
def client(kernel_process: KernelProcess) -> Client:
    return kernel_process.client(timeout=60)


def interpreters(k: KernelProcess) -> list[int]:
    """Host pids of ``run_code``'s interpreters (and what their cells forked): run by the kernel
    from a zygote, so with a zygote's command line, and the child of one (their exec's
    subreaper). Nothing else is: a zygote forks each agent and exec as the kernel's child."""
    forked = {pid for pid, cmdline in _descendants(k) if _ZYGOTE in cmdline}
    return sorted(pid for pid in forked if _ppid(pid) in forked)


#: In the command line of a zygote, so of every process it forks.
_ZYGOTE = b"from agentos.sandbox.zygote import main; main()"


def _descendants(k: KernelProcess) -> list[tuple[int, list[bytes]]]:
    """(host pid, command line) of every process under the kernel."""
    assert k.proc is not None
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if k.pid in _ancestors(int(entry.name)):
            found.append((int(entry.name), cmdline))
    return found


def _ancestors(pid: int) -> list[int]:
    found = []
    while (pid := _ppid(pid)) > 1:
        found.append(pid)
    return found


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError):
        return -1


def eventually(check, tries: int = 200):
    """``check()``'s first true value, polling: what is awaited here happens asynchronously."""
    for _ in range(tries):
        value = check()
        if value:
            return value
        time.sleep(0.05)
    return check()


def test_a_sandbox_is_an_isolated_idle_agent_killed_when_its_block_ends(client: Client) -> None:
    with client.sandbox(limits={"memory": "128Mi", "pids": 32}) as sb:
        assert sb.name.startswith("sandbox-") and sb.id == sb.info["id"]
        assert {"pid", "mount", "net"} <= set(sb.isolation["sandbox"]["namespaces"])
        assert sb.isolation["sandbox"]["network"] == "loopback" and sb.isolation["sandbox"]["seccomp"]
        [row] = client.list_agents(name=sb.name)
        assert row["status"] == "running" and row["argv"] == [IDLE] and row["sandboxed"]
        assert row["limits"]["pids"] == 32 and row["timeout"] == 600
        result = sb.exec("echo out; echo err >&2; exit 3")
        assert (result.stdout, result.stderr, result.exit_code) == (b"out\n", b"err\n", 3)
        # The sandbox's view, not the host's: its own pid namespace, no network but loopback.
        assert int(sb.exec("echo $$").stdout) < 10
        interfaces = sb.exec(["cat", "/proc/net/dev"]).stdout.decode().splitlines()[2:]
        assert [line.split(":")[0].strip() for line in interfaces] == ["lo"]
        stream = sb.exec_stream("echo streamed")
        assert list(stream) == [("stdout", b"streamed\n")]
        handle = sb.exec_start(["cat"], stdin_open=True)
        client.exec_input(handle["id"], b"bg", eof=True)
        assert client.exec_wait(handle["id"]).stdout == b"bg"
    assert client.wait(id=sb.id, timeout=30)["status"] == "killed"


def test_names_are_unique_unless_given_and_templates_are_refused(client: Client) -> None:
    first, second = client.sandbox().start(), client.sandbox(name="named-box").start()
    try:
        assert first.name != second.name and second.name == "named-box"
    finally:
        first.kill()
        second.kill()
    with pytest.raises(InvalidArgument) as refused:
        client.sandbox(template="datascience").start()  # the kernel has no such template
    assert refused.value.details.get("field") == "template"


def test_orphans_an_exec_leaves_are_reaped(client: Client) -> None:
    with client.sandbox(limits={"pids": 32}) as sb:
        for _ in range(5):  # each leaves two children of its group to die as orphans
            assert sb.exec("sleep 1000 & sleep 1000 & echo started").stdout == b"started\n"

        def no_sleep_left() -> bool:
            return sb.exec("grep -l '^Name:.*sleep' /proc/[0-9]*/status || true").stdout == b""

        assert eventually(no_sleep_left)
        zombies = sb.exec("grep -l 'State:.*Z' /proc/[0-9]*/status || true").stdout
        assert zombies == b""


def test_pause_freezes_and_resume_thaws(client: Client) -> None:
    with client.sandbox() as sb:
        sb.run_code("n = 41")
        assert sb.pause()["paused"]
        assert client.list_agents(name=sb.name)[0]["status"] == "paused"
        with pytest.raises(Unavailable):
            sb.exec("true")
        assert sb.resume()["resumed"]
        assert sb.run_code("n + 1").text == "42"


def test_being_driven_keeps_idle_timeout_off_and_idling_ends_it(client: Client) -> None:
    with client.sandbox(idle_timeout="2s") as sb:
        driven_until = time.monotonic() + 3.5
        while time.monotonic() < driven_until:  # past idle_timeout, with execs well inside it
            assert sb.exec("true").exit_code == 0
            time.sleep(0.25)
        assert client.list_agents(name=sb.name)[0]["status"] == "running"
        ended = client.wait(id=sb.id, timeout=60)
        assert (ended["status"], ended["reason"]) == ("timed_out", "idle_timeout")


def test_kill_ends_the_sandbox_and_its_interpreter(client: Client, kernel_process: KernelProcess) -> None:
    sb = client.sandbox().start()
    sb.run_code("import time")
    assert len(interpreters(kernel_process)) == 1
    assert sb.kill()["killed"]
    assert client.list_agents(name=sb.name)[0]["status"] == "killed"
    assert eventually(lambda: interpreters(kernel_process) == [])


def test_the_async_sandbox_is_the_same(kernel_process: KernelProcess) -> None:
    async def main() -> None:
        async with await AsyncClient.connect(kernel_process.socket_path, timeout=60) as aclient:
            async with aclient.sandbox() as sb:
                assert (await sb.exec(["echo", "hi"])).stdout == b"hi\n"
                await sb.run_code("x = 20")
                assert (await sb.run_code("x * 2 + 2")).text == "42"
                seen: list[str] = []
                cell = await sb.run_code("print('streamed')", on_stdout=seen.append)
                assert cell.stdout == "streamed\n" and "".join(seen) == "streamed\n"
                slow = await sb.run_code("while True: pass", timeout=0.5)
                assert slow.timed_out
                assert (await sb.run_code("1")).state_lost
            assert (await aclient.wait(id=sb.id, timeout=30))["status"] == "killed"

    asyncio.run(main())


def test_sandbox_has_one_api_on_both_clients() -> None:
    assert api_differences(Sandbox, AsyncSandbox) == []
