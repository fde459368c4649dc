"""Frame codec: both twins, split chunks, batching, limits, and twin agreement on any input."""
from __future__ import annotations

import importlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentos import errors
from agentos.protocol import HEADER_SIZE, codec_py

compiled = importlib.import_module("agentos._fast.codec")


def _fields(frames):
    return [(f.opcode, f.flags, f.request_id, bytes(f.payload)) for f in frames]


def test_frame_split_at_every_byte(codec) -> None:
    wire = (codec.encode_frame(0x10, 7, b'{"a":1}') + codec.encode_frame(0, 8, b"")
            + codec.encode_frame(0x01, 9, b"x" * 300, 0x05))
    for cut in range(len(wire) + 1):
        dec = codec.FrameDecoder()
        got = dec.feed(wire[:cut]) + dec.feed(wire[cut:])
        assert _fields(got) == [(0x10, 0, 7, b'{"a":1}'), (0, 0, 8, b""), (1, 5, 9, b"x" * 300)]
        assert dec.buffered == 0


def test_one_byte_at_a_time(codec) -> None:
    wire = codec.encode_frame(3, 1, b"hello")
    dec = codec.FrameDecoder()
    got = []
    for i in range(len(wire)):
        got += dec.feed(wire[i:i + 1])
        assert dec.buffered == (i + 1) % len(wire)
    assert _fields(got) == [(3, 0, 1, b"hello")]


def test_many_frames_in_one_chunk(codec) -> None:
    buf = bytearray()
    for i in range(1000):
        codec.append_frame(buf, 0, i, str(i).encode())
    frames = codec.FrameDecoder().feed(bytes(buf))
    assert [(f.request_id, bytes(f.payload)) for f in frames] == [(i, str(i).encode()) for i in range(1000)]


def test_payload_views_survive_later_feeds(codec) -> None:
    dec = codec.FrameDecoder()
    wire = codec.encode_frame(0, 1, b"first") + codec.encode_frame(0, 2, b"sec")
    first = dec.feed(wire[:-1])
    assert bytes(first[0].payload) == b"first"
    dec.feed(wire[-1:])
    dec.feed(codec.encode_frame(0, 3, b"zzzzz"))
    assert bytes(first[0].payload) == b"first"
    assert first[0].payload.readonly


def test_too_large_is_refused_from_the_header_alone(codec) -> None:
    dec = codec.FrameDecoder(max_payload=1024)
    header = codec.encode_frame(0, 1, b"x" * 1025)[:HEADER_SIZE]
    with pytest.raises(errors.FrameTooLarge, match="1025 exceeds the maximum of 1024"):
        dec.feed(header)
    assert dec.buffered == 0
    with pytest.raises(errors.FrameTooLarge):  # stays failed
        dec.feed(codec.encode_frame(0, 2, b""))


def test_exact_maximum_is_accepted(codec) -> None:
    dec = codec.FrameDecoder(max_payload=1024)
    assert len(dec.feed(codec.encode_frame(0, 1, b"x" * 1024))) == 1


def test_truncated_frame_waits_for_more(codec) -> None:
    dec = codec.FrameDecoder()
    assert dec.feed(codec.encode_frame(0, 1, b"abcdef")[:-2]) == []
    assert dec.buffered == HEADER_SIZE + 4


@pytest.mark.parametrize("args, message", [
    ((256, 1, b""), "opcode 256"),
    ((-1, 1, b""), "opcode -1"),
    ((0, 2**32, b""), "request id"),
    ((0, -1, b""), "request id"),
    ((0, 1, b"", 0x10), "flags"),
])
def test_encoder_rejects_out_of_range_fields(codec, args, message) -> None:
    with pytest.raises(ValueError, match=message):
        codec.encode_frame(*args)


def test_error_messages_are_specific(codec) -> None:
    with pytest.raises(errors.BadMagic, match="bad magic 0x4547"):
        codec.FrameDecoder().feed(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(errors.UnsupportedVersion, match="version 9"):
        codec.FrameDecoder().feed(b"AO\x09" + bytes(13))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 255), st.integers(0, 2**32 - 1), st.binary(max_size=200),
                          st.sampled_from([0, 1, 3, 5, 13])), max_size=20),
       st.lists(st.integers(1, 64), max_size=30))
def test_twins_agree_on_valid_streams(frames, cuts) -> None:
    wire = b"".join(codec_py.encode_frame(op, rid, p, fl) for op, rid, p, fl in frames)
    assert wire == b"".join(compiled.encode_frame(op, rid, p, fl) for op, rid, p, fl in frames)
    results = []
    for mod in (codec_py, compiled):
        dec = mod.FrameDecoder()
        got, pos = [], 0
        for cut in cuts:
            got += dec.feed(wire[pos:pos + cut])
            pos += cut
        got += dec.feed(wire[pos:])
        results.append((_fields(got), dec.buffered))
    assert results[0] == results[1] == ([(op, fl, rid, p) for op, rid, p, fl in frames], 0)


def _outcome(mod, chunks, max_payload):
    dec = mod.FrameDecoder(max_payload=max_payload)
    got = []
    try:
        for chunk in chunks:
            got += dec.feed(chunk)
    except errors.ProtocolError as exc:
        return _fields(got), type(exc).__name__, str(exc)
    return _fields(got), None, dec.buffered


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8), st.integers(0, 100))
def test_twins_agree_on_arbitrary_bytes(chunks, max_payload) -> None:
    assert _outcome(codec_py, chunks, max_payload) == _outcome(compiled, chunks, max_payload)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=16, max_size=16), st.binary(max_size=40))
def test_twins_agree_on_mutated_headers(header, rest) -> None:
    # Start from a valid magic/version half the time so later checks are reached too.
    for candidate in (header, b"AO\x01" + header[3:]):
        chunks = [candidate + rest]
        assert _outcome(codec_py, chunks, 32) == _outcome(compiled, chunks, 32)


def test_error_carries_frames_decoded_before_it(codec) -> None:
    wire = codec.encode_frame(0, 1, b"a") + codec.encode_frame(0, 2, b"b") + b"XX" + bytes(14)
    with pytest.raises(errors.BadMagic) as info:
        codec.FrameDecoder().feed(wire)
    assert _fields(info.value.frames) == [(0, 0, 1, b"a"), (0, 0, 2, b"b")]
