"""Rehearsal: ``migrate mirror --replay-rate observed`` into a target under ``profile=oci`` reports the
throttling and the rejections an application producing at the observed rates would meet."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers import BrokerFactory
from test_migrate_support import MB, check_no_tracebacks, create_topic, record, run, run_cli

from kafkite.client import KafkaClient
from kafkite.migrate.plan import make_plan, write_plan
from kafkite.migrate.survey import Inventory, PartitionInfo, Sample, TopicInfo
from kafkite.protocol.records import build_batch

pytestmark = pytest.mark.timeout(180)
CLICK_BYTES = 64 * 1024
CLICKS = 64  # 4 MB


async def seed(bootstrap: str) -> None:
    async with KafkaClient(bootstrap) as c:
        await create_topic(c, "clicks", 1)
        await create_topic(c, "uploads", 1, {"max.message.bytes": str(3 * MB)})
        await create_topic(c, "profiles", 1, {"cleanup.policy": "compact"})
        for lo in range(0, CLICKS, 8):
            batch = build_batch([record(i, CLICK_BYTES) for i in range(lo, lo + 8)])
            assert (await c.produce("clicks", {0: batch}))[0].error_code == 0
        for recs in ([record(i) for i in range(3)], [record(3, 2 * MB)], [record(i) for i in range(4, 7)]):
            assert (await c.produce("uploads", {0: build_batch(recs)}))[0].error_code == 0
        assert (await c.produce("profiles", {0: build_batch([record(i) for i in range(20)])}))[
            0
        ].error_code == 0


def observed_plan(tmp_path: Path, source: str) -> Path:
    """A plan as ``migrate plan`` writes it, with clicks observed at 3 MB/s."""

    def topic(name: str, rate: float, configs: dict[str, str | None]) -> TopicInfo:
        p = PartitionInfo(0, 0, 0, write_bytes_per_sec=rate)
        p.sample = Sample(records=1, batches=1, batch_bytes=100, record_bytes=90, max_record_bytes=90)
        return TopicInfo(name, [p], {"retention.ms": "604800000", **configs})

    inv = Inventory(
        source,
        "src",
        0,
        5.0,
        [
            topic("clicks", 3 * MB, {}),
            topic("uploads", 2 * MB, {"max.message.bytes": str(3 * MB)}),
            topic("profiles", 100.0, {"cleanup.policy": "compact"}),
        ],
        [],
    )
    js, _ = write_plan(make_plan(inv), tmp_path / "plan")
    return js


async def target_state(bootstrap: str) -> dict[str, object]:
    async with KafkaClient(bootstrap) as c:
        await c.refresh_metadata()
        configs = await c.describe_topic_configs(["clicks", "uploads", "profiles"])
        ends = {t: (await c.list_offsets(t, [0], -1))[0] for t in ("clicks", "uploads", "profiles")}
        return {
            "partitions": {t: c.topics[t] for t in ("clicks", "uploads", "profiles")},
            "ends": ends,
            "policy": configs["profiles"].get("cleanup.policy"),
        }


def test_replay_at_observed_rate_reports_throttling_and_rejections(
    broker_factory: BrokerFactory, tmp_path: Path
) -> None:
    src = broker_factory()
    dst = broker_factory("profile=oci")
    run(seed(src.bootstrap))
    plan = observed_plan(tmp_path, src.bootstrap)
    report = tmp_path / "report.json"
    t0 = time.monotonic()
    proc = run_cli(
        "mirror", "--source", src.bootstrap, "--target", dst.bootstrap, "--plan", str(plan),
        "--replay-rate", "observed", "--replay-seconds", "20", "--checkpoint", str(tmp_path / "cp.json"),
        "--report", str(report), timeout=120,
    )  # fmt: skip
    elapsed = time.monotonic() - t0
    # Completed, but the target does not hold everything: the rehearsal exits non-zero and says why.
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rep = json.loads(report.read_text())
    assert rep["completed"] and not rep["errors"]
    replay = {r["topic"]: r for r in rep["replay"]}

    clicks = replay["clicks"]
    assert clicks["replay_bytes_per_sec"] == pytest.approx(3 * MB, rel=0.01)
    assert clicks["records"] == CLICKS and not clicks["rejections"]
    # OCI holds a partition to 1 MB/s: 4 MB take about 3 s past the first MB of burst, partly paced by the
    # replay rate and partly throttled (the mirror waits out each throttle_time_ms before writing again).
    assert clicks["throttled_requests"] > 0 and clicks["throttle_ms_total"] > 1000
    assert clicks["achieved_bytes_per_sec"] < 1.6 * MB
    assert elapsed > 2.5
    assert "throttled" in proc.stdout and "clicks" in proc.stdout

    uploads = replay["uploads"]
    assert uploads["rejections"] == {"MESSAGE_TOO_LARGE": 1}
    assert uploads["records"] == 6
    assert "uploads/0 offset 3" in uploads["rejection_examples"][0]
    assert "rejected" in proc.stdout and "MESSAGE_TOO_LARGE" in proc.stdout

    verdict = {v["partition"]: v for v in rep["verification"]}
    assert verdict["clicks/0"]["equal"] and verdict["profiles/0"]["equal"]
    assert not verdict["uploads/0"]["equal"] and verdict["uploads/0"]["skipped"] == 1
    assert (verdict["uploads/0"]["source_records"], verdict["uploads/0"]["target_records"]) == (7, 6)

    # Streams were created as planned (partitions for 3 MB/s and 2 MB/s), no compaction under the profile.
    state = run(target_state(dst.bootstrap))
    assert state["partitions"] == {"clicks": 3, "uploads": 2, "profiles": 1}
    assert state["ends"] == {"clicks": CLICKS, "uploads": 6, "profiles": 20}
    assert state["policy"] == "delete"
    check_no_tracebacks(src)
    check_no_tracebacks(dst)
