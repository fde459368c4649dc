"""Pipeline stage 2 of 3: summarise each document with THINK and pass it on to the reporter.

With GEMINI_API_KEY set in the kernel's environment, the kernel's LLM gateway
asks Gemini. Without one it says so and summarises offline (first sentence,
longest words), so the pipeline still runs end to end with no network at all.
"""
from __future__ import annotations

import re
import sys

from _mailbox import drop_stale_mail

import agentos

PROMPT = "Summarise this in one short sentence, no preamble:\n\n{text}"


def offline_summary(text: str) -> str:
    first = re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0]
    keywords = sorted({w.strip(".,;:").lower() for w in text.split()}, key=lambda w: (-len(w), w))[:3]
    return f"{first} [keywords: {', '.join(keywords)}]"


def main() -> int:
    with agentos.Client() as kernel:
        drop_stale_mail(kernel)
        kernel.ready()
        offline_reason: str | None = None
        while True:
            message = kernel.recv()
            body = message["body"]
            if "done" in body:
                kernel.send("reporter", body)
                kernel.ack(message["id"])
                print(f"batch of {body['done']} done", flush=True)
                return 0
            summary, by = None, "offline"
            if offline_reason is None:
                reply = kernel.think(PROMPT.format(text=body["text"]), temperature=0.2)
                if reply.success and reply.content:
                    summary, by = " ".join(reply.content.split()), f"by {reply.model or 'the model'}"
                else:
                    error = reply.error or {}
                    if error.get("type") == "not_configured":
                        offline_reason = ("no GEMINI_API_KEY is set in the kernel's environment, so THINK "
                                          "has no model: summarising offline instead")
                    else:
                        offline_reason = (f"THINK failed ({error.get('type')}: {error.get('message')}): "
                                          "summarising offline instead")
                    print(offline_reason, flush=True)
            if summary is None:
                summary = offline_summary(body["text"])
            print(f"summarised {body['title']!r} {by}", flush=True)
            # Acknowledged only once passed on: a crash here would leave the document queued, not lost.
            kernel.send("reporter", {"doc": body["doc"], "title": body["title"], "summary": summary, "by": by})
            kernel.ack(message["id"])


if __name__ == "__main__":
    sys.exit(main())
