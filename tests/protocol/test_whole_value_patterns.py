"""A name is the whole value: a pattern-checked field never lets a trailing newline through
(Python's ``$`` matches before one, so every pattern ends in ``\\Z``). A name ``"box\\n"`` would
otherwise become an agent, a project or a log line that forges another in ``agentos ps``."""
from __future__ import annotations

import re

import msgspec
import pytest

from agentos.errors import InvalidArgument
from agentos.protocol import Op
from agentos.protocol import requests as wire
from agentos.protocol.requests import decode_request

# (opcode, a valid request, the field to spoil): each decodes as given, never with "\n" appended.
CASES = [
    (Op.SPAWN, {"name": "box", "command": ["true"]}, "name"),
    (Op.SPAWN, {"name": "box", "command": ["true"], "project": "team"}, "project"),
    (Op.SPAWN, {"name": "box", "command": ["true"], "template": "base"}, "template"),
    (Op.SPAWN, {"name": "box", "command": ["true"], "hostname": "box"}, "hostname"),
    (Op.KILL, {"name": "team/box"}, "name"),
    (Op.LIST, {"project": "team"}, "project"),
    (Op.EXEC, {"name": "box", "argv": ["true"], "user": "nobody"}, "user"),
    (Op.EXEC_SIGNAL, {"exec": "ab12", "signal": "SIGTERM"}, "signal"),
]


@pytest.mark.parametrize(("op", "valid", "field"), CASES, ids=[f"{op.name}.{f}" for op, _, f in CASES])
def test_a_trailing_newline_is_invalid_argument(op: Op, valid: dict[str, object], field: str) -> None:
    assert decode_request(op, msgspec.json.encode(valid)) is not None
    spoiled = {**valid, field: f"{valid[field]}\n"}
    with pytest.raises(InvalidArgument) as refused:
        decode_request(op, msgspec.json.encode(spoiled))
    assert refused.value.details.get("field") == field or field in refused.value.message


def test_no_pattern_of_the_wire_ends_in_a_bare_dollar() -> None:
    text = open(wire.__file__).read()
    assert not re.findall(r'r"\^[^"\n]*\$"', text)
