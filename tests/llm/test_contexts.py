"""Conversation contexts: operations, persistence across store instances, size policy."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agentos.errors import AlreadyExists, InvalidArgument, NotFound
from agentos.llm.config import ContextPolicy
from agentos.llm.contexts import ContextStore, trim


def user(text: str) -> dict:
    return {"role": "user", "parts": [{"text": text}]}


def model(text: str) -> dict:
    return {"role": "model", "parts": [{"text": text}]}


CALL = {"role": "model", "parts": [{"functionCall": {"id": "c1", "name": "f", "args": {}},
                                    "thoughtSignature": "c2ln"}]}
RESULT = {"role": "user", "parts": [{"functionResponse": {"id": "c1", "name": "f",
                                                          "response": {"result": 1}}}]}


def test_create_continue_list_fork_clear_delete(tmp_path: Path) -> None:
    async def main() -> None:
        store = ContextStore(tmp_path, ContextPolicy())
        ctx = await store.create("agent:a", "chat", system="Be brief.")
        with pytest.raises(AlreadyExists):
            await store.create("agent:a", "chat")
        await store.append(ctx, user("hi"), model("hello"))
        fork = await store.fork("agent:a", "chat", "chat-2")
        await store.append(fork, user("more"), model("sure"))
        assert len(store.get("agent:a", "chat").contents) == 2
        assert [c.id for c in store.list("agent:a")] == ["chat", "chat-2"]
        assert store.list("agent:b") == [], "contexts are per owner"
        with pytest.raises(NotFound):
            store.get("agent:b", "chat")
        cleared = await store.clear("agent:a", "chat-2")
        assert cleared.contents == [] and cleared.system == "Be brief."
        await store.delete("agent:a", "chat")
        with pytest.raises(NotFound):
            store.get("agent:a", "chat")
        generated = await store.create("agent:a")
        assert generated.id.startswith("ctx-")

    asyncio.run(main())


def test_contexts_survive_a_new_store_on_the_same_dir(tmp_path: Path) -> None:
    async def write() -> None:
        store = ContextStore(tmp_path, ContextPolicy())
        ctx = await store.create("uid:1000", "notes", system="sys")
        await store.append(ctx, user("q"), CALL, RESULT, model("a"))

    asyncio.run(write())
    again = ContextStore(tmp_path, ContextPolicy()).get("uid:1000", "notes")
    assert again.system == "sys"
    assert again.contents == [user("q"), CALL, RESULT, model("a")]
    assert list(tmp_path.rglob("*.tmp")) == []
    assert oct((tmp_path / "uid%3A1000" / "notes.json").stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "x" * 65, "-lead"])
def test_bad_ids_are_refused(tmp_path: Path, bad: str) -> None:
    async def main() -> None:
        with pytest.raises(InvalidArgument):
            await ContextStore(tmp_path, ContextPolicy()).create("o", bad)

    asyncio.run(main())


def test_trim_drops_oldest_turns_and_never_splits_a_call_from_its_result() -> None:
    contents = [user("1"), CALL, RESULT, model("a"), user("2"), model("b")]
    dropped = trim(contents, ContextPolicy(max_turns=4))
    # Dropping "1" would leave the call first; the cut moves on to the next real prompt.
    assert contents == [user("2"), model("b")] and dropped == 4


def test_trim_by_bytes_keeps_the_latest_turn() -> None:
    contents = [user("x" * 500), model("y" * 500), user("z" * 500)]
    trim(contents, ContextPolicy(max_bytes=700))
    assert contents == [user("z" * 500)]
