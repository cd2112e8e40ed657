"""What every kind of group offers the coordinator and the offsets store, whatever its rebalance protocol.

A group id names one group of one type at a time (Kafka's ``Group`` interface): a classic group (JoinGroup /
SyncGroup), a consumer group (ConsumerGroupHeartbeat) or a share group (ShareGroupHeartbeat), each living
beside the others in the coordinator's registry. The coordinator and the offsets store only go through this
interface: they validate offset commits and fetches, deletions and offset expiry with it, list and count
groups with it, and write its live entries back when the group log is compacted.

Each kind of group plugs in the same way: a ``GroupType`` member, a ``Group`` subclass for its state, its
records as key versions of ``logformat``, and a protocol module implementing ``context.GroupProtocol``
(loading from the log, timers) over the ``GroupContext`` the coordinator offers, added to
``GroupCoordinator.protocols`` with its APIs routed by the coordinator (share groups, ``share/``, are the
third). The offsets store, the group log, ListGroups, DeleteGroups and offset expiry then serve it
unchanged.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum
from typing import Any

from kafkite.protocol.errors import ErrorCode

from .log import Entry


class GroupType(Enum):
    """The group types of ListGroups v5 (``types_filter``, ``group_type``)."""

    CLASSIC = "classic"
    CONSUMER = "consumer"
    SHARE = "share"

    @classmethod
    def parse(cls, name: str) -> GroupType | None:
        try:
            return cls(name.strip().lower())
        except ValueError:
            return None


@dataclass(frozen=True)
class OffsetExpiration:
    """How a group's committed offsets expire (Kafka's OffsetExpirationCondition).

    ``base_ms``: the time retention counts from for every offset (when the group became empty), or None to
    count from each offset's commit time. Offsets of ``kept_topics`` never expire while the group is so.
    """

    base_ms: int | None = None
    kept_topics: frozenset[str] = frozenset()


class Group(ABC):
    """One group of the coordinator's registry."""

    group_id: str

    @property
    @abstractmethod
    def group_type(self) -> GroupType: ...

    @property
    @abstractmethod
    def state_name(self) -> str:
        """The state as Kafka names it (ListGroups, DescribeGroups, metrics)."""

    @property
    @abstractmethod
    def protocol_type_name(self) -> str:
        """The protocol type ListGroups shows ("" when none)."""

    @property
    @abstractmethod
    def is_empty(self) -> bool:
        """No members: the group may be deleted, change type, or be dropped once it has no offsets."""

    @property
    def is_dead(self) -> bool:
        return False

    @property
    def is_droppable(self) -> bool:
        """Whether the group may go once it has no committed offsets left (offset retention, OffsetDelete)."""
        return self.is_empty

    @property
    @abstractmethod
    def member_count(self) -> int: ...

    @property
    @abstractmethod
    def epoch(self) -> int:
        """The generation (classic) or group epoch."""

    # -- offsets ---------------------------------------------------------------------------------------------

    @abstractmethod
    def validate_offset_commit(
        self, member_id: str, instance_id: str | None, epoch: int, *, transactional: bool, version: int
    ) -> ErrorCode | None:
        """Why an OffsetCommit (or TxnOffsetCommit) of this member may not commit now; None when it may."""

    def validate_offset_fetch(self, member_id: str | None, member_epoch: int) -> ErrorCode | None:
        """Why an OffsetFetch of this member is refused; None when it is answered."""
        return None

    @abstractmethod
    def validate_offset_delete(self) -> ErrorCode | None: ...

    @abstractmethod
    def validate_delete(self) -> ErrorCode | None:
        """Why DeleteGroups refuses to delete the group; None when it may."""

    @abstractmethod
    def is_subscribed_to(self, topic: str) -> bool:
        """Whether members consume ``topic`` now (OffsetDelete answers GROUP_SUBSCRIBED_TO_TOPIC)."""

    @abstractmethod
    def offset_expiration(self) -> OffsetExpiration | None:
        """How committed offsets expire now; None: none expires."""

    # -- the group log ---------------------------------------------------------------------------------------

    @abstractmethod
    def live_entries(self) -> list[Entry]:
        """The group's own entries of the group log as they stand (its offsets are the offsets store's)."""

    @abstractmethod
    def tombstones(self) -> list[Entry]:
        """Entries that remove the group from the group log."""

    @abstractmethod
    def mark_dead(self, now_ms: int) -> None:
        """The group was deleted or dropped: it takes no more requests."""

    # -- introspection ---------------------------------------------------------------------------------------

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """State, protocol and members with their assignments, for the CLI, console and metrics."""
