"""Consumer groups when several brokers share the database.

Each group has one coordinator, the broker ``Cluster.coordinator(group_id)`` names. Group metadata and
committed offsets live in ``kafkite_group_entries`` (one row per key, so no compaction is needed); a broker's
``GroupCoordinator`` holds only the groups it coordinates, read from that table when it starts.

When the live broker list changes, every broker replaces its coordinator by a fresh one loaded from the
database: groups it keeps come back stable with their members and generations (they keep heartbeating),
groups it gains arrive with every offset their previous coordinator committed, and a rebalance waiting on a
coordinator that is going away is answered NOT_COORDINATOR, so its members find the new one.

Requests for a group this broker does not coordinate are answered NOT_COORDINATOR, as Kafka does; while the
coordinator is being rebuilt for a new view, COORDINATOR_LOAD_IN_PROGRESS (clients retry the same broker).
Every write is fenced by the membership epoch the coordinator was built for (``Cluster.fence_op``): a
coordinator whose lease is over cannot write, and answers COORDINATOR_NOT_AVAILABLE.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from kafkite.broker.authz import topic_describe_filter
from kafkite.broker.groups import logformat
from kafkite.broker.groups.handlers import attach_share_store, coordinator_for
from kafkite.broker.groups.log import Entry
from kafkite.log.base import Fenced
from kafkite.log.pg import PgStorage
from kafkite.protocol.errors import ErrorCode

if TYPE_CHECKING:
    from kafkite.broker.core import Broker, RequestContext
    from kafkite.cluster.membership import Cluster

log = logging.getLogger("kafkite.cluster")

NOT_COORDINATOR = int(ErrorCode.NOT_COORDINATOR)
# Keys of group configs start with their int16 key version.
_CONFIG_KEY_PREFIX = logformat.GROUP_CONFIG_KEY_VERSION.to_bytes(2, "big")
LOADING = int(ErrorCode.COORDINATOR_LOAD_IN_PROGRESS)
_GROUP_CONFIGS = "SELECT group_id, value FROM kafkite_group_entries WHERE substring(key from 1 for 2) = %s"


def _group_of(key: bytes) -> str | None:
    try:
        return logformat.decode_key(key).group_id
    except logformat.LogFormatError:
        return None


class OwnedGroupLog:
    """A GroupLog over ``kafkite_group_entries`` that sees and writes only the groups this broker coordinates,
    within the membership epoch it was made for.

    A write for a group coordinated elsewhere (a timer of a coordinator being replaced), or after the
    membership changed, raises ``Fenced``: the group's own coordinator is the only writer of its entries.
    """

    def __init__(self, storage: PgStorage, cluster: Cluster) -> None:
        self._storage = storage
        self._cluster = cluster
        self.epoch = cluster.epoch
        self._preloaded: list[tuple[bytes, str, bytes]] | None = None

    def append(self, entries: list[Entry]) -> None:
        self._storage.group_entries_apply(self._rows(entries), fence=self._cluster.fence(self.epoch))

    async def append_async(self, entries: list[Entry]) -> None:
        """``append`` over a pooled connection: a database that stops answering holds only this write."""
        rows = self._rows(entries)
        await self._storage.group_entries_apply_async(rows, fence=self._cluster.fence(self.epoch))

    def _rows(self, entries: list[Entry]) -> list[tuple[bytes, str, bytes | None]]:
        rows: list[tuple[bytes, str, bytes | None]] = []
        for key, value in entries:
            group = _group_of(key)
            if group is None:
                continue
            if key.startswith(_CONFIG_KEY_PREFIX):
                # A group's configs belong to the cluster: any broker may set them (IncrementalAlterConfigs).
                rows.append((key, group, value))
                continue
            if not self._cluster.coordinates(group):
                raise Fenced(f"group {group} is coordinated by another broker")
            rows.append((key, group, value))
        return rows

    async def preload(self) -> None:
        """Read the entries ``replay`` gives over a pooled connection, ahead of the coordinator's load (which
        then does not hold the event loop on the database)."""
        self._preloaded = await self._storage.group_entries_async()

    def replay(self) -> Iterator[Entry]:
        rows, self._preloaded = self._preloaded, None
        for key, group, value in rows if rows is not None else self._storage.group_entries():
            if self._cluster.coordinates(group) or key.startswith(_CONFIG_KEY_PREFIX):
                yield key, value

    def read_group_configs(self) -> dict[str, bytes]:
        """The configs of every group, as set through any broker (refreshed by the coordinator)."""
        rows = self._storage.db.execute(_GROUP_CONFIGS, (_CONFIG_KEY_PREFIX,))
        return {str(g): bytes(v) for g, v in rows}

    async def read_group_configs_async(self) -> dict[str, bytes]:
        """``read_group_configs`` over a pooled connection."""
        rows = await self._storage.db.execute_async(_GROUP_CONFIGS, (_CONFIG_KEY_PREFIX,))
        return {str(g): bytes(v) for g, v in rows}


async def rebuild_coordinator(broker: Broker) -> None:
    """Replace the broker's group coordinator by one loaded from the database (after a membership change)."""
    old = broker.groups
    new = coordinator_for(broker)
    if old is not None:
        new.topic_view = old.topic_view
        # The share-partitions and their sessions stay with the broker: the new coordinator takes them over.
        store, old.share_store = old.share_store, None
        if store is not None:
            attach_share_store(new, store)
    # The transaction coordinator reaches the group coordinator through it (cluster.txn.TxnOffsets).
    broker.groups = new
    if old is not None:
        await old.stop()
    await new.start()


# request routing -------------------------------------------------------------------------------------------


def _partitions_error(
    topics: list[dict[str, Any]] | None, name_key: str = "name", code: int = NOT_COORDINATOR
) -> list[dict[str, Any]]:
    out = []
    for t in topics or []:
        parts = [
            {
                "partition_index": p["partition_index"] if isinstance(p, dict) else p,
                "error_code": code,
            }
            for p in (t.get("partitions") or t.get("partition_indexes") or [])
        ]
        entry = {"name": t.get(name_key), "partitions": parts}
        if t.get("topic_id") is not None:
            entry["topic_id"] = t["topic_id"]  # version 10 names topics by id
        out.append(entry)
    return out


def refusal(method: str, req: dict[str, Any], version: int, code: int = NOT_COORDINATOR) -> dict[str, Any]:
    """The NOT_COORDINATOR (or ``code``) answer to a request about one group coordinated elsewhere."""
    base: dict[str, Any] = {"throttle_time_ms": 0, "error_code": code}
    if method in ("offset_commit", "txn_offset_commit"):
        return {"throttle_time_ms": 0, "topics": _partitions_error(req.get("topics"), code=code)}
    if method == "offset_fetch":
        return {**base, "topics": _partitions_error(req.get("topics"), code=code)}
    if method == "join_group":
        return {**base, "generation_id": -1, "member_id": req.get("member_id") or "", "members": []}
    if method == "consumer_group_heartbeat":
        return {
            **base,
            "error_message": None,
            "member_id": None,
            "member_epoch": 0,
            "heartbeat_interval_ms": 0,
        }
    if method == "offset_delete":
        return {**base, "topics": []}
    return base


async def group_request(
    broker: Broker, cluster: Cluster, method: str, ctx: RequestContext, req: dict[str, Any]
) -> dict[str, Any]:
    """Serve a group API through the current coordinator, refusing the groups coordinated elsewhere."""
    version = ctx.api_version
    if cluster.fenced and method != "list_groups":
        # Another process holds this broker's node id: the group's coordinator is elsewhere.
        return _loading(method, req, version, NOT_COORDINATOR)
    if not cluster.ready and method != "list_groups":
        return _loading(method, req, version)
    call = getattr(broker.groups, method)
    kw: dict[str, Any] = {"client_id": ctx.client_id, "client_host": ctx.client_host}
    if method == "consumer_group_heartbeat":
        kw["describable"] = topic_describe_filter(broker, ctx)
    if method == "describe_groups":
        ids = list(req.get("groups") or [])
        mine = [g for g in ids if g is None or cluster.coordinates(g)]
        resp: dict[str, Any] = await call({**req, "groups": mine}, version, **kw)
        by_id = {g["group_id"]: g for g in resp["groups"]}
        resp["groups"] = [
            by_id.get(g, {})
            if g in mine
            else {"group_id": g, "error_code": NOT_COORDINATOR, "group_state": ""}
            for g in ids
        ]
        return resp
    if method == "consumer_group_describe":
        ids = list(req.get("group_ids") or [])
        mine = [g for g in ids if g is None or cluster.coordinates(g)]
        resp = await call({**req, "group_ids": mine}, version, **kw)
        described = iter(resp["groups"])
        resp["groups"] = [
            next(described)
            if g in mine
            else {"group_id": g, "error_code": NOT_COORDINATOR, "group_state": "", "members": []}
            for g in ids
        ]
        return resp
    if method == "delete_groups":
        ids = list(req.get("groups_names") or [])
        mine = [g for g in ids if g is None or cluster.coordinates(g)]
        resp = await call({**req, "groups_names": mine}, version, **kw)
        results = iter(resp["results"])
        resp["results"] = [
            next(results) if g in mine else {"group_id": g, "error_code": NOT_COORDINATOR} for g in ids
        ]
        return resp
    if method == "offset_fetch" and version >= 8:
        groups = list(req.get("groups") or [])
        mine = [g for g in groups if cluster.coordinates(g["group_id"])]
        resp = (
            await call({**req, "groups": mine}, version, **kw)
            if mine
            else {"throttle_time_ms": 0, "groups": []}
        )
        got = iter(resp.get("groups") or [])
        resp["groups"] = [
            next(got)
            if g in mine
            else {"group_id": g["group_id"], "topics": [], "error_code": NOT_COORDINATOR}
            for g in groups
        ]
        return resp
    if method == "list_groups":
        result: dict[str, Any] = await call(req, version, **kw)
        return result
    group_id = req.get("group_id")
    if isinstance(group_id, str) and not cluster.coordinates(group_id):
        return refusal(method, req, version)
    result = await call(req, version, **kw)
    return result


def _loading(method: str, req: dict[str, Any], version: int, code: int = LOADING) -> dict[str, Any]:
    """COORDINATOR_LOAD_IN_PROGRESS (or ``code``) for every group of the request (the coordinator is being
    rebuilt)."""
    if method == "describe_groups":
        groups = req.get("groups") or []
        return {
            "throttle_time_ms": 0,
            "groups": [{"group_id": g, "error_code": code, "group_state": ""} for g in groups],
        }
    if method == "delete_groups":
        names = req.get("groups_names") or []
        return {"throttle_time_ms": 0, "results": [{"group_id": g, "error_code": code} for g in names]}
    if method == "offset_fetch" and version >= 8:
        groups = req.get("groups") or []
        return {
            "throttle_time_ms": 0,
            "groups": [{"group_id": g["group_id"], "topics": [], "error_code": code} for g in groups],
        }
    return refusal(method, req, version, code)


def find_coordinator(cluster: Cluster, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
    """FindCoordinator: the live broker that coordinates each group (or transactional id)."""
    key_type = int(req.get("key_type", 0))

    def entry(key: str) -> dict[str, Any]:
        if key_type not in (0, 1):
            return {
                "node_id": -1,
                "host": "",
                "port": -1,
                "error_code": int(ErrorCode.INVALID_REQUEST),
                "error_message": f"unknown coordinator key type {key_type}",
            }
        node_id = cluster.coordinator(key)  # groups and transactional ids share the placement
        node, host, port = cluster.node(node_id, ctx.listener)
        return {"node_id": node, "host": host, "port": port, "error_code": 0, "error_message": None}

    if ctx.api_version >= 4:
        return {
            "throttle_time_ms": 0,
            "coordinators": [{"key": k, **entry(k)} for k in req.get("coordinator_keys") or []],
        }
    return {"throttle_time_ms": 0, **entry(req.get("key") or "")}
