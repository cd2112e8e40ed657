"""Cutover rehearsals: a confluent-kafka consumer group consuming on the source stops, ``kafkite migrate
cutover`` moves it, and a consumer of the same group on the target continues from exactly the next record;
onto a Kafka target (the mirror asked over its HTTP endpoint, and a cutover running its own mirror), and onto
an OCI Streaming REST target read back with the oci SDK."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from helpers import BrokerFactory
from test_migrate_live_support import (
    GroupConsumer,
    MirrorProcess,
    SteadyProducer,
    check_continuation,
)
from test_migrate_support import check_no_tracebacks, run_cli

pytestmark = pytest.mark.timeout(600)
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics(
        [NewTopic(t, n, 1) for t, n in topics.items()], operation_timeout=10
    ).values():
        f.result(15)


def cutover_cli(*args: str, report: Path) -> Any:
    """Run the cutover with a report; without matplotlib, check the error names the extra, then go on
    without the plot."""
    proc = run_cli("cutover", *args, "--report", str(report), timeout=300)
    if not HAVE_MATPLOTLIB:
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "kafkite[plot]" in proc.stderr
        proc = run_cli("cutover", *args, "--report", str(report), "--no-plot", timeout=300)
    return proc


def check_report(report: Path, group: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(report.with_suffix(".json").read_text())
    md = report.with_suffix(".md").read_text()
    assert f"group `{group}`" in md and "switch window" in md and "What to change" in md
    assert data["verified"] and data["exact"]
    assert data["switch_window_seconds"] > 0
    assert data["lag_history"], "the lag over time is recorded"
    if HAVE_MATPLOTLIB:
        assert report.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "![lag over time]" in md
    return data


def test_cutover_group_continues_exactly_on_kafka_target(
    broker_factory: BrokerFactory, tmp_path: Path
) -> None:
    src, dst = broker_factory(), broker_factory()
    create_topics(src.bootstrap, {"orders": 3, "payments": 2})
    producer = SteadyProducer(src.bootstrap, [("orders", -1), ("payments", -1)], rate=300).start()
    app = GroupConsumer(src.bootstrap, "billing", ["orders", "payments"]).start()
    mirror = MirrorProcess(
        tmp_path,
        "--source", src.bootstrap, "--target", dst.bootstrap, "--follow", "--topics", "orders,payments",
        "--checkpoint", str(tmp_path / "cp.json"), "--group-interval", "0.5", "--metadata-interval", "0.5",
    )  # fmt: skip
    moved = GroupConsumer(dst.bootstrap, "billing", ["orders", "payments"])
    try:
        mirror.start()
        mirror.wait(lambda s: s["records_copied"] > 500)
        # The group's offsets follow continuously while it consumes on the source.
        mirror.wait(lambda s: any(g["group"] == "billing" and g["commits"] > 0 for g in s["groups"]), 30)
        assert app.count > 100
        app.stop()  # the application stops; the producers keep writing to the source
        report = tmp_path / "cutover"
        proc = cutover_cli("--mirror", mirror.url, "--group", "billing", report=report)
        assert proc.returncode == 0, proc.stdout + proc.stderr + mirror.logs()
        assert "switch window" in proc.stdout
        assert f"bootstrap.servers: {src.bootstrap} -> {dst.bootstrap}" in proc.stdout
        assert "group.id stays billing" in proc.stdout
        data = check_report(report, "billing")
        assert sorted(data["topics"]) == ["orders", "payments"]
        assert len(data["verification"]) == 5
        # The application starts again against the target, with the same group id.
        moved.start()
        time.sleep(2)
        producer.stop()
        mirror.caught_up()
        deadline = time.monotonic() + 60
        while moved.count + app.count < len(producer.acked) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)  # nothing more arrives: no duplicate past the end
        rc, out, err = mirror.stop()
        assert rc == 0, out + err
    finally:
        moved.stop()
        mirror.close()
    check_continuation(producer.acked, app.seen, moved.seen)
    check_no_tracebacks(src)
    check_no_tracebacks(dst)


def test_cutover_running_its_own_exactly_once_mirror(broker_factory: BrokerFactory, tmp_path: Path) -> None:
    """``migrate cutover --source --target``: the cutover follows the source itself (here exactly once)."""
    src, dst = broker_factory(), broker_factory()
    create_topics(src.bootstrap, {"ledger": 2})
    producer = SteadyProducer(src.bootstrap, [("ledger", -1)], rate=200).start()
    app = GroupConsumer(src.bootstrap, "auditors", ["ledger"]).start()
    moved = GroupConsumer(dst.bootstrap, "auditors", ["ledger"])
    try:
        deadline = time.monotonic() + 30
        while app.count < 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        app.stop()
        report = tmp_path / "reports" / "ledger"
        proc = cutover_cli(
            "--source", src.bootstrap, "--target", dst.bootstrap, "--topics", "ledger", "--exactly-once",
            "--name", "ledger-move", "--group", "auditors", "--no-progress", report=report,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "isolation.level=read_committed" in proc.stdout
        data = check_report(report, "auditors")
        assert data["delivery"]["mode"] == "exactly-once"
        # The cutover's mirror stopped with it: a mirror following from its state carries the rest over.
        moved.start()
        time.sleep(1)
        producer.stop()
        mirror = MirrorProcess(
            tmp_path,
            "--source", src.bootstrap, "--target", dst.bootstrap, "--topics", "ledger", "--follow",
            "--exactly-once", "--name", "ledger-move", "--group-interval", "0",
        )  # fmt: skip
        try:
            mirror.start()
            mirror.caught_up()
            deadline = time.monotonic() + 60
            while moved.count + app.count < len(producer.acked) and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(1)
            rc, out, err = mirror.stop()
            assert rc == 0, out + err
        finally:
            mirror.close()
    finally:
        moved.stop()
        producer.stop()
    check_continuation(producer.acked, app.seen, moved.seen)
    check_no_tracebacks(src)
    check_no_tracebacks(dst)


def oci_sdk(tmp_path: Path, rest_url: str) -> tuple[Any, Any, Path]:
    """The oci SDK (admin and data clients), and an OCI config file with a fresh key for the CLI."""
    import oci
    from test_streaming_support import TENANCY, USER, make_api_key

    private, _, fp = make_api_key(tmp_path)
    cfg = tmp_path / "oci-config"
    cfg.write_text(
        f"[DEFAULT]\nuser={USER}\nfingerprint={fp}\nkey_file={private}\ntenancy={TENANCY}\nregion=us-phoenix-1\n"
    )
    config = oci.config.from_file(str(cfg))
    none = oci.retry.NoneRetryStrategy()
    admin = oci.streaming.StreamAdminClient(config, service_endpoint=rest_url, retry_strategy=none)
    data = oci.streaming.StreamClient(config, service_endpoint=rest_url, retry_strategy=none)
    return admin, data, cfg


def rest_group_read(
    data: Any, stream_id: str, group: str, want: int, timeout: float = 60
) -> dict[int, list[int]]:
    """Read with an OCI group cursor (GetMessages, committing on get) until ``want`` messages arrived, then
    check nothing more comes: the sequence numbers per partition."""
    from oci.streaming.models import CreateGroupCursorDetails

    details = CreateGroupCursorDetails(
        group_name=group, type="TRIM_HORIZON", commit_on_get=True, instance_name="moved-app"
    )
    cursor = data.create_group_cursor(stream_id, details).data.value
    seen: dict[int, list[int]] = {}
    n = 0
    deadline = time.monotonic() + timeout
    quiet_until = None
    while time.monotonic() < deadline:
        resp = data.get_messages(stream_id, cursor, limit=500)
        cursor = resp.headers["opc-next-cursor"]
        for m in resp.data:
            value = base64.b64decode(m.value).decode()
            seen.setdefault(int(m.partition), []).append(int(re.match(r"value-(\d+)", value).group(1)))  # type: ignore[union-attr]
            n += 1
        if n >= want:
            quiet_until = quiet_until or time.monotonic() + 1.5
            if time.monotonic() > quiet_until:
                break
        if not resp.data:
            time.sleep(0.25)  # 5 GetMessages a second per partition and group under the OCI profile
    return seen


def test_cutover_to_oci_streaming_rest_target(broker_factory: BrokerFactory, tmp_path: Path) -> None:
    """The same move onto OCI Streaming's REST API: the mirror puts messages into a stream pool (signed by the
    oci SDK), commits the group's offsets through the pool's Kafka endpoint (SASL ``tenancy/user/poolId``),
    and the application, now an oci SDK group cursor of the same name, continues from the next message."""
    import oci
    from helpers import free_port
    from oci.streaming.models import CreateStreamPoolDetails, KafkaSettings
    from test_streaming_support import COMPARTMENT, TENANCY

    src = broker_factory()
    rest_url = f"http://127.0.0.1:{free_port()}"
    dst = broker_factory(f"rest.listeners={rest_url}", f"sasl.plain.users={TENANCY}/mirror=secret")
    create_topics(src.bootstrap, {"rest-orders": 3})
    admin, data, cfg = oci_sdk(tmp_path, rest_url)
    pool = admin.create_stream_pool(
        CreateStreamPoolDetails(
            compartment_id=COMPARTMENT,
            name="migrated",
            kafka_settings=KafkaSettings(
                num_partitions=1, auto_create_topics_enable=False, log_retention_hours=24
            ),
        )
    ).data
    pool = oci.wait_until(
        admin, admin.get_stream_pool(pool.id), "lifecycle_state", "ACTIVE", max_wait_seconds=30
    ).data
    props = tmp_path / "pool.properties"
    props.write_text(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n"
        f"sasl.username={TENANCY}/mirror/{pool.id}\nsasl.password=secret\n"
    )
    # Keys decide partitions on both sides: the source producer hashes them as Java clients and OCI do.
    producer = SteadyProducer(
        src.bootstrap, [("rest-orders", -1)], rate=150, partitioner="murmur2_random"
    ).start()
    app = GroupConsumer(src.bootstrap, "billing", ["rest-orders"]).start()
    mirror = MirrorProcess(
        tmp_path,
        "--source", src.bootstrap, "--target", rest_url, "--pool", pool.id, "--oci-config", str(cfg),
        "--target-config", str(props), "--topics", "rest-orders", "--follow", "--group-interval", "0.5",
        "--compartment", COMPARTMENT, "--checkpoint", str(tmp_path / "cp.json"),
    )  # fmt: skip
    try:
        mirror.start()
        mirror.wait(lambda s: s["records_copied"] > 300, 90)
        mirror.wait(lambda s: any(g["group"] == "billing" and g["commits"] > 0 for g in s["groups"]), 30)
        app.stop()
        report = tmp_path / "rest-cutover"
        proc = cutover_cli("--mirror", mirror.url, "--group", "billing", report=report)
        assert proc.returncode == 0, proc.stdout + proc.stderr + mirror.logs()
        assert f"sasl.username=<tenancy>/<user>/{pool.id}" in proc.stdout
        assert f"bootstrap.servers: {src.bootstrap} -> {dst.bootstrap}" in proc.stdout
        streams = admin.list_streams(stream_pool_id=pool.id, name="rest-orders").data
        assert len(streams) == 1 and streams[0].partitions == 3
        assert f"topic rest-orders -> stream rest-orders (stream OCID {streams[0].id})" in proc.stdout
        check = check_report(report, "billing")
        assert all(v["compared"] == "keys and values" for v in check["verification"])
        time.sleep(1)
        producer.stop()
        mirror.caught_up(120)
        left = len(producer.acked) - app.count
        seen = rest_group_read(data, streams[0].id, "billing", left)
        rc, out, err = mirror.stop()
        assert rc == 0, out + err
    finally:
        mirror.close()
        producer.stop()
    check_continuation(producer.acked, app.seen, {("rest-orders", p): s for p, s in seen.items()})
    check_no_tracebacks(src)
    check_no_tracebacks(dst)
