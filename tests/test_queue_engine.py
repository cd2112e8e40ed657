"""QueueState on file logs with a fake clock: deliveries, lapses, dead letters, replay and compaction."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from kafkite.log.engine import FileStorage
from kafkite.queue import engine
from kafkite.queue.engine import QueueState, RecordLog, channel_matches
from kafkite.queue.model import QueueError, QueueMeta
from kafkite.queue.service import INTERNAL_TOPIC_CONFIGS


class Clock:
    def __init__(self) -> None:
        self.ms = 1_700_000_000_000

    def __call__(self) -> int:
        return self.ms

    def advance(self, seconds: float) -> None:
        self.ms += int(seconds * 1000)


class Harness:
    def __init__(
        self, root: Path, queue_id: str = "ocid1.queue.oc1..aaaaaaaaenginetest", **settings: int
    ) -> None:
        self.root = root
        self.clock = Clock()
        self.meta = QueueMeta(
            id=queue_id,
            display_name="t",
            compartment_id="c",
            time_created=0,
            time_updated=0,
            **settings,  # type: ignore[arg-type]
        )
        self.storage = FileStorage(root)
        self.storage.load()
        for t in ("m", "s"):
            self.storage.create_topic(t, 1, INTERNAL_TOPIC_CONFIGS)
        self.state = self.open()

    def open(self) -> QueueState:
        state = QueueState(
            self.meta,
            RecordLog(self.storage.partition("m", 0), self.clock),
            RecordLog(self.storage.partition("s", 0), self.clock),
            clock=self.clock,
        )
        state.load()
        return state

    def reopen(self) -> QueueState:
        """Close the storage and replay everything from the files."""
        self.storage.close()
        self.storage = FileStorage(self.root)
        self.storage.load()
        self.state = self.open()
        return self.state

    def close(self) -> None:
        self.storage.close()


def snapshot(state: QueueState) -> dict[int, tuple[object, ...]]:
    return {
        m.id: (m.content, m.channel, m.props, m.delivery_count, m.visible_after_ms, m.nonce, m.dlq)
        for m in state.msgs.values()
    }


def visible_ids(state: QueueState, dlq: bool = False) -> list[int]:
    now = state.clock()
    return sorted(m.id for m in state.msgs.values() if m.dlq == dlq and m.visible_after_ms <= now)


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path / "data", visibility_in_seconds=30, dead_letter_queue_delivery_count=2)
    yield harness
    harness.close()


def test_delivery_visibility_and_redelivery(h: Harness) -> None:
    s = h.state
    [m] = s.put([(b"x", "", None)])
    [d] = s.take(5, 10)
    assert (d.message.id, d.delivery_count) == (m.id, 1)
    assert s.take(5, 10) == []
    h.clock.advance(9.9)
    assert s.take(5, 10) == []
    h.clock.advance(0.2)
    [d2] = s.take(5, 10)
    assert d2.delivery_count == 2 and d2.receipt != d.receipt
    with pytest.raises(QueueError) as e:
        s.delete(d.receipt)
    assert e.value.status == 404
    s.delete(d2.receipt)
    assert s.msgs == {}


def test_dead_letters_after_the_delivery_count(h: Harness) -> None:
    s = h.state
    s.put([(b"poison", "ch", {"k": "v"})])
    for _ in range(2):
        assert len(s.take(1, 1)) == 1
        h.clock.advance(1.5)
    assert s.take(1, 1) == []
    st = s.stats()
    assert st["dlq"]["visibleMessages"] == 1 and st["queue"]["visibleMessages"] == 0
    [d] = s.take(1, 5, dlq=True)
    assert d.message.dlq and d.delivery_count == 3
    h.clock.advance(6)
    assert s.stats()["dlq"]["visibleMessages"] == 1  # dead letters never move on
    assert s.move_back() == 1
    [back] = s.take(1, 1)
    assert back.delivery_count == 1 and not back.message.dlq


def test_update_extends_and_zero_releases(h: Harness) -> None:
    s = h.state
    s.put([(b"a", "", None)])
    [d] = s.take(1, 2)
    h.clock.advance(1.5)
    m = s.update(d.receipt, 5)
    assert m.visible_after_ms == h.clock() + 5000
    h.clock.advance(4)
    assert s.take(1, 1) == []
    s.update(d.receipt, 0)
    assert len(s.take(1, 1)) == 1


def test_receipt_errors(h: Harness, tmp_path: Path) -> None:
    s = h.state
    s.put([(b"a", "", None)])
    [d] = s.take(1, 5)
    assert s.resolve(d.receipt) is d.message
    with pytest.raises(QueueError) as e:
        s.resolve("!!!")
    assert e.value.status == 400
    other = Harness(tmp_path / "other", queue_id="ocid1.queue.oc1..aaaaaaaaother")
    other.state.put([(b"b", "", None)])
    [od] = other.state.take(1, 5)
    other.close()
    with pytest.raises(QueueError) as e:
        s.resolve(od.receipt)  # the same message id and a live delivery, but another queue's
    assert e.value.status == 400


def test_purge_by_type_and_channel(h: Harness) -> None:
    s = h.state
    s.put([(b"r", "red", None), (b"b", "blue", None), (b"n", "", None)])
    s.purge("NORMAL", ["red"])
    assert sorted(m.content for m in s.msgs.values()) == [b"b", b"n"]
    s.purge("DLQ", None)
    assert len(s.msgs) == 2
    s.purge("BOTH", None)
    assert s.msgs == {}
    s.put([(b"later", "", None)])
    assert len(h.reopen().msgs) == 1


def test_channel_filters() -> None:
    assert channel_matches("abc", None) and channel_matches("abc", "abc") and channel_matches("abc", "ab*")
    assert not channel_matches("abc", "ab") and not channel_matches("xbc", "ab*")


def test_channel_selection_and_limits(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    s = h.state
    s.put([(b"1", "a", None), (b"2", "b", None), (b"3", "a", None)])
    assert [d.message.content for d in s.take(10, 5, "a")] == [b"1", b"3"]
    assert [d.message.content for d in s.take(10, 5)] == [b"2"]
    assert s.channels() == ["a", "b"]
    with pytest.raises(QueueError) as e:
        s.put([(b"x" * (128 * 1024 + 1), "a", None)])
    assert e.value.status == 400
    monkeypatch.setattr(engine, "QUEUE_STORAGE_BYTES", 1000)
    h.meta.channel_consumption_limit = 10  # 100 bytes per channel
    s.put([(b"y" * 90, "c", None)])
    with pytest.raises(QueueError) as e:
        s.put([(b"z" * 20, "c", None)])
    assert (e.value.status, e.value.code) == (429, "TooManyRequests")
    s.put([(b"z" * 20, "d", None)])  # another channel has its own share
    with pytest.raises(QueueError) as e:
        s.put([(b"w" * 900, "", None)])  # the whole queue is full
    assert e.value.status == 429


def random_ops(h: Harness, rng: random.Random, n: int) -> None:
    s = h.state
    receipts: list[str] = []
    for _ in range(n):
        op = rng.random()
        if op < 0.3:
            s.put([(rng.randbytes(4), rng.choice(["", "a", "b"]), None) for _ in range(rng.randint(1, 3))])
        elif op < 0.55:
            receipts += [
                d.receipt for d in s.take(rng.randint(1, 4), rng.choice([0, 1, 3]), dlq=rng.random() < 0.2)
            ]
        elif op < 0.7 and receipts:
            s.delete_many([rng.choice(receipts)])
        elif op < 0.8 and receipts:
            s.update_many([(rng.choice(receipts), rng.choice([0, 2, 5]))])
        elif op < 0.85:
            s.move_back()
        elif op < 0.87:
            s.purge(rng.choice(["NORMAL", "DLQ", "BOTH"]), rng.choice([None, ["a"]]))
        else:
            h.clock.advance(rng.choice([0.5, 1, 2]))


@pytest.mark.parametrize("seed", range(5))
def test_replay_rebuilds_the_same_state(tmp_path: Path, seed: int) -> None:
    h = Harness(tmp_path / "data", dead_letter_queue_delivery_count=3)
    rng = random.Random(seed)
    random_ops(h, rng, 300)
    h.state.stats()  # settle lapses at the current time
    before = snapshot(h.state)
    after = snapshot(h.reopen())
    assert after == before
    assert visible_ids(h.state) == sorted(i for i, v in before.items() if not v[6] and v[4] <= h.clock())
    h.close()


@pytest.mark.parametrize("seed", range(3))
def test_compaction_keeps_the_state_and_trims_the_logs(tmp_path: Path, seed: int) -> None:
    h = Harness(tmp_path / "data", dead_letter_queue_delivery_count=3)
    rng = random.Random(seed)
    random_ops(h, rng, 300)
    s = h.state
    s.stats()
    state_records = s.state_records()
    offset = s.write_snapshot()
    for p in s.partitions:
        p.flush()
    s.trim(offset)
    assert s.state_records() < state_records
    mp = s.messages_log.partition
    assert mp.log_start_offset == min(s.msgs, default=mp.log_end_offset)
    random_ops(h, rng, 100)  # events after the snapshot
    s.stats()
    before = snapshot(s)
    assert snapshot(h.reopen()) == before
    h.close()


def test_torn_snapshot_is_ignored(h: Harness) -> None:
    s = h.state
    s.put([(b"a", "", None), (b"b", "", None)])
    [d] = s.take(1, 30)
    s.delete(d.receipt)
    before = snapshot(s)
    s.state_log.append_events([(b"S", {"next": 99, "m": [], "last": False})])  # a crash mid-snapshot
    assert snapshot(h.reopen()) == before


def test_retention_expires_messages(tmp_path: Path) -> None:
    h = Harness(tmp_path / "data", retention_in_seconds=10)
    s = h.state
    s.put([(b"old", "", None)])
    [d] = s.take(1, 30)
    h.clock.advance(5)
    s.put([(b"new", "", None)])
    h.clock.advance(5.5)
    with pytest.raises(QueueError):
        s.delete(d.receipt)  # expired while in flight
    assert [x.message.content for x in s.take(5, 30)] == [b"new"]
    assert s.stats()["queue"]["inFlightMessages"] == 1
    h.clock.advance(5)
    assert s.stats()["queue"] == {"visibleMessages": 0, "inFlightMessages": 0, "sizeInBytes": 0}
    assert s.expire() == 2 and s.msgs == {}
    assert h.reopen().msgs == {}
    h.close()
