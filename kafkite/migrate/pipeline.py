"""The mirror's moving parts between a source fetch and a target write, free of I/O.

A fetch answer is cut into ``Piece``s, one per committed data batch (aborted transactions and control batches
are left out by their headers alone, nothing is decoded), followed by an ``Advance`` to the position after the
answer. They wait in the partition's ``Feed``. The writer takes from each feed an ``Outgoing``: either one
whole source batch sent as it is (``verbatim``: its records, offset deltas, timestamps and compression
untouched; only the producer fields are rewritten), or the records of several pieces re-batched up to a size.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from kafkite.protocol import records

RECORD_OVERHEAD = 24  # rough bytes of record framing beyond key, value and headers


def record_size(r: records.Record) -> int:
    return (
        len(r.key or b"")
        + len(r.value or b"")
        + sum(len(k) + len(v or b"") for k, v in r.headers)
        + RECORD_OVERHEAD
    )


def committed_batches(
    buf: bytes, from_offset: int, aborted: list[tuple[int, int]]
) -> tuple[list[tuple[int, records.BatchHeader]], int]:
    """The committed data batches of a read_committed Fetch answer that reach ``from_offset``.

    Returns ([(position, header)], next offset to fetch). Control batches are skipped, and so are the batches
    of the aborted transactions the broker listed with the answer (until their abort marker).
    """
    out: list[tuple[int, records.BatchHeader]] = []
    nxt = from_offset
    pending = sorted(aborted, key=lambda a: a[1])
    aborting: set[int] = set()
    i = 0
    for pos, h in records.iter_headers(buf):
        while i < len(pending) and pending[i][1] <= h.last_offset:
            aborting.add(pending[i][0])
            i += 1
        nxt = max(nxt, h.last_offset + 1)
        if h.is_control:
            if h.producer_id in aborting:
                for r in records.iter_records(buf, pos, h):
                    marker = records.parse_control_record(r)
                    if marker is not None and not marker[0]:
                        aborting.discard(h.producer_id)
            continue
        if h.is_transactional and h.producer_id in aborting:
            continue
        if h.last_offset < from_offset:
            continue
        out.append((pos, h))
    return out, nxt


@dataclass(slots=True)
class Piece:
    """One committed source batch, from source offset ``first`` on."""

    data: bytes
    header: records.BatchHeader
    first: int
    decoded: list[records.Record] | None = None  # records at or after ``first`` once decoded

    @property
    def whole(self) -> bool:
        return self.first <= self.header.base_offset

    @property
    def contiguous(self) -> bool:
        """Its records have consecutive offsets (no record was compacted away)."""
        h = self.header
        return h.records_count == h.last_offset_delta + 1

    @property
    def size(self) -> int:
        return len(self.data)

    def records(self) -> list[records.Record]:
        if self.decoded is None:
            first = self.first
            self.decoded = [r for r in records.iter_records(self.data, 0, self.header) if r.offset >= first]
        return self.decoded


@dataclass(slots=True)
class Advance:
    """Everything before ``offset`` has been fetched (what follows the last piece was not data to copy)."""

    offset: int


@dataclass
class Outgoing:
    """What the writer sends to one target partition in one round."""

    topic: str
    partition: int
    verbatim: Piece | None = None
    recs: list[records.Record] = field(default_factory=list)
    codec: int = 0
    end_source: int = 0  # the source position once this is written
    size: int = 0

    @property
    def key(self) -> str:
        return f"{self.topic}/{self.partition}"

    @property
    def count(self) -> int:
        return self.verbatim.header.records_count if self.verbatim is not None else len(self.recs)

    @property
    def first_source(self) -> int:
        return self.verbatim.header.base_offset if self.verbatim is not None else self.recs[0].offset

    @property
    def max_timestamp(self) -> int:
        if self.verbatim is not None:
            return self.verbatim.header.max_timestamp
        return max(r.timestamp for r in self.recs)

    def source_offsets(self) -> list[int]:
        if self.verbatim is not None:
            b = self.verbatim.header.base_offset
            return list(range(b, b + self.verbatim.header.records_count))
        return [r.offset for r in self.recs]

    def all_records(self) -> list[records.Record]:
        return self.verbatim.records() if self.verbatim is not None else self.recs


class Feed:
    """The pieces fetched for one partition and not yet written, and where fetching goes on."""

    def __init__(self, topic: str, partition: int, fetch_pos: int, goal: int | None = None) -> None:
        self.topic = topic
        self.partition = partition
        self.fetch_pos = fetch_pos
        self.goal = goal  # one-pass copies: stop fetching here
        self.items: collections.deque[Piece | Advance] = collections.deque()
        self.queued_bytes = 0
        self.fetching = False
        self.solo = False  # fetch alone: a batch too big for a shared answer
        self.source_end = -1  # last stable offset of the source as last seen
        self.source_high = -1
        self.log_start = -1
        self.paused_reason: str | None = None  # not mirrored (e.g. no target partition)

    @property
    def key(self) -> str:
        return f"{self.topic}/{self.partition}"

    @property
    def fetched_all(self) -> bool:
        return self.goal is not None and self.fetch_pos >= self.goal

    def push(self, pieces: list[Piece], nxt: int) -> None:
        for p in pieces:
            self.items.append(p)
            self.queued_bytes += p.size
        if nxt > self.fetch_pos:
            self.items.append(Advance(nxt))
            self.fetch_pos = nxt

    def clear(self, fetch_pos: int) -> None:
        self.items.clear()
        self.queued_bytes = 0
        self.fetch_pos = fetch_pos

    def take(self, max_bytes: int, *, verbatim_ok: bool) -> tuple[Outgoing | None, int | None]:
        """The next write for this partition: (outgoing or None, an advance to apply now or None).

        An ``Advance`` at the head is returned alone (the caller applies it and asks again); one right after
        the pieces taken becomes the outgoing's ``end_source``."""
        items = self.items
        if items and isinstance(items[0], Advance):
            adv = items.popleft()
            while items and isinstance(items[0], Advance):
                adv = items.popleft()
            assert isinstance(adv, Advance)
            return None, adv.offset
        if not items:
            return None, None
        head = items[0]
        assert isinstance(head, Piece)
        out = Outgoing(self.topic, self.partition)
        alone = len(items) == 1 or (len(items) == 2 and isinstance(items[1], Advance))
        if (
            verbatim_ok
            and head.whole
            and head.contiguous
            and head.decoded is None
            and not head.header.log_append_time
            and head.size <= max_bytes
            and (alone or head.size >= max_bytes // 4)
        ):
            items.popleft()
            self.queued_bytes -= head.size
            out.verbatim = head
            out.codec = head.header.compression
            out.size = head.size
            out.end_source = head.header.last_offset + 1
        else:
            size = 0
            codec = -1
            while items:
                item = items[0]
                if isinstance(item, Advance):
                    break
                if codec < 0:
                    codec = item.header.compression
                if item.whole and item.decoded is None and size + item.size <= max_bytes:
                    # A whole small batch: its records all go (its size on the wire is the estimate).
                    out.recs.extend(item.records())
                    size += item.size
                    items.popleft()
                    self.queued_bytes -= item.size
                    out.end_source = item.header.last_offset + 1
                    continue
                if out.recs and item.whole:
                    break  # the next batch does not fit: the next write takes it
                recs = item.records()
                taken = 0
                for r in recs:
                    s = record_size(r)
                    if out.recs and size + s > max_bytes:
                        break
                    out.recs.append(r)
                    size += s
                    taken += 1
                if taken < len(recs):
                    item.decoded = recs[taken:]
                    item.first = recs[taken].offset
                    break
                items.popleft()
                self.queued_bytes -= item.size
                out.end_source = item.header.last_offset + 1
            out.codec = max(codec, 0)
            out.size = size
            if out.recs:
                out.end_source = max(out.end_source, out.recs[-1].offset + 1)
            else:
                return None, None
        # An advance right behind the data is part of this write.
        if items and isinstance(items[0], Advance):
            adv = items.popleft()
            assert isinstance(adv, Advance)
            out.end_source = max(out.end_source, adv.offset)
        return out, None
