"""One queue's messages and their delivery state, durable on two partition logs of the broker's storage.

``__queue.<key>.messages`` holds every put, one record per message: the record's offset is the message id,
its timestamp the creation time, its value the content, its headers the channel (``c``), custom properties
(``p``, JSON) and expiry time (``x``). ``__queue.<key>.state`` is the journal of the queue's delivery ledger
(``kafkite.broker.delivery.ledger``, in queue mode: one event per message delivered, its visibility changed,
deleted, moved to or back from the dead letter queue, and snapshots), plus the queue's own purge event:

=====  ================================================  ============================================
key    value                                             meaning
=====  ================================================  ============================================
``p``  ``{"t": type, "c": channels, "m": max id}``       purged (NORMAL, DLQ or BOTH; null: all channels)
=====  ================================================  ============================================

Every event is appended before the change it records is acknowledged. On start-up the messages log and
then the state log are replayed; the in-memory indexes (visible heaps per channel, the ledger's in-flight heap
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
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

from kafkite.broker.delivery.journal import RecordLog, decode_event
from kafkite.broker.delivery.ledger import Ledger
from kafkite.clock import now_ms
from kafkite.log.base import Partition
from kafkite.protocol.records import Header
from kafkite.queue.model import QUEUE_STORAGE_BYTES, QueueError, QueueMeta, invalid

log = logging.getLogger("kafkite.queue")

__all__ = ["Delivery", "Message", "QueueState", "RecordLog", "channel_matches"]

_RECEIPT = struct.Struct(">IQQIB")  # queue hash, message id, delivery nonce, delivery count, flags


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
        self.clock = clock
        self.msgs: dict[int, Message] = {}
        # The delivery state of the messages (counts, visibility, dead letters) and its journal.
        self.ledger: Ledger[Message] = Ledger(state, self.msgs, clock=clock, on_lapse=self._on_lapse)
        self._ready: dict[tuple[bool, str], list[int]] = {}
        self._waiters: set[asyncio.Future[None]] = set()
        self._hash = zlib.crc32(meta.key.encode())
        self._channel_bytes: dict[str, int] = {}
        self.closed = False

    @property
    def state_log(self) -> RecordLog:
        return self.ledger.log

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
        self.msgs = msgs
        self.ledger.entries = msgs
        for rec in self.state_log.replay():
            kind, ev = decode_event(rec)
            if not self.ledger.apply(kind, ev) and kind == b"p":
                upto, ptype, channels = ev["m"], ev["t"], ev.get("c")
                for mid in [i for i, m in msgs.items() if _purged(m, ptype, channels, upto)]:
                    del msgs[mid]
        now = self.clock()
        self.msgs = {i: m for i, m in msgs.items() if m.expire_ms > now}
        self.ledger.entries = self.msgs
        self._rebuild()
        self._settle(now)

    def _rebuild(self) -> None:
        self._ready.clear()
        self._channel_bytes.clear()
        for m in self.msgs.values():
            self._channel_bytes[m.channel] = self._channel_bytes.get(m.channel, 0) + len(m.content)
            if not (m.nonce and m.visible_after_ms):
                self._ready.setdefault((m.dlq, m.channel), []).append(m.id)
        for h in self._ready.values():
            heapq.heapify(h)
        self.ledger.rebuild()

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
        try:
            self.ledger.deliver(chosen, until)
        except Exception:
            for m in chosen:  # not delivered after all: back where they were
                heapq.heappush(self._ready.setdefault((m.dlq, m.channel), []), m.id)
            raise
        return [Delivery(m, self._receipt(m), m.delivery_count, until) for m in chosen]

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
        back, dead = self.ledger.settle(now, self.meta.dead_letter_queue_delivery_count)
        if not back and not dead:
            return
        for m in back + dead:
            heapq.heappush(self._ready.setdefault((m.dlq, m.channel), []), m.id)
        self._wake()

    def _schedule(self) -> None:
        self.ledger.schedule()

    def _on_lapse(self) -> None:
        if not self.closed:
            self._settle(self.clock())

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
        changes: list[tuple[Message, int]] = []
        for receipt, vis in entries:
            try:
                m = self.resolve(receipt)
            except QueueError as e:
                if single:
                    raise
                results.append(e)
                continue
            changes.append((m, now + vis * 1000))
            results.append(m)
        if changes:
            self.ledger.relock(changes)
            self._settle(now)
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
            self.ledger.settled(doomed)
            for m in doomed:
                self._forget_bytes(m)
        return results

    def _drop(self, m: Message) -> None:
        if self.msgs.pop(m.id, None) is not None:
            self._forget_bytes(m)

    def _forget_bytes(self, m: Message) -> None:
        left = self._channel_bytes.get(m.channel, 0) - len(m.content)
        if left > 0:
            self._channel_bytes[m.channel] = left
        else:
            self._channel_bytes.pop(m.channel, None)

    # ------------------------------------------------------------------ admin

    def purge(self, purge_type: str, channels: list[str] | None) -> int:
        self._check_open()
        upto = self.messages_log.partition.log_end_offset - 1
        self.ledger.journal([(b"p", {"t": purge_type, "c": channels, "m": upto})])
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
        self.ledger.revive(chosen)
        for m in chosen:
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
        return self.ledger.journal(self.ledger.snapshot_events(self.messages_log.partition.log_end_offset))

    def trim(self, snapshot_offset: int) -> None:
        """After the snapshot at ``snapshot_offset`` is synced: drop what precedes it and dead messages."""
        self.state_log.partition.delete_records_before(snapshot_offset)
        mp = self.messages_log.partition
        low = min(self.msgs, default=mp.log_end_offset)
        if low > mp.log_start_offset:
            mp.delete_records_before(low)

    def close(self) -> None:
        self.closed = True
        self.ledger.close()
        self._wake()

    def _check_open(self) -> None:
        if self.closed:
            raise QueueError(404, "NotAuthorizedOrNotFound", f"queue {self.meta.id} not found")


def _purged(m: Message, purge_type: str, channels: list[str] | None, upto: int) -> bool:
    if m.id > upto or (channels is not None and m.channel not in channels):
        return False
    return purge_type == "BOTH" or (purge_type == "DLQ") == m.dlq
