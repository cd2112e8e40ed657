"""The classic group protocol: JoinGroup / SyncGroup / Heartbeat / LeaveGroup and the group state machine."""

from __future__ import annotations

import asyncio

from test_groups_support import Harness, form_group, run, settle, subscription

from kafkite.protocol.errors import ErrorCode as E

G = "g1"


@run
async def test_single_member_dance_with_member_id_required() -> None:
    h = Harness()
    first = await h.join(G, version=5)
    assert first["error_code"] == E.MEMBER_ID_REQUIRED
    member_id = first["member_id"]
    assert member_id.startswith("client-")
    assert first["generation_id"] == -1
    assert h.state(G) == "Empty"

    joined = await h.join(G, member_id, version=5)
    assert joined["error_code"] == 0
    assert joined["generation_id"] == 1
    assert joined["leader"] == member_id
    assert joined["member_id"] == member_id
    assert joined["protocol_name"] == "range"
    assert [m["member_id"] for m in joined["members"]] == [member_id]
    assert joined["members"][0]["metadata"] == subscription(["orders"])
    assert h.state(G) == "CompletingRebalance"

    synced = await h.sync(G, member_id, 1, {member_id: b"all-of-it"}, version=5)
    assert synced == {
        "error_code": 0,
        "protocol_type": "consumer",
        "protocol_name": "range",
        "assignment": b"all-of-it",
        "throttle_time_ms": 0,
    }
    assert h.state(G) == "Stable"
    assert await h.heartbeat(G, member_id, 1) == 0


@run
async def test_old_versions_get_a_member_id_directly() -> None:
    h = Harness()
    joined = await h.join(G, version=3)
    assert joined["error_code"] == 0
    assert joined["member_id"].startswith("client-")
    assert joined["generation_id"] == 1
    # v0: no rebalance timeout in the request; the session timeout stands in for it.
    v0 = await h.join("g0", version=0, session=7000)
    assert v0["error_code"] == 0
    assert h.coord.describe("g0")["members"][0]["rebalance_timeout_ms"] == 7000  # type: ignore[index]


@run
async def test_protocol_name_is_an_empty_string_before_v7_on_errors() -> None:
    h = Harness()
    bad = await h.join(G, version=6, session=10)
    assert bad["error_code"] == E.INVALID_SESSION_TIMEOUT
    assert bad["protocol_name"] == ""
    bad7 = await h.join(G, version=7, session=10)
    assert bad7["protocol_name"] is None


@run
async def test_three_members_join_sync_and_heartbeat() -> None:
    h = Harness()
    a = (await h.join(G))["member_id"]
    ja = await h.join(G, a)
    assert ja["generation_id"] == 1
    assert (await h.sync(G, a, 1, {a: b"A1"}))["assignment"] == b"A1"

    # B arrives: the group starts rebalancing; A learns it from its heartbeat.
    b = (await h.join(G, client_id="b"))["member_id"]
    jb = asyncio.ensure_future(h.join(G, b, client_id="b"))
    await settle()
    assert h.state(G) == "PreparingRebalance"
    assert not jb.done()
    assert await h.heartbeat(G, a, 1) == E.REBALANCE_IN_PROGRESS
    # A commit from the old generation is still accepted while preparing.
    assert await h.commit(G, {("orders", 0): 5}, member_id=a, generation=1) == {("orders", 0): 0}

    c = (await h.join(G, client_id="c"))["member_id"]
    jc = asyncio.ensure_future(h.join(G, c, client_id="c"))
    await settle()
    assert not jc.done()
    ja2 = await h.join(G, a)
    rb, rc = await jb, await jc
    assert ja2["generation_id"] == rb["generation_id"] == rc["generation_id"] == 2
    assert ja2["leader"] == rb["leader"] == rc["leader"] == a
    assert sorted(m["member_id"] for m in ja2["members"]) == sorted([a, b, c])
    assert rb["members"] == [] and rc["members"] == []

    # Followers sync first and wait for the leader's assignment.
    sb = asyncio.ensure_future(h.sync(G, b, 2))
    sc = asyncio.ensure_future(h.sync(G, c, 2))
    await settle()
    assert not sb.done() and not sc.done()
    sa = await h.sync(G, a, 2, {a: b"A", b: b"B"})  # c gets an empty assignment
    assert sa["assignment"] == b"A"
    assert (await sb)["assignment"] == b"B"
    assert (await sc)["assignment"] == b""
    assert h.state(G) == "Stable"
    for m in (a, b, c):
        assert await h.heartbeat(G, m, 2) == 0
    assert await h.heartbeat(G, b, 1) == E.ILLEGAL_GENERATION


@run
async def test_initial_rebalance_delay_gathers_members() -> None:
    h = Harness(initial_rebalance_delay_ms=3000)
    tasks = [asyncio.ensure_future(h.join(G, version=3, client_id=f"c{i}")) for i in range(3)]
    await settle()
    assert not any(t.done() for t in tasks)
    h.advance(2999)
    await settle()
    assert not any(t.done() for t in tasks)
    h.advance(1)  # first delay over, but new members came in: one more delay
    await settle()
    assert not any(t.done() for t in tasks)
    h.advance(3000)
    results = await asyncio.gather(*tasks)
    assert {r["generation_id"] for r in results} == {1}
    leaders = [r for r in results if r["members"]]
    assert len(leaders) == 1 and len(leaders[0]["members"]) == 3


@run
async def test_session_timeout_bounds() -> None:
    h = Harness()
    assert (await h.join(G, session=5999))["error_code"] == E.INVALID_SESSION_TIMEOUT
    assert (await h.join(G, session=1_800_001))["error_code"] == E.INVALID_SESSION_TIMEOUT
    assert (await h.join(G, session=6000))["error_code"] == E.MEMBER_ID_REQUIRED
    h2 = Harness(min_session_timeout_ms=100)
    assert (await h2.join(G, session=100, version=3))["error_code"] == 0


@run
async def test_invalid_and_unknown_ids() -> None:
    h = Harness()
    assert (await h.join(""))["error_code"] == E.INVALID_GROUP_ID
    assert (await h.join("nope", "some-member"))["error_code"] == E.UNKNOWN_MEMBER_ID
    assert (await h.sync("nope", "m", 1))["error_code"] == E.UNKNOWN_MEMBER_ID
    assert await h.heartbeat("nope", "m", 1) == E.UNKNOWN_MEMBER_ID
    assert await h.heartbeat("", "m", 1) == E.INVALID_GROUP_ID
    [a], gen = await form_group(h, G, 1)
    assert (await h.join(G, "stranger"))["error_code"] == E.UNKNOWN_MEMBER_ID
    assert (await h.sync(G, "stranger", gen))["error_code"] == E.UNKNOWN_MEMBER_ID
    assert (await h.sync(G, a, gen + 1))["error_code"] == E.ILLEGAL_GENERATION
    assert (await h.sync(G, a, gen, protocol_name="roundrobin"))[
        "error_code"
    ] == E.INCONSISTENT_GROUP_PROTOCOL
    assert (await h.sync(G, a, gen, protocol_type="connect"))["error_code"] == E.INCONSISTENT_GROUP_PROTOCOL
    assert await h.heartbeat(G, "stranger", gen) == E.UNKNOWN_MEMBER_ID


@run
async def test_inconsistent_group_protocol() -> None:
    h = Harness()
    await form_group(h, G, 1)
    other_type = await h.join(G, protocol_type="connect")
    assert other_type["error_code"] == E.INCONSISTENT_GROUP_PROTOCOL
    no_common = await h.join(G, protocols=[("sticky", b"")])
    assert no_common["error_code"] == E.INCONSISTENT_GROUP_PROTOCOL
    assert (await h.join("g2", protocols=[]))["error_code"] == E.INCONSISTENT_GROUP_PROTOCOL
    assert (await h.join("g3", protocol_type=""))["error_code"] == E.INCONSISTENT_GROUP_PROTOCOL


@run
async def test_protocol_chosen_by_votes_among_common_ones() -> None:
    h = Harness(initial_rebalance_delay_ms=100)
    prefs = [
        [("range", b"r"), ("roundrobin", b"rr"), ("sticky", b"s")],
        [("roundrobin", b"rr"), ("range", b"r")],
        [("roundrobin", b"rr"), ("range", b"r"), ("sticky", b"s")],
    ]
    tasks = [
        asyncio.ensure_future(h.join(G, version=3, protocols=p, client_id=f"c{i}"))
        for i, p in enumerate(prefs)
    ]
    await settle()
    h.advance(100)  # members kept arriving during the first delay: one more
    h.advance(100)
    results = await asyncio.gather(*tasks)
    assert {r["protocol_name"] for r in results} == {"roundrobin"}
    leader = next(r for r in results if r["members"])
    assert {m["metadata"] for m in leader["members"]} == {b"rr"}


@run
async def test_session_expiry_removes_member() -> None:
    h = Harness()
    (a, b), gen = await form_group(h, G, 2, session=10_000)
    h.advance(6000)
    assert await h.heartbeat(G, a, gen) == 0
    h.advance(4000)  # b's session is over, a's is not
    assert h.state(G) == "PreparingRebalance"
    assert [m["member_id"] for m in h.coord.describe(G)["members"]] == [a]  # type: ignore[index]
    assert await h.heartbeat(G, a, gen) == E.REBALANCE_IN_PROGRESS
    rejoin = await h.join(G, a)
    assert rejoin["generation_id"] == gen + 1
    assert [m["member_id"] for m in rejoin["members"]] == [a]
    assert await h.heartbeat(G, b, gen) == E.UNKNOWN_MEMBER_ID
    # The last member expiring leaves the group Empty.
    await h.sync(G, a, gen + 1, {a: b"x"})
    h.advance(10_000)
    assert h.state(G) == "Empty"


@run
async def test_rebalance_timeout_kicks_out_slow_member() -> None:
    h = Harness()
    (a, b), gen = await form_group(h, G, 2, session=10_000, rebalance=20_000)
    leader = h.coord.describe(G)["leader"]  # type: ignore[index]
    follower = b if leader == a else a
    # The leader rejoins (e.g. after a metadata change): a rebalance starts even with unchanged metadata.
    rejoin = asyncio.ensure_future(h.join(G, leader, rebalance=20_000))
    await settle()
    assert h.state(G) == "PreparingRebalance"
    # The follower keeps heartbeating (its poll loop is stuck past max.poll.interval.ms) but never rejoins.
    for _ in range(3):
        h.advance(6000)
        assert await h.heartbeat(G, follower, gen) == E.REBALANCE_IN_PROGRESS
        assert not rejoin.done()
    h.advance(2000)  # 20 s after the rebalance started
    result = await rejoin
    assert result["generation_id"] == gen + 1
    assert [m["member_id"] for m in result["members"]] == [leader]
    assert await h.heartbeat(G, follower, gen) == E.UNKNOWN_MEMBER_ID
    assert (await h.join(G, follower))["error_code"] == E.UNKNOWN_MEMBER_ID


@run
async def test_follower_rejoin_in_stable_with_same_metadata_needs_no_rebalance() -> None:
    h = Harness()
    (a, b), gen = await form_group(h, G, 2)
    leader = h.coord.describe(G)["leader"]  # type: ignore[index]
    follower = b if leader == a else a
    again = await h.join(G, follower)
    assert again["error_code"] == 0 and again["generation_id"] == gen and again["members"] == []
    assert h.state(G) == "Stable"
    # With new metadata it rebalances.
    changed = asyncio.ensure_future(
        h.join(G, follower, protocols=[("range", subscription(["orders", "audit"]))])
    )
    await settle()
    assert h.state(G) == "PreparingRebalance"
    await h.join(G, leader)
    assert (await changed)["generation_id"] == gen + 1


@run
async def test_cooperative_second_round() -> None:
    """Incremental cooperative rebalancing: members rejoin again right after the first round."""
    h = Harness()
    coop = "cooperative-sticky"

    def proto(owned: dict[str, list[int]]) -> list[tuple[str, bytes]]:
        return [(coop, subscription(["orders"], version=1, owned=owned))]

    a = (await h.join(G, version=9, protocols=proto({})))["member_id"]
    await h.join(G, a, version=9, protocols=proto({}))
    await h.sync(G, a, 1, {a: b"orders-0,1,2"})

    # b joins; a rejoins owning everything.
    b = (await h.join(G, version=9, protocols=proto({}), client_id="b"))["member_id"]
    jb = asyncio.ensure_future(h.join(G, b, version=9, protocols=proto({}), client_id="b"))
    await settle()
    assert await h.heartbeat(G, a, 1) == E.REBALANCE_IN_PROGRESS
    ja = await h.join(G, a, version=9, protocols=proto({"orders": [0, 1, 2]}))
    rb = await jb
    assert ja["generation_id"] == rb["generation_id"] == 2
    sb = asyncio.ensure_future(h.sync(G, b, 2))
    await h.sync(G, a, 2, {a: b"orders-0,1", b: b""})  # partition 2 revoked from a, not yet given to b
    assert (await sb)["assignment"] == b""

    # Second round: a revoked a partition, so it rejoins at once with its new owned partitions.
    ja3 = asyncio.ensure_future(h.join(G, a, version=9, protocols=proto({"orders": [0, 1]})))
    await settle()
    assert h.state(G) == "PreparingRebalance"
    assert await h.heartbeat(G, b, 2) == E.REBALANCE_IN_PROGRESS
    rb3 = await h.join(G, b, version=9, protocols=proto({}))
    r3 = await ja3
    assert r3["generation_id"] == rb3["generation_id"] == 3
    assert r3["skip_assignment"] is False
    sb3 = asyncio.ensure_future(h.sync(G, b, 3, version=5, protocol_type="consumer", protocol_name=coop))
    sa3 = await h.sync(G, a, 3, {a: b"orders-0,1", b: b"orders-2"}, version=5, protocol_name=coop)
    assert sa3["protocol_name"] == coop
    assert (await sb3)["assignment"] == b"orders-2"
    assert h.state(G) == "Stable"


@run
async def test_static_member_replacement_without_rebalance_and_fencing() -> None:
    h = Harness()
    a = (await h.join(G, instance="i-a"))["member_id"]  # static members get an id at once
    assert a.startswith("i-a-")
    b_first = asyncio.ensure_future(h.join(G, instance="i-b", client_id="b"))
    await settle()
    await h.join(G, a, instance="i-a")
    b = (await b_first)["member_id"]
    gen = h.coord.describe(G)["generation_id"]  # type: ignore[index]
    syncs = [asyncio.ensure_future(h.sync(G, b, gen, instance="i-b"))]
    await settle()
    await h.sync(G, a, gen, {a: b"A", b: b"B"}, instance="i-a")
    assert (await syncs[0])["assignment"] == b"B"
    entries_before = len(h.log.entries)

    # b restarts: same instance id, no member id, same protocols.
    again = await h.join(G, instance="i-b", client_id="b")
    b2 = again["member_id"]
    assert again["error_code"] == 0 and b2 != b and b2.startswith("i-b-")
    assert again["generation_id"] == gen
    assert again["leader"] == a and again["members"] == []
    assert h.state(G) == "Stable"
    assert len(h.log.entries) == entries_before + 1  # the new member id is made durable
    assert await h.heartbeat(G, b, gen, instance="i-b") == E.FENCED_INSTANCE_ID
    assert (await h.sync(G, b, gen, instance="i-b"))["error_code"] == E.FENCED_INSTANCE_ID
    assert (await h.join(G, b, instance="i-b"))["error_code"] == E.FENCED_INSTANCE_ID
    assert (await h.commit(G, {("orders", 0): 1}, member_id=b, generation=gen, instance="i-b")) == {
        ("orders", 0): E.FENCED_INSTANCE_ID
    }
    assert (await h.sync(G, b2, gen, instance="i-b"))["assignment"] == b"B"
    assert await h.heartbeat(G, b2, gen, instance="i-b") == 0

    # The leader restarting is replaced the same way and keeps being told the old leader id.
    again_a = await h.join(G, instance="i-a")
    assert again_a["error_code"] == 0 and again_a["leader"] == a
    assert h.coord.describe(G)["leader"] == again_a["member_id"]  # type: ignore[index]
    assert h.state(G) == "Stable"


@run
async def test_static_member_with_new_protocol_triggers_rebalance() -> None:
    h = Harness()
    a = (await h.join(G, instance="i-a", protocols=[("range", b"1")]))["member_id"]
    await h.sync(G, a, 1, {a: b"A"}, instance="i-a")
    # Same instance, new member id, a preferred protocol that changes the group's choice: rebalance.
    result = await h.join(G, instance="i-a", protocols=[("sticky", b"2"), ("range", b"1")])
    assert result["generation_id"] == 2 and result["protocol_name"] == "sticky"
    assert result["member_id"] != a and result["leader"] == result["member_id"]
    # Dropping the group's protocol altogether is inconsistent.
    bad = await h.join(G, instance="i-a", protocols=[("cooperative-sticky", b"3")])
    assert bad["error_code"] == E.INCONSISTENT_GROUP_PROTOCOL


@run
async def test_static_member_pending_join_is_fenced_by_replacement() -> None:
    h = Harness(initial_rebalance_delay_ms=1000)
    old = asyncio.ensure_future(h.join(G, instance="i-a"))
    await settle()
    old_id = h.coord.describe(G)["members"][0]["member_id"]  # type: ignore[index]
    new = asyncio.ensure_future(h.join(G, instance="i-a"))
    await settle()
    fenced = await old
    assert fenced["error_code"] == E.FENCED_INSTANCE_ID and fenced["member_id"] == old_id
    h.advance(1000)
    assert (await new)["error_code"] == 0


@run
async def test_leave_group_batched_and_single() -> None:
    h = Harness()
    (a, b, c), gen = await form_group(h, G, 3)
    resp = await h.leave(G, [(b, None), (c, None), ("ghost", None)])
    assert resp["error_code"] == 0
    assert [(m["member_id"], m["error_code"]) for m in resp["members"]] == [
        (b, 0),
        (c, 0),
        ("ghost", E.UNKNOWN_MEMBER_ID),
    ]
    assert h.state(G) == "PreparingRebalance"
    rejoin = await h.join(G, a)
    assert rejoin["generation_id"] == gen + 1 and len(rejoin["members"]) == 1
    await h.sync(G, a, gen + 1, {a: b""})
    # v0-2: one member, the error at the top level.
    assert (await h.leave(G, [("ghost", None)], version=1))["error_code"] == E.UNKNOWN_MEMBER_ID
    assert (await h.leave(G, [(a, None)], version=1)) == {"throttle_time_ms": 0, "error_code": 0}
    assert h.state(G) == "Empty"
    assert h.coord.describe(G)["generation_id"] == gen + 2  # type: ignore[index]
    unknown = await h.leave("nope", [("x", None)])
    assert unknown["error_code"] == 0 and unknown["members"][0]["error_code"] == E.UNKNOWN_MEMBER_ID


@run
async def test_leave_by_instance_id() -> None:
    h = Harness()
    a = (await h.join(G, instance="i-a"))["member_id"]
    await h.sync(G, a, 1, {a: b"A"}, instance="i-a")
    wrong = await h.leave(G, [("not-a", "i-a")])
    assert wrong["members"][0]["error_code"] == E.FENCED_INSTANCE_ID
    missing = await h.leave(G, [("", "i-z")])
    assert missing["members"][0]["error_code"] == E.UNKNOWN_MEMBER_ID
    ok = await h.leave(G, [("", "i-a")])
    assert ok["members"][0] == {"member_id": "", "group_instance_id": "i-a", "error_code": 0}
    assert h.state(G) == "Empty"


@run
async def test_leave_wakes_a_pending_join() -> None:
    h = Harness()
    (a, b), gen = await form_group(h, G, 2)
    rejoin = asyncio.ensure_future(h.join(G, a))
    await settle()
    assert not rejoin.done()
    await h.leave(G, [(b, None)])
    assert (await rejoin)["generation_id"] == gen + 1


@run
async def test_missing_sync_removes_member_after_rebalance_timeout() -> None:
    h = Harness()
    timeouts = {"rebalance": 15_000, "session": 20_000}
    (a, b), gen = await form_group(h, G, 2, **timeouts)
    leader = h.coord.describe(G)["leader"]  # type: ignore[index]
    follower = b if leader == a else a
    j1 = asyncio.ensure_future(h.join(G, leader, **timeouts))
    j2 = asyncio.ensure_future(h.join(G, follower, **timeouts))
    await asyncio.gather(j1, j2)
    await h.sync(G, leader, gen + 1, {leader: b"L", follower: b"F"})
    assert h.state(G) == "Stable"
    # The follower never sends SyncGroup for this generation.
    h.advance(15_000)
    assert h.state(G) == "PreparingRebalance"
    assert [m["member_id"] for m in h.coord.describe(G)["members"]] == [leader]  # type: ignore[index]


@run
async def test_pending_member_expires() -> None:
    h = Harness()
    first = await h.join(G, session=10_000)
    h.advance(10_000)
    assert (await h.join(G, first["member_id"]))["error_code"] == E.UNKNOWN_MEMBER_ID


@run
async def test_new_member_join_times_out() -> None:
    h = Harness()
    (a,), gen = await form_group(h, G, 1, rebalance=600_000, session=60_000)
    new = (await h.join(G, rebalance=600_000, session=60_000))["member_id"]
    pending = asyncio.ensure_future(h.join(G, new, rebalance=600_000, session=60_000))
    await settle()
    for _ in range(6):
        assert not pending.done()
        h.advance(50_000)
        assert await h.heartbeat(G, a, gen) == E.REBALANCE_IN_PROGRESS
    result = await pending
    assert result["error_code"] == E.UNKNOWN_MEMBER_ID
    assert (await h.join(G, a, rebalance=600_000, session=60_000))["members"][0]["member_id"] == a


@run
async def test_sync_during_rebalance_and_empty_group() -> None:
    h = Harness()
    (a, b), gen = await form_group(h, G, 2)
    rejoin = asyncio.ensure_future(h.join(G, a))
    await settle()
    assert (await h.sync(G, b, gen))["error_code"] == E.REBALANCE_IN_PROGRESS
    await h.leave(G, [(b, None)])
    await rejoin


@run
async def test_rejoin_during_completing_rebalance_returns_current_generation() -> None:
    h = Harness()
    a = (await h.join(G))["member_id"]
    first = await h.join(G, a)
    assert h.state(G) == "CompletingRebalance"
    again = await h.join(G, a)
    assert again["generation_id"] == first["generation_id"] and again["members"] == first["members"]


@run
async def test_rebalance_cancels_waiting_syncs() -> None:
    h = Harness()
    (a, b), gen = await form_group(h, G, 2)
    leader = h.coord.describe(G)["leader"]  # type: ignore[index]
    follower = b if leader == a else a
    await asyncio.gather(h.join(G, leader), h.join(G, follower))
    waiting = asyncio.ensure_future(h.sync(G, follower, gen + 1))
    await settle()
    # A new member arrives before the leader has synced.
    c = (await h.join(G, client_id="c"))["member_id"]
    jc = asyncio.ensure_future(h.join(G, c, client_id="c"))
    assert (await waiting)["error_code"] == E.REBALANCE_IN_PROGRESS
    await asyncio.gather(h.join(G, leader), h.join(G, follower), jc)
    assert h.coord.describe(G)["generation_id"] == gen + 2  # type: ignore[index]


@run
async def test_group_max_size() -> None:
    h = Harness(max_size=1)
    await form_group(h, G, 1)
    assert (await h.join(G, version=3))["error_code"] == E.GROUP_MAX_SIZE_REACHED


@run
async def test_describe_and_list_groups() -> None:
    h = Harness()
    (a, b), _ = await form_group(h, G, 2)
    await h.commit("simple", {("orders", 0): 1})
    resp = await h.coord.describe_groups(
        {"groups": [G, "simple", "missing"]}, 5, client_id="c", client_host="h"
    )
    stable, simple, missing = resp["groups"]
    assert stable["group_state"] == "Stable" and stable["protocol_type"] == "consumer"
    assert stable["protocol_data"] == "range" and stable["error_code"] == 0
    assert stable["authorized_operations"] == -2147483648
    by_id = {m["member_id"]: m for m in stable["members"]}
    assert set(by_id) == {a, b}
    assert by_id[a]["member_assignment"] == f"assign-{a}".encode()
    assert by_id[a]["member_metadata"] == subscription(["orders"])
    assert by_id[a]["client_host"] == "/127.0.0.1"
    assert simple["group_state"] == "Empty" and simple["protocol_type"] == "" and simple["members"] == []
    assert missing == {
        "error_code": 0,
        "group_id": "missing",
        "group_state": "Dead",
        "protocol_type": "",
        "protocol_data": "",
        "members": [],
        "authorized_operations": -2147483648,
    }
    # While rebalancing, no protocol and no member metadata are shown.
    rejoin = asyncio.ensure_future(h.join(G, a))
    await settle()
    preparing = (await h.coord.describe_groups({"groups": [G]}, 0, client_id="c", client_host="h"))["groups"][
        0
    ]
    assert preparing["group_state"] == "PreparingRebalance" and preparing["protocol_data"] == ""
    assert all(m["member_metadata"] == b"" for m in preparing["members"])

    async def listed(
        version: int, states: list[str] | None = None, types: list[str] | None = None
    ) -> set[str]:
        req = {"states_filter": states or [], "types_filter": types or []}
        out = await h.coord.list_groups(req, version, client_id="c", client_host="h")
        assert out["error_code"] == 0
        return {f"{g['group_id']}:{g['group_state']}:{g['protocol_type']}" for g in out["groups"]}

    assert await listed(3) == {"g1:PreparingRebalance:consumer", "simple:Empty:"}
    assert await listed(4, ["empty"]) == {"simple:Empty:"}
    assert await listed(4, ["PreparingRebalance", "Stable"]) == {"g1:PreparingRebalance:consumer"}
    assert await listed(5, types=["Classic"]) == {"g1:PreparingRebalance:consumer", "simple:Empty:"}
    assert await listed(5, types=["consumer"]) == set()
    await h.leave(G, [(b, None)])
    await rejoin


@run
async def test_delete_groups() -> None:
    h = Harness()
    (a,), gen = await form_group(h, G, 1)
    await h.commit(G, {("orders", 0): 10}, member_id=a, generation=gen)
    await h.commit("simple", {("orders", 1): 3})
    req = {"groups_names": [G, "simple", "missing"]}
    resp = await h.coord.delete_groups(req, 2, client_id="c", client_host="h")
    assert resp["results"] == [
        {"group_id": G, "error_code": E.NON_EMPTY_GROUP},
        {"group_id": "simple", "error_code": 0},
        {"group_id": "missing", "error_code": E.GROUP_ID_NOT_FOUND},
    ]
    assert h.coord.committed_offsets("simple") == {}
    assert h.coord.describe("simple") is None
    await h.leave(G, [(a, None)])
    resp = await h.coord.delete_groups({"groups_names": [G, G]}, 0, client_id="c", client_host="h")
    assert [r["error_code"] for r in resp["results"]] == [0, E.GROUP_ID_NOT_FOUND]
    assert await h.fetch(G, {"orders": [0]}) == {("orders", 0): (-1, "", 0)}


@run
async def test_find_coordinator() -> None:
    h = Harness()
    node = (7, "broker.local", 9092)
    v0 = await h.coord.find_coordinator({"key": "g"}, 0, node)
    assert (v0["error_code"], v0["node_id"], v0["host"], v0["port"]) == (0, 7, "broker.local", 9092)
    txn = await h.coord.find_coordinator({"key": "tx", "key_type": 1}, 3, node)
    assert txn["error_code"] == 0 and txn["node_id"] == 7
    bad = await h.coord.find_coordinator({"key": "x", "key_type": 5}, 2, node)
    assert bad["error_code"] == E.INVALID_REQUEST and bad["node_id"] == -1
    v4 = await h.coord.find_coordinator({"key_type": 0, "coordinator_keys": ["a", "b"]}, 4, node)
    assert [(c["key"], c["node_id"], c["host"], c["port"], c["error_code"]) for c in v4["coordinators"]] == [
        ("a", 7, "broker.local", 9092, 0),
        ("b", 7, "broker.local", 9092, 0),
    ]


@run
async def test_background_task_runs_timers() -> None:
    """With the real clock, start() expires sessions without anyone calling tick()."""
    from kafkite.broker.groups import GroupConfig, GroupCoordinator

    coord = GroupCoordinator(lambda t: 1, config=GroupConfig(min_session_timeout_ms=10))
    await coord.start()
    try:
        req = {
            "group_id": G,
            "session_timeout_ms": 50,
            "rebalance_timeout_ms": 50,
            "member_id": "",
            "protocol_type": "consumer",
            "protocols": [{"name": "range", "metadata": b""}],
        }
        joined = await coord.join_group(req, 3, client_id="c", client_host="h")
        assert joined["error_code"] == 0
        for _ in range(100):
            if coord.describe(G) is not None and coord.describe(G)["state"] == "Empty":  # type: ignore[index]
                break
            await asyncio.sleep(0.01)
        assert coord.describe(G)["state"] == "Empty"  # type: ignore[index]
        # A JoinGroup waiting when the coordinator stops is answered.
        h2 = await coord.join_group({**req, "group_id": "g2"}, 3, client_id="c", client_host="h")
        waiting = asyncio.ensure_future(
            coord.join_group({**req, "group_id": "g2"}, 3, client_id="d", client_host="h")
        )
        await asyncio.sleep(0)
        assert h2["error_code"] == 0
    finally:
        await coord.stop()
    assert (await waiting)["error_code"] in (0, E.NOT_COORDINATOR)
