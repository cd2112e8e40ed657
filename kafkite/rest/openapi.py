"""The OpenAPI 3 description of the REST gateway: every OCI Streaming (20180418) and OCI Queue
(20210201) route kafkite serves, with the request bodies and parameters it reads. The gateway serves it at
``/openapi.json``; the fuzz tests generate requests from it. Responses are described by status only (OCI's
models are the SDKs'); every error is ``{"code": ..., "message": ...}``.
"""

from __future__ import annotations

import copy
from typing import Any

Json = dict[str, Any]

STREAMING = "/20180418"
QUEUE = "/20210201"


def _str(**kw: Any) -> Json:
    return {"type": "string", **kw}


def _int(**kw: Any) -> Json:
    return {"type": "integer", **kw}


def _obj(props: Json, required: list[str] | None = None) -> Json:
    out: Json = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    return out


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


TAGS: Json = {"type": "object", "additionalProperties": {"type": "string"}}
DEFINED_TAGS: Json = {"type": "object", "additionalProperties": {"type": "object"}}
TIME = _str(format="date-time")

SCHEMAS: dict[str, Json] = {
    "Error": _obj({"code": _str(), "message": _str()}, ["code", "message"]),
    # ------------------------------------------------------------------ streaming
    "KafkaSettings": _obj(
        {
            "bootstrapServers": _str(),
            "autoCreateTopicsEnable": {"type": "boolean"},
            "logRetentionHours": _int(),
            "numPartitions": _int(),
        }
    ),
    "CreateStreamPoolDetails": _obj(
        {
            "name": _str(),
            "compartmentId": _str(),
            "kafkaSettings": _ref("KafkaSettings"),
            "freeformTags": TAGS,
            "definedTags": DEFINED_TAGS,
        },
        ["name", "compartmentId"],
    ),
    "UpdateStreamPoolDetails": _obj(
        {
            "name": _str(),
            "kafkaSettings": _ref("KafkaSettings"),
            "freeformTags": TAGS,
            "definedTags": DEFINED_TAGS,
        }
    ),
    "ChangeCompartmentDetails": _obj({"compartmentId": _str()}, ["compartmentId"]),
    "CreateStreamDetails": _obj(
        {
            "name": _str(),
            "partitions": _int(),
            "compartmentId": _str(),
            "streamPoolId": _str(),
            "retentionInHours": _int(),
            "freeformTags": TAGS,
            "definedTags": DEFINED_TAGS,
        },
        ["name", "partitions"],
    ),
    "UpdateStreamDetails": _obj({"streamPoolId": _str(), "freeformTags": TAGS, "definedTags": DEFINED_TAGS}),
    "StreamPutMessagesDetails": _obj(
        {
            "messages": {
                "type": "array",
                "items": _obj(
                    {"key": _str(format="byte", nullable=True), "value": _str(format="byte")}, ["value"]
                ),
            }
        },
        ["messages"],
    ),
    "CreateCursorDetails": _obj(
        {
            "partition": _str(),
            "type": _str(enum=["AFTER_OFFSET", "AT_OFFSET", "AT_TIME", "LATEST", "TRIM_HORIZON"]),
            "offset": _int(),
            "time": TIME,
        },
        ["partition", "type"],
    ),
    "CreateGroupCursorDetails": _obj(
        {
            "type": _str(enum=["AT_TIME", "LATEST", "TRIM_HORIZON"]),
            "time": TIME,
            "groupName": _str(),
            "instanceName": _str(),
            "timeoutInMs": _int(),
            "commitOnGet": {"type": "boolean"},
        },
        ["type", "groupName"],
    ),
    "UpdateGroupDetails": _obj({"type": _str(enum=["AT_TIME", "LATEST", "TRIM_HORIZON"]), "time": TIME}),
    # ------------------------------------------------------------------ queue
    "CreateQueueDetails": _obj(
        {
            "displayName": _str(),
            "compartmentId": _str(),
            "retentionInSeconds": _int(),
            "visibilityInSeconds": _int(),
            "timeoutInSeconds": _int(),
            "channelConsumptionLimit": _int(),
            "deadLetterQueueDeliveryCount": _int(),
            "customEncryptionKeyId": _str(),
            "freeformTags": TAGS,
            "definedTags": DEFINED_TAGS,
        },
        ["displayName", "compartmentId"],
    ),
    "UpdateQueueDetails": _obj(
        {
            "displayName": _str(),
            "visibilityInSeconds": _int(),
            "timeoutInSeconds": _int(),
            "channelConsumptionLimit": _int(),
            "deadLetterQueueDeliveryCount": _int(),
            "customEncryptionKeyId": _str(),
            "freeformTags": TAGS,
            "definedTags": DEFINED_TAGS,
        }
    ),
    "PurgeQueueDetails": _obj(
        {"purgeType": _str(enum=["NORMAL", "DLQ", "BOTH"]), "channelIds": {"type": "array", "items": _str()}},
        ["purgeType"],
    ),
    "QueuePutMessagesDetails": _obj(
        {
            "messages": {
                "type": "array",
                "items": _obj(
                    {
                        "content": _str(),
                        "metadata": _obj({"channelId": _str(), "customProperties": TAGS}),
                    },
                    ["content"],
                ),
            }
        },
        ["messages"],
    ),
    "DeleteMessagesDetails": _obj(
        {"entries": {"type": "array", "items": _obj({"receipt": _str()}, ["receipt"])}}, ["entries"]
    ),
    "UpdateMessagesDetails": _obj(
        {
            "entries": {
                "type": "array",
                "items": _obj(
                    {"receipt": _str(), "visibilityInSeconds": _int()}, ["receipt", "visibilityInSeconds"]
                ),
            }
        },
        ["entries"],
    ),
    "UpdateMessageDetails": _obj({"visibilityInSeconds": _int()}, ["visibilityInSeconds"]),
    "MoveBackDetails": _obj(
        {"ids": {"type": "array", "items": _int()}, "channelIds": {"type": "array", "items": _str()}}
    ),
}


def _query(name: str, schema: Json, required: bool = False) -> Json:
    return {"name": name, "in": "query", "required": required, "schema": schema}


def _path(name: str) -> Json:
    return {"name": name, "in": "path", "required": True, "schema": _str()}


def _header(name: str) -> Json:
    return {"name": name, "in": "header", "required": False, "schema": _str()}


PAGE = [_query("limit", _int()), _query("page", _str())]
SORT = [_query("sortBy", _str()), _query("sortOrder", _str(enum=["ASC", "DESC"]))]


def _op(op_id: str, summary: str, params: list[Json] | None = None, body: str | None = None) -> Json:
    out: Json = {
        "operationId": op_id,
        "summary": summary,
        "parameters": [_header("opc-request-id"), *(params or [])],
        "responses": {
            "200": {"description": "done"},
            "202": {"description": "accepted: the work request is finished"},
            "default": {
                "description": "an OCI error",
                "content": {"application/json": {"schema": _ref("Error")}},
            },
        },
    }
    if body is not None:
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    return out


def _work_requests(prefix: str, api: str) -> dict[str, Json]:
    wr = [_path("workRequestId")]
    return {
        f"{prefix}/workRequests": {
            "get": _op(
                f"{api}ListWorkRequests",
                "List work requests",
                [
                    _query("compartmentId", _str()),
                    _query("resourceId", _str()),
                    _query("workRequestId", _str()),
                    *PAGE,
                ],
            )
        },
        f"{prefix}/workRequests/{{workRequestId}}": {
            "get": _op(f"{api}GetWorkRequest", "Get a work request", wr)
        },
        f"{prefix}/workRequests/{{workRequestId}}/errors": {
            "get": _op(f"{api}ListWorkRequestErrors", "A work request's errors", [*wr, *PAGE])
        },
        f"{prefix}/workRequests/{{workRequestId}}/logs": {
            "get": _op(f"{api}ListWorkRequestLogs", "A work request's logs", [*wr, *PAGE])
        },
    }


def _streaming_paths() -> dict[str, Json]:
    pool = [_path("poolId")]
    stream = [_path("streamId")]
    cursor = _query("cursor", _str(), required=True)
    pools = f"{STREAMING}/streampools"
    streams = f"{STREAMING}/streams"
    lifecycle = _query("lifecycleState", _str())
    return {
        pools: {
            "post": _op("CreateStreamPool", "Create a stream pool", body="CreateStreamPoolDetails"),
            "get": _op(
                "ListStreamPools",
                "List stream pools",
                [
                    _query("compartmentId", _str(), required=True),
                    _query("id", _str()),
                    _query("name", _str()),
                    lifecycle,
                    *PAGE,
                    *SORT,
                ],
            ),
        },
        f"{pools}/{{poolId}}": {
            "get": _op("GetStreamPool", "Get a stream pool", pool),
            "put": _op("UpdateStreamPool", "Update a stream pool", pool, "UpdateStreamPoolDetails"),
            "delete": _op("DeleteStreamPool", "Delete a stream pool and its streams", pool),
        },
        f"{pools}/{{poolId}}/actions/changeCompartment": {
            "post": _op("ChangeStreamPoolCompartment", "Move a pool", pool, "ChangeCompartmentDetails")
        },
        streams: {
            "post": _op("CreateStream", "Create a stream (a Kafka topic)", body="CreateStreamDetails"),
            "get": _op(
                "ListStreams",
                "List streams",
                [
                    _query("compartmentId", _str()),
                    _query("streamPoolId", _str()),
                    _query("id", _str()),
                    _query("name", _str()),
                    lifecycle,
                    *PAGE,
                    *SORT,
                ],
            ),
        },
        f"{streams}/{{streamId}}": {
            "get": _op("GetStream", "Get a stream", stream),
            "put": _op("UpdateStream", "Update a stream's tags", stream, "UpdateStreamDetails"),
            "delete": _op("DeleteStream", "Delete a stream", stream),
        },
        f"{streams}/{{streamId}}/actions/changeCompartment": {
            "post": _op("ChangeStreamCompartment", "Move a stream", stream, "ChangeCompartmentDetails")
        },
        f"{streams}/{{streamId}}/messages": {
            "post": _op("PutMessages", "Append messages", stream, "StreamPutMessagesDetails"),
            "get": _op(
                "GetMessages", "Read messages from a cursor", [*stream, cursor, _query("limit", _int())]
            ),
        },
        f"{streams}/{{streamId}}/cursors": {
            "post": _op("CreateCursor", "A partition cursor", stream, "CreateCursorDetails")
        },
        f"{streams}/{{streamId}}/groupCursors": {
            "post": _op("CreateGroupCursor", "A consumer group cursor", stream, "CreateGroupCursorDetails")
        },
        f"{streams}/{{streamId}}/groups/{{groupName}}": {
            "get": _op("GetGroup", "A group's reservations and offsets", [*stream, _path("groupName")]),
            "put": _op(
                "UpdateGroup", "Reset a group's offsets", [*stream, _path("groupName")], "UpdateGroupDetails"
            ),
        },
        f"{streams}/{{streamId}}/commit": {
            "post": _op("ConsumerCommit", "Commit a group cursor", [*stream, cursor])
        },
        f"{streams}/{{streamId}}/heartbeat": {
            "post": _op("ConsumerHeartbeat", "Keep a group cursor's reservations", [*stream, cursor])
        },
        **_work_requests(STREAMING, "Streaming"),
    }


def _queue_paths() -> dict[str, Json]:
    q = [_path("queueId")]
    qp = f"{QUEUE}/queues/{{queueId}}"
    if_match = _header("if-match")
    group = _query("consumerGroupId", _str())
    return {
        f"{QUEUE}/queues": {
            "post": _op("CreateQueue", "Create a queue", body="CreateQueueDetails"),
            "get": _op(
                "ListQueues",
                "List queues",
                [
                    _query("compartmentId", _str()),
                    _query("lifecycleState", _str()),
                    _query("displayName", _str()),
                    _query("id", _str()),
                    *PAGE,
                    *SORT,
                ],
            ),
        },
        qp: {
            "get": _op("GetQueue", "Get a queue", q),
            "put": _op("UpdateQueue", "Update a queue's settings", [*q, if_match], "UpdateQueueDetails"),
            "delete": _op("DeleteQueue", "Delete a queue", [*q, if_match]),
        },
        f"{qp}/actions/purge": {
            "post": _op("PurgeQueue", "Purge a queue", [*q, if_match], "PurgeQueueDetails")
        },
        f"{qp}/actions/changeCompartment": {
            "post": _op("ChangeQueueCompartment", "Move a queue", [*q, if_match], "ChangeCompartmentDetails")
        },
        f"{qp}/messages": {
            "post": _op("QueuePutMessages", "Put messages", q, "QueuePutMessagesDetails"),
            "get": _op(
                "QueueGetMessages",
                "Receive messages (long poll)",
                [
                    *q,
                    _query("visibilityInSeconds", _int()),
                    _query("timeoutInSeconds", _int(minimum=0, maximum=20)),
                    _query("limit", _int()),
                    _query("channelFilter", _str()),
                    group,
                ],
            ),
        },
        f"{qp}/messages/actions/deleteMessages": {
            "post": _op("DeleteMessages", "Delete messages by receipt", q, "DeleteMessagesDetails")
        },
        f"{qp}/messages/actions/updateMessages": {
            "post": _op("UpdateMessages", "Change messages' visibility", q, "UpdateMessagesDetails")
        },
        f"{qp}/messages/{{messageReceipt}}": {
            "put": _op(
                "UpdateMessage",
                "Change a message's visibility",
                [*q, _path("messageReceipt")],
                "UpdateMessageDetails",
            ),
            "delete": _op("DeleteMessage", "Delete a message", [*q, _path("messageReceipt")]),
        },
        f"{qp}/stats": {"get": _op("GetStats", "Queue statistics", [*q, _query("channelId", _str()), group])},
        f"{qp}/channels": {
            "get": _op("ListChannels", "List channels", [*q, _query("channelFilter", _str()), group, *PAGE])
        },
        f"{qp}/dlq/messages": {
            "get": _op(
                "GetDeadLetterMessages",
                "Receive dead letters (kafkite extension)",
                [
                    *q,
                    _query("visibilityInSeconds", _int()),
                    _query("timeoutInSeconds", _int(minimum=0, maximum=20)),
                    _query("limit", _int()),
                    _query("channelFilter", _str()),
                ],
            )
        },
        f"{qp}/dlq/actions/moveBack": {
            "post": _op("MoveBack", "Move dead letters back (kafkite extension)", q, "MoveBackDetails")
        },
        **_work_requests(QUEUE, "Queue"),
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kafkite")
    except PackageNotFoundError:
        return "0"


def document() -> Json:
    """The OpenAPI 3.0 document (a fresh copy each call)."""
    return copy.deepcopy(
        {
            "openapi": "3.0.3",
            "info": {
                "title": "kafkite REST gateway: OCI Streaming (20180418) and OCI Queue (20210201)",
                "version": _version(),
                "description": "The OCI Streaming and OCI Queue APIs as kafkite serves them. Requests are "
                "signed as OCI signs them (Authorization: Signature) when the broker verifies signatures.",
            },
            "paths": {**_streaming_paths(), **_queue_paths()},
            "components": {"schemas": SCHEMAS},
        }
    )
