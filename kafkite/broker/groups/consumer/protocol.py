"""The consumer group protocol (KIP-848): ConsumerGroupHeartbeat and ConsumerGroupDescribe, and the classic
members of consumer groups (JoinGroup / SyncGroup / Heartbeat / LeaveGroup), as Kafka 4's group coordinator
runs them.

Each heartbeat follows Kafka's three steps: the member is created or updated (a new subscription, or a change
in the subscribed topics' metadata, bumps the group epoch); when the group epoch is ahead of the target
assignment's epoch, the server-side assignor computes a new target assignment; the member's assignment is
reconciled towards its target (``state.reconcile``): partitions to give up are revoked first and go to their
new owners only once released. Every change is written to the group log as Kafka's records are (only what
changed) before the answer goes out; when the log refuses it, the group is restored and the member told
COORDINATOR_NOT_AVAILABLE.

A group id holds one group: an empty classic group becomes a consumer group when a consumer-protocol member
joins (and an empty consumer group a classic one when a classic member joins); a non-empty classic group of
the consumer protocol type is converted member by member (``group.consumer.migration.policy``), its classic
members staying in the consumer group and rebalancing through JoinGroup/SyncGroup, and a consumer group whose
last consumer-protocol member leaves goes back to being a classic group.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from kafkite.protocol.errors import ErrorCode

from .. import logformat
from ..classic.protocol import ClassicProtocol, join_error, sync_error
from ..classic.state import ClassicGroup, ClassicMember, GroupState
from ..config import REGEX_BATCH_REFRESH_MIN_INTERVAL_MS
from ..context import DescribableTopics, GroupContext, TopicInfo
from ..group import Group, GroupType
from ..log import Entry, store_error
from . import embedded, regex
from .assignors import ASSIGNORS, MemberSpec
from .state import (
    LEAVE_GROUP_MEMBER_EPOCH,
    LEAVE_GROUP_STATIC_MEMBER_EPOCH,
    PROTOCOL_TYPE,
    ClassicMetadata,
    ConsumerGroup,
    ConsumerMember,
    ConsumerRecords,
    MemberState,
    Partitions,
    TopicId,
    reconcile,
)

log = logging.getLogger("kafkite.groups")

Result = dict[str, Any]
# Version of ConsumerGroupHeartbeat from which the client generates its member id (KIP-1082).
CLIENT_GENERATED_MEMBER_ID_VERSION = 1
AUTHORIZED_OPERATIONS_OMITTED = -2147483648


class GroupError(Exception):
    """A request refused with a Kafka error code (and message)."""

    def __init__(self, code: ErrorCode, message: str | None = None) -> None:
        super().__init__(message or code.name)
        self.code = code
        self.message = message


class _Topics:
    """The topic catalogue by name and by id, for one request."""

    def __init__(self, topics: Mapping[str, TopicInfo]) -> None:
        self.by_name = topics
        self._by_id: dict[TopicId, tuple[str, int]] | None = None

    @property
    def by_id(self) -> dict[TopicId, tuple[str, int]]:
        if self._by_id is None:
            self._by_id = {m.topic_id: (name, m.partitions) for name, m in self.by_name.items()}
        return self._by_id

    def ids(self, names: frozenset[str]) -> frozenset[TopicId]:
        return frozenset(self.by_name[n].topic_id for n in names if n in self.by_name)

    def name(self, topic_id: TopicId) -> str | None:
        entry = self.by_id.get(topic_id)
        return None if entry is None else entry[0]

    def to_names(self, partitions: Partitions) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for t, ps in partitions.items():
            name = self.name(t)
            if name is not None:
                out[name] = sorted(ps)
        return out

    def from_names(self, pairs: tuple[tuple[str, tuple[int, ...]], ...]) -> dict[TopicId, frozenset[int]]:
        out: dict[TopicId, frozenset[int]] = {}
        for name, parts in pairs:
            meta = self.by_name.get(name)
            if meta is not None and parts:
                out[meta.topic_id] = out.get(meta.topic_id, frozenset()) | frozenset(parts)
        return out


def _metadata_hash(names: Mapping[str, int], topics: _Topics) -> int:
    """A digest of the subscribed topics that exist: their names, ids and partition counts."""
    digest = hashlib.blake2b(digest_size=8)
    for name in sorted(names):
        meta = topics.by_name.get(name)
        if meta is not None:
            digest.update(f"{name}\0{meta.topic_id}\0{meta.partitions}\n".encode())
    value = int.from_bytes(digest.digest(), "big", signed=True)
    return value if names else 0


class _Operation:
    """The changes of one request: groups added to or removed from the registry, extra log entries, and
    the consumer groups changed (snapshotted to undo them if the group log refuses the change)."""

    def __init__(self, protocol: ConsumerProtocol) -> None:
        self._protocol = protocol
        self.entries: list[Entry] = []
        self.registry: dict[str, Group | None] = {}
        self.snapshots: dict[int, tuple[ConsumerGroup, tuple[Any, ...]]] = {}
        self.touched: dict[int, ConsumerGroup] = {}
        self.after: list[Any] = []

    def touch(self, group: ConsumerGroup) -> ConsumerGroup:
        if id(group) not in self.touched:
            self.touched[id(group)] = group
            if group.group_id in self._protocol._ctx.groups:
                self.snapshots[id(group)] = (group, group.snapshot())
        return group

    def _entries(self) -> list[Entry]:
        entries = list(self.entries)
        for group in self.touched.values():
            entries.extend(group.dirty_entries())
        return entries

    def _refused(self, exc: Exception) -> GroupError:
        log.warning("cannot persist a change of a consumer group: %s", exc)
        for changed, snap in self.snapshots.values():
            changed.restore(snap)
        return GroupError(store_error(exc))

    def commit(self) -> None:
        try:
            self._protocol._ctx.append(self._entries())
        except Exception as exc:
            raise self._refused(exc) from None
        self._apply()

    async def commit_async(self) -> None:
        """``commit``, the log written without holding the event loop (the caller holds the protocol's lock,
        so no other change of its groups is made meanwhile)."""
        try:
            await self._protocol._ctx.append_async(self._entries())
        except Exception as exc:
            raise self._refused(exc) from None
        self._apply()

    def _apply(self) -> None:
        ctx = self._protocol._ctx
        now = ctx.now_ms()
        for group_id, replacement in self.registry.items():
            old = ctx.groups.pop(group_id, None)
            if old is not None and old is not replacement:
                old.mark_dead(now)
            if replacement is not None:
                ctx.groups[group_id] = replacement
        for touched in self.touched.values():
            touched.note_state(now)
        for action in self.after:
            action()


class ConsumerProtocol:
    """The consumer groups of one coordinator."""

    group_type = GroupType.CONSUMER

    def __init__(self, ctx: GroupContext, classic: ClassicProtocol) -> None:
        self._ctx = ctx
        self._classic = classic
        # Whether ACLs are checked (an authorizer is configured): regular expressions then resolve only to
        # the topics the member whose heartbeat refreshes them may DESCRIBE, as Kafka resolves them.
        self.authorizing = False
        # Changes are made one at a time: each is decided, written and applied before the next begins.
        self._lock: asyncio.Lock | None = None
        # Records of consumer groups met while loading the log, by group id.
        self._loading: dict[str, ConsumerRecords] = {}

    @property
    def config(self) -> Any:
        return self._ctx.config

    def _consumer_groups(self) -> list[ConsumerGroup]:
        return [g for g in self._ctx.groups.values() if isinstance(g, ConsumerGroup)]

    # -- configs ---------------------------------------------------------------------------------------------

    def session_timeout_ms(self, group_id: str) -> int:
        value = self._ctx.group_configs(group_id).get("consumer.session.timeout.ms")
        return int(value) if value is not None else int(self.config.consumer_session_timeout_ms)

    def heartbeat_interval_ms(self, group_id: str) -> int:
        value = self._ctx.group_configs(group_id).get("consumer.heartbeat.interval.ms")
        return int(value) if value is not None else int(self.config.consumer_heartbeat_interval_ms)

    # -- timers ----------------------------------------------------------------------------------------------

    def _schedule(self, deadlines: dict[str, int], member_id: str, deadline: int) -> None:
        deadlines[member_id] = deadline
        self._ctx.schedule(deadline)

    def _schedule_session(self, group: ConsumerGroup, member: ConsumerMember) -> None:
        timeout = (
            member.classic.session_timeout_ms
            if member.classic is not None
            else self.session_timeout_ms(group.group_id)
        )
        self._schedule(group.session_deadline, member.member_id, self._ctx.now_ms() + timeout)

    def next_deadline(self) -> float:
        nxt: float = float("inf")
        for group in self._consumer_groups():
            for deadlines in (group.session_deadline, group.join_deadline, group.sync_deadline):
                if deadlines:
                    nxt = min(nxt, min(deadlines.values()))
            for deadline, _ in group.rebalance_deadline.values():
                nxt = min(nxt, deadline)
        return nxt

    def expire(self, now: int) -> None:
        """Fence the members whose session, rebalance, join or sync time ran out."""
        for group in self._consumer_groups():
            if self._ctx.groups.get(group.group_id) is not group:
                continue
            reasons: dict[str, str] = {}
            for member_id, deadline in group.session_deadline.items():
                if deadline <= now:
                    reasons[member_id] = "its session expired"
            for member_id, (deadline, epoch) in group.rebalance_deadline.items():
                member = group.members.get(member_id)
                if deadline <= now and member is not None and member.member_epoch == epoch:
                    reasons.setdefault(
                        member_id, f"it did not revoke its partitions of epoch {epoch} in time"
                    )
            for member_id, deadline in group.join_deadline.items():
                if deadline <= now:
                    reasons.setdefault(
                        member_id, "the classic member did not rejoin within the rebalance timeout"
                    )
            for member_id, deadline in group.sync_deadline.items():
                if deadline <= now:
                    reasons.setdefault(
                        member_id, "the classic member did not sync within the rebalance timeout"
                    )
            # Timers of members gone or of an epoch left behind.
            for deadlines in (group.session_deadline, group.join_deadline, group.sync_deadline):
                for mid in [m for m, d in deadlines.items() if d <= now or m not in group.members]:
                    deadlines.pop(mid, None)
            for mid in [m for m, (d, _) in group.rebalance_deadline.items() if d <= now]:
                group.rebalance_deadline.pop(mid, None)
            fenced = [group.members[m] for m in reasons if m in group.members]
            if not fenced:
                continue
            for m in fenced:
                log.info(
                    "member %s fenced from consumer group %s because %s",
                    m.member_id,
                    group.group_id,
                    reasons[m.member_id],
                )
            if self._ctx.writes_later:
                ids = [m.member_id for m in fenced]
                self._ctx.spawn(self._fence_later(group, ids), f"fence members of group {group.group_id}")
                continue
            op = _Operation(self)
            try:
                self._fence(op, group, fenced)
                op.commit()
            except GroupError as exc:
                log.warning("cannot fence members of group %s: %s", group.group_id, exc)

    def serial(self) -> asyncio.Lock:
        """Held by each change of the consumer groups from its decision until it is written and applied."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def _fence_later(self, group: ConsumerGroup, member_ids: list[str]) -> None:
        """Fence members whose deadlines passed, in turn with the requests' changes (the log is written
        without holding the event loop)."""
        async with self.serial():
            if self._ctx.groups.get(group.group_id) is not group:
                return
            members = [group.members[m] for m in member_ids if m in group.members]
            if not members:
                return
            op = _Operation(self)
            try:
                self._fence(op, group, members)
                await op.commit_async()
            except GroupError as exc:
                log.warning("cannot fence members of group %s: %s", group.group_id, exc)

    def stop(self) -> None:
        """Nothing waits in the consumer protocol (answers are immediate)."""

    # -- ConsumerGroupHeartbeat ------------------------------------------------------------------------------

    async def heartbeat(
        self,
        req: dict[str, Any],
        version: int,
        *,
        client_id: str,
        client_host: str,
        describable: DescribableTopics | None = None,
    ) -> Result:
        """``describable``: the topics the request's principal may DESCRIBE (None without an authorizer)."""
        try:
            async with self.serial():
                op = _Operation(self)
                result = self._heartbeat(op, req, version, client_id, client_host, describable)
                await op.commit_async()
        except GroupError as exc:
            return {
                "throttle_time_ms": 0,
                "error_code": int(exc.code),
                "error_message": exc.message,
                "member_id": None,
                "member_epoch": 0,
                "heartbeat_interval_ms": 0,
                "assignment": None,
            }
        return {"throttle_time_ms": 0, "error_code": 0, "error_message": None, **result}

    def _validate(self, req: dict[str, Any], version: int) -> None:
        def blank(value: str | None) -> bool:
            return value is not None and not value.strip()

        epoch = int(req.get("member_epoch", 0))
        member_id = req.get("member_id") or ""
        if (
            version >= CLIENT_GENERATED_MEMBER_ID_VERSION or epoch > 0 or epoch == LEAVE_GROUP_MEMBER_EPOCH
        ) and (not member_id.strip()):
            raise GroupError(ErrorCode.INVALID_REQUEST, "MemberId can't be empty.")
        if not (req.get("group_id") or "").strip():
            raise GroupError(ErrorCode.INVALID_REQUEST, "GroupId can't be empty.")
        if blank(req.get("instance_id")):
            raise GroupError(ErrorCode.INVALID_REQUEST, "InstanceId can't be empty.")
        if blank(req.get("rack_id")):
            raise GroupError(ErrorCode.INVALID_REQUEST, "RackId can't be empty.")
        if epoch == 0:
            if int(req.get("rebalance_timeout_ms", -1)) == -1:
                raise GroupError(
                    ErrorCode.INVALID_REQUEST, "RebalanceTimeoutMs must be provided in first request."
                )
            owned = req.get("topic_partitions")
            if owned is None or owned:
                raise GroupError(
                    ErrorCode.INVALID_REQUEST, "TopicPartitions must be empty when (re-)joining."
                )
            if not req.get("subscribed_topic_names") and not req.get("subscribed_topic_regex"):
                raise GroupError(
                    ErrorCode.INVALID_REQUEST,
                    "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
                )
        elif epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH:
            if req.get("instance_id") is None:
                raise GroupError(ErrorCode.INVALID_REQUEST, "InstanceId can't be null.")
        elif epoch < LEAVE_GROUP_STATIC_MEMBER_EPOCH:
            raise GroupError(ErrorCode.INVALID_REQUEST, "MemberEpoch is invalid.")
        assignor = req.get("server_assignor")
        if assignor is not None and assignor not in self.config.consumer_assignors:
            raise GroupError(
                ErrorCode.UNSUPPORTED_ASSIGNOR,
                f"ServerAssignor {assignor} is not supported. Supported assignors: "
                f"{', '.join(self.config.consumer_assignors)}.",
            )

    def _heartbeat(
        self,
        op: _Operation,
        req: dict[str, Any],
        version: int,
        client_id: str,
        client_host: str,
        describable: DescribableTopics | None = None,
    ) -> Result:
        self._validate(req, version)
        group_id: str = req["group_id"]
        member_id: str = req.get("member_id") or ""
        epoch = int(req.get("member_epoch", 0))
        instance_id: str | None = req.get("instance_id")
        if epoch in (LEAVE_GROUP_MEMBER_EPOCH, LEAVE_GROUP_STATIC_MEMBER_EPOCH):
            return self._leave(op, group_id, member_id, instance_id, epoch)
        topics = _Topics(self._ctx.topics())
        joining = epoch == 0
        group = self._consumer_group(op, group_id, create=joining, topics=topics)
        if len(group.members) >= self.config.consumer_max_size and (
            not member_id or member_id not in group.members
        ):
            raise GroupError(
                ErrorCode.GROUP_MAX_SIZE_REACHED,
                "The consumer group has reached its maximum capacity of "
                f"{self.config.consumer_max_size} members.",
            )
        if not member_id:
            member_id = str(uuid.uuid4())
        owned = self._owned(req.get("topic_partitions"))
        if instance_id is None:
            member = self._dynamic_member(group, member_id, epoch, owned, create=joining, classic=False)
        else:
            member = self._static_member(
                op, group, member_id, epoch, instance_id, owned, create=joining, classic=False
            )
        names = req.get("subscribed_topic_names")
        regex_value = req.get("subscribed_topic_regex")
        rebalance_timeout = int(req.get("rebalance_timeout_ms", -1))
        updated = dataclasses.replace(
            member,
            instance_id=instance_id if instance_id is not None else member.instance_id,
            rack_id=req.get("rack_id") if req.get("rack_id") is not None else member.rack_id,
            rebalance_timeout_ms=rebalance_timeout
            if rebalance_timeout != -1
            else member.rebalance_timeout_ms,
            server_assignor=req.get("server_assignor") or member.server_assignor,
            subscribed_topic_names=tuple(names) if names is not None else member.subscribed_topic_names,
            subscribed_topic_regex=regex_value if regex_value is not None else member.subscribed_topic_regex,
            client_id=client_id,
            client_host=client_host,
            classic=None,
        )
        self._update_and_reconcile(op, group, member, updated, owned, topics, describable)
        new = group.members[member_id]
        self._schedule_session(group, new)
        response: Result = {
            "member_id": new.member_id,
            "member_epoch": new.member_epoch,
            "heartbeat_interval_ms": self.heartbeat_interval_ms(group_id),
            "assignment": None,
        }
        full = (
            rebalance_timeout != -1 and (names is not None or regex_value is not None) and owned is not None
        )
        if joining or full or dict(member.assigned) != dict(new.assigned):
            response["assignment"] = {
                "topic_partitions": [
                    {"topic_id": t, "partitions": sorted(ps)}
                    for t, ps in sorted(new.assigned.items(), key=str)
                ]
            }
        return response

    @staticmethod
    def _owned(raw: list[dict[str, Any]] | None) -> dict[TopicId, frozenset[int]] | None:
        if raw is None:
            return None
        out: dict[TopicId, frozenset[int]] = {}
        for t in raw:
            tid = t.get("topic_id")
            if isinstance(tid, uuid.UUID):
                out[tid] = out.get(tid, frozenset()) | frozenset(int(p) for p in t.get("partitions") or [])
        return out

    def _consumer_group(
        self, op: _Operation, group_id: str, *, create: bool, topics: _Topics
    ) -> ConsumerGroup:
        existing = op.registry.get(group_id, self._ctx.groups.get(group_id))
        if existing is None:
            if not create:
                raise GroupError(ErrorCode.GROUP_ID_NOT_FOUND, f"Consumer group {group_id} not found.")
            group = ConsumerGroup(group_id, self._ctx.now_ms())
            op.registry[group_id] = group
            return op.touch(group)
        if isinstance(existing, ConsumerGroup):
            return op.touch(existing)
        if create and isinstance(existing, ClassicGroup):
            if existing.is_empty:
                log.info("converting the empty classic group %s to a consumer group", group_id)
                op.entries.extend(existing.tombstones())
                group = ConsumerGroup(group_id, self._ctx.now_ms())
                op.registry[group_id] = group
                return op.touch(group)
            return self._upgrade(op, existing, topics)
        raise GroupError(ErrorCode.GROUP_ID_NOT_FOUND, f"Group {group_id} is not a consumer group.")

    def _dynamic_member(
        self,
        group: ConsumerGroup,
        member_id: str,
        epoch: int,
        owned: Partitions | None,
        *,
        create: bool,
        classic: bool,
    ) -> ConsumerMember:
        member = group.members.get(member_id)
        if member is None:
            if not create:
                raise GroupError(
                    ErrorCode.UNKNOWN_MEMBER_ID,
                    f"Member {member_id} is not a member of group {group.group_id}.",
                )
            log.info(
                "member %s joins consumer group %s with the %s protocol",
                member_id,
                group.group_id,
                "classic" if classic else "consumer",
            )
            return ConsumerMember(member_id)
        if not classic:
            self._check_epoch(member, epoch, owned)
        return member

    def _static_member(
        self,
        op: _Operation,
        group: ConsumerGroup,
        member_id: str,
        epoch: int,
        instance_id: str,
        owned: Partitions | None,
        *,
        create: bool,
        classic: bool,
    ) -> ConsumerMember:
        existing = group.static_member(instance_id)
        if create:
            if existing is None:
                log.info(
                    "static member %s (instance %s) joins consumer group %s",
                    member_id,
                    instance_id,
                    group.group_id,
                )
                return group.members.get(member_id) or ConsumerMember(member_id)
            if existing.member_id == member_id:
                return existing
            if (
                not classic
                and not existing.uses_classic_protocol
                and existing.member_epoch != LEAVE_GROUP_STATIC_MEMBER_EPOCH
            ):
                raise GroupError(
                    ErrorCode.UNRELEASED_INSTANCE_ID,
                    f"Static member {member_id} with instance id {instance_id} cannot join the group because "
                    f"the instance id is owned by {existing.member_id} member.",
                )
            # The new incarnation takes the place (and the partitions) of the previous one.
            replacement = dataclasses.replace(
                existing, member_id=member_id, member_epoch=0, previous_member_epoch=0
            )
            target = group.target.get(existing.member_id, {})
            group.remove_member(existing.member_id)
            group.update_member(replacement)
            group.set_target(member_id, target)
            log.info(
                "static member %s of consumer group %s rejoins as %s (was %s)",
                instance_id,
                group.group_id,
                member_id,
                existing.member_id,
            )
            return replacement
        if existing is None:
            raise GroupError(ErrorCode.UNKNOWN_MEMBER_ID, f"Instance id {instance_id} is unknown.")
        if existing.member_id != member_id:
            raise GroupError(
                ErrorCode.FENCED_INSTANCE_ID,
                f"Static member {member_id} with instance id {instance_id} was fenced by member "
                f"{existing.member_id}.",
            )
        if not classic:
            self._check_epoch(existing, epoch, owned)
        return existing

    @staticmethod
    def _check_epoch(member: ConsumerMember, epoch: int, owned: Partitions | None) -> None:
        if epoch == 0:
            return
        if epoch > member.member_epoch:
            raise GroupError(
                ErrorCode.FENCED_MEMBER_EPOCH,
                f"The consumer group member has a greater member epoch ({epoch}) than the one known by the "
                f"group coordinator ({member.member_epoch}). The member must abandon all its partitions and "
                "rejoin.",
            )
        if epoch < member.member_epoch:
            subset = owned is not None and all(
                ps <= member.assigned.get(t, frozenset()) for t, ps in owned.items() if ps
            )
            if epoch != member.previous_member_epoch or not subset:
                raise GroupError(
                    ErrorCode.FENCED_MEMBER_EPOCH,
                    f"The consumer group member has a smaller member epoch ({epoch}) than the one known by "
                    f"the group coordinator ({member.member_epoch}). The member must abandon all its "
                    "partitions and rejoin.",
                )

    def _update_and_reconcile(
        self,
        op: _Operation,
        group: ConsumerGroup,
        member: ConsumerMember,
        updated: ConsumerMember,
        owned: Partitions | None,
        topics: _Topics,
        describable: DescribableTopics | None = None,
    ) -> None:
        """Steps 1-3 of a heartbeat (or a classic JoinGroup): update the member, bump the group epoch and
        compute a new target assignment when needed, reconcile the member. ``describable``: the topics the
        request's principal may DESCRIBE, when an authorizer is configured."""
        names_changed = updated.subscribed_topic_names != member.subscribed_topic_names
        regex_changed = updated.subscribed_topic_regex != member.subscribed_topic_regex
        if regex_changed and updated.subscribed_topic_regex:
            try:
                regex.compile_re2(updated.subscribed_topic_regex)
            except regex.RegexError as exc:
                raise GroupError(ErrorCode.INVALID_REGULAR_EXPRESSION, str(exc)) from None
        group.update_member(updated)
        if self.authorizing and describable is not None:
            regexes_changed = self._refresh_regexes(group, updated.member_id, topics, describable)
        else:
            regexes_changed = self._resolve_regexes(group, topics)
        subscribed = group.subscribed_topic_names()
        metadata_hash = _metadata_hash(subscribed, topics)
        bump = (
            group.group_epoch == 0
            or names_changed
            or regex_changed
            or regexes_changed
            or metadata_hash != group.metadata_hash
        )
        if bump:
            group.set_group_epoch(group.group_epoch + 1, metadata_hash)
            log.info("consumer group %s is at epoch %d", group.group_id, group.group_epoch)
        if group.group_epoch > group.assignment_epoch:
            self._compute_target(group, topics)
        current = group.members[updated.member_id]
        reconciled = reconcile(
            current,
            target_epoch=group.assignment_epoch,
            target=group.target.get(updated.member_id, {}),
            subscribed_topic_ids=topics.ids(current.subscribed_topics(group.resolved_regexes)),
            owned=owned,
            current_partition_epoch=group.current_partition_epoch,
            subscription_changed=names_changed or regex_changed,
        )
        if reconciled is not current:
            group.update_member(reconciled)
            if reconciled.classic is None:
                if reconciled.state is MemberState.UNREVOKED_PARTITIONS:
                    deadline = self._ctx.now_ms() + max(reconciled.rebalance_timeout_ms, 0)
                    group.rebalance_deadline[reconciled.member_id] = (deadline, reconciled.member_epoch)
                    self._ctx.schedule(deadline)
                else:
                    group.rebalance_deadline.pop(reconciled.member_id, None)

    def _resolve_regexes(self, group: ConsumerGroup, topics: _Topics) -> bool:
        """Match the group's regular expressions against the catalogue; whether any result changed.

        With an authorizer, a resolution needs the DESCRIBE permissions of a heartbeat's member
        (``_refresh_regexes``): outside a heartbeat the resolutions are kept as they are, only those of the
        patterns no member subscribes to any more are dropped, as Kafka does."""
        wanted = group.subscribed_regexes()
        changed = False
        for pattern in list(group.resolved_regexes):
            if pattern not in wanted:
                del group.resolved_regexes[pattern]
        if self.authorizing:
            return False
        for pattern, resolved in self._match_regexes(group, wanted, topics).items():
            if group.resolved_regexes.get(pattern) != resolved:
                group.resolved_regexes[pattern] = resolved
                changed = True
        return changed

    def _match_regexes(
        self, group: ConsumerGroup, patterns: set[str], topics: _Topics
    ) -> dict[str, frozenset[str]]:
        """The topics (catalogue names) each pattern matches by the whole name the members know."""
        compiled = []
        for pattern in patterns:
            try:
                compiled.append((pattern, regex.compile_re2(pattern)))
            except regex.RegexError:
                continue
        matches: dict[str, set[str]] = {pattern: set() for pattern in patterns}
        if compiled:
            for t in topics.by_name:
                # Internal topics are never matched, as Kafka does; names are those the members know.
                visible = self._ctx.visible_topic(group.group_id, t)
                if visible is None:
                    continue
                for pattern, c in compiled:
                    if c.fullmatch(visible):
                        matches[pattern].add(t)
        return {pattern: frozenset(ts) for pattern, ts in matches.items()}

    def _refresh_regexes(
        self, group: ConsumerGroup, member_id: str, topics: _Topics, describable: DescribableTopics
    ) -> bool:
        """Kafka's refresh of a group's regular expressions on a heartbeat when ACLs are checked; whether
        any resolution changed.

        Every pattern of the group is resolved again, to the matching topics the heartbeat's principal may
        DESCRIBE (from its host), when a pattern has no resolution yet, the catalogue has topics it did not
        have at the last refresh, or the last refresh is older than group.consumer.regex.refresh.interval.ms;
        never twice within ten seconds. The result stays with the group until the next refresh, so a topic
        the refreshing principal may not describe is assigned to no member through a pattern."""
        self._resolve_regexes(group, topics)  # drops the patterns no member subscribes to any more
        wanted = group.subscribed_regexes()
        if not wanted:
            return False
        now = self._ctx.now_ms()
        last = group.regex_refreshed_ms if group.resolved_regexes else 0
        if last and now <= last + REGEX_BATCH_REFRESH_MIN_INTERVAL_MS:
            return False
        catalogue = frozenset(topics.by_name)
        if not (
            any(p not in group.resolved_regexes for p in wanted)
            or not catalogue <= group.regex_catalogue
            or now > last + self.config.consumer_regex_refresh_interval_ms
        ):
            return False
        matched = self._match_regexes(group, wanted, topics)
        # Each matching topic is authorized once, by the name the member knows it by.
        by_visible: dict[str, str] = {}
        for names in matched.values():
            for t in names:
                visible = self._ctx.visible_topic(group.group_id, t)
                if visible is not None:
                    by_visible[visible] = t
        allowed = {by_visible[v] for v in describable(sorted(by_visible)) if v in by_visible}
        changed = False
        for pattern, names in matched.items():
            resolved = names & allowed
            if pattern in group.regexes_to_reload and pattern not in group.resolved_regexes:
                # The first resolution after a restart gives the group back what it had (an epoch bump, if
                # needed, comes from the changed subscription metadata).
                group.resolved_regexes[pattern] = resolved
            elif group.resolved_regexes.get(pattern) != resolved:
                group.resolved_regexes[pattern] = resolved
                changed = True
        group.regexes_to_reload = frozenset()
        group.regex_refreshed_ms = now
        group.regex_catalogue = catalogue
        log.info(
            "consumer group %s: regular expressions %s resolved with the DESCRIBE permissions of member %s "
            "(%d of %d matching topics)",
            group.group_id,
            sorted(wanted),
            member_id,
            len(allowed),
            len(by_visible),
        )
        return changed

    def _compute_target(self, group: ConsumerGroup, topics: _Topics) -> None:
        name = group.preferred_assignor() or self.config.default_assignor
        assignor = ASSIGNORS[name]
        specs = [
            MemberSpec(
                m.member_id,
                m.instance_id,
                topics.ids(m.subscribed_topics(group.resolved_regexes)),
                group.target.get(m.member_id, {}),
            )
            for m in group.members.values()
        ]
        partitions: dict[TopicId, int] = {}
        for spec in specs:
            for t in spec.subscribed:
                entry = topics.by_id.get(t)
                if entry is not None:
                    partitions[t] = entry[1]
        new = assignor.assign(specs, partitions)
        for member_id in list(group.target):
            if member_id not in group.members:
                group.target.pop(member_id, None)
        for spec in specs:
            group.set_target(spec.member_id, new.get(spec.member_id, {}))
        group.set_assignment_epoch(group.group_epoch)
        log.info(
            "consumer group %s: new target assignment for epoch %d with the %s assignor",
            group.group_id,
            group.group_epoch,
            name,
        )

    # -- leaving and fencing ---------------------------------------------------------------------------------

    def _existing_consumer_group(self, group_id: str) -> ConsumerGroup:
        group = self._ctx.groups.get(group_id)
        if group is None:
            raise GroupError(ErrorCode.GROUP_ID_NOT_FOUND, f"Group {group_id} not found.")
        if not isinstance(group, ConsumerGroup):
            raise GroupError(ErrorCode.GROUP_ID_NOT_FOUND, f"Group {group_id} is not a consumer group.")
        return group

    def _leave(
        self, op: _Operation, group_id: str, member_id: str, instance_id: str | None, epoch: int
    ) -> Result:
        group = op.touch(self._existing_consumer_group(group_id))
        response: Result = {
            "member_id": member_id,
            "member_epoch": epoch,
            "heartbeat_interval_ms": 0,
            "assignment": None,
        }
        if instance_id is None:
            member = group.members.get(member_id)
            if member is None:
                raise GroupError(
                    ErrorCode.UNKNOWN_MEMBER_ID, f"Member {member_id} is not a member of group {group_id}."
                )
            log.info("member %s left consumer group %s", member_id, group_id)
            self._fence(op, group, [member])
            return response
        static = group.static_member(instance_id)
        if static is None:
            raise GroupError(ErrorCode.UNKNOWN_MEMBER_ID, f"Instance id {instance_id} is unknown.")
        if static.member_id != member_id:
            raise GroupError(
                ErrorCode.FENCED_INSTANCE_ID,
                f"Static member {member_id} with instance id {instance_id} was fenced by member "
                f"{static.member_id}.",
            )
        if epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH:
            # Gone for now, back within its session timeout: it keeps its partitions meanwhile.
            log.info(
                "static member %s (instance %s) temporarily left consumer group %s",
                member_id,
                instance_id,
                group_id,
            )
            group.update_member(
                dataclasses.replace(
                    static, member_epoch=LEAVE_GROUP_STATIC_MEMBER_EPOCH, pending_revocation={}
                )
            )
            group.rebalance_deadline.pop(member_id, None)
            response["member_id"] = static.member_id
            return response
        log.info("static member %s (instance %s) left consumer group %s", member_id, instance_id, group_id)
        self._fence(op, group, [static])
        return response

    def _fence(self, op: _Operation, group: ConsumerGroup, members: list[ConsumerMember]) -> None:
        """Remove members (bumping the group epoch), or turn the group back into a classic group when only
        classic members remain and the migration policy allows it."""
        if not members:
            return
        op.touch(group)
        leaving = {m.member_id for m in members}
        remaining = len(group.members) - len(leaving)
        if (
            group.all_classic_except(leaving)
            and remaining > 0
            and self.config.downgrade_enabled
            and remaining <= self.config.max_size
        ):
            self._downgrade(op, group, leaving=leaving, joining=None)
            return
        for m in members:
            group.remove_member(m.member_id)
        topics = _Topics(self._ctx.topics())
        self._resolve_regexes(group, topics)
        group.set_group_epoch(group.group_epoch + 1, _metadata_hash(group.subscribed_topic_names(), topics))
        log.info("consumer group %s is at epoch %d", group.group_id, group.group_epoch)

    # -- conversions between classic and consumer groups ---------------------------------------------------

    def _upgrade(self, op: _Operation, classic: ClassicGroup, topics: _Topics) -> ConsumerGroup:
        """A consumer group holding the members of a live classic group (a consumer-protocol member joins)."""
        gid = classic.group_id
        if not self.config.upgrade_enabled:
            raise GroupError(
                ErrorCode.GROUP_ID_NOT_FOUND,
                f"Cannot upgrade classic group {gid} to consumer group because online upgrade is disabled.",
            )
        if classic.protocol_type != PROTOCOL_TYPE:
            raise GroupError(
                ErrorCode.GROUP_ID_NOT_FOUND,
                f"Cannot upgrade classic group {gid} to consumer group because the group does not use the "
                "consumer embedded protocol.",
            )
        if len(classic.members) > self.config.consumer_max_size:
            raise GroupError(
                ErrorCode.GROUP_ID_NOT_FOUND,
                f"Cannot upgrade classic group {gid} to consumer group because the group size exceeds the "
                "consumer group maximum size.",
            )
        group = ConsumerGroup(gid, self._ctx.now_ms())
        generation = classic.generation_id
        group.group_epoch = generation
        group.assignment_epoch = generation
        try:
            for cm in classic.members.values():
                protocol = classic.protocol_name or (cm.protocols[0][0] if cm.protocols else "")
                subscription = embedded.parse_subscription(cm.metadata_for(protocol))
                assignment = embedded.parse_assignment(cm.assignment)
                assigned = topics.from_names(assignment.partitions)
                member = ConsumerMember(
                    member_id=cm.member_id,
                    instance_id=cm.group_instance_id,
                    rack_id=subscription.rack_id,
                    client_id=cm.client_id,
                    client_host=cm.client_host,
                    subscribed_topic_names=subscription.topics,
                    rebalance_timeout_ms=cm.rebalance_timeout_ms,
                    member_epoch=generation,
                    previous_member_epoch=generation,
                    state=MemberState.STABLE,
                    assigned=assigned,
                    classic=ClassicMetadata(cm.session_timeout_ms, tuple(cm.protocols)),
                )
                group.update_member(member)
                group.set_target(member.member_id, assigned)
        except (embedded.EmbeddedProtocolError, KeyError) as exc:
            log.warning("cannot upgrade classic group %s: %s", gid, exc)
            raise GroupError(
                ErrorCode.GROUP_ID_NOT_FOUND,
                f"Cannot upgrade classic group {gid} to consumer group because the embedded consumer "
                "protocol is malformed.",
            ) from None
        self._resolve_regexes(group, topics)
        group.metadata_hash = _metadata_hash(group.subscribed_topic_names(), topics)
        group.mark_all_dirty()
        op.entries.extend(classic.tombstones())
        op.registry[gid] = group
        op.touch(group)
        for m in group.members.values():
            self._schedule_session(group, m)

        def answer_waiting() -> None:
            # Members of the classic group waiting in a rebalance rejoin the consumer group.
            for cm in classic.members.values():
                ClassicProtocol._invoke_join(cm, join_error(cm.member_id, ErrorCode.REBALANCE_IN_PROGRESS))
                ClassicProtocol._invoke_sync(cm, sync_error(ErrorCode.REBALANCE_IN_PROGRESS))

        op.after.append(answer_waiting)
        log.info("converting classic group %s with %d members to a consumer group", gid, len(group.members))
        return group

    def _downgrade(
        self,
        op: _Operation,
        group: ConsumerGroup,
        *,
        leaving: set[str],
        joining: ConsumerMember | None,
        replaced: str | None = None,
        subscription_changed: bool = False,
    ) -> None:
        """Turn a consumer group whose remaining members all use the classic protocol into a classic group."""
        gid = group.group_id
        topics = _Topics(self._ctx.topics())
        now = self._ctx.now_ms()
        classic = ClassicGroup(gid, state=GroupState.STABLE, state_timestamp_ms=now)
        classic.generation_id = group.group_epoch
        classic.protocol_type = PROTOCOL_TYPE
        sources: dict[str, str] = {}
        for mid, m in group.members.items():
            if mid in leaving or (joining is not None and mid == joining.member_id) or m.classic is None:
                continue
            sources[mid] = mid
            classic.add(_classic_member(m))
        if joining is not None and joining.classic is not None:
            # The replacement of a static member took over its target assignment.
            sources[joining.member_id] = (
                joining.member_id if joining.member_id in group.target else replaced or ""
            )
            classic.add(_classic_member(joining))
        if not classic.members:
            return
        classic.protocol_name = classic.select_protocol()
        classic.subscribed_topics = classic.compute_subscribed_topics()
        for mid, cm in classic.members.items():
            version = embedded.subscription_version(cm.metadata_for(classic.protocol_name))
            cm.assignment = embedded.serialize_assignment(
                topics.to_names(group.target.get(sources[mid], {})), version
            )
        # Whatever was changed in the consumer group so far, then every record of it, goes.
        op.entries.extend(group.dirty_entries())
        op.entries.extend(group.tombstones())
        value = classic.record()
        classic.persisted = value
        op.entries.append((classic.live_entries()[0][0], value))
        op.registry[gid] = classic
        op.touch(group)
        # The consumer group's own changes must not be written: it is being replaced.
        op.touched.pop(id(group), None)

        def start() -> None:
            for cm in classic.members.values():
                self._classic.reschedule_heartbeat(cm)
            if joining is None or subscription_changed:
                self._classic.prepare_rebalance(classic)

        op.after.append(start)
        log.info("converting consumer group %s to a classic group with %d members", gid, len(classic.members))

    # -- classic members inside consumer groups --------------------------------------------------------------

    async def classic_join(
        self, group: ConsumerGroup, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:
        """JoinGroup from a classic member of a (non-empty) consumer group: answered at once."""
        try:
            async with self.serial():
                op = _Operation(self)
                response = self._classic_join(op, group, req, version, client_id, client_host)
                if response.get("error_code", 0) == 0:
                    await op.commit_async()
        except GroupError as exc:
            response = join_error(req.get("member_id") or "", exc.code)
        response["throttle_time_ms"] = 0
        if version < 7 and response.get("protocol_name") is None:
            response["protocol_name"] = ""
        return response

    def _classic_join(
        self,
        op: _Operation,
        group: ConsumerGroup,
        req: dict[str, Any],
        version: int,
        client_id: str,
        client_host: str,
    ) -> Result:
        op.touch(group)
        gid = group.group_id
        instance_id: str | None = req.get("group_instance_id")
        session_timeout = int(req.get("session_timeout_ms", 0))
        rebalance_timeout = int(req.get("rebalance_timeout_ms", -1))
        protocols = tuple((p["name"], bytes(p.get("metadata") or b"")) for p in req.get("protocols") or [])
        cfg = self.config
        if not cfg.min_session_timeout_ms <= session_timeout <= cfg.max_session_timeout_ms:
            return join_error(req.get("member_id") or "", ErrorCode.INVALID_SESSION_TIMEOUT)
        member_id: str = req.get("member_id") or ""
        unknown = member_id == ""
        if unknown:
            member_id = str(uuid.uuid4())
        if len(group.members) >= cfg.consumer_max_size and member_id not in group.members:
            raise GroupError(ErrorCode.GROUP_MAX_SIZE_REACHED)
        if not group.supports_classic_protocols(req.get("protocol_type") or "", {n for n, _ in protocols}):
            raise GroupError(ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
        if unknown and version >= 4 and instance_id is None:
            # A dynamic member without an id: it gets one and joins again with it.
            log.info("dynamic member joining consumer group %s gets member id %s", gid, member_id)
            return join_error(member_id, ErrorCode.MEMBER_ID_REQUIRED)
        topics = _Topics(self._ctx.topics())
        existing_static = group.static_member(instance_id)
        downgrade = (
            existing_static is not None
            and existing_static.member_id != member_id
            and group.all_classic_except({existing_static.member_id})
            and cfg.downgrade_enabled
            and len(group.members) <= cfg.max_size
        )
        if instance_id is None:
            member = self._dynamic_member(group, member_id, -1, None, create=True, classic=True)
        else:
            member = self._static_member(
                op, group, member_id, -1, instance_id, None, create=unknown, classic=True
            )
        try:
            subscription = embedded.parse_subscription(protocols[0][1])
        except (embedded.EmbeddedProtocolError, IndexError):
            raise GroupError(ErrorCode.INCONSISTENT_GROUP_PROTOCOL) from None
        updated = dataclasses.replace(
            member,
            instance_id=instance_id if instance_id is not None else member.instance_id,
            rack_id=subscription.rack_id if subscription.rack_id is not None else member.rack_id,
            rebalance_timeout_ms=rebalance_timeout
            if rebalance_timeout != -1
            else member.rebalance_timeout_ms,
            subscribed_topic_names=subscription.topics,
            subscribed_topic_regex="",
            client_id=client_id,
            client_host=client_host,
            classic=ClassicMetadata(session_timeout, protocols),
        )
        owned = topics.from_names(subscription.owned_partitions)
        if downgrade:
            assert existing_static is not None
            changed = updated.subscribed_topic_names != existing_static.subscribed_topic_names
            self._downgrade(
                op,
                group,
                leaving={existing_static.member_id},
                joining=updated,
                replaced=existing_static.member_id,
                subscription_changed=changed,
            )
            return {
                "error_code": 0,
                "generation_id": group.group_epoch,
                "protocol_type": PROTOCOL_TYPE,
                "protocol_name": protocols[0][0],
                "leader": "",
                "skip_assignment": False,
                "member_id": member_id,
                "members": [],
            }
        self._update_and_reconcile(op, group, member, updated, owned, topics)
        new = group.members[member_id]
        now = self._ctx.now_ms()

        def timers() -> None:
            group.join_deadline.pop(member_id, None)
            self._schedule(group.session_deadline, member_id, now + session_timeout)
            self._schedule(group.sync_deadline, member_id, now + max(new.rebalance_timeout_ms, 0))

        op.after.append(timers)
        return {
            "error_code": 0,
            "generation_id": new.member_epoch,
            "protocol_type": PROTOCOL_TYPE,
            "protocol_name": new.classic.protocol_name if new.classic is not None else protocols[0][0],
            "leader": "",
            "skip_assignment": False,
            "member_id": member_id,
            "members": [],
        }

    def _classic_member(
        self, group: ConsumerGroup, member_id: str, instance_id: str | None
    ) -> ConsumerMember:
        if instance_id is None:
            member = group.members.get(member_id)
            if member is None:
                raise GroupError(ErrorCode.UNKNOWN_MEMBER_ID)
        else:
            member = group.static_member(instance_id)
            if member is None:
                raise GroupError(ErrorCode.UNKNOWN_MEMBER_ID)
            if member.member_id != member_id:
                raise GroupError(ErrorCode.FENCED_INSTANCE_ID)
        if member.classic is None:
            raise GroupError(ErrorCode.UNKNOWN_MEMBER_ID)
        return member

    def _rebalance_needed(self, group: ConsumerGroup, member: ConsumerMember) -> bool:
        if group.group_epoch > member.member_epoch and member.state is not MemberState.UNREVOKED_PARTITIONS:
            if member.member_id not in group.join_deadline:
                self._schedule(
                    group.join_deadline,
                    member.member_id,
                    self._ctx.now_ms() + max(member.rebalance_timeout_ms, 0),
                )
            return True
        return False

    async def classic_sync(self, group: ConsumerGroup, req: dict[str, Any], version: int) -> Result:
        try:
            if not group.members:
                raise GroupError(ErrorCode.UNKNOWN_MEMBER_ID)
            member = self._classic_member(group, req.get("member_id") or "", req.get("group_instance_id"))
            assert member.classic is not None
            if int(req.get("generation_id", -1)) != member.member_epoch:
                raise GroupError(ErrorCode.ILLEGAL_GENERATION)
            protocol_type, protocol_name = req.get("protocol_type"), req.get("protocol_name")
            if (protocol_type is not None and protocol_type != PROTOCOL_TYPE) or (
                protocol_name is not None and protocol_name != member.classic.protocol_name
            ):
                raise GroupError(ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
            if self._rebalance_needed(group, member):
                raise GroupError(ErrorCode.REBALANCE_IN_PROGRESS)
        except GroupError as exc:
            return {**sync_error(exc.code), "throttle_time_ms": 0}
        group.sync_deadline.pop(member.member_id, None)
        self._schedule_session(group, member)
        topics = _Topics(self._ctx.topics())
        version_of = embedded.subscription_version(member.classic.metadata(member.classic.protocol_name))
        return {
            "throttle_time_ms": 0,
            "error_code": 0,
            "protocol_type": protocol_type,
            "protocol_name": protocol_name,
            "assignment": embedded.serialize_assignment(topics.to_names(member.assigned), version_of),
        }

    async def classic_heartbeat(self, group: ConsumerGroup, req: dict[str, Any], version: int) -> Result:
        try:
            member = self._classic_member(group, req.get("member_id") or "", req.get("group_instance_id"))
            if int(req.get("generation_id", -1)) != member.member_epoch:
                raise GroupError(ErrorCode.ILLEGAL_GENERATION)
        except GroupError as exc:
            return {"throttle_time_ms": 0, "error_code": int(exc.code)}
        self._schedule_session(group, member)
        rejoin = (
            member.member_epoch < group.group_epoch
            or member.state is MemberState.UNREVOKED_PARTITIONS
            or (
                member.state is MemberState.UNRELEASED_PARTITIONS
                and not self._waiting_on_unreleased(group, member)
            )
        )
        if rejoin:
            if member.member_id not in group.join_deadline:
                self._schedule(
                    group.join_deadline,
                    member.member_id,
                    self._ctx.now_ms() + max(member.rebalance_timeout_ms, 0),
                )
            return {"throttle_time_ms": 0, "error_code": int(ErrorCode.REBALANCE_IN_PROGRESS)}
        return {"throttle_time_ms": 0, "error_code": 0}

    @staticmethod
    def _waiting_on_unreleased(group: ConsumerGroup, member: ConsumerMember) -> bool:
        for t, ps in group.target.get(member.member_id, {}).items():
            mine = member.assigned.get(t, frozenset())
            for p in ps:
                if p not in mine and group.current_partition_epoch(t, p) != -1:
                    return True
        return False

    async def classic_leave(self, group: ConsumerGroup, identities: list[dict[str, Any]]) -> list[Result]:
        results: list[Result] = []
        leaving: list[ConsumerMember] = []
        for identity in identities:
            member_id = identity.get("member_id") or ""
            instance_id = identity.get("group_instance_id")
            answer = {"member_id": member_id, "group_instance_id": instance_id, "error_code": 0}
            member: ConsumerMember | None
            if instance_id is None:
                member = group.members.get(member_id)
                if member is None:
                    answer["error_code"] = int(ErrorCode.UNKNOWN_MEMBER_ID)
            else:
                member = group.static_member(instance_id)
                if member is None:
                    answer["error_code"] = int(ErrorCode.UNKNOWN_MEMBER_ID)
                elif member_id and member.member_id != member_id:
                    answer["error_code"] = int(ErrorCode.FENCED_INSTANCE_ID)
                    member = None
            if member is not None:
                log.info(
                    "member %s left consumer group %s (%s)",
                    member.member_id,
                    group.group_id,
                    identity.get("reason") or "not provided",
                )
                if member not in leaving:
                    leaving.append(member)
            results.append(answer)
        if leaving:
            try:
                async with self.serial():
                    op = _Operation(self)
                    self._fence(op, group, [m for m in leaving if group.members.get(m.member_id) is m])
                    await op.commit_async()
            except GroupError as exc:
                return [{**r, "error_code": int(exc.code)} if r["error_code"] == 0 else r for r in results]
        return results

    # -- ConsumerGroupDescribe -------------------------------------------------------------------------------

    def describe(self, group_ids: list[str | None], version: int) -> list[Result]:
        topics = _Topics(self._ctx.topics())
        out = []
        for gid in group_ids:
            if gid is None:
                out.append(_described_error("", ErrorCode.INVALID_GROUP_ID, None))
                continue
            group = self._ctx.groups.get(gid)
            if group is None:
                out.append(_described_error(gid, ErrorCode.GROUP_ID_NOT_FOUND, f"Group {gid} not found."))
                continue
            if not isinstance(group, ConsumerGroup):
                out.append(
                    _described_error(
                        gid, ErrorCode.GROUP_ID_NOT_FOUND, f"Group {gid} is not a consumer group."
                    )
                )
                continue
            out.append(
                {
                    "error_code": 0,
                    "error_message": None,
                    "group_id": gid,
                    "group_state": group.state_name,
                    "group_epoch": group.group_epoch,
                    "assignment_epoch": group.assignment_epoch,
                    "assignor_name": group.preferred_assignor() or self.config.default_assignor,
                    "members": [
                        {
                            "member_id": m.member_id,
                            "instance_id": m.instance_id,
                            "rack_id": m.rack_id,
                            "member_epoch": m.member_epoch,
                            "client_id": m.client_id,
                            "client_host": m.client_host,
                            "subscribed_topic_names": list(m.subscribed_topic_names),
                            "subscribed_topic_regex": m.subscribed_topic_regex or None,
                            "assignment": _described_assignment(m.assigned, topics),
                            "target_assignment": _described_assignment(
                                group.target.get(m.member_id, {}), topics
                            ),
                            "member_type": 0 if m.uses_classic_protocol else 1,
                        }
                        for m in group.members.values()
                    ],
                    "authorized_operations": AUTHORIZED_OPERATIONS_OMITTED,
                }
            )
        return out

    # -- loading ---------------------------------------------------------------------------------------------

    def replay(self, key: logformat.Key, value: bytes | None) -> bool:
        if not isinstance(
            key,
            logformat.ConsumerGroupKey
            | logformat.ConsumerMemberKey
            | logformat.TargetAssignmentMetadataKey
            | logformat.TargetAssignmentMemberKey
            | logformat.CurrentAssignmentKey,
        ):
            return False
        self._loading.setdefault(key.group_id, ConsumerRecords()).replay(key, value)
        return True

    def restored(self, group_id: str, now_ms: int) -> ConsumerGroup | None:
        """The group as its records left it: its members' sessions start now, regexes are resolved again."""
        records = self._loading.pop(group_id, None)
        if records is None or not records.exists:
            return None
        group = records.build(group_id, now_ms)
        self._resolve_regexes(group, _Topics(self._ctx.topics()))
        if self.authorizing:
            # Resolved again by the first heartbeat, with its member's permissions.
            group.regexes_to_reload = frozenset(group.subscribed_regexes())
        group.discard_dirty()
        for m in group.members.values():
            timeout = (
                m.classic.session_timeout_ms if m.classic is not None else self.session_timeout_ms(group_id)
            )
            self._schedule(group.session_deadline, m.member_id, now_ms + timeout)
            if m.classic is None and m.state is MemberState.UNREVOKED_PARTITIONS:
                group.rebalance_deadline[m.member_id] = (
                    now_ms + max(m.rebalance_timeout_ms, 0),
                    m.member_epoch,
                )
        group.note_state(now_ms)
        return group


def _classic_member(m: ConsumerMember) -> ClassicMember:
    assert m.classic is not None
    return ClassicMember(
        member_id=m.member_id,
        group_instance_id=m.instance_id,
        client_id=m.client_id,
        client_host=m.client_host,
        rebalance_timeout_ms=m.rebalance_timeout_ms,
        session_timeout_ms=m.classic.session_timeout_ms,
        protocol_type=PROTOCOL_TYPE,
        protocols=list(m.classic.protocols),
    )


def _described_assignment(partitions: Partitions, topics: _Topics) -> Result:
    out = []
    for t, ps in sorted(partitions.items(), key=lambda kv: str(kv[0])):
        name = topics.name(t)
        if name is not None:
            out.append({"topic_id": t, "topic_name": name, "partitions": sorted(ps)})
    return {"topic_partitions": out}


def _described_error(group_id: str, code: ErrorCode, message: str | None) -> Result:
    return {
        "error_code": int(code),
        "error_message": message,
        "group_id": group_id,
        "group_state": "",
        "group_epoch": 0,
        "assignment_epoch": 0,
        "assignor_name": "",
        "members": [],
        "authorized_operations": AUTHORIZED_OPERATIONS_OMITTED,
    }
