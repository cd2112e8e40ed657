"""The sans-io frame reader: any split of the byte stream yields the same frames."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kafkite.protocol.framing import FrameReader, FrameTooLarge


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
    buf = reader.get_buffer(-1)
    assert len(buf) == size - 1000  # the remainder goes straight into the frame's own buffer
    buf[:] = b"b" * len(buf)
    reader.buffer_updated(len(buf))
    (frame,) = list(reader)
    assert len(frame) == size and frame[:1000] == b"a" * 1000 and frame[1000:2000] == b"b" * 1000


@pytest.mark.parametrize("size", [-1, 1001])
def test_bad_size_prefix_is_rejected(size: int) -> None:
    reader = FrameReader(1000)
    with pytest.raises(FrameTooLarge):
        reader.feed(struct.pack(">i", size))
