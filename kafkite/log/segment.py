"""A log segment: batches exactly as received, plus a sparse offset index and a sparse time index.

On disk a segment with base offset B is three files::

    <B:020d>.log        the batches, back to back
    <B:020d>.index      8-byte entries: relative offset int32 (of a batch's base offset), position int32
    <B:020d>.timeindex  12-byte entries: max timestamp so far int64, relative offset int32 (of the batch that
                        first reached it)

Both indexes gain an entry once at least ``index_interval_bytes`` of log have been written since the previous
one; the time index only when the segment's max timestamp has grown since its last entry. The indexes are kept
in memory (two lists each, searched with bisect) and appended to their files with positional writes.

The bytes live behind a ``SegmentStore``: a file for the file engine, a bytearray for the memory engine, so
both engines share every lookup, roll and retention rule. A store's ``size`` is what readers may see: the
partition's writer puts new bytes beyond it (``write_at``), then makes them visible under the log's lock
(``Segment.publish``), so a read never sees a batch before its write is done. Index entries are kept in memory
at once and written to their files after (``Segment.sync_index_files``), by the writer a few kilobytes at a
time and whenever the segment stops being the active one or is closed: an index file may lag its log (a sparse
index only less dense), and recovery rebuilds what a crash lost.

Log files are opened through the partition's ``FileCache`` (a descriptor budget shared by the storage): a
store does not hold its descriptor, it asks the cache for it on each use.
"""

from __future__ import annotations

import contextlib
import os
import random
import struct
from abc import ABC, abstractmethod
from bisect import bisect_left, bisect_right
from collections.abc import Collection, Iterator
from pathlib import Path

from kafkite.log.base import FileRange
from kafkite.log.config import LogConfig
from kafkite.log.files import FileCache, FileHandle
from kafkite.protocol.records import (
    BATCH_HEADER_SIZE,
    BatchHeader,
    InvalidBatch,
    check_crc,
    read_header,
)

INT32_MAX = (1 << 31) - 1
INDEX_WRITE_BYTES = 4096  # index entries an append leaves in memory before they are written to their files
READ_CHUNK = 1 << 20  # most bytes read at a time when scanning batch headers
FIRST_READ_CHUNK = 4096

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
CLEANED_SUFFIX = ".cleaned"  # a segment the log cleaner is writing (deleted by recovery)
SWAP_SUFFIX = ".swap"  # a cleaned segment committed to replace the one of its name (completed by recovery)


def segment_name(base_offset: int) -> str:
    return f"{base_offset:020d}"


# -- stores --------------------------------------------------------------------------------------------------


class SegmentStore(ABC):
    """Where a segment's (or index's) bytes live. Writes only ever append or truncate.

    ``size`` is the visible size: ``write_at`` puts bytes at a position (the writer's, beyond ``size``)
    without making them visible; the owner moves ``size`` when they may be read. ``append`` does both."""

    size: int

    @abstractmethod
    def write_at(self, position: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at ``position`` (cut back to ``position`` if the write fails half way)."""

    def append(self, data: bytes | bytearray | memoryview) -> None:
        self.write_at(self.size, data)
        self.size += len(data)

    @abstractmethod
    def pread(self, position: int, n: int) -> bytes: ...

    @abstractmethod
    def truncate(self, size: int) -> None: ...

    @abstractmethod
    def chunk(self, position: int, size: int) -> FileRange | bytes: ...

    @abstractmethod
    def sync_fd(self) -> int | None:
        """A duplicate descriptor to fsync (the caller closes it), or None when there is nothing to sync."""

    @abstractmethod
    def mtime_ms(self) -> int | None: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def unlink(self) -> None: ...

    def pin(self) -> None:  # noqa: B027 - only stores with a descriptor have something to keep
        """Keep the store's file open until ``close`` (its name is about to be given to another file)."""


class FileStore(SegmentStore):
    """A log file, opened through a ``FileCache`` on each use (it may have been closed since)."""

    def __init__(self, path: Path, files: FileCache, *, create: bool = False) -> None:
        self.path = path
        self._files = files
        self.closed = False
        self._pinned: FileHandle | None = None
        if create:
            h = files.handle(self, create=True)
            st = os.fstat(h.fileno())
        else:
            # An existing file is opened on first use: a broker loading many partitions would otherwise open
            # (and, past the cache's budget, close again) every one of their logs.
            st = os.stat(path)
        self.size = st.st_size
        self.opened_mtime_ms = int(st.st_mtime * 1000)  # when the store was made (see Segment.open)

    @property
    def file(self) -> FileHandle:
        """The open handle (hold it while using its descriptor: the cache may let it go meanwhile)."""
        if self.closed:
            raise ValueError(f"{self.path.name} is closed")
        return self._pinned or self._files.handle(self)

    def pin(self) -> None:
        self._pinned = self.file

    def write_at(self, position: int, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        h = self.file
        fd = h.fileno()
        done = 0
        try:
            while done < len(view):
                done += os.pwrite(fd, view[done:], position + done)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, position)
            raise

    def pread(self, position: int, n: int) -> bytes:
        n = max(0, min(n, self.size - position))
        h = self.file
        fd = h.fileno()
        data = os.pread(fd, n, position)
        while len(data) < n:
            more = os.pread(fd, n - len(data), position + len(data))
            if not more:
                break
            data += more
        return data

    def truncate(self, size: int) -> None:
        if size < self.size:
            h = self.file
            os.ftruncate(h.fileno(), size)
            self.size = size

    def chunk(self, position: int, size: int) -> FileRange | bytes:
        return FileRange(self.file, position, size)

    def sync_fd(self) -> int | None:
        if self.closed:
            return None
        h = self.file
        return os.dup(h.fileno())

    def mtime_ms(self) -> int | None:
        h = self.file
        return int(os.fstat(h.fileno()).st_mtime * 1000)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._pinned = None
            self._files.release(self)

    def unlink(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class IndexFileStore(SegmentStore):
    """An index file that holds no descriptor between operations.

    Index entries are few (one per ``index.interval.bytes`` of log) and kept in memory for lookups, so the
    file is only opened to append, truncate or sync. A partition then costs one open descriptor per segment
    (its log), which lets a broker serve tens of thousands of partitions within the usual descriptor limits.
    """

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = path
        if create:
            with open(path, "wb"):
                pass
        self.size = os.stat(path).st_size

    def write_at(self, position: int, data: bytes | bytearray | memoryview) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            view = memoryview(data)
            done = 0
            while done < len(view):
                done += os.pwrite(fd, view[done:], position + done)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, position)
            raise
        finally:
            os.close(fd)

    def pread(self, position: int, n: int) -> bytes:
        n = max(0, min(n, self.size - position))
        if n == 0:
            return b""
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.pread(fd, n, position)
            while len(data) < n:
                more = os.pread(fd, n - len(data), position + len(data))
                if not more:
                    break
                data += more
            return data
        finally:
            os.close(fd)

    def truncate(self, size: int) -> None:
        if size < self.size:
            os.truncate(self.path, size)
            self.size = size

    def chunk(self, position: int, size: int) -> FileRange | bytes:
        return self.pread(position, size)

    def sync_fd(self) -> int | None:
        try:
            return os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None

    def mtime_ms(self) -> int | None:
        return int(os.stat(self.path).st_mtime * 1000)

    def close(self) -> None:
        pass

    def unlink(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class MemoryStore(SegmentStore):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.size = 0

    def write_at(self, position: int, data: bytes | bytearray | memoryview) -> None:
        self.buf[position:] = data

    def pread(self, position: int, n: int) -> bytes:
        return bytes(self.buf[position : position + n])

    def truncate(self, size: int) -> None:
        del self.buf[size:]
        self.size = min(self.size, size)

    def chunk(self, position: int, size: int) -> FileRange | bytes:
        return bytes(self.buf[position : position + size])

    def sync_fd(self) -> int | None:
        return None

    def mtime_ms(self) -> int | None:
        return None

    def close(self) -> None:
        pass

    def unlink(self) -> None:
        self.buf = bytearray()
        self.size = 0


# -- indexes -------------------------------------------------------------------------------------------------


class SparseIndex:
    """Two parallel sorted lists (key, value), mirrored to a store of fixed-size big-endian entries.

    ``append`` updates the lists at once and keeps the entry's bytes until ``write_pending`` (the writer
    writes them after it has made the entry visible, outside the log's lock)."""

    def __init__(
        self, entry: struct.Struct, store: SegmentStore, max_entries: int, *, key_first: bool
    ) -> None:
        self._entry = entry
        self.store = store
        self.max_entries = max(1, max_entries)
        self._key_first = key_first
        self.keys: list[int] = []
        self.values: list[int] = []
        self._pending = bytearray()

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def is_full(self) -> bool:
        return len(self.keys) >= self.max_entries

    def load(self) -> bool:
        """Read the entries from the store; False if its size is not a whole number of entries."""
        size = self.store.size
        n = self._entry.size
        if size % n:
            return False
        data = self.store.pread(0, size)
        if len(data) != size:
            return False
        keys: list[int] = []
        values: list[int] = []
        for a, b in self._entry.iter_unpack(data):
            if self._key_first:
                keys.append(a)
                values.append(b)
            else:
                keys.append(b)
                values.append(a)
        self.keys, self.values = keys, values
        self._pending = bytearray()
        return True

    def _pack(self, key: int, value: int) -> bytes:
        return self._entry.pack(key, value) if self._key_first else self._entry.pack(value, key)

    def append(self, key: int, value: int) -> None:
        self._pending += self._pack(key, value)
        self.keys.append(key)
        self.values.append(value)

    @property
    def pending_bytes(self) -> int:
        return len(self._pending)

    def write_pending(self) -> None:
        """Write the entries appended since the last call to the store."""
        if self._pending:
            data, self._pending = self._pending, bytearray()
            try:
                self.store.append(data)
            except BaseException:
                self._pending = data + self._pending
                raise

    def reset(self) -> None:
        self._pending = bytearray()
        self.store.truncate(0)
        self.keys = []
        self.values = []

    def truncate_entries(self, n: int) -> None:
        if n < len(self.keys):
            self.write_pending()
            self.store.truncate(n * self._entry.size)
            del self.keys[n:]
            del self.values[n:]


class OffsetIndex(SparseIndex):
    ENTRY = struct.Struct(">ii")  # relative offset, position

    def __init__(self, store: SegmentStore, max_bytes: int) -> None:
        super().__init__(self.ENTRY, store, max_bytes // self.ENTRY.size, key_first=True)

    def lookup(self, relative_offset: int) -> int:
        """Position of the last indexed batch starting at or before ``relative_offset`` (0 if none)."""
        i = bisect_right(self.keys, relative_offset) - 1
        return self.values[i] if i >= 0 else 0

    def floor_position(self, position: int) -> int:
        """The largest indexed position <= ``position`` (0 if none)."""
        i = bisect_right(self.values, position) - 1
        return self.values[i] if i >= 0 else 0

    def sane(self, log_size: int) -> bool:
        k, v = self.keys, self.values
        if any(x < 0 for x in k[:1]) or any(k[i] >= k[i + 1] or v[i] >= v[i + 1] for i in range(len(k) - 1)):
            return False
        return not v or (v[0] >= 0 and v[-1] < log_size)


class TimeIndex(SparseIndex):
    ENTRY = struct.Struct(">qi")  # timestamp, relative offset

    def __init__(self, store: SegmentStore, max_bytes: int) -> None:
        super().__init__(self.ENTRY, store, max_bytes // self.ENTRY.size, key_first=True)

    def lookup(self, timestamp: int) -> int | None:
        """Relative offset of a batch before which every batch's max timestamp is < ``timestamp``."""
        i = bisect_left(self.keys, timestamp) - 1
        return self.values[i] if i >= 0 else None

    def sane(self, relative_end: int) -> bool:
        k, v = self.keys, self.values
        if any(k[i] >= k[i + 1] or v[i] > v[i + 1] for i in range(len(k) - 1)):
            return False
        return not v or (v[0] >= 0 and v[-1] < relative_end)


# -- segment -------------------------------------------------------------------------------------------------


class Segment:
    """One segment. Not thread-safe by itself: the owning log serialises access."""

    def __init__(
        self,
        base_offset: int,
        store: SegmentStore,
        offset_index: OffsetIndex,
        time_index: TimeIndex,
        config: LogConfig,
        *,
        created_ms: int,
    ) -> None:
        self.base_offset = base_offset
        self.store = store
        self.offset_index = offset_index
        self.time_index = time_index
        self.config = config
        self.created_ms = created_ms
        self.last_modified_ms = created_ms
        jitter = min(config.segment_jitter_ms, config.segment_ms)
        self.roll_jitter_ms = random.randrange(jitter) if jitter > 0 else 0  # Kafka's per-segment jitter
        self.next_offset = base_offset  # one past the last offset held
        self.max_timestamp = -1
        self.offset_of_max_timestamp = -1  # base offset of the first batch that reached max_timestamp
        self._bytes_since_index = 0

    # construction ------------------------------------------------------------------------------------------

    @classmethod
    def in_memory(cls, base_offset: int, config: LogConfig, *, now_ms: int) -> Segment:
        return cls(
            base_offset,
            MemoryStore(),
            OffsetIndex(MemoryStore(), config.segment_index_bytes),
            TimeIndex(MemoryStore(), config.segment_index_bytes),
            config,
            created_ms=now_ms,
        )

    @classmethod
    def create(
        cls,
        directory: Path,
        base_offset: int,
        config: LogConfig,
        files: FileCache,
        *,
        now_ms: int,
        suffix: str = "",
    ) -> Segment:
        """New empty files; ``suffix`` (e.g. ``.cleaned``) follows each usual file name."""
        name = segment_name(base_offset)
        return cls(
            base_offset,
            FileStore(directory / (name + LOG_SUFFIX + suffix), files, create=True),
            OffsetIndex(
                IndexFileStore(directory / (name + INDEX_SUFFIX + suffix), create=True),
                config.segment_index_bytes,
            ),
            TimeIndex(
                IndexFileStore(directory / (name + TIME_INDEX_SUFFIX + suffix), create=True),
                config.segment_index_bytes,
            ),
            config,
            created_ms=now_ms,
        )

    def rename_files(self, old_suffix: str, new_suffix: str) -> None:
        """Rename the segment's files from ``<name><old_suffix>`` to ``<name><new_suffix>`` (replacing any
        file of that name): the two indexes first, the log last, so that the log's name says how far it got.
        Open descriptors stay valid. A no-op for in-memory segments."""
        for store in (self.offset_index.store, self.time_index.store, self.store):
            if isinstance(store, FileStore | IndexFileStore):
                name = store.path.name
                if not name.endswith(old_suffix):
                    raise ValueError(f"{name} does not end with {old_suffix!r}")
                target = store.path.with_name(name[: len(name) - len(old_suffix)] + new_suffix)
                os.replace(store.path, target)
                store.path = target

    @classmethod
    def open(
        cls,
        directory: Path,
        base_offset: int,
        config: LogConfig,
        files: FileCache,
        *,
        now_ms: int,
        listed: Collection[str] | None = None,
    ) -> tuple[Segment, bool]:
        """Open existing files; returns (segment, indexes_ok). Missing index files are created empty.
        ``listed``: the directory's entries, when the caller has them."""
        name = segment_name(base_offset)
        ok = True
        stores: list[IndexFileStore] = []
        for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX):
            path = directory / (name + suffix)
            exists = path.exists() if listed is None else name + suffix in listed
            ok = ok and exists
            stores.append(IndexFileStore(path, create=not exists))
        store = FileStore(directory / (name + LOG_SUFFIX), files)
        seg = cls(
            base_offset,
            store,
            OffsetIndex(stores[0], config.segment_index_bytes),
            TimeIndex(stores[1], config.segment_index_bytes),
            config,
            created_ms=now_ms,
        )
        seg.last_modified_ms = store.opened_mtime_ms
        return seg, ok

    # properties --------------------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self.store.size

    @property
    def is_empty(self) -> bool:
        return self.store.size == 0

    @property
    def largest_timestamp(self) -> int:
        """Max record timestamp, or the last modification time when no batch carries one (for retention)."""
        return self.max_timestamp if self.max_timestamp >= 0 else self.last_modified_ms

    def index_full(self) -> bool:
        return self.offset_index.is_full or self.time_index.is_full

    def can_hold_offset(self, offset: int) -> bool:
        return 0 <= offset - self.base_offset <= INT32_MAX

    # appending ---------------------------------------------------------------------------------------------

    def append(
        self, data: bytes | bytearray | memoryview, headers: list[tuple[int, BatchHeader]], *, now_ms: int
    ) -> None:
        """Write ``data`` (whose batches are ``headers``: position within data, header) in one write call and
        make it visible at once (for segments nobody else reads meanwhile)."""
        self.write(data)
        self.publish(len(data), headers, now_ms=now_ms)
        self.sync_index_files()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` after the visible bytes without making it visible (the writer, without the log's
        lock: readers never look past ``size``)."""
        self.store.write_at(self.store.size, data)

    def publish(self, nbytes: int, headers: list[tuple[int, BatchHeader]], *, now_ms: int) -> None:
        """Make the ``nbytes`` written by ``write`` visible with their index entries (log lock held)."""
        start = self.store.size
        self.store.size = start + nbytes
        self.last_modified_ms = now_ms
        for rel_pos, h in headers:
            self._account(start + rel_pos, h)

    def sync_index_files(self, *, all_of_them: bool = True) -> None:
        """Write the index entries made visible since the last call to their files (with ``all_of_them``
        False: only once a few kilobytes of them wait, saving two opens and writes per append)."""
        for index in (self.offset_index, self.time_index):
            if all_of_them or index.pending_bytes >= INDEX_WRITE_BYTES:
                index.write_pending()

    def _account(self, position: int, h: BatchHeader) -> None:
        if h.max_timestamp > self.max_timestamp:
            self.max_timestamp = h.max_timestamp
            self.offset_of_max_timestamp = h.base_offset
        if self._bytes_since_index > self.config.index_interval_bytes:
            self.offset_index.append(h.base_offset - self.base_offset, position)
            self._maybe_time_entry()
            self._bytes_since_index = 0
        self._bytes_since_index += h.size
        self.next_offset = h.last_offset + 1

    def _maybe_time_entry(self) -> None:
        ti = self.time_index
        if self.max_timestamp >= 0 and (not ti.keys or self.max_timestamp > ti.keys[-1]) and not ti.is_full:
            ti.append(self.max_timestamp, self.offset_of_max_timestamp - self.base_offset)

    def seal(self) -> None:
        """The segment stops being the active one: record its final max timestamp in the time index."""
        self._maybe_time_entry()

    # scanning ----------------------------------------------------------------------------------------------

    def iter_batches(
        self, start: int = 0, end: int | None = None, *, with_data: bool = False
    ) -> Iterator[tuple[int, BatchHeader, bytes | None]]:
        """Yield (position, header, data-or-None) for whole batches in [start, end).

        Stops silently at a batch cut short by ``end``; raises InvalidBatch at a malformed header.
        """
        end = self.store.size if end is None else min(end, self.store.size)
        pos = start
        buf = b""
        buf_start = start
        chunk = FIRST_READ_CHUNK  # grows while the scan goes on: lookups stop early, recovery reads far
        while end - pos >= BATCH_HEADER_SIZE:
            off = pos - buf_start
            if off + BATCH_HEADER_SIZE > len(buf):
                buf = self.store.pread(pos, min(chunk, end - pos))
                chunk = min(chunk * 4, READ_CHUNK)
                buf_start, off = pos, 0
                if len(buf) < BATCH_HEADER_SIZE:
                    return
            h = read_header(buf, off)
            if pos + h.size > end:
                return
            data: bytes | None = None
            if with_data:
                inside = off + h.size <= len(buf)
                data = buf[off : off + h.size] if inside else self.store.pread(pos, h.size)
            yield pos, h, data
            pos += h.size

    def header_at(self, position: int) -> BatchHeader:
        return read_header(self.store.pread(position, BATCH_HEADER_SIZE))

    def read_batch(self, position: int, header: BatchHeader) -> bytes:
        return self.store.pread(position, header.size)

    def find(self, offset: int) -> tuple[int, BatchHeader] | None:
        """(position, header) of the first batch whose last offset is >= ``offset``, or None."""
        if offset >= self.next_offset:
            return None
        start = self.offset_index.lookup(offset - self.base_offset) if offset > self.base_offset else 0
        for pos, h, _ in self.iter_batches(start):
            if h.last_offset >= offset:
                return pos, h
        return None

    def position_of(self, offset: int) -> int:
        """Position of the first batch whose last offset is >= ``offset``; the segment size if none."""
        found = self.find(offset)
        return self.store.size if found is None else found[0]

    def boundary_at_or_before(self, start: int, limit: int) -> int:
        """The largest batch boundary b with start <= b <= limit (``start`` must be a boundary)."""
        if limit >= self.store.size:
            return self.store.size
        pos = max(start, self.offset_index.floor_position(limit))
        for p, h, _ in self.iter_batches(pos):
            if p + h.size > limit:
                return p
            pos = p + h.size
        return pos

    def find_timestamp(self, timestamp: int, min_offset: int) -> tuple[int, BatchHeader] | None:
        """(position, header) of the first batch with max timestamp >= ``timestamp`` and last offset >=
        ``min_offset``."""
        if self.max_timestamp < timestamp:
            return None
        rel = self.time_index.lookup(timestamp)
        start_offset = max(min_offset, self.base_offset + rel if rel is not None else self.base_offset)
        found = self.find(start_offset)
        if found is None:
            return None
        for pos, h, _ in self.iter_batches(found[0]):
            if h.max_timestamp >= timestamp and h.last_offset >= min_offset:
                return pos, h
        return None

    # recovery ----------------------------------------------------------------------------------------------

    def _reset_state(self) -> None:
        self.offset_index.reset()
        self.time_index.reset()
        self.next_offset = self.base_offset
        self.max_timestamp = -1
        self.offset_of_max_timestamp = -1
        self._bytes_since_index = 0

    def recover(self, *, validate: bool = True) -> int:
        """Rebuild the indexes from the batches, validating each one (header, CRC, offset order) if asked;
        truncate the segment at the first bad or incomplete batch. Returns the number of bytes truncated."""
        self._reset_state()
        valid_end = 0
        try:
            for pos, h, data in self.iter_batches(with_data=validate):
                if h.base_offset < self.next_offset or h.last_offset_delta < 0:
                    break
                if not self.can_hold_offset(h.last_offset):
                    break
                if data is not None and not check_crc(data, 0, h):
                    break
                self._account(pos, h)
                valid_end = pos + h.size
        except InvalidBatch:
            pass
        truncated = self.store.size - valid_end
        if truncated:
            self.store.truncate(valid_end)
        self.sync_index_files()
        self._refresh_created()
        return truncated

    def load(self) -> bool:
        """Load the indexes and derive the segment's state from them plus a scan of the batches after the last
        index entry. Returns False if anything is inconsistent (the caller then runs ``recover``)."""
        if not (self.offset_index.load() and self.time_index.load()):
            return False
        if not self.offset_index.sane(self.store.size):
            return False
        oi = self.offset_index
        start = 0
        if oi.keys:
            start = oi.values[-1]
            try:
                h = self.header_at(start)
            except InvalidBatch:
                return False
            if h.base_offset != self.base_offset + oi.keys[-1]:
                return False
        ti = self.time_index
        if ti.keys:
            self.max_timestamp = ti.keys[-1]
            self.offset_of_max_timestamp = self.base_offset + ti.values[-1]
        self.next_offset = self.base_offset
        if oi.keys:
            self.next_offset = self.base_offset + oi.keys[-1]
        end = start
        try:
            for pos, h, _ in self.iter_batches(start):
                if h.base_offset < self.next_offset and pos != start:
                    return False
                if h.max_timestamp > self.max_timestamp:
                    self.max_timestamp = h.max_timestamp
                    self.offset_of_max_timestamp = h.base_offset
                self.next_offset = h.last_offset + 1
                end = pos + h.size
        except InvalidBatch:
            return False
        if end != self.store.size:
            return False
        if not ti.sane(self.next_offset - self.base_offset):
            return False
        self._bytes_since_index = self.store.size - start
        self._refresh_created()
        return True

    def _refresh_created(self) -> None:
        if self.store.size >= BATCH_HEADER_SIZE:
            with contextlib.suppress(InvalidBatch):
                ts = self.header_at(0).max_timestamp
                if ts >= 0:
                    self.created_ms = min(self.created_ms, ts)

    def truncate_to(self, offset: int) -> int:
        """Drop the batch holding ``offset`` and everything after it; returns the bytes removed."""
        pos = self.position_of(offset)
        removed = self.store.size - pos
        if removed:
            self.store.truncate(pos)
            self.recover(validate=False)
        return removed

    # lifecycle ---------------------------------------------------------------------------------------------

    def sync_fds(self) -> list[int]:
        fds = [self.store.sync_fd(), self.offset_index.store.sync_fd(), self.time_index.store.sync_fd()]
        return [fd for fd in fds if fd is not None]

    def pin(self) -> None:
        """Keep the log file open until ``close``, whatever the descriptor budget (``SegmentStore.pin``)."""
        self.store.pin()

    def close(self) -> None:
        self.store.close()
        self.offset_index.store.close()
        self.time_index.store.close()

    def unlink(self) -> None:
        self.store.unlink()
        self.offset_index.store.unlink()
        self.time_index.store.unlink()

    def __repr__(self) -> str:
        return f"Segment(base={self.base_offset}, next={self.next_offset}, size={self.size})"
