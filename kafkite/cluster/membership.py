"""Brokers sharing one PostgreSQL database: registration, heartbeats, the live broker list, and where each
partition's leadership and each group's and transactional id's coordination live.

Each broker keeps a row in ``kafkite_brokers`` (node id, listeners, heartbeat) and refreshes its heartbeat
every ``cluster.heartbeat.interval.ms``. A broker whose heartbeat is older than ``cluster.session.timeout.ms``
(by the database's clock) is deleted by whichever broker notices first; every join and departure bumps the
membership epoch (``kafkite_meta.epoch``) and is announced on the ``kafkite_cluster`` channel so the others
re-read the list at once.

Placement is a pure function of the live list (sorted by node id), so every broker computes the same answer:
partition ``i`` of topic ``t`` is led by ``live[(crc32(t) + i) % n]`` (consecutive partitions round-robin over
the brokers) and group (or transactional id) ``g`` is coordinated by ``live[crc32(g) % n]``. The membership
epoch is reported as the partitions' leader epoch, so clients notice when leadership may have moved. Brokers
keep no partition state of their own: a broker taking a partition over reads it from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kafkite.log.base import LogError
from kafkite.log.pg import PgStorage, schema
from kafkite.log.pg.db import Op

if TYPE_CHECKING:
    from kafkite.broker.core import Broker

log = logging.getLogger("kafkite.cluster")

# Producer ids are handed out in blocks of this many, one database sequence value per block.
PRODUCER_ID_BLOCK = 1000


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
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._registered = False
        self._pid_next = 0
        self._pid_end = 0
        # Called (on the event loop) after the live list changed: the group coordinator is rebuilt there.
        self.on_change: list[Callable[[], Any]] = []
        self._callbacks: set[asyncio.Future[Any]] = set()
        from kafkite.cluster.txn import TxnOffsetsRelay

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
        return self.leader(topic, partition) == self.node_id

    def coordinator(self, key: str) -> int:
        ids = self.live_ids
        return ids[_hash(key) % len(ids)]

    def coordinates(self, group_id: str) -> bool:
        return self.coordinator(group_id) == self.node_id

    @property
    def controller_id(self) -> int:
        return min(self.live_ids)

    def nodes(self, listener: str | None) -> list[tuple[int, str, int]]:
        """(node id, host, port) of every live broker, as clients of ``listener`` reach them."""
        if not self.members:
            from kafkite.broker.metadata import advertised_for

            host, port = advertised_for(self.broker, listener)
            return [(self.node_id, host, port)]
        out = []
        for m in self.members:
            if m.node_id == self.node_id:
                from kafkite.broker.metadata import advertised_for

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
        rows = yield ("SELECT node_id, listeners, rack FROM kafkite_brokers ORDER BY node_id", None)
        members = []
        for node_id, listeners, rack in rows:
            if isinstance(listeners, str | bytes):
                listeners = json.loads(listeners)
            members.append(
                Member(int(node_id), tuple((str(n), str(h), int(p)) for n, h, p in listeners), rack)
            )
        epoch_rows = yield ("SELECT value FROM kafkite_meta WHERE key = 'epoch'", None)
        return members, int(epoch_rows[0][0]) if epoch_rows else 0

    # lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Join: register (refusing a node.id held by a live broker), read the live list, start heartbeats."""
        await self.storage.start_async()
        self.storage.on_append = self.broker.waiters.notify
        self.storage.on_cluster = self._wake.set
        self.storage.maintains = self.leads
        if getattr(self.broker, "txn", None) is not None:
            # Producer ids must be unique across the brokers: allocate their blocks from the database.
            self.broker.txn.new_producer_id = self.new_producer_id
        # A broker restarted at once after a crash finds its old row still fresh: wait for it to lapse.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.session_timeout_ms / 1000 + 2 * self.heartbeat_s
        while not await self.storage.db.run_async(self._register_op(), transaction=True):
            if loop.time() < deadline:
                await asyncio.sleep(self.heartbeat_s)
                continue
            raise ClusterError(
                f"node.id {self.node_id} is registered by another live broker in the database; give every"
                " broker sharing the database its own node.id"
            )
        self._registered = True
        await self.txn_offsets.start()
        members, epoch = await self.storage.db.run_async(self._view_op())
        self._apply_view(members, epoch, notify=False)
        self._task = asyncio.create_task(self._heartbeats(), name="cluster-heartbeats")
        log.info("joined the cluster as node %d: live brokers %s", self.node_id, self.live_ids)

    async def stop(self) -> None:
        """Leave: stop heartbeats and delete this broker's row so its partitions move at once."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
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
                await self.storage.db.run_async(op(), transaction=True)
            except LogError as e:
                log.warning("could not leave the cluster cleanly: %s", e)
        await self.storage.stop_async()

    async def _heartbeats(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.heartbeat_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                alive, members, epoch = await self.storage.db.run_async(
                    self._heartbeat_op(), transaction=True
                )
                if not alive:
                    log.warning("this broker's registration lapsed: registering again")
                    if await self.storage.db.run_async(self._register_op(), transaction=True):
                        members, epoch = await self.storage.db.run_async(self._view_op())
                self._apply_view(members, epoch)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("cluster heartbeat failed: %s", e)

    def _apply_view(self, members: list[Member], epoch: int, *, notify: bool = True) -> None:
        before = self.live_ids
        self.members = [m for m in members]
        self.epoch = max(self.epoch, epoch)
        if self.live_ids != before:
            log.info("live brokers now %s (epoch %d)", self.live_ids, self.epoch)
            if notify:
                for callback in list(self.on_change):
                    result = callback()
                    if asyncio.iscoroutine(result):
                        task = asyncio.ensure_future(result)
                        self._callbacks.add(task)
                        task.add_done_callback(self._callbacks.discard)

    # producer ids ------------------------------------------------------------------------------------------

    def new_producer_id(self) -> int:
        """A producer id no other broker of the cluster hands out (blocks from a database sequence)."""
        if self._pid_next >= self._pid_end:
            rows = self.storage.db.execute("SELECT nextval('kafkite_producer_id_blocks')")
            block = int(rows[0][0])
            self._pid_next, self._pid_end = block * PRODUCER_ID_BLOCK, (block + 1) * PRODUCER_ID_BLOCK
        pid = self._pid_next
        self._pid_next += 1
        return pid
