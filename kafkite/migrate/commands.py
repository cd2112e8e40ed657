"""What ``kafkite migrate plan | apply | mirror | cutover`` do (their parser is in kafkite.migrate.cli)."""

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
from typing import Any

from kafkite.client import ClientSecurity, KafkaClient, KafkaClientError
from kafkite.config import ConfigError, read_properties
from kafkite.migrate.apply import ApplyError, actions_json, apply_kafka, apply_rest, is_rest_target
from kafkite.migrate.apply import summarize as summarize_actions
from kafkite.migrate.cutover import (
    CutoverError,
    PlotUnavailable,
    check_plot_available,
    run_cutover,
    write_report,
)
from kafkite.migrate.cutover import summarize as summarize_cutover
from kafkite.migrate.mirror import Mirror, MirrorError, MirrorOptions, observed_rates, parse_rate
from kafkite.migrate.mirror import summarize as summarize_mirror
from kafkite.migrate.plan import load_plan, make_plan, write_plan
from kafkite.migrate.rest import OciStreamingTarget
from kafkite.migrate.survey import inspect_cluster, summary_line

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
        print(summarize_actions(actions))
    return 1 if any(a.action == "failed" for a in actions) else 0


# ---------------------------------------------------------------------------------------------- mirror


def _mirror_options(args: argparse.Namespace, plan: dict[str, Any] | None) -> MirrorOptions:

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

    source_cfg = args.source_config or args.command_config
    target_cfg = args.target_config or args.command_config
    async with contextlib.AsyncExitStack() as stack:
        source = await stack.enter_async_context(client_for(args.source, source_cfg))
        if is_rest_target(args.target):
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
        print(summarize_mirror(result))
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
        print(summarize_cutover(result))
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


def run(args: argparse.Namespace) -> int:
    """Run the ``kafkite migrate`` subcommand ``args`` names; its exit status."""
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
        if isinstance(e, MirrorError | ApplyError | PlotUnavailable):
            _err(str(e))
            return 1
        raise
