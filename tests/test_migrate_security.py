"""The migration tools against a secured source: kafkite's client over SSL, SASL_PLAINTEXT and SASL_SSL with
PLAIN and SCRAM-SHA-256/512, set up from ``--command-config`` client properties."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import REPO, BrokerFactory
from test_migrate_support import create_topic, produce_numbered, run, run_cli
from test_security_support import Pki, SecureBroker, make_pki

from kafkite.client import ClientSecurity, KafkaClient, KafkaClientError
from kafkite.protocol.errors import ErrorCode

pytestmark = pytest.mark.timeout(180)
LISTENERS = {"SASL_SSL": "SASL_SSL", "SSL": "SSL", "SASL_PLAINTEXT": "SASL_PLAINTEXT"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[SecureBroker]:
    root = tmp_path_factory.mktemp("secured")
    rc = subprocess.run(
        [sys.executable, "-m", "kafkite.cli", "user", "--log-dirs", str(root / "data"), "add", "mover"],
        input="mover-secret\n",
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert rc.returncode == 0, rc.stderr
    b = SecureBroker(root / "data", root / "broker.log", LISTENERS, [f"ssl.keystore.location={pki.server}"])
    b.start()
    yield b
    b.stop()


def props(
    pki: Pki, protocol: str, mechanism: str = "SCRAM-SHA-512", password: str = "mover-secret"
) -> dict[str, str]:
    out = {"security.protocol": protocol}
    if protocol.startswith("SASL"):
        out.update({"sasl.mechanism": mechanism, "sasl.username": "mover", "sasl.password": password})
    if protocol.endswith("SSL"):
        out["ssl.ca.location"] = str(pki.ca)
    return out


async def roundtrip(bootstrap: str, security: ClientSecurity, topic: str) -> int:
    async with KafkaClient(bootstrap, security=security) as c:
        await create_topic(c, topic, 2)
        await produce_numbered(c, topic, 2, 10)
        got = await c.fetch(topic, 1, 0)
        assert got.error_code == 0 and got.records
        return sum((await c.list_offsets(topic, [0, 1], -1)).values())


@pytest.mark.parametrize(
    "listener,mechanism",
    [
        ("SASL_SSL", "SCRAM-SHA-512"),
        ("SASL_SSL", "SCRAM-SHA-256"),
        ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
        ("SASL_PLAINTEXT", "PLAIN"),
        ("SSL", ""),
    ],
)
def test_client_security_protocols(secured: SecureBroker, pki: Pki, listener: str, mechanism: str) -> None:
    sec = ClientSecurity.from_properties(props(pki, listener, mechanism))
    topic = f"sec-{listener.lower()}-{mechanism.lower() or 'none'}"
    assert run(roundtrip(secured.address(listener), sec, topic)) == 20


def test_client_refused_credentials_and_untrusted_server(
    secured: SecureBroker, pki: Pki, tmp_path: Path
) -> None:
    for mechanism in ("SCRAM-SHA-512", "PLAIN"):
        bad = ClientSecurity.from_properties(props(pki, "SASL_SSL", mechanism, password="wrong"))
        with pytest.raises(KafkaClientError) as e:
            run(roundtrip(secured.address("SASL_SSL"), bad, "never"))
        assert e.value.code == ErrorCode.SASL_AUTHENTICATION_FAILED
    # Without the CA the server certificate is not trusted.
    untrusted = ClientSecurity.from_properties({"security.protocol": "SSL"})
    with pytest.raises(ConnectionError):
        run(roundtrip(secured.address("SSL"), untrusted, "never"))
    # The CLI says why.
    cfg = tmp_path / "bad.properties"
    cfg.write_text(
        "security.protocol=SASL_SSL\nsasl.mechanism=PLAIN\nsasl.username=mover\n"
        f"sasl.password=nope\nssl.ca.location={pki.ca}\n"
    )
    proc = run_cli(
        "plan", "--source", secured.address("SASL_SSL"), "--command-config", str(cfg), "--window", "0"
    )
    assert proc.returncode == 1 and "SASL_AUTHENTICATION_FAILED" in proc.stderr, proc.stderr


def test_plan_and_mirror_from_a_sasl_ssl_source(
    secured: SecureBroker, pki: Pki, broker_factory: BrokerFactory, tmp_path: Path
) -> None:
    source = secured.address("SASL_SSL")
    sec = ClientSecurity.from_properties(props(pki, "SASL_SSL"))

    async def seed() -> None:
        async with KafkaClient(source, security=sec) as c:
            await create_topic(c, "secured-orders", 3)
            await produce_numbered(c, "secured-orders", 3, 500)
            errs = await c.commit_offsets(
                "secured-app", {("secured-orders", p): (100 * p, None) for p in range(3)}
            )
            assert not any(errs.values())

    run(seed())
    cfg = tmp_path / "client.properties"
    cfg.write_text(
        "security.protocol=SASL_SSL\n"
        "sasl.mechanism=SCRAM-SHA-512\n"
        'sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="mover" '
        'password="mover-secret";\n'
        f"ssl.ca.location={pki.ca}\n"
    )
    plan = run_cli(
        "plan", "--source", source, "--command-config", str(cfg), "--topics", "secured-*",
        "--window", "1", "--out", str(tmp_path / "plan"), "--no-progress",
    )  # fmt: skip
    assert plan.returncode == 0, plan.stdout + plan.stderr
    streams = json.loads((tmp_path / "plan.json").read_text())["streams"]
    assert [(s["name"], s["partitions"], s["messages"]) for s in streams] == [("secured-orders", 3, 1500)]

    target = broker_factory()
    mirror = run_cli(
        "mirror", "--source", source, "--source-config", str(cfg), "--target", target.bootstrap,
        "--topics", "secured-orders", "--checkpoint", str(tmp_path / "cp.json"), "--json", "--no-progress",
    )  # fmt: skip
    assert mirror.returncode == 0, mirror.stdout + mirror.stderr
    rep = json.loads(mirror.stdout)
    assert rep["verified"] and rep["copied"] == 1500
    translated = {g["group"]: g["translated"] for g in rep["groups"]}
    assert translated["secured-app"] == {f"secured-orders/{p}": [100 * p, 100 * p] for p in range(3)}
