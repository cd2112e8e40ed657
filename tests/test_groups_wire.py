"""The coordinator's answers go through kafkite's own codecs at every supported version.

Requests are encoded and decoded with the request codec first, so that handlers see exactly what the server
hands them (defaults filled in, bytes as memoryviews); responses must encode at the request's version.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from test_groups_support import TOPICS, Clock, run, subscription

from kafkite.broker.groups import GroupConfig, GroupCoordinator
from kafkite.protocol.messages import registry

OFFSET_COMMIT, OFFSET_FETCH, FIND_COORDINATOR = 8, 9, 10
JOIN, HEARTBEAT, LEAVE, SYNC = 11, 12, 13, 14
DESCRIBE, LIST, DELETE, OFFSET_DELETE = 15, 16, 42, 47
CONSUMER_HEARTBEAT, CONSUMER_DESCRIBE = 68, 69


class _Topic:
    def __init__(self, partitions: int) -> None:
        self.topic_id = uuid.uuid4()
        self.partitions = partitions


CATALOGUE = {name: _Topic(count) for name, count in TOPICS.items()}


def _topic(name: str, version: int, by_id_from: int) -> dict[str, Any]:
    """A topic of a request: by name, or by id from ``by_id_from`` on."""
    return {"topic_id": CATALOGUE[name].topic_id} if version >= by_id_from else {"name": name}


class Wire:
    def __init__(self) -> None:
        self.clock = Clock()
        self.coord = GroupCoordinator(
            lambda t: TOPICS.get(t),
            config=GroupConfig(initial_rebalance_delay_ms=0),
            now_ms=self.clock,
            topics=lambda: CATALOGUE,
        )
        self.handlers = {
            OFFSET_COMMIT: self.coord.offset_commit,
            OFFSET_FETCH: self.coord.offset_fetch,
            JOIN: self.coord.join_group,
            HEARTBEAT: self.coord.heartbeat,
            LEAVE: self.coord.leave_group,
            SYNC: self.coord.sync_group,
            DESCRIBE: self.coord.describe_groups,
            LIST: self.coord.list_groups,
            DELETE: self.coord.delete_groups,
            OFFSET_DELETE: self.coord.offset_delete,
            CONSUMER_HEARTBEAT: self.coord.consumer_group_heartbeat,
            CONSUMER_DESCRIBE: self.coord.consumer_group_describe,
        }

    async def call(self, key: int, version: int, req: dict[str, Any]) -> dict[str, Any]:
        reg = registry()
        request_codec = reg.request(key, version)
        decoded = request_codec.decode_all(request_codec.encode_bytes(req))
        if key == FIND_COORDINATOR:
            resp = await self.coord.find_coordinator(decoded, version, (1, "localhost", 9092))
        else:
            resp = await self.handlers[key](decoded, version, client_id="client", client_host="/10.0.0.1")
        response_codec = reg.response(key, version)
        return response_codec.decode_all(response_codec.encode_bytes(resp))


def _versions(key: int) -> list[int]:
    api = registry().api(key)
    assert api is not None
    return sorted(api.versions)


@run
async def test_full_cycle_at_every_version() -> None:
    join_versions = _versions(JOIN)
    assert join_versions == list(range(10))
    sub = subscription(["orders"])
    for jv in join_versions:
        w = Wire()
        group = f"group-v{jv}"
        sv = min(jv, max(_versions(SYNC)))
        hv = min(jv, max(_versions(HEARTBEAT)))
        lv = min(jv, max(_versions(LEAVE)))
        join_req = {
            "group_id": group,
            "session_timeout_ms": 10_000,
            "rebalance_timeout_ms": 20_000,
            "member_id": "",
            "protocol_type": "consumer",
            "protocols": [{"name": "range", "metadata": sub}],
            "reason": "starting",
        }
        first = await w.call(JOIN, jv, join_req)
        if jv >= 4:
            assert first["error_code"] == 79, jv
            join_req["member_id"] = first["member_id"]
            first = await w.call(JOIN, jv, join_req)
        assert first["error_code"] == 0, jv
        member = first["member_id"]
        assert first["generation_id"] == 1 and first["leader"] == member
        assert bytes(first["members"][0]["metadata"]) == sub
        if jv >= 7:
            assert first["protocol_type"] == "consumer"

        sync_req = {
            "group_id": group,
            "generation_id": 1,
            "member_id": member,
            "protocol_type": "consumer",
            "protocol_name": "range",
            "assignments": [{"member_id": member, "assignment": b"\x00\x01"}],
        }
        synced = await w.call(SYNC, sv, sync_req)
        assert synced["error_code"] == 0 and bytes(synced["assignment"]) == b"\x00\x01"
        if sv >= 5:
            assert (synced["protocol_type"], synced["protocol_name"]) == ("consumer", "range")

        hb = await w.call(HEARTBEAT, hv, {"group_id": group, "generation_id": 1, "member_id": member})
        assert hb["error_code"] == 0

        for cv in _versions(OFFSET_COMMIT):
            commit = await w.call(
                OFFSET_COMMIT,
                cv,
                {
                    "group_id": group,
                    "generation_id_or_member_epoch": 1,
                    "member_id": member,
                    "retention_time_ms": -1,
                    "topics": [
                        {
                            **_topic("orders", cv, 10),
                            "partitions": [
                                {
                                    "partition_index": 0,
                                    "committed_offset": cv,
                                    "committed_metadata": f"v{cv}",
                                },
                                {"partition_index": 9, "committed_offset": cv, "committed_metadata": None},
                            ],
                        }
                    ],
                },
            )
            assert [p["error_code"] for p in commit["topics"][0]["partitions"]] == [0, 3], cv
            if cv >= 10:
                assert commit["topics"][0]["topic_id"] == CATALOGUE["orders"].topic_id
        last = max(_versions(OFFSET_COMMIT))

        for fv in _versions(OFFSET_FETCH):
            if fv >= 8:
                req: dict[str, Any] = {
                    "groups": [
                        {
                            "group_id": group,
                            "topics": [{**_topic("orders", fv, 10), "partition_indexes": [0, 1]}],
                        }
                    ]
                }
                topics = (await w.call(OFFSET_FETCH, fv, req))["groups"][0]["topics"]
            else:
                req = {"group_id": group, "topics": [{"name": "orders", "partition_indexes": [0, 1]}]}
                topics = (await w.call(OFFSET_FETCH, fv, req))["topics"]
            parts = topics[0]["partitions"]
            assert [(p["committed_offset"], p["metadata"]) for p in parts] == [
                (last, f"v{last}"),
                (-1, ""),
            ], fv

        described = await w.call(
            DESCRIBE, min(jv, 5), {"groups": [group], "include_authorized_operations": True}
        )
        d = described["groups"][0]
        assert d["group_state"] == "Stable" and d["members"][0]["client_host"] == "/10.0.0.1"

        if lv >= 3:
            leave_req: dict[str, Any] = {
                "group_id": group,
                "members": [{"member_id": member, "reason": "bye"}],
            }
        else:
            leave_req = {"group_id": group, "member_id": member}
        left = await w.call(LEAVE, lv, leave_req)
        assert left["error_code"] == 0
        if lv >= 3:
            assert left["members"][0]["error_code"] == 0

        for listv in _versions(LIST):
            listed = await w.call(LIST, listv, {"states_filter": ["Empty"], "types_filter": []})
            assert [g["group_id"] for g in listed["groups"]] == [group]

        deleted = await w.call(
            OFFSET_DELETE,
            0,
            {"group_id": group, "topics": [{"name": "orders", "partitions": [{"partition_index": 0}]}]},
        )
        assert deleted["error_code"] == 0
        for dv in _versions(DELETE):
            result = await w.call(DELETE, dv, {"groups_names": [group]})
            assert result["results"][0]["error_code"] in (0, 69)


@run
async def test_errors_encode_at_every_version() -> None:
    w = Wire()
    for jv in _versions(JOIN):
        bad = await w.call(
            JOIN,
            jv,
            {
                "group_id": "g",
                "session_timeout_ms": 1,
                "member_id": "",
                "protocol_type": "consumer",
                "protocols": [],
            },
        )
        assert bad["error_code"] == 26 and bad["generation_id"] == -1
    for sv in _versions(SYNC):
        assert (await w.call(SYNC, sv, {"group_id": "g", "generation_id": 1, "member_id": "m"}))[
            "error_code"
        ] == 25
    for fv in _versions(FIND_COORDINATOR):
        req: dict[str, Any] = {"key": "g", "key_type": 0, "coordinator_keys": ["g", "h"]}
        found = await w.call(FIND_COORDINATOR, fv, req)
        if fv >= 4:
            assert [(c["key"], c["node_id"], c["port"]) for c in found["coordinators"]] == [
                ("g", 1, 9092),
                ("h", 1, 9092),
            ]
        else:
            assert (found["error_code"], found["node_id"], found["host"]) == (0, 1, "localhost")
    for dv in _versions(DESCRIBE):
        d = (await w.call(DESCRIBE, dv, {"groups": ["missing"]}))["groups"][0]
        # From version 6 a group that does not exist is also GROUP_ID_NOT_FOUND.
        assert (d["error_code"], d["group_state"]) == (69 if dv >= 6 else 0, "Dead")
        if dv >= 3:
            assert d["authorized_operations"] == -2147483648
    for fv in _versions(OFFSET_FETCH):
        if fv < 2:
            continue
        req = (
            {"groups": [{"group_id": "missing", "topics": None}]}
            if fv >= 8
            else {"group_id": "x", "topics": None}
        )
        await w.call(OFFSET_FETCH, fv, req)
    await asyncio.sleep(0)


@run
async def test_consumer_group_apis_at_every_version() -> None:
    assert _versions(CONSUMER_HEARTBEAT) == [0, 1] and _versions(CONSUMER_DESCRIBE) == [0, 1]
    for v in _versions(CONSUMER_HEARTBEAT):
        w = Wire()
        group = f"cg-v{v}"
        joined = await w.call(
            CONSUMER_HEARTBEAT,
            v,
            {
                "group_id": group,
                "member_id": "" if v == 0 else "client-chosen",
                "member_epoch": 0,
                "rebalance_timeout_ms": 30_000,
                "subscribed_topic_names": ["orders"],
                "subscribed_topic_regex": None if v == 0 else "^pay.*",
                "topic_partitions": [],
            },
        )
        assert joined["error_code"] == 0 and joined["member_epoch"] == 1, joined
        member = joined["member_id"]
        assert member == "client-chosen" if v >= 1 else len(member) == 36
        assigned = {t["topic_id"]: sorted(t["partitions"]) for t in joined["assignment"]["topic_partitions"]}
        expected = {CATALOGUE["orders"].topic_id: [0, 1, 2]}
        if v >= 1:
            expected[CATALOGUE["payments"].topic_id] = [0, 1]
        assert assigned == expected
        again = await w.call(
            CONSUMER_HEARTBEAT, v, {"group_id": group, "member_id": member, "member_epoch": 1}
        )
        assert (again["error_code"], again["assignment"]) == (0, None)
        for dv in _versions(CONSUMER_DESCRIBE):
            d = (await w.call(CONSUMER_DESCRIBE, dv, {"group_ids": [group, "none"]}))["groups"]
            assert (d[0]["error_code"], d[0]["group_state"], d[0]["assignor_name"]) == (
                0,
                "Stable",
                "uniform",
            )
            m = d[0]["members"][0]
            assert (m["member_id"], m["member_epoch"], m["client_host"]) == (member, 1, "/10.0.0.1")
            assert m["member_type"] == (1 if dv >= 1 else -1)
            names = {t["topic_name"] for t in m["assignment"]["topic_partitions"]}
            assert names == ({"orders", "payments"} if v >= 1 else {"orders"})
            assert d[1]["error_code"] == 69
        left = await w.call(
            CONSUMER_HEARTBEAT, v, {"group_id": group, "member_id": member, "member_epoch": -1}
        )
        assert (left["error_code"], left["member_epoch"]) == (0, -1)
        bad = await w.call(CONSUMER_HEARTBEAT, v, {"group_id": group, "member_id": member, "member_epoch": 3})
        assert bad["error_code"] == 25  # UNKNOWN_MEMBER_ID: the group is empty now
