"""Run by test_rootless as an unprivileged uid: launch one sandboxed agent, print what it saw.

argv[1]: JSON {"workdir": ..., "tcp": [host, port]}. Prints one JSON object: the inspection
agent's report plus "isolation" and "uid" (this launcher's uid).
"""
import json
import os
import sys

from agentos.sandbox import Launcher, SandboxSpec

config = json.loads(sys.argv[1])
here = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(config["workdir"], "agent.out")
with Launcher() as launcher, open(out, "w+") as log:
    launched = launcher.launch(SandboxSpec(
        argv=["inspect", json.dumps({"tcp": config["tcp"], "write": [config["workdir"], "/usr", "/tmp"]})],
        python_script=os.path.join(here, "inspect_view.py"), env={"PATH": "/usr/bin:/bin"},
        stdout_fd=log.fileno(), stderr_fd=log.fileno(), workdir=config["workdir"], hostname="rootless"))
    code = launched.wait()
    launched.close()
    log.seek(0)
    output = log.read()
if code != 0:
    sys.exit(f"agent failed ({code}): {output}")
report = json.loads(output)
report.update(isolation=launched.isolation, uid=os.getuid())
print(json.dumps(report))
