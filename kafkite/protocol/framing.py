"""Sans-io framing of the Kafka wire protocol: size-prefixed frames and request/response headers."""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from kafkite.protocol.messages import Part, Registry
from kafkite.protocol.primitives import DecodeError

_SIZE = struct.Struct(">i")
_ZEROS = memoryview(bytes(1 << 20))
_KEY_VERSION = struct.Struct(">hh")


class FrameTooLarge(DecodeError):
    """A size prefix larger than the configured limit (or negative): the connection must be closed."""


class FramePool:
    """Buffers of large frames kept for the next large frames.

    A large frame arrives in a buffer of its own. Fresh memory costs more than the copy into it: receiving
    faults in and zeroes every page, and freeing a large buffer hands its pages back to the kernel (and, on a
    virtual machine whose balloon returns freed memory to the host, to the host, which backs them again on
    the next touch). A connection gives a frame's buffer back once its request is done and nothing else
    refers to it; the reader of the next large frame of about the same size takes it instead of allocating.
    At most ``max_bytes`` are kept; ``clear()`` drops them (an idle server).
    """

    __slots__ = ("_free", "held", "max_bytes", "taken")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.held = 0  # bytes of the buffers kept
        self.taken = 0  # buffers handed out again since the last clear()
        self._free: list[bytearray] = []

    def take(self, size: int) -> bytearray | None:
        """A kept buffer cut to ``size`` bytes (of one from ``size`` to twice it, newest first), or None."""
        free = self._free
        for i in range(len(free) - 1, -1, -1):
            buf = free[i]
            n = len(buf)
            if size <= n <= 2 * size:
                del free[i]
                self.held -= n
                if n != size:
                    del buf[size:]  # at least half of its allocation stays in use: not reallocated
                self.taken += 1
                return buf
        return None

    def give(self, buf: bytearray) -> bool:
        """Keep ``buf`` (which nothing else may refer to) if there is room; True if kept."""
        n = len(buf)
        if self.held + n > self.max_bytes:
            return False
        self._free.append(buf)
        self.held += n
        return True

    def clear(self) -> int:
        """Drop every kept buffer; the bytes dropped."""
        dropped = self.held
        self._free.clear()
        self.held = 0
        self.taken = 0
        return dropped


class FrameReader:
    """Splits received bytes into frames (without their 4-byte size prefix).

    Two ways to feed it: ``feed(data)``, or the buffered-protocol pair ``get_buffer()``/``buffer_updated(n)``
    that lets the transport receive straight into its memory. Small frames (up to ``SMALL`` bytes) arrive in a
    scratch buffer and are copied out once; a larger frame gets its own buffer that the rest of it is received
    into directly. That buffer grows as the frame's bytes arrive (``FIRST_CHUNK`` first, then doubling, up to
    the announced size), so a size prefix alone costs little: memory follows the bytes actually received.

    The memory of large frames is asked of ``admit(n, growing)`` (the server's bound on the bytes of requests
    held across connections) before it is allocated: for a new frame (``growing`` false) and for each growth
    of its buffer. While the answer is no, the reader stops there (``blocked``) and keeps what it has until
    ``retry()``. ``pop()`` gives each frame with the bytes admitted for it, to be given back once it has been
    handled. With a ``pool``, a large frame whose whole size is admitted at once is received into a kept
    buffer of about its size (see ``FramePool``) instead of a growing new one. The scratch buffer is
    allocated on first use (``INITIAL`` bytes, ``SCRATCH`` once a read has
    filled it: a busy connection reads more per system call) and released by ``trim()`` when empty, so an
    idle connection holds none. Each frame is a fresh ``bytearray``: handlers may rewrite it in place
    (offset assignment).
    """

    __slots__ = (
        "_big",
        "_big_filled",
        "_big_reserved",
        "_big_size",
        "_full_reads",
        "_granted",
        "_len",
        "_ready",
        "_scratch",
        "admit",
        "blocked",
        "max_size",
        "pool",
    )

    SCRATCH = 64 * 1024  # the scratch buffer of a busy connection
    INITIAL = 16 * 1024  # ... of one that has not yet filled it in one read
    MIN_ROOM = 8 * 1024
    SMALL = SCRATCH // 2
    FIRST_CHUNK = 256 * 1024

    def __init__(
        self,
        max_size: int,
        admit: Callable[[int, bool], bool] | None = None,
        pool: FramePool | None = None,
    ) -> None:
        self.max_size = max_size
        self.admit = admit
        self.pool = pool
        self.blocked = False  # waiting for admit() to say yes
        self._scratch: bytearray | None = None
        self._len = 0  # bytes held in the scratch buffer
        self._full_reads = False  # a read filled the scratch buffer: there is more waiting, read more at once
        self._big: bytearray | None = None  # a large frame being received in place
        self._big_filled = 0
        self._big_size = 0
        self._big_reserved = 0  # bytes admitted for it so far
        self._granted = 0  # admitted for its next growth, not yet allocated
        self._ready: deque[tuple[bytearray, int]] = deque()

    # -- buffered protocol --------------------------------------------------------------------------------

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        big = self._big
        if big is not None:
            if self._big_filled == len(big):
                big = self._grow(big)
            return memoryview(big)[self._big_filled :]
        scratch = self._scratch
        if scratch is None:
            scratch = self._scratch = bytearray(self.SCRATCH if self._full_reads else self.INITIAL)
        elif self._full_reads and len(scratch) < self.SCRATCH:
            scratch = self._grow_scratch(scratch, self.SCRATCH - len(scratch))
        elif len(scratch) - self._len < self.MIN_ROOM:
            scratch = self._grow_scratch(scratch, self.MIN_ROOM)
        return memoryview(scratch)[self._len :]

    def _grow_scratch(self, scratch: bytearray, more: int) -> bytearray:
        try:
            scratch.extend(bytes(more))
        except BufferError:  # a view of it is still alive somewhere: a new buffer instead
            grown = bytearray(len(scratch) + more)
            grown[: self._len] = scratch[: self._len]
            scratch = self._scratch = grown
        return scratch

    def _next_growth(self, big: bytearray) -> int:
        return min(self._big_size, 2 * len(big)) - len(big)

    def _grow(self, big: bytearray) -> bytearray:
        # Normally admitted when the buffer filled up (``_granted``); a read that comes before the connection
        # could stop reading grows it all the same (the bytes are on their way) without counting them.
        more = self._granted or self._next_growth(big)
        self._granted = 0
        try:
            while more:  # zeros copied from a shared block: no temporary buffer per growth
                n = min(more, len(_ZEROS))
                big += _ZEROS[:n]
                more -= n
        except BufferError:  # a view of it is still alive somewhere: grow into a new buffer instead
            grown = bytearray(len(big) + more)
            grown[: len(big)] = big
            big = self._big = grown
        return big

    def buffer_updated(self, nbytes: int) -> None:
        """Account for ``nbytes`` received into the last buffer; raises FrameTooLarge for a bad prefix."""
        big = self._big
        if big is not None:
            self._big_filled += nbytes
            if self._big_filled == self._big_size:
                self._ready.append((big, self._big_reserved))
                self._big = None
                self._big_filled = self._big_reserved = 0
            elif self._big_filled == len(big):
                self._ask_growth(big)
            return
        self._len += nbytes
        if self._scratch is not None and self._len == len(self._scratch):
            self._full_reads = True
        if not self.blocked:
            self._split()

    def _ask_growth(self, big: bytearray) -> None:
        more = self._next_growth(big)
        if self.admit is None or self.admit(more, True):
            self._granted = more
            self._big_reserved += more
            self.blocked = False
        else:
            self.blocked = True

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            buf = self.get_buffer(len(view))
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            del buf  # as a transport does: no view of the buffer outlives the read
            self.buffer_updated(n)
            view = view[n:]

    def retry(self) -> None:
        """Ask again for the memory the reader is blocked on."""
        if not self.blocked:
            return
        big = self._big
        if big is not None:
            self._ask_growth(big)
        else:
            self.blocked = False
            self._split()

    def _split(self) -> None:
        scratch = self._scratch
        if scratch is None:
            return
        pos = 0
        end = self._len
        while end - pos >= 4:
            size: int = _SIZE.unpack_from(scratch, pos)[0]
            if size < 0 or size > self.max_size:
                raise FrameTooLarge(f"frame of {size} bytes exceeds socket.request.max.bytes={self.max_size}")
            reserved = 0
            if size > self.SMALL:
                reserved = min(size, self.FIRST_CHUNK)
                if self.admit is not None and not self.admit(reserved, False):
                    self.blocked = True
                    break
            if end - pos - 4 >= size:
                self._ready.append((scratch[pos + 4 : pos + 4 + size], reserved))
                pos += 4 + size
                continue
            if size > self.SMALL:
                # Receive the rest of a large frame straight into its own buffer, grown as it arrives (or
                # into a kept one of its size, all of it admitted now).
                have = end - pos - 4
                big = self._pooled(size, reserved)
                if big is None:
                    big = bytearray(reserved)
                else:
                    reserved = size
                big[:have] = scratch[pos + 4 : end]
                self._big, self._big_filled, self._big_size, self._big_reserved = big, have, size, reserved
                pos = end
            break
        if pos:
            remaining = end - pos
            scratch[:remaining] = scratch[pos:end]
            self._len = remaining
            if len(scratch) > self.SCRATCH and remaining <= self.SCRATCH:
                del scratch[self.SCRATCH :]

    def _pooled(self, size: int, reserved: int) -> bytearray | None:
        pool = self.pool
        buf = None if pool is None else pool.take(size)
        if buf is None or pool is None:
            return None
        if size > reserved and self.admit is not None and not self.admit(size - reserved, True):
            pool.give(buf)
            return None
        return buf

    def trim(self) -> bool:
        """Release the scratch buffer if it holds nothing (an idle connection); True if it did."""
        if self._len or self._big is not None or self._scratch is None:
            return False
        self._scratch = None
        self._full_reads = False
        return True

    @property
    def buffered(self) -> int:
        return self._len + (self._big_filled if self._big is not None else 0)

    @property
    def receiving(self) -> bool:
        """A frame has begun to arrive and is not complete."""
        return self._len > 0 or self._big is not None

    @property
    def in_large_frame(self) -> bool:
        return self._big is not None

    @property
    def reserved(self) -> int:
        """The bytes admitted for frames not yet handed out by ``pop()`` (the one arriving included)."""
        return self._big_reserved + sum(r for _, r in self._ready)

    @property
    def footprint(self) -> int:
        """Bytes of buffers the reader holds."""
        return (0 if self._scratch is None else len(self._scratch)) + (
            0 if self._big is None else len(self._big)
        )

    def pop(self) -> tuple[bytearray, int] | None:
        """The next whole frame and the bytes admitted for it, or None."""
        return self._ready.popleft() if self._ready else None

    def __iter__(self) -> Iterator[bytearray]:
        return self

    def __next__(self) -> bytearray:
        if not self._ready:
            raise StopIteration
        return self._ready.popleft()[0]


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
