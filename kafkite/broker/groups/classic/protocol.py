"""The classic rebalance protocol: JoinGroup / SyncGroup / Heartbeat / LeaveGroup and DescribeGroups.

It follows Apache Kafka's classic group protocol, over the classic groups of the coordinator's registry. All
state is changed only from the event loop thread; JoinGroup and SyncGroup wait on futures that complete when
the rebalance does. Timers (session timeouts, rebalance timeouts, the initial rebalance delay, pending
SyncGroups) are deadlines that ``expire()`` runs when the coordinator's timer task finds one due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from kafkite.protocol.errors import ErrorCode

from .. import logformat
from ..context import GroupContext
from ..group import GroupType
from ..log import store_error
from .state import ClassicGroup, ClassicMember, GroupState, Protocols

log = logging.getLogger("kafkite.groups")

# A new member's JoinGroup times out after this long if the rebalance does not complete (Kafka's value).
NEW_MEMBER_JOIN_TIMEOUT_MS = 5 * 60 * 1000
# DescribeGroups v3+: authorized operations are not computed.
AUTHORIZED_OPERATIONS_OMITTED = -2147483648

NONE = int(ErrorCode.NO_ERROR)
EMPTY = GroupState.EMPTY
PREPARING = GroupState.PREPARING_REBALANCE
COMPLETING = GroupState.COMPLETING_REBALANCE
STABLE = GroupState.STABLE
DEAD = GroupState.DEAD

Result = dict[str, Any]


def _resolve(fut: asyncio.Future[Result] | None, value: Result) -> None:
    if fut is not None and not fut.done():
        fut.set_result(value)


def join_error(member_id: str, code: ErrorCode) -> Result:
    return {
        "error_code": int(code),
        "generation_id": -1,
        "protocol_type": None,
        "protocol_name": None,
        "leader": "",
        "skip_assignment": False,
        "member_id": member_id,
        "members": [],
    }


def sync_error(code: ErrorCode) -> Result:
    return {"error_code": int(code), "protocol_type": None, "protocol_name": None, "assignment": b""}


class ClassicProtocol:
    """The classic groups of one coordinator: their rebalances, sessions and DescribeGroups entries."""

    group_type = GroupType.CLASSIC

    def __init__(self, ctx: GroupContext) -> None:
        self._ctx = ctx
        # Group metadata records met while loading the log, by group id.
        self._loading: dict[str, tuple[logformat.GroupRecord, bytes]] = {}

    # -- loading ---------------------------------------------------------------------------------------------

    def replay(self, key: logformat.Key, value: bytes | None) -> bool:
        if not isinstance(key, logformat.GroupKey):
            return False
        if value is None:
            self._loading.pop(key.group_id, None)
        else:
            self._loading[key.group_id] = (logformat.decode_group_value(value), value)
        return True

    def restored(self, group_id: str, now_ms: int) -> ClassicGroup | None:
        """The group as its last record left it: members stable, their sessions restarted now."""
        loaded = self._loading.pop(group_id, None)
        if loaded is None:
            return None
        return ClassicGroup.restore(group_id, loaded[0], loaded[1], now_ms)

    def _classic(self, group_id: str) -> ClassicGroup | None:
        group = self._ctx.groups.get(group_id)
        return group if isinstance(group, ClassicGroup) else None

    def _classic_groups(self) -> list[ClassicGroup]:
        return [g for g in self._ctx.groups.values() if isinstance(g, ClassicGroup)]

    # -- lifecycle and timers --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Answer every waiting JoinGroup/SyncGroup with NOT_COORDINATOR."""
        for group in self._classic_groups():
            for member in group.members.values():
                self._invoke_join(member, join_error(member.member_id, ErrorCode.NOT_COORDINATOR))
                self._invoke_sync(member, sync_error(ErrorCode.NOT_COORDINATOR))

    def next_deadline(self) -> float:
        nxt: float = float("inf")
        for group in self._classic_groups():
            for d in (group.join_deadline_ms, group.sync_deadline_ms):
                if d is not None and d < nxt:
                    nxt = d
            for d in group.pending_members.values():
                nxt = min(nxt, d)
            for member in group.members.values():
                if member.heartbeat_deadline_ms is not None and member.heartbeat_deadline_ms < nxt:
                    nxt = member.heartbeat_deadline_ms
        return nxt

    def expire(self, now: int) -> None:
        """Run every timer that is due: session expiry, rebalance and sync timeouts."""
        for group in self._classic_groups():
            self._expire_timers(group, now)

    def _expire_timers(self, group: ClassicGroup, now: int) -> None:
        for member_id, pending_deadline in list(group.pending_members.items()):
            if pending_deadline <= now:
                log.info("pending member %s of group %s expired", member_id, group.group_id)
                group.remove(member_id)
                self._check_join(group)
        for member in list(group.members.values()):
            deadline = member.heartbeat_deadline_ms
            if deadline is None or deadline > now or group.members.get(member.member_id) is not member:
                continue
            if member.is_new or not (member.awaiting_join or member.awaiting_sync):
                log.info("member %s of group %s expired (no heartbeat)", member.member_id, group.group_id)
                self._remove_member_and_update_group(group, member)
            else:
                # Waiting in a rebalance counts as alive; the session restarts when the rebalance answers.
                member.heartbeat_deadline_ms = None
        self._check_join(group)
        if group.sync_deadline_ms is not None and now >= group.sync_deadline_ms:
            self._on_sync_expired(group)

    def reschedule_heartbeat(self, member: ClassicMember) -> None:
        """Restart a member's session (a group converted from another type)."""
        self._reschedule_heartbeat(member)

    def prepare_rebalance(self, group: ClassicGroup) -> None:
        """Start a rebalance of a stable group (a group converted from another type)."""
        self._maybe_prepare_rebalance(group)

    def on_offset_commit(self, group: ClassicGroup, member_id: str) -> None:
        """A member committed offsets: a sign of life."""
        if group.state in (STABLE, PREPARING) and group.has(member_id):
            self._reschedule_heartbeat(group.members[member_id])

    # -- helpers ---------------------------------------------------------------------------------------------

    def _store(
        self,
        group: ClassicGroup,
        done: Callable[[BaseException | None], None],
        assignment: Mapping[str, bytes] | None = None,
    ) -> None:
        """Write the group's record as it is now; ``done(None)`` once it is durable, ``done(error)`` if not
        (at once, or later when the log is written asynchronously: the group may have moved on meanwhile)."""
        value = group.record(dict(assignment) if assignment is not None else None)

        def written(exc: BaseException | None) -> None:
            if exc is None:
                group.persisted = value
            done(exc)

        self._ctx.store([(logformat.group_key(group.group_id), value)], written)

    def _reschedule_heartbeat(self, member: ClassicMember, timeout_ms: int | None = None) -> None:
        deadline: int = self._ctx.now_ms() + (member.session_timeout_ms if timeout_ms is None else timeout_ms)
        member.heartbeat_deadline_ms = deadline
        self._ctx.schedule(deadline)

    def _new_future(self) -> asyncio.Future[Result]:
        return asyncio.get_running_loop().create_future()

    @staticmethod
    def _invoke_join(member: ClassicMember, result: Result) -> None:
        fut, member.join_future = member.join_future, None
        _resolve(fut, result)

    @staticmethod
    def _invoke_sync(member: ClassicMember, result: Result) -> bool:
        fut, member.sync_future = member.sync_future, None
        _resolve(fut, result)
        return fut is not None

    def _join_result(
        self, group: ClassicGroup, member_id: str, *, with_members: bool, leader: str | None = None
    ) -> Result:
        return {
            "error_code": NONE,
            "generation_id": group.generation_id,
            "protocol_type": group.protocol_type,
            "protocol_name": group.protocol_name,
            "leader": (group.leader_id if leader is None else leader) or "",
            "skip_assignment": False,
            "member_id": member_id,
            "members": group.current_member_metadata() if with_members else [],
        }

    # -- JoinGroup -------------------------------------------------------------------------------------------

    async def join_group(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:
        outcome = self._handle_join(req, version, client_id, client_host)
        result = await outcome if isinstance(outcome, asyncio.Future) else outcome
        response = dict(result)
        response["throttle_time_ms"] = 0
        if version < 7 and response.get("protocol_name") is None:
            response["protocol_name"] = ""
        return response

    def _handle_join(
        self, req: dict[str, Any], version: int, client_id: str, client_host: str
    ) -> Result | asyncio.Future[Result]:
        group_id = req.get("group_id") or ""
        member_id = req.get("member_id") or ""
        instance_id = req.get("group_instance_id")
        session_timeout = int(req.get("session_timeout_ms", 0))
        rebalance_timeout = int(req.get("rebalance_timeout_ms", -1))
        if version == 0 or rebalance_timeout < 0:
            rebalance_timeout = session_timeout
        protocol_type = req.get("protocol_type") or ""
        protocols: Protocols = [
            (p["name"], bytes(p.get("metadata") or b"")) for p in req.get("protocols") or []
        ]
        reason = req.get("reason") or "not provided"
        if not group_id:
            return join_error(member_id, ErrorCode.INVALID_GROUP_ID)
        cfg = self._ctx.config
        if not cfg.min_session_timeout_ms <= session_timeout <= cfg.max_session_timeout_ms:
            return join_error(member_id, ErrorCode.INVALID_SESSION_TIMEOUT)
        is_unknown = member_id == ""
        existing = self._ctx.groups.get(group_id)
        if existing is not None and not isinstance(existing, ClassicGroup):
            # A group of another type that the coordinator did not hand over to the classic protocol.
            return join_error("", ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
        group = existing
        if group is None:
            if not is_unknown:
                return join_error(member_id, ErrorCode.UNKNOWN_MEMBER_ID)
            group = ClassicGroup(group_id, state_timestamp_ms=self._ctx.now_ms())
            self._ctx.groups[group_id] = group
        if not self._accept_joining_member(group, member_id):
            member = group.members.get(member_id)
            if member is not None:
                self._remove_member_and_update_group(group, member)
            else:
                group.remove(member_id)
            return join_error("", ErrorCode.GROUP_MAX_SIZE_REACHED)
        args = (group, instance_id, client_id, client_host, rebalance_timeout, session_timeout)
        if is_unknown:
            outcome = self._new_member_join(*args, protocol_type, protocols, version >= 4, reason)
        else:
            outcome = self._current_member_join(*args, member_id, protocol_type, protocols, reason)
        self._check_join(group)
        return outcome

    def _accept_joining_member(self, group: ClassicGroup, member_id: str) -> bool:
        if group.state in (EMPTY, DEAD):
            return True
        if group.is_(PREPARING):
            member = group.members.get(member_id)
            return (
                member is not None and member.awaiting_join
            ) or group.num_awaiting_join < self._ctx.config.max_size
        return group.has(member_id) or len(group.members) < self._ctx.config.max_size

    def _new_member_join(
        self,
        group: ClassicGroup,
        instance_id: str | None,
        client_id: str,
        client_host: str,
        rebalance_timeout: int,
        session_timeout: int,
        protocol_type: str,
        protocols: Protocols,
        require_known_member_id: bool,
        reason: str,
    ) -> Result | asyncio.Future[Result]:
        if group.is_(DEAD):
            return join_error("", ErrorCode.COORDINATOR_NOT_AVAILABLE)
        if not group.supports_protocols(protocol_type, protocols):
            return join_error("", ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
        new_id = group.generate_member_id(client_id, instance_id)
        if instance_id is not None:
            old_id = group.current_static_member_id(instance_id)
            if old_id is not None:
                log.info(
                    "static member %s rejoins group %s (%s) with a new id: replacing %s by %s",
                    instance_id,
                    group.group_id,
                    group.state.value,
                    old_id,
                    new_id,
                )
                return self._update_static_member_and_rebalance(
                    group, old_id, new_id, instance_id, protocols, rebalance_timeout, session_timeout, reason
                )
        elif require_known_member_id:
            deadline = self._ctx.now_ms() + session_timeout
            group.pending_members[new_id] = deadline
            self._ctx.schedule(deadline)
            return join_error(new_id, ErrorCode.MEMBER_ID_REQUIRED)
        return self._add_member_and_rebalance(
            group,
            new_id,
            instance_id,
            client_id,
            client_host,
            rebalance_timeout,
            session_timeout,
            protocol_type,
            protocols,
            reason,
        )

    def _current_member_join(
        self,
        group: ClassicGroup,
        instance_id: str | None,
        client_id: str,
        client_host: str,
        rebalance_timeout: int,
        session_timeout: int,
        member_id: str,
        protocol_type: str,
        protocols: Protocols,
        reason: str,
    ) -> Result | asyncio.Future[Result]:
        if group.is_(DEAD):
            return join_error(member_id, ErrorCode.COORDINATOR_NOT_AVAILABLE)
        if not group.supports_protocols(protocol_type, protocols):
            return join_error(member_id, ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
        if member_id in group.pending_members:
            if instance_id is not None:
                return join_error(member_id, ErrorCode.UNKNOWN_MEMBER_ID)
            return self._add_member_and_rebalance(
                group,
                member_id,
                None,
                client_id,
                client_host,
                rebalance_timeout,
                session_timeout,
                protocol_type,
                protocols,
                reason,
            )
        error = group.validate_member(member_id, instance_id)
        if error is not None:
            return join_error(member_id, error)
        member = group.members[member_id]
        state = group.state
        if state is PREPARING:
            return self._update_member_and_rebalance(
                group, member, protocols, rebalance_timeout, session_timeout
            )
        if state is COMPLETING:
            if member.matches(protocols):
                # Probably a retry after a lost JoinGroup response: answer with the current generation.
                return self._join_result(group, member_id, with_members=group.is_leader(member_id))
            return self._update_member_and_rebalance(
                group, member, protocols, rebalance_timeout, session_timeout
            )
        if state is STABLE:
            if group.is_leader(member_id) or not member.matches(protocols):
                # A JoinGroup from the leader always rebalances: it is how a consumer leader asks for a new
                # assignment after metadata changes (and how cooperative clients start their second round).
                log.info(
                    "member %s rejoins stable group %s: rebalancing (%s)", member_id, group.group_id, reason
                )
                return self._update_member_and_rebalance(
                    group, member, protocols, rebalance_timeout, session_timeout
                )
            return self._join_result(group, member_id, with_members=False)
        return join_error(member_id, ErrorCode.UNKNOWN_MEMBER_ID)

    def _add_member_and_rebalance(
        self,
        group: ClassicGroup,
        member_id: str,
        instance_id: str | None,
        client_id: str,
        client_host: str,
        rebalance_timeout: int,
        session_timeout: int,
        protocol_type: str,
        protocols: Protocols,
        reason: str,
    ) -> asyncio.Future[Result]:
        member = ClassicMember(
            member_id=member_id,
            group_instance_id=instance_id,
            client_id=client_id,
            client_host=client_host,
            rebalance_timeout_ms=rebalance_timeout,
            session_timeout_ms=session_timeout,
            protocol_type=protocol_type,
            protocols=protocols,
            is_new=True,
        )
        fut = self._new_future()
        member.join_future = fut
        if group.is_(PREPARING) and group.generation_id == 0:
            group.new_member_added = True
        group.add(member)
        # A new member cannot heartbeat before it has its id; bound its wait for the rebalance instead.
        self._reschedule_heartbeat(member, NEW_MEMBER_JOIN_TIMEOUT_MS)
        log.info("member %s joins group %s (%s)", member_id, group.group_id, reason)
        self._maybe_prepare_rebalance(group)
        return fut

    def _update_member(
        self,
        member: ClassicMember,
        protocols: Protocols,
        rebalance_timeout: int,
        session_timeout: int,
        fut: asyncio.Future[Result] | None,
    ) -> None:
        member.protocols = protocols
        member.rebalance_timeout_ms = rebalance_timeout
        member.session_timeout_ms = session_timeout
        old, member.join_future = member.join_future, fut
        if old is not None and old is not fut:
            # A second JoinGroup from the same member replaces the first: answer the first one.
            _resolve(old, join_error(member.member_id, ErrorCode.REBALANCE_IN_PROGRESS))

    def _update_member_and_rebalance(
        self,
        group: ClassicGroup,
        member: ClassicMember,
        protocols: Protocols,
        rebalance_timeout: int,
        session_timeout: int,
    ) -> asyncio.Future[Result]:
        fut = self._new_future()
        self._update_member(member, protocols, rebalance_timeout, session_timeout, fut)
        self._maybe_prepare_rebalance(group)
        return fut

    def _update_static_member_and_rebalance(
        self,
        group: ClassicGroup,
        old_id: str,
        new_id: str,
        instance_id: str,
        protocols: Protocols,
        rebalance_timeout: int,
        session_timeout: int,
        reason: str,
    ) -> asyncio.Future[Result]:
        current_leader = group.leader_id
        member = group.members[old_id]
        # Fence whatever the old incarnation is waiting for.
        self._invoke_join(member, join_error(old_id, ErrorCode.FENCED_INSTANCE_ID))
        self._invoke_sync(member, sync_error(ErrorCode.FENCED_INSTANCE_ID))
        group.replace_static_member(instance_id, old_id, new_id)
        if old_id in group.pending_sync:
            group.pending_sync.discard(old_id)
            group.pending_sync.add(new_id)
        self._reschedule_heartbeat(member)
        old_protocols = member.protocols
        old_rebalance, old_session = member.rebalance_timeout_ms, member.session_timeout_ms
        fut = self._new_future()
        self._update_member(member, protocols, rebalance_timeout, session_timeout, fut)
        if group.is_(STABLE):
            if group.protocol_name == group.select_protocol():
                # Same protocol: the replacement needs no rebalance, only the new member id made durable.
                generation = group.generation_id

                def written(exc: BaseException | None) -> None:
                    if member.join_future is not fut:
                        return  # answered meanwhile (a rebalance started, the member was fenced or left)
                    if exc is not None:
                        log.warning("cannot persist group %s: %s", group.group_id, exc)
                        member.join_future = None
                        if group.members.get(new_id) is member and group.generation_id == generation:
                            self._update_member(member, old_protocols, old_rebalance, old_session, None)
                            group.replace_static_member(instance_id, new_id, old_id)
                            self._reschedule_heartbeat(member)
                        error = join_error("", store_error(exc))
                        error.update(
                            generation_id=group.generation_id,
                            protocol_type=group.protocol_type,
                            protocol_name=group.protocol_name,
                            leader=current_leader or "",
                        )
                        _resolve(fut, error)
                    elif group.is_(STABLE) and group.generation_id == generation:
                        # The old leader id is returned so that a replaced leader does not run an assignment
                        # that a stable group would never distribute (JoinGroup v9's skip_assignment is not
                        # used).
                        member.join_future = None
                        result = self._join_result(group, new_id, with_members=False, leader=current_leader)
                        _resolve(fut, result)

                self._store(group, written)
            else:
                self._maybe_prepare_rebalance(group)
        elif group.is_(COMPLETING):
            # The leader may already be assigning to the old member id: start over.
            self._prepare_rebalance(group)
        return fut

    # -- rebalance -------------------------------------------------------------------------------------------

    def _maybe_prepare_rebalance(self, group: ClassicGroup) -> None:
        if group.can_rebalance:
            self._prepare_rebalance(group)

    def _prepare_rebalance(self, group: ClassicGroup) -> None:
        if group.is_(COMPLETING):
            self._reset_and_propagate_assignment_error(group, ErrorCode.REBALANCE_IN_PROGRESS)
        group.sync_deadline_ms = None
        group.pending_sync.clear()
        now = self._ctx.now_ms()
        if group.is_(EMPTY):
            delay = self._ctx.config.initial_rebalance_delay_ms
            group.initial_join = True
            group.new_member_added = False
            group.join_deadline_ms = now + delay
            group.initial_remaining_ms = max(group.rebalance_timeout_ms - delay, 0)
        else:
            group.initial_join = False
            group.join_deadline_ms = now + group.rebalance_timeout_ms
        log.info(
            "preparing to rebalance group %s (state %s, generation %d)",
            group.group_id,
            group.state.value,
            group.generation_id,
        )
        group.transition(PREPARING, now)
        self._ctx.schedule(group.join_deadline_ms)
        self._check_join(group)

    def _check_join(self, group: ClassicGroup) -> None:
        """Complete the pending join phase if everyone has joined or its deadline has passed."""
        if not group.is_(PREPARING) or group.join_deadline_ms is None:
            return
        now = self._ctx.now_ms()
        if group.initial_join:
            if now < group.join_deadline_ms:
                return
            if group.new_member_added and group.initial_remaining_ms > 0:
                # Members keep arriving: wait a little longer, within the rebalance timeout.
                group.new_member_added = False
                delay = min(self._ctx.config.initial_rebalance_delay_ms, group.initial_remaining_ms)
                group.initial_remaining_ms = max(group.initial_remaining_ms - delay, 0)
                group.join_deadline_ms = now + delay
                self._ctx.schedule(group.join_deadline_ms)
                if delay > 0:
                    return
            self._complete_join(group)
        elif group.has_all_members_joined or now >= group.join_deadline_ms:
            self._complete_join(group)

    def _complete_join(self, group: ClassicGroup) -> None:
        group.join_deadline_ms = None
        group.initial_join = False
        for member in list(group.members.values()):
            if not member.awaiting_join and not member.is_static:
                log.info(
                    "member %s did not rejoin group %s in time: removed", member.member_id, group.group_id
                )
                group.remove(member.member_id)
        if group.is_(DEAD):
            return
        now = self._ctx.now_ms()
        if not group.maybe_elect_new_joined_leader() and group.members:
            # Only static members that did not rejoin are left: wait again until their sessions expire.
            group.join_deadline_ms = now + group.rebalance_timeout_ms
            self._ctx.schedule(group.join_deadline_ms)
            return
        group.init_next_generation(now)
        if group.is_(EMPTY):
            log.info("group %s is empty at generation %d", group.group_id, group.generation_id)

            def written(exc: BaseException | None) -> None:
                if exc is not None:
                    log.warning("cannot persist empty group %s: %s", group.group_id, exc)

            self._store(group, written)
            return
        log.info(
            "group %s is at generation %d with %d members (protocol %s)",
            group.group_id,
            group.generation_id,
            len(group.members),
            group.protocol_name,
        )
        for member in list(group.members.values()):
            result = self._join_result(
                group, member.member_id, with_members=group.is_leader(member.member_id)
            )
            self._invoke_join(member, result)
            self._reschedule_heartbeat(member)
            member.is_new = False
            group.pending_sync.add(member.member_id)
        group.sync_deadline_ms = now + group.rebalance_timeout_ms
        self._ctx.schedule(group.sync_deadline_ms)

    def _on_sync_expired(self, group: ClassicGroup) -> None:
        group.sync_deadline_ms = None
        if group.state not in (COMPLETING, STABLE) or not group.pending_sync:
            return
        missing = sorted(group.pending_sync)
        log.info("members %s of group %s did not send SyncGroup in time: removed", missing, group.group_id)
        for member_id in missing:
            member = group.remove(member_id)
            if member is not None:
                self._invoke_join(member, join_error("", ErrorCode.UNKNOWN_MEMBER_ID))
        self._prepare_rebalance(group)

    def _remove_pending_sync(self, group: ClassicGroup, member_id: str) -> None:
        group.pending_sync.discard(member_id)
        if not group.pending_sync:
            group.sync_deadline_ms = None

    def _remove_member_and_update_group(self, group: ClassicGroup, member: ClassicMember) -> None:
        self._invoke_join(member, join_error("", ErrorCode.UNKNOWN_MEMBER_ID))
        self._invoke_sync(member, sync_error(ErrorCode.UNKNOWN_MEMBER_ID))
        group.remove(member.member_id)
        if group.state in (STABLE, COMPLETING):
            self._maybe_prepare_rebalance(group)
        elif group.is_(PREPARING):
            self._check_join(group)

    def _set_and_propagate_assignment(self, group: ClassicGroup, assignment: Mapping[str, bytes]) -> None:
        for member in group.members.values():
            member.assignment = assignment.get(member.member_id, b"")
        self._propagate_assignment(group, None)

    def _reset_and_propagate_assignment_error(self, group: ClassicGroup, error: ErrorCode) -> None:
        for member in group.members.values():
            member.assignment = b""
        self._propagate_assignment(group, error)

    def _propagate_assignment(self, group: ClassicGroup, error: ErrorCode | None) -> None:
        for member in group.members.values():
            if error is None:
                result = {
                    "error_code": NONE,
                    "protocol_type": group.protocol_type,
                    "protocol_name": group.protocol_name,
                    "assignment": member.assignment,
                }
            else:
                result = sync_error(error)
            if self._invoke_sync(member, result):
                self._reschedule_heartbeat(member)

    # -- SyncGroup -------------------------------------------------------------------------------------------

    async def sync_group(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:
        outcome = self._handle_sync(req)
        result = await outcome if isinstance(outcome, asyncio.Future) else outcome
        response = dict(result)
        response["throttle_time_ms"] = 0
        return response

    def _handle_sync(self, req: dict[str, Any]) -> Result | asyncio.Future[Result]:
        group_id = req.get("group_id") or ""
        member_id = req.get("member_id") or ""
        generation = int(req.get("generation_id", -1))
        instance_id = req.get("group_instance_id")
        if not group_id:
            return sync_error(ErrorCode.INVALID_GROUP_ID)
        group = self._classic(group_id)
        if group is None:
            return sync_error(ErrorCode.UNKNOWN_MEMBER_ID)
        if group.is_(DEAD):
            return sync_error(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        error = group.validate_member(member_id, instance_id)
        if error is not None:
            return sync_error(error)
        if generation != group.generation_id:
            return sync_error(ErrorCode.ILLEGAL_GENERATION)
        protocol_type = req.get("protocol_type")
        protocol_name = req.get("protocol_name")
        if (protocol_type is not None and protocol_type != group.protocol_type) or (
            protocol_name is not None and protocol_name != group.protocol_name
        ):
            return sync_error(ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
        if group.is_(EMPTY):
            return sync_error(ErrorCode.UNKNOWN_MEMBER_ID)
        if group.is_(PREPARING):
            return sync_error(ErrorCode.REBALANCE_IN_PROGRESS)
        member = group.members[member_id]
        if group.is_(STABLE):
            self._remove_pending_sync(group, member_id)
            self._reschedule_heartbeat(member)
            return {
                "error_code": NONE,
                "protocol_type": group.protocol_type,
                "protocol_name": group.protocol_name,
                "assignment": member.assignment,
            }
        # CompletingRebalance: wait for the leader's assignment.
        fut = self._new_future()
        old, member.sync_future = member.sync_future, fut
        _resolve(old, sync_error(ErrorCode.REBALANCE_IN_PROGRESS))
        self._remove_pending_sync(group, member_id)
        if group.is_leader(member_id):
            assignment = {
                a["member_id"]: bytes(a.get("assignment") or b"") for a in req.get("assignments") or []
            }
            missing = [m for m in group.members if m not in assignment]
            if missing:
                log.warning(
                    "group %s: no assignment for %s, sending them an empty one", group.group_id, missing
                )
            generation = group.generation_id

            def written(exc: BaseException | None) -> None:
                # As Kafka's coordinator: only if the rebalance is still the one the assignment was for.
                if not group.is_(COMPLETING) or group.generation_id != generation:
                    return
                if exc is not None:
                    log.warning("cannot persist group %s: %s", group.group_id, exc)
                    self._reset_and_propagate_assignment_error(group, store_error(exc))
                    self._maybe_prepare_rebalance(group)
                else:
                    self._set_and_propagate_assignment(group, assignment)
                    group.transition(STABLE, self._ctx.now_ms())

            self._store(group, written, assignment)
        return fut

    # -- Heartbeat / LeaveGroup ------------------------------------------------------------------------------

    async def heartbeat(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:
        return {"throttle_time_ms": 0, "error_code": int(self._handle_heartbeat(req))}

    def _handle_heartbeat(self, req: dict[str, Any]) -> ErrorCode:
        group_id = req.get("group_id") or ""
        member_id = req.get("member_id") or ""
        if not group_id:
            return ErrorCode.INVALID_GROUP_ID
        group = self._classic(group_id)
        if group is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if group.is_(DEAD):
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        error = group.validate_member(member_id, req.get("group_instance_id"))
        if error is not None:
            return error
        if int(req.get("generation_id", -1)) != group.generation_id:
            return ErrorCode.ILLEGAL_GENERATION
        if group.is_(EMPTY):
            return ErrorCode.UNKNOWN_MEMBER_ID
        self._reschedule_heartbeat(group.members[member_id])
        if group.is_(PREPARING):
            return ErrorCode.REBALANCE_IN_PROGRESS
        return ErrorCode.NO_ERROR

    async def leave_group(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:
        if version < 3:
            identities = [
                {"member_id": req.get("member_id") or "", "group_instance_id": None, "reason": None}
            ]
        else:
            identities = list(req.get("members") or [])
        top, results = self._handle_leave(req.get("group_id") or "", identities)
        if version < 3:
            if top == ErrorCode.NO_ERROR and results:
                top = ErrorCode(results[0]["error_code"])
            return {"throttle_time_ms": 0, "error_code": int(top)}
        return {"throttle_time_ms": 0, "error_code": int(top), "members": results}

    def _handle_leave(
        self, group_id: str, identities: list[dict[str, Any]]
    ) -> tuple[ErrorCode, list[Result]]:
        def answer(identity: dict[str, Any], code: ErrorCode) -> Result:
            return {
                "member_id": identity.get("member_id") or "",
                "group_instance_id": identity.get("group_instance_id"),
                "error_code": int(code),
            }

        if not group_id:
            return ErrorCode.INVALID_GROUP_ID, []
        group = self._classic(group_id)
        if group is None:
            return ErrorCode.NO_ERROR, [answer(i, ErrorCode.UNKNOWN_MEMBER_ID) for i in identities]
        if group.is_(DEAD):
            return ErrorCode.COORDINATOR_NOT_AVAILABLE, []
        results = []
        for identity in identities:
            member_id = identity.get("member_id") or ""
            instance_id = identity.get("group_instance_id")
            reason = identity.get("reason") or "not provided"
            if member_id == "":
                # Administrative removal of a static member by its instance id.
                current = group.current_static_member_id(instance_id) if instance_id is not None else None
                if current is None:
                    results.append(answer(identity, ErrorCode.UNKNOWN_MEMBER_ID))
                    continue
                member_id = current
            elif member_id in group.pending_members:
                group.remove(member_id)
                self._check_join(group)
                results.append(answer(identity, ErrorCode.NO_ERROR))
                continue
            else:
                error = group.validate_member(member_id, instance_id)
                if error is not None:
                    results.append(answer(identity, error))
                    continue
            log.info("member %s leaves group %s (%s)", member_id, group_id, reason)
            self._remove_member_and_update_group(group, group.members[member_id])
            results.append(answer(identity, ErrorCode.NO_ERROR))
        return ErrorCode.NO_ERROR, results

    # -- DescribeGroups --------------------------------------------------------------------------------------

    def describe_entry(self, group_id: str, group: ClassicGroup | None) -> Result:
        entry: Result = {
            "error_code": NONE,
            "group_id": group_id,
            "group_state": DEAD.value,
            "protocol_type": "",
            "protocol_data": "",
            "members": [],
            "authorized_operations": AUTHORIZED_OPERATIONS_OMITTED,
        }
        if group is None:
            return entry
        stable = group.is_(STABLE) and group.protocol_name is not None
        members = []
        for m in group.members.values():
            metadata = b""
            if stable:
                assert group.protocol_name is not None
                with contextlib.suppress(KeyError):
                    metadata = m.metadata_for(group.protocol_name)
            members.append(
                {
                    "member_id": m.member_id,
                    "group_instance_id": m.group_instance_id,
                    "client_id": m.client_id,
                    "client_host": m.client_host,
                    "member_metadata": metadata,
                    "member_assignment": m.assignment if stable else b"",
                }
            )
        entry.update(
            group_state=group.state.value,
            protocol_type=group.protocol_type or "",
            protocol_data=(group.protocol_name or "") if stable else "",
            members=members,
        )
        return entry
