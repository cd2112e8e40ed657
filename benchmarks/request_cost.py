"""The broker's cost per request: requests/s and broker CPU microseconds per request, kafkite beside the
blackhole ceiling (a broker that acknowledges produce requests without storing), alternating run by run.

Scenarios (``--scenario``, repeatable; default: all):

  produce1      confluent-kafka, one record per request: batch.num.messages=1, linger.ms=0, acks=1,
                8 partitions, 100-byte records; requests counted from librdkafka's own statistics
  produce-raw   the same one-record Produce (v9, acks=1) sent by a minimal pipelined socket client, so the
                client's CPU barely counts on a 2-core machine
  metadata      Metadata (v12) for one 8-partition topic
  metadata-10k  Metadata (v12) for a 10,000-partition topic: latency of one request at a time
  heartbeat     Heartbeat (v4) of the one member of a classic group
  offsetcommit  OffsetCommit (v8) of one partition's offset, simple (no member)
  fetch-idle    Fetch (v12) long polls of 8 idle partitions, max.wait 5 ms, 8 connections
  fetch-1000    Fetch (v12) of 1,000 idle partitions, max.wait 0: full requests every time, and with an
                incremental fetch session (KIP-227) after the first

Broker CPU is the broker process's utime+stime (/proc/<pid>/stat) over the measured window, divided by the
requests answered in it. Figures: >= 40,000 one-record produce requests/s on one broker core, or <= 25 us of
broker CPU per request; Metadata of 10,000 partitions in <= 20 ms.

    .venv/bin/python benchmarks/request_cost.py --repeat 5
    .venv/bin/python benchmarks/request_cost.py --scenario produce1 --scenario metadata-10k --quick
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

import _common

from kafkite.bench.serve import ServedBroker, process_cpu_seconds
from kafkite.client import KafkaClient
from kafkite.protocol import framing
from kafkite.protocol.api_keys import ApiKey
from kafkite.protocol.messages import registry
from kafkite.protocol.records import build_batch

SCENARIOS = (
    "produce1",
    "produce-raw",
    "metadata",
    "metadata-10k",
    "heartbeat",
    "offsetcommit",
    "fetch-idle",
    "fetch-1000",
)
TOPIC = "cost"
BIG_TOPIC = "cost-10k"
WIDE_TOPIC = "cost-1000"

# The confluent-kafka producer runs in a process of its own: one record per request, as services that
# produce one record at a time with linger.ms=0 do.
PRODUCER = r"""
import json, sys, time
from confluent_kafka import Producer
bootstrap, topic, count, warmup = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
stats = []
p = Producer({"bootstrap.servers": bootstrap, "acks": "1", "batch.num.messages": 1, "linger.ms": 0,
              "queue.buffering.max.messages": 100000, "statistics.interval.ms": 100,
              "stats_cb": lambda s: stats.append(s)})
value = b"x" * 100
def produce_for(n=None, seconds=None):
    sent = 0
    end = time.monotonic() + (seconds or 0)
    while (n is not None and sent < n) or (seconds is not None and time.monotonic() < end):
        try:
            p.produce(topic, value, partition=sent % 8)
            sent += 1
        except BufferError:
            p.poll(0.001)
        if sent % 64 == 0:
            p.poll(0)
    p.flush(60)
    return sent
def produce_requests():
    stats.clear()
    p.poll(0.25)
    while not stats:
        p.poll(0.05)
    s = json.loads(stats[-1])
    return sum(b.get("req", {}).get("Produce", 0) for b in s["brokers"].values())
produce_for(seconds=warmup)
r0 = produce_requests()
print("go", flush=True)
sys.stdin.readline()
t0 = time.monotonic()
n = produce_for(n=count)
t1 = time.monotonic()
print("done", flush=True)
sys.stdin.readline()
r1 = produce_requests()
print(json.dumps({"messages": n, "requests": r1 - r0, "elapsed": t1 - t0}), flush=True)
"""


class Pipelined:
    """A blocking socket that keeps ``window`` copies of one encoded request in flight."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def _read_frames(self) -> int:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("broker closed the connection")
        self.buf += chunk
        n = 0
        pos = 0
        buf = self.buf
        while len(buf) - pos >= 4:
            size = struct.unpack_from(">i", buf, pos)[0]
            if len(buf) - pos - 4 < size:
                break
            pos += 4 + size
            n += 1
        del buf[:pos]
        return n

    def run(self, frame: bytes, count: int, window: int) -> None:
        sent = min(window, count)
        self.sock.sendall(frame * sent)
        done = 0
        while done < count:
            got = self._read_frames()
            done += got
            more = min(got, count - sent)
            if more > 0:
                self.sock.sendall(frame * more)
                sent += more

    def one(self, frame: bytes) -> bytes:
        self.sock.sendall(frame)
        while True:
            chunk = self.sock.recv(1 << 22)
            if not chunk:
                raise ConnectionError("broker closed the connection")
            self.buf += chunk
            if len(self.buf) >= 4:
                size = struct.unpack_from(">i", self.buf, 0)[0]
                if len(self.buf) - 4 >= size:
                    body = bytes(self.buf[4 : 4 + size])
                    del self.buf[: 4 + size]
                    return body

    def close(self) -> None:
        self.sock.close()


def encode(api_key: int, version: int, body: dict[str, Any]) -> bytes:
    return bytes(framing.encode_request(registry(), api_key, version, 1, "cost", body))


def produce_frame() -> bytes:
    records = build_batch([(None, b"x" * 100, [], int(time.time() * 1000))])
    body = {
        "transactional_id": None,
        "acks": 1,
        "timeout_ms": 30000,
        "topic_data": [{"name": TOPIC, "partition_data": [{"index": 0, "records": records}]}],
    }
    return encode(ApiKey.PRODUCE, 9, body)


def metadata_frame(topic: str) -> bytes:
    body = {
        "topics": [{"topic_id": uuid.UUID(int=0), "name": topic}],
        "allow_auto_topic_creation": False,
        "include_topic_authorized_operations": False,
    }
    return encode(ApiKey.METADATA, 12, body)


def fetch_frame(topic: str, partitions: int, max_wait: int, session_id: int = 0, epoch: int = -1) -> bytes:
    body = {
        "replica_id": -1,
        "max_wait_ms": max_wait,
        "min_bytes": 1,
        "max_bytes": 50 << 20,
        "isolation_level": 0,
        "session_id": session_id,
        "session_epoch": epoch,
        "topics": [
            {
                "topic": topic,
                "partitions": [
                    {
                        "partition": i,
                        "current_leader_epoch": -1,
                        "fetch_offset": 0,
                        "last_fetched_epoch": -1,
                        "log_start_offset": -1,
                        "partition_max_bytes": 1 << 20,
                    }
                    for i in range(partitions)
                ],
            }
        ]
        if partitions
        else [],
        "forgotten_topics_data": [],
        "rack_id": "",
    }
    return encode(ApiKey.FETCH, 12, body)


async def prepare(bootstrap: str, scenarios: list[str]) -> dict[str, Any]:
    """Topics, and a group with one member for the Heartbeat scenario."""
    out: dict[str, Any] = {}
    async with KafkaClient(bootstrap) as c:
        await c.create_topics([(TOPIC, 8, {})])
        if "metadata-10k" in scenarios:
            await c.create_topics([(BIG_TOPIC, 10_000, {})])
        if "fetch-1000" in scenarios:
            await c.create_topics([(WIDE_TOPIC, 1000, {})])
        if "heartbeat" in scenarios:
            coord = await c.coordinator("cost-group")
            protocols = [{"name": "range", "metadata": b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"}]
            join = {
                "group_id": "cost-group",
                "session_timeout_ms": 30000,
                "rebalance_timeout_ms": 30000,
                "member_id": "",
                "group_instance_id": None,
                "protocol_type": "consumer",
                "protocols": protocols,
                "reason": None,
            }
            r = await c.request(ApiKey.JOIN_GROUP, join, node=coord)
            if r["error_code"] == 79:  # MEMBER_ID_REQUIRED
                join["member_id"] = r["member_id"]
                r = await c.request(ApiKey.JOIN_GROUP, join, node=coord)
            member, gen = r["member_id"], r["generation_id"]
            sync = {
                "group_id": "cost-group",
                "generation_id": gen,
                "member_id": member,
                "group_instance_id": None,
                "protocol_type": "consumer",
                "protocol_name": "range",
                "assignments": [{"member_id": member, "assignment": b""}],
            }
            await c.request(ApiKey.SYNC_GROUP, sync, node=coord)
            out["heartbeat"] = {
                "group_id": "cost-group",
                "generation_id": gen,
                "member_id": member,
                "group_instance_id": None,
            }
    return out


def cpu(pid: int) -> float:
    v = process_cpu_seconds(pid)
    assert v is not None
    return v


def measure(pid: int, work: Callable[[], int]) -> dict[str, float]:
    c0, t0 = cpu(pid), time.monotonic()
    n = work()
    t1, c1 = time.monotonic(), cpu(pid)
    return {
        "requests": n,
        "elapsed_s": t1 - t0,
        "requests_per_s": n / (t1 - t0),
        "broker_cpu_s": c1 - c0,
        "broker_us_per_request": 1e6 * (c1 - c0) / max(n, 1),
        "broker_cpu_pct_of_one_core": 100 * (c1 - c0) / (t1 - t0),
    }


def run_produce1(broker: ServedBroker, count: int, warmup: float) -> dict[str, float]:
    assert broker.pid is not None
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(PRODUCER)
    try:
        proc = subprocess.Popen(
            [sys.executable, f.name, broker.bootstrap, TOPIC, str(count), str(warmup)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        if proc.stdout.readline().strip() != "go":
            raise SystemExit("the producer failed")
        c0, t0 = cpu(broker.pid), time.monotonic()
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.stdout.readline()
        t1, c1 = time.monotonic(), cpu(broker.pid)
        proc.stdin.write("\n")
        proc.stdin.flush()
        res = json.loads(proc.stdout.readline())
        proc.wait(30)
    finally:
        os.unlink(f.name)
    n = res["requests"]
    return {
        "requests": n,
        "messages": res["messages"],
        "elapsed_s": t1 - t0,
        "requests_per_s": n / (t1 - t0),
        "broker_cpu_s": c1 - c0,
        "broker_us_per_request": 1e6 * (c1 - c0) / max(n, 1),
        "broker_cpu_pct_of_one_core": 100 * (c1 - c0) / (t1 - t0),
    }


def run_pipelined(
    broker: ServedBroker, frame: bytes, count: int, window: int, connections: int = 1
) -> dict[str, float]:
    assert broker.pid is not None
    conns = [Pipelined(broker.host, broker.port) for _ in range(connections)]
    try:
        for c in conns:
            c.run(frame, min(200, count), window)  # warm-up
        if connections == 1:
            return measure(broker.pid, lambda: (conns[0].run(frame, count, window), count)[1])

        def many() -> int:
            # Every connection keeps one request in flight (long polls wait on the broker's side).
            for c in conns:
                c.sock.sendall(frame)
            done = 0
            sent = connections
            while done < count:
                for c in conns:
                    got = c._read_frames()
                    done += got
                    if got and sent < count:
                        c.sock.sendall(frame * got)
                        sent += got
            return done

        return measure(broker.pid, many)
    finally:
        for c in conns:
            c.close()


def run_latency(broker: ServedBroker, frame: bytes, count: int) -> dict[str, float]:
    assert broker.pid is not None
    conn = Pipelined(broker.host, broker.port)
    times: list[float] = []
    try:
        conn.one(frame)  # warm-up

        def work() -> int:
            for _ in range(count):
                t = time.perf_counter()
                conn.one(frame)
                times.append(time.perf_counter() - t)
            return count

        out = measure(broker.pid, work)
    finally:
        conn.close()
    out["latency_ms_median"] = 1000 * statistics.median(times)
    out["latency_ms_max"] = 1000 * max(times)
    return out


def run_fetch_sessions(broker: ServedBroker, count: int) -> dict[str, float]:
    """Fetch of 1,000 idle partitions: the full request every time, then within an incremental session."""
    assert broker.pid is not None
    full = fetch_frame(WIDE_TOPIC, 1000, 0)
    conn = Pipelined(broker.host, broker.port)
    try:
        a = measure(broker.pid, lambda: (conn.run(full, count, 1), count)[1])
        # Open a session (epoch 0), then send empty incremental requests (nothing changed) at epochs 1, 2...
        opened = conn.one(fetch_frame(WIDE_TOPIC, 1000, 0, 0, 0))
        _, resp = framing.decode_response(registry(), ApiKey.FETCH, 12, opened)
        session = resp["session_id"]
        frames = [fetch_frame(WIDE_TOPIC, 0, 0, session, e) for e in range(1, count + 1)]

        def incremental() -> int:
            for f in frames:
                conn.one(f)
            return count

        b = measure(broker.pid, incremental) if session else {}
    finally:
        conn.close()
    return {
        "full_us_per_request": a["broker_us_per_request"],
        "full_requests_per_s": a["requests_per_s"],
        "session_id": float(session),
        "incremental_us_per_request": b.get("broker_us_per_request", float("nan")),
        "incremental_requests_per_s": b.get("requests_per_s", float("nan")),
    }


def run_scenario(name: str, broker: ServedBroker, extra: dict[str, Any], args: Any) -> dict[str, float]:
    q = 5 if args.quick else 1
    if name == "produce1":
        return run_produce1(broker, 100_000 // q, args.warmup)
    if name == "produce-raw":
        return run_pipelined(broker, produce_frame(), 100_000 // q, 16)
    if name == "metadata":
        return run_pipelined(broker, metadata_frame(TOPIC), 50_000 // q, 16)
    if name == "metadata-10k":
        return run_latency(broker, metadata_frame(BIG_TOPIC), 50 // q)
    if name == "heartbeat":
        return run_pipelined(broker, encode(ApiKey.HEARTBEAT, 4, extra["heartbeat"]), 100_000 // q, 16)
    if name == "offsetcommit":
        body = {
            "group_id": "cost-commit",
            "generation_id_or_member_epoch": -1,
            "member_id": "",
            "group_instance_id": None,
            "topics": [
                {
                    "name": TOPIC,
                    "partitions": [
                        {
                            "partition_index": 0,
                            "committed_offset": 0,
                            "committed_leader_epoch": -1,
                            "committed_metadata": "",
                        }
                    ],
                }
            ],
        }
        return run_pipelined(broker, encode(ApiKey.OFFSET_COMMIT, 8, body), 50_000 // q, 16)
    if name == "fetch-idle":
        return run_pipelined(broker, fetch_frame(TOPIC, 8, 5), 20_000 // q, 1, connections=8)
    if name == "fetch-1000":
        return run_fetch_sessions(broker, 2_000 // q)
    raise SystemExit(f"unknown scenario {name}")


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--scenario", action="append", choices=SCENARIOS, help="(repeatable; default: all)")
    ap.add_argument("--no-ceiling", action="store_true", help="kafkite only, no blackhole broker")
    args = ap.parse_args()
    scenarios = args.scenario or list(SCENARIOS)
    brokers = [("kafkite", list(args.override))]
    if not args.no_ceiling:
        brokers.append(("ceiling (blackhole)", [*args.override, "blackhole=true"]))
    runs: dict[str, dict[str, list[dict[str, float]]]] = {s: {b: [] for b, _ in brokers} for s in scenarios}
    for rep in range(args.repeat):
        order = brokers if rep % 2 == 0 else brokers[::-1]
        for label, overrides in order:
            for s in scenarios:
                if label != "kafkite" and s not in ("produce1", "produce-raw"):
                    continue  # the blackhole ceiling differs from kafkite only in produce
                with ServedBroker(overrides, label=label) as broker:
                    extra = asyncio.run(prepare(broker.bootstrap, [s]))
                    load0 = os.getloadavg()[0]
                    r = run_scenario(s, broker, extra, args)
                    r["load_before"], r["load_after"] = load0, os.getloadavg()[0]
                runs[s][label].append(r)
                if not args.quiet:
                    shown = {k: round(v, 1) for k, v in r.items()}
                    print(f"run {rep + 1} {s} {label}: {shown}", flush=True)
    summary: dict[str, Any] = {}
    print()
    print(f"{'scenario':<14} {'broker':<20} {'figure':<28} median (min - max)")
    for s in scenarios:
        for label, _ in brokers:
            rs = runs[s][label]
            if not rs:
                continue
            for key in rs[0]:
                if key in ("load_before", "load_after", "requests", "messages", "session_id"):
                    continue
                vals = [r[key] for r in rs]
                spread = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
                summary.setdefault(s, {}).setdefault(label, {})[key] = spread
                digits = 2 if max(vals) < 100 else 0
                print(f"{s:<14} {label:<20} {key:<28} {_common.figure(spread, digits)}")
    print("load average now:", [round(x, 2) for x in os.getloadavg()])
    _common.save("request_cost", args, {"summary": summary, "runs": runs})


if __name__ == "__main__":
    main()
