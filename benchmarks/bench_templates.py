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

Each template zygote's RSS and PSS are reported too. Run: ``.venv/bin/python -m pytest
benchmarks/bench_templates.py -p no:cacheprovider -s`` (or this file as a script); JSON goes to
``.benchmarks/templates.json``. numpy is used as well when it is installed (it is not in CI's extras).
"""
from __future__ import annotations

import importlib.util
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentos.sandbox import Launcher, SandboxSpec
from agentos.sandbox.templates import TemplateSettings

#: Stdlib modules none of the default zygote's preload imports, heavy enough to matter.
MODULES = ["decimal", "email.parser", "http.client", "urllib.request", "xml.dom.minidom", "sqlite3", "csv",
           "zipfile", "tarfile", "logging.handlers", "argparse", "difflib", "statistics", "fractions",
           *(["numpy"] if importlib.util.find_spec("numpy") else [])]
ROUNDS = 60
WARMUP = 5
OUT = Path(__file__).resolve().parents[1] / ".benchmarks" / "templates.json"


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


if __name__ == "__main__":
    test_warm_fork_per_template()
