"""The index of one audit file: its records in blocks, each block's time span, and who is in which.

A block is a run of whole records, about ``BLOCK`` bytes of them. The index knows each
block's place in the file, its earliest and latest ``ts`` and its record count, and for
every caller identity (agent id, agent name, ``uid:<n>``) the blocks holding a record of
theirs. A query reads only the blocks that can hold what it asks for, newest first, and
stops once it has ``limit`` records: its cost follows what it returns, not the log's size.

A compressed file holds each block as its own gzip member (concatenated members are one
valid gzip file: ``zcat`` reads it), so a block is read with one seek and one decompress.
"""
from __future__ import annotations

import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ujson

from ..state.private import open_private

#: Bytes of records per block: what a query reads at least, per block it needs.
BLOCK = 64 * 1024
#: gzip's header and trailer around a raw deflate stream.
_GZIP_WBITS = 16 + zlib.MAX_WBITS
Record = dict[str, Any]


def identities(record: Record) -> tuple[str, ...]:
    """The names a query may find ``record``'s caller by: agent id, agent name, ``uid:<n>``."""
    agent, name = record.get("agent"), record.get("name")
    found = [f"uid:{record.get('uid')}"]
    if isinstance(agent, str):
        found.append(agent)
    if isinstance(name, str) and name != agent:
        found.append(name)
    return tuple(found)


@dataclass
class Block:
    """A run of whole records: ``length`` bytes from ``start`` in its file, which began at byte
    ``raw`` of the file as it was written (the same, until it is compressed)."""

    start: int
    length: int
    lo: float
    hi: float
    count: int = 0
    raw: int = 0

    def row(self) -> list[Any]:
        return [self.start, self.length, self.lo, self.hi, self.count, self.raw]


@dataclass
class Index:
    """The blocks of one file and, per identity, the numbers of the blocks it appears in."""

    blocks: list[Block] = field(default_factory=list)
    keys: dict[str, list[int]] = field(default_factory=dict)
    block_size: int = BLOCK
    #: The earliest and latest ``ts`` of the file (None while it is empty).
    lo: float | None = None
    hi: float | None = None

    def add(self, offset: int, length: int, ts: float, who: Iterable[str]) -> None:
        """One record of ``length`` bytes at ``offset`` (appended after every earlier one)."""
        if self.lo is None or ts < self.lo:
            self.lo = ts
        if self.hi is None or ts > self.hi:
            self.hi = ts
        blocks = self.blocks
        if not blocks or blocks[-1].length >= self.block_size:
            blocks.append(Block(offset, 0, ts, ts, raw=offset))
        block = blocks[-1]
        block.length = offset + length - block.start
        block.count += 1
        if ts < block.lo:
            block.lo = ts
        elif ts > block.hi:
            block.hi = ts
        number = len(blocks) - 1
        for key in who:
            numbers = self.keys.get(key)
            if numbers is None:
                self.keys[key] = [number]
            elif numbers[-1] != number:
                numbers.append(number)

    def candidates(self, agent: str | None, since: float | None, until: float | None,
                   end: int | None) -> Iterator[Block]:
        """The blocks that may hold a record by ``agent`` in [since, until) before byte ``end``,
        newest first (``end`` counts bytes as written). Snapshots first: the writer may append
        to the current file's index."""
        blocks = list(self.blocks)
        numbers = list(self.keys.get(agent, ())) if agent is not None else range(len(blocks))
        for number in reversed(numbers):
            block = blocks[number]
            if (end is not None and block.raw >= end) or (since is not None and block.hi < since) \
                    or (until is not None and block.lo >= until):
                continue
            yield block

    def overlaps(self, since: float | None, until: float | None) -> bool:
        """Whether the file may hold a record in [since, until)."""
        return self.lo is not None and self.hi is not None and (since is None or self.hi >= since) \
            and (until is None or self.lo < until)

    def dump(self) -> bytes:
        """A first line with the file's span (read alone by ``span``), then the blocks and keys."""
        return ujson.dumps({"version": 1, "lo": self.lo, "hi": self.hi}).encode() + b"\n" + ujson.dumps(
            {"block_size": self.block_size, "blocks": [block.row() for block in self.blocks],
             "keys": self.keys}).encode()

    @classmethod
    def load(cls, data: bytes) -> Index:
        head, _, body = data.partition(b"\n")
        span, raw = ujson.loads(head), ujson.loads(body)
        return cls([Block(*row) for row in raw["blocks"]], raw["keys"], raw["block_size"], span["lo"], span["hi"])

    @classmethod
    def span(cls, path: Path) -> Index:
        """An index of ``path``'s span only (its first line): enough to skip the file."""
        with open(path, "rb") as f:
            head = ujson.loads(f.readline())
        return cls(lo=head["lo"], hi=head["hi"])


def scan(path: Path, block_size: int = BLOCK) -> tuple[Index, int]:
    """Index a plain file of records by reading it once; returns the index and the size it covers.

    A last line without its newline (torn by a crash mid-write) is not covered.
    """
    index = Index(block_size=block_size)
    offset = 0
    carry = b""
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            lines = (carry + chunk).split(b"\n")
            carry = lines.pop()
            for line in lines:
                length = len(line) + 1
                record = _parse(line)
                if record is not None:
                    index.add(offset, length, _ts(record), identities(record))
                elif index.blocks and offset == index.blocks[-1].start + index.blocks[-1].length:
                    index.blocks[-1].length += length  # a spoiled line: read (and skipped) with its block
                offset += length
    return index, offset


def compress(source: Path, index: Index, target: Path) -> Index:
    """Write ``source``'s blocks to ``target`` as one gzip member each (0600, fsynced); returns
    the index of ``target``."""
    blocks = []
    fd = open_private(target, os.O_WRONLY | os.O_TRUNC)
    try:
        with open(source, "rb") as src, os.fdopen(fd, "wb") as dst:
            fd = -1
            position = 0
            for block in index.blocks:
                src.seek(block.start)
                compressor = zlib.compressobj(6, zlib.DEFLATED, _GZIP_WBITS)
                member = compressor.compress(src.read(block.length)) + compressor.flush()
                dst.write(member)
                blocks.append(Block(position, len(member), block.lo, block.hi, block.count, block.raw))
                position += len(member)
            dst.flush()
            os.fsync(dst.fileno())
    finally:
        if fd >= 0:
            os.close(fd)
    return Index(blocks, index.keys, index.block_size, index.lo, index.hi)


def decompress(source: Path, target: Path) -> None:
    """``source``'s gzip members, one after another, into ``target`` (0600, fsynced)."""
    with open(source, "rb") as src, os.fdopen(open_private(target, os.O_WRONLY | os.O_TRUNC), "wb") as dst:
        data = src.read()
        while data:
            member = zlib.decompressobj(_GZIP_WBITS)
            dst.write(member.decompress(data))
            data = member.unused_data
        dst.flush()
        os.fsync(dst.fileno())


def write_private(path: Path, data: bytes) -> None:
    fd = open_private(path, os.O_WRONLY | os.O_TRUNC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_block(f: Any, block: Block, compressed: bool, end: int | None) -> bytes:
    """The records of ``block`` written before byte ``end``, read from the open file ``f``."""
    f.seek(block.start)
    if compressed:
        data = zlib.decompress(f.read(block.length), _GZIP_WBITS)
        return data if end is None else data[:end - block.raw]
    return f.read(block.length if end is None else min(block.length, end - block.start))


def _parse(line: bytes) -> Record | None:
    if not line:
        return None
    try:
        record = ujson.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _ts(record: Record) -> float:
    ts = record.get("ts")
    return float(ts) if isinstance(ts, (int, float)) else 0.0
