"""``kafkite serve`` as an operator meets it: start-up validation, port clashes, exit codes."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import BrokerError, BrokerFactory, BrokerProcess, api_versions_ok, free_port


def serve(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "kafkite.cli", "serve", "--override", f"log.dirs={tmp_path / 'data'}"]
    cmd += ["--override", f"listeners=PLAINTEXT://127.0.0.1:{free_port()}"]
    for o in overrides:
        cmd += ["--override", o]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("no.such.key=1", "no.such.key"),
        ("num.partitions=zero", "num.partitions"),
        ("num.partitions=0", "num.partitions"),
        ("listeners=nonsense", "listeners"),
        ("log.cleanup.policy=shred", "log.cleanup.policy"),
        ("missing-equals-sign", "key=value"),
    ],
)
def test_bad_configuration_is_refused_with_the_key_named(tmp_path: Path, override: str, names: str) -> None:
    proc = serve(tmp_path, override)
    assert proc.returncode == 2, proc.stderr
    assert names in proc.stderr
    assert "Traceback" not in proc.stderr


def test_port_in_use_fails_to_start(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        b = BrokerProcess(tmp_path / "data", tmp_path / "broker.log", port=port)
        with pytest.raises(BrokerError, match="exited with 1"):
            b.start()
    assert "cannot start" in b.log_text()
    assert "Traceback" not in b.log_text()


def test_second_broker_on_the_same_data_dir(broker: BrokerProcess) -> None:
    """Two brokers must never append to the same logs: the second one refuses to start."""
    other = BrokerProcess(broker.data_dir, broker.data_dir.parent / "second.log")
    with pytest.raises(BrokerError, match="in use by another broker"):
        other.start()
    assert api_versions_ok(broker.bootstrap)
    # Once the first one is gone (even by kill -9), the directory is free again.
    broker.kill9()
    other.start()
    other.stop()


def test_uvloop_event_loop_serves_produce_and_fetch(broker_factory: BrokerFactory) -> None:
    pytest.importorskip("uvloop")
    from helpers import consume, produce

    b = broker_factory("event.loop=uvloop")
    # Enough data that fetches carry file ranges above the sendfile threshold.
    values = [(b"k%d" % i, b"v" * 1000) for i in range(300)]
    assert produce(b.bootstrap, "uv", values) == list(range(300))
    assert [(m.key(), m.value()) for m in consume(b.bootstrap, "uv", 0)] == values
