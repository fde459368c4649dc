"""One Python SDK client process for the multi-client NOOP benchmark.

usage: python sdk_worker.py SOCKET_PATH
Connects with ``agentos.Client``, prints "ready", then for each stdin line
"COUNT PAYLOAD_BYTES" makes COUNT sequential ``noop`` calls and prints "done".
Exits when stdin closes. Connecting before the timed rounds keeps process start
and import time out of the measurement.
"""
from __future__ import annotations

import sys

from agentos import Client


def main() -> None:
    with Client(sys.argv[1]) as client:
        print("ready", flush=True)
        for line in sys.stdin:
            count, size = map(int, line.split())
            payload = bytes(size)
            for _ in range(count):
                if client.noop(payload) != payload:
                    sys.exit("noop reply differs from its request")
            print("done", flush=True)


if __name__ == "__main__":
    main()
