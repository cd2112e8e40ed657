"""Produce N messages with confluent-kafka (acks=all, one partition) and consume them back: MB/s each way.

Starts its own broker (data on disk in a temporary directory) unless --bootstrap is given, and measures the
blackhole ceiling (a broker that acknowledges without storing) in the same run unless --no-ceiling.

    .venv/bin/python benchmarks/produce_consume.py --messages 1000000 --size 1024
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def broker(overrides: list[str]) -> Iterator[str]:
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="kafkite-bench-") as data:
        cmd = [
            sys.executable,
            "-m",
            "kafkite.cli",
            "serve",
            "--override",
            f"listeners=PLAINTEXT://127.0.0.1:{port}",
            "--override",
            f"log.dirs={data}",
            "--override",
            "log.level=WARNING",
        ]
        for o in overrides:
            cmd += ["--override", o]
        proc = subprocess.Popen(cmd)
        try:
            deadline = time.time() + 20
            while time.time() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            yield f"127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(30)


def produce(bootstrap: str, topic: str, n: int, size: int, acks: str) -> float:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result()
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": acks,
            "linger.ms": 5,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 2_000_000,
            "compression.type": "none",
        }
    )
    payload = os.urandom(size)
    errors = 0

    def cb(err: object, msg: object) -> None:
        nonlocal errors
        if err is not None:
            errors += 1

    t0 = time.perf_counter()
    for _ in range(n):
        while True:
            try:
                p.produce(topic, payload, on_delivery=cb)
                break
            except BufferError:
                p.poll(0.01)
    p.flush(120)
    elapsed = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"{errors} delivery errors")
    return elapsed


def consume(bootstrap: str, topic: str, n: int) -> float:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench",
            "enable.auto.commit": False,
            "fetch.max.bytes": 52428800,
            "max.partition.fetch.bytes": 52428800,
            "fetch.wait.max.ms": 100,
            "queued.max.messages.kbytes": 1048576,
        }
    )
    c.assign([TopicPartition(topic, 0, 0)])
    got = 0
    t0 = time.perf_counter()
    while got < n:
        msgs = c.consume(10000, 5.0)
        if not msgs:
            break
        got += sum(1 for m in msgs if m.error() is None)
    elapsed = time.perf_counter() - t0
    c.close()
    if got < n:
        raise SystemExit(f"consumed {got} of {n}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--acks", default="all")
    ap.add_argument("--bootstrap", help="use a running broker instead of starting one")
    ap.add_argument("--no-ceiling", action="store_true", help="skip the blackhole ceiling run")
    ap.add_argument("--override", action="append", default=[], help="broker override for the measured run")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    mb = args.messages * args.size / 1e6
    results: dict[str, float] = {}
    if not args.no_ceiling and not args.bootstrap:
        with broker(["blackhole=true"]) as bs:
            t = produce(bs, "bench", args.messages, args.size, args.acks)
            results["ceiling_produce_MBps"] = mb / t
    ctx = nullcontext(args.bootstrap) if args.bootstrap else broker(args.override)
    with ctx as bs:
        topic = f"bench-{int(time.time())}"
        t = produce(bs, topic, args.messages, args.size, args.acks)
        results["produce_MBps"] = mb / t
        results["produce_msgs_per_s"] = args.messages / t
        t = consume(bs, topic, args.messages)
        results["consume_MBps"] = mb / t
        results["consume_msgs_per_s"] = args.messages / t
    if "ceiling_produce_MBps" in results:
        results["produce_vs_ceiling"] = results["produce_MBps"] / results["ceiling_produce_MBps"]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"{args.messages} messages of {args.size} B, acks={args.acks}, one partition")
        for k, v in results.items():
            print(f"  {k:24s} {v:12.2f}")


if __name__ == "__main__":
    main()
