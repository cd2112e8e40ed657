"""Where group metadata and committed offsets are made durable: an append-only log of (key, value) entries."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

from kafkite import clock
from kafkite.log.base import Fenced
from kafkite.protocol.errors import ErrorCode
from kafkite.protocol.records import build_batch, iter_headers, iter_records

if TYPE_CHECKING:
    from kafkite.log.base import Partition
    from kafkite.log.engine import Storage

Entry = tuple[bytes, bytes | None]

GROUP_LOG_TOPIC = "__consumer_offsets"
# Configuration of the group log topic: the coordinator keeps it small itself (see ``compact``), so the
# partition must never drop data on its own; a large batch limit lets big groups be written in one batch.
GROUP_LOG_TOPIC_CONFIGS = {
    "cleanup.policy": "delete",
    "retention.ms": "-1",
    "retention.bytes": "-1",
    "max.message.bytes": str(64 * 1024 * 1024),
}
# Largest batch written when rewriting the log (one ``append`` is always a single batch).
_COMPACT_BATCH_BYTES = 1 << 20


def store_error(exc: BaseException) -> ErrorCode:
    """What a member is told when the group's record could not be written: NOT_COORDINATOR if this broker
    may no longer write for the group (its lease is over), else COORDINATOR_NOT_AVAILABLE (retriable), as
    Kafka's coordinator answers a failed append to its log."""
    return ErrorCode.NOT_COORDINATOR if isinstance(exc, Fenced) else ErrorCode.COORDINATOR_NOT_AVAILABLE


class GroupLog(Protocol):
    """An append-only sequence of (key, value) entries; a None value is a tombstone for its key.

    A log may also offer ``compact(entries)``: replace everything by ``entries`` (the live state).
    """

    def append(self, entries: list[Entry]) -> None:
        """Append the entries in order; return only once they are in the log (raise if they are not)."""
        ...

    def replay(self) -> Iterator[Entry]:
        """Every entry appended so far, oldest first."""
        ...


class MemoryGroupLog:
    """A GroupLog kept in a list: for tests and ephemeral brokers."""

    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        self.entries: list[Entry] = list(entries)

    def append(self, entries: list[Entry]) -> None:
        self.entries.extend(entries)

    def replay(self) -> Iterator[Entry]:
        return iter(list(self.entries))

    def compact(self, entries: list[Entry]) -> None:
        self.entries = list(entries)


class StorageGroupLog:
    """A GroupLog on a partition of the storage layer (partition 0 of ``__consumer_offsets``).

    Each ``append`` writes one uncompressed record batch; ``replay`` reads the partition from its start;
    ``compact`` appends the live entries, flushes, then moves the log start offset past everything older.
    ``partition`` may be a function that returns the partition, called on first use (after storage loads).
    """

    def __init__(
        self,
        partition: Partition | Callable[[], Partition],
        *,
        now_ms: Callable[[], int] | None = None,
        read_chunk_bytes: int = 1 << 20,
        durable: bool = False,
    ) -> None:
        self._partition_or_opener = partition
        self._now_ms = now_ms or clock.now_ms
        self._read_chunk_bytes = read_chunk_bytes
        # fsync each append before it returns (log.flush.on.ack=true: what is answered survives a power cut)
        self.durable = durable

    @classmethod
    def open(
        cls, storage: Storage, *, now_ms: Callable[[], int] | None = None, durable: bool = False
    ) -> StorageGroupLog:
        """The group log on partition 0 of ``__consumer_offsets`` in ``storage`` (created if missing).

        The topic is looked up (or created) on first use, so this can be called before ``storage.load()``.
        """

        def opener() -> Partition:
            if GROUP_LOG_TOPIC not in storage.topics():
                storage.create_topic(GROUP_LOG_TOPIC, 1, GROUP_LOG_TOPIC_CONFIGS)
            return storage.partition(GROUP_LOG_TOPIC, 0)

        return cls(opener, now_ms=now_ms, durable=durable)

    @property
    def _partition(self) -> Partition:
        p = self._partition_or_opener
        if callable(p):
            p = self._partition_or_opener = p()
        return p

    def append(self, entries: list[Entry]) -> None:
        if entries:
            self._append_batch(entries, self._now_ms())
            if self.durable:
                self._partition.flush()

    def flush(self) -> None:
        """Make every entry appended so far durable (fsync), whatever the flush policy."""
        self._partition.flush()

    def _append_batch(self, entries: list[Entry], ts: int) -> int:
        batch = build_batch([(key, value, [], ts) for key, value in entries])
        return self._partition.append_sync(bytearray(batch), now_ms=ts).first_offset

    def replay(self) -> Iterator[Entry]:
        offset = self._partition.log_start_offset
        end = self._partition.log_end_offset
        while offset < end:
            data = self._partition.read_sync(offset, self._read_chunk_bytes).to_bytes()
            entries, next_offset = _entries_of(data, offset)
            yield from entries
            if next_offset is None:
                break
            offset = next_offset

    async def entries_async(self) -> list[Entry]:
        """Every entry, as ``replay`` gives them, read with the partition's awaitable reads (a partition in
        the database: the event loop is not held meanwhile)."""
        part = self._partition
        offset = part.log_start_offset
        end = part.log_end_offset
        out: list[Entry] = []
        while offset < end:
            data = (await part.read(offset, self._read_chunk_bytes)).to_bytes()
            entries, next_offset = _entries_of(data, offset)
            out.extend(entries)
            if next_offset is None:
                break
            offset = next_offset
        return out

    def compact(self, entries: list[Entry]) -> None:
        ts = self._now_ms()
        first: int | None = None
        chunk: list[Entry] = []
        size = 0
        for entry in entries:
            chunk.append(entry)
            size += len(entry[0]) + len(entry[1] or b"") + 16
            if size >= _COMPACT_BATCH_BYTES:
                offset = self._append_batch(chunk, ts)
                first = offset if first is None else first
                chunk, size = [], 0
        if chunk:
            offset = self._append_batch(chunk, ts)
            first = offset if first is None else first
        # The old copy goes once the new one is on disk (the partition syncs before it deletes).
        self._partition.delete_records_before(self._partition.log_end_offset if first is None else first)


def _entries_of(data: bytes, offset: int) -> tuple[list[Entry], int | None]:
    """The keyed entries of the batches in ``data`` from ``offset`` on, and the offset after them (None when
    ``data`` holds nothing past ``offset``)."""
    entries: list[Entry] = []
    if not data:
        return entries, None
    last = offset - 1
    for pos, header in iter_headers(data):
        for record in iter_records(data, pos, header):
            if record.offset >= offset and record.key is not None:
                entries.append((record.key, record.value))
        last = max(last, header.last_offset)
    return entries, (last + 1 if last >= offset else None)
