"""``kafkite bench produce | consume | e2e``: the benchmark subcommand."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from kafkite.bench.runner import CLIENTS, COMPRESSIONS, DEFAULT_COUNT, BenchError, BenchOptions, Runner
from kafkite.client import KafkaClientError

if TYPE_CHECKING:
    from kafkite.tools import Subcommands

_DESCRIPTION = """\
Measure a Kafka broker (kafkite or any other) in the spirit of kafka-producer-perf-test and
rdkafka_performance. Every message starts with its send time (time.time_ns, 8 bytes), so the e2e
mode measures latency from producer to consumer; in produce mode latency is delivery report - send.

  produce   produce --count messages (or for --duration) and report throughput and ack latency
  consume   consume --count messages from the start of the topic (preloading what is missing)
  e2e       produce and consume at once (use --rate), reporting end-to-end latency percentiles

--serve starts a kafkite broker of the benchmark's own (free port, temporary data dir on disk);
--ceiling also runs the same producers against a broker started with --override blackhole=true
(acknowledges without storing) and reports kafkite against that ceiling in the same run.

--sustained (produce) runs for --duration (default 120 s) after a warm-up long enough to fill the page
cache (1.5 x the kernel's dirty limit, or --warmup-bytes), measures the disk's own sequential write
bandwidth before and after, writing for as long as the run (a second ceiling beside the blackhole one: a
probe of a few GiB would measure mostly the page cache), reports the rate over the first
minute, after it and over the slowest 10 s, and runs a second client meanwhile: Metadata and Fetch from
the page cache every 50 ms, and a consumer of another topic fed at --probe-rate messages/s. With --serve,
its broker keeps each partition's log to a share of a third of the free space (log.retention.bytes, unless
given with --broker-override), so long or repeated runs do not fill the file system.

Every measured run starts with --warmup seconds of uncounted producing (connections, metadata, caches);
--repeat N runs N times against each broker, alternating which goes first, and reports the median and the
spread (and, with --ceiling, the median of the per-repetition ratios).
"""

_EPILOG = """\
examples:
  kafkite bench produce --serve --ceiling --client confluent --size 1024 --count 1000000 --repeat 3
  kafkite bench consume --serve --count 2000000 --size 1024
  kafkite bench e2e --serve --rate 5000 --duration 20 --json
  kafkite bench produce --bootstrap broker:9092 --topic t --partitions 12 --producers 2 --plot out.png
  kafkite bench produce --serve --ceiling --sustained --duration 120 --client confluent --plot sustained.png

MB = 10^6 bytes of message values. Consume throughput with the kafkite client counts messages x --size.
"""


def _acks(v: str) -> int:
    if v == "all":
        return -1
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError("acks is all, -1, 0 or 1") from None
    if n not in (-1, 0, 1):
        raise argparse.ArgumentTypeError("acks is all, -1, 0 or 1")
    return n


def _key_value(v: str) -> tuple[str, str]:
    key, sep, value = v.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {v!r}")
    return key.strip(), value.strip()


def add_parser(subparsers: Subcommands) -> None:
    p = subparsers.add_parser(
        "bench",
        help="benchmark produce, consume and end-to-end latency",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("mode", choices=("produce", "consume", "e2e"))
    g = p.add_argument_group("broker")
    g.add_argument("--bootstrap", default="localhost:9092", help="host:port[,...] (default: %(default)s)")
    g.add_argument("--serve", action="store_true", help="start a kafkite broker of its own for the run")
    g.add_argument(
        "--ceiling",
        action="store_true",
        help="also run the producers against a blackhole broker and report kafkite against it",
    )
    g.add_argument(
        "--broker-override",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="a setting for the brokers --serve/--ceiling start (repeatable), e.g. event.loop=uvloop",
    )
    g.add_argument(
        "--data-dir", help="where --serve puts its temporary data dir (default: the system temp dir)"
    )
    g.add_argument(
        "--broker-pid", type=int, help="pid of a broker on this machine: report its memory and CPU use"
    )
    w = p.add_argument_group("workload")
    w.add_argument("--topic", help="topic name (default: kafkite-bench)")
    w.add_argument("--topics", help="comma-separated topic names (instead of --topic)")
    w.add_argument(
        "--partitions", type=int, default=1, help="partitions of each topic it creates (default: %(default)s)"
    )
    w.add_argument("--size", type=int, default=1024, help="message value bytes, >= 8 (default: %(default)s)")
    w.add_argument(
        "--count", type=int, help=f"messages in total (default: {DEFAULT_COUNT:,} unless --duration)"
    )
    w.add_argument("--duration", type=float, help="seconds to run (stops at --count or --duration, first)")
    w.add_argument("--rate", type=float, default=0.0, help="target messages/s in total, 0 = unthrottled")
    w.add_argument("--acks", type=_acks, default=-1, help="all|-1|0|1 (default: all)")
    w.add_argument("--compression", choices=COMPRESSIONS, default="none")
    w.add_argument("--producers", type=int, default=1, help="producer processes (default: %(default)s)")
    w.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="seconds of uncounted producing before each measured run, 0 for none (default: %(default)s)",
    )
    w.add_argument(
        "--sustained",
        action="store_true",
        help="a long produce run past the page cache, beside the disk's own bandwidth, with a second client",
    )
    w.add_argument(
        "--warmup-bytes",
        type=int,
        help="--sustained: bytes of uncounted producing first (default: 1.5 x the kernel's dirty limit)",
    )
    w.add_argument(
        "--disk-bytes",
        type=int,
        default=2 << 30,
        help="--sustained: bytes written to measure the disk, 0 to skip (default: 2 GiB; with "
        "--disk-seconds, which a sustained run sets to its duration, at most 64 GiB)",
    )
    w.add_argument(
        "--disk-seconds",
        type=float,
        help="--sustained: measure the disk by writing for this long (default: as long as the run)",
    )
    w.add_argument(
        "--no-probe",
        dest="probe",
        action="store_false",
        help="--sustained: no second client",
    )
    w.add_argument(
        "--probe-rate",
        type=float,
        default=200.0,
        help="--sustained: messages/s the second client produces to another topic and consumes back",
    )
    w.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs against each broker (alternating with the ceiling); median and spread reported",
    )
    w.add_argument("--consumers", type=int, default=1, help="consumer processes (default: %(default)s)")
    c = p.add_argument_group("client")
    c.add_argument(
        "--client", choices=CLIENTS, default="kafkite", help="kafkite or confluent (confluent-kafka)"
    )
    c.add_argument(
        "--batch-bytes",
        type=int,
        help="bytes per batch (default: kafkite 524288, confluent batch.size 1000000)",
    )
    c.add_argument("--linger-ms", type=float, help="confluent linger.ms (default: 1 in e2e mode, else 5)")
    c.add_argument(
        "--no-ack-latency",
        dest="ack_latency",
        action="store_false",
        help="do not time each acknowledgement (confluent: no Python callback per message, a faster client)",
    )
    c.add_argument(
        "--max-inflight", type=int, default=5, help="kafkite client: Produce requests in flight (default: 5)"
    )
    c.add_argument(
        "--client-config",
        metavar="KEY=VALUE",
        type=_key_value,
        action="append",
        default=[],
        help="extra confluent-kafka (librdkafka) setting, repeatable",
    )
    out = p.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print the results as JSON")
    out.add_argument(
        "--plot", metavar="FILE.png", help="save throughput and latency plots (needs matplotlib)"
    )
    out.add_argument("--quiet", "-q", action="store_true", help="no progress line and no notes on stderr")
    out.add_argument(
        "--interval", type=float, default=0.5, help="seconds per throughput sample (default: %(default)s)"
    )
    out.add_argument(
        "--idle-timeout",
        type=float,
        default=30.0,
        help="stop consumers that receive nothing for this many seconds (default: %(default)s)",
    )
    p.set_defaults(func=cmd_bench)


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    if args.topics:
        topics = [t.strip() for t in args.topics.split(",") if t.strip()]
    else:
        topics = [args.topic or "kafkite-bench"]
    return BenchOptions(
        mode=args.mode,
        bootstrap=args.bootstrap,
        topics=topics,
        partitions=args.partitions,
        size=args.size,
        count=args.count,
        duration=args.duration,
        rate=args.rate,
        acks=args.acks,
        compression=args.compression,
        producers=args.producers,
        consumers=args.consumers,
        client=args.client,
        batch_bytes=args.batch_bytes,
        linger_ms=args.linger_ms,
        max_inflight=args.max_inflight,
        interval=args.interval,
        client_config=dict(args.client_config),
        serve=args.serve,
        ceiling=args.ceiling,
        broker_overrides=list(args.broker_override),
        data_dir=args.data_dir,
        broker_pid=args.broker_pid,
        idle_timeout=args.idle_timeout,
        quiet=args.quiet,
        warmup=args.warmup,
        repeat=args.repeat,
        ack_latency=args.ack_latency,
        sustained=args.sustained,
        warmup_bytes=args.warmup_bytes,
        disk_bytes=args.disk_bytes,
        disk_seconds=args.disk_seconds,
        probe=args.probe,
        probe_rate=args.probe_rate,
    )


def cmd_bench(args: argparse.Namespace) -> int:
    # Loaded when the benchmark runs: `kafkite --version` and the other subcommands build this parser only.
    from kafkite.bench import report as rep

    try:
        if args.plot:
            rep.check_plot_available()
        result = Runner(options_from_args(args)).run()
    except (BenchError, rep.PlotUnavailable) as e:
        print(f"kafkite bench: {e}", file=sys.stderr)
        return 2
    except (ConnectionError, OSError, TimeoutError) as e:
        print(f"kafkite bench: cannot reach the broker: {e}", file=sys.stderr)
        return 1
    except KafkaClientError as e:
        print(f"kafkite bench: the broker refused: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kafkite bench: interrupted", file=sys.stderr)
        return 130
    print(rep.to_json(result) if args.json else rep.table(result))
    if args.plot:
        rep.plot(result, args.plot)
        if not args.quiet:
            print(f"plot written to {args.plot}", file=sys.stderr)
    failed = any(r.errors for run in result.runs for r in (run.preload, run.produce, run.consume) if r)
    return 1 if failed else 0
