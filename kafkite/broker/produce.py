"""Produce: validate each partition's record batch as Kafka's log validator does, append it as received.

The header and CRC are checked first, then every record is walked (``records.scan_records``; compressed
payloads are inflated within a bound first) without decoding keys, values or headers into objects. Records
refused one by one (no key on a compacted topic, a timestamp out of range) are answered with
``record_errors`` (Produce v8+), so clients fail only those and the rest of the batch with another error.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any, NamedTuple

from kafkite.broker.core import Broker, CloseConnection, RequestContext
from kafkite.broker.epochs import ensure_leaders
from kafkite.clock import now_ms
from kafkite.log.base import AppendInfo, AppendOutcomeUnknown, LogError, NotLeader, Partition
from kafkite.log.producer_state import (
    InvalidProducerEpoch,
    InvalidTxnState,
    OutOfOrderSequence,
    ProducerStateError,
    UnknownProducerId,
)
from kafkite.protocol import records
from kafkite.protocol.compression import CompressionError, decompress
from kafkite.protocol.errors import ErrorCode

log = logging.getLogger("kafkite.produce")

LONG_MAX = (1 << 63) - 1


def _error(index: int, code: ErrorCode, message: str | None = None) -> dict[str, Any]:
    return {"index": index, "error_code": int(code), "base_offset": -1, "error_message": message}


def validate_produce_batch(
    buf: memoryview, max_message_bytes: int, ts_before_ms: int, ts_after_ms: int
) -> records.BatchHeader:
    """``check_header``, then the batch's base and max timestamps against the topic's bounds
    (INVALID_TIMESTAMP for the whole batch): for batches built by the broker's own gateways."""
    h = check_header(buf, max_message_bytes)
    if ts_before_ms < LONG_MAX or ts_after_ms < LONG_MAX:
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


def check_header(buf: memoryview, max_message_bytes: int) -> records.BatchHeader:
    """The batch header checks of a produced batch (raises ProduceError): one v2 batch, whole, within size,
    CRC intact, a record count that matches its offsets, not a control batch, a sequence number when it has
    a producer id, a known codec. No record is read here (see ``check_records``)."""
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
    if h.producer_id >= 0 and h.base_sequence < 0:
        raise ProduceError(
            ErrorCode.INVALID_RECORD,
            f"Invalid sequence number {h.base_sequence} in record batch with producerId {h.producer_id}",
        )
    if h.compression > records.COMPRESSION_ZSTD:
        raise ProduceError(
            ErrorCode.UNSUPPORTED_COMPRESSION_TYPE, f"unknown compression codec {h.compression}"
        )
    return h


class RecordLimits(NamedTuple):
    """What ``check_records`` needs besides the batch: the decompression bounds and the topic's rules."""

    max_decompressed_bytes: int
    max_compression_ratio: int
    max_message_bytes: int
    compacted: bool
    log_append_time: bool
    ts_before_ms: int
    ts_after_ms: int


def inflation_limit(compressed: int, limits: RecordLimits) -> int:
    """How far a compressed records section of ``compressed`` bytes may inflate: never past
    ``message.max.decompressed.bytes``, and past ``max.message.bytes`` only within
    ``message.max.compression.ratio`` times its compressed size."""
    return min(
        limits.max_decompressed_bytes,
        max(limits.max_message_bytes, limits.max_compression_ratio * compressed),
    )


def check_records(buf: memoryview, h: records.BatchHeader, tp: str, limits: RecordLimits, now: int) -> None:
    """Walk every record as Kafka's LogValidator does (raises ProduceError).

    A record that cannot be read answers INVALID_RECORD, a compressed payload that cannot be inflated
    (corrupt, truncated, or inflating past its limit) CORRUPT_MESSAGE. Records that are well formed but
    refused one by one (no key on a compacted topic, a timestamp out of range) answer with ``record_errors``
    naming them. The batch stays as received except for a max timestamp that is not its records' largest,
    which is set right (with its CRC) as Kafka's broker does.
    """
    count = h.records_count
    try:
        if h.compression == records.COMPRESSION_NONE:
            scan = records.scan_records(buf, records.BATCH_HEADER_SIZE, len(buf), count)
        else:
            payload = buf[records.BATCH_HEADER_SIZE :]
            limit = inflation_limit(len(payload), limits)
            try:
                data = decompress(h.compression, payload, limit)
            except CompressionError as e:
                raise ProduceError(ErrorCode.CORRUPT_MESSAGE, f"{e} in topic partition {tp}") from None
            scan = records.scan_records(data, 0, len(data), count)
    except records.InvalidBatch as e:
        raise ProduceError(ErrorCode.INVALID_RECORD, f"{e} in topic partition {tp}") from None
    # What may be refused record by record is looked at one record at a time only when the walk says it may
    # be there: a key missing on a compacted topic, a timestamp outside the topic's bounds.
    suspect = limits.compacted and scan.null_keys > 0
    if h.log_append_time:
        suspect = (
            suspect or limits.log_append_time or _out_of_range(h.max_timestamp, h.max_timestamp, limits, now)
        )
    elif not limits.log_append_time:
        suspect = suspect or _out_of_range(
            h.base_timestamp + scan.min_ts_delta, h.base_timestamp + scan.max_ts_delta, limits, now
        )
    if suspect:
        refused = _record_errors(buf, h, tp, limits, now)
        if refused is not None:
            raise refused
    if not h.log_append_time and not limits.log_append_time:
        top = h.base_timestamp + scan.max_ts_delta
        if top != h.max_timestamp:
            records.set_max_timestamp(buf, 0, top)
            records.update_crc(buf, 0)


def _out_of_range(lowest: int, highest: int, limits: RecordLimits, now: int) -> bool:
    """Whether a timestamp between ``lowest`` and ``highest`` may lie outside the topic's bounds."""
    return now - lowest > limits.ts_before_ms or highest - now > limits.ts_after_ms


def _record_errors(
    buf: memoryview, h: records.BatchHeader, tp: str, limits: RecordLimits, now: int
) -> ProduceError | None:
    """The per-record refusals of a well-formed batch, as Kafka's LogValidator.validateRecord words them."""
    errors: list[tuple[int, str]] = []
    bad_timestamp = False
    low = now - limits.ts_before_ms
    high = now + limits.ts_after_ms
    for i, r in enumerate(records.iter_records(buf, 0, h, max_size=limits.max_decompressed_bytes)):
        if limits.compacted and r.key is None:
            errors.append((i, f"Compacted topic cannot accept message without key in topic partition {tp}."))
        elif h.log_append_time and limits.log_append_time:
            bad_timestamp = True
            errors.append(
                (
                    i,
                    f"Invalid timestamp type in message with offset {r.offset}. Producer should not set"
                    " timestamp type to LogAppendTime.",
                )
            )
        elif (
            not limits.log_append_time
            and r.timestamp != -1
            and _out_of_range(r.timestamp, r.timestamp, limits, now)
        ):
            bad_timestamp = True
            errors.append(
                (
                    i,
                    f"Timestamp {r.timestamp} of message with offset {r.offset} is out of range."
                    f" The timestamp should be within [{low}, {high}]",
                )
            )
    if not errors:
        return None
    if bad_timestamp:
        code = ErrorCode.INVALID_TIMESTAMP
        message = "One or more records have been rejected due to invalid timestamp"
    else:
        code = ErrorCode.INVALID_RECORD
        shown = ", ".join(f"RecordError(batchIndex={i}, message='{m}')" for i, m in errors[:3])
        message = (
            f"One or more records have been rejected due to {len(errors)} record errors in total, and only"
            f" showing the first three errors at most: [{shown}]"
        )
    return ProduceError(code, message, errors)


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
    def __init__(
        self, code: ErrorCode, message: str, record_errors: list[tuple[int, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.record_errors = record_errors or []

    def response(self, index: int) -> dict[str, Any]:
        out = _error(index, self.code, self.message)
        if self.record_errors:
            out["record_errors"] = [
                {"batch_index": i, "batch_index_error_message": m} for i, m in self.record_errors
            ]
        return out


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

    max_decompressed: int = broker.config["message.max.decompressed.bytes"]
    max_ratio: int = broker.config["message.max.compression.ratio"]
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
                h = check_header(buf, cfg.max_message_bytes)
                check_records(
                    buf,
                    h,
                    f"{name}-{idx}",
                    RecordLimits(
                        max_decompressed,
                        max_ratio,
                        cfg.max_message_bytes,
                        cfg.compact_enabled,
                        cfg.log_append_time,
                        cfg.message_timestamp_before_max_ms,
                        cfg.message_timestamp_after_max_ms,
                    ),
                    now,
                )
                if h.is_transactional and broker.txn is not None:
                    refused = broker.txn.check_produce(h.producer_id, h.producer_epoch, name, idx)
                    if refused is not None:
                        raise ProduceError(*refused)
                codec = TOPIC_CODECS.get(cfg.compression_type)
                if codec is not None:
                    buf = recompress(buf, codec) or buf
                # Queued now, in request order, and awaited below (all partitions' appends together).
                queued.append((out, len(out), name, idx, part, part.append(buf, now_ms=now)))
                out.append({"error_code": 0})
                continue
            except ProduceError as e:
                out.append(e.response(idx))
                continue
            except ProducerStateError as e:
                log.info("produce to %s-%d refused: %s", name, idx, e)
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
        any_error = any_error or any(p["error_code"] for p in out)
        responses.append({"name": name, "partition_responses": out})
    for out, i, name, idx, part, pending in queued:
        try:
            info = await pending
        except ProducerStateError as e:
            log.info("produce to %s-%d refused: %s", name, idx, e)
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
