"""The consumer protocol embedded in classic JoinGroup/SyncGroup: subscriptions and assignments.

A classic member of the ``consumer`` protocol type sends a ConsumerProtocolSubscription as its protocol
metadata and gets a ConsumerProtocolAssignment from SyncGroup. Both start with an int16 version and use
classic (non-flexible) encoding:

Subscription v0: topics [string], user_data nullable bytes; v1+: owned_partitions [topic string,
partitions [int32]]; v2+: generation_id int32; v3+: rack_id nullable string.
Assignment v0-v3: assigned_partitions [topic string, partitions [int32]], user_data nullable bytes.

A newer version than these is read as the newest known one (fields added later are ignored), as Kafka does.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

SUBSCRIPTION_MAX_VERSION = 3
ASSIGNMENT_MAX_VERSION = 3


class EmbeddedProtocolError(ValueError):
    """Metadata or an assignment that is not a valid consumer protocol message."""


@dataclass(frozen=True)
class Subscription:
    version: int
    topics: tuple[str, ...]
    user_data: bytes | None = None
    owned_partitions: tuple[tuple[str, tuple[int, ...]], ...] = ()
    generation_id: int = -1
    rack_id: str | None = None


@dataclass(frozen=True)
class Assignment:
    partitions: tuple[tuple[str, tuple[int, ...]], ...] = ()
    user_data: bytes | None = field(default=None)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise EmbeddedProtocolError("truncated consumer protocol message")
        (v,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return int(v)

    def string(self, nullable: bool = False) -> str | None:
        n = self.take(">h")
        if n < 0:
            if nullable:
                return None
            raise EmbeddedProtocolError("null string in consumer protocol message")
        if self.pos + n > len(self.data):
            raise EmbeddedProtocolError("truncated consumer protocol message")
        raw = self.data[self.pos : self.pos + n]
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise EmbeddedProtocolError("invalid UTF-8 in consumer protocol message") from None

    def bytes_(self) -> bytes | None:
        n = self.take(">i")
        if n < 0:
            return None
        if self.pos + n > len(self.data):
            raise EmbeddedProtocolError("truncated consumer protocol message")
        raw = self.data[self.pos : self.pos + n]
        self.pos += n
        return bytes(raw)

    def count(self) -> int:
        n = self.take(">i")
        if n < 0 or n > len(self.data):
            raise EmbeddedProtocolError("bad array length in consumer protocol message")
        return n

    def topic_partitions(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        out = []
        for _ in range(self.count()):
            topic = self.string()
            assert topic is not None
            parts = tuple(self.take(">i") for _ in range(self.count()))
            out.append((topic, parts))
        return tuple(out)


def parse_subscription(data: bytes) -> Subscription:
    r = _Reader(bytes(data))
    version = r.take(">h")
    if version < 0:
        raise EmbeddedProtocolError(f"bad subscription version {version}")
    topics = []
    for _ in range(r.count()):
        topic = r.string()
        assert topic is not None
        topics.append(topic)
    user_data = r.bytes_()
    owned: tuple[tuple[str, tuple[int, ...]], ...] = ()
    generation = -1
    rack: str | None = None
    if version >= 1:
        owned = r.topic_partitions()
    if version >= 2:
        generation = r.take(">i")
    if version >= 3:
        rack = r.string(nullable=True)
    return Subscription(version, tuple(topics), user_data, owned, generation, rack)


def subscription_version(data: bytes) -> int:
    """The version a member's subscription is written in (0 when unreadable)."""
    if len(data) < 2:
        return 0
    (version,) = struct.unpack_from(">h", data, 0)
    return max(int(version), 0)


def parse_assignment(data: bytes) -> Assignment:
    """A ConsumerProtocolAssignment; empty bytes (a member that never synced) are an empty assignment."""
    if not data:
        return Assignment()
    r = _Reader(bytes(data))
    version = r.take(">h")
    if version < 0:
        raise EmbeddedProtocolError(f"bad assignment version {version}")
    partitions = r.topic_partitions()
    user_data = r.bytes_() if r.pos < len(r.data) else None
    return Assignment(partitions, user_data)


def _string(value: str) -> bytes:
    raw = value.encode("utf-8")
    return struct.pack(">h", len(raw)) + raw


def serialize_assignment(partitions: dict[str, list[int]], version: int) -> bytes:
    """A ConsumerProtocolAssignment of ``partitions`` (no user data), in ``version`` (at most 3)."""
    out = bytearray(struct.pack(">hi", min(max(version, 0), ASSIGNMENT_MAX_VERSION), len(partitions)))
    for topic, parts in partitions.items():
        out += _string(topic) + struct.pack(">i", len(parts))
        out += b"".join(struct.pack(">i", p) for p in parts)
    out += struct.pack(">i", -1)
    return bytes(out)


def serialize_subscription(
    topics: list[str],
    *,
    version: int = SUBSCRIPTION_MAX_VERSION,
    owned: dict[str, list[int]] | None = None,
    generation_id: int = -1,
    rack_id: str | None = None,
) -> bytes:
    """A ConsumerProtocolSubscription (used to describe consumer-protocol members as classic ones)."""
    out = bytearray(struct.pack(">hi", version, len(topics)))
    for t in topics:
        out += _string(t)
    out += struct.pack(">i", -1)
    if version >= 1:
        owned = owned or {}
        out += struct.pack(">i", len(owned))
        for topic, parts in owned.items():
            out += _string(topic) + struct.pack(">i", len(parts))
            out += b"".join(struct.pack(">i", p) for p in parts)
    if version >= 2:
        out += struct.pack(">i", generation_id)
    if version >= 3:
        out += struct.pack(">h", -1) if rack_id is None else _string(rack_id)
    return bytes(out)
