"""The classic group coordinator: JoinGroup/SyncGroup/Heartbeat/LeaveGroup and committed offsets.

It follows Apache Kafka's classic group protocol. All state lives in this object and is changed only from the
event loop thread; JoinGroup and SyncGroup wait on futures that complete when the rebalance does. Timers
(session timeouts, rebalance timeouts, the initial rebalance delay, pending SyncGroups, offset retention) are
deadlines checked by ``tick()``, which the background task started by ``start()`` runs when one is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kafkite.protocol.errors import ErrorCode

from . import logformat
from .config import GroupConfig
from .log import Entry, GroupLog, MemoryGroupLog
from .state import Group, GroupState, Member, OffsetAndMetadata, Protocols

log = logging.getLogger("kafkite.groups")

# A new member's JoinGroup times out after this long if the rebalance does not complete (Kafka's value).
NEW_MEMBER_JOIN_TIMEOUT_MS = 5 * 60 * 1000
# DescribeGroups v3+: authorized operations are not computed.
AUTHORIZED_OPERATIONS_OMITTED = -2147483648
# Longest the background task sleeps between checks, whatever the next deadline.
MAX_TICK_INTERVAL_S = 1.0

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


def _join_error(member_id: str, code: ErrorCode) -> Result:
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


def _sync_error(code: ErrorCode) -> Result:
    return {"error_code": int(code), "protocol_type": None, "protocol_name": None, "assignment": b""}


class GroupCoordinator:
    """Coordinator of every classic group of this broker, and keeper of their committed offsets.

    ``partitions_of(topic)`` answers how many partitions a topic has (None: no such topic). ``log`` is where
    group metadata and offsets are made durable (rebuilt from it by ``load()``/``start()``); ``config`` a
    GroupConfig or a mapping of Kafka setting names; ``now_ms`` the clock.
    """

    def __init__(
        self,
        partitions_of: Callable[[str], int | None],
        *,
        log: GroupLog | None = None,
        config: GroupConfig | Mapping[str, Any] | None = None,
        now_ms: Callable[[], int] | None = None,
        report_leader_epoch: bool = False,
        compact_after_entries: int = 10_000,
    ) -> None:
        self._partitions_of = partitions_of
        self._log: GroupLog = log if log is not None else MemoryGroupLog()
        if config is None:
            config = GroupConfig()
        elif not isinstance(config, GroupConfig):
            config = GroupConfig.from_mapping(config)
        else:
            config.validate()
        self.config: GroupConfig = config
        self._now_ms = now_ms or (lambda: int(time.time() * 1000))
        self._report_leader_epoch = report_leader_epoch
        self._groups: dict[str, Group] = {}
        self._loaded = False
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._next_wake_ms: float = float("inf")
        self._next_retention_check_ms: int | None = None
        # Entries appended to the log since it last held only live state (see maybe_compact_log).
        self._appended_since_compaction = 0
        self._compact_after_entries = compact_after_entries
        # Offsets committed in transactions that have not ended: group -> producer id -> partition -> offset.
        self._txn_offsets: dict[str, dict[int, dict[tuple[str, int], OffsetAndMetadata]]] = {}

    # -- lifecycle -------------------------------------------------------------------------------------------

    def load(self) -> None:
        """Rebuild groups and offsets from the log (once; later calls do nothing)."""
        if self._loaded:
            return
        self._loaded = True
        offsets: dict[str, dict[tuple[str, int], OffsetAndMetadata]] = {}
        records: dict[str, tuple[logformat.GroupRecord, bytes]] = {}
        replayed = 0
        keys: dict[bytes, logformat.OffsetKey | logformat.GroupKey | logformat.TxnOffsetKey] = {}
        for key, value in self._log.replay():
            replayed += 1
            try:
                k = keys.get(key) or keys.setdefault(key, logformat.decode_key(key))
                if isinstance(k, logformat.TxnOffsetKey):
                    pending = self._txn_offsets.setdefault(k.group_id, {}).setdefault(k.producer_id, {})
                    if value is None:
                        pending.pop((k.topic, k.partition), None)
                    else:
                        pending[(k.topic, k.partition)] = logformat.decode_offset_value(value)
                elif isinstance(k, logformat.OffsetKey):
                    per_group = offsets.setdefault(k.group_id, {})
                    if value is None:
                        per_group.pop((k.topic, k.partition), None)
                    else:
                        per_group[(k.topic, k.partition)] = logformat.decode_offset_value(value)
                elif value is None:
                    records.pop(k.group_id, None)
                else:
                    records[k.group_id] = (logformat.decode_group_value(value), value)
            except logformat.LogFormatError as exc:
                log.warning("skipping an undecodable entry of the group log: %s", exc)
        for group_id in list(self._txn_offsets):
            by_producer = {pid: p for pid, p in self._txn_offsets[group_id].items() if p}
            if by_producer:
                self._txn_offsets[group_id] = by_producer
            else:
                del self._txn_offsets[group_id]
        now = self._now_ms()
        for group_id in set(records) | {g for g, o in offsets.items() if o}:
            group = Group(group_id)
            if group_id in records:
                rec, group.persisted = records[group_id]
                group.protocol_type = rec.protocol_type
                group.generation_id = rec.generation_id
                group.protocol_name = rec.protocol_name
                group.state_timestamp_ms = rec.state_timestamp_ms
                for m in rec.members:
                    member = Member(
                        member_id=m.member_id,
                        group_instance_id=m.group_instance_id,
                        client_id=m.client_id,
                        client_host=m.client_host,
                        rebalance_timeout_ms=m.rebalance_timeout_ms,
                        session_timeout_ms=m.session_timeout_ms,
                        protocol_type=rec.protocol_type or "",
                        protocols=[(rec.protocol_name, m.subscription)] if rec.protocol_name else [],
                        assignment=m.assignment,
                        heartbeat_deadline_ms=now + m.session_timeout_ms,
                    )
                    group.members[member.member_id] = member
                    if member.group_instance_id is not None:
                        group.static_members[member.group_instance_id] = member.member_id
                if group.members:
                    group.state = STABLE
                    group.leader_id = (
                        rec.leader_id if rec.leader_id in group.members else next(iter(group.members))
                    )
                group.subscribed_topics = group.compute_subscribed_topics()
            group.offsets = offsets.get(group_id, {})
            self._groups[group_id] = group
        self._appended_since_compaction = replayed
        log.info("loaded %d groups from %d entries of the group log", len(self._groups), replayed)

    async def start(self) -> None:
        """Load state from the log and start the task that runs the timers."""
        self.load()
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="group-coordinator-timers")

    async def stop(self) -> None:
        """Stop the timer task and answer every waiting JoinGroup/SyncGroup (NOT_COORDINATOR)."""
        task, self._task = self._task, None
        wake, self._wake = self._wake, None
        if task is not None:
            if wake is not None:
                wake.set()
            task.cancel()
            # The task's own cancellation is returned, not raised; the caller's is raised.
            await asyncio.gather(task, return_exceptions=True)
        for group in self._groups.values():
            for member in group.members.values():
                self._invoke_join(member, _join_error(member.member_id, ErrorCode.NOT_COORDINATOR))
                self._invoke_sync(member, _sync_error(ErrorCode.NOT_COORDINATOR))

    async def _run(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:
                log.exception("group coordinator timers failed")
            wake = self._wake
            if wake is None:
                return
            now = self._now_ms()
            nxt = self._next_deadline()
            self._next_wake_ms = nxt
            timeout = min(max((nxt - now) / 1000.0, 0.0), MAX_TICK_INTERVAL_S)
            wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await wake.wait()

    def _schedule(self, deadline_ms: int) -> None:
        if self._wake is not None and deadline_ms < self._next_wake_ms:
            self._next_wake_ms = deadline_ms
            self._wake.set()

    def _next_deadline(self) -> float:
        nxt: float = float("inf")
        if self._next_retention_check_ms is not None:
            nxt = self._next_retention_check_ms
        for group in self._groups.values():
            for d in (group.join_deadline_ms, group.sync_deadline_ms):
                if d is not None and d < nxt:
                    nxt = d
            for d in group.pending_members.values():
                nxt = min(nxt, d)
            for member in group.members.values():
                if member.heartbeat_deadline_ms is not None and member.heartbeat_deadline_ms < nxt:
                    nxt = member.heartbeat_deadline_ms
        return nxt

    def tick(self) -> None:
        """Run every timer that is due: session expiry, rebalance and sync timeouts, offset retention."""
        self.load()
        now = self._now_ms()
        for group in list(self._groups.values()):
            self._expire_timers(group, now)
        if self._next_retention_check_ms is None:
            self._next_retention_check_ms = now + self.config.offsets_retention_check_interval_ms
        elif now >= self._next_retention_check_ms:
            self._next_retention_check_ms = now + self.config.offsets_retention_check_interval_ms
            self.expire_offsets()
        self.maybe_compact_log()

    def _expire_timers(self, group: Group, now: int) -> None:
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

    # -- helpers ---------------------------------------------------------------------------------------------

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self.load()

    def _append(self, entries: list[Entry]) -> None:
        self._log.append(entries)
        self._appended_since_compaction += len(entries)

    def maybe_compact_log(self, *, force: bool = False) -> bool:
        """Rewrite the log as just the live state once it holds mostly superseded entries.

        Only logs with a ``compact(entries)`` method take part (both logs of this package have one).
        """
        compact = getattr(self._log, "compact", None)
        if compact is None:
            return False
        if not force:
            live_count = sum(len(g.offsets) + (g.persisted is not None) for g in self._groups.values())
            if self._appended_since_compaction < max(self._compact_after_entries, live_count):
                return False
        live: list[Entry] = []
        for group in self._groups.values():
            if group.persisted is not None:
                live.append((logformat.group_key(group.group_id), group.persisted))
            for (topic, partition), om in group.offsets.items():
                live.append(
                    (logformat.offset_key(group.group_id, topic, partition), logformat.offset_value(om))
                )
        for group_id, by_producer in self._txn_offsets.items():
            for pid, pending in by_producer.items():
                for (topic, partition), om in pending.items():
                    key = logformat.txn_offset_key(group_id, topic, partition, pid)
                    live.append((key, logformat.offset_value(om)))
        try:
            compact(live)
        except Exception as exc:
            log.warning("cannot compact the group log: %s", exc)
            return False
        log.info(
            "group log compacted: %d live entries replace %d", len(live), self._appended_since_compaction
        )
        self._appended_since_compaction = len(live)
        return True

    def _store_group(self, group: Group, assignment: Mapping[str, bytes] | None = None) -> None:
        members = []
        for m in group.members.values():
            subscription = b""
            if group.protocol_name is not None:
                with contextlib.suppress(KeyError):
                    subscription = m.metadata_for(group.protocol_name)
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
        record = logformat.GroupRecord(
            protocol_type=group.protocol_type,
            generation_id=group.generation_id,
            protocol_name=group.protocol_name,
            leader_id=group.leader_id,
            state_timestamp_ms=group.state_timestamp_ms,
            members=tuple(members),
        )
        value = logformat.group_value(record)
        self._append([(logformat.group_key(group.group_id), value)])
        group.persisted = value

    def _reschedule_heartbeat(self, member: Member, timeout_ms: int | None = None) -> None:
        deadline: int = self._now_ms() + (member.session_timeout_ms if timeout_ms is None else timeout_ms)
        member.heartbeat_deadline_ms = deadline
        self._schedule(deadline)

    def _new_future(self) -> asyncio.Future[Result]:
        return asyncio.get_running_loop().create_future()

    @staticmethod
    def _invoke_join(member: Member, result: Result) -> None:
        fut, member.join_future = member.join_future, None
        _resolve(fut, result)

    @staticmethod
    def _invoke_sync(member: Member, result: Result) -> bool:
        fut, member.sync_future = member.sync_future, None
        _resolve(fut, result)
        return fut is not None

    def _validate_current_member(
        self, group: Group, member_id: str, group_instance_id: str | None
    ) -> ErrorCode | None:
        if group_instance_id is not None:
            current = group.current_static_member_id(group_instance_id)
            if current is None:
                return ErrorCode.UNKNOWN_MEMBER_ID
            if current != member_id:
                log.info(
                    "member %s with instance id %s of group %s is fenced by %s",
                    member_id,
                    group_instance_id,
                    group.group_id,
                    current,
                )
                return ErrorCode.FENCED_INSTANCE_ID
            return None
        if not group.has(member_id):
            return ErrorCode.UNKNOWN_MEMBER_ID
        return None

    def _join_result(
        self, group: Group, member_id: str, *, with_members: bool, leader: str | None = None
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
        self._ensure_loaded()
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
            return _join_error(member_id, ErrorCode.INVALID_GROUP_ID)
        cfg = self.config
        if not cfg.min_session_timeout_ms <= session_timeout <= cfg.max_session_timeout_ms:
            return _join_error(member_id, ErrorCode.INVALID_SESSION_TIMEOUT)
        is_unknown = member_id == ""
        group = self._groups.get(group_id)
        if group is None:
            if not is_unknown:
                return _join_error(member_id, ErrorCode.UNKNOWN_MEMBER_ID)
            group = Group(group_id, state_timestamp_ms=self._now_ms())
            self._groups[group_id] = group
        if not self._accept_joining_member(group, member_id):
            member = group.members.get(member_id)
            if member is not None:
                self._remove_member_and_update_group(group, member)
            else:
                group.remove(member_id)
            return _join_error("", ErrorCode.GROUP_MAX_SIZE_REACHED)
        args = (group, instance_id, client_id, client_host, rebalance_timeout, session_timeout)
        if is_unknown:
            outcome = self._new_member_join(*args, protocol_type, protocols, version >= 4, reason)
        else:
            outcome = self._current_member_join(*args, member_id, protocol_type, protocols, reason)
        self._check_join(group)
        return outcome

    def _accept_joining_member(self, group: Group, member_id: str) -> bool:
        if group.state in (EMPTY, DEAD):
            return True
        if group.is_(PREPARING):
            member = group.members.get(member_id)
            return (
                member is not None and member.awaiting_join
            ) or group.num_awaiting_join < self.config.max_size
        return group.has(member_id) or len(group.members) < self.config.max_size

    def _new_member_join(
        self,
        group: Group,
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
            return _join_error("", ErrorCode.COORDINATOR_NOT_AVAILABLE)
        if not group.supports_protocols(protocol_type, protocols):
            return _join_error("", ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
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
            deadline = self._now_ms() + session_timeout
            group.pending_members[new_id] = deadline
            self._schedule(deadline)
            return _join_error(new_id, ErrorCode.MEMBER_ID_REQUIRED)
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
        group: Group,
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
            return _join_error(member_id, ErrorCode.COORDINATOR_NOT_AVAILABLE)
        if not group.supports_protocols(protocol_type, protocols):
            return _join_error(member_id, ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
        if member_id in group.pending_members:
            if instance_id is not None:
                return _join_error(member_id, ErrorCode.UNKNOWN_MEMBER_ID)
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
        error = self._validate_current_member(group, member_id, instance_id)
        if error is not None:
            return _join_error(member_id, error)
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
        return _join_error(member_id, ErrorCode.UNKNOWN_MEMBER_ID)

    def _add_member_and_rebalance(
        self,
        group: Group,
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
        member = Member(
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
        member: Member,
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
            _resolve(old, _join_error(member.member_id, ErrorCode.REBALANCE_IN_PROGRESS))

    def _update_member_and_rebalance(
        self, group: Group, member: Member, protocols: Protocols, rebalance_timeout: int, session_timeout: int
    ) -> asyncio.Future[Result]:
        fut = self._new_future()
        self._update_member(member, protocols, rebalance_timeout, session_timeout, fut)
        self._maybe_prepare_rebalance(group)
        return fut

    def _update_static_member_and_rebalance(
        self,
        group: Group,
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
        self._invoke_join(member, _join_error(old_id, ErrorCode.FENCED_INSTANCE_ID))
        self._invoke_sync(member, _sync_error(ErrorCode.FENCED_INSTANCE_ID))
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
                try:
                    self._store_group(group)
                except Exception as exc:
                    log.warning("cannot persist group %s: %s", group.group_id, exc)
                    self._update_member(member, old_protocols, old_rebalance, old_session, None)
                    group.replace_static_member(instance_id, new_id, old_id)
                    self._reschedule_heartbeat(member)
                    error = _join_error("", ErrorCode.COORDINATOR_NOT_AVAILABLE)
                    error.update(
                        generation_id=group.generation_id,
                        protocol_type=group.protocol_type,
                        protocol_name=group.protocol_name,
                        leader=current_leader or "",
                    )
                    _resolve(fut, error)
                    return fut
                # The old leader id is returned so that a replaced leader does not run an assignment that a
                # stable group would never distribute (JoinGroup v9's skip_assignment is not used).
                member.join_future = None
                _resolve(fut, self._join_result(group, new_id, with_members=False, leader=current_leader))
            else:
                self._maybe_prepare_rebalance(group)
        elif group.is_(COMPLETING):
            # The leader may already be assigning to the old member id: start over.
            self._prepare_rebalance(group)
        return fut

    # -- rebalance -------------------------------------------------------------------------------------------

    def _maybe_prepare_rebalance(self, group: Group) -> None:
        if group.can_rebalance:
            self._prepare_rebalance(group)

    def _prepare_rebalance(self, group: Group) -> None:
        if group.is_(COMPLETING):
            self._reset_and_propagate_assignment_error(group, ErrorCode.REBALANCE_IN_PROGRESS)
        group.sync_deadline_ms = None
        group.pending_sync.clear()
        now = self._now_ms()
        if group.is_(EMPTY):
            delay = self.config.initial_rebalance_delay_ms
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
        self._schedule(group.join_deadline_ms)
        self._check_join(group)

    def _check_join(self, group: Group) -> None:
        """Complete the pending join phase if everyone has joined or its deadline has passed."""
        if not group.is_(PREPARING) or group.join_deadline_ms is None:
            return
        now = self._now_ms()
        if group.initial_join:
            if now < group.join_deadline_ms:
                return
            if group.new_member_added and group.initial_remaining_ms > 0:
                # Members keep arriving: wait a little longer, within the rebalance timeout.
                group.new_member_added = False
                delay = min(self.config.initial_rebalance_delay_ms, group.initial_remaining_ms)
                group.initial_remaining_ms = max(group.initial_remaining_ms - delay, 0)
                group.join_deadline_ms = now + delay
                self._schedule(group.join_deadline_ms)
                if delay > 0:
                    return
            self._complete_join(group)
        elif group.has_all_members_joined or now >= group.join_deadline_ms:
            self._complete_join(group)

    def _complete_join(self, group: Group) -> None:
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
        now = self._now_ms()
        if not group.maybe_elect_new_joined_leader() and group.members:
            # Only static members that did not rejoin are left: wait again until their sessions expire.
            group.join_deadline_ms = now + group.rebalance_timeout_ms
            self._schedule(group.join_deadline_ms)
            return
        group.init_next_generation(now)
        if group.is_(EMPTY):
            log.info("group %s is empty at generation %d", group.group_id, group.generation_id)
            try:
                self._store_group(group)
            except Exception as exc:
                log.warning("cannot persist empty group %s: %s", group.group_id, exc)
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
        self._schedule(group.sync_deadline_ms)

    def _on_sync_expired(self, group: Group) -> None:
        group.sync_deadline_ms = None
        if group.state not in (COMPLETING, STABLE) or not group.pending_sync:
            return
        missing = sorted(group.pending_sync)
        log.info("members %s of group %s did not send SyncGroup in time: removed", missing, group.group_id)
        for member_id in missing:
            member = group.remove(member_id)
            if member is not None:
                self._invoke_join(member, _join_error("", ErrorCode.UNKNOWN_MEMBER_ID))
        self._prepare_rebalance(group)

    def _remove_pending_sync(self, group: Group, member_id: str) -> None:
        group.pending_sync.discard(member_id)
        if not group.pending_sync:
            group.sync_deadline_ms = None

    def _remove_member_and_update_group(self, group: Group, member: Member) -> None:
        self._invoke_join(member, _join_error("", ErrorCode.UNKNOWN_MEMBER_ID))
        self._invoke_sync(member, _sync_error(ErrorCode.UNKNOWN_MEMBER_ID))
        group.remove(member.member_id)
        if group.state in (STABLE, COMPLETING):
            self._maybe_prepare_rebalance(group)
        elif group.is_(PREPARING):
            self._check_join(group)

    def _set_and_propagate_assignment(self, group: Group, assignment: Mapping[str, bytes]) -> None:
        for member in group.members.values():
            member.assignment = assignment.get(member.member_id, b"")
        self._propagate_assignment(group, None)

    def _reset_and_propagate_assignment_error(self, group: Group, error: ErrorCode) -> None:
        for member in group.members.values():
            member.assignment = b""
        self._propagate_assignment(group, error)

    def _propagate_assignment(self, group: Group, error: ErrorCode | None) -> None:
        for member in group.members.values():
            if error is None:
                result = {
                    "error_code": NONE,
                    "protocol_type": group.protocol_type,
                    "protocol_name": group.protocol_name,
                    "assignment": member.assignment,
                }
            else:
                result = _sync_error(error)
            if self._invoke_sync(member, result):
                self._reschedule_heartbeat(member)

    # -- SyncGroup -------------------------------------------------------------------------------------------

    async def sync_group(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:
        self._ensure_loaded()
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
            return _sync_error(ErrorCode.INVALID_GROUP_ID)
        group = self._groups.get(group_id)
        if group is None:
            return _sync_error(ErrorCode.UNKNOWN_MEMBER_ID)
        if group.is_(DEAD):
            return _sync_error(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        error = self._validate_current_member(group, member_id, instance_id)
        if error is not None:
            return _sync_error(error)
        if generation != group.generation_id:
            return _sync_error(ErrorCode.ILLEGAL_GENERATION)
        protocol_type = req.get("protocol_type")
        protocol_name = req.get("protocol_name")
        if (protocol_type is not None and protocol_type != group.protocol_type) or (
            protocol_name is not None and protocol_name != group.protocol_name
        ):
            return _sync_error(ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
        if group.is_(EMPTY):
            return _sync_error(ErrorCode.UNKNOWN_MEMBER_ID)
        if group.is_(PREPARING):
            return _sync_error(ErrorCode.REBALANCE_IN_PROGRESS)
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
        _resolve(old, _sync_error(ErrorCode.REBALANCE_IN_PROGRESS))
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
            try:
                self._store_group(group, assignment)
            except Exception as exc:
                log.warning("cannot persist group %s: %s", group.group_id, exc)
                self._reset_and_propagate_assignment_error(group, ErrorCode.COORDINATOR_NOT_AVAILABLE)
                self._maybe_prepare_rebalance(group)
            else:
                self._set_and_propagate_assignment(group, assignment)
                group.transition(STABLE, self._now_ms())
        return fut

    # -- Heartbeat / LeaveGroup ------------------------------------------------------------------------------

    async def heartbeat(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:
        self._ensure_loaded()
        return {"throttle_time_ms": 0, "error_code": int(self._handle_heartbeat(req))}

    def _handle_heartbeat(self, req: dict[str, Any]) -> ErrorCode:
        group_id = req.get("group_id") or ""
        member_id = req.get("member_id") or ""
        if not group_id:
            return ErrorCode.INVALID_GROUP_ID
        group = self._groups.get(group_id)
        if group is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if group.is_(DEAD):
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        error = self._validate_current_member(group, member_id, req.get("group_instance_id"))
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
        self._ensure_loaded()
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
        group = self._groups.get(group_id)
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
                error = self._validate_current_member(group, member_id, instance_id)
                if error is not None:
                    results.append(answer(identity, error))
                    continue
            log.info("member %s leaves group %s (%s)", member_id, group_id, reason)
            self._remove_member_and_update_group(group, group.members[member_id])
            results.append(answer(identity, ErrorCode.NO_ERROR))
        return ErrorCode.NO_ERROR, results

    # -- OffsetCommit / OffsetFetch --------------------------------------------------------------------------

    def _partition_exists(self, topic: str, partition: int) -> bool:
        count = self._partitions_of(topic)
        return count is not None and 0 <= partition < count

    def _validate_offset_commit(
        self, group: Group, generation: int, member_id: str, instance_id: str | None
    ) -> ErrorCode | None:
        if group.is_(DEAD):
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        if generation < 0 and group.is_(EMPTY):
            # Admin clients and consumers that assign partitions themselves commit with generation -1.
            return None
        if generation >= 0 or member_id or instance_id is not None:
            error = self._validate_current_member(group, member_id, instance_id)
            if error is not None:
                return error
            if generation != group.generation_id:
                return ErrorCode.ILLEGAL_GENERATION
            return None
        if not group.is_(EMPTY):
            return ErrorCode.UNKNOWN_MEMBER_ID
        return None

    async def offset_commit(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:
        self._ensure_loaded()
        group_id = req.get("group_id")
        generation = int(req.get("generation_id_or_member_epoch", req.get("generation_id", -1)))
        member_id = req.get("member_id") or ""
        instance_id = req.get("group_instance_id")
        retention_ms = int(req.get("retention_time_ms", -1)) if 2 <= version <= 4 else -1
        now = self._now_ms()

        # (topic index, partition index) -> error, filled as each partition is settled.
        topics: list[dict[str, Any]] = list(req.get("topics") or [])
        errors: dict[tuple[int, int], ErrorCode] = {}
        to_store: list[tuple[tuple[int, int], str, int, OffsetAndMetadata]] = []
        for ti, topic in enumerate(topics):
            name = topic.get("name") or ""
            for pi, part in enumerate(topic.get("partitions") or []):
                index = int(part.get("partition_index", 0))
                if not self._partition_exists(name, index):
                    errors[(ti, pi)] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                    continue
                metadata = part.get("committed_metadata")
                if metadata is None:
                    metadata = ""
                if len(metadata) > self.config.offset_metadata_max_bytes:
                    errors[(ti, pi)] = ErrorCode.OFFSET_METADATA_TOO_LARGE
                    continue
                om = OffsetAndMetadata(
                    offset=int(part.get("committed_offset", -1)),
                    leader_epoch=int(part.get("committed_leader_epoch", -1)),
                    metadata=metadata,
                    commit_timestamp_ms=now,
                    expire_timestamp_ms=now + retention_ms if retention_ms >= 0 else None,
                )
                to_store.append(((ti, pi), name, index, om))

        if to_store:
            error = self._commit(group_id, generation, member_id, instance_id, to_store)
            for pos, _, _, _ in to_store:
                errors[pos] = error

        return {
            "throttle_time_ms": 0,
            "topics": [
                {
                    "name": topic.get("name") or "",
                    "partitions": [
                        {
                            "partition_index": int(part.get("partition_index", 0)),
                            "error_code": int(errors.get((ti, pi), ErrorCode.NO_ERROR)),
                        }
                        for pi, part in enumerate(topic.get("partitions") or [])
                    ],
                }
                for ti, topic in enumerate(topics)
            ],
        }

    def _commit(
        self,
        group_id: str | None,
        generation: int,
        member_id: str,
        instance_id: str | None,
        to_store: list[tuple[tuple[int, int], str, int, OffsetAndMetadata]],
    ) -> ErrorCode:
        if group_id is None:
            return ErrorCode.INVALID_GROUP_ID
        group = self._groups.get(group_id)
        created = False
        if group is None:
            if generation >= 0:
                # Not a group managed here (or a commit from a generation long gone).
                return ErrorCode.ILLEGAL_GENERATION
            group = Group(group_id)
            created = True
        error = self._validate_offset_commit(group, generation, member_id, instance_id)
        if error is not None:
            return error
        if group.is_(COMPLETING):
            # The member knows the new generation but has not synced yet.
            return ErrorCode.REBALANCE_IN_PROGRESS
        if group.state in (STABLE, PREPARING) and group.has(member_id):
            self._reschedule_heartbeat(group.members[member_id])
        entries: list[Entry] = [
            (logformat.offset_key(group_id, topic, partition), logformat.offset_value(om))
            for _, topic, partition, om in to_store
        ]
        try:
            self._append(entries)
        except Exception as exc:
            log.warning("cannot persist offsets of group %s: %s", group_id, exc)
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        if created:
            log.info("group %s created by an offset commit", group_id)
            self._groups[group_id] = group
        for _, topic, partition, om in to_store:
            group.offsets[(topic, partition)] = om
        return ErrorCode.NO_ERROR

    async def offset_fetch(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:
        self._ensure_loaded()
        require_stable = bool(req.get("require_stable", False))
        if version >= 8:
            groups = []
            for g in req.get("groups") or []:
                error, topics = self._fetch_offsets(g.get("group_id"), g.get("topics"), require_stable)
                groups.append(
                    {"group_id": g.get("group_id") or "", "topics": topics, "error_code": int(error)}
                )
            return {"throttle_time_ms": 0, "groups": groups}
        requested = req.get("topics")
        if version < 2 and requested is None:
            requested = []
        error, topics = self._fetch_offsets(req.get("group_id"), requested, require_stable)
        return {"throttle_time_ms": 0, "topics": topics, "error_code": int(error)}

    def _fetch_offsets(
        self, group_id: str | None, requested: list[dict[str, Any]] | None, require_stable: bool
    ) -> tuple[ErrorCode, list[Result]]:
        if group_id is None:
            return ErrorCode.INVALID_GROUP_ID, []
        group = self._groups.get(group_id)
        offsets = group.offsets if group is not None and not group.is_(DEAD) else {}
        if requested is None:
            wanted: dict[str, list[int]] = {}
            for topic, partition in sorted(offsets):
                wanted.setdefault(topic, []).append(partition)
            items: Iterable[tuple[str, list[int]]] = wanted.items()
        else:
            items = [(t.get("name") or "", list(t.get("partition_indexes") or [])) for t in requested]
        unstable: set[tuple[str, int]] = set()
        if require_stable:
            for pending in self._txn_offsets.get(group_id, {}).values():
                unstable.update(pending)
        topics = []
        for name, partitions in items:
            parts = []
            for index in partitions:
                om = offsets.get((name, index))
                if (name, index) in unstable:
                    # A transaction holding an offset of this partition has not ended: ask again later.
                    parts.append(
                        {
                            "partition_index": index,
                            "committed_offset": -1,
                            "committed_leader_epoch": -1,
                            "metadata": "",
                            "error_code": int(ErrorCode.UNSTABLE_OFFSET_COMMIT),
                        }
                    )
                elif om is None:
                    parts.append(
                        {
                            "partition_index": index,
                            "committed_offset": -1,
                            "committed_leader_epoch": -1,
                            "metadata": "",
                            "error_code": NONE,
                        }
                    )
                else:
                    parts.append(
                        {
                            "partition_index": index,
                            "committed_offset": om.offset,
                            "committed_leader_epoch": om.leader_epoch if self._report_leader_epoch else -1,
                            "metadata": om.metadata if om.metadata is not None else "",
                            "error_code": NONE,
                        }
                    )
            topics.append({"name": name, "partitions": parts})
        return ErrorCode.NO_ERROR, topics

    # -- TxnOffsetCommit and transaction ends ---------------------------------------------------------------

    async def txn_offset_commit(self, req: dict[str, Any], version: int) -> Result:
        """TxnOffsetCommit (the transaction coordinator has checked the producer): offsets held pending until
        the transaction ends (``complete_txn_offsets``)."""
        self._ensure_loaded()
        group_id = req.get("group_id") or ""
        producer_id = int(req["producer_id"])
        now = self._now_ms()
        topics: list[dict[str, Any]] = list(req.get("topics") or [])
        error: ErrorCode | None = None
        group = self._groups.get(group_id)
        generation = int(req.get("generation_id", -1))
        if group is not None and version >= 3 and (generation >= 0 or req.get("member_id")):
            error = self._validate_offset_commit(
                group, generation, req.get("member_id") or "", req.get("group_instance_id")
            )
        errors: dict[tuple[int, int], ErrorCode] = {}
        to_store: dict[tuple[str, int], OffsetAndMetadata] = {}
        for ti, topic in enumerate(topics):
            name = topic.get("name") or ""
            for pi, part in enumerate(topic.get("partitions") or []):
                index = int(part.get("partition_index", 0))
                metadata = part.get("committed_metadata")
                if error is not None:
                    errors[(ti, pi)] = error
                elif not self._partition_exists(name, index):
                    errors[(ti, pi)] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                elif metadata is not None and len(metadata) > self.config.offset_metadata_max_bytes:
                    errors[(ti, pi)] = ErrorCode.OFFSET_METADATA_TOO_LARGE
                else:
                    to_store[(name, index)] = OffsetAndMetadata(
                        offset=int(part.get("committed_offset", -1)),
                        leader_epoch=int(part.get("committed_leader_epoch", -1)),
                        metadata=metadata if metadata is not None else "",
                        commit_timestamp_ms=now,
                    )
        if to_store:
            entries: list[Entry] = [
                (logformat.txn_offset_key(group_id, t, p, producer_id), logformat.offset_value(om))
                for (t, p), om in to_store.items()
            ]
            try:
                self._append(entries)
                self._txn_offsets.setdefault(group_id, {}).setdefault(producer_id, {}).update(to_store)
            except Exception as exc:
                log.warning("cannot persist transactional offsets of group %s: %s", group_id, exc)
                error = ErrorCode.COORDINATOR_NOT_AVAILABLE
                for ti, topic in enumerate(topics):
                    for pi, _ in enumerate(topic.get("partitions") or []):
                        errors.setdefault((ti, pi), error)
        return {
            "throttle_time_ms": 0,
            "topics": [
                {
                    "name": topic.get("name") or "",
                    "partitions": [
                        {
                            "partition_index": int(part.get("partition_index", 0)),
                            "error_code": int(errors.get((ti, pi), ErrorCode.NO_ERROR)),
                        }
                        for pi, part in enumerate(topic.get("partitions") or [])
                    ],
                }
                for ti, topic in enumerate(topics)
            ],
        }

    def complete_txn_offsets(self, group_id: str, producer_id: int, commit: bool) -> None:
        """The producer's transaction ended: its pending offsets of the group become committed offsets
        (commit) or are dropped (abort)."""
        self._ensure_loaded()
        by_producer = self._txn_offsets.get(group_id)
        pending = by_producer.pop(producer_id, None) if by_producer is not None else None
        if by_producer is not None and not by_producer:
            del self._txn_offsets[group_id]
        if not pending:
            return
        entries: list[Entry] = [
            (logformat.txn_offset_key(group_id, t, p, producer_id), None) for (t, p) in pending
        ]
        if commit:
            entries += [
                (logformat.offset_key(group_id, t, p), logformat.offset_value(om))
                for (t, p), om in pending.items()
            ]
        try:
            self._append(entries)
        except Exception as exc:
            log.error("cannot persist the end of a transaction's offsets of group %s: %s", group_id, exc)
        if commit:
            group = self._groups.get(group_id)
            if group is None:
                group = self._groups[group_id] = Group(group_id)
            group.offsets.update(pending)

    def pending_txn_offsets(self, group_id: str) -> dict[int, dict[tuple[str, int], OffsetAndMetadata]]:
        """Offsets of ``group_id`` held by ongoing transactions, per producer id."""
        return {pid: dict(p) for pid, p in self._txn_offsets.get(group_id, {}).items()}

    # -- FindCoordinator -------------------------------------------------------------------------------------

    async def find_coordinator(self, req: dict[str, Any], version: int, node: tuple[int, str, int]) -> Result:
        node_id, host, port = node

        def lookup(key_type: int) -> tuple[ErrorCode, str | None]:
            if key_type in (0, 1):
                return ErrorCode.NO_ERROR, None
            return ErrorCode.INVALID_REQUEST, f"unknown coordinator key type {key_type}"

        key_type = int(req.get("key_type", 0))
        if version >= 4:
            coordinators = []
            for key in req.get("coordinator_keys") or []:
                error, message = lookup(key_type)
                ok = error == ErrorCode.NO_ERROR
                coordinators.append(
                    {
                        "key": key,
                        "node_id": node_id if ok else -1,
                        "host": host if ok else "",
                        "port": port if ok else -1,
                        "error_code": int(error),
                        "error_message": message,
                    }
                )
            return {"throttle_time_ms": 0, "coordinators": coordinators}
        error, message = lookup(key_type)
        ok = error == ErrorCode.NO_ERROR
        return {
            "throttle_time_ms": 0,
            "error_code": int(error),
            "error_message": message,
            "node_id": node_id if ok else -1,
            "host": host if ok else "",
            "port": port if ok else -1,
        }

    # -- DescribeGroups / ListGroups / DeleteGroups / OffsetDelete -------------------------------------------

    def _describe_entry(self, group_id: str, group: Group | None) -> Result:
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

    async def describe_groups(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:
        self._ensure_loaded()
        groups = []
        for group_id in req.get("groups") or []:
            if group_id is None:
                groups.append(
                    {
                        **self._describe_entry("", None),
                        "error_code": int(ErrorCode.INVALID_GROUP_ID),
                        "group_state": "",
                    }
                )
                continue
            groups.append(self._describe_entry(group_id, self._groups.get(group_id)))
        return {"throttle_time_ms": 0, "groups": groups}

    async def list_groups(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:
        self._ensure_loaded()
        states = {s.lower() for s in req.get("states_filter") or []}
        types = {t.lower() for t in req.get("types_filter") or []}
        groups = []
        if not types or "classic" in types:
            for group in self._groups.values():
                if group.is_(DEAD) or (states and group.state.value.lower() not in states):
                    continue
                groups.append(
                    {
                        "group_id": group.group_id,
                        "protocol_type": group.protocol_type or "",
                        "group_state": group.state.value,
                        "group_type": "classic",
                    }
                )
        return {"throttle_time_ms": 0, "error_code": NONE, "groups": groups}

    async def delete_groups(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:
        self._ensure_loaded()
        results = []
        for group_id in req.get("groups_names") or []:
            results.append({"group_id": group_id, "error_code": int(self._delete_group(group_id))})
        return {"throttle_time_ms": 0, "results": results}

    def _delete_group(self, group_id: str | None) -> ErrorCode:
        if group_id is None:
            return ErrorCode.INVALID_GROUP_ID
        group = self._groups.get(group_id)
        if group is None or group.is_(DEAD):
            return ErrorCode.GROUP_ID_NOT_FOUND
        if not group.is_(EMPTY):
            return ErrorCode.NON_EMPTY_GROUP
        entries: list[Entry] = [(logformat.offset_key(group_id, t, p), None) for t, p in group.offsets]
        entries.append((logformat.group_key(group_id), None))
        try:
            self._append(entries)
        except Exception as exc:
            log.warning("cannot persist the deletion of group %s: %s", group_id, exc)
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        group.transition(DEAD, self._now_ms())
        del self._groups[group_id]
        log.info("group %s deleted with %d offsets", group_id, len(group.offsets))
        group.offsets = {}
        return ErrorCode.NO_ERROR

    async def offset_delete(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:
        self._ensure_loaded()
        group_id = req.get("group_id")
        topics = list(req.get("topics") or [])

        def group_error(code: ErrorCode) -> Result:
            return {"throttle_time_ms": 0, "error_code": int(code), "topics": []}

        if group_id is None:
            return group_error(ErrorCode.INVALID_GROUP_ID)
        group = self._groups.get(group_id)
        if group is None or group.is_(DEAD):
            return group_error(ErrorCode.GROUP_ID_NOT_FOUND)
        if not group.is_(EMPTY) and not group.is_consumer_group:
            return group_error(ErrorCode.NON_EMPTY_GROUP)
        deletable: list[tuple[str, int]] = []
        results = []
        for topic in topics:
            name = topic.get("name") or ""
            parts = []
            for part in topic.get("partitions") or []:
                index = int(part.get("partition_index", 0))
                if not self._partition_exists(name, index):
                    code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                elif not group.is_(EMPTY) and group.is_subscribed_to(name):
                    code = ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC
                else:
                    code = ErrorCode.NO_ERROR
                    deletable.append((name, index))
                parts.append({"partition_index": index, "error_code": int(code)})
            results.append({"name": name, "partitions": parts})
        present = [tp for tp in dict.fromkeys(deletable) if tp in group.offsets]
        if present:
            try:
                self._append([(logformat.offset_key(group_id, t, p), None) for t, p in present])
            except Exception as exc:
                log.warning("cannot persist offset deletion in group %s: %s", group_id, exc)
                return group_error(ErrorCode.COORDINATOR_NOT_AVAILABLE)
            for tp in present:
                del group.offsets[tp]
        self._maybe_drop_group(group)
        return {"throttle_time_ms": 0, "error_code": NONE, "topics": results}

    # -- offset retention ------------------------------------------------------------------------------------

    def expire_offsets(self) -> int:
        """Drop offsets past ``offsets.retention.minutes`` and groups left empty; return how many offsets."""
        self._ensure_loaded()
        now = self._now_ms()
        retention = self.config.offsets_retention_ms
        removed = 0
        for group in list(self._groups.values()):
            expired = self._expired_offsets(group, now, retention)
            if expired:
                try:
                    self._append([(logformat.offset_key(group.group_id, t, p), None) for t, p in expired])
                except Exception as exc:
                    log.warning("cannot persist expired offsets of group %s: %s", group.group_id, exc)
                    continue
                for tp in expired:
                    del group.offsets[tp]
                removed += len(expired)
            self._maybe_drop_group(group)
        if removed:
            log.info("removed %d expired offsets", removed)
        return removed

    def _maybe_drop_group(self, group: Group) -> None:
        if not group.is_(EMPTY) or group.offsets or group.pending_members:
            return
        try:
            self._append([(logformat.group_key(group.group_id), None)])
        except Exception as exc:
            log.warning("cannot persist the removal of group %s: %s", group.group_id, exc)
            return
        group.transition(DEAD, self._now_ms())
        self._groups.pop(group.group_id, None)
        log.info("group %s is empty and has no offsets: removed", group.group_id)

    @staticmethod
    def _expired_offsets(group: Group, now: int, retention: int) -> list[tuple[str, int]]:
        empty_since: int | None = None
        subscribed: frozenset[str] = frozenset()
        if group.protocol_type is not None and group.is_(EMPTY):
            # Retention counts from the moment the group became empty (Kafka 2.1+).
            empty_since = group.state_timestamp_ms
        elif group.is_consumer_group and group.subscribed_topics is not None and group.is_(STABLE):
            # A stable consumer group keeps the offsets of the topics it subscribes to.
            subscribed = group.subscribed_topics
        elif group.protocol_type is not None:
            return []
        expired = []
        for tp, om in group.offsets.items():
            if tp[0] in subscribed:
                continue
            if om.expire_timestamp_ms is not None:
                if now >= om.expire_timestamp_ms:
                    expired.append(tp)
            elif now - (om.commit_timestamp_ms if empty_since is None else empty_since) >= retention:
                expired.append(tp)
        return expired

    # -- introspection (CLI, metrics) ----------------------------------------------------------------------

    def groups_overview(self) -> list[dict[str, Any]]:
        """One line per group: id, protocol type, state, generation, member count, committed offset count."""
        self._ensure_loaded()
        return [
            {
                "group_id": g.group_id,
                "protocol_type": g.protocol_type or "",
                "state": g.state.value,
                "generation_id": g.generation_id,
                "members": len(g.members),
                "offsets": len(g.offsets),
            }
            for g in self._groups.values()
        ]

    def describe(self, group_id: str) -> dict[str, Any] | None:
        """State, protocol, leader and members (with assignments) of a group; None if it does not exist."""
        self._ensure_loaded()
        group = self._groups.get(group_id)
        if group is None:
            return None
        return {
            "group_id": group.group_id,
            "state": group.state.value,
            "protocol_type": group.protocol_type or "",
            "protocol": group.protocol_name or "",
            "generation_id": group.generation_id,
            "leader": group.leader_id or "",
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
                for m in group.members.values()
            ],
        }

    def committed_offsets(self, group_id: str) -> dict[tuple[str, int], OffsetAndMetadata]:
        """The group's committed offsets by (topic, partition); empty if the group does not exist."""
        self._ensure_loaded()
        group = self._groups.get(group_id)
        return dict(group.offsets) if group is not None else {}
