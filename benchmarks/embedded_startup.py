"""How fast an embedded broker (``kafkite.embedded``) is ready, and what the pytest plugin adds to a session.

* **cold start**: a fresh Python process imports ``kafkite.embedded``, starts an ``EmbeddedBroker`` and
  sends ApiVersions over a socket; the time from before the import to the answer (what a suite pays once).
* **warm start**: the next brokers started in that same process, start to first ApiVersions answered.
* **stop**: ``EmbeddedBroker.stop()`` (listeners closed, thread joined).
* **plugin overhead per session**: in a pytest session whose one test takes ``kafkite_bootstrap``, the setup
  and teardown time pytest reports for that test (``--durations``): importing the broker, starting it,
  stopping it. Also the import of the plugin module itself (paid by every session, fixture used or not), and
  the wall time of such a session beside one whose test takes no fixture (noisy on a busy machine).

Usage: ``.venv/bin/python benchmarks/embedded_startup.py [--repeat N] [--engine memory|file] [--quick]``.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import parser, save

PROBE = r"""
import json, socket, struct, sys, time
t0 = time.perf_counter()
from kafkite.embedded import EmbeddedBroker
engine, warm_runs = sys.argv[1], int(sys.argv[2])

def api_versions(host, port):
    # ApiVersions v0: api_key 18, version 0, correlation id 1, client id "bench"; an empty body.
    body = struct.pack(">hhih", 18, 0, 1, 5) + b"bench"
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
        data = s.recv(size, socket.MSG_WAITALL)
    assert struct.unpack(">ih", data[:6]) == (1, 0), data[:6]

out = {"starts": [], "stops": []}
for i in range(1 + warm_runs):
    t = t0 if i == 0 else time.perf_counter()
    b = EmbeddedBroker(engine).start()
    api_versions(b.host, b.port)
    out["starts"].append(time.perf_counter() - t)
    t = time.perf_counter()
    b.stop()
    out["stops"].append(time.perf_counter() - t)
print(json.dumps(out))
"""

WITH_FIXTURE = "def test_one(kafkite_bootstrap):\n    assert kafkite_bootstrap\n"
WITHOUT_FIXTURE = "def test_one():\n    assert True\n"


def ms(values: list[float]) -> dict[str, Any]:
    v = [x * 1000 for x in values]
    return {
        "median_ms": round(statistics.median(v), 1),
        "min_ms": round(min(v), 1),
        "max_ms": round(max(v), 1),
        "runs": len(v),
    }


def probe(engine: str, warm_runs: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as cwd:
        done = subprocess.run(
            [sys.executable, "-c", PROBE, engine, str(warm_runs)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
            cwd=cwd,
        )
    result: dict[str, list[float]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def pytest_session(project: Path) -> tuple[float, float]:
    """Wall time of a pytest session in ``project``, and the setup + teardown time of its test."""
    t = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-vv",
            "--durations=0",
            "-p",
            "no:cacheprovider",
            str(project),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=project,
    )
    wall = time.perf_counter() - t
    fixture = 0.0
    for line in done.stdout.splitlines():
        m = re.match(r"\s*([0-9.]+)s (setup|teardown)\s+\S+::test_one", line)
        if m:
            fixture += float(m.group(1))
    return wall, fixture


def plugin_import() -> float:
    """Seconds to import kafkite.pytest_plugin in a fresh process (pytest itself already imported)."""
    code = (
        "import pytest, time; t = time.perf_counter(); "
        "import kafkite.pytest_plugin; print(time.perf_counter() - t)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return float(done.stdout.strip())


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--engine", default="memory", choices=["memory", "file"])
    args = ap.parse_args()
    repeat = 3 if args.quick else max(1, args.repeat) * 5
    cold: list[float] = []
    warm: list[float] = []
    stops: list[float] = []
    for _ in range(repeat):
        r = probe(args.engine, warm_runs=5)
        cold.append(r["starts"][0])
        warm += r["starts"][1:]
        stops += r["stops"]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "with").mkdir()
        (root / "without").mkdir()
        (root / "with" / "test_with.py").write_text(WITH_FIXTURE)
        (root / "without" / "test_without.py").write_text(WITHOUT_FIXTURE)
        ini = f"[pytest]\nkafkite_engine = {args.engine}\n"
        for d in ("with", "without"):
            (root / d / "pytest.ini").write_text(ini)
        pytest_session(root / "without")  # warm the file system caches
        with_fixture: list[float] = []
        without_fixture: list[float] = []
        fixture_time: list[float] = []
        for i in range(repeat):
            order = ["with", "without"] if i % 2 == 0 else ["without", "with"]
            for d in order:
                wall, fixture = pytest_session(root / d)
                if d == "with":
                    with_fixture.append(wall)
                    fixture_time.append(fixture)
                else:
                    without_fixture.append(wall)
    imports = [plugin_import() for _ in range(repeat)]

    figures = {
        "engine": args.engine,
        "cold_start_to_first_api_versions": ms(cold),
        "warm_start_to_first_api_versions": ms(warm),
        "stop": ms(stops),
        "plugin_overhead_per_session": ms(fixture_time),
        "plugin_module_import": ms(imports),
        "pytest_session_with_kafkite_bootstrap": ms(with_fixture),
        "pytest_session_without_a_fixture": ms(without_fixture),
    }
    width = max(len(k) for k in figures)
    for k, v in figures.items():
        if isinstance(v, dict):
            spread = f"({v['min_ms']:.1f} - {v['max_ms']:.1f}, {v['runs']} runs)"
            print(f"{k:<{width}}  {v['median_ms']:8.1f} ms  {spread}")
    save(f"embedded_startup-{args.engine}", args, {"figures": figures})


if __name__ == "__main__":
    main()
