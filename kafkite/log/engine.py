"""The storage interface: the topic catalogue and its partition logs, behind one ``Storage`` class per engine.

``FileStorage(root_dir)`` keeps Kafka's layout, one ``<topic>-<partition>`` directory per partition under the
root, plus a catalogue file ``topics.json`` (names, topic ids, partition counts, topic-level config overrides)
written atomically. The catalogue is authoritative: a partition directory whose ``partition.metadata`` names
another topic id (left behind by a deletion interrupted by a crash) is wiped when the topic is opened or
created, and on ``load`` every such directory not in the catalogue is removed.

``MemoryStorage()`` keeps everything in memory, with the same partition rules (tests, ephemeral brokers).

A partition's ``LogConfig`` is the engine's broker-level defaults (given under topic config names) overlaid
with the topic's own overrides.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from kafkite.log.base import LogError
from kafkite.log.config import LogConfig, validate_topic_configs
from kafkite.log.fileutil import atomic_write
from kafkite.log.memory import MemoryPartitionLog
from kafkite.log.partition import (
    DEFAULT_CLEANER_MAP_BYTES,
    Clock,
    PartitionLog,
    SegmentedLog,
    wall_clock_ms,
)

MAX_TOPIC_NAME_LENGTH = 249
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
_PARTITION_DIR = re.compile(r"^(.+)-(\d+)$")
log = logging.getLogger("kafkite.log")
CATALOGUE_FILE = "topics.json"
PARTITION_METADATA_FILE = "partition.metadata"


class UnknownTopic(LogError, LookupError):
    """UNKNOWN_TOPIC_OR_PARTITION (or UNKNOWN_TOPIC_ID)."""


class UnknownPartition(LogError, LookupError):
    """UNKNOWN_TOPIC_OR_PARTITION."""


class TopicAlreadyExists(LogError):
    """TOPIC_ALREADY_EXISTS."""


class InvalidTopicName(LogError, ValueError):
    """INVALID_TOPIC_EXCEPTION."""


class InvalidPartitions(LogError, ValueError):
    """INVALID_PARTITIONS."""


class InvalidConfig(LogError, ValueError):
    """INVALID_CONFIG."""


def check_topic_name(name: str) -> None:
    """Kafka's rules: 1-249 characters from ASCII letters, digits, '.', '_' and '-'; not '.' or '..'."""
    if not name:
        raise InvalidTopicName("topic name is empty")
    if name in (".", ".."):
        raise InvalidTopicName(f"topic name cannot be {name!r}")
    if len(name) > MAX_TOPIC_NAME_LENGTH:
        raise InvalidTopicName(f"topic name is longer than {MAX_TOPIC_NAME_LENGTH} characters")
    if not _TOPIC_NAME.match(name):
        raise InvalidTopicName(
            f"topic name {name!r} is illegal: use only ASCII letters, digits, '.', '_' and '-'"
        )


@dataclass(frozen=True)
class TopicMeta:
    name: str
    topic_id: uuid.UUID
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)  # topic-level overrides only

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "topic_id": str(self.topic_id),
            "partitions": self.partitions,
            "configs": dict(self.configs),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> TopicMeta:
        return cls(
            name=str(obj["name"]),
            topic_id=uuid.UUID(str(obj["topic_id"])),
            partitions=int(obj["partitions"]),
            configs={str(k): str(v) for k, v in dict(obj.get("configs", {})).items()},
        )


class Storage(ABC):
    """The topic catalogue and its partitions. Synchronous; ``flush_all`` may run in a worker thread."""

    def __init__(
        self, *, default_config: Mapping[str, str] | None = None, clock: Clock | None = None
    ) -> None:
        self.default_config: dict[str, str] = dict(default_config or {})
        try:
            LogConfig.from_props(self.default_config)
        except ValueError as e:
            raise InvalidConfig(f"broker default topic config: {e}") from None
        self._clock: Clock = clock or wall_clock_ms
        self._topics: dict[str, TopicMeta] = {}
        self._logs: dict[tuple[str, int], SegmentedLog] = {}
        self._deleted: list[SegmentedLog] = []
        self._closed = False
        self._stop_cleaning = threading.Event()

    # engine hooks ------------------------------------------------------------------------------------------

    @abstractmethod
    def load(self) -> None:
        """Open every topic and partition found (running recovery where needed)."""

    @abstractmethod
    def _open_partition(self, meta: TopicMeta, index: int, config: LogConfig) -> SegmentedLog: ...

    @abstractmethod
    def _save_catalogue(self) -> None: ...

    # configuration -----------------------------------------------------------------------------------------

    def log_config(self, overrides: Mapping[str, str]) -> LogConfig:
        """Broker defaults overlaid with topic overrides."""
        return LogConfig.from_props({**self.default_config, **overrides})

    def topic_config(self, name: str) -> LogConfig:
        return self.log_config(self.topic(name).configs)

    # catalogue ---------------------------------------------------------------------------------------------

    def topics(self) -> Mapping[str, TopicMeta]:
        return MappingProxyType(self._topics)

    def topic(self, name: str) -> TopicMeta:
        meta = self._topics.get(name)
        if meta is None:
            raise UnknownTopic(f"unknown topic {name!r}")
        return meta

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicMeta:
        for meta in self._topics.values():
            if meta.topic_id == topic_id:
                return meta
        raise UnknownTopic(f"unknown topic id {topic_id}")

    @staticmethod
    def _check_configs(configs: Mapping[str, str]) -> dict[str, str]:
        try:
            validate_topic_configs(configs)
        except ValueError as e:
            raise InvalidConfig(str(e)) from None
        return dict(configs)

    def create_topic(
        self,
        name: str,
        partitions: int,
        configs: Mapping[str, str] | None = None,
        topic_id: uuid.UUID | None = None,
    ) -> TopicMeta:
        self._check_open()
        check_topic_name(name)
        if name in self._topics:
            raise TopicAlreadyExists(f"topic {name!r} already exists")
        if partitions < 1:
            raise InvalidPartitions(f"number of partitions must be at least 1, got {partitions}")
        overrides = self._check_configs(configs or {})
        if topic_id is None or topic_id.int == 0:
            topic_id = uuid.uuid4()
        meta = TopicMeta(name, topic_id, partitions, overrides)
        config = self.log_config(overrides)
        self._topics[name] = meta
        self._save_catalogue()
        for i in range(partitions):
            self._logs[(name, i)] = self._open_partition(meta, i, config)
        return meta

    def delete_topic(self, name: str) -> None:
        self._check_open()
        meta = self.topic(name)
        del self._topics[name]
        self._save_catalogue()
        for i in range(meta.partitions):
            log = self._logs.pop((name, i), None)
            if log is not None:
                log.delete()
                self._deleted.append(log)

    def create_partitions(self, name: str, total: int) -> TopicMeta:
        self._check_open()
        meta = self.topic(name)
        if total <= meta.partitions:
            raise InvalidPartitions(
                f"topic {name!r} has {meta.partitions} partitions; the new count must be larger, got {total}"
            )
        new = replace(meta, partitions=total)
        self._topics[name] = new
        self._save_catalogue()
        config = self.log_config(new.configs)
        for i in range(meta.partitions, total):
            self._logs[(name, i)] = self._open_partition(new, i, config)
        return new

    def set_topic_configs(self, name: str, configs: Mapping[str, str]) -> TopicMeta:
        """Replace the topic's overrides with ``configs`` and apply them to its partitions."""
        self._check_open()
        meta = self.topic(name)
        overrides = self._check_configs(configs)
        config = self.log_config(overrides)
        new = replace(meta, configs=overrides)
        self._topics[name] = new
        self._save_catalogue()
        for i in range(new.partitions):
            self._logs[(name, i)].reconfigure(config)
        return new

    def partition(self, name: str, index: int) -> SegmentedLog:
        log = self._logs.get((name, index))
        if log is None:
            if name not in self._topics:
                raise UnknownTopic(f"unknown topic {name!r}")
            raise UnknownPartition(f"topic {name!r} has no partition {index}")
        return log

    def partitions(self) -> list[tuple[str, int, SegmentedLog]]:
        return [(t, p, log) for (t, p), log in list(self._logs.items())]

    # maintenance -------------------------------------------------------------------------------------------

    def flush_all(self) -> None:
        for log in list(self._logs.values()):
            log.flush()

    def apply_retention(self, now_ms: int) -> int:
        """Apply retention to every partition; returns the number of segments deleted."""
        deleted = 0
        for log in list(self._logs.values()):
            deleted += log.apply_retention(now_ms)
        self._deleted = [log for log in self._deleted if log.sweep(now_ms) > 0]
        return deleted

    def compact(self, now_ms: int, max_map_bytes: int = DEFAULT_CLEANER_MAP_BYTES) -> int:
        """One log cleaner pass over every partition whose cleanup.policy has ``compact`` (see
        ``SegmentedLog.compact``; ``max_map_bytes`` bounds each partition's offset map); returns how many
        partitions it compacted. Meant for a worker thread; stops between partitions once ``stop_compaction``
        was called."""
        done = 0
        for (name, index), plog in list(self._logs.items()):
            if self._closed or self._stop_cleaning.is_set():
                break
            if not plog.config.compact_enabled:
                continue
            try:
                stats = plog.compact(now_ms, max_map_bytes=max_map_bytes)
            except (LogError, OSError, ValueError) as e:
                log.warning("compaction of %s-%d failed: %s", name, index, e)
                continue
            if stats is not None:
                done += 1
                log.info(
                    "compacted %s-%d: %d segments, %d -> %d bytes, %d records removed, clean below %d",
                    name,
                    index,
                    stats.segments + stats.segments_removed,
                    stats.bytes_before,
                    stats.bytes_after,
                    stats.records_removed,
                    stats.end_offset,
                )
        return done

    def stop_compaction(self) -> None:
        """Make a running ``compact`` stop after the partition it is cleaning (on shutdown)."""
        self._stop_cleaning.set()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        failed: OSError | None = None
        for log in self._logs.values():
            try:
                log.close()
            except OSError as e:  # close the others all the same, then report the first failure
                failed = failed or e
        for log in self._deleted:
            log.sweep(1 << 62)
        self._deleted = []
        if failed is not None:
            raise failed

    def _check_open(self) -> None:
        if self._closed:
            raise LogError("the storage is closed")


class MemoryStorage(Storage):
    """Everything in memory; nothing survives ``close``."""

    def load(self) -> None:
        pass

    def _open_partition(self, meta: TopicMeta, index: int, config: LogConfig) -> SegmentedLog:
        return MemoryPartitionLog(config, clock=self._clock)

    def _save_catalogue(self) -> None:
        pass


class FileStorage(Storage):
    """Partition logs in ``<root>/<topic>-<partition>/``, the catalogue in ``<root>/topics.json``."""

    def __init__(
        self,
        root_dir: Path | str,
        *,
        default_config: Mapping[str, str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(default_config=default_config, clock=clock)
        self.root = Path(root_dir)

    def load(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / CATALOGUE_FILE
        topics: dict[str, TopicMeta] = {}
        if path.exists():
            try:
                data = json.loads(path.read_text())
                for obj in data["topics"]:
                    meta = TopicMeta.from_json(obj)
                    topics[meta.name] = meta
            except (ValueError, KeyError, TypeError) as e:
                raise LogError(f"topic catalogue {path} is unreadable: {e}") from None
        self._topics = topics
        self._remove_strays()
        for meta in topics.values():
            config = self.log_config(meta.configs)
            for i in range(meta.partitions):
                self._logs[(meta.name, i)] = self._open_partition(meta, i, config)

    def _remove_strays(self) -> None:
        for entry in os.listdir(self.root):
            d = self.root / entry
            m = _PARTITION_DIR.match(entry)
            if not m or not d.is_dir():
                continue
            owner = _read_partition_metadata(d)
            if owner is None:
                continue
            meta = self._topics.get(m.group(1))
            if meta is None or meta.topic_id != owner or int(m.group(2)) >= meta.partitions:
                shutil.rmtree(d, ignore_errors=True)

    def partition_dir(self, name: str, index: int) -> Path:
        return self.root / f"{name}-{index}"

    def _open_partition(self, meta: TopicMeta, index: int, config: LogConfig) -> SegmentedLog:
        d = self.partition_dir(meta.name, index)
        if d.exists():
            owner = _read_partition_metadata(d)
            if owner is not None and owner != meta.topic_id:
                shutil.rmtree(d)
        d.mkdir(parents=True, exist_ok=True)
        if _read_partition_metadata(d) is None:
            atomic_write(d / PARTITION_METADATA_FILE, f"version: 0\ntopic_id: {meta.topic_id}\n".encode())
        return PartitionLog(d, config, clock=self._clock)

    def _save_catalogue(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        data = {"version": 1, "topics": [m.to_json() for m in self._topics.values()]}
        atomic_write(self.root / CATALOGUE_FILE, json.dumps(data, indent=1, sort_keys=True).encode())


def _read_partition_metadata(directory: Path) -> uuid.UUID | None:
    with contextlib.suppress(OSError, ValueError):
        for line in (directory / PARTITION_METADATA_FILE).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "topic_id":
                return uuid.UUID(value.strip())
    return None
