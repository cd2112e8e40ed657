"""Request frames as librdkafka writes them, captured between confluent-kafka clients and a kafkite broker.

A ``CaptureProxy`` sits in front of each of the broker's listeners (the broker advertises the proxies, so
every connection a client opens passes through one) and records each request frame the clients send.
``workload`` drives producers (idempotent, transactional, over SASL/SCRAM too), a group consumer that
commits, and the AdminClient's operations. ``check_frame`` is what every captured frame must pass: kafkite's
codec decodes its header and body and encodes them again to the very same bytes.

The corpus in tests/data/librdkafka-requests.jsonl was captured this way; refresh it with
``.venv/bin/python tests/librdkafka_capture.py`` (it starts its own broker).
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafkite.protocol import framing
from kafkite.protocol.messages import registry

CORPUS = Path(__file__).resolve().parent / "data" / "librdkafka-requests.jsonl"
TIMEOUT = 20.0
USER, PASSWORD = "capture-user", "capture-secret"
# The broker settings the capture needs besides its listeners: ACLs on (for the ACL APIs), with the test's
# principals allowed everything.
BROKER_SETTINGS = [
    "authorizer.class.name=kafkite",
    f"super.users=User:ANONYMOUS;User:{USER}",
    "group.initial.rebalance.delay.ms=0",
]


@dataclass(frozen=True)
class Frame:
    api_key: int
    api_version: int
    data: bytes  # the request without its 4-byte size prefix


class CaptureProxy:
    """A TCP proxy that records the request frames passing from clients to a Kafka listener."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.upstream: tuple[str, int] | None = None
        self.frames: list[Frame] = []
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._accepter = threading.Thread(target=self._accept, name="capture-accept", daemon=True)
        self._accepter.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            assert self.upstream is not None, "the proxy got a connection before it knew its broker"
            try:
                server = socket.create_connection(self.upstream, timeout=TIMEOUT)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets += [client, server]
            for target, args in ((self._requests, (client, server)), (self._pipe, (server, client))):
                t = threading.Thread(target=target, args=args, daemon=True)
                t.start()
                self._threads.append(t)

    def _requests(self, src: socket.socket, dst: socket.socket) -> None:
        """Forward the client's bytes as they come and record every complete frame among them."""
        pending = bytearray()
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
                pending += chunk
                while len(pending) >= 4:
                    (size,) = struct.unpack_from(">i", pending)
                    if len(pending) < 4 + size:
                        break
                    data = bytes(pending[4 : 4 + size])
                    del pending[: 4 + size]
                    key, version = framing.peek_key_version(data)
                    with self._lock:
                        self.frames.append(Frame(key, version, data))
        except OSError:
            pass
        finally:
            self._shut(src, dst)

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            self._shut(src, dst)

    @staticmethod
    def _shut(*socks: socket.socket) -> None:
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def captured(self) -> list[Frame]:
        with self._lock:
            return list(self.frames)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        with contextlib.suppress(OSError):
            self.listener.close()
        self._accepter.join(5)
        with self._lock:
            socks = list(self._sockets)
        for s in socks:
            self._shut(s)
            with contextlib.suppress(OSError):
                s.close()
        for t in self._threads:
            t.join(5)


def listener_overrides(port: int, sasl_port: int, plain: CaptureProxy, sasl: CaptureProxy) -> list[str]:
    """Settings for a broker whose PLAINTEXT and SASL_PLAINTEXT listeners are reached through the proxies."""
    return [
        f"listeners=PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port}",
        f"advertised.listeners=PLAINTEXT://{plain.address},SASL_PLAINTEXT://{sasl.address}",
        "sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN",
        *BROKER_SETTINGS,
    ]


# ------------------------------------------------------------------------------------------ the workload


def _wait(futures: Any) -> dict[Any, Any]:
    """The results of an AdminClient call's futures, by their keys."""
    return {k: f.result(timeout=TIMEOUT) for k, f in futures.items()}


def _flush(producer: Any) -> None:
    left = producer.flush(TIMEOUT)
    assert left == 0, f"{left} messages not delivered"


def workload(plain: str, sasl: str) -> frozenset[int]:
    """Drive librdkafka through the APIs a client application uses; the API keys it should have sent."""
    from confluent_kafka import (
        Consumer,
        ConsumerGroupTopicPartitions,
        Producer,
        TopicCollection,
        TopicPartition,
    )
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        AclBinding,
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        NewPartitions,
        NewTopic,
        OffsetSpec,
        ResourcePatternType,
        ResourceType,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    run = uuid.uuid4().hex[:8]
    topic, other, group = f"capture-{run}", f"capture-other-{run}", f"capture-group-{run}"
    common: dict[str, str | int | float | bool] = {"bootstrap.servers": plain, "client.id": "kafkite-capture"}
    admin = AdminClient(common)

    # Topics and their configs.
    _wait(admin.create_topics([NewTopic(topic, 3, 1, config={"retention.ms": "86400000"})]))
    _wait(admin.create_topics([NewTopic(other, 1, 1)], validate_only=True))
    _wait(admin.create_topics([NewTopic(other, 1, 1)]))
    _wait(admin.create_partitions([NewPartitions(other, 2)]))
    cluster = admin.describe_cluster(include_authorized_operations=True).result(timeout=TIMEOUT)
    broker_id = str(cluster.nodes[0].id)
    _wait(
        admin.describe_configs(
            [ConfigResource(ResourceType.TOPIC, topic), ConfigResource(ResourceType.BROKER, broker_id)]
        )
    )
    with warnings.catch_warnings():  # AlterConfigs is deprecated, and still sent by librdkafka when asked
        warnings.simplefilter("ignore", DeprecationWarning)
        _wait(
            admin.alter_configs(
                [ConfigResource(ResourceType.TOPIC, other, set_config={"retention.ms": "3600000"})]
            )
        )
    entry = ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET)
    _wait(
        admin.incremental_alter_configs(
            [ConfigResource(ResourceType.TOPIC, other, incremental_configs=[entry])]
        )
    )
    _wait(admin.describe_topics(TopicCollection([topic]), include_authorized_operations=True))
    admin.list_topics(timeout=TIMEOUT)

    # Produce: idempotent and compressed, with keys and headers.
    producer = Producer({**common, "enable.idempotence": True, "compression.type": "lz4", "linger.ms": 5})
    for i in range(30):
        producer.produce(topic, f"value-{i}".encode(), key=f"key-{i % 5}".encode(), headers={"n": str(i)})
    _flush(producer)

    # A group consumer that commits, then reads its committed offsets and looks offsets up by time.
    consumer = Consumer(
        {
            **common,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "heartbeat.interval.ms": 100,
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([topic])
    got = 0
    deadline = time.monotonic() + TIMEOUT
    while got < 30 and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            got += 1
    assert got == 30, f"the consumer read {got} of 30 messages"
    consumer.commit(asynchronous=False)
    consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=TIMEOUT)
    consumer.offsets_for_times([TopicPartition(topic, 0, int(time.time() * 1000) - 60_000)], timeout=TIMEOUT)
    time.sleep(0.3)  # a few heartbeats

    # Transactions: a committed one carrying the consumer's offsets, and an aborted one.
    txn = Producer({**common, "transactional.id": f"capture-txn-{run}", "linger.ms": 5})
    txn.init_transactions(TIMEOUT)
    txn.begin_transaction()
    txn.produce(topic, b"in-transaction", partition=1)
    positions = consumer.position([TopicPartition(topic, p) for p in range(3)])
    txn.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), TIMEOUT)
    txn.commit_transaction(TIMEOUT)
    txn.begin_transaction()
    txn.produce(topic, b"aborted", partition=2)
    txn.abort_transaction(TIMEOUT)
    consumer.close()

    # Groups and offsets through the AdminClient.
    admin.list_consumer_groups().result(timeout=TIMEOUT)
    _wait(admin.describe_consumer_groups([group], include_authorized_operations=True))
    _wait(admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)]))
    offsets = [TopicPartition(topic, 0, 1)]
    _wait(admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, offsets)]))
    _wait(admin.delete_consumer_groups([group]))
    specs = {
        TopicPartition(topic, 0): OffsetSpec.earliest(),  # type: ignore[no-untyped-call]
        TopicPartition(topic, 1): OffsetSpec.latest(),  # type: ignore[no-untyped-call]
        TopicPartition(topic, 2): OffsetSpec.max_timestamp(),  # type: ignore[no-untyped-call]
    }
    _wait(admin.list_offsets(specs))
    _wait(admin.delete_records([TopicPartition(topic, 0, 1)]))

    # ACLs.
    binding = AclBinding(
        ResourceType.TOPIC,
        topic,
        ResourcePatternType.LITERAL,
        "User:someone",
        "*",
        AclOperation.READ,
        AclPermissionType.ALLOW,
    )
    _wait(admin.create_acls([binding]))
    match = AclBindingFilter(  # null name and host: any
        ResourceType.ANY,
        None,  # type: ignore[arg-type]
        ResourcePatternType.ANY,
        "User:someone",
        None,  # type: ignore[arg-type]
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    admin.describe_acls(match).result(timeout=TIMEOUT)
    _wait(admin.delete_acls([match]))

    # SCRAM credentials, then a producer authenticating with them over SASL_PLAINTEXT.
    upsert = UserScramCredentialUpsertion(
        USER, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), PASSWORD.encode()
    )
    _wait(admin.alter_user_scram_credentials([upsert]))
    _wait(admin.describe_user_scram_credentials([USER]))
    secure = Producer(
        {
            "bootstrap.servers": sasl,
            "client.id": "kafkite-capture",
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-256",
            "sasl.username": USER,
            "sasl.password": PASSWORD,
        }
    )
    secure.produce(topic, b"over-sasl", partition=0)
    _flush(secure)

    _wait(admin.delete_topics([other]))
    return EXPECTED_APIS


# The API keys the workload makes librdkafka send.
EXPECTED_APIS = frozenset(
    {0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 24, 25, 26, 28, 29, 30, 31, 32, 33}
    | {36, 37, 42, 44, 50, 51}
)


# ------------------------------------------------------------------------------------------ the check


def reencode(data: bytes) -> tuple[bytes, int]:
    """kafkite's encoding of a request frame it decoded (header and body), and where its body ended."""
    reg = registry()
    key, version = framing.peek_key_version(data)
    header_codec = reg.header("RequestHeader", reg.request_header_version(key, version))
    body_codec = reg.request(key, version)
    buf = memoryview(data)
    header, pos = header_codec.decode(buf, 0)
    body, end = body_codec.decode(buf, pos)
    return header_codec.encode_bytes(header) + body_codec.encode_bytes(body), end


def check_frame(frame: Frame) -> str | None:
    """None when kafkite's codec re-encodes the frame to the same bytes; else what differs."""
    reg = registry()
    api = reg.api(frame.api_key)
    if api is None or frame.api_version not in api.versions:
        return f"API {frame.api_key} v{frame.api_version} is not one kafkite implements"
    try:
        again, end = reencode(frame.data)
    except Exception as e:  # a DecodeError, or an encoder refusing what the decoder gave it
        return f"{api.name} v{frame.api_version}: {type(e).__name__}: {e}"
    rest = frame.data[end:]
    if rest and not known_stray_bytes(frame, rest):
        return f"{api.name} v{frame.api_version}: {len(rest)} bytes after the body: {rest.hex()}"
    if again != frame.data[:end]:
        return f"{api.name} v{frame.api_version}: re-encoded {again.hex()} != sent {frame.data[:end].hex()}"
    return None


def known_stray_bytes(frame: Frame, rest: bytes) -> bool:
    """The bytes librdkafka is known to send after a request body (Kafka ignores bytes after a request body,
    and so does kafkite: see kafkite/server/connection.py).

    * Metadata v9+ for all topics: librdkafka reserves four bytes for the topic array's length, writes a
      null compact array into the first and leaves the other three zeros in place (rd_kafka_MetadataRequest0),
      so three bytes more than the body follow (Kafka, like kafkite, reads the zeros as the next fields).
    * One more empty tag buffer after a flexible request: rd_kafka_buf_finalize appends the top-level tag
      buffer that some request builders (AlterUserScramCredentials) have already written.
    """
    reg = registry()
    if frame.api_key == 3 and frame.api_version >= 9 and len(rest) == 3:
        key, version = frame.api_key, frame.api_version
        buf = memoryview(frame.data)
        pos = reg.header("RequestHeader", reg.request_header_version(key, version)).decode(buf, 0)[1]
        return reg.request(key, version).decode(buf, pos)[0]["topics"] is None
    return rest == b"\x00" and frame.api_version in reg.apis[frame.api_key].flexible


# ------------------------------------------------------------------------------------------ the corpus


def load_corpus(path: Path = CORPUS) -> tuple[dict[str, Any], list[Frame]]:
    lines = path.read_text().splitlines()
    meta = json.loads(lines[0])
    frames = []
    for line in lines[1:]:
        row = json.loads(line)
        frames.append(Frame(row["api_key"], row["api_version"], bytes.fromhex(row["frame"])))
    return meta, frames


def select(frames: list[Frame], per_version: int = 5) -> list[Frame]:
    """A small corpus: per API version up to ``per_version`` frames of different sizes."""
    by_version: dict[tuple[int, int], dict[int, Frame]] = {}
    for f in frames:
        by_version.setdefault((f.api_key, f.api_version), {}).setdefault(len(f.data), f)
    out: list[Frame] = []
    for key in sorted(by_version):
        sizes = sorted(by_version[key])
        step = max(1, len(sizes) // per_version)
        picked = sorted({*sizes[::step][: per_version - 1], sizes[-1]})
        out += [by_version[key][size] for size in picked]
    return out


def write_corpus(frames: list[Frame], path: Path = CORPUS) -> None:
    import confluent_kafka

    meta = {
        "captured": "request frames sent by librdkafka to a kafkite broker (tests/librdkafka_capture.py)",
        "librdkafka": confluent_kafka.libversion()[0],
        "confluent_kafka": str(confluent_kafka.__version__),
    }
    rows = [json.dumps(meta)]
    rows += [
        json.dumps({"api_key": f.api_key, "api_version": f.api_version, "frame": f.data.hex()})
        for f in frames
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")


@contextlib.contextmanager
def proxies() -> Iterator[tuple[CaptureProxy, CaptureProxy]]:
    plain, sasl = CaptureProxy(), CaptureProxy()
    try:
        yield plain, sasl
    finally:
        plain.close()
        sasl.close()


def main() -> None:
    import sys
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from helpers import BrokerProcess, free_port

    with tempfile.TemporaryDirectory() as tmp, proxies() as (plain, sasl):
        sasl_port = free_port()
        broker = BrokerProcess(Path(tmp) / "data", Path(tmp) / "broker.log")
        broker.overrides = listener_overrides(broker.port, sasl_port, plain, sasl)
        broker.start()
        try:
            plain.upstream = ("127.0.0.1", broker.port)
            sasl.upstream = ("127.0.0.1", sasl_port)
            workload(plain.address, sasl.address)
        finally:
            broker.stop()
        frames = plain.captured() + sasl.captured()
    bad = [problem for f in frames if (problem := check_frame(f))]
    for problem in bad:
        print("does not re-encode:", problem)
    corpus = select(frames)
    write_corpus(corpus)
    print(f"{len(frames)} frames captured, {len(corpus)} kept in {CORPUS}")


if __name__ == "__main__":
    main()
