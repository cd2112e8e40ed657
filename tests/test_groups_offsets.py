"""OffsetCommit / OffsetFetch / OffsetDelete and offset retention in the group coordinator."""

from __future__ import annotations

import asyncio

from test_groups_support import Harness, form_group, run, settle, subscription

from kafkite.broker.groups import OffsetAndMetadata
from kafkite.protocol.errors import ErrorCode as E

G = "g1"
DAY = 24 * 60 * 60 * 1000


@run
async def test_simple_consumer_commit_and_fetch() -> None:
    h = Harness()
    errors = await h.commit(
        "simple", {("orders", 0): (42, "checkpoint"), ("orders", 2): (7, None)}, version=2
    )
    assert errors == {("orders", 0): 0, ("orders", 2): 0}
    fetched = await h.fetch("simple", {"orders": [0, 1, 2]}, version=1)
    assert fetched == {
        ("orders", 0): (42, "checkpoint", 0),
        ("orders", 1): (-1, "", 0),
        ("orders", 2): (7, "", 0),
    }
    om = h.coord.committed_offsets("simple")[("orders", 0)]
    assert om == OffsetAndMetadata(42, 0, "checkpoint", h.clock.now, None)
    assert h.state("simple") == "Empty"
    # A later commit replaces the earlier one.
    await h.commit("simple", {("orders", 0): 43})
    assert (await h.fetch("simple", {"orders": [0]}))[("orders", 0)] == (43, "", 0)
    # Unknown group: nothing committed, no error.
    assert await h.fetch("nobody", {"orders": [0]}) == {("orders", 0): (-1, "", 0)}


@run
async def test_every_version_commits() -> None:
    h = Harness()
    for version in range(2, 10):
        group = f"v{version}"
        assert await h.commit(group, {("payments", 1): version}, version=version) == {("payments", 1): 0}
        assert (await h.fetch(group, {"payments": [1]}))[("payments", 1)] == (version, "", 0)


@run
async def test_unknown_topic_or_partition() -> None:
    h = Harness()
    errors = await h.commit(G, {("orders", 1): 1, ("orders", 3): 1, ("ghost", 0): 1, ("audit", -1): 1})
    assert errors == {
        ("orders", 1): 0,
        ("orders", 3): E.UNKNOWN_TOPIC_OR_PARTITION,
        ("ghost", 0): E.UNKNOWN_TOPIC_OR_PARTITION,
        ("audit", -1): E.UNKNOWN_TOPIC_OR_PARTITION,
    }
    assert set(h.coord.committed_offsets(G)) == {("orders", 1)}
    # Nothing valid to commit: no group is created.
    assert await h.commit("g-ghost", {("ghost", 0): 1}) == {("ghost", 0): E.UNKNOWN_TOPIC_OR_PARTITION}
    assert h.coord.describe("g-ghost") is None


@run
async def test_offset_metadata_too_large() -> None:
    h = Harness()
    ok_meta = "x" * 4096
    errors = await h.commit(G, {("orders", 0): (1, ok_meta), ("orders", 1): (2, "y" * 4097)})
    assert errors == {("orders", 0): 0, ("orders", 1): E.OFFSET_METADATA_TOO_LARGE}
    assert (await h.fetch(G, {"orders": [0, 1]})) == {
        ("orders", 0): (1, ok_meta, 0),
        ("orders", 1): (-1, "", 0),
    }
    small = Harness(offset_metadata_max_bytes=3)
    assert await small.commit(G, {("orders", 0): (1, "abcd")}) == {("orders", 0): E.OFFSET_METADATA_TOO_LARGE}


@run
async def test_commit_generation_and_member_checks() -> None:
    h = Harness()
    (a, b), gen = await form_group(h, G, 2)
    tp = ("orders", 0)
    assert await h.commit(G, {tp: 1}, member_id=a, generation=gen) == {tp: 0}
    assert await h.commit(G, {tp: 2}, member_id=a, generation=gen - 1) == {tp: E.ILLEGAL_GENERATION}
    assert await h.commit(G, {tp: 2}, member_id="ghost", generation=gen) == {tp: E.UNKNOWN_MEMBER_ID}
    # A "simple" commit is refused while the group has members.
    assert await h.commit(G, {tp: 2}) == {tp: E.UNKNOWN_MEMBER_ID}
    assert await h.commit(G, {tp: 2}, member_id=a, generation=-1) == {tp: E.ILLEGAL_GENERATION}
    # A generation for a group that does not exist.
    assert await h.commit("nope", {tp: 2}, member_id="m", generation=3) == {tp: E.ILLEGAL_GENERATION}
    assert (await h.fetch(G, {"orders": [0]}))[tp] == (1, "", 0)

    # Between JoinGroup and SyncGroup: REBALANCE_IN_PROGRESS.
    leader = h.coord.describe(G)["leader"]  # type: ignore[index]
    follower = b if leader == a else a
    await asyncio.gather(h.join(G, leader), h.join(G, follower))
    assert h.state(G) == "CompletingRebalance"
    assert await h.commit(G, {tp: 3}, member_id=follower, generation=gen + 1) == {tp: E.REBALANCE_IN_PROGRESS}
    await asyncio.gather(h.sync(G, leader, gen + 1, {}), h.sync(G, follower, gen + 1))
    assert await h.commit(G, {tp: 3}, member_id=follower, generation=gen + 1) == {tp: 0}

    # Once everybody has left, simple commits are allowed again.
    await h.leave(G, [(a, None), (b, None)])
    assert h.state(G) == "Empty"
    assert await h.commit(G, {tp: 4}) == {tp: 0}
    assert await h.commit(G, {tp: 5}, member_id=a, generation=gen + 1) == {tp: E.UNKNOWN_MEMBER_ID}


@run
async def test_commit_keeps_member_alive() -> None:
    h = Harness()
    (a,), gen = await form_group(h, G, 1, session=10_000)
    for _ in range(3):
        h.advance(9_000)
        assert await h.commit(G, {("orders", 0): 1}, member_id=a, generation=gen) == {("orders", 0): 0}
    assert h.state(G) == "Stable"


@run
async def test_fetch_all_partitions_and_batched_groups() -> None:
    h = Harness()
    await h.commit(G, {("orders", 2): (20, "m2"), ("orders", 0): 10, ("payments", 1): 11})
    await h.commit("other", {("audit", 0): 5})
    everything = await h.fetch(G, None, version=2)
    assert everything == {
        ("orders", 0): (10, "", 0),
        ("orders", 2): (20, "m2", 0),
        ("payments", 1): (11, "", 0),
    }
    assert await h.fetch("nobody", None) == {}

    req = {
        "groups": [
            {"group_id": G, "topics": [{"name": "orders", "partition_indexes": [2]}]},
            {"group_id": "other", "topics": None, "member_id": None, "member_epoch": -1},
            {"group_id": "nobody", "topics": None},
        ],
        "require_stable": True,
    }
    resp = await h.coord.offset_fetch(req, 8, client_id="c", client_host="h")
    g1, other, nobody = resp["groups"]
    assert g1["group_id"] == G and g1["error_code"] == 0
    assert g1["topics"] == [
        {
            "name": "orders",
            "partitions": [
                {
                    "partition_index": 2,
                    "committed_offset": 20,
                    "committed_leader_epoch": -1,
                    "metadata": "m2",
                    "error_code": 0,
                }
            ],
        }
    ]
    assert [(t["name"], [p["committed_offset"] for p in t["partitions"]]) for t in other["topics"]] == [
        ("audit", [5])
    ]
    assert nobody == {"group_id": "nobody", "topics": [], "error_code": 0}


@run
async def test_leader_epoch_reported_only_when_asked() -> None:
    from kafkite.broker.groups import GroupCoordinator

    h = Harness()
    await h.commit(G, {("orders", 0): 1})
    assert h.coord.committed_offsets(G)[("orders", 0)].leader_epoch == 0
    req = {"group_id": G, "topics": [{"name": "orders", "partition_indexes": [0]}]}
    resp = await h.coord.offset_fetch(req, 5, client_id="c", client_host="h")
    assert resp["topics"][0]["partitions"][0]["committed_leader_epoch"] == -1
    coord = GroupCoordinator(lambda t: 3, log=h.log, report_leader_epoch=True)
    resp = await coord.offset_fetch(req, 5, client_id="c", client_host="h")
    assert resp["topics"][0]["partitions"][0]["committed_leader_epoch"] == 0


@run
async def test_retention_of_simple_group_counts_from_commit() -> None:
    h = Harness(offsets_retention_ms=7 * DAY)
    await h.commit("simple", {("orders", 0): 1})
    h.clock.advance(3 * DAY)
    await h.commit("simple", {("orders", 1): 2})
    h.clock.advance(4 * DAY)
    assert h.coord.expire_offsets() == 1
    assert set(h.coord.committed_offsets("simple")) == {("orders", 1)}
    h.clock.advance(3 * DAY)
    assert h.coord.expire_offsets() == 1
    assert h.coord.describe("simple") is None  # empty without offsets: gone
    listed = await h.coord.list_groups({}, 4, client_id="c", client_host="h")
    assert listed["groups"] == []


@run
async def test_retention_of_consumer_group_counts_from_becoming_empty() -> None:
    h = Harness(offsets_retention_ms=7 * DAY, offsets_retention_check_interval_ms=60_000)
    (a,), gen = await form_group(h, G, 1, session=30_000)
    await h.commit(G, {("orders", 0): 5}, member_id=a, generation=gen)
    # Long-lived stable group subscribed to "orders": its offsets are kept however old.
    for _ in range(8):
        h.clock.advance(DAY)
        assert await h.heartbeat(G, a, gen) == 0
        h.coord.tick()
        h.coord.expire_offsets()
    assert set(h.coord.committed_offsets(G)) == {("orders", 0)}
    await h.leave(G, [(a, None)])
    assert h.state(G) == "Empty"
    h.advance(7 * DAY - 1)
    h.advance(60_000)  # the periodic check runs
    assert h.coord.committed_offsets(G) == {}
    assert h.coord.describe(G) is None


@run
async def test_stable_consumer_group_expires_unsubscribed_topics_only() -> None:
    h = Harness(offsets_retention_ms=DAY)
    (a,), gen = await form_group(h, G, 1, session=30_000)
    await h.commit(G, {("orders", 0): 1, ("payments", 0): 2}, member_id=a, generation=gen)
    h.clock.advance(DAY)
    assert h.coord.expire_offsets() == 1
    assert set(h.coord.committed_offsets(G)) == {("orders", 0)}


@run
async def test_explicit_retention_time_v2_to_v4() -> None:
    h = Harness()
    await h.commit(G, {("orders", 0): 1}, version=4, retention_ms=60_000)
    await h.commit(G, {("orders", 1): 1}, version=5, retention_ms=60_000)  # ignored after v4
    assert h.coord.committed_offsets(G)[("orders", 0)].expire_timestamp_ms == h.clock.now + 60_000
    assert h.coord.committed_offsets(G)[("orders", 1)].expire_timestamp_ms is None
    h.clock.advance(60_000)
    assert h.coord.expire_offsets() == 1
    assert set(h.coord.committed_offsets(G)) == {("orders", 1)}


@run
async def test_offset_delete() -> None:
    h = Harness()

    async def delete(group: str, parts: dict[str, list[int]]) -> tuple[int, dict[tuple[str, int], int]]:
        req = {
            "group_id": group,
            "topics": [
                {"name": t, "partitions": [{"partition_index": p} for p in ps]} for t, ps in parts.items()
            ],
        }
        resp = await h.coord.offset_delete(req, 0, client_id="c", client_host="h")
        return resp["error_code"], {
            (t["name"], p["partition_index"]): p["error_code"]
            for t in resp["topics"]
            for p in t["partitions"]
        }

    assert await delete("nope", {"orders": [0]}) == (E.GROUP_ID_NOT_FOUND, {})

    # A stable consumer group subscribed to "orders" (and owning partitions of it).
    proto = [("range", subscription(["orders"], version=1, owned={"orders": [0]}))]
    (a,), gen = await form_group(h, G, 1, protocols=proto)
    await h.commit(G, {("orders", 0): 1, ("payments", 0): 2, ("payments", 1): 3}, member_id=a, generation=gen)
    assert await delete(G, {"orders": [0], "payments": [0, 5], "ghost": [0]}) == (
        0,
        {
            ("orders", 0): E.GROUP_SUBSCRIBED_TO_TOPIC,
            ("payments", 0): 0,
            ("payments", 5): E.UNKNOWN_TOPIC_OR_PARTITION,
            ("ghost", 0): E.UNKNOWN_TOPIC_OR_PARTITION,
        },
    )
    assert set(h.coord.committed_offsets(G)) == {("orders", 0), ("payments", 1)}

    # Once empty, any offset can go; with the last one, the group goes too.
    await h.leave(G, [(a, None)])
    assert await delete(G, {"orders": [0], "payments": [1]}) == (0, {("orders", 0): 0, ("payments", 1): 0})
    assert h.coord.describe(G) is None

    # A non-consumer protocol group with members cannot say what it uses.
    [c], _ = await form_group(h, "connect", 1, protocol_type="connect", protocols=[("default", b"\xff")])
    await h.commit("connect", {("audit", 0): 1}, member_id=c, generation=1)
    assert await delete("connect", {"audit": [0]}) == (E.NON_EMPTY_GROUP, {})


@run
async def test_offset_delete_with_unparsable_subscription_is_conservative() -> None:
    h = Harness()
    (a,), gen = await form_group(h, G, 1, protocols=[("range", b"\x00")])
    await h.commit(G, {("audit", 0): 1}, member_id=a, generation=gen)
    req = {"group_id": G, "topics": [{"name": "audit", "partitions": [{"partition_index": 0}]}]}
    resp = await h.coord.offset_delete(req, 0, client_id="c", client_host="h")
    assert resp["topics"][0]["partitions"][0]["error_code"] == E.GROUP_SUBSCRIBED_TO_TOPIC


@run
async def test_commit_waits_for_nothing() -> None:
    """Offset commits answer at once, even while a rebalance of the same group waits."""
    h = Harness()
    (a, b), gen = await form_group(h, G, 2)
    pending = asyncio.ensure_future(h.join(G, a))
    await settle()
    assert await h.commit(G, {("orders", 0): 9}, member_id=b, generation=gen) == {("orders", 0): 0}
    await h.leave(G, [(b, None)])
    await pending
