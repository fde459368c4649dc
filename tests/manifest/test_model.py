"""The typed model: secure defaults, the SPAWN payload, start order and the kernel configuration."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from agentos.cgroups.limits import Limits as CgroupLimits
from agentos.kernel.config import ConnectionLimits
from agentos.llm.config import LLMConfig
from agentos.manifest import (
    AgentLLM,
    AgentSpec,
    KernelConnections,
    KernelLLM,
    KernelSection,
    Limits,
    Manifest,
    Readiness,
    Restart,
    Sandbox,
    schema,
)
from agentos.permissions import parse_capabilities
from agentos.permissions.capabilities import DEFAULT_CHILD_CAPABILITIES

MODELS = [(schema.SANDBOX, Sandbox), (schema.LIMITS, Limits), (schema.RESTART, Restart),
          (schema.AGENT_LLM, AgentLLM), (schema.READINESS, Readiness), (schema.KERNEL_LLM, KernelLLM),
          (schema.KERNEL_CONNECTIONS, KernelConnections), (schema.KERNEL, KernelSection)]


@pytest.mark.parametrize(("section", "model"), MODELS, ids=[s.path for s, _ in MODELS])
def test_each_model_mirrors_its_schema_section(section: schema.Section, model: type) -> None:
    assert [f.name for f in dataclasses.fields(model)] == list(section.keys)
    instance = model(kind="delay") if model is Readiness else model()
    for f in section.fields:
        if f.key != "kind" and f.section is None:
            assert getattr(instance, f.key) == f.default, f.key


def test_agent_spec_mirrors_the_agent_section() -> None:
    assert [f.name for f in dataclasses.fields(AgentSpec)] == ["name", *schema.AGENT.keys]


def test_defaults_are_the_secure_ones() -> None:
    spec = AgentSpec("a", script=Path("/srv/a.py"))
    assert spec.sandbox.enabled and not spec.sandbox.network and not spec.sandbox.writable
    assert spec.limits.memory == 512 * 2**20 and spec.limits.pids == 128 and spec.limits.cpu == 1.0
    assert spec.restart.policy == "never"
    assert parse_capabilities(spec.permissions) == DEFAULT_CHILD_CAPABILITIES


def test_spawn_request_of_a_sandboxed_agent() -> None:
    spec = AgentSpec("web", script=Path("/srv/web.py"), args=("--port", "80"), env={"MODE": "x"},
                     cwd=Path("/srv"), replicas=2,
                     sandbox=Sandbox(writable=(Path("/srv/data"),), readonly=(Path("/etc/ssl"),)),
                     limits=Limits(memory=2**30, cpu=None, llm_tokens=5000, llm_calls_per_minute=10),
                     restart=Restart(policy="on-failure", backoff=0.5),
                     llm=AgentLLM(model="m", temperature=0.2), permissions=("think", "http"))
    assert spec.instance_names() == ("web-1", "web-2")
    assert spec.to_spawn_request("web-2") == {
        "name": "web-2", "script": "/srv/web.py", "args": ["--port", "80"], "env": {"MODE": "x"}, "cwd": "/srv",
        "sandboxed": True, "network": False, "writable_paths": ["/srv/data"], "readonly_paths": ["/etc/ssl"],
        "allow_degraded": False,
        # cpu: unlimited travels as null (an absent limit would get the kernel's default).
        "limits": {"memory": 2**30, "pids": 128, "cpu": None},
        "capabilities": ["think", "http"],
        "restart": {"policy": "on-failure", "max_restarts": 5, "window": 60.0, "backoff": 0.5, "backoff_max": 60.0},
        "llm": {"model": "m", "temperature": 0.2, "tokens": 5000, "calls_per_minute": 10},
    }
    assert spec.to_spawn_request()["name"] == "web-1"
    with pytest.raises(ValueError, match="'web' is not a replica of agent 'web'"):
        spec.to_spawn_request("web")


def test_spawn_request_without_sandbox_has_the_network_and_no_binds() -> None:
    request = AgentSpec("tool", command=("/bin/echo", "hi"), sandbox=Sandbox(enabled=False)).to_spawn_request()
    assert request["command"] == ["/bin/echo", "hi"] and "script" not in request
    assert request["sandboxed"] is False and request["network"] is True
    assert not {"writable_paths", "readonly_paths", "hostname", "llm", "cwd"} & set(request)


def test_hostname_is_sent_only_when_set() -> None:
    spec = AgentSpec("a", script=Path("/a.py"), sandbox=Sandbox(hostname="box"))
    assert spec.to_spawn_request()["hostname"] == "box"
    assert "hostname" not in AgentSpec("a", script=Path("/a.py")).to_spawn_request()


def test_the_process_service_accepts_the_spawn_request(tmp_path: Path) -> None:
    from agentos.processes.request import HOST, SpawnRequest
    from agentos.protocol import Op
    from agentos.protocol.payload import encode_payload
    from agentos.protocol.requests import SpawnRequestWire, decode_request

    script = tmp_path / "a.py"
    script.write_text("")
    spec = AgentSpec("a", script=script, args=("x",), env={"K": "v"}, cwd=tmp_path,
                     sandbox=Sandbox(writable=(tmp_path,), hostname="box"), restart=Restart(policy="always"),
                     limits=Limits(llm_tokens=10), llm=AgentLLM(model="m", system="s", temperature=0.5))
    # The manifest's request passes the wire schema as it is: the two cannot drift apart.
    wire = decode_request(Op.SPAWN, encode_payload(spec.to_spawn_request()))
    assert isinstance(wire, SpawnRequestWire)
    parsed = SpawnRequest.parse(wire, HOST)
    assert (parsed.name, parsed.script, parsed.argv[-1], parsed.env) == ("a", str(script), "x", {"K": "v"})
    assert parsed.writable_paths == [str(tmp_path)] and parsed.sandboxed and not parsed.network
    assert parsed.hostname == "box"
    assert parsed.llm == {"model": "m", "system": "s", "temperature": 0.5, "tokens": 10}


def test_spawn_limits_are_what_the_cgroup_driver_parses() -> None:
    spec = AgentSpec("a", script=Path("/a.py"), limits=Limits(memory=3 * 2**20, cpu=0.25, pids=7, llm_tokens=9))
    parsed = CgroupLimits.from_request(spec.to_spawn_request()["limits"])
    assert (parsed.memory, parsed.cpu, parsed.pids) == (3 * 2**20, 0.25, 7)


def team(*specs: AgentSpec) -> Manifest:
    return Manifest(path=Path("/srv/team.yaml"), agents=specs)


def agent(name: str, *deps: str, replicas: int = 1) -> AgentSpec:
    return AgentSpec(name, script=Path(f"/srv/{name}.py"), depends_on=deps, replicas=replicas)


def test_start_order_puts_dependencies_first_and_keeps_declaration_order() -> None:
    manifest = team(agent("ui", "api"), agent("worker", "db", "queue"), agent("api", "db"), agent("db"),
                    agent("queue"))
    assert [s.name for s in manifest.start_order()] == ["db", "api", "ui", "queue", "worker"]


def test_start_order_refuses_cycles_and_unknown_names() -> None:
    with pytest.raises(ValueError, match="dependency cycle among a, b"):
        team(agent("a", "b"), agent("b", "a"), agent("c")).start_order()
    with pytest.raises(ValueError, match="agent 'a' depends on undeclared ghost"):
        team(agent("a", "ghost")).start_order()


def test_spawn_requests_cover_every_replica_in_start_order() -> None:
    manifest = team(agent("worker", "db", replicas=3), agent("db"))
    assert [r["name"] for r in manifest.spawn_requests()] == ["db", "worker-1", "worker-2", "worker-3"]


def test_kernel_config_carries_the_sections_the_subsystems_read() -> None:
    kernel = KernelSection(socket=Path("/run/t/k.sock"), state_dir=Path("/var/t"), log_level="DEBUG",
                           llm=KernelLLM(provider="openai", model="llama3", max_concurrency=3,
                                         prices={"llama3": {"input": 0.5, "output": 1.5}},
                                         embedding_model="nomic-embed-text"),
                           state={"max_value_bytes": 4096}, connections=KernelConnections(per_agent=8))
    spec = AgentSpec("w", script=Path("/w.py"), replicas=2,
                     limits=Limits(llm_tokens=100, llm_calls_per_minute=6, llm_usd=0.25))
    config = Manifest(path=Path("/t.yaml"), agents=(spec, agent("quiet")), kernel=kernel).kernel_config()
    assert (config.socket_path, config.state_dir, config.log_level) == (Path("/run/t/k.sock"), Path("/var/t"), "DEBUG")
    assert config.section("state") == {"max_value_bytes": 4096}
    assert config.connections == ConnectionLimits(per_uid=4096, per_agent=8)
    llm = LLMConfig.from_section(config.section("llm"), environ={})
    assert (llm.provider, llm.model, llm.max_inflight, llm.embedding_model) == (
        "openai", "llama3", 3, "nomic-embed-text")
    assert llm.prices.of("llama3") is not None
    # Budgets travel with each agent's SPAWN, never as kernel policies keyed by a bare name
    # that another project's agent may share (tests/cli/test_project_budgets.py).
    assert spec.to_spawn_request("w-1")["llm"] == {"tokens": 100, "calls_per_minute": 6, "usd": 0.25}
    assert llm.agents == {} and llm.policy_for("w-1") == llm.defaults


def test_kernel_config_defaults_come_from_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AGENTOS_SOCKET", str(tmp_path / "env.sock"))
    config = team(agent("a")).kernel_config()
    assert config.socket_path == tmp_path / "env.sock"
    assert config.section("llm") == {"provider": "gemini"}
