"""Wiring of the group coordinator into a broker: its handlers for the broker's dispatch table."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from kafkite.broker.core import is_internal_topic
from kafkite.broker.features import GROUP_VERSION, features_of
from kafkite.config import ConfigError
from kafkite.protocol.api_keys import ApiKey
from kafkite.protocol.errors import ErrorCode

from .config import GroupConfig
from .coordinator import GroupCoordinator
from .log import GroupLog, StorageGroupLog

if TYPE_CHECKING:
    from kafkite.broker.core import Broker, RequestContext

Handler = Callable[["Broker", "RequestContext", dict[str, Any]], Awaitable[dict[str, Any] | None]]
Method = Callable[..., Awaitable[dict[str, Any]]]

_APIS: dict[int, str] = {
    ApiKey.OFFSET_COMMIT: "offset_commit",
    ApiKey.OFFSET_FETCH: "offset_fetch",
    ApiKey.JOIN_GROUP: "join_group",
    ApiKey.HEARTBEAT: "heartbeat",
    ApiKey.LEAVE_GROUP: "leave_group",
    ApiKey.SYNC_GROUP: "sync_group",
    ApiKey.DESCRIBE_GROUPS: "describe_groups",
    ApiKey.LIST_GROUPS: "list_groups",
    ApiKey.DELETE_GROUPS: "delete_groups",
    ApiKey.OFFSET_DELETE: "offset_delete",
    ApiKey.CONSUMER_GROUP_HEARTBEAT: "consumer_group_heartbeat",
    ApiKey.CONSUMER_GROUP_DESCRIBE: "consumer_group_describe",
}


_CONSUMER_APIS = ("consumer_group_heartbeat", "consumer_group_describe")


def _consumer_protocol_off(name: str, req: dict[str, Any]) -> dict[str, Any]:
    """Kafka's answer while group.version is finalized below 1 (UpdateFeatures): UNSUPPORTED_VERSION."""
    code = int(ErrorCode.UNSUPPORTED_VERSION)
    if name == "consumer_group_describe":
        groups = [
            {
                "error_code": code,
                "error_message": None,
                "group_id": g,
                "group_state": "",
                "group_epoch": 0,
                "assignment_epoch": 0,
                "assignor_name": "",
                "members": [],
                "authorized_operations": -2147483648,
            }
            for g in req["group_ids"]
        ]
        return {"throttle_time_ms": 0, "groups": groups}
    return {
        "throttle_time_ms": 0,
        "error_code": code,
        "error_message": None,
        "member_id": None,
        "member_epoch": 0,
        "heartbeat_interval_ms": 0,
        "assignment": None,
    }


def coordinator_for(broker: Broker) -> GroupCoordinator:
    """A coordinator logging to ``__consumer_offsets`` in the broker's storage, set up from its settings."""
    settings = {key: broker.config[key] for key in GroupConfig.KEYS}
    try:
        config = GroupConfig.from_mapping(settings)
    except ValueError as exc:
        # Settings that make no sense together stop start-up with a message naming them.
        raise ConfigError(str(exc)) from None

    def partitions_of(topic: str) -> int | None:
        meta = broker.storage.topics().get(topic)
        return None if meta is None else meta.partitions

    # log.flush.on.ack=true: offsets and group metadata are fsynced before they are answered, as records are.
    log: GroupLog = StorageGroupLog.open(broker.storage, durable=bool(broker.config["log.flush.on.ack"]))
    cluster = getattr(broker, "cluster", None)
    if cluster is not None:
        from kafkite.cluster import OwnedGroupLog

        log = OwnedGroupLog(cluster.storage, cluster)  # the groups this broker coordinates, in the database
    return GroupCoordinator(
        partitions_of,
        log=log,
        config=config,
        topics=broker.storage.topics,
        is_internal_topic=is_internal_topic,
    )


def group_handlers(coordinator: GroupCoordinator) -> dict[int, Handler]:
    """Handlers for FindCoordinator and every group and offset API, served by ``coordinator``."""

    def adapt(name: str) -> Handler:
        method: Method = getattr(coordinator, name)

        async def handle(broker: Broker, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
            if name in _CONSUMER_APIS and features_of(broker).level(GROUP_VERSION) < 1:
                return _consumer_protocol_off(name, req)
            cluster = getattr(broker, "cluster", None)
            if cluster is not None:
                from kafkite.cluster import group_request

                return await group_request(broker, cluster, name, ctx, req)
            return await method(req, ctx.api_version, client_id=ctx.client_id, client_host=ctx.client_host)

        return handle

    async def find_coordinator(broker: Broker, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
        from kafkite.broker.metadata import advertised_for

        cluster = getattr(broker, "cluster", None)
        if cluster is not None:
            from kafkite.cluster import find_coordinator as cluster_find_coordinator

            return cluster_find_coordinator(cluster, ctx, req)

        host, port = advertised_for(broker, ctx.listener)
        return await coordinator.find_coordinator(req, ctx.api_version, (broker.node_id, host, port))

    handlers: dict[int, Handler] = {int(key): adapt(name) for key, name in _APIS.items()}
    if not coordinator.config.consumer_protocol_enabled:
        # group.coordinator.rebalance.protocols without consumer: the consumer group APIs are not served.
        for key in (ApiKey.CONSUMER_GROUP_HEARTBEAT, ApiKey.CONSUMER_GROUP_DESCRIBE):
            handlers.pop(int(key), None)
    handlers[int(ApiKey.FIND_COORDINATOR)] = find_coordinator
    return handlers


def attach(broker: Broker) -> GroupCoordinator:
    """Give ``broker`` a group coordinator (``broker.groups``, started and stopped by the broker) and route
    the group APIs to it."""
    coordinator = coordinator_for(broker)
    broker.groups = coordinator
    broker.handlers.update(group_handlers(coordinator))
    # group.version 1 is the consumer group protocol (KIP-848); 0 when group.coordinator.rebalance.protocols
    # leaves it out.
    features_of(broker).declare(
        GROUP_VERSION, max_level=1 if coordinator.config.consumer_protocol_enabled else 0
    )
    return coordinator
