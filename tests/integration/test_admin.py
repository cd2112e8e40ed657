"""Topic, record and configuration administration through real admin clients."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import BrokerProcess, RawClient, consume, create_topic, produce, watermarks

from kafkite.protocol.errors import ErrorCode

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TIMEOUT = 15


@pytest.fixture
def admin(shared_broker: BrokerProcess) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": shared_broker.bootstrap})


@pytest.fixture
def kp_admin(shared_broker: BrokerProcess) -> Iterator[Any]:
    from kafka.admin import KafkaAdminClient

    a = KafkaAdminClient(bootstrap_servers=shared_broker.bootstrap)
    yield a
    a.close()


def partitions_of(admin: Any, topic: str) -> int:
    md = admin.list_topics(topic, timeout=TIMEOUT)
    t = md.topics[topic]
    assert t.error is None, t.error
    return len(t.partitions)


def kafka_error_code(exc: BaseException) -> int:
    err = exc.args[0]
    return int(err.code())


# ------------------------------------------------------------------------------------------ CreatePartitions


def test_create_partitions(shared_broker: BrokerProcess, admin: Any, topic_name: str) -> None:
    from confluent_kafka.admin import NewPartitions

    create_topic(shared_broker.bootstrap, topic_name, partitions=1)
    produce(shared_broker.bootstrap, topic_name, [(b"k", b"before")])

    fs = admin.create_partitions([NewPartitions(topic_name, 4)], validate_only=True)
    fs[topic_name].result(timeout=TIMEOUT)
    assert partitions_of(admin, topic_name) == 1

    admin.create_partitions([NewPartitions(topic_name, 4)])[topic_name].result(timeout=TIMEOUT)
    assert partitions_of(admin, topic_name) == 4
    assert produce(shared_broker.bootstrap, topic_name, [(b"k", b"p3")], partition=3) == [0]
    assert [m.value() for m in consume(shared_broker.bootstrap, topic_name, 0)] == [b"before"]
    assert [m.value() for m in consume(shared_broker.bootstrap, topic_name, 3)] == [b"p3"]

    for bad in (4, 2):
        with pytest.raises(Exception) as ei:
            admin.create_partitions([NewPartitions(topic_name, bad)])[topic_name].result(timeout=TIMEOUT)
        assert kafka_error_code(ei.value) == ErrorCode.INVALID_PARTITIONS
    # Counts beyond topic.max.partitions are refused (librdkafka checks them itself: ask raw).
    raw = RawClient.to(shared_broker.bootstrap)
    resp = raw.request(37, 3, {"topics": [{"name": topic_name, "count": 2_000_000_000, "assignments": None}]})
    assert resp["results"][0]["error_code"] == ErrorCode.INVALID_PARTITIONS
    huge = f"huge-{uuid.uuid4().hex[:8]}"
    resp = raw.request(
        19, 7, {"topics": [{"name": huge, "num_partitions": 2_000_000_000, "replication_factor": -1}]}
    )
    assert resp["topics"][0]["error_code"] == ErrorCode.INVALID_PARTITIONS
    assert partitions_of(admin, topic_name) == 4
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(Exception) as ei:
        admin.create_partitions([NewPartitions(missing, 2)])[missing].result(timeout=TIMEOUT)
    assert kafka_error_code(ei.value) == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


def test_create_partitions_kafka_python(shared_broker: BrokerProcess, kp_admin: Any, topic_name: str) -> None:
    from kafka.admin import NewPartitions

    create_topic(shared_broker.bootstrap, topic_name, partitions=2)
    kp_admin.create_partitions({topic_name: NewPartitions(total_count=5)})
    desc = kp_admin.describe_topics([topic_name])
    assert len(desc[0]["partitions"]) == 5


# ------------------------------------------------------------------------------------------ DeleteTopics


def test_delete_topics(shared_broker: BrokerProcess, admin: Any, topic_name: str) -> None:
    bootstrap = shared_broker.bootstrap
    create_topic(bootstrap, topic_name, partitions=2)
    produce(bootstrap, topic_name, [(b"k", b"old")] * 10)
    admin.delete_topics([topic_name], operation_timeout=10)[topic_name].result(timeout=TIMEOUT)
    md = admin.list_topics(timeout=TIMEOUT)
    assert topic_name not in md.topics

    with RawClient.to(bootstrap) as c:
        resp = c.request(3, 12, {"topics": [{"name": topic_name}], "allow_auto_topic_creation": False})
        assert resp["topics"][0]["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION

    with pytest.raises(Exception) as ei:
        admin.delete_topics([topic_name], operation_timeout=10)[topic_name].result(timeout=TIMEOUT)
    assert kafka_error_code(ei.value) == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION

    # The name can be used again and starts empty.
    create_topic(bootstrap, topic_name, partitions=1)
    assert watermarks(bootstrap, topic_name) == (0, 0)
    assert produce(bootstrap, topic_name, [(b"k", b"new")]) == [0]


def test_deleted_topic_stays_deleted_after_restart(broker: BrokerProcess) -> None:
    from confluent_kafka.admin import AdminClient

    create_topic(broker.bootstrap, "keep")
    create_topic(broker.bootstrap, "drop", partitions=3)
    produce(broker.bootstrap, "drop", [(None, b"x")] * 5)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.delete_topics(["drop"])["drop"].result(timeout=TIMEOUT)
    broker.restart()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topics = set(admin.list_topics(timeout=TIMEOUT).topics)
    assert "keep" in topics and "drop" not in topics
    assert not list(broker.data_dir.glob("drop-*")), "partition directories of a deleted topic remain"


# ------------------------------------------------------------------------------------------ DeleteRecords


def test_delete_records(shared_broker: BrokerProcess, admin: Any, topic_name: str) -> None:
    from confluent_kafka import TopicPartition

    bootstrap = shared_broker.bootstrap
    create_topic(bootstrap, topic_name, partitions=1, config={"segment.bytes": "2048"})
    sent = [(b"k%d" % i, b"value-%d" % i * 4) for i in range(100)]
    produce(bootstrap, topic_name, sent, batch_num_messages=10)

    res = admin.delete_records([TopicPartition(topic_name, 0, 40)], operation_timeout=10)
    (fut,) = res.values()
    assert fut.result(timeout=TIMEOUT).low_watermark == 40
    assert watermarks(bootstrap, topic_name) == (40, 100)
    got = consume(bootstrap, topic_name, start=40)
    assert [m.offset() for m in got] == list(range(40, 100))
    assert [(m.key(), m.value()) for m in got] == sent[40:]

    # Deleting below the current start changes nothing; -1 means the high watermark.
    (fut,) = admin.delete_records([TopicPartition(topic_name, 0, 10)]).values()
    assert fut.result(timeout=TIMEOUT).low_watermark == 40
    (fut,) = admin.delete_records([TopicPartition(topic_name, 0, -1)]).values()
    assert fut.result(timeout=TIMEOUT).low_watermark == 100
    assert watermarks(bootstrap, topic_name) == (100, 100)

    (fut,) = admin.delete_records([TopicPartition(topic_name, 0, 500)]).values()
    with pytest.raises(Exception) as ei:
        fut.result(timeout=TIMEOUT)
    assert kafka_error_code(ei.value) == ErrorCode.OFFSET_OUT_OF_RANGE

    # A consumer starting before the log start is moved to it.
    assert produce(bootstrap, topic_name, [(b"k", b"after")]) == [100]
    assert [m.value() for m in consume(bootstrap, topic_name, start=100)] == [b"after"]


def test_delete_records_raw_unknown_partition(shared_broker: BrokerProcess, topic_name: str) -> None:
    create_topic(shared_broker.bootstrap, topic_name)
    with RawClient.to(shared_broker.bootstrap) as c:
        resp = c.request(
            21,
            2,
            {
                "topics": [{"name": topic_name, "partitions": [{"partition_index": 5, "offset": 0}]}],
                "timeout_ms": 1000,
            },
        )
        assert resp["topics"][0]["partitions"][0]["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


# ------------------------------------------------------------------------------------------ ListOffsets


def test_list_offsets_earliest_latest_max_timestamp(
    shared_broker: BrokerProcess, admin: Any, topic_name: str
) -> None:
    from confluent_kafka import Producer, TopicPartition
    from confluent_kafka.admin import OffsetSpec

    bootstrap = shared_broker.bootstrap
    create_topic(bootstrap, topic_name, partitions=2)
    tp0, tp1 = TopicPartition(topic_name, 0), TopicPartition(topic_name, 1)

    def offsets(spec: Any) -> dict[int, Any]:
        fs = admin.list_offsets({tp0: spec, tp1: spec}, request_timeout=10)
        return {tp.partition: f.result(timeout=TIMEOUT) for tp, f in fs.items()}

    empty = offsets(OffsetSpec.latest())
    assert empty[0].offset == 0 and empty[1].offset == 0
    assert offsets(OffsetSpec.earliest())[0].offset == 0

    now = int(time.time() * 1000)
    stamps = [now - 5000, now - 4000, now - 1000, now - 3000, now - 2000]  # the max is at offset 2
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50})
    for i, ts in enumerate(stamps):
        p.produce(topic_name, b"v%d" % i, partition=0, timestamp=ts)
    assert p.flush(TIMEOUT) == 0

    latest = offsets(OffsetSpec.latest())
    assert latest[0].offset == 5 and latest[1].offset == 0
    assert offsets(OffsetSpec.earliest())[0].offset == 0
    mx = offsets(OffsetSpec.max_timestamp())
    assert (mx[0].offset, mx[0].timestamp) == (2, now - 1000)
    assert mx[1].offset == -1
    by_time = offsets(OffsetSpec.for_timestamp(now - 3500))
    assert by_time[0].offset == 2  # the first record at or after the time, in offset order
    assert by_time[1].offset == -1

    (fut,) = admin.delete_records([TopicPartition(topic_name, 0, 3)]).values()
    fut.result(timeout=TIMEOUT)
    assert offsets(OffsetSpec.earliest())[0].offset == 3


def test_list_offsets_kafka_python(shared_broker: BrokerProcess, topic_name: str) -> None:
    from kafka import KafkaConsumer, TopicPartition

    create_topic(shared_broker.bootstrap, topic_name, partitions=2)
    produce(shared_broker.bootstrap, topic_name, [(None, b"x")] * 7, partition=1)
    consumer = KafkaConsumer(bootstrap_servers=shared_broker.bootstrap, group_id=None)
    try:
        tps = [TopicPartition(topic_name, 0), TopicPartition(topic_name, 1)]
        assert consumer.beginning_offsets(tps) == {tps[0]: 0, tps[1]: 0}
        assert consumer.end_offsets(tps) == {tps[0]: 0, tps[1]: 7}
    finally:
        consumer.close()


def test_list_offsets_raw_versions(shared_broker: BrokerProcess, topic_name: str) -> None:
    create_topic(shared_broker.bootstrap, topic_name)
    produce(shared_broker.bootstrap, topic_name, [(None, b"x")] * 3)
    with RawClient.to(shared_broker.bootstrap) as c:
        for version in (1, 5, 7, 10):
            for ts, want in ((-2, 0), (-1, 3)):
                resp = c.request(
                    2,
                    version,
                    {
                        "replica_id": -1,
                        "isolation_level": 0,
                        "topics": [
                            {"name": topic_name, "partitions": [{"partition_index": 0, "timestamp": ts}]}
                        ],
                        "timeout_ms": 1000,
                    },
                )
                part = resp["topics"][0]["partitions"][0]
                assert (part["error_code"], part["offset"]) == (0, want), (version, ts, part)


# ------------------------------------------------------------------------------------------ DescribeCluster


def test_describe_cluster(shared_broker: BrokerProcess, admin: Any) -> None:
    res = admin.describe_cluster(request_timeout=10).result(timeout=TIMEOUT)
    md = admin.list_topics(timeout=TIMEOUT)
    assert res.cluster_id and res.cluster_id == md.cluster_id
    assert res.controller.id == 1
    assert [(n.id, n.host, n.port) for n in res.nodes] == [(1, "127.0.0.1", shared_broker.port)]


def test_describe_cluster_id_survives_restart(broker: BrokerProcess) -> None:
    with RawClient.to(broker.bootstrap) as c:
        before = c.request(60, 0, {"include_cluster_authorized_operations": True})
    assert before["error_code"] == 0 and before["cluster_authorized_operations"] > 0
    broker.restart()
    with RawClient.to(broker.bootstrap) as c:
        after = c.request(60, 1, {"include_cluster_authorized_operations": False, "endpoint_type": 1})
    assert after["cluster_id"] == before["cluster_id"]
    assert [b["port"] for b in after["brokers"]] == [broker.port]


# ------------------------------------------------------------------------------------------ configs


def test_incremental_alter_configs_append_subtract_cleanup_policy(
    shared_broker: BrokerProcess, admin: Any, topic_name: str
) -> None:
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

    create_topic(shared_broker.bootstrap, topic_name)

    def alter(name: str, value: str | None, op: Any) -> None:
        res = ConfigResource(
            ResourceType.TOPIC,
            topic_name,
            incremental_configs=[ConfigEntry(name, value, incremental_operation=op)],
        )
        admin.incremental_alter_configs([res])[res].result(timeout=TIMEOUT)

    def policy() -> str:
        res = ConfigResource(ResourceType.TOPIC, topic_name)
        return str(admin.describe_configs([res])[res].result(timeout=TIMEOUT)["cleanup.policy"].value)

    assert policy() == "delete"
    alter("cleanup.policy", "compact", AlterConfigOpType.APPEND)
    assert policy() == "delete,compact"
    alter("cleanup.policy", "compact", AlterConfigOpType.APPEND)  # already there: unchanged
    assert policy() == "delete,compact"
    alter("cleanup.policy", "delete", AlterConfigOpType.SUBTRACT)
    assert policy() == "compact"
    alter("cleanup.policy", "delete", AlterConfigOpType.SUBTRACT)  # not there: unchanged
    assert policy() == "compact"
    alter("cleanup.policy", None, AlterConfigOpType.DELETE)
    assert policy() == "delete"

    with pytest.raises(Exception) as ei:
        alter("retention.ms", "1000", AlterConfigOpType.APPEND)  # not a list
    assert kafka_error_code(ei.value) == ErrorCode.INVALID_CONFIG
    with pytest.raises(Exception) as ei:
        alter("cleanup.policy", "shred", AlterConfigOpType.APPEND)
    assert kafka_error_code(ei.value) == ErrorCode.INVALID_CONFIG
    assert policy() == "delete"


def test_describe_broker_configs(shared_broker: BrokerProcess, admin: Any) -> None:
    from confluent_kafka.admin import ConfigResource, ResourceType

    res = ConfigResource(ResourceType.BROKER, "1")
    cfg = admin.describe_configs([res])[res].result(timeout=TIMEOUT)
    assert cfg["listeners"].value == f"PLAINTEXT://127.0.0.1:{shared_broker.port}"
    assert cfg["listeners"].source == 4  # STATIC_BROKER_CONFIG
    assert cfg["num.partitions"].value == "1"
    assert cfg["num.partitions"].is_default
    assert cfg["log.dirs"].is_read_only
    assert cfg["message.max.bytes"].value == "1048588"

    # There is no broker 2 (asked directly: admin clients would wait for it to appear).
    with RawClient.to(shared_broker.bootstrap) as c:
        resp = c.request(
            32,
            4,
            {
                "resources": [
                    {"resource_type": 4, "resource_name": "2", "configuration_keys": None},
                    {"resource_type": 4, "resource_name": "1", "configuration_keys": ["num.partitions"]},
                ],
                "include_synonyms": True,
                "include_documentation": True,
            },
        )
    bad, good = resp["results"]
    assert bad["error_code"] != 0
    assert good["error_code"] == 0
    (entry,) = good["configs"]
    assert entry["name"] == "num.partitions" and entry["value"] == "1" and entry["documentation"]


def test_dynamic_broker_config_applies_to_topics_and_persists(broker: BrokerProcess) -> None:
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ResourceType,
    )

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    create_topic(broker.bootstrap, "follows-broker")
    res = ConfigResource(
        ResourceType.BROKER,
        "1",
        incremental_configs=[
            ConfigEntry("log.retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    admin.incremental_alter_configs([res])[res].result(timeout=TIMEOUT)

    def topic_retention(a: Any) -> Any:
        t = ConfigResource(ResourceType.TOPIC, "follows-broker")
        return a.describe_configs([t])[t].result(timeout=TIMEOUT)["retention.ms"]

    entry = topic_retention(admin)
    assert entry.value == "7200000"
    assert entry.source == 2  # DYNAMIC_BROKER_CONFIG

    ro = ConfigResource(
        ResourceType.BROKER,
        "1",
        incremental_configs=[
            ConfigEntry("log.dirs", "/elsewhere", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    with pytest.raises(Exception) as ei:
        admin.incremental_alter_configs([ro])[ro].result(timeout=TIMEOUT)
    # Kafka's answer for a key it cannot change at run time.
    assert kafka_error_code(ei.value) == ErrorCode.INVALID_REQUEST
    assert "Cannot update these configs dynamically: log.dirs" in str(ei.value)

    broker.restart()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    assert topic_retention(admin).value == "7200000"
    b = ConfigResource(ResourceType.BROKER, "1")
    assert admin.describe_configs([b])[b].result(timeout=TIMEOUT)["log.retention.ms"].value == "7200000"
