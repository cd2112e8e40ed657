"""The feature registry: declared levels, finalized levels, UpdateFeatures' rules and persistence."""

from __future__ import annotations

from pathlib import Path

import pytest

from kafkite.broker.features import (
    SAFE_DOWNGRADE,
    UNSAFE_DOWNGRADE,
    UPGRADE,
    FeatureError,
    Features,
)
from kafkite.protocol.errors import ErrorCode
from kafkite.protocol.messages import registry


def test_undeclared_levels_are_not_advertised() -> None:
    reg = Features(node_id=1)
    assert reg.supported() == []
    assert reg.finalized() == {}
    assert reg.api_versions_fields(4) == {
        "supported_features": [],
        "finalized_features": [],
        "finalized_features_epoch": 0,
    }


def test_declared_feature_is_finalized_at_its_highest_level(tmp_path: Path) -> None:
    reg = Features(node_id=1, path=tmp_path / "features.json")
    reg.declare("group.version", max_level=1)
    assert reg.level("group.version") == 1
    fields = reg.api_versions_fields(4)
    assert fields["supported_features"] == [{"name": "group.version", "min_version": 0, "max_version": 1}]
    assert fields["finalized_features"] == [
        {"name": "group.version", "max_version_level": 1, "min_version_level": 1}
    ]
    # ApiVersions v3 leaves out ranges starting at 0 (older clients cannot read them), as Kafka does.
    assert reg.api_versions_fields(3)["supported_features"] == []
    # The fields encode in an ApiVersions v3 response (tagged fields).
    body = {"error_code": 0, "api_keys": [], "throttle_time_ms": 0, **fields}
    codec = registry().response(18, 3)
    assert codec.decode_all(codec.encode_bytes(body))["finalized_features"][0]["name"] == "group.version"


def test_update_rules_follow_kafkas_controller(tmp_path: Path) -> None:
    reg = Features(node_id=7, path=tmp_path / "features.json")
    reg.declare("group.version", max_level=1)

    def refused(name: str, level: int, kind: int) -> str:
        with pytest.raises(FeatureError) as ei:
            reg.check(name, level, kind)
        assert ei.value.code == ErrorCode.INVALID_UPDATE_VERSION
        return ei.value.message

    assert "does not support this feature" in refused("share.version", 1, UPGRADE)
    assert "does not support this feature" in refused("no.such.feature", 1, UPGRADE)
    assert "only supports versions 0-1" in refused("group.version", 2, UPGRADE)
    assert "cannot be less than 0" in refused("group.version", -1, SAFE_DOWNGRADE)
    assert "without setting the upgrade type" in refused("group.version", 0, UPGRADE)
    assert "does not support the given upgrade type" in refused("group.version", 0, 9)
    reg.check("group.version", 0, SAFE_DOWNGRADE)
    reg.check("group.version", 0, UNSAFE_DOWNGRADE)

    seen: list[tuple[str, int]] = []
    reg.on_change(lambda n, lv: seen.append((n, lv)))
    reg.update({"group.version": 0})
    assert seen == [("group.version", 0)]
    assert reg.level("group.version") == 0 and reg.finalized() == {}
    assert "Can't downgrade to a newer version" in refused("group.version", 1, SAFE_DOWNGRADE)
    reg.check("group.version", 1, UPGRADE)

    again = Features(node_id=7, path=tmp_path / "features.json")
    again.declare("group.version", max_level=1)
    assert again.level("group.version") == 0 and again.epoch == 1


def test_update_features_through_kafka_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A component that declares a feature (here a test feature, as Kafka's test.feature.version) gets it
    advertised, and kafka-python's admin client reads and updates its finalized level."""
    import kafkite.compose as wiring
    from kafkite.broker.features import features_of

    build = wiring.build_broker

    def build_with_a_test_feature(config: object) -> object:
        broker = build(config)
        features_of(broker).declare("test.feature.version", max_level=2)
        return broker

    monkeypatch.setattr(wiring, "build_broker", build_with_a_test_feature)
    from kafka import KafkaAdminClient
    from kafka.errors import InvalidUpdateVersionError
    from test_streaming_support import InProcessBroker

    with InProcessBroker(tmp_path / "data") as b:
        admin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
        try:
            described = admin.describe_features()["test.feature.version"]
            assert described["supported"] == (0, 2) and described["finalized"] == (2, 2)
            epoch = described["finalized_epoch"]
            with pytest.raises(InvalidUpdateVersionError, match="without setting the upgrade type"):
                admin.update_features({"test.feature.version": 1})
            assert admin.update_features({"test.feature.version": ("SAFE_DOWNGRADE", 1)}) == {
                "test.feature.version": "OK"
            }
            after = admin.describe_features()["test.feature.version"]
            assert after["finalized"] == (1, 1) and after["finalized_epoch"] > epoch
            assert admin.update_features({"test.feature.version": 2}, validate_only=True)
            assert admin.describe_features()["test.feature.version"]["finalized"] == (1, 1)
        finally:
            admin.close()
    # Kept in log.dirs: the finalized level survives a restart.
    with InProcessBroker(tmp_path / "data") as b:
        admin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
        try:
            assert admin.describe_features()["test.feature.version"]["finalized"] == (1, 1)
        finally:
            admin.close()
