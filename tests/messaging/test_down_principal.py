"""Mail to a known principal is queued while its agent is down (issue 11): an agent that was
spawned and never read its mailbox, stopped, and then the kernel restarted (gracefully or by
kill -9), still has its mailbox by name, ``project/name`` and principal; started again (START,
``agentos start``, ``agentos up``) it receives everything in the order it was sent. A name no
agent ever had stays ``not_found``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentos import Client, NotFound
from agentos.protocol import Op
from agentos.testing.kernel import KernelProcess
from tests.cli.test_up import PLAIN, agentos

LATECOMER = str(Path(__file__).with_name("agents") / "latecomer.py")
PLAIN_AT, MEMBER_AT = "uid:0/plain", "uid:0/@team/member"
#: Every address that names each agent, and what SEND must resolve it to.
ADDRESSES = [("plain", PLAIN_AT), (PLAIN_AT, PLAIN_AT),
             ("member", MEMBER_AT), ("team/member", MEMBER_AT), (MEMBER_AT, MEMBER_AT)]
UNKNOWN = ["never", "team/never", "uid:0/never", "uid:0/@team/never", "other/member"]


class Team:
    """A plain SPAWNed agent ``plain`` and a manifest's (project ``team``) agent ``member``,
    both latecomers: they read no mail until ``flag`` exists, then what ``rounds`` of
    ``send_all`` sent them."""

    def __init__(self, kernel: KernelProcess, directory: Path, rounds: int) -> None:
        self.kernel, self.directory = kernel, directory
        self.flag = directory / "read-now"
        self.counts = {name: rounds * [p for _, p in ADDRESSES].count(principal)
                       for name, principal in (("plain", PLAIN_AT), ("member", MEMBER_AT))}
        self.manifest = directory / "team.yaml"
        self.manifest.write_text(
            f"name: team\nagents:\n  member:\n    script: {LATECOMER}\n"
            f"    args: ['{self.flag}', '{self.counts['member']}']\n"
            f"    {PLAIN.replace(chr(10), chr(10) + '  ')}\n")

    def cli(self, *args: str) -> str:
        done = agentos(*args, "--socket", str(self.kernel.socket_path), cwd=self.directory)
        assert done.returncode == 0, done
        return done.stdout

    def up(self, client: Client) -> None:
        client.spawn("plain", LATECOMER, args=[str(self.flag), str(self.counts["plain"])],
                     sandboxed=False)
        self.cli("up", "-d", str(self.manifest))

    def stop(self, client: Client) -> None:
        client.kill("plain")
        self.cli("stop", "team/member")


def send_all(client: Client, tag: str) -> dict[str, list[str]]:
    """Mail to both agents by every address that names them (each body ``tag:address``), and
    to names no agent ever had; the bodies sent, by principal, in order."""
    sent: dict[str, list[str]] = {PLAIN_AT: [], MEMBER_AT: []}
    for to, principal in ADDRESSES:
        reply = client._call(Op.SEND, {"to": to, "body": f"{tag}:{to}"})
        assert reply["to"] == principal, (to, reply)
        sent[principal].append(f"{tag}:{to}")
    for to in UNKNOWN:
        with pytest.raises(NotFound):
            client._call(Op.SEND, {"to": to, "body": "lost"})
    return sent


def received(client: Client) -> dict[str, list[Any]]:
    """What the two agents, started again, report they received, by principal."""
    reports = [client.recv(timeout=120, name="results", ack=True)["body"] for _ in range(2)]
    return {report["name"]: report["bodies"] for report in reports}


def test_mail_to_a_stopped_agent_waits_for_its_start(kernel: KernelProcess, tmp_path: Path) -> None:
    team = Team(kernel, tmp_path, rounds=1)
    root = kernel.client()
    root.register("results")
    team.up(root)
    team.stop(root)
    sent = send_all(root, "down")
    team.flag.touch()
    assert root.start("plain")["started"] is True
    team.cli("start", "team/member")
    assert received(root) == sent


@pytest.mark.parametrize("restart", ["graceful", "kill-9"])
def test_mail_to_a_down_agent_survives_a_kernel_restart(kernel: KernelProcess, tmp_path: Path,
                                                        restart: str) -> None:
    team = Team(kernel, tmp_path, rounds=2)
    root = kernel.client()
    root.register("results")
    team.up(root)
    team.stop(root)
    before = send_all(root, "before")
    if restart == "graceful":
        kernel.restart()
    else:
        kernel.kill()
        kernel.start()
    root = kernel.client()
    after = send_all(root, "after")
    team.flag.touch()
    # A new kernel knows neither agent; started again by the same spawner under the same name
    # (and project) they have the same principal, so the same mailbox.
    team.up(root)
    assert received(root) == {principal: before[principal] + after[principal] for principal in before}
