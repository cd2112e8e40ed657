"""Types every log engine shares: results, errors, the append preparation and the ``Partition`` interface."""

from __future__ import annotations

import os
import struct
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

from kafkite.log.config import LogConfig
from kafkite.protocol.records import (
    ATTR_TIMESTAMP_TYPE,
    BatchHeader,
    InvalidBatch,
    build_control_batch,
    iter_headers,
    read_header,
    set_base_offset,
    set_max_timestamp,
    update_crc,
)

if TYPE_CHECKING:
    from kafkite.log.producer_state import ProducerStateManager
    from kafkite.log.writer import Pending


class LogError(Exception):
    """Base class of the log package's errors."""


class OffsetOutOfRange(LogError):
    """The requested offset lies outside [log_start_offset, log_end_offset] (OFFSET_OUT_OF_RANGE)."""

    def __init__(self, offset: int, log_start_offset: int, log_end_offset: int) -> None:
        super().__init__(
            f"offset {offset} is out of range [{log_start_offset}, {log_end_offset}] of the partition"
        )
        self.offset = offset
        self.log_start_offset = log_start_offset
        self.log_end_offset = log_end_offset


class RecordBatchTooLarge(LogError):
    """A batch is larger than the topic's max.message.bytes (MESSAGE_TOO_LARGE)."""


class LogClosed(LogError):
    """The partition log was closed or deleted."""


class NotLeader(LogError):
    """Another broker took the partition's leadership over (a newer leader epoch): this one may no longer
    append to it (NOT_LEADER_OR_FOLLOWER)."""


class AppendOutcomeUnknown(LogError):
    """The append was sent but its answer was lost with the connection (a database that went away while it
    committed): it may or may not be stored. A client must retry it as it is (REQUEST_TIMED_OUT: an
    idempotent producer's retry of the same sequence is then recognised), never as a new write."""


class Fenced(LogError):
    """A write refused because the writer's lease lapsed: brokers sharing a database changed membership since
    the writer last looked, so it may no longer act as the coordinator it was (NOT_COORDINATOR)."""


class OpenFile(Protocol):
    def fileno(self) -> int: ...


class FileRange(NamedTuple):
    """``size`` bytes at ``position`` of an open segment file.

    Use positional I/O only (``os.sendfile``/``os.pread`` on ``file.fileno()``, or ``read()`` below): the file
    is shared, so its seek position means nothing. Holding the range keeps the file open (a
    ``kafkite.log.files.FileHandle`` closes once nothing refers to it), even after its segment was deleted.
    """

    file: OpenFile
    position: int
    size: int

    def read(self) -> bytes:
        fd = self.file.fileno()
        out = bytearray()
        while len(out) < self.size:
            chunk = os.pread(fd, self.size - len(out), self.position + len(out))
            if not chunk:
                raise EOFError(f"segment file ended {self.size - len(out)} bytes short")
            out += chunk
        return bytes(out)


class ReadResult(NamedTuple):
    """Whole batches read from a partition, as file ranges (file engine) or bytes (memory engine)."""

    chunks: list[FileRange | bytes]
    size: int
    high_watermark: int
    log_start_offset: int

    def to_bytes(self) -> bytes:
        """Concatenate the chunks (reads file ranges through Python: for tests and record-level gateways)."""
        return b"".join(c if isinstance(c, bytes) else c.read() for c in self.chunks)


class AppendInfo(NamedTuple):
    first_offset: int
    last_offset: int
    log_append_time: int  # -1 unless the topic uses LogAppendTime
    log_start_offset: int
    bytes: int


_ATTRIBUTES = struct.Struct(">h")
_LEADER_EPOCH = struct.Struct(">i")


def assign_offset(
    batches: bytearray | memoryview,
    pos: int,
    h: BatchHeader,
    base_offset: int,
    *,
    append_time: int,
    max_message_bytes: int,
    leader_epoch: int = 0,
) -> BatchHeader:
    """Give the batch at ``pos`` its base offset and the partition's leader epoch in place, as Kafka's leaders
    do (neither is covered by the CRC), and, for LogAppendTime topics, the append time with a new CRC; returns
    its header as stored. Raises for a batch no engine may store."""
    if h.size > max_message_bytes:
        raise RecordBatchTooLarge(
            f"record batch of {h.size} bytes exceeds max.message.bytes {max_message_bytes}"
        )
    if h.last_offset_delta < 0:
        raise InvalidBatch(f"negative last offset delta {h.last_offset_delta}")
    set_base_offset(batches, pos, base_offset)
    _LEADER_EPOCH.pack_into(batches, pos + 12, leader_epoch)
    if append_time >= 0:
        _ATTRIBUTES.pack_into(batches, pos + 21, h.attributes | ATTR_TIMESTAMP_TYPE)
        set_max_timestamp(batches, pos, append_time)
        update_crc(batches, pos)
    return read_header(batches, pos)


class Prepared(NamedTuple):
    """Batches given their offsets, ready to be stored."""

    first_offset: int
    last_offset: int
    headers: list[tuple[int, BatchHeader]]  # (position in the buffer, header as stored)
    idempotent: bool  # some batch carries a producer id: the producer state must see it
    append_time: int  # -1 unless the topic uses LogAppendTime


def prepare_append(
    batches: bytearray | memoryview,
    producers: ProducerStateManager,
    next_offset: int,
    log_start_offset: int,
    config: LogConfig,
    now_ms: int,
    *,
    leader_epoch: int = 0,
) -> Prepared | AppendInfo:
    """The append preparation every engine shares: check each batch against the producer state, give it its
    offsets from ``next_offset`` (rewriting ``batches`` in place). A retry of a batch already appended is
    answered with its first offsets (an ``AppendInfo`` of 0 bytes) instead; raises for what no engine may
    store (and ``ProducerStateError`` for what the producer state refuses)."""
    total = len(batches)
    if total == 0:
        raise InvalidBatch("no record batch to append")
    append_time = now_ms if config.log_append_time else -1
    first_offset = next_offset
    headers: list[tuple[int, BatchHeader]] = []
    end = 0
    idempotent = False
    for pos, h in iter_headers(batches):
        if h.producer_id >= 0:
            idempotent = True
            if h.is_control:
                producers.check_marker(h.producer_id, h.producer_epoch)
            else:
                dup = producers.check(h)
                if dup is not None:
                    if h.size != total:
                        raise InvalidBatch("a retried batch must be appended on its own")
                    return AppendInfo(dup.first_offset, dup.last_offset, -1, log_start_offset, 0)
        h = assign_offset(
            batches,
            pos,
            h,
            next_offset,
            append_time=append_time,
            max_message_bytes=config.max_message_bytes,
            leader_epoch=leader_epoch,
        )
        headers.append((pos, h))
        next_offset = h.last_offset + 1
        end = pos + h.size
    if end != total:
        raise InvalidBatch(f"{total - end} trailing bytes after the last whole record batch")
    return Prepared(first_offset, next_offset - 1, headers, idempotent, append_time)


def txn_marker(
    producer_id: int, producer_epoch: int, *, commit: bool, coordinator_epoch: int, now_ms: int
) -> bytearray:
    """A COMMIT or ABORT control batch for the producer's transaction."""
    return bytearray(
        build_control_batch(
            commit=commit,
            producer_id=producer_id,
            producer_epoch=producer_epoch,
            coordinator_epoch=coordinator_epoch,
            timestamp_ms=now_ms,
        )
    )


class Partition(ABC):
    """One partition's log, whichever engine stores it.

    ``append`` and ``read`` are what request handlers use, on the event loop: an append takes its place in
    the partition's order when it is called and returns its result to await (the engine does the work where
    it likes: the file engine on the writer thread of the partition's log directory, the PostgreSQL engine in
    a database round trip, the memory engine at once); a read's result is awaited too. ``append_sync`` and
    ``read_sync`` do the same while blocking the calling thread (start-up, tools, tests, and the broker's own
    small state logs). A fetch never sees an append before it is done: the log end offset moves then.

    The other methods are synchronous; their disk work is the engine's business (the file engine queues it on
    the partition's writer, in order with the appends). ``flush`` may run in any thread.
    """

    config: LogConfig

    @property
    @abstractmethod
    def log_start_offset(self) -> int: ...

    @property
    @abstractmethod
    def log_end_offset(self) -> int: ...

    @property
    def high_watermark(self) -> int:
        """Single replica: everything appended is committed."""
        return self.log_end_offset

    @property
    def last_stable_offset(self) -> int:
        """The offset read_committed consumers read up to: the high watermark unless a transaction is open."""
        return self.high_watermark

    @property
    def behind(self) -> bool:
        """Whether ``catch_up`` has work to do before ``last_stable_offset`` and ``aborted_transactions``
        answer for the whole log (an engine whose log other brokers append to; never for local logs)."""
        return False

    async def catch_up(self) -> None:
        """Bring what ``last_stable_offset`` and ``aborted_transactions`` are answered from up to the log's
        end, without holding the event loop (raises LogError when the storage cannot be reached)."""
        return None

    @property
    def leader_epoch(self) -> int:
        """The partition's leader epoch: a single broker's logs stay at epoch 0 (the PostgreSQL engine's
        partitions move between brokers, and their epoch with them)."""
        return 0

    def epoch_end_offset(self, epoch: int) -> tuple[int, int]:
        """OffsetForLeaderEpoch: (the largest epoch <= ``epoch`` the log knows, the offset where the next
        epoch starts, or the log end offset for the current epoch); (-1, -1) for an unknown epoch."""
        if epoch == self.leader_epoch:
            return epoch, self.log_end_offset
        return -1, -1

    def aborted_transactions(self, start: int, end: int) -> Sequence[tuple[int, int, int]]:
        """(producer id, first offset, marker offset) of aborted transactions overlapping [start, end)."""
        return []

    @property
    @abstractmethod
    def producers(self) -> ProducerStateManager:
        """The producer state (DescribeProducers)."""

    @abstractmethod
    def expire_producers(self, now_ms: int, max_age_ms: int) -> int:
        """Forget producers idle for ``max_age_ms`` (producer.id.expiration.ms); returns how many."""

    @property
    @abstractmethod
    def size_bytes(self) -> int: ...

    @property
    @abstractmethod
    def unflushed_messages(self) -> int: ...

    @abstractmethod
    def append(self, batches: bytearray | memoryview, *, now_ms: int) -> Pending[AppendInfo]:
        """Assign offsets to ``batches`` (one or more validated v2 batches, rewritten in place) and store
        them, after every append called before on this partition. Raises ``LogClosed`` at once when the log
        is closed; the rest (``InvalidBatch``, ``RecordBatchTooLarge``, ``ProducerStateError``, ``OSError``)
        comes with the result."""

    @abstractmethod
    def append_sync(self, batches: bytearray | memoryview, *, now_ms: int) -> AppendInfo:
        """``append``, waiting for it on the calling thread."""

    @abstractmethod
    async def read(
        self, offset: int, max_bytes: int, *, max_offset: int | None = None, min_one: bool = True
    ) -> ReadResult:
        """Whole batches from the one holding ``offset``: at most ``max_bytes`` (but a whole first batch when
        ``min_one``), none holding an offset >= ``max_offset``."""

    @abstractmethod
    def read_sync(
        self, offset: int, max_bytes: int, *, max_offset: int | None = None, min_one: bool = True
    ) -> ReadResult:
        """``read``, on the calling thread."""

    def write_txn_marker(
        self, producer_id: int, producer_epoch: int, *, commit: bool, coordinator_epoch: int, now_ms: int
    ) -> Pending[AppendInfo]:
        """Append a COMMIT or ABORT marker for the producer's transaction (an ``append``)."""
        marker = txn_marker(
            producer_id, producer_epoch, commit=commit, coordinator_epoch=coordinator_epoch, now_ms=now_ms
        )
        return self.append(marker, now_ms=now_ms)

    def write_txn_marker_sync(
        self, producer_id: int, producer_epoch: int, *, commit: bool, coordinator_epoch: int, now_ms: int
    ) -> int:
        """``write_txn_marker``, waiting for it; returns the marker's offset."""
        marker = txn_marker(
            producer_id, producer_epoch, commit=commit, coordinator_epoch=coordinator_epoch, now_ms=now_ms
        )
        return self.append_sync(marker, now_ms=now_ms).first_offset

    @abstractmethod
    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None: ...

    @abstractmethod
    def max_timestamp(self) -> tuple[int, int]: ...

    @abstractmethod
    def first_timestamp(self) -> int: ...

    @abstractmethod
    def delete_records_before(self, offset: int) -> int:
        """DeleteRecords: move the log start offset up to ``offset`` (-1: the high watermark) at once and
        return it; the records below go later, once everything appended before is durable."""

    @abstractmethod
    def truncate_to(self, offset: int) -> None: ...

    @abstractmethod
    def apply_retention(self, now_ms: int) -> int: ...

    @abstractmethod
    def reconfigure(self, config: LogConfig) -> None: ...

    @abstractmethod
    def flush_due(self, now_ms: int) -> bool: ...

    @abstractmethod
    def flush(self) -> None: ...

    def refresh(self) -> None:  # noqa: B027 - optional: only a shared database has anything to catch up with
        """Catch up with appends made elsewhere (a database shared by several brokers); a no-op otherwise."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def delete(self) -> None: ...
