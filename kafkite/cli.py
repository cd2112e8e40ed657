"""The ``kafkite`` command: serve, and the tools around the broker."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from kafkite.config import BrokerConfig, ConfigError, help_text, load_config

log = logging.getLogger("kafkite")

if TYPE_CHECKING:
    from kafkite.tools import Subcommands


def _serve_epilog() -> str:
    return help_text()


# Subcommands besides ``serve``: "module:function" where ``function(subparsers)`` adds a parser whose
# ``func(args) -> int`` runs it.
COMMANDS: list[str] = [
    "kafkite.tools.group:add_parser",
    "kafkite.bench.cli:add_parser",
    "kafkite.tools.topic:add_parser",
    "kafkite.tools.produce:add_parser",
    "kafkite.tools.consume:add_parser",
    "kafkite.tools.security:add_parser",
    "kafkite.tools.audit:add_parser",
    "kafkite.migrate.cli:add_parser",
]


def _load(ref: str) -> Callable[[Subcommands], None]:
    module, _, name = ref.partition(":")
    add_parser: Callable[[Subcommands], None] = getattr(importlib.import_module(module), name)
    return add_parser


async def run_broker(config: BrokerConfig, ready: asyncio.Event | None = None) -> None:
    """Start the broker (see kafkite.startup), serve until SIGINT or SIGTERM (or cancellation), then stop."""
    # The broker is loaded when it starts: `kafkite --version` and the tools' subcommands do without it.
    from kafkite.startup import start_broker

    running = await start_broker(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread: the caller stops the broker by cancelling this task
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        await running.stop()


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, args.override or [])
    except (ConfigError, OSError) as e:
        print(f"kafkite: configuration error: {e}", file=sys.stderr)
        return 2
    # The serve subcommand's own modules: `kafkite --version` and the tools' subcommands do without them.
    from kafkite.metrics.logfmt import configure_logging
    from kafkite.startup import StartupError, missing_extra

    configure_logging(config, sys.stderr)
    for warning in config.warnings:
        log.warning("configuration: %s", warning)
    if config["event.loop"] == "uvloop":
        problem = missing_extra("uvloop", "event.loop=uvloop", "uvloop")
        if problem is not None:
            print(f"kafkite: {problem}", file=sys.stderr)
            return 2
        import uvloop

        uvloop.install()
    try:
        asyncio.run(run_broker(config))
    except ConfigError as e:
        print(f"kafkite: configuration error: {e}", file=sys.stderr)
        return 2
    except (StartupError, OSError) as e:  # OSError: ListenerError names the key and the address
        print(f"kafkite: cannot start: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("kafkite")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kafkite", description="A Kafka-wire-protocol broker shaped after OCI Streaming"
    )
    parser.add_argument("--version", action="version", version=f"kafkite {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="run the broker",
        description="Run the broker (listens on localhost:9092 with data under ./data by default).",
        epilog=_serve_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--config", metavar="FILE", help="a server.properties file")
    serve.add_argument(
        "--override", metavar="KEY=VALUE", action="append", help="set a configuration key (repeatable)"
    )
    serve.set_defaults(func=cmd_serve)
    for ref in COMMANDS:
        _load(ref)(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
