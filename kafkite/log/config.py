"""Topic-level log configuration: the one place for topic config names, types, defaults and documentation.

Names and defaults follow Apache Kafka's topic configs. ``TOPIC_CONFIGS`` describes every key kafkite
knows (the admin layer answers DescribeConfigs from it), ``TOPIC_CONFIG_DEFAULTS`` maps each name to its
default as a string, and ``LogConfig.from_props`` turns a mapping of Kafka names to strings into a typed
``LogConfig``.
"""

from __future__ import annotations

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
    """One topic config: Kafka name, LogConfig attribute, Kafka type name, default (string form), doc."""

    name: str
    attr: str
    type: str
    default: str
    doc: str
    minimum: int | float | None = None
    choices: tuple[str, ...] | None = None

    @property
    def type_code(self) -> int:
        return CONFIG_TYPE_CODES[self.type]


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
        str(LONG_MAX),
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
        "Minimum replicas that must acknowledge a write with acks=all.",
        minimum=1,
    ),
    ConfigKey(
        "preallocate",
        "preallocate",
        "BOOLEAN",
        "false",
        "Preallocate segment files on disk when a segment is created.",
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
        "Whether an out-of-sync replica may become leader (always one replica here).",
    ),
)

TOPIC_CONFIGS: dict[str, ConfigKey] = {k.name: k for k in _KEYS}
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
    if key.choices is not None:
        chosen = value if isinstance(value, tuple) else (value,)
        bad = [v for v in chosen if v not in key.choices]
        if bad or (key.type == "LIST" and not chosen):
            raise ValueError(
                f"invalid value {text!r} for topic config {name!r}: expected one of {', '.join(key.choices)}"
            )
    return value


def validate_topic_configs(props: Mapping[str, str]) -> None:
    """Check topic-level overrides (CreateTopics, AlterConfigs): every key known, every value valid."""
    for name, text in props.items():
        parse_config_value(name, text)


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
    message_timestamp_after_max_ms: int = LONG_MAX
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


_check_defaults()
