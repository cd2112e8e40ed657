"""Stream pools on the Kafka surface: one wrapper around every handler, none of the handlers edited.

A connection picks its pool through its SASL/PLAIN user name (``tenancy/user/poolId`` or
``tenancy/domain/user/poolId``); a connection without one uses the default pool. The wrapper rewrites the
topic names and group ids of the decoded request to internal names (``pools.internal_topic_name``), and
those of the response back, dropping whatever lies outside the connection's pool (so Metadata for all
topics, ListGroups and the like list only the pool's streams and groups). ``kafkite.broker.apis`` says which
fields carry names, per API.

The wrapper is also where the Kafka side of the OCI profile lives (throttled produce, fixed partitions and
retention, no compaction, no transactions) and where a ``SASL_*`` listener refuses requests before
authentication.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

from kafkite.broker import apis
from kafkite.broker.core import Broker, CloseConnection, Handler, RequestContext
from kafkite.broker.names import (
    RESOURCE_TOPIC,
    TOPIC,
    rewrite,
)
from kafkite.protocol.api_keys import ApiKey
from kafkite.protocol.errors import ErrorCode
from kafkite.streaming import limits
from kafkite.streaming.pools import (
    POOL_OCID_PREFIX,
    StreamPool,
    catalog_of,
    internal_topic_name,
    split_internal_name,
)

log = logging.getLogger("kafkite.streaming")

POOL_STATE_KEY = "stream_pool"  # on the connection state: the pool's key ("" for the default pool)


# ---------------------------------------------------------------------------------------------- rewriting


# A default-pool client naming another pool's internal topic gets this prefix put in front: an illegal topic
# name (refused or unknown to every handler) and a group id of its own, never the other pool's.
FENCE = "\x00"


def to_internal(pool: StreamPool, kind: str, name: str) -> str:
    del kind  # topics and groups are scoped alike
    if pool.is_default and split_internal_name(name)[0] is not None:
        return FENCE + name
    return internal_topic_name(pool, name)


def from_internal(pool: StreamPool, kind: str, name: str) -> str | None:
    """The pool-local name of an internal topic or group id, or None if it belongs to another pool."""
    if name.startswith(FENCE):
        return name[len(FENCE) :]
    key, local = split_internal_name(name)
    if pool.is_default:
        return name if key is None else None
    if key != pool.key:
        return None
    return local


def group_topic_view(group_id: str) -> Callable[[str], str | None]:
    """How members of a (pool-scoped) group name topics: a pool's groups see its streams by their names,
    default-pool groups see the plain topics; other pools' topics are not theirs."""
    key, _ = split_internal_name(group_id)

    def visible(topic: str) -> str | None:
        topic_key, local = split_internal_name(topic)
        if key is None:
            return topic if topic_key is None else None
        return local if topic_key == key else None

    return visible


# ---------------------------------------------------------------------------------------------- pools


def pool_id_of_username(username: str) -> str | None:
    """The stream pool OCID at the end of an OCI Kafka user name (``tenancy/[domain/]user/poolId``)."""
    parts = username.split("/")
    if len(parts) >= 3 and parts[-1].startswith(POOL_OCID_PREFIX):
        return parts[-1]
    return None


def connection_state(ctx: RequestContext) -> dict[str, Any]:
    conn = ctx.extra.get("connection")
    state = getattr(conn, "state", None)
    if isinstance(state, dict):
        return state
    own = ctx.extra.get("state")  # a context without a connection (an internal request) keeps its own
    if not isinstance(own, dict):
        own = ctx.extra["state"] = {}
    return own


def connection_pool(broker: Broker, state: dict[str, Any]) -> StreamPool:
    """The connection's pool (kept on the connection state; pools are changed in place, so a deleted pool
    shows as such)."""
    pool = state.get("stream_pool_object")
    if not isinstance(pool, StreamPool):
        catalog = catalog_of(broker)
        key = state.get(POOL_STATE_KEY)
        pool = catalog.pool_by_key(key) if key else catalog.default_pool
        if pool is None:
            raise CloseConnection()
        state["stream_pool_object"] = pool
    if pool.lifecycle_state != "ACTIVE":
        raise CloseConnection()  # the pool was deleted under the connection
    return pool


class PoolNameMap:
    """Topic names as a connection's stream pool gives them (``Broker.pool_names``)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def internal_topic(self, ctx: RequestContext, name: str) -> str:
        return to_internal(connection_pool(self.broker, connection_state(ctx)), TOPIC, name)

    def local_name(self, internal: str) -> str:
        return split_internal_name(internal)[1]


# ---------------------------------------------------------------------------------------------- wrapper


def _error_for_all(api_key: int, req: dict[str, Any], code: ErrorCode, message: str) -> dict[str, Any] | None:
    """A response refusing every item of a request (for the OCI profile's refusals)."""
    c = int(code)
    if api_key == ApiKey.CREATE_PARTITIONS:
        return {
            "throttle_time_ms": 0,
            "results": [
                {"name": t["name"], "error_code": c, "error_message": message} for t in req["topics"]
            ],
        }
    if api_key == ApiKey.INIT_PRODUCER_ID:
        return {"throttle_time_ms": 0, "error_code": c, "producer_id": -1, "producer_epoch": -1}
    return None


def _profile_refusals(api_key: int, req: dict[str, Any]) -> dict[str, str]:
    """Under the OCI profile: the topics CreateTopics/AlterConfigs may not create or change, and why."""
    out: dict[str, str] = {}
    if api_key == ApiKey.CREATE_TOPICS:
        for t in req["topics"]:
            for c in t.get("configs") or []:
                reason = _config_refusal(c["name"], c.get("value"), creating=True)
                if reason:
                    out[t["name"]] = reason
    elif api_key in (ApiKey.ALTER_CONFIGS, ApiKey.INCREMENTAL_ALTER_CONFIGS):
        for r in req["resources"]:
            if r.get("resource_type") != RESOURCE_TOPIC:
                continue
            for c in r.get("configs") or []:
                reason = _config_refusal(c["name"], c.get("value"), creating=False)
                if reason:
                    out[r["resource_name"]] = reason
    return out


def _config_refusal(name: str, value: str | None, *, creating: bool) -> str | None:
    if name == "cleanup.policy" and value and "compact" in value:
        return "OCI Streaming does not support log compaction (cleanup.policy=compact)"
    if name == "max.message.bytes" and value is not None:
        try:
            too_big = int(value) > limits.MAX_MESSAGE_BYTES
        except ValueError:
            return None
        if too_big:
            return f"OCI Streaming messages are limited to {limits.MAX_MESSAGE_BYTES} bytes"
    if name in ("retention.ms", "retention.bytes"):
        if not creating:
            return "a stream's retention is fixed when it is created"
        if name == "retention.ms" and value is not None:
            try:
                hours = int(value) / limits.HOUR_MS if int(value) > 0 else float("inf")
            except ValueError:
                return None
            if not limits.MIN_RETENTION_HOURS <= hours <= limits.MAX_RETENTION_HOURS:
                return (
                    f"retention must be between {limits.MIN_RETENTION_HOURS} and "
                    f"{limits.MAX_RETENTION_HOURS} hours"
                )
    return None


def _add_refusals(api_key: int, resp: dict[str, Any], refused: dict[str, str], req_order: list[str]) -> None:
    c = int(ErrorCode.POLICY_VIOLATION)
    if api_key == ApiKey.CREATE_TOPICS:
        entries = {t["name"]: t for t in resp["topics"]}
        for name, why in refused.items():
            entries[name] = {
                "name": name,
                "topic_id": uuid.UUID(int=0),
                "error_code": c,
                "error_message": why,
                "num_partitions": -1,
                "replication_factor": -1,
                "configs": None,
            }
        resp["topics"] = [entries[n] for n in req_order if n in entries]
    else:
        for name, why in refused.items():
            resp["responses"].append(
                {
                    "error_code": c,
                    "error_message": why,
                    "resource_type": RESOURCE_TOPIC,
                    "resource_name": name,
                }
            )


def wrap(broker: Broker, api_key: int, inner: Handler) -> Handler:
    fields = apis.BY_KEY[api_key].names

    async def handler(b: Broker, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any] | None:
        state = connection_state(ctx)
        if (
            api_key not in apis.PRE_AUTH
            and ctx.listener.startswith("SASL")
            and not state.get("sasl.authenticated")
        ):
            log.warning("closing %s: request before SASL authentication", ctx.client_host)
            raise CloseConnection()
        if state.get("sasl.username"):
            ctx.principal = f"User:{state['sasl.username']}"
        if api_key == ApiKey.SASL_AUTHENTICATE:
            return await _authenticate(b, ctx, req, inner, state)
        oci = limits.oci_profile(b)
        if oci:
            refusal = _error_for_all_profile(api_key, req)
            if refusal is not None:
                return refusal
        pool = connection_pool(b, state)
        if not oci and pool.is_default and catalog_of(b).only_default_pool():
            return await inner(b, ctx, req)  # nothing to map, fence or refuse
        rewrite(req, fields[0], lambda kind, name: to_internal(pool, kind, name))
        if not pool.is_default:
            _pool_defaults(b, pool, api_key, ctx.api_version, req)
        over = _groups_over_limit(b, req) if oci and api_key == ApiKey.OFFSET_COMMIT else set()
        refused: dict[str, str] = {}
        order: list[str] = []
        if oci and api_key in (ApiKey.CREATE_TOPICS, ApiKey.ALTER_CONFIGS, ApiKey.INCREMENTAL_ALTER_CONFIGS):
            refused = _profile_refusals(api_key, req)
            if api_key == ApiKey.CREATE_TOPICS:
                order = [t["name"] for t in req["topics"]]
                req["topics"] = [t for t in req["topics"] if t["name"] not in refused]
            else:
                req["resources"] = [
                    r
                    for r in req["resources"]
                    if not (r.get("resource_type") == RESOURCE_TOPIC and r["resource_name"] in refused)
                ]
        resp = _offset_commit_refused(req, over) if over else await inner(b, ctx, req)
        if oci and api_key == ApiKey.PRODUCE:
            resp = await _throttle_produce(b, req, resp)
        if resp is None:
            return None
        if refused:
            _add_refusals(api_key, resp, refused, order)
        rewrite(resp, fields[1], lambda kind, name: from_internal(pool, kind, name))
        return resp

    handler.__name__ = getattr(inner, "__name__", "handler")
    handler.__doc__ = getattr(inner, "__doc__", None)
    return handler


def _groups_over_limit(broker: Broker, req: dict[str, Any]) -> set[str]:
    """Topics (internal names) of an OffsetCommit whose streams already have their maximum number of groups,
    none of them this one: a new group may not start committing there."""
    # Only a pool with a group limit reaches here: the offset store stays out of the broker's start-up.
    from kafkite.streaming.groups import OffsetStore

    store = OffsetStore(broker)
    group = req["group_id"]
    over = set()
    for t in req["topics"]:
        groups = store.groups_of(t["name"])
        if group not in groups and len(groups) >= limits.MAX_GROUPS_PER_STREAM:
            over.add(t["name"])
    return over


def _offset_commit_refused(req: dict[str, Any], over: set[str]) -> dict[str, Any]:
    """Every partition of the topics in ``over`` refused; the rest of the request is not applied either."""
    code = int(ErrorCode.POLICY_VIOLATION)
    return {
        "throttle_time_ms": 0,
        "topics": [
            {
                "name": t["name"],
                "partitions": [
                    {
                        "partition_index": p["partition_index"],
                        "error_code": code if t["name"] in over else int(ErrorCode.OPERATION_NOT_ATTEMPTED),
                    }
                    for p in t["partitions"]
                ],
            }
            for t in req["topics"]
        ],
    }


def _error_for_all_profile(api_key: int, req: dict[str, Any]) -> dict[str, Any] | None:
    if api_key == ApiKey.CREATE_PARTITIONS:
        return _error_for_all(
            api_key,
            req,
            ErrorCode.POLICY_VIOLATION,
            "the partition count of an OCI stream is fixed when it is created",
        )
    if api_key == ApiKey.INIT_PRODUCER_ID and req.get("transactional_id") is not None:
        return _error_for_all(
            api_key,
            req,
            ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            "OCI Streaming does not support transactions",
        )
    return None


def _pool_defaults(broker: Broker, pool: StreamPool, api_key: int, version: int, req: dict[str, Any]) -> None:
    """Auto-creation and topic defaults follow the pool's Kafka settings rather than the broker's."""
    catalog = catalog_of(broker)
    if api_key == ApiKey.METADATA and req.get("topics"):
        allow = req["allow_auto_topic_creation"] if version >= 4 else True
        for t in req["topics"]:
            name = t.get("name")
            if name and allow:
                catalog.ensure_topic(pool, name)
        if version >= 4:
            req["allow_auto_topic_creation"] = False
    elif api_key == ApiKey.CREATE_TOPICS:
        for t in req["topics"]:
            if t.get("num_partitions", -1) == -1 and not t.get("assignments"):
                t["num_partitions"] = pool.num_partitions
            configs = t.setdefault("configs", [])
            if not any(c["name"] == "retention.ms" for c in configs):
                configs.append(
                    {"name": "retention.ms", "value": str(pool.log_retention_hours * limits.HOUR_MS)}
                )


async def _throttle_produce(
    broker: Broker, req: dict[str, Any], resp: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Hold the response back so each partition takes at most 1 MB/s; report the delay as throttle time."""
    lim = limits.limits_of(broker)
    ok: set[tuple[str, int]] = set()
    if resp is not None:
        for t in resp["responses"]:
            for p in t["partition_responses"]:
                if p["error_code"] == 0:
                    ok.add((t["name"], p["index"]))
    delay = 0.0
    for t in req["topic_data"]:
        for pd in t["partition_data"]:
            key = (t["name"], pd["index"])
            if (resp is None or key in ok) and pd["records"] is not None:
                delay = max(delay, lim.writes.acquire_delay(key, len(pd["records"])))
    if delay > 0:
        await asyncio.sleep(delay)
        if resp is not None:
            resp["throttle_time_ms"] = int(delay * 1000)
    return resp


async def _authenticate(
    broker: Broker, ctx: RequestContext, req: dict[str, Any], inner: Handler, state: dict[str, Any]
) -> dict[str, Any] | None:
    """After a successful SASL exchange, bind the connection to the pool its user name names."""
    resp = await inner(broker, ctx, req)
    if resp is None or resp.get("error_code") or not state.get("sasl.authenticated"):
        return resp
    username = str(state.get("sasl.username") or "")
    pool_id = pool_id_of_username(username)
    if pool_id is None:
        state[POOL_STATE_KEY] = ""
        state.pop("stream_pool_object", None)
        return resp
    pool = catalog_of(broker).pool(pool_id)
    if pool is None or pool.lifecycle_state != "ACTIVE":
        state["sasl.authenticated"] = False
        resp["error_code"] = int(ErrorCode.SASL_AUTHENTICATION_FAILED)
        resp["error_message"] = f"Authentication failed: unknown stream pool {pool_id}"
        resp["auth_bytes"] = b""
        return resp
    state[POOL_STATE_KEY] = "" if pool.is_default else pool.key
    state.pop("stream_pool_object", None)
    log.info("connection from %s authenticated as %s, stream pool %s", ctx.client_host, username, pool.name)
    return resp


def wrap_handlers(broker: Broker) -> None:
    """Wrap every handler of ``broker`` (call once, after all handlers are registered)."""
    for key, inner in list(broker.handlers.items()):
        broker.handlers[key] = wrap(broker, key, inner)
