"""docs/protocol.md's hex vectors: both twins must produce and parse exactly those bytes."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import ujson

from agentos import errors

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def _blocks(kind: str) -> list[dict[str, str]]:
    text = DOC.read_text()
    blocks = []
    for body in re.findall(rf"```{kind}\n(.*?)```", text, re.S):
        fields = dict(line.split(": ", 1) for line in body.strip().splitlines())
        blocks.append(fields)
    return blocks


VECTORS = _blocks("vector")
INVALID = _blocks("invalid")


def test_doc_has_vectors() -> None:
    assert len(VECTORS) >= 8 and len(INVALID) >= 5


@pytest.mark.parametrize("vec", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector_encodes_and_decodes(codec, vec) -> None:
    wire = bytes.fromhex(vec["hex"])
    payload = ujson.loads(vec["payload"]).encode("latin-1")
    opcode, flags, rid = int(vec["opcode"], 16), int(vec["flags"], 16), int(vec["request_id"])
    assert codec.encode_frame(opcode, rid, payload, flags) == wire
    frames = codec.FrameDecoder().feed(wire)
    assert [(f.opcode, f.flags, f.request_id, bytes(f.payload)) for f in frames] == \
        [(opcode, flags, rid, payload)]


@pytest.mark.parametrize("vec", INVALID, ids=[v["name"] for v in INVALID])
def test_invalid_header_raises_its_error(codec, vec) -> None:
    exc_type = getattr(errors, vec["error"])
    with pytest.raises(exc_type):
        codec.FrameDecoder().feed(bytes.fromhex(vec["hex"]))
