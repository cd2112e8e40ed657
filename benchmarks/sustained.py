"""Sustained produce, 1 partition, 1 KiB messages, acks=all, past the page cache: does the rate hold at the
disk's speed, and are other clients served meanwhile?

`kafkite bench --sustained` against kafkite and the blackhole ceiling (alternating), each run after a warm-up
of 1.5 x the kernel's dirty page limit; the disk's own sequential write bandwidth is measured before and
after.

Figures: kafkite's rate over the run >= 90% of the disk's bandwidth, the rate after the first minute not below
the first minute's by more than that, a second client's Metadata and Fetch-from-cache p99 < 50 ms, and a
consumer of another topic keeping up (lag 0 at the end).

    .venv/bin/python benchmarks/sustained.py                  # confluent, 120 s per run
    .venv/bin/python benchmarks/sustained.py --duration 300 --repeat 1
"""

from __future__ import annotations

import _common

from kafkite.bench.runner import BenchOptions, sustained_summary


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--duration", type=float, default=120.0, help="seconds per measured run (default: 120)")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--client", choices=("confluent", "kafkite"), default="confluent")
    ap.add_argument(
        "--disk-bytes", type=int, default=2 << 30, help="bytes written to measure the disk (at most)"
    )
    ap.add_argument(
        "--disk-seconds",
        type=float,
        help="seconds of writing to measure the disk (default: as long as a run)",
    )
    ap.set_defaults(repeat=1)
    args = ap.parse_args()
    options = BenchOptions(
        mode="produce",
        serve=True,
        ceiling=True,
        sustained=True,
        topics=["sustained"],
        size=args.size,
        duration=15.0 if args.quick else args.duration,
        warmup_bytes=500_000_000 if args.quick else None,
        disk_bytes=args.disk_bytes,
        disk_seconds=args.disk_seconds,
        client=args.client,
        broker_overrides=args.override,
        quiet=args.quiet,
        repeat=args.repeat,
        ack_latency=False,
    )
    result = _common.run(options)
    runs = [r for r in result.runs if not r.blackhole and r.produce is not None]
    held = [sustained_summary(r.produce) for r in runs if r.produce is not None]
    probes = [r.probe for r in runs if r.probe is not None]
    summary = {
        "runs": args.repeat,
        "duration_s": options.duration,
        "disk_mb_per_s": [round(d.mb_per_s, 1) for d in result.disk],
        "vs_disk": result.vs_disk,
        "vs_ceiling": result.vs_ceiling,
        "sustained": held,
        "metadata_p99_ms": [p["metadata_ms"].get("p99") for p in probes],
        "fetch_from_cache_p99_ms": [p["fetch_from_cache_ms"].get("p99") for p in probes],
        "other_topic_lag_at_end": [p["side_lag_at_end"] for p in probes],
    }
    print(f"summary: {summary}")
    _common.save(f"sustained-{args.client}", args, {"summary": summary, "produce": result.to_json()})


if __name__ == "__main__":
    main()
