"""One partition's log: append, read, truncate, retention, flush and crash recovery.

``SegmentedLog`` holds every rule (offset assignment, rolling, lookups, retention, DeleteRecords) over a
list of ``Segment``s; ``PartitionLog`` keeps the segments in files in a ``<topic>-<partition>`` directory
and adds checkpoints and recovery. The memory engine's ``MemoryPartitionLog``
reuses the same rules over bytearrays.

Threading: every change to the log runs as a job on the log's ``Writer`` (see kafkite.log.writer), one at a
time and in call order: for the file engine a thread per log directory, so a slow disk never holds up the
event loop. Readers run on their own thread (the event loop: reads come from the page cache) and take a lock
that guards what they see (the segment list, the visible size and index entries of each segment, the offsets,
the producer state). A job takes that lock only to make its work visible, never while it waits for the disk:
an append writes its bytes beyond the visible end first, then publishes them with their offsets and index
entries under the lock. ``flush`` may run in any thread: it takes the lock only to snapshot which files to
fsync (as duplicated descriptors, so a segment deleted meanwhile cannot hand its descriptor number to another
file) and to record the new recovery point. fsyncs the log asks for itself (``flush.messages``, and before
DeleteRecords gives old segments up) run on the log's flusher, not on its writer.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
from abc import abstractmethod
from bisect import bisect_right
from collections.abc import Callable, Iterator
from pathlib import Path

from kafkite.clock import now_ms
from kafkite.log.base import (
    AppendInfo,
    FileRange,
    LogClosed,
    OffsetOutOfRange,
    Partition,
    Prepared,
    ReadResult,
    prepare_append,
)
from kafkite.log.cleaner import CleanContext, CleanStats, build_offset_map, clean_batch, find_cleanable
from kafkite.log.config import LogConfig
from kafkite.log.files import FileCache, default_open_files
from kafkite.log.fileutil import atomic_write, fsync_dir
from kafkite.log.producer_state import (
    AbortedTxn,
    ProducerStateManager,
    replay,
    snapshot_name,
    snapshot_offset,
)
from kafkite.log.segment import (
    CLEANED_SUFFIX,
    INDEX_SUFFIX,
    LOG_SUFFIX,
    SWAP_SUFFIX,
    TIME_INDEX_SUFFIX,
    Segment,
)
from kafkite.log.writer import INLINE, Pending, Writer
from kafkite.protocol.records import (
    BatchHeader,
    InvalidBatch,
    iter_records,
    read_header,
)

__all__ = [
    "AppendInfo",
    "FileRange",
    "OffsetOutOfRange",
    "PartitionLog",
    "ReadResult",
    "SegmentedLog",
    "wall_clock_ms",
]

# Flushes snapshot a changed producer state at most this often (rolls and clean shutdowns always do).
PRODUCER_SNAPSHOT_INTERVAL_MS = 30_000
PRODUCER_SNAPSHOTS_KEPT = 2
CLEANER_WRITE_CHUNK = 1 << 20  # the log cleaner writes a cleaned segment this many bytes at a time
DEFAULT_CLEANER_MAP_BYTES = 128 << 20  # log.cleaner.dedupe.buffer.size
_SEGMENT_FILE = re.compile(r"^(\d{20})\.(log|index|timeindex)$")

Clock = Callable[[], int]


wall_clock_ms = now_ms  # the clock (kafkite.clock)


def _record_timestamps(batch: bytes, header: BatchHeader) -> Iterator[tuple[int, int]]:
    """(offset, timestamp) of each record of one batch; batch-level when records cannot be decoded."""
    try:
        decoded = [(rec.offset, rec.timestamp) for rec in iter_records(batch, 0, header)]
    except (InvalidBatch, ValueError):
        decoded = []
    if decoded:
        yield from decoded
    else:
        yield header.base_offset, header.max_timestamp


class SegmentedLog(Partition):
    """The engine-independent part of a partition log."""

    def __init__(
        self,
        config: LogConfig,
        *,
        clock: Clock | None = None,
        writer: Writer | None = None,
        flusher: Writer | None = None,
        dirty: set[SegmentedLog] | None = None,
    ) -> None:
        self.config = config
        self._dirty_logs = dirty  # the storage's set of logs with unflushed data
        self._clock: Clock = clock or wall_clock_ms
        self._writer: Writer = writer or INLINE
        self._flusher: Writer = flusher or INLINE
        self._segments: list[Segment] = []
        self._bases: list[int] = []
        self._log_start_offset = 0
        self._recovery_point = 0
        self._lock = threading.RLock()  # what readers see
        self._writing = threading.Lock()  # held by the job changing the log (one at a time)
        self._flush_lock = threading.Lock()
        self._flush_requested = False
        self._graveyard: list[tuple[int, Segment]] = []
        self._last_flush_ms = self._clock()
        self._closed = False
        self._changed = False  # segments created, removed or truncated since the last flush
        self._producers = ProducerStateManager()
        self._snapshot_changes = 0  # ``producers.changes`` when the last snapshot was taken
        self._snapshot_offset = -1  # the offset of the last snapshot
        self._snapshot_ms = self._last_flush_ms
        self._cleaner_checkpoint = 0  # the first dirty offset: the log cleaner has cleaned what lies below
        self._clean_lock = threading.Lock()  # one log cleaner pass at a time

    # hooks for engines -------------------------------------------------------------------------------------

    @abstractmethod
    def _new_segment(self, base_offset: int, now_ms: int) -> Segment: ...

    def _persist_log_start_offset(self) -> None:
        """Make the log start offset durable (file engine)."""

    def _persist_recovery_point(self) -> None:
        """Make the recovery point durable (file engine)."""

    def _sync_directory(self) -> None:
        """fsync the directory after segment files were created or removed (file engine)."""

    def _persist_cleaner_checkpoint(self) -> None:
        """Make the cleaner checkpoint durable (file engine)."""

    def _new_cleaned_segment(self, base_offset: int, now_ms: int) -> Segment:
        """An empty segment the log cleaner writes into (file engine: under the ``.cleaned`` suffix)."""
        return Segment.in_memory(base_offset, self.config, now_ms=now_ms)

    def _finish_cleaned(self, old: Segment, new: Segment) -> None:
        """Make a written cleaned segment durable before it is swapped in (file engine)."""

    def _swap_cleaned(self, old: Segment, new: Segment) -> None:
        """Give ``new`` the place of ``old`` (same base offset): after this it is the segment (file engine:
        ``.cleaned`` -> ``.swap`` -> final name, which recovery completes if interrupted)."""

    def _abandon_cleaned(self, new: Segment) -> None:
        """Throw away a cleaned segment that will not be swapped in."""
        new.close()
        new.unlink()

    def _materialize(self) -> None:
        """Create the files of a log made in memory only (file engine: see ``PartitionLog(create=True)``)."""

    def _segments_changed(self) -> None:
        """Segment files were created or removed."""

    def _write_producer_snapshot(self, offset: int, data: bytes) -> None:
        """Keep a producer state snapshot taken at ``offset`` (file engine)."""

    def _load_producer_snapshot(self, max_offset: int) -> tuple[int, ProducerStateManager] | None:
        """The newest readable producer state snapshot at or below ``max_offset`` (file engine)."""
        return None

    # state -------------------------------------------------------------------------------------------------

    @property
    def producers(self) -> ProducerStateManager:
        """The producer state (changed only by the log's jobs, under the lock)."""
        return self._producers

    @producers.setter
    def producers(self, state: ProducerStateManager) -> None:
        self._producers = state

    def _set_segments(self, segments: list[Segment]) -> None:
        self._segments = segments
        self._bases = [s.base_offset for s in segments]

    @property
    def segments(self) -> list[Segment]:
        """A snapshot of the segments, oldest first."""
        with self._lock:
            return list(self._segments)

    @property
    def _active(self) -> Segment:
        return self._segments[-1]

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self._segments[-1].next_offset

    @property
    def recovery_point(self) -> int:
        return self._recovery_point

    @property
    def cleaner_checkpoint(self) -> int:
        """The first dirty offset: the log cleaner has compacted the log below it."""
        return self._cleaner_checkpoint

    @property
    def size_bytes(self) -> int:
        with self._lock:
            return sum(s.size for s in self._segments)

    @property
    def unflushed_messages(self) -> int:
        return max(0, self.log_end_offset - self._recovery_point)

    @property
    def writer(self) -> Writer:
        """Where the log's changes run."""
        return self._writer

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosed("the partition log is closed")

    def reconfigure(self, config: LogConfig) -> None:
        with self._lock:
            self.config = config
            for seg in self._segments:
                seg.config = config

    # append ------------------------------------------------------------------------------------------------

    def append(self, batches: bytearray | memoryview, *, now_ms: int) -> Pending[AppendInfo]:
        """Assign offsets to ``batches`` (one or more validated v2 batches, rewritten in place) and append
        them to the active segment in one write, on the log's writer after the appends called before."""
        self._check_open()
        return self._writer.submit(lambda: self._append(batches, now_ms), size=len(batches))

    def append_sync(self, batches: bytearray | memoryview, *, now_ms: int) -> AppendInfo:
        self._check_open()
        return self._writer.run(lambda: self._append(batches, now_ms))

    def _append(self, batches: bytearray | memoryview, now_ms: int) -> AppendInfo:
        """The append job: prepare, write beyond the visible end, then publish (the lock held only then)."""
        with self._writing:
            self._check_open()
            self._materialize()
            config = self.config
            # Only jobs change the producer state and the offsets, so the job reads them without the lock.
            prep = prepare_append(
                batches, self.producers, self.log_end_offset, self._log_start_offset, config, now_ms
            )
            if isinstance(prep, AppendInfo):
                return prep
            total = len(batches)
            seg = self._active
            if self._should_roll(seg, total, prep.last_offset, now_ms):
                seg = self._roll(now_ms)
            seg.write(batches)
            with self._lock:
                seg.publish(total, prep.headers, now_ms=now_ms)
                if prep.idempotent:
                    self._replay(batches, prep, now_ms)
                info = AppendInfo(
                    prep.first_offset, prep.last_offset, prep.append_time, self._log_start_offset, total
                )
            seg.sync_index_files(all_of_them=False)
        if self._dirty_logs is not None:
            self._dirty_logs.add(self)
        if self.unflushed_messages >= config.flush_messages:
            self._request_flush()
        return info

    def _replay(self, batches: bytearray | memoryview, prep: Prepared, now_ms: int) -> None:
        replay(
            self.producers,
            ((h, bytes(batches[pos : pos + h.size]) if h.is_control else None) for pos, h in prep.headers),
            now_ms,
        )

    def _request_flush(self) -> None:
        """flush.messages reached: an fsync on the flusher (not the writer: appends go on meanwhile)."""
        if self._flush_requested:
            return
        self._flush_requested = True

        def job() -> None:
            self._flush_requested = False
            self.flush()

        self._flusher.post(job)

    def _should_roll(self, seg: Segment, nbytes: int, last_offset: int, now_ms: int) -> bool:
        if seg.is_empty:
            return False
        c = self.config
        return (
            seg.size + nbytes > c.segment_bytes
            or now_ms - seg.created_ms >= c.segment_ms - seg.roll_jitter_ms
            or seg.index_full()
            or not seg.can_hold_offset(last_offset)
        )

    def _roll(self, now_ms: int) -> Segment:
        """Start a new active segment (in a job: the files are created before the lock is taken)."""
        active = self._active
        seg = self._new_segment(active.next_offset, now_ms)
        with self._lock:
            active.seal()
            self._set_segments([*self._segments, seg])
            self._changed = True
        active.sync_index_files()
        self._segments_changed()
        self._snapshot_producers(active.next_offset, now_ms)
        return seg

    def roll(self, now_ms: int | None = None) -> None:
        """Start a new active segment (a no-op when the active one is empty)."""

        def job() -> None:
            with self._writing:
                self._check_open()
                self._materialize()
                if not self._active.is_empty:
                    self._roll(self._clock() if now_ms is None else now_ms)

        self._writer.run(job)

    # producer state ----------------------------------------------------------------------------------------

    @property
    def last_stable_offset(self) -> int:
        """The high watermark, or the first offset of the oldest ongoing transaction when that is lower."""
        hw = self.high_watermark
        first = self.producers.first_unstable_offset()
        return hw if first is None or first > hw else first

    def aborted_transactions(self, start: int, end: int) -> list[AbortedTxn]:
        """Aborted transactions with records in offsets [start, end) (read_committed Fetch)."""
        with self._lock:
            return self.producers.aborted_transactions(start, end)

    def expire_producers(self, now_ms: int, max_age_ms: int) -> int:
        """Forget producers idle for ``max_age_ms`` (producer.id.expiration.ms); returns how many."""
        with self._lock:
            return len(self.producers.expire(now_ms, max_age_ms))

    def _snapshot_producers(self, offset: int, now_ms: int) -> None:
        """Snapshot the producer state as of ``offset`` (the log end) unless the last snapshot holds it (or
        the log is empty: there is nothing to replay)."""
        with self._lock:
            if self.producers.changes == self._snapshot_changes and (
                offset == self._snapshot_offset or offset == self._log_start_offset
            ):
                return
            self._snapshot_changes = self.producers.changes
            self._snapshot_offset = offset
            self._snapshot_ms = now_ms
            data = self.producers.to_json(offset)
        self._write_producer_snapshot(offset, data)

    def _rebuild_producers(self) -> None:
        """Producer state from the newest usable snapshot, then the batch headers after it."""
        leo = self.log_end_offset
        found = self._load_producer_snapshot(leo)
        start = self._log_start_offset
        if found is not None:
            start, self.producers = found
        else:
            self.producers = ProducerStateManager()
        replay(self.producers, self._stored_batches(start))
        self.producers.on_log_start_offset(self._log_start_offset)
        self._snapshot_changes = self.producers.changes
        self._snapshot_offset = start if found is not None else -1

    def _stored_batches(self, offset: int) -> Iterator[tuple[BatchHeader, bytes | None]]:
        """(header, bytes of control batches) of every stored batch holding offsets >= ``offset``."""
        for seg in list(self._segments):
            if seg.next_offset <= offset:
                continue
            found = seg.find(offset) if offset > seg.base_offset else None
            start = found[0] if found is not None else 0
            for pos, h, _ in seg.iter_batches(start):
                if h.last_offset >= offset and h.producer_id >= 0:
                    yield h, seg.read_batch(pos, h) if h.is_control else None

    # read --------------------------------------------------------------------------------------------------

    async def read(
        self, offset: int, max_bytes: int, *, max_offset: int | None = None, min_one: bool = True
    ) -> ReadResult:
        """Whole batches from the one holding ``offset`` (see ``read_sync``): from the page cache, at once."""
        return self.read_sync(offset, max_bytes, max_offset=max_offset, min_one=min_one)

    def read_sync(
        self, offset: int, max_bytes: int, *, max_offset: int | None = None, min_one: bool = True
    ) -> ReadResult:
        """Whole batches from the one holding ``offset``: at most ``max_bytes`` (but a whole first batch when
        ``min_one``), none holding an offset >= ``max_offset``."""
        self._check_open()
        with self._lock:
            lso = self._log_start_offset
            leo = self.log_end_offset
            if offset < lso or offset > leo:
                raise OffsetOutOfRange(offset, lso, leo)
            chunks: list[FileRange | bytes] = []
            total = 0
            limit_offset = leo if max_offset is None else min(max_offset, leo)
            cur = offset
            i = max(0, bisect_right(self._bases, offset) - 1)
            while i < len(self._segments) and cur < limit_offset:
                seg = self._segments[i]
                i += 1
                found = seg.find(cur)
                if found is None:
                    continue
                start, first = found
                whole = limit_offset >= seg.next_offset
                end_limit = seg.size if whole else seg.position_of(limit_offset)
                if end_limit <= start:
                    break
                room = max_bytes - total
                if end_limit - start <= room:
                    end = end_limit
                else:
                    end = seg.boundary_at_or_before(start, start + max(0, room))
                    if end == start and total == 0 and min_one:
                        end = start + first.size
                if end > start:
                    chunks.append(seg.store.chunk(start, end - start))
                    total += end - start
                if end < end_limit:
                    break
                cur = seg.next_offset
            return ReadResult(chunks, total, leo, lso)

    # timestamps --------------------------------------------------------------------------------------------

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record at or after the log start offset whose timestamp is
        >= ``timestamp``; None when there is none."""
        self._check_open()
        with self._lock:
            lso = self._log_start_offset
            for seg in self._segments:
                if seg.next_offset <= lso or seg.max_timestamp < timestamp:
                    continue
                found = seg.find_timestamp(timestamp, lso)
                if found is None:
                    continue
                pos, h = found
                for off, ts in _record_timestamps(seg.read_batch(pos, h), h):
                    if off >= lso and ts >= timestamp:
                        return off, ts
                return max(lso, h.base_offset), h.max_timestamp
            return None

    def max_timestamp(self) -> tuple[int, int]:
        """(timestamp, offset) of the record with the largest timestamp (the first such); (-1, -1) if none."""
        self._check_open()
        with self._lock:
            lso = self._log_start_offset
            best: Segment | None = None
            for seg in self._segments:
                if seg.next_offset <= lso or seg.max_timestamp < 0:
                    continue
                if best is None or seg.max_timestamp > best.max_timestamp:
                    best = seg
            if best is None:
                return -1, -1
            found = best.find(best.offset_of_max_timestamp)
            if found is None:
                return best.max_timestamp, best.offset_of_max_timestamp
            pos, h = found
            for off, ts in _record_timestamps(best.read_batch(pos, h), h):
                if ts == h.max_timestamp:
                    return ts, off
            return h.max_timestamp, h.base_offset

    def first_timestamp(self) -> int:
        """Timestamp of the first record at or after the log start offset; -1 when the log is empty."""
        self._check_open()
        with self._lock:
            lso = self._log_start_offset
            for seg in self._segments:
                found = seg.find(lso)
                if found is None:
                    continue
                pos, h = found
                for off, ts in _record_timestamps(seg.read_batch(pos, h), h):
                    if off >= lso:
                        return ts
                return h.max_timestamp if h.log_append_time else h.base_timestamp
            return -1

    # deletion ----------------------------------------------------------------------------------------------

    def _discard(self, segments: list[Segment], now_ms: int) -> None:
        """Unlink segments already taken out of the list; close their files once file.delete.delay.ms has
        passed (a reader holding a range of one keeps its file open as long as it needs it)."""
        if not segments:
            return
        for seg in segments:
            seg.unlink()
        deadline = now_ms + self.config.file_delete_delay_ms
        with self._lock:
            self._graveyard.extend((deadline, seg) for seg in segments)
            self._changed = True
        self._segments_changed()

    def sweep(self, now_ms: int) -> int:
        """Close deleted segments whose delay has passed; returns how many are still waiting."""
        with self._lock:
            keep: list[tuple[int, Segment]] = []
            for deadline, seg in self._graveyard:
                if deadline <= now_ms:
                    seg.close()
                else:
                    keep.append((deadline, seg))
            self._graveyard = keep
            return len(keep)

    def _delete_prefix(self, n: int, now_ms: int) -> int:
        """In a job: delete the ``n`` oldest segments (rolling first if that would be all of them)."""
        if n <= 0:
            return 0
        if n >= len(self._segments):
            n = len(self._segments)
            self._roll(now_ms)
        with self._lock:
            doomed = self._segments[:n]
            self._set_segments(self._segments[n:])
            first_base = self._segments[0].base_offset
            moved = first_base > self._log_start_offset
            if moved:
                self._log_start_offset = first_base
                self.producers.on_log_start_offset(first_base)
        self._discard(doomed, now_ms)
        if moved:
            # Bookkeeping: without it the next start takes the first segment's base offset, the same.
            self._flusher.post(self._persist_log_start_offset)
        return n

    def delete_records_before(self, offset: int) -> int:
        """DeleteRecords: move the log start offset up to ``offset`` (-1: the high watermark) and return the
        new log start offset (the low watermark) at once; the segments wholly below it are deleted by a job,
        after an fsync of what was appended before (the records that replace them are on disk first)."""
        self._check_open()
        with self._lock:
            leo = self.log_end_offset
            if offset == -1:
                offset = leo
            if offset < 0 or offset > leo:
                raise OffsetOutOfRange(offset, self._log_start_offset, leo)
            if offset <= self._log_start_offset:
                return self._log_start_offset
            self._log_start_offset = offset
        self._writer.post(self._start_moved)
        return offset

    def _start_moved(self) -> None:
        """Job after DeleteRecords: the producer state forgets what lies below the new log start offset; the
        flusher syncs the log and records the new start; then a job deletes the segments below it."""
        with self._writing:
            if self._closed:
                return
            with self._lock:
                self.producers.on_log_start_offset(self._log_start_offset)

        def durable() -> None:
            self.flush()
            self._persist_log_start_offset()
            if not self._closed:
                self._writer.post(self._delete_below_start)

        self._flusher.post(durable)

    def _delete_below_start(self) -> None:
        with self._writing:
            if self._closed:
                return
            n = 0
            while n + 1 < len(self._segments) and self._segments[n + 1].base_offset <= self._log_start_offset:
                n += 1
            self._delete_prefix(n, self._clock())

    def truncate_to(self, offset: int) -> None:
        """Remove every batch holding an offset >= ``offset`` (whole batches: the end offset becomes the base
        offset of the batch holding ``offset``). Below the log start offset, empties the log and restarts it
        at ``offset``."""
        self._check_open()
        self._writer.run(lambda: self._truncate_to(offset))

    def _truncate_to(self, offset: int) -> None:
        with self._writing:
            self._check_open()
            self._materialize()
            now = self._clock()
            if offset >= self.log_end_offset:
                return
            # Readers hold the lock throughout: truncation is rare, and its segments change under them.
            with self._lock:
                self._changed = True
                # discard before creating: a new segment may reuse a doomed one's file name
                if offset < self._log_start_offset:
                    doomed = self._segments
                    self._set_segments([])
                    self._discard(doomed, now)
                    self._set_segments([self._new_segment(offset, now)])
                    self._log_start_offset = offset
                    self._persist_log_start_offset()
                else:
                    keep = [s for s in self._segments if s.base_offset < offset]
                    self._discard([s for s in self._segments if s.base_offset >= offset], now)
                    if not keep:
                        keep = [self._new_segment(offset, now)]
                    self._set_segments(keep)
                    self._active.truncate_to(offset)
                if self._recovery_point > self.log_end_offset:
                    self._recovery_point = self.log_end_offset
                    self._persist_recovery_point()
                if self._cleaner_checkpoint > self.log_end_offset:
                    self._cleaner_checkpoint = self._log_start_offset
                    self._persist_cleaner_checkpoint()
                self._rebuild_producers()

    def apply_retention(self, now_ms: int) -> int:
        """Delete segments past retention.ms (by their largest timestamp) or beyond retention.bytes, oldest
        first; the active segment too (after rolling) when it is wholly expired. Also closes the files of
        segments deleted more than file.delete.delay.ms ago. Returns the number of segments deleted (a job:
        waits for the appends queued before it)."""
        if self._closed:
            return 0
        return self._writer.run(lambda: self._apply_retention(now_ms))

    def _apply_retention(self, now_ms: int) -> int:
        deleted = 0
        with self._writing:
            if self._closed:
                return 0
            c = self.config
            if c.delete_enabled and c.retention_ms >= 0:
                n = 0
                for seg in self._segments:
                    # an empty segment other than the active one is a segment compaction emptied
                    if (
                        seg.is_empty and seg is self._active
                    ) or now_ms - seg.largest_timestamp <= c.retention_ms:
                        break
                    n += 1
                deleted += self._delete_prefix(n, now_ms)
            if c.delete_enabled and c.retention_bytes >= 0:
                excess = sum(s.size for s in self._segments) - c.retention_bytes
                n = 0
                for seg in self._segments:
                    if (seg.is_empty and seg is self._active) or excess - seg.size < 0:
                        break
                    excess -= seg.size
                    n += 1
                deleted += self._delete_prefix(n, now_ms)
            n = 0
            while n + 1 < len(self._segments) and self._segments[n + 1].base_offset <= self._log_start_offset:
                n += 1
            deleted += self._delete_prefix(n, now_ms)
        self.sweep(now_ms)
        return deleted

    # compaction --------------------------------------------------------------------------------------------

    def compact(
        self, now_ms: int, *, force: bool = False, max_map_bytes: int = DEFAULT_CLEANER_MAP_BYTES
    ) -> CleanStats | None:
        """One pass of the log cleaner (see kafkite.log.cleaner) when ``cleanup.policy`` has ``compact`` and
        the log is dirty enough (``force``: whatever the dirty ratio). Returns what it did, or None when it
        did nothing.

        Meant for a worker thread: the partition lock is held to plan the pass and to swap the cleaned
        segments in, not while they are read and written, so appends and reads go on meanwhile. Segments it
        replaces stay open for file.delete.delay.ms (fetches may still hold ranges of them). A pass that finds
        its segments changed meanwhile (retention, truncation, DeleteRecords) throws its work away.

        ``max_map_bytes`` bounds the offset map: a pass that fills it cleans up to the segment where it
        stopped, and the next pass goes on from there."""
        if self._closed or not self.config.compact_enabled:
            return None
        if not self._clean_lock.acquire(blocking=False):
            return None
        try:
            return self._compact(now_ms, force, max_map_bytes)
        finally:
            self._clean_lock.release()

    def _compact(self, now_ms: int, force: bool, max_map_bytes: int) -> CleanStats | None:
        with self._lock:
            if self._closed:
                return None
            segments = list(self._segments)
            checkpoint = self._cleaner_checkpoint
            if checkpoint > self.log_end_offset:
                checkpoint = self._log_start_offset
            plan = find_cleanable(
                segments,
                first_dirty=max(checkpoint, self._log_start_offset),
                last_stable_offset=self.last_stable_offset,
                now_ms=now_ms,
                config=self.config,
                force=force,
            )
            if plan is None:
                return None
            aborted: dict[int, list[tuple[int, int]]] = {}
            for txn in self.producers.aborted:
                aborted.setdefault(txn.producer_id, []).append((txn.first_offset, txn.last_offset))
            last_data = {
                pid: e.batches[-1].last_offset for pid, e in self.producers.producers.items() if e.batches
            }
            sizes = [s.size for s in plan.segments]
            config = self.config
        ctx = CleanContext(now_ms, config.delete_retention_ms, aborted, last_data)
        end_offset = plan.end_offset
        mapped = False
        for seg in plan.dirty:
            if mapped and ctx.map_bytes >= max_map_bytes:
                end_offset = seg.base_offset  # the map is full: clean up to here, the next pass goes on
                break
            build_offset_map(
                ctx,
                ((h, data) for _, h, data in seg.iter_batches(with_data=True) if data),
                plan.first_dirty,
                plan.end_offset,
            )
            mapped = True
        chosen = [s for s in plan.segments if s.base_offset < end_offset]
        sizes = sizes[: len(chosen)]
        cleaned: list[tuple[Segment, Segment]] = []
        removed = 0
        try:
            for seg in chosen:
                new = self._new_cleaned_segment(seg.base_offset, now_ms)
                cleaned.append((seg, new))
                removed += self._clean_segment(ctx, seg, new, now_ms)
                self._finish_cleaned(seg, new)
        except BaseException:
            for _, new in cleaned:
                self._abandon_cleaned(new)
            raise
        try:
            return self._writer.run(lambda: self._install(cleaned, sizes, end_offset, removed, now_ms))
        except BaseException:
            for old, new in cleaned:
                if new is not old:
                    self._abandon_cleaned(new)
            raise

    def _install(
        self,
        cleaned: list[tuple[Segment, Segment]],
        sizes: list[int],
        end_offset: int,
        removed: int,
        now_ms: int,
    ) -> CleanStats | None:
        """The job that swaps the cleaned segments in, unless the log changed meanwhile."""
        with self._writing:
            current = {id(s) for s in self._segments[:-1]}
            unchanged = all(
                id(old) in current and old.size == size for (old, _), size in zip(cleaned, sizes, strict=True)
            )
            if self._closed or not unchanged:
                for _, new in cleaned:
                    self._abandon_cleaned(new)
                return None
            return self._install_cleaned(cleaned, end_offset, removed, now_ms)

    def _clean_segment(self, ctx: CleanContext, old: Segment, new: Segment, now_ms: int) -> int:
        """Write the cleaned batches of ``old`` into ``new``; returns the number of records removed."""
        removed = 0
        buf = bytearray()
        headers: list[tuple[int, BatchHeader]] = []
        for _, h, data in old.iter_batches(with_data=True):
            assert data is not None
            kept, n = clean_batch(ctx, data, h)
            removed += n
            if kept is None:
                continue
            kh = h if kept is data else read_header(kept)
            headers.append((len(buf), kh))
            buf += kept
            if len(buf) >= CLEANER_WRITE_CHUNK:
                new.append(buf, headers, now_ms=now_ms)
                buf = bytearray()
                headers = []
        if headers:
            new.append(buf, headers, now_ms=now_ms)
        new.seal()
        new.created_ms = old.created_ms
        new.last_modified_ms = old.last_modified_ms
        return removed

    def _install_cleaned(
        self, cleaned: list[tuple[Segment, Segment]], end_offset: int, removed: int, now_ms: int
    ) -> CleanStats:
        """Swap the cleaned segments in, oldest first (in a job). Each old segment's file stays open for the
        readers still using it while the new one takes its name; the lock is held only to change the list."""
        before = after = dropped = 0
        deadline = now_ms + self.config.file_delete_delay_ms
        try:
            for i, (old, new) in enumerate(cleaned):
                before += old.size
                if new.is_empty and self._segments[0] is not old:
                    # nothing left: the segment goes (the first one stays, empty, to keep the log start)
                    self._abandon_cleaned(new)
                    with self._lock:
                        self._set_segments([s for s in self._segments if s is not old])
                    self._discard([old], now_ms)
                    dropped += 1
                else:
                    old.pin()  # readers go on reading the old file after its name is the new one's
                    self._swap_cleaned(old, new)
                    with self._lock:
                        self._set_segments([new if s is old else s for s in self._segments])
                        self._graveyard.append((deadline, old))
                    after += new.size
                cleaned[i] = (old, old)  # installed: nothing to abandon any more
        except BaseException:
            for old, new in cleaned:
                if new is not old:
                    self._abandon_cleaned(new)
            raise
        finally:
            with self._lock:
                self._changed = True
            self._segments_changed()
        self._sync_directory()
        self._cleaner_checkpoint = end_offset
        self._persist_cleaner_checkpoint()
        return CleanStats(len(cleaned) - dropped, dropped, before, after, removed, end_offset)

    # flush -------------------------------------------------------------------------------------------------

    def flush_due(self, now_ms: int) -> bool:
        """Whether flush.ms has passed since the last flush with messages still unflushed."""
        return self.unflushed_messages > 0 and now_ms - self._last_flush_ms >= self.config.flush_ms

    def flush(self) -> None:
        """fsync the segments and indexes holding unflushed data and advance the recovery point.

        Safe to call from a worker thread while the owner keeps appending."""
        with self._flush_lock:
            with self._lock:
                if self._closed or (not self._changed and self.unflushed_messages == 0):
                    return
                self._changed = False
                target = self.log_end_offset
                rp = self._recovery_point
                now = self._clock()
                snapshot: bytes | None = None
                if (
                    self.producers.changes != self._snapshot_changes
                    and now - self._snapshot_ms >= PRODUCER_SNAPSHOT_INTERVAL_MS
                ):
                    snapshot = self.producers.to_json(target)
                    self._snapshot_changes = self.producers.changes
                    self._snapshot_offset = target
                    self._snapshot_ms = now
                fds: list[int] = []
                for seg in self._segments:
                    if seg.next_offset > rp or seg is self._active:
                        fds.extend(seg.sync_fds())
            try:
                for fd in fds:
                    os.fsync(fd)
                self._sync_directory()
            except BaseException:
                with self._lock:
                    self._changed = True
                raise
            finally:
                for fd in fds:
                    os.close(fd)
            with self._lock:
                self._recovery_point = max(self._recovery_point, min(target, self.log_end_offset))
                self._last_flush_ms = self._clock()
            # Bookkeeping for the next start: without it recovery reads more of the log, nothing is lost, so a
            # full disk does not fail a flush of data that is already on disk.
            with contextlib.suppress(OSError):
                self._persist_recovery_point()
                if snapshot is not None:
                    # written once the log up to ``target`` is on disk: a snapshot never runs ahead of its log
                    self._write_producer_snapshot(target, snapshot)

    # lifecycle ---------------------------------------------------------------------------------------------

    def _close_all(self) -> None:
        for seg in self._segments:
            seg.close()
        for _, seg in self._graveyard:
            seg.close()
        self._graveyard = []

    def close(self) -> None:
        """Close the log once the jobs queued before are done (waits for them)."""
        if self._closed:
            return
        self._writer.run(self._close)

    def _close(self) -> None:
        with self._writing:
            if self._closed:
                return
            with contextlib.suppress(OSError):  # recovery rebuilds index entries that did not make it
                self._active.sync_index_files()
            self._before_close()
            with self._lock:
                self._closed = True
                self._close_all()

    def _before_close(self) -> None:
        """Make the log durable before its files are closed (file engine)."""

    def delete(self) -> None:
        """Close the log at once (appends and reads fail from now on) and delete its data in a job."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._writer.post(self._delete)

    def _delete(self) -> None:
        with self._writing:
            self._discard(list(self._segments), self._clock())
            self._remove_files()

    def _remove_files(self) -> None:
        """Remove what is left of the log's files (file engine)."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(start={self._log_start_offset}, end={self.log_end_offset}, "
            f"segments={len(self._segments)})"
        )


class PartitionLog(SegmentedLog):
    """A partition log kept in files in one directory (Kafka's layout and file names).

    ``writer``, ``flusher`` and ``files`` come from the storage (its log directory's writer thread and
    descriptor budget); alone, the log does its disk work on the calling thread within a budget of its own.
    ``create``: a new log, made in memory at once and on disk by its first job (``materialize`` or the first
    append), in a directory made by ``make_dir(directory)`` (the storage's: with its metadata, atomically).
    ``clean_shutdown``: given by a storage that records clean shutdowns for all its logs at once; when None
    the log keeps its own marker file.
    """

    RECOVERY_POINT_FILE = "recovery-point-offset-checkpoint"
    LOG_START_OFFSET_FILE = "log-start-offset-checkpoint"
    CLEANER_CHECKPOINT_FILE = "cleaner-offset-checkpoint"
    CLEAN_SHUTDOWN_FILE = ".clean-shutdown"

    def __init__(
        self,
        directory: Path | str,
        config: LogConfig | None = None,
        *,
        clock: Clock | None = None,
        writer: Writer | None = None,
        flusher: Writer | None = None,
        files: FileCache | None = None,
        create: bool = False,
        clean_shutdown: bool | None = None,
        make_dir: Callable[[Path], None] | None = None,
        dirty: set[SegmentedLog] | None = None,
    ) -> None:
        super().__init__(config or LogConfig(), clock=clock, writer=writer, flusher=flusher, dirty=dirty)
        self.directory = Path(directory)
        self._files = files if files is not None else FileCache(min(1024, default_open_files()))
        self._checkpoint_lock = threading.Lock()
        self._dir_dirty = True
        self._listing: list[str] | None = None  # the directory's entries while it is loaded
        self._own_marker = clean_shutdown is None
        self._make_dir = make_dir
        self.recovered_bytes = 0  # bytes cut off torn or corrupt segment tails when the log was opened
        self.recovered_segments = 0  # segments whose indexes were rebuilt when the log was opened
        self.clean_shutdown = False
        if create:
            self._materialized = False
            self._set_segments([Segment.in_memory(0, self.config, now_ms=self._clock())])
            return
        self._materialized = True
        self._load(clean_shutdown)

    # files -------------------------------------------------------------------------------------------------

    @property
    def materialized(self) -> bool:
        """Whether the log's files exist (a log created in memory gets them from its first job)."""
        return self._materialized

    def materialize(self) -> None:
        """Create the files of a new log now (in a job of its writer, on its thread)."""
        with self._writing:
            self._materialize()

    def _materialize(self) -> None:
        if self._materialized:
            return
        if self._make_dir is not None:
            self._make_dir(self.directory)
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
        seg = Segment.create(
            self.directory, self._active.base_offset, self.config, self._files, now_ms=self._clock()
        )
        with self._lock:
            self._set_segments([seg])
        self._materialized = True

    def _new_segment(self, base_offset: int, now_ms: int) -> Segment:
        return Segment.create(self.directory, base_offset, self.config, self._files, now_ms=now_ms)

    def _segments_changed(self) -> None:
        self._dir_dirty = True

    def _sync_directory(self) -> None:
        if self._dir_dirty:
            self._dir_dirty = False
            fsync_dir(self.directory)

    def _read_checkpoint(self, name: str, listed: set[str] | None = None) -> int | None:
        if listed is not None and name not in listed:
            return None
        try:
            fd = os.open(os.path.join(self.directory, name), os.O_RDONLY | os.O_CLOEXEC)
            try:
                lines = os.read(fd, 256).split()
            finally:
                os.close(fd)
            return int(lines[1]) if len(lines) >= 2 and lines[0] == b"0" else None
        except (OSError, ValueError):
            return None

    def _write_checkpoint(self, name: str, value: int) -> None:
        with self._checkpoint_lock:
            try:
                atomic_write(self.directory / name, f"0\n{value}\n".encode())
            except FileNotFoundError:
                if not self._closed:  # else the directory was deleted meanwhile: nothing left to record
                    raise

    def _persist_log_start_offset(self) -> None:
        if not self._closed:
            self._write_checkpoint(self.LOG_START_OFFSET_FILE, self._log_start_offset)

    def _persist_recovery_point(self) -> None:
        if not self._closed:
            self._write_checkpoint(self.RECOVERY_POINT_FILE, self._recovery_point)

    def _persist_cleaner_checkpoint(self) -> None:
        if not self._closed:
            self._write_checkpoint(self.CLEANER_CHECKPOINT_FILE, self._cleaner_checkpoint)

    # log cleaner files: <base>.log.cleaned while written, renamed .swap (committed), then <base>.log ------

    def _new_cleaned_segment(self, base_offset: int, now_ms: int) -> Segment:
        return Segment.create(
            self.directory, base_offset, self.config, self._files, now_ms=now_ms, suffix=CLEANED_SUFFIX
        )

    def _finish_cleaned(self, old: Segment, new: Segment) -> None:
        fds = new.sync_fds()
        try:
            for fd in fds:
                os.fsync(fd)
        finally:
            for fd in fds:
                os.close(fd)
        path = getattr(new.store, "path", None)
        if path is not None:  # retention goes by the segment's age, which cleaning does not change
            ns = old.last_modified_ms * 1_000_000
            os.utime(path, ns=(ns, ns))

    def _swap_cleaned(self, old: Segment, new: Segment) -> None:
        new.rename_files(CLEANED_SUFFIX, SWAP_SUFFIX)
        fsync_dir(self.directory)  # committed: recovery completes the swap from here on
        new.rename_files(SWAP_SUFFIX, "")
        self._dir_dirty = True

    def _finish_interrupted_cleaning(self) -> None:
        """Recovery: drop cleaned segments never committed, complete committed swaps (their indexes are
        rebuilt from the log)."""
        entries = os.listdir(self.directory)
        for entry in entries:
            if entry.endswith(LOG_SUFFIX + SWAP_SUFFIX):
                final = entry[: -len(SWAP_SUFFIX)]
                stem = final[: -len(LOG_SUFFIX)]
                os.replace(self.directory / entry, self.directory / final)
                for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX):
                    for extra in ("", SWAP_SUFFIX):
                        with contextlib.suppress(OSError):
                            (self.directory / (stem + suffix + extra)).unlink()
        for entry in os.listdir(self.directory):
            if entry.endswith((CLEANED_SUFFIX, SWAP_SUFFIX)):
                with contextlib.suppress(OSError):
                    (self.directory / entry).unlink()

    def _snapshot_files(self, names: list[str] | None = None) -> list[tuple[int, Path]]:
        out = []
        with contextlib.suppress(OSError):
            for entry in os.listdir(self.directory) if names is None else names:
                offset = snapshot_offset(entry)
                if offset is not None:
                    out.append((offset, self.directory / entry))
        return sorted(out)

    def _write_producer_snapshot(self, offset: int, data: bytes) -> None:
        # Not fsynced: a snapshot lost or torn by a power failure is skipped for an older one (or a replay).
        path = self.directory / snapshot_name(offset)
        tmp = path.with_name(path.name + ".tmp")
        with self._checkpoint_lock:
            try:
                tmp.write_bytes(data)
                os.replace(tmp, path)
            except FileNotFoundError:
                if not self._closed:
                    raise
                return
            for old, p in self._snapshot_files()[:-PRODUCER_SNAPSHOTS_KEPT]:
                if old < offset:
                    with contextlib.suppress(OSError):
                        p.unlink()

    def _load_producer_snapshot(self, max_offset: int) -> tuple[int, ProducerStateManager] | None:
        for offset, path in reversed(self._snapshot_files(self._listing)):
            if offset > max_offset:
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            try:
                snap_offset, state = ProducerStateManager.from_json(path.read_bytes())
            except (OSError, ValueError):
                continue
            if snap_offset == offset:
                return offset, state
        return None

    # recovery ----------------------------------------------------------------------------------------------

    def _load(self, clean_shutdown: bool | None) -> None:
        now = self._clock()
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            self.directory.mkdir(parents=True, exist_ok=True)
            names = os.listdir(self.directory)
        own = self.CLEAN_SHUTDOWN_FILE in names
        clean = own if clean_shutdown is None else clean_shutdown or own
        self.clean_shutdown = clean
        changed = not clean
        if any(n.endswith((CLEANED_SUFFIX, SWAP_SUFFIX)) for n in names):
            changed = True
            self._finish_interrupted_cleaning()
            names = os.listdir(self.directory)
        groups: dict[int, set[str]] = {}
        for entry in names:
            if entry.endswith(".tmp"):
                changed = True
                with contextlib.suppress(OSError):
                    (self.directory / entry).unlink()
                continue
            m = _SEGMENT_FILE.match(entry)
            if m:
                groups.setdefault(int(m.group(1)), set()).add(m.group(2))
        self._listing = names
        bases = []
        for base, kinds in sorted(groups.items()):
            if "log" in kinds:
                bases.append(base)
            else:  # an index without its log: left over from a deletion
                changed = True
                for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX):
                    with contextlib.suppress(OSError):
                        (self.directory / f"{base:020d}{suffix}").unlink()
        listed = set(names)
        log_start = self._read_checkpoint(self.LOG_START_OFFSET_FILE, listed) or 0
        recovery_point = self._read_checkpoint(self.RECOVERY_POINT_FILE, listed) or 0
        self._cleaner_checkpoint = self._read_checkpoint(self.CLEANER_CHECKPOINT_FILE, listed) or 0
        segments: list[Segment] = []
        for i, base in enumerate(bases):
            seg, indexes_ok = Segment.open(
                self.directory, base, self.config, self._files, now_ms=now, listed=listed
            )
            last = i == len(bases) - 1
            needs_recovery = not clean and (last or bases[i + 1] > recovery_point)
            if needs_recovery or not indexes_ok or not seg.load():
                changed = True
                self.recovered_segments += 1
                truncated = seg.recover()
                self.recovered_bytes += truncated
                if segments and seg.base_offset < segments[-1].next_offset:
                    seg.close()
                    seg.unlink()
                    self.recovered_segments -= 1
                    self._drop_files(bases[i + 1 :])
                    break
                segments.append(seg)
                if truncated and not last:
                    self._drop_files(bases[i + 1 :])
                    break
            else:
                segments.append(seg)
        if not segments:
            changed = True
            segments = [self._new_segment(log_start, now)]
        self._set_segments(segments)
        self._log_start_offset = max(log_start, segments[0].base_offset)
        if self._log_start_offset > self.log_end_offset:
            changed = True
            for seg in self._segments:
                seg.close()
                seg.unlink()
            self._set_segments([self._new_segment(self._log_start_offset, now)])
        self._recovery_point = self.log_end_offset if clean else min(recovery_point, self.log_end_offset)
        if self._cleaner_checkpoint > self.log_end_offset:
            self._cleaner_checkpoint = self._log_start_offset
        self._rebuild_producers()
        self._listing = None
        if own:  # (a storage recording clean shutdowns itself honours one left by a single log)
            changed = True
            (self.directory / self.CLEAN_SHUTDOWN_FILE).unlink()
        if self._log_start_offset != log_start:
            self._write_checkpoint(self.LOG_START_OFFSET_FILE, self._log_start_offset)
        if self._recovery_point != recovery_point:
            self._write_checkpoint(self.RECOVERY_POINT_FILE, self._recovery_point)
        if changed:
            fsync_dir(self.directory)
        self._dir_dirty = False

    def _drop_files(self, bases: list[int]) -> None:
        """Remove segments following a truncated one: their offsets would no longer follow on."""
        for base in bases:
            for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX):
                with contextlib.suppress(OSError):
                    (self.directory / f"{base:020d}{suffix}").unlink()

    # lifecycle ---------------------------------------------------------------------------------------------

    def _before_close(self) -> None:
        """Flush and snapshot the producer state; alone, leave the clean-shutdown marker (the next open skips
        recovery). A full disk must not stop the shutdown: without the snapshot (producer state is rebuilt
        from the log) or the marker (the next open recovers the log) nothing is lost."""
        if not self._materialized:
            return
        self.flush()
        snapshot_ok = True
        try:
            self._snapshot_producers(self.log_end_offset, self._clock())
        except OSError:
            snapshot_ok = False
        if snapshot_ok and self._own_marker:
            with contextlib.suppress(OSError):
                atomic_write(self.directory / self.CLEAN_SHUTDOWN_FILE, b"")

    def _remove_files(self) -> None:
        """Remove the directory; open files stay readable until file.delete.delay.ms passes (``sweep``)."""
        shutil.rmtree(self.directory, ignore_errors=True)
