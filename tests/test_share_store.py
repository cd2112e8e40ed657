"""The share-partition store in a broker on the file engine: the journal in __share_group_state survives a
restart (acknowledged records stay settled, delivery counts continue, locks are released), compaction keeps
exactly the state and trims the journal, share.auto.offset.reset's strategies, dead-letter topics refused
as KIP-1191 says (prefix, topics not enabled) or created, and the share-partitions of deleted topics
forgotten."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kafkite.broker.core import Broker, RequestContext
from kafkite.broker.delivery.journal import wall_clock_ms
from kafkite.broker.groups.share.store import STATE_TOPIC, DeadLetterError, SharePartitionStore
from kafkite.compose import build_broker
from kafkite.config import BrokerConfig
from kafkite.protocol.api_keys import ApiKey
from kafkite.protocol.records import build_batch

GROUP = "g"


def run(test: Callable[[Path], Awaitable[None]]) -> Callable[[Path], None]:
    """Decorator: run an async test taking ``tmp_path`` on a fresh event loop, with a time limit."""

    def wrapper(tmp_path: Path) -> None:
        asyncio.run(asyncio.wait_for(test(tmp_path), 30))

    wrapper.__name__ = test.__name__
    wrapper.__doc__ = test.__doc__
    return wrapper


def make(data_dir: Path, **settings: str) -> Broker:
    return build_broker(BrokerConfig({"log.dirs": str(data_dir), **settings}))


def store_of(broker: Broker) -> SharePartitionStore:
    store = broker.groups.share_store
    assert isinstance(store, SharePartitionStore)
    return store


async def call(broker: Broker, key: int, version: int, req: dict[str, Any]) -> dict[str, Any]:
    ctx = RequestContext(api_key=key, api_version=version, correlation_id=1, client_id="c", client_host="h")
    resp = await broker.handlers[key](broker, ctx, req)
    assert resp is not None
    return resp


def append(broker: Broker, topic: str, n: int, partition: int = 0, ts: int | None = None) -> None:
    now = ts if ts is not None else wall_clock_ms()
    part = broker.partition(topic, partition)
    assert part is not None
    part.append_sync(
        bytearray(build_batch([(None, f"v{i}".encode(), [], now) for i in range(n)])), now_ms=now
    )


async def configs(broker: Broker, **values: str) -> None:
    broker.groups.alter_group_configs(
        GROUP, [(k.replace("_", "."), 0, v) for k, v in values.items()], validate_only=False
    )


@run
async def test_journal_survives_restarts_and_compaction(tmp_path: Path) -> None:
    broker = make(tmp_path)
    await broker.start()
    topic_id = broker.create_topic("t", 1).topic_id
    append(broker, "t", 10)
    await configs(broker, share_auto_offset_reset="earliest")
    store = store_of(broker)
    sp = store.ensure(GROUP, topic_id, 0)
    assert sp is not None and (sp.start, sp.end) == (0, 0)
    part = broker.partition("t", 0)
    assert part is not None
    from kafkite.broker.groups.share.partition import walk_batches

    batches = walk_batches(part.read_sync(0, 1 << 20))
    now = wall_clock_ms()
    got = sp.acquire("m", batches, max_records=10, record_limit=False, batch_size=10, now=now)
    assert got.runs == [[0, 9, 1]]
    sp.acknowledge("m", [(0, 3, [1]), (4, 4, [2]), (5, 5, [3])], renew_allowed=False, now=now)
    # Offsets 0-3 accepted, 4 released (available, delivered once), 5 archived, 6-9 still acquired.
    assert (sp.start, sp.end) == (4, 10)
    await broker.stop()

    broker = make(tmp_path)
    await broker.start()
    sp2 = store_of(broker).get((GROUP, topic_id, 0))
    assert sp2 is not None and (sp2.start, sp2.end) == (4, 10)
    entries = sp2.ledger.entries
    assert sorted(entries) == [4, 6, 7, 8, 9]
    assert all(
        e.delivery_count == 1 and not sp2.ledger.in_flight(e, wall_clock_ms()) for e in entries.values()
    )
    # Compaction: a snapshot of every share-partition, then the journal before it is gone.
    store = store_of(broker)
    journal = broker.partition(STATE_TOPIC, 0)
    assert journal is not None
    assert await store.compact(force=True)
    assert journal.log_start_offset > 0
    await broker.stop()

    broker = make(tmp_path)
    await broker.start()
    sp3 = store_of(broker).get((GROUP, topic_id, 0))
    assert (
        sp3 is not None and (sp3.start, sp3.end) == (4, 10) and sorted(sp3.ledger.entries) == [4, 6, 7, 8, 9]
    )
    batches = walk_batches(broker.partition("t", 0).read_sync(4, 1 << 20))  # type: ignore[union-attr]
    again = sp3.acquire("m2", batches, max_records=10, record_limit=False, batch_size=10, now=wall_clock_ms())
    assert again.runs == [[4, 4, 2], [6, 9, 2]]  # delivery counts continue
    await broker.stop()


@run
async def test_auto_offset_reset_strategies_and_deleted_topics(tmp_path: Path) -> None:
    broker = make(tmp_path)
    await broker.start()
    try:
        topic_id = broker.create_topic("t", 1).topic_id
        old = wall_clock_ms() - 3_600_000
        append(broker, "t", 5, ts=old)  # offsets 0-4, an hour old
        append(broker, "t", 5)  # offsets 5-9, now
        store = store_of(broker)
        for reset, start in (
            ("latest", 10),
            ("earliest", 0),
            ("by_duration:PT10M", 5),
            ("by_duration:PT2H", 0),
        ):
            store.drop([(GROUP, topic_id, 0)])
            await configs(broker, share_auto_offset_reset=reset)
            sp = store.ensure(GROUP, topic_id, 0)
            assert sp is not None and sp.start == start, (reset, sp.start if sp else None)
        del_resp = await call(
            broker,
            ApiKey.DELETE_TOPICS,
            6,
            {"topics": [{"name": "t", "topic_id": uuid.UUID(int=0)}], "timeout_ms": 1000},
        )
        assert del_resp["responses"][0]["error_code"] == 0
        assert store.forget_deleted_topics() == 1
        assert store.get((GROUP, topic_id, 0)) is None
    finally:
        await broker.stop()


@run
async def test_dead_letter_topic_rules(tmp_path: Path) -> None:
    broker = make(tmp_path, **{"errors.deadletterqueue.auto.create.topics.enable": "true"})
    await broker.start()
    try:
        store = store_of(broker)
        broker.create_topic("dlq.plain", 1)
        broker.create_topic("dlq.ok", 3, {"errors.deadletterqueue.group.enable": "true"})
        for topic, why in (
            ("other", "does not start with the required prefix 'dlq.'"),
            ("dlq.plain", "is not enabled as a dead-letter queue"),
        ):
            try:
                store.dead_letter_partition(GROUP, 0, topic)
            except DeadLetterError as exc:
                assert why in str(exc)
            else:
                raise AssertionError(f"{topic} accepted")
        _, index = store.dead_letter_partition(GROUP, 4, "dlq.ok")
        assert index == 1  # the source partition modulo the dead-letter topic's partitions
        _, index = store.dead_letter_partition(GROUP, 0, "dlq.created")
        meta = broker.topic("dlq.created")
        assert meta is not None and meta.configs["errors.deadletterqueue.group.enable"] == "true"
    finally:
        await broker.stop()


@run
async def test_a_consumer_group_id_is_not_fetched_for(tmp_path: Path) -> None:
    """A ShareFetch naming a consumer group's id acquires nothing (the group is not a share group)."""
    broker = make(tmp_path)
    await broker.start()
    try:
        topic_id = broker.create_topic("t", 1).topic_id
        append(broker, "t", 3)
        hb = {
            "group_id": "cg",
            "member_id": "c1",
            "member_epoch": 0,
            "rebalance_timeout_ms": 30000,
            "subscribed_topic_names": ["t"],
            "topic_partitions": [],
        }
        assert (await call(broker, ApiKey.CONSUMER_GROUP_HEARTBEAT, 1, hb))["error_code"] == 0
        req = {
            "group_id": "cg",
            "member_id": "s1",
            "share_session_epoch": 0,
            "max_wait_ms": 0,
            "min_bytes": 1,
            "max_bytes": 1 << 20,
            "max_records": 10,
            "batch_size": 10,
            "topics": [
                {"topic_id": topic_id, "partitions": [{"partition_index": 0, "acknowledgement_batches": []}]}
            ],
            "forgotten_topics_data": [],
        }
        resp = await call(broker, ApiKey.SHARE_FETCH, 1, req)
        assert resp["responses"][0]["partitions"][0]["acquired_records"] == []
        assert store_of(broker).get(("cg", topic_id, 0)) is None
    finally:
        await broker.stop()
