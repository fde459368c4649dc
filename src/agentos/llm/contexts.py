"""Conversation contexts the kernel holds for agents, persisted under the state dir.

A context is an owner's named conversation: a system instruction and the turns
so far, in Gemini Content form, model turns stored verbatim (thought
signatures included). Each change is written atomically (temp file, fsync,
rename), so a context survives a kernel restart or crash. Beyond the size
policy the oldest turns are dropped, always cutting at a user prompt so a
function call is never separated from its result.
"""
from __future__ import annotations

import asyncio
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import ujson

from ..errors import AlreadyExists, InvalidArgument, NotFound
from ..protocol.requests import ALIAS_PATTERN
from ..state.private import private_dir
from .config import ContextPolicy
from .types import Content

_ID = re.compile(ALIAS_PATTERN)


@dataclass
class Context:
    """One conversation."""

    id: str
    owner: str
    system: str | None = None
    contents: list[Content] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    #: Turns dropped by the size policy so far.
    dropped: int = 0

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "turns": len(self.contents), "bytes": _size(self.contents),
                "system": self.system, "created": self.created, "updated": self.updated,
                "dropped": self.dropped}

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "owner": self.owner, "system": self.system,
                "contents": self.contents, "created": self.created, "updated": self.updated,
                "dropped": self.dropped}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Context:
        return cls(id=raw["id"], owner=raw["owner"], system=raw.get("system"),
                   contents=list(raw.get("contents") or []), created=raw.get("created", 0.0),
                   updated=raw.get("updated", 0.0), dropped=raw.get("dropped", 0))


class ContextStore:
    """Contexts by (owner, id), cached in memory and mirrored to ``root/<owner>/<id>.json``."""

    def __init__(self, root: Path, policy: ContextPolicy) -> None:
        self.root = root
        self.policy = policy
        self._cache: dict[tuple[str, str], Context] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def lock(self, owner: str, context_id: str) -> asyncio.Lock:
        """Serialises THINKs on one context, so turns are appended in order."""
        key = (owner, context_id)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def create(self, owner: str, context_id: str | None = None,
                     system: str | None = None) -> Context:
        if context_id is None:
            context_id = f"ctx-{secrets.token_hex(6)}"
        _check_id(context_id)
        if self._find(owner, context_id) is not None:
            raise AlreadyExists(f"context {context_id!r} already exists", id=context_id)
        context = Context(id=context_id, owner=owner, system=system)
        await self.save(context)
        return context

    def get(self, owner: str, context_id: str) -> Context:
        _check_id(context_id)
        context = self._find(owner, context_id)
        if context is None:
            raise NotFound(f"no context {context_id!r} (create it with CONTEXT op=create)",
                           id=context_id)
        return context

    def list(self, owner: str) -> list[Context]:
        directory = self._dir(owner)
        if not directory.is_dir():
            return []
        ids = sorted(p.stem for p in directory.glob("*.json"))
        found = (self._find(owner, i) for i in ids if _ID.match(i))
        return [c for c in found if c is not None]

    async def clear(self, owner: str, context_id: str) -> Context:
        """Forget the turns, keep the context and its system instruction."""
        context = self.get(owner, context_id)
        context.contents = []
        await self.save(context)
        return context

    async def delete(self, owner: str, context_id: str) -> None:
        self.get(owner, context_id)
        await asyncio.to_thread(self._path(owner, context_id).unlink, missing_ok=True)
        self._cache.pop((owner, context_id), None)
        self._locks.pop((owner, context_id), None)

    async def fork(self, owner: str, context_id: str, new_id: str | None = None) -> Context:
        """A new context starting with a copy of this one's turns."""
        source = self.get(owner, context_id)
        copy = await self.create(owner, new_id, source.system)
        copy.contents = ujson.loads(ujson.dumps(source.contents))
        await self.save(copy)
        return copy

    async def append(self, context: Context, *turns: Content) -> None:
        context.contents.extend(turns)
        await self.save(context)

    async def save(self, context: Context) -> None:
        """Apply the size policy and write the context atomically (off the event loop)."""
        context.dropped += trim(context.contents, self.policy)
        context.updated = time.time()
        self._cache[(context.owner, context.id)] = context
        data = ujson.dumps(context.to_json(), ensure_ascii=False).encode()
        await asyncio.to_thread(_write_atomically, self._path(context.owner, context.id), data)

    def _find(self, owner: str, context_id: str) -> Context | None:
        cached = self._cache.get((owner, context_id))
        if cached is not None:
            return cached
        try:
            raw = ujson.loads(self._path(owner, context_id).read_bytes())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise InvalidArgument(f"context {context_id!r} is corrupt on disk: {exc}") from None
        context = Context.from_json(raw)
        self._cache[(owner, context_id)] = context
        return context

    def _dir(self, owner: str) -> Path:
        return self.root / quote(owner, safe="")

    def _path(self, owner: str, context_id: str) -> Path:
        return self._dir(owner) / f"{context_id}.json"


def trim(contents: list[Content], policy: ContextPolicy) -> int:
    """Drop the oldest turns beyond the policy, cutting at a user prompt; returns how many."""
    sizes = [_size([c]) for c in contents]
    total = sum(sizes)
    dropped = 0
    while dropped < len(contents) - 1 and (len(contents) - dropped > policy.max_turns
                                           or total > policy.max_bytes):
        total -= sizes[dropped]
        dropped += 1
        while dropped < len(contents) and not _is_prompt(contents[dropped]):
            total -= sizes[dropped]
            dropped += 1
    del contents[:dropped]
    return dropped


def _write_atomically(path: Path, data: bytes) -> None:
    private_dir(path.parent)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _is_prompt(content: Content) -> bool:
    """A user turn that is not only function results (which need the call before them)."""
    if content.get("role", "user") != "user":
        return False
    return any("functionResponse" not in part for part in content.get("parts") or [])


def _size(contents: list[Content]) -> int:
    return len(ujson.dumps(contents, ensure_ascii=False).encode())


def _check_id(context_id: str) -> None:
    if not isinstance(context_id, str) or not _ID.match(context_id):
        raise InvalidArgument(f"context id {context_id!r} is invalid: use 1-64 characters "
                              "from A-Z a-z 0-9 _ . - starting with a letter or digit")
