"""FILE_*'s payloads and results, shared by ``Client`` and ``AsyncClient``.

Paths are paths of the agent's view (relative: to the agent's working directory), never
made absolute here. Writes and uploads larger than one request go as a streamed write:
the first request with ``more``, then FILE_DATA chunks (``CHUNK`` bytes each).
"""
from __future__ import annotations

import base64
import io
import os
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Bytes of one write or upload request (base64 makes it 4/3 of that on the wire).
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class FileEntry:
    """One entry of a listing or a stat: ``path`` relative to the listed directory (a stat's: as asked)."""

    path: str
    type: str  # "file", "dir", "symlink" or "other"
    size: int
    mode: int
    mtime: float
    uid: int | None = None
    gid: int | None = None
    target: str | None = None

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> FileEntry:
        return cls(path=payload["path"], type=payload["type"], size=payload["size"], mode=payload["mode"],
                   mtime=payload["mtime"], uid=payload.get("uid"), gid=payload.get("gid"),
                   target=payload.get("target"))


@dataclass(frozen=True)
class FileEvent:
    """A change under a watched directory: ``event`` is ``created``, ``modified``, ``deleted``,
    ``moved`` (``to`` the new path) or ``overflow`` (``dropped`` events were lost)."""

    event: str
    path: str = ""
    to: str | None = None
    dir: bool = False
    dropped: int = 0
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> FileEvent:
        return cls(event=payload["event"], path=payload.get("path", ""), to=payload.get("to"),
                   dir=bool(payload.get("dir")), dropped=int(payload.get("dropped") or 0), raw=dict(payload))


def target(agent: str | None, id: str | None) -> dict[str, Any]:
    return {"id": id} if id is not None else {"name": agent}


def chunks(data: bytes) -> Iterator[bytes]:
    """``data`` in request-sized pieces; at least one (an empty write still writes)."""
    yield data[:CHUNK]
    for start in range(CHUNK, len(data), CHUNK):
        yield data[start:start + CHUNK]


def encoded(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_request(agent: str | None, path: str, *, id: str | None, append: bool, offset: int | None,
                  create: bool, exclusive: bool, mode: int | None) -> dict[str, Any]:
    payload: dict[str, Any] = {**target(agent, id), "path": path}
    if append:
        payload["append"] = True
    if offset is not None:
        payload["offset"] = offset
    if not create:
        payload["create"] = False
    if exclusive:
        payload["exclusive"] = True
    if mode is not None:
        payload["mode"] = mode
    return payload


def tar_directory(source: str | os.PathLike[str]) -> bytes:
    """A local directory's contents as a tar archive (members relative to it; symlinks kept)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(os.listdir(source)):
            tar.add(os.path.join(source, name), arcname=name)
    return buffer.getvalue()


def untar(data: bytes, destination: str | os.PathLike[str]) -> None:
    """Unpack an archive FILE_DOWNLOAD made into a local directory, with tarfile's ``data``
    filter (no absolute paths, no ``..``, no links out, no devices): the agent made it."""
    os.makedirs(destination, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(destination, filter="data")
