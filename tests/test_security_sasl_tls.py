"""SASL and TLS listeners: SCRAM-SHA-256/512 with confluent-kafka, kafka-python and raw exchanges over
SASL_SSL and SASL_PLAINTEXT, kcat over SSL, client certificates as principals, user management through the
command line and the admin APIs, and listener configuration errors."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import KCAT, REPO, BrokerProcess, RawClient
from test_security_support import (
    Pki,
    SecureBroker,
    TlsRawClient,
    client_ssl_context,
    make_pki,
    scram_login,
)

from kafkite.protocol.api_keys import ApiKey
from kafkite.security.scram import (
    ScramClient,
    ScramError,
    ScramServer,
    credential_from_salted,
    make_credential,
    password_matches,
    salted_password,
)
from kafkite.security.users import UserStore

pytestmark = pytest.mark.timeout(180)

LISTENERS = {"SASL_SSL": "SASL_SSL", "SSL": "SSL", "SASL_PLAINTEXT": "SASL_PLAINTEXT"}


def kafkite_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kafkite.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
    )


# ------------------------------------------------------------------------------------------ unit: SCRAM


def test_scram_rfc7677_vector() -> None:
    """The SCRAM-SHA-256 example exchange of RFC 7677, section 3."""
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    cred = make_credential("SCRAM-SHA-256", "pencil", 4096, salt)
    server = ScramServer(
        "SCRAM-SHA-256", lambda u: cred if u == "user" else None, nonce="%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    )
    first = server.first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    assert first == b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    final = server.final(
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    assert final == b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    assert server.username == "user"


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_exchange_and_failures(mechanism: str) -> None:
    cred = make_credential(mechanism, "secret", 4096)
    lookup: Callable[[str], Any] = lambda u: cred if u == "a,b=c" else None  # noqa: E731
    client = ScramClient(mechanism, "a,b=c", "secret")
    server = ScramServer(mechanism, lookup)
    final = server.final(client.final(server.first(client.first())))
    assert client.verify(final)
    # A wrong password, an unknown user, a replayed nonce, garbage and out-of-order messages all fail.
    bad = ScramClient(mechanism, "a,b=c", "wrong")
    server = ScramServer(mechanism, lookup)
    with pytest.raises(ScramError, match="invalid credentials"):
        server.final(bad.final(server.first(bad.first())))
    with pytest.raises(ScramError):
        ScramServer(mechanism, lookup).first(ScramClient(mechanism, "nobody", "x").first())
    server = ScramServer(mechanism, lookup)
    first = server.first(client.first())
    forged = client.final(first).replace(b"r=", b"r=x", 1)
    with pytest.raises(ScramError):
        server.final(forged)
    for junk in (
        b"",
        b"\xff\xfe",
        b"n,,",
        b"p=abc",
        b"x,,n=a,r=b",
        b"n,,n=a=ZZ,r=b",
        b"n,,n=a,r=b,tokenauth=true",
    ):
        with pytest.raises(ScramError):
            ScramServer(mechanism, lookup).first(junk)
    with pytest.raises(ScramError):
        ScramServer(mechanism, lookup).final(b"c=biws,r=x,p=AAAA")


def test_scram_credentials_from_salted_password_match_password() -> None:
    salt = b"0123456789abcdef"
    cred = credential_from_salted(
        "SCRAM-SHA-512", salted_password("SCRAM-SHA-512", "pw", salt, 5000), salt, 5000
    )
    assert password_matches("SCRAM-SHA-512", cred, "pw")
    assert not password_matches("SCRAM-SHA-512", cred, "pw2")
    with pytest.raises(ValueError):
        make_credential("SCRAM-SHA-256", "pw", iterations=100)


def test_user_store_on_disk(tmp_path: Path) -> None:
    store = UserStore.in_dir(tmp_path)
    store.add_user("alice", "pw1")
    assert store.path is not None and store.path.stat().st_mode & 0o777 == 0o600
    assert "pw1" not in store.path.read_text()
    other = UserStore.in_dir(tmp_path)  # another process's view
    assert other.check_password("alice", "pw1") and not other.check_password("alice", "nope")
    store.add_user("bob", "pw2", ["SCRAM-SHA-256"])
    assert sorted(other.users()) == ["alice", "bob"]  # picked up without reopening
    assert other.credential("bob", "SCRAM-SHA-512") is None
    assert other.delete_user("alice") and not other.delete_user("alice")
    assert sorted(store.users()) == ["bob"]


# ------------------------------------------------------------------------------------------ brokers


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[SecureBroker]:
    root = tmp_path_factory.mktemp("secure")
    rc = kafkite_cli("user", "--log-dirs", str(root / "data"), "add", "alice", "--password", "alice-secret")
    assert rc.returncode == 0, rc.stderr
    b = SecureBroker(
        root / "data",
        root / "broker.log",
        LISTENERS,
        [
            f"ssl.keystore.location={pki.server}",
            f"ssl.truststore.location={pki.ca}",
            "ssl.client.auth=requested",
        ],
    )
    b.start()
    yield b
    b.stop()


@pytest.fixture
def sb(secure_broker: SecureBroker, attach_broker: Callable[[BrokerProcess], BrokerProcess]) -> SecureBroker:
    attach_broker(secure_broker)
    return secure_broker


def confluent_conf(
    b: SecureBroker, pki: Pki, user: str = "alice", password: str = "alice-secret"
) -> dict[str, Any]:
    return {
        "bootstrap.servers": b.address("SASL_SSL"),
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": user,
        "sasl.password": password,
        "ssl.ca.location": str(pki.ca),
    }


def consume_confluent(conf: dict[str, Any], topic: str, n: int, timeout: float = 30) -> list[bytes]:
    from confluent_kafka import Consumer

    c = Consumer({**conf, "group.id": f"g-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < n and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append(m.value())
    finally:
        c.close()
    return got


def test_confluent_scram_sha512_over_sasl_ssl(sb: SecureBroker, pki: Pki) -> None:
    from confluent_kafka import Producer

    topic = f"scram-{uuid.uuid4().hex[:8]}"
    conf = confluent_conf(sb, pki)
    p = Producer(conf)
    for i in range(50):
        p.produce(topic, b"m%d" % i)
    assert p.flush(30) == 0
    assert consume_confluent(conf, topic, 50) == [b"m%d" % i for i in range(50)]


@pytest.mark.parametrize(("user", "password"), [("alice", "wrong"), ("mallory", "alice-secret")])
def test_confluent_refused_with_wrong_password_or_unknown_user(
    sb: SecureBroker, pki: Pki, user: str, password: str
) -> None:
    from confluent_kafka import Producer

    errors: list[Any] = []
    p = Producer({**confluent_conf(sb, pki, user, password), "error_cb": errors.append})
    p.produce("refused", b"x")
    deadline = time.monotonic() + 15
    while not errors and time.monotonic() < deadline:
        p.poll(0.2)
    assert p.flush(1) == 1  # nothing was delivered
    assert any("Authentication failed" in str(e) for e in errors), errors


def test_kafka_python_scram_sha512_over_sasl_ssl(sb: SecureBroker, pki: Pki) -> None:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.errors import KafkaError

    topic = f"kp-{uuid.uuid4().hex[:8]}"
    common: dict[str, Any] = {
        "bootstrap_servers": sb.address("SASL_SSL"),
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "alice",
        "sasl_plain_password": "alice-secret",
        "ssl_cafile": str(pki.ca),
    }
    producer = KafkaProducer(**common)
    for i in range(20):
        producer.send(topic, b"kp%d" % i)
    producer.flush(30)
    producer.close()
    consumer = KafkaConsumer(topic, auto_offset_reset="earliest", consumer_timeout_ms=10000, **common)
    got: list[bytes] = []
    for m in consumer:
        got.append(m.value)
        if len(got) == 20:
            break
    consumer.close()
    assert got == [b"kp%d" % i for i in range(20)]
    failures = sb.log_text().count("SCRAM-SHA-512 authentication from 127.0.0.1 failed")
    with pytest.raises(KafkaError):
        KafkaProducer(
            **{**common, "sasl_plain_password": "wrong"}, max_block_ms=3000, bootstrap_timeout_ms=3000
        ).send(topic, b"x").get(5)
    assert sb.log_text().count("SCRAM-SHA-512 authentication from 127.0.0.1 failed") > failures


def test_raw_scram_sasl_plaintext_gating_and_close_after_failure(sb: SecureBroker) -> None:
    host, port = sb.address("SASL_PLAINTEXT").split(":")
    with RawClient(host, int(port)) as c:  # nothing but ApiVersions and SASL before authentication
        assert c.api_versions()["error_code"] == 0
        with pytest.raises(ConnectionError):
            c.request(ApiKey.METADATA, 1, {"topics": None})
    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        with RawClient(host, int(port)) as c:
            assert scram_login(c, mechanism, "alice", "alice-secret")["error_code"] == 0
            assert c.request(ApiKey.METADATA, 1, {"topics": None})["brokers"]
        with RawClient(host, int(port)) as c:
            resp = scram_login(c, mechanism, "alice", "nope")
            assert resp["error_code"] == 58 and "invalid credentials" in str(resp["error_message"])
            assert c.is_closed()
    with RawClient(host, int(port)) as c:  # PLAIN is checked against the same store
        assert c.request(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"})["error_code"] == 0
        assert (
            c.request(ApiKey.SASL_AUTHENTICATE, 1, {"auth_bytes": b"\x00alice\x00alice-secret"})["error_code"]
            == 0
        )
    with RawClient(host, int(port)) as c:
        assert c.request(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"})["error_code"] == 0
        assert c.request(ApiKey.SASL_AUTHENTICATE, 1, {"auth_bytes": b"\x00alice\x00bad"})["error_code"] == 58
        assert c.is_closed()
    with RawClient(host, int(port)) as c:  # an unknown mechanism is answered, then the connection closes
        resp = c.request(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "GSSAPI"})
        assert resp["error_code"] == 33 and "SCRAM-SHA-512" in resp["mechanisms"]
        assert c.is_closed()


@pytest.mark.skipif(KCAT is None, reason="kcat is not installed")
def test_kcat_over_ssl(sb: SecureBroker, pki: Pki) -> None:
    assert KCAT is not None
    topic = f"kcat-{uuid.uuid4().hex[:8]}"
    ssl_args = ["-X", "security.protocol=SSL", "-X", f"ssl.ca.location={pki.ca}"]
    lines = "\n".join(f"line-{i}" for i in range(10)) + "\n"
    prod = subprocess.run(
        [KCAT, "-b", sb.address("SSL"), *ssl_args, "-P", "-t", topic],
        input=lines,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert prod.returncode == 0, prod.stderr
    cons = subprocess.run(
        [KCAT, "-b", sb.address("SSL"), *ssl_args, "-C", "-t", topic, "-o", "beginning", "-c", "10", "-e"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cons.returncode == 0, cons.stderr
    assert cons.stdout.split() == [f"line-{i}" for i in range(10)]
    # A client that does not trust the broker's CA cannot connect.
    bad = subprocess.run(
        [KCAT, "-b", sb.address("SSL"), "-X", "security.protocol=SSL", "-L", "-m", "3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0


def test_tls_metadata_advertises_each_listener(sb: SecureBroker, pki: Pki) -> None:
    host, port = sb.address("SSL").split(":")
    with TlsRawClient(host, int(port), client_ssl_context(pki)) as c:
        brokers = c.request(ApiKey.METADATA, 1, {"topics": None})["brokers"]
        assert [(b["host"], b["port"]) for b in brokers] == [(host, int(port))]
    with RawClient.to(sb.bootstrap) as c:
        brokers = c.request(ApiKey.METADATA, 1, {"topics": None})["brokers"]
        assert [(b["host"], b["port"]) for b in brokers] == [("127.0.0.1", sb.port)]


def test_user_admin_apis_and_cli_reach_a_running_broker(sb: SecureBroker, pki: Pki) -> None:
    from confluent_kafka.admin import (
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialDeletion,
        UserScramCredentialUpsertion,
    )

    admin = AdminClient(confluent_conf(sb, pki))
    futures = admin.alter_user_scram_credentials(
        [
            UserScramCredentialUpsertion(
                "carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), b"carol-pw", b"salt-1234"
            )
        ]
    )
    for f in futures.values():
        f.result(10)
    described = admin.describe_user_scram_credentials(["carol"])["carol"].result(10)
    assert [(i.mechanism, i.iterations) for i in described.scram_credential_infos] == [
        (ScramMechanism.SCRAM_SHA_512, 4096)
    ]
    host, port = sb.address("SASL_PLAINTEXT").split(":")
    with RawClient(host, int(port)) as c:
        assert scram_login(c, "SCRAM-SHA-512", "carol", "carol-pw")["error_code"] == 0
    for f in admin.alter_user_scram_credentials(
        [UserScramCredentialDeletion("carol", ScramMechanism.SCRAM_SHA_512)]
    ).values():
        f.result(10)
    with RawClient(host, int(port)) as c:
        assert scram_login(c, "SCRAM-SHA-512", "carol", "carol-pw")["error_code"] == 58
    # The command line changes the store of the running broker.
    rc = kafkite_cli(
        "user", "add", "dave", "--mechanism", "SCRAM-SHA-256", "--log-dirs", str(sb.data_dir), stdin="d-pw\n"
    )
    assert rc.returncode == 0, rc.stderr
    listed = kafkite_cli("user", "--log-dirs", str(sb.data_dir), "list")
    assert "dave\tSCRAM-SHA-256 (8192)" in listed.stdout and "alice" in listed.stdout
    with RawClient(host, int(port)) as c:
        assert scram_login(c, "SCRAM-SHA-256", "dave", "d-pw")["error_code"] == 0
    assert kafkite_cli("user", "delete", "dave", "--log-dirs", str(sb.data_dir)).returncode == 0
    assert kafkite_cli("user", "--log-dirs", str(sb.data_dir), "delete", "dave").returncode == 1
    with RawClient(host, int(port)) as c:
        assert scram_login(c, "SCRAM-SHA-256", "dave", "d-pw")["error_code"] == 58


def test_scram_admin_api_errors(sb: SecureBroker) -> None:
    with RawClient.to(sb.bootstrap) as c:
        resp = c.request(
            ApiKey.ALTER_USER_SCRAM_CREDENTIALS,
            0,
            {
                "deletions": [{"name": "nobody", "mechanism": 1}],
                "upsertions": [
                    {"name": "x", "mechanism": 9, "iterations": 4096, "salt": b"s", "salted_password": b"p"},
                    {"name": "y", "mechanism": 1, "iterations": 10, "salt": b"s", "salted_password": b"p"},
                ],
            },
        )
        assert {r["user"]: r["error_code"] for r in resp["results"]} == {"nobody": 91, "x": 33, "y": 93}
        resp = c.request(ApiKey.DESCRIBE_USER_SCRAM_CREDENTIALS, 0, {"users": [{"name": "nobody"}]})
        assert resp["results"][0]["error_code"] == 91
        # Without an authorizer the ACL APIs say security is disabled.
        resp = c.request(
            ApiKey.DESCRIBE_ACLS,
            1,
            {
                "resource_type_filter": 1,
                "resource_name_filter": None,
                "pattern_type_filter": 1,
                "principal_filter": None,
                "host_filter": None,
                "operation": 1,
                "permission_type": 1,
            },
        )
        assert resp["error_code"] == 54


def test_client_certificate_subject_is_the_principal(sb: SecureBroker, pki: Pki) -> None:
    """With ssl.client.auth=requested a certificate is optional; when given, its subject names the client."""
    from kafkite.security.tls import subject_principal

    host, port = sb.address("SSL").split(":")
    with TlsRawClient(host, int(port), client_ssl_context(pki, cert=True)) as c:
        assert c.api_versions()["error_code"] == 0
    with TlsRawClient(host, int(port), client_ssl_context(pki)) as c:
        assert c.api_versions()["error_code"] == 0
    cert = {"subject": ((("organizationName", "kafkite-tests"),), (("commonName", "client, a"),))}
    assert subject_principal(cert) == "User:CN=client\\, a,O=kafkite-tests"


# ------------------------------------------------------------------------------------------ configuration


def test_listener_configuration_errors(tmp_path: Path, pki: Pki) -> None:
    b = SecureBroker(tmp_path / "d1", tmp_path / "b1.log", {"EXTERNAL": "SASL_SSL"})
    b.overrides = [o for o in b.overrides if not o.startswith("listener.security.protocol.map")]
    with pytest.raises(Exception, match=r"listener\.security\.protocol\.map"):
        b.start()
    b = SecureBroker(tmp_path / "d2", tmp_path / "b2.log", {"EXTERNAL": "SSL"})
    with pytest.raises(Exception, match=r"ssl\.keystore\.location"):
        b.start()
    b = SecureBroker(
        tmp_path / "d3",
        tmp_path / "b3.log",
        {"EXTERNAL": "SSL"},
        [f"ssl.keystore.location={pki.server}", "ssl.client.auth=required"],
    )
    with pytest.raises(Exception, match=r"ssl\.truststore\.location"):
        b.start()


def test_mutual_tls_required(
    tmp_path: Path, pki: Pki, attach_broker: Callable[[BrokerProcess], BrokerProcess]
) -> None:
    import ssl

    b = SecureBroker(
        tmp_path / "data",
        tmp_path / "broker.log",
        {"INTERNAL": "SSL"},
        [
            f"ssl.keystore.location={pki.server}",
            f"ssl.truststore.location={pki.ca}",
            "ssl.client.auth=required",
        ],
    )
    attach_broker(b)
    b.start()
    try:
        host, port = b.address("INTERNAL").split(":")
        with TlsRawClient(host, int(port), client_ssl_context(pki, cert=True)) as c:
            assert c.request(ApiKey.METADATA, 1, {"topics": None})["brokers"][0]["port"] == int(port)
        with (
            pytest.raises((ssl.SSLError, ConnectionError, OSError)),
            TlsRawClient(host, int(port), client_ssl_context(pki)) as c,
        ):
            c.api_versions()
    finally:
        b.stop()
