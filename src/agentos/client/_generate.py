"""Generate ``_sync_api.py`` from ``_async_api.py``: ``python -m agentos.client._generate``.

``--check`` writes nothing and exits 1 (with a diff) when the generated file is stale; the
test suite runs it. The rewrite works on tokens, so strings and comments are never
touched: ``async`` and ``await`` go (with the space after them), ``__aenter__``-style
names and ``AsyncX`` names become their blocking counterparts. Where a removal shortens
the first line of a statement, its continuation lines move left as much, so arguments
aligned under an opening bracket stay aligned.
"""
from __future__ import annotations

import argparse
import difflib
import io
import re
import sys
import tokenize
from pathlib import Path

SOURCE = Path(__file__).with_name("_async_api.py")
TARGET = Path(__file__).with_name("_sync_api.py")
HEADER = ("# Generated from _async_api.py by `python -m agentos.client._generate`:\n"
          "# edit that file, not this one.\n")

_DROPPED = frozenset({"async", "await"})
_RENAMED = {"__aenter__": "__enter__", "__aexit__": "__exit__", "__aiter__": "__iter__",
            "__anext__": "__next__", "StopAsyncIteration": "StopIteration"}
#: ``AsyncIterator`` -> ``Iterator``, ``AsyncClientMethods`` -> ``ClientMethods``, ...
_ASYNC_NAME = re.compile(r"Async([A-Z]\w*)")


def unasync(source: str) -> str:
    """The blocking twin of ``source`` (a module written for asyncio)."""
    lines = source.splitlines(keepends=True)
    edits: dict[int, list[tuple[int, int, str]]] = {}  # row -> (start col, end col, new text)
    shift: dict[int, int] = {}  # first row of a statement -> columns removed from it
    in_string: set[int] = set()  # rows that start inside a multi-line string
    statements: list[tuple[int, int]] = []
    first_row: int | None = None
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    for index, tok in enumerate(tokens):
        (row, col), (end_row, end_col) = tok.start, tok.end
        if tok.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
            if first_row is not None:
                statements.append((first_row, row))
            first_row = None
            continue
        if tok.type in (tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT):
            continue
        if first_row is None:
            first_row = row
        if tok.type == tokenize.STRING:
            in_string.update(range(row + 1, end_row + 1))
        if tok.type != tokenize.NAME:
            continue
        if tok.string in _DROPPED:
            following = tokens[index + 1].start
            end = following[1] if following[0] == row else end_col
            edits.setdefault(row, []).append((col, end, ""))
            if row == first_row:
                shift[row] = shift.get(row, 0) + end - col
        else:
            new = _RENAMED.get(tok.string) or _ASYNC_NAME.sub(r"\1", tok.string)
            if new != tok.string:
                edits.setdefault(row, []).append((col, end_col, new))
                if row == first_row:
                    shift[row] = shift.get(row, 0) + len(tok.string) - len(new)
    for row, row_edits in edits.items():
        line = lines[row - 1]
        for start, end, new in sorted(row_edits, reverse=True):
            line = line[:start] + new + line[end:]
        lines[row - 1] = line
    for start_row, end_row in statements:
        dedent = shift.get(start_row, 0)
        for row in range(start_row + 1, end_row + 1) if dedent else ():
            line = lines[row - 1]
            if row not in in_string and line[:dedent].isspace():
                lines[row - 1] = line[dedent:]
    return "".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agentos.client._generate",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 with a diff if the generated file is stale")
    parser.add_argument("--source", type=Path, default=SOURCE, help=argparse.SUPPRESS)
    parser.add_argument("--target", type=Path, default=TARGET, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    expected = HEADER + unasync(args.source.read_text())
    current = args.target.read_text() if args.target.exists() else ""
    if current == expected:
        return 0
    if not args.check:
        args.target.write_text(expected)
        return 0
    sys.stdout.writelines(difflib.unified_diff(
        current.splitlines(keepends=True), expected.splitlines(keepends=True),
        f"{args.target} (on disk)", f"{args.target} (generated from {args.source.name})"))
    print(f"{args.target} is stale: run `python -m agentos.client._generate`", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
