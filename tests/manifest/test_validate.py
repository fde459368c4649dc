"""Each class of manifest error, with the exact line and column it is reported at."""
from __future__ import annotations

from pathlib import Path

from agentos.kernel.config import ConnectionLimits
from agentos.manifest.schema import DEFAULT_CAPABILITIES

# --- the document ------------------------------------------------------------------------


def test_empty_manifest(errors) -> None:
    assert errors("# nothing yet\n") == [
        (1, 1, "the manifest is empty", "declare at least one agent: 'agents: {hello: {script: hello.py}}'")]


def test_top_level_must_be_a_mapping(errors) -> None:
    assert errors("- hello\n") == [
        (1, 1, "the manifest: expected a mapping, got a list", "start the file with 'agents:'")]


def test_missing_agents(errors) -> None:
    assert errors("kernel: {log_level: INFO}\n") == [
        (1, 1, "the manifest: missing required key 'agents'",
         "add 'agents:' (the agents, by name, in the order they are declared.)")]


def test_empty_agents(errors) -> None:
    assert errors("agents: {}\n") == [
        (1, 9, "agents: expected a mapping of agent names to agents, got an empty mapping",
         "declare agents by name: 'agents: {hello: {script: hello.py}}'")]


def test_version_is_checked(errors) -> None:
    assert errors("version: 2\nagents: {a: {script: agent.py}}\n") == [
        (1, 10, "version: must be exactly 1, got 2", "set version to a value exactly 1")]


def test_extension_keys_are_ignored_and_anchors_work(valid) -> None:
    manifest = valid("""\
        x-limits: &small {memory: 64Mi, pids: 16}
        agents:
          a: {script: agent.py, limits: *small}
          b: {script: agent.py, limits: {<<: *small, pids: 32}}
        """)
    assert [(s.limits.memory, s.limits.pids) for s in manifest.agents] == [(64 * 2**20, 16), (64 * 2**20, 32)]


# --- unknown keys ------------------------------------------------------------------------


def test_unknown_key_suggests_the_closest(errors) -> None:
    assert errors("""\
        agents:
          a:
            scirpt: agent.py
        """) == [
        (2, 3, "agents.a: neither script nor command is set",
         "add 'script: path/to/agent.py' or 'command: [program, arg]'"),
        (3, 5, "agents.a: unknown key 'scirpt'", "did you mean 'script'?"),
    ]


def test_key_of_a_subsection_says_where_it_belongs(errors) -> None:
    assert errors("""\
        agents:
          a:
            script: agent.py
            memory: 1Gi
            netwrok: true
        """) == [
        (4, 5, "agents.a: unknown key 'memory'", "move it under 'limits:'"),
        (5, 5, "agents.a: unknown key 'netwrok'", "did you mean 'sandbox.network'?"),
    ]


def test_unknown_key_without_a_close_match_lists_the_known_ones(errors) -> None:
    assert errors("agents: {a: {script: agent.py}}\nplugins: {}\n") == [
        (2, 1, "unknown key 'plugins'", "remove it; known keys: version, name, kernel, agents, mcp_servers")]


def test_refused_keys_explain_themselves(errors) -> None:
    assert errors("""\
        kernel:
          llm: {api_key: sk-123}
        agents:
          a: {name: a, script: agent.py}
        """) == [
        (2, 9, "kernel.llm: 'api_key' is not allowed here",
         "export GEMINI_API_KEY or OPENAI_API_KEY in the kernel's environment instead"),
        (4, 7, "agents.a: 'name' is not allowed here",
         "the agent's name is its key under agents:, e.g. 'agents: {worker: {script: ...}}'"),
    ]


# --- wrong types -------------------------------------------------------------------------


def test_wrong_types(errors) -> None:
    assert errors("""\
        agents:
          a:
            script: agent.py
            replicas: "2"
            args: --verbose
            sandbox:
              network: "true"
              hostname: yes
            llm: [gemini]
            env:
              EMPTY:
        """) == [
        (4, 15, "agents.a.replicas: expected an integer, got a string ('2')", "write an integer, e.g. replicas: 1"),
        (5, 11, "agents.a.args: expected a list, got a string ('--verbose')",
         "write a list, e.g. args: [--verbose]"),
        (7, 16, "agents.a.sandbox.network: expected true or false, got a string ('true')",
         "write true without quotes"),
        (8, 17, "agents.a.sandbox.hostname: expected a string, got a boolean (true)",
         "quote it: 'true'; YAML reads bare yes/no/on/off/true/false as booleans"),
        (9, 10, "agents.a.llm: expected a mapping, got a list", "write 'key: value' lines indented under llm:"),
        (11, 13, "agents.a.env.EMPTY: expected a string, got nothing", "write a string, e.g. EMPTY: 'text'"),
    ]


def test_numbers_in_args_and_env_are_taken_as_written(valid) -> None:
    spec = valid("agents: {a: {script: agent.py, args: [--port, 8080, 0.5], env: {PORT: 8080}}}\n").agents[0]
    assert spec.args == ("--port", "8080", "0.5")
    assert spec.env == {"PORT": "8080"}


def test_choice_suggests_the_closest(errors) -> None:
    assert errors("""\
        agents:
          a:
            script: agent.py
            restart: {policy: on_failure}
            permissions: [think, mesage]
        """) == [
        (4, 23, "agents.a.restart.policy: 'on_failure' is not one of never, on-failure, always",
         "did you mean 'on-failure'?"),
        (5, 26, ("agents.a.permissions[1]: 'mesage' is not one of think, spawn, kill, message, state_own, "
         "state_shared, http, observe, admin, state"), "did you mean 'message'?"),
    ]


def test_repeated_list_entries(errors) -> None:
    assert errors("agents: {a: {script: agent.py, permissions: [think, think]}}\n") == [
        (1, 53, "agents.a.permissions: think is listed twice", "remove the repeated entry")]


# --- units and ranges --------------------------------------------------------------------


def test_bad_units(errors) -> None:
    assert errors("""\
        agents:
          a:
            script: agent.py
            limits: {memory: 12XB, cpu: 0, pids: 0}
            restart: {policy: always, window: 5 parsecs}
            readiness: {kind: delay, delay: [1]}
        """) == [
        (4, 22, "agents.a.limits.memory: '12XB' is not a size (examples: 512Mi, 1Gi, 1048576)",
         "write e.g. memory: 512Mi or 'unlimited'"),
        (4, 33, "agents.a.limits.cpu: must be positive, got 0", "write e.g. cpu: 0.5 or 'unlimited'"),
        (4, 42, "agents.a.limits.pids: must be at least 1, got 0", "set pids to a value at least 1"),
        (5, 39, "agents.a.restart.window: '5 parsecs' is not a duration (examples: 30s, 250ms, 5m)",
         "write e.g. window: 30s"),
        (6, 37, "agents.a.readiness.delay: expected a duration, got a list", "write e.g. delay: 30s"),
    ]


def test_units_and_unlimited(valid) -> None:
    spec = valid("""\
        agents:
          a:
            script: agent.py
            limits: {memory: 1Gi, cpu: 500m, pids: unlimited, llm_tokens: 100000}
            restart: {policy: on-failure, window: 5m, backoff: 250ms}
        """).agents[0]
    assert (spec.limits.memory, spec.limits.cpu, spec.limits.pids, spec.limits.llm_tokens) == (2**30, 0.5, None, 100000)
    assert (spec.restart.window, spec.restart.backoff) == (300.0, 0.25)


def test_ranges(errors) -> None:
    assert errors("""\
        agents:
          a:
            script: agent.py
            replicas: 0
            llm: {temperature: 2.5}
        """) == [
        (4, 15, "agents.a.replicas: must be between 1 and 1000, got 0", "set replicas to a value between 1 and 1000"),
        (5, 24, "agents.a.llm.temperature: must be between 0 and 2, got 2.5",
         "set temperature to a value between 0 and 2"),
    ]


# --- files and paths ---------------------------------------------------------------------


def test_missing_script_and_wrong_kinds_of_path(errors, project: Path) -> None:
    assert errors("""\
        agents:
          a: {script: missing.py}
          b: {script: data}
          c: {script: agent.py, cwd: agent.py}
          d: {script: agent.py, sandbox: {writable: [nowhere]}}
        """) == [
        (2, 15, f"agents.a.script: missing.py ({project}/missing.py) does not exist",
         "create it, or fix the path; relative paths start at the manifest's directory"),
        (3, 15, f"agents.b.script: data ({project}/data) is not a file", "give the path of a file"),
        (4, 30, f"agents.c.cwd: agent.py ({project}/agent.py) is not a directory", "give the path of a directory"),
        (5, 46, f"agents.d.sandbox.writable[0]: nowhere ({project}/nowhere) does not exist",
         "create it, or fix the path; relative paths start at the manifest's directory"),
    ]


def test_relative_paths_resolve_against_the_manifest_directory(project: Path, monkeypatch) -> None:
    from agentos.manifest import load

    (project / "team").mkdir()
    (project / "team" / "m.yaml").write_text(
        "kernel: {socket: run/k.sock, state_dir: ../state}\n"
        "agents:\n  a: {script: ../agent.py, cwd: ../data, sandbox: {writable: [../data], readonly: [.]}}\n")
    monkeypatch.chdir("/")
    manifest = load(project / "team" / "m.yaml")
    spec = manifest.agents[0]
    assert spec.script == project / "agent.py"
    assert spec.cwd == project / "data"
    assert spec.sandbox.writable == (project / "data",)
    assert spec.sandbox.readonly == (project / "team",)
    assert manifest.kernel.socket == project / "team" / "run" / "k.sock"
    assert manifest.kernel.state_dir == project / "state"


def test_commands(errors, valid, project: Path) -> None:
    manifest = valid("""\
        agents:
          a: {command: "sh -c 'echo hi there'"}
          b: {command: [bin/tool, --flag]}
        """)
    assert manifest.agents[0].command == ("sh", "-c", "echo hi there")
    assert manifest.agents[1].command == (str(project / "bin" / "tool"), "--flag")
    (project / "bin" / "plain").write_text("not executable\n")
    assert errors("""\
        agents:
          a: {command: no-such-program-anywhere}
          b: {command: [bin/plain]}
          c: {command: "echo 'unclosed"}
          d: {command: []}
        """) == [
        (2, 16, "agents.a.command: 'no-such-program-anywhere' is not found on PATH",
         "install it, or give its path (e.g. ./bin/agent)"),
        (3, 16, "agents.b.command: bin/plain is not executable", f"chmod +x {project}/bin/plain"),
        (4, 16, "agents.c.command: cannot split \"echo 'unclosed\": No closing quotation",
         "close the quote, or write the command as a list"),
        (5, 16, "agents.d.command: the command is empty", "name the program to run"),
    ]


# --- environment -------------------------------------------------------------------------


def test_env_names(errors) -> None:
    assert errors("""\
        agents:
          a:
            script: agent.py
            env:
              AGENTOS_FD: "3"
              1ST: x
              OK: fine
        """) == [
        (5, 7, "agents.a.env: AGENTOS_FD is set by the kernel", "rename it; names starting AGENTOS_ are reserved"),
        (6, 7, "agents.a.env: '1ST' is not a valid variable name",
         "use letters, digits and '_', at most 256, not starting with a digit"),
    ]


# --- conflicting options -----------------------------------------------------------------


def test_script_and_command_both_set_points_at_the_later(errors) -> None:
    assert errors("""\
        agents:
          a:
            command: [sh]
            script: agent.py
        """) == [(4, 5, "agents.a: both script and command are set",
                  "keep one: script runs a Python file, command runs any program")]


def test_sandbox_options_need_the_sandbox(errors) -> None:
    assert errors("""\
        agents:
          a:
            script: agent.py
            sandbox:
              enabled: false
              network: false
              writable: [data]
              readonly: [.]
              hostname: box
        """) == [
        (6, 7, "agents.a.sandbox.network: without the sandbox nothing cuts the network off",
         "remove network: false, or set enabled: true"),
        (7, 7, "agents.a.sandbox.writable: needs the sandbox, but enabled is false",
         "remove writable, or set enabled: true"),
        (8, 7, "agents.a.sandbox.readonly: needs the sandbox, but enabled is false",
         "remove readonly, or set enabled: true"),
        (9, 7, "agents.a.sandbox.hostname: needs the sandbox, but enabled is false",
         "remove hostname, or set enabled: true"),
    ]


def test_network_without_sandbox_is_fine_and_is_reported_as_on(valid) -> None:
    manifest = valid("""\
        agents:
          a: {script: agent.py, sandbox: {enabled: false, network: true}}
          b: {script: agent.py, sandbox: {enabled: false}}
        """)
    assert [spec.to_spawn_request()["network"] for spec in manifest.agents] == [True, True]


def test_allow_degraded_without_sandbox_still_covers_limits(valid) -> None:
    spec = valid("agents: {a: {script: agent.py, sandbox: {enabled: false, allow_degraded: true}}}\n").agents[0]
    assert spec.to_spawn_request()["allow_degraded"] is True


def test_path_both_writable_and_readonly(errors, project: Path) -> None:
    assert errors("agents: {a: {script: agent.py, sandbox: {writable: [data], readonly: [./data]}}}\n") == [
        (1, 71, f"agents.a.sandbox: {project}/data is both writable and readonly", "list it in only one of them")]


def test_restart_options_need_a_policy(errors) -> None:
    assert errors("""\
        agents:
          a:
            script: agent.py
            restart: {max_restarts: 3, backoff: 2s}
          b:
            script: agent.py
            restart: {policy: always, backoff: 10s, backoff_max: 5s, window: 0}
        """) == [
        (4, 15, "agents.a.restart.max_restarts: has no effect with policy never",
         "set policy: on-failure or always, or remove max_restarts"),
        (4, 32, "agents.a.restart.backoff: has no effect with policy never",
         "set policy: on-failure or always, or remove backoff"),
        (7, 45, "agents.b.restart.backoff_max: backoff_max (5s) is shorter than backoff (10s)",
         "make backoff_max at least backoff"),
        (7, 62, "agents.b.restart.window: must be longer than 0", "use e.g. window: 60s"),
    ]


def test_readiness_options_follow_the_kind(errors) -> None:
    assert errors("""\
        agents:
          a:
            script: agent.py
            readiness: {kind: log-line}
          b:
            script: agent.py
            readiness: {kind: ready-call, pattern: up, delay: 1s}
          c:
            script: agent.py
            readiness: {kind: delay, delay: 1m, timeout: 10s}
          d:
            script: agent.py
            readiness: {kind: log-line, pattern: "listening on (port"}
          e:
            script: agent.py
            readiness: {timeout: 10s}
        """) == [
        (4, 17, "agents.a.readiness: kind log-line needs 'pattern'", "add 'pattern:' with a regular expression"),
        (7, 35, "agents.b.readiness.pattern: is used only by kind log-line, not ready-call",
         "remove pattern, or set kind: log-line"),
        (7, 48, "agents.b.readiness.delay: is used only by kind delay, not ready-call",
         "remove delay, or set kind: delay"),
        (10, 30, "agents.c.readiness.delay: 60s is longer than timeout (10s)", "shorten delay or lengthen timeout"),
        (13, 42, ("agents.d.readiness.pattern: invalid regular expression: missing ), unterminated subpattern "
         "at position 13"), "fix the expression, in Python re syntax; escape literal ( [ . with \\"),
        (16, 5, "agents.e.readiness: missing required key 'kind'",
         ("add 'kind:' (`ready-call`: the agent calls `client.ready()`; `log-line`: a line of its output matches "
         "`pattern`; `delay`: `delay` after it started.)")),
    ]


# --- agents against each other -----------------------------------------------------------


def test_dependency_cycle_points_at_the_entry_that_closes_it(errors) -> None:
    assert errors("""\
        agents:
          a: {script: agent.py, depends_on: [c]}
          b: {script: agent.py, depends_on: [a]}
          c: {script: agent.py, depends_on: [b]}
        """) == [(3, 38, "agents: dependency cycle: a -> c -> b -> a", "remove one of these depends_on entries")]


def test_dependency_on_itself_unknown_or_twice(errors) -> None:
    assert errors("""\
        agents:
          parser: {script: agent.py}
          worker: {script: agent.py, depends_on: [worker, parsre, parser, parser]}
        """) == [
        (3, 43, "agents.worker.depends_on: 'worker' depends on itself", "remove it from depends_on"),
        (3, 51, "agents.worker.depends_on: no agent named 'parsre'", "did you mean 'parser'?"),
        (3, 67, "agents.worker.depends_on: parser is listed twice", "remove the repeated entry"),
    ]


def test_agent_names(errors) -> None:
    assert errors("""\
        agents:
          -bad: {script: agent.py}
          web: {script: agent.py, replicas: 2}
          web-2: {script: agent.py}
        """) == [
        (2, 3, "agents: '-bad' is not a valid agent name",
         "use letters, digits, '-', '_' and '.', at most 60, starting with a letter or digit"),
        (4, 3, "agents: agent 'web-2' would run as 'web-2', which agent 'web' already uses", "rename one of them"),
    ]


# --- the kernel section ------------------------------------------------------------------


def test_kernel_section(errors, valid) -> None:
    manifest = valid("""\
        kernel:
          log_level: DEBUG
          llm: {provider: openai, model: llama3, base_url: "http://127.0.0.1:8080/v1", max_concurrency: 4}
          state: {max_value_bytes: 65536}
        agents: {a: {script: agent.py}}
        """)
    assert manifest.kernel.log_level == "DEBUG"
    assert manifest.kernel.llm.model == "llama3"
    assert manifest.kernel.state == {"max_value_bytes": 65536}
    assert errors("""\
        kernel:
          llm: {provider: gemnii}
          sandboxx: {}
          audit: [on]
        agents: {a: {script: agent.py}}
        """) == [
        (2, 19, "kernel.llm.provider: 'gemnii' is not one of gemini, openai", "did you mean 'gemini'?"),
        (3, 3, "kernel: unknown key 'sandboxx'", "did you mean 'sandbox'?"),
        (4, 10, "kernel.audit: expected a mapping, got a list", "write 'key: value' lines indented under audit:"),
    ]


def test_kernel_connection_caps(errors, valid) -> None:
    manifest = valid("""\
        kernel:
          connections: {per_uid: 100}
        agents: {a: {script: agent.py}}
        """)
    assert manifest.kernel_config().connections == ConnectionLimits(per_uid=100, per_agent=64)
    assert errors("""\
        kernel:
          connections:
            per_uid: 0
            per_agent: "9"
            total: 5
        agents: {a: {script: agent.py}}
        """) == [
        (3, 14, "kernel.connections.per_uid: must be at least 1, got 0", "set per_uid to a value at least 1"),
        (4, 16, "kernel.connections.per_agent: expected an integer, got a string ('9')",
         "write an integer, e.g. per_agent: 64"),
        (5, 5, "kernel.connections: unknown key 'total'", "remove it; known keys: per_uid, per_agent"),
    ]


def test_permissions_default_and_alias(valid) -> None:
    manifest = valid("agents: {a: {script: agent.py}, b: {script: agent.py, permissions: [state, http]}}\n")
    assert manifest.agents[0].permissions == DEFAULT_CAPABILITIES
    assert manifest.agents[1].permissions == ("state", "http")


def test_every_problem_is_reported_in_file_order(errors) -> None:
    found = errors("""\
        agents:
          b: {script: agent.py, depends_on: [a], limits: {memory: lots}}
          a: {script: nope.py, depends_on: [b]}
        """)
    assert [(line, column) for line, column, _, _ in found] == [(2, 59), (3, 15), (3, 37)]


def test_volumes_short_and_long(valid, errors) -> None:
    """The short form takes the CLI's -v options (one grammar, volume_notation), the long one
    the same fields; each problem names its entry, on its line."""
    spec = valid("""\
        agents:
          a:
            script: agent.py
            sandbox: {}
            volumes:
              - data:/data:ro,size=2Gi
              - logs:/logs
              - notes:/notes:size=16Mi,rw
              - {name: cache, path: /cache, size: 16Mi, read_only: true}
        """).agents[0]
    assert [(v.name, v.path, v.size, v.read_only) for v in spec.volumes] == [
        ("data", "/data", 2 * 2**30, True), ("logs", "/logs", None, False),
        ("notes", "/notes", 16 * 2**20, False), ("cache", "/cache", 16 * 2**20, True)]
    fix = "write NAME:/path[:ro,size=1Gi] or {name: NAME, path: /path, size: 1Gi, read_only: true}"
    assert errors("""\
        agents:
          a:
            script: agent.py
            sandbox: {}
            volumes:
              - data:/data:ro,ro
              - logs
              - x:/x:size=1k
              - y:/y:size=12XB
              - ../e:/e
              - z:/z:exec
              - {name: w, path: /w, size: 1k}
        """) == [
        (6, 9, "agents.a.volumes[0]: 'data:/data:ro,ro': 'ro' is not an option (ro, rw, size=SIZE, each once)", fix),
        (7, 9, "agents.a.volumes[1]: 'logs' is not NAME:/PATH[:OPTIONS] (OPTIONS: ro or rw, size=SIZE, "
               "comma-separated)", fix),
        (8, 9, "agents.a.volumes[2]: size: 1000 bytes is less than 1Mi",
         "give at least 1Mi: the volume's file system needs room for itself"),
        (9, 9, "agents.a.volumes[3]: size: '12XB' is not a size (examples: 512Mi, 1Gi, 1048576)", fix),
        (10, 9, "agents.a.volumes[4]: '../e' is not a valid volume name",
         "use letters, digits, '_', '.' and '-', at most 63, starting with a letter or digit"),
        (11, 9, "agents.a.volumes[5]: 'z:/z:exec': 'exec' is not an option (ro, rw, size=SIZE, each once)", fix),
        (12, 35, "agents.a.volumes[6].size: 1000 bytes is less than 1Mi",
         "give at least 1Mi: the volume's file system needs room for itself"),
    ]
