// kafkite web console: topics (create, configure, add partitions, delete records, delete), test messages and
// the message browser.
"use strict";

function limitsHint() {
  const l = overviewInfo && overviewInfo.limits;
  if (!l || l.profile !== "oci") return "";
  return `OCI profile: retention ${l.retention_hours[0]}-${l.retention_hours[1]} hours, fixed partitions, no compaction`;
}

async function topicsPage() {
  const ts = await api("/api/topics");
  const rows = ts.map(t => `<tr data-topic="${esc(t.name)}">${td(topicLink(t.name) + (t.internal ? ' <span class="tag">internal</span>' : "") +
    (t.pool ? ` <span class="tag" title="a stream of this pool">pool ${esc(t.pool)}</span>` : ""))}
    ${td(num(t.partitions), "num")}${td(num(t.messages), "num")}${td(bytes(t.size_bytes), "num")}</tr>`);
  const hint = limitsHint();
  const form = `<form id="create-topic-form" class="form">
      ${field("new-topic-name", "Name", input("new-topic-name", 'required maxlength="249" placeholder="orders"'))}
      ${field("new-topic-partitions", "Partitions", input("new-topic-partitions", 'type="number" min="1" placeholder="broker default"'))}
      ${field("new-topic-configs", "Configs (name=value per line)", '<textarea id="new-topic-configs" rows="3" placeholder="retention.ms=86400000"></textarea>', esc(hint))}
      <div class="buttons"><button type="submit" id="create-topic">Create topic</button></div></form>`;
  view.innerHTML = `<h1>Topics</h1>${panel("create-topic-panel", "Create a topic", form)}
    ${table(["Topic", "#Partitions", "#Messages", "#Size"], rows, 'id="topics"')}`;
  onSubmit("create-topic-form", "Creating the topic", async () => {
    const name = valueOf("new-topic-name");
    const parts = valueOf("new-topic-partitions");
    const made = await send("POST", "/api/topics", {
      name, partitions: parts ? Number(parts) : null, configs: keyValues(valueOf("new-topic-configs")) });
    location.hash = "#/topics/" + encodeURIComponent(name);
    return `Created topic ${made.name} with ${made.partitions} partitions`;
  });
}

// ---------------------------------------------------------------------------------------------- a topic

function partitionsTable(t) {
  const parts = t.partitions.map(p => `<tr data-partition="${p.partition}">${td(p.partition, "num")}
    ${td(num(p.start_offset), "num")}${td(num(p.end_offset), "num")}${td(num(p.messages), "num")}
    ${td(bytes(p.size_bytes), "num")}${td(time(p.first_timestamp))}${td(time(p.last_timestamp))}</tr>`);
  return table(["#Partition", "#Start offset", "#End offset", "#Messages", "#Size", "First timestamp", "Last timestamp"], parts, 'id="partitions"');
}

// The partitions' offsets again, leaving the forms and the message browser as they are.
async function refreshPartitions(name) {
  const box = document.getElementById("partitions");
  if (box) box.outerHTML = partitionsTable(await api("/api/topics/" + encodeURIComponent(name)));
}

async function topicPage(name, params) {
  const t = await api("/api/topics/" + encodeURIComponent(name));
  const enc = encodeURIComponent(name);
  const groups = t.groups.map(g => `<tr data-group="${esc(g.group)}">${td(groupLink(g.group))}${td(tag(g.state))}
    ${td(g.partitions.map(p => `${p.partition}: ${num(p.committed_offset)}`).join("<br>"))}
    <td class="num lag${g.lag > 0 ? " lag-high" : ""}" data-lag="${g.lag}">${num(g.lag)}</td></tr>`);
  const options = t.partitions.map(p => `<option value="${p.partition}">${p.partition}</option>`).join("");
  const stream = t.stream ? `<p class="muted">stream ${esc(t.stream.name)} of pool ${poolLink(t.stream.pool_id, t.stream.pool_name)} ·
      OCID ${ocid(t.stream.id)}${t.stream.messages_endpoint ? ` · messages endpoint <code>${esc(t.stream.messages_endpoint)}</code>` : ""}</p>` : "";

  const produceForm = `<form id="produce-form" class="form">
      ${field("produce-partition", "Partition", `<select id="produce-partition"><option value="">by key (murmur2) or any</option>${options}</select>`)}
      ${field("produce-key", "Key", input("produce-key", 'placeholder="empty: no key"'))}
      ${field("produce-value", "Value", '<textarea id="produce-value" rows="3" placeholder="{&quot;hello&quot;: &quot;world&quot;}"></textarea>')}
      ${field("produce-encoding", "Value is", '<select id="produce-encoding"><option value="text">text (UTF-8)</option><option value="hex">hex</option><option value="base64">base64</option></select>')}
      ${field("produce-headers", "Headers (name=value per line)", '<textarea id="produce-headers" rows="2"></textarea>')}
      <div class="buttons"><button type="submit" id="produce-send">Produce</button></div></form>`;
  const partitionsForm = `<form id="partitions-form" class="form">
      ${field("partitions-count", "New partition count", input("partitions-count", `type="number" min="${t.partition_count + 1}" value="${t.partition_count + 1}" required`), `now ${t.partition_count}; partitions can only be added`)}
      <div class="buttons"><button type="submit" id="partitions-add">Add partitions</button></div></form>`;
  const deleteRecordsForm = `<form id="delete-records-form" class="form">
      ${field("delete-records-partition", "Partition", `<select id="delete-records-partition">${options}</select>`)}
      ${field("delete-records-offset", "Before offset", input("delete-records-offset", 'type="number" min="-1" required'), "-1: everything up to the high watermark")}
      <div class="buttons"><button type="submit" id="delete-records" class="danger">Delete records</button></div></form>`;

  view.innerHTML = `<div class="title"><h1>Topic ${esc(t.name)}</h1>
      <div class="actions"><button type="button" id="delete-topic" class="danger">Delete topic</button></div></div>
    <p class="muted">id ${esc(t.topic_id)} · ${num(t.partition_count)} partitions · ${num(t.messages)} messages · ${bytes(t.size_bytes)}</p>
    ${stream}
    <div class="panels">${panel("produce-panel", "Produce a test message", produceForm)}
      ${panel("partitions-panel", "Add partitions", partitionsForm)}
      ${panel("delete-records-panel", "Delete records", deleteRecordsForm)}</div>
    <h2>Partitions</h2>${partitionsTable(t)}
    <h2>Consumer groups</h2>${table(["Group", "State", "Committed offsets", "#Lag"], groups, 'id="topic-groups"')}
    <h2>Messages</h2>
    <form class="browse" id="browse">
      <label>Partition <select id="browse-partition"><option value="all">all</option>${options}</select></label>
      <label>From offset <input id="browse-offset" type="number" placeholder="latest" style="width:9em"></label>
      <label>or from time <input id="browse-time" type="text" placeholder="2024-01-31 12:00 or ms" style="width:14em"></label>
      <label>Limit <input id="browse-limit" type="number" value="20" min="1" max="500" style="width:5em"></label>
      <label>Key contains <input id="search-key" type="text" style="width:9em"></label>
      <label>Header <input id="search-header" type="text" placeholder="name or name=text" style="width:10em"></label>
      <label>Value contains <input id="search-value" type="text" style="width:10em"></label>
      <label>Show values as <select id="render-mode"><option value="auto">auto</option><option value="json">JSON</option><option value="text">text</option><option value="hex">hex</option></select></label>
      <button id="browse-go" type="submit">Browse</button>
      <button id="browse-next" type="button" class="secondary">Next page</button>
    </form>
    <div id="messages-info" class="muted"></div><div id="messages"></div>
    <h2>Configuration</h2><div id="configs"><p class="muted">Loading&hellip;</p></div>`;

  loadConfigs(name).catch(e => { document.getElementById("configs").innerHTML = `<p class="error">${esc(e.message)}</p>`; });

  onSubmit("produce-form", "Producing", async () => {
    const p = valueOf("produce-partition");
    const key = document.getElementById("produce-key").value;
    const headers = Object.entries(keyValues(valueOf("produce-headers"))).map(([n, v]) => ({ name: n, value: v }));
    const r = await send("POST", `/api/topics/${enc}/messages`, {
      partition: p === "" ? null : Number(p), key: key === "" ? null : key,
      value: document.getElementById("produce-value").value, value_encoding: valueOf("produce-encoding"), headers });
    await refreshPartitions(name);
    return `Produced to partition ${r.partition} at offset ${r.offset}`;
  });
  onSubmit("partitions-form", "Adding partitions", async () => {
    const count = Number(valueOf("partitions-count"));
    await send("POST", `/api/topics/${enc}/partitions`, { count });
    return `${name} now has ${count} partitions`;
  }, true);
  onSubmit("delete-records-form", "Deleting records", async () => {
    const partition = Number(valueOf("delete-records-partition"));
    const offset = Number(valueOf("delete-records-offset"));
    if (!await confirmAction("Delete records", `Delete the records of ${name} partition ${partition} before offset ${offset}? They cannot be brought back.`, null, "Delete records")) return null;
    const r = await send("POST", `/api/topics/${enc}/records/delete`, { partition, offset });
    return `Partition ${partition} now starts at offset ${r.low_watermarks[partition]}`;
  }, true);
  document.getElementById("delete-topic").addEventListener("click", async () => {
    if (!await confirmAction("Delete topic", `Delete topic ${name} and all its records?`, name)) return;
    if (await act("Deleting the topic", async () => { await send("DELETE", `/api/topics/${enc}`); return `Deleted topic ${name}`; })) {
      location.hash = "#/topics";
    }
  });

  setupBrowser(name, params);
}

async function loadConfigs(name) {
  const r = await api(`/api/topics/${encodeURIComponent(name)}/configs`);
  const box = document.getElementById("configs");
  if (!box) return;
  const rows = r.configs.map(c => {
    const value = c.sensitive ? '<span class="muted">(sensitive)</span>' : esc(c.value === null ? "null" : c.value);
    const dflt = c.default === null ? "-" : esc(c.default);
    const edit = c.read_only ? "" : `<button type="button" class="small secondary" data-edit="${esc(c.name)}">Edit</button>
      ${c.is_override ? `<button type="button" class="small secondary" data-reset="${esc(c.name)}">Reset to default</button>` : ""}`;
    return `<tr data-config="${esc(c.name)}" class="${c.is_override ? "override" : ""}">
      <td title="${esc(c.documentation || "")}">${esc(c.name)}</td><td class="config-value">${value}</td>
      ${td(tag(c.source))}<td class="muted">${dflt}</td>${td(esc(c.type))}<td class="nowrap">${edit}</td></tr>`;
  });
  box.innerHTML = `<p class="muted">${r.configs.filter(c => c.is_override).length} set on the topic; the others come from the broker. Hover a name for its meaning.</p>` +
    table(["Name", "Value", "Source", "Default", "Type", ""], rows, 'id="config-table"');
  const enc = encodeURIComponent(name);
  onClick("#config-table button[data-edit]", btn => {
    const cfg = btn.dataset.edit;
    const cell = btn.closest("tr").querySelector(".config-value");
    const current = r.configs.find(c => c.name === cfg);
    cell.innerHTML = `<form class="inline" data-config-form="${esc(cfg)}"><input value="${esc(current.value === null ? "" : current.value)}" id="config-input">
      <button type="submit" class="small" id="config-save">Save</button></form>`;
    const form = cell.querySelector("form");
    form.addEventListener("submit", async ev => {
      ev.preventDefault();
      const value = form.querySelector("input").value;
      if (await act(`Setting ${cfg}`, async () => { await send("PATCH", `/api/topics/${enc}/configs`, { set: { [cfg]: value } }); return `${cfg} = ${value}`; })) {
        await loadConfigs(name);
      }
    });
    form.querySelector("input").focus();
  });
  onClick("#config-table button[data-reset]", async btn => {
    const cfg = btn.dataset.reset;
    if (await act(`Resetting ${cfg}`, async () => { await send("PATCH", `/api/topics/${enc}/configs`, { delete: [cfg] }); return `${cfg} back to its default`; })) {
      await loadConfigs(name);
    }
  });
}

// ---------------------------------------------------------------------------------------------- browser

function setupBrowser(name, params) {
  const form = document.getElementById("browse");
  let positions = null;
  let last = null;
  async function load(next) {
    const q = new URLSearchParams();
    q.set("partition", valueOf("browse-partition"));
    q.set("limit", valueOf("browse-limit") || "20");
    const tv = valueOf("browse-time");
    const ov = valueOf("browse-offset");
    for (const [param, id] of [["key", "search-key"], ["header", "search-header"], ["q", "search-value"]]) {
      const v = valueOf(id);
      if (v) q.set(param, v);
    }
    if (next && positions) q.set("positions", positions);
    else if (tv) {
      const ms = parseTime(tv);
      if (isNaN(ms)) { document.getElementById("messages-info").innerHTML = '<span class="error">cannot read that time</span>'; return; }
      q.set("timestamp", ms);
    } else if (ov) q.set("offset", ov);
    const info = document.getElementById("messages-info");
    let r;
    try {
      r = await api(`/api/topics/${encodeURIComponent(name)}/messages?` + q);
    } catch (e) {
      info.innerHTML = `<span class="error">${esc(e.message)}</span>`;
      document.getElementById("messages").innerHTML = "";
      return;
    }
    last = r;
    positions = r.positions;
    const where = r.partition === "all" ? `${r.partitions.length} partitions` :
      `partition ${r.partition}: offsets ${r.start_offset}..${r.end_offset}; showing ${r.messages.length} from ${r.from_offset}`;
    info.textContent = r.filtered
      ? `${where}: ${r.messages.length} matching of ${num(r.scanned)} scanned${r.more ? " (more to scan: Next page)" : ", end reached"}`
      : (r.partition === "all" ? `${where}: showing ${r.messages.length}` : where);
    draw();
  }
  function draw() {
    if (!last) return;
    const mode = valueOf("render-mode");
    const rows = last.messages.map(m => `<tr data-offset="${m.offset}" data-partition="${m.partition}">${td(m.partition, "num")}${td(m.offset, "num")}${td(time(m.timestamp) + `<br><span class="muted">${m.timestamp_type}</span>`)}
      ${td(shown(m.key, mode === "hex" ? "hex" : "auto"))}${td(m.headers.map(h => `${esc(h.name)}=${h.text !== undefined && h.text !== null ? esc(h.text) : (h.base64 ? "base64:" + esc(h.base64) : "null")}`).join("<br>"))}
      <td class="value">${shown(m.value, mode)}</td></tr>`);
    document.getElementById("messages").innerHTML = table(["#Partition", "#Offset", "Timestamp", "Key", "Headers", "Value"], rows, 'id="message-table"');
  }
  form.addEventListener("submit", ev => { ev.preventDefault(); load(false).catch(e => statusLine.textContent = String(e)); });
  document.getElementById("browse-next").addEventListener("click", () => { if (positions !== null) load(true); });
  document.getElementById("render-mode").addEventListener("change", draw);
  if (params.get("partition")) document.getElementById("browse-partition").value = params.get("partition");
  if (params.get("offset")) document.getElementById("browse-offset").value = params.get("offset");
  if (params.get("time")) document.getElementById("browse-time").value = params.get("time");
  if (params.get("q")) document.getElementById("search-value").value = params.get("q");
  if (params.get("offset") || params.get("time") || params.get("q") || params.get("browse")) load(false);
}
