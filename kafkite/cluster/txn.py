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
previous coordinator's era is fenced.

Markers are appended through this broker's storage: every broker can append to every partition through the
database. The partition's leader keeps its producer state (and so the last stable offset) in memory, but it
catches that state up from the database whenever the log moved past what it has seen: the append notifies
every broker of the partition's new end (``kafkite_append``), and the leader's ``last_stable_offset`` and
``aborted_transactions`` replay the batch headers and markers it missed before answering. A marker written by
the coordinator on another broker therefore ends the transaction at the leader as one written locally would.

A partition leader cannot check a transactional produce against a coordinator on another broker: for producer
ids this broker does not coordinate, ``ClusterTransactionCoordinator.check_produce`` leaves the check to the
partition's producer state, which refuses batches of a fenced (older) epoch, as Kafka's leaders do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from kafkite.broker.groups.log import Entry, StorageGroupLog
from kafkite.broker.txn.coordinator import TransactionCoordinator
from kafkite.broker.txn.state import TXN_KEY_PREFIX
from kafkite.protocol.errors import ErrorCode

if TYPE_CHECKING:
    from kafkite.broker.core import Broker
    from kafkite.cluster.membership import Cluster
    from kafkite.log.base import Partition

log = logging.getLogger("kafkite.cluster")


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
