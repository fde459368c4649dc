"""Shared by the pipeline agents: start from an empty mailbox."""
from __future__ import annotations

import agentos


def drop_stale_mail(kernel: agentos.Client) -> None:
    """Mailboxes outlive runs: drop what an interrupted earlier run left (nothing new is sent before READY)."""
    stale = 0
    while True:
        try:
            kernel.recv(timeout=0, ack=True)
        except agentos.Timeout:
            break
        stale += 1
    if stale:
        print(f"dropped {stale} message(s) left by an earlier run", flush=True)
