"""Producer ids, idempotence and transactions: the transaction coordinator and its handlers."""

from .coordinator import TransactionCoordinator, TxnConfig, TxnError
from .handlers import attach, coordinator_for
from .state import TxnMetadata, TxnState

__all__ = [
    "TransactionCoordinator",
    "TxnConfig",
    "TxnError",
    "TxnMetadata",
    "TxnState",
    "attach",
    "coordinator_for",
]
