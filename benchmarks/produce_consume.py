"""One partition, 1 KiB messages, acks=all: produce against kafkite and against the blackhole ceiling,
alternating run by run (kafkite, ceiling, ceiling, kafkite, ...), then consume back from kafkite's log.

Figures: produce >= 80% of the ceiling's messages/s; consume >= 300 MB/s.

Each produce run starts with --warmup seconds of uncounted producing (on either broker); the figure is the
median of the per-repetition ratios, with the spread. The consume runs read the first --messages messages of
the log the produce runs wrote (page cache warm, as for a consumer keeping up), --repeat times.

    .venv/bin/python benchmarks/produce_consume.py                       # confluent, 1,000,000 messages
    .venv/bin/python benchmarks/produce_consume.py --client kafkite --messages 2000000
"""

from __future__ import annotations

import _common

from kafkite.bench.runner import BenchOptions
from kafkite.bench.serve import ServedBroker


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--acks", type=int, default=-1)
    ap.add_argument("--client", choices=("confluent", "kafkite"), default="confluent")
    ap.add_argument("--consumers", type=int, default=1)
    ap.add_argument(
        "--ack-latency",
        action="store_true",
        help="time every acknowledgement (confluent: a Python callback per message, a much slower client)",
    )
    args = ap.parse_args()
    n = 100_000 if args.quick else args.messages
    common = dict(
        topics=["produce-consume"],
        partitions=1,
        size=args.size,
        count=n,
        acks=args.acks,
        client=args.client,
        broker_overrides=args.override,
        quiet=args.quiet,
        repeat=args.repeat,
        warmup=args.warmup,
        ack_latency=args.ack_latency,
    )
    with ServedBroker(args.override) as broker:
        target = {"bootstrap": broker.bootstrap, "broker_pid": broker.pid}
        produce = _common.run(BenchOptions(mode="produce", ceiling=True, **target, **common))
        consume = _common.run(BenchOptions(mode="consume", consumers=args.consumers, **target, **common))
    p = _common.medians(produce, "kafkite", "produce")
    c = _common.medians(produce, "ceiling (blackhole)", "produce")
    r = _common.medians(consume, "kafkite", "consume")
    vs = produce.vs_ceiling or {}
    ratio = vs.get("produce_msgs_per_s") or 0.0
    per_pair = ", ".join(f"{x * 100:.0f}%" for x in vs.get("per_repeat") or [ratio])
    summary = {
        "runs": args.repeat,
        "produce_msgs_per_s": p["msgs_per_s"],
        "produce_mb_per_s": p["mb_per_s"],
        "ceiling_msgs_per_s": c["msgs_per_s"],
        "produce_vs_ceiling": vs.get("produce_msgs_per_s"),
        "produce_vs_ceiling_per_repeat": vs.get("per_repeat"),
        "producer_client_cpu_pct": p["client_cpu_pct_of_one_core"],
        "consume_msgs_per_s": r["msgs_per_s"],
        "consume_mb_per_s": r["mb_per_s"],
        "consumer_client_cpu_pct": r["client_cpu_pct_of_one_core"],
    }
    if "p99_ms" in p:
        summary["produce_ack_p99_ms"] = p["p99_ms"]
    print(
        f"summary ({args.client}, median (min - max) of {args.repeat}): produce "
        f"{_common.figure(p['msgs_per_s'])} msgs/s vs ceiling {_common.figure(c['msgs_per_s'])} msgs/s = "
        f"{ratio * 100:.0f}% (per pair {per_pair}); "
        f"consume {_common.figure(r['mb_per_s'], 1)} MB/s"
    )
    _common.save(
        f"produce_consume-{args.client}",
        args,
        {"summary": summary, "produce": produce.to_json(), "consume": consume.to_json()},
    )


if __name__ == "__main__":
    main()
