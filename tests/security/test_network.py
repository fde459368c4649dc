"""A sandboxed agent without network reaches nothing of the host's: not its loopback (TCP,
UDP, abstract unix sockets), not its resolver, not raw or packet sockets, not its routing."""
from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import HostileKernel


@pytest.fixture(scope="module")
def listeners() -> Iterator[dict[str, Any]]:
    """Host listeners an escaped agent would reach: a TCP and a UDP port on 127.0.0.1, an abstract socket."""
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
            socket.socket(socket.AF_UNIX) as abstract:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(8)
        udp.bind(("127.0.0.1", 0))
        name = f"agentos-sec-{os.getpid()}"
        abstract.bind("\0" + name)
        abstract.listen(8)
        for s in (tcp, udp, abstract):
            s.setblocking(False)
        yield {"sockets": (tcp, udp, abstract),
               "targets": {"tcp": tcp.getsockname()[1], "udp": udp.getsockname()[1], "abstract": name}}


@pytest.fixture(scope="module")
def network(hostile: HostileKernel, listeners: dict[str, Any]) -> dict[str, Any]:
    return hostile.attack("net_attack", listeners["targets"])


def _nothing_arrived(listeners: dict[str, Any]) -> None:
    tcp, udp, abstract = listeners["sockets"]
    for server in (tcp, abstract):
        with pytest.raises(BlockingIOError):
            server.accept()
    with pytest.raises(BlockingIOError):
        udp.recv(64)


def test_only_loopback_of_its_own(network: dict[str, Any]) -> None:
    assert network["interfaces"] == ["lo"]


def test_host_loopback_tcp_udp_and_abstract_sockets_unreachable(network: dict[str, Any],
                                                                 listeners: dict[str, Any]) -> None:
    outcomes = network["outcomes"]
    assert outcomes["tcp to the host's loopback"] == "ECONNREFUSED"
    assert outcomes["abstract unix socket of the host"] == "ECONNREFUSED"
    _nothing_arrived(listeners)


def test_no_dns_and_no_route_out(network: dict[str, Any]) -> None:
    assert network["outcomes"]["dns lookup"].startswith("gaierror")
    assert network["outcomes"]["udp to a public resolver"] == "ENETUNREACH"


def test_no_raw_packet_sockets_nor_network_administration(network: dict[str, Any]) -> None:
    outcomes = network["outcomes"]
    assert outcomes["raw ip socket"] == "EPERM"
    assert outcomes["packet socket"] == "EPERM"
    assert outcomes["netlink: create an interface"] == "EPERM"
