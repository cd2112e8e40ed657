"""Consumer groups and committed offsets: the group coordinator and its group protocols.

Build one ``GroupCoordinator`` per broker, give it the topic catalogue's ``partitions_of`` and a ``GroupLog``
(``StorageGroupLog`` over partition 0 of ``__consumer_offsets``), ``await start()`` it, route the group APIs
to its async methods, and ``await stop()`` it on shutdown.

Layout: ``group`` (what every kind of group offers), ``offsets`` (committed offsets of every group),
``classic`` (the classic rebalance protocol and its groups), ``coordinator`` (the registry, the group log,
the timers and the routing of each API), ``log``/``logformat`` (the group log and its entries).
"""

from .classic.state import ClassicGroup, GroupState
from .config import GroupConfig
from .coordinator import GroupCoordinator
from .group import Group, GroupType
from .log import GROUP_LOG_TOPIC, GroupLog, MemoryGroupLog, StorageGroupLog
from .offsets import OffsetAndMetadata, OffsetStore

__all__ = [
    "GROUP_LOG_TOPIC",
    "ClassicGroup",
    "Group",
    "GroupConfig",
    "GroupCoordinator",
    "GroupLog",
    "GroupState",
    "GroupType",
    "MemoryGroupLog",
    "OffsetAndMetadata",
    "OffsetStore",
    "StorageGroupLog",
]
