"""One queue's messages and their delivery state, durable on two partition logs of the broker's storage.

``__queue.<key>.messages`` holds every put, one record per message: the record's offset is the message id,
its timestamp the creation time, its value the content, its headers the channel (``c``), custom properties
(``p``, JSON) and expiry time (``x``). ``__queue.<key>.state`` holds what happened to them since, one record
per event keyed by its type, with a small JSON value:

=====  ================================================  ============================================
key    value                                             meaning
=====  ================================================  ============================================
``d``  ``{"i": id, "n": count, "v": until, "r": nonce}``  delivered (count-th time), invisible until ``v``
``u``  ``{"i": id, "v": until, "r": nonce}``              visibility of delivery ``r`` changed
``x``  ``{"i": id}``                                     deleted
``l``  ``{"i": id}``                                     moved to the dead letter queue
``b``  ``{"i": [id, ...]}``                              moved back from the dead letter queue
``p``  ``{"t": type, "c": channels, "m": max id}``       purged (NORMAL, DLQ or BOTH; null: all channels)
``S``  ``{"next": id, "m": [[id, n, v, r, dlq]], ...}``  snapshot chunk (``"last": true`` ends it)
=====  ================================================  ============================================

Every event is appended before the change it records is acknowledged. On start-up the messages log and
then the state log are replayed; the in-memory indexes (visible heaps per channel, the in-flight heap
ordered by visibility deadline) are rebuilt from them. ``compact`` writes a snapshot of the live state,
syncs it, and moves both logs' start offsets past what it no longer needs.

The clock is wall time in milliseconds, so visibility deadlines survive a restart: a message in flight when
the broker died becomes visible again once its deadline has passed.
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import json
import logging
import os
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from kafkite.clock import now_ms
from kafkite.log.base import Partition
from kafkite.protocol.records import Header, Record, build_batch, iter_headers, iter_records
from kafkite.queue.model import QUEUE_STORAGE_BYTES, QueueError, QueueMeta, invalid

log = logging.getLogger("kafkite.queue")

READ_CHUNK = 4 * 1024 * 1024
SNAPSHOT_ROWS = 5000
_RECEIPT = struct.Struct(">IQQIB")  # queue hash, message id, delivery nonce, delivery count, flags


class RecordLog:
    """Records appended to and replayed from partition 0 of an internal topic."""

    def __init__(self, partition: Partition, clock: Callable[[], int] = now_ms) -> None:
        self.partition = partition
        self.clock = clock

    def append(self, records: list[tuple[bytes | None, bytes | None, list[Header], int]]) -> int:
        """Append ``(key, value, headers, timestamp)`` records as one batch; the first record's offset."""
        batch = bytearray(build_batch(records))
        info = self.partition.append_sync(batch, now_ms=self.clock())
        return info.first_offset

    def append_events(self, events: list[tuple[bytes, dict[str, Any]]]) -> int:
        t = self.clock()
        return self.append([(k, json.dumps(v, separators=(",", ":")).encode(), [], t) for k, v in events])

    def replay(self) -> Iterator[Record]:
        p = self.partition
        offset = p.log_start_offset
        while offset < p.log_end_offset:
            data = p.read_sync(offset, READ_CHUNK).to_bytes()
            if not data:
                break
            for pos, h in iter_headers(data):
                for rec in iter_records(data, pos, h):
                    if rec.offset >= offset:
                        yield rec
                offset = max(offset, h.last_offset + 1)


@dataclass(slots=True)
class Message:
    id: int
    content: bytes
    channel: str  # "" when the message was put without a channel
    props: dict[str, str] | None
    created_ms: int
    expire_ms: int
    delivery_count: int = 0
    visible_after_ms: int = 0
    nonce: int = 0  # the current delivery's token; 0 before the first delivery
    dlq: bool = False


class Delivery(NamedTuple):
    message: Message
    receipt: str
    delivery_count: int
    visible_after_ms: int


def channel_matches(channel: str, pattern: str | None) -> bool:
    """A channel filter is an exact channel id, or a prefix ending with '*'."""
    if pattern is None or pattern == "":
        return True
    if pattern.endswith("*"):
        return channel.startswith(pattern[:-1])
    return channel == pattern


def _new_nonce() -> int:
    return int.from_bytes(os.urandom(8), "big") | 1


class QueueState:
    """The live state of one queue. Synchronous methods run on the event loop thread."""

    def __init__(
        self,
        meta: QueueMeta,
        messages: RecordLog,
        state: RecordLog,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.meta = meta
        self.messages_log = messages
        self.state_log = state
        self.clock = clock
        self.msgs: dict[int, Message] = {}
        self._ready: dict[tuple[bool, str], list[int]] = {}
        self._inflight: list[tuple[int, int, int]] = []  # (visible after, id, nonce)
        self._waiters: set[asyncio.Future[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0
        self._hash = zlib.crc32(meta.key.encode())
        self._channel_bytes: dict[str, int] = {}
        self.closed = False

    @property
    def partitions(self) -> set[Partition]:
        return {self.messages_log.partition, self.state_log.partition}

    # ------------------------------------------------------------------ recovery

    def load(self) -> None:
        """Rebuild the state from the two logs."""
        msgs: dict[int, Message] = {}
        for rec in self.messages_log.replay():
            channel, props, expire = "", None, rec.timestamp + self.meta.retention_in_seconds * 1000
            for hk, hv in rec.headers:
                if hv is None:
                    continue
                if hk == "c":
                    channel = hv.decode()
                elif hk == "p":
                    props = json.loads(hv)
                elif hk == "x":
                    expire = int(hv)
            msgs[rec.offset] = Message(rec.offset, rec.value or b"", channel, props, rec.timestamp, expire)
        snapshot: list[list[int]] = []
        for rec in self.state_log.replay():
            kind = rec.key or b""
            ev = json.loads(rec.value or b"{}")
            if kind == b"S":
                snapshot.extend(ev["m"])
                if ev.get("last"):
                    _apply_snapshot(msgs, ev["next"], snapshot)
                    snapshot = []
                continue
            snapshot = []
            _apply_event(msgs, kind, ev)
        now = self.clock()
        self.msgs = {i: m for i, m in msgs.items() if m.expire_ms > now}
        self._rebuild()
        self._settle(now)

    def _rebuild(self) -> None:
        self._ready.clear()
        self._inflight.clear()
        self._channel_bytes.clear()
        for m in self.msgs.values():
            self._channel_bytes[m.channel] = self._channel_bytes.get(m.channel, 0) + len(m.content)
            if m.nonce and m.visible_after_ms:
                self._inflight.append((m.visible_after_ms, m.id, m.nonce))
            else:
                self._ready.setdefault((m.dlq, m.channel), []).append(m.id)
        for h in self._ready.values():
            heapq.heapify(h)
        heapq.heapify(self._inflight)

    # ------------------------------------------------------------------ puts

    def put(self, entries: list[tuple[bytes, str, dict[str, str] | None]]) -> list[Message]:
        """Append new messages; returns them with their ids."""
        self._check_open()
        now = self.clock()
        limit = self.meta.max_content_bytes
        added: dict[str, int] = {}
        for content, channel, _ in entries:
            if len(content) > limit:
                raise invalid(f"message content is larger than {limit} bytes")
            added[channel] = added.get(channel, 0) + len(content)
        self._check_capacity(added)
        expire = now + self.meta.retention_in_seconds * 1000
        records: list[tuple[bytes | None, bytes | None, list[Header], int]] = []
        for content, channel, props in entries:
            headers: list[Header] = []
            if channel:
                headers.append(("c", channel.encode()))
            if props:
                headers.append(("p", json.dumps(props, separators=(",", ":")).encode()))
            headers.append(("x", str(expire).encode()))
            records.append((None, content, headers, now))
        first = self.messages_log.append(records)
        out = []
        for i, (content, channel, props) in enumerate(entries):
            m = Message(first + i, content, channel, props, now, expire)
            self.msgs[m.id] = m
            self._channel_bytes[channel] = self._channel_bytes.get(channel, 0) + len(content)
            heapq.heappush(self._ready.setdefault((False, channel), []), m.id)
            out.append(m)
        self._wake()
        return out

    def _check_capacity(self, added: dict[str, int]) -> None:
        total = sum(self._channel_bytes.values()) + sum(added.values())
        if total > QUEUE_STORAGE_BYTES:
            raise QueueError(429, "TooManyRequests", "the queue is full: its storage limit is reached")
        share = QUEUE_STORAGE_BYTES * self.meta.channel_consumption_limit // 100
        for channel, n in added.items():
            if channel and self._channel_bytes.get(channel, 0) + n > share:
                raise QueueError(
                    429,
                    "TooManyRequests",
                    f"channel {channel!r} reached its consumption limit "
                    f"({self.meta.channel_consumption_limit}% of the queue's storage)",
                )

    # ------------------------------------------------------------------ deliveries

    def take(
        self, limit: int, visibility_s: int, channel_filter: str | None = None, dlq: bool = False
    ) -> list[Delivery]:
        """Deliver up to ``limit`` visible messages now (no waiting), invisible for ``visibility_s``."""
        self._check_open()
        now = self.clock()
        self._settle(now)
        keys = [k for k in self._ready if k[0] == dlq and channel_matches(k[1], channel_filter)]
        chosen: list[Message] = []
        while len(chosen) < limit:
            best: tuple[bool, str] | None = None
            for k in keys:
                h = self._ready[k]
                while h and not self._is_ready(h[0], dlq, now):
                    heapq.heappop(h)
                if h and (best is None or h[0] < self._ready[best][0]):
                    best = k
            if best is None:
                break
            chosen.append(self.msgs[heapq.heappop(self._ready[best])])
        for k in keys:
            if not self._ready[k]:
                del self._ready[k]
        if not chosen:
            return []
        until = now + visibility_s * 1000
        nonces = [_new_nonce() for _ in chosen]
        try:
            self.state_log.append_events(
                [
                    (b"d", {"i": m.id, "n": m.delivery_count + 1, "v": until, "r": r})
                    for m, r in zip(chosen, nonces, strict=True)
                ]
            )
        except Exception:
            for m in chosen:  # not delivered after all: back where they were
                heapq.heappush(self._ready.setdefault((m.dlq, m.channel), []), m.id)
            raise
        out = []
        for m, r in zip(chosen, nonces, strict=True):
            m.delivery_count += 1
            m.nonce = r
            m.visible_after_ms = until
            heapq.heappush(self._inflight, (until, m.id, r))
            out.append(Delivery(m, self._receipt(m), m.delivery_count, until))
        self._schedule()
        return out

    async def receive(
        self,
        limit: int,
        visibility_s: int,
        timeout_s: float,
        channel_filter: str | None = None,
        dlq: bool = False,
    ) -> list[Delivery]:
        """``take``, waiting up to ``timeout_s`` for a message when none is visible (woken, never polled)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            got = self.take(limit, visibility_s, channel_filter, dlq)
            remaining = deadline - loop.time()
            if got or remaining <= 0:
                return got
            await self.wait(remaining)

    async def wait(self, timeout: float | None) -> None:
        """Until something may have become visible (a put, a lapse, a release) or ``timeout`` passes."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(fut)
        try:
            await asyncio.wait([fut], timeout=timeout)
        finally:
            self._waiters.discard(fut)
            if not fut.done():
                fut.cancel()

    def waiter(self) -> asyncio.Future[None]:
        """A future completed the next time something may become visible (its owner may complete it too)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(fut)
        fut.add_done_callback(self._waiters.discard)
        if self.closed:
            fut.set_result(None)
        return fut

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, set()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _is_ready(self, mid: int, dlq: bool, now: int) -> bool:
        m = self.msgs.get(mid)
        if m is None or m.dlq != dlq or m.visible_after_ms > now:
            return False
        if m.expire_ms <= now:
            self._drop(m)
            return False
        return True

    # ------------------------------------------------------------------ lapses and dead letters

    def _settle(self, now: int) -> None:
        """Deliveries whose visibility lapsed: back to their queue, or to the DLQ after too many."""
        h = self._inflight
        lapsed: list[Message] = []
        while h and h[0][0] <= now:
            until, mid, nonce = heapq.heappop(h)
            m = self.msgs.get(mid)
            if m is None or m.nonce != nonce or m.visible_after_ms != until:
                continue
            lapsed.append(m)
        if not lapsed:
            return
        limit = self.meta.dead_letter_queue_delivery_count
        dead = [m for m in lapsed if not m.dlq and limit > 0 and m.delivery_count >= limit]
        if dead:
            try:
                self.state_log.append_events([(b"l", {"i": m.id}) for m in dead])
            except Exception:
                log.exception("queue %s: cannot record dead letters (replay will redo it)", self.meta.id)
            for m in dead:
                m.dlq = True
        for m in lapsed:
            heapq.heappush(self._ready.setdefault((m.dlq, m.channel), []), m.id)
        self._wake()

    def _schedule(self) -> None:
        if not self._inflight or self.closed:
            return
        at = self._inflight[0][0]
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        delay = max(0.0, (at - self.clock()) / 1000) + 0.001
        self._timer_at = at
        self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.closed:
            return
        try:
            self._settle(self.clock())
        finally:
            self._schedule()

    # ------------------------------------------------------------------ receipts

    def _receipt(self, m: Message) -> str:
        raw = _RECEIPT.pack(self._hash, m.id, m.nonce, m.delivery_count, 1 if m.dlq else 0)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def resolve(self, receipt: str) -> Message:
        """The message whose current, unexpired delivery ``receipt`` names."""
        self._check_open()
        try:
            raw = base64.urlsafe_b64decode(receipt + "=" * (-len(receipt) % 4))
            qhash, mid, nonce, _count, flags = _RECEIPT.unpack(raw)
        except (ValueError, struct.error):
            raise invalid("the message receipt is malformed") from None
        if qhash != self._hash:
            raise invalid("the message receipt belongs to another queue")
        now = self.clock()
        self._settle(now)
        m = self.msgs.get(mid)
        if m is None or m.expire_ms <= now:
            raise QueueError(404, "NotAuthorizedOrNotFound", "the message was deleted or has expired")
        if m.nonce != nonce or m.dlq != bool(flags & 1) or m.visible_after_ms <= now:
            raise QueueError(
                404,
                "NotAuthorizedOrNotFound",
                "the message receipt is no longer valid: its visibility timeout has passed",
            )
        return m

    def update(self, receipt: str, visibility_s: int) -> Message:
        result = self.update_many([(receipt, visibility_s)], single=True)[0]
        assert isinstance(result, Message)
        return result

    def update_many(self, entries: list[tuple[str, int]], single: bool = False) -> list[Message | QueueError]:
        """Change the visibility of deliveries: from now, for ``visibility_s`` seconds each."""
        now = self.clock()
        results: list[Message | QueueError] = []
        events: list[tuple[bytes, dict[str, Any]]] = []
        changes: list[tuple[Message, int]] = []
        for receipt, vis in entries:
            try:
                m = self.resolve(receipt)
            except QueueError as e:
                if single:
                    raise
                results.append(e)
                continue
            until = now + vis * 1000
            events.append((b"u", {"i": m.id, "v": until, "r": m.nonce}))
            changes.append((m, until))
            results.append(m)
        if events:
            self.state_log.append_events(events)
        for m, until in changes:
            m.visible_after_ms = until
            heapq.heappush(self._inflight, (until, m.id, m.nonce))
        if changes:
            self._settle(now)
            self._schedule()
        return results

    def release(self, receipts: Iterable[str]) -> int:
        """Make deliveries visible again at once (STOMP NACK, a closed subscription); invalid ones skipped."""
        ok = [r for r in self.update_many([(r, 0) for r in receipts]) if isinstance(r, Message)]
        return len(ok)

    def delete(self, receipt: str) -> None:
        self.delete_many([receipt], single=True)

    def delete_many(self, receipts: list[str], single: bool = False) -> list[QueueError | None]:
        results: list[QueueError | None] = []
        doomed: list[Message] = []
        for receipt in receipts:
            try:
                m = self.resolve(receipt)
            except QueueError as e:
                if single:
                    raise
                results.append(e)
                continue
            if m in doomed:
                results.append(None)
                continue
            doomed.append(m)
            results.append(None)
        if doomed:
            self.state_log.append_events([(b"x", {"i": m.id}) for m in doomed])
            for m in doomed:
                self._drop(m)
        return results

    def _drop(self, m: Message) -> None:
        if self.msgs.pop(m.id, None) is not None:
            left = self._channel_bytes.get(m.channel, 0) - len(m.content)
            if left > 0:
                self._channel_bytes[m.channel] = left
            else:
                self._channel_bytes.pop(m.channel, None)

    # ------------------------------------------------------------------ admin

    def purge(self, purge_type: str, channels: list[str] | None) -> int:
        self._check_open()
        upto = self.messages_log.partition.log_end_offset - 1
        self.state_log.append_events([(b"p", {"t": purge_type, "c": channels, "m": upto})])
        doomed = [m for m in self.msgs.values() if _purged(m, purge_type, channels, upto)]
        for m in doomed:
            self._drop(m)
        return len(doomed)

    def move_back(self, ids: list[int] | None = None, channels: list[str] | None = None) -> int:
        """Move dead letters back to the queue, visible at once with a fresh delivery count."""
        self._check_open()
        want = set(ids) if ids is not None else None
        chosen = [
            m
            for m in self.msgs.values()
            if m.dlq and (want is None or m.id in want) and (channels is None or m.channel in channels)
        ]
        if not chosen:
            return 0
        self.state_log.append_events([(b"b", {"i": [m.id for m in chosen]})])
        for m in chosen:
            _reset(m)
            heapq.heappush(self._ready.setdefault((False, m.channel), []), m.id)
        self._wake()
        return len(chosen)

    def expire(self) -> int:
        """Drop messages past their retention; returns how many."""
        now = self.clock()
        old = [m for m in self.msgs.values() if m.expire_ms <= now]
        for m in old:
            self._drop(m)
        return len(old)

    def stats(self, channel: str | None = None) -> dict[str, dict[str, int]]:
        now = self.clock()
        self._settle(now)
        out = {k: {"visibleMessages": 0, "inFlightMessages": 0, "sizeInBytes": 0} for k in ("queue", "dlq")}
        for m in self.msgs.values():
            if m.expire_ms <= now or (channel is not None and m.channel != channel):
                continue
            s = out["dlq" if m.dlq else "queue"]
            if m.visible_after_ms > now:
                s["inFlightMessages"] += 1
            else:
                s["visibleMessages"] += 1
            s["sizeInBytes"] += len(m.content)
        return out

    def channels(self, channel_filter: str | None = None) -> list[str]:
        now = self.clock()
        found = {
            m.channel
            for m in self.msgs.values()
            if m.channel and not m.dlq and m.expire_ms > now and channel_matches(m.channel, channel_filter)
        }
        return sorted(found)

    # ------------------------------------------------------------------ compaction and shutdown

    def state_records(self) -> int:
        p = self.state_log.partition
        return p.log_end_offset - p.log_start_offset

    def write_snapshot(self) -> int:
        """Append a snapshot of every live message's state; its first offset (sync it before trimming)."""
        self.expire()
        rows = [[m.id, m.delivery_count, m.visible_after_ms, m.nonce, int(m.dlq)] for m in self.msgs.values()]
        nxt = self.messages_log.partition.log_end_offset
        chunks = [rows[i : i + SNAPSHOT_ROWS] for i in range(0, len(rows), SNAPSHOT_ROWS)] or [[]]
        events = [(b"S", {"next": nxt, "m": c, "last": i == len(chunks) - 1}) for i, c in enumerate(chunks)]
        return self.state_log.append_events(events)

    def trim(self, snapshot_offset: int) -> None:
        """After the snapshot at ``snapshot_offset`` is synced: drop what precedes it and dead messages."""
        self.state_log.partition.delete_records_before(snapshot_offset)
        mp = self.messages_log.partition
        low = min(self.msgs, default=mp.log_end_offset)
        if low > mp.log_start_offset:
            mp.delete_records_before(low)

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake()

    def _check_open(self) -> None:
        if self.closed:
            raise QueueError(404, "NotAuthorizedOrNotFound", f"queue {self.meta.id} not found")


def _reset(m: Message) -> None:
    m.dlq = False
    m.delivery_count = 0
    m.visible_after_ms = 0
    m.nonce = 0


def _purged(m: Message, purge_type: str, channels: list[str] | None, upto: int) -> bool:
    if m.id > upto or (channels is not None and m.channel not in channels):
        return False
    return purge_type == "BOTH" or (purge_type == "DLQ") == m.dlq


def _apply_event(msgs: dict[int, Message], kind: bytes, ev: dict[str, Any]) -> None:
    if kind == b"p":
        upto, ptype, channels = ev["m"], ev["t"], ev.get("c")
        for mid in [i for i, m in msgs.items() if _purged(m, ptype, channels, upto)]:
            del msgs[mid]
        return
    if kind == b"b":
        for mid in ev["i"]:
            if mid in msgs:
                _reset(msgs[mid])
        return
    m = msgs.get(ev["i"])
    if m is None:
        return
    if kind == b"d":
        m.delivery_count, m.visible_after_ms, m.nonce = ev["n"], ev["v"], ev["r"]
    elif kind == b"u":
        if m.nonce == ev["r"]:
            m.visible_after_ms = ev["v"]
    elif kind == b"x":
        del msgs[m.id]
    elif kind == b"l":
        m.dlq = True


def _apply_snapshot(msgs: dict[int, Message], nxt: int, rows: list[list[int]]) -> None:
    state = {r[0]: r for r in rows}
    for mid in [i for i in msgs if i < nxt and i not in state]:
        del msgs[mid]
    for mid, (_, n, v, r, dlq) in state.items():
        m = msgs.get(mid)
        if m is not None:
            m.delivery_count, m.visible_after_ms, m.nonce, m.dlq = n, v, r, bool(dlq)
