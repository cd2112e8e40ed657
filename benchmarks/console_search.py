"""How fast the web console searches messages, and whether the broker keeps answering Kafka clients meanwhile.

A broker (``kafkite serve``, file engine, console on) gets ``--records`` JSON records of about 100 bytes in
one partition (produced with confluent-kafka). Then, ``--repeat`` times, a console search that matches nothing
scans all of them (``GET /api/topics/scan/messages?q=...&max_scan=N``) while another thread sends ApiVersions
to the Kafka listener every 5 ms; the same pinger runs for a while with no search, for comparison.

Reported: records scanned per second (median, min - max) and the ApiVersions latency (median, 99th
percentile and max) with and without a search running. The search decodes and filters records in a worker
thread; a figure near the idle one says the event loop stayed free.

Usage: ``.venv/bin/python benchmarks/console_search.py [--records N] [--repeat N] [--quick]``.
"""

from __future__ import annotations

import json
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from _common import parser, save

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api_versions(sock: socket.socket) -> None:
    body = struct.pack(">hhih", 18, 0, 1, 5) + b"bench"
    sock.sendall(struct.pack(">i", len(body)) + body)
    size = struct.unpack(">i", sock.recv(4, socket.MSG_WAITALL))[0]
    sock.recv(size, socket.MSG_WAITALL)


def ping(port: int, stop: threading.Event, out: list[float]) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        while not stop.is_set():
            t = time.perf_counter()
            api_versions(s)
            out.append(time.perf_counter() - t)
            time.sleep(0.005)


def pinged(port: int, during: Any) -> tuple[Any, list[float]]:
    stop = threading.Event()
    lat: list[float] = []
    t = threading.Thread(target=ping, args=(port, stop, lat))
    t.start()
    try:
        result = during()
    finally:
        stop.set()
        t.join()
    return result, lat


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--records", type=int, default=100_000, help="records in the searched partition")
    args = ap.parse_args()
    records = 10_000 if args.quick else args.records
    kafka, console = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "kafkite.cli", "serve", "--override", f"log.dirs={tmp}/data"]
        for o in [
            f"listeners=PLAINTEXT://127.0.0.1:{kafka}",
            f"console.listener=http://127.0.0.1:{console}",
            "rest.listeners=",
            "stomp.listeners=",
            *args.override,
        ]:
            cmd += ["--override", o]
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{console}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(url + "/api/session", timeout=1).read()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit("the broker did not start") from None
                    time.sleep(0.1)
            from confluent_kafka import Producer

            p = Producer({"bootstrap.servers": f"127.0.0.1:{kafka}", "linger.ms": 20})
            for i in range(records):
                p.produce("scan", json.dumps({"n": i, "pad": "x" * 80}).encode(), key=f"k{i}".encode())
                if i % 10_000 == 0:
                    p.poll(0)
            if p.flush(120):
                raise SystemExit("records not delivered")
            _, idle = pinged(kafka, lambda: time.sleep(2))
            rates: list[float] = []
            busy: list[float] = []
            for _ in range(args.repeat):

                def search() -> float:
                    t = time.perf_counter()
                    q = f"partition=0&q=no-such-text&max_scan={records}"
                    with urllib.request.urlopen(f"{url}/api/topics/scan/messages?{q}", timeout=300) as r:
                        got = json.loads(r.read())
                    assert got["scanned"] == records, got["scanned"]
                    return records / (time.perf_counter() - t)

                rate, lat = pinged(kafka, search)
                rates.append(rate)
                busy += lat
        finally:
            proc.terminate()
            proc.wait(30)

    def ms(xs: list[float]) -> dict[str, float]:
        xs = sorted(xs)
        return {
            "median": round(statistics.median(xs) * 1000, 2),
            "p99": round(xs[int(len(xs) * 0.99)] * 1000, 2),
            "max": round(xs[-1] * 1000, 2),
            "samples": len(xs),
        }

    result = {
        "records": records,
        "records_per_second": {
            "median": round(statistics.median(rates)),
            "min": round(min(rates)),
            "max": round(max(rates)),
            "runs": [round(r) for r in rates],
        },
        "api_versions_ms_idle": ms(idle),
        "api_versions_ms_while_searching": ms(busy),
    }
    print(f"search of {records:,} records: {result['records_per_second']}")
    print(f"ApiVersions latency idle: {result['api_versions_ms_idle']} ms")
    print(f"ApiVersions latency while searching: {result['api_versions_ms_while_searching']} ms")
    save("console_search", args, result)


if __name__ == "__main__":
    main()
