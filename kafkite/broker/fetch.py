"""Fetch: whole batches as file ranges, never decoded; long polls woken by appends."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from kafkite.broker import fetch_sessions as sessions
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
    if version < 7:
        return await _fetch(broker, req, version, None)
    sid, epoch = req["session_id"], req["session_epoch"]
    cache = sessions.cache_of(broker)
    by_id = version >= 13
    if epoch in (sessions.INITIAL_EPOCH, sessions.FINAL_EPOCH):
        if sid:
            cache.remove(sid)  # a full fetch closes the session it names
        resp = await _fetch(broker, req, version, None)
        if epoch == sessions.INITIAL_EPOCH and cache.slots > 0:
            new = cache.create(by_id, sessions.cached_partitions(req, by_id))
            if new:
                sessions.remember(cache.sessions[new], resp["responses"], only_changed=False)
                resp["session_id"] = new
        return resp
    session = cache.get(sid)
    if session is None:
        return _session_error(ErrorCode.FETCH_SESSION_ID_NOT_FOUND)
    if session.epoch != epoch or session.by_id != by_id:
        return _session_error(ErrorCode.INVALID_FETCH_SESSION_EPOCH)
    sessions.apply_request(session, req)
    session.epoch = sessions.next_epoch(epoch)
    resp = await _fetch(broker, req, version, session)
    resp["responses"] = sessions.remember(session, resp["responses"], only_changed=True)
    resp["session_id"] = sid
    return resp


def _session_error(code: ErrorCode) -> dict[str, Any]:
    return {"throttle_time_ms": 0, "error_code": int(code), "session_id": 0, "responses": []}


def _session_names(broker: Broker, session: sessions.FetchSession) -> dict[sessions.TopicKey, str | None]:
    names: dict[sessions.TopicKey, str | None] = {}
    for key, _ in session.partitions:
        if key not in names:
            if session.by_id:
                assert isinstance(key, uuid.UUID)
                meta = broker.topic_by_id(key)
                names[key] = meta.name if meta else None
            else:
                assert isinstance(key, str)
                names[key] = key
    return names


def _session_changes(
    broker: Broker,
    session: sessions.FetchSession,
    names: dict[sessions.TopicKey, str | None],
    committed: bool,
) -> list[tuple[sessions.TopicKey, int]]:
    """The session's partitions that may have something new for the client: the others are not read."""
    keys: list[tuple[sessions.TopicKey, int]] = []
    for k, c in session.partitions.items():
        name = names[k[0]]
        part = broker.partition(name, k[1]) if name is not None else None
        if part is None or name is None:
            keys.append(k)
            continue
        try:
            hw = part.high_watermark
            lso = part.last_stable_offset
        except LogError:
            keys.append(k)
            continue
        if (
            c.fetch_offset != (lso if committed else hw)
            or hw != c.high_watermark
            or lso != c.last_stable_offset
            or part.log_start_offset != c.log_start_offset
            or leader_error(broker, name, k[1], part, c.current_leader_epoch) is not None
        ):
            keys.append(k)
    return keys


async def _fetch(
    broker: Broker, req: dict[str, Any], version: int, session: sessions.FetchSession | None
) -> dict[str, Any]:
    """Read the requested partitions (those of ``session`` that may have changed, with one), waiting up to
    max_wait_ms for min_bytes."""
    if session is None:
        names = None
        wanted = req
        await ensure_leaders(
            broker,
            (
                (_resolve(broker, t, version)[0], p["partition"])
                for t in req["topics"]
                for p in t["partitions"]
            ),
        )
    else:
        names = _session_names(broker, session)
        await ensure_leaders(broker, ((names[k], i) for k, i in session.partitions))
        committed = req["isolation_level"] == READ_COMMITTED
        wanted = sessions.as_request(req, session, _session_changes(broker, session, names, committed))
    responses, total, errors = await _read_all(broker, wanted, version)
    if req["max_wait_ms"] <= 0 or broker.blackhole:
        return {"throttle_time_ms": 0, "error_code": 0, "session_id": 0, "responses": responses}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + req["max_wait_ms"] / 1000
    if session is None:
        keys = [(t["topic"], p["partition_index"]) for t in responses for p in t["partitions"] if t["topic"]]
    else:
        assert names is not None
        keys = [(n, i) for k, i in session.partitions if (n := names[k]) is not None]
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
        if session is not None:
            assert names is not None
            wanted = sessions.as_request(req, session, _session_changes(broker, session, names, committed))
        responses, total, errors = await _read_all(broker, wanted, version)
    return {"throttle_time_ms": 0, "error_code": 0, "session_id": 0, "responses": responses}
