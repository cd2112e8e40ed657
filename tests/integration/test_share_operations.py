"""Operating share groups: ``kafkite group list | describe``, the web console's group view, the Prometheus
metrics of share-partitions, ListGroups / DescribeGroups / DeleteGroups on share groups, and the audit trail
of share group offset changes, against ``kafkite serve`` with real share consumers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import BrokerProcess, RawClient, create_topic, free_port

from kafkite.client import KafkaClient
from kafkite.protocol.api_keys import ApiKey
from kafkite.protocol.errors import ErrorCode

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import Producer, ShareConsumer  # noqa: E402
from confluent_kafka.admin import (  # noqa: E402
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BrokerProcess, str, str]]:
    root = tmp_path_factory.mktemp("share-ops")
    console, metrics = free_port(), free_port()
    b = BrokerProcess(
        root / "data",
        root / "broker.log",
        [
            f"console.listener=http://127.0.0.1:{console}",
            f"metrics.listener=http://127.0.0.1:{metrics}",
            "group.share.min.record.lock.duration.ms=1000",
        ],
    )
    b.start()
    yield b, f"http://127.0.0.1:{console}", f"http://127.0.0.1:{metrics}/metrics"
    b.stop()


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def kafkite(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "kafkite.cli", *args], capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout


def earliest(bs: str, group: str) -> None:
    admin = AdminClient({"bootstrap.servers": bs})
    res = ConfigResource(
        ResourceType.GROUP,
        group,
        incremental_configs=[
            ConfigEntry("share.auto.offset.reset", "earliest", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    admin.incremental_alter_configs([res])[res].result(timeout=20)


def test_share_group_in_cli_console_metrics_and_group_apis(
    ops: tuple[BrokerProcess, str, str], attach_broker: Any
) -> None:
    b, console, metrics = ops
    attach_broker(b)
    bs = b.bootstrap
    topic, group = f"ops-{time.monotonic_ns()}", "ops-share"
    create_topic(bs, topic, 2)
    earliest(bs, group)
    p = Producer({"bootstrap.servers": bs})
    for i in range(12):
        p.produce(topic, f"v{i}".encode(), partition=i % 2)
    assert p.flush(20) == 0
    c = ShareConsumer(
        {
            "bootstrap.servers": bs,
            "group.id": group,
            "share.acknowledgement.mode": "explicit",
            "client.id": "ops",
        }
    )
    try:
        c.subscribe([topic])
        got: list[Any] = []
        deadline = time.monotonic() + 20
        while len(got) < 12 and time.monotonic() < deadline:
            msgs = [m for m in c.poll(0.5) if m.error() is None]
            for m in msgs:
                # Accept partition 0's records, reject one, hold the others (acquired, unacknowledged).
                if m.partition() == 0:
                    c.acknowledge(m, 3 if m.offset() == 0 else 1)
                got.append(m)
            if msgs:
                c.commit_sync(20)
            if any(m.partition() == 1 for m in got):
                break
        held = [m for m in got if m.partition() == 1]
        assert held
        # ListGroups (type share) and the CLI.
        listed = json.loads(kafkite("group", "-b", bs, "--json", "list"))
        assert {"group": group, "type": "share", "protocol_type": "share", "state": "Stable"} in listed
        d = json.loads(kafkite("group", "-b", bs, "--json", "describe", group, "--metrics", metrics))
        assert d["type"] == "share" and d["state"] == "Stable" and d["protocol"] == "simple"
        (member,) = d["members"]
        assert member["client_id"] == "ops" and member["assignment"] == [
            {"topic": topic, "partitions": [0, 1]}
        ]
        rows = {r["partition"]: r for r in d["partitions"]}
        assert rows[0]["start_offset"] == 6 and rows[0]["lag"] == 0
        assert rows[0]["accepted"] == 5 and rows[0]["rejected"] == 1 and rows[0]["archived"] == 1
        assert rows[1]["start_offset"] == 0 and rows[1]["in_flight"] == len(held)
        assert rows[1]["lag"] == 6 and rows[1]["delivery_counts"] == {"1": len(held)}
        text = kafkite("group", "-b", bs, "describe", group, "--metrics", metrics)
        assert f"Share group {group}: state Stable" in text and "IN-FLIGHT" in text
        # The console shows the group, its member and its share-partitions.
        g = get(f"{console}/api/groups/{group}")
        assert g["type"] == "share" and g["state"] == "Stable"
        assert g["members"][0]["assignment"] == [{"topic": topic, "partitions": [0, 1]}]
        parts = {s["partition"]: s for s in g["details"]["share_partitions"]}
        assert parts[1]["in_flight"] == len(held) and parts[0]["accepted"] == 5
        assert any(x["group"] == group and x["type"] == "share" for x in get(f"{console}/api/groups"))
        # Prometheus metrics.
        with urllib.request.urlopen(metrics, timeout=10) as r:
            scraped = r.read().decode()
        labels = f'group="{group}",topic="{topic}",partition="0"'
        assert f"kafkite_share_records_accepted_total{{{labels}}} 5" in scraped
        assert f"kafkite_share_records_rejected_total{{{labels}}} 1" in scraped
        assert (
            f'kafkite_share_partition_records{{state="in_flight",group="{group}",topic="{topic}",partition="1"}}'
            in scraped
        )
        # DescribeGroups v6 does not describe share groups; DeleteGroups refuses a group with members.
        with RawClient.to(bs) as raw:
            described = raw.request(
                ApiKey.DESCRIBE_GROUPS, 6, {"groups": [group], "include_authorized_operations": False}
            )
            assert described["groups"][0]["error_code"] == ErrorCode.GROUP_ID_NOT_FOUND
            deleted = raw.request(ApiKey.DELETE_GROUPS, 2, {"groups_names": [group]})
            assert deleted["results"][0]["error_code"] == ErrorCode.NON_EMPTY_GROUP
    finally:
        c.close()
    # Once empty, the group is deleted with its share-partitions.
    deadline = time.monotonic() + 20
    while get(f"{console}/api/groups/{group}")["members"] and time.monotonic() < deadline:
        time.sleep(0.2)
    with RawClient.to(bs) as raw:
        deleted = raw.request(ApiKey.DELETE_GROUPS, 2, {"groups_names": [group]})
        assert deleted["results"][0]["error_code"] == 0

    async def offsets() -> Any:
        async with KafkaClient(bs) as client:
            return await client.describe_share_group(group)

    assert asyncio.run(offsets()) is None


def test_offset_changes_are_in_the_audit_trail(
    ops: tuple[BrokerProcess, str, str], attach_broker: Any
) -> None:
    b, _, _ = ops
    attach_broker(b)
    bs = b.bootstrap
    topic, group = f"audit-{time.monotonic_ns()}", "audit-share"
    create_topic(bs, topic, 1)

    async def change() -> None:
        async with KafkaClient(bs) as client:
            assert await client.alter_share_group_offsets(group, {(topic, 0): 3}) == {(topic, 0): 0}
            assert await client.delete_share_group_offsets(group, [topic]) == {topic: 0}

    asyncio.run(change())
    audit = b.data_dir / "audit.log"
    deadline = time.monotonic() + 10
    records: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        records = [json.loads(line) for line in audit.read_text().splitlines() if group in line]
        if len(records) >= 2:
            break
        time.sleep(0.1)
    alter = next(r for r in records if r["operation"] == "AlterShareGroupOffsets")
    assert alter["result"] == "ok" and alter["after"] == {"start_offsets": {topic: {"0": 3}}}
    delete = next(r for r in records if r["operation"] == "DeleteShareGroupOffsets")
    assert delete["result"] == "ok" and delete["before"]["start_offsets"] == {topic: {"0": 3}}
