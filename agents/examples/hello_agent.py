"""The smallest agent: it greets the kernel, says it is ready, and exits.

Run it with ``agentos up agents/examples/hello.yaml`` (or ``agentos spawn hello_agent.py``).
Inside an agent, ``agentos.Client()`` needs no arguments: the kernel handed it a connection.
"""
from __future__ import annotations

import agentos


def main() -> None:
    with agentos.Client() as kernel:
        me = kernel.ready()
        version = kernel.hello()["version"]
        print(f"hello from {me['name']} ({me['id']}), running on agentos {version}", flush=True)


if __name__ == "__main__":
    main()
