"""Fetch and Produce details over raw connections: long polls, size limits, topic ids, ordering, acks=0."""

from __future__ import annotations

import struct
import threading
import time
import uuid
from typing import Any

from helpers import BrokerProcess, RawClient, create_topic, produce, watermarks

from kafkite.protocol import framing, records
from kafkite.protocol.errors import ErrorCode

PRODUCE, FETCH, METADATA = 0, 1, 3


def fetch_body(
    topic: str | None,
    offset: int,
    *,
    partition: int = 0,
    max_wait_ms: int = 0,
    min_bytes: int = 0,
    max_bytes: int = 1 << 24,
    partition_max_bytes: int = 1 << 24,
    topic_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    return {
        "max_wait_ms": max_wait_ms,
        "min_bytes": min_bytes,
        "max_bytes": max_bytes,
        "isolation_level": 0,
        "session_id": 0,
        "session_epoch": -1,
        "topics": [
            {
                "topic": topic,
                "topic_id": topic_id or uuid.UUID(int=0),
                "partitions": [
                    {
                        "partition": partition,
                        "fetch_offset": offset,
                        "partition_max_bytes": partition_max_bytes,
                    }
                ],
            }
        ],
        "forgotten_topics_data": [],
        "rack_id": "",
    }


def batch(n: int, size: int = 10, tag: bytes = b"") -> bytes:
    ts = int(time.time() * 1000)
    return records.build_batch([(b"k%d" % i, tag + b"x" * size, [], ts) for i in range(n)])


def produce_body(topic: str, data: bytes, acks: int = -1) -> dict[str, Any]:
    return {
        "acks": acks,
        "timeout_ms": 5000,
        "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": data}]}],
    }


def topic_id_of(c: RawClient, topic: str) -> uuid.UUID:
    md = c.request(METADATA, 12, {"topics": [{"name": topic}], "allow_auto_topic_creation": False})
    tid = md["topics"][0]["topic_id"]
    assert isinstance(tid, uuid.UUID) and tid.int != 0
    return tid


def test_long_poll_is_woken_by_an_append(shared_broker: BrokerProcess, topic_name: str) -> None:
    create_topic(shared_broker.bootstrap, topic_name)
    result: dict[str, Any] = {}

    def poll() -> None:
        with RawClient.to(shared_broker.bootstrap) as c:
            t0 = time.monotonic()
            resp = c.request(FETCH, 12, fetch_body(topic_name, 0, max_wait_ms=10_000, min_bytes=1))
            result["elapsed"] = time.monotonic() - t0
            result["part"] = resp["responses"][0]["partitions"][0]

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.5)
    assert t.is_alive(), "the fetch returned without waiting"
    produce(shared_broker.bootstrap, topic_name, [(b"k", b"wake up")])
    t.join(15)
    assert not t.is_alive()
    assert result["elapsed"] < 5, f"long poll took {result['elapsed']:.1f}s after an append"
    recs = list(records.iter_records(bytes(result["part"]["records"])))
    assert [r.value for r in recs] == [b"wake up"]


def test_long_poll_times_out_empty(shared_broker: BrokerProcess, topic_name: str) -> None:
    create_topic(shared_broker.bootstrap, topic_name)
    with RawClient.to(shared_broker.bootstrap) as c:
        t0 = time.monotonic()
        resp = c.request(FETCH, 12, fetch_body(topic_name, 0, max_wait_ms=400, min_bytes=1))
        elapsed = time.monotonic() - t0
    part = resp["responses"][0]["partitions"][0]
    assert part["error_code"] == 0 and not part["records"]
    assert 0.3 <= elapsed < 3


def test_first_batch_is_returned_even_when_larger_than_the_limits(
    shared_broker: BrokerProcess, topic_name: str
) -> None:
    create_topic(shared_broker.bootstrap, topic_name)
    with RawClient.to(shared_broker.bootstrap) as c:
        for _ in range(3):
            r = c.request(PRODUCE, 9, produce_body(topic_name, batch(10, 1000)))
            assert r["responses"][0]["partition_responses"][0]["error_code"] == 0
        resp = c.request(FETCH, 12, fetch_body(topic_name, 0, max_bytes=100, partition_max_bytes=100))
        data = bytes(resp["responses"][0]["partitions"][0]["records"])
        headers = [h for _, h in records.iter_headers(data)]
        assert len(headers) == 1 and headers[0].base_offset == 0  # one whole batch, no more
        # With room for two batches, exactly whole batches come back.
        one = headers[0].size
        resp = c.request(FETCH, 12, fetch_body(topic_name, 0, partition_max_bytes=2 * one + 10))
        data = bytes(resp["responses"][0]["partitions"][0]["records"])
        got = [h.base_offset for _, h in records.iter_headers(data)]
        assert got[:2] == [0, 10]
        # A fetch from the middle of a batch starts with that batch.
        resp = c.request(FETCH, 12, fetch_body(topic_name, 15))
        data = bytes(resp["responses"][0]["partitions"][0]["records"])
        assert [h.base_offset for _, h in records.iter_headers(data)] == [10, 20]


def test_fetch_by_topic_id(shared_broker: BrokerProcess, topic_name: str) -> None:
    create_topic(shared_broker.bootstrap, topic_name)
    produce(shared_broker.bootstrap, topic_name, [(b"k", b"by-id")])
    with RawClient.to(shared_broker.bootstrap) as c:
        tid = topic_id_of(c, topic_name)
        for version in (13, 16, 17):
            resp = c.request(FETCH, version, fetch_body(None, 0, topic_id=tid))
            t = resp["responses"][0]
            assert t["topic_id"] == tid
            part = t["partitions"][0]
            assert part["error_code"] == 0 and part["high_watermark"] == 1
            assert [r.value for r in records.iter_records(bytes(part["records"]))] == [b"by-id"]
        resp = c.request(FETCH, 13, fetch_body(None, 0, topic_id=uuid.uuid4()))
        assert resp["responses"][0]["partitions"][0]["error_code"] == ErrorCode.UNKNOWN_TOPIC_ID


def test_pipelined_requests_are_answered_in_order(shared_broker: BrokerProcess, topic_name: str) -> None:
    """A long-polling fetch does not let later requests on the same connection overtake it."""
    create_topic(shared_broker.bootstrap, topic_name)
    with RawClient.to(shared_broker.bootstrap) as c:
        frames, ids = [], []
        cid, f = c.encode(FETCH, 12, fetch_body(topic_name, 0, max_wait_ms=300, min_bytes=1))
        frames.append(f)
        ids.append((cid, FETCH, 12))
        for i in range(20):
            cid, f = c.encode(PRODUCE, 9, produce_body(topic_name, batch(1, tag=b"%d" % i)))
            frames.append(f)
            ids.append((cid, PRODUCE, 9))
        c.send_raw(b"".join(frames))
        offsets = []
        for cid, key, version in ids:
            got_cid, body = framing.decode_response(c.reg, key, version, c.recv_frame())
            assert got_cid == cid
            if key == PRODUCE:
                offsets.append(body["responses"][0]["partition_responses"][0]["base_offset"])  # type: ignore[index]
        assert offsets == list(range(20))


def test_acks_zero_gets_no_response_but_is_stored(shared_broker: BrokerProcess, topic_name: str) -> None:
    create_topic(shared_broker.bootstrap, topic_name)
    with RawClient.to(shared_broker.bootstrap) as c:
        for i in range(5):
            _, f = c.encode(PRODUCE, 9, produce_body(topic_name, batch(2, tag=b"%d" % i), acks=0))
            c.send_raw(f)
        # The next answer on the connection is the ApiVersions one: nothing was sent for acks=0.
        cid, f = c.encode(18, 3, {"client_software_name": "t", "client_software_version": "1"})
        c.send_raw(f)
        frame = c.recv_frame()
        assert struct.unpack_from(">i", frame)[0] == cid
    assert watermarks(shared_broker.bootstrap, topic_name) == (0, 10)


def test_delete_topic_ends_a_waiting_fetch(shared_broker: BrokerProcess, topic_name: str) -> None:
    create_topic(shared_broker.bootstrap, topic_name)
    result: dict[str, Any] = {}

    def poll() -> None:
        with RawClient.to(shared_broker.bootstrap) as c:
            t0 = time.monotonic()
            resp = c.request(FETCH, 12, fetch_body(topic_name, 0, max_wait_ms=10_000, min_bytes=1))
            result["elapsed"] = time.monotonic() - t0
            result["part"] = resp["responses"][0]["partitions"][0]

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.3)
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": shared_broker.bootstrap})
    admin.delete_topics([topic_name])[topic_name].result(10)
    t.join(15)
    assert result["elapsed"] < 5
    assert result["part"]["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
