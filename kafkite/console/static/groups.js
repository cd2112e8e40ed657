// kafkite web console: consumer groups of every type, resetting their offsets, deleting them.
"use strict";

async function groupsPage() {
  const gs = await api("/api/groups");
  const rows = gs.map(g => `<tr data-group="${esc(g.group)}">${td(groupLink(g.group))}${td(tag(g.type || "classic"))}${td(tag(g.state))}
    ${td(esc(g.protocol_type || "-"))}${td(num(g.members), "num")}${td(num(g.offsets), "num")}
    <td class="num lag${g.lag > 0 ? " lag-high" : ""}" data-lag="${g.lag}">${num(g.lag)}</td></tr>`);
  view.innerHTML = `<h1>Groups</h1>${table(["Group", "Type", "State", "Protocol type", "#Members", "#Committed partitions", "#Lag"], rows, 'id="groups"')}`;
}

// A protocol's own fields (a consumer group's epochs, a member's subscription, ...), whatever they are.
function detailsHtml(details) {
  const entries = Object.entries(details || {});
  if (!entries.length) return "";
  const cell = x => x === null || x === undefined ? "-" : typeof x === "object"
    ? Object.entries(x).map(([k, y]) => `${k}: ${y}`).join(", ") || "-" : String(x);
  const fmt = v => {
    if (v === null || v === undefined) return '<span class="muted">-</span>';
    // A list of records (a share group's share-partitions): a table with a column per field.
    if (Array.isArray(v) && v.length && v.every(x => x && typeof x === "object" && !Array.isArray(x))) {
      const keys = [...new Set(v.flatMap(x => Object.keys(x)))];
      return `<table class="details-table"><tr>${keys.map(k => `<th>${esc(k.replace(/_/g, " "))}</th>`).join("")}</tr>` +
        v.map(x => `<tr>${keys.map(k => `<td data-field="${esc(k)}">${esc(cell(x[k]))}</td>`).join("")}</tr>`).join("") + "</table>";
    }
    if (typeof v === "object") {
      const kv = Array.isArray(v) ? v.map(x => esc(typeof x === "object" ? JSON.stringify(x) : x)).join(", ")
        : Object.entries(v).map(([k, x]) => `${esc(k)}: ${esc(Array.isArray(x) ? x.join(", ") : JSON.stringify(x))}`).join("<br>");
      return kv || '<span class="muted">none</span>';
    }
    return esc(v);
  };
  return `<dl class="details">${entries.map(([k, v]) => `<dt>${esc(k.replace(/_/g, " "))}</dt><dd data-detail="${esc(k)}">${fmt(v)}</dd>`).join("")}</dl>`;
}

async function groupPage(id) {
  const g = await api("/api/groups/" + encodeURIComponent(id));
  const enc = encodeURIComponent(id);
  const members = g.members.map(m => `<tr>${td(esc(m.member_id))}${td(esc(m.client_id))}${td(esc(m.host))}
    ${td(m.assignment.map(a => `${topicLink(a.topic)}: ${a.partitions.join(", ")}`).join("<br>") || "-")}${td(detailsHtml(m.details))}</tr>`);
  const offsets = g.offsets.map(o => `<tr data-topic="${esc(o.topic)}" data-partition="${o.partition}">${td(topicLink(o.topic))}${td(o.partition, "num")}
    ${td(num(o.committed_offset), "num")}${td(num(o.log_end_offset), "num")}
    <td class="num lag${o.lag > 0 ? " lag-high" : ""}" data-lag="${o.lag}">${num(o.lag)}</td>${td(esc(o.member_id || "-"))}</tr>`);
  const topics = [...new Set(g.offsets.map(o => o.topic))];
  const topicOptions = topics.map(t => `<option value="${esc(t)}">`).join("");
  const resetForm = `<form id="reset-form" class="form">
      ${field("reset-topic", "Topic", `<input id="reset-topic" list="reset-topics" required value="${esc(topics[0] || "")}"><datalist id="reset-topics">${topicOptions}</datalist>`)}
      ${field("reset-partitions", "Partitions", input("reset-partitions", 'placeholder="all, or 0,2,5"'))}
      ${field("reset-to", "Reset to", `<select id="reset-to"><option value="earliest">earliest</option><option value="latest">latest</option>
        <option value="offset">an offset</option><option value="timestamp">a time</option></select>`)}
      ${field("reset-value", "Offset or time", input("reset-value", 'placeholder="42, or 2024-01-31 12:00, or ms"'))}
      <div class="buttons"><button type="button" id="reset-preview" class="secondary">Preview</button>
        <button type="submit" id="reset-execute" class="danger">Reset offsets</button></div></form>
      <div id="reset-plan"></div>
      <p class="muted">Committed offsets can be reset only while the group has no members, as Kafka requires.</p>`;
  view.innerHTML = `<div class="title"><h1>Group ${esc(g.group)}</h1>
      <div class="actions"><button type="button" id="delete-group" class="danger">Delete group</button></div></div>
    <p>${tag(g.type || "classic")} ${tag(g.state)} <span class="muted">protocol type ${esc(g.protocol_type || "-")} · protocol ${esc(g.protocol || "-")} · generation ${esc(g.generation)} · total lag</span> <b id="group-lag">${num(g.lag)}</b></p>
    ${detailsHtml(g.details)}
    ${g.type === "share" ? "" : panel("reset-panel", "Reset committed offsets", resetForm)}
    <h2>Members</h2>${table(["Member", "Client id", "Host", "Assignment", "Protocol fields"], members, 'id="members"')}
    <h2>Offsets and lag</h2>${table(["Topic", "#Partition", "#Committed", "#End offset", "#Lag", "Member"], offsets, 'id="group-offsets"')}`;

  function resetBody(execute) {
    const to = valueOf("reset-to");
    const raw = valueOf("reset-partitions");
    const body = { topic: valueOf("reset-topic"), to, execute,
      partitions: raw ? raw.split(",").map(s => Number(s.trim())) : null };
    const v = valueOf("reset-value");
    if (to === "offset") body.offset = Number(v);
    if (to === "timestamp") {
      const ms = parseTime(v);
      if (ms === null || isNaN(ms)) throw new Error("cannot read that time");
      body.timestamp = ms;
    }
    return body;
  }
  function showPlan(r) {
    const rows = r.offsets.map(o => `<tr data-partition="${o.partition}">${td(o.partition, "num")}${td(o.before === null ? "-" : num(o.before), "num")}
      ${td(num(o.after), "num")}${td(`${num(o.start)}..${num(o.end)}`, "num")}</tr>`);
    document.getElementById("reset-plan").innerHTML = `<p class="muted">${r.executed ? "Committed" : "Would commit"} for ${esc(r.topic)}:</p>` +
      table(["#Partition", "#Now", "#New", "#Log range"], rows, 'id="reset-plan-table"');
  }
  if (document.getElementById("reset-form")) {  // a share group has no committed offsets to reset
    document.getElementById("reset-preview").addEventListener("click", () => act("Previewing the reset", async () => {
      showPlan(await send("POST", `/api/groups/${enc}/reset`, resetBody(false)));
    }));
    onSubmit("reset-form", "Resetting offsets", async () => {
      const body = resetBody(true);
      if (!await confirmAction("Reset offsets", `Commit new offsets for group ${id} on ${body.topic}? Its consumers will start from there.`, null, "Reset offsets")) return null;
      const r = await send("POST", `/api/groups/${enc}/reset`, body);
      showPlan(r);
      return `Reset the offsets of ${id} on ${r.topic}`;
    }, true);
  }
  document.getElementById("delete-group").addEventListener("click", async () => {
    if (!await confirmAction("Delete group", `Delete group ${id} and its committed offsets?`, id)) return;
    if (await act("Deleting the group", async () => { await send("DELETE", `/api/groups/${enc}`); return `Deleted group ${id}`; })) {
      location.hash = "#/groups";
    }
  });
}
