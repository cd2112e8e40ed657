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
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import NamedTuple

import crc32c as _crc32c

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
    """The bytes are not a well-formed v2 record batch (maps to CORRUPT_MESSAGE or INVALID_RECORD)."""


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
        raise InvalidBatch("truncated record batch header")
    h = BatchHeader._make(_HEADER.unpack_from(buf, pos))
    if h.magic != 2:
        raise InvalidBatch(f"unsupported record batch magic {h.magic}")
    if h.batch_length < BATCH_HEADER_SIZE - LOG_OVERHEAD:
        raise InvalidBatch(f"record batch length {h.batch_length} is too small")
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
