"""The audit trail: every control-plane change and every refused attempt, on every surface, in one format.

One record is one JSON object on one line::

    {"time": "2026-01-02T03:04:05.678Z", "ts": 1767323045678, "surface": "kafka", "principal": "User:alice",
     "address": "127.0.0.1", "operation": "CreateTopics", "resource": {"type": "topic", "name": "orders"},
     "result": "ok", "error": null, "before": null, "after": {"partitions": 3}}

``surface`` is ``kafka``, ``streaming`` (OCI Streaming REST), ``queue`` (OCI Queue REST), ``stomp``,
``console`` or ``metrics``; ``result`` is ``ok``, ``denied`` (the authorizer refused), ``unauthenticated``
(no or bad credentials) or ``failed`` (refused for another reason, with ``error``). ``before`` and ``after``
hold what changed where the operation has a before and an after (configs, partition counts, ACLs, quotas,
group offsets); secrets never appear.

Records go to ``audit.log`` in ``log.dirs`` (``audit.log.file`` elsewhere), written by a thread of their own
so a request never waits on the disk; the file is rotated to ``audit.log.1`` .. ``audit.log.9`` at 64 MiB.
With ``audit.log.topic`` set (``__audit``, say) they are also appended, in batches, to that internal topic,
which principals with READ on it may consume. ``kafkite audit`` shows and filters the file.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kafkite.clock import now_ms
from kafkite.protocol.records import build_batch

if TYPE_CHECKING:
    from kafkite.broker.core import Broker

log = logging.getLogger("kafkite.audit")

AUDIT_FILE = "audit.log"
ROTATE_BYTES = 64 * 1024 * 1024
ROTATED_KEPT = 9
MAX_PENDING = 100_000  # records waiting for the writer; beyond it new ones are counted and dropped
TOPIC_FLUSH_S = 0.2

OK = "ok"
DENIED = "denied"
UNAUTHENTICATED = "unauthenticated"
FAILED = "failed"
RESULTS = (OK, DENIED, UNAUTHENTICATED, FAILED)
SURFACES = ("kafka", "streaming", "queue", "stomp", "console", "metrics")


def iso_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def make_record(
    *,
    surface: str,
    principal: str,
    address: str,
    operation: str,
    resource_type: str,
    resource_name: str,
    result: str,
    error: str | None = None,
    before: Any = None,
    after: Any = None,
    ts_ms: int | None = None,
) -> dict[str, Any]:
    ts = ts_ms if ts_ms is not None else now_ms()
    return {
        "time": iso_time(ts),
        "ts": ts,
        "surface": surface,
        "principal": principal,
        "address": address,
        "operation": operation,
        "resource": {"type": resource_type, "name": resource_name},
        "result": result,
        "error": error,
        "before": before,
        "after": after,
    }


class _FileWriter:
    """Appends lines to the audit file from a thread of its own; rotates it by size."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self.pending = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._thread = threading.Thread(target=self._run, name="kafkite-audit", daemon=True)
        self._thread.start()

    def put(self, line: str) -> None:
        with self._lock:
            if self.pending >= MAX_PENDING:
                self.dropped += 1
                return
            self.pending += 1
        self.queue.put(line)

    def _open(self) -> Any:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return os.fdopen(fd, "a", encoding="utf-8")

    def _rotate(self, f: Any) -> Any:
        f.close()
        for i in range(ROTATED_KEPT - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        return self._open()

    def _run(self) -> None:
        f = None
        while True:
            item = self.queue.get()
            batch = [item]
            with contextlib.suppress(queue.Empty):
                while len(batch) < 1000:
                    batch.append(self.queue.get_nowait())
            lines = [b for b in batch if b is not None]
            try:
                if lines:
                    if f is None:
                        f = self._open()
                    f.write("".join(lines))
                    f.flush()
                    if f.tell() >= ROTATE_BYTES:
                        f = self._rotate(f)
            except OSError as e:
                log.error("cannot write the audit log %s: %s", self.path, e)
                f = None
            with self._lock:
                self.pending -= len(lines)
                self._idle.notify_all()
            if None in batch:
                if f is not None:
                    f.close()
                return

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every record put so far is written."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self.pending and time.monotonic() < deadline:
                self._idle.wait(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        if self._thread.is_alive():
            self.queue.put(None)
            self._thread.join(5)


class AuditLog:
    """The broker's audit trail (``audit_of(broker)``)."""

    def __init__(self, path: Path | None, topic: str = "") -> None:
        self.path = path
        self.topic = topic
        self._file = _FileWriter(path) if path is not None else None
        self._broker: Broker | None = None
        self._topic_buffer: list[dict[str, Any]] = []
        self._topic_task: asyncio.Task[None] | None = None
        self._pending_append: Any = None
        self._warned_drop = False
        if self._file is not None:
            atexit.register(self._file.close)

    # ------------------------------------------------------------------ writing

    def record(self, **fields: Any) -> dict[str, Any]:
        """Record one event (keyword arguments of :func:`make_record`); returns the record."""
        rec = make_record(**fields)
        self.write(rec)
        return rec

    def write(self, rec: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.put(json.dumps(rec, separators=(",", ":"), default=str) + "\n")
            if self._file.dropped and not self._warned_drop:
                self._warned_drop = True
                log.error("the audit log writer is %d records behind: dropping records", MAX_PENDING)
        if self.topic and self._broker is not None:
            self._topic_buffer.append(rec)
            self._schedule_topic_flush()

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._topic_buffer:
            self._append_to_topic()

    # ------------------------------------------------------------------ the audit topic

    def attach_topic(self, broker: Broker) -> None:
        """Append records to ``self.topic`` of ``broker`` too (created on first use, one partition)."""
        if self.topic:
            self._broker = broker

    def _schedule_topic_flush(self) -> None:
        if self._topic_task is not None and not self._topic_task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._append_to_topic()
            return
        self._topic_task = loop.create_task(self._flush_topic_later(), name="audit-topic")

    async def _flush_topic_later(self) -> None:
        await asyncio.sleep(TOPIC_FLUSH_S)
        self._append_to_topic()

    def _appended(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            return
        if fut.exception() is not None:
            log.error("cannot append to the audit topic %s: %s", self.topic, fut.exception())
        elif self._broker is not None:
            self._broker.waiters.notify(self.topic, 0)  # fetches waiting on the topic see the records now

    def _append_to_topic(self) -> None:
        broker = self._broker
        records, self._topic_buffer = self._topic_buffer, []
        if broker is None or not records:
            return

        try:
            if broker.topic(self.topic) is None:
                broker.create_topic(self.topic, 1, {"cleanup.policy": "delete"})
            part = broker.partition(self.topic, 0)
            assert part is not None
            now = now_ms()
            batch = build_batch(
                [
                    (
                        f"{r['surface']}:{r['operation']}".encode(),
                        json.dumps(r, separators=(",", ":"), default=str).encode(),
                        [],
                        int(r["ts"]),
                    )
                    for r in records
                ]
            )
            try:
                asyncio.get_running_loop()
            except RuntimeError:  # closing, with no event loop left
                part.append_sync(bytearray(batch), now_ms=now)
                broker.waiters.notify(self.topic, 0)
            else:
                self._pending_append = asyncio.ensure_future(part.append(bytearray(batch), now_ms=now))
                self._pending_append.add_done_callback(self._appended)
        except Exception as e:  # the audit topic must never fail the request that was audited
            log.error("cannot append to the audit topic %s: %s", self.topic, e)


def audit_path(config: Any) -> Path | None:
    """Where the audit file goes: ``audit.log.file``, else ``audit.log`` in ``log.dirs`` (none with the
    memory engine), or None when ``audit.log.enable`` is false."""
    if not config["audit.log.enable"]:
        return None
    explicit: str = config["audit.log.file"]
    if explicit:
        return Path(explicit)
    if config["storage.engine"] == "memory":
        return None
    return Path(config.data_dir) / AUDIT_FILE


def audit_of(broker: Broker) -> AuditLog:
    def make() -> AuditLog:
        a = AuditLog(audit_path(broker.config), broker.config["audit.log.topic"])
        a.attach_topic(broker)
        return a

    return broker.component(AuditLog, make)


# ---------------------------------------------------------------------------------------------- reading


def audit_files(path: Path) -> list[Path]:
    """The audit file and its rotated predecessors, oldest first."""
    rotated = [path.with_name(f"{path.name}.{i}") for i in range(ROTATED_KEPT, 0, -1)]
    return [p for p in [*rotated, path] if p.exists()]


def read_records(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    for p in paths:
        with open(p, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict):
                    yield rec
