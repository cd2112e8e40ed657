"""State of consumer groups (KIP-848): members, the group epoch, the target assignment, reconciliation.

A consumer group's hard state is what its records in the group log hold: the group epoch, each member's
subscription and current assignment, the target assignment and its epoch. The group's state (Empty,
Assigning, Reconciling, Stable) is derived from it, as Kafka derives it. Members are immutable values
replaced on every change; the group keeps which partitions each member owns at which epoch, so that a
partition goes to its new owner only once its previous owner has released it.

``reconcile`` is the reconciliation engine (Kafka's CurrentAssignmentBuilder): from a member's current
assignment, the partitions it reports owning and the target assignment, its next state.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from kafkite.protocol.errors import ErrorCode

from .. import logformat
from ..group import Group, GroupType, OffsetExpiration
from ..log import Entry

TopicId = uuid.UUID
# Partitions by topic id; never holds an empty set.
Partitions = Mapping[TopicId, frozenset[int]]

PROTOCOL_TYPE = "consumer"
LEAVE_GROUP_MEMBER_EPOCH = -1
LEAVE_GROUP_STATIC_MEMBER_EPOCH = -2


class MemberState(Enum):
    STABLE = 0
    UNREVOKED_PARTITIONS = 1
    UNRELEASED_PARTITIONS = 2
    UNKNOWN = 127


class ConsumerGroupState(Enum):
    EMPTY = "Empty"
    ASSIGNING = "Assigning"
    RECONCILING = "Reconciling"
    STABLE = "Stable"
    DEAD = "Dead"


@dataclass(frozen=True)
class ClassicMetadata:
    """What a member using the classic protocol (JoinGroup/SyncGroup) inside a consumer group keeps."""

    session_timeout_ms: int
    protocols: tuple[tuple[str, bytes], ...]

    @property
    def protocol_name(self) -> str:
        return self.protocols[0][0] if self.protocols else ""

    def metadata(self, name: str) -> bytes:
        for n, m in self.protocols:
            if n == name:
                return m
        return self.protocols[0][1] if self.protocols else b""


@dataclass(frozen=True)
class ConsumerMember:
    member_id: str
    instance_id: str | None = None
    rack_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    subscribed_topic_names: tuple[str, ...] = ()
    subscribed_topic_regex: str = ""
    server_assignor: str | None = None
    rebalance_timeout_ms: int = -1
    member_epoch: int = 0
    previous_member_epoch: int = 0
    state: MemberState = MemberState.STABLE
    assigned: Partitions = field(default_factory=dict)
    pending_revocation: Partitions = field(default_factory=dict)
    classic: ClassicMetadata | None = None

    @property
    def uses_classic_protocol(self) -> bool:
        return self.classic is not None

    def is_reconciled_to(self, epoch: int) -> bool:
        return self.state is MemberState.STABLE and self.member_epoch == epoch

    def subscribed_topics(self, resolved_regexes: Mapping[str, frozenset[str]]) -> frozenset[str]:
        topics = frozenset(self.subscribed_topic_names)
        if self.subscribed_topic_regex:
            topics |= resolved_regexes.get(self.subscribed_topic_regex, frozenset())
        return topics

    def metadata_fields(self) -> tuple[Any, ...]:
        """What the member metadata record holds (a change of any of them rewrites it)."""
        return (
            self.instance_id,
            self.rack_id,
            self.client_id,
            self.client_host,
            self.subscribed_topic_names,
            self.subscribed_topic_regex,
            self.server_assignor,
            self.rebalance_timeout_ms,
            self.classic,
        )

    def assignment_fields(self) -> tuple[Any, ...]:
        """What the current assignment record holds."""
        return (
            self.member_epoch,
            self.previous_member_epoch,
            self.state,
            _freeze(self.assigned),
            _freeze(self.pending_revocation),
        )


def _freeze(p: Partitions) -> frozenset[tuple[TopicId, frozenset[int]]]:
    return frozenset((t, ps) for t, ps in p.items() if ps)


def partitions_of(p: Mapping[TopicId, Iterable[int]]) -> dict[TopicId, frozenset[int]]:
    return {t: f for t, ps in p.items() if (f := frozenset(ps))}


def count(p: Partitions) -> int:
    return sum(len(ps) for ps in p.values())


# -- reconciliation ------------------------------------------------------------------------------------------


def _owns_any(owned: Partitions | None, partitions: Partitions) -> bool:
    """Whether the member still reports owning one of ``partitions`` (None: it did not say, so it might)."""
    if owned is None:
        return True
    return any(owned.get(t, frozenset()) & ps for t, ps in partitions.items())


def reconcile(
    member: ConsumerMember,
    *,
    target_epoch: int,
    target: Partitions,
    subscribed_topic_ids: frozenset[TopicId],
    owned: Partitions | None,
    current_partition_epoch: Callable[[TopicId, int], int],
    subscription_changed: bool,
) -> ConsumerMember:
    """The member's next state towards the target assignment (the same member when nothing changes).

    A partition the member must give up goes to its pending revocation and the member stays in its epoch
    (UNREVOKED_PARTITIONS) until it stops reporting it; a partition it must get is given only once no other
    member owns it (UNRELEASED_PARTITIONS until then).
    """

    def advance(member_epoch: int) -> ConsumerMember:
        return _next_assignment(
            member, member_epoch, target_epoch, target, subscribed_topic_ids, owned, current_partition_epoch
        )

    if member.state is MemberState.STABLE:
        if member.member_epoch != target_epoch:
            return advance(member.member_epoch)
        if subscription_changed:
            return _drop_unsubscribed(member, subscribed_topic_ids, owned)
        return member
    if member.state is MemberState.UNREVOKED_PARTITIONS:
        if _owns_any(owned, member.pending_revocation):
            return _drop_unsubscribed(member, subscribed_topic_ids, owned) if subscription_changed else member
        return advance(member.member_epoch)
    if member.state is MemberState.UNRELEASED_PARTITIONS:
        return advance(member.member_epoch)
    # An unknown state: start from scratch once the member owns nothing.
    return advance(target_epoch)


def _drop_unsubscribed(
    member: ConsumerMember, subscribed_topic_ids: frozenset[TopicId], owned: Partitions | None
) -> ConsumerMember:
    """The subscription changed: partitions of topics no longer subscribed must be revoked at once."""
    dropped = {t: ps for t, ps in member.assigned.items() if t not in subscribed_topic_ids}
    if not dropped:
        return member
    assigned = {t: ps for t, ps in member.assigned.items() if t in subscribed_topic_ids}
    pending = dict(member.pending_revocation)
    for t, ps in dropped.items():
        pending[t] = pending.get(t, frozenset()) | ps
    if _owns_any(owned, pending):
        return dataclasses.replace(
            member,
            state=MemberState.UNREVOKED_PARTITIONS,
            assigned=assigned,
            pending_revocation=pending,
        )
    return dataclasses.replace(member, assigned=assigned)


def _next_assignment(
    member: ConsumerMember,
    member_epoch: int,
    target_epoch: int,
    target: Partitions,
    subscribed_topic_ids: frozenset[TopicId],
    owned: Partitions | None,
    current_partition_epoch: Callable[[TopicId, int], int],
) -> ConsumerMember:
    assigned: dict[TopicId, frozenset[int]] = {}
    revoking: dict[TopicId, frozenset[int]] = {}
    to_assign: dict[TopicId, frozenset[int]] = {}
    unreleased = False
    for t in set(target) | set(member.assigned):
        want = target.get(t, frozenset()) if t in subscribed_topic_ids else frozenset()
        have = member.assigned.get(t, frozenset())
        keep = have & want
        if keep:
            assigned[t] = keep
        if have - keep:
            revoking[t] = have - keep
        pending_revocation = member.pending_revocation.get(t, frozenset())
        free = frozenset(
            p for p in want - keep if current_partition_epoch(t, p) == -1 or p in pending_revocation
        )
        if len(free) < len(want - keep):
            unreleased = True
        if free:
            to_assign[t] = free
    if revoking and _owns_any(owned, revoking):
        # Revoke first: the member stays in its epoch until it acknowledges the revocation.
        return _updated(
            member,
            MemberState.UNREVOKED_PARTITIONS,
            member_epoch,
            assigned,
            revoking,
        )
    for t, ps in to_assign.items():
        assigned[t] = assigned.get(t, frozenset()) | ps
    state = MemberState.UNRELEASED_PARTITIONS if unreleased else MemberState.STABLE
    return _updated(member, state, target_epoch, assigned, {})


def _updated(
    member: ConsumerMember,
    state: MemberState,
    epoch: int,
    assigned: Mapping[TopicId, frozenset[int]],
    pending: Mapping[TopicId, frozenset[int]],
) -> ConsumerMember:
    new = dataclasses.replace(
        member,
        state=state,
        member_epoch=epoch,
        previous_member_epoch=member.member_epoch,
        assigned=partitions_of(assigned),
        pending_revocation=partitions_of(pending),
    )
    return member if new.assignment_fields() == member.assignment_fields() else new


# -- the group -----------------------------------------------------------------------------------------------


class ConsumerGroup(Group):
    """A group of the consumer protocol; members may also be classic members (JoinGroup/SyncGroup)."""

    def __init__(self, group_id: str, now_ms: int | None = None) -> None:
        self.group_id = group_id
        self.group_epoch = 0
        self.assignment_epoch = 0
        # A digest of the subscribed topics' ids and partition counts at the last epoch bump.
        self.metadata_hash = 0
        self.members: dict[str, ConsumerMember] = {}
        self.static_members: dict[str, str] = {}
        self.target: dict[str, Partitions] = {}
        # Epoch at which each owned partition (assigned or pending revocation) is held by its member.
        self._partition_epoch: dict[tuple[TopicId, int], int] = {}
        # Topics each subscribed regular expression matches (not persisted: resolved again on load).
        self.resolved_regexes: dict[str, frozenset[str]] = {}
        # With an authorizer, regular expressions are resolved only by a heartbeat, with its member's
        # DESCRIBE permissions (Kafka's refresh): when that last happened, the topics the catalogue held
        # then, and the patterns a restarted coordinator has not resolved again yet.
        self.regex_refreshed_ms = 0
        self.regex_catalogue: frozenset[str] = frozenset()
        self.regexes_to_reload: frozenset[str] = frozenset()
        self.state_timestamp_ms = now_ms
        self._last_state = ConsumerGroupState.EMPTY
        self.dead = False
        # Log keys changed since the last flush (see ``dirty_entries``).
        self._dirty: dict[tuple[str, str], None] = {}
        # Timers (soft state): member id -> deadline.
        self.session_deadline: dict[str, int] = {}
        self.rebalance_deadline: dict[str, tuple[int, int]] = {}  # member id -> (deadline, epoch)
        self.join_deadline: dict[str, int] = {}
        self.sync_deadline: dict[str, int] = {}

    # -- the Group interface ---------------------------------------------------------------------------------

    @property
    def group_type(self) -> GroupType:
        return GroupType.CONSUMER

    @property
    def state(self) -> ConsumerGroupState:
        if self.dead:
            return ConsumerGroupState.DEAD
        if not self.members:
            return ConsumerGroupState.EMPTY
        if self.group_epoch > self.assignment_epoch:
            return ConsumerGroupState.ASSIGNING
        if any(not m.is_reconciled_to(self.assignment_epoch) for m in self.members.values()):
            return ConsumerGroupState.RECONCILING
        return ConsumerGroupState.STABLE

    @property
    def state_name(self) -> str:
        return self.state.value

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
    def member_count(self) -> int:
        return len(self.members)

    @property
    def epoch(self) -> int:
        return self.group_epoch

    def note_state(self, now_ms: int) -> None:
        """Record when the state last changed (the base of offset retention once the group is empty)."""
        state = self.state
        if state is not self._last_state:
            self._last_state = state
            self.state_timestamp_ms = now_ms

    def member(self, member_id: str) -> ConsumerMember | None:
        return self.members.get(member_id)

    def static_member(self, instance_id: str | None) -> ConsumerMember | None:
        if instance_id is None:
            return None
        mid = self.static_members.get(instance_id)
        return None if mid is None else self.members.get(mid)

    def validate_offset_commit(
        self, member_id: str, instance_id: str | None, epoch: int, *, transactional: bool, version: int
    ) -> ErrorCode | None:
        if self.dead:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        # The admin client and consumers that assign partitions themselves commit with epoch -1.
        if epoch < 0 and not self.members:
            return None
        if transactional and epoch < 0 and not member_id and instance_id is None:
            return None
        member = self.members.get(member_id)
        if member is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if not transactional and not member.uses_classic_protocol and version < 9:
            return ErrorCode.UNSUPPORTED_VERSION
        if epoch != member.member_epoch:
            if member.uses_classic_protocol or transactional:
                return ErrorCode.ILLEGAL_GENERATION
            return ErrorCode.STALE_MEMBER_EPOCH
        return None

    def validate_offset_fetch(self, member_id: str | None, member_epoch: int) -> ErrorCode | None:
        if self.dead:
            return ErrorCode.GROUP_ID_NOT_FOUND
        if member_id is None and member_epoch < 0:
            return None
        member = self.members.get(member_id or "")
        if member is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if member_epoch != member.member_epoch:
            classic = member.uses_classic_protocol
            return ErrorCode.ILLEGAL_GENERATION if classic else ErrorCode.STALE_MEMBER_EPOCH
        return None

    def validate_offset_delete(self) -> ErrorCode | None:
        return ErrorCode.GROUP_ID_NOT_FOUND if self.dead else None

    def validate_delete(self) -> ErrorCode | None:
        if self.dead:
            return ErrorCode.GROUP_ID_NOT_FOUND
        return None if not self.members else ErrorCode.NON_EMPTY_GROUP

    def subscribed_topic_names(self) -> dict[str, int]:
        """Subscribed topic names (by name or through a regular expression) with their subscriber counts."""
        counts: dict[str, int] = {}
        for m in self.members.values():
            for t in m.subscribed_topics(self.resolved_regexes):
                counts[t] = counts.get(t, 0) + 1
        return counts

    def subscribed_regexes(self) -> set[str]:
        """The regular expressions the members subscribe to."""
        return {m.subscribed_topic_regex for m in self.members.values() if m.subscribed_topic_regex}

    def is_subscribed_to(self, topic: str) -> bool:
        return any(topic in m.subscribed_topics(self.resolved_regexes) for m in self.members.values())

    def offset_expiration(self) -> OffsetExpiration | None:
        return OffsetExpiration(kept_topics=frozenset(self.subscribed_topic_names()))

    def mark_dead(self, now_ms: int) -> None:
        self.dead = True
        self.state_timestamp_ms = now_ms

    # -- members ---------------------------------------------------------------------------------------------

    def current_partition_epoch(self, topic_id: TopicId, partition: int) -> int:
        """The epoch at which a member owns the partition, -1 if no member does."""
        return self._partition_epoch.get((topic_id, partition), -1)

    def _owned(self, m: ConsumerMember) -> Iterable[tuple[TopicId, int]]:
        for p in (m.assigned, m.pending_revocation):
            for t, ps in p.items():
                for i in ps:
                    yield (t, i)

    def update_member(self, member: ConsumerMember) -> None:
        old = self.members.get(member.member_id)
        if old is not None:
            if old.metadata_fields() != member.metadata_fields():
                self._dirty[("member", member.member_id)] = None
            if old.assignment_fields() != member.assignment_fields():
                self._dirty[("current", member.member_id)] = None
            for tp in self._owned(old):
                self._partition_epoch.pop(tp, None)
            if old.instance_id is not None and old.instance_id != member.instance_id:
                self.static_members.pop(old.instance_id, None)
        else:
            self._dirty[("member", member.member_id)] = None
            self._dirty[("current", member.member_id)] = None
        self.members[member.member_id] = member
        for tp in self._owned(member):
            self._partition_epoch[tp] = member.member_epoch
        if member.instance_id is not None:
            self.static_members[member.instance_id] = member.member_id

    def remove_member(self, member_id: str) -> ConsumerMember | None:
        old = self.members.pop(member_id, None)
        if old is None:
            return None
        for tp in self._owned(old):
            self._partition_epoch.pop(tp, None)
        if old.instance_id is not None and self.static_members.get(old.instance_id) == member_id:
            del self.static_members[old.instance_id]
        self.target.pop(member_id, None)
        for kind in ("current", "target", "member"):
            self._dirty[(kind, member_id)] = None
        for timers in (self.session_deadline, self.join_deadline, self.sync_deadline):
            timers.pop(member_id, None)
        self.rebalance_deadline.pop(member_id, None)
        return old

    def set_group_epoch(self, epoch: int, metadata_hash: int) -> None:
        self.group_epoch = epoch
        self.metadata_hash = metadata_hash
        self._dirty[("meta", "")] = None

    def set_target(self, member_id: str, partitions: Partitions) -> None:
        if _freeze(self.target.get(member_id, {})) != _freeze(partitions) or member_id not in self.target:
            self.target[member_id] = partitions_of(partitions)
            self._dirty[("target", member_id)] = None

    def set_assignment_epoch(self, epoch: int) -> None:
        self.assignment_epoch = epoch
        self._dirty[("assignment", "")] = None

    def preferred_assignor(self) -> str | None:
        counts: dict[str, int] = {}
        for m in self.members.values():
            if m.server_assignor is not None:
                counts[m.server_assignor] = counts.get(m.server_assignor, 0) + 1
        return max(counts, key=lambda name: counts[name]) if counts else None

    @property
    def num_classic_members(self) -> int:
        return sum(1 for m in self.members.values() if m.uses_classic_protocol)

    def all_classic_except(self, member_ids: Iterable[str]) -> bool:
        """Whether every member but those of ``member_ids`` uses the classic protocol (and they do not)."""
        leaving = set(member_ids)
        for mid, m in self.members.items():
            if mid in leaving:
                if m.uses_classic_protocol:
                    return False
            elif not m.uses_classic_protocol:
                return False
        return True

    def supports_classic_protocols(self, protocol_type: str, names: set[str]) -> bool:
        if protocol_type != PROTOCOL_TYPE:
            return False
        if not self.members:
            return bool(names)
        classic = [m.classic for m in self.members.values() if m.classic is not None]
        return any(all(name in {n for n, _ in c.protocols} for c in classic) for name in names)

    # -- the group log ---------------------------------------------------------------------------------------

    def mark_all_dirty(self) -> None:
        """Every record of the group will be written (a group created from another one)."""
        self._dirty[("meta", "")] = None
        self._dirty[("assignment", "")] = None
        for mid in self.members:
            for kind in ("member", "target", "current"):
                self._dirty[(kind, mid)] = None

    def dirty_entries(self) -> list[Entry]:
        """Entries writing what changed since the last call (the record or a tombstone for each key)."""
        entries: list[Entry] = []
        order = {"member": 0, "meta": 1, "target": 2, "assignment": 3, "current": 4}
        for kind, mid in sorted(self._dirty, key=lambda k: order[k[0]]):
            entries.append(self._entry(kind, mid))
        self._dirty.clear()
        return entries

    def discard_dirty(self) -> None:
        self._dirty.clear()

    def _entry(self, kind: str, member_id: str) -> Entry:
        gid = self.group_id
        if kind == "meta":
            return logformat.consumer_group_key(gid), logformat.consumer_group_value(
                self.group_epoch, self.metadata_hash
            )
        if kind == "assignment":
            return logformat.target_assignment_metadata_key(gid), logformat.target_assignment_metadata_value(
                self.assignment_epoch
            )
        member = self.members.get(member_id)
        if kind == "member":
            key = logformat.consumer_member_key(gid, member_id)
            return key, None if member is None else logformat.consumer_member_value(_member_record(member))
        if kind == "target":
            key = logformat.target_assignment_member_key(gid, member_id)
            target = self.target.get(member_id)
            return key, None if target is None else logformat.partitions_value(target)
        key = logformat.current_assignment_key(gid, member_id)
        if member is None:
            return key, None
        return key, logformat.current_assignment_value(
            logformat.CurrentAssignmentRecord(
                member.member_epoch,
                member.previous_member_epoch,
                member.state.value,
                dict(member.assigned),
                dict(member.pending_revocation),
            )
        )

    def live_entries(self) -> list[Entry]:
        self._dirty.clear()
        self.mark_all_dirty()
        return self.dirty_entries()

    def tombstones(self) -> list[Entry]:
        gid = self.group_id
        entries: list[Entry] = []
        for mid in self.members:
            entries.append((logformat.current_assignment_key(gid, mid), None))
        for mid in set(self.members) | set(self.target):
            entries.append((logformat.target_assignment_member_key(gid, mid), None))
        for mid in self.members:
            entries.append((logformat.consumer_member_key(gid, mid), None))
        entries.append((logformat.target_assignment_metadata_key(gid), None))
        entries.append((logformat.consumer_group_key(gid), None))
        return entries

    # -- snapshots (undo when the group log refuses a change) ----------------------------------------------

    def snapshot(self) -> tuple[Any, ...]:
        return (
            self.group_epoch,
            self.assignment_epoch,
            self.metadata_hash,
            dict(self.members),
            dict(self.static_members),
            dict(self.target),
            dict(self._partition_epoch),
            dict(self.resolved_regexes),
            (self.regex_refreshed_ms, self.regex_catalogue, self.regexes_to_reload),
            self.state_timestamp_ms,
            self._last_state,
        )

    def restore(self, snap: tuple[Any, ...]) -> None:
        (
            self.group_epoch,
            self.assignment_epoch,
            self.metadata_hash,
            self.members,
            self.static_members,
            self.target,
            self._partition_epoch,
            self.resolved_regexes,
            (self.regex_refreshed_ms, self.regex_catalogue, self.regexes_to_reload),
            self.state_timestamp_ms,
            self._last_state,
        ) = snap
        self._dirty.clear()

    # -- introspection ---------------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            "group_id": self.group_id,
            "group_type": GroupType.CONSUMER.value,
            "state": self.state.value,
            "protocol_type": PROTOCOL_TYPE,
            "protocol": self.preferred_assignor() or "",
            "generation_id": self.group_epoch,
            "group_epoch": self.group_epoch,
            "assignment_epoch": self.assignment_epoch,
            "leader": "",
            "members": [
                {
                    "member_id": m.member_id,
                    "group_instance_id": m.instance_id,
                    "client_id": m.client_id,
                    "client_host": m.client_host,
                    "member_epoch": m.member_epoch,
                    "member_state": m.state.name,
                    "protocol": "classic" if m.uses_classic_protocol else "consumer",
                    "session_timeout_ms": m.classic.session_timeout_ms if m.classic is not None else None,
                    "rebalance_timeout_ms": m.rebalance_timeout_ms,
                    "subscribed_topic_names": list(m.subscribed_topic_names),
                    "subscribed_topic_regex": m.subscribed_topic_regex or None,
                    "assigned": {t: sorted(ps) for t, ps in m.assigned.items()},
                    "pending_revocation": {t: sorted(ps) for t, ps in m.pending_revocation.items()},
                    "target": {t: sorted(ps) for t, ps in self.target.get(m.member_id, {}).items()},
                }
                for m in self.members.values()
            ],
        }


def _member_record(m: ConsumerMember) -> logformat.ConsumerMemberRecord:
    return logformat.ConsumerMemberRecord(
        instance_id=m.instance_id,
        rack_id=m.rack_id,
        client_id=m.client_id,
        client_host=m.client_host,
        subscribed_topic_names=m.subscribed_topic_names,
        subscribed_topic_regex=m.subscribed_topic_regex,
        server_assignor=m.server_assignor,
        rebalance_timeout_ms=m.rebalance_timeout_ms,
        classic_session_timeout_ms=m.classic.session_timeout_ms if m.classic is not None else None,
        classic_protocols=m.classic.protocols if m.classic is not None else (),
    )


def member_from_records(
    member_id: str,
    meta: logformat.ConsumerMemberRecord | None,
    current: logformat.CurrentAssignmentRecord | None,
) -> ConsumerMember:
    """A member as its records in the group log left it."""
    member = ConsumerMember(member_id)
    if meta is not None:
        classic = (
            ClassicMetadata(meta.classic_session_timeout_ms, tuple(meta.classic_protocols))
            if meta.classic_session_timeout_ms is not None
            else None
        )
        member = dataclasses.replace(
            member,
            instance_id=meta.instance_id,
            rack_id=meta.rack_id,
            client_id=meta.client_id,
            client_host=meta.client_host,
            subscribed_topic_names=tuple(meta.subscribed_topic_names),
            subscribed_topic_regex=meta.subscribed_topic_regex,
            server_assignor=meta.server_assignor,
            rebalance_timeout_ms=meta.rebalance_timeout_ms,
            classic=classic,
        )
    if current is not None:
        try:
            state = MemberState(current.state)
        except ValueError:
            state = MemberState.UNKNOWN
        member = dataclasses.replace(
            member,
            member_epoch=current.member_epoch,
            previous_member_epoch=current.previous_member_epoch,
            state=state,
            assigned=partitions_of(current.assigned),
            pending_revocation=partitions_of(current.pending_revocation),
        )
    return member


class ConsumerRecords:
    """The records of one consumer group met while replaying the group log."""

    def __init__(self) -> None:
        self.meta: tuple[int, int] | None = None
        self.assignment_epoch: int | None = None
        self.members: dict[str, logformat.ConsumerMemberRecord] = {}
        self.current: dict[str, logformat.CurrentAssignmentRecord] = {}
        self.targets: dict[str, dict[TopicId, frozenset[int]]] = {}

    @property
    def exists(self) -> bool:
        return self.meta is not None or bool(self.members)

    def replay(self, key: logformat.Key, value: bytes | None) -> None:
        if isinstance(key, logformat.ConsumerGroupKey):
            self.meta = None if value is None else logformat.decode_consumer_group_value(value)
        elif isinstance(key, logformat.TargetAssignmentMetadataKey):
            self.assignment_epoch = (
                None if value is None else logformat.decode_target_assignment_metadata_value(value)
            )
        elif isinstance(key, logformat.ConsumerMemberKey):
            if value is None:
                self.members.pop(key.member_id, None)
            else:
                self.members[key.member_id] = logformat.decode_consumer_member_value(value)
        elif isinstance(key, logformat.CurrentAssignmentKey):
            if value is None:
                self.current.pop(key.member_id, None)
            else:
                self.current[key.member_id] = logformat.decode_current_assignment_value(value)
        elif isinstance(key, logformat.TargetAssignmentMemberKey):
            if value is None:
                self.targets.pop(key.member_id, None)
            else:
                self.targets[key.member_id] = logformat.decode_partitions_value(value)

    def build(self, group_id: str, now_ms: int) -> ConsumerGroup:
        group = ConsumerGroup(group_id, now_ms)
        if self.meta is not None:
            group.group_epoch, group.metadata_hash = self.meta
        group.assignment_epoch = self.assignment_epoch or 0
        for member_id, meta in self.members.items():
            group.update_member(member_from_records(member_id, meta, self.current.get(member_id)))
        for member_id, target in self.targets.items():
            group.target[member_id] = target
        group.discard_dirty()
        return group
