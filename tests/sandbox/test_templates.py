"""Templates (``sandbox.templates``): a read-only root under the agent's view and modules preloaded
in a zygote of the template's own, against a real kernel run as root and as an unprivileged user."""
from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentos import Client
from agentos.errors import InvalidArgument, Unavailable
from agentos.manifest import ManifestError, loads
from agentos.sandbox.templates import TemplateSettings
from tests.security.conftest import API_KEY, MODES, HostileKernel, Users, hostile_kernel_in, users  # noqa: F401

AGENTS = Path(__file__).parent / "agents"
#: What the guardian logs when the kernel left processes behind (kernel/guardian.py).
_LEFT_BEHIND = "process(es) and removed"


def _manifest(home: Path, zygotes: int = 4) -> Path:
    """A world-readable tree: two templates, the test agents, and a manifest whose kernel section
    configures them (relative paths, as a manifest has them)."""
    (home / "ds" / "root" / "data").mkdir(parents=True)
    (home / "ds" / "root" / "data" / "greeting.txt").write_text("hello from the template\n")
    (home / "ds" / "root" / "etc").mkdir()
    (home / "ds" / "root" / "etc" / "template-only").write_text("the host's /etc wins over this\n")
    (home / "ds" / "py").mkdir()
    # Observable: it records the process that imported it.
    (home / "ds" / "py" / "tplmarker.py").write_text("import os\nIMPORTED_IN = os.getpid()\n")
    # A module that starts a thread at import, as numpy's BLAS pool does unless told not to.
    (home / "ds" / "py" / "threadstart.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n")
    (home / "other" / "root").mkdir(parents=True)
    (home / "agents").mkdir()
    for name in ("template_probe", "template_spawner"):
        shutil.copy(AGENTS / f"{name}.py", home / "agents" / f"{name}.py")
    manifest = home / "agentos.yaml"
    manifest.write_text(f"""
kernel:
  sandbox:
    template_zygotes: {zygotes}
    templates:
      ds:
        root: ds/root
        python_path: [ds/py]
        preload: [decimal, tplmarker]
        env: {{TPL: ds}}
      other:
        root: other/root
      threaded:
        python_path: [ds/py]
        preload: [threadstart]
agents:
  probe: {{script: agents/template_probe.py}}
""")
    for path in [home, *home.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return manifest


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="agentos-templates-"))
    try:
        _manifest(directory)
        yield directory
    finally:
        shutil.rmtree(directory)


@pytest.fixture(scope="module", params=MODES)
def kernel(request: pytest.FixtureRequest, users: Users, home: Path) -> Iterator[HostileKernel]:  # noqa: F811
    with hostile_kernel_in(request.param, users, home / "agents",
                           args=["--manifest", str(home / "agentos.yaml")]) as k:
        yield k


def _zygote(client: Client, template: str) -> dict[str, Any] | None:
    zygote: dict[str, Any] | None = client.hello()["capabilities"]["processes"]["templates"][template]["zygote"]
    return zygote


def _gone_or_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _probe(kernel: HostileKernel, name: str, **options: Any) -> dict[str, Any]:
    return kernel.attack("template_probe", name=name, **options)


# --- configuration ---------------------------------------------------------------------------

@pytest.mark.parametrize(("section", "key"), [
    ({"template": {}}, "sandbox: unknown setting(s) ['template']"),
    ({"template_zygotes": 0}, "sandbox.template_zygotes"),
    ({"template_zygote_memory": "lots"}, "sandbox.template_zygote_memory"),
    ({"templates": {"-bad": {}}}, "sandbox.templates: '-bad'"),
    ({"templates": {"t": {"rootfs": "/x"}}}, "sandbox.templates.t: unknown setting(s) ['rootfs']"),
    ({"templates": {"t": {"root": "relative/dir"}}}, "sandbox.templates.t.root"),
    ({"templates": {"t": {"root": "/no/such/dir"}}}, "sandbox.templates.t.root"),
    ({"templates": {"t": {"root": "/"}}}, "sandbox.templates.t.root"),
    ({"templates": {"t": {"preload": ["not a module"]}}}, "sandbox.templates.t.preload"),
    ({"templates": {"t": {"python_path": "/usr"}}}, "sandbox.templates.t.python_path"),
    ({"templates": {"t": {"env": {"AGENTOS_FD": "9"}}}}, "sandbox.templates.t.env"),
    ({"templates": {"t": {"eager": "yes"}}}, "sandbox.templates.t.eager"),
])
def test_a_config_error_names_its_key(section: dict[str, Any], key: str) -> None:
    with pytest.raises(ValueError) as refused:
        TemplateSettings.from_section(section)
    assert key in str(refused.value)


def test_a_directory_others_may_write_is_no_template(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    for key in ("root", "python_path"):
        with pytest.raises(ValueError) as refused:
            TemplateSettings.from_section({"templates": {"t": {key: str(shared) if key == "root" else [str(shared)]}}})
        assert f"sandbox.templates.t.{key}" in str(refused.value) and "written by others" in str(refused.value)


def test_a_manifest_resolves_template_paths_and_reports_errors_at_the_sandbox_key(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "m")
    loaded = loads(manifest.read_text(), manifest)
    templates = loaded.kernel_config().section("sandbox")["templates"]
    assert templates["ds"]["root"] == str(tmp_path / "m" / "ds" / "root")
    assert templates["ds"]["python_path"] == [str(tmp_path / "m" / "ds" / "py")]
    agent = "agents: {a: {script: agents/template_probe.py, template: ds}}\n"
    assert loads(agent, manifest).agents[0].to_spawn_request()["template"] == "ds"
    with pytest.raises(ManifestError) as bad:
        loads("kernel: {sandbox: {templates: {t: {root: missing}}}}\n" + agent, manifest)
    assert "kernel.sandbox.templates.t.root" in str(bad.value) and ":1:" in str(bad.value)
    with pytest.raises(ManifestError) as bad_name:
        loads("agents: {a: {script: agents/template_probe.py, template: 'no/such'}}\n", manifest)
    assert "not a valid template name" in str(bad_name.value)


# --- a kernel with templates -------------------------------------------------------------------

def test_preloaded_modules_are_in_the_agent_and_it_never_imported_them(kernel: HostileKernel) -> None:
    seen = _probe(kernel, "preloaded", template="ds")
    zygote = _zygote(kernel.admin, "ds")
    assert zygote is not None and zygote["missing"] == []
    # Imported once, by the template's zygote (a host pid): the agent (pid 1 of its namespace) has it in memory.
    assert seen["marker_imported_in"] == zygote["pid"] != seen["pid"]
    assert seen["decimal"] is True
    assert seen["env"] == "ds" and seen["pythonpath"].startswith(str(Path(kernel.scripts).parent / "ds" / "py"))
    assert seen["_agent"]["status"] == "exited"
    assert zygote["rss"] > 0 and 0 < zygote["pss"] <= zygote["rss"]
    # Its environment block, which every agent it forks keeps, is the base one: not the kernel's key.
    environ = Path(f"/proc/{zygote['pid']}/environ").read_bytes()
    assert API_KEY.encode() not in environ and b"GEMINI_API_KEY" not in environ
    plain = _probe(kernel, "plain")
    assert plain["marker_imported_in"] is None and plain["env"] is None


def test_the_template_root_is_the_agents_view_read_only(kernel: HostileKernel) -> None:
    seen = _probe(kernel, "rooted", template="ds")
    assert seen["greeting"] == "hello from the template\n"
    assert seen["write"] == "EROFS"
    assert seen["shadowed"] is False  # the host's /etc is bound over the template's
    assert seen["_agent"]["status"] == "exited"
    plain = _probe(kernel, "unrooted")
    assert plain["greeting"] == "ENOENT"
    sandbox = kernel.admin.sandbox(template="ds").start()
    try:
        assert sandbox.isolation["sandbox"]["template"] == "ds"
        assert sandbox.exec(["cat", "/data/greeting.txt"]).stdout == b"hello from the template\n"
    finally:
        sandbox.kill()


#: What confines the process that runs it, as JSON: uid, capabilities, no_new_privs, seccomp,
#: namespaces, cgroup, and whether it may signal the sandbox's pid 1 (Landlock's signal scope).
_CONFINEMENT = """
import json, os
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
try:
    os.kill(1, 0)
    signal_init = "allowed"
except OSError as exc:
    signal_init = exc.strerror
print(json.dumps({**{k: status[k] for k in ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd",
                                             "CapAmb", "NoNewPrivs", "Seccomp")},
                  "ns": {n: os.readlink(f"/proc/self/ns/{n}") for n in sorted(os.listdir("/proc/self/ns"))},
                  "cgroup": open("/proc/self/cgroup").read(), "signal_init": signal_init}))
"""


def test_run_code_starts_with_the_templates_modules_confined_as_an_exec(kernel: HostileKernel) -> None:
    with kernel.admin.sandbox(template="ds") as sb:
        first = sb.run_code("import os, sys\n"
                            "(sorted(m for m in ('decimal', 'tplmarker') if m in sys.modules),"
                            " sys.modules['tplmarker'].IMPORTED_IN, os.getpid())")
        assert first.error is None, first.error
        zygote = _zygote(kernel.admin, "ds")
        assert zygote is not None
        # In sys.modules before the cell imported anything of the template's, imported by its
        # zygote (a host pid), never by the interpreter (a pid of the sandbox's namespace).
        preloaded, imported_in, interpreter = eval(first.text or "")
        assert preloaded == ["decimal", "tplmarker"] and imported_in == zygote["pid"] != interpreter
        # Forked warm, it still holds no more than any exec into the sandbox.
        cell = sb.run_code(_CONFINEMENT)
        python = kernel.admin.hello()["capabilities"]["processes"]["python"]
        command = sb.exec([python, "-c", _CONFINEMENT])
        assert cell.error is None and command.exit_code == 0, (cell.error, command.stderr)
        assert json.loads(cell.stdout) == json.loads(command.stdout)
        assert json.loads(cell.stdout)["NoNewPrivs"] == "1" and json.loads(cell.stdout)["Seccomp"] == "2"


def test_a_zygote_its_preload_left_threaded_is_refused(kernel: HostileKernel) -> None:
    # A fork copies one thread: an agent forked from it would lack the others.
    with pytest.raises(Unavailable) as refused:
        kernel.admin.sandbox(template="threaded").start()
    assert "runs 2 threads" in str(refused.value) and "threadstart" in str(refused.value)
    assert _zygote(kernel.admin, "threaded") is None


def test_an_unknown_template_is_refused_naming_the_field(kernel: HostileKernel) -> None:
    for attempt in (lambda: kernel.spawn("template_probe", name="unknown", template="nope"),
                    lambda: kernel.admin.sandbox(template="nope").start()):
        with pytest.raises(InvalidArgument) as refused:
            attempt()
        assert refused.value.details["field"] == "template"
    with pytest.raises(InvalidArgument) as malformed:
        kernel.spawn("template_probe", name="malformed", template="../ds")
    assert "template" in str(malformed.value)


def test_a_child_uses_its_spawners_template_never_one_outside_its_view(kernel: HostileKernel) -> None:
    verdict = kernel.attack("template_spawner", kernel.script("template_probe"), "ds", "other",
                            name="spawner", template="ds", capabilities=["spawn"])
    assert verdict["ds"] == "exited"
    assert verdict["other"] == {"code": "permission_denied", "field": "template"}


def test_a_template_zygote_killed_from_outside_is_replaced(kernel: HostileKernel) -> None:
    assert _probe(kernel, "before-kill", template="ds")["_agent"]["status"] == "exited"
    old = _zygote(kernel.admin, "ds")
    assert old is not None
    os.kill(old["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30  # bounds a broken run only
    while not _gone_or_zombie(old["pid"]):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    seen = _probe(kernel, "after-kill", template="ds")
    new = _zygote(kernel.admin, "ds")
    assert new is not None and new["pid"] != old["pid"]
    assert seen["marker_imported_in"] == new["pid"] and seen["greeting"] == "hello from the template\n"


@pytest.mark.parametrize("mode", MODES)
def test_zygotes_are_bounded_and_nothing_is_left_at_kernel_stop(mode: str, users: Users) -> None:  # noqa: F811
    directory = Path(tempfile.mkdtemp(prefix="agentos-templates-"))
    try:
        manifest = _manifest(directory, zygotes=1)
        with hostile_kernel_in(mode, users, directory / "agents", args=["--manifest", str(manifest)]) as k:
            assert _probe(k, "first", template="ds")["greeting"] == "hello from the template\n"
            first = _zygote(k.admin, "ds")
            assert first is not None
            k.admin.spawn("second", k.script("template_probe"), template="other")
            k.admin.wait(name="second", timeout=60)
            # One template zygote at most: the idle one made room for the other's.
            assert _zygote(k.admin, "ds") is None
            other = _zygote(k.admin, "other")
            assert other is not None
            pids = [first["pid"], other["pid"]]
            process = k.process
        for pid in pids:
            assert not os.path.exists(f"/proc/{pid}"), f"template zygote {pid} outlived its kernel"
        assert _LEFT_BEHIND not in process.log(), "the kernel left processes for its guardian to kill"
    finally:
        shutil.rmtree(directory)
