// kafkite web console: hash routes rendered from the broker's JSON endpoints; no build step.
"use strict";

const view = document.getElementById("view");
const statusLine = document.getElementById("status");
let timer = null;          // the current page's refresh timer
let history = { points: [], topics: {} };

// ---------------------------------------------------------------------------------------------- helpers

function esc(s) {
  return String(s).replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function bytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (Math.abs(n) >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(n < 10 ? 2 : 1) : Math.round(n)) + " " + units[i];
}

function num(n, digits) {
  if (n === null || n === undefined) return "-";
  return Number(n).toLocaleString(undefined, { maximumFractionDigits: digits || 0 });
}

function time(ms) {
  if (ms === null || ms === undefined || ms < 0) return "-";
  const d = new Date(ms);
  return d.toISOString().replace("T", " ").replace("Z", "");
}

let csrfToken = null;  // the session's CSRF token: state-changing requests carry it (see send)

async function api(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  if (r.status === 401) { location.href = "/login"; throw new Error("log in first"); }
  if (!r.ok) throw new Error(path + ": " + r.status + " " + (await r.text()));
  return r.json();
}

// A state-changing request (POST, PUT, DELETE) with the session's CSRF token.
async function send(method, path, body) {
  const headers = { Accept: "application/json", "Content-Type": "application/json" };
  if (csrfToken) headers["X-CSRF-Token"] = csrfToken;
  const r = await fetch(path, { method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body) });
  if (r.status === 401) { location.href = "/login"; throw new Error("log in first"); }
  if (!r.ok) throw new Error(path + ": " + r.status + " " + (await r.text()));
  return r.status === 204 ? null : r.json();
}

async function loadSession() {
  const s = await api("/api/session");
  csrfToken = s.csrf_token;
  const box = document.getElementById("session");
  if (s.authenticated) {
    box.innerHTML = `<span id="principal">${esc(s.principal)}</span>
      <form method="post" action="/logout" class="logout"><input type="hidden" name="csrf" value="${esc(s.csrf_token)}">
      <button type="submit" id="logout">Log out</button></form>`;
  }
}

function table(headers, rows, attrs) {
  const th = headers.map(h => {
    const num = h.startsWith("#");
    return `<th${num ? ' class="num"' : ""}>${esc(num ? h.slice(1) : h)}</th>`;
  }).join("");
  return `<table ${attrs || ""}><thead><tr>${th}</tr></thead><tbody>${rows.join("") ||
    `<tr><td colspan="${headers.length}" class="muted">none</td></tr>`}</tbody></table>`;
}

function td(v, cls) { return `<td${cls ? ` class="${cls}"` : ""}>${v}</td>`; }
function tag(s) { return `<span class="tag ${esc(s)}">${esc(s)}</span>`; }
function topicLink(t) { return `<a href="#/topics/${encodeURIComponent(t)}">${esc(t)}</a>`; }
function groupLink(g) { return `<a href="#/groups/${encodeURIComponent(g)}">${esc(g)}</a>`; }

function shown(v) {
  if (!v || v.size === -1) return '<span class="muted">null</span>';
  const more = v.truncated ? ` <span class="muted">(${v.size} bytes, truncated)</span>` : "";
  if (v.base64 !== undefined) return `<span class="tag">base64</span><pre>${esc(v.base64)}</pre>${more}`;
  return `<pre>${esc(v.text)}</pre>${more}`;
}

// ---------------------------------------------------------------------------------------------- charts

function drawChart(canvas, points, series) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = w * dpr; canvas.height = h * dpr;
  const ctx = canvas.getContext("2d");
  ctx.scale(dpr, dpr);
  ctx.clearRect(0, 0, w, h);
  const pad = { l: 60, r: 8, t: 8, b: 18 };
  const now = Date.now(), span = 300 * 1000;
  let max = 1;
  for (const p of points) for (const s of series) max = Math.max(max, p[s.key] || 0);
  ctx.strokeStyle = "#e3e6eb"; ctx.fillStyle = "#6b7483"; ctx.font = "11px system-ui"; ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = pad.t + (h - pad.t - pad.b) * i / 4;
    ctx.beginPath(); ctx.moveTo(pad.l, y); ctx.lineTo(w - pad.r, y); ctx.stroke();
    const v = max * (1 - i / 4);
    ctx.fillText(series[0].fmt(v), 4, y + 4);
  }
  ctx.fillText("-5 min", pad.l, h - 4);
  ctx.fillText("now", w - pad.r - 22, h - 4);
  for (const s of series) {
    ctx.strokeStyle = s.color; ctx.lineWidth = 1.6; ctx.beginPath();
    let started = false;
    for (const p of points) {
      const x = pad.l + (w - pad.l - pad.r) * (1 - (now - p.t) / span);
      if (x < pad.l) continue;
      const y = pad.t + (h - pad.t - pad.b) * (1 - (p[s.key] || 0) / max);
      if (!started) { ctx.moveTo(x, y); started = true; } else ctx.lineTo(x, y);
    }
    ctx.stroke();
  }
}

function chartsHtml() {
  const c = (id, title, a, b) => `<div class="chart"><div class="t">${title}</div>
    <canvas id="${id}" style="width:420px;height:160px"></canvas>
    <div class="legend"><span class="in">&#9632; ${a}</span>${b ? `<span class="out">&#9632; ${b}</span>` : ""}</div></div>`;
  return `<div class="charts">${c("chart-bytes", "Bytes per second", "in (produce)", "out (fetch)")}
    ${c("chart-messages", "Messages per second", "in", "out")}
    ${c("chart-requests", "Requests per second", "requests")}</div>`;
}

function redrawCharts() {
  const pts = history.points;
  const b = document.getElementById("chart-bytes");
  if (!b) return;
  drawChart(b, pts, [{ key: "bytes_in", color: "#2f6fdf", fmt: v => bytes(v) + "/s" }, { key: "bytes_out", color: "#1a9a6c", fmt: v => bytes(v) }]);
  drawChart(document.getElementById("chart-messages"), pts, [{ key: "messages_in", color: "#2f6fdf", fmt: v => num(v) + "/s" }, { key: "messages_out", color: "#1a9a6c", fmt: v => num(v) }]);
  drawChart(document.getElementById("chart-requests"), pts, [{ key: "requests", color: "#c7472e", fmt: v => num(v) + "/s" }]);
}

async function pollThroughput() {
  try {
    history = await api("/api/throughput");
    const last = history.points[history.points.length - 1];
    document.getElementById("live").textContent = last
      ? `in ${bytes(last.bytes_in)}/s · out ${bytes(last.bytes_out)}/s · ${num(last.requests)} req/s` : "";
    redrawCharts();
    const rates = document.getElementById("topic-rates");
    if (rates) rates.innerHTML = topicRatesHtml();
  } catch (e) { statusLine.textContent = String(e); }
}

function topicRatesHtml() {
  const rows = Object.entries(history.topics)
    .filter(([, r]) => r.bytes_in > 0 || r.bytes_out > 0)
    .sort((a, b) => (b[1].bytes_in + b[1].bytes_out) - (a[1].bytes_in + a[1].bytes_out))
    .map(([t, r]) => `<tr>${td(topicLink(t))}${td(bytes(r.bytes_in) + "/s", "num")}${td(bytes(r.bytes_out) + "/s", "num")}</tr>`);
  return table(["Topic", "#In", "#Out"], rows);
}

// ---------------------------------------------------------------------------------------------- pages

async function overviewPage() {
  const o = await api("/api/overview");
  const card = (n, l) => `<div class="card"><div class="n">${n}</div><div class="l">${l}</div></div>`;
  view.innerHTML = `<h1>Overview</h1>
    <div class="cards">${card(num(o.topics), "topics")}${card(num(o.partitions), "partitions")}
    ${card(num(o.groups), "consumer groups")}${card(num(o.connections), "connections")}
    ${card(esc(o.advertised), "advertised")}${card(esc(o.storage), "storage")}</div>
    <p class="muted">cluster ${esc(o.cluster_id)} · node ${o.node_id} · profile ${esc(o.profile)} · up ${num(o.uptime_s / 60, 1)} min</p>
    <h2>Live throughput</h2>${chartsHtml()}
    <h2>Busiest topics (last second)</h2><div id="topic-rates">${topicRatesHtml()}</div>`;
  redrawCharts();
}

async function topicsPage() {
  const ts = await api("/api/topics");
  const rows = ts.map(t => `<tr data-topic="${esc(t.name)}">${td(topicLink(t.name) + (t.internal ? ' <span class="tag">internal</span>' : ""))}
    ${td(num(t.partitions), "num")}${td(num(t.messages), "num")}${td(bytes(t.size_bytes), "num")}</tr>`);
  view.innerHTML = `<h1>Topics</h1>${table(["Topic", "#Partitions", "#Messages", "#Size"], rows, 'id="topics"')}`;
}

async function topicPage(name, params) {
  const t = await api("/api/topics/" + encodeURIComponent(name));
  const parts = t.partitions.map(p => `<tr data-partition="${p.partition}">${td(p.partition, "num")}
    ${td(num(p.start_offset), "num")}${td(num(p.end_offset), "num")}${td(num(p.messages), "num")}
    ${td(bytes(p.size_bytes), "num")}${td(time(p.first_timestamp))}${td(time(p.last_timestamp))}</tr>`);
  const groups = t.groups.map(g => `<tr data-group="${esc(g.group)}">${td(groupLink(g.group))}${td(tag(g.state))}
    ${td(g.partitions.map(p => `${p.partition}: ${num(p.committed_offset)}`).join("<br>"))}
    <td class="num lag${g.lag > 0 ? " lag-high" : ""}" data-lag="${g.lag}">${num(g.lag)}</td></tr>`);
  const configs = Object.entries(t.configs).map(([k, v]) => `<tr>${td(esc(k))}${td(esc(v))}</tr>`);
  const options = t.partitions.map(p => `<option value="${p.partition}">${p.partition}</option>`).join("");
  view.innerHTML = `<h1>Topic ${esc(t.name)}</h1>
    <p class="muted">id ${esc(t.topic_id)} · ${num(t.partition_count)} partitions · ${num(t.messages)} messages · ${bytes(t.size_bytes)}</p>
    <h2>Partitions</h2>${table(["#Partition", "#Start offset", "#End offset", "#Messages", "#Size", "First timestamp", "Last timestamp"], parts, 'id="partitions"')}
    <h2>Consumer groups</h2>${table(["Group", "State", "Committed offsets", "#Lag"], groups, 'id="topic-groups"')}
    <h2>Configuration overrides</h2>${table(["Name", "Value"], configs)}
    <h2>Messages</h2>
    <form class="browse" id="browse">
      <label>Partition <select id="browse-partition">${options}</select></label>
      <label>From offset <input id="browse-offset" type="number" min="0" placeholder="latest" style="width:9em"></label>
      <label>or from time <input id="browse-time" type="text" placeholder="2024-01-31 12:00 or ms" style="width:14em"></label>
      <label>Limit <input id="browse-limit" type="number" value="20" min="1" max="500" style="width:5em"></label>
      <button id="browse-go" type="submit">Browse</button>
      <button id="browse-next" type="button" class="secondary">Next page</button>
    </form>
    <div id="messages-info" class="muted"></div><div id="messages"></div>`;
  const form = document.getElementById("browse");
  let next = null;
  async function load(fromOffset) {
    const q = new URLSearchParams();
    q.set("partition", document.getElementById("browse-partition").value);
    q.set("limit", document.getElementById("browse-limit").value || "20");
    const tv = document.getElementById("browse-time").value.trim();
    const ov = document.getElementById("browse-offset").value.trim();
    if (fromOffset !== undefined) q.set("offset", fromOffset);
    else if (tv) {
      const ms = /^\d+$/.test(tv) ? Number(tv) : Date.parse(tv);
      if (isNaN(ms)) { document.getElementById("messages-info").innerHTML = '<span class="error">cannot read that time</span>'; return; }
      q.set("timestamp", ms);
    } else if (ov) q.set("offset", ov);
    const r = await api(`/api/topics/${encodeURIComponent(name)}/messages?` + q);
    next = r.next_offset;
    document.getElementById("messages-info").textContent =
      `partition ${r.partition}: offsets ${r.start_offset}..${r.end_offset}; showing ${r.messages.length} from ${r.from_offset}`;
    const rows = r.messages.map(m => `<tr data-offset="${m.offset}">${td(m.offset, "num")}${td(time(m.timestamp) + `<br><span class="muted">${m.timestamp_type}</span>`)}
      ${td(shown(m.key))}${td(m.headers.map(h => `${esc(h.name)}=${h.text !== undefined && h.text !== null ? esc(h.text) : (h.base64 ? "base64:" + esc(h.base64) : "null")}`).join("<br>"))}
      <td class="value">${shown(m.value)}</td></tr>`);
    document.getElementById("messages").innerHTML = table(["#Offset", "Timestamp", "Key", "Headers", "Value"], rows, 'id="message-table"');
  }
  form.addEventListener("submit", ev => { ev.preventDefault(); load().catch(e => statusLine.textContent = String(e)); });
  document.getElementById("browse-next").addEventListener("click", () => { if (next !== null) load(next); });
  if (params.get("partition")) document.getElementById("browse-partition").value = params.get("partition");
  if (params.get("offset")) document.getElementById("browse-offset").value = params.get("offset");
  if (params.get("time")) document.getElementById("browse-time").value = params.get("time");
  if (params.get("offset") || params.get("time")) await load();
}

async function groupsPage() {
  const gs = await api("/api/groups");
  const rows = gs.map(g => `<tr data-group="${esc(g.group)}">${td(groupLink(g.group))}${td(tag(g.state))}
    ${td(esc(g.protocol_type || "-"))}${td(num(g.members), "num")}${td(num(g.offsets), "num")}
    <td class="num lag${g.lag > 0 ? " lag-high" : ""}" data-lag="${g.lag}">${num(g.lag)}</td></tr>`);
  view.innerHTML = `<h1>Consumer groups</h1>${table(["Group", "State", "Protocol type", "#Members", "#Committed partitions", "#Lag"], rows, 'id="groups"')}`;
}

async function groupPage(id) {
  const g = await api("/api/groups/" + encodeURIComponent(id));
  const members = g.members.map(m => `<tr>${td(esc(m.member_id))}${td(esc(m.client_id))}${td(esc(m.host))}
    ${td(m.assignment.map(a => `${topicLink(a.topic)}: ${a.partitions.join(", ")}`).join("<br>") || "-")}</tr>`);
  const offsets = g.offsets.map(o => `<tr data-topic="${esc(o.topic)}" data-partition="${o.partition}">${td(topicLink(o.topic))}${td(o.partition, "num")}
    ${td(num(o.committed_offset), "num")}${td(num(o.log_end_offset), "num")}
    <td class="num lag${o.lag > 0 ? " lag-high" : ""}" data-lag="${o.lag}">${num(o.lag)}</td>${td(esc(o.member_id || "-"))}</tr>`);
  view.innerHTML = `<h1>Group ${esc(g.group)}</h1>
    <p>${tag(g.state)} <span class="muted">protocol ${esc(g.protocol || "-")} · generation ${g.generation} · total lag</span> <b id="group-lag">${num(g.lag)}</b></p>
    <h2>Members</h2>${table(["Member", "Client id", "Host", "Assignment"], members, 'id="members"')}
    <h2>Offsets and lag</h2>${table(["Topic", "#Partition", "#Committed", "#End offset", "#Lag", "Member"], offsets, 'id="group-offsets"')}`;
}

async function poolsPage() {
  const pools = await api("/api/pools");
  view.innerHTML = "<h1>Stream pools</h1>" + (pools.map(p => `<h2>${esc(p.name)} ${p.default ? '<span class="tag">default</span>' : ""} ${tag(p.state)}</h2>
    <p class="muted">${esc(p.id)}</p>` + table(["Stream", "Topic", "#Partitions", "#Retention (h)", "#Messages", "#Size"],
    p.streams.map(s => `<tr>${td(esc(s.name))}${td(topicLink(s.topic))}${td(s.partitions, "num")}${td(s.retention_hours, "num")}
      ${td(num(s.messages), "num")}${td(bytes(s.size_bytes), "num")}</tr>`))).join("") || '<p class="muted">none</p>');
}

async function queuesPage() {
  const qs = await api("/api/queues");
  const part = s => s ? `${num(s.visibleMessages)} / ${num(s.inFlightMessages)} / ${bytes(s.sizeInBytes)}` : "-";
  const rows = qs.map(q => `<tr>${td(esc(q.name))}${td(tag(q.state))}${td(part(q.queue), "num")}${td(part(q.dlq), "num")}
    ${td(q.visibility_s, "num")}${td(q.retention_s, "num")}${td(q.dead_letter_after, "num")}</tr>`);
  view.innerHTML = `<h1>Queues</h1><p class="muted">visible / in flight / size</p>
    ${table(["Queue", "State", "#Messages", "#Dead letters", "#Visibility (s)", "#Retention (s)", "#Dead letter after"], rows, 'id="queues"')}`;
}

// ---------------------------------------------------------------------------------------------- routing

async function route() {
  if (timer) { clearInterval(timer); timer = null; }
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const section = parts[0] || "overview";
  document.querySelectorAll("nav a").forEach(a => a.classList.toggle("active", a.dataset.nav === section));
  let render;
  if (section === "topics" && parts[1] !== undefined) render = () => topicPage(parts[1], params);
  else if (section === "topics") render = topicsPage;
  else if (section === "groups" && parts[1] !== undefined) render = () => groupPage(parts[1]);
  else if (section === "groups") render = groupsPage;
  else if (section === "pools") render = poolsPage;
  else if (section === "queues") render = queuesPage;
  else render = overviewPage;
  try {
    await render();
    statusLine.textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.page = section;
    document.body.dataset.ready = "1";
  } catch (e) {
    view.innerHTML = `<p class="error">${esc(String(e))}</p>`;
  }
  // Lists refresh by themselves; pages with forms are left alone.
  if (["overview", "groups", "queues", "pools"].includes(section) && parts[1] === undefined) {
    timer = setInterval(() => render().catch(() => {}), 5000);
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("resize", redrawCharts);
setInterval(pollThroughput, 1000);
loadSession().catch(() => {});
pollThroughput();
route();
