"""Where group metadata and committed offsets are made durable: an append-only log of (key, value) entries."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

from kafkite.protocol.records import build_batch, iter_headers, iter_records

if TYPE_CHECKING:
    from kafkite.log.base import Partition

Entry = tuple[bytes, bytes | None]

GROUP_LOG_TOPIC = "__consumer_offsets"


class GroupLog(Protocol):
    """An append-only sequence of (key, value) entries; a None value is a tombstone for its key."""

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


class StorageGroupLog:
    """A GroupLog on a partition of the storage layer (partition 0 of ``__consumer_offsets``).

    Each ``append`` writes one uncompressed record batch; ``replay`` reads the partition from its start.
    The caller opens (and creates) the partition, e.g. ``storage.partition("__consumer_offsets", 0)``.
    """

    def __init__(
        self,
        partition: Partition,
        *,
        now_ms: Callable[[], int] | None = None,
        read_chunk_bytes: int = 1 << 20,
    ) -> None:
        self._partition = partition
        self._now_ms = now_ms or (lambda: int(time.time() * 1000))
        self._read_chunk_bytes = read_chunk_bytes

    def append(self, entries: list[Entry]) -> None:
        if not entries:
            return
        ts = self._now_ms()
        batch = build_batch([(key, value, [], ts) for key, value in entries])
        self._partition.append(bytearray(batch), now_ms=ts)

    def replay(self) -> Iterator[Entry]:
        offset = self._partition.log_start_offset
        end = self._partition.log_end_offset
        while offset < end:
            result = self._partition.read(offset, self._read_chunk_bytes)
            data = result.to_bytes()
            if not data:
                break
            last = offset - 1
            for pos, header in iter_headers(data):
                for record in iter_records(data, pos, header):
                    if record.offset >= offset and record.key is not None:
                        yield record.key, record.value
                last = max(last, header.last_offset)
            if last < offset:
                break
            offset = last + 1
