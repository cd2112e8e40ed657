// kafkite web console: queues as OCI Queue's console offers them, through the OCI Queue API the console serves
// under /api/oci (the REST gateway's own handlers).
"use strict";

async function queuesPage() {
  const qs = await api("/api/queues");
  const part = s => s ? `${num(s.visibleMessages)} / ${num(s.inFlightMessages)} / ${bytes(s.sizeInBytes)}` : "-";
  const rows = qs.map(q => `<tr data-queue="${esc(q.id)}">${td(queueLink(q.id, q.name))}${td(tag(q.state))}${td(part(q.queue), "num")}${td(part(q.dlq), "num")}
    ${td(q.visibility_s, "num")}${td(q.retention_s, "num")}${td(q.dead_letter_after, "num")}</tr>`);
  const form = `<form id="create-queue-form" class="form">
      ${field("queue-name", "Name", input("queue-name", 'required placeholder="lab-queue"'))}
      ${field("queue-compartment", "Compartment OCID", input("queue-compartment", `required value="${DEFAULT_COMPARTMENT}"`))}
      ${field("queue-visibility", "Visibility timeout (s)", input("queue-visibility", 'type="number" min="0" max="43200" value="30"'), "how long a received message stays hidden from others")}
      ${field("queue-retention", "Retention (s)", input("queue-retention", 'type="number" min="10" max="604800" value="86400"'))}
      ${field("queue-dlq", "Dead letter after deliveries", input("queue-dlq", 'type="number" min="0" max="20" value="0"'), "0: no dead letter queue")}
      ${field("queue-timeout", "Receive wait (s)", input("queue-timeout", 'type="number" min="0" max="30" value="30"'), "how long GetMessages waits for a message")}
      ${field("queue-channels", "Channel consumption limit (%)", input("queue-channels", 'type="number" min="1" max="100" value="100"'), "of the queue's storage one channel may take")}
      <div class="buttons"><button type="submit" id="create-queue">Create queue</button></div></form>`;
  view.innerHTML = `<h1>Queues</h1>${panel("create-queue-panel", "Create a queue", form)}<p class="muted">visible / in flight / size</p>
    ${table(["Queue", "State", "#Messages", "#Dead letters", "#Visibility (s)", "#Retention (s)", "#Dead letter after"], rows, 'id="queues"')}`;
  onSubmit("create-queue-form", "Creating the queue", async () => {
    const name = valueOf("queue-name");
    const r = await request("POST", `${OCI_QUEUE}/queues`, {
      displayName: name, compartmentId: valueOf("queue-compartment"),
      visibilityInSeconds: Number(valueOf("queue-visibility")), retentionInSeconds: Number(valueOf("queue-retention")),
      deadLetterQueueDeliveryCount: Number(valueOf("queue-dlq")), timeoutInSeconds: Number(valueOf("queue-timeout")),
      channelConsumptionLimit: Number(valueOf("queue-channels")) }, true);
    const wr = await api(`${OCI_QUEUE}/workRequests/${encodeURIComponent(r.headers.get("opc-work-request-id"))}`);
    location.hash = "#/queues/" + encodeURIComponent(wr.resources[0].identifier);
    return `Created queue ${name}`;
  });
}

function deliveriesTable(id, messages, dlq) {
  const rows = messages.map(m => `<tr data-message="${m.id}">${td(m.id, "num")}<td class="value"><pre>${esc(m.content)}</pre></td>
    ${td(esc((m.metadata && m.metadata.channelId) || "-"))}${td(m.deliveryCount, "num")}${td(esc(m.visibleAfter))}
    <td class="nowrap">${dlq ? `<button type="button" class="small" data-move-back="${m.id}">Move back</button>`
      : `<button type="button" class="small secondary" data-delete-receipt="${esc(m.receipt)}">Delete</button>`}</td></tr>`);
  return table(["#Id", "Content", "Channel", "#Deliveries", "Visible after", ""], rows, `id="${id}"`);
}

async function queuePage(id) {
  const base = `${OCI_QUEUE}/queues/${encodeURIComponent(id)}`;
  const [q, stats, channels] = await Promise.all([api(base), api(`${base}/stats`), api(`${base}/channels`)]);
  const s = x => `${num(x.visibleMessages)} visible · ${num(x.inFlightMessages)} in flight · ${bytes(x.sizeInBytes)}`;
  const sendForm = `<form id="send-form" class="form">
      ${field("send-content", "Content", '<textarea id="send-content" rows="3" required></textarea>')}
      ${field("send-channel", "Channel", input("send-channel", 'placeholder="none"'))}
      <div class="buttons"><button type="submit" id="send-message">Send</button></div></form>`;
  const receiveForm = `<form id="receive-form" class="form">
      ${field("receive-limit", "At most", input("receive-limit", 'type="number" min="1" max="32" value="10"'))}
      ${field("receive-visibility", "Hide for (s)", input("receive-visibility", `type="number" min="0" max="43200" value="${q.visibilityInSeconds}"`), "0: visible again at once")}
      ${field("receive-channel", "Channel filter", input("receive-channel", 'placeholder="any"'))}
      <div class="buttons"><button type="submit" id="receive-messages">Receive</button></div></form>
      <div id="received"></div>`;
  const purgeForm = `<form id="purge-form" class="form">
      ${field("purge-type", "Purge", '<select id="purge-type"><option value="NORMAL">the queue</option><option value="DLQ">the dead letter queue</option><option value="BOTH">both</option></select>')}
      <div class="buttons"><button type="submit" id="purge" class="danger">Purge</button></div></form>`;
  view.innerHTML = `<div class="title"><h1>Queue ${esc(q.displayName)}</h1>
      <div class="actions"><button type="button" id="delete-queue" class="danger">Delete queue</button></div></div>
    <dl class="details"><dt>OCID</dt><dd>${ocid(q.id)}</dd><dt>state</dt><dd>${tag(q.lifecycleState)}</dd>
      <dt>messages endpoint</dt><dd>${q.messagesEndpoint ? `<code>${esc(q.messagesEndpoint)}</code>` : '<span class="muted">REST gateway off</span>'}</dd>
      <dt>visibility timeout</dt><dd>${esc(q.visibilityInSeconds)} s</dd><dt>retention</dt><dd>${esc(q.retentionInSeconds)} s</dd>
      <dt>dead letter after</dt><dd>${q.deadLetterQueueDeliveryCount ? `${esc(q.deadLetterQueueDeliveryCount)} deliver${q.deadLetterQueueDeliveryCount === 1 ? "y" : "ies"}` : "never"}</dd>
      <dt>channel consumption limit</dt><dd>${esc(q.channelConsumptionLimit)} %</dd>
      <dt>messages</dt><dd id="queue-stats">${s(stats.queue)}</dd><dt>dead letters</dt><dd id="dlq-stats">${s(stats.dlq)}</dd>
      <dt>channels</dt><dd id="queue-channels">${channels.items.map(esc).join(", ") || '<span class="muted">none</span>'}</dd></dl>
    <div class="panels">${panel("send-panel", "Send a test message", sendForm, true)}${panel("receive-panel", "Receive messages", receiveForm, true)}
      ${panel("purge-panel", "Purge", purgeForm)}</div>
    <h2>Dead letter queue</h2>
    <div class="buttons"><button type="button" id="view-dlq" class="secondary">Show dead letters</button>
      <button type="button" id="move-all-back" class="secondary">Move all back</button></div>
    <div id="dead-letters"></div>`;

  async function refreshStats() {
    const st = await api(`${base}/stats`);
    document.getElementById("queue-stats").textContent = s(st.queue);
    document.getElementById("dlq-stats").textContent = s(st.dlq);
  }
  onSubmit("send-form", "Sending", async () => {
    const channel = valueOf("send-channel");
    const msg = { content: document.getElementById("send-content").value };
    if (channel) msg.metadata = { channelId: channel };
    const r = await send("POST", `${base}/messages`, { messages: [msg] });
    await refreshStats();
    return `Sent message (id ${r.messages[0].id})`;
  });
  async function receive() {
    const p = new URLSearchParams({ limit: valueOf("receive-limit") || "10", visibilityInSeconds: valueOf("receive-visibility") || "0", timeoutInSeconds: "0" });
    if (valueOf("receive-channel")) p.set("channelFilter", valueOf("receive-channel"));
    const r = await api(`${base}/messages?${p}`);
    document.getElementById("received").innerHTML = `<p class="muted" id="received-count">${r.messages.length} received</p>` + deliveriesTable("received-table", r.messages, false);
    onClick("#received-table button[data-delete-receipt]", async btn => {
      if (await act("Deleting the message", async () => {
        await send("DELETE", `${base}/messages/${encodeURIComponent(btn.dataset.deleteReceipt)}`);
        btn.closest("tr").remove();
        return "Deleted the message";
      })) await refreshStats();
    });
    await refreshStats();
  }
  onSubmit("receive-form", "Receiving", async () => { await receive(); return null; });
  onSubmit("purge-form", "Purging", async () => {
    const type = valueOf("purge-type");
    if (!await confirmAction("Purge", `Delete every message of ${type === "NORMAL" ? "the queue" : type === "DLQ" ? "the dead letter queue" : "the queue and its dead letter queue"}?`, null, "Purge")) return null;
    await send("POST", `${base}/actions/purge`, { purgeType: type });
    await refreshStats();
    return "Purged";
  });
  async function showDeadLetters() {
    // Receiving dead letters with a visibility of 0 shows them and leaves them where they are.
    const r = await api(`${base}/dlq/messages?limit=32&visibilityInSeconds=0&timeoutInSeconds=0`);
    document.getElementById("dead-letters").innerHTML = `<p class="muted" id="dead-letter-count">${r.messages.length} dead letter${r.messages.length === 1 ? "" : "s"} shown</p>` + deliveriesTable("dead-letter-table", r.messages, true);
    onClick("#dead-letter-table button[data-move-back]", async btn => {
      if (await act("Moving the message back", async () => {
        const moved = await send("POST", `${base}/dlq/actions/moveBack`, { ids: [Number(btn.dataset.moveBack)] });
        return `Moved ${moved.movedMessages} message back to the queue`;
      })) { await showDeadLetters(); await refreshStats(); }
    });
  }
  document.getElementById("view-dlq").addEventListener("click", () => act("Reading the dead letter queue", showDeadLetters));
  document.getElementById("move-all-back").addEventListener("click", async () => {
    if (await act("Moving dead letters back", async () => {
      const moved = await send("POST", `${base}/dlq/actions/moveBack`, {});
      return `Moved ${moved.movedMessages} messages back to the queue`;
    })) { await showDeadLetters(); await refreshStats(); }
  });
  document.getElementById("delete-queue").addEventListener("click", async () => {
    if (!await confirmAction("Delete queue", `Delete queue ${q.displayName} and all its messages?`, q.displayName)) return;
    if (await act("Deleting the queue", async () => { await send("DELETE", base); return `Deleted queue ${q.displayName}`; })) {
      location.hash = "#/queues";
    }
  });
}
