"""Stage 3: check the reasoner's answer by recomputing it another way, then reply."""
from __future__ import annotations

import ast
import operator
import sys
from typing import Any

from stage import run_stage

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv, ast.USub: operator.neg}


def _value(node: ast.AST) -> float:
    # Only number literals and + - * / are walked: nothing from the text is executed.
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_value(node.left), _value(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_value(node.operand))
    raise ValueError("verifier: unsupported expression")


def verify(job: dict[str, Any]) -> dict[str, Any]:
    expected = _value(ast.parse(" ".join(str(t) for t in job["tokens"]), mode="eval").body)
    return {"verified": abs(expected - job["answer"]) <= 1e-9 * max(1.0, abs(expected))}


if __name__ == "__main__":
    # The last stage has no next one: run_stage sends its result to the job's reply_to.
    sys.exit(run_stage(verify, None))
