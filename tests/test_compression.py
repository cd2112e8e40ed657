from __future__ import annotations

import gzip
import struct
import zlib

import cramjam
import lz4.frame
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from kafkite.protocol.compression import (
    CODEC_GZIP,
    CODEC_LZ4,
    CODEC_NONE,
    CODEC_SNAPPY,
    CODEC_ZSTD,
    XERIAL_MAGIC,
    CompressionError,
    codec_by_name,
    compress,
    decompress,
)

CODECS = [CODEC_NONE, CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD]
REAL_CODECS = CODECS[1:]


def _sample(n: int = 200_000) -> bytes:
    return b"".join(b"record %d with some repeated payload text; " % (i % 977) for i in range(n // 40))[:n]


@settings(max_examples=60, deadline=None)
@given(codec=st.sampled_from(CODECS), data=st.binary(max_size=5000))
def test_round_trip(codec: int, data: bytes) -> None:
    assert decompress(codec, compress(codec, data)) == data
    assert decompress(codec, memoryview(compress(codec, data))) == data


@pytest.mark.parametrize("codec", CODECS)
def test_round_trip_large(codec: int) -> None:
    data = _sample()
    packed = compress(codec, data)
    if codec != CODEC_NONE:
        assert len(packed) < len(data) // 3
    assert decompress(codec, packed) == data
    assert decompress(codec, packed, max_size=len(data)) == data


def test_codec_names() -> None:
    assert [codec_by_name(n) for n in ("none", "gzip", "snappy", "lz4", "zstd", "ZSTD")] == [0, 1, 2, 3, 4, 4]
    with pytest.raises(CompressionError):
        codec_by_name("brotli")


@pytest.mark.parametrize("codec", [5, 6, 7, -1, 99])
def test_unknown_codec(codec: int) -> None:
    with pytest.raises(CompressionError):
        compress(codec, b"x")
    with pytest.raises(CompressionError):
        decompress(codec, b"x")
    assert issubclass(CompressionError, ValueError)


# -- gzip ---------------------------------------------------------------------------------------------------


def test_gzip_writes_gzip_members_and_reads_multi_member() -> None:
    packed = compress(CODEC_GZIP, b"hello")
    assert packed[:2] == b"\x1f\x8b"
    assert gzip.decompress(packed) == b"hello"
    two_members = gzip.compress(b"a" * 100) + gzip.compress(b"b" * 50)
    assert decompress(CODEC_GZIP, two_members) == b"a" * 100 + b"b" * 50
    assert decompress(CODEC_GZIP, zlib.compress(b"zlib stream")) == b"zlib stream"


# -- snappy -------------------------------------------------------------------------------------------------


def _xerial(data: bytes, block: int) -> bytes:
    out = [XERIAL_MAGIC + struct.pack(">ii", 1, 1)]
    for i in range(0, len(data), block):
        chunk = bytes(cramjam.snappy.compress_raw(data[i : i + block]))
        out.append(struct.pack(">i", len(chunk)) + chunk)
    return b"".join(out)


def test_snappy_raw_blocks_as_librdkafka_writes_them() -> None:
    data = _sample(100_000)
    raw = bytes(cramjam.snappy.compress_raw(data))
    assert not raw.startswith(XERIAL_MAGIC)
    assert decompress(CODEC_SNAPPY, raw) == data


@pytest.mark.parametrize("block", [1, 7, 1024, 32 * 1024, 1 << 20])
def test_snappy_xerial_framing(block: int) -> None:
    data = _sample(5000 if block == 1 else 100_000)
    assert decompress(CODEC_SNAPPY, _xerial(data, block)) == data


def test_snappy_compress_writes_xerial_framing() -> None:
    data = _sample(100_000)
    packed = compress(CODEC_SNAPPY, data)
    assert packed[:8] == XERIAL_MAGIC
    assert struct.unpack_from(">ii", packed, 8) == (1, 1)
    # more than one 32 KiB block, each a raw snappy block
    (n,) = struct.unpack_from(">i", packed, 16)
    assert bytes(cramjam.snappy.decompress_raw(packed[20 : 20 + n])) == data[: 32 * 1024]


def test_snappy_xerial_empty_and_corrupt() -> None:
    header = XERIAL_MAGIC + struct.pack(">ii", 1, 1)
    assert decompress(CODEC_SNAPPY, header) == b""
    good = _xerial(b"abc" * 1000, 1024)
    for bad in (good[:12], good[:-1], good + b"\x00\x00", header + struct.pack(">i", 100) + b"xx"):
        with pytest.raises(CompressionError):
            decompress(CODEC_SNAPPY, bad)
    with pytest.raises(CompressionError):
        decompress(CODEC_SNAPPY, header + struct.pack(">i", -5))


# -- lz4 ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"block_linked": True, "content_checksum": True},
        {"block_linked": False, "store_size": False},
        {"block_size": lz4.frame.BLOCKSIZE_MAX4MB, "compression_level": 9},
    ],
)
def test_lz4_frame_variants(options: dict[str, object]) -> None:
    data = _sample(300_000)
    assert decompress(CODEC_LZ4, lz4.frame.compress(data, **options)) == data


def test_lz4_writes_independent_blocks_and_reads_concatenated_frames() -> None:
    packed = compress(CODEC_LZ4, b"x" * 1000)
    assert packed[:4] == b"\x04\x22\x4d\x18"
    flg = packed[4]
    assert flg & 0x20  # block independence, as Kafka's Java reader requires
    assert decompress(CODEC_LZ4, packed + lz4.frame.compress(b"yz")) == b"x" * 1000 + b"yz"


# -- zstd ---------------------------------------------------------------------------------------------------


def test_zstd_without_content_size() -> None:
    data = _sample(300_000)
    no_size = zstandard.ZstdCompressor(write_content_size=False).compress(data)
    assert zstandard.frame_content_size(no_size) == -1
    assert decompress(CODEC_ZSTD, no_size) == data
    assert decompress(CODEC_ZSTD, no_size, max_size=len(data)) == data
    streamed = zstandard.ZstdCompressor().compressobj()
    framed = streamed.compress(data) + streamed.flush()
    assert decompress(CODEC_ZSTD, framed) == data


def test_zstd_concatenated_frames() -> None:
    c = zstandard.ZstdCompressor()
    assert decompress(CODEC_ZSTD, c.compress(b"one") + c.compress(b"two"), max_size=6) == b"onetwo"


# -- corruption and limits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", REAL_CODECS)
def test_corrupt_and_truncated_payloads(codec: int) -> None:
    data = _sample(50_000)
    packed = compress(codec, data)
    for bad in (b"", b"garbage that is not compressed", packed[: len(packed) // 2], packed[:-1]):
        with pytest.raises(CompressionError):
            decompress(codec, bad)


@pytest.mark.parametrize("codec", REAL_CODECS)
def test_garbage_after_payload(codec: int) -> None:
    packed = compress(codec, _sample(10_000))
    with pytest.raises(CompressionError):
        decompress(codec, packed + b"\x01\x02\x03\x04\x05 trailing junk")


@pytest.mark.parametrize("codec", CODECS)
def test_max_size_limits_output(codec: int) -> None:
    data = b"\x00" * 4_000_000
    packed = compress(codec, data)
    assert decompress(codec, packed, max_size=len(data)) == data
    with pytest.raises(CompressionError, match="exceeds"):
        decompress(codec, packed, max_size=len(data) - 1)
    with pytest.raises(CompressionError, match="exceeds"):
        decompress(codec, packed, max_size=1000)


@pytest.mark.parametrize(
    "codec,packer",
    [
        (CODEC_GZIP, lambda d: gzip.compress(d, 9)),
        (CODEC_SNAPPY, lambda d: bytes(cramjam.snappy.compress_raw(d))),
        (CODEC_LZ4, lambda d: lz4.frame.compress(d, store_size=False)),
        (CODEC_ZSTD, lambda d: zstandard.ZstdCompressor(level=19, write_content_size=False).compress(d)),
    ],
)
def test_decompression_bomb_is_refused(codec: int, packer: object) -> None:
    assert callable(packer)
    bomb = packer(b"\x00" * 64_000_000)
    assert len(bomb) * 20 < 64_000_000
    with pytest.raises(CompressionError, match="exceeds"):
        decompress(codec, bomb, max_size=1_000_000)
