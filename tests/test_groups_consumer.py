"""The consumer group protocol (KIP-848): ConsumerGroupHeartbeat, epochs, reconciliation, timeouts, errors."""

from __future__ import annotations

from collections.abc import Callable, Collection

import pytest
from test_groups_support import ConsumerHarness, Topic, run

from kafkite.protocol.errors import ErrorCode as E
from kafkite.protocol.errors import KafkaProtocolError

G = "cg"


async def join(h: ConsumerHarness, member: str, topics: list[str], **kw: object) -> dict[str, object]:
    resp = await h.hb(G, member, 0, topics=topics, **kw)  # type: ignore[arg-type]
    assert resp["error_code"] == 0, resp
    return resp


@run
async def test_first_member_gets_every_partition() -> None:
    h = ConsumerHarness()
    resp = await join(h, "m1", ["orders"])
    assert resp["member_id"] == "m1" and resp["member_epoch"] == 1
    assert resp["heartbeat_interval_ms"] == 5000
    assert h.assigned(resp) == {"orders": [0, 1, 2]}
    assert h.state(G) == "Stable"
    # A heartbeat that changes nothing carries no assignment.
    again = await h.hb(G, "m1", 1)
    assert again["error_code"] == 0 and again["member_epoch"] == 1 and again["assignment"] is None


@run
async def test_second_member_waits_for_the_first_to_revoke() -> None:
    h = ConsumerHarness()
    await join(h, "m1", ["orders"])
    r2 = await join(h, "m2", ["orders"])
    # The group moved to epoch 2; m2 owns nothing yet: its partitions are still m1's.
    assert r2["member_epoch"] == 2 and h.assigned(r2) == {}
    assert h.state(G) == "Reconciling"
    # m1 is asked to give up partitions and stays in epoch 1 until it does.
    r1 = await h.hb(G, "m1", 1, owned={"orders": [0, 1, 2]})
    kept = h.assigned(r1)["orders"]
    assert r1["member_epoch"] == 1 and len(kept) in (1, 2)
    revoked = sorted({0, 1, 2} - set(kept))
    # Still owning them: nothing moves.
    assert (await h.hb(G, "m2", 2, owned={}))["assignment"] is None
    r1 = await h.hb(G, "m1", 1, owned={"orders": kept})
    assert r1["member_epoch"] == 2
    r2 = await h.hb(G, "m2", 2, owned={})
    assert h.assigned(r2) == {"orders": revoked}
    assert h.state(G) == "Stable"
    d = h.coord.describe(G)
    assert d is not None and d["group_epoch"] == 2 and d["assignment_epoch"] == 2


@run
async def test_member_epoch_checks() -> None:
    h = ConsumerHarness()
    await join(h, "m1", ["orders"])
    assert (await h.hb(G, "m1", 5))["error_code"] == E.FENCED_MEMBER_EPOCH
    assert (await h.hb(G, "nobody", 1))["error_code"] == E.UNKNOWN_MEMBER_ID
    assert (await h.hb("no-such-group", "m1", 1))["error_code"] == E.GROUP_ID_NOT_FOUND
    await join(h, "m2", ["orders"])
    r1 = await h.hb(G, "m1", 1, owned={"orders": [0, 1, 2]})
    kept = h.assigned(r1)["orders"]
    await h.hb(G, "m1", 1, owned={"orders": kept})  # now at epoch 2, previous epoch 1
    # A retry from the previous epoch with a subset of the assignment is accepted (a lost response)...
    ok = await h.hb(G, "m1", 1, owned={"orders": kept})
    assert ok["error_code"] == 0 and ok["member_epoch"] == 2
    # ...but not when it owns a partition it no longer has.
    bad = await h.hb(G, "m1", 1, owned={"orders": [0, 1, 2]})
    assert bad["error_code"] == E.FENCED_MEMBER_EPOCH


@run
async def test_invalid_requests_get_kafkas_errors() -> None:
    h = ConsumerHarness()
    cases = [
        ({"topics": ["orders"], "rebalance_timeout": 1, "member": ""}, "MemberId can't be empty."),
        ({"topics": None, "regex": None}, "SubscribedTopicNames or SubscribedTopicRegex must be set"),
        ({"topics": ["orders"], "owned": {"orders": [0]}}, "TopicPartitions must be empty"),
        ({"topics": ["orders"], "instance": " "}, "InstanceId can't be empty."),
    ]
    for kw, message in cases:
        member = str(kw.pop("member", "m1"))
        resp = await h.hb(G, member, 0, **kw)  # type: ignore[arg-type]
        assert resp["error_code"] == E.INVALID_REQUEST, (kw, resp)
        assert message in str(resp["error_message"])
    assert (await h.hb(G, "m1", -3, topics=["orders"]))["error_code"] == E.INVALID_REQUEST
    assert (await h.hb("", "m1", 0, topics=["orders"]))["error_code"] == E.INVALID_REQUEST
    assert (await h.hb(G, "m1", -2))["error_code"] == E.INVALID_REQUEST  # static leave without instance id
    resp = await h.hb(G, "m1", 0, topics=["orders"], assignor="sticky")
    assert resp["error_code"] == E.UNSUPPORTED_ASSIGNOR
    assert "Supported assignors: uniform, range" in str(resp["error_message"])
    # Version 0 lets the coordinator choose the member id.
    v0 = await h.hb(G, "", 0, topics=["orders"], version=0)
    assert v0["error_code"] == 0 and len(str(v0["member_id"])) == 36


@run
async def test_leaving_member_hands_its_partitions_over() -> None:
    h = ConsumerHarness()
    await join(h, "m1", ["orders"])
    await join(h, "m2", ["orders"])
    r1 = await h.hb(G, "m1", 1, owned={"orders": [0, 1, 2]})
    await h.hb(G, "m1", 1, owned={"orders": h.assigned(r1)["orders"]})
    left = await h.hb(G, "m1", -1)
    assert (left["error_code"], left["member_epoch"]) == (0, -1)
    r2 = await h.hb(G, "m2", 2, owned={})
    assert r2["member_epoch"] == 3 and h.assigned(r2) == {"orders": [0, 1, 2]}
    assert (await h.hb(G, "m1", 2))["error_code"] == E.UNKNOWN_MEMBER_ID


@run
async def test_session_timeout_fences_a_silent_member() -> None:
    h = ConsumerHarness(consumer_session_timeout_ms=45_000)
    await join(h, "m1", ["orders"])
    await join(h, "m2", ["orders"])
    got: dict[str, list[int]] = {}
    epoch = 2
    for _ in range(5):
        h.advance(10_000)
        r2 = await h.hb(G, "m2", epoch, owned={})
        epoch = r2["member_epoch"]
        got = h.assigned(r2) or got
    d = h.coord.describe(G)
    assert d is not None and [m["member_id"] for m in d["members"]] == ["m2"]
    assert got == {"orders": [0, 1, 2]} and epoch == 3


@run
async def test_rebalance_timeout_fences_a_member_that_does_not_revoke() -> None:
    h = ConsumerHarness()
    await join(h, "m1", ["orders"], rebalance_timeout=5_000)
    await join(h, "m2", ["orders"])
    r1 = await h.hb(G, "m1", 1, owned={"orders": [0, 1, 2]})
    assert r1["member_epoch"] == 1
    for _ in range(3):
        h.advance(2_000)
        await h.hb(G, "m1", 1, owned={"orders": [0, 1, 2]})  # alive, but never revokes
    assert (await h.hb(G, "m1", 1))["error_code"] == E.UNKNOWN_MEMBER_ID
    r2 = await h.hb(G, "m2", 2, owned={})
    assert h.assigned(r2) == {"orders": [0, 1, 2]}


@run
async def test_static_member_comes_back_to_its_partitions() -> None:
    h = ConsumerHarness()
    await join(h, "a1", ["orders"], instance="a")
    await join(h, "b1", ["orders"], instance="b")
    ra = await h.hb(G, "a1", 1, owned={"orders": [0, 1, 2]})
    mine = h.assigned(ra)["orders"]
    await h.hb(G, "a1", 1, owned={"orders": mine})
    before = h.coord.describe(G)
    assert before is not None
    epoch = before["group_epoch"]
    # Leaving with epoch -2: the partitions stay reserved for it.
    left = await h.hb(G, "a1", -2, instance="a")
    assert (left["error_code"], left["member_epoch"]) == (0, -2)
    # A new incarnation with the same instance id but another member id takes them back at once.
    back = await h.hb(G, "a2", 0, topics=["orders"], instance="a")
    assert back["error_code"] == 0 and h.assigned(back) == {"orders": mine}
    after = h.coord.describe(G)
    assert after is not None and after["group_epoch"] == epoch
    assert sorted(m["member_id"] for m in after["members"]) == ["a2", "b1"]
    # Another incarnation while this one is alive: refused.
    clash = await h.hb(G, "a3", 0, topics=["orders"], instance="a")
    assert clash["error_code"] == E.UNRELEASED_INSTANCE_ID
    # The old member id is fenced by the new one.
    assert (await h.hb(G, "a1", 1, instance="a"))["error_code"] == E.FENCED_INSTANCE_ID


@run
async def test_regex_subscription_picks_up_new_topics() -> None:
    h = ConsumerHarness()
    bad = await h.hb(G, "m1", 0, regex="(?=orders)")
    assert bad["error_code"] == E.INVALID_REGULAR_EXPRESSION
    r = await h.hb(G, "m1", 0, regex="^pay.*")
    assert r["error_code"] == 0 and h.assigned(r) == {"payments": [0, 1]}
    h.catalogue["payouts"] = Topic(2)
    h.catalogue["__payments_internal"] = Topic(1)
    r = await h.hb(G, "m1", r["member_epoch"], owned={"payments": [0, 1]})
    assert h.assigned(r) == {"payments": [0, 1], "payouts": [0, 1]}
    assert h.coord.consumer.describe([G], 1)[0]["members"][0]["subscribed_topic_regex"] == "^pay.*"


def may_describe(*allowed: str) -> Callable[[Collection[str]], Collection[str]]:
    """An authorizer's answer for a principal allowed to describe ``allowed`` (and asked about each once)."""

    def describable(names: Collection[str]) -> list[str]:
        assert len(set(names)) == len(list(names))
        return [n for n in names if n in allowed]

    return describable


@run
async def test_regex_resolves_to_the_topics_the_refreshing_member_may_describe() -> None:
    catalogue = {"pay-a": Topic(2), "pay-b": Topic(1), "pay-secret": Topic(1), "orders": Topic(1)}
    h = ConsumerHarness(catalogue=catalogue, consumer_regex_refresh_interval_ms=20_000)
    h.coord.consumer.authorizing = True
    alice = may_describe("pay-a", "pay-b")
    r = await h.hb(G, "m1", 0, regex="^pay-.*", describable=alice)
    assert h.assigned(r) == {"pay-a": [0, 1], "pay-b": [0]}
    owned = h.assigned(r)
    # Within ten seconds of a refresh nothing is resolved again, whoever heartbeats.
    h.advance(5_000)
    r = await h.hb(G, "m1", r["member_epoch"], owned=owned, describable=may_describe("pay-secret"))
    assert r["assignment"] is None
    # A grant alone waits for the next refresh: a new topic, or the refresh interval.
    alice = may_describe("pay-a", "pay-b", "pay-secret", "pay-c")
    h.advance(10_000)
    r = await h.hb(G, "m1", r["member_epoch"], owned=owned, describable=alice)
    assert r["assignment"] is None
    catalogue["pay-c"] = Topic(1)
    r = await h.hb(G, "m1", r["member_epoch"], owned=owned, describable=alice)
    owned = h.assigned(r)
    assert owned == {"pay-a": [0, 1], "pay-b": [0], "pay-c": [0], "pay-secret": [0]}
    # The refresh interval passes: a revoked permission takes the topic away at the next heartbeat.
    h.advance(21_000)
    r = await h.hb(
        G, "m1", r["member_epoch"], owned=owned, describable=may_describe("pay-a", "pay-b", "pay-c")
    )
    assert h.assigned(r) == {"pay-a": [0, 1], "pay-b": [0], "pay-c": [0]}
    # Leaving the heartbeat's permissions out (a classic member, a timer) keeps the resolution.
    h.advance(21_000)
    r = await h.hb(G, "m1", r["member_epoch"], owned=h.assigned(r))
    assert r["assignment"] is None


@run
async def test_regex_resolution_after_a_restart_uses_the_first_heartbeat() -> None:
    catalogue = {"pay-a": Topic(2), "pay-secret": Topic(1)}
    h = ConsumerHarness(catalogue=catalogue)
    h.coord.consumer.authorizing = True
    alice = may_describe("pay-a")
    r = await h.hb(G, "m1", 0, regex="^pay-.*", describable=alice)
    assert h.assigned(r) == {"pay-a": [0, 1]}
    epoch = r["member_epoch"]
    h2 = ConsumerHarness(log=h.log, clock=h.clock, catalogue=catalogue)
    h2.coord.consumer.authorizing = True
    h2.coord.load()
    r = await h2.hb(G, "m1", epoch, owned={"pay-a": [0, 1]}, describable=alice)
    # The same resolution as before the restart: no new epoch, no assignment change.
    assert r["error_code"] == 0 and r["member_epoch"] == epoch and r["assignment"] is None
    d = h2.coord.describe(G)
    assert d is not None and d["group_epoch"] == epoch


@run
async def test_regex_without_an_authorizer_is_not_filtered() -> None:
    h = ConsumerHarness(catalogue={"pay-a": Topic(1), "pay-secret": Topic(1)})
    r = await h.hb(G, "m1", 0, regex="^pay-.*")
    assert h.assigned(r) == {"pay-a": [0], "pay-secret": [0]}


@run
async def test_new_partitions_and_deleted_topics_are_reassigned() -> None:
    h = ConsumerHarness()
    r = await join(h, "m1", ["orders", "audit"])
    assert h.assigned(r) == {"orders": [0, 1, 2], "audit": [0]}
    h.catalogue["orders"].partitions = 5
    r = await h.hb(G, "m1", r["member_epoch"], owned={"orders": [0, 1, 2], "audit": [0]})  # type: ignore[arg-type]
    assert h.assigned(r) == {"orders": [0, 1, 2, 3, 4], "audit": [0]}
    del h.catalogue["audit"]
    r = await h.hb(G, "m1", r["member_epoch"], owned={"orders": [0, 1, 2, 3, 4]})  # type: ignore[arg-type]
    assert h.assigned(r) == {"orders": [0, 1, 2, 3, 4]}


@run
async def test_range_assignor_on_request() -> None:
    h = ConsumerHarness()
    await join(h, "m1", ["orders", "payments"], assignor="range")
    await join(h, "m2", ["orders", "payments"], assignor="range")
    described = h.coord.consumer.describe([G], 1)[0]
    assert described["assignor_name"] == "range"
    targets = {
        m["member_id"]: {t["topic_name"]: t["partitions"] for t in m["target_assignment"]["topic_partitions"]}
        for m in described["members"]
    }
    assert targets == {"m1": {"orders": [0, 1], "payments": [0]}, "m2": {"orders": [2], "payments": [1]}}


@run
async def test_offsets_of_consumer_group_members() -> None:
    h = ConsumerHarness()
    await join(h, "m1", ["orders"])
    assert await h.commit(G, {("orders", 0): 5}, member_id="m1", generation=1, version=9) == {
        ("orders", 0): 0
    }
    stale = await h.commit(G, {("orders", 0): 6}, member_id="m1", generation=0, version=9)
    assert stale == {("orders", 0): E.STALE_MEMBER_EPOCH}
    unknown = await h.commit(G, {("orders", 0): 6}, member_id="x", generation=1, version=9)
    assert unknown == {("orders", 0): E.UNKNOWN_MEMBER_ID}
    old = await h.commit(G, {("orders", 0): 6}, member_id="m1", generation=1, version=8)
    assert old == {("orders", 0): E.UNSUPPORTED_VERSION}
    # The admin client commits with epoch -1 only when the group is empty.
    assert await h.commit(G, {("orders", 0): 7}) == {("orders", 0): E.UNKNOWN_MEMBER_ID}
    # A group that does not exist: GROUP_ID_NOT_FOUND from v9, ILLEGAL_GENERATION before.
    assert await h.commit("nope", {("orders", 0): 1}, member_id="m", generation=3, version=9) == {
        ("orders", 0): E.GROUP_ID_NOT_FOUND
    }
    assert await h.commit("nope", {("orders", 0): 1}, member_id="m", generation=3, version=8) == {
        ("orders", 0): E.ILLEGAL_GENERATION
    }

    async def fetch(member: str | None, epoch: int) -> dict[str, object]:
        req = {
            "groups": [
                {
                    "group_id": G,
                    "member_id": member,
                    "member_epoch": epoch,
                    "topics": [{"name": "orders", "partition_indexes": [0]}],
                }
            ],
            "require_stable": False,
        }
        resp = await h.coord.offset_fetch(req, 9, client_id="c", client_host="h")
        return resp["groups"][0]  # type: ignore[no-any-return]

    ok = await fetch("m1", 1)
    assert ok["error_code"] == 0 and ok["topics"][0]["partitions"][0]["committed_offset"] == 5  # type: ignore[index]
    assert (await fetch("m1", 3))["error_code"] == E.STALE_MEMBER_EPOCH
    assert (await fetch("x", 1))["error_code"] == E.UNKNOWN_MEMBER_ID
    assert (await fetch(None, -1))["error_code"] == 0


@run
async def test_list_describe_and_delete_consumer_groups() -> None:
    h = ConsumerHarness()
    await join(h, "m1", ["orders"])
    await h.commit("classic-one", {("orders", 1): 1})

    async def listed(**req: list[str]) -> list[tuple[str, str, str]]:
        resp = await h.coord.list_groups(req, 5, client_id="c", client_host="h")
        return sorted((g["group_id"], g["group_type"], g["group_state"]) for g in resp["groups"])

    assert await listed() == [("cg", "consumer", "Stable"), ("classic-one", "classic", "Empty")]
    assert await listed(types_filter=["consumer"]) == [("cg", "consumer", "Stable")]
    assert await listed(types_filter=["Classic"], states_filter=["empty"]) == [
        ("classic-one", "classic", "Empty")
    ]
    assert await listed(states_filter=["assigning"]) == []

    d6 = await h.coord.describe_groups({"groups": [G]}, 6, client_id="c", client_host="h")
    assert (d6["groups"][0]["error_code"], d6["groups"][0]["group_state"]) == (E.GROUP_ID_NOT_FOUND, "Dead")
    d5 = await h.coord.describe_groups({"groups": [G]}, 5, client_id="c", client_host="h")
    assert (d5["groups"][0]["error_code"], d5["groups"][0]["group_state"]) == (0, "Dead")

    described = await h.coord.consumer_group_describe(
        {"group_ids": [G, "classic-one", "none"]}, 1, client_id="c", client_host="h"
    )
    cg, classic, none = described["groups"]
    assert (cg["error_code"], cg["group_state"], cg["group_epoch"], cg["assignor_name"]) == (
        0,
        "Stable",
        1,
        "uniform",
    )
    member = cg["members"][0]
    assert member["member_type"] == 1 and member["subscribed_topic_names"] == ["orders"]
    assert member["assignment"]["topic_partitions"][0]["topic_name"] == "orders"
    assert (classic["error_code"], none["error_code"]) == (E.GROUP_ID_NOT_FOUND, E.GROUP_ID_NOT_FOUND)

    deleted = await h.coord.delete_groups({"groups_names": [G]}, 2, client_id="c", client_host="h")
    assert deleted["results"][0]["error_code"] == E.NON_EMPTY_GROUP
    await h.hb(G, "m1", -1)
    deleted = await h.coord.delete_groups({"groups_names": [G]}, 2, client_id="c", client_host="h")
    assert deleted["results"][0]["error_code"] == 0
    assert h.coord.describe(G) is None


@run
async def test_restart_restores_members_epochs_and_assignments() -> None:
    h = ConsumerHarness()
    await join(h, "m1", ["orders"])
    await join(h, "m2", ["orders"], instance="i2")
    r1 = await h.hb(G, "m1", 1, owned={"orders": [0, 1, 2]})
    await h.hb(G, "m1", 1, owned={"orders": h.assigned(r1)["orders"]})
    before = h.coord.describe(G)
    h2 = ConsumerHarness(log=h.log, clock=h.clock, catalogue=h.catalogue)
    after = h2.coord.describe(G)
    assert after == before
    # The members carry on where they were.
    r1 = await h2.hb(G, "m1", 2, owned={"orders": h.assigned(r1)["orders"]})
    assert r1["error_code"] == 0 and r1["member_epoch"] == 2
    # Compaction keeps exactly the live records.
    assert h2.coord.maybe_compact_log(force=True)
    h3 = ConsumerHarness(log=h.log, clock=h.clock, catalogue=h.catalogue)
    assert h3.coord.describe(G) == h2.coord.describe(G)


@run
async def test_group_configs_override_the_broker() -> None:
    h = ConsumerHarness(consumer_min_heartbeat_interval_ms=100, consumer_min_session_timeout_ms=1000)
    with pytest.raises(KafkaProtocolError) as bad:
        h.coord.alter_group_configs(G, [("consumer.heartbeat.interval.ms", 0, "50")], validate_only=False)
    assert "must be greater than or equal to group.consumer.min.heartbeat.interval.ms" in str(bad.value)
    with pytest.raises(KafkaProtocolError):
        h.coord.alter_group_configs(G, [("share.record.lock.duration.ms", 0, "50")], validate_only=False)
    h.coord.alter_group_configs(
        G,
        [("consumer.heartbeat.interval.ms", 0, "500"), ("consumer.session.timeout.ms", 0, "2000")],
        validate_only=False,
    )
    resp = await join(h, "m1", ["orders"])
    assert resp["heartbeat_interval_ms"] == 500
    described = {c["name"]: (c["value"], c["config_source"]) for c in h.coord.describe_group_configs(G, None)}
    assert {k: v for k, v in described.items() if k.startswith("consumer.")} == {
        "consumer.session.timeout.ms": ("2000", 8),
        "consumer.heartbeat.interval.ms": ("500", 8),
    }
    # Share group configs are described too, from the broker's settings (4) or their built-in default (5).
    assert described["share.record.lock.duration.ms"] == ("30000", 4)
    assert described["share.auto.offset.reset"] == ("latest", 5)
    # The session timeout of the group applies.
    h.advance(2_500)
    assert h.coord.describe(G)["members"] == []  # type: ignore[index]
    # Configs survive a restart.
    h2 = ConsumerHarness(
        log=h.log,
        clock=h.clock,
        catalogue=h.catalogue,
        consumer_min_heartbeat_interval_ms=100,
        consumer_min_session_timeout_ms=1000,
    )
    assert {
        c["name"]: c["value"] for c in h2.coord.describe_group_configs(G, None) if c["config_source"] == 8
    } == {
        "consumer.session.timeout.ms": "2000",
        "consumer.heartbeat.interval.ms": "500",
    }
