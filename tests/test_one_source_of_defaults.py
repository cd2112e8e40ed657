"""Each default is written once: the coordinators' settings and the topic configs take theirs from the
configuration tables, and a broker key that supplies a topic config's default agrees with it."""

from __future__ import annotations

from kafkite.broker.groups.config import GroupConfig
from kafkite.broker.txn.coordinator import TxnConfig
from kafkite.config import DEFINITIONS, TOPIC_FROM_BROKER, BrokerConfig
from kafkite.log.config import TOPIC_CONFIGS, LogConfig, parse_config_value


def test_coordinator_settings_default_to_the_broker_keys() -> None:
    table = {key: DEFINITIONS[key].default for key in GroupConfig.KEYS}
    assert GroupConfig.from_mapping(table) == GroupConfig()
    table = {key: DEFINITIONS[key].default for key in TxnConfig.KEYS}
    assert TxnConfig.from_mapping(table) == TxnConfig()


def test_a_broker_built_from_nothing_uses_the_same_defaults() -> None:
    cfg = BrokerConfig({"storage.engine": "memory"})
    assert GroupConfig.from_mapping({k: cfg[k] for k in GroupConfig.KEYS}) == GroupConfig()
    assert TxnConfig.from_mapping({k: cfg[k] for k in TxnConfig.KEYS}) == TxnConfig()
    assert LogConfig.from_props(cfg.topic_defaults()) == LogConfig()


def test_topic_defaults_are_the_topic_table() -> None:
    for key in TOPIC_CONFIGS.values():
        assert parse_config_value(key.name, key.default) == getattr(LogConfig(), key.attr), key.name


def test_broker_keys_behind_topic_configs_share_their_defaults() -> None:
    cfg = BrokerConfig({"storage.engine": "memory"})
    topic = cfg.topic_defaults()
    for name in TOPIC_FROM_BROKER:
        if name in topic and name in TOPIC_CONFIGS:
            assert parse_config_value(name, topic[name]) == parse_config_value(
                name, TOPIC_CONFIGS[name].default
            ), name
