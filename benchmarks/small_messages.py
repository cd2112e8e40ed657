"""100-byte messages, one partition, acks=all: messages per second produced, for each client, against kafkite
and against the blackhole ceiling, alternating run by run.

Figure: >= 300,000 messages/s produced.

    .venv/bin/python benchmarks/small_messages.py                       # both clients
    .venv/bin/python benchmarks/small_messages.py --client confluent --producers 2
"""

from __future__ import annotations

import _common

from kafkite.bench.runner import BenchOptions


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--client", choices=("confluent", "kafkite", "both"), default="both")
    ap.add_argument("--producers", type=int, default=1)
    ap.add_argument("--kafkite-messages", type=int, default=10_000_000)
    ap.add_argument("--confluent-messages", type=int, default=2_000_000)
    ap.add_argument(
        "--ack-latency", action="store_true", help="time every acknowledgement (confluent: a slower client)"
    )
    args = ap.parse_args()
    clients = ["kafkite", "confluent"] if args.client == "both" else [args.client]
    summary = {}
    reports = {}
    for client in clients:
        n = args.kafkite_messages if client == "kafkite" else args.confluent_messages
        if args.quick:
            n //= 10
        result = _common.run(
            BenchOptions(
                mode="produce",
                topics=["small-messages"],
                size=100,
                count=n,
                acks=-1,
                client=client,
                producers=args.producers,
                serve=True,
                ceiling=True,
                broker_overrides=args.override,
                quiet=args.quiet,
                repeat=args.repeat,
                warmup=args.warmup,
                ack_latency=args.ack_latency,
            )
        )
        p = _common.medians(result, "kafkite", "produce")
        c = _common.medians(result, "ceiling (blackhole)", "produce")
        vs = result.vs_ceiling or {}
        summary[client] = {
            "runs": args.repeat,
            "produce_msgs_per_s": p["msgs_per_s"],
            "ceiling_msgs_per_s": c["msgs_per_s"],
            "produce_vs_ceiling": vs.get("produce_msgs_per_s"),
            "produce_vs_ceiling_per_repeat": vs.get("per_repeat"),
            "producer_client_cpu_pct": p["client_cpu_pct_of_one_core"],
            "p99_ms": p.get("p99_ms"),
        }
        print(
            f"summary {client}: {_common.figure(p['msgs_per_s'])} msgs/s, ceiling "
            f"{_common.figure(c['msgs_per_s'])} msgs/s, ratio {(vs.get('produce_msgs_per_s') or 0):.0%}"
        )
        reports[client] = result.to_json()
    print("summary:", summary)
    _common.save("small_messages", args, {"summary": summary, "runs": reports})


if __name__ == "__main__":
    main()
