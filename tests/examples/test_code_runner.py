"""agents/examples/code_runner against untrusted snippets: a session, stdin, files in and out,
and a fork bomb, a memory bomb, the network, a write to /etc, an infinite loop and a 1 GiB
output flood, each contained while the runner carries on."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from agentos.testing.kernel import KernelProcess

RUNNER = Path(__file__).resolve().parents[2] / "agents" / "examples" / "code_runner" / "runner.py"
SNIPPETS = {
    "define": "import sys\nsecret = 41\nsys.stdin.read().strip()",
    "session": "with open('/tmp/input.txt') as f, open('/tmp/output.txt', 'w') as out:\n"
               "    out.write(f.read().upper())\nsecret + 1",
    "fork_bomb": "import os\nwhile True:\n    os.fork()",
    "memory_bomb": "hog = []\nwhile True:\n    hog.append(bytearray(16 << 20))",
    "network": "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)",
    "etc_write": "open('/etc/passwd', 'a').write('mallory::0:0::/:/bin/sh\\n')",
    "infinite_loop": "while True:\n    pass",
    "flood": "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)",
    "after": "print('still here')",
}


def test_untrusted_snippets_are_contained_and_the_runner_carries_on(kernel: KernelProcess,
                                                                      tmp_path: Path) -> None:
    paths = []
    for name, code in SNIPPETS.items():
        paths.append(tmp_path / f"{name}.py")
        paths[-1].write_text(code)
    (tmp_path / "input.txt").write_text("files in\n")
    passwd = Path("/etc/passwd").read_bytes()
    done = subprocess.run([sys.executable, str(RUNNER), "--in", str(tmp_path / "input.txt"),
                           *map(str, paths)], input=b"from stdin\n", capture_output=True,
                          env={**os.environ, "AGENTOS_SOCKET": str(kernel.socket_path)}, timeout=600)
    assert done.returncode == 0, done.stderr.decode()
    assert len(done.stdout) < 1 << 20  # the flood is bounded on the way: 64 KiB kept per cell
    status = {line.split(": ", 1)[0][3:].rsplit("/", 1)[-1].removesuffix(".py"): line.split(": ", 1)[1]
              for line in done.stdout.decode().splitlines() if line.startswith("== /") and ".py:" in line}
    assert status["define"] == "ok => 'from stdin'" and status["session"] == "ok => 42"
    assert status["fork_bomb"] == "BlockingIOError"
    assert status["memory_bomb"] in ("MemoryError", "InterpreterDied")  # the cgroup's OOM kill
    assert status["network"] == "OSError" and status["etc_write"] in ("OSError", "PermissionError")
    assert status["infinite_loop"] == "timed out"
    assert status["flood"] in ("ok", "timed out")
    assert status["after"] == "ok" and "still here" in done.stdout.decode()
    assert "== /tmp/output.txt: FILES IN" in done.stdout.decode()
    assert Path("/etc/passwd").read_bytes() == passwd
    client = kernel.client()
    assert [a["status"] for a in client.list_agents() if a["name"].startswith("sandbox-")] == ["killed"]
