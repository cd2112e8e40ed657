"""The web console (``console.listener``): a page and the JSON endpoints it polls.

Everything shown is read from the broker's own state when asked: the catalogue and partition logs, the group
coordinator, the stream pools and the queues; throughput comes from the broker's metrics, sampled once a
second into a short history. The page is static HTML, CSS and JavaScript (no build step) in ``static/``.

Views (GET): ``/api/overview``, ``/api/topics``, ``/api/topics/{topic}``, ``/api/groups``,
``/api/groups/{group}``, ``/api/throughput``, ``/api/pools``, ``/api/pools/{poolId}/connection`` (the Kafka
connection settings of a pool, ``kafkite.console.connect``), ``/api/queues``, ``/api/session``.

The console also operates. Topics, records and groups (``kafkite.console.actions``): every change and the
message browser are Kafka requests through the broker's own handlers as the caller's principal
(``kafkite.console.kafka``). Stream pools, streams and queues: the OCI Streaming and OCI Queue REST APIs are
served under ``/api/oci`` (``/api/oci/20180418/...``, ``/api/oci/20210201/...``) by the REST gateway's own
handlers and middleware (``kafkite.streaming.rest.mount``, ``kafkite.queue.rest.mount``), with the console's
session in place of a request signature. So ACLs, stream-pool naming, the OCI profile's limits, validation
and the audit trail (surface ``console``) are those of the Kafka API and the REST gateways, not a copy.

Logins, sessions and CSRF protection are in ``kafkite.console.auth``: every request under ``/api/oci`` and
every state-changing one carries the session's CSRF token. Every endpoint answers as its caller's principal:
lists hold what the principal may DESCRIBE (topics and groups by the names the clients of their stream pool
use, queues by OCID), totals of the whole broker (connections, throughput) DESCRIBE on the cluster; a
refused topic or group page is 403 and is recorded in the audit trail. ``https://`` listeners take the Kafka
listeners' ``ssl.*`` settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from kafkite.broker.metrics import group_lag_rows
from kafkite.console import actions
from kafkite.console.auth import CALLER, ConsoleAuth, session_json
from kafkite.console.connect import connection_settings
from kafkite.doors import Caller, audit_change, authorize, door_secured
from kafkite.doors.audit import FAILED, OK
from kafkite.metrics import BrokerMetrics, metrics_of
from kafkite.queue import rest as queue_rest
from kafkite.queue.service import QueueService
from kafkite.security.acl import CLUSTER_NAME, AclOperation, ResourceType
from kafkite.server.metrics_http import HttpService, bind, listener_tls, parse_listener_url
from kafkite.streaming import catalog_of, limits
from kafkite.streaming import rest as streaming_rest
from kafkite.streaming.pools import POOL_PREFIX, split_internal_name, stream_ocid
from kafkite.tools.group import decode_assignment

if TYPE_CHECKING:
    from kafkite.broker.core import Broker
    from kafkite.log import TopicMeta

log = logging.getLogger("kafkite.console")

STATIC = Path(__file__).parent / "static"
STATIC_FILES = (  # what the page loads (start-up checks that an installation has them)
    "index.html",
    "console.css",
    "ui.js",
    "topics.js",
    "groups.js",
    "streams.js",
    "queues.js",
    "console.js",
)
HISTORY = 300  # seconds of throughput kept
OCI_PREFIX = "/api/oci"
MAX_BODY = 2 * 1024 * 1024  # a test message or queue message with its JSON around it
_STARTED = time.time()


# ------------------------------------------------------------------------------------------ state views


def _topic_row(broker: Broker, name: str, meta: TopicMeta) -> dict[str, Any]:
    size = messages = 0
    for i in range(meta.partitions):
        p = broker.partition(name, i)
        if p is not None:
            size += p.size_bytes
            messages += p.log_end_offset - p.log_start_offset

    pool_key, _ = split_internal_name(name)
    pool = None
    if pool_key is not None:
        found = catalog_of(broker).pool_by_key(pool_key)
        pool = found.name if found is not None else None
    return {
        "name": name,
        "partitions": meta.partitions,
        "size_bytes": size,
        "messages": messages,
        "internal": name.startswith("__") and pool_key is None,
        "pool": pool,  # the stream pool of a stream outside the default pool
        "topic_id": str(meta.topic_id),
    }


Visible = Callable[[str], bool]


def _everything(name: str) -> bool:
    return True


def acl_name(name: str) -> str:
    """A topic or group as the clients of its stream pool name it (ACLs name it so)."""

    return split_internal_name(name)[1]


def topics_view(broker: Broker, visible: Visible = _everything) -> list[dict[str, Any]]:
    return [_topic_row(broker, n, m) for n, m in sorted(broker.topics().items()) if visible(n)]


def topic_view(broker: Broker, name: str, group_visible: Visible = _everything) -> dict[str, Any] | None:
    meta = broker.topic(name)
    if meta is None:
        return None
    parts = []
    for i in range(meta.partitions):
        p = broker.partition(name, i)
        if p is None:
            continue
        first_ts = p.first_timestamp()
        max_ts = p.max_timestamp()
        parts.append(
            {
                "partition": i,
                "start_offset": p.log_start_offset,
                "end_offset": p.log_end_offset,
                "high_watermark": p.high_watermark,
                "messages": p.log_end_offset - p.log_start_offset,
                "size_bytes": p.size_bytes,
                "first_timestamp": first_ts if first_ts >= 0 else None,
                "last_timestamp": max_ts[0] if max_ts[0] >= 0 else None,
            }
        )
    configs = dict(sorted(meta.configs.items()))  # the topic's own overrides
    groups: dict[str, dict[str, Any]] = {}
    for row in group_lag_rows(broker):
        if row["topic"] != name or not group_visible(row["group"]):
            continue
        g = groups.setdefault(
            row["group"], {"group": row["group"], "state": row["state"], "lag": 0, "partitions": []}
        )
        g["partitions"].append(
            {"partition": row["partition"], "committed_offset": row["committed_offset"], "lag": row["lag"]}
        )
        g["lag"] += row["lag"] or 0
    row = _topic_row(broker, name, meta)
    row.update(
        partitions=parts, partition_count=meta.partitions, configs=configs, groups=list(groups.values())
    )
    return row


# What every group and member has, whatever its protocol; the rest of what the coordinator describes is shown
# as the group's or member's own fields (a consumer group's epochs, a member's subscription, ...).
_GROUP_COMMON = frozenset(
    {"group_id", "group_type", "state", "protocol_type", "protocol", "generation_id", "leader", "members"}
)
_MEMBER_COMMON = frozenset(
    {"member_id", "group_instance_id", "client_id", "client_host", "assignment", "assigned"}
)


def _plain(value: Any) -> Any:
    """A described field as JSON: bytes as hex, mappings and lists recursively, the rest as it is."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return value


def groups_view(broker: Broker, visible: Visible = _everything) -> list[dict[str, Any]]:
    coord = getattr(broker, "groups", None)
    if coord is None:
        return []
    lag: dict[str, int] = {}
    for row in group_lag_rows(broker):
        lag[row["group"]] = lag.get(row["group"], 0) + (row["lag"] or 0)
    return [
        {
            "group": g["group_id"],
            "type": g.get("group_type", "classic"),
            "state": g["state"],
            "protocol_type": g["protocol_type"],
            "generation": g["generation_id"],
            "members": g["members"],
            "offsets": g["offsets"],
            "lag": lag.get(g["group_id"], 0),
        }
        for g in sorted(coord.groups_overview(), key=lambda g: g["group_id"])
        if visible(g["group_id"])
    ]


def _member_assignment(m: dict[str, Any], protocol_type: str, group: str) -> list[tuple[str, list[int]]]:
    """A member's partitions by topic (the broker's topic names)."""

    assigned = m.get("assigned")
    if isinstance(assigned, dict):  # a consumer-protocol member: partitions by topic
        return [(str(t), sorted(ps)) for t, ps in sorted(assigned.items())]
    if protocol_type == "consumer" and m.get("assignment"):
        # A classic assignment is what the group's leader wrote: topics as the clients of the group's pool
        # name them.
        key, _ = split_internal_name(group)
        return [
            (f"{POOL_PREFIX}{key}.{t}" if key and not t.startswith(POOL_PREFIX) else t, ps)
            for t, ps in decode_assignment(m["assignment"])
        ]
    return []


def group_view(broker: Broker, group: str, topic_visible: Visible = _everything) -> dict[str, Any] | None:
    """A group of any type: what all groups have, its protocol's own fields (listed in ``details`` and also
    at the top level under the names its type gives them), members likewise with their assignments, and its
    committed offsets with their lag."""
    coord = getattr(broker, "groups", None)
    desc = coord.describe(group) if coord is not None else None
    if desc is None:
        return None
    owners: dict[tuple[str, int], str] = {}
    members = []
    for m in desc["members"]:
        assignment = _member_assignment(m, desc["protocol_type"], group)
        for t, ps in assignment:
            for p in ps:
                owners[(t, p)] = m["member_id"]
        details = {k: _plain(v) for k, v in m.items() if k not in _MEMBER_COMMON}
        members.append(
            {
                **details,  # also at the top level, as the group's type names them (member_epoch, ...)
                "member_id": m["member_id"],
                "group_instance_id": m.get("group_instance_id"),
                "client_id": m.get("client_id", ""),
                "host": m.get("client_host", ""),
                "assignment": [{"topic": t, "partitions": ps} for t, ps in assignment if topic_visible(t)],
                "details": details,
            }
        )
    offsets = [
        {**r, "member_id": owners.get((r["topic"], r["partition"]))}
        for r in group_lag_rows(broker)
        if r["group"] == group and topic_visible(r["topic"])
    ]
    details = {k: _plain(v) for k, v in desc.items() if k not in _GROUP_COMMON}
    return {
        **details,
        "group": group,
        "type": desc.get("group_type", "classic"),
        "state": desc["state"],
        "protocol_type": desc["protocol_type"],
        "protocol": desc.get("protocol", ""),
        "generation": desc.get("generation_id"),
        "leader": desc.get("leader", ""),
        "details": details,
        "members": members,
        "offsets": offsets,
        "lag": sum(r["lag"] or 0 for r in offsets),
    }


def pools_view(
    broker: Broker, visible: Visible = _everything, all_pools: bool = True
) -> list[dict[str, Any]]:
    cat = catalog_of(broker)
    out = []
    for pool in cat.pools():
        if pool.lifecycle_state == "DELETED":
            continue
        streams = []
        for s in cat.streams(pool):
            if not visible(s.topic):
                continue
            row = topic_view(broker, s.topic) or {}
            streams.append(
                {
                    "name": s.name,
                    "id": s.id,
                    "topic": s.topic,
                    "partitions": s.partitions,
                    "retention_hours": s.retention_hours,
                    "messages_endpoint": broker.rest_urls[0] if broker.rest_urls else "",
                    "state": s.lifecycle_state,
                    "messages": row.get("messages", 0),
                    "size_bytes": row.get("size_bytes", 0),
                }
            )
        if not streams and not all_pools:
            continue
        out.append(
            {
                "name": pool.name,
                "id": pool.id,
                "default": pool.is_default,
                "state": pool.lifecycle_state,
                "streams": streams,
            }
        )
    return out


def stream_of(broker: Broker, topic: str) -> dict[str, Any] | None:
    """The stream a topic is (every topic of a live pool but the internal ones): its OCID, pool, endpoint."""

    meta = broker.topic(topic)
    if meta is None or (topic.startswith("__") and split_internal_name(topic)[0] is None):
        return None
    pool = catalog_of(broker).pool_of_topic(topic)
    if pool is None:
        return None
    return {
        "id": stream_ocid(meta.topic_id),
        "name": split_internal_name(topic)[1],
        "pool_id": pool.id,
        "pool_name": pool.name,
        "messages_endpoint": broker.rest_urls[0] if broker.rest_urls else "",
    }


def queues_view(broker: Broker, visible: Visible = _everything) -> list[dict[str, Any]]:
    svc = QueueService.of(broker)
    out = []
    for meta in svc.queues.values():
        if meta.lifecycle_state == "DELETED" or not visible(meta.id):
            continue
        state = svc.states.get(meta.id)
        stats = state.stats() if state is not None else {}
        out.append(
            {
                "name": meta.display_name,
                "id": meta.id,
                "state": meta.lifecycle_state,
                "retention_s": meta.retention_in_seconds,
                "visibility_s": meta.visibility_in_seconds,
                "dead_letter_after": meta.dead_letter_queue_delivery_count,
                "queue": stats.get("queue"),
                "dlq": stats.get("dlq"),
            }
        )
    return sorted(out, key=lambda q: q["name"])


# ------------------------------------------------------------------------------------------ throughput


class Sampler:
    """Once a second, the metrics' totals; rates are the differences between neighbouring samples."""

    def __init__(self, metrics: BrokerMetrics) -> None:
        self.metrics = metrics
        self.samples: deque[tuple[float, dict[str, float], dict[str, tuple[float, float]]]] = deque(
            maxlen=HISTORY + 1
        )

    def sample(self) -> None:
        m = self.metrics
        per_topic: dict[str, tuple[float, float]] = {}
        for (topic,), v in m.bytes_in.items():
            per_topic[topic] = (v, 0.0)
        for (topic,), v in m.bytes_out.items():
            per_topic[topic] = (per_topic.get(topic, (0.0, 0.0))[0], v)
        totals = {
            "bytes_in": sum(v for _, v in m.bytes_in.items()),
            "bytes_out": sum(v for _, v in m.bytes_out.items()),
            "messages_in": sum(v for _, v in m.messages_in.items()),
            "messages_out": sum(v for _, v in m.messages_out.items()),
            "requests": sum(v for _, v in m.requests.items()),
        }
        self.samples.append((time.time(), totals, per_topic))

    def series(self, totals: bool = True, visible: Visible = _everything) -> dict[str, Any]:
        points = []
        s = list(self.samples)
        for (t0, a, _), (t1, b, _) in itertools.pairwise(s if totals else []):
            dt = max(t1 - t0, 1e-3)
            points.append({"t": round(t1 * 1000), **{k: max(0.0, (b[k] - a[k]) / dt) for k in b}})
        topics: dict[str, dict[str, float]] = {}
        if len(s) >= 2:
            (t0, _, a_t), (t1, _, b_t) = s[-2], s[-1]
            dt = max(t1 - t0, 1e-3)
            for topic, (bi, bo) in b_t.items():
                if not visible(topic):
                    continue
                ai, ao = a_t.get(topic, (0.0, 0.0))
                topics[topic] = {"bytes_in": (bi - ai) / dt, "bytes_out": (bo - ao) / dt}
        return {"points": points, "topics": topics}

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(1.0)


# ------------------------------------------------------------------------------------------ the app


def build_app(
    broker: Broker, metrics: BrokerMetrics, sampler: Sampler, auth: ConsoleAuth | None = None
) -> web.Application:
    routes = web.RouteTableDef()
    auth = auth or ConsoleAuth(broker, secured=False, tls=False)

    def ok(obj: Any) -> web.Response:
        return web.json_response(obj, dumps=_dumps)

    def can(
        request: web.Request, op: AclOperation, rtype: ResourceType, name: str, operation: str = ""
    ) -> bool:
        """The Kafka authorizer's decision for the caller; ``operation`` given: a refusal is audited."""
        return authorize(
            broker, request[CALLER], op, rtype, name, operation=operation, audit_denial=bool(operation)
        )

    def topic_visible(request: web.Request) -> Visible:
        return lambda name: can(request, AclOperation.DESCRIBE, ResourceType.TOPIC, acl_name(name))

    def group_visible(request: web.Request) -> Visible:
        return lambda name: can(request, AclOperation.DESCRIBE, ResourceType.GROUP, acl_name(name))

    def cluster_visible(request: web.Request) -> bool:
        return can(request, AclOperation.DESCRIBE, ResourceType.CLUSTER, CLUSTER_NAME)

    def refuse(what: str) -> web.Response:
        return web.json_response({"error": f"not authorized to {what}"}, status=403)

    @routes.get("/api/session")
    async def session(request: web.Request) -> web.Response:
        return ok(session_json(request))

    @routes.get("/")
    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @routes.get("/api/overview")
    async def overview(request: web.Request) -> web.Response:
        everything = cluster_visible(request)
        conns = sum(v for _, v in metrics.connections.items()) if everything else None
        host, port = broker.advertised
        visible = topic_visible(request)
        topics = {n: m for n, m in broker.topics().items() if visible(n)}
        return ok(
            {
                "cluster_id": broker.cluster_id,
                "node_id": broker.node_id,
                "advertised": f"{host}:{port}",
                "uptime_s": time.time() - _STARTED,
                "topics": len(topics),
                "partitions": sum(m.partitions for m in topics.values()),
                "groups": len(groups_view(broker, group_visible(request))),
                "connections": conns,
                "storage": broker.config["storage.engine"],
                "profile": broker.config["profile"],
                "limits": profile_limits(broker),
                "rest_urls": list(broker.rest_urls),
            }
        )

    @routes.get("/api/topics")
    async def topics(request: web.Request) -> web.Response:
        return ok(topics_view(broker, topic_visible(request)))

    @routes.get("/api/topics/{topic}")
    async def topic(request: web.Request) -> web.Response:
        name = request.match_info["topic"]
        if not can(request, AclOperation.DESCRIBE, ResourceType.TOPIC, acl_name(name), "DescribeTopic"):
            return refuse(f"describe topic {name}")
        view = topic_view(broker, name, group_visible(request))
        if view is None:
            raise web.HTTPNotFound(text="no such topic")
        view["stream"] = stream_of(broker, name)
        return ok(view)

    @routes.get("/api/groups")
    async def groups(request: web.Request) -> web.Response:
        return ok(groups_view(broker, group_visible(request)))

    @routes.get("/api/groups/{group}")
    async def group(request: web.Request) -> web.Response:
        name = request.match_info["group"]
        if not can(request, AclOperation.DESCRIBE, ResourceType.GROUP, acl_name(name), "DescribeGroup"):
            return refuse(f"describe group {name}")
        view = group_view(broker, name, topic_visible(request))
        if view is None:
            raise web.HTTPNotFound(text="no such group")
        return ok(view)

    @routes.get("/api/throughput")
    async def throughput(request: web.Request) -> web.Response:
        return ok(sampler.series(cluster_visible(request), topic_visible(request)))

    @routes.get("/api/pools")
    async def pools(request: web.Request) -> web.Response:
        return ok(pools_view(broker, topic_visible(request), cluster_visible(request)))

    @routes.get("/api/pools/{poolId}/connection")
    async def pool_connection(request: web.Request) -> web.Response:

        cat = catalog_of(broker)
        pool = cat.pool(request.match_info["poolId"])
        visible = topic_visible(request)
        if pool is None or pool.lifecycle_state != "ACTIVE":
            raise web.HTTPNotFound(text="no such stream pool")
        if not cluster_visible(request) and not any(visible(s.topic) for s in cat.streams(pool)):
            can(request, AclOperation.DESCRIBE, ResourceType.CLUSTER, CLUSTER_NAME, "GetStreamPool")
            return refuse(f"describe stream pool {pool.id}")
        return ok(connection_settings(broker, pool))

    @routes.get("/api/queues")
    async def queues(request: web.Request) -> web.Response:
        return ok(queues_view(broker, lambda q: can(request, AclOperation.DESCRIBE, ResourceType.TOPIC, q)))

    actions.add_routes(routes, broker)
    app = web.Application(
        middlewares=[auth.middleware(), _audit_data_writes(broker)], client_max_size=MAX_BODY
    )
    app.add_routes(routes)
    app.router.add_static("/static/", STATIC)

    # The OCI Streaming and Queue APIs under /api/oci: the REST gateway's own handlers, the console's caller.
    def caller_of(request: web.Request) -> Caller:
        return request[CALLER]

    streaming_rest.mount(app, broker, OCI_PREFIX, caller_of)
    queue_rest.mount(app, broker, OCI_PREFIX, caller_of)
    return app


# Data-plane writes through the mounted OCI APIs: the gateways record control-plane changes only, but a change
# made from the console is recorded whatever it is.
DATA_WRITES = frozenset(
    {
        "PutMessages",
        "GetMessages",
        "GetDeadLetterMessages",
        "DeleteMessage",
        "DeleteMessages",
        "UpdateMessage",
        "UpdateMessages",
    }
)


def _audit_data_writes(broker: Broker) -> Middleware:

    @web.middleware
    async def audited(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        resp = await handler(request)
        if not request.path.startswith(OCI_PREFIX + "/"):
            return resp
        queue_op = request.get(queue_rest.OPERATION_KEY)
        op = queue_op or request.get(streaming_rest.OPERATION_KEY)
        denied = request.get(queue_rest.DENIED_KEY) or request.get(streaming_rest.DENIED_KEY)
        if (
            op not in DATA_WRITES
            or denied
            or (request.method == "GET" and op == "GetMessages" and not queue_op)
        ):
            return resp  # a stream's GetMessages reads without changing anything
        ok = resp.status < 300
        audit_change(
            broker,
            request[CALLER],
            op,
            "queue" if queue_op else "stream",
            request.match_info.get("queueId") or request.match_info.get("streamId", ""),
            result=OK if ok else FAILED,
            error=None if ok else f"{resp.status} {getattr(resp, 'text', '') or ''}".strip(),
        )
        return resp

    return audited


def profile_limits(broker: Broker) -> dict[str, Any]:
    """What the active profile allows, for the forms to say (the broker enforces it either way)."""
    if broker.config["profile"] != "oci":
        return {"profile": broker.config["profile"], "max_partitions": broker.config["topic.max.partitions"]}

    return {
        "profile": "oci",
        "retention_hours": [limits.MIN_RETENTION_HOURS, limits.MAX_RETENTION_HOURS],
        "max_message_bytes": limits.MAX_MESSAGE_BYTES,
        "fixed_partitions": True,
        "compaction": False,
        "max_partitions": broker.config["topic.max.partitions"],
    }


def _dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, default=str)


class ConsoleService(HttpService):
    """The console on its bound listener; :meth:`serve` starts the page and the throughput sampler."""

    def __init__(
        self,
        runner: web.AppRunner,
        sampler: Sampler,
        url: str,
        sockets: list[socket.socket],
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, url, sockets, ssl_context)
        self.sampler = sampler
        self.task: asyncio.Task[None] | None = None
        self.login = False  # logins are asked for

    async def serve(self) -> None:
        await super().serve()
        if self.task is None:
            self.task = asyncio.create_task(self.sampler.run(), name="console-sampler")
        log.info("web console on %s%s", self.url, " (log in with a SASL user)" if self.login else "")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await super().stop()


async def bind_console(broker: Broker) -> ConsoleService | None:
    """Bind ``console.listener`` (ListenerError names it when it cannot be bound); not serving yet."""
    spec: str = broker.config["console.listener"]
    if not spec.strip():
        return None
    host, port, _, scheme = parse_listener_url("console.listener", spec, 9645)
    tls = listener_tls(broker, "console.listener", scheme)
    metrics = metrics_of(broker)
    assert metrics is not None
    sampler = Sampler(metrics)
    auth = ConsoleAuth(broker, door_secured(broker.config, "console"), tls is not None)
    runner, socks, bound = await bind(
        "console.listener", spec.strip(), build_app(broker, metrics, sampler, auth), host, port
    )
    service = ConsoleService(runner, sampler, f"{scheme}://{host}:{bound}/", socks, tls)
    service.login = auth.secured
    return service


async def start_console(broker: Broker) -> ConsoleService | None:
    """Bind and serve the console."""
    service = await bind_console(broker)
    if service is not None:
        await service.serve()
    return service
