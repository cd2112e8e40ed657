"""Produce and consume MB/s on the PostgreSQL engine with one and with three brokers, beside the local-file
engine: 1 KiB messages, acks=all, confluent-kafka, 6 partitions (two led by each of three brokers).

Each target gets a fresh topic; produce first, then consume everything back. The PostgreSQL server is
started here (Debian's package, initdb into a temporary directory, fsync and synchronous commits on) unless
--dsn names one; each PostgreSQL target gets a database of its own.

    .venv/bin/python benchmarks/pg_throughput.py                    # 200,000 messages per target
    .venv/bin/python benchmarks/pg_throughput.py --quick            # 20,000
    .venv/bin/python benchmarks/pg_throughput.py --dsn postgresql://user@host:5432/db --messages 500000
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _common

from kafkite.bench.runner import BenchOptions
from kafkite.bench.serve import ServedBroker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

PARTITIONS = 6


@contextlib.contextmanager
def brokers(overrides: list[str], count: int) -> Iterator[list[ServedBroker]]:
    with contextlib.ExitStack() as stack:
        out = []
        for node in range(1, count + 1):
            extra = [f"node.id={node}"] if count > 1 else []
            out.append(stack.enter_context(ServedBroker([*overrides, *extra], label=f"kafkite-{node}")))
        yield out


def new_database(server: Any, dsn: str | None, name: str) -> str:
    if dsn is None:
        return str(server.new_database(name))
    import psycopg

    base, _, _ = dsn.rpartition("/")
    dbname = f"{name}_{__import__('uuid').uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    return f"{base}/{dbname}"


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--dsn", help="an existing PostgreSQL server to create the benchmark's databases on")
    ap.add_argument("--targets", default="file,pg1,pg3", help="which of file, pg1, pg3 to run (comma list)")
    args = ap.parse_args()
    n = 20_000 if args.quick else args.messages
    server = None
    if args.dsn is None and any(t.startswith("pg") for t in args.targets.split(",")):
        from test_pg_support import PgServer

        server = PgServer(durable=True)
        server.start()
        print(f"started PostgreSQL on port {server.port} (data in {server.dir})")
    summary: dict[str, Any] = {}
    reports: dict[str, Any] = {}
    try:
        for target in args.targets.split(","):
            overrides = list(args.override)
            count = 1
            if target.startswith("pg"):
                overrides.append(f"storage.engine={new_database(server, args.dsn, 'bench_' + target)}")
                count = int(target[2:])
            best: dict[str, Any] = {}
            for _ in range(args.repeat):
                with brokers(overrides, count) as served:
                    bootstrap = ",".join(b.bootstrap for b in served)
                    common = dict(
                        topics=[f"pg-throughput-{target}"],
                        partitions=PARTITIONS,
                        size=args.size,
                        count=n,
                        acks=-1,
                        client="confluent",
                        producers=count,
                        consumers=count,
                        quiet=args.quiet,
                        bootstrap=bootstrap,
                        broker_pid=served[0].pid,
                        warmup=args.warmup,
                    )
                    p = _common.run(BenchOptions(mode="produce", **common)).runs[0].produce
                    c = _common.run(BenchOptions(mode="consume", **common)).runs[0].consume
                    if not best or p.mb_per_s > best["produce"].mb_per_s:
                        best["produce"] = p
                    if "consume" not in best or c.mb_per_s > best["consume"].mb_per_s:
                        best["consume"] = c
            summary[target] = {
                "brokers": count,
                "produce_mb_per_s": round(best["produce"].mb_per_s, 1),
                "produce_msgs_per_s": round(best["produce"].msgs_per_s),
                "consume_mb_per_s": round(best["consume"].mb_per_s, 1),
                "consume_msgs_per_s": round(best["consume"].msgs_per_s),
            }
            reports[target] = {k: v.to_json() if hasattr(v, "to_json") else str(v) for k, v in best.items()}
            print(f"{target}: {summary[target]}")
    finally:
        if server is not None:
            server.stop()
    print()
    print(f"{'target':8} {'brokers':>7} {'produce MB/s':>13} {'consume MB/s':>13}")
    for target, s in summary.items():
        print(f"{target:8} {s['brokers']:>7} {s['produce_mb_per_s']:>13} {s['consume_mb_per_s']:>13}")
    _common.save("pg_throughput", args, {"summary": summary, "messages": n, "size": args.size})


if __name__ == "__main__":
    main()
