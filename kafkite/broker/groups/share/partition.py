"""One share-partition (KIP-932): a share group's view of one topic partition, kept by the delivery engine.

The share-partition start offset (SPSO) and end offset (SPEO) bound the in-flight records: below the start
everything is acknowledged or archived, from the end on nothing was acquired yet. Inside, each record is
available (waiting for a consumer, with the number of times it was delivered), acquired by a member until its
acquisition lock lapses, or archiving (rejected, or delivered the limit number of times, with a dead-letter
record still to write). This is a window ledger of ``kafkite.broker.delivery``: every acquisition,
acknowledgement, release, lapse and archive is journaled before it is answered, so a restart loses none of
it. After a restart the locks of acquired records are released (their consumers' share sessions are gone),
delivery counts kept, as Kafka does when a share-partition's leader changes.

A fetch acquires records the way Kafka's SharePartition does: first the available records inside the window,
then new ones from the end, whole log batches at a time (or exactly ``max_records`` in record-limit mode), no
more than ``max record locks`` records in flight; the records of aborted transactions are archived instead of
acquired when the group reads committed records. Offsets without a record (compaction, control batches) are
acquired as gaps, which consumers acknowledge with the GAP type.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from kafkite.broker.delivery.ledger import Ledger, counted_ranges
from kafkite.log.base import FileRange, ReadResult
from kafkite.protocol.errors import ErrorCode
from kafkite.protocol.records import BATCH_HEADER_SIZE, read_header

ACK_GAP, ACK_ACCEPT, ACK_RELEASE, ACK_REJECT, ACK_RENEW = 0, 1, 2, 3, 4
REJECTED = "Offset rejected by client."
LIMIT_REACHED = "Offset delivery count exceeded the threshold."


@dataclass(slots=True)
class InFlight:
    """A record of the window: its delivery count and acquisition lock (the ledger's entry)."""

    id: int
    delivery_count: int = 0
    visible_after_ms: int = 0
    nonce: int = 0
    dlq: bool = False  # archiving: its dead-letter record is still to be written


@dataclass(frozen=True)
class ShareSettings:
    """What the group's configs (else the broker's) say for this share-partition now."""

    lock_duration_ms: int
    delivery_count_limit: int
    max_record_locks: int
    read_committed: bool
    dlq_topic: str | None
    dlq_copy_record: bool


class Batch(NamedTuple):
    """A record batch of the log: its offsets and where its bytes are."""

    base: int
    last: int
    control: bool
    transactional: bool
    producer_id: int
    chunk: Any  # FileRange | bytes


class AckError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def walk_batches(result: ReadResult) -> list[Batch]:
    """The batches of a read, each with its own chunk (a slice of a file range, or bytes)."""
    out: list[Batch] = []
    for chunk in result.chunks:
        if isinstance(chunk, FileRange):
            pos, end = chunk.position, chunk.position + chunk.size
            fd = chunk.file.fileno()
            while pos + BATCH_HEADER_SIZE <= end:
                h = read_header(os.pread(fd, BATCH_HEADER_SIZE, pos))
                size = min(h.size, end - pos)
                out.append(
                    Batch(
                        h.base_offset,
                        h.last_offset,
                        h.is_control,
                        h.is_transactional,
                        h.producer_id,
                        FileRange(chunk.file, pos, size),
                    )
                )
                pos += h.size
        else:
            data = memoryview(chunk)
            pos = 0
            while pos + BATCH_HEADER_SIZE <= len(data):
                h = read_header(data, pos)
                out.append(
                    Batch(
                        h.base_offset,
                        h.last_offset,
                        h.is_control,
                        h.is_transactional,
                        h.producer_id,
                        bytes(data[pos : pos + h.size]),
                    )
                )
                pos += h.size
    return out


class Acquired(NamedTuple):
    runs: list[list[int]]  # [first, last, delivery count]
    chunks: list[Any]
    records: int  # records acquired (not counting gaps)


class SharePartition:
    """The share-partition of ``group`` on partition ``index`` of the topic ``topic_id``."""

    def __init__(
        self,
        group: str,
        topic_id: Any,
        index: int,
        ledger: Ledger[InFlight],
        settings: Callable[[], ShareSettings],
    ) -> None:
        self.group = group
        self.topic_id = topic_id
        self.index = index
        self.ledger = ledger
        self.settings = settings
        self._available: list[int] = []  # heap of offsets inside the window that may be acquired
        # Why each archiving record is dead-lettered (for the record's headers).
        self.dead_reason: dict[int, str] = {}
        self.on_available: Callable[[], None] = lambda: None
        self.on_dead: Callable[[], None] = lambda: None
        self.counters = dict.fromkeys(
            ("acquired", "accepted", "released", "rejected", "archived", "dead_lettered", "lock_expiries"), 0
        )

    @property
    def start(self) -> int:
        return self.ledger.start

    @property
    def end(self) -> int:
        return self.ledger.end

    # ------------------------------------------------------------------ lifecycle

    def loaded(self, now: int) -> None:
        """After replay: release every lock (the sessions that held them are gone): the records are
        available again, or archived when they were delivered the limit number of times."""
        s = self.settings()
        ledger = self.ledger
        ledger.owners.clear()
        dead: list[InFlight] = []
        for e in ledger.entries.values():
            if e.dlq:
                self.dead_reason[e.id] = (
                    LIMIT_REACHED if e.delivery_count >= s.delivery_count_limit else REJECTED
                )
            elif e.nonce and e.delivery_count >= s.delivery_count_limit:
                dead.append(e)
            else:
                e.visible_after_ms = 0
        if dead:
            ledger.kill(dead, pending=s.dlq_topic is not None)
            for e in dead:
                if e.dlq:
                    self.dead_reason[e.id] = LIMIT_REACHED
        ledger.rebuild()
        self._available = [i for i, e in ledger.entries.items() if not e.dlq]
        heapq.heapify(self._available)

    def reset(self, start: int) -> None:
        """Start anew at ``start`` (AlterShareGroupOffsets, an initialization): the window empties."""
        self.ledger.move_window(start, start)
        self._available.clear()
        self.dead_reason.clear()

    def skip_to(self, offset: int) -> None:
        """Records below ``offset`` are gone from the log (retention, DeleteRecords): the start moves up."""
        if offset > self.ledger.start:
            self.ledger.move_window(offset, max(offset, self.ledger.end))

    # ------------------------------------------------------------------ locks

    def settle(self, now: int) -> None:
        """Acquisition locks that lapsed: the records are available again, or archived at the limit."""
        s = self.settings()
        back, dead = self.ledger.settle(now, s.delivery_count_limit, pending_dead=s.dlq_topic is not None)
        # A released record's lock was moved to 0; the others' locks ran out.
        self.counters["lock_expiries"] += sum(1 for e in back + dead if e.visible_after_ms > 0)
        for e in back:
            heapq.heappush(self._available, e.id)
        if dead:
            self.counters["archived"] += len(dead)
            for e in dead:
                if e.dlq:
                    self.dead_reason[e.id] = LIMIT_REACHED
            if s.dlq_topic is not None:
                self.on_dead()
        if back:
            self.on_available()

    def next_offset(self, now: int) -> int:
        """Where the next acquisition starts: the first available record, else the end."""
        h = self._available
        entries = self.ledger.entries
        while h:
            e = entries.get(h[0])
            if (
                e is not None
                and not e.dlq
                and not self.ledger.in_flight(e, now)
                and h[0] >= self.ledger.start
            ):
                return h[0]
            heapq.heappop(h)
        return self.ledger.end

    def has_available(self, now: int) -> bool:
        return self.next_offset(now) < self.ledger.end

    def can_acquire_new(self) -> bool:
        return self.ledger.end - self.ledger.start < self.settings().max_record_locks

    # ------------------------------------------------------------------ acquisition

    def acquire(
        self,
        member: str,
        batches: Sequence[Batch],
        *,
        max_records: int,
        record_limit: bool,
        batch_size: int,
        now: int,
        aborted: Sequence[tuple[int, int, int]] = (),
    ) -> Acquired:
        """Acquire for ``member`` the records of ``batches`` (read from the log at ``next_offset``) that are
        available: what was acquired (ranges with delivery counts) and the batches to send."""
        s = self.settings()
        ledger = self.ledger
        entries = ledger.entries
        start, end = ledger.start, ledger.end
        new_allowed = max(0, s.max_record_locks - (end - start))
        limit = max_records if max_records > 0 else 2**31 - 1
        taken: list[InFlight] = []
        archived: list[InFlight] = []
        chunks: list[Any] = []
        count = 0
        stop = False

        def aborted_batch(b: Batch) -> bool:
            return (
                b.transactional
                and not b.control
                and any(pid == b.producer_id and first <= b.base < marker for pid, first, marker in aborted)
            )

        for b in batches:
            if stop:
                break
            if b.last < start:
                continue
            skip_data = aborted_batch(b)
            took = took_new = False
            o = max(b.base, start)
            while o <= b.last:
                if record_limit and count >= limit:
                    stop = True
                    break
                if o < end:
                    e = entries.get(o)
                    if e is not None and not e.dlq and not ledger.in_flight(e, now):
                        (archived if skip_data else taken).append(e)
                        count += 0 if skip_data else 1
                        took = took or not skip_data
                    o += 1
                    continue
                # A new record (and the gaps before it, which only a GAP acknowledgement settles). The
                # in-flight limit is exact in record-limit mode; batch-optimized, a batch begun is whole.
                need = o - end + 1
                if (record_limit and new_allowed < need) or (not took_new and new_allowed <= 0):
                    stop = True
                    break
                for g in range(end, o + 1):
                    e = entries[g] = InFlight(g)
                    if skip_data and g == o:
                        archived.append(e)
                    else:
                        taken.append(e)
                new_allowed -= need
                took_new = True
                if not skip_data:
                    count += 1
                    took = True
                end = o + 1
                o += 1
            if took:
                chunks.append(b.chunk)
            if not record_limit and (count >= limit or new_allowed <= 0):
                stop = True
        if archived:
            ledger.deliver(archived, 0)
            ledger.kill(archived)
            self.counters["archived"] += len(archived)
        if not taken:
            return Acquired([], [], 0)
        taken.sort(key=lambda e: e.id)
        ledger.deliver(taken, now + s.lock_duration_ms, owner=member)
        self.counters["acquired"] += len(taken)
        runs: list[list[int]] = []
        for first, last, n in counted_ranges(taken):
            step = batch_size if batch_size > 0 else last - first + 1
            for lo in range(first, last + 1, step):
                runs.append([lo, min(last, lo + step - 1), n])
        return Acquired(runs, chunks, count)

    # ------------------------------------------------------------------ acknowledgements

    def acknowledge(
        self,
        member: str,
        batches: Sequence[tuple[int, int, Sequence[int]]],
        *,
        renew_allowed: bool,
        now: int,
    ) -> bool:
        """Apply ``member``'s acknowledgements (first, last, types) all or none; AckError when one is not
        valid. Returns whether some record was renewed."""
        s = self.settings()
        self.settle(now)
        ledger = self.ledger
        start, end = ledger.start, ledger.end
        by_type: dict[int, list[InFlight]] = {}
        seen: set[int] = set()
        for first, last, types in batches:
            if first < 0 or last < first or not types or (len(types) != 1 and len(types) != last - first + 1):
                raise AckError(ErrorCode.INVALID_REQUEST, "Invalid acknowledgement batch")
            for t in types:
                if t not in (ACK_GAP, ACK_ACCEPT, ACK_RELEASE, ACK_REJECT, ACK_RENEW):
                    raise AckError(ErrorCode.INVALID_REQUEST, f"Invalid acknowledge type: {list(types)}")
                if t == ACK_RENEW and not renew_allowed:
                    raise AckError(
                        ErrorCode.INVALID_REQUEST, "Renew acknowledgements are only valid with IsRenewAck"
                    )
            if last < start:
                continue
            for o in range(max(first, start), last + 1):
                if o in seen:
                    raise AckError(ErrorCode.INVALID_REQUEST, f"Offset {o} is acknowledged twice")
                seen.add(o)
                e = ledger.entries.get(o) if o < end else None
                if e is None or e.dlq or not ledger.in_flight(e, now) or ledger.owners.get(o) != member:
                    raise AckError(
                        ErrorCode.INVALID_RECORD_STATE,
                        f"The record state is invalid. The acknowledgement of offset {o} could not be "
                        "applied.",
                    )
                t = types[0] if len(types) == 1 else types[o - first]
                by_type.setdefault(t, []).append(e)
        dlq = s.dlq_topic is not None
        if ACK_ACCEPT in by_type:
            ledger.settled(by_type[ACK_ACCEPT])
            self.counters["accepted"] += len(by_type[ACK_ACCEPT])
        if ACK_GAP in by_type:
            ledger.kill(by_type[ACK_GAP])
        if ACK_REJECT in by_type:
            rejected = by_type[ACK_REJECT]
            ledger.kill(rejected, pending=dlq)
            self.counters["rejected"] += len(rejected)
            self.counters["archived"] += len(rejected)
            if dlq:
                for e in rejected:
                    self.dead_reason[e.id] = REJECTED
                self.on_dead()
        if ACK_RENEW in by_type:
            ledger.move_locks(by_type[ACK_RENEW], now + s.lock_duration_ms)
        if ACK_RELEASE in by_type:
            released = by_type[ACK_RELEASE]
            self.counters["released"] += len(released)
            ledger.move_locks(released, 0)
            self.settle(now)
        elif ledger.start > start:
            # Settled records left the window: room under the in-flight limit for a waiting fetch.
            self.on_available()
        return ACK_RENEW in by_type

    def release_member(self, member: str, now: int) -> int:
        """Release every record ``member`` holds (it left, or its share session closed)."""
        ledger = self.ledger
        held = [
            ledger.entries[i]
            for i, owner in list(ledger.owners.items())
            if owner == member and i in ledger.entries and ledger.in_flight(ledger.entries[i], now)
        ]
        if held:
            ledger.move_locks(held, 0)
            self.settle(now)
        return len(held)

    # ------------------------------------------------------------------ dead letters

    def pending_dead(self) -> list[InFlight]:
        return sorted((e for e in self.ledger.entries.values() if e.dlq), key=lambda e: e.id)

    def dead_written(self, items: list[InFlight]) -> None:
        start = self.ledger.start
        self.ledger.written(items)
        if self.ledger.start > start:
            self.on_available()
        self.counters["dead_lettered"] += len(items)
        for e in items:
            self.dead_reason.pop(e.id, None)

    # ------------------------------------------------------------------ introspection

    def lag(self, high_watermark: int) -> int:
        """Records not yet delivered complete (KIP-1226): beyond the end, and in the window unsettled."""
        return max(0, high_watermark - self.ledger.end) + len(self.ledger.entries)

    def stats(self, now: int) -> dict[str, Any]:
        entries = self.ledger.entries.values()
        in_flight = sum(1 for e in entries if not e.dlq and self.ledger.in_flight(e, now))
        archiving = sum(1 for e in entries if e.dlq)
        counts: dict[int, int] = {}
        for e in entries:
            if not e.dlq:
                counts[e.delivery_count] = counts.get(e.delivery_count, 0) + 1
        return {
            "start_offset": self.ledger.start,
            "end_offset": self.ledger.end - 1,
            "in_flight": in_flight,
            "available": len(self.ledger.entries) - in_flight - archiving,
            "archiving": archiving,
            "delivery_counts": {str(k): v for k, v in sorted(counts.items())},
            **self.counters,
        }
