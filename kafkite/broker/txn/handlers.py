"""Handlers of the producer and transaction APIs, and the wiring of the transaction coordinator.

When brokers share a database (``broker.cluster``), requests about a transactional id this broker does not
coordinate are answered NOT_COORDINATOR, and TxnOffsetCommit about a group it does not coordinate likewise
(see ``kafkite.cluster.txn``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from kafkite.broker.features import TRANSACTION_VERSION, features_of
from kafkite.broker.groups.log import StorageGroupLog
from kafkite.log.base import Partition
from kafkite.protocol.errors import ErrorCode

from .coordinator import TransactionCoordinator, TxnConfig
from .state import TxnState

if TYPE_CHECKING:
    from kafkite.broker.core import Broker, RequestContext

log = logging.getLogger("kafkite.txn")

TXN_LOG_TOPIC = "__transaction_state"
# The coordinator keeps its log small itself (compaction by rewriting live state): never drop data on its own.
TXN_LOG_TOPIC_CONFIGS = {
    "cleanup.policy": "delete",
    "retention.ms": "-1",
    "retention.bytes": "-1",
    "max.message.bytes": str(64 * 1024 * 1024),
}
TRANSACTIONAL_ID_NOT_FOUND = int(ErrorCode.TRANSACTIONAL_ID_NOT_FOUND)
TXN_STATE_NAMES = frozenset(s.value for s in TxnState)

Result = dict[str, Any]
NOT_COORDINATOR = int(ErrorCode.NOT_COORDINATOR)


def _coordinator(broker: Broker) -> TransactionCoordinator:
    coordinator = broker.txn
    assert coordinator is not None, "the transaction coordinator is attached when the broker is built"
    return coordinator


def _elsewhere(broker: Broker, key: str | None) -> bool:
    """Whether ``key`` (a transactional id or group) is coordinated by another broker of the cluster, or the
    coordinators are being rebuilt for a new membership (the client looks the coordinator up again)."""
    cluster = broker.cluster
    return cluster is not None and bool(key) and not (cluster.ready and cluster.coordinates(key or ""))


def _fenced(code: ErrorCode, version: int, first_fenced_version: int) -> int:
    """Clients before ``first_fenced_version`` know PRODUCER_FENCED as INVALID_PRODUCER_EPOCH."""
    if code == ErrorCode.PRODUCER_FENCED and version < first_fenced_version:
        return int(ErrorCode.INVALID_PRODUCER_EPOCH)
    return int(code)


async def handle_init_producer_id(broker: Broker, ctx: RequestContext, req: Result) -> Result:
    if _elsewhere(broker, req.get("transactional_id")):
        return {"throttle_time_ms": 0, "error_code": NOT_COORDINATOR, "producer_id": -1, "producer_epoch": -1}
    code, pid, epoch = await _coordinator(broker).init_producer_id_async(
        req.get("transactional_id"),
        req["transaction_timeout_ms"],
        req.get("producer_id", -1),
        req.get("producer_epoch", -1),
    )
    return {
        "throttle_time_ms": 0,
        "error_code": _fenced(code, ctx.api_version, 4),
        "producer_id": pid,
        "producer_epoch": epoch,
    }


def _partition_results(
    topics: list[Result], errors: dict[tuple[str, int], ErrorCode], version: int
) -> list[Result]:
    return [
        {
            "name": t["name"],
            "results_by_partition": [
                {
                    "partition_index": p,
                    "partition_error_code": _fenced(errors[(t["name"], p)], version, 2),
                }
                for p in t["partitions"]
            ],
        }
        for t in topics
    ]


async def handle_add_partitions_to_txn(broker: Broker, ctx: RequestContext, req: Result) -> Result:
    coordinator = _coordinator(broker)
    version = ctx.api_version
    if version <= 3:
        topics = req["v3_and_below_topics"]
        tid = req["v3_and_below_transactional_id"]
        wanted = [(t["name"], p) for t in topics for p in t["partitions"]]
        if _elsewhere(broker, tid):
            errors = dict.fromkeys(wanted, ErrorCode.NOT_COORDINATOR)
        else:
            errors = await coordinator.add_partitions_async(
                tid, req["v3_and_below_producer_id"], req["v3_and_below_producer_epoch"], wanted
            )
        return {
            "throttle_time_ms": 0,
            "results_by_topic_v3_and_below": _partition_results(topics, errors, version),
        }
    results = []
    for txn in req["transactions"]:
        wanted = [(t["name"], p) for t in txn["topics"] for p in t["partitions"]]
        if _elsewhere(broker, txn["transactional_id"]):
            errors = dict.fromkeys(wanted, ErrorCode.NOT_COORDINATOR)
        elif txn["verify_only"]:
            errors = coordinator.verify_partitions(
                txn["transactional_id"], txn["producer_id"], txn["producer_epoch"], wanted
            )
        else:
            errors = await coordinator.add_partitions_async(
                txn["transactional_id"], txn["producer_id"], txn["producer_epoch"], wanted
            )
        results.append(
            {
                "transactional_id": txn["transactional_id"],
                "topic_results": _partition_results(txn["topics"], errors, version),
            }
        )
    return {"throttle_time_ms": 0, "error_code": 0, "results_by_transaction": results}


async def handle_add_offsets_to_txn(broker: Broker, ctx: RequestContext, req: Result) -> Result:
    if _elsewhere(broker, req["transactional_id"]):
        return {"throttle_time_ms": 0, "error_code": NOT_COORDINATOR}
    code = await _coordinator(broker).add_offsets_async(
        req["transactional_id"], req["producer_id"], req["producer_epoch"], req["group_id"]
    )
    return {"throttle_time_ms": 0, "error_code": _fenced(code, ctx.api_version, 2)}


async def handle_end_txn(broker: Broker, ctx: RequestContext, req: Result) -> Result:
    if _elsewhere(broker, req["transactional_id"]):
        return {"throttle_time_ms": 0, "error_code": NOT_COORDINATOR, "producer_id": -1, "producer_epoch": -1}
    coordinator = _coordinator(broker)
    code = await coordinator.end_txn_async(
        req["transactional_id"], req["producer_id"], req["producer_epoch"], req["committed"]
    )
    meta = coordinator.describe(req["transactional_id"]) if code == ErrorCode.NO_ERROR else None
    return {
        "throttle_time_ms": 0,
        "error_code": _fenced(code, ctx.api_version, 2),
        "producer_id": meta.producer_id if meta else -1,
        "producer_epoch": meta.producer_epoch if meta else -1,
    }


async def handle_txn_offset_commit(broker: Broker, ctx: RequestContext, req: Result) -> Result:
    if _elsewhere(broker, req["group_id"]):
        error = NOT_COORDINATOR  # sent to the group's coordinator, as Kafka does
    else:
        # A transactional id coordinated by another broker cannot be checked here: accepted (and held
        # pending until its coordinator ends the transaction), as Kafka's group coordinator does.
        code = (
            ErrorCode.NO_ERROR
            if _elsewhere(broker, req["transactional_id"])
            else _coordinator(broker).check_offset_commit(
                req["transactional_id"], req["producer_id"], req["producer_epoch"], req["group_id"]
            )
        )
        if code == ErrorCode.NO_ERROR and broker.groups is not None:
            result: Result = await broker.groups.txn_offset_commit(req, ctx.api_version)
            return result
        error = _fenced(code, ctx.api_version, 2) if code else int(ErrorCode.COORDINATOR_NOT_AVAILABLE)
    return {
        "throttle_time_ms": 0,
        "topics": [
            {
                "name": t["name"],
                "partitions": [
                    {"partition_index": p["partition_index"], "error_code": error} for p in t["partitions"]
                ],
            }
            for t in req["topics"]
        ],
    }


async def handle_describe_producers(broker: Broker, ctx: RequestContext, req: Result) -> Result:
    topics = []
    for t in req["topics"]:
        parts = []
        for index in t["partition_indexes"]:
            part = broker.partition(t["name"], index)
            if part is None:
                parts.append(
                    {
                        "partition_index": index,
                        "error_code": int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
                        "active_producers": [],
                    }
                )
                continue
            parts.append(
                {
                    "partition_index": index,
                    "error_code": 0,
                    "active_producers": [
                        {
                            "producer_id": p.producer_id,
                            "producer_epoch": p.producer_epoch,
                            "last_sequence": p.last_sequence,
                            "last_timestamp": p.last_timestamp,
                            "coordinator_epoch": p.coordinator_epoch,
                            "current_txn_start_offset": p.current_txn_start_offset,
                        }
                        for p in part.producers.describe()
                    ],
                }
            )
        topics.append({"name": t["name"], "partitions": parts})
    return {"throttle_time_ms": 0, "topics": topics}


async def handle_list_transactions(broker: Broker, ctx: RequestContext, req: Result) -> Result:
    states = list(req["state_filters"])
    found = _coordinator(broker).list_transactions(
        [s for s in states if s in TXN_STATE_NAMES],
        req["producer_id_filters"],
        req.get("duration_filter", -1),
    )
    found = [m for m in found if not _elsewhere(broker, m.transactional_id)]  # each broker lists its own
    unknown = [s for s in states if s not in TXN_STATE_NAMES]
    if unknown and len(unknown) == len(states):
        found = []  # only unknown states were asked for: nothing matches
    return {
        "throttle_time_ms": 0,
        "error_code": 0,
        "unknown_state_filters": unknown,
        "transaction_states": [
            {
                "transactional_id": m.transactional_id,
                "producer_id": m.producer_id,
                "transaction_state": m.state.value,
            }
            for m in found
        ],
    }


async def handle_describe_transactions(broker: Broker, ctx: RequestContext, req: Result) -> Result:
    coordinator = _coordinator(broker)
    out = []
    for tid in req["transactional_ids"]:
        elsewhere = _elsewhere(broker, tid)
        meta = None if elsewhere else coordinator.describe(tid)
        if meta is None:
            out.append(
                {
                    "error_code": NOT_COORDINATOR if elsewhere else TRANSACTIONAL_ID_NOT_FOUND,
                    "transactional_id": tid,
                    "transaction_state": "",
                    "transaction_timeout_ms": 0,
                    "transaction_start_time_ms": -1,
                    "producer_id": -1,
                    "producer_epoch": -1,
                    "topics": [],
                }
            )
            continue
        by_topic: dict[str, list[int]] = {}
        for topic, index in sorted(meta.partitions):
            by_topic.setdefault(topic, []).append(index)
        out.append(
            {
                "error_code": 0,
                "transactional_id": tid,
                "transaction_state": meta.state.value,
                "transaction_timeout_ms": meta.timeout_ms,
                "transaction_start_time_ms": meta.start_ms,
                "producer_id": meta.producer_id,
                "producer_epoch": meta.producer_epoch,
                "topics": [{"topic": t, "partitions": ps} for t, ps in by_topic.items()],
            }
        )
    return {"throttle_time_ms": 0, "transaction_states": out}


def coordinator_for(broker: Broker) -> TransactionCoordinator:
    """A coordinator logging to ``__transaction_state`` in the broker's storage, set up from its settings."""
    storage = broker.storage

    def opener() -> Partition:
        if TXN_LOG_TOPIC not in storage.topics():
            storage.create_topic(TXN_LOG_TOPIC, 1, TXN_LOG_TOPIC_CONFIGS)
        return storage.partition(TXN_LOG_TOPIC, 0)

    def partition_of(topic: str, index: int) -> Any:
        return broker.partition(topic, index)

    settings = {key: broker.config[key] for key in TxnConfig.KEYS if key in broker.config.raw}
    if broker.cluster is not None:
        # Brokers sharing a database: only the transactional ids this broker coordinates.
        return broker.cluster.txn_coordinator(broker, opener, TxnConfig.from_mapping(settings), partition_of)
    durable = bool(broker.config["log.flush.on.ack"])
    return TransactionCoordinator(
        log=StorageGroupLog(opener, durable=durable),
        flush_markers=durable,
        config=TxnConfig.from_mapping(settings),
        partition_of=partition_of,
        all_partitions=broker.loaded_partitions,
        groups=broker.groups,
        notify=broker.waiters.notify,
    )


def attach(broker: Broker) -> TransactionCoordinator:
    """Give ``broker`` a transaction coordinator (``broker.txn``, started and stopped by the broker) and route
    the producer and transaction APIs to it. Attach after the group coordinator."""
    coordinator = coordinator_for(broker)
    broker.txn = coordinator
    # The coordinator keeps the producer epoch across transactions and expects AddPartitionsToTxn for every
    # partition (the protocol before KIP-890's second part): transaction.version level 0, not advertised.
    features_of(broker).declare(TRANSACTION_VERSION, max_level=0)
    return coordinator
