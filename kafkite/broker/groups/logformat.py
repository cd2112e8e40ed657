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
Strings are int32-length-prefixed UTF-8 (-1: null); bytes are int32-length-prefixed.
A key with a null value (tombstone) deletes what the key names.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

OFFSET_KEY_VERSION = 1
GROUP_KEY_VERSION = 2
TXN_OFFSET_KEY_VERSION = 3
OFFSET_VALUE_VERSION = 0
GROUP_VALUE_VERSION = 0


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


def decode_key(data: bytes) -> OffsetKey | GroupKey | TxnOffsetKey:
    r = _Reader(data)
    version = r.int16()
    if version == OFFSET_KEY_VERSION:
        return OffsetKey(r.required_string(), r.required_string(), r.int32())
    if version == GROUP_KEY_VERSION:
        return GroupKey(r.required_string())
    if version == TXN_OFFSET_KEY_VERSION:
        return TxnOffsetKey(r.required_string(), r.required_string(), r.int32(), r.int64())
    raise LogFormatError(f"unknown group log key version {version}")


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
