"""Metrics: the text-format registry, and a broker's /metrics endpoint moved by real requests."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest
from helpers import BrokerProcess, RawClient, free_port

from kafkite.metrics import parse_text
from kafkite.metrics.registry import Registry
from kafkite.protocol import records

PRODUCE, FETCH, OFFSET_COMMIT, CREATE_TOPICS = 0, 1, 8, 19

# ------------------------------------------------------------------------------------------ registry


def test_counter_gauge_histogram_render_in_text_format() -> None:
    r = Registry()
    c = r.counter("x_total", "things\ncounted", ["topic"])
    g = r.gauge("y", "a level")
    h = r.histogram("lat_seconds", "latency", ["api"], buckets=[0.1, 1.0])
    c.inc(2, 'we"ird\\na\nme')
    c.inc(3, topic="t")
    g.set(7.5)
    g.dec(0.5)
    for v in (0.05, 0.1, 0.5, 5.0):
        h.observe(v, "Produce")
    text = r.render()
    assert "# HELP x_total things\\ncounted" in text
    assert "# TYPE x_total counter" in text
    assert "# TYPE y gauge" in text
    assert "# TYPE lat_seconds histogram" in text
    assert 'x_total{topic="we\\"ird\\\\na\\nme"} 2' in text
    assert "y 7" in text.splitlines()
    lines = text.splitlines()
    assert 'lat_seconds_bucket{api="Produce",le="0.1"} 2' in lines
    assert 'lat_seconds_bucket{api="Produce",le="1.0"} 3' in lines
    assert 'lat_seconds_bucket{api="Produce",le="+Inf"} 4' in lines
    assert 'lat_seconds_count{api="Produce"} 4' in lines
    parsed = parse_text(text)
    assert parsed[("x_total", (("topic", 'we"ird\\na\nme'),))] == 2
    assert parsed[("x_total", (("topic", "t"),))] == 3
    assert parsed[("lat_seconds_sum", (("api", "Produce"),))] == pytest.approx(5.65)


def test_counters_refuse_to_go_down_and_labels_are_checked() -> None:
    r = Registry()
    c = r.counter("a_total", "a", ["x"])
    with pytest.raises(ValueError):
        c.inc(-1, "v")
    with pytest.raises(ValueError):
        c.inc(1)  # a label is missing
    with pytest.raises(ValueError):
        r.counter("a_total", "again")


# ------------------------------------------------------------------------------------------ broker


@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory) -> tuple[BrokerProcess, str]:
    root = tmp_path_factory.mktemp("metered")
    port = free_port()
    b = BrokerProcess(
        root / "data",
        root / "broker.log",
        [
            f"metrics.listener=http://127.0.0.1:{port}",
            "log.flush.on.ack=true",
            "log.format=json",
            "log.requests=true",
        ],
    )
    b.start()
    yield b, f"http://127.0.0.1:{port}/metrics"
    b.stop()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse_text(r.read().decode())


def value(m: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: object) -> float:
    return m.get((name, tuple(sorted((k, str(v)) for k, v in labels.items()))), 0.0)


def create(c: RawClient, topic: str, partitions: int = 1) -> None:
    resp = c.request(
        CREATE_TOPICS,
        5,
        {
            "topics": [
                {
                    "name": topic,
                    "num_partitions": partitions,
                    "replication_factor": 1,
                    "assignments": [],
                    "configs": [],
                }
            ],
            "timeout_ms": 10000,
            "validate_only": False,
        },
    )
    assert resp["topics"][0]["error_code"] == 0, resp


def produce_batch(c: RawClient, topic: str, batch: bytes, acks: int = -1) -> int:
    resp = c.request(
        PRODUCE,
        9,
        {
            "transactional_id": None,
            "acks": acks,
            "timeout_ms": 10000,
            "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": batch}]}],
        },
    )
    p = resp["responses"][0]["partition_responses"][0]
    assert p["error_code"] == 0, p
    return int(p["base_offset"])


def fetch(c: RawClient, topic: str, offset: int = 0) -> bytes:
    resp = c.request(
        FETCH,
        12,
        {
            "max_wait_ms": 0,
            "min_bytes": 0,
            "max_bytes": 1 << 20,
            "isolation_level": 0,
            "session_id": 0,
            "topics": [
                {
                    "topic": topic,
                    "partitions": [{"partition": 0, "fetch_offset": offset, "partition_max_bytes": 1 << 20}],
                }
            ],
            "forgotten_topics_data": [],
            "rack_id": "",
        },
    )
    return bytes(resp["responses"][0]["partitions"][0]["records"] or b"")


def test_produce_moves_bytes_and_messages_in_by_the_batch(
    metered: tuple[BrokerProcess, str], topic_name: str
) -> None:
    b, url = metered
    n = 37
    batch = records.build_batch(
        [(b"k%d" % i, b"v" * i, [("h", b"x")], 1_700_000_000_000 + i) for i in range(n)]
    )
    with RawClient.to(b.bootstrap) as c:
        create(c, topic_name)
        before = scrape(url)
        produce_batch(c, topic_name, batch)
        produce_batch(c, topic_name, batch)
        after = scrape(url)
        assert value(after, "kafkite_connections", listener="PLAINTEXT") >= 1
    d_bytes = value(after, "kafkite_topic_bytes_in_total", topic=topic_name) - value(
        before, "kafkite_topic_bytes_in_total", topic=topic_name
    )
    d_msgs = value(after, "kafkite_topic_messages_in_total", topic=topic_name) - value(
        before, "kafkite_topic_messages_in_total", topic=topic_name
    )
    assert d_bytes == 2 * len(batch)
    assert d_msgs == 2 * n
    produces = value(after, "kafkite_requests_total", api="Produce", version=9) - value(
        before, "kafkite_requests_total", api="Produce", version=9
    )
    assert produces == 2
    hist = value(after, "kafkite_request_duration_seconds_count", api="Produce", version=9)
    assert hist >= 2
    assert (
        value(after, "kafkite_request_duration_seconds_bucket", api="Produce", version=9, le="+Inf") == hist
    )
    # acks=all with log.flush.on.ack: the fsyncs were timed.
    assert value(after, "kafkite_fsync_duration_seconds_count") > value(
        before, "kafkite_fsync_duration_seconds_count"
    )
    # Scrape-time gauges of the partition.
    assert value(after, "kafkite_partition_log_end_offset", topic=topic_name, partition=0) == 2 * n
    assert value(after, "kafkite_partition_size_bytes", topic=topic_name, partition=0) == 2 * len(batch)
    # The log writer threads: the two appends (and more) ran as jobs, nothing is left queued.
    assert (
        value(after, "kafkite_log_writer_jobs_total", writer="writer")
        >= value(before, "kafkite_log_writer_jobs_total", writer="writer") + 2
    )
    assert value(after, "kafkite_log_writer_backlog_bytes", writer="writer") == 0
    assert value(after, "kafkite_log_open_files") >= 1


def test_fetch_moves_bytes_and_messages_out(metered: tuple[BrokerProcess, str], topic_name: str) -> None:
    b, url = metered
    batch = records.build_batch([(None, b"value-%d" % i, [], 1_700_000_000_000) for i in range(5)])
    with RawClient.to(b.bootstrap) as c:
        create(c, topic_name)
        produce_batch(c, topic_name, batch)
        produce_batch(c, topic_name, batch)
        before = scrape(url)
        data = fetch(c, topic_name)
        after = scrape(url)
    assert len(data) == 2 * len(batch)
    out = value(after, "kafkite_topic_bytes_out_total", topic=topic_name) - value(
        before, "kafkite_topic_bytes_out_total", topic=topic_name
    )
    assert out == len(data)
    assert (
        value(after, "kafkite_topic_messages_out_total", topic=topic_name)
        - value(before, "kafkite_topic_messages_out_total", topic=topic_name)
        == 10
    )


def test_lagging_group_lag_is_end_offset_minus_committed(
    metered: tuple[BrokerProcess, str], topic_name: str
) -> None:
    b, url = metered
    group = f"lagging-{topic_name}"
    batch = records.build_batch([(None, b"m", [], 1_700_000_000_000)] * 10)
    with RawClient.to(b.bootstrap) as c:
        create(c, topic_name, partitions=2)
        produce_batch(c, topic_name, batch)
        resp = c.request(
            OFFSET_COMMIT,
            8,
            {
                "group_id": group,
                "generation_id_or_member_epoch": -1,
                "member_id": "",
                "group_instance_id": None,
                "topics": [
                    {
                        "name": topic_name,
                        "partitions": [
                            {"partition_index": 0, "committed_offset": 4, "committed_metadata": None},
                            {"partition_index": 1, "committed_offset": 0, "committed_metadata": None},
                        ],
                    }
                ],
            },
        )
        assert all(p["error_code"] == 0 for p in resp["topics"][0]["partitions"]), resp
    m = scrape(url)
    end = value(m, "kafkite_partition_log_end_offset", topic=topic_name, partition=0)
    assert end == 10
    assert value(m, "kafkite_group_committed_offset", group=group, topic=topic_name, partition=0) == 4
    assert value(m, "kafkite_group_lag", group=group, topic=topic_name, partition=0) == end - 4
    assert ("kafkite_group_lag", (("group", group), ("partition", "1"), ("topic", topic_name))) in m
    assert value(m, "kafkite_group_lag", group=group, topic=topic_name, partition=1) == 0
    assert value(m, "kafkite_group_state", group=group, state="Empty") == 1


def test_json_logs_connection_admin_and_request_lines(
    metered: tuple[BrokerProcess, str], topic_name: str
) -> None:
    b, _ = metered
    with RawClient.to(b.bootstrap) as c:
        create(c, topic_name)
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(line) for line in b.log_text().splitlines() if line.startswith("{")]
        closes = [e for e in lines if e.get("event") == "connection.close"]
        if closes or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    events = {e.get("event") for e in lines}
    assert {"connection.open", "connection.close", "admin", "request"} <= events
    admin = [e for e in lines if e.get("event") == "admin" and e.get("resource") == topic_name]
    assert admin and admin[0]["action"] == "create topic" and admin[0]["partitions"] == 1
    assert admin[0]["logger"] == "kafkite.admin" and admin[0]["level"] == "INFO"
    reqs = [e for e in lines if e.get("event") == "request" and e.get("api") == "CreateTopics"]
    assert reqs and reqs[0]["client_id"] == "kafkite-tests" and reqs[0]["duration_ms"] >= 0


def test_metrics_are_off_by_default_and_logs_are_text(broker: BrokerProcess) -> None:
    text = broker.log_text()
    assert "metrics listening" not in text
    # The readiness probe's connection was logged, as a text line.
    assert " INFO kafkite.connections: connection opened from 127.0.0.1:" in text
    assert not any(line.startswith("{") for line in text.splitlines())


def test_throttled_produce_is_counted(broker_factory: Any, topic_name: str) -> None:
    """The OCI profile holds produce responses to 1 MB/s per partition and reports the throttle time."""
    port = free_port()
    b = broker_factory("profile=oci", f"metrics.listener=http://127.0.0.1:{port}")
    url = f"http://127.0.0.1:{port}/metrics"
    batch = records.build_batch([(None, b"x" * 200_000, [], 1_700_000_000_000)] * 4)
    with RawClient.to(b.bootstrap) as c:
        create(c, topic_name)
        for _ in range(3):
            produce_batch(c, topic_name, batch)
    m = scrape(url)
    assert value(m, "kafkite_throttled_responses_total", api="Produce") >= 1
    assert value(m, "kafkite_throttle_time_seconds_total", api="Produce") > 0.2


def test_consumer_protocol_group_epochs(metered: tuple[BrokerProcess, str], topic_name: str) -> None:
    b, url = metered
    group = f"kip848-{topic_name}"
    with RawClient.to(b.bootstrap) as c:
        create(c, topic_name, partitions=2)
        resp = c.request(
            68,  # ConsumerGroupHeartbeat
            1,
            {
                "group_id": group,
                "member_id": "member-1",
                "member_epoch": 0,
                "rebalance_timeout_ms": 30000,
                "subscribed_topic_names": [topic_name],
                "topic_partitions": [],
            },
        )
        assert resp["error_code"] == 0, resp
    m = scrape(url)
    assert value(m, "kafkite_group_epoch", group=group, type="consumer") == 1
    assert value(m, "kafkite_group_assignment_epoch", group=group) == 1
    assert value(m, "kafkite_group_member_epoch", group=group, member="member-1") == 1
    assert value(m, "kafkite_group_members", group=group) == 1
    assert value(m, "kafkite_group_state", group=group, state="Stable") == 1
