"""Sizes, durations and cores written as text pass the wire pattern but may still be out of
range ("0", "2000T", "999999999h"): each is invalid_argument naming its field, never internal."""
from __future__ import annotations

import json
from typing import Any

import pytest

from agentos.protocol import Op

CASES: dict[str, tuple[Op, dict[str, Any], str]] = {
    "memory zero": (Op.SPAWN, {"limits": {"memory": "0"}}, "limits.memory"),
    "memory over 1 PiB": (Op.SPAWN, {"limits": {"memory": "2000T"}}, "limits.memory"),
    "cpu zero": (Op.SPAWN, {"limits": {"cpu": "0m"}}, "limits.cpu"),
    "cpu over any host": (Op.SPAWN, {"limits": {"cpu": "999999"}}, "limits.cpu"),
    "tmp zero": (Op.SPAWN, {"limits": {"tmp": "0Mi"}}, "limits.tmp"),
    "wait timeout over a year": (Op.WAIT, {"timeout": "999999999h"}, "timeout"),
    "kill grace over a year": (Op.KILL, {"grace": "999999999h", "wait": False}, "grace"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_out_of_range_unit_text_is_invalid_argument(kernel, raw, case: str) -> None:
    op, fields, field = CASES[case]
    with kernel.client() as admin:
        target = admin.spawn("target", command=["/bin/sleep", "60"], sandboxed=False)
    payload = {"command": ["/bin/true"], "sandboxed": False, **fields} if op == Op.SPAWN else {
        "id": target["id"], **fields}
    c = raw()
    c.request(op, 1, json.dumps(payload).encode())
    err = c.read_error()
    assert (err["code"], err.get("details", {}).get("field")) == ("invalid_argument", field), err
    assert "internal" not in kernel.log()
