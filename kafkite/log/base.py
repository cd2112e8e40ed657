"""Types shared by every log engine: results, errors and the ``Partition`` interface."""

from __future__ import annotations

import os
import struct
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import BinaryIO, NamedTuple

from kafkite.log.config import LogConfig
from kafkite.protocol.records import (
    ATTR_TIMESTAMP_TYPE,
    BatchHeader,
    InvalidBatch,
    read_header,
    set_base_offset,
    set_max_timestamp,
    update_crc,
)


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


class FileRange(NamedTuple):
    """``size`` bytes at ``position`` of an open segment file.

    Use positional I/O only (``os.sendfile``/``os.pread`` on ``file.fileno()``, or ``read()`` below): the file
    object is shared, so its seek position means nothing.
    """

    file: BinaryIO
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


class Partition(ABC):
    """One partition's log, whichever engine stores it. All methods are synchronous.

    ``flush`` may run in another thread while the owning thread keeps calling the other methods.
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
    def size_bytes(self) -> int: ...

    @property
    @abstractmethod
    def unflushed_messages(self) -> int: ...

    @abstractmethod
    def append(self, batches: bytearray, *, now_ms: int) -> AppendInfo: ...

    @abstractmethod
    def read(
        self, offset: int, max_bytes: int, *, max_offset: int | None = None, min_one: bool = True
    ) -> ReadResult: ...

    @abstractmethod
    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None: ...

    @abstractmethod
    def max_timestamp(self) -> tuple[int, int]: ...

    @abstractmethod
    def first_timestamp(self) -> int: ...

    @abstractmethod
    def delete_records_before(self, offset: int) -> int: ...

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

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def delete(self) -> None: ...
