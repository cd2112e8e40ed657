"""End-to-end latency at a steady 5,000 messages/s: one producer and one consumer on one partition, latency
from the send time written in each message to its arrival at the consumer, for each client.

Figure: p99 <= 10 ms at 5,000 messages/s.

Producers send each message at its own due time (start + i / rate) and stamp it as they hand it to the
client; every run follows --warmup seconds of uncounted traffic at the same rate. The figure is the median
p99 over --repeat runs on one broker, with the spread.

    .venv/bin/python benchmarks/e2e_latency.py                  # 30 s per client and run
    .venv/bin/python benchmarks/e2e_latency.py --rate 20000 --duration 10 --client kafkite
"""

from __future__ import annotations

import _common

from kafkite.bench.runner import BenchOptions


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--client", choices=("confluent", "kafkite", "both"), default="both")
    ap.add_argument("--rate", type=float, default=5000)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--acks", type=int, default=-1)
    ap.add_argument("--linger-ms", type=float, default=1, help="confluent producer linger.ms (default: 1)")
    args = ap.parse_args()
    clients = ["kafkite", "confluent"] if args.client == "both" else [args.client]
    summary = {}
    reports = {}
    for client in clients:
        result = _common.run(
            BenchOptions(
                mode="e2e",
                topics=["e2e-latency"],
                size=args.size,
                duration=5 if args.quick else args.duration,
                rate=args.rate,
                acks=args.acks,
                client=client,
                linger_ms=args.linger_ms,
                serve=True,
                broker_overrides=args.override,
                quiet=args.quiet,
                repeat=args.repeat,
                warmup=args.warmup,
            )
        )
        e = _common.medians(result, "kafkite", "e2e")
        p = _common.medians(result, "kafkite", "produce")
        summary[client] = {
            "runs": args.repeat,
            "rate": args.rate,
            "achieved_msgs_per_s": p["msgs_per_s"],
            **{f"e2e_{q}_ms": e[f"{q}_ms"] for q in ("p50", "p99", "p99.9", "max")},
            "ack_p99_ms": p.get("p99_ms"),
            "producer_client_cpu_pct": p["client_cpu_pct_of_one_core"],
            "consumer_client_cpu_pct": e["client_cpu_pct_of_one_core"],
            "broker_cpu_pct_of_one_core": [r.broker.get("cpu_pct_of_one_core") for r in result.runs],
        }
        print(
            f"summary {client}: e2e p50 {_common.figure(e['p50_ms'], 2)} ms, "
            f"p99 {_common.figure(e['p99_ms'], 2)} ms, p99.9 {_common.figure(e['p99.9_ms'], 2)} ms "
            f"at {_common.figure(p['msgs_per_s'])} msgs/s"
        )
        reports[client] = result.to_json()
    print("summary:", summary)
    _common.save("e2e_latency", args, {"summary": summary, "runs": reports})


if __name__ == "__main__":
    main()
