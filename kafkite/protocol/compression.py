"""Compression codecs of record batch v2: gzip, snappy, lz4 and zstd.

The codec ids are those of the batch attributes (``records.COMPRESSION_*``): 0 none, 1 gzip, 2 snappy, 3 lz4,
4 zstd.  ``compress`` writes what the Java client writes (gzip members, xerial-framed snappy, LZ4 frames with
independent 64 KiB blocks, zstd frames); ``decompress`` accepts every variant real clients produce:

* gzip: one or more gzip members (a zlib stream is accepted too);
* snappy: a raw snappy block (librdkafka) or the xerial / snappy-java framing (Java clients, kafka-python):
  ``b"\\x82SNAPPY\\x00"`` + two int32 versions, then repeated int32 big-endian length + raw snappy block;
* lz4: one or more LZ4 frames;
* zstd: one or more zstd frames, with or without a content size in the frame header.

Decompression can be bounded with ``max_size``: a payload that would expand past it raises
``CompressionError`` before the whole output is materialised (a guard against decompression bombs).
"""

from __future__ import annotations

import struct
import zlib

import cramjam
import lz4.frame as _lz4f
import zstandard as _zstd

__all__ = [
    "CODEC_GZIP",
    "CODEC_LZ4",
    "CODEC_NAMES",
    "CODEC_NONE",
    "CODEC_SNAPPY",
    "CODEC_ZSTD",
    "CompressionError",
    "codec_by_name",
    "compress",
    "decompress",
]

CODEC_NONE = 0
CODEC_GZIP = 1
CODEC_SNAPPY = 2
CODEC_LZ4 = 3
CODEC_ZSTD = 4

CODEC_NAMES: dict[int, str] = {
    CODEC_NONE: "none",
    CODEC_GZIP: "gzip",
    CODEC_SNAPPY: "snappy",
    CODEC_LZ4: "lz4",
    CODEC_ZSTD: "zstd",
}
_CODECS_BY_NAME = {name: codec for codec, name in CODEC_NAMES.items()}

XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = struct.Struct(">8sii")
_XERIAL_VERSION = 1
_XERIAL_MIN_COMPATIBLE = 1
_XERIAL_BLOCK = 32 * 1024  # snappy-java's default block size
_INT32 = struct.Struct(">i")

GZIP_LEVEL = 6  # zlib's default, as the Java client uses
ZSTD_LEVEL = 3  # zstd's default, as the Java client uses

Buffer = bytes | bytearray | memoryview


class CompressionError(ValueError):
    """An unknown codec, or a payload that cannot be (de)compressed or expands past the allowed size."""


def codec_by_name(name: str) -> int:
    """The codec id for a ``compression.type`` name (``none``, ``gzip``, ``snappy``, ``lz4``, ``zstd``)."""
    try:
        return _CODECS_BY_NAME[name.lower()]
    except KeyError:
        raise CompressionError(f"unknown compression type {name!r}") from None


# -- compress -----------------------------------------------------------------------------------------------


def compress(codec: int, data: Buffer) -> bytes:
    """Compress ``data`` with ``codec`` the way the Java client would."""
    if codec == CODEC_NONE:
        return bytes(data)
    if codec == CODEC_GZIP:
        c = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        return c.compress(data) + c.flush()
    if codec == CODEC_SNAPPY:
        return _xerial_compress(data)
    if codec == CODEC_LZ4:
        return bytes(
            _lz4f.compress(
                data,
                block_size=_lz4f.BLOCKSIZE_MAX64KB,
                block_linked=False,
                content_checksum=False,
                store_size=False,
            )
        )
    if codec == CODEC_ZSTD:
        return bytes(_zstd.ZstdCompressor(level=ZSTD_LEVEL).compress(data))
    raise CompressionError(f"unknown compression codec {codec}")


def _xerial_compress(data: Buffer) -> bytes:
    mv = memoryview(data).cast("B")
    parts = [_XERIAL_HEADER.pack(XERIAL_MAGIC, _XERIAL_VERSION, _XERIAL_MIN_COMPATIBLE)]
    for start in range(0, len(mv), _XERIAL_BLOCK):
        block = bytes(cramjam.snappy.compress_raw(mv[start : start + _XERIAL_BLOCK]))
        parts.append(_INT32.pack(len(block)))
        parts.append(block)
    return b"".join(parts)


# -- decompress ---------------------------------------------------------------------------------------------


def decompress(codec: int, data: Buffer, max_size: int | None = None) -> bytes:
    """Decompress ``data`` written with ``codec``.

    Raises CompressionError for an unknown codec, a corrupt or truncated payload, or (when ``max_size`` is
    given) an output that would be larger than ``max_size`` bytes.
    """
    if max_size is not None and max_size < 0:
        raise ValueError("max_size must not be negative")
    try:
        if codec == CODEC_NONE:
            out = bytes(data)
            _check_size(len(out), max_size)
            return out
        if codec == CODEC_GZIP:
            return _gzip_decompress(data, max_size)
        if codec == CODEC_SNAPPY:
            return _snappy_decompress(data, max_size)
        if codec == CODEC_LZ4:
            return _lz4_decompress(data, max_size)
        if codec == CODEC_ZSTD:
            return _zstd_decompress(data, max_size)
    except CompressionError:
        raise
    except (zlib.error, cramjam.DecompressionError, _zstd.ZstdError, RuntimeError, struct.error) as e:
        raise CompressionError(f"corrupt {CODEC_NAMES[codec]} payload: {e}") from e
    raise CompressionError(f"unknown compression codec {codec}")


def _check_size(size: int, max_size: int | None) -> None:
    if max_size is not None and size > max_size:
        raise CompressionError(f"decompressed size exceeds the limit of {max_size} bytes")


def _gzip_decompress(data: Buffer, max_size: int | None) -> bytes:
    out = bytearray()
    rest: Buffer = data
    limit = -1 if max_size is None else max_size + 1
    while True:
        d = zlib.decompressobj(47)  # 32 + 15: gzip or zlib header, detected automatically
        if limit < 0:
            out += d.decompress(rest)
        else:
            chunk = d.decompress(rest, limit - len(out))
            out += chunk
            while not d.eof and d.unconsumed_tail:
                _check_size(len(out), max_size)
                out += d.decompress(d.unconsumed_tail, limit - len(out))
        _check_size(len(out), max_size)
        if not d.eof:
            raise CompressionError("truncated gzip payload")
        rest = d.unused_data
        if not rest:
            return bytes(out)


def _snappy_decompress(data: Buffer, max_size: int | None) -> bytes:
    mv = memoryview(data).cast("B")
    if mv[:8] != XERIAL_MAGIC:
        _check_size(int(cramjam.snappy.decompress_raw_len(mv)), max_size)
        return bytes(cramjam.snappy.decompress_raw(mv))
    if len(mv) < _XERIAL_HEADER.size:
        raise CompressionError("truncated xerial snappy header")
    pos = _XERIAL_HEADER.size
    end = len(mv)
    parts: list[bytes] = []
    total = 0
    while pos < end:
        if end - pos < 4:
            raise CompressionError("truncated xerial snappy block length")
        (n,) = _INT32.unpack_from(mv, pos)
        pos += 4
        if n < 0 or pos + n > end:
            raise CompressionError("xerial snappy block runs past the end of the payload")
        block = mv[pos : pos + n]
        total += int(cramjam.snappy.decompress_raw_len(block))
        _check_size(total, max_size)
        parts.append(bytes(cramjam.snappy.decompress_raw(block)))
        pos += n
    return b"".join(parts)


def _lz4_decompress(data: Buffer, max_size: int | None) -> bytes:
    out = bytearray()
    rest: Buffer = data
    if not len(rest):
        raise CompressionError("empty lz4 payload")
    limit = -1 if max_size is None else max_size + 1
    while True:
        d = _lz4f.LZ4FrameDecompressor()
        if limit < 0:
            out += d.decompress(rest)
        else:
            out += d.decompress(rest, max_length=limit - len(out))
            while not d.eof and not d.needs_input:
                _check_size(len(out), max_size)
                out += d.decompress(b"", max_length=limit - len(out))
        _check_size(len(out), max_size)
        if not d.eof:
            raise CompressionError("truncated lz4 frame")
        rest = d.unused_data
        if not rest:
            return bytes(out)


_ZSTD_MAGIC = 0xFD2FB528
_ZSTD_SKIPPABLE = 0x184D2A50  # .. 0x184D2A5F
_ZSTD_MAX_BLOCK = 128 * 1024
_U32LE = struct.Struct("<I")
_FCS_SIZES = (0, 2, 4, 8)


def _zstd_frames(mv: memoryview) -> list[tuple[int, list[int], int]]:
    """Walk the frames and block headers of a zstd payload without decompressing anything.

    Returns, per frame, its start, the positions where each of its blocks ends (the last one where the frame
    ends), and an upper bound of its decompressed size: the frame content size when the header states it,
    else the sum of its raw and RLE block sizes plus 128 KiB (the largest block) per compressed block.
    Raises CompressionError for a payload that is not a sequence of whole frames.
    """
    frames: list[tuple[int, list[int], int]] = []
    pos = 0
    end = len(mv)
    while pos < end:
        if end - pos < 4:
            raise CompressionError("truncated zstd frame")
        (magic,) = _U32LE.unpack_from(mv, pos)
        if magic & 0xFFFFFFF0 == _ZSTD_SKIPPABLE:
            if end - pos < 8:
                raise CompressionError("truncated zstd skippable frame")
            (n,) = _U32LE.unpack_from(mv, pos + 4)
            pos += 8 + n
            if pos > end:
                raise CompressionError("truncated zstd skippable frame")
            continue
        if magic != _ZSTD_MAGIC:
            raise CompressionError("not a zstd frame")
        start = pos
        if end - pos < 5:
            raise CompressionError("truncated zstd frame header")
        fhd = mv[pos + 4]
        single = fhd & 0x20
        fcs_size = _FCS_SIZES[fhd >> 6] or (1 if single else 0)
        pos += 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 3]
        content: int | None = None
        if fcs_size:
            if pos + fcs_size > end:
                raise CompressionError("truncated zstd frame header")
            content = int.from_bytes(mv[pos : pos + fcs_size], "little") + (256 if fcs_size == 2 else 0)
            pos += fcs_size
        bound = 0
        ends: list[int] = []
        while True:
            if end - pos < 3:
                raise CompressionError("truncated zstd frame")
            bh = mv[pos] | mv[pos + 1] << 8 | mv[pos + 2] << 16
            kind = (bh >> 1) & 3
            size = bh >> 3
            if kind == 3 or size > _ZSTD_MAX_BLOCK:
                raise CompressionError("corrupt zstd block header")
            pos += 3 + (1 if kind == 1 else size)
            if pos > end:
                raise CompressionError("truncated zstd frame")
            bound += _ZSTD_MAX_BLOCK if kind == 2 else size
            if bh & 1:
                break
            ends.append(pos)
        if fhd & 0x04:
            pos += 4
            if pos > end:
                raise CompressionError("truncated zstd frame checksum")
        ends.append(pos)
        frames.append((start, ends, bound if content is None else content))
    return frames


def _zstd_decompress(data: Buffer, max_size: int | None) -> bytes:
    # The frames are walked first (block headers only): a frame whose stated or largest possible size fits
    # under the limit is decompressed in one call; otherwise its blocks go in one at a time, each adding at
    # most 128 KiB, and decompression stops as soon as the output passes the limit.
    mv = memoryview(data).cast("B")
    if not len(mv):
        raise CompressionError("empty zstd payload")
    frames = _zstd_frames(mv)
    dctx = _zstd.ZstdDecompressor()
    out = bytearray()
    for start, ends, bound in frames:
        d = dctx.decompressobj()
        if max_size is None or len(out) + bound <= max_size:
            out += d.decompress(mv[start : ends[-1]])
        else:
            pos = start
            for stop in ends:
                out += d.decompress(mv[pos:stop])
                pos = stop
                _check_size(len(out), max_size)
        if not d.eof:
            raise CompressionError("truncated zstd frame")
        _check_size(len(out), max_size)
    return bytes(out)
