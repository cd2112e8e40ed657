"""Binary keys and values of the group log (``__consumer_offsets``), modelled on Kafka's own.

Key:   int16 key version, string group id, then for offset keys (version 1): string topic, int32 partition.
       Key version 2 is the group metadata key. Key version 3, an offset committed in a transaction that has
       not ended yet: string group id, string topic, int32 partition, int64 producer id (its value is an
       offset value).
Value of an offset commit (int16 version 0):
       int64 offset, int32 leader epoch, nullable string metadata, int64 commit time,
       int64 expire time (-1: none).
Value of group metadata (int16 version 0):
       nullable string protocol type, int32 generation, nullable string protocol, nullable string leader,
       int64 time of the last state change (-1: unknown), int32 member count, then per member:
       string member id, nullable string group instance id, string client id, string client host,
       int32 rebalance timeout, int32 session timeout, bytes subscription, bytes assignment.
Consumer groups (KIP-848), one record per concern as Kafka keeps them, so that a heartbeat writes only what
it changed. Every key is int16 version, string group id, then for member keys string member id:
  4 consumer group metadata:  int32 group epoch, int64 metadata hash
  5 member metadata:          nullable string instance id, nullable string rack id, string client id,
                              string client host, int32 topic count + strings (subscribed topic names),
                              string regex ("" none), nullable string server assignor, int32 rebalance
                              timeout, int32 classic session timeout (-1: a consumer-protocol member),
                              int32 protocol count + (string name, bytes metadata)
  6 target assignment epoch:  int32 assignment epoch
  7 member target assignment: partitions
  8 member current assignment: int32 member epoch, int32 previous epoch, int8 state, partitions assigned,
                              partitions pending revocation
  9 group configs:            int32 count + (string name, string value)
Share groups (KIP-932), the same way:
 10 share group metadata:     int32 group epoch, int64 metadata hash, int32 assignment epoch
 11 share member metadata:    nullable string rack id, string client id, string client host,
                              int32 topic count + strings (subscribed topic names)
 12 share member assignment:  int32 member epoch, int32 previous epoch, partitions assigned
Partitions: int32 topic count, then per topic 16 bytes of topic id, int32 count + int32 partitions.
Values of these keys start with int16 version 0.
Strings are int32-length-prefixed UTF-8 (-1: null); bytes are int32-length-prefixed.
A key with a null value (tombstone) deletes what the key names.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

OFFSET_KEY_VERSION = 1
GROUP_KEY_VERSION = 2
TXN_OFFSET_KEY_VERSION = 3
CONSUMER_GROUP_KEY_VERSION = 4
CONSUMER_MEMBER_KEY_VERSION = 5
TARGET_ASSIGNMENT_METADATA_KEY_VERSION = 6
TARGET_ASSIGNMENT_MEMBER_KEY_VERSION = 7
CURRENT_ASSIGNMENT_KEY_VERSION = 8
GROUP_CONFIG_KEY_VERSION = 9
SHARE_GROUP_KEY_VERSION = 10
SHARE_MEMBER_KEY_VERSION = 11
SHARE_ASSIGNMENT_KEY_VERSION = 12
OFFSET_VALUE_VERSION = 0
GROUP_VALUE_VERSION = 0
RECORD_VALUE_VERSION = 0


@dataclass(frozen=True)
class OffsetAndMetadata:
    """A committed offset; ``expire_timestamp_ms`` is set only by OffsetCommit v2-4 with a retention time."""

    offset: int
    leader_epoch: int = -1
    metadata: str | None = ""
    commit_timestamp_ms: int = 0
    expire_timestamp_ms: int | None = None


class LogFormatError(ValueError):
    """A key or value of the group log that cannot be decoded."""


@dataclass(frozen=True)
class OffsetKey:
    group_id: str
    topic: str
    partition: int


@dataclass(frozen=True)
class GroupKey:
    group_id: str


@dataclass(frozen=True)
class TxnOffsetKey:
    group_id: str
    topic: str
    partition: int
    producer_id: int


@dataclass(frozen=True)
class ConsumerGroupKey:
    """The group epoch of a consumer group (key version 4)."""

    group_id: str


@dataclass(frozen=True)
class ConsumerMemberKey:
    """A consumer group member's metadata (key version 5)."""

    group_id: str
    member_id: str


@dataclass(frozen=True)
class TargetAssignmentMetadataKey:
    """The target assignment epoch of a consumer group (key version 6)."""

    group_id: str


@dataclass(frozen=True)
class TargetAssignmentMemberKey:
    """A member's target assignment (key version 7)."""

    group_id: str
    member_id: str


@dataclass(frozen=True)
class CurrentAssignmentKey:
    """A member's epoch, state and current assignment (key version 8)."""

    group_id: str
    member_id: str


@dataclass(frozen=True)
class GroupConfigKey:
    """The dynamic configs of a group (key version 9)."""

    group_id: str


@dataclass(frozen=True)
class ShareGroupKey:
    """The epochs of a share group (key version 10)."""

    group_id: str


@dataclass(frozen=True)
class ShareMemberKey:
    """A share group member's metadata (key version 11)."""

    group_id: str
    member_id: str


@dataclass(frozen=True)
class ShareAssignmentKey:
    """A share group member's epoch and assignment (key version 12)."""

    group_id: str
    member_id: str


Key = (
    OffsetKey
    | GroupKey
    | TxnOffsetKey
    | ConsumerGroupKey
    | ConsumerMemberKey
    | TargetAssignmentMetadataKey
    | TargetAssignmentMemberKey
    | CurrentAssignmentKey
    | GroupConfigKey
    | ShareGroupKey
    | ShareMemberKey
    | ShareAssignmentKey
)


@dataclass(frozen=True)
class ConsumerMemberRecord:
    instance_id: str | None
    rack_id: str | None
    client_id: str
    client_host: str
    subscribed_topic_names: tuple[str, ...]
    subscribed_topic_regex: str
    server_assignor: str | None
    rebalance_timeout_ms: int
    classic_session_timeout_ms: int | None
    classic_protocols: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class CurrentAssignmentRecord:
    member_epoch: int
    previous_member_epoch: int
    state: int
    assigned: Mapping[uuid.UUID, frozenset[int]]
    pending_revocation: Mapping[uuid.UUID, frozenset[int]]


@dataclass(frozen=True)
class MemberRecord:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    subscription: bytes
    assignment: bytes


@dataclass(frozen=True)
class GroupRecord:
    protocol_type: str | None
    generation_id: int
    protocol_name: str | None
    leader_id: str | None
    state_timestamp_ms: int | None
    members: tuple[MemberRecord, ...]


class _Writer:
    def __init__(self) -> None:
        self.buf = bytearray()

    def int16(self, v: int) -> None:
        self.buf += struct.pack(">h", v)

    def int32(self, v: int) -> None:
        self.buf += struct.pack(">i", v)

    def int64(self, v: int) -> None:
        self.buf += struct.pack(">q", v)

    def string(self, v: str | None) -> None:
        if v is None:
            self.int32(-1)
            return
        raw = v.encode("utf-8")
        self.int32(len(raw))
        self.buf += raw

    def bytes_(self, v: bytes) -> None:
        self.int32(len(v))
        self.buf += v


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise LogFormatError("truncated group log entry")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return bytes(chunk)

    def int16(self) -> int:
        (v,) = struct.unpack(">h", self._take(2))
        return int(v)

    def int32(self) -> int:
        (v,) = struct.unpack(">i", self._take(4))
        return int(v)

    def int64(self) -> int:
        (v,) = struct.unpack(">q", self._take(8))
        return int(v)

    def string(self) -> str | None:
        n = self.int32()
        if n == -1:
            return None
        try:
            return self._take(n).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LogFormatError("invalid UTF-8 in group log entry") from exc

    def required_string(self) -> str:
        v = self.string()
        if v is None:
            raise LogFormatError("unexpected null string")
        return v

    def bytes_(self) -> bytes:
        return self._take(self.int32())

    def count(self) -> int:
        n = self.int32()
        if n < 0 or n > len(self.data) - self.pos:
            raise LogFormatError("bad element count in group log entry")
        return n


def offset_key(group_id: str, topic: str, partition: int) -> bytes:
    w = _Writer()
    w.int16(OFFSET_KEY_VERSION)
    w.string(group_id)
    w.string(topic)
    w.int32(partition)
    return bytes(w.buf)


def txn_offset_key(group_id: str, topic: str, partition: int, producer_id: int) -> bytes:
    w = _Writer()
    w.int16(TXN_OFFSET_KEY_VERSION)
    w.string(group_id)
    w.string(topic)
    w.int32(partition)
    w.int64(producer_id)
    return bytes(w.buf)


def group_key(group_id: str) -> bytes:
    w = _Writer()
    w.int16(GROUP_KEY_VERSION)
    w.string(group_id)
    return bytes(w.buf)


def decode_key(data: bytes) -> Key:
    r = _Reader(data)
    version = r.int16()
    if version == OFFSET_KEY_VERSION:
        return OffsetKey(r.required_string(), r.required_string(), r.int32())
    if version == GROUP_KEY_VERSION:
        return GroupKey(r.required_string())
    if version == TXN_OFFSET_KEY_VERSION:
        return TxnOffsetKey(r.required_string(), r.required_string(), r.int32(), r.int64())
    if version == CONSUMER_GROUP_KEY_VERSION:
        return ConsumerGroupKey(r.required_string())
    if version == CONSUMER_MEMBER_KEY_VERSION:
        return ConsumerMemberKey(r.required_string(), r.required_string())
    if version == TARGET_ASSIGNMENT_METADATA_KEY_VERSION:
        return TargetAssignmentMetadataKey(r.required_string())
    if version == TARGET_ASSIGNMENT_MEMBER_KEY_VERSION:
        return TargetAssignmentMemberKey(r.required_string(), r.required_string())
    if version == CURRENT_ASSIGNMENT_KEY_VERSION:
        return CurrentAssignmentKey(r.required_string(), r.required_string())
    if version == GROUP_CONFIG_KEY_VERSION:
        return GroupConfigKey(r.required_string())
    if version == SHARE_GROUP_KEY_VERSION:
        return ShareGroupKey(r.required_string())
    if version == SHARE_MEMBER_KEY_VERSION:
        return ShareMemberKey(r.required_string(), r.required_string())
    if version == SHARE_ASSIGNMENT_KEY_VERSION:
        return ShareAssignmentKey(r.required_string(), r.required_string())
    raise LogFormatError(f"unknown group log key version {version}")


def _key(version: int, *parts: str) -> bytes:
    w = _Writer()
    w.int16(version)
    for part in parts:
        w.string(part)
    return bytes(w.buf)


def consumer_group_key(group_id: str) -> bytes:
    return _key(CONSUMER_GROUP_KEY_VERSION, group_id)


def consumer_member_key(group_id: str, member_id: str) -> bytes:
    return _key(CONSUMER_MEMBER_KEY_VERSION, group_id, member_id)


def target_assignment_metadata_key(group_id: str) -> bytes:
    return _key(TARGET_ASSIGNMENT_METADATA_KEY_VERSION, group_id)


def target_assignment_member_key(group_id: str, member_id: str) -> bytes:
    return _key(TARGET_ASSIGNMENT_MEMBER_KEY_VERSION, group_id, member_id)


def current_assignment_key(group_id: str, member_id: str) -> bytes:
    return _key(CURRENT_ASSIGNMENT_KEY_VERSION, group_id, member_id)


def group_config_key(group_id: str) -> bytes:
    return _key(GROUP_CONFIG_KEY_VERSION, group_id)


def share_group_key(group_id: str) -> bytes:
    return _key(SHARE_GROUP_KEY_VERSION, group_id)


def share_member_key(group_id: str, member_id: str) -> bytes:
    return _key(SHARE_MEMBER_KEY_VERSION, group_id, member_id)


def share_assignment_key(group_id: str, member_id: str) -> bytes:
    return _key(SHARE_ASSIGNMENT_KEY_VERSION, group_id, member_id)


def _record_writer() -> _Writer:
    w = _Writer()
    w.int16(RECORD_VALUE_VERSION)
    return w


def _record_reader(data: bytes, what: str) -> _Reader:
    r = _Reader(data)
    version = r.int16()
    if version != RECORD_VALUE_VERSION:
        raise LogFormatError(f"unknown {what} value version {version}")
    return r


def _done(r: _Reader, what: str) -> None:
    if r.pos != len(r.data):
        raise LogFormatError(f"trailing bytes after {what} value")


def _write_partitions(w: _Writer, partitions: Mapping[uuid.UUID, Iterable[int]]) -> None:
    items = [(t, sorted(ps)) for t, ps in partitions.items()]
    w.int32(len(items))
    for topic_id, parts in items:
        w.buf += topic_id.bytes
        w.int32(len(parts))
        for p in parts:
            w.int32(p)


def _read_partitions(r: _Reader) -> dict[uuid.UUID, frozenset[int]]:
    out: dict[uuid.UUID, frozenset[int]] = {}
    for _ in range(r.count()):
        topic_id = uuid.UUID(bytes=r._take(16))
        out[topic_id] = frozenset(r.int32() for _ in range(r.count()))
    return out


def consumer_group_value(epoch: int, metadata_hash: int) -> bytes:
    w = _record_writer()
    w.int32(epoch)
    w.int64(metadata_hash)
    return bytes(w.buf)


def decode_consumer_group_value(data: bytes) -> tuple[int, int]:
    r = _record_reader(data, "consumer group")
    epoch, metadata_hash = r.int32(), r.int64()
    _done(r, "consumer group")
    return epoch, metadata_hash


def consumer_member_value(rec: ConsumerMemberRecord) -> bytes:
    w = _record_writer()
    w.string(rec.instance_id)
    w.string(rec.rack_id)
    w.string(rec.client_id)
    w.string(rec.client_host)
    w.int32(len(rec.subscribed_topic_names))
    for t in rec.subscribed_topic_names:
        w.string(t)
    w.string(rec.subscribed_topic_regex)
    w.string(rec.server_assignor)
    w.int32(rec.rebalance_timeout_ms)
    w.int32(-1 if rec.classic_session_timeout_ms is None else rec.classic_session_timeout_ms)
    w.int32(len(rec.classic_protocols))
    for name, metadata in rec.classic_protocols:
        w.string(name)
        w.bytes_(metadata)
    return bytes(w.buf)


def decode_consumer_member_value(data: bytes) -> ConsumerMemberRecord:
    r = _record_reader(data, "consumer member")
    instance_id, rack_id = r.string(), r.string()
    client_id, client_host = r.required_string(), r.required_string()
    topics = tuple(r.required_string() for _ in range(r.count()))
    regex = r.required_string()
    assignor = r.string()
    rebalance_timeout = r.int32()
    session_timeout = r.int32()
    protocols = tuple((r.required_string(), r.bytes_()) for _ in range(r.count()))
    _done(r, "consumer member")
    return ConsumerMemberRecord(
        instance_id,
        rack_id,
        client_id,
        client_host,
        topics,
        regex,
        assignor,
        rebalance_timeout,
        None if session_timeout < 0 else session_timeout,
        protocols,
    )


def target_assignment_metadata_value(epoch: int) -> bytes:
    w = _record_writer()
    w.int32(epoch)
    return bytes(w.buf)


def decode_target_assignment_metadata_value(data: bytes) -> int:
    r = _record_reader(data, "target assignment epoch")
    epoch = r.int32()
    _done(r, "target assignment epoch")
    return epoch


def partitions_value(partitions: Mapping[uuid.UUID, Iterable[int]]) -> bytes:
    w = _record_writer()
    _write_partitions(w, partitions)
    return bytes(w.buf)


def decode_partitions_value(data: bytes) -> dict[uuid.UUID, frozenset[int]]:
    r = _record_reader(data, "target assignment")
    out = _read_partitions(r)
    _done(r, "target assignment")
    return out


def current_assignment_value(rec: CurrentAssignmentRecord) -> bytes:
    w = _record_writer()
    w.int32(rec.member_epoch)
    w.int32(rec.previous_member_epoch)
    w.buf += struct.pack(">b", rec.state)
    _write_partitions(w, rec.assigned)
    _write_partitions(w, rec.pending_revocation)
    return bytes(w.buf)


def decode_current_assignment_value(data: bytes) -> CurrentAssignmentRecord:
    r = _record_reader(data, "current assignment")
    epoch, previous = r.int32(), r.int32()
    (state,) = struct.unpack(">b", r._take(1))
    assigned = _read_partitions(r)
    pending = _read_partitions(r)
    _done(r, "current assignment")
    return CurrentAssignmentRecord(epoch, previous, int(state), assigned, pending)


def group_config_value(configs: Mapping[str, str]) -> bytes:
    w = _record_writer()
    w.int32(len(configs))
    for name, value in sorted(configs.items()):
        w.string(name)
        w.string(value)
    return bytes(w.buf)


def decode_group_config_value(data: bytes) -> dict[str, str]:
    r = _record_reader(data, "group config")
    out = {r.required_string(): r.required_string() for _ in range(r.count())}
    _done(r, "group config")
    return out


def offset_value(om: OffsetAndMetadata) -> bytes:
    w = _Writer()
    w.int16(OFFSET_VALUE_VERSION)
    w.int64(om.offset)
    w.int32(om.leader_epoch)
    w.string(om.metadata)
    w.int64(om.commit_timestamp_ms)
    w.int64(-1 if om.expire_timestamp_ms is None else om.expire_timestamp_ms)
    return bytes(w.buf)


_OFFSET_HEAD = struct.Struct(">hqii")  # version, offset, leader epoch, metadata length
_OFFSET_TAIL = struct.Struct(">qq")  # commit time, expire time


def decode_offset_value(data: bytes) -> OffsetAndMetadata:
    try:
        version, offset, epoch, n = _OFFSET_HEAD.unpack_from(data, 0)
        if version != OFFSET_VALUE_VERSION:
            raise LogFormatError(f"unknown offset value version {version}")
        pos = _OFFSET_HEAD.size
        metadata: str | None = None
        if n >= 0:
            if pos + n > len(data):
                raise LogFormatError("truncated offset value")
            metadata = data[pos : pos + n].decode("utf-8")
            pos += n
        elif n != -1:
            raise LogFormatError("bad metadata length")
        commit_ts, expire_ts = _OFFSET_TAIL.unpack_from(data, pos)
        if pos + _OFFSET_TAIL.size != len(data):
            raise LogFormatError("trailing bytes after offset value")
    except (struct.error, UnicodeDecodeError) as exc:
        raise LogFormatError(f"bad offset value: {exc}") from None
    return OffsetAndMetadata(offset, epoch, metadata, commit_ts, None if expire_ts < 0 else expire_ts)


def group_value(rec: GroupRecord) -> bytes:
    w = _Writer()
    w.int16(GROUP_VALUE_VERSION)
    w.string(rec.protocol_type)
    w.int32(rec.generation_id)
    w.string(rec.protocol_name)
    w.string(rec.leader_id)
    w.int64(-1 if rec.state_timestamp_ms is None else rec.state_timestamp_ms)
    w.int32(len(rec.members))
    for m in rec.members:
        w.string(m.member_id)
        w.string(m.group_instance_id)
        w.string(m.client_id)
        w.string(m.client_host)
        w.int32(m.rebalance_timeout_ms)
        w.int32(m.session_timeout_ms)
        w.bytes_(m.subscription)
        w.bytes_(m.assignment)
    return bytes(w.buf)


def decode_group_value(data: bytes) -> GroupRecord:
    r = _Reader(data)
    version = r.int16()
    if version != GROUP_VALUE_VERSION:
        raise LogFormatError(f"unknown group value version {version}")
    protocol_type = r.string()
    generation = r.int32()
    protocol_name = r.string()
    leader = r.string()
    ts = r.int64()
    count = r.int32()
    if count < 0:
        raise LogFormatError("negative member count")
    members = []
    for _ in range(count):
        members.append(
            MemberRecord(
                member_id=r.required_string(),
                group_instance_id=r.string(),
                client_id=r.required_string(),
                client_host=r.required_string(),
                rebalance_timeout_ms=r.int32(),
                session_timeout_ms=r.int32(),
                subscription=r.bytes_(),
                assignment=r.bytes_(),
            )
        )
    return GroupRecord(
        protocol_type, generation, protocol_name, leader, None if ts < 0 else ts, tuple(members)
    )


@dataclass(frozen=True)
class ShareMemberRecord:
    rack_id: str | None
    client_id: str
    client_host: str
    subscribed_topic_names: tuple[str, ...]


@dataclass(frozen=True)
class ShareAssignmentRecord:
    member_epoch: int
    previous_member_epoch: int
    assigned: Mapping[uuid.UUID, frozenset[int]]


def share_group_value(epoch: int, metadata_hash: int, assignment_epoch: int) -> bytes:
    w = _record_writer()
    w.int32(epoch)
    w.int64(metadata_hash)
    w.int32(assignment_epoch)
    return bytes(w.buf)


def decode_share_group_value(data: bytes) -> tuple[int, int, int]:
    r = _record_reader(data, "share group")
    epoch, metadata_hash, assignment_epoch = r.int32(), r.int64(), r.int32()
    _done(r, "share group")
    return epoch, metadata_hash, assignment_epoch


def share_member_value(rec: ShareMemberRecord) -> bytes:
    w = _record_writer()
    w.string(rec.rack_id)
    w.string(rec.client_id)
    w.string(rec.client_host)
    w.int32(len(rec.subscribed_topic_names))
    for t in rec.subscribed_topic_names:
        w.string(t)
    return bytes(w.buf)


def decode_share_member_value(data: bytes) -> ShareMemberRecord:
    r = _record_reader(data, "share member")
    rack = r.string()
    client_id, client_host = r.required_string(), r.required_string()
    topics = tuple(r.required_string() for _ in range(r.count()))
    _done(r, "share member")
    return ShareMemberRecord(rack, client_id, client_host, topics)


def share_assignment_value(rec: ShareAssignmentRecord) -> bytes:
    w = _record_writer()
    w.int32(rec.member_epoch)
    w.int32(rec.previous_member_epoch)
    _write_partitions(w, rec.assigned)
    return bytes(w.buf)


def decode_share_assignment_value(data: bytes) -> ShareAssignmentRecord:
    r = _record_reader(data, "share assignment")
    epoch, previous = r.int32(), r.int32()
    assigned = _read_partitions(r)
    _done(r, "share assignment")
    return ShareAssignmentRecord(epoch, previous, assigned)
