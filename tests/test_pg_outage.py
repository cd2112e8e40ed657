"""While its database is down, a PostgreSQL-backed broker answers every request with an error code clients
retry (KAFKA_STORAGE_ERROR, COORDINATOR_NOT_AVAILABLE), never by closing the connection with a traceback, and
serves again once the database is back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import BrokerProcess, RawClient, create_topic, produce, stop_all
from test_pg_support import PgServer

from kafkite.protocol.records import build_batch

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

KAFKA_STORAGE_ERROR, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR = 56, 15, 16


@pytest.fixture
def outage(tmp_path: Path) -> Iterator[tuple[PgServer, BrokerProcess]]:
    """A broker on a PostgreSQL server of its own (the test stops and starts it)."""
    server = PgServer()
    try:
        server.start()
    except (RuntimeError, OSError) as e:
        pytest.skip(f"cannot start a PostgreSQL server: {e}")
    broker = BrokerProcess(
        tmp_path / "data",
        tmp_path / "broker.log",
        [f"storage.engine={server.new_database('outage')}", "transaction.max.timeout.ms=60000"],
    )
    try:
        broker.start()
        yield server, broker
    finally:
        stop_all([broker])
        server.stop()


def _pg_ctl(server: PgServer, *args: str) -> None:
    assert server.bin is not None and server.dir is not None
    log = str(server.dir / "server.log")
    server._run([str(server.bin / "pg_ctl"), "-D", str(server.dir / "data"), "-l", log, *args])


def test_requests_during_a_database_outage_get_error_codes(
    outage: tuple[PgServer, BrokerProcess], topic_name: str
) -> None:
    server, broker = outage
    create_topic(broker.bootstrap, topic_name, 1)
    assert produce(broker.bootstrap, topic_name, [(None, b"before")]) == [0]
    with RawClient.to(broker.bootstrap) as c:
        init = c.request(
            22,
            4,
            {
                "transactional_id": "outage-tx",
                "transaction_timeout_ms": 60000,
                "producer_id": -1,
                "producer_epoch": -1,
            },
        )
    assert init["error_code"] == 0, init
    _pg_ctl(server, "-m", "fast", "-w", "stop")  # (a clean stop: this server commits asynchronously)
    try:
        with RawClient.to(broker.bootstrap, timeout=60) as c:
            fetch = c.request(
                1,
                12,
                {
                    "max_wait_ms": 0,
                    "min_bytes": 0,
                    "max_bytes": 1 << 20,
                    "isolation_level": 1,  # read_committed: the last stable offset comes from the database
                    "session_id": 0,
                    "topics": [
                        {
                            "topic": topic_name,
                            "partitions": [
                                {"partition": 0, "fetch_offset": 0, "partition_max_bytes": 1 << 20}
                            ],
                        }
                    ],
                    "forgotten_topics_data": [],
                    "rack_id": "",
                },
            )
            produced = c.request(
                0,
                9,
                {
                    "transactional_id": None,
                    "acks": -1,
                    "timeout_ms": 5000,
                    "topic_data": [
                        {
                            "name": topic_name,
                            "partition_data": [{"index": 0, "records": build_batch([(None, b"x", [], 1)])}],
                        }
                    ],
                },
            )
            listed = c.request(
                2,
                7,
                {
                    "replica_id": -1,
                    "isolation_level": 1,
                    "topics": [
                        {
                            "name": topic_name,
                            "partitions": [
                                {"partition_index": 0, "current_leader_epoch": -1, "timestamp": -3}
                            ],
                        }
                    ],
                },
            )
            added = c.request(
                24,
                3,
                {
                    "v3_and_below_transactional_id": "outage-tx",
                    "v3_and_below_producer_id": init["producer_id"],
                    "v3_and_below_producer_epoch": init["producer_epoch"],
                    "v3_and_below_topics": [{"name": topic_name, "partitions": [0]}],
                },
            )
        assert fetch["responses"][0]["partitions"][0]["error_code"] in (0, KAFKA_STORAGE_ERROR), fetch
        assert produced["responses"][0]["partition_responses"][0]["error_code"] == KAFKA_STORAGE_ERROR
        assert listed["topics"][0]["partitions"][0]["error_code"] == KAFKA_STORAGE_ERROR, listed
        code = added["results_by_topic_v3_and_below"][0]["results_by_partition"][0]["partition_error_code"]
        assert code in (COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR), added
    finally:
        options = f"-p {server.port} -k {server.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        _pg_ctl(server, "-o", options, "-w", "-t", "60", "start")
    assert produce(broker.bootstrap, topic_name, [(None, b"after")], message_timeout_ms=60000) == [1]


def test_an_append_whose_answer_is_lost_is_possibly_stored_and_its_retry_is_recognised(
    tmp_path: Path, topic_name: str
) -> None:
    """The database commits an idempotent producer's batch but the connection breaks before the answer: the
    append's outcome is unknown (REQUEST_TIMED_OUT for the client, which then retries the same sequence,
    rather than KAFKA_STORAGE_ERROR, after which librdkafka resends it under a new epoch: a duplicate), and
    the retry is answered with the stored offsets."""
    import asyncio

    from test_pg_support import _batch, pg_server

    from kafkite.log.base import AppendOutcomeUnknown
    from kafkite.log.pg import PgStorage
    from kafkite.log.pg.db import Database, DatabaseError, Op, T

    class LosesAnswers(Database):
        lose = False

        async def run_async(self, op: Op[T], *, transaction: bool = False) -> T:
            if not self.lose:
                return await super().run_async(op, transaction=transaction)

            def forward() -> Op[T]:
                # Each statement runs (and commits); the answer to the append never comes back.
                sql, params = next(op)
                while True:
                    rows = yield (sql, params)
                    if "INSERT INTO kafkite_batches" in sql:
                        self.lose = False
                        raise DatabaseError("database error: server closed the connection unexpectedly")
                    sql, params = op.send(rows)

            return await super().run_async(forward(), transaction=transaction)

    storage = PgStorage(pg_server().new_database("lost"))
    storage.db = LosesAnswers(storage.dsn)
    storage.load()
    try:
        storage.create_topic(topic_name, 1)
        part = storage.partition(topic_name, 0)

        async def run() -> tuple[int, int]:
            first = _batch([b"a"], producer_id=5, producer_epoch=0, base_sequence=0)
            assert (await part.append(bytearray(first), now_ms=1)).first_offset == 0
            storage.db.lose = True  # type: ignore[attr-defined]
            second = _batch([b"b"], producer_id=5, producer_epoch=0, base_sequence=1)
            with pytest.raises(AppendOutcomeUnknown):
                await part.append(bytearray(second), now_ms=1)
            retry = await part.append(bytearray(second), now_ms=1)
            await storage.db.close_async()
            return retry.first_offset, retry.bytes

        assert asyncio.run(run()) == (1, 0)  # the stored offset, nothing appended again
        part.refresh()
        assert part.log_end_offset == 2
    finally:
        storage.close()


def test_a_broker_starting_beside_appending_ones_takes_no_table_lock(tmp_path: Path) -> None:
    """Start-up on a database whose tables are complete runs no DDL: ALTER TABLE locks a table exclusively
    even when it changes nothing, and a broker restarting while the others appended deadlocked with them."""
    import threading

    import psycopg
    from test_pg_support import pg_server

    from kafkite.log.pg import PgStorage

    dsn = pg_server().new_database("startup")
    first = PgStorage(dsn)
    first.load()  # creates the tables
    first.close()
    with psycopg.connect(dsn) as busy:
        # An append in flight holds these locks (its statement updates one table and inserts into the other).
        busy.execute("LOCK TABLE kafkite_partitions, kafkite_batches IN ROW EXCLUSIVE MODE")
        done = threading.Event()
        errors: list[BaseException] = []

        def start() -> None:
            try:
                again = PgStorage(dsn)
                again.load()
                again.close()
            except BaseException as e:
                errors.append(e)
            done.set()

        threading.Thread(target=start, daemon=True).start()
        loaded = done.wait(10)
        busy.rollback()
    done.wait(30)
    assert loaded, "start-up waited for the appending broker's table locks"
    assert not errors, errors


def test_connections_carry_the_cluster_s_idle_transaction_timeout() -> None:
    """Brokers sharing a database have the database end a transaction left idle for a session timeout: a
    broker paused inside one would otherwise hold the membership lock and block the change that fences it."""
    from test_pg_support import pg_server

    from kafkite.log.pg.db import Database

    db = Database(pg_server().new_database("idle"))
    db.settings["idle_in_transaction_session_timeout"] = "1500"
    try:
        assert db.execute("SHOW idle_in_transaction_session_timeout") == [("1500ms",)]
    finally:
        db.close()


def test_the_server_drops_connections_of_a_broker_cut_off_from_it() -> None:
    """Each connection sets the server's keepalives and TCP user timeout for its session: the backends of a
    broker cut off from the database end within seconds instead of living on and using up max_connections
    (a 100-cycle partition-db run ran out of connections: "sorry, too many clients already")."""
    from test_pg_support import pg_server

    from kafkite.log.pg.db import Database

    db = Database(pg_server().new_database("server-keepalive"))
    try:
        shown = [
            db.execute(f"SHOW {name}")[0][0]
            for name in (
                "tcp_keepalives_idle",
                "tcp_keepalives_interval",
                "tcp_keepalives_count",
                "tcp_user_timeout",
            )
        ]
        assert shown == ["5", "2", "3", "5000"], shown
    finally:
        db.close()
