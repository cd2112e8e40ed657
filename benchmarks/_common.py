"""Shared pieces of the benchmark scenarios: options, result files, one-line summaries."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from kafkite.bench import report
from kafkite.bench.runner import BenchError, BenchOptions, BenchReport, Runner, host_info

RESULTS = Path(__file__).resolve().parent / "results"


LOAD_AT_START: list[float] = []


def parser(doc: str | None) -> argparse.ArgumentParser:
    LOAD_AT_START[:] = [round(x, 2) for x in os.getloadavg()]
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smaller run, to check the scenario works")
    ap.add_argument(
        "--override", action="append", default=[], help="broker setting KEY=VALUE for the brokers it starts"
    )
    ap.add_argument("--quiet", action="store_true", help="no progress line")
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs against each broker, alternating with the ceiling; median and spread (default: 3)",
    )
    ap.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="seconds of uncounted producing before each run (default: 1)",
    )
    ap.add_argument("--no-save", action="store_true", help=f"do not write the JSON result under {RESULTS}")
    warn_if_busy()
    return ap


def warn_if_busy() -> None:
    """Benchmarks on a busy machine measure the other load: say so before starting."""
    load = os.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1):
        cpus = os.cpu_count()
        print(f"warning: load average {load:.2f} on {cpus} CPUs: figures will be noisy", file=sys.stderr)


def run(options: BenchOptions) -> BenchReport:
    try:
        result = Runner(options).run()
    except BenchError as e:
        raise SystemExit(f"benchmark failed: {e}") from None
    print(report.table(result))
    print()
    return result


def save(name: str, args: argparse.Namespace, payload: dict[str, Any]) -> None:
    try:
        git = ["git", "rev-parse", "--short", "HEAD"]
        done = subprocess.run(git, capture_output=True, text=True, cwd=RESULTS.parent, check=True)
        commit: str | None = done.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    payload = {
        "scenario": name,
        "command": " ".join(sys.argv),
        "commit": commit,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": host_info(),
        "load_average_at_start": LOAD_AT_START,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "load_average_note": "os.getloadavg() (1, 5, 15 min) of the whole machine, shared with other work",
        **payload,
    }
    if args.no_save:
        return
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"results written to {path}")


def medians(report: BenchReport, label: str, phase: str) -> dict[str, Any]:
    """``report.summary()`` of one broker and phase: msgs/s, MB/s, latency, each {median, min, max, runs}."""
    return report.summary().get(label, {}).get(phase, {})


def figure(spread: dict[str, Any], digits: int = 0) -> str:
    """``123,456 (120,000 - 130,000)``: median and spread, for the one-line summaries."""
    f = f"{{:,.{digits}f}}"
    return f"{f.format(spread['median'])} ({f.format(spread['min'])} - {f.format(spread['max'])})"
