"""Misbehaving clients over raw sockets: the offender is cut off or told why, everyone else is served."""

from __future__ import annotations

import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import BrokerProcess, RawClient, check_no_tracebacks, consume, create_topic, produce

from kafkite.protocol import records
from kafkite.protocol.errors import ErrorCode

MAX_REQUEST = 1048576

PRODUCE, FETCH, LIST_OFFSETS, METADATA, API_VERSIONS, CREATE_TOPICS = 0, 1, 2, 3, 18, 19


@pytest.fixture(scope="module")
def _broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    root = tmp_path_factory.mktemp("bad-input")
    b = BrokerProcess(root / "data", root / "broker.log", [f"socket.request.max.bytes={MAX_REQUEST}"])
    b.start()
    yield b
    b.stop()
    check_no_tracebacks(b)


@pytest.fixture
def kb(_broker: BrokerProcess, attach_broker: Callable[[BrokerProcess], BrokerProcess]) -> BrokerProcess:
    if not _broker.running:
        _broker.start()
    return attach_broker(_broker)


@pytest.fixture
def witness(kb: BrokerProcess) -> Iterator[RawClient]:
    """A well-behaved connection open across the misbehaviour: it must keep being served."""
    with RawClient.to(kb.bootstrap) as c:
        assert c.api_versions()["error_code"] == 0
        yield c
        assert c.api_versions()["error_code"] == 0
        md = c.request(METADATA, 12, {"topics": None})
        assert md["brokers"][0]["port"] == kb.port


def header(
    api_key: int, version: int, correlation_id: int = 7, client_id: bytes = b"bad", flexible: bool = False
):
    out = struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id
    return out + (b"\x00" if flexible else b"")


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def assert_closed(c: RawClient) -> None:
    assert c.is_closed(timeout=5), "the broker kept the offending connection open"
    assert c.is_closed(timeout=1)


# ------------------------------------------------------------------------------------------ framing


BAD_STREAMS: dict[str, bytes] = {
    "http-request": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "garbage-small-frame": frame(b"\x13\x37\xde\xad\xbe\xef\x00\x01\x02\x03\x04\x05"),
    "oversize-prefix": struct.pack(">i", MAX_REQUEST + 1) + b"\x00" * 64,
    "huge-prefix": struct.pack(">i", 0x7FFFFFFF),
    "negative-prefix": struct.pack(">i", -1) + b"\x00" * 16,
    "frame-shorter-than-header": frame(b"\x00\x12"),
    "unknown-api-key": frame(header(9999, 0)),
    "unsupported-produce-version": frame(header(PRODUCE, 2) + b"\x00\x01\x00\x00\x03\xe8\x00\x00\x00\x00"),
    "too-new-produce-version": frame(header(PRODUCE, 99) + b"\x00" * 10),
    "undecodable-metadata-body": frame(header(METADATA, 1) + b"\x00\x00\x00\x05\x00"),
    "bad-string-length": frame(header(CREATE_TOPICS, 4) + b"\x00\x00\x00\x01\x7f\xff"),
    "negative-array-length": frame(header(PRODUCE, 3) + b"\xff\xff\x00\x01\x00\x00\x03\xe8\x80\x00\x00\x00"),
    "bad-flexible-varint": frame(header(METADATA, 12, flexible=True) + b"\xff\xff\xff\xff\xff\xff"),
}


@pytest.mark.parametrize("case", sorted(BAD_STREAMS))
def test_bad_stream_closes_only_the_offender(kb: BrokerProcess, witness: RawClient, case: str) -> None:
    with RawClient.to(kb.bootstrap) as bad:
        bad.send_raw(BAD_STREAMS[case])
        assert_closed(bad)
    assert kb.running


def test_trailing_bytes_after_a_request_are_ignored(kb: BrokerProcess, witness: RawClient) -> None:
    """As Kafka does: librdkafka 2.x sends Metadata v12 for all topics with 3 stray bytes after the body."""
    from kafkite.protocol import framing

    with RawClient.to(kb.bootstrap) as c:
        librdkafka_all_topics = header(METADATA, 12, correlation_id=3, client_id=b"rdkafka", flexible=True)
        librdkafka_all_topics += bytes.fromhex("00000000010000")
        c.send_raw(frame(librdkafka_all_topics))
        cid, resp = framing.decode_response(c.reg, METADATA, 12, c.recv_frame())
        assert cid == 3 and resp["brokers"][0]["port"] == kb.port
        c.send_raw(frame(header(METADATA, 1, correlation_id=4) + b"\xff\xff\xff\xff" + b"junk"))
        cid, resp = framing.decode_response(c.reg, METADATA, 1, c.recv_frame())
        assert cid == 4


def test_truncated_frame_then_close(kb: BrokerProcess, witness: RawClient) -> None:
    for cut in (1, 3, 4, 10, 30):
        with RawClient.to(kb.bootstrap) as c:
            _, full = c.encode(METADATA, 12, {"topics": None})
            c.send_raw(full[:cut])
    # The same, with a size prefix promising much more than ever arrives.
    with RawClient.to(kb.bootstrap) as c:
        c.send_raw(struct.pack(">i", 500_000) + b"\x00" * 1000)
    time.sleep(0.2)
    assert kb.running


def test_good_request_after_bad_one_on_another_connection_pipelined(
    kb: BrokerProcess, witness: RawClient
) -> None:
    """Requests already pipelined before a bad frame may be answered; nothing after it is."""
    with RawClient.to(kb.bootstrap) as c:
        cid, good = c.encode(API_VERSIONS, 3, {"client_software_name": "x", "client_software_version": "1"})
        c.send_raw(good + frame(header(9999, 0)) + good)
        body = c.recv_frame()
        assert struct.unpack_from(">i", body)[0] == cid
        assert_closed(c)


def test_api_versions_too_high_gets_v0_error_with_api_list(kb: BrokerProcess, witness: RawClient) -> None:
    from kafkite.protocol import framing

    with RawClient.to(kb.bootstrap) as c:
        # A future ApiVersions: flexible header, a body this broker cannot know.
        c.send_raw(
            frame(header(API_VERSIONS, 99, correlation_id=4242, flexible=True) + b"\x05hello\x02x\x00")
        )
        cid, resp = framing.decode_response(c.reg, API_VERSIONS, 0, c.recv_frame())
        assert cid == 4242
        assert resp["error_code"] == ErrorCode.UNSUPPORTED_VERSION == 35
        keys = {a["api_key"]: (a["min_version"], a["max_version"]) for a in resp["api_keys"]}
        assert keys[API_VERSIONS][0] == 0
        assert PRODUCE in keys and FETCH in keys and METADATA in keys
        # The connection stays usable: the client retries with a version it now knows.
        assert c.api_versions(version=keys[API_VERSIONS][1])["error_code"] == 0


def test_many_bad_connections_while_a_real_client_streams(kb: BrokerProcess) -> None:
    topic = f"witness-{uuid.uuid4().hex[:8]}"
    create_topic(kb.bootstrap, topic)
    stop = threading.Event()
    failures: list[str] = []

    def misbehave() -> None:
        n = 0
        while not stop.is_set():
            for payload in BAD_STREAMS.values():
                try:
                    with RawClient.to(kb.bootstrap, timeout=5) as c:
                        c.send_raw(payload)
                        if not c.is_closed(timeout=5):
                            failures.append(f"left open after {payload[:20]!r}")
                except OSError:
                    pass
                n += 1

    threads = [threading.Thread(target=misbehave, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        sent = [(b"k%d" % i, b"v%d" % i) for i in range(3000)]
        for chunk in range(3):
            part = sent[chunk * 1000 : (chunk + 1) * 1000]
            assert produce(kb.bootstrap, topic, part) == list(range(chunk * 1000, (chunk + 1) * 1000))
        got = consume(kb.bootstrap, topic)
        assert [(m.key(), m.value()) for m in got] == sent
    finally:
        stop.set()
        for t in threads:
            t.join(20)
    assert not failures, failures[:5]
    assert kb.running


# ------------------------------------------------------------------------------------------ request errors


def produce_raw(
    c: RawClient, topic: str, batch: bytes | None, partition: int = 0, acks: int = -1
) -> dict[str, Any]:
    resp = c.request(
        PRODUCE,
        9,
        {
            "acks": acks,
            "timeout_ms": 5000,
            "topic_data": [{"name": topic, "partition_data": [{"index": partition, "records": batch}]}],
        },
    )
    return dict(resp["responses"][0]["partition_responses"][0])


def batch(n: int = 3, value: bytes = b"value") -> bytes:
    ts = int(time.time() * 1000)
    return records.build_batch([(b"k%d" % i, value, [("h", b"v")], ts) for i in range(n)])


@pytest.fixture
def topic(kb: BrokerProcess) -> str:
    name = f"errors-{uuid.uuid4().hex[:8]}"
    create_topic(kb.bootstrap, name, partitions=1, config={"max.message.bytes": "2000"})
    return name


def test_produce_good_batch_raw(kb: BrokerProcess, witness: RawClient, topic: str) -> None:
    r = produce_raw(witness, topic, batch())
    assert r["error_code"] == 0 and r["base_offset"] == 0
    r = produce_raw(witness, topic, batch(2))
    assert r["error_code"] == 0 and r["base_offset"] == 3


@pytest.mark.parametrize("where", ["payload-last-byte", "crc-field", "attributes", "record-count"])
def test_produce_corrupted_crc_is_corrupt_message(
    kb: BrokerProcess, witness: RawClient, topic: str, where: str
) -> None:
    b = bytearray(batch())
    pos = {"payload-last-byte": len(b) - 1, "crc-field": 17, "attributes": 22, "record-count": 60}[where]
    b[pos] ^= 0x01
    r = produce_raw(witness, topic, bytes(b))
    assert r["error_code"] == ErrorCode.CORRUPT_MESSAGE == 2, r
    assert r["base_offset"] == -1
    # Nothing was appended.
    assert produce_raw(witness, topic, batch())["base_offset"] == 0


def test_produce_truncated_batch_is_corrupt_message(
    kb: BrokerProcess, witness: RawClient, topic: str
) -> None:
    r = produce_raw(witness, topic, batch()[:-5])
    assert r["error_code"] == ErrorCode.CORRUPT_MESSAGE, r


def test_produce_over_max_message_bytes(kb: BrokerProcess, witness: RawClient, topic: str) -> None:
    big = batch(5, b"x" * 1000)
    assert len(big) > 2000
    r = produce_raw(witness, topic, big)
    assert r["error_code"] == ErrorCode.MESSAGE_TOO_LARGE == 10, r
    assert produce_raw(witness, topic, batch())["error_code"] == 0


def test_produce_unknown_topic_or_partition(kb: BrokerProcess, witness: RawClient, topic: str) -> None:
    r = produce_raw(witness, f"no-such-topic-{uuid.uuid4().hex[:8]}", batch())
    assert r["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION == 3, r
    r = produce_raw(witness, topic, batch(), partition=7)
    assert r["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, r


def test_produce_invalid_acks(kb: BrokerProcess, witness: RawClient, topic: str) -> None:
    r = produce_raw(witness, topic, batch(), acks=2)
    assert r["error_code"] == ErrorCode.INVALID_REQUIRED_ACKS == 21, r


def test_produce_acks_zero_with_an_error_closes(kb: BrokerProcess, witness: RawClient, topic: str) -> None:
    with RawClient.to(kb.bootstrap) as c:
        b = bytearray(batch())
        b[-1] ^= 0x01
        _, req = c.encode(
            PRODUCE,
            9,
            {
                "acks": 0,
                "timeout_ms": 1000,
                "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": bytes(b)}]}],
            },
        )
        c.send_raw(req)
        assert_closed(c)


def fetch_raw(c: RawClient, topic: str, offset: int, partition: int = 0) -> dict[str, Any]:
    resp = c.request(
        FETCH,
        12,
        {
            "max_wait_ms": 0,
            "min_bytes": 0,
            "max_bytes": 1 << 20,
            "isolation_level": 0,
            "session_id": 0,
            "session_epoch": -1,
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


def test_fetch_past_the_end_is_offset_out_of_range(kb: BrokerProcess, witness: RawClient, topic: str) -> None:
    assert produce_raw(witness, topic, batch())["error_code"] == 0
    at_end = fetch_raw(witness, topic, 3)
    assert at_end["error_code"] == 0 and at_end["high_watermark"] == 3
    assert not at_end["records"]
    past = fetch_raw(witness, topic, 4)
    assert past["error_code"] == ErrorCode.OFFSET_OUT_OF_RANGE == 1, past
    assert fetch_raw(witness, topic, -5)["error_code"] == ErrorCode.OFFSET_OUT_OF_RANGE
    first = fetch_raw(witness, topic, 0)
    assert first["error_code"] == 0
    got = list(records.iter_records(bytes(first["records"])))
    assert [r.key for r in got] == [b"k0", b"k1", b"k2"]
    unknown = fetch_raw(witness, f"nope-{uuid.uuid4().hex[:6]}", 0)
    assert unknown["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


def create_topics_raw(
    c: RawClient, names: list[str], partitions: int = 1
) -> dict[str, tuple[int, str | None]]:
    resp = c.request(
        CREATE_TOPICS,
        7,
        {
            "topics": [
                {
                    "name": n,
                    "num_partitions": partitions,
                    "replication_factor": 1,
                    "assignments": [],
                    "configs": [],
                }
                for n in names
            ],
            "timeout_ms": 10000,
            "validate_only": False,
        },
    )
    return {t["name"]: (t["error_code"], t["error_message"]) for t in resp["topics"]}


@pytest.mark.parametrize("name", ["", ".", "..", "has space", "slash/y", "x" * 250, "bad*char", "ünïcode"])
def test_create_topic_with_invalid_name(kb: BrokerProcess, witness: RawClient, name: str) -> None:
    res = create_topics_raw(witness, [name])
    assert res[name][0] == ErrorCode.INVALID_TOPIC_EXCEPTION == 17, res


def test_create_existing_topic(kb: BrokerProcess, witness: RawClient, topic: str) -> None:
    res = create_topics_raw(witness, [topic])
    assert res[topic][0] == ErrorCode.TOPIC_ALREADY_EXISTS == 36, res
    fresh = f"fresh-{uuid.uuid4().hex[:8]}"
    res = create_topics_raw(witness, [fresh, topic])
    assert res[fresh][0] == 0 and res[topic][0] == ErrorCode.TOPIC_ALREADY_EXISTS


def test_create_topic_bad_partitions_and_replication(kb: BrokerProcess, witness: RawClient) -> None:
    name = f"p-{uuid.uuid4().hex[:8]}"
    assert create_topics_raw(witness, [name], partitions=0)[name][0] == ErrorCode.INVALID_PARTITIONS
    resp = witness.request(
        CREATE_TOPICS,
        7,
        {
            "topics": [
                {"name": name, "num_partitions": 1, "replication_factor": 3, "assignments": [], "configs": []}
            ],
            "timeout_ms": 10000,
            "validate_only": False,
        },
    )
    assert resp["topics"][0]["error_code"] == ErrorCode.INVALID_REPLICATION_FACTOR


def test_produce_two_batches_in_one_partition_is_invalid_record(
    kb: BrokerProcess, witness: RawClient, topic: str
) -> None:
    r = produce_raw(witness, topic, batch() + batch())
    assert r["error_code"] == ErrorCode.INVALID_RECORD == 87, r
    r = produce_raw(witness, topic, None)
    assert r["error_code"] != 0, r
    assert produce_raw(witness, topic, batch())["base_offset"] == 0


def test_produce_old_magic_is_rejected(kb: BrokerProcess, witness: RawClient, topic: str) -> None:
    b = bytearray(batch())
    b[16] = 1  # magic 1 in a Produce v9 request
    r = produce_raw(witness, topic, bytes(b))
    assert r["error_code"] in (ErrorCode.INVALID_RECORD, ErrorCode.CORRUPT_MESSAGE), r


def test_produce_timestamps_outside_the_topic_window(kb: BrokerProcess, witness: RawClient) -> None:
    name = f"ts-{uuid.uuid4().hex[:8]}"
    create_topic(
        kb.bootstrap,
        name,
        config={"message.timestamp.before.max.ms": "60000", "message.timestamp.after.max.ms": "60000"},
    )
    now = int(time.time() * 1000)
    for ts in (now - 3_600_000, now + 3_600_000):
        old = records.build_batch([(b"k", b"v", [], ts)])
        assert produce_raw(witness, name, old)["error_code"] == ErrorCode.INVALID_TIMESTAMP == 32
    ok = records.build_batch([(b"k", b"v", [], now - 1000)])
    assert produce_raw(witness, name, ok)["error_code"] == 0
