"""/status for people: the same figures as the JSON, as a page that refreshes itself (HAProxy's stats page).

`metrics/server.py` answers GET /status with this page when the client prefers text/html (a browser),
and with JSON otherwise (curl, `ukproxy status`, scripts). The page carries the JSON of the moment it was
made, so it shows figures at once without a script's round trip; its script draws the tables from that,
then asks for /status (as JSON) every `refresh` seconds (`?refresh=N`, 1-3600, default 2) and derives
rates from two readings: requests per second (site, upstream, server) and CPU shares of workers and VMs
from their `cpu_seconds`. Every figure taken from the JSON as it is sits in an element whose `data-k`
is its path in the JSON (`workers.0.pid`), so a test can compare the page with /status; figures that
move on their own (uptimes, CPU time, seconds since a check) are marked `data-live` instead.
docs/architecture.md, "Observability".
"""

from __future__ import annotations

import json
from typing import Any

DEFAULT_REFRESH = 2


def prefers_html(accept: str | None) -> bool:
    """Whether an Accept header ranks text/html above JSON: a browser's does, curl's `*/*` does not."""
    if not accept:
        return False
    ranks: dict[str, float] = {}
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        ranks[media.lower()] = q
    html = ranks.get("text/html", 0.0)  # named: a "*/*" alone (curl) is no wish for a page
    json_rank = ranks.get("application/json", ranks.get("application/*", ranks.get("*/*", 0.0)))
    return html > json_rank  # on a tie, JSON: what scripts have always had


def refresh_seconds(value: str | None) -> int:
    try:
        seconds = int(value) if value is not None else DEFAULT_REFRESH
    except ValueError:
        return DEFAULT_REFRESH
    return min(max(seconds, 1), 3600)


def render(status: dict[str, Any], refresh: int) -> str:
    """The page, with `status` inside it (escaped so that no string in it can end the script element)."""
    data = json.dumps(status).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return _PAGE.replace("@REFRESH@", str(refresh)).replace("@STATUS@", data)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ukproxy status</title>
<style>
body { font: 13px/1.4 system-ui, sans-serif; margin: 16px; color: #222; background: #fafafa; }
h1 { font-size: 18px; margin: 0 0 4px; }
h2 { font-size: 14px; margin: 18px 0 6px; padding: 3px 6px; background: #35507a; color: #fff; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { border: 1px solid #ccd; padding: 2px 6px; text-align: right; white-space: nowrap; }
th { background: #e3e8f0; }
td.name, th.name { text-align: left; }
tr.up td.state, tr.pass td.health { background: #c8f0c0; }
tr.down td.state, tr.fail td.health { background: #f5c0c0; }
tr.other td.state { background: #f5e9b0; }
#summary span { margin-right: 18px; }
#error { color: #a00; }
.muted { color: #777; }
</style>
</head>
<body>
<h1>ukproxy <span data-k="version"></span></h1>
<div id="summary"></div>
<div id="error"></div>
<h2>Workers</h2>
<table id="workers"></table>
<h2>Upstreams</h2>
<div id="upstreams"></div>
<h2>VMs</h2>
<table id="vms"></table>
<p class="muted">Refreshes every @REFRESH@ s (<code>?refresh=N</code>). The same figures as JSON:
<code>curl /status</code>.</p>
<script id="initial" type="application/json">@STATUS@</script>
<script>
"use strict";
const REFRESH = @REFRESH@;
let previous = null;  // the last reading and when it was taken, for rates

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}
function shown(value) { return value === null || value === undefined ? "\\u2013" : String(value); }
// A cell holding the JSON's value at `path` as it is (data-k), or a live one (data-live).
function cell(path, value, live, cls) {
  const attrs = live ? {"data-live": path} : {"data-k": path};
  if (cls) attrs["class"] = cls;
  return el("td", attrs, shown(value));
}
function rateCell(now, before, seconds, scale, digits) {
  if (before === undefined || before === null || now === null || now === undefined || !seconds) {
    return el("td", {"class": "rate"}, "\\u2013");
  }
  return el("td", {"class": "rate"}, (Math.max(0, now - before) * scale / seconds).toFixed(digits));
}
function header(table, names) {
  const row = el("tr");
  names.forEach((name, i) => row.appendChild(el("th", i === 0 ? {"class": "name"} : {}, name)));
  table.appendChild(row);
}
function stateClass(state) {
  if (["ready", "running", "pass"].includes(state)) return "up";
  return ["dead", "fail", "down"].includes(state) ? "down" : "other";
}

function render(status, at) {
  const before = previous ? previous.status : null;
  const seconds = previous ? (at - previous.at) / 1000 : 0;
  document.querySelector('[data-k="version"]').textContent = shown(status.version);

  const summary = document.getElementById("summary");
  summary.replaceChildren();
  const figures = [["master pid", "master.pid"], ["generation", "master.generation"], ["active", "active"],
                   ["reading", "reading"], ["writing", "writing"], ["waiting", "waiting"], ["accepts", "accepts"],
                   ["handled", "handled"], ["requests", "requests"]];
  for (const [label, path] of figures) {
    const value = path.split(".").reduce((v, k) => (v === null || v === undefined ? v : v[k]), status);
    const span = el("span", {}, label + " ");
    span.appendChild(el("b", {"data-k": path}, shown(value)));
    summary.appendChild(span);
  }
  const rate = el("span", {}, "requests/s ");
  rate.appendChild(el("b", {"id": "request-rate", "class": "rate"},
                      before ? (Math.max(0, status.requests - before.requests) / seconds).toFixed(1) : "\\u2013"));
  summary.appendChild(rate);
  const uptime = el("span", {}, "uptime ");
  uptime.appendChild(el("b", {"data-live": "master.uptime"}, shown(status.master.uptime) + " s"));
  summary.appendChild(uptime);

  const workers = document.getElementById("workers");
  workers.replaceChildren();
  header(workers, ["pid", "slot", "cpu", "generation", "state", "connections", "accepted", "cpu %", "cpu s",
                   "uptime s"]);
  const workersBefore = new Map((before ? before.workers : []).map(w => [w.pid, w]));
  status.workers.forEach((w, i) => {
    const p = "workers." + i + ".";
    const row = el("tr", {"class": stateClass(w.state)});
    row.append(cell(p + "pid", w.pid, false, "name"), cell(p + "slot", w.slot), cell(p + "cpu", w.cpu),
               cell(p + "generation", w.generation), cell(p + "state", w.state, false, "state"),
               cell(p + "connections", w.connections), cell(p + "accepted", w.accepted),
               rateCell(w.cpu_seconds, (workersBefore.get(w.pid) || {}).cpu_seconds, seconds, 100, 1),
               cell(p + "cpu_seconds", w.cpu_seconds, true), cell(p + "uptime", w.uptime, true));
    workers.appendChild(row);
  });

  const upstreams = document.getElementById("upstreams");
  upstreams.replaceChildren();
  const upstreamsBefore = new Map((before ? before.upstreams || [] : []).map(u => [u.name, u]));
  (status.upstreams || []).forEach((u, i) => {
    const p = "upstreams." + i + ".";
    const old = upstreamsBefore.get(u.name);
    const table = el("table", {"class": "upstream"});
    const title = el("tr");
    const th = el("th", {"class": "name", "colspan": "6"});
    th.append(el("span", {"data-k": p + "name"}, u.name), " \\u00b7 requests ",
              el("span", {"data-k": p + "requests"}, shown(u.requests)), " \\u00b7 failures ",
              el("span", {"data-k": p + "failures"}, shown(u.failures)), " \\u00b7 requests/s ",
              el("span", {"class": "rate"},
                 old && seconds ? (Math.max(0, u.requests - old.requests) / seconds).toFixed(1) : "\\u2013"));
    title.appendChild(th);
    table.appendChild(title);
    header(table, ["server", "active", "requests", "requests/s", "health", "last check s ago"]);
    const serversBefore = new Map((old ? old.servers : []).map(s => [s.server, s]));
    u.servers.forEach((s, j) => {
      const q = p + "servers." + j + ".";
      const row = el("tr", {"class": s.health === null ? "" : s.health});
      row.append(cell(q + "server", s.server, false, "name"), cell(q + "active", s.active),
                 cell(q + "requests", s.requests),
                 rateCell(s.requests, (serversBefore.get(s.server) || {}).requests, seconds, 1, 1),
                 cell(q + "health", s.health, false, "health"),
                 cell(q + "last_health_check", s.last_health_check, true));
      table.appendChild(row);
    });
    upstreams.appendChild(table);
  });

  const vms = document.getElementById("vms");
  vms.replaceChildren();
  header(vms, ["id", "upstream", "worker", "cpu", "state", "address", "pid", "active", "requests", "cpu %",
               "cpu s", "health", "boot ms", "uptime s"]);
  const vmsBefore = new Map((before && Array.isArray(before.vms) ? before.vms : []).map(v => [v.id, v]));
  (Array.isArray(status.vms) ? status.vms : []).forEach((v, i) => {
    const p = "vms." + i + ".";
    const row = el("tr", {"class": stateClass(v.state)});
    row.append(cell(p + "id", v.id, false, "name"), cell(p + "upstream", v.upstream), cell(p + "worker", v.worker),
               cell(p + "cpu", v.cpu), cell(p + "state", v.state, false, "state"), cell(p + "address", v.address),
               cell(p + "pid", v.pid), cell(p + "active", v.active), cell(p + "requests", v.requests),
               rateCell(v.cpu_seconds, (vmsBefore.get(v.id) || {}).cpu_seconds, seconds, 100, 1),
               cell(p + "cpu_seconds", v.cpu_seconds, true), cell(p + "health", v.health),
               cell(p + "boot_ms", v.boot_ms), cell(p + "uptime", v.uptime, true));
    vms.appendChild(row);
  });
  previous = {status: status, at: at};
  document.body.setAttribute("data-rendered", String(Date.now()));
}

async function poll() {
  try {
    const response = await fetch("/status", {headers: {"Accept": "application/json"}, cache: "no-store"});
    if (!response.ok) throw new Error("HTTP " + response.status);
    render(await response.json(), performance.now());
    document.getElementById("error").textContent = "";
  } catch (e) {
    document.getElementById("error").textContent = "cannot refresh: " + e.message;
  }
}

render(JSON.parse(document.getElementById("initial").textContent), performance.now());
setInterval(poll, REFRESH * 1000);
</script>
</body>
</html>
"""
