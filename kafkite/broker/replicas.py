"""Replica administration as Kafka answers it for single-replica partitions: DescribeTopicPartitions
(KIP-966), DescribeLogDirs, ElectLeaders, ListPartitionReassignments and AlterPartitionReassignments.

Every partition has one replica, its leader: the broker itself, or on brokers sharing a PostgreSQL database
the live broker the cluster places it on. So the preferred replica always leads (ElectLeaders answers
ELECTION_NOT_NEEDED, as Kafka does for a partition led by its preferred replica), no reassignment is ever in
progress, and a reassignment to the current replica set completes at once. kafkite keeps one replica per
partition and places leaders itself, so a reassignment that would add replicas or move the replica elsewhere
is refused (Kafka would start copying); one that names an unregistered broker is refused as Kafka refuses it.
"""

from __future__ import annotations

import shutil
from typing import Any
from urllib.parse import urlsplit

from kafkite.broker.core import Broker, RequestContext, is_internal_topic, validate_topic_name
from kafkite.broker.metadata import _TOPIC_OPS, OPS_NOT_REQUESTED, _bits
from kafkite.protocol.errors import ErrorCode, KafkaProtocolError
from kafkite.protocol.primitives import ZERO_UUID

PREFERRED, UNCLEAN = 0, 1


def leader_of(broker: Broker, topic: str, partition: int) -> int:
    return broker.node_id if broker.cluster is None else int(broker.cluster.leader(topic, partition))


def registered_brokers(broker: Broker) -> set[int]:
    """Ids of the brokers a replica may name: this one, or every live broker of the cluster."""
    if broker.cluster is None:
        return {broker.node_id}
    return {int(n) for n in broker.cluster.live_ids}


def _leader_epoch(broker: Broker) -> int:
    return 0 if broker.cluster is None else int(broker.cluster.epoch)


# ------------------------------------------------------------------------------------------ topics


async def handle_describe_topic_partitions(
    broker: Broker, ctx: RequestContext, req: dict[str, Any]
) -> dict[str, Any]:
    """Topics by name (all of them for an empty list), partitions paged by ``response_partition_limit`` and
    a cursor, as Kafka's DescribeTopicPartitions handler and metadata cache page them."""
    cursor = req.get("cursor")
    cursor_topic = cursor["topic_name"] if cursor else ""
    fetch_all = not req["topics"]
    if fetch_all:
        names = {n for n in broker.topics() if n >= cursor_topic}
    else:
        names = {t["name"] for t in req["topics"] if t["name"] >= cursor_topic}
        if cursor is not None and cursor["topic_name"] not in names:
            return _describe_topics_error(req, ErrorCode.INVALID_REQUEST)
    if cursor is not None and cursor["partition_index"] < 0:
        return _describe_topics_error(req, ErrorCode.INVALID_REQUEST)
    limit = max(
        min(int(broker.config["max.request.partition.size.limit"]), req["response_partition_limit"]), 1
    )
    remaining = limit
    topics: list[dict[str, Any]] = []
    next_cursor: dict[str, Any] | None = None
    epoch = _leader_epoch(broker)
    for name in sorted(names):
        if remaining <= 0:
            # Every partition of the previous topics fitted: the next page starts at this topic.
            next_cursor = {"topic_name": name, "partition_index": 0}
            break
        meta = broker.topic(name)
        if meta is None:
            if not fetch_all:
                topics.append(_topic_error(name))
            continue
        start = cursor["partition_index"] if cursor is not None and name == cursor_topic else 0
        upper = min(meta.partitions, start + remaining)
        partitions = []
        for i in range(start, upper):
            leader = leader_of(broker, name, i)
            partitions.append(
                {
                    "error_code": 0,
                    "partition_index": i,
                    "leader_id": leader,
                    "leader_epoch": epoch,
                    "replica_nodes": [leader],
                    "isr_nodes": [leader],
                    "eligible_leader_replicas": [],
                    "last_known_elr": [],
                    "offline_replicas": [],
                }
            )
        topics.append(
            {
                "error_code": 0,
                "name": name,
                "topic_id": meta.topic_id,
                "is_internal": is_internal_topic(name),
                "partitions": partitions,
                "topic_authorized_operations": _bits(_TOPIC_OPS),
            }
        )
        if upper < meta.partitions:
            next_cursor = {"topic_name": name, "partition_index": upper}
            break
        remaining -= len(partitions)
    return {"throttle_time_ms": 0, "topics": topics, "next_cursor": next_cursor}


def _topic_error(name: str) -> dict[str, Any]:
    try:
        validate_topic_name(name)
        code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    except KafkaProtocolError as e:
        code = e.code
    return {
        "error_code": int(code),
        "name": name,
        "topic_id": ZERO_UUID,
        "is_internal": is_internal_topic(name),
        "partitions": [],
        "topic_authorized_operations": OPS_NOT_REQUESTED,
    }


def _describe_topics_error(req: dict[str, Any], code: ErrorCode) -> dict[str, Any]:
    return {
        "throttle_time_ms": 0,
        "topics": [
            {
                "error_code": int(code),
                "name": t["name"],
                "topic_id": ZERO_UUID,
                "is_internal": False,
                "partitions": [],
            }
            for t in req["topics"]
        ],
        "next_cursor": None,
    }


# ------------------------------------------------------------------------------------------ log dirs


def log_dir_name(broker: Broker) -> str:
    """The one log directory a DescribeLogDirs answer names: the data directory, or where the engine keeps
    the logs."""
    engine: str = broker.config["storage.engine"]
    if engine == "file":
        return str(broker.config.data_dir.resolve())
    if engine == "memory":
        return "memory"
    parts = urlsplit(engine)  # a PostgreSQL DSN, told without its credentials
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


async def handle_describe_log_dirs(
    broker: Broker, ctx: RequestContext, req: dict[str, Any]
) -> dict[str, Any]:
    """The partitions this broker hosts (leads), with their sizes on disk, in its one log directory."""
    wanted: dict[str, set[int]] | None = None
    if req["topics"] is not None:
        wanted = {}
        for t in req["topics"]:
            wanted.setdefault(t["topic"], set()).update(t["partitions"])
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for name, meta in sorted(broker.topics().items()):
        if wanted is not None and name not in wanted:
            continue
        for i in range(meta.partitions):
            if wanted is not None and i not in wanted[name]:
                continue
            if leader_of(broker, name, i) != broker.node_id:
                continue
            part = broker.partition(name, i)
            if part is None:
                continue
            by_topic.setdefault(name, []).append(
                {
                    "partition_index": i,
                    "partition_size": int(part.size_bytes),
                    "offset_lag": 0,
                    "is_future_key": False,
                }
            )
    total, usable = -1, -1
    if broker.config["storage.engine"] == "file":
        try:
            usage = shutil.disk_usage(broker.config.data_dir)
            total, usable = usage.total, usage.free
        except OSError:
            pass
    return {
        "throttle_time_ms": 0,
        "error_code": 0,
        "results": [
            {
                "error_code": 0,
                "log_dir": log_dir_name(broker),
                "topics": [{"name": n, "partitions": ps} for n, ps in by_topic.items()],
                "total_bytes": total,
                "usable_bytes": usable,
            }
        ],
    }


# ------------------------------------------------------------------------------------------ leaders


def _elect(broker: Broker, topic: str, partition: int) -> tuple[ErrorCode, str | None]:
    meta = broker.topic(topic)
    if meta is None:
        return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"No such topic as {topic}"
    if not 0 <= partition < meta.partitions:
        return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"No such partition as {topic}-{partition}"
    # The one replica is the preferred replica and it leads: there is nothing to elect.
    return ErrorCode.ELECTION_NOT_NEEDED, "Leader election not needed for topic partition."


async def handle_elect_leaders(broker: Broker, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
    election_type = req.get("election_type", PREFERRED) if ctx.api_version >= 1 else PREFERRED
    if election_type not in (PREFERRED, UNCLEAN):
        why = f"Unknown election type {election_type}"
        return {
            "throttle_time_ms": 0,
            "error_code": int(ErrorCode.INVALID_REQUEST),
            "replica_election_results": [
                {
                    "topic": t["topic"],
                    "partition_result": [
                        {
                            "partition_id": p,
                            "error_code": int(ErrorCode.INVALID_REQUEST),
                            "error_message": why,
                        }
                        for p in t["partitions"]
                    ],
                }
                for t in req["topic_partitions"] or []
            ],
        }
    results = []
    if req["topic_partitions"] is None:
        # Every partition: those that already have the leader asked for are left out, as Kafka does.
        for name, meta in sorted(broker.topics().items()):
            partition_results = []
            for i in range(meta.partitions):
                code, message = _elect(broker, name, i)
                if code != ErrorCode.ELECTION_NOT_NEEDED:
                    partition_results.append(
                        {"partition_id": i, "error_code": int(code), "error_message": message}
                    )
            results.append({"topic": name, "partition_result": partition_results})
    else:
        for t in req["topic_partitions"]:
            partition_results = []
            for p in t["partitions"]:
                code, message = _elect(broker, t["topic"], p)
                partition_results.append(
                    {"partition_id": p, "error_code": int(code), "error_message": message}
                )
            results.append({"topic": t["topic"], "partition_result": partition_results})
    return {"throttle_time_ms": 0, "error_code": 0, "replica_election_results": results}


# ------------------------------------------------------------------------------------------ reassignments


async def handle_list_partition_reassignments(
    broker: Broker, ctx: RequestContext, req: dict[str, Any]
) -> dict[str, Any]:
    """No reassignment is ever in progress: every answer lists none (unknown topics are left out, as Kafka
    leaves them out)."""
    return {"throttle_time_ms": 0, "error_code": 0, "error_message": None, "topics": []}


def _reassign(broker: Broker, topic: str, partition: int, replicas: list[int] | None, allow_rf: bool) -> None:
    meta = broker.topic(topic)
    if meta is None:
        raise _Refused(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"Unable to find a topic named {topic}.")
    if not 0 <= partition < meta.partitions:
        raise _Refused(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"Unable to find partition {topic}:{partition}.")
    if replicas is None:
        raise _Refused(ErrorCode.NO_REASSIGNMENT_IN_PROGRESS, "No partition reassignment is in progress.")
    if not replicas:
        raise _Refused(
            ErrorCode.INVALID_REPLICA_ASSIGNMENT,
            "The manual partition assignment includes an empty replica list.",
        )
    known = registered_brokers(broker)
    seen: set[int] = set()
    for b in sorted(replicas):
        if b not in known:
            raise _Refused(
                ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                f"The manual partition assignment includes broker {b}, but no such broker is registered.",
            )
        if b in seen:
            raise _Refused(
                ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                f"The manual partition assignment includes the broker {b} more than once.",
            )
        seen.add(b)
    current = [leader_of(broker, topic, partition)]
    if not allow_rf and len(replicas) != len(current):
        raise _Refused(
            ErrorCode.INVALID_REPLICATION_FACTOR,
            f"The replication factor is changed from {len(current)} to {len(replicas)}",
        )
    if len(replicas) != 1:
        raise _Refused(
            ErrorCode.INVALID_REPLICATION_FACTOR,
            f"kafkite keeps one replica per partition; {len(replicas)} replicas were asked for",
        )
    if replicas != current:
        raise _Refused(
            ErrorCode.INVALID_REPLICA_ASSIGNMENT,
            f"partition {topic}:{partition} is led by broker {current[0]}, where the cluster places it;"
            " kafkite does not move partitions between brokers",
        )
    # The target is the current replica set: the reassignment is complete at once.


class _Refused(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def handle_alter_partition_reassignments(
    broker: Broker, ctx: RequestContext, req: dict[str, Any]
) -> dict[str, Any]:
    allow_rf = bool(req.get("allow_replication_factor_change", True)) if ctx.api_version >= 1 else True
    responses = []
    for t in req["topics"]:
        partitions = []
        for p in t["partitions"]:
            code: ErrorCode = ErrorCode.NO_ERROR
            message: str | None = None
            try:
                _reassign(broker, t["name"], p["partition_index"], p["replicas"], allow_rf)
            except _Refused as e:
                code, message = e.code, e.message
            partitions.append(
                {"partition_index": p["partition_index"], "error_code": int(code), "error_message": message}
            )
        responses.append({"name": t["name"], "partitions": partitions})
    return {
        "throttle_time_ms": 0,
        "allow_replication_factor_change": allow_rf,
        "error_code": 0,
        "error_message": None,
        "responses": responses,
    }
