"""Real Kafka clients against a real kafkite process: topics, keyed messages with headers under every codec,
consumption in order, offsets by timestamp, topic configs through each client's admin API."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import BrokerProcess, advertised_api_keys, fetch_batches

from kafkite.protocol import records

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

N = int(os.environ.get("KAFKITE_ROUNDTRIP_MESSAGES", "10000"))
PARTITIONS = 3
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
CONSUME_TIMEOUT = 60.0
PAD = b"abcdefghij" * 8  # compressible payload

Expected = dict[int, list[tuple[bytes, bytes, list[tuple[str, bytes]], int]]]


def message(i: int, codec: str, base_ts: int) -> tuple[bytes, bytes, list[tuple[str, bytes]], int]:
    key = b"key-%d" % i
    value = b"value-%d-%s-" % (i, codec.encode()) + PAD
    headers = [("idx", b"%d" % i), ("codec", codec.encode()), ("dup", b"first"), ("dup", b"second")]
    return key, value, headers, base_ts + i


def expected(codec: str, base_ts: int) -> Expected:
    out: Expected = {p: [] for p in range(PARTITIONS)}
    for i in range(N):
        out[i % PARTITIONS].append(message(i, codec, base_ts))
    return out


def first_offset_at_or_after(exp: Expected, partition: int, ts: int) -> int:
    for off, m in enumerate(exp[partition]):
        if m[3] >= ts:
            return off
    return len(exp[partition])


def check_partition(
    got: list[tuple[int, bytes, bytes, list[tuple[str, bytes]], int]], want: list[Any]
) -> None:
    """got: (offset, key, value, headers, timestamp) in consumption order."""
    assert len(got) == len(want), f"consumed {len(got)} messages, produced {len(want)}"
    for n, ((off, k, v, h, ts), (wk, wv, wh, wts)) in enumerate(zip(got, want, strict=True)):
        assert off == n, f"message {n} has offset {off}"
        assert (k, v, h, ts) == (wk, wv, wh, wts), f"message at offset {off} differs"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def base_timestamp() -> int:
    # Distinct, increasing CreateTimes a little in the past (well inside any retention).
    return now_ms() - 10 * N - 60_000


CODEC_IDS = {
    "none": records.COMPRESSION_NONE,
    "gzip": records.COMPRESSION_GZIP,
    "snappy": records.COMPRESSION_SNAPPY,
    "lz4": records.COMPRESSION_LZ4,
    "zstd": records.COMPRESSION_ZSTD,
}
FIND_COORDINATOR = 10


def check_stored_codec(bootstrap: str, topic: str, codec: str, librdkafka: bool = False) -> None:
    """The batches on the broker really use the codec the client was asked for."""
    want = CODEC_IDS[codec]
    if librdkafka and codec == "lz4" and FIND_COORDINATOR not in advertised_api_keys(bootstrap):
        # librdkafka infers LZ4 support from FindCoordinator (Kafka 0.8.2+), else it sends batches plain.
        want = records.COMPRESSION_NONE
    for p in range(PARTITIONS):
        headers = fetch_batches(bootstrap, topic, partition=p)
        assert headers, f"no batch in partition {p}"
        assert {h.compression for h in headers} == {want}, f"partition {p} stored {headers[0].compression}"


@pytest.fixture(params=CODECS)
def codec(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# ------------------------------------------------------------------------------------------ confluent-kafka


def ck_create_topic(
    bootstrap: str, topic: str, partitions: int = PARTITIONS, config: dict[str, str] | None = None
):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(topic, partitions, 1, config=config or {})], operation_timeout=10)
    fs[topic].result(timeout=15)
    return admin


class TestConfluentKafka:
    def test_roundtrip(self, shared_broker: BrokerProcess, topic_name: str, codec: str) -> None:
        from confluent_kafka import Consumer, Producer, TopicPartition

        bootstrap = shared_broker.bootstrap
        ck_create_topic(bootstrap, topic_name)
        base_ts = base_timestamp()
        exp = expected(codec, base_ts)
        producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "compression.type": codec,
                "linger.ms": 20,
                "batch.num.messages": 2000,
                "acks": "all",
            }
        )
        errors: list[Any] = []
        delivered = [0]

        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(err)
            else:
                delivered[0] += 1

        for i in range(N):
            k, v, h, ts = message(i, codec, base_ts)
            while True:
                try:
                    producer.produce(
                        topic_name,
                        v,
                        k,
                        partition=i % PARTITIONS,
                        timestamp=ts,
                        headers=h,
                        on_delivery=on_delivery,
                    )
                    break
                except BufferError:
                    producer.poll(0.1)
        assert producer.flush(60) == 0
        assert not errors, errors[:5]
        assert delivered[0] == N
        check_stored_codec(bootstrap, topic_name, codec, librdkafka=True)

        consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": f"unused-{topic_name}", "enable.auto.commit": False}
        )
        try:
            consumer.assign([TopicPartition(topic_name, p, 0) for p in range(PARTITIONS)])
            got: dict[int, list[Any]] = {p: [] for p in range(PARTITIONS)}
            count = 0
            deadline = time.monotonic() + CONSUME_TIMEOUT
            while count < N and time.monotonic() < deadline:
                for m in consumer.consume(num_messages=5000, timeout=1.0):
                    assert m.error() is None, m.error()
                    ts_type, ts = m.timestamp()
                    assert ts_type == 1  # CreateTime
                    got[m.partition()].append((m.offset(), m.key(), m.value(), m.headers(), ts))
                    count += 1
            for p in range(PARTITIONS):
                check_partition(got[p], exp[p])

            # Offsets by timestamp: the first message at or after the target.
            for target in (base_ts - 1, base_ts + N // 2, base_ts + N - 1, base_ts + N + 1000):
                res = consumer.offsets_for_times(
                    [TopicPartition(topic_name, p, target) for p in range(PARTITIONS)], timeout=10
                )
                for tp in res:
                    assert tp.error is None
                    want = first_offset_at_or_after(exp, tp.partition, target)
                    if want == len(exp[tp.partition]):
                        assert tp.offset in (-1, want), (target, tp)  # none: -1 (end)
                    else:
                        assert tp.offset == want, (target, tp.partition, tp.offset, want)
        finally:
            consumer.close()

    def test_configs(self, shared_broker: BrokerProcess, topic_name: str) -> None:
        from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

        admin = ck_create_topic(shared_broker.bootstrap, topic_name, config={"retention.ms": "86400000"})

        def describe() -> dict[str, Any]:
            res = ConfigResource(ResourceType.TOPIC, topic_name)
            return dict(admin.describe_configs([res])[res].result(timeout=10))

        cfg = describe()
        assert cfg["retention.ms"].value == "86400000"
        assert cfg["retention.ms"].source == 1  # DYNAMIC_TOPIC_CONFIG
        assert cfg["cleanup.policy"].value == "delete"
        assert cfg["cleanup.policy"].is_default
        assert cfg["max.message.bytes"].value == "1048588"

        inc = ConfigResource(
            ResourceType.TOPIC,
            topic_name,
            incremental_configs=[
                ConfigEntry("segment.bytes", "10485760", incremental_operation=AlterConfigOpType.SET),
                ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
            ],
        )
        admin.incremental_alter_configs([inc])[inc].result(timeout=10)
        cfg = describe()
        assert cfg["segment.bytes"].value == "10485760"
        assert cfg["retention.ms"].value == "604800000"
        assert cfg["retention.ms"].is_default

        # AlterConfigs replaces the whole set: segment.bytes goes back to its default.
        full = ConfigResource(ResourceType.TOPIC, topic_name, set_config={"max.message.bytes": "2000000"})
        admin.alter_configs([full])[full].result(timeout=10)
        cfg = describe()
        assert cfg["max.message.bytes"].value == "2000000"
        assert cfg["segment.bytes"].value == "1073741824"

        bad = ConfigResource(
            ResourceType.TOPIC,
            topic_name,
            incremental_configs=[
                ConfigEntry("no.such.config", "1", incremental_operation=AlterConfigOpType.SET)
            ],
        )
        with pytest.raises(Exception, match=r"(?i)invalid|unknown"):
            admin.incremental_alter_configs([bad])[bad].result(timeout=10)


# ------------------------------------------------------------------------------------------ kafka-python


@pytest.fixture
def kp_admin(shared_broker: BrokerProcess) -> Iterator[Any]:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=shared_broker.bootstrap, client_id="kafkite-tests")
    yield admin
    admin.close()


class TestKafkaPython:
    def test_roundtrip(
        self, shared_broker: BrokerProcess, kp_admin: Any, topic_name: str, codec: str
    ) -> None:
        from kafka import KafkaConsumer, KafkaProducer, TopicPartition
        from kafka.admin import NewTopic
        from kafka.codec import has_snappy

        if codec == "snappy" and not has_snappy():
            pytest.skip("kafka-python needs the python-snappy module for snappy, which is not installed")
        bootstrap = shared_broker.bootstrap
        kp_admin.create_topics([NewTopic(topic_name, num_partitions=PARTITIONS, replication_factor=1)])
        base_ts = base_timestamp()
        exp = expected(codec, base_ts)
        producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            compression_type=None if codec == "none" else codec,
            linger_ms=20,
            batch_size=256 * 1024,
            acks="all",
            enable_idempotence=False,
        )
        try:
            futures = []
            for i in range(N):
                k, v, h, ts = message(i, codec, base_ts)
                futures.append(
                    producer.send(
                        topic_name, value=v, key=k, partition=i % PARTITIONS, timestamp_ms=ts, headers=h
                    )
                )
            producer.flush(60)
            for f in futures:
                md = f.get(timeout=30)
                assert md.offset >= 0
        finally:
            producer.close(10)
        check_stored_codec(bootstrap, topic_name, codec)

        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=5000,
        )
        try:
            tps = [TopicPartition(topic_name, p) for p in range(PARTITIONS)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            got: dict[int, list[Any]] = {p: [] for p in range(PARTITIONS)}
            count = 0
            deadline = time.monotonic() + CONSUME_TIMEOUT
            while count < N and time.monotonic() < deadline:
                for tp, msgs in consumer.poll(timeout_ms=1000).items():
                    for m in msgs:
                        assert m.timestamp_type == 0  # CreateTime
                        got[tp.partition].append((m.offset, m.key, m.value, list(m.headers), m.timestamp))
                        count += 1
            for p in range(PARTITIONS):
                check_partition(got[p], exp[p])

            for target in (base_ts - 1, base_ts + N // 2, base_ts + N - 1, base_ts + N + 1000):
                res = consumer.offsets_for_times({tp: target for tp in tps})
                for tp in tps:
                    want = first_offset_at_or_after(exp, tp.partition, target)
                    if want == len(exp[tp.partition]):
                        assert res[tp] is None, (target, res[tp])
                    else:
                        assert res[tp] is not None and res[tp].offset == want, (target, tp, res[tp], want)
                        assert res[tp].timestamp == exp[tp.partition][want][3]
        finally:
            consumer.close()

    def test_configs(self, shared_broker: BrokerProcess, kp_admin: Any, topic_name: str) -> None:
        from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

        kp_admin.create_topics(
            [
                NewTopic(
                    topic_name,
                    num_partitions=1,
                    replication_factor=1,
                    topic_configs={"retention.ms": "3600000"},
                )
            ]
        )

        def describe() -> dict[str, Any]:
            res = kp_admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic_name)], config_filter="all"
            )
            return dict(res["topic"][topic_name])

        cfg = describe()
        assert _kp_value(cfg["retention.ms"]) == "3600000"
        assert _kp_value(cfg["cleanup.policy"]) == "delete"

        kp_admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic_name, configs={"cleanup.policy": "compact"})]
        )
        cfg = describe()
        assert _kp_value(cfg["cleanup.policy"]) == "compact"
        assert _kp_value(cfg["retention.ms"]) == "3600000"  # incremental by default: the rest is kept

        kp_admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic_name, configs={"retention.ms": "7200000"})],
            incremental=False,
        )
        cfg = describe()
        assert _kp_value(cfg["retention.ms"]) == "7200000"


def _kp_value(entry: Any) -> Any:
    if isinstance(entry, dict):
        return entry.get("value", entry.get("config_value"))
    return getattr(entry, "value", entry)


# ------------------------------------------------------------------------------------------ aiokafka


class TestAiokafka:
    def test_roundtrip(self, shared_broker: BrokerProcess, topic_name: str, codec: str) -> None:
        asyncio.run(self._roundtrip(shared_broker.bootstrap, topic_name, codec))

    async def _roundtrip(self, bootstrap: str, topic: str, codec: str) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
        finally:
            await admin.close()
        base_ts = base_timestamp()
        exp = expected(codec, base_ts)
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            compression_type=None if codec == "none" else codec,
            linger_ms=20,
            max_batch_size=256 * 1024,
            acks="all",
        )
        await producer.start()
        try:
            futures = []
            for i in range(N):
                k, v, h, ts = message(i, codec, base_ts)
                futures.append(
                    await producer.send(
                        topic, value=v, key=k, partition=i % PARTITIONS, timestamp_ms=ts, headers=h
                    )
                )
            results = await asyncio.gather(*futures)
            assert all(r.offset >= 0 for r in results)
        finally:
            await producer.stop()
        check_stored_codec(bootstrap, topic, codec)

        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            got: dict[int, list[Any]] = {p: [] for p in range(PARTITIONS)}
            count = 0
            deadline = time.monotonic() + CONSUME_TIMEOUT
            while count < N and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
                for tp, msgs in batch.items():
                    for m in msgs:
                        assert m.timestamp_type == 0
                        got[tp.partition].append((m.offset, m.key, m.value, list(m.headers), m.timestamp))
                        count += 1
            for p in range(PARTITIONS):
                check_partition(got[p], exp[p])

            for target in (base_ts - 1, base_ts + N // 2, base_ts + N - 1, base_ts + N + 1000):
                res = await consumer.offsets_for_times({tp: target for tp in tps})
                for tp in tps:
                    want = first_offset_at_or_after(exp, tp.partition, target)
                    if want == len(exp[tp.partition]):
                        assert res[tp] is None, (target, res[tp])
                    else:
                        assert res[tp] is not None and res[tp].offset == want, (target, tp, res[tp], want)
        finally:
            await consumer.stop()

    def test_configs(self, shared_broker: BrokerProcess, topic_name: str) -> None:
        asyncio.run(self._configs(shared_broker.bootstrap, topic_name))

    async def _configs(self, bootstrap: str, topic: str) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic
        from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [
                    NewTopic(
                        topic,
                        num_partitions=1,
                        replication_factor=1,
                        topic_configs={"retention.ms": "3600000"},
                    )
                ]
            )

            async def describe() -> dict[str, str]:
                resps = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
                out: dict[str, str] = {}
                for r in resps:
                    for res in r.resources:
                        assert res[0] == 0, res
                        for entry in res[4]:
                            out[entry[0]] = entry[1]
                return out

            cfg = await describe()
            assert cfg["retention.ms"] == "3600000"
            assert cfg["cleanup.policy"] == "delete"
            await admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic, configs={"cleanup.policy": "compact"})]
            )
            cfg = await describe()
            assert cfg["cleanup.policy"] == "compact"
            assert cfg["retention.ms"] == "604800000"  # AlterConfigs replaces the whole set
        finally:
            await admin.close()


# ------------------------------------------------------------------------------------------ kcat


def run_kcat(kcat: str, args: list[str], stdin: bytes | None = None, timeout: float = 60) -> bytes:
    return run_kcat_full(kcat, args, stdin, timeout).stdout


def run_kcat_full(
    kcat: str, args: list[str], stdin: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run([kcat, *args], input=stdin, capture_output=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"kcat {' '.join(args)} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}"
    )
    return proc


class TestKcat:
    def test_roundtrip(self, shared_broker: BrokerProcess, kcat: str, topic_name: str, codec: str) -> None:
        bootstrap = shared_broker.bootstrap
        ck_create_topic(bootstrap, topic_name)
        sent: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in range(PARTITIONS)}
        for i in range(N):
            sent[i % PARTITIONS].append((b"key-%d" % i, b"value-%d-%s" % (i, codec.encode())))
        t0 = now_ms()
        not_compressed = False
        for p in range(PARTITIONS):
            lines = b"".join(k + b"\t" + v + b"\n" for k, v in sent[p])
            proc = run_kcat_full(
                kcat,
                [
                    "-b", bootstrap, "-P", "-t", topic_name, "-p", str(p), "-K", "\t",
                    "-H", f"codec={codec}", "-H", f"part={p}",
                    "-X", f"compression.codec={codec}", "-X", "linger.ms=20", "-X", "acks=all",
                    "-X", "debug=msg",
                ],
                stdin=lines,
            )  # fmt: skip
            # Older librdkafka (kcat's 2.0.2) enables gzip, snappy and lz4 only when the broker offers
            # Produce v2, which kafkite (like Kafka 4) does not; it then says so and sends batches plain.
            not_compressed |= b"does not support compression type" in proc.stderr
        t1 = now_ms()
        check_stored_codec(bootstrap, topic_name, "none" if not_compressed else codec, librdkafka=True)
        stamps: dict[int, list[int]] = {}
        for p in range(PARTITIONS):
            out = run_kcat(
                kcat,
                ["-b", bootstrap, "-C", "-t", topic_name, "-p", str(p), "-o", "beginning", "-e",
                 "-f", "%o\t%k\t%s\t%h\t%T\n"],
            )  # fmt: skip
            rows = [line.split(b"\t") for line in out.splitlines()]
            assert len(rows) == len(sent[p])
            for n, (row, (k, v)) in enumerate(zip(rows, sent[p], strict=True)):
                off, key, value, headers, ts = row
                assert (int(off), key, value) == (n, k, v)
                assert headers == f"codec={codec},part={p}".encode()
                assert t0 - 1000 <= int(ts) <= t1 + 1000
            stamps[p] = [int(r[4]) for r in rows]

        # Query offsets by timestamp.
        for p in range(PARTITIONS):
            mid = len(stamps[p]) // 2
            target = stamps[p][mid]
            want = next(i for i, ts in enumerate(stamps[p]) if ts >= target)
            out = run_kcat(kcat, ["-b", bootstrap, "-Q", "-t", f"{topic_name}:{p}:{target}"]).decode()
            assert f"[{p}] offset {want}" in out, out
