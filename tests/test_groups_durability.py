"""Group metadata and committed offsets survive a restart: replay of the group log, its binary format."""

from __future__ import annotations

import asyncio

import pytest
from test_groups_support import TOPICS, Clock, Harness, form_group, run, subscription

from kafkite.broker.groups import (
    GROUP_LOG_TOPIC,
    GroupCoordinator,
    MemoryGroupLog,
    OffsetAndMetadata,
    StorageGroupLog,
    logformat,
)
from kafkite.log.engine import FileStorage, MemoryStorage
from kafkite.protocol.errors import ErrorCode as E

G = "g1"


def restart(h: Harness) -> Harness:
    """A new coordinator over the same log, as after a broker restart."""
    return Harness(log=h.log, clock=h.clock)


@run
async def test_replay_reproduces_offsets_and_group_metadata() -> None:
    h = Harness()
    (a, b), gen = await form_group(h, G, 2, session=30_000)
    await h.commit(
        G, {("orders", 0): (100, "meta-0"), ("orders", 1): (200, None)}, member_id=a, generation=gen
    )
    await h.commit(G, {("orders", 0): (101, "meta-0b")}, member_id=b, generation=gen)
    await h.commit("simple", {("audit", 0): (5, "s" * 4096)})
    before = h.coord.describe(G)

    h2 = restart(h)
    assert h2.coord.committed_offsets(G) == h.coord.committed_offsets(G)
    assert h2.coord.committed_offsets(G)[("orders", 0)] == OffsetAndMetadata(101, 0, "meta-0b", h.clock.now)
    assert h2.coord.committed_offsets("simple") == h.coord.committed_offsets("simple")
    assert (await h2.fetch(G, {"orders": [0, 1]})) == {
        ("orders", 0): (101, "meta-0b", 0),
        ("orders", 1): (200, "", 0),
    }
    after = h2.coord.describe(G)
    assert after is not None and before is not None
    assert after["state"] == "Stable"
    for key in ("generation_id", "protocol_type", "protocol", "leader"):
        assert after[key] == before[key], key
    assert after["members"] == before["members"]
    assert sorted(m["member_id"] for m in after["members"]) == sorted([a, b])
    # Members carry on where they were: heartbeats, commits and SyncGroup of the current generation work.
    assert await h2.heartbeat(G, a, gen) == 0
    assert await h2.commit(G, {("orders", 2): 1}, member_id=b, generation=gen) == {("orders", 2): 0}
    assert (await h2.sync(G, b, gen))["assignment"] == f"assign-{b}".encode()
    described = await h2.coord.describe_groups({"groups": [G]}, 5, client_id="c", client_host="h")
    assert {m["member_metadata"] for m in described["groups"][0]["members"]} == {subscription(["orders"])}
    # Members that do not come back expire with their session.
    h2.advance(30_000)
    assert h2.state(G) == "Empty"


@run
async def test_replay_of_static_members_and_empty_groups() -> None:
    h = Harness()
    a = (await h.join(G, instance="i-a"))["member_id"]
    await h.sync(G, a, 1, {a: b"A"}, instance="i-a")
    a2 = (await h.join(G, instance="i-a"))["member_id"]  # replaced without a rebalance, persisted
    h2 = restart(h)
    assert await h2.heartbeat(G, a2, 1, instance="i-a") == 0
    assert await h2.heartbeat(G, a, 1, instance="i-a") == E.FENCED_INSTANCE_ID

    # The group goes Empty; its generation and the time it became empty survive a restart.
    await h2.leave(G, [(a2, "i-a")])
    await h2.commit(G, {("orders", 0): 1})
    empty_since = h2.clock.now
    h3 = restart(h2)
    d = h3.coord.describe(G)
    assert d is not None and d["state"] == "Empty" and d["generation_id"] == 2 and d["members"] == []
    assert d["protocol_type"] == "consumer"
    assert h3.coord.groups[G].state_timestamp_ms == empty_since
    # A member can join the reloaded group.
    joined = await h3.join(G, version=3)
    assert joined["generation_id"] == 3


@run
async def test_replay_honours_deletions() -> None:
    h = Harness()
    await h.commit("gone", {("orders", 0): 1})
    await h.commit("kept", {("orders", 0): 1, ("orders", 1): 2})
    resp = await h.coord.delete_groups({"groups_names": ["gone"]}, 2, client_id="c", client_host="h")
    assert resp["results"][0]["error_code"] == 0
    req = {"group_id": "kept", "topics": [{"name": "orders", "partitions": [{"partition_index": 1}]}]}
    assert (await h.coord.offset_delete(req, 0, client_id="c", client_host="h"))["error_code"] == 0
    h2 = restart(h)
    assert h2.coord.describe("gone") is None
    assert set(h2.coord.committed_offsets("kept")) == {("orders", 0)}


@run
async def test_expired_offsets_stay_expired_after_restart() -> None:
    h = Harness(offsets_retention_ms=1000)
    await h.commit("simple", {("orders", 0): 1})
    h.clock.advance(1000)
    assert h.coord.expire_offsets() == 1
    h2 = restart(h)
    assert h2.coord.describe("simple") is None
    assert h2.coord.groups_overview() == []


@run
async def test_commit_fails_when_the_log_does_not_accept_it() -> None:
    class BrokenLog(MemoryGroupLog):
        def append(self, entries: list[tuple[bytes, bytes | None]]) -> None:
            raise OSError("disk full")

    h = Harness(log=BrokenLog())
    assert await h.commit("simple", {("orders", 0): 1}) == {("orders", 0): E.COORDINATOR_NOT_AVAILABLE}
    assert h.coord.committed_offsets("simple") == {}
    # The leader's SyncGroup cannot be made durable: members are told to rejoin.
    a = (await h.join(G, version=3))["member_id"]
    assert (await h.sync(G, a, 1, {a: b"x"}))["error_code"] == E.COORDINATOR_NOT_AVAILABLE
    assert h.state(G) == "PreparingRebalance"


def test_logformat_round_trip() -> None:
    om = OffsetAndMetadata(2**40, 7, "metadata ☃", 123, 456)
    assert logformat.decode_offset_value(logformat.offset_value(om)) == om
    assert (
        logformat.decode_offset_value(logformat.offset_value(OffsetAndMetadata(1, metadata=None))).metadata
        is None
    )
    key = logformat.offset_key("grp", "topic", 3)
    assert logformat.decode_key(key) == logformat.OffsetKey("grp", "topic", 3)
    assert logformat.decode_key(logformat.group_key("grp")) == logformat.GroupKey("grp")
    rec = logformat.GroupRecord(
        protocol_type="consumer",
        generation_id=5,
        protocol_name="range",
        leader_id="m1",
        state_timestamp_ms=None,
        members=(
            logformat.MemberRecord("m1", None, "c1", "/h1", 300, 10, b"sub", b"assign"),
            logformat.MemberRecord("m2", "i-2", "c2", "/h2", 300, 10, b"", b""),
        ),
    )
    assert logformat.decode_group_value(logformat.group_value(rec)) == rec
    for bad in (b"", b"\x00\x09abc", key[:-1]):
        with pytest.raises(logformat.LogFormatError):
            logformat.decode_key(bad)
    with pytest.raises(logformat.LogFormatError):
        logformat.decode_offset_value(logformat.offset_value(om)[:-3])
    with pytest.raises(logformat.LogFormatError):
        logformat.decode_group_value(b"\x00\x01" + logformat.group_value(rec)[2:])


@run
async def test_undecodable_entries_are_skipped() -> None:
    h = Harness()
    await h.commit("simple", {("orders", 0): 1})
    h.log.entries.insert(0, (b"\x00\x63garbage", b"x"))
    h.log.entries.append((logformat.offset_key("simple", "orders", 1), b"\x00"))
    h2 = restart(h)
    assert set(h2.coord.committed_offsets("simple")) == {("orders", 0)}


def _coordinator(log: StorageGroupLog, clock: Clock) -> GroupCoordinator:
    return GroupCoordinator(lambda t: TOPICS.get(t), log=log, now_ms=clock)


@run
async def test_storage_group_log_on_memory_storage() -> None:
    clock = Clock()
    storage = MemoryStorage()
    storage.create_topic(GROUP_LOG_TOPIC, 1, {"segment.bytes": "1048576"})
    log = StorageGroupLog(storage.partition(GROUP_LOG_TOPIC, 0), now_ms=clock, read_chunk_bytes=200)
    h = Harness(log=MemoryGroupLog(), clock=clock)
    h.coord = _coordinator(log, clock)
    for i in range(50):
        await h.commit(f"g{i % 5}", {("orders", i % 3): (i, f"m{i}")})
    await h.coord.delete_groups({"groups_names": ["g4"]}, 2, client_id="c", client_host="h")
    again = _coordinator(StorageGroupLog(storage.partition(GROUP_LOG_TOPIC, 0), now_ms=clock), clock)
    for g in ("g0", "g1", "g2", "g3", "g4"):
        assert again.committed_offsets(g) == h.coord.committed_offsets(g), g
    assert again.committed_offsets("g4") == {}
    assert again.committed_offsets("g0")[("orders", 0)].metadata == "m45"


@run
async def test_storage_group_log_survives_restart_on_files() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        clock = Clock()
        storage = FileStorage(tmp)
        storage.load()
        storage.create_topic(GROUP_LOG_TOPIC, 1)
        h = Harness(clock=clock)
        h.coord = _coordinator(StorageGroupLog(storage.partition(GROUP_LOG_TOPIC, 0), now_ms=clock), clock)
        (a,), gen = await form_group(h, G, 1)
        await h.commit(G, {("payments", 1): (77, "where I was")}, member_id=a, generation=gen)
        storage.flush_all()
        storage.close()

        reopened = FileStorage(tmp)
        reopened.load()
        coord = _coordinator(StorageGroupLog(reopened.partition(GROUP_LOG_TOPIC, 0), now_ms=clock), clock)
        await coord.start()
        try:
            assert coord.committed_offsets(G)[("payments", 1)].metadata == "where I was"
            assert coord.describe(G)["state"] == "Stable"  # type: ignore[index]
            req = {"group_id": G, "generation_id": gen, "member_id": a, "group_instance_id": None}
            assert (await coord.heartbeat(req, 4, client_id="c", client_host="h"))["error_code"] == 0
        finally:
            await coord.stop()
            reopened.close()
        await asyncio.sleep(0)


@run
async def test_log_compaction_keeps_only_live_state() -> None:
    h = Harness()
    h.coord = GroupCoordinator(lambda t: TOPICS.get(t), log=h.log, now_ms=h.clock, compact_after_entries=100)
    (a,), gen = await form_group(h, G, 1)
    for i in range(150):
        await h.commit(G, {("orders", i % 3): (i, f"m{i}")}, member_id=a, generation=gen)
        await h.commit(f"s{i % 4}", {("audit", 0): i})
    await h.coord.delete_groups({"groups_names": ["s3"]}, 2, client_id="c", client_host="h")
    assert len(h.log.entries) > 300
    h.coord.tick()
    # 1 group metadata record, 3 offsets of G, 3 simple groups with one offset each.
    assert len(h.log.entries) == 7
    h.coord.tick()
    assert len(h.log.entries) == 7  # nothing to do until enough new entries arrive
    h2 = restart(h)
    for g in (G, "s0", "s1", "s2", "s3"):
        assert h2.coord.committed_offsets(g) == h.coord.committed_offsets(g), g
    assert h2.coord.describe(G) == h.coord.describe(G)
    assert await h2.heartbeat(G, a, gen) == 0


@run
async def test_storage_log_compaction_moves_the_log_start() -> None:
    clock = Clock()
    storage = MemoryStorage()
    log = StorageGroupLog.open(storage, now_ms=clock)
    h = Harness(clock=clock)
    h.coord = GroupCoordinator(lambda t: TOPICS.get(t), log=log, now_ms=clock, compact_after_entries=10)
    for i in range(40):
        await h.commit("simple", {("orders", i % 2): (i, "x" * 100)})
    partition = storage.partition(GROUP_LOG_TOPIC, 0)
    assert partition.log_start_offset == 0 and partition.log_end_offset == 40
    assert h.coord.maybe_compact_log()
    assert partition.log_start_offset == 40 and partition.log_end_offset == 42
    again = GroupCoordinator(lambda t: TOPICS.get(t), log=StorageGroupLog.open(storage), now_ms=clock)
    assert again.committed_offsets("simple") == h.coord.committed_offsets("simple")
    assert again.committed_offsets("simple")[("orders", 1)].offset == 39
    # Rewriting an empty state empties the log.
    await h.coord.delete_groups({"groups_names": ["simple"]}, 2, client_id="c", client_host="h")
    assert h.coord.maybe_compact_log(force=True)
    assert partition.log_start_offset == partition.log_end_offset
    assert GroupCoordinator(lambda t: 1, log=StorageGroupLog.open(storage)).groups_overview() == []
