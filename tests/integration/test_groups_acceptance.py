"""Consumer-group acceptance with real clients against a ``kafkite serve`` subprocess.

Three consumers of each client share a 6-partition topic; a killed member's partitions move after the
session timeout while a closed one's move at once; commits (with metadata) outlive a broker restart; a
static member comes back without a rebalance; cooperative-sticky rebalances incrementally.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Protocol

import pytest
from helpers import REPO, BrokerFactory, create_topic, produce

from kafkite.client import KafkaClient

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import Consumer, TopicPartition  # noqa: E402

GROUP_BROKER = "group.min.session.timeout.ms=1000"
PARTITIONS = 6


def fill(bs: str, topic: str, per_partition: int, partitions: int = PARTITIONS, tag: str = "") -> None:
    for p in range(partitions):
        produce(bs, topic, [(b"k", f"{tag}{p}-{i}".encode()) for i in range(per_partition)], partition=p)


def confluent(bs: str, group: str, **extra: Any) -> Any:
    conf: dict[str, Any] = {
        "bootstrap.servers": bs,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 300,
        "topic.metadata.refresh.interval.ms": 1000,
    }
    conf.update(extra)
    return Consumer(conf)


def describe(bs: str, group: str) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async with KafkaClient(bs) as c:
            return await c.describe_group(group)

    return asyncio.run(run())


def check_split(assignments: list[set[int]]) -> None:
    union: set[int] = set().union(*assignments)
    assert union == set(range(PARTITIONS)), assignments
    assert sum(len(a) for a in assignments) == PARTITIONS, f"overlapping assignments {assignments}"


def settled(assignments: list[set[int]]) -> bool:
    return (
        all(assignments)
        and set().union(*assignments) == set(range(PARTITIONS))
        and (sum(len(a) for a in assignments) == PARTITIONS)
    )


# ------------------------------------------------------------------------------------------ 1: three of each


class Member(Protocol):
    """One consumer of a client, driven by the test's loop."""

    def assignment(self) -> set[int]: ...

    def poll(self) -> list[tuple[int, int]]: ...

    def commit(self) -> None: ...

    def close(self) -> None: ...


class ConfluentMember:
    def __init__(self, bs: str, group: str, topic: str) -> None:
        self.c = confluent(bs, group)
        self.c.subscribe([topic])

    def assignment(self) -> set[int]:
        return {tp.partition for tp in self.c.assignment()}

    def poll(self) -> list[tuple[int, int]]:
        out = []
        for m in self.c.consume(num_messages=500, timeout=0.1):
            assert m.error() is None, m.error()
            out.append((m.partition(), m.offset()))
        return out

    def commit(self) -> None:
        self.c.commit(asynchronous=False)

    def close(self) -> None:
        self.c.close()


class KafkaPythonMember:
    def __init__(self, bs: str, group: str, topic: str) -> None:
        from kafka import KafkaConsumer

        self.c = KafkaConsumer(
            topic,
            bootstrap_servers=bs,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=300,
            max_poll_interval_ms=10000,
            metadata_max_age_ms=1000,
        )

    def assignment(self) -> set[int]:
        return {tp.partition for tp in self.c.assignment()}

    def poll(self) -> list[tuple[int, int]]:
        # A long poll keeps a join that completes inside poll() (see Runner): kafka-python 3.0.x drops a
        # join that completes between two polls, and the shorter the poll, the likelier that gap.
        batch = self.c.poll(timeout_ms=1000)
        return [(tp.partition, r.offset) for tp, rs in batch.items() for r in rs]

    def commit(self) -> None:
        self.c.commit()

    def close(self) -> None:
        self.c.close()


class Runner(threading.Thread):
    """One member's own poll loop, as an application runs it: poll, and commit after each batch.

    Each member polls without pause in its own thread. A member that waits between polls can trip
    kafka-python 3.0.x: a JoinGroup/SyncGroup that completes while its consumer is outside poll() is
    dropped (the next poll starts a new join instead of taking the finished one), so a leader waiting on
    the others keeps rejoining. kafka-python 2.3 does not do this; the broker's answers are the same.
    """

    def __init__(self, member: Member) -> None:
        super().__init__(daemon=True)
        self.member = member
        self.assigned: set[int] = set()
        self.records: list[tuple[int, int]] = []
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        try:
            while not self.done.is_set():
                got = self.member.poll()
                self.assigned = self.member.assignment()
                if got:
                    with self._lock:
                        self.records += got
                    self.member.commit()
        except BaseException as e:  # reported by the test
            self.error = e

    def seen(self) -> list[tuple[int, int]]:
        assert self.error is None, self.error
        with self._lock:
            return list(self.records)


def run_three(members: list[Member], bs: str, topic: str, total: int) -> None:
    """Run every member's poll loop; check the split, then that each message is consumed once."""
    runners = [Runner(m) for m in members]
    for r in runners:
        r.start()
    try:
        _run_three(runners, bs, topic, total)
    finally:
        for r in runners:
            r.done.set()
        for r in runners:
            r.join(10)


def _run_three(runners: list[Runner], bs: str, topic: str, total: int) -> None:
    deadline = time.monotonic() + 20
    settled_since: float | None = None
    while settled_since is None or time.monotonic() - settled_since < 1.0:
        assert time.monotonic() < deadline, [r.assigned for r in runners]
        assert all(r.seen() == [] for r in runners)
        now = time.monotonic()
        settled_since = (settled_since or now) if settled([r.assigned for r in runners]) else None
        time.sleep(0.05)
    assignments = [set(r.assigned) for r in runners]
    check_split(assignments)
    assert all(len(a) == 2 for a in assignments), assignments

    fill(bs, topic, total // PARTITIONS)
    deadline = time.monotonic() + 15
    while sum(len(r.seen()) for r in runners) < total:
        assert time.monotonic() < deadline, f"consumed {sum(len(r.seen()) for r in runners)} of {total}"
        time.sleep(0.05)
    time.sleep(0.5)  # nothing more, nothing again
    seen: collections.Counter[tuple[int, int]] = collections.Counter()
    for i, r in enumerate(runners):
        for p, off in r.seen():
            seen[(p, off)] += 1
            assert p in assignments[i], f"partition {p} consumed by member {i}, which owns {assignments[i]}"
    assert set(seen) == {(p, o) for p in range(PARTITIONS) for o in range(total // PARTITIONS)}
    assert max(seen.values()) == 1, [k for k, v in seen.items() if v > 1]
    assert [r.assigned for r in runners] == assignments  # no rebalance along the way


@pytest.mark.parametrize("client", ["confluent-kafka", "kafka-python", "aiokafka"])
def test_three_consumers_split_six_partitions_and_consume_once(
    broker_factory: BrokerFactory, client: str
) -> None:
    b = broker_factory(GROUP_BROKER)
    bs = b.bootstrap
    topic, group = f"three-{client}", f"g-three-{client}"
    create_topic(bs, topic, PARTITIONS)
    total = 120
    if client == "aiokafka":
        asyncio.run(_three_aiokafka(bs, topic, group, total))
        return
    members: list[Member] = []
    try:
        for _ in range(3):
            members.append(
                ConfluentMember(bs, group, topic)
                if client == "confluent-kafka"
                else KafkaPythonMember(bs, group, topic)
            )
        run_three(members, bs, topic, total)
    finally:
        for m in members:
            m.close()


async def _three_aiokafka(bs: str, topic: str, group: str, total: int) -> None:
    from aiokafka import AIOKafkaConsumer

    consumers = [
        AIOKafkaConsumer(
            topic,
            bootstrap_servers=bs,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=300,
            metadata_max_age_ms=1000,
        )
        for _ in range(3)
    ]
    await asyncio.gather(*(c.start() for c in consumers))
    try:

        def parts() -> list[set[int]]:
            return [{tp.partition for tp in c.assignment()} for c in consumers]

        deadline = time.monotonic() + 15
        stable_rounds = 0
        while stable_rounds < 5:
            assert time.monotonic() < deadline, parts()
            got = await asyncio.gather(*(c.getmany(timeout_ms=100) for c in consumers))
            assert all(not g for g in got)
            stable_rounds = stable_rounds + 1 if settled(parts()) else 0
        assignments = parts()
        check_split(assignments)
        assert all(len(a) == 2 for a in assignments), assignments

        await asyncio.to_thread(fill, bs, topic, total // PARTITIONS)
        seen: collections.Counter[tuple[int, int]] = collections.Counter()

        async def drain(c: Any) -> None:
            deadline = time.monotonic() + 15
            while sum(seen.values()) < total and time.monotonic() < deadline:
                batch = await c.getmany(timeout_ms=100)
                for tp, rs in batch.items():
                    for r in rs:
                        seen[(tp.partition, r.offset)] += 1
                if batch:
                    await c.commit()

        await asyncio.gather(*(drain(c) for c in consumers))
        got = await asyncio.gather(*(c.getmany(timeout_ms=300) for c in consumers))
        assert all(not g for g in got)
        assert set(seen) == {(p, o) for p in range(PARTITIONS) for o in range(total // PARTITIONS)}
        assert max(seen.values()) == 1, [k for k, v in seen.items() if v > 1]
        assert parts() == assignments
    finally:
        await asyncio.gather(*(c.stop() for c in consumers))


# ------------------------------------------------------------------------------------------ 2: kill / close

CHILD = r"""
import sys, time
from confluent_kafka import Consumer
bs, group, topic = sys.argv[1:4]
c = Consumer({"bootstrap.servers": bs, "group.id": group, "auto.offset.reset": "earliest",
              "enable.auto.commit": False, "session.timeout.ms": 4000, "heartbeat.interval.ms": 300,
              "client.id": "doomed"})
c.subscribe([topic], on_assign=lambda c_, ps: print("ASSIGN", *sorted(p.partition for p in ps), flush=True))
while True:
    m = c.poll(0.1)
    if m is None or m.error():
        continue
    print("CONSUMED", m.partition(), m.offset(), flush=True)
    c.commit(message=m, asynchronous=False)
    print("COMMITTED", m.partition(), m.offset(), flush=True)
    time.sleep(0.2)
"""


def test_killed_member_partitions_move_after_session_timeout_and_close_moves_at_once(
    broker_factory: BrokerFactory,
) -> None:
    b = broker_factory(GROUP_BROKER)
    bs = b.bootstrap
    topic, group = "killed", "g-killed"
    per = 20
    create_topic(bs, topic, PARTITIONS)
    fill(bs, topic, per)

    lines: list[str] = []
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, bs, group, topic], stdout=subprocess.PIPE, text=True, env=env
    )
    reader = threading.Thread(target=lambda: lines.extend(iter(child.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    seen: collections.Counter[tuple[int, int]] = collections.Counter()
    members = [confluent(bs, group, **{"session.timeout.ms": 4000}) for _ in range(2)]
    try:
        # The child joins alone and starts on every partition; the others join and take their share.
        deadline = time.monotonic() + 15
        while not any(line.startswith("COMMITTED") for line in lines):
            assert time.monotonic() < deadline and child.poll() is None, lines
            time.sleep(0.05)
        for m in members:
            m.subscribe([topic])

        def poll_all() -> None:
            for m in members:
                got = m.consume(num_messages=500, timeout=0.1)
                for msg in got:
                    assert msg.error() is None, msg.error()
                    seen[(msg.partition(), msg.offset())] += 1
                if got:
                    m.commit(asynchronous=False)

        def child_parts() -> set[int]:
            last = [line for line in lines if line.startswith("ASSIGN")]
            return {int(x) for x in last[-1].split()[1:]} if last else set()

        def commits_since_assign() -> int:
            last = max(i for i, line in enumerate(lines) if line.startswith("ASSIGN"))
            return sum(1 for line in lines[last:] if line.startswith("COMMITTED"))

        deadline = time.monotonic() + 15
        while True:
            poll_all()
            own = [{tp.partition for tp in m.assignment()} for m in members]
            if settled([*own, child_parts()]) and child_parts() and commits_since_assign() >= 3:
                break
            assert time.monotonic() < deadline, (own, lines)
        doomed = child_parts()
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        killed_at = time.monotonic()
        reader.join(5)

        def child_lines(kind: str) -> set[tuple[int, int]]:
            return {(int(x.split()[1]), int(x.split()[2])) for x in lines if x.startswith(kind)}

        child_seen = child_lines("CONSUMED")
        child_committed = child_lines("COMMITTED")

        def last(offsets: set[tuple[int, int]], p: int) -> int:
            return max((o + 1 for q, o in offsets if q == p), default=0)

        # Until the session times out the dead member keeps its partitions.
        moved_at = None
        deadline = killed_at + 15
        while moved_at is None or len(set(seen) | child_seen) < PARTITIONS * per:
            poll_all()
            own = [{tp.partition for tp in m.assignment()} for m in members]
            if moved_at is None and settled(own):
                moved_at = time.monotonic()
            assert time.monotonic() < deadline, (own, sorted(seen))
        assert moved_at - killed_at > 2.5, f"moved {moved_at - killed_at:.1f}s after the kill"
        assert max(seen.values()) == 1, [k for k, v in seen.items() if v > 1]
        for p in range(PARTITIONS):  # each resumed at the child's last commit: nothing skipped
            taken = sorted(o for q, o in seen if q == p)
            lo, hi = last(child_committed, p), last(child_seen, p)
            assert taken and lo <= taken[0] <= hi and taken == list(range(taken[0], per)), (p, lo, hi, taken)
        assert any(p in doomed for p, _ in child_committed)
        covered = set(seen) | child_seen
        assert covered == {(p, o) for p in range(PARTITIONS) for o in range(per)}

        # A graceful close leaves the group: the survivor takes everything well before the session timeout.
        members[0].close()
        closed_at = time.monotonic()
        survivor = members[1]
        members = [survivor]
        while {tp.partition for tp in survivor.assignment()} != set(range(PARTITIONS)):
            survivor.poll(0.05)
            assert time.monotonic() - closed_at < 15
        assert time.monotonic() - closed_at < 2.0, (
            f"close rebalanced after {time.monotonic() - closed_at:.1f}s"
        )
        fill(bs, topic, 1, tag="after-close-")
        got: set[int] = set()
        deadline = time.monotonic() + 10
        while len(got) < PARTITIONS:
            assert time.monotonic() < deadline, got
            for msg in survivor.consume(num_messages=100, timeout=0.1):
                assert msg.error() is None
                assert msg.offset() == per, (msg.partition(), msg.offset())
                got.add(msg.partition())
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        for m in members:
            m.close()


# ------------------------------------------------------------------------------------------ 3: restart


def test_commits_with_metadata_survive_a_broker_restart(broker_factory: BrokerFactory) -> None:
    b = broker_factory(GROUP_BROKER)
    bs = b.bootstrap
    topic, group = "restart", "g-restart"
    create_topic(bs, topic, 2)
    fill(bs, topic, 10, partitions=2)
    c = confluent(bs, group)
    c.subscribe([topic])
    try:
        n = 0
        deadline = time.monotonic() + 15
        while n < 20:
            assert time.monotonic() < deadline, n
            n += len(c.consume(num_messages=100, timeout=0.2))
        c.commit(
            offsets=[
                TopicPartition(topic, 0, 4, metadata="zero: é ünïcode"),
                TopicPartition(topic, 1, 7, metadata='{"k": 1}'),
            ],
            asynchronous=False,
        )
    finally:
        c.close()

    b.restart()

    consumers = [confluent(bs, group) for _ in range(2)]
    try:
        for x in consumers:
            x.subscribe([topic])
        first: dict[int, int] = {}
        seen: list[tuple[int, int]] = []
        deadline = time.monotonic() + 15
        while len(set(seen)) < 6 + 3:
            assert time.monotonic() < deadline, seen
            for x in consumers:
                for m in x.consume(num_messages=100, timeout=0.1):
                    assert m.error() is None, m.error()
                    first[m.partition()] = min(m.offset(), first.get(m.partition(), m.offset()))
                    seen.append((m.partition(), m.offset()))
        assert first == {0: 4, 1: 7}
        reader = confluent(bs, group)  # the group's committed offsets, read by a client outside it
        try:
            got = reader.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)
        finally:
            reader.close()
        # (a rebalance while both join may hand a partition over before its commit: then it is read again)
        assert sorted(set(seen)) == [(0, o) for o in range(4, 10)] + [(1, o) for o in range(7, 10)]
        assert [(tp.partition, tp.offset, tp.metadata) for tp in got] == [
            (0, 4, "zero: é ünïcode"),
            (1, 7, '{"k": 1}'),
        ]
    finally:
        for x in consumers:
            x.close()


# ------------------------------------------------------------------------------------------ 4: static member


def test_static_member_restart_within_session_timeout_does_not_rebalance(
    broker_factory: BrokerFactory,
) -> None:
    b = broker_factory(GROUP_BROKER)
    bs = b.bootstrap
    topic, group = "static", "g-static"
    create_topic(bs, topic, PARTITIONS)
    events: list[tuple[str, str, list[int]]] = []

    def static(name: str) -> Any:
        c = confluent(bs, group, **{"group.instance.id": name, "session.timeout.ms": 8000})
        c.subscribe(
            [topic],
            on_assign=lambda _c, ps: events.append((name, "assign", sorted(p.partition for p in ps))),
            on_revoke=lambda _c, ps: events.append((name, "revoke", sorted(p.partition for p in ps))),
        )
        return c

    def wait_split(cs: list[Any]) -> list[set[int]]:
        deadline = time.monotonic() + 15
        while True:
            for c in cs:
                c.poll(0.05)
            parts = [{tp.partition for tp in c.assignment()} for c in cs]
            if settled(parts):
                return parts
            assert time.monotonic() < deadline, parts

    leader = static("s1")
    wait_split([leader])
    follower = static("s2")
    consumers = [leader, follower]
    try:
        before = wait_split(consumers)
        for _ in range(10):  # settled for a while
            for c in consumers:
                c.poll(0.05)
        desc = describe(bs, group)
        assert desc["group_state"] == "Stable"
        members = {m["group_instance_id"]: m["member_id"] for m in desc["members"]}
        assert set(members) == {"s1", "s2"}
        leader_id = leader.memberid()
        mark = len(events)

        follower.close()  # a static member leaves no LeaveGroup behind
        consumers = [leader]
        for _ in range(10):
            leader.poll(0.05)
        assert describe(bs, group)["group_state"] == "Stable"
        follower = static("s2")
        consumers = [leader, follower]
        restarted_at = time.monotonic()
        after = wait_split(consumers)
        for _ in range(10):
            for c in consumers:
                c.poll(0.05)
        assert time.monotonic() - restarted_at < 8
        assert after == before
        assert leader.memberid() == leader_id
        assert [e for e in events[mark:] if e[0] == "s1"] == [], events[mark:]
        desc = describe(bs, group)
        assert desc["group_state"] == "Stable"
        now = {m["group_instance_id"]: m["member_id"] for m in desc["members"]}
        assert now["s1"] == members["s1"]
        assert now["s2"] != members["s2"]  # a new member id took the static member's place
    finally:
        for c in consumers:
            c.close()


# ------------------------------------------------------------------------------------------ 5: cooperative


def test_cooperative_sticky_rebalance_is_incremental(broker_factory: BrokerFactory) -> None:
    b = broker_factory(GROUP_BROKER)
    bs = b.bootstrap
    topic, group = "coop", "g-coop"
    create_topic(bs, topic, PARTITIONS)
    events: list[tuple[float, str, str, list[int]]] = []

    def member(name: str) -> Any:
        c = confluent(bs, group, **{"partition.assignment.strategy": "cooperative-sticky"})
        c.subscribe(
            [topic],
            on_assign=lambda _c, ps: events.append(
                (time.monotonic(), name, "assign", sorted(p.partition for p in ps))
            ),
            on_revoke=lambda _c, ps: events.append(
                (time.monotonic(), name, "revoke", sorted(p.partition for p in ps))
            ),
        )
        return c

    stop = threading.Event()

    def keep_producing() -> None:
        from confluent_kafka import Producer

        p = Producer({"bootstrap.servers": bs, "linger.ms": 0})
        i = 0
        while not stop.is_set():
            for part in range(PARTITIONS):
                p.produce(topic, b"v%d" % i, partition=part)
            p.poll(0)
            i += 1
            time.sleep(0.02)
        p.flush(10)

    producer = threading.Thread(target=keep_producing, daemon=True)
    producer.start()
    first = member("a")
    consumers = [first]
    received: list[tuple[float, int]] = []

    def poll_first() -> None:
        for m in first.consume(num_messages=500, timeout=0.05):
            if m.error() is None:
                received.append((time.monotonic(), m.partition()))

    try:
        deadline = time.monotonic() + 15
        while len({tp.partition for tp in first.assignment()}) < PARTITIONS or not received:
            poll_first()
            assert time.monotonic() < deadline
        second = member("b")
        consumers.append(second)
        joined_at = time.monotonic()
        while True:
            poll_first()
            second.poll(0.05)
            parts = [{tp.partition for tp in c.assignment()} for c in consumers]
            if settled(parts) and all(parts):
                break
            assert time.monotonic() - joined_at < 15, parts
        for _ in range(10):
            poll_first()
            second.poll(0.05)
        kept, moved = ({tp.partition for tp in c.assignment()} for c in consumers)
        check_split([kept, moved])
        assert len(kept) == len(moved) == 3
        a_events = [(kind, ps) for _, who, kind, ps in events if who == "a"]
        assert a_events[0] == ("assign", list(range(PARTITIONS))), a_events
        revoked = [p for kind, ps in a_events[1:] if kind == "revoke" for p in ps]
        assert sorted(revoked) == sorted(moved), a_events  # only what moved was ever revoked
        assert not [ps for kind, ps in a_events[1:] if kind == "assign" and ps], a_events
        b_assigned_at = min(t for t, who, kind, ps in events if who == "b" and kind == "assign" and ps)
        during = {p for t, p in received if joined_at <= t <= b_assigned_at}
        assert during & kept, "the first consumer stopped consuming its kept partitions during the rebalance"
        deadline = time.monotonic() + 5
        while {p for t, p in received if t > b_assigned_at} != kept:
            assert time.monotonic() < deadline, {p for t, p in received if t > b_assigned_at}
            poll_first()
            second.poll(0.05)
    finally:
        stop.set()
        producer.join(15)
        for c in consumers:
            c.close()
