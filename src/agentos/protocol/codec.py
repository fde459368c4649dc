"""Pure-Python twin of ``agentos._fast.codec``: frame encoder and incremental decoder.

Both twins expose the same names and behave identically on every input (the
property tests in tests/test_codec.py hold them to it).
"""
from __future__ import annotations

from ..errors import BadFrame, BadMagic, FrameTooLarge, ProtocolError, UnsupportedVersion
from .constants import DEFAULT_MAX_PAYLOAD, HEADER, HEADER_SIZE, KNOWN_FLAGS, MAGIC, VERSION

_pack_into = HEADER.pack_into
_unpack_from = HEADER.unpack_from
_U32_MAX = 0xFFFFFFFF


class Frame:
    """One decoded frame. ``payload`` is a read-only ``memoryview`` (zero-copy)."""

    __slots__ = ("opcode", "flags", "request_id", "payload")

    def __init__(self, opcode: int, flags: int, request_id: int, payload: memoryview) -> None:
        self.opcode = opcode
        self.flags = flags
        self.request_id = request_id
        self.payload = payload

    def __repr__(self) -> str:
        return (f"Frame(opcode=0x{self.opcode:02x}, flags=0x{self.flags:02x}, "
                f"request_id={self.request_id}, payload={len(self.payload)} bytes)")


def _check_fields(opcode: int, flags: int, request_id: int, length: int) -> None:
    if not 0 <= opcode <= 0xFF:
        raise ValueError(f"opcode {opcode} does not fit in a byte")
    if flags & ~KNOWN_FLAGS or flags < 0:
        raise ValueError(f"flags 0x{flags:x} has bits the protocol does not define")
    if not 0 <= request_id <= _U32_MAX:
        raise ValueError(f"request id {request_id} does not fit in 32 bits")
    if length > _U32_MAX:
        raise ValueError(f"payload of {length} bytes does not fit in 32 bits")


def encode_frame(opcode: int, request_id: int, payload: bytes | bytearray | memoryview = b"",
                 flags: int = 0) -> bytes:
    """Return the bytes of one frame."""
    buf = bytearray()
    append_frame(buf, opcode, request_id, payload, flags)
    return bytes(buf)


def append_frame(buf: bytearray, opcode: int, request_id: int,
                 payload: bytes | bytearray | memoryview = b"", flags: int = 0) -> None:
    """Append one frame to ``buf`` (batching many frames into one write)."""
    length = len(payload) if not isinstance(payload, memoryview) else payload.nbytes
    _check_fields(opcode, flags, request_id, length)
    start = len(buf)
    buf += bytes(HEADER_SIZE)
    _pack_into(buf, start, MAGIC, VERSION, opcode, flags, 0, request_id, length)
    buf += payload


class FrameDecoder:
    """Incremental decoder: feed it chunks of any size, get whole frames back.

    Header fields are validated as soon as the 16 header bytes are in, so an
    oversized length is refused before any of its payload is buffered. The
    ``ProtocolError`` raised carries ``.frames``: the valid frames that preceded
    the bad header in that chunk. After an error the decoder stays failed: every
    later ``feed`` raises the same error (with no frames).
    """

    __slots__ = ("max_payload", "_parts", "_size", "_need", "_error")

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        if max_payload < 0:
            raise ValueError("max_payload must be >= 0")
        self.max_payload = max_payload
        # A partial frame is kept as a list of chunks and joined once, when enough
        # bytes are in: large frames arriving in small chunks cost O(n), not O(n^2).
        self._parts: list[bytes] = []
        self._size = 0
        self._need = HEADER_SIZE
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return self._size

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Take a chunk, return every frame it completes (possibly none)."""
        if self._error is not None:
            raise self._error
        chunk = bytes(data)
        if self._parts:
            self._parts.append(chunk)
            self._size += len(chunk)
            if self._size < self._need:
                return []
            buf = b"".join(self._parts)
        else:
            buf = chunk
        frames: list[Frame] = []
        pos = 0
        end = len(buf)
        view = memoryview(buf)
        need = HEADER_SIZE
        while end - pos >= HEADER_SIZE:
            magic, version, opcode, flags, reserved, request_id, length = _unpack_from(buf, pos)
            err = header_error(magic, version, flags, reserved, length, self.max_payload)
            if err is not None:
                self._error = err
                self._parts, self._size = [], 0
                err.frames = frames
                raise err
            if end - pos - HEADER_SIZE < length:
                need = HEADER_SIZE + length
                break
            start = pos + HEADER_SIZE
            frames.append(Frame(opcode, flags, request_id, view[start:start + length]))
            pos = start + length
        rest = end - pos
        self._parts = [buf[pos:]] if rest else []
        self._size = rest
        self._need = need
        return frames


def header_error(magic: int, version: int, flags: int, reserved: int, length: int,
                 max_payload: int) -> ProtocolError | None:
    """The error a bad header gets, or None for a good one (both twins use these words)."""
    if magic != MAGIC:
        return BadMagic(f"bad magic 0x{magic:04x} (expected 0x{MAGIC:04x}, b'AO')")
    if version != VERSION:
        return UnsupportedVersion(f"unsupported protocol version {version} (this peer speaks {VERSION})")
    if flags & ~KNOWN_FLAGS:
        return BadFrame(f"unknown flag bits 0x{flags & ~KNOWN_FLAGS:04x}")
    if reserved:
        return BadFrame(f"reserved header field is 0x{reserved:04x}, must be 0")
    if length > max_payload:
        return FrameTooLarge(f"payload length {length} exceeds the maximum of {max_payload} bytes")
    return None
