"""Where the mirror writes: a Kafka target at least once or in transactions, or OCI Streaming REST.

A sink takes one round of ``Outgoing`` writes (at most one per target partition) and answers, per write, where
its records landed or why they were refused. Retriable failures are retried here; what is left is for the
mirror to decide (skip in a rehearsal, stop otherwise, or abort the transaction and start again from the last
committed position).
"""

from __future__ import annotations

import asyncio
import base64
import struct
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kafkite.client import (
    TXN_FENCED,
    KafkaClient,
    KafkaClientError,
    TransactionalProducer,
)
from kafkite.clock import now_ms
from kafkite.migrate.pipeline import Outgoing
from kafkite.protocol import records
from kafkite.protocol.errors import ErrorCode

if TYPE_CHECKING:
    from kafkite.migrate.mirror import Pacer
    from kafkite.migrate.rest import OciStreamingTarget

RETRIABLE = frozenset(
    {
        int(ErrorCode.NOT_LEADER_OR_FOLLOWER),
        int(ErrorCode.LEADER_NOT_AVAILABLE),
        int(ErrorCode.REQUEST_TIMED_OUT),
        int(ErrorCode.NOT_ENOUGH_REPLICAS),
        int(ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND),
        int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
        int(ErrorCode.KAFKA_STORAGE_ERROR),
        int(ErrorCode.NETWORK_EXCEPTION),
    }
)
MAX_RETRIES = 20
# What a broker refuses in a batch itself: the batch is split (or the record skipped) and written again.
REFUSED = frozenset(
    {
        int(ErrorCode.MESSAGE_TOO_LARGE),
        int(ErrorCode.RECORD_LIST_TOO_LARGE),
        int(ErrorCode.INVALID_RECORD),
        int(ErrorCode.CORRUPT_MESSAGE),
        int(ErrorCode.INVALID_TIMESTAMP),
        int(ErrorCode.POLICY_VIOLATION),
    }
)


def error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"ERROR_{code}"


@dataclass
class Written:
    """The answer for one ``Outgoing``: where it landed, or why not."""

    base_offset: int = -1  # Kafka targets: the target offset of the first record
    placed: list[tuple[int, int] | None] = field(default_factory=list)  # REST: (partition, offset) per record
    error: str | None = None
    error_message: str | None = None
    throttle_ms: int = 0
    retried_after_network_error: bool = False  # the write may have landed twice (at least once)
    requests: int = 1


class TransactionFailed(Exception):
    """The open transaction cannot be committed: abort it and start again from the last committed state."""


class Fenced(Exception):
    """Another producer took over the transactional id (a second mirror of the same name)."""


class Sink(ABC):
    verbatim_ok = True  # may send a source batch as it is
    exactly_once = False
    places_by_key = False  # the target chooses the partition (REST)

    @abstractmethod
    async def write(self, outs: list[Outgoing]) -> dict[str, Written]: ...


def plain_batch(batch: bytes) -> bytes:
    """A source batch for a plain (non-idempotent, non-transactional) produce: producer fields cleared."""
    h = records.read_header(batch, 0)
    if h.producer_id < 0 and not h.is_transactional and h.base_sequence < 0:
        return batch
    buf = bytearray(batch)
    struct.pack_into(">h", buf, 21, h.attributes & ~0x30)
    struct.pack_into(">qhi", buf, 43, -1, -1, -1)
    records.update_crc(buf, 0)
    return bytes(buf)


def encode(o: Outgoing) -> bytes:
    return records.build_batch(
        [(r.key, r.value, r.headers, r.timestamp) for r in o.recs], compression=o.codec
    )


class KafkaSink(Sink):
    """Plain produce requests, one per target leader per round; retriable errors are retried per partition."""

    def __init__(self, client: KafkaClient) -> None:
        self.client = client

    async def write(self, outs: list[Outgoing]) -> dict[str, Written]:
        todo: dict[tuple[str, int], bytes] = {}
        keys: dict[tuple[str, int], str] = {}
        for o in outs:
            tp = (o.topic, o.partition)
            todo[tp] = plain_batch(o.verbatim.data) if o.verbatim is not None else encode(o)
            keys[tp] = o.key
        out: dict[str, Written] = {}
        network_retry: set[tuple[str, int]] = set()
        requests: dict[tuple[str, int], int] = {}
        for attempt in range(MAX_RETRIES):
            answers = await self.client.produce_many(todo)
            retry: dict[tuple[str, int], bytes] = {}
            for tp, batch in todo.items():
                requests[tp] = requests.get(tp, 0) + 1
                r = answers.get(tp)
                if r is None or r.error_code in RETRIABLE:
                    if r is not None and r.error_code == ErrorCode.NETWORK_EXCEPTION:
                        network_retry.add(tp)
                    retry[tp] = batch
                    continue
                w = Written(
                    base_offset=r.base_offset,
                    throttle_ms=r.throttle_time_ms,
                    retried_after_network_error=tp in network_retry,
                    requests=requests[tp],
                )
                if r.error_code:
                    w.error, w.error_message = error_name(r.error_code), r.error_message
                out[keys[tp]] = w
            if not retry:
                return out
            todo = retry
            await asyncio.sleep(min(2.0, 0.05 * 2**attempt))
            try:
                await self.client.refresh_metadata(sorted({t for t, _ in todo}))
            except (ConnectionError, KafkaClientError, OSError):
                pass
        for tp in todo:
            out[keys[tp]] = Written(error="RETRIES_EXHAUSTED", error_message="produce kept failing")
        return out


class TxnSink(Sink):
    """Transactional produce: every write of a round joins the open transaction."""

    exactly_once = True

    def __init__(self, client: KafkaClient, producer: TransactionalProducer) -> None:
        self.client = client
        self.producer = producer
        self.txn_bytes = 0
        self.txn_started = 0.0

    async def write(self, outs: list[Outgoing]) -> dict[str, Written]:
        prod = self.producer
        todo: dict[tuple[str, int], bytes] = {}
        keys: dict[tuple[str, int], str] = {}
        try:
            if not prod.in_transaction:
                self.txn_started = time.monotonic()
                self.txn_bytes = 0
            await prod.add_partitions([(o.topic, o.partition) for o in outs])
        except KafkaClientError as e:
            if e.code in TXN_FENCED:
                raise Fenced(str(e)) from e
            raise TransactionFailed(str(e)) from e
        first_seq: dict[tuple[str, int], int] = {}
        for o in outs:
            tp = (o.topic, o.partition)
            first_seq[tp] = prod.next_sequence(o.topic, o.partition)
            if o.verbatim is not None:
                todo[tp] = prod.stamp(o.topic, o.partition, o.verbatim.data, o.count)
            else:
                rs = [(r.key, r.value, r.headers, r.timestamp) for r in o.recs]
                todo[tp] = prod.batch(o.topic, o.partition, rs, compression=o.codec)
            keys[tp] = o.key
            self.txn_bytes += o.size
        out: dict[str, Written] = {}
        for attempt in range(MAX_RETRIES):
            # A retry sends the same batch with the same sequence: the broker does not append it twice.
            try:
                answers = await self.client.produce_many(todo, transactional_id=prod.transactional_id)
            except (ConnectionError, OSError, KafkaClientError) as e:
                raise TransactionFailed(f"produce failed: {e}") from e
            retry: dict[tuple[str, int], bytes] = {}
            for tp, batch in todo.items():
                r = answers.get(tp)
                if r is None or r.error_code in RETRIABLE:
                    retry[tp] = batch
                    continue
                if r.error_code in TXN_FENCED:
                    raise Fenced(f"{tp[0]}/{tp[1]}: {error_name(r.error_code)}")
                if r.error_code in REFUSED:
                    prod.rewind(tp[0], tp[1], first_seq[tp])
                    out[keys[tp]] = Written(error=error_name(r.error_code), error_message=r.error_message)
                    continue
                if r.error_code:
                    raise TransactionFailed(
                        f"{tp[0]}/{tp[1]}: {error_name(r.error_code)} {r.error_message or ''}".strip()
                    )
                out[keys[tp]] = Written(base_offset=r.base_offset, throttle_ms=r.throttle_time_ms)
            if not retry:
                return out
            todo = retry
            await asyncio.sleep(min(2.0, 0.05 * 2**attempt))
            try:
                await self.client.refresh_metadata(sorted({t for t, _ in todo}))
            except (ConnectionError, KafkaClientError, OSError):
                pass
        raise TransactionFailed("produce kept failing with retriable errors")

    async def commit(self, state_topic: str, syncs: list[tuple[bytes, bytes]]) -> None:
        """Write the offset-sync records into the transaction and commit it."""
        prod = self.producer
        try:
            if syncs:
                now = now_ms()
                batch = prod.batch(state_topic, 0, [(k, v, [], now) for k, v in syncs])
                answers = await prod.produce({(state_topic, 0): batch})
                r = answers.get((state_topic, 0))
                if r is None or r.error_code:
                    code = r.error_code if r is not None else int(ErrorCode.NETWORK_EXCEPTION)
                    if code in TXN_FENCED:
                        raise Fenced(error_name(code))
                    raise TransactionFailed(f"writing the offset syncs: {error_name(code)}")
            await prod.commit()
        except KafkaClientError as e:
            if e.code in TXN_FENCED:
                raise Fenced(str(e)) from e
            raise TransactionFailed(f"commit: {e}") from e
        except (ConnectionError, OSError) as e:
            raise TransactionFailed(f"commit: {e}") from e
        self.txn_bytes = 0


# ---------------------------------------------------------------------------------------------- REST


class RestSink(Sink):
    """OCI Streaming PutMessages: the target picks each message's partition from its key; no headers, no
    timestamps (the service stamps messages on arrival). One request per stream at a time keeps the order of
    each source partition; requests stay under OCI's 1 MB; a 429 is waited out and the request sent again."""

    verbatim_ok = False
    places_by_key = True

    def __init__(
        self, rest: OciStreamingTarget, *, request_bytes: int, pace: dict[str, Pacer] | None = None
    ) -> None:
        self.rest = rest
        self.request_bytes = request_bytes
        self.pace = pace or {}  # stream name -> Pacer (bytes/s for the whole stream)
        self.throttled = 0

    async def write(self, outs: list[Outgoing]) -> dict[str, Written]:
        by_topic: dict[str, list[Outgoing]] = {}
        for o in outs:
            by_topic.setdefault(o.topic, []).append(o)
        results: dict[str, Written] = {}
        await asyncio.gather(*(self._write_topic(t, os_, results) for t, os_ in by_topic.items()))
        return results

    async def _write_topic(self, topic: str, outs: list[Outgoing], results: dict[str, Written]) -> None:
        entries: list[tuple[Outgoing, int, bytes | None, bytes]] = []
        for o in outs:
            results[o.key] = Written(placed=[None] * len(o.recs), requests=0)
            for i, r in enumerate(o.recs):
                entries.append((o, i, r.key, r.value or b""))
        start = 0
        while start < len(entries):
            size = 0
            end = start
            while end < len(entries):
                n = len(entries[end][3]) + len(entries[end][2] or b"")
                if end > start and size + n > self.request_bytes:
                    break
                size += n
                end += 1
            chunk = entries[start:end]
            pacer = self.pace.get(topic)
            if pacer is not None:
                await pacer.take(size)
            answers = await self._put(topic, [(k, v) for _, _, k, v in chunk], results, outs)
            for (o, i, _, _), (q, off, err, msg) in zip(chunk, answers, strict=True):
                w = results[o.key]
                if err:
                    if w.error is None:
                        w.error, w.error_message = err, msg
                else:
                    w.placed[i] = (q, off)
            start = end

    async def _put(
        self, topic: str, msgs: list[tuple[bytes | None, bytes]], results: dict[str, Written], outs: list[Any]
    ) -> list[tuple[int, int, str | None, str | None]]:
        delay = 0.2
        for attempt in range(60):
            for o in outs:
                results[o.key].requests += 1
            try:
                return list(await self.rest.put(topic, msgs))
            except RestThrottled as e:
                self.throttled += 1
                for o in outs:
                    results[o.key].throttle_ms += int(e.retry_after * 1000)
                await asyncio.sleep(max(e.retry_after, delay))
                delay = min(2.0, delay * 1.5)
            except RestUnavailable:
                if attempt == 59:
                    raise
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)
        raise RestUnavailable("PutMessages kept being refused")


class RestThrottled(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"throttled for {retry_after:.2f}s")
        self.retry_after = retry_after


class RestUnavailable(Exception):
    pass


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()
