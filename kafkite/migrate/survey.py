"""What a source cluster holds and does: topics, configs, groups, a tail sample of messages, and rates.

``inspect_cluster`` uses only Kafka APIs every broker has (Metadata, DescribeConfigs, ListOffsets, Fetch,
ListGroups, DescribeGroups, OffsetFetch), plus DescribeProducers and ListTransactions when both sides speak
them. Rates come from two snapshots ``window`` seconds apart: produce rates from end-offset deltas, consume
rates from the movement of committed offsets; bytes per message come from the tail sample (record batches as
they are on the wire, so compression counts as the broker sees it).
"""

from __future__ import annotations

import asyncio
import fnmatch
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from kafkite.client import KafkaClient, KafkaClientError
from kafkite.clock import now_ms
from kafkite.migrate.progress import Progress, human_bytes
from kafkite.protocol import records
from kafkite.protocol.api_keys import ApiKey

DEFAULT_SAMPLE_RECORDS = 500
DEFAULT_SAMPLE_BYTES = 8 * 1024 * 1024
POLL_INTERVAL = 0.5


@dataclass
class Sample:
    """The tail of one partition, sizes and producer traits only (no content is kept)."""

    records: int = 0
    batches: int = 0
    batch_bytes: int = 0
    max_record_bytes: int = 0
    record_bytes: int = 0
    transactional_batches: int = 0
    control_batches: int = 0
    idempotent_batches: int = 0
    producer_ids: list[int] = field(default_factory=list)
    transactional_producer_ids: list[int] = field(default_factory=list)
    codecs: list[int] = field(default_factory=list)

    @property
    def wire_bytes_per_record(self) -> float:
        return self.batch_bytes / self.records if self.records else 0.0

    def merge(self, other: Sample) -> None:
        self.records += other.records
        self.batches += other.batches
        self.batch_bytes += other.batch_bytes
        self.max_record_bytes = max(self.max_record_bytes, other.max_record_bytes)
        self.record_bytes += other.record_bytes
        self.transactional_batches += other.transactional_batches
        self.control_batches += other.control_batches
        self.idempotent_batches += other.idempotent_batches
        self.producer_ids = sorted(set(self.producer_ids) | set(other.producer_ids))
        self.transactional_producer_ids = sorted(
            set(self.transactional_producer_ids) | set(other.transactional_producer_ids)
        )
        self.codecs = sorted(set(self.codecs) | set(other.codecs))


@dataclass
class PartitionInfo:
    partition: int
    start_offset: int
    end_offset: int
    write_msgs_per_sec: float = 0.0
    write_bytes_per_sec: float = 0.0
    read_bytes_per_sec: float = 0.0  # every group together
    sample: Sample = field(default_factory=Sample)


@dataclass
class TopicInfo:
    name: str
    partitions: list[PartitionInfo]
    configs: dict[str, str | None]

    @property
    def messages(self) -> int:
        return sum(p.end_offset - p.start_offset for p in self.partitions)

    @property
    def write_bytes_per_sec(self) -> float:
        return sum(p.write_bytes_per_sec for p in self.partitions)

    @property
    def write_msgs_per_sec(self) -> float:
        return sum(p.write_msgs_per_sec for p in self.partitions)

    @property
    def read_bytes_per_sec(self) -> float:
        return sum(p.read_bytes_per_sec for p in self.partitions)

    def sample(self) -> Sample:
        out = Sample()
        for p in self.partitions:
            out.merge(p.sample)
        return out


@dataclass
class GroupInfo:
    group_id: str
    state: str
    protocol_type: str
    members: int
    committed: dict[str, dict[int, int]]  # topic -> partition -> committed offset
    lag: dict[str, int]  # topic -> total lag
    read_msgs_per_sec: dict[str, float]  # topic -> committed-offset movement


@dataclass
class Inventory:
    source: str
    cluster_id: str | None
    taken_at_ms: int
    window_seconds: float
    topics: list[TopicInfo]
    groups: list[GroupInfo]
    transactions: list[dict[str, Any]] | None = None  # ListTransactions, when the source answers it
    active_producers: dict[str, list[dict[str, Any]]] | None = None  # DescribeProducers per topic
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def select_topics(all_topics: list[str], patterns: list[str] | None, internal: set[str]) -> list[str]:
    """Topics matching any glob in ``patterns`` (all when none), internal and ``__`` topics only if named."""
    out = []
    for t in sorted(all_topics):
        hidden = t in internal or t.startswith("__")
        if patterns:
            if any(t == p for p in patterns) or (
                not hidden and any(fnmatch.fnmatchcase(t, p) for p in patterns)
            ):
                out.append(t)
        elif not hidden:
            out.append(t)
    return out


def sample_batches(data: bytes, from_offset: int, sample: Sample, producer_ids: set[int]) -> int:
    """Account the batches of ``data`` at or after ``from_offset``; returns the next offset to read."""
    next_offset = from_offset
    for pos, h in records.iter_headers(data):
        next_offset = max(next_offset, h.last_offset + 1)
        if h.last_offset < from_offset:
            continue
        sample.batches += 1
        sample.batch_bytes += h.size
        if h.compression not in sample.codecs:
            sample.codecs.append(h.compression)
        if h.producer_id >= 0:
            producer_ids.add(h.producer_id)
            if h.is_transactional:
                if h.producer_id not in sample.transactional_producer_ids:
                    sample.transactional_producer_ids.append(h.producer_id)
            else:
                sample.idempotent_batches += 1
        if h.is_transactional:
            sample.transactional_batches += 1
        if h.is_control:
            sample.control_batches += 1
            continue
        for r in records.iter_records(data, pos, h):
            size = len(r.key or b"") + len(r.value or b"") + sum(len(k) + len(v or b"") for k, v in r.headers)
            sample.records += 1
            sample.record_bytes += size
            sample.max_record_bytes = max(sample.max_record_bytes, size)
    return next_offset


async def sample_partition(
    client: KafkaClient, topic: str, p: PartitionInfo, max_records: int, max_bytes: int
) -> None:
    """Read the last ``max_records`` records (at most ``max_bytes``) of a partition, keeping sizes only."""
    offset = max(p.start_offset, p.end_offset - max_records)
    end = p.end_offset
    pids: set[int] = set()
    budget = max_bytes
    while offset < end and budget > 0:
        got = await client.fetch(topic, p.partition, offset, max_bytes=min(budget, 4 * 1024 * 1024))
        if got.error_code or not got.records:
            break
        nxt = sample_batches(got.records, offset, p.sample, pids)
        budget -= len(got.records)
        if nxt <= offset:
            break
        offset = nxt
    p.sample.producer_ids = sorted(pids)
    p.sample.transactional_producer_ids.sort()
    p.sample.codecs.sort()


async def _end_offsets(client: KafkaClient, topics: dict[str, int]) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for t, n in topics.items():
        for p, off in (await client.list_offsets(t, list(range(n)), -1)).items():
            out[(t, p)] = off
    return out


async def _all_committed(
    client: KafkaClient, groups: list[str], topics: set[str]
) -> dict[str, dict[tuple[str, int], int]]:
    out: dict[str, dict[tuple[str, int], int]] = {}
    for g in groups:
        try:
            committed = await client.committed_offsets(g)
        except KafkaClientError:
            continue
        out[g] = {k: off for k, (off, _) in committed.items() if k[0] in topics}
    return out


async def _optional_transactions(client: KafkaClient, inv: Inventory, topics: dict[str, int]) -> None:
    """ListTransactions and DescribeProducers, when both this client and the source speak them."""
    conn = await client.any_connection()
    if conn.supports(ApiKey.LIST_TRANSACTIONS):
        try:
            resp = await client.request(
                ApiKey.LIST_TRANSACTIONS,
                {"state_filters": [], "producer_id_filters": [], "duration_filter": -1},
            )
            inv.transactions = [dict(t) for t in resp.get("transaction_states", [])]
        except (KafkaClientError, KeyError, ValueError) as e:
            inv.notes.append(f"ListTransactions failed: {e}")
    else:
        inv.notes.append(
            "ListTransactions not available: transactions detected from the sampled batches only"
        )
    if conn.supports(ApiKey.DESCRIBE_PRODUCERS):
        inv.active_producers = {}
        for t, n in topics.items():
            try:
                resp = await client.request(
                    ApiKey.DESCRIBE_PRODUCERS, {"topics": [{"name": t, "partition_indexes": list(range(n))}]}
                )
            except (KafkaClientError, KeyError, ValueError) as e:
                inv.notes.append(f"DescribeProducers {t} failed: {e}")
                continue
            found = []
            for rt in resp.get("topics", []):
                for rp in rt.get("partitions", []):
                    for ap in rp.get("active_producers", []):
                        found.append({"partition": rp["partition_index"], **dict(ap)})
            inv.active_producers[t] = found
    else:
        inv.notes.append("DescribeProducers not available: producers detected from the sampled batches only")


async def inspect_cluster(
    client: KafkaClient,
    *,
    source: str,
    topics: list[str] | None = None,
    window: float = 30.0,
    sample_records: int = DEFAULT_SAMPLE_RECORDS,
    sample_bytes: int = DEFAULT_SAMPLE_BYTES,
    progress: bool = True,
) -> Inventory:
    """Everything the planner needs from the cluster ``client`` is connected to."""
    meta = await client.refresh_metadata()
    names = select_topics(
        [t["name"] for t in meta["topics"] if t["error_code"] == 0], topics, client.internal_topics
    )
    counts = {t: client.topics[t] for t in names}
    configs = await client.describe_topic_configs(names)
    starts: dict[tuple[str, int], int] = {}
    for t, n in counts.items():
        for p, off in (await client.list_offsets(t, list(range(n)), -2)).items():
            starts[(t, p)] = off
    group_list = await client.list_groups()
    group_ids = [g["group_id"] for g in group_list]

    # The sampling window: two snapshots of end offsets and committed offsets.
    t0 = time.monotonic()
    ends0 = await _end_offsets(client, counts)
    committed0 = await _all_committed(client, group_ids, set(names))
    bar = Progress("sampling", window, enabled=progress)
    last_ends, last_t = ends0, t0
    note = ""
    while (elapsed := time.monotonic() - t0) < window:
        await asyncio.sleep(min(POLL_INTERVAL, max(0.0, window - elapsed)))
        now = time.monotonic()
        ends = await _end_offsets(client, counts)
        moved = sum(ends[k] - last_ends.get(k, ends[k]) for k in ends)
        note = f"{now - t0:4.1f}/{window:.0f}s  {moved / max(now - last_t, 1e-6):,.0f} msg/s produced"
        bar.update(now - t0, note)
        last_ends, last_t = ends, now
    ends1 = await _end_offsets(client, counts)
    committed1 = await _all_committed(client, group_ids, set(names))
    elapsed = max(time.monotonic() - t0, 1e-6)
    bar.update(window, note)
    bar.close()

    topic_infos: list[TopicInfo] = []
    for t in names:
        parts = [PartitionInfo(i, starts.get((t, i), 0), ends1.get((t, i), 0)) for i in range(counts[t])]
        for part in parts:
            await sample_partition(client, t, part, sample_records, sample_bytes)
        info = TopicInfo(t, parts, configs.get(t, {}))
        topic_sample = info.sample()
        for part in parts:
            per_record = part.sample.wire_bytes_per_record or topic_sample.wire_bytes_per_record
            key = (t, part.partition)
            msgs = max(0, ends1.get(key, 0) - ends0.get(key, 0)) / elapsed
            part.write_msgs_per_sec = msgs
            part.write_bytes_per_sec = msgs * per_record
        topic_infos.append(info)
    by_name = {t.name: t for t in topic_infos}

    group_infos: list[GroupInfo] = []
    for g in group_list:
        gid = g["group_id"]
        try:
            desc = await client.describe_group(gid)
            members, state = len(desc["members"]), desc["group_state"]
        except KafkaClientError:
            members, state = 0, g.get("group_state", "")
        c1 = committed1.get(gid, {})
        c0 = committed0.get(gid, {})
        committed: dict[str, dict[int, int]] = {}
        lag: dict[str, int] = {}
        rate: dict[str, float] = {}
        for (t, pi), off in sorted(c1.items()):
            committed.setdefault(t, {})[pi] = off
            lag[t] = lag.get(t, 0) + max(0, ends1.get((t, pi), off) - off)
            read_rate = max(0.0, (off - c0.get((t, pi), off)) / elapsed)
            rate[t] = rate.get(t, 0.0) + read_rate
            tinfo = by_name.get(t)
            if tinfo is not None and pi < len(tinfo.partitions):
                part = tinfo.partitions[pi]
                per_rec = part.sample.wire_bytes_per_record or tinfo.sample().wire_bytes_per_record
                part.read_bytes_per_sec += read_rate * per_rec
        group_infos.append(
            GroupInfo(
                gid, state or g.get("group_state", ""), g["protocol_type"], members, committed, lag, rate
            )
        )

    inv = Inventory(
        source=source,
        cluster_id=meta.get("cluster_id"),
        taken_at_ms=now_ms(),
        window_seconds=round(elapsed, 3),
        topics=topic_infos,
        groups=group_infos,
    )
    await _optional_transactions(client, inv, counts)
    return inv


def summary_line(inv: Inventory) -> str:
    total = sum(t.write_bytes_per_sec for t in inv.topics)
    return (
        f"{len(inv.topics)} topic(s), {len(inv.groups)} group(s), "
        f"{human_bytes(total)}/s produced over {inv.window_seconds:.1f}s"
    )
