"""Copy topics from one Kafka-compatible cluster to another, in one pass or continuously, and keep group
offsets translated.

Every source partition is copied to the same partition of the target, in order. Records keep their keys,
values, headers and timestamps: a whole source batch is sent as it is (only its producer fields change),
small ones are re-batched. The target assigns its own offsets, after whatever it already held. Only committed
data is copied (read_committed): aborted transactions and transaction markers are left out.

**Pipeline.** One Fetch per source leader carries every partition it leads (a long poll in follow mode);
the answers wait per partition (``pipeline.Feed``) until the writer takes, each round, at most one write per
partition and sends them in one Produce per target leader (``sinks``). Offset syncs and positions are kept
per partition (``state.PartitionState``): a group's committed source offset translates exactly.

**Delivery.** At least once (the default): the state lives in a JSON checkpoint replaced every half second
that only describes acknowledged records; a restart reconciles each partition with the target's end offset
first (records acknowledged after the last checkpoint are matched to the next source records), which is exact
while nothing else writes to the target partitions; a produce retried after its answer was lost may be written
twice. Exactly once (``exactly_once``): every round joins a transaction of the target that also carries the
offset-sync records of what it wrote (a one-partition state topic), committed every ``commit_interval``; a
restart fences the previous producer (aborting its open transaction) and reads the state back read_committed.

**Follow mode.** Until stopped: new topics matching the selection, partitions added at the source, and config
changes (mapped through the plan's OCI limits) are picked up every ``metadata_interval``; committed offsets
of the source's groups are translated and committed on the target every ``group_interval`` (``groupsync``);
lag per partition, throughput and the time since the last record are shown and exported as Prometheus
metrics (``telemetry``).

**Verification.** For every partition, the source range that was copied and the target range it landed in are
read back and compared: record counts and a SHA-256 over keys, values, headers and timestamps.

**Rehearsal.** With a replay rate (``observed``: each topic's write rate from a plan), produce is paced at
that rate and every throttle (``throttle_time_ms``) and rejection the target answers is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import struct
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from kafkite.client import KafkaClient, KafkaClientError, TransactionalProducer
from kafkite.migrate.groupsync import GroupSync
from kafkite.migrate.limits import REQUEST_BYTES
from kafkite.migrate.pipeline import (
    Feed,
    Outgoing,
    Piece,
    committed_batches,
    record_size,
)
from kafkite.migrate.plan import map_retention
from kafkite.migrate.progress import Progress, human_bytes, human_count
from kafkite.migrate.sinks import (
    RETRIABLE,
    Fenced,
    KafkaSink,
    RestSink,
    Sink,
    TransactionFailed,
    TxnSink,
    Written,
    error_name,
)
from kafkite.migrate.state import (
    CHECKPOINT_KIND,
    Checkpoint,
    MirrorError,
    PartitionState,
    default_checkpoint_path,
    default_mirror_name,
    fold_sync,
    state_topic,
    sync_record,
    translate_spread,
)
from kafkite.migrate.survey import select_topics
from kafkite.migrate.telemetry import Telemetry, follow_display
from kafkite.protocol import records
from kafkite.protocol.errors import ErrorCode

if TYPE_CHECKING:
    from kafkite.migrate.rest import OciStreamingTarget

__all__ = [
    "CHECKPOINT_KIND",
    "Checkpoint",
    "Mirror",
    "MirrorError",
    "MirrorOptions",
    "MirrorResult",
    "Pacer",
    "PartitionState",
    "chunk",
    "committed_records",
    "digest_record",
    "observed_rates",
    "parse_rate",
    "summarize",
]

log = logging.getLogger("kafkite.migrate")

READ_COMMITTED = 1
DEFAULT_FETCH_BYTES = 4 * 1024 * 1024
DEFAULT_BATCH_BYTES = 1_000_000  # under the 1 MiB a default broker takes in one batch
DEFAULT_REQUEST_BYTES = 16 * 1024 * 1024
CHECKPOINT_INTERVAL = 0.5
FOLLOW_WAIT_MS = 500
HOUR_MS = 3_600_000
# Source configs carried to topics the mirror creates on the target, and followed in follow mode.
CARRIED_CONFIGS = ("cleanup.policy", "retention.ms", "max.message.bytes")
MAX_RETRIES = 20


# ---------------------------------------------------------------------------------------------- records


def committed_records(
    buf: bytes, from_offset: int, aborted: list[tuple[int, int]]
) -> tuple[list[records.Record], int, int]:
    """The committed data records of a read_committed Fetch answer at or after ``from_offset``.

    Returns (records, next offset to fetch, compression codec of the first data batch). Control batches are
    skipped, and so are the batches of the aborted transactions the broker listed with the answer.
    """
    batches, nxt = committed_batches(buf, from_offset, aborted)
    out: list[records.Record] = []
    codec = -1
    for pos, h in batches:
        if codec < 0:
            codec = h.compression
        for r in records.iter_records(buf, pos, h):
            if r.offset >= from_offset:
                out.append(r)
    return out, nxt, max(codec, 0)


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


class Digest(Protocol):
    """A hashlib hash, as digest_record feeds it."""

    def update(self, data: bytes, /) -> None: ...


def digest_record(
    h: Digest, r: records.Record, *, with_headers: bool = True, with_timestamp: bool = True
) -> None:
    """Feed one record (timestamp, key, value, headers; not its offset) to a hash, unambiguously."""
    parts = [_TS.pack(r.timestamp if with_timestamp else 0, -1 if r.key is None else len(r.key))]
    if r.key is not None:
        parts.append(r.key)
    parts.append(_I32.pack(-1 if r.value is None else len(r.value)))
    if r.value is not None:
        parts.append(r.value)
    headers = r.headers if with_headers else []
    parts.append(_I32.pack(len(headers)))
    for k, v in headers:
        kb = k.encode()
        parts.append(_I32.pack(len(kb)))
        parts.append(kb)
        parts.append(_I32.pack(-1 if v is None else len(v)))
        if v is not None:
            parts.append(v)
    h.update(b"".join(parts))


# ---------------------------------------------------------------------------------------------- pacing


class Pacer:
    """Hold producers to ``rate`` bytes per second (a token bucket with one second of burst), until the
    monotonic time ``until`` (None: for ever); past it, nobody waits."""

    def __init__(self, rate: float, until: float | None = None, burst: float = 1.0) -> None:
        self.rate = rate
        self.until = until
        self.burst = burst  # seconds of burst
        self._t = time.monotonic()
        self._debt = 0.0
        self._lock = asyncio.Lock()

    def delay(self, n: int) -> float:
        """Seconds to wait before ``n`` more bytes fit (0: now)."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        if self.until is not None and now >= self.until:
            return 0.0
        debt = max(0.0, self._debt - (now - self._t) * self.rate)
        # A write bigger than the burst goes once nothing is owed.
        return max(0.0, (debt + n - max(self.burst * self.rate, n)) / self.rate)

    def charge(self, n: int) -> None:
        now = time.monotonic()
        self._debt = max(0.0, self._debt - (now - self._t) * self.rate) + n
        self._t = now

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

    def account(self, w: Written, nbytes: int, nrecs: int) -> None:
        self.requests += max(1, w.requests)
        if w.throttle_ms > 0:
            self.throttled_requests += 1
            self.throttle_ms_total += w.throttle_ms
            self.throttle_ms_max = max(self.throttle_ms_max, w.throttle_ms)
        if not w.error:
            self.bytes += nbytes
            self.records += nrecs
        self.finished = time.monotonic()


# ---------------------------------------------------------------------------------------------- options


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
    # follow mode and delivery
    follow: bool = False
    topics_regex: str | None = None
    exactly_once: bool = False
    name: str | None = None  # the mirror's name: its transactional id and state topic
    commit_interval: float = 0.1  # seconds between transaction commits (exactly once)
    metadata_interval: float = 5.0  # follow mode: new topics, partitions, configs
    group_interval: float = 5.0  # follow mode: group offsets synced (0: never)
    groups_regex: str | None = None  # which source groups to sync (default all)
    request_bytes: int = DEFAULT_REQUEST_BYTES
    honour_limits: bool | None = None  # pace to the plan's OCI limits (default: with a plan, not replaying)
    display_interval: float | None = None  # live display refresh (default 1 s on a terminal, 5 s otherwise)
    metrics_listener: str | None = None  # HOST:PORT of /metrics, /status and POST /cutover


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
    delivery: dict[str, Any] = field(default_factory=dict)
    follow: dict[str, Any] = field(default_factory=dict)

    @property
    def verified(self) -> bool:
        return bool(self.verification) and all(v["equal"] for v in self.verification)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["verified"] = self.verified
        return out

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)
            log.warning("%s", text)


@dataclass
class Pending:
    """What the open transaction wrote to one partition (applied to the state when it commits)."""

    runs: list[list[int]] = field(default_factory=list)
    next_source: int = -1
    next_target: int = -1
    skipped: int = 0


class Mirror:
    def __init__(
        self,
        source: KafkaClient,
        target: KafkaClient | None,
        source_name: str,
        target_name: str,
        options: MirrorOptions,
        stop: asyncio.Event | None = None,
        *,
        rest: OciStreamingTarget | None = None,
        group_target: KafkaClient | None = None,
    ) -> None:
        self.source = source
        self.target = target
        self.rest = rest  # an OciStreamingTarget: the target is OCI Streaming's REST API
        # Where group offsets are committed: the target, or for a REST target the pool's Kafka endpoint.
        self.group_target = group_target if group_target is not None else target
        self.source_name, self.target_name = source_name, target_name
        self.opts = options
        self.stop = stop or asyncio.Event()
        self.name = options.name or default_mirror_name(source_name, target_name)
        self.exactly_once = options.exactly_once
        if self.exactly_once and rest is not None:
            raise MirrorError(
                "--exactly-once needs a Kafka target with transactions; OCI Streaming (REST) has none"
            )
        path = Path(options.checkpoint or default_checkpoint_path(source_name, target_name))
        if self.exactly_once:
            self.checkpoint = Checkpoint(path, source_name, target_name)  # held in the state topic
        else:
            self.checkpoint = Checkpoint.load(path, source_name, target_name)
        self.state_topic = state_topic(self.name)
        self.result = MirrorResult()
        self.feeds: dict[str, Feed] = {}
        self.topics: dict[str, int] = {}  # mirrored topic -> partitions mirrored
        self.target_partitions: dict[str, int] = {}
        self.topic_configs: dict[str, dict[str, str | None]] = {}
        self.sink: Sink | None = None
        self.producer: TransactionalProducer | None = None
        self._pending: dict[str, Pending] = {}
        self._dirty = False
        self._reports: dict[str, TopicReport] = {}
        self._pacers: dict[str, Pacer] = {}
        self._limit_pacers: dict[str, Pacer] = {}
        self._progress: Progress | None = None
        self._copied_now = 0
        self._bytes_now = 0
        self._started = time.monotonic()
        self._data = asyncio.Event()
        self._space = asyncio.Event()
        self._generation = 0
        self._round_robin = 0
        self._throttle_until = 0.0
        self._last_record: dict[str, tuple[float, int]] = {}  # key -> (monotonic time copied, record ts)
        self.ready = asyncio.Event()  # the mirror is initialised and copying
        self.transactions = {"committed": 0, "aborted": 0}
        self.rewinds = 0
        self._selected_re = re.compile(options.topics_regex) if options.topics_regex else None

        self.telemetry = Telemetry(self)

        self.groupsync = GroupSync(self)
        self._limits = (options.plan or {}).get("limits") or {}
        honour = options.honour_limits
        if honour is None:
            honour = bool(options.plan) and not options.replay_rates
        self.honour_limits = honour

    # -------------------------------------------------------------- setup

    def _selected(self, names: list[str]) -> list[str]:
        chosen = select_topics(names, self.opts.topics, self.source.internal_topics)
        if self._selected_re is not None:
            regex = self._selected_re
            extra = [
                t
                for t in names
                if regex.fullmatch(t) and not t.startswith("__") and t not in self.source.internal_topics
            ]
            chosen = sorted(set(chosen if self.opts.topics else []) | set(extra))
        return [t for t in chosen if not t.startswith("__kafkite_mirror.")]

    async def _topics(self) -> dict[str, int]:
        meta = await self.source.refresh_metadata()
        names = [t["name"] for t in meta["topics"] if t["error_code"] == 0]
        chosen = self._selected(names)
        if self.opts.topics and not self.opts.follow:
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

    def map_configs(self, topic: str, configs: dict[str, str | None]) -> tuple[dict[str, str], list[str]]:
        """The source configs carried to the target, through the plan's OCI limits when there is a plan:
        (configs to set, notes on what was changed or left out)."""

        out = {k: v for k, v in configs.items() if k in CARRIED_CONFIGS and v is not None}
        notes: list[str] = []
        if not self.opts.plan:
            return out, notes
        lim = self.opts.plan.get("limits") or {}
        mapped: dict[str, str] = {}
        if "retention.ms" in out:
            try:
                hours, why = map_retention(int(out["retention.ms"]))
            except ValueError:
                hours, why = map_retention(None)
            mapped["retention.ms"] = str(hours * HOUR_MS)
            if why:
                notes.append(f"retention.ms={out['retention.ms']} mapped to {hours} h ({why})")
        policy = (out.get("cleanup.policy") or "delete").lower()
        if "compact" in policy:
            notes.append(f"cleanup.policy={policy} left out: OCI Streaming has no compaction")
        if "max.message.bytes" in out:
            cap = int(lim.get("max_message_bytes") or 0)
            try:
                value = int(out["max.message.bytes"])
            except ValueError:
                value = cap
            if cap and value > cap:
                notes.append(f"max.message.bytes={value} capped at OCI's {cap}")
                value = cap
            mapped["max.message.bytes"] = str(value)
        return mapped, notes

    async def _ensure_target_topics(self, topics: dict[str, int]) -> None:
        if self.rest is not None:
            await self._ensure_streams(self.rest, topics)
            return
        assert self.target is not None
        await self.target.refresh_metadata(list(topics))
        missing = [t for t in topics if t not in self.target.topics]
        if missing and not self.opts.create_topics:
            raise MirrorError(f"topics missing on the target: {', '.join(missing)} (drop --no-create-topics)")
        if missing:
            configs = await self.source.describe_topic_configs(missing)
            for t in missing:
                planned = self._planned(t)
                parts = max(topics[t], int(planned["partitions"])) if planned else topics[t]
                src_cfg = configs.get(t, {})
                self.topic_configs[t] = {k: v for k, v in src_cfg.items() if k in CARRIED_CONFIGS}
                cfg = {k: v for k, v in src_cfg.items() if k in CARRIED_CONFIGS and v is not None}
                if planned:  # created as ``migrate apply`` would: planned partitions and retention only
                    cfg = {"retention.ms": str(int(planned["retention_hours"]) * HOUR_MS)}
                elif self.opts.plan:
                    cfg, _ = self.map_configs(t, src_cfg)
                res = await self.target.create_topics([(t, parts, cfg)])
                code, msg = res.get(t, (0, None))
                if code and code != ErrorCode.TOPIC_ALREADY_EXISTS and cfg:
                    self.result.warnings.append(
                        f"target refused {t} with {cfg}: {error_name(code)} {msg or ''}; "
                        "created with its defaults"
                    )
                    res = await self.target.create_topics([(t, parts, {})])
                    code, msg = res.get(t, (0, None))
                if code and code != ErrorCode.TOPIC_ALREADY_EXISTS:
                    raise MirrorError(f"cannot create {t} on the target: {error_name(code)} {msg or ''}")
                if code == 0:
                    self.result.created_topics.append(t)
            for _ in range(50):
                await self.target.refresh_metadata(list(topics))
                if all(t in self.target.topics for t in topics):
                    break
                await asyncio.sleep(0.1)
        for t, n in topics.items():
            have = self.target.topics.get(t, 0)
            self.target_partitions[t] = have
            if have < n:
                raise MirrorError(
                    f"{t} has {n} partitions on the source but {have} on the target: the mirror keeps every "
                    "record in the same partition, so the target needs at least as many"
                )

    async def _ensure_streams(self, rest: OciStreamingTarget, topics: dict[str, int]) -> None:

        configs = await self.source.describe_topic_configs(list(topics))
        for t, n in topics.items():
            planned = self._planned(t)
            if planned:
                parts, hours = max(n, int(planned["partitions"])), int(planned["retention_hours"])
            else:
                raw = (configs.get(t) or {}).get("retention.ms")
                hours, _ = map_retention(int(raw) if raw not in (None, "") else None)
                parts = n
            self.topic_configs[t] = {k: v for k, v in (configs.get(t) or {}).items() if k in CARRIED_CONFIGS}
            if self.opts.create_topics:
                info, created = await rest.ensure_stream(t, parts, hours)
                if created:
                    self.result.created_topics.append(t)
            else:
                found = await rest.stream(t)
                if found is None:
                    raise MirrorError(f"stream {t} is missing in the pool (drop --no-create-topics)")
                info = found
            self.target_partitions[t] = int(info["partitions"])

    async def _init_states(self, topics: dict[str, int]) -> None:
        for t, n in topics.items():
            await self._init_topic(t, list(range(n)))

    async def _init_topic(self, t: str, parts: list[int]) -> None:
        new = [p for p in parts if f"{t}/{p}" not in self.checkpoint.partitions]
        tgt_ends: dict[int, int] = {}
        if self.target is not None and self.rest is None:
            tgt_ends = await self.target.list_offsets(
                t, parts, -1, isolation_level=READ_COMMITTED if self.exactly_once else 0
            )
        if new:
            starts = await self.source.list_offsets(t, new, -2)
            for p in new:
                end = tgt_ends.get(p, 0)
                st = PartitionState(t, p, starts[p], starts[p], end, end)
                self.checkpoint.partitions[st.key] = st
                self._dirty = True
                self._pending_sync(st)
        for p in parts:
            st = self.checkpoint.partitions[f"{t}/{p}"]
            if self.rest is None and not self.exactly_once:
                await self._reconcile(st, tgt_ends[p])
            self.feeds[st.key] = Feed(t, p, st.next_source)
        self.topics[t] = max(self.topics.get(t, 0), max(parts) + 1 if parts else 0)

    def _pending_sync(self, st: PartitionState) -> None:
        """Exactly once: a new partition's starting point goes into the next transaction."""
        if self.exactly_once:
            self._pend(st)

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
        # The target's records past the checkpoint must be copies of the next source records: compared one by
        # one (key, value, headers, timestamp), so another writer's records are never taken for copies.
        assert self.target is not None
        theirs: list[records.Record] = []
        toff = st.next_target
        while toff < target_end:
            got = await self.target.fetch(st.topic, st.partition, toff, max_bytes=self.opts.fetch_bytes)
            if got.error_code:
                raise MirrorError(
                    f"{st.key}: cannot read the target to reconcile: {error_name(got.error_code)}"
                )
            recs, nxt, _ = committed_records(got.records, toff, [])
            theirs.extend(r for r in recs if r.offset < target_end)
            if nxt <= toff:
                break
            toff = nxt
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
            for mine in take:
                copy = theirs[len(theirs) - extra] if len(theirs) >= extra else None
                if copy is None or (copy.key, copy.value, copy.headers, copy.timestamp) != (
                    mine.key,
                    mine.value,
                    mine.headers,
                    mine.timestamp,
                ):
                    raise MirrorError(
                        f"{st.key}: the target's record at offset {st.next_target} is not a copy of source "
                        f"offset {mine.offset}: something else writes to the target partition (stop it, or "
                        "delete the checkpoint and the target topic to start over)"
                    )
                st.record([mine.offset], st.next_target)
                extra -= 1
            if extra > 0:
                st.next_source = max(st.next_source, nxt)
            offset = st.next_source
        self._dirty = True

    # -------------------------------------------------------------- exactly once: the state topic

    async def _init_exactly_once(self) -> None:
        assert self.target is not None
        self.producer = TransactionalProducer(self.target, f"kafkite-mirror-{self.name}")
        try:
            await self.producer.init()  # fences an earlier instance and aborts its open transaction
        except KafkaClientError as e:
            raise MirrorError(
                f"the target refused a transactional producer ({e}): --exactly-once needs transactions"
            ) from e
        await self.target.refresh_metadata([self.state_topic])
        if self.state_topic not in self.target.topics:
            res = await self.target.create_topics(
                [(self.state_topic, 1, {"cleanup.policy": "delete", "retention.ms": "-1"})]
            )
            code, _ = res.get(self.state_topic, (0, None))
            if code and code != ErrorCode.TOPIC_ALREADY_EXISTS:
                res = await self.target.create_topics([(self.state_topic, 1, {})])
                code, _ = res.get(self.state_topic, (0, None))
                if code and code != ErrorCode.TOPIC_ALREADY_EXISTS:
                    raise MirrorError(f"cannot create {self.state_topic} on the target: {error_name(code)}")
            for _ in range(50):
                await self.target.refresh_metadata([self.state_topic])
                if self.state_topic in self.target.topics:
                    break
                await asyncio.sleep(0.1)
        states = await self._read_state()
        self.checkpoint.partitions = states
        self.sink = TxnSink(self.target, self.producer)

    async def _read_state(self) -> dict[str, PartitionState]:
        """The committed offset syncs of the state topic, folded in log order."""
        assert self.target is not None
        states: dict[str, PartitionState] = {}
        end = -1
        for _ in range(600):  # the previous producer's transaction is being aborted: wait for a stable end
            end = (await self.target.list_offsets(self.state_topic, [0], -1, isolation_level=READ_COMMITTED))[
                0
            ]
            high = (await self.target.list_offsets(self.state_topic, [0], -1))[0]
            if end >= high:
                break
            await asyncio.sleep(0.1)
        offset = 0
        while offset < end:
            got = await self.target.fetch(
                self.state_topic, 0, offset, max_bytes=8 << 20, isolation_level=READ_COMMITTED
            )
            if got.error_code == ErrorCode.OFFSET_OUT_OF_RANGE:
                raise MirrorError(f"{self.state_topic} lost its beginning: delete it to start over")
            if got.error_code:
                raise MirrorError(f"reading {self.state_topic}: {error_name(got.error_code)}")
            recs, nxt, _ = committed_records(got.records, offset, got.aborted)
            for r in recs:
                if r.value:
                    fold_sync(states, r.value)
            if nxt <= offset:
                break
            offset = nxt
        return states

    # -------------------------------------------------------------- fetching

    def _fetch_wait_ms(self) -> int:
        return FOLLOW_WAIT_MS if self.opts.follow else 200

    async def _fetch_loop(self) -> None:
        inflight: dict[int, asyncio.Task[None]] = {}
        limit = 2 * self.opts.fetch_bytes
        try:
            while not self.stop.is_set():
                eligible = [
                    f
                    for f in self.feeds.values()
                    if not f.fetching
                    and f.paused_reason is None
                    and f.queued_bytes < limit
                    and not f.fetched_all
                ]
                by_leader: dict[int, list[Feed]] = {}
                for f in eligible:
                    leader = self.source.leader_of(f.topic, f.partition)
                    if f.solo:
                        leader = -1000 - len(by_leader)  # a request of its own
                    by_leader.setdefault(leader, []).append(f)
                for leader, feeds in by_leader.items():
                    if leader in inflight:
                        continue
                    for f in feeds:
                        f.fetching = True
                    inflight[leader] = asyncio.create_task(self._fetch_once(leader, feeds))
                if not inflight:
                    self._space.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._space.wait(), 0.2)
                    continue
                done, _ = await asyncio.wait(
                    set(inflight.values()), timeout=1.0, return_when=asyncio.FIRST_COMPLETED
                )
                for leader, task in list(inflight.items()):
                    if task in done:
                        del inflight[leader]
                        exc = task.exception()
                        if exc is not None:
                            if not isinstance(
                                exc, ConnectionError | KafkaClientError | OSError | MirrorError
                            ):
                                raise exc
                            if isinstance(exc, MirrorError) and not self.opts.follow:
                                raise exc
                            self.telemetry.error("fetch")
                            log.warning("fetch from the source failed: %s", exc)
                            await asyncio.sleep(0.5)
                            with contextlib.suppress(ConnectionError, KafkaClientError, OSError):
                                await self.source.refresh_metadata(list(self.topics))
        finally:
            for task in inflight.values():
                task.cancel()
            for task in inflight.values():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _fetch_once(self, leader: int, feeds: list[Feed]) -> None:
        gen = self._generation
        try:
            offsets = {(f.topic, f.partition): f.fetch_pos for f in feeds}
            solo = len(feeds) == 1 and feeds[0].solo
            node = leader if leader >= 0 else None
            if solo:
                node = self.source.leader_of(feeds[0].topic, feeds[0].partition)
                node = node if node >= 0 else None
            answers = await self.source.fetch_many(
                offsets,
                node=node,
                max_wait_ms=self._fetch_wait_ms(),
                min_bytes=1,
                max_bytes=max(self.opts.fetch_bytes, min(64 << 20, self.opts.fetch_bytes * len(feeds))),
                partition_max_bytes=self.opts.fetch_bytes * (4 if solo else 1),
                isolation_level=READ_COMMITTED,
            )
            if gen != self._generation:
                return  # the transaction was aborted meanwhile: these positions are stale
            refresh = False
            for f in feeds:
                got = answers.get((f.topic, f.partition))
                if got is None:
                    continue
                if got.error_code:
                    refresh |= await self._fetch_error(f, got.error_code)
                    continue
                if got.last_stable_offset >= 0:
                    f.source_end = got.last_stable_offset
                f.source_high = got.high_watermark
                f.log_start = got.log_start_offset
                batches, nxt = committed_batches(got.records, f.fetch_pos, got.aborted)
                if nxt <= f.fetch_pos and not batches:
                    stable = got.last_stable_offset if got.last_stable_offset >= 0 else got.high_watermark
                    if stable > f.fetch_pos:
                        f.solo = True  # a batch bigger than a shared answer gives: ask for it alone
                    continue
                f.solo = False
                data = got.records
                pieces = [Piece(bytes(data[pos : pos + h.size]), h, f.fetch_pos) for pos, h in batches]
                f.push(pieces, nxt)
            self._data.set()
            if refresh:
                await self.source.refresh_metadata(sorted({f.topic for f in feeds}))
        finally:
            for f in feeds:
                f.fetching = False

    async def _fetch_error(self, f: Feed, code: int) -> bool:
        """Handle a partition's fetch error; True when metadata should be refreshed."""
        if code == ErrorCode.OFFSET_OUT_OF_RANGE:
            start = (await self.source.list_offsets(f.topic, [f.partition], -2))[f.partition]
            if start <= f.fetch_pos:
                end = (await self.source.list_offsets(f.topic, [f.partition], -1))[f.partition]
                if f.fetch_pos > end:
                    raise MirrorError(
                        f"{f.key}: offset {f.fetch_pos} is past the source's end {end}: the source topic "
                        "was recreated or truncated"
                    )
                return False
            self.result.warn(
                f"{f.key}: records {f.fetch_pos}..{start - 1} were deleted on the source before being copied"
            )
            f.push([], start)
            self._data.set()
            return False
        if code in RETRIABLE or code in (ErrorCode.FENCED_LEADER_EPOCH, ErrorCode.UNKNOWN_LEADER_EPOCH):
            return True
        raise MirrorError(f"{f.key}: fetch failed: {error_name(code)}")

    # -------------------------------------------------------------- writing

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

    def _limit_pacer(self, key: str) -> Pacer | None:
        """OCI's write limit per partition, when the plan's limits are honoured."""
        if not self.honour_limits:
            return None
        p = self._limit_pacers.get(key)
        if p is None:
            rate = float(self._limits.get("write_bytes_per_sec_per_partition") or 0)
            if rate <= 0:
                return None
            # A little under the limit, with half its burst: the target never sees it exceeded.
            p = self._limit_pacers[key] = Pacer(0.9 * rate, burst=0.5)
        return p

    def _request_cap(self) -> int:
        cap = self.opts.request_bytes
        if self.honour_limits and self._limits.get("max_request_bytes"):
            cap = min(cap, int(self._limits["max_request_bytes"]))
        return cap

    def _batch_cap(self) -> int:
        cap = self.opts.batch_bytes
        if self.honour_limits and self._limits.get("max_request_bytes"):
            cap = min(cap, int(self._limits["max_request_bytes"]) * 9 // 10)
        return cap

    def _apply_advance(self, st: PartitionState, offset: int) -> None:
        if self.exactly_once:
            pend = self._pend(st)
            if offset > pend.next_source:
                pend.next_source = offset
        elif offset > st.next_source:
            st.next_source = offset
            self._dirty = True

    def _take_round(self) -> tuple[list[Outgoing], float]:
        """At most one write per partition, up to the request cap; and when to look again if paced."""
        assert self.sink is not None
        outs: list[Outgoing] = []
        total = 0
        cap = self._request_cap()
        batch_cap = self._batch_cap()
        wake = 0.0
        feeds = list(self.feeds.values())
        if not feeds:
            return outs, wake
        start = self._round_robin % len(feeds)
        self._round_robin += 1
        for f in feeds[start:] + feeds[:start]:
            if f.paused_reason is not None or not f.items:
                continue
            st = self.checkpoint.partitions[f.key]
            self._report(f.topic)
            pacers = [p for p in (self._pacers.get(f.topic), self._limit_pacer(f.key)) if p is not None]
            head = f.items[0]
            if pacers and isinstance(head, Piece):
                need = min(head.size, batch_cap)
                d = max(p.delay(need) for p in pacers)
                if d > 0:
                    wake = d if wake == 0 else min(wake, d)
                    continue
            while True:
                o, adv = f.take(batch_cap, verbatim_ok=self.sink.verbatim_ok)
                if adv is not None:
                    self._apply_advance(st, adv)
                    continue
                break
            if o is None:
                continue
            for p in pacers:
                p.charge(o.size)
            outs.append(o)
            total += o.size
            if total >= cap:
                break
        if outs:
            self._space.set()
        return outs, wake

    async def _write_loop(self) -> None:
        assert self.sink is not None
        while True:
            if self.stop.is_set():
                break
            if self._throttle_until > time.monotonic():
                await asyncio.sleep(self._throttle_until - time.monotonic())
            outs, wake = self._take_round()
            if outs:
                await self._write(outs)
            elif self._finished():
                break
            if isinstance(self.sink, TxnSink):
                await self._maybe_commit(force=not outs and self._finished())
            if outs:
                continue
            self._data.clear()
            timeout = 0.2 if wake == 0 else min(wake, 0.2)
            if isinstance(self.sink, TxnSink) and self.producer is not None and self.producer.in_transaction:
                due = self.sink.txn_started + self.opts.commit_interval - time.monotonic()
                timeout = max(0.0, min(timeout, due))
            if any(f.items for f in self.feeds.values()) and wake == 0:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._data.wait(), timeout)
        if isinstance(self.sink, TxnSink):
            await self._maybe_commit(force=True)

    def _finished(self) -> bool:
        """One pass: everything up to the goals fetched and written."""
        if self.opts.follow:
            return False
        for f in self.feeds.values():
            if f.paused_reason is not None:
                continue
            if not f.fetched_all or f.items:
                return False
        return True

    async def _maybe_commit(self, *, force: bool) -> None:
        sink = self.sink
        assert isinstance(sink, TxnSink) and self.producer is not None
        if not self._pending and not self.producer.in_transaction:
            return
        if not force and not self.stop.is_set() and self.producer.in_transaction:
            age = time.monotonic() - sink.txn_started
            if age < self.opts.commit_interval and sink.txn_bytes < 64 << 20:
                return
        syncs = []
        for key, pend in self._pending.items():
            st = self.checkpoint.partitions[key]
            preview = PartitionState(**{**asdict(st), "runs": [], "spread": []})
            for src, tgt, n in pend.runs:
                preview.record_range(src, n, tgt)
            preview.next_source = max(st.next_source, pend.next_source)
            preview.next_target = pend.next_target if pend.runs else st.next_target
            preview.skipped = st.skipped + pend.skipped
            syncs.append(sync_record(preview, pend.runs))
        try:
            if not self.producer.in_transaction and syncs:
                await self.producer.add_partitions([(self.state_topic, 0)])
                sink.txn_started = time.monotonic()
            await sink.commit(self.state_topic, syncs)
        except TransactionFailed as e:
            await self._abort(str(e))
            return
        self.transactions["committed"] += 1
        self.telemetry.transaction("committed")
        for key, pend in self._pending.items():
            st = self.checkpoint.partitions[key]
            for src, tgt, n in pend.runs:
                st.record_range(src, n, tgt)
                self._copied_now += n
            st.next_source = max(st.next_source, pend.next_source)
            if pend.runs:
                st.next_target = pend.next_target
            st.skipped += pend.skipped
        self._pending.clear()

    async def _abort(self, why: str) -> None:
        """Abort the open transaction and go back to the last committed positions."""
        assert self.producer is not None
        self.result.warn(f"transaction aborted ({why}); writing again from the last committed position")
        self.transactions["aborted"] += 1
        self.telemetry.transaction("aborted")
        self._generation += 1
        with contextlib.suppress(KafkaClientError, ConnectionError, OSError):
            await self.producer.abort()
        for attempt in range(20):
            try:
                await self.producer.init()
                break
            except (KafkaClientError, ConnectionError, OSError) as e:
                if attempt == 19:
                    raise MirrorError(f"cannot restart the transactional producer: {e}") from e
                await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
        self._pending.clear()
        for key, f in self.feeds.items():
            f.clear(self.checkpoint.partitions[key].next_source)
        self._space.set()

    async def _write(self, outs: list[Outgoing]) -> None:
        assert self.sink is not None
        try:
            answers = await self.sink.write(outs)
        except Fenced as e:
            raise MirrorError(
                f"another mirror named {self.name} took over the target (its transactional id fenced this "
                f"one: {e}); stop one of them"
            ) from e
        except TransactionFailed as e:
            await self._abort(str(e))
            return
        throttle = 0
        gen = self._generation
        for o in outs:
            if gen != self._generation:
                return  # the transaction was aborted: what it wrote is gone
            w = answers.get(o.key)
            if w is None:
                continue
            throttle = max(throttle, w.throttle_ms)
            await self._written(o, w)
        if throttle > 0:
            self._throttle_until = time.monotonic() + throttle / 1000
            self.telemetry.throttled(throttle / 1000)

    async def _written(self, o: Outgoing, w: Written) -> None:
        st = self.checkpoint.partitions[o.key]
        rep = self._report(o.topic)
        if self.sink is not None and self.sink.places_by_key:
            await self._written_spread(st, o, w, rep)
            return
        if w.error:
            rep.account(w, 0, 0)
            if self.exactly_once:
                gen = self._generation
                await self._txn_split(st, o.all_records(), o.codec, rep, w)
                if gen == self._generation:  # not aborted meanwhile
                    pend = self._pend(st)
                    pend.next_source = max(pend.next_source, o.end_source)
                return
            await self._produce_split(st, o.all_records(), o.codec, rep, first_error=w)
            if st.next_source < o.end_source and not self.stop.is_set():
                st.next_source = o.end_source
            self._dirty = True
            return
        rep.account(w, o.size, o.count)
        if self.exactly_once:
            pend = self._pend(st)
            runs = pend.runs
            if o.verbatim is not None:
                pieces = [(o.first_source, o.count)]
            else:
                pieces = _ranges([r.offset for r in o.recs])
            tgt = w.base_offset
            for src, n in pieces:
                if runs and runs[-1][0] + runs[-1][2] == src and runs[-1][1] + runs[-1][2] == tgt:
                    runs[-1][2] += n
                else:
                    runs.append([src, tgt, n])
                tgt += n
            pend.next_target = tgt
            pend.next_source = max(pend.next_source, o.end_source)
        else:
            if w.base_offset != st.next_target:
                why = (
                    "a produce was retried after its answer was lost: the records may be there twice"
                    if w.retried_after_network_error
                    else "something else writes to this partition"
                )
                self.result.warn(
                    f"{st.key}: the target placed records at {w.base_offset}, expected {st.next_target}: "
                    + why
                )
            if o.verbatim is not None:
                st.record_range(o.first_source, o.count, w.base_offset)
            else:
                st.record([r.offset for r in o.recs], w.base_offset)
            if o.end_source > st.next_source:
                st.next_source = o.end_source
            self._copied_now += o.count
            self._dirty = True
        self._bytes_now += o.size
        self._last_record[o.key] = (time.monotonic(), o.max_timestamp)
        self.telemetry.copied(o.topic, o.count, o.size, o.max_timestamp)

    def _pend(self, st: PartitionState) -> Pending:
        pend = self._pending.get(st.key)
        if pend is None:
            pend = self._pending[st.key] = Pending(next_source=st.next_source, next_target=st.next_target)
        return pend

    async def _txn_split(
        self, st: PartitionState, recs: list[records.Record], codec: int, rep: TopicReport, w: Written
    ) -> None:
        """Exactly once: a batch the target refused, written again in halves inside the same transaction
        until the record refused is found (skipped in a rehearsal, fatal otherwise)."""
        assert self.sink is not None
        if len(recs) == 1:
            r = recs[0]
            name = w.error or "ERROR"
            rep.rejections[name] = rep.rejections.get(name, 0) + 1
            example = f"{st.key} offset {r.offset}: {name} {w.error_message or ''}".strip()
            rep.rejection_examples.append(example)
            if not self.opts.skip_rejected:
                raise MirrorError(f"the target refused {example}")
            pend = self._pend(st)
            pend.skipped += 1
            pend.next_source = max(pend.next_source, r.offset + 1)
            return
        half = len(recs) // 2
        for part in (recs[:half], recs[half:]):
            o = Outgoing(st.topic, st.partition, recs=part, codec=codec, end_source=part[-1].offset + 1)
            o.size = sum(record_size(r) for r in part)
            try:
                answers = await self.sink.write([o])
            except TransactionFailed as e:
                await self._abort(str(e))
                return
            got = answers.get(o.key)
            if got is None:
                continue
            if got.error:
                gen = self._generation
                await self._txn_split(st, part, codec, rep, got)
                if gen != self._generation:
                    return
            else:
                await self._written(o, got)

    async def _written_spread(self, st: PartitionState, o: Outgoing, w: Written, rep: TopicReport) -> None:
        ok_offsets: list[int] = []
        placed: list[tuple[int, int]] = []
        ends = self.checkpoint.spread_ends.setdefault(o.topic, {})
        for r, where in zip(o.recs, w.placed, strict=True):
            if where is None:
                continue
            ok_offsets.append(r.offset)
            placed.append(where)
            q, off = where
            ends[q] = max(ends.get(q, 0), off + 1)
        rep.account(Written(throttle_ms=w.throttle_ms, requests=w.requests), o.size, len(ok_offsets))
        if ok_offsets:
            st.record_spread(ok_offsets, placed)
        failed = len(o.recs) - len(ok_offsets)
        if failed:
            name = w.error or "REFUSED"
            rep.rejections[name] = rep.rejections.get(name, 0) + failed
            bad = [r for r, where in zip(o.recs, w.placed, strict=True) if where is None]
            example = f"{st.key} offset {bad[0].offset}: {name} {w.error_message or ''}".strip()
            rep.rejection_examples.append(example)
            if not self.opts.skip_rejected:
                raise MirrorError(f"the target refused {example}")
            st.skipped += failed
        if o.end_source > st.next_source:
            st.next_source = o.end_source
        self._copied_now += len(ok_offsets)
        self._bytes_now += o.size
        self._dirty = True
        self._last_record[o.key] = (time.monotonic(), o.max_timestamp)
        self.telemetry.copied(o.topic, len(ok_offsets), o.size, o.max_timestamp)

    async def _produce_split(
        self,
        st: PartitionState,
        recs: list[records.Record],
        codec: int,
        rep: TopicReport,
        first_error: Written | None = None,
    ) -> None:
        """Write records one partition at a time, halving a refused batch to find the record refused."""
        assert self.target is not None
        if first_error is not None and len(recs) == 1:
            self._reject(st, recs[0], first_error.error or "ERROR", first_error.error_message, rep)
            return
        if first_error is not None:
            half = len(recs) // 2
            await self._produce_split(st, recs[:half], codec, rep)
            await self._produce_split(st, recs[half:], codec, rep)
            return
        batch = records.build_batch(
            [(r.key, r.value, r.headers, r.timestamp) for r in recs], compression=codec
        )
        for attempt in range(MAX_RETRIES):
            try:
                resp = (await self.target.produce(st.topic, {st.partition: batch}))[st.partition]
            except (ConnectionError, KafkaClientError) as e:
                if attempt + 1 == MAX_RETRIES:
                    raise MirrorError(f"{st.key}: produce failed: {e}") from e
                await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
                with contextlib.suppress(ConnectionError, KafkaClientError, OSError):
                    await self.target.refresh_metadata([st.topic])
                continue
            w = Written(base_offset=resp.base_offset, throttle_ms=resp.throttle_time_ms)
            if resp.error_code == 0:
                rep.account(w, len(batch), len(recs))
                if resp.base_offset != st.next_target:
                    self.result.warn(
                        f"{st.key}: the target placed records at {resp.base_offset}, expected "
                        f"{st.next_target}: something else writes to this partition"
                    )
                st.record([r.offset for r in recs], resp.base_offset)
                self._dirty = True
                self._copied_now += len(recs)
                return
            if resp.error_code in RETRIABLE:
                await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
                await self.target.refresh_metadata([st.topic])
                continue
            rep.account(Written(throttle_ms=resp.throttle_time_ms, error="x"), 0, 0)
            name = error_name(resp.error_code)
            if len(recs) > 1:  # find the record the target refuses
                half = len(recs) // 2
                await self._produce_split(st, recs[:half], codec, rep)
                await self._produce_split(st, recs[half:], codec, rep)
                return
            self._reject(st, recs[0], name, resp.error_message, rep)
            return
        raise MirrorError(f"{st.key}: produce kept failing with retriable errors")

    def _reject(
        self, st: PartitionState, r: records.Record, name: str, message: str | None, rep: TopicReport
    ) -> None:
        rep.rejections[name] = rep.rejections.get(name, 0) + 1
        example = f"{st.key} offset {r.offset}: {name} {message or ''}".strip()
        rep.rejection_examples.append(example)
        if not self.opts.skip_rejected:
            raise MirrorError(f"the target refused {example}")
        st.skipped += 1
        st.next_source = max(st.next_source, r.offset + 1)
        self._dirty = True

    # -------------------------------------------------------------- checkpoints and progress

    async def _checkpointer(self) -> None:
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL)
            self._flush()

    def _flush(self) -> None:
        if self._dirty and not self.exactly_once:
            self._dirty = False
            self.checkpoint.save()

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

    # -------------------------------------------------------------- lag

    def lag(self, key: str) -> int:
        """Offsets the source holds (up to its last stable offset) that the target does not (yet)."""
        f = self.feeds.get(key)
        st = self.checkpoint.partitions.get(key)
        if f is None or st is None or f.source_end < 0:
            return 0
        return max(0, f.source_end - st.next_source)

    async def refresh_ends(self) -> None:
        """Source end offsets of every mirrored partition (the fetches only see those they ask for)."""
        for t, n in list(self.topics.items()):
            try:
                ends = await self.source.list_offsets(t, list(range(n)), -1, isolation_level=READ_COMMITTED)
            except (KafkaClientError, ConnectionError, OSError) as e:
                log.debug("list offsets of %s: %s", t, e)
                continue
            for p, end in ends.items():
                f = self.feeds.get(f"{t}/{p}")
                if f is not None and end >= 0:
                    f.source_end = end

    # -------------------------------------------------------------- one pass or follow

    async def copy(self, topics: dict[str, int]) -> bool:
        """Copy every partition up to the source end offsets of now (or, following, until stopped); False when
        stopped early or failed."""
        goals: dict[str, int] = {}
        if not self.opts.follow:
            for t, n in topics.items():
                parts = list(range(n))
                for p, end in (
                    await self.source.list_offsets(t, parts, -1, isolation_level=READ_COMMITTED)
                ).items():
                    goals[f"{t}/{p}"] = end
            for key, f in self.feeds.items():
                f.goal = goals.get(key, f.fetch_pos)
                f.source_end = goals.get(key, -1)
        states = [self.checkpoint.partitions[k] for k in self.feeds]
        self._started = time.monotonic()
        total = sum(max(0, goals.get(s.key, 0) - s.next_source) for s in states)
        background: list[asyncio.Task[Any]] = [asyncio.create_task(self._checkpointer())]
        if self.opts.follow:
            background.append(asyncio.create_task(follow_display(self)))
            background.append(asyncio.create_task(self._watch_loop()))
            background.append(asyncio.create_task(self.telemetry.history_loop()))
            if self.opts.translate_groups and self.opts.group_interval > 0:
                background.append(asyncio.create_task(self.groupsync.loop()))
        else:
            self._progress = Progress("mirror", total, enabled=self.opts.progress)
            background.append(asyncio.create_task(self._progress_loop(total)))
        fetcher = asyncio.create_task(self._fetch_loop())
        writer = asyncio.create_task(self._write_loop())
        self.ready.set()
        error: BaseException | None = None
        try:
            done, _ = await asyncio.wait({fetcher, writer}, return_when=asyncio.FIRST_COMPLETED)
            if fetcher in done and fetcher.exception() is not None:
                error = fetcher.exception()
                self.stop.set()
            await writer
        except BaseException as e:
            error = error or e
        finally:
            for task in (fetcher, *background):
                task.cancel()
            for task in (fetcher, *background):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if not writer.done():
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await writer
            self._flush()
            if self._progress is not None:
                self._progress.done = self._copied_now
                self._progress.close(f"{human_count(self._copied_now)} records copied")
        if error is not None and self.producer is not None and self.producer.in_transaction:
            # Leave no transaction open: it would hold the target's last stable offset until it times out.
            with contextlib.suppress(KafkaClientError, ConnectionError, OSError):
                await self.producer.abort()
            self._pending.clear()
        if error is not None:
            if isinstance(error, MirrorError | KafkaClientError | ConnectionError | OSError):
                self.result.errors.append(str(error))
            else:
                raise error
        self.result.copied = self._copied_now
        if self.result.errors:
            return False
        if self.opts.follow:
            return False
        return not self.stop.is_set() and all(
            s.next_source >= goals[s.key] for s in states if self.feeds[s.key].paused_reason is None
        )

    async def _watch_loop(self) -> None:
        """Follow mode: new topics, partitions added, config changes; fresh source end offsets."""
        while True:
            await asyncio.sleep(self.opts.metadata_interval)
            try:
                await self.watch_once()
            except (KafkaClientError, ConnectionError, OSError) as e:
                self.telemetry.error("metadata")
                log.warning("following the source's metadata failed: %s", e)
            except MirrorError as e:
                self.result.warn(str(e))

    async def watch_once(self) -> None:
        meta = await self.source.refresh_metadata()
        names = [t["name"] for t in meta["topics"] if t["error_code"] == 0]
        chosen = self._selected(names)
        new_topics = {t: self.source.topics[t] for t in chosen if t not in self.topics}
        if new_topics:
            log.info("new topic(s) on the source: %s", ", ".join(sorted(new_topics)))
            await self._ensure_target_topics(new_topics)
            await self._init_states(new_topics)
            self.result.follow.setdefault("topics_added", []).extend(sorted(new_topics))
            self.result.topics = sorted(set(self.result.topics) | set(new_topics))
            self._space.set()
        for t in list(self.topics):
            n = self.source.topics.get(t, 0)
            if n > self.topics[t]:
                await self._partitions_added(t, n)
        await self._follow_configs()
        await self.refresh_ends()

    async def _partitions_added(self, topic: str, n: int) -> None:
        old = self.topics[topic]
        have = self.target_partitions.get(topic, 0)
        note = f"{topic}: the source grew from {old} to {n} partitions"
        if self.rest is None and have < n:
            assert self.target is not None
            planned = self._planned(topic)
            if self.opts.plan and (self.opts.plan.get("limits") or {}).get("partitions_immutable", False):
                # OCI streams keep their partitions: what the new partitions hold has nowhere to go.
                self.result.warn(
                    f"{note}; OCI streams cannot add partitions and the target has {have}: partitions "
                    f"{have}..{n - 1} are not mirrored (recreate the stream with more partitions)"
                )
                for p in range(old, n):
                    if p >= have:
                        f = Feed(topic, p, 0)
                        f.paused_reason = "no target partition"
                        self.feeds.setdefault(f"{topic}/{p}", f)
                self.topics[topic] = n
                del planned
                return
            res = await self.target.create_partitions({topic: n})
            code, msg = res.get(topic, (0, None))
            if code and code != ErrorCode.INVALID_PARTITIONS:
                self.result.warn(f"{note}; the target refused to follow: {error_name(code)} {msg or ''}")
                return
            for _ in range(50):
                await self.target.refresh_metadata([topic])
                if self.target.topics.get(topic, 0) >= n:
                    break
                await asyncio.sleep(0.1)
            self.target_partitions[topic] = self.target.topics.get(topic, 0)
        log.info("%s; mirroring the new ones from their beginning", note)
        self.result.follow.setdefault("partitions_added", []).append({"topic": topic, "from": old, "to": n})
        await self._init_topic(topic, list(range(old, n)))  # the others are being copied: leave them be
        self._space.set()

    async def _follow_configs(self) -> None:
        topics = list(self.topics)
        if not topics:
            return
        configs = await self.source.describe_topic_configs(topics)
        for t in topics:
            now = {k: v for k, v in (configs.get(t) or {}).items() if k in CARRIED_CONFIGS}
            before = self.topic_configs.get(t)
            if before is None:
                self.topic_configs[t] = now
                continue
            changed = {k: v for k, v in now.items() if before.get(k) != v}
            if not changed:
                continue
            self.topic_configs[t] = now
            mapped, notes = self.map_configs(t, changed)
            entry: dict[str, Any] = {"topic": t, "source": changed, "target": mapped, "notes": notes}
            if self.rest is not None:
                entry["applied"] = False
                entry["notes"].append("OCI streams keep their retention and limits: not applied")
            elif mapped:
                assert self.target is not None
                code, msg = await self.target.alter_topic_configs(t, dict(mapped))
                entry["applied"] = code == 0
                if code:
                    entry["notes"].append(f"the target refused: {error_name(code)} {msg or ''}".strip())
            else:
                entry["applied"] = False
            self.result.follow.setdefault("config_changes", []).append(entry)
            log.info("config change on %s: %s -> %s %s", t, changed, mapped, "; ".join(notes))

    # -------------------------------------------------------------- groups (one pass)

    def translate(self, topic: str, partition: int, offset: int) -> int | None:
        st = self.checkpoint.partitions.get(f"{topic}/{partition}")
        return st.translate(offset) if st is not None else None

    def translate_group_topic(self, topic: str, committed: dict[int, int]) -> dict[int, tuple[int, bool]]:
        """A group's committed offsets of one topic on the target: {target partition: (offset, exact)}."""
        if self.rest is None:
            out: dict[int, tuple[int, bool]] = {}
            for p, off in committed.items():
                got = self.translate(topic, p, off)
                if got is not None:
                    out[p] = (got, True)
            return out
        states = [s for s in self.checkpoint.partitions.values() if s.topic == topic]
        if any(committed.get(s.partition, s.start_source) > s.next_source for s in states):
            return {}
        ends = dict(self.checkpoint.spread_ends.get(topic, {}))
        return translate_spread(states, committed, ends)

    async def translate_groups(self, topics: dict[str, int]) -> None:
        """Commit every source group's offsets on the target, translated through the offset syncs."""
        report = await self.groupsync.sync_all(force=False)
        self.result.groups = report

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

    async def verify_partition(self, st: PartitionState, upto: int | None = None) -> dict[str, Any]:
        """Counts and checksums of the source records [start, upto) and of their copies on the target."""
        end_src = st.next_source if upto is None else min(upto, st.next_source)
        if self.rest is not None:
            return await self._verify_spread(self.rest, st, end_src)
        rng = st.target_range(end_src)
        assert rng is not None and self.target is not None
        src_n, src_h = await self._digest(self.source, st.topic, st.partition, st.start_source, end_src, None)
        tgt_n, tgt_h = await self._digest(self.target, st.topic, st.partition, rng[0], rng[1], None)
        return {
            "partition": st.key,
            "source_range": [st.start_source, end_src],
            "target_range": list(rng),
            "source_records": src_n,
            "target_records": tgt_n,
            "source_sha256": src_h,
            "target_sha256": tgt_h,
            "skipped": st.skipped,
            "equal": src_n == tgt_n and src_h == tgt_h,
        }

    async def _verify_spread(
        self, rest: OciStreamingTarget, st: PartitionState, end_src: int
    ) -> dict[str, Any]:
        """REST targets: each source record against the message at the target partition and offset it was
        placed at (keys and values: OCI Streaming keeps no headers and stamps its own times)."""
        src_h = hashlib.sha256()
        tgt_h = hashlib.sha256()
        where: dict[int, tuple[int, int]] = {}
        for src, q, tgt, n in st.spread:
            for i in range(n):
                if src + i < end_src:
                    where[src + i] = (q, tgt + i)
        src_n = 0
        offset = st.start_source
        wanted: dict[int, dict[int, int]] = {}
        while offset < end_src:
            got = await self.source.fetch(
                st.topic,
                st.partition,
                offset,
                max_bytes=self.opts.fetch_bytes,
                isolation_level=READ_COMMITTED,
            )
            if got.error_code:
                raise MirrorError(f"{st.key}: reading for verification: {error_name(got.error_code)}")
            recs, nxt, _ = committed_records(got.records, offset, got.aborted)
            for r in recs:
                if r.offset >= end_src:
                    break
                if r.offset not in where:
                    continue  # refused by the target (counted as skipped)
                q, tgt = where[r.offset]
                digest_record(src_h, r._replace(offset=0), with_headers=False, with_timestamp=False)
                wanted.setdefault(q, {})[tgt] = src_n
                src_n += 1
            if nxt <= offset:
                break
            offset = nxt
        # Read back the target messages in source order.
        by_pos: dict[int, records.Record] = {}
        for q, offs in wanted.items():
            todo = sorted(offs)
            i = 0
            while i < len(todo):
                msgs = await rest.read(st.topic, q, todo[i], limit=10_000)
                if not msgs:
                    break
                for off, k, v in msgs:
                    pos = offs.get(off)
                    if pos is not None:
                        by_pos[pos] = records.Record(0, 0, k, v, [])
                last = msgs[-1][0]
                while i < len(todo) and todo[i] <= last:
                    i += 1
        tgt_n = 0
        for pos in range(src_n):
            rec = by_pos.get(pos)
            if rec is None:
                continue
            digest_record(tgt_h, rec, with_headers=False, with_timestamp=False)
            tgt_n += 1
        return {
            "partition": st.key,
            "source_range": [st.start_source, end_src],
            "target_partitions": sorted(wanted),
            "source_records": src_n,
            "target_records": tgt_n,
            "source_sha256": src_h.hexdigest(),
            "target_sha256": tgt_h.hexdigest(),
            "skipped": st.skipped,
            "compared": "keys and values",
            "equal": src_n == tgt_n and src_h.hexdigest() == tgt_h.hexdigest(),
        }

    async def verify(self, topics: dict[str, int]) -> None:
        states = [
            self.checkpoint.partitions[f"{t}/{p}"]
            for t, n in topics.items()
            for p in range(n)
            if f"{t}/{p}" in self.checkpoint.partitions
        ]
        bar = Progress("verify", len(states), enabled=self.opts.progress)
        out = []
        for done, coro in enumerate(asyncio.as_completed([self.verify_partition(s) for s in states]), 1):
            out.append(await coro)
            bar.update(done, f"{done}/{len(states)} partitions")
        bar.close()
        out.sort(key=lambda v: (v["partition"].rsplit("/", 1)[0], int(v["partition"].rsplit("/", 1)[1])))
        self.result.verification = out

    # -------------------------------------------------------------- all of it

    def delivery(self) -> dict[str, Any]:
        if self.exactly_once:
            return {
                "mode": "exactly-once",
                "state": f"topic {self.state_topic} on the target (read_committed)",
                "transactional_id": f"kafkite-mirror-{self.name}",
                "commit_interval_ms": int(self.opts.commit_interval * 1000),
                "note": "consumers of the target see the copies once their transaction commits: read them "
                "with isolation.level=read_committed",
            }
        if self.rest is not None:
            return {
                "mode": "at-least-once",
                "state": f"checkpoint {self.checkpoint.path}",
                "window": f"after a crash, messages put in the last {CHECKPOINT_INTERVAL:.1f} s before it "
                "(the checkpoint interval) and the PutMessages request in flight are put again: OCI "
                "Streaming's REST API has no idempotence or transactions",
            }
        return {
            "mode": "at-least-once",
            "state": f"checkpoint {self.checkpoint.path}",
            "window": f"the checkpoint is written every {CHECKPOINT_INTERVAL:.1f} s; after a crash the "
            "records the target holds past it are compared with the next source records and counted as "
            "copied (the mirror must be the target partitions' only writer: a record of another writer stops "
            "it); a produce retried after its answer was lost may be written twice (up to "
            f"{human_bytes(self._batch_cap())} per partition, reported as a warning). Use --exactly-once for "
            "transactional writes",
        }

    async def setup(self) -> dict[str, int]:
        """Topics, target topics, sink and state: everything before copying."""
        topics = await self._topics()
        self.result.topics = sorted(topics)
        self.result.delivery = self.delivery()
        if not topics and not self.opts.follow:
            return topics
        if self.rest is not None:
            req = min(self.opts.request_bytes, REQUEST_BYTES)
            pace: dict[str, Pacer] = {}
            self.sink = RestSink(self.rest, request_bytes=req, pace=pace)
        elif self.exactly_once:
            await self._init_exactly_once()
        else:
            assert self.target is not None
            self.sink = KafkaSink(self.target)
        await self._ensure_target_topics(topics)
        await self._init_states(topics)
        if self.rest is not None and self.honour_limits:
            assert isinstance(self.sink, RestSink)
            rate = float(self._limits.get("write_bytes_per_sec_per_partition") or 0)
            for t in topics:
                if rate > 0:
                    parts = max(1, self.target_partitions.get(t, 1))
                    self.sink.pace[t] = Pacer(0.9 * rate * parts, burst=0.5)
        self._flush()
        return topics

    async def run(self) -> MirrorResult:
        topics = await self.setup()
        if not topics and not self.opts.follow:
            self.result.errors.append("no topic to mirror")
            return self.result
        await self.telemetry.start()
        try:
            done = await self.copy(topics)
        finally:
            await self.telemetry.stop()
        self.result.replay = [r.as_json() for r in self._reports.values()]
        if self.opts.follow:
            self.result.follow.update(self.telemetry.summary())
            if self.opts.translate_groups and not self.result.errors:
                with contextlib.suppress(KafkaClientError, ConnectionError, OSError):
                    self.result.groups = await self.groupsync.sync_all(force=False)
            self.result.interrupted = not self.result.errors
            return self.result
        if not done:
            self.result.interrupted = self.stop.is_set()
            return self.result
        if self.opts.translate_groups:
            await self.translate_groups(topics)
        if self.opts.verify:
            await self.verify(topics)
        self.result.completed = True
        return self.result


def _ranges(offsets: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs of offsets: [(first, count)]."""
    out: list[tuple[int, int]] = []
    for off in offsets:
        if out and out[-1][0] + out[-1][1] == off:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((off, 1))
    return out


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
    if result.follow:
        state = "stopped" if not result.errors else "failed"
        lines.append(
            f"mirror {state}: {result.copied} record(s) copied this run over {len(result.topics)} topic(s)"
        )
    else:
        state = "complete" if result.completed else ("interrupted" if result.interrupted else "failed")
        lines.append(
            f"mirror {state}: {result.copied} record(s) copied this run over {len(result.topics)} topic(s)"
        )
    d = result.delivery
    if d:
        lines.append(f"  delivery: {d.get('mode')}; state in {d.get('state')}")
        if d.get("window"):
            lines.append(f"  at-least-once window: {d['window']}")
    for t in result.created_topics:
        lines.append(f"  created {t} on the target")
    for t in result.follow.get("topics_added", []):
        lines.append(f"  followed new topic {t}")
    for pa in result.follow.get("partitions_added", []):
        lines.append(f"  followed {pa['topic']} from {pa['from']} to {pa['to']} partitions")
    for c in result.follow.get("config_changes", []):
        lines.append(
            f"  config change {c['topic']}: {c['source']} -> {c['target']}"
            + (" applied" if c.get("applied") else " not applied")
            + (f" ({'; '.join(c['notes'])})" if c.get("notes") else "")
        )
    for r in result.replay:
        if r["replay_bytes_per_sec"] or r["throttled_requests"] or r["rejections"]:
            lines.append(
                f"  {r['topic']}: replayed at {human_bytes(r['replay_bytes_per_sec'])}/s, achieved "
                f"{human_bytes(r['achieved_bytes_per_sec'])}/s; throttled {r['throttled_requests']}/"
                f"{r['requests']} request(s), {r['throttle_ms_total']} ms in all "
                f"(max {r['throttle_ms_max']} ms)"
                + (f"; rejected {r['rejections']}" if r["rejections"] else "")
            )
    translated = sum(len(g.get("translated", {})) for g in result.groups)
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
