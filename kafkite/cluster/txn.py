"""Transactions when several brokers share the database.

Each transactional id has one coordinator, the broker ``Cluster.coordinator(transactional_id)`` names (the
same placement as groups). FindCoordinator with key type 1 answers it; the transaction APIs answer
NOT_COORDINATOR for the ids coordinated elsewhere, so clients look the coordinator up again.

The transaction log (partition 0 of ``__transaction_state``) is shared by every broker. Through
``OwnedTxnLog`` a broker writes only entries of the ids it coordinates and replays only those. Producer ids
come from the database sequence (``Cluster.new_producer_id``), so the log's producer id block entries are
neither written nor read. The coordinator's self-compaction (rewriting the log down to its live state and
moving the log start offset past everything older) would drop the entries of ids coordinated by the other
brokers, so ``OwnedTxnLog`` offers no ``compact`` and the coordinator never compacts in cluster mode: the log
grows by one small entry per transaction state change and is read from its start when coordination moves.

When the membership changes, every broker replaces its transaction coordinator by one rebuilt from the log
(``rebuild_txn_coordinator``, after the group coordinator is rebuilt). Transactions gained in
PrepareCommit/PrepareAbort are completed at once (their markers written); Ongoing ones are aborted, with a
bumped epoch, when their transaction timeout expires; producer ids and epochs carry over, so a producer of the
previous coordinator's era is fenced.

Coordinator epochs: a coordinator is built for one membership epoch, which is written into its markers as
their coordinator epoch, and every write it makes (log entries, markers, a transaction's offsets) is fenced by
it in the database (``Cluster.fence_op``). When an id moves between brokers, the one losing it can no longer
write for it from the moment the membership changed, even if it has not heard of the change yet (a paused
broker, a slow notification): its write fails and its client is told NOT_COORDINATOR. So no two brokers ever
act on one transactional id, and a transaction the new coordinator completed or aborted is never touched by
the old one (no marker of the old era lands in a transaction of the new).

Markers are appended through this broker's storage: every broker can append to every partition through the
database. The partition's leader keeps its producer state (and so the last stable offset) in memory, but it
catches that state up from the database whenever the log moved past what it has seen: the append notifies
every broker of the partition's new end (``kafkite_append``), and the leader's ``last_stable_offset`` and
``aborted_transactions`` replay the batch headers and markers it missed before answering. A marker written by
the coordinator on another broker therefore ends the transaction at the leader as one written locally would.

A transaction's offsets go to the group's coordinator (TxnOffsetCommit), which may be another broker than the
transactional id's: it accepts them without asking the transaction coordinator, as Kafka's group coordinator
does, and holds them pending (in ``kafkite_group_entries``). When the transaction ends, its coordinator ends
the offsets of a group coordinated elsewhere in the database itself (``TxnOffsets``: the pending rows of the
producer are deleted and, on commit, become the group's committed offsets, in one database transaction) and
announces it on the ``kafkite_txn_offsets`` channel; the group's coordinator (``TxnOffsetsRelay``) then ends
them in its memory too. A lost announcement leaves the database right: the group's next coordinator loads it.

A partition leader cannot check a transactional produce against a coordinator on another broker: for producer
ids this broker does not coordinate, ``ClusterTransactionCoordinator.check_produce`` leaves the check to the
partition's producer state, which refuses batches of a fenced (older) epoch, as Kafka's leaders do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import psycopg

from kafkite.broker.groups import logformat
from kafkite.broker.groups.log import Entry, StorageGroupLog
from kafkite.broker.txn.coordinator import TransactionCoordinator, TxnError
from kafkite.broker.txn.handlers import coordinator_for
from kafkite.broker.txn.state import TXN_KEY_PREFIX
from kafkite.clock import now_ms
from kafkite.log.base import AppendInfo, Fenced, LogError
from kafkite.log.pg.db import tcp_params
from kafkite.log.writer import Pending
from kafkite.protocol.errors import ErrorCode
from kafkite.protocol.records import build_batch

if TYPE_CHECKING:
    from kafkite.broker.core import Broker
    from kafkite.cluster.membership import Cluster
    from kafkite.log.base import Partition
    from kafkite.log.pg.db import Op

log = logging.getLogger("kafkite.cluster")

TXN_OFFSETS_CHANNEL = "kafkite_txn_offsets"
LISTEN_RETRY_S = 1.0


def _txn_of(key: bytes) -> str | None:
    if not key.startswith(TXN_KEY_PREFIX):
        return None
    try:
        return key[len(TXN_KEY_PREFIX) :].decode()
    except UnicodeDecodeError:
        return None


class OwnedTxnLog:
    """The shared transaction log as this broker sees it: only the transactional ids it coordinates.

    Writes for an id coordinated elsewhere (a timer of a coordinator being replaced) and producer id block
    entries (ids come from the database sequence) are dropped. There is no ``compact``: see the module doc.
    """

    def __init__(self, opener: Callable[[], Partition], cluster: Cluster) -> None:
        self._opener = opener
        self._log = StorageGroupLog(opener)
        self._cluster = cluster
        self.epoch = cluster.epoch
        self._preloaded: list[Entry] | None = None

    def append(self, entries: list[Entry]) -> None:
        mine = self._mine(entries)
        if mine:
            now = now_ms()
            batch = bytearray(build_batch([(key, value, [], now) for key, value in mine]))
            part: Any = self._opener()  # a PgPartition
            part.append_fenced(batch, now_ms=now, fence=self._cluster.fence(self.epoch))

    async def append_async(self, entries: list[Entry]) -> None:
        """``append`` over a pooled connection: a database that stops answering holds only this write."""
        mine = self._mine(entries)
        if mine:
            now = now_ms()
            batch = bytearray(build_batch([(key, value, [], now) for key, value in mine]))
            part: Any = self._opener()  # a PgPartition
            await part.append_fenced_async(batch, now_ms=now, fence=self._cluster.fence(self.epoch))

    def _mine(self, entries: list[Entry]) -> list[Entry]:
        mine = []
        for key, value in entries:
            tid = _txn_of(key)
            if tid is None:
                continue
            if not self._cluster.coordinates(tid):
                raise Fenced(f"transactional id {tid} is coordinated by another broker")
            mine.append((key, value))
        return mine

    async def preload(self) -> None:
        """Read the entries ``replay`` gives with awaitable reads, ahead of the coordinator's load (which then
        does not hold the event loop on the database)."""
        part: Any = self._opener()  # a PgPartition
        await part.refresh_async()  # the cached end may lag appends made by other brokers
        self._preloaded = await self._log.entries_async()

    def replay(self) -> Iterator[Entry]:
        entries, self._preloaded = self._preloaded, None
        if entries is None:
            self._opener().refresh()  # the cached end may lag appends made by other brokers
        for key, value in entries if entries is not None else self._log.replay():
            tid = _txn_of(key)
            if tid is not None and self._cluster.coordinates(tid):
                yield key, value


class ClusterTransactionCoordinator(TransactionCoordinator):
    """A transaction coordinator of one broker of a cluster (see the module doc): its writes are fenced by
    the membership epoch it was built for; a write refused by the fence answers NOT_COORDINATOR."""

    def __init__(self, *, cluster: Cluster, epoch: int, **kw: Any) -> None:
        partition_of = kw.pop("partition_of")
        super().__init__(
            partition_of=lambda t, p: _FencedMarkers.wrap(partition_of(t, p), cluster, epoch), **kw
        )
        self.coordinator_epoch = epoch
        self._cluster = cluster

    async def _reserve_producer_ids(self) -> None:
        try:
            await self._cluster.reserve_producer_ids()
        except LogError as e:
            raise TxnError(ErrorCode.COORDINATOR_NOT_AVAILABLE, str(e)) from None

    def load(self) -> None:
        try:
            super().load()
        except (TxnError, LogError) as e:
            log.warning("transaction coordinator of epoch %d did not load: %s", self.coordinator_epoch, e)

    def end_txn(self, tid: str, producer_id: int, producer_epoch: int, commit: bool) -> ErrorCode:
        try:
            return super().end_txn(tid, producer_id, producer_epoch, commit)
        except TxnError as e:
            return e.code
        except Fenced:
            return ErrorCode.NOT_COORDINATOR
        except LogError:
            # Prepared but not completed (a transaction's offsets could not be ended): completed on retry.
            return ErrorCode.COORDINATOR_NOT_AVAILABLE

    def tick(self) -> None:
        try:
            super().tick()
        except (TxnError, LogError) as e:
            log.info("transaction coordinator of epoch %d: %s", self.coordinator_epoch, e)

    async def tick_async(self) -> None:
        try:
            await super().tick_async()
        except (TxnError, LogError) as e:
            log.info("transaction coordinator of epoch %d: %s", self.coordinator_epoch, e)

    def check_produce(
        self, producer_id: int, producer_epoch: int, topic: str, partition: int
    ) -> tuple[ErrorCode, str] | None:
        self.load()
        if producer_id not in self._by_pid:
            return None  # coordinated elsewhere: the partition's producer state fences old epochs
        return super().check_produce(producer_id, producer_epoch, topic, partition)


class _FencedMarkers:
    """A partition whose transaction markers are written under a coordinator's fence."""

    def __init__(self, part: Any, cluster: Cluster, epoch: int) -> None:
        self._part = part
        self._fence = cluster.fence(epoch)

    @classmethod
    def wrap(cls, part: Any, cluster: Cluster, epoch: int) -> Any:
        return None if part is None else cls(part, cluster, epoch)

    def write_txn_marker(
        self, producer_id: int, producer_epoch: int, *, commit: bool, coordinator_epoch: int, now_ms: int
    ) -> Pending[AppendInfo]:
        pending: Pending[AppendInfo] = self._part.write_txn_marker(
            producer_id,
            producer_epoch,
            commit=commit,
            coordinator_epoch=coordinator_epoch,
            now_ms=now_ms,
            fence=self._fence,
        )
        return pending

    def __getattr__(self, name: str) -> Any:
        return getattr(self._part, name)


class TxnOffsets:
    """What the transaction coordinator asks of "the group coordinator" when brokers share the database: the
    local group coordinator for the groups this broker coordinates, the database (and an announcement to the
    group's coordinator) for the others."""

    def __init__(self, broker: Broker, cluster: Cluster) -> None:
        self._broker = broker
        self._cluster = cluster
        self.epoch = cluster.epoch

    def complete_txn_offsets(self, group_id: str, producer_id: int, commit: bool) -> None:
        groups = self._broker.groups
        if self._cluster.coordinates(group_id):
            if groups is not None:
                groups.complete_txn_offsets(group_id, producer_id, commit)
            return
        self._cluster.storage.db.run(
            self._complete_elsewhere(group_id, producer_id, commit), transaction=True
        )

    async def complete_txn_offsets_async(self, group_id: str, producer_id: int, commit: bool) -> None:
        """``complete_txn_offsets`` without holding the event loop on the database."""
        groups = self._broker.groups
        if self._cluster.coordinates(group_id):
            if groups is not None:
                await groups.complete_txn_offsets_async(group_id, producer_id, commit)
            return
        op = self._complete_elsewhere(group_id, producer_id, commit)
        await self._cluster.storage.db.run_async(op, transaction=True)

    def _complete_elsewhere(self, group_id: str, producer_id: int, commit: bool) -> Op[None]:
        """End the transaction's offsets of a group coordinated by another broker, in the database."""

        def op() -> Op[None]:
            yield from self._cluster.fence_op(self.epoch)
            rows = yield (
                "SELECT key, value FROM kafkite_group_entries WHERE group_id = %s FOR UPDATE",
                (group_id,),
            )
            for key, value in rows:
                try:
                    k = logformat.decode_key(bytes(key))
                except logformat.LogFormatError:
                    continue
                if not isinstance(k, logformat.TxnOffsetKey) or k.producer_id != producer_id:
                    continue
                yield ("DELETE FROM kafkite_group_entries WHERE key = %s", (bytes(key),))
                if commit:
                    yield (
                        "INSERT INTO kafkite_group_entries (key, group_id, value) VALUES (%s, %s, %s)"
                        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        (logformat.offset_key(group_id, k.topic, k.partition), group_id, bytes(value)),
                    )
            payload = json.dumps([group_id, producer_id, commit])
            yield ("SELECT pg_notify(%s, %s)", (TXN_OFFSETS_CHANNEL, payload))

        return op()


class TxnOffsetsRelay:
    """Listens for transactions ended by another broker's transaction coordinator and ends their offsets in
    this broker's group coordinator, for the groups it coordinates."""

    def __init__(self, broker: Broker, cluster: Cluster) -> None:
        self._broker = broker
        self._cluster = cluster
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            ready = asyncio.get_running_loop().create_future()
            self._task = asyncio.create_task(self._listen(ready), name="txn-offsets-listen")
            await asyncio.wait([ready, self._task], timeout=10, return_when=asyncio.FIRST_COMPLETED)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _listen(self, ready: asyncio.Future[None]) -> None:

        while True:
            try:
                dsn = self._cluster.storage.dsn
                # Keepalives: a connection that silently died (a network cut) ends instead of waiting forever.
                connect = psycopg.AsyncConnection.connect(dsn, autocommit=True, **tcp_params(dsn))
                async with await connect as conn:
                    await conn.execute(f"LISTEN {TXN_OFFSETS_CHANNEL}")
                    if not ready.done():
                        ready.set_result(None)
                    async for note in conn.notifies():
                        self.ended(note.payload)
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as e:
                log.warning("listening for ended transactions failed (retrying): %s", e)
            if not ready.done():
                ready.set_result(None)
            await asyncio.sleep(LISTEN_RETRY_S)

    def ended(self, payload: str) -> None:
        try:
            group_id, producer_id, commit = json.loads(payload)
        except (ValueError, TypeError):
            return
        groups: Any = self._broker.groups
        if groups is None or not self._cluster.coordinates(group_id):
            return
        try:
            groups.complete_txn_offsets(str(group_id), int(producer_id), bool(commit))
        except Exception as e:
            log.warning("cannot end the transactional offsets of group %s: %s", group_id, e)


async def rebuild_txn_coordinator(broker: Broker) -> None:
    """Replace the broker's transaction coordinator by one loaded from the log (after a membership change)."""
    old = broker.txn
    if old is None:
        return
    new = coordinator_for(broker)
    broker.txn = new
    await old.stop()
    await new.start()
