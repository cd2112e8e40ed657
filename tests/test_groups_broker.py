"""The coordinator wired into a broker: handlers in its dispatch table, its log in the broker's storage."""

from __future__ import annotations

import tempfile
from typing import Any

from test_groups_support import run, subscription

from kafkite.broker.core import Broker, RequestContext
from kafkite.broker.groups import GROUP_LOG_TOPIC, GroupCoordinator
from kafkite.broker.groups.handlers import attach
from kafkite.compose import build_broker
from kafkite.config import BrokerConfig
from kafkite.protocol.api_keys import ApiKey


async def call(broker: Broker, key: int, version: int, req: dict[str, Any]) -> dict[str, Any]:
    ctx = RequestContext(
        api_key=key, api_version=version, correlation_id=1, client_id="cli", client_host="/1.2.3.4"
    )
    resp = await broker.handlers[key](broker, ctx, req)
    assert resp is not None
    return resp


def make_broker(data_dir: str) -> Broker:
    broker = build_broker(
        BrokerConfig({"log.dirs": data_dir, "group.min.session.timeout.ms": "1000", "node.id": "3"})
    )
    coordinator = broker.groups if broker.groups is not None else attach(broker)
    assert isinstance(coordinator, GroupCoordinator) and broker.groups is coordinator
    assert all(k in broker.handlers for k in (ApiKey.FIND_COORDINATOR, ApiKey.JOIN_GROUP, ApiKey.HEARTBEAT))
    return broker


@run
async def test_attached_coordinator_serves_and_persists_in_broker_storage() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        broker = make_broker(tmp)
        await broker.start()
        try:
            broker.storage.create_topic("orders", 2)
            found = await call(broker, ApiKey.FIND_COORDINATOR, 4, {"key_type": 0, "coordinator_keys": ["g"]})
            assert found["coordinators"][0]["node_id"] == 3
            join = {
                "group_id": "g",
                "session_timeout_ms": 1000,  # allowed by this broker's group.min.session.timeout.ms
                "rebalance_timeout_ms": 1000,
                "member_id": "",
                "group_instance_id": None,
                "protocol_type": "consumer",
                "protocols": [{"name": "range", "metadata": subscription(["orders"])}],
            }
            joined = await call(broker, ApiKey.JOIN_GROUP, 3, join)
            member = joined["member_id"]
            assert joined["error_code"] == 0 and member.startswith("cli-")
            sync = {"group_id": "g", "generation_id": 1, "member_id": member, "assignments": []}
            assert (await call(broker, ApiKey.SYNC_GROUP, 3, sync))["error_code"] == 0
            commit = {
                "group_id": "g",
                "generation_id_or_member_epoch": 1,
                "member_id": member,
                "topics": [
                    {
                        "name": "orders",
                        "partitions": [
                            {"partition_index": 1, "committed_offset": 17, "committed_metadata": "kept"},
                            {"partition_index": 2, "committed_offset": 1, "committed_metadata": None},
                        ],
                    }
                ],
            }
            result = await call(broker, ApiKey.OFFSET_COMMIT, 8, commit)
            assert [p["error_code"] for p in result["topics"][0]["partitions"]] == [0, 3]
            assert GROUP_LOG_TOPIC in broker.storage.topics()
        finally:
            await broker.stop()

        again = make_broker(tmp)
        await again.start()
        try:
            fetch = {"group_id": "g", "topics": [{"name": "orders", "partition_indexes": [1]}]}
            part = (await call(again, ApiKey.OFFSET_FETCH, 5, fetch))["topics"][0]["partitions"][0]
            assert (part["committed_offset"], part["metadata"]) == (17, "kept")
            described = await call(again, ApiKey.DESCRIBE_GROUPS, 5, {"groups": ["g"]})
            assert described["groups"][0]["group_state"] == "Stable"
            assert described["groups"][0]["members"][0]["client_host"] == "/1.2.3.4"
        finally:
            await again.stop()
