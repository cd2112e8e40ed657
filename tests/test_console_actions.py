"""The console operates: its JSON endpoints change topics, records, groups, stream pools, streams and queues
through the broker's own Kafka handlers and the OCI gateways' own handlers, checked with real clients
(confluent-kafka) and the broker's audit trail. The browser walk of the lab is in test_console_lab.py.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import BrokerProcess, check_no_tracebacks, free_port

COMPARTMENT = "ocid1.compartment.oc1..consoletest"


class Console:
    """The console's JSON API as its page uses it: the CSRF token from /api/session on every request."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.token = self.get("/api/session")["csrf_token"]

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: bool = True,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        h = {"Content-Type": "application/json", **(headers or {})}
        if token and getattr(self, "token", None):
            h["X-CSRF-Token"] = self.token
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                return r.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode(errors="replace")

    def get(self, path: str) -> Any:
        status, body = self.call("GET", path)
        assert status == 200, (path, status, body)
        return body

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, out = self.call(method, path, body)
        assert 200 <= status < 300, (method, path, status, out)
        return out


def audit(b: BrokerProcess, **match: Any) -> list[dict[str, Any]]:
    """Records of the broker's audit file whose fields (``resource`` by its name) equal ``match``."""
    path = b.data_dir / "audit.log"
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            flat = {**rec, "resource_name": rec["resource"]["name"], "resource_type": rec["resource"]["type"]}
            if all(flat.get(k) == v for k, v in match.items()):
                out.append(rec)
    return out


def wait_audit(b: BrokerProcess, **match: Any) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        got = audit(b, **match)
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def start_console(root: Path, *overrides: str) -> tuple[BrokerProcess, Console]:
    port = free_port()
    b = BrokerProcess(
        root / "data", root / "broker.log", [f"console.listener=http://127.0.0.1:{port}", *overrides]
    )
    b.start()
    return b, Console(f"http://127.0.0.1:{port}")


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BrokerProcess, Console]]:
    b, c = start_console(tmp_path_factory.mktemp("console-actions"))
    yield b, c
    b.stop()
    check_no_tracebacks(b)


@pytest.fixture(scope="module")
def oci(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BrokerProcess, Console]]:
    b, c = start_console(tmp_path_factory.mktemp("console-oci"), "profile=oci")
    yield b, c
    b.stop()
    check_no_tracebacks(b)


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------------------------------ topics, records


def test_topic_lifecycle_through_the_kafka_handlers(plain: tuple[BrokerProcess, Console]) -> None:
    from confluent_kafka.admin import AdminClient, ConfigResource

    b, c = plain
    topic = uniq("ops")
    made = c.ok(
        "POST", "/api/topics", {"name": topic, "partitions": 2, "configs": {"retention.ms": "3600000"}}
    )
    assert made["partitions"] == 2
    # The same refusal a Kafka client gets, with Kafka's error name and the broker's message.
    status, err = c.call("POST", "/api/topics", {"name": topic, "partitions": 2})
    assert status == 409 and err["code"] == "TOPIC_ALREADY_EXISTS" and topic in err["message"]
    status, err = c.call("POST", "/api/topics", {"name": "bad/name", "partitions": 1})
    assert status == 400 and err["code"] == "INVALID_TOPIC_EXCEPTION"

    # Configs with their sources and defaults, then changed and reset; a Kafka admin client sees the same.
    configs = {x["name"]: x for x in c.get(f"/api/topics/{topic}/configs")["configs"]}
    assert configs["retention.ms"]["value"] == "3600000" and configs["retention.ms"]["is_override"]
    assert configs["retention.ms"]["source"] == "DYNAMIC_TOPIC_CONFIG"
    assert configs["retention.ms"]["default"] == "604800000"
    assert (
        configs["cleanup.policy"]["source"] == "DEFAULT_CONFIG" and configs["cleanup.policy"]["documentation"]
    )
    c.ok(
        "PATCH",
        f"/api/topics/{topic}/configs",
        {"set": {"max.message.bytes": "2000000"}, "delete": ["retention.ms"]},
    )
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    described = admin.describe_configs([res])[res].result(timeout=15)
    assert described["max.message.bytes"].value == "2000000"
    assert described["retention.ms"].value == "604800000" and described["retention.ms"].is_default
    status, err = c.call("PATCH", f"/api/topics/{topic}/configs", {"set": {"no.such.config": "1"}})
    assert status == 400 and err["code"] == "INVALID_CONFIG"

    # Partitions can only grow.
    c.ok("POST", f"/api/topics/{topic}/partitions", {"count": 3})
    status, err = c.call("POST", f"/api/topics/{topic}/partitions", {"count": 2})
    assert status == 400 and err["code"] == "INVALID_PARTITIONS"
    assert admin.list_topics(topic, timeout=10).topics[topic].partitions.keys() == {0, 1, 2}

    # Test messages: partition by key as Kafka's producer does, an explicit partition, headers, binary.
    first = c.ok("POST", f"/api/topics/{topic}/messages", {"key": "k1", "value": '{"n": 1}'})
    again = c.ok("POST", f"/api/topics/{topic}/messages", {"key": "k1", "value": "second"})
    assert first["partition"] == again["partition"] and again["offset"] == first["offset"] + 1
    other = next(p for p in (0, 1, 2) if p != first["partition"])
    binary = c.ok(
        "POST",
        f"/api/topics/{topic}/messages",
        {
            "partition": other,
            "value": "00ff10",
            "value_encoding": "hex",
            "headers": [{"name": "trace", "value": "abc"}],
        },
    )
    assert binary["partition"] == other
    status, err = c.call("POST", f"/api/topics/{topic}/messages", {"partition": 7, "value": "x"})
    assert status == 404 and err["code"] == "UNKNOWN_TOPIC_OR_PARTITION"

    # A confluent-kafka consumer reads what the console produced.
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": b.bootstrap, "group.id": uniq("reader"), "enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition(topic, other, 0)])
        msg = consumer.poll(15)
        assert msg is not None and msg.error() is None
        assert msg.value() == b"\x00\xff\x10" and msg.headers() == [("trace", b"abc")]
    finally:
        consumer.close()

    # Browsing all partitions, and searching by key, header and value text.
    page = c.get(f"/api/topics/{topic}/messages?partition=all")
    assert len(page["messages"]) == 3 and page["partition"] == "all"
    assert {m["value"].get("text") or m["value"].get("base64") for m in page["messages"]} == {
        '{"n": 1}',
        "second",
        "AP8Q",
    }
    by_key = c.get(f"/api/topics/{topic}/messages?partition=all&key=k1")
    assert [m["value"]["text"] for m in by_key["messages"]] == ['{"n": 1}', "second"] and by_key["filtered"]
    by_header = c.get(f"/api/topics/{topic}/messages?partition=all&header=trace%3Dab")
    assert [m["partition"] for m in by_header["messages"]] == [other]
    assert c.get(f"/api/topics/{topic}/messages?partition=all&header=trace%3Dzz")["messages"] == []
    by_value = c.get(f"/api/topics/{topic}/messages?partition=all&q=SECOND")
    assert [m["value"]["text"] for m in by_value["messages"]] == ["second"] and by_value["scanned"] == 3

    # DeleteRecords moves the log start; the browser starts there.
    p = first["partition"]
    low = c.ok("POST", f"/api/topics/{topic}/records/delete", {"partition": p, "offset": first["offset"] + 1})
    assert low["low_watermarks"][str(p)] == first["offset"] + 1
    rest = c.get(f"/api/topics/{topic}/messages?partition={p}&offset=0")
    assert [m["value"]["text"] for m in rest["messages"]] == ["second"]
    status, err = c.call("POST", f"/api/topics/{topic}/records/delete", {"partition": p, "offset": 99})
    assert status == 400 and err["code"] == "OFFSET_OUT_OF_RANGE"

    c.ok("DELETE", f"/api/topics/{topic}")
    assert topic not in admin.list_topics(timeout=10).topics
    status, _ = c.call("DELETE", f"/api/topics/{topic}")
    assert status == 404

    # Every change is in the audit trail once, as the console's (anonymous) caller on the console surface.
    for op in (
        "CreateTopics",
        "IncrementalAlterConfigs",
        "CreatePartitions",
        "DeleteRecords",
        "DeleteTopics",
    ):
        recs = wait_audit(b, surface="console", operation=op, resource_name=topic, result="ok")
        assert len(recs) == 1 and recs[0]["principal"] == "User:ANONYMOUS", (op, recs)
    assert len(wait_audit(b, surface="console", operation="ProduceTestMessage", resource_name=topic)) == 3
    refused = audit(b, surface="console", operation="CreateTopics", resource_name=topic, result="failed")
    assert refused and "TOPIC_ALREADY_EXISTS" in refused[0]["error"]


def test_browsing_pages_and_scan_limits(plain: tuple[BrokerProcess, Console]) -> None:
    _, c = plain
    topic = uniq("pages")
    c.ok("POST", "/api/topics", {"name": topic, "partitions": 1})
    for i in range(12):
        c.ok("POST", f"/api/topics/{topic}/messages", {"partition": 0, "key": f"k{i}", "value": f"v{i}"})
    latest = c.get(f"/api/topics/{topic}/messages?partition=0&limit=5")
    assert [m["offset"] for m in latest["messages"]] == [7, 8, 9, 10, 11]
    page = c.get(f"/api/topics/{topic}/messages?partition=0&offset=2&limit=4")
    assert [m["offset"] for m in page["messages"]] == [2, 3, 4, 5] and page["positions"] == "0:6"
    nxt = c.get(f"/api/topics/{topic}/messages?partition=0&positions={page['positions']}&limit=4")
    assert [m["offset"] for m in nxt["messages"]] == [6, 7, 8, 9]
    # A search scans at most max_scan records per request and says where to go on.
    first = c.get(f"/api/topics/{topic}/messages?partition=0&q=v11&max_scan=5")
    assert first["messages"] == [] and first["scanned"] == 5 and first["more"] and first["positions"] == "0:5"
    on = c.get(f"/api/topics/{topic}/messages?partition=0&q=v11&max_scan=100&positions={first['positions']}")
    assert [m["offset"] for m in on["messages"]] == [11] and not on["more"]
    status, _ = c.call("GET", f"/api/topics/{topic}/messages?partition=x")
    assert status == 400


# ------------------------------------------------------------------------------------------ groups


def test_group_offsets_reset_only_while_empty_and_delete(plain: tuple[BrokerProcess, Console]) -> None:
    from confluent_kafka import Consumer, TopicPartition

    b, c = plain
    topic, group = uniq("reset"), uniq("group")
    c.ok("POST", "/api/topics", {"name": topic, "partitions": 2})
    before = int(time.time() * 1000)
    for i in range(6):
        c.ok("POST", f"/api/topics/{topic}/messages", {"partition": i % 2, "value": f"m{i}"})
    conf = {
        "bootstrap.servers": b.bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
    }
    consumer = Consumer(conf)
    consumer.subscribe([topic])
    got = 0
    deadline = time.monotonic() + 30
    while got < 6:
        assert time.monotonic() < deadline, f"consumed {got} of 6"
        got += sum(1 for m in consumer.consume(10, 0.5) if m.error() is None)
    consumer.commit(asynchronous=False)
    try:
        # With a member in the group, Kafka refuses offsets committed from outside it: so does the console.
        status, err = c.call(
            "POST", f"/api/groups/{group}/reset", {"topic": topic, "to": "earliest", "execute": True}
        )
        assert status == 409 and err["code"] == "UNKNOWN_MEMBER_ID" and "empty" in err["hint"]
        status, err = c.call("DELETE", f"/api/groups/{group}")
        assert status == 409 and err["code"] == "NON_EMPTY_GROUP"
        view = c.get(f"/api/groups/{group}")
        assert view["type"] == "classic" and view["state"] == "Stable" and len(view["members"]) == 1
        # What only members of this group type have: listed as its own fields, and under their own names.
        assert view["members"][0]["details"]["session_timeout_ms"] == 6000
        assert view["members"][0]["session_timeout_ms"] == 6000
        assert {a["topic"] for a in view["members"][0]["assignment"]} == {topic}
    finally:
        consumer.close()

    def committed() -> dict[int, int]:
        probe = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group})
        try:
            parts = probe.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=15)
            return {tp.partition: tp.offset for tp in parts}
        finally:
            probe.close()

    assert committed() == {0: 3, 1: 3}
    deadline = time.monotonic() + 30
    while c.get(f"/api/groups/{group}")["state"] != "Empty":
        assert time.monotonic() < deadline, "the group did not become empty"
        time.sleep(0.2)
    # A preview commits nothing; then each way of resetting.
    preview = c.ok("POST", f"/api/groups/{group}/reset", {"topic": topic, "to": "earliest"})
    assert not preview["executed"] and [(o["before"], o["after"]) for o in preview["offsets"]] == [
        (3, 0),
        (3, 0),
    ]
    assert committed() == {0: 3, 1: 3}
    c.ok("POST", f"/api/groups/{group}/reset", {"topic": topic, "to": "earliest", "execute": True})
    assert committed() == {0: 0, 1: 0}
    c.ok(
        "POST",
        f"/api/groups/{group}/reset",
        {"topic": topic, "to": "offset", "offset": 2, "partitions": [1], "execute": True},
    )
    assert committed() == {0: 0, 1: 2}
    c.ok(
        "POST", f"/api/groups/{group}/reset", {"topic": topic, "to": "offset", "offset": 99, "execute": True}
    )
    assert committed() == {0: 3, 1: 3}  # clamped to the log end, as Kafka's tool does
    c.ok(
        "POST",
        f"/api/groups/{group}/reset",
        {"topic": topic, "to": "timestamp", "timestamp": before, "execute": True},
    )
    assert committed() == {0: 0, 1: 0}
    c.ok("POST", f"/api/groups/{group}/reset", {"topic": topic, "to": "latest", "execute": True})
    assert committed() == {0: 3, 1: 3}
    assert c.get(f"/api/groups/{group}")["lag"] == 0
    status, err = c.call("POST", f"/api/groups/{group}/reset", {"topic": topic, "to": "nowhere"})
    assert status == 400
    recs = wait_audit(b, surface="console", operation="OffsetCommit", resource_name=group, result="ok")
    assert len(recs) == 5 and recs[-1]["after"]
    c.ok("DELETE", f"/api/groups/{group}")
    status, _ = c.call("GET", f"/api/groups/{group}")
    assert status == 404
    assert wait_audit(b, surface="console", operation="DeleteGroups", resource_name=group, result="ok")


# ---------------------------------------------------------------------------------- pools, streams, queues


def test_pools_and_streams_through_the_oci_streaming_handlers(plain: tuple[BrokerProcess, Console]) -> None:
    b, c = plain
    name = uniq("pool")
    pool = c.ok("POST", "/api/oci/20180418/streampools", {"name": name, "compartmentId": COMPARTMENT})
    assert pool["id"].startswith("ocid1.streampool.oc1..") and pool["lifecycleState"] == "CREATING"
    status, err = c.call(
        "POST", "/api/oci/20180418/streampools", {"name": name, "compartmentId": COMPARTMENT}
    )
    assert status == 409 and err["code"] == "Conflict"
    stream = c.ok(
        "POST", "/api/oci/20180418/streams", {"name": "orders", "partitions": 2, "streamPoolId": pool["id"]}
    )
    assert stream["id"].startswith("ocid1.stream.oc1..") and stream["messagesEndpoint"] == ""
    status, err = c.call("POST", "/api/oci/20180418/streams", {"name": "orders", "streamPoolId": pool["id"]})
    assert status == 400 and err["code"] == "InvalidParameter"
    listed = c.get(f"/api/oci/20180418/streams?streamPoolId={pool['id']}")
    assert [s["name"] for s in listed] == ["orders"]
    # The console's views know the stream as a topic of the pool, by its OCID.
    mine = next(p for p in c.get("/api/pools") if p["id"] == pool["id"])
    (s,) = mine["streams"]
    assert s["id"] == stream["id"] and s["partitions"] == 2
    assert c.get("/api/topics/" + s["topic"])["stream"]["id"] == stream["id"]
    # Without a SASL listener no Kafka client can pick this pool: the settings say what to add.
    conn = c.get(f"/api/pools/{pool['id']}/connection")
    assert conn["username_template"] == f"<tenancy>/<user>/{pool['id']}" and conn["properties"] == ""
    assert "SASL" in conn["notes"][0]
    default = next(p for p in c.get("/api/pools") if p["default"])
    dconn = c.get(f"/api/pools/{default['id']}/connection")
    assert dconn["bootstrap_servers"] == b.bootstrap and dconn["security_protocol"] == "PLAINTEXT"
    # Deleting: the stream, then the pool (with what is left in it).
    c.ok("DELETE", f"/api/oci/20180418/streams/{stream['id']}")
    assert c.get(f"/api/oci/20180418/streams/{stream['id']}")["lifecycleState"] == "DELETED"
    c.ok("DELETE", f"/api/oci/20180418/streampools/{pool['id']}")
    status, err = c.call("DELETE", f"/api/oci/20180418/streampools/{default['id']}")
    assert status == 409 and err["code"] == "IncorrectState"
    done = [("CreateStreamPool", pool["id"]), ("CreateStream", "orders"), ("DeleteStream", "orders")]
    for op, rname in [*done, ("DeleteStreamPool", pool["id"])]:
        assert wait_audit(b, surface="console", operation=op, resource_name=rname, result="ok"), op


def test_queues_through_the_oci_queue_handlers(plain: tuple[BrokerProcess, Console]) -> None:
    b, c = plain
    status, body = c.call(
        "POST",
        "/api/oci/20210201/queues",
        {"displayName": uniq("q"), "compartmentId": COMPARTMENT, "deadLetterQueueDeliveryCount": 1},
    )
    assert status == 202 and body is None
    (q,) = [x for x in c.get("/api/queues") if x["dead_letter_after"] == 1 and x["state"] == "ACTIVE"][-1:]
    base = f"/api/oci/20210201/queues/{q['id']}"
    assert c.get(base)["deadLetterQueueDeliveryCount"] == 1
    sent = c.ok(
        "POST", f"{base}/messages", {"messages": [{"content": "hello", "metadata": {"channelId": "eu"}}]}
    )
    mid = sent["messages"][0]["id"]
    assert c.get(f"{base}/channels")["items"] == ["eu"]
    got = c.get(f"{base}/messages?limit=5&visibilityInSeconds=0&timeoutInSeconds=0")["messages"]
    assert [(m["id"], m["deliveryCount"]) for m in got] == [(mid, 1)]
    # Delivered once, visible again at once: the next delivery finds it over the limit and dead-letters it.
    assert c.get(f"{base}/messages?limit=5&visibilityInSeconds=0&timeoutInSeconds=0")["messages"] == []
    stats = c.get(f"{base}/stats")
    assert stats["queue"]["visibleMessages"] == 0 and stats["dlq"]["visibleMessages"] == 1
    dead = c.get(f"{base}/dlq/messages?limit=5&visibilityInSeconds=0&timeoutInSeconds=0")["messages"]
    assert [m["id"] for m in dead] == [mid]
    assert c.ok("POST", f"{base}/dlq/actions/moveBack", {"ids": [mid]}) == {"movedMessages": 1}
    again = c.get(f"{base}/messages?limit=5&visibilityInSeconds=30&timeoutInSeconds=0")["messages"]
    assert [(m["id"], m["deliveryCount"]) for m in again] == [(mid, 1)]
    c.ok("DELETE", f"{base}/messages/{again[0]['receipt']}")
    c.ok("POST", f"{base}/messages", {"messages": [{"content": "a"}, {"content": "b"}]})
    c.ok("POST", f"{base}/actions/purge", {"purgeType": "NORMAL"})
    assert c.get(f"{base}/stats")["queue"]["visibleMessages"] == 0
    status, err = c.call("POST", f"{base}/actions/purge", {"purgeType": "SOME"})
    assert status == 400 and err["code"] == "InvalidParameter"
    c.ok("DELETE", base)
    assert q["id"] not in [x["id"] for x in c.get("/api/queues")]
    for op in (
        "CreateQueue",
        "MoveBack",
        "PurgeQueue",
        "DeleteQueue",
        "PutMessages",
        "GetMessages",
        "DeleteMessage",
    ):
        recs = wait_audit(b, surface="console", operation=op)
        assert recs and recs[-1]["principal"] == "User:ANONYMOUS", op


# ---------------------------------------------------------------------------------- CSRF, profile limits


def test_every_change_needs_the_console_token_and_origin(plain: tuple[BrokerProcess, Console]) -> None:
    _, c = plain
    topic = uniq("csrf")
    status, _ = c.call("POST", "/api/topics", {"name": topic}, token=False)
    assert status == 403
    status, _ = c.call("GET", "/api/oci/20210201/queues?compartmentId=x", token=False)
    assert status == 403  # a queue's GetMessages changes state: the whole OCI API asks for the token
    status, _ = c.call(
        "POST", "/api/topics", {"name": topic}, headers={"X-CSRF-Token": "forged"}, token=False
    )
    assert status == 403
    status, _ = c.call("POST", "/api/topics", {"name": topic}, headers={"Origin": "http://evil.example"})
    assert status == 403
    assert topic not in [t["name"] for t in c.get("/api/topics")]
    c.ok("POST", "/api/topics", {"name": topic})
    status, _ = c.call("POST", "/api/topics", "not an object")
    assert status == 400


def test_the_oci_profile_limits_apply_to_console_changes(oci: tuple[BrokerProcess, Console]) -> None:
    _, c = oci
    pool = c.ok("POST", "/api/oci/20180418/streampools", {"name": uniq("p"), "compartmentId": COMPARTMENT})
    status, err = c.call(
        "POST",
        "/api/oci/20180418/streams",
        {"name": "long", "partitions": 1, "streamPoolId": pool["id"], "retentionInHours": 200},
    )
    assert status == 400 and "168" in err["message"]
    ok = c.ok(
        "POST",
        "/api/oci/20180418/streams",
        {"name": "week", "partitions": 1, "streamPoolId": pool["id"], "retentionInHours": 168},
    )
    assert ok["retentionInHours"] == 168
    assert c.get("/api/overview")["limits"]["retention_hours"] == [24, 168]
    # The Kafka side of the profile, as a Kafka client meets it.
    status, err = c.call(
        "POST", "/api/topics", {"name": uniq("short"), "configs": {"retention.ms": "3600000"}}
    )
    assert status == 400 and err["code"] == "POLICY_VIOLATION" and "24 and 168" in err["message"]
    status, err = c.call(
        "POST", "/api/topics", {"name": uniq("compact"), "configs": {"cleanup.policy": "compact"}}
    )
    assert status == 400 and err["code"] == "POLICY_VIOLATION"
    topic = uniq("fixed")
    c.ok(
        "POST",
        "/api/topics",
        {"name": topic, "partitions": 1, "configs": {"retention.ms": str(48 * 3600_000)}},
    )
    status, err = c.call("POST", f"/api/topics/{topic}/partitions", {"count": 2})
    assert status == 400 and err["code"] == "POLICY_VIOLATION"
    status, err = c.call(
        "PATCH", f"/api/topics/{topic}/configs", {"set": {"retention.ms": str(72 * 3600_000)}}
    )
    assert status == 400 and err["code"] == "POLICY_VIOLATION"
    big = "x" * (1024 * 1024 + 10)
    status, err = c.call("POST", f"/api/topics/{topic}/messages", {"partition": 0, "value": big})
    assert status == 400
