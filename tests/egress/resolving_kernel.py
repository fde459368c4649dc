"""Run as a script: ``resolving_kernel.py HOSTS.json SECTIONS.json [kernel options]``.

tests/permissions/configured_kernel.py, with the host's resolver answering the names
in HOSTS.json (name -> address) first, so a name can stand for an internal service
without any DNS. The kernel's own resolution path (aiohttp's threaded getaddrinfo)
runs unchanged; only the answer comes from the table.
"""
from __future__ import annotations

import json
import runpy
import socket
import sys
from pathlib import Path
from typing import Any

CONFIGURED_KERNEL = Path(__file__).parents[1] / "permissions" / "configured_kernel.py"


def main() -> None:
    with open(sys.argv[1]) as f:
        hosts: dict[str, str] = json.load(f)
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        return real(hosts.get(name, host), port, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
    sys.argv = [str(CONFIGURED_KERNEL), *sys.argv[2:]]
    runpy.run_path(str(CONFIGURED_KERNEL), run_name="__main__")


if __name__ == "__main__":
    main()
