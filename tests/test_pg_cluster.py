"""Three kafkite brokers sharing one PostgreSQL database: every broker lists the live ones, partition
leadership and group coordination are spread over them, a long poll wakes on an append made elsewhere, and
when a broker is killed mid-stream its partitions and groups move without losing an acknowledged message."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import BrokerProcess, RawClient, stop_all
from test_pg_support import pg_server

from kafkite.protocol.records import build_batch, iter_headers

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

HEARTBEAT_MS = 200
SESSION_TIMEOUT_MS = 1500
METADATA, FIND_COORDINATOR, PRODUCE, FETCH, HEARTBEAT, LIST_OFFSETS = 3, 10, 0, 1, 12, 2
NOT_LEADER_OR_FOLLOWER, NOT_COORDINATOR = 6, 16


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Callable[[int], list[BrokerProcess]]]:
    """Start ``n`` brokers (node ids 1..n) on a fresh database; stopped (and checked) afterwards."""
    started: list[BrokerProcess] = []
    dsn = pg_server().new_database("cluster")

    def start(n: int) -> list[BrokerProcess]:
        for node in range(1, n + 1):
            b = BrokerProcess(
                tmp_path / f"data{node}",
                tmp_path / f"broker{node}.log",
                [
                    f"storage.engine={dsn}",
                    f"node.id={node}",
                    f"cluster.heartbeat.interval.ms={HEARTBEAT_MS}",
                    f"cluster.session.timeout.ms={SESSION_TIMEOUT_MS}",
                    "group.consumer.session.timeout.ms=6000",
                    "group.consumer.min.session.timeout.ms=1000",
                    "group.consumer.heartbeat.interval.ms=500",
                    "group.consumer.min.heartbeat.interval.ms=100",
                ],
            )
            started.append(b)
            b.start()
        return started

    yield start
    stop_all(started)


def metadata(bootstrap: str, topics: list[str] | None) -> dict[str, Any]:
    with RawClient.to(bootstrap) as c:
        return c.request(
            METADATA,
            12,
            {
                "topics": None
                if topics is None
                else [{"name": t, "topic_id": uuid.UUID(int=0)} for t in topics],
                "allow_auto_topic_creation": False,
                "include_topic_authorized_operations": False,
            },
        )


def wait_for(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def live_nodes(b: BrokerProcess) -> set[int]:
    return {x["node_id"] for x in metadata(b.bootstrap, None)["brokers"]}


def leaders(b: BrokerProcess, topic: str) -> dict[int, int]:
    t = metadata(b.bootstrap, [topic])["topics"][0]
    assert t["error_code"] == 0, t
    return {p["partition_index"]: p["leader_id"] for p in t["partitions"]}


def find_coordinator(b: BrokerProcess, group: str) -> int:
    with RawClient.to(b.bootstrap) as c:
        resp = c.request(FIND_COORDINATOR, 3, {"key": group, "key_type": 0})
    assert resp["error_code"] == 0, resp
    return int(resp["node_id"])


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)], operation_timeout=10)[topic].result(timeout=15)


def produce_raw(b: BrokerProcess, topic: str, partition: int, value: bytes) -> dict[str, Any]:
    with RawClient.to(b.bootstrap) as c:
        resp = c.request(
            PRODUCE,
            9,
            {
                "transactional_id": None,
                "acks": -1,
                "timeout_ms": 5000,
                "topic_data": [
                    {
                        "name": topic,
                        "partition_data": [
                            {
                                "index": partition,
                                "records": build_batch([(None, value, [], int(time.time() * 1000))]),
                            }
                        ],
                    }
                ],
            },
        )
    return dict(resp["responses"][0]["partition_responses"][0])


def fetch_raw(b: BrokerProcess, topic: str, partition: int, offset: int, wait_ms: int) -> dict[str, Any]:
    with RawClient.to(b.bootstrap, timeout=wait_ms / 1000 + 10) as c:
        resp = c.request(
            FETCH,
            12,
            {
                "max_wait_ms": wait_ms,
                "min_bytes": 1,
                "max_bytes": 1 << 20,
                "isolation_level": 0,
                "session_id": 0,
                "topics": [
                    {
                        "topic": topic,
                        "partitions": [
                            {"partition": partition, "fetch_offset": offset, "partition_max_bytes": 1 << 20}
                        ],
                    }
                ],
                "forgotten_topics_data": [],
                "rack_id": "",
            },
        )
    return dict(resp["responses"][0]["partitions"][0])


def earliest(b: BrokerProcess, topic: str, partition: int) -> int:
    with RawClient.to(b.bootstrap) as c:
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
                            {"partition_index": partition, "current_leader_epoch": -1, "timestamp": -2}
                        ],
                    }
                ],
            },
        )
    return int(resp["topics"][0]["partitions"][0]["offset"])


def test_brokers_share_the_work_and_refuse_what_is_not_theirs(
    cluster: Callable[[int], list[BrokerProcess]], topic_name: str
) -> None:
    brokers = cluster(3)
    by_id = {i + 1: b for i, b in enumerate(brokers)}
    wait_for("three live brokers", lambda: all(live_nodes(b) == {1, 2, 3} for b in brokers))
    create_topic(brokers[0].bootstrap, topic_name, 6)
    wait_for(
        "the topic on every broker",
        lambda: all(metadata(b.bootstrap, [topic_name])["topics"][0]["error_code"] == 0 for b in brokers),
    )
    views = [leaders(b, topic_name) for b in brokers]
    assert views[0] == views[1] == views[2], "brokers disagree on the leaders"
    lead = views[0]
    assert sorted(lead.values()) == [1, 1, 2, 2, 3, 3], lead  # two partitions each

    for p, leader in lead.items():
        other = by_id[leader % 3 + 1]
        assert produce_raw(other, topic_name, p, b"refused")["error_code"] == NOT_LEADER_OR_FOLLOWER
        assert fetch_raw(other, topic_name, p, 0, 0)["error_code"] == NOT_LEADER_OR_FOLLOWER
        ok = produce_raw(by_id[leader], topic_name, p, b"v%d" % p)
        assert (ok["error_code"], ok["base_offset"]) == (0, 0)

    group = f"group-{uuid.uuid4().hex[:6]}"
    coordinators = {find_coordinator(b, group) for b in brokers}
    assert len(coordinators) == 1, coordinators
    (coord,) = coordinators
    other = by_id[coord % 3 + 1]
    with RawClient.to(other.bootstrap) as c:
        resp = c.request(
            HEARTBEAT, 4, {"group_id": group, "generation_id": 1, "member_id": "m", "group_instance_id": None}
        )
    assert resp["error_code"] == NOT_COORDINATOR

    # A long poll on the leader wakes on an append the database announces (made here by another storage).
    from kafkite.log.pg import PgStorage

    p = 0
    leader = by_id[lead[p]]
    dsn = next(o.split("=", 1)[1] for o in leader.overrides if o.startswith("storage.engine="))
    result: dict[str, Any] = {}

    def long_poll() -> None:
        started = time.monotonic()
        result["resp"] = fetch_raw(leader, topic_name, p, 1, 15_000)
        result["took"] = time.monotonic() - started

    t = threading.Thread(target=long_poll)
    t.start()
    time.sleep(0.5)
    other_storage = PgStorage(dsn)
    other_storage.load()
    try:
        other_storage.partition(topic_name, p).append_sync(
            bytearray(build_batch([(None, b"elsewhere", [], 1)])), now_ms=1
        )
        t.join(20)
        assert result["resp"]["error_code"] == 0
        assert result["took"] < 10, "the long poll was not woken by the append"
        data = bytes(result["resp"]["records"] or b"")
        assert [h.base_offset for _, h in iter_headers(data)] == [1]
        # DeleteRecords made elsewhere moves the leader's log start offset too.
        other_storage.partition(topic_name, p).delete_records_before(1)
        wait_for("the new log start offset", lambda: earliest(leader, topic_name, p) == 1, timeout=5)
    finally:
        other_storage.close()

    # A broker that stops leaves at once; one that dies is dropped after its heartbeats lapse.
    by_id[3].stop()
    wait_for("broker 3 to leave", lambda: live_nodes(by_id[1]) == {1, 2}, timeout=5)
    by_id[2].kill9()
    wait_for(
        "broker 2 to be dropped", lambda: live_nodes(by_id[1]) == {1}, timeout=SESSION_TIMEOUT_MS / 1000 + 10
    )
    assert set(leaders(by_id[1], topic_name).values()) == {1}
    assert produce_raw(by_id[1], topic_name, 5, b"after")["base_offset"] == 1


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_a_broker_killed_mid_stream_loses_no_acknowledged_message(
    cluster: Callable[[int], list[BrokerProcess]], topic_name: str, protocol: str
) -> None:
    from confluent_kafka import Consumer, Producer

    brokers = cluster(3)
    by_id = {i + 1: b for i, b in enumerate(brokers)}
    bootstrap = ",".join(b.bootstrap for b in brokers)
    wait_for("three live brokers", lambda: all(live_nodes(b) == {1, 2, 3} for b in brokers))
    create_topic(brokers[0].bootstrap, topic_name, 6)
    group = f"group-{uuid.uuid4().hex[:6]}"
    victim = find_coordinator(brokers[0], group)  # the group's coordinator, also leader of two partitions

    per_producer = 3000
    acked: set[bytes] = set()
    failed: list[Any] = []
    lock = threading.Lock()
    progress = threading.Event()
    stop_consumers = threading.Event()

    def produce(name: str, extra: dict[str, Any]) -> None:
        producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": 60000,
                **extra,
            }
        )

        def report(err: Any, msg: Any) -> None:
            with lock:
                if err is None:
                    acked.add(msg.value())
                    if len(acked) >= per_producer // 2:
                        progress.set()
                else:
                    failed.append(err)

        for i in range(per_producer):
            while True:
                try:
                    producer.produce(topic_name, b"%s-%d" % (name.encode(), i), on_delivery=report)
                    break
                except BufferError:
                    producer.poll(0.05)
            if i % 50 == 0:
                producer.poll(0)
                time.sleep(0.02)
        assert producer.flush(90) == 0

    consumed: list[set[bytes]] = [set() for _ in range(3)]

    def consume(i: int) -> None:
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "group.protocol": protocol,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 200,
        }
        if protocol == "classic":
            # The consumer protocol takes both from the group coordinator.
            conf.update({"session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
        consumer = Consumer(conf)
        consumer.subscribe([topic_name])
        try:
            while not stop_consumers.is_set():
                for m in consumer.consume(500, 0.2):
                    if m.error() is None:
                        consumed[i].add(m.value())
        finally:
            consumer.close()

    producers = [
        threading.Thread(target=produce, args=("plain", {})),
        threading.Thread(target=produce, args=("idem", {"enable.idempotence": True})),
    ]
    consumers = [threading.Thread(target=consume, args=(i,)) for i in range(3)]
    for t in consumers + producers:
        t.start()
    try:
        assert progress.wait(60), "nothing was acknowledged"
        by_id[victim].kill9()
        for t in producers:
            t.join(120)
            assert not t.is_alive(), "a producer did not finish"
        total = 2 * per_producer
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if acked <= set().union(*consumed):
                break
            time.sleep(0.2)
    finally:
        stop_consumers.set()
        for t in consumers:
            t.join(30)
    assert not failed, failed[:5]
    assert len(acked) == total, f"{total - len(acked)} messages were never acknowledged"
    missing = acked - set().union(*consumed)
    assert not missing, f"{len(missing)} acknowledged messages were not consumed, e.g. {sorted(missing)[:5]}"
    assert all(not t.is_alive() for t in consumers), "the group did not finish"
    assert sum(1 for c in consumed if c) >= 2, "the group's members did not share the partitions"
    survivors = [b for n, b in by_id.items() if n != victim]
    assert live_nodes(survivors[0]) == {n for n in by_id if n != victim}


def test_a_restarted_broker_finds_everything_in_the_database(
    cluster: Callable[[int], list[BrokerProcess]], topic_name: str
) -> None:
    from confluent_kafka import Consumer, TopicPartition
    from helpers import consume, produce, watermarks

    (broker,) = cluster(1)
    create_topic(broker.bootstrap, topic_name, 2)
    offsets = produce(
        broker.bootstrap, topic_name, [(b"k%d" % i, b"v%d" % i) for i in range(50)], partition=1
    )
    assert offsets == list(range(50))
    group = f"group-{uuid.uuid4().hex[:6]}"
    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    consumer.commit(offsets=[TopicPartition(topic_name, 1, 42)], asynchronous=False)
    consumer.close()

    broker.restart()
    assert watermarks(broker.bootstrap, topic_name, 1) == (0, 50)
    assert [m.value() for m in consume(broker.bootstrap, topic_name, 1)] == [b"v%d" % i for i in range(50)]
    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        (tp,) = consumer.committed([TopicPartition(topic_name, 1)], timeout=10)
        assert tp.offset == 42
    finally:
        consumer.close()
    assert produce(broker.bootstrap, topic_name, [(None, b"more")], partition=1) == [50]
    # Killed and started again at once: it waits for its old registration to lapse, then serves.
    broker.kill9()
    broker.start()
    assert live_nodes(broker) == {1}
    assert produce(broker.bootstrap, topic_name, [(None, b"again")], partition=1) == [51]


CONSUMER_GROUP_HEARTBEAT, CONSUMER_GROUP_DESCRIBE = 68, 69


def consumer_heartbeat(
    b: BrokerProcess, group: str, member: str, epoch: int, topics: list[str]
) -> dict[str, Any]:
    with RawClient.to(b.bootstrap) as c:
        return c.request(
            CONSUMER_GROUP_HEARTBEAT,
            1,
            {
                "group_id": group,
                "member_id": member,
                "member_epoch": epoch,
                "rebalance_timeout_ms": 30000,
                "subscribed_topic_names": topics,
                "topic_partitions": [],
            },
        )


def consumer_describe(b: BrokerProcess, group: str) -> dict[str, Any]:
    with RawClient.to(b.bootstrap) as c:
        resp = c.request(
            CONSUMER_GROUP_DESCRIBE, 1, {"group_ids": [group], "include_authorized_operations": False}
        )
    return resp["groups"][0]  # type: ignore[no-any-return]


def test_consumer_groups_are_coordinated_by_the_group_placement_and_kept_in_the_database(
    cluster: Callable[[int], list[BrokerProcess]], topic_name: str
) -> None:
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ResourceType,
    )

    brokers = cluster(2)
    by_id = {i + 1: b for i, b in enumerate(brokers)}
    wait_for("two live brokers", lambda: all(live_nodes(b) == {1, 2} for b in brokers))
    create_topic(brokers[0].bootstrap, topic_name, 4)
    group = f"group-{uuid.uuid4().hex[:6]}"
    coordinator = by_id[find_coordinator(brokers[0], group)]
    other = next(b for b in brokers if b is not coordinator)
    # A group config set through the broker that does not coordinate the group reaches its coordinator.
    admin = AdminClient({"bootstrap.servers": other.bootstrap})
    resource = ConfigResource(
        ResourceType.GROUP,
        group,
        incremental_configs=[
            ConfigEntry("consumer.heartbeat.interval.ms", "700", incremental_operation=AlterConfigOpType.SET),
            # The member does not heartbeat while every broker restarts: its session outlasts the restarts.
            ConfigEntry("consumer.session.timeout.ms", "60000", incremental_operation=AlterConfigOpType.SET),
        ],
    )
    admin.incremental_alter_configs([resource])[resource].result(timeout=15)
    assert consumer_heartbeat(other, group, "m1", 0, [topic_name])["error_code"] == NOT_COORDINATOR

    def joined() -> bool:
        resp = consumer_heartbeat(coordinator, group, "m1", 0, [topic_name])
        return resp["error_code"] == 0 and resp["heartbeat_interval_ms"] == 700

    wait_for("the group config at the coordinator", joined)
    described = consumer_describe(coordinator, group)
    assert described["error_code"] == 0 and [m["member_id"] for m in described["members"]] == ["m1"]
    assert consumer_describe(other, group)["error_code"] == NOT_COORDINATOR
    epoch = described["members"][0]["member_epoch"]
    # Every broker restarted: the group comes back from the database as it was.
    for b in brokers:
        b.stop()
    for b in brokers:
        b.start()
    wait_for("two live brokers again", lambda: all(live_nodes(b) == {1, 2} for b in brokers))
    again = consumer_describe(by_id[find_coordinator(brokers[0], group)], group)
    assert again["error_code"] == 0
    assert [(m["member_id"], m["member_epoch"]) for m in again["members"]] == [("m1", epoch)]
    assigned = again["members"][0]["assignment"]["topic_partitions"]
    assert [(t["topic_name"], sorted(t["partitions"])) for t in assigned] == [(topic_name, [0, 1, 2, 3])]
