"""Several stateless brokers on one PostgreSQL database (``storage.engine=postgresql://...``).

``attach(broker)`` gives a broker whose storage is a ``PgStorage`` its ``Cluster`` (``broker.cluster``): the
broker registers and heartbeats in the database, lists every live broker in Metadata, leads the partitions and
coordinates the groups and transactional ids that placement gives it, answers NOT_LEADER_OR_FOLLOWER /
NOT_COORDINATOR for the others, and takes over the partitions, groups and transactions of a broker whose
heartbeat lapses. Producer ids come from a database sequence, so idempotent producers stay distinct whichever
broker they ask.

Transactions (``kafkite.cluster.txn``): FindCoordinator with key type 1 names the coordinator of a
transactional id; that broker alone writes the id's entries to the shared ``__transaction_state`` log and
writes its markers (to any partition, through the database). When the live list changes, each broker rebuilds
its transaction coordinator from the log: prepared transactions it gains are completed, ongoing ones are
aborted when their timeout expires, and producer epochs carry over, so producers of the old era are fenced. A
transaction's offsets, held by the group's coordinator, are ended in the database by the transaction's
coordinator and announced to the group's (``kafkite_txn_offsets``).

Not shared between brokers yet: what the file engine keeps in ``log.dirs`` besides logs (broker configs
altered at run time, SCRAM credentials, ACLs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kafkite.cluster.groups import OwnedGroupLog, find_coordinator, group_request, rebuild_coordinator
from kafkite.cluster.membership import Cluster, ClusterError, Member
from kafkite.cluster.txn import OwnedTxnLog, rebuild_txn_coordinator
from kafkite.log.pg import PgStorage

if TYPE_CHECKING:
    from kafkite.broker.core import Broker

__all__ = [
    "Cluster",
    "ClusterError",
    "Member",
    "OwnedGroupLog",
    "OwnedTxnLog",
    "attach",
    "find_coordinator",
    "group_request",
    "rebuild_coordinator",
    "rebuild_txn_coordinator",
]


def attach(broker: Broker) -> Cluster | None:
    """Give ``broker`` a cluster view when its storage is the PostgreSQL engine (None otherwise)."""
    if not isinstance(broker.storage, PgStorage):
        return None
    cluster = Cluster(broker, broker.storage)
    broker.cluster = cluster

    async def regroup() -> None:
        # Groups first: the new transaction coordinator ends transactions' offsets in the new group one.
        if broker.groups is not None:
            await rebuild_coordinator(broker)
        if broker.txn is not None:
            await rebuild_txn_coordinator(broker)

    cluster.on_change.append(regroup)
    return cluster
