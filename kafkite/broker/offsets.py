"""ListOffsets and DeleteRecords."""

from __future__ import annotations

from typing import Any

from kafkite.broker.core import Broker, RequestContext
from kafkite.broker.epochs import ensure_leaders, leader_error
from kafkite.log.base import LogError, OffsetOutOfRange, Partition
from kafkite.protocol.errors import ErrorCode

LATEST = -1
EARLIEST = -2
MAX_TIMESTAMP = -3
EARLIEST_LOCAL = -4
LATEST_TIERED = -5
READ_COMMITTED = 1


async def handle_list_offsets(broker: Broker, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
    await ensure_leaders(
        broker, ((t["name"], p["partition_index"]) for t in req["topics"] for p in t["partitions"])
    )
    topics_out = []
    for topic in req["topics"]:
        name = topic["name"]
        parts_out = []
        for p in topic["partitions"]:
            idx = p["partition_index"]
            part = broker.partition(name, idx)
            entry: dict[str, Any] = {"partition_index": idx, "error_code": 0, "timestamp": -1, "offset": -1}
            refused = (
                None
                if part is None
                else leader_error(broker, name, idx, part, p.get("current_leader_epoch", -1))
            )
            if part is None:
                entry["error_code"] = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
            elif refused is not None:
                entry["error_code"] = int(refused)
            else:
                try:
                    if part.behind:
                        await part.catch_up()  # the last stable offset, without holding the loop
                    _list_offset(part, p["timestamp"], req.get("isolation_level", 0), entry)
                except LogError:  # a database engine that cannot reach its database
                    entry.update(error_code=int(ErrorCode.KAFKA_STORAGE_ERROR), timestamp=-1, offset=-1)
            parts_out.append(entry)
        topics_out.append({"name": name, "partitions": parts_out})
    return {"throttle_time_ms": 0, "topics": topics_out}


def _list_offset(part: Partition, ts: int, isolation_level: int, entry: dict[str, Any]) -> None:
    """Fill ``entry`` with the offset ``ts`` asks for (LATEST, EARLIEST, MAX_TIMESTAMP or a timestamp)."""
    entry["leader_epoch"] = part.leader_epoch
    if ts == LATEST:
        committed = isolation_level == READ_COMMITTED
        entry["offset"] = part.last_stable_offset if committed else part.high_watermark
    elif ts in (EARLIEST, EARLIEST_LOCAL):
        entry["offset"] = part.log_start_offset
    elif ts == MAX_TIMESTAMP:
        mts, moff = part.max_timestamp()
        entry.update(timestamp=mts, offset=moff)
    elif ts == LATEST_TIERED:
        entry["offset"] = -1
    elif ts < 0:
        entry["error_code"] = int(ErrorCode.INVALID_REQUEST)
    else:
        found = part.offset_for_timestamp(ts)
        if found is not None:
            entry.update(offset=found[0], timestamp=found[1])


async def handle_delete_records(broker: Broker, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
    topics_out = []
    for topic in req["topics"]:
        name = topic["name"]
        parts_out = []
        for p in topic["partitions"]:
            idx = p["partition_index"]
            part = broker.partition(name, idx)
            entry: dict[str, Any] = {"partition_index": idx, "low_watermark": -1, "error_code": 0}
            if part is None:
                entry["error_code"] = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
            else:
                try:
                    entry["low_watermark"] = part.delete_records_before(p["offset"])
                except OffsetOutOfRange:
                    entry["error_code"] = int(ErrorCode.OFFSET_OUT_OF_RANGE)
            parts_out.append(entry)
        topics_out.append({"name": name, "partitions": parts_out})
    return {"throttle_time_ms": 0, "topics": topics_out}
