"""The log cleaner: compaction of partition logs (file and memory engines) with a fake clock."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from kafkite.log import LogConfig, MemoryPartitionLog, PartitionLog, SegmentedLog
from kafkite.log.engine import FileStorage, MemoryStorage
from kafkite.log.producer_state import OutOfOrderSequence
from kafkite.protocol.records import (
    COMPRESSION_GZIP,
    COMPRESSION_LZ4,
    COMPRESSION_NONE,
    COMPRESSION_SNAPPY,
    COMPRESSION_ZSTD,
    BatchHeader,
    build_batch,
    check_crc,
    iter_headers,
    iter_records,
    validate_batch,
)

NOW = 10_000_000
COMPACT = LogConfig(
    cleanup_policy=("compact",),
    segment_bytes=600,
    index_interval_bytes=100,
    min_cleanable_dirty_ratio=0.01,
    delete_retention_ms=60_000,
    file_delete_delay_ms=0,
)

KV = tuple[bytes | None, bytes | None]


class Clock:
    def __init__(self, now: int = NOW) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def batch(records: Sequence[KV], ts: int = NOW, **kw: int) -> bytearray:
    return bytearray(build_batch([(k, v, [], ts + i) for i, (k, v) in enumerate(records)], **kw))  # type: ignore[arg-type]


@pytest.fixture(params=["file", "memory"])
def open_log(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., SegmentedLog]:
    def make(config: LogConfig = COMPACT, clock: Clock | None = None) -> SegmentedLog:
        if request.param == "file":
            return PartitionLog(tmp_path / "t-0", config, clock=clock or Clock())
        return MemoryPartitionLog(config, clock=clock or Clock())

    return make


def open_file(tmp_path: Path, config: LogConfig = COMPACT, clock: Clock | None = None) -> PartitionLog:
    return PartitionLog(tmp_path / "t-0", config, clock=clock or Clock())


def all_batches(log: SegmentedLog) -> list[tuple[BatchHeader, bytes]]:
    data = log.read_sync(log.log_start_offset, 1 << 30).to_bytes()
    out = []
    for pos, h in iter_headers(data):
        raw = data[pos : pos + h.size]
        assert check_crc(raw, 0, h), "CRC must be valid"
        validate_batch(raw, producer=False, deep=True)
        out.append((h, raw))
    return out


def records_of(log: SegmentedLog) -> list[tuple[int, bytes | None, bytes | None]]:
    return [
        (r.offset, r.key, r.value)
        for h, raw in all_batches(log)
        if not h.is_control
        for r in iter_records(raw, 0, h)
    ]


def fill(log: SegmentedLog, n: int, keys: int = 5, *, ts: int = NOW) -> dict[bytes, int]:
    """``n`` single-record batches cycling over ``keys`` keys; returns key -> latest offset."""
    latest: dict[bytes, int] = {}
    for i in range(n):
        key = b"k%d" % (i % keys)
        info = log.append_sync(batch([(key, b"v%d-" % i + b"x" * 40)], ts=ts), now_ms=ts)
        latest[key] = info.first_offset
    return latest


def test_latest_value_per_key_kept_with_original_offsets(open_log: Callable[..., SegmentedLog]) -> None:
    log = open_log()
    fill(log, 60)
    before = records_of(log)
    active_base = log.segments[-1].base_offset
    leo = log.log_end_offset
    stats = log.compact(NOW)
    assert stats is not None and stats.records_removed > 0
    after = records_of(log)
    assert log.log_end_offset == leo
    # every surviving record is one of the originals, at its original offset
    assert set(after) <= set(before)
    cleaned = [r for r in after if r[0] < active_base]
    keys = [k for _, k, _ in cleaned]
    assert len(keys) == len(set(keys))
    # a key kept below the active segment is one that is not written again later
    latest = {k: o for o, k, _ in before}
    assert all(
        latest[k] == o or any(k == k2 for o2, k2, _ in before if o2 >= active_base) for o, k, _ in cleaned
    )
    # the active segment is untouched
    assert [r for r in after if r[0] >= active_base] == [r for r in before if r[0] >= active_base]
    # the latest value of every key is still there
    assert {k: o for o, k, _ in after}.items() == latest.items()
    assert log.cleaner_checkpoint == active_base
    # nothing dirty: a second pass does nothing
    assert log.compact(NOW) is None


@pytest.mark.parametrize(
    "codec", [COMPRESSION_NONE, COMPRESSION_GZIP, COMPRESSION_SNAPPY, COMPRESSION_LZ4, COMPRESSION_ZSTD]
)
def test_partially_retained_batch_rewritten_in_its_codec(tmp_path: Path, codec: int) -> None:
    log = open_file(tmp_path)
    first = batch(
        [(b"a", b"1"), (b"b", b"1"), (b"a", b"2"), (b"c", b"1"), (b"b", b"2")],
        compression=codec,
        producer_id=7,
        producer_epoch=3,
        base_sequence=0,
    )
    log.append_sync(first, now_ms=NOW)
    log.append_sync(batch([(b"c", b"2"), (b"d", b"1")], compression=codec), now_ms=NOW)
    log.roll()
    log.append_sync(batch([(b"z", b"1")]), now_ms=NOW)
    assert log.compact(NOW) is not None
    got = all_batches(log)
    h0, raw0 = got[0]
    assert (h0.base_offset, h0.last_offset_delta, h0.records_count) == (0, 4, 2)
    assert h0.compression == codec
    assert (h0.producer_id, h0.producer_epoch, h0.base_sequence) == (7, 3, 0)
    recs = list(iter_records(raw0, 0, h0))
    assert [(r.offset, r.key, r.value, r.timestamp) for r in recs] == [
        (2, b"a", b"2", NOW + 2),
        (4, b"b", b"2", NOW + 4),
    ]
    assert h0.base_timestamp == NOW and h0.max_timestamp == NOW + 4
    h1, raw1 = got[1]
    assert (h1.base_offset, h1.last_offset_delta, h1.records_count) == (5, 1, 2)
    untouched = batch([(b"c", b"2"), (b"d", b"1")], compression=codec, base_offset=5)
    untouched[12:16] = log.leader_epoch.to_bytes(4, "big", signed=True)  # stamped on append, outside the CRC
    assert raw1 == bytes(untouched)


def test_tombstone_kept_then_removed_after_delete_retention(open_log: Callable[..., SegmentedLog]) -> None:
    clock = Clock()
    log = open_log(clock=clock)
    log.append_sync(batch([(b"a", b"1"), (b"b", b"1")]), now_ms=NOW)
    log.append_sync(batch([(b"a", None)]), now_ms=NOW)  # tombstone for a at offset 2
    log.roll()
    log.append_sync(batch([(b"c", b"1")]), now_ms=NOW)
    assert log.compact(NOW + 1000) is not None
    assert records_of(log) == [(1, b"b", b"1"), (2, b"a", None), (3, b"c", b"1")]
    # past delete.retention.ms, with new dirty data to make a pass worthwhile
    later = NOW + COMPACT.delete_retention_ms + 1
    log.append_sync(batch([(b"b", b"2")], ts=later), now_ms=later)
    log.roll()
    log.append_sync(batch([(b"d", b"1")], ts=later), now_ms=later)
    assert log.compact(later) is not None
    assert records_of(log) == [(3, b"c", b"1"), (4, b"b", b"2"), (5, b"d", b"1")]


def txn_batch(records: Sequence[KV], pid: int, seq: int) -> bytearray:
    return batch(records, producer_id=pid, producer_epoch=0, base_sequence=seq, transactional=True)


def test_transactions_aborted_dropped_committed_kept_open_untouched(
    open_log: Callable[..., SegmentedLog],
) -> None:
    log = open_log()
    log.append_sync(batch([(b"k", b"plain")]), now_ms=NOW)  # 0
    log.append_sync(txn_batch([(b"k", b"aborted"), (b"x", b"aborted")], 1, 0), now_ms=NOW)  # 1-2
    log.write_txn_marker_sync(1, 0, commit=False, coordinator_epoch=0, now_ms=NOW)  # 3
    log.append_sync(txn_batch([(b"y", b"committed")], 2, 0), now_ms=NOW)  # 4
    log.write_txn_marker_sync(2, 0, commit=True, coordinator_epoch=0, now_ms=NOW)  # 5
    log.append_sync(batch([(b"filler", b"f" * 300)]), now_ms=NOW)  # 6
    log.roll()
    log.append_sync(txn_batch([(b"y", b"open")], 3, 0), now_ms=NOW)  # 7: open transaction
    log.roll()
    log.append_sync(batch([(b"z", b"1")]), now_ms=NOW)  # 8
    assert log.last_stable_offset == 7
    assert log.compact(NOW) is not None
    assert log.cleaner_checkpoint == 7  # the segment holding the open transaction stays dirty
    hs = {h.base_offset: h for h, _ in all_batches(log)}
    # the aborted batch was producer 1's last data batch: kept, empty, same header fields
    assert hs[1].records_count == 0 and hs[1].last_offset_delta == 1 and hs[1].producer_id == 1
    assert hs[3].is_control and hs[5].is_control  # markers stay
    assert [(o, k, v) for o, k, v in records_of(log)] == [
        (0, b"k", b"plain"),
        (4, b"y", b"committed"),
        (6, b"filler", b"f" * 300),
        (7, b"y", b"open"),
        (8, b"z", b"1"),
    ]
    # once committed, the newer y replaces the older one
    log.write_txn_marker_sync(3, 0, commit=True, coordinator_epoch=0, now_ms=NOW)  # 9
    log.roll()
    log.append_sync(batch([(b"z", b"2")]), now_ms=NOW)
    assert log.compact(NOW) is not None
    assert (4, b"y", b"committed") not in records_of(log)
    assert (7, b"y", b"open") in records_of(log)


def test_empty_last_batch_keeps_producer_sequence_across_rebuild(tmp_path: Path) -> None:
    log = open_file(tmp_path)
    log.append_sync(
        batch([(b"a", b"1"), (b"b", b"1")], producer_id=5, producer_epoch=0, base_sequence=0), now_ms=NOW
    )
    log.append_sync(
        batch([(b"a", b"2")], producer_id=5, producer_epoch=0, base_sequence=2), now_ms=NOW
    )  # offset 2
    log.append_sync(
        batch([(b"b", b"2"), (b"a", b"3")]), now_ms=NOW
    )  # 3-4: supersedes every record of producer 5
    log.roll()
    log.append_sync(batch([(b"c", b"1")]), now_ms=NOW)
    assert log.compact(NOW) is not None
    hs = [h for h, _ in all_batches(log)]
    assert [(h.base_offset, h.records_count, h.producer_id) for h in hs] == [
        (2, 0, 5),
        (3, 2, -1),
        (5, 1, -1),
    ]
    assert hs[0].base_sequence == 2 and hs[0].last_offset_delta == 0
    log.close()
    for f in tmp_path.joinpath("t-0").glob("*.snapshot"):
        f.unlink()
    log = open_file(tmp_path)
    # the retry of the last batch is answered with its original offset, not appended again
    info = log.append_sync(
        batch([(b"a", b"2")], producer_id=5, producer_epoch=0, base_sequence=2), now_ms=NOW
    )
    assert info.first_offset == 2 and log.log_end_offset == 6
    with pytest.raises(OutOfOrderSequence):
        log.append_sync(batch([(b"a", b"9")], producer_id=5, producer_epoch=0, base_sequence=7), now_ms=NOW)
    info = log.append_sync(
        batch([(b"a", b"4")], producer_id=5, producer_epoch=0, base_sequence=3), now_ms=NOW
    )
    assert info.first_offset == 6


def test_active_segment_never_touched(open_log: Callable[..., SegmentedLog]) -> None:
    log = open_log(LogConfig(cleanup_policy=("compact",), min_cleanable_dirty_ratio=0.0))
    for i in range(20):
        log.append_sync(batch([(b"k", b"v%d" % i)]), now_ms=NOW)
    assert len(log.segments) == 1
    assert log.compact(NOW) is None
    assert len(records_of(log)) == 20


def test_dirty_ratio_threshold_and_max_lag(open_log: Callable[..., SegmentedLog]) -> None:
    cfg = LogConfig(
        cleanup_policy=("compact",),
        segment_bytes=600,
        index_interval_bytes=100,
        min_cleanable_dirty_ratio=0.5,
    )
    log = open_log(cfg)
    fill(log, 40)
    log.roll()
    log.append_sync(batch([(b"z", b"1")]), now_ms=NOW)
    assert log.compact(NOW) is not None  # all dirty: ratio 1
    clean_size = sum(s.size for s in log.segments[:-1])
    # a little new dirty data: below the ratio, nothing happens
    log.append_sync(batch([(b"k1", b"new")]), now_ms=NOW)
    log.roll()
    log.append_sync(batch([(b"z", b"2")]), now_ms=NOW)
    dirty = log.segments[-2].size
    assert dirty / (dirty + clean_size) < 0.5
    assert log.compact(NOW) is None
    # max.compaction.lag.ms forces it once the dirty data is old enough
    log.reconfigure(cfg.__class__(**{**cfg.__dict__, "max_compaction_lag_ms": 1000}))
    assert log.compact(NOW + 500) is None
    assert log.compact(NOW + 2000) is not None


def test_min_compaction_lag(open_log: Callable[..., SegmentedLog]) -> None:
    cfg = LogConfig(**{**COMPACT.__dict__, "min_compaction_lag_ms": 5000})
    log = open_log(cfg)
    fill(log, 40)
    log.roll()
    log.append_sync(batch([(b"z", b"1")]), now_ms=NOW)
    assert log.compact(NOW + 1000) is None
    assert log.compact(NOW + 6000) is not None


def test_not_compacted_without_compact_policy(open_log: Callable[..., SegmentedLog]) -> None:
    log = open_log(LogConfig(segment_bytes=600, min_cleanable_dirty_ratio=0.0))
    fill(log, 40)
    assert log.compact(NOW) is None


def test_checkpoint_persisted_across_reopen(tmp_path: Path) -> None:
    log = open_file(tmp_path)
    fill(log, 40)
    log.roll()
    log.append_sync(batch([(b"z", b"1")]), now_ms=NOW)
    stats = log.compact(NOW)
    assert stats is not None
    before = records_of(log)
    log.close()
    text = (tmp_path / "t-0" / PartitionLog.CLEANER_CHECKPOINT_FILE).read_text().split()
    assert int(text[1]) == stats.end_offset
    log = open_file(tmp_path)
    assert log.cleaner_checkpoint == stats.end_offset
    assert records_of(log) == before
    assert log.compact(NOW) is None  # nothing dirty after the reopen


def test_crash_leftover_cleaned_files_are_deleted(tmp_path: Path) -> None:
    log = open_file(tmp_path)
    fill(log, 40)
    before = records_of(log)
    d = tmp_path / "t-0"
    seg0 = log.segments[0]
    log.close()
    for suffix in (".log.cleaned", ".index.cleaned", ".timeindex.cleaned", ".index.swap"):
        (d / f"{seg0.base_offset:020d}{suffix}").write_bytes(b"garbage")
    log = open_file(tmp_path)
    assert not [p for p in os.listdir(d) if p.endswith((".cleaned", ".swap"))]
    assert records_of(log) == before


def test_crash_with_committed_swap_completes_it(tmp_path: Path) -> None:
    log = open_file(tmp_path)
    fill(log, 40)
    log.roll()
    log.append_sync(batch([(b"z", b"1")]), now_ms=NOW)
    d = tmp_path / "t-0"
    originals = {p.name: p.read_bytes() for p in d.glob("*.log")}
    assert log.compact(NOW) is not None
    compacted = records_of(log)
    cleaned_logs = {p.name: p.read_bytes() for p in d.glob("*.log")}
    log.close()
    # as if the process died right after committing the swap of the first segment: the new log under
    # .swap, the old files still under their names (stale indexes included)
    first = sorted(originals)[0]
    (d / (first + ".swap")).write_bytes(cleaned_logs[first])
    (d / first).write_bytes(originals[first])
    log = open_file(tmp_path)
    assert not [p for p in os.listdir(d) if p.endswith((".cleaned", ".swap"))]
    assert (d / first).read_bytes() == cleaned_logs[first]
    assert records_of(log) == compacted


def test_reads_during_cleaning_return_valid_batches(tmp_path: Path) -> None:
    cfg = LogConfig(**{**COMPACT.__dict__, "file_delete_delay_ms": 60_000})
    log = open_file(tmp_path, cfg)
    fill(log, 60)
    log.roll()
    log.append_sync(batch([(b"z", b"1")]), now_ms=NOW)
    held = log.read_sync(0, 1 << 30)  # file ranges of the segments about to be replaced
    before = held.to_bytes()
    assert log.compact(NOW) is not None
    assert held.to_bytes() == before  # the replaced files stay readable until file.delete.delay.ms
    for pos, h in iter_headers(before):
        assert check_crc(before, pos, h)
    for offset in range(log.log_end_offset):
        res = log.read_sync(offset, 200).to_bytes()
        assert res and all(check_crc(res, p, h) for p, h in iter_headers(res))
    log.sweep(NOW + 120_000)


def test_appends_between_plan_and_swap_survive(tmp_path: Path) -> None:
    """Appends and reads go on while segments are rewritten: the swap keeps what was appended meanwhile."""
    log = open_file(tmp_path)
    fill(log, 40)
    log.roll()
    original = log._clean_segment

    def slow(ctx, old, new, now_ms):  # type: ignore[no-untyped-def]
        log.append_sync(batch([(b"during", b"x")]), now_ms=NOW)
        return original(ctx, old, new, now_ms)

    log._clean_segment = slow  # type: ignore[method-assign]
    assert log.compact(NOW) is not None
    assert any(k == b"during" for _, k, _ in records_of(log))
    assert log.log_end_offset == records_of(log)[-1][0] + 1


def test_retention_during_cleaning_abandons_the_pass(tmp_path: Path) -> None:
    log = open_file(tmp_path, LogConfig(**{**COMPACT.__dict__, "cleanup_policy": ("compact", "delete")}))
    fill(log, 40)
    log.roll()
    log.append_sync(batch([(b"z", b"1")]), now_ms=NOW)
    original = log._clean_segment

    def racing(ctx, old, new, now_ms):  # type: ignore[no-untyped-def]
        if old.base_offset == 0:
            log.delete_records_before(log.segments[1].base_offset)
        return original(ctx, old, new, now_ms)

    log._clean_segment = racing  # type: ignore[method-assign]
    assert log.compact(NOW) is None
    assert not [p for p in os.listdir(tmp_path / "t-0") if p.endswith((".cleaned", ".swap"))]
    log._clean_segment = original  # type: ignore[method-assign]
    assert log.compact(NOW) is not None


def test_storage_compact_walks_compacted_topics(tmp_path: Path) -> None:
    for storage in (FileStorage(tmp_path / "data", clock=Clock()), MemoryStorage(clock=Clock())):
        storage.load()
        storage.create_topic(
            "c", 1, {"cleanup.policy": "compact", "segment.bytes": "600", "min.cleanable.dirty.ratio": "0.01"}
        )
        storage.create_topic("d", 1, {"segment.bytes": "600"})
        for name in ("c", "d"):
            fill(storage.partition(name, 0), 40)
        assert storage.compact(NOW) == 1
        assert len(records_of(storage.partition("d", 0))) == 40
        assert len(records_of(storage.partition("c", 0))) < 40
        storage.close()


def test_a_full_offset_map_cleans_up_to_where_it_stopped(open_log: Callable[..., SegmentedLog]) -> None:
    """log.cleaner.dedupe.buffer.size: a pass maps what fits (at least one segment), cleans up to there and
    leaves its checkpoint there; later passes go on until the whole cleanable range is compacted."""
    log = open_log()
    for i in range(80):  # distinct keys, each written twice in a row: every segment holds superseded records
        key = b"key-%03d" % (i // 2)
        log.append_sync(batch([(key, b"v%d-" % i + b"x" * 40)]), now_ms=NOW)
    assert len(log.segments) >= 5
    first = log.compact(NOW, max_map_bytes=1)  # full after one segment
    assert first is not None
    assert first.segments + first.segments_removed == 1
    assert first.end_offset == log.segments[1].base_offset == log.cleaner_checkpoint
    passes = 1
    while log.compact(NOW, max_map_bytes=1) is not None:
        passes += 1
        assert passes < 50
    assert passes >= 2
    active = log.segments[-1].base_offset
    below = [(off, k) for off, k, _ in records_of(log) if off < active]
    assert len(below) == len({k for _, k in below}), "one record per key below the active segment"
