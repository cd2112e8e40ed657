"""Durable partition logs behind one storage interface (file and memory engines)."""

from kafkite.log.base import (
    AppendInfo,
    FileRange,
    LogClosed,
    LogError,
    OffsetOutOfRange,
    Partition,
    ReadResult,
    RecordBatchTooLarge,
)
from kafkite.log.config import (
    TOPIC_CONFIG_DEFAULTS,
    TOPIC_CONFIG_DOCS,
    TOPIC_CONFIG_TYPES,
    TOPIC_CONFIGS,
    ConfigKey,
    LogConfig,
    validate_topic_configs,
)
from kafkite.log.engine import (
    FileStorage,
    InvalidConfig,
    InvalidPartitions,
    InvalidTopicName,
    MemoryStorage,
    Storage,
    TopicAlreadyExists,
    TopicMeta,
    UnknownPartition,
    UnknownTopic,
    check_topic_name,
)
from kafkite.log.memory import MemoryPartitionLog
from kafkite.log.partition import PartitionLog, SegmentedLog

__all__ = [
    "TOPIC_CONFIGS",
    "TOPIC_CONFIG_DEFAULTS",
    "TOPIC_CONFIG_DOCS",
    "TOPIC_CONFIG_TYPES",
    "AppendInfo",
    "ConfigKey",
    "FileRange",
    "FileStorage",
    "InvalidConfig",
    "InvalidPartitions",
    "InvalidTopicName",
    "LogClosed",
    "LogConfig",
    "LogError",
    "MemoryPartitionLog",
    "MemoryStorage",
    "OffsetOutOfRange",
    "Partition",
    "PartitionLog",
    "ReadResult",
    "RecordBatchTooLarge",
    "SegmentedLog",
    "Storage",
    "TopicAlreadyExists",
    "TopicMeta",
    "UnknownPartition",
    "UnknownTopic",
    "check_topic_name",
    "validate_topic_configs",
]
