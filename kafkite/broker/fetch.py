"""Fetch: whole batches as file ranges, never decoded; long polls woken by appends."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from kafkite.broker.core import Broker, RequestContext
from kafkite.broker.epochs import current_leader, ensure_leaders, leader_error
from kafkite.log.base import LogError, OffsetOutOfRange, ReadResult
from kafkite.protocol.errors import ErrorCode
from kafkite.protocol.messages import RecordsChunks

READ_COMMITTED = 1


def _resolve(broker: Broker, topic: dict[str, Any], version: int) -> tuple[str | None, uuid.UUID]:
    if version >= 13:
        meta = broker.topic_by_id(topic["topic_id"])
        return (meta.name if meta else None), topic["topic_id"]
    meta = broker.topic(topic["topic"])
    return topic["topic"], meta.topic_id if meta else uuid.UUID(int=0)


async def _read_all(
    broker: Broker, req: dict[str, Any], version: int
) -> tuple[list[dict[str, Any]], int, bool]:
    """One pass over the requested partitions: (response topics, bytes gathered, any error)."""
    remaining = min(req["max_bytes"], broker.config["fetch.max.bytes"])
    if remaining <= 0:
        remaining = 1
    prefetched = _prefetch(broker, req, version, remaining)
    try:
        return await _read_each(broker, req, version, remaining, prefetched)
    finally:
        for task in prefetched.values():  # reads the loop did not take (an error cut it short)
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                task.exception()


def _prefetch(
    broker: Broker, req: dict[str, Any], version: int, budget: int
) -> dict[tuple[int, int], asyncio.Task[ReadResult]]:
    """The reads of the requested partitions, started together when the engine wants it (a database's round
    trips then overlap);
    ``_read_each`` takes them in order and keeps what its byte budget allows. At most ``budget`` bytes."""
    tasks: dict[tuple[int, int], asyncio.Task[ReadResult]] = {}
    if broker.blackhole or not broker.storage.concurrent_reads:
        return tasks
    committed = req["isolation_level"] == READ_COMMITTED
    for t, topic in enumerate(req["topics"]):
        name, _ = _resolve(broker, topic, version)
        for i, p in enumerate(topic["partitions"]):
            idx = p["partition"]
            part = broker.partition(name, idx) if name is not None else None
            if part is None or name is None:
                continue
            if leader_error(broker, name, idx, part, p.get("current_leader_epoch", -1)) is not None:
                continue
            limit = min(p["partition_max_bytes"], budget)
            if limit <= 0:
                return tasks
            try:
                max_offset = part.last_stable_offset if committed else part.high_watermark
            except LogError:
                continue  # the database cannot be reached: _read_each answers KAFKA_STORAGE_ERROR
            budget -= limit
            read = part.read(p["fetch_offset"], limit, max_offset=max_offset, min_one=True)
            tasks[(t, i)] = asyncio.ensure_future(read)
    return tasks


def _trimmed(res: ReadResult, max_bytes: int, min_one: bool) -> ReadResult:
    """The whole batches of ``res`` a read of ``max_bytes`` would have returned."""
    if res.size <= max_bytes:
        return res
    chunks: list[Any] = []
    size = 0
    for chunk in res.chunks:
        n = len(chunk) if isinstance(chunk, bytes) else chunk.size
        if size + n > max_bytes and not (min_one and not chunks):
            break
        chunks.append(chunk)
        size += n
    return res._replace(chunks=chunks, size=size)


async def _read_each(
    broker: Broker,
    req: dict[str, Any],
    version: int,
    remaining: int,
    prefetched: dict[tuple[int, int], asyncio.Task[ReadResult]],
) -> tuple[list[dict[str, Any]], int, bool]:
    total = 0
    errors = False
    out: list[dict[str, Any]] = []
    for t, topic in enumerate(req["topics"]):
        name, topic_id = _resolve(broker, topic, version)
        parts_out: list[dict[str, Any]] = []
        for i, p in enumerate(topic["partitions"]):
            idx = p["partition"]
            entry: dict[str, Any] = {"partition_index": idx, "records": b""}
            part = broker.partition(name, idx) if name is not None else None
            if part is None:
                code = (
                    ErrorCode.UNKNOWN_TOPIC_ID
                    if version >= 13 and name is None
                    else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                )
                entry.update(
                    error_code=int(code), high_watermark=-1, last_stable_offset=-1, log_start_offset=-1
                )
                errors = True
                parts_out.append(entry)
                continue
            assert name is not None  # a partition was found by it
            refused = leader_error(broker, name, idx, part, p.get("current_leader_epoch", -1))
            if refused is not None:
                entry.update(
                    error_code=int(refused),
                    high_watermark=-1,
                    last_stable_offset=-1,
                    log_start_offset=-1,
                    current_leader=current_leader(broker, name, idx, part),
                )
                errors = True
                parts_out.append(entry)
                continue
            try:
                if part.behind:
                    await part.catch_up()  # the last stable offset, without holding the loop
                lso = part.last_stable_offset
            except LogError:  # a database engine that cannot reach its database
                entry.update(
                    error_code=int(ErrorCode.KAFKA_STORAGE_ERROR),
                    high_watermark=-1,
                    last_stable_offset=-1,
                    log_start_offset=-1,
                )
                errors = True
                parts_out.append(entry)
                continue
            hw = part.high_watermark
            entry.update(
                error_code=0,
                high_watermark=hw,
                last_stable_offset=lso,
                log_start_offset=part.log_start_offset,
            )
            committed = req["isolation_level"] == READ_COMMITTED
            entry["aborted_transactions"] = [] if committed else None
            if broker.blackhole:
                parts_out.append(entry)
                continue
            limit = min(p["partition_max_bytes"], remaining)
            try:
                args = (p["fetch_offset"], max(limit, 0))
                max_offset = lso if committed else hw
                early = prefetched.pop((t, i), None)
                if early is not None:
                    res = _trimmed(await early, args[1], total == 0)
                else:
                    res = await part.read(*args, max_offset=max_offset, min_one=total == 0)
            except OffsetOutOfRange:
                entry["error_code"] = int(ErrorCode.OFFSET_OUT_OF_RANGE)
                errors = True
                parts_out.append(entry)
                continue
            except LogError:  # a database engine that cannot reach its database
                entry["error_code"] = int(ErrorCode.KAFKA_STORAGE_ERROR)
                errors = True
                parts_out.append(entry)
                continue
            if res.size:
                entry["records"] = RecordsChunks(res.chunks)
                total += res.size
                remaining -= res.size
                if committed:
                    # Consumers drop the records of these transactions (up to their ABORT markers).
                    try:
                        aborted = part.aborted_transactions(p["fetch_offset"], lso)
                    except LogError:
                        entry.update(records=b"", error_code=int(ErrorCode.KAFKA_STORAGE_ERROR))
                        total -= res.size
                        remaining += res.size
                        errors = True
                        parts_out.append(entry)
                        continue
                    entry["aborted_transactions"] = [
                        {"producer_id": pid, "first_offset": first} for pid, first, _ in aborted
                    ]
            parts_out.append(entry)
        out.append({"topic": name or "", "topic_id": topic_id, "partitions": parts_out})
    return out, total, errors


async def handle_fetch(broker: Broker, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
    version = ctx.api_version
    if version >= 7 and req["session_id"] != 0:
        # kafkite does not create incremental fetch sessions (it answers session_id 0), so none can be found.
        return {"error_code": int(ErrorCode.FETCH_SESSION_ID_NOT_FOUND), "session_id": 0, "responses": []}
    await ensure_leaders(
        broker,
        ((_resolve(broker, t, version)[0], p["partition"]) for t in req["topics"] for p in t["partitions"]),
    )
    responses, total, errors = await _read_all(broker, req, version)
    if req["max_wait_ms"] <= 0 or broker.blackhole:
        return {"throttle_time_ms": 0, "error_code": 0, "session_id": 0, "responses": responses}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + req["max_wait_ms"] / 1000
    keys = [(t["topic"], p["partition_index"]) for t in responses for p in t["partitions"] if t["topic"]]
    while total < req["min_bytes"] and not errors and keys:
        timeout = deadline - loop.time()
        if timeout <= 0:
            break
        fut = broker.waiters.waiter(keys)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            break
        finally:
            fut.cancel()
        responses, total, errors = await _read_all(broker, req, version)
    return {"throttle_time_ms": 0, "error_code": 0, "session_id": 0, "responses": responses}
