"""Open segment files on a descriptor budget.

A broker with many partitions cannot keep every segment file open: the process has a descriptor limit
(``ulimit -n``) and needs descriptors for connections too. Segment stores therefore open their files through a
``FileCache``: at most ``max_open`` files are held open by the cache, least recently used first out; a file
the cache let go is opened again on its next use.

A descriptor lives in a ``FileHandle``, closed when its last reference goes (CPython frees it at once): the
cache's reference, a ``FileRange`` of a fetch response waiting for ``sendfile``, or the writer thread's
while it writes. So the cache may let a handle go at any time without pulling a descriptor from under its
users, and a descriptor number is never reused while anyone still holds the handle that owned it. Handles
held beyond the cache's budget are those of responses and writes in flight: bounded by them, not by the
number of partitions.
"""

from __future__ import annotations

import os
import resource
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

MIN_OPEN_FILES = 16


class HasFileno(Protocol):
    def fileno(self) -> int: ...


class FileHandle:
    """One open descriptor, closed when the handle is closed or its last reference goes."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError("I/O operation on a closed file handle")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass

    def __repr__(self) -> str:
        return f"FileHandle(fd={self._fd})"


class Openable(Protocol):
    """What the cache opens: a path that may change (renames) while the handle stays valid."""

    path: Path


class FileCache:
    """Least recently used open files, at most ``max_open`` of them (thread-safe)."""

    def __init__(self, max_open: int) -> None:
        if max_open < MIN_OPEN_FILES:
            raise ValueError(f"the open file budget must be at least {MIN_OPEN_FILES}, got {max_open}")
        self.max_open = max_open
        self._open: OrderedDict[Openable, FileHandle] = OrderedDict()
        self._lock = threading.Lock()
        self.opened = 0  # files opened (first time or again after eviction): for metrics and tests
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._open)

    def handle(self, owner: Openable, *, create: bool = False) -> FileHandle:
        """The open handle of ``owner``'s file, opening it (``create``: creating it empty) when needed."""
        with self._lock:
            h = self._open.get(owner)
            if h is not None:
                self._open.move_to_end(owner)
                return h
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT | os.O_TRUNC if create else 0)
        new = FileHandle(os.open(owner.path, flags, 0o644))
        evicted: list[FileHandle] = []
        with self._lock:
            h = self._open.get(owner)
            if h is not None:  # another thread opened it meanwhile: keep that one
                self._open.move_to_end(owner)
                evicted.append(new)
            else:
                h = self._open[owner] = new
                self.opened += 1
                while len(self._open) > self.max_open:
                    evicted.append(self._open.popitem(last=False)[1])
                    self.evicted += 1
        del evicted  # closed here, outside the lock, unless still in use elsewhere
        return h

    def cached(self, owner: Openable) -> FileHandle | None:
        """The handle of ``owner`` if the cache holds one open (never opens)."""
        with self._lock:
            return self._open.get(owner)

    def release(self, owner: Openable) -> None:
        """Let ``owner``'s handle go (its file is closed once nobody else holds the handle)."""
        with self._lock:
            h = self._open.pop(owner, None)
        del h


def descriptor_limit() -> int:
    """The process's soft limit on open descriptors (``ulimit -n``)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def default_open_files(limit: int | None = None) -> int:
    """The segment file budget for a descriptor limit: half of it, the other half left to connections,
    sockets and files opened for a moment (index and checkpoint files); never below ``MIN_OPEN_FILES``."""
    limit = descriptor_limit() if limit is None else limit
    return max(MIN_OPEN_FILES, limit // 2)
