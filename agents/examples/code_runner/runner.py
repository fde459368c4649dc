"""Run untrusted Python snippets in one sandbox session: ``runner.py SNIPPET.py...``.

Each snippet runs as a cell (names defined by one are seen by the next), with our stdin as its
stdin, 5 s of wall time and 64 KiB of output; /tmp/input.txt holds what ``--in FILE`` names, and
whatever a snippet leaves in /tmp/output.txt is printed at the end. Nothing it does reaches us.
"""
import argparse
import sys

from agentos import Client, NotFound

parser = argparse.ArgumentParser()
parser.add_argument("snippets", nargs="+")
parser.add_argument("--in", dest="input", help="a file the snippets find at /tmp/input.txt")
args = parser.parse_args()
stdin = sys.stdin.buffer.read()
with Client() as kernel, kernel.sandbox(limits={"memory": "128Mi", "pids": 32, "cpu": 0.5}) as sb:
    if args.input:
        kernel.write_file(None, "/tmp/input.txt", open(args.input, "rb").read(), id=sb.id)
    for path in args.snippets:
        run = sb.run_code(open(path).read(), stdin=stdin, timeout=5, max_output=64 << 10)
        status = "timed out" if run.timed_out else run.error.name if run.error else "ok"
        print(f"== {path}: {status}" + (f" => {run.text}" if run.text else ""), flush=True)
        output = run.stdout + run.stderr
        print(output, end="" if output.endswith("\n") or not output else "\n")
        if any(run.dropped.values()):
            print(f"   (not kept: {run.dropped})", flush=True)
    try:
        print("== /tmp/output.txt:", kernel.read_file(None, "/tmp/output.txt", id=sb.id, text=True))
    except NotFound:
        print("== no /tmp/output.txt")
