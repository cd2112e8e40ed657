"""The group coordinator: the registry of groups, the group log, the offsets store and the timers, with the
group protocols running over them.

Each group protocol is a sibling module working on its own kind of group (``classic.ClassicProtocol`` on
classic groups); the offsets store (``offsets.OffsetStore``) keeps every group's committed offsets and serves
the offset APIs; the group log (``log.GroupLog``) makes both durable. This object routes each API to the
protocol of the group it names or to the offsets store, answers the APIs about groups of any type
(DescribeGroups, ListGroups, DeleteGroups, FindCoordinator), runs the timers (a background task wakes when the
next deadline of any protocol, or offset retention, is due) and rewrites the log when it holds mostly
superseded entries. It is also what the protocols and the store see of the rest (``context.GroupContext``).

All state is changed only from the event loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from kafkite.protocol.errors import ErrorCode

from . import logformat
from .classic.protocol import ClassicProtocol
from .classic.state import ClassicGroup
from .config import GroupConfig
from .group import Group
from .log import Entry, GroupLog, MemoryGroupLog
from .offsets import OffsetAndMetadata, OffsetStore

log = logging.getLogger("kafkite.groups")

# Longest the background task sleeps between checks, whatever the next deadline.
MAX_TICK_INTERVAL_S = 1.0

NONE = int(ErrorCode.NO_ERROR)

Result = dict[str, Any]


class GroupCoordinator:
    """Coordinator of every group of this broker, and keeper of their committed offsets.

    ``partitions_of(topic)`` answers how many partitions a topic has (None: no such topic). ``log`` is where
    groups and offsets are made durable (rebuilt from it by ``load()``/``start()``); ``config`` a GroupConfig
    or a mapping of Kafka setting names; ``now_ms`` the clock.
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
        self._clock = now_ms or (lambda: int(time.time() * 1000))
        self._report_leader_epoch = report_leader_epoch
        # Every group by id, whatever its type (a group id names one group of one type at a time).
        self.groups: dict[str, Group] = {}
        self.offsets = OffsetStore(self)
        self.classic = ClassicProtocol(self)
        self._loaded = False
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._next_wake_ms: float = float("inf")
        self._next_retention_check_ms: int | None = None
        # Entries appended to the log since it last held only live state (see maybe_compact_log).
        self._appended_since_compaction = 0
        self._compact_after_entries = compact_after_entries

    # -- what the protocols get (GroupContext) ---------------------------------------------------------------

    def now_ms(self) -> int:
        return self._clock()

    def append(self, entries: list[Entry]) -> None:
        """Append entries to the group log; raise if they are not durable."""
        if not entries:
            return
        self._log.append(entries)
        self._appended_since_compaction += len(entries)

    def schedule(self, deadline_ms: int) -> None:
        """Make sure the timer task runs again no later than ``deadline_ms``."""
        if self._wake is not None and deadline_ms < self._next_wake_ms:
            self._next_wake_ms = deadline_ms
            self._wake.set()

    def partitions_of(self, topic: str) -> int | None:
        return self._partitions_of(topic)

    @property
    def report_leader_epoch(self) -> bool:
        return self._report_leader_epoch

    def simple_group(self, group_id: str) -> Group:
        """A new (unregistered) group for a group id that only holds offsets."""
        return ClassicGroup(group_id)

    def on_offset_commit(self, group: Group, member_id: str) -> None:
        """A member committed offsets: a sign of life for the group's protocol."""
        if isinstance(group, ClassicGroup):
            self.classic.on_offset_commit(group, member_id)

    # -- lifecycle -------------------------------------------------------------------------------------------

    def load(self) -> None:
        """Rebuild groups and offsets from the log (once; later calls do nothing)."""
        if self._loaded:
            return
        self._loaded = True
        records: dict[str, tuple[logformat.GroupRecord, bytes]] = {}
        replayed = 0
        keys: dict[bytes, logformat.OffsetKey | logformat.GroupKey | logformat.TxnOffsetKey] = {}
        for key, value in self._log.replay():
            replayed += 1
            try:
                k = keys.get(key) or keys.setdefault(key, logformat.decode_key(key))
                if isinstance(k, logformat.OffsetKey | logformat.TxnOffsetKey):
                    self.offsets.replay(k, value)
                elif value is None:
                    records.pop(k.group_id, None)
                else:
                    records[k.group_id] = (logformat.decode_group_value(value), value)
            except logformat.LogFormatError as exc:
                log.warning("skipping an undecodable entry of the group log: %s", exc)
        self.offsets.finish_load()
        now = self.now_ms()
        for group_id, (rec, raw) in records.items():
            self.groups[group_id] = ClassicGroup.restore(group_id, rec, raw, now)
        for group_id in self.offsets.groups():
            if group_id not in self.groups:
                # Offsets without a group: a "simple" group of consumers that assign partitions themselves.
                self.groups[group_id] = ClassicGroup(group_id)
        self._appended_since_compaction = replayed
        log.info("loaded %d groups from %d entries of the group log", len(self.groups), replayed)

    async def start(self) -> None:
        """Load state from the log and start the task that runs the timers."""
        self.load()
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="group-coordinator-timers")

    async def stop(self) -> None:
        """Stop the timer task and answer every waiting request (NOT_COORDINATOR)."""
        task, self._task = self._task, None
        wake, self._wake = self._wake, None
        if task is not None:
            if wake is not None:
                wake.set()
            task.cancel()
            # The task's own cancellation is returned, not raised; the caller's is raised.
            await asyncio.gather(task, return_exceptions=True)
        self.classic.stop()

    async def _run(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:
                log.exception("group coordinator timers failed")
            wake = self._wake
            if wake is None:
                return
            now = self.now_ms()
            nxt = self._next_deadline()
            self._next_wake_ms = nxt
            timeout = min(max((nxt - now) / 1000.0, 0.0), MAX_TICK_INTERVAL_S)
            wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await wake.wait()

    def _next_deadline(self) -> float:
        nxt: float = float("inf")
        if self._next_retention_check_ms is not None:
            nxt = self._next_retention_check_ms
        return min(nxt, self.classic.next_deadline())

    def tick(self) -> None:
        """Run every timer that is due: the protocols' session and rebalance timers, offset retention."""
        self.load()
        now = self.now_ms()
        self.classic.expire(now)
        if self._next_retention_check_ms is None:
            self._next_retention_check_ms = now + self.config.offsets_retention_check_interval_ms
        elif now >= self._next_retention_check_ms:
            self._next_retention_check_ms = now + self.config.offsets_retention_check_interval_ms
            self.expire_offsets()
        self.maybe_compact_log()

    # -- the group log ---------------------------------------------------------------------------------------

    def maybe_compact_log(self, *, force: bool = False) -> bool:
        """Rewrite the log as just the live state once it holds mostly superseded entries.

        Only logs with a ``compact(entries)`` method take part (both logs of this package have one).
        """
        compact = getattr(self._log, "compact", None)
        if compact is None:
            return False
        if not force:
            live_count = self.offsets.live_count + sum(len(g.live_entries()) for g in self.groups.values())
            if self._appended_since_compaction < max(self._compact_after_entries, live_count):
                return False
        live: list[Entry] = []
        for group in self.groups.values():
            live.extend(group.live_entries())
        live.extend(self.offsets.live_entries())
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

    # -- the classic protocol --------------------------------------------------------------------------------

    async def join_group(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:
        self.load()
        return await self.classic.join_group(req, version, client_id=client_id, client_host=client_host)

    async def sync_group(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:
        self.load()
        return await self.classic.sync_group(req, version, client_id=client_id, client_host=client_host)

    async def heartbeat(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:
        self.load()
        return await self.classic.heartbeat(req, version, client_id=client_id, client_host=client_host)

    async def leave_group(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:
        self.load()
        return await self.classic.leave_group(req, version, client_id=client_id, client_host=client_host)

    # -- offsets -------------------------------------------------------------------------------------------

    async def offset_commit(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:
        self.load()
        return await self.offsets.handle_commit(req, version)

    async def offset_fetch(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:
        self.load()
        return await self.offsets.handle_fetch(req, version)

    async def offset_delete(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:
        self.load()
        return await self.offsets.handle_delete(req, version)

    async def txn_offset_commit(self, req: dict[str, Any], version: int) -> Result:
        """TxnOffsetCommit (the transaction coordinator has checked the producer): offsets held pending until
        the transaction ends (``complete_txn_offsets``)."""
        self.load()
        return await self.offsets.handle_txn_commit(req, version)

    # -- TxnOffsetCommit and transaction ends ---------------------------------------------------------------

    def complete_txn_offsets(self, group_id: str, producer_id: int, commit: bool) -> None:
        """The producer's transaction ended: its pending offsets of the group become committed offsets
        (commit) or are dropped (abort)."""
        self.load()
        committed = self.offsets.complete_pending(group_id, producer_id, commit)
        if committed and group_id not in self.groups:
            self.groups[group_id] = ClassicGroup(group_id)

    def pending_txn_offsets(self, group_id: str) -> dict[int, dict[tuple[str, int], OffsetAndMetadata]]:
        """Offsets of ``group_id`` held by ongoing transactions, per producer id."""
        return self.offsets.pending(group_id)

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

    async def describe_groups(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:
        self.load()
        groups = []
        for group_id in req.get("groups") or []:
            if group_id is None:
                groups.append(
                    {
                        **self.classic.describe_entry("", None),
                        "error_code": int(ErrorCode.INVALID_GROUP_ID),
                        "group_state": "",
                    }
                )
                continue
            group = self.groups.get(group_id)
            groups.append(
                self.classic.describe_entry(group_id, group if isinstance(group, ClassicGroup) else None)
            )
        return {"throttle_time_ms": 0, "groups": groups}

    async def list_groups(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:
        self.load()
        states = {s.strip().lower() for s in req.get("states_filter") or []}
        types = {t.strip().lower() for t in req.get("types_filter") or []}
        groups = []
        for group in self.groups.values():
            if group.is_dead or (states and group.state_name.lower() not in states):
                continue
            if types and group.group_type.value not in types:
                continue
            groups.append(
                {
                    "group_id": group.group_id,
                    "protocol_type": group.protocol_type_name,
                    "group_state": group.state_name,
                    "group_type": group.group_type.value,
                }
            )
        return {"throttle_time_ms": 0, "error_code": NONE, "groups": groups}

    async def delete_groups(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:
        self.load()
        results = []
        for group_id in req.get("groups_names") or []:
            results.append({"group_id": group_id, "error_code": int(self._delete_group(group_id))})
        return {"throttle_time_ms": 0, "results": results}

    def _delete_group(self, group_id: str | None) -> ErrorCode:
        if group_id is None:
            return ErrorCode.INVALID_GROUP_ID
        group = self.groups.get(group_id)
        if group is None or group.is_dead:
            return ErrorCode.GROUP_ID_NOT_FOUND
        error = group.validate_delete()
        if error is not None:
            return error
        count = len(self.offsets.committed(group_id))
        try:
            self.append(self.offsets.tombstones(group_id) + group.tombstones())
        except Exception as exc:
            log.warning("cannot persist the deletion of group %s: %s", group_id, exc)
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        group.mark_dead(self.now_ms())
        del self.groups[group_id]
        self.offsets.forget(group_id)
        log.info("group %s deleted with %d offsets", group_id, count)
        return ErrorCode.NO_ERROR

    # -- offset retention ------------------------------------------------------------------------------------

    def expire_offsets(self) -> int:
        """Drop offsets past ``offsets.retention.minutes`` and groups left empty; return how many offsets."""
        self.load()
        return self.offsets.expire()

    def maybe_drop_group(self, group: Group) -> None:
        """Remove an empty group that holds no offsets any more."""
        if not group.is_droppable or self.offsets.has_offsets(group.group_id):
            return
        try:
            self.append(group.tombstones())
        except Exception as exc:
            log.warning("cannot persist the removal of group %s: %s", group.group_id, exc)
            return
        group.mark_dead(self.now_ms())
        self.groups.pop(group.group_id, None)
        log.info("group %s is empty and has no offsets: removed", group.group_id)

    # -- introspection (CLI, metrics) ----------------------------------------------------------------------

    def groups_overview(self) -> list[dict[str, Any]]:
        """One line per group: id, type, protocol type, state, generation or epoch, members, offsets."""
        self.load()
        return [
            {
                "group_id": g.group_id,
                "group_type": g.group_type.value,
                "protocol_type": g.protocol_type_name,
                "state": g.state_name,
                "generation_id": g.epoch,
                "members": g.member_count,
                "offsets": len(self.offsets.committed(g.group_id)),
            }
            for g in self.groups.values()
        ]

    def describe(self, group_id: str) -> dict[str, Any] | None:
        """State, protocol and members (with assignments) of a group; None if it does not exist."""
        self.load()
        group = self.groups.get(group_id)
        return None if group is None else group.describe()

    def committed_offsets(self, group_id: str) -> dict[tuple[str, int], OffsetAndMetadata]:
        """The group's committed offsets by (topic, partition); empty if the group does not exist."""
        self.load()
        return dict(self.offsets.committed(group_id)) if group_id in self.groups else {}
