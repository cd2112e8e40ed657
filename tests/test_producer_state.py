"""Per-partition producer state: sequences, duplicates, epochs, transactions, LSO, snapshots, recovery."""

from __future__ import annotations

from pathlib import Path

import pytest

from kafkite.log.memory import MemoryPartitionLog
from kafkite.log.partition import PartitionLog
from kafkite.log.producer_state import (
    AbortedTxn,
    InvalidProducerEpoch,
    InvalidTxnState,
    OutOfOrderSequence,
    ProducerStateManager,
    UnknownProducerId,
    last_sequence,
)
from kafkite.protocol.records import build_batch, read_header


def batch(pid: int, epoch: int, seq: int, n: int = 1, *, txn: bool = False, ts: int = 1000) -> bytearray:
    recs = [(None, b"v%d" % (seq + i), (), ts) for i in range(n)]
    return bytearray(
        build_batch(recs, producer_id=pid, producer_epoch=epoch, base_sequence=seq, transactional=txn)
    )


def test_sequences_duplicates_and_gaps() -> None:
    log = MemoryPartitionLog()
    a = log.append_sync(batch(7, 0, 0, 3), now_ms=1)
    b = log.append_sync(batch(7, 0, 3, 2), now_ms=1)
    assert (a.first_offset, b.first_offset) == (0, 3)
    dup = log.append_sync(batch(7, 0, 0, 3), now_ms=1)
    assert (dup.first_offset, dup.last_offset, dup.bytes) == (0, 2, 0)
    assert log.log_end_offset == 5
    with pytest.raises(OutOfOrderSequence):
        log.append_sync(batch(7, 0, 6), now_ms=1)
    with pytest.raises(OutOfOrderSequence):
        log.append_sync(batch(7, 0, 1, 2), now_ms=1)  # overlaps but is not a cached batch
    with pytest.raises(UnknownProducerId):
        log.append_sync(batch(8, 0, 4), now_ms=1)
    log.append_sync(batch(7, 0, 5), now_ms=1)
    assert log.log_end_offset == 6
    # plain batches are never checked
    log.append_sync(batch(-1, -1, -1), now_ms=1)
    log.append_sync(batch(-1, -1, -1), now_ms=1)


def test_only_the_last_five_batches_are_remembered() -> None:
    log = MemoryPartitionLog()
    for seq in range(7):
        log.append_sync(batch(1, 0, seq), now_ms=1)
    assert log.append_sync(batch(1, 0, 2), now_ms=1).first_offset == 2  # among the last five
    with pytest.raises(OutOfOrderSequence):
        log.append_sync(batch(1, 0, 1), now_ms=1)


def test_epochs() -> None:
    log = MemoryPartitionLog()
    log.append_sync(batch(1, 3, 0, 2), now_ms=1)
    with pytest.raises(InvalidProducerEpoch):
        log.append_sync(batch(1, 2, 2), now_ms=1)
    with pytest.raises(OutOfOrderSequence):
        log.append_sync(batch(1, 4, 5), now_ms=1)  # a new epoch starts at sequence 0
    log.append_sync(batch(1, 4, 0), now_ms=1)
    with pytest.raises(InvalidProducerEpoch):
        log.append_sync(batch(1, 3, 2), now_ms=1)


def test_sequence_wraps() -> None:
    h = read_header(batch(1, 0, 2**31 - 2, 3))
    assert last_sequence(h) == 0
    state = ProducerStateManager()
    log = MemoryPartitionLog()
    log.producers = state
    log.append_sync(batch(1, 0, 0), now_ms=1)
    state.producers[1].batches[-1] = state.producers[1].batches[-1]._replace(last_seq=2**31 - 1)
    log.append_sync(batch(1, 0, 0), now_ms=1)  # 0 follows INT32_MAX


def test_transactions_lso_and_aborted_index() -> None:
    log = MemoryPartitionLog()
    log.append_sync(batch(-1, -1, -1), now_ms=1)  # 0
    log.append_sync(batch(1, 0, 0, 2, txn=True), now_ms=1)  # 1-2
    log.append_sync(batch(2, 0, 0, 1, txn=True), now_ms=1)  # 3
    assert log.last_stable_offset == 1
    with pytest.raises(InvalidTxnState):
        log.append_sync(batch(1, 0, 2), now_ms=1)  # not transactional during the transaction
    assert log.write_txn_marker_sync(1, 0, commit=False, coordinator_epoch=0, now_ms=2) == 4
    assert log.last_stable_offset == 3
    assert log.write_txn_marker_sync(2, 0, commit=True, coordinator_epoch=0, now_ms=2) == 5
    assert log.last_stable_offset == log.high_watermark == 6
    assert log.aborted_transactions(0, 6) == [AbortedTxn(1, 1, 4)]
    assert log.aborted_transactions(5, 6) == []
    assert log.aborted_transactions(0, 1) == []
    # a marker bumping the epoch fences older batches
    log.write_txn_marker_sync(1, 1, commit=False, coordinator_epoch=0, now_ms=2)
    with pytest.raises(InvalidProducerEpoch):
        log.append_sync(batch(1, 0, 2, txn=True), now_ms=1)
    log.append_sync(batch(1, 1, 0, txn=True), now_ms=1)
    info = {p.producer_id: p for p in log.producers.describe()}
    assert info[1].current_txn_start_offset == 7 and info[1].last_sequence == 0
    assert info[2].current_txn_start_offset == -1


def test_expiry() -> None:
    log = MemoryPartitionLog()
    log.append_sync(batch(1, 0, 0), now_ms=100)
    log.append_sync(batch(2, 0, 0, txn=True), now_ms=100)
    assert log.expire_producers(1000, 500) == 1  # the one with an ongoing transaction stays
    with pytest.raises(UnknownProducerId):
        log.append_sync(batch(1, 0, 1), now_ms=1000)
    log.append_sync(batch(1, 1, 0), now_ms=1000)


def test_snapshot_round_trip() -> None:
    log = MemoryPartitionLog()
    log.append_sync(batch(1, 0, 0, 2, txn=True), now_ms=5)
    log.write_txn_marker_sync(1, 0, commit=False, coordinator_epoch=3, now_ms=6)
    log.append_sync(batch(1, 0, 2, txn=True), now_ms=7)
    log.append_sync(batch(9, 2, 0, 4), now_ms=8)
    offset, state = ProducerStateManager.from_json(log.producers.to_json(log.log_end_offset))
    assert offset == log.log_end_offset
    assert state.describe() == log.producers.describe()
    assert state.aborted == log.producers.aborted
    assert state.first_unstable_offset() == 3
    with pytest.raises(ValueError):
        ProducerStateManager.from_json(b'{"version": 1}')


def _fill(log: PartitionLog) -> None:
    log.append_sync(batch(1, 0, 0, 3), now_ms=1)
    log.append_sync(batch(2, 0, 0, 2, txn=True), now_ms=1)
    log.write_txn_marker_sync(2, 0, commit=False, coordinator_epoch=0, now_ms=1)
    log.append_sync(batch(2, 0, 2, 1, txn=True), now_ms=1)
    log.append_sync(batch(1, 0, 3, 3), now_ms=1)


def _check_recovered(log: PartitionLog) -> None:
    assert log.append_sync(batch(1, 0, 3, 3), now_ms=2).bytes == 0  # still a duplicate
    assert log.last_stable_offset == 6
    assert log.aborted_transactions(0, log.log_end_offset) == [AbortedTxn(2, 3, 5)]
    log.append_sync(batch(1, 0, 6), now_ms=2)


def test_clean_reopen_uses_the_snapshot(tmp_path: Path) -> None:
    log = PartitionLog(tmp_path)
    _fill(log)
    log.close()
    assert sorted(p.name for p in tmp_path.glob("*.snapshot")) == [f"{10:020d}.snapshot"]
    _check_recovered(PartitionLog(tmp_path))


def test_crash_rebuilds_from_headers(tmp_path: Path) -> None:
    log = PartitionLog(tmp_path)
    log.append_sync(batch(1, 0, 0, 1), now_ms=1)
    log.roll()  # snapshot at the roll
    assert list(tmp_path.glob("*.snapshot"))
    log = PartitionLog(tmp_path)  # (no close: a crash)
    log.truncate_to(0)
    _fill(log)
    crashed = PartitionLog(tmp_path)
    _check_recovered(crashed)


def test_snapshot_beyond_the_log_is_ignored(tmp_path: Path) -> None:
    log = PartitionLog(tmp_path)
    _fill(log)
    log.close()
    (tmp_path / f"{50:020d}.snapshot").write_bytes(b'{"garbage"')
    (tmp_path / f"{9:020d}.snapshot").write_bytes(b"torn")
    reopened = PartitionLog(tmp_path)
    assert not (tmp_path / f"{50:020d}.snapshot").exists()
    _check_recovered(reopened)


def test_truncation_rebuilds_state() -> None:
    log = MemoryPartitionLog()
    log.append_sync(batch(1, 0, 0, 2), now_ms=1)
    log.append_sync(batch(1, 0, 2, 2, txn=True), now_ms=1)
    assert log.last_stable_offset == 2
    log.truncate_to(2)
    assert log.last_stable_offset == 2 == log.log_end_offset
    log.append_sync(batch(1, 0, 2, 2), now_ms=1)  # the truncated sequence numbers may come again


def test_retention_drops_old_aborted_transactions() -> None:
    log = MemoryPartitionLog()
    log.append_sync(batch(1, 0, 0, txn=True), now_ms=1)
    log.write_txn_marker_sync(1, 0, commit=False, coordinator_epoch=0, now_ms=1)
    log.append_sync(batch(-1, -1, -1), now_ms=1)
    log.delete_records_before(2)
    assert log.aborted_transactions(0, 10) == []
    log.append_sync(batch(1, 0, 1), now_ms=1)  # producers outlive their batches
