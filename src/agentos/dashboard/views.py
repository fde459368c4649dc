"""The pages, rendered on the server from syscall answers: plain HTML strings, every value from
the kernel escaped. Each view has a full page and a partial (its ``<main>`` content) that the
page's script fetches again every second."""
from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from ..cli.output import duration
from ..protocol.lifecycle import Status
from .auth import CSRF_FIELD
from .history import History
from .svg import bar, sparkline

#: Navigation: path, title.
VIEWS = [("agents", "Agents"), ("logs", "Logs"), ("think", "THINK"), ("approvals", "Approvals"),
         ("mail", "Mail"), ("audit", "Audit")]
#: What a button does to an agent of a status, in the order shown.
ACTIONS = {Status.RUNNING: ("pause", "kill"), Status.PAUSED: ("resume", "kill")}
#: An ended agent can be started again (START) from the request the kernel remembers.
ENDED_ACTIONS = ("restart",)
#: What the page says while the kernel is gone.
DOWN = "kernel down, reconnecting"


def e(value: Any) -> str:
    return escape(str(value), quote=True)


def page(view: str, body: str, *, csrf: str, refresh: bool) -> str:
    nav = "".join(f'<a href="/{path}"{" class=current" if path == view else ""}>{title}</a>'
                  for path, title in VIEWS)
    partial = f' data-refresh="/partial/{view}"' if refresh else ""
    title = dict(VIEWS)[view]
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>agentos · {title}</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f'<meta name="csrf" content="{e(csrf)}">'
            f'<link rel="stylesheet" href="/static/dashboard.css"><script src="/static/dashboard.js" defer></script>'
            f'</head><body><header><strong>agentos</strong><nav>{nav}</nav></header>'
            f'<div id="kernel-state" role="alert" hidden>{DOWN}…</div>'
            f'<div id="flash" role="status" aria-live="polite"></div>'
            f'<main id="view" data-view="{view}"{partial}>{body}</main></body></html>')


def kernel_down(since: float | None, now: float | None = None) -> str:
    """A view's content while the kernel is gone (the banner above says it too)."""
    now = time.time() if now is None else now
    ago = f" (gone {duration(max(0.0, now - since))} ago)" if since is not None else ""
    return f'<p class="problem kernel-down">{DOWN}{e(ago)}: what shows here comes back with it.</p>'


def unauthorized() -> str:
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8"><title>agentos · token needed</title></head>'
            '<body><h1>401: this page needs its token</h1><p>Open the URL <code>agentos dashboard</code> '
            'printed when it started (it carries <code>?token=</code>).</p></body></html>')


# --- agents -----------------------------------------------------------------------------------

def agents_view(hello: Mapping[str, Any], agents: Sequence[Mapping[str, Any]], history: History,
                csrf: str, now: float | None = None) -> str:
    now = time.time() if now is None else now
    you = hello.get("you", {})
    cgroups = hello.get("capabilities", {}).get("processes", {}).get("cgroups", {})
    head = (f'<p class="kernel">kernel {e(hello.get("version"))} · pid {e(hello.get("pid"))} · up '
            f'{e(duration(hello.get("uptime", 0)))} · you: uid {e(you.get("uid"))}'
            f'{" (admin)" if you.get("admin") else ""} · cgroups {e(cgroups.get("driver", "none"))} enforcing '
            f'{e(", ".join(cgroups.get("enforceable", [])) or "nothing")}</p>')
    if history.problem:
        head += f'<p class="problem">last sample: {e(history.problem)}</p>'
    if not agents:
        return head + '<p class="empty">No agents you may see.</p>'
    by_project: dict[str, list[Mapping[str, Any]]] = {}
    for agent in agents:
        by_project.setdefault(agent.get("project") or "", []).append(agent)
    sections = []
    for project in sorted(by_project):
        rows = "".join(_agent_row(agent, depth, history, csrf, now)
                       for agent, depth in spawn_tree(by_project[project]))
        live = sum(1 for a in by_project[project] if a["status"] in Status.LIVE)
        name = e(project) if project else "(no project)"
        logs = f' <a href="/logs?project={e(project)}">logs</a>' if project else ""
        sections.append(
            f'<section class="project" data-project="{e(project)}"><h2>{name} '
            f'<small>{live} running of {len(by_project[project])}</small>{logs}</h2>'
            '<table><thead><tr><th>agent</th><th>status</th><th>uptime</th><th>restarts</th>'
            '<th>memory</th><th>CPU</th><th>isolation</th><th></th></tr></thead>'
            f'<tbody>{rows}</tbody></table></section>')
    return head + "".join(sections)


def spawn_tree(agents: Sequence[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], int]]:
    """``agents`` depth first under their spawners (a spawner not in the list makes a root),
    each with its depth; siblings by start time."""
    ids = {agent["id"] for agent in agents}
    children: dict[str | None, list[Mapping[str, Any]]] = {}
    for agent in sorted(agents, key=lambda a: a.get("started_at") or 0):
        parent = agent.get("parent")
        children.setdefault(parent if parent in ids else None, []).append(agent)
    out: list[tuple[Mapping[str, Any], int]] = []

    def walk(parent: str | None, depth: int) -> None:
        for agent in children.get(parent, []):
            out.append((agent, depth))
            walk(agent["id"], depth + 1)
    walk(None, 0)
    return out


def _agent_row(agent: Mapping[str, Any], depth: int, history: History, csrf: str, now: float) -> str:
    status = agent["status"]
    usage = agent.get("usage") or {}
    limits = agent.get("limits") or {}
    started, ended = agent.get("started_at") or now, agent.get("ended_at")
    uptime = duration((ended or now) - started) if started else "-"
    memory = history.memory.get(agent["id"])
    cpu = history.cpu.get(agent["id"])
    live = status in Status.LIVE
    # An ended agent's cgroup is gone: its peak says more than the last reading.
    mem_now = usage.get("memory_current") if live else usage.get("memory_peak")
    mem_text = _bytes(mem_now) if live else f"peak {_bytes(mem_now)}"
    mem_label = f"memory {mem_text} of {_bytes(limits.get('memory'))}"
    cpu_rates = [rate / 1e4 for rate in cpu.rates()] if cpu else []  # µs per s -> % of a core
    cpu_label = f"CPU {cpu_rates[-1]:.0f}%" if cpu_rates else "CPU -"
    detail = e(status)
    if agent.get("reason"):
        detail += f" ({e(agent['reason'])})"
    if agent.get("exit_code") is not None and not live:
        detail += f" <small>code {e(agent['exit_code'])}</small>"
    if agent.get("signal"):
        detail += f" <small>signal {e(agent['signal'])}</small>"
    if usage.get("oom_kills"):
        detail += f" <small>{e(usage['oom_kills'])} OOM kill(s)</small>"
    return (f'<tr class="agent" data-agent-id="{e(agent["id"])}" data-agent-name="{e(agent["name"])}" '
            f'data-status="{e(status)}">'
            f'<td class="name" style="padding-left:{0.5 + depth * 1.25}em">{"↳ " if depth else ""}'
            f'<a href="/logs?id={e(agent["id"])}">{e(agent["name"])}</a> <small>{e(agent["id"])}</small></td>'
            f'<td><span class="status s-{e(status)}">{detail}</span></td>'
            f'<td>{e(uptime)}</td><td>{e(agent.get("restarts", 0))}</td>'
            f'<td class="chart">'
            f'{sparkline(memory.values() if memory else [], label=mem_label, ceiling=limits.get("memory"))}'
            f' <small>{e(mem_text)}</small></td>'
            f'<td class="chart">{sparkline(cpu_rates, label=cpu_label, ceiling=100.0 * (limits.get("cpu") or 1))}'
            f' <small>{e(cpu_label.removeprefix("CPU "))}</small></td>'
            f'<td>{isolation_summary(agent)}</td>'
            f'<td class="actions">{_actions(agent, csrf)}</td></tr>')


def isolation_summary(agent: Mapping[str, Any]) -> str:
    """One line of what holds the agent, with the full report (when the kernel gave one) behind it."""
    spec = agent.get("spec") or {}
    report = agent.get("isolation")
    parts = ["sandboxed" if agent.get("sandboxed") else "NOT sandboxed"]
    if "network" in spec:
        parts.append("network" if spec["network"] else "no network")
    limits = agent.get("limits") or {}
    parts.append(", ".join(f"{k} {_bytes(v) if k == 'memory' else v}" for k, v in limits.items() if v is not None))
    if report and report.get("degraded"):
        parts.append("DEGRADED: " + ", ".join(map(str, report["degraded"])))
    shown = {"limits": limits, "spec": spec, **({"isolation": report} if report else {})}
    return (f'<details data-key="iso-{e(agent["id"])}"><summary>{e(" · ".join(p for p in parts if p))}</summary>'
            f'<pre>{e(json.dumps(shown, indent=1, sort_keys=True))}</pre></details>')


def _actions(agent: Mapping[str, Any], csrf: str) -> str:
    verbs = ACTIONS.get(agent["status"], ENDED_ACTIONS)
    return "".join(
        f'<form method="post" action="/action/{verb}" class="action"><input type="hidden" name="id" '
        f'value="{e(agent["id"])}"><input type="hidden" name="{CSRF_FIELD}" value="{e(csrf)}">'
        f'<button type="submit" name="verb" value="{verb}">{verb}</button></form>' for verb in verbs)


def _bytes(value: Any) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return "-"


# --- logs -------------------------------------------------------------------------------------

def logs_view(agents: Sequence[Mapping[str, Any]], selected_id: str | None, project: str | None) -> str:
    options = ['<option value="">choose an agent or project</option>']
    for name in sorted({str(a["project"]) for a in agents if a.get("project")}):
        chosen = " selected" if project == name else ""
        options.append(f'<option value="project={e(name)}"{chosen}>project {e(name)} (every agent)</option>')
    for agent in sorted(agents, key=lambda a: (a.get("project") or "", a["name"], a.get("started_at") or 0)):
        prefix = f"{agent['project']}/" if agent.get("project") else ""
        label = f"{prefix}{agent['name']} · {agent['id']} · {agent['status']}"
        chosen = " selected" if selected_id == agent["id"] else ""
        options.append(f'<option value="id={e(agent["id"])}"{chosen}>{e(label)}</option>')
    source = f"id={selected_id}" if selected_id else f"project={project}" if project else ""
    return (f'<form id="log-source" class="toolbar"><select name="source">{"".join(options)}</select>'
            f'<input type="search" id="log-search" placeholder="search (case-insensitive)" aria-label="search logs">'
            f'<span id="log-state"></span></form>'
            f'<pre id="log" data-source="{e(source)}"></pre>')


# --- THINK ------------------------------------------------------------------------------------

def think_view(usage: Mapping[str, Any], history: History) -> str:
    head = (f'<p class="kernel">provider {e(usage.get("provider"))} · default model {e(usage.get("model"))} · '
            f'<span id="in-flight">{e(usage.get("in_flight", 0))}</span> call(s) in flight of '
            f'{e(usage.get("limit"))} · {e(usage.get("queued", 0))} queued</p>')
    if usage.get("unpriced_models"):
        head += (f'<p class="problem">no price known for: {e(", ".join(usage["unpriced_models"]))} '
                 '(their cost shows 0)</p>')
    accounts = usage.get("agents") or {}
    if not accounts:
        return head + '<p class="empty">No LLM calls you may see yet.</p>'
    rows = []
    for key in sorted(accounts):
        account = accounts[key]
        budget = account.get("budget") or {}
        tokens, usd = account["tokens"]["total"], account["cost_usd"]
        token_series, usd_series = history.tokens.get(key), history.usd.get(key)
        models = ", ".join(f'{e(model)}: {e(m.get("calls", 0))} call(s), {e(m["tokens"]["total"])} tokens'
                           for model, m in sorted((account.get("models") or {}).items()))
        rows.append(
            f'<tr data-account="{e(key)}"><td>{e(key)}<br><small>{e(account.get("team") or "")}</small></td>'
            f'<td>{e(account.get("in_flight", 0))}</td><td>{e(account.get("queued", 0))}</td>'
            f'<td>{e(account.get("calls", 0))} <small>{e(account.get("errors", 0))} failed</small></td>'
            f'<td class="chart">{sparkline(token_series.values() if token_series else [], label=f"{tokens} tokens")} '
            f'<span class="tokens">{e(tokens)}</span></td>'
            f'<td class="chart">{sparkline(usd_series.values() if usd_series else [], label=f"${usd:.4f}")}'
            f' ${usd:.4f}</td>'
            f'<td>{_budget(budget, "tokens", "tokens")}{_budget(budget, "usd", "USD")}</td>'
            f'<td><small>{models}</small></td></tr>')
    return (head + '<table><thead><tr><th>account</th><th>in flight</th><th>queued</th><th>calls</th>'
            '<th>tokens</th><th>cost</th><th>budget</th><th>by model</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _budget(budget: Mapping[str, Any], key: str, unit: str) -> str:
    """A bar of what the account's budget has used: spent and reserved (in flight) alike, which is
    what the kernel checks a new call against (the account may be a team's, shared)."""
    limit = budget.get(key)
    if limit is None:
        return f'<div class="budget">{e(unit)}: no budget</div>'
    used = limit - (budget.get(f"{key}_left") or 0)
    return (f'<div class="budget">{bar(used, limit, label=f"{used} of {limit} {unit}")} '
            f'<small>{e(round(used, 4))} / {e(limit)} {e(unit)}</small></div>')


# --- approvals --------------------------------------------------------------------------------

def approvals_view(pending: Sequence[Mapping[str, Any]], csrf: str, now: float | None = None) -> str:
    """The MCP tool calls waiting for a human that the kernel shows this user (its agents', or
    everyone's for an admin), each with an Approve and a Deny (with a reason for the model)."""
    now = time.time() if now is None else now
    head = ('<p class="kernel">MCP tool calls waiting for a human: the agent\'s owner or an admin may '
            'settle them; an unsettled one is denied at its deadline.</p>')
    if not pending:
        return head + '<p class="empty">No tool call is waiting for your approval.</p>'
    rows = "".join(_approval_row(approval, csrf, now) for approval in sorted(pending, key=lambda a: a["created_at"]))
    return (head + '<table id="approvals"><thead><tr><th>agent</th><th>tool</th><th>arguments</th><th>waiting</th>'
            f'<th>deadline</th><th></th></tr></thead><tbody>{rows}</tbody></table>')


def _approval_row(approval: Mapping[str, Any], csrf: str, now: float) -> str:
    approval_id = e(approval["id"])
    agent = (f'{e(approval["name"])} <small>{e(approval["agent"])}</small>' if approval.get("agent")
             else f'uid:{e(approval.get("owner_uid"))} <small>its own THINK</small>')
    expires = approval["expires_at"]
    hidden = (f'<input type="hidden" name="id" value="{approval_id}">'
              f'<input type="hidden" name="{CSRF_FIELD}" value="{e(csrf)}">')
    return (f'<tr class="approval" data-approval-id="{approval_id}"><td class="name">{agent}</td>'
            f'<td><code>{e(approval["tool"])}</code></td>'
            f'<td><pre class="arguments">{e(json.dumps(approval.get("arguments"), indent=1, ensure_ascii=False))}'
            f'</pre></td><td>{e(duration(now - approval["created_at"]))}</td>'
            f'<td title="{e(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(expires)))}">'
            f'in {e(duration(expires - now))}</td>'
            f'<td class="actions"><form method="post" action="/approval/approve" class="action">{hidden}'
            '<button type="submit" value="approve">approve</button></form>'
            f'<form method="post" action="/approval/deny" class="action deny">{hidden}'
            f'<input name="reason" data-key="reason-{approval_id}" placeholder="reason (the model reads it)" '
            'aria-label="reason for denying" maxlength="1024">'
            '<button type="submit" value="deny">deny</button></form></td></tr>')


# --- mail -------------------------------------------------------------------------------------

def mail_view(stats: Mapping[str, Any] | None, dead: Mapping[str, Any] | None, refusal: str | None,
              history: History, now: float | None = None) -> str:
    now = time.time() if now is None else now
    parts = ['<h2>Mailboxes</h2>']
    if refusal is not None:
        parts.append(f'<p class="problem">{e(refusal)}</p>')
    if stats is not None:
        boxes = stats.get("mailboxes") or []
        rows = "".join(
            f'<tr data-mailbox="{e(box["mailbox"])}"><td>{e(box["mailbox"])}</td>'
            f'<td class="depth">{e(box["depth"])}</td><td class="dead">{e(box["dead"])}</td></tr>' for box in boxes)
        parts.append('<table id="mailboxes"><thead><tr><th>mailbox</th><th>waiting</th><th>dead letters</th>'
                     f'</tr></thead><tbody>{rows}</tbody></table>'
                     + ('<p><small>(the deepest shown; there are more)</small></p>' if stats.get("more") else '')
                     if rows else '<p class="empty">No messages waiting in the mailboxes you manage.</p>')
    parts.append('<h2>Dead letters</h2>')
    if dead is not None:
        letters = dead.get("dead") or []
        rows = "".join(
            f'<tr><td>{e(letter.get("id"))}</td><td>{e(letter.get("to"))}</td><td>{e(letter.get("from"))}</td>'
            f'<td>{e(letter.get("deliveries"))}</td><td>{e(duration(now - (letter.get("dead_at") or now)))} ago</td>'
            f'<td><code>{e(_preview(letter.get("body")))}</code></td></tr>' for letter in letters)
        parts.append('<table><thead><tr><th>id</th><th>mailbox</th><th>from</th><th>deliveries</th>'
                     f'<th>dead</th><th>body</th></tr></thead><tbody>{rows}</tbody></table>'
                     + ('<p><small>(the oldest shown; there are more)</small></p>' if dead.get("more") else '')
                     if rows else '<p class="empty">No dead letters in the mailboxes you manage.</p>')
    parts.append('<h2>Topics</h2><p><small>Events seen since the dashboard started (only those the kernel '
                 'shows you).</small></p>')
    if history.topics:
        parts.append('<table><thead><tr><th>topic</th><th>events</th><th>last</th></tr></thead><tbody>' + "".join(
            f'<tr data-topic="{e(topic)}"><td>{e(topic)}</td><td>{seen.count}</td>'
            f'<td>{e(duration(max(0.0, now - seen.last)))} ago</td></tr>'
            for topic, seen in sorted(history.topics.items())) + '</tbody></table>')
    else:
        parts.append('<p class="empty">No events yet.</p>')
    return "".join(parts)


def _preview(body: Any, limit: int = 120) -> str:
    text = json.dumps(body, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "…"


# --- audit ------------------------------------------------------------------------------------

def audit_view() -> str:
    return ('<form class="toolbar"><label><input type="checkbox" id="denials-only"> denials and errors only'
            '</label><span id="audit-state"></span></form>'
            '<table id="audit"><thead><tr><th>time</th><th>caller</th><th>op</th><th>outcome</th>'
            '<th>latency</th><th>arguments</th></tr></thead><tbody></tbody></table>')

