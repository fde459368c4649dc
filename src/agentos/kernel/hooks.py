"""Guards and observers, each run only for the opcodes it concerns.

A hook is added with the opcodes it concerns (``None``: every one). Dispatch asks for one
opcode's hooks, which are worked out on first use and kept, so a THINK costs only the hooks
that concern THINK (permissions, idle clocks, audit), not SPAWN's checks.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from .syscalls import Call

Guard = Callable[["Call"], None]
Observer = Callable[["Call", str, float], None]

H = TypeVar("H")


class Hooks(Generic[H]):
    """Hooks in the order they were added, looked up by opcode."""

    def __init__(self) -> None:
        self._hooks: list[tuple[H, frozenset[int] | None]] = []
        self._by_op: dict[int, tuple[H, ...]] = {}

    def add(self, hook: H, ops: Iterable[int] | None = None) -> None:
        """Run ``hook`` for the opcodes ``ops`` (None: every opcode), after those added before."""
        self._hooks.append((hook, None if ops is None else frozenset(int(op) for op in ops)))
        self._by_op.clear()

    def of(self, op: int) -> tuple[H, ...]:
        """The hooks that concern ``op``, in the order they were added."""
        found = self._by_op.get(op)
        if found is None:
            found = self._by_op[op] = tuple(hook for hook, ops in self._hooks if ops is None or op in ops)
        return found
