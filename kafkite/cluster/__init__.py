"""Several stateless brokers on one PostgreSQL database (``storage.engine=postgresql://...``).

``attach(broker)`` gives a broker whose storage is a ``PgStorage`` its ``Cluster`` (``broker.cluster``): the
broker registers and heartbeats in the database, lists every live broker in Metadata, leads the partitions and
coordinates the groups that placement gives it, answers NOT_LEADER_OR_FOLLOWER / NOT_COORDINATOR for the
others, and takes over the partitions and groups of a broker whose heartbeat lapses. Producer ids come from
a database sequence, so idempotent producers stay distinct whichever broker they ask.

Not shared between brokers yet: transaction coordination (each broker coordinates the transactional ids that
ask it, from state it loads when it starts: use transactions with one broker per database), and what the file
engine keeps in ``log.dirs`` besides logs (broker configs altered at run time, SCRAM credentials, ACLs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kafkite.cluster.groups import OwnedGroupLog, find_coordinator, group_request, rebuild_coordinator
from kafkite.cluster.membership import Cluster, ClusterError, Member

if TYPE_CHECKING:
    from kafkite.broker.core import Broker

__all__ = [
    "Cluster",
    "ClusterError",
    "Member",
    "OwnedGroupLog",
    "attach",
    "find_coordinator",
    "group_request",
    "rebuild_coordinator",
]


def attach(broker: Broker) -> Cluster | None:
    """Give ``broker`` a cluster view when its storage is the PostgreSQL engine (None otherwise)."""
    from kafkite.log.pg import PgStorage

    if not isinstance(broker.storage, PgStorage):
        return None
    cluster = Cluster(broker, broker.storage)
    broker.cluster = cluster

    async def regroup() -> None:
        if broker.groups is not None:
            await rebuild_coordinator(broker)

    cluster.on_change.append(regroup)
    return cluster
