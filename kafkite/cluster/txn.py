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

When the live broker list changes, every broker replaces its transaction coordinator by one rebuilt from the
log (``rebuild_txn_coordinator``, after the group coordinator is rebuilt). Transactions gained in
PrepareCommit/PrepareAbort are completed at once (their markers written); Ongoing ones are aborted, with a
bumped epoch, when their transaction timeout expires; producer ids and epochs carry over, so a producer of the
previous coordinator's era is fenced. When an id moves between two live brokers (one joined or left), each
acts on the move when it reads the new live list (one notification, normally milliseconds apart); the broker
losing the id stops writing its entries then. Kafka closes that window with coordinator epochs; here it is as
wide as the brokers' disagreement about the live list.

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

from kafkite.broker.groups import logformat
from kafkite.broker.groups.log import Entry, StorageGroupLog
from kafkite.broker.txn.coordinator import TransactionCoordinator
from kafkite.broker.txn.state import TXN_KEY_PREFIX
from kafkite.protocol.errors import ErrorCode

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

    def append(self, entries: list[Entry]) -> None:
        mine = []
        for key, value in entries:
            tid = _txn_of(key)
            if tid is None:
                continue
            if not self._cluster.coordinates(tid):
                log.info("not writing an entry of transactional id %s: it is coordinated elsewhere", tid)
                continue
            mine.append((key, value))
        if mine:
            self._log.append(mine)

    def replay(self) -> Iterator[Entry]:
        refresh = getattr(self._opener(), "refresh", None)
        if refresh is not None:
            refresh()  # the cached end may lag appends made by other brokers
        for key, value in self._log.replay():
            tid = _txn_of(key)
            if tid is not None and self._cluster.coordinates(tid):
                yield key, value


class ClusterTransactionCoordinator(TransactionCoordinator):
    """A transaction coordinator of one broker of a cluster (see the module doc)."""

    def check_produce(
        self, producer_id: int, producer_epoch: int, topic: str, partition: int
    ) -> tuple[ErrorCode, str] | None:
        self.load()
        if producer_id not in self._by_pid:
            return None  # coordinated elsewhere: the partition's producer state fences old epochs
        return super().check_produce(producer_id, producer_epoch, topic, partition)


class TxnOffsets:
    """What the transaction coordinator asks of "the group coordinator" when brokers share the database: the
    local group coordinator for the groups this broker coordinates, the database (and an announcement to the
    group's coordinator) for the others."""

    def __init__(self, broker: Broker, cluster: Cluster) -> None:
        self._broker = broker
        self._cluster = cluster

    def complete_txn_offsets(self, group_id: str, producer_id: int, commit: bool) -> None:
        groups = self._broker.groups
        if self._cluster.coordinates(group_id):
            if groups is not None:
                groups.complete_txn_offsets(group_id, producer_id, commit)
            return

        def op() -> Op[None]:
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

        self._cluster.storage.db.run(op(), transaction=True)


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
        import psycopg

        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._cluster.storage.dsn, autocommit=True
                ) as conn:
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
    from kafkite.broker.txn.handlers import coordinator_for

    old = broker.txn
    if old is None:
        return
    new = coordinator_for(broker)
    if broker.cluster is not None:
        new.new_producer_id = broker.cluster.new_producer_id
    broker.txn = new
    await old.stop()
    await new.start()
