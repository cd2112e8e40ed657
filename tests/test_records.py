from __future__ import annotations

import struct
from collections.abc import Iterator

import crc32c
import kafka.codec as kafka_codec
import kafka.record.default_records as kafka_default_records
import kafka.record.memory_records as kafka_memory_records
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kafkite.protocol import compression
from kafkite.protocol.records import (
    ATTR_CONTROL,
    ATTR_TIMESTAMP_TYPE,
    ATTR_TRANSACTIONAL,
    BATCH_HEADER_SIZE,
    COMPRESSION_GZIP,
    COMPRESSION_LZ4,
    COMPRESSION_NONE,
    COMPRESSION_SNAPPY,
    COMPRESSION_ZSTD,
    CorruptBatch,
    InvalidBatch,
    Record,
    UnsupportedCompression,
    build_batch,
    build_control_batch,
    check_crc,
    decode_records,
    encode_varint,
    iter_headers,
    iter_records,
    parse_control_record,
    read_header,
    read_uvarint,
    read_varint,
    set_base_offset,
    set_max_timestamp,
    update_crc,
    validate_batch,
    write_uvarint,
)

CODECS = [COMPRESSION_NONE, COMPRESSION_GZIP, COMPRESSION_SNAPPY, COMPRESSION_LZ4, COMPRESSION_ZSTD]

RecordIn = tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]], int]

records_strategy = st.lists(
    st.tuples(
        st.none() | st.binary(max_size=300),
        st.none() | st.binary(max_size=3000),
        st.lists(st.tuples(st.text(max_size=20), st.none() | st.binary(max_size=50)), max_size=4),
        st.integers(min_value=0, max_value=1 << 45),
    ),
    min_size=1,
    max_size=25,
)


def _sample_records(n: int = 50, ts: int = 1_700_000_000_000) -> list[RecordIn]:
    return [
        (
            None if i % 7 == 0 else b"key-%d" % i,
            None if i % 11 == 5 else b"value %d " % i * (i % 13 + 1),
            [("trace", b"%d" % i), ("empty", None)] if i % 3 == 0 else [],
            ts + i * 3 - (i % 4) * 5,
        )
        for i in range(n)
    ]


def _as_tuples(records: list[Record]) -> list[RecordIn]:
    return [(r.key, r.value, r.headers, r.timestamp) for r in records]


# -- varints ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,encoded",
    [
        (0, b"\x00"),
        (-1, b"\x01"),
        (1, b"\x02"),
        (63, b"\x7e"),
        (-64, b"\x7f"),
        (64, b"\x80\x01"),
        (300, b"\xd8\x04"),
        (-(1 << 63), b"\xff" * 9 + b"\x01"),
        ((1 << 63) - 1, b"\xfe" + b"\xff" * 8 + b"\x01"),
    ],
)
def test_varint_vectors(value: int, encoded: bytes) -> None:
    assert encode_varint(value) == encoded
    assert read_varint(encoded + b"rest", 0) == (value, len(encoded))


@given(st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1))
def test_varint_round_trip(value: int) -> None:
    enc = encode_varint(value)
    assert read_varint(b"xx" + enc, 2) == (value, 2 + len(enc))


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_uvarint_round_trip(value: int) -> None:
    out = bytearray()
    write_uvarint(out, value)
    assert read_uvarint(bytes(out), 0) == (value, len(out))


def test_varint_errors() -> None:
    with pytest.raises(InvalidBatch):
        read_varint(b"\x80\x80", 0)  # runs off the end
    with pytest.raises(InvalidBatch):
        read_varint(b"\xff" * 11, 0)  # longer than 10 bytes
    with pytest.raises(ValueError):
        encode_varint(1 << 63)


# -- round trips --------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    records=records_strategy,
    codec=st.sampled_from(CODECS),
    base_offset=st.integers(min_value=0, max_value=1 << 50),
    leader_epoch=st.integers(min_value=-1, max_value=1000),
)
def test_build_then_decode_round_trip(
    records: list[RecordIn], codec: int, base_offset: int, leader_epoch: int
) -> None:
    batch = build_batch(
        records, base_offset=base_offset, compression=codec, partition_leader_epoch=leader_epoch
    )
    h = validate_batch(batch, deep=True)
    assert h.size == len(batch)
    assert h.compression == codec
    assert h.records_count == len(records)
    assert h.last_offset_delta == len(records) - 1
    assert h.base_offset == base_offset
    assert h.partition_leader_epoch == leader_epoch
    assert h.base_timestamp == records[0][3]
    assert h.max_timestamp == max(r[3] for r in records)
    assert (h.producer_id, h.producer_epoch, h.base_sequence) == (-1, -1, -1)
    assert not h.is_transactional and not h.is_control and not h.log_append_time
    decoded = list(iter_records(batch))
    assert [r.offset for r in decoded] == [base_offset + i for i in range(len(records))]
    assert _as_tuples(decoded) == records
    assert decode_records(memoryview(batch)) == decoded


@pytest.mark.parametrize("codec", CODECS)
def test_round_trip_at_a_position_in_a_larger_buffer(codec: int) -> None:
    records = _sample_records(200)
    first = build_batch(records[:120], compression=codec, base_offset=10)
    second = build_batch(records[120:], compression=codec, base_offset=130, log_append_time=True)
    buf = memoryview(bytearray(b"\x00" * 5 + first + second))
    headers = list(iter_headers(buf, 5))
    assert [p for p, _ in headers] == [5, 5 + len(first)]
    out: list[Record] = []
    for p, h in headers:
        assert validate_batch(buf, p, deep=True) == h
        out.extend(iter_records(buf, p, h))
    assert [r.offset for r in out] == list(range(10, 210))
    assert _as_tuples(out[:120]) == records[:120]
    max_ts = max(r[3] for r in records[120:])
    assert [r.timestamp for r in out[120:]] == [max_ts] * 80


def test_producer_fields_and_flags() -> None:
    batch = build_batch(
        _sample_records(5),
        producer_id=4242,
        producer_epoch=7,
        base_sequence=100,
        transactional=True,
    )
    h = validate_batch(batch, deep=True)
    assert (h.producer_id, h.producer_epoch, h.base_sequence) == (4242, 7, 100)
    assert h.is_transactional and not h.is_control
    assert h.attributes == ATTR_TRANSACTIONAL


def test_log_append_time_uses_max_timestamp_for_every_record() -> None:
    records = _sample_records(10)
    batch = build_batch(records, log_append_time=True)
    h = validate_batch(batch)
    assert h.attributes & ATTR_TIMESTAMP_TYPE and h.log_append_time
    assert {r.timestamp for r in iter_records(batch)} == {h.max_timestamp}
    # the broker stamping a LogAppendTime batch: new max timestamp, CRC recomputed
    buf = bytearray(batch)
    set_max_timestamp(buf, 0, 1_800_000_000_000)
    assert not check_crc(buf, 0, read_header(buf))
    update_crc(buf, 0)
    validate_batch(buf, deep=True)
    assert {r.timestamp for r in iter_records(buf)} == {1_800_000_000_000}


def test_create_time_timestamps_can_go_backwards() -> None:
    records: list[RecordIn] = [(b"a", b"1", [], 5000), (b"b", b"2", [], 1000), (b"c", b"3", [], 9000)]
    batch = build_batch(records)
    h = read_header(batch)
    assert (h.base_timestamp, h.max_timestamp) == (5000, 9000)
    assert [r.timestamp for r in iter_records(batch)] == [5000, 1000, 9000]


def test_large_values_and_many_records() -> None:
    records: list[RecordIn] = [(b"k", b"v" * 1_000_000, [("h" * 10_000, b"x" * 70_000)], 1)]
    records += [(None, b"%d" % i, [], 2) for i in range(20_000)]
    batch = build_batch(records, compression=COMPRESSION_LZ4)
    decoded = list(iter_records(batch))
    assert len(decoded) == 20_001
    assert _as_tuples(decoded) == records
    assert decoded[-1].offset == 20_000


def test_build_rejects_empty_and_unknown_codec() -> None:
    with pytest.raises(ValueError):
        build_batch([])
    with pytest.raises(compression.CompressionError):
        build_batch(_sample_records(1), compression=5)


# -- offsets, CRC and damage --------------------------------------------------------------------------------


def test_set_base_offset_keeps_crc_valid() -> None:
    batch = bytearray(build_batch(_sample_records(20), compression=COMPRESSION_ZSTD))
    set_base_offset(batch, 0, 123_456_789)
    h = validate_batch(batch, deep=True)
    assert h.base_offset == 123_456_789 and h.last_offset == 123_456_789 + 19
    assert [r.offset for r in iter_records(batch)] == list(range(123_456_789, 123_456_789 + 20))
    view = memoryview(bytearray(b"\xff" * 3) + batch)
    set_base_offset(view, 3, 7)
    assert validate_batch(view, 3).base_offset == 7


@pytest.mark.parametrize("codec", CODECS)
def test_any_flipped_bit_in_crc_range_is_detected(codec: int) -> None:
    batch = build_batch(_sample_records(8), compression=codec)
    for i in range(17, len(batch)):
        damaged = bytearray(batch)
        damaged[i] ^= 0x10
        with pytest.raises(CorruptBatch):
            validate_batch(damaged)


def test_fields_outside_the_crc() -> None:
    batch = build_batch(_sample_records(3))
    for i in list(range(0, 8)) + list(range(12, 16)):  # base offset and partition leader epoch
        damaged = bytearray(batch)
        damaged[i] ^= 0x01
        validate_batch(damaged, deep=True)
    damaged = bytearray(batch)
    damaged[16] = 1  # magic
    with pytest.raises(InvalidBatch, match="magic"):
        validate_batch(damaged)


def test_truncated_batches() -> None:
    batch = build_batch(_sample_records(10), compression=COMPRESSION_GZIP)
    for n in range(len(batch)):
        with pytest.raises(CorruptBatch):
            validate_batch(batch[:n])
        with pytest.raises(InvalidBatch):
            list(iter_records(batch[:n]))
    # a stream cut in the middle of its second batch yields only the complete first one
    two = batch + batch
    assert [p for p, _ in iter_headers(two[: len(two) - 1])] == [0]
    assert [p for p, _ in iter_headers(two[: len(batch) + 30])] == [0]
    assert [p for p, _ in iter_headers(two)] == [0, len(batch)]


def test_length_too_small_is_corrupt() -> None:
    batch = bytearray(build_batch(_sample_records(1)))
    struct.pack_into(">i", batch, 8, 10)
    with pytest.raises(CorruptBatch):
        validate_batch(batch)


# -- malformed records under a valid CRC --------------------------------------------------------------------


def _raw_batch(
    records_section: bytes,
    count: int,
    *,
    last_offset_delta: int | None = None,
    attributes: int = 0,
    base_offset: int = 0,
) -> bytes:
    lod = count - 1 if last_offset_delta is None else last_offset_delta
    tail = struct.pack(">hiqqqhii", attributes, lod, 1000, 1000, -1, -1, -1, count) + records_section
    crc = crc32c.crc32c(tail)
    return struct.pack(">qiibI", base_offset, len(tail) + 9, -1, 2, crc) + tail


def _record(
    offset_delta: int = 0,
    key: bytes | None = b"k",
    value: bytes | None = b"v",
    headers: list[tuple[bytes, bytes | None]] | None = None,
    *,
    length_adjust: int = 0,
    extra: bytes = b"",
) -> bytes:
    body = bytearray(b"\x00") + encode_varint(0) + encode_varint(offset_delta)
    for part in (key, value):
        if part is None:
            body += encode_varint(-1)
        else:
            body += encode_varint(len(part)) + part
    hs = headers or []
    body += encode_varint(len(hs))
    for hk, hv in hs:
        body += encode_varint(len(hk)) + hk
        body += encode_varint(-1) if hv is None else encode_varint(len(hv)) + hv
    body += extra
    return encode_varint(len(body) + length_adjust) + bytes(body)


def _body(body: bytes) -> bytes:
    return encode_varint(len(body)) + body


def test_raw_helpers_match_build_batch() -> None:
    raw = _raw_batch(_record(0) + _record(1, None, None, [(b"h", None)]), 2)
    assert _as_tuples(list(iter_records(raw))) == [(b"k", b"v", [], 1000), (None, None, [("h", None)], 1000)]
    validate_batch(raw, deep=True)


def _malformed() -> Iterator[tuple[str, bytes]]:
    two = _record(0) + _record(1)
    yield "count too high", _raw_batch(two + b"", 3, last_offset_delta=2)
    yield "count too low", _raw_batch(two, 1)
    yield "trailing garbage", _raw_batch(two + b"\x00\x00\x00\x00\x00\x00\x00\x00", 2)
    yield "length past end", _raw_batch(_record(0) + _record(1, length_adjust=5), 2)
    yield "length too short", _raw_batch(_record(0, length_adjust=-1) + _record(1), 2)
    yield "length too long", _raw_batch(_record(0, extra=b"\x00") + _record(1), 2)
    yield "negative length", _raw_batch(encode_varint(-3) + b"\x00" * 20, 1)
    yield "key past record", _raw_batch(_body(b"\x00\x00\x00" + encode_varint(50) + b"k\x02v\x00"), 1)
    yield "bad key length", _raw_batch(_record(0).replace(b"\x02k", b"\x03k"), 1)
    yield "bad header key", _raw_batch(_record(0, headers=[(b"\xff\xfe", b"x")]), 1)
    yield "null header key", _raw_batch(_body(b"\x00\x00\x00\x01\x01\x02\x01\x01"), 1)
    yield "negative header count", _raw_batch(_body(b"\x00\x00\x00\x01\x01\x01"), 1)
    yield "bad header value length", _raw_batch(_body(b"\x00\x00\x00\x01\x01\x02\x02h\x05"), 1)
    yield "header count", _raw_batch(_body(b"\x00\x00\x00\x01\x01" + encode_varint(1 << 40)), 1)
    yield "varint past end", _raw_batch(b"\x0c\x00" + b"\x80" * 5, 1)


@pytest.mark.parametrize("case", [c for c, _ in _malformed()])
def test_malformed_records_raise_invalid_batch(case: str) -> None:
    raw = dict(_malformed())[case]
    with pytest.raises(InvalidBatch) as info:
        list(iter_records(raw))
    assert not isinstance(info.value, CorruptBatch)
    with pytest.raises(InvalidBatch):
        validate_batch(raw, deep=True)


@pytest.mark.parametrize("codec", [COMPRESSION_GZIP, COMPRESSION_SNAPPY, COMPRESSION_LZ4, COMPRESSION_ZSTD])
def test_malformed_compressed_payload(codec: int) -> None:
    good = compression.compress(codec, _record(0) + _record(1))
    validate_batch(_raw_batch(good, 2, attributes=codec), deep=True)
    for bad in (b"not compressed at all", good[:-3]):
        raw = _raw_batch(bad, 2, attributes=codec)
        validate_batch(raw)  # shallow: the CRC is fine and no record is touched
        with pytest.raises(InvalidBatch):
            validate_batch(raw, deep=True)
        with pytest.raises(InvalidBatch):
            iter_records(raw)


def test_decompression_limit_in_iter_records() -> None:
    batch = build_batch([(None, b"\x00" * 2_000_000, [], 0)], compression=COMPRESSION_ZSTD)
    assert len(batch) < 10_000
    with pytest.raises(InvalidBatch, match="exceeds"):
        iter_records(batch, max_size=1_000_000)
    with pytest.raises(InvalidBatch, match="exceeds"):
        validate_batch(batch, deep=True, max_size=1_000_000)
    assert len(next(iter_records(batch)).value or b"") == 2_000_000


# -- header-level validation --------------------------------------------------------------------------------


def test_header_checks() -> None:
    one = _record(0)
    with pytest.raises(InvalidBatch, match="negative record count"):
        validate_batch(_raw_batch(one, -1, last_offset_delta=0))
    with pytest.raises(InvalidBatch, match="last offset delta"):
        validate_batch(_raw_batch(one + _record(1), 2, last_offset_delta=5))
    with pytest.raises(UnsupportedCompression):
        validate_batch(_raw_batch(one, 1, attributes=6))
    with pytest.raises(UnsupportedCompression):
        iter_records(_raw_batch(one, 1, attributes=7))
    with pytest.raises(InvalidBatch, match="cannot fit"):
        validate_batch(_raw_batch(one, 1000))
    with pytest.raises(InvalidBatch, match="no payload"):
        validate_batch(_raw_batch(b"", 1, attributes=COMPRESSION_GZIP))


def test_shallow_validation_does_not_touch_records() -> None:
    raw = _raw_batch(_record(0) + b"\x00" * 20, 2)  # bad second record, but count, sizes and CRC agree
    assert validate_batch(raw).records_count == 2
    with pytest.raises(InvalidBatch):
        validate_batch(raw, deep=True)


def test_offset_deltas_in_deep_validation() -> None:
    gap = _raw_batch(_record(0) + _record(2), 2, last_offset_delta=2)
    with pytest.raises(InvalidBatch):
        validate_batch(gap)  # a producer batch: last_offset_delta must be count - 1
    h = validate_batch(gap, producer=False, deep=True)  # what compaction leaves behind
    assert [r.offset for r in iter_records(gap, 0, h)] == [0, 2]
    reordered = _raw_batch(_record(1) + _record(0), 2)
    validate_batch(reordered)
    with pytest.raises(InvalidBatch, match="offset delta"):
        validate_batch(reordered, deep=True)
    with pytest.raises(InvalidBatch, match="offset delta"):
        validate_batch(reordered, deep=True, producer=False)
    beyond = _raw_batch(_record(0) + _record(5), 2, last_offset_delta=3)
    with pytest.raises(InvalidBatch, match="offset delta"):
        validate_batch(beyond, deep=True, producer=False)
    emptied = _raw_batch(b"", 0, last_offset_delta=9)
    assert validate_batch(emptied, deep=True, producer=False).records_count == 0
    emptied = _raw_batch(b"", 0, last_offset_delta=9, attributes=COMPRESSION_ZSTD)
    assert validate_batch(emptied, deep=True, producer=False).records_count == 0
    assert list(iter_records(emptied)) == []


# -- control batches ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("commit", [True, False])
def test_control_batch(commit: bool) -> None:
    batch = build_control_batch(
        commit=commit,
        producer_id=99,
        producer_epoch=3,
        coordinator_epoch=17,
        timestamp_ms=123,
        base_offset=40,
    )
    h = validate_batch(batch, deep=True)
    assert h.is_control and h.is_transactional
    assert h.attributes == ATTR_CONTROL | ATTR_TRANSACTIONAL
    assert (h.producer_id, h.producer_epoch, h.base_sequence, h.records_count) == (99, 3, -1, 1)
    (record,) = iter_records(batch)
    assert record.offset == 40 and record.timestamp == 123
    assert record.key == struct.pack(">hh", 0, int(commit))
    assert record.value == struct.pack(">hi", 0, 17)
    assert parse_control_record(record) == (commit, 17)


def test_parse_control_record_other_types_and_malformed() -> None:
    leader_change = Record(0, 0, struct.pack(">hh", 0, 2), b"\x00\x00whatever", [])
    assert parse_control_record(leader_change) is None
    for bad in (
        Record(0, 0, None, None, []),
        Record(0, 0, b"\x00", b"", []),
        Record(0, 0, struct.pack(">hh", 0, 1), b"\x00\x00", []),
        Record(0, 0, struct.pack(">hh", 0, 0), None, []),
        Record(0, 0, struct.pack(">hh", -1, 1), struct.pack(">hi", 0, 1), []),
    ):
        with pytest.raises(InvalidBatch):
            parse_control_record(bad)
    # a newer marker version with a longer value still parses
    newer = Record(0, 0, struct.pack(">hh", 1, 1), struct.pack(">hi", 1, 5) + b"extra", [])
    assert parse_control_record(newer) == (True, 5)


def test_header_size_constant() -> None:
    assert len(build_batch([(None, None, [], 0)])) == BATCH_HEADER_SIZE + 7  # the smallest record: 7 bytes


# -- interoperability with kafka-python's own record builder and reader -------------------------------------


class _CramjamSnappy:
    """What python-snappy (>= 0.7) is: raw snappy blocks from cramjam. kafka-python does its own xerial
    framing around it; only the block codec comes from here."""

    @staticmethod
    def compress(data: bytes) -> bytes:
        import cramjam

        return bytes(cramjam.snappy.compress_raw(data))

    @staticmethod
    def decompress(data: bytes) -> bytes:
        import cramjam

        return bytes(cramjam.snappy.decompress_raw(data))


@pytest.fixture
def kafka_python_codecs(monkeypatch: pytest.MonkeyPatch) -> None:
    # kafka-python needs the python-snappy module for snappy; when it is not installed, give it the same raw
    # block codec python-snappy would (its xerial framing and detection stay kafka-python's own code).
    if not kafka_codec.has_snappy():
        monkeypatch.setattr(kafka_codec, "snappy", _CramjamSnappy)
    for codec, has in ((COMPRESSION_LZ4, kafka_codec.has_lz4), (COMPRESSION_ZSTD, kafka_codec.has_zstd)):
        assert has(), f"kafka-python cannot handle codec {codec}"


def _kafka_python_batch(
    records: list[RecordIn], codec: int, *, producer: tuple[int, int, int] | None = None
) -> bytes:
    pid, epoch, seq = producer or (-1, -1, -1)
    builder = kafka_default_records.DefaultRecordBatchBuilder(
        magic=2,
        compression_type=codec,
        is_transactional=producer is not None,
        producer_id=pid,
        producer_epoch=epoch,
        base_sequence=seq,
        batch_size=1 << 30,
    )
    for i, (key, value, headers, ts) in enumerate(records):
        assert builder.append(i, timestamp=ts, key=key, value=value, headers=headers) is not None
    return bytes(builder.build())


@pytest.mark.usefixtures("kafka_python_codecs")
@pytest.mark.parametrize("codec", CODECS)
def test_kafkite_decodes_kafka_python_batches(codec: int) -> None:
    records = _sample_records(300)
    batch = _kafka_python_batch(records, codec)
    h = validate_batch(batch, deep=True)
    assert h.compression == codec  # the sample compresses well, so kafka-python kept the codec
    assert h.records_count == 300
    if codec == COMPRESSION_SNAPPY:
        assert batch[BATCH_HEADER_SIZE : BATCH_HEADER_SIZE + 8] == compression.XERIAL_MAGIC
    decoded = list(iter_records(batch))
    assert _as_tuples(decoded) == records
    assert [r.offset for r in decoded] == list(range(300))


@pytest.mark.usefixtures("kafka_python_codecs")
def test_kafkite_decodes_kafka_python_transactional_batch_and_memory_records() -> None:
    records = _sample_records(20)
    builder = kafka_memory_records.MemoryRecordsBuilder(
        magic=2,
        compression_type=COMPRESSION_ZSTD,
        batch_size=1 << 20,
        offset=0,
        transactional=True,
        producer_id=77,
        producer_epoch=2,
        base_sequence=500,
    )
    for key, value, headers, ts in records:
        assert builder.append(ts, key, value, headers) is not None
    builder.close()
    data = bytes(builder.buffer())
    (pos, h), *rest = list(iter_headers(data))
    assert not rest
    assert validate_batch(data, pos, deep=True) == h
    assert (h.producer_id, h.producer_epoch, h.base_sequence, h.is_transactional) == (77, 2, 500, True)
    assert _as_tuples(list(iter_records(data, pos, h))) == records


@pytest.mark.usefixtures("kafka_python_codecs")
@pytest.mark.parametrize("codec", CODECS)
def test_kafka_python_reads_kafkite_batches(codec: int) -> None:
    records = _sample_records(300)
    first = build_batch(records[:200], compression=codec, base_offset=1000, producer_id=5, producer_epoch=1)
    second = build_batch(records[200:], compression=codec, base_offset=1200, log_append_time=True)
    got: list[tuple[int, int, int, RecordIn]] = []
    batches = kafka_memory_records.MemoryRecords(first + second)
    while (batch := batches.next_batch()) is not None:
        assert batch.validate_crc()
        assert batch.compression_type == codec
        for r in batch:
            assert r.validate_crc()
            got.append(
                (r.offset, r.timestamp_type, batch.producer_id, (r.key, r.value, r.headers, r.timestamp))
            )
    assert [o for o, _, _, _ in got] == list(range(1000, 1300))
    assert [t for _, t, _, _ in got] == [0] * 200 + [1] * 100
    assert {p for _, _, p, _ in got[:200]} == {5}
    assert [rec for _, _, _, rec in got[:200]] == records[:200]
    max_ts = max(r[3] for r in records[200:])
    assert [rec[:3] for _, _, _, rec in got[200:]] == [r[:3] for r in records[200:]]
    assert {rec[3] for _, _, _, rec in got[200:]} == {max_ts}


@pytest.mark.parametrize("commit", [True, False])
def test_kafka_python_reads_kafkite_control_batch(commit: bool) -> None:
    data = build_control_batch(
        commit=commit, producer_id=12, producer_epoch=0, coordinator_epoch=3, timestamp_ms=99
    )
    batch = kafka_memory_records.MemoryRecords(data).next_batch()
    assert batch.is_control_batch and batch.is_transactional and batch.validate_crc()
    (marker,) = list(batch)
    assert isinstance(marker, kafka_default_records.ControlRecord)
    assert (marker.commit, marker.abort) == (commit, not commit)


@pytest.mark.usefixtures("kafka_python_codecs")
@settings(max_examples=40, deadline=None)
@given(records=records_strategy, codec=st.sampled_from(CODECS))
def test_kafka_python_agrees_on_random_batches(records: list[RecordIn], codec: int) -> None:
    ours = build_batch(records, compression=codec)
    theirs = kafka_memory_records.MemoryRecords(ours).next_batch()
    assert theirs.validate_crc()
    assert [(r.key, r.value, r.headers, r.timestamp) for r in theirs] == records
    built = _kafka_python_batch(records, codec)
    assert _as_tuples(list(iter_records(built))) == records
