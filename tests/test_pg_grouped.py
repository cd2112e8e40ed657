"""Appends queued on one partition of the PostgreSQL engine while one is being written are written together:
one statement and one commit, each append answered with its own offsets, idempotent producers' sequences
checked across the group, a refused append refused alone, and nothing answered before it is committed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from test_pg_support import _batch, _values, pg_dsn  # noqa: F401

from kafkite.log import LogError
from kafkite.log.pg import PgStorage


@pytest.fixture
def storage(pg_dsn: str) -> Iterator[PgStorage]:  # noqa: F811
    s = PgStorage(pg_dsn)
    s.load()
    yield s
    s.close()


def _commits(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        return int(row.fetchall()[0][0])


def _stored(dsn: str, topic_id: Any, idx: int) -> list[tuple[int, int]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT base_offset, last_offset FROM kafkite_batches WHERE topic_id = %s AND idx = %s"
            " ORDER BY last_offset",
            (topic_id, idx),
        ).fetchall()
    return [(int(a), int(b)) for a, b in rows]


def test_queued_appends_are_written_together_in_call_order(storage: PgStorage, pg_dsn: str) -> None:  # noqa: F811
    storage.create_topic("grouped", 1)
    p = storage.partition("grouped", 0)

    async def run() -> list[Any]:
        before = _commits(pg_dsn)
        futs = [p.append(_batch([b"v%d" % i, b"w%d" % i]), now_ms=1) for i in range(40)]
        infos = [await f for f in futs]
        after = _commits(pg_dsn)
        res = await p.read(0, 1 << 20)
        await storage.db.close_async()
        return [infos, after - before, b"".join(c for c in res.chunks if isinstance(c, bytes))]

    infos, commits, data = asyncio.run(run())
    assert [(i.first_offset, i.last_offset) for i in infos] == [(2 * i, 2 * i + 1) for i in range(40)]
    assert _values(data) == [v for i in range(40) for v in (b"v%d" % i, b"w%d" % i)]
    # 40 appends, far fewer transactions (the first one alone, the rest queued behind it); the statistics
    # count the two snapshots of pg_stat_database too.
    assert commits < 20, commits
    assert p.log_end_offset == 80
    assert _stored(pg_dsn, p.topic_id, 0) == [(2 * i, 2 * i + 1) for i in range(40)]


def test_idempotent_sequences_are_checked_across_a_group(storage: PgStorage, pg_dsn: str) -> None:  # noqa: F811
    storage.create_topic("grouped-idem", 1)
    p = storage.partition("grouped-idem", 0)

    def idem(seq: int, *values: bytes) -> bytearray:
        return _batch(list(values), producer_id=11, producer_epoch=0, base_sequence=seq)

    async def run() -> list[Any]:
        first = p.append(idem(0, b"a"), now_ms=1)
        queued = [
            p.append(idem(1, b"b", b"c"), now_ms=1),
            p.append(idem(3, b"d"), now_ms=1),
            p.append(idem(1, b"b", b"c"), now_ms=1),  # a retry of one earlier in the group: its offsets
            p.append(idem(9, b"gap"), now_ms=1),  # out of order: refused alone
            p.append(idem(4, b"e"), now_ms=1),
        ]
        results: list[Any] = [await first]
        for f in queued:
            try:
                results.append(await f)
            except LogError as e:
                results.append(e)
        await storage.db.close_async()
        return results

    a, b, d, retry, gap, e = asyncio.run(run())
    assert (a.first_offset, b.first_offset, d.first_offset, e.first_offset) == (0, 1, 3, 4)
    assert (retry.first_offset, retry.last_offset) == (1, 2)
    assert isinstance(gap, LogError)
    assert p.log_end_offset == 5
    assert _stored(pg_dsn, p.topic_id, 0) == [(0, 0), (1, 2), (3, 3), (4, 4)]
    assert [(s.producer_id, s.last_sequence) for s in p.producers.describe()] == [(11, 4)]
    # A fresh broker rebuilds the same producer state from the database.
    other = PgStorage(pg_dsn)
    other.load()
    try:
        q = other.partition("grouped-idem", 0)
        assert [(s.producer_id, s.last_sequence) for s in q.producers.describe()] == [(11, 4)]
    finally:
        other.close()


def test_a_group_that_loses_the_row_to_another_broker_is_written_one_by_one(
    storage: PgStorage,
    pg_dsn: str,  # noqa: F811
) -> None:
    storage.create_topic("grouped-race", 1)
    other = PgStorage(pg_dsn)
    other.load()
    p, q = storage.partition("grouped-race", 0), other.partition("grouped-race", 0)
    try:

        async def run() -> list[int]:
            p.append_sync(_batch([b"p0"]), now_ms=1)
            # Queued together (the writing task has not run yet); another broker appends meanwhile: the
            # group's statement finds the row moved on.
            queued = [p.append(_batch([b"p%d" % i]), now_ms=1) for i in range(1, 6)]
            q.append_sync(_batch([b"q"]), now_ms=1)
            infos = [await f for f in queued]
            await storage.db.close_async()
            return [i.first_offset for i in infos]

        assert asyncio.run(run()) == [2, 3, 4, 5, 6]
        assert p.log_end_offset == 7
        values = _values(p.read_sync(0, 1 << 20).to_bytes())
        assert values == [b"p0", b"q", b"p1", b"p2", b"p3", b"p4", b"p5"]
    finally:
        other.close()
