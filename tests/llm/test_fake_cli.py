"""``agentos fake-gemini`` serves the fake over HTTP, scriptable through /_fake/."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request


def _post(url: str, body: dict, headers: dict | None = None) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())


def test_cli_fake_is_scriptable_over_http() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "agentos", "fake-gemini", "--port", "0",
                             "--api-key", "k1"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.split("listening on ")[1].strip()
        assert url.startswith("http://127.0.0.1:")
        assert _post(f"{url}/_fake/script", {"replies": [{"text": "scripted!"}]}) == {"queued": 1}
        answer = _post(f"{url}/v1beta/models/gemini-test:generateContent",
                       {"contents": [{"parts": [{"text": "hi"}]}]}, {"x-goog-api-key": "k1"})
        assert answer["candidates"][0]["content"]["parts"] == [{"text": "scripted!"}]
        echoed = _post(f"{url}/v1/models/gemini-test:generateContent?key=k1",
                       {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
        assert echoed["candidates"][0]["content"]["parts"] == [{"text": "echo: hi"}]
        with urllib.request.urlopen(f"{url}/_fake/requests", timeout=30) as resp:
            recorded = json.loads(resp.read())["requests"]
        assert [r["path"] for r in recorded] == ["/v1beta/models/gemini-test:generateContent",
                                                 "/v1/models/gemini-test:generateContent"]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        if proc.stdout is not None:
            proc.stdout.close()
