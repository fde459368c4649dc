"""Stores a large value in its own state, then fetches it again and again, checking every byte:
each reply crosses the bridge in pieces of hundreds of KiB; prints how many came back whole."""
import os

import agentos

with agentos.Client() as client:
    value = os.urandom(300_000).hex()
    client.store("bulk", value)
    whole = sum(client.fetch("bulk") == value for _ in range(8))
    print(f"whole {whole} of 8", flush=True)
