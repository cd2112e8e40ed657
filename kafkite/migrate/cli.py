"""``kafkite migrate plan | apply | mirror``: dry-run a move from a Kafka cluster to OCI-style streams."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

from kafkite.client import ClientSecurity, KafkaClient, KafkaClientError
from kafkite.config import ConfigError, read_properties

EXIT_INTERRUPTED = 130


def _err(msg: str) -> None:
    print(f"kafkite migrate: {msg}", file=sys.stderr)


def client_for(bootstrap: str, config_path: str | None) -> KafkaClient:
    props: dict[str, str] = {}
    if config_path:
        props = read_properties(config_path)
    security = ClientSecurity.from_properties(props)
    return KafkaClient(bootstrap, props.get("client.id", "kafkite-migrate"), security=security)


def _topics(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    out = [t.strip() for v in values for t in v.split(",") if t.strip()]
    return out or None


# ---------------------------------------------------------------------------------------------- plan


async def run_plan(args: argparse.Namespace) -> int:
    from kafkite.migrate.plan import make_plan, write_plan
    from kafkite.migrate.survey import inspect_cluster, summary_line

    async with client_for(args.source, args.command_config) as client:
        inv = await inspect_cluster(
            client,
            source=args.source,
            topics=_topics(args.topics),
            window=args.window,
            sample_records=args.sample,
            progress=not args.no_progress,
        )
    plan = make_plan(inv, pool=args.pool, headroom=args.headroom)
    js, md = write_plan(plan, args.out)
    s = plan["summary"]
    print(summary_line(inv))
    print(
        f"plan: {len(plan['streams'])} stream(s) in {len(plan['pools'])} pool(s); {s['blocker']} blocker(s), "
        f"{s['high']} high, {s['medium']} medium risk(s)"
    )
    for f in plan["findings"]:
        if f["severity"] in ("blocker", "high"):
            print(f"  {f['severity'].upper():7} {f['code']}: {f['message']}")
    print(f"written to {md} and {js}")
    return 0


# ---------------------------------------------------------------------------------------------- apply


async def run_apply(args: argparse.Namespace) -> int:
    from kafkite.migrate.apply import actions_json, apply_kafka, apply_rest, is_rest_target, summarize
    from kafkite.migrate.plan import load_plan

    plan = load_plan(args.plan)
    if is_rest_target(args.target):
        actions = await apply_rest(
            plan,
            args.target,
            compartment=args.compartment,
            dry_run=args.dry_run,
            oci_config=args.oci_config,
            oci_profile=args.oci_profile,
        )
    else:
        async with client_for(args.target, args.command_config) as client:
            actions = await apply_kafka(plan, client, dry_run=args.dry_run)
    if args.json:
        print(json.dumps(actions_json(actions), indent=2))
    else:
        print(summarize(actions))
    return 1 if any(a.action == "failed" for a in actions) else 0


# ---------------------------------------------------------------------------------------------- mirror


async def run_mirror(args: argparse.Namespace) -> int:
    from kafkite.migrate.mirror import Mirror, MirrorOptions, observed_rates, parse_rate, summarize
    from kafkite.migrate.plan import load_plan

    plan = load_plan(args.plan) if args.plan else None
    rates: dict[str, float] | None = None
    if args.replay_rate:
        if args.replay_rate == "observed":
            if plan is None:
                _err("--replay-rate observed needs --plan PLAN.json (the rates observed by `migrate plan`)")
                return 2
            rates = observed_rates(plan)
        else:
            rate = parse_rate(args.replay_rate)
            rates = {"*": rate}
    opts = MirrorOptions(
        topics=_topics(args.topics),
        checkpoint=Path(args.checkpoint) if args.checkpoint else None,
        fetch_bytes=args.fetch_bytes,
        batch_bytes=args.batch_bytes,
        create_topics=not args.no_create_topics,
        translate_groups=not args.no_groups,
        verify=not args.no_verify,
        replay_rates=rates,
        replay_seconds=args.replay_seconds or None,
        skip_rejected=args.skip_rejected or rates is not None,
        plan=plan,
        progress=not args.no_progress,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        print("\nstopping: finishing the writes in flight and saving the checkpoint", file=sys.stderr)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
        except (NotImplementedError, RuntimeError):
            pass
    source_cfg = args.source_config or args.command_config
    target_cfg = args.target_config or args.command_config
    async with client_for(args.source, source_cfg) as source, client_for(args.target, target_cfg) as target:
        mirror = Mirror(source, target, args.source, args.target, opts, stop)
        result = await mirror.run()
    report = result.as_json()
    report["checkpoint"] = str(mirror.checkpoint.path)
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(summarize(result))
    if result.interrupted:
        print(f"interrupted: run the same command again to resume (checkpoint {mirror.checkpoint.path})")
        return EXIT_INTERRUPTED
    if result.errors or (result.verification and not result.verified):
        return 1
    return 0


# ---------------------------------------------------------------------------------------------- parser


def cmd_migrate(args: argparse.Namespace) -> int:
    runners = {"plan": run_plan, "apply": run_apply, "mirror": run_mirror}
    try:
        return asyncio.run(runners[args.migrate_command](args))
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except (KafkaClientError, ConnectionError, OSError, ConfigError, ValueError) as e:
        _err(str(e))
        return 1
    except Exception as e:
        from kafkite.migrate.apply import ApplyError
        from kafkite.migrate.mirror import MirrorError

        if isinstance(e, MirrorError | ApplyError):
            _err(str(e))
            return 1
        raise


def add_parser(sub: Any) -> None:
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

    m = msub.add_parser("mirror", help="copy topics and group offsets, resumably, and verify")
    m.add_argument("--source", "-s", required=True, help="source bootstrap servers")
    m.add_argument("--target", "-t", required=True, help="target bootstrap servers")
    m.add_argument("--topics", action="append", help="topics or globs, comma-separated (default: all)")
    m.add_argument("--command-config", metavar="FILE", help="client properties for both sides")
    m.add_argument("--source-config", metavar="FILE", help="client properties for the source")
    m.add_argument("--target-config", metavar="FILE", help="client properties for the target")
    m.add_argument("--checkpoint", metavar="FILE", help="progress file (default mirror-checkpoint-<id>.json)")
    m.add_argument("--plan", metavar="PLAN.json", help="a plan: partitions and retention of created topics")
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
        "--no-create-topics", action="store_true", help="fail when a topic is missing on the target"
    )
    m.add_argument("--fetch-bytes", type=int, default=4 * 1024 * 1024, help="bytes per fetch per partition")
    m.add_argument(
        "--batch-bytes", type=int, default=512 * 1024, help="bytes per batch written to the target"
    )
    m.add_argument("--report", metavar="FILE", help="write the full report as JSON")
    m.add_argument("--json", action="store_true", help="print the report as JSON")
    m.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=cmd_migrate)
