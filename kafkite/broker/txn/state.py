"""Transaction metadata and its entries in the transaction log (``__transaction_state``).

The log holds (key, value) entries, read back in order on start-up (the last value of a key wins, a None value
deletes it):

- key ``b"\\x00\\x00"``: the producer id block; value an int64, the first id not yet handed out by any block.
- key ``b"\\x00\\x01" + transactional id (UTF-8)``: value the JSON form of ``TxnMetadata`` (``to_value``).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

PRODUCER_ID_BLOCK_KEY = b"\x00\x00"
TXN_KEY_PREFIX = b"\x00\x01"
_INT64 = struct.Struct(">q")


class TxnState(Enum):
    EMPTY = "Empty"
    ONGOING = "Ongoing"
    PREPARE_COMMIT = "PrepareCommit"
    PREPARE_ABORT = "PrepareAbort"
    COMPLETE_COMMIT = "CompleteCommit"
    COMPLETE_ABORT = "CompleteAbort"
    DEAD = "Dead"
    PREPARE_EPOCH_FENCE = "PrepareEpochFence"


# States from which a new transaction may begin (AddPartitionsToTxn / AddOffsetsToTxn).
IDLE_STATES = frozenset({TxnState.EMPTY, TxnState.COMPLETE_COMMIT, TxnState.COMPLETE_ABORT})


@dataclass
class TxnMetadata:
    transactional_id: str
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    state: TxnState = TxnState.EMPTY
    last_producer_id: int = -1
    last_producer_epoch: int = -1
    partitions: set[tuple[str, int]] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)
    start_ms: int = -1  # when the ongoing transaction began
    last_update_ms: int = -1

    def key(self) -> bytes:
        return txn_key(self.transactional_id)

    def to_value(self) -> bytes:
        return json.dumps(
            {
                "v": 0,
                "pid": self.producer_id,
                "epoch": self.producer_epoch,
                "last_pid": self.last_producer_id,
                "last_epoch": self.last_producer_epoch,
                "timeout_ms": self.timeout_ms,
                "state": self.state.value,
                "partitions": sorted([t, p] for t, p in self.partitions),
                "groups": sorted(self.groups),
                "start_ms": self.start_ms,
                "last_update_ms": self.last_update_ms,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_value(cls, transactional_id: str, value: bytes) -> TxnMetadata:
        try:
            d: Any = json.loads(value)
            return cls(
                transactional_id=transactional_id,
                producer_id=int(d["pid"]),
                producer_epoch=int(d["epoch"]),
                timeout_ms=int(d["timeout_ms"]),
                state=TxnState(d["state"]),
                last_producer_id=int(d["last_pid"]),
                last_producer_epoch=int(d["last_epoch"]),
                partitions={(str(t), int(p)) for t, p in d["partitions"]},
                groups={str(g) for g in d["groups"]},
                start_ms=int(d["start_ms"]),
                last_update_ms=int(d["last_update_ms"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed transaction log value of {transactional_id!r}: {e}") from None


def txn_key(transactional_id: str) -> bytes:
    return TXN_KEY_PREFIX + transactional_id.encode()


def producer_id_block_value(next_id: int) -> bytes:
    return _INT64.pack(next_id)


def decode_producer_id_block(value: bytes) -> int:
    if len(value) != _INT64.size:
        raise ValueError("malformed producer id block entry")
    return int(_INT64.unpack(value)[0])
