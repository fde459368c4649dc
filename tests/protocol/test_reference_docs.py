"""docs/protocol.md stays true: its request tables are the kernel's declarations, every opcode
has its row, the capability column is the guard's, and its links land on real sections."""
from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from agentos.permissions.capabilities import Capability
from agentos.permissions.policy import STATE_OPS, required_capability
from agentos.protocol import Op
from agentos.protocol.reference import AREAS, COMMON_FIELDS, FORMATS, blocks, main, splice
from agentos.protocol.requests import REQUESTS

DOCS = Path(__file__).resolve().parents[2] / "docs"
DOC = (DOCS / "protocol.md").read_text()
#: Read by the LLM gateway (plain text or JSON: THINK, and COUNT which takes THINK's payload) and
#: by the reactor (raw bytes): no declared request.
UNDECLARED = {Op.NOOP, Op.THINK, Op.COUNT}
_ROW = re.compile(r"^\| `([A-Z_]+)` `0x([0-9a-f]{2})` \| ([^|]*) \|", re.MULTILINE)


def _area_sections() -> dict[str, str]:
    """The text of each area's section, by area name (from its ``### `` heading to the next)."""
    titles = {"core": "Core and LLM", **{area: area.capitalize() for area in AREAS.values() if area != "core"}}
    sections = {}
    for area, title in titles.items():
        start = DOC.index(f"\n### {title}\n")
        end = DOC.find("\n### ", start + 1)
        sections[area] = DOC[start:end]
    return sections


def test_request_tables_are_generated_from_the_declarations() -> None:
    assert splice(DOC) == DOC, (
        "docs/protocol.md is out of date: run `python -m agentos.protocol.reference --write docs/protocol.md`")


def test_each_generated_block_sits_in_its_area_section() -> None:
    sections = _area_sections()
    for name in blocks():
        if name in sections:
            assert f"<!-- requests:{name}:start -->" in sections[name], name


def test_every_opcode_but_noop_and_think_declares_its_request() -> None:
    assert set(REQUESTS) == set(Op) - UNDECLARED


@pytest.mark.parametrize("op", list(Op), ids=[op.name for op in Op])
def test_every_opcode_has_a_row_in_its_area_table(op: Op) -> None:
    section = _area_sections()[AREAS[op >> 4]]
    rows = {(name, int(code, 16)) for name, code, _ in _ROW.findall(section)}
    assert (op.name, int(op)) in rows, f"no row for {op.name} in the {AREAS[op >> 4]} table"
    if op not in UNDECLARED:
        assert f"**{op.name}** (`0x{int(op):02x}`) request" in section


def test_every_declared_field_has_a_row() -> None:
    def paths(struct: msgspec.inspect.StructType, prefix: str = ""):
        for field in struct.fields:
            yield prefix + field.encode_name
            members = getattr(field.type, "types", (field.type,))
            for nested in members:
                if isinstance(nested, msgspec.inspect.StructType):
                    yield from paths(nested, prefix + field.encode_name + ".")

    for op, request in REQUESTS.items():
        info = msgspec.inspect.type_info(request)
        assert isinstance(info, msgspec.inspect.StructType)
        section = _area_sections()[AREAS[op >> 4]]
        table = section.split(f"**{op.name}** (`0x{int(op):02x}`) request", 1)[1].split("\n**", 1)[0]
        for path in paths(info):
            where = _common_block() if path in COMMON_FIELDS else table
            assert f"| `{path}` |" in where, f"{op.name}.{path}"


def _common_block() -> str:
    """The table of the fields every request takes (``Request``'s own), shown once."""
    return DOC.split("<!-- requests:common:start -->", 1)[1].split("<!-- requests:common:end -->", 1)[0]


def test_needs_column_is_what_the_permission_guard_requires() -> None:
    state = f"`{Capability.STATE_OWN.value}` / `{Capability.STATE_SHARED.value}`"
    rows = _ROW.findall(DOC)
    assert sorted(name for name, _, _ in rows) == sorted(op.name for op in Op), "one row per opcode"
    for name, _, needs in rows:
        op = Op[name]
        if op in STATE_OPS:
            expected = state
        else:
            capability = required_capability(op)
            expected = "—" if capability is None else f"`{capability.value}`"
        assert needs.strip() == expected, name


@pytest.mark.parametrize("fmt", FORMATS, ids=[f.name for f in FORMATS])
def test_format_examples_are_accepted_by_their_rule(fmt) -> None:
    for example in fmt.examples:
        assert re.search(fmt.pattern, example), (fmt.name, example)


def test_write_replaces_stale_blocks_in_place(tmp_path: Path) -> None:
    stale = re.sub(r"(<!-- requests:state:start -->\n).*?(<!-- requests:state:end -->)",
                   r"\1old\n\2", DOC, flags=re.DOTALL)
    page = tmp_path / "protocol.md"
    page.write_text(stale)
    assert main(["--write", str(page)]) == 0
    assert page.read_text() == DOC


def test_write_refuses_a_page_without_markers(tmp_path: Path) -> None:
    page = tmp_path / "protocol.md"
    page.write_text(DOC.replace("<!-- requests:audit:end -->", ""))
    with pytest.raises(ValueError, match="requests:audit"):
        main(["--write", str(page)])


# -- links -----------------------------------------------------------------------------

def _anchors(page: str) -> set[str]:
    """GitHub's heading anchors of a markdown page (fenced code skipped, duplicates numbered)."""
    seen: dict[str, int] = {}
    anchors = set()
    text = re.sub(r"^```.*?^```", "", page, flags=re.MULTILINE | re.DOTALL)
    for heading in re.findall(r"^#{1,6} +(.+?) *$", text, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _links(page: str) -> list[tuple[str, str]]:
    """``(page, anchor)`` of every relative link to a markdown page or a section."""
    text = re.sub(r"^```.*?^```", "", page, flags=re.MULTILINE | re.DOTALL)
    return re.findall(r"\]\(([\w.-]*\.md)?(?:#([^)\s]+))?\)", text)


@pytest.mark.parametrize("name", sorted(p.name for p in DOCS.glob("*.md")))
def test_links_land_on_real_pages_and_sections(name: str) -> None:
    page = (DOCS / name).read_text()
    for target, anchor in _links(page):
        assert not target or (DOCS / target).is_file(), target
        if anchor:
            assert anchor in _anchors((DOCS / target).read_text() if target else page), f"{target}#{anchor}"
