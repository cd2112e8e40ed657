"""The data plane over the partition logs: PutMessages appends record batches exactly as a Kafka Produce
would, GetMessages reads whole batches and decodes their records (the REST gateway is where records get
decoded)."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from kafkite.broker.core import Broker
from kafkite.broker.produce import ProduceError, validate_produce_batch
from kafkite.clock import now_ms
from kafkite.log.base import LogError, OffsetOutOfRange
from kafkite.protocol import records
from kafkite.protocol.errors import ErrorCode

log = logging.getLogger("kafkite.streaming")

GET_MAX_BYTES = 1024 * 1024  # bytes of batches read for one GetMessages (what OCI returns at most)


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's default partitioner hash), as a signed 32-bit value."""
    m = 0x5BD1E995
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    n4 = length // 4
    for i in range(n4):
        k = int.from_bytes(data[4 * i : 4 * i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    rest = length % 4
    tail = 4 * n4
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for_key(key: bytes | None, partitions: int) -> int:
    """The partition of a message: murmur2 of the key (as Kafka's Java producer); random without a key."""
    if key is None:
        return random.randrange(partitions)
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass
class PutResult:
    partition: int
    offset: int = -1
    timestamp_ms: int = -1
    error: str | None = None
    error_message: str | None = None


async def put_messages(
    broker: Broker, topic: str, entries: list[tuple[bytes | None, bytes]]
) -> list[PutResult]:
    """Append ``entries`` (key, value) to ``topic``: one batch per partition, in request order within each."""
    meta = broker.topic(topic)
    if meta is None:
        raise LookupError(topic)
    now = now_ms()
    by_partition: dict[int, list[int]] = {}
    results = [PutResult(partition_for_key(k, meta.partitions)) for k, _ in entries]
    for i, r in enumerate(results):
        by_partition.setdefault(r.partition, []).append(i)
    for index, positions in by_partition.items():
        part = broker.partition(topic, index)
        if part is None:
            for i in positions:
                results[i].error, results[i].error_message = "NotFound", "the partition does not exist"
            continue
        batch = bytearray(records.build_batch([(entries[i][0], entries[i][1], (), now) for i in positions]))
        cfg = part.config
        try:
            validate_produce_batch(
                memoryview(batch),
                cfg.max_message_bytes,
                cfg.message_timestamp_before_max_ms,
                cfg.message_timestamp_after_max_ms,
            )
            info = await part.append(batch, now_ms=now)
        except ProduceError as e:
            code = "MessageTooLarge" if e.code == ErrorCode.MESSAGE_TOO_LARGE else "InvalidParameter"
            for i in positions:
                results[i].error, results[i].error_message = code, e.message
            continue
        except (LogError, OSError) as e:
            log.error("append to %s-%d failed: %s", topic, index, e)
            for i in positions:
                results[i].error, results[i].error_message = "InternalServerError", str(e)
            continue
        broker.waiters.notify(topic, index)
        ts = info.log_append_time if info.log_append_time >= 0 else now
        for n, i in enumerate(positions):
            results[i].offset = info.first_offset + n
            results[i].timestamp_ms = ts
    return results


async def read_records(
    broker: Broker, topic: str, partition: int, offset: int, limit: int, max_bytes: int = GET_MAX_BYTES
) -> tuple[list[records.Record], int]:
    """Records of one partition from ``offset`` (at most ``limit``): (records, the offset to continue from).

    An offset below the log start continues from the log start (retention moved on); control records
    (transaction markers) are skipped but advance the position.
    """
    part = broker.partition(topic, partition)
    if part is None:
        raise LookupError(f"{topic}-{partition}")
    hw = part.high_watermark
    offset = max(offset, part.log_start_offset)
    if offset >= hw or limit <= 0:
        return [], min(offset, hw)
    try:
        res = await part.read(offset, max_bytes, max_offset=hw, min_one=True)
    except OffsetOutOfRange:
        return [], offset
    buf = res.to_bytes()
    out: list[records.Record] = []
    pos = 0
    nxt = offset
    while pos < len(buf) and len(out) < limit:
        try:
            h = records.read_header(buf, pos)
        except records.InvalidBatch:
            break
        if pos + h.size > len(buf):
            break
        if h.is_control:
            nxt = max(nxt, h.last_offset + 1)
            pos += h.size
            continue
        for rec in records.iter_records(buf, pos, h):
            if rec.offset < offset:
                continue
            out.append(rec)
            nxt = rec.offset + 1
            if len(out) >= limit:
                break
        else:
            nxt = max(nxt, h.last_offset + 1)
        pos += h.size
    return out, nxt
