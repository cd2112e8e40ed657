"""Produce-side record validation in isolation: records checked per second on one core.

What the broker does to every produced batch after its CRC: ``records.scan_records`` over the records section
(after inflating it, for compressed batches). Batches are built once and checked again and again; the figure
is records per second of process CPU time (one core), for 100-byte and 1 KiB values:

- uniform: every record of a batch has the same layout (one value size, as benchmark producers and many
  real ones write), which the walker checks a column at a time; timestamps as from a producer sending a
  million messages a second (deltas of a few milliseconds);
- uniform-slow: the same from a producer sending 20,000 a second (deltas up to ~500 ms: timestamp deltas of
  one and two bytes, so runs of two layouts);
- varied: value sizes vary record to record (+-20%), which the walker checks one record at a time;
- keyed+header: varied, with a key and one header per record;
- lz4 / zstd: uniform records in a compressed batch (inflating included).

    .venv/bin/python benchmarks/record_validation.py            # prints a table
    .venv/bin/python benchmarks/record_validation.py --json     # the same as JSON
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

from kafkite.protocol import compression, records

BATCH_BYTES = 1 << 20  # records per batch: as many as fit in 1 MiB (librdkafka's batch.size default)


def _batch(size: int, kind: str, codec: int = 0) -> bytes:
    rnd = random.Random(size)
    rate = 20_000 if kind == "uniform-slow" else 1_000_000  # messages/s: the spread of timestamps
    n = max(1, BATCH_BYTES // (size + 10))
    recs: list[records.RecordInput] = []
    for i in range(n):
        vary = not kind.startswith("uniform")
        value = b"x" * (size + (rnd.randrange(-size // 5, size // 5 + 1) if vary else 0))
        key = b"key-%d" % (i % 100) if kind == "keyed+header" else None
        headers = [("trace-id", b"0123456789abcdef")] if kind == "keyed+header" else []
        recs.append((key, value, headers, 1_700_000_000_000 + i * 1000 // rate))
    return records.build_batch(recs, compression=codec)


def _check(batch: memoryview) -> int:
    h = records.read_header(batch, 0)
    if h.compression == records.COMPRESSION_NONE:
        records.scan_records(batch, records.BATCH_HEADER_SIZE, len(batch), h.records_count)
    else:
        data = compression.decompress(h.compression, batch[records.BATCH_HEADER_SIZE :], 64 << 20)
        records.scan_records(data, 0, len(data), h.records_count)
    return h.records_count


def measure(size: int, kind: str, codec: int = 0, seconds: float = 1.0) -> dict[str, float]:
    batch = memoryview(bytearray(_batch(size, kind, codec)))
    _check(batch)
    n = 0
    start = time.process_time()
    while (elapsed := time.process_time() - start) < seconds:
        n += _check(batch)
    return {
        "records_per_s": n / elapsed,
        "mb_per_s": n * size / elapsed / 1e6,
        "records_per_batch": records.read_header(batch, 0).records_count,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=1.0, help="CPU seconds per case")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    cases = [
        (size, kind, codec)
        for size in (100, 1024)
        for kind, codec in (
            ("uniform", 0),
            ("uniform-slow", 0),
            ("varied", 0),
            ("keyed+header", 0),
            ("uniform", compression.CODEC_LZ4),
            ("uniform", compression.CODEC_ZSTD),
        )
    ]
    load = os.getloadavg()
    out = []
    for size, kind, codec in cases:
        r = measure(size, kind, codec, args.seconds)
        r.update(size=size, kind=kind, codec=compression.CODEC_NAMES[codec])
        out.append(r)
    if args.json:
        print(json.dumps({"load_average_start": load, "end": os.getloadavg(), "cases": out}, indent=2))
        return
    head = (
        f"{'value':>6} {'records':<13} {'codec':<6} {'records/s per core':>19} {'MB/s':>8} {'per batch':>10}"
    )
    print(head)
    for r in out:
        print(
            f"{r['size']:>6} {r['kind']:<13} {r['codec']:<6} {r['records_per_s']:>19,.0f}"
            f" {r['mb_per_s']:>8,.0f} {r['records_per_batch']:>10,.0f}"
        )
    print(f"load average {load[0]:.2f} -> {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
