// kafkite web console: stream pools and streams as OCI's console offers them, through the OCI Streaming API
// the console serves under /api/oci (the REST gateway's own handlers).
"use strict";

const DEFAULT_COMPARTMENT = "ocid1.compartment.oc1..kafkite";

function retentionHint() {
  const l = overviewInfo && overviewInfo.limits;
  return l && l.profile === "oci" ? `${l.retention_hours[0]}-${l.retention_hours[1]} hours (OCI profile)` : "hours";
}

async function poolsPage() {
  const pools = await api("/api/pools");
  const form = `<form id="create-pool-form" class="form">
      ${field("pool-name", "Name", input("pool-name", 'required maxlength="255" placeholder="lab-pool"'))}
      ${field("pool-compartment", "Compartment OCID", input("pool-compartment", `required value="${DEFAULT_COMPARTMENT}"`))}
      ${field("pool-partitions", "Default partitions", input("pool-partitions", 'type="number" min="1" value="1"'), "of streams Kafka clients auto-create")}
      ${field("pool-retention", "Default retention", input("pool-retention", 'type="number" min="1" value="24"'), esc(retentionHint()))}
      <label class="check"><input type="checkbox" id="pool-autocreate"> Kafka clients may auto-create streams</label>
      <div class="buttons"><button type="submit" id="create-pool">Create stream pool</button></div></form>`;
  view.innerHTML = "<h1>Stream pools</h1>" + panel("create-pool-panel", "Create a stream pool", form) +
    (pools.map(p => `<h2>${poolLink(p.id, p.name)} ${p.default ? '<span class="tag">default</span>' : ""} ${tag(p.state)}</h2>
    <p class="muted">${ocid(p.id)}</p>` + table(["Stream", "Topic", "#Partitions", "#Retention (h)", "#Messages", "#Size"],
    p.streams.map(s => `<tr data-stream="${esc(s.name)}">${td(esc(s.name))}${td(topicLink(s.topic))}${td(s.partitions, "num")}${td(s.retention_hours, "num")}
      ${td(num(s.messages), "num")}${td(bytes(s.size_bytes), "num")}</tr>`))).join("") || '<p class="muted">none</p>');
  onSubmit("create-pool-form", "Creating the stream pool", async () => {
    const pool = await send("POST", `${OCI_STREAMING}/streampools`, {
      name: valueOf("pool-name"), compartmentId: valueOf("pool-compartment"),
      kafkaSettings: { numPartitions: Number(valueOf("pool-partitions") || 1), logRetentionHours: Number(valueOf("pool-retention") || 24),
        autoCreateTopicsEnable: document.getElementById("pool-autocreate").checked } });
    location.hash = "#/pools/" + encodeURIComponent(pool.id);
    return `Created stream pool ${pool.name}`;
  });
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (e) {  // no clipboard API outside secure contexts: copy from a selection instead
    const area = document.createElement("textarea");
    area.value = text; document.body.appendChild(area); area.select();
    document.execCommand("copy"); area.remove();
  }
  button.textContent = "Copied";
  setTimeout(() => { button.textContent = "Copy"; }, 1500);
}

async function poolPage(id) {
  const enc = encodeURIComponent(id);
  const [pool, pools, conn] = await Promise.all([
    api(`${OCI_STREAMING}/streampools/${enc}`), api("/api/pools"), api(`/api/pools/${enc}/connection`)]);
  const mine = pools.find(p => p.id === id) || { streams: [] };
  const streams = mine.streams.map(s => `<tr data-stream="${esc(s.name)}" data-stream-id="${esc(s.id)}">${td(esc(s.name))}${td(ocid(s.id))}
    ${td(s.partitions, "num")}${td(s.retention_hours, "num")}${td(num(s.messages), "num")}
    ${td(s.messages_endpoint ? `<code>${esc(s.messages_endpoint)}</code>` : '<span class="muted">REST gateway off</span>')}
    ${td(`${topicLink(s.topic)}`)}<td class="nowrap"><a href="#/topics/${encodeURIComponent(s.topic)}?browse=1" class="button small secondary">Messages</a>
      <button type="button" class="small danger" data-delete-stream="${esc(s.id)}" data-name="${esc(s.name)}">Delete</button></td></tr>`);
  const ks = pool.kafkaSettings || {};
  const notes = conn.notes.map(n => `<p class="warning">${esc(n)}</p>`).join("");
  const settings = `<div class="settings">
      <dl class="details"><dt>bootstrap servers</dt><dd id="conn-bootstrap">${esc(conn.bootstrap_servers || "-")}</dd>
        <dt>security protocol</dt><dd id="conn-protocol">${esc(conn.security_protocol || "-")}</dd>
        <dt>SASL mechanism</dt><dd id="conn-mechanism">${esc(conn.sasl_mechanism || "-")}</dd>
        <dt>user name</dt><dd><code id="conn-username">${esc(conn.username_template)}</code></dd>
        <dt>password</dt><dd class="muted">${esc(conn.password_hint)}</dd></dl>${notes}
      <h3>Client configuration (librdkafka, confluent-kafka, kcat -F) <button type="button" class="small secondary" id="copy-properties">Copy</button></h3>
      <pre class="code" id="connection-properties">${esc(conn.properties)}</pre>
      <h3>Java client properties <button type="button" class="small secondary" id="copy-java">Copy</button></h3>
      <pre class="code" id="connection-java">${esc(conn.java_properties)}</pre></div>`;
  const hint = retentionHint();
  const streamForm = `<form id="create-stream-form" class="form">
      ${field("stream-name", "Name", input("stream-name", 'required placeholder="orders"'))}
      ${field("stream-partitions", "Partitions", input("stream-partitions", 'type="number" min="1" value="1" required'))}
      ${field("stream-retention", "Retention", input("stream-retention", `type="number" min="1" value="24"`), esc(hint))}
      <div class="buttons"><button type="submit" id="create-stream">Create stream</button></div></form>`;
  view.innerHTML = `<div class="title"><h1>Stream pool ${esc(pool.name)}</h1>
      <div class="actions">${mine.default ? "" : '<button type="button" id="delete-pool" class="danger">Delete stream pool</button>'}</div></div>
    <dl class="details"><dt>OCID</dt><dd>${ocid(pool.id)}</dd><dt>state</dt><dd>${tag(pool.lifecycleState)}</dd>
      <dt>compartment</dt><dd>${ocid(pool.compartmentId)}</dd><dt>created</dt><dd>${esc(pool.timeCreated)}</dd>
      <dt>default partitions</dt><dd>${esc(ks.numPartitions)}</dd><dt>default retention</dt><dd>${esc(ks.logRetentionHours)} h</dd>
      <dt>auto-create topics</dt><dd>${ks.autoCreateTopicsEnable ? "yes" : "no"}</dd></dl>
    <h2>Kafka connection settings</h2>${settings}
    <h2>Streams</h2>${panel("create-stream-panel", "Create a stream", streamForm)}
    ${table(["Stream", "OCID", "#Partitions", "#Retention (h)", "#Messages", "Messages endpoint", "Topic", ""], streams, 'id="streams"')}`;
  document.getElementById("copy-properties").addEventListener("click", ev => copyText(conn.properties, ev.target));
  document.getElementById("copy-java").addEventListener("click", ev => copyText(conn.java_properties, ev.target));
  onSubmit("create-stream-form", "Creating the stream", async () => {
    const s = await send("POST", `${OCI_STREAMING}/streams`, {
      name: valueOf("stream-name"), partitions: Number(valueOf("stream-partitions")), streamPoolId: id,
      retentionInHours: valueOf("stream-retention") ? Number(valueOf("stream-retention")) : null });
    return `Created stream ${s.name} (${s.id})`;
  }, true);
  onClick("button[data-delete-stream]", async btn => {
    const name = btn.dataset.name;
    if (!await confirmAction("Delete stream", `Delete stream ${name} and all its messages?`, name)) return;
    if (await act("Deleting the stream", async () => {
      await send("DELETE", `${OCI_STREAMING}/streams/${encodeURIComponent(btn.dataset.deleteStream)}`);
      return `Deleted stream ${name}`;
    })) await rerender();
  });
  const del = document.getElementById("delete-pool");
  if (del) del.addEventListener("click", async () => {
    if (!await confirmAction("Delete stream pool", `Delete stream pool ${pool.name} with all its streams?`, pool.name)) return;
    if (await act("Deleting the stream pool", async () => { await send("DELETE", `${OCI_STREAMING}/streampools/${enc}`); return `Deleted stream pool ${pool.name}`; })) {
      location.hash = "#/pools";
    }
  });
}
