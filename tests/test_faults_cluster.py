"""Faults, measured, on a 3-broker cluster sharing PostgreSQL: real clients write, transact and consume while
a schedule kills, pauses and cuts off brokers and restarts the database; the checkers then judge the history
(see ``faults_history``): nothing acknowledged lost, no duplicates, per-partition order, atomic transactions,
one owner per partition per generation, committed offsets never moving backwards, no request left hanging.

Short by default (``KAFKITE_FAULT_CYCLES`` cycles per schedule, 2 unless set); with ``KAFKITE_SLOW=1`` each
schedule runs 100 cycles. ``KAFKITE_FAULTS_RESULTS=path`` appends one JSON line per schedule run there.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
from faults_cluster import SCHEDULES, FaultCluster
from faults_history import (
    History,
    check_commits,
    check_hangs,
    check_no_strays,
    check_ownership,
    check_produce,
    check_tracebacks,
    check_transactions,
    summarize,
)
from faults_net import ensure_tools
from faults_workload import Workloads, committed_offsets, create_topics, read_all, read_headers
from helpers import SLOW

pytestmark = [pytest.mark.faults, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

CYCLES = int(os.environ.get("KAFKITE_FAULT_CYCLES", "100" if SLOW else "2"))
EVENTS, TXNS, PROBE = "events", "txns", "probe"
EVENT_PARTITIONS, TXN_PARTITIONS = 6, 3
GROUP = "faults-group"


@pytest.fixture(scope="module", autouse=True)
def _network_tools() -> None:
    reason = ensure_tools()
    if reason:
        if os.environ.get("CI", "") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


def run_schedule(schedule: str, root: Path, cycles: int, seed: int) -> dict[str, Any]:
    """Run ``cycles`` cycles of ``schedule`` under load; the summary (with every anomaly)."""
    h = History()
    cluster = FaultCluster(root, h).start()
    started = time.monotonic()
    try:
        create_topics(
            cluster.client_ns, cluster.bootstrap, {EVENTS: EVENT_PARTITIONS, TXNS: TXN_PARTITIONS, PROBE: 1}
        )
        w = Workloads(cluster.client_ns, cluster.bootstrap, h)
        w.idempotent_producer("p1", EVENTS)
        w.idempotent_producer("p2", EVENTS)
        w.transactional_producer("tx1", TXNS, TXN_PARTITIONS)
        for i in range(3):
            w.group_member(GROUP, EVENTS, i)
        for name, b in cluster.brokers.items():
            w.prober(name, b.bootstrap, PROBE)
        time.sleep(4)
        rng = random.Random(seed)
        for cycle in range(cycles):
            h.add("cycle", n=cycle)
            SCHEDULES[schedule](cluster, rng)
            time.sleep(rng.uniform(1.0, 3.0))
        cluster.heal()
        cluster.ensure_running()
        time.sleep(5)
        stuck = w.stop()
        final = read_all(cluster.client_ns, cluster.bootstrap, EVENTS, committed=False)
        txn_read = read_all(cluster.client_ns, cluster.bootstrap, TXNS, committed=True)
        t_invoke = h.now()
        offsets = committed_offsets(cluster.client_ns, cluster.bootstrap, GROUP, EVENTS, EVENT_PARTITIONS)
        h.add("committed", group=GROUP, member="final", offsets=offsets, t_invoke=t_invoke)
        headers = read_headers(cluster.client_ns, cluster.bootstrap, EVENTS, EVENT_PARTITIONS)
        (root / "headers.json").write_text(json.dumps(headers))
        (root / "final.json").write_text(
            json.dumps(
                {
                    t: {p: [(o, v.decode()) for o, v in r] for p, r in read.items()}
                    for t, read in ((EVENTS, final), (TXNS, txn_read))
                }
            )
        )
    finally:
        cluster.stop(check=False)
        h.write(root / "history.jsonl")
    seen = {v.decode() for records in txn_read.values() for _, v in records}
    known = {v for e in h.of("txn") for v in e["values"]}
    anomalies = (
        check_produce(h.of("send", "ack", "fail"), final)
        + check_transactions(h.of("txn"), seen)
        + check_no_strays(seen, known, "tx1-")
        + check_ownership(h.of("assign"))
        + check_commits(h.of("commit", "committed"))
        + check_hangs(h.of("probe"), h.of("fault"))
        + [{"kind": "hang", "workload": name} for name in stuck]
        + [{"kind": "hang", "final_read": EVENTS, "partition": p} for p in final.stuck]
        + [{"kind": "hang", "final_read": TXNS, "partition": p} for p in txn_read.stuck]
        + check_tracebacks({name: b.log_text() for name, b in cluster.brokers.items()})
    )
    ops = len(h.of("send")) + len(h.of("txn")) + len(h.of("commit")) + len(h.of("probe"))
    summary = {
        "schedule": schedule,
        "cycles": cycles,
        "seed": seed,
        "seconds": round(time.monotonic() - started),
        "operations": ops,
        "acked": len(h.of("ack")),
        "transactions": len(h.of("txn")),
        "commits": len([e for e in h.of("commit") if e["ok"]]),
        "anomalies": summarize(anomalies),
        "examples": anomalies[:20],
        "workload_errors": w.errors,
    }
    (root / "summary.json").write_text(json.dumps(summary, indent=1))
    record = os.environ.get("KAFKITE_FAULTS_RESULTS")
    if record:
        with open(record, "a") as f:
            f.write(json.dumps(summary) + "\n")
    return summary


@pytest.mark.timeout(600 + CYCLES * 30)
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_fault_schedule(schedule: str, tmp_path: Path) -> None:
    seed = int(os.environ.get("KAFKITE_FAULT_SEED", "0")) or random.randrange(1 << 30)
    summary = run_schedule(schedule, tmp_path, CYCLES, seed)
    assert not summary["workload_errors"], summary["workload_errors"]
    assert summary["acked"] > 0 and summary["transactions"] > 0 and summary["commits"] > 0, summary
    assert not any(summary["anomalies"].values()), json.dumps(summary, indent=1)
