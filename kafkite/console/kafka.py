"""The console's Kafka-side actions: each is a Kafka request made through the broker's own handler chain.

A console action on topics, records, configs or groups is the request a Kafka client of the console user's
principal would send (CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs, IncrementalAlterConfigs,
DeleteRecords, Produce, Fetch, ListOffsets, OffsetCommit, DeleteGroups), encoded and decoded by the protocol
codecs exactly as one from the wire would be, and handed to ``broker.handlers``: the audit trail (recorded
with surface ``console``), the ACL authorizer, the stream-pool namespace with the OCI profile's limits, then
the handler itself. Nothing here touches the catalogue, the logs or the group coordinator directly, so a
principal refused over Kafka is refused here with the same error, and every change is audited once.

A topic or group of a stream pool is addressed as that pool's Kafka clients address it: the request runs
"on a connection" bound to the pool, with the name the pool's clients use (ACLs name it so).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kafkite.broker.core import Broker, CloseConnection, RequestContext
from kafkite.clock import now_ms
from kafkite.doors import Caller
from kafkite.protocol import records
from kafkite.protocol.api_keys import ApiKey
from kafkite.protocol.errors import ErrorCode
from kafkite.protocol.messages import registry
from kafkite.streaming.namespace import POOL_STATE_KEY
from kafkite.streaming.pools import split_internal_name

CLIENT_ID = "kafkite-console"
LISTENER = "CONSOLE"
SURFACE = "console"
TIMEOUT_MS = 30_000
RESOURCE_TOPIC = 2
EARLIEST = -2
LATEST = -1

# The versions the console speaks (all within what the protocol specs declare).
V_PRODUCE = 9
V_FETCH = 11
V_LIST_OFFSETS = 7
V_OFFSET_COMMIT = 8
V_OFFSET_FETCH = 7
V_CREATE_TOPICS = 5
V_DELETE_TOPICS = 4
V_DELETE_RECORDS = 2
V_DESCRIBE_CONFIGS = 4
V_INCREMENTAL_ALTER_CONFIGS = 1
V_CREATE_PARTITIONS = 2
V_DELETE_GROUPS = 2

CONFIG_SOURCES = {
    0: "UNKNOWN",
    1: "DYNAMIC_TOPIC_CONFIG",
    2: "DYNAMIC_BROKER_CONFIG",
    3: "DYNAMIC_DEFAULT_BROKER_CONFIG",
    4: "STATIC_BROKER_CONFIG",
    5: "DEFAULT_CONFIG",
    6: "DYNAMIC_BROKER_LOGGER_CONFIG",
    7: "CLIENT_METRICS_CONFIG",
    8: "GROUP_CONFIG",
}
CONFIG_TYPES = {
    0: "UNKNOWN",
    1: "BOOLEAN",
    2: "STRING",
    3: "INT",
    4: "SHORT",
    5: "LONG",
    6: "DOUBLE",
    7: "LIST",
    8: "CLASS",
    9: "PASSWORD",
}

_NOT_FOUND = {
    int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
    int(ErrorCode.UNKNOWN_TOPIC_ID),
    int(ErrorCode.GROUP_ID_NOT_FOUND),
}
_CONFLICT = {
    int(ErrorCode.TOPIC_ALREADY_EXISTS),
    int(ErrorCode.NON_EMPTY_GROUP),
    int(ErrorCode.UNKNOWN_MEMBER_ID),
    int(ErrorCode.REBALANCE_IN_PROGRESS),
    int(ErrorCode.ILLEGAL_GENERATION),
    int(ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC),
}
_DENIED = {
    int(ErrorCode.TOPIC_AUTHORIZATION_FAILED),
    int(ErrorCode.GROUP_AUTHORIZATION_FAILED),
    int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED),
    int(ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED),
}


def error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"ERROR_{code}"


class KafkaError(Exception):
    """A Kafka error answered to a console action: Kafka's error name, the broker's message, an HTTP
    status."""

    def __init__(self, code: int, message: str | None = None, hint: str = "") -> None:
        self.code = code
        self.name = error_name(code)
        self.broker_message = message or ""
        self.hint = hint
        text = self.name + (f": {message}" if message else "")
        super().__init__(text + (f" ({hint})" if hint else ""))

    @property
    def status(self) -> int:
        if self.code in _DENIED:
            return 403
        if self.code in _NOT_FOUND:
            return 404
        if self.code in _CONFLICT:
            return 409
        return 400

    def json(self) -> dict[str, Any]:
        return {"error": str(self), "code": self.name, "message": self.broker_message, "hint": self.hint}


def _check(code: int, message: str | None = None, hint: str = "") -> None:
    if code:
        raise KafkaError(code, message, hint)


@dataclass(frozen=True)
class Scoped:
    """A topic or group as the clients of its stream pool name it: the pool's key ("" for the default pool)
    and the name those clients use."""

    pool_key: str
    name: str

    @classmethod
    def of(cls, internal: str) -> Scoped:

        key, local = split_internal_name(internal)
        return cls(key or "", local)


_correlation = itertools.count(1)


class KafkaDoor:
    """Kafka requests on behalf of one console caller, through ``broker.handlers``."""

    def __init__(self, broker: Broker, caller: Caller) -> None:
        self.broker = broker
        self.caller = caller

    async def call(
        self, api: ApiKey, version: int, body: dict[str, Any], pool_key: str = ""
    ) -> dict[str, Any]:
        """The response of the broker's handler chain to ``body`` sent as ``api`` v``version`` by the caller
        on a connection of the stream pool ``pool_key``."""

        codec = registry().request(int(api), version)
        # Through the codec and back: the handlers get exactly what a client's request decodes to.
        req = codec.decode_all(bytearray(codec.encode_bytes(body)))  # writable: appends rewrite offsets
        handler = self.broker.handlers.get(int(api))
        if handler is None:
            raise KafkaError(int(ErrorCode.UNSUPPORTED_VERSION), f"{api.name} is not served by this broker")
        ctx = RequestContext(
            api_key=int(api),
            api_version=version,
            correlation_id=next(_correlation),
            client_id=CLIENT_ID,
            client_host=self.caller.address,
            listener=LISTENER,
            principal=self.caller.name,
            extra={"state": {POOL_STATE_KEY: pool_key}, "surface": SURFACE},
        )
        try:
            resp = await handler(self.broker, ctx, req)
        except CloseConnection:
            raise KafkaError(
                int(ErrorCode.UNKNOWN_SERVER_ERROR), "the stream pool of this resource no longer exists"
            ) from None
        if resp is None:
            raise KafkaError(int(ErrorCode.UNKNOWN_SERVER_ERROR), f"{api.name} gave no response")
        return resp

    # ------------------------------------------------------------------ topics

    async def create_topic(
        self, topic: Scoped, partitions: int | None, configs: dict[str, str]
    ) -> dict[str, Any]:
        resp = await self.call(
            ApiKey.CREATE_TOPICS,
            V_CREATE_TOPICS,
            {
                "topics": [
                    {
                        "name": topic.name,
                        "num_partitions": -1 if partitions is None else partitions,
                        "replication_factor": -1,
                        "assignments": [],
                        "configs": [{"name": k, "value": v} for k, v in configs.items()],
                    }
                ],
                "timeout_ms": TIMEOUT_MS,
                "validate_only": False,
            },
            topic.pool_key,
        )
        (t,) = resp["topics"]
        _check(t["error_code"], t.get("error_message"))
        return {"name": t["name"], "partitions": t.get("num_partitions"), "topic_id": str(t.get("topic_id"))}

    async def delete_topic(self, topic: Scoped) -> None:
        resp = await self.call(
            ApiKey.DELETE_TOPICS,
            V_DELETE_TOPICS,
            {"topic_names": [topic.name], "timeout_ms": TIMEOUT_MS},
            topic.pool_key,
        )
        (r,) = resp["responses"]
        _check(r["error_code"], r.get("error_message"))

    async def create_partitions(self, topic: Scoped, count: int) -> None:
        resp = await self.call(
            ApiKey.CREATE_PARTITIONS,
            V_CREATE_PARTITIONS,
            {
                "topics": [{"name": topic.name, "count": count, "assignments": None}],
                "timeout_ms": TIMEOUT_MS,
                "validate_only": False,
            },
            topic.pool_key,
        )
        (r,) = resp["results"]
        _check(r["error_code"], r.get("error_message"))

    async def describe_configs(self, topic: Scoped) -> list[dict[str, Any]]:
        """Every config of the topic: its value, where the value comes from, what it would be without the
        topic's own setting, its type and documentation."""
        resp = await self.call(
            ApiKey.DESCRIBE_CONFIGS,
            V_DESCRIBE_CONFIGS,
            {
                "resources": [
                    {"resource_type": RESOURCE_TOPIC, "resource_name": topic.name, "configuration_keys": None}
                ],
                "include_synonyms": True,
                "include_documentation": True,
            },
            topic.pool_key,
        )
        (r,) = resp["results"]
        _check(r["error_code"], r.get("error_message"))
        out = []
        for c in sorted(r["configs"], key=lambda c: str(c["name"])):
            source = int(c.get("config_source", -1))
            inherited = [s for s in c.get("synonyms") or [] if int(s["source"]) != 1]
            default = inherited[0] if inherited else None
            out.append(
                {
                    "name": c["name"],
                    "value": c["value"],
                    "source": CONFIG_SOURCES.get(source, str(source)),
                    "is_override": source == 1,
                    "default": default["value"] if default is not None else None,
                    "default_source": CONFIG_SOURCES.get(int(default["source"]), "") if default else None,
                    "read_only": bool(c.get("read_only")),
                    "sensitive": bool(c.get("is_sensitive")),
                    "type": CONFIG_TYPES.get(int(c.get("config_type", 0)), "UNKNOWN"),
                    "documentation": c.get("documentation"),
                }
            )
        return out

    async def alter_configs(self, topic: Scoped, set_: dict[str, str], delete: Iterable[str]) -> None:
        """IncrementalAlterConfigs: SET each of ``set_``, DELETE (back to the default) each of ``delete``."""
        ops = [{"name": k, "config_operation": 0, "value": v} for k, v in set_.items()]
        ops += [{"name": k, "config_operation": 1, "value": None} for k in delete]
        resp = await self.call(
            ApiKey.INCREMENTAL_ALTER_CONFIGS,
            V_INCREMENTAL_ALTER_CONFIGS,
            {
                "resources": [{"resource_type": RESOURCE_TOPIC, "resource_name": topic.name, "configs": ops}],
                "validate_only": False,
            },
            topic.pool_key,
        )
        (r,) = resp["responses"]
        _check(r["error_code"], r.get("error_message"))

    async def delete_records(self, topic: Scoped, before: dict[int, int]) -> dict[int, int]:
        """DeleteRecords: each partition's records before its offset (-1: the high watermark); the new log
        start offsets."""
        resp = await self.call(
            ApiKey.DELETE_RECORDS,
            V_DELETE_RECORDS,
            {
                "topics": [
                    {
                        "name": topic.name,
                        "partitions": [
                            {"partition_index": p, "offset": o} for p, o in sorted(before.items())
                        ],
                    }
                ],
                "timeout_ms": TIMEOUT_MS,
            },
            topic.pool_key,
        )
        (t,) = resp["topics"]
        out = {}
        for p in t["partitions"]:
            _check(p["error_code"], f"partition {p['partition_index']}")
            out[int(p["partition_index"])] = int(p["low_watermark"])
        return out

    # ------------------------------------------------------------------ records

    async def produce(
        self,
        topic: Scoped,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes | None]],
    ) -> dict[str, Any]:
        batch = records.build_batch([(key, value, headers, now_ms())])
        resp = await self.call(
            ApiKey.PRODUCE,
            V_PRODUCE,
            {
                "transactional_id": None,
                "acks": -1,
                "timeout_ms": TIMEOUT_MS,
                "topic_data": [
                    {"name": topic.name, "partition_data": [{"index": partition, "records": batch}]}
                ],
            },
            topic.pool_key,
        )
        (t,) = resp["responses"]
        (p,) = t["partition_responses"]
        detail = p.get("error_message") or "; ".join(
            str(e.get("batch_index_error_message")) for e in p.get("record_errors") or []
        )
        _check(p["error_code"], detail or None)
        return {
            "partition": int(p["index"]),
            "offset": int(p["base_offset"]),
            "log_append_time": int(p.get("log_append_time_ms", -1)),
        }

    async def fetch(self, topic: Scoped, partition: int, offset: int, max_bytes: int) -> FetchedRange:
        """Whole batches from ``offset`` (at least one, up to about ``max_bytes``), as Fetch returns them."""
        resp = await self.call(
            ApiKey.FETCH,
            V_FETCH,
            {
                "replica_id": -1,
                "max_wait_ms": 0,
                "min_bytes": 0,
                "max_bytes": max_bytes,
                "isolation_level": 0,
                "session_id": 0,
                "session_epoch": -1,
                "topics": [
                    {
                        "topic": topic.name,
                        "partitions": [
                            {
                                "partition": partition,
                                "current_leader_epoch": -1,
                                "fetch_offset": offset,
                                "log_start_offset": -1,
                                "partition_max_bytes": max_bytes,
                            }
                        ],
                    }
                ],
                "forgotten_topics_data": [],
                "rack_id": "",
            },
            topic.pool_key,
        )
        _check(int(resp.get("error_code", 0)))
        (t,) = resp["responses"]
        (p,) = t["partitions"]
        _check(p["error_code"], f"partition {partition} at offset {offset}")
        return FetchedRange(
            data=_records_bytes(p.get("records")),
            high_watermark=int(p["high_watermark"]),
            log_start_offset=int(p.get("log_start_offset", -1)),
        )

    async def list_offsets(self, topic: Scoped, partitions: Iterable[int], timestamp: int) -> dict[int, int]:
        """ListOffsets: per partition the offset for ``timestamp`` (EARLIEST, LATEST or a time in ms); -1
        where no record is that recent."""
        resp = await self.call(
            ApiKey.LIST_OFFSETS,
            V_LIST_OFFSETS,
            {
                "replica_id": -1,
                "isolation_level": 0,
                "topics": [
                    {
                        "name": topic.name,
                        "partitions": [
                            {"partition_index": p, "current_leader_epoch": -1, "timestamp": timestamp}
                            for p in partitions
                        ],
                    }
                ],
            },
            topic.pool_key,
        )
        (t,) = resp["topics"]
        out = {}
        for p in t["partitions"]:
            _check(p["error_code"], f"partition {p['partition_index']}")
            out[int(p["partition_index"])] = int(p["offset"])
        return out

    # ------------------------------------------------------------------ groups

    async def commit_offsets(self, group: Scoped, topic: Scoped, offsets: dict[int, int]) -> None:
        """OffsetCommit from outside the group (generation -1, no member), as Kafka's admin client resets
        offsets: the group coordinator accepts it only while the group has no members."""
        if group.pool_key != topic.pool_key:
            raise KafkaError(
                int(ErrorCode.INVALID_REQUEST), "a group commits offsets of its own stream pool's topics only"
            )
        resp = await self.call(
            ApiKey.OFFSET_COMMIT,
            V_OFFSET_COMMIT,
            {
                "group_id": group.name,
                "generation_id_or_member_epoch": -1,
                "member_id": "",
                "group_instance_id": None,
                "topics": [
                    {
                        "name": topic.name,
                        "partitions": [
                            {
                                "partition_index": p,
                                "committed_offset": o,
                                "committed_leader_epoch": -1,
                                "committed_metadata": None,
                            }
                            for p, o in sorted(offsets.items())
                        ],
                    }
                ],
            },
            group.pool_key,
        )
        for t in resp["topics"]:
            for p in t["partitions"]:
                code = int(p["error_code"])
                if code in (int(ErrorCode.UNKNOWN_MEMBER_ID), int(ErrorCode.REBALANCE_IN_PROGRESS)):
                    raise KafkaError(
                        code,
                        f"group {group.name} has members",
                        "committed offsets can be reset only while the group is empty: stop its consumers",
                    )
                _check(code, f"{t['name']} partition {p['partition_index']}")

    async def committed(self, group: Scoped, topic: Scoped, partitions: Iterable[int]) -> dict[int, int]:
        """OffsetFetch: the group's committed offsets of these partitions (-1 where none is committed)."""
        if group.pool_key != topic.pool_key:
            return {}
        resp = await self.call(
            ApiKey.OFFSET_FETCH,
            V_OFFSET_FETCH,
            {
                "group_id": group.name,
                "topics": [{"name": topic.name, "partition_indexes": list(partitions)}],
                "require_stable": False,
            },
            group.pool_key,
        )
        _check(int(resp.get("error_code", 0)), f"group {group.name}")
        out = {}
        for t in resp["topics"]:
            for p in t["partitions"]:
                _check(p["error_code"], f"{t['name']} partition {p['partition_index']}")
                out[int(p["partition_index"])] = int(p["committed_offset"])
        return out

    async def delete_group(self, group: Scoped) -> None:
        resp = await self.call(
            ApiKey.DELETE_GROUPS, V_DELETE_GROUPS, {"groups_names": [group.name]}, group.pool_key
        )
        (r,) = resp["results"]
        code = int(r["error_code"])
        hint = (
            "a group can be deleted only while it has no members" if code == ErrorCode.NON_EMPTY_GROUP else ""
        )
        _check(code, f"group {group.name}", hint)


@dataclass
class FetchedRange:
    data: bytes
    high_watermark: int
    log_start_offset: int


def _records_bytes(recs: Any) -> bytes:
    """The bytes of a Fetch response's records: bytes, or chunks of bytes and file ranges."""
    if recs is None:
        return b""
    if isinstance(recs, bytes | bytearray | memoryview):
        return bytes(recs)
    out = bytearray()
    for chunk in recs:
        if isinstance(chunk, bytes | bytearray | memoryview):
            out += chunk
        else:
            out += chunk.read()
    return bytes(out)
