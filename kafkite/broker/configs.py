"""DescribeConfigs, AlterConfigs and IncrementalAlterConfigs over Kafka's whole configuration catalogue.

Broker resources answer every key of Kafka 4.2 (``kafkite.config_catalogue``) and kafkite's own keys: the
resource named by the node id with every value in force and where it comes from, the resource named ""
with the cluster-wide dynamic defaults only, as Kafka answers them. A key kafkite does not act on is
accepted with Kafka's validation, stored and described like any other. Alterations follow Kafka's rules:
only keys Kafka changes at run time (INVALID_REQUEST "Cannot update these configs dynamically" otherwise),
SSL key stores only under a listener prefix, per-broker keys only on the broker's own resource; names that
are not Kafka's (nor kafkite's) are refused with INVALID_CONFIG, where Kafka would store them for plugins.

Group resources (type 32) hold a consumer group's own ``consumer.session.timeout.ms`` and
``consumer.heartbeat.interval.ms``: the group coordinator validates them against the broker's bounds and keeps
them in the group log.

Topic configs that Kafka 3.x accepted and 4.0 removed (``message.format.version``, ...) are refused as
Kafka 4 refuses them when the request comes in the newest version of its API; an older request version
comes from a client written for a Kafka that accepted them, and they are accepted and ignored, as that
Kafka did with them.
"""

from __future__ import annotations

import logging
from typing import Any

from kafkite.broker.core import Broker, RequestContext
from kafkite.config import DEFINITIONS, TOPIC_FROM_BROKER, ConfigError, base_key
from kafkite.config_catalogue import (
    BROKER_KEYS,
    BROKER_SYNONYMS,
    CLUSTER_LEVEL_LISTENER_KEYS,
    PER_BROKER,
    PER_LISTENER_ONLY,
    split_listener_key,
)
from kafkite.log.config import (
    CONFIG_TYPE_CODES,
    REMOVED_TOPIC_CONFIGS,
    TOPIC_CONFIGS,
    parse_removed_config,
    validate_topic_configs,
)
from kafkite.protocol.errors import ErrorCode, KafkaProtocolError
from kafkite.protocol.messages import registry

log = logging.getLogger("kafkite.configs")

RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4
RESOURCE_BROKER_LOGGER = 8
RESOURCE_GROUP = 32

# DescribeConfigs config sources
SOURCE_TOPIC = 1
SOURCE_DYNAMIC_BROKER = 2
SOURCE_DYNAMIC_DEFAULT_BROKER = 3
SOURCE_STATIC_BROKER = 4
SOURCE_DEFAULT = 5
SOURCE_BROKER_LOGGER = 6

OP_SET, OP_DELETE, OP_APPEND, OP_SUBTRACT = 0, 1, 2, 3


def _err(e: KafkaProtocolError) -> tuple[int, str | None]:
    return int(e.code), e.message


def predates_kafka4(api_key: int, version: int) -> bool:
    """A request below the newest version of its API comes from a client written for an older Kafka."""
    api = registry().api(api_key)
    return api is not None and version < api.versions.hi


# ------------------------------------------------------------------------------------------ topics


def check_topic_configs(
    broker: Broker, configs: dict[str, str], api_key: int, version: int, topic: str = ""
) -> dict[str, str]:
    """Validate topic overrides as Kafka does; the overrides to keep (removed Kafka 3.x configs dropped
    when the request version says the client predates Kafka 4.0). Raises INVALID_CONFIG."""
    kept = dict(configs)
    for name in [n for n in kept if n in REMOVED_TOPIC_CONFIGS]:
        if not predates_kafka4(api_key, version):
            raise KafkaProtocolError(ErrorCode.INVALID_CONFIG, f"Unknown topic config name: {name}")
        try:
            parse_removed_config(name, kept[name])
        except ValueError as e:
            raise KafkaProtocolError(ErrorCode.INVALID_CONFIG, str(e)) from None
        log.info("topic %s: %s=%s ignored (removed in Kafka 4.0)", topic or "?", name, kept.pop(name))
    for name in kept:
        if name not in TOPIC_CONFIGS:
            raise KafkaProtocolError(ErrorCode.INVALID_CONFIG, f"Unknown topic config name: {name}")
    try:
        validate_topic_configs(kept, broker.config.topic_defaults())
    except ValueError as e:
        raise KafkaProtocolError(ErrorCode.INVALID_CONFIG, str(e)) from None
    if kept.get("remote.storage.enable", "false").strip().lower() == "true" and not broker.config.get(
        "remote.log.storage.system.enable"
    ):
        raise KafkaProtocolError(
            ErrorCode.INVALID_CONFIG,
            "Tiered Storage functionality is disabled in the broker. Topic cannot be configured with remote"
            " log storage.",
        )
    return kept


def _broker_source(broker: Broker, name: str) -> list[tuple[str, str | None, int]]:
    """Where broker key ``name`` is set, most significant first: (name, value, source)."""
    out: list[tuple[str, str | None, int]] = []
    if name in broker.dynamic_configs:
        out.append((name, broker.dynamic_configs[name], SOURCE_DYNAMIC_BROKER))
    if name in broker.dynamic_default_configs:
        out.append((name, broker.dynamic_default_configs[name], SOURCE_DYNAMIC_DEFAULT_BROKER))
    if name in broker.config.explicit:
        out.append((name, broker.config.static_raw.get(name), SOURCE_STATIC_BROKER))
    return out


def _default_value(name: str) -> str | None:
    d = DEFINITIONS.get(name)
    if d is None:
        return None
    kafka = BROKER_KEYS.get(name)
    if kafka is not None and kafka.default is None and d.default == "":
        return None
    return d.default


def describe_topic(broker: Broker, overrides: dict[str, str], keys: list[str] | None) -> list[dict[str, Any]]:
    """Every topic config with its value in force, its source and (as synonyms) where else it is set."""
    out = []
    defaults = broker.config.topic_defaults()
    for name, key in sorted(TOPIC_CONFIGS.items()):
        if keys is not None and name not in keys:
            continue
        synonyms: list[dict[str, Any]] = []
        if name in overrides:
            synonyms.append({"name": name, "value": overrides[name], "source": SOURCE_TOPIC})
        broker_key = TOPIC_FROM_BROKER.get(name)
        if broker_key is not None:
            for n, v, src in _broker_source(broker, broker_key):
                synonyms.append({"name": n, "value": v, "source": src})
            default = _default_value(broker_key)
            if default is not None:
                synonyms.append({"name": broker_key, "value": default, "source": SOURCE_DEFAULT})
        if name in overrides:
            value: str | None = overrides[name]
        else:
            value = defaults.get(name, key.default)
        out.append(
            {
                "name": name,
                "value": value,
                "read_only": False,
                "config_source": synonyms[0]["source"] if synonyms else SOURCE_DEFAULT,
                "is_sensitive": False,
                "synonyms": synonyms,
                "config_type": key.type_code,
                "documentation": key.doc,
            }
        )
    return out


# ------------------------------------------------------------------------------------------ brokers


def type_code(name: str) -> int:
    kafka = BROKER_KEYS.get(name)
    if kafka is not None:
        return CONFIG_TYPE_CODES[kafka.type]
    parse = DEFINITIONS[name].parse
    return {"_bool": 1, "_int": 5, "_str_list": 7}.get(getattr(parse, "__name__", ""), 2)


def alterable(name: str) -> bool:
    """Whether AlterConfigs may change broker key ``name`` (a listener-prefixed one through its base key)."""
    base = base_key(name)
    if base is None:
        return False
    d = DEFINITIONS[base]
    kafka = BROKER_KEYS.get(base)
    if d.dynamic:
        return True  # kafkite applies it at run time
    # Kafka changes it at run time and kafkite does not act on it: stored, as Kafka would store it.
    return kafka is not None and kafka.dynamic and not d.acts


def _synonym_names(name: str) -> tuple[str, ...]:
    parts = split_listener_key(name)
    if parts is not None:
        return (name, parts[2])
    return BROKER_SYNONYMS.get(name, (name,))


# kafkite's own keys that hold secrets: described without their values, as Kafka describes PASSWORD keys.
SENSITIVE_KEYS = frozenset({"sasl.plain.users", "stomp.users"})


def _shown(name: str, value: str | None) -> str | None:
    """A value as DescribeConfigs may show it: a PostgreSQL DSN without its password."""
    if value and name == "storage.engine" and "@" in value and "://" in value:
        scheme, _, rest = value.partition("://")
        credentials, _, where = rest.rpartition("@")
        return f"{scheme}://{credentials.split(':', 1)[0]}@{where}"
    return value


def _broker_entry(broker: Broker, name: str, per_broker: bool) -> dict[str, Any] | None:
    base = base_key(name) or name
    kafka = BROKER_KEYS.get(base)
    sensitive = (kafka is not None and kafka.sensitive) or base in SENSITIVE_KEYS
    names = _synonym_names(name)
    synonyms: list[dict[str, Any]] = []
    for n in names:
        for sn, sv, src in _broker_source(broker, n):
            synonyms.append({"name": sn, "value": sv, "source": src})
    for n in names:
        default = None if n.startswith("listener.name.") else _default_value(n)
        if default is not None:
            synonyms.append({"name": n, "value": default, "source": SOURCE_DEFAULT})
    # Most significant source first; entries before the key's own name go (Kafka drops them too).
    order = {
        SOURCE_DYNAMIC_BROKER: 0,
        SOURCE_DYNAMIC_DEFAULT_BROKER: 1,
        SOURCE_STATIC_BROKER: 2,
        SOURCE_DEFAULT: 3,
    }
    synonyms.sort(key=lambda s: order[s["source"]])
    while synonyms and synonyms[0]["name"] != name:
        synonyms.pop(0)
    if not per_broker:
        synonyms = [s for s in synonyms if s["source"] == SOURCE_DYNAMIC_DEFAULT_BROKER]
        if not synonyms:
            return None
        value: str | None = synonyms[0]["value"]
    else:
        value = broker.config.raw.get(name)
        if value == "" and _default_value(base) is None and name not in broker.config.explicit:
            value = None
    for s in synonyms:
        s["value"] = None if sensitive else _shown(base, s["value"])
    d = DEFINITIONS.get(base)
    return {
        "name": name,
        "value": None if sensitive else _shown(base, value),
        "read_only": not alterable(name),
        "config_source": synonyms[0]["source"] if synonyms else SOURCE_DEFAULT,
        "is_sensitive": sensitive,
        "synonyms": synonyms,
        "config_type": type_code(base),
        "documentation": d.doc if d is not None else None,
    }


def describe_broker(broker: Broker, keys: list[str] | None, per_broker: bool = True) -> list[dict[str, Any]]:
    names = set(DEFINITIONS) | {k for k in broker.config.raw if k.startswith("listener.name.")}
    if not per_broker:
        names = set(broker.dynamic_default_configs)
    out = []
    for name in sorted(names):
        if keys is not None and name not in keys:
            continue
        entry = _broker_entry(broker, name, per_broker)
        if entry is not None:
            out.append(entry)
    return out


def _broker_resource(broker: Broker, name: str) -> bool:
    """True for the broker's own resource, False for the cluster-wide one (""); raises for other brokers."""
    if name == "":
        return False
    try:
        node = int(name)
    except ValueError:
        raise KafkaProtocolError(
            ErrorCode.INVALID_REQUEST, f"Broker id must be an integer, but it is: {name}"
        ) from None
    if node != broker.node_id:
        raise KafkaProtocolError(
            ErrorCode.INVALID_REQUEST, f"Unexpected broker id, expected {broker.node_id}, but received {name}"
        )
    return True


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
        try:
            if rtype == RESOURCE_TOPIC:
                meta = broker.topic(rname)
                if meta is None:
                    raise KafkaProtocolError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"Topic {rname} not found")
                entry["configs"] = describe_topic(broker, meta.configs, keys)
            elif rtype == RESOURCE_BROKER:
                entry["configs"] = describe_broker(broker, keys, _broker_resource(broker, rname))
            elif rtype == RESOURCE_GROUP and broker.groups is not None:
                if not rname:
                    raise KafkaProtocolError(ErrorCode.INVALID_REQUEST, "Group name can't be empty.")
                entry["configs"] = broker.groups.describe_group_configs(rname, keys)
            elif rtype == RESOURCE_BROKER_LOGGER:
                entry["configs"] = [
                    {
                        "name": n,
                        "value": logging.getLevelName(logging.getLogger(n).getEffectiveLevel()),
                        "read_only": False,
                        "config_source": SOURCE_BROKER_LOGGER,
                        "is_sensitive": False,
                        "config_type": 2,
                    }
                    for n in sorted(k for k in logging.root.manager.loggerDict if k.startswith("kafkite"))
                    if keys is None or n in keys
                ]
            else:
                raise KafkaProtocolError(ErrorCode.INVALID_REQUEST, f"Unsupported resource type: {rtype}")
        except KafkaProtocolError as e:
            entry["error_code"], entry["error_message"] = _err(e)
        if not req.get("include_synonyms"):
            for c in entry["configs"]:
                c["synonyms"] = []
        if not req.get("include_documentation"):
            for c in entry["configs"]:
                c["documentation"] = None
        results.append(entry)
    return {"throttle_time_ms": 0, "results": results}


# ------------------------------------------------------------------------------------------ alter


def _list_type(name: str) -> bool:
    base = base_key(name) or name
    kafka = BROKER_KEYS.get(base)
    if kafka is not None:
        return kafka.type == "LIST"
    topic = TOPIC_CONFIGS.get(name)
    return topic is not None and topic.type == "LIST"


def _apply_ops(
    current: dict[str, str], ops: list[tuple[str, int, str | None]], defaults: dict[str, str]
) -> dict[str, str]:
    """Apply IncrementalAlterConfigs operations to ``current`` (APPEND/SUBTRACT on list keys only)."""
    new = dict(current)
    for name, op, value in ops:
        if op == OP_SET:
            if value is None:
                raise KafkaProtocolError(ErrorCode.INVALID_CONFIG, f"Null value not supported for {name}")
            new[name] = value
        elif op == OP_DELETE:
            new.pop(name, None)
        elif op in (OP_APPEND, OP_SUBTRACT):
            if not _list_type(name):
                verb = "append" if op == OP_APPEND else "subtract"
                raise KafkaProtocolError(
                    ErrorCode.INVALID_CONFIG, f"Config value {verb} is not allowed for config key: {name}"
                )
            base = new.get(name, defaults.get(name, ""))
            items = [x.strip() for x in base.split(",") if x.strip()]
            given = [x.strip() for x in (value or "").split(",") if x.strip()]
            if op == OP_APPEND:
                items += [x for x in given if x not in items]
            else:
                items = [x for x in items if x not in given]
            new[name] = ",".join(items)
        else:
            raise KafkaProtocolError(ErrorCode.INVALID_REQUEST, f"Unknown operations type {op}")
    return new


def _check_broker_changes(broker: Broker, props: dict[str, str], per_broker: bool) -> None:
    """Kafka's checks of a broker resource's dynamic configs (the whole resulting set), in Kafka's order,
    then kafkite's own: keys it applies only at start-up."""
    unknown = sorted(n for n in props if base_key(n) is None)
    if unknown:
        raise KafkaProtocolError(
            ErrorCode.INVALID_CONFIG, f"Unknown broker config name: {', '.join(unknown)}"
        )
    static = sorted(n for n in props if not _kafka_dynamic(n) and not alterable(n))
    if static:
        raise KafkaProtocolError(
            ErrorCode.INVALID_REQUEST, f"Cannot update these configs dynamically: {', '.join(static)}"
        )
    unprefixed = sorted(n for n in props if n in PER_LISTENER_ONLY)
    if unprefixed:
        raise KafkaProtocolError(
            ErrorCode.INVALID_REQUEST,
            "These security configs can be dynamically updated only per-listener using the listener prefix: "
            + ", ".join(unprefixed),
        )
    for name, value in props.items():
        try:
            broker.config.check(name, value)
        except ConfigError as e:
            raise KafkaProtocolError(ErrorCode.INVALID_REQUEST, str(e)) from None
    if not per_broker:
        only_per_broker = sorted(n for n in props if _per_broker_only(n))
        if only_per_broker:
            raise KafkaProtocolError(
                ErrorCode.INVALID_REQUEST,
                "Cannot update these configs at default cluster level, broker id must be specified: "
                + ", ".join(only_per_broker),
            )
    at_start_up = sorted(n for n in props if not alterable(n))
    if at_start_up:
        raise KafkaProtocolError(
            ErrorCode.INVALID_REQUEST,
            f"Cannot update these configs dynamically: {', '.join(at_start_up)} (kafkite applies them at"
            " start-up: set them with --override and restart)",
        )


def _kafka_dynamic(name: str) -> bool:
    kafka = BROKER_KEYS.get(base_key(name) or name)
    return kafka is not None and kafka.dynamic


def _per_broker_only(name: str) -> bool:
    parts = split_listener_key(name)
    if parts is not None:
        return parts[2] not in CLUSTER_LEVEL_LISTENER_KEYS
    kafka = BROKER_KEYS.get(name)
    return kafka is not None and kafka.mode == PER_BROKER


async def _alter(
    broker: Broker, ctx: RequestContext, req: dict[str, Any], incremental: bool
) -> dict[str, Any]:
    out = []
    seen: dict[tuple[int, str], int] = {}
    for r in req["resources"]:
        key = (r["resource_type"], r["resource_name"])
        seen[key] = seen.get(key, 0) + 1
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
            if seen[(rtype, rname)] > 1:
                raise KafkaProtocolError(ErrorCode.INVALID_REQUEST, "Each resource must appear at most once.")
            names = [n for n, _, _ in ops]
            if len(set(names)) != len(names):
                raise KafkaProtocolError(ErrorCode.INVALID_REQUEST, "Error due to duplicate config keys")
            nulls = [n for n, op, v in ops if op != OP_DELETE and v is None]
            if nulls:
                raise KafkaProtocolError(
                    ErrorCode.INVALID_REQUEST, "Null value not supported for : " + ", ".join(nulls)
                )
            if rtype == RESOURCE_TOPIC:
                _alter_topic(broker, ctx, req, rname, ops, incremental)
            elif rtype == RESOURCE_BROKER:
                _alter_broker(broker, req, rname, ops, incremental)
            elif rtype == RESOURCE_GROUP and incremental and broker.groups is not None:
                if not rname:
                    raise KafkaProtocolError(ErrorCode.INVALID_REQUEST, "Group name can't be empty.")
                broker.groups.alter_group_configs(rname, ops, validate_only=req["validate_only"])
            elif rtype == RESOURCE_BROKER_LOGGER and incremental:
                _alter_loggers(req, ops)
            else:
                raise KafkaProtocolError(ErrorCode.INVALID_REQUEST, f"Unknown resource type {rtype}")
        except KafkaProtocolError as e:
            entry["error_code"], entry["error_message"] = _err(e)
        out.append(entry)
    return {"throttle_time_ms": 0, "responses": out}


def _alter_topic(
    broker: Broker,
    ctx: RequestContext,
    req: dict[str, Any],
    topic: str,
    ops: list[tuple[str, int, str | None]],
    incremental: bool,
) -> None:
    meta = broker.topic(topic)
    if meta is None:
        raise KafkaProtocolError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"Topic {topic} not found")
    defaults = {n: k.default for n, k in TOPIC_CONFIGS.items()}
    defaults.update(broker.config.topic_defaults())
    new = _apply_ops(meta.configs if incremental else {}, ops, defaults)
    new = check_topic_configs(broker, new, ctx.api_key, ctx.api_version, topic)
    if not req["validate_only"]:
        broker.storage.set_topic_configs(topic, new)


def _alter_broker(
    broker: Broker, req: dict[str, Any], rname: str, ops: list[tuple[str, int, str | None]], incremental: bool
) -> None:
    per_broker = _broker_resource(broker, rname)
    current = broker.dynamic_configs if per_broker else broker.dynamic_default_configs
    defaults = {n: broker.config.raw.get(n, "") for n, _, _ in ops}
    new = _apply_ops(current if incremental else {}, ops, defaults)
    _check_broker_changes(broker, new, per_broker)
    if req["validate_only"]:
        return
    for name in [n for n in current if n not in new]:
        broker.set_dynamic_config(name, None, cluster_default=not per_broker)
    for name, value in new.items():
        if current.get(name) != value:
            broker.set_dynamic_config(name, value, cluster_default=not per_broker)


def _alter_loggers(req: dict[str, Any], ops: list[tuple[str, int, str | None]]) -> None:
    for name, op, value in ops:
        level = (value or "INFO").upper() if op == OP_SET else "INFO"
        if level not in ("DEBUG", "INFO", "WARN", "WARNING", "ERROR", "TRACE"):
            raise KafkaProtocolError(ErrorCode.INVALID_CONFIG, f"invalid log level {value!r}")
        if not req["validate_only"]:
            logging.getLogger(name).setLevel({"WARN": "WARNING", "TRACE": "DEBUG"}.get(level, level))


async def handle_alter_configs(broker: Broker, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
    return await _alter(broker, ctx, req, incremental=False)


async def handle_incremental_alter_configs(
    broker: Broker, ctx: RequestContext, req: dict[str, Any]
) -> dict[str, Any]:
    return await _alter(broker, ctx, req, incremental=True)
