"""The many-option calls (``spawn``, ``kill``, ``wait``, ``think``, ``think_stream``,
``count_tokens``) take typed, documented keyword parameters: a typo is Python's
``TypeError`` on both clients, nothing is sent, and the parameters are the wire's fields."""
from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Callable
from typing import Any

import pytest

from agentos import AsyncClient, Client
from agentos.client import processes, think
from agentos.llm.request import FIELDS as THINK_FIELDS
from agentos.protocol.requests import KillRequest, Request, SpawnRequestWire, WaitRequest

#: Each method with a misspelt option, and the arguments it needs besides.
TYPOS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("spawn", ("w", "/bin/true"), {"sandbox": False}),
    ("kill", ("w",), {"grase": 0}),
    ("wait", ("w",), {"timout": 1}),
    ("think", ("hi",), {"temprature": 0.5}),
    ("count_tokens", ("hi",), {"modle": "m"}),
]
#: The request builder each of them takes its parameters from.
BUILDERS: dict[str, Callable[..., dict[str, Any]]] = {
    "spawn": processes.spawn_request, "kill": processes.kill_request,
    "wait": processes.wait_request, "think": think.think_request,
    "think_stream": think.think_request, "count_tokens": think.think_request}


def test_a_typo_is_a_type_error_on_the_blocking_client(kernel) -> None:
    with kernel.client() as c:
        for method, args, typo in TYPOS:
            with pytest.raises(TypeError, match=f"unexpected keyword argument '{next(iter(typo))}'"):
                getattr(c, method)(*args, **typo)
        with pytest.raises(TypeError, match="unexpected keyword argument 'tempreture'"):
            c.think_stream("hi", tempreture=1)
        assert c.list_agents() == []  # nothing was sent, and the connection still serves


def test_a_typo_is_a_type_error_on_the_async_client(kernel) -> None:
    async def main() -> list[dict[str, Any]]:
        async with await AsyncClient.connect(kernel.socket_path) as c:
            for method, args, typo in TYPOS:
                with pytest.raises(TypeError, match=f"unexpected keyword argument '{next(iter(typo))}'"):
                    await getattr(c, method)(*args, **typo)
            with pytest.raises(TypeError, match="unexpected keyword argument 'tempreture'"):
                c.think_stream("hi", tempreture=1)  # type: ignore[call-arg]
            return await c.list_agents()

    assert asyncio.run(main()) == []


def test_a_typed_call_sends_what_the_builder_builds(kernel, tmp_path) -> None:
    path = tmp_path / "sleeper.py"
    path.write_text("import time\ntime.sleep(60)\n")
    with kernel.client() as c:
        info = c.spawn("sleeper", str(path), sandboxed=False, idle_timeout="1h", args=["x"])
        assert info["name"] == "sleeper" and info["status"] == "running"
        killed = c.kill(id=info["id"], grace=0)
        assert killed["killed"] and killed["status"] == "killed"
        assert c.wait("sleeper", timeout=5)["status"] == "killed"


def wire_fields(struct: type[Request]) -> set[str]:
    """A request's own fields: not the ones every request carries (``Request``'s, such as the
    ``traceparent`` that ``Client.trace_with`` adds)."""
    return set(struct.__struct_fields__) - set(Request.__struct_fields__)


def test_the_builders_parameters_are_the_wire_fields() -> None:
    def parameters(builder: Callable[..., Any]) -> set[str]:
        return set(inspect.signature(builder).parameters)

    assert parameters(processes.spawn_request) == wire_fields(SpawnRequestWire)
    # ``agent`` is a positional spelling of ``name``.
    assert parameters(processes.kill_request) - {"agent"} == wire_fields(KillRequest)
    assert parameters(processes.wait_request) - {"agent"} == wire_fields(WaitRequest)
    # ``stream`` is think_stream's, not an option; ``traceparent`` rides on every request.
    assert parameters(think.think_request) | {"stream", *Request.__struct_fields__} == set(THINK_FIELDS)


@pytest.mark.parametrize("cls", [Client, AsyncClient])
def test_the_methods_show_and_document_the_builders_parameters(cls: type) -> None:
    for method, builder in BUILDERS.items():
        member = getattr(cls, method)
        shown = list(inspect.signature(member).parameters)
        assert shown == ["self", *inspect.signature(builder).parameters], method
        doc = inspect.getdoc(member) or ""
        documented = re.findall(r"^    (\w+): ", doc[doc.index("\nArgs:\n"):], re.MULTILINE)
        assert documented == shown[1:], method
