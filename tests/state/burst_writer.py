"""Run as a script: write STOREs and SENDs concurrently forever, printing each acknowledgement.

The durability test SIGKILLs this process mid-burst and checks that every line it
printed (an acknowledged write) is in the reopened databases.
"""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from agentos.messaging.mailbox import SCHEMA as MAILBOX_SCHEMA
from agentos.messaging.mailbox import Mailboxes, MailboxLimits
from agentos.state.database import Database
from agentos.state.store import SCHEMA as STATE_SCHEMA
from agentos.state.store import KVStore


async def worker(n: int, kv: KVStore, boxes: Mailboxes) -> None:
    i = 0
    while True:
        key = f"w{n}-{i}"
        await kv.store("burst", key, {"n": n, "i": i})
        sys.stdout.write(f"kv {key}\n")
        message = await boxes.send(f"box{n % 4}", "burst", key)
        sys.stdout.write(f"msg {message.id} {key}\n")
        sys.stdout.flush()
        i += 1


async def main(state_dir: Path) -> None:
    state = Database(state_dir / "state.db", STATE_SCHEMA)
    mail = Database(state_dir / "mailboxes.db", MAILBOX_SCHEMA)
    state.open()
    mail.open()
    kv = KVStore(state)
    boxes = Mailboxes(mail, MailboxLimits(max_messages=10**9))
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await asyncio.gather(*(worker(n, kv, boxes) for n in range(32)))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
