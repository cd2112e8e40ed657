"""Partition leader epochs as clients see them: the checks of a request's current leader epoch (Fetch,
ListOffsets, OffsetForLeaderEpoch), and OffsetForLeaderEpoch itself.

A single broker's partitions stay at leader epoch 0. Brokers sharing a PostgreSQL database raise a
partition's epoch each time another broker takes its leadership (``kafkite.cluster``), and Metadata reports
it. A client that sends an older epoch than the partition's is answered FENCED_LEADER_EPOCH, a newer one
UNKNOWN_LEADER_EPOCH (the broker has not seen it yet), -1 skips the check, as Kafka does. After a leader
change, consumers ask OffsetForLeaderEpoch where the epoch of their position ended: its end offset is the
start of the next epoch (the log end for the current epoch), below the position only if the log was
truncated, which the PostgreSQL engine never does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kafkite.broker.core import Broker, RequestContext
from kafkite.log.base import LogError, Partition
from kafkite.protocol.errors import ErrorCode


def epoch_error(part: Partition, current_leader_epoch: int) -> ErrorCode | None:
    """FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH when the client's epoch is older / newer than the
    partition's; None when it matches or was not given (-1)."""
    if current_leader_epoch < 0:
        return None
    epoch = part.leader_epoch
    if current_leader_epoch < epoch:
        return ErrorCode.FENCED_LEADER_EPOCH
    if current_leader_epoch > epoch:
        return ErrorCode.UNKNOWN_LEADER_EPOCH
    return None


def leader_error(
    broker: Broker, topic: str, index: int, part: Partition, current_leader_epoch: int = -1
) -> ErrorCode | None:
    """Kafka's order: the epoch check first, then whether this broker leads the partition."""
    code = epoch_error(part, current_leader_epoch)
    if code is not None:
        return code
    if broker.cluster is not None and not broker.cluster.leads(topic, index):
        return ErrorCode.NOT_LEADER_OR_FOLLOWER
    return None


def current_leader(broker: Broker, topic: str, index: int, part: Partition) -> dict[str, int]:
    """The partition's leader and epoch as this broker knows them (Fetch's and Produce's current_leader)."""
    leader = broker.node_id if broker.cluster is None else int(broker.cluster.leader(topic, index))
    return {"leader_id": leader, "leader_epoch": part.leader_epoch}


async def ensure_leaders(broker: Broker, keys: Iterable[tuple[str | None, int]]) -> None:
    """Before serving partitions, claim those that placement newly gives this broker (brokers sharing a
    database); nothing for a single broker."""
    if broker.cluster is not None:
        await broker.cluster.ensure_leaders([(t, i) for t, i in keys if t is not None])


async def handle_offset_for_leader_epoch(
    broker: Broker, ctx: RequestContext, req: dict[str, Any]
) -> dict[str, Any]:
    await ensure_leaders(
        broker, ((t["topic"], p["partition"]) for t in req["topics"] for p in t["partitions"])
    )
    topics_out = []
    for topic in req["topics"]:
        name = topic["topic"]
        parts_out = []
        for p in topic["partitions"]:
            idx = p["partition"]
            entry: dict[str, Any] = {"partition": idx, "error_code": 0, "leader_epoch": -1, "end_offset": -1}
            part = broker.partition(name, idx)
            if part is None:
                entry["error_code"] = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
                parts_out.append(entry)
                continue
            code = leader_error(broker, name, idx, part, p.get("current_leader_epoch", -1))
            if code is not None:
                entry["error_code"] = int(code)
                parts_out.append(entry)
                continue
            lookup = getattr(part, "epoch_end_offset_async", None)
            try:
                if lookup is not None:
                    epoch, end = await lookup(p["leader_epoch"])
                else:
                    epoch, end = part.epoch_end_offset(p["leader_epoch"])
            except LogError:
                entry["error_code"] = int(ErrorCode.KAFKA_STORAGE_ERROR)
            else:
                entry.update(leader_epoch=epoch, end_offset=end)
            parts_out.append(entry)
        topics_out.append({"topic": name, "partitions": parts_out})
    return {"throttle_time_ms": 0, "topics": topics_out}
