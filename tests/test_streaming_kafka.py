"""Stream pools on the Kafka surface: confluent-kafka clients picking a pool with SASL/PLAIN
``tenancy/user/poolId`` read what was put over REST (same partitions and offsets) and the other way round."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from helpers import RawClient
from oci.streaming.models import (
    CreateCursorDetails,
    CreateGroupCursorDetails,
    PutMessagesDetails,
    PutMessagesDetailsEntry,
)
from test_streaming_sdk import make_pool_and_stream
from test_streaming_support import TENANCY, InProcessBroker, clients, make_api_key

from kafkite.protocol import records
from kafkite.protocol.api_keys import ApiKey
from kafkite.streaming.pools import POOL_OCID_PREFIX, StreamPool, internal_topic_name

pytestmark = pytest.mark.timeout(120)


def catalog_pool(pool_id: str) -> StreamPool:
    key = pool_id[len(POOL_OCID_PREFIX) :]
    return StreamPool(id=pool_id, key=key, name="", compartment_id="", time_created_ms=0)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[InProcessBroker]:
    with InProcessBroker(tmp_path / "data", "sasl.plain.users=" + TENANCY + "/alice=secret") as b:
        yield b


@pytest.fixture
def sdk(broker: InProcessBroker, tmp_path: Path) -> tuple[Any, Any]:
    private, _, fp = make_api_key(tmp_path)
    return clients(broker, private, fp)


def sasl(
    broker: InProcessBroker, pool_id: str | None, password: str = "secret", **extra: Any
) -> dict[str, Any]:
    conf: dict[str, Any] = {"bootstrap.servers": broker.bootstrap, **extra}
    if pool_id is not None:
        conf.update(
            {
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "PLAIN",
                "sasl.username": f"{TENANCY}/alice/{pool_id}",
                "sasl.password": password,
            }
        )
    return conf


def groups_wired() -> bool:
    from kafkite.compose import build_broker
    from kafkite.config import BrokerConfig
    from kafkite.protocol.api_keys import ApiKey

    return ApiKey.JOIN_GROUP in build_broker(BrokerConfig({"storage.engine": "memory"})).handlers


def consume(
    conf: dict[str, Any],
    topic: str,
    n: int,
    group: str = "kafka-readers",
    timeout: float = 30,
    partitions: int | None = None,
) -> list[Any]:
    """``n`` messages of ``topic``: as a member of ``group``, or by assigning ``partitions`` (no group)."""
    c = Consumer({**conf, "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        if partitions is None:
            c.subscribe([topic])
        else:
            c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                raise KafkaException(m.error())
            out.append(m)
        if partitions is None:
            c.commit(asynchronous=False)
        return out
    finally:
        c.close()


def test_kafka_reads_rest_and_rest_reads_kafka(broker: InProcessBroker, sdk: tuple[Any, Any]) -> None:
    admin, data = sdk
    pool, stream = make_pool_and_stream(admin, partitions=3)
    entries = [
        PutMessagesDetailsEntry(
            key=base64.b64encode(f"k{i % 7}".encode()).decode(),
            value=base64.b64encode(f"rest{i}".encode()).decode(),
        )
        for i in range(200)
    ]
    put = data.put_messages(stream.id, PutMessagesDetails(messages=entries)).data
    where = {f"rest{i}": (int(e.partition), e.offset) for i, e in enumerate(put.entries)}
    key_partition = {f"k{i % 7}": int(e.partition) for i, e in enumerate(put.entries)}

    got = consume(sasl(broker, pool.id), "orders", 200, partitions=3)
    assert {m.value().decode(): (m.partition(), m.offset()) for m in got} == where
    # The Java partitioner and the REST gateway agree on where a key goes.
    assert all(m.key().decode() == f"k{int(m.value()[4:]) % 7}" for m in got)

    p = Producer(sasl(broker, pool.id, **{"partitioner": "murmur2_random"}))
    delivered: list[Any] = []
    for i in range(50):
        p.produce(
            "orders",
            key=f"k{i % 7}".encode(),
            value=f"kafka{i}".encode(),
            on_delivery=lambda e, m: delivered.append(m),
        )
    assert p.flush(30) == 0
    assert all(m.error() is None for m in delivered)
    for m in delivered:
        # murmur2 on both sides: a key goes to the partition REST picked for it.
        assert m.partition() == key_partition[m.key().decode()]
        cur = data.create_cursor(
            stream.id, CreateCursorDetails(partition=str(m.partition()), type="AT_OFFSET", offset=m.offset())
        ).data.value
        msg = data.get_messages(stream.id, cur, limit=1).data[0]
        assert base64.b64decode(msg.value) == m.value() and msg.offset == m.offset()


def test_pools_are_namespaces(broker: InProcessBroker, sdk: tuple[Any, Any]) -> None:
    admin, _ = sdk
    pool_a, _ = make_pool_and_stream(admin, "orders")
    pool_b, _ = make_pool_and_stream(admin, "payments")
    # Pool B gets its own "orders" by Kafka auto-creation (a pool setting), with the pool's partition count.
    pb = Producer(sasl(broker, pool_b.id))
    pb.produce("orders", value=b"in-b")
    assert pb.flush(30) == 0
    pa = Producer(sasl(broker, pool_a.id))
    pa.produce("orders", value=b"in-a")
    assert pa.flush(30) == 0

    a_vals = [m.value() for m in consume(sasl(broker, pool_a.id), "orders", 1, partitions=3)]
    b_vals = [m.value() for m in consume(sasl(broker, pool_b.id), "orders", 1, partitions=2)]
    assert a_vals == [b"in-a"] and b_vals == [b"in-b"]
    b_streams = {s.name: s for s in admin.list_streams(stream_pool_id=pool_b.id).data}
    assert set(b_streams) == {"orders", "payments"}
    assert b_streams["orders"].partitions == 2  # the pool's numPartitions

    # Each pool lists only its streams; the default pool (no SASL) sees neither.
    def topics(conf: dict[str, Any]) -> set[str]:
        return {t for t in AdminClient(conf).list_topics(timeout=10).topics if not t.startswith("__")}

    assert topics(sasl(broker, pool_a.id)) == {"orders"}
    assert topics(sasl(broker, pool_b.id)) == {"orders", "payments"}
    assert topics(sasl(broker, None)) == set()

    # A client of the default pool cannot reach another pool's topic by its internal name.
    internal = internal_topic_name(catalog_pool(pool_a.id), "orders")
    with RawClient("127.0.0.1", broker.kafka_port) as raw:
        md = raw.request(
            ApiKey.METADATA, 4, {"topics": [{"name": internal}], "allow_auto_topic_creation": True}
        )
        assert [(t["name"], t["error_code"]) for t in md["topics"]] == [(internal, 17)]
        batch = records.build_batch([(None, b"intruder", (), int(time.time() * 1000))])
        req = {
            "acks": 1,
            "timeout_ms": 5000,
            "topic_data": [{"name": internal, "partition_data": [{"index": 0, "records": batch}]}],
        }
        resp = raw.request(ApiKey.PRODUCE, 7, req)
        assert resp["responses"][0]["name"] == internal
        assert resp["responses"][0]["partition_responses"][0]["error_code"] != 0
    assert [m.value() for m in consume(sasl(broker, pool_a.id), "orders", 5, partitions=3, timeout=2)] == [
        b"in-a"
    ]

    # Topics created over Kafka in the default pool are default-pool streams.
    ac = AdminClient(sasl(broker, None))
    for f in ac.create_topics([NewTopic("plain", num_partitions=1)]).values():
        f.result(10)
    default_id = next(
        p.id for p in admin.list_stream_pools("ocid1.compartment.oc1..x").data if p.name == "DefaultPool"
    )
    assert [s.name for s in admin.list_streams(stream_pool_id=default_id).data] == ["plain"]


@pytest.mark.skipif(not groups_wired(), reason="the group coordinator is not wired into the broker")
def test_rest_and_kafka_groups_share_offsets(broker: InProcessBroker, sdk: tuple[Any, Any]) -> None:
    admin, data = sdk
    pool_a, stream_a = make_pool_and_stream(admin, "orders")
    pa = Producer(sasl(broker, pool_a.id))
    pa.produce("orders", value=b"in-a")
    assert pa.flush(30) == 0
    assert [m.value() for m in consume(sasl(broker, pool_a.id), "orders", 1, group="ga")] == [b"in-a"]
    # REST groups and Kafka groups of the same name in the same pool share committed offsets.
    gc = data.create_group_cursor(
        stream_a.id, CreateGroupCursorDetails(group_name="ga", type="TRIM_HORIZON", commit_on_get=False)
    ).data.value
    assert data.get_messages(stream_a.id, gc).data == []  # "ga" committed past "in-a" over Kafka
    c = Consumer({**sasl(broker, pool_a.id), "group.id": "ga"})
    try:
        committed = c.committed([TopicPartition("orders", p) for p in range(3)], timeout=10)
    finally:
        c.close()
    assert sum(tp.offset for tp in committed if tp.offset >= 0) == 1


@pytest.mark.skipif(not groups_wired(), reason="the group coordinator is not wired into the broker")
def test_consumer_protocol_groups_live_in_their_pool(broker: InProcessBroker, sdk: tuple[Any, Any]) -> None:
    admin, data = sdk
    pool_a, stream_a = make_pool_and_stream(admin, "orders")
    make_pool_and_stream(admin, "orders-of-b")
    pa = Producer(sasl(broker, pool_a.id))
    pa.produce("orders", value=b"in-a")
    assert pa.flush(30) == 0
    # A regular expression matches the pool's stream names, never another pool's streams.
    conf = sasl(broker, pool_a.id)
    c = Consumer({**conf, "group.id": "gk", "group.protocol": "consumer", "auto.offset.reset": "earliest"})
    try:
        c.subscribe(["^ord.*"])
        got = None
        deadline = time.monotonic() + 30
        while got is None or got.error() is not None:
            assert time.monotonic() < deadline, "nothing consumed"
            got = c.poll(0.5)
        assert (got.topic(), got.value()) == ("orders", b"in-a")
        c.commit(asynchronous=False)
        assert {tp.topic for tp in c.assignment()} == {"orders"}
    finally:
        c.close()
    # The REST group of the same name in the same pool shares the committed offsets.
    gc = data.create_group_cursor(
        stream_a.id, CreateGroupCursorDetails(group_name="gk", type="TRIM_HORIZON", commit_on_get=False)
    ).data.value
    assert data.get_messages(stream_a.id, gc).data == []


def test_wrong_password_or_unknown_pool_fails(broker: InProcessBroker, sdk: tuple[Any, Any]) -> None:
    admin, _ = sdk
    pool, _ = make_pool_and_stream(admin)
    for conf in (
        sasl(broker, pool.id, password="wrong"),
        sasl(broker, "ocid1.streampool.oc1..nosuchpool0000000"),
    ):
        errors: list[Any] = []
        c = Consumer({**conf, "group.id": "x", "error_cb": errors.append})
        try:
            with pytest.raises(KafkaException):
                c.list_topics(timeout=3)
        finally:
            c.close()
        assert any("Authentication failed" in str(e) or "SASL" in str(e) for e in errors), errors


def test_transactions_are_scoped_to_their_pool(broker: InProcessBroker, sdk: tuple[Any, Any]) -> None:
    """A transactional producer in a pool commits to the pool's stream; the same transactional.id in
    another pool is another producer (it neither fences nor is fenced)."""
    admin, _ = sdk
    pool_a, _ = make_pool_and_stream(admin, "orders", partitions=1)
    pool_b, _ = make_pool_and_stream(admin, "payments", partitions=1)

    def txn_producer(pool_id: str) -> Producer:
        p = Producer(sasl(broker, pool_id, **{"transactional.id": "tx-1"}))
        p.init_transactions(20)
        return p

    pa = txn_producer(pool_a.id)
    pb = txn_producer(pool_b.id)  # same id, other pool: must not fence pa
    for p, topic in ((pa, "orders"), (pb, "payments")):
        p.begin_transaction()
        for i in range(5):
            p.produce(topic, f"{topic}-{i}".encode())
        p.commit_transaction(20)
    got = consume(sasl(broker, pool_a.id, **{"isolation.level": "read_committed"}), "orders", 5, partitions=1)
    assert [m.value() for m in got] == [f"orders-{i}".encode() for i in range(5)]
    got = consume(
        sasl(broker, pool_b.id, **{"isolation.level": "read_committed"}), "payments", 5, partitions=1
    )
    assert [m.value() for m in got] == [f"payments-{i}".encode() for i in range(5)]
