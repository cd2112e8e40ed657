"""One partition, 1 KiB messages, acks=all, confluent-kafka: produce against kafkite and against the
blackhole ceiling in the same run, then consume everything back from kafkite's log on disk.

Figures: produce >= 80% of the ceiling's messages/s; consume >= 300 MB/s.

    .venv/bin/python benchmarks/produce_consume.py            # 1,000,000 messages
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
    )
    produces, consumes = [], []
    for _ in range(args.repeat):
        with ServedBroker(args.override) as broker:
            target = {"bootstrap": broker.bootstrap, "broker_pid": broker.pid}
            produces.append(_common.run(BenchOptions(mode="produce", ceiling=True, **target, **common)))
            consumes.append(
                _common.run(BenchOptions(mode="consume", consumers=args.consumers, **target, **common))
            )
    _, p = _common.best(produces, 0, "produce")
    _, ceiling = _common.best(produces, 1, "produce")
    _, c = _common.best(consumes, 0, "consume")
    summary = {
        "runs": args.repeat,
        "produce_msgs_per_s": round(p.msgs_per_s),
        "produce_mb_per_s": round(p.mb_per_s, 1),
        "ceiling_msgs_per_s": round(ceiling.msgs_per_s),
        "produce_vs_ceiling": round(p.msgs_per_s / ceiling.msgs_per_s, 3),
        "produce_vs_ceiling_per_run": [(r.vs_ceiling or {}).get("produce_msgs_per_s") for r in produces],
        "consume_msgs_per_s": round(c.msgs_per_s),
        "consume_mb_per_s": round(c.mb_per_s, 1),
    }
    print("summary:", summary)
    _common.save(
        f"produce_consume-{args.client}",
        args,
        {
            "summary": summary,
            "produce": [r.to_json() for r in produces],
            "consume": [r.to_json() for r in consumes],
        },
    )


if __name__ == "__main__":
    main()
