"""One partition stored in PostgreSQL: the ``Partition`` interface over rows of ``kafkite_batches``.

Offsets: an append rewrites each batch's base offset from the cached next offset and runs one statement that
advances the partition row only if it still holds that offset (see ``schema.APPEND``). When another broker
appended meanwhile the statement matches nothing; the partition then reloads its bounds, catches its producer
state up from the batches it missed, and tries again. Offsets are therefore assigned by the database, in one
transaction with the insert, whichever broker appends.

The cached bounds (next offset = high watermark, log start offset, size) are kept fresh by this broker's own
operations and by the other brokers' notifications; a read beyond the cached end checks the database first.

Leader epochs: the partition row carries its leader epoch and the process holding the leadership; a broker
becomes leader by claiming the row (``PgStorage.claim_op``: the epoch goes up by one and its start offset is
recorded in ``kafkite_leader_epochs``). Every append is prepared for the epoch it last saw, stamps it into
the batches (as Kafka's leaders stamp theirs) and matches the row only while it still has that epoch, so an
append by a broker whose leadership was claimed by another one fails (``NotLeader``) instead of landing, and
so do the appends queued behind it: leadership is checked before sequence numbers, as Kafka's leaders do.

Sequence gaps: for ``IN_FLIGHT_WINDOW_S`` after this broker claimed the partition, or after one of its appends
failed for want of the database, a batch that skips sequence numbers is refused with a retriable error
(``NotLeader``, ``LogError``) rather than ``OutOfOrderSequence``: the batches in the gap may still be in
flight to the previous leader, or were refused here, and will be retried first. librdkafka answers an
out-of-order sequence behind them by bumping its producer epoch and renumbering from 0 every batch it has not
seen acknowledged, storing again those whose answers were lost.

Producer state (idempotence, transactions) is a ``ProducerStateManager`` rebuilt from the newest snapshot in
``kafkite_producer_snapshots`` plus the batch headers after it, kept current by every append, and caught up
from the database whenever the log moved on without it. Retention passes store a snapshot when it changed.

``append`` queues the append per partition in call order (so requests on one connection keep their order)
and runs it over the pooled asynchronous connections, as ``read`` does its query; ``append_sync``,
``read_sync`` and every other method run synchronously over the storage's synchronous connection.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

from kafkite.log.base import (
    AppendInfo,
    AppendOutcomeUnknown,
    FileRange,
    LogClosed,
    LogError,
    NotLeader,
    OffsetOutOfRange,
    Partition,
    ReadResult,
    prepare_append,
    txn_marker,
)
from kafkite.log.config import LogConfig
from kafkite.log.partition import _record_timestamps
from kafkite.log.pg import schema
from kafkite.log.pg.db import DatabaseError, Op, Query, on_event_loop
from kafkite.log.producer_state import (
    AbortedTxn,
    OutOfOrderSequence,
    ProducerStateError,
    ProducerStateManager,
    replay,
)
from kafkite.log.writer import Pending
from kafkite.protocol.records import BatchHeader, read_header

if TYPE_CHECKING:
    from kafkite.log.pg.storage import PgStorage

log = logging.getLogger("kafkite.log.pg")

# Rows looked at per read: bounds the work of one fetch of a partition of many small batches.
READ_ROW_LIMIT = 4000
# How often an append retries after losing the partition row to another broker's append.
APPEND_ATTEMPTS = 20
# Appends queued behind the one being written are written together, up to this many bytes and appends.
GROUP_BYTES = 16 << 20
GROUP_APPENDS = 64
# For this long after this broker took a partition over, a batch that skips sequence numbers is refused
# NotLeader (NOT_LEADER_OR_FOLLOWER: retried) rather than OUT_OF_ORDER_SEQUENCE_NUMBER: while the clients
# follow the partition from broker to broker, the batches in the gap may still be in flight to a broker that
# led it before (which will refuse them), and librdkafka answers an out-of-order sequence behind them by
# bumping its epoch and renumbering every batch it has not seen acknowledged, storing again any whose answer
# was lost. The clients' default request timeout bounds how long such a request stays unanswered; a real gap
# is answered OUT_OF_ORDER_SEQUENCE_NUMBER once the window has passed. Likewise for this long after an append
# here failed without an answer from the database, a gap is refused as that append was (KAFKA_STORAGE_ERROR,
# retried): the failed batches are the gap, and are retried before the ones behind them.
IN_FLIGHT_WINDOW_S = 30.0


@dataclass
class _Queued:
    """An asynchronous append waiting for its turn."""

    batches: bytearray | memoryview
    now_ms: int
    expect: int | None
    fence: Callable[[], Op[None]] | None
    future: asyncio.Future[AppendInfo] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def _settle(item: _Queued, outcome: AppendInfo | BaseException) -> None:
    if item.future.done():
        return
    if isinstance(outcome, BaseException):
        item.future.set_exception(outcome)
    else:
        item.future.set_result(outcome)


@dataclass
class _Prepared:
    start: int
    end: int
    size: int
    headers: list[tuple[int, BatchHeader]]
    rows: list[tuple[Any, ...]]
    idempotent: bool
    append_time: int


class PgPartition(Partition):
    def __init__(
        self,
        storage: PgStorage,
        topic: str,
        topic_id: UUID,
        index: int,
        config: LogConfig,
        *,
        next_offset: int = 0,
        log_start_offset: int = 0,
        size: int = 0,
        leader_epoch: int = 0,
        leader_instance: UUID | None = None,
    ) -> None:
        self.config = config
        self.topic = topic
        self.topic_id = topic_id
        self.index = index
        self._storage = storage
        self._db = storage.db
        self._next = next_offset
        self._lso = log_start_offset
        self._size = size
        self._epoch = leader_epoch
        self._leader_instance = leader_instance
        self._producers = ProducerStateManager()
        self._state_end: int | None = (
            None  # the producer state reflects the log up to here (None: not loaded)
        )
        self._snapshot_changes = 0
        # Asynchronous appends waiting to be written, and the task writing them (see ``_drain``).
        self._queue: deque[_Queued] = deque()
        self._drainer: asyncio.Future[None] | None = None
        # True while the producer state holds appends of a group whose statement has not committed yet.
        self._speculating = False
        self._catching: asyncio.Future[None] | None = None  # a background catch-up of the producer state
        # (leader epoch, its start offset, monotonic time) of this process's last claim of the partition
        self._claimed: tuple[int, int, float] | None = None
        self._failed_at: float | None = None  # monotonic time of the last append failed by the database
        self._closed = False
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"PgPartition({self.topic}-{self.index})"

    # bounds ------------------------------------------------------------------------------------------------

    @property
    def log_start_offset(self) -> int:
        return self._lso

    @property
    def log_end_offset(self) -> int:
        return self._next

    @property
    def size_bytes(self) -> int:
        return self._size

    @property
    def unflushed_messages(self) -> int:
        return 0  # every append is a committed transaction

    @property
    def leader_epoch(self) -> int:
        return self._epoch

    @property
    def leader_instance(self) -> UUID | None:
        """The broker process holding the leadership (None: never claimed)."""
        return self._leader_instance

    @property
    def leading(self) -> bool:
        """Whether this broker's process holds the partition's leadership (as last seen)."""
        return self._leader_instance == self._storage.instance

    def set_leader(self, epoch: int, instance: UUID | None) -> None:
        """A leader epoch seen in the database or announced (never moves backwards)."""
        with self._lock:
            if epoch > self._epoch or (epoch == self._epoch and instance is not None):
                self._epoch = epoch
                self._leader_instance = instance

    def claimed(self, epoch: int, start_offset: int) -> None:
        """This process took the leadership: ``epoch`` starts at ``start_offset``."""
        with self._lock:
            self._claimed = (epoch, start_offset, time.monotonic())

    def _gap_may_be_in_flight(self) -> bool:
        """Whether a sequence gap may be batches still in flight to a broker that led the partition before:
        this broker took it over moments ago."""
        claim = self._claimed
        return (
            claim is not None
            and claim[0] == self._epoch
            and time.monotonic() - claim[2] <= IN_FLIGHT_WINDOW_S
        )

    @property
    def closed(self) -> bool:
        return self._closed

    def set_bounds(
        self, next_offset: int, log_start_offset: int | None = None, size: int | None = None
    ) -> None:
        """Newer bounds seen in the database or announced by another broker (never moves backwards)."""
        with self._lock:
            if next_offset > self._next:
                self._next = next_offset
            if log_start_offset is not None and log_start_offset > self._lso:
                self._lso = log_start_offset
                self._producers.on_log_start_offset(log_start_offset)
            if size is not None:
                self._size = size

    def _bounds_op(self, *, authoritative: bool = False) -> Op[None]:
        """Reload the bounds and the leader. ``authoritative``: take the database's end even when it is below
        the cached one (a database restored to an earlier point, or commits lost by its crash) and rebuild
        the producer state from it, instead of retrying appends at an offset it will never reach."""
        rows = yield (schema.BOUNDS, (self.topic_id, self.index))
        if not rows:
            self._closed = True
            raise LogClosed(f"partition {self.topic}-{self.index} no longer exists")
        nxt, lso, size, epoch, instance = rows[0]
        if authoritative and int(nxt) < self._next:
            log.warning(
                "%s-%d: the database ends at %d, before the %d this broker saw: following the database",
                self.topic,
                self.index,
                int(nxt),
                self._next,
            )
            with self._lock:
                self._next, self._lso, self._size = int(nxt), int(lso), int(size)
                self._state_end = None
                self._producers = ProducerStateManager()
        self.set_bounds(int(nxt), int(lso), int(size))
        self.set_leader(int(epoch), None if instance is None else UUID(str(instance)))

    def refresh(self) -> None:
        """Reload the bounds from the database."""
        self._db.run(self._bounds_op())

    async def refresh_async(self) -> None:
        await self._db.run_async(self._bounds_op())

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosed(f"partition {self.topic}-{self.index} is closed")

    def reconfigure(self, config: LogConfig) -> None:
        self.config = config

    # producer state ----------------------------------------------------------------------------------------

    def _catch_up_op(self) -> Op[None]:
        """Bring the producer state up to the cached next offset (loading the snapshot the first time)."""
        if self._state_end is None:
            rows = yield (
                "SELECT snapshot_offset, data FROM kafkite_producer_snapshots"
                " WHERE topic_id = %s AND idx = %s",
                (self.topic_id, self.index),
            )
            state = ProducerStateManager()
            start = self._lso
            if rows and self._lso <= int(rows[0][0]) <= self._next:
                try:
                    start, state = ProducerStateManager.from_json(bytes(rows[0][1]))
                except ValueError:
                    start, state = self._lso, ProducerStateManager()
            target = self._next
            found = yield (schema.PRODUCER_BATCHES, (self.topic_id, self.index, start))
            replay(state, _producer_batches(found, start, target))
            state.on_log_start_offset(self._lso)
            if self._state_end is None:
                self._producers = state
                self._state_end = target
                self._snapshot_changes = state.changes
            return
        start = self._state_end
        target = self._next
        if start >= target:
            return
        found = yield (schema.PRODUCER_BATCHES, (self.topic_id, self.index, start))
        if self._state_end == start and not self._speculating:
            replay(self._producers, _producer_batches(found, start, target))
            self._state_end = target

    def _current_state_op(self) -> Op[None]:
        if self._state_end is None or self._state_end < self._next:
            yield from self._catch_up_op()

    def _ensure_state(self) -> None:
        if self._state_end is None or self._state_end < self._next:
            self._db.run(self._catch_up_op())

    def _state_for_reads(self) -> bool:
        """Whether the producer state is caught up with the log, catching it up first when it is not: at once
        off the event loop; on it, in the background (a read there never waits on the database for it)."""
        if self._state_end is not None and self._state_end >= self._next:
            return True
        if not on_event_loop():
            self._db.run(self._catch_up_op())
            return True
        if self._catching is None or self._catching.done():
            self._catching = asyncio.ensure_future(self._catch_up_async())
        return False

    @property
    def behind(self) -> bool:
        return self._state_end is None or self._state_end < self._next

    async def catch_up(self) -> None:
        if self.behind:
            await self._db.run_async(self._catch_up_op())

    async def _catch_up_async(self) -> None:
        try:
            await self._db.run_async(self._catch_up_op())
        except LogError as e:
            log.debug("%s-%d: catching the producer state up failed: %s", self.topic, self.index, e)

    @property
    def producers(self) -> ProducerStateManager:
        """The producer state, caught up with the log (DescribeProducers)."""
        self._ensure_state()
        return self._producers

    @property
    def last_stable_offset(self) -> int:
        """The high watermark, or the first offset of the oldest ongoing transaction when that is lower.

        While the producer state is being caught up (on the event loop: another broker appended), the offset
        the state is current to bounds it as well: a transaction begun after it is not known yet, so the last
        stable offset given is never above the true one. Request handlers await ``catch_up`` first when
        ``behind``, and so answer with the exact one."""
        current = self._state_for_reads()
        hw = self._next
        if not current:
            hw = min(hw, self._lso if self._state_end is None else self._state_end)
        first = self._producers.first_unstable_offset()
        return hw if first is None or first > hw else first

    def aborted_transactions(self, start: int, end: int) -> list[AbortedTxn]:
        self._state_for_reads()  # below a last stable offset given while catching up, the state is complete
        return self._producers.aborted_transactions(start, end)

    def expire_producers(self, now_ms: int, max_age_ms: int) -> int:
        return len(self._producers.expire(now_ms, max_age_ms))

    def write_txn_marker(
        self,
        producer_id: int,
        producer_epoch: int,
        *,
        commit: bool,
        coordinator_epoch: int,
        now_ms: int,
        fence: Callable[[], Op[None]] | None = None,
    ) -> Pending[AppendInfo]:
        """Append a COMMIT or ABORT marker for the producer's transaction. With ``fence``, the marker is
        appended in one database transaction with it (a coordinator's lease check)."""
        marker = txn_marker(
            producer_id, producer_epoch, commit=commit, coordinator_epoch=coordinator_epoch, now_ms=now_ms
        )
        if fence is None:
            return self.append(marker, now_ms=now_ms)
        return self.append_fenced_async(marker, now_ms=now_ms, fence=fence)

    def snapshot_producers(self) -> bool:
        """Store the producer state when it changed since the last snapshot; True when one was stored."""
        if self._state_end is None or self._producers.changes == self._snapshot_changes or self._speculating:
            return False
        if self._state_end != self._next:
            return False  # behind the log: the next append or read catches up first
        offset = self._state_end
        data = self._producers.to_json(offset)
        self._snapshot_changes = self._producers.changes
        self._db.execute(
            "INSERT INTO kafkite_producer_snapshots (topic_id, idx, snapshot_offset, data)"
            " VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (topic_id, idx) DO UPDATE SET snapshot_offset = excluded.snapshot_offset,"
            " data = excluded.data"
            " WHERE kafkite_producer_snapshots.snapshot_offset <= excluded.snapshot_offset",
            (self.topic_id, self.index, offset, data),
        )
        return True

    # append ------------------------------------------------------------------------------------------------

    def _prepare(
        self, batches: bytearray | memoryview, now_ms: int, epoch: int, start: int | None = None
    ) -> _Prepared | AppendInfo:
        """Validate and rewrite ``batches`` for offsets from ``start`` (the cached next offset by default); a
        duplicate of a batch already appended is answered with its offsets (an AppendInfo) instead."""
        if start is None:
            start = self._next
        prep = prepare_append(
            batches, self._producers, start, self._lso, self.config, now_ms, leader_epoch=epoch
        )
        if isinstance(prep, AppendInfo):
            return prep
        headers = prep.headers
        total = len(batches)
        next_offset = prep.last_offset + 1
        # Handed to the driver as they are (no copy): the request buffer lives until the append is answered.
        view = memoryview(batches)
        rows = [
            (
                h.last_offset,
                h.base_offset,
                h.max_timestamp,
                h.size,
                h.producer_id,
                h.is_control,
                view[pos : pos + h.size],
            )
            for pos, h in headers
        ]
        return _Prepared(start, next_offset, total, headers, rows, prep.idempotent, prep.append_time)

    def _statement(self, start: int, end: int, epoch: int, size: int, rows: list[tuple[Any, ...]]) -> Query:
        """The append statement and its parameters for ``rows`` (see ``schema.append_statement``)."""
        params: dict[str, Any] = {
            "tid": self.topic_id,
            "idx": self.index,
            "start": start,
            "end": end,
            "epoch": epoch,
            "size": size,
            "note": f"{self._storage.instance}|{self.topic}|{self.index}|{end}",
        }
        for i, row in enumerate(rows):
            params.update((f"{name}{i}", value) for name, value in zip(schema.BATCH_FIELDS, row, strict=True))
        return schema.append_statement(len(rows)), params

    def _applied(self, prep: _Prepared, lso: int, batches: bytearray | memoryview, now_ms: int) -> None:
        with self._lock:
            if self._state_end == prep.start:
                if prep.idempotent:
                    replay(
                        self._producers,
                        (
                            (h, bytes(batches[pos : pos + h.size]) if h.is_control else None)
                            for pos, h in prep.headers
                        ),
                        now_ms,
                    )
                self._state_end = prep.end
            if prep.end > self._next:
                self._next = prep.end
                self._size += prep.size
            if lso > self._lso:
                self._lso = lso
                self._producers.on_log_start_offset(lso)

    def _append_op(
        self,
        batches: bytearray | memoryview,
        now_ms: int,
        expect: int | None = None,
        sent: list[bool] | None = None,
    ) -> Op[AppendInfo]:
        """Append as the leader of epoch ``expect`` (refused with ``NotLeader`` once another broker claimed
        the partition), or, with None, as a broker that does not lead it (a transaction coordinator writing
        a marker, a gateway), at whatever epoch the partition is."""
        for _ in range(APPEND_ATTEMPTS):
            self._check_open()
            # As Kafka's leaders do, whether this broker still leads is checked before the batches' sequence
            # numbers are: an append queued behind one that lost the leadership is answered NotLeader too,
            # not OUT_OF_ORDER_SEQUENCE_NUMBER for the gap the refused one left (a client takes that for a
            # broken sequence and bumps its epoch, renumbering batches that may have been stored).
            self._check_leader(expect)
            yield from self._current_state_op()
            epoch = self._epoch if expect is None else expect
            try:
                prep = self._prepare(batches, now_ms, epoch)
            except ProducerStateError as e:
                # Refused by this broker's producer state: make sure it is not just behind the log, nor
                # the refusal of a broker that no longer leads.
                known = self._next
                yield from self._bounds_op()
                self._check_leader(expect)
                if self._next != known:
                    continue
                if isinstance(e, OutOfOrderSequence):
                    if expect is not None and self._gap_may_be_in_flight():
                        raise NotLeader(
                            f"{e}: the batches before it may still be in flight to a previous leader of"
                            f" {self.topic}-{self.index}"
                        ) from None
                    failed = self._failed_at
                    if failed is not None and time.monotonic() - failed <= IN_FLIGHT_WINDOW_S:
                        raise LogError(f"{e}: an append before it failed; retry them in order") from None
                raise
            if isinstance(prep, AppendInfo):
                return prep
            if sent is not None:
                sent[0] = True  # from here on, a lost connection leaves the outcome unknown
            rows = yield self._statement(prep.start, prep.end, epoch, prep.size, prep.rows)
            if sent is not None:
                sent[0] = False
            if rows:
                lso = int(rows[0][0])
                self._applied(prep, lso, batches, now_ms)
                return AppendInfo(prep.start, prep.end - 1, prep.append_time, max(lso, self._lso), prep.size)
            # Another broker appended first, or claimed the leadership: reload the bounds and see.
            yield from self._bounds_op(authoritative=True)
            self._check_leader(expect)
        self._failed_at = time.monotonic()
        raise LogError(f"append to {self.topic}-{self.index} kept losing to concurrent appends")

    def _check_leader(self, expect: int | None) -> None:
        """Raise NotLeader when this broker appends as the leader of epoch ``expect`` and the partition has
        since moved on (as last seen); nothing for an append made as a non-leader (None)."""
        if expect is not None and (self._epoch != expect or not self.leading):
            raise NotLeader(
                f"{self.topic}-{self.index} is led by another broker since leader epoch {self._epoch}"
            )

    def _expected_epoch(self) -> int | None:
        """The epoch a leader appends at (taken when the append is asked for, right after the broker checked
        that it leads); None when this broker does not lead the partition."""
        return self._epoch if self.leading else None

    def append_sync(self, batches: bytearray | memoryview, *, now_ms: int) -> AppendInfo:
        """Assign offsets to ``batches`` (validated v2 batches, rewritten in place) and store them."""
        self._check_open()
        sent = [False]
        try:
            return self._db.run(self._append_op(batches, now_ms, self._expected_epoch(), sent))
        except DatabaseError as e:
            self._failed_at = time.monotonic()
            raise _unknown(self, e) if sent[0] else e from None

    def append_fenced(self, batches: bytearray, *, now_ms: int, fence: Callable[[], Op[None]]) -> AppendInfo:
        """``append`` in one database transaction after ``fence`` (which raises to refuse the write)."""
        self._check_open()

        def op() -> Op[AppendInfo]:
            yield from fence()
            # A coordinator's write: whoever leads the partition, at its current epoch.
            info: AppendInfo = yield from self._append_op(batches, now_ms, None)
            return info

        try:
            return self._db.run(op(), transaction=True)
        except LogError:
            # The transaction may have been rolled back after this broker counted the append: start over
            # from what the database holds.
            self._resync()
            raise

    def _resync(self) -> None:
        """Follow the database's bounds (a failed transaction may have left the cached ones ahead)."""
        try:
            self._db.run(self._bounds_op(authoritative=True))
        except LogError:
            pass

    # queued appends ----------------------------------------------------------------------------------------

    def append(self, batches: bytearray | memoryview, *, now_ms: int) -> Pending[AppendInfo]:
        """Queue an append behind the appends queued before it on this partition (call order is append
        order) and return its result to await. Appends queued while one is being written are written
        together: one statement and one commit for all of them (see ``_write_group``)."""
        self._check_open()
        return self._enqueue(_Queued(batches, now_ms, self._expected_epoch(), None))

    def append_fenced_async(
        self, batches: bytearray, *, now_ms: int, fence: Callable[[], Op[None]]
    ) -> Pending[AppendInfo]:
        """``append_fenced`` without blocking the event loop, queued behind this partition's appends."""
        self._check_open()
        return self._enqueue(_Queued(batches, now_ms, None, fence))

    def _enqueue(self, item: _Queued) -> asyncio.Future[AppendInfo]:
        self._queue.append(item)
        if self._drainer is None:
            self._drainer = asyncio.ensure_future(self._drain())
        return item.future

    async def _drain(self) -> None:
        """Write the queued appends in order: a fenced one alone, the others in groups of the same expected
        leader epoch (at most GROUP_BYTES, GROUP_APPENDS)."""
        queue = self._queue
        try:
            while queue:
                head = queue.popleft()
                group = [head]
                if head.fence is None:
                    size = len(head.batches)
                    while (
                        queue
                        and queue[0].fence is None
                        and queue[0].expect == head.expect
                        and len(group) < GROUP_APPENDS
                        and size + len(queue[0].batches) <= GROUP_BYTES
                    ):
                        item = queue.popleft()
                        group.append(item)
                        size += len(item.batches)
                live = [item for item in group if not item.future.done()]  # a cancelled caller: skip
                if not live:
                    continue
                try:
                    if live[0].fence is not None:
                        _settle(live[0], await self._write_fenced(live[0]))
                    elif len(live) > 1:
                        await self._write_group(live)
                    else:
                        _settle(live[0], await self._write_one(live[0]))
                except Exception as e:
                    for item in live:
                        _settle(item, e)
        finally:
            self._drainer = None
            if queue:  # queued by a caller while this task was ending
                self._drainer = asyncio.ensure_future(self._drain())

    async def _write_one(self, item: _Queued) -> AppendInfo:
        sent = [False]
        try:
            return await self._db.run_async(self._append_op(item.batches, item.now_ms, item.expect, sent))
        except DatabaseError as e:
            self._failed_at = time.monotonic()
            raise _unknown(self, e) if sent[0] else e from None

    async def _write_fenced(self, item: _Queued) -> AppendInfo:
        fence = item.fence
        assert fence is not None

        def op() -> Op[AppendInfo]:
            yield from fence()
            info: AppendInfo = yield from self._append_op(item.batches, item.now_ms, None)
            return info

        try:
            return await self._db.run_async(op(), transaction=True)
        except LogError:
            try:
                await self._db.run_async(self._bounds_op(authoritative=True))
            except LogError:
                pass
            raise

    async def _write_group(self, group: list[_Queued]) -> None:
        """Write several queued appends in one statement (one round trip, one commit); when any of them is
        refused or the partition moved on meanwhile, write them one by one instead (each then gets its own
        answer, as if it had been queued alone)."""
        sent = [False]
        try:
            infos = await self._db.run_async(self._group_op(group, sent))
        except DatabaseError as e:
            self._failed_at = time.monotonic()
            self._forget_speculation()
            err = _unknown(self, e) if sent[0] else e
            for item in group:
                _settle(item, err)
            return
        except BaseException:
            self._forget_speculation()
            raise
        if infos is None:
            for item in group:
                if not item.future.done():
                    try:
                        _settle(item, await self._write_one(item))
                    except Exception as e:
                        _settle(item, e)
            return
        for item, info in zip(group, infos, strict=True):
            _settle(item, info)

    def _forget_speculation(self) -> None:
        """Drop a producer state that took in appends their statement did not store (rebuilt on next use)."""
        if self._speculating:
            with self._lock:
                self._speculating = False
                self._state_end = None
                self._producers = ProducerStateManager()

    def _group_op(self, group: list[_Queued], sent: list[bool]) -> Op[list[AppendInfo] | None]:
        """One statement for every append of ``group``; None when they must be written one by one."""
        self._check_open()
        yield from self._current_state_op()
        expect = group[0].expect
        epoch = self._epoch if expect is None else expect
        start = offset = self._next
        size = 0
        rows: list[tuple[Any, ...]] = []
        answers: list[AppendInfo | _Prepared] = []
        for item in group:
            try:
                prep = self._prepare(item.batches, item.now_ms, epoch, offset)
            except Exception:
                self._forget_speculation()
                return None
            answers.append(prep)
            if isinstance(prep, AppendInfo):
                continue  # a retry of a batch already stored (or earlier in this group)
            if prep.idempotent:
                # The next append of this group is checked against this one's sequences.
                self._speculating = True
                replay(
                    self._producers,
                    (
                        (h, bytes(item.batches[pos : pos + h.size]) if h.is_control else None)
                        for pos, h in prep.headers
                    ),
                    item.now_ms,
                )
            rows.extend(prep.rows)
            size += prep.size
            offset = prep.end
        if not rows:
            return [a for a in answers if isinstance(a, AppendInfo)]
        sent[0] = True
        found = yield self._statement(start, offset, epoch, size, rows)
        sent[0] = False
        if not found:
            # Another broker appended first, or claimed the leadership: start again one by one.
            self._forget_speculation()
            yield from self._bounds_op(authoritative=True)
            return None
        lso = int(found[0][0])
        with self._lock:
            self._speculating = False
            if self._state_end == start:
                self._state_end = offset
            if offset > self._next:
                self._next = offset
                self._size += size
            if lso > self._lso:
                self._lso = lso
                self._producers.on_log_start_offset(lso)
        lso = max(lso, self._lso)
        return [
            a if isinstance(a, AppendInfo) else AppendInfo(a.start, a.end - 1, a.append_time, lso, a.size)
            for a in answers
        ]

    # read --------------------------------------------------------------------------------------------------

    def _read_op(self, offset: int, max_bytes: int, max_offset: int | None, min_one: bool) -> Op[ReadResult]:
        self._check_open()
        if offset > self._next or offset < self._lso:
            yield from self._bounds_op()
            if offset > self._next or offset < self._lso:
                raise OffsetOutOfRange(offset, self._lso, self._next)
        hw = self._next
        limit = hw if max_offset is None else min(max_offset, hw)
        chunks: list[FileRange | bytes] = []
        if offset >= limit:
            return ReadResult(chunks, 0, hw, self._lso)
        rows = yield (
            schema.READ,
            (self.topic_id, self.index, offset, limit, READ_ROW_LIMIT, max(0, max_bytes), min_one),
        )
        total = 0
        for (data,) in rows:
            chunks.append(data)
            total += len(data)
        return ReadResult(chunks, total, hw, self._lso)

    def read_sync(
        self, offset: int, max_bytes: int, *, max_offset: int | None = None, min_one: bool = True
    ) -> ReadResult:
        """Whole batches from the one holding ``offset``: at most ``max_bytes`` (but a whole first batch when
        ``min_one``), none holding an offset >= ``max_offset``."""
        return self._db.run(self._read_op(offset, max_bytes, max_offset, min_one))

    async def read(
        self, offset: int, max_bytes: int, *, max_offset: int | None = None, min_one: bool = True
    ) -> ReadResult:
        return await self._db.run_async(self._read_op(offset, max_bytes, max_offset, min_one))

    # leader epochs -----------------------------------------------------------------------------------------

    def _epoch_end_op(self, epoch: int) -> Op[tuple[int, int]]:
        rows = yield (
            "SELECT epoch, start_offset FROM kafkite_leader_epochs WHERE topic_id = %s AND idx = %s"
            " ORDER BY epoch",
            (self.topic_id, self.index),
        )
        yield from self._bounds_op()
        entries = [(int(e), int(o)) for e, o in rows]
        return end_offset_for_epoch(entries, self._epoch, self._next, epoch)

    def epoch_end_offset(self, epoch: int) -> tuple[int, int]:
        self._check_open()
        return self._db.run(self._epoch_end_op(epoch))

    async def epoch_end_offset_async(self, epoch: int) -> tuple[int, int]:
        self._check_open()
        return await self._db.run_async(self._epoch_end_op(epoch))

    # timestamps --------------------------------------------------------------------------------------------

    def _one_batch(self, where: str, params: tuple[Any, ...], order: str = "last_offset") -> bytes | None:
        rows = self._db.execute(
            f"SELECT data FROM kafkite_batches WHERE topic_id = %s AND idx = %s AND last_offset >= %s {where}"
            f" ORDER BY {order} LIMIT 1",
            (self.topic_id, self.index, self._lso, *params),
        )
        return bytes(rows[0][0]) if rows else None

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record at or after the log start offset whose timestamp is
        >= ``timestamp``; None when there is none."""
        self._check_open()
        lso = self._lso
        data = self._one_batch("AND max_timestamp >= %s", (timestamp,))
        if data is None:
            return None
        h = read_header(data)
        for off, ts in _record_timestamps(data, h):
            if off >= lso and ts >= timestamp:
                return off, ts
        return max(lso, h.base_offset), h.max_timestamp

    def max_timestamp(self) -> tuple[int, int]:
        """(timestamp, offset) of the record with the largest timestamp (the first such); (-1, -1) if none."""
        self._check_open()
        data = self._one_batch("AND max_timestamp >= 0", (), "max_timestamp DESC, last_offset")
        if data is None:
            return -1, -1
        h = read_header(data)
        for off, ts in _record_timestamps(data, h):
            if ts == h.max_timestamp:
                return ts, off
        return h.max_timestamp, h.base_offset

    def first_timestamp(self) -> int:
        """Timestamp of the first record at or after the log start offset; -1 when the log is empty."""
        self._check_open()
        lso = self._lso
        data = self._one_batch("", ())
        if data is None:
            return -1
        h = read_header(data)
        for off, ts in _record_timestamps(data, h):
            if off >= lso:
                return ts
        return h.max_timestamp if h.log_append_time else h.base_timestamp

    # deletion ----------------------------------------------------------------------------------------------

    def _move_start_op(self, offset: int) -> Op[int]:
        """Within a transaction: raise the log start offset to ``offset`` (-1: the end), deleting the batches
        wholly below it; returns the new log start offset."""
        rows = yield (
            "SELECT next_offset, log_start_offset FROM kafkite_partitions WHERE topic_id = %s AND idx = %s"
            " FOR UPDATE",
            (self.topic_id, self.index),
        )
        if not rows:
            self._closed = True
            raise LogClosed(f"partition {self.topic}-{self.index} no longer exists")
        nxt, lso = int(rows[0][0]), int(rows[0][1])
        if offset == -1:
            offset = nxt
        if offset < 0 or offset > nxt:
            raise OffsetOutOfRange(offset, lso, nxt)
        if offset > lso:
            deleted = yield (
                "DELETE FROM kafkite_batches WHERE topic_id = %s AND idx = %s AND last_offset < %s"
                " RETURNING size",
                (self.topic_id, self.index, offset),
            )
            freed = sum(int(r[0]) for r in deleted)
            rows = yield (
                "UPDATE kafkite_partitions SET log_start_offset = %s, size_bytes = size_bytes - %s"
                " WHERE topic_id = %s AND idx = %s RETURNING size_bytes",
                (offset, freed, self.topic_id, self.index),
            )
            self.set_bounds(nxt, offset, int(rows[0][0]))
            lso = offset
            yield (
                "SELECT pg_notify(%s, %s)",
                (schema.APPEND_CHANNEL, f"{self._storage.instance}|{self.topic}|{self.index}|{nxt}|{lso}"),
            )
        else:
            self.set_bounds(nxt, lso)
        return lso

    def delete_records_before(self, offset: int) -> int:
        """DeleteRecords: move the log start offset up to ``offset`` (-1: the high watermark), deleting the
        batches wholly below it. Returns the new log start offset (the low watermark)."""
        self._check_open()
        return self._db.run(self._move_start_op(offset), transaction=True)

    def _retention_op(self, now_ms: int) -> Op[int]:
        c = self.config
        target = -1
        if c.retention_ms >= 0:
            rows = yield (
                "SELECT base_offset FROM kafkite_batches"
                " WHERE topic_id = %s AND idx = %s AND last_offset >= %s"
                " AND max_timestamp >= %s ORDER BY last_offset LIMIT 1",
                (self.topic_id, self.index, self._lso, now_ms - c.retention_ms),
            )
            target = max(self._lso, int(rows[0][0])) if rows else self._next
        if c.retention_bytes >= 0 and self._size > c.retention_bytes:
            rows = yield (
                # the newest batch whose deletion (with everything older) still leaves retention.bytes
                "SELECT last_offset FROM (SELECT last_offset, size,"
                " sum(size) OVER (ORDER BY last_offset DESC) AS s"
                " FROM kafkite_batches WHERE topic_id = %s AND idx = %s) t WHERE s - size >= %s"
                " ORDER BY last_offset DESC LIMIT 1",
                (self.topic_id, self.index, c.retention_bytes),
            )
            if rows:
                target = max(target, int(rows[0][0]) + 1)
        if target <= self._lso:
            return 0
        before = self._lso
        after = yield from self._move_start_op(target)
        return 1 if after > before else 0

    def apply_retention(self, now_ms: int) -> int:
        """Delete the batches past retention.ms (by their largest timestamp) or beyond retention.bytes, oldest
        first, by moving the log start offset; stores the producer state when it changed. Returns 1 when the
        log start offset moved."""
        if self._closed:
            return 0
        moved = 0
        if self.config.delete_enabled and (self.config.retention_ms >= 0 or self.config.retention_bytes >= 0):
            moved = self._db.run(self._retention_op(now_ms), transaction=True)
        self.snapshot_producers()
        return moved

    def truncate_to(self, offset: int) -> None:
        """Remove every batch holding an offset >= ``offset`` (whole batches). Below the log start offset,
        empties the log and restarts it at ``offset``."""
        self._check_open()

        def op() -> Op[None]:
            rows = yield (
                "SELECT next_offset, log_start_offset FROM kafkite_partitions"
                " WHERE topic_id = %s AND idx = %s FOR UPDATE",
                (self.topic_id, self.index),
            )
            nxt, lso = int(rows[0][0]), int(rows[0][1])
            if offset >= nxt:
                return
            if offset < lso:
                yield (
                    "DELETE FROM kafkite_batches WHERE topic_id = %s AND idx = %s",
                    (self.topic_id, self.index),
                )
                new_end, new_start = offset, offset
            else:
                found = yield (
                    "SELECT base_offset FROM kafkite_batches WHERE topic_id = %s AND idx = %s"
                    " AND last_offset >= %s ORDER BY last_offset LIMIT 1",
                    (self.topic_id, self.index, offset),
                )
                new_end = int(found[0][0]) if found else offset
                new_start = lso
                yield (
                    "DELETE FROM kafkite_batches WHERE topic_id = %s AND idx = %s AND last_offset >= %s",
                    (self.topic_id, self.index, new_end),
                )
            yield (
                "UPDATE kafkite_partitions SET next_offset = %s, log_start_offset = %s, size_bytes ="
                " (SELECT coalesce(sum(size), 0) FROM kafkite_batches WHERE topic_id = %s AND idx = %s)"
                " WHERE topic_id = %s AND idx = %s",
                (new_end, new_start, self.topic_id, self.index, self.topic_id, self.index),
            )
            with self._lock:
                self._next, self._lso = new_end, new_start
                self._state_end = None
                self._producers = ProducerStateManager()
            yield from self._bounds_op()

        self._db.run(op(), transaction=True)

    # lifecycle ---------------------------------------------------------------------------------------------

    def flush_due(self, now_ms: int) -> bool:
        return False  # appends are durable once their transaction commits

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.snapshot_producers()
        except LogError:
            pass
        self._closed = True

    def delete(self) -> None:
        """The rows are deleted with the topic (``PgStorage.delete_topic``); this only closes."""
        self._closed = True

    def sweep(self, now_ms: int) -> int:
        return 0


def _unknown(part: PgPartition, e: Exception) -> AppendOutcomeUnknown:
    return AppendOutcomeUnknown(f"append to {part.topic}-{part.index} may or may not be stored: {e}")


def end_offset_for_epoch(
    entries: list[tuple[int, int]], current: int, log_end_offset: int, requested: int
) -> tuple[int, int]:
    """OffsetForLeaderEpoch over a partition's epoch history (``entries``: (epoch, start offset) in epoch
    order) as Kafka's leader epoch cache answers it: (the largest known epoch <= ``requested``, the start
    offset of the epoch after it), the log end offset for the current epoch, (-1, -1) when unknown.

    Every partition starts at epoch 0, offset 0. As in Kafka's cache, an epoch whose successor starts at the
    same offset (a leader that appended nothing) is dropped: its range is empty."""
    cache: list[tuple[int, int]] = []
    for epoch, start in sorted({0: 0, **dict(entries)}.items()):
        while cache and cache[-1][1] >= start:
            cache.pop()
        cache.append((epoch, start))
    if requested < 0 or requested > current:
        return -1, -1
    if requested == current or cache[-1][0] == requested:
        return requested, log_end_offset
    higher = next(((e, o) for e, o in cache if e > requested), None)
    if higher is None:
        return -1, -1
    floor = [(e, o) for e, o in cache if e <= requested]
    return (floor[-1][0] if floor else requested), higher[1]


def _producer_batches(
    rows: list[tuple[Any, ...]], start: int, end: int
) -> list[tuple[BatchHeader, bytes | None]]:
    out: list[tuple[BatchHeader, bytes | None]] = []
    for head, control in rows:
        h = read_header(bytes(head))
        if h.last_offset < start or h.base_offset >= end:
            continue
        out.append((h, bytes(control) if control is not None else None))
    return out
