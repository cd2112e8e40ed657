"""State of share groups (KIP-932): members, their subscriptions and assignments, the group's epochs.

A share group's hard state is what its records in the group log hold: the group epoch (bumped when a
subscription or the subscribed topics change) with the epoch of the assignment computed for it, each member's
metadata (client, rack, subscribed topic names) and each member's epoch and assigned partitions. Members of a
share group may share partitions, so nothing is revoked before it is given: a member gets its part of the
target assignment at its next heartbeat. The state is Empty without members, Stable with some (Kafka's).

What members consume, in-flight records and their delivery counts, is share-partition state
(``partition``), kept by the delivery engine, not here.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kafkite.protocol.errors import ErrorCode

from .. import logformat
from ..group import Group, GroupType, OffsetExpiration
from ..log import Entry

TopicId = uuid.UUID
Partitions = Mapping[TopicId, frozenset[int]]

PROTOCOL_TYPE = "share"
ASSIGNOR = "simple"
LEAVE_GROUP_MEMBER_EPOCH = -1


@dataclass(frozen=True)
class ShareMember:
    member_id: str
    rack_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    subscribed_topic_names: tuple[str, ...] = ()
    member_epoch: int = 0
    previous_member_epoch: int = 0
    assigned: Partitions = field(default_factory=dict)

    def metadata_fields(self) -> tuple[Any, ...]:
        return (self.rack_id, self.client_id, self.client_host, self.subscribed_topic_names)

    def assignment_fields(self) -> tuple[Any, ...]:
        return (self.member_epoch, self.previous_member_epoch, _freeze(self.assigned))


def _freeze(p: Partitions) -> frozenset[tuple[TopicId, frozenset[int]]]:
    return frozenset((t, ps) for t, ps in p.items() if ps)


def partitions_of(p: Mapping[TopicId, Iterable[int]]) -> dict[TopicId, frozenset[int]]:
    return {t: frozenset(ps) for t, ps in p.items() if ps}


class ShareGroup(Group):
    """A group of the share protocol."""

    def __init__(self, group_id: str, now_ms: int | None = None) -> None:
        self.group_id = group_id
        self.group_epoch = 0
        self.assignment_epoch = 0
        self.metadata_hash = 0
        self.members: dict[str, ShareMember] = {}
        # The target assignment of the assignment epoch, by member (not persisted: computed again on load).
        self.target: dict[str, Partitions] = {}
        self.state_timestamp_ms = now_ms
        self.dead = False
        self._dirty: dict[tuple[str, str], None] = {}
        self.session_deadline: dict[str, int] = {}

    # -- the Group interface ---------------------------------------------------------------------------------

    @property
    def group_type(self) -> GroupType:
        return GroupType.SHARE

    @property
    def state_name(self) -> str:
        if self.dead:
            return "Dead"
        return "Stable" if self.members else "Empty"

    @property
    def protocol_type_name(self) -> str:
        return PROTOCOL_TYPE

    @property
    def is_empty(self) -> bool:
        return not self.members

    @property
    def is_dead(self) -> bool:
        return self.dead

    @property
    def is_droppable(self) -> bool:
        # A share group has no committed offsets: it stays, empty, until it is deleted (as in Kafka).
        return False

    @property
    def member_count(self) -> int:
        return len(self.members)

    @property
    def epoch(self) -> int:
        return self.group_epoch

    def validate_offset_commit(
        self, member_id: str, instance_id: str | None, epoch: int, *, transactional: bool, version: int
    ) -> ErrorCode | None:
        # Kafka: "Group <id> is not a consumer group."
        return ErrorCode.GROUP_ID_NOT_FOUND

    def validate_offset_fetch(self, member_id: str | None, member_epoch: int) -> ErrorCode | None:
        return ErrorCode.GROUP_ID_NOT_FOUND

    def validate_offset_delete(self) -> ErrorCode | None:
        return ErrorCode.GROUP_ID_NOT_FOUND

    def validate_delete(self) -> ErrorCode | None:
        if self.dead:
            return ErrorCode.GROUP_ID_NOT_FOUND
        return None if not self.members else ErrorCode.NON_EMPTY_GROUP

    def subscribed_topic_names(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for m in self.members.values():
            for t in m.subscribed_topic_names:
                counts[t] = counts.get(t, 0) + 1
        return counts

    def is_subscribed_to(self, topic: str) -> bool:
        return any(topic in m.subscribed_topic_names for m in self.members.values())

    def offset_expiration(self) -> OffsetExpiration | None:
        return None

    def mark_dead(self, now_ms: int) -> None:
        self.dead = True
        self.state_timestamp_ms = now_ms

    # -- members ---------------------------------------------------------------------------------------------

    def update_member(self, member: ShareMember) -> None:
        old = self.members.get(member.member_id)
        if old is None or old.metadata_fields() != member.metadata_fields():
            self._dirty[("member", member.member_id)] = None
        if old is None or old.assignment_fields() != member.assignment_fields():
            self._dirty[("assignment", member.member_id)] = None
        self.members[member.member_id] = member

    def remove_member(self, member_id: str) -> ShareMember | None:
        old = self.members.pop(member_id, None)
        if old is None:
            return None
        self.target.pop(member_id, None)
        self.session_deadline.pop(member_id, None)
        self._dirty[("assignment", member_id)] = None
        self._dirty[("member", member_id)] = None
        return old

    def set_epochs(self, group_epoch: int, metadata_hash: int, assignment_epoch: int) -> None:
        self.group_epoch, self.metadata_hash, self.assignment_epoch = (
            group_epoch,
            metadata_hash,
            assignment_epoch,
        )
        self._dirty[("meta", "")] = None

    def assigned_partitions(self) -> dict[TopicId, set[int]]:
        """Every partition some member is assigned."""
        out: dict[TopicId, set[int]] = {}
        for m in self.members.values():
            for t, ps in m.assigned.items():
                out.setdefault(t, set()).update(ps)
        return out

    # -- the group log ---------------------------------------------------------------------------------------

    def dirty_entries(self) -> list[Entry]:
        order = {"member": 0, "meta": 1, "assignment": 2}
        entries = [self._entry(kind, mid) for kind, mid in sorted(self._dirty, key=lambda k: order[k[0]])]
        self._dirty.clear()
        return entries

    def discard_dirty(self) -> None:
        self._dirty.clear()

    def _entry(self, kind: str, member_id: str) -> Entry:
        gid = self.group_id
        if kind == "meta":
            return logformat.share_group_key(gid), logformat.share_group_value(
                self.group_epoch, self.metadata_hash, self.assignment_epoch
            )
        member = self.members.get(member_id)
        if kind == "member":
            key = logformat.share_member_key(gid, member_id)
            if member is None:
                return key, None
            return key, logformat.share_member_value(
                logformat.ShareMemberRecord(
                    member.rack_id, member.client_id, member.client_host, member.subscribed_topic_names
                )
            )
        key = logformat.share_assignment_key(gid, member_id)
        if member is None:
            return key, None
        return key, logformat.share_assignment_value(
            logformat.ShareAssignmentRecord(
                member.member_epoch, member.previous_member_epoch, dict(member.assigned)
            )
        )

    def live_entries(self) -> list[Entry]:
        self._dirty = {("meta", ""): None}
        for mid in self.members:
            self._dirty[("member", mid)] = None
            self._dirty[("assignment", mid)] = None
        return self.dirty_entries()

    def tombstones(self) -> list[Entry]:
        gid = self.group_id
        entries: list[Entry] = []
        for mid in self.members:
            entries.append((logformat.share_assignment_key(gid, mid), None))
            entries.append((logformat.share_member_key(gid, mid), None))
        entries.append((logformat.share_group_key(gid), None))
        return entries

    def snapshot(self) -> tuple[Any, ...]:
        return (
            self.group_epoch,
            self.assignment_epoch,
            self.metadata_hash,
            dict(self.members),
            dict(self.target),
            self.state_timestamp_ms,
        )

    def restore(self, snap: tuple[Any, ...]) -> None:
        (
            self.group_epoch,
            self.assignment_epoch,
            self.metadata_hash,
            self.members,
            self.target,
            self.state_timestamp_ms,
        ) = snap
        self._dirty.clear()

    # -- introspection ---------------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            "group_id": self.group_id,
            "group_type": GroupType.SHARE.value,
            "state": self.state_name,
            "protocol_type": PROTOCOL_TYPE,
            "protocol": ASSIGNOR,
            "generation_id": self.group_epoch,
            "group_epoch": self.group_epoch,
            "assignment_epoch": self.assignment_epoch,
            "leader": "",
            "members": [
                {
                    "member_id": m.member_id,
                    "group_instance_id": None,
                    "client_id": m.client_id,
                    "client_host": m.client_host,
                    "rack_id": m.rack_id,
                    "member_epoch": m.member_epoch,
                    "subscribed_topic_names": list(m.subscribed_topic_names),
                    "assigned": {t: sorted(ps) for t, ps in m.assigned.items()},
                }
                for m in self.members.values()
            ],
        }


class ShareRecords:
    """The records of one share group met while replaying the group log."""

    def __init__(self) -> None:
        self.meta: tuple[int, int, int] | None = None
        self.members: dict[str, logformat.ShareMemberRecord] = {}
        self.assignments: dict[str, logformat.ShareAssignmentRecord] = {}

    @property
    def exists(self) -> bool:
        return self.meta is not None or bool(self.members)

    def replay(self, key: logformat.Key, value: bytes | None) -> None:
        if isinstance(key, logformat.ShareGroupKey):
            self.meta = None if value is None else logformat.decode_share_group_value(value)
        elif isinstance(key, logformat.ShareMemberKey):
            if value is None:
                self.members.pop(key.member_id, None)
            else:
                self.members[key.member_id] = logformat.decode_share_member_value(value)
        elif isinstance(key, logformat.ShareAssignmentKey):
            if value is None:
                self.assignments.pop(key.member_id, None)
            else:
                self.assignments[key.member_id] = logformat.decode_share_assignment_value(value)

    def build(self, group_id: str, now_ms: int) -> ShareGroup:
        group = ShareGroup(group_id, now_ms)
        if self.meta is not None:
            group.group_epoch, group.metadata_hash, group.assignment_epoch = self.meta
        for member_id, meta in self.members.items():
            member = ShareMember(
                member_id,
                rack_id=meta.rack_id,
                client_id=meta.client_id,
                client_host=meta.client_host,
                subscribed_topic_names=meta.subscribed_topic_names,
            )
            a = self.assignments.get(member_id)
            if a is not None:
                member = dataclasses.replace(
                    member,
                    member_epoch=a.member_epoch,
                    previous_member_epoch=a.previous_member_epoch,
                    assigned=partitions_of(a.assigned),
                )
            group.members[member_id] = member
            group.target[member_id] = member.assigned
        group.discard_dirty()
        return group
