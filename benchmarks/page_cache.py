"""Fill the page cache before a write benchmark, and show what a buffered write costs the kernel meanwhile.

A broker writes through the page cache. On a long-running machine the page cache already holds almost all
free memory, so each new write takes a page back from old cached data. A freshly booted machine, or a virtual
machine whose balloon driver hands freed memory back to the host (virtio-balloon free page reporting, as on
Firecracker and QEMU guests), has gigabytes of free memory instead, and on such a VM the first write into each
of those pages makes the host back it: the kernel's copy into the page cache then costs several times more CPU
per byte. Benchmarks that write gigabytes (sustained produce, 1 KiB produce) measure a different machine
depending on which of the two states they start in, and a file deleted between runs returns its memory to
the host again.

    .venv/bin/python benchmarks/page_cache.py fill /var/tmp/kafkite-page-cache   # write until memory is full
    ... run the benchmarks (keep the file meanwhile) ...
    .venv/bin/python benchmarks/page_cache.py remove /var/tmp/kafkite-page-cache

``fill`` writes 1 MiB blocks (fsynced every GiB, so they are clean and can be evicted at once) until MemFree
stops falling, and prints, per GiB, the write rate and the kernel CPU seconds per GB it cost: the difference
between writing into free memory and into recycled page cache is visible in its output.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

GIB = 1 << 30
BLOCK = 1 << 20


def mem_free() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemFree:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemFree in /proc/meminfo")


def fill(path: Path, max_bytes: int) -> int:
    """Write ``path`` GiB by GiB until MemFree no longer falls (or ``max_bytes``, or a quarter of the free
    space is used); returns the bytes written."""
    st = os.statvfs(path.parent)
    limit = min(max_bytes, st.f_bavail * st.f_frsize // 4)
    block = os.urandom(BLOCK)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    written = 0
    stalled = 0
    try:
        while written + GIB <= limit and stalled < 2:
            before = mem_free()
            cpu0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime
            t0 = time.perf_counter()
            for _ in range(GIB // BLOCK):
                written += os.write(fd, block)
            os.fsync(fd)
            seconds = time.perf_counter() - t0
            kernel = resource.getrusage(resource.RUSAGE_SELF).ru_stime - cpu0
            after = mem_free()
            stalled = stalled + 1 if after >= before - GIB // 8 else 0
            rate = GIB / seconds / 1e6
            per_gb = kernel / (GIB / 1e9)
            print(
                f"{written / GIB:5.0f} GiB  {rate:7.0f} MB/s  kernel {per_gb:5.2f} s/GB"
                f"  MemFree {after / GIB:5.1f} GiB",
                flush=True,
            )
    finally:
        os.close(fd)
    return written


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["fill", "remove"])
    ap.add_argument("path", type=Path, help="the file that holds the page cache (keep it during the runs)")
    ap.add_argument("--max-gib", type=int, default=64, help="write at most this much (default: 64)")
    args = ap.parse_args()
    if args.action == "remove":
        args.path.unlink(missing_ok=True)
        return 0
    written = fill(args.path, args.max_gib * GIB)
    print(f"{written / GIB:.0f} GiB in {args.path}; MemFree now {mem_free() / GIB:.1f} GiB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
