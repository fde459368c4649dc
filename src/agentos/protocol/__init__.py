"""The agentos wire protocol: constants, and the frame codec (compiled or pure Python)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._extensions import load_twin
from . import codec as codec_py
from .constants import (
    DEFAULT_MAX_PAYLOAD,
    HEADER,
    HEADER_SIZE,
    KNOWN_FLAGS,
    MAGIC,
    VERSION,
    ErrorCode,
    Flag,
    Op,
    op_name,
)

codec = load_twin("codec", codec_py)
if TYPE_CHECKING:
    # Type checkers see the Python twin (the compiled module's stub says it has the same names):
    # the module load_twin returns is only a ModuleType to them.
    from .codec import Frame, FrameDecoder, append_frame, encode_frame
else:
    Frame = codec.Frame
    FrameDecoder = codec.FrameDecoder
    encode_frame = codec.encode_frame
    append_frame = codec.append_frame

__all__ = ["DEFAULT_MAX_PAYLOAD", "HEADER", "HEADER_SIZE", "KNOWN_FLAGS", "MAGIC", "VERSION",
           "ErrorCode", "Flag", "Op", "op_name", "Frame", "FrameDecoder", "encode_frame", "append_frame",
           "codec", "codec_py"]
