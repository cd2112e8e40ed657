"""``kafkite migrate mirror`` between two kafkite brokers: copy, verify, translate offsets, stop, resume."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer
from helpers import SLOW, BrokerFactory
from test_migrate_support import (
    check_no_tracebacks,
    cli_command,
    cli_env,
    create_topic,
    produce_numbered,
    run,
    run_cli,
    wait_for,
)

from kafkite.client import KafkaClient
from kafkite.migrate.mirror import Mirror, MirrorError, MirrorOptions

pytestmark = pytest.mark.timeout(600)
PARTITIONS = 6
PRE_EXISTING = 37  # records already on the target, so target offsets differ from source offsets


def seq_of(value: bytes) -> int:
    return int(value.split(b"-")[1])


async def seed_source(bootstrap: str, topic: str, per_partition: int) -> None:
    async with KafkaClient(bootstrap) as c:
        await create_topic(c, topic, PARTITIONS)
        await produce_numbered(c, topic, PARTITIONS, per_partition)


async def seed_target(bootstrap: str, topic: str) -> None:
    async with KafkaClient(bootstrap) as c:
        await create_topic(c, topic, PARTITIONS)
        await produce_numbered(c, topic, PARTITIONS, PRE_EXISTING, start=900_000)


async def ends(bootstrap: str, topic: str) -> dict[int, int]:
    async with KafkaClient(bootstrap) as c:
        await c.refresh_metadata([topic])
        return await c.list_offsets(topic, list(range(PARTITIONS)), -1)


async def commit(bootstrap: str, group: str, offsets: dict[tuple[str, int], int]) -> None:
    async with KafkaClient(bootstrap) as c:
        errs = await c.commit_offsets(group, {k: (v, f"meta-{group}") for k, v in offsets.items()})
        assert not any(errs.values()), errs


async def committed(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    async with KafkaClient(bootstrap) as c:
        return {k: off for k, (off, _) in (await c.committed_offsets(group)).items()}


def consume_group(bootstrap: str, topic: str, group: str, expected: int) -> dict[int, list[int]]:
    """Consume ``expected`` records with a real consumer group; the sequence numbers seen per partition."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",  # a missing translated offset would re-read the target from 0
            "enable.auto.commit": False,
            "fetch.max.bytes": 8 * 1024 * 1024,
        }
    )
    seen: dict[int, list[int]] = {}
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + 120
        n = 0
        while n < expected and time.monotonic() < deadline:
            for m in c.consume(10_000, 1.0):
                assert m.error() is None, m.error()
                seen.setdefault(m.partition(), []).append(seq_of(m.value()))
                n += 1
        # Nothing more arrives: no duplicates past the end.
        extra = c.consume(1000, 2.0)
        assert not [m for m in extra if m.error() is None], "records beyond the mirrored ones"
    finally:
        c.close()
    return seen


@pytest.mark.slow
def test_mirror_copies_verifies_and_translates_groups(broker_factory: BrokerFactory, tmp_path: Path) -> None:
    total = 1_000_000 if SLOW else 100_002
    per = total // PARTITIONS
    src, dst = broker_factory(), broker_factory()
    topic = "events"
    run(seed_source(src.bootstrap, topic, per))
    run(seed_target(dst.bootstrap, topic))
    resume_at = {p: per * (p + 1) // 8 for p in range(PARTITIONS)}
    run(commit(src.bootstrap, "billing", {(topic, p): off for p, off in resume_at.items()}))
    run(commit(src.bootstrap, "caught-up", {(topic, p): per for p in range(PARTITIONS)}))
    run(commit(src.bootstrap, "from-start", {(topic, p): 0 for p in range(PARTITIONS)}))

    report = tmp_path / "report.json"
    cp = tmp_path / "cp.json"
    proc = run_cli(
        "mirror", "--source", src.bootstrap, "--target", dst.bootstrap, "--topics", topic,
        "--checkpoint", str(cp), "--report", str(report), timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "mirror [" in proc.stderr and "verify [" in proc.stderr
    rep = json.loads(report.read_text())
    assert rep["completed"] and rep["verified"] and rep["copied"] == per * PARTITIONS
    assert len(rep["verification"]) == PARTITIONS
    for v in rep["verification"]:
        assert v["source_records"] == v["target_records"] == per
        assert v["source_sha256"] == v["target_sha256"]
    assert run(ends(dst.bootstrap, topic)) == {p: PRE_EXISTING + per for p in range(PARTITIONS)}

    # Translated offsets: the same messages, at the target's own offsets.
    assert run(committed(dst.bootstrap, "billing")) == {
        (topic, p): PRE_EXISTING + off for p, off in resume_at.items()
    }
    assert run(committed(dst.bootstrap, "caught-up")) == {
        (topic, p): PRE_EXISTING + per for p in range(PARTITIONS)
    }
    assert run(committed(dst.bootstrap, "from-start")) == {
        (topic, p): PRE_EXISTING for p in range(PARTITIONS)
    }

    # A consumer of the group resumes at the same message, skipping and repeating nothing.
    expected = sum(per - off for off in resume_at.values())
    seen = consume_group(dst.bootstrap, topic, "billing", expected)
    for p in range(PARTITIONS):
        base = p * 10_000_000
        assert seen.get(p, []) == list(range(base + resume_at[p], base + per)), f"partition {p}"

    # Running again copies nothing and still verifies.
    again = run_cli(
        "mirror", "--source", src.bootstrap, "--target", dst.bootstrap, "--topics", topic,
        "--checkpoint", str(cp), "--json", "--no-progress",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["copied"] == 0
    assert run(ends(dst.bootstrap, topic)) == {p: PRE_EXISTING + per for p in range(PARTITIONS)}
    check_no_tracebacks(src)
    check_no_tracebacks(dst)


def _progress(cp: Path) -> int:
    try:
        data = json.loads(cp.read_text())
    except (OSError, ValueError):
        return 0
    return sum(p["copied"] for p in data["partitions"])


@pytest.mark.parametrize("how", ["sigint", "sigkill"])
def test_interrupted_mirror_resumes_without_duplicates(
    broker_factory: BrokerFactory, tmp_path: Path, how: str
) -> None:
    per = 20_000
    src, dst = broker_factory(), broker_factory()
    topic = "resumable"
    run(seed_source(src.bootstrap, topic, per))
    run(seed_target(dst.bootstrap, topic))
    run(commit(src.bootstrap, "app", {(topic, p): per // 2 + p for p in range(PARTITIONS)}))
    cp = tmp_path / "cp.json"
    args = ["mirror", "--source", src.bootstrap, "--target", dst.bootstrap, "--checkpoint", str(cp)]
    # Small batches so the copy takes long enough to be interrupted half-way.
    proc = subprocess.Popen(
        cli_command(*args, "--batch-bytes", "4096", "--fetch-bytes", "65536"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        wait_for(lambda: _progress(cp) > 2000 or proc.poll() is not None, timeout=60)
        assert proc.poll() is None, "the mirror finished before it could be interrupted"
        proc.send_signal(signal.SIGINT if how == "sigint" else signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if how == "sigint":
        assert proc.returncode == 130, out + err
        assert "interrupted" in out
    else:
        assert proc.returncode == -signal.SIGKILL
    copied_before = _progress(cp)
    target_before = run(ends(dst.bootstrap, topic))
    assert 0 < sum(target_before.values()) - PARTITIONS * PRE_EXISTING < PARTITIONS * per
    if how == "sigint":
        # A clean stop checkpoints exactly what the target acknowledged.
        assert sum(target_before.values()) - PARTITIONS * PRE_EXISTING == copied_before

    again = run_cli(*args, "--json", "--no-progress")
    assert again.returncode == 0, again.stdout + again.stderr
    rep = json.loads(again.stdout)
    assert rep["completed"] and rep["verified"]
    assert run(ends(dst.bootstrap, topic)) == {p: PRE_EXISTING + per for p in range(PARTITIONS)}
    assert run(committed(dst.bootstrap, "app")) == {
        (topic, p): PRE_EXISTING + per // 2 + p for p in range(PARTITIONS)
    }
    check_no_tracebacks(dst)


def test_stale_checkpoint_is_reconciled(broker_factory: BrokerFactory, tmp_path: Path) -> None:
    """Records the target acknowledged after the last checkpoint write are matched, never copied twice."""
    per = 3000
    src, dst = broker_factory(), broker_factory()
    topic = "stale"
    run(seed_source(src.bootstrap, topic, per))
    run(seed_target(dst.bootstrap, topic))
    cp = tmp_path / "cp.json"
    stale = tmp_path / "stale.json"

    async def mirror(stop_after: int | None) -> dict[str, object]:
        stop = asyncio.Event()
        async with KafkaClient(src.bootstrap) as s, KafkaClient(dst.bootstrap) as t:
            opts = MirrorOptions(topics=[topic], checkpoint=cp, batch_bytes=2048, progress=False)
            m = Mirror(s, t, src.bootstrap, dst.bootstrap, opts, stop)
            if stop_after is not None:

                async def watch() -> None:
                    while m._copied_now < stop_after:
                        await asyncio.sleep(0.001)
                    stop.set()

                watcher = asyncio.create_task(watch())
            result = await m.run()
            if stop_after is not None:
                watcher.cancel()
            return result.as_json()

    first = run(mirror(1000))
    assert first["interrupted"] and not first["completed"]
    shutil.copy(cp, stale)
    second = run(mirror(None))
    assert second["completed"] and second["verified"]
    assert second["copied"] == PARTITIONS * per - first["copied"]
    after_second = json.loads(cp.read_text())["partitions"]
    full = run(ends(dst.bootstrap, topic))
    assert full == {p: PRE_EXISTING + per for p in range(PARTITIONS)}
    # Roll the checkpoint back: the target holds every record the stale file does not know about.
    shutil.copy(stale, cp)
    third = run(mirror(None))
    assert third["completed"] and third["verified"] and third["copied"] == 0
    assert run(ends(dst.bootstrap, topic)) == full
    # The offset map was rebuilt exactly: the same state as the checkpoint the completed run left.
    assert json.loads(cp.read_text())["partitions"] == after_second
    for v in third["verification"]:  # type: ignore[union-attr]
        assert v["source_records"] == v["target_records"] == per


def test_mirror_copies_committed_transactions_only(broker_factory: BrokerFactory, tmp_path: Path) -> None:
    """Aborted transactions and transaction markers stay behind; offsets after them translate exactly."""
    from confluent_kafka import Producer

    src, dst = broker_factory(), broker_factory()
    topic = "ledger"
    run(create_only(src.bootstrap, topic))
    p = Producer({"bootstrap.servers": src.bootstrap, "transactional.id": "ledger-tx", "linger.ms": 0})
    p.init_transactions(20)
    for txn, commit_it in enumerate([True, False, True, False, True]):
        p.begin_transaction()
        for i in range(10):
            p.produce(topic, key=b"k", value=f"value-{txn * 100 + i}".encode(), partition=0)
        p.flush(10)  # an abort would drop what was not sent yet
        if commit_it:
            p.commit_transaction(20)
        else:
            p.abort_transaction(20)
    p.flush(10)
    src_end = run(ends(src.bootstrap, topic))[0]
    assert src_end > 30  # 50 records plus markers, aborted ones included
    # The group stopped right after the second committed transaction (past an aborted one and markers).
    after_second = 2 * 11 + 11  # two committed transactions and one aborted, each with its marker
    run(commit(src.bootstrap, "auditor", {(topic, 0): after_second}))
    proc = run_cli(
        "mirror", "--source", src.bootstrap, "--target", dst.bootstrap, "--topics", topic,
        "--checkpoint", str(tmp_path / "cp.json"), "--json", "--no-progress",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["verified"] and rep["copied"] == 30, (tmp_path / "cp.json").read_text()
    assert rep["groups"][0]["translated"] == {f"{topic}/0": [after_second, 20]}, (
        tmp_path / "cp.json"
    ).read_text()
    seen = consume_group(dst.bootstrap, topic, "auditor", 10)
    assert seen == {0: list(range(400, 410))}
    assert run(ends(dst.bootstrap, topic))[0] == 30


async def create_only(bootstrap: str, topic: str) -> None:
    async with KafkaClient(bootstrap) as c:
        await create_topic(c, topic, PARTITIONS)


def test_exactly_once_copy_finds_and_skips_a_refused_record(
    broker_factory: BrokerFactory, tmp_path: Path
) -> None:
    """A batch the target refuses is split inside the transaction until the record refused is found: a
    rehearsal (--skip-rejected) skips and reports it, otherwise the mirror stops and says which it is."""
    from test_migrate_support import record

    from kafkite.protocol.records import build_batch

    src, dst = broker_factory(), broker_factory()
    topic = "sizes"

    async def seed() -> None:
        async with KafkaClient(src.bootstrap) as c:
            await create_topic(c, topic, 1)
            recs = [record(i) for i in range(10)] + [record(10, 6000)] + [record(i) for i in range(11, 20)]
            assert (await c.produce(topic, {0: build_batch(recs)}))[0].error_code == 0
        async with KafkaClient(dst.bootstrap) as c:
            await create_topic(c, topic, 1, {"max.message.bytes": "3000"})

    run(seed())
    args = [
        "mirror",
        "--source",
        src.bootstrap,
        "--target",
        dst.bootstrap,
        "--topics",
        topic,
        "--exactly-once",
    ]
    refused = run_cli(*args, "--name", "strict", "--no-progress", "--json")
    assert refused.returncode == 1
    assert "the target refused sizes/0 offset 10: MESSAGE_TOO_LARGE" in refused.stdout
    proc = run_cli(*args, "--name", "rehearsal", "--skip-rejected", "--no-progress", "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # complete, but the target lacks one record
    rep = json.loads(proc.stdout)
    assert rep["completed"] and rep["delivery"]["mode"] == "exactly-once"
    assert rep["replay"][0]["rejections"] == {"MESSAGE_TOO_LARGE": 1}
    v = rep["verification"][0]
    assert (v["source_records"], v["target_records"], v["skipped"]) == (20, 19, 1)
    c = Consumer({"bootstrap.servers": dst.bootstrap, "group.id": "x", "isolation.level": "read_committed"})
    try:
        from confluent_kafka import TopicPartition

        c.assign([TopicPartition(topic, 0, 0)])
        got = []
        deadline = time.monotonic() + 30
        while len(got) < 19 and time.monotonic() < deadline:
            got += [m for m in c.consume(100, 0.5) if m.error() is None]
    finally:
        c.close()
    assert [seq_of(m.value()) for m in got] == [i for i in range(20) if i != 10]
    check_no_tracebacks(dst)


def test_another_writer_on_the_target_is_not_taken_for_copies(
    broker_factory: BrokerFactory, tmp_path: Path
) -> None:
    """A record written to the target by something else while the mirror was down is refused at restart,
    instead of being counted as the copy of the next source record (which would lose that record)."""
    from test_migrate_support import record

    from kafkite.protocol.records import build_batch

    per = 500
    src, dst = broker_factory(), broker_factory()
    topic = "shared"
    run(seed_source(src.bootstrap, topic, per))
    cp = tmp_path / "cp.json"

    async def mirror(stop_after: int | None) -> dict[str, object]:
        stop = asyncio.Event()
        async with KafkaClient(src.bootstrap) as s, KafkaClient(dst.bootstrap) as t:
            opts = MirrorOptions(topics=[topic], checkpoint=cp, batch_bytes=2048, progress=False)
            m = Mirror(s, t, src.bootstrap, dst.bootstrap, opts, stop)
            watcher = None
            if stop_after is not None:

                async def watch() -> None:
                    while m._copied_now < stop_after:
                        await asyncio.sleep(0.001)
                    stop.set()

                watcher = asyncio.create_task(watch())
            result = await m.run()
            if watcher is not None:
                watcher.cancel()
            return result.as_json()

    first = run(mirror(300))
    assert first["interrupted"]

    async def intrude() -> None:
        async with KafkaClient(dst.bootstrap) as c:
            await c.refresh_metadata([topic])
            got = await c.produce(topic, {0: build_batch([record(999_999)])})
            assert got[0].error_code == 0

    run(intrude())
    with pytest.raises(MirrorError, match="is not a copy of source offset"):
        run(mirror(None))
