"""Projects on the command line: ``-p NAME`` and what a kernel still runs for other projects."""
from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from ..protocol.requests import PROJECT_PATTERN

_PROJECT = re.compile(PROJECT_PATTERN)


def project_option(text: str) -> str:
    """``-p``'s value: a project name (lower-case letters, digits and ``-``, at most 63)."""
    if not _PROJECT.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a project name: use lower-case letters, digits "
                                         "and '-', at most 63, starting with a letter or digit")
    return text


def add_project_option(parser: argparse.ArgumentParser, what: str = "the manifest's") -> None:
    parser.add_argument("-p", "--project", type=project_option, metavar="NAME",
                        help=f"the project (default: {what} `name:`, else its directory's name)")


def describe_running(agents: Iterable[Mapping[str, Any]]) -> str:
    """``3 agents of project other, 1 agent of no project``: what keeps a kernel up."""
    counts = Counter(info.get("project") for info in agents)
    return ", ".join(f"{n} agent{'s' if n > 1 else ''} of {f'project {p}' if p else 'no project'}"
                     for p, n in sorted(counts.items(), key=lambda item: item[0] or ""))
