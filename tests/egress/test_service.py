"""The HTTP syscall in process against servers on 127.0.0.1/127.0.0.2 that stand for internal
services, with a resolver of our own: the resolved address is checked, the connection goes to
the address that was checked, and each caller fetches within its own list."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from agentos import InvalidArgument, PermissionDenied, Unavailable
from agentos.egress.service import EgressService
from agentos.kernel.config import KernelConfig
from agentos.kernel.identity import Identity

from .servers import Internal, TableResolver

OUTSIDE = Identity(pid=1, uid=0, gid=0, admin=True)


def agent(agent_id: str) -> Identity:
    return Identity(pid=2, uid=0, gid=0, agent_id=agent_id)


class FakeCall:
    """What the HTTP handler reads of a call: who asks, and the arguments."""

    def __init__(self, identity: Identity, args: dict[str, Any]) -> None:
        self.identity = identity
        self._args = args

    def args(self) -> dict[str, Any]:
        return self._args


class Harness:
    def __init__(self, service: EgressService, server: Internal, resolver: TableResolver) -> None:
        self.service, self.server, self.resolver = service, server, resolver

    def url(self, host: str, path: str = "/hello") -> str:
        return f"http://{host}:{self.server.port}{path}"

    async def fetch(self, who: Identity, host: str, path: str = "/hello", **args: Any) -> dict[str, Any]:
        reply = await self.service.http(FakeCall(who, {"url": self.url(host, path), **args}))  # type: ignore[arg-type]
        return json.loads(reply["body"]) if reply["status"] == 200 else reply


def run(allow: Callable[[int], Sequence[str]], table: Mapping[str, Sequence[str]],
        body: Callable[[Harness], Awaitable[None]]) -> Internal:
    """Run ``body`` against a service whose kernel list is ``allow(port)``; returns the server."""
    async def main() -> Internal:
        server = await Internal().start()
        resolver = TableResolver(table)
        kernel = SimpleNamespace(config=KernelConfig(sections={"egress": {"allow": list(allow(server.port)),
                                                                          "timeout": "10s"}}))
        service = EgressService(kernel, resolver=resolver)  # type: ignore[arg-type]
        await service.start()
        try:
            await body(Harness(service, server, resolver))
        finally:
            await service.stop()
            await server.stop()
        return server
    return asyncio.run(main())


def test_a_name_that_resolves_to_loopback_is_refused_and_never_contacted() -> None:
    async def body(h: Harness) -> None:
        with pytest.raises(PermissionDenied, match="internal.test resolves to an address that is not public"):
            await h.fetch(OUTSIDE, "internal.test")
    server = run(lambda port: ["internal.test"], {"internal.test": ["127.0.0.1"]}, body)
    assert server.hits == []


def test_loopback_is_reached_when_its_address_is_listed_and_host_stays_the_name() -> None:
    async def body(h: Harness) -> None:
        reply = await h.fetch(OUTSIDE, "internal.test")
        assert reply == {"served_by": "127.0.0.1", "host": f"internal.test:{h.server.port}", "path": "/hello"}
        # A block allows every address in it.
        assert (await h.fetch(OUTSIDE, "block.test"))["served_by"] == "127.0.0.2"
    table = {"internal.test": ["127.0.0.1"], "block.test": ["127.0.0.2"]}
    run(lambda port: ["internal.test", f"127.0.0.1:{port}", "block.test", "127.0.0.2/31"],
        table, body)


def test_null_limits_mean_the_kernels() -> None:
    async def body(h: Harness) -> None:
        assert (await h.fetch(OUTSIDE, "127.0.0.1", timeout=None, max_bytes=None, body=None,
                              headers=None))["path"] == "/hello"
    run(lambda port: ["127.0.0.1"], {}, body)


def test_port_bound_address_entry_does_not_open_other_ports() -> None:
    async def body(h: Harness) -> None:
        with pytest.raises(PermissionDenied):
            await h.fetch(OUTSIDE, "internal.test")
    server = run(lambda port: ["internal.test", f"127.0.0.1:{port + 1}"], {"internal.test": ["127.0.0.1"]}, body)
    assert server.hits == []


def test_no_rebinding_between_check_and_connect() -> None:
    """rebind.test answers 127.0.0.2 (listed) once, then 127.0.0.1 (not listed): each connection
    resolves once and goes to the address that was checked."""
    async def body(h: Harness) -> None:
        assert (await h.fetch(OUTSIDE, "rebind.test"))["served_by"] == "127.0.0.2"
        assert h.resolver.lookups == ["rebind.test"]
        with pytest.raises(PermissionDenied):
            await h.fetch(OUTSIDE, "rebind.test")
    server = run(lambda port: ["rebind.test", "127.0.0.2"], {"rebind.test": ["127.0.0.2", "127.0.0.1"]}, body)
    assert server.served_by("127.0.0.1") == []


def test_redirects_are_checked_by_name_and_by_address() -> None:
    async def body(h: Harness) -> None:
        port = h.server.port
        # An allowed server redirects to an allowed name that resolves inside: refused.
        with pytest.raises(PermissionDenied, match="internal.test resolves"):
            await h.fetch(OUTSIDE, "front.test", f"/redirect/internal.test:{port}")
        # ... to a literal internal address the list does not name: refused by the name check.
        with pytest.raises(PermissionDenied, match="127.0.0.1 is not an allowed"):
            await h.fetch(OUTSIDE, "front.test", f"/redirect/127.0.0.1:{port}")
        # ... to an IPv4-mapped spelling of it: the same.
        with pytest.raises(PermissionDenied):
            await h.fetch(OUTSIDE, "front.test", f"/redirect/[::ffff:127.0.0.1]:{port}")
        with pytest.raises(Unavailable, match="redirected to a URL that cannot be fetched"):
            await h.fetch(OUTSIDE, "front.test", "/redirect/[::1")
    server = run(lambda port: ["front.test", "internal.test", "127.0.0.2"],
                 {"front.test": ["127.0.0.2"], "internal.test": ["127.0.0.1"]}, body)
    assert server.served_by("127.0.0.1") == []


def test_each_caller_fetches_within_its_own_list() -> None:
    async def body(h: Harness) -> None:
        svc = h.service
        # The outside client has the kernel's list and reaches the internal service ...
        assert (await h.fetch(OUTSIDE, "internal.test"))["served_by"] == "127.0.0.1"
        # ... an agent given only the name does not: its connection is not the client's.
        svc.assign("narrow", svc.child_allow(OUTSIDE, ["internal.test"]))
        with pytest.raises(PermissionDenied, match="resolves to an address"):
            await h.fetch(agent("narrow"), "internal.test")
        with pytest.raises(PermissionDenied, match="public.test is not an allowed"):
            await h.fetch(agent("narrow"), "public.test")
        # One that inherits (None) reaches what the kernel's list does.
        svc.assign("wide", svc.child_allow(OUTSIDE, None))
        assert (await h.fetch(agent("wide"), "internal.test"))["served_by"] == "127.0.0.1"
        svc.forget("wide")
        with pytest.raises(PermissionDenied):
            await h.fetch(agent("wide"), "internal.test")
        # An agent nobody assigned a list to reaches nothing.
        with pytest.raises(PermissionDenied):
            await h.fetch(agent("unknown"), "internal.test")
    server = run(lambda port: ["internal.test", "public.test", "127.0.0.1"],
                 {"internal.test": ["127.0.0.1"], "public.test": ["127.0.0.2"]}, body)
    assert len(server.served_by("127.0.0.1")) == 2


def test_child_allow_narrows_down_the_tree() -> None:
    async def body(h: Harness) -> None:
        svc = h.service
        assert svc.child_allow(OUTSIDE, None) == ("*.example.com", "api.test:443", "127.0.0.1")
        parent = svc.child_allow(OUTSIDE, ["a.example.com", "*.b.example.com", "api.test:443", "127.0.0.1"])
        svc.assign("parent", parent)
        assert svc.child_allow(agent("parent"), None) == parent
        assert svc.child_allow(agent("parent"), ["x.b.example.com", "A.example.com:8443"]) == (
            "x.b.example.com", "a.example.com:8443")
        for wider in ["c.example.com", "*.example.com", "api.test", "10.0.0.1", "127.0.0.0/8"]:
            with pytest.raises(PermissionDenied) as info:
                svc.child_allow(agent("parent"), [wider])
            assert info.value.details["field"] == "egress"
        with pytest.raises(PermissionDenied):
            svc.child_allow(OUTSIDE, ["elsewhere.test"])
        with pytest.raises(InvalidArgument) as bad:
            svc.child_allow(agent("parent"), ["a.example.com", "not a host"])
        assert bad.value.details == {"field": "egress[1]"}
        # A parent that was never assigned a list (or was forgotten) gives its children nothing.
        assert svc.child_allow(agent("ghost"), None) == ()
        with pytest.raises(PermissionDenied):
            svc.child_allow(agent("ghost"), ["a.example.com"])
    run(lambda port: ["*.example.com", "api.test:443", "127.0.0.1"], {}, body)


@pytest.mark.parametrize(("args", "match"), [
    ({"headers": {"X-Evil": "a\r\nHost: evil"}}, "cannot be sent"),
    ({"headers": {"X-Evil": "a\nb"}}, "cannot be sent"),
    ({"headers": {"Bad Name": "v"}}, "cannot be sent"),
    ({"headers": {"X-S": "\udfff"}}, "cannot be sent"),
    ({"body": "\udfff"}, "UTF-8 string"),
    ({"headers": {"Host": "evil"}}, "set by the kernel"),
])
def test_request_values_that_cannot_be_sent_are_invalid(args: dict[str, Any], match: str) -> None:
    async def body(h: Harness) -> None:
        with pytest.raises(InvalidArgument, match=match):
            await h.fetch(OUTSIDE, "127.0.0.1", **args)
    server = run(lambda port: ["127.0.0.1"], {}, body)
    assert server.hits == []
