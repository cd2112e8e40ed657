"""``kafkite migrate plan | apply | mirror | cutover``: rehearse a move from Kafka to OCI-style streams."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kafkite.client import ClientSecurity, KafkaClient, KafkaClientError
from kafkite.config import ConfigError, read_properties

if TYPE_CHECKING:
    from kafkite.migrate.mirror import Mirror, MirrorOptions
    from kafkite.tools import Subcommands

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


def _mirror_options(args: argparse.Namespace, plan: dict[str, Any] | None) -> MirrorOptions:
    from kafkite.migrate.mirror import MirrorOptions, observed_rates, parse_rate

    rates: dict[str, float] | None = None
    if getattr(args, "replay_rate", None):
        if args.replay_rate == "observed":
            if plan is None:
                raise ValueError(
                    "--replay-rate observed needs --plan PLAN.json (the rates observed by `migrate plan`)"
                )
            rates = observed_rates(plan)
        else:
            rates = {"*": parse_rate(args.replay_rate)}
    if args.topics_regex:
        re.compile(args.topics_regex)
    return MirrorOptions(
        topics=_topics(args.topics),
        checkpoint=Path(args.checkpoint) if args.checkpoint else None,
        fetch_bytes=args.fetch_bytes,
        batch_bytes=args.batch_bytes,
        create_topics=not args.no_create_topics,
        translate_groups=not getattr(args, "no_groups", False),
        verify=not getattr(args, "no_verify", False),
        replay_rates=rates,
        replay_seconds=(getattr(args, "replay_seconds", 60.0) or None),
        skip_rejected=getattr(args, "skip_rejected", False) or rates is not None,
        plan=plan,
        progress=not args.no_progress,
        follow=bool(getattr(args, "follow", True)),
        topics_regex=args.topics_regex,
        exactly_once=args.exactly_once,
        name=args.name,
        commit_interval=args.commit_interval_ms / 1000,
        metadata_interval=args.metadata_interval,
        group_interval=args.group_interval,
        groups_regex=args.groups,
        request_bytes=args.request_bytes,
        honour_limits=args.honour_limits,
        metrics_listener=getattr(args, "metrics_listener", None),
        display_interval=getattr(args, "display_interval", None),
    )


@contextlib.asynccontextmanager
async def open_mirror(
    args: argparse.Namespace, opts: MirrorOptions, stop: asyncio.Event
) -> AsyncIterator[Mirror]:
    """The source and target connections and the Mirror over them."""
    from kafkite.migrate.apply import is_rest_target
    from kafkite.migrate.mirror import Mirror

    source_cfg = args.source_config or args.command_config
    target_cfg = args.target_config or args.command_config
    async with contextlib.AsyncExitStack() as stack:
        source = await stack.enter_async_context(client_for(args.source, source_cfg))
        if is_rest_target(args.target):
            from kafkite.migrate.rest import OciStreamingTarget

            if not args.pool:
                raise ValueError("a REST target needs --pool (the stream pool's OCID or name)")
            rest = OciStreamingTarget(
                args.target,
                args.pool,
                compartment=args.compartment,
                oci_config=args.oci_config,
                oci_profile=args.oci_profile,
            )
            await stack.enter_async_context(rest)
            kafka = args.target_kafka or (rest.kafka_bootstrap if target_cfg else None)
            group_target = None
            if kafka:
                group_target = await stack.enter_async_context(client_for(kafka, target_cfg))
            yield Mirror(
                source, None, args.source, args.target, opts, stop, rest=rest, group_target=group_target
            )
        else:
            target = await stack.enter_async_context(client_for(args.target, target_cfg))
            yield Mirror(source, target, args.source, args.target, opts, stop)


def _signals(stop: asyncio.Event, what: str) -> None:
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()  # first: a closed stderr must not keep the mirror from stopping
        with contextlib.suppress(OSError, ValueError):
            print(f"\nstopping: {what}", file=sys.stderr)

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
        except (NotImplementedError, RuntimeError):
            pass


async def run_mirror(args: argparse.Namespace) -> int:
    from kafkite.migrate.mirror import summarize
    from kafkite.migrate.plan import load_plan

    plan = load_plan(args.plan) if args.plan else None
    try:
        opts = _mirror_options(args, plan)
    except ValueError as e:
        _err(str(e))
        return 2
    stop = asyncio.Event()
    _signals(stop, "finishing the writes in flight and saving the state")
    async with open_mirror(args, opts, stop) as mirror:
        d = mirror.delivery()
        mode = d["mode"] + (f" ({d['window']})" if d.get("window") else "")
        if not args.json:
            print(f"delivery: {mode}", file=sys.stderr, flush=True)
        result = await mirror.run()
    report = result.as_json()
    report["checkpoint"] = str(mirror.checkpoint.path) if not opts.exactly_once else None
    report["state_topic"] = mirror.state_topic if opts.exactly_once else None
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(summarize(result))
    if opts.follow:
        return 1 if result.errors else 0
    if result.interrupted:
        where = mirror.state_topic if opts.exactly_once else mirror.checkpoint.path
        print(f"interrupted: run the same command again to resume (state in {where})")
        return EXIT_INTERRUPTED
    if result.errors or (result.verification and not result.verified):
        return 1
    return 0


# ---------------------------------------------------------------------------------------------- cutover


async def run_cutover_command(args: argparse.Namespace) -> int:
    from kafkite.migrate.cutover import (
        CutoverError,
        PlotUnavailable,
        check_plot_available,
        run_cutover,
        summarize,
        write_report,
    )

    with_plot = bool(args.report) and not args.no_plot
    if with_plot:
        try:
            check_plot_available()
        except PlotUnavailable as e:
            _err(str(e))
            return 2
    topics = _topics(args.topics)
    if args.mirror:
        result = await _remote_cutover(args, topics)
        if isinstance(result, int):
            return result
    else:
        if not args.source or not args.target:
            _err(
                "give --mirror URL (a running `migrate mirror --follow --metrics-listener`) or --source and "
                "--target"
            )
            return 2
        from kafkite.migrate.plan import load_plan

        plan = load_plan(args.plan) if args.plan else None
        args.follow = True
        args.metrics_listener = None
        opts = _mirror_options(args, plan)
        stop = asyncio.Event()
        _signals(stop, "abandoning the cutover")
        async with open_mirror(args, opts, stop) as mirror:
            runner = asyncio.create_task(mirror.run())
            try:
                ready = asyncio.create_task(mirror.ready.wait())
                await asyncio.wait({runner, ready}, return_when=asyncio.FIRST_COMPLETED)
                if runner.done():
                    ready.cancel()
                    res = runner.result()
                    _err("the mirror stopped before the cutover: " + "; ".join(res.errors or ["stopped"]))
                    return 1
                try:
                    result = await run_cutover(
                        mirror,
                        args.group,
                        timeout=args.timeout,
                        wait_stop=args.wait_stop,
                        topics=topics,
                        verify=not args.no_verify,
                    )
                except CutoverError as e:
                    _err(f"cutover failed: {e}")
                    return 1
            finally:
                stop.set()
                await runner
    if args.report:
        written = write_report(result, args.report, with_plot=with_plot)
        print(f"report written to {', '.join(str(p) for p in written)}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(summarize(result))
    return 0


async def _remote_cutover(args: argparse.Namespace, topics: list[str] | None) -> dict[str, Any] | int:
    import aiohttp

    url = args.mirror.rstrip("/")
    if "://" not in url:
        url = "http://" + url
    body = {
        "group": args.group,
        "timeout": args.timeout,
        "wait_stop": args.wait_stop,
        "topics": topics,
        "verify": not args.no_verify,
    }
    timeout = aiohttp.ClientTimeout(total=args.timeout + args.wait_stop + 600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            async with session.post(url + "/cutover", json=body) as resp:
                data = await resp.json(content_type=None)
        except aiohttp.ClientError as e:
            _err(f"cannot reach the mirror at {url}: {e}")
            return 1
    if not isinstance(data, dict):
        _err(f"unexpected answer from {url}: {data!r}")
        return 1
    if "error" in data:
        _err(f"cutover failed: {data['error']}")
        return 1
    return data


# ---------------------------------------------------------------------------------------------- parser


def cmd_migrate(args: argparse.Namespace) -> int:
    runners = {"plan": run_plan, "apply": run_apply, "mirror": run_mirror, "cutover": run_cutover_command}
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
        from kafkite.migrate.cutover import PlotUnavailable
        from kafkite.migrate.mirror import MirrorError

        if isinstance(e, MirrorError | ApplyError | PlotUnavailable):
            _err(str(e))
            return 1
        raise


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
