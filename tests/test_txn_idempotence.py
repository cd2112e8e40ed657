"""Idempotent producers against a real kafkite process: confluent-kafka and kafka-python, a Produce request
re-sent on the wire, broker restarts and kill -9 in the middle of a stream."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from helpers import BrokerProcess, RawClient, consume, create_topic

from kafkite.protocol import records

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PRODUCE = 0
FETCH = 1
INIT_PRODUCER_ID = 22
DESCRIBE_PRODUCERS = 61


def raw_fetch(c: RawClient, topic: str, offset: int = 0, partition: int = 0) -> bytes:
    resp = c.request(
        FETCH,
        12,
        {
            "max_wait_ms": 0,
            "min_bytes": 0,
            "max_bytes": 1 << 24,
            "isolation_level": 0,
            "session_id": 0,
            "topics": [
                {
                    "topic": topic,
                    "partitions": [
                        {"partition": partition, "fetch_offset": offset, "partition_max_bytes": 1 << 24}
                    ],
                }
            ],
            "forgotten_topics_data": [],
            "rack_id": "",
        },
    )
    part = resp["responses"][0]["partitions"][0]
    assert part["error_code"] == 0, part
    return bytes(part["records"] or b"")


def stored_batches(c: RawClient, topic: str, partition: int = 0) -> list[tuple[records.BatchHeader, bytes]]:
    data = raw_fetch(c, topic, 0, partition)
    return [(h, data[pos : pos + h.size]) for pos, h in records.iter_headers(data)]


def raw_produce(c: RawClient, topic: str, batch: bytes, partition: int = 0) -> dict[str, Any]:
    resp = c.request(
        PRODUCE,
        9,
        {
            "transactional_id": None,
            "acks": -1,
            "timeout_ms": 10000,
            "topic_data": [{"name": topic, "partition_data": [{"index": partition, "records": batch}]}],
        },
    )
    out: dict[str, Any] = resp["responses"][0]["partition_responses"][0]
    return out


def describe_producers(c: RawClient, topic: str, partition: int = 0) -> list[dict[str, Any]]:
    resp = c.request(DESCRIBE_PRODUCERS, 0, {"topics": [{"name": topic, "partition_indexes": [partition]}]})
    part = resp["topics"][0]["partitions"][0]
    assert part["error_code"] == 0, part
    producers: list[dict[str, Any]] = part["active_producers"]
    return producers


def confluent_idempotent(bootstrap: str, **extra: Any) -> Any:
    from confluent_kafka import Producer

    conf = {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 2}
    conf.update(extra)
    return Producer(conf)


def values(bootstrap: str, topic: str, partition: int = 0) -> list[bytes]:
    return [m.value() for m in consume(bootstrap, topic, partition)]


def test_resent_produce_request_is_not_duplicated(shared_broker: BrokerProcess, topic_name: str) -> None:
    bs = shared_broker.bootstrap
    create_topic(bs, topic_name)
    p = confluent_idempotent(bs, **{"batch.num.messages": 10})
    for i in range(50):
        p.produce(topic_name, b"m%d" % i, partition=0)
        if i % 10 == 9:
            p.flush(10)
    assert p.flush(10) == 0
    with RawClient.to(bs) as c:
        batches = stored_batches(c, topic_name)
        assert batches and all(h.producer_id >= 0 and h.base_sequence >= 0 for h, _ in batches)
        (producer,) = describe_producers(c, topic_name)
        last_h, _ = batches[-1]
        assert producer["producer_id"] == last_h.producer_id
        assert producer["last_sequence"] == last_h.base_sequence + last_h.last_offset_delta
        end = last_h.last_offset + 1
        # The very request the client sent, sent again: answered with the offsets it was first given.
        for h, raw in batches[-5:]:
            resend = bytearray(raw)
            records.set_base_offset(resend, 0, 0)
            resp = raw_produce(c, topic_name, bytes(resend))
            assert resp["error_code"] == 0, resp
            assert resp["base_offset"] == h.base_offset
        assert stored_batches(c, topic_name)[-1][0].last_offset + 1 == end
        # A batch that skips sequence numbers is refused; one from an older epoch too.
        gap = records.build_batch(
            [(None, b"gap", (), int(time.time() * 1000))],
            producer_id=last_h.producer_id,
            producer_epoch=last_h.producer_epoch,
            base_sequence=last_h.base_sequence + last_h.last_offset_delta + 2,
        )
        assert raw_produce(c, topic_name, gap)["error_code"] == 45  # OUT_OF_ORDER_SEQUENCE_NUMBER
        # A producer id the partition never saw, starting in the middle of a sequence.
        unknown = records.build_batch(
            [(None, b"x", (), int(time.time() * 1000))], producer_id=10**9, producer_epoch=0, base_sequence=7
        )
        assert raw_produce(c, topic_name, unknown)["error_code"] == 59  # UNKNOWN_PRODUCER_ID
    assert values(bs, topic_name) == [b"m%d" % i for i in range(50)]


def test_init_producer_id_without_transactional_id(shared_broker: BrokerProcess) -> None:
    with RawClient.to(shared_broker.bootstrap) as c:
        ids = set()
        for version in (0, 2, 4):
            body = {"transactional_id": None, "transaction_timeout_ms": -1}
            resp = c.request(INIT_PRODUCER_ID, version, body)
            assert resp["error_code"] == 0 and resp["producer_epoch"] == 0
            ids.add(resp["producer_id"])
        assert len(ids) == 3


def _produce_through_restarts(broker: BrokerProcess, topic: str, n: int, kill: bool) -> None:
    bs = broker.bootstrap
    create_topic(bs, topic)
    p = confluent_idempotent(
        bs,
        **{
            "message.timeout.ms": 60000,
            "retry.backoff.ms": 50,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 200,
            "max.in.flight.requests.per.connection": 5,
        },
    )
    errors: list[Any] = []
    acked: list[int] = []
    stop = threading.Event()

    def poller() -> None:
        while not stop.is_set():
            p.poll(0.05)

    def report(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(err)
        else:
            acked.append(msg.offset())

    t = threading.Thread(target=poller, daemon=True)
    t.start()
    try:
        for i in range(n):
            while True:
                try:
                    p.produce(topic, b"%06d" % i, partition=0, on_delivery=report)
                    break
                except BufferError:
                    time.sleep(0.01)
            if i in (n // 3, 2 * n // 3):
                # Restart while batches are in flight.
                while len(acked) < i // 2:
                    time.sleep(0.01)
                if kill:
                    broker.kill9()
                    broker.start()
                else:
                    broker.restart()
            if i % 500 == 0:
                time.sleep(0.01)
        assert p.flush(90) == 0
    finally:
        stop.set()
        t.join()
    assert not errors, errors[:5]
    got = values(bs, topic)
    assert got == [b"%06d" % i for i in range(n)], f"{len(got)} messages for {n} produced"
    assert sorted(acked) == list(range(n))


def test_restart_mid_stream_keeps_sequences_valid(broker: BrokerProcess, topic_name: str) -> None:
    _produce_through_restarts(broker, topic_name, 6000, kill=False)
    # State was snapshotted on shutdown and reloaded: an old batch re-sent is still recognised.
    with RawClient.to(broker.bootstrap) as c:
        h, raw = stored_batches(c, topic_name)[-1]
        resp = raw_produce(c, topic_name, raw)
        assert resp["error_code"] == 0 and resp["base_offset"] == h.base_offset


def test_kill9_mid_stream_keeps_sequences_valid(broker: BrokerProcess, topic_name: str) -> None:
    _produce_through_restarts(broker, topic_name, 6000, kill=True)
    broker.kill9()
    broker.start()  # no snapshot at the end: state rebuilt from the batch headers
    with RawClient.to(broker.bootstrap) as c:
        h, raw = stored_batches(c, topic_name)[-1]
        resp = raw_produce(c, topic_name, raw)
        assert resp["error_code"] == 0 and resp["base_offset"] == h.base_offset


def test_kafka_python_idempotent_producer(shared_broker: BrokerProcess, topic_name: str) -> None:
    from kafka import KafkaProducer

    bs = shared_broker.bootstrap
    create_topic(bs, topic_name, partitions=2)
    producer = KafkaProducer(bootstrap_servers=bs, enable_idempotence=True, acks="all", linger_ms=5)
    try:
        futures = [producer.send(topic_name, b"kp-%d" % i, partition=i % 2) for i in range(400)]
        producer.flush(30)
        metas = [f.get(timeout=10) for f in futures]
    finally:
        producer.close(10)
    assert sorted(m.offset for m in metas if m.partition == 0) == list(range(200))
    with RawClient.to(bs) as c:
        for partition in (0, 1):
            batches = stored_batches(c, topic_name, partition)
            assert all(h.producer_id >= 0 and h.base_sequence >= 0 for h, _ in batches)
            (producer_info,) = describe_producers(c, topic_name, partition)
            assert producer_info["last_sequence"] == 199
    assert values(bs, topic_name, 0) == [b"kp-%d" % i for i in range(0, 400, 2)]
    assert values(bs, topic_name, 1) == [b"kp-%d" % i for i in range(1, 400, 2)]
