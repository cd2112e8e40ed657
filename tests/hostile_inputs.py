"""Inputs an attacker or a buggy client sends, for the hostile-input tests and the fuzzer.

- ``corrupt_batches``: CRC-valid record batches damaged inside (record bytes, record lengths, record counts,
  compressed payloads truncated or garbled), the CRC and length recomputed so only the record walk can
  tell;
- ``FrameRecorder``: a TCP proxy between real clients and a broker that keeps every request frame the
  clients sent (captured frames to mutate);
- ``mutate_frame``: one random mutation of a captured frame (bit flips, garbage, truncation, lying size
  prefixes, spliced spans, a Produce's batch swapped for a corrupt one).
"""

from __future__ import annotations

import random
import socket
import struct
import threading
from collections.abc import Callable

import crc32c

from kafkite.protocol import framing, records
from kafkite.protocol.messages import registry

RecordIn = tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]], int]


def reseal(b: bytearray) -> bytes:
    """The batch with its length and CRC made right for its (changed) bytes."""
    struct.pack_into(">i", b, 8, len(b) - 12)
    struct.pack_into(">I", b, 17, crc32c.crc32c(bytes(b[21:])))
    return bytes(b)


def random_records(rnd: random.Random, n: int, ts: int) -> list[RecordIn]:
    return [
        (
            rnd.choice([None, b"k%d" % i]),
            bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 200))),
            [("h", b"v")] if rnd.random() < 0.3 else [],
            ts + rnd.randrange(100),
        )
        for i in range(n)
    ]


def corrupt_batch(rnd: random.Random, ts: int, codec: int | None = None) -> tuple[str, bytes]:
    """One CRC-valid damaged batch: (what was done to it, the batch)."""
    codec = rnd.randrange(5) if codec is None else codec
    n = rnd.randrange(1, 40)
    good = bytearray(records.build_batch(random_records(rnd, n, ts), compression=codec))
    kind = rnd.choice(
        ["flip", "truncate", "count", "append", "zero-run", "length", "delta", "payload-garbage"]
    )
    b = bytearray(good)
    body = records.BATCH_HEADER_SIZE
    if kind == "flip":
        for _ in range(rnd.randrange(1, 4)):
            b[rnd.randrange(body, len(b))] = rnd.randrange(256)
    elif kind == "truncate":
        del b[rnd.randrange(body, len(b)) :]
    elif kind == "count":
        new = max(1, n + rnd.choice([-1, 1, 2, 1000, 1 << 30]))
        struct.pack_into(">ii", b, 53, -1, new)  # base sequence stays -1
        struct.pack_into(">i", b, 23, new - 1)
    elif kind == "append":
        b += bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 9)))
    elif kind == "zero-run":
        at = rnd.randrange(body, len(b))
        b[at : at + 8] = b"\x00" * len(b[at : at + 8])
    elif kind == "length":  # an uncompressed record's length varint made to lie
        b[body] = rnd.choice([0x01, 0x7F, 0x00, 0xFF])
    elif kind == "delta":  # a byte inside the first record's header fields
        b[min(len(b) - 1, body + rnd.randrange(1, 5))] = rnd.choice([0x7F, 0x80, 0xFF, 0x01])
    else:
        at = rnd.randrange(body, len(b))
        b[at:] = bytes(rnd.randrange(256) for _ in range(len(b) - at))
    return f"{kind}/{codec}", reseal(b)


def corrupt_batches(seed: int, count: int, ts: int) -> list[tuple[str, bytes]]:
    rnd = random.Random(seed)
    return [corrupt_batch(rnd, ts) for _ in range(count)]


# -- captured frames -----------------------------------------------------------------------------------------


class FrameRecorder:
    """A loopback proxy that records every whole request frame (size prefix included) on its way to
    ``target``. Start the broker it fronts with ``advertised.listeners`` naming ``port``, so that clients
    keep coming through it after their bootstrap. ``target`` may be set after construction."""

    def __init__(self, target: tuple[str, int] | None = None) -> None:
        self.target = target
        self.frames: list[bytes] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._stop = False
        self._threads: list[threading.Thread] = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        self._server.settimeout(0.2)
        while not self._stop:
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            assert self.target is not None
            upstream = socket.create_connection(self.target)
            for src, dst, record in ((client, upstream, True), (upstream, client, False)):
                t = threading.Thread(target=self._pump, args=(src, dst, record), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        pending = bytearray()
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
                if record:
                    pending += data
                    while len(pending) >= 4:
                        (size,) = struct.unpack_from(">i", pending)
                        if len(pending) < 4 + size:
                            break
                        with self._lock:
                            self.frames.append(bytes(pending[: 4 + size]))
                        del pending[: 4 + size]
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop = True
        self._server.close()


def rewrite_produce(frame: bytes, batch: bytes) -> bytes | None:
    """A captured Produce request frame with its first partition's records replaced by ``batch``."""
    reg = registry()
    try:
        key, version = framing.peek_key_version(frame[4:])
        if key != 0:
            return None
        header = framing.decode_request_header(
            reg, memoryview(frame[4:]), reg.request_header_version(key, version)
        )
        body, _ = reg.request(key, version).decode(memoryview(frame[4:]), header.header_size)
        body["topic_data"][0]["partition_data"][0]["records"] = batch
        return framing.encode_request(reg, key, version, header.correlation_id, header.client_id, body)
    except Exception:  # a frame this helper cannot rewrite is simply not used
        return None


MUTATIONS: list[str] = ["flip", "garbage", "truncate", "extend", "size-lie", "splice", "produce-batch"]


def mutate_frame(rnd: random.Random, frame: bytes, batch: Callable[[], bytes]) -> tuple[str, bytes]:
    """One mutation of a whole frame (size prefix included): (which, the bytes to send)."""
    kind = rnd.choice(MUTATIONS)
    b = bytearray(frame)
    if kind == "flip":
        for _ in range(rnd.randrange(1, 9)):
            at = rnd.randrange(4, len(b)) if len(b) > 4 else 0
            b[at] ^= 1 << rnd.randrange(8)
    elif kind == "garbage":
        at = rnd.randrange(4, max(5, len(b)))
        n = rnd.randrange(1, 32)
        b[at : at + n] = bytes(rnd.randrange(256) for _ in range(n))
        struct.pack_into(">i", b, 0, len(b) - 4)
    elif kind == "truncate":
        del b[rnd.randrange(4, max(5, len(b))) :]
        if rnd.random() < 0.5:
            struct.pack_into(">i", b, 0, len(b) - 4)
    elif kind == "extend":
        b += bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 64)))
        if rnd.random() < 0.7:
            struct.pack_into(">i", b, 0, len(b) - 4)
    elif kind == "size-lie":
        struct.pack_into(">i", b, 0, rnd.choice([-1, 0, 1, len(b) + 100, 1 << 30, 0x7FFFFFFF, len(b) // 2]))
    elif kind == "splice":
        if len(b) > 8:
            a = rnd.randrange(4, len(b))
            z = rnd.randrange(a, len(b))
            chunk = bytes(b[a:z])
            at = rnd.randrange(4, len(b))
            b[at:at] = chunk
            struct.pack_into(">i", b, 0, len(b) - 4)
    else:
        rewritten = rewrite_produce(frame, batch())
        if rewritten is not None:
            return kind, rewritten
        return mutate_frame(rnd, frame, batch)
    return kind, bytes(b)
