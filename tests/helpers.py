"""Test helpers: a broker run as a real subprocess, and a tiny raw Kafka client over a socket."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from kafkite.config import DEFINITIONS
from kafkite.protocol import framing, records
from kafkite.protocol.messages import registry

REPO = Path(__file__).resolve().parent.parent
SLOW = os.environ.get("KAFKITE_SLOW", "") not in ("", "0")
# Under CI=true nothing may be skipped for a missing tool: conftest.py turns such skips into failures.
CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
KCAT = shutil.which("kcat") or shutil.which("kafkacat")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BrokerError(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------ raw client


class RawClient:
    """A blocking Kafka client speaking kafkite's own codecs: one request at a time, or raw bytes."""

    def __init__(
        self, host: str, port: int, timeout: float = 10.0, client_id: str | None = "kafkite-tests"
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reg = registry()
        self.client_id = client_id
        self.correlation_id = 0

    @classmethod
    def to(cls, bootstrap: str, timeout: float = 10.0) -> RawClient:
        host, port = bootstrap.rsplit(":", 1)
        return cls(host, int(port), timeout)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_exact(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError(f"connection closed after {len(out)} of {n} bytes")
            out += chunk
        return bytes(out)

    def recv_frame(self) -> bytes:
        (size,) = struct.unpack(">i", self.recv_exact(4))
        return self.recv_exact(size)

    def encode(self, api_key: int, version: int, body: dict[str, Any]) -> tuple[int, bytes]:
        self.correlation_id += 1
        cid = self.correlation_id
        return cid, framing.encode_request(self.reg, api_key, version, cid, self.client_id, body)

    def request(self, api_key: int, version: int, body: dict[str, Any]) -> dict[str, Any]:
        cid, frame = self.encode(api_key, version, body)
        self.sock.sendall(frame)
        got_cid, resp = framing.decode_response(self.reg, api_key, version, self.recv_frame())
        assert got_cid == cid, f"correlation id {got_cid} != {cid}"
        return resp

    def api_versions(self, version: int = 3) -> dict[str, Any]:
        return self.request(
            18, version, {"client_software_name": "kafkite-tests", "client_software_version": "1"}
        )

    def is_closed(self, timeout: float = 5.0) -> bool:
        """True once the peer has closed the connection (EOF or reset) within ``timeout``."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                data = self.sock.recv(65536)
                if not data:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
        return False


def api_versions_ok(bootstrap: str, timeout: float = 2.0) -> bool:
    try:
        with RawClient.to(bootstrap, timeout) as c:
            resp = c.api_versions()
            return resp["error_code"] == 0 and bool(resp["api_keys"])
    except (OSError, ConnectionError, struct.error):
        return False


# ------------------------------------------------------------------------------------------ broker process


class BrokerProcess:
    """``kafkite serve`` as a subprocess on a fixed loopback port, with its data directory and stderr log."""

    def __init__(
        self,
        data_dir: Path,
        log_path: Path,
        overrides: Sequence[str] = (),
        port: int | None = None,
        program: Sequence[str] | None = None,
    ) -> None:
        # program: the command that runs kafkite (an installed ``kafkite`` script), else this checkout's.
        self.program = list(program) if program is not None else None
        self.data_dir = Path(data_dir)
        self.log_path = Path(log_path)
        self.port = port or free_port()
        self._port_chosen = port is None  # ours to change while the broker has never run
        self.starts = 0
        self.overrides = list(overrides)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self, extra: Iterable[str] = ()) -> list[str]:
        cmd = [*(self.program or [sys.executable, "-m", "kafkite.cli"]), "serve"]
        settings = [f"log.dirs={self.data_dir}", f"listeners=PLAINTEXT://127.0.0.1:{self.port}"]
        # Side services (REST, STOMP, ...) off unless a test asks: their default ports are fixed.
        settings += [
            f"{k}="
            for k in sorted(DEFINITIONS)
            if k.endswith(".listeners") and k != "advertised.listeners" and DEFINITIONS[k].acts
        ]
        settings += [*self.overrides, *extra]
        for s in settings:
            cmd += ["--override", s]
        return cmd

    def start(self, extra_overrides: Iterable[str] = ()) -> BrokerProcess:
        for attempt in range(3):
            try:
                return self._start(extra_overrides)
            except BrokerError as e:
                # Another process may take the free port before the broker binds it: on a first start, move.
                clash = "address already in use" in str(e).lower()
                if self.starts > 1 or not self._port_chosen or not clash or attempt == 2:
                    raise
                self.starts = 0
                self.port = free_port()
        raise AssertionError("unreachable")

    def _start(self, extra_overrides: Iterable[str]) -> BrokerProcess:
        if self.running:
            raise BrokerError("broker already running")
        self.starts += 1
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process's life
        self._log_file.write(f"---- start {' '.join(self.command(extra_overrides))}\n".encode())
        self._log_file.flush()
        env = dict(os.environ)
        if self.program is None:
            env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        else:  # an installed kafkite: nothing of this checkout may leak in
            for key in ("PYTHONPATH", "KAFKITE_SPECS_DIR", "VIRTUAL_ENV"):
                env.pop(key, None)
        self.proc = subprocess.Popen(
            self.command(extra_overrides),
            stdout=self._log_file,
            stderr=self._log_file,
            stdin=subprocess.DEVNULL,
            cwd=str(self.data_dir.parent),
            env=env,
        )
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise BrokerError(
                    f"broker exited with {self.proc.returncode} during start-up:\n{self.tail()}"
                )
            if api_versions_ok(self.bootstrap, timeout=1.0):
                return
            time.sleep(0.05)
        raise BrokerError(f"broker not ready on {self.bootstrap} after {timeout}s:\n{self.tail()}")

    def _reap(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            rc = self.proc.wait(timeout)
        finally:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
        return rc

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM and wait; the exit code (None when it was not running)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self._reap(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self._reap(10)
                raise BrokerError(f"broker ignored SIGTERM for {timeout}s:\n{self.tail()}") from None
        return self._reap(1)

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self._reap(10)

    def restart(self, extra_overrides: Iterable[str] = ()) -> BrokerProcess:
        rc = self.stop()
        if rc not in (0, None):
            raise BrokerError(f"broker exited with {rc} on SIGTERM:\n{self.tail()}")
        return self.start(extra_overrides)

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no broker log>"
        return "\n".join(text.splitlines()[-lines:])

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def clean_env(**env: str) -> dict[str, str]:
    """This environment without what would let the checkout leak into an installed kafkite, plus ``env``."""
    out = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "KAFKITE_SPECS_DIR")}
    out.update(env)
    return out


def answered_while_running(proc: subprocess.Popen[str], bootstrap: str) -> list[float]:
    """Times at which the Kafka port answered ApiVersions while ``proc`` ran (polled until it exits)."""
    answered: list[float] = []
    while proc.poll() is None:
        if api_versions_ok(bootstrap, timeout=0.5):
            answered.append(time.monotonic())
        time.sleep(0.01)
    return answered


def serve_and_fail(
    cmd: Sequence[str], port: int, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> tuple[int, str, list[float]]:
    """Run a ``kafkite serve`` that should fail at start-up: its exit status, its output, and the times its
    Kafka listener (on ``port``) answered ApiVersions meanwhile (there should be none). Without ``env``, this
    checkout's kafkite runs."""
    if env is None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        list(cmd), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    answered: list[float] = []
    poller = threading.Thread(
        target=lambda: answered.extend(answered_while_running(proc, f"127.0.0.1:{port}"))
    )
    poller.start()
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        poller.join(10)
    return proc.returncode, out, answered


def fetch_batches(
    bootstrap: str, topic: str, offset: int = 0, partition: int = 0
) -> list[records.BatchHeader]:
    """The headers of the stored batches a raw Fetch returns from ``offset``."""
    with RawClient.to(bootstrap) as c:
        resp = c.request(
            1,  # Fetch
            12,
            {
                "max_wait_ms": 0,
                "min_bytes": 0,
                "max_bytes": 1 << 24,
                "isolation_level": 0,
                "session_id": 0,
                "topics": [
                    {
                        "topic": topic,
                        "partitions": [
                            {"partition": partition, "fetch_offset": offset, "partition_max_bytes": 1 << 24}
                        ],
                    }
                ],
                "forgotten_topics_data": [],
                "rack_id": "",
            },
        )
    part = resp["responses"][0]["partitions"][0]
    assert part["error_code"] == 0, part
    data = bytes(part["records"] or b"")
    return [h for _, h in records.iter_headers(data)]


def advertised_api_keys(bootstrap: str) -> set[int]:
    with RawClient.to(bootstrap) as c:
        return {a["api_key"] for a in c.api_versions()["api_keys"]}


BrokerFactory = Callable[..., BrokerProcess]


def check_no_tracebacks(b: BrokerProcess) -> None:
    """A handler or task that crashed is a bug even when the client coped: fail the test that saw it."""
    text = b.log_text()
    if "Traceback" in text:
        start = text.index("Traceback")
        pytest.fail(
            f"the broker on {b.bootstrap} logged a traceback:\n{text[max(0, start - 2000) : start + 4000]}"
        )


def stop_all(brokers: list[BrokerProcess]) -> None:
    """Stop every broker (SIGKILL one that will not stop), then fail on any traceback one of them logged."""
    for b in brokers:
        try:
            b.stop()
        except Exception:
            b.kill9()
    for b in brokers:
        check_no_tracebacks(b)


def segment_files(data_dir: Path, topic: str, partition: int = 0) -> list[Path]:
    return sorted((Path(data_dir) / f"{topic}-{partition}").glob("*.log"))


# ------------------------------------------------------------------------------------------ confluent-kafka


def create_topic(
    bootstrap: str, topic: str, partitions: int = 1, config: dict[str, str] | None = None
) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(topic, partitions, 1, config=config or {})], operation_timeout=10)
    fs[topic].result(timeout=15)


Message = tuple[bytes | None, bytes | None]


def produce(
    bootstrap: str, topic: str, messages: Sequence[Message], partition: int = 0, **config: Any
) -> list[int]:
    """Produce (key, value) pairs to one partition with acks=all: their offsets, in order; fails on errors."""
    from confluent_kafka import Producer

    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5}
    conf.update({k.replace("_", "."): v for k, v in config.items()})
    producer = Producer(conf)
    offsets: list[int] = [-1] * len(messages)
    errors: list[Any] = []

    def report(i: int) -> Any:
        def cb(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(err)
            else:
                offsets[i] = msg.offset()

        return cb

    for i, (k, v) in enumerate(messages):
        while True:
            try:
                producer.produce(topic, v, k, partition=partition, on_delivery=report(i))
                break
            except BufferError:
                producer.poll(0.1)
    left = producer.flush(60)
    assert left == 0, f"{left} messages not delivered"
    assert not errors, errors[:5]
    return offsets


def consume(
    bootstrap: str, topic: str, partition: int = 0, start: int = 0, timeout: float = 30.0
) -> list[Any]:
    """Every message of one partition from ``start`` to its current end (confluent-kafka Messages)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "kafkite-tests-unused", "enable.auto.commit": False}
    )
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        consumer.assign([TopicPartition(topic, partition, start)])
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while (not out or out[-1].offset() < high - 1) and start < high:
            assert time.monotonic() < deadline, (
                f"consumed up to {out[-1].offset() if out else None} of {high}"
            )
            for m in consumer.consume(num_messages=10000, timeout=0.5):
                assert m.error() is None, m.error()
                out.append(m)
        return out
    finally:
        consumer.close()


def watermarks(bootstrap: str, topic: str, partition: int = 0) -> tuple[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "kafkite-tests-unused"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        return int(low), int(high)
    finally:
        consumer.close()
