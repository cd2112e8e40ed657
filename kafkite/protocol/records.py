"""Record batch v2 (magic 2): a zero-copy header view, CRC32C check and in-place base-offset rewrite.

Layout of a batch (all big-endian)::

    0  base_offset            int64   (not covered by the CRC)
    8  batch_length           int32   bytes after this field
    12 partition_leader_epoch int32   (not covered by the CRC)
    16 magic                  int8    always 2
    17 crc                    uint32  CRC32C of bytes 21..end
    21 attributes             int16
    23 last_offset_delta      int32
    27 base_timestamp         int64
    35 max_timestamp          int64
    43 producer_id            int64
    51 producer_epoch         int16
    53 base_sequence          int32
    57 records_count          int32
    61 records ...

Each record (after decompression of the records section when the batch is compressed)::

    length            varint  (zigzag, as all the signed varints here)
    attributes        int8    (unused, 0)
    timestamp_delta   varlong relative to base_timestamp
    offset_delta      varint  relative to base_offset
    key_length        varint  (-1 = null)   key
    value_length      varint  (-1 = null)   value
    headers_count     varint
      header_key_length   varint   header key (utf-8)
      header_value_length varint (-1 = null)   header value

The header view (``read_header``, ``check_crc``, ``set_base_offset``...) never touches the records; only
``iter_records`` and ``validate_batch(deep=True)`` decode them.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import crc32c as _crc32c

from kafkite.protocol.compression import CompressionError, compress, decompress

BATCH_HEADER_SIZE = 61
LOG_OVERHEAD = 12  # base_offset + batch_length: bytes before the length-counted part
CRC_START = 21

ATTR_COMPRESSION_MASK = 0x07
ATTR_TIMESTAMP_TYPE = 0x08  # 1 = LogAppendTime
ATTR_TRANSACTIONAL = 0x10
ATTR_CONTROL = 0x20
ATTR_DELETE_HORIZON = 0x40

COMPRESSION_NONE = 0
COMPRESSION_GZIP = 1
COMPRESSION_SNAPPY = 2
COMPRESSION_LZ4 = 3
COMPRESSION_ZSTD = 4

_HEADER = struct.Struct(">qiibIhiqqqhii")
_BASE_OFFSET = struct.Struct(">q")
_MAX_TS = struct.Struct(">q")


class InvalidBatch(ValueError):
    """The bytes are not a well-formed v2 record batch (maps to INVALID_RECORD, or CORRUPT_MESSAGE for the
    ``CorruptBatch`` subclass)."""


class CorruptBatch(InvalidBatch):
    """The batch's bytes are damaged: CRC mismatch, or a length that runs past the data (CORRUPT_MESSAGE)."""


class UnsupportedCompression(InvalidBatch):
    """The batch names a compression codec that does not exist (UNSUPPORTED_COMPRESSION_TYPE)."""


class BatchHeader(NamedTuple):
    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def size(self) -> int:
        """Total bytes of the batch on the wire and on disk."""
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def compression(self) -> int:
        return self.attributes & ATTR_COMPRESSION_MASK

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & ATTR_TRANSACTIONAL)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & ATTR_CONTROL)

    @property
    def log_append_time(self) -> bool:
        return bool(self.attributes & ATTR_TIMESTAMP_TYPE)


def read_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """Parse the fixed header of the batch starting at ``pos``; raises InvalidBatch if it cannot be one."""
    if len(buf) - pos < BATCH_HEADER_SIZE:
        raise CorruptBatch("truncated record batch header")
    h = BatchHeader._make(_HEADER.unpack_from(buf, pos))
    if h.magic != 2:
        raise InvalidBatch(f"unsupported record batch magic {h.magic}")
    if h.batch_length < BATCH_HEADER_SIZE - LOG_OVERHEAD:
        raise CorruptBatch(f"record batch length {h.batch_length} is too small")
    return h


def crc_of(buf: bytes | bytearray | memoryview, pos: int, header: BatchHeader) -> int:
    end = pos + header.size
    return int(_crc32c.crc32c(memoryview(buf)[pos + CRC_START : end]))


def check_crc(buf: bytes | bytearray | memoryview, pos: int, header: BatchHeader) -> bool:
    return crc_of(buf, pos, header) == header.crc


def set_base_offset(buf: bytearray | memoryview, pos: int, base_offset: int) -> None:
    """Rewrite the base offset in place (it lies outside the CRC, so the batch stays valid)."""
    _BASE_OFFSET.pack_into(buf, pos, base_offset)


def set_max_timestamp(buf: bytearray | memoryview, pos: int, ts: int) -> None:
    """Used for LogAppendTime topics; the CRC must be recomputed afterwards (see ``update_crc``)."""
    _MAX_TS.pack_into(buf, pos + 35, ts)


def update_crc(buf: bytearray | memoryview, pos: int) -> None:
    h = read_header(buf, pos)
    struct.pack_into(">I", buf, pos + 17, crc_of(buf, pos, h))


def iter_headers(buf: bytes | bytearray | memoryview, pos: int = 0) -> Iterator[tuple[int, BatchHeader]]:
    """Yield (position, header) for each complete batch in ``buf``; stops at the first incomplete one.

    Raises InvalidBatch for a header that is malformed (not for a batch that is merely cut short at the end).
    """
    n = len(buf)
    while n - pos >= BATCH_HEADER_SIZE:
        h = read_header(buf, pos)
        if pos + h.size > n:
            return
        yield pos, h
        pos += h.size


# -- varints ------------------------------------------------------------------------------------------------
#
# Records use zigzag varints (int32) and varlongs (int64); both share one encoding and differ only in range.


def read_uvarint(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    """Decode an unsigned LEB128 varint at ``pos``; returns (value, next position). At most 10 bytes."""
    try:
        x = buf[pos]
        if x < 0x80:
            return x, pos + 1
        result = x & 0x7F
        shift = 7
        pos += 1
        while True:
            x = buf[pos]
            pos += 1
            result |= (x & 0x7F) << shift
            if x < 0x80:
                return result, pos
            shift += 7
            if shift >= 70:
                raise InvalidBatch("varint is longer than 10 bytes")
    except IndexError:
        raise InvalidBatch("varint runs past the end of the data") from None


def read_varint(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    """Decode a zigzag (signed) varint or varlong at ``pos``; returns (value, next position)."""
    z, pos = read_uvarint(buf, pos)
    return (z >> 1) ^ -(z & 1), pos


def write_uvarint(out: bytearray, value: int) -> None:
    if value < 0:
        raise ValueError("unsigned varint cannot be negative")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _encode_varint_slow(value: int) -> bytes:
    z = (value << 1) ^ (value >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_SMALL_VARINTS = 1 << 13  # 0..8191 encode in at most 2 bytes
_VARINT_TABLE: list[bytes] = [_encode_varint_slow(i) for i in range(_SMALL_VARINTS)]
_NULL_LENGTH = _encode_varint_slow(-1)


def encode_varint(value: int) -> bytes:
    """Zigzag-encode a signed varint/varlong (64-bit range)."""
    if 0 <= value < _SMALL_VARINTS:
        return _VARINT_TABLE[value]
    if not -(1 << 63) <= value < (1 << 63):
        raise ValueError(f"varlong out of range: {value}")
    return _encode_varint_slow(value)


def write_varint(out: bytearray, value: int) -> None:
    out += encode_varint(value)


def varint_size(value: int) -> int:
    return len(encode_varint(value))


# -- records ------------------------------------------------------------------------------------------------

Header = tuple[str, bytes | None]

# Upper bound on the decompressed records section of one batch unless the caller says otherwise.
DEFAULT_MAX_DECOMPRESSED_SIZE = 256 * 1024 * 1024
_MIN_RECORD_BODY = 6  # attributes, timestamp delta, offset delta, key length, value length, header count
_MIN_RECORD_SIZE = 1 + _MIN_RECORD_BODY


class Record(NamedTuple):
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[Header]


def _batch_end(buf: bytes | bytearray | memoryview, pos: int, header: BatchHeader) -> int:
    end = pos + header.size
    if end > len(buf):
        raise CorruptBatch(f"record batch of {header.size} bytes runs past the end of the data")
    return end


def records_section(
    buf: bytes | bytearray | memoryview,
    pos: int = 0,
    header: BatchHeader | None = None,
    *,
    max_size: int | None = DEFAULT_MAX_DECOMPRESSED_SIZE,
) -> bytes:
    """The batch's records section as bytes, decompressed when the batch is compressed."""
    h = read_header(buf, pos) if header is None else header
    end = _batch_end(buf, pos, h)
    raw = memoryview(buf)[pos + BATCH_HEADER_SIZE : end]
    codec = h.compression
    if codec == COMPRESSION_NONE:
        return bytes(raw)
    if codec > COMPRESSION_ZSTD:
        raise UnsupportedCompression(f"unknown compression codec {codec}")
    if not raw and h.records_count == 0:
        return b""  # an empty batch left by compaction
    try:
        return decompress(codec, raw, max_size)
    except CompressionError as e:
        raise InvalidBatch(str(e)) from e


def iter_records(
    buf: bytes | bytearray | memoryview,
    pos: int = 0,
    header: BatchHeader | None = None,
    *,
    max_size: int | None = DEFAULT_MAX_DECOMPRESSED_SIZE,
) -> Iterator[Record]:
    """Decode the records of the one batch at ``pos`` (decompressing it if needed).

    Offsets and timestamps are absolute. The CRC is not checked here (see ``validate_batch``). The header and
    the decompression are checked at once; a malformed record raises InvalidBatch while iterating.
    """
    h = read_header(buf, pos) if header is None else header
    if h.records_count < 0:
        raise InvalidBatch(f"negative record count {h.records_count}")
    data = records_section(buf, pos, h, max_size=max_size)
    return _parse_records(data, h)


def decode_records(
    buf: bytes | bytearray | memoryview, pos: int = 0, header: BatchHeader | None = None
) -> list[Record]:
    """All the records of the batch at ``pos`` as a list (see ``iter_records``)."""
    return list(iter_records(buf, pos, header))


def _parse_records(data: bytes, h: BatchHeader) -> Iterator[Record]:
    try:
        yield from _parse_records_unchecked(data, h)
    except IndexError:
        raise InvalidBatch("record runs past the end of the batch") from None


def _parse_records_unchecked(data: bytes, h: BatchHeader) -> Iterator[Record]:
    count = h.records_count
    base_offset = h.base_offset
    base_ts = h.base_timestamp
    append_ts = h.max_timestamp if h.log_append_time else None
    end = len(data)
    pos = 0
    rv = read_uvarint
    for i in range(count):
        if pos >= end:
            raise InvalidBatch(f"record batch declares {count} records but holds {i}")
        z = data[pos]
        if z < 0x80:
            pos += 1
        else:
            z, pos = rv(data, pos)
        length = (z >> 1) ^ -(z & 1)
        rec_end = pos + length
        if length < _MIN_RECORD_BODY or rec_end > end:
            raise InvalidBatch(f"record {i} has an invalid length {length}")
        pos += 1  # attributes: unused
        z = data[pos]
        if z < 0x80:
            pos += 1
        else:
            z, pos = rv(data, pos)
        ts_delta = (z >> 1) ^ -(z & 1)
        z = data[pos]
        if z < 0x80:
            pos += 1
        else:
            z, pos = rv(data, pos)
        offset_delta = (z >> 1) ^ -(z & 1)

        z = data[pos]
        if z < 0x80:
            pos += 1
        else:
            z, pos = rv(data, pos)
        n = (z >> 1) ^ -(z & 1)
        key: bytes | None
        if n < 0:
            if n != -1:
                raise InvalidBatch(f"record {i} has an invalid key length {n}")
            key = None
        else:
            if pos + n > rec_end:
                raise InvalidBatch(f"record {i}: key runs past the record")
            key = data[pos : pos + n]
            pos += n

        z = data[pos]
        if z < 0x80:
            pos += 1
        else:
            z, pos = rv(data, pos)
        n = (z >> 1) ^ -(z & 1)
        value: bytes | None
        if n < 0:
            if n != -1:
                raise InvalidBatch(f"record {i} has an invalid value length {n}")
            value = None
        else:
            if pos + n > rec_end:
                raise InvalidBatch(f"record {i}: value runs past the record")
            value = data[pos : pos + n]
            pos += n

        z = data[pos]
        if z < 0x80:
            pos += 1
        else:
            z, pos = rv(data, pos)
        n_headers = (z >> 1) ^ -(z & 1)
        headers: list[Header] = []
        if n_headers:
            if n_headers < 0 or 2 * n_headers > rec_end - pos:
                raise InvalidBatch(f"record {i} has an invalid header count {n_headers}")
            for _ in range(n_headers):
                z = data[pos]
                if z < 0x80:
                    pos += 1
                else:
                    z, pos = rv(data, pos)
                n = (z >> 1) ^ -(z & 1)
                if n < 0 or pos + n > rec_end:
                    raise InvalidBatch(f"record {i} has an invalid header key length {n}")
                try:
                    hkey = data[pos : pos + n].decode()
                except UnicodeDecodeError:
                    raise InvalidBatch(f"record {i} has a header key that is not utf-8") from None
                pos += n
                z = data[pos]
                if z < 0x80:
                    pos += 1
                else:
                    z, pos = rv(data, pos)
                n = (z >> 1) ^ -(z & 1)
                hval: bytes | None
                if n < 0:
                    if n != -1:
                        raise InvalidBatch(f"record {i} has an invalid header value length {n}")
                    hval = None
                else:
                    if pos + n > rec_end:
                        raise InvalidBatch(f"record {i}: header value runs past the record")
                    hval = data[pos : pos + n]
                    pos += n
                headers.append((hkey, hval))
        if pos != rec_end:
            raise InvalidBatch(f"record {i}: declared length {length} does not match its content")
        yield Record(
            base_offset + offset_delta,
            base_ts + ts_delta if append_ts is None else append_ts,
            key,
            value,
            headers,
        )
    if pos != end:
        raise InvalidBatch(f"{end - pos} bytes of garbage after the last of {count} records")


# -- the record walker (produce validation) -----------------------------------------------------------------
#
# ``scan_records`` checks every record of a records section as Kafka's DefaultRecord.readFrom and LogValidator
# do, without building a single object per record: each varint is read inline (one and two bytes without a
# call), lengths are checked against the record and the record against the section, and only three numbers
# come back. Runs of records that share one layout (the same lengths, as a producer writes records of one
# size) are checked a column at a time: the length bytes of all of them in one strided slice, and so on, so
# that such a batch costs a few C calls per field instead of Python work per record. Both ways check exactly
# the same things (the tests compare them on random and damaged batches).

_INT32_Z = 1 << 32  # an unsigned (zigzag) varint32 must be below this
_NON_ASCII = re.compile(rb"[\x80-\xff]")
_INT64_Z = 1 << 64


class ScanResult(NamedTuple):
    null_keys: int  # records without a key
    min_ts_delta: int  # smallest and largest timestamp delta (0, 0 for an empty section)
    max_ts_delta: int


def _uvarint_slow(d: bytes | bytearray | memoryview, pos: int, limit: int, what: str) -> tuple[int, int]:
    """An unsigned varint of at most 5 (int32) or 10 (int64) bytes whose value is below ``limit``."""
    max_bytes = 5 if limit == _INT32_Z else 10
    result = 0
    shift = 0
    start = pos
    while True:
        b = d[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if pos - start >= max_bytes:
            raise InvalidBatch(f"{what} varint is longer than {max_bytes} bytes")
    if result >= limit:
        raise InvalidBatch(f"{what} varint overflows its {32 if limit == _INT32_Z else 64} bits")
    return result, pos


def _scan_generic(
    d: bytes | bytearray | memoryview, pos: int, end: int, first: int, stop: int
) -> tuple[int, int, int, int]:
    """Walk records ``first`` .. ``stop - 1`` from ``pos``: (next position, null keys, min ts, max ts)."""
    nulls = 0
    tmin = 1 << 63
    tmax = -(1 << 63)
    zi = first << 1  # the zigzag encoding of the expected offset delta
    slow = _uvarint_slow
    i32 = _INT32_Z
    non_ascii = _NON_ASCII.search
    for i in range(first, stop):
        # length
        z = d[pos]
        if z < 0x80:
            pos += 1
        else:
            y = d[pos + 1]
            if y < 0x80:
                z = (z & 0x7F) | (y << 7)
                pos += 2
            else:
                z, pos = slow(d, pos, i32, "record length")
        if z & 1 or z < 12:
            raise InvalidBatch(f"record {i} has an invalid length {(z >> 1) ^ -(z & 1)}")
        rec_end = pos + (z >> 1)
        if rec_end > end:
            raise InvalidBatch(f"record {i} of {z >> 1} bytes runs past the end of the batch")
        # attributes (unused in v2: zero, as every producer writes them), then the timestamp delta (a varlong)
        if d[pos]:
            raise InvalidBatch(
                f"record {i} has attributes {d[pos]:#x}; record attributes are unused and zero"
            )
        p = pos + 1
        z = d[p]
        if z < 0x80:
            p += 1
        else:
            y = d[p + 1]
            if y < 0x80:
                z = (z & 0x7F) | (y << 7)
                p += 2
            else:
                z, p = slow(d, p, _INT64_Z, "timestamp delta")
        t = (z >> 1) ^ -(z & 1)
        if t < tmin:
            tmin = t
        if t > tmax:
            tmax = t
        # offset delta: must be the record's index
        z = d[p]
        if z < 0x80:
            p += 1
        else:
            y = d[p + 1]
            if y < 0x80:
                z = (z & 0x7F) | (y << 7)
                p += 2
            else:
                z, p = slow(d, p, i32, "offset delta")
        if z != zi:
            raise InvalidBatch(f"record {i} has offset delta {(z >> 1) ^ -(z & 1)}, expected {i}")
        zi += 2
        # key
        z = d[p]
        if z < 0x80:
            p += 1
        else:
            y = d[p + 1]
            if y < 0x80:
                z = (z & 0x7F) | (y << 7)
                p += 2
            else:
                z, p = slow(d, p, i32, "key length")
        if z & 1:
            if z != 1:
                raise InvalidBatch(f"record {i} has an invalid key length {(z >> 1) ^ -(z & 1)}")
            nulls += 1
        else:
            p += z >> 1
        # value
        z = d[p]
        if z < 0x80:
            p += 1
        else:
            y = d[p + 1]
            if y < 0x80:
                z = (z & 0x7F) | (y << 7)
                p += 2
            else:
                z, p = slow(d, p, i32, "value length")
        if z & 1:
            if z != 1:
                raise InvalidBatch(f"record {i} has an invalid value length {(z >> 1) ^ -(z & 1)}")
        else:
            p += z >> 1
        # headers
        z = d[p]
        if z == 0:
            p += 1
        elif z < 0x80 and not z & 1 and z >> 1 <= (rec_end - p - 1) >> 1:
            p += 1
            for _ in range(z >> 1):
                z = d[p]
                if z < 0x80:
                    p += 1
                else:
                    z, p = slow(d, p, i32, "header key length")
                if z & 1:
                    raise InvalidBatch(f"record {i} has an invalid header key length {(z >> 1) ^ -(z & 1)}")
                q = p + (z >> 1)
                if q > rec_end:
                    raise InvalidBatch(f"record {i}: a header key runs past the record")
                if non_ascii(d, p, q) is not None:
                    _check_utf8(d, p, q, i)
                z = d[q]
                if z < 0x80:
                    p = q + 1
                else:
                    z, p = slow(d, q, i32, "header value length")
                if z & 1:
                    if z != 1:
                        raise InvalidBatch(
                            f"record {i} has an invalid header value length {(z >> 1) ^ -(z & 1)}"
                        )
                else:
                    p += z >> 1
                    if p > rec_end:
                        raise InvalidBatch(f"record {i}: a header value runs past the record")
        else:
            p = _scan_headers(d, p, rec_end, i)
        if p != rec_end:
            raise InvalidBatch(f"record {i}: its declared length {rec_end - pos} does not match its content")
        pos = rec_end
    if first == stop:
        tmin = tmax = 0
    return pos, nulls, tmin, tmax


def _check_utf8(d: bytes | bytearray | memoryview, p: int, q: int, i: int) -> None:
    try:
        bytes(d[p:q]).decode()
    except UnicodeDecodeError:
        raise InvalidBatch(f"record {i} has a header key that is not UTF-8") from None


def _scan_headers(d: bytes | bytearray | memoryview, p: int, rec_end: int, i: int) -> int:
    z, p = _uvarint_slow(d, p, _INT32_Z, "header count")
    if z & 1 or (z >> 1) > (rec_end - p) >> 1:
        raise InvalidBatch(f"record {i} has an invalid header count {(z >> 1) ^ -(z & 1)}")
    for _ in range(z >> 1):
        z, p = _uvarint_slow(d, p, _INT32_Z, "header key length")
        if z & 1:
            raise InvalidBatch(f"record {i} has an invalid header key length {(z >> 1) ^ -(z & 1)}")
        n = z >> 1
        if p + n > rec_end:
            raise InvalidBatch(f"record {i}: a header key runs past the record")
        if _NON_ASCII.search(d, p, p + n) is not None:
            _check_utf8(d, p, p + n, i)
        p += n
        z, p = _uvarint_slow(d, p, _INT32_Z, "header value length")
        if z & 1:
            if z != 1:
                raise InvalidBatch(f"record {i} has an invalid header value length {(z >> 1) ^ -(z & 1)}")
        else:
            p += z >> 1
            if p > rec_end:
                raise InvalidBatch(f"record {i}: a header value runs past the record")
    return p


# Columns of the offset deltas a run of records must carry: for indices of one varint width, the k-th byte of
# the zigzag encoding of each index, as one bytes object per byte position (extended on demand).
_DELTA_WIDTH_END = (0, 1 << 6, 1 << 13, 1 << 20)  # indices below _DELTA_WIDTH_END[w] take at most w bytes
_delta_columns: dict[int, tuple[bytes, ...]] = {}


def _offset_delta_columns(width: int, lo: int, hi: int) -> tuple[bytes, ...]:
    """The zigzag varints of ``lo .. hi-1`` (all ``width`` bytes long), one bytes object per byte position."""
    first = _DELTA_WIDTH_END[width - 1]
    cols = _delta_columns.get(width)
    have = first + len(cols[0]) if cols else first
    if cols is None or hi > have:
        top = min(_DELTA_WIDTH_END[width], max(hi, 2 * have, first + 4096))
        encoded = [_encode_varint_slow(k) for k in range(first, top)]
        cols = tuple(bytes(e[b] for e in encoded) for b in range(width))
        _delta_columns[width] = cols
    return tuple(c[lo - first : hi - first] for c in cols)


_EVEN_BYTES = bytes(range(0, 256, 2))
_HIGH_BYTES = bytes(range(0x80, 0x100))
_MIN_RUN = 4


class _Layout(NamedTuple):
    size: int  # bytes of the whole record, its length varint included
    fixed: tuple[tuple[int, int], ...]  # (offset, byte) that every record of the run repeats
    ts_at: int  # offset and width of the timestamp delta
    ts_width: int
    delta_at: int  # offset of the offset delta
    ascii_at: tuple[tuple[int, int], ...]  # (offset, length) of header keys: ASCII in every record
    null_key: bool


def _varint_width(d: bytes | bytearray | memoryview, p: int) -> int:
    w = 1
    while d[p] >= 0x80:
        p += 1
        w += 1
    return w


def _layout_of(d: bytes | bytearray | memoryview, s: int) -> _Layout:
    """The layout of the (already validated) record at ``s``."""
    fixed: list[tuple[int, int]] = []

    def take(p: int) -> tuple[int, int]:
        w = _varint_width(d, p)
        for k in range(w):
            fixed.append((p - s + k, d[p + k]))
        z, q = read_uvarint(d, p)
        return (z >> 1) ^ -(z & 1), q

    length, p = take(s)
    size = p - s + length
    fixed.append((p - s, 0))  # the attributes
    ts_at = p + 1 - s
    ts_width = _varint_width(d, p + 1)
    p += 1 + ts_width
    delta_at = p - s
    p += _varint_width(d, p)
    key_len, p = take(p)
    p += max(key_len, 0)
    value_len, p = take(p)
    p += max(value_len, 0)
    n_headers, p = take(p)
    ascii_at: list[tuple[int, int]] = []
    for _ in range(n_headers):
        n, p = take(p)
        if n:
            ascii_at.append((p - s, n))
        p += n
        n, p = take(p)
        p += max(n, 0)
    return _Layout(size, tuple(fixed), ts_at, ts_width, delta_at, tuple(ascii_at), key_len < 0)


def _common_prefix(a: bytes, b: bytes) -> int:
    """Length of the common prefix of two byte strings of equal length (binary search over slices)."""
    if a == b:
        return len(a)
    lo, hi = 0, len(a)  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def _first(pattern: re.Pattern[bytes], col: bytes) -> int:
    m = pattern.search(col)
    return len(col) if m is None else m.start()


_LOW_BYTE = re.compile(rb"[\x00-\x7f]")


def _run_length(
    d: bytes | bytearray | memoryview, s: int, m: int, lay: _Layout, first: int, width: int
) -> tuple[int, int, int]:
    """How many of the ``m`` records from ``s`` (indices ``first`` ..) have layout ``lay`` and offset deltas
    of ``width`` bytes equal to their indices, checked column by column: (how many, min and max of their
    timestamp deltas)."""
    size = lay.size
    view = isinstance(d, memoryview)

    def column(at: int, n: int) -> bytes:
        c = d[at : at + n * size : size]
        return c.tobytes() if view else bytes(c)  # type: ignore[union-attr]

    for off, byte in lay.fixed:
        col = column(s + off, m)
        m -= len(col.lstrip(bytes((byte,))))
        if not m:
            return 0, 0, 0
    at = s + lay.delta_at
    for k, expected in enumerate(_offset_delta_columns(width, first, first + m)):
        m = _common_prefix(column(at + k, m), expected[:m])
        if not m:
            return 0, 0, 0
    for off, n in lay.ascii_at:
        for k in range(n):
            m = _first(_NON_ASCII, column(s + off + k, m))
            if not m:
                return 0, 0, 0
    at = s + lay.ts_at
    if lay.ts_width == 1:
        col = column(at, m)
        m = _first(_NON_ASCII, col)
        if not m:
            return 0, 0, 0
        col = col[:m]
        if not col.translate(None, _EVEN_BYTES):
            return m, min(col) >> 1, max(col) >> 1
        zs: list[int] = list(col)
    elif lay.ts_width == 2:
        lo = column(at, m)
        hi = column(at + 1, m)
        m = min(_first(_LOW_BYTE, lo), _first(_NON_ASCII, hi))
        if not m:
            return 0, 0, 0
        zs = [(a & 0x7F) | (b << 7) for a, b in zip(lo[:m], hi[:m], strict=True)]
    else:
        return 0, 0, 0
    ts = [(z >> 1) ^ -(z & 1) for z in zs]
    return m, min(ts), max(ts)


def scan_records(d: bytes | bytearray | memoryview, pos: int, end: int, count: int) -> ScanResult:
    """Check the ``count`` records that must fill ``d[pos:end]`` exactly, as Kafka's broker does on produce.

    Every record's length (a varint of at most 5 bytes, at least the smallest record body, within the
    section), its timestamp delta (a varlong of at most 10 bytes), its offset delta (the record's index), its
    key and value lengths (-1 for null, else within the record), its header count, header key lengths (not
    null, UTF-8) and header value lengths, and that the record's fields add up to its length. Raises
    InvalidBatch with the first fault found; returns the null keys and the range of the timestamp deltas.
    """
    try:
        return _scan(d, pos, end, count)
    except IndexError:
        raise InvalidBatch("record runs past the end of the batch") from None


def _scan(d: bytes | bytearray | memoryview, pos: int, end: int, count: int) -> ScanResult:
    if count < 2 * _MIN_RUN:
        pos, nulls, tmin, tmax = _scan_generic(d, pos, end, 0, count)
    else:
        nulls = 0
        tmin = 1 << 63
        tmax = -(1 << 63)
        i = 0
        widths = len(_DELTA_WIDTH_END)
        while i < count:
            # Records of one offset-delta width: runs of one layout column by column, until a run is short
            # (records of varied layouts), then the rest of them one by one.
            width = 1
            while width < widths and i >= _DELTA_WIDTH_END[width]:
                width += 1
            segment_end = count if width == widths else min(count, _DELTA_WIDTH_END[width])
            while i < segment_end:
                start = pos
                pos, n, lo, hi = _scan_generic(d, pos, end, i, i + 1)
                i += 1
                m = min(segment_end - i, (end - pos) // max(1, pos - start))
                if m >= _MIN_RUN and width < widths:
                    lay = _layout_of(d, start)
                    run, rlo, rhi = _run_length(d, pos, m, lay, i, width)
                    if run:
                        pos += run * lay.size
                        i += run
                        n += run if lay.null_key else 0
                        lo = min(lo, rlo)
                        hi = max(hi, rhi)
                    if run >= _MIN_RUN:
                        nulls += n
                        tmin = min(tmin, lo)
                        tmax = max(tmax, hi)
                        continue
                if i < segment_end:
                    pos, n2, lo2, hi2 = _scan_generic(d, pos, end, i, segment_end)
                    i = segment_end
                    n += n2
                    lo = min(lo, lo2)
                    hi = max(hi, hi2)
                nulls += n
                tmin = min(tmin, lo)
                tmax = max(tmax, hi)
    if pos != end:
        raise InvalidBatch(f"{end - pos} bytes after the last of {count} records")
    return ScanResult(nulls, tmin, tmax)


# -- validation ---------------------------------------------------------------------------------------------


def validate_batch(
    buf: bytes | bytearray | memoryview,
    pos: int = 0,
    *,
    deep: bool = False,
    producer: bool = True,
    max_size: int | None = DEFAULT_MAX_DECOMPRESSED_SIZE,
) -> BatchHeader:
    """Check the batch at ``pos`` and return its header.

    Checks magic, length, CRC (``CorruptBatch`` on mismatch or truncation), codec, record count and
    last_offset_delta. A producer batch (``producer=True``, the default) must have
    ``last_offset_delta == records_count - 1``; a batch from a log (compacted) only needs
    ``last_offset_delta >= records_count - 1``. Without ``deep`` no record is touched; with it every record is
    decoded and its offset delta checked (consecutive from 0 for a producer batch, increasing otherwise).
    """
    h = read_header(buf, pos)
    _batch_end(buf, pos, h)
    if crc_of(buf, pos, h) != h.crc:
        raise CorruptBatch("record batch CRC mismatch")
    count = h.records_count
    if count < 0:
        raise InvalidBatch(f"negative record count {count}")
    if h.compression > COMPRESSION_ZSTD:
        raise UnsupportedCompression(f"unknown compression codec {h.compression}")
    lod = h.last_offset_delta
    if lod < 0:
        raise InvalidBatch(f"negative last offset delta {lod}")
    if count > 0:
        if producer and lod != count - 1:
            raise InvalidBatch(f"last offset delta {lod} does not match {count} records")
        if not producer and lod < count - 1:
            raise InvalidBatch(f"last offset delta {lod} is too small for {count} records")
    body = h.size - BATCH_HEADER_SIZE
    if h.compression == COMPRESSION_NONE:
        if count * _MIN_RECORD_SIZE > body:
            raise InvalidBatch(f"{count} records cannot fit in {body} bytes")
    elif count > 0 and body == 0:
        raise InvalidBatch("compressed record batch has no payload")
    if deep:
        prev = -1
        for n, r in enumerate(iter_records(buf, pos, h, max_size=max_size)):
            delta = r.offset - h.base_offset
            if producer and delta != n:
                raise InvalidBatch(f"record {n} has offset delta {delta}, expected {n}")
            if not producer and not prev < delta <= lod:
                raise InvalidBatch(f"record {n} has offset delta {delta} out of order")
            prev = delta
    return h


# -- building -----------------------------------------------------------------------------------------------

RecordInput = tuple[bytes | None, bytes | None, Sequence[Header], int]

_HEADER_TAIL = struct.Struct(">hiqqqhii")  # attributes .. records_count: the CRC-covered part of the header
_HEADER_HEAD = struct.Struct(">qiibI")  # base_offset, batch_length, partition_leader_epoch, magic, crc


def build_batch(
    records: Sequence[RecordInput],
    *,
    base_offset: int = 0,
    compression: int = COMPRESSION_NONE,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    transactional: bool = False,
    control: bool = False,
    partition_leader_epoch: int = -1,
    log_append_time: bool = False,
) -> bytes:
    """Build one complete v2 batch, CRC included, from (key, value, headers, timestamp_ms) tuples.

    The first record's timestamp is the base timestamp, the largest one the max timestamp. With
    ``log_append_time`` the batch is flagged LogAppendTime and readers see its max timestamp on every record.
    """
    if not records:
        raise ValueError("a record batch needs at least one record")
    base_ts = records[0][3]
    max_ts = base_ts
    body = bytearray()
    rec = bytearray()
    table = _VARINT_TABLE
    small = _SMALL_VARINTS
    null = _NULL_LENGTH
    enc = encode_varint
    key_cache: dict[str, bytes] = {}
    for i, (key, value, headers, ts) in enumerate(records):
        if ts > max_ts:
            max_ts = ts
        rec += b"\x00"  # attributes
        d = ts - base_ts
        rec += table[d] if 0 <= d < small else enc(d)
        rec += table[i] if i < small else enc(i)
        if key is None:
            rec += null
        else:
            n = len(key)
            rec += table[n] if n < small else enc(n)
            rec += key
        if value is None:
            rec += null
        else:
            n = len(value)
            rec += table[n] if n < small else enc(n)
            rec += value
        n = len(headers)
        rec += table[n] if n < small else enc(n)
        for hkey, hval in headers:
            kb = key_cache.get(hkey)
            if kb is None:
                kb = key_cache[hkey] = enc(len(hkey.encode())) + hkey.encode()
            rec += kb
            if hval is None:
                rec += null
            else:
                n = len(hval)
                rec += table[n] if n < small else enc(n)
                rec += hval
        n = len(rec)
        body += table[n] if n < small else enc(n)
        body += rec
        rec.clear()

    payload: bytes | bytearray = body if compression == COMPRESSION_NONE else compress(compression, body)
    attributes = compression & ATTR_COMPRESSION_MASK
    if compression != attributes:
        raise CompressionError(f"unknown compression codec {compression}")
    if log_append_time:
        attributes |= ATTR_TIMESTAMP_TYPE
    if transactional:
        attributes |= ATTR_TRANSACTIONAL
    if control:
        attributes |= ATTR_CONTROL
    count = len(records)
    tail = _HEADER_TAIL.pack(
        attributes, count - 1, base_ts, max_ts, producer_id, producer_epoch, base_sequence, count
    )
    crc = _crc32c.crc32c(payload, _crc32c.crc32c(tail))
    batch_length = BATCH_HEADER_SIZE - LOG_OVERHEAD + len(payload)
    head = _HEADER_HEAD.pack(base_offset, batch_length, partition_leader_epoch, 2, crc)
    return b"".join((head, tail, payload))


def rebuild_batch(
    header: BatchHeader, raw_records: Sequence[bytes], *, max_timestamp: int | None = None
) -> bytes:
    """A batch with ``header``'s fields (base offset, last offset delta, attributes, timestamps, producer id,
    epoch and base sequence, leader epoch) holding ``raw_records``: encoded records taken unchanged from a
    batch with the same base offset and base timestamp (so their offset and timestamp deltas still hold), in
    the header's codec. Only the record count, the CRC and, if given, the max timestamp change.

    With no record it is an empty batch, written uncompressed as Kafka writes one (compaction keeps such a
    batch when it was a producer's last, so its sequence survives a rebuild of the producer state).
    """
    body = b"".join(raw_records)
    attributes = header.attributes
    if not raw_records:
        attributes &= ~ATTR_COMPRESSION_MASK
        payload = b""
    else:
        payload = body if header.compression == COMPRESSION_NONE else compress(header.compression, body)
    tail = _HEADER_TAIL.pack(
        attributes,
        header.last_offset_delta,
        header.base_timestamp,
        header.max_timestamp if max_timestamp is None else max_timestamp,
        header.producer_id,
        header.producer_epoch,
        header.base_sequence,
        len(raw_records),
    )
    crc = _crc32c.crc32c(payload, _crc32c.crc32c(tail))
    batch_length = BATCH_HEADER_SIZE - LOG_OVERHEAD + len(payload)
    head = _HEADER_HEAD.pack(header.base_offset, batch_length, header.partition_leader_epoch, 2, crc)
    return b"".join((head, tail, payload))


# -- control records (transaction markers) ------------------------------------------------------------------

CONTROL_TYPE_ABORT = 0
CONTROL_TYPE_COMMIT = 1
_CONTROL_KEY = struct.Struct(">hh")  # version, type
_TXN_MARKER_VALUE = struct.Struct(">hi")  # version, coordinator_epoch


def build_control_batch(
    *,
    commit: bool,
    producer_id: int,
    producer_epoch: int,
    coordinator_epoch: int,
    timestamp_ms: int,
    base_offset: int = 0,
    partition_leader_epoch: int = -1,
) -> bytes:
    """A transactional control batch holding one COMMIT or ABORT marker."""
    key = _CONTROL_KEY.pack(0, CONTROL_TYPE_COMMIT if commit else CONTROL_TYPE_ABORT)
    value = _TXN_MARKER_VALUE.pack(0, coordinator_epoch)
    return build_batch(
        [(key, value, (), timestamp_ms)],
        base_offset=base_offset,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        transactional=True,
        control=True,
        partition_leader_epoch=partition_leader_epoch,
    )


def control_record_type(record: Record) -> int:
    """The type of a control record (0 abort, 1 commit, 2 leader change, ...) from its key."""
    key = record.key
    if key is None or len(key) < _CONTROL_KEY.size:
        raise InvalidBatch("control record key is too short")
    version, kind = _CONTROL_KEY.unpack_from(key)
    if version < 0:
        raise InvalidBatch(f"invalid control record version {version}")
    return int(kind)


def parse_control_record(record: Record) -> tuple[bool, int] | None:
    """(commit, coordinator_epoch) for a transaction marker; None for any other control record type.

    Only meaningful for records of a control batch. Raises InvalidBatch for a malformed marker.
    """
    kind = control_record_type(record)
    if kind not in (CONTROL_TYPE_ABORT, CONTROL_TYPE_COMMIT):
        return None
    value = record.value
    if value is None or len(value) < _TXN_MARKER_VALUE.size:
        raise InvalidBatch("transaction marker value is too short")
    version, coordinator_epoch = _TXN_MARKER_VALUE.unpack_from(value)
    if version < 0:
        raise InvalidBatch(f"invalid transaction marker version {version}")
    return kind == CONTROL_TYPE_COMMIT, int(coordinator_epoch)
