"""The OCI Streaming REST API (version 20180418) on the shared REST listener: the admin API (stream pools,
streams, work requests) and the message API (PutMessages, cursors, GetMessages, groups), JSON as OCI has it.

Every response carries ``opc-request-id``; errors are ``{"code": ..., "message": ...}`` with OCI's statuses.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Middleware

from kafkite.broker.core import Broker
from kafkite.config import ConfigError
from kafkite.doors import (
    Caller,
    PrincipalMap,
    audit_change,
    audit_unauthenticated,
    authorize,
    oci_principal,
    principal_mapper,
)
from kafkite.doors.audit import FAILED, OK
from kafkite.protocol import records
from kafkite.rest.guard import CALLER_KEY, BadJson, parse_json, read_body
from kafkite.security.acl import AclOperation, ResourceType
from kafkite.streaming import cursors, limits
from kafkite.streaming.auth import AuthError, Verifier, load_keys
from kafkite.streaming.groups import DEFAULT_TIMEOUT_MS, GroupError, GroupManager
from kafkite.streaming.messages import partition_for_key, put_messages, read_records
from kafkite.streaming.pools import (
    CatalogError,
    DeletedStream,
    StreamCatalog,
    StreamPool,
    StreamView,
    WorkRequest,
    catalog_of,
    internal_group_id,
    split_internal_name,
)

log = logging.getLogger("kafkite.streaming")

API = "/20180418"
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 50
MAX_GET_LIMIT = 10_000

Json = dict[str, Any]
T = TypeVar("T")
Op = AclOperation
RT = ResourceType
CLUSTER = "kafka-cluster"
OPERATION_KEY = web.RequestKey("kafkite.operation", str)
DENIED_KEY = web.RequestKey("kafkite.denied", bool)  # refused and already in the audit trail
# (resource type, name, before, after) of a control-plane change, for the audit trail
AUDIT_KEY: web.RequestKey[tuple[str, str, Any, Any]] = web.RequestKey("kafkite.audit")
MOUNTED_KEY = web.RequestKey("kafkite.streaming.mounted", bool)  # served by another door (see mount)

# Handler name -> OCI operation name; the control-plane ones are recorded in the audit trail.
OPERATIONS = {
    "create_pool": "CreateStreamPool",
    "list_pools": "ListStreamPools",
    "get_pool": "GetStreamPool",
    "update_pool": "UpdateStreamPool",
    "delete_pool": "DeleteStreamPool",
    "change_pool_compartment": "ChangeStreamPoolCompartment",
    "create_stream": "CreateStream",
    "list_streams": "ListStreams",
    "get_stream": "GetStream",
    "update_stream": "UpdateStream",
    "delete_stream": "DeleteStream",
    "change_stream_compartment": "ChangeStreamCompartment",
    "list_work_requests": "ListWorkRequests",
    "get_work_request": "GetWorkRequest",
    "work_request_errors": "ListWorkRequestErrors",
    "work_request_logs": "ListWorkRequestLogs",
    "put": "PutMessages",
    "get": "GetMessages",
    "create_cursor": "CreateCursor",
    "create_group_cursor": "CreateGroupCursor",
    "get_group": "GetGroup",
    "update_group": "UpdateGroup",
    "commit": "ConsumerCommit",
    "heartbeat": "ConsumerHeartbeat",
}
CONTROL_OPERATIONS = frozenset(
    {
        "CreateStreamPool",
        "UpdateStreamPool",
        "DeleteStreamPool",
        "ChangeStreamPoolCompartment",
        "CreateStream",
        "UpdateStream",
        "DeleteStream",
        "ChangeStreamCompartment",
        "UpdateGroup",
    }
)


class OciError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def bad(message: str) -> OciError:
    return OciError(400, "InvalidParameter", message)


def not_found(what: str) -> OciError:
    return OciError(404, "NotAuthorizedOrNotFound", f"{what} not found or not authorized")


# ---------------------------------------------------------------------------------------------- helpers


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_time(value: object) -> int:
    if not isinstance(value, str) or not value:
        raise bad("time must be an RFC 3339 timestamp")
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise bad(f"invalid time {value!r}: expected RFC 3339") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def b64decode(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise bad(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        try:
            return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            raise bad(f"{what} is not valid base64") from None


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


async def read_json(request: web.Request) -> Json:
    try:
        body = await read_body(request)
        if not body:
            raise bad("a JSON request body is required")
        obj = parse_json(body)
    except BadJson as e:
        raise bad(str(e)) from None
    if not isinstance(obj, dict):
        raise bad("the request body must be a JSON object")
    return obj


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None, etag: bool = False
) -> web.Response:
    text = json.dumps(data)
    h = dict(headers or {})
    if etag:
        h["etag"] = hashlib.sha256(text.encode()).hexdigest()[:32]
    return web.Response(text=text, status=status, content_type="application/json", headers=h)


def _int_param(request: web.Request, name: str, default: int | None = None) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise bad(f"{name} must be an integer") from None


def paginate(request: web.Request, items: list[T]) -> tuple[list[T], dict[str, str]]:
    limit = _int_param(request, "limit", DEFAULT_PAGE_SIZE)
    assert limit is not None
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise bad(f"limit must be between 1 and {MAX_PAGE_SIZE}")
    page = request.query.get("page")
    start = 0
    if page:
        try:
            start = int(page)
        except ValueError:
            raise bad("invalid page token") from None
    chunk = items[start : start + limit]
    headers = {}
    if start + limit < len(items):
        headers["opc-next-page"] = str(start + limit)
    return chunk, headers


def sort_items(
    request: web.Request, items: list[T], name: Callable[[T], str], created: Callable[[T], int]
) -> None:
    by = request.query.get("sortBy", "TIMECREATED")
    if by not in ("NAME", "TIMECREATED"):
        raise bad("sortBy must be NAME or TIMECREATED")
    order = request.query.get("sortOrder", "ASC" if by == "NAME" else "DESC")
    if order not in ("ASC", "DESC"):
        raise bad("sortOrder must be ASC or DESC")
    items.sort(
        key=(lambda x: name(x)) if by == "NAME" else (lambda x: (created(x), name(x))),
        reverse=order == "DESC",
    )


# ---------------------------------------------------------------------------------------------- JSON views


def kafka_settings(broker: Broker, pool: StreamPool) -> Json:
    host, port = broker.advertised
    return {
        "bootstrapServers": f"{host}:{port}",
        "autoCreateTopicsEnable": pool.auto_create_topics_enable,
        "logRetentionHours": pool.log_retention_hours,
        "numPartitions": pool.num_partitions,
    }


def pool_json(broker: Broker, pool: StreamPool, state: str | None = None, summary: bool = False) -> Json:
    out: Json = {
        "id": pool.id,
        "compartmentId": pool.compartment_id,
        "name": pool.name,
        "lifecycleState": state or pool.lifecycle_state,
        "timeCreated": iso(pool.time_created_ms),
        "isPrivate": False,
        "freeformTags": pool.freeform_tags,
        "definedTags": pool.defined_tags,
    }
    if not summary:
        host, _ = broker.advertised
        out.update(
            lifecycleStateDetails=None,
            kafkaSettings=kafka_settings(broker, pool),
            customEncryptionKey={"kmsKeyId": None, "keyState": "NONE"},
            endpointFqdn=host,
            privateEndpointSettings=None,
        )
    return out


def stream_json(
    messages_endpoint: str, s: StreamView, state: str | None = None, summary: bool = False
) -> Json:
    out: Json = {
        "name": s.name,
        "id": s.id,
        "partitions": s.partitions,
        "compartmentId": s.compartment_id,
        "streamPoolId": s.pool.id,
        "lifecycleState": state or s.lifecycle_state,
        "timeCreated": iso(s.time_created_ms),
        "messagesEndpoint": messages_endpoint,
        "freeformTags": s.freeform_tags,
        "definedTags": s.defined_tags,
    }
    if not summary:
        out["retentionInHours"] = s.retention_hours
        out["lifecycleStateDetails"] = None
    return out


def deleted_stream_json(messages_endpoint: str, d: DeletedStream, summary: bool = False) -> Json:
    out: Json = {
        "name": d["name"],
        "id": d["id"],
        "partitions": d["partitions"],
        "compartmentId": d["compartment_id"],
        "streamPoolId": d["pool_id"],
        "lifecycleState": "DELETED",
        "timeCreated": iso(int(d["time_created_ms"])),
        "messagesEndpoint": messages_endpoint,
        "freeformTags": d.get("freeform_tags", {}),
        "definedTags": d.get("defined_tags", {}),
    }
    if not summary:
        out["retentionInHours"] = d["retention_hours"]
        out["lifecycleStateDetails"] = None
    return out


def work_request_json(wr: WorkRequest) -> Json:
    return {
        "operationType": wr.operation_type,
        "status": "SUCCEEDED",
        "id": wr.id,
        "compartmentId": wr.compartment_id,
        "resources": [
            {
                "entityType": wr.entity_type,
                "actionType": wr.action_type,
                "identifier": wr.identifier,
                "entityUri": wr.entity_uri,
            }
        ],
        "percentComplete": 100.0,
        "timeAccepted": iso(wr.time_ms),
        "timeStarted": iso(wr.time_ms),
        "timeFinished": iso(wr.time_ms),
    }


def _freeform_tags(body: Json) -> dict[str, str] | None:
    """``freeformTags``: an object of strings, or absent."""
    value = body.get("freeformTags")
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise bad("freeformTags must be an object of strings")
    return value


def _defined_tags(body: Json) -> dict[str, Any] | None:
    """``definedTags``: an object of namespaces, each an object of tags (whose values may be any JSON)."""
    value = body.get("definedTags")
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise bad("definedTags must be an object of objects")
    return value


def _opt_int(body: Json, name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad(f"{name} must be an integer")
    return value


def _changed(a: Json, b: Json) -> Json:
    """The fields of ``a`` whose values differ in ``b`` (before/after of an update, for the audit trail)."""
    return {k: v for k, v in a.items() if b.get(k) != v and k != "lifecycleState"}


def _group_name(group_id: str) -> str:
    """A group as the clients of its pool name it (ACLs name it so)."""
    return split_internal_name(group_id)[1]


def _opt_bool(body: Json, name: str) -> bool | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise bad(f"{name} must be a boolean")
    return value


# ---------------------------------------------------------------------------------------------- service


class StreamingApi:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.catalog: StreamCatalog = catalog_of(broker)
        self.groups = GroupManager(broker)
        self.verifier: Verifier | None = None
        self.principals: PrincipalMap | None = None

    # -------------------------------------------------------------- authorization

    def allow(self, request: web.Request, op: AclOperation, rtype: ResourceType, name: str) -> None:
        """Refuse (404 NotAuthorizedOrNotFound, recorded in the audit trail) unless the caller may."""
        caller: Caller = request[CALLER_KEY]
        if not authorize(self.broker, caller, op, rtype, name, operation=request[OPERATION_KEY]):
            request[DENIED_KEY] = True
            raise OciError(
                404,
                "NotAuthorizedOrNotFound",
                f"{caller.name} is not authorized to {op.name} {rtype.name.lower()} {name}",
            )

    def may(self, request: web.Request, op: AclOperation, rtype: ResourceType, name: str) -> bool:
        """The same question, silently (listings show only what the caller may see)."""
        caller: Caller = request[CALLER_KEY]
        return authorize(self.broker, caller, op, rtype, name, operation="", audit_denial=False)

    def pool_visible(self, request: web.Request, pool: StreamPool) -> bool:
        """A pool is seen by whoever may describe the cluster or one of the pool's streams."""
        return self.may(request, Op.DESCRIBE, RT.CLUSTER, CLUSTER) or any(
            self.may(request, Op.DESCRIBE, RT.TOPIC, s.name) for s in self.catalog.streams(pool)
        )

    def allow_pool(self, request: web.Request, pool: StreamPool) -> None:
        if not self.pool_visible(request, pool):
            self.allow(request, Op.DESCRIBE, RT.CLUSTER, CLUSTER)

    def allow_create_stream(self, request: web.Request, name: str) -> None:
        """CreateTopics' rule: CREATE on the cluster or on the topic."""
        if not self.may(request, Op.CREATE, RT.CLUSTER, CLUSTER):
            self.allow(request, Op.CREATE, RT.TOPIC, name)

    @staticmethod
    def audit(request: web.Request, rtype: str, name: str, before: Any = None, after: Any = None) -> None:
        request[AUDIT_KEY] = (rtype, name, before, after)

    @property
    def oci(self) -> bool:
        return limits.oci_profile(self.broker)

    def endpoint(self, request: web.Request) -> str:
        if self.broker.rest_urls:
            return self.broker.rest_urls[0]
        if request.get(MOUNTED_KEY):
            return ""  # another door serves these routes, and no REST listener serves the messages API
        return f"{request.scheme}://{request.host}"

    def _wr(
        self, request: web.Request, op: str, compartment: str, entity: str, action: str, ident: str
    ) -> str:
        uri = f"{API}/{'streams' if entity == 'stream' else 'streampools'}/{ident}"
        return self.catalog.record_work_request(op, compartment, entity, action, ident, uri).id

    def _check_partitions(self, partitions: int | None) -> None:
        limit: int = self.broker.config["topic.max.partitions"]
        if partitions is not None and partitions > limit:
            raise bad(f"a stream may have at most {limit} partitions (topic.max.partitions)")

    def _check_retention(self, hours: int | None) -> None:
        if hours is None:
            return
        if hours < 1:
            raise bad("retentionInHours must be positive")
        if self.oci:
            why = limits.check_retention_hours(hours)
            if why:
                raise bad(why)

    # -------------------------------------------------------------- stream pools

    async def create_pool(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        self.audit(request, "stream-pool", str(body.get("name")))
        self.allow(request, Op.CREATE, RT.CLUSTER, CLUSTER)
        name = body.get("name")
        compartment = body.get("compartmentId")
        if not isinstance(name, str) or not isinstance(compartment, str) or not compartment:
            raise bad("name and compartmentId are required")
        ks = body.get("kafkaSettings") or {}
        if not isinstance(ks, dict):
            raise bad("kafkaSettings must be an object")
        retention = _opt_int(ks, "logRetentionHours")
        self._check_retention(retention)
        partitions = _opt_int(ks, "numPartitions")
        if partitions is not None and partitions < 1:
            raise bad("numPartitions must be at least 1")
        self._check_partitions(partitions)
        pool = self.catalog.create_pool(
            name,
            compartment,
            auto_create_topics_enable=_opt_bool(ks, "autoCreateTopicsEnable"),
            num_partitions=partitions,
            log_retention_hours=retention,
            freeform_tags=_freeform_tags(body),
            defined_tags=_defined_tags(body),
        )
        self.audit(request, "stream-pool", pool.id, after={"name": pool.name, "compartmentId": compartment})
        wr = self._wr(request, "CREATE_STREAM_POOL", compartment, "streampool", "CREATED", pool.id)
        return json_response(
            pool_json(self.broker, pool, state="CREATING"), headers={"opc-work-request-id": wr}, etag=True
        )

    async def list_pools(self, request: web.Request) -> web.Response:
        compartment = request.query.get("compartmentId")
        if not compartment:
            raise bad("compartmentId is required")
        # The default pool is listed in every compartment (OCI keeps one per compartment).
        items = [p for p in self.catalog.pools() if p.compartment_id == compartment or p.is_default]
        state = request.query.get("lifecycleState")
        items = (
            [p for p in items if p.lifecycle_state == state]
            if state
            else [p for p in items if p.lifecycle_state != "DELETED"]
        )
        if "id" in request.query:
            items = [p for p in items if p.id == request.query["id"]]
        if "name" in request.query:
            items = [p for p in items if p.name == request.query["name"]]
        items = [p for p in items if self.pool_visible(request, p)]
        sort_items(request, items, lambda p: p.name, lambda p: p.time_created_ms)
        page, headers = paginate(request, items)
        return json_response([pool_json(self.broker, p, summary=True) for p in page], headers=headers)

    def _pool(self, request: web.Request) -> StreamPool:
        pool = self.catalog.pool(request.match_info["poolId"])
        if pool is None:
            raise not_found("stream pool")
        return pool

    async def get_pool(self, request: web.Request) -> web.Response:
        pool = self._pool(request)
        self.allow_pool(request, pool)
        return json_response(pool_json(self.broker, pool), etag=True)

    async def update_pool(self, request: web.Request) -> web.Response:
        pool = self._pool(request)
        self.audit(request, "stream-pool", pool.id)
        self.allow(request, Op.ALTER, RT.CLUSTER, CLUSTER)
        before = pool_json(self.broker, pool)
        if pool.lifecycle_state != "ACTIVE":
            raise OciError(409, "IncorrectState", f"stream pool is {pool.lifecycle_state}")
        body = await read_json(request)
        ks = body.get("kafkaSettings") or {}
        if not isinstance(ks, dict):
            raise bad("kafkaSettings must be an object")
        retention = _opt_int(ks, "logRetentionHours")
        self._check_retention(retention)
        pool_partitions = _opt_int(ks, "numPartitions")
        if pool_partitions is not None and pool_partitions < 1:
            raise bad("numPartitions must be at least 1")
        self._check_partitions(pool_partitions)
        name = body.get("name")
        if name is not None and (not isinstance(name, str) or not name):
            raise bad("name must be a non-empty string")
        self.catalog.update_pool(
            pool,
            name=name,
            auto_create_topics_enable=_opt_bool(ks, "autoCreateTopicsEnable"),
            num_partitions=_opt_int(ks, "numPartitions"),
            log_retention_hours=retention,
            freeform_tags=_freeform_tags(body),
            defined_tags=_defined_tags(body),
        )
        wr = self._wr(request, "UPDATE_STREAM_POOL", pool.compartment_id, "streampool", "UPDATED", pool.id)
        after = pool_json(self.broker, pool)
        self.audit(request, "stream-pool", pool.id, _changed(before, after), _changed(after, before))
        return json_response(after, headers={"opc-work-request-id": wr}, etag=True)

    async def delete_pool(self, request: web.Request) -> web.Response:
        pool = self._pool(request)
        self.audit(request, "stream-pool", pool.id)
        if pool.lifecycle_state == "DELETED":
            raise not_found("stream pool")
        self.allow(request, Op.ALTER, RT.CLUSTER, CLUSTER)
        streams = self.catalog.streams(pool)
        for s in streams:
            self.allow(request, Op.DELETE, RT.TOPIC, s.name)
        self.audit(
            request, "stream-pool", pool.id, before={"name": pool.name, "streams": [s.name for s in streams]}
        )
        try:
            for s in self.catalog.streams(pool):
                self.groups.forget_topic(s.topic)
            self.catalog.delete_pool(pool)
        except CatalogError as e:
            raise OciError(e.status, e.code, e.message) from None
        wr = self._wr(request, "DELETE_STREAM_POOL", pool.compartment_id, "streampool", "DELETED", pool.id)
        return web.Response(status=202, headers={"opc-work-request-id": wr})

    async def change_pool_compartment(self, request: web.Request) -> web.Response:
        pool = self._pool(request)
        self.audit(request, "stream-pool", pool.id)
        self.allow(request, Op.ALTER, RT.CLUSTER, CLUSTER)
        body = await read_json(request)
        compartment = body.get("compartmentId")
        if not isinstance(compartment, str) or not compartment:
            raise bad("compartmentId is required")
        self.audit(
            request,
            "stream-pool",
            pool.id,
            {"compartmentId": pool.compartment_id},
            {"compartmentId": compartment},
        )
        pool.compartment_id = compartment
        self.catalog.update_pool(pool)
        wr = self._wr(request, "UPDATE_STREAM_POOL", compartment, "streampool", "UPDATED", pool.id)
        return web.Response(status=200, headers={"opc-work-request-id": wr})

    # -------------------------------------------------------------- streams

    async def create_stream(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        name = body.get("name")
        self.audit(request, "stream", str(name))
        partitions = _opt_int(body, "partitions")
        if not isinstance(name, str) or partitions is None:
            raise bad("name and partitions are required")
        self.allow_create_stream(request, name)
        pool_id = body.get("streamPoolId")
        compartment = body.get("compartmentId")
        if pool_id is not None:
            pool = self.catalog.pool(str(pool_id))
            if pool is None or pool.lifecycle_state != "ACTIVE":
                raise not_found("stream pool")
        elif isinstance(compartment, str) and compartment:
            pool = self.catalog.default_pool
        else:
            raise bad("one of compartmentId and streamPoolId is required")
        self._check_partitions(partitions)
        retention = _opt_int(body, "retentionInHours")
        if self.oci and retention is None:
            retention = limits.MIN_RETENTION_HOURS
        self._check_retention(retention)
        try:
            view = self.catalog.create_stream(
                pool,
                name,
                partitions,
                retention if retention is not None else 24,
                compartment if isinstance(compartment, str) and compartment else None,
                freeform_tags=_freeform_tags(body),
                defined_tags=_defined_tags(body),
            )
        except CatalogError as e:
            raise OciError(e.status, e.code, e.message) from None
        self.audit(
            request,
            "stream",
            view.name,
            after={"id": view.id, "streamPoolId": view.pool.id, "partitions": view.partitions},
        )
        wr = self._wr(request, "CREATE_STREAM", view.compartment_id, "stream", "CREATED", view.id)
        return json_response(
            stream_json(self.endpoint(request), view, state="CREATING"),
            headers={"opc-work-request-id": wr},
            etag=True,
        )

    async def list_streams(self, request: web.Request) -> web.Response:
        compartment = request.query.get("compartmentId")
        pool_id = request.query.get("streamPoolId")
        if bool(compartment) == bool(pool_id):
            raise bad("exactly one of compartmentId and streamPoolId is required")
        endpoint = self.endpoint(request)
        state = request.query.get("lifecycleState")
        items: list[Json] = []
        if pool_id:
            pool = self.catalog.pool(pool_id)
            if pool is None:
                raise not_found("stream pool")
            views = self.catalog.streams(pool)
        else:
            views = [v for v in self.catalog.streams() if v.compartment_id == compartment]
        if state in (None, "ACTIVE"):
            items = [stream_json(endpoint, v, summary=True) for v in views]
        if state == "DELETED":
            items = [
                deleted_stream_json(endpoint, d, summary=True)
                for d in self.catalog.deleted_streams()
                if (pool_id and d["pool_id"] == pool_id)
                or (compartment and d["compartment_id"] == compartment)
            ]
        if "id" in request.query:
            items = [s for s in items if s["id"] == request.query["id"]]
        if "name" in request.query:
            items = [s for s in items if s["name"] == request.query["name"]]
        items = [s for s in items if self.may(request, Op.DESCRIBE, RT.TOPIC, s["name"])]
        sort_items(request, items, lambda s: s["name"], lambda s: s["timeCreated"])
        page, headers = paginate(request, items)
        return json_response(page, headers=headers)

    def _stream(self, request: web.Request) -> StreamView:
        view = self.catalog.stream(request.match_info["streamId"])
        if view is None:
            raise not_found("stream")
        return view

    async def get_stream(self, request: web.Request) -> web.Response:
        stream_id = request.match_info["streamId"]
        view = self.catalog.stream(stream_id)
        if view is None:
            deleted = self.catalog.deleted_stream(stream_id)
            if deleted is None:
                raise not_found("stream")
            self.allow(request, Op.DESCRIBE, RT.TOPIC, str(deleted["name"]))
            return json_response(deleted_stream_json(self.endpoint(request), deleted), etag=True)
        self.allow(request, Op.DESCRIBE, RT.TOPIC, view.name)
        return json_response(stream_json(self.endpoint(request), view), etag=True)

    async def update_stream(self, request: web.Request) -> web.Response:
        view = self._stream(request)
        self.audit(request, "stream", view.name)
        self.allow(request, Op.ALTER, RT.TOPIC, view.name)
        before = stream_json("", view)
        body = await read_json(request)
        if body.get("streamPoolId") not in (None, view.pool.id):
            raise OciError(409, "IncorrectState", "a stream cannot be moved to another stream pool")
        for forbidden in ("partitions", "retentionInHours"):
            if forbidden in body:
                raise bad(f"{forbidden} is fixed when a stream is created")
        self.catalog.update_stream(view, freeform_tags=_freeform_tags(body), defined_tags=_defined_tags(body))
        wr = self._wr(request, "UPDATE_STREAM", view.compartment_id, "stream", "UPDATED", view.id)
        after = stream_json("", view)
        self.audit(request, "stream", view.name, _changed(before, after), _changed(after, before))
        return json_response(
            stream_json(self.endpoint(request), view), headers={"opc-work-request-id": wr}, etag=True
        )

    async def delete_stream(self, request: web.Request) -> web.Response:
        view = self._stream(request)
        self.audit(request, "stream", view.name)
        self.allow(request, Op.DELETE, RT.TOPIC, view.name)
        self.audit(request, "stream", view.name, before={"id": view.id, "partitions": view.partitions})
        self.groups.forget_topic(view.topic)
        self.catalog.delete_stream(view)
        wr = self._wr(request, "DELETE_STREAM", view.compartment_id, "stream", "DELETED", view.id)
        return web.Response(status=202, headers={"opc-work-request-id": wr})

    async def change_stream_compartment(self, request: web.Request) -> web.Response:
        view = self._stream(request)
        self.audit(request, "stream", view.name)
        self.allow(request, Op.ALTER, RT.TOPIC, view.name)
        body = await read_json(request)
        compartment = body.get("compartmentId")
        if not isinstance(compartment, str) or not compartment:
            raise bad("compartmentId is required")
        self.audit(
            request,
            "stream",
            view.name,
            {"compartmentId": view.compartment_id},
            {"compartmentId": compartment},
        )
        meta = self.broker.topic(view.topic)
        assert meta is not None
        self.catalog.update_stream(view, compartment_id=compartment)
        wr = self._wr(request, "UPDATE_STREAM", compartment, "stream", "UPDATED", view.id)
        return web.Response(status=200, headers={"opc-work-request-id": wr})

    # -------------------------------------------------------------- work requests

    def _work_request_visible(self, request: web.Request, wr: WorkRequest) -> bool:
        if wr.entity_type == "stream":
            view = self.catalog.stream(wr.identifier)
            deleted = self.catalog.deleted_stream(wr.identifier) if view is None else None
            name = view.name if view is not None else deleted["name"] if deleted is not None else None
            if name is not None:
                return self.may(request, Op.DESCRIBE, RT.TOPIC, name)
        else:
            pool = self.catalog.pool(wr.identifier)
            if pool is not None:
                return self.pool_visible(request, pool)
        return self.may(request, Op.DESCRIBE, RT.CLUSTER, CLUSTER)

    def _work_request(self, request: web.Request) -> WorkRequest:
        wr = self.catalog.work_request(request.match_info["workRequestId"])
        if wr is None:
            raise not_found("work request")
        if not self._work_request_visible(request, wr):
            self.allow(request, Op.DESCRIBE, RT.CLUSTER, CLUSTER)
        return wr

    async def get_work_request(self, request: web.Request) -> web.Response:
        return json_response(work_request_json(self._work_request(request)))

    async def list_work_requests(self, request: web.Request) -> web.Response:
        items = self.catalog.work_requests()
        if "compartmentId" in request.query:
            items = [w for w in items if w.compartment_id == request.query["compartmentId"]]
        if "resourceId" in request.query:
            items = [w for w in items if w.identifier == request.query["resourceId"]]
        if "workRequestId" in request.query:
            items = [w for w in items if w.id == request.query["workRequestId"]]
        items = [w for w in items if self._work_request_visible(request, w)]
        page, headers = paginate(request, [work_request_json(w) for w in items])
        for w in page:
            del w["resources"]
        return json_response({"items": page}, headers=headers)

    async def work_request_errors(self, request: web.Request) -> web.Response:
        self._work_request(request)
        return json_response({"items": []})

    async def work_request_logs(self, request: web.Request) -> web.Response:
        wr = self._work_request(request)
        return json_response(
            {"items": [{"message": f"{wr.operation_type} succeeded", "timestamp": iso(wr.time_ms)}]}
        )

    # -------------------------------------------------------------- messages

    async def put(self, request: web.Request) -> web.Response:
        view = self._stream(request)
        self.allow(request, Op.WRITE, RT.TOPIC, view.name)
        try:
            body = await read_body(request)
        except BadJson as e:
            raise bad(str(e)) from None
        if self.oci and len(body) > limits.MAX_REQUEST_BYTES * 4 // 3 + 4096:
            raise bad(f"a PutMessages request may carry at most {limits.MAX_REQUEST_BYTES} bytes of messages")
        obj = await read_json(request)
        msgs = obj.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise bad("messages must be a non-empty array")
        entries: list[tuple[bytes | None, bytes]] = []
        total = 0
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or "value" not in m:
                raise bad(f"messages[{i}] must be an object with a value")
            key = None if m.get("key") is None else b64decode(m["key"], f"messages[{i}].key")
            value = b64decode(m["value"], f"messages[{i}].value")
            size = len(value) + (len(key) if key else 0)
            if self.oci and size > limits.MAX_MESSAGE_BYTES:
                raise bad(
                    f"messages[{i}] is {size} bytes; a message may be at most "
                    f"{limits.MAX_MESSAGE_BYTES} bytes"
                )
            total += size
            entries.append((key, value))
        if self.oci and total > limits.MAX_REQUEST_BYTES:
            raise bad(f"a PutMessages request may carry at most {limits.MAX_REQUEST_BYTES} bytes of messages")
        if self.oci:
            self._throttle_put(view, entries)
        results = await put_messages(self.broker, view.topic, entries)
        out: list[Json] = []
        failures = 0
        for r in results:
            if r.error:
                failures += 1
                out.append({"partition": str(r.partition), "error": r.error, "errorMessage": r.error_message})
            else:
                out.append(
                    {"partition": str(r.partition), "offset": r.offset, "timestamp": iso(r.timestamp_ms)}
                )
        return json_response({"failures": failures, "entries": out})

    def _throttle_put(self, view: StreamView, entries: list[tuple[bytes | None, bytes]]) -> None:
        """Refuse (429) a request whose partitions are over 1 MB/s; partitions are picked as the put will."""

        sizes: dict[int, int] = {}
        for k, v in entries:
            if k is None:
                continue
            p = partition_for_key(k, view.partitions)
            sizes[p] = sizes.get(p, 0) + len(v) + len(k)
        keyless = sum(len(v) for k, v in entries if k is None)
        lim = limits.limits_of(self.broker).writes
        for p, n in sizes.items():
            if not lim.try_acquire((view.topic, p), n):
                raise OciError(429, "TooManyRequests", f"partition {p} is written faster than 1 MB/s")
        if keyless and not lim.try_acquire((view.topic, "keyless"), keyless / max(1, view.partitions)):
            raise OciError(429, "TooManyRequests", "the stream is written faster than 1 MB/s per partition")

    async def create_cursor(self, request: web.Request) -> web.Response:
        view = self._stream(request)
        self.allow(request, Op.READ, RT.TOPIC, view.name)
        body = await read_json(request)
        try:
            partition = int(str(body.get("partition")))
        except ValueError:
            raise bad("partition is required") from None
        part = self.broker.partition(view.topic, partition)
        if part is None:
            raise bad(f"partition {partition} does not exist (the stream has {view.partitions})")
        kind = body.get("type")
        start, end = part.log_start_offset, part.high_watermark
        if kind == "TRIM_HORIZON":
            offset = start
        elif kind == "LATEST":
            offset = end
        elif kind in ("AT_OFFSET", "AFTER_OFFSET"):
            given = _opt_int(body, "offset")
            if given is None:
                raise bad(f"offset is required for {kind}")
            offset = given + (1 if kind == "AFTER_OFFSET" else 0)
            if not start <= offset <= end:
                raise bad(f"offset {given} is outside the partition's range [{start}, {max(start, end - 1)}]")
        elif kind == "AT_TIME":
            ts = parse_time(body.get("time"))
            found = part.offset_for_timestamp(ts)
            offset = found[0] if found is not None else end
        else:
            raise bad("type must be one of AFTER_OFFSET, AT_OFFSET, AT_TIME, LATEST, TRIM_HORIZON")
        c = cursors.Cursor(stream=self._topic_id(view), partition=partition, offset=offset)
        return json_response({"value": cursors.encode(c)})

    def _topic_id(self, view: StreamView) -> str:
        meta = self.broker.topic(view.topic)
        assert meta is not None
        return meta.topic_id.hex

    def _cursor(self, request: web.Request, view: StreamView) -> cursors.Cursor:
        token = request.query.get("cursor")
        if not token:
            raise bad("cursor is required")
        try:
            c = cursors.decode(token)
        except cursors.CursorError as e:
            raise bad(str(e)) from None
        if c.stream != self._topic_id(view):
            raise bad("the cursor belongs to another stream")
        return c

    async def get(self, request: web.Request) -> web.Response:
        view = self._stream(request)
        self.allow(request, Op.READ, RT.TOPIC, view.name)
        c = self._cursor(request, view)
        limit = _int_param(request, "limit", MAX_GET_LIMIT)
        assert limit is not None
        if not 1 <= limit <= MAX_GET_LIMIT:
            raise bad(f"limit must be between 1 and {MAX_GET_LIMIT}")
        if c.is_group:
            assert c.group is not None
            self.allow(request, Op.READ, RT.GROUP, _group_name(c.group))
            return await self._get_group(view, c, limit)
        if self.oci and not limits.limits_of(self.broker).gets.try_acquire((view.topic, c.partition, ""), 1):
            raise OciError(429, "TooManyRequests", "more than 5 GetMessages per second on this partition")
        try:
            recs, nxt = await read_records(self.broker, view.topic, c.partition, c.offset, limit)
        except LookupError:
            raise bad("the cursor's partition no longer exists") from None
        msgs = [self._message(view, c.partition, r) for r in recs]
        c.offset = nxt
        return json_response(msgs, headers={"opc-next-cursor": cursors.encode(c)})

    @staticmethod
    def _message(view: StreamView, partition: int, r: records.Record) -> Json:
        return {
            "stream": view.name,
            "partition": str(partition),
            "key": b64(r.key),
            "value": b64(r.value) or "",
            "offset": r.offset,
            "timestamp": iso(r.timestamp),
        }

    # -------------------------------------------------------------- groups

    def _start_offset(self, view: StreamView, partition: int, kind: str, time_ms: int) -> int:
        part = self.broker.partition(view.topic, partition)
        assert part is not None
        if kind == "LATEST":
            return part.high_watermark
        if kind == "AT_TIME":
            found = part.offset_for_timestamp(time_ms)
            return found[0] if found is not None else part.high_watermark
        return part.log_start_offset

    async def create_group_cursor(self, request: web.Request) -> web.Response:
        view = self._stream(request)
        self.allow(request, Op.READ, RT.TOPIC, view.name)
        body = await read_json(request)
        group_name = body.get("groupName")
        if not isinstance(group_name, str) or not group_name:
            raise bad("groupName is required")
        self.allow(request, Op.READ, RT.GROUP, group_name)
        kind = body.get("type")
        if kind not in ("AT_TIME", "LATEST", "TRIM_HORIZON"):
            raise bad("type must be one of AT_TIME, LATEST, TRIM_HORIZON")
        time_ms = parse_time(body.get("time")) if kind == "AT_TIME" else 0
        instance = body.get("instanceName") or self.groups.new_instance_name()
        timeout = _opt_int(body, "timeoutInMs") or DEFAULT_TIMEOUT_MS
        if timeout < 1:
            raise bad("timeoutInMs must be positive")
        commit_on_get = body.get("commitOnGet")
        group_id = internal_group_id(view.pool, group_name)
        if (
            self.oci
            and not self.groups.known(view.topic, group_id)
            and self.groups.group_count(view.topic) >= limits.MAX_GROUPS_PER_STREAM
        ):
            raise OciError(
                400,
                "LimitExceeded",
                f"a stream may have at most {limits.MAX_GROUPS_PER_STREAM} consumer groups",
            )
        g = self.groups.get(view.topic, group_id, view.partitions)
        g.start_type, g.start_time_ms = kind, time_ms
        reserved = self.groups.reserve(g, str(instance), timeout)
        c = cursors.Cursor(
            stream=self._topic_id(view),
            group=group_id,
            instance=str(instance),
            commit_on_get=True if commit_on_get is None else bool(commit_on_get),
            timeout_ms=timeout,
            positions=self._positions(view, g.group_id, reserved, {}),
        )
        return json_response({"value": cursors.encode(c)})

    def _positions(
        self, view: StreamView, group_id: str, reserved: list[int], known: dict[int, int]
    ) -> dict[int, int]:
        g = self.groups.get(view.topic, group_id, view.partitions)
        committed = self.groups.offsets.committed(group_id, view.topic)
        out = {}
        for p in reserved:
            if p in known:
                out[p] = known[p]
            elif p in committed:
                out[p] = committed[p]
            else:
                out[p] = self._start_offset(view, p, g.start_type, g.start_time_ms)
        return out

    async def _commit(self, view: StreamView, c: cursors.Cursor) -> None:
        assert c.group is not None
        g = self.groups.get(view.topic, c.group, view.partitions)
        mine = self.groups.reserved_by(g, c.instance) | {
            p for p in range(view.partitions) if p not in g.reservations
        }
        todo = {p: o for p, o in c.positions.items() if p in mine}
        try:
            await self.groups.offsets.commit(c.group, view.topic, todo)
        except GroupError as e:
            raise OciError(e.status, e.code, e.message) from None

    async def _get_group(self, view: StreamView, c: cursors.Cursor, limit: int) -> web.Response:
        assert c.group is not None
        if c.commit_on_get:
            await self._commit(view, c)
        g = self.groups.get(view.topic, c.group, view.partitions)
        before = self.groups.reserved_by(g, c.instance)
        reserved = self.groups.reserve(g, c.instance, c.timeout_ms)
        known = {p: o for p, o in c.positions.items() if p in before}
        positions = self._positions(view, c.group, reserved, known)
        if self.oci:
            gets = limits.limits_of(self.broker).gets
            if reserved and not all(gets.try_acquire((view.topic, p, c.group), 1) for p in reserved):
                raise OciError(
                    429, "TooManyRequests", "more than 5 GetMessages per second per partition and group"
                )
        msgs: list[Json] = []
        if reserved:
            g.rotation = (g.rotation + 1) % len(reserved)
            order = reserved[g.rotation :] + reserved[: g.rotation]
            for p in order:
                if len(msgs) >= limit:
                    break
                try:
                    recs, nxt = await read_records(
                        self.broker, view.topic, p, positions[p], limit - len(msgs)
                    )
                except LookupError:
                    continue
                msgs.extend(self._message(view, p, r) for r in recs)
                positions[p] = nxt
        c.positions = positions
        return json_response(msgs, headers={"opc-next-cursor": cursors.encode(c)})

    def _group_cursor(self, request: web.Request, view: StreamView) -> cursors.Cursor:
        self.allow(request, Op.READ, RT.TOPIC, view.name)
        c = self._cursor(request, view)
        if not c.is_group:
            raise bad("a group cursor is required")
        assert c.group is not None
        self.allow(request, Op.READ, RT.GROUP, _group_name(c.group))
        return c

    async def commit(self, request: web.Request) -> web.Response:
        view = self._stream(request)
        c = self._group_cursor(request, view)
        await self._commit(view, c)
        assert c.group is not None
        g = self.groups.get(view.topic, c.group, view.partitions)
        self.groups.heartbeat(g, c.instance, c.timeout_ms)
        return json_response({"value": cursors.encode(c)})

    async def heartbeat(self, request: web.Request) -> web.Response:
        view = self._stream(request)
        c = self._group_cursor(request, view)
        assert c.group is not None
        g = self.groups.get(view.topic, c.group, view.partitions)
        self.groups.heartbeat(g, c.instance, c.timeout_ms)
        return json_response({"value": cursors.encode(c)})

    async def get_group(self, request: web.Request) -> web.Response:
        view = self._stream(request)
        name = request.match_info["groupName"]
        self.allow(request, Op.DESCRIBE, RT.TOPIC, view.name)
        self.allow(request, Op.DESCRIBE, RT.GROUP, name)
        group_id = internal_group_id(view.pool, name)
        if not self.groups.known(view.topic, group_id):
            raise not_found("group")
        g = self.groups.get(view.topic, group_id, view.partitions)
        self.groups.reserved_by(g, "")
        committed = self.groups.offsets.committed(group_id, view.topic)
        reservations = []
        for p in range(view.partitions):
            r = g.reservations.get(p)
            reservations.append(
                {
                    "partition": str(p),
                    "committedOffset": committed.get(p),
                    "reservedInstance": r.instance if r else None,
                    "timeReservedUntil": iso(r.until_ms) if r else None,
                }
            )
        return json_response({"streamId": view.id, "groupName": name, "reservations": reservations})

    async def update_group(self, request: web.Request) -> web.Response:
        view = self._stream(request)
        name = request.match_info["groupName"]
        self.audit(request, "group", name)
        self.allow(request, Op.READ, RT.TOPIC, view.name)
        self.allow(request, Op.READ, RT.GROUP, name)
        body = await read_json(request)
        kind = body.get("type")
        if kind not in ("AT_TIME", "LATEST", "TRIM_HORIZON"):
            raise bad("type must be one of AT_TIME, LATEST, TRIM_HORIZON")
        time_ms = parse_time(body.get("time")) if kind == "AT_TIME" else 0
        group_id = internal_group_id(view.pool, name)
        g = self.groups.get(view.topic, group_id, view.partitions)
        g.start_type, g.start_time_ms = kind, time_ms
        offsets = {p: self._start_offset(view, p, kind, time_ms) for p in range(view.partitions)}
        before = self.groups.offsets.committed(group_id, view.topic)
        self.audit(
            request,
            "group",
            name,
            {"stream": view.name, "offsets": {str(p): o for p, o in sorted(before.items())}},
            {"stream": view.name, "offsets": {str(p): o for p, o in sorted(offsets.items())}},
        )
        try:
            await self.groups.offsets.commit(group_id, view.topic, offsets)
        except GroupError as e:
            raise OciError(e.status, e.code, e.message) from None
        g.reservations.clear()
        g.instances.clear()
        return web.Response(status=200)


# ---------------------------------------------------------------------------------------------- app


API_KEY = web.AppKey("oci_streaming", StreamingApi)

CallerOf = Callable[[web.Request], Caller]


def streaming_api(broker: Broker) -> StreamingApi:
    """The broker's one StreamingApi (its REST group cursors are shared by every door serving the API)."""
    return broker.component(StreamingApi, lambda: StreamingApi(broker))


def _middleware(api: StreamingApi, prefix: str = "", caller_of: CallerOf | None = None) -> Middleware:
    """OCI errors, opc-request-id and signature checks for this API's paths (an aiohttp middleware); with
    ``caller_of`` the door has authenticated the caller itself and no signature is asked for."""
    root = prefix + API + "/"

    @web.middleware
    async def oci_errors(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith(root):
            return await handler(request)
        request_id = request.headers.get("opc-request-id") or uuid.uuid4().hex.upper()
        route_handler = getattr(request.match_info.route, "handler", None)
        operation = OPERATIONS.get(getattr(route_handler, "__name__", ""), f"{request.method} {request.path}")
        request[OPERATION_KEY] = operation
        address = request.remote or ""
        request[CALLER_KEY] = Caller(None, address, "streaming")
        if caller_of is not None:
            request[CALLER_KEY] = caller_of(request)
            request[MOUNTED_KEY] = True
        try:
            if caller_of is None and api.verifier is not None:
                try:
                    body = await read_body(request)
                except BadJson as e:
                    raise bad(str(e)) from None
                try:
                    put = request.method == "POST" and request.path.endswith("/messages")
                    key_id = api.verifier.verify(
                        request.method, request.raw_path, request.headers, body, body_signed=not put
                    )
                    principal = oci_principal(key_id, api.principals)
                    if principal is None:
                        raise AuthError(f"the API key {key_id} is not in rest.auth.principal.mapping")
                except AuthError as e:
                    audit_unauthenticated(api.broker, "streaming", address, operation, str(e))
                    request[DENIED_KEY] = True
                    raise OciError(401, "NotAuthenticated", str(e)) from None
                request[CALLER_KEY] = Caller(principal, address, "streaming")
            resp = await handler(request)
        except (OciError, CatalogError, GroupError) as e:
            resp = json_response({"code": e.code, "message": e.message}, status=e.status)
        except web.HTTPException as e:
            if e.status == 404:
                resp = json_response(
                    {"code": "NotAuthorizedOrNotFound", "message": f"no such resource: {request.path}"},
                    status=404,
                )
            elif e.status == 405:
                resp = json_response({"code": "MethodNotAllowed", "message": str(e)}, status=405)
            elif e.status == 413:
                resp = json_response({"code": "InvalidParameter", "message": "request too large"}, status=400)
            else:
                raise
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            resp = json_response({"code": "InternalServerError", "message": "internal error"}, status=500)
        if operation in CONTROL_OPERATIONS and not request.get(DENIED_KEY):
            _audit_control(api, request, operation, resp)
        resp.headers["opc-request-id"] = request_id
        return resp

    return oci_errors


def _audit_control(api: StreamingApi, request: web.Request, operation: str, resp: web.StreamResponse) -> None:
    """One audit record for a control-plane request that got past authentication and authorization."""
    rtype, name, before, after = request.get(AUDIT_KEY) or ("stream", request.path, None, None)
    error = None
    if resp.status >= 300:
        body = getattr(resp, "text", None)
        error = f"{resp.status} {body}" if body else str(resp.status)
    audit_change(
        api.broker,
        request[CALLER_KEY],
        operation,
        rtype,
        name,
        result=OK if resp.status < 300 else FAILED,
        error=error,
        before=before if resp.status < 300 else None,
        after=after if resp.status < 300 else None,
    )


def register(app: web.Application, broker: Broker) -> None:
    api = streaming_api(broker)
    app[API_KEY] = api
    cfg = broker.config
    if cfg["streaming.auth.enable"]:
        try:
            keys = load_keys(cfg["streaming.auth.public.keys"])
        except ValueError as e:
            raise ConfigError(f"streaming.auth.public.keys: {e}") from None
        if not keys:
            raise ConfigError(
                "streaming.auth.enable is true but streaming.auth.public.keys names no key: "
                "list the PEM public keys of the API users"
            )
        api.verifier = Verifier(keys)
        api.principals = principal_mapper(cfg)
        log.info("OCI Streaming REST: verifying request signatures against %d API key(s)", len(keys))
    else:
        log.warning(
            "OCI Streaming REST: request signatures are NOT verified (streaming.auth.enable=false); "
            "any client can use the API"
        )
    catalog_of(broker).ensure_loaded()
    app.middlewares.append(_middleware(api))
    _add_routes(app, api, "")


def mount(app: web.Application, broker: Broker, prefix: str, caller_of: CallerOf) -> StreamingApi:
    """Serve the same API, handlers and middleware under ``prefix`` of another door's application (the web
    console), whose callers that door has authenticated: ``caller_of`` names each request's caller. ACLs,
    the OCI profile's limits, validation and the audit trail are those of the REST gateway."""
    api = streaming_api(broker)
    catalog_of(broker).ensure_loaded()
    app.middlewares.append(_middleware(api, prefix, caller_of))
    _add_routes(app, api, prefix)
    return api


def _add_routes(app: web.Application, api: StreamingApi, prefix: str) -> None:
    r = app.router
    base = prefix + API
    for pools in ("/streampools", "/streamPools"):
        r.add_post(base + pools, api.create_pool)
        r.add_get(base + pools, api.list_pools)
        r.add_get(base + pools + "/{poolId}", api.get_pool)
        r.add_put(base + pools + "/{poolId}", api.update_pool)
        r.add_delete(base + pools + "/{poolId}", api.delete_pool)
        r.add_post(base + pools + "/{poolId}/actions/changeCompartment", api.change_pool_compartment)
    r.add_post(base + "/streams", api.create_stream)
    r.add_get(base + "/streams", api.list_streams)
    r.add_get(base + "/streams/{streamId}", api.get_stream)
    r.add_put(base + "/streams/{streamId}", api.update_stream)
    r.add_delete(base + "/streams/{streamId}", api.delete_stream)
    r.add_post(base + "/streams/{streamId}/actions/changeCompartment", api.change_stream_compartment)
    r.add_get(base + "/workRequests", api.list_work_requests)
    r.add_get(base + "/workRequests/{workRequestId}", api.get_work_request)
    r.add_get(base + "/workRequests/{workRequestId}/errors", api.work_request_errors)
    r.add_get(base + "/workRequests/{workRequestId}/logs", api.work_request_logs)
    r.add_post(base + "/streams/{streamId}/messages", api.put)
    r.add_get(base + "/streams/{streamId}/messages", api.get)
    r.add_post(base + "/streams/{streamId}/cursors", api.create_cursor)
    r.add_post(base + "/streams/{streamId}/groupCursors", api.create_group_cursor)
    r.add_get(base + "/streams/{streamId}/groups/{groupName}", api.get_group)
    r.add_put(base + "/streams/{streamId}/groups/{groupName}", api.update_group)
    r.add_post(base + "/streams/{streamId}/commit", api.commit)
    r.add_post(base + "/streams/{streamId}/heartbeat", api.heartbeat)
