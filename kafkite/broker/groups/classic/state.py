"""State of a classic group (JoinGroup / SyncGroup): members, generations, the chosen protocol."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import uuid
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from kafkite.protocol.errors import ErrorCode

from .. import logformat
from ..group import Group, GroupType, OffsetExpiration
from ..log import Entry

log = logging.getLogger("kafkite.groups")

CONSUMER_PROTOCOL_TYPE = "consumer"


class GroupState(Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


_VALID_PREVIOUS: dict[GroupState, frozenset[GroupState]] = {
    GroupState.EMPTY: frozenset({GroupState.PREPARING_REBALANCE}),
    GroupState.PREPARING_REBALANCE: frozenset(
        {GroupState.STABLE, GroupState.COMPLETING_REBALANCE, GroupState.EMPTY}
    ),
    GroupState.COMPLETING_REBALANCE: frozenset({GroupState.PREPARING_REBALANCE}),
    GroupState.STABLE: frozenset({GroupState.COMPLETING_REBALANCE}),
    GroupState.DEAD: frozenset(
        {
            GroupState.STABLE,
            GroupState.PREPARING_REBALANCE,
            GroupState.COMPLETING_REBALANCE,
            GroupState.EMPTY,
            GroupState.DEAD,
        }
    ),
}


Protocols = list[tuple[str, bytes]]


@dataclass(eq=False)
class ClassicMember:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    protocol_type: str
    protocols: Protocols
    assignment: bytes = b""
    # A pending JoinGroup / SyncGroup of this member waits on these futures (Kafka's delayed callbacks).
    join_future: asyncio.Future[dict[str, Any]] | None = None
    sync_future: asyncio.Future[dict[str, Any]] | None = None
    is_new: bool = False
    # When the member is expired unless it shows signs of life (heartbeat, join, sync, commit); None: never.
    heartbeat_deadline_ms: int | None = None

    @property
    def is_static(self) -> bool:
        return self.group_instance_id is not None

    @property
    def awaiting_join(self) -> bool:
        return self.join_future is not None

    @property
    def awaiting_sync(self) -> bool:
        return self.sync_future is not None

    def metadata_for(self, protocol: str) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol:
                return metadata
        raise KeyError(protocol)

    def matches(self, protocols: Protocols) -> bool:
        return self.protocols == protocols

    def vote(self, candidates: set[str]) -> str:
        for name, _ in self.protocols:
            if name in candidates:
                return name
        raise ValueError(f"member {self.member_id} supports none of {sorted(candidates)}")


@dataclass(eq=False)
class ClassicGroup(Group):
    group_id: str
    state: GroupState = GroupState.EMPTY
    state_timestamp_ms: int | None = None
    generation_id: int = 0
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str | None = None
    members: dict[str, ClassicMember] = field(default_factory=dict)
    static_members: dict[str, str] = field(default_factory=dict)
    # Members that got MEMBER_ID_REQUIRED and are expected to rejoin with their id: member id -> deadline.
    pending_members: dict[str, int] = field(default_factory=dict)
    # Members expected to send SyncGroup for the current generation.
    pending_sync: set[str] = field(default_factory=set)
    subscribed_topics: frozenset[str] | None = None
    # Rebalance timers: the delayed join (initial or regular) and the delayed sync.
    join_deadline_ms: int | None = None
    initial_join: bool = False
    initial_remaining_ms: int = 0
    new_member_added: bool = False
    sync_deadline_ms: int | None = None
    # The group metadata value last written to the group log (None: none, or a tombstone).
    persisted: bytes | None = None

    # -- the Group interface ---------------------------------------------------------------------------------

    @property
    def group_type(self) -> GroupType:
        return GroupType.CLASSIC

    @property
    def state_name(self) -> str:
        return self.state.value

    @property
    def protocol_type_name(self) -> str:
        return self.protocol_type or ""

    @property
    def is_empty(self) -> bool:
        return self.state is GroupState.EMPTY

    @property
    def is_dead(self) -> bool:
        return self.state is GroupState.DEAD

    @property
    def is_droppable(self) -> bool:
        return self.state is GroupState.EMPTY and not self.pending_members

    @property
    def member_count(self) -> int:
        return len(self.members)

    @property
    def epoch(self) -> int:
        return self.generation_id

    def validate_member(self, member_id: str, group_instance_id: str | None) -> ErrorCode | None:
        """Whether ``member_id`` (with its instance id, if static) is a current member of the group."""
        if group_instance_id is not None:
            current = self.current_static_member_id(group_instance_id)
            if current is None:
                return ErrorCode.UNKNOWN_MEMBER_ID
            if current != member_id:
                log.info(
                    "member %s with instance id %s of group %s is fenced by %s",
                    member_id,
                    group_instance_id,
                    self.group_id,
                    current,
                )
                return ErrorCode.FENCED_INSTANCE_ID
            return None
        if not self.has(member_id):
            return ErrorCode.UNKNOWN_MEMBER_ID
        return None

    def validate_offset_commit(
        self, member_id: str, instance_id: str | None, epoch: int, *, transactional: bool, version: int
    ) -> ErrorCode | None:
        if self.is_(GroupState.DEAD):
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        if epoch < 0 and self.is_(GroupState.EMPTY):
            # Admin clients and consumers that assign partitions themselves commit with generation -1.
            return None
        if epoch >= 0 or member_id or instance_id is not None:
            error = self.validate_member(member_id, instance_id)
            if error is not None:
                return error
            if epoch != self.generation_id:
                return ErrorCode.ILLEGAL_GENERATION
        elif not self.is_(GroupState.EMPTY):
            return ErrorCode.UNKNOWN_MEMBER_ID
        if not transactional and self.is_(GroupState.COMPLETING_REBALANCE):
            # The member knows the new generation but has not synced yet.
            return ErrorCode.REBALANCE_IN_PROGRESS
        return None

    def validate_offset_delete(self) -> ErrorCode | None:
        if self.is_(GroupState.DEAD):
            return ErrorCode.GROUP_ID_NOT_FOUND
        if not self.is_(GroupState.EMPTY) and not self.is_consumer_group:
            return ErrorCode.NON_EMPTY_GROUP
        return None

    def validate_delete(self) -> ErrorCode | None:
        if self.is_(GroupState.DEAD):
            return ErrorCode.GROUP_ID_NOT_FOUND
        if not self.is_(GroupState.EMPTY):
            return ErrorCode.NON_EMPTY_GROUP
        return None

    def offset_expiration(self) -> OffsetExpiration | None:
        if self.protocol_type is not None and self.is_(GroupState.EMPTY):
            # Retention counts from the moment the group became empty (Kafka 2.1+).
            return OffsetExpiration(base_ms=self.state_timestamp_ms)
        if self.is_consumer_group and self.subscribed_topics is not None and self.is_(GroupState.STABLE):
            # A stable consumer group keeps the offsets of the topics it subscribes to.
            return OffsetExpiration(kept_topics=self.subscribed_topics)
        if self.protocol_type is not None:
            return None
        return OffsetExpiration()

    def live_entries(self) -> list[Entry]:
        if self.persisted is None:
            return []
        return [(logformat.group_key(self.group_id), self.persisted)]

    def tombstones(self) -> list[Entry]:
        return [(logformat.group_key(self.group_id), None)]

    def mark_dead(self, now_ms: int) -> None:
        self.transition(GroupState.DEAD, now_ms)

    def describe(self) -> dict[str, Any]:
        return {
            "group_id": self.group_id,
            "group_type": GroupType.CLASSIC.value,
            "state": self.state.value,
            "protocol_type": self.protocol_type or "",
            "protocol": self.protocol_name or "",
            "generation_id": self.generation_id,
            "leader": self.leader_id or "",
            "members": [
                {
                    "member_id": m.member_id,
                    "group_instance_id": m.group_instance_id,
                    "client_id": m.client_id,
                    "client_host": m.client_host,
                    "session_timeout_ms": m.session_timeout_ms,
                    "rebalance_timeout_ms": m.rebalance_timeout_ms,
                    "assignment": m.assignment,
                }
                for m in self.members.values()
            ],
        }

    # -- the group log ---------------------------------------------------------------------------------------

    def record(self, assignment: dict[str, bytes] | None = None) -> bytes:
        """The group metadata value of the group as it stands (``assignment`` replacing the members')."""
        members = []
        for m in self.members.values():
            subscription = b""
            if self.protocol_name is not None:
                with contextlib.suppress(KeyError):
                    subscription = m.metadata_for(self.protocol_name)
            members.append(
                logformat.MemberRecord(
                    member_id=m.member_id,
                    group_instance_id=m.group_instance_id,
                    client_id=m.client_id,
                    client_host=m.client_host,
                    rebalance_timeout_ms=m.rebalance_timeout_ms,
                    session_timeout_ms=m.session_timeout_ms,
                    subscription=subscription,
                    assignment=m.assignment if assignment is None else assignment.get(m.member_id, b""),
                )
            )
        return logformat.group_value(
            logformat.GroupRecord(
                protocol_type=self.protocol_type,
                generation_id=self.generation_id,
                protocol_name=self.protocol_name,
                leader_id=self.leader_id,
                state_timestamp_ms=self.state_timestamp_ms,
                members=tuple(members),
            )
        )

    @classmethod
    def restore(cls, group_id: str, rec: logformat.GroupRecord, raw: bytes, now_ms: int) -> ClassicGroup:
        """The group as its last group metadata record left it: members stable, sessions restarted."""
        group = cls(group_id)
        group.persisted = raw
        group.protocol_type = rec.protocol_type
        group.generation_id = rec.generation_id
        group.protocol_name = rec.protocol_name
        group.state_timestamp_ms = rec.state_timestamp_ms
        for m in rec.members:
            member = ClassicMember(
                member_id=m.member_id,
                group_instance_id=m.group_instance_id,
                client_id=m.client_id,
                client_host=m.client_host,
                rebalance_timeout_ms=m.rebalance_timeout_ms,
                session_timeout_ms=m.session_timeout_ms,
                protocol_type=rec.protocol_type or "",
                protocols=[(rec.protocol_name, m.subscription)] if rec.protocol_name else [],
                assignment=m.assignment,
                heartbeat_deadline_ms=now_ms + m.session_timeout_ms,
            )
            group.members[member.member_id] = member
            if member.group_instance_id is not None:
                group.static_members[member.group_instance_id] = member.member_id
        if group.members:
            group.state = GroupState.STABLE
            group.leader_id = rec.leader_id if rec.leader_id in group.members else next(iter(group.members))
        group.subscribed_topics = group.compute_subscribed_topics()
        return group

    # -- the classic state machine ---------------------------------------------------------------------------

    def is_(self, state: GroupState) -> bool:
        return self.state is state

    def transition(self, state: GroupState, now_ms: int) -> None:
        if self.state not in _VALID_PREVIOUS[state]:
            raise RuntimeError(f"group {self.group_id}: cannot move from {self.state.value} to {state.value}")
        self.state = state
        self.state_timestamp_ms = now_ms

    @property
    def can_rebalance(self) -> bool:
        return self.state in _VALID_PREVIOUS[GroupState.PREPARING_REBALANCE]

    @property
    def is_consumer_group(self) -> bool:
        return self.protocol_type == CONSUMER_PROTOCOL_TYPE

    def has(self, member_id: str) -> bool:
        return member_id in self.members

    def is_leader(self, member_id: str) -> bool:
        return self.leader_id == member_id

    @property
    def num_awaiting_join(self) -> int:
        return sum(1 for m in self.members.values() if m.awaiting_join)

    @property
    def has_all_members_joined(self) -> bool:
        return not self.pending_members and all(m.awaiting_join for m in self.members.values())

    @property
    def rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def generate_member_id(self, client_id: str, group_instance_id: str | None) -> str:
        prefix = group_instance_id if group_instance_id is not None else client_id
        return f"{prefix}-{uuid.uuid4()}"

    def add(self, member: ClassicMember) -> None:
        if member.group_instance_id is not None:
            if member.group_instance_id in self.static_members:
                raise RuntimeError(f"static member {member.group_instance_id} is already in {self.group_id}")
            self.static_members[member.group_instance_id] = member.member_id
        if not self.members:
            self.protocol_type = member.protocol_type
        if self.leader_id is None:
            self.leader_id = member.member_id
        self.members[member.member_id] = member
        self.pending_members.pop(member.member_id, None)

    def remove(self, member_id: str) -> ClassicMember | None:
        member = self.members.pop(member_id, None)
        if member is not None and member.group_instance_id is not None:
            self.static_members.pop(member.group_instance_id, None)
        if self.leader_id == member_id:
            self.leader_id = next(iter(self.members), None)
        self.pending_members.pop(member_id, None)
        self.pending_sync.discard(member_id)
        return member

    def current_static_member_id(self, group_instance_id: str) -> str | None:
        return self.static_members.get(group_instance_id)

    def replace_static_member(
        self, group_instance_id: str, old_member_id: str, new_member_id: str
    ) -> ClassicMember:
        member = self.members.pop(old_member_id)
        member.member_id = new_member_id
        self.members[new_member_id] = member
        if self.leader_id == old_member_id:
            self.leader_id = new_member_id
        self.static_members[group_instance_id] = new_member_id
        return member

    def candidate_protocols(self) -> set[str]:
        candidates: set[str] | None = None
        for member in self.members.values():
            names = {name for name, _ in member.protocols}
            candidates = names if candidates is None else candidates & names
        return candidates or set()

    def supports_protocols(self, protocol_type: str, protocols: Protocols) -> bool:
        names = {name for name, _ in protocols}
        if self.is_(GroupState.EMPTY):
            return bool(protocol_type) and bool(names)
        return self.protocol_type == protocol_type and bool(names & self.candidate_protocols())

    def select_protocol(self) -> str:
        """The protocol every member supports, chosen by each member voting for its most preferred one."""
        candidates = self.candidate_protocols()
        votes: dict[str, int] = {}
        for member in self.members.values():
            choice = member.vote(candidates)
            votes[choice] = votes.get(choice, 0) + 1
        return max(votes, key=lambda name: votes[name])

    def maybe_elect_new_joined_leader(self) -> bool:
        if self.leader_id is None:
            return False
        leader = self.members[self.leader_id]
        if leader.awaiting_join:
            return True
        for member_id, member in self.members.items():
            if member.awaiting_join:
                self.leader_id = member_id
                return True
        return False

    def compute_subscribed_topics(self) -> frozenset[str] | None:
        """Topics the members of a consumer group subscribe to; None when unknown (not a consumer group)."""
        if self.protocol_type != CONSUMER_PROTOCOL_TYPE:
            return None
        if not self.members:
            return frozenset()
        if self.protocol_name is None:
            return None
        topics: set[str] = set()
        try:
            for member in self.members.values():
                topics.update(parse_subscription_topics(member.metadata_for(self.protocol_name)))
        except (ValueError, KeyError):
            return None
        return frozenset(topics)

    def is_subscribed_to(self, topic: str) -> bool:
        return True if self.subscribed_topics is None else topic in self.subscribed_topics

    def init_next_generation(self, now_ms: int) -> None:
        self.generation_id += 1
        if self.members:
            self.protocol_name = self.select_protocol()
            self.subscribed_topics = self.compute_subscribed_topics()
            self.transition(GroupState.COMPLETING_REBALANCE, now_ms)
        else:
            self.protocol_name = None
            self.subscribed_topics = self.compute_subscribed_topics()
            self.transition(GroupState.EMPTY, now_ms)
        self.pending_sync.clear()

    def current_member_metadata(self) -> list[dict[str, Any]]:
        assert self.protocol_name is not None
        return [
            {
                "member_id": m.member_id,
                "group_instance_id": m.group_instance_id,
                "metadata": m.metadata_for(self.protocol_name),
            }
            for m in self.members.values()
        ]


def parse_subscription_topics(data: bytes) -> list[str]:
    """Topics of a ConsumerProtocolSubscription (any version: they all start with version, then topics)."""
    if len(data) < 6:
        raise ValueError("subscription too short")
    (version,) = struct.unpack_from(">h", data, 0)
    if version < 0:
        raise ValueError(f"bad subscription version {version}")
    (count,) = struct.unpack_from(">i", data, 2)
    if count < 0:
        raise ValueError("bad topic count")
    pos = 6
    topics = []
    for _ in range(count):
        if pos + 2 > len(data):
            raise ValueError("subscription truncated")
        (length,) = struct.unpack_from(">h", data, pos)
        pos += 2
        if length < 0 or pos + length > len(data):
            raise ValueError("bad topic name length")
        topics.append(data[pos : pos + length].decode("utf-8"))
        pos += length
    return topics
