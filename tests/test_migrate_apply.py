"""``kafkite migrate apply``: a plan's pools and streams created over the Kafka admin API and over the OCI
Streaming admin REST API, idempotently."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import BrokerFactory, free_port
from test_migrate_support import check_no_tracebacks, run, run_cli
from test_migrate_unit import _inventory

from kafkite.client import ClientSecurity, KafkaClient
from kafkite.migrate.plan import make_plan, write_plan

pytestmark = pytest.mark.timeout(120)
HOUR_MS = 3_600_000
COMPARTMENT = "ocid1.compartment.oc1..migratetests"


def plan_file(tmp_path: Path, pool: str = "orders-pool") -> tuple[Path, dict[str, Any]]:
    plan = make_plan(_inventory(), pool=pool)
    js, _ = write_plan(plan, tmp_path / "plan")
    return js, plan


async def topic_state(
    bootstrap: str, names: list[str], security: ClientSecurity | None = None
) -> dict[str, Any]:
    async with KafkaClient(bootstrap, security=security) as c:
        await c.refresh_metadata()
        configs = await c.describe_topic_configs([n for n in names if n in c.topics])
        return {n: (c.topics.get(n), configs.get(n, {}).get("retention.ms")) for n in names}


def test_apply_over_kafka_admin(broker_factory: BrokerFactory, tmp_path: Path) -> None:
    target = broker_factory()
    js, plan = plan_file(tmp_path)
    proc = run_cli("apply", str(js), "--target", target.bootstrap, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    actions = json.loads(proc.stdout)
    assert [a["action"] for a in actions if a["kind"] == "pool"] == ["skipped"]
    streams = {s["name"]: s for s in plan["streams"]}
    assert {a["name"]: a["action"] for a in actions if a["kind"] == "stream"} == {
        n: "created" for n in streams
    }
    state = run(topic_state(target.bootstrap, list(streams)))
    for name, s in streams.items():
        assert state[name] == (s["partitions"], str(s["retention_hours"] * HOUR_MS)), name
    assert state["fast"][0] == 3 and state["longlived"][1] == str(168 * HOUR_MS)

    again = run_cli("apply", str(js), "--target", target.bootstrap, "--json")
    assert again.returncode == 0, again.stderr
    assert {a["action"] for a in json.loads(again.stdout) if a["kind"] == "stream"} == {"exists"}
    dry = run_cli("apply", str(js), "--target", target.bootstrap, "--dry-run")
    assert dry.returncode == 0 and "fast: exists" in dry.stdout
    check_no_tracebacks(target)


async def rest_streams(url: str, pool_id: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{url}/20180418/streams", params={"streamPoolId": pool_id, "limit": "50"}) as r,
    ):
        assert r.status == 200
        return list(await r.json())


async def rest_stream(url: str, stream_id: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(f"{url}/20180418/streams/{stream_id}") as r:
        assert r.status == 200
        return dict(await r.json())


@pytest.mark.parametrize("profile", ["default", "oci"])
def test_apply_over_oci_admin_rest(broker_factory: BrokerFactory, tmp_path: Path, profile: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    # The SASL listener secures Kafka: the REST gateway, unsigned here, runs open on purpose.
    target = broker_factory(
        f"rest.listeners={url}", f"profile={profile}", "security.open.surfaces=streaming,queue", start=False
    )
    sasl_port = free_port()
    target.overrides.append(
        f"listeners=PLAINTEXT://127.0.0.1:{target.port},SASL_PLAINTEXT://127.0.0.1:{sasl_port}"
    )
    target.start()
    js, plan = plan_file(tmp_path)
    proc = run_cli("apply", str(js), "--target", url, "--compartment", COMPARTMENT, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    actions = json.loads(proc.stdout)
    pools = [a for a in actions if a["kind"] == "pool"]
    assert (
        len(pools) == 1 and pools[0]["action"] == "created" and pools[0]["id"].startswith("ocid1.streampool")
    )
    pool_id = pools[0]["id"]
    created = {a["name"]: a for a in actions if a["kind"] == "stream"}
    planned = {s["name"]: s for s in plan["streams"]}
    assert {n: a["action"] for n, a in created.items()} == {n: "created" for n in planned}
    listed = {s["name"]: s for s in run(rest_streams(url, pool_id))}
    assert set(listed) == set(planned)
    for name, s in planned.items():
        got = run(rest_stream(url, created[name]["id"]))
        assert got["lifecycleState"] == "ACTIVE"
        assert got["partitions"] == s["partitions"] and got["retentionInHours"] == s["retention_hours"]
        assert got["streamPoolId"] == pool_id

    # The streams are Kafka topics of the pool: a client naming the pool in its SASL/PLAIN user sees them
    # with their partitions and retention; the default pool does not.
    sec = ClientSecurity("SASL_PLAINTEXT", "PLAIN", f"ocid1.tenancy.oc1..t/migrator/{pool_id}", "secret")
    state = run(topic_state(f"127.0.0.1:{sasl_port}", list(planned), sec))
    for name, s in planned.items():
        assert state[name] == (s["partitions"], str(s["retention_hours"] * HOUR_MS)), name
    assert run(topic_state(target.bootstrap, list(planned))) == {n: (None, None) for n in planned}

    again = run_cli("apply", str(js), "--target", url, "--compartment", COMPARTMENT, "--json")
    assert again.returncode == 0, again.stderr
    assert {(a["kind"], a["action"]) for a in json.loads(again.stdout)} == {
        ("pool", "exists"),
        ("stream", "exists"),
    }
    check_no_tracebacks(target)


def test_apply_with_signed_requests(broker_factory: BrokerFactory, tmp_path: Path) -> None:
    """A target that verifies OCI signatures: unsigned requests are refused, the SDK path signs them."""
    from test_streaming_support import TENANCY, USER, make_api_key

    private, public, fp = make_api_key(tmp_path)
    url = f"http://127.0.0.1:{free_port()}"
    target = broker_factory(
        f"rest.listeners={url}", "streaming.auth.enable=true", f"streaming.auth.public.keys={public}"
    )
    js, plan = plan_file(tmp_path)
    unsigned = run_cli("apply", str(js), "--target", url, "--compartment", COMPARTMENT)
    assert unsigned.returncode == 1 and "NotAuthenticated" in unsigned.stdout, (
        unsigned.stdout + unsigned.stderr
    )

    config = tmp_path / "oci-config"
    config.write_text(
        f"[migrator]\nuser={USER}\ntenancy={TENANCY}\nfingerprint={fp}\nkey_file={private}\nregion=us-phoenix-1\n"
    )
    args = ["apply", str(js), "--target", url, "--compartment", COMPARTMENT, "--json"]
    signed = run_cli(*args, "--oci-config", str(config), "--oci-profile", "migrator")
    assert signed.returncode == 0, signed.stdout + signed.stderr
    actions = json.loads(signed.stdout)
    assert {(a["kind"], a["action"]) for a in actions} == {("pool", "created"), ("stream", "created")}
    assert len([a for a in actions if a["kind"] == "stream"]) == len(plan["streams"])
    again = run_cli(*args, "--oci-config", str(config), "--oci-profile", "migrator")
    assert {(a["kind"], a["action"]) for a in json.loads(again.stdout)} == {
        ("pool", "exists"),
        ("stream", "exists"),
    }
    check_no_tracebacks(target)
