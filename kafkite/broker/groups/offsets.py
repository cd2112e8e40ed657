"""Committed offsets of every group, and offsets held by transactions that have not ended (Kafka's
OffsetMetadataManager).

The store keeps offsets apart from the groups themselves: any kind of group commits through it, and a group
id may hold offsets without a group (a "simple" group of consumers that assign partitions themselves).
Whether a member may commit or fetch is the group's business (``Group.validate_offset_commit``); the store
keeps what was committed, makes it durable through the group log, and answers what to expire.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from kafkite.protocol.errors import ErrorCode

from . import logformat
from .group import OffsetExpiration
from .log import Entry, store_error
from .logformat import OffsetAndMetadata

if TYPE_CHECKING:
    from .context import GroupContext

__all__ = ["OffsetAndMetadata", "OffsetStore", "TopicPartition"]

log = logging.getLogger("kafkite.groups")

TopicPartition = tuple[str, int]
Result = dict[str, Any]
NONE = int(ErrorCode.NO_ERROR)


class OffsetStore:
    """Committed and pending (transactional) offsets by group id, and the offset APIs over them.

    Every change is appended to the group log first (``ctx.append`` raises when it cannot) and applied to
    memory only once the append succeeded.
    """

    def __init__(self, ctx: GroupContext) -> None:
        self._ctx = ctx
        self._committed: dict[str, dict[TopicPartition, OffsetAndMetadata]] = {}
        # Offsets committed in transactions that have not ended: group -> producer id -> partition -> offset.
        self._pending: dict[str, dict[int, dict[TopicPartition, OffsetAndMetadata]]] = {}
        self._commit_lock = asyncio.Lock()

    # -- loading ---------------------------------------------------------------------------------------------

    def replay(self, key: logformat.OffsetKey | logformat.TxnOffsetKey, value: bytes | None) -> None:
        """Apply one offset entry of the group log (raises LogFormatError for an undecodable value)."""
        tp = (key.topic, key.partition)
        if isinstance(key, logformat.TxnOffsetKey):
            pending = self._pending.setdefault(key.group_id, {}).setdefault(key.producer_id, {})
            if value is None:
                pending.pop(tp, None)
            else:
                pending[tp] = logformat.decode_offset_value(value)
            return
        per_group = self._committed.setdefault(key.group_id, {})
        if value is None:
            per_group.pop(tp, None)
        else:
            per_group[tp] = logformat.decode_offset_value(value)

    def finish_load(self) -> None:
        """Forget the groups and producers whose entries all ended up deleted."""
        self._committed = {g: o for g, o in self._committed.items() if o}
        for group_id in list(self._pending):
            by_producer = {pid: p for pid, p in self._pending[group_id].items() if p}
            if by_producer:
                self._pending[group_id] = by_producer
            else:
                del self._pending[group_id]

    def groups(self) -> Iterable[str]:
        """Group ids holding committed offsets."""
        return self._committed.keys()

    def live_entries(self) -> list[Entry]:
        """Every committed and pending offset as a group log entry (what compaction keeps)."""
        live: list[Entry] = []
        for group_id, offsets in self._committed.items():
            for (topic, partition), om in offsets.items():
                live.append((logformat.offset_key(group_id, topic, partition), logformat.offset_value(om)))
        for group_id, by_producer in self._pending.items():
            for pid, pending in by_producer.items():
                for (topic, partition), om in pending.items():
                    key = logformat.txn_offset_key(group_id, topic, partition, pid)
                    live.append((key, logformat.offset_value(om)))
        return live

    def live_entries_of(self, group_id: str) -> list[Entry]:
        """``live_entries`` of one group."""
        live: list[Entry] = []
        for (topic, partition), om in self._committed.get(group_id, {}).items():
            live.append((logformat.offset_key(group_id, topic, partition), logformat.offset_value(om)))
        for pid, pending in self._pending.get(group_id, {}).items():
            for (topic, partition), om in pending.items():
                live.append(
                    (logformat.txn_offset_key(group_id, topic, partition, pid), logformat.offset_value(om))
                )
        return live

    @property
    def live_count(self) -> int:
        return sum(len(o) for o in self._committed.values())

    # -- committed offsets -----------------------------------------------------------------------------------

    def committed(self, group_id: str) -> Mapping[TopicPartition, OffsetAndMetadata]:
        return self._committed.get(group_id, {})

    def has_offsets(self, group_id: str) -> bool:
        return bool(self._committed.get(group_id))

    def commit(self, group_id: str, offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> None:
        """Make ``offsets`` the group's committed offsets of their partitions (raises if not durable)."""
        if not offsets:
            return
        self._ctx.append(
            [
                (logformat.offset_key(group_id, t, p), logformat.offset_value(om))
                for (t, p), om in offsets.items()
            ]
        )
        self._committed.setdefault(group_id, {}).update(offsets)

    async def commit_async(self, group_id: str, offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> None:
        """``commit``, the log written without holding the event loop."""
        if not offsets:
            return
        await self._ctx.append_async(
            [
                (logformat.offset_key(group_id, t, p), logformat.offset_value(om))
                for (t, p), om in offsets.items()
            ]
        )
        self._committed.setdefault(group_id, {}).update(offsets)

    def delete(self, group_id: str, partitions: Iterable[TopicPartition]) -> int:
        """Delete the group's committed offsets of ``partitions`` that exist; return how many."""
        present = self._present(group_id, partitions)
        if not present:
            return 0
        self._ctx.append([(logformat.offset_key(group_id, t, p), None) for t, p in present])
        return self._deleted(group_id, present)

    async def delete_async(self, group_id: str, partitions: Iterable[TopicPartition]) -> int:
        """``delete``, the log written without holding the event loop (in turn with offset commits)."""
        present = self._present(group_id, partitions)
        if not present:
            return 0
        async with self._commit_lock:
            await self._ctx.append_async([(logformat.offset_key(group_id, t, p), None) for t, p in present])
        return self._deleted(group_id, self._present(group_id, present))

    def _present(self, group_id: str, partitions: Iterable[TopicPartition]) -> list[TopicPartition]:
        offsets = self._committed.get(group_id, {})
        return [tp for tp in dict.fromkeys(partitions) if tp in offsets]

    def _deleted(self, group_id: str, present: list[TopicPartition]) -> int:
        offsets = self._committed.get(group_id, {})
        for tp in present:
            del offsets[tp]
        if not offsets:
            self._committed.pop(group_id, None)
        return len(present)

    def tombstones(self, group_id: str) -> list[Entry]:
        """Entries deleting every committed offset of the group (for deleting the group with them)."""
        return [(logformat.offset_key(group_id, t, p), None) for t, p in self._committed.get(group_id, {})]

    def forget(self, group_id: str) -> None:
        """The group's offsets were deleted with it (``tombstones`` appended by the caller)."""
        self._committed.pop(group_id, None)

    def expired(
        self, group_id: str, how: OffsetExpiration, now_ms: int, retention_ms: int
    ) -> list[TopicPartition]:
        """The group's offsets that retention removes now."""
        expired = []
        for tp, om in self._committed.get(group_id, {}).items():
            if tp[0] in how.kept_topics:
                continue
            if om.expire_timestamp_ms is not None:
                if now_ms >= om.expire_timestamp_ms:
                    expired.append(tp)
            elif now_ms - (om.commit_timestamp_ms if how.base_ms is None else how.base_ms) >= retention_ms:
                expired.append(tp)
        return expired

    # -- offsets of transactions -----------------------------------------------------------------------------

    def has_pending(self, group_id: str, tp: TopicPartition) -> bool:
        return any(tp in p for p in self._pending.get(group_id, {}).values())

    def pending_partitions(self, group_id: str) -> set[TopicPartition]:
        unstable: set[TopicPartition] = set()
        for pending in self._pending.get(group_id, {}).values():
            unstable.update(pending)
        return unstable

    def pending(self, group_id: str) -> dict[int, dict[TopicPartition, OffsetAndMetadata]]:
        """Offsets of ``group_id`` held by ongoing transactions, per producer id."""
        return {pid: dict(p) for pid, p in self._pending.get(group_id, {}).items()}

    def add_pending(
        self, group_id: str, producer_id: int, offsets: Mapping[TopicPartition, OffsetAndMetadata]
    ) -> None:
        """Hold ``offsets`` for the producer's transaction (raises if not durable)."""
        if not offsets:
            return
        self._ctx.append(
            [
                (logformat.txn_offset_key(group_id, t, p, producer_id), logformat.offset_value(om))
                for (t, p), om in offsets.items()
            ]
        )
        self._pending.setdefault(group_id, {}).setdefault(producer_id, {}).update(offsets)

    async def add_pending_async(
        self, group_id: str, producer_id: int, offsets: Mapping[TopicPartition, OffsetAndMetadata]
    ) -> None:
        """``add_pending``, the log written without holding the event loop (in turn with offset commits)."""
        if not offsets:
            return
        entries: list[Entry] = [
            (logformat.txn_offset_key(group_id, t, p, producer_id), logformat.offset_value(om))
            for (t, p), om in offsets.items()
        ]
        async with self._commit_lock:
            await self._ctx.append_async(entries)
        self._pending.setdefault(group_id, {}).setdefault(producer_id, {}).update(offsets)

    def complete_pending(
        self, group_id: str, producer_id: int, commit: bool
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """End the producer's transaction in the group: its pending offsets become committed offsets (commit)
        or are dropped (abort). Returns the offsets committed. Memory changes even when the log append fails
        (the caller reports it): a transaction end cannot be refused."""
        pending, entries = self._end_pending(group_id, producer_id, commit)
        try:
            self._ctx.append(entries)
        except Exception as exc:
            log.error("cannot persist the end of a transaction's offsets of group %s: %s", group_id, exc)
        return pending if commit else {}

    async def complete_pending_async(
        self, group_id: str, producer_id: int, commit: bool
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """``complete_pending``, the log written without holding the event loop. Memory changes at once (a
        transaction end cannot be refused); the entries are written in turn with the offset commits."""
        pending, entries = self._end_pending(group_id, producer_id, commit)
        try:
            async with self._commit_lock:
                await self._ctx.append_async(entries)
        except Exception as exc:
            log.error("cannot persist the end of a transaction's offsets of group %s: %s", group_id, exc)
        return pending if commit else {}

    def _end_pending(
        self, group_id: str, producer_id: int, commit: bool
    ) -> tuple[dict[TopicPartition, OffsetAndMetadata], list[Entry]]:
        by_producer = self._pending.get(group_id)
        pending = by_producer.pop(producer_id, None) if by_producer is not None else None
        if by_producer is not None and not by_producer:
            del self._pending[group_id]
        if not pending:
            return {}, []
        entries: list[Entry] = [
            (logformat.txn_offset_key(group_id, t, p, producer_id), None) for (t, p) in pending
        ]
        if commit:
            entries += [
                (logformat.offset_key(group_id, t, p), logformat.offset_value(om))
                for (t, p), om in pending.items()
            ]
            self._committed.setdefault(group_id, {}).update(pending)
        return pending, entries

    # -- OffsetCommit / OffsetFetch / TxnOffsetCommit / OffsetDelete ----------------------------------------

    def _partition_exists(self, topic: str, partition: int) -> bool:
        count = self._ctx.partitions_of(topic)
        return count is not None and 0 <= partition < count

    async def handle_commit(self, req: dict[str, Any], version: int) -> Result:
        group_id = req.get("group_id")
        generation = int(req.get("generation_id_or_member_epoch", req.get("generation_id", -1)))
        member_id = req.get("member_id") or ""
        instance_id = req.get("group_instance_id")
        retention_ms = int(req.get("retention_time_ms", -1)) if 2 <= version <= 4 else -1
        now = self._ctx.now_ms()

        # (topic index, partition index) -> error, filled as each partition is settled.
        topics: list[dict[str, Any]] = list(req.get("topics") or [])
        errors: dict[tuple[int, int], ErrorCode] = {}
        to_store: list[tuple[tuple[int, int], str, int, OffsetAndMetadata]] = []
        names = self._topic_names(topics) if version >= 10 else [t.get("name") or "" for t in topics]
        for ti, topic in enumerate(topics):
            name = names[ti]
            for pi, part in enumerate(topic.get("partitions") or []):
                index = int(part.get("partition_index", 0))
                if name is None:
                    # Version 10 names topics by id: an id the catalogue does not know.
                    errors[(ti, pi)] = ErrorCode.UNKNOWN_TOPIC_ID
                    continue
                if not self._partition_exists(name, index):
                    errors[(ti, pi)] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                    continue
                metadata = part.get("committed_metadata")
                if metadata is None:
                    metadata = ""
                if len(metadata) > self._ctx.config.offset_metadata_max_bytes:
                    errors[(ti, pi)] = ErrorCode.OFFSET_METADATA_TOO_LARGE
                    continue
                om = OffsetAndMetadata(
                    offset=int(part.get("committed_offset", -1)),
                    leader_epoch=int(part.get("committed_leader_epoch", -1)),
                    metadata=metadata,
                    commit_timestamp_ms=now,
                    expire_timestamp_ms=now + retention_ms if retention_ms >= 0 else None,
                )
                to_store.append(((ti, pi), name, index, om))

        if to_store:
            # One commit at a time: committed offsets are stored and applied in the order they were checked.
            async with self._commit_lock:
                error = await self._commit(group_id, generation, member_id, instance_id, to_store, version)
            for pos, _, _, _ in to_store:
                errors[pos] = error

        return {
            "throttle_time_ms": 0,
            "topics": [
                {
                    "name": topic.get("name") or "",
                    "topic_id": topic.get("topic_id"),
                    "partitions": [
                        {
                            "partition_index": int(part.get("partition_index", 0)),
                            "error_code": int(errors.get((ti, pi), ErrorCode.NO_ERROR)),
                        }
                        for pi, part in enumerate(topic.get("partitions") or [])
                    ],
                }
                for ti, topic in enumerate(topics)
            ],
        }

    def _topic_names(self, topics: list[dict[str, Any]]) -> list[str | None]:
        """The names of topics given by id (None for an id no topic has)."""
        wanted = {t.get("topic_id") for t in topics}
        by_id: dict[Any, str] = {
            m.topic_id: name for name, m in self._ctx.topics().items() if m.topic_id in wanted
        }
        return [by_id.get(t.get("topic_id")) for t in topics]

    async def _commit(
        self,
        group_id: str | None,
        generation: int,
        member_id: str,
        instance_id: str | None,
        to_store: list[tuple[tuple[int, int], str, int, OffsetAndMetadata]],
        version: int,
    ) -> ErrorCode:
        if group_id is None:
            return ErrorCode.INVALID_GROUP_ID
        group = self._ctx.groups.get(group_id)
        created = False
        if group is None:
            if generation >= 0:
                # Not a group managed here (or a commit from a generation long gone): from version 9
                # GROUP_ID_NOT_FOUND (both protocols), before it ILLEGAL_GENERATION, as Kafka answers.
                return ErrorCode.GROUP_ID_NOT_FOUND if version >= 9 else ErrorCode.ILLEGAL_GENERATION
            group = self._ctx.simple_group(group_id)
            created = True
        error = group.validate_offset_commit(
            member_id, instance_id, generation, transactional=False, version=version
        )
        if error is not None:
            return error
        self._ctx.on_offset_commit(group, member_id)
        try:
            await self.commit_async(
                group_id, {(topic, partition): om for _, topic, partition, om in to_store}
            )
        except Exception as exc:
            log.warning("cannot persist offsets of group %s: %s", group_id, exc)
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        if created:
            log.info("group %s created by an offset commit", group_id)
            self._ctx.groups[group_id] = group
        return ErrorCode.NO_ERROR

    async def handle_fetch(self, req: dict[str, Any], version: int) -> Result:
        require_stable = bool(req.get("require_stable", False))
        if version >= 8:
            groups: list[Result] = []
            for g in req.get("groups") or []:
                group_id = g.get("group_id")
                group = self._ctx.groups.get(group_id) if group_id is not None else None
                member_error = (
                    group.validate_offset_fetch(g.get("member_id"), int(g.get("member_epoch", -1)))
                    if group is not None and version >= 9
                    else None
                )
                if member_error is not None and member_error != ErrorCode.GROUP_ID_NOT_FOUND:
                    # A member of a consumer group that is not (or no longer) who it says.
                    groups.append({"group_id": group_id or "", "topics": [], "error_code": int(member_error)})
                    continue
                error, topics = self._fetch_offsets(group_id, g.get("topics"), require_stable, version >= 10)
                groups.append({"group_id": group_id or "", "topics": topics, "error_code": int(error)})
            return {"throttle_time_ms": 0, "groups": groups}
        requested = req.get("topics")
        if version < 2 and requested is None:
            requested = []
        error, topics = self._fetch_offsets(req.get("group_id"), requested, require_stable)
        return {"throttle_time_ms": 0, "topics": topics, "error_code": int(error)}

    def _fetch_offsets(
        self,
        group_id: str | None,
        requested: list[dict[str, Any]] | None,
        require_stable: bool,
        by_id: bool = False,
    ) -> tuple[ErrorCode, list[Result]]:
        if group_id is None:
            return ErrorCode.INVALID_GROUP_ID, []
        group = self._ctx.groups.get(group_id)
        offsets = self.committed(group_id) if group is not None and not group.is_dead else {}
        # Version 10 names topics by id: (name or None if the id is unknown, the id to answer with).
        ids: list[Any] = []
        if requested is None:
            wanted: dict[str, list[int]] = {}
            for topic, partition in sorted(offsets):
                wanted.setdefault(topic, []).append(partition)
            items: list[tuple[str | None, list[int]]] = list(wanted.items())
            if by_id:
                catalogue = self._ctx.topics()
                # Offsets of topics that no longer exist are left out.
                items = [(n, ps) for n, ps in items if n is not None and n in catalogue]
                ids = [catalogue[n].topic_id for n, _ in items if n is not None]
        elif by_id:
            items = [
                (n, list(t.get("partition_indexes") or []))
                for n, t in zip(self._topic_names(requested), requested, strict=True)
            ]
            ids = [t.get("topic_id") for t in requested]
        else:
            items = [(t.get("name") or "", list(t.get("partition_indexes") or [])) for t in requested]
        unstable = self.pending_partitions(group_id) if require_stable else set()
        report_epoch = self._ctx.report_leader_epoch
        topics = []
        for ti, (name, partitions) in enumerate(items):
            parts = []
            for index in partitions:
                om = offsets.get((name, index)) if name is not None else None
                if name is None:
                    parts.append(
                        {
                            "partition_index": index,
                            "committed_offset": -1,
                            "committed_leader_epoch": -1,
                            "metadata": "",
                            "error_code": int(ErrorCode.UNKNOWN_TOPIC_ID),
                        }
                    )
                elif (name, index) in unstable:
                    # A transaction holding an offset of this partition has not ended: ask again later.
                    parts.append(
                        {
                            "partition_index": index,
                            "committed_offset": -1,
                            "committed_leader_epoch": -1,
                            "metadata": "",
                            "error_code": int(ErrorCode.UNSTABLE_OFFSET_COMMIT),
                        }
                    )
                elif om is None:
                    parts.append(
                        {
                            "partition_index": index,
                            "committed_offset": -1,
                            "committed_leader_epoch": -1,
                            "metadata": "",
                            "error_code": NONE,
                        }
                    )
                else:
                    parts.append(
                        {
                            "partition_index": index,
                            "committed_offset": om.offset,
                            "committed_leader_epoch": om.leader_epoch if report_epoch else -1,
                            "metadata": om.metadata if om.metadata is not None else "",
                            "error_code": NONE,
                        }
                    )
            entry: Result = {"name": name or "", "partitions": parts}
            if by_id:
                entry["topic_id"] = ids[ti]
            topics.append(entry)
        return ErrorCode.NO_ERROR, topics

    async def handle_txn_commit(self, req: dict[str, Any], version: int) -> Result:
        """TxnOffsetCommit (the transaction coordinator has checked the producer): offsets held pending until
        the transaction ends (``complete_txn_offsets``)."""
        group_id = req.get("group_id") or ""
        producer_id = int(req["producer_id"])
        now = self._ctx.now_ms()
        topics: list[dict[str, Any]] = list(req.get("topics") or [])
        error: ErrorCode | None = None
        group = self._ctx.groups.get(group_id)
        generation = int(req.get("generation_id", -1))
        if group is not None and version >= 3 and (generation >= 0 or req.get("member_id")):
            error = group.validate_offset_commit(
                req.get("member_id") or "",
                req.get("group_instance_id"),
                generation,
                transactional=True,
                version=version,
            )
        errors: dict[tuple[int, int], ErrorCode] = {}
        to_store: dict[tuple[str, int], OffsetAndMetadata] = {}
        for ti, topic in enumerate(topics):
            name = topic.get("name") or ""
            for pi, part in enumerate(topic.get("partitions") or []):
                index = int(part.get("partition_index", 0))
                metadata = part.get("committed_metadata")
                if error is not None:
                    errors[(ti, pi)] = error
                elif not self._partition_exists(name, index):
                    errors[(ti, pi)] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                elif metadata is not None and len(metadata) > self._ctx.config.offset_metadata_max_bytes:
                    errors[(ti, pi)] = ErrorCode.OFFSET_METADATA_TOO_LARGE
                else:
                    to_store[(name, index)] = OffsetAndMetadata(
                        offset=int(part.get("committed_offset", -1)),
                        leader_epoch=int(part.get("committed_leader_epoch", -1)),
                        metadata=metadata if metadata is not None else "",
                        commit_timestamp_ms=now,
                    )
        if to_store:
            try:
                await self.add_pending_async(group_id, producer_id, to_store)
            except Exception as exc:
                log.warning("cannot persist transactional offsets of group %s: %s", group_id, exc)
                error = ErrorCode.COORDINATOR_NOT_AVAILABLE
                for ti, topic in enumerate(topics):
                    for pi, _ in enumerate(topic.get("partitions") or []):
                        errors.setdefault((ti, pi), error)
        return {
            "throttle_time_ms": 0,
            "topics": [
                {
                    "name": topic.get("name") or "",
                    "partitions": [
                        {
                            "partition_index": int(part.get("partition_index", 0)),
                            "error_code": int(errors.get((ti, pi), ErrorCode.NO_ERROR)),
                        }
                        for pi, part in enumerate(topic.get("partitions") or [])
                    ],
                }
                for ti, topic in enumerate(topics)
            ],
        }

    async def handle_delete(self, req: dict[str, Any], version: int) -> Result:
        group_id = req.get("group_id")
        topics = list(req.get("topics") or [])

        def group_error(code: ErrorCode) -> Result:
            return {"throttle_time_ms": 0, "error_code": int(code), "topics": []}

        if group_id is None:
            return group_error(ErrorCode.INVALID_GROUP_ID)
        group = self._ctx.groups.get(group_id)
        if group is None or group.is_dead:
            return group_error(ErrorCode.GROUP_ID_NOT_FOUND)
        error = group.validate_offset_delete()
        if error is not None:
            return group_error(error)
        deletable: list[tuple[str, int]] = []
        results = []
        for topic in topics:
            name = topic.get("name") or ""
            parts = []
            for part in topic.get("partitions") or []:
                index = int(part.get("partition_index", 0))
                if not self._partition_exists(name, index):
                    code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                elif not group.is_empty and group.is_subscribed_to(name):
                    code = ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC
                else:
                    code = ErrorCode.NO_ERROR
                    deletable.append((name, index))
                parts.append({"partition_index": index, "error_code": int(code)})
            results.append({"name": name, "partitions": parts})
        try:
            await self.delete_async(group_id, deletable)
        except Exception as exc:
            log.warning("cannot persist offset deletion in group %s: %s", group_id, exc)
            return group_error(store_error(exc))
        self._ctx.maybe_drop_group(group)
        return {"throttle_time_ms": 0, "error_code": NONE, "topics": results}

    def expire(self) -> int:
        """Drop offsets past ``offsets.retention.minutes`` and groups left empty; return how many offsets."""
        now = self._ctx.now_ms()
        retention = self._ctx.config.offsets_retention_ms
        removed = 0
        for group in list(self._ctx.groups.values()):
            how = group.offset_expiration()
            expired = self.expired(group.group_id, how, now, retention) if how is not None else []
            if expired:
                try:
                    removed += self.delete(group.group_id, expired)
                except Exception as exc:
                    log.warning("cannot persist expired offsets of group %s: %s", group.group_id, exc)
                    continue
            self._ctx.maybe_drop_group(group)
        if removed:
            log.info("removed %d expired offsets", removed)
        return removed

    async def expire_async(self) -> int:
        """``expire``, the log written without holding the event loop."""
        now = self._ctx.now_ms()
        retention = self._ctx.config.offsets_retention_ms
        removed = 0
        for group in list(self._ctx.groups.values()):
            how = group.offset_expiration()
            expired = self.expired(group.group_id, how, now, retention) if how is not None else []
            if expired:
                try:
                    removed += await self.delete_async(group.group_id, expired)
                except Exception as exc:
                    log.warning("cannot persist expired offsets of group %s: %s", group.group_id, exc)
                    continue
            self._ctx.maybe_drop_group(group)
        if removed:
            log.info("removed %d expired offsets", removed)
        return removed
