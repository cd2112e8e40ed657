"""Log compaction, after Kafka's log cleaner: keep the latest record of each key, offsets unchanged.

The pieces here are pure over segments and batches; ``SegmentedLog.compact`` (partition.py) takes the
partition lock only to plan a pass and to swap the cleaned segments in.

A pass over one partition:

1. **What may be cleaned** (``find_cleanable``): whole segments from the first one up to, not including, the
   first segment that is the active one, holds an offset at or past the last stable offset (an open
   transaction is never cleaned) or has a max timestamp younger than ``min.compaction.lag.ms``. Of these the
   segments at or past the cleaner checkpoint (the first dirty offset, kept per partition) are *dirty*, the
   others *clean*. The pass runs when the dirty bytes are at least ``min.cleanable.dirty.ratio`` of the
   cleanable bytes, or when the first dirty batch is older than ``max.compaction.lag.ms``.
2. **Offset map** (``build_offset_map``): key -> offset of its latest record over the dirty segments.
   Records of aborted transactions, control batches and records without a key do not count. The map is
   bounded (``log.cleaner.dedupe.buffer.size``, estimated at ``MAP_ENTRY_OVERHEAD`` bytes plus the key per
   entry): once full, it stops at a segment boundary and the pass cleans only up to there; the next pass goes
   on from that checkpoint, as Kafka's cleaner does when its dedupe buffer fills.
3. **Rewrite** (``clean_batch``), every cleanable segment, batch by batch. A record is kept when it is the
   latest of its key (or its key is not in the map: it was cleaned before and nothing newer came) and, for a
   tombstone (null value), while it is younger than ``delete.retention.ms``; records of aborted transactions
   and records without a key go. Control batches (COMMIT/ABORT markers) are kept as they are. A batch whose
   records all stay is copied byte for byte; a partly kept batch is rewritten with the same header fields
   (base offset, last offset delta, timestamps, attributes and codec, producer id, epoch and base sequence),
   its kept records byte for byte, a new record count, max timestamp and CRC. A batch left without records is
   dropped, unless it is the last data batch of its producer: then it stays as an empty batch so that the
   producer's sequence survives a rebuild of the producer state from the log.

Tombstone age is measured from the max timestamp of the batch holding it (its append time on LogAppendTime
topics): a tombstone whose batch max timestamp is more than ``delete.retention.ms`` before the pass is
removed. The checkpoint then moves to the end of the cleaned range.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from kafkite.log.config import LogConfig
from kafkite.log.segment import Segment
from kafkite.protocol.records import (
    ATTR_TIMESTAMP_TYPE,
    BatchHeader,
    InvalidBatch,
    read_varint,
    rebuild_batch,
    records_section,
)

__all__ = [
    "MAP_ENTRY_OVERHEAD",
    "CleanContext",
    "CleanStats",
    "Cleanable",
    "RawRecord",
    "build_offset_map",
    "clean_batch",
    "find_cleanable",
    "split_records",
]


# What one offset map entry costs besides its key: the dict slot, the key's bytes object, the offset int.
MAP_ENTRY_OVERHEAD = 100


class RawRecord(NamedTuple):
    """One encoded record of a batch: the fields compaction needs, and its bytes (length prefix included)."""

    offset_delta: int
    timestamp_delta: int
    key: bytes | None
    tombstone: bool
    raw: bytes


def split_records(data: bytes, count: int) -> list[RawRecord]:
    """The records of a (decompressed) records section; raises InvalidBatch when it does not parse."""
    out: list[RawRecord] = []
    pos = 0
    end = len(data)
    try:
        for i in range(count):
            start = pos
            length, pos = read_varint(data, pos)
            rec_end = pos + length
            if length < 6 or rec_end > end:
                raise InvalidBatch(f"record {i} has an invalid length {length}")
            pos += 1  # attributes
            ts_delta, pos = read_varint(data, pos)
            offset_delta, pos = read_varint(data, pos)
            n, pos = read_varint(data, pos)
            key: bytes | None = None
            if n >= 0:
                key = data[pos : pos + n]
                pos += n
            elif n != -1:
                raise InvalidBatch(f"record {i} has an invalid key length {n}")
            n, _ = read_varint(data, pos)
            if pos > rec_end or n < -1:
                raise InvalidBatch(f"record {i} runs past its length")
            out.append(RawRecord(offset_delta, ts_delta, key, n == -1, data[start:rec_end]))
            pos = rec_end
    except IndexError:
        raise InvalidBatch("record runs past the end of the batch") from None
    if pos != end:
        raise InvalidBatch(f"{end - pos} bytes after the last of {count} records")
    return out


def _records(data: bytes, h: BatchHeader) -> list[RawRecord]:
    return split_records(records_section(data, 0, h), h.records_count)


@dataclass(frozen=True)
class Cleanable:
    """The segments one pass rewrites and what decided it."""

    segments: list[Segment]  # from the log's first segment up to the first uncleanable one
    first_dirty: int  # the cleaner checkpoint the pass starts from
    end_offset: int  # the first uncleanable offset: the checkpoint after the pass
    clean_bytes: int
    dirty_bytes: int
    forced: bool  # max.compaction.lag.ms ran out

    @property
    def dirty_ratio(self) -> float:
        total = self.clean_bytes + self.dirty_bytes
        return self.dirty_bytes / total if total else 0.0

    @property
    def dirty(self) -> list[Segment]:
        return [s for s in self.segments if s.next_offset > self.first_dirty]


def find_cleanable(
    segments: Sequence[Segment],
    *,
    first_dirty: int,
    last_stable_offset: int,
    now_ms: int,
    config: LogConfig,
    force: bool = False,
) -> Cleanable | None:
    """The segments a pass should clean now, or None (nothing dirty, or not dirty enough)."""
    if len(segments) < 2:
        return None
    limit = min(segments[-1].base_offset, last_stable_offset)
    n = 0
    for seg in segments[:-1]:
        if seg.next_offset > limit:
            break
        lag = config.min_compaction_lag_ms
        if lag > 0 and seg.largest_timestamp > now_ms - lag:
            break
        n += 1
    if n == 0:
        return None
    chosen = list(segments[:n])
    end = segments[n].base_offset
    if end <= first_dirty:
        return None
    clean = sum(s.size for s in chosen if s.next_offset <= first_dirty)
    dirty_segs = [s for s in chosen if s.next_offset > first_dirty]
    dirty = sum(s.size for s in dirty_segs)
    if dirty == 0:
        return None
    forced = force
    first = next((s for s in dirty_segs if not s.is_empty), None)
    if first is not None and config.max_compaction_lag_ms < (1 << 62):
        try:
            first_ts = first.header_at(0).max_timestamp
        except InvalidBatch:
            first_ts = first.largest_timestamp
        forced = forced or now_ms - first_ts > config.max_compaction_lag_ms
    plan = Cleanable(chosen, first_dirty, end, clean, dirty, forced)
    if not forced and plan.dirty_ratio < config.min_cleanable_dirty_ratio:
        return None
    return plan


@dataclass
class CleanContext:
    """What a pass knows besides the batches: the offset map and the producer state it needs."""

    now_ms: int
    delete_retention_ms: int
    # producer id -> (first offset, marker offset) of its aborted transactions
    aborted: Mapping[int, Sequence[tuple[int, int]]]
    # producer id -> last offset of its last data batch in the log (that batch is kept, empty if need be)
    last_data_offset: Mapping[int, int]
    offset_map: dict[bytes, int] = field(default_factory=dict)
    map_bytes: int = 0  # the estimated memory of offset_map (MAP_ENTRY_OVERHEAD plus the key per entry)

    def is_aborted(self, h: BatchHeader) -> bool:
        if not h.is_transactional or h.is_control or h.producer_id < 0:
            return False
        return any(first <= h.base_offset <= last for first, last in self.aborted.get(h.producer_id, ()))


class CleanStats(NamedTuple):
    """What one pass did."""

    segments: int  # segments rewritten
    segments_removed: int  # segments left empty and deleted
    bytes_before: int
    bytes_after: int
    records_removed: int
    end_offset: int  # the new cleaner checkpoint


def build_offset_map(
    ctx: CleanContext, batches: Iterable[tuple[BatchHeader, bytes]], first_dirty: int, end_offset: int
) -> None:
    """Record in ``ctx.offset_map`` the latest offset of each key among the records of ``batches`` in
    [first_dirty, end_offset). A batch that does not decode is skipped (and later kept as it is)."""
    m = ctx.offset_map
    added = 0
    for h, data in batches:
        if h.last_offset < first_dirty or h.base_offset >= end_offset:
            continue
        if h.is_control or h.records_count <= 0 or ctx.is_aborted(h):
            continue
        try:
            recs = _records(data, h)
        except InvalidBatch:
            continue
        base = h.base_offset
        for r in recs:
            if r.key is not None:
                offset = base + r.offset_delta
                if first_dirty <= offset < end_offset:
                    if r.key not in m:
                        added += MAP_ENTRY_OVERHEAD + len(r.key)
                    m[r.key] = offset
    ctx.map_bytes += added


def clean_batch(ctx: CleanContext, data: bytes, h: BatchHeader) -> tuple[bytes | None, int]:
    """(the batch to keep: ``data`` itself, a rewritten batch, or None to drop it; records removed)."""
    if h.is_control:
        return data, 0
    aborted = ctx.is_aborted(h)
    if aborted:
        recs: list[RawRecord] = []
        removed = max(h.records_count, 0)
    else:
        try:
            all_recs = _records(data, h)
        except InvalidBatch:
            return data, 0  # never lose what cannot be read
        expired = ctx.now_ms - h.max_timestamp > ctx.delete_retention_ms
        m = ctx.offset_map
        base = h.base_offset
        recs = []
        for r in all_recs:
            if r.key is None:
                continue
            latest = m.get(r.key)
            if latest is not None and base + r.offset_delta < latest:
                continue
            if r.tombstone and expired:
                continue
            recs.append(r)
        removed = len(all_recs) - len(recs)
        if removed == 0:
            return data, 0
    if not recs:
        if h.producer_id >= 0 and ctx.last_data_offset.get(h.producer_id) == h.last_offset:
            return rebuild_batch(h, []), removed
        return None, removed
    max_ts = h.max_timestamp
    if not h.attributes & ATTR_TIMESTAMP_TYPE:
        max_ts = h.base_timestamp + max(r.timestamp_delta for r in recs)
    return rebuild_batch(h, [r.raw for r in recs], max_timestamp=max_ts), removed
