"""Gemini's safety settings: the categories and thresholds it takes, in the two forms agents write.

``{"harassment": "block_none"}`` and Gemini's own
``[{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]`` both become
``(("HARM_CATEGORY_HARASSMENT", "BLOCK_NONE"),)``. A typo is refused here, naming the
entry, rather than reported by Google as a 400 after the call took a slot and a budget check.
Wire reference: llm-wire-formats §2.4.
"""
from __future__ import annotations

from typing import Any

#: The Gemini API's categories (the image ones are Vertex only).
CATEGORIES = ("HARM_CATEGORY_HARASSMENT", "HARM_CATEGORY_HATE_SPEECH",
              "HARM_CATEGORY_SEXUALLY_EXPLICIT", "HARM_CATEGORY_DANGEROUS_CONTENT",
              "HARM_CATEGORY_CIVIC_INTEGRITY")
THRESHOLDS = ("HARM_BLOCK_THRESHOLD_UNSPECIFIED", "BLOCK_LOW_AND_ABOVE", "BLOCK_MEDIUM_AND_ABOVE",
              "BLOCK_ONLY_HIGH", "BLOCK_NONE", "OFF")
_PREFIX = "HARM_CATEGORY_"

#: ``(category, threshold)`` pairs in Gemini's spelling, one per category.
SafetySettings = tuple[tuple[str, str], ...]


def parse_safety(raw: Any, where: str) -> SafetySettings:
    """Either form as Gemini's pairs; a bad entry raises ``ValueError`` naming ``where[...]``."""
    entries: list[tuple[str, Any, Any]]
    if isinstance(raw, dict):
        entries = [(f"{where}[{key}]", key, value) for key, value in raw.items()]
    elif isinstance(raw, list):
        entries = []
        for index, item in enumerate(raw):
            if not (isinstance(item, dict) and set(item) == {"category", "threshold"}):
                raise ValueError(f"{where}[{index}] must be {{category, threshold}}")
            entries.append((f"{where}[{index}]", item["category"], item["threshold"]))
    else:
        raise ValueError(f"{where} must be a mapping of category to threshold, e.g. "
                         '{"harassment": "block_only_high"}, or a list of {category, threshold}')
    settings: dict[str, str] = {}
    for place, category, threshold in entries:
        name = _category(category, place)
        if name in settings:
            raise ValueError(f"{place}: {name} is given twice")
        settings[name] = _threshold(threshold, place)
    return tuple(settings.items())


def merge_safety(base: SafetySettings, override: SafetySettings) -> SafetySettings:
    """``base`` with each category ``override`` sets replaced."""
    if not override:
        return base  # one pair per category already (parse_safety): nothing to merge
    merged = dict(base)
    merged.update(override)
    return tuple(merged.items())


def _category(value: Any, place: str) -> str:
    name = value.upper() if isinstance(value, str) else ""
    name = name if name.startswith(_PREFIX) else _PREFIX + name
    if name not in CATEGORIES:
        short = ", ".join(c.removeprefix(_PREFIX).lower() for c in CATEGORIES)
        raise ValueError(f"{place}: unknown category {value!r}; known: {short} "
                         f"(or their {_PREFIX}... names)")
    return name


def _threshold(value: Any, place: str) -> str:
    name = value.upper() if isinstance(value, str) else None
    if name not in THRESHOLDS:
        raise ValueError(f"{place}: unknown threshold {value!r}; known: "
                         f"{', '.join(t.lower() for t in THRESHOLDS)}")
    return name
