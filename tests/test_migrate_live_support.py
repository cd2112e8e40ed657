"""Support for the live-migration tests: a steady confluent-kafka producer, a consuming group, the mirror as a
subprocess with its status endpoint, and partition-by-partition comparisons read back with real consumers."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from helpers import free_port
from test_migrate_support import cli_command, cli_env

Rec = tuple[bytes | None, bytes | None, tuple[tuple[str, bytes | None], ...], int]


class SteadyProducer:
    """confluent-kafka producing ``rate`` messages per second, round robin over the topics (and partitions)
    in ``targets`` (a list that may grow while it runs); every message has a unique sequence number, a key,
    headers and an explicit timestamp. ``acked`` holds (topic, partition, offset, seq) of each delivery."""

    def __init__(self, bootstrap: str, targets: list[tuple[str, int]], rate: float, **config: Any) -> None:
        self.targets = targets
        self.rate = rate
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "linger.ms": 5,
                "acks": "all",
                "topic.metadata.refresh.interval.ms": 500,
                # No duplicate on the source when a busy machine makes librdkafka retry: the source then holds
                # exactly the acknowledged records.
                "enable.idempotence": True,
                **config,
            }
        )
        self.acked: list[tuple[str, int, int, int]] = []
        self.errors: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.sent = 0

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.is_set():
            due = int((time.monotonic() - t0) * self.rate)
            while self.sent < due:
                topic, partition = self.targets[self.sent % len(self.targets)]
                self.send(topic, partition, self.sent)
                self.sent += 1
            self.producer.poll(0.01)
        self.producer.flush(30)

    def send(self, topic: str, partition: int, seq: int) -> None:
        def cb(err: Any, msg: Any) -> None:
            if err is not None:
                self.errors.append(err)
            else:
                self.acked.append((msg.topic(), msg.partition(), msg.offset(), seq))

        headers: list[tuple[str, str | bytes | None]] = [("seq", str(seq).encode()), ("src", b"live")]
        if seq % 5 == 0:
            headers.append(("empty", b""))
        kwargs: dict[str, Any] = {}
        if partition >= 0:
            kwargs["partition"] = partition
        while True:
            try:
                self.producer.produce(
                    topic,
                    value=f"value-{seq}".encode() * (1 + seq % 3),
                    key=f"key-{seq % 97}".encode(),
                    headers=headers,
                    timestamp=1_700_000_000_000 + seq,
                    on_delivery=cb,
                    **kwargs,
                )
                return
            except BufferError:
                self.producer.poll(0.05)
            except KafkaException as e:  # a partition just added: not in the producer's metadata yet
                if e.args[0].code() != KafkaError._UNKNOWN_PARTITION:
                    raise
                self.producer.poll(0.1)

    def start(self) -> SteadyProducer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        assert not self.errors, self.errors[:3]


def read_partition(bootstrap: str, topic: str, partition: int, **config: Any) -> list[Rec]:
    """Every record of one partition (read_committed), in order: (key, value, headers, timestamp)."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "kafkite-tests-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            **config,
        }
    )
    out: list[Rec] = []
    try:
        c.assign([TopicPartition(topic, partition, 0)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            m = c.poll(1.0)
            if m is None:
                continue
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    return out
                raise AssertionError(err)
            ts = m.timestamp()[1]
            out.append((m.key(), m.value(), tuple(m.headers() or ()), ts))  # type: ignore[arg-type]
        raise AssertionError(f"{topic}/{partition}: no end of partition after reading {len(out)} records")
    finally:
        c.close()


def partitions_of(bootstrap: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "kafkite-tests-reader"})
    try:
        md = c.list_topics(topic, timeout=10)
        return len(md.topics[topic].partitions)
    finally:
        c.close()


def assert_same_records(source: str, target: str, topics: list[str]) -> int:
    """Target equals source record for record in every partition; the number of records compared."""
    n = 0
    for t in topics:
        parts = partitions_of(source, t)
        assert partitions_of(target, t) >= parts, t
        for p in range(parts):
            src = read_partition(source, t, p)
            dst = read_partition(target, t, p)
            if src != dst:
                first = next((i for i, (a, b) in enumerate(zip(src, dst, strict=False)) if a != b), None)
                raise AssertionError(
                    f"{t}/{p}: source has {len(src)} records, target {len(dst)}; first difference at "
                    f"{first if first is not None else min(len(src), len(dst))}"
                )
            n += len(src)
    return n


class MirrorProcess:
    """``kafkite migrate mirror --follow`` as a subprocess with its metrics listener."""

    def __init__(self, tmp: Path, *args: str, name: str = "mirror") -> None:
        self.port = free_port()
        self.args = [*args, "--metrics-listener", f"127.0.0.1:{self.port}"]
        self.tmp = tmp
        self.name = name
        self.runs = 0
        self.proc: subprocess.Popen[str] | None = None
        self.outputs: list[tuple[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MirrorProcess:
        self.runs += 1
        self.err_path = self.tmp / f"{self.name}-{self.runs}.err"
        self.out_path = self.tmp / f"{self.name}-{self.runs}.out"
        self.proc = subprocess.Popen(
            cli_command("mirror", *self.args),
            stdout=open(self.out_path, "w"),  # noqa: SIM115 - closed with the process
            stderr=open(self.err_path, "w"),  # noqa: SIM115
            text=True,
            env=cli_env(),
        )
        self.wait(lambda s: s["ready"], timeout=60)
        return self

    def status(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(self.url + "/status", timeout=5) as r:
                data: dict[str, Any] = json.loads(r.read())
                return data
        except OSError:
            return None

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as r:
            return str(r.read().decode())

    def wait(self, cond: Any, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"the mirror exited with {self.proc.returncode}:\n{self.logs()}")
            s = self.status()
            if s is not None:
                last = s
                if s.get("errors"):
                    raise AssertionError(f"the mirror reports errors: {s['errors']}\n{self.logs()}")
                if cond(s):
                    return s
            time.sleep(0.1)
        raise AssertionError(f"mirror condition not met in {timeout}s; last status {json.dumps(last)[:3000]}")

    def caught_up(self, timeout: float = 90) -> dict[str, Any]:
        """Wait until every partition's position reached the source end and stays (no lag)."""
        return self.wait(
            lambda s: (
                s["lag"] == 0
                and all(
                    p["source_end"] >= 0 and p["source_position"] >= p["source_end"] for p in s["partitions"]
                )
            ),
            timeout,
        )

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> tuple[int, str, str]:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        rc = self.proc.wait(120)
        return rc, self.out_path.read_text(), self.err_path.read_text()

    def logs(self) -> str:
        try:
            return (
                self.out_path.read_text()[-3000:] + "\n--- stderr ---\n" + self.err_path.read_text()[-6000:]
            )
        except OSError:
            return ""

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


class GroupConsumer:
    """A confluent-kafka consumer of ``group`` in a thread of its own, committing each message it processes
    (synchronously) as an application that wants no duplicate would; ``seen`` holds the sequence numbers in
    the order processed, per (topic, partition)."""

    def __init__(self, bootstrap: str, group: str, topics: list[str], **config: Any) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "topic.metadata.refresh.interval.ms": 1000,
                **config,
            }
        )
        self.topics = topics
        self.seen: dict[tuple[str, int], list[int]] = {}
        self.count = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.consumer.subscribe(self.topics)
            while not self._stop.is_set():
                m = self.consumer.poll(0.2)
                if m is None:
                    continue
                if m.error():
                    raise KafkaException(m.error())
                self.seen.setdefault((str(m.topic()), int(m.partition() or 0)), []).append(seq_of(m))
                self.consumer.commit(message=m, asynchronous=False)
                self.count += 1
        except BaseException as e:
            self.error = e
        finally:
            self.consumer.close()

    def start(self) -> GroupConsumer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(60)
        if self.error is not None:
            error, self.error = self.error, None
            raise error


def seq_of(m: Any) -> int:
    return int(dict(m.headers())["seq"])


def check_continuation(
    acked: list[tuple[str, int, int, int]],
    before: dict[tuple[str, int], list[int]],
    after: dict[tuple[str, int], list[int]],
) -> None:
    """Every acknowledged record was processed exactly once, before or after the cutover, in order."""
    by_part: dict[tuple[str, int], list[int]] = {}
    for t, p, _, seq in sorted(acked, key=lambda a: (a[0], a[1], a[2])):
        by_part.setdefault((t, p), []).append(seq)
    for tp, seqs in by_part.items():
        got = before.get(tp, []) + after.get(tp, [])
        assert got == seqs, (
            f"{tp}: {len(before.get(tp, []))} processed before and {len(after.get(tp, []))} after the "
            f"cutover, {len(seqs)} produced; "
            f"last before {before.get(tp, [None])[-1:]}, first after {after.get(tp, [None])[:1]}"
        )
