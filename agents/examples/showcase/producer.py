"""Pipeline stage 1 of 3: send a batch of documents to the analyst, one at a time, then "done"."""
from __future__ import annotations

import sys
import time

import agentos

DOCUMENTS = [
    ("Processes", ("An agent is an ordinary process. The kernel spawns it in a sandbox, watches it "
                  "through a pidfd and reaps it when it ends.")),
    ("Limits", ("Memory, CPU and process limits come from cgroups. An agent that exceeds its memory "
               "limit is OOM-killed without harming its neighbours.")),
    ("Supervision", ("A restart policy tells the kernel what to do when an agent fails. Backoff doubles "
                    "with each restart so a crash loop cannot overload the host.")),
    ("Isolation", ("Namespaces, seccomp and Landlock keep an agent away from the host. Without the "
                  "network capability it sees only its own loopback interface.")),
    ("Messaging", ("Agents pass work along through durable mailboxes. A message stays stored until its "
                  "receiver acknowledges it.")),
]


def main() -> int:
    with agentos.Client() as kernel:
        for number, (title, text) in enumerate(DOCUMENTS, 1):
            kernel.send("analyst", {"doc": number, "title": title, "text": text})
            print(f"sent document {number}/{len(DOCUMENTS)} {title!r} to the analyst", flush=True)
            time.sleep(0.8)
        kernel.send("analyst", {"done": len(DOCUMENTS)})
    print("all documents sent", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
