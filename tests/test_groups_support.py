"""Helpers for the group coordinator tests: a manual clock and builders of decoded-request dicts."""

from __future__ import annotations

import asyncio
import struct
import uuid
from collections.abc import Awaitable, Callable, Collection, Coroutine
from typing import Any

from kafkite.broker.groups import GroupConfig, GroupCoordinator, MemoryGroupLog

TOPICS = {"orders": 3, "payments": 2, "audit": 1}


class Clock:
    def __init__(self, start: int = 1_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


def subscription(topics: list[str], version: int = 0, owned: dict[str, list[int]] | None = None) -> bytes:
    """A ConsumerProtocolSubscription (v0 or v1) as a Java consumer sends it."""
    out = bytearray(struct.pack(">hi", version, len(topics)))
    for t in topics:
        raw = t.encode()
        out += struct.pack(">h", len(raw)) + raw
    out += struct.pack(">i", -1)  # null user data
    if version >= 1:
        owned = owned or {}
        out += struct.pack(">i", len(owned))
        for t, parts in owned.items():
            raw = t.encode()
            out += struct.pack(">h", len(raw)) + raw + struct.pack(">i", len(parts))
            out += b"".join(struct.pack(">i", p) for p in parts)
    return bytes(out)


class Harness:
    def __init__(self, log: MemoryGroupLog | None = None, clock: Clock | None = None, **config: Any) -> None:
        self.clock = clock or Clock()
        self.log = log if log is not None else MemoryGroupLog()
        self.coord = GroupCoordinator(
            lambda topic: TOPICS.get(topic), log=self.log, config=GroupConfig(**config), now_ms=self.clock
        )

    def advance(self, ms: int) -> None:
        self.clock.advance(ms)
        self.coord.tick()

    def join(
        self,
        group: str,
        member_id: str = "",
        *,
        version: int = 5,
        instance: str | None = None,
        protocols: list[tuple[str, bytes]] | None = None,
        protocol_type: str = "consumer",
        session: int = 10_000,
        rebalance: int = 30_000,
        client_id: str = "client",
        reason: str | None = None,
    ) -> Coroutine[Any, Any, dict[str, Any]]:
        req = {
            "group_id": group,
            "session_timeout_ms": session,
            "rebalance_timeout_ms": rebalance if version >= 1 else -1,
            "member_id": member_id,
            "group_instance_id": instance,
            "protocol_type": protocol_type,
            "protocols": [
                {"name": n, "metadata": m}
                for n, m in (protocols if protocols is not None else [("range", subscription(["orders"]))])
            ],
            "reason": reason,
        }
        return self.coord.join_group(req, version, client_id=client_id, client_host="/127.0.0.1")

    def sync(
        self,
        group: str,
        member_id: str,
        generation: int,
        assignments: dict[str, bytes] | None = None,
        *,
        version: int = 3,
        instance: str | None = None,
        protocol_type: str | None = None,
        protocol_name: str | None = None,
    ) -> Coroutine[Any, Any, dict[str, Any]]:
        req = {
            "group_id": group,
            "generation_id": generation,
            "member_id": member_id,
            "group_instance_id": instance,
            "protocol_type": protocol_type,
            "protocol_name": protocol_name,
            "assignments": [{"member_id": m, "assignment": a} for m, a in (assignments or {}).items()],
        }
        return self.coord.sync_group(req, version, client_id="client", client_host="/127.0.0.1")

    async def heartbeat(
        self, group: str, member_id: str, generation: int, instance: str | None = None
    ) -> int:
        req = {
            "group_id": group,
            "generation_id": generation,
            "member_id": member_id,
            "group_instance_id": instance,
        }
        resp = await self.coord.heartbeat(req, 4, client_id="client", client_host="/127.0.0.1")
        return int(resp["error_code"])

    async def leave(
        self, group: str, members: list[tuple[str, str | None]], version: int = 3
    ) -> dict[str, Any]:
        if version < 3:
            req: dict[str, Any] = {"group_id": group, "member_id": members[0][0]}
        else:
            req = {
                "group_id": group,
                "members": [{"member_id": m, "group_instance_id": i, "reason": "bye"} for m, i in members],
            }
        return await self.coord.leave_group(req, version, client_id="client", client_host="/127.0.0.1")

    async def commit(
        self,
        group: str,
        offsets: dict[tuple[str, int], int | tuple[int, str | None]],
        *,
        member_id: str = "",
        generation: int = -1,
        instance: str | None = None,
        version: int = 8,
        retention_ms: int = -1,
    ) -> dict[tuple[str, int], int]:
        by_topic: dict[str, list[dict[str, Any]]] = {}
        for (topic, partition), value in offsets.items():
            offset, metadata = value if isinstance(value, tuple) else (value, "")
            by_topic.setdefault(topic, []).append(
                {
                    "partition_index": partition,
                    "committed_offset": offset,
                    "committed_leader_epoch": 0,
                    "committed_metadata": metadata,
                }
            )
        req = {
            "group_id": group,
            "generation_id_or_member_epoch": generation,
            "member_id": member_id,
            "group_instance_id": instance,
            "retention_time_ms": retention_ms,
            "topics": [{"name": t, "partitions": ps} for t, ps in by_topic.items()],
        }
        resp = await self.coord.offset_commit(req, version, client_id="client", client_host="/127.0.0.1")
        return {
            (t["name"], p["partition_index"]): p["error_code"]
            for t in resp["topics"]
            for p in t["partitions"]
        }

    async def fetch(
        self, group: str, topics: dict[str, list[int]] | None, version: int = 7
    ) -> dict[tuple[str, int], tuple[int, str | None, int]]:
        req: dict[str, Any] = {
            "group_id": group,
            "topics": None
            if topics is None
            else [{"name": t, "partition_indexes": ps} for t, ps in topics.items()],
            "require_stable": True,
        }
        resp = await self.coord.offset_fetch(req, version, client_id="client", client_host="/127.0.0.1")
        assert resp["error_code"] == 0
        return {
            (t["name"], p["partition_index"]): (p["committed_offset"], p["metadata"], p["error_code"])
            for t in resp["topics"]
            for p in t["partitions"]
        }

    def state(self, group: str) -> str | None:
        d = self.coord.describe(group)
        return None if d is None else str(d["state"])


async def settle() -> None:
    """Let every runnable task reach its next await."""
    for _ in range(5):
        await asyncio.sleep(0)


def run(test: Callable[[], Awaitable[None]]) -> Callable[[], None]:
    """Decorator: run an async test on a fresh event loop, with a time limit."""

    def wrapper() -> None:
        async def limited() -> None:
            await asyncio.wait_for(test(), 5)

        asyncio.run(limited())

    wrapper.__name__ = test.__name__
    wrapper.__doc__ = test.__doc__
    return wrapper


async def form_group(h: Harness, group: str, n: int, **join_kwargs: Any) -> tuple[list[str], int]:
    """Bring ``n`` members into a Stable group one by one; return (member ids, generation)."""
    members: list[str] = []
    generation = -1
    for i in range(n):
        first = await h.join(group, client_id=f"c{i}", **join_kwargs)
        member_id = first["member_id"]
        if first["error_code"] == 79:  # MEMBER_ID_REQUIRED
            task = asyncio.ensure_future(h.join(group, member_id, client_id=f"c{i}", **join_kwargs))
        else:
            task = asyncio.ensure_future(asyncio.sleep(0, first))
        await settle()
        rejoins = [
            asyncio.ensure_future(h.join(group, m, client_id=f"c{j}", **join_kwargs))
            for j, m in enumerate(members)
        ]
        results = await asyncio.gather(task, *rejoins)
        assert all(r["error_code"] == 0 for r in results), results
        generation = results[0]["generation_id"]
        members.append(results[0]["member_id"])
        leader = results[0]["leader"]
        syncs = [
            asyncio.ensure_future(
                h.sync(
                    group,
                    m,
                    generation,
                    {x: f"assign-{x}".encode() for x in members} if m == leader else None,
                )
            )
            for m in members
        ]
        for r in await asyncio.gather(*syncs):
            assert r["error_code"] == 0, r
    assert h.state(group) == "Stable"
    return members, generation


class Topic:
    """A topic of a test catalogue: an id and a partition count (what the coordinator needs)."""

    def __init__(self, partitions: int) -> None:
        self.topic_id = uuid.uuid4()
        self.partitions = partitions


class ConsumerHarness(Harness):
    """A coordinator with a topic catalogue of ids, and a ConsumerGroupHeartbeat helper."""

    def __init__(
        self,
        log: MemoryGroupLog | None = None,
        clock: Clock | None = None,
        catalogue: dict[str, Topic] | None = None,
        **config: Any,
    ) -> None:
        self.clock = clock or Clock()
        self.log = log if log is not None else MemoryGroupLog()
        self.catalogue = catalogue if catalogue is not None else {t: Topic(n) for t, n in TOPICS.items()}
        settings = {
            "consumer_session_timeout_ms": 45_000,
            "consumer_heartbeat_interval_ms": 5_000,
            **config,
        }
        self.coord = GroupCoordinator(
            self.partitions_of,
            log=self.log,
            config=GroupConfig(**settings),
            now_ms=self.clock,
            topics=lambda: self.catalogue,
        )

    def partitions_of(self, topic: str) -> int | None:
        t = self.catalogue.get(topic)
        return None if t is None else t.partitions

    def tid(self, topic: str) -> uuid.UUID:
        return self.catalogue[topic].topic_id

    def name_of(self, topic_id: uuid.UUID) -> str:
        return next(n for n, t in self.catalogue.items() if t.topic_id == topic_id)

    async def hb(
        self,
        group: str,
        member_id: str,
        epoch: int,
        *,
        topics: list[str] | None = None,
        regex: str | None = None,
        owned: dict[str, list[int]] | None = None,
        instance: str | None = None,
        assignor: str | None = None,
        rebalance_timeout: int = -1,
        version: int = 1,
        describable: Callable[[Collection[str]], Collection[str]] | None = None,
    ) -> dict[str, Any]:
        """One ConsumerGroupHeartbeat; a first heartbeat (epoch 0) is full unless told otherwise;
        ``describable``: the topics its principal may describe (an authorizer's answer)."""
        if epoch == 0:
            rebalance_timeout = rebalance_timeout if rebalance_timeout != -1 else 30_000
            owned = owned if owned is not None else {}
        req = {
            "group_id": group,
            "member_id": member_id,
            "member_epoch": epoch,
            "instance_id": instance,
            "rack_id": None,
            "rebalance_timeout_ms": rebalance_timeout,
            "subscribed_topic_names": topics,
            "subscribed_topic_regex": regex,
            "server_assignor": assignor,
            "topic_partitions": None
            if owned is None
            else [{"topic_id": self.tid(t), "partitions": ps} for t, ps in owned.items()],
        }
        return await self.coord.consumer_group_heartbeat(
            req, version, client_id="client", client_host="/127.0.0.1", describable=describable
        )

    def assigned(self, resp: dict[str, Any]) -> dict[str, list[int]]:
        """The assignment of a heartbeat response by topic name ({} if none was sent)."""
        a = resp.get("assignment")
        if a is None:
            return {}
        return {self.name_of(t["topic_id"]): sorted(t["partitions"]) for t in a["topic_partitions"]}
