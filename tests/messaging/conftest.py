"""What the mailbox engine tests share: an open mailbox database of their own."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentos.messaging.mailbox import SCHEMA
from agentos.state.database import Database


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "mailboxes.db", SCHEMA)
    database.open()
    yield database
    database.close()
