// kafkite web console: what every page shares (requests, tables, forms, dialogs, value rendering).
"use strict";

const view = document.getElementById("view");
const statusLine = document.getElementById("status");
let csrfToken = null;      // the session's CSRF token: sent with every change and every /api/oci request
let overviewInfo = null;   // /api/overview, for the profile's limits and the REST gateway's address

// ---------------------------------------------------------------------------------------------- text

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

// A time typed by the user: milliseconds since the epoch, or anything Date.parse reads (local time).
function parseTime(text) {
  const t = String(text).trim();
  if (!t) return null;
  const ms = /^\d+$/.test(t) ? Number(t) : Date.parse(t);
  return isNaN(ms) ? NaN : ms;
}

// ---------------------------------------------------------------------------------------------- requests

// The message of a refused request: the broker's error as the console or the OCI API words it.
async function errorText(r) {
  const text = await r.text();
  try {
    const j = JSON.parse(text);
    if (j.error) return j.error;
    if (j.code) return `${j.code}: ${j.message || ""}`;
  } catch (e) { /* not JSON */ }
  return `${r.status} ${text || r.statusText}`;
}

// The response body (parsed JSON, or null), and with ``withHeaders`` {data, headers}.
async function request(method, path, body, withHeaders) {
  const headers = { Accept: "application/json" };
  if (csrfToken) headers["X-CSRF-Token"] = csrfToken;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body) });
  if (r.status === 401) { location.href = "/login"; throw new Error("log in first"); }
  if (!r.ok) throw new Error(await errorText(r));
  const text = await r.text();
  const data = text ? JSON.parse(text) : null;
  return withHeaders ? { data, headers: r.headers } : data;
}

function api(path) { return request("GET", path); }
// A state-changing request (POST, PUT, PATCH, DELETE) with the session's CSRF token.
function send(method, path, body) { return request(method, path, body); }

const OCI_STREAMING = "/api/oci/20180418";
const OCI_QUEUE = "/api/oci/20210201";

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

// ---------------------------------------------------------------------------------------------- markup

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
function poolLink(id, name) { return `<a href="#/pools/${encodeURIComponent(id)}">${esc(name)}</a>`; }
function queueLink(id, name) { return `<a href="#/queues/${encodeURIComponent(id)}">${esc(name)}</a>`; }
function ocid(id) { return `<code class="ocid">${esc(id)}</code>`; }

// A collapsible panel holding a form: <details> opened by its summary.
function panel(id, title, body, open) {
  return `<details class="panel" id="${id}"${open ? " open" : ""}><summary>${esc(title)}</summary><div class="panel-body">${body}</div></details>`;
}

// A labelled input of a form (the id doubles as the field's name).
function field(id, label, input, hint) {
  return `<label for="${id}">${esc(label)}${input}${hint ? `<small class="muted">${hint}</small>` : ""}</label>`;
}
function input(id, attrs) { return `<input id="${id}" name="${id}" ${attrs || ""}>`; }
function valueOf(id) { const e = document.getElementById(id); return e ? e.value.trim() : ""; }

// "name=value" lines into an object (configs, ...).
function keyValues(text) {
  const out = {};
  for (const line of String(text).split(/\n/)) {
    const s = line.trim();
    if (!s || s.startsWith("#")) continue;
    const i = s.indexOf("=");
    if (i <= 0) throw new Error(`expected name=value, got "${s}"`);
    out[s.slice(0, i).trim()] = s.slice(i + 1).trim();
  }
  return out;
}

// ---------------------------------------------------------------------------------------------- feedback

// A message at the top of the page: what a change did, or the broker's error.
function notify(message, kind) {
  const box = document.getElementById("notice");
  const div = document.createElement("div");
  div.className = "note " + (kind || "ok");
  div.setAttribute("role", kind === "error" ? "alert" : "status");
  div.textContent = message;
  const close = document.createElement("button");
  close.type = "button"; close.className = "close"; close.textContent = "×"; close.title = "dismiss";
  close.addEventListener("click", () => div.remove());
  div.appendChild(close);
  box.appendChild(div);
  if (kind === "error") div.scrollIntoView({ block: "nearest" });
  else setTimeout(() => div.remove(), 8000);
  return div;
}

function clearNotices() { document.getElementById("notice").innerHTML = ""; }

// Ask before a destructive action; ``typed`` makes the user type that text (a resource's name) first.
function confirmAction(title, text, typed, confirmLabel) {
  const dlg = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  const wrap = document.getElementById("confirm-typed-wrap");
  const box = document.getElementById("confirm-typed");
  const ok = document.getElementById("confirm-ok");
  ok.textContent = confirmLabel || "Delete";
  box.value = "";
  wrap.hidden = !typed;
  document.getElementById("confirm-typed-name").textContent = typed || "";
  ok.disabled = !!typed;
  box.oninput = () => { ok.disabled = box.value !== typed; };
  return new Promise(resolve => {
    const done = v => { dlg.close(); ok.onclick = null; document.getElementById("confirm-cancel").onclick = null; resolve(v); };
    ok.onclick = () => done(true);
    document.getElementById("confirm-cancel").onclick = () => done(false);
    dlg.oncancel = () => resolve(false);
    dlg.showModal();
    (typed ? box : ok).focus();
  });
}

// Run a change from a button or form: errors are shown with the broker's message, success notified.
async function act(what, fn) {
  try {
    const message = await fn();
    if (message) notify(message, "ok");
    return true;
  } catch (e) {
    notify(`${what} failed: ${e.message || e}`, "error");
    return false;
  }
}

// Wire a form's submit to an async action; the page is re-rendered after a success when ``reload``.
function onSubmit(id, what, fn, reload) {
  const form = document.getElementById(id);
  if (!form) return;
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    const button = form.querySelector("button[type=submit]");
    if (button) button.disabled = true;
    const ok = await act(what, fn);
    if (button) button.disabled = false;
    if (ok && reload) await rerender();
  });
}

function onClick(selector, fn) {
  document.querySelectorAll(selector).forEach(el => el.addEventListener("click", ev => { ev.preventDefault(); fn(el); }));
}

// ---------------------------------------------------------------------------------------------- values

function b64bytes(s) { const bin = atob(s); const out = new Uint8Array(bin.length); for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i); return out; }

function valueBytes(v) { return v.base64 !== undefined ? b64bytes(v.base64) : new TextEncoder().encode(v.text); }

function hexdump(data) {
  const lines = [];
  for (let i = 0; i < data.length; i += 16) {
    const row = Array.from(data.slice(i, i + 16));
    const hex = row.map(b => b.toString(16).padStart(2, "0")).join(" ");
    const ascii = row.map(b => (b >= 32 && b < 127 ? String.fromCharCode(b) : ".")).join("");
    lines.push(`${i.toString(16).padStart(8, "0")}  ${hex.padEnd(47)}  ${ascii}`);
  }
  return lines.join("\n");
}

// A key, value or header as the page shows it: ``mode`` auto (JSON when it parses, text, hex for binary),
// json, text or hex.
function shown(v, mode) {
  if (!v || v.size === -1) return '<span class="muted">null</span>';
  const more = v.truncated ? ` <span class="muted">(${num(v.size)} bytes, truncated)</span>` : "";
  const binary = v.base64 !== undefined;
  mode = mode || "auto";
  if (mode === "hex" || (binary && mode !== "text")) {
    const label = binary && mode !== "hex" ? '<span class="tag">binary</span>' : "";
    return `${label}<pre class="hex">${esc(hexdump(valueBytes(v)))}</pre>${more}`;
  }
  const text = binary ? new TextDecoder().decode(valueBytes(v)) : v.text;
  if (mode === "json" || mode === "auto") {
    const t = text.trim();
    if ((t.startsWith("{") || t.startsWith("[")) && !v.truncated) {
      try { return `<pre class="json">${esc(JSON.stringify(JSON.parse(t), null, 2))}</pre>${more}`; } catch (e) { /* text */ }
    }
    if (mode === "json") return `<span class="tag">not JSON</span><pre>${esc(text)}</pre>${more}`;
  }
  return `<pre>${esc(text)}</pre>${more}`;
}

// Re-render the current page (after a change).
async function rerender() { await route(true); }
