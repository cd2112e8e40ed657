"""The PostgreSQL engine's tables, and the statements more than one module uses.

Every table is prefixed ``kafkite_`` and lives in the schema the connection's ``search_path`` selects (add
``?options=-csearch_path%3Dmyschema`` to the DSN to keep kafkite in a schema of its own).

- ``kafkite_meta``: key/value pairs (the cluster id, the membership epoch).
- ``kafkite_topics``: the topic catalogue: name, topic id, partition count, topic-level config overrides.
- ``kafkite_partitions``: one row per partition: the next offset (the high watermark), the log start offset,
  the bytes stored, and the leader: its epoch, node id and process (``leader_instance``; NULL until a broker
  first claims the partition). Appends lock and advance this row in the statement that inserts their
  batches, only while it still carries the leader epoch they were prepared for.
- ``kafkite_leader_epochs``: where each leader epoch of a partition started (OffsetForLeaderEpoch).
- ``kafkite_batches``: record batches exactly as produced (base offset rewritten), keyed by their last offset,
  with the header fields that lookups need.
- ``kafkite_producer_snapshots``: the newest producer state snapshot of each partition (idempotence and
  transactions); the state is that snapshot plus the batches after it.
- ``kafkite_group_entries``: consumer group metadata and committed offsets, one row per key.
- ``kafkite_brokers``: the brokers sharing the database, with their heartbeats.

Databases made before leader epochs get their columns added at start-up (``ALTER TABLE ... IF NOT EXISTS``).
"""

from __future__ import annotations

import functools

SCHEMA_LOCK = 0x6B61666B  # advisory lock serialising schema creation between brokers starting together
# Advisory lock held exclusively by a membership change and shared by every write that must happen within one
# membership epoch (a coordinator's, a leadership claim): see kafkite.cluster.membership.
MEMBERSHIP_LOCK = 0x6B61666C

DDL = [
    """CREATE TABLE IF NOT EXISTS kafkite_meta (
        key text PRIMARY KEY,
        value text NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS kafkite_topics (
        name text PRIMARY KEY,
        topic_id uuid NOT NULL UNIQUE,
        partitions integer NOT NULL,
        configs jsonb NOT NULL DEFAULT '{}'
    )""",
    """CREATE TABLE IF NOT EXISTS kafkite_partitions (
        topic_id uuid NOT NULL,
        idx integer NOT NULL,
        next_offset bigint NOT NULL DEFAULT 0,
        log_start_offset bigint NOT NULL DEFAULT 0,
        size_bytes bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (topic_id, idx)
    )""",
    """CREATE TABLE IF NOT EXISTS kafkite_batches (
        topic_id uuid NOT NULL,
        idx integer NOT NULL,
        last_offset bigint NOT NULL,
        base_offset bigint NOT NULL,
        max_timestamp bigint NOT NULL,
        size integer NOT NULL,
        producer_id bigint NOT NULL,
        is_control boolean NOT NULL,
        data bytea NOT NULL,
        PRIMARY KEY (topic_id, idx, last_offset)
    )""",
    # Batches are usually compressed already: store them out of line without compressing them again (and so
    # that reading a header slice does not decompress the whole value).
    "ALTER TABLE kafkite_batches ALTER COLUMN data SET STORAGE EXTERNAL",
    # Rebuilding producer state reads only the batches of idempotent and transactional producers.
    "CREATE INDEX IF NOT EXISTS kafkite_batches_producers ON kafkite_batches (topic_id, idx, last_offset)"
    " WHERE producer_id >= 0",
    """CREATE TABLE IF NOT EXISTS kafkite_producer_snapshots (
        topic_id uuid NOT NULL,
        idx integer NOT NULL,
        snapshot_offset bigint NOT NULL,
        data bytea NOT NULL,
        PRIMARY KEY (topic_id, idx)
    )""",
    """CREATE TABLE IF NOT EXISTS kafkite_group_entries (
        key bytea PRIMARY KEY,
        group_id text NOT NULL,
        value bytea NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS kafkite_brokers (
        node_id integer PRIMARY KEY,
        instance uuid NOT NULL,
        listeners jsonb NOT NULL,
        rack text,
        started timestamptz NOT NULL DEFAULT now(),
        heartbeat timestamptz NOT NULL DEFAULT now()
    )""",
    # One value per block of producer ids (see kafkite.cluster): no two brokers hand out the same id.
    "CREATE SEQUENCE IF NOT EXISTS kafkite_producer_id_blocks START 1",
    "ALTER TABLE kafkite_partitions ADD COLUMN IF NOT EXISTS leader_epoch integer NOT NULL DEFAULT 0",
    "ALTER TABLE kafkite_partitions ADD COLUMN IF NOT EXISTS leader_id integer",
    "ALTER TABLE kafkite_partitions ADD COLUMN IF NOT EXISTS leader_instance uuid",
    """CREATE TABLE IF NOT EXISTS kafkite_leader_epochs (
        topic_id uuid NOT NULL,
        idx integer NOT NULL,
        epoch integer NOT NULL,
        start_offset bigint NOT NULL,
        PRIMARY KEY (topic_id, idx, epoch)
    )""",
]

# Whether every table, column and index of DDL exists already (then start-up runs no DDL at all: ALTER TABLE
# locks a table exclusively even when it changes nothing, and two such locks taken while running brokers
# append can deadlock with them).
SCHEMA_READY = """
SELECT to_regclass('kafkite_leader_epochs') IS NOT NULL
   AND to_regclass('kafkite_batches_producers') IS NOT NULL
   AND to_regclass('kafkite_producer_id_blocks') IS NOT NULL
   AND (SELECT count(*) FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = 'kafkite_partitions'
          AND column_name IN ('leader_epoch', 'leader_id', 'leader_instance')) = 3
"""

APPEND_CHANNEL = "kafkite_append"
CATALOGUE_CHANNEL = "kafkite_catalogue"
CLUSTER_CHANNEL = "kafkite_cluster"
LEADERS_CHANNEL = "kafkite_leaders"

# One statement, so one round trip and one transaction: advance the partition row if it still holds the
# expected next offset and leader epoch (the row lock orders concurrent appends and leadership claims; a stale
# expectation matches no row and inserts nothing), insert the batches, and tell the other brokers. One row of
# parameters per batch (a bytea[] array parameter costs several times more than plain bytea values).
_APPEND_HEAD = """
WITH p AS (
    UPDATE kafkite_partitions SET next_offset = %(end)s, size_bytes = size_bytes + %(size)s
    WHERE topic_id = %(tid)s AND idx = %(idx)s AND next_offset = %(start)s AND leader_epoch = %(epoch)s
    RETURNING log_start_offset
), ins AS (
    INSERT INTO kafkite_batches
        (topic_id, idx, last_offset, base_offset, max_timestamp, size, producer_id, is_control, data)
    SELECT %(tid)s, %(idx)s, b.lo, b.bo, b.ts, b.sz, b.pid, b.ctl, b.data
    FROM p, (VALUES {rows}) AS b(lo, bo, ts, sz, pid, ctl, data)
)
SELECT log_start_offset, pg_notify('kafkite_append', %(note)s || '|' || log_start_offset) FROM p
"""
_APPEND_ROW = (
    "(%(lo{i})s::bigint, %(bo{i})s::bigint, %(ts{i})s::bigint, %(sz{i})s::integer, %(pid{i})s::bigint,"
    " %(ctl{i})s::boolean, %(data{i})s::bytea)"
)
BATCH_FIELDS = ("lo", "bo", "ts", "sz", "pid", "ctl", "data")


@functools.cache
def append_statement(batches: int) -> str:
    """The append statement for ``batches`` batches (parameters lo0, bo0 ... data0, lo1 ...)."""
    return _APPEND_HEAD.format(rows=", ".join(_APPEND_ROW.format(i=i) for i in range(batches)))


BOUNDS = (
    "SELECT next_offset, log_start_offset, size_bytes, leader_epoch, leader_instance FROM kafkite_partitions"
    " WHERE topic_id = %s AND idx = %s"
)

# Whole batches from the one holding the fetch offset, at most max_bytes of them (the first one whatever its
# size when asked), below the limit offset. The inner LIMIT bounds the rows looked at.
READ = """
SELECT data FROM (
    SELECT data, size, sum(size) OVER (ORDER BY last_offset) AS upto FROM (
        SELECT last_offset, size, data FROM kafkite_batches
        WHERE topic_id = %s AND idx = %s AND last_offset >= %s AND last_offset < %s
        ORDER BY last_offset LIMIT %s
    ) a
) t WHERE upto <= %s OR (upto = size AND %s)
ORDER BY upto
"""

# Header slices (61 bytes) of the batches of producers from an offset on; control batches whole.
PRODUCER_BATCHES = """
SELECT substring(data from 1 for 61), CASE WHEN is_control THEN data END FROM kafkite_batches
WHERE topic_id = %s AND idx = %s AND last_offset >= %s AND producer_id >= 0
ORDER BY last_offset
"""
