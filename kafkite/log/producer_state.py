"""Per-partition producer state: idempotent sequences, producer epochs, transactions, the last stable offset.

Everything here is driven by record batch headers alone (producer id, epoch, base sequence, last offset
delta, the transactional and control flags), so the produce path never looks at a record. Per producer id it
keeps the epoch, the sequence and offset ranges of its last five batches (enough to recognise a retried batch
and answer it with the offsets it was first given), the coordinator epoch of its last transaction marker and
the first offset of its ongoing transaction. Per partition it keeps the aborted transactions (for
read_committed Fetch) and derives the first unstable offset (for the last stable offset).

The state is snapshotted to ``<offset>.snapshot`` files next to the segments (JSON: see ``to_json``) and
rebuilt on recovery from the newest snapshot not beyond the log end, then by replaying the batch headers after
it.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from kafkite.log.base import LogError
from kafkite.protocol.records import BatchHeader, InvalidBatch, iter_records, parse_control_record

MAX_CACHED_BATCHES = 5  # batches remembered per producer: the most a producer may have in flight
NO_SEQUENCE = -1
NO_EPOCH = -1
INT32_MAX = (1 << 31) - 1
SNAPSHOT_VERSION = 1
SNAPSHOT_SUFFIX = ".snapshot"


class ProducerStateError(LogError):
    """A batch the producer state refuses (the broker maps each subclass to a Kafka error code)."""


class OutOfOrderSequence(ProducerStateError):
    """OUT_OF_ORDER_SEQUENCE_NUMBER: the batch does not follow the producer's last sequence."""


class InvalidProducerEpoch(ProducerStateError):
    """INVALID_PRODUCER_EPOCH: a newer epoch of this producer id has written to the partition."""


class UnknownProducerId(ProducerStateError):
    """UNKNOWN_PRODUCER_ID: no state for the producer (it expired) and the batch does not start a sequence."""


class InvalidTxnState(ProducerStateError):
    """INVALID_TXN_STATE: a non-transactional batch from a producer with an ongoing transaction."""


class CachedBatch(NamedTuple):
    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int


class AbortedTxn(NamedTuple):
    producer_id: int
    first_offset: int
    last_offset: int  # the offset of the ABORT marker


class ProducerInfo(NamedTuple):
    """What DescribeProducers reports of one producer of a partition."""

    producer_id: int
    producer_epoch: int
    last_sequence: int
    last_timestamp: int
    coordinator_epoch: int
    current_txn_start_offset: int


def last_sequence(h: BatchHeader) -> int:
    """The sequence number of the batch's last record (sequences wrap from INT32_MAX to 0)."""
    if h.base_sequence < 0:
        return NO_SEQUENCE
    seq = h.base_sequence + h.last_offset_delta
    return seq - INT32_MAX - 1 if seq > INT32_MAX else seq


def _in_sequence(last: int, nxt: int) -> bool:
    return nxt == last + 1 or (nxt == 0 and last == INT32_MAX)


@dataclass(slots=True)
class ProducerEntry:
    producer_id: int
    epoch: int = NO_EPOCH
    batches: deque[CachedBatch] = field(default_factory=lambda: deque(maxlen=MAX_CACHED_BATCHES))
    coordinator_epoch: int = -1
    last_timestamp: int = -1
    txn_first_offset: int = -1  # -1: no ongoing transaction

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else NO_SEQUENCE

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch = epoch
            self.batches.clear()


class ProducerStateManager:
    """The producer state of one partition. Not thread-safe: the owning log serialises access."""

    def __init__(self) -> None:
        self.producers: dict[int, ProducerEntry] = {}
        self.ongoing: dict[int, int] = {}  # producer id -> first offset of its ongoing transaction
        self.aborted: list[AbortedTxn] = []  # ordered by last offset
        self._aborted_last: list[int] = []  # the last offsets of ``aborted``, for bisection
        self.changes = 0  # bumped by every change: snapshots are taken only when it moved

    # -- validation ------------------------------------------------------------------------------------------

    def check(self, h: BatchHeader) -> CachedBatch | None:
        """Validate a client's data batch before it is appended: the cached batch it duplicates (answer it
        with that batch's offsets and do not append), or None to append. Raises ProducerStateError."""
        entry = self.producers.get(h.producer_id)
        seq = h.base_sequence
        if entry is None:
            if seq > 0:
                raise UnknownProducerId(
                    f"no state for producer {h.producer_id} (expired?) and its batch starts at sequence {seq}"
                )
            return None
        epoch = h.producer_epoch
        if epoch < entry.epoch:
            raise InvalidProducerEpoch(
                f"producer {h.producer_id} epoch {epoch} is older than the partition's {entry.epoch}"
            )
        if seq >= 0:
            if epoch == entry.epoch:
                last = last_sequence(h)
                for b in entry.batches:
                    if b.first_seq == seq and b.last_seq == last:
                        return b
                if not _in_sequence(entry.last_seq, seq):
                    raise OutOfOrderSequence(
                        f"producer {h.producer_id} sent sequence {seq} after {entry.last_seq}"
                    )
            elif seq != 0 and entry.epoch != NO_EPOCH:
                raise OutOfOrderSequence(
                    f"producer {h.producer_id} starts epoch {epoch} at sequence {seq}, not 0"
                )
        if entry.txn_first_offset >= 0 and not h.is_transactional:
            raise InvalidTxnState(
                f"producer {h.producer_id} sent a non-transactional batch during its transaction"
            )
        return None

    def check_marker(self, producer_id: int, epoch: int) -> None:
        entry = self.producers.get(producer_id)
        if entry is not None and epoch < entry.epoch:
            raise InvalidProducerEpoch(
                f"marker epoch {epoch} of producer {producer_id} is older than the partition's {entry.epoch}"
            )

    # -- updates ---------------------------------------------------------------------------------------------

    def _entry(self, producer_id: int) -> ProducerEntry:
        entry = self.producers.get(producer_id)
        if entry is None:
            entry = self.producers[producer_id] = ProducerEntry(producer_id)
        return entry

    def on_batch(self, h: BatchHeader, now_ms: int) -> None:
        """Record an appended data batch (``h`` carries its assigned offsets)."""
        entry = self._entry(h.producer_id)
        entry.set_epoch(h.producer_epoch)
        if h.base_sequence >= 0:
            entry.batches.append(CachedBatch(h.base_sequence, last_sequence(h), h.base_offset, h.last_offset))
        entry.last_timestamp = now_ms
        if h.is_transactional and entry.txn_first_offset < 0:
            entry.txn_first_offset = h.base_offset
            self.ongoing[h.producer_id] = h.base_offset
        self.changes += 1

    def on_marker(
        self, producer_id: int, epoch: int, commit: bool, coordinator_epoch: int, offset: int, now_ms: int
    ) -> AbortedTxn | None:
        """Record an appended COMMIT or ABORT marker at ``offset``.

        Returns the aborted transaction it ends, if any."""
        entry = self._entry(producer_id)
        entry.set_epoch(epoch)
        entry.coordinator_epoch = coordinator_epoch
        entry.last_timestamp = now_ms
        self.changes += 1
        first = entry.txn_first_offset
        if first < 0:
            return None
        entry.txn_first_offset = -1
        self.ongoing.pop(producer_id, None)
        if commit:
            return None
        txn = AbortedTxn(producer_id, first, offset)
        self.aborted.append(txn)
        self._aborted_last.append(offset)
        return txn

    # -- queries ---------------------------------------------------------------------------------------------

    def first_unstable_offset(self) -> int | None:
        """The first offset of the oldest ongoing transaction (None: none is ongoing)."""
        return min(self.ongoing.values()) if self.ongoing else None

    def aborted_transactions(self, start: int, end: int) -> list[AbortedTxn]:
        """Aborted transactions overlapping offsets [start, end)."""
        i = bisect_left(self._aborted_last, start)
        return [t for t in self.aborted[i:] if t.first_offset < end]

    def describe(self) -> list[ProducerInfo]:
        return [
            ProducerInfo(
                e.producer_id, e.epoch, e.last_seq, e.last_timestamp, e.coordinator_epoch, e.txn_first_offset
            )
            for e in self.producers.values()
        ]

    # -- maintenance -----------------------------------------------------------------------------------------

    def on_log_start_offset(self, log_start_offset: int) -> None:
        """Forget aborted transactions wholly below the new log start offset."""
        i = bisect_left(self._aborted_last, log_start_offset)
        if i:
            del self.aborted[:i]
            del self._aborted_last[:i]
            self.changes += 1

    def expire(self, now_ms: int, max_age_ms: int) -> list[int]:
        """Drop producers idle for ``max_age_ms`` without an ongoing transaction; returns their ids."""
        gone = [
            pid
            for pid, e in self.producers.items()
            if e.txn_first_offset < 0 and now_ms - e.last_timestamp >= max_age_ms
        ]
        for pid in gone:
            del self.producers[pid]
        if gone:
            self.changes += 1
        return gone

    def clear(self) -> None:
        self.producers.clear()
        self.ongoing.clear()
        self.aborted.clear()
        self._aborted_last.clear()
        self.changes += 1

    # -- snapshots -------------------------------------------------------------------------------------------

    def to_json(self, offset: int) -> bytes:
        """The state as of log end offset ``offset``."""
        doc = {
            "version": SNAPSHOT_VERSION,
            "offset": offset,
            "producers": [
                [
                    e.producer_id,
                    e.epoch,
                    e.coordinator_epoch,
                    e.last_timestamp,
                    e.txn_first_offset,
                    [list(b) for b in e.batches],
                ]
                for e in self.producers.values()
            ],
            "aborted": [list(t) for t in self.aborted],
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> tuple[int, ProducerStateManager]:
        """(offset, state) from ``to_json`` output; raises ValueError when it cannot be read."""
        try:
            doc: Any = json.loads(data)
            if doc.get("version") != SNAPSHOT_VERSION:
                raise ValueError(f"unknown producer snapshot version {doc.get('version')!r}")
            state = cls()
            for pid, epoch, coord, ts, txn_first, batches in doc["producers"]:
                entry = ProducerEntry(int(pid), int(epoch), coordinator_epoch=int(coord))
                entry.last_timestamp = int(ts)
                entry.txn_first_offset = int(txn_first)
                for b in batches:
                    entry.batches.append(CachedBatch(*(int(x) for x in b)))
                state.producers[entry.producer_id] = entry
            ongoing = sorted((e.txn_first_offset, e.producer_id) for e in state.producers.values())
            state.ongoing = {pid: first for first, pid in ongoing if first >= 0}
            for pid, first, last in doc["aborted"]:
                state.aborted.append(AbortedTxn(int(pid), int(first), int(last)))
                state._aborted_last.append(int(last))
            return int(doc["offset"]), state
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"malformed producer snapshot: {e}") from None


def snapshot_name(offset: int) -> str:
    return f"{offset:020d}{SNAPSHOT_SUFFIX}"


def snapshot_offset(name: str) -> int | None:
    """The offset a snapshot file name stands for; None for other files."""
    if not name.endswith(SNAPSHOT_SUFFIX):
        return None
    stem = name[: -len(SNAPSHOT_SUFFIX)]
    return int(stem) if stem.isdigit() else None


def replay(
    state: ProducerStateManager,
    batches: Iterable[tuple[BatchHeader, bytes | None]],
    now_ms: int | None = None,
) -> None:
    """Apply appended batches to ``state``; control batches must come with their bytes. Producers are
    stamped with ``now_ms``, or when None (recovery) with each batch's max timestamp."""
    for h, data in batches:
        if h.producer_id < 0:
            continue
        if h.is_control:
            if data is None:
                continue
            try:
                marker = None
                for rec in iter_records(data, 0, h):
                    marker = parse_control_record(rec)
                    break
            except InvalidBatch:
                marker = None
            if marker is not None:
                commit, coordinator_epoch = marker
                ts = h.max_timestamp if now_ms is None else now_ms
                state.on_marker(h.producer_id, h.producer_epoch, commit, coordinator_epoch, h.base_offset, ts)
        else:
            state.on_batch(h, h.max_timestamp if now_ms is None else now_ms)
