"""Sans-io framing of the Kafka wire protocol: size-prefixed frames and request/response headers."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from kafkite.protocol.messages import Part, Registry
from kafkite.protocol.primitives import DecodeError

_SIZE = struct.Struct(">i")
_KEY_VERSION = struct.Struct(">hh")


class FrameTooLarge(DecodeError):
    """A size prefix larger than the configured limit (or negative): the connection must be closed."""


class FrameReader:
    """Accumulates received bytes and yields complete frames (without their 4-byte size prefix).

    Each yielded frame is a fresh ``bytearray``: handlers may rewrite it in place (offset assignment).
    """

    __slots__ = ("_buf", "max_size")

    def __init__(self, max_size: int) -> None:
        self._buf = bytearray()
        self.max_size = max_size

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def pending_size(self) -> int | None:
        """Size of the frame being received, once its prefix is in (validated against the limit)."""
        if len(self._buf) < 4:
            return None
        size: int = _SIZE.unpack_from(self._buf, 0)[0]
        if size < 0 or size > self.max_size:
            raise FrameTooLarge(f"frame of {size} bytes exceeds socket.request.max.bytes={self.max_size}")
        return size

    def __iter__(self) -> Iterator[bytearray]:
        return self

    def __next__(self) -> bytearray:
        size = self.pending_size()
        if size is None or len(self._buf) < 4 + size:
            raise StopIteration
        frame = self._buf[4 : 4 + size]
        del self._buf[: 4 + size]
        return frame


@dataclass(slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    header_size: int


def peek_key_version(frame: bytes | bytearray | memoryview) -> tuple[int, int]:
    if len(frame) < 4:
        raise DecodeError("request shorter than its header")
    key, version = _KEY_VERSION.unpack_from(frame, 0)
    return int(key), int(version)


def decode_request_header(reg: Registry, frame: memoryview, header_version: int) -> RequestHeader:
    codec = reg.header("RequestHeader", header_version)
    h, pos = codec.decode(frame, 0)
    return RequestHeader(
        h["request_api_key"], h["request_api_version"], h["correlation_id"], h["client_id"], pos
    )


def encode_response(
    reg: Registry, api_key: int, api_version: int, correlation_id: int, body: dict[str, object]
) -> tuple[list[Part], int]:
    """The whole response frame as parts (size prefix and header first) and its total size."""
    hv = reg.response_header_version(api_key, api_version)
    head = bytearray(4)
    reg.header("ResponseHeader", hv).write_into(head, {"correlation_id": correlation_id})
    parts = reg.response(api_key, api_version).encode(body)
    size = (
        len(head)
        - 4
        + sum(len(p) if isinstance(p, bytes | bytearray | memoryview) else p.size for p in parts)
    )
    _SIZE.pack_into(head, 0, size)
    if parts and isinstance(parts[0], bytearray):
        head += parts[0]
        parts[0] = head
    else:
        parts.insert(0, head)
    return parts, size + 4


def encode_request(
    reg: Registry,
    api_key: int,
    api_version: int,
    correlation_id: int,
    client_id: str | None,
    body: dict[str, object],
) -> bytes:
    """A complete request frame: used by kafkite's own client (benchmarks, CLI, mirror) and tests."""
    hv = reg.request_header_version(api_key, api_version)
    out = bytearray(4)
    reg.header("RequestHeader", hv).write_into(
        out,
        {
            "request_api_key": api_key,
            "request_api_version": api_version,
            "correlation_id": correlation_id,
            "client_id": client_id,
        },
    )
    for p in reg.request(api_key, api_version).encode(body):
        out += p
    _SIZE.pack_into(out, 0, len(out) - 4)
    return bytes(out)


def decode_response(
    reg: Registry, api_key: int, api_version: int, frame: bytes | bytearray | memoryview
) -> tuple[int, dict[str, object]]:
    """(correlation_id, body) of a response frame without its size prefix."""
    buf = memoryview(frame)
    hv = reg.response_header_version(api_key, api_version)
    h, pos = reg.header("ResponseHeader", hv).decode(buf, 0)
    body = reg.response(api_key, api_version).decode_all(buf[pos:])
    return int(h["correlation_id"]), body
