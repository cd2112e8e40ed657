"""The one clock: wall time in milliseconds for record timestamps, retention, sessions and expiries.

Every component reads ``now_ms()`` (or takes it as a default); a test swaps the clock for all of them at
once with ``use(ManualClock(...))``. Intervals measured for back-pressure and timeouts of the event loop use
the loop's own monotonic time, not this clock.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that moves only when told to (tests)."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self.ms = start_ms

    def now_ms(self) -> int:
        return self.ms

    def advance(self, ms: int) -> None:
        self.ms += ms


_clock: Clock = SystemClock()


def now_ms() -> int:
    """Wall time in milliseconds, from the clock in use."""
    return _clock.now_ms()


@contextmanager
def use(clock: Clock) -> Iterator[Clock]:
    """Make ``clock`` the clock of every component for the ``with`` block."""
    global _clock
    previous, _clock = _clock, clock
    try:
        yield clock
    finally:
        _clock = previous
