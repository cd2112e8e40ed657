"""Transactions coordinated cluster-wide by three kafkite brokers sharing one PostgreSQL database: every
broker names the same coordinator for a transactional id and the others refuse it, transactional producers
commit and abort across brokers, a second producer fences the first whichever broker each asked, and when the
coordinator is killed its transactions are completed or aborted by the broker that takes them over."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import BrokerProcess, RawClient, stop_all
from test_pg_cluster import leaders, live_nodes, wait_for
from test_pg_support import pg_server
from test_txn_clients import read_all, txn_producer

from kafkite.broker.txn.state import TxnMetadata, TxnState

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

HEARTBEAT_MS = 200
SESSION_TIMEOUT_MS = 1500
FIND_COORDINATOR, INIT_PRODUCER_ID = 10, 22
DESCRIBE_TRANSACTIONS, LIST_TRANSACTIONS = 65, 66
NOT_COORDINATOR = 16


@pytest.fixture(scope="module")
def brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[BrokerProcess]]:
    """Three brokers (node ids 1..3) on a fresh database; stopped (and checked) after the module."""
    dsn = pg_server().new_database("clustertxn")
    tmp: Path = tmp_path_factory.mktemp("cluster-txn")
    started: list[BrokerProcess] = []
    try:
        for node in (1, 2, 3):
            b = BrokerProcess(
                tmp / f"data{node}",
                tmp / f"broker{node}.log",
                [
                    f"storage.engine={dsn}",
                    f"node.id={node}",
                    f"cluster.heartbeat.interval.ms={HEARTBEAT_MS}",
                    f"cluster.session.timeout.ms={SESSION_TIMEOUT_MS}",
                    "transaction.abort.timed.out.transaction.cleanup.interval.ms=300",
                ],
            )
            started.append(b)
            b.start()
        wait_for("three live brokers", lambda: all(live_nodes(b) == {1, 2, 3} for b in started))
        yield started
    finally:
        stop_all(started)


def create_topic(brokers: list[BrokerProcess], partitions: int = 3) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"ctx-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": brokers[0].bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)], operation_timeout=10)[topic].result(timeout=15)
    wait_for("the topic on every broker", lambda: all(len(leaders(b, topic)) == partitions for b in brokers))
    return topic


def coordinator_of(b: BrokerProcess, tid: str, key_type: int = 1) -> int:
    with RawClient.to(b.bootstrap) as c:
        resp = c.request(FIND_COORDINATOR, 3, {"key": tid, "key_type": key_type})
    assert resp["error_code"] == 0, resp
    return int(resp["node_id"])


def coordinators_batched(b: BrokerProcess, tids: list[str]) -> dict[str, int]:
    with RawClient.to(b.bootstrap) as c:
        resp = c.request(FIND_COORDINATOR, 4, {"key_type": 1, "coordinator_keys": tids})
    assert all(x["error_code"] == 0 for x in resp["coordinators"]), resp
    return {x["key"]: int(x["node_id"]) for x in resp["coordinators"]}


def init_producer_id(b: BrokerProcess, tid: str) -> int:
    with RawClient.to(b.bootstrap) as c:
        resp = c.request(
            INIT_PRODUCER_ID,
            4,
            {
                "transactional_id": tid,
                "transaction_timeout_ms": 10_000,
                "producer_id": -1,
                "producer_epoch": -1,
            },
        )
    return int(resp["error_code"])


def tid_coordinated_by(b: BrokerProcess, node: int, key_type: int = 1) -> str:
    """A fresh transactional id (or group, key type 0) that broker ``node`` coordinates."""
    for _ in range(200):
        tid = f"tx-{uuid.uuid4().hex[:8]}"
        if coordinator_of(b, tid, key_type) == node:
            return tid
    raise AssertionError(f"no transactional id placed on broker {node}")


def all_bootstrap(brokers: list[BrokerProcess]) -> str:
    return ",".join(b.bootstrap for b in brokers if b.running)


def test_every_broker_names_the_same_coordinator_and_the_others_refuse(brokers: list[BrokerProcess]) -> None:
    by_id = {i + 1: b for i, b in enumerate(brokers)}
    tids = [f"tx-{uuid.uuid4().hex[:8]}" for _ in range(12)]
    single = [{tid: coordinator_of(b, tid) for tid in tids} for b in brokers]
    batched = [coordinators_batched(b, tids) for b in brokers]
    assert single[0] == single[1] == single[2] == batched[0] == batched[1] == batched[2]
    placement = single[0]
    assert set(placement.values()) == {1, 2, 3}, placement  # spread over the brokers

    for tid in tids[:4]:
        coord = placement[tid]
        others = [n for n in by_id if n != coord]
        for n in others:
            assert init_producer_id(by_id[n], tid) == NOT_COORDINATOR
        assert init_producer_id(by_id[coord], tid) == 0
        with RawClient.to(by_id[others[0]].bootstrap) as c:
            resp = c.request(DESCRIBE_TRANSACTIONS, 0, {"transactional_ids": [tid]})
        assert resp["transaction_states"][0]["error_code"] == NOT_COORDINATOR
        with RawClient.to(by_id[coord].bootstrap) as c:
            resp = c.request(DESCRIBE_TRANSACTIONS, 0, {"transactional_ids": [tid]})
        assert resp["transaction_states"][0]["error_code"] == 0

    # Each broker lists only the transactions it coordinates.
    for n, b in by_id.items():
        with RawClient.to(b.bootstrap) as c:
            resp = c.request(LIST_TRANSACTIONS, 0, {"state_filters": [], "producer_id_filters": []})
        listed = {t["transactional_id"] for t in resp["transaction_states"]}
        assert {tid for tid in tids[:4] if placement[tid] == n} <= listed
        assert not {tid for tid in tids if placement[tid] != n} & listed

    # A transactional client bootstrapped from a broker that is not the coordinator finds the coordinator.
    tid = tids[0]
    not_coord = by_id[placement[tid] % 3 + 1]
    p = txn_producer(not_coord.bootstrap, tid)
    p.begin_transaction()
    p.abort_transaction(10)


def test_commit_and_abort_across_the_brokers(brokers: list[BrokerProcess]) -> None:
    topic = create_topic(brokers)
    p = txn_producer(all_bootstrap(brokers), f"tx-{uuid.uuid4().hex[:8]}")
    committed = []
    for n in range(4):
        commit = n % 2 == 0
        p.begin_transaction()
        for i in range(9):
            v = b"%s-%d-%d" % (b"c" if commit else b"a", n, i)
            p.produce(topic, v, partition=i % 3)  # every partition: markers go to every broker's partitions
            if commit:
                committed.append(v)
        if commit:
            p.commit_transaction(10)
        else:
            p.abort_transaction(10)
    seen = read_all(all_bootstrap(brokers), topic, "read_committed", partitions=3, idle=1.5)
    assert sorted(seen) == sorted(committed)


def test_second_producer_fences_the_first_whichever_broker_each_asked(brokers: list[BrokerProcess]) -> None:
    from confluent_kafka import KafkaException

    topic = create_topic(brokers)
    tid = f"tx-{uuid.uuid4().hex[:8]}"
    first = txn_producer(brokers[0].bootstrap, tid)
    first.begin_transaction()
    first.produce(topic, b"zombie", partition=0)
    first.flush(10)
    second = txn_producer(brokers[1].bootstrap, tid)  # aborts the first one's transaction
    second.begin_transaction()
    second.produce(topic, b"winner", partition=1)
    second.commit_transaction(10)
    with pytest.raises(KafkaException) as info:
        first.produce(topic, b"zombie-2", partition=2)
        first.commit_transaction(10)
    err = info.value.args[0]
    assert err.fatal() or "fenced" in str(err).lower(), err
    assert read_all(all_bootstrap(brokers), topic, "read_committed", partitions=3, idle=1.5) == [b"winner"]


def test_offsets_of_a_transaction_reach_a_group_coordinated_elsewhere(brokers: list[BrokerProcess]) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition

    by_id = {i + 1: b for i, b in enumerate(brokers)}
    src, dst = create_topic(brokers, 1), create_topic(brokers, 1)
    tid = tid_coordinated_by(by_id[1], 1)
    group = tid_coordinated_by(by_id[1], 2, key_type=0)
    bootstrap = all_bootstrap(brokers)
    plain = Producer({"bootstrap.servers": bootstrap})
    for i in range(10):
        plain.produce(src, b"in-%d" % i, partition=0)
    assert plain.flush(10) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    try:
        consumer.subscribe([src])
        got: list[Any] = []
        deadline = time.monotonic() + 20
        while len(got) < 10 and time.monotonic() < deadline:
            got += [m for m in consumer.consume(num_messages=10, timeout=0.5) if m.error() is None]
        assert len(got) == 10
        producer = txn_producer(bootstrap, tid)

        def transaction(offset: int, commit: bool) -> None:
            producer.begin_transaction()
            producer.produce(dst, b"out-%d" % offset, partition=0)
            producer.send_offsets_to_transaction(
                [TopicPartition(src, 0, offset)], consumer.consumer_group_metadata(), 10
            )
            if commit:
                producer.commit_transaction(10)
            else:
                producer.abort_transaction(10)

        def committed() -> int:
            return int(consumer.committed([TopicPartition(src, 0)], timeout=10)[0].offset)

        transaction(5, commit=True)
        wait_for("the committed offset on the group's coordinator", lambda: committed() == 5, timeout=10)
        transaction(10, commit=False)
        time.sleep(0.5)
        assert committed() == 5
        transaction(7, commit=True)
        wait_for("the second committed offset", lambda: committed() == 7, timeout=10)
    finally:
        consumer.close()
    assert read_all(bootstrap, dst, "read_committed", idle=1.0) == [b"out-5", b"out-7"]


def _prepare_commit_entry(dsn: str, tid: str) -> None:
    """Append the PrepareCommit entry of ``tid``'s ongoing transaction to the transaction log, as its
    coordinator does when EndTxn arrives, before the markers are written."""
    from kafkite.broker.groups.log import StorageGroupLog
    from kafkite.log.pg import PgStorage

    storage = PgStorage(dsn)
    storage.load()
    try:
        part = storage.partition("__transaction_state", 0)
        last: bytes | None = None
        for key, value in StorageGroupLog(part).replay():
            if key == TxnMetadata(tid, 0, 0, 0).key():
                last = value
        assert last is not None
        meta = TxnMetadata.from_value(tid, last)
        assert meta.state == TxnState.ONGOING, meta
        meta.state = TxnState.PREPARE_COMMIT
        StorageGroupLog(part).append([(meta.key(), meta.to_value())])
    finally:
        storage.close()


def test_a_killed_coordinators_transactions_are_taken_over(brokers: list[BrokerProcess]) -> None:
    from confluent_kafka import KafkaException, Producer

    by_id = {i + 1: b for i, b in enumerate(brokers)}
    topic = create_topic(brokers)
    victim = 3
    tid_open = tid_coordinated_by(by_id[1], victim)
    tid_prepared = tid_coordinated_by(by_id[1], victim)
    lead = leaders(by_id[1], topic)
    part = next(p for p, leader in lead.items() if leader != victim)  # the data outlives the victim
    bootstrap = all_bootstrap(brokers)

    # An open transaction with a short timeout, and one whose commit the coordinator has logged as prepared.
    open_p = txn_producer(bootstrap, tid_open, **{"transaction.timeout.ms": 3000})
    open_p.begin_transaction()
    open_p.produce(topic, b"open", partition=part)
    open_p.flush(10)
    prepared_p = txn_producer(bootstrap, tid_prepared, **{"transaction.timeout.ms": 60_000})
    prepared_p.begin_transaction()
    prepared_p.produce(topic, b"prepared", partition=part)
    prepared_p.flush(10)
    plain = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    plain.produce(topic, b"after", partition=part)
    assert plain.flush(10) == 0
    dsn = next(o.split("=", 1)[1] for o in by_id[1].overrides if o.startswith("storage.engine="))
    _prepare_commit_entry(dsn, tid_prepared)
    by_id[victim].kill9()
    survivors = [by_id[1], by_id[2]]
    wait_for("the victim to be dropped", lambda: all(live_nodes(b) == {1, 2} for b in survivors))
    bootstrap = all_bootstrap(brokers)

    # The prepared commit is completed by the new coordinator, the open transaction aborted on its timeout:
    # the last stable offset moves past both and a read_committed consumer sees everything but "open".
    def committed_view() -> list[bytes]:
        return read_all(bootstrap, topic, "read_committed", partitions=3, idle=1.0)

    wait_for("the taken-over transactions to end", lambda: b"after" in committed_view(), timeout=20)
    assert sorted(committed_view()) == [b"after", b"prepared"]
    for tid in (tid_open, tid_prepared):
        assert coordinator_of(by_id[1], tid) in (1, 2)

    # The producer of the dead coordinator's era is fenced; a new one initialises and commits.
    with pytest.raises(KafkaException):
        open_p.produce(topic, b"zombie", partition=part)
        open_p.commit_transaction(10)
    fresh = txn_producer(bootstrap, tid_open)
    fresh.begin_transaction()
    fresh.produce(topic, b"fresh", partition=part)
    fresh.commit_transaction(10)
    assert sorted(committed_view()) == [b"after", b"fresh", b"prepared"]
    assert b"zombie" not in read_all(bootstrap, topic, "read_uncommitted", partitions=3, idle=1.0)
