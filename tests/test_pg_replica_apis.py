"""Replica administration on brokers sharing a PostgreSQL database: every broker reports the leaders the
cluster places, DescribeLogDirs lists on each broker the partitions it leads, no election is ever needed, and
a reassignment to another live broker is refused (kafkite places leaders itself) while one to a broker that
is not registered is refused as Kafka refuses it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import BrokerProcess, create_topic, stop_all
from test_pg_cluster import leaders, live_nodes, wait_for
from test_pg_support import pg_server

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def two_brokers(tmp_path: Path) -> Iterator[list[BrokerProcess]]:
    dsn = pg_server().new_database("replicas")
    brokers = [
        BrokerProcess(
            tmp_path / f"data{node}",
            tmp_path / f"broker{node}.log",
            [
                f"storage.engine={dsn}",
                f"node.id={node}",
                "cluster.heartbeat.interval.ms=200",
                "cluster.session.timeout.ms=1500",
            ],
        )
        for node in (1, 2)
    ]
    for b in brokers:
        b.start()
    yield brokers
    stop_all(brokers)


def test_replica_apis_on_a_cluster(two_brokers: list[BrokerProcess], topic_name: str) -> None:
    from kafka import KafkaAdminClient, TopicPartition
    from kafka.errors import InvalidReplicationAssignmentError

    one, two = two_brokers
    wait_for("two live brokers", lambda: all(live_nodes(b) == {1, 2} for b in two_brokers))
    create_topic(one.bootstrap, topic_name, 4)
    wait_for("the topic on both brokers", lambda: len(leaders(two, topic_name)) == 4)
    lead = leaders(one, topic_name)
    assert sorted(lead.values()) == [1, 1, 2, 2]

    admin = KafkaAdminClient(bootstrap_servers=one.bootstrap)
    try:
        pages: dict[int, Any] = {}
        cursor = None
        while True:
            page = admin.describe_topic_partitions([topic_name], response_partition_limit=3, cursor=cursor)
            for p in page["topics"][0]["partitions"]:
                pages[p["partition_index"]] = p
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert {i: p["leader_id"] for i, p in pages.items()} == lead
        assert all(p["replica_nodes"] == [p["leader_id"]] for p in pages.values())

        by_broker = admin.describe_log_dirs({topic_name: [0, 1, 2, 3]})
        hosted = {
            entry["broker"]: {
                p["partition_index"] for t in entry["log_dirs"][0]["topics"] for p in t["partitions"]
            }
            for entry in by_broker
        }
        assert hosted == {b: {i for i, leader in lead.items() if leader == b} for b in (1, 2)}
        assert all(entry["log_dirs"][0]["log_dir"].startswith("postgresql://") for entry in by_broker)

        p0 = TopicPartition(topic_name, 0)
        here, elsewhere = lead[0], 3 - lead[0]
        result = admin.alter_partition_reassignments({p0: [here]})
        assert result[p0] is None  # where it is: done at once
        assert admin.alter_partition_reassignments({p0: [elsewhere]})[p0] is InvalidReplicationAssignmentError
        assert admin.alter_partition_reassignments({p0: [7]})[p0] is InvalidReplicationAssignmentError
        assert admin.list_partition_reassignments() == {}
    finally:
        admin.close()

    from confluent_kafka import ElectionType
    from confluent_kafka import TopicPartition as CTopicPartition
    from confluent_kafka.admin import AdminClient

    confluent = AdminClient({"bootstrap.servers": two.bootstrap})
    partitions = [CTopicPartition(topic_name, i) for i in range(4)]
    elected = confluent.elect_leaders(ElectionType.PREFERRED, partitions).result(timeout=20)
    assert {tp.partition: err.code() for tp, err in elected.items()} == dict.fromkeys(range(4), 84)
