"""Topic administration: CreateTopics, DeleteTopics, CreatePartitions (configs: kafkite.broker.configs)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from kafkite.broker.configs import check_topic_configs, describe_topic
from kafkite.broker.core import Broker, RequestContext, is_internal_topic, validate_topic_name
from kafkite.broker.mutations import MutationQuota, pause
from kafkite.protocol.errors import ErrorCode, KafkaProtocolError


def _err(e: KafkaProtocolError) -> tuple[int, str | None]:
    return int(e.code), e.message


# ------------------------------------------------------------------------------------------- topics


def _check_partition_limit(broker: Broker, n: int) -> None:
    limit: int = broker.config["topic.max.partitions"]
    if n > limit:
        raise KafkaProtocolError(
            ErrorCode.INVALID_PARTITIONS,
            f"Number of partitions {n} exceeds topic.max.partitions={limit}.",
        )


async def handle_create_topics(broker: Broker, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
    counts = Counter(t["name"] for t in req["topics"])
    quota = MutationQuota.for_request(broker, ctx, "CreateTopics")
    out = []
    for t in req["topics"]:
        name = t["name"]
        entry: dict[str, Any] = {"name": name, "error_code": 0, "error_message": None}
        try:
            if counts[name] > 1:
                raise KafkaProtocolError(ErrorCode.INVALID_REQUEST, f"topic {name!r} appears more than once")
            validate_topic_name(name)
            if broker.topic(name) is not None:
                raise KafkaProtocolError(ErrorCode.TOPIC_ALREADY_EXISTS, f"Topic '{name}' already exists.")
            n, rf = t["num_partitions"], t["replication_factor"]
            if t["assignments"]:
                if n != -1 or rf != -1:
                    raise KafkaProtocolError(
                        ErrorCode.INVALID_REQUEST,
                        "both partition assignments and num_partitions/replication_factor were given",
                    )
                for a in t["assignments"]:
                    if not a["broker_ids"] or any(b != broker.node_id for b in a["broker_ids"]):
                        raise KafkaProtocolError(
                            ErrorCode.INVALID_REPLICA_ASSIGNMENT, f"unknown broker in {a['broker_ids']}"
                        )
                n, rf = len(t["assignments"]), len(t["assignments"][0]["broker_ids"])
            if n == -1:
                n = broker.config["num.partitions"]
            if n <= 0:
                raise KafkaProtocolError(
                    ErrorCode.INVALID_PARTITIONS, "Number of partitions must be larger than 0."
                )
            _check_partition_limit(broker, n)
            if rf == -1:
                rf = broker.config["default.replication.factor"]
            if rf <= 0:
                raise KafkaProtocolError(
                    ErrorCode.INVALID_REPLICATION_FACTOR, "Replication factor must be larger than 0."
                )
            if rf > 1:
                raise KafkaProtocolError(
                    ErrorCode.INVALID_REPLICATION_FACTOR,
                    f"Unable to replicate the partition {rf} time(s): The target replication factor of {rf} "
                    "cannot be reached because only 1 broker(s) are registered.",
                )
            configs: dict[str, str] = {}
            for c in t["configs"]:
                if c["value"] is None:
                    raise KafkaProtocolError(
                        ErrorCode.INVALID_CONFIG, f"Null value not supported for {c['name']}"
                    )
                configs[c["name"]] = c["value"]
            configs = check_topic_configs(broker, configs, ctx.api_key, ctx.api_version, name)
            quota.check()
            quota.record(n)
            entry.update(num_partitions=n, replication_factor=rf)
            if not req["validate_only"]:
                meta = broker.create_topic(name, n, configs)
                entry["topic_id"] = meta.topic_id
                await pause()
            entry["configs"] = [
                {
                    "name": c["name"],
                    "value": c["value"],
                    "read_only": False,
                    "config_source": c["config_source"],
                    "is_sensitive": False,
                }
                for c in describe_topic(broker, configs, None)
            ]
        except KafkaProtocolError as e:
            entry["error_code"], entry["error_message"] = _err(e)
        out.append(entry)
    ctx.extra["throttle_ms"] = quota.throttle_ms
    return {"throttle_time_ms": quota.throttle_ms, "topics": out}


async def handle_delete_topics(broker: Broker, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
    if ctx.api_version >= 6:
        wanted = [(t["name"], t["topic_id"]) for t in req["topics"]]
    else:
        wanted = [(n, None) for n in req["topic_names"]]
    quota = MutationQuota.for_request(broker, ctx, "DeleteTopics")
    out = []
    for name, topic_id in wanted:
        entry: dict[str, Any] = {"name": name, "error_code": 0}
        if name is None and topic_id is not None:
            meta = broker.topic_by_id(topic_id)
            if meta is None:
                entry.update(error_code=int(ErrorCode.UNKNOWN_TOPIC_ID), topic_id=topic_id)
                out.append(entry)
                continue
            name = meta.name
            entry["name"] = name
        meta = broker.topic(name) if name else None
        if meta is None:
            entry["error_code"] = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
        elif not broker.config["delete.topic.enable"]:
            entry["error_code"] = int(ErrorCode.TOPIC_DELETION_DISABLED)
        elif is_internal_topic(meta.name):
            # The group and transaction coordinators and the queues keep their state there.
            entry.update(
                error_code=int(ErrorCode.INVALID_REQUEST), error_message="internal topics cannot be deleted"
            )
        elif not quota.allowed():
            entry.update(
                error_code=int(ErrorCode.THROTTLING_QUOTA_EXCEEDED),
                error_message="The throttling quota has been exceeded.",
            )
        else:
            quota.record(meta.partitions)
            entry["topic_id"] = meta.topic_id
            broker.storage.delete_topic(meta.name)
            for i in range(meta.partitions):
                broker.waiters.notify(meta.name, i)
            await pause()
        out.append(entry)
    ctx.extra["throttle_ms"] = quota.throttle_ms
    return {"throttle_time_ms": quota.throttle_ms, "responses": out}


async def handle_create_partitions(
    broker: Broker, ctx: RequestContext, req: dict[str, Any]
) -> dict[str, Any]:
    counts = Counter(t["name"] for t in req["topics"])
    quota = MutationQuota.for_request(broker, ctx, "CreatePartitions")
    out = []
    for t in req["topics"]:
        name = t["name"]
        entry: dict[str, Any] = {"name": name, "error_code": 0, "error_message": None}
        try:
            if counts[name] > 1:
                raise KafkaProtocolError(ErrorCode.INVALID_REQUEST, f"topic {name!r} appears more than once")
            meta = broker.topic(name)
            if meta is None:
                raise KafkaProtocolError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {name!r}")
            if t["count"] <= meta.partitions:
                raise KafkaProtocolError(
                    ErrorCode.INVALID_PARTITIONS,
                    f"Topic currently has {meta.partitions} partitions, which is higher than or equal to "
                    f"the requested {t['count']}.",
                )
            _check_partition_limit(broker, t["count"])
            if t["assignments"] is not None:
                if len(t["assignments"]) != t["count"] - meta.partitions:
                    raise KafkaProtocolError(
                        ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                        f"expected {t['count'] - meta.partitions} assignments, got {len(t['assignments'])}",
                    )
                for a in t["assignments"]:
                    if any(b != broker.node_id for b in a["broker_ids"]):
                        raise KafkaProtocolError(
                            ErrorCode.INVALID_REPLICA_ASSIGNMENT, f"unknown broker in {a['broker_ids']}"
                        )
            quota.check()
            quota.record(t["count"] - meta.partitions)
            if not req["validate_only"]:
                broker.storage.create_partitions(name, t["count"])
                await pause()
        except KafkaProtocolError as e:
            entry["error_code"], entry["error_message"] = _err(e)
        out.append(entry)
    ctx.extra["throttle_ms"] = quota.throttle_ms
    return {"throttle_time_ms": quota.throttle_ms, "results": out}
