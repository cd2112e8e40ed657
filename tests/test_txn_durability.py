"""Producer id blocks are durable before any id of them is handed out (a power cut must not make the broker
hand the same producer id to a new producer: the partitions would take it for the old one)."""

from __future__ import annotations

from kafkite.broker.groups.log import Entry, MemoryGroupLog
from kafkite.broker.txn.coordinator import PRODUCER_ID_BLOCK_SIZE, TransactionCoordinator


class RecordingLog(MemoryGroupLog):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    def append(self, entries: list[Entry]) -> None:
        super().append(entries)
        self.events.append("append")

    def flush(self) -> None:
        self.events.append("flush")


def test_a_producer_id_block_is_flushed_before_its_first_id_is_used() -> None:
    log = RecordingLog()
    coordinator = TransactionCoordinator(log=log)
    first = coordinator.new_producer_id()
    assert log.events == ["append", "flush"]
    for _ in range(PRODUCER_ID_BLOCK_SIZE - 1):
        coordinator.new_producer_id()
    assert log.events == ["append", "flush"]  # one block, one fsync
    assert coordinator.new_producer_id() == first + PRODUCER_ID_BLOCK_SIZE
    assert log.events == ["append", "flush", "append", "flush"]
    # A coordinator recovering from that log hands out ids after the last block it saw.
    again = TransactionCoordinator(log=MemoryGroupLog(log.entries))
    assert again.new_producer_id() == first + 2 * PRODUCER_ID_BLOCK_SIZE
