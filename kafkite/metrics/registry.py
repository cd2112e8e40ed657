"""A small metrics registry rendered in the Prometheus text exposition format (version 0.0.4).

Counters, gauges and histograms, each a family of series told apart by label values. Families are created
once; ``labels(...)`` returns (and remembers) the child for one set of label values. Observations may come
from other threads (fsyncs run in executor threads): updates take a lock per family.

Gauges that describe broker state (partition sizes, group lag) are not kept here between scrapes: a
collector registered with ``Registry.add_collector`` yields them at scrape time.
"""

from __future__ import annotations

import bisect
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds: from 100 microseconds to 30 seconds (request latencies, fsyncs).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

LabelValues = tuple[str, ...]


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(v: float) -> str:
    if isinstance(v, int) or (v.is_integer() and abs(v) < 1e15):
        return str(int(v))
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class Family(ABC):
    """A named metric with label names; one series per set of label values."""

    kind = "untyped"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, values: tuple[object, ...], kw: dict[str, object]) -> LabelValues:
        if not kw and len(values) == len(self.labelnames):
            return tuple(map(str, values))
        if kw:
            if values:
                raise ValueError("pass label values by position or by name, not both")
            try:
                values = tuple(kw.pop(n) for n in self.labelnames)
            except KeyError as e:
                raise ValueError(f"{self.name}: missing label {e}") from None
            if kw:
                raise ValueError(f"{self.name}: unknown labels {sorted(kw)}")
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
        return tuple(map(str, values))

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]

    @abstractmethod
    def render(self) -> list[str]: ...


class Counter(Family):
    """A value that only goes up (name it ``..._total``)."""

    kind = "counter"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help, labelnames)
        self._values: dict[LabelValues, float] = {}

    def inc(self, amount: float = 1.0, *labels: object, **kw: object) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        key = self._key(labels, kw)
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount

    def get(self, *labels: object, **kw: object) -> float:
        return self._values.get(self._key(labels, kw), 0)

    def items(self) -> list[tuple[LabelValues, float]]:
        with self._lock:
            return list(self._values.items())

    def render(self) -> list[str]:
        out = self.header()
        for key, v in sorted(self.items()):
            out.append(f"{self.name}{_labels(self.labelnames, key)} {format_value(v)}")
        return out


class Gauge(Counter):
    """A value that goes up and down."""

    kind = "gauge"

    def inc(self, amount: float = 1.0, *labels: object, **kw: object) -> None:
        key = self._key(labels, kw)
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount

    def dec(self, amount: float = 1.0, *labels: object, **kw: object) -> None:
        self.inc(-amount, *labels, **kw)

    def set(self, value: float, *labels: object, **kw: object) -> None:
        key = self._key(labels, kw)
        with self._lock:
            self._values[key] = value


@dataclass
class _HistogramSeries:
    counts: list[int]
    total: float = 0.0
    count: int = 0


class Histogram(Family):
    """Observations counted in cumulative ``le`` buckets, with their sum and count."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        super().__init__(name, help, labelnames)
        if "le" in self.labelnames:
            raise ValueError("'le' is reserved for histogram buckets")
        self.buckets = tuple(sorted(float(b) for b in buckets if not math.isinf(b)))
        self._series: dict[LabelValues, _HistogramSeries] = {}

    def observe(self, value: float, *labels: object, **kw: object) -> None:
        key = self._key(labels, kw)
        i = bisect.bisect_left(self.buckets, value)
        with self._lock:
            s = self._series.get(key)
            if s is None:
                s = self._series[key] = _HistogramSeries([0] * (len(self.buckets) + 1))
            s.counts[i] += 1
            s.total += value
            s.count += 1

    def snapshot(self, *labels: object, **kw: object) -> tuple[list[tuple[float, int]], float, int]:
        """(cumulative (le, count) pairs ending with +Inf, sum, count) of one series."""
        key = self._key(labels, kw)
        with self._lock:
            s = self._series.get(key)
            if s is None:
                return [(b, 0) for b in (*self.buckets, math.inf)], 0.0, 0
            counts, total, count = list(s.counts), s.total, s.count
        cum, acc = [], 0
        for b, c in zip((*self.buckets, math.inf), counts, strict=True):
            acc += c
            cum.append((b, acc))
        return cum, total, count

    def keys(self) -> list[LabelValues]:
        with self._lock:
            return list(self._series)

    def render(self) -> list[str]:
        out = self.header()
        for key in sorted(self.keys()):
            cum, total, count = self.snapshot(*key)
            for le, c in cum:
                le_label = 'le="+Inf"' if math.isinf(le) else f'le="{le!r}"'
                out.append(f"{self.name}_bucket{_labels(self.labelnames, key, le_label)} {c}")
            out.append(f"{self.name}_sum{_labels(self.labelnames, key)} {format_value(total)}")
            out.append(f"{self.name}_count{_labels(self.labelnames, key)} {count}")
        return out


@dataclass
class Sample:
    """One scrape-time series of a collected family."""

    labels: dict[str, str]
    value: float


@dataclass
class Collected:
    """A family produced at scrape time by a collector (gauges computed from the broker's state)."""

    name: str
    help: str
    kind: str = "gauge"
    samples: list[Sample] = field(default_factory=list)

    def add(self, value: float, **labels: object) -> None:
        self.samples.append(Sample({k: str(v) for k, v in labels.items()}, value))

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]
        for s in self.samples:
            out.append(
                f"{self.name}{_labels(list(s.labels), list(s.labels.values()))} {format_value(s.value)}"
            )
        return out


Collector = Callable[[], Iterable[Collected]]


class Registry:
    def __init__(self) -> None:
        self._families: dict[str, Family] = {}
        self._collectors: list[Collector] = []

    def _add(self, fam: Family) -> Family:
        if fam.name in self._families:
            raise ValueError(f"metric {fam.name} is already registered")
        self._families[fam.name] = fam
        return fam

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        c = Counter(name, help, labelnames)
        self._add(c)
        return c

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Gauge:
        g = Gauge(name, help, labelnames)
        self._add(g)
        return g

    def histogram(
        self, name: str, help: str, labelnames: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS
    ) -> Histogram:
        h = Histogram(name, help, labelnames, buckets)
        self._add(h)
        return h

    def add_collector(self, collector: Collector) -> None:
        self._collectors.append(collector)

    def families(self) -> Iterator[Family | Collected]:
        yield from self._families.values()
        for c in self._collectors:
            yield from c()

    def render(self) -> str:
        lines: list[str] = []
        for fam in self.families():
            lines.extend(fam.render())
        return "\n".join(lines) + "\n"


def parse_text(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse the text format back into {(name, sorted label pairs): value} (tests, the console)."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name, rest = line.split("{", 1)
            body, _, value = rest.rpartition("}")
            labels = _parse_labels(body)
        else:
            name, value = line.split(" ", 1)
            labels = []
        v = value.strip()
        out[(name, tuple(sorted(labels)))] = float(v.replace("+Inf", "inf").replace("-Inf", "-inf"))
    return out


def _parse_labels(body: str) -> list[tuple[str, str]]:
    labels: list[tuple[str, str]] = []
    i = 0
    while i < len(body):
        eq = body.index("=", i)
        name = body[i:eq].strip().lstrip(",").strip()
        assert body[eq + 1] == '"'
        j = eq + 2
        val = []
        while body[j] != '"':
            if body[j] == "\\":
                nxt = body[j + 1]
                val.append({"n": "\n", "\\": "\\", '"': '"'}.get(nxt, nxt))
                j += 2
            else:
                val.append(body[j])
                j += 1
        labels.append((name, "".join(val)))
        i = j + 1
        while i < len(body) and body[i] in ", ":
            i += 1
    return labels
