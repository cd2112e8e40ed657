"""Brokers sharing one PostgreSQL database: registration, heartbeats, the live broker list, and where each
partition's leadership and each group's and transactional id's coordination live.

Each broker keeps a row in ``kafkite_brokers`` (node id, listeners, heartbeat) and refreshes its heartbeat
every ``cluster.heartbeat.interval.ms``. A broker whose heartbeat is older than ``cluster.session.timeout.ms``
(by the database's clock) is deleted by whichever broker notices first; every join and departure bumps the
membership epoch (``kafkite_meta.epoch``) and is announced on the ``kafkite_cluster`` channel so the others
re-read the list at once.

Placement is a pure function of the live list (sorted by node id), so every broker computes the same answer:
partition ``i`` of topic ``t`` is led by ``live[(crc32(t) + i) % n]`` (consecutive partitions round-robin over
the brokers) and group (or transactional id) ``g`` is coordinated by ``live[crc32(g) % n]``. Brokers keep no
partition state of their own: a broker taking a partition over reads it from the database.

Fencing. Two live brokers may disagree about the live list for a moment (each learns of a change when it
next reads the list), and a paused broker (SIGSTOP, a long stall) may wake with a list that is long gone.
The membership epoch is the lease that closes that window:

- Coordinators. Every write a group or transaction coordinator makes (group metadata, committed offsets,
  transaction log entries, transaction markers, a transaction's offsets) runs in a database transaction that
  first takes the membership lock shared and checks that the membership epoch is still the one the
  coordinator was built for (``fence_op``); a membership change takes the same lock exclusively. A broker
  whose view is stale therefore cannot write as coordinator: its write fails (``Fenced``) and its client is
  told NOT_COORDINATOR / COORDINATOR_NOT_AVAILABLE, while the coordinator the new view names loads the state
  after the change committed. Until a broker has rebuilt its coordinators for its current view
  (``ready``), it answers their requests COORDINATOR_LOAD_IN_PROGRESS / NOT_COORDINATOR.
- Partition leaders. A broker leads a partition only once it has claimed it in the database (under the same
  lease): the claim raises the partition's leader epoch by one and records where the epoch starts. Appends
  match the partition row only while it carries the epoch they were prepared for, so a broker whose
  leadership was claimed by another can no longer append (NOT_LEADER_OR_FOLLOWER). The partitions' leader
  epochs are those of Metadata, checked in Fetch, ListOffsets and OffsetForLeaderEpoch as Kafka checks them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from kafkite.broker.metadata import advertised_for
from kafkite.cluster import groups as cluster_groups
from kafkite.cluster import txn as cluster_txn
from kafkite.cluster.txn import TxnOffsetsRelay
from kafkite.log.base import Fenced, LogError
from kafkite.log.pg import PgPartition, PgStorage, schema
from kafkite.log.pg.db import Database, Op

if TYPE_CHECKING:
    from kafkite.broker.core import Broker, RequestContext
    from kafkite.broker.groups.log import GroupLog
    from kafkite.broker.txn.coordinator import TransactionCoordinator, TxnConfig
    from kafkite.log.base import Partition

log = logging.getLogger("kafkite.cluster")
T = TypeVar("T")

# Producer ids are handed out in blocks of this many, one database sequence value per block.
PRODUCER_ID_BLOCK = 1000
_NEXT_PID_BLOCK = "SELECT nextval('kafkite_producer_id_blocks')"


class ClusterError(OSError):
    """This broker cannot join the cluster (e.g. its node.id is in use by a live broker)."""


@dataclass(frozen=True)
class Member:
    node_id: int
    listeners: tuple[tuple[str, str, int], ...]
    rack: str | None

    def address(self, listener: str | None) -> tuple[str, int]:
        for name, host, port in self.listeners:
            if name == listener:
                return host, port
        return self.listeners[0][1], self.listeners[0][2]


def _hash(value: str) -> int:
    return zlib.crc32(value.encode())


class Cluster:
    """This broker's view of the brokers sharing its database."""

    def __init__(self, broker: Broker, storage: PgStorage) -> None:
        self.broker = broker
        self.storage = storage
        self.node_id: int = broker.node_id
        cfg = broker.config
        self.heartbeat_s = cfg["cluster.heartbeat.interval.ms"] / 1000
        self.session_timeout_ms: int = cfg["cluster.session.timeout.ms"]
        listeners = cfg["advertised.listeners"] or cfg["listeners"]
        self.listeners: list[tuple[str, str, int]] = [(n, h, p) for n, h, p in listeners]
        self.rack: str | None = cfg.raw.get("broker.rack") or None
        self.members: list[Member] = []
        self.epoch = 0
        # The membership epoch the coordinators were last rebuilt for (see ``ready``).
        self.built_epoch = -1
        self._built_view: tuple[int, tuple[int, ...]] = (-1, ())
        # True while another process holds this broker's registration (it must not serve as a member).
        self.fenced = False
        self._task: asyncio.Task[None] | None = None
        self._rebuild_task: asyncio.Task[None] | None = None
        self._rebuild = asyncio.Event()
        self._claiming = asyncio.Lock()
        # Membership changes and leadership claims hold locks (the membership lock exclusively, partition
        # rows) until they commit. They run in a worker thread on a connection of their own, never as
        # asynchronous transactions on the event loop: a coordinator's write, synchronous on the loop, may
        # wait for those locks, and a transaction that needed the loop to reach its COMMIT would never end.
        self.control = Database(storage.dsn, pool_size=1)
        # A broker paused inside a transaction (SIGSTOP, a stalled machine) would hold its locks, the
        # membership lock among them, and so stop the very membership change that fences it: the database
        # ends such a transaction once it has been idle for a session timeout.
        idle = {"idle_in_transaction_session_timeout": str(self.session_timeout_ms)}
        for db in (storage.db, self.control):
            db.settings.update(idle)
        self._wake = asyncio.Event()
        self._registered = False
        self._pid_next = 0
        self._pid_end = 0
        # Called (on the event loop) after the live list changed: the group coordinator is rebuilt there.
        self.on_change: list[Callable[[], Any]] = []
        self._callbacks: set[asyncio.Future[Any]] = set()

        # Transactions ended by another broker's coordinator end their offsets in this broker's groups.
        self.txn_offsets = TxnOffsetsRelay(broker, self)

    # placement ---------------------------------------------------------------------------------------------

    @property
    def live_ids(self) -> list[int]:
        return [m.node_id for m in self.members] or [self.node_id]

    def leader(self, topic: str, partition: int) -> int:
        ids = self.live_ids
        return ids[(_hash(topic) + partition) % len(ids)]

    def leads(self, topic: str, partition: int) -> bool:
        """Whether this broker leads the partition: placement names it and it holds the claim."""
        if self.fenced or self.leader(topic, partition) != self.node_id:
            return False
        try:
            return self.storage.partition(topic, partition).leading
        except LogError:
            return False

    def leader_epoch(self, topic: str, partition: int) -> int:
        try:
            return self.storage.partition(topic, partition).leader_epoch
        except LogError:
            return -1

    def coordinator(self, key: str) -> int:
        ids = self.live_ids
        return ids[_hash(key) % len(ids)]

    def coordinates(self, group_id: str) -> bool:
        return not self.fenced and self.coordinator(group_id) == self.node_id

    @property
    def controller_id(self) -> int:
        return min(self.live_ids)

    def nodes(self, listener: str | None) -> list[tuple[int, str, int]]:
        """(node id, host, port) of every live broker, as clients of ``listener`` reach them."""
        if not self.members:
            host, port = advertised_for(self.broker, listener)
            return [(self.node_id, host, port)]
        out = []
        for m in self.members:
            if m.node_id == self.node_id and not self.fenced:  # (fenced: the row is another process's)
                host, port = advertised_for(self.broker, listener)
            else:
                host, port = m.address(listener)
            out.append((m.node_id, host, port))
        return out

    def node(self, node_id: int, listener: str | None) -> tuple[int, str, int]:
        for n in self.nodes(listener):
            if n[0] == node_id:
                return n
        return self.nodes(listener)[0]

    # database ----------------------------------------------------------------------------------------------

    def _bump_epoch(self) -> Op[None]:
        # Exclusive: no fenced write (which holds the lock shared) straddles a membership change.
        yield ("SELECT pg_advisory_xact_lock(%s)", (schema.MEMBERSHIP_LOCK,))
        yield (
            "INSERT INTO kafkite_meta (key, value) VALUES ('epoch', '1') ON CONFLICT (key)"
            " DO UPDATE SET value = (kafkite_meta.value::bigint + 1)::text",
            None,
        )
        yield ("SELECT pg_notify(%s, %s)", (schema.CLUSTER_CHANNEL, str(self.node_id)))

    def _register_op(self) -> Op[bool]:
        rows = yield (
            "INSERT INTO kafkite_brokers (node_id, instance, listeners, rack) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (node_id) DO UPDATE SET instance = excluded.instance,"
            " listeners = excluded.listeners,"
            " rack = excluded.rack, started = now(), heartbeat = now()"
            " WHERE kafkite_brokers.instance = excluded.instance"
            " OR kafkite_brokers.heartbeat < now() - make_interval(secs => %s)"
            " RETURNING node_id",
            (
                self.node_id,
                self.storage.instance,
                json.dumps(self.listeners),
                self.rack,
                self.session_timeout_ms / 1000,
            ),
        )
        if not rows:
            return False
        yield from self._bump_epoch()
        return True

    def _heartbeat_op(self) -> Op[tuple[bool, list[Member], int]]:
        rows = yield (
            "UPDATE kafkite_brokers SET heartbeat = now() WHERE node_id = %s AND instance = %s RETURNING 1",
            (self.node_id, self.storage.instance),
        )
        alive = bool(rows)
        gone = yield (
            "DELETE FROM kafkite_brokers WHERE heartbeat < now() - make_interval(secs => %s)"
            " RETURNING node_id",
            (self.session_timeout_ms / 1000,),
        )
        if gone:
            log.warning("brokers %s missed their heartbeats: their partitions move", [r[0] for r in gone])
            yield from self._bump_epoch()
        members, epoch = yield from self._view_op()
        return alive, members, epoch

    @staticmethod
    def _view_op() -> Op[tuple[list[Member], int]]:
        """The live brokers and the membership epoch, read in one statement (one snapshot): read apart, a
        change committed between the two reads would pair the old list with the new epoch, and placement
        computed from that list would not be the epoch's."""
        rows = yield (
            "SELECT m.value, b.node_id, b.listeners, b.rack FROM"
            " (SELECT coalesce((SELECT value FROM kafkite_meta WHERE key = 'epoch'), '0') AS value) m"
            " LEFT JOIN kafkite_brokers b ON true ORDER BY b.node_id",
            None,
        )
        members = []
        epoch = 0
        for value, node_id, listeners, rack in rows:
            epoch = int(value)
            if node_id is None:
                continue
            if isinstance(listeners, str | bytes):
                listeners = json.loads(listeners)
            members.append(
                Member(int(node_id), tuple((str(n), str(h), int(p)) for n, h, p in listeners), rack)
            )
        return members, epoch

    def fence_op(self, epoch: int) -> Op[None]:
        """Within a transaction: refuse (``Fenced``) unless the membership epoch is still ``epoch``; a
        membership change waits for the transaction to end."""
        yield ("SELECT pg_advisory_xact_lock_shared(%s)", (schema.MEMBERSHIP_LOCK,))
        rows = yield ("SELECT value FROM kafkite_meta WHERE key = 'epoch'", None)
        current = int(rows[0][0]) if rows else 0
        if current != epoch:
            self._wake.set()  # look at the new list at once
            raise Fenced(f"membership epoch {epoch} is over (now {current}): this broker's view is stale")

    def fence(self, epoch: int) -> Callable[[], Op[None]]:
        return lambda: self.fence_op(epoch)

    @property
    def ready(self) -> bool:
        """Whether the coordinators serve the current view (rebuilt since the last membership change)."""
        return self.built_epoch == self.epoch and not self.fenced

    # coordinators (kafkite.broker.cluster_mode.ClusterMode) -----------------------------------------------

    def group_log(self) -> GroupLog:
        """The log of the groups this broker coordinates, in the database."""
        return cluster_groups.OwnedGroupLog(self.storage, self)

    async def group_request(
        self, broker: Broker, method: str, ctx: RequestContext, req: dict[str, Any]
    ) -> dict[str, Any]:
        return await cluster_groups.group_request(broker, self, method, ctx, req)

    def find_coordinator(self, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
        return cluster_groups.find_coordinator(self, ctx, req)

    def txn_coordinator(
        self,
        broker: Broker,
        opener: Callable[[], Partition],
        config: TxnConfig,
        partition_of: Callable[[str, int], Any],
    ) -> TransactionCoordinator:
        """Only the transactional ids this broker coordinates, their entries in the shared log."""
        coordinator = cluster_txn.ClusterTransactionCoordinator(
            cluster=self,
            epoch=self.epoch,
            log=cluster_txn.OwnedTxnLog(opener, self),
            config=config,
            partition_of=partition_of,
            all_partitions=broker.loaded_partitions,
            groups=cluster_txn.TxnOffsets(broker, self),
            notify=broker.waiters.notify,
            owns=self.coordinates,
        )
        # Producer ids must be unique across the brokers: allocate their blocks from the database.
        coordinator.new_producer_id = self.new_producer_id  # type: ignore[method-assign]
        return coordinator

    # leadership --------------------------------------------------------------------------------------------

    def _unclaimed(self, keys: Iterable[tuple[str, int]] | None = None) -> list[PgPartition]:
        """Partitions placement gives this broker that it has not claimed yet (of ``keys``, or all)."""
        if self.fenced:
            return []
        out = []
        if keys is None:
            items = [(t, i, p) for t, i, p in self.storage.partitions()]
        else:
            items = []
            for t, i in keys:
                try:
                    items.append((t, i, self.storage.partition(t, i)))
                except LogError:
                    continue
        for t, i, part in items:
            if self.leader(t, i) == self.node_id and not part.leading and not part.closed:
                out.append(part)
        return out

    async def claim(self, parts: list[PgPartition]) -> list[PgPartition]:
        """Claim ``parts`` under the current membership epoch (none when the view is stale)."""
        if not parts:
            return []
        epoch = self.epoch

        def op() -> Op[list[PgPartition]]:
            yield from self.fence_op(epoch)
            claimed: list[PgPartition] = yield from self.storage.claim_op(parts, self.node_id)
            return claimed

        try:
            claimed = await self._control(op())
        except LogError as e:
            log.info("could not claim %d partitions: %s", len(parts), e)
            return []
        if claimed:
            log.info("leading %d more partitions", len(claimed))
        return claimed

    async def ensure_leaders(self, keys: Iterable[tuple[str, int]]) -> None:
        """Claim, before serving them, the partitions of ``keys`` that placement newly gives this broker."""
        async with self._claiming:
            await self.claim(self._unclaimed(keys))

    async def _control(self, op: Op[T]) -> T:
        """Run ``op`` as one transaction on the control connection, in a worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(self.control.run, op, transaction=True))

    # lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Join: register (refusing a node.id held by a live broker), read the live list, start heartbeats."""
        await self.storage.start_async()
        self.storage.on_append = self.broker.waiters.notify
        self.storage.on_cluster = self._wake.set
        self.storage.maintains = self.leads
        # A broker restarted at once after a crash finds its old row still fresh: wait for it to lapse.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.session_timeout_ms / 1000 + 2 * self.heartbeat_s
        while not await self._control(self._register_op()):
            if loop.time() < deadline:
                await asyncio.sleep(self.heartbeat_s)
                continue
            raise ClusterError(
                f"node.id {self.node_id} is registered by another live broker in the database; give every"
                " broker sharing the database its own node.id"
            )
        self._registered = True
        await self.txn_offsets.start()
        members, epoch = await self._control(self._view_op())
        self._apply_view(members, epoch, notify=False)
        await self._rebuild_once()
        self._task = asyncio.create_task(self._heartbeats(), name="cluster-heartbeats")
        self._rebuild_task = asyncio.create_task(self._rebuilds(), name="cluster-rebuilds")
        log.info("joined the cluster as node %d: live brokers %s", self.node_id, self.live_ids)

    async def stop(self) -> None:
        """Leave: stop heartbeats and delete this broker's row so its partitions move at once."""
        for task in (self._task, self._rebuild_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._rebuild_task = None
        for pending in list(self._callbacks):
            pending.cancel()
        await self.txn_offsets.stop()
        if self._registered:
            self._registered = False

            def op() -> Op[None]:
                rows = yield (
                    "DELETE FROM kafkite_brokers WHERE node_id = %s AND instance = %s RETURNING 1",
                    (self.node_id, self.storage.instance),
                )
                if rows:
                    yield from self._bump_epoch()

            try:
                await self._control(op())
            except LogError as e:
                log.warning("could not leave the cluster cleanly: %s", e)
        await self.storage.stop_async()
        await asyncio.get_running_loop().run_in_executor(None, self.control.close)

    async def _heartbeats(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.heartbeat_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                alive, members, epoch = await self._control(self._heartbeat_op())
                if not alive:
                    log.warning("this broker's registration lapsed: registering again")
                    if await self._control(self._register_op()):
                        members, epoch = await self._control(self._view_op())
                        self._set_fenced(False)
                    else:
                        self._set_fenced(True)
                self._apply_view(members, epoch)
                if self.ready and self._unclaimed():
                    self._rebuild.set()  # partitions gained (a new topic, a failed claim): claim them
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("cluster heartbeat failed: %s", e)

    def _set_fenced(self, fenced: bool) -> None:
        if fenced != self.fenced:
            self.fenced = fenced
            if fenced:
                log.error(
                    "node.id %d is registered by another process: this one serves no partition or group",
                    self.node_id,
                )
            self._rebuild.set()

    def _apply_view(self, members: list[Member], epoch: int, *, notify: bool = True) -> None:
        if epoch < self.epoch:
            return  # an older view than the one applied (a slow heartbeat)
        before = self.live_ids
        self.members = [m for m in members]
        changed = epoch > self.epoch or self.live_ids != before
        self.epoch = epoch
        if self.live_ids != before:
            log.info("live brokers now %s (epoch %d)", self.live_ids, self.epoch)
        if changed and notify:
            # Every membership change ends the coordinators' lease: rebuild them for the new epoch.
            self._rebuild.set()

    async def _rebuilds(self) -> None:
        """One rebuild at a time, always for the newest view: claim the partitions placement gives this
        broker, then rebuild the coordinators (``on_change``)."""
        while True:
            await self._rebuild.wait()
            self._rebuild.clear()
            try:
                await self._rebuild_once()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("rebuilding for membership epoch %d failed (retrying): %s", self.epoch, e)
                await asyncio.sleep(self.heartbeat_s)
                self._rebuild.set()

    async def _rebuild_once(self) -> None:
        view = (self.epoch, tuple(self.live_ids))
        async with self._claiming:
            await self.claim(self._unclaimed())
        if view != self._built_view:
            for callback in list(self.on_change):
                result = callback()
                if asyncio.iscoroutine(result):
                    await result
            self._built_view = view
            # Ready only if the view did not change meanwhile (then another rebuild is on its way).
            self.built_epoch = view[0] if view == (self.epoch, tuple(self.live_ids)) else -1
            log.info("coordinators ready for membership epoch %d", view[0])

    # producer ids ------------------------------------------------------------------------------------------

    def new_producer_id(self) -> int:
        """A producer id no other broker of the cluster hands out (blocks from a database sequence).

        A new block is read synchronously only when ``reserve_producer_ids`` was not awaited before."""
        if self._pid_next >= self._pid_end:
            rows = self.storage.db.execute(_NEXT_PID_BLOCK)
            self._new_pid_block(int(rows[0][0]))
        pid = self._pid_next
        self._pid_next += 1
        return pid

    def _new_pid_block(self, block: int) -> None:
        self._pid_next, self._pid_end = block * PRODUCER_ID_BLOCK, (block + 1) * PRODUCER_ID_BLOCK

    async def reserve_producer_ids(self, count: int = 2) -> None:
        """Make sure ``new_producer_id`` can hand out ``count`` ids without a database call (a new block is
        read over a pooled connection, off the event loop, when fewer are left)."""
        if self._pid_end - self._pid_next < count:
            rows = await self.storage.db.execute_async(_NEXT_PID_BLOCK)
            self._new_pid_block(int(rows[0][0]))
