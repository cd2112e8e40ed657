"""Partition logs: offsets, reads, rolls, timestamps, retention, DeleteRecords, flush and crash recovery.

Most tests run against both engines (file and memory) to keep them in step.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kafkite.log import (
    FileRange,
    LogClosed,
    LogConfig,
    MemoryPartitionLog,
    OffsetOutOfRange,
    PartitionLog,
    RecordBatchTooLarge,
    SegmentedLog,
)
from kafkite.protocol.records import (
    COMPRESSION_LZ4,
    InvalidBatch,
    build_batch,
    check_crc,
    iter_headers,
    iter_records,
    read_header,
)

SMALL = LogConfig(segment_bytes=1024, index_interval_bytes=128)


def batch(n: int = 1, ts: int = 1000, *, value: bytes = b"value", step: int = 0, **kw: int) -> bytearray:
    return bytearray(build_batch([(None, value, [], ts + i * step) for i in range(n)], **kw))  # type: ignore[arg-type]


class Clock:
    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class Engine:
    def __init__(self, kind: str, directory: Path) -> None:
        self.kind = kind
        self.directory = directory

    def open(self, config: LogConfig = SMALL, clock: Callable[[], int] | None = None) -> SegmentedLog:
        if self.kind == "file":
            return PartitionLog(self.directory / "topic-0", config, clock=clock)
        return MemoryPartitionLog(config, clock=clock)


@pytest.fixture(params=["file", "memory"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    return Engine(request.param, tmp_path)


def offsets_in(data: bytes) -> list[tuple[int, int]]:
    return [(h.base_offset, h.last_offset) for _, h in iter_headers(data)]


def fill(log: SegmentedLog, batches: int, *, per_batch: int = 3, ts: int = 1000, now: int = 1) -> None:
    for i in range(batches):
        log.append_sync(batch(per_batch, ts + i * 10, value=b"v" * (20 + i % 5)), now_ms=now)


# -- append --------------------------------------------------------------------------------------------------


def test_append_assigns_consecutive_offsets(engine: Engine) -> None:
    log = engine.open()
    info = log.append_sync(batch(3), now_ms=5)
    assert (info.first_offset, info.last_offset, info.log_append_time, info.log_start_offset) == (0, 2, -1, 0)
    two = batch(2) + batch(4)
    info = log.append_sync(two, now_ms=5)
    assert (info.first_offset, info.last_offset, info.bytes) == (3, 8, len(two))
    assert offsets_in(two) == [(3, 4), (5, 8)], "base offsets are rewritten in the caller's buffer"
    assert log.log_end_offset == log.high_watermark == 9
    data = log.read_sync(0, 1 << 20).to_bytes()
    assert offsets_in(data) == [(0, 2), (3, 4), (5, 8)]
    for pos, h in iter_headers(data):
        assert check_crc(data, pos, h)
    log.close()


def test_append_rejects_bad_input(engine: Engine) -> None:
    log = engine.open(LogConfig(max_message_bytes=200))
    with pytest.raises(InvalidBatch):
        log.append_sync(bytearray(), now_ms=1)
    with pytest.raises(InvalidBatch):
        log.append_sync(batch(1) + b"\x00\x00\x00", now_ms=1)
    with pytest.raises(RecordBatchTooLarge):
        log.append_sync(batch(1, value=b"x" * 300), now_ms=1)
    assert log.log_end_offset == 0 and log.size_bytes == 0
    log.close()


def test_log_append_time(engine: Engine) -> None:
    log = engine.open(LogConfig(message_timestamp_type="LogAppendTime"))
    buf = batch(3, ts=10, step=1)
    info = log.append_sync(buf, now_ms=123_456)
    assert info.log_append_time == 123_456
    data = log.read_sync(0, 1 << 20).to_bytes()
    h = read_header(data)
    assert h.log_append_time and h.max_timestamp == 123_456 and check_crc(data, 0, h)
    assert [r.timestamp for r in iter_records(data)] == [123_456] * 3
    assert log.offset_for_timestamp(123_456) == (0, 123_456)
    log.close()


def test_rolls_by_size_and_keeps_reads_contiguous(engine: Engine) -> None:
    log = engine.open()
    fill(log, 60)
    segs = log.segments
    assert len(segs) > 4
    assert all(s.size <= SMALL.segment_bytes for s in segs)
    assert [s.base_offset for s in segs[1:]] == [s.next_offset for s in segs[:-1]]
    data = log.read_sync(0, 1 << 30).to_bytes()
    assert offsets_in(data) == [(3 * i, 3 * i + 2) for i in range(60)]
    assert log.size_bytes == len(data)
    log.close()


def test_oversized_batch_gets_its_own_segment(engine: Engine) -> None:
    log = engine.open(LogConfig(segment_bytes=300))
    log.append_sync(batch(1), now_ms=1)
    log.append_sync(batch(1, value=b"x" * 1000), now_ms=1)
    log.append_sync(batch(1), now_ms=1)
    assert [s.base_offset for s in log.segments] == [0, 1, 2]
    log.close()


def test_rolls_by_age(engine: Engine) -> None:
    clock = Clock(1000)
    log = engine.open(LogConfig(segment_ms=100), clock=clock)
    log.append_sync(batch(1, ts=1), now_ms=1000)
    log.append_sync(batch(1, ts=1), now_ms=1099)
    assert len(log.segments) == 1
    log.append_sync(batch(1, ts=1), now_ms=1100)
    assert [s.base_offset for s in log.segments] == [0, 2]
    log.close()


def test_rolls_when_the_index_is_full(engine: Engine) -> None:
    log = engine.open(LogConfig(index_interval_bytes=0, segment_index_bytes=8 * 4))
    for _ in range(12):
        log.append_sync(batch(1), now_ms=1)
    assert all(len(s.offset_index) <= 4 for s in log.segments)
    assert len(log.segments) >= 2
    assert offsets_in(log.read_sync(0, 1 << 20).to_bytes()) == [(i, i) for i in range(12)]
    log.close()


# -- read ----------------------------------------------------------------------------------------------------


def test_read_limits(engine: Engine) -> None:
    log = engine.open()
    fill(log, 40)
    one = read_header(log.read_sync(0, 1 << 20).to_bytes()).size
    # starts with the batch holding the offset
    r = log.read_sync(7, 1 << 20)
    assert offsets_in(r.to_bytes())[0] == (6, 8)
    assert (r.high_watermark, r.log_start_offset) == (120, 0)
    # max_bytes: whole batches only
    r = log.read_sync(0, 3 * one + one // 2)
    assert r.size == sum(len(c) if isinstance(c, bytes) else c.size for c in r.chunks)
    assert offsets_in(r.to_bytes()) == [(0, 2), (3, 5), (6, 8)]
    # min_one returns one whole batch even if it is larger than max_bytes
    assert offsets_in(log.read_sync(3, 1).to_bytes()) == [(3, 5)]
    assert log.read_sync(3, 1, min_one=False).size == 0
    # max_offset: no batch holding an offset >= max_offset
    assert offsets_in(log.read_sync(0, 1 << 20, max_offset=9).to_bytes()) == [(0, 2), (3, 5), (6, 8)]
    assert offsets_in(log.read_sync(0, 1 << 20, max_offset=10).to_bytes()) == [(0, 2), (3, 5), (6, 8)]
    assert log.read_sync(9, 1 << 20, max_offset=9).size == 0
    # the end of the log
    r = log.read_sync(120, 100)
    assert r.size == 0 and r.chunks == []
    with pytest.raises(OffsetOutOfRange):
        log.read_sync(121, 100)
    with pytest.raises(OffsetOutOfRange):
        log.read_sync(-1, 100)
    log.close()


def test_read_every_offset_and_size(engine: Engine) -> None:
    log = engine.open(LogConfig(segment_bytes=700, index_interval_bytes=64))
    fill(log, 30, per_batch=2)
    everything = log.read_sync(0, 1 << 20).to_bytes()
    sizes = [h.size for _, h in iter_headers(everything)]
    for offset in range(0, 60, 3):
        for max_bytes in (1, 100, 250, 1000, 5000):
            data = log.read_sync(offset, max_bytes).to_bytes()
            got = offsets_in(data)
            first = offset // 2
            assert got[0] == (2 * first, 2 * first + 1)
            assert len(data) <= max(max_bytes, sizes[first])
            assert got == [(2 * i, 2 * i + 1) for i in range(first, first + len(got))]
            if first + len(got) < len(sizes):
                assert len(data) + sizes[first + len(got)] > max_bytes, "read stopped early"
    log.close()


def test_file_reads_are_file_ranges(tmp_path: Path) -> None:
    log = PartitionLog(tmp_path / "t-0", SMALL)
    fill(log, 20)
    r = log.read_sync(0, 1 << 20)
    assert all(isinstance(c, FileRange) for c in r.chunks)
    assert len(r.chunks) == len(log.segments)
    c = r.chunks[0]
    assert isinstance(c, FileRange)
    assert os.pread(c.file.fileno(), c.size, c.position) == c.read()
    log.close()


# -- timestamps ----------------------------------------------------------------------------------------------


def test_offset_for_timestamp_finds_the_exact_record(engine: Engine) -> None:
    log = engine.open()
    # 30 batches of 4 records, timestamps 1000, 1001, ... one per record
    for i in range(30):
        log.append_sync(batch(4, ts=1000 + 4 * i, step=1), now_ms=1)
    assert log.offset_for_timestamp(0) == (0, 1000)
    assert log.offset_for_timestamp(1000) == (0, 1000)
    assert log.offset_for_timestamp(1006) == (6, 1006)
    assert log.offset_for_timestamp(1119) == (119, 1119)
    assert log.offset_for_timestamp(1120) is None
    assert log.max_timestamp() == (1119, 119)
    assert log.first_timestamp() == 1000
    log.delete_records_before(50)
    assert log.offset_for_timestamp(1000) == (50, 1050)
    assert log.first_timestamp() == 1050
    log.close()


def test_timestamps_in_compressed_batches(engine: Engine) -> None:
    log = engine.open()
    log.append_sync(batch(5, ts=100, step=10, compression=COMPRESSION_LZ4), now_ms=1)
    log.append_sync(batch(5, ts=50, step=1), now_ms=1)
    assert log.offset_for_timestamp(125) == (3, 130)
    assert log.max_timestamp() == (140, 4)
    log.close()


def test_timestamps_out_of_order(engine: Engine) -> None:
    log = engine.open()
    for ts in (500, 100, 900, 300, 900, 950):
        log.append_sync(batch(1, ts=ts), now_ms=1)
    assert log.offset_for_timestamp(400) == (0, 500)
    assert log.offset_for_timestamp(600) == (2, 900)
    assert log.max_timestamp() == (950, 5)
    empty = engine.open() if engine.kind == "memory" else MemoryPartitionLog()
    assert empty.max_timestamp() == (-1, -1)
    assert empty.offset_for_timestamp(0) is None
    assert empty.first_timestamp() == -1
    log.close()


# -- deletion and retention ----------------------------------------------------------------------------------


def test_delete_records(engine: Engine) -> None:
    log = engine.open()
    fill(log, 40)
    segs = log.segments
    target = segs[2].base_offset + 1
    assert log.delete_records_before(target) == target
    assert log.log_start_offset == target
    assert log.segments[0].base_offset == segs[2].base_offset
    with pytest.raises(OffsetOutOfRange):
        log.read_sync(target - 1, 100)
    r = log.read_sync(target, 100)
    assert r.log_start_offset == target
    assert offsets_in(r.to_bytes())[0][0] <= target <= offsets_in(r.to_bytes())[0][1]
    assert log.delete_records_before(5) == target, "never moves backwards"
    with pytest.raises(OffsetOutOfRange):
        log.delete_records_before(121)
    assert log.delete_records_before(-1) == 120
    assert log.read_sync(120, 100).size == 0
    info = log.append_sync(batch(1), now_ms=1)
    assert info.first_offset == 120 and info.log_start_offset == 120
    log.close()


def test_delete_records_survives_restart(tmp_path: Path) -> None:
    log = PartitionLog(tmp_path / "t-0", SMALL)
    fill(log, 40)
    log.delete_records_before(50)
    log.close()
    again = PartitionLog(tmp_path / "t-0", SMALL)
    assert again.log_start_offset == 50 and again.log_end_offset == 120
    again.close()


def test_retention_by_time(engine: Engine) -> None:
    clock = Clock(10_000)
    log = engine.open(LogConfig(segment_bytes=1024, retention_ms=1000), clock=clock)
    for i in range(40):  # timestamps 0, 100, ..., 3900
        log.append_sync(batch(1, ts=i * 100, value=b"x" * 100), now_ms=10_000)
    segs = log.segments
    now = 3000
    expected = [s for s in segs if now - s.max_timestamp > 1000 and s is not segs[-1]]
    deleted = log.apply_retention(now)
    assert deleted == len(expected) > 0
    assert log.log_start_offset == log.segments[0].base_offset == segs[deleted].base_offset
    assert all(now - s.max_timestamp <= 1000 for s in log.segments[:1])
    # everything expired: the active segment is rolled and deleted too, the end offset stays
    deleted = log.apply_retention(10**9)
    assert deleted > 0
    assert log.size_bytes == 0 and log.log_start_offset == log.log_end_offset == 40
    assert len(log.segments) == 1
    assert log.apply_retention(10**9) == 0, "an empty active segment is never deleted"
    assert log.append_sync(batch(1), now_ms=1).first_offset == 40
    log.close()


def test_retention_unlimited_and_compact(engine: Engine) -> None:
    log = engine.open(LogConfig(segment_bytes=1024, retention_ms=-1))
    fill(log, 30, ts=0)
    assert log.apply_retention(10**12) == 0
    log.reconfigure(LogConfig(segment_bytes=1024, retention_ms=1, cleanup_policy=("compact",)))
    assert log.apply_retention(10**12) == 0
    log.reconfigure(LogConfig(segment_bytes=1024, retention_ms=1))
    assert log.apply_retention(10**12) > 0
    log.close()


def test_retention_by_size(engine: Engine) -> None:
    log = engine.open(LogConfig(segment_bytes=1024, retention_bytes=2500, retention_ms=-1))
    fill(log, 60)
    before = log.size_bytes
    assert before > 2500
    deleted = log.apply_retention(1)
    assert deleted > 0
    # Kafka's rule: delete whole segments, oldest first, only while the rest still holds retention.bytes
    assert log.size_bytes >= 2500
    assert log.size_bytes - log.segments[0].size < 2500
    assert log.log_start_offset == log.segments[0].base_offset
    assert log.log_end_offset == 180
    log.close()


def test_truncate_to(engine: Engine) -> None:
    log = engine.open()
    fill(log, 40)
    log.truncate_to(200)
    assert log.log_end_offset == 120
    log.truncate_to(61)  # inside batch 60..62: the whole batch goes
    assert log.log_end_offset == 60
    assert offsets_in(log.read_sync(0, 1 << 20).to_bytes())[-1] == (57, 59)
    assert log.append_sync(batch(1), now_ms=1).first_offset == 60
    log.delete_records_before(30)
    log.truncate_to(10)  # below the log start: start again at 10
    assert (log.log_start_offset, log.log_end_offset, log.size_bytes) == (10, 10, 0)
    assert log.append_sync(batch(2), now_ms=1).first_offset == 10
    log.close()


@pytest.mark.parametrize("below_start", [False, True])
def test_truncate_to_the_first_segment_base_then_reopen(tmp_path: Path, below_start: bool) -> None:
    log = PartitionLog(tmp_path / "t-0", SMALL)
    fill(log, 40)
    if below_start:
        log.delete_records_before(10)
    log.truncate_to(0)
    assert (log.log_start_offset, log.log_end_offset) == (0, 0)
    fill(log, 3)
    log.close()
    again = PartitionLog(tmp_path / "t-0", SMALL)
    assert (again.log_start_offset, again.log_end_offset) == (0, 9)
    assert offsets_in(again.read_sync(0, 1 << 20).to_bytes()) == [(0, 2), (3, 5), (6, 8)]
    again.close()


def test_deleted_segments_stay_readable_until_the_delay(tmp_path: Path) -> None:
    clock = Clock(0)
    log = PartitionLog(tmp_path / "t-0", LogConfig(segment_bytes=1024, file_delete_delay_ms=500), clock=clock)
    fill(log, 30)
    r = log.read_sync(0, 100)
    first = log.segments[0]
    log.delete_records_before(log.segments[1].base_offset)
    assert not (tmp_path / "t-0" / "00000000000000000000.log").exists()
    chunk = r.chunks[0]
    assert isinstance(chunk, FileRange)
    assert offsets_in(chunk.read()) == [(0, 2)], "the unlinked file is still readable"
    log.apply_retention(499)
    assert not chunk.file.closed  # type: ignore[attr-defined]
    assert not first.store.closed  # type: ignore[attr-defined]
    log.apply_retention(500)
    assert first.store.closed  # type: ignore[attr-defined]
    assert offsets_in(chunk.read()) == [(0, 2)], "a range still held keeps its file open"
    fd = chunk.file.fileno()
    held = os.readlink(f"/proc/self/fd/{fd}")
    del r, chunk
    gone = not os.path.exists(f"/proc/self/fd/{fd}") or os.readlink(f"/proc/self/fd/{fd}") != held
    assert gone, "the descriptor goes with the last range"
    log.close()


# -- flush ---------------------------------------------------------------------------------------------------


def test_flush_messages_and_unflushed_count(engine: Engine) -> None:
    clock = Clock(0)
    log = engine.open(LogConfig(flush_messages=10, flush_ms=100), clock=clock)
    log.append_sync(batch(4), now_ms=0)
    assert log.unflushed_messages == 4
    assert not log.flush_due(99) and log.flush_due(100)
    log.append_sync(batch(5), now_ms=0)
    assert log.unflushed_messages == 9
    log.append_sync(batch(1), now_ms=0)
    assert log.unflushed_messages == 0, "reaching flush.messages flushes"
    log.append_sync(batch(3), now_ms=0)
    log.flush()
    assert log.unflushed_messages == 0
    log.close()


def test_flush_in_a_thread_while_appending(tmp_path: Path) -> None:
    log = PartitionLog(tmp_path / "t-0", LogConfig(segment_bytes=4096))
    stop = threading.Event()
    errors: list[BaseException] = []

    def flusher() -> None:
        try:
            while not stop.is_set():
                log.flush()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=flusher)
    t.start()
    try:
        for _ in range(400):
            log.append_sync(batch(2, value=b"y" * 50), now_ms=1)
    finally:
        stop.set()
        t.join()
    assert not errors
    log.flush()
    assert log.unflushed_messages == 0 and log.recovery_point == 800
    log.close()


def test_closed_log_refuses_work(engine: Engine) -> None:
    log = engine.open()
    log.close()
    with pytest.raises(LogClosed):
        log.append_sync(batch(1), now_ms=1)
    with pytest.raises(LogClosed):
        log.read_sync(0, 10)
    log.close()


# -- recovery ------------------------------------------------------------------------------------------------


def _crash(log: PartitionLog) -> None:
    """Drop the log without a clean close (no marker)."""
    log._close_all()
    log._closed = True


def test_clean_reopen_skips_recovery(tmp_path: Path) -> None:
    log = PartitionLog(tmp_path / "t-0", SMALL)
    fill(log, 40)
    log.close()
    assert (tmp_path / "t-0" / PartitionLog.CLEAN_SHUTDOWN_FILE).exists()
    again = PartitionLog(tmp_path / "t-0", SMALL)
    assert again.clean_shutdown and again.recovered_segments == 0
    assert not (tmp_path / "t-0" / PartitionLog.CLEAN_SHUTDOWN_FILE).exists()
    assert again.log_end_offset == 120 and again.unflushed_messages == 0
    assert offsets_in(again.read_sync(0, 1 << 20).to_bytes()) == [(3 * i, 3 * i + 2) for i in range(40)]
    assert again.append_sync(batch(1), now_ms=1).first_offset == 120
    again.close()


@pytest.mark.parametrize("tail", [b"\x00" * 7, b"garbage!" * 40, "half"])
def test_recovery_truncates_a_torn_tail(tmp_path: Path, tail: bytes | str) -> None:
    log = PartitionLog(tmp_path / "t-0", SMALL)
    fill(log, 40)
    log.flush()
    active = log.segments[-1]
    _crash(log)
    path = tmp_path / "t-0" / f"{active.base_offset:020d}.log"
    extra = bytes(batch(5)) if tail == "half" else tail
    assert isinstance(extra, bytes)
    with open(path, "ab") as f:
        f.write(extra[: len(extra) // 2] if tail == "half" else extra)
    again = PartitionLog(tmp_path / "t-0", SMALL)
    assert not again.clean_shutdown
    assert again.recovered_bytes > 0
    assert again.log_end_offset == 120
    assert offsets_in(again.read_sync(0, 1 << 20).to_bytes()) == [(3 * i, 3 * i + 2) for i in range(40)]
    assert again.append_sync(batch(1), now_ms=1).first_offset == 120
    again.close()


def test_recovery_of_a_corrupt_batch_drops_it_and_the_rest(tmp_path: Path) -> None:
    log = PartitionLog(tmp_path / "t-0", SMALL)
    fill(log, 40)
    segs = log.segments
    _crash(log)
    # flip a byte in the record data of the third batch of the second-to-last segment
    victim = segs[-2]
    path = tmp_path / "t-0" / f"{victim.base_offset:020d}.log"
    data = bytearray(path.read_bytes())
    positions = [p for p, _ in iter_headers(data)]
    data[positions[2] + 70] ^= 0x55
    path.write_bytes(bytes(data))
    again = PartitionLog(tmp_path / "t-0", SMALL)
    expected_end = victim.base_offset + 6
    assert again.log_end_offset == expected_end
    assert again.segments[-1].base_offset == victim.base_offset
    assert not (tmp_path / "t-0" / f"{segs[-1].base_offset:020d}.log").exists()
    assert offsets_in(again.read_sync(0, 1 << 20).to_bytes())[-1] == (expected_end - 3, expected_end - 1)
    again.close()


def test_recovery_point_limits_what_is_validated(tmp_path: Path) -> None:
    log = PartitionLog(tmp_path / "t-0", SMALL)
    fill(log, 40)
    log.flush()
    fill(log, 10)
    n = len(log.segments)
    _crash(log)
    again = PartitionLog(tmp_path / "t-0", SMALL)
    assert 1 <= again.recovered_segments < n
    assert again.log_end_offset == 150
    assert again.recovery_point == 120
    again.close()


def test_rebuilds_a_deleted_index(tmp_path: Path) -> None:
    log = PartitionLog(tmp_path / "t-0", LogConfig(segment_bytes=4096, index_interval_bytes=100))
    fill(log, 60)
    first = log.segments[0]
    keys, values = list(first.offset_index.keys), list(first.offset_index.values)
    assert keys
    log.close()
    (tmp_path / "t-0" / "00000000000000000000.index").unlink()
    again = PartitionLog(tmp_path / "t-0", LogConfig(segment_bytes=4096, index_interval_bytes=100))
    assert again.recovered_segments == 1
    seg = again.segments[0]
    assert (seg.offset_index.keys, seg.offset_index.values) == (keys, values)
    assert (tmp_path / "t-0" / "00000000000000000000.index").stat().st_size == 8 * len(keys)
    assert offsets_in(again.read_sync(30, 100).to_bytes())[0] == (30, 32)
    again.close()


def test_log_start_beyond_a_recovered_end(tmp_path: Path) -> None:
    log = PartitionLog(tmp_path / "t-0", SMALL)
    fill(log, 10)
    log.delete_records_before(30)
    active = log.segments[-1]
    _crash(log)
    path = tmp_path / "t-0" / f"{active.base_offset:020d}.log"
    os.truncate(path, path.stat().st_size - 10)  # the last batch was never on disk
    again = PartitionLog(tmp_path / "t-0", SMALL)
    assert again.log_start_offset == again.log_end_offset == 30
    assert again.append_sync(batch(1), now_ms=1).first_offset == 30
    again.close()


# -- property test -------------------------------------------------------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("append"), st.lists(st.integers(1, 5), min_size=1, max_size=3), st.integers(0, 200)
        ),
        st.tuples(st.just("read"), st.floats(0, 1), st.integers(0, 2000)),
        st.tuples(st.just("delete"), st.floats(0, 1), st.just(0)),
        st.tuples(st.just("retain"), st.integers(0, 4000), st.just(0)),
        st.tuples(st.just("reopen"), st.just(0), st.just(0)),
        st.tuples(st.just("crash"), st.binary(max_size=80), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["file", "memory"]), script=ops)
def test_append_read_model(kind: str, script: list[tuple[str, object, int]]) -> None:
    """Random appends, reads, DeleteRecords, size retention and reopens against a list of batches."""
    config = LogConfig(segment_bytes=600, index_interval_bytes=90, retention_ms=-1)
    with tempfile.TemporaryDirectory() as d:

        def open_log() -> SegmentedLog:
            return PartitionLog(Path(d) / "p-0", config) if kind == "file" else MemoryPartitionLog(config)

        log = open_log()
        model: list[tuple[int, int, bytes]] = []  # base, last, bytes
        start = 0
        end = 0
        for op, a, b in script:
            if op == "append":
                assert isinstance(a, list)
                buf = bytearray().join(batch(n, ts=b, value=b"z" * (b % 50)) for n in a)
                info = log.append_sync(buf, now_ms=1)
                assert info.first_offset == end
                for _, h in iter_headers(buf):
                    model.append((h.base_offset, h.last_offset, bytes(buf[_ : _ + h.size])))
                end = info.last_offset + 1
            elif op == "read":
                assert isinstance(a, float)
                offset = start + int(a * (end - start))
                got = log.read_sync(offset, b).to_bytes()
                live = [m for m in model if m[1] >= offset]
                if offset == end:
                    assert got == b""
                    continue
                expected = bytearray(live[0][2])
                for m in live[1:]:
                    if len(expected) + len(m[2]) > b:
                        break
                    expected += m[2]
                assert got == bytes(expected)
            elif op == "delete":
                assert isinstance(a, float)
                target = start + int(a * (end - start))
                start = max(start, target)
                assert log.delete_records_before(target) == start
            elif op == "retain":
                assert isinstance(a, int)
                log.reconfigure(LogConfig(segment_bytes=600, index_interval_bytes=90, retention_bytes=a))
                log.apply_retention(1)
                start = log.log_start_offset
                config = log.config
            elif op == "reopen" and kind == "file":
                log.close()
                log = open_log()
                log.reconfigure(config)
            elif op == "crash" and isinstance(log, PartitionLog):
                # no clean shutdown, and maybe a torn write at the end of the active segment
                assert isinstance(a, bytes)
                active = log.segments[-1]
                _crash(log)
                with open(Path(d) / "p-0" / f"{active.base_offset:020d}.log", "ab") as f:
                    f.write(a)
                log = open_log()
                log.reconfigure(config)
            assert (log.log_start_offset, log.log_end_offset) == (start, end)
            assert log.size_bytes == sum(s.size for s in log.segments)
        log.close()
