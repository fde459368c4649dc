"""What both reactor twins share: the selector plumbing asyncio sees, their limits, and the
frames and log lines they answer trouble with.

The twins are ``agentos.kernel.reactor`` (Python) and ``agentos._fast.reactor`` (Cython).
This module sits below both, so the compiled one never imports the kernel package whose
twin it is.
"""
from __future__ import annotations

import errno
import logging
import os
import resource
import select
import selectors
from collections.abc import Iterator, Mapping
from typing import Any

import ujson

from .errors import Busy
from .protocol.codec import encode_frame
from .protocol.constants import ErrorCode, Flag

log = logging.getLogger("agentos.reactor")

#: Clients accepted, or refused with ``busy``, per wake-up of the listener at most. The rest
#: wait in the listen backlog, which keeps the listener readable: the next round takes them,
#: after the other ready fds had their turn, so a connect storm cannot hold the loop.
ACCEPT_BATCH = 64
#: Frames handed to ``on_frame``, and asyncio fds returned, per ``select()`` at most.
DEFAULT_BATCH = 2
#: The errnos of an fd that could not be had: the kernel's limit, then the host's.
OUT_OF_FILES = (errno.EMFILE, errno.ENFILE)


def to_epoll(events: int) -> int:
    """The epoll mask of a selector's ``EVENT_READ``/``EVENT_WRITE`` bits."""
    return ((select.EPOLLIN if events & selectors.EVENT_READ else 0)
            | (select.EPOLLOUT if events & selectors.EVENT_WRITE else 0))


def fileobj_to_fd(fileobj: Any) -> int:
    """The fd of an int or of an object with ``fileno()``; ValueError for anything else, as
    the selectors module raises (asyncio and tests/kernel/test_reactor_twins.py expect it)."""
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd


class KeyMap(Mapping[Any, selectors.SelectorKey]):
    """The read-only fileobj -> key view asyncio expects from ``get_map()``."""

    __slots__ = ("_keys",)

    def __init__(self, keys: dict[int, selectors.SelectorKey]) -> None:
        self._keys = keys

    def __len__(self) -> int:
        return len(self._keys)

    def __getitem__(self, fileobj: Any) -> selectors.SelectorKey:
        try:
            return self._keys[fileobj_to_fd(fileobj)]
        except (KeyError, ValueError):
            raise KeyError(f"{fileobj!r} is not registered") from None

    def __iter__(self) -> Iterator[int]:
        return iter(self._keys)


def protocol_error_payload(exc: Exception) -> bytes:
    return ujson.dumps({"code": ErrorCode.PROTOCOL_ERROR.value, "message": str(exc)}).encode()


def out_of_files(err: int, retry_after: float) -> Busy:
    """The ``busy`` error for work the kernel had no fd for (``err``: one of OUT_OF_FILES)."""
    if err == errno.EMFILE:
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return Busy(f"the kernel has all {limit} of its open files in use; retry later",
                    cap="open_files", limit=limit, retry_after=retry_after)
    return Busy("the system is out of open files; retry later", cap="system_open_files",
                retry_after=retry_after)


def refusal_frame(err: int, retry_after: float) -> bytes:
    """The connection-level ``busy`` frame for a client the kernel has no fd for."""
    busy = out_of_files(err, retry_after)
    return encode_frame(0, 0, ujson.dumps(busy.to_payload()).encode(), Flag.REPLY | Flag.ERROR)


def log_accept_paused(err: int, backoff: float, refusing: bool) -> None:
    # Out of memory, or without the spare fd, there is no fd to refuse on: clients wait in the backlog.
    then = ("refusing them with busy until an fd is free" if refusing else
            f"they wait, retrying every {backoff:.1f}s and whenever a connection closes")
    log.warning("cannot accept clients (%s: %s); %s", errno.errorcode.get(err, err), os.strerror(err), then)


def log_accept_resumed(refused: int) -> None:
    log.info("accepting clients again (%d refused meanwhile)", refused)
