"""THINK's answer carries its model turn compacted (``content_chars``, ``function_call``): the
kernel compacts it (``llm.service``), the SDK restores it (``client.think.full_turn``); both
swap a part's key with this one rule."""
from __future__ import annotations

from typing import Any


def rekeyed(part: dict[str, Any], key: str, new_key: str, value: Any) -> dict[str, Any]:
    """A copy of ``part`` without ``key``, and ``new_key: value`` last."""
    # A copy and a delete: a filtering comprehension costs twice as much, once per part of
    # every answer, at both ends.
    out = dict(part)
    del out[key]
    out[new_key] = value
    return out
