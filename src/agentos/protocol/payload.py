"""Payload encoding shared by both ends: bytes travel raw, ``None`` as nothing, the rest as JSON."""
from __future__ import annotations

from typing import Any

import ujson


def encode_payload(obj: Any) -> bytes:
    """``bytes`` as they are, ``None`` as an empty payload, anything else as UTF-8 JSON."""
    if obj is None:
        return b""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj)
    return ujson.dumps(obj, ensure_ascii=False, reject_bytes=True).encode()


def decode_json(payload: bytes | memoryview) -> Any:
    """A JSON payload's value; an empty payload is ``None``."""
    if not len(payload):
        return None
    return ujson.loads(bytes(payload))
