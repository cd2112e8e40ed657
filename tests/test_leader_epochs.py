"""Partition leader epochs: stamped into stored batches, reported by Metadata, checked in Fetch, ListOffsets
and OffsetForLeaderEpoch (FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH as Kafka answers), and raised on the
PostgreSQL cluster each time another broker takes a partition over, so that librdkafka validates its position
with OffsetForLeaderEpoch after a leader change and carries on without losing or repeating a message."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    BrokerProcess,
    RawClient,
    advertised_api_keys,
    create_topic,
    fetch_batches,
    produce,
    stop_all,
)
from test_pg_cluster import live_nodes, wait_for
from test_pg_support import _batch, pg_server

from kafkite.log.pg.partition import end_offset_for_epoch

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

FETCH, LIST_OFFSETS, METADATA, OFFSET_FOR_LEADER_EPOCH = 1, 2, 3, 23
NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH = 6, 74, 75


# ------------------------------------------------------------------------------------------------ unit


def test_end_offset_for_epoch_answers_as_kafkas_leader_epoch_cache() -> None:
    history = [(1, 0), (2, 10), (3, 10), (5, 40)]  # epoch 2 appended nothing (3 starts where it started)
    assert end_offset_for_epoch(history, 5, 55, 5) == (5, 55)  # the current epoch: the log end
    assert end_offset_for_epoch(history, 5, 55, 1) == (1, 10)
    assert end_offset_for_epoch(history, 5, 55, 2) == (1, 10)  # an empty epoch: the one before it
    assert end_offset_for_epoch(history, 5, 55, 3) == (3, 40)
    assert end_offset_for_epoch(history, 5, 55, 4) == (3, 40)  # never led: the largest epoch below
    assert end_offset_for_epoch(history, 5, 55, 6) == (-1, -1)  # not yet
    assert end_offset_for_epoch(history, 5, 55, -1) == (-1, -1)
    assert end_offset_for_epoch([], 0, 7, 0) == (0, 7)  # never claimed: epoch 0 from offset 0
    assert end_offset_for_epoch([(1, 0)], 1, 7, 0) == (0, 0)  # epoch 0 held nothing: it ends at once


# ------------------------------------------------------------------------------------------ one broker


def offset_for_leader_epoch(
    bootstrap: str, topic: str, partition: int, epoch: int, current: int = -1, version: int = 4
) -> dict[str, Any]:
    with RawClient.to(bootstrap) as c:
        resp = c.request(
            OFFSET_FOR_LEADER_EPOCH,
            version,
            {
                "replica_id": -1,
                "topics": [
                    {
                        "topic": topic,
                        "partitions": [
                            {"partition": partition, "current_leader_epoch": current, "leader_epoch": epoch}
                        ],
                    }
                ],
            },
        )
    return dict(resp["topics"][0]["partitions"][0])


def fetch_error(bootstrap: str, topic: str, partition: int, current: int) -> int:
    with RawClient.to(bootstrap) as c:
        resp = c.request(
            FETCH,
            12,
            {
                "max_wait_ms": 0,
                "min_bytes": 0,
                "max_bytes": 1 << 20,
                "isolation_level": 0,
                "session_id": 0,
                "topics": [
                    {
                        "topic": topic,
                        "partitions": [
                            {
                                "partition": partition,
                                "current_leader_epoch": current,
                                "fetch_offset": 0,
                                "partition_max_bytes": 1 << 20,
                            }
                        ],
                    }
                ],
                "forgotten_topics_data": [],
                "rack_id": "",
            },
        )
    return int(resp["responses"][0]["partitions"][0]["error_code"])


def list_offsets(bootstrap: str, topic: str, partition: int, current: int) -> dict[str, Any]:
    with RawClient.to(bootstrap) as c:
        resp = c.request(
            LIST_OFFSETS,
            7,
            {
                "replica_id": -1,
                "isolation_level": 0,
                "topics": [
                    {
                        "name": topic,
                        "partitions": [
                            {"partition_index": partition, "current_leader_epoch": current, "timestamp": -1}
                        ],
                    }
                ],
            },
        )
    return dict(resp["topics"][0]["partitions"][0])


def test_a_single_broker_is_at_epoch_0_and_says_so(shared_broker: BrokerProcess, topic_name: str) -> None:
    b = shared_broker.bootstrap
    assert OFFSET_FOR_LEADER_EPOCH in advertised_api_keys(b)
    create_topic(b, topic_name, 1)
    produce(b, topic_name, [(None, b"v%d" % i) for i in range(5)])
    # Stored batches carry the leader epoch (a producer sends -1 or 0 there).
    assert {h.partition_leader_epoch for h in fetch_batches(b, topic_name)} == {0}
    for version in (2, 3, 4):
        got = offset_for_leader_epoch(b, topic_name, 0, 0, version=version)
        assert (got["error_code"], got["leader_epoch"], got["end_offset"]) == (0, 0, 5), got
    assert offset_for_leader_epoch(b, topic_name, 0, 3)["end_offset"] == -1
    assert offset_for_leader_epoch(b, topic_name, 0, 0, current=0)["error_code"] == 0
    assert offset_for_leader_epoch(b, topic_name, 0, 0, current=1)["error_code"] == UNKNOWN_LEADER_EPOCH
    assert offset_for_leader_epoch(b, topic_name, 7, 0)["error_code"] == 3  # UNKNOWN_TOPIC_OR_PARTITION
    assert fetch_error(b, topic_name, 0, 0) == 0
    assert fetch_error(b, topic_name, 0, 1) == UNKNOWN_LEADER_EPOCH
    got = list_offsets(b, topic_name, 0, -1)
    assert (got["error_code"], got["offset"], got["leader_epoch"]) == (0, 5, 0)
    assert list_offsets(b, topic_name, 0, 2)["error_code"] == UNKNOWN_LEADER_EPOCH


# ------------------------------------------------------------------------------------ PostgreSQL engine


@pytest.fixture(scope="module")
def pg_dsn() -> str:
    return pg_server().new_database("epochs")


def test_a_claim_raises_the_epoch_and_fences_the_previous_leader(pg_dsn: str, topic_name: str) -> None:
    from kafkite.log.base import NotLeader
    from kafkite.log.pg import PgStorage
    from kafkite.protocol.records import iter_headers

    a, b = PgStorage(pg_dsn), PgStorage(pg_dsn)
    a.load()
    b.load()
    try:
        a.create_topic(topic_name, 1)
        pa, pb = a.partition(topic_name, 0), b.partition(topic_name, 0)
        assert pa.leader_epoch == 0 and not pa.leading
        assert a.db.run(a.claim_op([pa], 1), transaction=True) == [pa]
        assert (pa.leader_epoch, pa.leading) == (1, True)
        assert a.db.run(a.claim_op([pa], 1), transaction=True) == []  # held already: no new epoch
        pa.append_sync(_batch([b"a", b"b"]), now_ms=1)
        assert b.db.run(b.claim_op([pb], 2), transaction=True) == [pb]
        assert (pb.leader_epoch, pb.leading) == (2, True)
        with pytest.raises(NotLeader):
            pa.append_sync(_batch([b"late"]), now_ms=1)  # the old leader can no longer append
        assert (pa.leader_epoch, pa.leading) == (2, False)
        pb.append_sync(_batch([b"c"]), now_ms=1)
        data = pb.read_sync(0, 1 << 20).to_bytes()
        assert [(h.base_offset, h.partition_leader_epoch) for _, h in iter_headers(data)] == [(0, 1), (2, 2)]
        # A marker written by a non-leader (a transaction coordinator elsewhere) lands at the current epoch.
        pa.write_txn_marker_sync(9, 0, commit=False, coordinator_epoch=0, now_ms=1)
        assert pb.epoch_end_offset(1) == (1, 2)
        assert pb.epoch_end_offset(2) == (2, 4)
        assert pb.epoch_end_offset(0) == (0, 0)  # epoch 0 held nothing
        assert pb.epoch_end_offset(3) == (-1, -1)
    finally:
        a.close()
        b.close()


def test_appends_queued_behind_a_lost_leadership_are_not_leader_not_out_of_order(
    pg_dsn: str, topic_name: str
) -> None:
    """Two batches of an idempotent producer queued on a leader that loses the partition before they run:
    both are answered NotLeader (NOT_LEADER_OR_FOLLOWER), as Kafka's leader checks leadership before
    sequences. The second one used to be refused OUT_OF_ORDER_SEQUENCE_NUMBER (its sequence follows the
    refused first one's), which librdkafka takes for a broken sequence: it bumps its epoch and renumbers
    from sequence 0 every batch not yet acknowledged, on every partition, storing again any whose answer
    was lost."""
    import asyncio

    from kafkite.log.base import NotLeader
    from kafkite.log.pg import PgStorage

    a, b = PgStorage(pg_dsn), PgStorage(pg_dsn)
    a.load()
    b.load()
    try:
        a.create_topic(topic_name, 1)
        pa, pb = a.partition(topic_name, 0), b.partition(topic_name, 0)
        a.db.run(a.claim_op([pa], 1), transaction=True)

        def batch(seq: int) -> bytearray:
            return _batch([f"v{seq}".encode()], producer_id=7, producer_epoch=0, base_sequence=seq)

        async def run() -> list[BaseException | int]:
            assert (await pa.append(batch(0), now_ms=1)).first_offset == 0
            first, second = pa.append(batch(1), now_ms=1), pa.append(batch(2), now_ms=1)
            # Another broker claims the partition while both wait in the queue (the event loop is held).
            b.db.run(b.claim_op([pb], 2), transaction=True)
            out: list[BaseException | int] = []
            for pending in (first, second):
                try:
                    out.append((await pending).first_offset)
                except Exception as e:
                    out.append(e)
            return out

        results = asyncio.run(run())
        assert all(isinstance(r, NotLeader) for r in results), results
        # The new leader continues the producer's sequence where the stored batches end.
        assert pb.append_sync(batch(1), now_ms=1).first_offset == 1
    finally:
        a.close()
        b.close()


def test_a_new_leader_waits_for_batches_that_may_be_in_flight_to_a_previous_one(
    pg_dsn: str, topic_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client following a partition to its new leader can reach it with a batch while the batch before it
    is still in flight to a previous leader. Kafka's answer, OUT_OF_ORDER_SEQUENCE_NUMBER, makes librdkafka
    bump its epoch and renumber from 0 every batch not yet acknowledged (storing again any whose answer was
    lost); for a while after a takeover kafkite answers NOT_LEADER_OR_FOLLOWER, retried once the batch
    before it is, and OUT_OF_ORDER_SEQUENCE_NUMBER after that."""
    from kafkite.log.base import NotLeader
    from kafkite.log.pg import PgStorage
    from kafkite.log.pg import partition as pg_partition
    from kafkite.log.producer_state import OutOfOrderSequence

    a, b = PgStorage(pg_dsn), PgStorage(pg_dsn)
    a.load()
    b.load()
    try:
        a.create_topic(topic_name, 1)
        pa, pb = a.partition(topic_name, 0), b.partition(topic_name, 0)
        a.db.run(a.claim_op([pa], 1), transaction=True)

        def batch(seq: int) -> bytearray:
            return _batch([f"v{seq}".encode()], producer_id=7, producer_epoch=0, base_sequence=seq)

        assert pa.append_sync(batch(0), now_ms=1).first_offset == 0
        b.db.run(b.claim_op([pb], 2), transaction=True)
        # Sequence 1 is in flight to the old leader; sequence 2 reaches the new one first.
        with pytest.raises(NotLeader, match="may still be in flight"):
            pb.append_sync(batch(2), now_ms=1)
        with pytest.raises(NotLeader):
            pa.append_sync(batch(1), now_ms=1)  # the old leader refuses it; the client retries both
        assert pb.append_sync(batch(1), now_ms=1).first_offset == 1
        assert pb.append_sync(batch(2), now_ms=1).first_offset == 2
        with pytest.raises(NotLeader, match="may still be in flight"):
            pb.append_sync(batch(4), now_ms=1)
        # Once the window after the takeover has passed, a gap is out of order, as in Kafka.
        monkeypatch.setattr(pg_partition, "IN_FLIGHT_WINDOW_S", 0.0)
        with pytest.raises(OutOfOrderSequence):
            pb.append_sync(batch(4), now_ms=1)
    finally:
        a.close()
        b.close()


def test_batches_behind_an_append_the_database_failed_are_refused_as_it_was(
    pg_dsn: str, topic_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An append the database fails (KAFKA_STORAGE_ERROR: not stored, retried) leaves a gap that the batches
    sent after it would be refused OUT_OF_ORDER_SEQUENCE_NUMBER for, making librdkafka bump its epoch;
    they are refused as the failed one was, and the client retries them all in order."""
    import asyncio

    from kafkite.log.base import LogError
    from kafkite.log.pg import PgStorage
    from kafkite.log.pg import partition as pg_partition
    from kafkite.log.pg.db import DatabaseError
    from kafkite.log.producer_state import OutOfOrderSequence, ProducerStateError

    a = PgStorage(pg_dsn)
    a.load()
    try:
        a.create_topic(topic_name, 1)
        pa = a.partition(topic_name, 0)
        a.db.run(a.claim_op([pa], 1), transaction=True)
        monkeypatch.setattr(pa, "_claimed", None)  # no grace after the takeover: only the failure's

        def batch(seq: int) -> bytearray:
            return _batch([f"v{seq}".encode()], producer_id=7, producer_epoch=0, base_sequence=seq)

        real = a.db.run_async
        fail_next = [False]

        async def flaky(op: Any, **kw: Any) -> Any:
            if fail_next[0]:  # this append: the database cannot be reached
                fail_next[0] = False
                op.close()
                raise DatabaseError("cannot connect to the database: connection timeout expired")
            return await real(op, **kw)

        monkeypatch.setattr(a.db, "run_async", flaky)

        async def run() -> tuple[BaseException | int, ...]:
            out: list[BaseException | int] = []
            for seq in (0, 1, 2):
                fail_next[0] = seq == 1
                try:
                    out.append((await pa.append(batch(seq), now_ms=1)).first_offset)
                except Exception as e:
                    out.append(e)
            return tuple(out)

        first, failed, behind = asyncio.run(run())
        assert first == 0 and isinstance(failed, DatabaseError), (first, failed)
        assert isinstance(behind, LogError) and not isinstance(behind, ProducerStateError), behind
        assert pa.append_sync(batch(1), now_ms=1).first_offset == 1
        assert pa.append_sync(batch(2), now_ms=1).first_offset == 2
        # Once the window after the failure has passed, a gap is out of order, as in Kafka.
        monkeypatch.setattr(pg_partition, "IN_FLIGHT_WINDOW_S", 0.0)
        with pytest.raises(OutOfOrderSequence):
            pa.append_sync(batch(5), now_ms=1)
    finally:
        a.close()


# ------------------------------------------------------------------------------ PostgreSQL cluster


@pytest.fixture
def cluster3(tmp_path: Path) -> Iterator[list[BrokerProcess]]:
    dsn = pg_server().new_database("epochs")
    started: list[BrokerProcess] = []
    try:
        for node in (1, 2, 3):
            b = BrokerProcess(
                tmp_path / f"data{node}",
                tmp_path / f"broker{node}.log",
                [
                    f"storage.engine={dsn}",
                    f"node.id={node}",
                    "cluster.heartbeat.interval.ms=200",
                    "cluster.session.timeout.ms=1500",
                    "log.requests=true",
                ],
            )
            started.append(b)
            b.start()
        wait_for("three live brokers", lambda: all(live_nodes(b) == {1, 2, 3} for b in started))
        yield started
    finally:
        stop_all(started)


def partition_epochs(b: BrokerProcess, topic: str) -> dict[int, tuple[int, int]]:
    with RawClient.to(b.bootstrap) as c:
        resp = c.request(
            METADATA,
            12,
            {
                "topics": [{"name": topic, "topic_id": uuid.UUID(int=0)}],
                "allow_auto_topic_creation": False,
                "include_topic_authorized_operations": False,
            },
        )
    return {
        p["partition_index"]: (p["leader_id"], p["leader_epoch"]) for p in resp["topics"][0]["partitions"]
    }


def test_librdkafka_validates_its_position_after_a_leader_change(
    cluster3: list[BrokerProcess], topic_name: str
) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition

    by_id = {i + 1: b for i, b in enumerate(cluster3)}
    bootstrap = ",".join(b.bootstrap for b in cluster3)
    create_topic(cluster3[0].bootstrap, topic_name, 3)
    wait_for(
        "every partition led at epoch >= 1",
        lambda: all(e >= 1 for _, e in partition_epochs(cluster3[0], topic_name).values()),
    )
    before = partition_epochs(cluster3[0], topic_name)
    victim = before[0][0]
    survivor = by_id[1 if victim != 1 else 2]

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})

    def send(values: list[bytes]) -> None:
        for v in values:
            producer.produce(topic_name, v, partition=0)
        assert producer.flush(60) == 0

    first = [b"a%d" % i for i in range(200)]
    send(first)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "topic.metadata.refresh.interval.ms": 500,
        }
    )
    got: list[bytes] = []
    try:
        consumer.assign([TopicPartition(topic_name, 0, 0)])
        deadline = time.monotonic() + 30
        while len(got) < len(first):
            assert time.monotonic() < deadline, f"consumed {len(got)} of {len(first)}"
            got += [m.value() for m in consumer.consume(500, 0.5) if m.error() is None]
        by_id[victim].kill9()
        wait_for(
            "partition 0 led by another broker at a higher epoch",
            lambda: (
                partition_epochs(survivor, topic_name)[0][0] != victim
                and partition_epochs(survivor, topic_name)[0][1] > before[0][1]
            ),
            timeout=30,
        )
        after = partition_epochs(survivor, topic_name)
        for p, (leader, epoch) in before.items():
            # A partition that moved is at a higher epoch; one that stayed keeps its epoch.
            assert after[p][1] == epoch if after[p][0] == leader else after[p][1] > epoch, (before, after)
        second = [b"b%d" % i for i in range(200)]
        send(second)
        deadline = time.monotonic() + 60
        while len(got) < len(first) + len(second):
            assert time.monotonic() < deadline, f"consumed {len(got)} of {len(first) + len(second)}"
            got += [m.value() for m in consumer.consume(500, 0.5) if m.error() is None]
        time.sleep(1)
        got += [m.value() for m in consumer.consume(500, 0.5) if m.error() is None]
    finally:
        consumer.close()
    assert got == first + second  # nothing lost, nothing twice, in order
    validated = [b for b in cluster3 if b.running and "OffsetForLeaderEpoch v" in b.log_text()]
    assert validated, "the consumer never asked OffsetForLeaderEpoch after the leader change"
    # The new leader's batches carry its epoch.
    new_leader, new_epoch = partition_epochs(survivor, topic_name)[0]
    assert {
        h.partition_leader_epoch for h in fetch_batches(by_id[new_leader].bootstrap, topic_name, 200)
    } == {new_epoch}
    # Requests with the old epoch are fenced; with one not yet known, refused as unknown.
    leader_b = by_id[new_leader].bootstrap
    assert fetch_error(leader_b, topic_name, 0, before[0][1]) == FENCED_LEADER_EPOCH
    assert fetch_error(leader_b, topic_name, 0, new_epoch + 1) == UNKNOWN_LEADER_EPOCH
    assert list_offsets(leader_b, topic_name, 0, before[0][1])["error_code"] == FENCED_LEADER_EPOCH
    got_epoch = offset_for_leader_epoch(leader_b, topic_name, 0, before[0][1], current=new_epoch)
    assert (got_epoch["leader_epoch"], got_epoch["end_offset"]) == (before[0][1], 200)
    other = next(b for n, b in by_id.items() if n not in (victim, new_leader))
    assert (
        offset_for_leader_epoch(other.bootstrap, topic_name, 0, new_epoch)["error_code"]
        == NOT_LEADER_OR_FOLLOWER
    )
