"""A real PostgreSQL server for the PostgreSQL engine's tests, and the engine's own tests below the broker.

``pg_server()`` installs Debian's ``postgresql`` package when it is missing (as root, with apt-get), runs
``initdb`` into a temporary directory and starts the server on a free loopback port with its unix socket in
that directory (as the ``postgres`` user when the tests run as root: the server refuses to run as root). One
server serves the whole test session and is stopped when the session ends; each test module asks for its own
database.
Tests skip, saying why, only when the server cannot be installed or started.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import BrokerProcess, free_port

from kafkite.protocol.records import build_batch, iter_headers, read_header

INSTALL_TIMEOUT = 900


class PgServer:
    """One PostgreSQL server in a temporary directory."""

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable  # fsync and synchronous commits (benchmarks); tests run without them
        self.bin: Path | None = None
        self.dir: Path | None = None
        self.port = 0
        self.as_user: list[str] = []
        self.process_started = False

    @staticmethod
    def find_bin() -> Path | None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
        if found:
            return Path(found[-1]).parent
        initdb = shutil.which("initdb")
        return Path(initdb).parent if initdb else None

    @staticmethod
    def install() -> str:
        """Install Debian's postgresql package; '' on success, else why not."""
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            return "PostgreSQL is not installed and cannot be installed here (apt-get install needs root)"
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-qq", "postgresql"]
        for attempt in range(2):
            try:
                res = subprocess.run(cmd, env=env, capture_output=True, timeout=INSTALL_TIMEOUT)
            except (OSError, subprocess.TimeoutExpired) as e:
                return f"apt-get install postgresql failed: {e}"
            if res.returncode == 0:
                return ""
            if attempt == 0:
                subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        return f"apt-get install postgresql failed: {res.stderr.decode(errors='replace')[-500:]}"

    def start(self) -> None:
        self.bin = self.find_bin()
        if self.bin is None:
            reason = self.install()
            if reason:
                raise RuntimeError(reason)
            self.bin = self.find_bin()
            if self.bin is None:
                raise RuntimeError("postgresql was installed but initdb is nowhere to be found")
        self.dir = Path(tempfile.mkdtemp(prefix="kafkite-pg-"))
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
                user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        data = self.dir / "data"
        self._run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )
        self.port = free_port()
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=300"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        log = str(self.dir / "server.log")
        self._run(
            [str(self.bin / "pg_ctl"), "-D", str(data), "-l", log, "-o", options, "-w", "-t", "60", "start"]
        )
        self.process_started = True

    def _run(self, cmd: list[str]) -> None:
        res = subprocess.run([*self.as_user, *cmd], capture_output=True, timeout=120)
        if res.returncode != 0:
            log = ""
            if self.dir is not None and (self.dir / "server.log").exists():
                log = (self.dir / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(
                f"{cmd[0]} failed ({res.returncode}): {res.stderr.decode(errors='replace')[-1000:]}{log}"
            )

    def stop(self) -> None:
        if self.process_started and self.bin is not None and self.dir is not None:
            with contextlib.suppress(Exception):
                self._run([str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "stop"])
            self.process_started = False
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def new_database(self, prefix: str = "kafkite") -> str:
        """A fresh database; its DSN."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:10]}".lower().replace("-", "_")
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)


_SERVER: PgServer | None = None
_FAILURE: str | None = None


def pg_server() -> PgServer:
    """The session's server (started on first use; the test skips when it cannot be had)."""
    global _SERVER, _FAILURE
    if _FAILURE is not None:
        pytest.skip(_FAILURE)
    if _SERVER is None:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            _FAILURE = "psycopg is not installed (pip install 'kafkite[postgresql]')"
            pytest.skip(_FAILURE)
        server = PgServer()
        try:
            server.start()
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            server.stop()
            _FAILURE = f"cannot start a PostgreSQL server: {e}"
            pytest.skip(_FAILURE)
        _SERVER = server
        atexit.register(server.stop)
    return _SERVER


@pytest.fixture(scope="module")
def pg_dsn() -> str:
    """A database of this module's own on the session's server."""
    return pg_server().new_database()


# ------------------------------------------------------------------------------------------ engine tests


def _batch(values: list[bytes], ts: int = 1_000, **kw: object) -> bytearray:
    return bytearray(build_batch([(None, v, [], ts + i) for i, v in enumerate(values)], **kw))  # type: ignore[arg-type]


def _values(data: bytes) -> list[bytes]:
    from kafkite.protocol.records import iter_records

    out = []
    for pos, h in iter_headers(data):
        out += [r.value for r in iter_records(data, pos, h)]
    return out


@pytest.fixture
def storage(pg_dsn: str) -> Iterator[object]:
    from kafkite.log.pg import PgStorage

    s = PgStorage(pg_dsn)
    s.load()
    yield s
    s.close()


def test_append_assigns_offsets_and_reads_whole_batches(storage: object, topic_name: str) -> None:
    from kafkite.log.pg import PgStorage

    assert isinstance(storage, PgStorage)
    storage.create_topic(topic_name, 2)
    p = storage.partition(topic_name, 1)
    first = p.append_sync(_batch([b"a", b"b", b"c"]), now_ms=5)
    second = p.append_sync(_batch([b"d"]), now_ms=5)
    assert (first.first_offset, first.last_offset, second.first_offset) == (0, 2, 3)
    assert p.high_watermark == p.log_end_offset == 4
    data = p.read_sync(0, 1 << 20).to_bytes()
    assert [h.base_offset for _, h in iter_headers(data)] == [0, 3]  # base offsets rewritten as stored
    assert _values(data) == [b"a", b"b", b"c", b"d"]
    # An offset inside a batch returns the whole batch holding it; max_bytes keeps whole batches only.
    assert [h.base_offset for _, h in iter_headers(p.read_sync(1, 1 << 20).to_bytes())] == [0, 3]
    assert [h.base_offset for _, h in iter_headers(p.read_sync(0, 10).to_bytes())] == [0]
    assert p.read_sync(0, 10, min_one=False).size == 0
    assert [h.base_offset for _, h in iter_headers(p.read_sync(0, 1 << 20, max_offset=3).to_bytes())] == [0]
    assert p.read_sync(4, 100).size == 0
    two = p.append_sync(_batch([b"e"]) + _batch([b"f", b"g"]), now_ms=5)  # several batches in one append
    assert (two.first_offset, two.last_offset) == (4, 6)
    data = p.read_sync(4, 1 << 20).to_bytes()
    assert [h.base_offset for _, h in iter_headers(data)] == [4, 5]
    assert _values(data) == [b"e", b"f", b"g"]
    from kafkite.log import OffsetOutOfRange

    with pytest.raises(OffsetOutOfRange):
        p.read_sync(8, 100)
    assert storage.partition(topic_name, 0).log_end_offset == 0


def test_offsets_are_shared_by_storages_on_one_database(pg_dsn: str, topic_name: str) -> None:
    """Two storages (two brokers) appending to one partition never hand out the same offset."""
    from kafkite.log.pg import PgStorage

    a, b = PgStorage(pg_dsn), PgStorage(pg_dsn)
    a.load()
    b.load()
    try:
        a.create_topic(topic_name, 1)
        pa, pb = a.partition(topic_name, 0), b.partition(topic_name, 0)  # b looks the new topic up
        got = []
        for i in range(6):
            part = pa if i % 2 else pb
            got.append(part.append_sync(_batch([b"x%d" % i, b"y"]), now_ms=1).first_offset)
        assert got == [0, 2, 4, 6, 8, 10]

        async def concurrently() -> list[int]:
            infos = await asyncio.gather(
                *[(pa if i % 2 else pb).append(_batch([b"z%d" % i]), now_ms=1) for i in range(20)]
            )
            await a.db.close_async()
            await b.db.close_async()
            return sorted(i.first_offset for i in infos)

        assert asyncio.run(concurrently()) == list(range(12, 32))
        pa.refresh()  # (a broker learns of the other's appends from their notifications)
        data = pa.read_sync(0, 1 << 24).to_bytes()
        assert [h.base_offset for _, h in iter_headers(data)][-1] == 31
        assert len(_values(data)) == 32
    finally:
        a.close()
        b.close()


def test_async_appends_keep_call_order(storage: object, topic_name: str) -> None:
    from kafkite.log.pg import PgStorage

    assert isinstance(storage, PgStorage)
    storage.create_topic(topic_name, 1)
    p = storage.partition(topic_name, 0)

    async def run() -> list[int]:
        futs = [p.append(_batch([b"%d" % i]), now_ms=1) for i in range(30)]
        infos = [await f for f in futs]
        res = await p.read(0, 1 << 20)
        await storage.db.close_async()
        assert _values(b"".join(c for c in res.chunks if isinstance(c, bytes))) == [
            b"%d" % i for i in range(30)
        ]
        return [i.first_offset for i in infos]

    assert asyncio.run(run()) == list(range(30))


def test_timestamps_delete_records_and_retention(storage: object, topic_name: str) -> None:
    from kafkite.log import OffsetOutOfRange
    from kafkite.log.pg import PgStorage

    assert isinstance(storage, PgStorage)
    storage.create_topic(topic_name, 1, {"retention.ms": "60000"})
    p = storage.partition(topic_name, 0)
    now = int(time.time() * 1000)
    p.append_sync(_batch([b"old1", b"old2"], ts=now - 120_000), now_ms=now)  # offsets 0-1, expired
    p.append_sync(_batch([b"mid"], ts=now - 100_000), now_ms=now)  # 2, expired
    p.append_sync(_batch([b"new1", b"new2"], ts=now - 1_000), now_ms=now)  # 3-4
    assert p.offset_for_timestamp(now - 110_000) == (2, now - 100_000)
    assert p.offset_for_timestamp(now - 1_000 + 1) == (4, now - 1_000 + 1)
    assert p.offset_for_timestamp(now + 5) is None
    assert p.max_timestamp() == (now - 999, 4)
    assert p.first_timestamp() == now - 120_000
    assert p.delete_records_before(1) == 1
    assert p.log_start_offset == 1
    assert p.first_timestamp() == now - 120_000 + 1
    with pytest.raises(OffsetOutOfRange):
        p.read_sync(0, 100)
    with pytest.raises(OffsetOutOfRange):
        p.delete_records_before(99)
    assert p.apply_retention(now) == 1
    assert p.log_start_offset == 3
    assert _values(p.read_sync(3, 1 << 20).to_bytes()) == [b"new1", b"new2"]
    before = p.size_bytes
    assert before == len(p.read_sync(3, 1 << 20).to_bytes())
    # retention.bytes deletes the oldest batches while what is left still holds retention.bytes
    storage.set_topic_configs(topic_name, {"retention.ms": "-1", "retention.bytes": "1"})
    p.append_sync(_batch([b"last"], ts=now), now_ms=now)
    assert p.apply_retention(now) == 1
    assert p.log_start_offset == 5
    assert p.apply_retention(now) == 0
    assert p.delete_records_before(-1) == 6
    assert p.size_bytes == 0 and p.read_sync(6, 100).size == 0
    # a second storage reads the same bounds from the database
    from kafkite.log.pg import PgStorage as Again

    other = Again(storage.dsn)
    other.load()
    try:
        q = other.partition(topic_name, 0)
        assert (q.log_start_offset, q.log_end_offset) == (6, 6)
        assert other.topic(topic_name).configs == {"retention.ms": "-1", "retention.bytes": "1"}
    finally:
        other.close()


def test_log_append_time_and_batch_limits(storage: object, topic_name: str) -> None:
    from kafkite.log import RecordBatchTooLarge
    from kafkite.log.pg import PgStorage

    assert isinstance(storage, PgStorage)
    storage.create_topic(
        topic_name, 1, {"message.timestamp.type": "LogAppendTime", "max.message.bytes": "200"}
    )
    p = storage.partition(topic_name, 0)
    info = p.append_sync(_batch([b"v"], ts=5), now_ms=777)
    assert info.log_append_time == 777
    h = read_header(p.read_sync(0, 1000).to_bytes())
    assert h.max_timestamp == 777 and h.log_append_time
    with pytest.raises(RecordBatchTooLarge):
        p.append_sync(_batch([b"x" * 500]), now_ms=1)


def test_catalogue_changes_are_seen_by_other_storages(pg_dsn: str, topic_name: str) -> None:
    from kafkite.log import TopicAlreadyExists, UnknownTopic
    from kafkite.log.pg import PgStorage

    a, b = PgStorage(pg_dsn), PgStorage(pg_dsn)
    a.load()
    b.load()
    try:
        meta = a.create_topic(topic_name, 2, {"retention.ms": "1234"})
        with pytest.raises(TopicAlreadyExists):
            b.create_topic(topic_name, 3)
        assert b.topic_by_id(meta.topic_id).name == topic_name
        a.create_partitions(topic_name, 4)
        b.reload()
        assert b.topic(topic_name).partitions == 4
        assert b.partition(topic_name, 3).log_end_offset == 0
        a.delete_topic(topic_name)
        b.reload()
        assert topic_name not in b.topics()
        with pytest.raises(UnknownTopic):
            b.partition(topic_name, 0)
        # a new topic of the same name starts empty
        a.create_topic(topic_name, 1)
        assert b.partition(topic_name, 0).log_end_offset == 0
    finally:
        a.close()
        b.close()


def test_producer_state_survives_in_the_database(pg_dsn: str, topic_name: str) -> None:
    """Duplicates of an idempotent producer's batch are recognised by another storage (a broker taking the
    partition over), from the stored batches and from a snapshot."""
    from kafkite.log.pg import PgStorage
    from kafkite.log.producer_state import OutOfOrderSequence

    a = PgStorage(pg_dsn)
    a.load()
    a.create_topic(topic_name, 1)
    p = a.partition(topic_name, 0)
    b0 = _batch([b"a", b"b"], producer_id=7, producer_epoch=0, base_sequence=0)
    b1 = _batch([b"c"], producer_id=7, producer_epoch=0, base_sequence=2)
    assert p.append_sync(bytearray(b0), now_ms=1).first_offset == 0
    assert p.append_sync(bytearray(b1), now_ms=1).first_offset == 2
    assert p.append_sync(bytearray(b1), now_ms=1).first_offset == 2  # a retry: not appended again
    assert p.log_end_offset == 3
    b = PgStorage(pg_dsn)
    b.load()
    try:
        q = b.partition(topic_name, 0)
        assert [(d.producer_id, d.last_sequence) for d in q.producers.describe()] == [(7, 2)]
        dup = q.append_sync(bytearray(b1), now_ms=1)
        assert (dup.first_offset, dup.bytes) == (2, 0)
        with pytest.raises(OutOfOrderSequence):
            q.append_sync(_batch([b"gap"], producer_id=7, producer_epoch=0, base_sequence=9), now_ms=1)
        assert (
            q.append_sync(
                _batch([b"d"], producer_id=7, producer_epoch=0, base_sequence=3), now_ms=1
            ).first_offset
            == 3
        )
        # the first storage catches up with the append it did not make
        assert (
            p.append_sync(
                _batch([b"e"], producer_id=7, producer_epoch=0, base_sequence=4), now_ms=1
            ).first_offset
            == 4
        )
        assert p.snapshot_producers()
    finally:
        a.close()
        b.close()
    c = PgStorage(pg_dsn)
    c.load()
    try:
        r = c.partition(topic_name, 0)
        r.delete_records_before(5)  # the batches are gone: the snapshot still knows the producer
        dup = r.append_sync(_batch([b"e"], producer_id=7, producer_epoch=0, base_sequence=4), now_ms=1)
        assert (dup.first_offset, dup.bytes) == (4, 0)
    finally:
        c.close()


def test_transaction_markers_and_last_stable_offset(storage: object, topic_name: str) -> None:
    from kafkite.log.pg import PgStorage

    assert isinstance(storage, PgStorage)
    storage.create_topic(topic_name, 1)
    p = storage.partition(topic_name, 0)
    p.append_sync(
        _batch([b"t1", b"t2"], producer_id=3, producer_epoch=0, base_sequence=0, transactional=True), now_ms=1
    )
    assert p.last_stable_offset == 0
    marker = p.write_txn_marker_sync(3, 0, commit=False, coordinator_epoch=0, now_ms=2)
    assert marker == 2
    assert p.last_stable_offset == p.high_watermark == 3
    assert [(t.producer_id, t.first_offset) for t in p.aborted_transactions(0, 3)] == [(3, 0)]


def test_prefetched_reads_are_cut_to_the_fetch_budget() -> None:
    """Fetch starts a database engine's reads together, then keeps the whole batches its budget allows."""
    from kafkite.broker.fetch import _trimmed
    from kafkite.log import ReadResult

    res = ReadResult([b"a" * 10, b"b" * 10, b"c" * 10], 30, 9, 0)
    assert _trimmed(res, 30, False) is res
    assert _trimmed(res, 25, False).chunks == [b"a" * 10, b"b" * 10]
    assert _trimmed(res, 25, False).size == 20
    assert _trimmed(res, 5, True).chunks == [b"a" * 10]
    assert _trimmed(res, 5, False).chunks == []
    assert _trimmed(res, 5, False).high_watermark == 9


@contextlib.contextmanager
def pg_broker_process(tmp_path_factory: pytest.TempPathFactory, database: str) -> Iterator[BrokerProcess]:
    """A broker subprocess on a fresh database of the session's server (for a module's shared broker)."""
    dsn = pg_server().new_database(database)
    root = tmp_path_factory.mktemp(f"pg-{database}-broker")
    b = BrokerProcess(root / "data", root / "broker.log", [f"storage.engine={dsn}"])
    b.start()
    yield b
    b.stop()
    assert "Traceback" not in b.log_text(), b.tail(200)


def pg_shared_broker_fixtures(database: str) -> tuple[Any, Any]:
    """``(_pg_broker, shared_broker)`` fixtures for a test module whose shared-broker tests (imported from
    another module) should run against one PostgreSQL-backed broker on its own database::

        _pg_broker, shared_broker = pg_shared_broker_fixtures("roundtrip")
    """

    @pytest.fixture(scope="module")
    def _pg_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
        with pg_broker_process(tmp_path_factory, database) as b:
            yield b

    @pytest.fixture
    def shared_broker(
        _pg_broker: BrokerProcess, attach_broker: Callable[[BrokerProcess], BrokerProcess]
    ) -> BrokerProcess:
        """The module's PostgreSQL-backed broker, in place of the session's file-engine broker."""
        if not _pg_broker.running:
            _pg_broker.start()
        return attach_broker(_pg_broker)

    return _pg_broker, shared_broker
