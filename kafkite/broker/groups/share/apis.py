"""The APIs share consumers use on the partitions' leader: ShareFetch and ShareAcknowledge (KIP-932, with
KIP-1206's acquire modes and KIP-1222's renew acknowledgements), and the share group offset APIs the group
coordinator answers (DescribeShareGroupOffsets, AlterShareGroupOffsets, DeleteShareGroupOffsets).

A ShareFetch opens, continues or closes the member's share session (``sessions``), applies the
acknowledgements it carries, then acquires records of the session's share-partitions for the member and
returns their batches as they lie in the log (file ranges, sent with sendfile) with the acquired offset ranges
and delivery counts. With nothing to acquire it waits, up to ``max_wait_ms``, for an append to one of the
partitions or for records to come back (a release, a lapsed lock), woken, never polling.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

from kafkite.broker.delivery.journal import wall_clock_ms
from kafkite.broker.features import SHARE_VERSION, features_of
from kafkite.protocol.errors import ErrorCode
from kafkite.protocol.messages import RecordsChunks

from ..group import Group
from .partition import AckError, walk_batches
from .sessions import FINAL_EPOCH, INITIAL_EPOCH, SessionError, ShareSession
from .state import ShareGroup
from .store import SharePartitionStore, read_partition

if TYPE_CHECKING:
    from kafkite.broker.core import Broker, RequestContext

    from ..coordinator import GroupCoordinator

Result = dict[str, Any]
RECORD_LIMIT = 1  # ShareAcquireMode: 0 batch-optimized, 1 record-limit
NONE = 0
TopicPartition = tuple[uuid.UUID, int]


def _top_error(code: ErrorCode, message: str | None, version: int) -> Result:
    resp: Result = {
        "throttle_time_ms": 0,
        "error_code": int(code),
        "error_message": message,
        "acquisition_lock_timeout_ms": 0,
        "responses": [],
        "node_endpoints": [],
    }
    return resp


def _entry(index: int, leader: int) -> Result:
    return {
        "partition_index": index,
        "error_code": NONE,
        "error_message": None,
        "acknowledge_error_code": NONE,
        "acknowledge_error_message": None,
        "current_leader": {"leader_id": leader, "leader_epoch": 0},
        "records": b"",
        "acquired_records": [],
    }


def _request_partitions(req: Result) -> list[tuple[TopicPartition, list[tuple[int, int, list[int]]]]]:
    out = []
    for t in req.get("topics") or []:
        for p in t.get("partitions") or []:
            acks = [
                (int(b["first_offset"]), int(b["last_offset"]), list(b["acknowledge_types"] or []))
                for b in p.get("acknowledgement_batches") or []
            ]
            out.append(((t["topic_id"], int(p["partition_index"])), acks))
    return out


class ShareApis:
    """ShareFetch and ShareAcknowledge of one broker, over its share-partition store."""

    def __init__(self, broker: Broker, store: SharePartitionStore) -> None:
        self.broker = broker
        self.store = store

    def _enabled(self) -> bool:
        return features_of(self.broker).level(SHARE_VERSION) >= 1

    def _leader(self, name: str, index: int) -> int:
        cluster = self.broker.cluster
        if cluster is not None:
            return int(cluster.leader(name, index))
        return int(self.broker.node_id)

    def _check_partition(self, tp: TopicPartition) -> tuple[ErrorCode | None, str | None, int]:
        topic_id, index = tp
        meta = self.broker.topic_by_id(topic_id)
        if meta is None:
            return ErrorCode.UNKNOWN_TOPIC_ID, None, -1
        if self.broker.partition(meta.name, index) is None:
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, None, -1
        cluster = self.broker.cluster
        if cluster is not None and not cluster.leads(meta.name, index):
            return ErrorCode.NOT_LEADER_OR_FOLLOWER, None, self._leader(meta.name, index)
        return None, meta.name, self.broker.node_id

    def _watch_connection(self, ctx: RequestContext) -> object | None:
        """The client connection (its share sessions end with it)."""
        conn: object | None = ctx.extra.get("connection")
        if conn is None:
            return None
        state = getattr(conn, "state", None)
        if isinstance(state, dict) and not state.get("share_sessions_watched"):
            state["share_sessions_watched"] = True
            state.setdefault("on_close", []).append(lambda: self.store.sessions.connection_closed(conn))
        return conn

    async def _durable(self) -> None:
        if self.broker.config["log.flush.on.ack"] and self.store._log is not None:
            await self.broker.flush_before_ack({self.store._log.partition})

    # ------------------------------------------------------------------ acknowledgements

    def _acknowledge(
        self,
        group: str,
        member: str,
        tp: TopicPartition,
        batches: list[tuple[int, int, list[int]]],
        *,
        renew: bool,
        now: int,
    ) -> tuple[int, str | None]:
        code, _, _ = self._check_partition(tp)
        if code is not None:
            return int(code), None
        sp = self.store.lead((group, tp[0], tp[1]))
        if sp is None:
            return int(ErrorCode.INVALID_RECORD_STATE), "The share-partition has no acquired records."
        try:
            sp.acknowledge(member, batches, renew_allowed=renew, now=now)
        except AckError as exc:
            return int(exc.code), exc.message
        return NONE, None

    # ------------------------------------------------------------------ ShareFetch

    async def share_fetch(self, broker: Broker, ctx: RequestContext, req: Result) -> Result:
        version = ctx.api_version
        if not self._enabled():
            return _top_error(
                ErrorCode.UNSUPPORTED_VERSION, "Share groups are not enabled (share.version)", version
            )
        group = req.get("group_id") or ""
        member = req.get("member_id") or ""
        if not group.strip() or not member.strip():
            return _top_error(ErrorCode.INVALID_REQUEST, "GroupId and MemberId must be set.", version)
        epoch = int(req["share_session_epoch"])
        requested = _request_partitions(req)
        has_acks = any(acks for _, acks in requested)
        now = wall_clock_ms()
        sessions = self.store.sessions
        full = epoch == INITIAL_EPOCH
        try:
            if full:
                if has_acks:
                    return _top_error(
                        ErrorCode.INVALID_REQUEST,
                        "Acknowledge data present in an initial share fetch.",
                        version,
                    )
                session = sessions.open(
                    group, member, [tp for tp, _ in requested], self._watch_connection(ctx)
                )
            else:
                session = sessions.current(group, member, epoch)
                if epoch != FINAL_EPOCH:
                    for tp, _ in requested:
                        session.partitions.setdefault(tp, None)
                    for f in req.get("forgotten_topics_data") or []:
                        for i in f.get("partitions") or []:
                            session.partitions.pop((f["topic_id"], int(i)), None)
                    sessions.advance(session)
        except SessionError as exc:
            return _top_error(exc.code, exc.message, version)
        renew = bool(req.get("is_renew_ack", False))
        acked: dict[TopicPartition, tuple[int, str | None]] = {}
        for tp, acks in requested:
            if acks:
                acked[tp] = self._acknowledge(group, member, tp, acks, renew=renew, now=now)
        order: list[TopicPartition] = (
            [tp for tp, _ in requested] if full or epoch == FINAL_EPOCH else list(session.partitions)
        )
        entries: dict[TopicPartition, Result] = {}
        if epoch == FINAL_EPOCH:
            sessions.close(group, member)
            self.store.release(group, member)
        elif not renew and int(req.get("max_records", 1) or 0) > 0 and self._within_group(group):
            entries = await self._fetch(group, member, session, order, req, now)
        await self._durable()
        out: dict[uuid.UUID, list[Result]] = {}
        for tp in order if full else list(dict.fromkeys([*order, *acked])):
            entry = entries.get(tp)
            if entry is None:
                code, _, leader = self._check_partition(tp)
                entry = _entry(tp[1], leader)
                if code is not None:
                    entry["error_code"] = int(code)
            if tp in acked:
                entry["acknowledge_error_code"], entry["acknowledge_error_message"] = acked[tp]
            keep = full or tp in acked or entry["acquired_records"] or entry["error_code"] != NONE
            if keep:
                out.setdefault(tp[0], []).append(entry)
        return {
            "throttle_time_ms": 0,
            "error_code": NONE,
            "error_message": None,
            "acquisition_lock_timeout_ms": self.store.lock_duration_ms(group),
            "responses": [{"topic_id": t, "partitions": ps} for t, ps in out.items()],
            "node_endpoints": self._endpoints(out, ctx),
        }

    def _within_group(self, group: str) -> bool:
        """Whether ``group`` may be fetched for: not a group of another type."""
        coord = self.store.coordinator
        existing: Group | None = coord.groups.get(group)
        return existing is None or isinstance(existing, ShareGroup)

    def _endpoints(self, out: dict[uuid.UUID, list[Result]], ctx: RequestContext) -> list[Result]:
        leaders = {
            p["current_leader"]["leader_id"]
            for ps in out.values()
            for p in ps
            if p["error_code"] == int(ErrorCode.NOT_LEADER_OR_FOLLOWER)
            and p["current_leader"]["leader_id"] >= 0
        }
        cluster = self.broker.cluster
        if not leaders or cluster is None:
            return []
        return [
            {"node_id": node, "host": host, "port": port, "rack": None}
            for node, host, port in sorted(cluster.nodes(ctx.listener))
            if node in leaders
        ]

    async def _fetch(
        self,
        group: str,
        member: str,
        session: ShareSession,
        order: list[TopicPartition],
        req: Result,
        now: int,
    ) -> dict[TopicPartition, Result]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0, int(req.get("max_wait_ms", 0))) / 1000
        while True:
            entries, total, names = await self._acquire_all(group, member, order, req)
            if total > 0:
                return entries
            timeout = deadline - loop.time()
            if timeout <= 0 or not names:
                return entries
            keys = [(group, tp[0], tp[1]) for tp in names]
            appended = self.broker.waiters.waiter([(name, tp[1]) for tp, name in names.items()])
            released = self.store.waiter(keys)
            try:
                await asyncio.wait([appended, released], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                appended.cancel()
                released.cancel()
            if self.store.sessions.get(group, member) is not session:
                return entries

    async def _acquire_all(
        self, group: str, member: str, order: list[TopicPartition], req: Result
    ) -> tuple[dict[TopicPartition, Result], int, dict[TopicPartition, str]]:
        entries: dict[TopicPartition, Result] = {}
        names: dict[TopicPartition, str] = {}
        budget_bytes = max(
            1, min(int(req.get("max_bytes") or 2**31 - 1), self.broker.config["fetch.max.bytes"])
        )
        max_records = int(req.get("max_records") or 0)
        remaining = max_records if max_records > 0 else 500
        record_limit = int(req.get("share_acquire_mode") or 0) == RECORD_LIMIT
        batch_size = int(req.get("batch_size") or 0)
        total = 0
        for tp in order:
            code, name, leader = self._check_partition(tp)
            entry = _entry(tp[1], leader)
            entries[tp] = entry
            if code is not None or name is None:
                entry["error_code"] = int(code or ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
                continue
            names[tp] = name
            if remaining <= 0 or budget_bytes <= 0:
                continue
            part = self.broker.partition(name, tp[1])
            sp = self.store.ensure(group, tp[0], tp[1])
            if part is None or sp is None:
                entry["error_code"] = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
                continue
            async with self.store.lock((group, tp[0], tp[1])):
                now = wall_clock_ms()
                sp.settle(now)
                if part.log_start_offset > sp.start:
                    sp.skip_to(part.log_start_offset)
                committed = sp.settings().read_committed
                max_offset = part.last_stable_offset if committed else part.high_watermark
                offset = sp.next_offset(now)
                if offset >= sp.end and (offset >= max_offset or not sp.can_acquire_new()):
                    continue
                try:
                    res = await read_partition(part, offset, budget_bytes, max_offset)
                except Exception:
                    entry["error_code"] = int(ErrorCode.KAFKA_STORAGE_ERROR)
                    continue
                batches = walk_batches(res)
                if not batches:
                    continue
                aborted = list(part.aborted_transactions(offset, max_offset)) if committed else []
                got = sp.acquire(
                    member,
                    batches,
                    max_records=remaining,
                    record_limit=record_limit,
                    batch_size=batch_size,
                    now=wall_clock_ms(),
                    aborted=aborted,
                )
            if got.runs:
                chunks = RecordsChunks(got.chunks)
                entry["records"] = chunks
                entry["acquired_records"] = [
                    {"first_offset": f, "last_offset": last, "delivery_count": n} for f, last, n in got.runs
                ]
                budget_bytes -= chunks.size
                remaining -= got.records
                total += max(1, got.records)
        return entries, total, names

    # ------------------------------------------------------------------ ShareAcknowledge

    async def share_acknowledge(self, broker: Broker, ctx: RequestContext, req: Result) -> Result:
        version = ctx.api_version
        lock_ms_field = version >= 2

        def top(code: ErrorCode, message: str | None) -> Result:
            resp: Result = {
                "throttle_time_ms": 0,
                "error_code": int(code),
                "error_message": message,
                "responses": [],
                "node_endpoints": [],
            }
            if lock_ms_field:
                resp["acquisition_lock_timeout_ms"] = 0
            return resp

        if not self._enabled():
            return top(ErrorCode.UNSUPPORTED_VERSION, "Share groups are not enabled (share.version)")
        group = req.get("group_id") or ""
        member = req.get("member_id") or ""
        if not group.strip() or not member.strip():
            return top(ErrorCode.INVALID_REQUEST, "GroupId and MemberId must be set.")
        epoch = int(req["share_session_epoch"])
        if epoch == INITIAL_EPOCH:
            return top(
                ErrorCode.INVALID_SHARE_SESSION_EPOCH, "A share acknowledge cannot open a share session."
            )
        sessions = self.store.sessions
        try:
            sessions.current(group, member, epoch)
        except SessionError as exc:
            return top(exc.code, exc.message)
        now = wall_clock_ms()
        renew = bool(req.get("is_renew_ack", False))
        out: dict[uuid.UUID, list[Result]] = {}
        for tp, acks in _request_partitions(req):
            code, msg = self._acknowledge(group, member, tp, acks, renew=renew, now=now)
            _, _, leader = self._check_partition(tp)
            out.setdefault(tp[0], []).append(
                {
                    "partition_index": tp[1],
                    "error_code": code,
                    "error_message": msg,
                    "current_leader": {"leader_id": leader, "leader_epoch": 0},
                }
            )
        if epoch == FINAL_EPOCH:
            sessions.close(group, member)
            self.store.release(group, member)
        else:
            session = sessions.get(group, member)
            if session is not None:
                sessions.advance(session)
        await self._durable()
        resp: Result = {
            "throttle_time_ms": 0,
            "error_code": NONE,
            "error_message": None,
            "responses": [{"topic_id": t, "partitions": ps} for t, ps in out.items()],
            "node_endpoints": [],
        }
        if lock_ms_field:
            resp["acquisition_lock_timeout_ms"] = self.store.lock_duration_ms(group)
        return resp


# -- the share group offset APIs (group coordinator) -------------------------------------------------------


def _share_group_or_error(
    coord: GroupCoordinator, group_id: str
) -> tuple[ShareGroup | None, int, str | None]:
    group = coord.groups.get(group_id)
    if group is None or group.is_dead:
        return None, int(ErrorCode.GROUP_ID_NOT_FOUND), f"Group {group_id} not found."
    if not isinstance(group, ShareGroup):
        return None, int(ErrorCode.GROUP_ID_NOT_FOUND), f"Group {group_id} is not a share group."
    return group, NONE, None


def describe_offsets(
    coord: GroupCoordinator, store: SharePartitionStore, req: Result, version: int
) -> Result:
    broker_topics = coord.topics()
    groups_out = []
    for g in req.get("groups") or []:
        gid = g["group_id"]
        group, code, msg = _share_group_or_error(coord, gid)
        if group is None:
            groups_out.append({"group_id": gid, "topics": [], "error_code": code, "error_message": msg})
            continue
        wanted: list[tuple[str, list[int]]]
        if g.get("topics") is None:
            by_id = {m.topic_id: n for n, m in broker_topics.items()}
            grouped: dict[str, list[int]] = {}
            for sp in store.of_group(gid):
                name = by_id.get(sp.topic_id)
                if name is not None:
                    grouped.setdefault(name, []).append(sp.index)
            wanted = sorted(grouped.items())
        else:
            wanted = [(t["topic_name"], list(t["partitions"] or [])) for t in g["topics"]]
        topics_out = []
        for name, parts in wanted:
            meta = broker_topics.get(name)
            entries = []
            for index in parts:
                entry: Result = {
                    "partition_index": index,
                    "start_offset": -1,
                    "leader_epoch": 0,
                    "lag": -1,
                    "error_code": NONE,
                    "error_message": None,
                }
                if meta is None or not 0 <= index < meta.partitions:
                    entry["error_code"] = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
                    entry["error_message"] = "This server does not host this topic-partition."
                else:
                    state = store.get((gid, meta.topic_id, index))
                    part = store.broker.partition(name, index)
                    if state is not None and part is not None:
                        entry["start_offset"] = state.start
                        entry["lag"] = state.lag(part.high_watermark)
                entries.append(entry)
            topics_out.append(
                {
                    "topic_name": name,
                    "topic_id": meta.topic_id if meta is not None else uuid.UUID(int=0),
                    "partitions": entries,
                }
            )
        groups_out.append({"group_id": gid, "topics": topics_out, "error_code": NONE, "error_message": None})
    return {"throttle_time_ms": 0, "groups": groups_out}


def alter_offsets(coord: GroupCoordinator, store: SharePartitionStore, req: Result, version: int) -> Result:
    gid = req.get("group_id") or ""

    def top(code: ErrorCode, message: str | None) -> Result:
        return {"throttle_time_ms": 0, "error_code": int(code), "error_message": message, "responses": []}

    if not gid:
        return top(ErrorCode.INVALID_GROUP_ID, None)
    existing = coord.groups.get(gid)
    if existing is not None and not existing.is_dead and not isinstance(existing, ShareGroup):
        return top(ErrorCode.GROUP_ID_NOT_FOUND, f"Group {gid} is not a share group.")
    if isinstance(existing, ShareGroup) and existing.members:
        return top(ErrorCode.NON_EMPTY_GROUP, "The group is not empty.")
    if existing is None or existing.is_dead:
        try:
            coord.share.create_empty(gid)
        except Exception as exc:
            return top(ErrorCode.COORDINATOR_NOT_AVAILABLE, str(exc))
    topics = coord.topics()
    responses = []
    for t in req.get("topics") or []:
        name = t["topic_name"]
        meta = topics.get(name)
        parts = []
        for p in t.get("partitions") or []:
            index, offset = int(p["partition_index"]), int(p["start_offset"])
            entry: Result = {"partition_index": index, "error_code": NONE, "error_message": None}
            if meta is None or not 0 <= index < meta.partitions:
                entry["error_code"] = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
                entry["error_message"] = "This server does not host this topic-partition."
            elif offset < 0:
                entry["error_code"] = int(ErrorCode.INVALID_REQUEST)
                entry["error_message"] = f"Invalid start offset {offset}"
            else:
                found = store.get((gid, meta.topic_id, index)) or store.ensure(gid, meta.topic_id, index)
                if found is None:
                    entry["error_code"] = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
                else:
                    found.reset(offset)
            parts.append(entry)
        responses.append(
            {
                "topic_name": name,
                "topic_id": meta.topic_id if meta is not None else uuid.UUID(int=0),
                "partitions": parts,
            }
        )
    return {"throttle_time_ms": 0, "error_code": NONE, "error_message": None, "responses": responses}


def delete_offsets(coord: GroupCoordinator, store: SharePartitionStore, req: Result, version: int) -> Result:
    gid = req.get("group_id") or ""

    def top(code: ErrorCode, message: str | None) -> Result:
        return {"throttle_time_ms": 0, "error_code": int(code), "error_message": message, "responses": []}

    group, code, msg = _share_group_or_error(coord, gid)
    if group is None:
        return top(ErrorCode(code), msg)
    if group.members:
        return top(ErrorCode.NON_EMPTY_GROUP, "The group is not empty.")
    topics = coord.topics()
    responses = []
    for t in req.get("topics") or []:
        name = t["topic_name"]
        meta = topics.get(name)
        entry: Result = {
            "topic_name": name,
            "topic_id": meta.topic_id if meta is not None else uuid.UUID(int=0),
            "error_code": NONE,
            "error_message": None,
        }
        if meta is None:
            entry["error_code"] = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
            entry["error_message"] = "This server does not host this topic-partition."
        else:
            keys = [
                (gid, sp.topic_id, sp.index) for sp in store.of_group(gid) if sp.topic_id == meta.topic_id
            ]
            if not keys:
                entry["error_code"] = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
                entry["error_message"] = "There is no offset information to delete."
            else:
                store.drop(keys)
        responses.append(entry)
    return {"throttle_time_ms": 0, "error_code": NONE, "error_message": None, "responses": responses}
