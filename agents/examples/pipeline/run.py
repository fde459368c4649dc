"""Run the pipeline: spawn parser -> reasoner -> verifier, send questions, print answers.

    python agents/examples/pipeline/run.py "2 + 3 * 4" "(1 + 2) / 4"

Needs a running kernel (``agentos kernel``; ``AGENTOS_SOCKET`` if not the default
path). The stages get only the ``message`` capability. This script is an outside
client: it registers a mailbox name so the verifier can reply to it.
"""
from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

import agentos

HERE = Path(__file__).resolve().parent
STAGES = ("parser", "reasoner", "verifier")


def run(kernel: agentos.Client, questions: list[str], sandboxed: bool,
        timeout: float = 60.0) -> list[dict]:
    """Spawn the stages, push ``questions`` through them, return the verified results."""
    inbox = f"pipeline-{uuid.uuid4().hex[:8]}"
    kernel.register(inbox)
    for stage in STAGES:
        kernel.spawn(stage, HERE / f"{stage}.py", sandboxed=sandboxed, allow_degraded=True,
                     capabilities=["message"], readonly_paths=[str(HERE)])
    try:
        for n, text in enumerate(questions):
            kernel.send("parser", {"job": n, "text": text, "reply_to": inbox})
        results: dict[int, dict] = {}
        while len(results) < len(questions):
            message = kernel.recv(timeout=timeout, name=inbox)
            results[message["body"]["job"]] = message["body"]
            kernel.ack(message["id"], name=inbox)
        kernel.send("parser", {"stop": True})
        for stage in STAGES:
            kernel.wait(stage, timeout=timeout)
        return [results[n] for n in range(len(questions))]
    finally:
        for stage in STAGES:
            if kernel.list_agents(name=stage, status="running"):
                kernel.kill(stage, grace=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("questions", nargs="+", help="arithmetic questions, e.g. '2 + 3 * 4'")
    parser.add_argument("--no-sandbox", action="store_true", help="run the stages unsandboxed")
    args = parser.parse_args()
    with agentos.Client() as kernel:
        for result in run(kernel, args.questions, sandboxed=not args.no_sandbox):
            if "error" in result:
                print(f"{result['text']!r}: {result['error']}")
            else:
                mark = "verified" if result["verified"] else "NOT verified"
                print(f"{result['text']} = {result['answer']:g} ({mark})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
