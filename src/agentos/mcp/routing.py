"""THINK with ``tools: "mcp"``: the kernel runs the tool loop itself.

The model is offered exactly the MCP tools the agent's allowlists allow; each function call it
makes is checked again (a call outside the list is refused in a function response the model
can read, and audited), waits for a human where a rule says ``approve``, and is run on its
server; the results go back to the model until it answers in text or ``max_steps`` turns pass.
The agent sees each step as a STREAM chunk (with ``stream``): ``{tool_call}``,
``{awaiting_approval}``, ``{tool_result}``, then the answer's ``{text}`` and ``{final}``; END
carries the answer, with ``tool_calls`` listing what ran. The agent never talks to a server.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..client.think import full_turn
from ..errors import InvalidArgument
from ..protocol.function_calls import function_response_parts
from ..protocol.payload import decode_json, encode_payload
from .approvals import APPROVED, USED
from .servers import ToolFailed

if TYPE_CHECKING:
    from ..kernel.syscalls import Call
    from ..llm.callers import Caller
    from ..llm.request import ThinkArgs
    from ..llm.service import LLMService
    from .service import McpService

log = logging.getLogger("agentos.mcp")


async def think_with_tools(mcp: McpService, llm: LLMService, call: Call, args: ThinkArgs, caller: Caller) -> bytes:
    policy = mcp.policy(call.identity)
    offered = [tool.declaration() for tool in await mcp.tools() if policy.allows(tool.qualified)]
    declarations = _declarable(llm, offered)
    step = replace(args, functions=tuple(declarations), stream=False, mcp_tools=False)
    conversation = list(args.turns)
    ran: list[dict[str, Any]] = []
    usage: dict[str, Any] = {}
    for _ in range(mcp.config.max_steps):
        answer = decode_json(await llm._think(call, replace(step, turns=conversation), caller))
        _add_usage(usage, answer.get("tokens"))
        if not answer["success"] or not answer["function_calls"]:
            return await _final(call, args, answer, ran, usage)
        results = []
        for function_call in answer["function_calls"]:
            result = await _run(mcp, call, args.stream, policy, function_call)
            ran.append({"tool": function_call["name"], "args": function_call.get("args") or {},
                        "error": result["response"].get("error")})
            results.append(result)
        turn = full_turn(answer["turn"], answer.get("content") or "", answer["function_calls"])
        responses = {"role": "user", "parts": function_response_parts(results)}
        # A context keeps the history in the kernel: each step adds only its new turn.
        conversation = [responses] if args.context is not None else [*conversation, turn, responses]
    answer["success"] = False
    answer["error"] = {"type": "step_limit", "message": f"the model still asked for tools after "
                       f"{mcp.config.max_steps} steps (mcp.max_steps)"}
    return await _final(call, args, answer, ran, usage)


def _declarable(llm: LLMService, declarations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tools the provider can be offered; one whose schema it cannot take is left out."""
    provider = llm._provider
    if provider is None:
        return declarations
    out = []
    for declaration in declarations:
        try:
            provider.check_functions([declaration])
        except InvalidArgument as exc:
            log.warning("MCP tool %s is not offered: its input schema: %s", declaration["name"], exc)
            continue
        out.append(declaration)
    return out


async def _run(mcp: McpService, call: Call, stream: bool, policy: Any,
               function_call: dict[str, Any]) -> dict[str, Any]:
    """One function call: checked, maybe approved, run; the function response for the model."""
    name = function_call["name"]
    arguments = function_call.get("args") or {}
    identity = call.identity
    out: dict[str, Any] = {"name": name, **({"id": function_call["id"]} if function_call.get("id") else {})}
    if stream:
        await call.stream({"tool_call": {"tool": name, "args": arguments}})
    server = mcp.server_of(name)
    if not policy.allows(name) or server is None or name not in server.tools:
        why = "is not in this agent's tools" if server is not None else "is not a tool of this kernel"
        mcp.audit(identity, "TOOL_CALL", name, "permission_denied")
        error = {"type": "permission_denied", "message": f"tool {name!r} {why}; call only the "
                 "functions you were given"}
        return await _answered(call, stream, out, name, {"error": error})
    if policy.needs_approval(name):
        record = mcp.request_approval(identity, name, arguments)
        if record.status == "pending":
            if stream:
                await call.stream({"awaiting_approval": {"id": record.id, "tool": name, "args": arguments,
                                                         "expires_at": record.expires_at}})
            record = await mcp.queue.wait(record)
        if record.status not in (APPROVED, USED):
            mcp.audit(identity, "TOOL_CALL", name, record.status, approval=record.id)
            error = {"type": "denied" if record.status == "denied" else record.status,
                     "message": f"a human did not approve {name}" + (f": {record.reason}" if record.reason else "")}
            return await _answered(call, stream, out, name, {"error": error})
    try:
        response = await server.call(name.partition(".")[2], arguments)
    except ToolFailed as failure:
        mcp.audit(identity, "TOOL_CALL", name, failure.kind)
        return await _answered(call, stream, out, name, {"error": failure.to_dict()})
    mcp.audit(identity, "TOOL_CALL", name, "error" if response.get("is_error") else "ok")
    return await _answered(call, stream, out, name, response)


async def _answered(call: Call, stream: bool, out: dict[str, Any], name: str,
                    response: dict[str, Any]) -> dict[str, Any]:
    if stream:
        await call.stream({"tool_result": {"tool": name, **response}})
    out["response"] = response
    return out


async def _final(call: Call, args: ThinkArgs, answer: dict[str, Any], ran: list[dict[str, Any]],
                 usage: dict[str, Any]) -> bytes:
    answer["tool_calls"] = ran
    if usage:
        answer["tokens"] = usage
    if args.stream:
        content = answer.pop("content", None)
        if content:
            await call.stream({"text": content})
        await call.stream({"final": {"success": answer["success"], "tool_calls": len(ran)}})
    return encode_payload(answer)


def _add_usage(total: dict[str, Any], tokens: Any) -> None:
    """Every step's tokens: the loop's answer is billed as the sum of its model turns."""
    if not isinstance(tokens, dict):
        return
    for key, value in tokens.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            total[key] = total.get(key, 0) + value
        elif key not in total:
            total[key] = value
