"""Template benchmarks (issue 12): the warm-fork time per template, beside the cold cost of the same
imports, in one run, round-robin call by call so the machine's other load hits every case alike.

Each case starts one fully sandboxed agent through ``Launcher.launch`` (namespaces, view, seccomp,
Landlock; no kernel, no cgroup) running a script that imports ``MODULES`` and writes one byte; the
time is from the launch call to that byte in hand:

- ``default, trivial script``: the default zygote, a script that imports nothing (the floor);
- ``default, script imports``: the default zygote, the script imports the modules itself;
- ``template (preload)``: a template whose zygote preloaded the modules: the same script's imports
  are dictionary look-ups;
- ``cold interpreter``: no sandbox and no zygote, ``python -c`` importing the same modules (what a
  fresh interpreter per snippet costs).

Each template zygote's RSS and PSS are reported too.

``test_first_cell_with_the_preload``: ``run_code``'s first cell in a new sandbox (its interpreter
started by that call) through a real kernel and the blocking client, the cell importing
``MODULES``, from the call to its result; round-robin in one run:

- ``template (preload)``: a sandbox of a template preloading them; its interpreter is forked
  warm by the template's zygote, so the cell's imports are dictionary look-ups;
- ``no template``: a plain sandbox; its interpreter is forked warm by the default zygote and the
  cell imports the modules itself;
- ``template, exec'd interpreter``: the template's sandbox, its interpreter a new Python (a copy
  of ``interpreter.py``, which the kernel does not fork warm): how every first cell ran before.

Run: ``.venv/bin/python -m pytest benchmarks/bench_templates.py -p no:cacheprovider -s`` (or this
file as a script); JSON goes to ``.benchmarks/templates.json`` and ``.benchmarks/first_cell.json``.
numpy is used as well when it is installed (it is not in CI's extras).
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentos import Client
from agentos.client import sandbox as sandbox_sdk
from agentos.sandbox import Launcher, SandboxSpec
from agentos.sandbox.templates import TemplateSettings
from agentos.testing.kernel import KernelProcess

#: Stdlib modules none of the default zygote's preload imports, heavy enough to matter.
MODULES = ["decimal", "email.parser", "http.client", "urllib.request", "xml.dom.minidom", "sqlite3", "csv",
           "zipfile", "tarfile", "logging.handlers", "argparse", "difflib", "statistics", "fractions",
           *(["numpy"] if importlib.util.find_spec("numpy") else [])]
ROUNDS = 60
#: First cells per case (each a new sandbox).
CELL_ROUNDS = 30
WARMUP = 5
OUT = Path(__file__).resolve().parents[1] / ".benchmarks" / "templates.json"
CELL_OUT = OUT.with_name("first_cell.json")


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered) * 1e3, 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] * 1e3, 2),
            "rounds": len(ordered)}


def _first_byte(fd: int) -> None:
    select.select([fd], [], [], 60)
    assert os.read(fd, 1), "the agent wrote nothing"


def _sandboxed(launcher: Launcher, script: str, template: str | None) -> Callable[[], float]:
    def once() -> float:
        r, w = os.pipe()
        try:
            start = time.perf_counter()
            launched = launcher.launch(SandboxSpec(argv=["agent"], python_script=script,
                                                   env={"PATH": "/usr/bin:/bin"}, stdout_fd=w, stderr_fd=w),
                                       template)
            os.close(w)
            w = -1
            _first_byte(r)
            elapsed = time.perf_counter() - start
            assert launched.wait() == 0
            launched.close()
            return elapsed
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)
    return once


def _cold(code: str) -> Callable[[], float]:
    def once() -> float:
        start = time.perf_counter()
        with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE) as child:
            assert child.stdout is not None
            assert child.stdout.read(1)
            elapsed = time.perf_counter() - start
        assert child.returncode == 0
        return elapsed
    return once


def measure(rounds: int = ROUNDS) -> dict[str, Any]:
    imports = "import " + ", ".join(MODULES) + "\nimport sys\nsys.stdout.buffer.write(b'.')\n"
    with tempfile.TemporaryDirectory(prefix="agentos-bench-templates-") as directory:
        os.chmod(directory, 0o755)
        scripts = {name: os.path.join(directory, f"{name}.py") for name in ("trivial", "imports")}
        Path(scripts["trivial"]).write_text("import sys\nsys.stdout.buffer.write(b'.')\n")
        Path(scripts["imports"]).write_text(imports)
        for path in scripts.values():
            os.chmod(path, 0o644)
        settings = TemplateSettings.from_section({"templates": {"heavy": {"preload": MODULES}}})
        with Launcher(templates=settings) as launcher:
            cases = {"default, trivial script": _sandboxed(launcher, scripts["trivial"], None),
                     "default, script imports": _sandboxed(launcher, scripts["imports"], None),
                     "template (preload)": _sandboxed(launcher, scripts["imports"], "heavy"),
                     "cold interpreter": _cold(imports)}
            samples: dict[str, list[float]] = {name: [] for name in cases}
            for i in range(WARMUP + rounds):
                for name, case in cases.items():
                    elapsed = case()
                    if i >= WARMUP:
                        samples[name].append(elapsed)
            zygote = launcher.templates.report()["heavy"]["zygote"]
    return {"modules": MODULES, "cases": {name: _summary(s) for name, s in samples.items()},
            "template_zygote": {k: zygote[k] for k in ("rss", "pss", "missing")}}


def _print(results: dict[str, Any]) -> None:
    print(f"\nwarm fork per template ({len(results['modules'])} modules: {', '.join(results['modules'])})")
    for name, row in results["cases"].items():
        print(f"  {name:<26} p50 {row['p50_ms']:8.2f} ms   p99 {row['p99_ms']:8.2f} ms   ({row['rounds']} rounds)")
    zygote = results["template_zygote"]
    print(f"  template zygote: rss {zygote['rss'] / 2**20:.1f} MiB, pss {zygote['pss'] / 2**20:.1f} MiB, "
          f"missing {zygote['missing']}")


def test_warm_fork_per_template() -> None:
    results = measure()
    _print(results)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    assert results["template_zygote"]["missing"] == []


@contextlib.contextmanager
def _interpreter(path: str) -> Iterator[None]:
    """Have the SDK start ``path`` as ``run_code``'s interpreter."""
    kept, sandbox_sdk.INTERPRETER = sandbox_sdk.INTERPRETER, path
    try:
        yield
    finally:
        sandbox_sdk.INTERPRETER = kept


def _first_cell(client: Client, cell: str, template: str | None, interpreter: str,
                readonly: list[str]) -> Callable[[], float]:
    def once() -> float:
        with _interpreter(interpreter), client.sandbox(template, readonly_paths=readonly) as sb:
            start = time.perf_counter()
            run = sb.run_code(cell)
            elapsed = time.perf_counter() - start
            assert run.error is None and run.text == "1", (run.error, run.stderr)
        return elapsed
    return once


def measure_first_cell(rounds: int = CELL_ROUNDS) -> dict[str, Any]:
    cell = "import " + ", ".join(MODULES) + "\n1"
    with tempfile.TemporaryDirectory(prefix="agentos-bench-first-cell-") as directory:
        os.chmod(directory, 0o755)
        root = Path(directory)
        # A manifest declares an agent; agentos kernel --manifest reads only its kernel section.
        (root / "unused.py").write_text("")
        manifest = root / "agentos.yaml"
        manifest.write_text(json.dumps({"kernel": {"sandbox": {"templates": {
            "heavy": {"preload": MODULES, "eager": True}}}}, "agents": {"unused": {"script": "unused.py"}}}))
        # A copy the kernel does not recognise: exec'd as a new program, never forked warm.
        copy = root / "cold" / "interpreter.py"
        copy.parent.mkdir(mode=0o755)
        shutil.copy(sandbox_sdk.INTERPRETER, copy)
        copy.chmod(0o644)
        kernel = KernelProcess(root / "k", args=["--manifest", str(manifest)]).start()
        try:
            client = kernel.client(timeout=120)
            cases = {"template (preload)": _first_cell(client, cell, "heavy", sandbox_sdk.INTERPRETER, []),
                     "no template": _first_cell(client, cell, None, sandbox_sdk.INTERPRETER, []),
                     "template, exec'd interpreter": _first_cell(client, cell, "heavy", str(copy),
                                                                 [str(copy.parent)])}
            samples: dict[str, list[float]] = {name: [] for name in cases}
            for i in range(WARMUP + rounds):
                for name, case in cases.items():
                    elapsed = case()
                    if i >= WARMUP:
                        samples[name].append(elapsed)
        finally:
            kernel.stop_checked()
    summary = {name: _summary(s) for name, s in samples.items()}
    warm = summary["template (preload)"]["p50_ms"]
    return {"modules": MODULES, "cases": summary,
            "ratios_p50": {name: round(row["p50_ms"] / warm, 2) for name, row in summary.items()}}


@pytest.mark.timeout(1800)  # a new sandbox per cell, the cold case a second each on a loaded host
def test_first_cell_with_the_preload() -> None:
    results = measure_first_cell()
    print(f"\nrun_code's first cell importing {len(results['modules'])} modules, a new sandbox each")
    for name, row in results["cases"].items():
        print(f"  {name:<30} p50 {row['p50_ms']:8.2f} ms   p99 {row['p99_ms']:8.2f} ms   "
              f"x{results['ratios_p50'][name]:.2f} of the preload's p50   ({row['rounds']} rounds)")
    CELL_OUT.parent.mkdir(exist_ok=True)
    CELL_OUT.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    test_warm_fork_per_template()
    test_first_cell_with_the_preload()
