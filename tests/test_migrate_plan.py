"""``kafkite migrate plan`` against a seeded kafkite source: every blocker named, partitions from rates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from confluent_kafka import Producer
from helpers import BrokerFactory
from test_migrate_support import MB, RateProducer, check_no_tracebacks, create_topic, record, run, run_cli

from kafkite.client import KafkaClient
from kafkite.protocol.records import build_batch

pytestmark = pytest.mark.timeout(180)
DAY_MS = 24 * 3_600_000
CLICKS_RATE = 2.7 * MB  # about 3 MB/s: needs 3 partitions of 1 MB/s


def produce_transactional(bootstrap: str, topic: str) -> str:
    """A transactional write: a crafted transactional batch if the broker takes it, else a transaction."""

    async def raw() -> int:
        async with KafkaClient(bootstrap) as c:
            await c.refresh_metadata([topic])
            batch = build_batch(
                [record(i) for i in range(5)],
                producer_id=4242,
                producer_epoch=0,
                base_sequence=0,
                transactional=True,
            )
            got = await c.produce(topic, {0: batch}, transactional_id="payments-tx")
            return got[0].error_code

    if run(raw()) == 0:
        return "raw"
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": "payments-tx", "linger.ms": 0})
    p.init_transactions(20)
    p.begin_transaction()
    for i in range(5):
        p.produce(topic, key=f"k{i}".encode(), value=b"paid", partition=0)
    p.commit_transaction(20)
    return "transaction"


async def seed(bootstrap: str) -> None:
    async with KafkaClient(bootstrap) as c:
        await create_topic(c, "profiles", 2, {"cleanup.policy": "compact"})
        await create_topic(c, "uploads", 1, {"max.message.bytes": str(3 * MB)})
        await create_topic(c, "audit", 2, {"retention.ms": str(12 * DAY_MS)})
        await create_topic(c, "orders", 3)
        await create_topic(c, "payments", 1)
        await create_topic(c, "clicks", 1)
        for p in range(2):
            got = await c.produce("profiles", {p: build_batch([record(i) for i in range(50)])})
            assert got[p].error_code == 0
        for _ in range(2):
            got = await c.produce("uploads", {0: build_batch([record(1, 2 * MB)])})
            assert got[0].error_code == 0, got
        for p in range(3):
            assert (await c.produce("orders", {p: build_batch([record(i) for i in range(100)])}))[
                p
            ].error_code == 0
        assert (await c.produce("audit", {0: build_batch([record(1)])}))[0].error_code == 0
        # 60 consumer groups on one topic, committed through the coordinator.
        for g in range(60):
            errs = await c.commit_offsets(
                f"orders-svc-{g:02d}", {("orders", p): (10 + g, None) for p in range(3)}
            )
            assert not any(errs.values()), errs
        errs = await c.commit_offsets("clicks-analytics", {("clicks", 0): (0, None)})
        assert not any(errs.values())


def test_plan_names_blockers_and_sizes_partitions(broker_factory: BrokerFactory, tmp_path: Path) -> None:
    src = broker_factory()
    run(seed(src.bootstrap))
    how = produce_transactional(src.bootstrap, "payments")
    out = tmp_path / "plan"
    with RateProducer(src.bootstrap, "clicks", CLICKS_RATE, group="clicks-analytics") as producer:
        proc = run_cli("plan", "--source", src.bootstrap, "--window", "5", "--out", str(out), timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert producer.sent > 0
    assert "sampling [" in proc.stderr and "100.0%" in proc.stderr  # the progress bar
    plan = json.loads((tmp_path / "plan.json").read_text())
    md = (tmp_path / "plan.md").read_text()

    found = {(f["code"], f["topic"]): f for f in plan["findings"]}
    expect = {
        ("COMPACTED_TOPIC", "profiles"): "blocker",
        ("MESSAGE_TOO_LARGE", "uploads"): "blocker",
        ("TOO_MANY_GROUPS", "orders"): "blocker",
        ("TRANSACTIONS", "payments"): "blocker",
        ("RETENTION_REDUCED", "audit"): "high",
        ("PARTITIONS_FOR_THROUGHPUT", "clicks"): "high",
        ("PARTITIONS_FIXED", "clicks"): "medium",
    }
    for key, severity in expect.items():
        assert key in found, f"{key} missing from {sorted(found)} (transactional write: {how})"
        assert found[key]["severity"] == severity
        assert found[key]["fix"]
        assert key[0] in md
    # Nothing is flagged that is not there.
    assert not [k for k in found if k[0] == "COMPACTED_TOPIC" and k[1] != "profiles"]
    assert not [k for k in found if k[0] == "TOO_MANY_GROUPS" and k[1] != "orders"]
    assert not [k for k in found if k[0] == "MESSAGE_TOO_LARGE" and k[1] != "uploads"]
    assert "60 consumer groups" in found[("TOO_MANY_GROUPS", "orders")]["message"]

    streams = {s["name"]: s for s in plan["streams"]}
    assert set(streams) == {"profiles", "uploads", "audit", "orders", "payments", "clicks"}
    clicks = streams["clicks"]
    assert 2.2 * MB < clicks["write_bytes_per_sec"] < 3.0 * MB, clicks
    assert clicks["partitions_required"] == 3 and clicks["partitions"] == 3
    # The group keeps up: the fetch rate seen from its commits matches the produce rate.
    assert (
        0.8 * clicks["write_bytes_per_sec"]
        < clicks["read_bytes_per_sec"]
        < 1.2 * clicks["write_bytes_per_sec"]
    )
    assert streams["orders"]["partitions"] == 3 and streams["orders"]["groups"] == 60
    assert (
        streams["audit"]["retention_hours"] == 168 and streams["audit"]["source_retention_ms"] == 12 * DAY_MS
    )
    assert streams["uploads"]["max_record_bytes"] >= 2 * MB
    assert streams["payments"]["transactional"]
    assert streams["profiles"]["cleanup_policy"] == "compact"
    for s in streams.values():
        assert 24 <= s["retention_hours"] <= 168
    assert plan["pools"][0]["streams"] and len(plan["pools"]) == 1
    groups = {g["group_id"]: g for g in plan["groups"]}
    analytics = groups["clicks-analytics"]["topics"]["clicks"]
    assert analytics["read_msgs_per_sec"] > 0 and analytics["lag"] <= 10
    assert len([g for g in groups if g.startswith("orders-svc-")]) == 60
    assert groups["orders-svc-05"]["topics"]["orders"]["lag"] == 3 * (100 - 15)
    assert plan["summary"]["blocker"] >= 4
    assert "| clicks |" in md and "## OCI limits used" in md
    check_no_tracebacks(src)
