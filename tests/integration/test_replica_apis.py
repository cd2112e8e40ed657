"""DescribeTopicPartitions, DescribeLogDirs, ElectLeaders, partition reassignments and UpdateFeatures through
real admin clients, answered as Kafka answers them for single-replica partitions."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from helpers import BrokerProcess, RawClient, create_topic, produce

from kafkite.protocol.errors import ErrorCode

TIMEOUT = 20


def audited(b: BrokerProcess, operation: str, name: str, at_least: int) -> list[dict[str, Any]]:
    """The audit trail's records of ``operation`` on ``name`` (written by a thread: waits for them)."""
    deadline = time.monotonic() + 10
    while True:
        lines = (b.data_dir / "audit.log").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        mine = [r for r in records if r["operation"] == operation and r["resource"]["name"] == name]
        if len(mine) >= at_least or time.monotonic() > deadline:
            return mine
        time.sleep(0.1)


@pytest.fixture
def kp_admin(shared_broker: BrokerProcess) -> Any:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=shared_broker.bootstrap, request_timeout_ms=10000)
    yield admin
    admin.close()


def test_describe_topic_partitions_pages_with_a_cursor(
    shared_broker: BrokerProcess, kp_admin: Any, topic_name: str
) -> None:
    a, b = f"{topic_name}-a", f"{topic_name}-b"
    create_topic(shared_broker.bootstrap, a, partitions=5)
    create_topic(shared_broker.bootstrap, b, partitions=3)

    first = kp_admin.describe_topic_partitions([b, a], response_partition_limit=3)
    (ta,) = first["topics"]  # sorted by name, cut after three partitions
    assert ta["name"] == a and ta["error_code"] == 0
    assert [p["partition_index"] for p in ta["partitions"]] == [0, 1, 2]
    assert first["next_cursor"] == {"topic_name": a, "partition_index": 3}
    p0 = ta["partitions"][0]
    assert p0["leader_id"] == 1 and p0["replica_nodes"] == [1] and p0["isr_nodes"] == [1]
    assert p0["eligible_leader_replicas"] is None or p0["eligible_leader_replicas"] == []

    second = kp_admin.describe_topic_partitions(
        [a, b], response_partition_limit=3, cursor=first["next_cursor"]
    )
    assert [(t["name"], [p["partition_index"] for p in t["partitions"]]) for t in second["topics"]] == [
        (a, [3, 4]),
        (b, [0]),
    ]
    assert second["next_cursor"] == {"topic_name": b, "partition_index": 1}
    third = kp_admin.describe_topic_partitions(
        [a, b], response_partition_limit=3, cursor=second["next_cursor"]
    )
    assert [(t["name"], len(t["partitions"])) for t in third["topics"]] == [(b, 2)]
    assert third["next_cursor"] is None

    # Unknown topics answer UNKNOWN_TOPIC_OR_PARTITION; all topics come with an empty list.
    missing = kp_admin.describe_topic_partitions([f"{topic_name}-none"])
    assert missing["topics"][0]["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    everything = kp_admin.describe_topic_partitions([], response_partition_limit=100000)
    names = {t["name"] for t in everything["topics"]}
    assert {a, b} <= names


def test_describe_topic_partitions_cursor_must_name_a_listed_topic(
    shared_broker: BrokerProcess, topic_name: str
) -> None:
    create_topic(shared_broker.bootstrap, topic_name)
    with RawClient.to(shared_broker.bootstrap) as c:
        resp = c.request(
            75,
            0,
            {"topics": [{"name": topic_name}], "cursor": {"topic_name": "zzz-other", "partition_index": 0}},
        )
    assert [t["error_code"] for t in resp["topics"]] == [ErrorCode.INVALID_REQUEST]


def test_describe_log_dirs_reports_partition_sizes(
    shared_broker: BrokerProcess, kp_admin: Any, topic_name: str
) -> None:
    create_topic(shared_broker.bootstrap, topic_name, partitions=2)
    produce(shared_broker.bootstrap, topic_name, [(b"k", b"v" * 1000)] * 20, partition=1)
    (entry,) = kp_admin.describe_log_dirs({topic_name: [0, 1]})
    assert entry["broker"] == 1
    (log_dir,) = entry["log_dirs"]
    assert log_dir["error_code"] == 0
    assert log_dir["log_dir"] == str(shared_broker.data_dir.resolve())
    (topic,) = log_dir["topics"]
    sizes = {p["partition_index"]: p["partition_size"] for p in topic["partitions"]}
    assert sizes[0] == 0 and sizes[1] > 20_000
    assert log_dir["total_bytes"] > 0 and 0 < log_dir["usable_bytes"] <= log_dir["total_bytes"]


def test_elect_leaders_is_never_needed(shared_broker: BrokerProcess, topic_name: str) -> None:
    from confluent_kafka import ElectionType, TopicPartition
    from confluent_kafka.admin import AdminClient

    create_topic(shared_broker.bootstrap, topic_name, partitions=2)
    admin = AdminClient({"bootstrap.servers": shared_broker.bootstrap})
    for kind in (ElectionType.PREFERRED, ElectionType.UNCLEAN):
        result = admin.elect_leaders(
            kind, [TopicPartition(topic_name, 0), TopicPartition(topic_name, 5)]
        ).result(timeout=TIMEOUT)
        errors = {tp.partition: err for tp, err in result.items()}
        assert errors[0].code() == ErrorCode.ELECTION_NOT_NEEDED
        assert errors[5].code() == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    # All partitions: those that need no election are left out.
    assert admin.elect_leaders(ElectionType.PREFERRED, None).result(timeout=TIMEOUT) == {}


def test_partition_reassignments(shared_broker: BrokerProcess, kp_admin: Any, topic_name: str) -> None:
    from kafka import TopicPartition
    from kafka.errors import (
        InvalidReplicationAssignmentError,
        NoReassignmentInProgressError,
        UnknownTopicOrPartitionError,
    )

    create_topic(shared_broker.bootstrap, topic_name, partitions=2)
    tp0, tp1, tp9 = (TopicPartition(topic_name, i) for i in (0, 1, 9))
    assert kp_admin.list_partition_reassignments() == {}
    assert kp_admin.list_partition_reassignments([tp0, TopicPartition("no-such-topic", 0)]) == {}

    result = kp_admin.alter_partition_reassignments({tp0: [1], tp1: [2], tp9: [1]})
    assert result[tp0] is None  # the replica set it has: done at once
    assert result[tp1] is InvalidReplicationAssignmentError  # no broker 2
    assert result[tp9] is UnknownTopicOrPartitionError
    assert kp_admin.alter_partition_reassignments({tp0: None})[tp0] is NoReassignmentInProgressError
    assert kp_admin.alter_partition_reassignments({tp0: [1, 1]})[tp0] is InvalidReplicationAssignmentError
    assert kp_admin.list_partition_reassignments() == {}
    mine = audited(shared_broker, "AlterPartitionReassignments", topic_name, 5)
    assert len(mine) == 5 and sum(r["result"] == "ok" for r in mine) == 1


def test_features_and_update_features(shared_broker: BrokerProcess, kp_admin: Any) -> None:
    from kafka.errors import InvalidUpdateVersionError

    # transaction.version is at level 0 (not served): Kafka leaves such features out of ApiVersions
    # (group.version is 1, the consumer group protocol; share.version is 1, share groups).
    features = kp_admin.describe_features()
    assert "transaction.version" not in features
    assert features["share.version"]["finalized"] == (1, 1)
    assert features["group.version"]["finalized"] == (1, 1)

    with pytest.raises(InvalidUpdateVersionError) as ei:
        kp_admin.update_features({"transaction.version": 2})
    assert "does not support this feature" in str(ei.value)
    with pytest.raises(InvalidUpdateVersionError):
        kp_admin.update_features({"no.such.feature": 1}, validate_only=True)
    # Level 0 is where transaction.version is: nothing to change, accepted.
    assert kp_admin.update_features({"transaction.version": 0}) == {"transaction.version": "OK"}
    assert audited(shared_broker, "UpdateFeatures", "transaction.version", 1)[-1]["after"] == {"level": 0}

    with RawClient.to(shared_broker.bootstrap) as c:
        resp = c.api_versions(version=3)
        assert resp["finalized_features_epoch"] >= 0
        keys = {a["api_key"] for a in resp["api_keys"]}
    assert {35, 43, 45, 46, 57, 75} <= keys
