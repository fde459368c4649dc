// agentos dashboard: refresh the server-rendered partials, submit actions with the CSRF token,
// and show the log and audit streams (Server-Sent Events). No framework, no build step.
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf"]').content;
  const view = document.getElementById("view");
  const flash = document.getElementById("flash");

  function say(text, ok) {
    flash.textContent = text;
    flash.className = ok ? "ok" : "error";
  }

  // --- partials: fetched again every second, open <details> and typed text kept --------------
  let busy = false;
  async function refresh() {
    const url = view.dataset.refresh;
    if (!url || busy) return;
    busy = true;
    try {
      const answer = await fetch(url, {credentials: "same-origin", cache: "no-store"});
      if (answer.status === 401) { say("the dashboard's token is no longer valid: open the URL it printed", false); return; }
      const html = await answer.text();
      if (html !== view.dataset.last) {
        const open = [...view.querySelectorAll("details[open]")].map(d => d.dataset.key);
        // A deny reason being typed survives the row's ticking age redrawing it.
        const typed = [...view.querySelectorAll("input[data-key]")].map(i => [i.dataset.key, i.value]);
        const active = document.activeElement;
        const focused = active && active.dataset.key;
        const caret = focused ? [active.selectionStart, active.selectionEnd] : null;
        view.innerHTML = html;
        view.dataset.last = html;
        for (const key of open) {
          const again = view.querySelector(`details[data-key="${CSS.escape(key)}"]`);
          if (again) again.open = true;
        }
        for (const [key, value] of typed) {
          const again = view.querySelector(`input[data-key="${CSS.escape(key)}"]`);
          if (again) again.value = value;
        }
        if (focused) {
          const again = view.querySelector(`input[data-key="${CSS.escape(focused)}"]`);
          if (again) { again.focus(); again.setSelectionRange(...caret); }
        }
      }
    } catch (err) {
      say("the dashboard does not answer: " + err, false);
    } finally {
      busy = false;
    }
  }
  if (view.dataset.refresh) setInterval(refresh, 1000);

  // --- the kernel: a banner while it is gone; the streams start again when it is back -------
  const banner = document.getElementById("kernel-state");
  let wasDown = false;
  async function watchKernel() {
    let down;
    try {
      const answer = await fetch("/status", {credentials: "same-origin", cache: "no-store"});
      if (!answer.ok) return;
      down = (await answer.json()).kernel === "down";
    } catch (err) {
      return;  // the dashboard itself does not answer: refresh() says so
    }
    banner.hidden = !down;
    if (wasDown && !down && !view.dataset.refresh) location.reload();  // logs, audit: stream again
    wasDown = down;
  }
  watchKernel();
  setInterval(watchKernel, 1000);

  // --- actions: POST with the CSRF token in a header ----------------------------------------
  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (!form.classList.contains("action")) return;
    event.preventDefault();
    const answer = await fetch(form.action, {method: "POST", credentials: "same-origin",
                                             headers: {"X-CSRF-Token": csrf}, body: new FormData(form)});
    const reply = await answer.json().catch(() => ({ok: false, message: answer.statusText}));
    say(reply.ok ? reply.message : `refused (${reply.code || answer.status}): ${reply.message}`, reply.ok);
    refresh();
  });

  // --- logs: one stream per agent or project, filtered as typed ------------------------------
  const log = document.getElementById("log");
  if (log) {
    const search = document.getElementById("log-search");
    const state = document.getElementById("log-state");
    const select = document.querySelector('#log-source select');
    select.addEventListener("change", () => { location.search = select.value ? "?" + select.value : ""; });
    const matches = (line) => !search.value || line.dataset.text.includes(search.value.toLowerCase());
    search.addEventListener("input", () => {
      for (const line of log.children) line.hidden = !matches(line);
    });
    if (log.dataset.source) {
      const single = log.dataset.source.startsWith("id=");
      const source = new EventSource("/stream/logs?" + log.dataset.source);
      state.textContent = "streaming";
      source.addEventListener("line", (event) => {
        const data = JSON.parse(event.data);
        const line = document.createElement("div");
        line.className = "line";
        line.textContent = (data.agent ? data.agent + " | " : "") + data.text;
        line.dataset.text = line.textContent.toLowerCase();
        line.hidden = !matches(line);
        const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
        log.appendChild(line);
        if (atEnd) log.scrollTop = log.scrollHeight;
      });
      source.addEventListener("ended", (event) => {
        const data = JSON.parse(event.data);
        const line = document.createElement("div");
        line.className = "line ended";
        line.textContent = `— ${data.agent || "the agent"} ended —`;
        line.dataset.text = "";
        log.appendChild(line);
        // A single agent's stream is over; reconnecting would replay its tail.
        if (single) { source.close(); state.textContent = "ended"; }
      });
      source.addEventListener("problem", (event) => {
        source.close();
        state.textContent = JSON.parse(event.data).message;
        state.className = "problem";
      });
    }
  }

  // --- audit: newest first, denials highlighted ---------------------------------------------
  const audit = document.getElementById("audit");
  if (audit) {
    const body = audit.querySelector("tbody");
    const state = document.getElementById("audit-state");
    document.getElementById("denials-only").addEventListener("change", (event) => {
      audit.classList.toggle("denials-only", event.target.checked);
    });
    const source = new EventSource("/stream/audit");
    state.textContent = "streaming";
    source.addEventListener("audit", (event) => {
      const r = JSON.parse(event.data);
      const row = document.createElement("tr");
      row.dataset.outcome = r.outcome;
      row.dataset.op = r.op;
      if (r.outcome !== "ok") row.className = r.outcome === "permission_denied" ? "denied" : "error";
      const caller = (r.name ? r.name + " " : "") + (r.agent ? r.agent : "uid:" + r.uid) + " pid " + r.pid;
      const cells = [new Date(r.ts * 1000).toLocaleTimeString(), caller, r.op, r.outcome,
                     r.latency_ms + " ms", r.args ? JSON.stringify(r.args) : ""];
      for (const text of cells) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.appendChild(cell);
      }
      body.prepend(row);
      while (body.children.length > 1000) body.lastChild.remove();
    });
    source.addEventListener("problem", (event) => {
      source.close();
      state.textContent = JSON.parse(event.data).message;
      state.className = "problem";
    });
  }
})();
