"""``PgStorage``: the topic catalogue and partition logs in a PostgreSQL database shared by several brokers.

The catalogue is cached in memory and reloaded whenever a broker announces a change on the
``kafkite_catalogue`` channel; a name (or topic id) missing from the cache is looked up in the database before
it is called unknown, so a topic created through another broker is usable at once. Appends announce the new
end of their partition on ``kafkite_append``: the listener started by ``start_async`` moves the cached bounds
and calls ``on_append(topic, partition)`` (the broker wakes its long-poll fetches there).

Blocking: the synchronous interface (catalogue changes, ``Partition.append_sync``/``read_sync`` and the rest)
runs its statements on the calling thread; ``PgPartition.append``/``read``, which handlers await, use pooled
asynchronous connections and never block the event loop. Catalogue changes are checked by the logic every
engine shares (``Storage._new_topic``, ``Storage._grown``) before they reach the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any

import psycopg

from kafkite.log.base import LogError
from kafkite.log.config import LogConfig
from kafkite.log.engine import (
    InvalidPartitions,
    Storage,
    TopicAlreadyExists,
    TopicMeta,
    UnknownPartition,
    UnknownTopic,
)
from kafkite.log.partition import Clock
from kafkite.log.pg import schema
from kafkite.log.pg.db import Database, DatabaseError, Op, Rows, tcp_params
from kafkite.log.pg.partition import PgPartition

_GROUP_ENTRIES = "SELECT key, group_id, value FROM kafkite_group_entries"
log = logging.getLogger("kafkite.log.pg")

LISTEN_RETRY_S = 1.0


def _uuid(value: Any) -> uuid.UUID | None:
    return None if value is None else value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _key(topic_id: Any, index: Any) -> tuple[uuid.UUID, int]:
    return topic_id if isinstance(topic_id, uuid.UUID) else uuid.UUID(str(topic_id)), int(index)


def is_postgres_dsn(value: str) -> bool:
    return value.startswith(("postgresql://", "postgres://"))


class _Catalogue(Mapping[str, TopicMeta]):
    """The cached topics; a miss is looked up in the database (another broker may have just created it)."""

    def __init__(self, storage: PgStorage) -> None:
        self._storage = storage

    def __getitem__(self, name: str) -> TopicMeta:
        meta = self._storage._topics.get(name)
        if meta is None:
            meta = self._storage._lookup(name)
            if meta is None:
                raise KeyError(name)
        return meta

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._storage._topics))

    def __len__(self) -> int:
        return len(self._storage._topics)


class PgStorage(Storage):
    """Topics and partitions in PostgreSQL (``dsn``: ``postgresql://user@host:port/db``)."""

    # Fetch starts the reads of all its partitions at once: their database round trips overlap.
    concurrent_reads = True

    def __init__(
        self,
        dsn: str,
        *,
        default_config: Mapping[str, str] | None = None,
        clock: Clock | None = None,
        pool_size: int = 8,
    ) -> None:
        super().__init__(default_config=default_config, clock=clock)
        self.dsn = dsn
        self.db = Database(dsn, pool_size=pool_size)
        self.instance = uuid.uuid4()  # this process's identity in notifications
        self._parts: dict[tuple[str, int], PgPartition] = {}
        self._catalogue = _Catalogue(self)
        self.on_append: Callable[[str, int], None] | None = None
        self.on_catalogue: Callable[[], None] | None = None
        self.on_cluster: Callable[[], None] | None = None
        # Which partitions this broker maintains (retention, producer snapshots); all when None.
        self.maintains: Callable[[str, int], bool] | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self._reload_task: asyncio.Task[None] | None = None
        self._leaders_task: asyncio.Task[None] | None = None
        self._leaders_dirty = False

    # schema and identity -----------------------------------------------------------------------------------

    def load(self) -> None:
        """Create the tables when missing and read the catalogue."""

        def op() -> Op[None]:
            yield ("SELECT pg_advisory_xact_lock(%s)", (schema.SCHEMA_LOCK,))
            ready = yield (schema.SCHEMA_READY, None)
            if ready and ready[0][0]:
                return  # nothing to create or add: take no table lock while other brokers append
            for ddl in schema.DDL:
                yield (ddl, None)

        for attempt in range(3):
            try:
                self.db.run(op(), transaction=True)
                break
            except DatabaseError as e:
                # Upgrading the tables while older brokers append may deadlock with them: try again.
                if "deadlock" not in str(e) or attempt == 2:
                    raise
        self._apply_catalogue(*self.db.run(self._catalogue_op()))

    def cluster_id(self, new_id: str) -> str:
        """The cluster id kept in the database (``new_id`` becomes it when there is none yet)."""
        self.db.execute(
            "INSERT INTO kafkite_meta (key, value) VALUES ('cluster.id', %s) ON CONFLICT (key) DO NOTHING",
            (new_id,),
        )
        return str(self.db.execute("SELECT value FROM kafkite_meta WHERE key = 'cluster.id'")[0][0])

    # catalogue cache ---------------------------------------------------------------------------------------

    @staticmethod
    def _catalogue_op() -> Op[tuple[Rows, Rows]]:
        topics = yield ("SELECT name, topic_id, partitions, configs FROM kafkite_topics", None)
        parts = yield (
            "SELECT t.name, p.idx, p.next_offset, p.log_start_offset, p.size_bytes, p.leader_epoch,"
            " p.leader_instance FROM kafkite_partitions p JOIN kafkite_topics t ON t.topic_id = p.topic_id",
            None,
        )
        return topics, parts

    @staticmethod
    def _meta(row: tuple[Any, ...]) -> TopicMeta:
        name, topic_id, partitions, configs = row
        if isinstance(configs, str | bytes):
            configs = json.loads(configs)
        return TopicMeta(
            str(name), uuid.UUID(str(topic_id)), int(partitions), {str(k): str(v) for k, v in configs.items()}
        )

    def _apply_catalogue(self, topic_rows: Rows, part_rows: Rows) -> None:
        """Make the cache match the database rows (on the thread that owns the storage)."""
        topics = {m.name: m for m in map(self._meta, topic_rows)}
        bounds = {(str(r[0]), int(r[1])): (int(r[2]), int(r[3]), int(r[4])) for r in part_rows}
        leaders = {(str(r[0]), int(r[1])): (int(r[5]), _uuid(r[6])) for r in part_rows}
        for (name, idx), part in list(self._parts.items()):
            meta = topics.get(name)
            if meta is None or meta.topic_id != part.topic_id or idx >= meta.partitions:
                part.delete()
                del self._parts[(name, idx)]
        for name, meta in topics.items():
            old = self._topics.get(name)
            config = self.log_config(meta.configs)
            for i in range(meta.partitions):
                known = self._parts.get((name, i))
                b = bounds.get((name, i), (0, 0, 0))
                epoch, leader = leaders.get((name, i), (0, None))
                if known is None:
                    self._parts[(name, i)] = PgPartition(
                        self,
                        name,
                        meta.topic_id,
                        i,
                        config,
                        next_offset=b[0],
                        log_start_offset=b[1],
                        size=b[2],
                        leader_epoch=epoch,
                        leader_instance=leader,
                    )
                else:
                    known.set_bounds(*b)
                    known.set_leader(epoch, leader)
                    if old is None or old.configs != meta.configs:
                        known.reconfigure(config)
        self._topics = topics

    def _add(self, meta: TopicMeta) -> None:
        self._apply_catalogue_one(meta)

    def _apply_catalogue_one(self, meta: TopicMeta) -> None:
        old = self._topics.get(meta.name)
        if old is not None and old.topic_id != meta.topic_id:
            for i in range(old.partitions):
                part = self._parts.pop((old.name, i), None)
                if part is not None:
                    part.delete()
        config = self.log_config(meta.configs)
        for i in range(meta.partitions):
            part = self._parts.get((meta.name, i))
            if part is None:
                self._parts[(meta.name, i)] = PgPartition(self, meta.name, meta.topic_id, i, config)
            else:
                part.reconfigure(config)
        self._topics[meta.name] = meta

    def _lookup(self, name: str) -> TopicMeta | None:
        rows = self.db.execute(
            "SELECT name, topic_id, partitions, configs FROM kafkite_topics WHERE name = %s", (name,)
        )
        if not rows:
            return None
        meta = self._meta(rows[0])
        self._apply_catalogue_one(meta)
        for i in range(meta.partitions):
            self._parts[(meta.name, i)].refresh()
        return meta

    def reload(self) -> None:
        """Re-read the catalogue and every partition's bounds (blocking)."""
        self._apply_catalogue(*self.db.run(self._catalogue_op()))

    async def reload_async(self) -> None:
        topics, parts = await self.db.run_async(self._catalogue_op())
        self._apply_catalogue(topics, parts)
        if self.on_catalogue is not None:
            self.on_catalogue()

    # catalogue interface -----------------------------------------------------------------------------------

    def topics(self) -> Mapping[str, TopicMeta]:
        return self._catalogue

    def topic(self, name: str) -> TopicMeta:
        meta = self._catalogue.get(name)
        if meta is None:
            raise UnknownTopic(f"unknown topic {name!r}")
        return meta

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicMeta:
        for meta in self._topics.values():
            if meta.topic_id == topic_id:
                return meta
        rows = self.db.execute("SELECT name FROM kafkite_topics WHERE topic_id = %s", (topic_id,))
        if rows:
            return self.topic(str(rows[0][0]))
        raise UnknownTopic(f"unknown topic id {topic_id}")

    def _notify_catalogue(self) -> Op[None]:
        yield ("SELECT pg_notify(%s, %s)", (schema.CATALOGUE_CHANNEL, str(self.instance)))

    def create_topic(
        self,
        name: str,
        partitions: int,
        configs: Mapping[str, str] | None = None,
        topic_id: uuid.UUID | None = None,
    ) -> TopicMeta:
        meta = self._new_topic(name, partitions, configs, topic_id)
        topic_id, overrides = meta.topic_id, meta.configs

        def op() -> Op[bool]:
            rows = yield (
                "INSERT INTO kafkite_topics (name, topic_id, partitions, configs) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (name) DO NOTHING RETURNING name",
                (name, topic_id, partitions, json.dumps(overrides)),
            )
            if not rows:
                return False
            yield (
                "INSERT INTO kafkite_partitions (topic_id, idx)"
                " SELECT %s, i FROM generate_series(0, %s::integer) i",
                (topic_id, partitions - 1),
            )
            yield from self._notify_catalogue()
            return True

        if not self.db.run(op(), transaction=True):
            self._lookup(name)
            raise TopicAlreadyExists(f"topic {name!r} already exists")
        self._add(meta)
        return meta

    def delete_topic(self, name: str) -> None:
        self._check_open()
        meta = self.topic(name)

        def op() -> Op[None]:
            yield ("DELETE FROM kafkite_topics WHERE topic_id = %s", (meta.topic_id,))
            for table in ("kafkite_partitions", "kafkite_batches", "kafkite_producer_snapshots"):
                yield (f"DELETE FROM {table} WHERE topic_id = %s", (meta.topic_id,))
            yield from self._notify_catalogue()

        self.db.run(op(), transaction=True)
        self._topics.pop(name, None)
        for i in range(meta.partitions):
            part = self._parts.pop((name, i), None)
            if part is not None:
                part.delete()

    def create_partitions(self, name: str, total: int) -> TopicMeta:
        self._check_open()
        meta = self.topic(name)
        new = self._grown(meta, total)

        def op() -> Op[int]:
            rows = yield (
                "SELECT partitions FROM kafkite_topics WHERE topic_id = %s FOR UPDATE",
                (meta.topic_id,),
            )
            if not rows:
                raise UnknownTopic(f"unknown topic {name!r}")
            current = int(rows[0][0])
            if total <= current:
                raise InvalidPartitions(
                    f"topic {name!r} has {current} partitions; the new count must be larger, got {total}"
                )
            yield ("UPDATE kafkite_topics SET partitions = %s WHERE topic_id = %s", (total, meta.topic_id))
            yield (
                "INSERT INTO kafkite_partitions (topic_id, idx)"
                " SELECT %s, i FROM generate_series(%s::integer, %s::integer) i",
                (meta.topic_id, current, total - 1),
            )
            yield from self._notify_catalogue()
            return current

        self.db.run(op(), transaction=True)
        self._add(new)
        return new

    def set_topic_configs(self, name: str, configs: Mapping[str, str]) -> TopicMeta:
        """Replace the topic's overrides with ``configs`` and apply them to its partitions."""
        self._check_open()
        meta = self.topic(name)
        overrides = self._check_configs(configs)

        def op() -> Op[None]:
            yield (
                "UPDATE kafkite_topics SET configs = %s WHERE topic_id = %s",
                (json.dumps(overrides), meta.topic_id),
            )
            yield from self._notify_catalogue()

        self.db.run(op(), transaction=True)
        new = replace(meta, configs=overrides)
        self._add(new)
        return new

    def partition(self, name: str, index: int) -> PgPartition:
        part = self._parts.get((name, index))
        if part is None:
            meta = self._catalogue.get(name)
            if meta is None:
                raise UnknownTopic(f"unknown topic {name!r}")
            part = self._parts.get((name, index))
            if part is None:
                raise UnknownPartition(f"topic {name!r} has no partition {index}")
        return part

    def partitions(self) -> list[tuple[str, int, PgPartition]]:  # type: ignore[override]
        return [(t, p, log) for (t, p), log in list(self._parts.items())]

    # engine hooks of the base class (unused: the catalogue changes above are the engine's own) --------------

    def _new_partition(self, meta: TopicMeta, index: int, config: LogConfig) -> Any:
        return PgPartition(self, meta.name, meta.topic_id, index, config)

    # leadership --------------------------------------------------------------------------------------------

    def claim_op(self, parts: list[PgPartition], node_id: int) -> Op[list[PgPartition]]:
        """Within a transaction: become the leader of ``parts`` (those not held by this process already): each
        one's leader epoch goes up by one and starts at its current end. Returns the partitions claimed."""
        if not parts:
            return []
        rows = yield (
            "UPDATE kafkite_partitions p SET leader_epoch = p.leader_epoch + 1, leader_id = %s,"
            " leader_instance = %s FROM unnest(%s::uuid[], %s::integer[]) AS c(tid, idx)"
            " WHERE p.topic_id = c.tid AND p.idx = c.idx AND p.leader_instance IS DISTINCT FROM %s"
            " RETURNING p.topic_id, p.idx, p.leader_epoch, p.next_offset, p.log_start_offset, p.size_bytes",
            (node_id, self.instance, [p.topic_id for p in parts], [p.index for p in parts], self.instance),
        )
        if not rows:
            return []
        yield (
            "INSERT INTO kafkite_leader_epochs (topic_id, idx, epoch, start_offset)"
            " SELECT * FROM unnest(%s::uuid[], %s::integer[], %s::integer[], %s::bigint[])"
            " ON CONFLICT DO NOTHING",
            ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows]),
        )
        yield ("SELECT pg_notify(%s, %s)", (schema.LEADERS_CHANNEL, str(self.instance)))
        by_key = {(p.topic_id, p.index): p for p in parts}
        claimed = []
        for tid, idx, epoch, nxt, lso, size in rows:
            part = by_key.get(_key(tid, idx))
            if part is not None:
                part.set_bounds(int(nxt), int(lso), int(size))
                part.set_leader(int(epoch), self.instance)
                part.claimed(int(epoch), int(nxt))
                claimed.append(part)
        return claimed

    @staticmethod
    def _leaders_op() -> Op[Rows]:
        rows: Rows = yield (
            "SELECT topic_id, idx, leader_epoch, leader_instance FROM kafkite_partitions",
            None,
        )
        return rows

    async def reload_leaders_async(self) -> None:
        """Re-read every partition's leader epoch (after another broker claimed some)."""
        rows = await self.db.run_async(self._leaders_op())
        by_id = {(p.topic_id, p.index): p for p in self._parts.values()}
        for tid, idx, epoch, instance in rows:
            part = by_id.get(_key(tid, idx))
            if part is not None:
                part.set_leader(int(epoch), _uuid(instance))

    # group entries -----------------------------------------------------------------------------------------

    def _group_entries_op(
        self, entries: list[tuple[bytes, str, bytes | None]], fence: Callable[[], Op[None]] | None
    ) -> Op[None]:
        if fence is not None:
            yield from fence()
        for key, group_id, value in entries:
            if value is None:
                yield ("DELETE FROM kafkite_group_entries WHERE key = %s", (key,))
            else:
                yield (
                    "INSERT INTO kafkite_group_entries (key, group_id, value) VALUES (%s, %s, %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, group_id, value),
                )

    def group_entries_apply(
        self, entries: list[tuple[bytes, str, bytes | None]], fence: Callable[[], Op[None]] | None = None
    ) -> None:
        """Upsert (or, for a None value, delete) consumer group entries in one transaction (after ``fence``,
        which raises to refuse the write)."""
        if entries:
            self.db.run(self._group_entries_op(entries, fence), transaction=True)

    async def group_entries_apply_async(
        self, entries: list[tuple[bytes, str, bytes | None]], fence: Callable[[], Op[None]] | None = None
    ) -> None:
        """``group_entries_apply`` over a pooled connection (the event loop never waits on the database)."""
        if entries:
            await self.db.run_async(self._group_entries_op(entries, fence), transaction=True)

    def group_entries(self) -> list[tuple[bytes, str, bytes]]:
        return [(bytes(k), str(g), bytes(v)) for k, g, v in self.db.execute(_GROUP_ENTRIES)]

    async def group_entries_async(self) -> list[tuple[bytes, str, bytes]]:
        """``group_entries`` over a pooled connection."""
        return [(bytes(k), str(g), bytes(v)) for k, g, v in await self.db.execute_async(_GROUP_ENTRIES)]

    # maintenance -------------------------------------------------------------------------------------------

    def flush_all(self) -> None:
        pass

    def compact(self, now_ms: int, max_map_bytes: int = 0) -> int:
        """The PostgreSQL engine does not compact: ``cleanup.policy=compact`` is accepted and kept, and its
        logs keep every record (only the file and memory engines run the log cleaner)."""
        return 0

    def apply_retention(self, now_ms: int) -> int:
        moved = 0
        for (name, idx), part in list(self._parts.items()):
            if self.maintains is not None and not self.maintains(name, idx):
                continue
            try:
                moved += part.apply_retention(now_ms)
            except LogError as e:
                log.warning("retention of %s-%d failed: %s", name, idx, e)
        return moved

    # notifications -----------------------------------------------------------------------------------------

    async def start_async(self) -> None:
        """Listen for other brokers' appends and catalogue changes."""
        if self._listen_task is None:
            ready = asyncio.get_running_loop().create_future()
            self._listen_task = asyncio.create_task(self._listen(ready), name="pg-listen")
            await asyncio.wait([ready, self._listen_task], timeout=10, return_when=asyncio.FIRST_COMPLETED)

    async def _listen(self, ready: asyncio.Future[None]) -> None:
        while True:
            try:
                # Keepalives: a connection that silently died (a network cut) ends instead of waiting forever.
                connect = psycopg.AsyncConnection.connect(self.dsn, autocommit=True, **tcp_params(self.dsn))
                async with await connect as conn:
                    await conn.execute(f"LISTEN {schema.APPEND_CHANNEL}")
                    await conn.execute(f"LISTEN {schema.CATALOGUE_CHANNEL}")
                    await conn.execute(f"LISTEN {schema.CLUSTER_CHANNEL}")
                    await conn.execute(f"LISTEN {schema.LEADERS_CHANNEL}")
                    if ready.done():
                        await self.reload_async()  # catch up on what was missed while not listening
                    else:
                        ready.set_result(None)
                    async for note in conn.notifies():
                        self._notified(note.channel, note.payload)
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError, LogError) as e:
                log.warning("listening for notifications failed (retrying): %s", e)
            if not ready.done():
                ready.set_result(None)
            await asyncio.sleep(LISTEN_RETRY_S)

    def _notified(self, channel: str, payload: str) -> None:
        if channel == schema.APPEND_CHANNEL:
            # instance|topic|partition|next offset|log start offset
            fields = payload.split("|")
            if len(fields) != 5 or fields[0] == str(self.instance):
                return
            _, topic, idx, end, lso = fields
            part = self._parts.get((topic, int(idx)))
            if part is None:
                return
            part.set_bounds(int(end), int(lso))
            if self.on_append is not None:
                self.on_append(topic, int(idx))
        elif channel == schema.CATALOGUE_CHANNEL and payload != str(self.instance):
            if self._reload_task is None or self._reload_task.done():
                self._reload_task = asyncio.create_task(self._reload_soon(), name="pg-catalogue-reload")
        elif channel == schema.CLUSTER_CHANNEL and self.on_cluster is not None:
            self.on_cluster()
        elif channel == schema.LEADERS_CHANNEL and payload != str(self.instance):
            self._leaders_dirty = True
            if self._leaders_task is None or self._leaders_task.done():
                self._leaders_task = asyncio.create_task(self._reload_leaders(), name="pg-leaders-reload")

    async def _reload_leaders(self) -> None:
        while self._leaders_dirty:  # claims announced while reading are read again
            self._leaders_dirty = False
            try:
                await self.reload_leaders_async()
            except LogError as e:
                log.warning("reloading the leader epochs failed: %s", e)

    async def _reload_soon(self) -> None:
        try:
            await self.reload_async()
        except LogError as e:
            log.warning("reloading the catalogue failed: %s", e)

    async def stop_async(self) -> None:
        for task in (self._listen_task, self._reload_task, self._leaders_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._listen_task = self._reload_task = self._leaders_task = None
        await self.db.close_async()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for part in self._parts.values():
            part.close()
        self.db.close()


__all__ = ["DatabaseError", "PgPartition", "PgStorage", "is_postgres_dsn"]
