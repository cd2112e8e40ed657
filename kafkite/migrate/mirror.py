"""Copy topics from one Kafka-compatible cluster to another, translate group offsets, verify, rehearse.

Every source partition is copied to the same partition of the target, in order, one produce in flight per
partition. Records keep their keys, values, headers and timestamps; they are re-batched with ``build_batch``
(producer ids, transaction flags and the source's offsets are not carried: the target assigns its own
offsets, after whatever it already held). Only committed data is copied (read_committed): aborted
transactions and transaction markers are left out.

**Offset map.** Each partition's state records, as runs ``[source offset, target offset, count]``, where every
copied record landed. A group's committed source offset C translates to the target offset of the first copied
record at or after C, so a consumer resumes at the same message.

**Checkpoint.** The state of every partition lives in a JSON file, replaced atomically, that only ever
describes records the target acknowledged. After a stop (SIGINT) or a crash, a new run reconciles each
partition with the target first: records the target holds beyond the checkpoint (acknowledged, but not yet
checkpointed when the process died) are matched to the next source records, so nothing is copied twice. This
assumes nothing else writes to the target partitions while a mirror is under way.

**Verification.** For every partition, the source range that was copied and the target range it landed in
are read back and compared: record counts and a SHA-256 over keys, values, headers and timestamps.

**Rehearsal.** With a replay rate (``observed``: each topic's write rate from a plan), produce is paced at
that rate and every throttle (``throttle_time_ms``) and rejection the target answers is reported: what an
application producing at that rate would meet on the target.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import struct
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kafkite.client import KafkaClient, KafkaClientError
from kafkite.migrate.progress import Progress, human_bytes, human_count
from kafkite.migrate.survey import select_topics
from kafkite.protocol import records
from kafkite.protocol.errors import ErrorCode

log = logging.getLogger("kafkite.migrate")

READ_COMMITTED = 1
DEFAULT_FETCH_BYTES = 4 * 1024 * 1024
DEFAULT_BATCH_BYTES = 512 * 1024
CHECKPOINT_INTERVAL = 0.5
CHECKPOINT_KIND = "kafkite-mirror-checkpoint"
RECORD_OVERHEAD = 24  # rough bytes of record framing beyond key, value and headers
# Source configs carried to topics the mirror creates on the target.
CARRIED_CONFIGS = ("cleanup.policy", "retention.ms", "max.message.bytes")
RETRIABLE = {
    int(ErrorCode.NOT_LEADER_OR_FOLLOWER),
    int(ErrorCode.LEADER_NOT_AVAILABLE),
    int(ErrorCode.REQUEST_TIMED_OUT),
    int(ErrorCode.NOT_ENOUGH_REPLICAS),
    int(ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND),
    int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
    int(ErrorCode.KAFKA_STORAGE_ERROR),
}
MAX_RETRIES = 20


class MirrorError(Exception):
    """The mirror cannot go on (a state it cannot reconcile, a refused record outside a rehearsal, ...)."""


def error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"ERROR_{code}"


# ---------------------------------------------------------------------------------------------- records


def committed_records(
    buf: bytes, from_offset: int, aborted: list[tuple[int, int]]
) -> tuple[list[records.Record], int, int]:
    """The committed data records of a read_committed Fetch answer at or after ``from_offset``.

    Returns (records, next offset to fetch, compression codec of the first data batch). Control batches are
    skipped, and so are the batches of the aborted transactions the broker listed with the answer.
    """
    out: list[records.Record] = []
    nxt = from_offset
    codec = -1
    pending = sorted(aborted, key=lambda a: a[1])
    aborting: set[int] = set()
    i = 0
    for pos, h in records.iter_headers(buf):
        while i < len(pending) and pending[i][1] <= h.last_offset:
            aborting.add(pending[i][0])
            i += 1
        nxt = max(nxt, h.last_offset + 1)
        if h.is_control:
            if h.producer_id in aborting:
                for r in records.iter_records(buf, pos, h):
                    marker = records.parse_control_record(r)
                    if marker is not None and not marker[0]:
                        aborting.discard(h.producer_id)
            continue
        if h.is_transactional and h.producer_id in aborting:
            continue
        if h.last_offset < from_offset:
            continue
        if codec < 0:
            codec = h.compression
        for r in records.iter_records(buf, pos, h):
            if r.offset >= from_offset:
                out.append(r)
    return out, nxt, max(codec, 0)


def record_size(r: records.Record) -> int:
    return (
        len(r.key or b"")
        + len(r.value or b"")
        + sum(len(k) + len(v or b"") for k, v in r.headers)
        + RECORD_OVERHEAD
    )


def chunk(recs: list[records.Record], max_bytes: int) -> Iterable[list[records.Record]]:
    """Consecutive runs of records of at most ``max_bytes`` each (a bigger record goes alone)."""
    cur: list[records.Record] = []
    size = 0
    for r in recs:
        s = record_size(r)
        if cur and size + s > max_bytes:
            yield cur
            cur, size = [], 0
        cur.append(r)
        size += s
    if cur:
        yield cur


_I32 = struct.Struct(">i")
_TS = struct.Struct(">qi")


def digest_record(h: Any, r: records.Record) -> None:
    """Feed one record (timestamp, key, value, headers; not its offset) to a hash, unambiguously."""
    parts = [_TS.pack(r.timestamp, -1 if r.key is None else len(r.key))]
    if r.key is not None:
        parts.append(r.key)
    parts.append(_I32.pack(-1 if r.value is None else len(r.value)))
    if r.value is not None:
        parts.append(r.value)
    parts.append(_I32.pack(len(r.headers)))
    for k, v in r.headers:
        kb = k.encode()
        parts.append(_I32.pack(len(kb)))
        parts.append(kb)
        parts.append(_I32.pack(-1 if v is None else len(v)))
        if v is not None:
            parts.append(v)
    h.update(b"".join(parts))


# ---------------------------------------------------------------------------------------------- state


@dataclass
class PartitionState:
    """Where the copy of one partition stands; only acknowledged records are ever described here."""

    topic: str
    partition: int
    start_source: int  # first source offset of the mirrored range
    next_source: int  # next source offset to copy
    first_target: int  # the target's end offset when the mirror began: our first record's offset
    next_target: int  # the target offset the next copied record gets
    copied: int = 0
    skipped: int = 0  # records the target refused (rehearsals only)
    runs: list[list[int]] = field(default_factory=list)  # [source offset, target offset, count]

    @property
    def key(self) -> str:
        return f"{self.topic}/{self.partition}"

    def record(self, src_offsets: list[int], base_target: int) -> None:
        """The target acknowledged records with these source offsets at ``base_target`` onwards."""
        tgt = base_target
        runs = self.runs
        for src in src_offsets:
            if runs:
                last = runs[-1]
                if last[0] + last[2] == src and last[1] + last[2] == tgt:
                    last[2] += 1
                    tgt += 1
                    continue
            runs.append([src, tgt, 1])
            tgt += 1
        self.copied += len(src_offsets)
        self.next_source = max(self.next_source, src_offsets[-1] + 1)
        self.next_target = tgt

    def translate(self, committed: int) -> int | None:
        """Where a group committed at source offset ``committed`` resumes on the target (None: not copied)."""
        if committed > self.next_source:
            return None
        if committed >= self.next_source:
            return self.next_target
        if committed <= self.start_source:
            return self.first_target
        lo, hi = 0, len(self.runs)
        while lo < hi:  # first run ending after ``committed``
            mid = (lo + hi) // 2
            src, _, n = self.runs[mid]
            if src + n <= committed:
                lo = mid + 1
            else:
                hi = mid
        if lo == len(self.runs):
            return self.next_target
        src, tgt, _ = self.runs[lo]
        return tgt + max(0, committed - src)


@dataclass
class Checkpoint:
    path: Path
    source: str
    target: str
    partitions: dict[str, PartitionState] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, source: str, target: str) -> Checkpoint:
        if not path.exists():
            return cls(path, source, target)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise MirrorError(f"cannot read the checkpoint {path}: {e}") from e
        if data.get("kind") != CHECKPOINT_KIND:
            raise MirrorError(f"{path} is not a mirror checkpoint")
        if data.get("source") != source or data.get("target") != target:
            raise MirrorError(
                f"{path} belongs to a mirror from {data.get('source')} to {data.get('target')}; "
                "pass another --checkpoint or delete it to start over"
            )
        cp = cls(path, source, target)
        for d in data.get("partitions", []):
            st = PartitionState(**d)
            cp.partitions[st.key] = st
        return cp

    def save(self) -> None:
        data = {
            "kind": CHECKPOINT_KIND,
            "version": 1,
            "source": self.source,
            "target": self.target,
            "saved_at_ms": int(time.time() * 1000),
            "partitions": [asdict(s) for s in self.partitions.values()],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(data, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        try:
            fd = os.open(self.path.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


def default_checkpoint_path(source: str, target: str) -> Path:
    tag = hashlib.sha256(f"{source}\n{target}".encode()).hexdigest()[:12]
    return Path(f"mirror-checkpoint-{tag}.json")


# ---------------------------------------------------------------------------------------------- pacing


class Pacer:
    """Hold producers to ``rate`` bytes per second (a token bucket with one second of burst), until the
    monotonic time ``until`` (None: for ever); past it, nobody waits."""

    def __init__(self, rate: float, until: float | None = None) -> None:
        self.rate = rate
        self.until = until
        self._t = time.monotonic()
        self._debt = 0.0
        self._lock = asyncio.Lock()

    async def take(self, n: int) -> None:
        if self.rate <= 0:
            return
        async with self._lock:
            now = time.monotonic()
            self._debt = max(0.0, self._debt - (now - self._t) * self.rate)
            self._t = now
            self._debt += n
            wait = (self._debt - self.rate) / self.rate  # one second of burst
            if self.until is not None:
                wait = min(wait, self.until - now)
        if wait > 0:
            await asyncio.sleep(wait)


@dataclass
class TopicReport:
    """What the target answered while one topic was produced (throttles, rejections)."""

    topic: str
    replay_rate: float = 0.0
    bytes: int = 0
    records: int = 0
    started: float = 0.0
    finished: float = 0.0
    requests: int = 0
    throttled_requests: int = 0
    throttle_ms_total: int = 0
    throttle_ms_max: int = 0
    rejections: dict[str, int] = field(default_factory=dict)
    rejection_examples: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        elapsed = max(self.finished - self.started, 1e-6) if self.started else 0.0
        return {
            "topic": self.topic,
            "replay_bytes_per_sec": round(self.replay_rate, 1),
            "achieved_bytes_per_sec": round(self.bytes / elapsed, 1) if elapsed else 0.0,
            "bytes": self.bytes,
            "records": self.records,
            "requests": self.requests,
            "throttled_requests": self.throttled_requests,
            "throttle_ms_total": self.throttle_ms_total,
            "throttle_ms_max": self.throttle_ms_max,
            "rejections": dict(self.rejections),
            "rejection_examples": self.rejection_examples[:5],
        }


# ---------------------------------------------------------------------------------------------- mirror


@dataclass
class MirrorOptions:
    topics: list[str] | None = None
    checkpoint: Path | None = None
    fetch_bytes: int = DEFAULT_FETCH_BYTES
    batch_bytes: int = DEFAULT_BATCH_BYTES
    create_topics: bool = True
    translate_groups: bool = True
    verify: bool = True
    replay_rates: dict[str, float] | None = None  # topic -> bytes/s; None: as fast as possible
    replay_seconds: float | None = 60.0  # pace for this long, then copy the rest at full speed
    skip_rejected: bool = False  # rehearsals: report and skip what the target refuses
    plan: dict[str, Any] | None = None
    progress: bool = True


@dataclass
class MirrorResult:
    completed: bool = False
    interrupted: bool = False
    copied: int = 0
    topics: list[str] = field(default_factory=list)
    created_topics: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)
    verification: list[dict[str, Any]] = field(default_factory=list)
    replay: list[dict[str, Any]] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return bool(self.verification) and all(v["equal"] for v in self.verification)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["verified"] = self.verified
        return out


class Mirror:
    def __init__(
        self,
        source: KafkaClient,
        target: KafkaClient,
        source_name: str,
        target_name: str,
        options: MirrorOptions,
        stop: asyncio.Event | None = None,
    ) -> None:
        self.source = source
        self.target = target
        self.opts = options
        self.stop = stop or asyncio.Event()
        path = options.checkpoint or default_checkpoint_path(source_name, target_name)
        self.checkpoint = Checkpoint.load(Path(path), source_name, target_name)
        self.result = MirrorResult()
        self._dirty = False
        self._reports: dict[str, TopicReport] = {}
        self._pacers: dict[str, Pacer] = {}
        self._progress: Progress | None = None
        self._copied_now = 0
        self._started = time.monotonic()

    # -------------------------------------------------------------- setup

    async def _topics(self) -> dict[str, int]:
        meta = await self.source.refresh_metadata()
        names = [t["name"] for t in meta["topics"] if t["error_code"] == 0]
        chosen = select_topics(names, self.opts.topics, self.source.internal_topics)
        if self.opts.topics:
            missing = [t for t in self.opts.topics if not any(c == t for c in chosen) and "*" not in t]
            for t in missing:
                self.result.errors.append(f"topic {t} does not exist on the source")
        return {t: self.source.topics[t] for t in chosen}

    def _planned(self, topic: str) -> dict[str, Any] | None:
        if not self.opts.plan:
            return None
        for s in self.opts.plan.get("streams", []):
            if s.get("source_topic") == topic:
                return dict(s)
        return None

    async def _ensure_target_topics(self, topics: dict[str, int]) -> None:
        await self.target.refresh_metadata(list(topics))
        missing = [t for t in topics if t not in self.target.topics]
        if missing and not self.opts.create_topics:
            raise MirrorError(f"topics missing on the target: {', '.join(missing)} (drop --no-create-topics)")
        if missing:
            configs = await self.source.describe_topic_configs(missing)
            for t in missing:
                planned = self._planned(t)
                parts = max(topics[t], int(planned["partitions"])) if planned else topics[t]
                cfg = {k: v for k, v in configs.get(t, {}).items() if k in CARRIED_CONFIGS and v is not None}
                if planned:  # created as ``migrate apply`` would: planned partitions and retention only
                    cfg = {"retention.ms": str(int(planned["retention_hours"]) * 3_600_000)}
                res = await self.target.create_topics([(t, parts, cfg)])
                code, msg = res.get(t, (0, None))
                if code and cfg:
                    self.result.warnings.append(
                        f"target refused {t} with {cfg}: {error_name(code)} {msg or ''}; "
                        "created with its defaults"
                    )
                    res = await self.target.create_topics([(t, parts, {})])
                    code, msg = res.get(t, (0, None))
                if code and code != ErrorCode.TOPIC_ALREADY_EXISTS:
                    raise MirrorError(f"cannot create {t} on the target: {error_name(code)} {msg or ''}")
                self.result.created_topics.append(t)
            await asyncio.sleep(0)
            await self.target.refresh_metadata(list(topics))
        for t, n in topics.items():
            have = self.target.topics.get(t, 0)
            if have < n:
                raise MirrorError(
                    f"{t} has {n} partitions on the source but {have} on the target: the mirror keeps every "
                    "record in the same partition, so the target needs at least as many"
                )

    async def _init_states(self, topics: dict[str, int]) -> None:
        for t, n in topics.items():
            parts = list(range(n))
            new = [p for p in parts if f"{t}/{p}" not in self.checkpoint.partitions]
            tgt_ends = await self.target.list_offsets(t, parts, -1)
            if new:
                starts = await self.source.list_offsets(t, new, -2)
                for p in new:
                    st = PartitionState(t, p, starts[p], starts[p], tgt_ends[p], tgt_ends[p])
                    self.checkpoint.partitions[st.key] = st
                    self._dirty = True
            for p in parts:
                st = self.checkpoint.partitions[f"{t}/{p}"]
                await self._reconcile(st, tgt_ends[p])

    async def _reconcile(self, st: PartitionState, target_end: int) -> None:
        """Account records the target acknowledged after the last checkpoint was written."""
        if target_end < st.next_target:
            raise MirrorError(
                f"{st.key}: the target ends at offset {target_end} but the checkpoint says {st.next_target} "
                "was acknowledged: the target lost data or the topic was recreated; delete the checkpoint "
                "to start over"
            )
        extra = target_end - st.next_target
        if extra == 0:
            return
        log.info("%s: %d record(s) acknowledged after the last checkpoint; accounting them", st.key, extra)
        offset = st.next_source
        while extra > 0:
            got = await self.source.fetch(
                st.topic,
                st.partition,
                offset,
                max_bytes=self.opts.fetch_bytes,
                isolation_level=READ_COMMITTED,
            )
            if got.error_code:
                raise MirrorError(
                    f"{st.key}: cannot read the source to reconcile: {error_name(got.error_code)}"
                )
            recs, nxt, _ = committed_records(got.records, offset, got.aborted)
            if nxt <= offset and not recs:
                raise MirrorError(
                    f"{st.key}: the target holds {extra} more record(s) than the source has left to copy: "
                    "something else wrote to it"
                )
            take = recs[:extra]
            if take:
                st.record([r.offset for r in take], st.next_target)
                extra -= len(take)
            if extra > 0:
                st.next_source = max(st.next_source, nxt)
            offset = st.next_source
        self._dirty = True

    # -------------------------------------------------------------- copy

    async def _checkpointer(self) -> None:
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL)
            self._flush()

    def _flush(self) -> None:
        if self._dirty:
            self._dirty = False
            self.checkpoint.save()

    def _report(self, topic: str) -> TopicReport:
        rep = self._reports.get(topic)
        if rep is None:
            rates = self.opts.replay_rates or {}
            rate = rates.get(topic, rates.get("*", 0.0))
            rep = self._reports[topic] = TopicReport(topic, replay_rate=rate, started=time.monotonic())
            if rate > 0:
                seconds = self.opts.replay_seconds
                self._pacers[topic] = Pacer(rate, None if seconds is None else self._started + seconds)
        return rep

    async def _produce(
        self, st: PartitionState, recs: list[records.Record], codec: int, rep: TopicReport
    ) -> None:
        """Write ``recs`` to the target partition and account them once acknowledged."""
        batch = records.build_batch(
            [(r.key, r.value, r.headers, r.timestamp) for r in recs], compression=codec
        )
        pacer = self._pacers.get(st.topic)
        if pacer is not None:
            await pacer.take(len(batch))
        for attempt in range(MAX_RETRIES):
            try:
                resp = (await self.target.produce(st.topic, {st.partition: batch}))[st.partition]
            except (ConnectionError, KafkaClientError) as e:
                if attempt + 1 == MAX_RETRIES:
                    raise MirrorError(f"{st.key}: produce failed: {e}") from e
                await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
                await self._reconnect_target(st)
                continue
            rep.requests += 1
            if resp.throttle_time_ms > 0:
                rep.throttled_requests += 1
                rep.throttle_ms_total += resp.throttle_time_ms
                rep.throttle_ms_max = max(rep.throttle_ms_max, resp.throttle_time_ms)
            if resp.error_code == 0:
                if resp.base_offset != st.next_target:
                    self.result.warnings.append(
                        f"{st.key}: the target placed records at {resp.base_offset}, expected "
                        f"{st.next_target}: something else writes to this partition"
                    )
                st.record([r.offset for r in recs], resp.base_offset)
                rep.bytes += len(batch)
                rep.records += len(recs)
                self._dirty = True
                self._copied_now += len(recs)
                return
            if resp.error_code in RETRIABLE:
                await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
                await self.target.refresh_metadata([st.topic])
                continue
            name = error_name(resp.error_code)
            if len(recs) > 1:  # find the record the target refuses
                half = len(recs) // 2
                await self._produce(st, recs[:half], codec, rep)
                await self._produce(st, recs[half:], codec, rep)
                return
            rep.rejections[name] = rep.rejections.get(name, 0) + 1
            example = f"{st.key} offset {recs[0].offset}: {name} {resp.error_message or ''}".strip()
            rep.rejection_examples.append(example)
            if not self.opts.skip_rejected:
                raise MirrorError(f"the target refused {example}")
            st.skipped += 1
            st.next_source = max(st.next_source, recs[0].offset + 1)
            self._dirty = True
            return
        raise MirrorError(f"{st.key}: produce kept failing with retriable errors")

    async def _reconnect_target(self, st: PartitionState) -> None:
        try:
            await self.target.refresh_metadata([st.topic])
        except (ConnectionError, KafkaClientError, OSError):
            pass

    async def _copy_partition(self, st: PartitionState, goal: int) -> None:
        rep = self._report(st.topic)
        offset = st.next_source
        pending: asyncio.Task[Any] | None = None

        async def fetch(at: int) -> Any:
            return await self.source.fetch(
                st.topic, st.partition, at, max_bytes=self.opts.fetch_bytes, isolation_level=READ_COMMITTED
            )

        try:
            while offset < goal and not self.stop.is_set():
                got = await pending if pending is not None else await fetch(offset)
                pending = None
                if got.error_code == ErrorCode.OFFSET_OUT_OF_RANGE:
                    start = (await self.source.list_offsets(st.topic, [st.partition], -2))[st.partition]
                    if start <= offset:
                        raise MirrorError(f"{st.key}: offset {offset} is out of range on the source")
                    self.result.warnings.append(
                        f"{st.key}: records {offset}..{start - 1} were deleted on the source "
                        "before being copied"
                    )
                    st.next_source = offset = start
                    continue
                if got.error_code:
                    raise MirrorError(f"{st.key}: fetch failed: {error_name(got.error_code)}")
                recs, nxt, codec = committed_records(got.records, offset, got.aborted)
                if nxt <= offset:
                    if got.high_watermark <= offset or got.last_stable_offset <= offset:
                        # Nothing committed past here yet (an open transaction): wait for it.
                        await asyncio.sleep(0.2)
                        continue
                    raise MirrorError(f"{st.key}: no progress reading from offset {offset}")
                if nxt < goal and not self.stop.is_set():
                    pending = asyncio.create_task(fetch(nxt))  # read ahead while writing
                for part in chunk(recs, self.opts.batch_bytes):
                    if self.stop.is_set():
                        return
                    await self._produce(st, part, codec, rep)
                if st.next_source < nxt:  # control batches or aborted records at the end
                    st.next_source = nxt
                    self._dirty = True
                offset = st.next_source
        finally:
            if pending is not None:
                pending.cancel()
                try:
                    await pending
                except (asyncio.CancelledError, Exception):
                    pass
            rep.finished = time.monotonic()

    async def _progress_loop(self, total: int) -> None:
        bar = self._progress
        assert bar is not None
        t0 = time.monotonic()
        while True:
            await asyncio.sleep(0.2)
            elapsed = time.monotonic() - t0
            rate = self._copied_now / max(elapsed, 1e-6)
            eta = (total - self._copied_now) / rate if rate > 0 else 0
            bar.update(
                self._copied_now,
                f"{human_count(self._copied_now)}/{human_count(total)} records  {human_count(rate)}/s  "
                f"ETA {eta:.0f}s",
            )

    async def copy(self, topics: dict[str, int]) -> bool:
        """Copy every partition up to the source end offsets of now; False when stopped early."""
        goals: dict[str, int] = {}
        for t, n in topics.items():
            parts = list(range(n))
            for p, end in (
                await self.source.list_offsets(t, parts, -1, isolation_level=READ_COMMITTED)
            ).items():
                goals[f"{t}/{p}"] = end
        states = [self.checkpoint.partitions[k] for k in goals]
        self._started = time.monotonic()
        total = sum(max(0, goals[s.key] - s.next_source) for s in states)
        self._progress = Progress("mirror", total, enabled=self.opts.progress)
        saver = asyncio.create_task(self._checkpointer())
        shower = asyncio.create_task(self._progress_loop(total))
        try:
            results = await asyncio.gather(
                *(self._copy_partition(s, goals[s.key]) for s in states), return_exceptions=True
            )
        finally:
            saver.cancel()
            shower.cancel()
            for task in (saver, shower):
                try:
                    await task
                except asyncio.CancelledError:
                    pass
            self._flush()
            self._progress.done = self._copied_now
            self._progress.close(f"{human_count(self._copied_now)} records copied")
        for r in results:
            if isinstance(r, BaseException):
                if isinstance(r, MirrorError | KafkaClientError | ConnectionError | OSError):
                    self.result.errors.append(str(r))
                else:
                    raise r
        self.result.copied = self._copied_now
        if self.result.errors:
            return False
        return not self.stop.is_set() and all(s.next_source >= goals[s.key] for s in states)

    # -------------------------------------------------------------- groups

    async def translate_groups(self, topics: dict[str, int]) -> None:
        """Commit every source group's offsets on the target, translated through the offset map."""
        for g in await self.source.list_groups():
            gid = g["group_id"]
            entry: dict[str, Any] = {"group": gid, "translated": {}, "skipped": [], "errors": {}}
            try:
                committed = await self.source.committed_offsets(gid)
            except KafkaClientError as e:
                entry["errors"]["*"] = str(e)
                self.result.groups.append(entry)
                continue
            to_commit: dict[tuple[str, int], tuple[int, str | None]] = {}
            for (t, p), (off, meta) in sorted(committed.items()):
                if t not in topics:
                    continue
                st = self.checkpoint.partitions.get(f"{t}/{p}")
                target_off = st.translate(off) if st is not None else None
                if target_off is None:
                    entry["skipped"].append(f"{t}/{p}@{off}")
                    continue
                to_commit[(t, p)] = (target_off, meta)
                entry["translated"][f"{t}/{p}"] = [off, target_off]
            if not to_commit:
                if entry["skipped"]:
                    self.result.groups.append(entry)
                continue
            try:
                errs = await self.target.commit_offsets(gid, to_commit)
            except (KafkaClientError, ConnectionError) as e:
                entry["errors"]["*"] = str(e)
                errs = {}
            for (t, p), code in errs.items():
                if code:
                    entry["errors"][f"{t}/{p}"] = error_name(code)
            if entry["errors"]:
                self.result.warnings.append(
                    f"group {gid}: the target refused some commits: {entry['errors']}"
                )
            self.result.groups.append(entry)

    # -------------------------------------------------------------- verification

    async def _digest(
        self, client: KafkaClient, topic: str, partition: int, start: int, end: int, limit: int | None
    ) -> tuple[int, str]:
        h = hashlib.sha256()
        count = 0
        offset = start
        while offset < end and (limit is None or count < limit):
            got = await client.fetch(
                topic, partition, offset, max_bytes=self.opts.fetch_bytes, isolation_level=READ_COMMITTED
            )
            if got.error_code:
                raise MirrorError(
                    f"{topic}/{partition}: reading for verification: {error_name(got.error_code)}"
                )
            recs, nxt, _ = committed_records(got.records, offset, got.aborted)
            for r in recs:
                if r.offset >= end or (limit is not None and count >= limit):
                    break
                digest_record(h, r)
                count += 1
            if nxt <= offset:
                break
            offset = nxt
        return count, h.hexdigest()

    async def verify(self, topics: dict[str, int]) -> None:
        async def one(st: PartitionState) -> dict[str, Any]:
            src_n, src_h = await self._digest(
                self.source, st.topic, st.partition, st.start_source, st.next_source, None
            )
            tgt_n, tgt_h = await self._digest(
                self.target, st.topic, st.partition, st.first_target, st.next_target, None
            )
            return {
                "partition": st.key,
                "source_records": src_n,
                "target_records": tgt_n,
                "source_sha256": src_h,
                "target_sha256": tgt_h,
                "skipped": st.skipped,
                "equal": src_n == tgt_n and src_h == tgt_h,
            }

        states = [self.checkpoint.partitions[f"{t}/{p}"] for t, n in topics.items() for p in range(n)]
        bar = Progress("verify", len(states), enabled=self.opts.progress)
        out = []
        for done, coro in enumerate(asyncio.as_completed([one(s) for s in states]), 1):
            out.append(await coro)
            bar.update(done, f"{done}/{len(states)} partitions")
        bar.close()
        out.sort(key=lambda v: (v["partition"].rsplit("/", 1)[0], int(v["partition"].rsplit("/", 1)[1])))
        self.result.verification = out

    # -------------------------------------------------------------- all of it

    async def run(self) -> MirrorResult:
        topics = await self._topics()
        self.result.topics = sorted(topics)
        if not topics:
            self.result.errors.append("no topic to mirror")
            return self.result
        await self._ensure_target_topics(topics)
        await self._init_states(topics)
        self._flush()
        done = await self.copy(topics)
        self.result.replay = [r.as_json() for r in self._reports.values()]
        if not done:
            self.result.interrupted = self.stop.is_set()
            return self.result
        if self.opts.translate_groups:
            await self.translate_groups(topics)
        if self.opts.verify:
            await self.verify(topics)
        self.result.completed = True
        return self.result


def observed_rates(plan: dict[str, Any]) -> dict[str, float]:
    """Each source topic's observed write rate (bytes/s) from a plan."""
    return {s["source_topic"]: float(s.get("write_bytes_per_sec") or 0.0) for s in plan.get("streams", [])}


def parse_rate(text: str) -> float:
    """``3MB``, ``512KB``, ``1000`` (bytes per second)."""
    t = text.strip().upper().removesuffix("/S")
    for suffix, mult in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10), ("B", 1)):
        if t.endswith(suffix):
            return float(t[: -len(suffix)]) * mult
    return float(t)


def summarize(result: MirrorResult) -> str:
    lines = []
    state = "complete" if result.completed else ("interrupted" if result.interrupted else "failed")
    lines.append(
        f"mirror {state}: {result.copied} record(s) copied this run over {len(result.topics)} topic(s)"
    )
    for t in result.created_topics:
        lines.append(f"  created {t} on the target")
    for r in result.replay:
        if r["replay_bytes_per_sec"] or r["throttled_requests"] or r["rejections"]:
            lines.append(
                f"  {r['topic']}: replayed at {human_bytes(r['replay_bytes_per_sec'])}/s, achieved "
                f"{human_bytes(r['achieved_bytes_per_sec'])}/s; throttled {r['throttled_requests']}/"
                f"{r['requests']} request(s), {r['throttle_ms_total']} ms in all "
                f"(max {r['throttle_ms_max']} ms)"
                + (f"; rejected {r['rejections']}" if r["rejections"] else "")
            )
    translated = sum(len(g["translated"]) for g in result.groups)
    if result.groups:
        lines.append(f"  {len(result.groups)} group(s), {translated} partition offset(s) translated")
    for v in result.verification:
        mark = "OK " if v["equal"] else "DIFF"
        lines.append(
            f"  verify {mark} {v['partition']}: {v['source_records']} source / {v['target_records']} target "
            f"records, sha256 {v['source_sha256'][:12]} / {v['target_sha256'][:12]}"
        )
    for w in result.warnings:
        lines.append(f"  warning: {w}")
    for e in result.errors:
        lines.append(f"  error: {e}")
    return "\n".join(lines)
