"""Many partitions: start-up with N partitions on disk (default 100,000, in topics of 10,000), Metadata of a
10,000-partition topic, and the broker's memory, measured on a broker of the benchmark's own.

Steps: start an empty broker, create the topics (timed), write one record to every 100th partition, stop
it (timed), start it again on the same data (timed to "kafkite ready" and to the first Metadata answered),
then Metadata of one 10,000-partition topic (latency and broker CPU, median of --metadata-requests). The
start-up is repeated --repeat times on the same data.

    .venv/bin/python benchmarks/many_partitions.py                       # 100,000 partitions
    .venv/bin/python benchmarks/many_partitions.py --partitions 20000 --quick
    .venv/bin/python benchmarks/many_partitions.py --partitions 50000 --data /tmp/many-50k   # kept, reused

With --data DIR the data directory is kept: a later run with the same DIR (and --partitions) skips the
creation and measures only the start-ups. The broker's CPU seconds (user + system) to "kafkite ready" are
reported beside the wall time: they depend less on the machine's other load.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
from typing import Any

import _common
from request_cost import Pipelined, cpu, metadata_frame

from kafkite.bench.serve import ServedBroker, process_cpu_seconds, process_memory
from kafkite.client import KafkaClient
from kafkite.protocol.records import build_batch

PER_TOPIC = 10_000


async def create(bootstrap: str, topics: list[tuple[str, int]]) -> None:
    async with KafkaClient(bootstrap) as c:
        for name, n in topics:
            res = await c.create_topics([(name, n, {})], timeout_ms=600_000)
            code, msg = res[name]
            if code:
                raise SystemExit(f"creating {name}: error {code} {msg}")


async def sample(bootstrap: str, topics: list[tuple[str, int]]) -> None:
    async with KafkaClient(bootstrap) as c:
        await c.refresh_metadata([t for t, _ in topics])
        for name, n in topics:
            for i in range(0, n, 100):
                await c.produce(name, {i: build_batch([(None, b"x" * 100, [], int(time.time() * 1000))])})


def wait_for_dirs(data: str, total: int, timeout: float = 1800) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        made = sum(1 for e in os.scandir(data) if e.is_dir() and e.name.startswith("many-"))
        if made >= total:
            break
        time.sleep(0.2)
    return time.monotonic() - t0


def wait_ready(b: ServedBroker) -> None:
    while "kafkite ready" not in b.log_tail(400):
        if b.proc is not None and b.proc.poll() is not None:
            raise SystemExit(f"broker exited:\n{b.log_tail()}")
        time.sleep(0.01)


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--partitions", type=int, default=100_000)
    ap.add_argument("--metadata-requests", type=int, default=20)
    ap.add_argument(
        "--data", help="data directory, kept; when it already holds the partitions, the creation is skipped"
    )
    args = ap.parse_args()
    total = args.partitions // 10 if args.quick else args.partitions
    topics = [
        (f"many-{i}", min(PER_TOPIC, total - i * PER_TOPIC)) for i in range((total - 1) // PER_TOPIC + 1)
    ]
    data = args.data or tempfile.mkdtemp(prefix="kafkite-many-")
    reuse = args.data is not None and os.path.isdir(data) and count_dirs(data) >= total
    out: dict[str, Any] = {"partitions": total, "topics": len(topics), "load_at_start": os.getloadavg()[0]}
    overrides = [*args.override, f"log.dirs={data}", f"max.broker.partitions={max(total * 2, 1_000_000)}"]
    try:
        if not reuse:
            make(out, overrides, data, topics, total)
        run_starts(out, overrides, topics, args.repeat, args.metadata_requests)
    finally:
        if args.data is None:
            shutil.rmtree(data, ignore_errors=True)
    out["load_at_end"] = os.getloadavg()[0]
    for k, v in out.items():
        if isinstance(v, list) and v and isinstance(v[0], float):
            print(f"{k:<28} median {statistics.median(v):,.2f} ({min(v):,.2f} - {max(v):,.2f})")
        else:
            print(f"{k:<28} {v:,.2f}" if isinstance(v, float) else f"{k:<28} {v}")
    _common.save("many_partitions", args, out)


def count_dirs(data: str) -> int:
    return sum(1 for e in os.scandir(data) if e.is_dir() and e.name.startswith("many-"))


def make(
    out: dict[str, Any], overrides: list[str], data: str, topics: list[tuple[str, int]], total: int
) -> None:
    """Create the topics on an empty broker, one record in every 100th partition, and stop it."""
    with ServedBroker(overrides, start_timeout=600) as b:
        t0 = time.monotonic()
        asyncio.run(create(b.bootstrap, topics))
        out["create_s"] = time.monotonic() - t0
        # The partitions' directories are made in the background: the start-up measured is that of a
        # complete creation, not one resumed.
        out["create_on_disk_s"] = wait_for_dirs(data, total) + out["create_s"]
        asyncio.run(sample(b.bootstrap, topics))
        out["rss_mb_after_create"] = process_memory(b.pid or 0).get("rss_mb")
        t0 = time.monotonic()
    out["stop_s"] = time.monotonic() - t0


def run_starts(
    out: dict[str, Any], overrides: list[str], topics: list[tuple[str, int]], repeat: int, requests: int
) -> None:
    """Start the broker on the data `repeat` times: to ready, to the first Metadata, then Metadata's cost."""
    starts: list[float] = []
    firsts: list[float] = []
    cpus: list[float] = []
    for _ in range(repeat):
        t0 = time.monotonic()
        with ServedBroker(overrides, start_timeout=600) as b:
            wait_ready(b)
            starts.append(time.monotonic() - t0)
            assert b.pid is not None
            cpus.append(process_cpu_seconds(b.pid) or 0.0)
            c = Pipelined(b.host, b.port)
            frame = metadata_frame(topics[0][0])
            c.one(frame)
            firsts.append(time.monotonic() - t0)
            assert b.pid is not None
            lat: list[float] = []
            c0 = cpu(b.pid)
            for _ in range(requests):
                t = time.perf_counter()
                c.one(frame)
                lat.append(time.perf_counter() - t)
            out.setdefault("metadata_ms", []).append(1000 * statistics.median(lat))
            out.setdefault("metadata_cpu_ms", []).append(1000 * (cpu(b.pid) - c0) / requests)
            out.setdefault("rss_mb_after_start", []).append(process_memory(b.pid).get("rss_mb"))
            c.close()
    out["start_to_ready_s"] = starts
    out["start_to_first_metadata_s"] = firsts
    out["start_cpu_s"] = cpus


if __name__ == "__main__":
    main()
