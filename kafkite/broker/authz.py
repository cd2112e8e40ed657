"""Authorization on the Kafka surface: one wrapper per API that checks ACLs around the broker's handler.

Kafka checks ACLs inside each handler; kafkite keeps the handlers free of it. For every API a rule here
takes the decoded request, answers the items the principal may not touch with Kafka's error for them
(TOPIC_AUTHORIZATION_FAILED per topic, GROUP_AUTHORIZATION_FAILED, CLUSTER_AUTHORIZATION_FAILED,
TRANSACTIONAL_ID_AUTHORIZATION_FAILED), passes the rest to the handler and merges the two answers in request
order. Metadata, ListGroups and OffsetFetch for all topics list only what the principal may describe.

The wrapper sits outside the stream-pool wrapper, so ACLs name topics and groups as clients see them.
Without ``authorizer.class.name`` nothing is wrapped.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from kafkite.broker.core import Broker, CloseConnection, Handler, RequestContext
from kafkite.protocol.errors import ErrorCode
from kafkite.security import security_of
from kafkite.security.acl import CLUSTER_NAME, AclAuthorizer, AclOperation, ResourceType

log = logging.getLogger("kafkite.authorizer")

Op = AclOperation
RT = ResourceType
TOPIC_DENIED = int(ErrorCode.TOPIC_AUTHORIZATION_FAILED)
GROUP_DENIED = int(ErrorCode.GROUP_AUTHORIZATION_FAILED)
CLUSTER_DENIED = int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED)
TXN_DENIED = int(ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
OPS_NOT_REQUESTED = -2147483648
RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4
RESOURCE_BROKER_LOGGER = 8
RESOURCE_GROUP = 32

Inner = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]
Rule = Callable[["Check", dict[str, Any], Inner], Awaitable[dict[str, Any] | None]]


class Check:
    """One request's authorization questions."""

    def __init__(self, broker: Broker, authorizer: AclAuthorizer, ctx: RequestContext) -> None:
        self.broker = broker
        self.authorizer = authorizer
        self.ctx = ctx
        self.version = ctx.api_version

    def allowed(self, op: AclOperation, rtype: ResourceType, name: str) -> bool:
        ok = self.authorizer.authorize(self.ctx.principal, self.ctx.client_host, op, rtype, name)
        if not ok:
            log.debug("%s denied %s on %s %s", self.ctx.principal, op.name, rtype.name, name)
        return ok

    def topic(self, op: AclOperation, name: str | None) -> bool:
        return name is not None and self.allowed(op, RT.TOPIC, name)

    def group(self, op: AclOperation, name: str) -> bool:
        return self.allowed(op, RT.GROUP, name)

    def cluster(self, op: AclOperation) -> bool:
        return self.allowed(op, RT.CLUSTER, CLUSTER_NAME)

    def txn(self, name: str) -> bool:
        return self.allowed(Op.WRITE, RT.TRANSACTIONAL_ID, name)

    def ops_bits(self, rtype: ResourceType, name: str) -> int:
        ops = self.authorizer.authorized_operations(self.ctx.principal, self.ctx.client_host, rtype, name)
        return sum(1 << int(op) for op in ops)

    def topic_exists(self, name: str) -> bool:
        """Does the topic exist, as this connection names it (stream pools map names)?"""
        names = self.broker.pool_names
        internal = name if names is None else names.internal_topic(self.ctx, name)
        return self.broker.topic(internal) is not None

    def topic_name_by_id(self, topic_id: uuid.UUID) -> str | None:
        meta = self.broker.topic_by_id(topic_id)
        if meta is None:
            return None
        names = self.broker.pool_names
        return meta.name if names is None else names.local_name(meta.name)


def topic_describe_filter(
    broker: Broker, ctx: RequestContext
) -> Callable[[Collection[str]], list[str]] | None:
    """The topics among those given (named as clients see them) that the request's principal may DESCRIBE
    from its host (READ, WRITE, DELETE and ALTER imply it), or None when no authorizer is configured: what a
    consumer group's regular expressions resolve to when this request's heartbeat refreshes them (Kafka's
    TopicRegexResolver)."""
    authorizer = security_of(broker).authorizer
    if authorizer is None:
        return None
    check = Check(broker, authorizer, ctx)

    def describable(names: Collection[str]) -> list[str]:
        return [n for n in names if check.topic(Op.DESCRIBE, n)]

    return describable


def _merge(order: list[str], *groups: list[dict[str, Any]], key: str = "name") -> list[dict[str, Any]]:
    """Entries of several partial answers, in the order the request named them."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for g in groups:
        for e in g:
            by_name.setdefault(str(e.get(key)), []).append(e)
    out: list[dict[str, Any]] = []
    for name in order:
        entries = by_name.get(str(name))
        if entries:
            out.append(entries.pop(0))
    for rest in by_name.values():
        out.extend(rest)
    return out


# ------------------------------------------------------------------------------------------ produce, fetch


async def produce(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
    txn_id = req.get("transactional_id")
    order = [t["name"] for t in req["topic_data"]]
    denied: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    txn_ok = txn_id is None or c.txn(txn_id)
    for t in req["topic_data"]:
        if txn_ok and c.topic(Op.WRITE, t["name"]):
            kept.append(t)
            continue
        code = TOPIC_DENIED if txn_ok else TXN_DENIED
        denied.append(
            {
                "name": t["name"],
                "partition_responses": [
                    {"index": p["index"], "error_code": code, "base_offset": -1, "error_message": None}
                    for p in t["partition_data"]
                ],
            }
        )
    if not denied:
        return await inner(req)
    if req["acks"] == 0:
        raise CloseConnection()  # acks=0 cannot carry an error: Kafka closes the connection
    resp: dict[str, Any] | None = {"responses": [], "throttle_time_ms": 0}
    if kept:
        req["topic_data"] = kept
        resp = await inner(req)
    assert resp is not None
    resp["responses"] = _merge(order, resp["responses"], denied)
    return resp


async def fetch(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
    by_id = c.version >= 13
    denied: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    order: list[str] = []
    for t in req["topics"]:
        name = c.topic_name_by_id(t["topic_id"]) if by_id else t["topic"]
        order.append(str(t["topic_id"]) if by_id else t["topic"])
        if by_id and name is None:
            kept.append(t)  # unknown topic id: the handler answers UNKNOWN_TOPIC_ID
            continue
        if c.topic(Op.READ, name):
            kept.append(t)
            continue
        denied.append(
            {
                "topic": t.get("topic", name or ""),
                "topic_id": t.get("topic_id", uuid.UUID(int=0)),
                "partitions": [
                    {
                        "partition_index": p["partition"],
                        "error_code": TOPIC_DENIED,
                        "high_watermark": -1,
                        "last_stable_offset": -1,
                        "log_start_offset": -1,
                        "aborted_transactions": None,
                        "records": b"",
                    }
                    for p in t["partitions"]
                ],
            }
        )
    if not denied:
        return await inner(req)
    if not kept:
        return {"throttle_time_ms": 0, "error_code": 0, "session_id": 0, "responses": denied}
    req["topics"] = kept
    resp = await inner(req)
    if resp is None:
        return None
    key = "topic_id" if by_id else "topic"
    resp["responses"] = _merge(order, resp.get("responses") or [], denied, key=key)
    return resp


def _topic_partitions_rule(
    op: AclOperation,
    topics_key: str,
    partitions_key: str,
    entry: Callable[[Any], dict[str, Any]],
    resp_topics_key: str | None = None,
    extra: Callable[[], dict[str, Any]] | None = None,
    name_key: str = "name",
) -> Rule:
    """A rule for topics[].partitions[] requests answered per partition (ListOffsets, DeleteRecords)."""

    async def rule(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
        order = [t[name_key] for t in req[topics_key]]
        kept = [t for t in req[topics_key] if c.topic(op, t[name_key])]
        if len(kept) == len(req[topics_key]):
            return await inner(req)
        denied = [
            {name_key: t[name_key], "partitions": [entry(p) for p in t[partitions_key]]}
            for t in req[topics_key]
            if t not in kept
        ]
        out_key = resp_topics_key or topics_key
        if kept:
            req[topics_key] = kept
            resp = await inner(req)
            assert resp is not None
        else:
            resp = {"throttle_time_ms": 0, out_key: [], **(extra() if extra else {})}
        resp[out_key] = _merge(order, resp.get(out_key) or [], denied, key=name_key)
        return resp

    return rule


list_offsets = _topic_partitions_rule(
    Op.DESCRIBE,
    "topics",
    "partitions",
    lambda p: {
        "partition_index": p["partition_index"],
        "error_code": TOPIC_DENIED,
        "timestamp": -1,
        "offset": -1,
    },
)
offset_for_leader_epoch = _topic_partitions_rule(
    Op.DESCRIBE,
    "topics",
    "partitions",
    lambda p: {"partition": p["partition"], "error_code": TOPIC_DENIED, "leader_epoch": -1, "end_offset": -1},
    name_key="topic",
)
delete_records = _topic_partitions_rule(
    Op.DELETE,
    "topics",
    "partitions",
    lambda p: {"partition_index": p["partition_index"], "low_watermark": -1, "error_code": TOPIC_DENIED},
)
describe_producers = _topic_partitions_rule(
    Op.READ,
    "topics",
    "partition_indexes",
    lambda i: {
        "partition_index": i,
        "error_code": TOPIC_DENIED,
        "error_message": None,
        "active_producers": [],
    },
)


# ------------------------------------------------------------------------------------------ metadata


async def metadata(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
    requested = req["topics"]
    all_topics = requested is None or (c.version == 0 and not requested)
    denied: list[dict[str, Any]] = []
    order: list[str] = []
    if not all_topics:
        kept = []
        allow_auto = req["allow_auto_topic_creation"] if c.version >= 4 else True
        may_create = c.cluster(Op.CREATE)
        for t in requested:
            name = t["name"]
            if name is None:
                name = c.topic_name_by_id(t["topic_id"])
                if name is None:
                    kept.append(t)
                    continue
            order.append(name)
            if not c.topic(Op.DESCRIBE, name):
                denied.append(
                    {"error_code": TOPIC_DENIED, "name": name, "partitions": [], "is_internal": False}
                )
                continue
            if allow_auto and not may_create and not c.topic(Op.CREATE, name) and not c.topic_exists(name):
                code = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
                denied.append({"error_code": code, "name": name, "partitions": [], "is_internal": False})
                continue
            kept.append(t)
        req["topics"] = kept
        if not kept and c.version >= 1:
            req["topics"] = []  # an empty list asks for no topics (null would mean all of them)
    resp = await inner(req)
    if resp is None:
        return None
    topics = resp.get("topics") or []
    if all_topics:
        topics = [t for t in topics if t.get("name") is not None and c.topic(Op.DESCRIBE, t["name"])]
    elif denied:
        if c.version == 0 and not req["topics"]:
            topics = []  # v0 with an empty list means all topics: none of them were asked for
        topics = _merge(order, topics, denied)
    if req.get("include_topic_authorized_operations"):
        for t in topics:
            if t.get("error_code") == 0 and t.get("name"):
                t["topic_authorized_operations"] = c.ops_bits(RT.TOPIC, t["name"])
    resp["topics"] = topics
    if req.get("include_cluster_authorized_operations"):
        resp["cluster_authorized_operations"] = c.ops_bits(RT.CLUSTER, CLUSTER_NAME)
    return resp


async def describe_cluster(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
    resp = await inner(req)
    if resp is not None and req.get("include_cluster_authorized_operations"):
        resp["cluster_authorized_operations"] = c.ops_bits(RT.CLUSTER, CLUSTER_NAME)
    return resp


# ------------------------------------------------------------------------------------------ topics admin


def _per_name_rule(
    allowed: Callable[[Check, str], bool],
    names: Callable[[Check, dict[str, Any]], list[dict[str, Any]]],
    set_names: Callable[[Check, dict[str, Any], list[dict[str, Any]]], None],
    denied_entry: Callable[[Check, dict[str, Any]], dict[str, Any]],
    name_of: Callable[[Check, dict[str, Any]], str | None],
    resp_key: str,
    resp_name_key: str = "name",
) -> Rule:
    async def rule(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
        items = names(c, req)
        order = [str(name_of(c, it)) for it in items]
        kept = [it for it in items if name_of(c, it) is None or allowed(c, str(name_of(c, it)))]
        if len(kept) == len(items):
            return await inner(req)
        denied = [denied_entry(c, it) for it in items if not any(it is k for k in kept)]
        if kept:
            set_names(c, req, kept)
            resp = await inner(req)
            assert resp is not None
        else:
            resp = {"throttle_time_ms": 0, resp_key: []}
        resp[resp_key] = _merge(order, resp.get(resp_key) or [], denied, key=resp_name_key)
        return resp

    return rule


def _set(key: str) -> Callable[[Check, dict[str, Any], list[dict[str, Any]]], None]:
    def set_items(c: Check, req: dict[str, Any], kept: list[dict[str, Any]]) -> None:
        req[key] = kept

    return set_items


create_topics = _per_name_rule(
    lambda c, name: c.cluster(Op.CREATE) or c.topic(Op.CREATE, name),
    lambda c, req: list(req["topics"]),
    _set("topics"),
    lambda c, t: {
        "name": t["name"],
        "topic_id": uuid.UUID(int=0),
        "error_code": TOPIC_DENIED,
        "error_message": "not authorized to create this topic",
        "num_partitions": -1,
        "replication_factor": -1,
        "configs": None,
    },
    lambda c, t: t["name"],
    "topics",
)


def _delete_topic_items(c: Check, req: dict[str, Any]) -> list[dict[str, Any]]:
    if c.version >= 6:
        return list(req["topics"])
    return [{"name": n} for n in req["topic_names"]]


def _delete_topic_name(c: Check, t: dict[str, Any]) -> str | None:
    if t.get("name") is None and t.get("topic_id") is not None:
        return c.topic_name_by_id(t["topic_id"])
    return t.get("name")


def _set_delete_topics(c: Check, req: dict[str, Any], kept: list[dict[str, Any]]) -> None:
    if c.version >= 6:
        req["topics"] = kept
    else:
        req["topic_names"] = [t["name"] for t in kept]


delete_topics = _per_name_rule(
    lambda c, name: c.topic(Op.DELETE, name),
    _delete_topic_items,
    _set_delete_topics,
    lambda c, t: {
        "name": _delete_topic_name(c, t),
        "topic_id": t.get("topic_id") or uuid.UUID(int=0),
        "error_code": TOPIC_DENIED,
        "error_message": "not authorized to delete this topic",
    },
    _delete_topic_name,
    "responses",
)

create_partitions = _per_name_rule(
    lambda c, name: c.topic(Op.ALTER, name),
    lambda c, req: list(req["topics"]),
    _set("topics"),
    lambda c, t: {"name": t["name"], "error_code": TOPIC_DENIED, "error_message": "not authorized"},
    lambda c, t: t["name"],
    "results",
)


def _config_resource_allowed(op: AclOperation) -> Callable[[Check, dict[str, Any]], bool]:
    def allowed(c: Check, r: dict[str, Any]) -> bool:
        if r["resource_type"] == RESOURCE_TOPIC:
            return c.topic(op, r["resource_name"])
        if r["resource_type"] in (RESOURCE_BROKER, RESOURCE_BROKER_LOGGER):
            return c.cluster(op)
        if r["resource_type"] == RESOURCE_GROUP:
            return c.group(op, r["resource_name"])
        return True

    return allowed


def configs_rule(op: AclOperation, resp_key: str) -> Rule:
    allowed = _config_resource_allowed(op)

    async def rule(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
        resources = list(req["resources"])
        kept = [r for r in resources if allowed(c, r)]
        if len(kept) == len(resources):
            return await inner(req)
        denied = [
            {
                "error_code": TOPIC_DENIED
                if r["resource_type"] == RESOURCE_TOPIC
                else GROUP_DENIED
                if r["resource_type"] == RESOURCE_GROUP
                else CLUSTER_DENIED,
                "error_message": f"not authorized to {op.name}",
                "resource_type": r["resource_type"],
                "resource_name": r["resource_name"],
                "configs": [],
            }
            for r in resources
            if not allowed(c, r)
        ]
        if kept:
            req["resources"] = kept
            resp = await inner(req)
            assert resp is not None
        else:
            resp = {"throttle_time_ms": 0, resp_key: []}
        order = [f"{r['resource_type']}/{r['resource_name']}" for r in resources]
        for e in resp.get(resp_key) or []:
            e["_key"] = f"{e['resource_type']}/{e['resource_name']}"
        for e in denied:
            e["_key"] = f"{e['resource_type']}/{e['resource_name']}"
        merged = _merge(order, resp.get(resp_key) or [], denied, key="_key")
        for e in merged:
            e.pop("_key", None)
        resp[resp_key] = merged
        return resp

    return rule


async def describe_log_dirs(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
    if not c.cluster(Op.DESCRIBE):
        return {"throttle_time_ms": 0, "error_code": CLUSTER_DENIED, "results": []}
    return await inner(req)


# ------------------------------------------------------------------------------------------ groups


def group_error_rule(op: AclOperation, code_field: str = "error_code") -> Rule:
    """JoinGroup, SyncGroup, Heartbeat, LeaveGroup: the whole request needs ``op`` on the group."""

    async def rule(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
        if c.group(op, req["group_id"]):
            return await inner(req)
        return {
            "throttle_time_ms": 0,
            code_field: GROUP_DENIED,
            "generation_id": -1,
            "member_id": req.get("member_id") or "",
            "members": [],
        }

    return rule


def _partition_errors(topics: list[dict[str, Any]], code: int) -> list[dict[str, Any]]:
    return [
        {
            "name": t["name"],
            "partitions": [
                {"partition_index": p["partition_index"], "error_code": code} for p in t["partitions"]
            ],
        }
        for t in topics
    ]


async def offset_commit(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
    if not c.group(Op.READ, req["group_id"]):
        return {"throttle_time_ms": 0, "topics": _partition_errors(req["topics"], GROUP_DENIED)}
    return await _topics_read(c, req, inner)


async def _topics_read(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
    """Commit-shaped requests (topics[].partitions[] answered with partition error codes) needing READ."""
    order = [t["name"] for t in req["topics"]]
    kept = [t for t in req["topics"] if c.topic(Op.READ, t["name"])]
    if len(kept) == len(req["topics"]):
        return await inner(req)
    denied = _partition_errors([t for t in req["topics"] if t not in kept], TOPIC_DENIED)
    if kept:
        req["topics"] = kept
        resp = await inner(req)
        assert resp is not None
    else:
        resp = {"throttle_time_ms": 0, "error_code": 0, "topics": []}
    resp["topics"] = _merge(order, resp.get("topics") or [], denied)
    return resp


async def offset_delete(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
    if not c.group(Op.DELETE, req["group_id"]):
        return {"throttle_time_ms": 0, "error_code": GROUP_DENIED, "topics": []}
    return await _topics_read(c, req, inner)


def _fetch_offsets_denied(topics: list[dict[str, Any]], code: int) -> list[dict[str, Any]]:
    return [
        {
            "name": t["name"],
            "partitions": [
                {"partition_index": i, "committed_offset": -1, "metadata": "", "error_code": code}
                for i in t["partition_indexes"]
            ],
        }
        for t in topics
    ]


def _filter_offset_topics(
    c: Check, topics: list[dict[str, Any]] | None
) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]], list[str]]:
    if topics is None:
        return None, [], []
    order = [t["name"] for t in topics]
    kept = [t for t in topics if c.topic(Op.DESCRIBE, t["name"])]
    return kept, _fetch_offsets_denied([t for t in topics if t not in kept], TOPIC_DENIED), order


def _finish_offset_topics(
    c: Check, got: list[dict[str, Any]], all_topics: bool, denied: list[dict[str, Any]], order: list[str]
) -> list[dict[str, Any]]:
    if all_topics:
        return [t for t in got if c.topic(Op.DESCRIBE, t["name"])]
    return _merge(order, got, denied)


async def offset_fetch(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
    if c.version >= 8:
        order_groups = [g["group_id"] for g in req["groups"]]
        denied_groups = [
            {"group_id": g["group_id"], "topics": [], "error_code": GROUP_DENIED}
            for g in req["groups"]
            if not c.group(Op.DESCRIBE, g["group_id"])
        ]
        kept_groups = [g for g in req["groups"] if c.group(Op.DESCRIBE, g["group_id"])]
        per_group: dict[str, tuple[bool, list[dict[str, Any]], list[str]]] = {}
        for g in kept_groups:
            kept, denied, order = _filter_offset_topics(c, g["topics"])
            per_group[g["group_id"]] = (g["topics"] is None, denied, order)
            g["topics"] = kept
        if kept_groups:
            req["groups"] = kept_groups
            resp = await inner(req)
            assert resp is not None
        else:
            resp = {"throttle_time_ms": 0, "groups": []}
        for g in resp.get("groups") or []:
            info = per_group.get(g["group_id"])
            if info is not None:
                g["topics"] = _finish_offset_topics(c, g.get("topics") or [], *info)
        resp["groups"] = _merge(order_groups, resp.get("groups") or [], denied_groups, key="group_id")
        return resp
    if not c.group(Op.DESCRIBE, req["group_id"]):
        return {
            "throttle_time_ms": 0,
            "error_code": GROUP_DENIED,
            "topics": _fetch_offsets_denied(req["topics"] or [], GROUP_DENIED),
        }
    all_topics = req["topics"] is None
    kept, denied, order = _filter_offset_topics(c, req["topics"])
    req["topics"] = kept
    resp = await inner(req)
    if resp is None:
        return None
    resp["topics"] = _finish_offset_topics(c, resp.get("topics") or [], all_topics, denied, order)
    return resp


async def find_coordinator(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
    key_type = req.get("key_type", 0)

    def ok(key: str) -> bool:
        if key_type == 1:
            return c.allowed(Op.DESCRIBE, RT.TRANSACTIONAL_ID, key)
        return c.group(Op.DESCRIBE, key)

    code = TXN_DENIED if key_type == 1 else GROUP_DENIED
    if c.version < 4:
        if ok(req["key"]):
            return await inner(req)
        return {
            "throttle_time_ms": 0,
            "error_code": code,
            "error_message": "not authorized",
            "node_id": -1,
            "host": "",
            "port": -1,
        }
    keys = list(req["coordinator_keys"])
    kept = [k for k in keys if ok(k)]
    if len(kept) == len(keys):
        return await inner(req)
    denied = [
        {
            "key": k,
            "node_id": -1,
            "host": "",
            "port": -1,
            "error_code": code,
            "error_message": "not authorized",
        }
        for k in keys
        if k not in kept
    ]
    if kept:
        req["coordinator_keys"] = kept
        resp = await inner(req)
        assert resp is not None
    else:
        resp = {"throttle_time_ms": 0, "coordinators": []}
    resp["coordinators"] = _merge(keys, resp.get("coordinators") or [], denied, key="key")
    return resp


async def describe_groups(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
    groups = list(req["groups"])
    kept = [g for g in groups if c.group(Op.DESCRIBE, g)]
    if len(kept) == len(groups):
        resp = await inner(req)
    else:
        denied = [
            {
                "error_code": GROUP_DENIED,
                "group_id": g,
                "group_state": "",
                "protocol_type": "",
                "protocol_data": "",
                "members": [],
            }
            for g in groups
            if g not in kept
        ]
        if kept:
            req["groups"] = kept
            resp = await inner(req)
            assert resp is not None
        else:
            resp = {"throttle_time_ms": 0, "groups": []}
        resp["groups"] = _merge(groups, resp.get("groups") or [], denied, key="group_id")
    if resp is not None and req.get("include_authorized_operations"):
        for g in resp["groups"]:
            if g.get("error_code") == 0:
                g["authorized_operations"] = c.ops_bits(RT.GROUP, g["group_id"])
    return resp


def _heartbeat_refusal(code: int, message: str) -> dict[str, Any]:
    return {
        "throttle_time_ms": 0,
        "error_code": code,
        "error_message": message,
        "member_id": None,
        "member_epoch": 0,
        "heartbeat_interval_ms": 0,
        "assignment": None,
    }


async def consumer_group_heartbeat(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
    """READ on the group; DESCRIBE on every topic subscribed by name, as Kafka checks them."""
    if not c.group(Op.READ, req["group_id"]):
        return _heartbeat_refusal(GROUP_DENIED, "Group authorization failed.")
    names = req.get("subscribed_topic_names")
    if names:
        denied = sorted(n for n in set(names) if not c.topic(Op.DESCRIBE, n))
        if denied:
            return _heartbeat_refusal(
                TOPIC_DENIED,
                "The group has subscribed to topics the member is not authorized to: " + ", ".join(denied),
            )
    return await inner(req)


async def consumer_group_describe(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
    groups = list(req["group_ids"])
    kept = [g for g in groups if c.group(Op.DESCRIBE, g)]
    denied = [
        {
            "error_code": GROUP_DENIED,
            "error_message": "Group authorization failed.",
            "group_id": g,
            "group_state": "",
            "group_epoch": 0,
            "assignment_epoch": 0,
            "assignor_name": "",
            "members": [],
        }
        for g in groups
        if g not in kept
    ]
    if kept:
        req["group_ids"] = kept
        resp = await inner(req)
        assert resp is not None
    else:
        resp = {"throttle_time_ms": 0, "groups": []}
    resp["groups"] = _merge(groups, resp.get("groups") or [], denied, key="group_id")
    if req.get("include_authorized_operations"):
        for g in resp["groups"]:
            if g.get("error_code") == 0:
                g["authorized_operations"] = c.ops_bits(RT.GROUP, g["group_id"])
    return resp


async def list_groups(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
    resp = await inner(req)
    if resp is not None and not c.cluster(Op.DESCRIBE):
        resp["groups"] = [g for g in resp.get("groups") or [] if c.group(Op.DESCRIBE, g["group_id"])]
    return resp


delete_groups = _per_name_rule(
    lambda c, name: c.group(Op.DELETE, name),
    lambda c, req: [{"group_id": g} for g in req["groups_names"]],
    lambda c, req, kept: req.__setitem__("groups_names", [g["group_id"] for g in kept]),
    lambda c, g: {"group_id": g["group_id"], "error_code": GROUP_DENIED},
    lambda c, g: g["group_id"],
    "results",
    "group_id",
)


# ------------------------------------------------------------------------------------------ transactions


async def init_producer_id(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
    txn_id = req.get("transactional_id")
    if txn_id is not None:
        if c.txn(txn_id):
            return await inner(req)
        code = TXN_DENIED
    else:
        principal, host = c.ctx.principal, c.ctx.client_host
        if c.cluster(Op.IDEMPOTENT_WRITE) or c.authorizer.authorize_any(principal, host, Op.WRITE, RT.TOPIC):
            return await inner(req)
        code = CLUSTER_DENIED
    return {"throttle_time_ms": 0, "error_code": code, "producer_id": -1, "producer_epoch": -1}


async def add_partitions_to_txn(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
    if c.version >= 4:
        txns = req["transactions"]
        if all(c.txn(t["transactional_id"]) for t in txns) and all(
            c.topic(Op.WRITE, topic["name"]) for t in txns for topic in t["topics"]
        ):
            return await inner(req)
        return {
            "throttle_time_ms": 0,
            "error_code": 0,
            "results_by_transaction": [
                {
                    "transactional_id": t["transactional_id"],
                    "topic_results": _txn_partition_errors(c, t["transactional_id"], t["topics"]),
                }
                for t in txns
            ],
        }
    txn_id = req["v3_and_below_transactional_id"]
    topics = req["v3_and_below_topics"]
    if c.txn(txn_id) and all(c.topic(Op.WRITE, t["name"]) for t in topics):
        return await inner(req)
    return {"throttle_time_ms": 0, "results_by_topic_v3_and_below": _txn_partition_errors(c, txn_id, topics)}


def _txn_partition_errors(c: Check, txn_id: str, topics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Kafka fails the whole AddPartitionsToTxn: denied partitions get their error, the others
    OPERATION_NOT_ATTEMPTED."""
    txn_ok = c.txn(txn_id)
    out = []
    for t in topics:
        if not txn_ok:
            code = TXN_DENIED
        elif not c.topic(Op.WRITE, t["name"]):
            code = TOPIC_DENIED
        else:
            code = int(ErrorCode.OPERATION_NOT_ATTEMPTED)
        out.append(
            {
                "name": t["name"],
                "results_by_partition": [
                    {"partition_index": i, "partition_error_code": code} for i in t["partitions"]
                ],
            }
        )
    return out


async def txn_id_only(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
    """EndTxn, AddOffsetsToTxn: WRITE on the transactional id (and READ on the group for AddOffsetsToTxn)."""
    if not c.txn(req["transactional_id"]):
        return {"throttle_time_ms": 0, "error_code": TXN_DENIED}
    if "group_id" in req and not c.group(Op.READ, req["group_id"]):
        return {"throttle_time_ms": 0, "error_code": GROUP_DENIED}
    return await inner(req)


async def txn_offset_commit(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
    if not c.txn(req["transactional_id"]):
        return {"throttle_time_ms": 0, "topics": _partition_errors(req["topics"], TXN_DENIED)}
    if not c.group(Op.READ, req["group_id"]):
        return {"throttle_time_ms": 0, "topics": _partition_errors(req["topics"], GROUP_DENIED)}
    return await _topics_read(c, req, inner)


async def describe_transactions(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
    ids = list(req["transactional_ids"])
    kept = [t for t in ids if c.allowed(Op.DESCRIBE, RT.TRANSACTIONAL_ID, t)]
    if len(kept) == len(ids):
        return await inner(req)
    denied = [{"error_code": TXN_DENIED, "transactional_id": t, "topics": []} for t in ids if t not in kept]
    if kept:
        req["transactional_ids"] = kept
        resp = await inner(req)
        assert resp is not None
    else:
        resp = {"throttle_time_ms": 0, "transaction_states": []}
    resp["transaction_states"] = _merge(
        ids, resp.get("transaction_states") or [], denied, key="transactional_id"
    )
    return resp


async def list_transactions(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
    resp = await inner(req)
    if resp is not None:
        resp["transaction_states"] = [
            t
            for t in resp.get("transaction_states") or []
            if c.allowed(Op.DESCRIBE, RT.TRANSACTIONAL_ID, t["transactional_id"])
        ]
    return resp


async def cluster_action(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
    """APIs without a rule of their own are for the cluster's operators."""
    if c.cluster(Op.CLUSTER_ACTION):
        return await inner(req)
    return {"throttle_time_ms": 0, "error_code": CLUSTER_DENIED}


async def unchecked(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
    return await inner(req)


# ------------------------------------------------------------------------------------ replicas, features


async def describe_topic_partitions(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
    """Topics named but not describable answer TOPIC_AUTHORIZATION_FAILED after the others; all topics lists
    only the describable ones (Kafka's DescribeTopicPartitions handler)."""
    fetch_all = not req["topics"]
    denied: list[dict[str, Any]] = []
    if not fetch_all:
        kept = [t for t in req["topics"] if c.topic(Op.DESCRIBE, t["name"])]
        denied = [
            {
                "error_code": TOPIC_DENIED,
                "name": t["name"],
                "topic_id": uuid.UUID(int=0),
                "is_internal": False,
                "partitions": [],
            }
            for t in req["topics"]
            if t not in kept
        ]
        if not kept:
            return {"throttle_time_ms": 0, "topics": denied, "next_cursor": None}
        req["topics"] = kept
    resp = await inner(req)
    if resp is None:
        return None
    topics = resp.get("topics") or []
    if fetch_all:
        topics = [t for t in topics if c.topic(Op.DESCRIBE, t["name"])]
    for t in topics:
        if t.get("error_code") == 0:
            t["topic_authorized_operations"] = c.ops_bits(RT.TOPIC, t["name"])
    resp["topics"] = topics + denied
    return resp


def cluster_op_rule(op: AclOperation, deny: Callable[[dict[str, Any]], dict[str, Any]]) -> Rule:
    """The whole request needs ``op`` on the cluster; ``deny`` builds Kafka's answer when it is refused."""

    async def rule(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
        if c.cluster(op):
            return await inner(req)
        return deny(req)

    return rule


def elect_leaders_denied(req: dict[str, Any]) -> dict[str, Any]:
    return {
        "throttle_time_ms": 0,
        "error_code": CLUSTER_DENIED,
        "replica_election_results": [
            {
                "topic": t["topic"],
                "partition_result": [
                    {"partition_id": p, "error_code": CLUSTER_DENIED, "error_message": None}
                    for p in t["partitions"]
                ],
            }
            for t in req["topic_partitions"] or []
        ],
    }


def alter_reassignments_denied(req: dict[str, Any]) -> dict[str, Any]:
    return {
        "throttle_time_ms": 0,
        "allow_replication_factor_change": req.get("allow_replication_factor_change", True),
        "error_code": CLUSTER_DENIED,
        "error_message": None,
        "responses": [
            {
                "name": t["name"],
                "partitions": [
                    {
                        "partition_index": p["partition_index"],
                        "error_code": CLUSTER_DENIED,
                        "error_message": None,
                    }
                    for p in t["partitions"]
                ],
            }
            for t in req["topics"]
        ],
    }


def list_reassignments_denied(req: dict[str, Any]) -> dict[str, Any]:
    return {
        "throttle_time_ms": 0,
        "error_code": CLUSTER_DENIED,
        "error_message": None,
        "topics": [
            {"name": t["name"], "partitions": [{"partition_index": i} for i in t["partition_indexes"]]}
            for t in req["topics"] or []
        ],
    }


def update_features_denied(req: dict[str, Any]) -> dict[str, Any]:
    return {"throttle_time_ms": 0, "error_code": CLUSTER_DENIED, "error_message": None, "results": []}


# ------------------------------------------------------------------------------------- share groups (KIP-932)


async def _share_group_heartbeat(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
    """READ on the group; DESCRIBE on every subscribed topic (TOPIC_AUTHORIZATION_FAILED), as Kafka."""
    if not c.group(Op.READ, req["group_id"]):
        return _heartbeat_refusal(GROUP_DENIED, "Group authorization failed.")
    names = req.get("subscribed_topic_names")
    if names:
        denied = sorted(n for n in set(names) if not c.topic(Op.DESCRIBE, n))
        if denied:
            return _heartbeat_refusal(
                TOPIC_DENIED,
                "The group has subscribed to topics the member is not authorized to: " + ", ".join(denied),
            )
    return await inner(req)


async def _share_group_describe(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
    """DESCRIBE on each group."""
    return await consumer_group_describe(c, req, inner)


def _share_denied_partition(index: int, acked: bool, fetch: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "partition_index": index,
        "error_code": TOPIC_DENIED,
        "error_message": "Topic authorization failed.",
        "current_leader": {"leader_id": -1, "leader_epoch": -1},
    }
    if fetch:
        entry.update(
            acknowledge_error_code=TOPIC_DENIED if acked else 0,
            acknowledge_error_message=None,
            records=b"",
            acquired_records=[],
        )
    return entry


def _share_partitions_rule(fetch: bool) -> Rule:
    """ShareFetch, ShareAcknowledge: READ on the group for the whole request, READ on each topic for its
    partitions (TOPIC_AUTHORIZATION_FAILED, their acknowledgements not applied)."""

    async def rule(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
        if not c.group(Op.READ, req.get("group_id") or ""):
            resp: dict[str, Any] = {
                "throttle_time_ms": 0,
                "error_code": GROUP_DENIED,
                "error_message": "Group authorization failed.",
                "acquisition_lock_timeout_ms": 0,
                "responses": [],
                "node_endpoints": [],
            }
            return resp
        kept_topics = []
        denied: dict[Any, list[dict[str, Any]]] = {}
        for t in req.get("topics") or []:
            name = c.topic_name_by_id(t["topic_id"])
            if name is None or c.topic(Op.READ, name):
                kept_topics.append(t)
            else:
                denied[t["topic_id"]] = [
                    _share_denied_partition(
                        p["partition_index"], bool(p.get("acknowledgement_batches")), fetch
                    )
                    for p in t.get("partitions") or []
                ]
        if not denied:
            return await inner(req)
        req["topics"] = kept_topics
        resp_inner = await inner(req)
        if resp_inner is None:
            return None
        if resp_inner.get("error_code"):
            return resp_inner
        responses = resp_inner.setdefault("responses", [])
        for topic_id, parts in denied.items():
            responses.append({"topic_id": topic_id, "partitions": parts})
        return resp_inner

    return rule


def _share_offsets_rule(group_op: AclOperation, topic_op: AclOperation) -> Rule:
    """AlterShareGroupOffsets (READ, READ) and DeleteShareGroupOffsets (DELETE, READ): ``group_op`` on the
    group for the whole request, ``topic_op`` on each topic (TOPIC_AUTHORIZATION_FAILED)."""

    async def rule(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
        if not c.group(group_op, req.get("group_id") or ""):
            return {
                "throttle_time_ms": 0,
                "error_code": GROUP_DENIED,
                "error_message": "Group authorization failed.",
                "responses": [],
            }
        topics = list(req.get("topics") or [])
        kept = [t for t in topics if c.topic(topic_op, t["topic_name"])]
        if len(kept) == len(topics):
            return await inner(req)
        denied = []
        for t in topics:
            if t in kept:
                continue
            entry: dict[str, Any] = {
                "topic_name": t["topic_name"],
                "topic_id": uuid.UUID(int=0),
                "error_code": TOPIC_DENIED,
                "error_message": "Topic authorization failed.",
            }
            if "partitions" in t:  # AlterShareGroupOffsets answers per partition
                entry = {
                    "topic_name": t["topic_name"],
                    "topic_id": uuid.UUID(int=0),
                    "partitions": [
                        {
                            "partition_index": p["partition_index"],
                            "error_code": TOPIC_DENIED,
                            "error_message": "Topic authorization failed.",
                        }
                        for p in t["partitions"]
                    ],
                }
            denied.append(entry)
        req["topics"] = kept
        resp = await inner(req)
        if resp is None or resp.get("error_code"):
            return resp
        resp["responses"] = _merge(
            [t["topic_name"] for t in topics], resp.get("responses") or [], denied, key="topic_name"
        )
        return resp

    return rule


async def _describe_share_group_offsets(c: Check, req: dict[str, Any], inner: Inner) -> dict[str, Any] | None:
    """DESCRIBE on each group (GROUP_AUTHORIZATION_FAILED) and on each topic (TOPIC_AUTHORIZATION_FAILED per
    partition; a request for all topics lists only those the principal may describe)."""
    groups = list(req.get("groups") or [])
    kept = [g for g in groups if c.group(Op.DESCRIBE, g["group_id"])]
    denied_topics: dict[str, list[dict[str, Any]]] = {}
    for g in kept:
        if g.get("topics") is None:
            continue
        ok = [t for t in g["topics"] if c.topic(Op.DESCRIBE, t["topic_name"])]
        denied_topics[g["group_id"]] = [
            {
                "topic_name": t["topic_name"],
                "topic_id": uuid.UUID(int=0),
                "partitions": [
                    {
                        "partition_index": p,
                        "start_offset": -1,
                        "leader_epoch": -1,
                        "lag": -1,
                        "error_code": TOPIC_DENIED,
                        "error_message": "Topic authorization failed.",
                    }
                    for p in t["partitions"]
                ],
            }
            for t in g["topics"]
            if t not in ok
        ]
        g["topics"] = ok
    if kept:
        req["groups"] = kept
        resp = await inner(req)
        if resp is None:
            return None
    else:
        resp = {"throttle_time_ms": 0, "groups": []}
    for g in resp["groups"]:
        topics = [t for t in g.get("topics") or [] if c.topic(Op.DESCRIBE, t["topic_name"])]
        g["topics"] = topics + denied_topics.get(g["group_id"], [])
    denied_groups = [
        {"group_id": g["group_id"], "topics": [], "error_code": GROUP_DENIED, "error_message": None}
        for g in groups
        if g not in kept
    ]
    resp["groups"] = _merge([g["group_id"] for g in groups], resp["groups"], denied_groups, key="group_id")
    return resp


share_group_heartbeat: Rule = _share_group_heartbeat
share_group_describe: Rule = _share_group_describe
share_fetch: Rule = _share_partitions_rule(fetch=True)
share_acknowledge: Rule = _share_partitions_rule(fetch=False)
describe_share_group_offsets: Rule = _describe_share_group_offsets
alter_share_group_offsets: Rule = _share_offsets_rule(Op.READ, Op.READ)
delete_share_group_offsets: Rule = _share_offsets_rule(Op.DELETE, Op.READ)


def wrap(authorizer: AclAuthorizer, rule: Rule, handler: Handler) -> Handler:
    """``handler`` behind ``rule``'s ACL checks (``unchecked``: the handler itself)."""
    if rule is unchecked:
        return handler

    async def authorized(b: Broker, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any] | None:
        authorizer.allow_if_no_acl = bool(b.config["allow.everyone.if.no.acl.found"])

        async def inner(r: dict[str, Any]) -> dict[str, Any] | None:
            return await handler(b, ctx, r)

        return await rule(Check(b, authorizer, ctx), req, inner)

    authorized.__name__ = getattr(handler, "__name__", "handler")
    authorized.__doc__ = getattr(handler, "__doc__", None)
    return authorized


def install_authorizer(broker: Broker, rules: dict[int, Rule]) -> None:
    """Wrap every handler with its ACL checks (``rules``: each API's rule, as ``kafkite.broker.apis``
    declares it) when an authorizer is configured; otherwise change nothing. Call after every handler is
    registered."""
    authorizer = security_of(broker).authorizer
    if authorizer is None:
        return
    for key, handler in list(broker.handlers.items()):
        broker.handlers[key] = wrap(authorizer, rules[key], handler)
    log.info(
        "ACL authorizer on: %d ACLs, super users %s, allow.everyone.if.no.acl.found=%s",
        len(authorizer.acls()),
        ", ".join(sorted(authorizer.super_users)) or "none",
        broker.config["allow.everyone.if.no.acl.found"],
    )
