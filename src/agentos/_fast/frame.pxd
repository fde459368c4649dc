# The frame header in C, shared by codec.pyx and reactor.pyx (inline: compiled into each).
# Layout (little-endian): magic u16, version u8, opcode u8, flags u16, reserved u16,
# request id u32, payload length u32. Decoded byte by byte so it is right on any host;
# compilers turn these into plain loads on little-endian machines.
from libc.stdint cimport uint8_t, uint16_t, uint32_t

cdef enum:
    HEADER_SIZE = 16
    FRAME_MAGIC = 0x4F41
    FRAME_VERSION = 1
    KNOWN_FLAGS = 0x0F
    FLAG_REPLY = 0x01
    FLAG_ERROR = 0x02
    FLAG_STREAM = 0x04
    FLAG_END = 0x08

# header_status() results
cdef enum:
    HEADER_OK = 0
    HEADER_BAD_MAGIC = 1
    HEADER_BAD_VERSION = 2
    HEADER_BAD_FLAGS = 3
    HEADER_BAD_RESERVED = 4
    HEADER_TOO_LARGE = 5

cdef struct Header:
    uint16_t magic
    uint8_t version
    uint8_t opcode
    uint16_t flags
    uint16_t reserved
    uint32_t request_id
    uint32_t length

cdef inline uint16_t _u16(const uint8_t* p) noexcept nogil:
    return <uint16_t>(p[0] | (p[1] << 8))

cdef inline uint32_t _u32(const uint8_t* p) noexcept nogil:
    return <uint32_t>p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)

cdef inline void read_header(const char* data, Header* h) noexcept nogil:
    cdef const uint8_t* p = <const uint8_t*>data
    h.magic = _u16(p)
    h.version = p[2]
    h.opcode = p[3]
    h.flags = _u16(p + 4)
    h.reserved = _u16(p + 6)
    h.request_id = _u32(p + 8)
    h.length = _u32(p + 12)

cdef inline int header_status(const Header* h, uint32_t max_payload) noexcept nogil:
    if h.magic != FRAME_MAGIC:
        return HEADER_BAD_MAGIC
    if h.version != FRAME_VERSION:
        return HEADER_BAD_VERSION
    if h.flags & ~KNOWN_FLAGS:
        return HEADER_BAD_FLAGS
    if h.reserved:
        return HEADER_BAD_RESERVED
    if h.length > max_payload:
        return HEADER_TOO_LARGE
    return HEADER_OK

cdef inline void write_header(char* data, uint8_t opcode, uint16_t flags, uint32_t request_id,
                              uint32_t length) noexcept nogil:
    cdef uint8_t* p = <uint8_t*>data
    p[0] = FRAME_MAGIC & 0xFF
    p[1] = FRAME_MAGIC >> 8
    p[2] = FRAME_VERSION
    p[3] = opcode
    p[4] = flags & 0xFF
    p[5] = flags >> 8
    p[6] = 0
    p[7] = 0
    p[8] = request_id & 0xFF
    p[9] = (request_id >> 8) & 0xFF
    p[10] = (request_id >> 16) & 0xFF
    p[11] = request_id >> 24
    p[12] = length & 0xFF
    p[13] = (length >> 8) & 0xFF
    p[14] = (length >> 16) & 0xFF
    p[15] = length >> 24
