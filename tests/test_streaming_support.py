"""Test support for the OCI Streaming surface (an in-process broker, OCI SDK configs), and unit tests of the
pieces with no network: cursors, name mapping, the partitioner, rate limits, signatures."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import hashlib
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from kafkite.broker.names import NameField, rewrite
from kafkite.streaming import cursors
from kafkite.streaming.auth import AuthError, Verifier, fingerprint, load_public_key
from kafkite.streaming.limits import RateLimiter
from kafkite.streaming.messages import murmur2, partition_for_key
from kafkite.streaming.namespace import from_internal, pool_id_of_username, to_internal
from kafkite.streaming.pools import StreamPool, internal_topic_name, split_internal_name

TENANCY = "ocid1.tenancy.oc1..kafkitetests"
USER = "ocid1.user.oc1..kafkitetests"
COMPARTMENT = "ocid1.compartment.oc1..kafkitetests"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class InProcessBroker:
    """kafkite (Kafka listener + REST gateway) on an event loop in a background thread."""

    def __init__(self, data_dir: Path, *overrides: str) -> None:
        self.data_dir = data_dir
        self.kafka_port = free_port()
        self.rest_port = free_port()
        self.overrides = [
            f"listeners=PLAINTEXT://127.0.0.1:{self.kafka_port}",
            f"rest.listeners=http://127.0.0.1:{self.rest_port}",
            f"log.dirs={data_dir}",
            "stomp.listeners=",
            *overrides,
        ]
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def start(self) -> InProcessBroker:
        from kafkite.cli import load_config, run_broker

        config = load_config(None, self.overrides)
        started = threading.Event()

        async def main() -> None:
            ready = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.create_task(run_broker(config, ready))
            waiter = asyncio.create_task(ready.wait())
            await asyncio.wait({self._task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            started.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as e:
                self._error = e
                started.set()

        self._thread = threading.Thread(target=run, name="kafkite-test-broker", daemon=True)
        self._thread.start()
        if not started.wait(30):
            raise RuntimeError("broker did not start")
        if self._task is not None and self._task.done() and self._task.exception() is not None:
            raise RuntimeError(f"broker failed: {self._task.exception()!r}")
        if self._error is not None:
            raise RuntimeError(f"broker failed: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._task is not None and not self._task.done():
            self._loop.call_soon_threadsafe(self._task.cancel)
        if self._thread is not None:
            self._thread.join(30)
        self._thread = None

    def __enter__(self) -> InProcessBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def make_api_key(directory: Path) -> tuple[Path, Path, str]:
    """An RSA API key for the OCI SDK: (private key file, public key file, fingerprint)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = directory / "oci_api_key.pem"
    public = directory / "oci_api_key_public.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    fp = ":".join(f"{b:02x}" for b in hashlib.md5(der).digest())
    return private, public, fp


def oci_config(key_file: Path, fp: str) -> dict[str, Any]:
    return {
        "user": USER,
        "tenancy": TENANCY,
        "fingerprint": fp,
        "key_file": str(key_file),
        "region": "us-phoenix-1",
    }


def clients(broker: InProcessBroker, key_file: Path, fp: str) -> tuple[Any, Any]:
    """(StreamAdminClient, StreamClient) of the unmodified OCI SDK, pointed at ``broker``."""
    import oci

    cfg = oci_config(key_file, fp)
    none = oci.retry.NoneRetryStrategy()
    admin = oci.streaming.StreamAdminClient(cfg, service_endpoint=broker.rest_url, retry_strategy=none)
    data = oci.streaming.StreamClient(cfg, service_endpoint=broker.rest_url, retry_strategy=none)
    return admin, data


# ---------------------------------------------------------------------------------------------- unit tests


def _pool(key: str = "a" * 20, default: bool = False) -> StreamPool:
    return StreamPool(
        id="ocid1.streampool.oc1.." + key,
        key=key,
        name="p",
        compartment_id="c",
        time_created_ms=0,
        is_default=default,
    )


def test_cursor_round_trip_and_rejects_garbage() -> None:
    c = cursors.Cursor(stream=uuid.uuid4().hex, partition=3, offset=42)
    assert cursors.decode(cursors.encode(c)) == c
    g = cursors.Cursor(
        stream="s", group="g", instance="i", commit_on_get=False, timeout_ms=5, positions={0: 1, 2: 9}
    )
    assert cursors.decode(cursors.encode(g)) == g
    for bad in ("", "!!!", base64.urlsafe_b64encode(b'{"v":9}').decode(), base64.b64encode(b"[1]").decode()):
        with pytest.raises(cursors.CursorError):
            cursors.decode(bad)


def test_internal_names_scope_pools() -> None:
    p1, p2, d = _pool("a" * 20), _pool("b" * 20), _pool("c" * 20, default=True)
    assert internal_topic_name(d, "orders") == "orders"
    t1, t2 = internal_topic_name(p1, "orders"), internal_topic_name(p2, "orders")
    assert t1 != t2
    assert split_internal_name(t1) == ("a" * 20, "orders")
    assert split_internal_name("orders") == (None, "orders")
    assert from_internal(p1, "topic", t1) == "orders"
    assert from_internal(p1, "topic", t2) is None
    assert from_internal(d, "topic", t1) is None
    assert from_internal(d, "topic", "orders") == "orders"
    assert to_internal(p1, "group", "g") == internal_topic_name(p1, "g")


def test_rewrite_follows_paths_and_drops_foreign_names() -> None:
    p1 = _pool()
    msg = {
        "topics": [{"name": internal_topic_name(p1, "a")}, {"name": "other"}, {"name": None}],
        "groups": [{"group_id": "x", "topics": [{"name": internal_topic_name(p1, "b")}, {"name": "zzz"}]}],
        "keys": [internal_topic_name(p1, "k"), "foreign"],
    }
    fields = [
        NameField(("topics", "*", "name"), "topic"),
        NameField(("groups", "*", "topics", "*", "name"), "topic"),
        NameField(("keys", "*"), "group"),
    ]
    rewrite(msg, fields, lambda kind, name: from_internal(p1, kind, name))
    assert msg["topics"] == [{"name": "a"}, {"name": None}]
    assert msg["groups"][0]["topics"] == [{"name": "b"}]
    assert msg["keys"] == ["k"]


def test_pool_id_from_oci_user_names() -> None:
    pid = "ocid1.streampool.oc1.." + "x" * 20
    assert pool_id_of_username(f"tenancy/user@example.com/{pid}") == pid
    assert pool_id_of_username(f"tenancy/domain/user/{pid}") == pid
    assert pool_id_of_username("alice") is None
    assert pool_id_of_username("tenancy/user/notapool") is None


def test_murmur2_matches_kafka() -> None:
    # Values from Kafka's UtilsTest.testMurmur2.
    cases = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    for data, expected in cases.items():
        assert murmur2(data) == expected
    assert all(partition_for_key(b"k", 7) == partition_for_key(b"k", 7) for _ in range(3))
    assert {partition_for_key(None, 3) for _ in range(200)} == {0, 1, 2}


def test_rate_limiter_admits_bursts_then_refuses() -> None:
    now = [100.0]
    lim = RateLimiter(rate=10, burst=10, clock=lambda: now[0])
    assert all(lim.try_acquire("k", 1) for _ in range(11))
    assert not lim.try_acquire("k", 1)
    now[0] += 0.5
    assert lim.try_acquire("k", 1)
    assert lim.acquire_delay("other", 10) == 0.0
    assert lim.acquire_delay("other", 10) == pytest.approx(1.0)


def _signed(
    key: Any, fp: str, method: str, target: str, body: bytes, date: str | None = None
) -> dict[str, str]:
    headers = {
        "date": date or email.utils.formatdate(usegmt=True),
        "host": "localhost:8090",
    }
    names = ["date", "(request-target)", "host"]
    if body or method in ("POST", "PUT"):
        headers["content-length"] = str(len(body))
        headers["content-type"] = "application/json"
        headers["x-content-sha256"] = base64.b64encode(hashlib.sha256(body).digest()).decode()
        names += ["content-length", "content-type", "x-content-sha256"]
    lines = [
        f"(request-target): {method.lower()} {target}" if n == "(request-target)" else f"{n}: {headers[n]}"
        for n in names
    ]
    sig = key.sign("\n".join(lines).encode(), padding.PKCS1v15(), hashes.SHA256())
    headers["authorization"] = (
        f'Signature version="1",keyId="{TENANCY}/{USER}/{fp}",algorithm="rsa-sha256",'
        f'headers="{" ".join(names)}",signature="{base64.b64encode(sig).decode()}"'
    )
    return headers


def test_signature_verification(tmp_path: Path) -> None:
    private, public, fp = make_api_key(tmp_path)
    pub = load_public_key(public.read_text())
    assert pub.fingerprint == fp
    key = serialization.load_pem_private_key(private.read_bytes(), None)
    v = Verifier([pub])
    body = b'{"a": 1}'
    target = "/20180418/streams?compartmentId=x"
    assert v.verify("POST", target, _signed(key, fp, "POST", target, body), body).endswith(fp)
    assert v.verify("GET", target, _signed(key, fp, "GET", target, b""), b"")
    with pytest.raises(AuthError, match="x-content-sha256"):
        v.verify("POST", target, _signed(key, fp, "POST", target, body), b'{"a": 2}')
    with pytest.raises(AuthError, match="does not verify"):
        v.verify("GET", target + "&x=1", _signed(key, fp, "GET", target, b""), b"")
    with pytest.raises(AuthError, match="5 minutes"):
        old = email.utils.formatdate(time.time() - 3600, usegmt=True)
        v.verify("GET", target, _signed(key, fp, "GET", target, b"", date=old), b"")
    with pytest.raises(AuthError, match="not signed"):
        v.verify("GET", target, {"date": email.utils.formatdate(usegmt=True)}, b"")
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(AuthError, match="fingerprint"):
        v.verify("GET", target, _signed(other, "aa:bb", "GET", target, b""), b"")
    der = other.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    pem = (
        "-----BEGIN RSA PUBLIC KEY-----\n"
        + base64.b64encode(der).decode()
        + "\n-----END RSA PUBLIC KEY-----\n"
    )
    spki = other.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert load_public_key(pem).fingerprint == fingerprint(spki)
