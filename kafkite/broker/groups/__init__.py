"""Classic consumer groups (JoinGroup/SyncGroup/Heartbeat/LeaveGroup) and committed offsets.

Build one ``GroupCoordinator`` per broker, give it the topic catalogue's ``partitions_of`` and a
``GroupLog`` (``StorageGroupLog`` over partition 0 of ``__consumer_offsets``), ``await start()`` it, route the
group APIs to its async methods, and ``await stop()`` it on shutdown.
"""

from .config import GroupConfig
from .coordinator import GroupCoordinator
from .log import GROUP_LOG_TOPIC, GroupLog, MemoryGroupLog, StorageGroupLog
from .state import GroupState, OffsetAndMetadata

__all__ = [
    "GROUP_LOG_TOPIC",
    "GroupConfig",
    "GroupCoordinator",
    "GroupLog",
    "GroupState",
    "MemoryGroupLog",
    "OffsetAndMetadata",
    "StorageGroupLog",
]
