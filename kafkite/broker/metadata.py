"""ApiVersions, Metadata and DescribeCluster."""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Any

from kafkite.broker.core import (
    Broker,
    CloseConnection,
    RequestContext,
    is_internal_topic,
    validate_topic_name,
)
from kafkite.broker.features import features_of
from kafkite.broker.mutations import MutationQuota, pause
from kafkite.log.engine import TopicMeta
from kafkite.protocol.errors import ErrorCode, KafkaProtocolError
from kafkite.protocol.messages import EncodedArray, registry

# AclOperation codes (Kafka): what an unrestricted principal may do, as authorized-operations bit sets.
_TOPIC_OPS = (
    3,
    4,
    5,
    6,
    7,
    8,
    10,
    11,
)  # READ WRITE CREATE DELETE ALTER DESCRIBE DESCRIBE_CONFIGS ALTER_CONFIGS
_CLUSTER_OPS = (
    4,
    7,
    8,
    9,
    10,
    11,
    12,
)  # CREATE ALTER DESCRIBE CLUSTER_ACTION DESCRIBE/ALTER_CONFIGS IDEMPOTENT
OPS_NOT_REQUESTED = -2147483648


def _bits(ops: tuple[int, ...]) -> int:
    return sum(1 << op for op in ops)


def supported_api_versions(broker: Broker) -> list[dict[str, int]]:
    reg = registry()
    return [
        {"api_key": key, "min_version": api.versions.lo, "max_version": api.versions.hi}
        for key, api in sorted(reg.apis.items())
        if key in broker.handlers
    ]


async def handle_api_versions(broker: Broker, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
    resp: dict[str, Any] = {"error_code": 0, "api_keys": supported_api_versions(broker)}
    resp["throttle_time_ms"] = 0
    if ctx.api_version >= 3:
        resp.update(features_of(broker).api_versions_fields(ctx.api_version))
    return resp


def advertised_for(broker: Broker, listener: str | None) -> tuple[str, int]:
    """The address clients of ``listener`` are told to use: its advertised.listeners entry, else the
    listener's own address, else the first advertised address."""
    for key in ("advertised.listeners", "listeners"):
        for name, host, port in broker.config[key]:
            if name == listener:
                return host, port
    return broker.advertised


def broker_nodes(broker: Broker, listener: str | None = None) -> list[tuple[int, str, int]]:
    if broker.cluster is not None:
        nodes: list[tuple[int, str, int]] = broker.cluster.nodes(listener)  # every live broker
        return nodes
    host, port = advertised_for(broker, listener)
    return [(broker.node_id, host, port)]


# The partition lists of large topics, kept (with their encodings) while the topic stays as it is: Metadata
# for a topic of 10,000 partitions then costs a lookup and a copy of bytes rather than 10,000 dicts encoded.
LARGE_TOPIC_PARTITIONS = 256
_PARTITIONS_KEPT = 200_000  # partitions' lists kept at most, over all topics (least recently used go first)
_kept: weakref.WeakKeyDictionary[Broker, OrderedDict[tuple[Any, ...], EncodedArray]] = (
    weakref.WeakKeyDictionary()
)


def _single_broker_partitions(broker: Broker, name: str, meta: TopicMeta) -> EncodedArray:
    kept = _kept.get(broker)
    if kept is None:
        kept = _kept[broker] = OrderedDict()
    key = (name, meta.topic_id, meta.partitions, broker.node_id)
    found = kept.get(key)
    if found is not None:
        kept.move_to_end(key)
        return found
    node = broker.node_id
    found = EncodedArray(
        {
            "error_code": 0,
            "partition_index": i,
            "leader_id": node,
            "leader_epoch": 0,
            "replica_nodes": [node],
            "isr_nodes": [node],
            "offline_replicas": [],
        }
        for i in range(meta.partitions)
    )
    kept[key] = found
    total = sum(len(v) for v in kept.values())
    while total > _PARTITIONS_KEPT and len(kept) > 1:
        _, dropped = kept.popitem(last=False)
        total -= len(dropped)
    return found


def _topic_entry(broker: Broker, name: str, include_ops: bool) -> dict[str, Any]:
    meta = broker.topic(name)
    if meta is None:
        return {"error_code": int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION), "name": name, "partitions": []}
    cluster = broker.cluster
    node = broker.node_id
    if cluster is None and meta.partitions >= LARGE_TOPIC_PARTITIONS:
        return {
            "error_code": 0,
            "name": name,
            "topic_id": meta.topic_id,
            "is_internal": is_internal_topic(name),
            "partitions": _single_broker_partitions(broker, name, meta),
            "topic_authorized_operations": _bits(_TOPIC_OPS) if include_ops else OPS_NOT_REQUESTED,
        }
    return {
        "error_code": 0,
        "name": name,
        "topic_id": meta.topic_id,
        "is_internal": is_internal_topic(name),
        "partitions": [
            {
                "error_code": 0,
                "partition_index": i,
                "leader_id": leader,
                "leader_epoch": epoch,
                "replica_nodes": [leader],
                "isr_nodes": [leader],
                "offline_replicas": [],
            }
            for i, leader, epoch in (
                (i, node, 0)
                if cluster is None
                else (i, cluster.leader(name, i), cluster.leader_epoch(name, i))
                for i in range(meta.partitions)
            )
        ],
        "topic_authorized_operations": _bits(_TOPIC_OPS) if include_ops else OPS_NOT_REQUESTED,
    }


async def handle_metadata(broker: Broker, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
    version = ctx.api_version
    requested = req["topics"]
    include_ops = bool(req.get("include_topic_authorized_operations"))
    topics: list[dict[str, Any]] = []
    quota: MutationQuota | None = None
    if requested is None or (version == 0 and not requested):
        names = sorted(broker.topics())
        topics = [_topic_entry(broker, n, include_ops) for n in names]
    else:
        allow_auto = req["allow_auto_topic_creation"] if version >= 4 else True
        for t in requested:
            name = t["name"]
            if name is None:
                if version < 12:
                    # Topic ids in Metadata requests came with v12; Kafka cannot parse this request either.
                    raise CloseConnection()
                meta = broker.topic_by_id(t["topic_id"])
                if meta is None:
                    topics.append(
                        {
                            "error_code": int(ErrorCode.UNKNOWN_TOPIC_ID),
                            "name": None,
                            "topic_id": t["topic_id"],
                        }
                    )
                    continue
                name = meta.name
            try:
                validate_topic_name(name)
            except KafkaProtocolError as e:
                topics.append({"error_code": int(e.code), "name": name, "partitions": []})
                continue
            if (
                allow_auto
                and broker.topic(name) is None
                and broker.config["auto.create.topics.enable"]
                and not is_internal_topic(name)
            ):
                # Auto-creation counts against the client's controller mutation quota (strictly) and
                # auto.create.topics.max.rate; a topic it may not create yet is "not available" (retried).
                if quota is None:
                    quota = MutationQuota(broker, ctx, strict=True, auto_create=True)
                if not quota.allowed():
                    topics.append(
                        {"error_code": int(ErrorCode.LEADER_NOT_AVAILABLE), "name": name, "partitions": []}
                    )
                    continue
                created = broker.auto_create(name)
                if created is not None:
                    quota.record(created.partitions)
                    await pause()
            topics.append(_topic_entry(broker, name, include_ops))
    throttle = 0 if quota is None else quota.throttle_ms
    ctx.extra["throttle_ms"] = throttle
    return {
        "throttle_time_ms": throttle,
        "brokers": [
            {"node_id": n, "host": h, "port": p, "rack": None}
            for n, h, p in broker_nodes(broker, ctx.listener)
        ],
        "cluster_id": broker.cluster_id,
        "controller_id": controller_id(broker),
        "topics": topics,
        "cluster_authorized_operations": (
            _bits(_CLUSTER_OPS) if req.get("include_cluster_authorized_operations") else OPS_NOT_REQUESTED
        ),
    }


def controller_id(broker: Broker) -> int:
    return broker.node_id if broker.cluster is None else int(broker.cluster.controller_id)


async def handle_describe_cluster(broker: Broker, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
    if req.get("endpoint_type", 1) != 1:
        return {
            "error_code": int(ErrorCode.UNSUPPORTED_ENDPOINT_TYPE),
            "error_message": "only broker endpoints are served",
            "endpoint_type": req["endpoint_type"],
        }
    return {
        "throttle_time_ms": 0,
        "error_code": 0,
        "cluster_id": broker.cluster_id,
        "controller_id": controller_id(broker),
        "brokers": [
            {"broker_id": n, "host": h, "port": p, "rack": None}
            for n, h, p in broker_nodes(broker, ctx.listener)
        ],
        "cluster_authorized_operations": (
            _bits(_CLUSTER_OPS) if req["include_cluster_authorized_operations"] else OPS_NOT_REQUESTED
        ),
    }
