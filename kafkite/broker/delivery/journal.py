"""The durable side of the delivery engine: records appended to, and replayed from, partition 0 of an
internal topic (or one partition of a partitioned one).

A ``RecordLog`` appends ``(key, value, headers, timestamp)`` records as one batch and replays them in order.
Events are records keyed by their kind (one byte of ASCII, ``d``, ``u``, ``x``...) with a small JSON value;
an event that belongs to one of several ledgers sharing the log carries the ledger's name in a ``t`` header
(``Journal.table_of``). See ``kafkite.broker.delivery.ledger`` for what the events mean.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from kafkite.clock import now_ms
from kafkite.log.base import Partition
from kafkite.protocol.records import Header, Record, build_batch, iter_headers, iter_records

READ_CHUNK = 4 * 1024 * 1024
TABLE_HEADER = "t"
SOURCE_HEADER = "b"  # the broker that wrote an event, when brokers share the log

Event = tuple[bytes, dict[str, Any]]


def wall_clock_ms() -> int:
    """The broker's one wall clock (``kafkite.clock``), in milliseconds."""
    return now_ms()


class RecordLog:
    """Records appended to and replayed from one partition of an internal topic."""

    def __init__(self, partition: Partition, clock: Callable[[], int] = wall_clock_ms) -> None:
        self.partition = partition
        self.clock = clock
        # Set when several brokers append to the log (a shared database): each event says who wrote it.
        self.source: str | None = None
        # Called with the first and last offsets of each append (a reader of a shared log skips its own).
        self.on_append: Callable[[int, int], None] | None = None

    def append(self, records: list[tuple[bytes | None, bytes | None, list[Header], int]]) -> int:
        """Append ``(key, value, headers, timestamp)`` records as one batch; the first record's offset."""
        batch = bytearray(build_batch(records))
        info = self.partition.append_sync(batch, now_ms=self.clock())
        if self.on_append is not None:
            self.on_append(info.first_offset, info.last_offset)
        return info.first_offset

    def append_events(self, events: list[Event], table: str | None = None) -> int:
        """Append events (of the ledger named ``table`` when several share the log) as one batch."""
        t = self.clock()
        headers: list[Header] = [] if table is None else [(TABLE_HEADER, table.encode())]
        if self.source is not None:
            headers.append((SOURCE_HEADER, self.source.encode()))
        return self.append(
            [(k, json.dumps(v, separators=(",", ":")).encode(), headers, t) for k, v in events]
        )

    def replay(self, start: int | None = None) -> Iterator[Record]:
        """Every record from ``start`` (the log's start when None) to the log's end."""
        p = self.partition
        offset = p.log_start_offset if start is None else max(start, p.log_start_offset)
        while offset < p.log_end_offset:
            data = p.read_sync(offset, READ_CHUNK).to_bytes()
            if not data:
                break
            for pos, h in iter_headers(data):
                for rec in iter_records(data, pos, h):
                    if rec.offset >= offset:
                        yield rec
                offset = max(offset, h.last_offset + 1)

    @property
    def records(self) -> int:
        """How many records the log holds (what compaction would shrink)."""
        p = self.partition
        return p.log_end_offset - p.log_start_offset


def table_of(record: Record) -> str | None:
    """The ledger an event record belongs to (None: the log's only ledger)."""
    for key, value in record.headers:
        if key == TABLE_HEADER and value is not None:
            return value.decode("utf-8", "replace")
    return None


def source_of(record: Record) -> str | None:
    """The broker that wrote an event (None: the log has one writer)."""
    for key, value in record.headers:
        if key == SOURCE_HEADER and value is not None:
            return value.decode("utf-8", "replace")
    return None


def decode_event(record: Record) -> Event:
    return record.key or b"", json.loads(record.value or b"{}")
