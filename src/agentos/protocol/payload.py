"""Payload encoding shared by both ends: bytes travel raw, ``None`` as nothing, the rest as JSON.

JSON is strict both ways (RFC 8259): a non-finite float is written as ``null``, and
reading refuses NaN, Infinity and lone surrogates. A string with a lone surrogate
(which UTF-8 cannot carry) is written with ``?`` in its place, so every reply can
be encoded and every request ends with exactly one final frame.
"""
from __future__ import annotations

from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def encode_payload(obj: Any) -> bytes:
    """``bytes`` as they are, ``None`` as an empty payload, anything else as UTF-8 JSON."""
    if obj is None:
        return b""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj)
    try:
        return _encoder.encode(obj)
    except UnicodeEncodeError:
        return _encoder.encode(_scrub(obj))


def decode_json(payload: bytes | memoryview) -> Any:
    """A JSON payload's value; an empty payload is ``None``. Raises ``ValueError`` if malformed."""
    if not len(payload):
        return None
    try:
        return _decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise ValueError(str(exc)) from None
    except RecursionError:
        raise ValueError("JSON is nested too deeply") from None


def _scrub(obj: Any) -> Any:
    """``obj`` with every string made encodable (lone surrogates -> ``?``)."""
    if isinstance(obj, str):
        return obj.encode("utf-8", "replace").decode()
    if isinstance(obj, dict):
        return {_scrub(key): _scrub(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_scrub(item) for item in obj]
    return obj
