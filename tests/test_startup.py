"""Start-up that fails loudly: every listener (Kafka, REST, STOMP, metrics, console) is bound before the
broker serves anything; one that cannot be bound stops ``kafkite serve`` with a non-zero exit and a message
naming the key and the address, and the Kafka listener never answered meanwhile. A missing optional
dependency names the extra that installs it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import REPO, BrokerError, BrokerProcess, api_versions_ok, free_port, serve_and_fail, stop_all

from kafkite.config import DEFINITIONS

DEFAULT_REST = DEFINITIONS["rest.listeners"].default


def serve_cmd(tmp_path: Path, port: int, *overrides: str) -> list[str]:
    cmd = [sys.executable, "-m", "kafkite", "serve"]
    settings = [
        f"listeners=PLAINTEXT://127.0.0.1:{port}",
        f"log.dirs={tmp_path / f'data-{port}'}",
        "rest.listeners=",
        "stomp.listeners=",
        *overrides,
    ]
    for s in settings:
        cmd += ["--override", s]
    return cmd


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_second_broker_with_the_default_rest_port_exits_naming_rest_listeners(tmp_path: Path) -> None:
    rest = DEFAULT_REST
    first = BrokerProcess(tmp_path / "first", tmp_path / "first.log", [f"rest.listeners={rest}"])
    try:
        first.start()
    except BrokerError:
        # Another program on this machine holds the default port: both brokers then share another one (the
        # start-up path is the same).
        rest = f"http://localhost:{free_port()}"
        first = BrokerProcess(tmp_path / "first2", tmp_path / "first2.log", [f"rest.listeners={rest}"])
        first.start()
    try:
        port = free_port()
        rc, out, answered = serve_and_fail(
            serve_cmd(tmp_path, port, f"rest.listeners={rest}"), port, tmp_path
        )
        assert rc == 1, out
        assert (
            f"kafkite: cannot start: rest.listeners: cannot listen on {rest}: address already in use" in out
        )
        assert answered == [], "the second broker answered a Kafka request before giving up"
        assert "Traceback" not in out and "kafkite ready" not in out
        assert api_versions_ok(first.bootstrap)  # the first one is unharmed
    finally:
        stop_all([first])


@pytest.mark.parametrize(
    ("key", "scheme"),
    [
        ("listeners", "PLAINTEXT"),
        ("rest.listeners", "http"),
        ("stomp.listeners", "stomp"),
        ("metrics.listener", "http"),
        ("console.listener", "http"),
    ],
)
def test_a_listener_in_use_stops_start_up_naming_key_and_address(
    tmp_path: Path, busy_port: int, key: str, scheme: str
) -> None:
    address = f"{scheme}://127.0.0.1:{busy_port}"
    port = busy_port if key == "listeners" else free_port()
    rc, out, answered = serve_and_fail(serve_cmd(tmp_path, port, f"{key}={address}"), port, tmp_path)
    assert rc == 1, out
    assert f"kafkite: cannot start: {key}: cannot listen on {address}: address already in use" in out, out
    assert "Traceback" not in out and "kafkite ready" not in out and "listening on" not in out, out
    assert answered == []


@pytest.mark.parametrize("key", ["listeners", "rest.listeners", "stomp.listeners", "metrics.listener"])
def test_an_address_not_on_this_machine_stops_start_up(tmp_path: Path, key: str) -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: binding it fails at once, nothing is sent.
    scheme = {"listeners": "PLAINTEXT", "stomp.listeners": "stomp"}.get(key, "http")
    address = f"{scheme}://192.0.2.1:{free_port()}"
    port = free_port()
    rc, out, answered = serve_and_fail(serve_cmd(tmp_path, port, f"{key}={address}"), port, tmp_path)
    assert rc == 1, out
    assert f"kafkite: cannot start: {key}: cannot listen on {address}: cannot assign requested address" in out
    assert "Traceback" not in out and answered == []


def without(module: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """``kafkite argv...`` in a Python where ``module`` cannot be imported."""
    code = (
        f"import sys; sys.modules[{module!r}] = None; "
        "from kafkite.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )


def test_postgresql_engine_without_psycopg_names_the_extra(tmp_path: Path) -> None:
    port = free_port()
    res = without("psycopg", *serve_cmd(tmp_path, port, "storage.engine=postgresql://u@127.0.0.1:1/db")[3:])
    assert res.returncode == 1, res.stderr
    assert "storage.engine=postgresql://... needs psycopg: pip install 'kafkite[postgresql]'" in res.stderr
    assert "Traceback" not in res.stderr


def test_uvloop_without_uvloop_names_the_extra(tmp_path: Path) -> None:
    res = without("uvloop", *serve_cmd(tmp_path, free_port(), "event.loop=uvloop")[3:])
    assert res.returncode == 2, res.stderr
    assert "event.loop=uvloop needs uvloop: pip install 'kafkite[uvloop]'" in res.stderr
    assert "Traceback" not in res.stderr


def test_plot_without_matplotlib_names_the_extra(tmp_path: Path) -> None:
    argv = ["bench", "produce", "--bootstrap", f"127.0.0.1:{free_port()}", "--count", "1"]
    res = without("matplotlib", *argv, "--plot", str(tmp_path / "x.png"))
    assert res.returncode == 2, res.stderr
    assert "--plot needs matplotlib: pip install 'kafkite[plot]'" in res.stderr
    assert "Traceback" not in res.stderr


def test_missing_spec_stops_start_up_naming_it(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    for p in (REPO / "protocol_specs").glob("*.spec"):
        if p.name != "JoinGroup.spec":
            (specs / p.name).write_bytes(p.read_bytes())
    port = free_port()
    env = {**os.environ, "KAFKITE_SPECS_DIR": str(specs), "PYTHONPATH": str(REPO)}
    rc, out, answered = serve_and_fail(serve_cmd(tmp_path, port), port, tmp_path, env)
    assert rc == 1, out
    assert f"broken installation: protocol specs missing from {specs}: JoinGroup.spec (API key 11)" in out
    assert "Traceback" not in out and answered == []
