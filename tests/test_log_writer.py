"""The file engine's writer threads: appends in call order off the event loop, visible only once written, a
loop that keeps running while the disk is slow, errors handed back to the caller, and the descriptor budget.

A slow disk is a real ``os.pwrite`` made to sleep for large writes (the files and the threads are real).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kafkite.log import FileStorage, LogClosed, PartitionLog
from kafkite.log.files import FileCache, FileHandle
from kafkite.log.writer import Completed, InlineWriter, ThreadWriter
from kafkite.protocol.records import build_batch, iter_headers

SLOW_WRITE_S = 0.5
BIG = 64 * 1024


def batch(n: int = 1, size: int = 100) -> bytearray:
    return bytearray(build_batch([(b"k", b"v" * size, [], 1000 + i) for i in range(n)]))


def offsets_in(data: bytes) -> list[tuple[int, int]]:
    return [(h.base_offset, h.last_offset) for _, h in iter_headers(data)]


@pytest.fixture
def slow_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Writes of BIG bytes or more take SLOW_WRITE_S; the event is set while one is under way."""
    real = os.pwrite
    writing = threading.Event()

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        if len(data) >= BIG:
            writing.set()
            time.sleep(SLOW_WRITE_S)
            writing.clear()
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    yield writing


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[FileStorage]:
    s = FileStorage(tmp_path / "data")
    s.load()
    yield s
    s.close()


def test_thread_writer_runs_jobs_in_order_and_hands_back_results_and_errors() -> None:
    w = ThreadWriter("test-writer")
    try:
        seen: list[int] = []

        async def main() -> None:
            pending = [w.submit(lambda i=i: seen.append(i) or i) for i in range(200)]
            assert await asyncio.gather(*pending) == list(range(200))

            def fail() -> None:
                raise OSError(28, "No space left on device")

            with pytest.raises(OSError, match="No space"):
                await w.submit(fail)
            assert await w.submit(lambda: "after") == "after", "a failed job does not stop the writer"

        asyncio.run(main())
        assert seen == list(range(200))
        assert w.run(lambda: w.run(lambda: "nested")) == "nested", "a job may wait for a job of its writer"
        assert w.backlog_jobs == 0
    finally:
        w.close()


def test_inline_writer_results_need_no_event_loop() -> None:
    done = InlineWriter().submit(lambda: 7)
    assert isinstance(done, Completed) and done.done() and done.result() == 7
    failed = InlineWriter().submit(lambda: 1 // 0)
    with pytest.raises(ZeroDivisionError):
        failed.result()


def test_event_loop_keeps_running_while_the_disk_is_slow(
    storage: FileStorage, slow_disk: threading.Event
) -> None:
    storage.create_topic("slow", 1)
    storage.create_topic("other", 1)
    storage.partition("other", 0).append_sync(batch(3), now_ms=1)
    slow = storage.partition("slow", 0)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        # each of these writes takes SLOW_WRITE_S
        pending = [slow.append(batch(400, size=200), now_ms=1) for _ in range(3)]
        assert not any(p.done() for p in pending)
        # While the writer waits on the disk: reads of another partition are served at once, and the
        # partition being written shows none of the queued bytes.
        gaps: list[float] = []
        last = loop.time()
        while not all(p.done() for p in pending):
            await asyncio.sleep(0.01)
            now = loop.time()
            gaps.append(now - last)
            last = now
            res = await storage.partition("other", 0).read(0, 1 << 20)
            assert offsets_in(res.to_bytes()) == [(0, 2)]
            if not pending[0].done():
                assert slow.log_end_offset == 0
                assert (await slow.read(0, 1 << 20)).size == 0, "a fetch never sees bytes not yet written"
        infos = [await p for p in pending]
        assert [i.first_offset for i in infos] == [0, 400, 800], "appends keep their call order"
        assert max(gaps) < SLOW_WRITE_S, f"the loop stalled for {max(gaps):.2f}s"
        assert len(gaps) >= 10

    asyncio.run(main())
    assert slow.log_end_offset == 1200


def test_append_failure_reaches_its_caller_and_stores_nothing(
    storage: FileStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.create_topic("t", 1)
    part = storage.partition("t", 0)
    part.append_sync(batch(2), now_ms=1)
    real = os.pwrite

    def full(fd: int, data: bytes, offset: int) -> int:
        if len(data) > 1000:
            raise OSError(28, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", full)

    async def main() -> None:
        refused = part.append(batch(50), now_ms=1)
        accepted = part.append(batch(1), now_ms=1)
        with pytest.raises(OSError, match="No space"):
            await refused
        assert (await accepted).first_offset == 2, "the refused append took no offsets"

    asyncio.run(main())
    assert offsets_in(part.read_sync(0, 1 << 20).to_bytes()) == [(0, 1), (2, 2)]


def test_closed_partition_refuses_appends_at_once(storage: FileStorage) -> None:
    storage.create_topic("t", 1)
    part = storage.partition("t", 0)
    storage.delete_topic("t")
    with pytest.raises(LogClosed):
        part.append(batch(), now_ms=1)


def test_internal_topics_have_a_writer_of_their_own(storage: FileStorage, slow_disk: threading.Event) -> None:
    """A group commit (a small append to __consumer_offsets) never waits behind a slow data write."""
    storage.create_topic("data", 1)
    storage.create_topic("__consumer_offsets", 1)
    data = storage.partition("data", 0)
    offsets = storage.partition("__consumer_offsets", 0)

    async def main() -> None:
        big = data.append(batch(400, size=200), now_ms=1)
        async with asyncio.timeout(10):
            while not slow_disk.is_set():
                await asyncio.sleep(0.005)
        started = time.monotonic()
        offsets.append_sync(batch(1), now_ms=1)
        assert time.monotonic() - started < SLOW_WRITE_S, "the internal append waited for the data write"
        assert not big.done()
        await big

    asyncio.run(main())


# -- the descriptor budget -------------------------------------------------------------------------------


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_many_partitions_within_a_small_descriptor_budget(tmp_path: Path) -> None:
    before = open_descriptors()
    s = FileStorage(tmp_path / "data", open_files=32)
    s.load()
    s.create_topic("wide", 300)
    for i in range(300):
        s.partition("wide", i).append_sync(batch(1, size=i), now_ms=1)
    assert len(s.files) <= 32
    assert open_descriptors() - before <= 32 + 8  # the budget, plus threads' and the directory's own
    for i in range(300):  # every file is opened again as it is needed, with its own bytes
        data = s.partition("wide", i).read_sync(0, 1 << 20).to_bytes()
        assert offsets_in(data) == [(0, 0)] and data.count(b"v") >= i
    s.close()
    assert open_descriptors() - before <= 2
    # Recovery at start-up stays within the budget too.
    t = FileStorage(tmp_path / "data", open_files=32)
    t.load()
    assert len(t.files) <= 32 and open_descriptors() - before <= 32 + 8
    assert t.partition("wide", 299).log_end_offset == 1
    t.close()


def test_a_clean_start_opens_only_the_logs_it_reads(tmp_path: Path) -> None:
    s = FileStorage(tmp_path / "data", open_files=32)
    s.load()
    s.create_topic("t", 40)
    for i in range(0, 40, 10):
        s.partition("t", i).append_sync(batch(1, size=i), now_ms=1)
    s.close()
    before = open_descriptors()
    t = FileStorage(tmp_path / "data", open_files=32)
    t.load()
    # Every partition is loaded, but only the logs with batches after their last index entry were opened (to
    # find their end): the 36 empty ones are not.
    assert t.files.opened == 4 and open_descriptors() - before <= 4 + 4
    assert [t.partition("t", i).log_end_offset for i in range(40)] == [int(i % 10 == 0) for i in range(40)]
    data = t.partition("t", 30).read_sync(0, 1 << 20).to_bytes()
    assert offsets_in(data) == [(0, 0)] and data.count(b"v") >= 30
    t.partition("t", 7).append_sync(batch(1), now_ms=2)  # an empty one's log is opened when first used
    assert t.partition("t", 7).log_end_offset == 1 and t.files.opened == 5
    assert offsets_in(t.partition("t", 7).read_sync(0, 1 << 20).to_bytes()) == [(0, 0)]
    t.close()


def test_a_held_range_outlives_its_cache_entry(tmp_path: Path) -> None:
    files = FileCache(16)
    a = PartitionLog(tmp_path / "a-0", files=files)
    a.append_sync(batch(1, size=10), now_ms=1)
    held = a.read_sync(0, 1 << 20)
    handle = held.chunks[0].file  # type: ignore[union-attr]
    assert isinstance(handle, FileHandle)
    others = [PartitionLog(tmp_path / f"b-{i}", files=files) for i in range(40)]  # evicts a's file
    for log in others:
        log.append_sync(batch(1, size=500), now_ms=1)
    assert files.cached(a.segments[0].store) is None  # type: ignore[arg-type]
    # The range still reads a's bytes: its descriptor stayed open, and no other file took its number.
    assert offsets_in(held.to_bytes()) == [(0, 0)] and b"v" * 10 in held.to_bytes()
    assert not handle.closed
    assert offsets_in(a.read_sync(0, 1 << 20).to_bytes()) == [(0, 0)]  # reopened on demand
    for log in [a, *others]:
        log.close()


def test_file_cache_refuses_a_budget_too_small() -> None:
    with pytest.raises(ValueError, match="at least"):
        FileCache(2)


def test_small_jobs_run_inline_while_the_writer_is_idle_and_keep_their_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = ThreadWriter("test-inline", inline_bytes=1000)
    try:
        seen: list[str] = []
        started = threading.Event()
        release = threading.Event()

        def big() -> str:
            started.set()
            release.wait(10)
            seen.append("big")
            return "big"

        async def main() -> None:
            small = w.submit(lambda: seen.append("a") or threading.current_thread().name, size=10)
            assert isinstance(small, Completed), "idle writer: a small job runs at once, here"
            assert small.result() == threading.current_thread().name
            large = w.submit(big, size=5000)  # beyond inline_bytes: on the thread
            assert not isinstance(large, Completed)
            for _ in range(1000):  # (the thread is woken once the loop turns)
                if started.is_set():
                    break
                await asyncio.sleep(0.01)
            assert started.is_set()
            queued = w.submit(lambda: seen.append("b") or "b", size=10)  # the writer is busy: queued behind
            assert not isinstance(queued, Completed)
            release.set()
            assert await asyncio.gather(large, queued) == ["big", "b"]
            assert seen == ["a", "big", "b"]
            assert w.jobs_inline == 1

            # A small job that took long (a disk that became slow) sends the next ones to the thread.
            monkeypatch.setattr("kafkite.log.writer.INLINE_SLOW_S", 0.0)
            assert isinstance(w.submit(lambda: time.sleep(0.001), size=10), Completed)
            after = w.submit(lambda: "thread", size=10)
            assert not isinstance(after, Completed) and await after == "thread"

        asyncio.run(main())
        # A blocking run while the writer is idle runs here too (its caller waits either way), nested too.
        here = threading.current_thread().name
        assert w.run(lambda: threading.current_thread().name) == here
        assert w.run(lambda: w.run(lambda: "nested")) == "nested"
        assert w.backlog_jobs == 0
    finally:
        w.close()
    off = ThreadWriter("test-not-inline", inline_bytes=0)
    try:

        async def never() -> None:
            p = off.submit(lambda: 1, size=1)
            assert not isinstance(p, Completed) and await p == 1

        asyncio.run(never())
    finally:
        off.close()
