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
# streams), so that a Kafka configuration starts as it is. Share groups are served while the share.version
# feature is at 1 or more, as in Kafka 4.2, whatever this list says; streams groups are not served.
UNSERVED_PROTOCOLS = ("share", "streams")
SHARE_ASSIGNORS = ("simple",)
ISOLATION_LEVELS = ("read_uncommitted", "read_committed")
# Kafka refreshes a consumer group's regular expressions at most once in this time.
REGEX_BATCH_REFRESH_MIN_INTERVAL_MS = 10_000


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
    consumer_regex_refresh_interval_ms: int = default_int("group.consumer.regex.refresh.interval.ms")
    consumer_assignors: tuple[str, ...] = default_list("group.consumer.assignors")
    consumer_migration_policy: str = default_str("group.consumer.migration.policy")
    rebalance_protocols: tuple[str, ...] = default_list("group.coordinator.rebalance.protocols")
    # Share groups (KIP-932) and their dead-letter topics (KIP-1191).
    share_session_timeout_ms: int = default_int("group.share.session.timeout.ms")
    share_min_session_timeout_ms: int = default_int("group.share.min.session.timeout.ms")
    share_max_session_timeout_ms: int = default_int("group.share.max.session.timeout.ms")
    share_heartbeat_interval_ms: int = default_int("group.share.heartbeat.interval.ms")
    share_min_heartbeat_interval_ms: int = default_int("group.share.min.heartbeat.interval.ms")
    share_max_heartbeat_interval_ms: int = default_int("group.share.max.heartbeat.interval.ms")
    share_max_size: int = default_int("group.share.max.size")
    share_assignors: tuple[str, ...] = default_list("group.share.assignors")
    share_delivery_count_limit: int = default_int("group.share.delivery.count.limit")
    share_record_lock_duration_ms: int = default_int("group.share.record.lock.duration.ms")
    share_min_record_lock_duration_ms: int = default_int("group.share.min.record.lock.duration.ms")
    share_max_record_lock_duration_ms: int = default_int("group.share.max.record.lock.duration.ms")
    share_partition_max_record_locks: int = default_int("group.share.partition.max.record.locks")
    share_max_share_sessions: int = default_int("group.share.max.share.sessions")
    dlq_topic_name_prefix: str = default_str("errors.deadletterqueue.topic.name.prefix")
    dlq_auto_create_topics_enable: bool = (
        default_str("errors.deadletterqueue.auto.create.topics.enable") == "true"
    )

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
        "group.consumer.regex.refresh.interval.ms": "consumer_regex_refresh_interval_ms",
        "group.consumer.assignors": "consumer_assignors",
        "group.consumer.migration.policy": "consumer_migration_policy",
        "group.coordinator.rebalance.protocols": "rebalance_protocols",
        "group.share.session.timeout.ms": "share_session_timeout_ms",
        "group.share.min.session.timeout.ms": "share_min_session_timeout_ms",
        "group.share.max.session.timeout.ms": "share_max_session_timeout_ms",
        "group.share.heartbeat.interval.ms": "share_heartbeat_interval_ms",
        "group.share.min.heartbeat.interval.ms": "share_min_heartbeat_interval_ms",
        "group.share.max.heartbeat.interval.ms": "share_max_heartbeat_interval_ms",
        "group.share.max.size": "share_max_size",
        "group.share.assignors": "share_assignors",
        "group.share.delivery.count.limit": "share_delivery_count_limit",
        "group.share.record.lock.duration.ms": "share_record_lock_duration_ms",
        "group.share.min.record.lock.duration.ms": "share_min_record_lock_duration_ms",
        "group.share.max.record.lock.duration.ms": "share_max_record_lock_duration_ms",
        "group.share.partition.max.record.locks": "share_partition_max_record_locks",
        "group.share.max.share.sessions": "share_max_share_sessions",
        "errors.deadletterqueue.topic.name.prefix": "dlq_topic_name_prefix",
        "errors.deadletterqueue.auto.create.topics.enable": "dlq_auto_create_topics_enable",
    }
    _LISTS = ("group.consumer.assignors", "group.coordinator.rebalance.protocols", "group.share.assignors")
    _STRINGS = ("group.consumer.migration.policy",)
    _RAW_STRINGS = ("errors.deadletterqueue.topic.name.prefix",)
    _BOOLS = ("errors.deadletterqueue.auto.create.topics.enable",)

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
            if key in cls._RAW_STRINGS:
                values[attr] = str(raw).strip()
                continue
            if key in cls._BOOLS:
                values[attr] = raw if isinstance(raw, bool) else str(raw).strip().lower() == "true"
                continue
            try:
                number = int(raw)
            except (TypeError, ValueError):
                raise ValueError(f"{key} must be an integer, got {raw!r}") from None
            values[attr] = number * 60_000 if key == "offsets.retention.minutes" else number
        if "consumer_assignors" in values:
            values["consumer_assignors"] = tuple(assignor_names(values["consumer_assignors"]))
        if "share_assignors" in values:
            # Kafka's class name of the simple assignor names it too.
            values["share_assignors"] = tuple(
                "simple" if a.rsplit(".", 1)[-1] == "SimpleAssignor" else a for a in values["share_assignors"]
            )
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
        if self.consumer_regex_refresh_interval_ms < REGEX_BATCH_REFRESH_MIN_INTERVAL_MS:
            raise ValueError(
                f"Invalid value {self.consumer_regex_refresh_interval_ms} for configuration "
                "group.consumer.regex.refresh.interval.ms: Value must be at least "
                f"{REGEX_BATCH_REFRESH_MIN_INTERVAL_MS}"
            )
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
        self._validate_share()

    def _validate_share(self) -> None:
        """Kafka's checks of the share group settings (GroupCoordinatorConfig, ShareGroupConfig)."""
        ranges = [
            ("group.share.max.size", self.share_max_size, 1, 1000),
            ("group.share.delivery.count.limit", self.share_delivery_count_limit, 2, 10),
            ("group.share.record.lock.duration.ms", self.share_record_lock_duration_ms, 1000, 3_600_000),
            ("group.share.min.record.lock.duration.ms", self.share_min_record_lock_duration_ms, 1000, 30_000),
            (
                "group.share.max.record.lock.duration.ms",
                self.share_max_record_lock_duration_ms,
                30_000,
                3_600_000,
            ),
            ("group.share.partition.max.record.locks", self.share_partition_max_record_locks, 100, 10_000),
            ("group.share.max.share.sessions", self.share_max_share_sessions, 1, 2**31 - 1),
        ]
        for name, value, lo, hi in ranges:
            if not lo <= value <= hi:
                raise ValueError(f"{name} must be between {lo} and {hi}, got {value}")
        for name, value in (
            ("group.share.session.timeout.ms", self.share_session_timeout_ms),
            ("group.share.min.session.timeout.ms", self.share_min_session_timeout_ms),
            ("group.share.max.session.timeout.ms", self.share_max_session_timeout_ms),
            ("group.share.heartbeat.interval.ms", self.share_heartbeat_interval_ms),
            ("group.share.min.heartbeat.interval.ms", self.share_min_heartbeat_interval_ms),
            ("group.share.max.heartbeat.interval.ms", self.share_max_heartbeat_interval_ms),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1")
        hb, lo_hb, hi_hb = (
            self.share_heartbeat_interval_ms,
            self.share_min_heartbeat_interval_ms,
            self.share_max_heartbeat_interval_ms,
        )
        st, lo_st, hi_st = (
            self.share_session_timeout_ms,
            self.share_min_session_timeout_ms,
            self.share_max_session_timeout_ms,
        )
        lock, lo_lock, hi_lock = (
            self.share_record_lock_duration_ms,
            self.share_min_record_lock_duration_ms,
            self.share_max_record_lock_duration_ms,
        )
        checks = [
            (
                hi_hb >= lo_hb,
                "group.share.max.heartbeat.interval.ms",
                ">=",
                "group.share.min.heartbeat.interval.ms",
            ),
            (hb >= lo_hb, "group.share.heartbeat.interval.ms", ">=", "group.share.min.heartbeat.interval.ms"),
            (hb <= hi_hb, "group.share.heartbeat.interval.ms", "<=", "group.share.max.heartbeat.interval.ms"),
            (
                hi_st >= lo_st,
                "group.share.max.session.timeout.ms",
                ">=",
                "group.share.min.session.timeout.ms",
            ),
            (st >= lo_st, "group.share.session.timeout.ms", ">=", "group.share.min.session.timeout.ms"),
            (st <= hi_st, "group.share.session.timeout.ms", "<=", "group.share.max.session.timeout.ms"),
            (hb < st, "group.share.heartbeat.interval.ms", "<", "group.share.session.timeout.ms"),
            (
                lock >= lo_lock,
                "group.share.record.lock.duration.ms",
                ">=",
                "group.share.min.record.lock.duration.ms",
            ),
            (
                hi_lock >= lock,
                "group.share.max.record.lock.duration.ms",
                ">=",
                "group.share.record.lock.duration.ms",
            ),
            (
                self.share_max_share_sessions >= self.share_max_size,
                "group.share.max.share.sessions",
                ">=",
                "group.share.max.size",
            ),
        ]
        words = {">=": "greater than or equal to", "<=": "less than or equal to", "<": "less than"}
        for ok, name, op, other in checks:
            if not ok:
                raise ValueError(f"{name} must be {words[op]} {other}")
        unknown = [a for a in self.share_assignors if a not in SHARE_ASSIGNORS]
        if unknown or not self.share_assignors:
            raise ValueError(
                f"group.share.assignors: unknown assignor {unknown[0] if unknown else ''!r} "
                f"({', '.join(SHARE_ASSIGNORS)})"
            )

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


@dataclass(frozen=True)
class GroupConfigSpec:
    """A per-group config (IncrementalAlterConfigs / DescribeConfigs on GROUP resources): its type
    (``int``, ``string``, ``boolean``), the broker setting it defaults to (else ``default``) and its doc."""

    name: str
    kind: str
    broker_attr: str | None
    default: str
    doc: str

    @property
    def config_type(self) -> int:
        """DescribeConfigs' config type: BOOLEAN 1, STRING 2, INT 3."""
        return {"boolean": 1, "string": 2, "int": 3}[self.kind]

    def broker_value(self, config: GroupConfig) -> str:
        if self.broker_attr is None:
            return self.default
        value = getattr(config, self.broker_attr)
        return str(value).lower() if isinstance(value, bool) else str(value)


def _spec(name: str, kind: str, broker_attr: str | None, doc: str, default: str = "") -> GroupConfigSpec:
    return GroupConfigSpec(name, kind, broker_attr, default, doc)


GROUP_CONFIGS: dict[str, GroupConfigSpec] = {
    s.name: s
    for s in (
        _spec(
            "consumer.session.timeout.ms",
            "int",
            "consumer_session_timeout_ms",
            "The timeout to detect client failures of a consumer group's members.",
        ),
        _spec(
            "consumer.heartbeat.interval.ms",
            "int",
            "consumer_heartbeat_interval_ms",
            "The heartbeat interval given to the members of a consumer group.",
        ),
        _spec(
            "share.session.timeout.ms",
            "int",
            "share_session_timeout_ms",
            "The timeout to detect client failures when using the share group protocol.",
        ),
        _spec(
            "share.heartbeat.interval.ms",
            "int",
            "share_heartbeat_interval_ms",
            "The heartbeat interval given to the members of a share group.",
        ),
        _spec(
            "share.record.lock.duration.ms",
            "int",
            "share_record_lock_duration_ms",
            "The record acquisition lock duration in milliseconds for share groups.",
        ),
        _spec(
            "share.delivery.count.limit",
            "int",
            "share_delivery_count_limit",
            "The maximum number of delivery attempts for a record delivered to a share group.",
        ),
        _spec(
            "share.partition.max.record.locks",
            "int",
            "share_partition_max_record_locks",
            "Share-group record lock limit per share-partition.",
        ),
        _spec(
            "share.auto.offset.reset",
            "string",
            None,
            "The strategy to initialize the share-partition start offset: earliest, latest, or "
            "by_duration:<ISO 8601 duration> (PnDTnHnMn.nS) back from the current time.",
            "latest",
        ),
        _spec(
            "share.isolation.level",
            "string",
            None,
            "Controls how to read records written transactionally: read_committed delivers only committed "
            "transactional records, read_uncommitted all of them.",
            "read_uncommitted",
        ),
        _spec(
            "errors.deadletterqueue.topic.name",
            "string",
            None,
            "The name of the topic to be used as the dead-letter queue (DLQ) topic for this share group. If "
            "blank (the default), the group does not have a DLQ topic.",
        ),
        _spec(
            "errors.deadletterqueue.copy.record.enable",
            "boolean",
            None,
            "When writing onto the dead-letter queue topic, whether to copy the original record onto the DLQ "
            "topic, or just write a record containing the context information headers.",
            "false",
        ),
    )
}

GroupConfigValue = int | str


def parse_duration(text: str) -> int:
    """An ISO 8601 duration (``PnDTnHnMn.nS``, Java's ``Duration.parse``) in milliseconds; ValueError."""
    import re

    m = re.fullmatch(
        r"([-+]?)P(?:([-+]?\d+)D)?(?:T(?:([-+]?\d+)H)?(?:([-+]?\d+)M)?(?:([-+]?\d+(?:[.,]\d{0,9})?)S)?)?",
        text.strip().upper(),
    )
    if m is None or text.strip().upper() in ("P", "PT") or text.strip().upper().endswith("T"):
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    sign = -1 if m.group(1) == "-" else 1
    days, hours, minutes = (int(g) if g else 0 for g in m.group(2, 3, 4))
    seconds = float(m.group(5).replace(",", ".")) if m.group(5) else 0.0
    return sign * round(((days * 24 + hours) * 60 + minutes) * 60_000 + seconds * 1000)


def check_auto_offset_reset(value: str) -> str:
    """``share.auto.offset.reset`` as Kafka validates it (ShareGroupAutoOffsetResetStrategy); ValueError."""
    v = value.strip().lower()
    if v in ("earliest", "latest"):
        return v
    if v.startswith("by_duration:"):
        try:
            ms = parse_duration(value.strip()[len("by_duration:") :])
        except ValueError:
            raise ValueError(
                f"Invalid value {value} for configuration share.auto.offset.reset: Unable to parse duration "
                "string in by_duration"
            ) from None
        if ms < 0:
            raise ValueError(
                f"Invalid value {value} for configuration share.auto.offset.reset: Negative duration is not "
                "allowed."
            )
        return "by_duration:" + value.strip()[len("by_duration:") :]
    raise ValueError(
        f"Invalid value {value} for configuration share.auto.offset.reset: the offset reset strategy must be "
        "earliest, latest or by_duration:<duration>"
    )


def validate_group_configs(configs: Mapping[str, str], config: GroupConfig) -> dict[str, GroupConfigValue]:
    """A group's dynamic configs as numbers and strings, checked against the broker's bounds as Kafka checks
    them; ValueError with Kafka's message otherwise."""
    for name in configs:
        if name not in GROUP_CONFIGS:
            raise ValueError(f"Unknown group config name: {name}")
    values: dict[str, GroupConfigValue] = {}
    for name, raw in configs.items():
        spec = GROUP_CONFIGS[name]
        text = str(raw).strip()
        if spec.kind == "int":
            try:
                number = int(text)
            except ValueError:
                raise ValueError(
                    f"Invalid value {raw} for configuration {name}: Not a number of type INT"
                ) from None
            floor = 1000 if name == "share.record.lock.duration.ms" else 1
            if number < floor:
                raise ValueError(
                    f"Invalid value {raw} for configuration {name}: Value must be at least {floor}"
                )
            values[name] = number
        elif spec.kind == "boolean":
            if text.lower() not in ("true", "false"):
                raise ValueError(
                    f"Invalid value {raw} for configuration {name}: Expected value to be either true or false"
                )
            values[name] = text.lower()
        elif name == "share.auto.offset.reset":
            values[name] = check_auto_offset_reset(text)
        elif name == "share.isolation.level":
            if text.lower() not in ISOLATION_LEVELS:
                raise ValueError(
                    f"Invalid value {raw} for configuration {name}: String must be one of: "
                    + ", ".join(ISOLATION_LEVELS)
                )
            values[name] = text.lower()
        elif name == "errors.deadletterqueue.topic.name":
            if text.startswith("__"):
                raise ValueError(f"{name}: DLQ topic name must not start with '__'")
            values[name] = text
        else:
            values[name] = text

    def value_of(name: str, attr: str) -> int:
        v = values.get(name)
        return int(v) if v is not None else int(getattr(config, attr))

    hb = value_of("consumer.heartbeat.interval.ms", "consumer_heartbeat_interval_ms")
    st = value_of("consumer.session.timeout.ms", "consumer_session_timeout_ms")
    share_hb = value_of("share.heartbeat.interval.ms", "share_heartbeat_interval_ms")
    share_st = value_of("share.session.timeout.ms", "share_session_timeout_ms")
    lock = value_of("share.record.lock.duration.ms", "share_record_lock_duration_ms")
    checks = [
        (
            hb >= config.consumer_min_heartbeat_interval_ms,
            "consumer.heartbeat.interval.ms",
            ">=",
            "group.consumer.min.heartbeat.interval.ms",
        ),
        (
            hb <= config.consumer_max_heartbeat_interval_ms,
            "consumer.heartbeat.interval.ms",
            "<=",
            "group.consumer.max.heartbeat.interval.ms",
        ),
        (
            st >= config.consumer_min_session_timeout_ms,
            "consumer.session.timeout.ms",
            ">=",
            "group.consumer.min.session.timeout.ms",
        ),
        (
            st <= config.consumer_max_session_timeout_ms,
            "consumer.session.timeout.ms",
            "<=",
            "group.consumer.max.session.timeout.ms",
        ),
        (
            share_hb >= config.share_min_heartbeat_interval_ms,
            "share.heartbeat.interval.ms",
            ">=",
            "group.share.min.heartbeat.interval.ms",
        ),
        (
            share_hb <= config.share_max_heartbeat_interval_ms,
            "share.heartbeat.interval.ms",
            "<=",
            "group.share.max.heartbeat.interval.ms",
        ),
        (
            share_st >= config.share_min_session_timeout_ms,
            "share.session.timeout.ms",
            ">=",
            "group.share.min.session.timeout.ms",
        ),
        (
            share_st <= config.share_max_session_timeout_ms,
            "share.session.timeout.ms",
            "<=",
            "group.share.max.session.timeout.ms",
        ),
        (
            lock >= config.share_min_record_lock_duration_ms,
            "share.record.lock.duration.ms",
            ">=",
            "group.share.min.record.lock.duration.ms",
        ),
        (
            lock <= config.share_max_record_lock_duration_ms,
            "share.record.lock.duration.ms",
            "<=",
            "group.share.max.record.lock.duration.ms",
        ),
    ]
    words = {">=": "greater than or equal to", "<=": "less than or equal to"}
    for ok, name, op, other in checks:
        if not ok:
            raise ValueError(f"{name} must be {words[op]} {other}")
    for name, lo, hi in (
        ("share.delivery.count.limit", 2, 10),
        ("share.partition.max.record.locks", 100, 10_000),
    ):
        v = values.get(name)
        if v is not None and not lo <= int(v) <= hi:
            raise ValueError(f"{name} must be in the range {lo} to {hi} inclusive.")
    if st <= hb:
        raise ValueError("consumer.session.timeout.ms must be greater than consumer.heartbeat.interval.ms")
    if share_st <= share_hb:
        raise ValueError("share.session.timeout.ms must be greater than share.heartbeat.interval.ms")
    return values
