"""Scale: many partitions, many connections, and resident memory against the bytes the log retains.

1. Start a broker (data on disk) and create one topic of --partitions partitions (default 10,000).
2. Open --connections concurrent connections (default 1,000). Each asks for the cluster's metadata (one in
   --metadata-every also for the whole topic's), produces a batch to its share of the partitions (together
   they cover every partition) and fetches it back.
3. After each of those steps, with every connection still open, record the broker's resident memory (RSS)
   and open files.
4. Produce --retain-gb GB (default 2) of 1 KiB messages to another topic in steps, recording RSS after each
   step, then consume all of it back from the start: RSS should not follow the retained bytes.

Figure: 10,000 partitions and 1,000 concurrent connections served; RSS independent of retained bytes.

    .venv/bin/python benchmarks/scale.py
    .venv/bin/python benchmarks/scale.py --partitions 5000 --connections 1000 --retain-gb 4
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import time
from typing import Any

import _common

from kafkite.bench.payload import BatchMaker, stamp_of
from kafkite.bench.runner import BenchOptions, Runner
from kafkite.bench.serve import ServedBroker, process_memory
from kafkite.client import BrokerConnection, parse_bootstrap
from kafkite.protocol import records
from kafkite.protocol.api_keys import ApiKey

TOPIC = "scale"
RETAINED = "retained"


def open_files(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def dir_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


async def create_topic(bootstrap: str, name: str, partitions: int) -> dict[str, Any]:
    host, port = parse_bootstrap(bootstrap)[0]
    conn = BrokerConnection(host, port, "scale-admin")
    await conn.connect()
    try:
        t0 = time.perf_counter()
        body = {
            "topics": [{"name": name, "num_partitions": partitions, "replication_factor": -1}],
            "timeout_ms": 600_000,
            "validate_only": False,
        }
        try:
            resp = await conn.request(ApiKey.CREATE_TOPICS, body)
        except ConnectionError as e:
            return {
                "partitions": partitions,
                "seconds": round(time.perf_counter() - t0, 2),
                "error_code": -1,
                "error_message": f"the broker closed the connection: {e}",
            }
        t = resp["topics"][0]
        return {
            "partitions": partitions,
            "seconds": round(time.perf_counter() - t0, 2),
            "error_code": t["error_code"],
            "error_message": t.get("error_message"),
        }
    finally:
        await conn.close()


async def connections_round(
    bootstrap: str, partitions: int, n: int, metadata_every: int, hold: Any
) -> dict[str, Any]:
    """n connections at once: ApiVersions, Metadata, Produce to a share of the partitions, Fetch it back."""
    host, port = parse_bootstrap(bootstrap)[0]
    maker = BatchMaker(100)
    conns = [BrokerConnection(host, port, f"scale-{i}") for i in range(n)]
    errors: list[str] = []
    timings: dict[str, float] = {}

    async def step(name: str, coros: list[Any]) -> list[Any]:
        t0 = time.perf_counter()
        out = await asyncio.gather(*coros, return_exceptions=True)
        timings[name] = round(time.perf_counter() - t0, 3)
        for r in out:
            if isinstance(r, BaseException):
                errors.append(f"{name}: {type(r).__name__}: {r}")
        await hold(f"{n:,} connections: after {name} ({timings[name]:.2f}s)")
        return out

    def share(i: int) -> list[int]:
        return list(range(i, partitions, n))

    await step("connect", [c.connect(timeout=60) for c in conns])
    live = [c for c in conns if c.versions]
    # Every connection asks for the brokers; one in ``metadata_every`` also for the whole topic (its answer
    # lists every partition, so it is the expensive one).
    cluster_body: dict[str, Any] = {"topics": [], "allow_auto_topic_creation": False}
    topic_body = {"topics": [{"name": TOPIC}], "allow_auto_topic_creation": False}
    await step("metadata_cluster", [c.request(ApiKey.METADATA, cluster_body) for c in live])
    askers = live[::metadata_every]
    metas = await step("metadata_topic", [c.request(ApiKey.METADATA, topic_body) for c in askers])
    seen = {len(m["topics"][0]["partitions"]) for m in metas if isinstance(m, dict)}

    def produce(i: int, c: BrokerConnection) -> Any:
        parts = [{"index": p, "records": maker.build(10)} for p in share(i)]
        body = {"acks": -1, "timeout_ms": 60000, "topic_data": [{"name": TOPIC, "partition_data": parts}]}
        return c.request(ApiKey.PRODUCE, body)

    produced = await step("produce", [produce(i, c) for i, c in enumerate(live)])
    bad = sum(
        1
        for r in produced
        if isinstance(r, dict)
        for t in r["responses"]
        for p in t["partition_responses"]
        if p["error_code"]
    )

    def fetch(i: int, c: BrokerConnection) -> Any:
        parts = [{"partition": p, "fetch_offset": 0, "partition_max_bytes": 65536} for p in share(i)]
        body = {
            "replica_id": -1,
            "max_wait_ms": 0,
            "min_bytes": 0,
            "max_bytes": 1 << 24,
            "isolation_level": 0,
            "topics": [{"topic": TOPIC, "partitions": parts}],
        }
        return c.request(ApiKey.FETCH, body, version=min(c.version_for(ApiKey.FETCH), 12))

    fetched = await step("fetch", [fetch(i, c) for i, c in enumerate(live)])
    got = 0
    stamps_ok = True
    for r in fetched:
        if not isinstance(r, dict):
            continue
        for t in r["responses"]:
            for p in t["partitions"]:
                if p["records"]:
                    for pos, h in records.iter_headers(p["records"]):
                        got += h.records_count
                        first = next(iter(records.iter_records(p["records"], pos, h)))
                        stamps_ok = stamps_ok and stamp_of(first.value or b"") > 0
    result = {
        "connections": n,
        "connected": len(live),
        "topic_metadata_requests": len(askers),
        "metadata_partitions_seen": sorted(seen),
        "partition_errors": bad,
        "messages_produced": 10 * partitions - 10 * bad,
        "messages_fetched": got,
        "stamps_ok": stamps_ok,
        "seconds": timings,
        "errors": errors[:5],
        "error_count": len(errors),
    }
    await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    return result


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--partitions", type=int, default=10_000)
    ap.add_argument("--connections", type=int, default=1_000)
    ap.add_argument("--retain-gb", type=float, default=2.0)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument(
        "--metadata-every", type=int, default=10, help="one connection in N asks for the topic's metadata"
    )
    args = ap.parse_args()
    if args.quick:
        args.partitions, args.connections, args.retain_gb = 1000, 200, 0.4
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the broker started below inherits it
    out: dict[str, Any] = {"nofile_limit": hard, "memory": []}

    with ServedBroker(args.override, label="scale") as b:
        assert b.pid is not None
        pid = b.pid
        data_dir = str(b.log_path.parent / "data")

        def checkpoint(label: str, **extra: Any) -> None:
            mem = process_memory(pid)
            row = {
                "at": label,
                "rss_mb": round(mem.get("rss_mb", 0), 1),
                "peak_rss_mb": round(mem.get("peak_rss_mb", 0), 1),
                "open_files": open_files(pid),
                "log_mb": round(dir_bytes(data_dir) / 1e6, 1),
                **extra,
            }
            out["memory"].append(row)
            print(
                f"  {label:<50} RSS {row['rss_mb']:8.1f} MB  peak {row['peak_rss_mb']:8.1f} MB  "
                f"files {row['open_files']!s:>6}  log {row['log_mb']:>9,.1f} MB"
            )

        print(f"broker {b.bootstrap} pid {pid}, nofile limit {hard}")
        checkpoint("started")
        created = asyncio.run(create_topic(b.bootstrap, TOPIC, args.partitions))
        out["create_topic"] = created
        print(f"create {args.partitions:,} partitions: {created}")
        if created["error_code"] != 0 or b.proc is None or b.proc.poll() is not None:
            made = [d for d in os.listdir(data_dir) if d.startswith(f"{TOPIC}-")]
            created["partition_dirs_made"] = len(made)
            out["broker_log_tail"] = b.log_tail(15)
            print(f"creating the topic failed after {len(made):,} partition directories:")
            print(out["broker_log_tail"])
            checkpoint(f"after failing to create {args.partitions:,} partitions")
            _common.save(f"scale-{args.partitions}p", args, out)
            raise SystemExit(1)
        checkpoint(f"{args.partitions:,} partitions created")

        async def hold(label: str) -> None:
            checkpoint(label)

        rnd = asyncio.run(
            connections_round(b.bootstrap, args.partitions, args.connections, args.metadata_every, hold)
        )
        out["connections_round"] = rnd
        print(f"connections round: {rnd}")
        time.sleep(1)
        checkpoint("connections closed")

        step_messages = int(args.retain_gb * 1e9 / 1024 / args.steps)
        out["retained_steps"] = []
        for i in range(args.steps):
            r = Runner(
                BenchOptions(
                    mode="produce",
                    bootstrap=b.bootstrap,
                    topics=[RETAINED],
                    partitions=4,
                    size=1024,
                    count=step_messages,
                    client="kafkite",
                    quiet=True,
                    warmup=0.0,  # the retained bytes are exactly the steps'
                )
            ).run()
            p = r.runs[0].produce
            assert p is not None
            out["retained_steps"].append({"messages": p.messages, "mb_per_s": round(p.mb_per_s, 1)})
            checkpoint(f"retained +{(i + 1) * step_messages * 1024 / 1e9:.1f} GB ({p.mb_per_s:.0f} MB/s)")
        r = Runner(
            BenchOptions(
                mode="consume",
                bootstrap=b.bootstrap,
                topics=[RETAINED],
                size=1024,
                count=None,
                duration=600,
                client="kafkite",
                quiet=True,
            )
        ).run()
        c = r.runs[0].consume
        assert c is not None
        out["consume_all"] = {"messages": c.messages, "mb_per_s": round(c.mb_per_s, 1)}
        checkpoint(f"consumed all {c.messages * 1024 / 1e9:.1f} GB back ({c.mb_per_s:.0f} MB/s)")
    free = shutil.disk_usage("/tmp").free / 1e9
    print(f"(disk free after cleanup: {free:.0f} GB)")
    _common.save(f"scale-{args.partitions}p", args, out)


if __name__ == "__main__":
    main()
