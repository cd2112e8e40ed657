"""RequestMemory: queued.max.request.bytes across connections, first come first served, never stuck."""

from __future__ import annotations

import asyncio
from typing import Any

from kafkite.server.server import RequestMemory


class FakeConnection:
    """What RequestMemory calls: memory_available() retries the frame the connection waits with."""

    def __init__(self, memory: RequestMemory, name: str, size: int) -> None:
        self.memory = memory
        self.name = name
        self.size = size
        self.admitted = False
        self.closing = False
        self.draining = False

    def ask(self) -> bool:
        self.admitted = self.memory.reserve(self, self.size, False)  # type: ignore[arg-type]
        return self.admitted

    def memory_available(self) -> None:
        if not self.admitted:
            self.ask()


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_admits_within_the_limit_then_in_order() -> None:
    async def scenario() -> None:
        mem = RequestMemory(100)
        a, b, c, d = (FakeConnection(mem, n, s) for n, s in (("a", 60), ("b", 30), ("c", 50), ("d", 5)))
        assert a.ask() and b.ask()
        assert not c.ask()  # 60 + 30 + 50 > 100
        assert not d.ask()  # would fit, but c asked first
        assert list(mem.waiting) == [c, d]
        mem.release(60)  # a done: c (50) fits, then d (5)
        await asyncio.sleep(0)
        assert c.admitted and d.admitted and mem.used == 85 and not mem.waiting
        for n in (30, 50, 5):
            mem.release(n)
        assert mem.used == 0

    _run(scenario())


def test_one_request_larger_than_the_limit_goes_alone() -> None:
    async def scenario() -> None:
        mem = RequestMemory(100)
        small = FakeConnection(mem, "small", 10)
        big = FakeConnection(mem, "big", 150)
        assert small.ask()
        assert not big.ask()
        mem.release(10)
        await asyncio.sleep(0)
        assert big.admitted and mem.used == 150

    _run(scenario())


def test_a_waiting_connection_that_goes_away_lets_the_next_in() -> None:
    async def scenario() -> None:
        mem = RequestMemory(100)
        a, b, c = (FakeConnection(mem, n, s) for n, s in (("a", 90), ("b", 50), ("c", 10)))
        assert a.ask() and not b.ask() and not c.ask()
        mem.forget(b)
        await asyncio.sleep(0)
        assert c.admitted and list(mem.waiting) == []

    _run(scenario())


def test_the_oldest_request_arriving_always_grows_the_others_wait() -> None:
    async def scenario() -> None:
        mem = RequestMemory(100)
        a, b = FakeConnection(mem, "a", 40), FakeConnection(mem, "b", 40)
        assert a.ask() and b.ask()  # both begin to arrive: 80 of 100
        assert not mem.reserve(b, 40, True)  # type: ignore[arg-type]
        assert mem.reserve(a, 40, True)  # type: ignore[arg-type]  # the oldest: over the limit, but goes on
        assert mem.used == 120 and list(mem.waiting) == [b]
        mem.done_receiving(a)  # type: ignore[arg-type]  # a has all its bytes: b is the oldest now
        assert mem.reserve(b, 40, True)  # type: ignore[arg-type]
        c = FakeConnection(mem, "c", 10)
        assert not c.ask()  # a new request waits until the others are handled
        mem.release(80)
        mem.release(80)
        await asyncio.sleep(0)
        assert c.admitted and mem.used == 10

    _run(scenario())


def test_unbounded_counts_but_never_waits() -> None:
    mem = RequestMemory(-1)
    conns = [FakeConnection(mem, str(i), 1 << 30) for i in range(5)]
    assert all(c.ask() for c in conns) and mem.used == 5 << 30
