"""A FUSE filesystem that loses what was not fsynced, on command: power loss for the file engine's tests
(after Jepsen's LazyFS; this is a small one of kafkite's own, in Python over libfuse 3 through mfusepy).

``python faults_lazyfs.py BACKING MOUNTPOINT CONTROL_SOCKET`` mounts BACKING at MOUNTPOINT in the foreground.
Metadata operations (create, mkdir, rename, unlink, rmdir) go to BACKING at once, as a journaling filesystem
makes them durable. File contents do not: writes and truncations are kept in memory (pages, and the ordered
list of the operations since the file's last fsync) and reach BACKING only when the file is fsynced. Reads see
the writes, as a page cache would.

The control socket takes one command per connection and answers one JSON line:

- ``crash drop``: forget every write not fsynced (all of it lost, as the page cache in a power cut);
- ``crash torn SEED``: keep a random prefix of the unsynced writes, in the order they were made, the last one
  possibly cut short (what reached the disk before the power went), and forget the rest;
- ``stats``: unsynced bytes, files and operations.

The process that wrote must be gone (killed) before a crash: it would go on seeing its own writes otherwise.
The mount uses no attribute or entry cache, and files opened after a crash read BACKING afresh.
"""

from __future__ import annotations

import errno
import json
import os
import random
import socket
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

PAGE = 4096


@dataclass
class FileState:
    """Unsynced contents of one file: its size, its dirty pages, the writes and truncations since its last
    fsync (in the global order, for a torn crash)."""

    size: int
    pages: dict[int, bytearray] = field(default_factory=dict)


Op = tuple[int, str, str, int, bytes]  # (sequence, path, "w"/"t", offset or length, data)


class LazyState:
    """The filesystem's memory, independent of FUSE (tested directly)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.lock = threading.RLock()
        self.files: dict[str, FileState] = {}
        self.ops: list[Op] = []
        self.seq = 0

    def real(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def _backing_size(self, path: str) -> int:
        try:
            return os.stat(self.real(path)).st_size
        except FileNotFoundError:
            return 0

    def _state(self, path: str) -> FileState:
        st = self.files.get(path)
        if st is None:
            st = self.files[path] = FileState(self._backing_size(path))
        return st

    def _backing_page(self, path: str, index: int) -> bytearray:
        page = bytearray(PAGE)
        try:
            with open(self.real(path), "rb") as f:
                f.seek(index * PAGE)
                got = f.read(PAGE)
        except FileNotFoundError:
            got = b""
        page[: len(got)] = got
        return page

    def size(self, path: str) -> int | None:
        with self.lock:
            st = self.files.get(path)
            return None if st is None else st.size

    def read(self, path: str, size: int, offset: int) -> bytes:
        with self.lock:
            st = self.files.get(path)
            if st is None:
                with open(self.real(path), "rb") as f:
                    f.seek(offset)
                    return f.read(size)
            end = min(offset + size, st.size)
            out = bytearray()
            pos = offset
            while pos < end:
                index, within = divmod(pos, PAGE)
                page = st.pages.get(index)
                if page is None:
                    page = self._backing_page(path, index)
                n = min(PAGE - within, end - pos)
                out += page[within : within + n]
                pos += n
            return bytes(out)

    def write(self, path: str, data: bytes, offset: int) -> int:
        with self.lock:
            st = self._state(path)
            pos = offset
            view = memoryview(data)
            while view:
                index, within = divmod(pos, PAGE)
                page = st.pages.get(index)
                if page is None:
                    page = st.pages[index] = self._page_as_seen(path, st, index)
                n = min(PAGE - within, len(view))
                page[within : within + n] = view[:n]
                view = view[n:]
                pos += n
            st.size = max(st.size, offset + len(data))
            self.seq += 1
            self.ops.append((self.seq, path, "w", offset, bytes(data)))
            return len(data)

    def _page_as_seen(self, path: str, st: FileState, index: int) -> bytearray:
        """A clean page as a reader sees it: the backing bytes below the logical size, zeros above."""
        page = self._backing_page(path, index)
        keep = st.size - index * PAGE
        if keep < PAGE:
            page[max(0, keep) :] = bytes(PAGE - max(0, keep))
        return page

    def truncate(self, path: str, length: int) -> None:
        with self.lock:
            st = self._state(path)
            if length < st.size:
                last = (length + PAGE - 1) // PAGE
                for index in [i for i in st.pages if i >= last]:
                    del st.pages[index]
                index, within = divmod(length, PAGE)
                if within:
                    page = st.pages.get(index)
                    if page is None:
                        page = st.pages[index] = self._page_as_seen(path, st, index)
                    page[within:] = bytes(PAGE - within)
            else:
                # Growing: the bytes between the old and the new size read as zeros.
                index, within = divmod(st.size, PAGE)
                if within:
                    page = st.pages.get(index)
                    if page is None:
                        page = st.pages[index] = self._page_as_seen(path, st, index)
                    page[within:] = bytes(PAGE - within)
            st.size = length
            self.seq += 1
            self.ops.append((self.seq, path, "t", length, b""))

    def fsync(self, path: str) -> None:
        """Make the file's contents durable: its pages and size go to the backing file."""
        with self.lock:
            st = self.files.pop(path, None)
            self.ops = [op for op in self.ops if op[1] != path]
            if st is None:
                return
            fd = os.open(self.real(path), os.O_WRONLY)
            try:
                for index, page in sorted(st.pages.items()):
                    start = index * PAGE
                    if start >= st.size:
                        continue
                    os.pwrite(fd, page[: min(PAGE, st.size - start)], start)
                os.ftruncate(fd, st.size)
                os.fsync(fd)
            finally:
                os.close(fd)

    def rename(self, old: str, new: str) -> None:
        with self.lock:
            os.rename(self.real(old), self.real(new))
            self.files.pop(new, None)
            self.ops = [op for op in self.ops if op[1] != new]
            st = self.files.pop(old, None)
            if st is not None:
                self.files[new] = st
            self.ops = [(s, new if p == old else p, k, o, d) for s, p, k, o, d in self.ops]

    def forget(self, path: str) -> None:
        with self.lock:
            self.files.pop(path, None)
            self.ops = [op for op in self.ops if op[1] != path]

    def stats(self) -> dict[str, int]:
        with self.lock:
            return {
                "files": len(self.files),
                "ops": len(self.ops),
                "bytes": sum(len(d) for *_, d in self.ops),
            }

    def crash(self, mode: str, seed: int = 0) -> dict[str, Any]:
        """Lose the unsynced writes: all of them ("drop"), or all but a random prefix ("torn")."""
        with self.lock:
            if mode not in ("drop", "torn"):
                raise ValueError(f"unknown crash mode {mode!r}")
            ops = sorted(self.ops)
            kept = 0
            torn = False
            if mode == "torn" and ops:
                rng = random.Random(seed)
                kept = rng.randrange(len(ops) + 1)
                for _, path, kind, arg, data in ops[:kept]:
                    self._apply(path, kind, arg, data)
                if kept < len(ops) and ops[kept][2] == "w" and len(ops[kept][4]) > 1:
                    _, path, _, arg, data = ops[kept]
                    self._apply(path, "w", arg, data[: rng.randrange(1, len(data))])
                    torn = True
            lost = len(ops) - kept
            self.files.clear()
            self.ops.clear()
            return {"mode": mode, "ops": len(ops), "kept": kept, "lost": lost, "torn": torn}

    def _apply(self, path: str, kind: str, arg: int, data: bytes) -> None:
        try:
            fd = os.open(self.real(path), os.O_WRONLY)
        except FileNotFoundError:
            return
        try:
            if kind == "w":
                os.pwrite(fd, data, arg)
            else:
                os.ftruncate(fd, arg)
        finally:
            os.close(fd)


def make_operations(state: LazyState) -> Any:
    import mfusepy as fuse

    class LazyFS(fuse.Operations):  # type: ignore[misc]
        use_ns = True  # times in nanoseconds

        def __init__(self) -> None:
            self.s = state

        def _real(self, path: str) -> str:
            return self.s.real(path)

        def access(self, path: str, amode: int) -> int:
            if not os.access(self._real(path), amode):
                raise fuse.FuseOSError(errno.EACCES)
            return 0

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            try:
                st = os.lstat(self._real(path))
            except OSError as e:
                raise fuse.FuseOSError(e.errno) from None
            attrs = {key: getattr(st, key) for key in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size")}
            attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
            size = self.s.size(path)
            if size is not None:
                attrs["st_size"] = size
            return attrs

        def readdir(self, path: str, fh: int) -> list[str]:
            return [".", "..", *os.listdir(self._real(path))]

        def mkdir(self, path: str, mode: int) -> int:
            os.mkdir(self._real(path), mode)
            return 0

        def rmdir(self, path: str) -> int:
            os.rmdir(self._real(path))
            return 0

        def create(self, path: str, mode: int, fi: Any = None) -> int:
            fd = os.open(self._real(path), os.O_WRONLY | os.O_CREAT, mode)
            os.close(fd)
            return 0

        def open(self, path: str, flags: int) -> int:
            if not os.path.exists(self._real(path)):
                raise fuse.FuseOSError(errno.ENOENT)
            return 0

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            try:
                return self.s.read(path, size, offset)
            except OSError as e:
                raise fuse.FuseOSError(e.errno) from None

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            return self.s.write(path, data, offset)

        def truncate(self, path: str, length: int, fh: int | None = None) -> int:
            self.s.truncate(path, length)
            return 0

        def flush(self, path: str, fh: int) -> int:
            return 0  # close() does not make anything durable

        def release(self, path: str, fh: int) -> int:
            return 0

        def fsync(self, path: str, datasync: int, fh: int) -> int:
            self.s.fsync(path)
            return 0

        def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
            return 0  # metadata is durable at once

        def rename(self, old: str, new: str) -> int:
            try:
                self.s.rename(old, new)
            except OSError as e:
                raise fuse.FuseOSError(e.errno) from None
            return 0

        def unlink(self, path: str) -> int:
            os.unlink(self._real(path))
            self.s.forget(path)
            return 0

        def chmod(self, path: str, mode: int) -> int:
            os.chmod(self._real(path), mode)
            return 0

        def chown(self, path: str, uid: int, gid: int) -> int:
            os.chown(self._real(path), uid, gid)
            return 0

        def utimens(self, path: str, times: Any = None) -> int:
            os.utime(self._real(path), ns=times)
            return 0

        def statfs(self, path: str) -> dict[str, int]:
            st = os.statvfs(self._real(path))
            return {
                key: getattr(st, key)
                for key in (
                    "f_bavail",
                    "f_bfree",
                    "f_blocks",
                    "f_bsize",
                    "f_favail",
                    "f_ffree",
                    "f_files",
                    "f_flag",
                    "f_frsize",
                    "f_namemax",
                )
            }

    return LazyFS()


def serve_control(state: LazyState, path: str) -> None:
    """Answer control commands on a unix socket (one per connection), in a daemon thread."""
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen()

    def loop() -> None:
        while True:
            conn, _ = server.accept()
            with conn:
                words = conn.recv(1024).decode().split()
                try:
                    if words[:1] == ["crash"]:
                        seed = int(words[2]) if len(words) > 2 else 0
                        reply: dict[str, Any] = state.crash(words[1] if len(words) > 1 else "drop", seed)
                    elif words[:1] == ["stats"]:
                        reply = state.stats()
                    else:
                        reply = {"error": f"unknown command {words}"}
                except Exception as e:
                    reply = {"error": repr(e)}
                conn.sendall(json.dumps(reply).encode() + b"\n")

    threading.Thread(target=loop, name="lazyfs-control", daemon=True).start()


def main(argv: list[str]) -> None:
    import mfusepy as fuse

    backing, mountpoint, control = argv
    state = LazyState(os.path.abspath(backing))
    serve_control(state, control)
    fuse.FUSE(
        make_operations(state),
        mountpoint,
        foreground=True,
        nothreads=False,
        attr_timeout=0,
        entry_timeout=0,
        negative_timeout=0,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
