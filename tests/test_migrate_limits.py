"""With a plan, the mirror holds its writes to OCI's limits (1 MB/s per partition, 1 MB requests) instead of
running into the target's throttling: into kafkite under ``profile=oci`` over Kafka and over the REST API."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers import BrokerFactory, free_port
from test_migrate_support import check_no_tracebacks, create_topic, record, run, run_cli

from kafkite.client import KafkaClient
from kafkite.migrate.plan import make_plan, write_plan
from kafkite.migrate.survey import Inventory, PartitionInfo, Sample, TopicInfo
from kafkite.protocol.records import build_batch

pytestmark = pytest.mark.timeout(300)
VALUE = 64 * 1024
COUNT = 48  # 3 MB in one partition


async def seed(bootstrap: str, topic: str) -> None:
    async with KafkaClient(bootstrap) as c:
        await create_topic(c, topic, 1)
        for lo in range(0, COUNT, 8):
            batch = build_batch([record(i, VALUE) for i in range(lo, lo + 8)])
            assert (await c.produce(topic, {0: batch}))[0].error_code == 0


def plan_for(tmp_path: Path, source: str, topic: str) -> Path:
    p = PartitionInfo(0, 0, COUNT, write_bytes_per_sec=100_000.0)
    p.sample = Sample(
        records=8, batches=1, batch_bytes=8 * VALUE, record_bytes=8 * VALUE, max_record_bytes=VALUE
    )
    inv = Inventory(source, "src", 0, 5.0, [TopicInfo(topic, [p], {"retention.ms": "86400000"})], [])
    js, _ = write_plan(make_plan(inv, pool="migrated"), tmp_path / "plan")
    return js


def test_kafka_target_under_oci_profile_is_paced_not_throttled(
    broker_factory: BrokerFactory, tmp_path: Path
) -> None:
    src, dst = broker_factory(), broker_factory("profile=oci")
    run(seed(src.bootstrap, "paced"))
    plan = plan_for(tmp_path, src.bootstrap, "paced")
    t0 = time.monotonic()
    proc = run_cli(
        "mirror", "--source", src.bootstrap, "--target", dst.bootstrap, "--topics", "paced",
        "--plan", str(plan), "--checkpoint", str(tmp_path / "cp.json"), "--json", "--no-progress",
    )  # fmt: skip
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["completed"] and rep["verified"] and rep["copied"] == COUNT
    # 3 MB at 1 MB/s with one second of burst: two seconds at least, and the target never had to push back.
    assert elapsed > 2.0
    assert rep["replay"][0]["throttled_requests"] == 0
    check_no_tracebacks(dst)


def test_rest_target_under_oci_profile(broker_factory: BrokerFactory, tmp_path: Path) -> None:
    """Unsigned JSON to the gateway (no OCI config): PutMessages of at most 1 MB, 1 MB/s per partition."""
    src = broker_factory()
    url = f"http://127.0.0.1:{free_port()}"
    dst = broker_factory(f"rest.listeners={url}", "profile=oci")
    run(seed(src.bootstrap, "uploads"))
    plan = plan_for(tmp_path, src.bootstrap, "uploads")
    applied = run_cli("apply", str(plan), "--target", url, "--json")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    t0 = time.monotonic()
    proc = run_cli(
        "mirror", "--source", src.bootstrap, "--target", url, "--pool", "migrated", "--topics", "uploads",
        "--plan", str(plan), "--checkpoint", str(tmp_path / "cp.json"), "--json", "--no-progress",
    )  # fmt: skip
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["completed"] and rep["verified"] and rep["copied"] == COUNT
    assert rep["verification"][0]["compared"] == "keys and values"
    assert elapsed > 2.0
    assert "at-least-once" in rep["delivery"]["mode"] and "REST" in rep["delivery"]["window"]
    assert rep["replay"][0]["bytes"] >= COUNT * VALUE
    check_no_tracebacks(dst)
