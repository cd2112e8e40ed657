"""The core broker's client round trips, unchanged, on the PostgreSQL engine.

The test classes of ``integration/test_clients_roundtrip.py`` (confluent-kafka, kafka-python, aiokafka and
kcat: every codec, headers, offsets by timestamp, topic configs) run here again against a broker started with
``--override storage.engine=postgresql://...`` on a database of the session's PostgreSQL server.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import BrokerProcess
from test_pg_support import pg_broker_process

sys.path.insert(0, str(Path(__file__).resolve().parent / "integration"))

from test_clients_roundtrip import (
    TestAiokafka,
    TestConfluentKafka,
    TestKafkaPython,
    TestKcat,
    codec,
    kp_admin,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

__all__ = ["TestAiokafka", "TestConfluentKafka", "TestKafkaPython", "TestKcat", "codec", "kp_admin"]


@pytest.fixture(scope="module")
def _pg_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with pg_broker_process(tmp_path_factory, "roundtrip") as b:
        yield b


@pytest.fixture
def shared_broker(
    _pg_broker: BrokerProcess, attach_broker: Callable[[BrokerProcess], BrokerProcess]
) -> BrokerProcess:
    """The module's PostgreSQL-backed broker, in place of the session's file-engine broker."""
    if not _pg_broker.running:
        _pg_broker.start()
    return attach_broker(_pg_broker)
