"""Unit tests of the doors' security policy, the OCI principal mapping and the audit trail's writer and
reader; and the principal mapping through the oci SDK."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import oci
import pytest
from test_streaming_support import COMPARTMENT, TENANCY, InProcessBroker, make_api_key

from kafkite.config import BrokerConfig, ConfigError
from kafkite.doors import PrincipalMap, audit, door_secured, kafka_secured, oci_principal, validate
from kafkite.tools.audit import matches, parse_when


def cfg(**kw: str) -> BrokerConfig:
    return BrokerConfig({k.replace("_", "."): v for k, v in kw.items()})


def test_what_secures_kafka() -> None:
    assert kafka_secured(cfg()) is None
    assert "SASL_PLAINTEXT" in str(kafka_secured(cfg(listeners="SASL_PLAINTEXT://localhost:9092")))
    assert kafka_secured(cfg(listeners="SSL://localhost:9093")) is None  # TLS without client certificates
    assert "client certificates" in str(
        kafka_secured(BrokerConfig({"listeners": "SSL://localhost:9093", "ssl.client.auth": "required"}))
    )
    assert kafka_secured(BrokerConfig({"authorizer.class.name": "kafkite"})) == "authorizer.class.name is set"
    secured = BrokerConfig({"authorizer.class.name": "kafkite", "security.open.surfaces": "console"})
    assert door_secured(secured, "stomp") and not door_secured(secured, "console")
    assert not door_secured(cfg(), "stomp")


def test_validation_names_the_key_to_set() -> None:
    validate(cfg())  # make run: nothing secured, nothing refused
    validate(BrokerConfig({"authorizer.class.name": "kafkite", "rest.listeners": ""}))
    with pytest.raises(ConfigError, match=r"streaming\.auth\.enable.*security\.open\.surfaces=streaming"):
        validate(BrokerConfig({"authorizer.class.name": "kafkite"}))
    with pytest.raises(ConfigError, match=r"queue\.auth\.enable"):
        validate(BrokerConfig({"authorizer.class.name": "kafkite", "security.open.surfaces": "streaming"}))
    validate(BrokerConfig({"authorizer.class.name": "kafkite", "security.open.surfaces": "streaming,queue"}))
    with pytest.raises(ConfigError, match="unknown surface 'kafka'"):
        validate(BrokerConfig({"security.open.surfaces": "kafka"}))
    with pytest.raises(ConfigError, match=r"stomp\.listeners asks for TLS.*ssl\.keystore\.location"):
        validate(BrokerConfig({"stomp.listeners": "stomp+ssl://localhost:61614"}))


def test_principal_mapping(tmp_path: Path) -> None:
    f = tmp_path / "principals"
    f.write_text(
        "# key -> principal\n"
        "aa:bb:cc User:by-fingerprint\n"
        "ocid1.tenancy.oc1..t/ocid1.user.oc1..u2/dd:ee User:by-key-id  # a comment\n"
    )
    m = PrincipalMap.load(str(f))
    assert m.principal("ocid1.tenancy.oc1..t/ocid1.user.oc1..anyone/aa:bb:cc") == "User:by-fingerprint"
    assert m.principal("ocid1.tenancy.oc1..t/ocid1.user.oc1..u2/dd:ee") == "User:by-key-id"
    # The keyId's user part is the signer's claim: a key is known by its fingerprint, or its whole keyId.
    assert m.principal("ocid1.tenancy.oc1..t/ocid1.user.oc1..u3/dd:ee") is None
    assert m.principal("ocid1.tenancy.oc1..t/ocid1.user.oc1..u4/99:99") is None
    f.write_text("ocid1.user.oc1..u3 User:by-user\n")
    with pytest.raises(ConfigError, match="a user OCID alone cannot be trusted"):
        PrincipalMap.load(str(f))
    assert oci_principal("t/ocid1.user.oc1..u4/99:99", None) == "User:ocid1.user.oc1..u4"
    assert oci_principal("t/ocid1.user.oc1..u4/99:99", m) is None
    f.write_text("just-one-field\n")
    with pytest.raises(ConfigError, match=r"principals:1"):
        PrincipalMap.load(str(f))


def test_audit_writer_rotates_and_the_reader_filters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "ROTATE_BYTES", 2000)
    path = tmp_path / "audit.log"
    log = audit.AuditLog(path)
    for i in range(60):
        log.record(
            surface="kafka" if i % 2 else "streaming",
            principal=f"User:u{i % 3}",
            address="127.0.0.1",
            operation="CreateTopics",
            resource_type="topic",
            resource_name=f"t{i}",
            result=audit.OK if i % 5 else audit.DENIED,
            after={"partitions": i},
        )
        if i % 10 == 9:
            log.flush()  # the writer writes what it has, then rotates past the size
    log.close()
    files = audit.audit_files(path)
    assert len(files) > 2 and files[-1] == path and (path.stat().st_mode & 0o777) == 0o600
    records = list(audit.read_records(files))
    assert [r["resource"]["name"] for r in records] == [f"t{i}" for i in range(60)]  # oldest first, none lost
    assert all(
        set(r) >= {"time", "principal", "address", "surface", "operation", "resource", "result"}
        for r in records
    )

    def args(**kw: object) -> argparse.Namespace:
        names = ("surface", "result", "principal", "operation", "resource", "address", "since", "until")
        base: dict[str, object] = dict.fromkeys(names)
        base.update(kw)
        return argparse.Namespace(**base)

    denied = [r for r in records if matches(r, args(result=["denied"], surface=["kafka"]))]
    assert [r["resource"]["name"] for r in denied] == ["t5", "t15", "t25", "t35", "t45", "t55"]
    assert next(r for r in records if matches(r, args(resource=["topic:t7"])))["after"] == {"partitions": 7}
    assert not [r for r in records if matches(r, args(since=parse_when("2999-01-01")))]
    assert len([r for r in records if matches(r, args(since=parse_when("10m")))]) == 60


def test_signed_requests_take_the_mapped_principal(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    key_a, pub_a, fp_a = make_api_key(tmp_path / "a")
    key_b, pub_b, fp_b = make_api_key(tmp_path / "b")
    mapping = tmp_path / "principals"
    mapping.write_text(f"{fp_a} User:mapped\n")
    with InProcessBroker(
        tmp_path / "data",
        "streaming.auth.enable=true",
        f"streaming.auth.public.keys={pub_a},{pub_b}",
        f"rest.auth.principal.mapping={mapping}",
        "authorizer.class.name=kafkite",
        "super.users=User:mapped",
        "security.open.surfaces=queue",
    ) as b:
        none = oci.retry.NoneRetryStrategy()

        def client(key: Path, fp: str) -> oci.streaming.StreamAdminClient:
            conf = {"user": "ocid1.user.oc1..x", "tenancy": TENANCY, "fingerprint": fp, "key_file": str(key),
                    "region": "us-ashburn-1"}  # fmt: skip
            return oci.streaming.StreamAdminClient(conf, service_endpoint=b.rest_url, retry_strategy=none)

        # User:mapped is a super user: it may list the pools.
        assert client(key_a, fp_a).list_stream_pools(compartment_id=COMPARTMENT).data
        with pytest.raises(oci.exceptions.ServiceError) as e:
            client(key_b, fp_b).list_stream_pools(compartment_id=COMPARTMENT)
        assert e.value.status == 401 and "rest.auth.principal.mapping" in e.value.message
    records = list(audit.read_records([tmp_path / "data" / "audit.log"]))
    assert [(r["surface"], r["result"]) for r in records] == [("streaming", "unauthenticated")]
    assert json.dumps(records)  # plain JSON
