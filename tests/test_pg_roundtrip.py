"""The core broker's client round trips, unchanged, on the PostgreSQL engine.

The test classes of ``integration/test_clients_roundtrip.py`` (confluent-kafka, kafka-python, aiokafka and
kcat: every codec, headers, offsets by timestamp, topic configs) run here again against a broker started with
``--override storage.engine=postgresql://...`` on a database of the session's PostgreSQL server.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from test_pg_support import pg_shared_broker_fixtures

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


_pg_broker, shared_broker = pg_shared_broker_fixtures("roundtrip")
