"""Acceptance of the consumer group protocol (KIP-848) with real clients against ``kafkite serve``.

confluent-kafka consumers with ``group.protocol=consumer``: three share six partitions and consume every
message once; a fourth joins while the others keep consuming the partitions they keep; a SIGKILLed member's
partitions move after the session timeout and resume at its last commit; a regular-expression subscription
picks up a topic created later, and partitions added to a subscribed topic are assigned; a static member
restarted within the session timeout gets its partitions back; a classic group is upgraded member by member
without losing a message; broker restarts and kill -9 leave the group resuming at its committed offsets;
kafka-python and aiokafka classic groups run beside.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from helpers import REPO, BrokerFactory, BrokerProcess, create_topic, produce

from kafkite.client import KafkaClient

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import Consumer, Producer  # noqa: E402

PARTITIONS = 6
SESSION_MS = 6000
BROKER = (
    "group.min.session.timeout.ms=1000",
    f"group.consumer.session.timeout.ms={SESSION_MS}",
    "group.consumer.min.session.timeout.ms=1000",
    "group.consumer.heartbeat.interval.ms=300",
    "group.consumer.min.heartbeat.interval.ms=100",
)
TP = tuple[str, int]


def consumer(bs: str, group: str, protocol: str = "consumer", **extra: Any) -> Any:
    conf: dict[str, Any] = {
        "bootstrap.servers": bs,
        "group.id": group,
        "group.protocol": protocol,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "topic.metadata.refresh.interval.ms": 1000,
    }
    if protocol == "classic":
        conf.update({"session.timeout.ms": 6000, "heartbeat.interval.ms": 300})
    conf.update(extra)
    return Consumer(conf)


class Runner(threading.Thread):
    """A consumer's own poll loop, as an application runs it: consume, record, commit after each batch.

    It records every message (when, topic, partition, offset) and every change of its assignment; the
    consumer is created, subscribed and closed in the thread that polls it.
    """

    def __init__(self, make: Callable[[], Any], topics: list[str], name: str = "") -> None:
        super().__init__(daemon=True, name=name or "runner")
        self.make = make
        self.topics = topics
        self.records: list[tuple[float, str, int, int]] = []
        self.assignments: list[tuple[float, frozenset[TP]]] = [(time.monotonic(), frozenset())]
        self.error: BaseException | None = None
        self.stop_flag = threading.Event()
        self.close_flag = threading.Event()
        self.closed = threading.Event()
        self.pending_commit = False
        self.commit_retries = 0
        self._lock = threading.Lock()

    def run(self) -> None:
        c = None
        try:
            c = self.make()
            c.subscribe(self.topics)
            while not self.stop_flag.is_set():
                got = c.consume(num_messages=500, timeout=0.05)
                now = time.monotonic()
                batch = []
                for m in got:
                    if m.error() is not None:
                        continue
                    batch.append((now, m.topic(), m.partition(), m.offset()))
                if batch:
                    with self._lock:
                        self.records += batch
                    self.pending_commit = True
                if self.pending_commit:
                    self.pending_commit = not self._commit(c)
                current = frozenset((tp.topic, tp.partition) for tp in c.assignment())
                if current != self.assignments[-1][1]:
                    with self._lock:
                        self.assignments.append((time.monotonic(), current))
        except BaseException as e:  # reported by the test
            self.error = e
        finally:
            if c is not None and not self.close_flag.is_set():
                c.close()
            self.closed.set()

    def _commit(self, c: Any) -> bool:
        """Commit what was consumed; False to try again after the next poll.

        A commit racing an epoch bump is refused with STALE_MEMBER_EPOCH (Kafka 4.2 checks the epoch
        exactly): the application commits again once its next heartbeat brought the new epoch, as Kafka's
        own consumer does."""
        try:
            c.commit(asynchronous=False)
        except confluent_kafka.KafkaException as e:
            code = e.args[0].code()
            if code in (
                confluent_kafka.KafkaError.STALE_MEMBER_EPOCH,
                confluent_kafka.KafkaError.REBALANCE_IN_PROGRESS,
                confluent_kafka.KafkaError.ILLEGAL_GENERATION,
                confluent_kafka.KafkaError.UNKNOWN_MEMBER_ID,
                confluent_kafka.KafkaError._TRANSPORT,
                confluent_kafka.KafkaError.COORDINATOR_NOT_AVAILABLE,
                confluent_kafka.KafkaError.NOT_COORDINATOR,
            ):
                self.commit_retries += 1
                return False
            if code == confluent_kafka.KafkaError._NO_OFFSET:
                return True
            raise
        return True

    def finish(self, close: bool = True) -> None:
        if not close:
            self.close_flag.set()
        self.stop_flag.set()
        self.join(30)

    @property
    def assigned(self) -> frozenset[TP]:
        return self.assignments[-1][1]

    def seen(self) -> list[tuple[float, str, int, int]]:
        assert self.error is None, self.error
        with self._lock:
            return list(self.records)


class Feeder(threading.Thread):
    """Produces one message to every partition of a topic every ``interval`` seconds until stopped."""

    def __init__(self, bs: str, topic: str, partitions: int = PARTITIONS, interval: float = 0.02) -> None:
        super().__init__(daemon=True, name="feeder")
        self.producer = Producer({"bootstrap.servers": bs, "acks": "all", "linger.ms": 0})
        self.topic, self.partitions, self.interval = topic, partitions, interval
        self.stop_flag = threading.Event()
        self.sent: collections.Counter[int] = collections.Counter()
        self.errors: list[Any] = []

    def run(self) -> None:
        while not self.stop_flag.is_set():
            for p in range(self.partitions):
                self.producer.produce(self.topic, b"x", partition=p, on_delivery=self._delivered)
            self.producer.poll(0)
            time.sleep(self.interval)
        assert self.producer.flush(30) == 0

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(err)
        else:
            self.sent[msg.partition()] += 1

    def finish(self) -> dict[int, int]:
        self.stop_flag.set()
        self.join(60)
        assert not self.errors, self.errors[:3]
        return dict(self.sent)


def wait(cond: Callable[[], bool], timeout: float, what: Callable[[], object]) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what()
        time.sleep(0.05)


def split(runners: Iterable[Runner], topic: str, partitions: int = PARTITIONS) -> bool:
    parts = [{p for t, p in r.assigned if t == topic} for r in runners]
    return (
        all(parts)
        and set().union(*parts) == set(range(partitions))
        and sum(len(p) for p in parts) == partitions
    )


def settle(
    runners: list[Runner], topic: str, timeout: float = 30.0, hold: float = 1.0, partitions: int = PARTITIONS
) -> float:
    """Wait until the runners own every partition exactly once, for ``hold`` seconds; when that began."""
    deadline = time.monotonic() + timeout
    since: float | None = None
    while since is None or time.monotonic() - since < hold:
        assert time.monotonic() < deadline, [sorted(r.assigned) for r in runners]
        for r in runners:
            assert r.error is None, r.error
        since = (since or time.monotonic()) if split(runners, topic, partitions) else None
        time.sleep(0.02)
    return since


def consumed(runners: Iterable[Runner], topic: str) -> collections.Counter[TP]:
    seen: collections.Counter[TP] = collections.Counter()
    for r in runners:
        for _, t, p, o in r.seen():
            if t == topic:
                seen[(p, o)] += 1
    return seen


def drained(runners: list[Runner], topic: str, sent: dict[int, int], timeout: float = 30.0) -> None:
    """Wait until every message sent has been consumed (at least once)."""
    wanted = {(p, o) for p, n in sent.items() for o in range(n)}
    wait(
        lambda: wanted <= set(consumed(runners, topic)),
        timeout,
        lambda: sorted(wanted - set(consumed(runners, topic)))[:10],
    )


def consumer_group(bs: str, group: str) -> dict[str, Any] | None:
    async def run() -> dict[str, Any] | None:
        async with KafkaClient(bs) as c:
            return await c.describe_consumer_group(group)

    return asyncio.run(run())


def committed(bs: str, group: str) -> dict[TP, int]:
    async def run() -> dict[tuple[str, int], tuple[int, str | None]]:
        async with KafkaClient(bs) as c:
            return await c.committed_offsets(group)

    return {k: v[0] for k, v in asyncio.run(run()).items()}


def listed_groups(bs: str) -> dict[str, tuple[str, str]]:
    async def run() -> list[dict[str, Any]]:
        async with KafkaClient(bs) as c:
            return await c.list_groups()

    return {g["group_id"]: (g["group_type"], g["group_state"]) for g in asyncio.run(run())}


def longest_pause(
    records: list[tuple[float, str, int, int]], partitions: set[TP], start: float, end: float
) -> float:
    """The longest time between two messages of ``partitions`` consumed within [start, end]."""
    times = sorted(t for t, topic, p, _ in records if (topic, p) in partitions and start <= t <= end)
    points = [start, *times, end]
    return max(b - a for a, b in itertools.pairwise(points))


# ------------------------------------------------------------------------------------------ three, then four


def test_three_members_share_six_partitions_and_a_fourth_joins_without_stopping_them(
    broker_factory: BrokerFactory,
) -> None:
    b = broker_factory(*BROKER)
    bs = b.bootstrap
    topic, group = "kip848-four", "g-kip848-four"
    create_topic(bs, topic, PARTITIONS)
    runners = [Runner(lambda: consumer(bs, group), [topic], f"m{i}") for i in range(3)]
    feeder = Feeder(bs, topic)
    fourth: Runner | None = None
    try:
        for r in runners:
            r.start()
        settle(runners, topic)
        before = [r.assigned for r in runners]
        assert sorted(len(a) for a in before) == [2, 2, 2]
        feeder.start()
        time.sleep(2.0)
        # A fourth member: the three keep consuming what they keep while one partition moves to it.
        joined = time.monotonic()
        fourth = Runner(lambda: consumer(bs, group), [topic], "m3")
        fourth.start()
        everyone = [*runners, fourth]
        settled_at = settle(everyone, topic)
        time.sleep(1.5)
        sent = feeder.finish()
        drained(everyone, topic, sent)
        time.sleep(0.5)
        seen = consumed(everyone, topic)
        assert max(seen.values()) == 1, [k for k, v in seen.items() if v > 1][:10]
        after = [r.assigned for r in runners]
        pauses = []
        for r, was, now in zip(runners, before, after, strict=True):
            kept = was & now
            assert kept, f"a member lost all its partitions: {sorted(was)} -> {sorted(now)}"
            # Incremental: what a member keeps is never taken away, not even for a moment.
            for t, assignment in r.assignments:
                if t >= joined:
                    assert kept <= assignment, (sorted(kept), sorted(assignment))
            pauses.append(longest_pause(r.seen(), set(kept), joined, settled_at + 1.0))
        moved = sum(len(w - n) for w, n in zip(before, after, strict=True))
        assert moved == 1 and len(fourth.assigned) == 1
        print(
            f"fourth member owned its partition {settled_at - joined:.3f}s after starting; longest pause of"
            f" a kept partition: {max(pauses) * 1000:.0f} ms (feeder every 20 ms)"
        )
        described = consumer_group(bs, group)
        assert (
            described is not None and described["group_state"] == "Stable" and len(described["members"]) == 4
        )
        assert listed_groups(bs)[group] == ("consumer", "Stable")
    finally:
        if feeder.is_alive():
            feeder.finish()
        for r in [*runners, *([fourth] if fourth else [])]:
            r.finish()


# ------------------------------------------------------------------------------------------ a member killed

CHILD = r"""
import sys, time
from confluent_kafka import Consumer
bs, group, topic = sys.argv[1:4]
c = Consumer({"bootstrap.servers": bs, "group.id": group, "group.protocol": "consumer",
              "auto.offset.reset": "earliest", "enable.auto.commit": False, "client.id": "doomed"})
c.subscribe([topic])
owned = None
while True:
    m = c.poll(0.1)
    now = sorted(p.partition for p in c.assignment())
    if now != owned:
        owned = now
        print("ASSIGN", *now, flush=True)
    if m is None or m.error():
        continue
    print("CONSUMED", m.partition(), m.offset(), flush=True)
    c.commit(message=m, asynchronous=False)
    print("COMMITTED", m.partition(), m.offset(), flush=True)
    time.sleep(0.2)
"""


def test_killed_member_partitions_move_after_the_session_timeout_and_resume_at_its_commit(
    broker_factory: BrokerFactory,
) -> None:
    b = broker_factory(*BROKER)
    bs = b.bootstrap
    topic, group = "kip848-killed", "g-kip848-killed"
    per = 30
    create_topic(bs, topic, PARTITIONS)
    for p in range(PARTITIONS):
        produce(bs, topic, [(b"k", f"{p}-{i}".encode()) for i in range(per)], partition=p)
    lines: list[str] = []
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, bs, group, topic],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    reader = threading.Thread(target=lambda: lines.extend(iter(child.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    runners: list[Runner] = []
    try:
        wait(lambda: any(line.startswith("COMMITTED") for line in lines), 20, lambda: lines)
        # Two more members, slow to start: the child keeps consuming its share meanwhile.
        runners = [Runner(lambda: consumer(bs, group), [topic], f"m{i}") for i in range(2)]
        for r in runners:
            r.start()

        def child_parts() -> set[int]:
            last = [line for line in lines if line.startswith("ASSIGN")]
            return {int(x) for x in last[-1].split()[1:]} if last else set()

        def three_way() -> bool:
            parts = [{p for _, p in r.assigned} for r in runners] + [child_parts()]
            return all(parts) and sum(len(x) for x in parts) == PARTITIONS

        wait(three_way, 30, lambda: ([sorted(r.assigned) for r in runners], lines[-5:]))
        time.sleep(1.0)
        doomed = child_parts()
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        killed_at = time.monotonic()
        reader.join(5)
        at_kill = committed(bs, group)
        # The dead member keeps its partitions until its session times out, then they move.
        wait(lambda: split(runners, topic), 30, lambda: [sorted(r.assigned) for r in runners])
        moved_after = time.monotonic() - killed_at
        assert moved_after > (SESSION_MS / 1000) * 0.7, f"moved {moved_after:.1f}s after the kill"
        child_seen = {(int(x.split()[1]), int(x.split()[2])) for x in lines if x.startswith("CONSUMED")}
        everything = {(p, o) for p in range(PARTITIONS) for o in range(per)}
        wait(
            lambda: everything <= set(consumed(runners, topic)) | child_seen,
            30,
            lambda: sorted(everything - set(consumed(runners, topic)) - child_seen)[:10],
        )
        for p in doomed:
            taken = sorted(o for r in runners for _, _, q, o in r.seen() if q == p)
            start = at_kill.get((topic, p), 0)
            # Resumed exactly at the last commit: nothing skipped, nothing consumed twice by the survivors.
            assert taken == list(range(start, per)), (p, start, taken[:5])
        print(f"partitions {sorted(doomed)} of the killed member moved {moved_after:.1f}s after SIGKILL")
    finally:
        if child.poll() is None:
            child.kill()
        for r in runners:
            r.finish()


# ------------------------------------------------------------------------------------------ regex


def test_regex_subscription_gets_a_topic_created_later(broker_factory: BrokerFactory) -> None:
    b = broker_factory(*BROKER)
    bs = b.bootstrap
    group = "g-kip848-regex"
    create_topic(bs, "prefix-a", 2)
    create_topic(bs, "other", 2)
    runners = [Runner(lambda: consumer(bs, group), ["^prefix.*"], f"m{i}") for i in range(2)]
    try:
        for r in runners:
            r.start()
        wait(lambda: split(runners, "prefix-a", 2), 30, lambda: [sorted(r.assigned) for r in runners])
        assert all(t.startswith("prefix") for r in runners for t, _ in r.assigned)
        create_topic(bs, "prefix-b", 2)
        for p in range(2):
            produce(bs, "prefix-b", [(b"k", b"late")] * 5, partition=p)
        wait(
            lambda: split(runners, "prefix-b", 2) and split(runners, "prefix-a", 2),
            30,
            lambda: [sorted(r.assigned) for r in runners],
        )
        drained(runners, "prefix-b", {0: 5, 1: 5})
        assert not any(t == "other" for r in runners for t, _ in r.assigned)
        described = consumer_group(bs, group)
        assert described is not None
        assert {m["subscribed_topic_regex"] for m in described["members"]} == {"(^prefix.*)"}
    finally:
        for r in runners:
            r.finish()


def test_partitions_added_to_a_subscribed_topic_are_assigned(broker_factory: BrokerFactory) -> None:
    from confluent_kafka.admin import AdminClient, NewPartitions

    b = broker_factory(*BROKER)
    bs = b.bootstrap
    topic = "growing"
    create_topic(bs, topic, 2)
    runners = [Runner(lambda: consumer(bs, "g-kip848-grow"), [topic], f"m{i}") for i in range(2)]
    try:
        for r in runners:
            r.start()
        settle(runners, topic, partitions=2)
        admin = AdminClient({"bootstrap.servers": bs})
        admin.create_partitions([NewPartitions(topic, 4)])[topic].result(30)
        for p in range(4):
            produce(bs, topic, [(b"k", b"v")] * 3, partition=p)
        settle(runners, topic, partitions=4)
        drained(runners, topic, dict.fromkeys(range(4), 3))
    finally:
        for r in runners:
            r.finish()


# ------------------------------------------------------------------------------------------ static member


def test_static_member_restarted_within_the_session_timeout_gets_its_partitions_back(
    broker_factory: BrokerFactory,
) -> None:
    b = broker_factory(*BROKER)
    bs = b.bootstrap
    topic, group = "kip848-static", "g-kip848-static"
    create_topic(bs, topic, PARTITIONS)

    def static(i: int) -> Callable[[], Any]:
        return lambda: consumer(bs, group, **{"group.instance.id": f"instance-{i}"})

    runners = [Runner(static(i), [topic], f"m{i}") for i in range(3)]
    restarted: Runner | None = None
    try:
        for r in runners:
            r.start()
        settle(runners, topic)
        before = [r.assigned for r in runners]
        epoch = consumer_group(bs, group)["group_epoch"]  # type: ignore[index]
        # Member 1 stops (a static member leaves with epoch -2) and comes back as a new process would.
        stopped = time.monotonic()
        runners[1].finish()
        restarted = Runner(static(1), [topic], "m1-again")
        restarted.start()
        wait(lambda: restarted.assigned == before[1], SESSION_MS / 1000, lambda: sorted(restarted.assigned))
        time.sleep(1.0)
        # No reassignment: the others never changed, the group epoch did not move.
        for r, was in ((runners[0], before[0]), (runners[2], before[2])):
            assert r.assigned == was and all(t < stopped for t, _ in r.assignments), r.assignments
        described = consumer_group(bs, group)
        assert described is not None and described["group_epoch"] == epoch
        assert sorted(m["instance_id"] for m in described["members"]) == [
            "instance-0",
            "instance-1",
            "instance-2",
        ]
    finally:
        for r in [*runners, *([restarted] if restarted else [])]:
            if r.is_alive():
                r.finish()


# ------------------------------------------------------------------------------------------ rolling upgrade


def test_rolling_upgrade_of_a_classic_group_keeps_consuming_and_ends_as_a_consumer_group(
    broker_factory: BrokerFactory,
) -> None:
    b = broker_factory(*BROKER)
    bs = b.bootstrap
    topic, group = "kip848-upgrade", "g-kip848-upgrade"
    create_topic(bs, topic, PARTITIONS)
    feeder = Feeder(bs, topic, interval=0.05)
    runners = [Runner(lambda: consumer(bs, group, "classic"), [topic], f"classic-{i}") for i in range(3)]
    old: list[Runner] = []
    try:
        for r in runners:
            r.start()
        settle(runners, topic)
        assert listed_groups(bs)[group][0] == "classic"
        feeder.start()
        time.sleep(1.0)
        for i in range(3):
            # Restart member i with the consumer protocol, one at a time.
            runners[i].finish()
            old.append(runners[i])
            runners[i] = Runner(lambda: consumer(bs, group), [topic], f"consumer-{i}")
            runners[i].start()
            settle(runners, topic, timeout=45)
            time.sleep(1.0)
            assert listed_groups(bs)[group][0] == "consumer"
        sent = feeder.finish()
        drained([*old, *runners], topic, sent, timeout=45)
        described = consumer_group(bs, group)
        assert described is not None and len(described["members"]) == 3
        assert all(m["member_type"] == 1 for m in described["members"]), described["members"]
        assert listed_groups(bs)[group] == ("consumer", "Stable")
        # What the group committed is what it consumed: the end of every partition.
        ends = committed(bs, group)
        assert {p: ends.get((topic, p)) for p in range(PARTITIONS)} == {p: n for p, n in sent.items()}
    finally:
        if feeder.is_alive():
            feeder.finish()
        for r in [*runners, *old]:
            if r.is_alive():
                r.finish()


# ------------------------------------------------------------------------------------------ broker restarts


def test_group_resumes_at_its_committed_offsets_after_restart_and_kill_9(
    broker_factory: BrokerFactory,
) -> None:
    b: BrokerProcess = broker_factory(*BROKER)
    bs = b.bootstrap
    topic, group = "kip848-restart", "g-kip848-restart"
    create_topic(bs, topic, PARTITIONS)
    sent: collections.Counter[int] = collections.Counter()

    def more(n: int) -> None:
        for p in range(PARTITIONS):
            produce(bs, topic, [(b"k", b"v")] * n, partition=p)
            sent[p] += n

    runners = [
        Runner(lambda: consumer(bs, group, **{"reconnect.backoff.max.ms": 500}), [topic], f"m{i}")
        for i in range(3)
    ]
    try:
        for r in runners:
            r.start()
        settle(runners, topic)
        more(20)
        drained(runners, topic, dict(sent))
        epochs = {m["member_id"]: m["member_epoch"] for m in consumer_group(bs, group)["members"]}  # type: ignore[index]
        b.restart()
        described = consumer_group(bs, group)
        assert described is not None
        assert {m["member_id"]: m["member_epoch"] for m in described["members"]} == epochs
        more(20)
        drained(runners, topic, dict(sent), timeout=60)
        b.kill9()
        b.start()
        more(20)
        drained(runners, topic, dict(sent), timeout=60)
        seen = consumed(runners, topic)
        assert set(seen) == {(p, o) for p, n in sent.items() for o in range(n)}
        # Resuming at the committed offsets: a message is read again only if its commit was lost with the
        # broker (kill -9 before the batch was on disk), never skipped.
        twice = [k for k, v in seen.items() if v > 1]
        assert len(twice) <= PARTITIONS * 20, twice[:10]
        wait(
            lambda: committed(bs, group) == {(topic, p): n for p, n in sent.items()},
            30,
            lambda: committed(bs, group),
        )
    finally:
        for r in runners:
            r.finish()


# ------------------------------------------------------------------------------------------ beside classic


def test_kafka_python_and_aiokafka_classic_groups_beside_a_consumer_group(
    broker_factory: BrokerFactory,
) -> None:
    from kafka import KafkaConsumer

    b = broker_factory(*BROKER)
    bs = b.bootstrap
    per = 20
    for t in ("beside-consumer", "beside-kafka-python", "beside-aiokafka"):
        create_topic(bs, t, PARTITIONS)
        for p in range(PARTITIONS):
            produce(bs, t, [(b"k", f"{p}-{i}".encode()) for i in range(per)], partition=p)
    runners = [
        Runner(lambda: consumer(bs, "g-beside-consumer"), ["beside-consumer"], f"m{i}") for i in range(2)
    ]
    python_seen: collections.Counter[TP] = collections.Counter()
    aio_seen: collections.Counter[TP] = collections.Counter()

    def kafka_python() -> None:
        consumers = [
            KafkaConsumer(
                "beside-kafka-python",
                bootstrap_servers=bs,
                group_id="g-beside-kafka-python",
                auto_offset_reset="earliest",
                enable_auto_commit=False,
                session_timeout_ms=6000,
                heartbeat_interval_ms=300,
            )
            for _ in range(2)
        ]
        try:
            deadline = time.monotonic() + 45
            while sum(python_seen.values()) < PARTITIONS * per and time.monotonic() < deadline:
                for c in consumers:
                    batch = c.poll(timeout_ms=100)
                    for tp, rs in batch.items():
                        for r in rs:
                            python_seen[(tp.partition, r.offset)] += 1
                    if batch:
                        c.commit()
        finally:
            for c in consumers:
                c.close()

    async def aiokafka() -> None:
        from aiokafka import AIOKafkaConsumer

        consumers = [
            AIOKafkaConsumer(
                "beside-aiokafka",
                bootstrap_servers=bs,
                group_id="g-beside-aiokafka",
                auto_offset_reset="earliest",
                enable_auto_commit=False,
                session_timeout_ms=6000,
                heartbeat_interval_ms=300,
            )
            for _ in range(2)
        ]
        await asyncio.gather(*(c.start() for c in consumers))
        try:

            async def drain(c: Any) -> None:
                deadline = time.monotonic() + 45
                while sum(aio_seen.values()) < PARTITIONS * per and time.monotonic() < deadline:
                    batch = await c.getmany(timeout_ms=100)
                    for tp, rs in batch.items():
                        for r in rs:
                            aio_seen[(tp.partition, r.offset)] += 1
                    if batch:
                        await c.commit()

            await asyncio.gather(*(drain(c) for c in consumers))
        finally:
            await asyncio.gather(*(c.stop() for c in consumers))

    python_thread = threading.Thread(target=kafka_python, daemon=True)
    aio_thread = threading.Thread(target=lambda: asyncio.run(aiokafka()), daemon=True)
    try:
        for r in runners:
            r.start()
        python_thread.start()
        aio_thread.start()
        drained(runners, "beside-consumer", {p: per for p in range(PARTITIONS)}, timeout=45)
        python_thread.join(60)
        aio_thread.join(60)
        everything = {(p, o) for p in range(PARTITIONS) for o in range(per)}
        assert set(python_seen) == everything and set(aio_seen) == everything
        assert max(consumed(runners, "beside-consumer").values()) == 1
        types = listed_groups(bs)
        assert types["g-beside-consumer"][0] == "consumer"
        assert types["g-beside-kafka-python"][0] == types["g-beside-aiokafka"][0] == "classic"
    finally:
        for r in runners:
            r.finish()


def test_without_the_consumer_protocol_its_apis_are_not_offered(broker_factory: BrokerFactory) -> None:
    from helpers import RawClient

    b = broker_factory("group.coordinator.rebalance.protocols=classic")
    with RawClient.to(b.bootstrap) as c:
        resp = c.api_versions(version=3)
    assert not {68, 69} & {a["api_key"] for a in resp["api_keys"]}
    # group.version is not offered; share groups follow share.version alone (Kafka 4.2).
    assert [f["name"] for f in resp["finalized_features"]] == ["share.version"]
    # A consumer configured for the consumer protocol is told so (and a classic one works as ever).
    create_topic(b.bootstrap, "only-classic", 1)
    produce(b.bootstrap, "only-classic", [(b"k", b"v")])
    classic = consumer(b.bootstrap, "g-only-classic", "classic")
    try:
        classic.subscribe(["only-classic"])
        deadline = time.monotonic() + 30
        got = None
        while got is None or got.error() is not None:
            assert time.monotonic() < deadline
            got = classic.poll(0.5)
        assert got.value() == b"v"
    finally:
        classic.close()


def test_group_version_finalized_at_0_turns_the_consumer_protocol_off(broker_factory: BrokerFactory) -> None:
    from helpers import RawClient

    b = broker_factory(*BROKER)
    create_topic(b.bootstrap, "gv", 1)
    heartbeat = {
        "group_id": "g-gv",
        "member_id": "m-gv",
        "member_epoch": 0,
        "rebalance_timeout_ms": 30000,
        "subscribed_topic_names": ["gv"],
        "topic_partitions": [],
    }

    def set_level(c: RawClient, level: int, upgrade_type: int) -> None:
        update = {"feature": "group.version", "max_version_level": level, "upgrade_type": upgrade_type}
        resp = c.request(57, 1, {"feature_updates": [update], "validate_only": False})
        assert resp["error_code"] == 0, resp

    with RawClient.to(b.bootstrap) as c:
        set_level(c, 0, 2)  # a safe downgrade
        refused = c.request(68, 1, heartbeat)
        assert (refused["error_code"], refused["error_message"]) == (
            35,
            None,
        )  # UNSUPPORTED_VERSION, as Kafka
        described = c.request(69, 1, {"group_ids": ["g-gv"], "include_authorized_operations": False})
        assert [g["error_code"] for g in described["groups"]] == [35]
        assert "group.version" not in {f["name"] for f in c.api_versions(version=4)["finalized_features"]}
        set_level(c, 1, 1)
        joined = c.request(68, 1, heartbeat)
    assert joined["error_code"] == 0 and joined["member_epoch"] == 1
