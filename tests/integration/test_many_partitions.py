"""Partitions bounded by the disk, not by the descriptor limit: a broker started with a lowered ``ulimit -n``
creates, serves and restarts (cleanly and after kill -9) with several times more partitions than it may open
files; CreatePartitions to 32,768 partitions (which used to exhaust the descriptors, leave the catalogue
naming partitions that did not exist and make the broker unable to restart) is served while other clients
keep being served; and a broker out of descriptors stops accepting for a while and says so once, instead of
logging every failed ``accept()`` in a loop.

The short versions run by default; KAFKITE_SLOW=1 runs 100,000 partitions.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic
from helpers import SLOW, BrokerProcess, check_no_tracebacks, produce

from kafkite.client import KafkaClient
from kafkite.protocol import records
from kafkite.protocol.records import iter_headers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800 if SLOW else 600)]

LOAD_TIMEOUT = 600.0 if SLOW else 180.0

_SET_LIMIT = (
    "import os, resource, sys; n = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); os.execv(sys.argv[2], sys.argv[2:])"
)


class LimitedBroker(BrokerProcess):
    """``kafkite serve`` under ``ulimit -n nofile`` (soft and hard)."""

    def __init__(self, data_dir: Path, log_path: Path, nofile: int, overrides: Iterable[str] = ()) -> None:
        super().__init__(data_dir, log_path, list(overrides))
        self.nofile = nofile

    def command(self, extra: Iterable[str] = ()) -> list[str]:
        return [sys.executable, "-c", _SET_LIMIT, str(self.nofile), *super().command(extra)]

    def wait_ready(self, timeout: float = LOAD_TIMEOUT) -> None:
        super().wait_ready(max(timeout, LOAD_TIMEOUT))

    def open_files(self) -> int:
        assert self.proc is not None
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[list[LimitedBroker]]:
    brokers: list[LimitedBroker] = []
    yield brokers
    for b in brokers:
        b.stop(120)


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 120000})


def _partitions(bootstrap: str, topic: str) -> int:
    md = _admin(bootstrap).list_topics(topic, timeout=60)
    return len(md.topics[topic].partitions)


def _sample(n: int, k: int = 400) -> list[int]:
    return sorted({i * n // k for i in range(k)} | {n - 1})


async def _read_one_each(bootstrap: str, topic: str, parts: list[int]) -> dict[int, list[int]]:
    """The offsets of the records in each partition, read with kafkite's client."""
    out: dict[int, list[int]] = {}
    async with KafkaClient(bootstrap, client_id="many-partitions") as client:
        await client.refresh_metadata([topic])
        for p in parts:
            got = await client.fetch(topic, p, 0, max_bytes=1 << 16)
            assert got.error_code == 0, f"{topic}-{p}: error {got.error_code}"
            out[p] = [h.base_offset for _, h in iter_headers(got.records)]
    return out


def _produce_sample(bootstrap: str, topic: str, parts: list[int], tag: bytes) -> None:
    """One message to each of ``parts`` in one Produce request (acks=all), with kafkite's client: librdkafka
    would fetch the whole topic's metadata again and again, and Metadata for 100,000 partitions takes
    seconds to build and encode."""

    async def run() -> None:
        async with KafkaClient(bootstrap, client_id="many-partitions") as client:
            await client.refresh_metadata([topic])
            batches = {
                p: records.build_batch([(b"k", tag + b"-%d" % p, [], int(time.time() * 1000))]) for p in parts
            }
            got = await client.produce(topic, batches, acks=-1, timeout_ms=120_000)
            assert sorted(got) == sorted(parts)
            bad = {p: r.error_code for p, r in got.items() if r.error_code}
            assert not bad, bad

    asyncio.run(run())


def test_partitions_beyond_the_descriptor_limit_start_serve_and_restart(
    tmp_path: Path, limited: list[LimitedBroker]
) -> None:
    n = 100_000 if SLOW else 10_000  # more than twice the descriptor limit either way
    nofile = 4096
    broker = LimitedBroker(tmp_path / "data", tmp_path / "broker.log", nofile)
    limited.append(broker)
    broker.start()
    admin = _admin(broker.bootstrap)
    started = time.monotonic()
    admin.create_topics([NewTopic("wide", num_partitions=n, replication_factor=1)])["wide"].result(120)
    assert _partitions(broker.bootstrap, "wide") == n
    sample = _sample(n)
    _produce_sample(broker.bootstrap, "wide", sample, b"first")
    created_s = time.monotonic() - started
    got = asyncio.run(_read_one_each(broker.bootstrap, "wide", sample))
    assert all(got[p] == [0] for p in sample), {p: o for p, o in got.items() if o != [0]}
    assert broker.open_files() < nofile

    # A clean restart, then a crash: both load every partition within the descriptor limit.
    broker.restart()
    assert _partitions(broker.bootstrap, "wide") == n
    _produce_sample(broker.bootstrap, "wide", sample, b"second")
    broker.kill9()
    broker.start()
    got = asyncio.run(_read_one_each(broker.bootstrap, "wide", sample))
    assert all(got[p] == [0, 1] for p in sample), {p: o for p, o in got.items() if o != [0, 1]}
    assert broker.open_files() < nofile
    log = broker.log_text()
    assert "Too many open files" not in log and "out of system resource" not in log
    check_no_tracebacks(broker)
    print(f"{n} partitions under ulimit -n {nofile}: created and first produced in {created_s:.1f}s")


def test_create_partitions_to_32768_is_served_and_the_broker_restarts(
    tmp_path: Path, limited: list[LimitedBroker]
) -> None:
    nofile = 8192
    broker = LimitedBroker(tmp_path / "data", tmp_path / "broker.log", nofile)
    limited.append(broker)
    broker.start()
    admin = _admin(broker.bootstrap)
    for name in ("grow", "other"):
        admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result(60)
    produce(broker.bootstrap, "other", [(b"k", b"before")])

    # Another client keeps going while the partitions are made.
    errors: list[str] = []
    served = 0
    stop = threading.Event()

    def other_client() -> None:
        nonlocal served
        while not stop.is_set():
            try:
                assert produce(broker.bootstrap, "other", [(b"k", b"during")])[0] >= 1
                md = _admin(broker.bootstrap).list_topics("other", timeout=30)
                assert md.topics["other"].error is None
                served += 1
            except Exception as e:  # reported below
                errors.append(repr(e))
                return

    t = threading.Thread(target=other_client)
    t.start()
    try:
        admin.create_partitions([NewPartitions("grow", 32768)])["grow"].result(120)
        assert _partitions(broker.bootstrap, "grow") == 32768
        _produce_sample(broker.bootstrap, "grow", [0, 16384, 32767], b"after")
        time.sleep(1)
    finally:
        stop.set()
        t.join(120)
    assert not errors, errors
    assert served > 0
    assert broker.open_files() < nofile

    broker.restart()
    assert _partitions(broker.bootstrap, "grow") == 32768
    got = asyncio.run(_read_one_each(broker.bootstrap, "grow", [0, 16384, 32767]))
    assert got == {0: [0], 16384: [0], 32767: [0]}
    log = broker.log_text()
    assert "Too many open files" not in log and "out of system resource" not in log
    check_no_tracebacks(broker)


def test_out_of_descriptors_pauses_accepting_and_says_so_once(
    tmp_path: Path, limited: list[LimitedBroker]
) -> None:
    nofile = 256
    broker = LimitedBroker(
        tmp_path / "data",
        tmp_path / "broker.log",
        nofile,
        ["log.open.files.max=32", "max.connections=100000"],
    )
    limited.append(broker)
    broker.start()
    produce(broker.bootstrap, "t", [(b"k", b"v")])
    held: list[socket.socket] = []
    try:
        for _ in range(nofile + 200):  # more connections than the broker has descriptors
            s = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
            held.append(s)
        deadline = time.monotonic() + 30
        while "accepting connections on" not in broker.log_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # long enough for several retries
        log = broker.log_text()
        assert log.count("accepting connections on") == 1 and "paused" in log, broker.tail()
        assert "out of system resource" not in log
    finally:
        for s in held:
            s.close()
    # Once descriptors are free again the broker accepts (the connections waiting in the backlog first).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            assert produce(broker.bootstrap, "t", [(b"k", b"again")])[0] == 1
            break
        except Exception:
            time.sleep(0.5)
    else:
        raise AssertionError(f"the broker did not accept again:\n{broker.tail()}")
    assert "accepting connections on" in broker.log_text().split("paused", 1)[1]
    check_no_tracebacks(broker)
