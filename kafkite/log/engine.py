"""The storage interface: the topic catalogue and its partition logs, behind one ``Storage`` class per engine.

``Storage`` holds the catalogue logic every engine shares (names, partition counts and configs checked the
same way, the capacity check before anything is created, the in-memory catalogue); each engine adds where it
keeps things.

``FileStorage(root_dir)`` keeps Kafka's layout, one ``<topic>-<partition>`` directory per partition under the
root, plus a catalogue file ``topics.json`` (names, topic ids, partition counts, topic-level config overrides)
written atomically. Its disk work runs on writer threads (see kafkite.log.writer): one for the log directory,
one for the broker's internal topics (``__...``: group offsets, transaction and queue state, appended by the
coordinators while they wait), so a busy disk delays only the requests waiting for it. Catalogue changes take
effect in memory at once; their files follow on the writer. A creation is first recorded in the catalogue
file as an intent (``"creating": N`` beside the ``"partitions"`` that exist) before any append to the new
partitions can be acknowledged; the directories are made in chunks, each aside with its metadata and renamed
into place; then the count moves up. The count never names a partition whose directory does not exist, and a
creation a crash (or a shutdown) interrupted is resumed when the storage loads (its partitions served at once,
made as they are first used or reached).
Segment files are opened through one ``FileCache`` (``log.open.files.max``): the number of partitions is
bounded by the disk, not by the descriptor limit. A clean shutdown is recorded once for the whole directory
(``.clean-shutdown``). The catalogue is authoritative: a partition directory whose ``partition.metadata``
names another topic id (left behind by a deletion interrupted by a crash) is wiped when the topic is opened or
created, and on ``load`` every such directory not in the catalogue is removed.

``MemoryStorage()`` keeps everything in memory, with the same partition rules (tests, ephemeral brokers).

A partition's ``LogConfig`` is the engine's broker-level defaults (given under topic config names) overlaid
with the topic's own overrides.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from kafkite.log.base import LogError, Partition
from kafkite.log.config import LogConfig, validate_topic_configs
from kafkite.log.files import FileCache, default_open_files
from kafkite.log.fileutil import atomic_write, fsync_dir
from kafkite.log.memory import MemoryPartitionLog
from kafkite.log.partition import (
    DEFAULT_CLEANER_MAP_BYTES,
    Clock,
    PartitionLog,
    SegmentedLog,
    wall_clock_ms,
)
from kafkite.log.writer import ThreadWriter, Writer

MAX_TOPIC_NAME_LENGTH = 249
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
_PARTITION_DIR = re.compile(r"^(.+)-(\d+)$")
log = logging.getLogger("kafkite.log")
CATALOGUE_FILE = "topics.json"
PARTITION_METADATA_FILE = "partition.metadata"
CLEAN_SHUTDOWN_FILE = ".clean-shutdown"
NEW_DIR_SUFFIX = ".new"  # a partition directory being made (renamed to its name once it has its metadata)
INTERNAL_PREFIX = "__"  # the broker's own topics: appended on the internal writer
CREATE_CHUNK = 64  # partitions whose files one job creates (appends to other partitions go on between)
# After each chunk the writer leaves the interpreter to the event loop for this long: a creation of many
# partitions is Python work too, and the loop must not get only half of it meanwhile.
CREATE_PAUSE_S = 0.005
RETENTION_CHUNK = 256  # partitions one retention job goes through
# From this many partitions on, their logs (tens of objects each, for the life of the broker) are moved out of
# the cyclic garbage collector's sight once loaded or created: otherwise every full collection walks them all,
# and a request that allocates a lot (Metadata of a large topic) pays seconds for it.
FREEZE_PARTITIONS = 10_000
# What an empty partition takes on disk (its directory and files) when checking room for new ones.
PARTITION_INODES = 6
PARTITION_DISK_BYTES = 64 * 1024


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
    """The topic catalogue and its partitions.

    Catalogue changes (``create_topic``, ``create_partitions``, ``delete_topic``, ``set_topic_configs``) are
    synchronous and take effect at once, whatever the number of partitions: a new partition's log is made
    when it is first used, and an engine may finish the disk work later (``settle`` waits for it).
    ``flush_all`` may run in a worker thread. ``max_partitions``: the most partitions the storage holds
    (``max.broker.partitions``); creations beyond it are refused before anything is created."""

    # Whether Fetch should start the reads of all its partitions at once (their round trips then overlap).
    concurrent_reads = False

    def __init__(
        self,
        *,
        default_config: Mapping[str, str] | None = None,
        clock: Clock | None = None,
        max_partitions: int | None = None,
    ) -> None:
        self.default_config: dict[str, str] = dict(default_config or {})
        try:
            LogConfig.from_props(self.default_config)
        except ValueError as e:
            raise InvalidConfig(f"broker default topic config: {e}") from None
        self._clock: Clock = clock or wall_clock_ms
        self.max_partitions = max_partitions
        self._topics: dict[str, TopicMeta] = {}
        self._logs: dict[tuple[str, int], SegmentedLog] = {}
        self._deleted: list[SegmentedLog] = []
        self._dirty: set[SegmentedLog] = set()  # logs appended to since their last flush
        self._closed = False
        self._stop_cleaning = threading.Event()
        self._mutating = threading.Lock()  # changes of _topics and _logs made off the owner's thread

    # engine hooks ------------------------------------------------------------------------------------------

    @abstractmethod
    def load(self) -> None:
        """Open every topic and partition found (running recovery where needed)."""

    @abstractmethod
    def _new_partition(self, meta: TopicMeta, index: int, config: LogConfig) -> SegmentedLog:
        """The log of a new, empty partition (its disk work may follow in ``_created``)."""

    def _created(self, meta: TopicMeta, first: int) -> None:  # noqa: B027 - optional hook
        """Partitions ``first``... of ``meta`` were added to the catalogue in memory: make them durable."""

    def _deleting(self, meta: TopicMeta) -> None:  # noqa: B027 - optional hook
        """The topic left the catalogue in memory (called before its partitions are deleted)."""

    def _reconfigured(self, meta: TopicMeta) -> None:  # noqa: B027 - optional hook
        """The topic's overrides changed in memory."""

    # configuration -----------------------------------------------------------------------------------------

    def log_config(self, overrides: Mapping[str, str]) -> LogConfig:
        """Broker defaults overlaid with topic overrides."""
        return LogConfig.from_props({**self.default_config, **overrides})

    def topic_config(self, name: str) -> LogConfig:
        return self.log_config(self.topic(name).configs)

    def set_default_config(self, defaults: Mapping[str, str]) -> None:
        """New broker-level defaults, applied to every partition (a partition not used yet gets them when it
        is)."""
        try:
            LogConfig.from_props(dict(defaults))
        except ValueError as e:
            raise InvalidConfig(f"broker default topic config: {e}") from None
        self.default_config = dict(defaults)
        configs: dict[str, LogConfig] = {}
        for (name, _), plog in list(self._logs.items()):
            meta = self._topics.get(name)
            if meta is not None:
                if name not in configs:
                    configs[name] = self.log_config(meta.configs)
                plog.reconfigure(configs[name])

    # catalogue: checks every engine shares -----------------------------------------------------------------

    def topics(self) -> Mapping[str, TopicMeta]:
        return MappingProxyType(self._topics)

    def topic(self, name: str) -> TopicMeta:
        meta = self.topics().get(name)
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

    def _new_topic(
        self,
        name: str,
        partitions: int,
        configs: Mapping[str, str] | None,
        topic_id: uuid.UUID | None,
    ) -> TopicMeta:
        """A new topic's metadata, checked (name, partition count, configs, capacity); creates nothing."""
        self._check_open()
        check_topic_name(name)
        if name in self._topics:
            raise TopicAlreadyExists(f"topic {name!r} already exists")
        if partitions < 1:
            raise InvalidPartitions(f"number of partitions must be at least 1, got {partitions}")
        overrides = self._check_configs(configs or {})
        self.check_capacity(partitions)
        if topic_id is None or topic_id.int == 0:
            topic_id = uuid.uuid4()
        return TopicMeta(name, topic_id, partitions, overrides)

    def _grown(self, meta: TopicMeta, total: int) -> TopicMeta:
        """``meta`` with ``total`` partitions, checked (more than now, capacity); creates nothing."""
        if total <= meta.partitions:
            raise InvalidPartitions(
                f"topic {meta.name!r} has {meta.partitions} partitions; the new count must be larger, "
                f"got {total}"
            )
        self.check_capacity(total - meta.partitions)
        return replace(meta, partitions=total)

    def partition_count(self) -> int:
        """Partitions in the catalogue."""
        return sum(m.partitions for m in list(self._topics.values()))

    def check_capacity(self, new_partitions: int) -> None:
        """Raise InvalidPartitions, naming the limit, unless ``new_partitions`` more partitions fit."""
        if self.max_partitions is not None:
            total = self.partition_count() + new_partitions
            if total > self.max_partitions:
                raise InvalidPartitions(
                    f"{new_partitions} more partitions would make {total} on this broker, more than "
                    f"max.broker.partitions={self.max_partitions}"
                )

    # catalogue changes -------------------------------------------------------------------------------------

    def create_topic(
        self,
        name: str,
        partitions: int,
        configs: Mapping[str, str] | None = None,
        topic_id: uuid.UUID | None = None,
    ) -> TopicMeta:
        meta = self._new_topic(name, partitions, configs, topic_id)
        with self._mutating:
            self._topics[name] = meta
        self._created(meta, 0)
        return meta

    def delete_topic(self, name: str) -> None:
        self._check_open()
        meta = self.topic(name)
        with self._mutating:
            del self._topics[name]
            logs = [self._logs.pop((name, i), None) for i in range(meta.partitions)]
        self._deleting(meta)
        for plog in logs:
            if plog is not None:
                plog.delete()
                self._deleted.append(plog)
                self._dirty.discard(plog)

    def create_partitions(self, name: str, total: int) -> TopicMeta:
        self._check_open()
        meta = self.topic(name)
        new = self._grown(meta, total)
        with self._mutating:
            self._topics[name] = new
        self._created(new, meta.partitions)
        return new

    def set_topic_configs(self, name: str, configs: Mapping[str, str]) -> TopicMeta:
        """Replace the topic's overrides with ``configs`` and apply them to its partitions."""
        self._check_open()
        meta = self.topic(name)
        overrides = self._check_configs(configs)
        config = self.log_config(overrides)
        new = replace(meta, configs=overrides)
        with self._mutating:
            self._topics[name] = new
        self._reconfigured(new)
        for i in range(new.partitions):
            plog = self._logs.get((name, i))
            if plog is not None:
                plog.reconfigure(config)
        return new

    def partition(self, name: str, index: int) -> Partition:
        log = self._logs.get((name, index))
        if log is None:
            log = self._log_of(name, index)
        return log

    def _log_of(self, name: str, index: int, meta: TopicMeta | None = None) -> SegmentedLog:
        """The log of a partition, made now if it is new and was never used (only while ``meta``, when
        given, is still the topic's current one)."""
        with self._mutating:
            log = self._logs.get((name, index))
            if log is not None:
                return log
            current = self._topics.get(name)
            if current is None or (meta is not None and current.topic_id != meta.topic_id):
                raise UnknownTopic(f"unknown topic {name!r}")
            if not 0 <= index < current.partitions:
                raise UnknownPartition(f"topic {name!r} has no partition {index}")
            log = self._new_partition(current, index, self.log_config(current.configs))
            self._logs[(name, index)] = log
            return log

    def partitions(self) -> list[tuple[str, int, Partition]]:
        return [(t, p, log) for (t, p), log in list(self._logs.items())]

    def io_stats(self) -> dict[str, dict[str, int]]:
        """Figures of the engine's disk machinery by part (writer threads, open files): for metrics."""
        return {}

    def settle(self) -> None:  # noqa: B027 - engines with disk work to wait for override it
        """Wait until the disk work of the catalogue changes made so far is done."""

    # maintenance -------------------------------------------------------------------------------------------

    def flush_all(self) -> None:
        for log in list(self._logs.values()):
            log.flush()

    def flush_due(self, now_ms: int) -> list[Partition]:
        """The partitions whose flush policy (flush.messages, flush.ms) says to fsync now."""
        due: list[Partition] = []
        for plog in self._dirty.copy():
            if plog.closed or plog.unflushed_messages == 0:
                self._dirty.discard(plog)
            elif plog.flush_due(now_ms):
                due.append(plog)
        return due

    def apply_retention(self, now_ms: int) -> int:
        """Apply retention to every partition; returns the number of segments deleted."""
        deleted = 0
        for log in list(self._logs.values()):
            deleted += log.apply_retention(now_ms)
        self._deleted = [log for log in self._deleted if log.sweep(now_ms) > 0]
        return deleted

    async def apply_retention_async(self, now_ms: int) -> int:
        """``apply_retention`` for the event loop (the engine decides where it runs)."""
        return self.apply_retention(now_ms)

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

    def _new_partition(self, meta: TopicMeta, index: int, config: LogConfig) -> SegmentedLog:
        return MemoryPartitionLog(config, clock=self._clock)


class FileStorage(Storage):
    """Partition logs in ``<root>/<topic>-<partition>/``, the catalogue in ``<root>/topics.json``.

    ``open_files``: the budget of open segment files (default: half the descriptor limit). ``inline_bytes``:
    appends of at most this many bytes are written on the calling thread while the writer thread is idle
    (``ThreadWriter``)."""

    def __init__(
        self,
        root_dir: Path | str,
        *,
        default_config: Mapping[str, str] | None = None,
        clock: Clock | None = None,
        max_partitions: int | None = None,
        open_files: int | None = None,
        inline_bytes: int = 0,
    ) -> None:
        super().__init__(default_config=default_config, clock=clock, max_partitions=max_partitions)
        self.root = Path(root_dir)
        self.inline_bytes = inline_bytes
        self.files = FileCache(open_files or default_open_files())
        self._writers: dict[str, ThreadWriter] = {}
        self._threads = threading.Lock()
        self._durable: dict[str, TopicMeta] = {}  # the catalogue as far as its files exist
        self._intents: dict[str, int] = {}  # partition counts being created, recorded in the catalogue file
        self._catalogue_lock = threading.Lock()
        self._clean_start = False
        self._stopping = False  # closing: creations left unfinished are completed by the next load

    # writers -----------------------------------------------------------------------------------------------

    def _thread(self, name: str) -> ThreadWriter:
        with self._threads:
            w = self._writers.get(name)
            if w is None:
                if self._closed and name != "flusher":
                    raise LogError("the storage is closed")
                inline = self.inline_bytes if name != "flusher" else 0
                w = self._writers[name] = ThreadWriter(f"kafkite-log-{name}", inline_bytes=inline)
            return w

    def writer_for(self, topic: str) -> Writer:
        """The writer of a topic's partitions: the internal topics' own, or the log directory's."""
        return self._thread("internal" if topic.startswith(INTERNAL_PREFIX) else "writer")

    @property
    def flusher(self) -> Writer:
        """Where the logs' own fsyncs run (flush.messages, before DeleteRecords gives segments up)."""
        return self._thread("flusher")

    def io_stats(self) -> dict[str, dict[str, int]]:
        out = {
            name: {
                "backlog_bytes": w.backlog_bytes,
                "backlog_jobs": w.backlog_jobs,
                "jobs": w.jobs_done,
                "bytes": w.bytes_written,
            }
            for name, w in list(self._writers.items())
        }
        out["files"] = {"open": len(self.files), "max": self.files.max_open, "opened": self.files.opened}
        return out

    # loading -----------------------------------------------------------------------------------------------

    def load(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / CATALOGUE_FILE
        recorded: dict[str, TopicMeta] = {}
        intents: dict[str, int] = {}
        if path.exists():
            try:
                data = json.loads(path.read_text())
                for obj in data["topics"]:
                    meta = TopicMeta.from_json(obj)
                    recorded[meta.name] = meta
                    creating = int(obj.get("creating", 0))
                    if creating > meta.partitions:  # a creation a crash or a shutdown interrupted
                        intents[meta.name] = creating
            except (ValueError, KeyError, TypeError) as e:
                raise LogError(f"topic catalogue {path} is unreadable: {e}") from None
        marker = self.root / CLEAN_SHUTDOWN_FILE
        self._clean_start = marker.exists()
        self._topics = {n: replace(m, partitions=intents.get(n, m.partitions)) for n, m in recorded.items()}
        self._durable = dict(recorded)
        self._intents = dict(intents)
        big = sum(m.partitions for m in self._topics.values()) >= FREEZE_PARTITIONS
        # Loading makes tens of objects per partition, all kept: automatic collections would walk them again
        # and again as they pile up (seconds at 100,000 partitions). With this many, the collector pauses
        # while they are made, and they are frozen at the end (as after a creation of as many).
        pause = big and gc.isenabled()
        if pause:
            gc.disable()
        try:
            owners = self._remove_strays()
            for meta in self._topics.values():
                config = self.log_config(meta.configs)
                made = recorded[meta.name].partitions
                for i in range(meta.partitions):
                    # A partition of an interrupted creation is opened if its directory was made (it may hold
                    # acknowledged records); the others are made when first used, or by the resumed creation.
                    if i < made or f"{meta.name}-{i}" in owners:
                        self._logs[(meta.name, i)] = self._open_partition(meta, i, config, owners)
        finally:
            if pause:
                gc.enable()
        for name in sorted(intents):
            log.info("resuming the creation of %s: %d partitions", name, intents[name])
            self._created(self._topics[name], recorded[name].partitions)
        if pause:
            # No collection first: opening logs leaves no cyclic garbage (a full collection here finds none),
            # and one would walk every object just made once more (over a second at 100,000 partitions).
            gc.freeze()
        elif len(self._logs) >= FREEZE_PARTITIONS:
            gc.collect()
            gc.freeze()
        if self._clean_start:
            # From now on a crash must be recovered from: the marker goes before anything is appended.
            marker.unlink()
            fsync_dir(self.root)

    def _remove_strays(self) -> dict[str, uuid.UUID | None]:
        """Remove partition directories the catalogue does not name; the owners of the others, by directory
        name."""
        owners: dict[str, uuid.UUID | None] = {}
        root = str(self.root)
        for entry in os.listdir(root):
            if entry.endswith(NEW_DIR_SUFFIX):  # a partition directory a crash left half made
                shutil.rmtree(os.path.join(root, entry), ignore_errors=True)
                continue
            m = _PARTITION_DIR.match(entry)
            if not m:
                continue
            d = os.path.join(root, entry)
            owner = _read_partition_metadata(d)
            if owner is None:
                if os.path.isdir(d):
                    owners[entry] = None
                continue
            meta = self._topics.get(m.group(1))
            if meta is None or meta.topic_id != owner or int(m.group(2)) >= meta.partitions:
                shutil.rmtree(d, ignore_errors=True)
            else:
                owners[entry] = owner
        return owners

    def partition_dir(self, name: str, index: int) -> Path:
        return self.root / f"{name}-{index}"

    def _open_partition(
        self, meta: TopicMeta, index: int, config: LogConfig, owners: dict[str, uuid.UUID | None]
    ) -> SegmentedLog:
        """An existing partition of the catalogue (created empty when its directory is missing)."""
        d = self.partition_dir(meta.name, index)
        if d.name not in owners:
            d.mkdir(parents=True, exist_ok=True)
        if owners.get(d.name) is None:
            _write_partition_metadata(d, meta.topic_id)
        return PartitionLog(
            d,
            config,
            clock=self._clock,
            writer=self.writer_for(meta.name),
            flusher=self.flusher,
            files=self.files,
            clean_shutdown=self._clean_start,
            dirty=self._dirty,
        )

    # creation ----------------------------------------------------------------------------------------------

    def check_capacity(self, new_partitions: int) -> None:
        super().check_capacity(new_partitions)
        try:
            st = os.statvfs(self.root if self.root.exists() else self.root.parent)
        except OSError:
            return
        if st.f_files and st.f_favail < new_partitions * PARTITION_INODES:
            raise InvalidPartitions(
                f"{new_partitions} partitions need {new_partitions * PARTITION_INODES} inodes in log.dirs "
                f"{self.root}, which has {st.f_favail} free"
            )
        free = st.f_bavail * st.f_frsize
        if free < new_partitions * PARTITION_DISK_BYTES:
            raise InvalidPartitions(
                f"{new_partitions} partitions need {new_partitions * PARTITION_DISK_BYTES} bytes in log.dirs "
                f"{self.root}, which has {free} free"
            )

    def _new_partition(self, meta: TopicMeta, index: int, config: LogConfig) -> SegmentedLog:
        topic_id = meta.topic_id

        def make_dir(d: Path) -> None:
            """The partition's directory with its metadata, or none (made aside, then renamed)."""
            if d.exists():
                if _read_partition_metadata(d) == topic_id:
                    return
                shutil.rmtree(d)  # left by a deletion interrupted by a crash
            new = d.with_name(d.name + NEW_DIR_SUFFIX)
            shutil.rmtree(new, ignore_errors=True)
            new.mkdir(parents=True)
            _write_partition_metadata(new, topic_id, sync=False)
            os.rename(new, d)

        return PartitionLog(
            self.partition_dir(meta.name, index),
            config,
            clock=self._clock,
            writer=self.writer_for(meta.name),
            flusher=self.flusher,
            files=self.files,
            create=True,
            clean_shutdown=False,
            make_dir=make_dir,
            dirty=self._dirty,
        )

    def _created(self, meta: TopicMeta, first: int) -> None:
        """Record the creation in the catalogue file, make the new partitions' files on the topic's writer, a
        chunk per job (appends to other partitions go on between), then sync the directory once and name
        them in the catalogue file. Appends to the new partitions come after the first job: none is
        acknowledged before the creation is recorded."""
        writer = self.writer_for(meta.name)
        end = meta.partitions

        def intent() -> None:
            with self._catalogue_lock:
                current = self._topics.get(meta.name)
                if current is None or current.topic_id != meta.topic_id:
                    return
                if meta.name not in self._durable:
                    self._durable[meta.name] = replace(meta, partitions=0)
                self._intents[meta.name] = max(self._intents.get(meta.name, 0), end)
                try:
                    self._save_catalogue()
                except OSError as e:
                    self._creation_failed(meta, first, e)
                    return
            writer.post(lambda: job(first))

        def job(start: int) -> None:
            if self._stopping:
                return  # the next load completes the creation
            stop = min(start + CREATE_CHUNK, end)
            try:
                for i in range(start, stop):
                    plog = self._log_of(meta.name, i, meta)
                    if isinstance(plog, PartitionLog):
                        plog.materialize()
            except (UnknownTopic, UnknownPartition):
                return  # deleted (or replaced) meanwhile
            except OSError as e:
                self._creation_failed(meta, first, e)
                return
            if end - first >= FREEZE_PARTITIONS:
                gc.collect(1)  # the young garbage first (cheap): what is frozen is never collected
                gc.freeze()
            if stop < end:
                time.sleep(CREATE_PAUSE_S)
                writer.post(lambda: job(stop))
                return
            try:
                # The new directories before the catalogue names them (a directory whose own entries a crash
                # lost opens as an empty partition: nothing was acknowledged in it without an fsync of them).
                fsync_dir(self.root)
                self._commit(meta.name, meta.topic_id)
            except OSError as e:
                self._creation_failed(meta, first, e)

        writer.post(intent)

    def _creation_failed(self, meta: TopicMeta, first: int, error: OSError) -> None:
        """A creation's files could not all be made: the partitions go again (they were never in the
        catalogue file), and the topic too when it was new."""
        log.error(
            "creating partitions %d-%d of %s failed, removing them: %s",
            first,
            meta.partitions - 1,
            meta.name,
            error,
        )
        with self._mutating:
            current = self._topics.get(meta.name)
            if current is None or current.topic_id != meta.topic_id:
                return
            topics = dict(self._topics)
            if first == 0:
                del topics[meta.name]
            else:
                topics[meta.name] = replace(current, partitions=first)
            gone = [v for k, v in self._logs.items() if k[0] == meta.name and k[1] >= first]
            keep = {k: v for k, v in self._logs.items() if not (k[0] == meta.name and k[1] >= first)}
            self._topics, self._logs = topics, keep  # replaced, not changed: readers iterate the old ones
        for plog in gone:
            plog.delete()

        def forget() -> None:  # after the deletions above: the catalogue file no longer records the creation
            with self._catalogue_lock:
                self._intents.pop(meta.name, None)
                durable = self._durable.get(meta.name)
                if durable is not None and durable.topic_id == meta.topic_id:
                    if first == 0:
                        del self._durable[meta.name]
                    else:
                        self._durable[meta.name] = replace(durable, partitions=first)
                with contextlib.suppress(OSError):
                    self._save_catalogue()

        self.writer_for(meta.name).post(forget)

    def _commit(self, name: str, topic_id: uuid.UUID) -> None:
        """Name in the catalogue file the topic's partitions whose directories exist (the first ones: another
        creation of the same topic may still be under way), and drop the intent once they all do."""
        with self._catalogue_lock:
            current = self._topics.get(name)
            if current is None or current.topic_id != topic_id:
                return  # deleted (or replaced) meanwhile
            made = 0
            while made < current.partitions:
                plog = self._logs.get((name, made))
                if not isinstance(plog, PartitionLog) or not plog.materialized:
                    break
                made += 1
            self._durable[name] = replace(current, partitions=made)
            if made >= self._intents.get(name, 0):
                self._intents.pop(name, None)
            self._save_catalogue()

    def _deleting(self, meta: TopicMeta) -> None:
        def job() -> None:
            with self._catalogue_lock:
                durable = self._durable.get(meta.name)
                if durable is not None and durable.topic_id == meta.topic_id:
                    del self._durable[meta.name]
                    self._intents.pop(meta.name, None)
                    self._save_catalogue()

        # before the partitions' own deletion jobs: the catalogue stops naming them first
        self.writer_for(meta.name).post(job)

    def _reconfigured(self, meta: TopicMeta) -> None:
        def job() -> None:
            with self._catalogue_lock:
                durable = self._durable.get(meta.name)
                if durable is not None and durable.topic_id == meta.topic_id:
                    current = self._topics.get(meta.name)
                    configs = current.configs if current is not None else meta.configs
                    self._durable[meta.name] = replace(durable, configs=configs)
                    self._save_catalogue()

        self.writer_for(meta.name).post(job)

    def _save_catalogue(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        topics = []
        for m in self._durable.values():
            entry = m.to_json()
            if self._intents.get(m.name, 0) > m.partitions:
                entry["creating"] = self._intents[m.name]
            topics.append(entry)
        data = {"version": 1, "topics": topics}
        atomic_write(self.root / CATALOGUE_FILE, json.dumps(data, indent=1, sort_keys=True).encode())

    def settle(self) -> None:
        quiet = 0
        while quiet < 2:  # jobs post follow-ups (creation chunks, flushes before deletions): until none come
            writers = list(self._writers.values())
            for w in writers:
                w.run(_nothing)
            quiet = quiet + 1 if all(w.backlog_jobs == 0 for w in writers) else 0

    # maintenance -------------------------------------------------------------------------------------------

    def apply_retention(self, now_ms: int) -> int:
        """Apply retention to every partition, a chunk of partitions per job of their writer (appends go on
        between the chunks); returns the number of segments deleted."""
        by_writer: dict[int, tuple[Writer, list[SegmentedLog]]] = {}
        for plog in list(self._logs.values()):
            by_writer.setdefault(id(plog.writer), (plog.writer, []))[1].append(plog)
        deleted = 0
        for writer, logs in by_writer.values():
            for i in range(0, len(logs), RETENTION_CHUNK):
                deleted += writer.run(_retention_job(logs[i : i + RETENTION_CHUNK], now_ms))
        self._deleted = [plog for plog in self._deleted if plog.sweep(now_ms) > 0]
        return deleted

    async def apply_retention_async(self, now_ms: int) -> int:
        return await asyncio.to_thread(self.apply_retention, now_ms)

    def close(self) -> None:
        """Close every partition (each after the jobs queued before), then record the clean shutdown."""
        if self._closed:
            return
        self._stopping = True  # creations left unfinished are completed by the next load
        self.settle()
        self._closed = True
        failed: list[BaseException] = []

        def closer(plog: SegmentedLog) -> Callable[[], None]:
            def job() -> None:
                try:
                    plog.close()
                except Exception as e:  # close the others all the same, then report the first failure
                    failed.append(e)

            return job

        for plog in self._logs.values():
            plog.writer.post(closer(plog))
        for w in list(self._writers.values()):
            w.run(lambda: None)
        for plog in self._deleted:
            plog.sweep(1 << 62)
        self._deleted = []
        for w in list(self._writers.values()):
            w.close()
        self._writers.clear()
        if failed:
            raise failed[0]
        with contextlib.suppress(OSError):
            if self.root.exists():
                atomic_write(self.root / CLEAN_SHUTDOWN_FILE, b"")


def _nothing() -> None:
    pass


def _retention_job(logs: list[SegmentedLog], now_ms: int) -> Callable[[], int]:
    def job() -> int:
        return sum(plog.apply_retention(now_ms) for plog in logs)

    return job


def _write_partition_metadata(directory: Path, topic_id: uuid.UUID, *, sync: bool = True) -> None:
    data = f"version: 0\ntopic_id: {topic_id}\n".encode()
    if sync:
        atomic_write(directory / PARTITION_METADATA_FILE, data)
    else:  # made durable with the rest of a creation (a torn file reads as no owner: rewritten on open)
        (directory / PARTITION_METADATA_FILE).write_bytes(data)


def _read_partition_metadata(directory: Path | str) -> uuid.UUID | None:
    with contextlib.suppress(OSError, ValueError):
        fd = os.open(os.path.join(directory, PARTITION_METADATA_FILE), os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.read(fd, 4096)
        finally:
            os.close(fd)
        for line in data.decode().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "topic_id":
                return uuid.UUID(value.strip())
    return None
