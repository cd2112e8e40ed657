"""A slow disk delays only the produce requests that wait for it: with every large write taking a second
(the broker's ``os.pwrite`` made to sleep, in a real broker process), Metadata and Fetch from the page cache
on other connections are answered at once, the producer's messages keep their order, and nothing
acknowledged is lost.

Before the log had writer threads, the event loop made those writes itself and every other connection waited
a second per write.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from helpers import BrokerProcess, check_no_tracebacks, consume, create_topic, produce

from kafkite.client import KafkaClient
from kafkite.protocol.api_keys import ApiKey

pytestmark = pytest.mark.timeout(300)

SLOW_BYTES = 256 * 1024
SLOW_S = 1.0
# A request not stuck behind a write: well under the second a write takes, with room for a busy machine.
PROMPT_S = 0.5

_SLOW_PWRITE = f"""
import os, runpy, sys, time
_pwrite = os.pwrite
def pwrite(fd, data, offset):
    if len(data) >= {SLOW_BYTES}:
        time.sleep({SLOW_S})
    return _pwrite(fd, data, offset)
os.pwrite = pwrite
sys.argv = ["kafkite", *sys.argv[1:]]
runpy.run_module("kafkite.cli", run_name="__main__")
"""


class SlowDiskBroker(BrokerProcess):
    def command(self, extra: Iterable[str] = ()) -> list[str]:
        cmd = super().command(extra)
        assert cmd[1:3] == ["-m", "kafkite.cli"]
        return [sys.executable, "-c", _SLOW_PWRITE, *cmd[3:]]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[SlowDiskBroker]:
    b = SlowDiskBroker(tmp_path / "data", tmp_path / "broker.log")
    b.start()
    yield b
    b.stop()


async def _probe(bootstrap: str, seconds: float) -> tuple[list[float], list[float]]:
    """Metadata and Fetch (of the cached topic, from its start) round trips on a connection of their own."""
    meta: list[float] = []
    fetch: list[float] = []
    async with KafkaClient(bootstrap, client_id="probe") as client:
        await client.refresh_metadata(["cached"])
        conn = await client.any_connection()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            await conn.request(
                ApiKey.METADATA, {"topics": [{"name": "busy"}], "allow_auto_topic_creation": False}
            )
            t1 = time.monotonic()
            got = await client.fetch("cached", 0, 0, max_bytes=64 * 1024)
            t2 = time.monotonic()
            assert got.error_code == 0 and got.records
            meta.append(t1 - t0)
            fetch.append(t2 - t1)
            await asyncio.sleep(0.05)
    return meta, fetch


def test_other_clients_are_served_while_the_disk_is_slow(broker: SlowDiskBroker) -> None:
    create_topic(broker.bootstrap, "cached")
    create_topic(broker.bootstrap, "busy")
    produce(broker.bootstrap, "cached", [(b"k", b"small %d" % i) for i in range(100)])

    acked: list[int] = []
    errors: list[object] = []
    stop = threading.Event()

    def producer() -> None:
        # A megabyte per request, at most 5 in flight (each takes a second to write): 20 MB in all.
        p = Producer(
            {
                "bootstrap.servers": broker.bootstrap,
                "enable.idempotence": True,
                "linger.ms": 50,
                "batch.size": 1_000_000,
                "request.timeout.ms": 60_000,
            }
        )
        value = b"x" * 1000
        i = 0

        def report(err: object, msg: object) -> None:
            if err is not None:
                errors.append(err)
            else:
                acked.append(msg.offset())  # type: ignore[attr-defined]

        while not stop.is_set() and i < 20_000:
            try:
                p.produce("busy", value + b"%08d" % i, partition=0, on_delivery=report)
                i += 1
            except BufferError:
                p.poll(0.05)
            if i % 1000 == 0:
                p.poll(0)
        assert p.flush(120) == 0

    t = threading.Thread(target=producer)
    t.start()
    try:
        deadline = time.monotonic() + 60
        while len(acked) < 1000 and time.monotonic() < deadline:  # the slow writes are under way
            time.sleep(0.1)
        meta, fetch = asyncio.run(_probe(broker.bootstrap, 6.0))
    finally:
        stop.set()
        t.join(180)
    assert not errors, errors[:3]
    assert acked == sorted(acked), "acknowledged offsets follow the order of the sends"
    assert len(meta) >= 20
    slow_meta = [round(x, 2) for x in meta if x > PROMPT_S]
    slow_fetch = [round(x, 2) for x in fetch if x > PROMPT_S]
    assert not slow_meta and not slow_fetch, f"waited on the disk: metadata {slow_meta}, fetch {slow_fetch}"
    # Nothing acknowledged was lost, in order, one copy each.
    got = consume(broker.bootstrap, "busy", timeout=120)
    values = [int(m.value()[1000:]) for m in got]
    assert values == list(range(len(values))) and len(values) >= len(acked)
    check_no_tracebacks(broker)
