"""Transactions and idempotent producers on the PostgreSQL engine: the client transaction tests of
``test_txn_clients.py`` that share one broker, re-run unchanged on a PostgreSQL-backed broker."""

from __future__ import annotations

import pytest
from test_pg_support import pg_shared_broker_fixtures
from test_txn_clients import (
    test_aiokafka_transactional_producer,
    test_committed_visible_aborted_never,
    test_consume_transform_produce_killed_mid_transaction,
    test_open_transaction_holds_back_read_committed,
    test_second_producer_fences_the_first,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

__all__ = [
    "test_aiokafka_transactional_producer",
    "test_committed_visible_aborted_never",
    "test_consume_transform_produce_killed_mid_transaction",
    "test_open_transaction_holds_back_read_committed",
    "test_second_producer_fences_the_first",
]


_pg_broker, shared_broker = pg_shared_broker_fixtures("transactions")
