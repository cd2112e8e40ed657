"""Topic configs take effect: timestamp type, broker-side compression, retention."""

from __future__ import annotations

import time
from typing import Any

import pytest
from helpers import BrokerFactory, BrokerProcess, consume, create_topic, fetch_batches, produce, watermarks

from kafkite.protocol import records


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def produce_with_timestamps(bootstrap: str, topic: str, stamps: list[int], **conf: Any) -> None:
    from confluent_kafka import Producer

    p = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, **{k.replace("_", "."): v for k, v in conf.items()}}
    )
    for i, ts in enumerate(stamps):
        p.produce(topic, b"value-%d" % i * 10, b"key-%d" % i, partition=0, timestamp=ts)
    assert p.flush(15) == 0


def test_log_append_time_topic(shared_broker: BrokerProcess, topic_name: str) -> None:
    bootstrap = shared_broker.bootstrap
    create_topic(bootstrap, topic_name, config={"message.timestamp.type": "LogAppendTime"})
    old = now_ms() - 3_600_000
    t0 = now_ms()
    produce_with_timestamps(bootstrap, topic_name, [old + i for i in range(50)], compression_type="zstd")
    t1 = now_ms()
    got = consume(bootstrap, topic_name)
    assert len(got) == 50
    for m in got:
        ts_type, ts = m.timestamp()
        assert ts_type == 2, "expected LogAppendTime"  # confluent_kafka.TIMESTAMP_LOG_APPEND_TIME
        assert t0 - 1000 <= ts <= t1 + 1000
    assert all(h.log_append_time for h in fetch_batches(bootstrap, topic_name))

    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    try:
        tp = TopicPartition(topic_name, 0)
        consumer.assign([tp])
        msgs: list[Any] = []
        deadline = time.monotonic() + 20
        while len(msgs) < 50 and time.monotonic() < deadline:
            msgs += consumer.poll(timeout_ms=500).get(tp, [])
        assert len(msgs) == 50
        assert {m.timestamp_type for m in msgs} == {1}
        assert all(t0 - 1000 <= m.timestamp <= t1 + 1000 for m in msgs)
    finally:
        consumer.close()


@pytest.mark.parametrize(
    ("topic_codec", "producer_codec", "stored"),
    [
        ("producer", "gzip", records.COMPRESSION_GZIP),
        ("producer", "none", records.COMPRESSION_NONE),
        ("gzip", "zstd", records.COMPRESSION_GZIP),
        ("lz4", "none", records.COMPRESSION_LZ4),
        ("zstd", "gzip", records.COMPRESSION_ZSTD),
        ("snappy", "zstd", records.COMPRESSION_SNAPPY),
        ("uncompressed", "snappy", records.COMPRESSION_NONE),
    ],
)
def test_topic_compression_type(
    shared_broker: BrokerProcess, topic_name: str, topic_codec: str, producer_codec: str, stored: int
) -> None:
    bootstrap = shared_broker.bootstrap
    create_topic(bootstrap, topic_name, config={"compression.type": topic_codec})
    stamps = [now_ms() - 1000 + i for i in range(300)]
    produce_with_timestamps(bootstrap, topic_name, stamps, compression_type=producer_codec)
    headers = fetch_batches(bootstrap, topic_name)
    assert headers
    assert {h.compression for h in headers} == {stored}
    got = consume(bootstrap, topic_name)
    assert [(m.key(), m.value(), m.timestamp()[1]) for m in got] == [
        (b"key-%d" % i, b"value-%d" % i * 10, ts) for i, ts in enumerate(stamps)
    ]


def test_time_retention_removes_old_segments(broker_factory: BrokerFactory) -> None:
    broker = broker_factory("log.retention.check.interval.ms=200", "log.segment.delete.delay.ms=0")
    topic = "expiring"
    create_topic(broker.bootstrap, topic, config={"retention.ms": "60000", "segment.bytes": "4096"})
    old = now_ms() - 3_600_000
    produce_with_timestamps(broker.bootstrap, topic, [old + i for i in range(400)], batch_num_messages=20)
    recent = produce(broker.bootstrap, topic, [(b"fresh", b"fresh")])[0]
    deadline = time.monotonic() + 10
    low = 0
    while time.monotonic() < deadline:
        low, high = watermarks(broker.bootstrap, topic)
        if low > 0:
            break
        time.sleep(0.2)
    assert 0 < low <= recent, "no old segment was removed"
    assert high == recent + 1
    got = consume(broker.bootstrap, topic, start=low)
    assert got[-1].value() == b"fresh"
    assert [m.offset() for m in got] == list(range(low, high))
