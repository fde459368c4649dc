"""What a template's agent finds: modules already in memory (never imported here), its view, its env."""
import errno
import json
import os
import sys

marker = sys.modules.get("tplmarker")  # looked up, never imported: importing would prove nothing
out = {"marker_imported_in": getattr(marker, "IMPORTED_IN", None), "decimal": "decimal" in sys.modules,
       "pid": os.getpid(), "env": os.environ.get("TPL"), "pythonpath": os.environ.get("PYTHONPATH", ""),
       "shadowed": os.path.exists("/etc/template-only")}
try:
    with open("/data/greeting.txt") as f:
        out["greeting"] = f.read()
except OSError as exc:
    out["greeting"] = errno.errorcode[exc.errno or 0]
try:
    with open("/data/new.txt", "w") as f:
        f.write("x")
    out["write"] = "ok"
except OSError as exc:
    out["write"] = errno.errorcode[exc.errno or 0]
print(json.dumps(out), flush=True)
