"""Kafka's configuration catalogue: every broker key of Kafka 4.2 known with its type, default and validation;
kafkite's own defaults audited against Kafka's; defaults=kafka; listener overrides; removed keys."""

from __future__ import annotations

import pytest

from kafkite.broker.configs import predates_kafka4
from kafkite.config import (
    DEFINITIONS,
    KAFKA_DEFAULT_DIFFERENCES,
    OWN_KEYS,
    RELAXED_VALIDATION,
    BrokerConfig,
    ConfigError,
    help_text,
    kafka_default,
)
from kafkite.config_catalogue import BROKER_KEYS, BROKER_SYNONYMS, ConfigValueError
from kafkite.log.config import REMOVED_TOPIC_CONFIGS, TOPIC_CONFIGS, parse_removed_config
from kafkite.protocol.api_keys import ApiKey


def test_catalogue_holds_kafkas_broker_keys() -> None:
    assert len(BROKER_KEYS) > 300
    for name in (
        "sasl.kerberos.min.time.before.relogin",
        "num.io.threads",
        "replica.fetch.max.bytes",
        "remote.log.storage.system.enable",
        "process.roles",
        "group.consumer.heartbeat.interval.ms",
        "sasl.oauthbearer.jwks.endpoint.url",
        "max.request.partition.size.limit",
    ):
        assert name in BROKER_KEYS and name in DEFINITIONS, name
    k = BROKER_KEYS["num.io.threads"]
    assert (k.type, k.default, k.mode, k.importance) == ("INT", "8", "cluster-wide", "high")
    assert BROKER_KEYS["broker.rack"].mode == "read-only"
    assert BROKER_KEYS["sasl.kerberos.min.time.before.relogin"].mode == "per-broker"
    assert BROKER_KEYS["ssl.keystore.password"].sensitive
    assert all(k.doc and "\t" not in k.doc for k in BROKER_KEYS.values())


def test_values_are_validated_as_kafka_validates_them() -> None:
    def refused(name: str, value: str) -> str:
        with pytest.raises(ConfigValueError) as ei:
            BROKER_KEYS[name].parse(value)
        return str(ei.value)

    assert (
        refused("num.io.threads", "0")
        == "Invalid value 0 for configuration num.io.threads: Value must be at least 1"
    )
    assert "Not a number of type INT" in refused("num.io.threads", "many")
    assert "Not a number of type INT" in refused("num.io.threads", "3000000000")
    assert "either true or false" in refused("controlled.shutdown.enable", "yes")
    assert "no more than 10" in refused("group.share.delivery.count.limit", "11")
    assert "must be one of" in refused("security.inter.broker.protocol", "TCP")
    assert "must be one of" in refused("log.cleanup.policy", "shred")
    assert "duplicated" in refused("log.cleanup.policy", "delete,delete")
    assert "between 1 and 9" in refused("compression.gzip.level", "0")
    assert "could not be found" in refused("client.quota.callback.class", "not a class")
    assert BROKER_KEYS["compression.gzip.level"].parse("-1") == -1
    assert BROKER_KEYS["group.consumer.migration.policy"].parse("UPGRADE") == "UPGRADE"  # case ignored
    assert BROKER_KEYS["log.cleanup.policy"].parse("") == []  # Kafka 4.2: no cleanup at all
    assert BROKER_KEYS["sasl.kerberos.service.name"].parse("") is None  # no default: null


def _effective_kafka_default(name: str) -> str | None:
    """Kafka's default, following a null to the synonym that supplies it (log.retention.hours, ...)."""
    value = kafka_default(name)
    if value is not None:
        return value
    for other in BROKER_SYNONYMS.get(name, ())[1:]:
        raw = kafka_default(other)
        if raw is not None:
            factor = 3_600_000 if other.endswith(".hours") else 60_000 if other.endswith(".minutes") else 1
            return str(int(raw) * factor)
    return None


def test_kafkites_defaults_audited_against_kafkas() -> None:
    """Every default of kafkite's own keys is Kafka's, or a deliberate difference stated with its reason."""
    own = [n for n in OWN_KEYS if n in BROKER_KEYS]
    differing = {n for n in own if DEFINITIONS[n].default != (_effective_kafka_default(n) or "")}
    assert differing == set(KAFKA_DEFAULT_DIFFERENCES), (
        "state each deliberate difference in KAFKA_DEFAULT_DIFFERENCES"
    )
    # Topic configs: kafkite's defaults are Kafka's.
    kafka_topic = {
        "max.message.bytes": "1048588",
        "message.timestamp.after.max.ms": "3600000",
        "segment.jitter.ms": "0",
    }
    for name, value in kafka_topic.items():
        assert TOPIC_CONFIGS[name].default == value
    assert set(RELAXED_VALIDATION) <= set(DEFINITIONS)
    text = help_text()
    assert "group.initial.rebalance.delay.ms (default: 0)" in text
    assert "Kafka's default: 3000" in text and "defaults=kafka restores it" in text
    assert "sasl.kerberos.min.time.before.relogin (default: 60000)" in text


def test_defaults_kafka_restores_kafkas_values() -> None:
    assert BrokerConfig()["group.initial.rebalance.delay.ms"] == 0
    cfg = BrokerConfig({"defaults": "kafka"})
    assert cfg["group.initial.rebalance.delay.ms"] == 3000
    assert cfg["log.flush.scheduler.interval.ms"] == (1 << 63) - 1
    assert cfg.raw["listeners"] == "PLAINTEXT://localhost:9092"  # where it runs is not a behaviour default
    explicit = BrokerConfig({"defaults": "kafka", "group.initial.rebalance.delay.ms": "100"})
    assert explicit["group.initial.rebalance.delay.ms"] == 100
    with pytest.raises(ConfigError):
        BrokerConfig({"defaults": "confluent"})


def test_start_up_keys() -> None:
    cfg = BrokerConfig(
        {
            "sasl.kerberos.min.time.before.relogin": "58000",
            "num.io.threads": "16",
            "listener.name.sasl_ssl.oauthbearer.connections.max.reauth.ms": "60000",
            "listener.name.ssl.ssl.client.auth": "required",
            "log.message.format.version": "2.8",
            "log.retention.hours": "2",
        }
    )
    assert cfg["sasl.kerberos.min.time.before.relogin"] == 58000
    assert cfg["log.retention.ms"] == 7_200_000 and cfg.raw["log.retention.hours"] == "2"
    assert cfg.for_listener("SASL_SSL", "connections.max.reauth.ms", "OAUTHBEARER") == 60000
    assert cfg.for_listener("SASL_PLAINTEXT", "connections.max.reauth.ms", "OAUTHBEARER") == 0
    assert cfg.for_listener("SSL", "ssl.client.auth") == "required"
    assert any("log.message.format.version was removed in Kafka 4.0" in w for w in cfg.warnings)
    assert any("not acted on" in w and "num.io.threads" in w for w in cfg.warnings)
    for bad in (
        {"num.io.threads": "0"},
        {"not.a.kafka.key": "1"},
        {"listener.name.ssl.not.a.key": "1"},
        {"group.initial.rebalance.delay.ms": "soon"},
    ):
        with pytest.raises(ConfigError):
            BrokerConfig(bad)
    # Kafka 4 wants segments of 1 MiB at least; kafkite lets tests roll small ones.
    assert BrokerConfig({"log.segment.bytes": "4096"})["log.segment.bytes"] == 4096


def test_removed_topic_configs() -> None:
    assert set(REMOVED_TOPIC_CONFIGS) == {
        "message.format.version",
        "message.timestamp.difference.max.ms",
        "message.downconversion.enable",
    }
    assert parse_removed_config("message.format.version", "2.8-IV1") == "2.8-IV1"
    with pytest.raises(ValueError, match=r"message\.format\.version"):
        parse_removed_config("message.format.version", "latest")
    with pytest.raises(ValueError, match="at least 0"):
        parse_removed_config("message.timestamp.difference.max.ms", "-5")
    # The newest versions of the APIs (Kafka 4 refuses the configs); older ones (accepted and ignored).
    assert not predates_kafka4(ApiKey.CREATE_TOPICS, 7)
    assert predates_kafka4(ApiKey.CREATE_TOPICS, 4)
    assert not predates_kafka4(ApiKey.INCREMENTAL_ALTER_CONFIGS, 1)
    assert predates_kafka4(ApiKey.ALTER_CONFIGS, 1)
