"""Kafka's whole configuration catalogue through real admin clients: DescribeConfigs answers every Kafka key
with its default, source, type and documentation; AlterConfigs and IncrementalAlterConfigs take every Kafka
key with Kafka's validation and Kafka's refusals; removed topic configs are answered by request version."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import BrokerFactory, BrokerProcess, RawClient, create_topic

from kafkite.config_catalogue import BROKER_KEYS
from kafkite.protocol.errors import ErrorCode

TIMEOUT = 20
DEFAULT_CONFIG, STATIC_BROKER_CONFIG = 5, 4
TOPIC_CONFIG, DYNAMIC_BROKER_CONFIG, DYNAMIC_DEFAULT_BROKER_CONFIG = 1, 2, 3  # DescribeConfigs sources


def confluent_admin(bootstrap: str) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap})


def error_code(exc: BaseException) -> int:
    err = exc.args[0] if exc.args else None
    return int(err.code()) if hasattr(err, "code") else -999


def incremental(admin: Any, rtype: Any, name: str, ops: list[tuple[str, str | None, Any]]) -> None:
    from confluent_kafka.admin import ConfigEntry, ConfigResource

    res = ConfigResource(
        rtype, name, incremental_configs=[ConfigEntry(k, v, incremental_operation=op) for k, v, op in ops]
    )
    admin.incremental_alter_configs([res])[res].result(timeout=TIMEOUT)


def describe(admin: Any, rtype: Any, name: str) -> dict[str, Any]:
    from confluent_kafka.admin import ConfigResource

    res = ConfigResource(rtype, name)
    result: dict[str, Any] = admin.describe_configs([res])[res].result(timeout=TIMEOUT)
    return result


def test_describe_answers_every_kafka_broker_key(shared_broker: BrokerProcess) -> None:
    from confluent_kafka.admin import ResourceType

    cfg = describe(confluent_admin(shared_broker.bootstrap), ResourceType.BROKER, "1")
    missing = sorted(set(BROKER_KEYS) - set(cfg) - {"broker.id", "log.dir"})
    assert not missing
    relogin = cfg["sasl.kerberos.min.time.before.relogin"]
    assert (relogin.value, relogin.source, relogin.is_read_only) == ("60000", DEFAULT_CONFIG, False)
    assert cfg["num.io.threads"].value == "8" and not cfg["num.io.threads"].is_read_only
    assert cfg["broker.rack"].value is None and cfg["broker.rack"].is_read_only
    assert cfg["ssl.keystore.password"].is_sensitive and cfg["ssl.keystore.password"].value is None
    assert cfg["group.initial.rebalance.delay.ms"].value == "0"
    assert cfg["remote.log.manager.copier.thread.pool.size"].value == "10"

    # Types and documentation (DescribeConfigs v4 through kafka-python's codec).
    from kafka.protocol.admin import DescribeConfigsRequest

    req = DescribeConfigsRequest(
        resources=[
            DescribeConfigsRequest.DescribeConfigsResource(
                resource_type=4, resource_name="1", configuration_keys=["num.io.threads", "ssl.cipher.suites"]
            )
        ],
        include_synonyms=True,
        include_documentation=True,
    )
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=shared_broker.bootstrap)
    try:
        resp = admin._manager.run(admin._manager.send, req)
    finally:
        admin.close()
    entries = {c.name: c for c in resp.results[0].configs}
    assert entries["num.io.threads"].config_type == 3  # INT
    assert entries["ssl.cipher.suites"].config_type == 7  # LIST
    assert entries["num.io.threads"].documentation == "Threads that serve requests"
    assert [(s.name, s.value, s.source) for s in entries["num.io.threads"].synonyms] == [
        ("num.io.threads", "8", DEFAULT_CONFIG)
    ]


def test_keys_kafkite_does_not_act_on_are_stored(broker_factory: BrokerFactory) -> None:
    """librdkafka's admin tests set sasl.kerberos.min.time.before.relogin on a broker with AlterConfigs."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigResource, ResourceType

    b = broker_factory()
    admin = confluent_admin(b.bootstrap)
    res = ConfigResource(
        ResourceType.BROKER, "1", set_config={"sasl.kerberos.min.time.before.relogin": "58000"}
    )
    admin.alter_configs([res])[res].result(timeout=TIMEOUT)
    incremental(admin, ResourceType.BROKER, "1", [("num.replica.fetchers", "4", AlterConfigOpType.SET)])
    cfg = describe(admin, ResourceType.BROKER, "1")
    relogin = cfg["sasl.kerberos.min.time.before.relogin"]
    assert (relogin.value, relogin.source) == ("58000", DYNAMIC_BROKER_CONFIG)
    assert cfg["num.replica.fetchers"].value == "4"

    b.restart()
    cfg = describe(confluent_admin(b.bootstrap), ResourceType.BROKER, "1")
    assert cfg["sasl.kerberos.min.time.before.relogin"].value == "58000"
    assert cfg["num.replica.fetchers"].value == "4"


def test_kafkas_refusals(shared_broker: BrokerProcess, topic_name: str) -> None:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AlterConfigOpType, ResourceType

    SET = AlterConfigOpType.SET
    admin = confluent_admin(shared_broker.bootstrap)
    create_topic(shared_broker.bootstrap, topic_name)
    cases: list[tuple[Any, str, list[tuple[str, str | None, Any]], int, str]] = [
        # Kafka cannot change it at run time.
        (ResourceType.BROKER, "1", [("broker.rack", "r1", SET)], ErrorCode.INVALID_REQUEST, "dynamically"),
        # A value Kafka's validation refuses (a broker key: INVALID_REQUEST, as Kafka answers).
        (ResourceType.BROKER, "1", [("num.io.threads", "0", SET)], ErrorCode.INVALID_REQUEST, "at least 1"),
        (ResourceType.BROKER, "1", [("not.a.kafka.key", "1", SET)], ErrorCode.INVALID_CONFIG, "Unknown"),
        # Key stores change only under a listener prefix.
        (
            ResourceType.BROKER,
            "1",
            [("ssl.keystore.location", "/x.pem", SET)],
            ErrorCode.INVALID_REQUEST,
            "per-listener",
        ),
        (
            ResourceType.TOPIC,
            topic_name,
            [("compression.lz4.level", "18", SET)],
            ErrorCode.INVALID_CONFIG,
            "17",
        ),
        (
            ResourceType.TOPIC,
            topic_name,
            [("no.such.topic.key", "1", SET)],
            ErrorCode.INVALID_CONFIG,
            "Unknown",
        ),
        (
            ResourceType.TOPIC,
            topic_name,
            [("min.compaction.lag.ms", "10", SET), ("max.compaction.lag.ms", "5", SET)],
            ErrorCode.INVALID_CONFIG,
            "conflict",
        ),
        (
            ResourceType.TOPIC,
            topic_name,
            [("remote.storage.enable", "true", SET)],
            ErrorCode.INVALID_CONFIG,
            "Tiered Storage",
        ),
    ]
    for rtype, name, ops, code, words in cases:
        with pytest.raises(KafkaException) as ei:
            incremental(admin, rtype, name, ops)
        assert error_code(ei.value) == code, (ops, ei.value)
        assert words in str(ei.value), (ops, ei.value)
    # Topic keys kafkite stores without acting on them are accepted like the others.
    incremental(
        admin,
        ResourceType.TOPIC,
        topic_name,
        [("compression.zstd.level", "10", SET), ("leader.replication.throttled.replicas", "0:1", SET)],
    )
    cfg = describe(admin, ResourceType.TOPIC, topic_name)
    assert (
        cfg["compression.zstd.level"].value == "10" and cfg["compression.zstd.level"].source == TOPIC_CONFIG
    )
    assert (
        cfg["local.retention.ms"].value == "-2" and cfg["message.timestamp.after.max.ms"].value == "3600000"
    )


def test_cluster_default_level_and_synonyms(broker_factory: BrokerFactory) -> None:
    from confluent_kafka.admin import AlterConfigOpType, ResourceType

    b = broker_factory("log.retention.hours=48")
    admin = confluent_admin(b.bootstrap)
    create_topic(b.bootstrap, "t")
    cfg = describe(admin, ResourceType.TOPIC, "t")
    retention = cfg["retention.ms"]
    assert (retention.value, retention.source) == ("172800000", STATIC_BROKER_CONFIG)

    # The cluster-wide level is the broker resource named "" (kafka-configs --entity-default; neither
    # confluent-kafka nor kafka-python can name it, so kafkite's own client does).
    def alter_cluster_default(name: str, value: str) -> dict[str, Any]:
        with RawClient.to(b.bootstrap) as c:
            return c.request(
                44,
                1,
                {
                    "resources": [
                        {
                            "resource_type": 4,
                            "resource_name": "",
                            "configs": [{"name": name, "config_operation": 0, "value": value}],
                        }
                    ],
                    "validate_only": False,
                },
            )["responses"][0]

    assert alter_cluster_default("log.retention.ms", "3600000")["error_code"] == 0
    refused = alter_cluster_default("sasl.kerberos.min.time.before.relogin", "1")  # a per-broker key
    assert (
        refused["error_code"] == ErrorCode.INVALID_REQUEST
        and "default cluster level" in refused["error_message"]
    )
    with RawClient.to(b.bootstrap) as c:
        cluster = c.request(
            32,
            4,
            {
                "resources": [{"resource_type": 4, "resource_name": "", "configuration_keys": None}],
                "include_synonyms": True,
                "include_documentation": False,
            },
        )["results"][0]["configs"]
    assert [(e["name"], e["value"], e["config_source"]) for e in cluster] == [
        ("log.retention.ms", "3600000", DYNAMIC_DEFAULT_BROKER_CONFIG)
    ]
    assert describe(admin, ResourceType.TOPIC, "t")["retention.ms"].value == "3600000"

    # This broker's own value wins over the cluster-wide one; a topic's own value over both.
    incremental(admin, ResourceType.BROKER, "1", [("log.retention.ms", "7200000", AlterConfigOpType.SET)])
    incremental(admin, ResourceType.TOPIC, "t", [("retention.ms", "60000", AlterConfigOpType.SET)])
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource as KpResource
    from kafka.admin import ConfigResourceType

    kp = KafkaAdminClient(bootstrap_servers=b.bootstrap)
    try:
        described = kp.describe_configs([KpResource(ConfigResourceType.TOPIC, "t")], include_synonyms=True)
    finally:
        kp.close()
    entry = described["topic"]["t"]["retention.ms"]
    assert entry["value"] == "60000" and entry["config_source"] == "DYNAMIC_TOPIC_CONFIG"
    assert [(s["name"], s["value"], s["source"]) for s in entry["synonyms"]] == [
        ("retention.ms", "60000", "DYNAMIC_TOPIC_CONFIG"),
        ("log.retention.ms", "7200000", "DYNAMIC_BROKER_CONFIG"),
        ("log.retention.ms", "3600000", "DYNAMIC_DEFAULT_BROKER_CONFIG"),
        ("log.retention.ms", "172800000", "STATIC_BROKER_CONFIG"),
        ("log.retention.ms", "604800000", "DEFAULT_CONFIG"),
    ]


def test_removed_topic_configs_answered_by_request_version(
    shared_broker: BrokerProcess, topic_name: str
) -> None:
    """message.format.version: a client of the newest API versions is refused as Kafka 4 refuses it; an older
    client (aiokafka: CreateTopics v3, AlterConfigs v1) has it accepted and ignored, as Kafka 3 did."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic as KpNewTopic
    from kafka.errors import InvalidConfigurationError

    old_topic = f"{topic_name}-old"

    async def old_client() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=shared_broker.bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [
                    NewTopic(
                        old_topic,
                        1,
                        1,
                        topic_configs={"message.format.version": "2.8", "retention.ms": "60000"},
                    )
                ]
            )
            res = ConfigResource(
                ConfigResourceType.TOPIC,
                old_topic,
                {"message.downconversion.enable": "false", "retention.ms": "120000"},
            )
            (resp,) = await admin.alter_configs([res])
            assert [r[0] for r in resp.resources] == [0]
            (described,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, old_topic)])
            values = {c[0]: c[1] for c in described.resources[0][4]}
            assert values["retention.ms"] == "120000"
            assert "message.format.version" not in values and "message.downconversion.enable" not in values
        finally:
            await admin.close()

    asyncio.run(old_client())

    kp = KafkaAdminClient(bootstrap_servers=shared_broker.bootstrap)
    try:
        with pytest.raises(
            InvalidConfigurationError, match=r"Unknown topic config name: message\.format\.version"
        ):
            kp.create_topics([KpNewTopic(topic_name, 1, 1, topic_configs={"message.format.version": "2.8"})])
    finally:
        kp.close()

    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AlterConfigOpType, ResourceType

    with pytest.raises(KafkaException) as ei:  # IncrementalAlterConfigs v1 is its newest version
        incremental(
            confluent_admin(shared_broker.bootstrap),
            ResourceType.TOPIC,
            old_topic,
            [("message.timestamp.difference.max.ms", "1000", AlterConfigOpType.SET)],
        )
    assert error_code(ei.value) == ErrorCode.INVALID_CONFIG
    # An older client's value is still validated as Kafka 3 validated it.
    with RawClient.to(shared_broker.bootstrap) as c:
        resp = c.request(
            33,
            0,
            {
                "resources": [
                    {
                        "resource_type": 2,
                        "resource_name": old_topic,
                        "configs": [{"name": "message.format.version", "value": "newest"}],
                    }
                ],
                "validate_only": False,
            },
        )
    assert resp["responses"][0]["error_code"] == ErrorCode.INVALID_CONFIG


def test_defaults_kafka_override(broker_factory: BrokerFactory) -> None:
    from confluent_kafka.admin import ResourceType

    b = broker_factory("defaults=kafka")
    cfg = describe(confluent_admin(b.bootstrap), ResourceType.BROKER, "1")
    assert cfg["group.initial.rebalance.delay.ms"].value == "3000"
    assert cfg["log.flush.scheduler.interval.ms"].value == str((1 << 63) - 1)
