"""The trust boundary, attacked from inside agents: no secret of the kernel's reaches them, a
root kernel's agents are not root, masked paths stay hidden whatever is bound, /tmp is bounded."""
from __future__ import annotations

import errno
import json
import os
import secrets
import select
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentos.processes.settings import ProcessSettings
from agentos.sandbox import HostSupport, Launcher, SandboxError, SandboxSpec, mounts
from agentos.sandbox._linux import linux
from agentos.sandbox.plan import make_plan
from agentos.sandbox.spec import DEFAULT_AGENT_UID
from agentos.testing.kernel import KernelProcess
from tests.sandbox.conftest import AGENTS, ENV, agent, require_root, run_agent
from tests.unprivileged import blocked_ancestors, unprivileged_env

#: Public prefix of every secret these tests plant: the scanner looks for it, never for a value.
MARKER = "agentos-planted-"


def _secret() -> str:
    return MARKER + secrets.token_hex(16)


# --- 1. no secret reaches an agent through the zygote -------------------------------------------

@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A kernel holding an API key and another secret in its environment; what a script agent
    and an exec'd agent find when they scan everything they can reach for the marker."""
    key, other = _secret(), _secret()
    controls = {"script": _secret(), "command": _secret()}
    kernel = KernelProcess(tmp_path_factory.mktemp("secrets") / "k",
                           env={"GEMINI_API_KEY": key, "AGENTOS_TEST_SECRET": other}).start()
    try:
        client = kernel.client()
        started = {
            # A value the agent is given on purpose: proof the scan finds what is there.
            "script": client.spawn("scan-script", agent("secret_scan"), args=[MARKER],
                                   env={"CONTROL": controls["script"]}),
            "command": client.spawn("scan-command", command=[sys.executable, agent("secret_scan"), MARKER],
                                    readonly_paths=[str(AGENTS)], env={"CONTROL": controls["command"]}),
        }
        reports = {}
        for kind, info in started.items():
            end = client.wait(id=info["id"], timeout=120)
            output = client.logs(id=info["id"])
            assert end["exit_code"] == 0, output
            reports[kind] = json.loads(output.splitlines()[-1])
        yield {"secrets": {key, other}, "controls": controls, "reports": reports}
    finally:
        kernel.stop_checked()


@pytest.mark.parametrize("kind", ["script", "command"])
def test_no_secret_of_the_kernel_is_anywhere_an_agent_can_read(scans: dict[str, Any], kind: str) -> None:
    require_root("the agents' scan covers a sandboxed kernel's agents; the security suite runs it rootless")
    report = scans["reports"][kind]
    # The scan reached what it claims: its own and its child's environ, cmdline and memory.
    assert {"/proc/1/environ", "/proc/1/cmdline", "/proc/1/mem", "/proc/2/mem"} <= set(report["where"])
    assert scans["controls"][kind] in report["found"]
    assert not scans["secrets"] & set(report["found"])


def test_the_zygote_itself_holds_only_the_base_environment(tmp_path: Path) -> None:
    planted = _secret()
    os.environ["AGENTOS_TEST_PLANTED"] = planted
    try:
        with Launcher() as launcher:
            pid = launcher.zygote_pid
            with open(f"/proc/{pid}/environ", "rb") as f:
                names = {entry.split(b"=", 1)[0].decode() for entry in f.read().split(b"\0") if entry}
    finally:
        del os.environ["AGENTOS_TEST_PLANTED"]
    assert names <= {"PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH", "PYTHONHOME", "AGENTOS_NO_EXTENSIONS"}


def test_an_earlier_agents_argv_and_env_are_not_in_a_later_agents_memory(launcher: Launcher,
                                                                          tmp_path: Path) -> None:
    # Every agent is forked from the zygote: what the zygote ever held, every later agent holds.
    given = {"script": _secret(), "argv": _secret(), "command": _secret()}
    scan = str(AGENTS / "secret_scan.py")
    first = run_agent(launcher, tmp_path, script=scan, argv=[MARKER, given["argv"]],
                      env={**ENV, "HANDED_OVER": given["script"]}).json()
    assert {given["script"], given["argv"]} <= set(first["found"])  # the scan finds what is there
    run_agent(launcher, tmp_path, argv=["sh", "-c", "true", given["command"]], env={**ENV, "X": given["command"]})
    later = run_agent(launcher, tmp_path, script=scan, argv=[MARKER]).json()
    assert later["scanned"] and not set(given.values()) & set(later["found"])


# --- 2. a root kernel's agents run as an unprivileged uid ---------------------------------------

@pytest.fixture
def private_dirs(tmp_path: Path) -> dict[str, Path]:
    """Root-owned 0700 directories, as pytest's own are: one to write in, one holding the script."""
    require_root("the agents of a root kernel")
    dirs = {"work": tmp_path / "work", "code": tmp_path / "code"}
    for d in dirs.values():
        d.mkdir(mode=0o700)
    os.chmod(tmp_path, 0o700)
    (dirs["code"] / "helper.py").write_text("WHERE = 'next to the script'\n")
    (dirs["code"] / "agent.py").write_text(
        "import json, os, sys\n"
        "import helper\n"
        "def attempt(fn):\n"
        "    try:\n"
        "        fn()\n"
        "        return 'ok'\n"
        "    except OSError as exc:\n"
        "        return os.strerror(exc.errno)\n"
        "work = sys.argv[1]\n"
        "with open(os.path.join(work, 'written'), 'w') as f:\n"
        "    f.write('by the agent')\n"
        "report = {'uid': os.getuid(), 'gid': os.getgid(), 'groups': os.getgroups(), 'helper': helper.WHERE,\n"
        "          'shadow': attempt(lambda: open('/etc/shadow').read()),\n"
        "          'setuid 0': attempt(lambda: os.setuid(0))}\n"
        "print(json.dumps(report), flush=True)\n"
        "sys.stdin.read()  # until the test has looked at it from the host\n")
    for f in dirs["code"].iterdir():
        f.chmod(0o600)
    return dirs


@pytest.mark.parametrize("via", ["zygote", "exec"])
def test_a_root_kernels_agent_is_an_unprivileged_uid_that_can_still_use_its_binds(
        launcher: Launcher, private_dirs: dict[str, Path], tmp_path: Path, via: str) -> None:
    work, script = private_dirs["work"], private_dirs["code"] / "agent.py"
    stdin_r, stdin_w = os.pipe()
    out = tmp_path / "out"
    spec: dict[str, Any] = {"env": dict(ENV), "writable_paths": [str(work)], "stdin_fd": stdin_r}
    if via == "zygote":
        spec.update(argv=["agent", str(work)], python_script=str(script))
    else:
        spec.update(argv=[sys.executable, str(script), str(work)], readonly_paths=[str(script.parent)])
    with open(out, "w+") as log:
        launched = launcher.launch(SandboxSpec(stdout_fd=log.fileno(), stderr_fd=log.fileno(), **spec))
        os.close(stdin_r)
        try:
            while "}" not in out.read_text() and launched.poll() is None:
                select.select([launched.pidfd], [], [], 0.05)  # its report, or its death
            # From the host: the agent's real ids.
            status = Path(f"/proc/{launched.pid}/status").read_text()
            ids = {line.split(":")[0]: line.split()[1:] for line in status.splitlines()
                   if line.startswith(("Uid:", "Gid:", "Groups:"))}
        finally:
            os.close(stdin_w)
            code = launched.wait()
            launched.close()
    assert code == 0, out.read_text()
    report = json.loads(out.read_text())
    assert ids["Uid"] == ids["Gid"] == [str(DEFAULT_AGENT_UID)] * 4
    assert ids["Groups"] == []
    assert launched.isolation["uid"] == report["uid"] == report["gid"] == DEFAULT_AGENT_UID
    assert report["groups"] in ([], [DEFAULT_AGENT_UID])
    assert report["shadow"] == os.strerror(errno.EACCES)
    assert report["setuid 0"] == os.strerror(errno.EPERM)
    assert report["helper"] == "next to the script"
    # The write landed on the host, owned by the directory's owner (root), not by the agent's uid.
    written = work / "written"
    assert written.read_text() == "by the agent"
    assert (written.stat().st_uid, written.stat().st_gid) == (0, 0)


def test_a_readable_bind_is_not_idmapped_so_root_only_files_in_it_stay_closed(
        launcher: Launcher, tmp_path: Path) -> None:
    require_root("the agents of a root kernel")
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    (shared / "public").write_text("public")
    (shared / "private").write_text("private")
    (shared / "private").chmod(0o600)
    result = run_agent(launcher, tmp_path, readonly_paths=[str(shared)], argv=[
        "sh", "-c", f"cat {shared}/public; cat {shared}/private 2>/dev/null || echo ' closed'"])
    assert result.stdout == "public closed\n"


def test_the_agent_uid_is_configurable_and_never_root(launcher: Launcher, tmp_path: Path) -> None:
    require_root("the agents of a root kernel")
    result = run_agent(launcher, tmp_path, argv=["id", "-u"], agent_uid=4242)
    assert result.stdout == "4242\n" and result.isolation["uid"] == 4242
    with pytest.raises(SandboxError, match="agent_uid"):
        launcher.launch(SandboxSpec(argv=["true"], agent_uid=0))
    assert ProcessSettings.from_section({}).agent_uid == DEFAULT_AGENT_UID
    assert ProcessSettings.from_section({"agent_uid": 4242}).agent_uid == 4242
    for bad in (0, -1, True, "65533", 2**32):
        with pytest.raises(ValueError, match="agent_uid"):
            ProcessSettings.from_section({"agent_uid": bad})


def test_a_file_system_without_idmapping_refuses_the_spawn_and_says_what_to_do(
        launcher: Launcher, tmp_path: Path) -> None:
    require_root("mounts a file system without idmapped mounts")
    # A private dir on a file system that cannot be idmapped: procfs stands in for NFS, FUSE...
    with pytest.raises(SandboxError) as info:
        launcher.launch(SandboxSpec(argv=["true"], env=dict(ENV), writable_paths=["/proc/sys"]))
    error = info.value
    assert (error.step, error.errno) == ("idmap /proc/sys", errno.EINVAL)
    assert "/proc/sys" in error.message and "idmapped" in error.message and "rootless" in error.message


# --- 3. masks: nothing bound can reveal them; /tmp is bounded -----------------------------------

@pytest.fixture
def planted() -> Iterator[dict[str, str]]:
    """A secret file in /root and in another user's home (a new dir in /home), removed after."""
    require_root("plants files in /root and /home")
    made: dict[str, str] = {}
    fd, in_root = tempfile.mkstemp(dir="/root", prefix="agentos-mask-")
    os.write(fd, _secret().encode())
    os.close(fd)
    made["root"] = in_root
    os.makedirs("/home", exist_ok=True)
    home = tempfile.mkdtemp(dir="/home", prefix="agentos-mask-")
    os.chmod(home, 0o755)
    Path(home, "notes").write_text(_secret())
    os.chmod(Path(home, "notes"), 0o644)  # even a world-readable file in another home stays hidden
    made["home"] = home
    try:
        yield made
    finally:
        os.unlink(in_root)
        shutil.rmtree(home)


def test_a_bind_of_the_whole_host_reveals_no_masked_path(launcher: Launcher, tmp_path: Path,
                                                           planted: dict[str, str]) -> None:
    # Outside /tmp: the agent's /tmp is its own whatever is bound.
    kernel_dir = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="agentos-mask-"))
    try:
        _whole_host(launcher, tmp_path, planted, kernel_dir)
    finally:
        shutil.rmtree(kernel_dir)


def _whole_host(launcher: Launcher, tmp_path: Path, planted: dict[str, str], kernel_dir: Path) -> None:
    # Open to everyone: only the masks hide them.
    kernel_dir.chmod(0o755)
    state = kernel_dir / "state"
    state.mkdir(mode=0o755)
    (state / "state.db").write_text(_secret())
    sock = kernel_dir / "kernel.sock"
    sock.write_text(_secret())
    for made in (state / "state.db", sock):
        made.chmod(0o644)
    result = run_agent(launcher, tmp_path, script=str(AGENTS / "list_paths.py"), readonly_paths=["/"],
                       masked_paths=[str(state), str(sock)],
                       argv=["/root", planted["root"], planted["home"], f"{planted['home']}/notes", "/etc/shadow",
                             str(state), f"{state}/state.db", str(sock), "/home"])
    seen = result.json()
    assert seen["/root"] == [".pyenv"]  # only this Python, bound on top of the mask
    assert seen[planted["root"]] == seen[f"{planted['home']}/notes"] == "ENOENT"
    assert seen[planted["home"]] == seen[str(state)] == []
    assert seen[f"{state}/state.db"] == "ENOENT"
    assert seen["/etc/shadow"] == seen[str(sock)] == "EACCES"  # /dev/null, on a nodev mount
    assert os.path.basename(planted["home"]) in seen["/home"]  # there, but empty
    assert {"/root", planted["home"], str(state), str(sock), "/etc/shadow"} <= set(result.isolation["masked"])


def test_a_bind_of_a_parent_reveals_no_masked_path_and_one_at_or_inside_it_is_refused(
        launcher: Launcher, tmp_path: Path) -> None:
    state = tmp_path / "run" / "state"
    state.mkdir(parents=True)
    (state / "state.db").write_text(_secret())
    (tmp_path / "link").symlink_to(state)
    sockets = {name: socket.socket(socket.AF_UNIX) for name in ("kernel.sock", "other.sock")}
    for name, listener in sockets.items():
        listener.bind(str(tmp_path / "run" / name))
        listener.listen()
    masked: dict[str, Any] = {"masked_paths": [str(state), str(tmp_path / "run" / "kernel.sock")]}
    try:
        result = run_agent(launcher, tmp_path, script=str(AGENTS / "list_paths.py"),
                           writable_paths=[str(tmp_path)], **masked,
                           argv=[str(state), f"{state}/state.db", str(tmp_path / "link"),
                                 *(str(tmp_path / "run" / name) for name in sockets)])
    finally:
        for listener in sockets.values():
            listener.close()
    seen = result.json()
    assert seen[str(state)] == seen[str(tmp_path / "link")] == []
    assert seen[f"{state}/state.db"] == "ENOENT"
    # The kernel's socket is /dev/null on a nodev mount; a socket beside it still connects.
    assert seen[str(tmp_path / "run" / "kernel.sock")] == "EACCES"
    assert seen[str(tmp_path / "run" / "other.sock")] == "connected"
    for field, value in (("readonly_paths", [str(state)]), ("writable_paths", [str(state / "x")]),
                         ("readonly_paths", [str(tmp_path / "link")]), ("workdir", str(state))):
        (state / "x").mkdir(exist_ok=True)
        with pytest.raises(SandboxError) as info:
            launcher.launch(SandboxSpec(argv=["true"], env=dict(ENV), **{field: value}, **masked))  # type: ignore[arg-type]
        assert (info.value.step, info.value.errno) == ("spec", errno.EPERM)
        assert field in info.value.message and str(state) in info.value.message


def test_tmp_size_bounds_the_private_tmp(launcher: Launcher, tmp_path: Path) -> None:
    size = 2 << 20
    result = run_agent(launcher, tmp_path, tmp_size=size, argv=["sh", "-c", (
        "df -k /tmp | tail -1 | awk '{print $2}'; "
        "dd if=/dev/zero of=/tmp/fill bs=64k count=1000 2>&1 | grep -o 'No space left on device'; "
        "ls -l /tmp/fill | awk '{print $5}'")])
    total_kib, dd_error, written = result.stdout.splitlines()
    assert int(total_kib) * 1024 == size
    assert dd_error == "No space left on device"
    assert int(written) <= size


# --- 4. allow_degraded when user namespaces are missing -----------------------------------------

def _no_user_namespaces() -> HostSupport:
    note = "a child in these namespaces could not set up: No space left on device"
    return HostSupport(arch=linux.ARCH, root=False, user_namespaces=False, mount_setattr=False,
                       seccomp=True, landlock_abi=3,
                       namespaces=dict.fromkeys(("user", "pid", "mount", "uts", "ipc", "net", "cgroup"), False),
                       notes={"user": note})


@pytest.fixture
def unprivileged_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    """make_plan as a kernel that is not root would run it."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(os, "getegid", lambda: 1000)


def test_without_user_namespaces_the_refusal_says_what_to_do(unprivileged_caller: None) -> None:
    with pytest.raises(SandboxError) as info:
        make_plan(SandboxSpec(argv=["true"]), _no_user_namespaces(), "/")
    message = info.value.message
    assert info.value.step == "plan" and info.value.errno == errno.ENOTSUP
    for advice in ("user.max_user_namespaces", "apparmor_restrict_unprivileged_userns", "agentos doctor",
                   "run the kernel as root", "allow_degraded", "no_new_privs, Landlock and seccomp"):
        assert advice in message


def test_degraded_without_user_namespaces_keeps_what_needs_no_privilege(unprivileged_caller: None) -> None:
    plan, report = make_plan(SandboxSpec(argv=["true"], allow_degraded=True), _no_user_namespaces(), "/")
    assert plan.clone_flags == 0 and not plan.view and plan.user_map is None and plan.run_as is None
    # Nothing to drop but the bounding set, which an unprivileged process cannot touch.
    assert not plan.drop_bounding
    assert plan.landlock_abi == 3 and plan.seccomp_program
    assert report["namespaces"] == [] and report["capabilities"] == "none held (bounding set kept)"
    assert report["degraded"][0].startswith("user namespace: ")
    assert "pid namespace: needs a user namespace" in report["degraded"]


def test_degraded_without_user_namespaces_really_runs(tmp_path: Path) -> None:
    """An unprivileged launcher on a host whose user namespaces are used up runs a degraded agent."""
    require_root("runs the launcher as another uid, in a user namespace with no room for another")
    code = (
        "import json, sys\n"
        "from agentos.sandbox import Launcher, SandboxSpec\n"
        "with Launcher() as launcher:\n"
        "    agent = launcher.launch(SandboxSpec(argv=['sh', '-c', 'grep -E \"^(CapEff|NoNewPrivs|Seccomp):\" "
        "/proc/self/status; echo x > /etc/agentos-degraded-probe'], env={'PATH': '/usr/bin:/bin'},\n"
        "                                       stdout_fd=1, stderr_fd=1, allow_degraded=True))\n"
        "    code = agent.wait()\n"
        "    print(json.dumps({'code': code, 'isolation': agent.isolation}), flush=True)\n")
    out = _run_without_user_namespaces([sys.executable, "-c", code], tmp_path)
    lines = out.splitlines()
    report = json.loads(lines[-1])
    assert report["isolation"]["namespaces"] == [] and report["isolation"]["degraded"]
    assert "CapEff:\t0000000000000000" in lines and "NoNewPrivs:\t1" in lines and "Seccomp:\t2" in lines
    assert report["code"] != 0 and not os.path.exists("/etc/agentos-degraded-probe")


def _run_without_user_namespaces(argv: list[str], tmp_path: Path) -> str:
    """Run ``argv`` as uid 1000 inside a user namespace whose limit of nested ones is 0."""

    out = tmp_path / "out"
    r, w = os.pipe()
    pid, pidfd = linux.clone3(linux.CLONE_NEWUSER | linux.CLONE_NEWNS)
    if pid == 0:
        try:
            os.close(w)
            os.read(r, 1)  # until the parent has mapped us
            with open("/proc/sys/user/max_user_namespaces", "w") as f:
                f.write("0")
            linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
            for directory, entries in blocked_ancestors(mounts.python_paths()).items():
                keep = {e: os.open(f"{directory}/{e}", os.O_PATH) for e in entries}
                linux.mount("tmpfs", directory, "tmpfs", 0, "mode=0755")
                for entry, fd in keep.items():
                    os.mkdir(f"{directory}/{entry}")
                    linux.mount(f"/proc/self/fd/{fd}", f"{directory}/{entry}", None,
                                   linux.MS_BIND | linux.MS_REC)
            fd = os.open(out, os.O_WRONLY | os.O_CREAT, 0o666)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.setgroups([])
            os.setresgid(1000, 1000, 1000)
            os.setresuid(1000, 1000, 1000)
            os.execve(argv[0], argv, unprivileged_env({"PATH": "/usr/bin:/bin"}))
        finally:
            os._exit(127)
    os.close(r)
    try:
        for name in ("uid_map", "gid_map"):
            Path(f"/proc/{pid}/{name}").write_text("0 0 1\n1000 1000 1\n")
    finally:
        os.close(w)
        result = os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
        os.close(pidfd)
    assert result is not None and result.si_status == 0, out.read_text()
    return out.read_text()
