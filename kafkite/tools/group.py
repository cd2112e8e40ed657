"""``kafkite group list | describe``: consumer and share groups, their members, committed offsets and lag.

Works against any Kafka-compatible broker, like kafka-consumer-groups.sh and kafka-share-groups.sh. A share
group is described with its members, their assigned partitions, and each share-partition's start offset and
lag (DescribeShareGroupOffsets); the Kafka protocol carries no in-flight counts, so with ``--metrics`` (a
kafkite broker's metrics listener) each share-partition's in-flight, available and archiving records, their
delivery counts and what happened to its records are read from the broker's metrics too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import sys
from typing import TYPE_CHECKING, Any

from kafkite.client import KafkaClient, KafkaClientError

if TYPE_CHECKING:
    from kafkite.tools import Subcommands


def decode_assignment(data: bytes | memoryview | None) -> list[tuple[str, list[int]]]:
    """ConsumerProtocolAssignment (any version): the topic partitions of a member."""
    if not data:
        return []
    buf = bytes(data)
    try:
        pos = 2  # version
        (n,) = struct.unpack_from(">i", buf, pos)
        pos += 4
        out = []
        for _ in range(max(n, 0)):
            (ln,) = struct.unpack_from(">h", buf, pos)
            pos += 2
            topic = buf[pos : pos + ln].decode()
            pos += ln
            (np,) = struct.unpack_from(">i", buf, pos)
            pos += 4
            parts = list(struct.unpack_from(f">{max(np, 0)}i", buf, pos))
            pos += 4 * max(np, 0)
            out.append((topic, parts))
        return out
    except (struct.error, UnicodeDecodeError):
        return []


async def list_groups(bootstrap: str) -> list[dict[str, Any]]:
    async with KafkaClient(bootstrap) as client:
        return [
            {
                "group": g["group_id"],
                "type": g.get("group_type") or "classic",
                "protocol_type": g["protocol_type"],
                "state": g["group_state"],
            }
            for g in await client.list_groups()
        ]


async def describe_share_group(client: KafkaClient, group: str, share: dict[str, Any]) -> dict[str, Any]:
    members = []
    owners: dict[tuple[str, int], list[str]] = {}
    for m in share["members"]:
        assignment = [(t["topic_name"], sorted(t["partitions"])) for t in m["assignment"]["topic_partitions"]]
        members.append(
            {
                "member_id": m["member_id"],
                "client_id": m["client_id"],
                "host": m["client_host"],
                "rack_id": m.get("rack_id"),
                "member_epoch": m["member_epoch"],
                "subscribed_topics": list(m["subscribed_topic_names"]),
                "assignment": [{"topic": t, "partitions": ps} for t, ps in assignment],
            }
        )
        for t, ps in assignment:
            for p in ps:
                owners.setdefault((t, p), []).append(m["member_id"])
    offsets = await client.share_group_offsets(group)
    keys = set(offsets) | set(owners)
    rows = []
    for t, p in sorted(keys):
        start, lag = offsets.get((t, p), (-1, -1))
        rows.append(
            {
                "topic": t,
                "partition": p,
                "start_offset": start if start >= 0 else None,
                "lag": lag if lag >= 0 else None,
                "members": owners.get((t, p), []),
            }
        )
    return {
        "group": group,
        "type": "share",
        "state": share["group_state"],
        "protocol_type": "share",
        "protocol": share["assignor_name"],
        "group_epoch": share["group_epoch"],
        "assignment_epoch": share["assignment_epoch"],
        "members": members,
        "partitions": rows,
    }


def share_metrics(url: str, group: str) -> dict[tuple[str, int], dict[str, Any]]:
    """A kafkite broker's share-partition metrics of ``group`` (its metrics listener, Prometheus text)."""
    import re
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    line = re.compile(r"^(kafkite_share_[a-z_]+)\{([^}]*)\} (\S+)$")
    label = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for raw in text.splitlines():
        m = line.match(raw)
        if m is None:
            continue
        labels = dict(label.findall(m.group(2)))
        if labels.get("group") != group:
            continue
        row = out.setdefault((labels["topic"], int(labels["partition"])), {"delivery_counts": {}})
        name, value = m.group(1), int(float(m.group(3)))
        if name == "kafkite_share_partition_records":
            row[labels["state"]] = value
        elif name == "kafkite_share_partition_delivery_count_records":
            row["delivery_counts"][labels["delivery_count"]] = value
        elif name.startswith("kafkite_share_records_") and name.endswith("_total"):
            row[name[len("kafkite_share_records_") : -len("_total")]] = value
    return out


async def describe_group(bootstrap: str, group: str, metrics_url: str | None = None) -> dict[str, Any]:
    async with KafkaClient(bootstrap) as client:
        share = await client.describe_share_group(group)
        if share is not None:
            described = await describe_share_group(client, group, share)
            if metrics_url:
                found = share_metrics(metrics_url, group)
                for row in described["partitions"]:
                    row.update(found.get((row["topic"], row["partition"]), {}))
            return described
        owners: dict[tuple[str, int], dict[str, Any]] = {}
        members = []
        consumer = await client.describe_consumer_group(group)
        if consumer is not None:
            # A group of the consumer protocol (KIP-848): ConsumerGroupDescribe, as kafka-consumer-groups.sh.
            g: dict[str, Any] = {
                "group_state": consumer["group_state"],
                "protocol_type": "consumer",
                "protocol_data": consumer["assignor_name"],
            }
            for m in consumer["members"]:
                assignment = [
                    (t["topic_name"], sorted(t["partitions"])) for t in m["assignment"]["topic_partitions"]
                ]
                members.append(
                    {
                        "member_id": m["member_id"],
                        "group_instance_id": m.get("instance_id"),
                        "client_id": m["client_id"],
                        "host": m["client_host"],
                        "member_epoch": m["member_epoch"],
                        "protocol": "classic" if m.get("member_type") == 0 else "consumer",
                        "assignment": [{"topic": t, "partitions": ps} for t, ps in assignment],
                    }
                )
                row = {
                    "member_id": m["member_id"],
                    "client_host": m["client_host"],
                    "client_id": m["client_id"],
                }
                for t, ps in assignment:
                    for p in ps:
                        owners[(t, p)] = row
        else:
            g = await client.describe_group(group)
            for m in g["members"]:
                assignment = (
                    decode_assignment(m["member_assignment"]) if g["protocol_type"] == "consumer" else []
                )
                members.append(
                    {
                        "member_id": m["member_id"],
                        "group_instance_id": m.get("group_instance_id"),
                        "client_id": m["client_id"],
                        "host": m["client_host"],
                        "assignment": [{"topic": t, "partitions": ps} for t, ps in assignment],
                    }
                )
                for t, ps in assignment:
                    for p in ps:
                        owners[(t, p)] = m
        committed = await client.committed_offsets(group)
        keys = set(committed) | set(owners)
        await client.refresh_metadata(sorted({t for t, _ in keys}) or None)
        ends: dict[tuple[str, int], int] = {}
        for topic in sorted({t for t, _ in keys}):
            parts = sorted(p for t, p in keys if t == topic)
            for p, off in (await client.list_offsets(topic, parts, -1)).items():
                ends[(topic, p)] = off
        rows = []
        for t, p in sorted(keys):
            off, meta = committed.get((t, p), (-1, None))
            end = ends.get((t, p), -1)
            owner = owners.get((t, p))
            rows.append(
                {
                    "topic": t,
                    "partition": p,
                    "committed_offset": off if off >= 0 else None,
                    "metadata": meta,
                    "log_end_offset": end,
                    "lag": end - off if off >= 0 and end >= 0 else None,
                    "member_id": owner["member_id"] if owner else None,
                    "host": owner["client_host"] if owner else None,
                    "client_id": owner["client_id"] if owner else None,
                }
            )
        out = {
            "group": group,
            "type": "consumer" if consumer is not None else "classic",
            "state": g["group_state"],
            "protocol_type": g["protocol_type"],
            "protocol": g["protocol_data"],
            "members": members,
            "partitions": rows,
        }
        if consumer is not None:
            out["group_epoch"] = consumer["group_epoch"]
            out["assignment_epoch"] = consumer["assignment_epoch"]
        return out


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def cmd_group(args: argparse.Namespace) -> int:
    try:
        if args.group_command == "list":
            groups = asyncio.run(list_groups(args.bootstrap))
            if args.json:
                print(json.dumps(groups, indent=2))
            elif groups:
                print(
                    _table(
                        [["GROUP", "TYPE", "STATE", "PROTOCOL-TYPE"]]
                        + [[g["group"], g["type"], g["state"], g["protocol_type"]] for g in groups]
                    )
                )
            return 0
        d = asyncio.run(describe_group(args.bootstrap, args.group, args.metrics))
    except (KafkaClientError, ConnectionError, OSError) as e:
        print(f"kafkite group: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    if d["type"] == "share":
        _print_share_group(d)
        return 0
    members = len(d["members"])
    if d["type"] == "consumer":
        print(
            f"Consumer group {d['group']}: state {d['state']}, epoch {d['group_epoch']} (assignment "
            f"{d['assignment_epoch']}), assignor {d['protocol'] or '-'}, {members} member(s)"
        )
        for m in d["members"]:
            parts = ", ".join(f"{a['topic']}:{','.join(map(str, a['partitions']))}" for a in m["assignment"])
            print(
                f"  {m['member_id']} epoch {m['member_epoch']} ({m['protocol']}) {m['host']} [{parts or '-'}]"
            )
    else:
        print(f"Group {d['group']}: state {d['state']}, protocol {d['protocol'] or '-'}, {members} member(s)")
    print()
    header = [
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "CONSUMER-ID",
        "HOST",
        "CLIENT-ID",
    ]
    rows = [header] + [
        [
            r["topic"],
            str(r["partition"]),
            "-" if r["committed_offset"] is None else str(r["committed_offset"]),
            str(r["log_end_offset"]),
            "-" if r["lag"] is None else str(r["lag"]),
            r["member_id"] or "-",
            r["host"] or "-",
            r["client_id"] or "-",
        ]
        for r in d["partitions"]
    ]
    print(_table(rows))
    return 0


def _print_share_group(d: dict[str, Any]) -> None:
    print(
        f"Share group {d['group']}: state {d['state']}, epoch {d['group_epoch']} (assignment "
        f"{d['assignment_epoch']}), assignor {d['protocol'] or '-'}, {len(d['members'])} member(s)"
    )
    for m in d["members"]:
        parts = ", ".join(f"{a['topic']}:{','.join(map(str, a['partitions']))}" for a in m["assignment"])
        print(f"  {m['member_id']} epoch {m['member_epoch']} {m['host']} {m['client_id']} [{parts or '-'}]")
    print()
    with_metrics = any("in_flight" in r for r in d["partitions"])
    header = ["TOPIC", "PARTITION", "START-OFFSET", "LAG", "MEMBERS"]
    if with_metrics:
        header += ["IN-FLIGHT", "AVAILABLE", "ARCHIVING", "DELIVERY-COUNTS", "ACCEPTED", "ARCHIVED"]
    rows = [header]
    for r in d["partitions"]:
        row = [
            r["topic"],
            str(r["partition"]),
            "-" if r["start_offset"] is None else str(r["start_offset"]),
            "-" if r["lag"] is None else str(r["lag"]),
            str(len(r["members"])),
        ]
        if with_metrics:
            counts = ",".join(f"{k}:{v}" for k, v in sorted(r.get("delivery_counts", {}).items())) or "-"
            row += [
                str(r.get("in_flight", "-")),
                str(r.get("available", "-")),
                str(r.get("archiving", "-")),
                counts,
                str(r.get("accepted", "-")),
                str(r.get("archived", "-")),
            ]
        rows.append(row)
    print(_table(rows))


def add_parser(sub: Subcommands) -> None:
    p = sub.add_parser(
        "group", help="list and describe consumer and share groups (any Kafka-compatible broker)"
    )
    p.add_argument(
        "--bootstrap", "-b", default="localhost:9092", help="bootstrap servers (default localhost:9092)"
    )
    p.add_argument("--json", action="store_true", help="JSON output")
    gsub = p.add_subparsers(dest="group_command", required=True)
    gsub.add_parser("list", help="list groups of every type (classic, consumer, share)")
    d = gsub.add_parser(
        "describe", help="members, assignments, committed (or start) offsets, end offsets and lag"
    )
    d.add_argument("group")
    d.add_argument(
        "--metrics",
        metavar="URL",
        help="a kafkite broker's metrics URL (http://host:port/metrics): a share group's in-flight, "
        "archiving and delivery counts per share-partition",
    )
    p.set_defaults(func=cmd_group)
