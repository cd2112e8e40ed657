"""What the broker asks of cluster mode (brokers sharing one database): who leads a partition, who
coordinates a group or a transactional id, and the coordinators' logs and routing when several brokers
share them. ``kafkite.cluster.Cluster`` implements it; the composition root hands one to the broker
(``Broker.cluster``) before the coordinators are built. A broker without one serves everything itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from kafkite.broker.core import Broker, RequestContext
    from kafkite.broker.groups.log import GroupLog
    from kafkite.broker.txn.coordinator import TransactionCoordinator, TxnConfig
    from kafkite.log.base import Partition


class ClusterMode(Protocol):
    epoch: int

    @property
    def live_ids(self) -> list[int]: ...

    @property
    def controller_id(self) -> int: ...

    @property
    def ready(self) -> bool: ...

    def nodes(self, listener: str | None) -> list[tuple[int, str, int]]: ...

    def leader(self, topic: str, partition: int) -> int: ...

    def leads(self, topic: str, partition: int) -> bool: ...

    def leader_epoch(self, topic: str, partition: int) -> int: ...

    def coordinates(self, key: str) -> bool: ...

    async def ensure_leaders(self, keys: Iterable[tuple[str, int]]) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    # The coordinators: the group log of the groups this broker coordinates, a group request routed to the
    # coordinating broker, FindCoordinator over the live brokers, the transaction coordinator of the ids this
    # broker coordinates.
    def group_log(self) -> GroupLog: ...

    async def group_request(
        self, broker: Broker, method: str, ctx: RequestContext, req: dict[str, Any]
    ) -> dict[str, Any]: ...

    def find_coordinator(self, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]: ...

    def txn_coordinator(
        self,
        broker: Broker,
        opener: Callable[[], Partition],
        config: TxnConfig,
        partition_of: Callable[[str, int], Any],
    ) -> TransactionCoordinator: ...
