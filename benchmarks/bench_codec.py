"""Frame codec cost per frame, for both twins: ``agentos.protocol.codec_py`` and the
compiled ``agentos._fast.codec`` (skipped, with the reason, when it is not built)."""
from __future__ import annotations

import importlib
from types import ModuleType

import pytest
from noop_cases import LARGE_PAYLOAD, PIPELINE_BATCH

from agentos.protocol import Op, codec_py

SMALL = b"x" * 32
LARGE = bytes(range(256)) * (LARGE_PAYLOAD // 256)


@pytest.fixture(params=["py", "fast"])
def codec(request) -> ModuleType:
    if request.param == "py":
        return codec_py
    try:
        return importlib.import_module("agentos._fast.codec")
    except ImportError as exc:
        pytest.skip(f"agentos._fast.codec is not built ({exc}); pip install -e . builds it")


def per_frame(benchmark, frames: int) -> None:
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["ns_per_frame"] = benchmark.stats.stats.median * 1e9 / frames


@pytest.mark.parametrize("payload", [b"", SMALL, LARGE], ids=["empty", "32B", "64KiB"])
def test_encode_frame(benchmark, codec, payload):
    benchmark.group = f"codec encode_frame {len(payload)}B"
    frame = benchmark(codec.encode_frame, Op.NOOP, 7, payload)
    assert len(frame) == 16 + len(payload)


def test_append_batch(benchmark, codec):
    """Encoding a pipelined batch into one buffer, as ``Client.noop_batch`` does."""
    append_frame = codec.append_frame

    def encode_batch() -> bytearray:
        buf = bytearray()
        for rid in range(PIPELINE_BATCH):
            append_frame(buf, 0, rid, SMALL)
        return buf

    benchmark.group = f"codec append_frame x{PIPELINE_BATCH}"
    buf = benchmark(encode_batch)
    assert len(buf) == PIPELINE_BATCH * (16 + len(SMALL))
    per_frame(benchmark, PIPELINE_BATCH)


@pytest.mark.parametrize("payload", [b"", SMALL, LARGE], ids=["empty", "32B", "64KiB"])
def test_decode_one(benchmark, codec, payload):
    data = codec_py.encode_frame(Op.NOOP, 7, payload)
    decoder = codec.FrameDecoder()
    benchmark.group = f"codec decode one {len(payload)}B"
    frames = benchmark(decoder.feed, data)
    assert len(frames) == 1 and bytes(frames[0].payload) == payload


def test_decode_batch(benchmark, codec):
    """One 256 KiB-ish read holding a pipelined burst of small frames."""
    data = b"".join(codec_py.encode_frame(Op.NOOP, rid, SMALL) for rid in range(PIPELINE_BATCH))
    decoder = codec.FrameDecoder()
    benchmark.group = f"codec decode x{PIPELINE_BATCH}"
    frames = benchmark(decoder.feed, data)
    assert len(frames) == PIPELINE_BATCH and frames[-1].request_id == PIPELINE_BATCH - 1
    per_frame(benchmark, PIPELINE_BATCH)


def test_decode_large_in_chunks(benchmark, codec):
    """A 64 KiB frame arriving in 4 KiB reads (the reassembly path)."""
    data = codec_py.encode_frame(Op.NOOP, 1, LARGE)
    chunks = [data[i:i + 4096] for i in range(0, len(data), 4096)]
    decoder = codec.FrameDecoder()

    def feed_all() -> list:
        frames = []
        for chunk in chunks:
            frames += decoder.feed(chunk)
        return frames

    benchmark.group = "codec decode 64KiB in 4KiB chunks"
    frames = benchmark(feed_all)
    assert len(frames) == 1 and bytes(frames[0].payload) == LARGE
