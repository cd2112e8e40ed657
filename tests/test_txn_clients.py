"""Transactions with real clients against a real kafkite process: confluent-kafka (commit, abort, fencing,
consume-transform-produce killed mid-transaction), aiokafka's transactional producer, introspection APIs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from helpers import BrokerProcess, RawClient, create_topic, produce

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

LIST_OFFSETS = 2
DESCRIBE_TRANSACTIONS = 65
LIST_TRANSACTIONS = 66


def read_all(
    bootstrap: str, topic: str, isolation: str, partitions: int = 1, idle: float = 3.0
) -> list[bytes]:
    """Every value a consumer with ``isolation`` sees, partition by partition, until ``idle`` s pass idle."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{time.monotonic_ns()}",
            "isolation.level": isolation,
            "enable.auto.commit": False,
        }
    )
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        out: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
        last = time.monotonic()
        while time.monotonic() - last < idle:
            for m in c.consume(num_messages=1000, timeout=0.3):
                assert m.error() is None, m.error()
                out[m.partition()].append(m.value())
                last = time.monotonic()
        return [v for p in range(partitions) for v in out[p]]
    finally:
        c.close()


def txn_producer(bootstrap: str, tid: str, **extra: Any) -> Any:
    from confluent_kafka import Producer

    conf = {"bootstrap.servers": bootstrap, "transactional.id": tid, "linger.ms": 5}
    conf.update(extra)
    p = Producer(conf)
    p.init_transactions(15)
    return p


def test_committed_visible_aborted_never(shared_broker: BrokerProcess, topic_name: str) -> None:
    bs = shared_broker.bootstrap
    create_topic(bs, topic_name, partitions=2)
    p = txn_producer(bs, f"tx-{topic_name}")
    expected_committed, all_values = [], []
    for n in range(6):
        commit = n % 2 == 0
        p.begin_transaction()
        for i in range(20):
            v = b"%s-%d-%d" % (b"c" if commit else b"a", n, i)
            p.produce(topic_name, v, partition=i % 2)
            all_values.append(v)
            if commit:
                expected_committed.append(v)
        if commit:
            p.commit_transaction(15)
        else:
            p.flush(15)  # the aborted records really are in the log
            p.abort_transaction(15)
    # a plain producer's records in between are visible to both
    produce(bs, topic_name, [(None, b"plain")], partition=0)
    committed = read_all(bs, topic_name, "read_committed", partitions=2)
    uncommitted = read_all(bs, topic_name, "read_uncommitted", partitions=2)
    assert Counter(committed) == Counter([*expected_committed, b"plain"])
    assert Counter(uncommitted) == Counter([*all_values, b"plain"])
    with RawClient.to(bs) as c:
        resp = c.request(
            LIST_OFFSETS,
            5,
            {
                "replica_id": -1,
                "isolation_level": 1,
                "topics": [{"name": topic_name, "partitions": [{"partition_index": 0, "timestamp": -1}]}],
            },
        )
        # no transaction open: the last stable offset is the end of the log
        assert resp["topics"][0]["partitions"][0]["offset"] > 0


def test_open_transaction_holds_back_read_committed(shared_broker: BrokerProcess, topic_name: str) -> None:
    bs = shared_broker.bootstrap
    create_topic(bs, topic_name)
    produce(bs, topic_name, [(None, b"before")])
    p = txn_producer(bs, f"tx-{topic_name}")
    p.begin_transaction()
    p.produce(topic_name, b"open")
    p.flush(10)
    produce(bs, topic_name, [(None, b"after")])  # behind the open transaction
    assert read_all(bs, topic_name, "read_uncommitted", idle=1.5) == [b"before", b"open", b"after"]
    assert read_all(bs, topic_name, "read_committed", idle=1.5) == [b"before"]
    with RawClient.to(bs) as c:
        body = {
            "replica_id": -1,
            "isolation_level": 1,
            "topics": [{"name": topic_name, "partitions": [{"partition_index": 0, "timestamp": -1}]}],
        }
        assert c.request(LIST_OFFSETS, 5, body)["topics"][0]["partitions"][0]["offset"] == 1
        body["isolation_level"] = 0
        assert c.request(LIST_OFFSETS, 5, body)["topics"][0]["partitions"][0]["offset"] == 3
        listed = c.request(LIST_TRANSACTIONS, 1, {"state_filters": ["Ongoing"], "producer_id_filters": []})
        assert f"tx-{topic_name}" in {t["transactional_id"] for t in listed["transaction_states"]}
        (desc,) = c.request(DESCRIBE_TRANSACTIONS, 0, {"transactional_ids": [f"tx-{topic_name}"]})[
            "transaction_states"
        ]
        assert desc["error_code"] == 0 and desc["transaction_state"] == "Ongoing"
        assert desc["topics"] == [{"topic": topic_name, "partitions": [0]}]
    p.commit_transaction(10)
    assert read_all(bs, topic_name, "read_committed", idle=1.5) == [b"before", b"open", b"after"]


def test_second_producer_fences_the_first(shared_broker: BrokerProcess, topic_name: str) -> None:
    from confluent_kafka import KafkaException

    bs = shared_broker.bootstrap
    create_topic(bs, topic_name)
    tid = f"tx-{topic_name}"
    first = txn_producer(bs, tid)
    first.begin_transaction()
    first.produce(topic_name, b"zombie")
    first.flush(10)
    second = txn_producer(bs, tid)  # aborts the first one's transaction
    second.begin_transaction()
    second.produce(topic_name, b"winner")
    second.commit_transaction(10)
    with pytest.raises(KafkaException) as info:
        first.produce(topic_name, b"zombie-2")
        first.commit_transaction(10)
    err = info.value.args[0]
    assert err.fatal() or "fenced" in str(err).lower(), err
    assert read_all(bs, topic_name, "read_committed", idle=1.5) == [b"winner"]
    assert b"zombie-2" not in read_all(bs, topic_name, "read_uncommitted", idle=1.5)


PROCESSOR = textwrap.dedent(
    """
    import os, signal, sys
    from confluent_kafka import Consumer, Producer

    bootstrap, src, dst, group, tid, total, die_after = sys.argv[1:8]
    total, die_after = int(total), int(die_after)
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "isolation.level": "read_committed",
        # the killed processor's member leaves the group at its session timeout: keep the restart short
        "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
    })
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": tid, "linger.ms": 5})
    producer.init_transactions(30)
    consumer.subscribe([src])
    done = int(sys.argv[8]) if len(sys.argv) > 8 else 0
    txns = 0
    while done < total:
        msgs = [m for m in consumer.consume(num_messages=37, timeout=1.0) if m.error() is None]
        if not msgs:
            continue
        producer.begin_transaction()
        for m in msgs:
            producer.produce(dst, b"out-" + m.value(), partition=m.partition())
        producer.send_offsets_to_transaction(
            consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30
        )
        txns += 1
        if txns == die_after:
            producer.flush(30)
            os.kill(os.getpid(), signal.SIGKILL)  # mid-transaction: records written, offsets pending
        producer.commit_transaction(30)
        done += len(msgs)
        print("committed", done, flush=True)
    consumer.close()
    """
)


def test_consume_transform_produce_killed_mid_transaction(
    shared_broker: BrokerProcess, topic_name: str, tmp_path: Path
) -> None:
    bs = shared_broker.bootstrap
    src, dst = f"{topic_name}-in", f"{topic_name}-out"
    create_topic(bs, src, partitions=2)
    create_topic(bs, dst, partitions=2)
    n = 600
    for part in (0, 1):
        produce(bs, src, [(None, b"%d-%d" % (part, i)) for i in range(n // 2)], partition=part)
    script = tmp_path / "processor.py"
    script.write_text(PROCESSOR)
    group, tid = f"g-{topic_name}", f"tx-{topic_name}"

    def run(die_after: int, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(script), bs, src, dst, group, tid, str(n), str(die_after)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    killed = run(die_after=4)
    assert killed.returncode == -9, killed.stderr[-2000:]
    # A restarted processor fences the dead one, aborts its transaction and resumes at the committed
    # offsets; the test stops it once the committed output covers the whole input.
    restarted = subprocess.Popen(
        [sys.executable, str(script), bs, src, dst, group, tid, str(n), "0", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        want = Counter(b"out-%d-%d" % (p, i) for p in (0, 1) for i in range(n // 2))
        while time.monotonic() < deadline:
            got = Counter(read_all(bs, dst, "read_committed", partitions=2, idle=1.0))
            if sum(got.values()) >= n:
                break
        assert got == want, (
            f"{sum(got.values())} outputs, duplicates: {[k for k, v in got.items() if v > 1][:5]}"
        )
    finally:
        restarted.kill()
        restarted.wait(10)
    uncommitted = Counter(read_all(bs, dst, "read_uncommitted", partitions=2, idle=1.0))
    assert sum(uncommitted.values()) > n  # the killed transaction's records are in the log, aborted


def test_aiokafka_transactional_producer(shared_broker: BrokerProcess, topic_name: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    bs = shared_broker.bootstrap
    create_topic(bs, topic_name)

    class Abort(Exception):
        pass

    async def main() -> tuple[list[bytes], list[bytes]]:
        producer = AIOKafkaProducer(bootstrap_servers=bs, transactional_id=f"aio-{topic_name}")
        await producer.start()
        try:
            async with producer.transaction():
                for i in range(10):
                    await producer.send(topic_name, b"commit-%d" % i, partition=0)
            with pytest.raises(Abort):
                async with producer.transaction():
                    for i in range(10):
                        await producer.send_and_wait(topic_name, b"abort-%d" % i, partition=0)
                    raise Abort()
            async with producer.transaction():
                await producer.send(topic_name, b"last", partition=0)
        finally:
            await producer.stop()
        seen = []
        for isolation in ("read_committed", "read_uncommitted"):
            consumer = AIOKafkaConsumer(
                bootstrap_servers=bs, isolation_level=isolation, enable_auto_commit=False
            )
            await consumer.start()
            try:
                tp = TopicPartition(topic_name, 0)
                consumer.assign([tp])
                consumer.seek(tp, 0)
                values: list[bytes] = []
                while True:
                    batch = await consumer.getmany(tp, timeout_ms=1500)
                    if not batch:
                        break
                    values += [m.value for m in batch[tp]]
                seen.append(values)
            finally:
                await consumer.stop()
        return seen[0], seen[1]

    committed, uncommitted = asyncio.run(main())
    assert committed == [*(b"commit-%d" % i for i in range(10)), b"last"]
    assert sorted(uncommitted) == sorted([*committed, *(b"abort-%d" % i for i in range(10))])


def test_open_transaction_survives_broker_kill9(broker: BrokerProcess, topic_name: str) -> None:
    bs = broker.bootstrap
    create_topic(bs, topic_name)
    p = txn_producer(bs, f"tx-{topic_name}", **{"reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 200})
    p.begin_transaction()
    for i in range(5):
        p.produce(topic_name, b"in-flight-%d" % i)
    p.flush(10)
    broker.kill9()
    broker.start()
    assert read_all(bs, topic_name, "read_committed", idle=1.0) == []
    p.produce(topic_name, b"after-restart")
    p.commit_transaction(30)
    want = [*(b"in-flight-%d" % i for i in range(5)), b"after-restart"]
    assert read_all(bs, topic_name, "read_committed", idle=1.0) == want
    broker.restart()  # and the committed state stays committed
    assert read_all(bs, topic_name, "read_committed", idle=1.0) == want


def test_timed_out_transaction_is_aborted(broker_factory: Any, topic_name: str) -> None:
    from confluent_kafka import KafkaException

    b = broker_factory("transaction.abort.timed.out.transaction.cleanup.interval.ms=100")
    bs = b.bootstrap
    create_topic(bs, topic_name)
    p = txn_producer(bs, f"tx-{topic_name}", **{"transaction.timeout.ms": 1000})
    p.begin_transaction()
    p.produce(topic_name, b"abandoned")
    p.flush(10)
    produce(bs, topic_name, [(None, b"behind")])
    time.sleep(2.0)  # the coordinator aborts it and bumps the epoch
    assert read_all(bs, topic_name, "read_committed", idle=1.0) == [b"behind"]
    with pytest.raises(KafkaException):
        p.commit_transaction(10)
