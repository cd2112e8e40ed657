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
    """Splits received bytes into frames (without their 4-byte size prefix).

    Two ways to feed it: ``feed(data)``, or the buffered-protocol pair ``get_buffer()``/``buffer_updated(n)``
    that lets the transport receive straight into its memory. Small frames arrive in a scratch buffer and are
    copied out once; a large frame gets its own buffer that the rest of it is received into directly.
    Each yielded frame is a fresh ``bytearray``: handlers may rewrite it in place (offset assignment).
    """

    __slots__ = ("_big", "_big_filled", "_len", "_ready", "_scratch", "max_size")

    SCRATCH = 64 * 1024
    MIN_ROOM = 8 * 1024

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._scratch = bytearray(self.SCRATCH)
        self._len = 0  # bytes held in the scratch buffer
        self._big: bytearray | None = None  # a large frame being received in place
        self._big_filled = 0
        self._ready: list[bytearray] = []

    # -- buffered protocol --------------------------------------------------------------------------------

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        if self._big is not None:
            return memoryview(self._big)[self._big_filled :]
        if len(self._scratch) - self._len < self.MIN_ROOM:
            self._scratch.extend(bytes(self.MIN_ROOM))
        return memoryview(self._scratch)[self._len :]

    def buffer_updated(self, nbytes: int) -> None:
        """Account for ``nbytes`` received into the last buffer; raises FrameTooLarge for a bad prefix."""
        if self._big is not None:
            self._big_filled += nbytes
            if self._big_filled == len(self._big):
                self._ready.append(self._big)
                self._big = None
            return
        self._len += nbytes
        self._split()

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            buf = self.get_buffer(len(view))
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            self.buffer_updated(n)
            view = view[n:]

    def _split(self) -> None:
        scratch = self._scratch
        pos = 0
        end = self._len
        while end - pos >= 4:
            size: int = _SIZE.unpack_from(scratch, pos)[0]
            if size < 0 or size > self.max_size:
                raise FrameTooLarge(f"frame of {size} bytes exceeds socket.request.max.bytes={self.max_size}")
            if end - pos - 4 >= size:
                self._ready.append(scratch[pos + 4 : pos + 4 + size])
                pos += 4 + size
                continue
            if size > self.SCRATCH // 2:
                # Receive the rest of a large frame straight into its own buffer.
                have = end - pos - 4
                big = bytearray(size)
                big[:have] = scratch[pos + 4 : end]
                self._big, self._big_filled = big, have
                pos = end
            break
        if pos:
            remaining = end - pos
            scratch[:remaining] = scratch[pos:end]
            self._len = remaining
            if len(scratch) > self.SCRATCH and remaining <= self.SCRATCH:
                del scratch[self.SCRATCH :]

    @property
    def buffered(self) -> int:
        return self._len + self._big_filled

    def __iter__(self) -> Iterator[bytearray]:
        return self

    def __next__(self) -> bytearray:
        if not self._ready:
            raise StopIteration
        return self._ready.pop(0)


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
