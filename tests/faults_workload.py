"""Workloads of real clients (confluent-kafka/librdkafka) that record a history while faults are injected,
probes that time every request, and the final reads the checkers compare the history with.

Every client runs in a thread that entered the ``client`` namespace first (``faults_net.thread_in_ns``), so
librdkafka's own threads and sockets live there too.

- ``idempotent_producer``: acks=all, enable.idempotence; values ``<producer>-<seq>``; a producer that hits a
  fatal error is replaced by a new one (a new producer name).
- ``transactional_producer``: transactions of four records over the partitions of a topic, every fifth one
  aborted on purpose; the outcome of each is commit, abort or unknown (the client could not tell).
- ``group_member``: a consumer of a group that commits its positions synchronously twice a second and reads
  its committed offsets back at every assignment (with the generation the assignment came with).
- ``prober``: raw requests (Metadata, Produce, Fetch) to one broker, one at a time, each with a deadline.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from faults_history import History
from faults_net import in_ns, thread_in_ns
from helpers import RawClient

from kafkite.protocol.records import build_batch

PROBE_DEADLINE_S = 25.0
TXN_SIZE = 4


def parse_group_metadata(data: bytes) -> tuple[int, str]:
    """(generation, member id) from librdkafka's serialized consumer group metadata ("CGMDv2:")."""
    magic = b"CGMDv2:"
    if not data.startswith(magic):
        return -1, ""
    raw = data[len(magic) : len(magic) + 4]
    little, big = struct.unpack("<i", raw)[0], struct.unpack(">i", raw)[0]
    generation = little if -1 <= little < 1 << 20 else big
    rest = data[len(magic) + 4 :].split(b"\x00")
    member = rest[1].decode(errors="replace") if len(rest) > 1 else ""
    return generation, member


def client_debug(name: str) -> dict[str, Any]:
    """librdkafka debug contexts and a logger writing them to ``<dir>/<name>.log`` when
    ``KAFKITE_FAULTS_CLIENT_DEBUG=dir[:contexts]`` is set (contexts: ``eos,msg`` unless given)."""
    spec = os.environ.get("KAFKITE_FAULTS_CLIENT_DEBUG", "")
    if not spec:
        return {}
    where, _, contexts = spec.partition(":")
    logger = logging.getLogger(f"faults.client.{name}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = logging.FileHandler(os.path.join(where, f"{name}.log"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)
    return {"debug": contexts or "eos,msg", "logger": logger}


class Workloads:
    """The threads of one run; ``stop()`` ends them and waits (a thread that does not end is a hang)."""

    def __init__(self, client_ns: str, bootstrap: str, history: History) -> None:
        self.ns = client_ns
        self.bootstrap = bootstrap
        self.h = history
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.errors: list[str] = []

    def _spawn(self, name: str, fn: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                fn()
            except Exception as e:  # a workload bug, not a broker anomaly: fail the run loudly
                self.errors.append(f"{name}: {e!r}")
                raise

        self.threads.append(thread_in_ns(self.ns, guarded, name))

    def stop(self, timeout: float = 120.0) -> list[str]:
        """Stop every workload; the names of those still running after ``timeout``."""
        self.stopping.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))
        stuck = [t.name for t in self.threads if t.is_alive()]
        for name in stuck:
            self.h.add("stuck", workload=name)
        return stuck

    # producers ---------------------------------------------------------------------------------------------

    def idempotent_producer(self, name: str, topic: str, rate: float = 100.0) -> None:
        self._spawn(f"producer-{name}", lambda: self._idempotent(name, topic, rate))

    def _idempotent(self, name: str, topic: str, rate: float) -> None:
        from confluent_kafka import Producer

        incarnation = 0
        while not self.stopping.is_set():
            pname = f"{name}.{incarnation}"
            incarnation += 1
            fatal = threading.Event()

            def on_error(err: Any, fatal: threading.Event = fatal, pname: str = pname) -> None:
                if err.fatal():
                    self.h.add("fatal", producer=pname, error=str(err))
                    fatal.set()

            conf: dict[str, Any] = {
                "bootstrap.servers": self.bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": 300000,  # none times out in the queue (see faults.md)
                "request.timeout.ms": 10000,
                "error_cb": on_error,
            }
            conf.update(client_debug(pname))
            producer = Producer(conf)

            def report(err: Any, msg: Any) -> None:
                value = msg.value().decode()
                if err is None:
                    self.h.add("ack", value=value, partition=msg.partition(), offset=msg.offset())
                else:
                    self.h.add("fail", value=value, error=str(err))

            seq = 0
            while not self.stopping.is_set() and not fatal.is_set():
                value = f"{pname}-{seq}"
                self.h.add("send", producer=pname, seq=seq, value=value)
                while True:
                    try:
                        producer.produce(topic, value.encode(), str(seq).encode(), on_delivery=report)
                        break
                    except BufferError:
                        producer.poll(0.1)
                seq += 1
                producer.poll(0)
                time.sleep(1 / rate)
            left = producer.flush(90)
            if left:
                self.h.add("unreported", producer=pname, messages=left)

    def transactional_producer(self, name: str, topic: str, partitions: int) -> None:
        self._spawn(f"txn-{name}", lambda: self._transactional(name, topic, partitions))

    def _transactional(self, tid: str, topic: str, partitions: int) -> None:
        from confluent_kafka import KafkaException, Producer

        producer: Any = None
        n = 0
        while not self.stopping.is_set():
            if producer is None:
                producer = Producer(
                    {
                        "bootstrap.servers": self.bootstrap,
                        "transactional.id": tid,
                        "transaction.timeout.ms": 15000,
                        "message.timeout.ms": 15000,
                        "request.timeout.ms": 10000,
                        "linger.ms": 5,
                    }
                )
                try:
                    producer.init_transactions(30)
                except KafkaException as e:
                    self.h.add("txn-init-failed", producer=tid, error=str(e))
                    producer = None
                    time.sleep(0.5)
                    continue
            txn = f"{tid}-{n}"
            n += 1
            values = [f"{txn}-{j}" for j in range(TXN_SIZE)]
            abort = n % 5 == 0
            outcome = "unknown"
            t_invoke = self.h.now()
            try:
                producer.begin_transaction()
                for j, v in enumerate(values):
                    producer.produce(topic, v.encode(), partition=j % partitions)
                if abort:
                    producer.abort_transaction(30)
                    outcome = "abort"
                else:
                    producer.commit_transaction(30)
                    outcome = "commit"
            except KafkaException as e:
                err = e.args[0]
                self.h.add("txn-error", txn=txn, error=str(err))
                if err.txn_requires_abort():
                    try:
                        producer.abort_transaction(30)
                        outcome = "abort"
                    except KafkaException:
                        producer = None
                elif err.retriable() and not abort:
                    try:
                        producer.commit_transaction(30)
                        outcome = "commit"
                    except KafkaException:
                        producer = None
                else:
                    producer = None
            self.h.add("txn", txn=txn, values=values, outcome=outcome, t_invoke=t_invoke)
            time.sleep(0.02)

    # consumers ---------------------------------------------------------------------------------------------

    def group_member(self, group: str, topic: str, index: int) -> None:
        self._spawn(f"member-{index}", lambda: self._member(group, topic, index))

    def _member(self, group: str, topic: str, index: int) -> None:
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        h = self.h
        positions: dict[int, int] = {}
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 3000,
                "heartbeat.interval.ms": 500,
                "max.poll.interval.ms": 60000,
                "client.id": f"member-{index}",
            }
        )

        def commit(reason: str) -> None:
            if not positions:
                return
            generation, member = parse_group_metadata(consumer.consumer_group_metadata())
            offsets = dict(positions)
            t_invoke = h.now()
            try:
                res = consumer.commit(
                    offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False
                )
                ok = all(tp.error is None for tp in res or [])
                error = "" if ok else str([tp.error for tp in res or [] if tp.error is not None][:1])
            except KafkaException as e:
                ok, error = False, str(e)
            h.add(
                "commit",
                group=group,
                member=member,
                generation=generation,
                offsets=offsets,
                ok=ok,
                error=error,
                t_invoke=t_invoke,
                reason=reason,
            )

        def on_assign(c: Any, parts: list[Any]) -> None:
            generation, member = parse_group_metadata(c.consumer_group_metadata())
            h.add(
                "assign",
                group=group,
                member=member,
                generation=generation,
                partitions=sorted(tp.partition for tp in parts),
            )
            if not parts:
                return
            t_invoke = h.now()
            try:
                got = c.committed(parts, timeout=15)
            except KafkaException as e:
                h.add("committed-failed", group=group, error=str(e), t_invoke=t_invoke)
                return
            h.add(
                "committed",
                group=group,
                member=member,
                offsets={tp.partition: tp.offset for tp in got if tp.error is None},
                t_invoke=t_invoke,
            )

        def on_revoke(c: Any, parts: list[Any]) -> None:
            commit("revoke")
            for tp in parts:
                positions.pop(tp.partition, None)
            generation, member = parse_group_metadata(c.consumer_group_metadata())
            h.add(
                "revoke",
                group=group,
                member=member,
                generation=generation,
                partitions=[tp.partition for tp in parts],
            )

        def on_lost(c: Any, parts: list[Any]) -> None:
            for tp in parts:
                positions.pop(tp.partition, None)
            h.add("lost-assignment", group=group, partitions=[tp.partition for tp in parts])

        consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
        last = time.monotonic()
        try:
            while not self.stopping.is_set():
                for m in consumer.consume(200, 0.2):
                    if m.error() is None:
                        positions[m.partition()] = m.offset() + 1
                if time.monotonic() - last >= 0.5:
                    commit("periodic")
                    last = time.monotonic()
        finally:
            with contextlib.suppress(Exception):
                consumer.close()

    # probes ------------------------------------------------------------------------------------------------

    def prober(self, host: str, bootstrap: str, topic: str) -> None:
        self._spawn(f"probe-{host}", lambda: self._probe(host, bootstrap, topic))

    def _probe(self, host: str, bootstrap: str, topic: str) -> None:
        apis = ["metadata", "produce", "fetch"]
        i = 0
        while not self.stopping.is_set():
            api = apis[i % len(apis)]
            i += 1
            t_start = self.h.now()
            result, detail = "ok", ""
            try:
                with RawClient.to(bootstrap, timeout=PROBE_DEADLINE_S) as c:
                    detail = str(_probe_request(c, api, topic))
            except TimeoutError:
                result = "timeout"
            except (OSError, ConnectionError, struct.error) as e:
                result, detail = "error", type(e).__name__
            self.h.add(
                "probe", host=host, api=api, result=result, detail=detail, t_start=t_start, t_end=self.h.now()
            )
            time.sleep(0.2)


def _probe_request(c: RawClient, api: str, topic: str) -> int:
    """Send one request; its error code (0 for Metadata)."""
    if api == "metadata":
        c.request(
            3,
            12,
            {
                "topics": None,
                "allow_auto_topic_creation": False,
                "include_topic_authorized_operations": False,
            },
        )
        return 0
    if api == "produce":
        resp = c.request(
            0,
            9,
            {
                "transactional_id": None,
                "acks": -1,
                "timeout_ms": 5000,
                "topic_data": [
                    {
                        "name": topic,
                        "partition_data": [
                            {
                                "index": 0,
                                "records": build_batch([(None, b"probe", [], int(time.time() * 1000))]),
                            }
                        ],
                    }
                ],
            },
        )
        return int(resp["responses"][0]["partition_responses"][0]["error_code"])
    resp = c.request(
        1,
        12,
        {
            "max_wait_ms": 500,
            "min_bytes": 1,
            "max_bytes": 1 << 16,
            "isolation_level": 0,
            "session_id": 0,
            "topics": [
                {
                    "topic": topic,
                    "partitions": [{"partition": 0, "fetch_offset": 0, "partition_max_bytes": 1 << 16}],
                }
            ],
            "forgotten_topics_data": [],
            "rack_id": "",
        },
    )
    return int(resp["responses"][0]["partitions"][0]["error_code"])


# ------------------------------------------------------------------------------------------- final reads


class FinalRead(dict[int, list[tuple[int, bytes]]]):
    """Records by partition; ``stuck``: partitions whose end the reader never reached (for read_committed,
    a transaction that never ended holds the last stable offset back)."""

    stuck: list[int]


def read_all(ns: str, bootstrap: str, topic: str, *, committed: bool, timeout: float = 180.0) -> FinalRead:
    """Every record of ``topic`` from the start to its end (read_committed or not), by partition; raises on
    any error the consumer reports (a corrupt batch among them)."""

    def run() -> FinalRead:
        from confluent_kafka import Consumer, KafkaError, TopicPartition

        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "faults-final-read",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed" if committed else "read_uncommitted",
                "check.crcs": True,
            }
        )
        try:
            meta = consumer.list_topics(topic, timeout=30).topics[topic]
            parts = sorted(meta.partitions)
            out = FinalRead({p: [] for p in parts})
            out.stuck = []
            consumer.assign([TopicPartition(topic, p, 0) for p in parts])
            pending = set(parts)
            deadline = time.monotonic() + timeout
            while pending:
                if time.monotonic() > deadline:
                    out.stuck = sorted(pending)
                    break
                for m in consumer.consume(1000, 0.5):
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            pending.discard(m.partition())
                            continue
                        raise RuntimeError(f"final read of {topic}: {err}")
                    out[m.partition()].append((m.offset(), m.value()))
            return out
        finally:
            consumer.close()

    return in_ns(ns, run, timeout=timeout + 60)


def committed_offsets(ns: str, bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    def run() -> dict[int, int]:
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
        try:
            got = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)
            return {tp.partition: tp.offset for tp in got}
        finally:
            consumer.close()

    return in_ns(ns, run, timeout=90)


def create_topics(ns: str, bootstrap: str, topics: dict[str, int]) -> None:
    def run() -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": bootstrap})
        fs = admin.create_topics([NewTopic(t, n, 1) for t, n in topics.items()], operation_timeout=20)
        for f in fs.values():
            f.result(timeout=30)

    in_ns(ns, run, timeout=90)


def read_headers(ns: str, bootstrap: str, topic: str, partitions: int) -> dict[int, list[list[int]]]:
    """Every stored batch's header (base offset, last offset, producer id, epoch, base sequence), by
    partition: the evidence behind a duplicate."""
    from kafkite.protocol import records

    def run() -> dict[int, list[list[int]]]:
        out: dict[int, list[list[int]]] = {}
        for p in range(partitions):
            rows: list[list[int]] = []
            offset = 0
            for b in bootstrap.split(","):
                try:
                    with RawClient.to(b, timeout=30) as c:
                        while True:
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
                                                {
                                                    "partition": p,
                                                    "fetch_offset": offset,
                                                    "partition_max_bytes": 1 << 24,
                                                }
                                            ],
                                        }
                                    ],
                                    "forgotten_topics_data": [],
                                    "rack_id": "",
                                },
                            )
                            part = resp["responses"][0]["partitions"][0]
                            if part["error_code"] != 0:
                                break
                            data = bytes(part["records"] or b"")
                            if not data:
                                break
                            for _, h in records.iter_headers(data):
                                rows.append(
                                    [
                                        h.base_offset,
                                        h.last_offset,
                                        h.producer_id,
                                        h.producer_epoch,
                                        h.base_sequence,
                                    ]
                                )
                                offset = h.last_offset + 1
                except (OSError, ConnectionError):
                    continue
                if rows:
                    break
            out[p] = rows
        return out

    return in_ns(ns, run, timeout=120)
