"""Kill -9 with queue messages visible, in flight and dead-lettered: no acknowledged change is lost."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import stomp
from oci.queue.models import UpdateMessageDetails
from test_queue_rest import Clients, get, oci_config, put, stats

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    """``kafkite serve`` as a subprocess with Kafka, REST and STOMP listeners on fixed loopback ports."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.ports = (free_port(), free_port(), free_port())
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports[1]}"

    def start(self) -> Serve:
        kafka, rest, stomp_port = self.ports
        cmd = [sys.executable, "-m", "kafkite.cli", "serve"]
        for o in (
            f"listeners=PLAINTEXT://127.0.0.1:{kafka}",
            f"rest.listeners=http://127.0.0.1:{rest}",
            f"stomp.listeners=stomp://127.0.0.1:{stomp_port}",
            f"log.dirs={self.data_dir}",
        ):
            cmd += ["--override", o]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kafkite exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/20210201/queues", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"kafkite did not start:\n{self.log()}")

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill9()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    s = Serve(tmp_path / "data", tmp_path / "kafkite.log")
    try:
        yield s
    finally:
        s.stop()


def test_kill9_keeps_visible_inflight_and_dead_letters(serve: Serve, tmp_path: Path) -> None:
    serve.start()
    cl = Clients(serve.url, oci_config(tmp_path))
    c = cl.messages()
    dq = cl.create_queue("dead", visibility_in_seconds=1, dead_letter_queue_delivery_count=1)
    q = cl.create_queue("live")

    put(c, dq, "poison")
    assert len(get(c, dq)) == 1
    assert get(c, dq, timeout_in_seconds=3) == []  # lapsed into the DLQ
    assert stats(c, dq)["dlq"]["visible"] == 1

    [f_short] = put(c, q, "inflight-short")
    [short] = get(c, q, visibility_in_seconds=5)
    assert short.id == f_short
    [f_long] = put(c, q, "inflight-long")
    [long] = get(c, q, visibility_in_seconds=3600)
    assert long.id == f_long
    put(c, q, "deleted")
    [gone] = get(c, q, visibility_in_seconds=60)
    c.delete_message(q, gone.receipt)
    put(c, q, "visible-1", "visible-2")

    # One more message through STOMP, acknowledged by a RECEIPT.
    conn = stomp.Connection12([("127.0.0.1", serve.ports[2])])
    conn.connect("any", "any", wait=True)
    conn.send("live", "visible-stomp", receipt="r")
    time.sleep(0.3)
    conn.disconnect()

    serve.kill9()
    serve.start()
    cl = Clients(serve.url, oci_config(tmp_path))
    c = cl.messages()
    assert {x.display_name for x in cl.admin.list_queues().data.items} == {"dead", "live"}
    assert stats(c, dq) == {"queue": {"visible": 0, "in_flight": 0}, "dlq": {"visible": 1, "in_flight": 0}}
    still_in_flight = time.time() < short.visible_after.timestamp() - 0.5
    if still_in_flight:
        assert stats(c, q)["queue"] == {"visible": 3, "in_flight": 2}
    got = get(c, q, limit=10, visibility_in_seconds=600)
    if still_in_flight:
        # The short in-flight message comes back once its timeout has passed, not before.
        assert "inflight-short" not in {m.content for m in got}
        got += get(c, q, timeout_in_seconds=15, visibility_in_seconds=600)
    by = {m.content: m for m in got}
    assert sorted(by) == ["inflight-short", "visible-1", "visible-2", "visible-stomp"]
    assert by["inflight-short"].delivery_count == 2
    assert by["visible-1"].delivery_count == 1
    assert get(c, q, timeout_in_seconds=1) == []
    # The long delivery's receipt survived the crash.
    c.update_message(q, long.receipt, UpdateMessageDetails(visibility_in_seconds=0))
    [again] = get(c, q, timeout_in_seconds=5)
    assert (again.content, again.delivery_count) == ("inflight-long", 2)
    assert stats(c, q)["queue"]["visible"] == 0
