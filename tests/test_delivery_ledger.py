"""The delivery ledger in window mode (share partitions) on a file log: range events, lapses, the dead-letter
rule, replay after a restart and snapshots; queue mode is covered through QueueState (test_queue_engine)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kafkite.broker.delivery.journal import RecordLog, decode_event, table_of
from kafkite.broker.delivery.ledger import Ledger, counted_ranges, ranges
from kafkite.log.engine import FileStorage

CONFIGS = {"retention.ms": "-1", "retention.bytes": "-1"}


@dataclass(slots=True)
class Item:
    id: int
    delivery_count: int = 0
    visible_after_ms: int = 0
    nonce: int = 0
    dlq: bool = False


class Clock:
    def __init__(self) -> None:
        self.ms = 1_700_000_000_000

    def __call__(self) -> int:
        return self.ms


def _open(root: Path, clock: Clock, table: str | None = "g:t:0") -> tuple[FileStorage, Ledger[Item]]:
    storage = FileStorage(root)
    storage.load()
    if "j" not in storage.topics():
        storage.create_topic("j", 1, CONFIGS)
    log = RecordLog(storage.partition("j", 0), clock)
    ledger: Ledger[Item] = Ledger(log, {}, clock=clock, window=True, table=table, create=Item)
    for rec in log.replay():
        if table_of(rec) == table:
            ledger.apply(*decode_event(rec))
    ledger.rebuild()
    return storage, ledger


def _new(ledger: Ledger[Item], first: int, last: int) -> list[Item]:
    items = [ledger.entries.setdefault(i, Item(i)) for i in range(first, last + 1)]
    return items


def test_ranges_helpers() -> None:
    assert ranges([5, 1, 2, 3, 7]) == [[1, 3], [5, 5], [7, 7]]
    items = [Item(1, 1), Item(2, 1), Item(3, 2), Item(5, 2)]
    assert counted_ranges(items) == [[1, 2, 1], [3, 3, 2], [5, 5, 2]]


def test_window_moves_past_settled_and_dead_items_and_survives_replay(tmp_path: Path) -> None:
    clock = Clock()
    storage, ledger = _open(tmp_path, clock)
    ledger.move_window(10, 10)
    items = _new(ledger, 10, 19)
    ledger.deliver(items, clock.ms + 30_000, owner="m1")
    assert (ledger.start, ledger.end) == (10, 20)
    assert all(ledger.owners[i] == "m1" for i in range(10, 20))
    ledger.settled([ledger.entries[i] for i in (10, 11, 13)])
    assert ledger.start == 12  # 12 is still in flight
    ledger.kill([ledger.entries[12]])  # archived
    assert ledger.start == 14
    ledger.kill([ledger.entries[14]], pending=True)  # archived, its dead letter still to write
    assert ledger.start == 14 and ledger.entries[14].dlq
    ledger.written([ledger.entries[14]])
    assert ledger.start == 15
    storage.close()

    storage, again = _open(tmp_path, clock)
    assert (again.start, again.end) == (15, 20)
    assert sorted(again.entries) == list(range(15, 20))
    assert all(e.delivery_count == 1 for e in again.entries.values())
    assert again.owners[15] == "m1"
    storage.close()


def test_lapses_return_items_or_kill_them_at_the_limit(tmp_path: Path) -> None:
    clock = Clock()
    storage, ledger = _open(tmp_path, clock)
    items = _new(ledger, 0, 3)
    ledger.deliver(items, clock.ms + 1000)
    ledger.deliver([ledger.entries[0]], clock.ms + 1000)  # not in flight any more: a second delivery
    clock.ms += 1001
    back, dead = ledger.settle(clock.ms, limit=2, pending_dead=True)
    assert [e.id for e in dead] == [0] and sorted(e.id for e in back) == [1, 2, 3]
    assert ledger.entries[0].dlq  # kept until its dead letter is written
    # A released delivery (lock moved to 0) lapses at once.
    ledger.deliver([ledger.entries[1]], clock.ms + 60_000, owner="m")
    ledger.move_locks([ledger.entries[1]], 0)
    back, dead = ledger.settle(clock.ms, limit=5)
    assert [e.id for e in back] == [1] and not dead
    assert ledger.entries[1].delivery_count == 2
    storage.close()

    storage, again = _open(tmp_path, clock)
    assert again.entries[0].dlq and again.entries[0].delivery_count == 2
    assert again.entries[1].delivery_count == 2 and again.entries[1].visible_after_ms == 0
    storage.close()


def test_snapshot_replaces_the_history_and_the_log_can_be_trimmed(tmp_path: Path) -> None:
    clock = Clock()
    storage, ledger = _open(tmp_path, clock)
    ledger.move_window(100, 100)
    for first in range(100, 200, 10):
        ledger.deliver(_new(ledger, first, first + 9), clock.ms + 5000)
    ledger.settled([e for e in list(ledger.entries.values()) if e.id < 150 or e.id % 3 == 0])
    expected = {i: e.delivery_count for i, e in ledger.entries.items()}
    start = ledger.start
    offset = ledger.journal(ledger.snapshot_events(ledger.end))
    ledger.log.partition.delete_records_before(offset)
    storage.close()

    storage, again = _open(tmp_path, clock)
    assert {i: e.delivery_count for i, e in again.entries.items()} == expected
    assert (again.start, again.end) == (start, 200)
    storage.close()


def test_ledgers_sharing_a_log_replay_only_their_own_events(tmp_path: Path) -> None:
    clock = Clock()
    storage, a = _open(tmp_path, clock, table="a")
    b: Ledger[Item] = Ledger(a.log, {}, clock=clock, window=True, table="b", create=Item)
    a.deliver(_new(a, 0, 4), clock.ms + 1000)
    b.move_window(50, 50)
    b.deliver(_new(b, 50, 51), clock.ms + 1000)
    storage.close()
    storage, a2 = _open(tmp_path, clock, table="a")
    assert sorted(a2.entries) == [0, 1, 2, 3, 4]
    storage.close()
    storage, b2 = _open(tmp_path, clock, table="b")
    assert sorted(b2.entries) == [50, 51] and b2.start == 50
    storage.close()
