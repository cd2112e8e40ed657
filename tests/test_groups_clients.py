"""Real Kafka clients (librdkafka, kafka-python, aiokafka) against a broker with the group coordinator.

The broker runs in a thread of this process; ``kafkite.broker.groups.handlers.attach`` wires the
coordinator in when the broker's own dispatch table does not already.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kafkite.broker.groups.handlers import attach
from kafkite.compose import build_broker
from kafkite.config import BrokerConfig
from kafkite.server.server import KafkaServer

confluent_kafka = pytest.importorskip("confluent_kafka")
kafka = pytest.importorskip("kafka")
aiokafka = pytest.importorskip("aiokafka")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BrokerThread:
    """A broker with the group coordinator, serving from its own event loop in a thread."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"
        config = BrokerConfig(
            {
                "listeners": f"PLAINTEXT://127.0.0.1:{port}",
                "log.dirs": str(data_dir),
                "rest.listeners": "",
                "group.min.session.timeout.ms": "1000",
            }
        )
        self.broker = build_broker(config)
        if self.broker.groups is None:
            attach(self.broker)
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self._ready.wait(10), "broker did not start"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        await self.broker.start()
        server = KafkaServer(self.broker)
        await server.start()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await server.stop()
            await self.broker.stop()

    def stop(self) -> None:
        stop = self._stop
        assert stop is not None
        self.loop.call_soon_threadsafe(stop.set)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerThread]:
    b = BrokerThread(tmp_path, free_port())
    yield b
    if b.thread.is_alive():
        b.stop()


def create_topic(bootstrap: str, name: str, partitions: int, messages: int) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(10)
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(messages):
        producer.produce(name, value=f"m{i}".encode(), partition=i % partitions)
    assert producer.flush(10) == 0


def wait_for(cond: Callable[[], bool], timeout: float, step: Callable[[], Any]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        step()
    return cond()


@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
def test_librdkafka_group_splits_partitions_and_commits(broker: BrokerThread, strategy: str) -> None:
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    topic, group = f"t-{strategy}", f"g-{strategy}"
    create_topic(broker.bootstrap, topic, 4, 40)

    def consumer(name: str) -> Any:
        c = Consumer(
            {
                "bootstrap.servers": broker.bootstrap,
                "group.id": group,
                "client.id": name,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "partition.assignment.strategy": strategy,
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 100,
            }
        )
        c.subscribe([topic])
        return c

    seen: set[tuple[int, int]] = set()

    def poll(*consumers: Any) -> None:
        for c in consumers:
            m = c.poll(0.05)
            if m is not None and not m.error():
                seen.add((m.partition(), m.offset()))
                # A commit racing a rebalance is refused (ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS), as
                # by Kafka; the final commits below settle the offsets.
                with contextlib.suppress(KafkaException):
                    c.commit(message=m, asynchronous=False)

    def commit_positions(c: Any) -> bool:
        try:
            c.commit(asynchronous=False)
        except KafkaException as e:
            return e.args[0].code() == KafkaError._NO_OFFSET
        return True

    c1 = consumer("c1")
    assert wait_for(lambda: len(c1.assignment()) == 4, 10, lambda: poll(c1))
    c2 = consumer("c2")
    try:

        def split() -> bool:
            a1 = {p.partition for p in c1.assignment()}
            a2 = {p.partition for p in c2.assignment()}
            return len(a1) == 2 and len(a2) == 2 and a1.isdisjoint(a2)

        assert wait_for(split, 15, lambda: poll(c1, c2)), (c1.assignment(), c2.assignment())
        assert wait_for(lambda: len(seen) == 40, 15, lambda: poll(c1, c2))
        assert wait_for(lambda: commit_positions(c1) and commit_positions(c2), 15, lambda: poll(c1, c2))
        committed = c1.committed([TopicPartition(topic, p) for p in range(4)], timeout=10)
        assert sorted(tp.offset for tp in committed) == [10, 10, 10, 10]
    finally:
        c2.close()
        c1.close()
    # Both left: the group is empty, its offsets kept.
    groups = {g["group_id"]: g for g in broker.broker.groups.groups_overview()}
    assert groups[group]["state"] == "Empty" and groups[group]["offsets"] == 4


def test_kafka_python_offsets_survive_a_restart(tmp_path: Path) -> None:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.admin import KafkaAdminClient

    port = free_port()
    b = BrokerThread(tmp_path, port)
    try:
        create_topic(b.bootstrap, "events", 2, 20)
        c = KafkaConsumer(
            "events",
            bootstrap_servers=b.bootstrap,
            group_id="kp",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        n = 0
        deadline = time.monotonic() + 15
        while n < 20 and time.monotonic() < deadline:
            n += sum(len(v) for v in c.poll(timeout_ms=200).values())
        assert n == 20
        c.commit()
        c.close()
    finally:
        b.stop()

    b = BrokerThread(tmp_path, port)
    try:
        admin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
        offsets = admin.list_group_offsets("kp")["kp"]
        admin.close()
        assert {tp.partition: om.offset for tp, om in offsets.items()} == {0: 10, 1: 10}
        c = KafkaConsumer(
            "events",
            bootstrap_servers=b.bootstrap,
            group_id="kp",
            enable_auto_commit=False,
            consumer_timeout_ms=1000,
        )
        assert list(c) == []  # resumes after what was committed
        assert c.committed(TopicPartition("events", 0)) == 10
        c.close()
    finally:
        b.stop()


def test_aiokafka_group(broker: BrokerThread) -> None:
    from aiokafka import AIOKafkaConsumer

    create_topic(broker.bootstrap, "aio", 3, 30)

    async def consume() -> int:
        c = AIOKafkaConsumer(
            "aio", bootstrap_servers=broker.bootstrap, group_id="aio-g", auto_offset_reset="earliest"
        )
        await c.start()
        n = 0
        try:
            deadline = time.monotonic() + 15
            while n < 30 and time.monotonic() < deadline:
                batch = await c.getmany(timeout_ms=500)
                n += sum(len(v) for v in batch.values())
            await c.commit()
        finally:
            await c.stop()
        return n

    assert asyncio.run(consume()) == 30
    offsets = broker.broker.groups.committed_offsets("aio-g")
    assert {p: om.offset for (t, p), om in offsets.items() if t == "aio"} == {0: 10, 1: 10, 2: 10}
