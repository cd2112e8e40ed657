"""Topic creation and deletion that cannot starve other clients: Kafka's controller mutation quota.

Every partition created or deleted (CreateTopics, CreatePartitions, DeleteTopics, auto-creation by Metadata)
counts against the client's ``controller_mutation_rate`` (see :mod:`kafkite.security.quotas`), as in Kafka:

* strict versions (CreateTopics v6+, CreatePartitions v3+, DeleteTopics v5+) refuse a topic with
  THROTTLING_QUOTA_EXCEEDED while the client is over its quota, and accept one otherwise however many
  partitions it has (it may take the client over); ``throttle_time_ms`` says how long to wait;
* older versions accept everything and answer ``throttle_time_ms`` once the client is over (the connection
  is then muted for that long, as for every quota);
* auto-creation is strict and also held to ``auto.create.topics.max.rate``; a topic it may not create yet is
  answered LEADER_NOT_AVAILABLE, which clients retry.

Between topics the handlers yield to the event loop (``pause``), so one request naming thousands of topics
takes turns with every other connection instead of holding the loop until it is done.
"""

from __future__ import annotations

import asyncio

from kafkite.broker.core import Broker, RequestContext
from kafkite.protocol.errors import ErrorCode, KafkaProtocolError
from kafkite.security import quotas, security_of

# The first versions of each API in which the quota is strict.
STRICT_SINCE = {"CreateTopics": 6, "CreatePartitions": 3, "DeleteTopics": 5}
THROTTLED_MESSAGE = "The throttling quota has been exceeded."


class MutationQuota:
    """One request's view of its client's controller mutation quota."""

    def __init__(
        self, broker: Broker, ctx: RequestContext, *, strict: bool, auto_create: bool = False
    ) -> None:
        self.manager = security_of(broker).quotas
        principal = ctx.principal
        self.user = principal.split(":", 1)[1] if ":" in principal else principal
        self.client_id = ctx.client_id
        self.strict = strict
        self.kinds = (quotas.MUTATION, quotas.AUTO_CREATE) if auto_create else (quotas.MUTATION,)
        self.throttle_ms = 0

    @classmethod
    def for_request(cls, broker: Broker, ctx: RequestContext, api: str) -> MutationQuota:
        return cls(broker, ctx, strict=ctx.api_version >= STRICT_SINCE[api])

    def check(self) -> None:
        """Raise THROTTLING_QUOTA_EXCEEDED if the client is over its quota (strict requests only)."""
        if not self.strict:
            return
        debt = max(self.manager.debt_ms(k, self.user, self.client_id) for k in self.kinds)
        if debt > 0:
            self.throttle_ms = max(self.throttle_ms, debt)
            raise KafkaProtocolError(ErrorCode.THROTTLING_QUOTA_EXCEEDED, THROTTLED_MESSAGE)

    def allowed(self) -> bool:
        try:
            self.check()
        except KafkaProtocolError:
            return False
        return True

    def record(self, partitions: int) -> None:
        """Count ``partitions`` created or deleted."""
        for kind in self.kinds:
            throttle = self.manager.record(kind, self.user, self.client_id, partitions)
            if not self.strict:
                self.throttle_ms = max(self.throttle_ms, throttle)


async def pause() -> None:
    """Let every other connection's ready work run before the next topic."""
    await asyncio.sleep(0)
