"""One clock for every component, swappable in tests; one table of error codes."""

from __future__ import annotations

import asyncio
import pathlib
import re

from kafkite import clock
from kafkite.broker.core import RequestContext
from kafkite.broker.groups.log import MemoryGroupLog
from kafkite.broker.produce import handle_produce
from kafkite.broker.txn.coordinator import TransactionCoordinator
from kafkite.compose import build_broker
from kafkite.config import BrokerConfig
from kafkite.protocol.errors import ErrorCode
from kafkite.protocol.records import build_batch

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "kafkite"


def test_log_append_time_comes_from_the_clock_in_use() -> None:
    broker = build_broker(BrokerConfig({"storage.engine": "memory"}))
    broker.create_topic("t", 1, {"message.timestamp.type": "LogAppendTime"})
    batch = bytearray(build_batch([(b"k", b"v", [], 0)]))
    req = {
        "transactional_id": None,
        "acks": 1,
        "timeout_ms": 1000,
        "topic_data": [{"name": "t", "partition_data": [{"index": 0, "records": batch}]}],
    }
    ctx = RequestContext(api_key=0, api_version=9, correlation_id=1, client_id="c", client_host="127.0.0.1")
    with clock.use(clock.ManualClock(1_234_567)) as manual:
        assert isinstance(manual, clock.ManualClock)
        resp = asyncio.run(handle_produce(broker, ctx, req))
        assert resp is not None
        part = resp["responses"][0]["partition_responses"][0]
        assert part["error_code"] == 0
        assert part["log_append_time_ms"] == 1_234_567
        manual.advance(10)
        assert clock.now_ms() == 1_234_577
    assert abs(clock.now_ms() - clock.SystemClock().now_ms()) < 60_000


def test_coordinators_default_to_the_clock_in_use() -> None:
    with clock.use(clock.ManualClock(42)):
        coordinator = TransactionCoordinator(log=MemoryGroupLog())
        assert coordinator._now_ms() == 42


def test_the_error_table_has_every_code_kafka_defines_up_to_its_highest() -> None:
    codes = sorted(int(c) for c in ErrorCode)
    assert codes == list(range(-1, codes[-1] + 1))
    assert ErrorCode.TRANSACTIONAL_ID_NOT_FOUND == 105


def test_no_error_code_is_spelled_as_a_bare_number() -> None:
    """Error codes come from ErrorCode, not from integer literals beside it."""
    bare = re.compile(r"error_code[\"']?\s*(?::|=|==)\s*-?[1-9]\d*\b|=\s*\d+\s*#\s*Kafka's error code")
    found = [
        f"{path.relative_to(PACKAGE)}:{n}"
        for path in PACKAGE.rglob("*.py")
        if path.name != "errors.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if bare.search(line)
    ]
    assert found == []


def test_no_module_keeps_a_clock_of_its_own() -> None:
    own = re.compile(r"time\.time_ns\(\)\s*//\s*1_000_000|int\(time\.time\(\)\s*\*\s*1000\)")
    found = [
        f"{path.relative_to(PACKAGE)}:{n}"
        for path in PACKAGE.rglob("*.py")
        if path.name != "clock.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if own.search(line)
    ]
    assert found == []
