"""The transaction coordinator over memory partitions: producer ids, epochs and fencing, commit and abort
markers, timeouts, recovery from its log, and transactional offset commits in the group coordinator."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kafkite.broker.groups.coordinator import GroupCoordinator
from kafkite.broker.groups.log import MemoryGroupLog
from kafkite.broker.txn import TransactionCoordinator, TxnConfig, TxnState
from kafkite.broker.txn.state import TxnMetadata
from kafkite.log.engine import MemoryStorage
from kafkite.log.producer_state import InvalidProducerEpoch
from kafkite.protocol.errors import ErrorCode
from kafkite.protocol.records import build_batch

OK = ErrorCode.NO_ERROR


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


class Env:
    def __init__(
        self, txn_log: MemoryGroupLog | None = None, group_log: MemoryGroupLog | None = None
    ) -> None:
        self.clock = Clock()
        self.storage = MemoryStorage()
        self.storage.create_topic("t", 2)
        self.txn_log = txn_log if txn_log is not None else MemoryGroupLog()
        self.group_log = group_log if group_log is not None else MemoryGroupLog()
        self.groups = GroupCoordinator(self.partitions_of, log=self.group_log, now_ms=self.clock)
        self.notified: list[tuple[str, int]] = []
        self.txn = self.new_coordinator()

    def partitions_of(self, topic: str) -> int | None:
        meta = self.storage.topics().get(topic)
        return None if meta is None else meta.partitions

    def partition(self, topic: str, index: int) -> Any:
        meta = self.storage.topics().get(topic)
        return self.storage.partition(topic, index) if meta and 0 <= index < meta.partitions else None

    def new_coordinator(self, **config: int) -> TransactionCoordinator:
        return TransactionCoordinator(
            log=self.txn_log,
            config=TxnConfig(**config),
            partition_of=self.partition,
            all_partitions=lambda: [p for _, _, p in self.storage.partitions()],
            groups=self.groups,
            notify=lambda t, p: self.notified.append((t, p)),
            now_ms=self.clock,
        )

    def produce(
        self, pid: int, epoch: int, seq: int, partition: int = 0, n: int = 1, txn: bool = True
    ) -> int:
        recs = [(None, b"v", (), self.clock.now) for _ in range(n)]
        b = build_batch(recs, producer_id=pid, producer_epoch=epoch, base_sequence=seq, transactional=txn)
        return (
            self.storage.partition("t", partition)
            .append_sync(bytearray(b), now_ms=self.clock.now)
            .first_offset
        )


def begin(env: Env, tid: str = "tx", timeout_ms: int = 60_000) -> tuple[int, int]:
    code, pid, epoch = env.txn.init_producer_id(tid, timeout_ms)
    assert code == OK
    return pid, epoch


def test_producer_ids_and_epochs() -> None:
    env = Env()
    a = env.txn.init_producer_id(None, -1)
    b = env.txn.init_producer_id("", -1)
    assert a[0] == b[0] == OK and a[1] != b[1] and a[2] == b[2] == 0
    pid, epoch = begin(env)
    assert epoch == 0
    assert begin(env) == (pid, 1)
    assert env.txn.init_producer_id("tx", 0)[0] == ErrorCode.INVALID_TRANSACTION_TIMEOUT
    assert env.txn.init_producer_id("tx", 900_001)[0] == ErrorCode.INVALID_TRANSACTION_TIMEOUT
    # KIP-360: a producer naming its current id and epoch gets a bump; stale ones are fenced
    assert env.txn.init_producer_id("tx", 1000, pid, 1) == (OK, pid, 2)
    assert env.txn.init_producer_id("tx", 1000, pid, 1) == (OK, pid, 2)  # a retry of that bump
    assert env.txn.init_producer_id("tx", 1000, pid, 0)[0] == ErrorCode.PRODUCER_FENCED
    # an exhausted epoch moves to a new producer id
    env.txn.txns["tx"].producer_epoch = 32766
    code, new_pid, new_epoch = env.txn.init_producer_id("tx", 1000)
    assert code == OK and new_pid != pid and new_epoch == 0


def test_producer_ids_are_never_reused_after_restart() -> None:
    env = Env()
    first = {env.txn.init_producer_id(None, -1)[1] for _ in range(5)}
    again = Env(txn_log=env.txn_log).txn
    later = {again.init_producer_id(None, -1)[1] for _ in range(5)}
    assert not first & later


def test_commit_and_abort_write_markers() -> None:
    env = Env()
    pid, epoch = begin(env)
    part = env.storage.partition("t", 0)
    assert env.txn.check_produce(pid, epoch, "t", 0) is not None  # not added yet
    assert env.txn.add_partitions("tx", pid, epoch, [("t", 0), ("t", 1)]) == {("t", 0): OK, ("t", 1): OK}
    assert env.txn.check_produce(pid, epoch, "t", 0) is None
    env.produce(pid, epoch, 0, n=3)
    assert part.last_stable_offset == 0
    assert env.txn.end_txn("tx", pid, epoch, True) == OK
    assert env.txn.txns["tx"].state == TxnState.COMPLETE_COMMIT
    assert part.last_stable_offset == part.log_end_offset == 4  # three records and the marker
    assert env.storage.partition("t", 1).log_end_offset == 1  # a marker even where nothing was written
    assert ("t", 0) in env.notified
    assert env.txn.end_txn("tx", pid, epoch, True) == OK  # a retry
    assert env.txn.end_txn("tx", pid, epoch, False) == ErrorCode.INVALID_TXN_STATE
    env.txn.add_partitions("tx", pid, epoch, [("t", 0)])
    env.produce(pid, epoch, 3, n=2)
    assert env.txn.end_txn("tx", pid, epoch, False) == OK
    assert [(t.producer_id, t.first_offset, t.last_offset) for t in part.aborted_transactions(0, 10)] == [
        (pid, 4, 6)
    ]


def test_errors_of_transaction_requests() -> None:
    env = Env()
    pid, epoch = begin(env)
    assert env.txn.add_partitions("nope", pid, epoch, [("t", 0)]) == {
        ("t", 0): ErrorCode.INVALID_PRODUCER_ID_MAPPING
    }
    assert env.txn.add_partitions("tx", pid, epoch + 1, [("t", 0)])[("t", 0)] == ErrorCode.PRODUCER_FENCED
    assert env.txn.add_partitions("tx", pid, epoch, [("t", 0), ("t", 9)]) == {
        ("t", 0): ErrorCode.OPERATION_NOT_ATTEMPTED,
        ("t", 9): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    }
    assert env.txn.end_txn("tx", pid, epoch, True) == ErrorCode.INVALID_TXN_STATE  # nothing begun
    assert env.txn.verify_partitions("tx", pid, epoch, [("t", 0)]) == {("t", 0): ErrorCode.INVALID_TXN_STATE}
    env.txn.add_partitions("tx", pid, epoch, [("t", 0)])
    assert env.txn.verify_partitions("tx", pid, epoch, [("t", 0)]) == {("t", 0): OK}
    assert env.txn.check_offset_commit("tx", pid, epoch, "g") == ErrorCode.INVALID_TXN_STATE
    assert env.txn.add_offsets("tx", pid, epoch, "g") == OK
    assert env.txn.check_offset_commit("tx", pid, epoch, "g") == OK


def test_new_producer_fences_and_aborts_the_old_transaction() -> None:
    env = Env()
    pid, epoch = begin(env)
    env.txn.add_partitions("tx", pid, epoch, [("t", 0)])
    env.produce(pid, epoch, 0, n=2)
    pid2, epoch2 = begin(env)
    assert (pid2, epoch2) == (pid, epoch + 1)
    part = env.storage.partition("t", 0)
    assert part.last_stable_offset == part.log_end_offset == 3
    assert len(part.aborted_transactions(0, 3)) == 1
    refused = env.txn.check_produce(pid, epoch, "t", 0)
    assert refused is not None and refused[0] == ErrorCode.INVALID_PRODUCER_EPOCH
    with pytest.raises(InvalidProducerEpoch):
        env.produce(pid, epoch, 2)
    assert env.txn.end_txn("tx", pid, epoch, True) == ErrorCode.PRODUCER_FENCED


def test_timed_out_transactions_are_aborted_and_fenced() -> None:
    env = Env()
    pid, epoch = begin(env, timeout_ms=5000)
    env.txn.add_partitions("tx", pid, epoch, [("t", 0)])
    env.produce(pid, epoch, 0)
    env.clock.now += 4000
    assert env.txn.abort_timed_out() == []
    env.clock.now += 2000
    assert env.txn.abort_timed_out() == ["tx"]
    meta = env.txn.txns["tx"]
    assert meta.state == TxnState.COMPLETE_ABORT and meta.producer_epoch == epoch + 1
    assert env.storage.partition("t", 0).last_stable_offset == 2
    assert env.txn.end_txn("tx", pid, epoch, True) == ErrorCode.PRODUCER_FENCED


def test_idle_ids_expire() -> None:
    env = Env()
    env.txn = env.new_coordinator(transactional_id_expiration_ms=1000, producer_id_expiration_ms=1000)
    begin(env, "old")
    pid = env.txn.init_producer_id(None, -1)[1]
    env.produce(pid, 0, 0, txn=False)
    env.clock.now += 500
    begin(env, "young")
    env.clock.now += 600
    env.txn.tick()
    assert set(env.txn.txns) == {"young"}
    assert env.storage.partition("t", 0).producers.describe() == []
    reloaded = Env(txn_log=env.txn_log).txn
    reloaded.load()
    assert set(reloaded.txns) == {"young"}


def test_recovery_completes_prepared_transactions() -> None:
    env = Env()
    pid, epoch = begin(env)
    env.txn.add_partitions("tx", pid, epoch, [("t", 0)])
    env.produce(pid, epoch, 0, n=2)
    # the broker died after logging PrepareCommit, before any marker
    meta = env.txn.txns["tx"]
    prepared = TxnMetadata.from_value("tx", meta.to_value())
    prepared.state = TxnState.PREPARE_COMMIT
    env.txn_log.append([(prepared.key(), prepared.to_value())])
    restarted = env.new_coordinator()
    restarted.load()
    assert restarted.txns["tx"].state == TxnState.COMPLETE_COMMIT
    part = env.storage.partition("t", 0)
    assert part.last_stable_offset == part.log_end_offset == 3
    # an ongoing transaction survives a restart and can still be committed
    env.txn = restarted
    restarted.add_partitions("tx", pid, epoch, [("t", 1)])
    env.produce(pid, epoch, 0, partition=1)
    again = env.new_coordinator()
    assert again.describe("tx") is not None and again.describe("tx").state == TxnState.ONGOING
    assert again.end_txn("tx", pid, epoch, True) == OK
    assert env.storage.partition("t", 1).last_stable_offset == 2


def test_compaction_keeps_live_state() -> None:
    env = Env()
    env.txn = env.new_coordinator()
    env.txn._compact_after = 5
    for i in range(20):
        begin(env, f"tx{i % 3}")
    env.txn.tick()
    assert len(env.txn_log.entries) <= 4
    reloaded = env.new_coordinator()
    reloaded.load()
    assert {t: m.producer_epoch for t, m in reloaded.txns.items()} == {
        t: m.producer_epoch for t, m in env.txn.txns.items()
    }


def _txn_commit(env: Env, pid: int, epoch: int, offset: int, group: str = "g") -> dict[str, Any]:
    req = {
        "transactional_id": "tx",
        "group_id": group,
        "producer_id": pid,
        "producer_epoch": epoch,
        "generation_id": -1,
        "member_id": "",
        "group_instance_id": None,
        "topics": [
            {
                "name": "t",
                "partitions": [
                    {
                        "partition_index": 0,
                        "committed_offset": offset,
                        "committed_leader_epoch": -1,
                        "committed_metadata": None,
                    }
                ],
            }
        ],
    }
    return asyncio.run(env.groups.txn_offset_commit(req, 3))


def _fetch(env: Env, require_stable: bool, group: str = "g") -> dict[str, Any]:
    req = {
        "group_id": group,
        "topics": [{"name": "t", "partition_indexes": [0]}],
        "require_stable": require_stable,
    }
    resp = asyncio.run(env.groups.offset_fetch(req, 7, client_id="c", client_host="h"))
    part: dict[str, Any] = resp["topics"][0]["partitions"][0]
    return part


def test_transactional_offsets_become_visible_on_commit_only() -> None:
    env = Env()
    pid, epoch = begin(env)
    assert env.txn.add_offsets("tx", pid, epoch, "g") == OK
    assert _txn_commit(env, pid, epoch, 42)["topics"][0]["partitions"][0]["error_code"] == 0
    assert _fetch(env, False)["committed_offset"] == -1
    assert _fetch(env, True)["error_code"] == ErrorCode.UNSTABLE_OFFSET_COMMIT
    # pending offsets survive a restart of the group coordinator
    env2 = Env(txn_log=env.txn_log, group_log=env.group_log)
    env2.storage = env.storage
    assert _fetch(env2, True)["error_code"] == ErrorCode.UNSTABLE_OFFSET_COMMIT
    assert env2.txn.end_txn("tx", pid, epoch, True) == OK
    assert _fetch(env2, True) | {"error_code": 0} == _fetch(env2, False)
    assert _fetch(env2, True)["committed_offset"] == 42
    # an aborted transaction's offsets are dropped
    env2.txn.add_offsets("tx", pid, epoch, "g")
    _txn_commit(env2, pid, epoch, 99)
    assert env2.txn.end_txn("tx", pid, epoch, False) == OK
    assert _fetch(env2, True)["committed_offset"] == 42
    env2.groups.maybe_compact_log(force=True)
    env3 = Env(txn_log=env.txn_log, group_log=env.group_log)
    assert _fetch(env3, True)["committed_offset"] == 42
