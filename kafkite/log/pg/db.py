"""Connections to the database, and one way to write logic that runs over either of them.

The engine's logic is written once, as generators ("ops") that yield ``(sql, params)`` and receive each
statement's rows. ``Database.run`` drives an op over the synchronous connection (for the synchronous storage
interface, called from the event loop or a worker thread); ``Database.run_async`` drives it over a pooled
asynchronous connection (for the produce and fetch hot paths, so the event loop never waits on the network).
Both can wrap the op in a transaction. A connection that failed is dropped and replaced on next use; the
failure reaches the caller as ``LogError`` (KAFKA_STORAGE_ERROR for clients, who retry).

A database that stops answering must cost a bounded wait, never the broker: every connection is made with TCP
keepalives and a TCP user timeout (``tcp_params``: a connection whose data goes unacknowledged, or whose peer
stops answering keepalive probes, fails within seconds instead of waiting out TCP's retransmission backoff
for many minutes), a lock timeout (a row lock held by a stalled broker's transaction fails the statement
instead of holding its caller), and a bounded wait for a pooled connection. After a connection fails, the
synchronous connection refuses at once when called on an event loop (``_down``) until an asynchronous probe
reaches the database again: calls made there would otherwise hold every other client of the broker while a
new connection times out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import threading
import time
import traceback
from collections.abc import AsyncIterator, Generator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import psycopg

from kafkite.log.base import LogError

log = logging.getLogger("kafkite.log.pg")

T = TypeVar("T")
Params = Sequence[Any] | Mapping[str, Any] | None
Query = tuple[str, Params]
Rows = list[tuple[Any, ...]]
Op = Generator[Query, Rows, T]


class DatabaseError(LogError, OSError):
    """The database refused a statement or could not be reached (an OSError too: a broker that cannot reach
    its database at start-up says so and exits)."""


# libpq connection parameters every connection gets unless its DSN sets them: keepalive probes after 5 s idle,
# every 2 s, 3 unanswered ones ending the connection; data unacknowledged for 5 s ending it too.
TCP_PARAMS: dict[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 5_000,
}
# The synchronous connection's TCP user timeout (milliseconds): the event loop may be the one waiting on it.
SYNC_TCP_USER_TIMEOUT_MS = 2_000
# Session settings of every connection (the DSN's own ``options`` come first; ``Database.settings`` after).
# The server's side of each connection gets keepalives and a TCP user timeout too: a broker cut off from the
# database leaves backends behind that would otherwise live on (idle, for hours) and, cut after cut, use up
# max_connections; with these the server drops them within seconds of the cut.
SESSION_SETTINGS: dict[str, str] = {
    "lock_timeout": "15s",
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "5000",
}
# A synchronous call on an event loop that takes longer than this is logged (seconds).
SLOW_ON_LOOP_S = 1.0
# How often the database is probed while it is not answering (seconds).
PROBE_S = 1.0
# Longest wait of a synchronous call on an event loop for the connection another thread is using (seconds).
LOCK_WAIT_S = 0.5
# Longest wait for a pooled connection when every one is in use (seconds).
POOL_WAIT_S = 20.0


def tcp_params(dsn: str, **override: int) -> dict[str, Any]:
    """The keepalive and TCP user timeout parameters ``dsn`` does not set itself (for ``connect``)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        given = conninfo_to_dict(dsn)
    except psycopg.Error:
        given = {}
    return {k: v for k, v in {**TCP_PARAMS, **override}.items() if k not in given}


def on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _rows(cur: psycopg.Cursor[Any]) -> Rows:
    return list(cur.fetchall()) if cur.description is not None else []


class Database:
    """One synchronous connection (serialised by a lock) and a small pool of asynchronous ones."""

    def __init__(self, dsn: str, *, pool_size: int = 8, connect_timeout: float = 10.0) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self._sync: psycopg.Connection[Any] | None = None
        self._sync_lock = threading.Lock()
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._open = 0
        self._available: asyncio.Condition | None = None
        self._closed = False
        # PostgreSQL settings of every new connection (brokers sharing the database set
        # idle_in_transaction_session_timeout: a paused broker's transaction must not hold locks for long).
        self.settings: dict[str, str] = {}
        self.pool_wait = POOL_WAIT_S
        # Whether a connection failed since the database last answered: synchronous calls on an event loop are
        # refused meanwhile, and a probe (``_probe``) runs until it answers again.
        self._down = False
        self._probe_task: asyncio.Task[None] | None = None

    def _conninfo(self, *, sync: bool = False) -> str:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        settings = {**SESSION_SETTINGS, **self.settings}
        try:
            given = str(conninfo_to_dict(self.dsn).get("options") or "")
        except psycopg.Error:
            given = ""
        ours = [f"-c {k}={v}" for k, v in sorted(settings.items())]
        options = " ".join([given, *ours] if given else ours)
        tcp = (
            tcp_params(self.dsn, tcp_user_timeout=SYNC_TCP_USER_TIMEOUT_MS) if sync else tcp_params(self.dsn)
        )
        return make_conninfo(self.dsn, options=options, **tcp)

    def _failed(self) -> None:
        self._down = True

    @property
    def down(self) -> bool:
        """Whether the database failed and has not answered since."""
        return self._down

    def _start_probe(self) -> None:
        task = self._probe_task
        if task is None or task.done():
            self._probe_task = asyncio.get_running_loop().create_task(self._probe(), name="pg-probe")

    async def _probe(self) -> None:
        while self._down and not self._closed:
            try:
                await self.execute_async("SELECT 1")
            except DatabaseError:
                await asyncio.sleep(PROBE_S)
            else:
                self._down = False

    # synchronous -------------------------------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._sync
        if conn is None or conn.closed or conn.broken:
            try:
                conn = psycopg.connect(
                    self._conninfo(sync=True), autocommit=True, connect_timeout=int(self.connect_timeout)
                )
            except psycopg.Error as e:
                self._failed()
                raise DatabaseError(f"cannot connect to the database: {e}") from None
            self._sync = conn
        return conn

    def run(self, op: Op[T], *, transaction: bool = False) -> T:
        """Drive ``op`` over the synchronous connection (blocking). On an event loop, refused at once while
        the database is known to be failing or another thread waits on the connection for long."""
        if self._closed:
            raise DatabaseError("the database connections are closed")
        on_loop = on_event_loop()
        if on_loop and self._down:
            self._start_probe()
            raise DatabaseError("the database is not answering (a connection to it failed)")
        if not self._sync_lock.acquire(timeout=LOCK_WAIT_S if on_loop else -1):
            raise DatabaseError("the database is not answering (its connection is busy)")
        started = time.monotonic()
        try:
            conn = self._connection()
            try:
                if transaction:
                    with conn.transaction():
                        result = _drive(conn, op)
                else:
                    result = _drive(conn, op)
            except psycopg.Error as e:
                if conn.broken:
                    self._sync = None
                    self._failed()
                raise DatabaseError(f"database error: {e}") from e
            self._down = False
            return result
        finally:
            self._sync_lock.release()
            held = time.monotonic() - started
            if on_loop and held > SLOW_ON_LOOP_S:
                name = getattr(op, "__qualname__", repr(op))
                log.warning(
                    "a database call (%s) held the event loop for %.1f s, from %s", name, held, _callers()
                )

    def execute(self, sql: str, params: Params = None) -> Rows:
        def op() -> Op[Rows]:
            return (yield (sql, params))

        return self.run(op())

    # asynchronous ------------------------------------------------------------------------------------------

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled asynchronous connection (autocommit); a broken one is not given back."""
        if self._closed:
            raise DatabaseError("the database connections are closed")
        if self._available is None:
            self._available = asyncio.Condition()
        cond = self._available
        async with cond:
            try:
                async with asyncio.timeout(self.pool_wait):
                    while not self._idle and self._open >= self.pool_size:
                        await cond.wait()
            except TimeoutError:
                busy = "the database is not answering (every pooled connection is busy)"
                raise DatabaseError(busy) from None
            conn = self._idle.pop() if self._idle else None
            if conn is None:
                self._open += 1
        if conn is not None and _hung_up(conn):
            # The server ended it while it was idle (a shutdown, a terminated backend): a statement sent on it
            # would fail after it was sent, leaving an append's outcome unknown. A new connection instead
            # (in the same slot of the pool).
            with contextlib.suppress(Exception):
                await conn.close()
            conn = None
        if conn is None:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._conninfo(), autocommit=True, connect_timeout=int(self.connect_timeout)
                )
            except BaseException as e:
                async with cond:
                    self._open -= 1
                    cond.notify()
                if isinstance(e, psycopg.Error):
                    self._failed()
                    raise DatabaseError(f"cannot connect to the database: {e}") from None
                raise
        try:
            yield conn
        finally:
            async with cond:
                if conn.closed or conn.broken or self._closed:
                    if conn.broken:
                        self._failed()
                    self._open -= 1
                    await conn.close()
                else:
                    self._idle.append(conn)
                cond.notify()

    async def run_async(self, op: Op[T], *, transaction: bool = False) -> T:
        """Drive ``op`` over a pooled asynchronous connection."""
        async with self.connection() as conn:
            try:
                if transaction:
                    async with conn.transaction():
                        result = await _drive_async(conn, op)
                else:
                    result = await _drive_async(conn, op)
            except psycopg.Error as e:
                raise DatabaseError(f"database error: {e}") from e
            self._down = False
            return result

    async def execute_async(self, sql: str, params: Params = None) -> Rows:
        def op() -> Op[Rows]:
            return (yield (sql, params))

        return await self.run_async(op())

    # lifecycle ---------------------------------------------------------------------------------------------

    async def close_async(self) -> None:
        """Close the pooled connections (the synchronous one stays until ``close``)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            self._open -= 1
            await conn.close()

    def close(self) -> None:
        self._closed = True
        task, self._probe_task = self._probe_task, None
        if task is not None and not task.done():
            with contextlib.suppress(RuntimeError):  # its event loop is closed already
                task.cancel()
        with self._sync_lock:
            if self._sync is not None:
                self._sync.close()
                self._sync = None


def _hung_up(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether an idle connection has something to read (the server's farewell, or the end of the stream):
    an idle connection that is not listening has nothing to say unless the server is ending it."""
    if conn.closed or conn.broken:
        return True
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(readable)


def _callers(depth: int = 4) -> str:
    """Where a synchronous call came from: the innermost kafkite frames outside this module."""
    frames = [
        f"{f.filename.rsplit('kafkite/', 1)[-1]}:{f.lineno} {f.name}"
        for f in reversed(traceback.extract_stack()[:-2])
        if "kafkite/" in f.filename and not f.filename.endswith("pg/db.py")
    ]
    return " < ".join(frames[:depth]) or "?"


def _drive(conn: psycopg.Connection[Any], op: Op[T]) -> T:
    try:
        sql, params = next(op)
        while True:
            cur = conn.execute(sql, params, binary=True)
            sql, params = op.send(_rows(cur))
    except StopIteration as stop:
        result: T = stop.value
        return result


async def _drive_async(conn: psycopg.AsyncConnection[Any], op: Op[T]) -> T:
    try:
        sql, params = next(op)
        while True:
            cur = await conn.execute(sql, params, binary=True)
            rows = list(await cur.fetchall()) if cur.description is not None else []
            sql, params = op.send(rows)
    except StopIteration as stop:
        result: T = stop.value
        return result
