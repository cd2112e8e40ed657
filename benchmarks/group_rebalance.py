"""A member joining a live group: classic eager, classic cooperative-sticky and the consumer protocol.

Three confluent-kafka consumers share a 6-partition topic that a producer keeps writing to (one message per
partition every 10 ms); once they consume steadily, a fourth member joins. Measured for each protocol:

- **owned again**: from the fourth member's start until every partition is owned again, exactly once, with
  the fourth member owning its share (the group's final assignment in place);
- **longest pause**: the longest time without a message of its (kept) partitions for a member whose
  partitions did not change, from one second before the join until one second after "owned again";
- **baseline**: the same for the same members over the two seconds of steady consumption before that window
  (what polling and the machine's load give without any rebalance).

The classic protocol runs with ``session.timeout.ms=6000`` and ``heartbeat.interval.ms=500``; the consumer
protocol with the broker's ``group.consumer.session.timeout.ms=6000`` and
``group.consumer.heartbeat.interval.ms=500``: the same timings on both sides. Each run gets a fresh broker.

    .venv/bin/python benchmarks/group_rebalance.py                 # 5 runs of each protocol
    .venv/bin/python benchmarks/group_rebalance.py --quick         # 1 run of each
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from typing import Any

import _common

from kafkite.bench.serve import ServedBroker

PARTITIONS = 6
BASELINE_S = 2.0  # the steady consumption before the join that the pauses are compared with
HEARTBEAT_MS = 500
BROKER = [
    "group.min.session.timeout.ms=1000",
    "group.consumer.session.timeout.ms=6000",
    "group.consumer.min.session.timeout.ms=1000",
    f"group.consumer.heartbeat.interval.ms={HEARTBEAT_MS}",
    "group.consumer.min.heartbeat.interval.ms=100",
]
PROTOCOLS: dict[str, dict[str, Any]] = {
    "classic eager (range)": {
        "group.protocol": "classic",
        "partition.assignment.strategy": "range",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": HEARTBEAT_MS,
    },
    "classic cooperative-sticky": {
        "group.protocol": "classic",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": HEARTBEAT_MS,
    },
    "consumer (KIP-848, uniform)": {"group.protocol": "consumer"},
}


class Member(threading.Thread):
    def __init__(self, conf: dict[str, Any], topic: str) -> None:
        super().__init__(daemon=True)
        self.conf, self.topic = conf, topic
        self.messages: list[tuple[float, int]] = []
        self.assigned: frozenset[int] = frozenset()
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        from confluent_kafka import Consumer

        c = Consumer(self.conf)
        c.subscribe([self.topic])
        try:
            while not self.stop_flag.is_set():
                got = c.consume(num_messages=500, timeout=0.02)
                now = time.monotonic()
                with self.lock:
                    self.messages += [(now, int(m.partition() or 0)) for m in got if m.error() is None]
                self.assigned = frozenset(tp.partition for tp in c.assignment())
        finally:
            c.close()


def longest_gap(m: Member, partitions: frozenset[int], start: float, end: float) -> float:
    """The longest time within [start, end] without a message of ``partitions`` for member ``m``."""
    with m.lock:
        times = [t for t, p in m.messages if p in partitions and start <= t <= end]
    points = [start, *times, end]
    return max(b - a for a, b in itertools.pairwise(points))


def one_run(label: str, client: dict[str, Any], run: int) -> dict[str, Any]:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    with ServedBroker(BROKER, label="kafkite") as broker:
        bs = broker.bootstrap
        topic = "rebalance"
        admin = AdminClient({"bootstrap.servers": bs})
        admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
        conf = {
            "bootstrap.servers": bs,
            "group.id": f"g-{run}",
            "auto.offset.reset": "latest",
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 500,
            **client,
        }
        stop = threading.Event()

        def feed() -> None:
            p = Producer({"bootstrap.servers": bs, "linger.ms": 0, "acks": 1})
            while not stop.is_set():
                for i in range(PARTITIONS):
                    p.produce(topic, b"x", partition=i)
                p.poll(0)
                time.sleep(0.01)
            p.flush(10)

        feeder = threading.Thread(target=feed, daemon=True)
        members = [Member(conf, topic) for _ in range(3)]
        for m in members:
            m.start()

        def owned_once(ms: list[Member]) -> bool:
            parts = [m.assigned for m in ms]
            return (
                all(parts)
                and sum(len(p) for p in parts) == PARTITIONS
                and set().union(*parts) == set(range(6))
            )

        deadline = time.monotonic() + 60
        while not owned_once(members):
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"{label}: three members never settled: {[sorted(m.assigned) for m in members]}"
                )
            time.sleep(0.01)
        feeder.start()
        time.sleep(BASELINE_S + 2.0)  # the producer connects, then steady consumption
        before = [m.assigned for m in members]
        joined = time.monotonic()
        fourth = Member(conf, topic)
        fourth.start()
        everyone = [*members, fourth]
        deadline = joined + 60
        while not owned_once(everyone):
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"{label}: four members never settled: {[sorted(m.assigned) for m in everyone]}"
                )
            time.sleep(0.002)
        owned_at = time.monotonic()
        time.sleep(1.5)
        stop.set()
        feeder.join(15)
        for m in everyone:
            m.stop_flag.set()
        for m in everyone:
            m.join(30)
        after = [m.assigned for m in members]
        pauses, baseline = [], []
        for m, was, now in zip(members, before, after, strict=True):
            if not was <= now:
                continue  # a member that gave a partition up is affected by the move
            pauses.append(longest_gap(m, was, joined - 1.0, owned_at + 1.0))
            baseline.append(longest_gap(m, was, joined - 1.0 - BASELINE_S, joined - 1.0))
        return {
            "owned_again_ms": round((owned_at - joined) * 1000, 1),
            "longest_pause_unaffected_ms": round(max(pauses) * 1000, 1) if pauses else None,
            "baseline_pause_ms": round(max(baseline) * 1000, 1) if baseline else None,
            "unaffected_members": len(pauses),
            "before": [sorted(a) for a in before],
            "after": [sorted(m.assigned) for m in everyone],
        }


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    ap = _common.parser(__doc__)
    args = ap.parse_args()
    repeat = 1 if args.quick else args.repeat
    results: dict[str, Any] = {}
    for label, client in PROTOCOLS.items():
        runs = [one_run(label, client, i) for i in range(repeat)]
        owned = [r["owned_again_ms"] for r in runs]
        pauses = [
            r["longest_pause_unaffected_ms"] for r in runs if r["longest_pause_unaffected_ms"] is not None
        ]
        baselines = [r["baseline_pause_ms"] for r in runs if r["baseline_pause_ms"] is not None]
        results[label] = {
            "runs": runs,
            "owned_again_ms": spread(owned),
            "longest_pause_unaffected_ms": spread(pauses) if pauses else None,
            "baseline_pause_ms": spread(baselines) if baselines else None,
        }
        if not args.quiet:
            print(f"{label}: {runs}")

    def fmt(v: dict[str, float] | None) -> str:
        return "-" if v is None else f"{v['median']:,.0f} ({v['min']:,.0f} - {v['max']:,.0f})"

    print(
        f"{'protocol':30} {'owned again, ms':>22} {'longest pause (unaffected), ms':>32} {'baseline, ms':>18}"
    )
    for label, r in results.items():
        o, p, b = r["owned_again_ms"], r["longest_pause_unaffected_ms"], r["baseline_pause_ms"]
        print(f"{label:30} {fmt(o):>22} {fmt(p):>32} {fmt(b):>18}")
    _common.save("group_rebalance", args, {"repeat": repeat, "partitions": PARTITIONS, "results": results})


if __name__ == "__main__":
    main()
