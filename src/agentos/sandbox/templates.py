"""Templates: named, prepared starting points for agents (the kernel's ``sandbox.templates``).

A template is a read-only base directory (``root``) layered under the agent's usual view,
and Python modules (``preload``) already imported in a zygote of its own, so an agent of
the template is forked with them in memory instead of importing them. Its ``python_path``
directories are on that zygote's ``sys.path`` and bound read-only into its agents' views
(at their own paths: a module's ``__path__`` must mean the same inside as in the zygote);
its ``env`` is under the SPAWN's.

A template zygote keeps every rule of the default one (``sandbox.zygote``): the base
environment only, single-threaded, its embryos the kernel's to reap, closed with the
launcher. It is started on first use (or with the launcher, ``eager``), at most
``template_zygotes`` run at once (the least recently used idle one is closed for a new
one: agents it forked run on, they are the kernel's children), and one whose memory after
its imports is over ``template_zygote_memory`` (its PSS) is closed and the SPAWN refused.
A dead one is replaced by the next launch, as the default zygote is.

The preload is imported by the zygote as the kernel's uid, in the host's view: so every
directory it imports from (``python_path``) must be writable by no one but the kernel's
uid and root, or anyone who could write there would run code as the kernel.

A zygote must stay single-threaded: a fork copies only the forking thread, so a thread the
preload started (numpy's BLAS pool) would be missing in every agent, and a library waiting
for it (a matrix product, ``os.fork``'s handlers) would wait forever. The preload is imported
with the common thread pools at one thread (``ONE_THREAD``), and a zygote that still runs
more than one thread once its modules are imported is closed and its SPAWN refused.
"""
from __future__ import annotations

import errno
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentos.protocol.requests import ENV_NAME_PATTERN, RESERVED_ENV_PREFIX, TEMPLATE_NAME_PATTERN
from agentos.sandbox.spec import SandboxError
from agentos.sandbox.zygote import DEFAULT_PRELOAD, Zygote, base_env
from agentos.units import parse_bytes

__all__ = ["Template", "TemplateSettings", "TemplateZygotes", "absolute_paths"]

_NAME = re.compile(TEMPLATE_NAME_PATTERN)
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_ENV_NAME = re.compile(ENV_NAME_PATTERN)
_SECTION_KEYS = ("templates", "template_zygotes", "template_zygote_memory")
#: A template zygote's thread pools (OpenBLAS, OpenMP, MKL): no thread beyond the importing one.
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
_TEMPLATE_KEYS = ("root", "preload", "python_path", "env", "eager")


@dataclass(frozen=True)
class Template:
    """One template, checked: its paths real and trusted, its modules named as Python names."""

    name: str
    #: The read-only base layered under the view (a real path), or None.
    root: str | None = None
    #: Imported by its zygote after the default zygote's modules.
    preload: tuple[str, ...] = ()
    #: Directories on its zygote's sys.path, bound read-only into its agents' views (real paths).
    python_path: tuple[str, ...] = ()
    #: Environment of its agents, under the SPAWN's own ``env``.
    env: Mapping[str, str] = field(default_factory=dict)
    #: Start its zygote with the launcher instead of at its first agent.
    eager: bool = False

    @property
    def zygote_preload(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*DEFAULT_PRELOAD, *self.preload)))

    def agent_env(self, under: Mapping[str, str]) -> dict[str, str]:
        """An agent's environment ``under`` with its ``env`` over it, and its ``python_path``
        first on PYTHONPATH (a program it runs, another Python among them, finds those modules)."""
        return self._with_path({**under, **self.env})

    def zygote_env(self, base: Mapping[str, str] | None) -> dict[str, str]:
        """Its zygote's whole environment: the base one (never the kernel's), its
        ``python_path`` first on PYTHONPATH, thread pools at one thread (``ONE_THREAD``)."""
        return self._with_path({**(dict(base) if base is not None else base_env()), **ONE_THREAD})

    def _with_path(self, env: dict[str, str]) -> dict[str, str]:
        if self.python_path:
            env["PYTHONPATH"] = ":".join((*self.python_path, *filter(None, [env.get("PYTHONPATH")])))
        return env

    def describe(self) -> dict[str, Any]:
        """What HELLO says of it (no host path: those are the kernel's configuration)."""
        return {"root": self.root is not None, "preload": list(self.preload),
                "python_path": len(self.python_path), "env": sorted(self.env), "eager": self.eager}


@dataclass(frozen=True)
class TemplateSettings:
    """The ``sandbox`` section of the kernel configuration: templates and their zygotes' bounds."""

    templates: Mapping[str, Template] = field(default_factory=dict)
    #: Template zygotes running at once; a new one closes the least recently used idle one.
    template_zygotes: int = 4
    #: The largest PSS (bytes) a template zygote may hold once its modules are imported.
    template_zygote_memory: int = 1 << 30

    @classmethod
    def from_section(cls, section: Mapping[str, Any] | None) -> TemplateSettings:
        """Checked settings; a ``ValueError`` naming the key (``sandbox.templates.NAME.root``)."""
        section = dict(section or {})
        unknown = sorted(set(section) - set(_SECTION_KEYS))
        if unknown:
            raise ValueError(f"sandbox: unknown setting(s) {unknown}; known: {list(_SECTION_KEYS)}")
        defaults = cls()
        count = section.get("template_zygotes", defaults.template_zygotes)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"sandbox.template_zygotes must be a positive integer, got {count!r}")
        memory = parse_bytes(section.get("template_zygote_memory", defaults.template_zygote_memory),
                             "sandbox.template_zygote_memory")
        given = section.get("templates") or {}
        if not isinstance(given, Mapping):
            raise ValueError("sandbox.templates must be a mapping of template names to templates")
        templates = {}
        for name, body in given.items():
            if not isinstance(name, str) or not _NAME.match(name):
                raise ValueError(f"sandbox.templates: {name!r} is not a template name (letters, digits, "
                                 "'_', '.', '-', at most 63, starting with a letter or digit)")
            templates[name] = _template(name, body, f"sandbox.templates.{name}")
        return cls(templates=templates, template_zygotes=count, template_zygote_memory=memory)


def absolute_paths(section: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """``section`` (a manifest's ``kernel.sandbox``) with its templates' relative paths made
    absolute against ``base`` (the manifest's directory), as every manifest path is."""
    out = dict(section)
    templates = section.get("templates")
    if not isinstance(templates, Mapping):
        return out
    fixed: dict[Any, Any] = {}
    for name, body in templates.items():
        if isinstance(body, Mapping):
            body = dict(body)
            if isinstance(body.get("root"), str):
                body["root"] = str(base / os.path.expanduser(body["root"]))
            if isinstance(body.get("python_path"), list):
                body["python_path"] = [str(base / os.path.expanduser(p)) if isinstance(p, str) else p
                                       for p in body["python_path"]]
        fixed[name] = body
    out["templates"] = fixed
    return out


def _template(name: str, body: Any, where: str) -> Template:
    if body is None:
        body = {}
    if not isinstance(body, Mapping):
        raise ValueError(f"{where} must be a mapping ({', '.join(_TEMPLATE_KEYS)})")
    unknown = sorted(set(body) - set(_TEMPLATE_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {unknown}; known: {list(_TEMPLATE_KEYS)}")
    root = body.get("root")
    if root is not None:
        root = _trusted_dir(root, f"{where}.root")
    preload = body.get("preload") or []
    if not isinstance(preload, list) or not all(isinstance(m, str) and _MODULE.match(m) for m in preload):
        raise ValueError(f"{where}.preload must be a list of module names (such as json or email.parser)")
    paths = body.get("python_path") or []
    if not isinstance(paths, list):
        raise ValueError(f"{where}.python_path must be a list of directories")
    python_path = tuple(_trusted_dir(p, f"{where}.python_path") for p in paths)
    env = body.get("env") or {}
    if not isinstance(env, Mapping) or not all(isinstance(k, str) and _ENV_NAME.match(k) and isinstance(v, str)
                                               for k, v in env.items()):
        raise ValueError(f"{where}.env must map variable names to strings")
    reserved = sorted(name for name in env if name.startswith(RESERVED_ENV_PREFIX))
    if reserved:
        raise ValueError(f"{where}.env: {reserved[0]}: names starting {RESERVED_ENV_PREFIX} are set by "
                         "the kernel for every agent")
    eager = body.get("eager", False)
    if not isinstance(eager, bool):
        raise ValueError(f"{where}.eager must be true or false, got {eager!r}")
    return Template(name=name, root=root, preload=tuple(dict.fromkeys(preload)), python_path=python_path,
                    env=dict(env), eager=eager)


def _trusted_dir(path: Any, where: str) -> str:
    """``path`` as a real, absolute directory, writable only by the kernel's uid or root on the
    whole way down to it: its zygote imports code from it as the kernel's uid, and every agent
    of the template sees it as the kernel's configuration made it."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"{where}: expected a directory path, got {path!r}")
    if not os.path.isabs(path):
        raise ValueError(f"{where}: {path} is relative; give an absolute path")
    if "\0" in path:
        raise ValueError(f"{where}: a path holds no NUL byte")
    real = os.path.realpath(path)
    if not os.path.isdir(real):
        raise ValueError(f"{where}: {path} is not a directory")
    if real == "/":
        raise ValueError(f"{where}: / is the host itself, not a template")
    directory = real
    while True:
        info = os.stat(directory)
        # A sticky directory above it (/tmp) lets no one else rename or remove what is in it.
        sticky_shared = info.st_mode & stat.S_ISVTX and directory != real
        if info.st_uid not in (0, os.geteuid()) or (info.st_mode & 0o022 and not sticky_shared):
            raise ValueError(f"{where}: {directory} may be written by others (owner uid {info.st_uid}, mode "
                             f"{stat.S_IMODE(info.st_mode):o}); only the kernel's uid or root may write "
                             f"where a template ({real}) lies")
        if directory == "/":
            break
        directory = os.path.dirname(directory)
    return real


class _Slot:
    """One template's zygote, the lock its spawns hold, and when it was last used."""

    def __init__(self, template: Template, env: Mapping[str, str] | None) -> None:
        self.template = template
        self.zygote = Zygote(template.zygote_preload, env=template.zygote_env(env))
        self.lock = threading.Lock()
        self.used = 0.0


class TemplateZygotes:
    """The template zygotes of one launcher (see the module's docstring)."""

    def __init__(self, settings: TemplateSettings, env: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self._env = env
        self._slots = {name: _Slot(t, env) for name, t in settings.templates.items()}
        self._lock = threading.Lock()

    @property
    def templates(self) -> Mapping[str, Template]:
        return self.settings.templates

    def acquire(self, name: str, start: Callable[[Zygote], None]) -> tuple[Zygote, threading.Lock]:
        """The running zygote of template ``name``, its lock held (the caller releases it);
        ``start(zygote)`` starts one on the launcher's owner thread."""
        slot = self._slots.get(name)
        if slot is None:
            raise SandboxError("template", errno.ENOENT, f"no template {name!r}")
        slot.lock.acquire()
        try:
            if not slot.zygote.alive:
                slot.zygote.close()  # a dead one: its embryos reaped, then a new one
                self._make_room(slot)
                start(slot.zygote)
                self._check_threads(slot)
                self._check_memory(slot)
            slot.used = time.monotonic()
        except BaseException:
            slot.lock.release()
            raise
        return slot.zygote, slot.lock

    def _make_room(self, starting: _Slot) -> None:
        """Close the least recently used idle zygotes until one more fits."""
        with self._lock:
            running = sorted((s for s in self._slots.values() if s is not starting and s.zygote.pid is not None),
                             key=lambda s: s.used)
            excess = len(running) + 1 - self.settings.template_zygotes
            for slot in running:
                if excess <= 0:
                    return
                if slot.lock.acquire(blocking=False):
                    try:
                        slot.zygote.close()
                    finally:
                        slot.lock.release()
                    excess -= 1
            if excess > 0:
                raise SandboxError("template", errno.EBUSY, f"{self.settings.template_zygotes} template zygotes "
                                   "are all busy forking (sandbox.template_zygotes); try again")

    def _check_threads(self, slot: _Slot) -> None:
        try:
            threads = len(os.listdir(f"/proc/{slot.zygote.pid}/task"))
        except OSError:
            return  # it died: the spawn fails as for any dead zygote
        if threads > 1:
            slot.zygote.close()
            raise SandboxError("template", errno.EINVAL, (
                f"template {slot.template.name!r}: its zygote runs {threads} threads once its modules are "
                f"imported ({', '.join(slot.template.preload)}); a fork copies one, so its agents would lack "
                "the others and could wait for them forever: preload only modules that start no thread"))

    def _check_memory(self, slot: _Slot) -> None:
        memory = slot.zygote.memory()
        limit = self.settings.template_zygote_memory
        if memory.get("pss", 0) > limit:
            slot.zygote.close()
            raise SandboxError("template", errno.ENOMEM, (
                f"template {slot.template.name!r}: its zygote holds {memory['pss']} bytes (PSS) once its "
                f"modules are imported, more than sandbox.template_zygote_memory ({limit})"))

    def start_eager(self, start: Callable[[Zygote], None]) -> None:
        """Start the zygotes of the templates marked ``eager`` (up to the bound)."""
        for name, template in self.templates.items():
            if template.eager:
                _, lock = self.acquire(name, start)
                lock.release()

    def report(self) -> dict[str, Any]:
        """Each template, and its zygote's pid and memory while one runs (HELLO)."""
        out = {}
        for name, slot in self._slots.items():
            zygote = slot.zygote
            running = zygote.pid is not None and zygote.alive
            out[name] = {**slot.template.describe(),
                         "zygote": ({"pid": zygote.pid, **zygote.memory(), "missing": list(zygote.missing)}
                                    if running else None)}
        return out

    def zygote_pids(self) -> dict[str, int]:
        return {name: slot.zygote.pid for name, slot in self._slots.items() if slot.zygote.pid is not None}

    def embryo_pids(self) -> list[int]:
        pids = []
        for slot in self._slots.values():
            with slot.lock:
                pids += slot.zygote.embryo_pids
        return pids

    def close(self) -> None:
        """Close every template zygote (agents they forked are the kernel's: they run on)."""
        for slot in self._slots.values():
            with slot.lock:
                slot.zygote.close()
