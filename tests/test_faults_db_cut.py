"""A broker cut off from its database (every packet between them dropped: silence, not refusals) keeps
answering: requests that do not need the database at once, on other connections, while requests that do are
answered with errors clients retry within their timeouts; once the cut heals it serves again within seconds.

Before, a consumer group write or a producer state lookup ran on the event loop over a connection that waited
out TCP's retransmission backoff (minutes), and the broker answered nothing meanwhile."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from faults_cluster import FaultCluster, Timing
from faults_history import History
from faults_net import ensure_tools, in_ns
from faults_workload import create_topics
from helpers import RawClient

from kafkite.protocol.records import build_batch

pytestmark = [pytest.mark.faults, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

TOPIC, GROUP = "cut", "cut-group"
RETRIABLE = {
    6,  # NOT_LEADER_OR_FOLLOWER
    7,  # REQUEST_TIMED_OUT
    14,  # COORDINATOR_LOAD_IN_PROGRESS
    15,  # COORDINATOR_NOT_AVAILABLE
    16,  # NOT_COORDINATOR
    56,  # KAFKA_STORAGE_ERROR
}


@pytest.fixture(scope="module", autouse=True)
def _network_tools() -> None:
    reason = ensure_tools()
    if reason:
        import os

        if os.environ.get("CI", "") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


def _produce(c: RawClient, value: bytes) -> int:
    resp = c.request(
        0,
        9,
        {
            "transactional_id": None,
            "acks": -1,
            "timeout_ms": 10000,
            "topic_data": [
                {
                    "name": TOPIC,
                    "partition_data": [{"index": 0, "records": build_batch([(None, value, [], 1)])}],
                }
            ],
        },
    )
    return int(resp["responses"][0]["partition_responses"][0]["error_code"])


def _commit(c: RawClient, offset: int) -> int:
    resp = c.request(
        8,
        8,
        {
            "group_id": GROUP,
            "generation_id_or_member_epoch": -1,
            "member_id": "",
            "group_instance_id": None,
            "topics": [
                {
                    "name": TOPIC,
                    "partitions": [
                        {
                            "partition_index": 0,
                            "committed_offset": offset,
                            "committed_leader_epoch": -1,
                            "committed_metadata": "",
                        }
                    ],
                }
            ],
        },
    )
    return int(resp["topics"][0]["partitions"][0]["error_code"])


def _fetch(c: RawClient) -> int:
    resp = c.request(
        1,
        12,
        {
            "max_wait_ms": 0,
            "min_bytes": 0,
            "max_bytes": 1 << 20,
            "isolation_level": 1,
            "session_id": 0,
            "topics": [
                {
                    "topic": TOPIC,
                    "partitions": [{"partition": 0, "fetch_offset": 0, "partition_max_bytes": 1 << 20}],
                }
            ],
            "forgotten_topics_data": [],
            "rack_id": "",
        },
    )
    return int(resp["responses"][0]["partitions"][0]["error_code"])


def test_a_broker_cut_off_from_the_database_keeps_answering(tmp_path: Path) -> None:
    cluster = FaultCluster(tmp_path, History(), brokers=1, timing=Timing()).start()
    ns = cluster.client_ns
    bootstrap = cluster.bootstrap
    try:
        create_topics(ns, bootstrap, {TOPIC: 1})

        def before() -> tuple[int, int]:
            with RawClient.to(bootstrap, timeout=30) as c:
                return _produce(c, b"before"), _commit(c, 1)

        assert in_ns(ns, before, timeout=60) == (0, 0)

        # Another connection asks for Metadata every 100 ms throughout: the slowest answer is recorded.
        stop = threading.Event()
        pings: list[float] = []

        def ping() -> None:
            with RawClient.to(bootstrap, timeout=60) as c:
                while not stop.is_set():
                    t0 = time.monotonic()
                    c.request(3, 9, {"topics": None, "allow_auto_topic_creation": False})
                    pings.append(time.monotonic() - t0)
                    time.sleep(0.1)

        pinger: dict[str, Any] = {}
        t = threading.Thread(target=lambda: pinger.update(r=_safe(lambda: in_ns(ns, ping))), daemon=True)
        t.start()
        time.sleep(1.0)
        fault = cluster.isolate_from_db("b1")
        answers: dict[str, tuple[int, float]] = {}
        try:
            time.sleep(0.5)

            def during() -> None:
                with RawClient.to(bootstrap, timeout=40) as c:
                    for name, call in (
                        ("commit", lambda: _commit(c, 2)),
                        ("produce", lambda: _produce(c, b"during")),
                        ("fetch", lambda: _fetch(c)),
                        ("commit again", lambda: _commit(c, 3)),
                    ):
                        t0 = time.monotonic()
                        answers[name] = (call(), time.monotonic() - t0)

            in_ns(ns, during, timeout=120)
            time.sleep(2.0)
        finally:
            cluster.heal(fault)
        healed = time.monotonic()

        def after() -> tuple[int, int]:
            deadline = time.monotonic() + 60
            with RawClient.to(bootstrap, timeout=30) as c:
                while True:
                    got = (_produce(c, b"after"), _commit(c, 4))
                    if got == (0, 0) or time.monotonic() > deadline:
                        return got
                    time.sleep(0.5)

        assert in_ns(ns, after, timeout=120) == (0, 0)
        recovered = time.monotonic() - healed
        stop.set()
        t.join(30)
        print(
            f"answers during the cut (code, seconds): {answers}; slowest Metadata {max(pings):.2f} s;"
            f" serving again {recovered:.1f} s after the cut healed"
        )
        assert "r" in pinger and pinger["r"] is None, pinger
        # Requests needing the database were answered, with an error clients retry (or, for a fetch whose
        # data is at hand, without one), well within their timeouts.
        for name, (code, seconds) in answers.items():
            assert code == 0 or code in RETRIABLE, (name, code, answers)
            assert seconds < 15, (name, seconds, answers)
        assert answers["produce"][0] in RETRIABLE, answers
        # Other connections were never held: the slowest Metadata during the cut (loaded machine: generous).
        assert max(pings) < 3.0, sorted(pings)[-5:]
        assert recovered < 30, recovered
    finally:
        cluster.stop(check=False)


def _safe(fn: Any) -> BaseException | None:
    try:
        fn()
    except BaseException as e:
        return e
    return None


def _join_and_sync(c: RawClient, group: str) -> tuple[int, int]:
    """A classic group's first member joins (JoinGroup twice: the first asks for a member id) and, as its
    leader, sends SyncGroup with its assignment: the coordinator writes the group to its log. Returns
    (JoinGroup error, SyncGroup error), SyncGroup -1 when JoinGroup failed."""
    join = {
        "group_id": group,
        "session_timeout_ms": 10000,
        "rebalance_timeout_ms": 10000,
        "member_id": "",
        "group_instance_id": None,
        "protocol_type": "consumer",
        "protocols": [{"name": "range", "metadata": b""}],
    }
    resp = c.request(11, 5, join)
    if resp["error_code"] == 79:  # MEMBER_ID_REQUIRED
        resp = c.request(11, 5, {**join, "member_id": resp["member_id"]})
    if resp["error_code"] != 0:
        return int(resp["error_code"]), -1
    member = resp["member_id"]
    sync = {
        "group_id": group,
        "generation_id": resp["generation_id"],
        "member_id": member,
        "group_instance_id": None,
        "assignments": [{"member_id": member, "assignment": b""}],
    }
    return 0, int(c.request(14, 3, sync)["error_code"])


def _init_producer_id(c: RawClient, transactional_id: str) -> int:
    resp = c.request(22, 1, {"transactional_id": transactional_id, "transaction_timeout_ms": 60000})
    return int(resp["error_code"])


def test_coordinator_writes_during_a_cut_do_not_hold_the_event_loop(tmp_path: Path) -> None:
    """The group and transaction coordinators' log writes (JoinGroup/SyncGroup, InitProducerId, EndTxn) are
    awaited over pooled connections: while the database is cut off they fail with a retriable error, and
    Metadata on another connection is answered at once throughout (it used to wait up to the TCP user
    timeout behind each synchronous write); after the cut heals, the same clients carry on."""
    from confluent_kafka import Consumer, KafkaException, Producer

    cluster = FaultCluster(tmp_path, History(), brokers=1, timing=Timing()).start()
    ns = cluster.client_ns
    bootstrap = cluster.bootstrap
    clients: dict[str, Any] = {}
    try:
        create_topics(ns, bootstrap, {TOPIC: 1})

        def before() -> None:
            # A transaction is open (its partition added) before the cut; its commit is tried during it.
            p = clients["txn"] = Producer({"bootstrap.servers": bootstrap, "transactional.id": "cut-txn-1"})
            p.init_transactions(30)
            p.begin_transaction()
            p.produce(TOPIC, b"in a transaction", partition=0)
            assert p.flush(30) == 0

        in_ns(ns, before, timeout=90)

        stop = threading.Event()
        pings: list[float] = []

        def ping() -> None:
            with RawClient.to(bootstrap, timeout=60) as c:
                while not stop.is_set():
                    t0 = time.monotonic()
                    c.request(3, 9, {"topics": None, "allow_auto_topic_creation": False})
                    pings.append(time.monotonic() - t0)
                    time.sleep(0.1)

        pinger: dict[str, Any] = {}
        t = threading.Thread(target=lambda: pinger.update(r=_safe(lambda: in_ns(ns, ping))), daemon=True)
        t.start()
        time.sleep(1.0)
        fault = cluster.isolate_from_db("b1")
        answers: dict[str, tuple[Any, float]] = {}
        cut_pings = 0
        try:
            time.sleep(0.5)
            cut_start = len(pings)

            def consume() -> None:
                # A real consumer joins during the cut: JoinGroup, SyncGroup (its group write fails), again.
                cons = clients["consumer"] = Consumer(
                    {
                        "bootstrap.servers": bootstrap,
                        "group.id": "cut-join",
                        "session.timeout.ms": 6000,
                        "auto.offset.reset": "earliest",
                        "enable.auto.commit": False,
                    }
                )
                cons.subscribe([TOPIC])
                end = time.monotonic() + 10
                while time.monotonic() < end:
                    cons.poll(0.2)

            consumer = threading.Thread(
                target=lambda: answers.update(consumer=(_safe(lambda: in_ns(ns, consume)), 0))
            )
            consumer.start()

            def during() -> None:
                with RawClient.to(bootstrap, timeout=40) as c:
                    for name, call in (
                        ("join+sync", lambda: _join_and_sync(c, "cut-raw")),
                        ("init producer id", lambda: _init_producer_id(c, "cut-raw-txn")),
                    ):
                        t0 = time.monotonic()
                        answers[name] = (call(), time.monotonic() - t0)
                for name, action in (
                    ("commit", lambda: clients["txn"].commit_transaction(6)),
                    (
                        "init transactions",
                        lambda: Producer(
                            {"bootstrap.servers": bootstrap, "transactional.id": "cut-txn-2"}
                        ).init_transactions(6),
                    ),
                ):
                    t0 = time.monotonic()
                    try:
                        action()
                        outcome: Any = "ok"
                    except KafkaException as e:
                        outcome = e.args[0].retriable() or e.args[0].code()
                    answers[name] = (outcome, time.monotonic() - t0)

            in_ns(ns, during, timeout=120)
            consumer.join(60)
            cut_pings = len(pings) - cut_start
        finally:
            cluster.heal(fault)
        cut_slowest = max(pings[cut_start : cut_start + cut_pings], default=0.0)

        def after() -> tuple[int, int]:
            # The transaction opened before the cut commits (EndTxn retried), the consumer gets its
            # partition, and the raw group completes a rebalance.
            deadline = time.monotonic() + 60
            while True:
                try:
                    clients["txn"].commit_transaction(10)
                    break
                except KafkaException as e:
                    if not e.args[0].retriable() or time.monotonic() > deadline:
                        raise
            cons = clients["consumer"]
            while not cons.assignment() and time.monotonic() < deadline:
                cons.poll(0.2)
            assert cons.assignment(), "the consumer did not join after the cut"
            with RawClient.to(bootstrap, timeout=30) as c:
                while True:
                    got = _join_and_sync(c, "cut-raw-after")
                    if got == (0, 0) or time.monotonic() > deadline:
                        return got
                    time.sleep(0.5)

        assert in_ns(ns, after, timeout=120) == (0, 0)
        stop.set()
        t.join(30)
        print(
            f"answers during the cut (outcome, seconds): {answers}; {cut_pings} Metadata during the cut,"
            f" slowest {cut_slowest:.2f} s"
        )
        assert "r" in pinger and pinger["r"] is None, pinger
        assert answers["consumer"][0] is None, answers
        code, seconds = answers["join+sync"]
        assert code[0] in (0, *RETRIABLE) and code[1] in (-1, 0, *RETRIABLE), answers
        assert seconds < 15, answers
        assert answers["init producer id"][0] in RETRIABLE and answers["init producer id"][1] < 15, answers
        # librdkafka retries the retriable answers until its timeout: it gives up retriable, never fatal.
        assert answers["commit"][0] is True and answers["init transactions"][0] is True, answers
        # The event loop was never held: every Metadata on the other connection answered at once.
        assert cut_pings > 50, cut_pings
        assert cut_slowest < 0.5, sorted(pings[cut_start : cut_start + cut_pings])[-5:]
        held = [
            line for line in cluster.brokers["b1"].log_text().splitlines() if "held the event loop" in line
        ]
        assert not held, held
    finally:
        for name in ("consumer",):
            with contextlib.suppress(Exception):
                clients[name].close()
        cluster.stop(check=False)
