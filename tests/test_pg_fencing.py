"""Fencing on the PostgreSQL cluster: a broker paused past its session (SIGSTOP) wakes up believing it still
coordinates what it coordinated; whatever it is asked before it reads the new membership must not be
written. Without the membership lease it would commit an old offset over the new coordinator's (committed
offsets moving backwards) and write as leader of partitions another broker took over."""

from __future__ import annotations

import os
import signal
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import BrokerProcess, RawClient, create_topic, stop_all
from test_pg_cluster import live_nodes, produce_raw, wait_for
from test_pg_support import pg_server

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

OFFSET_COMMIT, OFFSET_FETCH = 8, 9
NOT_LEADER_OR_FOLLOWER, NOT_COORDINATOR = 6, 16
SESSION_TIMEOUT_MS = 4000


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[list[BrokerProcess]]:
    dsn = pg_server().new_database("fencing")
    started: list[BrokerProcess] = []
    try:
        for node in (1, 2):
            b = BrokerProcess(
                tmp_path / f"data{node}",
                tmp_path / f"broker{node}.log",
                [
                    f"storage.engine={dsn}",
                    f"node.id={node}",
                    "cluster.heartbeat.interval.ms=200",
                    f"cluster.session.timeout.ms={SESSION_TIMEOUT_MS}",
                    "log.requests=true",
                ],
            )
            started.append(b)
            b.start()
        wait_for("two live brokers", lambda: all(live_nodes(b) == {1, 2} for b in started))
        yield started
    finally:
        for b in started:
            if b.proc is not None and b.proc.poll() is None:
                os.kill(b.proc.pid, signal.SIGCONT)
        stop_all(started)


def commit_body(group: str, topic: str, offset: int) -> dict[str, Any]:
    return {
        "group_id": group,
        "generation_id_or_member_epoch": -1,
        "member_id": "",
        "group_instance_id": None,
        "retention_time_ms": -1,
        "topics": [
            {
                "name": topic,
                "partitions": [
                    {
                        "partition_index": 0,
                        "committed_offset": offset,
                        "committed_leader_epoch": -1,
                        "committed_metadata": "",
                    }
                ],
            }
        ],
    }


def commit(b: BrokerProcess, group: str, topic: str, offset: int) -> int:
    with RawClient.to(b.bootstrap) as c:
        resp = c.request(OFFSET_COMMIT, 8, commit_body(group, topic, offset))
    return int(resp["topics"][0]["partitions"][0]["error_code"])


def committed(b: BrokerProcess, group: str, topic: str) -> tuple[int, int]:
    with RawClient.to(b.bootstrap) as c:
        resp = c.request(
            OFFSET_FETCH,
            7,
            {
                "group_id": group,
                "topics": [{"name": topic, "partition_indexes": [0]}],
                "require_stable": False,
            },
        )
    p = resp["topics"][0]["partitions"][0] if resp["topics"] else {"error_code": resp["error_code"]}
    return int(resp.get("error_code") or p["error_code"]), int(p.get("committed_offset", -1))


def group_coordinated_by(node: int, live: list[int]) -> str:
    """A group id that placement gives to ``node`` while ``live`` are the live brokers."""
    i = 0
    while True:
        g = f"fence-{i}"
        if live[zlib.crc32(g.encode()) % len(live)] == node:
            return g
        i += 1


@pytest.fixture
def zombie(
    pair: list[BrokerProcess], tmp_path: Path
) -> Iterator[tuple[BrokerProcess, BrokerProcess, RawClient]]:
    """Broker 1 paused past its session and replaced by a new process with its node id (an operator
    restarting a frozen machine's broker elsewhere): (the paused one, its replacement, a connection made to
    the paused one before the pause). The paused one can never register again while its replacement lives."""
    a, b = pair
    stale = RawClient.to(a.bootstrap, timeout=30)
    assert a.proc is not None
    os.kill(a.proc.pid, signal.SIGSTOP)
    wait_for("broker 1 to be dropped", lambda: live_nodes(b) == {2}, timeout=SESSION_TIMEOUT_MS / 1000 + 15)
    replacement = BrokerProcess(tmp_path / "data1-new", tmp_path / "broker1-new.log", a.overrides)
    replacement.start()
    pair.append(replacement)  # stopped and checked with the others
    wait_for("the replacement to join", lambda: live_nodes(b) == {1, 2})
    try:
        yield a, replacement, stale
    finally:
        stale.close()


def send_while_paused(
    a: BrokerProcess, stale: RawClient, api: int, version: int, body: dict[str, Any]
) -> Any:
    """Send a request to the paused broker, wake it, and return its answer."""
    from kafkite.protocol import framing

    _, frame = stale.encode(api, version, body)
    stale.send_raw(frame)
    assert a.proc is not None
    os.kill(a.proc.pid, signal.SIGCONT)
    _, resp = framing.decode_response(stale.reg, api, version, stale.recv_frame())
    return resp


def test_a_paused_coordinator_cannot_commit_after_it_lost_the_group(
    pair: list[BrokerProcess], topic_name: str, request: pytest.FixtureRequest
) -> None:
    a = pair[0]
    create_topic(a.bootstrap, topic_name, 1)
    group = group_coordinated_by(1, [1, 2])
    assert commit(a, group, topic_name, 10) == 0
    paused, replacement, stale = request.getfixturevalue("zombie")
    wait_for("the new coordinator to take a commit", lambda: commit(replacement, group, topic_name, 20) == 0)
    # A commit of an old member reaches the paused broker, which reads it the moment it wakes.
    resp = send_while_paused(paused, stale, OFFSET_COMMIT, 8, commit_body(group, topic_name, 5))
    assert resp["topics"][0]["partitions"][0]["error_code"] != 0, "a fenced broker committed offsets"
    time.sleep(1)  # it has read the membership by now: still not a coordinator, and says where node 1 is
    assert commit(paused, group, topic_name, 6) == NOT_COORDINATOR
    with RawClient.to(paused.bootstrap) as c:
        found = c.request(10, 3, {"key": group, "key_type": 0})
    assert (found["error_code"], found["node_id"], found["port"]) == (0, 1, replacement.port), found
    assert committed(replacement, group, topic_name) == (0, 20)
    assert "is registered by another process" in paused.log_text()


def test_a_paused_leader_cannot_append_after_its_partition_moved(
    pair: list[BrokerProcess], topic_name: str, request: pytest.FixtureRequest
) -> None:
    a = pair[0]
    create_topic(a.bootstrap, topic_name, 2)
    # The partition placement gives node 1 while both are live.
    part = next(p for p in range(2) if [1, 2][(zlib.crc32(topic_name.encode()) + p) % 2] == 1)
    wait_for("broker 1 to lead it", lambda: produce_raw(a, topic_name, part, b"first")["error_code"] == 0)
    paused, replacement, stale = request.getfixturevalue("zombie")
    wait_for(
        "the replacement to lead it",
        lambda: produce_raw(replacement, topic_name, part, b"second")["error_code"] == 0,
    )
    from kafkite.protocol.records import build_batch

    body = {
        "transactional_id": None,
        "acks": -1,
        "timeout_ms": 5000,
        "topic_data": [
            {
                "name": topic_name,
                "partition_data": [{"index": part, "records": build_batch([(None, b"stale", [], 1)])}],
            }
        ],
    }
    resp = send_while_paused(paused, stale, 0, 9, body)
    assert resp["responses"][0]["partition_responses"][0]["error_code"] == NOT_LEADER_OR_FOLLOWER, resp
    time.sleep(1)
    assert produce_raw(paused, topic_name, part, b"later")["error_code"] == NOT_LEADER_OR_FOLLOWER
    from helpers import consume

    assert [m.value() for m in consume(replacement.bootstrap, topic_name, part)] == [b"first", b"second"]
