"""The console's JSON endpoints for topics, records and groups: reads of records and every change, each one
made as a Kafka request through the broker's handlers (``kafkite.console.kafka``) on the caller's behalf.

``GET /api/topics/{topic}/messages`` browses and searches records: from an offset, a time, the latest ones or
saved positions, in one partition or all, keeping those whose key, a header or the value contains the given
text, scanning at most ``max_scan`` records per request and saying where to go on. Changes: ``POST
/api/topics`` (CreateTopics), ``DELETE /api/topics/{topic}`` (DeleteTopics), ``POST .../partitions``
(CreatePartitions), ``GET``/``PATCH .../configs`` (DescribeConfigs, IncrementalAlterConfigs), ``POST
.../records/delete`` (DeleteRecords), ``POST .../messages`` (Produce), ``POST /api/groups/{group}/reset``
(ListOffsets then OffsetCommit, as Kafka's admin client resets offsets) and ``DELETE /api/groups/{group}``
(DeleteGroups). A Kafka error is answered with its name and the broker's message (403 for authorization
failures, 404 unknown, 409 conflicting state, else 400).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from kafkite.console.auth import CALLER
from kafkite.console.kafka import EARLIEST, LATEST, KafkaDoor, KafkaError, Scoped
from kafkite.doors import audit_change
from kafkite.doors.audit import OK
from kafkite.protocol.errors import ErrorCode
from kafkite.streaming.messages import partition_for_key
from kafkite.tools.consume import decode_batches

if TYPE_CHECKING:
    from kafkite.broker.core import Broker

MAX_LIMIT = 500
MAX_SHOWN_BYTES = 4096  # of a key, value or header in the message browser
FETCH_BYTES = 1024 * 1024
DEFAULT_SCAN = 10_000
MAX_SCAN = 100_000
MAX_TEST_MESSAGE = 1024 * 1024


def bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(
        text=json.dumps({"error": message}), content_type="application/json", reason="Bad Request"
    )


def kafka_error(e: KafkaError) -> web.Response:
    return web.json_response(e.json(), status=e.status)


async def read_object(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read() or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise bad("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object")
    return body


def _int(value: Any, what: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool):
        raise bad(f"{what} must be an integer")
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise bad(f"{what} must be an integer") from None
    if (lo is not None and n < lo) or (hi is not None and n > hi):
        raise bad(f"{what} must be between {lo} and {hi}" if hi is not None else f"{what} must be >= {lo}")
    return n


def _opt_int(q: Any, name: str) -> int | None:
    raw = q.get(name, "")
    if raw is None or str(raw).strip() == "":
        return None
    return _int(raw, name)


def decode_data(value: Any, encoding: str, what: str) -> bytes | None:
    """A key, value or header from the page: null, text (sent as UTF-8), base64 or hex."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad(f"{what} must be a string or null")
    if encoding == "text":
        return value.encode()
    try:
        if encoding == "base64":
            return base64.b64decode(value, validate=True)
        if encoding == "hex":
            return bytes.fromhex("".join(value.split()))
    except (binascii.Error, ValueError):
        raise bad(f"{what} is not valid {encoding}") from None
    raise bad(f"{what}_encoding must be text, base64 or hex")


def shown(data: bytes | None) -> dict[str, Any]:
    """A key, value or header for the page: text when it is UTF-8, else base64; cut at MAX_SHOWN_BYTES."""
    if data is None:
        return {"text": None, "size": -1}
    cut = data[:MAX_SHOWN_BYTES]
    truncated = len(data) > len(cut)
    try:
        return {"text": cut.decode("utf-8"), "size": len(data), "truncated": truncated}
    except UnicodeDecodeError as e:
        if truncated and e.start >= len(cut) - 3:  # the cut split a character: what comes before is text
            try:
                return {"text": cut[: e.start].decode("utf-8"), "size": len(data), "truncated": True}
            except UnicodeDecodeError:
                pass
        return {"base64": base64.b64encode(cut).decode(), "size": len(data), "truncated": truncated}


# ------------------------------------------------------------------------------------------ searching


@dataclass
class Filter:
    """What a record must contain to be shown: text in its key, a header (by name, and text in its value),
    text in its value. Text matches ignore case."""

    key: str | None = None
    header_name: str | None = None
    header_value: str | None = None
    value: str | None = None

    @property
    def active(self) -> bool:
        return any(x is not None for x in (self.key, self.header_name, self.value))

    def matches(
        self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes | None]]
    ) -> bool:
        if self.key is not None and (key is None or not _contains(key, self.key)):
            return False
        if self.value is not None and (value is None or not _contains(value, self.value)):
            return False
        if self.header_name is not None:
            hv = self.header_value
            if not any(
                n == self.header_name and (hv is None or (v is not None and _contains(v, hv)))
                for n, v in headers
            ):
                return False
        return True


def _contains(data: bytes, text: str) -> bool:
    return text.lower() in data.decode("utf-8", errors="replace").lower()


def parse_filter(q: Any) -> Filter:
    f = Filter()
    if q.get("key"):
        f.key = str(q["key"])
    if q.get("q"):
        f.value = str(q["q"])
    if q.get("header"):
        name, sep, value = str(q["header"]).partition("=")
        f.header_name = name.strip()
        f.header_value = value if sep else None
    return f


def _positions(raw: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        p, sep, o = item.partition(":")
        if not sep:
            raise bad("positions is partition:offset,...")
        out[_int(p, "positions partition", 0)] = _int(o, "positions offset", 0)
    return out


async def browse(
    door: KafkaDoor,
    internal: str,
    partitions: list[int],
    *,
    offset: int | None,
    timestamp: int | None,
    positions: dict[int, int] | None,
    limit: int,
    flt: Filter,
    max_scan: int,
) -> dict[str, Any]:
    """Records of ``partitions`` of a topic read with Fetch as the caller, from wherever asked."""
    topic = Scoped.of(internal)
    starts = await door.list_offsets(topic, partitions, EARLIEST)
    ends = await door.list_offsets(topic, partitions, LATEST)
    at_time = await door.list_offsets(topic, partitions, timestamp) if timestamp is not None else {}
    latest = positions is None and timestamp is None and offset is None and not flt.active
    pos: dict[int, int] = {}
    for p in partitions:
        start, end = starts[p], ends[p]
        if positions is not None:
            want = positions.get(p, end)
        elif timestamp is not None:
            want = at_time[p] if at_time[p] >= 0 else end
        elif offset is not None:
            want = end + offset if offset < 0 else offset
        elif latest:
            want = end - limit
        else:
            want = start
        pos[p] = min(max(want, start), end)
    first = dict(pos)
    out: list[dict[str, Any]] = []
    scanned = 0
    for p in partitions:
        while pos[p] < ends[p] and scanned < max_scan and (latest or len(out) < limit):
            got = await door.fetch(topic, p, pos[p], FETCH_BYTES)
            # Decoding and matching run in a worker thread: a long search never holds up the event loop.
            chunk = await asyncio.to_thread(
                _scan,
                got.data,
                p,
                pos[p],
                ends[p],
                flt,
                max_scan - scanned,
                None if latest else limit - len(out),
            )
            if chunk.next_offset <= pos[p]:
                break
            out += chunk.matches
            scanned += chunk.scanned
            pos[p] = chunk.next_offset
    if latest and len(partitions) > 1:
        out.sort(key=lambda m: (m["timestamp"], m["partition"], m["offset"]))
        out = out[-limit:]
    more = any(pos[p] < ends[p] for p in partitions)
    parts = [
        {
            "partition": p,
            "start_offset": starts[p],
            "end_offset": ends[p],
            "from_offset": first[p],
            "next_offset": pos[p],
        }
        for p in partitions
    ]
    result: dict[str, Any] = {
        "topic": internal,
        "partitions": parts,
        "messages": out,
        "scanned": scanned,
        "filtered": flt.active,
        "more": more,
        "positions": ",".join(f"{p}:{pos[p]}" for p in partitions),
    }
    if len(partitions) == 1:
        (p,) = partitions
        result.update(
            partition=p,
            start_offset=starts[p],
            end_offset=ends[p],
            from_offset=first[p],
            next_offset=out[-1]["offset"] + 1 if out and not flt.active else pos[p],
        )
    else:
        result["partition"] = "all"
    return result


@dataclass
class _Chunk:
    matches: list[dict[str, Any]]
    scanned: int
    next_offset: int  # where reading goes on


def _scan(
    data: bytes, partition: int, pos: int, end: int, flt: Filter, scan_budget: int, wanted: int | None
) -> _Chunk:
    """The records of fetched batches from ``pos`` (below ``end``) that ``flt`` keeps: at most ``scan_budget``
    looked at, at most ``wanted`` kept (None: all)."""

    msgs, nxt = decode_batches("", partition, data, pos, [], leader=-1)
    matches: list[dict[str, Any]] = []
    scanned = 0
    for m in msgs:
        if m.offset >= end or scanned >= scan_budget or (wanted is not None and len(matches) >= wanted):
            return _Chunk(matches, scanned, pos)
        scanned += 1
        pos = m.offset + 1
        if flt.matches(m.key, m.value, m.headers):
            matches.append(_message(partition, m))
    return _Chunk(matches, scanned, max(pos, min(nxt, end)))


def _message(partition: int, m: Any) -> dict[str, Any]:
    return {
        "partition": partition,
        "offset": m.offset,
        "timestamp": m.timestamp,
        "timestamp_type": "LogAppendTime" if m.log_append_time else "CreateTime",
        "key": shown(m.key),
        "value": shown(m.value),
        "headers": [{"name": k, **shown(v)} for k, v in m.headers],
    }


# ------------------------------------------------------------------------------------------ the routes


def add_routes(routes: web.RouteTableDef, broker: Broker) -> None:
    """The action endpoints (and the message browser) on the console's route table."""

    def door(request: web.Request) -> KafkaDoor:
        return KafkaDoor(broker, request[CALLER])

    def topic_of(request: web.Request) -> str:
        return request.match_info["topic"]

    async def partition_count(d: KafkaDoor, name: str) -> int:
        """The topic's partitions; for a topic the broker lacks, the answer Kafka gives the caller: refused
        if the caller may not know of it (TOPIC_AUTHORIZATION_FAILED), else UNKNOWN_TOPIC_OR_PARTITION."""
        meta = broker.topic(name)
        if meta is None:
            await d.list_offsets(Scoped.of(name), [0], LATEST)
            raise KafkaError(int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION), f"no topic {name}")
        return int(meta.partitions)

    @routes.get("/api/topics/{topic}/messages")
    async def messages(request: web.Request) -> web.Response:
        q = request.query
        name = request.match_info["topic"]
        raw_partition = q.get("partition", "0").strip()
        every = raw_partition in ("all", "*", "")
        one = None if every else _int(raw_partition, "partition", 0)
        offset = _opt_int(q, "offset")
        timestamp = _opt_int(q, "timestamp")
        limit = min(max(_opt_int(q, "limit") or 50, 1), MAX_LIMIT)
        max_scan = min(max(_opt_int(q, "max_scan") or DEFAULT_SCAN, 1), MAX_SCAN)
        positions = _positions(q["positions"]) if q.get("positions") else None
        d = door(request)
        try:
            count = await partition_count(d, name)
            return web.json_response(
                await browse(
                    d,
                    name,
                    list(range(count)) if one is None else [one],
                    offset=offset,
                    timestamp=timestamp,
                    positions=positions,
                    limit=limit,
                    flt=parse_filter(q),
                    max_scan=max_scan,
                )
            )
        except KafkaError as e:
            return kafka_error(e)

    @routes.post("/api/topics")
    async def create_topic(request: web.Request) -> web.Response:
        body = await read_object(request)
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise bad("name is required")
        partitions = (
            None if body.get("partitions") in (None, "") else _int(body["partitions"], "partitions", 1)
        )
        configs = body.get("configs") or {}
        if not isinstance(configs, dict) or not all(isinstance(v, str | int) for v in configs.values()):
            raise bad("configs must be an object of name: value")
        try:
            made = await door(request).create_topic(
                Scoped.of(name), partitions, {str(k): str(v) for k, v in configs.items()}
            )
        except KafkaError as e:
            return kafka_error(e)
        return web.json_response({**made, "name": name}, status=201)

    @routes.delete("/api/topics/{topic}")
    async def delete_topic(request: web.Request) -> web.Response:
        name = topic_of(request)
        try:
            await door(request).delete_topic(Scoped.of(name))
        except KafkaError as e:
            return kafka_error(e)
        return web.json_response({"deleted": name})

    @routes.post("/api/topics/{topic}/partitions")
    async def add_partitions(request: web.Request) -> web.Response:
        name = topic_of(request)
        body = await read_object(request)
        count = _int(body.get("count"), "count", 1)
        try:
            await door(request).create_partitions(Scoped.of(name), count)
        except KafkaError as e:
            return kafka_error(e)
        return web.json_response({"topic": name, "partitions": count})

    @routes.get("/api/topics/{topic}/configs")
    async def configs(request: web.Request) -> web.Response:
        name = request.match_info["topic"]
        try:
            return web.json_response(
                {"topic": name, "configs": await door(request).describe_configs(Scoped.of(name))}
            )
        except KafkaError as e:
            return kafka_error(e)

    @routes.patch("/api/topics/{topic}/configs")
    async def alter_configs(request: web.Request) -> web.Response:
        name = topic_of(request)
        body = await read_object(request)
        set_ = body.get("set") or {}
        delete = body.get("delete") or []
        if not isinstance(set_, dict) or not isinstance(delete, list):
            raise bad("set must be an object of name: value and delete a list of names")
        if not set_ and not delete:
            raise bad("nothing to change")
        try:
            await door(request).alter_configs(
                Scoped.of(name), {str(k): str(v) for k, v in set_.items()}, [str(k) for k in delete]
            )
        except KafkaError as e:
            return kafka_error(e)
        return web.json_response({"topic": name, "set": set_, "deleted": delete})

    @routes.post("/api/topics/{topic}/records/delete")
    async def delete_records(request: web.Request) -> web.Response:
        name = topic_of(request)
        body = await read_object(request)
        raw = body.get("offsets")
        if isinstance(raw, dict):
            before = {_int(p, "partition", 0): _int(o, "offset", -1) for p, o in raw.items()}
        else:
            before = {_int(body.get("partition"), "partition", 0): _int(body.get("offset"), "offset", -1)}
        try:
            low = await door(request).delete_records(Scoped.of(name), before)
        except KafkaError as e:
            return kafka_error(e)
        return web.json_response({"topic": name, "low_watermarks": {str(p): o for p, o in low.items()}})

    @routes.post("/api/topics/{topic}/messages")
    async def produce(request: web.Request) -> web.Response:

        name = topic_of(request)
        body = await read_object(request)
        key = decode_data(body.get("key"), str(body.get("key_encoding", "text")), "key")
        value = decode_data(body.get("value"), str(body.get("value_encoding", "text")), "value")
        headers: list[tuple[str, bytes | None]] = []
        for h in body.get("headers") or []:
            if not isinstance(h, dict) or not isinstance(h.get("name"), str) or not h["name"]:
                raise bad("each header needs a name")
            headers.append((h["name"], decode_data(h.get("value"), str(h.get("encoding", "text")), "header")))
        size = len(key or b"") + len(value or b"") + sum(len(n) + len(v or b"") for n, v in headers)
        if size > MAX_TEST_MESSAGE:
            raise bad(f"a test message may carry at most {MAX_TEST_MESSAGE} bytes")
        raw_partition = body.get("partition")
        d = door(request)
        try:
            if raw_partition is None or raw_partition == "":
                partition = partition_for_key(key, await partition_count(d, name))
            else:
                partition = _int(raw_partition, "partition", 0)
            written = await d.produce(Scoped.of(name), partition, key, value, headers)
        except KafkaError as e:
            return kafka_error(e)
        caller = request[CALLER]
        audit_change(
            broker,
            caller,
            "ProduceTestMessage",
            "topic",
            Scoped.of(name).name,
            result=OK,
            after={"partition": written["partition"], "offset": written["offset"], "bytes": size},
        )
        return web.json_response({"topic": name, **written}, status=201)

    @routes.post("/api/groups/{group}/reset")
    async def reset_offsets(request: web.Request) -> web.Response:
        group = request.match_info["group"]
        body = await read_object(request)
        topic = body.get("topic")
        if not isinstance(topic, str) or not topic:
            raise bad("topic is required")
        raw_parts = body.get("partitions")
        if raw_parts not in (None, [], "") and not isinstance(raw_parts, list):
            raise bad("partitions must be a list")
        to = body.get("to")
        d = door(request)
        t = Scoped.of(topic)
        try:
            count = await partition_count(d, topic)
            if raw_parts in (None, [], ""):
                partitions = list(range(count))
            else:
                partitions = sorted({_int(p, "partition", 0, count - 1) for p in raw_parts})
            starts = await d.list_offsets(t, partitions, EARLIEST)
            ends = await d.list_offsets(t, partitions, LATEST)
            if to == "earliest":
                target = dict(starts)
            elif to == "latest":
                target = dict(ends)
            elif to == "offset":
                o = _int(body.get("offset"), "offset", 0)
                target = {p: min(max(o, starts[p]), ends[p]) for p in partitions}
            elif to == "timestamp":
                ts = _int(body.get("timestamp"), "timestamp", 0)
                found = await d.list_offsets(t, partitions, ts)
                target = {p: found[p] if found[p] >= 0 else ends[p] for p in partitions}
            else:
                raise bad("to must be earliest, latest, offset or timestamp")
            before = await d.committed(Scoped.of(group), t, partitions)
            plan = [
                {
                    "partition": p,
                    "before": before[p] if before.get(p, -1) >= 0 else None,
                    "after": target[p],
                    "start": starts[p],
                    "end": ends[p],
                }
                for p in partitions
            ]
            if not body.get("execute"):
                return web.json_response({"group": group, "topic": topic, "executed": False, "offsets": plan})
            await d.commit_offsets(Scoped.of(group), t, target)
        except KafkaError as e:
            return kafka_error(e)
        return web.json_response({"group": group, "topic": topic, "executed": True, "offsets": plan})

    @routes.delete("/api/groups/{group}")
    async def delete_group(request: web.Request) -> web.Response:
        group = request.match_info["group"]
        try:
            await door(request).delete_group(Scoped.of(group))
        except KafkaError as e:
            return kafka_error(e)
        return web.json_response({"deleted": group})
