"""Function responses on the wire: what an agent's tool results become in a THINK request.

Shared by the kernel (which reads ``function_responses``) and the SDK (whose tool loop sends
them), so both hold one rule.
"""
from __future__ import annotations

from typing import Any

from ..errors import InvalidArgument


def function_response_parts(raw: Any) -> list[dict[str, Any]]:
    """``[{id?, name, response}]`` as Gemini ``functionResponse`` parts."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidArgument("THINK: function_responses must be a list of {id?, name, response}")
    parts = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidArgument(f"THINK: function_responses[{index}] needs a 'name'")
        response = item.get("response")
        answer: dict[str, Any] = {"name": item["name"],
                                  # Gemini wants an object; scalars and lists are wrapped as the SDK does.
                                  "response": response if isinstance(response, dict)
                                  else {"result": response}}
        if item.get("id"):
            answer["id"] = str(item["id"])
        parts.append({"functionResponse": answer})
    return parts
