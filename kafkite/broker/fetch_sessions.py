"""Incremental fetch sessions (KIP-227): a consumer of many partitions names them once, then each Fetch
carries only the partitions whose fetch position changed and each response only the partitions with
something new (records, a moved high watermark, last stable or log start offset, an error).

A Fetch with ``session_epoch`` 0 (INITIAL) is a full fetch that opens a session when the cache has room (the
response carries its id); epoch -1 (FINAL) is a full fetch without a session; either closes the session it
names. Any other epoch continues the named session: FETCH_SESSION_ID_NOT_FOUND when there is no such session,
INVALID_FETCH_SESSION_EPOCH when the epoch is not the one expected next (1, 2, ... wrapping to 1).

The cache holds at most ``max.incremental.fetch.session.cache.slots`` sessions; when it is full a new session
takes the place of the least recently used one idle for longer than ``EVICTION_IDLE_S`` (Kafka's
min.incremental.fetch.session.eviction.ms default), else of the least recently used one among those with
fewer partitions than the new one, else none is opened (the response says session 0: the client goes on with
full fetches).
"""

from __future__ import annotations

import random
import time
import uuid
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kafkite.broker.core import Broker

INITIAL_EPOCH = 0
FINAL_EPOCH = -1
EVICTION_IDLE_S = 120.0

TopicKey = str | uuid.UUID  # the topic's name (Fetch v7-12) or its id (v13+)


@dataclass(slots=True)
class CachedPartition:
    """What the client asked for last, and what it was last told (-2: never told anything)."""

    fetch_offset: int
    partition_max_bytes: int
    current_leader_epoch: int = -1
    last_fetched_epoch: int = -1
    high_watermark: int = -2
    last_stable_offset: int = -2
    log_start_offset: int = -2

    def update(self, p: dict[str, Any]) -> None:
        self.fetch_offset = p["fetch_offset"]
        self.partition_max_bytes = p["partition_max_bytes"]
        self.current_leader_epoch = p.get("current_leader_epoch", -1)
        self.last_fetched_epoch = p.get("last_fetched_epoch", -1)


@dataclass
class FetchSession:
    id: int
    epoch: int  # the epoch the next request must carry
    by_id: bool  # topics keyed by id (v13+) rather than by name
    partitions: OrderedDict[tuple[TopicKey, int], CachedPartition] = field(default_factory=OrderedDict)
    last_used: float = 0.0


def next_epoch(epoch: int) -> int:
    return 1 if epoch >= 0x7FFFFFFF else epoch + 1


class FetchSessionCache:
    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.sessions: OrderedDict[int, FetchSession] = OrderedDict()  # least recently used first
        self.evictions = 0

    def get(self, session_id: int) -> FetchSession | None:
        s = self.sessions.get(session_id)
        if s is not None:
            self.sessions.move_to_end(session_id)
            s.last_used = time.monotonic()
        return s

    def remove(self, session_id: int) -> None:
        self.sessions.pop(session_id, None)

    def _make_room(self, size: int) -> bool:
        if len(self.sessions) < self.slots:
            return True
        if self.slots <= 0:
            return False
        now = time.monotonic()
        victim = None
        for s in self.sessions.values():  # least recently used first
            if now - s.last_used > EVICTION_IDLE_S:
                victim = s
                break
        if victim is None:
            for s in self.sessions.values():
                if len(s.partitions) < size:
                    victim = s
                    break
        if victim is None:
            return False
        del self.sessions[victim.id]
        self.evictions += 1
        return True

    def create(self, by_id: bool, partitions: OrderedDict[tuple[TopicKey, int], CachedPartition]) -> int:
        """A new session holding ``partitions`` (its next epoch 1), or 0 when the cache has no room."""
        if not self._make_room(len(partitions)):
            return 0
        while True:
            sid = random.randint(1, 0x7FFFFFFF)
            if sid not in self.sessions:
                break
        self.sessions[sid] = FetchSession(sid, 1, by_id, partitions, time.monotonic())
        return sid


_caches: weakref.WeakKeyDictionary[Broker, FetchSessionCache] = weakref.WeakKeyDictionary()


def cache_of(broker: Broker) -> FetchSessionCache:
    c = _caches.get(broker)
    if c is None:
        c = _caches[broker] = FetchSessionCache(
            int(broker.config["max.incremental.fetch.session.cache.slots"])
        )
    return c


def topic_key(topic: dict[str, Any], by_id: bool) -> TopicKey:
    key: TopicKey = topic["topic_id"] if by_id else topic["topic"]
    return key


def cached_partitions(req: dict[str, Any], by_id: bool) -> OrderedDict[tuple[TopicKey, int], CachedPartition]:
    out: OrderedDict[tuple[TopicKey, int], CachedPartition] = OrderedDict()
    for t in req["topics"]:
        key = topic_key(t, by_id)
        for p in t["partitions"]:
            c = CachedPartition(p["fetch_offset"], p["partition_max_bytes"])
            c.update(p)
            out[(key, p["partition"])] = c
    return out


def apply_request(session: FetchSession, req: dict[str, Any]) -> None:
    """An incremental request's added or changed partitions, then its forgotten ones."""
    parts = session.partitions
    for t in req["topics"]:
        key = topic_key(t, session.by_id)
        for p in t["partitions"]:
            k = (key, p["partition"])
            c = parts.get(k)
            if c is None:
                c = parts[k] = CachedPartition(p["fetch_offset"], p["partition_max_bytes"])
            c.update(p)
    for t in req.get("forgotten_topics_data") or ():
        key = topic_key(t, session.by_id)
        for idx in t["partitions"]:
            parts.pop((key, idx), None)


def as_request(
    req: dict[str, Any], session: FetchSession, keys: list[tuple[TopicKey, int]]
) -> dict[str, Any]:
    """A full request for the session partitions ``keys`` (in session order), with ``req``'s other fields."""
    topics: list[dict[str, Any]] = []
    last: TopicKey | None = None
    for k in keys:
        c = session.partitions[k]
        if not topics or k[0] != last:
            last = k[0]
            if session.by_id:
                assert isinstance(k[0], uuid.UUID)
                topics.append({"topic": "", "topic_id": k[0], "partitions": []})
            else:
                topics.append({"topic": k[0], "topic_id": uuid.UUID(int=0), "partitions": []})
        topics[-1]["partitions"].append(
            {
                "partition": k[1],
                "current_leader_epoch": c.current_leader_epoch,
                "fetch_offset": c.fetch_offset,
                "last_fetched_epoch": c.last_fetched_epoch,
                "log_start_offset": -1,
                "partition_max_bytes": c.partition_max_bytes,
            }
        )
    return {**req, "topics": topics, "forgotten_topics_data": []}


def remember(
    session: FetchSession, responses: list[dict[str, Any]], *, only_changed: bool
) -> list[dict[str, Any]]:
    """Record what ``responses`` tell the client; with ``only_changed``, keep only the partitions that have
    something new for it (records, an error, moved offsets), dropping topics left empty."""
    out: list[dict[str, Any]] = []
    parts = session.partitions
    for t in responses:
        key: TopicKey = t["topic_id"] if session.by_id else t["topic"]
        kept: list[dict[str, Any]] = []
        for p in t["partitions"]:
            c = parts.get((key, p["partition_index"]))
            if c is None:
                continue
            hw, lso, lstart = (
                p.get("high_watermark", -1),
                p.get("last_stable_offset", -1),
                p.get("log_start_offset", -1),
            )
            records = p.get("records")
            changed = (
                p.get("error_code", 0) != 0
                or (records is not None and len(records) > 0)
                or hw != c.high_watermark
                or lso != c.last_stable_offset
                or lstart != c.log_start_offset
            )
            c.high_watermark, c.last_stable_offset, c.log_start_offset = hw, lso, lstart
            if changed or not only_changed:
                kept.append(p)
        if kept or not only_changed:
            out.append({**t, "partitions": kept})
    return out
