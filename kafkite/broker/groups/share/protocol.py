"""The share group protocol (KIP-932): ShareGroupHeartbeat and ShareGroupDescribe, as Kafka 4.2's group
coordinator runs them.

A heartbeat creates or updates the member (a new subscription, or a change in the subscribed topics'
metadata, bumps the group epoch); when the group epoch is ahead of the assignment's, the ``simple`` assignor
computes a new target assignment; the member then gets its part of it at once (members of a share group share
partitions, so nothing waits for a revocation). Every change is written to the group log (only what changed)
before the answer goes out; when the log refuses it the group is restored and the member told
COORDINATOR_NOT_AVAILABLE.

The share-partitions themselves (start offsets, in-flight records, locks, delivery counts) are the business of
the share-partition store; the protocol tells it (``SharePartitionsHook``) which partitions a group was
assigned (to initialize their start offsets), which members left (to release what they held) and which
groups were deleted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from kafkite.protocol.errors import ErrorCode

from .. import logformat
from ..context import GroupContext, TopicInfo
from ..group import GroupType
from ..log import store_error
from . import assignor
from .state import (
    ASSIGNOR,
    LEAVE_GROUP_MEMBER_EPOCH,
    Partitions,
    ShareGroup,
    ShareMember,
    ShareRecords,
    TopicId,
    partitions_of,
)

log = logging.getLogger("kafkite.groups")

Result = dict[str, Any]
AUTHORIZED_OPERATIONS_OMITTED = -2147483648


class SharePartitionsHook(Protocol):
    """What the share protocol tells the share-partition store."""

    def initialize(self, group_id: str, partitions: Mapping[TopicId, set[int]]) -> None:
        """Share-partitions assigned to the group: give those without state their start offset."""

    def member_left(self, group_id: str, member_id: str) -> None:
        """The member left or was fenced."""

    def group_deleted(self, group_id: str) -> None:
        """The group was deleted: forget its share-partitions."""


class ShareError(Exception):
    def __init__(self, code: ErrorCode, message: str | None = None) -> None:
        super().__init__(message or code.name)
        self.code = code
        self.message = message


def _blank(value: str | None) -> bool:
    return value is not None and not value.strip()


class ShareProtocol:
    """The share groups of one coordinator."""

    group_type = GroupType.SHARE

    def __init__(self, ctx: GroupContext) -> None:
        self._ctx = ctx
        self._loading: dict[str, ShareRecords] = {}
        self.partitions: SharePartitionsHook | None = None
        # Changes are made one at a time: each is decided, written and applied before the next begins.
        self._lock: asyncio.Lock | None = None

    @property
    def config(self) -> Any:
        return self._ctx.config

    def _groups(self) -> list[ShareGroup]:
        return [g for g in self._ctx.groups.values() if isinstance(g, ShareGroup)]

    # -- configs ---------------------------------------------------------------------------------------------

    def session_timeout_ms(self, group_id: str) -> int:
        value = self._ctx.group_configs(group_id).get("share.session.timeout.ms")
        return int(value) if value is not None else int(self.config.share_session_timeout_ms)

    def heartbeat_interval_ms(self, group_id: str) -> int:
        value = self._ctx.group_configs(group_id).get("share.heartbeat.interval.ms")
        return int(value) if value is not None else int(self.config.share_heartbeat_interval_ms)

    # -- timers ----------------------------------------------------------------------------------------------

    def _schedule_session(self, group: ShareGroup, member_id: str) -> None:
        deadline = self._ctx.now_ms() + self.session_timeout_ms(group.group_id)
        group.session_deadline[member_id] = deadline
        self._ctx.schedule(deadline)

    def next_deadline(self) -> float:
        nxt: float = float("inf")
        for group in self._groups():
            if group.session_deadline:
                nxt = min(nxt, min(group.session_deadline.values()))
        return nxt

    def expire(self, now: int) -> None:
        """Fence the members whose session ran out."""
        for group in self._groups():
            if self._ctx.groups.get(group.group_id) is not group:
                continue
            expired = [m for m, d in group.session_deadline.items() if d <= now]
            for member_id in expired:
                group.session_deadline.pop(member_id, None)
                if member_id not in group.members:
                    continue
                log.info(
                    "member %s fenced from share group %s because its session expired",
                    member_id,
                    group.group_id,
                )
                if self._ctx.writes_later:
                    self._ctx.spawn(
                        self._fence_later(group, member_id), f"fence a member of share group {group.group_id}"
                    )
                    continue
                try:
                    self._commit_now(group, self._fence_change(group, member_id))
                    self._left(group, member_id)
                except ShareError as exc:
                    log.warning(
                        "cannot fence member %s of share group %s: %s", member_id, group.group_id, exc
                    )

    async def _fence_later(self, group: ShareGroup, member_id: str) -> None:
        """Fence a member whose session ran out, in turn with the requests' changes."""
        async with self._serial():
            if self._ctx.groups.get(group.group_id) is not group or member_id not in group.members:
                return
            try:
                await self._fence_and_commit(group, member_id)
            except ShareError as exc:
                log.warning("cannot fence member %s of share group %s: %s", member_id, group.group_id, exc)

    def _serial(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def stop(self) -> None:
        """Nothing waits in the share protocol (answers are immediate)."""

    # -- changes ---------------------------------------------------------------------------------------------

    def _commit_now(self, group: ShareGroup, change: Any, *, new: bool = False) -> Any:
        """Apply ``change()`` to ``group``, write what it changed; restore the group when the log refuses."""
        snap = group.snapshot()
        result = change()
        try:
            self._ctx.append(group.dirty_entries())
        except Exception as exc:
            raise self._refused(group, snap, exc) from None
        if new:
            self._ctx.groups[group.group_id] = group
        return result

    async def _commit(self, group: ShareGroup, change: Any, *, new: bool = False) -> Any:
        """``_commit_now``, the log written without holding the event loop (callers hold the protocol's
        lock: no other change of its groups is made meanwhile)."""
        snap = group.snapshot()
        result = change()
        try:
            await self._ctx.append_async(group.dirty_entries())
        except Exception as exc:
            raise self._refused(group, snap, exc) from None
        if new:
            self._ctx.groups[group.group_id] = group
        return result

    @staticmethod
    def _refused(group: ShareGroup, snap: Any, exc: Exception) -> ShareError:
        log.warning("cannot persist a change of share group %s: %s", group.group_id, exc)
        group.restore(snap)
        return ShareError(store_error(exc))

    def _fence_change(self, group: ShareGroup, member_id: str) -> Callable[[], None]:
        """Removing the member: the group epoch moves on, the others get a new target."""

        def change() -> None:
            group.remove_member(member_id)
            topics = _Topics(self._ctx.topics())
            group.set_epochs(
                group.group_epoch + 1, self._metadata_hash(group, topics), group.assignment_epoch
            )
            self._compute_target(group, topics)

        return change

    def _left(self, group: ShareGroup, member_id: str) -> None:
        if self.partitions is not None:
            self.partitions.member_left(group.group_id, member_id)

    async def _fence_and_commit(self, group: ShareGroup, member_id: str) -> None:
        """Remove the member and tell the store."""
        await self._commit(group, self._fence_change(group, member_id))
        self._left(group, member_id)

    # -- ShareGroupHeartbeat ---------------------------------------------------------------------------------

    async def heartbeat(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:
        try:
            async with self._serial():
                result = await self._heartbeat(req, client_id, client_host)
        except ShareError as exc:
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

    @staticmethod
    def _validate(req: dict[str, Any]) -> None:
        member_id = req.get("member_id") or ""
        if not member_id.strip():
            raise ShareError(ErrorCode.INVALID_REQUEST, "MemberId can't be empty.")
        if not (req.get("group_id") or "").strip():
            raise ShareError(ErrorCode.INVALID_REQUEST, "GroupId can't be empty.")
        if _blank(req.get("rack_id")):
            raise ShareError(ErrorCode.INVALID_REQUEST, "RackId can't be empty.")
        epoch = int(req.get("member_epoch", 0))
        if epoch == 0:
            if not req.get("subscribed_topic_names"):
                raise ShareError(
                    ErrorCode.INVALID_REQUEST, "SubscribedTopicNames must be set in first request."
                )
        elif epoch < LEAVE_GROUP_MEMBER_EPOCH:
            raise ShareError(ErrorCode.INVALID_REQUEST, "MemberEpoch is invalid.")

    def _share_group(self, group_id: str, *, create: bool) -> tuple[ShareGroup, bool]:
        existing = self._ctx.groups.get(group_id)
        if existing is None or existing.is_dead:
            if not create:
                raise ShareError(ErrorCode.GROUP_ID_NOT_FOUND, f"Share group {group_id} not found.")
            return ShareGroup(group_id, self._ctx.now_ms()), True
        if not isinstance(existing, ShareGroup):
            raise ShareError(ErrorCode.GROUP_ID_NOT_FOUND, f"Group {group_id} is not a share group.")
        return existing, False

    async def _heartbeat(self, req: dict[str, Any], client_id: str, client_host: str) -> Result:
        self._validate(req)
        group_id: str = req["group_id"]
        member_id: str = req["member_id"]
        epoch = int(req.get("member_epoch", 0))
        if epoch == LEAVE_GROUP_MEMBER_EPOCH:
            return await self._leave(group_id, member_id)
        joining = epoch == 0
        group, new = self._share_group(group_id, create=joining)
        limit = int(self.config.share_max_size)
        if len(group.members) >= limit and member_id not in group.members:
            raise ShareError(
                ErrorCode.GROUP_MAX_SIZE_REACHED,
                f"The share group has reached its maximum capacity of {limit} members.",
            )
        member = group.members.get(member_id)
        if member is None:
            if not joining:
                raise ShareError(
                    ErrorCode.UNKNOWN_MEMBER_ID, f"Member {member_id} is not a member of group {group_id}."
                )
            log.info("member %s joins share group %s", member_id, group_id)
            member = ShareMember(member_id)
        elif not joining:
            self._check_epoch(member, epoch)
        names = req.get("subscribed_topic_names")
        rack = req.get("rack_id")
        updated = dataclasses.replace(
            member,
            rack_id=rack if rack is not None else member.rack_id,
            subscribed_topic_names=tuple(names) if names is not None else member.subscribed_topic_names,
            client_id=client_id,
            client_host=client_host,
        )
        topics = _Topics(self._ctx.topics())

        def change() -> ShareMember:
            changed = updated.subscribed_topic_names != member.subscribed_topic_names
            group.update_member(updated)
            metadata_hash = self._metadata_hash(group, topics)
            if changed or metadata_hash != group.metadata_hash or member_id not in group.target:
                group.set_epochs(group.group_epoch + 1, metadata_hash, group.assignment_epoch)
            if group.group_epoch > group.assignment_epoch:
                self._compute_target(group, topics)
            current = group.members[member_id]
            target = group.target.get(member_id, {})
            if current.member_epoch != group.assignment_epoch or dict(current.assigned) != dict(target):
                group.update_member(
                    dataclasses.replace(
                        current,
                        member_epoch=group.assignment_epoch,
                        previous_member_epoch=current.member_epoch,
                        assigned=partitions_of(target),
                    )
                )
            return group.members[member_id]

        new_member = await self._commit(group, change, new=new)
        self._schedule_session(group, member_id)
        if self.partitions is not None and new_member.assigned:
            self.partitions.initialize(group_id, {t: set(ps) for t, ps in new_member.assigned.items()})
        response: Result = {
            "member_id": member_id,
            "member_epoch": new_member.member_epoch,
            "heartbeat_interval_ms": self.heartbeat_interval_ms(group_id),
            "assignment": None,
        }
        if joining or names is not None or dict(member.assigned) != dict(new_member.assigned):
            response["assignment"] = {
                "topic_partitions": [
                    {"topic_id": t, "partitions": sorted(ps)}
                    for t, ps in sorted(new_member.assigned.items(), key=lambda kv: str(kv[0]))
                ]
            }
        return response

    @staticmethod
    def _check_epoch(member: ShareMember, epoch: int) -> None:
        if epoch > member.member_epoch:
            raise ShareError(
                ErrorCode.FENCED_MEMBER_EPOCH,
                f"The share group member has a greater member epoch ({epoch}) than the one known by the "
                f"group coordinator ({member.member_epoch}). The member must abandon all its partitions and "
                "rejoin.",
            )
        if epoch < member.member_epoch and epoch != member.previous_member_epoch:
            raise ShareError(
                ErrorCode.FENCED_MEMBER_EPOCH,
                f"The share group member has a smaller member epoch ({epoch}) than the one known by the "
                f"group coordinator ({member.member_epoch}), and it does not match the previous member epoch "
                f"({member.previous_member_epoch}). The member must abandon all its partitions and rejoin.",
            )

    async def _leave(self, group_id: str, member_id: str) -> Result:
        group, _ = self._share_group(group_id, create=False)
        if member_id not in group.members:
            raise ShareError(
                ErrorCode.UNKNOWN_MEMBER_ID, f"Member {member_id} is not a member of group {group_id}."
            )
        log.info("member %s left share group %s", member_id, group_id)
        await self._fence_and_commit(group, member_id)
        return {
            "member_id": member_id,
            "member_epoch": LEAVE_GROUP_MEMBER_EPOCH,
            "heartbeat_interval_ms": 0,
            "assignment": None,
        }

    def _metadata_hash(self, group: ShareGroup, topics: _Topics) -> int:
        names = group.subscribed_topic_names()
        if not names:
            return 0
        digest = hashlib.blake2b(digest_size=8)
        for name in sorted(names):
            meta = topics.by_name.get(name)
            if meta is not None:
                digest.update(f"{name}\0{meta.topic_id}\0{meta.partitions}\n".encode())
        return int.from_bytes(digest.digest(), "big", signed=True)

    def _compute_target(self, group: ShareGroup, topics: _Topics) -> None:
        subscriptions = {
            m.member_id: frozenset(
                topics.by_name[n].topic_id for n in m.subscribed_topic_names if n in topics.by_name
            )
            for m in group.members.values()
        }
        counts = {meta.topic_id: meta.partitions for meta in topics.by_name.values()}
        current = {m.member_id: m.assigned for m in group.members.values()}
        group.target = dict(assignor.assign(subscriptions, counts, current))
        group.set_epochs(group.group_epoch, group.metadata_hash, group.group_epoch)

    def create_empty(self, group_id: str) -> ShareGroup:
        """An empty share group (AlterShareGroupOffsets on a group that does not exist yet)."""
        group = ShareGroup(group_id, self._ctx.now_ms())
        group.set_epochs(0, 0, 0)
        self._commit_now(group, lambda: None, new=True)
        return group

    # -- ShareGroupDescribe ----------------------------------------------------------------------------------

    def describe(self, group_ids: list[str | None]) -> list[Result]:
        topics = _Topics(self._ctx.topics())
        out: list[Result] = []
        for gid in group_ids:
            if gid is None:
                out.append(_described_error("", ErrorCode.INVALID_GROUP_ID, None))
                continue
            group = self._ctx.groups.get(gid)
            if group is None or group.is_dead:
                out.append(_described_error(gid, ErrorCode.GROUP_ID_NOT_FOUND, f"Group {gid} not found."))
                continue
            if not isinstance(group, ShareGroup):
                out.append(
                    _described_error(gid, ErrorCode.GROUP_ID_NOT_FOUND, f"Group {gid} is not a share group.")
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
                    "assignor_name": ASSIGNOR,
                    "members": [
                        {
                            "member_id": m.member_id,
                            "rack_id": m.rack_id,
                            "member_epoch": m.member_epoch,
                            "client_id": m.client_id,
                            "client_host": m.client_host,
                            "subscribed_topic_names": list(m.subscribed_topic_names),
                            "assignment": {"topic_partitions": topics.described(m.assigned)},
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
            key, logformat.ShareGroupKey | logformat.ShareMemberKey | logformat.ShareAssignmentKey
        ):
            return False
        self._loading.setdefault(key.group_id, ShareRecords()).replay(key, value)
        return True

    def restored(self, group_id: str, now_ms: int) -> ShareGroup | None:
        """The group as its records left it; its members' sessions start now."""
        records = self._loading.pop(group_id, None)
        if records is None or not records.exists:
            return None
        group = records.build(group_id, now_ms)
        timeout = self.session_timeout_ms(group_id)
        for member_id in group.members:
            group.session_deadline[member_id] = now_ms + timeout
            self._ctx.schedule(now_ms + timeout)
        return group


class _Topics:
    def __init__(self, topics: Mapping[str, TopicInfo]) -> None:
        self.by_name = topics
        self._by_id: dict[TopicId, str] | None = None

    def name(self, topic_id: TopicId) -> str | None:
        if self._by_id is None:
            self._by_id = {m.topic_id: n for n, m in self.by_name.items()}
        return self._by_id.get(topic_id)

    def described(self, partitions: Partitions) -> list[Result]:
        out = []
        for t, ps in sorted(partitions.items(), key=lambda kv: str(kv[0])):
            name = self.name(t)
            if name is not None:
                out.append({"topic_id": t, "topic_name": name, "partitions": sorted(ps)})
        return out


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
