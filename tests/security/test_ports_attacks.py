"""EXPOSE opens one way in, for one caller: another local user cannot use an exposure, a
sibling agent can neither expose nor reach another's port, and the exposed agent's network
stays false (it reaches neither the exposure's own addresses nor anything else). Both kernel
modes (root and unprivileged)."""
from __future__ import annotations

import encodings.idna  # noqa: F401 - loaded before a child drops to a uid that cannot read it
import json
import socket
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import HostileKernel, Users, as_user


@pytest.fixture(scope="module")
def served(hostile: HostileKernel) -> Iterator[dict[str, Any]]:
    agent = hostile.spawn("port_probe", name="port-victim", limits={"pids": 32})
    try:
        hostile.admin.wait(id=agent["id"], until="ready", timeout=90)
        yield agent
    finally:
        hostile.admin.kill(id=agent["id"], grace=0)


def _get(sock: socket.socket, path: str) -> bytes:
    sock.settimeout(60)
    sock.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
    chunks = []
    while data := sock.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


def _unix(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    return sock


def _tcp(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=60)


def test_another_local_user_cannot_connect(hostile: HostileKernel, users: Users,
                                           served: dict[str, Any]) -> None:
    with hostile.admin.expose(served["name"], 8000, tcp=True) as exposure:
        assert exposure.tcp is not None
        path, address = exposure.path, exposure.tcp

        def by_path() -> str:
            try:
                _unix(path).close()
            except OSError as exc:
                return type(exc).__name__
            return "connected"

        def by_tcp() -> bytes:
            try:
                with _tcp(address) as sock:
                    return _get(sock, "/")
            except ConnectionResetError:
                return b""

        assert as_user(users.attacker, by_path) == "PermissionError"
        # 127.0.0.1 takes anyone's connection; the kernel closes one whose socket is not the caller's.
        assert as_user(users.attacker, by_tcp) == b""
        refused = hostile.admin.exposures(id=served["id"])[0]["refused"]
        assert refused == 1
        with _tcp(address) as sock:  # the caller's own still works
            assert _get(sock, "/").endswith(b"\r\n\r\nserved")


def test_a_sibling_cannot_expose_or_reach_anothers_port(hostile: HostileKernel,
                                                        served: dict[str, Any]) -> None:
    with hostile.admin.expose(served["name"], 8000) as exposure:
        verdict = hostile.attack("expose_attack", {"sibling": served["name"], "exposure": exposure.id,
                                                   "path": exposure.path},
                                 capabilities=["spawn", "observe"], limits={"pids": 32})
        assert hostile.admin.exposures(id=served["id"])[0]["status"] == "open"
    outcomes = verdict["outcomes"]
    assert outcomes["expose sibling"] == outcomes["unexpose sibling's"] == "not_found"
    assert verdict["listed"] == []
    # The host's path is not in its view, and its loopback is its own.
    assert outcomes["sibling's exposure path"] == "ENOENT"
    assert outcomes["sibling's port on own loopback"] == "ECONNREFUSED"
    assert outcomes["expose self over tcp"] == "invalid_argument"
    # Even its own exposure is a host address, out of its view.
    assert outcomes["own exposure path"] == "ENOENT"
    assert hostile.alive()


def test_the_exposed_agent_still_has_no_network(hostile: HostileKernel, served: dict[str, Any]) -> None:
    with hostile.admin.expose(served["name"], 8000, tcp=True) as exposure:
        assert exposure.tcp is not None
        target = {"tcp": int(exposure.tcp.rsplit(":", 1)[1]), "path": exposure.path}
        with _unix(exposure.path) as sock:
            answer = _get(sock, "/probe/" + urllib.parse.quote(json.dumps(target)))
    report = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert report["interfaces"] == ["lo"]
    assert report["outcomes"] == {"exposure tcp": "ECONNREFUSED", "exposure path": "ENOENT",
                                  "outside": "ENETUNREACH"}
