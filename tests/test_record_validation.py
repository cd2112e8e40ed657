"""The produce-side record walker (``records.scan_records``) against an independent reference reader.

The reference below reads records the plain way, one field at a time, with the rules of Kafka's
DefaultRecord.readFrom and LogValidator (plus kafkite's: UTF-8 header keys, offset delta == index, no
length below -1, record attributes zero: kafka-python reads them as a varint). The walker must agree with it
on every batch: well-formed ones of uniform and varied layouts (the walker's column-at-a-time path and its
record-at-a-time path) and the same batches damaged at random, and must never report anything but
InvalidBatch for bad bytes.
"""

from __future__ import annotations

import random
import struct

import crc32c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kafkite.protocol import compression
from kafkite.protocol.records import (
    BATCH_HEADER_SIZE,
    InvalidBatch,
    ScanResult,
    _scan_generic,
    build_batch,
    encode_varint,
    read_header,
    scan_records,
)


class RefError(Exception):
    pass


def _ref_varint(d: bytes, p: int, max_bytes: int) -> tuple[int, int]:
    z = 0
    for k in range(max_bytes):
        if p >= len(d):
            raise RefError("varint past end")
        b = d[p]
        p += 1
        z |= (b & 0x7F) << (7 * k)
        if b < 0x80:
            if z >= 1 << (32 if max_bytes == 5 else 64):
                raise RefError("varint overflow")
            return (z >> 1) ^ -(z & 1), p
    raise RefError("varint too long")


def reference(d: bytes, count: int) -> ScanResult:
    """Read ``count`` records that must fill ``d`` exactly; RefError for anything Kafka would refuse."""
    p = 0
    nulls = 0
    deltas: list[int] = []
    for i in range(count):
        length, p = _ref_varint(d, p, 5)
        if length < 6 or p + length > len(d):
            raise RefError("bad length")
        body = d[p : p + length]
        p += length
        if body[0]:
            raise RefError("attributes")
        q = 1
        ts, q = _ref_varint(body, q, 10)
        deltas.append(ts)
        od, q = _ref_varint(body, q, 5)
        if od != i:
            raise RefError("offset delta")
        for is_key in (True, False):
            n, q = _ref_varint(body, q, 5)
            if n < -1:
                raise RefError("negative length")
            if n == -1:
                nulls += is_key
            else:
                if q + n > len(body):
                    raise RefError("past record")
                q += n
        nh, q = _ref_varint(body, q, 5)
        if nh < 0 or nh > (len(body) - q) // 2:
            raise RefError("header count")
        for _ in range(nh):
            n, q = _ref_varint(body, q, 5)
            if n < 0 or q + n > len(body):
                raise RefError("header key")
            try:
                body[q : q + n].decode()
            except UnicodeDecodeError:
                raise RefError("header key utf-8") from None
            q += n
            n, q = _ref_varint(body, q, 5)
            if n < -1 or q + max(n, 0) > len(body):
                raise RefError("header value")
            q += max(n, 0)
        if q != len(body):
            raise RefError("length mismatch")
    if p != len(d):
        raise RefError("trailing bytes")
    if not deltas:
        return ScanResult(0, 0, 0)
    return ScanResult(nulls, min(deltas), max(deltas))


def _outcome(fn: object, d: bytes | bytearray | memoryview, count: int) -> ScanResult | str:
    try:
        return fn(d, count)  # type: ignore[operator, no-any-return]
    except (InvalidBatch, RefError):
        return "refused"


def _walker(d: bytes | bytearray | memoryview, count: int) -> ScanResult:
    return scan_records(d, 0, len(d), count)


def _generic(d: bytes | bytearray | memoryview, count: int) -> ScanResult:
    try:
        pos, n, lo, hi = _scan_generic(d, 0, len(d), 0, count)
    except IndexError:
        raise InvalidBatch("past the end") from None
    if pos != len(d):
        raise InvalidBatch("trailing bytes")
    return ScanResult(n, lo, hi)


def _section(recs: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]], int]]) -> bytes:
    return bytes(build_batch(recs)[BATCH_HEADER_SIZE:])


def _agree(d: bytes, count: int) -> ScanResult | str:
    want = _outcome(reference, d, count)
    for fn in (_walker, _generic):
        for buf in (d, bytearray(d), memoryview(bytearray(b"\xff" * 7 + d))[7:]):
            assert _outcome(fn, buf, count) == want, (fn, type(buf))
    return want


header_keys = st.sampled_from(["trace", "x", "", "ключ", "a" * 40])
uniform = st.builds(
    lambda n, key, value, headers, ts, spread, seed: [
        (
            key,
            value,
            headers,
            ts + (random.Random(seed + i).randrange(spread) if spread else 0),
        )
        for i in range(n)
    ],
    st.integers(1, 200),
    st.none() | st.binary(max_size=20),
    st.none() | st.binary(max_size=1200),
    st.lists(st.tuples(header_keys, st.none() | st.binary(max_size=10)), max_size=3),
    st.integers(0, 1 << 42),
    st.sampled_from([0, 0, 30, 64, 200, 20000]),
    st.integers(0, 1000),
)
varied = st.lists(
    st.tuples(
        st.none() | st.binary(max_size=30),
        st.none() | st.binary(max_size=300),
        st.lists(st.tuples(header_keys, st.none() | st.binary(max_size=10)), max_size=3),
        st.integers(0, 1 << 42),
    ),
    min_size=1,
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(recs=uniform | varied)
def test_walker_agrees_with_the_reference_on_good_batches(
    recs: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]], int]],
) -> None:
    d = _section(recs)
    got = _agree(d, len(recs))
    assert isinstance(got, ScanResult)
    assert got.null_keys == sum(1 for r in recs if r[0] is None)
    base = recs[0][3]
    stamps = [r[3] - base for r in recs]
    assert (got.min_ts_delta, got.max_ts_delta) == (min(stamps), max(stamps))


@settings(max_examples=1500, deadline=None)
@given(
    recs=uniform | varied,
    edits=st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(0, 255)), min_size=1, max_size=3),
    count_change=st.sampled_from([0, 0, 0, 1, -1]),
    cut=st.sampled_from([0, 0, 0, 1, 3]),
)
def test_walker_agrees_with_the_reference_on_damaged_batches(
    recs: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]], int]],
    edits: list[tuple[int, int]],
    count_change: int,
    cut: int,
) -> None:
    d = bytearray(_section(recs))
    for at, value in edits:
        d[at % len(d)] = value
    if cut:
        del d[-cut:]
    _agree(bytes(d), max(0, len(recs) + count_change))


def test_uniform_batch_damaged_in_every_record_position() -> None:
    """Each byte of one record of a long uniform batch (the column path) damaged in turn."""
    recs = [(b"key", b"v" * 90, [("trace", b"t")], 1_700_000_000_000) for _ in range(300)]
    d = _section(recs)
    size = len(d) // 1  # the record at index 100 (2-byte offset deltas) and at 10 (1-byte)
    starts = []
    p = 0
    for _ in range(300):
        starts.append(p)
        n, q = _ref_varint(d, p, 5)
        p = q + n
    assert p == size
    for idx in (10, 100, 299):
        s, e = starts[idx], (starts[idx + 1] if idx + 1 < 300 else len(d))
        for at in range(s, e):
            for value in (0x00, 0x01, 0x7F, 0x80, 0xFF, d[at] ^ 0x01):
                damaged = bytearray(d)
                damaged[at] = value
                _agree(bytes(damaged), 300)


def test_batches_with_thousands_of_records_cross_the_offset_delta_widths() -> None:
    recs = [(None, b"x" * 10, [], 1_000) for _ in range(9000)]  # offset deltas of 1, 2 and 3 bytes
    d = _section(recs)
    assert _agree(d, 9000) == ScanResult(9000, 0, 0)
    damaged = bytearray(d)
    damaged[-5] ^= 0x40  # inside the last record's value: still well formed
    assert _agree(bytes(damaged), 9000) == ScanResult(9000, 0, 0)


def _rec(body: bytes) -> bytes:
    return encode_varint(len(body)) + body


@pytest.mark.parametrize(
    ("name", "section", "count"),
    [
        ("negative record length", encode_varint(-1) + b"\x00" * 7, 1),
        ("record attributes set", _rec(b"\x80\x00\x00\x01\x01\x00"), 1),
        ("five-byte varint overflowing 32 bits", b"\xff\xff\xff\xff\x7f" + b"\x00" * 8, 1),
        ("six-byte record length", b"\x8c\x80\x80\x80\x80\x00" + b"\x00" * 6, 1),
        ("eleven-byte timestamp delta", _rec(b"\x00" + b"\x80" * 10 + b"\x00\x00\x01\x01\x00"), 1),
        ("offset delta not the index", _rec(b"\x00\x00\x02\x01\x01\x00"), 1),
        ("key length -2", _rec(b"\x00\x00\x00\x03\x01\x00"), 1),
        ("value length -5", _rec(b"\x00\x00\x00\x01\x09\x00"), 1),
        ("header count -1", _rec(b"\x00\x00\x00\x01\x01\x01"), 1),
        ("header count 2^31", _rec(b"\x00\x00\x00\x01\x01" + encode_varint(1 << 30)), 1),
        ("null header key", _rec(b"\x00\x00\x00\x01\x01\x02\x01\x01"), 1),
        ("header key not UTF-8", _rec(b"\x00\x00\x00\x01\x01\x02\x04\xff\xfe\x01"), 1),
        ("header value past the record", _rec(b"\x00\x00\x00\x01\x01\x02\x02h\x10"), 1),
        ("fewer records than the count", _rec(b"\x00\x00\x00\x01\x01\x00"), 2),
        ("more records than the count", _rec(b"\x00\x00\x00\x01\x01\x00") * 2, 1),
        ("trailing garbage", _rec(b"\x00\x00\x00\x01\x01\x00") + b"\x00", 1),
        ("record length past the end", encode_varint(100) + b"\x00" * 10, 1),
    ],
)
def test_malformed_records_are_refused(name: str, section: bytes, count: int) -> None:
    with pytest.raises(InvalidBatch):
        scan_records(section, 0, len(section), count)
    with pytest.raises(RefError):
        reference(section, count)


# -- the batches of the report that broke consumers ----------------------------------------------------------

TRUNCATED_LZ4 = bytes.fromhex(
    "00000000000000000000004e00000000024cef3735000300000002000001a23be757a9000001a23be757a9ffffffffffff"
    "ffffffffffffffff0000000304224d1868402700000000000000b324000000f30218000000026b0a76"
)
RECORD_LENGTH_MINUS_ONE = bytes.fromhex(
    "00000000000000000000003a000000000260a2d656000000000000000001a23bef655b000001a23bef655bffffffffffff"
    "ffffffffffffffff0000000101000000026b027600"
)


def test_reported_batches_have_valid_crcs_and_bad_records() -> None:
    from kafkite.protocol.records import check_crc

    for batch in (TRUNCATED_LZ4, RECORD_LENGTH_MINUS_ONE):
        h = read_header(batch)
        assert check_crc(batch, 0, h)
    with pytest.raises(compression.CompressionError):
        compression.decompress(3, TRUNCATED_LZ4[BATCH_HEADER_SIZE:], 1 << 20)
    with pytest.raises(InvalidBatch):
        scan_records(RECORD_LENGTH_MINUS_ONE, BATCH_HEADER_SIZE, len(RECORD_LENGTH_MINUS_ONE), 1)


# -- compressed payloads ----------------------------------------------------------------------------------


def corrupt_batch_generator(seed: int) -> list[tuple[str, bytes]]:
    """CRC-valid batches damaged inside: record bytes, lengths, counts and compressed payloads (used by the
    fuzz tests too). Each is (what was done, batch)."""
    rnd = random.Random(seed)
    out: list[tuple[str, bytes]] = []
    for codec in (0, 1, 2, 3, 4):
        n = rnd.randrange(1, 40)
        recs = [
            (
                rnd.choice([None, b"k%d" % i]),
                bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 200))),
                [("h", b"v")] if rnd.random() < 0.3 else [],
                1_700_000_000_000 + rnd.randrange(100),
            )
            for i in range(n)
        ]
        good = bytearray(build_batch(recs, compression=codec))
        kinds = ["flip", "truncate-payload", "count", "append", "zero-run"]
        for kind in kinds:
            b = bytearray(good)
            if kind == "flip":
                for _ in range(rnd.randrange(1, 4)):
                    at = rnd.randrange(BATCH_HEADER_SIZE, len(b))
                    b[at] = rnd.randrange(256)
            elif kind == "truncate-payload":
                del b[rnd.randrange(BATCH_HEADER_SIZE, len(b)) :]
            elif kind == "count":
                struct.pack_into(">i", b, 57, n + rnd.choice([-1, 1, 1000]))
                struct.pack_into(">i", b, 23, n + rnd.choice([-1, 1, 1000]) - 1)
            elif kind == "append":
                b += bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 9)))
            else:
                at = rnd.randrange(BATCH_HEADER_SIZE, len(b))
                b[at : at + 8] = b"\x00" * len(b[at : at + 8])
            out.append((f"{kind}-codec{codec}", reseal(b)))
    return out


def reseal(b: bytearray) -> bytes:
    """The batch with its length and CRC made right again for its (changed) bytes."""
    struct.pack_into(">i", b, 8, len(b) - 12)
    struct.pack_into(">I", b, 17, crc32c.crc32c(bytes(b[21:])))
    return bytes(b)


@pytest.mark.parametrize("seed", range(20))
def test_corrupt_compressed_batches_are_refused_or_read_whole(seed: int) -> None:
    """Whatever the damage, a batch is either refused or every one of its records reads back."""
    from kafkite.protocol.records import iter_records

    for _, batch in corrupt_batch_generator(seed):
        h = read_header(batch)
        try:
            data = (
                batch[BATCH_HEADER_SIZE:]
                if h.compression == 0
                else compression.decompress(h.compression, batch[BATCH_HEADER_SIZE:], 1 << 24)
            )
            scan_records(data, 0, len(data), h.records_count)
        except (InvalidBatch, compression.CompressionError):
            continue
        assert len(list(iter_records(batch, 0, h))) == h.records_count


@pytest.mark.parametrize("codec", [1, 2, 3, 4])
def test_decompression_stops_at_the_limit(codec: int) -> None:
    bomb = compression.compress(codec, b"\x00" * (64 << 20))
    with pytest.raises(compression.CompressionError, match="exceeds the limit"):
        compression.decompress(codec, bomb, 1 << 20)


def test_zstd_bomb_is_refused_from_its_block_headers() -> None:
    import zstandard

    bomb = zstandard.ZstdCompressor(write_content_size=False).compress(b"\x00" * (256 << 20))
    assert len(bomb) < 20_000
    with pytest.raises(compression.CompressionError, match="exceeds the limit"):
        compression.decompress(4, bomb, 1 << 20)
    stated = zstandard.ZstdCompressor().compress(b"\x00" * (256 << 20))
    with pytest.raises(compression.CompressionError, match="exceeds the limit"):
        compression.decompress(4, stated, 1 << 20)
