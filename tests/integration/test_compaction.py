"""Log compaction with real clients: the log cleaner of a kafkite process, seen through consumers."""

from __future__ import annotations

import time
from typing import Any

from helpers import BrokerFactory, consume, create_topic, produce, segment_files

TOPIC = "compacted"
CONFIG = {
    "cleanup.policy": "compact",
    "segment.bytes": "4096",
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": "4000",
}


def _seen(bootstrap: str) -> list[tuple[int, bytes | None, bytes | None]]:
    return [(m.offset(), m.key(), m.value()) for m in consume(bootstrap, TOPIC)]


def _wait(cond: Any, what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _active_base(b: Any) -> int:
    return int(segment_files(b.data_dir, TOPIC)[-1].name.split(".")[0])


def _kafka_python_records(bootstrap: str) -> list[tuple[int, bytes | None, bytes | None]]:
    from kafka import KafkaConsumer, TopicPartition

    tp = TopicPartition(TOPIC, 0)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = consumer.end_offsets([tp])[tp]
        out: list[tuple[int, bytes | None, bytes | None]] = []
        deadline = time.monotonic() + 15
        while consumer.position(tp) < end:
            assert time.monotonic() < deadline, f"kafka-python stuck at {consumer.position(tp)} of {end}"
            for msgs in consumer.poll(timeout_ms=500).values():
                out += [(m.offset, m.key, m.value) for m in msgs]
        return out
    finally:
        consumer.close()


def test_compaction_end_to_end(broker_factory: BrokerFactory) -> None:
    from confluent_kafka import KafkaError, Producer

    b = broker_factory("log.cleaner.backoff.ms=200")
    create_topic(b.bootstrap, TOPIC, config=CONFIG)
    sent: dict[int, tuple[bytes | None, bytes | None]] = {}

    def send(msgs: list[tuple[bytes | None, bytes | None]], **kw: Any) -> None:
        for off, m in zip(produce(b.bootstrap, TOPIC, msgs, **kw), msgs, strict=True):
            sent[off] = m

    # an idempotent producer writes every key first: its last batch is later wholly superseded
    send([(b"k%d" % k, b"idem") for k in range(5)], enable_idempotence=True)
    for round_ in range(30):
        send([(b"k%d" % (i % 5), b"v%d-%d-" % (round_, i) + b"x" * 100) for i in range(20)])
    send([(b"k0", None)])  # tombstone: k0 is never written again
    for round_ in range(5):
        send([(b"k%d" % (1 + i % 4), b"w%d-%d-" % (round_, i) + b"y" * 100) for i in range(20)])
    send([(b"last", b"1")])
    total = len(sent)

    latest = {}
    for off in sorted(sent):
        latest[sent[off][0]] = off

    def compacted() -> list[tuple[int, bytes | None, bytes | None]] | None:
        """The log once every segment but the active one is compacted."""
        seen = _seen(b.bootstrap)
        active = _active_base(b)
        below = {off: k for off, k, _ in seen if off < active}
        latest_below = {}
        for off in sorted(o for o in sent if o < active):
            latest_below[sent[off][0]] = off
        return seen if below == {off: k for k, off in latest_below.items()} else None

    seen = _wait(compacted, "compaction")
    assert len(seen) < total / 4
    for off, k, v in seen:
        assert sent[off] == (k, v), "records keep their offsets"
    tomb = latest[b"k0"]
    assert (tomb, b"k0", None) in seen, "a young tombstone stays"
    # every key's latest value is there
    assert {k for _, k, _ in seen} == set(latest)

    # the tombstone goes once delete.retention.ms has passed (more updates keep the cleaner busy)
    def tombstone_gone() -> bool:
        send([(b"k%d" % (1 + i % 4), b"z" * 120) for i in range(40)])
        return all(k != b"k0" for _, k, _ in _seen(b.bootstrap))

    _wait(tombstone_gone, "the tombstone to expire", timeout=20)

    # null keys are refused on a compacted topic
    errors: list[Any] = []
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all"})
    p.produce(TOPIC, b"no key", partition=0, on_delivery=lambda err, msg: errors.append(err))
    p.flush(10)
    assert len(errors) == 1 and errors[0] is not None and errors[0].code() == KafkaError.INVALID_RECORD

    # kafka-python reads the compacted log (offset gaps, an empty batch) like confluent-kafka does
    before = _seen(b.bootstrap)
    assert _kafka_python_records(b.bootstrap) == before
    segs = segment_files(b.data_dir, TOPIC)
    empty_batches = 0
    from kafkite.protocol.records import iter_headers

    for seg in segs:
        empty_batches += sum(1 for _, h in iter_headers(seg.read_bytes()) if h.records_count == 0)
    assert empty_batches >= 1, "the idempotent producer's last batch stays, empty"

    b.restart()
    assert _seen(b.bootstrap) == before
