"""REST consumer groups: partitions reserved across a group's instances, released on timeout, and committed
offsets shared with Kafka consumer groups of the same (pool-scoped) name.

Committed offsets are Kafka's: the next offset to consume. They are kept by the broker's group coordinator
when one is wired (``broker.groups``), so a Kafka consumer group and a REST group of the same name share them;
without a coordinator they are kept in ``stream-group-offsets.json`` in the data directory.
"""

from __future__ import annotations

import json
import logging
import math
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kafkite.broker.core import Broker
from kafkite.clock import now_ms
from kafkite.protocol.errors import ErrorCode

log = logging.getLogger("kafkite.streaming")

OFFSETS_FILE = "stream-group-offsets.json"
DEFAULT_TIMEOUT_MS = 30_000
CLIENT_ID = "oci-streaming-rest"


class Committed(Protocol):
    @property
    def offset(self) -> int: ...


class GroupOffsets(Protocol):
    """What the REST groups use of the broker's group coordinator: its groups and their committed offsets.

    Requests and responses are the decoded Kafka messages (OffsetCommit's), dictionaries as on the wire."""

    def groups_overview(self) -> list[dict[str, Any]]: ...

    def committed_offsets(self, group_id: str) -> Mapping[tuple[str, int], Committed]: ...

    async def offset_commit(
        self, req: dict[str, Any], version: int, *, client_id: str, client_host: str
    ) -> dict[str, Any]: ...


class GroupError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class OffsetStore:
    """Committed offsets by (group id, topic, partition): the coordinator's, or a JSON file without one."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._file: dict[str, dict[str, dict[str, int]]] | None = None

    def _coordinator(self) -> GroupOffsets | None:
        coordinator: GroupOffsets | None = self.broker.groups
        return coordinator

    def _load_file(self) -> dict[str, dict[str, dict[str, int]]]:
        if self._file is None:
            self._file = {}
            path = self.broker.config.data_dir / OFFSETS_FILE
            if self.broker.config["storage.engine"] == "file" and path.exists():
                try:
                    data = json.loads(path.read_text())
                except (OSError, ValueError) as e:
                    log.warning("ignoring %s: %s", path, e)
                else:
                    if isinstance(data, dict):
                        self._file = data
                    else:
                        log.warning("ignoring %s: not a JSON object", path)
        return self._file

    def _save_file(self) -> None:
        if self.broker.config["storage.engine"] != "file" or self._file is None:
            return
        path = self.broker.config.data_dir / OFFSETS_FILE
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps(self._file, sort_keys=True))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def committed(self, group_id: str, topic: str) -> dict[int, int]:
        coord = self._coordinator()
        if coord is not None:
            return {
                p: om.offset
                for (t, p), om in coord.committed_offsets(group_id).items()
                if t == topic and om.offset >= 0
            }
        per_topic = self._load_file().get(group_id, {}).get(topic, {})
        return {int(p): int(o) for p, o in per_topic.items()}

    def groups_of(self, topic: str) -> set[str]:
        """Group ids holding committed offsets of ``topic``."""
        coord = self._coordinator()
        if coord is not None:
            return {
                g["group_id"]
                for g in coord.groups_overview()
                if any(t == topic for t, _ in coord.committed_offsets(g["group_id"]))
            }
        return {g for g, topics in self._load_file().items() if topic in topics}

    async def commit(self, group_id: str, topic: str, offsets: dict[int, int]) -> None:
        if not offsets:
            return
        coord = self._coordinator()
        if coord is None:
            data = self._load_file()
            data.setdefault(group_id, {}).setdefault(topic, {}).update(
                {str(p): o for p, o in offsets.items()}
            )
            self._save_file()
            return
        req = {
            "group_id": group_id,
            "generation_id_or_member_epoch": -1,
            "generation_id": -1,
            "member_id": "",
            "group_instance_id": None,
            "retention_time_ms": -1,
            "topics": [
                {
                    "name": topic,
                    "partitions": [
                        {
                            "partition_index": p,
                            "committed_offset": o,
                            "committed_leader_epoch": -1,
                            "committed_metadata": "",
                        }
                        for p, o in sorted(offsets.items())
                    ],
                }
            ],
        }
        resp = await coord.offset_commit(req, 8, client_id=CLIENT_ID, client_host="")
        codes = {p["error_code"] for t in resp["topics"] for p in t["partitions"]}
        codes.discard(0)
        if codes:
            names = ", ".join(ErrorCode(c).name for c in sorted(codes))
            raise GroupError(
                409,
                "Conflict",
                f"cannot commit offsets of group {group_id!r}: {names} (is a Kafka consumer group using it?)",
            )


@dataclass
class Reservation:
    instance: str
    until_ms: int


@dataclass
class RestGroup:
    topic: str
    group_id: str
    partitions: int
    start_type: str = "TRIM_HORIZON"
    start_time_ms: int = 0
    reservations: dict[int, Reservation] = field(default_factory=dict)
    instances: dict[str, int] = field(default_factory=dict)  # instance -> last seen + its timeout
    rotation: int = 0


class GroupManager:
    """The REST groups of one broker (reservations are in memory; offsets are committed durably)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.offsets = OffsetStore(broker)
        self._groups: dict[tuple[str, str], RestGroup] = {}

    def get(self, topic: str, group_id: str, partitions: int) -> RestGroup:
        g = self._groups.get((topic, group_id))
        if g is None:
            g = RestGroup(topic, group_id, partitions)
            self._groups[(topic, group_id)] = g
        g.partitions = partitions
        return g

    def known(self, topic: str, group_id: str) -> bool:
        return (topic, group_id) in self._groups or group_id in self.offsets.groups_of(topic)

    def group_count(self, topic: str) -> int:
        names = {g for (t, g) in self._groups if t == topic} | self.offsets.groups_of(topic)
        return len(names)

    def forget_topic(self, topic: str) -> None:
        for k in [k for k in self._groups if k[0] == topic]:
            del self._groups[k]

    @staticmethod
    def new_instance_name() -> str:
        return "instance-" + uuid.uuid4().hex[:12]

    def _expire(self, g: RestGroup, now: int) -> None:
        for p in [p for p, r in g.reservations.items() if r.until_ms < now or p >= g.partitions]:
            del g.reservations[p]
        for i in [i for i, t in g.instances.items() if t < now]:
            del g.instances[i]

    def reserve(self, g: RestGroup, instance: str, timeout_ms: int) -> list[int]:
        """Extend ``instance``'s reservations and give it its fair share of the group's partitions."""
        now = now_ms()
        self._expire(g, now)
        until = now + timeout_ms
        g.instances[instance] = until
        mine = sorted(p for p, r in g.reservations.items() if r.instance == instance)
        for p in mine:
            g.reservations[p].until_ms = until
        share = math.ceil(g.partitions / max(1, len(g.instances)))
        free = [p for p in range(g.partitions) if p not in g.reservations]
        while len(mine) < share and free:
            p = free.pop(0)
            g.reservations[p] = Reservation(instance, until)
            mine.append(p)
        if len(mine) > share and not free:
            held = {i: 0 for i in g.instances}
            for r in g.reservations.values():
                held[r.instance] = held.get(r.instance, 0) + 1
            if any(n < g.partitions // len(g.instances) for i, n in held.items() if i != instance):
                for p in mine[share:]:
                    del g.reservations[p]
                mine = mine[:share]
        return sorted(mine)

    def heartbeat(self, g: RestGroup, instance: str, timeout_ms: int) -> None:
        now = now_ms()
        self._expire(g, now)
        until = now + timeout_ms
        g.instances[instance] = until
        for r in g.reservations.values():
            if r.instance == instance:
                r.until_ms = until

    def reserved_by(self, g: RestGroup, instance: str) -> set[int]:
        self._expire(g, now_ms())
        return {p for p, r in g.reservations.items() if r.instance == instance}
