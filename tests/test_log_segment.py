"""Segments: offset and time index lookups, loading, recovery, on files and in memory."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from kafkite.log.config import LogConfig
from kafkite.log.files import FileCache
from kafkite.log.segment import OffsetIndex, Segment, TimeIndex
from kafkite.protocol.records import BatchHeader, build_batch, iter_headers, read_header, set_base_offset

CONFIG = LogConfig(index_interval_bytes=200, segment_index_bytes=4096)
FILES = FileCache(64)


def make_batch(base_offset: int, n: int, ts: int, value: bytes = b"value") -> bytearray:
    buf = bytearray(build_batch([(None, value, [], ts + i) for i in range(n)]))
    set_base_offset(buf, 0, base_offset)
    return buf


def fill(seg: Segment, batches: int, *, base: int = 100, ts_of=lambda i: 1000 + 10 * i) -> list[BatchHeader]:
    """Append ``batches`` batches of 1-3 records each; returns their headers."""
    headers = []
    offset = base
    for i in range(batches):
        buf = make_batch(offset, 1 + i % 3, ts_of(i), value=b"x" * (i % 7 * 10))
        h = read_header(buf)
        seg.append(buf, [(0, h)], now_ms=5)
        headers.append(h)
        offset = h.last_offset + 1
    return headers


@pytest.fixture(params=["file", "memory"])
def new_segment(request: pytest.FixtureRequest, tmp_path: Path):
    def make(base: int = 100, config: LogConfig = CONFIG) -> Segment:
        if request.param == "file":
            return Segment.create(tmp_path, base, config, FILES, now_ms=5)
        return Segment.in_memory(base, config, now_ms=5)

    return make


def test_find_every_offset_through_the_sparse_index(new_segment) -> None:
    seg = new_segment()
    headers = fill(seg, 120)
    assert len(seg.offset_index) > 10, "the index should hold several entries"
    assert seg.next_offset == headers[-1].last_offset + 1
    positions = {}
    pos = 0
    for h in headers:
        positions[h.base_offset] = pos
        pos += h.size
    for h in headers:
        for off in range(h.base_offset, h.last_offset + 1):
            found = seg.find(off)
            assert found is not None
            assert found[0] == positions[h.base_offset]
            assert found[1].base_offset == h.base_offset
    assert seg.find(seg.next_offset) is None
    # index entries point at batch starts and are spaced by at least index_interval_bytes
    vals = seg.offset_index.values
    assert all(b - a > CONFIG.index_interval_bytes for a, b in itertools.pairwise(vals))
    for rel, p in zip(seg.offset_index.keys, vals, strict=True):
        assert positions[seg.base_offset + rel] == p


def test_boundary_at_or_before(new_segment) -> None:
    seg = new_segment()
    headers = fill(seg, 60)
    bounds = [0]
    for h in headers:
        bounds.append(bounds[-1] + h.size)
    for limit in range(0, seg.size + 50, 37):
        expected = max(b for b in bounds if b <= limit)
        assert seg.boundary_at_or_before(0, limit) == expected
    assert seg.boundary_at_or_before(bounds[5], bounds[5] + 1) == bounds[5]


def test_time_index_and_find_timestamp(new_segment) -> None:
    seg = new_segment()
    # timestamps go up and down; the time index holds only increases of the running max
    stamps = [1000, 900, 1500, 1200, 1600, 1600, 2000, 100, 2500] * 10
    headers = fill(seg, len(stamps), ts_of=lambda i: stamps[i] + i // 9 * 3000)
    keys = seg.time_index.keys
    assert keys == sorted(set(keys)), "time index timestamps must strictly increase"
    assert seg.max_timestamp == max(h.max_timestamp for h in headers)
    for target in range(0, seg.max_timestamp + 2, 97):
        expect = next((h for h in headers if h.max_timestamp >= target), None)
        got = seg.find_timestamp(target, 0)
        if expect is None:
            assert got is None
        else:
            assert got is not None and got[1].base_offset == expect.base_offset, target
    # a minimum offset skips earlier batches
    got = seg.find_timestamp(0, headers[10].base_offset)
    assert got is not None and got[1].base_offset == headers[10].base_offset


def test_load_restores_state_from_files(tmp_path: Path) -> None:
    seg = Segment.create(tmp_path, 100, CONFIG, FILES, now_ms=5)
    fill(seg, 50)
    state = (seg.next_offset, seg.max_timestamp, seg.offset_of_max_timestamp, seg.size)
    index = (list(seg.offset_index.keys), list(seg.offset_index.values))
    seg.close()
    again, ok = Segment.open(tmp_path, 100, CONFIG, FILES, now_ms=5)
    assert ok and again.load()
    assert (again.next_offset, again.max_timestamp, again.offset_of_max_timestamp, again.size) == state
    assert (again.offset_index.keys, again.offset_index.values) == index
    # appending after a load keeps the index consistent with a freshly built one
    fill(again, 30, base=again.next_offset)
    appended = (list(again.offset_index.keys), list(again.offset_index.values))
    again.recover()
    assert (again.offset_index.keys, again.offset_index.values) == appended
    again.close()


def test_load_rejects_a_corrupt_index_and_recover_rebuilds_it(tmp_path: Path) -> None:
    seg = Segment.create(tmp_path, 0, CONFIG, FILES, now_ms=5)
    fill(seg, 50, base=0)
    good = (list(seg.offset_index.keys), list(seg.offset_index.values))
    seg.close()
    path = tmp_path / "00000000000000000000.index"
    data = bytearray(path.read_bytes())
    data[-8:] = OffsetIndex.ENTRY.pack(7, 3)  # points into the middle of a batch
    path.write_bytes(bytes(data))
    again, ok = Segment.open(tmp_path, 0, CONFIG, FILES, now_ms=5)
    assert ok and not again.load()
    assert again.recover() == 0
    assert (again.offset_index.keys, again.offset_index.values) == good
    again.close()
    assert path.read_bytes() == b"".join(OffsetIndex.ENTRY.pack(k, v) for k, v in zip(*good, strict=True))


def test_open_reports_missing_index(tmp_path: Path) -> None:
    seg = Segment.create(tmp_path, 0, CONFIG, FILES, now_ms=5)
    fill(seg, 20, base=0)
    seg.close()
    (tmp_path / "00000000000000000000.timeindex").unlink()
    again, ok = Segment.open(tmp_path, 0, CONFIG, FILES, now_ms=5)
    assert not ok
    again.recover()
    assert again.time_index.keys and (tmp_path / "00000000000000000000.timeindex").stat().st_size > 0
    again.close()


@pytest.mark.parametrize(
    "damage",
    ["partial_batch", "garbage", "bad_crc", "offset_goes_back"],
)
def test_recover_truncates_a_bad_tail(tmp_path: Path, damage: str) -> None:
    seg = Segment.create(tmp_path, 0, CONFIG, FILES, now_ms=5)
    headers = fill(seg, 10, base=0)
    good_size = seg.size
    extra = make_batch(seg.next_offset, 2, 5000)
    if damage == "partial_batch":
        seg.store.append(extra[: len(extra) - 5])
    elif damage == "garbage":
        seg.store.append(b"\x00\x01garbage" * 20)
    elif damage == "bad_crc":
        extra[-1] ^= 0xFF
        seg.store.append(extra)
    else:
        set_base_offset(extra, 0, 3)
        seg.store.append(extra)
    damaged_size = seg.size
    truncated = seg.recover()
    assert truncated == damaged_size - good_size > 0
    assert seg.size == good_size
    assert seg.next_offset == headers[-1].last_offset + 1
    assert [h for _, h in iter_headers(seg.store.pread(0, seg.size))] == headers
    seg.close()


def test_truncate_to_drops_the_batch_holding_the_offset(new_segment) -> None:
    seg = new_segment(0)
    headers = fill(seg, 30, base=0)
    cut = headers[12]
    seg.truncate_to(cut.base_offset + 1 if cut.last_offset > cut.base_offset else cut.base_offset)
    assert seg.next_offset == cut.base_offset
    assert seg.size == sum(h.size for h in headers[:12])
    assert all(seg.base_offset + k < cut.base_offset for k in seg.offset_index.keys)
    assert seg.max_timestamp == max(h.max_timestamp for h in headers[:12])


def test_time_index_lookup_never_skips_a_match() -> None:
    from kafkite.log.segment import MemoryStore

    ti = TimeIndex(MemoryStore(), 1200)
    ti.append(100, 0)
    ti.append(200, 5)
    assert ti.lookup(100) is None
    assert ti.lookup(150) == 0
    assert ti.lookup(201) == 5
