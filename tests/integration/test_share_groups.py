"""Share groups (KIP-932) with real clients: confluent-kafka's ShareConsumer against ``kafkite serve``.

Three share consumers on a one-partition topic all receive records and every record is accepted once across
them (implicit and explicit acknowledgement); a consumer killed while it holds records loses them to another
member at once (its connection ends its share session), one stopped (its connection open) only once their
locks lapse, with delivery count 2 either way; RELEASE redelivers at once, REJECT archives (onto the group's
dead-letter topic with the source headers, KIP-1191), and a record that keeps failing stops at the delivery
count limit; a broker killed with ``kill -9`` mid-stream delivers no accepted record again, loses none, and
continues the delivery counts; classic, consumer-protocol and share groups read one topic side by side;
AlterShareGroupOffsets and DeleteShareGroupOffsets through kafkite's client (confluent-kafka's AdminClient
has no share group calls).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO, BrokerFactory, BrokerProcess, create_topic

from kafkite.client import KafkaClient, KafkaClientError
from kafkite.protocol.errors import ErrorCode

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import Consumer, Producer, ShareConsumer, TopicPartition  # noqa: E402
from confluent_kafka.admin import (  # noqa: E402
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

LOCK_MS = 3000
BROKER = (
    "group.share.min.record.lock.duration.ms=1000",
    f"group.share.record.lock.duration.ms={LOCK_MS}",
    "group.share.session.timeout.ms=6000",
    "group.share.min.session.timeout.ms=1000",
    "group.share.heartbeat.interval.ms=300",
    "group.share.min.heartbeat.interval.ms=100",
    "errors.deadletterqueue.topic.name.prefix=dlq.",
)
ACCEPT, RELEASE, REJECT = 1, 2, 3


def group_configs(bs: str, group: str, **configs: str) -> None:
    """IncrementalAlterConfigs on the group (what kafka-configs --entity-type groups does)."""
    admin = AdminClient({"bootstrap.servers": bs})
    entries = [
        ConfigEntry(k.replace("_", "."), v, incremental_operation=AlterConfigOpType.SET)
        for k, v in configs.items()
    ]
    res = ConfigResource(ResourceType.GROUP, group, incremental_configs=entries)
    admin.incremental_alter_configs([res])[res].result(timeout=20)


def produce_values(bs: str, topic: str, values: list[bytes], **conf: Any) -> None:
    p = Producer(
        {"bootstrap.servers": bs, "linger.ms": 5, **{k.replace("_", "."): v for k, v in conf.items()}}
    )
    for v in values:
        p.produce(topic, v)
    assert p.flush(30) == 0


def share_consumer(bs: str, group: str, mode: str = "implicit", **extra: Any) -> Any:
    conf: dict[str, Any] = {
        "bootstrap.servers": bs,
        "group.id": group,
        "share.acknowledgement.mode": mode,
        **{k.replace("_", "."): v for k, v in extra.items()},
    }
    return ShareConsumer(conf)


class ShareRunner(threading.Thread):
    """A share consumer's poll loop in its own thread: records what it receives, acknowledges it (explicit
    mode: ACCEPT, then commit_sync, counting as accepted what the broker confirmed)."""

    def __init__(
        self, bs: str, group: str, topic: str, mode: str, *, max_poll: int = 10, pause: float = 0.02
    ):
        super().__init__(daemon=True)
        self.bs, self.group, self.topic, self.mode = bs, group, topic, mode
        self.max_poll, self.pause = max_poll, pause
        self.received: list[tuple[int, bytes, int]] = []  # offset, value, delivery count
        self.accepted: list[int] = []
        self.errors: list[str] = []
        self.stop_flag = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            c = share_consumer(self.bs, self.group, self.mode, max_poll_records=self.max_poll)
            c.subscribe([self.topic])
            try:
                while not self.stop_flag.is_set():
                    msgs = c.poll(0.3)
                    got = [m for m in msgs if m.error() is None]
                    self.errors += [str(m.error()) for m in msgs if m.error() is not None]
                    for m in got:
                        self.received.append((m.offset(), m.value(), m.delivery_count()))
                        if self.mode == "explicit":
                            c.acknowledge(m)
                    if got and self.mode == "explicit":
                        result = c.commit_sync(20)
                        failed = [str(e) for e in result.values() if e is not None]
                        self.errors += failed
                        if not failed:
                            self.accepted += [m.offset() for m in got]
                    elif self.mode == "implicit":
                        self.accepted += [m.offset() for m in got]
                    if got:
                        time.sleep(self.pause)
            finally:
                c.close()
        except BaseException as e:  # reported by the test
            self.error = e


def start_offset(bs: str, group: str, topic: str) -> int:
    """The share-partition start offset of ``topic``-0 in ``group`` (DescribeShareGroupOffsets)."""

    async def ask() -> int:
        async with KafkaClient(bs) as client:
            offsets = await client.share_group_offsets(group, {topic: [0]})
            return int(offsets.get((topic, 0), (-1, -1))[0])

    return asyncio.run(ask())


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def poll_until(c: Any, count: int, timeout: float = 20) -> list[Any]:
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        out += [m for m in c.poll(0.5) if m.error() is None]
    return out


@pytest.fixture
def share_broker(broker_factory: BrokerFactory) -> BrokerProcess:
    return broker_factory(*BROKER)


@pytest.mark.parametrize("mode", ["implicit", "explicit"])
def test_three_share_consumers_on_one_partition_accept_every_record_once(
    share_broker: BrokerProcess, topic_name: str, mode: str
) -> None:
    bs = share_broker.bootstrap
    create_topic(bs, topic_name, 1)
    group = f"share-{mode}"
    # Locks long enough for a consumer to work through what it acquired: none lapses here.
    group_configs(bs, group, share_auto_offset_reset="earliest", share_record_lock_duration_ms="30000")
    total = 900
    # Batches of ten records: a fetch acquires whole batches (batch-optimized), so each takes a few.
    produce_values(bs, topic_name, [f"r{i}".encode() for i in range(total)], batch_num_messages=10)
    runners = [ShareRunner(bs, group, topic_name, mode) for _ in range(3)]
    for r in runners:
        r.start()
    wait_for(lambda: sum(len(r.accepted) for r in runners) >= total, 90, "every record received")
    # Implicit acknowledgements travel with the next poll (librdkafka's close does not send those of the
    # last poll: the broker would release them to another member): the consumers keep polling until the
    # broker has every record accepted.
    wait_for(lambda: start_offset(bs, group, topic_name) == total, 30, "the start offset at the end")
    for r in runners:
        r.stop_flag.set()
    for r in runners:
        r.join(60)
        assert r.error is None, r.error
        assert not r.errors, r.errors
    assert all(r.received for r in runners), [len(r.received) for r in runners]
    accepted = [o for r in runners for o in r.accepted]
    assert sorted(accepted) == list(range(total))  # each record exactly once across the three
    received = [(o, v, n) for r in runners for o, v, n in r.received]
    assert len(received) == total and all(n == 1 for _, _, n in received)
    assert {v for _, v, _ in received} == {f"r{i}".encode() for i in range(total)}


CHILD = textwrap.dedent(
    """
    import json, sys, time
    from confluent_kafka import ShareConsumer
    bs, group, topic, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    c = ShareConsumer({"bootstrap.servers": bs, "group.id": group, "share.acknowledgement.mode": "explicit",
                       "max.poll.records": count})
    c.subscribe([topic])
    held = []
    deadline = time.monotonic() + 30
    while len(held) < count and time.monotonic() < deadline:
        for m in c.poll(0.5):
            if m.error() is None:
                held.append([m.offset(), m.delivery_count()])
    print(json.dumps(held), flush=True)
    time.sleep(3600)
    """
)


def holding_child(
    tmp_path: Path, bs: str, group: str, topic: str, count: int
) -> tuple[subprocess.Popen[str], list[list[int]]]:
    """A share consumer in its own process that acquires ``count`` records and holds them."""
    script = tmp_path / "holder.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(script), bs, group, topic, str(count)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    held = json.loads(line) if line else []
    return proc, held


@pytest.mark.parametrize("how", ["killed", "stopped"])
def test_records_of_a_lost_consumer_go_to_another_member_with_delivery_count_2(
    share_broker: BrokerProcess, topic_name: str, tmp_path: Path, how: str
) -> None:
    bs = share_broker.bootstrap
    create_topic(bs, topic_name, 1)
    group = f"share-lost-{how}"
    group_configs(bs, group, share_auto_offset_reset="earliest")
    produce_values(bs, topic_name, [f"m{i}".encode() for i in range(5)])
    proc, held = holding_child(tmp_path, bs, group, topic_name, 5)
    acquired_at = time.monotonic()  # the child printed them: its locks started before this
    try:
        assert [o for o, _ in held] == [0, 1, 2, 3, 4] and all(n == 1 for _, n in held), held
        other = share_consumer(bs, group, "explicit")
        other.subscribe([topic_name])
        # While the first member holds them, the records are nobody else's.
        assert poll_until(other, 1, timeout=1.0) == []
        if how == "killed":
            proc.send_signal(signal.SIGKILL)  # its connection ends its share session: released at once
        else:
            proc.send_signal(signal.SIGSTOP)  # the connection stays open: the locks must lapse
        got = poll_until(other, 5, timeout=LOCK_MS / 1000 + 15)
        waited = time.monotonic() - acquired_at
        assert sorted(m.offset() for m in got) == [0, 1, 2, 3, 4]
        assert all(m.delivery_count() == 2 for m in got), [m.delivery_count() for m in got]
        if how == "stopped":
            assert waited >= LOCK_MS / 1000 - 0.2, waited
        else:
            assert waited < LOCK_MS / 1000, waited
        for m in got:
            other.acknowledge(m)
        assert all(e is None for e in other.commit_sync(20).values())
        other.close()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)


def test_release_reject_dead_letters_and_the_delivery_count_limit(
    share_broker: BrokerProcess, topic_name: str
) -> None:
    bs = share_broker.bootstrap
    create_topic(bs, topic_name, 1)
    dlq = f"dlq.{topic_name}"
    create_topic(bs, dlq, 1, config={"errors.deadletterqueue.group.enable": "true"})
    group = "share-failures"
    group_configs(
        bs,
        group,
        share_auto_offset_reset="earliest",
        share_delivery_count_limit="3",
        errors_deadletterqueue_topic_name=dlq,
        errors_deadletterqueue_copy_record_enable="true",
    )
    produce_values(bs, topic_name, [b"ok", b"retry", b"poison", b"keeps-failing"])
    c = share_consumer(bs, group, "explicit", max_poll_records=10)
    c.subscribe([topic_name])
    first = poll_until(c, 4)
    assert [m.value() for m in first] == [b"ok", b"retry", b"poison", b"keeps-failing"]
    kinds = {b"ok": ACCEPT, b"retry": RELEASE, b"poison": REJECT, b"keeps-failing": RELEASE}
    for m in first:
        c.acknowledge(m, kinds[m.value()])
    assert all(e is None for e in c.commit_sync(20).values())
    # RELEASE: both released records come back at once, delivered a second time.
    started = time.monotonic()
    again = poll_until(c, 2, timeout=10)
    assert time.monotonic() - started < LOCK_MS / 1000
    assert sorted((m.value(), m.delivery_count()) for m in again) == [(b"keeps-failing", 2), (b"retry", 2)]
    for m in again:
        c.acknowledge(m, ACCEPT if m.value() == b"retry" else RELEASE)
    assert all(e is None for e in c.commit_sync(20).values())
    third = poll_until(c, 1, timeout=10)
    assert [(m.value(), m.delivery_count()) for m in third] == [(b"keeps-failing", 3)]
    c.acknowledge(third[0], RELEASE)  # the third failure: the limit
    assert all(e is None for e in c.commit_sync(20).values())
    assert poll_until(c, 1, timeout=LOCK_MS / 1000 + 1) == []  # nothing left to deliver
    c.close()
    # The rejected record and the one that reached the limit are on the dead-letter topic.
    reader = Consumer({"bootstrap.servers": bs, "group.id": "dlq-reader", "auto.offset.reset": "earliest"})
    reader.subscribe([dlq])
    letters: list[Any] = []
    deadline = time.monotonic() + 20
    while len(letters) < 2 and time.monotonic() < deadline:
        m = reader.poll(0.5)
        if m is not None and m.error() is None:
            letters.append(m)
    reader.close()
    assert len(letters) == 2
    by_value = {m.value(): dict(m.headers() or []) for m in letters}
    assert set(by_value) == {b"poison", b"keeps-failing"}
    poison, failing = by_value[b"poison"], by_value[b"keeps-failing"]
    for headers, offset, count in ((poison, 2, 1), (failing, 3, 3)):
        assert headers["__dlq.errors.topic"] == topic_name.encode()
        assert headers["__dlq.errors.partition"] == b"0"
        assert headers["__dlq.errors.offset"] == str(offset).encode()
        assert headers["__dlq.errors.group"] == group.encode()
        assert headers["__dlq.errors.delivery.count"] == str(count).encode()
    assert poison["__dlq.errors.message"] == b"Offset rejected by client."
    assert failing["__dlq.errors.message"] == b"Offset delivery count exceeded the threshold."


def test_classic_consumer_and_share_groups_read_one_topic_side_by_side(
    share_broker: BrokerProcess, topic_name: str
) -> None:
    bs = share_broker.bootstrap
    create_topic(bs, topic_name, 2)
    total = 400
    produce_values(bs, topic_name, [f"s{i}".encode() for i in range(total)])
    group_configs(bs, "side-share", share_auto_offset_reset="earliest")
    share = ShareRunner(bs, "side-share", topic_name, "explicit", max_poll=50, pause=0)
    share.start()

    def read_all(protocol: str, out: dict[str, Any]) -> None:
        c = Consumer(
            {
                "bootstrap.servers": bs,
                "group.id": f"side-{protocol}",
                "group.protocol": protocol,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        c.subscribe([topic_name])
        seen: collections.Counter[bytes] = collections.Counter()
        deadline = time.monotonic() + 60
        while sum(seen.values()) < total and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                seen[m.value()] += 1
        c.commit(asynchronous=False)
        parts = [TopicPartition(topic_name, p) for p in range(2)]
        out[protocol] = (seen, sorted(tp.offset for tp in c.committed(parts, timeout=20)))
        c.close()

    # The classic group, the consumer-protocol group and the share group all read at once.
    results: dict[str, Any] = {}
    readers = [threading.Thread(target=read_all, args=(p, results)) for p in ("classic", "consumer")]
    for t in readers:
        t.start()
    for t in readers:
        t.join(90)
    wait_for(lambda: len(share.accepted) >= total, 60, "the share group to accept every record")
    share.stop_flag.set()
    share.join(60)
    assert share.error is None and not share.errors, (share.error, share.errors)
    expected = collections.Counter(f"s{i}".encode() for i in range(total))
    for protocol in ("classic", "consumer"):
        seen, committed = results[protocol]
        assert seen == expected, protocol
        assert sum(committed) == total, (protocol, committed)  # each group's own offsets, at the end
    assert collections.Counter(v for _, v, _ in share.received) == expected
    assert all(n == 1 for _, _, n in share.received)


WORKER = textwrap.dedent(
    """
    import json, sys, time
    from confluent_kafka import ShareConsumer
    bs, group, topic, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    c = ShareConsumer({"bootstrap.servers": bs, "group.id": group, "share.acknowledgement.mode": "explicit",
                       "max.poll.records": 20})
    c.subscribe([topic])
    done = 0
    while True:
        msgs = [m for m in c.poll(0.5) if m.error() is None]
        if not msgs:
            continue
        got = [[m.offset(), m.delivery_count()] for m in msgs]
        if done == rounds:
            print(json.dumps({"held": got}), flush=True)  # acquired, never acknowledged
            time.sleep(3600)
        for m in msgs:
            c.acknowledge(m)
        result = c.commit_sync(20)
        if all(e is None for e in result.values()):
            print(json.dumps({"accepted": got}), flush=True)
        done += 1
    """
)


def test_broker_kill9_mid_stream_loses_no_record_and_redelivers_no_accepted_one(
    broker_factory: BrokerFactory, topic_name: str, tmp_path: Path
) -> None:
    broker = broker_factory(*BROKER)
    bs = broker.bootstrap
    create_topic(bs, topic_name, 1)
    group = "share-crash"
    group_configs(bs, group, share_auto_offset_reset="earliest", share_record_lock_duration_ms="30000")
    total = 400
    produce_values(bs, topic_name, [f"c{i}".encode() for i in range(total)], batch_num_messages=20)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    proc = subprocess.Popen(
        [sys.executable, str(script), bs, group, topic_name, "6"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    accepted: list[int] = []
    held: list[list[int]] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line)
            if "accepted" in event:
                accepted += [o for o, _ in event["accepted"]]
            else:
                held = event["held"]
                break
        assert accepted and held, (accepted, held)
        broker.kill9()  # the consumer holds records it has not acknowledged yet
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    broker.start()
    c = share_consumer(bs, group, "explicit", max_poll_records=50)
    c.subscribe([topic_name])
    again: dict[int, int] = {}
    deadline = time.monotonic() + 60
    while len(again) < total - len(accepted) and time.monotonic() < deadline:
        msgs = [m for m in c.poll(0.5) if m.error() is None]
        for m in msgs:
            assert m.offset() not in again, f"offset {m.offset()} delivered twice after the restart"
            again[m.offset()] = m.delivery_count()
            c.acknowledge(m)
        if msgs:
            assert all(e is None for e in c.commit_sync(20).values())
    c.close()
    assert not set(again) & set(accepted), "an accepted record was delivered again"
    assert sorted([*again, *accepted]) == list(range(total)), "a record was lost"
    for offset, count in held:
        assert count == 1 and again[offset] == 2, (offset, count, again.get(offset))
    fresh = set(range(total)) - set(accepted) - {o for o, _ in held}
    # Records acquired but still in the client's buffer at the crash come back a second time too.
    assert all(again[o] in (1, 2) for o in fresh)
    assert sum(1 for o in fresh if again[o] == 1) > len(fresh) // 2


def test_alter_and_delete_share_group_offsets_through_kafkites_client(
    share_broker: BrokerProcess, topic_name: str
) -> None:
    """confluent-kafka's AdminClient has no share group calls (2.16): kafkite's own client makes them."""
    assert not [n for n in dir(AdminClient) if "share" in n.lower()]
    bs = share_broker.bootstrap
    create_topic(bs, topic_name, 1)
    group = "share-offsets"
    group_configs(bs, group, share_auto_offset_reset="earliest")
    produce_values(bs, topic_name, [f"o{i}".encode() for i in range(20)])

    async def admin(call: str, *args: Any) -> Any:
        async with KafkaClient(bs) as client:
            return await getattr(client, call)(*args)

    def consume_all(expected: int) -> list[int]:
        c = share_consumer(bs, group, "explicit", max_poll_records=50)
        c.subscribe([topic_name])
        got: list[int] = []
        deadline = time.monotonic() + 20
        while len(got) < expected and time.monotonic() < deadline:
            msgs = [m for m in c.poll(0.5) if m.error() is None]
            for m in msgs:
                c.acknowledge(m)
                got.append(m.offset())
            if msgs:
                assert all(e is None for e in c.commit_sync(20).values())
        c.close()
        return sorted(got)

    assert consume_all(20) == list(range(20))
    assert asyncio.run(admin("share_group_offsets", group)) == {(topic_name, 0): (20, 0)}
    # While a member is in the group, its offsets are not for changing.
    busy = share_consumer(bs, group, "explicit")
    busy.subscribe([topic_name])
    wait_for(
        lambda: bool(
            busy.poll(0.2) is not None and asyncio.run(admin("describe_share_group", group))["members"]
        ),
        20,
        "a member",
    )
    with pytest.raises(KafkaClientError) as refused:
        asyncio.run(admin("alter_share_group_offsets", group, {(topic_name, 0): 5}))
    assert refused.value.code == ErrorCode.NON_EMPTY_GROUP
    busy.close()
    wait_for(lambda: not asyncio.run(admin("describe_share_group", group))["members"], 20, "an empty group")
    # Back to offset 12: records from there are delivered again.
    assert asyncio.run(
        admin("alter_share_group_offsets", group, {(topic_name, 0): 12, (topic_name, 7): 0})
    ) == {
        (topic_name, 0): 0,
        (topic_name, 7): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    }
    assert asyncio.run(admin("share_group_offsets", group)) == {(topic_name, 0): (12, 8)}
    assert consume_all(8) == list(range(12, 20))
    # Deleting the offsets forgets the share-partition: it starts again from share.auto.offset.reset.
    assert asyncio.run(admin("delete_share_group_offsets", group, [topic_name, "no-such-topic"])) == {
        topic_name: 0,
        "no-such-topic": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    }
    assert asyncio.run(admin("share_group_offsets", group)) == {}
    assert asyncio.run(admin("share_group_offsets", group, {topic_name: [0]})) == {(topic_name, 0): (-1, -1)}
    assert consume_all(20) == list(range(20))
