"""Quotas and connection limits: produce and fetch byte rates held to the quota (within 10%) by throttle
times and muted connections, quotas per client id and per user, request rates, max.connections,
max.connections.per.ip and connections.max.idle.ms."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from helpers import BrokerFactory, BrokerProcess, RawClient

from kafkite.protocol import records
from kafkite.protocol.api_keys import ApiKey
from kafkite.security.quotas import QuotaManager, Rate, parse_client_quotas

pytestmark = pytest.mark.timeout(180)

QUOTA = 400_000  # bytes per second
VALUE = b"x" * 5_000


def test_rate_and_quota_lookup() -> None:
    r = Rate(1.0)  # one second's worth of burst
    assert r.record(1000, 1000, 0.0) == 0.0
    assert r.record(1000, 1000, 0.0) == pytest.approx(1.0)  # two seconds' worth at once: one second over
    assert r.record(500, 1000, 1.0) == pytest.approx(0.5)
    assert r.record(100, 1000, 10.0) == 0.0  # idle time is not saved up beyond the burst
    assert r.record(1000, 1000, 10.0) == pytest.approx(0.1)
    settings = {
        "client.quotas": "user=alice:producer_byte_rate=100;user=alice,client-id=app:producer_byte_rate=50;"
        "client-id=app:consumer_byte_rate=7,request_rate=3",
        "quota.producer.default": str((1 << 63) - 1),
        "quota.consumer.default": "1000",
        "quota.request.default": str((1 << 63) - 1),
        "quota.window.num": "11",
        "quota.window.size.seconds": "1",
    }
    q = QuotaManager(settings.__getitem__, clock=lambda: 0.0)
    assert q.quota("producer_byte_rate", "alice", "other") == 100
    assert q.quota("producer_byte_rate", "alice", "app") == 50  # the most specific entity wins
    assert q.quota("consumer_byte_rate", "bob", "app") == 7
    assert q.quota("consumer_byte_rate", "bob", "x") == 1000
    assert q.record("producer_byte_rate", "bob", "x", 10**9) == 0  # unlimited
    assert q.record("request_rate", "bob", "app", 100) > 0
    for bad in ("user=a", "user=a:nope=1", "team=a:request_rate=1", "user=a:request_rate=-1"):
        with pytest.raises(ValueError):
            parse_client_quotas(bad)


def _produce_rate(bootstrap: str, client_id: str, seconds: float) -> tuple[float, float]:
    """Produce as fast as possible; (bytes/s delivered after a warm-up, bytes/s over the first second)."""
    from confluent_kafka import Producer

    topic = f"q-{uuid.uuid4().hex[:8]}"
    delivered: list[tuple[float, int]] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is None:
            delivered.append((time.monotonic(), len(msg.value())))

    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "client.id": client_id,
            "linger.ms": 5,
            "batch.size": 50_000,
            "queue.buffering.max.kbytes": 1024,
            # One request at a time keeps deliveries even enough to measure the rate over a few seconds.
            "max.in.flight.requests.per.connection": 1,
        }
    )
    p.produce(topic, b"warm-up")
    p.flush(10)
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        try:
            p.produce(topic, VALUE, on_delivery=on_delivery)
        except BufferError:
            p.poll(0.05)
        p.poll(0)
    p.flush(30)
    warm = start + 2.0
    steady = sum(n for t, n in delivered if warm <= t < start + seconds)
    first = sum(n for t, n in delivered if t < start + 1.0)
    return steady / (seconds - 2.0), float(first)


def test_producer_over_its_byte_rate_is_held_within_10_percent(broker_factory: BrokerFactory) -> None:
    b = broker_factory(
        f"client.quotas=client-id=limited:producer_byte_rate={QUOTA}",
        "quota.window.num=2",
        "quota.window.size.seconds=1",
    )
    rate, _ = _produce_rate(b.bootstrap, "limited", 8.0)
    assert abs(rate - QUOTA) / QUOTA < 0.10, f"produced at {rate:.0f} B/s against a quota of {QUOTA}"
    # Another client id has no quota and goes much faster.
    free_rate, first_second = _produce_rate(b.bootstrap, "free", 3.0)
    assert max(free_rate, first_second) > 3 * QUOTA


def test_consumer_over_its_byte_rate_is_held_within_10_percent(broker_factory: BrokerFactory) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition

    b = broker_factory(f"quota.consumer.default={QUOTA}", "quota.window.num=2", "quota.window.size.seconds=1")
    topic = f"qc-{uuid.uuid4().hex[:8]}"
    # Small batches: a fetch returns whole batches, and the rate is measured over a few seconds.
    p = Producer(
        {
            "bootstrap.servers": b.bootstrap,
            "linger.ms": 5,
            "queue.buffering.max.kbytes": 65536,
            "batch.size": 45_000,
        }
    )
    for _ in range(1000):  # 5 MB: more than 10 s of fetching at the quota
        p.produce(topic, VALUE)
    assert p.flush(30) == 0
    c = Consumer(
        {
            "bootstrap.servers": b.bootstrap,
            "group.id": "q",
            "fetch.max.bytes": 50_000,
            "max.partition.fetch.bytes": 50_000,
            "message.max.bytes": 50_000,
        }
    )
    c.assign([TopicPartition(topic, 0, 0)])
    got: list[tuple[float, int]] = []
    start = time.monotonic()
    while time.monotonic() - start < 8.0:
        m = c.poll(0.2)
        if m is not None and not m.error():
            got.append((time.monotonic(), len(m.value())))
    c.close()
    rate = sum(n for t, n in got if start + 2.0 <= t < start + 8.0) / 6.0
    assert abs(rate - QUOTA) / QUOTA < 0.10, f"fetched at {rate:.0f} B/s against a quota of {QUOTA}"


def _produce_body(topic: str, size: int) -> dict[str, Any]:
    batch = records.build_batch([(None, b"y" * size, [], 0)])
    return {
        "transactional_id": None,
        "acks": 1,
        "timeout_ms": 5000,
        "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": batch}]}],
    }


def test_throttle_time_reported_and_connection_muted(broker_factory: BrokerFactory) -> None:
    b = broker_factory("quota.producer.default=100000", "quota.window.num=2", "quota.window.size.seconds=1")
    with RawClient.to(b.bootstrap) as c:
        c.request(ApiKey.METADATA, 4, {"topics": [{"name": "muted"}], "allow_auto_topic_creation": True})
        first = c.request(ApiKey.PRODUCE, 9, _produce_body("muted", 300_000))
        assert first["responses"][0]["partition_responses"][0]["error_code"] == 0
        throttle = first["throttle_time_ms"]
        assert 1900 <= throttle <= 2100  # 300 KB at 100 KB/s with a one-second burst: 2 s over
        # The connection is muted for that long: even ApiVersions waits.
        t0 = time.monotonic()
        assert c.api_versions()["error_code"] == 0
        assert time.monotonic() - t0 >= throttle / 1000 * 0.8
    with RawClient.to(b.bootstrap) as other:  # other connections of the same client id are not muted
        t0 = time.monotonic()
        assert other.api_versions()["error_code"] == 0
        assert time.monotonic() - t0 < 0.5


def test_request_rate_quota(broker_factory: BrokerFactory) -> None:
    b = broker_factory("quota.request.default=20", "quota.window.num=2", "quota.window.size.seconds=1")
    with RawClient.to(b.bootstrap) as c:
        throttles = [c.request(ApiKey.METADATA, 12, {"topics": []})["throttle_time_ms"] for _ in range(40)]
    assert throttles[0] == 0 and max(throttles) > 0


def test_connection_limits(broker_factory: BrokerFactory) -> None:
    b = broker_factory("max.connections.per.ip=3")
    clients = [RawClient.to(b.bootstrap) for _ in range(3)]
    try:
        for c in clients:
            assert c.api_versions()["error_code"] == 0
        with RawClient.to(b.bootstrap) as extra:
            assert extra.is_closed(5)
        clients.pop().close()
        time.sleep(0.3)
        with RawClient.to(b.bootstrap) as again:
            assert again.api_versions()["error_code"] == 0
    finally:
        for c in clients:
            c.close()
    b2 = broker_factory("max.connections=2")
    with RawClient.to(b2.bootstrap) as c1, RawClient.to(b2.bootstrap) as c2:
        assert c1.api_versions()["error_code"] == 0 and c2.api_versions()["error_code"] == 0
        with RawClient.to(b2.bootstrap) as c3:
            assert c3.is_closed(5)


def test_idle_and_half_open_connections_are_closed(
    broker_factory: BrokerFactory, attach_broker: Callable[[BrokerProcess], BrokerProcess]
) -> None:
    b = broker_factory("connections.max.idle.ms=1000")
    with RawClient.to(b.bootstrap) as busy, RawClient.to(b.bootstrap) as idle:
        assert idle.api_versions()["error_code"] == 0
        # A client that sends half a frame and stops, and one that never sends anything.
        half = socket.create_connection(("127.0.0.1", b.port))
        half.sendall(b"\x00\x00\x10\x00\x00\x12")
        silent = socket.create_connection(("127.0.0.1", b.port))
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            assert busy.api_versions()["error_code"] == 0  # activity keeps a connection open
            time.sleep(0.2)
        assert idle.is_closed(3)
        for s in (half, silent):
            s.settimeout(3)
            assert s.recv(10) == b""
            s.close()
        assert busy.api_versions()["error_code"] == 0
