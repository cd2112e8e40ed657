"""OCI Streaming's published limits, as the migration planner uses them: the one place for these numbers.

Source: Oracle Cloud Infrastructure documentation, "Streaming" > "Limits on Streaming Resources"
(https://docs.oracle.com/iaas/Content/Streaming/Concepts/streamingoverview.htm#limits) and "Using Kafka
APIs" (https://docs.oracle.com/iaas/Content/Streaming/Tasks/kafkacompatibility.htm). The values enforced by
kafkite's own OCI profile come from ``kafkite.streaming.limits`` so the planner and the broker never disagree.
"""

from __future__ import annotations

from kafkite.streaming.limits import (
    GET_MESSAGES_PER_SECOND_PER_PARTITION_PER_GROUP,
    MAX_GROUPS_PER_STREAM,
    MAX_MESSAGE_BYTES,
    MAX_PARTITIONS_PER_REQUEST_LIMIT,
    MAX_REQUEST_BYTES,
    MAX_RETENTION_HOURS,
    MB,
    MIN_RETENTION_HOURS,
    WRITE_BYTES_PER_SECOND_PER_PARTITION,
)

# Throughput per partition: "1 MB per second" written and "2 MB per second" read (all consumers together).
WRITE_BYTES_PER_SEC = WRITE_BYTES_PER_SECOND_PER_PARTITION
READ_BYTES_PER_SEC = 2 * MB
# "5 GetMessages requests per second per partition" for each consumer group.
GET_MESSAGES_PER_SEC = GET_MESSAGES_PER_SECOND_PER_PARTITION_PER_GROUP
# A GetMessages call returns at most this many messages (its ``limit`` parameter tops out here), so one group
# reads at most GET_MESSAGES_PER_SEC * GET_MESSAGES_MAX_RECORDS messages per second from one partition.
GET_MESSAGES_MAX_RECORDS = MAX_PARTITIONS_PER_REQUEST_LIMIT
# "Maximum message size: 1 MB"; a PutMessages request is at most 1 MB as well.
MESSAGE_BYTES = MAX_MESSAGE_BYTES
REQUEST_BYTES = MAX_REQUEST_BYTES
# Retention "from 24 hours (default) to 168 hours (7 days)", fixed when the stream is created.
RETENTION_MIN_HOURS = MIN_RETENTION_HOURS
RETENTION_MAX_HOURS = MAX_RETENTION_HOURS
# Consumer groups on one stream.
GROUPS_PER_STREAM = MAX_GROUPS_PER_STREAM
# The partition count is chosen at creation and cannot be changed afterwards.
PARTITIONS_IMMUTABLE = True

__all__ = [
    "GET_MESSAGES_MAX_RECORDS",
    "GET_MESSAGES_PER_SEC",
    "GROUPS_PER_STREAM",
    "MB",
    "MESSAGE_BYTES",
    "PARTITIONS_IMMUTABLE",
    "READ_BYTES_PER_SEC",
    "REQUEST_BYTES",
    "RETENTION_MAX_HOURS",
    "RETENTION_MIN_HOURS",
    "SOURCE",
    "WRITE_BYTES_PER_SEC",
    "as_dict",
]

SOURCE = "https://docs.oracle.com/iaas/Content/Streaming/Concepts/streamingoverview.htm#limits"


def as_dict() -> dict[str, object]:
    """The limits as the plan records them (JSON)."""
    return {
        "write_bytes_per_sec_per_partition": WRITE_BYTES_PER_SEC,
        "read_bytes_per_sec_per_partition": READ_BYTES_PER_SEC,
        "get_messages_per_sec_per_partition_per_group": GET_MESSAGES_PER_SEC,
        "get_messages_max_records": GET_MESSAGES_MAX_RECORDS,
        "max_message_bytes": MESSAGE_BYTES,
        "max_request_bytes": REQUEST_BYTES,
        "retention_hours": [RETENTION_MIN_HOURS, RETENTION_MAX_HOURS],
        "max_groups_per_stream": GROUPS_PER_STREAM,
        "partitions_immutable": PARTITIONS_IMMUTABLE,
        "source": SOURCE,
    }
