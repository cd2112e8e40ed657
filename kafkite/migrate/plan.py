"""From what a cluster holds (``survey.Inventory``) to a migration plan: pools, streams, and every risk.

``make_plan`` is a pure function over the inventory and the limits in ``kafkite.migrate.limits``; the plan
is a JSON-able dict (``write_plan`` stores it next to its Markdown rendering). Partition counts follow the
observed rates: enough partitions that no partition is written faster than 1 MB/s nor read faster than
2 MB/s (times ``headroom``), and never fewer than the source had, since consumers and key placement depend
on them.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kafkite.migrate import limits
from kafkite.migrate.progress import human_bytes
from kafkite.migrate.survey import Inventory, TopicInfo

PLAN_KIND = "kafkite-migration-plan"
PLAN_VERSION = 1
HOUR_MS = 3_600_000
SEVERITIES = ("blocker", "high", "medium", "low", "info")

Json = dict[str, Any]


def finding(
    severity: str, code: str, message: str, fix: str, *, topic: str | None = None, group: str | None = None
) -> Json:
    assert severity in SEVERITIES
    return {
        "severity": severity,
        "code": code,
        "topic": topic,
        "group": group,
        "message": message,
        "fix": fix,
    }


def mb(n: float) -> str:
    return f"{n / limits.MB:.2f} MB"


def default_pool_name(inv: Inventory) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]", "-", inv.cluster_id or "kafka")
    return f"migrated-{base}"[:255]


def map_retention(retention_ms: int | None) -> tuple[int, str | None]:
    """(OCI retention hours, why it differs or None): a topic's retention clamped into 24-168 hours."""
    lo, hi = limits.RETENTION_MIN_HOURS, limits.RETENTION_MAX_HOURS
    if retention_ms is None:
        return lo, None
    if retention_ms < 0:
        return hi, "infinite"
    hours = math.ceil(retention_ms / HOUR_MS)
    if hours > hi:
        return hi, "reduced"
    if hours < lo:
        return lo, "increased"
    return hours, None


def partitions_for(rate: float, per_partition: float, headroom: float) -> int:
    if rate <= 0:
        return 1
    return max(1, math.ceil(rate * headroom / per_partition - 1e-9))


def _int_config(configs: dict[str, str | None], name: str) -> int | None:
    value = configs.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _stream(t: TopicInfo, pool: str, inv: Inventory, headroom: float, findings: list[Json]) -> Json:
    cfg = t.configs
    sample = t.sample()
    name = t.name
    src_parts = len(t.partitions)
    write = t.write_bytes_per_sec
    read = t.read_bytes_per_sec
    for_write = partitions_for(write, limits.WRITE_BYTES_PER_SEC, headroom)
    for_read = partitions_for(read, limits.READ_BYTES_PER_SEC, headroom)
    groups = [g for g in inv.groups if name in g.committed]
    busiest_group = max((g.read_msgs_per_sec.get(name, 0.0) for g in groups), default=0.0)
    per_group_partition = limits.GET_MESSAGES_PER_SEC * limits.GET_MESSAGES_MAX_RECORDS
    for_gets = partitions_for(busiest_group, per_group_partition, headroom)
    required = max(for_write, for_read, for_gets)
    partitions = max(src_parts, required)
    retention_ms = _int_config(cfg, "retention.ms")
    hours, why = map_retention(retention_ms)
    policy = (cfg.get("cleanup.policy") or "delete").lower()
    max_msg_cfg = _int_config(cfg, "max.message.bytes")
    hottest = max(t.partitions, key=lambda p: p.write_bytes_per_sec, default=None)
    txn_pids = set(sample.transactional_producer_ids)
    if inv.active_producers is not None:
        for ap in inv.active_producers.get(name, []):
            if int(ap.get("current_txn_start_offset", -1)) >= 0:
                txn_pids.add(int(ap.get("producer_id", -1)))

    # -- blockers and risks
    if "compact" in policy:
        findings.append(
            finding(
                "blocker",
                "COMPACTED_TOPIC",
                f"{name} uses cleanup.policy={policy}; OCI Streaming has no log compaction, so every update "
                f"would be kept until retention ({hours} h) and the latest value per key is not preserved",
                "keep the latest state per key elsewhere (a database, OCI NoSQL, a cache rebuilt from the "
                "stream), or have consumers treat the stream as a full change log; the stream is planned "
                "with delete retention",
                topic=name,
            )
        )
    if sample.max_record_bytes > limits.MESSAGE_BYTES:
        findings.append(
            finding(
                "blocker",
                "MESSAGE_TOO_LARGE",
                f"{name} holds messages of up to {human_bytes(sample.max_record_bytes)} in the sample; OCI "
                f"refuses messages over {human_bytes(limits.MESSAGE_BYTES)}",
                "store large payloads in Object Storage and send a reference (claim check), or split them "
                "into chunks under 1 MB",
                topic=name,
            )
        )
    elif max_msg_cfg is not None and max_msg_cfg > limits.MESSAGE_BYTES + 1024:
        findings.append(
            finding(
                "high",
                "MAX_MESSAGE_BYTES",
                f"{name} allows messages up to {human_bytes(max_msg_cfg)} (max.message.bytes); none larger "
                f"than {human_bytes(limits.MESSAGE_BYTES)} was sampled, but one would be refused",
                "cap producers at 1 MB (max.request.size) or move large payloads to Object Storage",
                topic=name,
            )
        )
    if sample.transactional_batches or txn_pids:
        findings.append(
            finding(
                "blocker",
                "TRANSACTIONS",
                f"{name} is written by transactional producers (producer ids "
                f"{', '.join(map(str, sorted(txn_pids))) or 'unknown'}); OCI Streaming has no transactions",
                "drop transactional.id and make consumers idempotent (deduplicate by key or business id); "
                "for exactly-once pipelines use an outbox table or idempotent sinks",
                topic=name,
            )
        )
    if sample.idempotent_batches:
        findings.append(
            finding(
                "high",
                "IDEMPOTENT_PRODUCER",
                f"{name} is written by idempotent producers (producer ids in the sample); OCI's Kafka API "
                "does not support idempotence, which Kafka clients enable by default since 3.0",
                "set enable.idempotence=false on every producer of this stream",
                topic=name,
            )
        )
    if len(groups) > limits.GROUPS_PER_STREAM:
        findings.append(
            finding(
                "blocker",
                "TOO_MANY_GROUPS",
                f"{name} is consumed by {len(groups)} consumer groups; OCI allows "
                f"{limits.GROUPS_PER_STREAM} per stream",
                "consolidate groups, or fan the topic out to "
                f"{math.ceil(len(groups) / limits.GROUPS_PER_STREAM)} streams with at most "
                f"{limits.GROUPS_PER_STREAM} groups each",
                topic=name,
            )
        )
    if required > src_parts:
        findings.append(
            finding(
                "high",
                "PARTITIONS_FOR_THROUGHPUT",
                f"{name} is written at {mb(write)}/s and read at {mb(read)}/s over {src_parts} partition(s), "
                f"its busiest group reading {busiest_group:,.0f} messages/s; OCI allows "
                f"{mb(limits.WRITE_BYTES_PER_SEC)}/s written, {mb(limits.READ_BYTES_PER_SEC)}/s read and "
                f"{limits.GET_MESSAGES_PER_SEC} GetMessages of up to {limits.GET_MESSAGES_MAX_RECORDS} "
                "messages per second per group per partition, so the stream needs {required} partitions",
                f"create the stream with {partitions} partitions; keyed messages will map to different "
                "partitions than on the source, so per-key order holds only for data written after cutover",
                topic=name,
            )
        )
    if hottest is not None and hottest.write_bytes_per_sec > limits.WRITE_BYTES_PER_SEC:
        findings.append(
            finding(
                "high",
                "HOT_PARTITION",
                f"partition {hottest.partition} of {name} alone is written at "
                f"{mb(hottest.write_bytes_per_sec)}/s, over OCI's {mb(limits.WRITE_BYTES_PER_SEC)}/s per "
                "partition: producers will be throttled",
                "spread the hot keys (add a key suffix, or partition by a finer key); more partitions do not "
                "help a single hot key",
                topic=name,
            )
        )
    findings.append(
        finding(
            "medium" if (write > 0 or groups) else "low",
            "PARTITIONS_FIXED",
            f"{name} gets {partitions} partitions, which cannot be changed after the stream is created",
            "size for the growth you expect (re-run the plan with --headroom) or plan to move to a new "
            "stream later",
            topic=name,
        )
    )
    if why == "reduced":
        findings.append(
            finding(
                "high",
                "RETENTION_REDUCED",
                f"{name} keeps data for {(retention_ms or 0) / HOUR_MS:.0f} h (retention.ms={retention_ms}); "
                f"OCI keeps at most {limits.RETENTION_MAX_HOURS} h",
                "archive older data to Object Storage (Connector Hub) or keep the source cluster for "
                f"history; the stream is planned with {hours} h",
                topic=name,
            )
        )
    elif why == "infinite":
        findings.append(
            finding(
                "high",
                "RETENTION_INFINITE",
                f"{name} keeps data forever (retention.ms=-1); OCI keeps at most "
                f"{limits.RETENTION_MAX_HOURS} h",
                "archive to Object Storage (Connector Hub) or move the history to a database; "
                f"the stream is planned with {hours} h",
                topic=name,
            )
        )
    elif why == "increased":
        findings.append(
            finding(
                "info",
                "RETENTION_INCREASED",
                f"{name} keeps data for {retention_ms or 0} ms; OCI keeps at least "
                f"{limits.RETENTION_MIN_HOURS} h",
                "nothing to do unless consumers rely on data disappearing sooner",
                topic=name,
            )
        )
    retention_bytes = _int_config(cfg, "retention.bytes")
    if retention_bytes is not None and retention_bytes > 0:
        findings.append(
            finding(
                "low",
                "SIZE_RETENTION",
                f"{name} limits its size to {human_bytes(retention_bytes)} (retention.bytes); OCI retains by "
                "time only",
                "nothing to do: OCI bills by retained data, check the expected size over the retention",
                topic=name,
            )
        )
    if (cfg.get("message.timestamp.type") or "").lower() == "logappendtime":
        findings.append(
            finding(
                "low",
                "LOG_APPEND_TIME",
                f"{name} stamps messages with the broker's append time; OCI keeps the producer's timestamp",
                "stamp messages in the producer if consumers depend on arrival time",
                topic=name,
            )
        )
    return {
        "name": name,
        "pool": pool,
        "source_topic": name,
        "source_partitions": src_parts,
        "partitions": partitions,
        "partitions_required": required,
        "partitions_for_write": for_write,
        "partitions_for_read": for_read,
        "partitions_for_get_messages": for_gets,
        "retention_hours": hours,
        "source_retention_ms": retention_ms,
        "cleanup_policy": policy,
        "max_message_bytes_config": max_msg_cfg,
        "messages": t.messages,
        "write_bytes_per_sec": round(write, 1),
        "write_msgs_per_sec": round(t.write_msgs_per_sec, 2),
        "max_partition_write_bytes_per_sec": round(hottest.write_bytes_per_sec if hottest else 0.0, 1),
        "read_bytes_per_sec": round(read, 1),
        "sample_records": sample.records,
        "max_record_bytes": sample.max_record_bytes,
        "avg_record_bytes": round(sample.record_bytes / sample.records, 1) if sample.records else 0,
        "wire_bytes_per_record": round(sample.wire_bytes_per_record, 1),
        "groups": len(groups),
        "transactional": bool(sample.transactional_batches or txn_pids),
        "idempotent": bool(sample.idempotent_batches),
        "compression_codecs": sample.codecs,
    }


def make_plan(inv: Inventory, *, pool: str | None = None, headroom: float = 1.0) -> Json:
    """The plan for ``inv``: pools, streams with partitions and retention, groups, findings."""
    pool_name = pool or default_pool_name(inv)
    findings: list[Json] = []
    streams = [_stream(t, pool_name, inv, headroom, findings) for t in inv.topics]
    groups = []
    for g in inv.groups:
        groups.append(
            {
                "group_id": g.group_id,
                "state": g.state,
                "protocol_type": g.protocol_type,
                "members": g.members,
                "topics": {
                    t: {
                        "committed": {str(p): off for p, off in sorted(parts.items())},
                        "lag": g.lag.get(t, 0),
                        "read_msgs_per_sec": round(g.read_msgs_per_sec.get(t, 0.0), 2),
                    }
                    for t, parts in sorted(g.committed.items())
                },
            }
        )
        if not g.committed:
            findings.append(
                finding(
                    "info",
                    "GROUP_WITHOUT_OFFSETS",
                    f"group {g.group_id} has no committed offsets on the planned topics",
                    "nothing to translate; it starts per its auto.offset.reset on the target",
                    group=g.group_id,
                )
            )
    if inv.transactions:
        ids = sorted({str(t.get("transactional_id")) for t in inv.transactions})
        findings.append(
            finding(
                "blocker",
                "TRANSACTIONAL_IDS",
                f"the source knows {len(ids)} transactional id(s) ({', '.join(ids[:10])}"
                f"{', ...' if len(ids) > 10 else ''}); OCI Streaming has no transactions",
                "remove transactional.id from these producers and make their consumers idempotent",
            )
        )
    total_partitions = sum(s["partitions"] for s in streams)
    if streams:
        findings.append(
            finding(
                "info",
                "TENANCY_PARTITIONS",
                f"the plan creates {len(streams)} stream(s) with {total_partitions} partition(s) in all",
                "check the tenancy's Streaming partition limit before applying (ask for an increase if "
                "needed)",
            )
        )
    order = {s: i for i, s in enumerate(SEVERITIES)}
    findings.sort(key=lambda f: (order[f["severity"]], f["topic"] or "", f["code"]))
    counts = {s: sum(1 for f in findings if f["severity"] == s) for s in SEVERITIES}
    return {
        "kind": PLAN_KIND,
        "version": PLAN_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": {
            "bootstrap": inv.source,
            "cluster_id": inv.cluster_id,
            "window_seconds": inv.window_seconds,
            "notes": inv.notes,
        },
        "limits": limits.as_dict(),
        "headroom": headroom,
        "pools": [
            {
                "name": pool_name,
                "kafka_settings": {
                    "autoCreateTopicsEnable": False,
                    "numPartitions": 1,
                    "logRetentionHours": limits.RETENTION_MIN_HOURS,
                },
                "streams": [s["name"] for s in streams],
            }
        ],
        "streams": streams,
        "groups": groups,
        "transactions": inv.transactions,
        "findings": findings,
        "summary": counts,
    }


# ---------------------------------------------------------------------------------------------- output


def _md_escape(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_md_escape(c) for c in r) + " |" for r in rows]
    return out


def render_markdown(plan: Json) -> str:
    src = plan["source"]
    s = plan["summary"]
    lines = [
        "# Migration plan: Kafka to OCI Streaming",
        "",
        f"Source `{src['bootstrap']}` (cluster {src['cluster_id'] or 'unknown'}), sampled over "
        f"{src['window_seconds']:.1f} s on {plan['created_at']}.",
        "",
        f"**{s['blocker']} blocker(s)**, {s['high']} high, {s['medium']} medium, {s['low']} low, "
        f"{s['info']} info.",
        "",
        "## Blockers and risks",
        "",
    ]
    lines += _table(
        ["Severity", "Code", "Topic / group", "What", "Fix"],
        [
            [f["severity"].upper(), f["code"], f["topic"] or f["group"] or "-", f["message"], f["fix"]]
            for f in plan["findings"]
        ],
    )
    lines += ["", "## Stream pools", ""]
    for p in plan["pools"]:
        ks = p["kafka_settings"]
        lines.append(
            f"- **{p['name']}**: {len(p['streams'])} stream(s); Kafka settings: auto-create "
            f"{str(ks['autoCreateTopicsEnable']).lower()}, default partitions {ks['numPartitions']}, default "
            f"retention {ks['logRetentionHours']} h"
        )
    lines += ["", "## Streams", ""]
    lines += _table(
        [
            "Stream",
            "Pool",
            "Partitions (source)",
            "Required for rates",
            "Retention h",
            "Write/s",
            "Read/s",
            "Messages",
            "Largest message",
            "Groups",
        ],
        [
            [
                st["name"],
                st["pool"],
                f"{st['partitions']} ({st['source_partitions']})",
                st["partitions_required"],
                st["retention_hours"],
                human_bytes(st["write_bytes_per_sec"]),
                human_bytes(st["read_bytes_per_sec"]),
                st["messages"],
                human_bytes(st["max_record_bytes"]),
                st["groups"],
            ]
            for st in plan["streams"]
        ],
    )
    lines += ["", "## Consumer groups", ""]
    rows = []
    for g in plan["groups"]:
        for t, info in g["topics"].items():
            rows.append([g["group_id"], g["state"], g["members"], t, info["lag"], info["read_msgs_per_sec"]])
        if not g["topics"]:
            rows.append([g["group_id"], g["state"], g["members"], "-", "-", "-"])
    lines += _table(["Group", "State", "Members", "Topic", "Lag", "Read msg/s"], rows) if rows else ["None."]
    lim = plan["limits"]
    lines += [
        "",
        "## OCI limits used",
        "",
        f"- {mb(lim['write_bytes_per_sec_per_partition'])}/s written and "
        f"{mb(lim['read_bytes_per_sec_per_partition'])}/s read per partition; "
        f"{lim['get_messages_per_sec_per_partition_per_group']} GetMessages per second per partition "
        "per group",
        f"- messages and requests up to {human_bytes(lim['max_message_bytes'])}; retention "
        f"{lim['retention_hours'][0]}-{lim['retention_hours'][1]} h; at most {lim['max_groups_per_stream']} "
        "groups per stream; partitions fixed at creation",
        f"- partitions sized with headroom x{plan['headroom']}",
        f"- source: {lim['source']}",
    ]
    if src.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in src["notes"]]
    return "\n".join(lines) + "\n"


def write_plan(plan: Json, prefix: str | Path) -> tuple[Path, Path]:
    """``PREFIX.json`` and ``PREFIX.md``."""
    prefix = Path(prefix)
    if prefix.suffix in (".json", ".md"):
        prefix = prefix.with_suffix("")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    js = prefix.with_name(prefix.name + ".json")
    md = prefix.with_name(prefix.name + ".md")
    js.write_text(json.dumps(plan, indent=2) + "\n")
    md.write_text(render_markdown(plan))
    return js, md


def load_plan(path: str | Path) -> Json:
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or data.get("kind") != PLAN_KIND:
        raise ValueError(f"{path} is not a kafkite migration plan (JSON from `kafkite migrate plan`)")
    return data
