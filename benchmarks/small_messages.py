"""100-byte messages, one partition, acks=all: messages per second produced, for each client, against kafkite
and against the blackhole ceiling in the same run.

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
    args = ap.parse_args()
    clients = ["kafkite", "confluent"] if args.client == "both" else [args.client]
    summary = {}
    reports = {}
    for client in clients:
        n = args.kafkite_messages if client == "kafkite" else args.confluent_messages
        if args.quick:
            n //= 10
        results = [
            _common.run(
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
                )
            )
            for _ in range(args.repeat)
        ]
        _, p = _common.best(results, 0, "produce")
        _, c = _common.best(results, 1, "produce")
        summary[client] = {
            "runs": args.repeat,
            "produce_msgs_per_s": round(p.msgs_per_s),
            "ceiling_msgs_per_s": round(c.msgs_per_s),
            "produce_vs_ceiling": round(p.msgs_per_s / c.msgs_per_s, 3),
            "produce_msgs_per_s_per_run": [round(r.runs[0].produce.msgs_per_s) for r in results],
            "p99_ms": p.hist.summary_ms().get("p99"),
        }
        reports[client] = [r.to_json() for r in results]
    print("summary:", summary)
    _common.save("small_messages", args, {"summary": summary, "runs": reports})


if __name__ == "__main__":
    main()
