"""Migration mirror: throughput of a copy and end-to-end lag of a following mirror (two kafkite brokers).

Figures:

- **throughput**: MB/s of record payload (1 KiB values, 6 partitions) copied by ``kafkite migrate mirror``
  from a source already holding the records, at least once and exactly once (``--exactly-once``: target
  transactions every 100 ms carrying the offset syncs). The source is filled by confluent-kafka (batches as
  librdkafka makes them); the copy is timed from its first fetch to the last write acknowledged (or
  committed), in this process, with the CPU time it used.
- **lag**: a confluent-kafka producer writes a steady 5,000 msgs/s (1 KiB, 6 partitions) to the source while
  ``kafkite migrate mirror --follow`` runs as its own process; a confluent-kafka consumer of the target
  (read_committed) takes, for every message, its arrival time minus the timestamp the producer gave it: the
  end-to-end mirror lag (producer -> source -> mirror -> target -> consumer), p50/p99/p99.9.

    .venv/bin/python benchmarks/mirror.py                     # both figures, both delivery modes
    .venv/bin/python benchmarks/mirror.py --quick --repeat 1
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

import _common

from kafkite.bench.serve import ServedBroker, free_port, process_cpu_seconds
from kafkite.client import KafkaClient
from kafkite.migrate.mirror import Mirror, MirrorOptions

PARTITIONS = 6
SIZE = 1024


def fill(bootstrap: str, topic: str, count: int) -> float:
    """``count`` 1 KiB records over the partitions of ``topic`` with confluent-kafka; seconds taken."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "acks": "all",
            "queue.buffering.max.kbytes": 1 << 20,
        }
    )
    value = os.urandom(SIZE // 2).hex().encode()
    t0 = time.monotonic()
    for i in range(count):
        while True:
            try:
                p.produce(topic, value=value, key=str(i).encode(), partition=i % PARTITIONS)
                break
            except BufferError:
                p.poll(0.01)
        if i % 10_000 == 0:
            p.poll(0)
    left = p.flush(120)
    if left:
        raise SystemExit(f"{left} records not delivered to the source")
    return time.monotonic() - t0


async def copy_once(source: str, target: str, topic: str, exactly_once: bool, name: str) -> dict[str, Any]:
    async with KafkaClient(source) as s, KafkaClient(target) as t:
        opts = MirrorOptions(
            topics=[topic],
            exactly_once=exactly_once,
            name=name,
            verify=False,
            translate_groups=False,
            progress=False,
            checkpoint=None,
        )
        m = Mirror(s, t, source, f"{target}#{name}", opts)
        topics = await m.setup()
        cpu0 = time.process_time()
        t0 = time.monotonic()
        done = await m.copy(topics)
        elapsed = time.monotonic() - t0
        cpu = time.process_time() - cpu0
        if not done or m.result.errors:
            raise SystemExit(f"copy failed: {m.result.errors}")
        with contextlib_suppress():
            os.unlink(m.checkpoint.path)
        return {
            "records": m._copied_now,
            "seconds": round(elapsed, 3),
            "mb_per_s": round(m._copied_now * SIZE / elapsed / 1e6, 1),
            "records_per_s": round(m._copied_now / elapsed),
            "mirror_cpu_pct_of_one_core": round(100 * cpu / elapsed, 1),
            "transactions": dict(m.transactions),
        }


class contextlib_suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


def throughput(args: Any) -> dict[str, Any]:
    count = 30_000 if args.quick else args.records
    runs: dict[str, list[dict[str, Any]]] = {"at-least-once": [], "exactly-once": []}
    with ServedBroker(args.override, label="source") as src:
        filled = fill(src.bootstrap, "mirror-bench", count)
        print(f"source filled with {count:,} records of {SIZE} B in {filled:.1f}s", file=sys.stderr)
        for i in range(args.repeat):
            order = ["at-least-once", "exactly-once"] if i % 2 == 0 else ["exactly-once", "at-least-once"]
            for mode in order:
                with ServedBroker(args.override, label="target") as dst:
                    load = os.getloadavg()[0]
                    cpu0 = process_cpu_seconds(dst.proc.pid) if dst.proc else None
                    r = asyncio.run(
                        copy_once(
                            src.bootstrap, dst.bootstrap, "mirror-bench", mode == "exactly-once", f"b{i}"
                        )
                    )
                    cpu1 = process_cpu_seconds(dst.proc.pid) if dst.proc else None
                    if cpu0 is not None and cpu1 is not None:
                        r["target_broker_cpu_pct_of_one_core"] = round(100 * (cpu1 - cpu0) / r["seconds"], 1)
                    r["load_average_before"] = round(load, 2)
                    runs[mode].append(r)
                    if not args.quiet:
                        print(
                            f"  {mode:14} run {i + 1}: {r['mb_per_s']} MB/s "
                            f"({r['records_per_s']:,} records/s)",
                            file=sys.stderr,
                        )
    return {
        mode: {
            "runs": rs,
            "mb_per_s": spread([r["mb_per_s"] for r in rs]),
            "records_per_s": spread([r["records_per_s"] for r in rs]),
        }
        for mode, rs in runs.items()
    }


# ---------------------------------------------------------------------------------------------- lag


def produce_steady(bootstrap: str, topic: str, rate: float, total: int, ready: Any) -> None:
    """``total`` messages, each sent at its due time (start + i / rate), round robin over the partitions."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1, "acks": "all"})
    value = b"x" * SIZE
    ready.wait()
    t0 = time.monotonic()
    i = 0
    while i < total:
        due = min(total, int((time.monotonic() - t0) * rate) + 1)
        while i < due:
            p.produce(topic, value=value, partition=i % PARTITIONS)
            i += 1
        p.poll(0)
        time.sleep(0.0005)
    p.flush(60)


def consume_latency(
    bootstrap: str, topic: str, expected: int, skip_seconds: float, out: Any, ready: Any
) -> None:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "mirror-bench-lag",
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": 10,
            "enable.auto.commit": False,
        }
    )
    for _ in range(200):
        md = c.list_topics(topic, timeout=5)
        if topic in md.topics and len(md.topics[topic].partitions) == PARTITIONS:
            break
        time.sleep(0.1)
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    ready.set()
    lat: list[float] = []
    n = 0
    first_ts: float | None = None
    deadline = time.monotonic() + 600
    while n < expected and time.monotonic() < deadline:
        # consume(N, timeout) would wait for N messages: take what is there, one poll at a time.
        m = c.poll(0.1)
        if m is None or m.error():
            continue
        now = time.time()
        n += 1
        ts = m.timestamp()[1] / 1000
        first_ts = first_ts or ts
        if ts - first_ts >= skip_seconds:
            lat.append(now - ts)
    c.close()
    out.put((n, lat))


def lag_run(args: Any, mode: str, i: int) -> dict[str, Any]:
    seconds = 5.0 if args.quick else args.duration
    warmup = 1.0 if args.quick else args.warmup
    topic = f"mirror-lag-{i}"
    with (
        ServedBroker(args.override, label="source") as src,
        ServedBroker(args.override, label="target") as dst,
    ):
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": src.bootstrap})
        admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
        cmd = [
            sys.executable, "-m", "kafkite.cli", "migrate", "mirror", "--source", src.bootstrap,
            "--target", dst.bootstrap, "--topics", topic, "--follow", "--no-progress",
            "--group-interval", "0",
            "--checkpoint", os.path.join(os.path.dirname(dst.log_path), "cp.json"),
            "--name", f"lag{i}",
        ]  # fmt: skip
        if mode == "exactly-once":
            cmd.append("--exactly-once")
        metrics_port = free_port()
        cmd += ["--metrics-listener", f"127.0.0.1:{metrics_port}"]
        errlog = open(os.path.join(os.path.dirname(dst.log_path), "mirror.err"), "w+")  # noqa: SIM115
        mirror = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errlog, text=True)
        ok = False
        try:
            ctx = mp.get_context("spawn")
            ready = ctx.Event()
            out = ctx.Queue()
            expected = int(args.rate * (seconds + warmup))
            consumer = ctx.Process(
                target=consume_latency, args=(dst.bootstrap, topic, expected, warmup, out, ready), daemon=True
            )
            producer = ctx.Process(
                target=produce_steady,
                args=(src.bootstrap, topic, args.rate, expected, ready),
                daemon=True,
            )
            load = os.getloadavg()[0]
            consumer.start()
            producer.start()
            cpu0 = process_cpu_seconds(mirror.pid)
            t0 = time.monotonic()
            producer.join(seconds + warmup + 120)
            n, lat = out.get(timeout=300)
            elapsed = time.monotonic() - t0
            cpu1 = process_cpu_seconds(mirror.pid)
            consumer.join(30)
            own = mirror_latency(metrics_port)
            ok = True
        finally:
            mirror.send_signal(signal.SIGINT)
            try:
                mirror.wait(60)
            except subprocess.TimeoutExpired:
                mirror.kill()
                mirror.wait()
            if not ok:
                errlog.seek(0)
                print("the mirror's output:\n" + errlog.read()[-4000:], file=sys.stderr)
            errlog.close()
    lat.sort()
    if n < expected:
        raise SystemExit(f"the target consumer saw {n} of {expected} records")
    return {
        "messages": n,
        "measured": len(lat),
        "p50_ms": round(1000 * pct(lat, 0.50), 2),
        "p99_ms": round(1000 * pct(lat, 0.99), 2),
        "p99.9_ms": round(1000 * pct(lat, 0.999), 2),
        "max_ms": round(1000 * lat[-1], 2),
        "mirror_cpu_pct_of_one_core": round(100 * ((cpu1 or 0) - (cpu0 or 0)) / elapsed, 1),
        "load_average_before": round(load, 2),
        # The mirror's own share: from a record's timestamp to the target acknowledging its copy (upper bucket
        # bounds of kafkite_mirror_record_latency_seconds, newest record of each write, warm-up included).
        "mirror_ack_latency_ms": own,
    }


def mirror_latency(port: int) -> dict[str, float | None]:
    import urllib.request

    from kafkite.metrics.registry import parse_text
    from kafkite.migrate.telemetry import percentile

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        metrics = parse_text(r.read().decode())
    name = "kafkite_mirror_record_latency_seconds"
    cum = sorted(
        (float(dict(labels)["le"].replace("+Inf", "inf")), int(v))
        for (n, labels), v in metrics.items()
        if n == f"{name}_bucket"
    )
    count = int(metrics.get((f"{name}_count", ()), 0))
    out: dict[str, float | None] = {}
    for q, key in ((0.5, "p50"), (0.99, "p99")):
        v = percentile(cum, count, q)
        out[key] = None if v is None else round(1000 * v, 1)
    out["writes"] = count
    return out


def pct(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def spread(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def lag(args: Any) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"at-least-once": [], "exactly-once": []}
    for i in range(args.repeat):
        for mode in ("at-least-once", "exactly-once") if i % 2 == 0 else ("exactly-once", "at-least-once"):
            r = lag_run(args, mode, i)
            runs[mode].append(r)
            if not args.quiet:
                print(f"  {mode:14} run {i + 1}: p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms", file=sys.stderr)
    return {
        mode: {"runs": rs, **{k: spread([r[k] for r in rs]) for k in ("p50_ms", "p99_ms", "p99.9_ms")}}
        for mode, rs in runs.items()
    }


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--only", choices=("throughput", "lag"), help="one of the two figures")
    ap.add_argument("--records", type=int, default=200_000, help="records copied per throughput run")
    ap.add_argument("--rate", type=float, default=5000, help="source messages/s of the lag runs")
    ap.add_argument("--duration", type=float, default=30, help="measured seconds of each lag run")
    args = ap.parse_args()
    payload: dict[str, Any] = {"partitions": PARTITIONS, "record_bytes": SIZE}
    if args.only in (None, "throughput"):
        payload["throughput"] = throughput(args)
        for mode, r in payload["throughput"].items():
            print(
                f"mirror throughput {mode:14}: {_common.figure(r['mb_per_s'], 1)} MB/s, "
                f"{_common.figure(r['records_per_s'])} records/s"
            )
    if args.only in (None, "lag"):
        payload["rate"] = args.rate
        payload["lag"] = lag(args)
        for mode, r in payload["lag"].items():
            print(
                f"mirror lag at {args.rate:,.0f} msgs/s {mode:14}: p99 {_common.figure(r['p99_ms'], 1)} ms, "
                f"p50 {_common.figure(r['p50_ms'], 1)} ms"
            )
    _common.save("mirror", args, payload)


if __name__ == "__main__":
    main()
