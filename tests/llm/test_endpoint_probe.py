"""The endpoint check at kernel start: logged, in HELLO, and shown by ``agentos doctor``."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from agentos.cli.main import main as cli_main
from agentos.llm.config import LLMConfig
from agentos.llm.probe import EndpointStatus, probe, probe_config
from agentos.llm.provider import make_provider
from agentos.testing import FakeGemini, FakeOpenAI
from agentos.testing.kernel import KernelProcess, endpoint_check

from .conftest import config_for
from .test_deadlines import Silent, closed_port


def check(config: LLMConfig) -> EndpointStatus:
    return asyncio.run(probe_config(config))


class Refusing:
    """An endpoint that answers every request with ``status`` (401 or 403), as a server does
    to a key it does not accept."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _refuse(self, request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "Incorrect API key provided.",
                                            "type": "invalid_request_error"}}, status=self.status)

    async def __aenter__(self) -> Refusing:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._refuse)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def test_a_healthy_endpoint_is_ok() -> None:
    async def main() -> tuple[EndpointStatus, EndpointStatus]:
        async with FakeGemini() as gemini, FakeOpenAI() as openai:
            first = await probe_config(config_for(gemini.url))
            second = await probe_config(LLMConfig(provider="openai", model="m", base_url=openai.base_url,
                                                  api_version=""))
            return first, second

    for status in asyncio.run(main()):
        assert status.state == "ok" and status.reachable and status.error is None
        assert status.checked_at is not None


def test_a_closed_port_is_unreachable_naming_the_base_url() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    status = check(config_for(url))
    assert status.state == "unreachable" and status.reachable is False
    assert status.error is not None and status.error["reason"] == "connect_failed"
    assert url in status.summary()


def test_an_endpoint_that_never_answers_is_unreachable() -> None:
    async def main() -> EndpointStatus:
        async with Silent() as server:
            return await probe_config(config_for(server.url, connect_timeout=0.3))

    status = asyncio.run(main())
    assert status.state == "unreachable" and status.error is not None
    assert status.error["type"] == "timeout" and "connect_timeout" in status.error["message"]


@pytest.mark.parametrize("http_status", [401, 403])
def test_an_endpoint_refusing_the_key_is_a_key_problem(http_status: int) -> None:
    async def main() -> EndpointStatus:
        async with Refusing(http_status) as server:
            return await probe_config(LLMConfig(provider="openai", model="m", base_url=server.url,
                                                api_version="", api_key="wrong-key"))

    status = asyncio.run(main())
    assert status.state == "key_refused" and status.reachable is True
    assert status.error is not None and status.error["status"] == http_status
    assert "wrong-key" not in str(status.to_dict())


def test_gemini_refusing_the_key_is_a_key_problem() -> None:
    async def main() -> EndpointStatus:
        async with FakeGemini(api_key="the-right-key") as fake:
            return await probe_config(config_for(fake.url, api_key="a-wrong-key"))

    status = asyncio.run(main())
    assert status.state == "key_refused" and status.error is not None
    assert status.error["reason"] == "API_KEY_INVALID" and "a-wrong-key" not in status.summary()


def test_without_a_key_nothing_is_checked() -> None:
    async def main() -> tuple[EndpointStatus, int]:
        async with FakeGemini() as fake:
            async with aiohttp.ClientSession() as session:
                status = await probe(make_provider(config_for(fake.url, api_key=None), session))
            return status, len(fake.requests)

    status, requests = asyncio.run(main())
    assert status.state == "unchecked" and status.reachable is None and requests == 0
    assert status.error is not None and status.error["type"] == "not_configured"


# --- the kernel and agentos doctor ------------------------------------------------------------

def doctor(capsys: pytest.CaptureFixture[str], socket: Path) -> tuple[int, dict[str, str]]:
    """``agentos doctor``'s exit status and its lines, by check name."""
    code = cli_main(["doctor", "--socket", str(socket)])
    out = capsys.readouterr().out
    lines = {line.split(":", 1)[0].split(None, 1)[1]: line for line in out.splitlines()}
    return code, lines


@pytest.fixture
def unreachable_kernel(tmp_path: Path) -> Iterator[tuple[KernelProcess, str]]:
    url = f"http://127.0.0.1:{closed_port()}"
    kernel = KernelProcess(tmp_path / "k", env={
        "AGENTOS_GEMINI_BASE_URL": url, "GEMINI_API_KEY": "secret-test-key", "GOOGLE_API_KEY": ""})
    kernel.start()
    try:
        yield kernel, url
    finally:
        kernel.stop_checked()


def test_a_kernel_whose_endpoint_is_down_logs_it_and_doctor_reports_it(
        unreachable_kernel: tuple[KernelProcess, str], capsys: pytest.CaptureFixture[str]) -> None:
    kernel, url = unreachable_kernel
    with kernel.client() as client:
        status = endpoint_check(client)
        assert client.noop(b"still serving") == b"still serving"
    assert status["reachable"] is False and status["error"]["reason"] == "connect_failed"
    log = kernel.log()
    assert f"WARNING agentos.llm: LLM endpoint {url} is unreachable" in log
    assert "secret-test-key" not in log
    code, lines = doctor(capsys, kernel.socket_path)
    assert lines["LLM endpoint"].startswith("FAIL") and "checked by the kernel" in lines["LLM endpoint"]
    assert f"{url} is unreachable" in lines["LLM endpoint"] and code == 1


def doctor_alone(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                 url: str, key: str) -> tuple[int, str]:
    """``agentos doctor`` with no kernel, in an environment configuring ``url`` and ``key``."""
    for name, value in {"AGENTOS_GEMINI_BASE_URL": url, "GEMINI_API_KEY": key, "GOOGLE_API_KEY": "",
                        "AGENTOS_LLM_PROVIDER": "", "AGENTOS_LLM_CONFIG": ""}.items():
        monkeypatch.setenv(name, value)
    code, lines = doctor(capsys, tmp_path / "no-kernel.sock")
    return code, lines["LLM endpoint"]


@pytest.mark.parametrize(("key", "level", "says"), [
    ("fake-key", "ok", "answered"), ("a-wrong-key", "FAIL", "refused the API key")])
def test_doctor_without_a_kernel_checks_the_configured_endpoint(
        key: str, level: str, says: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with FakeGemini().running_in_thread() as fake:
        code, line = doctor_alone(capsys, monkeypatch, tmp_path, fake.url, key)
    assert line.split()[0] == level and says in line and "checked from here" in line
    assert key not in line
    if level == "FAIL":
        assert code == 1


def test_doctor_without_a_kernel_reports_an_unreachable_endpoint(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    code, line = doctor_alone(capsys, monkeypatch, tmp_path, url, "some-key")
    assert line.startswith("FAIL") and f"{url} is unreachable" in line and code == 1
