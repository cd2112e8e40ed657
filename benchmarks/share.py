"""Share groups (KIP-932): records per second accepted by 1 and by 3 confluent-kafka ShareConsumers of one
share group on ONE partition, explicit acknowledgement, beside a classic consumer group reading the same data.

One broker (file engine, data on disk) holds a topic of one partition with ``--records`` records of 1 KiB
(produced once, before the runs). Each consumer is its own process (as separate applications would be): a
share consumer polls, acknowledges every record it gets with ``acknowledge`` (ACCEPT, explicit mode) and polls
again, which carries the acknowledgements to the broker. A run of share consumers ends when the group's
share-partition start offset, asked of the broker with DescribeShareGroupOffsets every 20 ms, reaches the end
of the partition: every record accepted. Its rate is the records divided by the time from the first record
any consumer received to that moment. Every offset must be received exactly once across the consumers (a
record delivered twice or missing fails the run). The classic group's consumer reads the records from the
earliest offset in the same way; its run ends at the last record received (no acknowledgement exists there;
its offsets are committed automatically, as usual). Each run uses a new group, so each reads all the data.

    .venv/bin/python benchmarks/share.py [--records 100000] [--repeat 3] [--quick]

The result file is ``results/share.json``; the figures are in benchmarks/README.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import _common

from kafkite.bench.serve import ServedBroker

TOPIC = "share-bench"
RECORD_BYTES = 1024

WORKER = r"""
import json, sys, time
from confluent_kafka import Consumer, ShareConsumer
mode, bs, group, topic, total = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
seen = []
first = None
if mode == "share":
    c = ShareConsumer({"bootstrap.servers": bs, "group.id": group, "share.acknowledgement.mode": "explicit",
                       "max.poll.records": 500})
else:
    c = Consumer({"bootstrap.servers": bs, "group.id": group, "auto.offset.reset": "earliest",
                  "fetch.max.bytes": 52428800})
c.subscribe([topic])
print(json.dumps({"ready": True}), flush=True)
stop_file = sys.argv[6]
import os
last = None
while True:
    if mode == "share":
        msgs = c.poll(0.1)
    else:
        msgs = c.consume(500, 0.1)
    for m in msgs:
        if m.error() is not None:
            continue
        if first is None:
            first = time.time()
        seen.append(m.offset())
        if mode == "share":
            c.acknowledge(m)
    if msgs:
        last = time.time()
    if mode == "classic" and len(seen) >= total:
        break
    if mode == "share" and os.path.exists(stop_file):
        break
if mode == "share":
    c.commit_sync(10)
c.close()
print(json.dumps({"first": first, "last": last, "offsets": seen}), flush=True)
"""


def produce(bs: str, records: int) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient({"bootstrap.servers": bs})
    admin.create_topics([NewTopic(TOPIC, 1, 1)])[TOPIC].result(30)
    p = Producer({"bootstrap.servers": bs, "linger.ms": 5, "acks": "all", "batch.size": 1 << 20})
    payload = os.urandom(RECORD_BYTES)
    for i in range(records):
        while True:
            try:
                p.produce(TOPIC, payload, key=str(i).encode())
                break
            except BufferError:
                p.poll(0.05)
        if i % 1000 == 0:
            p.poll(0)
    if p.flush(120) != 0:
        raise SystemExit("benchmark failed: records left unsent")


def earliest(bs: str, group: str) -> None:
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ResourceType,
    )

    admin = AdminClient({"bootstrap.servers": bs})
    entry = ConfigEntry("share.auto.offset.reset", "earliest", incremental_operation=AlterConfigOpType.SET)
    res = ConfigResource(ResourceType.GROUP, group, incremental_configs=[entry])
    admin.incremental_alter_configs([res])[res].result(timeout=30)


async def wait_accepted(bs: str, group: str, records: int, timeout: float) -> float:
    """The time at which the group's start offset reached ``records`` (every record accepted)."""
    from kafkite.client import KafkaClient, KafkaClientError

    deadline = time.monotonic() + timeout
    async with KafkaClient(bs) as client:
        while time.monotonic() < deadline:
            try:
                offsets = await client.share_group_offsets(group, {TOPIC: [0]})
            except KafkaClientError:
                offsets = {}
            start = offsets.get((TOPIC, 0), (-1, -1))[0]
            if start >= records:
                return time.time()
            await asyncio.sleep(0.02)
    raise SystemExit(f"benchmark failed: group {group} did not accept every record within {timeout:.0f} s")


def one_run(bs: str, mode: str, consumers: int, group: str, records: int, stop_file: str) -> dict[str, Any]:
    if mode == "share":
        earliest(bs, group)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, mode, bs, group, TOPIC, str(records), stop_file],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(consumers)
    ]
    cpu0 = os.times()
    try:
        for p in procs:
            assert p.stdout is not None
            p.stdout.readline()  # ready
        done_at = asyncio.run(wait_accepted(bs, group, records, 600)) if mode == "share" else None
        with open(stop_file, "w"):
            pass
        outs = []
        for p in procs:
            out, _ = p.communicate(timeout=120)
            outs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if os.path.exists(stop_file):
            os.remove(stop_file)
    cpu1 = os.times()
    offsets = [o for out in outs for o in out["offsets"]]
    if mode == "share":
        if len(offsets) != len(set(offsets)) or set(offsets) != set(range(records)):
            dupes = len(offsets) - len(set(offsets))
            missing = records - len(set(offsets) & set(range(records)))
            raise SystemExit(f"benchmark failed: {dupes} records delivered twice, {missing} missing")
    elif set(offsets) != set(range(records)):
        raise SystemExit("benchmark failed: the classic consumer missed records")
    first = min(out["first"] for out in outs if out["first"] is not None)
    end = done_at if done_at is not None else max(out["last"] for out in outs if out["last"] is not None)
    per_consumer = [len(out["offsets"]) for out in outs]
    return {
        "seconds": end - first,
        "records_per_s": records / (end - first),
        "records_per_consumer": per_consumer,
        "client_cpu_s": round(
            (cpu1.children_user + cpu1.children_system) - (cpu0.children_user + cpu0.children_system), 2
        ),
    }


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--records", type=int, default=100_000, help="1 KiB records in the partition")
    args = ap.parse_args()
    records = 10_000 if args.quick else args.records
    repeat = 1 if args.quick else args.repeat
    cases = [
        ("classic group, 1 consumer", "classic", 1),
        ("share group, 1 ShareConsumer", "share", 1),
        ("share group, 3 ShareConsumers", "share", 3),
    ]
    results: dict[str, Any] = {label: {"runs": []} for label, _, _ in cases}
    with ServedBroker(args.override, label="kafkite") as broker:
        bs = broker.bootstrap
        produce(bs, records)
        stop_file = os.path.join(str(broker.log_path.parent), "stop-share-bench")
        for run in range(repeat):
            # The cases take turns to go first, so none always runs on a warmer page cache.
            order = cases[run % len(cases) :] + cases[: run % len(cases)]
            for label, mode, consumers in order:
                r = one_run(bs, mode, consumers, f"{mode}-{consumers}-{run}", records, stop_file)
                r["load_average"] = [round(x, 2) for x in os.getloadavg()]
                results[label]["runs"].append(r)
                if not args.quiet:
                    print(
                        f"{label} run {run + 1}: {r['records_per_s']:,.0f} records/s "
                        f"({r['records_per_consumer']}, load {r['load_average'][0]})",
                        flush=True,
                    )
    print(f"\n{'consumers':34} {'records/s accepted (share) or read (classic)':>46}")
    for label, r in results.items():
        r["records_per_s"] = spread([x["records_per_s"] for x in r["runs"]])
        print(f"{label:34} {_common.figure(r['records_per_s']):>46}")
    _common.save(
        "share",
        args,
        {
            "records": records,
            "record_bytes": RECORD_BYTES,
            "repeat": repeat,
            "partitions": 1,
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
