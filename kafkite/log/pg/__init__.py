"""The PostgreSQL storage engine: ``--override storage.engine=postgresql://user@host:port/dbname``.

Several brokers may share one database: each keeps no state of its own (see ``kafkite.cluster``).
Requires the ``postgresql`` extra (psycopg 3).
"""

from kafkite.log.pg.db import Database, DatabaseError
from kafkite.log.pg.partition import PgPartition
from kafkite.log.pg.storage import PgStorage, is_postgres_dsn

__all__ = ["Database", "DatabaseError", "PgPartition", "PgStorage", "is_postgres_dsn"]
