"""Wire constants of the agentos syscall protocol (docs/protocol.md is the spec)."""
from __future__ import annotations

import enum
import struct

from ..errors import ErrorCode

__all__ = ["MAGIC", "VERSION", "HEADER", "HEADER_SIZE", "DEFAULT_MAX_PAYLOAD", "Op", "Flag",
           "KNOWN_FLAGS", "ErrorCode", "op_name"]

#: ``b"AO"`` read as a little-endian u16.
MAGIC = 0x4F41
VERSION = 1

#: magic u16, version u8, opcode u8, flags u16, reserved u16, request id u32, length u32.
HEADER = struct.Struct("<HBBHHII")
HEADER_SIZE = HEADER.size  # 16

#: Largest payload a peer accepts unless configured otherwise (16 MiB).
DEFAULT_MAX_PAYLOAD = 16 * 1024 * 1024


class Op(enum.IntEnum):
    """Syscall opcodes. Ranges: 0x00 core/LLM, 0x10 processes, 0x20 messaging,
    0x30 state, 0x40 permissions, 0x50 egress, 0x60 events, 0x70 audit, 0x80 files."""

    NOOP = 0x00
    THINK = 0x01
    HELLO = 0x02
    CONTEXT = 0x03
    USAGE = 0x04
    COUNT = 0x05
    EMBED = 0x06
    MODELS = 0x07

    SPAWN = 0x10
    KILL = 0x11
    LIST = 0x12
    WAIT = 0x13
    LOGS = 0x14
    READY = 0x15
    EXEC = 0x16
    EXEC_INPUT = 0x17
    EXEC_SIGNAL = 0x18
    EXEC_RESIZE = 0x19
    PAUSE = 0x1A
    RESUME = 0x1B
    START = 0x1C
    EXPOSE = 0x1D
    UNEXPOSE = 0x1E
    PURGE = 0x1F

    SEND = 0x20
    RECV = 0x21
    BROADCAST = 0x22
    REGISTER = 0x23
    ACK = 0x24
    DEAD_LETTERS = 0x25

    STORE = 0x30
    FETCH = 0x31
    DELETE = 0x32
    KEYS = 0x33
    CAS = 0x34

    GET_PERMS = 0x40
    SET_PERMS = 0x41

    HTTP = 0x50

    SUBSCRIBE = 0x60
    UNSUBSCRIBE = 0x61
    PUBLISH = 0x62

    AUDIT = 0x70

    FILE_READ = 0x80
    FILE_WRITE = 0x81
    FILE_LIST = 0x82
    FILE_STAT = 0x83
    FILE_MKDIR = 0x84
    FILE_REMOVE = 0x85
    FILE_RENAME = 0x86
    FILE_UPLOAD = 0x87
    FILE_DOWNLOAD = 0x88
    FILE_WATCH = 0x89
    FILE_DATA = 0x8A
    VOLUMES = 0x8B

    APPROVALS = 0x90


class Flag(enum.IntFlag):
    """Frame flags. A request carries none; every reply carries REPLY."""

    NONE = 0
    REPLY = 0x01
    ERROR = 0x02
    STREAM = 0x04
    END = 0x08


#: Bits a receiver accepts; any other bit set is a protocol error.
KNOWN_FLAGS = int(Flag.REPLY | Flag.ERROR | Flag.STREAM | Flag.END)


#: Every audit record, span and metric names its op: a dict lookup, where ``Op(op)`` is an
#: enum call each time.
_OP_NAMES = {int(op): op.name for op in Op}


def op_name(op: int) -> str:
    """The syscall's name (``SPAWN``), or its hex for an opcode that has none (``0xf1``)."""
    return _OP_NAMES.get(op) or f"0x{op:02x}"
