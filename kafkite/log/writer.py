"""Where a partition's disk work runs: its writer.

Every change to a partition log (appends, segment rolls, retention, DeleteRecords, truncation, the log
cleaner's swaps, closing) runs as a job on the partition's writer, one job at a time and in the order the jobs
were submitted, so appends keep the order in which they were called.

- ``ThreadWriter`` runs the jobs on a thread of its own (the file engine gives each log directory one, and the
  broker's internal logs another): a slow disk holds up that thread and the requests waiting for it, never
  the event loop.
- ``InlineWriter`` runs each job at once on the calling thread (the memory engine, and file logs opened on
  their own by tools and tests).

``submit`` returns a ``Pending`` result: an ``asyncio.Future`` resolved on the submitting event loop when the
job is done (``ThreadWriter``), or a ``Completed`` one (``InlineWriter``). ``run`` blocks until its job is
done and returns its result. ``post`` submits a job whose result nobody waits for (failures are logged).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Generator
from typing import Any, Generic, Protocol, TypeVar

log = logging.getLogger("kafkite.log")

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Pending(Protocol[T_co]):
    """The awaitable result of a job (``asyncio.Future`` or ``Completed``)."""

    def done(self) -> bool: ...

    def result(self) -> T_co: ...

    def __await__(self) -> Generator[Any, None, T_co]: ...


class Completed(Generic[T]):
    """A result known at once; awaiting it does not suspend, and no event loop is needed."""

    __slots__ = ("_error", "_value")

    def __init__(self, value: T | None = None, error: BaseException | None = None) -> None:
        self._value = value
        self._error = error

    @classmethod
    def of(cls, fn: Callable[[], T]) -> Completed[T]:
        try:
            return cls(fn())
        except Exception as e:
            return cls(None, e)

    def done(self) -> bool:
        return True

    def result(self) -> T:
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]

    def exception(self) -> BaseException | None:
        return self._error

    def __await__(self) -> Generator[Any, None, T]:
        return self.result()
        yield  # pragma: no cover - makes this a generator


class Writer(ABC):
    """Runs the jobs of a group of partition logs in submission order."""

    @abstractmethod
    def submit(self, job: Callable[[], T], *, size: int = 0) -> Pending[T]:
        """Queue ``job`` behind the jobs submitted before it; its result to await. ``size``: the bytes it
        writes (for the backlog figures)."""

    @abstractmethod
    def run(self, job: Callable[[], T]) -> T:
        """Run ``job`` in order and wait for its result (blocking the calling thread)."""

    @abstractmethod
    def post(self, job: Callable[[], object]) -> None:
        """Queue ``job`` without waiting for it; a failure is logged."""

    def close(self) -> None:  # noqa: B027 - only writers with a thread have something to stop
        """Finish the queued jobs and stop."""

    @property
    def backlog_bytes(self) -> int:
        """Bytes of queued appends not yet written."""
        return 0


class InlineWriter(Writer):
    """Runs every job at once, on the calling thread."""

    def submit(self, job: Callable[[], T], *, size: int = 0) -> Pending[T]:
        return Completed.of(job)

    def run(self, job: Callable[[], T]) -> T:
        return job()

    def post(self, job: Callable[[], object]) -> None:
        try:
            job()
        except Exception:
            log.exception("log job failed")


INLINE = InlineWriter()


class _Job:
    __slots__ = ("done", "error", "fn", "future", "loop", "result", "size")

    def __init__(
        self,
        fn: Callable[[], Any],
        loop: asyncio.AbstractEventLoop | None,
        future: asyncio.Future[Any] | None,
        size: int,
    ) -> None:
        self.fn = fn
        self.loop = loop
        self.future = future
        self.size = size
        self.done: threading.Event | None = None
        self.result: Any = None
        self.error: BaseException | None = None


# A small append made on the event loop must have taken no longer than this (wall time: a busy machine's
# scheduling counts too), else appends go through the thread for INLINE_BACKOFF_S whatever their size (a disk
# that has become slow holds the loop up once).
INLINE_SLOW_S = 0.02
INLINE_BACKOFF_S = 5.0


class ThreadWriter(Writer):
    """One thread that runs the jobs, oldest first. Each result goes back to its event loop as soon as its job
    is done; the loop is woken once for all the results that finish before it gets to them.

    ``inline_bytes``: a submitted job writing at most this many bytes runs at once on the submitting thread
    when the writer has nothing queued or running (so the order of the jobs is kept) and the last such job was
    quick: a one-record append costs a write into the page cache rather than two thread hand-overs. 0: every
    job runs on the thread."""

    def __init__(self, name: str = "kafkite-log-writer", *, inline_bytes: int = 0) -> None:
        self.name = name
        self.inline_bytes = inline_bytes
        self._inline = False  # a job runs on the submitting thread: the thread waits
        self._inline_owner = 0  # that thread's ident
        self._inline_off_until = 0.0
        self.jobs_inline = 0
        self._jobs: deque[_Job] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._closing = False
        self._backlog = 0
        self._unfinished = 0
        self._wake_loop: asyncio.AbstractEventLoop | None = None  # a wake-up is due on this loop
        self.jobs_done = 0
        self.bytes_written = 0
        self._ready: dict[asyncio.AbstractEventLoop, list[_Job]] = {}  # finished, not yet handed to the loop
        self._ready_lock = threading.Lock()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    @property
    def backlog_bytes(self) -> int:
        return self._backlog

    @property
    def backlog_jobs(self) -> int:
        """Jobs queued or running."""
        return self._unfinished

    def on_thread(self) -> bool:
        """Whether the caller is running one of this writer's jobs (on its thread, or inline)."""
        return threading.current_thread() is self._thread or (
            self._inline and self._inline_owner == threading.get_ident()
        )

    def _queue(self, job: _Job, wake: bool = True) -> None:
        with self._cond:
            if self._closing:
                raise RuntimeError(f"{self.name} is closed")
            self._jobs.append(job)
            self._backlog += job.size
            self._unfinished += 1
            if wake:
                self._cond.notify()

    def submit(self, job: Callable[[], T], *, size: int = 0) -> Pending[T]:
        if 0 < size <= self.inline_bytes:
            with self._cond:
                inline = (
                    self._unfinished == 0
                    and not self._closing
                    and time.monotonic() >= self._inline_off_until
                    and not self.on_thread()
                )
                if inline:
                    self._inline = True
                    self._inline_owner = threading.get_ident()
                    self._unfinished += 1
            if inline:
                return self._run_inline(job, size)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        # The thread is woken once for all the jobs submitted during this turn of the event loop (the
        # requests that arrived together): one wake-up and one hand-over of the interpreter lock, rather
        # than one per append while the loop is still busy with the others.
        self._queue(_Job(job, loop, fut, size), wake=False)
        if self._wake_loop is not loop:  # (a loop closed with the call pending: the next one schedules it)
            self._wake_loop = loop
            loop.call_soon(self._wake)
        return fut

    def _run_inline(self, job: Callable[[], T], size: int) -> Pending[T]:
        started = time.monotonic()
        try:
            return Completed.of(job)
        finally:
            ended = time.monotonic()
            if size and ended - started > INLINE_SLOW_S:
                self._inline_off_until = ended + INLINE_BACKOFF_S
            with self._cond:
                self._inline = False
                self._unfinished -= 1
                self.jobs_done += 1
                self.jobs_inline += 1
                self.bytes_written += size
                if self._jobs or self._closing:  # jobs queued meanwhile, or a close waiting for this one
                    self._cond.notify()

    def _wake(self) -> None:
        with self._cond:
            self._wake_loop = None
            self._cond.notify()

    def run(self, job: Callable[[], T]) -> T:
        if self.on_thread():
            return job()
        # The caller waits for the result either way: while the writer has nothing queued or running, the job
        # runs here, in order, without two thread hand-overs (a group's commit appended and waited for).
        with self._cond:
            idle = self._unfinished == 0 and not self._closing
            if idle:
                self._inline = True
                self._inline_owner = threading.get_ident()
                self._unfinished += 1
        if idle:
            return self._run_inline(job, 0).result()
        j = _Job(job, None, None, 0)
        j.done = threading.Event()
        self._queue(j)
        j.done.wait()
        if j.error is not None:
            raise j.error
        result: T = j.result
        return result

    def post(self, job: Callable[[], object]) -> None:
        self._queue(_Job(job, None, None, 0))

    def _main(self) -> None:
        while True:
            with self._cond:
                while (not self._jobs or self._inline) and not (self._closing and not self._inline):
                    self._cond.wait()
                if not self._jobs:
                    return
                batch = self._jobs
                self._jobs = deque()
            self._run_batch(batch)

    def _run_batch(self, batch: deque[_Job]) -> None:
        for job in batch:
            try:
                job.result = job.fn()
            except BaseException as e:  # handed to whoever waits for the job
                job.error = e
            job.fn = _done
            with self._cond:
                self._backlog -= job.size
                self._unfinished -= 1
            self.jobs_done += 1
            self.bytes_written += job.size
            if job.done is not None:
                job.done.set()
            elif job.loop is not None:
                self._hand_back(job.loop, job)
            elif job.error is not None:
                log.error("log job failed: %s", job.error, exc_info=job.error)

    def _hand_back(self, loop: asyncio.AbstractEventLoop, job: _Job) -> None:
        with self._ready_lock:
            waiting = self._ready.setdefault(loop, [])
            waiting.append(job)
            if len(waiting) > 1:
                return  # the loop has yet to take the ones before: it takes this one with them
        try:
            loop.call_soon_threadsafe(self._deliver, loop)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            with self._ready_lock:
                self._ready.pop(loop, None)

    def _deliver(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the event loop: hand each finished job's result to its future."""
        with self._ready_lock:
            items = self._ready.pop(loop, [])
        for job in items:
            fut = job.future
            if fut is None or fut.done():
                continue
            if job.error is not None:
                fut.set_exception(job.error)
            else:
                fut.set_result(job.result)

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        if not self.on_thread():
            self._thread.join()


def _done() -> None:
    return None
