"""Run as a script: ``agentos kernel`` on a slow disk, where each agent's ledger row commits
``AGENTOS_TEST_LEDGER_DELAY`` seconds late (what a WAL fsync under others' I/O can take). A SPAWN
answers only once the row is committed, so an agent that ends at once ends while it waits."""
from __future__ import annotations

import concurrent.futures
import os
import sys
import threading
from typing import Any

from agentos.cli.main import main
from agentos.processes.agent import Agent
from agentos.processes.ledger import Ledger

DELAY = float(os.environ["AGENTOS_TEST_LEDGER_DELAY"])
_commit = Ledger.spawned


def late_commit(self: Ledger, agent: Agent) -> concurrent.futures.Future[Any] | None:
    committed = _commit(self, agent)
    if committed is None:
        return None
    late: concurrent.futures.Future[Any] = concurrent.futures.Future()
    committed.add_done_callback(lambda _: threading.Timer(DELAY, late.set_result, (None,)).start())
    return late


Ledger.spawned = late_commit  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main(["kernel", *sys.argv[1:]]))
