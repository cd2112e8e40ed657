// kafkite web console: the overview with live throughput, and the hash routes of every page (ui.js holds what
// the pages share; topics.js, groups.js, streams.js and queues.js the pages). No build step.
"use strict";

let timer = null;          // the current page's refresh timer
let history = { points: [], topics: {} };

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

// ---------------------------------------------------------------------------------------------- routing

// A page the user is working in (an open form, a focused field) is not refreshed under their hands.
function busy() {
  const a = document.activeElement;
  return !!(view.querySelector("details.panel[open]") || (a && view.contains(a) && /^(INPUT|TEXTAREA|SELECT)$/.test(a.tagName)));
}

async function route(again) {
  if (timer) { clearInterval(timer); timer = null; }
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const section = parts[0] || "overview";
  document.querySelectorAll("nav a").forEach(a => a.classList.toggle("active", a.dataset.nav === section));
  if (again !== true) document.querySelectorAll("#notice .note.error").forEach(n => n.remove());
  let render;
  const one = parts[1] !== undefined;
  if (section === "topics" && one) render = () => topicPage(parts[1], params);
  else if (section === "topics") render = topicsPage;
  else if (section === "groups" && one) render = () => groupPage(parts[1]);
  else if (section === "groups") render = groupsPage;
  else if (section === "pools" && one) render = () => poolPage(parts[1]);
  else if (section === "pools") render = poolsPage;
  else if (section === "queues" && one) render = () => queuePage(parts[1]);
  else if (section === "queues") render = queuesPage;
  else render = overviewPage;
  document.body.dataset.ready = "0";
  try {
    await render();
    statusLine.textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.page = section;
    document.body.dataset.ready = "1";
  } catch (e) {
    view.innerHTML = `<p class="error" id="page-error">${esc(e.message || String(e))}</p>`;
  }
  // Lists refresh by themselves while nobody is typing in them.
  if (["overview", "groups", "queues", "pools"].includes(section) && !one) {
    timer = setInterval(() => { if (!busy()) render().catch(() => {}); }, 5000);
  }
}

async function start() {
  await loadSession().catch(() => {});
  overviewInfo = await api("/api/overview").catch(() => null);
  window.addEventListener("hashchange", () => route());
  window.addEventListener("resize", redrawCharts);
  setInterval(pollThroughput, 1000);
  pollThroughput();
  await route();
}

start();
