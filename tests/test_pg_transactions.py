"""Transactions and idempotent producers on the PostgreSQL engine: the client transaction tests of
``test_txn_clients.py`` that share one broker, re-run unchanged on a PostgreSQL-backed broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from helpers import BrokerProcess
from test_pg_support import pg_broker_process
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


@pytest.fixture(scope="module")
def _pg_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with pg_broker_process(tmp_path_factory, "transactions") as b:
        yield b


@pytest.fixture
def shared_broker(
    _pg_broker: BrokerProcess, attach_broker: Callable[[BrokerProcess], BrokerProcess]
) -> BrokerProcess:
    """The module's PostgreSQL-backed broker, in place of the session's file-engine broker."""
    if not _pg_broker.running:
        _pg_broker.start()
    return attach_broker(_pg_broker)
