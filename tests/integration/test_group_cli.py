"""`kafkite group list | describe` against a live consumer group: members, assignments, offsets and lag."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest
from confluent_kafka import Consumer
from helpers import BrokerProcess, create_topic, produce


def kafkite(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "kafkite.cli", *args], capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_group_describe_shows_members_and_lag_after_producing_more(
    shared_broker: BrokerProcess, protocol: str
) -> None:
    bs = shared_broker.bootstrap
    topic = f"group-cli-{time.monotonic_ns()}"
    group = f"g-{topic}"
    create_topic(bs, topic, partitions=2)
    for p in (0, 1):
        produce(bs, topic, [(b"k", b"v%d" % i) for i in range(10)], partition=p)
    c = Consumer(
        {
            "bootstrap.servers": bs,
            "group.id": group,
            "group.protocol": protocol,
            "client.id": "cli-test",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        c.subscribe([topic])
        got = 0
        deadline = time.monotonic() + 30
        while got < 20 and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                got += 1
        assert got == 20
        c.commit(asynchronous=False)
        # Five more on partition 0, three on partition 1: the group's lag is exactly those.
        produce(bs, topic, [(None, b"more")] * 5, partition=0)
        produce(bs, topic, [(None, b"more")] * 3, partition=1)

        listed = json.loads(kafkite("group", "-b", bs, "--json", "list"))
        assert {"group": group, "type": protocol, "protocol_type": "consumer", "state": "Stable"} in listed

        d: dict[str, Any] = json.loads(kafkite("group", "-b", bs, "--json", "describe", group))
        assert d["state"] == "Stable" and d["protocol_type"] == "consumer" and d["type"] == protocol
        assert len(d["members"]) == 1 and d["members"][0]["client_id"] == "cli-test"
        assert d["members"][0]["assignment"] == [{"topic": topic, "partitions": [0, 1]}]
        rows = {r["partition"]: r for r in d["partitions"]}
        assert {p: (r["committed_offset"], r["log_end_offset"], r["lag"]) for p, r in rows.items()} == {
            0: (10, 15, 5),
            1: (10, 13, 3),
        }
        assert all(r["client_id"] == "cli-test" for r in rows.values())

        table = kafkite("group", "-b", bs, "describe", group)
        assert "LAG" in table and topic in table
    finally:
        c.close()
