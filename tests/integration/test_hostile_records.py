"""Produce validation with real clients and raw frames: what a stock consumer could not read is never stored.

Every batch here has a valid CRC; what is wrong lies inside (record lengths, counts, compressed payloads,
decompression bombs). Each is refused with the error Kafka answers, nothing of it is stored, a second
connection keeps being served while it happens, and confluent-kafka and kafka-python consumers read the
topic afterwards. Well-formed batches from real producers, in every codec, are all accepted.
"""

from __future__ import annotations

import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import crc32c
import pytest
from helpers import BrokerProcess, RawClient, check_no_tracebacks, consume, create_topic, produce, watermarks

from kafkite.protocol import compression, records
from kafkite.protocol.errors import ErrorCode

PRODUCE, FETCH, LIST_OFFSETS = 0, 1, 2

TRUNCATED_LZ4 = bytes.fromhex(
    "00000000000000000000004e00000000024cef3735000300000002000001a23be757a9000001a23be757a9ffffffffffff"
    "ffffffffffffffff0000000304224d1868402700000000000000b324000000f30218000000026b0a76"
)
RECORD_LENGTH_MINUS_ONE = bytes.fromhex(
    "00000000000000000000003a000000000260a2d656000000000000000001a23bef655b000001a23bef655bffffffffffff"
    "ffffffffffffffff0000000101000000026b027600"
)


@pytest.fixture(scope="module")
def _broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    root = tmp_path_factory.mktemp("hostile-records")
    b = BrokerProcess(root / "data", root / "broker.log", ["message.max.bytes=4194304"])
    b.start()
    yield b
    b.stop()
    check_no_tracebacks(b)


@pytest.fixture
def kb(_broker: BrokerProcess, attach_broker: Callable[[BrokerProcess], BrokerProcess]) -> BrokerProcess:
    if not _broker.running:
        _broker.start()
    return attach_broker(_broker)


def produce_raw(c: RawClient, topic: str, batch: bytes, version: int = 9, acks: int = -1) -> dict[str, Any]:
    resp = c.request(
        PRODUCE,
        version,
        {
            "transactional_id": None,
            "acks": acks,
            "timeout_ms": 5000,
            "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": batch}]}],
        },
    )
    return dict(resp["responses"][0]["partition_responses"][0])


def reseal(b: bytearray) -> bytes:
    struct.pack_into(">i", b, 8, len(b) - 12)
    struct.pack_into(">I", b, 17, crc32c.crc32c(bytes(b[21:])))
    return bytes(b)


def with_payload(codec: int, count: int, payload: bytes) -> bytes:
    """A batch of ``count`` records whose records section is ``payload`` (already compressed), CRC valid."""
    ts = int(time.time() * 1000)
    tail = struct.pack(">hiqqqhii", codec, count - 1, ts, ts, -1, -1, -1, count) + payload
    head = struct.pack(">qiibI", 0, len(tail) + 9, -1, 2, crc32c.crc32c(tail))
    return head + tail


def record_section(n: int, value: bytes) -> bytes:
    return bytes(records.build_batch([(None, value, [], 0)] * n)[records.BATCH_HEADER_SIZE :])


class Witness:
    """A second client doing Metadata round trips on its own connection throughout: its worst round trip."""

    def __init__(self, bootstrap: str) -> None:
        self.client = RawClient.to(bootstrap, timeout=30)
        self.worst = 0.0
        self.count = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                assert self.client.request(3, 12, {"topics": None})["brokers"]
            except BaseException as e:  # reported when the witness stops
                self.errors.append(e)
                return
            self.worst = max(self.worst, time.monotonic() - t)
            self.count += 1
            time.sleep(0.01)

    def __enter__(self) -> Witness:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self.client.close()
        assert not self.errors, self.errors
        assert self.count > 0


def zeros_compressed(codec: str, size: int) -> bytes:
    """``size`` zero bytes compressed a MiB at a time (a decompression bomb, built without holding it)."""
    import zlib

    import zstandard

    chunk = b"\0" * (1 << 20)
    c: Any = (
        zstandard.ZstdCompressor(write_content_size=False).compressobj()
        if codec == "zstd"
        else zlib.compressobj(6, zlib.DEFLATED, 31)
    )
    out = [c.compress(chunk) for _ in range(size >> 20)]
    out.append(c.flush())
    return b"".join(out)


def hostile_batches() -> dict[str, tuple[bytes, ErrorCode]]:
    ten = record_section(10, b"v" * 100)
    bomb_zstd = zeros_compressed("zstd", 1 << 30)
    bomb_gzip = zeros_compressed("gzip", 200 << 20)
    lz4 = compression.compress(compression.CODEC_LZ4, ten)
    gz = compression.compress(compression.CODEC_GZIP, ten)
    zs = compression.compress(compression.CODEC_ZSTD, ten)
    sn = compression.compress(compression.CODEC_SNAPPY, ten)
    count_lies = bytearray(records.build_batch([(None, b"v", [], 0)] * 3))
    struct.pack_into(">i", count_lies, 57, 4)  # records_count 4 and last offset delta 3, for 3 records
    struct.pack_into(">i", count_lies, 23, 3)
    return {
        "reported truncated lz4": (TRUNCATED_LZ4, ErrorCode.CORRUPT_MESSAGE),
        "reported record length -1": (RECORD_LENGTH_MINUS_ONE, ErrorCode.INVALID_RECORD),
        "truncated gzip": (with_payload(1, 10, gz[:-9]), ErrorCode.CORRUPT_MESSAGE),
        "truncated zstd": (with_payload(4, 10, zs[:-3]), ErrorCode.CORRUPT_MESSAGE),
        "truncated lz4": (with_payload(3, 10, lz4[:-5]), ErrorCode.CORRUPT_MESSAGE),
        "garbage snappy": (with_payload(2, 10, sn[:20] + b"\xff" * 40), ErrorCode.CORRUPT_MESSAGE),
        "garbage in lz4": (
            with_payload(3, 10, lz4[:12] + b"\xfe" * 30 + lz4[42:]),
            ErrorCode.CORRUPT_MESSAGE,
        ),
        "count lies (compressed)": (with_payload(3, 11, lz4), ErrorCode.INVALID_RECORD),
        "count lies": (reseal(count_lies), ErrorCode.INVALID_RECORD),
        "1 GiB zstd bomb": (with_payload(4, 1, bomb_zstd), ErrorCode.CORRUPT_MESSAGE),
        "200 MiB gzip bomb": (with_payload(1, 1, bomb_gzip), ErrorCode.CORRUPT_MESSAGE),
        "varint overflow": (
            with_payload(0, 1, b"\xff\xff\xff\xff\x7f" + b"\x00" * 8),
            ErrorCode.INVALID_RECORD,
        ),
        "records past the batch": (with_payload(0, 2, ten[: len(ten) // 10]), ErrorCode.INVALID_RECORD),
    }


def test_crc_valid_corrupt_batches_are_refused_and_nothing_is_stored(kb: BrokerProcess) -> None:
    topic = f"hostile-{uuid.uuid4().hex[:8]}"
    create_topic(kb.bootstrap, topic)
    produce(kb.bootstrap, topic, [(b"k0", b"before")])
    with Witness(kb.bootstrap) as witness, RawClient.to(kb.bootstrap, timeout=30) as c:
        for name, (batch, code) in hostile_batches().items():
            h = records.read_header(batch)
            assert records.check_crc(batch, 0, h), name
            r = produce_raw(c, topic, batch)
            assert r["error_code"] == code, (name, r)
            assert r["error_message"], name
    assert witness.worst < 5.0, f"a second client waited {witness.worst:.1f} s"
    produce(kb.bootstrap, topic, [(b"k1", b"after")])
    assert watermarks(kb.bootstrap, topic) == (0, 2)
    assert [m.value() for m in consume(kb.bootstrap, topic)] == [b"before", b"after"]
    assert [r.value for r in kafka_python_read(kb.bootstrap, topic, 2)] == [b"before", b"after"]


def kafka_python_read(bootstrap: str, topic: str, n: int) -> list[Any]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=10000)
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        out: list[Any] = []
        for m in consumer:
            out.append(m)
            if len(out) >= n:
                break
        return out
    finally:
        consumer.close()


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_real_producers_in_every_codec_are_accepted(kb: BrokerProcess, codec: str) -> None:
    topic = f"codec-{codec}-{uuid.uuid4().hex[:8]}"
    create_topic(kb.bootstrap, topic)
    values = [(b"k%d" % i, (b"value %d " % i) * (i % 50 + 1)) for i in range(2000)]
    produce(kb.bootstrap, topic, values, compression_type=codec, linger_ms=50)
    got = consume(kb.bootstrap, topic)
    assert [(m.key(), m.value()) for m in got] == values
    assert [(r.key, r.value) for r in kafka_python_read(kb.bootstrap, topic, len(values))] == values


@pytest.mark.parametrize("codec", ["gzip", "lz4", "zstd"])
def test_kafka_python_producer_in_every_codec_is_accepted(kb: BrokerProcess, codec: str) -> None:
    from kafka import KafkaProducer

    topic = f"kp-{codec}-{uuid.uuid4().hex[:8]}"
    create_topic(kb.bootstrap, topic)
    p = KafkaProducer(bootstrap_servers=kb.bootstrap, compression_type=codec, linger_ms=20, acks="all")
    values = [(b"k%d" % i, b"x" * (i % 300)) for i in range(500)]
    futures = [p.send(topic, key=k, value=v, partition=0, headers=[("h", b"1")]) for k, v in values]
    p.flush(30)
    for f in futures:
        f.get(10)
    p.close()
    assert [(m.key(), m.value()) for m in consume(kb.bootstrap, topic)] == values


def test_highly_compressible_batches_within_the_limits_are_accepted(kb: BrokerProcess) -> None:
    """Zeros compress a thousandfold: a batch that inflates past max.message.bytes is refused only past
    message.max.compression.ratio (200) or message.max.decompressed.bytes (64 MiB)."""
    topic = f"zeros-{uuid.uuid4().hex[:8]}"
    create_topic(kb.bootstrap, topic)
    with RawClient.to(kb.bootstrap) as c:
        small = records.build_batch([(None, b"\0" * 1000, [], int(time.time() * 1000))] * 500, compression=4)
        assert produce_raw(c, topic, small)["error_code"] == 0  # 0.5 MB inflated: under max.message.bytes
        big = records.build_batch([(None, b"\0" * 10000, [], int(time.time() * 1000))] * 1000, compression=1)
        r = produce_raw(c, topic, big)  # 10 MB from ~10 KB: past the ratio
        assert r["error_code"] == ErrorCode.CORRUPT_MESSAGE, r
        assert "limit" in r["error_message"]


# -- per-record errors (KIP-467) -------------------------------------------------------------------------


def test_produce_response_names_the_records_without_a_key_on_a_compacted_topic(kb: BrokerProcess) -> None:
    topic = f"compact-raw-{uuid.uuid4().hex[:8]}"
    create_topic(kb.bootstrap, topic, config={"cleanup.policy": "compact"})
    ts = int(time.time() * 1000)
    batch = records.build_batch([(None if i % 3 == 1 else b"k", b"v", [], ts) for i in range(7)])
    with RawClient.to(kb.bootstrap) as c:
        r = produce_raw(c, topic, batch, version=8)
        assert r["error_code"] == ErrorCode.INVALID_RECORD
        assert [e["batch_index"] for e in r["record_errors"]] == [1, 4]
        assert r["record_errors"][0]["batch_index_error_message"] == (
            f"Compacted topic cannot accept message without key in topic partition {topic}-0."
        )
        assert r["error_message"].startswith("One or more records have been rejected due to 2 record errors")
        old = produce_raw(c, topic, batch, version=7)  # no record_errors before v8: the batch fails alike
        assert old["error_code"] == ErrorCode.INVALID_RECORD
    assert watermarks(kb.bootstrap, topic) == (0, 0)


def test_confluent_fails_exactly_the_records_without_a_key(kb: BrokerProcess) -> None:
    """librdkafka gives INVALID_RECORD to the records the response names and _INVALID_DIFFERENT_RECORD to
    the rest of the batch (rd_kafka_msgbatch_handle_Produce_result_record_errors); none is retried."""
    from confluent_kafka import KafkaError, Producer

    topic = f"compact-{uuid.uuid4().hex[:8]}"
    create_topic(kb.bootstrap, topic, config={"cleanup.policy": "compact"})
    reports: list[tuple[int, Any]] = []
    p = Producer(
        {
            "bootstrap.servers": kb.bootstrap,
            "acks": "all",
            "linger.ms": 2000,
            "batch.num.messages": 1000,
            "enable.idempotence": False,
        }
    )
    for i in range(100):
        p.produce(
            topic,
            b"value %d" % i,
            None if i % 10 == 0 else b"key %d" % i,
            partition=0,
            on_delivery=lambda err, msg, i=i: reports.append((i, err)),
        )
    assert p.flush(30) == 0
    assert len(reports) == 100
    invalid = sorted(i for i, err in reports if err is not None and err.code() == KafkaError.INVALID_RECORD)
    others = {err.code() if err else None for i, err in reports if i % 10}
    assert invalid == list(range(0, 100, 10))
    assert others == {KafkaError._INVALID_DIFFERENT_RECORD}
    assert watermarks(kb.bootstrap, topic) == (0, 0)
    # the records with keys go through on their own
    produce(kb.bootstrap, topic, [(b"key %d" % i, b"value %d" % i) for i in range(100) if i % 10])
    assert len(consume(kb.bootstrap, topic)) == 90


def test_timestamps_are_checked_record_by_record(kb: BrokerProcess) -> None:
    topic = f"ts-{uuid.uuid4().hex[:8]}"
    create_topic(
        kb.bootstrap,
        topic,
        config={"message.timestamp.before.max.ms": "60000", "message.timestamp.after.max.ms": "60000"},
    )
    now = int(time.time() * 1000)
    stamps = [now, now - 3_600_000, now + 1000, now + 3_600_000, -1]
    batch = records.build_batch([(b"k", b"v", [], t) for t in stamps])
    with RawClient.to(kb.bootstrap) as c:
        r = produce_raw(c, topic, batch)
        assert r["error_code"] == ErrorCode.INVALID_TIMESTAMP
        assert [e["batch_index"] for e in r["record_errors"]] == [1, 3]
        assert "is out of range" in r["record_errors"][0]["batch_index_error_message"]
    assert watermarks(kb.bootstrap, topic) == (0, 0)


def test_a_max_timestamp_that_lies_is_set_right(kb: BrokerProcess) -> None:
    """Kafka sets a batch's max timestamp to its records' largest (recomputing the CRC): a batch claiming the
    year 2099 must not keep its segment from retention nor answer time lookups wrongly."""
    topic = f"maxts-{uuid.uuid4().hex[:8]}"
    create_topic(kb.bootstrap, topic)
    now = int(time.time() * 1000)
    batch = bytearray(records.build_batch([(b"k", b"v", [], now), (b"k", b"w", [], now + 5)]))
    struct.pack_into(">q", batch, 35, 4_070_908_800_000)
    with RawClient.to(kb.bootstrap) as c:
        assert produce_raw(c, topic, reseal(batch))["error_code"] == 0
    from helpers import fetch_batches

    (h,) = fetch_batches(kb.bootstrap, topic)
    assert h.max_timestamp == now + 5
    assert [m.timestamp()[1] for m in consume(kb.bootstrap, topic)] == [now, now + 5]


def test_broker_restarts_and_serves_after_hostile_batches(kb: BrokerProcess) -> None:
    topic = f"restart-{uuid.uuid4().hex[:8]}"
    create_topic(kb.bootstrap, topic)
    produce(kb.bootstrap, topic, [(b"a", b"1")])
    with RawClient.to(kb.bootstrap, timeout=30) as c:
        for _, (batch, _) in hostile_batches().items():
            produce_raw(c, topic, batch)
    kb.restart()
    produce(kb.bootstrap, topic, [(b"b", b"2")])
    assert [m.value() for m in consume(kb.bootstrap, topic)] == [b"1", b"2"]
    assert [r.value for r in kafka_python_read(kb.bootstrap, topic, 2)] == [b"1", b"2"]
