"""Stage 1: turn the text of an arithmetic question into tokens (numbers and operators)."""
from __future__ import annotations

import re
import sys
from typing import Any

from stage import run_stage

_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d+)?)|(.))")


def parse(job: dict[str, Any]) -> dict[str, Any]:
    tokens: list[Any] = []
    for number, symbol in _TOKEN.findall(job["text"].strip()):
        if number:
            tokens.append(float(number) if "." in number else int(number))
        elif symbol in "+-*/()":
            tokens.append(symbol)
        elif not symbol.isspace():
            raise ValueError(f"parser: unexpected {symbol!r} in {job['text']!r}")
    if not tokens:
        raise ValueError("parser: empty question")
    return {"tokens": tokens}


if __name__ == "__main__":
    sys.exit(run_stage(parse, "reasoner"))
