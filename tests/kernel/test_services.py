"""How services join a kernel: added without patching it, their hooks run only for the opcodes
they concern, and a payload is parsed once however many services read it."""
from __future__ import annotations

from agentos.kernel.hooks import Hooks
from agentos.protocol import Op

from .inspected_kernel import HOOKS, PARSES


def test_hooks_are_looked_up_by_opcode_in_the_order_added() -> None:
    hooks: Hooks[str] = Hooks()
    hooks.add("every")
    hooks.add("spawn", ops=(Op.SPAWN,))
    assert hooks.of(Op.THINK) == ("every",)
    assert hooks.of(Op.SPAWN) == ("every", "spawn")
    # Added later, still found: the table is worked out again.
    hooks.add("both", ops=(Op.SPAWN, Op.THINK))
    hooks.add("last")
    assert hooks.of(Op.THINK) == ("every", "both", "last")
    assert hooks.of(Op.SPAWN) == ("every", "spawn", "both", "last")
    assert hooks.of(0xF0) == ("every", "last"), "an opcode nobody names gets the hooks of every opcode"


def test_extra_services_join_the_kernel_and_hello(inspected_kernel) -> None:
    hello = inspected_kernel.client().hello()
    assert hello["capabilities"]["demo"] == {"demo": True}
    assert "inspection" in hello["capabilities"]


def test_think_pays_only_for_the_hooks_that_concern_it(inspected_kernel) -> None:
    c = inspected_kernel.client()
    think = c._call(HOOKS, {"op": int(Op.THINK)})
    # Permissions and the idle clock concern every syscall, audit records every one; SPAWN's
    # checks (MCP's tools) and the supervisor's KILL/START observer are not THINK's.
    assert think == {"guards": ["PermissionService.guard", "Lifecycle._on_call"],
                     "observers": ["Lifecycle._after_call", "AuditService.observe"]}
    spawn = c._call(HOOKS, {"op": int(Op.SPAWN)})
    assert spawn["guards"] == ["PermissionService.guard", "Lifecycle._on_call", "McpService._check_spawn"]
    assert spawn["observers"] == think["observers"]
    kill = c._call(HOOKS, {"op": int(Op.KILL)})
    assert kill["guards"] == think["guards"]
    assert kill["observers"] == ["Lifecycle._after_call", "SupervisorService._after_call", "AuditService.observe"]


def test_spawn_and_store_payloads_are_parsed_once(inspected_kernel) -> None:
    c = inspected_kernel.client()
    before = c._call(PARSES, {})
    agent = c._call(Op.SPAWN, {"name": "once", "command": ["/bin/true"], "sandboxed": False,
                               "restart": {"policy": "never"}, "llm": {"tokens": 1000},
                               "capabilities": ["think"]})
    c.wait(id=agent["id"])
    c.store("k", {"deep": [1, 2, {"three": 3}]})
    after = c._call(PARSES, {})

    def grew(kind: str, op: str) -> int:
        return after[kind].get(op, 0) - before[kind].get(op, 0)

    # Every service that reads SPAWN or STORE (permissions, the processes service, the supervisor,
    # the LLM gateway, MCP, audit) reads the one request dispatch decoded, never a copy of it.
    assert (grew("decoded", "SPAWN"), grew("copied", "SPAWN")) == (1, 0)
    assert (grew("decoded", "STORE"), grew("copied", "STORE")) == (1, 0)
