"""An attacker's fuzzer, written apart from the broker's own: captured client frames, mutated, and CRC-valid
corrupt record batches, sent at a running broker while a second client measures its round trips.

The frames are captured by a proxy between the broker and real clients (confluent-kafka producing in every
codec, a consumer group committing, the admin client, kafka-python), then mutated (bit flips, garbage,
truncation, lying size prefixes, spliced spans, a Produce's batch swapped for a damaged one) and sent on
connections of their own. Afterwards the broker must be up, the second client must have been served
throughout, confluent-kafka and kafka-python consumers (in a child process: a crash there must not hide
behind this one) must read every partition of every topic from its start to its end, and a restart must
succeed with the same data.

Short by default (3,000 frames and 600 batches, under a minute); ``KAFKITE_FUZZ_FRAMES=N`` (and
``KAFKITE_FUZZ_BATCHES=M``) or ``KAFKITE_SLOW=1`` (200,000 and 20,000) run long. The counts are printed.
"""

from __future__ import annotations

import collections
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from helpers import SLOW, BrokerFactory, RawClient, create_topic
from hostile_inputs import FrameRecorder, corrupt_batch, mutate_frame

from kafkite.protocol import framing
from kafkite.protocol.api_keys import ApiKey
from kafkite.protocol.messages import registry

FRAMES = int(os.environ.get("KAFKITE_FUZZ_FRAMES", "200000" if SLOW else "3000"))
BATCHES = int(os.environ.get("KAFKITE_FUZZ_BATCHES", "20000" if SLOW else "600"))
SEED = int(os.environ.get("KAFKITE_FUZZ_SEED", "2103"))
TOPICS = {
    "fuzz-plain": {},
    "fuzz-compact": {"cleanup.policy": "compact"},
    "fuzz-zstd": {"compression.type": "zstd"},
}

pytestmark = pytest.mark.timeout(max(600, FRAMES // 50 + BATCHES // 5))


def capture(broker_factory: BrokerFactory) -> list[bytes]:
    """Request frames of real clients doing ordinary work, through a recording proxy in front of a broker
    of their own (advertised at the proxy, so that every connection goes through it)."""
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

    rec = FrameRecorder()
    b = broker_factory(f"advertised.listeners=PLAINTEXT://127.0.0.1:{rec.port}")
    rec.target = ("127.0.0.1", b.port)
    for name, config in TOPICS.items():
        create_topic(b.bootstrap, name, config=config)
    try:
        for codec in ("none", "gzip", "snappy", "lz4", "zstd"):
            p = Producer({"bootstrap.servers": rec.bootstrap, "compression.type": codec, "linger.ms": 5})
            for topic in TOPICS:
                for i in range(30):
                    p.produce(
                        topic, b"value %d %s" % (i, codec.encode()), b"key %d" % i, headers=[("h", b"1")]
                    )
            assert p.flush(30) == 0
        admin = AdminClient({"bootstrap.servers": rec.bootstrap})
        admin.create_topics([NewTopic("fuzz-made", 2, 1)])["fuzz-made"].result(10)
        admin.describe_configs([ConfigResource("topic", "fuzz-plain")])
        admin.list_groups(timeout=10)
        c = Consumer(
            {
                "bootstrap.servers": rec.bootstrap,
                "group.id": "fuzz-group",
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 6000,
            }
        )
        c.subscribe(list(TOPICS))
        got = 0
        deadline = time.monotonic() + 30
        while got < 50 and time.monotonic() < deadline:
            got += len(c.consume(100, 0.5))
        c.commit(asynchronous=False)
        c.close()
        from kafka import KafkaConsumer, KafkaProducer

        kp = KafkaProducer(bootstrap_servers=rec.bootstrap, compression_type="gzip", acks="all")
        for i in range(20):
            kp.send("fuzz-plain", key=b"kp%d" % i, value=b"kafka-python %d" % i)
        kp.flush(10)
        kp.close()
        kc = KafkaConsumer(
            "fuzz-plain",
            bootstrap_servers=rec.bootstrap,
            group_id="fuzz-kp",
            consumer_timeout_ms=3000,
            auto_offset_reset="earliest",
        )
        for _ in kc:
            pass
        kc.close()
        time.sleep(0.5)
    finally:
        rec.close()
        b.stop()
    assert len(rec.frames) > 50, len(rec.frames)
    return rec.frames


PROBE_ID = 0x7FFF_FFF0
# Requests that may rightly hold the connection's answers back for as long as they ask (a long poll, a
# rebalance, a transaction to finish): their probe may go unanswered for a while; any other must not.
WAITING_APIS = {
    ApiKey.FETCH,
    ApiKey.JOIN_GROUP,
    ApiKey.SYNC_GROUP,
    ApiKey.INIT_PRODUCER_ID,
    ApiKey.ADD_PARTITIONS_TO_TXN,
    ApiKey.ADD_OFFSETS_TO_TXN,
    ApiKey.END_TXN,
}
PROBE = framing.encode_request(registry(), ApiKey.API_VERSIONS, 0, PROBE_ID, "probe", {})


class Sender:
    """Sends each mutated frame on a connection followed by an ApiVersions probe and waits for the probe's
    answer or for the broker to close the connection (a hang fails the test). A frame shorter than its size
    prefix is left hanging: the connection is mostly closed at once, sometimes parked open for the broker's
    socket.request.timeout.ms to close."""

    def __init__(self, port: int, rnd: random.Random) -> None:
        self.port = port
        self.rnd = rnd
        self.sock: socket.socket | None = None
        self.parked: list[socket.socket] = []
        self.outcomes: collections.Counter[str] = collections.Counter()

    def _connect(self) -> socket.socket:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return self.sock

    def send(self, data: bytes) -> None:
        (declared,) = struct.unpack_from(">i", data) if len(data) >= 4 else (-1,)
        s = self._connect()
        try:
            if declared < 0 or len(data) - 4 < declared or declared > (100 << 20):
                s.sendall(data)
                if self.rnd.random() < 0.05 and len(self.parked) < 40:
                    self.parked.append(s)
                    self.outcomes["incomplete, left open"] += 1
                else:
                    s.close()
                    self.outcomes["incomplete, closed"] += 1
                self.sock = None
                return
            s.sendall(data + PROBE)
            (key,) = struct.unpack_from(">h", data, 4) if len(data) >= 6 else (-1,)
            self.outcomes[self._await_probe(s, key)] += 1
        except OSError:
            self.outcomes["closed by the broker"] += 1
            self.close()

    def _await_probe(self, s: socket.socket, key: int) -> str:
        buf = bytearray()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            while len(buf) >= 8:
                (size,) = struct.unpack_from(">i", buf)
                if len(buf) < 4 + size:
                    break
                (cid,) = struct.unpack_from(">i", buf, 4)
                del buf[: 4 + size]
                if cid == PROBE_ID:
                    return "answered"
            try:
                data = s.recv(1 << 16)
            except TimeoutError:
                continue
            if not data:
                self.close()
                return "closed by the broker"
            buf += data
        if key in WAITING_APIS:
            self.close()
            return "still waiting after 10 s (a long poll or rebalance it asked for)"
        raise AssertionError(
            f"API {key}: the broker neither answered the probe nor closed the connection in 10 s"
        )

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def close_parked(self) -> int:
        """Close the parked connections; how many the broker had closed already."""
        closed = 0
        for s in self.parked:
            s.settimeout(0.1)
            try:
                closed += s.recv(1) == b""
            except OSError:
                closed += 1
            s.close()
        return closed


class Witness(threading.Thread):
    def __init__(self, bootstrap: str) -> None:
        super().__init__(daemon=True)
        self.client = RawClient.to(bootstrap, timeout=30)
        self.worst = 0.0
        self.count = 0
        self.error: BaseException | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            t = time.monotonic()
            try:
                md = self.client.request(ApiKey.METADATA, 12, {"topics": [{"name": "fuzz-plain"}]})
                assert md["topics"][0]["error_code"] == 0
            except BaseException as e:  # reported by the test
                self.error = e
                return
            self.worst = max(self.worst, time.monotonic() - t)
            self.count += 1
            time.sleep(0.02)


READ_ALL = r"""
import json, sys
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer, TopicPartition as KTP

bootstrap = sys.argv[1]
md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30)
parts = [(t, p) for t, m in md.topics.items() if not t.startswith("__") for p in m.partitions]
c = Consumer({"bootstrap.servers": bootstrap, "group.id": "fuzz-check", "enable.auto.commit": False})
ends = {}
for t, p in parts:
    low, high = c.get_watermark_offsets(TopicPartition(t, p), timeout=30)
    if high > low:
        ends[(t, p)] = (low, high)
c.assign([TopicPartition(t, p, low) for (t, p), (low, high) in ends.items()])
seen = {k: 0 for k in ends}
last = {k: -1 for k in ends}
errors = []
import time
deadline = time.monotonic() + 120
while any(last[k] < ends[k][1] - 1 for k in ends) and time.monotonic() < deadline:
    for m in c.consume(10000, 1.0):
        if m.error():
            errors.append(str(m.error()))
            continue
        k = (m.topic(), m.partition())
        seen[k] += 1
        last[k] = m.offset()
c.close()
kc = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=5000)
kc.assign([KTP(t, p) for (t, p) in ends])
for (t, p), (low, high) in ends.items():
    kc.seek(KTP(t, p), low)
kseen = {k: 0 for k in ends}
klast = {k: -1 for k in ends}
for m in kc:
    k = (m.topic, m.partition)
    kseen[k] += 1
    klast[k] = m.offset
    if all(klast[x] >= ends[x][1] - 1 for x in ends):
        break
kc.close()
print(json.dumps({
    "partitions": len(ends),
    "records": sum(seen.values()),
    "confluent_short": [f"{t}-{p}" for (t, p) in ends if last[(t, p)] < ends[(t, p)][1] - 1],
    "kafka_python_short": [f"{t}-{p}" for (t, p) in ends if klast[(t, p)] < ends[(t, p)][1] - 1],
    "errors": errors[:5],
}))
"""


def read_everything(bootstrap: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", READ_ALL, bootstrap], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, f"the consumers failed ({out.returncode}):\n{out.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def produce_raw(c: RawClient, topic: str, batch: bytes) -> int:
    resp = c.request(
        ApiKey.PRODUCE,
        9,
        {
            "transactional_id": None,
            "acks": -1,
            "timeout_ms": 5000,
            "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": batch}]}],
        },
    )
    return int(resp["responses"][0]["partition_responses"][0]["error_code"])


@pytest.mark.slow
def test_fuzz_captured_frames_and_crc_valid_corrupt_batches(broker_factory: BrokerFactory) -> None:
    b = broker_factory(
        "socket.request.timeout.ms=2000", "connections.max.idle.ms=60000", "auto.create.topics.max.rate=20"
    )
    for name, config in TOPICS.items():
        create_topic(b.bootstrap, name, config=config)
    frames = capture(broker_factory)
    rnd = random.Random(SEED)
    now = int(time.time() * 1000)
    kinds: collections.Counter[str] = collections.Counter()
    codes: collections.Counter[str] = collections.Counter()
    witness = Witness(b.bootstrap)
    witness.start()
    started = time.monotonic()
    sender = Sender(b.port, rnd)
    try:
        for i in range(FRAMES):
            kind, data = mutate_frame(rnd, rnd.choice(frames), lambda: corrupt_batch(rnd, now)[1])
            kinds[kind] += 1
            sender.send(data)
            if i % 500 == 0:
                assert b.running, "the broker died"
        sender.close()
        time.sleep(2.5)  # socket.request.timeout.ms: the parked connections are closed by now
        parked_closed = sender.close_parked()
        with RawClient.to(b.bootstrap, timeout=30) as c:
            for _ in range(BATCHES):
                what, batch = corrupt_batch(rnd, int(time.time() * 1000))
                code = produce_raw(c, rnd.choice(list(TOPICS)), batch)
                codes[f"{what.split('/')[0]}:{code}"] += 1
    finally:
        witness.stopping.set()
        witness.join(30)
    elapsed = time.monotonic() - started
    assert b.running
    assert parked_closed == len(sender.parked)
    assert witness.error is None, witness.error
    assert witness.worst < 2.0, f"a second client waited {witness.worst:.2f} s"
    accepted = sum(n for k, n in codes.items() if k.endswith(":0"))
    report = {
        "frames": FRAMES,
        "batches": BATCHES,
        "seconds": round(elapsed, 1),
        "captured": len(frames),
        "mutations": dict(kinds),
        "frame_outcomes": dict(sender.outcomes),
        "parked_closed_by_broker": f"{parked_closed} of {len(sender.parked)}",
        "batch_outcomes": dict(sorted(codes.items())),
        "batches_accepted": accepted,
        "witness_round_trips": witness.count,
        "witness_worst_ms": round(witness.worst * 1000, 1),
    }
    read = read_everything(b.bootstrap)
    report["read_back"] = read
    print("fuzz report:", json.dumps(report))
    assert not read["confluent_short"] and not read["kafka_python_short"] and not read["errors"], read
    b.restart()
    again = read_everything(b.bootstrap)
    assert again["records"] == read["records"] and not again["confluent_short"], again
