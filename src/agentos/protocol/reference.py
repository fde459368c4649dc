"""docs/protocol.md's request tables, rendered from the declared requests (``requests.REQUESTS``).

Each syscall's fields, types and constraints are written once, as msgspec Structs; this
module reads them back through ``msgspec.inspect`` and writes one markdown table per
syscall, grouped by area, between markers in docs/protocol.md. A test keeps the page
identical to this output, so the page cannot drift from what the kernel accepts.

``python -m agentos.protocol.reference`` prints every block; with ``--write PATH`` it
replaces the blocks between the markers of that file in place.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
from msgspec import inspect

from .constants import Op
from .requests import (
    AGENT_NAME_PATTERN,
    AGENT_REF_PATTERN,
    CPU_PATTERN,
    DURATION_PATTERN,
    PROJECT_PATTERN,
    REQUESTS,
    SIZE_PATTERN,
    TRACEPARENT_PATTERN,
    Request,
)

__all__ = ["AREAS", "COMMON_FIELDS", "FORMATS", "Format", "area_markdown", "formats_markdown", "blocks", "splice"]

#: Areas by the high nibble of their opcodes (docs/protocol.md, "Opcodes").
AREAS: dict[int, str] = {0x0: "core", 0x1: "processes", 0x2: "messaging", 0x3: "state",
                         0x4: "permissions", 0x5: "egress", 0x6: "events", 0x7: "audit",
                         0x8: "files", 0x9: "approvals"}

#: The heading of the formats table in docs/protocol.md, which the request tables link to.
FORMATS_ANCHOR = "value-formats"
#: A string that holds no NUL byte (paths, argv, environment values).
_NO_NUL = r"^[^\x00]*\Z"


@dataclass(frozen=True)
class Format:
    """A named string format: its rule, what it means, and values it accepts."""

    name: str
    pattern: str
    meaning: str
    examples: tuple[str, ...]


FORMATS: tuple[Format, ...] = (
    Format("agent name", AGENT_NAME_PATTERN,
           "1-60 letters, digits, `_`, `.`, `-`, starting with a letter or digit",
           ("worker", "team.a-1", "x")),
    Format("agent reference", AGENT_REF_PATTERN,
           "an agent name, looked up in the caller's project first, or `project/name` for another project's",
           ("worker", "research/worker")),
    Format("project", PROJECT_PATTERN, "1-63 lower-case letters, digits and `-`, starting with a letter or digit",
           ("research", "team-2")),
    Format("duration", DURATION_PATTERN,
           "seconds, or a number with a unit `ms`, `s`, `m`, `h`", ("30", "1.5s", "250ms", "5m", "2h")),
    Format("size", SIZE_PATTERN,
           "bytes, or a number with a unit `K`, `M`, `G`, `T` (powers of 1000) or `Ki`, `Mi`, `Gi`, `Ti` "
           "(powers of 1024), optionally followed by `B`",
           ("1048576", "512Mi", "1G", "64KiB")),
    Format("cpu", CPU_PATTERN, "cores, millicores (`m`) or percent of one core (`%`)",
           ("0.5", "500m", "50%")),
    Format("trace context", TRACEPARENT_PATTERN,
           "a W3C `traceparent`: version, trace id, parent span id and flags in lower-case hex, "
           "neither id all zeros", ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",)),
)
_FORMATS = {f.pattern: f for f in FORMATS}


def _number(value: float) -> str:
    """Exact, but large powers of two as ``2^k`` and ``2^k-1`` (they are what the limits are)."""
    if float(value).is_integer():
        value = int(value)
        for k in range(31, 64):
            if value == 1 << k:
                return f"2^{k}"
            if value == (1 << k) - 1:
                return f"2^{k}-1"
        return str(value)
    return f"{value:g}"


def _bounds(t: inspect.IntType | inspect.FloatType) -> str:
    low = f"{_number(t.ge)} ≤ " if t.ge is not None else f"{_number(t.gt)} < " if t.gt is not None else ""
    high = f" ≤ {_number(t.le)}" if t.le is not None else f" < {_number(t.lt)}" if t.lt is not None else ""
    return f" ({low}x{high})" if low or high else ""


def _count(low: int | None, high: int | None, unit: str) -> str:
    if low is not None and high is not None:
        return f"{low}-{high} {unit}"
    if high is not None:
        return f"at most {high} {unit}"
    if low is not None:
        return f"at least {low} {unit}"
    return ""


def _cell(text: str) -> str:
    """``text`` safe inside a table cell (GFM splits cells on an unescaped ``|``, code spans too)."""
    return text.replace("|", "\\|")


def _shown(pattern: str) -> str:
    """A pattern as the docs show it: ``$`` for Python's ``\\Z`` (the end of the text, as ``$``
    means in JSON Schema; Python's ``$`` would let a trailing newline through)."""
    return pattern[:-2] + "$" if pattern.endswith("\\Z") else pattern


def _string(t: inspect.StrType) -> str:
    rules = []
    if t.pattern is not None:
        known = _FORMATS.get(t.pattern)
        rules.append(f"[{known.name}](#{FORMATS_ANCHOR})" if known is not None
                     else "no NUL" if t.pattern == _NO_NUL else f"matching `{_shown(t.pattern)}`")
    length = _count(t.min_length, t.max_length, "characters")
    if length:
        rules.append(length)
    return f"string ({', '.join(rules)})" if rules else "string"


def _item(t: inspect.Type) -> str:
    """A list's or object's member type, bracketed when it is a choice."""
    text = _type(t)
    return f"({text})" if " or " in text or text.startswith("one of") else text


def _type(t: inspect.Type) -> str:
    """``t`` as a client writes it in JSON, with its constraints."""
    if isinstance(t, inspect.UnionType):
        parts = [_type(member) for member in t.types if not isinstance(member, inspect.NoneType)]
        if any(isinstance(member, inspect.NoneType) for member in t.types):
            parts.append("null")
        return " or ".join(parts)
    if isinstance(t, inspect.BoolType):
        return "boolean"
    if isinstance(t, inspect.IntType):
        return "integer" + _bounds(t)
    if isinstance(t, inspect.FloatType):
        # JSON has one number type: an integer is a number too.
        return "number" + _bounds(t)
    if isinstance(t, inspect.StrType):
        return _string(t)
    if isinstance(t, inspect.NoneType):
        return "null"
    if isinstance(t, inspect.AnyType):
        return "any JSON value"
    if isinstance(t, inspect.LiteralType):
        return "one of " + ", ".join(f"`{msgspec.json.encode(v).decode()}`" for v in t.values)
    if isinstance(t, inspect.ListType):
        count = _count(t.min_length, t.max_length, "items")
        return "list" + (f" ({count})" if count else "") + f" of {_item(t.item_type)}"
    if isinstance(t, inspect.DictType):
        count = _count(t.min_length, t.max_length, "entries")
        return ("object" + (f" ({count})" if count else "")
                + f" of {_item(t.key_type)} keys to {_item(t.value_type)} values")
    if isinstance(t, inspect.StructType):
        return "object (fields below)"
    raise TypeError(f"no rendering for {t!r}: teach agentos.protocol.reference about it")


def _structs(t: inspect.Type) -> Iterator[inspect.StructType]:
    """The objects nested in ``t`` whose fields get rows of their own."""
    if isinstance(t, inspect.StructType):
        yield t
    elif isinstance(t, inspect.UnionType):
        for member in t.types:
            yield from _structs(member)


def _row(field: inspect.Field, path: str) -> str:
    return f"| `{path}` | {_cell(_type(field.type))} | {'yes' if field.required else 'no'} |"


def _rows(struct: inspect.StructType, prefix: str = "") -> Iterator[str]:
    for field in struct.fields:
        if not prefix and field.name in COMMON_FIELDS:
            continue  # in the table of what every request takes
        path = prefix + field.encode_name
        yield _row(field, path)
        for nested in _structs(field.type):
            yield from _rows(nested, path + ".")


def _common() -> inspect.StructType:
    struct = inspect.type_info(Request)
    assert isinstance(struct, inspect.StructType)
    return struct


#: The fields every request declares (``Request``'s own): one table, not a row in each.
COMMON_FIELDS = frozenset(field.name for field in _common().fields)


def common_markdown() -> str:
    """The table of the fields every JSON request (THINK's included) may carry."""
    return "\n".join(["| field | type | required |", "| --- | --- | --- |",
                      *(_row(field, field.encode_name) for field in _common().fields), ""])


def request_markdown(op: Op) -> str:
    """The table of one syscall's request."""
    struct = inspect.type_info(REQUESTS[op])
    assert isinstance(struct, inspect.StructType)
    title = f"**{op.name}** (`0x{int(op):02x}`) request"
    if not any(field.name not in COMMON_FIELDS for field in struct.fields):
        return f"{title}: `{{}}`, no fields.\n"
    return "\n".join([f"{title}:", "", "| field | type | required |", "| --- | --- | --- |",
                      *_rows(struct), ""])


def area_markdown(area: str) -> str:
    """The request tables of every syscall of ``area`` that declares one, in opcode order."""
    nibble = next(n for n, name in AREAS.items() if name == area)
    ops = sorted(op for op in REQUESTS if op >> 4 == nibble)
    return "\n".join(request_markdown(op) for op in ops)


def formats_markdown() -> str:
    """The named string formats the request tables link to."""
    lines = ["| format | rule | examples |", "| --- | --- | --- |"]
    for f in FORMATS:
        examples = ", ".join(f"`{e}`" for e in f.examples)
        lines.append(f"| {f.name} | {_cell(f.meaning)}: `{_cell(_shown(f.pattern))}` | {examples} |")
    return "\n".join(lines) + "\n"


def blocks() -> dict[str, str]:
    """Every generated block of docs/protocol.md, by marker name."""
    return {"formats": formats_markdown(), "common": common_markdown(),
            **{area: area_markdown(area) for area in AREAS.values() if area_markdown(area)}}


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- requests:{name}:start -->\n", f"<!-- requests:{name}:end -->"


def splice(text: str) -> str:
    """``text`` with every block between its markers replaced by the generated one."""
    for name, body in blocks().items():
        start, end = _markers(name)
        found = re.search(re.escape(start) + r".*?" + re.escape(end), text, re.DOTALL)
        if not found:
            raise ValueError(f"no {start.strip()} ... {end} markers")
        text = f"{text[:found.start()]}{start}\n{body}\n{end}{text[found.end():]}"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agentos.protocol.reference", description=__doc__.split("\n")[0])
    parser.add_argument("--write", type=Path, metavar="PATH",
                        help="replace the generated blocks of this file (docs/protocol.md) in place")
    args = parser.parse_args(argv)
    if args.write is None:
        for name, body in blocks().items():
            start, end = _markers(name)
            sys.stdout.write(f"{start}\n{body}\n{end}\n\n")
        return 0
    text = args.write.read_text()
    updated = splice(text)
    if updated != text:
        args.write.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
