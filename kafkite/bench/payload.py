"""Benchmark messages: the first 8 bytes of every value are its send time (``time.time_ns()``, big-endian).

Wall-clock nanoseconds are shared by every process on one machine, so a consumer computes the end-to-end
latency of each message as its receive time minus the stamp, whichever process produced it. Across machines
the figure is only as good as their clock synchronisation.
"""

from __future__ import annotations

import random
import string
import struct
import time

from kafkite.protocol import records

STAMP = struct.Struct(">q")
STAMP_SIZE = STAMP.size
MIN_SIZE = STAMP_SIZE

_OFFSET_BASE_TS = 27  # base_timestamp, then max_timestamp at 35
_TIMESTAMPS = struct.Struct(">qq")
_CRC = struct.Struct(">I")


def filler(size: int, seed: int = 0) -> bytes:
    """The part of a value after its stamp: random upper-case letters, as kafka-producer-perf-test uses."""
    rnd = random.Random(seed)
    return "".join(rnd.choices(string.ascii_uppercase, k=max(size - STAMP_SIZE, 0))).encode()


def stamp_of(value: bytes | bytearray | memoryview) -> int:
    """The send time written in a benchmark value (nanoseconds), or -1 if the value is too short."""
    if len(value) < STAMP_SIZE:
        return -1
    return int(STAMP.unpack_from(value, 0)[0])


def make_value(tail: bytes, now_ns: int | None = None) -> bytes:
    return STAMP.pack(time.time_ns() if now_ns is None else now_ns) + tail


class BatchMaker:
    """Builds v2 record batches of ``n`` benchmark messages stamped with the time they are built.

    Uncompressed batches are built once per record count with ``records.build_batch`` and then only patched:
    the stamps, the batch timestamps and the CRC (one C call), so the cost per message is one ``pack_into``.
    Compressed batches are built in full each time, since their bytes change with the stamps.
    """

    def __init__(self, size: int, compression: int = records.COMPRESSION_NONE, seed: int = 0) -> None:
        if size < MIN_SIZE:
            raise ValueError(f"message size must be at least {MIN_SIZE} bytes (the send-time stamp)")
        self.size = size
        self.compression = compression
        self.tail = filler(size, seed)
        self._templates: dict[int, tuple[bytes, list[int]]] = {}

    def _template(self, n: int) -> tuple[bytes, list[int]]:
        t = self._templates.get(n)
        if t is None:
            value = STAMP.pack(0) + self.tail
            batch = records.build_batch([(None, value, (), 0)] * n)
            positions = []
            pos = records.BATCH_HEADER_SIZE
            size = self.size
            value_len = records.varint_size(size)
            for i in range(n):
                body = 1 + 1 + records.varint_size(i) + 1 + value_len + size + 1
                pos += records.varint_size(body)
                positions.append(pos + body - 1 - size)
                pos += body
            t = (batch, positions)
            if len(self._templates) < 256:
                self._templates[n] = t
        return t

    def build(self, n: int, now_ns: int | None = None) -> bytes | bytearray:
        """One batch of ``n`` messages, each stamped ``now_ns`` (default: now)."""
        ts = time.time_ns() if now_ns is None else now_ns
        if self.compression != records.COMPRESSION_NONE:
            value = STAMP.pack(ts) + self.tail
            return records.build_batch([(None, value, (), ts // 1_000_000)] * n, compression=self.compression)
        template, positions = self._template(n)
        buf = bytearray(template)
        pack = STAMP.pack_into
        for pos in positions:
            pack(buf, pos, ts)
        ms = ts // 1_000_000
        _TIMESTAMPS.pack_into(buf, _OFFSET_BASE_TS, ms, ms)
        _CRC.pack_into(buf, 17, records.crc_of(buf, 0, records.read_header(buf, 0)))
        return buf
