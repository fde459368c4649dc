"""Name a model this agent's policy does not allow, spelled every way, through every LLM opcode;
then send malformed values of the issue 10 fields.

The agent holds ``think`` only and its policy allows no model of its own (the kernel's default,
``gemini-test``, is everyone's). Prints {"models": {label: error code or "ok"},
"malformed": {label: error code or "ok"}}.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import emit

import agentos
from agentos.protocol import Op

FORBIDDEN = ["gemini-pro", "models/gemini-pro", "GEMINI-PRO", " gemini-pro", "gemini-pro ",
             "models/gemini-test/../gemini-pro", "gemini-test:generateContent?x=", "*"]


def outcome(client, op, payload):
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    try:
        client._request(op, data)
        return "ok"
    except agentos.SyscallError as exc:
        return exc.code.value


with agentos.Client() as client:
    models = {}
    for name in FORBIDDEN:
        models[f"think {name!r}"] = outcome(client, Op.THINK, {"prompt": "hi", "model": name})
        models[f"chain {name!r}"] = outcome(client, Op.THINK,
                                            {"prompt": "hi", "model": ["gemini-test", name]})
        models[f"count {name!r}"] = outcome(client, Op.COUNT, {"prompt": "hi", "model": name})
        models[f"embed {name!r}"] = outcome(client, Op.EMBED, {"text": "hi", "model": name})
    malformed = {
        "timeout nan": outcome(client, Op.THINK, b'{"prompt": "hi", "timeout": NaN}'),
        "nested too deeply": outcome(client, Op.THINK, b'{"prompt": "hi", "response_schema": '
                                     + b'{"a":' * 5000 + b'1' + b'}' * 5001),
        "lone surrogate": outcome(client, Op.COUNT, b'{"prompt": "\\ud800"}'),
        "timeout negative": outcome(client, Op.THINK, {"prompt": "hi", "timeout": -1}),
        "timeout huge": outcome(client, Op.THINK, {"prompt": "hi", "timeout": 10**400}),
        "candidates huge": outcome(client, Op.THINK, {"prompt": "hi", "candidates": 10**40}),
        "candidates streamed": outcome(client, Op.THINK, {"prompt": "hi", "candidates": 2,
                                                          "stream": True}),
        "model empty list": outcome(client, Op.THINK, {"prompt": "hi", "model": []}),
        "model not strings": outcome(client, Op.THINK, {"prompt": "hi", "model": [1, None]}),
        "model duplicate": outcome(client, Op.THINK, {"prompt": "hi",
                                                      "model": ["gemini-test", "gemini-test"]}),
        "model too long a chain": outcome(client, Op.THINK, {"prompt": "hi",
                                                             "model": [f"m{i}" for i in range(9)]}),
        "safety junk": outcome(client, Op.THINK, {"prompt": "hi", "safety": [1, {"x": 2}]}),
        "schema ref bomb": outcome(client, Op.THINK, {"prompt": "hi", "functions": [{
            "name": "f", "parameters": {
                "$defs": {f"a{i}": ({"type": "string"} if i == 0 else {
                    "type": "object", "properties": {k: {"$ref": f"#/$defs/a{i - 1}"}
                                                     for k in "xyz"}}) for i in range(30)},
                "$ref": "#/$defs/a29"}}]}),
        "schema recursive": outcome(client, Op.THINK, {"prompt": "hi", "functions": [{
            "name": "f", "parameters": {"$defs": {"n": {"type": "object", "properties": {
                "next": {"$ref": "#/$defs/n"}}}}, "$ref": "#/$defs/n"}}]}),
        "embed too many": outcome(client, Op.EMBED, {"texts": ["a"] * 10_000}),
        "embed dimensions 0": outcome(client, Op.EMBED, {"text": "a", "dimensions": 0}),
        "embed dimensions huge": outcome(client, Op.EMBED, {"text": "a", "dimensions": 2**70}),
        "embed surrogate": outcome(client, Op.EMBED, b'{"text": "\\ud800"}'),
        "count streamed": outcome(client, Op.COUNT, {"prompt": "hi", "stream": True}),
        "models junk": outcome(client, Op.MODELS, {"model": "x"}),
        "usage junk": outcome(client, Op.USAGE, [1]),
    }
    emit(models=models, malformed=malformed)
