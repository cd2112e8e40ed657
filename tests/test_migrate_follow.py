"""``kafkite migrate mirror --follow`` between two kafkite brokers while a confluent-kafka producer writes:
new records, a topic created mid-way, partitions added, config changes, metrics; at least once and exactly
once with the mirror killed (SIGKILL) and restarted."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)
from helpers import BrokerFactory
from test_migrate_live_support import MirrorProcess, SteadyProducer, assert_same_records, read_partition
from test_migrate_support import check_no_tracebacks, run

from kafkite.client import KafkaClient
from kafkite.metrics.registry import parse_text

pytestmark = pytest.mark.timeout(600)


def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(t, n, 1) for t, n in topics.items()], operation_timeout=10)
    for f in fs.values():
        f.result(15)


def topic_config(bootstrap: str, topic: str, name: str) -> str | None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    got = admin.describe_configs([res])[res].result(15)
    entry = got.get(name)
    return None if entry is None else str(entry.value)


def test_follow_picks_up_records_topics_partitions_and_configs(
    broker_factory: BrokerFactory, tmp_path: Path
) -> None:
    src, dst = broker_factory(), broker_factory()
    create_topics(src.bootstrap, {"live-a": 3, "live-b": 2, "live-c": 1, "other": 1})
    targets = [("live-a", -1), ("live-b", -1), ("live-c", 0), ("other", 0)]
    producer = SteadyProducer(src.bootstrap, targets, rate=400).start()
    mirror = MirrorProcess(
        tmp_path,
        "--source", src.bootstrap, "--target", dst.bootstrap, "--follow", "--topics-regex", "live-.*",
        "--checkpoint", str(tmp_path / "cp.json"), "--metadata-interval", "0.5", "--group-interval", "1",
        "--display-interval", "0.5",
    )  # fmt: skip
    try:
        mirror.start()
        mirror.wait(lambda s: s["records_copied"] > 300)
        # A topic created mid-way, a partition added, a config changed: all followed.
        create_topics(src.bootstrap, {"live-d": 2})
        targets.append(("live-d", -1))
        admin = AdminClient({"bootstrap.servers": src.bootstrap})
        admin.create_partitions([NewPartitions("live-c", 2)])["live-c"].result(15)
        targets.append(("live-c", 1))
        entry = ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET)
        res = ConfigResource(ConfigResource.Type.TOPIC, "live-a", incremental_configs=[entry])
        admin.incremental_alter_configs([res])[res].result(15)
        mirror.wait(lambda s: "live-d" in s["topics"] and len(s["partitions"]) == 9, 60)
        # A group that committed one partition only: the others stay uncommitted on the target too (its
        # consumers start there by auto.offset.reset, as on the source).
        run(_commit(src.bootstrap, "partial", {("live-a", 0): 17, ("other", 0): 3}))
        mirror.wait(lambda s: any(g["group"] == "partial" and g["commits"] for g in s["groups"]), 60)
        time.sleep(3)
        producer.stop()
        status = mirror.caught_up()
        assert status["records_copied"] > 1000
        text = mirror.metrics()
        metrics = parse_text(text)
        for t, n in (("live-a", 3), ("live-b", 2), ("live-c", 2), ("live-d", 2)):
            for p in range(n):
                labels = (("partition", str(p)), ("topic", t))
                assert metrics[("kafkite_mirror_lag_records", labels)] == 0
                assert ("kafkite_mirror_seconds_since_last_record", labels) in metrics
        assert metrics[("kafkite_mirror_records_total", (("topic", "live-d"),))] > 0
        assert ("kafkite_mirror_records_per_second", ()) in metrics
        assert metrics[("kafkite_mirror_record_latency_seconds_count", ())] > 0
        assert not any(k[0] == "kafkite_mirror_lag_records" and ("topic", "other") in k[1] for k in metrics)
        rc, out, err = mirror.stop()
    finally:
        mirror.close()
    assert rc == 0, out + err
    assert "following 4 topic(s), 9 partition(s)" in err, err[-2000:]
    assert "at-least-once" in err
    assert "followed new topic live-d" in out
    assert "followed live-c from 1 to 2 partitions" in out
    assert "config change live-a" in out and "applied" in out
    assert topic_config(dst.bootstrap, "live-a", "retention.ms") == "7200000"
    n = assert_same_records(src.bootstrap, dst.bootstrap, ["live-a", "live-b", "live-c", "live-d"])
    assert n == sum(1 for a in producer.acked if a[0].startswith("live-"))
    assert read_partition(dst.bootstrap, "live-c", 1), "the added partition was mirrored"
    assert run(_committed(dst.bootstrap, "partial")) == {("live-a", 0): 17}
    check_no_tracebacks(src)
    check_no_tracebacks(dst)


async def _commit(bootstrap: str, group: str, offsets: dict[tuple[str, int], int]) -> None:
    async with KafkaClient(bootstrap) as c:
        errs = await c.commit_offsets(group, {tp: (off, None) for tp, off in offsets.items()})
        assert not any(errs.values()), errs


async def _committed(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    async with KafkaClient(bootstrap) as c:
        return {tp: off for tp, (off, _) in (await c.committed_offsets(group)).items()}


async def _target_state(bootstrap: str, name: str) -> int:
    async with KafkaClient(bootstrap) as c:
        await c.refresh_metadata([name])
        ends = await c.list_offsets(name, [0], -1)
        return int(ends[0])


@pytest.mark.parametrize("mode", ["exactly-once", "at-least-once"])
def test_sigkill_twice_neither_loses_nor_duplicates(
    broker_factory: BrokerFactory, tmp_path: Path, mode: str
) -> None:
    """Exactly once: the killed transactions are aborted and their state with them. At least once: the
    checkpoint is reconciled with the target's end offsets (exact while the mirror is the only writer)."""
    src, dst = broker_factory(), broker_factory()
    create_topics(src.bootstrap, {"eos-a": 3, "eos-b": 2, "eos-c": 1})
    producer = SteadyProducer(src.bootstrap, [("eos-a", -1), ("eos-b", -1), ("eos-c", 0)], rate=600).start()
    extra = (
        ["--exactly-once", "--name", "eos"]
        if mode == "exactly-once"
        else ["--checkpoint", str(tmp_path / "cp")]
    )
    mirror = MirrorProcess(
        tmp_path,
        "--source", src.bootstrap, "--target", dst.bootstrap, "--follow", "--topics", "eos-*",
        "--metadata-interval", "0.5", "--group-interval", "0", "--batch-bytes", "8192", *extra,
    )  # fmt: skip
    try:
        mirror.start()
        for _ in range(2):
            mirror.wait(lambda s: s["records_copied"] > 400)
            if mode == "exactly-once":
                mirror.wait(lambda s: s["transactions"]["committed"] > 3)
            time.sleep(0.3)  # copying goes on: it is killed mid-way
            mirror.kill9()
            mirror.start()
        mirror.wait(lambda s: s["records_copied"] > 200)
        producer.stop()
        mirror.caught_up()
        rc, out, err = mirror.stop()
    finally:
        mirror.close()
    assert rc == 0, out + err
    assert mode in err
    n = assert_same_records(src.bootstrap, dst.bootstrap, ["eos-a", "eos-b", "eos-c"])
    assert n == len(producer.acked) > 1000
    if mode == "exactly-once":
        # The killed transactions left aborted records on the target, hidden from read_committed readers.
        uncommitted = sum(
            len(read_partition(dst.bootstrap, t, p, **{"isolation.level": "read_uncommitted"}))
            for t, parts in (("eos-a", 3), ("eos-b", 2), ("eos-c", 1))
            for p in range(parts)
        )
        assert uncommitted >= n
        assert run(_target_state(dst.bootstrap, "__kafkite_mirror.eos")) > 0
    check_no_tracebacks(src)
    check_no_tracebacks(dst)


def test_follow_stops_on_sigterm_even_with_stderr_gone(broker_factory: BrokerFactory, tmp_path: Path) -> None:
    """A mirror whose stderr reader went away (a closed pipe) still stops on SIGTERM."""
    import signal
    import subprocess

    from helpers import free_port
    from test_migrate_support import cli_command, cli_env

    src, dst = broker_factory(), broker_factory()
    create_topics(src.bootstrap, {"quiet": 1})
    port = free_port()
    proc = subprocess.Popen(
        cli_command(
            "mirror", "--source", src.bootstrap, "--target", dst.bootstrap, "--topics", "quiet", "--follow",
            "--checkpoint", str(tmp_path / "cp.json"), "--metrics-listener", f"127.0.0.1:{port}",
            "--display-interval", "0.2",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=cli_env(),
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        proc.stderr.readline()  # it started
        proc.stderr.close()
        time.sleep(1.0)  # the display now writes into a closed pipe
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
