# cython: language_level=3, wraparound=False, cdivision=True
"""Compiled twin of ``agentos.protocol.codec``: same names, same behaviour, C speed."""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from libc.string cimport memcpy
from libc.stdint cimport uint32_t

from agentos._fast.frame cimport (Header, read_header, header_status, write_header, HEADER_SIZE,
                                  HEADER_OK, KNOWN_FLAGS)

from agentos.protocol.constants import DEFAULT_MAX_PAYLOAD
# Error path only: one source for the messages, shared with the Python twin.
from agentos.protocol.codec import header_error

cdef unsigned long long U32_MAX = 0xFFFFFFFF


# Frames come and go by the batch (one per request): reuse their memory instead of a malloc each.
@cython.freelist(256)
@cython.final
cdef class Frame:
    """One decoded frame. ``payload`` is a read-only ``memoryview`` (zero-copy)."""

    cdef readonly int opcode
    cdef readonly int flags
    cdef readonly unsigned int request_id
    cdef object _buf        # the immutable bytes the payload lives in
    cdef Py_ssize_t _start
    cdef Py_ssize_t _length

    @property
    def payload(self):
        # Made on access: callers that only route frames never pay for the view.
        return memoryview(self._buf)[self._start:self._start + self._length]

    def __repr__(self):
        return (f"Frame(opcode=0x{self.opcode:02x}, flags=0x{self.flags:02x}, "
                f"request_id={self.request_id}, payload={self._length} bytes)")


cdef inline Frame _make_frame(const Header* h, object buf, Py_ssize_t start):
    cdef Frame f = Frame.__new__(Frame)
    f.opcode = h.opcode
    f.flags = h.flags
    f.request_id = h.request_id
    f._buf = buf
    f._start = start
    f._length = h.length
    return f


cdef _check_fields(long long opcode, long long flags, long long request_id, Py_ssize_t length):
    if not 0 <= opcode <= 0xFF:
        raise ValueError(f"opcode {opcode} does not fit in a byte")
    if flags & ~KNOWN_FLAGS or flags < 0:
        raise ValueError(f"flags 0x{flags:x} has bits the protocol does not define")
    if not 0 <= request_id <= <long long>U32_MAX:
        raise ValueError(f"request id {request_id} does not fit in 32 bits")
    if <unsigned long long>length > U32_MAX:
        raise ValueError(f"payload of {length} bytes does not fit in 32 bits")


def encode_frame(long long opcode, long long request_id, payload=b"", long long flags=0):
    """Return the bytes of one frame."""
    cdef Py_buffer view
    PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
    try:
        _check_fields(opcode, flags, request_id, view.len)
        out = PyBytes_FromStringAndSize(NULL, HEADER_SIZE + view.len)
        write_header(PyBytes_AS_STRING(out), <int>opcode, <int>flags, <uint32_t>request_id,
                     <uint32_t>view.len)
        if view.len:
            memcpy(PyBytes_AS_STRING(out) + HEADER_SIZE, view.buf, view.len)
        return out
    finally:
        PyBuffer_Release(&view)


def append_frame(bytearray buf, long long opcode, long long request_id, payload=b"",
                 long long flags=0):
    """Append one frame to ``buf`` (batching many frames into one write)."""
    cdef Py_buffer view
    cdef Py_ssize_t start = PyByteArray_GET_SIZE(buf)
    PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
    try:
        _check_fields(opcode, flags, request_id, view.len)
        PyByteArray_Resize(buf, start + HEADER_SIZE + view.len)
        write_header(PyByteArray_AS_STRING(buf) + start, <int>opcode, <int>flags,
                     <uint32_t>request_id, <uint32_t>view.len)
        if view.len:
            memcpy(PyByteArray_AS_STRING(buf) + start + HEADER_SIZE, view.buf, view.len)
    finally:
        PyBuffer_Release(&view)


@cython.final
cdef class FrameDecoder:
    """Incremental decoder: feed it chunks of any size, get whole frames back.

    Header fields are validated as soon as the 16 header bytes are in, so an
    oversized length is refused before any of its payload is buffered. The
    ``ProtocolError`` raised carries ``.frames``: the valid frames that preceded
    the bad header in that chunk. After an error the decoder stays failed: every
    later ``feed`` raises the same error (with no frames).
    """

    cdef readonly unsigned long long max_payload
    cdef list _parts
    cdef Py_ssize_t _size
    cdef Py_ssize_t _need
    cdef object _error

    def __init__(self, long long max_payload=DEFAULT_MAX_PAYLOAD):
        if max_payload < 0:
            raise ValueError("max_payload must be >= 0")
        self.max_payload = <unsigned long long>max_payload if max_payload <= <long long>U32_MAX else U32_MAX
        self._parts = []
        self._size = 0
        self._need = HEADER_SIZE
        self._error = None

    @property
    def buffered(self):
        """Bytes received but not yet returned as a frame."""
        return self._size

    def feed(self, data):
        """Take a chunk, return every frame it completes (possibly none)."""
        cdef bytes buf
        cdef Header h
        cdef int status
        cdef Py_ssize_t pos = 0, end, need = HEADER_SIZE
        cdef const char* p
        if self._error is not None:
            raise self._error
        chunk = data if type(data) is bytes else bytes(data)
        if self._parts:
            self._parts.append(chunk)
            self._size += PyBytes_GET_SIZE(chunk)
            if self._size < self._need:
                return []
            buf = b"".join(self._parts)
        else:
            buf = chunk
        frames = []
        end = PyBytes_GET_SIZE(buf)
        p = PyBytes_AS_STRING(buf)
        while end - pos >= HEADER_SIZE:
            read_header(p + pos, &h)
            status = header_status(&h, <uint32_t>self.max_payload)
            if status != HEADER_OK:
                self._error = header_error(h.magic, h.version, h.flags, h.reserved, h.length,
                                           self.max_payload)
                self._parts = []
                self._size = 0
                self._error.frames = frames
                raise self._error
            if end - pos - HEADER_SIZE < <Py_ssize_t>h.length:
                need = HEADER_SIZE + h.length
                break
            frames.append(_make_frame(&h, buf, pos + HEADER_SIZE))
            pos += HEADER_SIZE + h.length
        if pos < end:
            self._parts = [buf[pos:]]
        else:
            self._parts = []
        self._size = end - pos
        self._need = need
        return frames
