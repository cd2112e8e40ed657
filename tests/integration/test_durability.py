"""Durability across restarts and crashes of a real kafkite process."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest
from helpers import (
    SLOW,
    BrokerFactory,
    BrokerProcess,
    consume,
    create_topic,
    produce,
    segment_files,
    watermarks,
)

from kafkite.protocol import records


def test_sigterm_restart_between_produce_and_consume_loses_nothing(broker: BrokerProcess) -> None:
    topic = "durable"
    create_topic(broker.bootstrap, topic, partitions=3)
    sent: dict[int, list[tuple[bytes, bytes]]] = {}
    for p in range(3):
        sent[p] = [(b"k%d-%d" % (p, i), b"v%d-%d" % (p, i) * 10) for i in range(2000)]
        assert produce(broker.bootstrap, topic, sent[p], partition=p, compression_type="lz4") == list(
            range(2000)
        )

    broker.restart()

    for p in range(3):
        got = consume(broker.bootstrap, topic, p)
        assert [(m.offset(), m.key(), m.value()) for m in got] == [
            (i, k, v) for i, (k, v) in enumerate(sent[p])
        ]
    # The log goes on where it stopped.
    assert produce(broker.bootstrap, topic, [(b"after", b"restart")], partition=1) == [2000]
    assert watermarks(broker.bootstrap, topic, 1) == (0, 2001)
    # Topics and their configs survive too.
    create_topic(broker.bootstrap, "with-config", config={"retention.ms": "123456"})
    broker.restart()
    from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    res = ConfigResource(ResourceType.TOPIC, "with-config")
    assert admin.describe_configs([res])[res].result(timeout=10)["retention.ms"].value == "123456"


class AckCollector:
    """A confluent-kafka producer streaming acks=all messages in a thread, keeping each acknowledgement."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, tag: str) -> None:
        from confluent_kafka import Producer

        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "linger.ms": 2,
                "message.timeout.ms": 4000,
                "reconnect.backoff.max.ms": 200,
                "enable.idempotence": False,
            }
        )
        self.topic = topic
        self.partitions = partitions
        self.tag = tag
        self.acked: dict[tuple[int, int], bytes] = {}
        self.failed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is None:
            key = (msg.partition(), msg.offset())
            assert key not in self.acked, f"offset {key} acknowledged twice"
            self.acked[key] = msg.value()
        else:
            self.failed += 1

    def _run(self) -> None:
        i = 0
        while not self.stop.is_set():
            value = b"%s-%d" % (self.tag.encode(), i)
            try:
                self.producer.produce(
                    self.topic, value, b"%d" % i, partition=i % self.partitions, on_delivery=self._on_delivery
                )
                i += 1
            except BufferError:
                self.producer.poll(0.05)
            if i % 100 == 0:
                self.producer.poll(0)
        self.producer.flush(6)
        self.producer.purge()
        self.producer.poll(0)

    def start(self) -> None:
        self.thread.start()

    def wait_acked(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.acked) >= n, f"only {len(self.acked)} acknowledged in {timeout}s"

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


@pytest.mark.slow
def test_kill9_during_acks_all_stream_keeps_every_acknowledged_message(broker_factory: BrokerFactory) -> None:
    broker = broker_factory("log.flush.on.ack=true")
    topic = "acked"
    partitions = 2
    create_topic(broker.bootstrap, topic, partitions=partitions)
    rounds = 5 if SLOW else 1
    acked: dict[tuple[int, int], bytes] = {}
    for r in range(rounds):
        collector = AckCollector(broker.bootstrap, topic, partitions, f"round{r}")
        collector.start()
        try:
            collector.wait_acked(2000, timeout=30)
            broker.kill9()
        finally:
            collector.finish()
        assert not set(collector.acked) & set(acked), "an offset was acknowledged in two rounds"
        acked.update(collector.acked)
        broker.start()
        for p in range(partitions):
            got = {m.offset(): m.value() for m in consume(broker.bootstrap, topic, p)}
            low, high = watermarks(broker.bootstrap, topic, p)
            assert low == 0
            assert sorted(got) == list(range(high)), f"partition {p} has gaps"
            missing = {k: v for k, v in acked.items() if k[0] == p and got.get(k[1]) != v}
            assert not missing, (
                f"{len(missing)} acknowledged messages lost or changed, e.g. {list(missing)[:5]}"
            )
    # And the log is writable after the crash.
    assert produce(broker.bootstrap, topic, [(b"k", b"after-crash")])[0] >= 0


def _valid_batch(base_offset: int) -> bytes:
    return records.build_batch(
        [(b"torn-key", b"torn-value" * 20, [], int(time.time() * 1000))] * 5, base_offset=base_offset
    )


TAILS = {
    "partial-batch": lambda next_offset: _valid_batch(next_offset)[:40],
    "batch-without-last-byte": lambda next_offset: _valid_batch(next_offset)[:-1],
    "garbage": lambda next_offset: b"\xde\xad\xbe\xef" * 25,
    "zeros": lambda next_offset: bytes(4096),
    "bad-crc": lambda next_offset: _flip(_valid_batch(next_offset), -3),
}


def _flip(batch: bytes, pos: int) -> bytes:
    b = bytearray(batch)
    b[pos] ^= 0xFF
    return bytes(b)


@pytest.mark.parametrize("tail", sorted(TAILS))
def test_torn_final_batch_is_truncated_on_restart(broker: BrokerProcess, tail: str) -> None:
    topic = "torn"
    create_topic(broker.bootstrap, topic)
    sent = [(b"key-%d" % i, b"value-%d" % i) for i in range(500)]
    produce(broker.bootstrap, topic, sent, batch_num_messages=50)
    broker.kill9()

    segment = segment_files(broker.data_dir, topic)[-1]
    good_size = segment.stat().st_size
    assert good_size > 0
    with open(segment, "ab") as f:
        f.write(TAILS[tail](len(sent)))
        f.flush()
        os.fsync(f.fileno())

    broker.start()
    got = consume(broker.bootstrap, topic)
    assert [(m.offset(), m.key(), m.value()) for m in got] == [(i, k, v) for i, (k, v) in enumerate(sent)]
    assert watermarks(broker.bootstrap, topic) == (0, len(sent))
    assert segment.stat().st_size == good_size, "the torn tail was not truncated"

    more = [(b"new-%d" % i, b"after-%d" % i) for i in range(20)]
    assert produce(broker.bootstrap, topic, more) == list(range(len(sent), len(sent) + len(more)))
    got = consume(broker.bootstrap, topic, start=len(sent))
    assert [(m.key(), m.value()) for m in got] == more
    # A clean restart after the repair keeps everything.
    broker.restart()
    assert watermarks(broker.bootstrap, topic) == (0, len(sent) + len(more))


def test_many_segments_survive_restart_with_indexes(broker_factory: BrokerFactory) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition

    broker = broker_factory("log.index.interval.bytes=256")
    topic = "segmented"
    create_topic(broker.bootstrap, topic, config={"segment.bytes": "16384"})
    base = int(time.time() * 1000) - 100_000
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5, "batch.num.messages": 50})
    n = 3000
    for i in range(n):
        p.produce(topic, b"v%05d" % i * 5, b"k%d" % i, partition=0, timestamp=base + i * 10)
    assert p.flush(30) == 0
    assert len(segment_files(broker.data_dir, topic)) > 5

    def check() -> None:
        got = consume(broker.bootstrap, topic)
        assert [m.offset() for m in got] == list(range(n))
        assert [m.value() for m in got] == [b"v%05d" % i * 5 for i in range(n)]
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused"})
        try:
            for i in (0, 1, 777, 1500, 2999):
                (tp,) = c.offsets_for_times([TopicPartition(topic, 0, base + i * 10 - 5)], timeout=10)
                assert tp.offset == i, (i, tp.offset)
        finally:
            c.close()
        for i in (0, 1234, 2999):
            assert consume(broker.bootstrap, topic, start=i)[0].value() == b"v%05d" % i * 5

    check()
    broker.restart()
    check()
    broker.kill9()
    broker.start()
    check()


def test_sigterm_with_busy_clients_exits_cleanly(broker: BrokerProcess) -> None:
    from helpers import RawClient

    create_topic(broker.bootstrap, "busy")
    collector = AckCollector(broker.bootstrap, "busy", 1, "busy")
    collector.start()
    poller = RawClient.to(broker.bootstrap)
    try:
        collector.wait_acked(500, timeout=20)
        body = {
            "max_wait_ms": 30_000,
            "min_bytes": 1 << 30,
            "max_bytes": 1 << 20,
            "isolation_level": 0,
            "session_id": 0,
            "topics": [
                {
                    "topic": "busy",
                    "partitions": [{"partition": 0, "fetch_offset": 0, "partition_max_bytes": 1}],
                }
            ],
            "forgotten_topics_data": [],
            "rack_id": "",
        }
        _, frame = poller.encode(1, 12, body)
        poller.send_raw(frame)  # a long poll that will still be waiting
        t0 = time.monotonic()
        assert broker.stop() == 0
        assert time.monotonic() - t0 < 10, "shutdown waited for clients"
    finally:
        collector.finish()
        poller.close()
    acked = dict(collector.acked)
    broker.start()
    got = {m.offset(): m.value() for m in consume(broker.bootstrap, "busy")}
    assert all(got.get(off) == v for (_, off), v in acked.items())
    assert "Traceback" not in broker.log_text()
