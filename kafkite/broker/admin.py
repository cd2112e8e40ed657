"""Topic administration and configuration: CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs,
AlterConfigs, IncrementalAlterConfigs."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from kafkite.broker.core import Broker, RequestContext, is_internal_topic, validate_topic_name
from kafkite.config import DEFINITIONS, TOPIC_FROM_BROKER
from kafkite.log.config import TOPIC_CONFIGS, validate_topic_configs
from kafkite.protocol.errors import ErrorCode, KafkaProtocolError

RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4
RESOURCE_BROKER_LOGGER = 8

# DescribeConfigs config sources
SOURCE_TOPIC = 1
SOURCE_DYNAMIC_BROKER = 2
SOURCE_DYNAMIC_DEFAULT_BROKER = 3
SOURCE_STATIC_BROKER = 4
SOURCE_DEFAULT = 5

OP_SET, OP_DELETE, OP_APPEND, OP_SUBTRACT = 0, 1, 2, 3


def _err(e: KafkaProtocolError) -> tuple[int, str | None]:
    return int(e.code), e.message


# ------------------------------------------------------------------------------------------- topics


def _check_topic_configs(configs: dict[str, str]) -> None:
    try:
        validate_topic_configs(configs)
    except ValueError as e:
        raise KafkaProtocolError(ErrorCode.INVALID_CONFIG, str(e)) from None


def _check_partition_limit(broker: Broker, n: int) -> None:
    limit: int = broker.config["topic.max.partitions"]
    if n > limit:
        raise KafkaProtocolError(
            ErrorCode.INVALID_PARTITIONS,
            f"Number of partitions {n} exceeds topic.max.partitions={limit}.",
        )


async def handle_create_topics(broker: Broker, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
    counts = Counter(t["name"] for t in req["topics"])
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
            _check_topic_configs(configs)
            entry.update(num_partitions=n, replication_factor=rf)
            if not req["validate_only"]:
                meta = broker.create_topic(name, n, configs)
                entry["topic_id"] = meta.topic_id
            entry["configs"] = [
                {
                    "name": c["name"],
                    "value": c["value"],
                    "read_only": False,
                    "config_source": c["config_source"],
                    "is_sensitive": False,
                }
                for c in _describe_topic(broker, configs, None)
            ]
        except KafkaProtocolError as e:
            entry["error_code"], entry["error_message"] = _err(e)
        out.append(entry)
    return {"throttle_time_ms": 0, "topics": out}


async def handle_delete_topics(broker: Broker, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
    if ctx.api_version >= 6:
        wanted = [(t["name"], t["topic_id"]) for t in req["topics"]]
    else:
        wanted = [(n, None) for n in req["topic_names"]]
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
        else:
            entry["topic_id"] = meta.topic_id
            broker.storage.delete_topic(meta.name)
            for i in range(meta.partitions):
                broker.waiters.notify(meta.name, i)
        out.append(entry)
    return {"throttle_time_ms": 0, "responses": out}


async def handle_create_partitions(
    broker: Broker, ctx: RequestContext, req: dict[str, Any]
) -> dict[str, Any]:
    counts = Counter(t["name"] for t in req["topics"])
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
            if not req["validate_only"]:
                broker.storage.create_partitions(name, t["count"])
        except KafkaProtocolError as e:
            entry["error_code"], entry["error_message"] = _err(e)
        out.append(entry)
    return {"throttle_time_ms": 0, "results": out}


# ------------------------------------------------------------------------------------------- configs


def _broker_type_code(name: str) -> int:
    parse = DEFINITIONS[name].parse
    return {"_bool": 1, "_int": 5}.get(getattr(parse, "__name__", ""), 2)


def _describe_topic(
    broker: Broker, overrides: dict[str, str], keys: list[str] | None
) -> list[dict[str, Any]]:
    """Every topic config with its effective value, its source and (as synonyms) where else it is set."""
    out = []
    for name, key in sorted(TOPIC_CONFIGS.items()):
        if keys is not None and name not in keys:
            continue
        synonyms = []
        if name in overrides:
            synonyms.append({"name": name, "value": overrides[name], "source": SOURCE_TOPIC})
        broker_key = TOPIC_FROM_BROKER.get(name)
        if broker_key is not None:
            if broker_key in broker.dynamic_configs:
                source = SOURCE_DYNAMIC_BROKER
            elif broker_key in broker.config.explicit:
                source = SOURCE_STATIC_BROKER
            else:
                source = SOURCE_DEFAULT
            if source != SOURCE_DEFAULT:
                synonyms.append(
                    {"name": broker_key, "value": broker.config.raw[broker_key], "source": source}
                )
            synonyms.append(
                {"name": broker_key, "value": DEFINITIONS[broker_key].default, "source": SOURCE_DEFAULT}
            )
        else:
            synonyms.append({"name": name, "value": key.default, "source": SOURCE_DEFAULT})
        top = synonyms[0]
        out.append(
            {
                "name": name,
                "value": top["value"],
                "read_only": False,
                "config_source": top["source"],
                "is_sensitive": False,
                "synonyms": synonyms,
                "config_type": key.type_code,
                "documentation": key.doc,
            }
        )
    return out


def _describe_broker(broker: Broker, keys: list[str] | None) -> list[dict[str, Any]]:
    out = []
    for name, d in sorted(DEFINITIONS.items()):
        if keys is not None and name not in keys:
            continue
        if name in broker.dynamic_configs:
            source = SOURCE_DYNAMIC_BROKER
        elif name in broker.config.explicit:
            source = SOURCE_STATIC_BROKER
        else:
            source = SOURCE_DEFAULT
        synonyms = [{"name": name, "value": broker.config.raw[name], "source": source}]
        if source != SOURCE_DEFAULT:
            synonyms.append({"name": name, "value": d.default, "source": SOURCE_DEFAULT})
        out.append(
            {
                "name": name,
                "value": broker.config.raw[name],
                "read_only": not d.dynamic,
                "config_source": source,
                "is_sensitive": False,
                "synonyms": synonyms,
                "config_type": _broker_type_code(name),
                "documentation": d.doc,
            }
        )
    return out


def _broker_resource_ok(broker: Broker, name: str) -> bool:
    return name in ("", str(broker.node_id))


async def handle_describe_configs(broker: Broker, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
    results = []
    for r in req["resources"]:
        rtype, rname, keys = r["resource_type"], r["resource_name"], r["configuration_keys"]
        entry: dict[str, Any] = {
            "error_code": 0,
            "error_message": None,
            "resource_type": rtype,
            "resource_name": rname,
            "configs": [],
        }
        if rtype == RESOURCE_TOPIC:
            meta = broker.topic(rname)
            if meta is None:
                entry.update(
                    error_code=int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
                    error_message=f"Topic {rname} not found",
                )
            else:
                entry["configs"] = _describe_topic(broker, meta.configs, keys)
        elif rtype == RESOURCE_BROKER:
            if not _broker_resource_ok(broker, rname):
                entry.update(
                    error_code=int(ErrorCode.INVALID_REQUEST), error_message=f"unknown broker {rname!r}"
                )
            else:
                entry["configs"] = _describe_broker(broker, keys)
        elif rtype == RESOURCE_BROKER_LOGGER:
            entry["configs"] = [
                {
                    "name": n,
                    "value": logging.getLevelName(logging.getLogger(n).getEffectiveLevel()),
                    "read_only": False,
                    "config_source": 6,
                    "is_sensitive": False,
                    "config_type": 2,
                }
                for n in sorted(k for k in logging.root.manager.loggerDict if k.startswith("kafkite"))
                if keys is None or n in keys
            ]
        else:
            entry.update(
                error_code=int(ErrorCode.INVALID_REQUEST), error_message=f"unsupported resource type {rtype}"
            )
        if not req.get("include_synonyms"):
            for c in entry["configs"]:
                c["synonyms"] = []
        if not req.get("include_documentation"):
            for c in entry["configs"]:
                c["documentation"] = None
        results.append(entry)
    return {"throttle_time_ms": 0, "results": results}


def _apply_topic_ops(current: dict[str, str], ops: list[tuple[str, int, str | None]]) -> dict[str, str]:
    new = dict(current)
    for name, op, value in ops:
        key = TOPIC_CONFIGS.get(name)
        if key is None:
            raise KafkaProtocolError(ErrorCode.INVALID_CONFIG, f"Unknown topic config name: {name}")
        if op == OP_SET:
            if value is None:
                raise KafkaProtocolError(ErrorCode.INVALID_CONFIG, f"Null value not supported for {name}")
            new[name] = value
        elif op == OP_DELETE:
            new.pop(name, None)
        elif op in (OP_APPEND, OP_SUBTRACT):
            if key.type != "LIST":
                raise KafkaProtocolError(
                    ErrorCode.INVALID_CONFIG, f"Config value append is not allowed for config key: {name}"
                )
            items = [x for x in new.get(name, key.default).split(",") if x]
            given = [x.strip() for x in (value or "").split(",") if x.strip()]
            if op == OP_APPEND:
                items += [x for x in given if x not in items]
            else:
                items = [x for x in items if x not in given]
            new[name] = ",".join(items)
        else:
            raise KafkaProtocolError(ErrorCode.INVALID_REQUEST, f"unknown config operation {op}")
    _check_topic_configs(new)
    return new


def _apply_broker_ops(broker: Broker, ops: list[tuple[str, int, str | None]], validate_only: bool) -> None:
    changes: dict[str, str | None] = {}
    for name, op, value in ops:
        d = DEFINITIONS.get(name)
        if d is None:
            raise KafkaProtocolError(ErrorCode.INVALID_CONFIG, f"Unknown broker config name: {name}")
        if not d.dynamic:
            raise KafkaProtocolError(
                ErrorCode.INVALID_CONFIG, f"Cannot update config {name} dynamically: it needs a restart"
            )
        if op == OP_SET:
            if value is None:
                raise KafkaProtocolError(ErrorCode.INVALID_CONFIG, f"Null value not supported for {name}")
            try:
                d.parse(value)
            except ValueError as e:
                raise KafkaProtocolError(ErrorCode.INVALID_CONFIG, f"{name}: {e}") from None
            changes[name] = value
        elif op == OP_DELETE:
            changes[name] = None
        else:
            raise KafkaProtocolError(ErrorCode.INVALID_CONFIG, f"APPEND/SUBTRACT are not allowed for {name}")
    if validate_only:
        return
    for name, value in changes.items():
        broker.set_dynamic_config(name, value)


async def _alter(broker: Broker, req: dict[str, Any], incremental: bool) -> dict[str, Any]:
    out = []
    for r in req["resources"]:
        rtype, rname = r["resource_type"], r["resource_name"]
        entry: dict[str, Any] = {
            "error_code": 0,
            "error_message": None,
            "resource_type": rtype,
            "resource_name": rname,
        }
        if incremental:
            ops = [(c["name"], c["config_operation"], c["value"]) for c in r["configs"]]
        else:
            ops = [(c["name"], OP_SET, c["value"]) for c in r["configs"]]
        try:
            if rtype == RESOURCE_TOPIC:
                meta = broker.topic(rname)
                if meta is None:
                    raise KafkaProtocolError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"Topic {rname} not found")
                new = _apply_topic_ops(meta.configs if incremental else {}, ops)
                if not req["validate_only"]:
                    broker.storage.set_topic_configs(rname, new)
            elif rtype == RESOURCE_BROKER:
                if not _broker_resource_ok(broker, rname):
                    raise KafkaProtocolError(ErrorCode.INVALID_REQUEST, f"unknown broker {rname!r}")
                if not incremental:
                    # AlterConfigs replaces the whole dynamic set.
                    given = {n for n, _, _ in ops}
                    ops += [(n, OP_DELETE, None) for n in broker.dynamic_configs if n not in given]
                _apply_broker_ops(broker, ops, req["validate_only"])
            elif rtype == RESOURCE_BROKER_LOGGER and incremental:
                for name, op, value in ops:
                    level = (value or "INFO").upper() if op == OP_SET else "INFO"
                    if level not in ("DEBUG", "INFO", "WARN", "WARNING", "ERROR", "TRACE"):
                        raise KafkaProtocolError(ErrorCode.INVALID_CONFIG, f"invalid log level {value!r}")
                    if not req["validate_only"]:
                        logging.getLogger(name).setLevel(
                            {"WARN": "WARNING", "TRACE": "DEBUG"}.get(level, level)
                        )
            else:
                raise KafkaProtocolError(ErrorCode.INVALID_REQUEST, f"unsupported resource type {rtype}")
        except KafkaProtocolError as e:
            entry["error_code"], entry["error_message"] = _err(e)
        out.append(entry)
    return {"throttle_time_ms": 0, "responses": out}


async def handle_alter_configs(broker: Broker, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
    return await _alter(broker, req, incremental=False)


async def handle_incremental_alter_configs(
    broker: Broker, ctx: RequestContext, req: dict[str, Any]
) -> dict[str, Any]:
    return await _alter(broker, req, incremental=True)
