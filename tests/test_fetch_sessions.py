"""Incremental fetch sessions (KIP-227): opened by a full fetch at epoch 0, continued with only the changed
partitions both ways, closed by epoch -1, their errors, the cache's slots; and kafka-python, which uses them,
consuming a topic of many partitions."""

from __future__ import annotations

import time
import uuid
from typing import Any

from helpers import BrokerProcess, RawClient, create_topic, produce

from kafkite.protocol import framing
from kafkite.protocol.errors import ErrorCode

FETCH = 1


def _partition(i: int, offset: int = 0) -> dict[str, Any]:
    return {
        "partition": i,
        "current_leader_epoch": -1,
        "fetch_offset": offset,
        "last_fetched_epoch": -1,
        "log_start_offset": -1,
        "partition_max_bytes": 1 << 20,
    }


def fetch(
    c: RawClient,
    session_id: int,
    epoch: int,
    topics: dict[str, list[tuple[int, int]]] | None = None,
    forgotten: dict[str, list[int]] | None = None,
    version: int = 12,
) -> dict[str, Any]:
    body = {
        "replica_id": -1,
        "max_wait_ms": 0,
        "min_bytes": 1,
        "max_bytes": 50 << 20,
        "isolation_level": 0,
        "session_id": session_id,
        "session_epoch": epoch,
        "topics": [
            {"topic": t, "topic_id": uuid.UUID(int=0), "partitions": [_partition(i, o) for i, o in parts]}
            for t, parts in (topics or {}).items()
        ],
        "forgotten_topics_data": [
            {"topic": t, "topic_id": uuid.UUID(int=0), "partitions": ps}
            for t, ps in (forgotten or {}).items()
        ],
        "rack_id": "",
    }
    return c.request(FETCH, version, body)


def returned(resp: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {p["partition_index"]: p for t in resp["responses"] for p in t["partitions"]}


def test_incremental_session_returns_only_changed_partitions(broker: BrokerProcess) -> None:
    create_topic(broker.bootstrap, "s", 8)
    produce(broker.bootstrap, "s", [(None, b"a")], partition=2)
    with RawClient.to(broker.bootstrap) as c:
        full = fetch(c, 0, 0, {"s": [(i, 0) for i in range(8)]})
        assert full["error_code"] == 0
        sid = full["session_id"]
        assert sid > 0
        parts = returned(full)
        assert sorted(parts) == list(range(8))
        assert parts[2]["high_watermark"] == 1 and parts[2]["records"]

        # Nothing changed (the client moved partition 2 on to offset 1): nothing returned.
        r = fetch(c, sid, 1, {"s": [(2, 1)]})
        assert (r["error_code"], r["session_id"], r["responses"]) == (0, sid, [])

        # A record in partition 5: only partition 5 comes back, with it.
        produce(broker.bootstrap, "s", [(None, b"b")], partition=5)
        r = fetch(c, sid, 2)
        assert r["session_id"] == sid
        parts = returned(r)
        assert list(parts) == [5]
        assert parts[5]["high_watermark"] == 1 and parts[5]["records"]

        # Still at offset 0 for partition 5 (the client did not move it): its records again, alone.
        assert list(returned(fetch(c, sid, 3))) == [5]
        assert returned(fetch(c, sid, 4, {"s": [(5, 1)]})) == {}

        # A partition added to the session comes back once; a forgotten one no longer does.
        create_topic(broker.bootstrap, "t", 1)
        r = fetch(c, sid, 5, {"t": [(0, 0)]}, forgotten={"s": [2]})
        assert [(t["topic"], [p["partition_index"] for p in t["partitions"]]) for t in r["responses"]] == [
            ("t", [0])
        ]
        produce(broker.bootstrap, "s", [(None, b"c")], partition=2)
        assert returned(fetch(c, sid, 6)) == {}

        # Errors: a wrong epoch, an unknown session; neither changes the session.
        r = fetch(c, sid, 9)
        assert (r["error_code"], r["session_id"]) == (ErrorCode.INVALID_FETCH_SESSION_EPOCH, 0)
        r = fetch(c, sid + 1 if sid < 0x7FFFFFFF else 1, 1)
        assert r["error_code"] == ErrorCode.FETCH_SESSION_ID_NOT_FOUND
        assert fetch(c, sid, 7)["error_code"] == 0

        # Epoch -1 closes it: a full fetch without a session.
        r = fetch(c, sid, -1, {"s": [(0, 0)]})
        assert (r["error_code"], r["session_id"]) == (0, 0)
        assert list(returned(r)) == [0]
        assert fetch(c, sid, 8)["error_code"] == ErrorCode.FETCH_SESSION_ID_NOT_FOUND

        # Without a session (id 0, epoch -1) every fetch is full, as before.
        r = fetch(c, 0, -1, {"s": [(i, 0) for i in range(8)]})
        assert r["session_id"] == 0 and sorted(returned(r)) == list(range(8))


def test_incremental_long_poll_wakes_on_append(broker: BrokerProcess) -> None:
    create_topic(broker.bootstrap, "w", 4)
    with RawClient.to(broker.bootstrap) as c:
        sid = fetch(c, 0, 0, {"w": [(i, 0) for i in range(4)]})["session_id"]
        body_wait = 3000
        _, frame = c.encode(
            FETCH,
            12,
            {
                "replica_id": -1,
                "max_wait_ms": body_wait,
                "min_bytes": 1,
                "max_bytes": 1 << 20,
                "isolation_level": 0,
                "session_id": sid,
                "session_epoch": 1,
                "topics": [],
                "forgotten_topics_data": [],
                "rack_id": "",
            },
        )
        t0 = time.monotonic()
        c.sock.sendall(frame)
        time.sleep(0.3)
        produce(broker.bootstrap, "w", [(None, b"x")], partition=3)
        _, r = framing.decode_response(c.reg, FETCH, 12, c.recv_frame())
        assert time.monotonic() - t0 < body_wait / 1000
        assert list(returned(r)) == [3]


def test_cache_slots_and_eviction(broker_factory: Any) -> None:
    b = broker_factory("max.incremental.fetch.session.cache.slots=1")
    create_topic(b.bootstrap, "e", 4)
    with RawClient.to(b.bootstrap) as c:
        first = fetch(c, 0, 0, {"e": [(0, 0), (1, 0)]})["session_id"]
        assert first > 0
        # The cache is full and the new session is no larger: no session for it (id 0), the first stays.
        assert fetch(c, 0, 0, {"e": [(2, 0), (3, 0)]})["session_id"] == 0
        assert fetch(c, first, 1)["error_code"] == 0
        # A larger one takes the smaller one's place.
        second = fetch(c, 0, 0, {"e": [(i, 0) for i in range(4)]})["session_id"]
        assert second > 0
        assert fetch(c, first, 2)["error_code"] == ErrorCode.FETCH_SESSION_ID_NOT_FOUND
        assert fetch(c, second, 1)["error_code"] == 0
    off = broker_factory("max.incremental.fetch.session.cache.slots=0")
    create_topic(off.bootstrap, "e", 1)
    with RawClient.to(off.bootstrap) as c:
        assert fetch(c, 0, 0, {"e": [(0, 0)]})["session_id"] == 0


def test_kafka_python_consumes_many_partitions_through_a_session(broker: BrokerProcess) -> None:
    from confluent_kafka import Producer
    from kafka import KafkaConsumer

    n = 200
    create_topic(broker.bootstrap, "many", n)
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for i in range(n):
        p.produce("many", f"first-{i}".encode(), partition=i)
    assert p.flush(30) == 0
    consumer = KafkaConsumer(
        "many",
        bootstrap_servers=broker.bootstrap,
        group_id="sessions",
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    try:
        got: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(got) < n and time.monotonic() < deadline:
            got += [m.value for ms in consumer.poll(timeout_ms=200).values() for m in ms]
        assert sorted(got) == sorted(f"first-{i}".encode() for i in range(n))
        # Then a few records in a few partitions: they arrive through incremental fetches of the session.
        for i in (7, 77, 177):
            p.produce("many", f"second-{i}".encode(), partition=i)
        assert p.flush(30) == 0
        more: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(more) < 3 and time.monotonic() < deadline:
            more += [m.value for ms in consumer.poll(timeout_ms=200).values() for m in ms]
        assert sorted(more) == [b"second-177", b"second-7", b"second-77"]
        handlers = consumer._fetcher._session_handlers
        assert handlers and all(h.next_metadata.session_id > 0 for h in handlers.values())
        assert all(h.next_metadata.epoch > 1 for h in handlers.values())
    finally:
        consumer.close()
        del p  # its threads go before the broker does
