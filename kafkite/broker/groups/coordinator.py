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
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from kafkite import clock
from kafkite.protocol.errors import ErrorCode, KafkaProtocolError

from . import logformat
from .classic.protocol import ClassicProtocol
from .classic.state import ClassicGroup
from .config import GROUP_CONFIGS, GroupConfig, GroupConfigValue, validate_group_configs
from .consumer import embedded
from .consumer.protocol import ConsumerProtocol
from .consumer.state import ConsumerGroup
from .context import DescribableTopics, GroupProtocol, TopicInfo
from .group import Group
from .log import Entry, GroupLog, MemoryGroupLog, store_error
from .offsets import OffsetAndMetadata, OffsetStore
from .share import apis
from .share.protocol import ShareProtocol
from .share.state import ShareGroup

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
        topics: Callable[[], Mapping[str, TopicInfo]] | None = None,
        is_internal_topic: Callable[[str], bool] | None = None,
    ) -> None:
        self._partitions_of = partitions_of
        self._topics = topics or (lambda: {})
        self._is_internal = is_internal_topic or (lambda name: name.startswith("__"))
        # How the members of a group name topics (None: as the catalogue does); set by a namespace layer.
        self.topic_view: Callable[[str], Callable[[str], str | None]] | None = None
        self._log: GroupLog = log if log is not None else MemoryGroupLog()
        if config is None:
            config = GroupConfig()
        elif not isinstance(config, GroupConfig):
            config = GroupConfig.from_mapping(config)
        else:
            config.validate()
        self.config: GroupConfig = config
        self._clock = now_ms or clock.now_ms
        self._report_leader_epoch = report_leader_epoch
        # Every group by id, whatever its type (a group id names one group of one type at a time).
        self.groups: dict[str, Group] = {}
        self.offsets = OffsetStore(self)
        self.classic = ClassicProtocol(self)
        self.consumer = ConsumerProtocol(self, self.classic)
        self.share = ShareProtocol(self)
        # The group protocols, one per group type.
        self.protocols: list[GroupProtocol] = [self.classic, self.consumer, self.share]
        # The share-partitions of share groups (kafkite.broker.groups.share.store), set when wired into a
        # broker; the share group offset APIs answer from it.
        self.share_store: Any = None
        # Dynamic configs of groups (IncrementalAlterConfigs on GROUP resources), by group id.
        self._group_configs: dict[str, dict[str, GroupConfigValue]] = {}
        self._configs_refreshed_ms = 0
        self._configs_task: asyncio.Future[None] | None = None
        self._loaded = False
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._next_wake_ms: float = float("inf")
        self._next_retention_check_ms: int | None = None
        # Entries appended to the log since it last held only live state (see maybe_compact_log).
        self._appended_since_compaction = 0
        self._compact_after_entries = compact_after_entries
        # Writes of group state waiting for the log (``store``), in the order they were decided.
        self._stores: collections.deque[tuple[list[Entry], Callable[[BaseException | None], None]]] = (
            collections.deque()
        )
        self._storing: asyncio.Task[None] | None = None
        self._spawned: set[asyncio.Task[None]] = set()

    # -- what the protocols get (GroupContext) ---------------------------------------------------------------

    def now_ms(self) -> int:
        return self._clock()

    def append(self, entries: list[Entry]) -> None:
        """Append entries to the group log; raise if they are not durable."""
        if not entries:
            return
        self._log.append(entries)
        self._appended_since_compaction += len(entries)

    async def append_async(self, entries: list[Entry]) -> None:
        """``append`` without holding the event loop when the log can write asynchronously (a database)."""
        if not entries:
            return
        write = getattr(self._log, "append_async", None)
        if write is None:
            self._log.append(entries)
        else:
            await write(entries)
        self._appended_since_compaction += len(entries)

    @property
    def writes_later(self) -> bool:
        """Whether the group log is written asynchronously (the database): timers then hand their writes to
        tasks instead of making them on the spot."""
        return getattr(self._log, "append_async", None) is not None

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``work`` in a task the coordinator keeps until it ends (its errors are logged)."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._spawned.add(task)

        def ended(t: asyncio.Task[None]) -> None:
            self._spawned.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("%s failed", name, exc_info=t.exception())

        task.add_done_callback(ended)

    def store(self, entries: list[Entry], done: Callable[[BaseException | None], None]) -> None:
        """Append entries to the group log behind every ``store`` before it and call ``done(None)`` once they
        are durable, ``done(error)`` if they could not be written.

        A log that writes asynchronously (the database) is written by a background task, so the event loop
        serves others meanwhile and ``done`` runs later; any other log (memory, the file engine's partition)
        is written at once and ``done`` runs before this returns. Either way the group's state is changed
        by ``done``, after the write, and writes happen in the order they were decided.
        """
        if not entries:
            done(None)
            return
        if getattr(self._log, "append_async", None) is None:
            try:
                self.append(entries)
            except Exception as exc:
                done(exc)
            else:
                done(None)
            return
        self._stores.append((entries, done))
        if self._storing is None:
            self._storing = asyncio.get_running_loop().create_task(self._write_stores(), name="group-stores")

    async def _write_stores(self) -> None:
        try:
            while self._stores:
                entries, done = self._stores.popleft()
                error: BaseException | None = None
                try:
                    await self.append_async(entries)
                except asyncio.CancelledError:
                    error = ConnectionError("the group coordinator stopped")
                    self._stores.appendleft((entries, done))
                    raise
                except Exception as exc:
                    error = exc
                try:
                    done(error)
                except Exception:
                    log.exception("a group state change failed after its write")
        finally:
            self._storing = None
            if self._stores:
                # Stopped (the coordinator is being replaced): whatever waits is told it was not written.
                pending, self._stores = list(self._stores), collections.deque()
                for _, done in pending:
                    with contextlib.suppress(Exception):
                        done(ConnectionError("the group coordinator stopped"))

    def schedule(self, deadline_ms: int) -> None:
        """Make sure the timer task runs again no later than ``deadline_ms``."""
        if self._wake is not None and deadline_ms < self._next_wake_ms:
            self._next_wake_ms = deadline_ms
            self._wake.set()

    def partitions_of(self, topic: str) -> int | None:
        return self._partitions_of(topic)

    def topics(self) -> Mapping[str, TopicInfo]:
        return self._topics()

    def group_configs(self, group_id: str) -> Mapping[str, GroupConfigValue]:
        return self._group_configs.get(group_id, {})

    def visible_topic(self, group_id: str, topic: str) -> str | None:
        if self._is_internal(topic):
            return None
        return topic if self.topic_view is None else self.topic_view(group_id)(topic)

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
        # The protocol whose record of each group id was written last (a group id holds one group).
        latest: dict[str, GroupProtocol] = {}
        replayed = 0
        keys: dict[bytes, logformat.Key] = {}
        for key, value in self._log.replay():
            replayed += 1
            try:
                k = keys.get(key) or keys.setdefault(key, logformat.decode_key(key))
                if isinstance(k, logformat.OffsetKey | logformat.TxnOffsetKey):
                    self.offsets.replay(k, value)
                elif isinstance(k, logformat.GroupConfigKey):
                    if value is None:
                        self._group_configs.pop(k.group_id, None)
                    else:
                        configs = logformat.decode_group_config_value(value)
                        self._group_configs[k.group_id] = _typed_configs(configs)
                else:
                    protocol = next((p for p in self.protocols if p.replay(k, value)), None)
                    if protocol is not None and value is not None:
                        latest[k.group_id] = protocol
            except (logformat.LogFormatError, ValueError) as exc:
                log.warning("skipping an undecodable entry of the group log: %s", exc)
        self.offsets.finish_load()
        now = self.now_ms()
        for group_id, protocol in latest.items():
            group = protocol.restored(group_id, now)
            if group is not None:
                self.groups[group_id] = group
        for group_id in self.offsets.groups():
            if group_id not in self.groups:
                # Offsets without a group: a "simple" group of consumers that assign partitions themselves.
                self.groups[group_id] = ClassicGroup(group_id)
        self._appended_since_compaction = replayed
        log.info("loaded %d groups from %d entries of the group log", len(self.groups), replayed)

    async def start(self) -> None:
        """Load state from the log and start the task that runs the timers (and the share-partitions')."""
        preload = getattr(self._log, "preload", None)
        if preload is not None and not self._loaded:
            await preload()  # a log in the database is read without holding the event loop
        self.load()
        if self.share_store is not None:
            await self.share_store.start()
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
        for protocol in self.protocols:
            protocol.stop()
        store, self.share_store = self.share_store, None
        if store is not None:
            await store.stop()

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
        return min([nxt, *(p.next_deadline() for p in self.protocols)])

    def tick(self) -> None:
        """Run every timer that is due: the protocols' session and rebalance timers, offset retention."""
        self.load()
        now = self.now_ms()
        for protocol in self.protocols:
            protocol.expire(now)
        if self._next_retention_check_ms is None:
            self._next_retention_check_ms = now + self.config.offsets_retention_check_interval_ms
        elif now >= self._next_retention_check_ms:
            self._next_retention_check_ms = now + self.config.offsets_retention_check_interval_ms
            if self.writes_later:
                self.spawn(self._expire_offsets_later(), "offset retention")
            else:
                self.expire_offsets()
        self.maybe_compact_log()
        self._refresh_group_configs(now)

    def refresh_group_configs(self) -> None:
        """Read the group configs set through other brokers now (a shared log), before a decision that
        depends on them once (where a share-partition starts), synchronously: it must be done first."""
        read = getattr(self._log, "read_group_configs", None)
        if read is None:
            return
        self._configs_refreshed_ms = self.now_ms()
        try:
            rows = read()
        except Exception as exc:
            log.warning("cannot read group configs: %s", exc)
            return
        self._apply_group_configs(rows)

    def _refresh_group_configs(self, now: int) -> None:
        """Pick up group configs set through other brokers, when the log is shared (at most once a second;
        in the background when the log reads asynchronously: a database that stops answering holds only
        that read)."""
        read = getattr(self._log, "read_group_configs", None)
        read_async = getattr(self._log, "read_group_configs_async", None)
        if (read is None and read_async is None) or now < self._configs_refreshed_ms + 1000:
            return
        self._configs_refreshed_ms = now
        if read_async is not None:
            if self._configs_task is None or self._configs_task.done():
                self._configs_task = asyncio.ensure_future(self._read_group_configs(read_async))
            return
        if read is None:
            return
        try:
            rows = read()
        except Exception as exc:
            log.warning("cannot read group configs: %s", exc)
            return
        self._apply_group_configs(rows)

    async def _read_group_configs(self, read: Callable[[], Awaitable[dict[str, bytes]]]) -> None:
        try:
            rows = await read()
        except Exception as exc:
            log.warning("cannot read group configs: %s", exc)
            return
        self._apply_group_configs(rows)

    def _apply_group_configs(self, rows: dict[str, bytes]) -> None:
        configs: dict[str, dict[str, GroupConfigValue]] = {}
        for group_id, value in rows.items():
            try:
                configs[group_id] = _typed_configs(logformat.decode_group_config_value(value))
            except (logformat.LogFormatError, ValueError):
                continue
        self._group_configs = configs

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
        for group_id, configs in self._group_configs.items():
            value = logformat.group_config_value({n: str(v) for n, v in configs.items()})
            live.append((logformat.group_config_key(group_id), value))
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

    # -- the classic protocol (and classic members of consumer groups) -------------------------------------

    async def join_group(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:
        self.load()
        group = self.groups.get(req.get("group_id") or "")
        if isinstance(group, ConsumerGroup):
            if group.members:
                return await self.consumer.classic_join(
                    group, req, version, client_id=client_id, client_host=client_host
                )
            # An empty consumer group becomes a classic group when a classic member joins.
            try:
                async with self.consumer.serial():
                    await self.append_async(group.tombstones())
            except Exception as exc:
                log.warning("cannot persist the removal of consumer group %s: %s", group.group_id, exc)
                return {**_join_error(req.get("member_id") or "", store_error(exc))}
            if self.groups.get(group.group_id) is not group or group.members:
                # A consumer member joined while the removal was written: it is written back as it is.
                self.store(group.live_entries(), lambda exc: None)
                return {**_join_error(req.get("member_id") or "", ErrorCode.COORDINATOR_NOT_AVAILABLE)}
            log.info("converting the empty consumer group %s to a classic group", group.group_id)
            group.mark_dead(self.now_ms())
            del self.groups[group.group_id]
        return await self.classic.join_group(req, version, client_id=client_id, client_host=client_host)

    async def sync_group(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:
        self.load()
        group = self.groups.get(req.get("group_id") or "")
        if isinstance(group, ConsumerGroup) and req.get("group_id"):
            return await self.consumer.classic_sync(group, req, version)
        return await self.classic.sync_group(req, version, client_id=client_id, client_host=client_host)

    async def heartbeat(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:
        self.load()
        group = self.groups.get(req.get("group_id") or "")
        if isinstance(group, ConsumerGroup) and req.get("group_id"):
            return await self.consumer.classic_heartbeat(group, req, version)
        return await self.classic.heartbeat(req, version, client_id=client_id, client_host=client_host)

    async def leave_group(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:
        self.load()
        group = self.groups.get(req.get("group_id") or "")
        if isinstance(group, ConsumerGroup) and req.get("group_id"):
            if version < 3:
                identities = [{"member_id": req.get("member_id") or "", "group_instance_id": None}]
            else:
                identities = list(req.get("members") or [])
            results = await self.consumer.classic_leave(group, identities)
            if version < 3:
                return {"throttle_time_ms": 0, "error_code": results[0]["error_code"] if results else 0}
            return {"throttle_time_ms": 0, "error_code": 0, "members": results}
        return await self.classic.leave_group(req, version, client_id=client_id, client_host=client_host)

    # -- the consumer protocol -------------------------------------------------------------------------------

    async def consumer_group_heartbeat(
        self,
        req: dict[str, Any],
        version: int,
        *,
        client_id: str,
        client_host: str,
        describable: DescribableTopics | None = None,
    ) -> Result:
        self.load()
        return await self.consumer.heartbeat(
            req, version, client_id=client_id, client_host=client_host, describable=describable
        )

    async def consumer_group_describe(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:
        self.load()
        return {
            "throttle_time_ms": 0,
            "groups": self.consumer.describe(list(req.get("group_ids") or []), version),
        }

    # -- the share protocol ----------------------------------------------------------------------------------

    async def share_group_heartbeat(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:
        self.load()
        return await self.share.heartbeat(req, version, client_id=client_id, client_host=client_host)

    async def share_group_describe(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:
        self.load()
        return {"throttle_time_ms": 0, "groups": self.share.describe(list(req.get("group_ids") or []))}

    async def describe_share_group_offsets(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:

        self.load()
        return apis.describe_offsets(self, self.share_store, req, version)

    async def alter_share_group_offsets(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:

        self.load()
        return apis.alter_offsets(self, self.share_store, req, version)

    async def delete_share_group_offsets(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> Result:

        self.load()
        return apis.delete_offsets(self, self.share_store, req, version)

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

    async def complete_txn_offsets_async(self, group_id: str, producer_id: int, commit: bool) -> None:
        """``complete_txn_offsets``, the log written without holding the event loop."""
        self.load()
        committed = await self.offsets.complete_pending_async(group_id, producer_id, commit)
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
            entry = self.classic.describe_entry(group_id, group if isinstance(group, ClassicGroup) else None)
            if not isinstance(group, ClassicGroup) and version >= 6:
                # A group that does not exist or is not a classic group (ConsumerGroupDescribe describes
                # consumer groups): Dead, and from version 6 an error, as Kafka answers.
                entry["error_code"] = int(ErrorCode.GROUP_ID_NOT_FOUND)
                entry["error_message"] = (
                    f"Group {group_id} not found."
                    if group is None
                    else f"Group {group_id} is not a classic group."
                )
            groups.append(entry)
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
            results.append({"group_id": group_id, "error_code": int(await self._delete_group(group_id))})
        return {"throttle_time_ms": 0, "results": results}

    async def _delete_group(self, group_id: str | None) -> ErrorCode:
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
            await self.append_async(self.offsets.tombstones(group_id) + group.tombstones())
        except Exception as exc:
            log.warning("cannot persist the deletion of group %s: %s", group_id, exc)
            return store_error(exc)
        if self.groups.get(group_id) is not group or group.validate_delete() is not None:
            # Changed while the deletion was written (a member joined): what is written is its state now.
            self.store(self.offsets.live_entries_of(group_id) + group.live_entries(), lambda exc: None)
            return ErrorCode.NON_EMPTY_GROUP
        group.mark_dead(self.now_ms())
        del self.groups[group_id]
        self.offsets.forget(group_id)
        if isinstance(group, ShareGroup) and self.share.partitions is not None:
            self.share.partitions.group_deleted(group_id)
        log.info("group %s deleted with %d offsets", group_id, count)
        return ErrorCode.NO_ERROR

    # -- offset retention ------------------------------------------------------------------------------------

    def expire_offsets(self) -> int:
        """Drop offsets past ``offsets.retention.minutes`` and groups left empty; return how many offsets."""
        self.load()
        return self.offsets.expire()

    async def _expire_offsets_later(self) -> None:
        self.load()
        await self.offsets.expire_async()

    def maybe_drop_group(self, group: Group) -> None:
        """Remove an empty group that holds no offsets any more (once its removal is written)."""
        if not group.is_droppable or self.offsets.has_offsets(group.group_id):
            return

        def written(exc: BaseException | None) -> None:
            if exc is not None:
                log.warning("cannot persist the removal of group %s: %s", group.group_id, exc)
                return
            if self.groups.get(group.group_id) is not group:
                return
            if not group.is_droppable or self.offsets.has_offsets(group.group_id):
                # Used again while its removal was written: write it back as it is now.
                self.store(group.live_entries(), lambda exc: None)
                return
            group.mark_dead(self.now_ms())
            self.groups.pop(group.group_id, None)
            log.info("group %s is empty and has no offsets: removed", group.group_id)

        self.store(group.tombstones(), written)

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
                "assignment_epoch": g.assignment_epoch
                if isinstance(g, ConsumerGroup | ShareGroup)
                else g.epoch,
                "members": g.member_count,
                "offsets": len(self.offsets.committed(g.group_id)),
            }
            for g in self.groups.values()
        ]

    def describe(self, group_id: str) -> dict[str, Any] | None:
        """State, protocol and members (with assignments) of a group; None if it does not exist.

        Every member has ``assignment`` as a ConsumerProtocolAssignment when the protocol type is
        ``consumer``; members of consumer groups also have their epochs and assignments by topic name."""
        self.load()
        group = self.groups.get(group_id)
        if group is None:
            return None
        described = group.describe()
        if isinstance(group, ShareGroup):
            by_id = {m.topic_id: name for name, m in self.topics().items()}
            for m in described["members"]:
                m["assigned"] = {by_id[t]: ps for t, ps in m["assigned"].items() if t in by_id}
            store = self.share_store
            if store is not None:
                described["share_partitions"] = store.describe_group(group_id)
        if isinstance(group, ConsumerGroup):
            by_id = {m.topic_id: name for name, m in self.topics().items()}

            def named(partitions: dict[Any, list[int]]) -> dict[str, list[int]]:
                return {by_id[t]: ps for t, ps in partitions.items() if t in by_id}

            for m in described["members"]:
                for key in ("assigned", "pending_revocation", "target"):
                    m[key] = named(m[key])
                m["assignment"] = embedded.serialize_assignment(m["assigned"], 0)
        return described

    def committed_offsets(self, group_id: str) -> dict[tuple[str, int], OffsetAndMetadata]:
        """The group's committed offsets by (topic, partition); empty if the group does not exist."""
        self.load()
        return dict(self.offsets.committed(group_id)) if group_id in self.groups else {}

    # -- group configs (GROUP resources of DescribeConfigs / IncrementalAlterConfigs) ------------------------

    def describe_group_configs(self, group_id: str, names: list[str] | None) -> list[dict[str, Any]]:
        """The configs of a group (set on it, else the broker's), as DescribeConfigs lists them."""
        self.load()
        own = self._group_configs.get(group_id, {})
        out = []
        for name, spec in GROUP_CONFIGS.items():
            if names is not None and name not in names:
                continue
            value = own.get(name)
            out.append(
                {
                    "name": name,
                    "value": str(value) if value is not None else spec.broker_value(self.config),
                    "read_only": False,
                    # DYNAMIC_GROUP_CONFIG (8) when set on the group, else the broker's static value (4)
                    # or the built-in default (5).
                    "config_source": 8 if name in own else (4 if spec.broker_attr else 5),
                    "is_sensitive": False,
                    "synonyms": [],
                    "config_type": spec.config_type,
                    "documentation": spec.doc,
                }
            )
        return out

    def alter_group_configs(
        self, group_id: str, ops: list[tuple[str, int, str | None]], *, validate_only: bool
    ) -> None:
        """IncrementalAlterConfigs on a GROUP resource: SET (0) and DELETE (1); KafkaProtocolError with
        INVALID_CONFIG (or INVALID_REQUEST) and Kafka's message otherwise."""
        self.load()
        new = {n: str(v) for n, v in self._group_configs.get(group_id, {}).items()}
        for name, op, value in ops:
            if name not in GROUP_CONFIGS:
                raise KafkaProtocolError(ErrorCode.INVALID_CONFIG, f"Unknown group config name: {name}")
            if op == 0:
                if value is None:
                    raise KafkaProtocolError(ErrorCode.INVALID_CONFIG, f"Null value not supported for {name}")
                new[name] = value
            elif op == 1:
                new.pop(name, None)
            elif op in (2, 3):
                raise KafkaProtocolError(
                    ErrorCode.INVALID_CONFIG, f"Config value append is not allowed for config key: {name}"
                )
            else:
                raise KafkaProtocolError(ErrorCode.INVALID_REQUEST, f"unknown config operation {op}")
        try:
            values = validate_group_configs(new, self.config)
        except ValueError as exc:
            raise KafkaProtocolError(ErrorCode.INVALID_CONFIG, str(exc)) from None
        if validate_only:
            return
        key = logformat.group_config_key(group_id)
        try:
            self.append([(key, logformat.group_config_value(new) if new else None)])
        except Exception as exc:
            log.warning("cannot persist the configs of group %s: %s", group_id, exc)
            raise KafkaProtocolError(ErrorCode.COORDINATOR_NOT_AVAILABLE, str(exc)) from None
        if values:
            self._group_configs[group_id] = values
        else:
            self._group_configs.pop(group_id, None)


def _typed_configs(configs: Mapping[str, str]) -> dict[str, GroupConfigValue]:
    """Configs as the group log keeps them (strings), with the numeric ones as numbers."""
    out: dict[str, GroupConfigValue] = {}
    for name, value in configs.items():
        spec = GROUP_CONFIGS.get(name)
        out[name] = int(value) if spec is None or spec.kind == "int" else value
    return out


def _join_error(member_id: str, code: ErrorCode) -> Result:
    return {
        "throttle_time_ms": 0,
        "error_code": int(code),
        "generation_id": -1,
        "protocol_type": None,
        "protocol_name": None,
        "leader": "",
        "skip_assignment": False,
        "member_id": member_id,
        "members": [],
    }
