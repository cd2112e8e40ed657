"""The audit trail of the Kafka surface: one wrapper outside every other (ACLs, stream pools) per API.

Control-plane APIs (topics, partitions, records deletion, configs, ACLs, SCRAM users, client quotas, group
deletions, offset deletions and offsets committed from outside a group's membership, as offset resets do) are
recorded once per resource they name, with their result and, where the API has one, the before and after.
With an authorizer, every other API records the resources it refused (TOPIC_, GROUP_, CLUSTER_,
TRANSACTIONAL_ID_AUTHORIZATION_FAILED), and a failed SASL authentication is recorded on every listener.

Names are those the client used (the wrapper sits outside the stream-pool mapping). What the request named is
read before the inner handlers run, since they rewrite and filter the request in place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafkite.broker.core import Broker, Handler, RequestContext
from kafkite.broker.features import features_of
from kafkite.doors.audit import DENIED, FAILED, OK, UNAUTHENTICATED, audit_of
from kafkite.protocol.api_keys import ApiKey
from kafkite.protocol.errors import ErrorCode
from kafkite.security import security_of
from kafkite.security.acl import AclOperation, PatternType, PermissionType, ResourceType
from kafkite.security.quotas import entity_text
from kafkite.security.scram import MECHANISM_NAMES
from kafkite.streaming.namespace import connection_pool, connection_state, from_internal, to_internal

log = logging.getLogger("kafkite.audit")

DENY_CODES: dict[int, str] = {
    int(ErrorCode.TOPIC_AUTHORIZATION_FAILED): "topic",
    int(ErrorCode.GROUP_AUTHORIZATION_FAILED): "group",
    int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED): "cluster",
    int(ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED): "transactional_id",
    int(ErrorCode.DELEGATION_TOKEN_AUTHORIZATION_FAILED): "delegation_token",
}
RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4
RESOURCE_GROUP = 32
CONFIG_OPS = {0: "SET", 1: "DELETE", 2: "APPEND", 3: "SUBTRACT"}
NAME_KEYS = ("name", "topic", "topic_name", "group_id", "resource_name", "key", "transactional_id", "user")

Entry = dict[str, Any]  # fields of one audit record: operation, resource_type, resource_name, result, ...


def _error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return str(code)


def _result(code: int | None, message: str | None = None) -> tuple[str, str | None]:
    if not code:
        return OK, None
    text = _error_name(code) + (f": {message}" if message else "")
    return (DENIED if code in DENY_CODES else FAILED), text


def _internal_topic(broker: Broker, ctx: RequestContext, name: str) -> str:
    """The topic a client-side name stands for on this connection (stream pools map names)."""
    try:
        return to_internal(connection_pool(broker, connection_state(ctx)), "topic", name)
    except Exception:
        return name


def _topic_configs(broker: Broker, ctx: RequestContext, name: str) -> dict[str, str] | None:
    meta = broker.topic(_internal_topic(broker, ctx, name))
    return None if meta is None else dict(meta.configs)


def _partitions(broker: Broker, ctx: RequestContext, name: str) -> int | None:
    meta = broker.topic(_internal_topic(broker, ctx, name))
    return None if meta is None else int(meta.partitions)


# ---------------------------------------------------------------------------------------------- changes


@dataclass
class Change:
    """How one control-plane API is audited: ``pre`` reads the request (and the state before) before the
    handler runs; ``post`` turns that and the response into records."""

    pre: Callable[[Broker, RequestContext, dict[str, Any]], Any]
    post: Callable[[Broker, RequestContext, Any, dict[str, Any]], list[Entry]]


def _by(items: list[dict[str, Any]] | None, key: str) -> dict[str, dict[str, Any]]:
    return {str(e.get(key)): e for e in items or []}


# -- topics


def _create_topics_pre(b: Broker, ctx: RequestContext, req: dict[str, Any]) -> Any:
    return bool(req.get("validate_only")), [
        (t["name"], {c["name"]: c.get("value") for c in t.get("configs") or []}) for t in req["topics"]
    ]


def _create_topics_post(b: Broker, ctx: RequestContext, pre: Any, resp: dict[str, Any]) -> list[Entry]:
    validate_only, topics = pre
    got = _by(resp.get("topics"), "name")
    out = []
    for name, configs in topics:
        r = got.get(name, {})
        result, error = _result(r.get("error_code"), r.get("error_message"))
        if validate_only and result == OK:
            continue
        after = {"partitions": r.get("num_partitions"), "configs": configs} if result == OK else None
        out.append(
            dict(
                operation="CreateTopics",
                resource_type="topic",
                resource_name=name,
                result=result,
                error=error,
                after=after,
            )
        )
    return out


def _delete_topics_pre(b: Broker, ctx: RequestContext, req: dict[str, Any]) -> Any:
    if ctx.api_version >= 6:
        names = []
        for t in req["topics"]:
            name = t.get("name")
            if name is None and t.get("topic_id") is not None:
                meta = b.topic_by_id(t["topic_id"])
                name = meta.name if meta is not None else str(t["topic_id"])
            names.append(str(name))
    else:
        names = list(req["topic_names"])
    return [(n, _partitions(b, ctx, n), _topic_configs(b, ctx, n)) for n in names]


def _delete_topics_post(b: Broker, ctx: RequestContext, pre: Any, resp: dict[str, Any]) -> list[Entry]:
    got = _by(resp.get("responses"), "name")
    out = []
    for name, partitions, configs in pre:
        r = got.get(name, {})
        result, error = _result(r.get("error_code"), r.get("error_message"))
        before = {"partitions": partitions, "configs": configs} if partitions is not None else None
        out.append(
            dict(
                operation="DeleteTopics",
                resource_type="topic",
                resource_name=name,
                result=result,
                error=error,
                before=before,
            )
        )
    return out


def _create_partitions_pre(b: Broker, ctx: RequestContext, req: dict[str, Any]) -> Any:
    return bool(req.get("validate_only")), [
        (t["name"], _partitions(b, ctx, t["name"]), t["count"]) for t in req["topics"]
    ]


def _create_partitions_post(b: Broker, ctx: RequestContext, pre: Any, resp: dict[str, Any]) -> list[Entry]:
    validate_only, topics = pre
    got = _by(resp.get("results"), "name")
    out = []
    for name, before, count in topics:
        r = got.get(name, {})
        result, error = _result(r.get("error_code"), r.get("error_message"))
        if validate_only and result == OK:
            continue
        out.append(
            dict(
                operation="CreatePartitions",
                resource_type="topic",
                resource_name=name,
                result=result,
                error=error,
                before={"partitions": before},
                after={"partitions": count},
            )
        )
    return out


def _delete_records_pre(b: Broker, ctx: RequestContext, req: dict[str, Any]) -> Any:
    return [
        (t["name"], {str(p["partition_index"]): p["offset"] for p in t["partitions"]}) for t in req["topics"]
    ]


def _delete_records_post(b: Broker, ctx: RequestContext, pre: Any, resp: dict[str, Any]) -> list[Entry]:
    got = _by(resp.get("topics"), "name")
    out = []
    for name, offsets in pre:
        parts = got.get(name, {}).get("partitions") or []
        code = next((p["error_code"] for p in parts if p.get("error_code")), 0)
        result, error = _result(code)
        out.append(
            dict(
                operation="DeleteRecords",
                resource_type="topic",
                resource_name=name,
                result=result,
                error=error,
                after={"before_offsets": offsets},
            )
        )
    return out


# -- configs


def _config_values(b: Broker, ctx: RequestContext, rtype: int, name: str, keys: list[str]) -> dict[str, Any]:
    if rtype == RESOURCE_TOPIC:
        current = _topic_configs(b, ctx, name) or {}
    elif rtype == RESOURCE_BROKER:
        current = dict(b.dynamic_configs)
    elif rtype == RESOURCE_GROUP and b.groups is not None:
        current = {k: str(v) for k, v in b.groups.group_configs(_internal_topic(b, ctx, name)).items()}
    else:
        return {}
    return {k: current.get(k) for k in keys}


def _alter_configs_pre(b: Broker, ctx: RequestContext, req: dict[str, Any]) -> Any:
    out = []
    for r in req["resources"]:
        keys = [c["name"] for c in r.get("configs") or []]
        changes = {
            c["name"]: (CONFIG_OPS.get(c.get("config_operation", 0), "SET"), c.get("value"))
            for c in r.get("configs") or []
        }
        before = _config_values(b, ctx, r["resource_type"], r["resource_name"], keys)
        out.append((r["resource_type"], r["resource_name"], keys, changes, before))
    return bool(req.get("validate_only")), out


def _alter_configs(operation: str) -> Callable[[Broker, RequestContext, Any, dict[str, Any]], list[Entry]]:
    def post(b: Broker, ctx: RequestContext, pre: Any, resp: dict[str, Any]) -> list[Entry]:
        validate_only, resources = pre
        got = {(e["resource_type"], e["resource_name"]): e for e in resp.get("responses") or []}
        out = []
        for rtype, name, keys, changes, before in resources:
            r = got.get((rtype, name), {})
            result, error = _result(r.get("error_code"), r.get("error_message"))
            if validate_only and result == OK:
                continue
            after = _config_values(b, ctx, rtype, name, keys) if result == OK else None
            kind = {RESOURCE_TOPIC: "topic", RESOURCE_BROKER: "broker", RESOURCE_GROUP: "group"}.get(
                rtype, f"config-resource-{rtype}"
            )
            out.append(
                dict(
                    operation=operation,
                    resource_type=kind,
                    resource_name=name or "(default)",
                    result=result,
                    error=error,
                    before=before,
                    after=after if after is not None else {"requested": changes},
                )
            )
        return out

    return post


# -- ACLs


def _binding_json(c: dict[str, Any], version: int, prefix: str = "") -> dict[str, Any]:
    def name(enum: Any, v: Any) -> Any:
        try:
            return enum(v).name
        except ValueError:
            return v

    pattern = c.get(prefix + "resource_pattern_type", c.get("pattern_type", PatternType.LITERAL))
    return {
        "resource_type": name(ResourceType, c["resource_type"]),
        "resource_name": c["resource_name"],
        "pattern_type": name(PatternType, pattern if version >= 1 else PatternType.LITERAL),
        "principal": c["principal"],
        "host": c["host"],
        "operation": name(AclOperation, c["operation"]),
        "permission_type": name(PermissionType, c["permission_type"]),
    }


def _create_acls_pre(b: Broker, ctx: RequestContext, req: dict[str, Any]) -> Any:
    return [_binding_json(c, ctx.api_version) for c in req["creations"]]


def _create_acls_post(b: Broker, ctx: RequestContext, pre: Any, resp: dict[str, Any]) -> list[Entry]:
    out = []
    for binding, r in zip(pre, resp.get("results") or [], strict=False):
        result, error = _result(r.get("error_code"), r.get("error_message"))
        out.append(
            dict(
                operation="CreateAcls",
                resource_type="acl",
                resource_name=f"{binding['resource_type']}:{binding['resource_name']}",
                result=result,
                error=error,
                after=binding,
            )
        )
    return out


def _delete_acls_pre(b: Broker, ctx: RequestContext, req: dict[str, Any]) -> Any:
    return [dict(f) for f in req["filters"]]


def _delete_acls_post(b: Broker, ctx: RequestContext, pre: Any, resp: dict[str, Any]) -> list[Entry]:
    out = []
    for f, r in zip(pre, resp.get("filter_results") or [], strict=False):
        result, error = _result(r.get("error_code"), r.get("error_message"))
        gone = [
            _binding_json({**m, "resource_pattern_type": m.get("pattern_type")}, ctx.api_version)
            for m in r.get("matching_acls") or []
        ]
        name = f.get("resource_name_filter")
        target = f"{_rt_name(f.get('resource_type_filter'))}:{name if name is not None else '*'}"
        out.append(
            dict(
                operation="DeleteAcls",
                resource_type="acl",
                resource_name=target,
                result=result,
                error=error,
                before=gone,
                after=[],
            )
        )
    return out


def _rt_name(v: Any) -> str:
    try:
        return ResourceType(v).name
    except (ValueError, TypeError):
        return str(v)


# -- users and quotas


def _scram_pre(b: Broker, ctx: RequestContext, req: dict[str, Any]) -> Any:
    ops: dict[str, list[dict[str, Any]]] = {}
    for d in req["deletions"]:
        ops.setdefault(d["name"], []).append(
            {"delete": MECHANISM_NAMES.get(d["mechanism"], str(d["mechanism"]))}
        )
    for u in req["upsertions"]:
        ops.setdefault(u["name"], []).append(
            {"set": MECHANISM_NAMES.get(u["mechanism"], str(u["mechanism"])), "iterations": u["iterations"]}
        )
    return ops


def _scram_post(b: Broker, ctx: RequestContext, pre: Any, resp: dict[str, Any]) -> list[Entry]:
    got = _by(resp.get("results"), "user")
    out = []
    for user, ops in pre.items():
        r = got.get(user, {})
        result, error = _result(r.get("error_code"), r.get("error_message"))
        out.append(
            dict(
                operation="AlterUserScramCredentials",
                resource_type="user",
                resource_name=user,
                result=result,
                error=error,
                after=ops,
            )
        )
    return out


def _entity_name(entity: list[dict[str, Any]]) -> str:
    parts = [
        f"{e['entity_type']}={e['entity_name'] if e['entity_name'] is not None else '<default>'}"
        for e in entity
    ]
    return ",".join(parts) or "(none)"


def _quotas_pre(b: Broker, ctx: RequestContext, req: dict[str, Any]) -> Any:
    store = security_of(b).quotas.store
    current: dict[str, dict[str, float]] = {}
    try:
        current = {entity_text(e): dict(v) for e, v in store.entries().items()}
    except Exception:
        current = {}
    out = []
    for e in req["entries"]:
        name = _entity_name(e["entity"])
        ops = {o["key"]: (None if o.get("remove") else o.get("value")) for o in e["ops"]}
        out.append((name, ops))
    return bool(req.get("validate_only")), out, current


def _quotas_post(b: Broker, ctx: RequestContext, pre: Any, resp: dict[str, Any]) -> list[Entry]:
    validate_only, entries, current = pre
    out = []
    for (name, ops), r in zip(entries, resp.get("entries") or [], strict=False):
        result, error = _result(r.get("error_code"), r.get("error_message"))
        if validate_only and result == OK:
            continue
        before = {k: v for k, v in current.items() if _same_entity(k, name)}
        out.append(
            dict(
                operation="AlterClientQuotas",
                resource_type="client-quota",
                resource_name=name,
                result=result,
                error=error,
                before=next(iter(before.values()), None),
                after=ops,
            )
        )
    return out


def _same_entity(text: str, name: str) -> bool:
    return sorted(text.replace(" ", "").split(",")) == sorted(name.split(","))


# -- groups


def _delete_groups_pre(b: Broker, ctx: RequestContext, req: dict[str, Any]) -> Any:
    return list(req["groups_names"])


def _delete_groups_post(b: Broker, ctx: RequestContext, pre: Any, resp: dict[str, Any]) -> list[Entry]:
    got = _by(resp.get("results"), "group_id")
    out = []
    for g in pre:
        result, error = _result(got.get(g, {}).get("error_code"))
        out.append(
            dict(operation="DeleteGroups", resource_type="group", resource_name=g, result=result, error=error)
        )
    return out


def _offset_delete_pre(b: Broker, ctx: RequestContext, req: dict[str, Any]) -> Any:
    return req["group_id"], {
        t["name"]: [p["partition_index"] for p in t["partitions"]] for t in req["topics"]
    }


def _offset_delete_post(b: Broker, ctx: RequestContext, pre: Any, resp: dict[str, Any]) -> list[Entry]:
    group, topics = pre
    code = resp.get("error_code") or next(
        (
            p["error_code"]
            for t in resp.get("topics") or []
            for p in t.get("partitions") or []
            if p["error_code"]
        ),
        0,
    )
    result, error = _result(code)
    return [
        dict(
            operation="OffsetDelete",
            resource_type="group",
            resource_name=group,
            result=result,
            error=error,
            before={"offsets": topics},
            after=None,
        )
    ]


def _offset_commit_pre(b: Broker, ctx: RequestContext, req: dict[str, Any]) -> Any:
    generation = req.get("generation_id_or_member_epoch", req.get("generation_id", -1))
    if generation not in (-1, None) or req.get("member_id"):
        return None  # a member of the group committing its progress: not a change made from outside
    return req["group_id"], {
        _topic_named(b, ctx, t): {str(p["partition_index"]): p["committed_offset"] for p in t["partitions"]}
        for t in req["topics"]
    }


def _topic_named(b: Broker, ctx: RequestContext, t: dict[str, Any]) -> str:
    """A request's topic by the name the client knows; version 10 of OffsetCommit names topics by id."""
    if t.get("name"):
        return str(t["name"])
    meta = b.topic_by_id(t["topic_id"]) if t.get("topic_id") else None
    if meta is None:
        return str(t.get("topic_id"))
    try:
        return from_internal(connection_pool(b, connection_state(ctx)), "topic", meta.name) or meta.name
    except Exception:
        return meta.name


def _offset_commit_post(b: Broker, ctx: RequestContext, pre: Any, resp: dict[str, Any]) -> list[Entry]:
    if pre is None:
        return _denials(ctx, {}, resp)
    group, offsets = pre
    code = next(
        (
            p["error_code"]
            for t in resp.get("topics") or []
            for p in t.get("partitions") or []
            if p["error_code"]
        ),
        0,
    )
    result, error = _result(code)
    return [
        dict(
            operation="OffsetCommit",
            resource_type="group",
            resource_name=group,
            result=result,
            error=error,
            after={"offsets": offsets},
        )
    ]


def _share_start_offsets(b: Broker, ctx: RequestContext, group: str, topics: list[str]) -> dict[str, Any]:
    """The start offsets of the group's share-partitions of ``topics``, by topic and partition."""
    store = getattr(getattr(b, "groups", None), "share_store", None)
    out: dict[str, Any] = {}
    if store is None:
        return out
    internal_group = group
    try:
        internal_group = to_internal(connection_pool(b, connection_state(ctx)), "group", group)
    except Exception:
        pass
    for name in topics:
        meta = b.topic(_internal_topic(b, ctx, name))
        if meta is None:
            continue
        offsets = {
            str(sp.index): sp.start for sp in store.of_group(internal_group) if sp.topic_id == meta.topic_id
        }
        if offsets:
            out[name] = offsets
    return out


def _alter_share_offsets_pre(b: Broker, ctx: RequestContext, req: dict[str, Any]) -> Any:
    after = {
        t["topic_name"]: {str(p["partition_index"]): p["start_offset"] for p in t["partitions"]}
        for t in req["topics"]
    }
    return req["group_id"], _share_start_offsets(b, ctx, req["group_id"], list(after)), after


def _alter_share_offsets_post(b: Broker, ctx: RequestContext, pre: Any, resp: dict[str, Any]) -> list[Entry]:
    group, before, after = pre
    code = resp.get("error_code") or next(
        (
            p["error_code"]
            for t in resp.get("responses") or []
            for p in t.get("partitions") or []
            if p["error_code"]
        ),
        0,
    )
    result, error = _result(code, resp.get("error_message"))
    return [
        dict(
            operation="AlterShareGroupOffsets",
            resource_type="group",
            resource_name=group,
            result=result,
            error=error,
            before={"start_offsets": before},
            after={"start_offsets": after},
        )
    ]


def _delete_share_offsets_pre(b: Broker, ctx: RequestContext, req: dict[str, Any]) -> Any:
    topics = [t["topic_name"] for t in req["topics"]]
    return req["group_id"], _share_start_offsets(b, ctx, req["group_id"], topics), topics


def _delete_share_offsets_post(b: Broker, ctx: RequestContext, pre: Any, resp: dict[str, Any]) -> list[Entry]:
    group, before, topics = pre
    code = resp.get("error_code") or next(
        (t["error_code"] for t in resp.get("responses") or [] if t["error_code"]), 0
    )
    result, error = _result(code, resp.get("error_message"))
    return [
        dict(
            operation="DeleteShareGroupOffsets",
            resource_type="group",
            resource_name=group,
            result=result,
            error=error,
            before={"start_offsets": before, "topics": topics},
            after=None,
        )
    ]


CHANGES: dict[int, Change] = {
    ApiKey.CREATE_TOPICS: Change(_create_topics_pre, _create_topics_post),
    ApiKey.DELETE_TOPICS: Change(_delete_topics_pre, _delete_topics_post),
    ApiKey.CREATE_PARTITIONS: Change(_create_partitions_pre, _create_partitions_post),
    ApiKey.DELETE_RECORDS: Change(_delete_records_pre, _delete_records_post),
    ApiKey.ALTER_CONFIGS: Change(_alter_configs_pre, _alter_configs("AlterConfigs")),
    ApiKey.INCREMENTAL_ALTER_CONFIGS: Change(_alter_configs_pre, _alter_configs("IncrementalAlterConfigs")),
    ApiKey.CREATE_ACLS: Change(_create_acls_pre, _create_acls_post),
    ApiKey.DELETE_ACLS: Change(_delete_acls_pre, _delete_acls_post),
    ApiKey.ALTER_USER_SCRAM_CREDENTIALS: Change(_scram_pre, _scram_post),
    ApiKey.ALTER_CLIENT_QUOTAS: Change(_quotas_pre, _quotas_post),
    ApiKey.DELETE_GROUPS: Change(_delete_groups_pre, _delete_groups_post),
    ApiKey.OFFSET_DELETE: Change(_offset_delete_pre, _offset_delete_post),
    ApiKey.OFFSET_COMMIT: Change(_offset_commit_pre, _offset_commit_post),
    ApiKey.ALTER_SHARE_GROUP_OFFSETS: Change(_alter_share_offsets_pre, _alter_share_offsets_post),
    ApiKey.DELETE_SHARE_GROUP_OFFSETS: Change(_delete_share_offsets_pre, _delete_share_offsets_post),
}


def _update_features_pre(b: Broker, ctx: RequestContext, req: dict[str, Any]) -> Any:
    reg = features_of(b)
    return {
        u["feature"]: (reg.level(u["feature"]), u["max_version_level"]) for u in req["feature_updates"]
    }, bool(req.get("validate_only"))


def _update_features_post(b: Broker, ctx: RequestContext, pre: Any, resp: dict[str, Any]) -> list[Entry]:
    levels, validate_only = pre
    if validate_only and not resp.get("error_code"):
        return []
    result, error = _result(resp.get("error_code"), resp.get("error_message"))
    return [
        dict(
            operation="UpdateFeatures",
            resource_type="feature",
            resource_name=name,
            result=result,
            error=error,
            before={"level": before},
            after={"level": after} if result == OK else None,
        )
        for name, (before, after) in levels.items()
    ]


def _reassignments_pre(b: Broker, ctx: RequestContext, req: dict[str, Any]) -> Any:
    return [(t["name"], p["partition_index"], p["replicas"]) for t in req["topics"] for p in t["partitions"]]


def _reassignments_post(b: Broker, ctx: RequestContext, pre: Any, resp: dict[str, Any]) -> list[Entry]:
    codes = {
        (t["name"], p["partition_index"]): (p["error_code"], p.get("error_message"))
        for t in resp.get("responses") or []
        for p in t.get("partitions") or []
    }
    out = []
    for topic, partition, replicas in pre:
        code, message = codes.get((topic, partition), (resp.get("error_code"), resp.get("error_message")))
        result, error = _result(code, message)
        out.append(
            dict(
                operation="AlterPartitionReassignments",
                resource_type="topic",
                resource_name=topic,
                result=result,
                error=error,
                after={"partition": partition, "replicas": replicas},
            )
        )
    return out


CHANGES.update(
    {
        ApiKey.UPDATE_FEATURES: Change(_update_features_pre, _update_features_post),
        ApiKey.ALTER_PARTITION_REASSIGNMENTS: Change(_reassignments_pre, _reassignments_post),
    }
)


# ---------------------------------------------------------------------------------------------- refusals


def _request_names(req: dict[str, Any]) -> dict[str, str]:
    """Top-level names of a request (a group or transactional id), for refusals answered without a name."""
    out = {}
    for key, kind in (("group_id", "group"), ("transactional_id", "transactional_id")):
        v = req.get(key)
        if isinstance(v, str):
            out[kind] = v
    return out


def _denials(ctx: RequestContext, names: dict[str, str], resp: dict[str, Any] | None) -> list[Entry]:
    """One record per resource the response refuses with an authorization error."""
    if resp is None:
        return []
    found: dict[tuple[str, str], str] = {}

    def walk(node: Any, inherited: str | None) -> None:
        if isinstance(node, dict):
            own = next((node[k] for k in NAME_KEYS if isinstance(node.get(k), str)), None)
            if own is None and node.get("topic_id") is not None and "partitions" in node:
                own = str(node["topic_id"])
            name = own if own is not None else inherited
            for code_key in ("error_code", "partition_error_code"):
                code = node.get(code_key)
                if isinstance(code, int) and code in DENY_CODES:
                    kind = DENY_CODES[code]
                    if kind == "cluster":
                        target = "kafka-cluster"
                    elif own is not None:
                        target = own
                    else:
                        target = names.get(kind) or name or "?"
                    found.setdefault((kind, target), _error_name(code))
            for v in node.values():
                if isinstance(v, dict | list):
                    walk(v, name)
        elif isinstance(node, list):
            for v in node:
                walk(v, inherited)

    walk(resp, None)
    try:
        api = ApiKey(ctx.api_key).name
    except ValueError:
        api = str(ctx.api_key)
    op = "".join(w.capitalize() for w in api.split("_"))
    return [
        dict(operation=op, resource_type=kind, resource_name=name, result=DENIED, error=err)
        for (kind, name), err in found.items()
    ]


# ---------------------------------------------------------------------------------------------- wrapping


def _write(broker: Broker, ctx: RequestContext, entries: list[Entry]) -> None:
    audit = audit_of(broker)
    # Requests the web console makes through the handlers on its user's behalf name their door.
    surface = str(ctx.extra.get("surface", "kafka"))
    for e in entries:
        audit.record(surface=surface, principal=ctx.principal, address=ctx.client_host, **e)


def wrap(broker: Broker, api_key: int, handler: Handler, refusals: bool) -> Handler:
    change = CHANGES.get(api_key)

    async def audited(b: Broker, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any] | None:
        pre: Any = None
        names: dict[str, str] = {}
        try:
            if change is not None:
                pre = change.pre(b, ctx, req)
            elif refusals:
                names = _request_names(req)
        except Exception:
            log.exception("cannot read %s for the audit trail", handler.__name__)
        resp = await handler(b, ctx, req)
        try:
            if change is not None and resp is not None:
                _write(b, ctx, change.post(b, ctx, pre, resp))
            elif api_key == ApiKey.SASL_AUTHENTICATE and resp is not None and resp.get("error_code"):
                _write(
                    b,
                    ctx,
                    [
                        dict(
                            operation="SaslAuthenticate",
                            resource_type="listener",
                            resource_name=ctx.listener,
                            result=UNAUTHENTICATED,
                            error=resp.get("error_message"),
                        )
                    ],
                )
            elif refusals:
                _write(b, ctx, _denials(ctx, names, resp))
        except Exception:
            log.exception("cannot record %s in the audit trail", handler.__name__)
        return resp

    audited.__name__ = getattr(handler, "__name__", "handler")
    audited.__doc__ = getattr(handler, "__doc__", None)
    return audited


def install_kafka_audit(broker: Broker) -> None:
    """Wrap the handlers (call once, after the ACL wrappers): control-plane APIs always, the others only when
    an authorizer can refuse them."""
    if not broker.config["audit.log.enable"]:
        return
    refusals = security_of(broker).authorizer is not None
    for key, handler in list(broker.handlers.items()):
        if key in CHANGES or key == ApiKey.SASL_AUTHENTICATE or refusals:
            broker.handlers[key] = wrap(broker, key, handler, refusals)
