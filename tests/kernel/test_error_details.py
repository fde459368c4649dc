"""The error answers docs/protocol.md promises a client writer, read as raw frames."""
from __future__ import annotations

import pytest

from agentos.protocol import Op

FIELDS = {
    b'{"limits": {"pids": "many"}}': "limits.pids",
    b'{"args": ["a", 2]}': "args[1]",
    b'{"nme": "x"}': "nme",
    b"[]": "(payload)",
}


@pytest.mark.parametrize("payload", list(FIELDS), ids=list(FIELDS.values()))
def test_a_wrong_value_is_named_by_its_path(kernel, raw, payload: bytes) -> None:
    c = raw()
    c.request(Op.SPAWN, 1, payload)
    err = c.read_error()
    assert (err["code"], err["details"]) == ("invalid_argument", {"field": FIELDS[payload]})


@pytest.mark.parametrize("payload", [b'{"timeout": NaN}', b'{"timeout": Infinity}', b'{"name": "\\udfff"}',
                                     b'{"name": "\xff"}', b'{"timeout": 1} {}'])
def test_a_payload_that_is_not_strict_json_has_no_details(kernel, raw, payload: bytes) -> None:
    c = raw()
    c.request(Op.RECV, 1, payload)
    err = c.read_error()
    assert err["code"] == "invalid_argument" and "details" not in err


def test_ready_from_an_outside_client_is_invalid_argument(kernel, raw) -> None:
    c = raw()
    c.request(Op.READY, 1)
    err = c.read_error()
    assert err["code"] == "invalid_argument" and "spawned agent" in err["message"]
