"""The disk under a benchmark: its own sequential write bandwidth, and how much the page cache absorbs first.

A broker writes through the page cache: the first gigabytes go at memory speed, then the kernel's dirty-page
limit is reached and writes proceed at the speed the disk takes them (writeback). A sustained benchmark warms
up past that point (``dirty_limit_bytes``) and compares what it measures with the disk's own rate
(``write_bandwidth``: buffered sequential writes then ``fdatasync``, as ``dd ... conv=fdatasync`` measures).
A probe of a few gigabytes measures mostly the page cache; a sustained run is compared with a probe that
writes for as long as the run does, which is what the machine keeps up.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BLOCK = 1 << 20
DEFAULT_PROBE_BYTES = 2 << 30
# A probe bounded by time writes at most this (a sustained run: or a sixth of the free space).
SUSTAINED_PROBE_MAX_BYTES = 64 << 30


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts:
                    out[key] = int(parts[0]) * 1024
    except (OSError, ValueError):
        pass
    return out


def _vm(name: str) -> int | None:
    try:
        return int(Path(f"/proc/sys/vm/{name}").read_text())
    except (OSError, ValueError):
        return None


def dirty_limit_bytes() -> int | None:
    """Dirty page cache at which the kernel makes writers wait for the disk (``vm.dirty_bytes``, else
    ``vm.dirty_ratio`` of the memory the page cache may use); None where it cannot be read."""
    fixed = _vm("dirty_bytes")
    if fixed:
        return fixed
    ratio = _vm("dirty_ratio")
    mem = _meminfo()
    if ratio is None or "MemFree" not in mem:
        return None
    dirtyable = mem["MemFree"] + mem.get("Active(file)", 0) + mem.get("Inactive(file)", 0)
    return dirtyable * ratio // 100


def dirty_bytes() -> int | None:
    """Dirty plus under-writeback page cache now (``/proc/meminfo``)."""
    mem = _meminfo()
    if "Dirty" not in mem:
        return None
    return mem["Dirty"] + mem.get("Writeback", 0)


@dataclass
class DiskBandwidth:
    directory: str
    bytes: int
    seconds: float
    method: str = "buffered sequential writes of 1 MiB, then fdatasync (as dd conv=fdatasync)"
    for_seconds: float | None = None  # the probe wrote for this long (None: a fixed number of bytes)

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "mb_per_s": round(self.mb_per_s, 1),
            "method": self.method,
            "for_seconds": self.for_seconds,
        }


def sustained_retention_bytes(directory: str | Path, partitions: int) -> int:
    """Per-partition ``log.retention.bytes`` for a broker that a sustained run writes into ``directory``: the
    log of each partition kept to its share of a third of the free space (at least 1 GiB), so that a long run,
    or several in a row, cannot fill the file system. A broker written at the disk's speed deletes its oldest
    segments as a production one does; those left the page cache first, so deleting them costs the run little.
    """
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    return max(1 << 30, free // 3 // max(1, partitions))


def write_bandwidth(
    directory: str | Path, nbytes: int = DEFAULT_PROBE_BYTES, seconds: float | None = None
) -> DiskBandwidth:
    """Write ``nbytes`` to a new file in ``directory`` (or for ``seconds``, if that comes first) and sync it:
    the disk's sequential write rate, the sync included. The file is removed afterwards. Less is written when
    the file system has not four times that much free."""
    directory = Path(directory)
    free = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize
    nbytes = max(BLOCK, min(nbytes, free // 4) // BLOCK * BLOCK)
    path = directory / f".kafkite-bench-disk-{os.getpid()}"
    block = os.urandom(BLOCK)  # incompressible, as message payloads may be
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        started = time.perf_counter()
        deadline = None if seconds is None else started + seconds
        done = 0
        while done < nbytes:
            done += os.write(fd, block)
            if deadline is not None and done % (64 * BLOCK) == 0 and time.perf_counter() >= deadline:
                break
        os.fdatasync(fd)
        elapsed = time.perf_counter() - started
    finally:
        os.close(fd)
        path.unlink()
    return DiskBandwidth(str(directory), done, elapsed, for_seconds=seconds)
