"""Where a manifest is wrong and how to fix it: ``file:line:col: error: ... (fix: ...)``."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import AgentOSError


@dataclass(frozen=True, slots=True)
class Mark:
    """A position in a manifest file; ``line`` and ``column`` count from 1, 0 means the whole file."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if not self.line:
            return self.file
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Problem:
    """One error found in a manifest, with the change that fixes it."""

    mark: Mark
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.mark}: error: {self.message} (fix: {self.fix})"


class ManifestError(AgentOSError):
    """A manifest that cannot be used; ``problems`` lists every error found, in file order."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(sorted(problems, key=lambda p: (p.mark.file, p.mark.line, p.mark.column)))
        super().__init__("\n".join(str(p) for p in self.problems))
