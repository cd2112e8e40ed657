"""Produce: validate each partition's record batch header and CRC, append the bytes as received."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

from kafkite.broker.core import Broker, CloseConnection, RequestContext, now_ms
from kafkite.broker.epochs import ensure_leaders
from kafkite.log.base import AppendInfo, AppendOutcomeUnknown, LogError, NotLeader, Partition
from kafkite.log.producer_state import (
    InvalidProducerEpoch,
    InvalidTxnState,
    OutOfOrderSequence,
    ProducerStateError,
    UnknownProducerId,
)
from kafkite.protocol import records
from kafkite.protocol.errors import ErrorCode

log = logging.getLogger("kafkite.produce")


def _error(index: int, code: ErrorCode, message: str | None = None) -> dict[str, Any]:
    return {"index": index, "error_code": int(code), "base_offset": -1, "error_message": message}


def validate_produce_batch(
    buf: memoryview, max_message_bytes: int, ts_before_ms: int, ts_after_ms: int
) -> records.BatchHeader:
    """One v2 batch, well formed, within size, CRC intact (raises ProduceError); returns its header."""
    if len(buf) == 0:
        raise ProduceError(ErrorCode.INVALID_RECORD, "empty record set")
    try:
        h = records.read_header(buf, 0)
    except records.InvalidBatch as e:
        if len(buf) >= 17 and buf[16] != 2:
            raise ProduceError(
                ErrorCode.INVALID_RECORD, "Produce v3+ requires record batch magic 2"
            ) from None
        raise ProduceError(ErrorCode.CORRUPT_MESSAGE, str(e)) from None
    if h.size != len(buf):
        if h.size > len(buf):
            raise ProduceError(ErrorCode.CORRUPT_MESSAGE, "record batch is truncated")
        raise ProduceError(
            ErrorCode.INVALID_RECORD, "Produce v3+ requires exactly one record batch per partition"
        )
    if h.size > max_message_bytes:
        raise ProduceError(
            ErrorCode.MESSAGE_TOO_LARGE,
            f"record batch of {h.size} bytes exceeds max.message.bytes={max_message_bytes}",
        )
    if not records.check_crc(buf, 0, h):
        raise ProduceError(ErrorCode.CORRUPT_MESSAGE, "record batch CRC mismatch")
    if h.records_count <= 0 or h.last_offset_delta != h.records_count - 1:
        raise ProduceError(
            ErrorCode.INVALID_RECORD,
            f"record batch has {h.records_count} records but last offset delta {h.last_offset_delta}",
        )
    if h.is_control:
        raise ProduceError(ErrorCode.INVALID_RECORD, "clients may not produce control batches")
    if h.compression > records.COMPRESSION_ZSTD:
        raise ProduceError(
            ErrorCode.UNSUPPORTED_COMPRESSION_TYPE, f"unknown compression codec {h.compression}"
        )
    if ts_before_ms < (1 << 63) - 1 or ts_after_ms < (1 << 63) - 1:
        now = now_ms()
        if h.base_timestamp >= 0 and now - h.base_timestamp > ts_before_ms:
            raise ProduceError(
                ErrorCode.INVALID_TIMESTAMP, "timestamp is older than message.timestamp.before.max.ms"
            )
        if h.max_timestamp - now > ts_after_ms:
            raise ProduceError(
                ErrorCode.INVALID_TIMESTAMP, "timestamp is newer than message.timestamp.after.max.ms"
            )
    return h


def check_keys_for_compaction(buf: memoryview | bytearray, h: records.BatchHeader, tp: str) -> None:
    """A compacted topic refuses records without a key (INVALID_RECORD), as Kafka does."""
    try:
        missing = any(r.key is None for r in records.iter_records(buf, 0, h))
    except records.InvalidBatch as e:
        raise ProduceError(ErrorCode.CORRUPT_MESSAGE, str(e)) from None
    if missing:
        raise ProduceError(
            ErrorCode.INVALID_RECORD,
            f"Compacted topic cannot accept message without key in topic partition {tp}.",
        )


# What each refusal of the partition's producer state means on the wire.
PRODUCER_STATE_ERRORS: dict[type[ProducerStateError], ErrorCode] = {
    OutOfOrderSequence: ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
    InvalidProducerEpoch: ErrorCode.INVALID_PRODUCER_EPOCH,
    UnknownProducerId: ErrorCode.UNKNOWN_PRODUCER_ID,
    InvalidTxnState: ErrorCode.INVALID_TXN_STATE,
}


# Topic compression.type values that make the broker store batches in one codec whatever the producer used.
TOPIC_CODECS = {
    "uncompressed": records.COMPRESSION_NONE,
    "gzip": records.COMPRESSION_GZIP,
    "snappy": records.COMPRESSION_SNAPPY,
    "lz4": records.COMPRESSION_LZ4,
    "zstd": records.COMPRESSION_ZSTD,
}


def recompress(buf: memoryview, codec: int) -> bytearray | None:
    """The validated batch in ``buf`` re-encoded with ``codec``, or None when it already uses it."""
    h = records.read_header(buf, 0)
    if h.compression == codec:
        return None
    try:
        recs = records.decode_records(buf, 0, h)
    except records.InvalidBatch as e:
        raise ProduceError(ErrorCode.CORRUPT_MESSAGE, str(e)) from None
    out = records.build_batch(
        [(r.key, r.value, r.headers, r.timestamp) for r in recs],
        compression=codec,
        producer_id=h.producer_id,
        producer_epoch=h.producer_epoch,
        base_sequence=h.base_sequence,
        transactional=h.is_transactional,
        partition_leader_epoch=h.partition_leader_epoch,
    )
    return bytearray(out)


class ProduceError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def handle_produce(broker: Broker, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any] | None:
    acks = req["acks"]
    responses: list[dict[str, Any]] = []
    appended: set[Partition] = set()
    any_error = False
    now = now_ms()
    queued: list[tuple[list[dict[str, Any]], int, str, int, Partition, Awaitable[AppendInfo]]] = []
    if broker.cluster is not None:
        await ensure_leaders(
            broker, ((t["name"], pd["index"]) for t in req["topic_data"] for pd in t["partition_data"])
        )
    for topic in req["topic_data"]:
        name = topic["name"]
        meta = broker.topic(name)
        out: list[dict[str, Any]] = []
        for pd in topic["partition_data"]:
            idx = pd["index"]
            if acks not in (0, 1, -1):
                out.append(_error(idx, ErrorCode.INVALID_REQUIRED_ACKS))
                continue
            if broker.blackhole:
                out.append({"index": idx, "error_code": 0, "base_offset": 0, "log_start_offset": 0})
                continue
            part = broker.partition(name, idx) if meta is not None else None
            if part is None:
                out.append(_error(idx, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION))
                continue
            if broker.cluster is not None and not broker.cluster.leads(name, idx):
                out.append(_error(idx, ErrorCode.NOT_LEADER_OR_FOLLOWER))
                continue
            buf = pd["records"]
            cfg = part.config
            try:
                if buf is None:
                    raise ProduceError(ErrorCode.INVALID_RECORD, "null record set")
                h = validate_produce_batch(
                    buf,
                    cfg.max_message_bytes,
                    cfg.message_timestamp_before_max_ms,
                    cfg.message_timestamp_after_max_ms,
                )
                if cfg.compact_enabled:
                    check_keys_for_compaction(buf, h, f"{name}-{idx}")
                if h.is_transactional and broker.txn is not None:
                    refused = broker.txn.check_produce(h.producer_id, h.producer_epoch, name, idx)
                    if refused is not None:
                        raise ProduceError(*refused)
                codec = TOPIC_CODECS.get(cfg.compression_type)
                if codec is not None:
                    buf = recompress(buf, codec) or buf
                append_async = getattr(part, "append_async", None)
                if append_async is not None:
                    # A database engine: queued now, in request order, and awaited below (concurrently).
                    queued.append((out, len(out), name, idx, part, append_async(buf, now_ms=now)))
                    out.append({"error_code": 0})
                    continue
                info = part.append(buf, now_ms=now)
            except ProduceError as e:
                out.append(_error(idx, e.code, e.message))
                continue
            except ProducerStateError as e:
                out.append(_error(idx, PRODUCER_STATE_ERRORS[type(e)], str(e)))
                continue
            except LogError as e:
                log.error("append to %s-%d failed: %s", name, idx, e)
                out.append(_error(idx, ErrorCode.KAFKA_STORAGE_ERROR, str(e)))
                continue
            except OSError as e:
                log.error("append to %s-%d failed: %s", name, idx, e)
                out.append(_error(idx, ErrorCode.KAFKA_STORAGE_ERROR, str(e)))
                continue
            appended.add(part)
            broker.waiters.notify(name, idx)
            out.append(
                {
                    "index": idx,
                    "error_code": 0,
                    "base_offset": info.first_offset,
                    "log_append_time_ms": info.log_append_time,
                    "log_start_offset": info.log_start_offset,
                }
            )
        any_error = any_error or any(p["error_code"] for p in out)
        responses.append({"name": name, "partition_responses": out})
    for out, i, name, idx, part, pending in queued:
        try:
            info = await pending
        except ProducerStateError as e:
            out[i] = _error(idx, PRODUCER_STATE_ERRORS[type(e)], str(e))
        except NotLeader as e:
            out[i] = _error(idx, ErrorCode.NOT_LEADER_OR_FOLLOWER, str(e))
        except AppendOutcomeUnknown as e:
            # Possibly stored: the client retries the same batch, which is recognised if it was (not a new
            # write, as after KAFKA_STORAGE_ERROR, which clients take for "not stored").
            log.error("append to %s-%d: %s", name, idx, e)
            out[i] = _error(idx, ErrorCode.REQUEST_TIMED_OUT, str(e))
        except (LogError, OSError) as e:
            log.error("append to %s-%d failed: %s", name, idx, e)
            out[i] = _error(idx, ErrorCode.KAFKA_STORAGE_ERROR, str(e))
        else:
            appended.add(part)
            broker.waiters.notify(name, idx)
            out[i] = {
                "index": idx,
                "error_code": 0,
                "base_offset": info.first_offset,
                "log_append_time_ms": info.log_append_time,
                "log_start_offset": info.log_start_offset,
            }
        any_error = any_error or out[i]["error_code"] != 0
    if acks == 0:
        if any_error:
            # The client expects no response: closing is how Kafka tells it something went wrong.
            raise CloseConnection()
        return None
    if acks == -1 and appended and broker.config["log.flush.on.ack"]:
        try:
            await broker.flush_before_ack(appended)
        except OSError as e:
            log.error("fsync failed: %s", e)
            for t in responses:
                for p in t["partition_responses"]:
                    if p["error_code"] == 0:
                        p.update(error_code=int(ErrorCode.KAFKA_STORAGE_ERROR), base_offset=-1)
    return {"responses": responses, "throttle_time_ms": 0}
