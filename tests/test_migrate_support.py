"""Support for the migration tests: seeding a source cluster with kafkite's own client, running the CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from helpers import REPO, BrokerProcess

from kafkite.client import KafkaClient
from kafkite.protocol.records import build_batch

T = TypeVar("T")
MB = 1024 * 1024


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "kafkite.cli", "migrate", *args]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_command(*args), capture_output=True, text=True, timeout=timeout, env=cli_env(), check=False
    )


async def create_topic(
    c: KafkaClient, name: str, partitions: int, configs: dict[str, str] | None = None
) -> None:
    res = await c.create_topics([(name, partitions, configs or {})])
    assert res[name][0] == 0, res
    await c.refresh_metadata([name])


def record(
    i: int, size: int = 0, ts: int | None = None
) -> tuple[bytes, bytes, list[tuple[str, bytes | None]], int]:
    value = f"value-{i}-".encode().ljust(size, b"x") if size else f"value-{i}".encode()
    headers: list[tuple[str, bytes | None]] = [("seq", str(i).encode())]
    if i % 7 == 0:
        headers.append(("nullable", None))
    return (f"key-{i % 1000}".encode(), value, headers, (ts or 1_700_000_000_000) + i)


async def produce_numbered(
    c: KafkaClient, topic: str, partitions: int, per_partition: int, *, batch: int = 2000, start: int = 0
) -> None:
    """``per_partition`` numbered records into every partition, in batches."""

    async def one(p: int) -> None:
        for lo in range(start, start + per_partition, batch):
            hi = min(start + per_partition, lo + batch)
            recs = [record(p * 10_000_000 + i) for i in range(lo, hi)]
            got = await c.produce(topic, {p: build_batch(recs)})
            assert got[p].error_code == 0, got

    await asyncio.gather(*(one(p) for p in range(partitions)))


class RateProducer:
    """Produce ``rate`` bytes per second of ``size``-byte values to one partition, in a thread of its own;
    with ``group``, that group commits the end offset as it goes (a consumer keeping up)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        rate: float,
        size: int = 64 * 1024,
        ticks: int = 10,
        group: str | None = None,
    ) -> None:
        self.bootstrap, self.topic, self.rate, self.size, self.ticks = bootstrap, topic, rate, size, ticks
        self.group = group
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.sent = 0
        self.error: BaseException | None = None

    async def _main(self) -> None:
        try:
            async with KafkaClient(self.bootstrap) as c:
                await c.refresh_metadata([self.topic])
                t0 = time.monotonic()
                n = 0
                while not self._stop.is_set():
                    due = int((time.monotonic() - t0) * self.rate / self.size)
                    # A late tick (a busy machine) sends what is due in batches under max.message.bytes.
                    step = max(1, (512 * 1024) // max(1, self.size))
                    while due > n:
                        upto = min(due, n + step)
                        recs = [record(i, self.size, int(time.time() * 1000)) for i in range(n, upto)]
                        got = await c.produce(self.topic, {0: build_batch(recs)})
                        assert got[0].error_code == 0, got
                        self.sent += len(recs)
                        n = upto
                        if self.group is not None:
                            end = got[0].base_offset + len(recs)
                            errs = await c.commit_offsets(self.group, {(self.topic, 0): (end, None)})
                            assert not any(errs.values()), errs
                    await asyncio.sleep(1 / self.ticks)
        except BaseException as e:
            self.error = e

    def __enter__(self) -> RateProducer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        if self.error is not None:
            raise self.error


def check_no_tracebacks(b: BrokerProcess) -> None:
    """A broker that logged a traceback has a bug even when the client coped."""
    try:
        text = b.log_path.read_text(errors="replace")
    except OSError:
        return
    if "Traceback" in text:
        start = text.index("Traceback")
        pytest.fail(
            f"the broker on {b.bootstrap} logged a traceback:\n{text[max(0, start - 2000) : start + 4000]}"
        )


def wait_for(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
