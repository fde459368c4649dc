"""The loop every pipeline stage runs: receive, handle, pass on, acknowledge.

A message is acknowledged only after its result was sent on, so a stage that
crashes mid-job gets the job again when it is restarted: nothing is lost
between stages.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import agentos

Handler = Callable[[dict[str, Any]], dict[str, Any]]


def run_stage(handle: Handler, next_stage: str | None) -> int:
    """Serve jobs until a ``{"stop": true}`` body arrives (passed on down the pipeline)."""
    with agentos.Client() as kernel:
        kernel.ready()
        while True:
            message = kernel.recv()
            job = message["body"]
            if job.get("stop"):
                if next_stage is not None:
                    kernel.send(next_stage, job)
                kernel.ack(message["id"])
                return 0
            try:
                result = {**job, **handle(job)}
            except ValueError as exc:
                result = {**job, "error": str(exc)}
            # A failed job skips the remaining stages and goes straight back.
            kernel.send(next_stage if next_stage and "error" not in result else job["reply_to"],
                        result)
            kernel.ack(message["id"])
