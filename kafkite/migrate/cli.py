"""``kafkite migrate plan | apply | mirror | cutover``: rehearse a move from Kafka to OCI-style streams."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kafkite.tools import Subcommands


def cmd_migrate(args: argparse.Namespace) -> int:
    # The subcommands' code (the survey, the plan, the mirror, the cutover) is loaded when one of them runs:
    # `kafkite --version` and the other subcommands only build this parser.
    from kafkite.migrate import commands

    return commands.run(args)


def add_parser(sub: Subcommands) -> None:
    p = sub.add_parser(
        "migrate",
        help="plan, apply and rehearse a move from a Kafka cluster to OCI-style streams",
        description="Dry-run a migration from any Kafka-compatible cluster to OCI Streaming (or kafkite).",
    )
    msub = p.add_subparsers(dest="migrate_command", required=True)

    plan = msub.add_parser("plan", help="inspect a cluster and write a migration plan (Markdown and JSON)")
    plan.add_argument("--source", "-s", required=True, help="bootstrap servers of the cluster to inspect")
    plan.add_argument(
        "--command-config", metavar="FILE", help="client properties (security.protocol, sasl.*)"
    )
    plan.add_argument("--topics", action="append", help="topics or globs, comma-separated (default: all)")
    plan.add_argument("--window", type=float, default=30.0, help="seconds to observe rates (default 30)")
    plan.add_argument("--sample", type=int, default=500, help="records sampled per partition (default 500)")
    plan.add_argument("--pool", help="name of the stream pool to plan (default migrated-<cluster id>)")
    plan.add_argument(
        "--headroom",
        type=float,
        default=1.0,
        help="multiply observed rates when sizing partitions (default 1)",
    )
    plan.add_argument("--out", default="migration-plan", help="output prefix: PREFIX.md and PREFIX.json")
    plan.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    apply = msub.add_parser("apply", help="create the pools and streams of a plan")
    apply.add_argument("plan", help="the plan's JSON file")
    apply.add_argument(
        "--target",
        "-t",
        required=True,
        help="bootstrap servers (Kafka admin API) or http(s):// admin endpoint",
    )
    apply.add_argument("--command-config", metavar="FILE", help="client properties for a Kafka target")
    apply.add_argument(
        "--compartment", default="ocid1.compartment.oc1..kafkite", help="compartment OCID for REST targets"
    )
    apply.add_argument(
        "--oci-config",
        metavar="FILE",
        help="OCI config file: sign REST requests with the oci SDK (~/.oci/config)",
    )
    apply.add_argument(
        "--oci-profile", default="DEFAULT", help="profile of the OCI config file (default DEFAULT)"
    )
    apply.add_argument("--dry-run", action="store_true", help="say what would be created")
    apply.add_argument("--json", action="store_true", help="JSON output")

    m = msub.add_parser(
        "mirror", help="copy topics and group offsets, resumably, once or continuously (--follow), and verify"
    )
    _connection_args(m)
    m.add_argument(
        "--follow",
        action="store_true",
        help="keep replicating until stopped: new records, new topics, added partitions, config changes, "
        "group offsets",
    )
    m.add_argument(
        "--replay-rate",
        metavar="observed|RATE",
        help="pace writes at the plan's observed rate per topic, or RATE bytes/s (e.g. 3MB), and report "
        "throttling and rejections",
    )
    m.add_argument(
        "--replay-seconds",
        type=float,
        default=60.0,
        help="pace at the replay rate for this long, then copy the rest at full speed (default 60; 0: all)",
    )
    m.add_argument("--skip-rejected", action="store_true", help="report and skip records the target refuses")
    m.add_argument("--no-groups", action="store_true", help="do not translate committed group offsets")
    m.add_argument("--no-verify", action="store_true", help="skip the verification pass")
    m.add_argument(
        "--metrics-listener",
        metavar="HOST:PORT",
        help="serve Prometheus metrics (/metrics), a JSON status (/status) and cutovers (POST /cutover)",
    )
    m.add_argument(
        "--display-interval",
        type=float,
        help="follow: seconds between refreshes of the live display (default 1 on a terminal, 5 otherwise)",
    )
    m.add_argument("--report", metavar="FILE", help="write the full report as JSON")
    m.add_argument("--json", action="store_true", help="print the report as JSON")

    c = msub.add_parser(
        "cutover",
        help="move a stopped consumer group to the target: catch up, verify, commit its offsets, report",
    )
    c.add_argument("--group", "-g", required=True, help="the consumer group to move")
    c.add_argument(
        "--mirror",
        metavar="URL",
        help="a running `migrate mirror --follow --metrics-listener` to do it (otherwise the cutover runs "
        "its own mirror from --source to --target, from the same state)",
    )
    _connection_args(c, required=False)
    c.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the mirror to catch up")
    c.add_argument(
        "--wait-stop", type=float, default=30.0, help="seconds to wait for the group to stop on the source"
    )
    c.add_argument("--no-verify", action="store_true", help="skip the counts and checksums")
    c.add_argument(
        "--report", metavar="PREFIX", help="write PREFIX.md, PREFIX.json and PREFIX.png (lag plot)"
    )
    c.add_argument("--no-plot", action="store_true", help="no lag plot in the report (no matplotlib needed)")
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_migrate)


def _connection_args(m: argparse.ArgumentParser, *, required: bool = True) -> None:
    m.add_argument("--source", "-s", required=required, help="source bootstrap servers")
    m.add_argument(
        "--target",
        "-t",
        required=required,
        help="target bootstrap servers, or the http(s):// endpoint of OCI Streaming's REST API (with --pool)",
    )
    m.add_argument("--topics", action="append", help="topics or globs, comma-separated (default: all)")
    m.add_argument("--topics-regex", metavar="REGEX", help="also every topic whose whole name matches REGEX")
    m.add_argument("--command-config", metavar="FILE", help="client properties for both sides")
    m.add_argument("--source-config", metavar="FILE", help="client properties for the source")
    m.add_argument("--target-config", metavar="FILE", help="client properties for the target")
    m.add_argument("--checkpoint", metavar="FILE", help="progress file (default mirror-checkpoint-<id>.json)")
    m.add_argument("--plan", metavar="PLAN.json", help="a plan: partitions, retention and OCI limits")
    m.add_argument(
        "--exactly-once",
        action="store_true",
        help="write in target transactions that also hold the mirror's position (a Kafka target with "
        "transactions): no duplicates after a crash",
    )
    m.add_argument(
        "--name", help="the mirror's name: its transactional id and state topic (default from both addresses)"
    )
    m.add_argument(
        "--commit-interval-ms",
        type=float,
        default=100.0,
        help="exactly once: transaction length (default 100)",
    )
    m.add_argument(
        "--metadata-interval",
        type=float,
        default=5.0,
        help="follow: seconds between looks for new topics, partitions and config changes (default 5)",
    )
    m.add_argument(
        "--group-interval",
        type=float,
        default=5.0,
        help="follow: seconds between group offset syncs (default 5; 0: never)",
    )
    m.add_argument(
        "--groups", metavar="REGEX", help="the source groups whose offsets are synced (default all)"
    )
    m.add_argument(
        "--honour-limits",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="hold writes to the plan's OCI limits (1 MB/s per partition, 1 MB requests); default: with a "
        "plan, unless replaying",
    )
    m.add_argument("--pool", help="REST target: the stream pool (OCID or name)")
    m.add_argument(
        "--compartment", default="ocid1.compartment.oc1..kafkite", help="REST target: compartment of the pool"
    )
    m.add_argument(
        "--oci-config", metavar="FILE", help="REST target: sign requests with this OCI config file"
    )
    m.add_argument(
        "--oci-profile", default="DEFAULT", help="profile of the OCI config file (default DEFAULT)"
    )
    m.add_argument(
        "--target-kafka",
        metavar="BOOTSTRAP",
        help="REST target: the pool's Kafka endpoint, to commit group offsets (with --target-config for SASL "
        "tenancy/user/poolId); default the pool's kafkaSettings when --target-config is given",
    )
    m.add_argument(
        "--no-create-topics", action="store_true", help="fail when a topic is missing on the target"
    )
    m.add_argument("--fetch-bytes", type=int, default=4 * 1024 * 1024, help="bytes per fetch per partition")
    m.add_argument(
        "--batch-bytes",
        type=int,
        default=1_000_000,
        help="bytes per batch written to the target (default 1,000,000)",
    )
    m.add_argument(
        "--request-bytes",
        type=int,
        default=16 * 1024 * 1024,
        help="bytes per produce request (all partitions)",
    )
    m.add_argument("--no-progress", action="store_true", help="no progress display on stderr")
