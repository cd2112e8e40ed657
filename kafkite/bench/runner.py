"""Runs a benchmark scenario: topics, worker processes, live progress, aggregation, the ceiling run."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import multiprocessing
import os
import platform
import queue
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any, TextIO

from kafkite.bench.disk import (
    DEFAULT_PROBE_BYTES,
    SUSTAINED_PROBE_MAX_BYTES,
    DiskBandwidth,
    dirty_limit_bytes,
    sustained_retention_bytes,
    write_bandwidth,
)
from kafkite.bench.serve import ServedBroker, process_cpu_seconds, process_memory
from kafkite.bench.stats import Histogram, Timeline, merge_histograms
from kafkite.bench.workers import (
    Counters,
    Measured,
    Probed,
    SharedFloat,
    TopicPartition,
    WorkerResult,
    WorkerSpec,
    worker_main,
)
from kafkite.client import KafkaClient, KafkaClientError
from kafkite.protocol.api_keys import ApiKey
from kafkite.protocol.errors import ErrorCode

if TYPE_CHECKING:
    from multiprocessing.synchronize import Event

    from kafkite.bench.workers import Results

MODES = ("produce", "consume", "e2e")
CLIENTS = ("kafkite", "confluent")
COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")
DEFAULT_COUNT = 1_000_000
SUSTAINED_DURATION_S = 120.0
SUSTAINED_WARMUP_CAP_S = 300.0
FIRST_MINUTE_S = 60.0
WINDOW_S = 10.0  # the shortest stretch whose rate a sustained run reports (its slowest)


class BenchError(RuntimeError):
    pass


@dataclass
class BenchOptions:
    mode: str = "produce"
    bootstrap: str = "localhost:9092"
    topics: list[str] = field(default_factory=lambda: ["kafkite-bench"])
    partitions: int = 1
    size: int = 1024
    count: int | None = None
    duration: float | None = None
    rate: float = 0.0
    acks: int = -1
    compression: str = "none"
    producers: int = 1
    consumers: int = 1
    client: str = "kafkite"
    batch_bytes: int | None = None
    linger_ms: float | None = None
    max_inflight: int = 5
    interval: float = 0.5
    client_config: dict[str, str] = field(default_factory=dict)
    serve: bool = False
    ceiling: bool = False
    broker_overrides: list[str] = field(default_factory=list)
    data_dir: str | None = None
    broker_pid: int | None = None  # a broker process on this machine to report memory and CPU of
    idle_timeout: float = 30.0
    quiet: bool = False
    warmup: float = 1.0  # seconds each producer sends, uncounted, before every measured run
    repeat: int = 1  # runs against each broker; with --ceiling the order alternates from one to the next
    ack_latency: bool = True  # producers time every acknowledgement (confluent: a callback per message)
    # Sustained mode: a long produce run after a warm-up that fills the page cache, beside the disk's own
    # write bandwidth, with a second client timing Metadata and Fetch and consuming another topic.
    sustained: bool = False
    warmup_bytes: int | None = None  # sustained: bytes of warm-up (None: 1.5 x the kernel's dirty limit)
    disk_bytes: int = DEFAULT_PROBE_BYTES  # sustained: bytes written to measure the disk (0: do not)
    disk_seconds: float | None = None  # sustained: ... or for this long, if sooner (None: as long as the run)
    probe: bool = True  # sustained: run the second client
    probe_rate: float = 200.0  # messages/s of the probe's own producer (the topic its consumer follows)

    def validate(self) -> None:
        if self.mode not in MODES:
            raise BenchError(f"unknown mode {self.mode!r}: one of {', '.join(MODES)}")
        if self.client not in CLIENTS:
            raise BenchError(f"unknown client {self.client!r}: one of {', '.join(CLIENTS)}")
        if self.compression not in COMPRESSIONS:
            raise BenchError(f"unknown compression {self.compression!r}: one of {', '.join(COMPRESSIONS)}")
        if self.size < 8:
            raise BenchError("--size must be at least 8 bytes: each message starts with its send time")
        if self.acks not in (-1, 0, 1):
            raise BenchError("--acks must be all, -1, 0 or 1")
        if self.count is not None and self.count <= 0:
            raise BenchError("--count must be positive")
        if self.duration is not None and self.duration <= 0:
            raise BenchError("--duration must be positive")
        if self.rate < 0:
            raise BenchError("--rate must be 0 (unthrottled) or positive")
        if self.warmup < 0:
            raise BenchError("--warmup must be 0 (none) or positive")
        if self.repeat < 1:
            raise BenchError("--repeat must be at least 1")
        if self.producers < 1 or self.consumers < 1 or self.partitions < 1:
            raise BenchError("--producers, --consumers and --partitions must be at least 1")
        if not self.topics:
            raise BenchError("no topic given")
        if self.client == "confluent":
            try:
                import confluent_kafka  # noqa: F401
            except ImportError:
                raise BenchError(
                    "--client confluent needs confluent-kafka: pip install confluent-kafka"
                ) from None
        if self.sustained:
            if self.mode != "produce":
                raise BenchError("--sustained is a produce benchmark")
            if self.count is None and self.duration is None:
                self.duration = SUSTAINED_DURATION_S
            if self.warmup_bytes is None:
                limit = dirty_limit_bytes()
                self.warmup_bytes = int(1.5 * limit) if limit else 4 << 30
            self.warmup = max(self.warmup, SUSTAINED_WARMUP_CAP_S)
            if self.disk_seconds is None and self.duration is not None:
                # A probe of a few GiB measures the page cache: the disk is probed for as long as the run.
                self.disk_seconds = self.duration
                if self.disk_bytes == DEFAULT_PROBE_BYTES:
                    # The same bound before and after the run, with the broker's data (up to a third of
                    # the free space, below) on the disk in between: a sixth of the free space.
                    st = os.statvfs(self.data_dir or tempfile.gettempdir())
                    self.disk_bytes = min(SUSTAINED_PROBE_MAX_BYTES, st.f_bavail * st.f_frsize // 6)
            if self.serve and not any(o.startswith("log.retention.bytes=") for o in self.broker_overrides):
                # Minutes at the disk's speed fill a file system: the served broker deletes its oldest
                # segments, checked every few seconds (segments of 256 MiB, so little is kept beyond it).
                where = self.data_dir or tempfile.gettempdir()
                keep = sustained_retention_bytes(where, self.partitions * len(self.topics))
                self.broker_overrides = [
                    f"log.retention.bytes={keep}",
                    f"log.segment.bytes={256 << 20}",
                    "log.retention.check.interval.ms=5000",
                    *self.broker_overrides,
                ]
        if self.count is None and self.duration is None:
            self.count = DEFAULT_COUNT

    def effective_linger_ms(self) -> float | None:
        """confluent linger.ms: as given; else 1 ms at a target rate (e2e), librdkafka-like 5 ms otherwise."""
        if self.linger_ms is not None or self.client != "confluent":
            return self.linger_ms
        return 1.0 if self.mode == "e2e" else 5.0


# ------------------------------------------------------------------------------------------ results


@dataclass
class RoleResult:
    """The aggregate of one role (producers or consumers) in one phase."""

    role: str
    workers: int
    messages: int = 0
    bytes: int = 0
    errors: int = 0
    first_error: str | None = None
    elapsed: float = 0.0
    hist: Histogram = field(default_factory=Histogram)
    timeline: Timeline | None = None
    note: str | None = None
    cpu_s: float = 0.0  # CPU time of the worker processes while they were measured
    start: float = 0.0  # the common start (wall clock seconds): after the warm-up

    @property
    def cpu_pct(self) -> float:
        """CPU the clients used, in % of one core (above 100: more than one core's worth)."""
        return 100 * self.cpu_s / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.elapsed / 1e6 if self.elapsed > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "workers": self.workers,
            "messages": self.messages,
            "bytes": self.bytes,
            "errors": self.errors,
            "first_error": self.first_error,
            "start": self.start,
            "elapsed_s": round(self.elapsed, 4),
            "msgs_per_s": round(self.msgs_per_s, 1),
            "mb_per_s": round(self.mb_per_s, 3),
            "client_cpu_s": round(self.cpu_s, 3),
            "client_cpu_pct_of_one_core": round(self.cpu_pct, 1),
            "latency_ms": self.hist.summary_ms(),
            "latency_histogram_ms": [[lo, hi, n] for lo, hi, n in self.hist.buckets_ms()],
        }
        if self.timeline is not None:
            rates = self.timeline.rates(self.elapsed)
            out["timeline"] = {
                "interval_s": self.timeline.interval,
                "msgs": self.timeline.msgs,
                "bytes": self.timeline.bytes,
                "msgs_per_s": [round(m, 1) for _, m, _ in rates],
                "mb_per_s": [round(b, 3) for _, _, b in rates],
            }
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class RunResult:
    """One broker's results: kafkite, or the blackhole ceiling."""

    label: str
    bootstrap: str
    blackhole: bool = False
    served: bool = False
    preload: RoleResult | None = None
    produce: RoleResult | None = None
    consume: RoleResult | None = None
    broker: dict[str, Any] = field(default_factory=dict)
    repeat: int = 0  # which repetition (from 0)
    load_before: list[float] | None = None  # os.getloadavg() as the run started and as it ended
    load_after: list[float] | None = None
    probe: Probed | None = None  # sustained mode: the second client's figures

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "label": self.label,
            "bootstrap": self.bootstrap,
            "blackhole": self.blackhole,
            "served": self.served,
            "repeat": self.repeat,
            "load_average_before": self.load_before,
            "load_average_after": self.load_after,
        }
        for name in ("preload", "produce", "consume"):
            r = getattr(self, name)
            if r is not None:
                out[name] = r.to_json()
        if self.produce is not None and self.produce.timeline is not None:
            out["sustained"] = sustained_summary(self.produce)
        if self.probe is not None:
            out["probe"] = self.probe
        if self.broker:
            out["broker"] = self.broker
        return out

    def produce_side(self) -> RoleResult | None:
        """The producing phase to compare against the ceiling (the preload when consuming)."""
        return self.produce or self.preload

    def phase(self, name: str) -> RoleResult | None:
        """``produce``, ``consume`` (also the e2e consumers) or ``preload``."""
        r: RoleResult | None = getattr(self, name)
        return r


def sustained_summary(r: RoleResult) -> dict[str, Any]:
    """How a long run's rate held: MB/s over its first minute, after it, and over its slowest 10 s."""
    assert r.timeline is not None
    rates = r.timeline.rates(r.elapsed)
    interval = r.timeline.interval
    first = [b for end, _, b in rates if end <= FIRST_MINUTE_S]
    rest = [b for end, _, b in rates if end > FIRST_MINUTE_S]
    per_window = max(1, round(WINDOW_S / interval))
    windows = [
        statistics.fmean(b for _, _, b in rates[i : i + per_window])
        for i in range(0, max(len(rates) - per_window + 1, 1), per_window)
        if rates[i : i + per_window]
    ]
    out: dict[str, Any] = {
        "mb_per_s": round(r.mb_per_s, 1),
        "first_minute_mb_per_s": round(statistics.fmean(first), 1) if first else None,
        "after_first_minute_mb_per_s": round(statistics.fmean(rest), 1) if rest else None,
        "slowest_10s_mb_per_s": round(min(windows), 1) if windows else None,
    }
    if first and rest:
        out["after_vs_first_minute"] = round(statistics.fmean(rest) / max(statistics.fmean(first), 1e-9), 3)
    return out


def spread(values: list[float]) -> dict[str, Any]:
    """Median, minimum and maximum of ``values`` (and the values), for repeated runs."""
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "runs": [round(v, 4) for v in values],
    }


@dataclass
class BenchReport:
    options: BenchOptions
    runs: list[RunResult] = field(default_factory=list)
    started: str = field(
        default_factory=lambda: datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    )
    load_at_start: float | None = field(default_factory=lambda: _load_average())
    load_start: list[float] | None = field(default_factory=lambda: _load_averages())
    load_end: list[float] | None = None
    disk: list[DiskBandwidth] = field(default_factory=list)  # sustained: measured before and after the runs

    @property
    def disk_mb_per_s(self) -> float | None:
        """The disk's sequential write bandwidth: the lower measurement (the machine may be shared)."""
        return min(d.mb_per_s for d in self.disk) if self.disk else None

    @property
    def vs_disk(self) -> dict[str, Any] | None:
        """kafkite's sustained produce MB/s over the disk's own bandwidth, per repetition."""
        disk = self.disk_mb_per_s
        runs = [r for r in self.runs if not r.blackhole and r.produce is not None]
        if not disk or not runs:
            return None
        overall = [r.produce.mb_per_s / disk for r in runs if r.produce is not None]
        after = [
            s["after_first_minute_mb_per_s"] / disk
            for s in (sustained_summary(r.produce) for r in runs if r.produce is not None)
            if s["after_first_minute_mb_per_s"] is not None
        ]
        out: dict[str, Any] = {"disk_mb_per_s": round(disk, 1), "produce": spread(overall)}
        if after:
            out["after_first_minute"] = spread(after)
        return out

    def pairs(self) -> list[tuple[RoleResult, RoleResult]]:
        """(kafkite, ceiling) producing phases of each repetition that ran against both."""
        out = []
        for i in sorted({r.repeat for r in self.runs}):
            measured = next((r for r in self.runs if r.repeat == i and not r.blackhole), None)
            ceiling = next((r for r in self.runs if r.repeat == i and r.blackhole), None)
            if measured is None or ceiling is None:
                continue
            a, b = measured.produce_side(), ceiling.produce_side()
            if a is not None and b is not None and b.msgs_per_s > 0:
                out.append((a, b))
        return out

    @property
    def vs_ceiling(self) -> dict[str, Any] | None:
        """kafkite's produce rate over the ceiling's: the median ratio of the runs made side by side."""
        pairs = self.pairs()
        if not pairs:
            return None
        ratios = [a.msgs_per_s / b.msgs_per_s for a, b in pairs]
        mb = [a.mb_per_s / b.mb_per_s if b.mb_per_s > 0 else 0.0 for a, b in pairs]
        out: dict[str, Any] = {
            "produce_msgs_per_s": round(statistics.median(ratios), 4),
            "produce_mb_per_s": round(statistics.median(mb), 4),
        }
        if len(pairs) > 1:
            out["per_repeat"] = [round(r, 4) for r in ratios]
            out["min"] = round(min(ratios), 4)
            out["max"] = round(max(ratios), 4)
        return out

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per broker and phase over the repetitions: msgs/s, MB/s, latency percentiles (median, spread)."""
        out: dict[str, dict[str, Any]] = {}
        for label in dict.fromkeys(r.label for r in self.runs):
            runs = [r for r in self.runs if r.label == label]
            entry: dict[str, Any] = {}
            for name in ("preload", "produce", "consume"):
                phases = [p for p in (r.phase(name) for r in runs) if p is not None]
                if not phases:
                    continue
                key = "e2e" if name == "consume" and any(r.produce for r in runs) else name
                e: dict[str, Any] = {
                    "msgs_per_s": spread([p.msgs_per_s for p in phases]),
                    "mb_per_s": spread([p.mb_per_s for p in phases]),
                    "client_cpu_pct_of_one_core": spread([p.cpu_pct for p in phases]),
                }
                for q in ("p50", "p99", "p99.9", "max"):
                    values = [float(p.hist.summary_ms()[q]) for p in phases if p.hist.count]
                    if values:
                        e[f"{q}_ms"] = spread(values)
                entry[key] = e
            out[label] = entry
        return out

    def to_json(self) -> dict[str, Any]:
        o = self.options
        return {
            "mode": o.mode,
            "date": self.started,
            "host": host_info(),
            "settings": {
                "client": o.client,
                "topics": o.topics,
                "partitions": o.partitions,
                "size": o.size,
                "count": o.count,
                "duration_s": o.duration,
                "rate": o.rate,
                "acks": "all" if o.acks == -1 else o.acks,
                "compression": o.compression,
                "producers": o.producers,
                "consumers": o.consumers,
                "batch_bytes": o.batch_bytes,
                "linger_ms": o.effective_linger_ms(),
                "ack_latency": o.ack_latency,
                "broker_overrides": o.broker_overrides,
            },
            "load_average_at_start": self.load_at_start,
            "load_average": {"start": self.load_start, "end": self.load_end},
            "repeat": o.repeat,
            "warmup_s": o.warmup,
            "warmup_bytes": o.warmup_bytes,
            "disk_bytes": o.disk_bytes,
            "disk_seconds": o.disk_seconds,
            "sustained": o.sustained,
            "disk": [d.to_json() for d in self.disk],
            "runs": [r.to_json() for r in self.runs],
            "summary": self.summary(),
            "vs_ceiling": self.vs_ceiling,
            "vs_disk": self.vs_disk,
        }


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _load_averages() -> list[float] | None:
    """os.getloadavg(): the 1, 5 and 15 minute load averages."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def host_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "hostname": platform.node(),
        "load_average": load,
        "system": f"{platform.system()} {platform.release()}",
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": mem,
        "python": platform.python_version(),
    }


# ------------------------------------------------------------------------------------------ progress


class Progress:
    """A single status line on stderr, rewritten in place; silent when disabled or not a terminal."""

    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and self.stream.isatty()
        self._width = 0

    def show(self, text: str) -> None:
        if not self.enabled:
            return
        cols = shutil.get_terminal_size((100, 20)).columns - 1
        text = text[:cols]
        pad = max(self._width - len(text), 0)
        self._width = len(text)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()

    def done(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


def progress_text(
    label: str,
    parts: list[tuple[str, int, int]],
    elapsed: float,
    fraction: float | None,
) -> str:
    """``label [#####.......]  42%  3.2s | produced 12,345 msgs 12.3 MB/s | consumed ...``."""
    text = label
    if fraction is not None:
        fraction = min(max(fraction, 0.0), 1.0)
        filled = int(fraction * 12)
        text += f" [{'#' * filled}{'.' * (12 - filled)}] {fraction * 100:3.0f}%"
    text += f" {elapsed:5.1f}s"
    for name, msgs, nbytes in parts:
        rate = nbytes / elapsed / 1e6 if elapsed > 0 else 0.0
        text += f" | {name} {msgs:,} msgs {rate:,.1f} MB/s"
    return text


# ------------------------------------------------------------------------------------------ admin


async def _prepare_topics(bootstrap: str, topics: list[str], partitions: int) -> dict[str, int]:
    """Partition count of each topic, creating the missing ones with ``partitions`` partitions."""

    async with KafkaClient(bootstrap, client_id="kafkite-bench-admin") as client:
        await client.refresh_metadata(topics)
        missing = [t for t in topics if t not in client.topics]
        if missing:
            conn = await client.any_connection()
            body = {
                "topics": [
                    {"name": t, "num_partitions": partitions, "replication_factor": -1} for t in missing
                ],
                "timeout_ms": 60000,
                "validate_only": False,
            }
            resp = await conn.request(ApiKey.CREATE_TOPICS, body)
            for t in resp["topics"]:
                if t["error_code"] not in (0, ErrorCode.TOPIC_ALREADY_EXISTS):
                    raise KafkaClientError(
                        t["error_code"], f"CreateTopics {t['name']}: {t.get('error_message')}"
                    )
        deadline = time.monotonic() + 30
        while True:
            await client.refresh_metadata(topics)
            counts = {t: client.topics.get(t, 0) for t in topics}
            ready = all(
                counts[t] > 0 and all(client.leaders.get((t, p), -1) >= 0 for p in range(counts[t]))
                for t in topics
            )
            if ready:
                return counts
            if time.monotonic() > deadline:
                raise BenchError(f"topics without leaders after 30s: {counts}")
            await asyncio.sleep(0.2)


async def _offsets(
    bootstrap: str, targets: list[TopicPartition], timestamp: int
) -> dict[TopicPartition, int]:

    out: dict[TopicPartition, int] = {}
    async with KafkaClient(bootstrap, client_id="kafkite-bench-admin") as client:
        await client.refresh_metadata(sorted({t for t, _ in targets}))
        by_topic: dict[str, list[int]] = {}
        for t, p in targets:
            by_topic.setdefault(t, []).append(p)
        for t, parts in by_topic.items():
            for p, off in (await client.list_offsets(t, parts, timestamp)).items():
                out[(t, p)] = off
    return out


def prepare_topics(bootstrap: str, topics: list[str], partitions: int) -> dict[str, int]:
    return asyncio.run(_prepare_topics(bootstrap, topics, partitions))


def offsets(bootstrap: str, targets: list[TopicPartition], latest: bool) -> dict[TopicPartition, int]:
    return asyncio.run(_offsets(bootstrap, targets, -1 if latest else -2))


# ------------------------------------------------------------------------------------------ phases


def _split(total: int, n: int) -> list[int]:
    base, extra = divmod(total, n)
    return [base + (1 if i < extra else 0) for i in range(n)]


@dataclass
class _Phase:
    label: str
    producers: list[WorkerSpec]
    consumers: list[WorkerSpec]
    consume_target: int | None = None  # stop consumers once they have this many messages in total
    e2e: bool = False
    probe: WorkerSpec | None = None  # sustained mode: the second client


class Runner:
    """Runs the scenario of ``options`` against its broker (and the ceiling), and returns the report."""

    def __init__(self, options: BenchOptions, progress: Progress | None = None) -> None:
        options.validate()
        self.o = options
        self.progress = progress if progress is not None else Progress(not options.quiet)
        # Workers fork from a server process that has imported them once: quick to start, and safe with the
        # threads the parent may have (librdkafka, asyncio executors), unlike a plain fork.
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(["kafkite.bench.workers"])
        self.log: Callable[[str], None] = lambda msg: None if options.quiet else print(msg, file=sys.stderr)
        self._probe_result: Probed | None = None

    # -- entry

    def run(self) -> BenchReport:
        """Every repetition against the broker, and against the ceiling with --ceiling.

        Both brokers stay up for the whole run; the ceiling and the broker take turns going first
        (kafkite, ceiling, ceiling, kafkite, ...): neither always runs on the cooler or the warmer machine.
        """
        o = self.o
        report = BenchReport(o)
        with contextlib.ExitStack() as stack:
            disk_dir: str | None = o.data_dir
            if o.serve:
                b = stack.enter_context(ServedBroker(o.broker_overrides, data_root=o.data_dir))
                self.log(
                    f"started a kafkite broker on {b.bootstrap} (pid {b.pid}, data on disk in a temp dir)"
                )
                main: tuple[str, int | None] = (b.bootstrap, b.pid)
                disk_dir = str(b.log_path.parent)
            else:
                main = (o.bootstrap, o.broker_pid)
            if o.sustained and o.disk_bytes > 0:
                report.disk.append(self._measure_disk(disk_dir))
            ceiling: tuple[str, int | None] | None = None
            if o.ceiling:
                overrides = [*o.broker_overrides, "blackhole=true"]
                c = stack.enter_context(ServedBroker(overrides, data_root=o.data_dir, label="blackhole"))
                self.log(f"started a BLACKHOLE broker (ceiling: stores nothing) on {c.bootstrap}")
                ceiling = (c.bootstrap, c.pid)
            for i in range(o.repeat):
                order = [False, True] if i % 2 == 0 else [True, False]
                for blackhole in order:
                    if blackhole and ceiling is None:
                        continue
                    bootstrap, pid = ceiling if blackhole and ceiling is not None else main
                    label = "ceiling (blackhole)" if blackhole else "kafkite"
                    report.runs.append(self.run_on(bootstrap, label, pid=pid, blackhole=blackhole, repeat=i))
            if o.sustained and o.disk_bytes > 0:
                report.disk.append(self._measure_disk(disk_dir))
        report.load_end = _load_averages()
        return report

    def _measure_disk(self, directory: str | None) -> DiskBandwidth:
        where = directory or tempfile.gettempdir()
        o = self.o
        within = f" (or for {o.disk_seconds:g}s)" if o.disk_seconds else ""
        self.log(f"measuring the disk: {o.disk_bytes / 2**30:.1f} GiB{within} written to {where} and synced")
        d = write_bandwidth(where, o.disk_bytes, o.disk_seconds)
        self.log(
            f"disk: {d.mb_per_s:,.0f} MB/s sequential write ({d.bytes / 2**20:,.0f} MiB in {d.seconds:.1f}s)"
        )
        return d

    def run_on(
        self,
        bootstrap: str,
        label: str,
        *,
        pid: int | None = None,
        blackhole: bool = False,
        repeat: int = 0,
    ) -> RunResult:
        o = self.o
        res = RunResult(
            label,
            bootstrap,
            blackhole=blackhole,
            served=self.o.serve or blackhole,
            repeat=repeat,
            load_before=_load_averages(),
        )
        if o.repeat > 1:
            label = f"{label} #{repeat + 1}"
        counts = prepare_topics(bootstrap, o.topics, o.partitions)
        targets = [(t, p) for t in o.topics for p in range(counts[t])]
        probe = None
        if o.sustained and o.probe and not blackhole:
            side = f"{o.topics[0]}-probe"
            prepare_topics(bootstrap, [side], 1)
            probe = self._spec("probe", o.producers + o.consumers, bootstrap, [(side, 0), targets[0]])
            probe.rate = o.probe_rate
            probe.interval = 0.05
        cpu0 = process_cpu_seconds(pid) if pid else None
        t0 = time.time()
        if o.mode == "produce" or blackhole:
            phase = _Phase(label, self._producers(bootstrap, targets, o.count), [], probe=probe)
            out = self._run_phase(phase)
            res.produce = out["producer"]
            res.probe = self._probe_result
        elif o.mode == "consume":
            earliest = offsets(bootstrap, targets, latest=False)
            latest = offsets(bootstrap, targets, latest=True)
            available = sum(latest[tp] - earliest[tp] for tp in targets)
            if o.count is not None and available < o.count:
                missing = o.count - available
                self.log(f"{label}: preloading {missing:,} messages of {o.size} B to consume")
                producers = self._producers(bootstrap, targets, missing, preload=True)
                phase = _Phase(f"{label} preload", producers, [])
                res.preload = self._run_phase(phase)["producer"]
                latest = offsets(bootstrap, targets, latest=True)
                available = sum(latest[tp] - earliest[tp] for tp in targets)
            if available == 0:
                raise BenchError(
                    f"nothing to consume in {', '.join(o.topics)}: give --count to preload messages"
                )
            target = min(available, o.count) if o.count is not None else available
            cons = self._consumers(bootstrap, targets, earliest, latest, latency=False)
            res.consume = self._run_phase(_Phase(label, [], cons, consume_target=target))["consumer"]
        else:
            latest = offsets(bootstrap, targets, latest=True)
            cons = self._consumers(bootstrap, targets, latest, None, latency=True)
            out = self._run_phase(_Phase(label, self._producers(bootstrap, targets, o.count), cons, e2e=True))
            res.produce, res.consume = out["producer"], out["consumer"]
        if pid:
            res.broker = {"pid": pid, **{k: round(v, 1) for k, v in process_memory(pid).items()}}
            cpu1 = process_cpu_seconds(pid)
            if cpu0 is not None and cpu1 is not None:
                res.broker["cpu_s"] = round(cpu1 - cpu0, 2)
                res.broker["cpu_pct_of_one_core"] = round(
                    100 * (cpu1 - cpu0) / max(time.time() - t0, 1e-9), 1
                )
        res.load_after = _load_averages()
        return res

    # -- worker specs

    def _spec(self, role: str, index: int, bootstrap: str, targets: list[TopicPartition]) -> WorkerSpec:
        o = self.o
        return WorkerSpec(
            role=role,
            index=index,
            client=o.client,
            bootstrap=bootstrap,
            targets=targets,
            size=o.size,
            duration=o.duration,
            acks=o.acks,
            compression=o.compression,
            batch_bytes=o.batch_bytes,
            linger_ms=o.effective_linger_ms(),
            max_inflight=o.max_inflight,
            interval=o.interval,
            client_config=dict(o.client_config),
            seed=index,
        )

    def _producers(
        self, bootstrap: str, targets: list[TopicPartition], count: int | None, *, preload: bool = False
    ) -> list[WorkerSpec]:
        """Producers sharing ``count``; a preload (messages for consume mode) is not timed: no warm-up."""
        o = self.o
        n = o.producers if count is None else max(1, min(o.producers, count))
        shares = _split(count, n) if count is not None else [None] * n
        out = []
        for i in range(n):
            spec = self._spec(
                "producer", i, bootstrap, targets[i % len(targets) :] + targets[: i % len(targets)]
            )
            spec.count = shares[i]
            spec.rate = o.rate / n
            spec.warmup = 0.0 if preload else o.warmup
            spec.warmup_bytes = 0 if preload or not o.warmup_bytes else o.warmup_bytes // n
            spec.latency = o.ack_latency and not preload
            spec.stamp = o.mode == "e2e"
            out.append(spec)
        return out

    def _consumers(
        self,
        bootstrap: str,
        targets: list[TopicPartition],
        start: dict[TopicPartition, int],
        end: dict[TopicPartition, int] | None,
        *,
        latency: bool,
    ) -> list[WorkerSpec]:
        n = min(self.o.consumers, len(targets))
        if n < self.o.consumers:
            self.log(f"only {n} consumer(s): there are {len(targets)} partition(s) to share")
        out = []
        for i in range(n):
            mine = targets[i::n]
            spec = self._spec("consumer", self.o.producers + i, bootstrap, mine)
            spec.start_offsets = {tp: start[tp] for tp in mine}
            spec.end_offsets = {tp: end[tp] for tp in mine} if end is not None else None
            spec.latency = latency
            if end is None:
                spec.duration = None  # e2e: consume until the runner has seen every acknowledged message
            out.append(spec)
        return out

    # -- one phase: processes, progress, aggregation

    def _run_phase(self, phase: _Phase) -> dict[str, RoleResult]:
        ctx = self.ctx
        specs = phase.producers + phase.consumers + ([phase.probe] if phase.probe is not None else [])
        self._probe_result = None
        # Counter slots are addressed by spec.index: producers 0..P-1, consumers from self.o.producers.
        slots = max(s.index for s in specs) + 1
        counters: Counters = ctx.Array("q", 2 * slots, lock=False)
        ready = ctx.Barrier(len(specs) + 1)
        go = ctx.Event()
        start_value: SharedFloat = ctx.Value("d", 0.0, lock=False)
        stop = ctx.Event()
        results: Results = ctx.Queue()
        procs = [
            ctx.Process(
                target=worker_main,
                args=(s, counters, ready, go, start_value, stop, results),
                name=f"kafkite-bench-{s.role}-{s.index}",
                daemon=True,
            )
            for s in specs
        ]
        for p in procs:
            p.start()
        collected: dict[tuple[str, int], WorkerResult] = {}
        errors: list[str] = []
        started = False

        def take(timeout: float) -> None:
            try:
                role, index, r = results.get(timeout=timeout)
            except queue.Empty:
                return
            collected[(role, index)] = r
            if "error" in r:
                errors.append(f"{role} {index}: {r['error']}\n{r['traceback']}")
                stop.set()

        try:
            try:
                ready.wait(180)
            except threading.BrokenBarrierError:
                deadline = time.monotonic() + 10
                while len(collected) < len(specs) and time.monotonic() < deadline:
                    take(0.2)
                raise BenchError(
                    "a worker failed to start:\n" + ("\n".join(errors) or "(no detail)")
                ) from None
            start = time.time()
            start_value.value = start
            go.set()
            started = True
            roles = [
                f"{len(g)} {name} process(es)"
                for name, g in (("producer", phase.producers), ("consumer", phase.consumers))
                if g
            ]
            self.log(f"{phase.label}: running {' and '.join(roles)}")
            self._monitor(phase, specs, counters, collected, take, stop, start, procs)
        except KeyboardInterrupt:
            stop.set()
            ready.abort()
            go.set()
            self.progress.done()
            self.log("interrupted: stopping the workers and reporting what they measured")
            deadline = time.monotonic() + 30
            while len(collected) < len(specs) and time.monotonic() < deadline:
                take(0.2)
        finally:
            self.progress.done()
            for p in procs:
                p.join(5)
                if p.is_alive():
                    p.terminate()
                    p.join(5)
        if not started:
            raise BenchError("interrupted before the run started")
        if errors:
            raise BenchError("a worker failed:\n" + "\n".join(errors))
        missing = [s for s in specs if (s.role, s.index) not in collected]
        if missing:
            raise BenchError(f"{len(missing)} worker(s) exited without a result")
        out: dict[str, RoleResult] = {}
        for role, group in (("producer", phase.producers), ("consumer", phase.consumers)):
            if group:
                parts = [collected[(s.role, s.index)] for s in group]
                measured = [p for p in parts if "messages" in p]
                if len(measured) < len(parts):
                    raise BenchError(
                        f"{len(parts) - len(measured)} {role} process(es) stopped before the run"
                    )
                out[role] = self._aggregate(role, measured)
        if phase.probe is not None:
            probed = collected[(phase.probe.role, phase.probe.index)]
            if "probe" in probed:
                self._probe_result = probed
        return out

    def _monitor(
        self,
        phase: _Phase,
        specs: list[WorkerSpec],
        counters: Counters,
        collected: dict[tuple[str, int], WorkerResult],
        take: Callable[[float], None],
        stop: Event,
        start: float,
        procs: Sequence[BaseProcess],
    ) -> None:
        o = self.o
        produce_target: int | None = sum(s.count for s in phase.producers if s.count is not None) or None
        last_consumed = -1
        last_progress = time.monotonic()
        note_idle = False
        dead_since: float | None = None
        while len(collected) < len(specs):
            take(0.2)
            produced = sum(counters[2 * s.index] for s in phase.producers)
            produced_b = sum(counters[2 * s.index + 1] for s in phase.producers)
            consumed = sum(counters[2 * s.index] for s in phase.consumers)
            consumed_b = sum(counters[2 * s.index + 1] for s in phase.consumers)
            elapsed = time.time() - start
            parts = []
            if phase.producers:
                parts.append(("produced", produced, produced_b))
            if phase.consumers:
                parts.append(("consumed", consumed, consumed_b))
            fraction = None
            goal = phase.consume_target if phase.consumers and not phase.e2e else produce_target
            if goal:
                fraction = (consumed if phase.consumers and not phase.e2e else produced) / goal
            elif o.duration:
                fraction = elapsed / o.duration
            self.progress.show(progress_text(phase.label, parts, elapsed, fraction))
            producers_done = all((s.role, s.index) in collected for s in phase.producers)
            if phase.consume_target is not None and consumed >= phase.consume_target:
                stop.set()
            if phase.probe is not None and not phase.consumers and producers_done:
                stop.set()  # the probe runs as long as the producers do
            if phase.e2e and producers_done:
                acked = sum(_messages(collected[(s.role, s.index)]) for s in phase.producers)
                if consumed >= acked:
                    stop.set()
            if phase.consumers and (producers_done or not phase.e2e):
                if consumed != last_consumed:
                    last_consumed = consumed
                    last_progress = time.monotonic()
                elif time.monotonic() - last_progress > o.idle_timeout and not stop.is_set():
                    note_idle = True
                    stop.set()
            if any(p.exitcode is not None for p in procs) and len(collected) < len(specs):
                # A worker that died without a result (killed, crashed in C) must not hang the run.
                alive = sum(p.exitcode is None for p in procs)
                if alive + len(collected) < len(specs):
                    dead_since = dead_since or time.monotonic()
                    if time.monotonic() - dead_since > 5:
                        stop.set()
                        break
        if note_idle:
            self.log(f"consumers received nothing for {o.idle_timeout:.0f}s: stopped them")

    def _aggregate(self, role: str, parts: list[Measured]) -> RoleResult:
        r = RoleResult(role, len(parts))
        start = min(p["start"] for p in parts)
        end = max(p["end"] for p in parts)
        r.messages = sum(p["messages"] for p in parts)
        r.bytes = sum(p["bytes"] for p in parts)
        r.errors = sum(p["errors"] for p in parts)
        r.first_error = next((p["first_error"] for p in parts if p["first_error"]), None)
        r.elapsed = max(end - start, 0.0)
        r.start = start
        r.cpu_s = sum(p.get("cpu_s", 0.0) for p in parts)
        r.hist = merge_histograms(Histogram.from_dict(p["hist"]) for p in parts)
        tl = Timeline.from_dict(parts[0]["timeline"])
        for p in parts[1:]:
            tl.merge(Timeline.from_dict(p["timeline"]))
        r.timeline = tl
        return r


def _messages(r: WorkerResult) -> int:
    """The messages a worker counted (none when it failed or was stopped before the run)."""
    if "messages" in r:
        return r["messages"]
    return 0
