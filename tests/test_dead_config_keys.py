"""Keys Kafka users set that have no work to do on a broker of single-replica partitions: each is accepted,
validated and described, and named at start-up as not acted on; key store formats other than PEM are
refused. The README's table of keys not acted on names each of them."""

from __future__ import annotations

import pathlib

import pytest

from kafkite.config import DEFINITIONS, BrokerConfig, ConfigError
from kafkite.log.config import TOPIC_CONFIGS

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"

INERT_BROKER = ("min.insync.replicas", "log.preallocate", "unclean.leader.election.enable")
INERT_TOPIC = ("min.insync.replicas", "preallocate", "unclean.leader.election.enable")


@pytest.mark.parametrize("key", INERT_BROKER)
def test_broker_key_is_accepted_and_named_as_not_acted_on(key: str) -> None:
    value = "2" if key == "min.insync.replicas" else "true"
    cfg = BrokerConfig({"storage.engine": "memory", key: value})
    assert not DEFINITIONS[key].acts
    assert any("not acted on" in w and key in w for w in cfg.warnings)


@pytest.mark.parametrize("key", INERT_TOPIC)
def test_topic_key_is_stored_and_not_acted_on(key: str) -> None:
    assert not TOPIC_CONFIGS[key].acts


def test_min_insync_replicas_is_still_validated() -> None:
    with pytest.raises(ConfigError):
        BrokerConfig({"storage.engine": "memory", "min.insync.replicas": "zero"})


@pytest.mark.parametrize("key", ["ssl.keystore.type", "ssl.truststore.type"])
def test_key_stores_other_than_pem_are_refused(key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        BrokerConfig({"storage.engine": "memory", key: "JKS"})
    BrokerConfig({"storage.engine": "memory", key: "PEM"})


def test_the_readme_says_so() -> None:
    text = README.read_text()
    table = text[text.index("| area | keys stored and described, not acted on |") :]
    table = table[: table.index("\n\n")]
    for key in ("min.insync.replicas", "preallocate", "unclean.leader.election.enable"):
        assert f"`{key}`" in table or f"`log.{key}`" in table, key
