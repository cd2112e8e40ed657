"""The delivery engine shared by the OCI Queue mode and share groups: delivery counts, locks that lapse,
settled and dead items, journaled on the broker's own partition logs (``journal``, ``ledger``)."""

from kafkite.broker.delivery.journal import RecordLog
from kafkite.broker.delivery.ledger import Delivered, Ledger

__all__ = ["Delivered", "Ledger", "RecordLog"]
