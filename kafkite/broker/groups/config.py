"""Settings of the group coordinator, under the names Apache Kafka gives them, and per-group configs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kafkite.config import default_int, default_list, default_str

from .consumer.assignors import assignor_names

MIGRATION_POLICIES = ("bidirectional", "upgrade", "downgrade", "disabled")
REBALANCE_PROTOCOLS = ("classic", "consumer")
# Kafka's other group protocols: accepted in group.coordinator.rebalance.protocols (Kafka 4.2's default names
# streams) and not served, so that a Kafka configuration starts as it is.
UNSERVED_PROTOCOLS = ("share", "streams")


@dataclass(frozen=True)
class GroupConfig:
    """Limits and timings of the group protocols and of committed offsets.

    Defaults are Kafka's except ``initial_rebalance_delay_ms`` (Kafka: 3000), which is 0 so that a first
    consumer gets its assignment at once in tests and development loops.
    """

    # Defaults: the broker keys' (kafkite.config), read once here.
    min_session_timeout_ms: int = default_int("group.min.session.timeout.ms")
    max_session_timeout_ms: int = default_int("group.max.session.timeout.ms")
    initial_rebalance_delay_ms: int = default_int("group.initial.rebalance.delay.ms")
    max_size: int = default_int("group.max.size")
    offsets_retention_ms: int = default_int("offsets.retention.minutes") * 60_000
    offsets_retention_check_interval_ms: int = default_int("offsets.retention.check.interval.ms")
    offset_metadata_max_bytes: int = default_int("offset.metadata.max.bytes")
    # The consumer group protocol (KIP-848).
    consumer_session_timeout_ms: int = default_int("group.consumer.session.timeout.ms")
    consumer_min_session_timeout_ms: int = default_int("group.consumer.min.session.timeout.ms")
    consumer_max_session_timeout_ms: int = default_int("group.consumer.max.session.timeout.ms")
    consumer_heartbeat_interval_ms: int = default_int("group.consumer.heartbeat.interval.ms")
    consumer_min_heartbeat_interval_ms: int = default_int("group.consumer.min.heartbeat.interval.ms")
    consumer_max_heartbeat_interval_ms: int = default_int("group.consumer.max.heartbeat.interval.ms")
    consumer_max_size: int = default_int("group.consumer.max.size")
    consumer_assignors: tuple[str, ...] = default_list("group.consumer.assignors")
    consumer_migration_policy: str = default_str("group.consumer.migration.policy")
    rebalance_protocols: tuple[str, ...] = default_list("group.coordinator.rebalance.protocols")

    KEYS = {
        "group.min.session.timeout.ms": "min_session_timeout_ms",
        "group.max.session.timeout.ms": "max_session_timeout_ms",
        "group.initial.rebalance.delay.ms": "initial_rebalance_delay_ms",
        "group.max.size": "max_size",
        "offsets.retention.minutes": "offsets_retention_ms",
        "offsets.retention.check.interval.ms": "offsets_retention_check_interval_ms",
        "offset.metadata.max.bytes": "offset_metadata_max_bytes",
        "group.consumer.session.timeout.ms": "consumer_session_timeout_ms",
        "group.consumer.min.session.timeout.ms": "consumer_min_session_timeout_ms",
        "group.consumer.max.session.timeout.ms": "consumer_max_session_timeout_ms",
        "group.consumer.heartbeat.interval.ms": "consumer_heartbeat_interval_ms",
        "group.consumer.min.heartbeat.interval.ms": "consumer_min_heartbeat_interval_ms",
        "group.consumer.max.heartbeat.interval.ms": "consumer_max_heartbeat_interval_ms",
        "group.consumer.max.size": "consumer_max_size",
        "group.consumer.assignors": "consumer_assignors",
        "group.consumer.migration.policy": "consumer_migration_policy",
        "group.coordinator.rebalance.protocols": "rebalance_protocols",
    }
    _LISTS = ("group.consumer.assignors", "group.coordinator.rebalance.protocols")
    _STRINGS = ("group.consumer.migration.policy",)

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> GroupConfig:
        """Build from broker settings keyed by Kafka's names; keys this class does not know are ignored."""
        values: dict[str, Any] = {}
        for key, attr in cls.KEYS.items():
            if key not in settings or settings[key] is None:
                continue
            raw = settings[key]
            if key in cls._LISTS:
                items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
                values[attr] = tuple(str(x).strip() for x in items if str(x).strip())
                continue
            if key in cls._STRINGS:
                values[attr] = str(raw).strip().lower()
                continue
            try:
                number = int(raw)
            except (TypeError, ValueError):
                raise ValueError(f"{key} must be an integer, got {raw!r}") from None
            values[attr] = number * 60_000 if key == "offsets.retention.minutes" else number
        if "consumer_assignors" in values:
            values["consumer_assignors"] = tuple(assignor_names(values["consumer_assignors"]))
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise ValueError naming the setting to change when the combination makes no sense."""
        if self.min_session_timeout_ms < 0:
            raise ValueError("group.min.session.timeout.ms must not be negative")
        if self.max_session_timeout_ms < self.min_session_timeout_ms:
            raise ValueError("group.max.session.timeout.ms must be at least group.min.session.timeout.ms")
        if self.initial_rebalance_delay_ms < 0:
            raise ValueError("group.initial.rebalance.delay.ms must not be negative")
        if self.max_size < 1:
            raise ValueError("group.max.size must be at least 1")
        if self.offsets_retention_ms < 1:
            raise ValueError("offsets.retention.minutes must be at least 1")
        if self.offsets_retention_check_interval_ms < 1:
            raise ValueError("offsets.retention.check.interval.ms must be at least 1")
        if self.offset_metadata_max_bytes < 0:
            raise ValueError("offset.metadata.max.bytes must not be negative")
        for name, value in (
            ("group.consumer.session.timeout.ms", self.consumer_session_timeout_ms),
            ("group.consumer.min.session.timeout.ms", self.consumer_min_session_timeout_ms),
            ("group.consumer.max.session.timeout.ms", self.consumer_max_session_timeout_ms),
            ("group.consumer.heartbeat.interval.ms", self.consumer_heartbeat_interval_ms),
            ("group.consumer.min.heartbeat.interval.ms", self.consumer_min_heartbeat_interval_ms),
            ("group.consumer.max.heartbeat.interval.ms", self.consumer_max_heartbeat_interval_ms),
            ("group.consumer.max.size", self.consumer_max_size),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1")
        # Kafka's own checks of these settings, with its messages.
        hb, lo_hb, hi_hb = (
            self.consumer_heartbeat_interval_ms,
            self.consumer_min_heartbeat_interval_ms,
            self.consumer_max_heartbeat_interval_ms,
        )
        st, lo_st, hi_st = (
            self.consumer_session_timeout_ms,
            self.consumer_min_session_timeout_ms,
            self.consumer_max_session_timeout_ms,
        )
        checks = [
            (
                hi_hb >= lo_hb,
                "group.consumer.max.heartbeat.interval.ms must be greater than or equal to "
                "group.consumer.min.heartbeat.interval.ms",
            ),
            (
                hb >= lo_hb,
                "group.consumer.heartbeat.interval.ms must be greater than or equal to "
                "group.consumer.min.heartbeat.interval.ms",
            ),
            (
                hb <= hi_hb,
                "group.consumer.heartbeat.interval.ms must be less than or equal to "
                "group.consumer.max.heartbeat.interval.ms",
            ),
            (
                hi_st >= lo_st,
                "group.consumer.max.session.timeout.ms must be greater than or equal to "
                "group.consumer.min.session.timeout.ms",
            ),
            (
                st >= lo_st,
                "group.consumer.session.timeout.ms must be greater than or equal to "
                "group.consumer.min.session.timeout.ms",
            ),
            (
                st <= hi_st,
                "group.consumer.session.timeout.ms must be less than or equal to "
                "group.consumer.max.session.timeout.ms",
            ),
            (
                hb < st,
                "group.consumer.heartbeat.interval.ms must be less than group.consumer.session.timeout.ms",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        assignor_names(self.consumer_assignors)
        if self.consumer_migration_policy not in MIGRATION_POLICIES:
            raise ValueError(
                f"group.consumer.migration.policy must be one of {', '.join(MIGRATION_POLICIES)}, "
                f"got {self.consumer_migration_policy!r}"
            )
        known = REBALANCE_PROTOCOLS + UNSERVED_PROTOCOLS
        unknown = [p for p in self.rebalance_protocols if p not in known]
        if unknown:
            raise ValueError(
                f"group.coordinator.rebalance.protocols: unknown protocol {unknown[0]!r} ({', '.join(known)})"
            )
        if "classic" not in self.rebalance_protocols:
            raise ValueError("group.coordinator.rebalance.protocols must contain classic")

    @property
    def consumer_protocol_enabled(self) -> bool:
        return "consumer" in self.rebalance_protocols

    @property
    def default_assignor(self) -> str:
        return self.consumer_assignors[0]

    @property
    def upgrade_enabled(self) -> bool:
        return self.consumer_migration_policy in ("bidirectional", "upgrade")

    @property
    def downgrade_enabled(self) -> bool:
        return self.consumer_migration_policy in ("bidirectional", "downgrade")


# Per-group configs (IncrementalAlterConfigs / DescribeConfigs on GROUP resources): name -> broker default.
GROUP_CONFIG_DEFAULTS = {
    "consumer.session.timeout.ms": "group.consumer.session.timeout.ms",
    "consumer.heartbeat.interval.ms": "group.consumer.heartbeat.interval.ms",
}
GROUP_CONFIG_DOCS = {
    "consumer.session.timeout.ms": "The timeout to detect client failures of a consumer group's members.",
    "consumer.heartbeat.interval.ms": "The heartbeat interval given to the members of a consumer group.",
}


def validate_group_configs(configs: Mapping[str, str], config: GroupConfig) -> dict[str, int]:
    """A group's dynamic configs as numbers, checked against the broker's bounds as Kafka checks them;
    ValueError with Kafka's message otherwise."""
    for name in configs:
        if name not in GROUP_CONFIG_DEFAULTS:
            raise ValueError(f"Unknown group config name: {name}")
    values: dict[str, int] = {}
    for name, raw in configs.items():
        try:
            values[name] = int(str(raw).strip())
        except ValueError:
            raise ValueError(
                f"Invalid value {raw} for configuration {name}: Not a number of type INT"
            ) from None
        if values[name] < 1:
            raise ValueError(f"Invalid value {raw} for configuration {name}: Value must be at least 1")
    hb = values.get("consumer.heartbeat.interval.ms", config.consumer_heartbeat_interval_ms)
    st = values.get("consumer.session.timeout.ms", config.consumer_session_timeout_ms)
    if hb < config.consumer_min_heartbeat_interval_ms:
        raise ValueError(
            "consumer.heartbeat.interval.ms must be greater than or equal to "
            "group.consumer.min.heartbeat.interval.ms"
        )
    if hb > config.consumer_max_heartbeat_interval_ms:
        raise ValueError(
            "consumer.heartbeat.interval.ms must be less than or equal to "
            "group.consumer.max.heartbeat.interval.ms"
        )
    if st < config.consumer_min_session_timeout_ms:
        raise ValueError(
            "consumer.session.timeout.ms must be greater than or equal to "
            "group.consumer.min.session.timeout.ms"
        )
    if st > config.consumer_max_session_timeout_ms:
        raise ValueError(
            "consumer.session.timeout.ms must be less than or equal to group.consumer.max.session.timeout.ms"
        )
    if st <= hb:
        raise ValueError("consumer.session.timeout.ms must be greater than consumer.heartbeat.interval.ms")
    return values
