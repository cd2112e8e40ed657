"""Latency histograms, exact percentiles and throughput timelines, all mergeable across worker processes."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypedDict

PERCENTILES: tuple[float, ...] = (50.0, 95.0, 99.0, 99.9)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (sorted or not): the smallest value with at least q% at or below.

    ``q`` is in [0, 100]; q=0 gives the minimum and q=100 the maximum. Raises ValueError on an empty sequence.
    """
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is outside [0, 100]")
    ordered = values if _is_sorted(values) else sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered) - 1e-9))
    return ordered[rank - 1]


def _is_sorted(values: Sequence[float]) -> bool:
    return all(values[i] <= values[i + 1] for i in range(len(values) - 1))


# Log-linear buckets over integer microseconds: exact below 128 us, then 64 buckets per power of two, so a
# bucket is never wider than 1/64 (1.6%) of its values.
_SUB_BITS = 6
_SUB = 1 << _SUB_BITS


def bucket_of(value: int) -> int:
    if value < 2 * _SUB:
        return max(value, 0)
    shift = value.bit_length() - _SUB_BITS - 1
    return shift * _SUB + (value >> shift)


def bucket_bounds(index: int) -> tuple[int, int]:
    """Lowest and highest value (inclusive) that fall in bucket ``index``."""
    shift = max(index // _SUB - 1, 0)
    mantissa = index - shift * _SUB
    return mantissa << shift, ((mantissa + 1) << shift) - 1


class HistogramDict(TypedDict):
    """A Histogram as it travels from a worker process to the runner."""

    counts: list[tuple[int, int]]
    count: int
    total: int
    min: int
    max: int


class TimelineDict(TypedDict):
    start: float
    interval: float
    msgs: list[int]
    bytes: list[int]


@dataclass
class Histogram:
    """Counts of latencies in microseconds, with the exact count, sum, minimum and maximum."""

    counts: dict[int, int] = field(default_factory=dict)
    count: int = 0
    total: int = 0
    min: int = 0
    max: int = 0

    def record(self, value_us: int, n: int = 1) -> None:
        if n <= 0:
            return
        if value_us < 0:
            value_us = 0  # clocks of two processes can disagree by a few microseconds
        b = bucket_of(value_us)
        counts = self.counts
        counts[b] = counts.get(b, 0) + n
        if self.count == 0 or value_us < self.min:
            self.min = value_us
        if value_us > self.max:
            self.max = value_us
        self.count += n
        self.total += value_us * n

    def merge(self, other: Histogram) -> None:
        if other.count == 0:
            return
        for b, n in other.counts.items():
            self.counts[b] = self.counts.get(b, 0) + n
        self.min = other.min if self.count == 0 else min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.count += other.count
        self.total += other.total

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile in microseconds, within a bucket's width (1.6%), clamped to [min, max]."""
        if self.count == 0:
            raise ValueError("percentile of an empty histogram")
        if not 0.0 <= q <= 100.0:
            raise ValueError(f"percentile {q} is outside [0, 100]")
        rank = max(1, math.ceil(q / 100.0 * self.count - 1e-9))
        seen = 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= rank:
                lo, hi = bucket_bounds(b)
                return float(min(max((lo + hi) / 2, self.min), self.max))
        return float(self.max)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def summary_ms(self) -> dict[str, float | int]:
        """{"count", "mean", "p50", "p95", "p99", "p99.9", "max"} in milliseconds (empty when no samples)."""
        if self.count == 0:
            return {"count": 0}
        out: dict[str, float | int] = {"count": self.count, "mean": round(self.mean / 1000, 3)}
        for q in PERCENTILES:
            out[f"p{q:g}"] = round(self.percentile(q) / 1000, 3)
        out["max"] = round(self.max / 1000, 3)
        return out

    def buckets_ms(self) -> list[tuple[float, float, int]]:
        """Non-empty buckets as (low ms, high ms, count), lowest first."""
        out = []
        for b in sorted(self.counts):
            lo, hi = bucket_bounds(b)
            out.append((lo / 1000, (hi + 1) / 1000, self.counts[b]))
        return out

    def to_dict(self) -> HistogramDict:
        return {
            "counts": sorted(self.counts.items()),
            "count": self.count,
            "total": self.total,
            "min": self.min,
            "max": self.max,
        }

    @classmethod
    def from_dict(cls, d: HistogramDict) -> Histogram:
        return cls({int(b): int(n) for b, n in d["counts"]}, d["count"], d["total"], d["min"], d["max"])


@dataclass
class Timeline:
    """Messages and bytes per interval since a start time shared by every process (wall clock seconds)."""

    start: float
    interval: float = 0.5
    msgs: list[int] = field(default_factory=list)
    bytes: list[int] = field(default_factory=list)

    def add(self, now: float, n: int, nbytes: int) -> None:
        i = int((now - self.start) / self.interval)
        if i < 0:
            i = 0
        if i >= len(self.msgs):
            grow = i + 1 - len(self.msgs)
            self.msgs.extend([0] * grow)
            self.bytes.extend([0] * grow)
        self.msgs[i] += n
        self.bytes[i] += nbytes

    def merge(self, other: Timeline) -> None:
        for i, (m, b) in enumerate(zip(other.msgs, other.bytes, strict=True)):
            self.add(self.start + (i + 0.5) * self.interval, m, b)

    def rates(self, until: float | None = None) -> list[tuple[float, float, float]]:
        """(seconds since start at the interval's end, msgs/s, MB/s) per interval.

        ``until`` (seconds since start) is when counting ended: the last interval is then as long as it
        really was, rather than showing a drop because the run stopped part way through it.
        """
        out = []
        n = len(self.msgs)
        for i, (m, b) in enumerate(zip(self.msgs, self.bytes, strict=True)):
            length = self.interval
            end = (i + 1) * self.interval
            if i == n - 1 and until is not None and i * self.interval < until < end:
                length, end = until - i * self.interval, until
            if n > 1 and length < self.interval / 10:
                continue  # a sliver at the very end: its rate would mean nothing
            out.append((end, m / length, b / length / 1e6))
        return out

    def to_dict(self) -> TimelineDict:
        return {"start": self.start, "interval": self.interval, "msgs": self.msgs, "bytes": self.bytes}

    @classmethod
    def from_dict(cls, d: TimelineDict) -> Timeline:
        return cls(d["start"], d["interval"], list(d["msgs"]), list(d["bytes"]))


def merge_histograms(hists: Iterable[Histogram]) -> Histogram:
    out = Histogram()
    for h in hists:
        out.merge(h)
    return out
