"""Share groups on the PostgreSQL engine: one broker keeps share-partition state in the database across a
``kill -9``; with two brokers the group is coordinated by the group placement, each share-partition is served
by its partition's leader, and when a broker is killed mid-stream the survivor takes its share-partitions over
from the shared journal: no accepted record delivered again, none lost, delivery counts continued."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import REPO, BrokerProcess, create_topic, stop_all
from test_pg_support import pg_server

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import Producer, ShareConsumer  # noqa: E402
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType  # noqa: E402

WORKER = """
import json, sys, time
from confluent_kafka import ShareConsumer
bs, group, topic, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
c = ShareConsumer({"bootstrap.servers": bs, "group.id": group, "share.acknowledgement.mode": "explicit",
                   "max.poll.records": 25})
c.subscribe([topic])
done = 0
while True:
    msgs = [m for m in c.poll(0.5) if m.error() is None]
    if not msgs:
        continue
    got = [[m.partition(), m.offset(), m.delivery_count()] for m in msgs]
    if done == rounds:
        print(json.dumps({"held": got}), flush=True)
        time.sleep(3600)
    for m in msgs:
        c.acknowledge(m)
    if all(e is None for e in c.commit_sync(20).values()):
        print(json.dumps({"accepted": got}), flush=True)
    done += 1
"""


@pytest.fixture
def pg_brokers(tmp_path: Path) -> Iterator[Callable[[int], list[BrokerProcess]]]:
    started: list[BrokerProcess] = []
    dsn = pg_server().new_database("share")

    def start(n: int) -> list[BrokerProcess]:
        for node in range(1, n + 1):
            b = BrokerProcess(
                tmp_path / f"data{node}",
                tmp_path / f"broker{node}.log",
                [
                    f"storage.engine={dsn}",
                    f"node.id={node}",
                    "cluster.heartbeat.interval.ms=200",
                    "cluster.session.timeout.ms=1500",
                    "group.share.session.timeout.ms=6000",
                    "group.share.min.session.timeout.ms=1000",
                    "group.share.heartbeat.interval.ms=300",
                    "group.share.min.heartbeat.interval.ms=100",
                ],
            )
            started.append(b)
            b.start()
        return started

    yield start
    stop_all(started)


def earliest(bs: str, group: str) -> None:
    admin = AdminClient({"bootstrap.servers": bs})
    entries = [
        ConfigEntry("share.auto.offset.reset", "earliest", incremental_operation=AlterConfigOpType.SET)
    ]
    res = ConfigResource(ResourceType.GROUP, group, incremental_configs=entries)
    admin.incremental_alter_configs([res])[res].result(timeout=30)


def produce_all(bs: str, topic: str, partitions: int, per_partition: int) -> set[tuple[int, int]]:
    p = Producer({"bootstrap.servers": bs, "linger.ms": 5, "batch.num.messages": 25})
    for part in range(partitions):
        for i in range(per_partition):
            p.produce(topic, f"{part}-{i}".encode(), partition=part)
    assert p.flush(30) == 0
    return {(part, i) for part in range(partitions) for i in range(per_partition)}


def run_worker(
    tmp_path: Path, bs: str, group: str, topic: str, rounds: int
) -> tuple[list[tuple[int, int]], list[list[int]], subprocess.Popen[str]]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    proc = subprocess.Popen(
        [sys.executable, str(script), bs, group, topic, str(rounds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    accepted: list[tuple[int, int]] = []
    held: list[list[int]] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if "accepted" in event:
            accepted += [(p, o) for p, o, _ in event["accepted"]]
        else:
            held = event["held"]
            break
    return accepted, held, proc


def consume_rest(
    bs: str, group: str, topic: str, expected: int, timeout: float = 90
) -> dict[tuple[int, int], int]:
    c = ShareConsumer({"bootstrap.servers": bs, "group.id": group, "share.acknowledgement.mode": "explicit"})
    c.subscribe([topic])
    got: dict[tuple[int, int], int] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(got) < expected and time.monotonic() < deadline:
            msgs = [m for m in c.poll(0.5) if m.error() is None]
            for m in msgs:
                key = (m.partition(), m.offset())
                assert key not in got, f"{key} delivered twice"
                got[key] = m.delivery_count()
                c.acknowledge(m)
            if msgs:
                c.commit_sync(20)
    finally:
        c.close()
    return got


def check(
    total: set[tuple[int, int]],
    accepted: list[tuple[int, int]],
    held: list[list[int]],
    again: dict[tuple[int, int], int],
) -> None:
    assert not set(again) & set(accepted), "an accepted record was delivered again"
    assert set(again) | set(accepted) == total, "a record was lost"
    for part, offset, count in held:
        assert count == 1 and again[(part, offset)] == 2, (part, offset, again.get((part, offset)))


def test_one_broker_keeps_share_state_in_the_database_through_kill9(
    pg_brokers: Callable[[int], list[BrokerProcess]], topic_name: str, tmp_path: Path
) -> None:
    (broker,) = pg_brokers(1)
    bs = broker.bootstrap
    create_topic(bs, topic_name, 1)
    group = "pg-share"
    earliest(bs, group)
    total = produce_all(bs, topic_name, 1, 200)
    accepted, held, proc = run_worker(tmp_path, bs, group, topic_name, 3)
    try:
        assert accepted and held
        broker.kill9()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    broker.start()
    again = consume_rest(bs, group, topic_name, len(total) - len(accepted))
    check(total, accepted, held, again)


def test_two_brokers_share_partitions_move_with_leadership(
    pg_brokers: Callable[[int], list[BrokerProcess]], topic_name: str, tmp_path: Path
) -> None:
    brokers = pg_brokers(2)
    bs = ",".join(b.bootstrap for b in brokers)
    create_topic(brokers[0].bootstrap, topic_name, 4)
    group = "pg-share-two"
    earliest(brokers[0].bootstrap, group)
    total = produce_all(bs, topic_name, 4, 60)
    accepted, held, proc = run_worker(tmp_path, bs, group, topic_name, 4)
    try:
        assert accepted and held
        brokers[1].kill9()  # its partitions, and perhaps the group, move to the survivor
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    time.sleep(2.5)  # the survivor notices the dead broker (cluster.session.timeout.ms) and takes over
    again = consume_rest(brokers[0].bootstrap, group, topic_name, len(total) - len(accepted))
    check(total, accepted, held, again)
