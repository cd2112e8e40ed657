"""Metadata of large topics, whose partition lists the broker keeps encoded: the answer follows the topic
through CreatePartitions and through deletion and re-creation, at every Metadata version a client uses."""

from __future__ import annotations

import uuid

from confluent_kafka.admin import AdminClient, NewPartitions
from helpers import BrokerProcess, RawClient, create_topic

METADATA = 3


def metadata(c: RawClient, topic: str, version: int) -> dict[str, object]:
    body = {
        "topics": [{"topic_id": uuid.UUID(int=0), "name": topic}],
        "allow_auto_topic_creation": False,
        "include_cluster_authorized_operations": False,
        "include_topic_authorized_operations": False,
    }
    resp = c.request(METADATA, version, body)
    (t,) = resp["topics"]
    return t  # type: ignore[no-any-return]


def check(t: dict[str, object], partitions: int, node: int = 1) -> None:
    parts = t["partitions"]
    assert isinstance(parts, list)
    assert [p["partition_index"] for p in parts] == list(range(partitions))
    assert all(
        (p["error_code"], p["leader_id"], p["replica_nodes"], p["isr_nodes"]) == (0, node, [node], [node])
        for p in parts
    )


def test_large_topic_metadata_follows_the_topic(broker: BrokerProcess) -> None:
    create_topic(broker.bootstrap, "wide", 300)
    with RawClient.to(broker.bootstrap) as c:
        node = c.request(METADATA, 12, {"topics": [], "allow_auto_topic_creation": False})["brokers"][0][
            "node_id"
        ]
        first = metadata(c, "wide", 12)
        check(first, 300, node)
        for version in (1, 5, 9, 12, 1, 12):  # kept encodings of other versions are not mixed up
            t = metadata(c, "wide", version)
            check(t, 300, node)
            if version >= 10:
                assert t["topic_id"] == first["topic_id"]

        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_partitions([NewPartitions("wide", 400)])["wide"].result(15)
        check(metadata(c, "wide", 12), 400, node)
        check(metadata(c, "wide", 9), 400, node)

        admin.delete_topics(["wide"])["wide"].result(15)
        assert metadata(c, "wide", 12)["error_code"] != 0
        create_topic(broker.bootstrap, "wide", 260)
        again = metadata(c, "wide", 12)
        check(again, 260, node)
        assert again["topic_id"] != first["topic_id"]
