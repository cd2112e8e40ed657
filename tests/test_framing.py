"""The sans-io frame reader: any split of the byte stream yields the same frames."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kafkite.protocol.framing import FramePool, FrameReader, FrameTooLarge


def _stream(frames: list[bytes]) -> bytes:
    return b"".join(struct.pack(">i", len(f)) + f for f in frames)


def _read_buffered(reader: FrameReader, data: bytes, cuts: list[int]) -> list[bytes]:
    """Deliver ``data`` the way a transport does: into get_buffer(), at most ``cut`` bytes at a time."""
    out: list[bytes] = []
    pos = 0
    i = 0
    while pos < len(data):
        buf = reader.get_buffer(-1)
        n = min(len(buf), len(data) - pos, cuts[i % len(cuts)] if cuts else len(data))
        buf[:n] = data[pos : pos + n]
        del buf
        reader.buffer_updated(n)
        pos += n
        i += 1
        out.extend(bytes(f) for f in reader)
    return out


@settings(max_examples=25, deadline=None)
@given(
    frames=st.lists(
        st.one_of(st.binary(max_size=300), st.integers(140_000, 300_000).map(lambda n: b"z" * n)), max_size=6
    ),
    cuts=st.lists(st.integers(1, 300_000), min_size=1, max_size=5),
)
def test_any_split_yields_the_same_frames(frames: list[bytes], cuts: list[int]) -> None:
    data = _stream(frames)
    assert _read_buffered(FrameReader(10_000_000), data, cuts) == frames
    reader = FrameReader(10_000_000)
    reader.feed(data)
    assert [bytes(f) for f in reader] == frames


def test_frames_are_independent_mutable_buffers() -> None:
    reader = FrameReader(1000)
    reader.feed(_stream([b"abc", b"def"]))
    a, b = list(reader)
    assert isinstance(a, bytearray)
    a[0] = ord("x")
    assert bytes(b) == b"def"


def test_large_frame_is_received_in_place() -> None:
    reader = FrameReader(10_000_000)
    size = 1_000_000
    reader.feed(struct.pack(">i", size) + b"a" * 1000)
    sent = 1000
    while sent < size:
        buf = reader.get_buffer(-1)  # the remainder goes straight into the frame's own buffer
        assert len(buf) <= size - sent and len(buf.obj) >= FrameReader.FIRST_CHUNK  # type: ignore[arg-type]
        n = len(buf)
        buf[:] = b"b" * n
        del buf
        reader.buffer_updated(n)
        sent += n
    (frame,) = list(reader)
    assert len(frame) == size and frame[:1000] == b"a" * 1000 and frame[1000:2000] == b"b" * 1000


@pytest.mark.parametrize("size", [-1, 1001])
def test_bad_size_prefix_is_rejected(size: int) -> None:
    reader = FrameReader(1000)
    with pytest.raises(FrameTooLarge):
        reader.feed(struct.pack(">i", size))


# -- memory follows the bytes received ----------------------------------------------------------------------


def test_a_size_prefix_alone_allocates_little() -> None:
    reader = FrameReader(200_000_000)
    reader.feed(struct.pack(">i", 100_000_000) + b"x" * 100)
    assert reader.receiving and reader.footprint <= FrameReader.FIRST_CHUNK + FrameReader.SCRATCH


def test_large_frame_buffer_grows_as_bytes_arrive_and_each_growth_is_admitted() -> None:
    asked: list[tuple[int, bool]] = []

    def admit(n: int, growing: bool) -> bool:
        asked.append((n, growing))
        return True

    reader = FrameReader(50_000_000, admit=admit)
    size = 5_000_000
    reader.feed(struct.pack(">i", size))
    sizes = []
    sent = bytearray()
    while len(sent) < size:
        buf = reader.get_buffer(-1)
        sizes.append(len(sent) + len(buf))  # how big the frame's buffer is at this point
        n = min(len(buf), 300_000, size - len(sent))
        chunk = bytes([len(sent) % 251]) * n
        buf[:n] = chunk
        del buf
        reader.buffer_updated(n)
        sent += chunk
    item = reader.pop()
    assert item is not None
    frame, reserved = item
    assert frame == sent and reserved == size == sum(n for n, _ in asked)
    assert asked[0] == (FrameReader.FIRST_CHUNK, False) and all(g for _, g in asked[1:])
    assert sizes[0] == FrameReader.FIRST_CHUNK and max(sizes) == size
    assert all(b <= 2 * a for a, b in itertools.pairwise(sizes))


def test_admission_blocks_a_large_frame_until_retry() -> None:
    allowed: set[tuple[int, bool]] = set()
    asked: list[tuple[int, bool]] = []

    def admit(n: int, growing: bool) -> bool:
        asked.append((n, growing))
        return (n, growing) in allowed

    reader = FrameReader(10_000_000, admit=admit)
    reader.feed(_stream([b"small", b"L" * 100_000, b"after"]))
    assert [bytes(f) for f in reader] == [b"small"] and reader.blocked
    reader.retry()
    assert reader.blocked and not list(reader)
    allowed.add((100_000, False))
    reader.retry()
    assert [(bytes(f), r) for f, r in iter(reader.pop, None)] == [(b"L" * 100_000, 100_000), (b"after", 0)]
    assert not reader.blocked
    assert asked == [(100_000, False)] * 3  # small frames never ask


def test_a_growth_that_is_refused_blocks_until_retry() -> None:
    grant = [True]
    reader = FrameReader(10_000_000, admit=lambda n, growing: grant[0] or not growing)
    size = FrameReader.FIRST_CHUNK * 3
    reader.feed(struct.pack(">i", size) + b"a" * (FrameReader.FIRST_CHUNK - 4))
    grant[0] = False
    reader.feed(b"a" * 4)  # the first chunk is full: its growth is refused
    assert reader.blocked and reader.reserved == FrameReader.FIRST_CHUNK
    grant[0] = True
    reader.retry()
    assert not reader.blocked and reader.reserved == 2 * FrameReader.FIRST_CHUNK
    reader.feed(b"b" * (size - FrameReader.FIRST_CHUNK))
    item = reader.pop()
    assert item is not None and len(item[0]) == size and item[1] == size


def test_idle_reader_gives_its_scratch_back() -> None:
    reader = FrameReader(1000)
    reader.feed(_stream([b"abc"]))
    assert list(reader) and reader.footprint == FrameReader.INITIAL
    assert reader.trim() and reader.footprint == 0
    reader.feed(_stream([b"def"]))
    assert [bytes(f) for f in reader] == [b"def"]
    reader.feed(b"\x00\x00")  # half a prefix: not idle
    assert not reader.trim()


def test_large_record_chunks_are_written_as_they_are() -> None:
    """A fetch response whose records are large byte chunks (a database engine's batches) is encoded with the
    chunks as parts of their own, not copied into the frame; the frame decodes to the same records."""
    from kafkite.protocol import framing
    from kafkite.protocol.messages import OWN_PART_BYTES, RecordsChunks, registry
    from kafkite.protocol.records import build_batch

    reg = registry()
    big = build_batch([(None, bytes(range(256)) * 200, [], 1)])
    small = build_batch([(None, b"x", [], 2)])
    assert len(big) >= OWN_PART_BYTES > len(small)
    body = {
        "throttle_time_ms": 0,
        "error_code": 0,
        "session_id": 0,
        "responses": [
            {
                "topic": "t",
                "partitions": [
                    {
                        "partition_index": 0,
                        "error_code": 0,
                        "high_watermark": 2,
                        "last_stable_offset": 2,
                        "log_start_offset": 0,
                        "aborted_transactions": None,
                        "preferred_read_replica": -1,
                        "records": RecordsChunks([big, small]),
                    }
                ],
            }
        ],
    }
    parts, size = framing.encode_response(reg, 1, 12, 7, body)
    assert any(p is big for p in parts)  # not copied
    frame = b"".join(bytes(p) for p in parts)
    assert len(frame) == size
    cid, decoded = framing.decode_response(reg, 1, 12, frame[4:])
    assert cid == 7
    assert bytes(decoded["responses"][0]["partitions"][0]["records"]) == big + small


def test_a_large_frame_is_received_into_a_kept_buffer_of_its_size() -> None:
    asked: list[tuple[int, bool]] = []

    def admit(n: int, growing: bool) -> bool:
        asked.append((n, growing))
        return True

    pool = FramePool(10_000_000)
    reader = FrameReader(50_000_000, admit=admit, pool=pool)
    first = [b"a" * 1_000_000]
    assert _read_buffered(reader, _stream(first), [70_000]) == first
    assert pool.held == 0 and len(asked) > 1  # nothing kept yet: a new buffer, grown as the bytes came
    # The connection gives the first frame's buffer back once its request is done ...
    kept = bytearray(b"x" * 1_200_000)
    assert pool.give(kept) and pool.held == 1_200_000
    asked.clear()
    reader.feed(struct.pack(">i", 1_000_000))
    got: list[bytearray] = []
    body = (bytes(range(256)) * 3907)[:1_000_000]
    pos = 0
    while pos < len(body):  # ... and the next frame of about its size is received into it, admitted whole
        buf = reader.get_buffer(-1)
        n = min(len(buf), 65_536, len(body) - pos)
        buf[:n] = body[pos : pos + n]
        del buf
        reader.buffer_updated(n)
        pos += n
        while (item := reader.pop()) is not None:
            got.append(item[0])
            assert item[1] == 1_000_000
    assert len(got) == 1 and got[0] is kept and got[0] == body
    assert asked == [(FrameReader.FIRST_CHUNK, False), (1_000_000 - FrameReader.FIRST_CHUNK, True)]
    assert pool.held == 0 and pool.taken == 1


def test_the_pool_keeps_buffers_within_its_bound_and_only_of_a_fitting_size() -> None:
    pool = FramePool(3_000_000)
    a, b = bytearray(1_000_000), bytearray(1_500_000)
    assert pool.give(a) and pool.give(b) and not pool.give(bytearray(600_000))  # over the bound: dropped
    assert pool.take(2_000_000) is None  # none big enough
    assert pool.take(100_000) is None  # none small enough: a 1 MB buffer is not spent on a 100 KB frame
    got = pool.take(700_000)  # the newest that fits: b is too big for it (over twice), a fits
    assert got is a and len(got) == 700_000 and pool.held == 1_500_000
    assert pool.clear() == 1_500_000 and pool.held == 0 and pool.take(1_000_000) is None


def test_a_refused_admission_leaves_the_kept_buffer_in_the_pool() -> None:
    pool = FramePool(10_000_000)
    buf = bytearray(2_000_000)
    pool.give(buf)
    reader = FrameReader(50_000_000, admit=lambda n, growing: not growing, pool=pool)
    reader.feed(struct.pack(">i", 2_000_000) + b"z" * 100)
    assert pool.held == 2_000_000  # the whole frame could not be admitted at once: grown as before
    assert reader.footprint < 2_000_000
