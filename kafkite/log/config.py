"""Topic-level log configuration: the one place for topic config names, types, defaults and documentation.

Names and defaults follow Apache Kafka's topic configs. ``TOPIC_CONFIGS`` describes every key kafkite
knows (the admin layer answers DescribeConfigs from it), ``TOPIC_CONFIG_DEFAULTS`` maps each name to its
default as a string, and ``LogConfig.from_props`` turns a mapping of Kafka names to strings into a typed
``LogConfig``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

LONG_MAX = (1 << 63) - 1
INT_MAX = (1 << 31) - 1

# DescribeConfigs config_type codes (org.apache.kafka.clients.admin.ConfigEntry.ConfigType)
CONFIG_TYPE_CODES: dict[str, int] = {
    "UNKNOWN": 0,
    "BOOLEAN": 1,
    "STRING": 2,
    "INT": 3,
    "SHORT": 4,
    "LONG": 5,
    "DOUBLE": 6,
    "LIST": 7,
    "CLASS": 8,
    "PASSWORD": 9,
}

COMPRESSION_TYPES = ("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer")
TIMESTAMP_TYPES = ("CreateTime", "LogAppendTime")
CLEANUP_POLICIES = ("delete", "compact")


class ConfigKey(NamedTuple):
    """One topic config: Kafka name, LogConfig attribute, Kafka type name, default (string form), doc, the
    valid range or choices, and whether kafkite acts on it (False: stored and described, no effect)."""

    name: str
    attr: str
    type: str
    default: str
    doc: str
    minimum: int | float | None = None
    choices: tuple[str, ...] | None = None
    maximum: int | float | None = None
    acts: bool = True
    check: Callable[[Any], str | None] | None = None  # a further check: the reason a value is refused

    @property
    def type_code(self) -> int:
        return CONFIG_TYPE_CODES[self.type]


def _gzip_level(level: Any) -> str | None:
    if level > 9 or (level < 1 and level != -1):
        return "must be between 1 and 9 or equal to -1"
    return None


def _throttled_replicas(items: Any) -> str | None:
    """Kafka's rule: ``*``, or ``partition:broker`` pairs of non-negative integers."""
    values = list(items)
    if values == ["*"]:
        return None
    for v in values:
        left, sep, right = v.partition(":")
        if not sep or not left.strip().isdigit() or not right.strip().isdigit():
            return "must be the literal '*' or a list of replicas in the form [PartitionId]:[BrokerId],..."
    return None


_KEYS: tuple[ConfigKey, ...] = (
    ConfigKey(
        "cleanup.policy",
        "cleanup_policy",
        "LIST",
        "delete",
        "Retention strategy for old segments: delete, compact, or both.",
        choices=CLEANUP_POLICIES,
    ),
    ConfigKey(
        "compression.type",
        "compression_type",
        "STRING",
        "producer",
        "Final compression of the topic's data; 'producer' keeps the producer's codec.",
        choices=COMPRESSION_TYPES,
    ),
    ConfigKey(
        "delete.retention.ms",
        "delete_retention_ms",
        "LONG",
        "86400000",
        "How long delete tombstones are kept on compacted topics.",
        minimum=0,
    ),
    ConfigKey(
        "file.delete.delay.ms",
        "file_delete_delay_ms",
        "LONG",
        "60000",
        "How long a deleted segment's open files are kept before they are closed.",
        minimum=0,
    ),
    ConfigKey(
        "flush.messages",
        "flush_messages",
        "LONG",
        str(LONG_MAX),
        "Force an fsync after this many messages have been appended since the last one.",
        minimum=1,
    ),
    ConfigKey(
        "flush.ms",
        "flush_ms",
        "LONG",
        str(LONG_MAX),
        "Force an fsync when this much time has passed since the last one.",
        minimum=0,
    ),
    ConfigKey(
        "index.interval.bytes",
        "index_interval_bytes",
        "INT",
        "4096",
        "Bytes of log between two entries of the sparse offset index.",
        minimum=0,
    ),
    ConfigKey(
        "max.compaction.lag.ms",
        "max_compaction_lag_ms",
        "LONG",
        str(LONG_MAX),
        "Longest time a message stays ineligible for compaction.",
        minimum=1,
    ),
    ConfigKey(
        "max.message.bytes",
        "max_message_bytes",
        "INT",
        "1048588",
        "Largest record batch size allowed on the topic.",
        minimum=0,
    ),
    ConfigKey(
        "message.timestamp.after.max.ms",
        "message_timestamp_after_max_ms",
        "LONG",
        "3600000",
        "Largest allowed amount a CreateTime timestamp may lie ahead of the broker's clock.",
        minimum=0,
    ),
    ConfigKey(
        "message.timestamp.before.max.ms",
        "message_timestamp_before_max_ms",
        "LONG",
        str(LONG_MAX),
        "Largest allowed amount a CreateTime timestamp may lie behind the broker's clock.",
        minimum=0,
    ),
    ConfigKey(
        "message.timestamp.type",
        "message_timestamp_type",
        "STRING",
        "CreateTime",
        "Whether record timestamps are the producer's (CreateTime) or the broker's (LogAppendTime).",
        choices=TIMESTAMP_TYPES,
    ),
    ConfigKey(
        "min.cleanable.dirty.ratio",
        "min_cleanable_dirty_ratio",
        "DOUBLE",
        "0.5",
        "Dirty-to-total ratio above which the log is compacted.",
        minimum=0.0,
        maximum=1.0,
    ),
    ConfigKey(
        "min.compaction.lag.ms",
        "min_compaction_lag_ms",
        "LONG",
        "0",
        "Shortest time a message stays uncompacted.",
        minimum=0,
    ),
    ConfigKey(
        "min.insync.replicas",
        "min_insync_replicas",
        "INT",
        "1",
        "Minimum replicas that must acknowledge a write with acks=all; not enforced by kafkite (its one copy"
        " of a partition is the whole ISR, and topics copied from a replicated cluster keep producing).",
        minimum=1,
        acts=False,
    ),
    ConfigKey(
        "preallocate",
        "preallocate",
        "BOOLEAN",
        "false",
        "Preallocate segment files on disk when a segment is created; not applied by kafkite (segments"
        " grow as they are written).",
        acts=False,
    ),
    ConfigKey(
        "retention.bytes",
        "retention_bytes",
        "LONG",
        "-1",
        "Largest size a partition may grow to before old segments are deleted; -1 means no limit.",
        minimum=-1,
    ),
    ConfigKey(
        "retention.ms",
        "retention_ms",
        "LONG",
        "604800000",
        "How long segments are kept before they are deleted; -1 means no limit.",
        minimum=-1,
    ),
    ConfigKey(
        "segment.bytes",
        "segment_bytes",
        "INT",
        "1073741824",
        "Size at which a partition's active segment is rolled.",
        minimum=14,
    ),
    ConfigKey(
        "segment.index.bytes",
        "segment_index_bytes",
        "INT",
        "10485760",
        "Largest size of a segment's offset index; the segment rolls when it is full.",
        minimum=8,
    ),
    ConfigKey(
        "segment.jitter.ms",
        "segment_jitter_ms",
        "LONG",
        "0",
        "Largest random jitter subtracted from segment.ms.",
        minimum=0,
    ),
    ConfigKey(
        "segment.ms",
        "segment_ms",
        "LONG",
        "604800000",
        "Age at which a partition's active segment is rolled even if it is not full.",
        minimum=1,
    ),
    ConfigKey(
        "unclean.leader.election.enable",
        "unclean_leader_election_enable",
        "BOOLEAN",
        "false",
        "Whether an out-of-sync replica may become leader; nothing to elect with one replica.",
        acts=False,
    ),
    ConfigKey(
        "errors.deadletterqueue.group.enable",
        "errors_deadletterqueue_group_enable",
        "BOOLEAN",
        "false",
        "Enable this topic to be used as a dead-letter queue for share groups (KIP-1191); otherwise share "
        "groups naming it as their dead-letter topic are refused.",
    ),
)

# Kafka's topic configs that kafkite accepts (validated as Kafka validates them), stores and describes, and
# does not act on: per-codec compression levels, replication throttles, tiered storage.
_KEYS += (
    ConfigKey(
        "compression.gzip.level",
        "compression_gzip_level",
        "INT",
        "-1",
        "gzip level when compression.type is gzip (1-9, -1: the codec's default); not applied by kafkite.",
        acts=False,
        check=_gzip_level,
    ),
    ConfigKey(
        "compression.lz4.level",
        "compression_lz4_level",
        "INT",
        "9",
        "lz4 level when compression.type is lz4; not applied by kafkite.",
        minimum=1,
        maximum=17,
        acts=False,
    ),
    ConfigKey(
        "compression.zstd.level",
        "compression_zstd_level",
        "INT",
        "3",
        "zstd level when compression.type is zstd; not applied by kafkite.",
        minimum=-131072,
        maximum=22,
        acts=False,
    ),
    ConfigKey(
        "leader.replication.throttled.replicas",
        "leader_replication_throttled_replicas",
        "LIST",
        "",
        "Replicas whose replication the leader throttles: partition:broker,... or *; one replica here.",
        acts=False,
        check=_throttled_replicas,
    ),
    ConfigKey(
        "follower.replication.throttled.replicas",
        "follower_replication_throttled_replicas",
        "LIST",
        "",
        "Replicas whose replication followers throttle: partition:broker,... or *; one replica here.",
        acts=False,
        check=_throttled_replicas,
    ),
    ConfigKey(
        "remote.storage.enable",
        "remote_storage_enable",
        "BOOLEAN",
        "false",
        "Tier the topic's old segments to remote storage; needs remote.log.storage.system.enable.",
        acts=False,
    ),
    ConfigKey(
        "local.retention.ms",
        "local_retention_ms",
        "LONG",
        "-2",
        "How long tiered segments stay on local disk (-2: retention.ms).",
        minimum=-2,
        acts=False,
    ),
    ConfigKey(
        "local.retention.bytes",
        "local_retention_bytes",
        "LONG",
        "-2",
        "Local bytes kept per partition of a tiered topic (-2: retention.bytes).",
        minimum=-2,
        acts=False,
    ),
    ConfigKey(
        "remote.log.copy.disable",
        "remote_log_copy_disable",
        "BOOLEAN",
        "false",
        "Stop copying a tiered topic's segments to remote storage; what is there stays readable.",
        acts=False,
    ),
    ConfigKey(
        "remote.log.delete.on.disable",
        "remote_log_delete_on_disable",
        "BOOLEAN",
        "false",
        "Delete a topic's remote segments when tiered storage is turned off for it.",
        acts=False,
    ),
)

TOPIC_CONFIGS: dict[str, ConfigKey] = {k.name: k for k in _KEYS}

_VERSION = re.compile(r"\d+\.\d+(\.\d+)?(-IV\d+)?")

# Topic configs of Kafka 3.x that Kafka 4.0 removed, as Kafka 3.x validated them: an older client may still
# send them (kafkite.broker.configs decides by the request version whether they are refused or ignored).
REMOVED_TOPIC_CONFIGS: dict[str, ConfigKey] = {
    k.name: k
    for k in (
        ConfigKey(
            "message.format.version", "", "STRING", "3.0-IV1", "The record format version (always v2)."
        ),
        ConfigKey(
            "message.timestamp.difference.max.ms",
            "",
            "LONG",
            str(LONG_MAX),
            "Largest difference between a CreateTime timestamp and the broker's clock.",
            minimum=0,
        ),
        ConfigKey(
            "message.downconversion.enable", "", "BOOLEAN", "true", "Convert records down for old clients."
        ),
    )
}


def parse_removed_config(name: str, text: str) -> Any:
    """Validate a removed topic config's value as Kafka 3.x did; raises ValueError naming the key."""
    key = REMOVED_TOPIC_CONFIGS[name]
    if name == "message.format.version":
        if not _VERSION.fullmatch(text.strip()):
            raise ValueError(f"invalid value {text!r} for topic config {name!r}: not a Kafka version")
        return text.strip()
    try:
        value = _PARSERS[key.type](text)
    except ValueError as e:
        raise ValueError(f"invalid value {text!r} for topic config {name!r}: {e}") from None
    if key.minimum is not None and value < key.minimum:
        raise ValueError(f"invalid value {text!r} for topic config {name!r}: must be at least {key.minimum}")
    return value


TOPIC_CONFIG_DEFAULTS: dict[str, str] = {k.name: k.default for k in _KEYS}
TOPIC_CONFIG_DOCS: dict[str, str] = {k.name: k.doc for k in _KEYS}
TOPIC_CONFIG_TYPES: dict[str, str] = {k.name: k.type for k in _KEYS}


def _parse_int(text: str, bits: int) -> int:
    value = int(text.strip())
    limit = 1 << (bits - 1)
    if not -limit <= value < limit:
        raise ValueError(f"{value} does not fit in {bits} bits")
    return value


def _parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t == "true":
        return True
    if t == "false":
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _parse_list(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


_PARSERS: dict[str, Callable[[str], Any]] = {
    "INT": lambda s: _parse_int(s, 32),
    "SHORT": lambda s: _parse_int(s, 16),
    "LONG": lambda s: _parse_int(s, 64),
    "DOUBLE": lambda s: float(s.strip()),
    "BOOLEAN": _parse_bool,
    "STRING": lambda s: s.strip(),
    "LIST": _parse_list,
}


def parse_config_value(name: str, text: str) -> Any:
    """Parse and validate one topic config value; raises ValueError naming the key when it is invalid."""
    key = TOPIC_CONFIGS.get(name)
    if key is None:
        raise ValueError(f"unknown topic config {name!r}")
    try:
        value = _PARSERS[key.type](text)
    except ValueError as e:
        raise ValueError(f"invalid value {text!r} for topic config {name!r}: {e}") from None
    if key.minimum is not None and value < key.minimum:
        raise ValueError(f"invalid value {text!r} for topic config {name!r}: must be at least {key.minimum}")
    if key.maximum is not None and value > key.maximum:
        raise ValueError(f"invalid value {text!r} for topic config {name!r}: must be at most {key.maximum}")
    if key.choices is not None:
        chosen = value if isinstance(value, tuple) else (value,)
        bad = [v for v in chosen if v not in key.choices]
        if bad:
            raise ValueError(
                f"invalid value {text!r} for topic config {name!r}: expected one of {', '.join(key.choices)}"
            )
    if key.check is not None:
        why = key.check(value)
        if why is not None:
            raise ValueError(f"invalid value {text!r} for topic config {name!r}: {why}")
    return value


def validate_topic_configs(props: Mapping[str, str], defaults: Mapping[str, str] | None = None) -> None:
    """Check topic-level overrides (CreateTopics, AlterConfigs): every key known, every value valid, and
    the values consistent with each other and with ``defaults`` (Kafka's cross-checks)."""
    values = {name: parse_config_value(name, text) for name, text in props.items()}
    merged = dict(defaults or {})
    merged.update(props)
    lag = ("min.compaction.lag.ms", "max.compaction.lag.ms")
    if any(k in values for k in lag):
        low, high = (parse_config_value(k, merged.get(k, TOPIC_CONFIG_DEFAULTS[k])) for k in lag)
        if low > high:
            raise ValueError(
                f"conflict topic config setting min.compaction.lag.ms ({low}) >"
                f" max.compaction.lag.ms ({high})"
            )


@dataclass(frozen=True)
class LogConfig:
    """Typed topic configuration. Field defaults equal ``TOPIC_CONFIG_DEFAULTS``."""

    cleanup_policy: tuple[str, ...] = ("delete",)
    compression_type: str = "producer"
    delete_retention_ms: int = 86_400_000
    file_delete_delay_ms: int = 60_000
    flush_messages: int = LONG_MAX
    flush_ms: int = LONG_MAX
    index_interval_bytes: int = 4096
    max_compaction_lag_ms: int = LONG_MAX
    max_message_bytes: int = 1_048_588
    message_timestamp_after_max_ms: int = 3_600_000
    message_timestamp_before_max_ms: int = LONG_MAX
    message_timestamp_type: str = "CreateTime"
    min_cleanable_dirty_ratio: float = 0.5
    min_compaction_lag_ms: int = 0
    min_insync_replicas: int = 1
    preallocate: bool = False
    retention_bytes: int = -1
    retention_ms: int = 604_800_000
    segment_bytes: int = 1 << 30
    segment_index_bytes: int = 10 * 1024 * 1024
    segment_jitter_ms: int = 0
    segment_ms: int = 604_800_000
    unclean_leader_election_enable: bool = False
    errors_deadletterqueue_group_enable: bool = False
    # Stored and described; kafkite does not act on them.
    compression_gzip_level: int = -1
    compression_lz4_level: int = 9
    compression_zstd_level: int = 3
    leader_replication_throttled_replicas: tuple[str, ...] = ()
    follower_replication_throttled_replicas: tuple[str, ...] = ()
    remote_storage_enable: bool = False
    local_retention_ms: int = -2
    local_retention_bytes: int = -2
    remote_log_copy_disable: bool = False
    remote_log_delete_on_disable: bool = False

    @classmethod
    def from_props(cls, props: Mapping[str, str], *, strict: bool = False) -> LogConfig:
        """Build a config from Kafka topic config names; unknown names are ignored unless ``strict``.

        Raises ValueError naming the key for a value that does not parse or is out of range.
        """
        kwargs: dict[str, Any] = {}
        for name, text in props.items():
            key = TOPIC_CONFIGS.get(name)
            if key is None:
                if strict:
                    raise ValueError(f"unknown topic config {name!r}")
                continue
            kwargs[key.attr] = parse_config_value(name, text)
        return cls(**kwargs)

    @property
    def log_append_time(self) -> bool:
        return self.message_timestamp_type == "LogAppendTime"

    @property
    def delete_enabled(self) -> bool:
        """Whether time and size retention apply (``cleanup.policy`` contains ``delete``)."""
        return "delete" in self.cleanup_policy

    @property
    def compact_enabled(self) -> bool:
        """Whether the log cleaner compacts the log (``cleanup.policy`` contains ``compact``)."""
        return "compact" in self.cleanup_policy

    def to_props(self) -> dict[str, str]:
        """Every key as Kafka names and strings (the inverse of ``from_props``)."""
        out: dict[str, str] = {}
        for key in _KEYS:
            value = getattr(self, key.attr)
            if isinstance(value, tuple):
                out[key.name] = ",".join(value)
            elif isinstance(value, bool):
                out[key.name] = "true" if value else "false"
            else:
                out[key.name] = str(value)
        return out


def _check_defaults() -> None:
    names = {f.name for f in fields(LogConfig)}
    attrs = {k.attr for k in _KEYS}
    if names != attrs:  # pragma: no cover - guards the table against drift at import time
        raise RuntimeError(f"LogConfig fields and TOPIC_CONFIGS differ: {sorted(names ^ attrs)}")
    # One source of defaults: the dataclass's must be the table's.
    defaults = {f.name: f.default for f in fields(LogConfig)}
    differ = [k.name for k in _KEYS if parse_config_value(k.name, k.default) != defaults[k.attr]]
    if differ:  # pragma: no cover
        raise RuntimeError(f"LogConfig defaults differ from TOPIC_CONFIGS for {differ}")


_check_defaults()
