"""Stage 2: work the answer out from the tokens (precedence climbing, no eval)."""
from __future__ import annotations

import sys
from typing import Any

from stage import run_stage

_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


def evaluate(tokens: list[Any]) -> float:
    position = 0

    def atom() -> float:
        nonlocal position
        if position >= len(tokens):
            raise ValueError("reasoner: the expression ends too early")
        token = tokens[position]
        position += 1
        if token == "(":
            value = expression(1)
            if position >= len(tokens) or tokens[position] != ")":
                raise ValueError("reasoner: missing ')'")
            position += 1
            return value
        if token == "-":
            return -atom()
        if isinstance(token, (int, float)):
            return token
        raise ValueError(f"reasoner: unexpected {token!r}")

    def expression(min_precedence: int) -> float:
        nonlocal position
        left = atom()
        while position < len(tokens) and _PRECEDENCE.get(tokens[position], 0) >= min_precedence:
            op = tokens[position]
            position += 1
            right = expression(_PRECEDENCE[op] + 1)
            if op == "/" and right == 0:
                raise ValueError("reasoner: division by zero")
            left = {"+": left + right, "-": left - right, "*": left * right,
                    "/": left / right if op == "/" else 0}[op]
        return left

    value = expression(1)
    if position != len(tokens):
        raise ValueError(f"reasoner: unexpected {tokens[position]!r}")
    return value


def reason(job: dict[str, Any]) -> dict[str, Any]:
    return {"answer": evaluate(job["tokens"])}


if __name__ == "__main__":
    sys.exit(run_stage(reason, "verifier"))
