"""``kafkite topic create | list | describe | alter | delete``: topic administration, like kafka-topics.sh.

Works against any Kafka-compatible broker through kafkite's own client: CreateTopics, Metadata, ListOffsets,
DescribeConfigs, IncrementalAlterConfigs (AlterConfigs on brokers without it), CreatePartitions and
DeleteTopics.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from kafkite.client import KafkaClient, KafkaClientError
from kafkite.protocol.api_keys import ApiKey
from kafkite.protocol.errors import ErrorCode
from kafkite.tools.produce import ToolError, add_connection_args, make_client, run_tool

if TYPE_CHECKING:
    from kafkite.tools import Subcommands

RESOURCE_TOPIC = 2
CONFIG_SOURCE_DEFAULT = 5
OP_SET, OP_DELETE = 0, 1


def _configs(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise ToolError(f"--config expects name=value, got {item!r}")
        out[k.strip()] = v.strip()
    return out


def _check(code: int, what: str, message: str | None = None) -> None:
    if code:
        raise KafkaClientError(code, f"{what}{': ' + message if message else ''}")


async def create_topic(
    client: KafkaClient,
    name: str,
    partitions: int = -1,
    replication_factor: int = -1,
    configs: dict[str, str] | None = None,
    *,
    if_not_exists: bool = False,
) -> bool:
    """Create a topic (-1: the broker's defaults); False if it existed and ``if_not_exists``."""
    resp = await client.request(
        ApiKey.CREATE_TOPICS,
        {
            "topics": [
                {
                    "name": name,
                    "num_partitions": partitions,
                    "replication_factor": replication_factor,
                    "assignments": [],
                    "configs": [{"name": k, "value": v} for k, v in (configs or {}).items()],
                }
            ],
            "timeout_ms": 30000,
            "validate_only": False,
        },
    )
    t = resp["topics"][0]
    if t["error_code"] == ErrorCode.TOPIC_ALREADY_EXISTS and if_not_exists:
        return False
    _check(t["error_code"], f"create {name}", t.get("error_message"))
    return True


async def list_topics(client: KafkaClient, include_internal: bool = False) -> list[dict[str, Any]]:
    resp = await client.refresh_metadata(None)
    out = []
    for t in resp["topics"]:
        if t["error_code"] or (t.get("is_internal") and not include_internal):
            continue
        out.append(
            {"topic": t["name"], "partitions": len(t["partitions"]), "internal": bool(t.get("is_internal"))}
        )
    return sorted(out, key=lambda t: t["topic"])


async def describe_configs(client: KafkaClient, name: str) -> list[dict[str, Any]]:
    resp = await client.request(
        ApiKey.DESCRIBE_CONFIGS,
        {
            "resources": [
                {"resource_type": RESOURCE_TOPIC, "resource_name": name, "configuration_keys": None}
            ],
            "include_synonyms": False,
            "include_documentation": False,
        },
    )
    r = resp["results"][0]
    _check(r["error_code"], f"describe configs of {name}", r.get("error_message"))
    return [
        {
            "name": c["name"],
            "value": c["value"],
            "default": c.get("config_source", -1) == CONFIG_SOURCE_DEFAULT,
            "read_only": c["read_only"],
            "sensitive": c["is_sensitive"],
        }
        for c in r["configs"]
    ]


async def describe_topic(client: KafkaClient, name: str) -> dict[str, Any]:
    resp = await client.refresh_metadata([name])
    t = next((t for t in resp["topics"] if t["name"] == name), None)
    if t is None:
        raise KafkaClientError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, name)
    _check(t["error_code"], name)
    parts = sorted(p["partition_index"] for p in t["partitions"])
    starts = await client.list_offsets(name, parts, -2) if parts else {}
    ends = await client.list_offsets(name, parts, -1) if parts else {}
    partitions = [
        {
            "partition": p["partition_index"],
            "leader": p["leader_id"],
            "replicas": p["replica_nodes"],
            "isr": p["isr_nodes"],
            "start_offset": starts.get(p["partition_index"]),
            "end_offset": ends.get(p["partition_index"]),
            "messages": ends.get(p["partition_index"], 0) - starts.get(p["partition_index"], 0),
        }
        for p in sorted(t["partitions"], key=lambda p: p["partition_index"])
    ]
    topic_id = t.get("topic_id")
    return {
        "topic": name,
        "topic_id": str(topic_id) if topic_id is not None and topic_id.int else None,
        "internal": bool(t.get("is_internal")),
        "partitions": partitions,
        "configs": await describe_configs(client, name),
    }


async def alter_configs(client: KafkaClient, name: str, set_: dict[str, str], delete: list[str]) -> None:
    conn = await client.any_connection()
    if conn.versions.get(ApiKey.INCREMENTAL_ALTER_CONFIGS) is not None:
        ops = [{"name": k, "config_operation": OP_SET, "value": v} for k, v in set_.items()]
        ops += [{"name": k, "config_operation": OP_DELETE, "value": None} for k in delete]
        resp = await conn.request(
            ApiKey.INCREMENTAL_ALTER_CONFIGS,
            {
                "resources": [{"resource_type": RESOURCE_TOPIC, "resource_name": name, "configs": ops}],
                "validate_only": False,
            },
        )
    else:
        # AlterConfigs replaces the whole set: keep what is set now, apply the changes.
        current = {c["name"]: c["value"] for c in await describe_configs(client, name) if not c["default"]}
        current.update(set_)
        for k in delete:
            current.pop(k, None)
        resp = await conn.request(
            ApiKey.ALTER_CONFIGS,
            {
                "resources": [
                    {
                        "resource_type": RESOURCE_TOPIC,
                        "resource_name": name,
                        "configs": [{"name": k, "value": v} for k, v in current.items()],
                    }
                ],
                "validate_only": False,
            },
        )
    r = resp["responses"][0]
    _check(r["error_code"], f"alter configs of {name}", r.get("error_message"))


async def add_partitions(client: KafkaClient, name: str, count: int) -> None:
    resp = await client.request(
        ApiKey.CREATE_PARTITIONS,
        {
            "topics": [{"name": name, "count": count, "assignments": None}],
            "timeout_ms": 30000,
            "validate_only": False,
        },
    )
    r = resp["results"][0]
    _check(r["error_code"], f"partitions of {name}", r.get("error_message"))


async def delete_topics(client: KafkaClient, names: list[str]) -> dict[str, int]:
    conn = await client.any_connection()
    v = conn.version_for(ApiKey.DELETE_TOPICS)
    body: dict[str, Any] = {"timeout_ms": 30000}
    if v >= 6:
        body["topics"] = [{"name": n} for n in names]
    else:
        body["topic_names"] = names
    resp = await conn.request(ApiKey.DELETE_TOPICS, body, version=v)
    return {r["name"]: r["error_code"] for r in resp["responses"]}


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


async def topic_main(args: argparse.Namespace) -> int:
    cmd = args.topic_command
    async with make_client(args, "kafkite-topic") as client:
        if cmd == "create":
            created = await create_topic(
                client,
                args.name,
                args.partitions,
                args.replication_factor,
                _configs(args.config),
                if_not_exists=args.if_not_exists,
            )
            if args.json:
                _print_json({"topic": args.name, "created": created})
            else:
                print(f"{'created' if created else 'exists'}: {args.name}")
            return 0
        if cmd == "list":
            topics = await list_topics(client, args.internal)
            if args.json:
                _print_json(topics)
            elif topics:
                print(
                    _table([["TOPIC", "PARTITIONS"]] + [[t["topic"], str(t["partitions"])] for t in topics])
                )
            return 0
        if cmd == "describe":
            names = args.names or [t["topic"] for t in await list_topics(client)]
            descs = [await describe_topic(client, n) for n in names]
            if args.json:
                _print_json(descs if len(descs) != 1 or not args.names else descs[0])
                return 0
            for i, d in enumerate(descs):
                if i:
                    print()
                configs = [c for c in d["configs"] if args.all_configs or not c["default"]]
                shown = ",".join(f"{c['name']}={'***' if c['sensitive'] else c['value']}" for c in configs)
                n = len(d["partitions"])
                print(f"Topic: {d['topic']}  TopicId: {d['topic_id'] or '-'}  Partitions: {n}")
                print(f"Configs: {shown or '-'}")
                rows = [["PARTITION", "LEADER", "REPLICAS", "ISR", "START-OFFSET", "END-OFFSET", "MESSAGES"]]
                for p in d["partitions"]:
                    rows.append(
                        [
                            str(p["partition"]),
                            str(p["leader"]),
                            ",".join(map(str, p["replicas"])),
                            ",".join(map(str, p["isr"])),
                            str(p["start_offset"]),
                            str(p["end_offset"]),
                            str(p["messages"]),
                        ]
                    )
                print(_table(rows))
            return 0
        if cmd == "alter":
            changes = _configs(args.config)
            if not changes and not args.delete_config and args.partitions is None:
                raise ToolError("nothing to alter: give --config, --delete-config or --partitions")
            if changes or args.delete_config:
                await alter_configs(client, args.name, changes, args.delete_config or [])
            if args.partitions is not None:
                await add_partitions(client, args.name, args.partitions)
            if not args.json:
                print(f"altered: {args.name}")
            else:
                _print_json({"topic": args.name, "altered": True})
            return 0
        if cmd == "delete":
            results = await delete_topics(client, args.names)
            failed = 0
            for name, code in results.items():
                if code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION and args.if_exists:
                    code = 0
                if code:
                    failed += 1
                    print(f"kafkite topic: delete {name}: {KafkaClientError(code)}", file=sys.stderr)
                elif not args.json:
                    print(f"deleted: {name}")
            if args.json:
                _print_json({n: (ErrorCode(c).name if c else "ok") for n, c in results.items()})
            return 1 if failed else 0
    raise ToolError(f"unknown command {cmd}")


def add_parser(sub: Subcommands) -> None:
    p = sub.add_parser(
        "topic", help="create, list, describe, alter and delete topics (any Kafka-compatible broker)"
    )
    add_connection_args(p)
    p.add_argument("--json", action="store_true", help="JSON output")
    tsub = p.add_subparsers(dest="topic_command", required=True)
    c = tsub.add_parser("create", help="create a topic")
    c.add_argument("name")
    c.add_argument("-p", "--partitions", type=int, default=-1, help="partitions (default: the broker's)")
    c.add_argument("-r", "--replication-factor", type=int, default=-1, help="replication factor")
    c.add_argument("-c", "--config", action="append", metavar="NAME=VALUE", help="topic config (repeatable)")
    c.add_argument("--if-not-exists", action="store_true", help="succeed if the topic exists")
    ls = tsub.add_parser("list", help="list topics")
    ls.add_argument("--internal", action="store_true", help="include internal topics")
    d = tsub.add_parser("describe", help="partitions, leaders, offsets and configs")
    d.add_argument("names", nargs="*", metavar="NAME", help="topics (default: all)")
    d.add_argument("--all-configs", action="store_true", help="show configs at their defaults too")
    a = tsub.add_parser("alter", help="change configs or add partitions")
    a.add_argument("name")
    a.add_argument("-c", "--config", action="append", metavar="NAME=VALUE", help="set a config (repeatable)")
    a.add_argument(
        "--delete-config", action="append", metavar="NAME", help="back to the default (repeatable)"
    )
    a.add_argument("-p", "--partitions", type=int, help="raise the partition count to this")
    rm = tsub.add_parser("delete", help="delete topics")
    rm.add_argument("names", nargs="+", metavar="NAME")
    rm.add_argument("--if-exists", action="store_true", help="succeed if a topic does not exist")
    for sp in (c, ls, d, a, rm):
        add_connection_args(sp, inherited=True)
        sp.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")
    p.set_defaults(func=lambda a: run_tool("topic", topic_main(a)))
