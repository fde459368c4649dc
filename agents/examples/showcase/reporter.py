"""Pipeline stage 3 of 3: collect the analyst's summaries and deliver the pipeline's result.

Started first (the others depend on it being ready); ends once the analyst says
the batch is done, printing one ``pipeline result`` line.
"""
from __future__ import annotations

import sys

from _mailbox import drop_stale_mail

import agentos


def main() -> int:
    with agentos.Client() as kernel:
        drop_stale_mail(kernel)
        kernel.ready()
        print("waiting for summaries from the analyst", flush=True)
        summaries: dict[int, dict] = {}
        while True:
            message = kernel.recv(ack=True)
            body = message["body"]
            if "done" in body:
                break
            summaries[body["doc"]] = body
            print(f"got summary {len(summaries)}: {body['title']!r}", flush=True)
    how = sorted({s["by"] for s in summaries.values()})
    print(f"pipeline result: {len(summaries)} of {body['done']} documents summarised "
          f"({', '.join(how) or 'none'}), passed producer -> analyst -> reporter by SEND/RECV", flush=True)
    for doc in sorted(summaries):
        print(f"  - {summaries[doc]['title']}: {summaries[doc]['summary']}", flush=True)
    return 0 if len(summaries) == body["done"] else 1


if __name__ == "__main__":
    sys.exit(main())
