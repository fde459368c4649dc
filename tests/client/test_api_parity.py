"""``Client`` and ``AsyncClient`` offer the same API, and ``_sync_api.py`` is what
``_async_api.py`` generates (the check CI runs)."""
from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from agentos import AsyncClient, Client
from agentos.client import _generate

#: The context-manager dunders are public API too; each flavour has its own names.
DUNDERS = {"__aenter__": "__enter__", "__aexit__": "__exit__"}


def public(cls: type) -> dict[str, Any]:
    return {name: inspect.getattr_static(cls, name) for name in dir(cls)
            if not name.startswith("_") or name in DUNDERS or name in DUNDERS.values()}


def function(member: Any) -> Any:
    return member.__func__ if isinstance(member, (classmethod, staticmethod)) else member


def kind(member: Any) -> str:
    if isinstance(member, property):
        return "property"
    func = function(member)
    if inspect.iscoroutinefunction(func):
        return "coroutine"
    if inspect.isasyncgenfunction(func):
        return "async generator"
    if inspect.isgeneratorfunction(func):
        return "generator"
    return "function"


#: What each kind of async member must be on the blocking client.
BLOCKING_KIND = {"coroutine": "function", "async generator": "generator",
                 "function": "function", "property": "property"}


def shape(member: Any, blocking: bool) -> list[tuple[str, ...]]:
    """Parameters and return annotation, the async ones spelt as the blocking client's."""
    func = function(member.fget if isinstance(member, property) else member)
    signature = inspect.signature(func)
    spell = (lambda text: text) if blocking else (lambda text: _generate.unasync(text))
    params = [(p.name, p.kind.name, repr(p.default), spell(str(p.annotation)))
              for p in signature.parameters.values()]
    return [*params, ("return", spell(str(signature.return_annotation)))]


def api_differences(sync_cls: type, async_cls: type) -> list[str]:
    """How the public APIs of ``sync_cls`` and ``async_cls`` differ (empty: they match)."""
    sync_api = public(sync_cls)
    async_names = {DUNDERS.get(name, name): name for name in public(async_cls)}
    async_api = {name: inspect.getattr_static(async_cls, async_names[name]) for name in async_names}
    problems = [f"{name}: only on {cls.__name__}"
                for cls, names in ((sync_cls, sync_api.keys() - async_api.keys()),
                                   (async_cls, async_api.keys() - sync_api.keys()))
                for name in sorted(names)]
    for name in sorted(sync_api.keys() & async_api.keys()):
        blocking, asynchronous = sync_api[name], async_api[name]
        if kind(blocking) != BLOCKING_KIND[kind(asynchronous)]:
            problems.append(f"{name}: {kind(asynchronous)} on {async_cls.__name__}, "
                            f"{kind(blocking)} on {sync_cls.__name__}")
        if shape(blocking, True) != shape(asynchronous, False):
            problems.append(f"{name}: signatures differ: {shape(blocking, True)} != "
                            f"{shape(asynchronous, False)}")
        docs = (inspect.getdoc(getattr(sync_cls, name)),
                inspect.getdoc(getattr(async_cls, async_names[name])))
        if name not in DUNDERS.values() and (docs[0] != docs[1] or not docs[0]):
            problems.append(f"{name}: docstrings differ or are missing: {docs}")
    return problems


def test_the_two_clients_have_one_api() -> None:
    assert api_differences(Client, AsyncClient) == []
    # The comparison sees the methods that matter, each kind of them.
    kinds = {name: kind(member) for name, member in public(AsyncClient).items()}
    assert {"spawn": "coroutine", "follow_logs": "async generator", "think_stream": "function",
            "connect": "coroutine", "close": "coroutine", "__aenter__": "coroutine",
            "noop_batch": "coroutine"}.items() <= kinds.items()
    assert len(kinds) >= 40


def test_a_drifted_method_is_reported() -> None:
    class Drifted(Client):
        def spawn(self, name: str | None = None) -> dict[str, Any]:  # type: ignore[override]
            """Start an agent."""
            return {}

        def extra(self) -> None:
            """Only here."""

    class Blocking(AsyncClient):
        async def hello(self) -> dict[str, Any]:
            return {}

        def follow_logs(self, agent: str | None = None, *, id: str | None = None,
                        tail: int | None = None) -> Any:
            """Yield the agent's output as it is written, until the agent ends."""

    problems = api_differences(Drifted, Blocking)
    assert any(p.startswith("spawn: signatures differ") for p in problems)
    assert any(p.startswith("spawn: docstrings differ") for p in problems)
    assert "extra: only on Drifted" in problems
    assert any(p.startswith("hello: docstrings differ") for p in problems)  # None on Blocking
    assert "follow_logs: function on Blocking, generator on Drifted" in problems


def test_the_generated_client_is_fresh() -> None:
    done = subprocess.run([sys.executable, "-m", "agentos.client._generate", "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_check_reports_a_stale_generated_file(tmp_path: Path) -> None:
    source, target = tmp_path / "a.py", tmp_path / "s.py"
    source.write_text("async def f() -> None:\n    await g()\n")
    assert _generate.main(["--source", str(source), "--target", str(target), "--check"]) == 1
    assert _generate.main(["--source", str(source), "--target", str(target)]) == 0
    assert target.read_text() == _generate.HEADER + "def f() -> None:\n    g()\n"
    assert _generate.main(["--source", str(source), "--target", str(target), "--check"]) == 0
    source.write_text("async def f() -> None:\n    await h()\n")
    assert _generate.main(["--source", str(source), "--target", str(target), "--check"]) == 1


def test_unasync_rewrites_code_and_leaves_strings_and_comments() -> None:
    source = textwrap.dedent('''\
        class AsyncThing(AsyncIterator[int]):
            """Use with ``async with`` or ``await``."""  # async for: a comment stays

            async def __aenter__(self) -> AsyncThing:
                async with self.lock:
                    return await self.open(1,
                                           2)

            async def __anext__(self) -> int:
                async for x in self.items():
                    return x
                raise StopAsyncIteration
        ''')
    assert _generate.unasync(source) == textwrap.dedent('''\
        class Thing(Iterator[int]):
            """Use with ``async with`` or ``await``."""  # async for: a comment stays

            def __enter__(self) -> Thing:
                with self.lock:
                    return self.open(1,
                                     2)

            def __next__(self) -> int:
                for x in self.items():
                    return x
                raise StopIteration
        ''')
