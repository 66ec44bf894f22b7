// The fleet, refreshed by short polling of the JSON API. Read-only. Everything
// shown is set with textContent: node and agent data never becomes markup.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token");
const every = Math.max(250, Number(params.get("refresh")) || 2000);
let selected = null; // {node, agent}

async function api(path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const r = await fetch(path, { headers, cache: "no-store" });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "–" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function age(s) {
  if (s < 90) return Math.round(s) + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  if (s < 172800) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}

function renderNodes(rows) {
  const body = document.querySelector("#nodes tbody");
  body.replaceChildren();
  for (const r of rows) {
    const hb = r.heartbeat;
    const tr = document.createElement("tr");
    tr.dataset.node = r.node_id;
    tr.className = r.status;
    cell(tr, r.node_id);
    cell(tr, r.status, "status " + r.status);
    cell(tr, age(r.age_s));
    cell(tr, hb.arch);
    cell(tr, hb.version);
    cell(tr, hb.location);
    cell(tr, hb.hub_link && hb.hub_link.state);
    cell(tr, hb.cpu_pct.toFixed(1) + " %", "num");
    cell(tr, hb.mem_total ? (100 * hb.mem_used / hb.mem_total).toFixed(1) + " %" : "–", "num");
    cell(tr, hb.outbox.depth, "num");
    cell(tr, hb.agents.running + " running" + (hb.agents.failed ? ", " + hb.agents.failed + " failed" : ""));
    body.appendChild(tr);
  }
  const online = rows.filter((r) => r.status === "online").length;
  document.getElementById("summary").textContent =
    rows.length + " nodes, " + online + " online, " + (rows.length - online) + " offline";
}

function renderAgents(rows) {
  const body = document.querySelector("#agents tbody");
  body.replaceChildren();
  for (const r of rows) {
    const tr = document.createElement("tr");
    tr.dataset.node = r.node_id;
    tr.dataset.agent = r.agent;
    if (selected && selected.node === r.node_id && selected.agent === r.agent) tr.className = "selected";
    cell(tr, r.node_id);
    cell(tr, r.agent);
    cell(tr, r.state, "state " + r.state);
    cell(tr, r.version);
    cell(tr, r.invocations, "num");
    cell(tr, r.failures, "num");
    cell(tr, r.last_error ? r.last_error.code + ": " + r.last_error.message : "", "error");
    tr.addEventListener("click", () => {
      selected = { node: r.node_id, agent: r.agent };
      document.getElementById("logs-of").textContent = "of " + r.agent + " on " + r.node_id;
      for (const other of body.children) other.classList.toggle("selected", other === tr);
      refreshLogs();
    });
    body.appendChild(tr);
  }
}

function renderEvents(rows) {
  const list = document.getElementById("events");
  list.replaceChildren();
  for (const e of rows.slice().reverse()) {
    const li = document.createElement("li");
    li.dataset.kind = e.kind;
    if (e.code) li.className = "failure";
    li.textContent = e.at + " " + e.node_id + (e.agent ? "/" + e.agent : "") + " " + e.kind + ": " + e.message;
    list.appendChild(li);
  }
}

async function refreshLogs() {
  if (!selected) return;
  const q = "node=" + encodeURIComponent(selected.node) + "&agent=" + encodeURIComponent(selected.agent);
  const lines = await api("/api/logs?" + q + "&limit=200");
  const pre = document.getElementById("logs");
  pre.textContent = lines.length
    ? lines.map((l) => l.at + " " + l.level.toUpperCase().padEnd(5) + " " + l.message).join("\n")
    : "No lines in the last 24 hours.";
}

async function refresh() {
  const problem = document.getElementById("problem");
  try {
    const [nodes, agents, events] = await Promise.all([
      api("/api/nodes"), api("/api/agents"), api("/api/events?limit=50"),
    ]);
    renderNodes(nodes);
    renderAgents(agents);
    renderEvents(events);
    await refreshLogs();
    problem.hidden = true;
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    problem.textContent = "Cannot refresh: " + e.message;
    problem.hidden = false;
  }
  setTimeout(refresh, every);
}

refresh();
