"""Authentication: OCI-signed REST requests verified against configured API keys; SASL listeners that refuse
requests before authentication."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import oci
import pytest
from helpers import RawClient
from oci.streaming.models import CreateStreamDetails, PutMessagesDetails, PutMessagesDetailsEntry
from test_streaming_support import COMPARTMENT, InProcessBroker, clients, free_port, make_api_key

from kafkite.protocol.api_keys import ApiKey

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def keys(tmp_path: Path) -> tuple[tuple[Path, Path, str], tuple[Path, Path, str]]:
    (tmp_path / "good").mkdir()
    (tmp_path / "bad").mkdir()
    return make_api_key(tmp_path / "good"), make_api_key(tmp_path / "bad")


@pytest.fixture
def broker(
    tmp_path: Path, keys: tuple[tuple[Path, Path, str], tuple[Path, Path, str]]
) -> Iterator[InProcessBroker]:
    good = keys[0]
    with InProcessBroker(
        tmp_path / "data", "streaming.auth.enable=true", f"streaming.auth.public.keys={good[1]}"
    ) as b:
        yield b


def test_signed_requests_are_verified(
    broker: InProcessBroker, keys: tuple[tuple[Path, Path, str], tuple[Path, Path, str]]
) -> None:
    good, bad = keys
    admin, data = clients(broker, good[0], good[2])
    stream = admin.create_stream(CreateStreamDetails(name="s", partitions=1, compartment_id=COMPARTMENT)).data
    value = base64.b64encode(b"signed").decode()
    res = data.put_messages(stream.id, PutMessagesDetails(messages=[PutMessagesDetailsEntry(value=value)]))
    assert res.data.failures == 0
    assert [s.name for s in admin.list_streams(compartment_id=COMPARTMENT).data] == ["s"]

    # A key the broker does not know, and a known fingerprint with the wrong private key.
    for key_file, fp in ((bad[0], bad[2]), (bad[0], good[2])):
        admin2, data2 = clients(broker, key_file, fp)
        with pytest.raises(oci.exceptions.ServiceError) as e:
            admin2.list_streams(compartment_id=COMPARTMENT)
        assert e.value.status == 401 and e.value.code == "NotAuthenticated"
        with pytest.raises(oci.exceptions.ServiceError) as e:
            data2.put_messages(stream.id, PutMessagesDetails(messages=[PutMessagesDetailsEntry(value=value)]))
        assert e.value.status == 401

    # Unsigned requests are refused too.
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as h:
        urllib.request.urlopen(f"{broker.rest_url}/20180418/streams?compartmentId={COMPARTMENT}", timeout=10)
    assert h.value.code == 401
    assert b"NotAuthenticated" in h.value.read()


def test_auth_without_keys_is_a_startup_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kafkite.cli",
            "serve",
            "--override",
            f"listeners=PLAINTEXT://127.0.0.1:{free_port()}",
            "--override",
            f"rest.listeners=http://127.0.0.1:{free_port()}",
            "--override",
            "stomp.listeners=",
            "--override",
            f"log.dirs={tmp_path}",
            "--override",
            "streaming.auth.enable=true",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "streaming.auth.public.keys" in proc.stderr


def test_sasl_listener_requires_authentication(tmp_path: Path) -> None:
    from confluent_kafka.admin import AdminClient

    port = free_port()
    with InProcessBroker(
        tmp_path / "data",
        f"listeners=SASL_PLAINTEXT://127.0.0.1:{port}",
        "sasl.plain.users=alice=secret",
        "rest.listeners=",
    ):
        # Before authentication only ApiVersions and the SASL exchange are served.
        with RawClient("127.0.0.1", port) as c:
            assert c.api_versions()["error_code"] == 0
            with pytest.raises(ConnectionError):
                c.request(ApiKey.METADATA, 1, {"topics": None})
        with RawClient("127.0.0.1", port) as c:
            assert c.request(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"})["error_code"] == 0
            assert (
                c.request(ApiKey.SASL_AUTHENTICATE, 1, {"auth_bytes": b"\x00alice\x00wrong"})["error_code"]
                == 58
            )
            with pytest.raises(ConnectionError):
                c.request(ApiKey.METADATA, 1, {"topics": None})
        with RawClient("127.0.0.1", port) as c:
            assert c.request(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"})["error_code"] == 0
            assert (
                c.request(ApiKey.SASL_AUTHENTICATE, 1, {"auth_bytes": b"\x00alice\x00secret"})["error_code"]
                == 0
            )
            assert c.request(ApiKey.METADATA, 1, {"topics": None})["brokers"]
        conf = {
            "bootstrap.servers": f"127.0.0.1:{port}",
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN",
            "sasl.username": "alice",
            "sasl.password": "secret",
        }
        assert AdminClient(conf).list_topics(timeout=10).brokers


def test_sasl_handshake_and_authenticate_states(tmp_path: Path) -> None:
    with InProcessBroker(tmp_path / "data") as b, RawClient("127.0.0.1", b.kafka_port) as c:
        resp = c.request(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "GSSAPI"})
        assert resp["mechanisms"] == ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] and resp["error_code"] == 33
        assert c.request(ApiKey.SASL_AUTHENTICATE, 1, {"auth_bytes": b"\x00a\x00b"})["error_code"] == 34
        assert c.request(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"})["error_code"] == 0
        assert c.request(ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": b"malformed"})["error_code"] == 58
        # (SaslHandshake v1: after v0 the tokens come raw, outside Kafka framing.)
        assert c.request(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"})["error_code"] == 0
        assert c.request(ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": b"\x00bob\x00pw"})["error_code"] == 0
        assert c.request(ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": b"\x00bob\x00pw"})["error_code"] == 34
        # A plain listener serves a connection that did not authenticate at all.
        with RawClient("127.0.0.1", b.kafka_port) as other:
            assert other.request(ApiKey.METADATA, 1, {"topics": None})["brokers"]
