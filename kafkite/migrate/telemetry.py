"""What a following mirror tells about itself: Prometheus metrics, a JSON status, a live display, lag history.

``--metrics-listener HOST:PORT`` serves ``/metrics`` (the Prometheus text format of ``kafkite.metrics``'s
registry), ``/status`` (JSON: every partition's positions and lag, throughput, groups, transactions) and
``POST /cutover`` (run a cutover rehearsal in the mirror process: ``kafkite migrate cutover --mirror URL``).
The live display on stderr redraws the busiest partitions on a terminal and prints one line every few seconds
otherwise. The lag history (two samples a second) feeds the cutover report's plot.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TextIO

from kafkite.metrics.registry import CONTENT_TYPE, Collected, Registry
from kafkite.migrate.cutover import CutoverError, run_cutover
from kafkite.migrate.progress import human_bytes, human_count

if TYPE_CHECKING:
    from aiohttp import web

    from kafkite.migrate.mirror import Mirror

log = logging.getLogger("kafkite.migrate")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
HISTORY_INTERVAL = 0.5
HISTORY_SAMPLES = 172_800  # a day
RATE_WINDOW = 10.0


class Telemetry:
    def __init__(self, mirror: Mirror) -> None:
        self.m = mirror
        reg = self.registry = Registry()
        self.records = reg.counter("kafkite_mirror_records_total", "Records copied to the target", ["topic"])
        self.bytes = reg.counter(
            "kafkite_mirror_bytes_total", "Bytes of record batches written to the target", ["topic"]
        )
        self.latency = reg.histogram(
            "kafkite_mirror_record_latency_seconds",
            "From the timestamp of the newest record of a write to the target's acknowledgement of it",
            buckets=LATENCY_BUCKETS,
        )
        self.txns = reg.counter(
            "kafkite_mirror_transactions_total", "Target transactions (exactly once), by result", ["result"]
        )
        self.errors = reg.counter("kafkite_mirror_errors_total", "Failures retried, by kind", ["kind"])
        self.throttle = reg.counter(
            "kafkite_mirror_throttle_seconds_total", "Time the target asked the mirror to hold back"
        )
        self.group_commits = reg.counter(
            "kafkite_mirror_group_offsets_committed_total",
            "Partition offsets of source groups committed on the target",
            ["group"],
        )
        reg.add_collector(self._collect)
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.history: collections.deque[tuple[float, int, dict[str, int]]] = collections.deque(
            maxlen=HISTORY_SAMPLES
        )
        self._rates: collections.deque[tuple[float, int, int]] = collections.deque(maxlen=600)
        self.max_lag = 0
        self._runner: web.AppRunner | None = None
        self.url: str | None = None
        self._cutover_lock = asyncio.Lock()

    # -------------------------------------------------------------- events

    def copied(self, topic: str, n: int, nbytes: int, max_ts: int) -> None:
        self.records.inc(n, topic)
        self.bytes.inc(nbytes, topic)
        if max_ts > 0:
            self.latency.observe(max(0.0, time.time() - max_ts / 1000))

    def transaction(self, result: str) -> None:
        self.txns.inc(1, result)

    def error(self, kind: str) -> None:
        self.errors.inc(1, kind)

    def throttled(self, seconds: float) -> None:
        self.throttle.inc(seconds)

    # -------------------------------------------------------------- derived

    def partitions(self) -> Iterator[dict[str, Any]]:
        m = self.m
        now = time.monotonic()
        for key, f in m.feeds.items():
            st = m.checkpoint.partitions.get(key)
            if st is None:
                continue
            last = m._last_record.get(key)
            yield {
                "topic": f.topic,
                "partition": f.partition,
                "source_end": f.source_end,
                "source_position": st.next_source,
                "target_position": st.next_target if m.rest is None else None,
                "lag": m.lag(key),
                "copied": st.copied,
                "skipped": st.skipped,
                "seconds_since_last_record": round(now - (last[0] if last else self.started), 3),
                "last_record_timestamp_ms": last[1] if last else None,
                "paused": f.paused_reason,
            }

    def rates(self) -> tuple[float, float]:
        """(records/s, bytes/s) over the last few seconds."""
        now = time.monotonic()
        total_r, total_b = self.m._copied_now, self.m._bytes_now
        self._rates.append((now, total_r, total_b))
        while len(self._rates) > 2 and now - self._rates[0][0] > RATE_WINDOW:
            self._rates.popleft()
        t0, r0, b0 = self._rates[0]
        dt = now - t0
        if dt <= 0:
            return 0.0, 0.0
        return (total_r - r0) / dt, (total_b - b0) / dt

    def total_lag(self) -> int:
        return sum(self.m.lag(k) for k in self.m.feeds)

    def _collect(self) -> Iterator[Collected]:
        parts = list(self.partitions())
        lag = Collected("kafkite_mirror_lag_records", "Source offsets not yet on the target, per partition")
        end = Collected("kafkite_mirror_source_end_offset", "Last stable offset of the source partition")
        pos = Collected(
            "kafkite_mirror_source_position", "Next source offset to copy (all before it are copied)"
        )
        tgt = Collected("kafkite_mirror_target_offset", "Target offset after the last copied record")
        since = Collected(
            "kafkite_mirror_seconds_since_last_record", "Seconds since the mirror last copied a record"
        )
        last_ts = Collected(
            "kafkite_mirror_last_record_timestamp_seconds", "Timestamp of the newest record copied"
        )
        for p in parts:
            labels = {"topic": p["topic"], "partition": p["partition"]}
            lag.add(p["lag"], **labels)
            end.add(p["source_end"], **labels)
            pos.add(p["source_position"], **labels)
            if p["target_position"] is not None:
                tgt.add(p["target_position"], **labels)
            since.add(p["seconds_since_last_record"], **labels)
            if p["last_record_timestamp_ms"]:
                last_ts.add(p["last_record_timestamp_ms"] / 1000, **labels)
        total = Collected(
            "kafkite_mirror_lag_records_overall", "Source offsets not yet on the target, all partitions"
        )
        total.add(sum(p["lag"] for p in parts))
        rec_rate, byte_rate = self.rates()
        rr = Collected(
            "kafkite_mirror_records_per_second", f"Records copied per second (last {RATE_WINDOW:.0f} s)"
        )
        rr.add(round(rec_rate, 1))
        br = Collected(
            "kafkite_mirror_bytes_per_second", f"Bytes written per second (last {RATE_WINDOW:.0f} s)"
        )
        br.add(round(byte_rate, 1))
        up = Collected("kafkite_mirror_up", "1 while the mirror is copying")
        up.add(1 if self.m.ready.is_set() and not self.m.stop.is_set() else 0)
        yield from (lag, end, pos, tgt, since, last_ts, total, rr, br, up)

    def status(self) -> dict[str, Any]:
        m = self.m
        rec_rate, byte_rate = self.rates()
        parts = list(self.partitions())
        return {
            "mirror": m.name,
            "source": m.source_name,
            "target": m.target_name,
            "ready": m.ready.is_set(),
            "stopping": m.stop.is_set(),
            "delivery": m.result.delivery,
            "uptime_seconds": round(time.monotonic() - self.started, 1),
            "topics": sorted(m.topics),
            "lag": sum(p["lag"] for p in parts),
            "records_copied": m._copied_now,
            "bytes_copied": m._bytes_now,
            "records_per_second": round(rec_rate, 1),
            "bytes_per_second": round(byte_rate, 1),
            "transactions": dict(m.transactions),
            "partitions": parts,
            "groups": m.groupsync.status(),
            "warnings": list(m.result.warnings[-20:]),
            "errors": list(m.result.errors),
        }

    def summary(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        cum, _, count = self.latency.snapshot()
        return {
            "seconds": round(elapsed, 1),
            "records_per_second": round(self.m._copied_now / elapsed, 1),
            "bytes_per_second": round(self.m._bytes_now / elapsed, 1),
            "max_lag": self.max_lag,
            "transactions": dict(self.m.transactions),
            "latency_p99_seconds": percentile(cum, count, 0.99),
        }

    async def history_loop(self) -> None:
        while True:
            per_topic: dict[str, int] = {}
            for key in self.m.feeds:
                per_topic[key.rsplit("/", 1)[0]] = per_topic.get(key.rsplit("/", 1)[0], 0) + self.m.lag(key)
            total = sum(per_topic.values())
            self.max_lag = max(self.max_lag, total)
            self.history.append((time.time(), total, per_topic))
            await asyncio.sleep(HISTORY_INTERVAL)

    # -------------------------------------------------------------- HTTP

    async def start(self) -> None:
        spec = getattr(self.m.opts, "metrics_listener", None)
        if not spec:
            return
        # Loaded only when the metrics listener is asked for: aiohttp stays out of a plain mirror.
        from aiohttp import web

        from kafkite.server.metrics_http import serve

        host, port = parse_listener(spec)

        async def metrics(request: web.Request) -> web.Response:
            return web.Response(body=self.registry.render().encode(), headers={"Content-Type": CONTENT_TYPE})

        async def status(request: web.Request) -> web.Response:
            return web.json_response(self.status())

        async def cutover(request: web.Request) -> web.Response:

            try:
                body = await request.json()
            except ValueError:
                return web.json_response({"error": "the body must be a JSON object"}, status=400)
            if not isinstance(body, dict) or not isinstance(body.get("group"), str):
                return web.json_response({"error": "group is required"}, status=400)
            if self._cutover_lock.locked():
                return web.json_response({"error": "a cutover is already running"}, status=409)
            async with self._cutover_lock:
                try:
                    result = await run_cutover(
                        self.m,
                        body["group"],
                        timeout=float(body.get("timeout", 120)),
                        wait_stop=float(body.get("wait_stop", 30)),
                        topics=body.get("topics"),
                        verify=bool(body.get("verify", True)),
                    )
                except CutoverError as e:
                    return web.json_response({"error": str(e), "partial": e.partial}, status=409)
            return web.json_response(result)

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/status", status)
        app.router.add_post("/cutover", cutover)
        self._runner, bound = await serve(app, host, port)
        self.url = f"http://{host}:{bound}"
        with contextlib.suppress(OSError, ValueError):
            print(f"mirror metrics at {self.url}/metrics, status at {self.url}/status", file=sys.stderr)
            sys.stderr.flush()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def parse_listener(spec: str) -> tuple[str, int]:
    text = spec.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.rstrip("/")
    host, _, port = text.rpartition(":")
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise ValueError(f"--metrics-listener: expected HOST:PORT, got {spec!r}") from None


def percentile(cum: list[tuple[float, int]], count: int, q: float) -> float | None:
    """The upper bound of the histogram bucket holding quantile ``q`` (None without observations)."""
    if count == 0:
        return None
    want = q * count
    for le, c in cum:
        if c >= want:
            return le if le != float("inf") else None
    return None


# ---------------------------------------------------------------------------------------------- display


def render_display(m: Mirror, rows: int = 8) -> list[str]:
    tel = m.telemetry
    parts = list(tel.partitions())
    rec_rate, byte_rate = tel.rates()
    lag = sum(p["lag"] for p in parts)
    recent = min((p["seconds_since_last_record"] for p in parts), default=0.0)
    worst = max(parts, key=lambda p: p["lag"], default=None)
    head = (
        f"following {len(m.topics)} topic(s), {len(parts)} partition(s): lag {human_count(lag)} record(s)"
        + (f" (most {worst['topic']}/{worst['partition']}: {worst['lag']})" if worst and worst["lag"] else "")
        + f" | {human_count(rec_rate)} rec/s {human_bytes(byte_rate)}/s | last record {recent:.1f}s ago"
        + f" | copied {human_count(m._copied_now)}"
    )
    if m.exactly_once:
        head += f" | txn {m.transactions['committed']} committed, {m.transactions['aborted']} aborted"
    groups = m.groupsync.status()
    if groups:
        head += f" | {len(groups)} group(s) synced"
    lines = [head]
    for p in sorted(parts, key=lambda p: -p["lag"])[:rows]:
        lines.append(
            f"  {p['topic']}/{p['partition']:<4} lag {p['lag']:>8}  source {p['source_position']:>10}/"
            f"{p['source_end']:<10} last record {p['seconds_since_last_record']:.1f}s ago"
            + (f"  ({p['paused']})" if p["paused"] else "")
        )
    return lines


async def follow_display(m: Mirror, stream: TextIO | None = None) -> None:
    """Redraw the display in place on a terminal; a summary line every few seconds otherwise."""
    out = stream if stream is not None else sys.stderr
    if not m.opts.progress:
        return
    tty = bool(getattr(out, "isatty", lambda: False)())
    interval = m.opts.display_interval or (1.0 if tty else 5.0)
    drawn = 0
    while True:
        await asyncio.sleep(interval)
        lines = render_display(m) if tty else render_display(m, rows=0)
        with contextlib.suppress(OSError, ValueError):
            if tty:
                if drawn:
                    out.write(f"\x1b[{drawn}F")
                out.write("".join(f"\x1b[2K{line}\n" for line in lines))
                drawn = len(lines)
            else:
                out.write(lines[0] + "\n")
            out.flush()


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)
