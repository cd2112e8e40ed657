"""The OCI Queue REST API (version 20210201) on the shared REST listener.

Admin paths: ``/20210201/queues`` (CreateQueue, ListQueues), ``/20210201/queues/{queueId}`` (GetQueue,
UpdateQueue, DeleteQueue), ``.../actions/purge``, ``.../actions/changeCompartment`` and
``/20210201/workRequests[/{id}[/errors|/logs]]``. Message paths (a queue's ``messagesEndpoint`` is this
listener's own URL): ``/20210201/queues/{queueId}/messages`` (PutMessages, GetMessages),
``.../messages/{receipt}`` (UpdateMessage, DeleteMessage), ``.../messages/actions/updateMessages`` and
``deleteMessages``, ``.../stats`` (GetStats) and ``.../channels`` (ListChannels). JSON field names, statuses
and errors (``{"code": ..., "message": ...}``) are OCI's.

Two kafkite extensions reach the dead letter queue, which the OCI API exposes only through stats and purge:
``GET .../queues/{queueId}/dlq/messages`` takes GetMessages' parameters and delivers dead letters (their
receipts work with UpdateMessage(s) and DeleteMessage(s)); ``POST .../queues/{queueId}/dlq/actions/moveBack``
with ``{"ids": [...], "channelIds": [...]}`` (both optional) moves dead letters back to the queue.

With ``queue.auth.enable=true`` every request must carry a valid OCI signature (``Authorization: Signature``,
rsa-sha256, body included) by one of the keys in ``queue.auth.public.keys`` (empty: those of
``streaming.auth.public.keys``); otherwise any request is accepted, and a warning says so at start-up.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

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
from kafkite.queue.engine import Delivery, QueueState
from kafkite.queue.model import (
    GET_LIMIT_DEFAULT,
    GET_LIMIT_MAX,
    GET_LIMIT_MIN,
    MAX_BATCH_ENTRIES,
    MAX_PUT_MESSAGES,
    TIMEOUT_MAX,
    VISIBILITY_MAX,
    QueueError,
    WorkRequest,
    check_channel,
    check_properties,
    invalid,
    missing,
    rfc3339,
)
from kafkite.queue.service import QueueService
from kafkite.rest.guard import CALLER_KEY, BadJson, parse_json, read_body
from kafkite.security.acl import CLUSTER_NAME, AclOperation, ResourceType
from kafkite.streaming.auth import AuthError, Verifier, load_keys

T = TypeVar("T")

log = logging.getLogger("kafkite.queue.rest")

BASE = "/20210201"
SERVICE_KEY = web.AppKey("queue_service", QueueService)
VERIFIER_KEY: web.AppKey[Verifier | None] = web.AppKey("queue_verifier")
PRINCIPALS_KEY: web.AppKey[PrincipalMap | None] = web.AppKey("queue_principals")
BROKER_KEY = web.AppKey("queue_broker", Broker)
OPERATION_KEY = web.RequestKey("kafkite.queue.operation", str)
DENIED_KEY = web.RequestKey("kafkite.queue.denied", bool)  # refused and already in the audit trail
# (resource type, name, before, after) of a control-plane change, for the audit trail
AUDIT_KEY: web.RequestKey[tuple[str, str, Any, Any]] = web.RequestKey("kafkite.queue.audit")
MOUNTED_KEY = web.RequestKey("kafkite.queue.mounted", bool)  # served by another door (see mount)
Op = AclOperation
RT = ResourceType
# Control-plane operations: recorded in the audit trail whatever their result.
CONTROL_OPERATIONS = frozenset(
    {"CreateQueue", "UpdateQueue", "DeleteQueue", "PurgeQueue", "ChangeQueueCompartment", "MoveBack"}
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CallerOf = Callable[[web.Request], Caller]


def register(app: web.Application, broker: Broker) -> None:
    """Add the OCI Queue routes to the shared REST application."""
    svc = QueueService.of(broker)
    app[SERVICE_KEY] = svc
    app[VERIFIER_KEY] = _verifier(broker)
    app[PRINCIPALS_KEY] = principal_mapper(broker.config) if app[VERIFIER_KEY] is not None else None
    app[BROKER_KEY] = broker

    async def on_startup(_: web.Application) -> None:
        await svc.acquire()

    async def on_cleanup(_: web.Application) -> None:
        await svc.release()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    for method, path, handler, operation in routes():
        app.router.add_route(method, path, _oci(handler, operation))
    app.router.add_route("*", f"{BASE}/{{tail:.*}}", _oci(unknown_path, ""))


def mount(app: web.Application, broker: Broker, prefix: str, caller_of: CallerOf) -> None:
    """Serve the same routes and handlers under ``prefix`` of another door's application (the web console),
    whose callers that door has authenticated: ``caller_of`` names each request's caller. ACLs, validation
    and the audit trail are those of the REST gateway."""
    svc = QueueService.of(broker)
    app[SERVICE_KEY] = svc
    app[VERIFIER_KEY] = None
    app[PRINCIPALS_KEY] = None
    app[BROKER_KEY] = broker

    async def on_startup(_: web.Application) -> None:
        await svc.acquire()

    async def on_cleanup(_: web.Application) -> None:
        await svc.release()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    for method, path, handler, operation in routes():
        app.router.add_route(method, prefix + path, _oci(handler, operation, caller_of))
    app.router.add_route("*", f"{prefix}{BASE}/{{tail:.*}}", _oci(unknown_path, "", caller_of))


def routes() -> list[tuple[str, str, Handler, str]]:
    """(method, path, handler, OCI operation name) of every Queue API route."""
    q = f"{BASE}/queues/{{queueId}}"
    return [
        ("POST", f"{BASE}/queues", create_queue, "CreateQueue"),
        ("GET", f"{BASE}/queues", list_queues, "ListQueues"),
        ("GET", q, get_queue, "GetQueue"),
        ("PUT", q, update_queue, "UpdateQueue"),
        ("DELETE", q, delete_queue, "DeleteQueue"),
        ("POST", f"{q}/actions/purge", purge_queue, "PurgeQueue"),
        ("POST", f"{q}/actions/changeCompartment", change_compartment, "ChangeQueueCompartment"),
        ("GET", f"{BASE}/workRequests", list_work_requests, "ListWorkRequests"),
        ("GET", f"{BASE}/workRequests/{{workRequestId}}", get_work_request, "GetWorkRequest"),
        (
            "GET",
            f"{BASE}/workRequests/{{workRequestId}}/errors",
            list_work_request_errors,
            "ListWorkRequestErrors",
        ),
        ("GET", f"{BASE}/workRequests/{{workRequestId}}/logs", list_work_request_logs, "ListWorkRequestLogs"),
        ("POST", f"{q}/messages", put_messages, "PutMessages"),
        ("GET", f"{q}/messages", get_messages, "GetMessages"),
        ("POST", f"{q}/messages/actions/deleteMessages", delete_messages, "DeleteMessages"),
        ("POST", f"{q}/messages/actions/updateMessages", update_messages, "UpdateMessages"),
        ("PUT", f"{q}/messages/{{messageReceipt}}", update_message, "UpdateMessage"),
        ("DELETE", f"{q}/messages/{{messageReceipt}}", delete_message, "DeleteMessage"),
        ("GET", f"{q}/stats", get_stats, "GetStats"),
        ("GET", f"{q}/channels", list_channels, "ListChannels"),
        ("GET", f"{q}/dlq/messages", get_dlq_messages, "GetDeadLetterMessages"),
        ("POST", f"{q}/dlq/actions/moveBack", move_back, "MoveBack"),
    ]


# ---------------------------------------------------------------------------------------------- plumbing


def _verifier(broker: Broker) -> Verifier | None:
    cfg = broker.config
    if not cfg["queue.auth.enable"]:
        log.warning(
            "OCI Queue REST: request signatures are NOT verified (queue.auth.enable=false); "
            "any client can use the API"
        )
        return None
    spec = cfg["queue.auth.public.keys"] or cfg["streaming.auth.public.keys"]
    key_name = "queue.auth.public.keys" if cfg["queue.auth.public.keys"] else "streaming.auth.public.keys"
    try:
        keys = load_keys(spec)
    except ValueError as e:
        raise ConfigError(f"{key_name}: {e}") from None
    if not keys:
        raise ConfigError(
            "queue.auth.enable is true but neither queue.auth.public.keys nor streaming.auth.public.keys "
            "names a key: list the PEM public keys of the API users"
        )
    log.info("OCI Queue REST: verifying request signatures against %d API key(s)", len(keys))
    return Verifier(keys)


def _request_id(request: web.Request) -> str:
    return request.headers.get("opc-request-id") or uuid.uuid4().hex.upper()


def _oci(handler: Handler, operation: str, caller_of: CallerOf | None = None) -> Handler:
    """Authenticate the caller and turn QueueErrors (and malformed requests) into OCI error responses; with
    ``caller_of`` the door has authenticated the caller itself and no signature is asked for."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        op = operation or f"{request.method} {request.path}"
        request[OPERATION_KEY] = op
        address = request.remote or ""
        request[CALLER_KEY] = Caller(None, address, "queue")
        if caller_of is not None:
            request[CALLER_KEY] = caller_of(request)
            request[MOUNTED_KEY] = True
        broker = request.app[BROKER_KEY]
        try:
            verifier = request.app[VERIFIER_KEY]
            if verifier is not None and caller_of is None:
                body = await _raw(request)
                try:
                    key_id = verifier.verify(request.method, request.raw_path, request.headers, body)
                    principal = oci_principal(key_id, request.app[PRINCIPALS_KEY])
                    if principal is None:
                        raise AuthError(f"the API key {key_id} is not in rest.auth.principal.mapping")
                except AuthError as e:
                    audit_unauthenticated(broker, "queue", address, op, str(e))
                    request[DENIED_KEY] = True
                    raise QueueError(401, "NotAuthenticated", str(e)) from None
                request[CALLER_KEY] = Caller(principal, address, "queue")
            resp = await handler(request)
        except QueueError as e:
            resp = web.json_response({"code": e.code, "message": e.message}, status=e.status)
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            resp = web.json_response({"code": "InternalServerError", "message": "internal error"}, status=500)
        if op in CONTROL_OPERATIONS and not request.get(DENIED_KEY):
            _audit_control(broker, request, op, resp)
        resp.headers["opc-request-id"] = _request_id(request)
        return resp

    return wrapped


def _audit_control(broker: Broker, request: web.Request, operation: str, resp: web.StreamResponse) -> None:
    rtype, name, before, after = request.get(AUDIT_KEY) or (
        "queue",
        request.match_info.get("queueId", ""),
        None,
        None,
    )
    ok = resp.status < 300
    text = getattr(resp, "text", None)
    audit_change(
        broker,
        request[CALLER_KEY],
        operation,
        rtype,
        name,
        result=OK if ok else FAILED,
        error=None if ok else f"{resp.status} {text or ''}".strip(),
        before=before if ok else None,
        after=after if ok else None,
    )


def _allow(request: web.Request, op: AclOperation, rtype: ResourceType, name: str) -> None:
    """Refuse (404 NotAuthorizedOrNotFound, recorded in the audit trail) unless the caller may. A queue is the
    topic named by its OCID in ACLs."""
    caller = request[CALLER_KEY]
    if not authorize(request.app[BROKER_KEY], caller, op, rtype, name, operation=request[OPERATION_KEY]):
        request[DENIED_KEY] = True
        raise QueueError(
            404,
            "NotAuthorizedOrNotFound",
            f"{caller.name} is not authorized to {op.name} {_kind(rtype)} {name}",
        )


def _kind(rtype: ResourceType) -> str:
    return "queue" if rtype == RT.TOPIC else rtype.name.lower()


def _may(request: web.Request, op: AclOperation, rtype: ResourceType, name: str) -> bool:
    caller = request[CALLER_KEY]
    return authorize(request.app[BROKER_KEY], caller, op, rtype, name, operation="", audit_denial=False)


def _allow_queue(request: web.Request, op: AclOperation) -> str:
    queue_id = request.match_info["queueId"]
    _allow(request, op, RT.TOPIC, queue_id)
    return queue_id


def _audit(request: web.Request, rtype: str, name: str, before: Any = None, after: Any = None) -> None:
    request[AUDIT_KEY] = (rtype, name, before, after)


async def _raw(request: web.Request) -> bytes:
    try:
        return await read_body(request)
    except BadJson as e:
        raise invalid(str(e)) from None


def _svc(request: web.Request) -> QueueService:
    return request.app[SERVICE_KEY]


def _endpoint(request: web.Request) -> str:
    if request.get(MOUNTED_KEY):  # another door serves these routes: the messages API is the REST listener's
        urls = request.app[BROKER_KEY].rest_urls
        return urls[0] if urls else ""
    return f"{request.scheme}://{request.host}"


async def _body(request: web.Request) -> object:
    raw = await _raw(request)
    if not raw:
        raise missing("the request body")
    try:
        return parse_json(raw)
    except BadJson as e:
        raise invalid(str(e)) from None


def _int_param(request: web.Request, name: str, lo: int, hi: int, default: int) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise invalid(f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise invalid(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _page(request: web.Request, items: list[T], default_limit: int = 100) -> tuple[list[T], dict[str, str]]:
    start = _int_param(request, "page", 0, 1 << 31, 0)
    limit = _int_param(request, "limit", 1, 1000, default_limit)
    chunk = items[start : start + limit]
    headers = {"opc-next-page": str(start + limit)} if start + limit < len(items) else {}
    return chunk, headers


def _accepted(wr: WorkRequest) -> web.Response:
    return web.Response(status=202, headers={"opc-work-request-id": wr.id})


def _state(request: web.Request) -> QueueState:
    return _svc(request).state(request.match_info["queueId"])


def _no_consumer_groups(request: web.Request) -> None:
    if request.query.get("consumerGroupId"):
        raise invalid("consumer groups are not supported by this queue")


async def unknown_path(request: web.Request) -> web.Response:
    raise QueueError(404, "NotAuthorizedOrNotFound", f"{request.method} {request.path} is not an operation")


# ---------------------------------------------------------------------------------------------- admin


async def create_queue(request: web.Request) -> web.Response:
    body = await _body(request)
    name = str(body.get("displayName")) if isinstance(body, dict) else ""
    _audit(request, "queue", name)
    _allow(request, Op.CREATE, RT.CLUSTER, CLUSTER_NAME)
    wr = await _svc(request).create_queue(body)
    _audit(request, "queue", wr.queue_id, after={"displayName": name})
    return _accepted(wr)


async def get_queue(request: web.Request) -> web.Response:
    meta = _svc(request).get(request.match_info["queueId"])
    _allow_queue(request, Op.DESCRIBE)
    return web.json_response(meta.to_json(_endpoint(request)), headers={"etag": meta.etag})


async def list_queues(request: web.Request) -> web.Response:
    q = request.query
    queues = _svc(request).list_queues(
        compartment_id=q.get("compartmentId"),
        lifecycle_state=q.get("lifecycleState"),
        display_name=q.get("displayName"),
        queue_id=q.get("id"),
    )
    queues = [m for m in queues if _may(request, Op.DESCRIBE, RT.TOPIC, m.id)]
    sort_by = q.get("sortBy", "timeCreated")
    if sort_by not in ("timeCreated", "displayName"):
        raise invalid("sortBy must be timeCreated or displayName")
    order = q.get("sortOrder", "DESC" if sort_by == "timeCreated" else "ASC")
    if order not in ("ASC", "DESC"):
        raise invalid("sortOrder must be ASC or DESC")

    if sort_by == "timeCreated":
        queues.sort(key=lambda m: m.time_created, reverse=order == "DESC")
    else:
        queues.sort(key=lambda m: m.display_name, reverse=order == "DESC")
    chunk, headers = _page(request, queues)
    endpoint = _endpoint(request)
    return web.json_response({"items": [m.to_summary(endpoint) for m in chunk]}, headers=headers)


def _settings(request: web.Request, queue_id: str) -> dict[str, Any]:
    meta = _svc(request).queues.get(queue_id)
    if meta is None:
        return {}
    out = meta.to_json("")
    for k in ("messagesEndpoint", "timeCreated", "timeUpdated", "lifecycleState", "lifecycleDetails"):
        out.pop(k, None)
    return out


async def update_queue(request: web.Request) -> web.Response:
    queue_id = request.match_info["queueId"]
    _audit(request, "queue", queue_id)
    _allow_queue(request, Op.ALTER)
    before = _settings(request, queue_id)
    wr = await _svc(request).update_queue(queue_id, await _body(request), request.headers.get("if-match"))
    after = _settings(request, queue_id)
    _audit(
        request,
        "queue",
        queue_id,
        {k: v for k, v in before.items() if after.get(k) != v},
        {k: v for k, v in after.items() if before.get(k) != v},
    )
    return _accepted(wr)


async def delete_queue(request: web.Request) -> web.Response:
    queue_id = request.match_info["queueId"]
    _audit(request, "queue", queue_id)
    _allow_queue(request, Op.DELETE)
    _audit(request, "queue", queue_id, before=_settings(request, queue_id))
    wr = await _svc(request).delete_queue(queue_id, request.headers.get("if-match"))
    return _accepted(wr)


async def purge_queue(request: web.Request) -> web.Response:
    queue_id = request.match_info["queueId"]
    _audit(request, "queue", queue_id)
    _allow_queue(request, Op.DELETE)
    body = await _body(request)
    _audit(
        request, "queue", queue_id, after={"purge": body.get("purgeType") if isinstance(body, dict) else None}
    )
    if isinstance(body, dict) and body.get("consumerGroupId"):
        raise invalid("consumer groups are not supported by this queue")
    wr = await _svc(request).purge_queue(request.match_info["queueId"], body, request.headers.get("if-match"))
    return _accepted(wr)


async def change_compartment(request: web.Request) -> web.Response:
    queue_id = request.match_info["queueId"]
    _audit(request, "queue", queue_id)
    _allow_queue(request, Op.ALTER)
    before = _settings(request, queue_id).get("compartmentId")
    body = await _body(request)
    wr = await _svc(request).change_compartment(queue_id, body, request.headers.get("if-match"))
    _audit(
        request,
        "queue",
        queue_id,
        {"compartmentId": before},
        {"compartmentId": body.get("compartmentId") if isinstance(body, dict) else None},
    )
    return _accepted(wr)


def _work_request_visible(request: web.Request, wr: WorkRequest) -> bool:
    return _may(request, Op.DESCRIBE, RT.TOPIC, wr.queue_id) or _may(
        request, Op.DESCRIBE, RT.CLUSTER, CLUSTER_NAME
    )


def _work_request(request: web.Request) -> WorkRequest:
    wr = _svc(request).get_work_request(request.match_info["workRequestId"])
    if not _work_request_visible(request, wr):
        _allow(request, Op.DESCRIBE, RT.TOPIC, wr.queue_id)
    return wr


async def get_work_request(request: web.Request) -> web.Response:
    wr = _work_request(request)
    return web.json_response(wr.to_json(), headers={"retry-after": "0"})


async def list_work_requests(request: web.Request) -> web.Response:
    q = request.query
    items = [
        wr
        for wr in _svc(request).work_requests.values()
        if (q.get("compartmentId") is None or wr.compartment_id == q["compartmentId"])
        and (q.get("workRequestId") is None or wr.id == q["workRequestId"])
        and _work_request_visible(request, wr)
    ]
    items.sort(key=lambda wr: wr.time_accepted, reverse=True)
    chunk, headers = _page(request, items)
    return web.json_response({"items": [wr.to_json() for wr in chunk]}, headers=headers)


async def list_work_request_errors(request: web.Request) -> web.Response:
    _work_request(request)
    return web.json_response({"items": []})


async def list_work_request_logs(request: web.Request) -> web.Response:
    wr = _work_request(request)
    entry = {"message": f"{wr.operation_type} succeeded", "timestamp": rfc3339(wr.time_accepted)}
    return web.json_response({"items": [entry]})


# ---------------------------------------------------------------------------------------------- messages


def _message_json(d: Delivery) -> dict[str, Any]:
    m = d.message
    out: dict[str, Any] = {
        "id": m.id,
        "content": m.content.decode("utf-8", errors="replace"),
        "receipt": d.receipt,
        "deliveryCount": d.delivery_count,
        "visibleAfter": rfc3339(d.visible_after_ms),
        "expireAfter": rfc3339(m.expire_ms),
        "createdAt": rfc3339(m.created_ms),
    }
    if m.channel or m.props:
        meta: dict[str, Any] = {}
        if m.channel:
            meta["channelId"] = m.channel
        if m.props:
            meta["customProperties"] = m.props
        out["metadata"] = meta
    return out


async def put_messages(request: web.Request) -> web.Response:
    state = _state(request)
    _allow_queue(request, Op.WRITE)
    body = await _body(request)
    entries = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(entries, list) or not entries:
        raise missing("messages")
    if len(entries) > MAX_PUT_MESSAGES:
        raise invalid(f"at most {MAX_PUT_MESSAGES} messages can be put at once")
    parsed: list[tuple[bytes, str, dict[str, str] | None]] = []
    for e in entries:
        if not isinstance(e, dict) or not isinstance(e.get("content"), str):
            raise invalid("each message needs a string content")
        if not e["content"]:
            raise invalid("message content cannot be empty")
        meta = e.get("metadata") or {}
        if not isinstance(meta, dict):
            raise invalid("metadata must be an object")
        channel = check_channel(meta["channelId"]) if meta.get("channelId") is not None else ""
        parsed.append((e["content"].encode(), channel, check_properties(meta.get("customProperties"))))
    added = state.put(parsed)
    await _svc(request).durable({state.messages_log.partition})
    return web.json_response({"messages": [{"id": m.id, "expireAfter": rfc3339(m.expire_ms)} for m in added]})


async def _get(request: web.Request, dlq: bool) -> web.Response:
    state = _state(request)
    _allow_queue(request, Op.READ)
    _no_consumer_groups(request)
    meta = state.meta
    vis = _int_param(request, "visibilityInSeconds", 0, VISIBILITY_MAX, meta.visibility_in_seconds)
    timeout = _int_param(request, "timeoutInSeconds", 0, TIMEOUT_MAX, meta.timeout_in_seconds)
    limit = _int_param(request, "limit", GET_LIMIT_MIN, GET_LIMIT_MAX, GET_LIMIT_DEFAULT)
    channel_filter = request.query.get("channelFilter") or None
    got = await state.receive(limit, vis, timeout, channel_filter, dlq)
    if got:
        await _svc(request).durable(state.partitions)
    return web.json_response({"messages": [_message_json(d) for d in got]})


async def get_messages(request: web.Request) -> web.Response:
    return await _get(request, dlq=False)


async def get_dlq_messages(request: web.Request) -> web.Response:
    return await _get(request, dlq=True)


async def delete_message(request: web.Request) -> web.Response:
    state = _state(request)
    _allow_queue(request, Op.READ)
    state.delete(request.match_info["messageReceipt"])
    await _svc(request).durable(state.partitions)
    return web.Response(status=200)


async def delete_messages(request: web.Request) -> web.Response:
    state = _state(request)
    _allow_queue(request, Op.READ)
    body = await _body(request)
    entries = body.get("entries") if isinstance(body, dict) else None
    if not isinstance(entries, list) or not entries:
        raise missing("entries")
    if len(entries) > MAX_BATCH_ENTRIES:
        raise invalid(f"at most {MAX_BATCH_ENTRIES} entries are allowed")
    receipts = []
    for e in entries:
        if not isinstance(e, dict) or not isinstance(e.get("receipt"), str):
            raise invalid("each entry needs a receipt")
        receipts.append(e["receipt"])
    results = state.delete_many(receipts)
    await _svc(request).durable(state.partitions)
    out = [{} if r is None else {"errorCode": r.status, "errorMessage": r.message} for r in results]
    failures = sum(1 for r in results if r is not None)
    return web.json_response({"serverFailures": 0, "clientFailures": failures, "entries": out})


async def update_message(request: web.Request) -> web.Response:
    state = _state(request)
    _allow_queue(request, Op.READ)
    body = await _body(request)
    vis = _visibility(body)
    m = state.update(request.match_info["messageReceipt"], vis)
    await _svc(request).durable(state.partitions)
    return web.json_response({"id": m.id, "visibleAfter": rfc3339(m.visible_after_ms)})


def _visibility(entry: object) -> int:
    if not isinstance(entry, dict) or "visibilityInSeconds" not in entry:
        raise missing("visibilityInSeconds")
    vis = entry["visibilityInSeconds"]
    if isinstance(vis, bool) or not isinstance(vis, int) or not 0 <= vis <= VISIBILITY_MAX:
        raise invalid(f"visibilityInSeconds must be an integer between 0 and {VISIBILITY_MAX}")
    return vis


async def update_messages(request: web.Request) -> web.Response:
    state = _state(request)
    _allow_queue(request, Op.READ)
    body = await _body(request)
    entries = body.get("entries") if isinstance(body, dict) else None
    if not isinstance(entries, list) or not entries:
        raise missing("entries")
    if len(entries) > MAX_BATCH_ENTRIES:
        raise invalid(f"at most {MAX_BATCH_ENTRIES} entries are allowed")
    parsed = []
    for e in entries:
        if not isinstance(e, dict) or not isinstance(e.get("receipt"), str):
            raise invalid("each entry needs a receipt")
        parsed.append((e["receipt"], _visibility(e)))
    results = state.update_many(parsed)
    await _svc(request).durable(state.partitions)
    out: list[dict[str, Any]] = []
    failures = 0
    for r in results:
        if isinstance(r, QueueError):
            failures += 1
            out.append({"errorCode": r.status, "errorMessage": r.message})
        else:
            out.append({"id": r.id, "visibleAfter": rfc3339(r.visible_after_ms)})
    return web.json_response({"serverFailures": 0, "clientFailures": failures, "entries": out})


async def get_stats(request: web.Request) -> web.Response:
    state = _state(request)
    _allow_queue(request, Op.DESCRIBE)
    _no_consumer_groups(request)
    channel = request.query.get("channelId") or None
    out: dict[str, Any] = dict(state.stats(channel))
    if channel is not None:
        out["channelId"] = channel
    return web.json_response(out)


async def list_channels(request: web.Request) -> web.Response:
    state = _state(request)
    _allow_queue(request, Op.DESCRIBE)
    _no_consumer_groups(request)
    channels = state.channels(request.query.get("channelFilter") or None)
    chunk, headers = _page(request, channels, default_limit=50)
    return web.json_response({"items": chunk}, headers=headers)


async def move_back(request: web.Request) -> web.Response:
    state = _state(request)
    _audit(request, "queue", state.meta.id)
    _allow_queue(request, Op.ALTER)
    raw = await _raw(request)
    try:
        body = parse_json(raw) if raw else {}
    except BadJson as e:
        raise invalid(str(e)) from None
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    ids = body.get("ids")
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, int) for i in ids)):
        raise invalid("ids must be a list of message ids")
    channels = body.get("channelIds")
    if channels is not None and (
        not isinstance(channels, list) or not all(isinstance(c, str) for c in channels)
    ):
        raise invalid("channelIds must be a list of strings")
    n = state.move_back(ids, channels)
    _audit(request, "queue", state.meta.id, after={"movedMessages": n, "ids": ids, "channelIds": channels})
    await _svc(request).durable(state.partitions)
    return web.json_response({"movedMessages": n})
