"""Classic and consumer groups under one group id: conversions both ways, classic members inside."""

from __future__ import annotations

import asyncio
from typing import Any

from test_groups_support import ConsumerHarness, run, settle, subscription

from kafkite.broker.groups.consumer import embedded
from kafkite.protocol.errors import ErrorCode as E

G = "mixed"


def decode(assignment: bytes) -> dict[str, list[int]]:
    return {t: sorted(ps) for t, ps in embedded.parse_assignment(bytes(assignment)).partitions}


async def classic_group(h: ConsumerHarness, assignments: dict[str, dict[str, list[int]]]) -> dict[str, str]:
    """A stable classic group (protocol type consumer) with one member per entry; returns name -> id."""
    protocols = [("range", subscription(["orders"], 1))]
    ids: dict[str, str] = {}
    for name in assignments:
        task = asyncio.ensure_future(h.join(G, client_id=name, version=3, protocols=protocols))
        await settle()
        rejoins = [
            asyncio.ensure_future(h.join(G, mid, client_id=n, version=3, protocols=protocols))
            for n, mid in ids.items()
        ]
        results = await asyncio.gather(task, *rejoins)
        assert all(r["error_code"] == 0 for r in results), results
        ids[name] = results[0]["member_id"]
        generation = results[0]["generation_id"]
        leader = results[0]["leader"]
        wanted = {ids[n]: embedded.serialize_assignment(a, 1) for n, a in assignments.items() if n in ids}
        syncs = [
            asyncio.ensure_future(h.sync(G, mid, generation, wanted if mid == leader else None))
            for mid in ids.values()
        ]
        for r in await asyncio.gather(*syncs):
            assert r["error_code"] == 0, r
    return ids


async def classic_rejoin(
    h: ConsumerHarness, member_id: str, owned: dict[str, list[int]] | None = None
) -> dict[str, Any]:
    return await h.join(G, member_id, version=5, protocols=[("range", subscription(["orders"], 1, owned))])


@run
async def test_empty_groups_change_type_freely() -> None:
    h = ConsumerHarness()
    await h.commit(G, {("orders", 0): 42})
    assert h.coord.groups[G].group_type.value == "classic"
    r = await h.hb(G, "m1", 0, topics=["orders"])
    assert r["error_code"] == 0 and h.coord.groups[G].group_type.value == "consumer"
    assert h.coord.committed_offsets(G)[("orders", 0)].offset == 42
    await h.hb(G, "m1", -1)
    # Empty again: a classic member turns it back into a classic group.
    first = await h.join(G, version=3)
    assert first["error_code"] == 0 and h.coord.groups[G].group_type.value == "classic"
    assert h.coord.committed_offsets(G)[("orders", 0)].offset == 42


@run
async def test_live_classic_group_upgraded_member_by_member() -> None:
    h = ConsumerHarness()
    ids = await classic_group(h, {"a": {"orders": [0, 1]}, "b": {"orders": [2]}})
    generation = h.coord.describe(G)["generation_id"]  # type: ignore[index]
    # A consumer-protocol member joins the live classic group: it becomes a consumer group.
    c = await h.hb(G, "c1", 0, topics=["orders"])
    assert c["error_code"] == 0
    group = h.coord.groups[G]
    assert group.group_type.value == "consumer" and group.member_count == 3
    # The classic members learn of the rebalance through Heartbeat and rejoin.
    assert await h.heartbeat(G, ids["a"], generation) == E.REBALANCE_IN_PROGRESS
    owners: dict[int, str] = {}
    for _ in range(4):
        for name in ("a", "b"):
            mid = ids[name]
            owned = [p for p, o in owners.items() if o == name]
            joined = await classic_rejoin(h, mid, {"orders": owned} if owned else {})
            assert joined["error_code"] == 0, joined
            assert joined["leader"] == "" and joined["protocol_name"] == "range"
            synced = await h.sync(
                G, mid, joined["generation_id"], None, protocol_type="consumer", protocol_name="range"
            )
            if synced["error_code"] == E.REBALANCE_IN_PROGRESS:
                continue
            assert synced["error_code"] == 0, synced
            for p in [p for p, o in owners.items() if o == name]:
                del owners[p]
            for p in decode(synced["assignment"]).get("orders", []):
                assert p not in owners, "a partition owned twice"
                owners[p] = name
        r = await h.hb(
            G, "c1", c["member_epoch"], owned={"orders": [p for p, o in owners.items() if o == "c"]}
        )
        c = {**c, "member_epoch": r["member_epoch"]}
        if r["assignment"] is not None:
            for p in [p for p, o in owners.items() if o == "c"]:
                del owners[p]
            for p in h.assigned(r).get("orders", []):
                assert p not in owners, "a partition owned twice"
                owners[p] = "c"
    assert sorted(owners) == [0, 1, 2] and set(owners.values()) == {"a", "b", "c"}
    described = h.coord.consumer.describe([G], 1)[0]
    assert sorted(m["member_type"] for m in described["members"]) == [0, 0, 1]


@run
async def test_last_consumer_member_leaving_turns_the_group_back_to_classic() -> None:
    h = ConsumerHarness()
    ids = await classic_group(h, {"a": {"orders": [0, 1]}, "b": {"orders": [2]}})
    c = await h.hb(G, "c1", 0, topics=["orders"])
    assert c["error_code"] == 0 and h.coord.groups[G].group_type.value == "consumer"
    left = await h.hb(G, "c1", -1)
    assert left["error_code"] == 0
    group = h.coord.groups[G]
    assert group.group_type.value == "classic" and sorted(
        h.coord.describe(G)["members"][i]["member_id"] for i in range(2)
    ) == sorted(ids.values())  # type: ignore[index]
    # Its members rebalance as a classic group again.
    assert h.state(G) == "PreparingRebalance"
    await settle()


@run
async def test_migration_policy_disabled_refuses_the_upgrade() -> None:
    h = ConsumerHarness(consumer_migration_policy="disabled")
    await classic_group(h, {"a": {"orders": [0, 1, 2]}})
    r = await h.hb(G, "c1", 0, topics=["orders"])
    assert r["error_code"] == E.GROUP_ID_NOT_FOUND
    assert "online upgrade is disabled" in str(r["error_message"])
    assert h.coord.groups[G].group_type.value == "classic"


@run
async def test_consumer_group_restarts_with_classic_members() -> None:
    h = ConsumerHarness()
    await classic_group(h, {"a": {"orders": [0, 1]}, "b": {"orders": [2]}})
    await h.hb(G, "c1", 0, topics=["orders"])
    before = h.coord.describe(G)
    h2 = ConsumerHarness(log=h.log, clock=h.clock, catalogue=h.catalogue)
    assert h2.coord.describe(G) == before
