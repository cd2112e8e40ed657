"""The broker's collector: gauges computed from its state at scrape time (partitions, consumer groups).

Nothing here is maintained per append: a scrape walks the catalogue, asks each partition for its offsets
and size, and compares each group's committed offsets with the partitions' end offsets.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from kafkite.metrics.registry import Collected

_START = time.time()


def group_lag_rows(broker: Any) -> list[dict[str, Any]]:
    """One row per committed offset of every group: group, topic, partition, committed, end offset, lag."""
    coord = getattr(broker, "groups", None)
    if coord is None:
        return []
    rows = []
    for g in coord.groups_overview():
        gid = g["group_id"]
        for (topic, index), om in sorted(coord.committed_offsets(gid).items()):
            part = broker.partition(topic, index)
            end = part.high_watermark if part is not None else -1
            lag = max(0, end - om.offset) if end >= 0 and om.offset >= 0 else None
            rows.append(
                {
                    "group": gid,
                    "state": g["state"],
                    "topic": topic,
                    "partition": index,
                    "committed_offset": om.offset,
                    "log_end_offset": end,
                    "lag": lag,
                }
            )
    return rows


def collect_broker(broker: Any, metrics: Any) -> Iterator[Collected]:
    up = Collected("kafkite_uptime_seconds", "Seconds since the broker process started")
    up.add(time.time() - _START)
    yield up

    topics = Collected("kafkite_topics", "Topics in the catalogue")
    size = Collected("kafkite_partition_size_bytes", "Bytes held by a partition's log")
    start = Collected("kafkite_partition_log_start_offset", "First offset still held by a partition")
    end = Collected("kafkite_partition_log_end_offset", "Offset the next record appended to a partition gets")
    hw = Collected("kafkite_partition_high_watermark", "Last committed offset + 1 of a partition")
    unflushed = Collected("kafkite_partition_unflushed_messages", "Records appended but not yet fsynced")
    catalogue = broker.topics()
    topics.add(len(catalogue))
    for name, meta in sorted(catalogue.items()):
        for i in range(meta.partitions):
            p = broker.partition(name, i)
            if p is None:
                continue
            try:
                size.add(p.size_bytes, topic=name, partition=i)
                start.add(p.log_start_offset, topic=name, partition=i)
                end.add(p.log_end_offset, topic=name, partition=i)
                hw.add(p.high_watermark, topic=name, partition=i)
                unflushed.add(p.unflushed_messages, topic=name, partition=i)
            except Exception:  # a partition deleted while the scrape runs
                continue
    yield from (topics, size, start, end, hw, unflushed)

    io = broker.storage.io_stats()
    files = io.pop("files", None)
    backlog = Collected("kafkite_log_writer_backlog_bytes", "Bytes of appends queued for a log writer thread")
    jobs = Collected("kafkite_log_writer_jobs_total", "Jobs (appends, rolls, retention...) a log writer ran")
    for name, w in sorted(io.items()):
        backlog.add(w["backlog_bytes"], writer=name)
        jobs.add(w["jobs"], writer=name)
    yield from (backlog, jobs)
    if files is not None:
        open_files = Collected(
            "kafkite_log_open_files", "Segment files held open (log.open.files.max at most)"
        )
        open_files.add(files["open"])
        yield open_files

    members = Collected("kafkite_group_members", "Members of a consumer group")
    state = Collected("kafkite_group_state", "1 for the state a consumer group is in")
    epoch = Collected(
        "kafkite_group_epoch", "Generation of a classic group, group epoch of a consumer-protocol group"
    )
    assignment_epoch = Collected(
        "kafkite_group_assignment_epoch", "Epoch of a consumer-protocol group's target assignment"
    )
    member_epoch = Collected("kafkite_group_member_epoch", "Epoch of a member of a consumer-protocol group")
    committed = Collected("kafkite_group_committed_offset", "A consumer group's committed offset")
    lag = Collected("kafkite_group_lag", "Log end offset minus the group's committed offset")
    coord = getattr(broker, "groups", None)
    if coord is not None:
        for g in coord.groups_overview():
            kind = g.get("group_type", "classic")
            members.add(g["members"], group=g["group_id"])
            state.add(1, group=g["group_id"], state=g["state"])
            epoch.add(g["generation_id"], group=g["group_id"], type=kind)
            if kind == "consumer":
                assignment_epoch.add(g.get("assignment_epoch", 0), group=g["group_id"])
                described = coord.describe(g["group_id"]) or {"members": []}
                for m in described["members"]:
                    member_epoch.add(m["member_epoch"], group=g["group_id"], member=m["member_id"])
        for row in group_lag_rows(broker):
            labels = {"group": row["group"], "topic": row["topic"], "partition": row["partition"]}
            committed.add(row["committed_offset"], **labels)
            if row["lag"] is not None:
                lag.add(row["lag"], **labels)
    yield from (members, state, epoch, assignment_epoch, member_epoch, committed, lag)

    yield from _share_partitions(broker)


SHARE_COUNTERS = {
    "acquired": "Records a share group acquired for its consumers (each delivery counts)",
    "accepted": "Records a share group's consumers accepted",
    "released": "Records a share group's consumers released for redelivery",
    "rejected": "Records a share group's consumers rejected",
    "archived": "Records archived: rejected, delivered the limit number of times, or of aborted transactions",
    "dead_lettered": "Records written to a share group's dead-letter topic",
    "lock_expiries": "Acquired records whose acquisition lock lapsed before they were acknowledged",
}


def _share_partitions(broker: Any) -> Iterator[Collected]:
    """Share groups' share-partitions: what happened to their records, and their windows now."""
    store = getattr(getattr(broker, "groups", None), "share_store", None)
    if store is None:
        return
    counters = {
        k: Collected(f"kafkite_share_records_{k}_total", doc, kind="counter")
        for k, doc in SHARE_COUNTERS.items()
    }
    records = Collected(
        "kafkite_share_partition_records",
        "Records of a share-partition's window by state (in_flight, available, archiving)",
    )
    start = Collected("kafkite_share_partition_start_offset", "The share-partition start offset (SPSO)")
    lag = Collected("kafkite_share_partition_lag", "Records of a share-partition not yet delivered complete")
    by_count = Collected(
        "kafkite_share_partition_delivery_count_records",
        "Records of a share-partition's window by delivery count",
    )
    failures = Collected(
        "kafkite_share_dead_letter_failures_total",
        "Dead records archived without a dead letter (the dead-letter topic could not be used)",
        kind="counter",
    )
    failures.add(store.dlq_failures)
    for gid in sorted({k[0] for k in store.partitions}):
        for row in store.describe_group(gid):
            labels = {"group": gid, "topic": row["topic"], "partition": row["partition"]}
            for k, fam in counters.items():
                fam.add(row[k], **labels)
            for kind in ("in_flight", "available", "archiving"):
                records.add(row[kind], state=kind, **labels)
            start.add(row["start_offset"], **labels)
            if row["lag"] is not None:
                lag.add(row["lag"], **labels)
            for count, n in row["delivery_counts"].items():
                by_count.add(n, delivery_count=count, **labels)
    yield from counters.values()
    yield from (records, start, lag, by_count, failures)


def register_collectors(metrics: Any, broker: Any) -> None:
    metrics.registry.add_collector(lambda: collect_broker(broker, metrics))
