"""The share-partitions of every share group on this broker, their journal, sessions and dead letters.

Each share-partition is a window ledger of the delivery engine (``kafkite.broker.delivery``); all of them
journal to partition 0 of the internal topic ``__share_group_state``, each event carrying the name of its
share-partition (``<topic id>:<partition>:<group>``) so that a restart rebuilds them all from that one log.
A group's deletion, or DeleteShareGroupOffsets, appends a ``D`` event that drops a share-partition. Once the
journal holds mostly superseded events, ``compact`` writes a snapshot of every share-partition, syncs it and
trims what precedes it, as the queue mode does with its state logs.

A share-partition is created, with its start offset taken from the group's ``share.auto.offset.reset``
(earliest, latest, or by_duration:<ISO 8601 duration>), when the group is first assigned the partition (or a
member first fetches it). Records that die (rejected, or delivered the limit number of times) in a group with
a dead-letter topic (KIP-1191: ``errors.deadletterqueue.topic.name``) are written there by a background task
with headers naming their source, then leave the window; the dead-letter topic must exist with
``errors.deadletterqueue.group.enable=true`` (or be created, with
``errors.deadletterqueue.auto.create.topics.enable``) and start with
``errors.deadletterqueue.topic.name.prefix``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from kafkite.broker.delivery.journal import RecordLog, decode_event, source_of, table_of, wall_clock_ms
from kafkite.broker.delivery.ledger import Ledger
from kafkite.log.base import AppendInfo, Partition, ReadResult
from kafkite.protocol.records import Header, build_batch, iter_headers, iter_records

from ..config import GroupConfig, parse_duration
from .partition import InFlight, SharePartition, ShareSettings
from .sessions import ShareSession, ShareSessions

if TYPE_CHECKING:
    from kafkite.broker.core import Broker

    from ..coordinator import GroupCoordinator

log = logging.getLogger("kafkite.groups.share")

STATE_TOPIC = "__share_group_state"
STATE_TOPIC_CONFIGS = {
    "retention.ms": "-1",
    "retention.bytes": "-1",
    "cleanup.policy": "delete",
    "message.timestamp.type": "CreateTime",
    "max.message.bytes": str(64 * 1024 * 1024),
    "segment.bytes": str(64 * 1024 * 1024),
}
COMPACT_MIN_RECORDS = 10_000
MAINTENANCE_INTERVAL_S = 5.0
DLQ_ENABLE_CONFIG = "errors.deadletterqueue.group.enable"
DLQ_HEADERS = (
    "__dlq.errors.topic",
    "__dlq.errors.partition",
    "__dlq.errors.offset",
    "__dlq.errors.group",
    "__dlq.errors.delivery.count",
    "__dlq.errors.message",
)
READ_BYTES = 1 << 20

Key = tuple[str, uuid.UUID, int]  # group, topic id, partition


def table_name(key: Key) -> str:
    group, topic_id, index = key
    return f"{topic_id}:{index}:{group}"


def parse_table(name: str) -> Key | None:
    try:
        topic, index, group = name.split(":", 2)
        return group, uuid.UUID(topic), int(index)
    except ValueError:
        return None


async def read_partition(part: Partition, offset: int, max_bytes: int, max_offset: int) -> ReadResult:
    return await part.read(offset, max_bytes, max_offset=max_offset, min_one=True)


async def append_partition(part: Partition, batch: bytearray, now: int) -> AppendInfo:
    return await part.append(batch, now_ms=now)


class DeadLetterError(Exception):
    """A dead-letter topic that cannot be used (Kafka's messages)."""


class SharePartitionStore:
    """Every share-partition of this broker (``SharePartitionsHook`` of the share protocol)."""

    def __init__(self, broker: Broker, coordinator: GroupCoordinator) -> None:
        self.broker = broker
        self.coordinator = coordinator
        self.partitions: dict[Key, SharePartition] = {}
        self.sessions = ShareSessions(self.config.share_max_share_sessions, self._session_closed)
        self._log: RecordLog | None = None
        self._waiters: dict[tuple[str, uuid.UUID, int], set[asyncio.Future[None]]] = {}
        self._dead: set[Key] = set()
        self._dead_wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._locks: dict[Key, asyncio.Lock] = {}
        self._loaded = False
        self._position = 0  # the journal offset this broker has applied up to
        self._served: set[Key] = set()  # brokers sharing the journal: the share-partitions served here
        self.dlq_failures = 0

    @property
    def config(self) -> GroupConfig:
        return self.coordinator.config

    # ------------------------------------------------------------------ lifecycle

    def journal(self) -> RecordLog:
        if self._log is None:
            if STATE_TOPIC not in self.broker.topics():
                self.broker.create_topic(STATE_TOPIC, 1, STATE_TOPIC_CONFIGS)
            part = self.broker.partition(STATE_TOPIC, 0)
            assert part is not None
            self._log = RecordLog(part)
            if self.clustered:
                self._log.source = str(self.broker.node_id)
                self._log.on_append = self._appended
        return self._log

    @property
    def clustered(self) -> bool:
        """Several brokers share the journal (the PostgreSQL engine's cluster)."""
        return self.broker.cluster is not None

    def _appended(self, first: int, last: int) -> None:
        # This broker's own events need no catching up when nothing foreign came before them.
        if first == self._position:
            self._position = last + 1

    def _refresh(self) -> None:
        refresh = getattr(self.journal().partition, "refresh", None)
        if refresh is not None:
            refresh()

    def load(self) -> None:
        """Rebuild every share-partition from the journal (once)."""
        if self._loaded:
            return
        self._loaded = True
        if STATE_TOPIC not in self.broker.topics():
            return
        journal = self.journal()
        self._refresh()
        replayed = 0
        for rec in journal.replay():
            replayed += 1
            self._apply_record(rec)
            self._position = rec.offset + 1
        self._position = max(self._position, journal.partition.log_end_offset)
        if not self.clustered:
            now = wall_clock_ms()
            for sp in self.partitions.values():
                sp.loaded(now)
                if sp.pending_dead():
                    self._dead.add((sp.group, sp.topic_id, sp.index))
        log.info("loaded %d share-partitions from %d journal events", len(self.partitions), replayed)

    def _apply_record(self, rec: Any) -> SharePartition | None:
        """Apply one journal event to its share-partition; the share-partition (None: dropped or unknown)."""
        name = table_of(rec)
        key = parse_table(name) if name else None
        if key is None:
            return None
        try:
            kind, ev = decode_event(rec)
        except (ValueError, json.JSONDecodeError):
            log.warning("skipping an undecodable event of the share-partition journal")
            return None
        if kind == b"D":
            dropped = self.partitions.pop(key, None)
            if dropped is not None:
                dropped.ledger.close()
            self._dead.discard(key)
            self._served.discard(key)
            return None
        sp = self.partitions.get(key)
        if sp is None:
            if kind not in (b"s", b"S"):
                # A share-partition begins with its start offset (or a snapshot): this is a late event of
                # one that was dropped (another broker settled a lock before it saw the drop).
                return None
            sp = self._new(key)
        try:
            sp.ledger.apply(kind, ev)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("skipping an event of share-partition %s: %s", name, exc)
        return sp

    # ------------------------------------------------------------------ brokers sharing the journal
    #
    # On the PostgreSQL engine every broker appends to the one journal. A share-partition is served (its
    # records acquired, acknowledged, its locks watched, its dead letters written) only by the broker that
    # leads its topic partition; the others keep a passive copy, catching up with the events the others
    # appended. When a broker starts serving a share-partition (it became its partition's leader, or another
    # broker appended to it meanwhile) it catches up with the database and releases every lock, delivery
    # counts kept, as Kafka does when a share-partition's leader changes: the consumers' share sessions were
    # with the previous leader.

    def catch_up(self, *, refresh: bool = False) -> None:
        """Apply what the other brokers appended since this broker last looked (``refresh``: ask the
        database for the journal's end rather than trust the announced one)."""
        self.load()
        if not self.clustered or self._log is None:
            return
        journal = self._log
        if refresh:
            self._refresh()
        if journal.partition.log_end_offset <= self._position:
            return
        own = journal.source
        touched: set[Key] = set()
        for rec in journal.replay(self._position):
            self._position = rec.offset + 1
            if source_of(rec) == own:
                continue
            sp = self._apply_record(rec)
            if sp is not None:
                touched.add((sp.group, sp.topic_id, sp.index))
        for key in touched & self._served:
            self._unserve(key)

    def _leads(self, key: Key) -> bool:
        cluster = self.broker.cluster
        if cluster is None:
            return True
        meta = self.broker.topic_by_id(key[1])
        return meta is not None and bool(cluster.leads(meta.name, key[2]))

    def serving(self, key: Key) -> bool:
        """Whether this broker serves the share-partition (always, with one broker)."""
        return not self.clustered or key in self._served

    def _unserve(self, key: Key) -> None:
        self._served.discard(key)
        self._dead.discard(key)
        sp = self.partitions.get(key)
        if sp is not None:
            sp.ledger.idle()
            log.info("share-partition %s is served by another broker now", table_name(key))

    def _serve(self, key: Key, sp: SharePartition) -> None:
        now = wall_clock_ms()
        sp.loaded(now)
        self._served.add(key)
        sp.ledger.schedule()
        if sp.pending_dead():
            self._dead_pending(key)
        log.info("serving share-partition %s from offset %d", table_name(key), sp.start)

    def lead(self, key: Key) -> SharePartition | None:
        """The share-partition, for this broker (its partition's leader) to serve: acquisitions and
        acknowledgements go through here."""
        if not self.clustered:
            self.load()
            return self.partitions.get(key)
        if key in self._served and not self._leads(key):
            self._unserve(key)
        self.catch_up(refresh=key not in self._served)
        sp = self.partitions.get(key)
        if sp is not None and key not in self._served:
            self._serve(key, sp)
        return sp

    async def start(self) -> None:
        self.load()
        self._dead_wake = asyncio.Event()
        if self._dead:
            self._dead_wake.set()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._dead_letter_loop(), name="share-dead-letters"),
            loop.create_task(self._maintenance(), name="share-maintenance"),
        ]
        for sp in self.partitions.values():
            sp.ledger.schedule()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for sp in self.partitions.values():
            sp.ledger.close()
        for waiters in self._waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    def _new(self, key: Key) -> SharePartition:
        group, topic_id, index = key
        ledger: Ledger[InFlight] = Ledger(
            self.journal(), {}, clock=wall_clock_ms, window=True, table=table_name(key), create=InFlight
        )
        sp = SharePartition(group, topic_id, index, ledger, lambda: self.settings(group))
        ledger.on_lapse = lambda: self._lapse(key)
        sp.on_available = lambda: self.notify(key)
        sp.on_dead = lambda: self._dead_pending(key)
        self.partitions[key] = sp
        return sp

    def _lapse(self, key: Key) -> None:
        sp = self.partitions.get(key)
        if sp is None:
            return
        if self.clustered:
            self.catch_up()  # the share-partition may have been dropped through another broker
            sp = self.partitions.get(key)
            if sp is None:
                return
            if key not in self._served or not self._leads(key):
                self._unserve(key)
                return
        sp.settle(wall_clock_ms())

    # ------------------------------------------------------------------ settings

    def _group_value(self, group: str, name: str) -> Any:
        return self.coordinator.group_configs(group).get(name)

    def settings(self, group: str) -> ShareSettings:
        cfg = self.config

        def num(name: str, default: int) -> int:
            v = self._group_value(group, name)
            return int(v) if v is not None else default

        dlq = self._group_value(group, "errors.deadletterqueue.topic.name")
        return ShareSettings(
            lock_duration_ms=num("share.record.lock.duration.ms", cfg.share_record_lock_duration_ms),
            delivery_count_limit=num("share.delivery.count.limit", cfg.share_delivery_count_limit),
            max_record_locks=num("share.partition.max.record.locks", cfg.share_partition_max_record_locks),
            read_committed=self._group_value(group, "share.isolation.level") == "read_committed",
            dlq_topic=str(dlq) if dlq else None,
            dlq_copy_record=self._group_value(group, "errors.deadletterqueue.copy.record.enable") == "true",
        )

    def lock_duration_ms(self, group: str) -> int:
        return self.settings(group).lock_duration_ms

    # ------------------------------------------------------------------ share-partitions

    def get(self, key: Key) -> SharePartition | None:
        self.catch_up()
        return self.partitions.get(key)

    def lock(self, key: Key) -> asyncio.Lock:
        """Held while one fetch reads and acquires from a share-partition (Kafka's fetch lock)."""
        lk = self._locks.get(key)
        if lk is None:
            lk = self._locks[key] = asyncio.Lock()
        return lk

    def ensure(self, group: str, topic_id: uuid.UUID, index: int) -> SharePartition | None:
        """The share-partition, initialized from ``share.auto.offset.reset`` if the group has none yet; None
        when the topic partition does not exist. Brokers sharing the journal: served here when this broker
        leads the partition."""
        key = (group, topic_id, index)
        leads = self._leads(key)
        if leads:
            sp = self.lead(key)
        else:
            self.catch_up(refresh=True)
            sp = self.partitions.get(key)
        if sp is not None:
            return sp
        meta = self.broker.topic_by_id(topic_id)
        part = self.broker.partition(meta.name, index) if meta is not None else None
        if meta is None or part is None:
            return None
        if self.clustered:
            self.coordinator.refresh_group_configs()
        start = self._initial_offset(group, part)
        sp = self._new(key)
        sp.reset(start)
        if self.clustered and leads:
            self._served.add(key)
        log.info("share-partition %s-%d of group %s starts at offset %d", meta.name, index, group, start)
        return sp

    def _initial_offset(self, group: str, part: Partition) -> int:
        reset = str(self._group_value(group, "share.auto.offset.reset") or "latest")
        if reset == "earliest":
            return part.log_start_offset
        latest = part.last_stable_offset if self.settings(group).read_committed else part.high_watermark
        if reset.startswith("by_duration:"):
            try:
                ms = parse_duration(reset[len("by_duration:") :])
            except ValueError:
                return latest
            found = part.offset_for_timestamp(wall_clock_ms() - ms)
            return found[0] if found is not None else latest
        return latest

    def initialize(self, group_id: str, partitions: Mapping[uuid.UUID, set[int]]) -> None:
        for topic_id, indexes in partitions.items():
            for index in indexes:
                if self.clustered and not self._leads((group_id, topic_id, index)):
                    continue  # its leader initializes it when a member first fetches
                try:
                    self.ensure(group_id, topic_id, index)
                except Exception:
                    log.exception("cannot initialize a share-partition of group %s", group_id)

    def member_left(self, group_id: str, member_id: str) -> None:
        """A member left the group or was fenced. As in Kafka, its share session and the records it holds are
        not touched: the consumer still acknowledges them as it closes (its final ShareAcknowledge follows
        its leaving heartbeat), and what it does not settle is released when its session or connection ends,
        or when the locks lapse."""

    def release(self, group_id: str, member_id: str) -> int:
        """Release every record ``member_id`` acquired in the group's share-partitions."""
        now = wall_clock_ms()
        released = 0
        for key, sp in list(self.partitions.items()):
            if key[0] == group_id and self.serving(key):
                released += sp.release_member(member_id, now)
        return released

    def _session_closed(self, session: ShareSession) -> None:
        released = self.release(session.group_id, session.member_id)
        log.info(
            "share session of member %s of group %s ended with its connection: %d records released",
            session.member_id,
            session.group_id,
            released,
        )

    def group_deleted(self, group_id: str) -> None:
        for session in self.sessions.of_group(group_id):
            self.sessions.close(group_id, session.member_id)
        self.catch_up(refresh=True)
        self.drop([k for k in self.partitions if k[0] == group_id])

    def drop(self, keys: Iterable[Key]) -> None:
        """Forget share-partitions (group deleted, DeleteShareGroupOffsets)."""
        keys = list(keys)
        if not keys:
            return
        journal = self.journal()
        for k in keys:
            journal.append_events([(b"D", {})], table_name(k))
        for k in keys:
            sp = self.partitions.pop(k, None)
            if sp is not None:
                sp.ledger.close()
            self._dead.discard(k)
            self._served.discard(k)

    def of_group(self, group_id: str) -> list[SharePartition]:
        self.catch_up(refresh=True)
        return sorted(
            (sp for k, sp in self.partitions.items() if k[0] == group_id),
            key=lambda sp: (str(sp.topic_id), sp.index),
        )

    # ------------------------------------------------------------------ waiting fetches

    def waiter(self, keys: list[Key]) -> asyncio.Future[None]:
        """A future completed when records of one of ``keys`` become available again (release, lapse)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for k in keys:
            self._waiters.setdefault(k, set()).add(fut)

        def discard(f: asyncio.Future[None]) -> None:
            for k in keys:
                s = self._waiters.get(k)
                if s is not None:
                    s.discard(f)
                    if not s:
                        del self._waiters[k]

        fut.add_done_callback(discard)
        return fut

    def notify(self, key: Key) -> None:
        for fut in list(self._waiters.get(key, ())):
            if not fut.done():
                fut.set_result(None)

    # ------------------------------------------------------------------ dead letters

    def _dead_pending(self, key: Key) -> None:
        self._dead.add(key)
        if self._dead_wake is not None:
            self._dead_wake.set()

    async def _dead_letter_loop(self) -> None:
        assert self._dead_wake is not None
        while True:
            await self._dead_wake.wait()
            self._dead_wake.clear()
            retry = False
            for key in list(self._dead):
                sp = self.partitions.get(key)
                if sp is None or not sp.pending_dead() or not self.serving(key):
                    self._dead.discard(key)
                    continue
                try:
                    await self.write_dead_letters(sp)
                    self._dead.discard(key)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("cannot write the dead letters of share-partition %s", table_name(key))
                    retry = True
            if retry:
                await asyncio.sleep(1.0)
                self._dead_wake.set()

    def dead_letter_partition(self, group: str, source_partition: int, topic: str) -> tuple[Partition, int]:
        """The partition of ``topic`` the group's dead letters of ``source_partition`` go to, checked as
        KIP-1191 says (DeadLetterError otherwise)."""
        cfg = self.config
        if topic.startswith("__"):
            raise DeadLetterError(f"DLQ topic {topic} must not start with '__'")
        if cfg.dlq_topic_name_prefix and not topic.startswith(cfg.dlq_topic_name_prefix):
            raise DeadLetterError(
                f"DLQ topic {topic} of share group {group} does not start with the required prefix "
                f"{cfg.dlq_topic_name_prefix!r} (errors.deadletterqueue.topic.name.prefix)"
            )
        meta = self.broker.topic(topic)
        if meta is None:
            if not cfg.dlq_auto_create_topics_enable:
                raise DeadLetterError(
                    f"DLQ topic {topic} of share group {group} does not exist and "
                    "errors.deadletterqueue.auto.create.topics.enable is false"
                )
            meta = self.broker.create_topic(
                topic, None, {DLQ_ENABLE_CONFIG: "true", "message.timestamp.type": "CreateTime"}
            )
        elif str(meta.configs.get(DLQ_ENABLE_CONFIG, "false")).lower() != "true":
            raise DeadLetterError(
                f"Topic {topic} is not enabled as a dead-letter queue: set {DLQ_ENABLE_CONFIG}=true on it"
            )
        index = source_partition % meta.partitions
        part = self.broker.partition(topic, index)
        assert part is not None
        return part, index

    async def write_dead_letters(self, sp: SharePartition) -> int:
        """Write the dead letters ``sp`` holds to its group's dead-letter topic; they leave the window."""
        pending = sp.pending_dead()
        if not pending:
            return 0
        s = self.settings(sp.group)
        meta = self.broker.topic_by_id(sp.topic_id)
        if s.dlq_topic is None or meta is None:
            # The group no longer names a dead-letter topic (or the source topic is gone): archived only.
            sp.ledger.written(pending)
            return 0
        try:
            target, target_index = self.dead_letter_partition(sp.group, sp.index, s.dlq_topic)
        except DeadLetterError as exc:
            self.dlq_failures += len(pending)
            log.warning(
                "%s: %d records of %s-%d archived without a dead letter",
                exc,
                len(pending),
                meta.name,
                sp.index,
            )
            sp.ledger.written(pending)
            return 0
        originals: dict[int, tuple[bytes | None, bytes | None]] = {}
        if s.dlq_copy_record:
            originals = await self._source_records(meta.name, sp.index, [e.id for e in pending])
        now = wall_clock_ms()
        records: list[tuple[bytes | None, bytes | None, list[Header], int]] = []
        for e in pending:
            reason = sp.dead_reason.get(e.id) or "Offset delivery count exceeded the threshold."
            values = (meta.name, str(sp.index), str(e.id), sp.group, str(e.delivery_count), reason)
            headers: list[Header] = [
                (name, value.encode()) for name, value in zip(DLQ_HEADERS, values, strict=True)
            ]
            key, value = originals.get(e.id, (None, None))
            records.append((key, value, headers, now))
        for first in range(0, len(records), 500):
            await append_partition(target, bytearray(build_batch(records[first : first + 500])), now)
        self.broker.waiters.notify(s.dlq_topic, target_index)
        sp.dead_written(pending)
        log.info(
            "%d records of %s-%d written to the dead-letter topic %s of share group %s",
            len(pending),
            meta.name,
            sp.index,
            s.dlq_topic,
            sp.group,
        )
        return len(pending)

    async def _source_records(
        self, topic: str, index: int, offsets: list[int]
    ) -> dict[int, tuple[bytes | None, bytes | None]]:
        part = self.broker.partition(topic, index)
        out: dict[int, tuple[bytes | None, bytes | None]] = {}
        if part is None:
            return out
        wanted = set(offsets)
        offset = max(min(offsets), part.log_start_offset)
        end = min(max(offsets) + 1, part.high_watermark)
        while offset < end and wanted - set(out):
            res = await read_partition(part, offset, READ_BYTES, part.high_watermark)
            data = res.to_bytes()
            if not data:
                break
            last = offset
            for pos, h in iter_headers(data):
                if not h.is_control:
                    for rec in iter_records(data, pos, h):
                        if rec.offset in wanted:
                            out[rec.offset] = (rec.key, rec.value)
                last = max(last, h.last_offset + 1)
            if last <= offset:
                break
            offset = last
        return out

    # ------------------------------------------------------------------ compaction

    async def _maintenance(self) -> None:
        while True:
            await asyncio.sleep(MAINTENANCE_INTERVAL_S)
            try:
                for key in [k for k in self._served if not self._leads(k)]:
                    self._unserve(key)
                self.forget_deleted_topics()
                await self.compact()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("share-partition journal maintenance failed")

    def forget_deleted_topics(self) -> int:
        """Drop the share-partitions of topics that no longer exist (a topic recreated has a new id)."""
        ids = {meta.topic_id: meta.partitions for meta in self.broker.topics().values()}
        gone = [k for k in self.partitions if k[2] >= ids.get(k[1], 0)]
        if gone:
            self.drop(gone)
            log.info("forgot %d share-partitions of deleted topics", len(gone))
        return len(gone)

    async def compact(self, *, force: bool = False) -> bool:
        """Snapshot every share-partition, sync, and trim the journal before the snapshot."""
        if self._log is None or self.clustered:
            # Brokers sharing the journal each append to it: a snapshot written by one could land after
            # another's newer events and hide them on replay. The journal is not compacted then.
            return False
        live = sum(len(sp.ledger.entries) + 1 for sp in self.partitions.values())
        if not force and self._log.records < max(COMPACT_MIN_RECORDS, 2 * live):
            return False
        journal = self._log
        first: int | None = None
        for sp in list(self.partitions.values()):
            offset = sp.ledger.journal(sp.ledger.snapshot_events(sp.ledger.end))
            first = offset if first is None else first
        part = journal.partition
        await asyncio.get_running_loop().run_in_executor(None, part.flush)
        cut = first if first is not None else part.log_end_offset
        part.delete_records_before(cut)
        log.info(
            "share-partition journal compacted: %d share-partitions, from offset %d",
            len(self.partitions),
            cut,
        )
        return True

    # ------------------------------------------------------------------ metrics and introspection

    def describe_group(self, group_id: str) -> list[dict[str, Any]]:
        """Each share-partition of the group: start and end offsets, in-flight, available and archiving
        records, delivery counts of the records in the window, lag and what happened to its records."""
        now = wall_clock_ms()
        out = []
        for sp in self.of_group(group_id):
            meta = self.broker.topic_by_id(sp.topic_id)
            part = self.broker.partition(meta.name, sp.index) if meta is not None else None
            out.append(
                {
                    "topic": meta.name if meta is not None else str(sp.topic_id),
                    "partition": sp.index,
                    **sp.stats(now),
                    "lag": sp.lag(part.high_watermark) if part is not None else None,
                }
            )
        return out
