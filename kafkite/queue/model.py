"""Queue metadata, work requests, OCI limits and errors: the data shared by the REST and STOMP front ends."""

from __future__ import annotations

import base64
import datetime as dt
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

# OCI Queue limits (seconds unless said otherwise).
RETENTION_MIN, RETENTION_MAX, RETENTION_DEFAULT = 10, 7 * 24 * 3600, 24 * 3600
VISIBILITY_MIN, VISIBILITY_MAX, VISIBILITY_DEFAULT = 0, 12 * 3600, 30
TIMEOUT_MIN, TIMEOUT_MAX, TIMEOUT_DEFAULT = 0, 30, 30
DLQ_COUNT_MIN, DLQ_COUNT_MAX, DLQ_COUNT_DEFAULT = 0, 20, 0
CHANNEL_LIMIT_MIN, CHANNEL_LIMIT_MAX, CHANNEL_LIMIT_DEFAULT = 1, 100, 100
GET_LIMIT_MIN, GET_LIMIT_MAX, GET_LIMIT_DEFAULT = 1, 32, 1
MAX_CONTENT_BYTES = 128 * 1024
MAX_LARGE_CONTENT_BYTES = 512 * 1024
MAX_PUT_MESSAGES = 512
MAX_BATCH_ENTRIES = 20
MAX_CHANNEL_ID_LENGTH = 256
QUEUE_STORAGE_BYTES = 2 * 1024 * 1024 * 1024  # a queue's allocated storage; channels get a share of it

LIFECYCLE_STATES = ("CREATING", "UPDATING", "ACTIVE", "DELETING", "DELETED", "FAILED", "INACTIVE")
PURGE_TYPES = ("NORMAL", "DLQ", "BOTH")
CAPABILITY_TYPES = ("CONSUMER_GROUPS", "LARGE_MESSAGES")


class QueueError(Exception):
    """An error reported to clients: an HTTP status and an OCI error code (ERROR frames reuse them)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def invalid(message: str) -> QueueError:
    return QueueError(400, "InvalidParameter", message)


def missing(name: str) -> QueueError:
    return QueueError(400, "MissingParameter", f"{name} is required")


def not_found(what: str) -> QueueError:
    return QueueError(404, "NotAuthorizedOrNotFound", f"{what} not found or not authorized")


def conflict(message: str) -> QueueError:
    return QueueError(409, "IncorrectState", message)


def rfc3339(ms: int) -> str:
    """Milliseconds since the epoch as an RFC 3339 UTC timestamp, as OCI writes them."""
    t = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def random_suffix(n: int = 60) -> str:
    """A lowercase base32 string like the unique part of an OCID."""
    raw = base64.b32encode(os.urandom((n * 5 + 7) // 8)).decode().lower().rstrip("=")
    return ("aaaaaaaa" + raw)[:n]


def new_ocid(kind: str) -> str:
    return f"ocid1.{kind}.oc1..{random_suffix()}"


def check_int(body: dict[str, Any], key: str, lo: int, hi: int, default: int | None) -> int | None:
    """The integer ``body[key]`` within [lo, hi], ``default`` when absent (None: keep absent)."""
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"{key} must be an integer")
    if not lo <= value <= hi:
        raise invalid(f"{key} must be between {lo} and {hi}, got {value}")
    return value


def check_channel(channel: object) -> str:
    if not isinstance(channel, str) or not channel:
        raise invalid("metadata.channelId must be a non-empty string")
    if len(channel) > MAX_CHANNEL_ID_LENGTH or "/" in channel:
        raise invalid(f"channelId must be at most {MAX_CHANNEL_ID_LENGTH} characters without '/'")
    return channel


def check_properties(props: object) -> dict[str, str] | None:
    if props is None:
        return None
    if not isinstance(props, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in props.items()
    ):
        raise invalid("metadata.customProperties must map strings to strings")
    return dict(props) if props else None


def check_capabilities(caps: object) -> list[dict[str, Any]]:
    if caps is None:
        return []
    if not isinstance(caps, list):
        raise invalid("capabilities must be a list")
    out = []
    for cap in caps:
        if not isinstance(cap, dict) or cap.get("type") not in CAPABILITY_TYPES:
            raise invalid(f"each capability needs a type among {', '.join(CAPABILITY_TYPES)}")
        out.append(dict(cap))
    return out


@dataclass
class QueueMeta:
    """A queue's durable description (the JSON of OCI's Queue model, in snake case)."""

    id: str
    display_name: str
    compartment_id: str
    time_created: int
    time_updated: int
    lifecycle_state: str = "ACTIVE"
    lifecycle_details: str | None = None
    retention_in_seconds: int = RETENTION_DEFAULT
    visibility_in_seconds: int = VISIBILITY_DEFAULT
    timeout_in_seconds: int = TIMEOUT_DEFAULT
    dead_letter_queue_delivery_count: int = DLQ_COUNT_DEFAULT
    channel_consumption_limit: int = CHANNEL_LIMIT_DEFAULT
    custom_encryption_key_id: str | None = None
    capabilities: list[dict[str, Any]] = field(default_factory=list)
    freeform_tags: dict[str, str] = field(default_factory=dict)
    defined_tags: dict[str, dict[str, Any]] = field(default_factory=dict)
    version: int = 1

    @property
    def key(self) -> str:
        """The unique part of the OCID: names the queue's internal topics."""
        return self.id.rsplit(".", 1)[-1]

    @property
    def max_content_bytes(self) -> int:
        if any(c.get("type") == "LARGE_MESSAGES" for c in self.capabilities):
            return MAX_LARGE_CONTENT_BYTES
        return MAX_CONTENT_BYTES

    @property
    def etag(self) -> str:
        return f'"{self.key[-12:]}-{self.version}"'

    @property
    def live(self) -> bool:
        return self.lifecycle_state not in ("DELETING", "DELETED", "FAILED")

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, obj: dict[str, Any]) -> QueueMeta:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in names})

    def to_json(self, endpoint: str) -> dict[str, Any]:
        """OCI's Queue model."""
        return {
            "id": self.id,
            "displayName": self.display_name,
            "compartmentId": self.compartment_id,
            "timeCreated": rfc3339(self.time_created),
            "timeUpdated": rfc3339(self.time_updated),
            "lifecycleState": self.lifecycle_state,
            "lifecycleDetails": self.lifecycle_details,
            "messagesEndpoint": endpoint,
            "retentionInSeconds": self.retention_in_seconds,
            "visibilityInSeconds": self.visibility_in_seconds,
            "timeoutInSeconds": self.timeout_in_seconds,
            "deadLetterQueueDeliveryCount": self.dead_letter_queue_delivery_count,
            "customEncryptionKeyId": self.custom_encryption_key_id,
            "freeformTags": self.freeform_tags,
            "definedTags": self.defined_tags,
            "systemTags": {},
            "channelConsumptionLimit": self.channel_consumption_limit,
            "capabilities": self.capabilities,
        }

    def to_summary(self, endpoint: str) -> dict[str, Any]:
        """OCI's QueueSummary model."""
        return {
            "id": self.id,
            "displayName": self.display_name,
            "compartmentId": self.compartment_id,
            "timeCreated": rfc3339(self.time_created),
            "timeUpdated": rfc3339(self.time_updated),
            "lifecycleState": self.lifecycle_state,
            "lifecycleDetails": self.lifecycle_details,
            "messagesEndpoint": endpoint,
            "freeformTags": self.freeform_tags,
            "definedTags": self.defined_tags,
            "systemTags": {},
            "capabilities": [c["type"] for c in self.capabilities],
        }


def queue_from_create(body: object, now: int) -> QueueMeta:
    """Validate a CreateQueueDetails body."""
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    name = body.get("displayName")
    if not isinstance(name, str) or not name.strip():
        raise missing("displayName")
    compartment = body.get("compartmentId")
    if not isinstance(compartment, str) or not compartment:
        raise missing("compartmentId")
    meta = QueueMeta(
        id=new_ocid("queue"),
        display_name=name,
        compartment_id=compartment,
        time_created=now,
        time_updated=now,
        capabilities=check_capabilities(body.get("capabilities")),
        custom_encryption_key_id=body.get("customEncryptionKeyId"),
    )
    meta.retention_in_seconds = (
        check_int(body, "retentionInSeconds", RETENTION_MIN, RETENTION_MAX, RETENTION_DEFAULT)
        or RETENTION_DEFAULT
    )
    apply_settings(meta, body)
    return meta


def apply_settings(meta: QueueMeta, body: dict[str, Any]) -> None:
    """The settings CreateQueue and UpdateQueue share; absent keys keep their value."""
    v = check_int(body, "visibilityInSeconds", VISIBILITY_MIN, VISIBILITY_MAX, None)
    if v is not None:
        meta.visibility_in_seconds = v
    v = check_int(body, "timeoutInSeconds", TIMEOUT_MIN, TIMEOUT_MAX, None)
    if v is not None:
        meta.timeout_in_seconds = v
    v = check_int(body, "deadLetterQueueDeliveryCount", DLQ_COUNT_MIN, DLQ_COUNT_MAX, None)
    if v is not None:
        meta.dead_letter_queue_delivery_count = v
    v = check_int(body, "channelConsumptionLimit", CHANNEL_LIMIT_MIN, CHANNEL_LIMIT_MAX, None)
    if v is not None:
        meta.channel_consumption_limit = v
    if "displayName" in body and body["displayName"] is not None:
        name = body["displayName"]
        if not isinstance(name, str) or not name.strip():
            raise invalid("displayName must be a non-empty string")
        meta.display_name = name
    if body.get("freeformTags") is not None:
        if not isinstance(body["freeformTags"], dict):
            raise invalid("freeformTags must be an object")
        meta.freeform_tags = {str(k): str(v) for k, v in body["freeformTags"].items()}
    if body.get("definedTags") is not None:
        if not isinstance(body["definedTags"], dict):
            raise invalid("definedTags must be an object")
        meta.defined_tags = dict(body["definedTags"])
    if body.get("capabilities") is not None:
        meta.capabilities = check_capabilities(body["capabilities"])
    if body.get("customEncryptionKeyId") is not None:
        meta.custom_encryption_key_id = str(body["customEncryptionKeyId"])


@dataclass
class WorkRequest:
    """An OCI work request; kafkite finishes every one before answering the request that started it."""

    id: str
    operation_type: str
    compartment_id: str
    queue_id: str
    action_type: str
    time_accepted: int
    status: str = "SUCCEEDED"

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, obj: dict[str, Any]) -> WorkRequest:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in names})

    def to_json(self) -> dict[str, Any]:
        t = rfc3339(self.time_accepted)
        return {
            "operationType": self.operation_type,
            "status": self.status,
            "id": self.id,
            "compartmentId": self.compartment_id,
            "resources": [
                {
                    "entityType": "queue",
                    "actionType": self.action_type,
                    "identifier": self.queue_id,
                    "entityUri": f"/20210201/queues/{self.queue_id}",
                }
            ],
            "percentComplete": 100.0,
            "timeAccepted": t,
            "timeStarted": t,
            "timeFinished": t,
        }
