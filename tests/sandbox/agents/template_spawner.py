"""An agent of a template spawns children: from its own template, and from one outside its view."""
import json
import sys

import agentos

client = agentos.Client()
probe, *templates = sys.argv[1:]
out = {}
for template in templates:
    try:
        child = client.spawn(f"child-{template}", probe, template=template)
        out[template] = client.wait(id=child["id"], timeout=60)["status"]
    except agentos.SyscallError as exc:
        out[template] = {"code": exc.code.value, "field": exc.details.get("field")}
print(json.dumps(out), flush=True)
