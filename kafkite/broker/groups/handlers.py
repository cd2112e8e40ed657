"""Wiring of the group coordinator into a broker: its handlers for the broker's dispatch table."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from kafkite.broker.authz import topic_describe_filter
from kafkite.broker.core import is_internal_topic
from kafkite.broker.features import GROUP_VERSION, SHARE_VERSION, features_of
from kafkite.broker.metadata import advertised_for
from kafkite.config import ConfigError
from kafkite.protocol.errors import ErrorCode
from kafkite.security import security_of

from .config import GroupConfig
from .coordinator import GroupCoordinator
from .log import GroupLog, StorageGroupLog
from .share.apis import ShareApis
from .share.store import SharePartitionStore

if TYPE_CHECKING:
    from kafkite.broker.core import Broker, RequestContext

Handler = Callable[["Broker", "RequestContext", dict[str, Any]], Awaitable[dict[str, Any] | None]]
Method = Callable[..., Awaitable[dict[str, Any]]]

_CONSUMER_APIS = ("consumer_group_heartbeat", "consumer_group_describe")


_SHARE_APIS = (
    "share_group_heartbeat",
    "share_group_describe",
    "describe_share_group_offsets",
    "alter_share_group_offsets",
    "delete_share_group_offsets",
)


def _share_groups_off(name: str, req: dict[str, Any]) -> dict[str, Any]:
    """Kafka's answer while share.version is finalized below 1 (UpdateFeatures): UNSUPPORTED_VERSION."""
    code = int(ErrorCode.UNSUPPORTED_VERSION)
    message = "Share groups are not enabled (share.version is 0)."
    if name == "share_group_describe":
        return {
            "throttle_time_ms": 0,
            "groups": [
                {
                    "error_code": code,
                    "error_message": message,
                    "group_id": g,
                    "group_state": "",
                    "group_epoch": 0,
                    "assignment_epoch": 0,
                    "assignor_name": "",
                    "members": [],
                }
                for g in req["group_ids"]
            ],
        }
    if name == "describe_share_group_offsets":
        return {
            "throttle_time_ms": 0,
            "groups": [
                {"group_id": g["group_id"], "topics": [], "error_code": code, "error_message": message}
                for g in req["groups"]
            ],
        }
    if name == "share_group_heartbeat":
        return {
            "throttle_time_ms": 0,
            "error_code": code,
            "error_message": message,
            "member_id": None,
            "member_epoch": 0,
            "heartbeat_interval_ms": 0,
            "assignment": None,
        }
    return {"throttle_time_ms": 0, "error_code": code, "error_message": message, "responses": []}


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
    if broker.cluster is not None:
        log = broker.cluster.group_log()  # the groups this broker coordinates, in the database
    coordinator = GroupCoordinator(
        partitions_of,
        log=log,
        config=config,
        topics=broker.storage.topics,
        is_internal_topic=is_internal_topic,
    )
    # With ACLs, consumer groups' regular expressions resolve to the topics their members may describe.
    coordinator.consumer.authorizing = security_of(broker).authorizer is not None
    return coordinator


def _group_api(name: str) -> Handler:
    """The handler of one group or offset API: the broker's group coordinator (or the cluster's routing to
    the coordinating broker) serves it."""
    consumer_api = name in _CONSUMER_APIS
    share_api = name in _SHARE_APIS

    async def handle(broker: Broker, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
        if consumer_api and features_of(broker).level(GROUP_VERSION) < 1:
            return _consumer_protocol_off(name, req)
        if share_api and features_of(broker).level(SHARE_VERSION) < 1:
            return _share_groups_off(name, req)
        if broker.cluster is not None:
            return await broker.cluster.group_request(broker, name, ctx, req)
        method: Method = getattr(broker.groups, name)
        if name == "consumer_group_heartbeat":
            return await method(
                req,
                ctx.api_version,
                client_id=ctx.client_id,
                client_host=ctx.client_host,
                describable=topic_describe_filter(broker, ctx),
            )
        return await method(req, ctx.api_version, client_id=ctx.client_id, client_host=ctx.client_host)

    handle.__name__ = f"handle_{name}"
    return handle


handle_offset_commit = _group_api("offset_commit")
handle_offset_fetch = _group_api("offset_fetch")
handle_join_group = _group_api("join_group")
handle_heartbeat = _group_api("heartbeat")
handle_leave_group = _group_api("leave_group")
handle_sync_group = _group_api("sync_group")
handle_describe_groups = _group_api("describe_groups")
handle_list_groups = _group_api("list_groups")
handle_delete_groups = _group_api("delete_groups")
handle_offset_delete = _group_api("offset_delete")
handle_consumer_group_heartbeat = _group_api("consumer_group_heartbeat")
handle_consumer_group_describe = _group_api("consumer_group_describe")
handle_share_group_heartbeat = _group_api("share_group_heartbeat")
handle_share_group_describe = _group_api("share_group_describe")
handle_describe_share_group_offsets = _group_api("describe_share_group_offsets")
handle_alter_share_group_offsets = _group_api("alter_share_group_offsets")
handle_delete_share_group_offsets = _group_api("delete_share_group_offsets")


def _share_apis(broker: Broker) -> ShareApis:
    def missing() -> ShareApis:
        raise RuntimeError("the broker has no group coordinator")

    return broker.component(ShareApis, missing)


async def handle_share_fetch(broker: Broker, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
    """ShareFetch, served by the partitions' leader (this broker's share-partition store)."""
    return await _share_apis(broker).share_fetch(broker, ctx, req)


async def handle_share_acknowledge(
    broker: Broker, ctx: RequestContext, req: dict[str, Any]
) -> dict[str, Any]:
    return await _share_apis(broker).share_acknowledge(broker, ctx, req)


async def handle_find_coordinator(broker: Broker, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
    if broker.cluster is not None:
        return broker.cluster.find_coordinator(ctx, req)
    assert broker.groups is not None
    host, port = advertised_for(broker, ctx.listener)
    return await broker.groups.find_coordinator(req, ctx.api_version, (broker.node_id, host, port))


def consumer_protocol_served(broker: Broker) -> bool:
    """group.coordinator.rebalance.protocols without consumer: the consumer group APIs are not served."""
    return broker.groups is not None and broker.groups.config.consumer_protocol_enabled


def attach(broker: Broker) -> GroupCoordinator:
    """Give ``broker`` a group coordinator (``broker.groups``, started and stopped by the broker) and route
    the group APIs to it (their handlers are declared in ``kafkite.broker.apis``); share groups get their
    share-partition store, which ShareFetch and ShareAcknowledge use."""

    coordinator = coordinator_for(broker)
    broker.groups = coordinator
    store = SharePartitionStore(broker, coordinator)
    attach_share_store(coordinator, store)
    broker.component(ShareApis, lambda: ShareApis(broker, store))
    # share.version 1 is share groups (KIP-932), on unless UpdateFeatures takes it down to 0.
    features_of(broker).declare(SHARE_VERSION, max_level=1)
    # group.version 1 is the consumer group protocol (KIP-848); 0 when group.coordinator.rebalance.protocols
    # leaves it out.
    features_of(broker).declare(
        GROUP_VERSION, max_level=1 if coordinator.config.consumer_protocol_enabled else 0
    )
    return coordinator


def attach_share_store(coordinator: GroupCoordinator, store: Any) -> None:
    """Make ``store`` the share-partition store of ``coordinator`` (and the coordinator its store's)."""
    coordinator.share_store = store
    coordinator.share.partitions = store
    store.coordinator = coordinator
