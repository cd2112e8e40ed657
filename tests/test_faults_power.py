"""Power loss for the file engine: the broker's data directory lives on a FUSE filesystem that keeps every
write not yet fsynced in memory (``faults_lazyfs``); a cycle kills the broker under an acks=all load, drops
the unsynced writes (all of them, or all but a random prefix with the last one torn), and starts the broker
again on what is left.

- ``log.flush.on.ack=true``: every acknowledged record survives, at the offset it was acknowledged with.
- The default flush policy (the page cache and a periodic flusher): acknowledged records may be lost, but
  recovery truncates to a valid log: a consumer (confluent-kafka, checking CRCs) reads every partition to its
  end without an error, offsets have no gaps, nothing is stored twice, and the broker goes on appending.

Short by default (``KAFKITE_POWER_CYCLES``, 3 unless set); 100 cycles with ``KAFKITE_SLOW=1``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import SLOW, BrokerProcess, RawClient, create_topic

from kafkite.protocol import records

pytestmark = [pytest.mark.faults, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

CYCLES = int(os.environ.get("KAFKITE_POWER_CYCLES", "100" if SLOW else "3"))
PARTITIONS = 3
LAZYFS = Path(__file__).with_name("faults_lazyfs.py")


def ensure_fuse() -> str:
    """mfusepy with libfuse 3, fusermount3 and /dev/fuse (Debian's fuse3 is installed, as root, when missing);
    '' when ready, else why not."""
    if shutil.which("fusermount3") is None or not _libfuse_loads():
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            return "FUSE 3 is missing and cannot be installed here (apt-get install fuse3 needs root)"
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for attempt in range(2):
            res = subprocess.run(
                ["apt-get", "install", "-y", "-qq", "fuse3"], env=env, capture_output=True, timeout=900
            )
            if res.returncode == 0:
                break
            if attempt == 0:
                subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        if shutil.which("fusermount3") is None or not _libfuse_loads():
            why = res.stderr.decode(errors="replace")[-300:]
            return f"cannot install fuse3 (or mfusepy cannot load it): {why}"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist here"
    return ""


def _libfuse_loads() -> bool:
    """Whether mfusepy imports (it loads libfuse when imported)."""
    res = subprocess.run([sys.executable, "-c", "import mfusepy"], capture_output=True, timeout=60)
    return res.returncode == 0


@pytest.fixture(scope="module", autouse=True)
def _fuse() -> None:
    reason = ensure_fuse()
    if reason:
        if os.environ.get("CI", "") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


class LazyMount:
    """``faults_lazyfs`` mounted over a backing directory, with its control socket."""

    def __init__(self, root: Path) -> None:
        self.backing = root / "backing"
        self.mount = root / "mnt"
        self.control = root / "lazyfs.sock"
        self.log = root / "lazyfs.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LazyMount:
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mount.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(LAZYFS), str(self.backing), str(self.mount), str(self.control)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 30
        while not os.path.ismount(self.mount):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the FUSE filesystem did not mount: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        return self

    def command(self, line: str) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(str(self.control))
            s.sendall(line.encode())
            reply: dict[str, Any] = json.loads(s.makefile().readline())
        if "error" in reply:
            raise RuntimeError(f"{line}: {reply['error']}")
        return reply

    def crash(self, mode: str, seed: int) -> dict[str, Any]:
        return self.command(f"crash {mode} {seed}")

    def stop(self) -> None:
        for args in (["fusermount3", "-u", str(self.mount)], ["fusermount3", "-u", "-z", str(self.mount)]):
            if subprocess.run(args, capture_output=True, timeout=30).returncode == 0:
                break
            time.sleep(0.5)
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def lazyfs(tmp_path: Path) -> Iterator[LazyMount]:
    fs = LazyMount(tmp_path).start()
    try:
        yield fs
    finally:
        fs.stop()


class Load:
    """An idempotent acks=all producer writing ``<tag>-<n>`` values over the partitions, in a thread."""

    def __init__(self, bootstrap: str, topic: str, tag: str) -> None:
        from confluent_kafka import Producer

        self.acked: dict[str, tuple[int, int]] = {}
        self.fatal: list[str] = []
        self.sent = 0
        self.tag = tag
        self.topic = topic
        self.stopping = threading.Event()
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 2,
                "message.timeout.ms": 8000,
                "request.timeout.ms": 5000,
            }
        )
        self.thread = threading.Thread(target=self._run, name=f"load-{tag}", daemon=True)
        self.thread.start()

    def _report(self, err: Any, msg: Any) -> None:
        if err is None:
            self.acked[msg.value().decode()] = (msg.partition(), msg.offset())

    def _run(self) -> None:
        from confluent_kafka import KafkaException

        while not self.stopping.is_set():
            try:
                self.producer.produce(
                    self.topic, f"{self.tag}-{self.sent}".encode(), on_delivery=self._report
                )
                self.sent += 1
            except BufferError:
                pass
            try:
                self.producer.poll(0.001 if self.sent % 20 else 0.01)
            except KafkaException as e:  # a fatal error of the idempotent producer: it can go no further
                self.fatal.append(str(e))
                return

    def stop(self) -> None:
        from confluent_kafka import KafkaException

        self.stopping.set()
        self.thread.join(30)
        with contextlib.suppress(KafkaException):
            self.producer.purge()  # the broker is down: what was not acknowledged is not retried
            self.producer.flush(20)


def read_everything(bootstrap: str, topic: str) -> dict[int, list[tuple[int, str]]]:
    """Every record, by partition, read with confluent-kafka (CRCs checked): fails on any error it reports."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "power-check",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "check.crcs": True,
        }
    )
    try:
        out: dict[int, list[tuple[int, str]]] = {p: [] for p in range(PARTITIONS)}
        consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        pending = set(range(PARTITIONS))
        deadline = time.monotonic() + 60
        while pending:
            assert time.monotonic() < deadline, f"partitions {pending} never reached their end"
            for m in consumer.consume(1000, 0.5):
                err = m.error()
                if err is not None:
                    assert err.code() == KafkaError._PARTITION_EOF, f"the consumer saw {err}"
                    pending.discard(m.partition())
                    continue
                out[m.partition()].append((m.offset(), m.value().decode()))
        return out
    finally:
        consumer.close()


def check_stored_batches(bootstrap: str, topic: str) -> None:
    """Every stored batch has a valid CRC (a raw fetch, below any client's tolerance)."""
    for p in range(PARTITIONS):
        offset = 0
        while True:
            with RawClient.to(bootstrap) as c:
                resp = c.request(
                    1,
                    12,
                    {
                        "max_wait_ms": 0,
                        "min_bytes": 0,
                        "max_bytes": 1 << 24,
                        "isolation_level": 0,
                        "session_id": 0,
                        "topics": [
                            {
                                "topic": topic,
                                "partitions": [
                                    {"partition": p, "fetch_offset": offset, "partition_max_bytes": 1 << 24}
                                ],
                            }
                        ],
                        "forgotten_topics_data": [],
                        "rack_id": "",
                    },
                )
            part = resp["responses"][0]["partitions"][0]
            assert part["error_code"] == 0, part
            data = bytes(part["records"] or b"")
            if not data:
                break
            for pos, h in records.iter_headers(data):
                assert records.check_crc(data, pos, h), f"{topic}-{p}: batch at {h.base_offset} has a bad CRC"
                offset = h.last_offset + 1
            if offset >= part["high_watermark"]:
                break


def power_cycles(
    lazyfs: LazyMount, tmp_path: Path, *, flush_on_ack: bool, mode: str, cycles: int
) -> dict[str, Any]:
    overrides = ["log.flush.on.ack=true"] if flush_on_ack else []
    broker = BrokerProcess(lazyfs.mount / "data", tmp_path / "broker.log", overrides)
    broker.start()
    topic = "power"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    acked: dict[str, tuple[int, int]] = {}
    fatal: list[str] = []
    crashes = []
    try:
        for cycle in range(cycles):
            load = Load(broker.bootstrap, topic, f"c{cycle}")
            deadline = time.monotonic() + 30
            while len(load.acked) < 200 and time.monotonic() < deadline:
                time.sleep(0.02)
            broker.kill9()
            crashes.append(lazyfs.crash(mode, seed=cycle))
            load.stop()
            fatal += load.fatal
            if not load.fatal:
                assert load.acked, f"cycle {cycle}: nothing was acknowledged"
            acked.update(load.acked)
            broker.start()
        stored = read_everything(broker.bootstrap, topic)
        check_stored_batches(broker.bootstrap, topic)
        # The broker goes on appending after the last recovery.
        from helpers import produce

        after = produce(broker.bootstrap, topic, [(None, b"after")], partition=0)
        assert after == [len(stored[0])], (after, len(stored[0]))
    finally:
        broker.stop()
    values: dict[str, list[tuple[int, int]]] = {}
    for p, recs in stored.items():
        assert [o for o, _ in recs] == list(range(len(recs))), (
            f"partition {p} has gaps: offsets are not dense"
        )
        for o, v in recs:
            values.setdefault(v, []).append((p, o))
    duplicated = {v: at for v, at in values.items() if len(at) > 1}
    lost = {v: at for v, at in acked.items() if v not in values}
    moved = {v: (at, values[v]) for v, at in acked.items() if v in values and values[v] != [at]}
    strays = [v for v in values if not v.startswith("c")]
    return {
        "flush_on_ack": flush_on_ack,
        "mode": mode,
        "cycles": cycles,
        "acked": len(acked),
        "stored": sum(len(r) for r in stored.values()),
        "lost": len(lost),
        "duplicated": len(duplicated),
        "moved": len(moved),
        "strays": strays[:5],
        "unsynced_ops_dropped": sum(c["lost"] for c in crashes),
        "torn_writes": sum(1 for c in crashes if c["torn"]),
        "producer_fatal_errors": fatal[:3],
        "examples": {
            "lost": sorted(lost)[:5],
            "duplicated": list(duplicated.items())[:5],
            "moved": list(moved.items())[:5],
        },
    }


def _record(summary: dict[str, Any]) -> None:
    path = os.environ.get("KAFKITE_FAULTS_RESULTS")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"schedule": "power-loss", **summary}) + "\n")


@pytest.mark.timeout(300 + CYCLES * 40)
@pytest.mark.parametrize("mode", ["drop", "torn"])
def test_acknowledged_records_survive_power_loss_with_flush_on_ack(
    lazyfs: LazyMount, tmp_path: Path, mode: str
) -> None:
    summary = power_cycles(lazyfs, tmp_path, flush_on_ack=True, mode=mode, cycles=CYCLES)
    _record(summary)
    assert not summary["producer_fatal_errors"], summary
    assert summary["unsynced_ops_dropped"] > 0 or mode == "torn", summary  # the crashes did lose something
    assert (summary["lost"], summary["duplicated"], summary["moved"], summary["strays"]) == (0, 0, 0, []), (
        summary
    )


@pytest.mark.timeout(300 + CYCLES * 40)
@pytest.mark.parametrize("mode", ["drop", "torn"])
def test_default_flush_policy_recovers_a_valid_log_after_power_loss(
    lazyfs: LazyMount, tmp_path: Path, mode: str
) -> None:
    summary = power_cycles(lazyfs, tmp_path, flush_on_ack=False, mode=mode, cycles=CYCLES)
    _record(summary)
    assert not summary["producer_fatal_errors"], summary
    assert summary["unsynced_ops_dropped"] > 0, summary
    # Acknowledged records may be lost without fsyncs; what is left is valid, dense and has no duplicate.
    assert (summary["duplicated"], summary["moved"], summary["strays"]) == (0, 0, []), summary


class TxnLoad:
    """A transactional producer committing three-record transactions, and a client committing a group's
    offsets, in a thread: what each was told succeeded."""

    def __init__(self, bootstrap: str, topic: str, tag: str, offsets: dict[int, int]) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.tag = tag
        self.committed: list[list[str]] = []
        # partition -> the last offset a commit of it was acknowledged for; each cycle goes on from the
        # last cycle's, so every commit moves its partition's offset forward
        self.offsets: dict[int, int] = dict(offsets)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"txn-{tag}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "transactional.id": "power-tx",
                "transaction.timeout.ms": 10000,
                "message.timeout.ms": 8000,
                "request.timeout.ms": 5000,
            }
        )
        committer = Consumer(
            {"bootstrap.servers": self.bootstrap, "group.id": "power-offsets", "enable.auto.commit": False}
        )
        try:
            producer.init_transactions(20)
            n = 0
            while not self.stopping.is_set():
                values = [f"{self.tag}-t{n}-{j}" for j in range(PARTITIONS)]
                producer.begin_transaction()
                for j, v in enumerate(values):
                    producer.produce(self.topic, v.encode(), partition=j)
                producer.commit_transaction(10)
                self.committed.append(values)
                p = n % PARTITIONS
                offset = self.offsets.get(p, 0) + 10
                res = committer.commit(offsets=[TopicPartition(self.topic, p, offset)], asynchronous=False)
                if res and res[0].error is None:
                    self.offsets[p] = offset
                n += 1
        except KafkaException:
            return  # the broker went down mid-transaction: what was acknowledged is recorded
        finally:
            with contextlib.suppress(Exception):
                committer.close()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(60)


@pytest.mark.timeout(300 + CYCLES * 40)
@pytest.mark.parametrize("mode", ["drop", "torn"])
def test_committed_transactions_and_offsets_survive_power_loss_with_flush_on_ack(
    lazyfs: LazyMount, tmp_path: Path, mode: str
) -> None:
    """log.flush.on.ack=true covers what the coordinators answer too: a transaction whose commit was
    acknowledged is read whole by read_committed consumers after a power cut, and a committed offset whose
    commit was acknowledged is never read back lower."""
    from confluent_kafka import Consumer, TopicPartition

    broker = BrokerProcess(lazyfs.mount / "data", tmp_path / "broker.log", ["log.flush.on.ack=true"])
    broker.start()
    topic = "power-txn"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    committed: list[list[str]] = []
    offsets: dict[int, int] = {}
    try:
        for cycle in range(CYCLES if SLOW else 2):
            load = TxnLoad(broker.bootstrap, topic, f"c{cycle}", offsets)
            deadline = time.monotonic() + 60
            while len(load.committed) < 5 and time.monotonic() < deadline:
                time.sleep(0.05)
            broker.kill9()
            lazyfs.crash(mode, seed=cycle)
            load.stop()
            assert load.committed, f"cycle {cycle}: no transaction was committed"
            committed += load.committed
            offsets.update(load.offsets)
            broker.start()
        consumer = Consumer(
            {
                "bootstrap.servers": broker.bootstrap,
                "group.id": "power-check",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
                "check.crcs": True,
            }
        )
        seen: set[str] = set()
        try:
            consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
            pending = set(range(PARTITIONS))
            deadline = time.monotonic() + 60
            while pending:
                assert time.monotonic() < deadline, f"partitions {pending} never reached their end"
                for m in consumer.consume(1000, 0.5):
                    if m.error() is not None:
                        assert m.error().code() == -191, m.error()  # _PARTITION_EOF
                        pending.discard(m.partition())
                    else:
                        seen.add(m.value().decode())
        finally:
            consumer.close()
        reader = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "power-offsets"})
        try:
            got = reader.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=20)
        finally:
            reader.close()
    finally:
        broker.stop()
    partial = [values for values in committed if any(v not in seen for v in values)]
    assert not partial, (
        f"{len(partial)} of {len(committed)} acknowledged transactions are not whole: {partial[:3]}"
    )
    back = {tp.partition: tp.offset for tp in got}
    lower = {p: (o, back.get(p)) for p, o in offsets.items() if back.get(p, -1) < o}
    assert not lower, f"acknowledged offset commits read back lower: {lower}"
    _record(
        {"test": "transactions", "mode": mode, "committed": len(committed), "offsets": offsets, "lost": 0}
    )
