"""SIGKILL a writer mid-burst: every write it acknowledged is in the reopened database."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import agentos
from agentos.messaging.mailbox import SCHEMA as MAILBOX_SCHEMA
from agentos.messaging.mailbox import Mailboxes
from agentos.state.database import Database
from agentos.state.store import SCHEMA as STATE_SCHEMA
from agentos.state.store import KVStore

WRITER = Path(__file__).with_name("burst_writer.py")
ACKS_BEFORE_KILL = 1500


def test_sigkill_during_burst_loses_no_acknowledged_write(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(agentos.__file__).parents[1]))
    proc = subprocess.Popen([sys.executable, str(WRITER), str(tmp_path)], stdout=subprocess.PIPE,
                            text=True, env=env)
    acked_keys: list[str] = []
    acked_messages: dict[int, str] = {}
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        while len(acked_keys) + len(acked_messages) < ACKS_BEFORE_KILL:
            line = proc.stdout.readline()
            assert line, "writer died before it was killed"
            kind, *rest = line.split()
            if kind == "kv":
                acked_keys.append(rest[0])
            else:
                acked_messages[int(rest[0])] = rest[1]
        # Kill while the writer is still mid-burst, with writes in flight.
        proc.send_signal(signal.SIGKILL)
        # Lines already in the pipe were acknowledged before the kill, so they count too.
        for line in proc.stdout:
            kind, *rest = line.split()
            if kind == "kv":
                acked_keys.append(rest[0])
            elif len(rest) == 2:
                acked_messages[int(rest[0])] = rest[1]
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    state = Database(tmp_path / "state.db", STATE_SCHEMA)
    mail = Database(tmp_path / "mailboxes.db", MAILBOX_SCHEMA)
    state.open()
    mail.open()
    try:
        kv = KVStore(state)
        boxes = Mailboxes(mail)

        async def check() -> tuple[list[str], dict[int, str]]:
            missing = [k for k in acked_keys if await kv.fetch("burst", k) is None]
            stored: dict[int, str] = {}
            for box in range(4):
                after = 0
                while (message := await boxes.next([f"box{box}"], after)) is not None:
                    stored[message.id] = message.body
                    after = message.id
            return missing, stored

        missing, stored = asyncio.run(check())
    finally:
        state.close()
        mail.close()
    assert missing == []
    assert {mid: stored.get(mid) for mid in acked_messages} == acked_messages
    n, i = acked_keys[-1][1:].split("-")
    assert (asyncio.run(_value(tmp_path, acked_keys[-1]))) == {"n": int(n), "i": int(i)}


async def _value(state_dir: Path, key: str) -> object:
    db = Database(state_dir / "state.db", STATE_SCHEMA)
    db.open()
    try:
        entry = await KVStore(db).fetch("burst", key)
        return entry.value if entry else None
    finally:
        db.close()
