"""Authorization on the Kafka surface: one wrapper per handler that checks ACLs before the handler runs."""

from __future__ import annotations

from kafkite.broker.core import Broker
from kafkite.security import security_of


def install_authorizer(broker: Broker) -> None:
    """Wrap every handler with its ACL checks when an authorizer is configured; otherwise change nothing."""
    if security_of(broker).authorizer is None:
        return
