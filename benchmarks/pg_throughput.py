"""Produce and consume MB/s on the PostgreSQL engine beside the local-file engine, with the same client in the
same run: 1 KiB messages, acks=all, confluent-kafka, 6 partitions (with three brokers, two led by each).

Every repetition runs each target once, the targets taking turns to go first, on a fresh broker and a fresh
topic: produce, then consume everything back. Reported per target: the median (min - max) of the MB/s, the
broker's CPU seconds per GB moved and, for the PostgreSQL targets, the database server's CPU seconds per GB
(all its processes: the backends serving the broker, the WAL writer, the checkpointer), and the ratio of the
PostgreSQL engine's median to the file engine's. The PostgreSQL server is started here (Debian's package,
initdb into a temporary directory, fsync and synchronous commits on: an acknowledged record is committed and
flushed) unless --dsn names one (then its CPU is not measured); each PostgreSQL run gets a database of its
own.

    .venv/bin/python benchmarks/pg_throughput.py                     # 200,000 messages, 3 repetitions
    .venv/bin/python benchmarks/pg_throughput.py --quick             # 20,000
    .venv/bin/python benchmarks/pg_throughput.py --targets file,pg1,pg3 --repeat 5
    .venv/bin/python benchmarks/pg_throughput.py --dsn postgresql://user@host:5432/db --messages 500000
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _common

from kafkite.bench.runner import BenchOptions
from kafkite.bench.serve import ServedBroker, process_cpu_seconds

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
    import uuid

    import psycopg

    base, _, _ = dsn.rpartition("/")
    dbname = f"{name}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    return f"{base}/{dbname}"


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of a process and all its living children (the PostgreSQL postmaster and its backends);
    the CPU of children that exited is in the parent's cutime/cstime, counted too."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError), open(f"/proc/{entry}/stat") as f:
                parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
    total = 0.0
    todo = [root]
    ticks = os.sysconf("SC_CLK_TCK")
    while todo:
        pid = todo.pop()
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15]) / ticks
        todo.extend(child for child, parent in parents.items() if parent == pid)
    return total


def postmaster_pid(server: Any) -> int | None:
    if server is None or server.dir is None:
        return None
    try:
        return int((Path(server.dir) / "data" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def one_run(target: str, args: argparse_ns, n: int, server: Any) -> dict[str, Any]:
    overrides = list(args.override)
    count = 1
    if target.startswith("pg"):
        overrides.append(f"storage.engine={new_database(server, args.dsn, 'bench_' + target)}")
        count = int(target[2:])
    pg_pid = postmaster_pid(server) if target.startswith("pg") else None
    out: dict[str, Any] = {"target": target, "brokers": count, "load_before": os.getloadavg()}
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
            broker_pid=None,
            warmup=args.warmup,
        )
        for mode in ("produce", "consume"):
            cpu0 = [process_cpu_seconds(b.pid or 0) or 0.0 for b in served]
            db0 = tree_cpu_seconds(pg_pid) if pg_pid else None
            run = _common.run(BenchOptions(mode=mode, **common)).runs[0]  # type: ignore[arg-type]
            phase = run.produce if mode == "produce" else run.consume
            assert phase is not None
            cpu1 = [process_cpu_seconds(b.pid or 0) or 0.0 for b in served]
            db1 = tree_cpu_seconds(pg_pid) if pg_pid else None
            gb = phase.bytes / 1e9
            broker_cpu = sum(cpu1) - sum(cpu0)
            out[mode] = {
                "mb_per_s": phase.mb_per_s,
                "msgs_per_s": phase.msgs_per_s,
                "errors": phase.errors,
                "broker_cpu_s_per_gb": broker_cpu / gb if gb else None,
                "db_cpu_s_per_gb": (db1 - db0) / gb if gb and db0 is not None and db1 is not None else None,
                "report": phase.to_json(),
            }
    out["load_after"] = os.getloadavg()
    return out


argparse_ns = Any


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt(s: dict[str, float] | None, digits: int = 1) -> str:
    if s is None:
        return "-"
    f = f"{{:,.{digits}f}}"
    return f"{f.format(s['median'])} ({f.format(s['min'])} - {f.format(s['max'])})"


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--dsn", help="an existing PostgreSQL server to create the benchmark's databases on")
    ap.add_argument("--targets", default="file,pg1", help="which of file, pg1, pg3 to run (comma list)")
    args = ap.parse_args()
    n = 20_000 if args.quick else args.messages
    targets = args.targets.split(",")
    server = None
    if args.dsn is None and any(t.startswith("pg") for t in targets):
        from test_pg_support import PgServer

        server = PgServer(durable=True)
        server.start()
        print(f"started PostgreSQL on port {server.port} (data in {server.dir})")
    runs: list[dict[str, Any]] = []
    try:
        for rep in range(args.repeat):
            order = targets[rep % len(targets) :] + targets[: rep % len(targets)]
            for target in order:
                r = one_run(target, args, n, server)
                runs.append(r)
                print(
                    f"#{rep + 1} {target}: produce {r['produce']['mb_per_s']:.1f} MB/s,"
                    f" consume {r['consume']['mb_per_s']:.1f} MB/s (load {r['load_before'][0]:.2f})"
                )
    finally:
        if server is not None:
            server.stop()
    summary: dict[str, Any] = {}
    for target in targets:
        mine = [r for r in runs if r["target"] == target]
        s: dict[str, Any] = {"brokers": mine[0]["brokers"], "runs": len(mine)}
        for mode in ("produce", "consume"):
            s[mode] = {
                "mb_per_s": spread([r[mode]["mb_per_s"] for r in mine]),
                "errors": sum(r[mode]["errors"] for r in mine),
            }
            for key in ("broker_cpu_s_per_gb", "db_cpu_s_per_gb"):
                vals = [r[mode][key] for r in mine if r[mode][key] is not None]
                s[mode][key] = spread(vals) if vals else None
        summary[target] = s
    if "file" in summary:
        for s in summary.values():
            for mode in ("produce", "consume"):
                base = summary["file"][mode]["mb_per_s"]["median"]
                s[mode]["of_file"] = round(s[mode]["mb_per_s"]["median"] / base, 3) if base else None
    print()
    print(
        f"{'target':7} {'phase':8} {'MB/s median (min - max)':>26} {'of file':>8}"
        f" {'broker CPU s/GB':>22} {'database CPU s/GB':>22}"
    )
    for target, s in summary.items():
        for mode in ("produce", "consume"):
            m = s[mode]
            print(
                f"{target:7} {mode:8} {fmt(m['mb_per_s']):>26} {m.get('of_file') or '-':>8}"
                f" {fmt(m['broker_cpu_s_per_gb']):>22} {fmt(m['db_cpu_s_per_gb']):>22}"
            )
    _common.save(
        "pg_throughput",
        args,
        {"summary": summary, "messages": n, "size": args.size, "partitions": PARTITIONS, "runs": runs},
    )


if __name__ == "__main__":
    main()
