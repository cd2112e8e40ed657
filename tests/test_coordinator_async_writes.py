"""Coordinators over a log written asynchronously (the PostgreSQL cluster's): the group and transaction
coordinators await their writes instead of making them on the event loop; what they decided is written in
order and applied only once written; a refused write answers the retriable error Kafka's coordinators answer
(COORDINATOR_NOT_AVAILABLE, or NOT_COORDINATOR when the coordinator lost its lease) and changes nothing."""

from __future__ import annotations

import asyncio
from typing import Any

from test_groups_support import Harness, run, settle
from test_txn_coordinator import Env

from kafkite.broker.groups.log import Entry, MemoryGroupLog
from kafkite.broker.txn import TxnState
from kafkite.log.base import Fenced, LogError
from kafkite.protocol.errors import ErrorCode as E

G = "g1"


class SlowLog(MemoryGroupLog):
    """A log with ``append_async`` that waits until the test lets it finish (``gate``), or fails with
    ``fail``; a synchronous ``append`` on it is a bug (it would hold the event loop)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: Exception | None = None
        self.started: list[list[Entry]] = []

    def append(self, entries: list[Entry]) -> None:
        raise AssertionError("a synchronous write on a log written asynchronously")

    async def append_async(self, entries: list[Entry]) -> None:
        self.started.append(entries)
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.entries.extend(entries)


async def _form(h: Harness) -> str:
    member = (await h.join(G))["member_id"]
    joined = await h.join(G, member)
    assert joined["error_code"] == 0
    return str(member)


@run
async def test_a_sync_group_is_answered_once_the_group_is_written() -> None:
    log = SlowLog()
    h = Harness(log=log)
    member = await _form(h)
    log.gate.clear()
    sync = asyncio.ensure_future(h.sync(G, member, 1, {member: b"A"}))
    await settle()
    # The write is in flight: the loop serves others, the group waits for it, nothing applied yet.
    assert len(log.started) == 1 and not sync.done()
    assert h.state(G) == "CompletingRebalance"
    assert await h.heartbeat(G, member, 1) == E.NO_ERROR
    log.gate.set()
    assert (await sync)["assignment"] == b"A"
    assert h.state(G) == "Stable"
    assert log.entries, "the group was not written"


@run
async def test_a_refused_group_write_answers_retriable_errors_and_the_group_rebalances() -> None:
    for error, code in (
        (LogError("database down"), E.COORDINATOR_NOT_AVAILABLE),
        (Fenced("lease"), E.NOT_COORDINATOR),
    ):
        log = SlowLog()
        h = Harness(log=log)
        member = await _form(h)
        log.fail = error
        synced = await h.sync(G, member, 1, {member: b"A"})
        assert synced["error_code"] == code, (error, synced)
        assert h.state(G) == "PreparingRebalance"
        assert not log.entries
        # Once the log takes writes again the member rejoins and gets its assignment.
        log.fail = None
        rejoined = await h.join(G, member)
        assert rejoined["error_code"] == 0
        assert (await h.sync(G, member, rejoined["generation_id"], {member: b"B"}))["assignment"] == b"B"


@run
async def test_group_writes_are_made_in_the_order_they_were_decided() -> None:
    log = SlowLog()
    h = Harness(log=log)
    member = await _form(h)
    log.gate.clear()
    sync = asyncio.ensure_future(h.sync(G, member, 1, {member: b"A"}))
    await settle()
    commit = asyncio.ensure_future(
        h.coord.offset_commit(
            {
                "group_id": "simple",
                "generation_id_or_member_epoch": -1,
                "member_id": "",
                "topics": [{"name": "orders", "partitions": [{"partition_index": 0, "committed_offset": 5}]}],
            },
            8,
            client_id="c",
            client_host="/127.0.0.1",
        )
    )
    await settle()
    log.gate.set()
    await sync
    await commit
    groups = [i for i, (key, _) in enumerate(log.entries) if b"g1" in key]
    offsets = [i for i, (key, _) in enumerate(log.entries) if b"simple" in key]
    assert groups and offsets and groups[0] < offsets[0]


def _async_env() -> tuple[Env, SlowLog]:
    log = SlowLog()
    env = Env(txn_log=log)
    return env, log


@run
async def test_transaction_writes_are_awaited_and_reverted_when_refused() -> None:
    env, log = _async_env()
    code, pid, epoch = await env.txn.init_producer_id_async("tx", 60_000)
    assert code == E.NO_ERROR and epoch == 0
    assert await env.txn.add_partitions_async("tx", pid, epoch, [("t", 0)]) == {("t", 0): E.NO_ERROR}

    # The log refuses the prepare: EndTxn fails, the transaction is still ongoing as logged.
    log.fail = LogError("database down")
    code = await env.txn.end_txn_async("tx", pid, epoch, True)
    assert code != E.NO_ERROR
    meta = env.txn.describe("tx")
    assert meta is not None and meta.state == TxnState.ONGOING and meta.partitions == {("t", 0)}
    # A new transactional id whose first entry is refused is not kept.
    assert (await env.txn.init_producer_id_async("other", 60_000))[0] != E.NO_ERROR
    assert env.txn.describe("other") is None
    # An InitProducerId that bumps the epoch, refused: the epoch stays.
    assert (await env.txn.init_producer_id_async("tx", 60_000))[0] != E.NO_ERROR
    meta = env.txn.describe("tx")
    assert meta is not None and meta.producer_epoch == epoch and meta.state == TxnState.ONGOING

    log.fail = None
    assert await env.txn.end_txn_async("tx", pid, epoch, True) == E.NO_ERROR
    meta = env.txn.describe("tx")
    assert meta is not None and meta.state == TxnState.COMPLETE_COMMIT


@run
async def test_transaction_operations_wait_for_each_other() -> None:
    env, log = _async_env()
    _, pid, epoch = await env.txn.init_producer_id_async("tx", 60_000)
    before = len(log.started)
    log.gate.clear()
    add = asyncio.ensure_future(env.txn.add_partitions_async("tx", pid, epoch, [("t", 0)]))
    end: asyncio.Future[Any] = asyncio.ensure_future(env.txn.end_txn_async("tx", pid, epoch, True))
    await settle()
    assert not add.done() and not end.done()
    assert len(log.started) == before + 1  # AddPartitions' write (EndTxn waits its turn)
    log.gate.set()
    assert (await add) == {("t", 0): E.NO_ERROR}
    assert (await end) == E.NO_ERROR
    meta = env.txn.describe("tx")
    assert meta is not None and meta.state == TxnState.COMPLETE_COMMIT
