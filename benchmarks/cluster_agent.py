"""The agent bench_cluster.py places: ``ready`` says READY and idles; ``rtt N`` times N NOOPs and
N THINKs (one at a time, against the fake Gemini) and prints their latencies as one JSON line."""
import json
import sys
import time

import agentos

with agentos.Client() as client:
    if sys.argv[1] == "ready":
        client.ready()
        while True:
            time.sleep(60)
    count = int(sys.argv[2])
    timings: dict[str, list[float]] = {"noop": [], "think": []}
    for _ in range(20):  # warm: the connection, the model's keep-alive pool
        client.noop()
        client.think("warm")
    for _ in range(count):
        started = time.perf_counter()
        client.noop()
        timings["noop"].append(time.perf_counter() - started)
    for i in range(count):
        started = time.perf_counter()
        client.think(f"bench {i}")
        timings["think"].append(time.perf_counter() - started)
    print(json.dumps(timings), flush=True)
