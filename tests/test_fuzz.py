"""A property-based fuzzer over every API and version the broker serves, over real sockets.

Two kinds of input: requests of the right shape with random field values (edge values, known and unknown
topic names, valid and corrupt record batches), and the bytes of such requests mutated (truncated, bits
flipped, bytes inserted or removed, size prefixes lied about). Each fuzzed request is followed on the same
connection by an ApiVersions probe; the broker must answer the probe or close the connection within a few
seconds (no hang), keep running (no crash), log no handler failure, and keep serving a separate control
connection throughout.

Short by default (a few hundred examples, well under a minute); ``KAFKITE_FUZZ_EXAMPLES=20000`` runs long.
"""

from __future__ import annotations

import functools
import os
import socket
import struct
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import BrokerProcess, RawClient, free_port
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from kafkite.protocol import framing, records
from kafkite.protocol.api_keys import ApiKey
from kafkite.protocol.messages import registry
from kafkite.protocol.specs import FieldSpec

EXAMPLES = int(os.environ.get("KAFKITE_FUZZ_EXAMPLES", "300"))
PROBE_TIMEOUT = 10.0
PROBE_ID = 0x7FFF_FFF0
TOPICS = ["fuzz", "fuzz-2", "deny-fuzz", "__consumer_offsets", "__transaction_state"]
GROUPS = ["fuzz-group", "deny-group", ""]

pytestmark = pytest.mark.timeout(max(600, EXAMPLES))

INT_BOUNDS = {
    "int8": (-(1 << 7), (1 << 7) - 1),
    "int16": (-(1 << 15), (1 << 15) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1),
    "uint16": (0, (1 << 16) - 1),
    "uint32": (0, (1 << 32) - 1),
}


def _int_strategy(f: FieldSpec) -> st.SearchStrategy[int]:
    lo, hi = INT_BOUNDS[f.type]
    name = f.name
    if "timeout" in name or "wait" in name or name.endswith("_ms"):
        # Long polls and rebalances legitimately wait this long: keep them short so a wait is not a hang.
        return st.integers(max(lo, -1), min(hi, 300))
    if name in ("num_partitions", "count", "replication_factor"):
        return st.integers(max(lo, -3), min(hi, 8))
    edges = st.sampled_from(sorted(x for x in {lo, hi, -1, 0, 1, 2} if lo <= x <= hi))
    small = st.integers(max(lo, -5), min(hi, 10))
    return st.one_of(edges, small, st.integers(lo, hi))


def _string_strategy(f: FieldSpec) -> st.SearchStrategy[str]:
    known = TOPICS + GROUPS + ["PLAIN", "SCRAM-SHA-256", "User:*", "*", "kafka-cluster", "1"]
    return st.one_of(st.sampled_from(known), st.text(max_size=12), st.just("x" * 300))


def _records_strategy() -> st.SearchStrategy[Any]:
    batch = st.builds(
        lambda values, codec, ts: records.build_batch([(None, v, [], ts) for v in values], compression=codec),
        st.lists(st.binary(max_size=40), min_size=1, max_size=3),
        st.sampled_from([0, 1, 2, 3, 4]),
        st.integers(-1, 1 << 41),
    )

    def corrupt(data: bytes, at: int, value: int) -> bytes:
        b = bytearray(data)
        b[at % len(b)] = value
        return bytes(b)

    corrupted = st.builds(corrupt, batch, st.integers(0, 1000), st.integers(0, 255))
    return st.one_of(st.none(), st.binary(max_size=80), batch, corrupted)


def value_strategy(f: FieldSpec, version: int) -> st.SearchStrategy[Any]:
    t = f.type
    base: st.SearchStrategy[Any]
    if t == "[]":
        base = st.lists(struct_strategy(f.fields, version), max_size=3)
    elif t == "{}":
        base = struct_strategy(f.fields, version)
    elif t.startswith("[]"):
        element = FieldSpec(f.name, t[2:], f.versions)
        base = st.lists(value_strategy(element, version), max_size=3)
    elif t in INT_BOUNDS:
        base = _int_strategy(f)
    elif t == "bool":
        base = st.booleans()
    elif t == "float64":
        base = st.floats(allow_nan=True)
    elif t == "string":
        base = _string_strategy(f)
    elif t == "bytes":
        base = st.binary(max_size=64)
    elif t == "records":
        return _records_strategy()
    elif t == "uuid":
        base = st.one_of(st.just(uuid.UUID(int=0)), st.builds(uuid.uuid4))
    else:
        raise AssertionError(f"no strategy for type {t}")
    if version in f.nullable:
        return st.one_of(st.none(), base)
    return base


def struct_strategy(fields: list[FieldSpec], version: int) -> st.SearchStrategy[dict[str, Any]]:
    present = {f.name: value_strategy(f, version) for f in fields if version in f.versions}
    return st.fixed_dictionaries(present)


@functools.cache
def request_strategy(key: int, version: int) -> st.SearchStrategy[dict[str, Any]]:
    return struct_strategy(registry().request(key, version).spec.fields, version)


# ------------------------------------------------------------------------------------------ brokers


def _served(bootstrap: str) -> list[tuple[int, int]]:
    with RawClient.to(bootstrap) as c:
        keys = c.api_versions()["api_keys"]
    reg = registry()
    out = []
    for k in keys:
        api = reg.api(k["api_key"])
        if api is not None:
            out.extend((k["api_key"], v) for v in range(k["min_version"], k["max_version"] + 1))
    return out


def _start(tmp: Any, name: str, *overrides: str) -> BrokerProcess:
    root = tmp.mktemp(name)
    b = BrokerProcess(
        root / "data",
        root / "broker.log",
        [
            "group.min.session.timeout.ms=10",
            "group.initial.rebalance.delay.ms=0",
            "connections.max.idle.ms=60000",
            *overrides,
        ],
    )
    b.start()
    return b


@pytest.fixture(scope="module")
def plain_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    b = _start(tmp_path_factory, "fuzz-plain")
    yield b
    b.stop()


@pytest.fixture(scope="module")
def acl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    b = _start(
        tmp_path_factory, "fuzz-acl", "authorizer.class.name=kafkite", "allow.everyone.if.no.acl.found=true"
    )
    with RawClient.to(b.bootstrap) as c:
        resp = c.request(
            ApiKey.CREATE_ACLS,
            3,
            {
                "creations": [
                    {
                        "resource_type": rt,
                        "resource_name": "deny",
                        "resource_pattern_type": 4,  # PREFIXED
                        "principal": "User:*",
                        "host": "*",
                        "operation": 2,  # ALL
                        "permission_type": 2,  # DENY
                    }
                    for rt in (2, 3)  # topics and groups starting with "deny"
                ]
            },
        )
        assert all(r["error_code"] == 0 for r in resp["results"]), resp
    yield b
    b.stop()


class Harness:
    """One fuzzing connection (reopened when the broker closes it) and one control connection."""

    def __init__(self, broker: BrokerProcess) -> None:
        self.broker = broker
        self.reg = registry()
        self.sock: socket.socket | None = None
        self.control = RawClient.to(broker.bootstrap)
        self.closed = 0
        self.answered = 0
        self.log_offset = len(broker.log_text())

    def _connect(self) -> socket.socket:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.broker.port), timeout=PROBE_TIMEOUT)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.sock

    def _drop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def probe_frame(self) -> bytes:
        return framing.encode_request(self.reg, ApiKey.API_VERSIONS, 0, PROBE_ID, "probe", {})

    def send(self, payload: bytes) -> None:
        """Send ``payload`` then the probe; wait until the probe is answered or the connection closes."""
        sock = self._connect()
        try:
            sock.sendall(payload + self.probe_frame())
        except OSError:
            self._drop()
            self.closed += 1
            return
        deadline = time.monotonic() + PROBE_TIMEOUT
        buf = bytearray()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._drop()
                raise AssertionError(f"no answer and no close within {PROBE_TIMEOUT}s for {payload[:200]!r}")
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                self._drop()
                self.closed += 1
                return
            buf += chunk
            while len(buf) >= 8:
                (size,) = struct.unpack_from(">i", buf, 0)
                if len(buf) < 4 + size:
                    break
                (cid,) = struct.unpack_from(">i", buf, 4)
                del buf[: 4 + size]
                if cid == PROBE_ID:
                    self.answered += 1
                    return

    def check_control(self) -> None:
        t0 = time.monotonic()
        assert self.control.api_versions()["error_code"] == 0
        assert self.control.request(ApiKey.METADATA, 1, {"topics": []})["brokers"]
        assert time.monotonic() - t0 < 5.0, "the control connection was slow"
        assert self.broker.running, f"the broker died:\n{self.broker.tail()}"

    def failures(self) -> list[str]:
        text = self.broker.log_text()[self.log_offset :]
        markers = ("Traceback", "failed; closing", "writer for", "Task exception")
        return [line for line in text.splitlines() if any(m in line for m in markers)]

    def close(self) -> None:
        self._drop()
        self.control.close()


@pytest.fixture
def plain(
    plain_broker: BrokerProcess, attach_broker: Callable[[BrokerProcess], BrokerProcess]
) -> Iterator[Harness]:
    attach_broker(plain_broker)
    h = Harness(plain_broker)
    yield h
    h.close()


@pytest.fixture
def acl(
    acl_broker: BrokerProcess, attach_broker: Callable[[BrokerProcess], BrokerProcess]
) -> Iterator[Harness]:
    attach_broker(acl_broker)
    h = Harness(acl_broker)
    yield h
    h.close()


# ------------------------------------------------------------------------------------------ strategies


@st.composite
def valid_request(draw: st.DrawFn, served: list[tuple[int, int]]) -> tuple[int, int, bytes]:
    key, version = draw(st.sampled_from(served))
    reg = registry()
    body = draw(request_strategy(key, version))
    client_id = draw(st.one_of(st.none(), st.sampled_from(["fuzzer", ""]), st.text(max_size=8)))
    frame = framing.encode_request(reg, key, version, draw(st.integers(0, PROBE_ID - 1)), client_id, body)
    return key, version, frame


@st.composite
def mutated_request(draw: st.DrawFn, served: list[tuple[int, int]]) -> bytes:
    _, _, frame = draw(valid_request(served))
    body = bytearray(frame[4:])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "set"]))
        at = draw(st.integers(0, max(0, len(body) - 1)))
        if op == "truncate":
            del body[at:]
        elif op == "flip" and body:
            body[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            body[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del body[at : at + draw(st.integers(1, 8))]
        elif op == "set" and body:
            body[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF]))
    prefix = draw(st.sampled_from(["exact", "exact", "exact", "negative", "huge", "short"]))
    if prefix == "negative":
        return struct.pack(">i", -draw(st.integers(1, 1 << 31))) + bytes(body)
    if prefix == "huge":
        return struct.pack(">i", draw(st.integers(200 * 1024 * 1024, (1 << 31) - 1))) + bytes(body)
    if prefix == "short" and body:
        cut = draw(st.integers(0, len(body) - 1))
        # A frame shorter than its bytes: the rest is read as the next frame's size and contents.
        rest = bytes(body[cut:])
        return struct.pack(">i", cut) + bytes(body[:cut]) + struct.pack(">i", len(rest)) + rest
    return struct.pack(">i", len(body)) + bytes(body)


# ------------------------------------------------------------------------------------------ tests


def _run_fuzz(h: Harness, strategy: st.SearchStrategy[Any], examples: int) -> None:
    seen: set[tuple[int, int]] = set()

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        # Shrinking would replay cases against a broker whose state has moved on: report the case as found.
        phases=[Phase.explicit, Phase.generate],
        derandomize=os.environ.get("KAFKITE_FUZZ_SEED") is None,
    )
    @given(strategy)
    def one(case: Any) -> None:
        if isinstance(case, tuple):
            key, version, frame = case
            seen.add((key, version))
        else:
            frame = case
        h.send(frame)
        h.check_control()

    one()
    h.check_control()
    assert h.failures() == [], "\n".join(h.failures()[:20])
    assert h.answered > 0


def test_fuzz_valid_shaped_requests(plain: Harness) -> None:
    served = _served(plain.broker.bootstrap)
    assert len(served) > 50
    _run_fuzz(plain, valid_request(served), EXAMPLES)


def test_fuzz_valid_shaped_requests_with_acls(acl: Harness) -> None:
    _run_fuzz(acl, valid_request(_served(acl.broker.bootstrap)), max(50, EXAMPLES // 2))


def test_fuzz_mutated_bytes(plain: Harness) -> None:
    _run_fuzz(plain, mutated_request(_served(plain.broker.bootstrap)), EXAMPLES)


def test_every_api_and_version_answers_its_default_request(plain: Harness) -> None:
    """The all-defaults body of every served API and version is answered (or, for acks=0, not) and the
    connection survives or is closed cleanly."""
    reg = registry()
    for key, version in _served(plain.broker.bootstrap):
        plain.send(framing.encode_request(reg, key, version, 1, "defaults", {}))
    plain.check_control()
    assert plain.failures() == [], "\n".join(plain.failures()[:20])


def test_slow_and_oversized_clients(plain: Harness) -> None:
    """A frame announcing more than socket.request.max.bytes is refused at once; bytes dribbled slowly are
    still assembled into a request."""
    port = plain.broker.port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(struct.pack(">i", 1 << 30))
        assert s.recv(10) == b""
    frame = plain.probe_frame()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        for i in range(len(frame)):
            s.sendall(frame[i : i + 1])
            time.sleep(0.005)
        (size,) = struct.unpack(">i", s.recv(4))
        assert size > 0
    with socket.create_connection(("127.0.0.1", free_port() and port), timeout=5) as s:
        s.sendall(b"\x00\x00\x00\x00")  # an empty frame
        assert s.recv(10) == b""
    plain.check_control()


def test_internal_topics_cannot_be_deleted(plain: Harness) -> None:
    """Found by the fuzzer: deleting __transaction_state closed the transaction coordinator's log under it."""
    with RawClient.to(plain.broker.bootstrap) as c:
        c.request(ApiKey.FIND_COORDINATOR, 4, {"key_type": 1, "coordinator_keys": ["t"]})
        c.request(ApiKey.FIND_COORDINATOR, 4, {"key_type": 0, "coordinator_keys": ["g"]})
        resp = c.request(
            ApiKey.DELETE_TOPICS,
            5,
            {"topic_names": ["__consumer_offsets", "__transaction_state"], "timeout_ms": 100},
        )
        assert [r["error_code"] for r in resp["responses"]] == [42, 42], resp
        init = c.request(
            ApiKey.INIT_PRODUCER_ID, 4, {"transactional_id": "fuzz-txn", "transaction_timeout_ms": 10000}
        )
        assert init["error_code"] in (0, 15), init


def test_metadata_topic_ids_before_v12_close_cleanly(plain: Harness) -> None:
    """Found by the fuzzer: a Metadata v10/v11 request naming a topic by id only made the broker build a
    response it could not encode (a crash in the connection's writer)."""
    reg = registry()
    for version in (10, 11):
        frame = framing.encode_request(
            reg,
            ApiKey.METADATA,
            version,
            1,
            "t",
            {"topics": [{"name": None, "topic_id": uuid.uuid4()}], "allow_auto_topic_creation": False},
        )
        plain.send(frame)
    assert plain.failures() == []
    plain.check_control()
