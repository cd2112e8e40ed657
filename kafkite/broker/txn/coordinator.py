"""The transaction coordinator: producer ids, epochs and fencing, transactions and their markers.

It follows Apache Kafka's transaction coordinator for a single broker. State lives in this object, changes
only on the event loop thread, and each change is appended to the transaction log before it is answered.
Because every partition is local, ending a transaction takes no requests to other brokers: PrepareCommit/
PrepareAbort is logged, the COMMIT/ABORT markers are appended to every partition of the transaction (in order
with the appends before them, where their engine does its work: the file engine's writer thread), and once
they are written the group coordinator makes the transaction's offsets visible or drops them and
CompleteCommit/CompleteAbort is logged. EndTxn is answered then (``end_txn_async``); meanwhile the
transaction stays prepared. A transaction left in a Prepare state by a crash is completed when the
coordinator starts; one that outlives its timeout is aborted with a bumped epoch, which fences its producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from kafkite import clock
from kafkite.broker.groups.log import Entry, GroupLog, MemoryGroupLog
from kafkite.config import default_int
from kafkite.log.base import AppendInfo, Fenced, LogError
from kafkite.log.producer_state import ProducerStateError
from kafkite.log.writer import Pending
from kafkite.protocol.errors import ErrorCode

from .state import (
    IDLE_STATES,
    PRODUCER_ID_BLOCK_KEY,
    TXN_KEY_PREFIX,
    TxnMetadata,
    TxnState,
    decode_producer_id_block,
    producer_id_block_value,
)

log = logging.getLogger("kafkite.txn")

PRODUCER_ID_BLOCK_SIZE = 1000
MAX_EPOCH = (1 << 15) - 1
COORDINATOR_EPOCH = 0  # a single broker is the only coordinator there ever is
MAX_TICK_INTERVAL_S = 1.0


class MarkerPartition(Protocol):
    """What the coordinator needs of a partition (every ``kafkite.log.base.Partition`` is one)."""

    def write_txn_marker(
        self, producer_id: int, producer_epoch: int, *, commit: bool, coordinator_epoch: int, now_ms: int
    ) -> Pending[AppendInfo]: ...

    def expire_producers(self, now_ms: int, max_age_ms: int) -> int: ...


class GroupOffsets(Protocol):
    """What the coordinator needs of the group coordinator: ending a transaction's offset commits (it may
    also offer ``complete_txn_offsets_async``, which the coordinator then awaits)."""

    def complete_txn_offsets(self, group_id: str, producer_id: int, commit: bool) -> None: ...


# What an operation of the coordinator asks its driver to do (see ``_run`` and ``_run_async``): append entries
# to the transaction log, or end a transaction's offsets in a group (group id, producer id, commit).
Step = list[Entry] | tuple[str, int, bool]
T = TypeVar("T")
TxnOp = Generator[Step, None, T]


@dataclass(frozen=True)
class TxnConfig:
    # Defaults: the broker keys' (kafkite.config), read once here.
    max_timeout_ms: int = default_int("transaction.max.timeout.ms")
    transactional_id_expiration_ms: int = default_int("transactional.id.expiration.ms")
    producer_id_expiration_ms: int = default_int("producer.id.expiration.ms")
    producer_id_expiration_check_interval_ms: int = default_int("producer.id.expiration.check.interval.ms")
    abort_timed_out_interval_ms: int = default_int(
        "transaction.abort.timed.out.transaction.cleanup.interval.ms"
    )
    remove_expired_interval_ms: int = default_int(
        "transaction.remove.expired.transaction.cleanup.interval.ms"
    )

    KEYS = {
        "transaction.max.timeout.ms": "max_timeout_ms",
        "transactional.id.expiration.ms": "transactional_id_expiration_ms",
        "producer.id.expiration.ms": "producer_id_expiration_ms",
        "producer.id.expiration.check.interval.ms": "producer_id_expiration_check_interval_ms",
        "transaction.abort.timed.out.transaction.cleanup.interval.ms": "abort_timed_out_interval_ms",
        "transaction.remove.expired.transaction.cleanup.interval.ms": "remove_expired_interval_ms",
    }

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> TxnConfig:
        return cls(**{attr: int(settings[key]) for key, attr in cls.KEYS.items() if key in settings})


def _drive(op: TxnOp[T], do: Callable[[Step], None]) -> T:
    """Run an operation, each step done by ``do`` (its error thrown back into the operation)."""
    try:
        step = next(op)
    except StopIteration as stop:
        result: T = stop.value
        return result
    while True:
        try:
            do(step)
        except Exception as exc:
            try:
                step = op.throw(exc)
            except StopIteration as stop:
                result = stop.value
                return result
            continue
        try:
            step = op.send(None)
        except StopIteration as stop:
            result = stop.value
            return result


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class TxnError(Exception):
    def __init__(self, code: ErrorCode, message: str = "") -> None:
        super().__init__(message or code.name)
        self.code = code


Result = tuple[ErrorCode, int, int]  # error, producer id, producer epoch


class TransactionCoordinator:
    """Producer ids and transactions of one broker.

    ``partition_of(topic, index)`` returns a local partition (None: no such partition), ``all_partitions()``
    the partitions whose producer ids expire (the broker passes those loaded: a log not yet loaded since the
    start is left alone, its idle producers expire at the first check after it is), ``notify(topic, index)``
    wakes fetches waiting on a partition.
    ``owns(transactional_id)`` says whether this coordinator still coordinates an id (brokers sharing a
    database move ids between them): its timers leave the others alone. The log is compacted only when it
    offers ``compact`` (a log shared with other coordinators does not: see ``kafkite.cluster.txn``).
    """

    def __init__(
        self,
        *,
        log: GroupLog | None = None,
        config: TxnConfig | None = None,
        partition_of: Callable[[str, int], MarkerPartition | None] = lambda t, p: None,
        all_partitions: Callable[[], Iterable[MarkerPartition]] = list,
        groups: GroupOffsets | None = None,
        notify: Callable[[str, int], None] = lambda t, p: None,
        now_ms: Callable[[], int] | None = None,
        compact_after_entries: int = 10_000,
        owns: Callable[[str], bool] = lambda tid: True,
        flush_markers: bool = False,
    ) -> None:
        self._log: GroupLog = log if log is not None else MemoryGroupLog()
        self.config = config or TxnConfig()
        self._partition_of = partition_of
        self._all_partitions = all_partitions
        self.groups = groups
        self._notify = notify
        self._now_ms = now_ms or clock.now_ms
        self._compact_after = compact_after_entries
        self.owns = owns
        # log.flush.on.ack=true: markers are fsynced before the transaction is logged complete and answered.
        self.flush_markers = flush_markers
        # Written into markers; brokers sharing a database use their membership epoch (kafkite.cluster.txn).
        self.coordinator_epoch = COORDINATOR_EPOCH
        self.txns: dict[str, TxnMetadata] = {}
        self._by_pid: dict[int, TxnMetadata] = {}
        self._next_pid = 0
        self._block_end = 0
        self._loaded = False
        self._appended = 0
        self._task: asyncio.Task[None] | None = None
        self._next_abort_check = 0
        self._next_expiry_check = 0
        self._next_producer_expiry = 0
        self._completing: dict[str, asyncio.Future[None]] = {}  # transactions whose markers are being written
        # The value last written to (or read from) the log for each transactional id: what a transaction
        # goes back to when a write of its next state fails.
        self._durable: dict[str, bytes] = {}
        # Operations awaited by the event loop run one at a time, in the order they came (see ``_run_async``).
        self._lock: asyncio.Lock | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def load(self) -> None:
        """Rebuild state from the log and complete transactions a crash left half ended (once)."""
        if self._loaded:
            return
        self._loaded = True
        entries = 0
        for key, value in self._log.replay():
            entries += 1
            try:
                if key == PRODUCER_ID_BLOCK_KEY and value is not None:
                    self._block_end = self._next_pid = decode_producer_id_block(value)
                elif key.startswith(TXN_KEY_PREFIX):
                    tid = key[len(TXN_KEY_PREFIX) :].decode()
                    if value is None:
                        self.txns.pop(tid, None)
                        self._durable.pop(tid, None)
                    else:
                        self.txns[tid] = TxnMetadata.from_value(tid, value)
                        self._durable[tid] = value
            except ValueError as e:
                log.warning("skipping an undecodable entry of the transaction log: %s", e)
        self._appended = entries
        self._by_pid = {m.producer_id: m for m in self.txns.values()}
        if not _in_event_loop():
            # On an event loop the timers complete them (their first run is at once): no write holds it.
            for meta in list(self.txns.values()):
                if meta.state in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT):
                    self._run(self._complete(meta))
        log.info(
            "loaded %d transactional ids from %d entries of the transaction log", len(self.txns), entries
        )

    async def start(self) -> None:
        preload = getattr(self._log, "preload", None)
        if preload is not None and not self._loaded:
            await preload()  # a log in the database is read without holding the event loop
        self.load()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._timers(), name="txn-coordinator-timers")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _timers(self) -> None:
        while True:
            try:
                await self.tick_async()
            except Exception:
                log.exception("transaction coordinator timers failed")
            c = self.config
            interval = min(c.abort_timed_out_interval_ms, c.producer_id_expiration_check_interval_ms) / 1000
            await asyncio.sleep(min(max(interval, 0.01), MAX_TICK_INTERVAL_S))

    def tick(self) -> None:
        """Abort timed-out transactions, retry unfinished ones, expire idle transactional and producer ids."""
        self.load()
        self._run(self._tick_op())
        self._tick_producers()

    async def tick_async(self) -> None:
        """``tick``, its log writes awaited (in turn with the requests' operations)."""
        self.load()
        await self._run_async(self._tick_op())
        self._tick_producers()

    def _tick_op(self) -> TxnOp[None]:
        now = self._now_ms()
        c = self.config
        if now >= self._next_abort_check:
            self._next_abort_check = now + c.abort_timed_out_interval_ms
            yield from self._abort_timed_out_op(now)
        if now >= self._next_expiry_check:
            self._next_expiry_check = now + c.remove_expired_interval_ms
            yield from self._expire_op(now)

    def _tick_producers(self) -> None:
        now = self._now_ms()
        c = self.config
        if now >= self._next_producer_expiry:
            self._next_producer_expiry = now + c.producer_id_expiration_check_interval_ms
            for p in self._all_partitions():
                p.expire_producers(now, c.producer_id_expiration_ms)
        self._maybe_compact()

    # -- persistence -----------------------------------------------------------------------------------------

    def _run(self, op: TxnOp[T]) -> T:
        """Run an operation, its steps done synchronously (tests, a coordinator off the event loop)."""
        return _drive(op, self._do)

    async def _run_async(self, op: TxnOp[T], *, before: Callable[[], Awaitable[None]] | None = None) -> T:
        """Run an operation, its steps awaited when the log (or the group coordinator) can write without
        holding the event loop. Operations run one at a time, so they are decided, written and applied in
        the order they came, as they are when run synchronously."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if before is not None:
                try:
                    await before()
                except BaseException:
                    op.close()
                    raise
            try:
                step = next(op)
            except StopIteration as stop:
                result: T = stop.value
                return result
            while True:
                try:
                    await self._do_async(step)
                except Exception as exc:
                    try:
                        step = op.throw(exc)
                    except StopIteration as stop:
                        result = stop.value
                        return result
                    continue
                try:
                    step = op.send(None)
                except StopIteration as stop:
                    result = stop.value
                    return result

    async def _reserve_producer_ids(self) -> None:
        """Before InitProducerId is awaited: make sure ``new_producer_id`` has ids at hand without writing
        (a log written asynchronously gets its next block here, awaited; a cluster fetches ids from the
        database); raise if it cannot."""
        write = getattr(self._log, "append_async", None)
        if write is None or self._block_end - self._next_pid >= 2:
            return
        end = max(self._next_pid, self._block_end) + PRODUCER_ID_BLOCK_SIZE
        try:
            await write([(PRODUCER_ID_BLOCK_KEY, producer_id_block_value(end))])
        except Exception as exc:
            raise self._log_error(exc) from None
        self._appended += 1
        self._block_end = end

    def _do(self, step: Step) -> None:
        if isinstance(step, list):
            self._log.append(step)
        elif self.groups is not None:
            self.groups.complete_txn_offsets(*step)

    async def _do_async(self, step: Step) -> None:
        if isinstance(step, list):
            write = getattr(self._log, "append_async", None)
            if write is None:
                self._log.append(step)
            else:
                await write(step)
        elif self.groups is not None:
            complete = getattr(self.groups, "complete_txn_offsets_async", None)
            if complete is None:
                self.groups.complete_txn_offsets(*step)
            else:
                await complete(*step)

    def _persist(self, meta: TxnMetadata) -> TxnOp[None]:
        """Log the transaction's new state. If the log refuses it, the transaction goes back to the state
        last logged (nothing is applied that is not durable) and the error is raised (``_log_error``)."""
        meta.last_update_ms = self._now_ms()
        value = meta.to_value()
        try:
            yield [(meta.key(), value)]
        except Exception as exc:
            self._revert(meta)
            raise self._log_error(exc) from None
        self._durable[meta.transactional_id] = value
        self._appended += 1

    def _log_error(self, exc: Exception) -> Exception:
        """The error a failed log write raises: as Kafka's transaction coordinator answers a failed append to
        its log, NOT_COORDINATOR when this coordinator may no longer write (its lease is over),
        COORDINATOR_NOT_AVAILABLE when the log cannot be reached (the client retries)."""
        if isinstance(exc, Fenced):
            return TxnError(ErrorCode.NOT_COORDINATOR, str(exc))
        if isinstance(exc, LogError):
            return TxnError(ErrorCode.COORDINATOR_NOT_AVAILABLE, str(exc))
        return exc

    def _revert(self, meta: TxnMetadata) -> None:
        """Put the transaction back as it was last logged (forget it if it never was)."""
        tid = meta.transactional_id
        if self._by_pid.get(meta.producer_id) is meta:
            del self._by_pid[meta.producer_id]
        value = self._durable.get(tid)
        if value is None:
            if self.txns.get(tid) is meta:
                del self.txns[tid]
            return
        vars(meta).update(vars(TxnMetadata.from_value(tid, value)))
        if self.txns.get(tid) is meta:
            self._by_pid[meta.producer_id] = meta

    def _maybe_compact(self, force: bool = False) -> None:
        compact = getattr(self._log, "compact", None)
        if compact is None or (not force and self._appended < max(self._compact_after, 2 * len(self.txns))):
            return
        live = [(PRODUCER_ID_BLOCK_KEY, producer_id_block_value(self._block_end))]
        live += [(m.key(), m.to_value()) for m in self.txns.values()]
        try:
            compact(live)
        except Exception as e:
            log.warning("cannot compact the transaction log: %s", e)
            return
        self._appended = len(live)

    # -- producer ids ----------------------------------------------------------------------------------------

    def new_producer_id(self) -> int:
        self.load()
        if self._next_pid >= self._block_end:
            end = self._next_pid + PRODUCER_ID_BLOCK_SIZE
            self._log.append([(PRODUCER_ID_BLOCK_KEY, producer_id_block_value(end))])
            # Durable before any id of the block is handed out, whatever the flush policy: a block lost in a
            # power cut would be handed out again, and a new producer taken for an old one by the partitions
            # (its batches refused as out of order, or dropped as duplicates).
            flush = getattr(self._log, "flush", None)
            if flush is not None:
                flush()
            self._appended += 1
            self._block_end = end
        pid = self._next_pid
        self._next_pid += 1
        return pid

    # -- InitProducerId --------------------------------------------------------------------------------------

    def init_producer_id(
        self,
        transactional_id: str | None,
        timeout_ms: int,
        producer_id: int = -1,
        producer_epoch: int = -1,
    ) -> Result:
        """A producer id and epoch for a producer (a fresh id when it is not transactional)."""
        self.load()
        return self._run(self._init_op(transactional_id, timeout_ms, producer_id, producer_epoch))

    async def init_producer_id_async(
        self,
        transactional_id: str | None,
        timeout_ms: int,
        producer_id: int = -1,
        producer_epoch: int = -1,
    ) -> Result:
        """``init_producer_id``, its log writes awaited."""
        self.load()
        op = self._init_op(transactional_id, timeout_ms, producer_id, producer_epoch)
        try:
            return await self._run_async(op, before=self._reserve_producer_ids)
        except TxnError as e:
            return e.code, -1, -1

    def _init_op(
        self, transactional_id: str | None, timeout_ms: int, producer_id: int, producer_epoch: int
    ) -> TxnOp[Result]:
        try:
            if not transactional_id:
                return ErrorCode.NO_ERROR, self.new_producer_id(), 0
            return (
                yield from self._init_transactional(transactional_id, timeout_ms, producer_id, producer_epoch)
            )
        except TxnError as e:
            return e.code, -1, -1

    def _init_transactional(
        self, tid: str, timeout_ms: int, producer_id: int, producer_epoch: int
    ) -> TxnOp[Result]:
        if timeout_ms <= 0 or timeout_ms > self.config.max_timeout_ms:
            raise TxnError(
                ErrorCode.INVALID_TRANSACTION_TIMEOUT,
                f"transaction.timeout.ms {timeout_ms} is not in (0, {self.config.max_timeout_ms}]",
            )
        meta = self.txns.get(tid)
        if meta is None:
            meta = TxnMetadata(tid, self.new_producer_id(), -1, timeout_ms)
            self.txns[tid] = meta
            self._by_pid[meta.producer_id] = meta
        if producer_id >= 0:
            current = (meta.producer_id, meta.producer_epoch)
            if (producer_id, producer_epoch) == (meta.last_producer_id, meta.last_producer_epoch) and (
                meta.state in IDLE_STATES
            ):
                return ErrorCode.NO_ERROR, current[0], current[1]  # a retry of a bump that was done
            if (producer_id, producer_epoch) != current:
                raise TxnError(
                    ErrorCode.PRODUCER_FENCED, "the producer id and epoch are not the current ones"
                )
        if meta.state in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT):
            yield from self._complete(meta)
            if meta.state not in IDLE_STATES:
                raise TxnError(ErrorCode.CONCURRENT_TRANSACTIONS)
        meta.timeout_ms = timeout_ms
        if meta.state == TxnState.ONGOING:
            # Fence the previous producer: its transaction is aborted under a new epoch.
            self._bump_epoch(meta)
            yield from self._end(meta, commit=False)
            if meta.state not in IDLE_STATES:
                raise TxnError(ErrorCode.CONCURRENT_TRANSACTIONS)
        else:
            self._bump_epoch(meta)
        meta.state = TxnState.EMPTY
        meta.partitions.clear()
        meta.groups.clear()
        meta.start_ms = -1
        yield from self._persist(meta)
        return ErrorCode.NO_ERROR, meta.producer_id, meta.producer_epoch

    def _bump_epoch(self, meta: TxnMetadata) -> None:
        meta.last_producer_id, meta.last_producer_epoch = meta.producer_id, meta.producer_epoch
        if meta.producer_epoch >= MAX_EPOCH - 1:
            self._by_pid.pop(meta.producer_id, None)
            meta.producer_id = self.new_producer_id()
            meta.producer_epoch = 0
            self._by_pid[meta.producer_id] = meta
        else:
            meta.producer_epoch += 1

    # -- transactions ----------------------------------------------------------------------------------------

    def _current(self, tid: str | None, producer_id: int, producer_epoch: int) -> TxnMetadata:
        """The transaction of ``tid`` if the producer id and epoch are its current ones (raises otherwise)."""
        meta = self.txns.get(tid or "")
        if meta is None or meta.producer_id != producer_id:
            raise TxnError(
                ErrorCode.INVALID_PRODUCER_ID_MAPPING,
                f"producer id {producer_id} is not the one of transactional id {tid!r}",
            )
        if producer_epoch != meta.producer_epoch:
            raise TxnError(
                ErrorCode.PRODUCER_FENCED,
                f"epoch {producer_epoch} is not the current epoch {meta.producer_epoch} of {tid!r}",
            )
        return meta

    def _begin_or_continue(self, meta: TxnMetadata) -> None:
        if meta.state in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT):
            raise TxnError(ErrorCode.CONCURRENT_TRANSACTIONS)
        if meta.state in IDLE_STATES:
            meta.state = TxnState.ONGOING
            meta.partitions.clear()
            meta.groups.clear()
            meta.start_ms = self._now_ms()
        elif meta.state != TxnState.ONGOING:
            raise TxnError(ErrorCode.INVALID_TXN_STATE, f"transaction is {meta.state.value}")

    def add_partitions(
        self, tid: str, producer_id: int, producer_epoch: int, partitions: list[tuple[str, int]]
    ) -> dict[tuple[str, int], ErrorCode]:
        """AddPartitionsToTxn: the error of each partition."""
        self.load()
        return self._run(self._add_partitions_op(tid, producer_id, producer_epoch, partitions))

    async def add_partitions_async(
        self, tid: str, producer_id: int, producer_epoch: int, partitions: list[tuple[str, int]]
    ) -> dict[tuple[str, int], ErrorCode]:
        """``add_partitions``, its log write awaited."""
        self.load()
        return await self._run_async(self._add_partitions_op(tid, producer_id, producer_epoch, partitions))

    def _add_partitions_op(
        self, tid: str, producer_id: int, producer_epoch: int, partitions: list[tuple[str, int]]
    ) -> TxnOp[dict[tuple[str, int], ErrorCode]]:
        try:
            meta = self._current(tid, producer_id, producer_epoch)
            missing = [tp for tp in partitions if self._partition_of(*tp) is None]
            if missing:
                return {
                    tp: ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                    if tp in missing
                    else ErrorCode.OPERATION_NOT_ATTEMPTED
                    for tp in partitions
                }
            if meta.state == TxnState.ONGOING and all(tp in meta.partitions for tp in partitions):
                return {tp: ErrorCode.NO_ERROR for tp in partitions}
            self._begin_or_continue(meta)
            meta.partitions.update(partitions)
            yield from self._persist(meta)
            return {tp: ErrorCode.NO_ERROR for tp in partitions}
        except TxnError as e:
            return {tp: e.code for tp in partitions}

    def verify_partitions(
        self, tid: str, producer_id: int, producer_epoch: int, partitions: list[tuple[str, int]]
    ) -> dict[tuple[str, int], ErrorCode]:
        """AddPartitionsToTxn with verify_only: whether each partition is in the ongoing transaction."""
        self.load()
        try:
            meta = self._current(tid, producer_id, producer_epoch)
        except TxnError as e:
            return {tp: e.code for tp in partitions}
        ongoing = meta.state == TxnState.ONGOING
        return {
            tp: ErrorCode.NO_ERROR if ongoing and tp in meta.partitions else ErrorCode.INVALID_TXN_STATE
            for tp in partitions
        }

    def add_offsets(self, tid: str, producer_id: int, producer_epoch: int, group_id: str) -> ErrorCode:
        """AddOffsetsToTxn: the group's offset commits join the transaction."""
        self.load()
        return self._run(self._add_offsets_op(tid, producer_id, producer_epoch, group_id))

    async def add_offsets_async(
        self, tid: str, producer_id: int, producer_epoch: int, group_id: str
    ) -> ErrorCode:
        """``add_offsets``, its log write awaited."""
        self.load()
        return await self._run_async(self._add_offsets_op(tid, producer_id, producer_epoch, group_id))

    def _add_offsets_op(
        self, tid: str, producer_id: int, producer_epoch: int, group_id: str
    ) -> TxnOp[ErrorCode]:
        try:
            meta = self._current(tid, producer_id, producer_epoch)
            if meta.state == TxnState.ONGOING and group_id in meta.groups:
                return ErrorCode.NO_ERROR
            self._begin_or_continue(meta)
            meta.groups.add(group_id)
            yield from self._persist(meta)
            return ErrorCode.NO_ERROR
        except TxnError as e:
            return e.code

    def check_offset_commit(
        self, tid: str, producer_id: int, producer_epoch: int, group_id: str
    ) -> ErrorCode:
        """TxnOffsetCommit: may this producer commit offsets of ``group_id`` in its transaction now?"""
        self.load()
        try:
            meta = self._current(tid, producer_id, producer_epoch)
        except TxnError as e:
            return e.code
        if meta.state != TxnState.ONGOING or group_id not in meta.groups:
            return ErrorCode.INVALID_TXN_STATE
        return ErrorCode.NO_ERROR

    def check_produce(
        self, producer_id: int, producer_epoch: int, topic: str, partition: int
    ) -> tuple[ErrorCode, str] | None:
        """Whether a transactional batch may be appended to the partition (None: it may)."""
        self.load()
        meta = self._by_pid.get(producer_id)
        if meta is None:
            return ErrorCode.INVALID_PRODUCER_ID_MAPPING, f"producer id {producer_id} has no transaction"
        if producer_epoch < meta.producer_epoch:
            return ErrorCode.INVALID_PRODUCER_EPOCH, f"producer epoch {producer_epoch} is fenced"
        if meta.state != TxnState.ONGOING or (topic, partition) not in meta.partitions:
            return ErrorCode.INVALID_TXN_STATE, f"{topic}-{partition} is not part of an ongoing transaction"
        return None

    def end_txn(self, tid: str, producer_id: int, producer_epoch: int, commit: bool) -> ErrorCode:
        """EndTxn: commit or abort the ongoing transaction."""
        self.load()
        return self._run(self._end_txn_op(tid, producer_id, producer_epoch, commit))

    def _end_txn_op(self, tid: str, producer_id: int, producer_epoch: int, commit: bool) -> TxnOp[ErrorCode]:
        try:
            return (yield from self._end_txn_checked(tid, producer_id, producer_epoch, commit))
        except TxnError as e:
            return e.code

    def _end_txn_checked(
        self, tid: str, producer_id: int, producer_epoch: int, commit: bool
    ) -> TxnOp[ErrorCode]:
        meta = self._current(tid, producer_id, producer_epoch)
        state = meta.state
        if state == TxnState.ONGOING:
            yield from self._end(meta, commit=commit)
            return ErrorCode.NO_ERROR if meta.state in IDLE_STATES else ErrorCode.CONCURRENT_TRANSACTIONS
        done = TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT
        preparing = TxnState.PREPARE_COMMIT if commit else TxnState.PREPARE_ABORT
        if state == done:
            return ErrorCode.NO_ERROR  # a retry
        if state == preparing:
            yield from self._complete(meta)
            return ErrorCode.NO_ERROR if meta.state in IDLE_STATES else ErrorCode.CONCURRENT_TRANSACTIONS
        return ErrorCode.INVALID_TXN_STATE

    def _end(self, meta: TxnMetadata, *, commit: bool) -> TxnOp[None]:
        meta.state = TxnState.PREPARE_COMMIT if commit else TxnState.PREPARE_ABORT
        yield from self._persist(meta)
        yield from self._complete(meta)

    def _complete(self, meta: TxnMetadata) -> TxnOp[None]:
        """Write the markers of a prepared transaction, then log it complete (left prepared on failure).

        Markers a partition writes at once (the memory engine) complete the transaction within this
        operation; otherwise it completes when they are written (``end_txn_async`` waits for that)."""
        tid = meta.transactional_id
        if tid in self._completing:
            return  # its markers are being written
        commit = meta.state == TxnState.PREPARE_COMMIT
        now = self._now_ms()
        failed = False
        writes: list[tuple[str, int, Pending[AppendInfo]]] = []
        for topic, index in sorted(meta.partitions):
            part = self._partition_of(topic, index)
            if part is None:
                continue  # deleted meanwhile
            try:
                pending = part.write_txn_marker(
                    meta.producer_id,
                    meta.producer_epoch,
                    commit=commit,
                    coordinator_epoch=self.coordinator_epoch,
                    now_ms=now,
                )
            except Exception as e:
                log.error("cannot write a transaction marker to %s-%d: %s", topic, index, e)
                failed = True
                continue
            writes.append((topic, index, pending))
        if all(w.done() for _, _, w in writes):
            yield from self._completed(meta, commit, writes, failed)
            return

        async def finish() -> None:
            try:
                await asyncio.wait([asyncio.ensure_future(w) for _, _, w in writes])
                if self.txns.get(tid) is meta:
                    await self._run_async(self._completed(meta, commit, writes, failed))
            except TxnError as e:  # the log could not be written (a database out of reach): retried by tick()
                log.warning("completing transaction %s failed: %s", tid, e)
            except Exception:
                log.exception("completing transaction %s failed", tid)
            finally:
                del self._completing[tid]

        self._completing[tid] = asyncio.ensure_future(finish())

    def _completed(
        self,
        meta: TxnMetadata,
        commit: bool,
        writes: list[tuple[str, int, Pending[AppendInfo]]],
        failed: bool,
    ) -> TxnOp[None]:
        """The markers are written (or failed): end the transaction's offsets, log it complete."""
        for topic, index, pending in writes:
            try:
                pending.result()
            except ProducerStateError as e:
                # The partition saw a newer epoch of this producer id: none of its transactions is open there.
                log.warning("no transaction marker for %s-%d: %s", topic, index, e)
                continue
            except Exception as e:
                log.error("cannot write a transaction marker to %s-%d: %s", topic, index, e)
                failed = True
                continue
            self._notify(topic, index)
            if self.flush_markers:
                flush = getattr(self._partition_of(topic, index), "flush", None)
                if flush is not None:
                    try:
                        flush()
                    except OSError as e:
                        log.error("cannot fsync the transaction marker of %s-%d: %s", topic, index, e)
                        failed = True
        if self.groups is not None:
            for group_id in sorted(meta.groups):
                try:
                    yield (group_id, meta.producer_id, commit)
                except Exception as e:
                    # Left prepared: the next try (tick, a retried EndTxn) ends the offsets again.
                    log.warning(
                        "cannot end the offsets of group %s of transaction %s: %s",
                        group_id,
                        meta.transactional_id,
                        e,
                    )
                    failed = True
        if failed:
            return  # retried by tick()
        meta.state = TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT
        meta.partitions.clear()
        meta.groups.clear()
        meta.start_ms = -1
        yield from self._persist(meta)

    async def end_txn_async(self, tid: str, producer_id: int, producer_epoch: int, commit: bool) -> ErrorCode:
        """``end_txn``, answered once the transaction's markers are written and its end is logged."""
        self.load()
        code = await self._run_async(self._end_txn_op(tid, producer_id, producer_epoch, commit))
        completing = self._completing.get(tid)
        if code != ErrorCode.CONCURRENT_TRANSACTIONS or completing is None:
            return code
        await asyncio.shield(completing)
        meta = self.txns.get(tid)
        wanted = TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT
        if meta is not None and meta.state == wanted and meta.producer_id == producer_id:
            return ErrorCode.NO_ERROR
        return code

    # -- timers ----------------------------------------------------------------------------------------------

    def abort_timed_out(self, now: int | None = None) -> list[str]:
        """Abort transactions older than their timeout, fencing their producers; retry unfinished ones."""
        self.load()
        return self._run(self._abort_timed_out_op(self._now_ms() if now is None else now))

    def _abort_timed_out_op(self, now: int) -> TxnOp[list[str]]:
        aborted = []
        for meta in list(self.txns.values()):
            if not self.owns(meta.transactional_id) or self.txns.get(meta.transactional_id) is not meta:
                continue
            try:
                if meta.state in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT):
                    yield from self._complete(meta)
                elif meta.state == TxnState.ONGOING and now - meta.start_ms > meta.timeout_ms:
                    log.info(
                        "aborting transaction %s: older than %d ms", meta.transactional_id, meta.timeout_ms
                    )
                    self._bump_epoch(meta)
                    yield from self._end(meta, commit=False)
                    aborted.append(meta.transactional_id)
            except TxnError as e:
                log.info("transaction %s not ended now: %s", meta.transactional_id, e)
        return aborted

    def expire_transactional_ids(self, now: int | None = None) -> list[str]:
        """Forget transactional ids idle for transactional.id.expiration.ms."""
        self.load()
        return self._run(self._expire_op(self._now_ms() if now is None else now))

    def _expire_op(self, now: int) -> TxnOp[list[str]]:
        gone = [
            m.transactional_id
            for m in self.txns.values()
            if m.state in IDLE_STATES
            and now - m.last_update_ms >= self.config.transactional_id_expiration_ms
            and self.owns(m.transactional_id)
        ]
        expired = []
        for tid in gone:
            meta = self.txns[tid]
            try:
                yield [(meta.key(), None)]
            except Exception as e:
                log.info("transactional id %s not expired now: %s", tid, e)
                continue
            if self.txns.get(tid) is meta:
                del self.txns[tid]
            if self._by_pid.get(meta.producer_id) is meta:
                del self._by_pid[meta.producer_id]
            self._durable.pop(tid, None)
            self._appended += 1
            expired.append(tid)
        return expired

    # -- introspection ---------------------------------------------------------------------------------------

    def list_transactions(
        self, states: Iterable[str] = (), producer_ids: Iterable[int] = (), min_duration_ms: int = -1
    ) -> list[TxnMetadata]:
        self.load()
        want_states = set(states)
        want_pids = set(producer_ids)
        now = self._now_ms()
        out = []
        for meta in self.txns.values():
            if want_states and meta.state.value not in want_states:
                continue
            if want_pids and meta.producer_id not in want_pids:
                continue
            if min_duration_ms >= 0 and (meta.start_ms < 0 or now - meta.start_ms < min_duration_ms):
                continue
            out.append(meta)
        return out

    def describe(self, tid: str) -> TxnMetadata | None:
        self.load()
        return self.txns.get(tid)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._maybe_compact(force=True)
