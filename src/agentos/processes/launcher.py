"""Turn a checked SPAWN request into a running process through the sandbox."""
from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence

from ..protocol.requests import FD_ENV
from ..sandbox import Launched, Launcher, SandboxSpec, initd
from ..sandbox.spec import DEFAULT_AGENT_UID, VolumeBind
from .request import SpawnRequest

#: The fd number an agent finds its kernel connection on (``FD_ENV``).
AGENT_FD = 3
#: Kernel environment passed through to agents; nothing else leaks (API keys stay in the kernel).
PASSED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "HOME", "TMPDIR", "PYTHONPATH",
              "AGENTOS_NO_EXTENSIONS")


def init_program(request: SpawnRequest) -> str | None:
    """agentos-init's path if ``request`` starts a sandbox it serves (sandbox/initd.py): a
    sandbox's idle program. Such an agent has no kernel connection: init speaks to the kernel
    on its control socket, whose end also ends the sandbox, and its execs never get one."""
    return initd.binary() if request.sandboxed and request.script == initd.IDLE else None


def agent_env(request: SpawnRequest, agent_id: str, passed: tuple[str, ...] = PASSED_ENV, *,
              connected: bool = True) -> dict[str, str]:
    """The agent's environment: a few host variables, its template's, the request's, then the
    kernel's own (its connection's fd only if ``connected``)."""
    env = {key: os.environ[key] for key in passed if key in os.environ}
    env.setdefault("PATH", os.defpath)
    # Unbuffered so LOGS shows output as it happens, not when a buffer fills.
    env["PYTHONUNBUFFERED"] = "1"
    if request.sandboxed:
        # The host's HOME (often /root, masked in the view) is not the agent's: its private
        # /tmp is the one place it may always write. TMPDIR likewise names a host directory.
        env["HOME"] = "/tmp"
        env.pop("TMPDIR", None)
    if request.template is not None:
        env = request.template.agent_env(env)
    env.update(request.env)
    env.update({"AGENTOS_AGENT_ID": agent_id, "AGENTOS_AGENT_NAME": request.name})
    if connected:
        env[FD_ENV] = str(AGENT_FD)
    return env


def start_process(launcher: Launcher, request: SpawnRequest, agent_id: str, *, output_fd: int,
                  kernel_fd: int | None, before_exec: Callable[[int], None],
                  passed_env: tuple[str, ...] = PASSED_ENV, masked_paths: Sequence[str] = (),
                  tmp_size: int | None = None, agent_uid: int = DEFAULT_AGENT_UID,
                  workspace: str | int | None = None, volumes: Sequence[VolumeBind] = ()) -> Launched:
    """Launch the agent with ``output_fd`` as stdout and stderr and ``kernel_fd`` as fd 3
    (None for a sandbox served by agentos-init, ``init_program``).

    ``masked_paths`` are hidden from the agent whatever it binds (a bind at or inside
    one is refused), ``tmp_size`` bounds its private /tmp, ``agent_uid`` is the uid a
    root kernel's sandboxed agent runs as, ``workspace`` what appears at /workspace (a host
    directory, or a tmpfs's size), ``volumes`` the named volumes' directories and mount points.

    Blocks for the sandbox handshake (milliseconds; longer on a loaded host), so
    the service calls it from a worker thread. Raises ``SandboxError`` when the
    sandbox cannot be set up; nothing is left running then.
    """
    # A sandbox's idle program is agentos-init, which also serves its execs (sandbox/initd.py).
    init = init_program(request)
    kernel_init, agent_init = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) if init else (None, None)
    spec = SandboxSpec(
        argv=initd.command(init) if init else request.argv,
        python_script=None if init else request.script,
        env=agent_env(request, agent_id, passed_env, connected=kernel_fd is not None),
        cwd=request.cwd,
        # The UTS namespace that makes a hostname private exists only in the sandbox.
        hostname=(request.hostname or request.name) if request.sandboxed else None,
        stdin_fd=None,
        stdout_fd=output_fd,
        stderr_fd=output_fd,
        pass_fds={**({kernel_fd: AGENT_FD} if kernel_fd is not None else {}),
                  **({agent_init.fileno(): initd.CONTROL_FD} if agent_init else {})},
        sandboxed=request.sandboxed,
        network=request.network,
        writable_paths=request.writable_paths,
        readonly_paths=request.readonly_paths,
        allow_degraded=request.allow_degraded,
        tmp_size=tmp_size,
        workspace=workspace,
        volumes=list(volumes),
        masked_paths=list(masked_paths),
        agent_uid=agent_uid,
        before_exec=before_exec,
    )
    try:
        launched = launcher.launch(spec, request.template.name if request.template is not None else None)
    except BaseException:
        if kernel_init is not None:
            kernel_init.close()
        raise
    finally:
        if agent_init is not None:
            agent_init.close()
    if kernel_init is not None:
        launched.init = initd.InitChannel(kernel_init, launched.entry)
        launched.isolation["init"] = "agentos-init"
    return launched
