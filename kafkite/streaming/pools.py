"""Stream pools: namespaces of streams, each stream a Kafka topic of the one broker.

A pool has an OCID-style id whose random suffix (its *key*) scopes its streams' topics. The one mapping
between (pool, stream name) and the internal Kafka topic name is ``internal_topic_name``; consumer group names
map the same way (``internal_group_id``). Streams of the default pool are plain Kafka topics of the same name,
so stock Kafka clients without SASL see them; other pools' topics are ``__pool.<key>.<name>``.

Stream ids are derived from the topic id (``ocid1.stream.oc1..<topic uuid hex>``), so a topic created through
Kafka is a stream too. What Kafka does not keep (compartment, tags, creation time, pools themselves, deleted
resources for a while) lives in ``stream-pools.json`` in the data directory, written atomically.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from kafkite.broker.core import Broker
from kafkite.clock import now_ms
from kafkite.protocol.errors import KafkaProtocolError

log = logging.getLogger("kafkite.streaming")

POOL_PREFIX = "__pool."
POOL_KEY_LENGTH = 20
_KEY_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
POOL_OCID_PREFIX = "ocid1.streampool.oc1.."
STREAM_OCID_PREFIX = "ocid1.stream.oc1.."
WORK_REQUEST_OCID_PREFIX = "ocid1.streamworkrequest.oc1.."
DEFAULT_POOL_NAME = "DefaultPool"
DEFAULT_COMPARTMENT = "ocid1.compartment.oc1..kafkite"
REGISTRY_FILE = "stream-pools.json"
MAX_STREAM_NAME = 249 - len(POOL_PREFIX) - POOL_KEY_LENGTH - 1
DELETED_KEPT = 1000  # deleted pools and streams remembered (GET answers DELETED) before being forgotten
HOUR_MS = 3_600_000


class CatalogError(Exception):
    """A control-plane request that cannot be done, with OCI's HTTP ``status`` and error ``code``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _new_key() -> str:
    return "".join(secrets.choice(_KEY_ALPHABET) for _ in range(POOL_KEY_LENGTH))


def pool_ocid(key: str) -> str:
    return POOL_OCID_PREFIX + key


def stream_ocid(topic_id: uuid.UUID) -> str:
    return STREAM_OCID_PREFIX + topic_id.hex


def topic_id_of(stream_id: str) -> uuid.UUID | None:
    if not stream_id.startswith(STREAM_OCID_PREFIX):
        return None
    try:
        return uuid.UUID(hex=stream_id[len(STREAM_OCID_PREFIX) :])
    except ValueError:
        return None


@dataclass
class StreamPool:
    id: str
    key: str
    name: str
    compartment_id: str
    time_created_ms: int
    auto_create_topics_enable: bool = False
    num_partitions: int = 1
    log_retention_hours: int = 24
    freeform_tags: dict[str, str] = field(default_factory=dict)
    defined_tags: dict[str, Any] = field(default_factory=dict)
    lifecycle_state: str = "ACTIVE"
    is_default: bool = False


class StreamExtra(TypedDict, total=False):
    """What a stream has beyond its topic, kept in the registry file by topic id."""

    compartment_id: str
    time_created_ms: int
    freeform_tags: dict[str, str]
    defined_tags: dict[str, Any]  # namespace -> key -> value, as the client sent them


class DeletedStream(TypedDict):
    """A deleted stream's last view (GetStream answers it as DELETED for a while)."""

    id: str
    name: str
    pool_id: str
    partitions: int
    retention_hours: int
    compartment_id: str
    time_created_ms: int
    freeform_tags: dict[str, str]
    defined_tags: dict[str, Any]


def internal_topic_name(pool: StreamPool, stream: str) -> str:
    """THE mapping from a pool's stream name to the Kafka topic that stores it."""
    if pool.is_default:
        return stream
    return f"{POOL_PREFIX}{pool.key}.{stream}"


def internal_group_id(pool: StreamPool, group: str) -> str:
    """Consumer group names are scoped to a pool exactly as stream names are."""
    return internal_topic_name(pool, group)


def split_internal_name(name: str) -> tuple[str | None, str]:
    """(pool key or None for the default pool, stream name) of an internal topic or group name."""
    if name.startswith(POOL_PREFIX):
        rest = name[len(POOL_PREFIX) :]
        key, dot, stream = rest.partition(".")
        if dot and len(key) == POOL_KEY_LENGTH:
            return key, stream
    return None, name


@dataclass
class StreamView:
    """A stream as the control plane shows it."""

    id: str
    name: str
    topic: str
    pool: StreamPool
    partitions: int
    retention_hours: int
    compartment_id: str
    time_created_ms: int
    lifecycle_state: str = "ACTIVE"
    freeform_tags: dict[str, str] = field(default_factory=dict)
    defined_tags: dict[str, Any] = field(default_factory=dict)


@dataclass
class WorkRequest:
    id: str
    operation_type: str
    compartment_id: str
    entity_type: str
    action_type: str
    identifier: str
    entity_uri: str
    time_ms: int


class StreamCatalog:
    """Pools, the extra metadata of streams, deleted resources and work requests of one broker."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._loaded = False
        self._pools: dict[str, StreamPool] = {}  # by key
        self._default: StreamPool | None = None
        self._stream_meta: dict[str, StreamExtra] = {}  # by topic id (hex)
        self._deleted_streams: dict[str, DeletedStream] = {}  # by stream id
        self._work_requests: dict[str, WorkRequest] = {}

    # ------------------------------------------------------------------ persistence

    @property
    def _path(self) -> Path:
        return self.broker.config.data_dir / REGISTRY_FILE

    def _durable(self) -> bool:
        return bool(self.broker.config["storage.engine"] == "file")

    def ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self._durable() and self._path.exists():
            try:
                data = json.loads(self._path.read_text())
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
                for p in data.get("pools", []):
                    pool = StreamPool(**p)
                    self._pools[pool.key] = pool
                    if pool.is_default:
                        self._default = pool
                self._stream_meta = dict(data.get("streams", {}))
                self._deleted_streams = dict(data.get("deleted_streams", {}))
            except (OSError, ValueError, TypeError) as e:
                raise RuntimeError(f"cannot read the stream pool registry {self._path}: {e}") from e
        if self._default is None:
            key = _new_key()
            self._default = StreamPool(
                id=pool_ocid(key),
                key=key,
                name=DEFAULT_POOL_NAME,
                compartment_id=DEFAULT_COMPARTMENT,
                time_created_ms=now_ms(),
                is_default=True,
            )
            self._pools[key] = self._default
            self._save()

    def _save(self) -> None:
        if not self._durable():
            return
        data = {
            "pools": [asdict(p) for p in self._pools.values()],
            "streams": self._stream_meta,
            "deleted_streams": self._deleted_streams,
        }
        path = self._path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps(data, indent=1, sort_keys=True))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    # ------------------------------------------------------------------ pools

    @property
    def default_pool(self) -> StreamPool:
        self.ensure_loaded()
        assert self._default is not None
        self._sync_default_settings(self._default)
        return self._default

    def _sync_default_settings(self, pool: StreamPool) -> None:
        """The default pool's Kafka settings are the broker's own."""
        cfg = self.broker.config
        pool.auto_create_topics_enable = bool(cfg["auto.create.topics.enable"])
        pool.num_partitions = int(cfg["num.partitions"])
        pool.log_retention_hours = max(1, int(cfg["log.retention.ms"]) // HOUR_MS)

    def pools(self) -> list[StreamPool]:
        self.ensure_loaded()
        out = list(self._pools.values())
        for p in out:
            if p.is_default:
                self._sync_default_settings(p)
        return out

    def only_default_pool(self) -> bool:
        """True while the default pool is the only one: no name needs mapping or fencing."""
        self.ensure_loaded()
        return len(self._pools) <= 1

    def pool(self, pool_id: str) -> StreamPool | None:
        """A pool by its OCID (deleted pools included, in state DELETED)."""
        if not pool_id.startswith(POOL_OCID_PREFIX):
            return None
        return self.pool_by_key(pool_id[len(POOL_OCID_PREFIX) :])

    def pool_by_key(self, key: str | None) -> StreamPool | None:
        self.ensure_loaded()
        if key is None:
            return self.default_pool
        pool = self._pools.get(key)
        if pool is not None and pool.is_default:
            self._sync_default_settings(pool)
        return pool

    def live_pool(self, pool_id: str) -> StreamPool:
        pool = self.pool(pool_id)
        if pool is None or pool.lifecycle_state != "ACTIVE":
            raise CatalogError(404, "NotAuthorizedOrNotFound", f"stream pool {pool_id} not found")
        return pool

    def pool_of_topic(self, topic: str) -> StreamPool | None:
        key, _ = split_internal_name(topic)
        pool = self.pool_by_key(key)
        if pool is None or pool.lifecycle_state != "ACTIVE":
            return None
        return pool

    def create_pool(
        self,
        name: str,
        compartment_id: str,
        *,
        auto_create_topics_enable: bool | None = None,
        num_partitions: int | None = None,
        log_retention_hours: int | None = None,
        freeform_tags: dict[str, str] | None = None,
        defined_tags: dict[str, Any] | None = None,
    ) -> StreamPool:
        self.ensure_loaded()
        if not name or len(name) > 255:
            raise CatalogError(400, "InvalidParameter", "name must be 1 to 255 characters")
        for p in self._pools.values():
            if p.name == name and p.compartment_id == compartment_id and p.lifecycle_state == "ACTIVE":
                raise CatalogError(
                    409, "Conflict", f"a stream pool named {name!r} already exists in this compartment"
                )
        key = _new_key()
        pool = StreamPool(
            id=pool_ocid(key),
            key=key,
            name=name,
            compartment_id=compartment_id,
            time_created_ms=now_ms(),
            auto_create_topics_enable=bool(auto_create_topics_enable),
            num_partitions=num_partitions if num_partitions and num_partitions > 0 else 1,
            log_retention_hours=log_retention_hours
            if log_retention_hours and log_retention_hours > 0
            else 24,
            freeform_tags=dict(freeform_tags or {}),
            defined_tags=dict(defined_tags or {}),
        )
        self._pools[key] = pool
        self._save()
        log.info("created stream pool %s (%s)", pool.name, pool.id)
        return pool

    def update_pool(
        self,
        pool: StreamPool,
        *,
        name: str | None = None,
        auto_create_topics_enable: bool | None = None,
        num_partitions: int | None = None,
        log_retention_hours: int | None = None,
        freeform_tags: dict[str, str] | None = None,
        defined_tags: dict[str, Any] | None = None,
    ) -> StreamPool:
        if name is not None:
            pool.name = name
        if pool.is_default:
            if auto_create_topics_enable is not None:
                self.broker.set_dynamic_config(
                    "auto.create.topics.enable", "true" if auto_create_topics_enable else "false"
                )
            if num_partitions is not None:
                self.broker.set_dynamic_config("num.partitions", str(num_partitions))
            if log_retention_hours is not None:
                self.broker.set_dynamic_config("log.retention.ms", str(log_retention_hours * HOUR_MS))
        else:
            if auto_create_topics_enable is not None:
                pool.auto_create_topics_enable = auto_create_topics_enable
            if num_partitions is not None:
                pool.num_partitions = num_partitions
            if log_retention_hours is not None:
                pool.log_retention_hours = log_retention_hours
        if freeform_tags is not None:
            pool.freeform_tags = dict(freeform_tags)
        if defined_tags is not None:
            pool.defined_tags = dict(defined_tags)
        self._save()
        return pool

    def delete_pool(self, pool: StreamPool) -> None:
        if pool.is_default:
            raise CatalogError(409, "IncorrectState", "the default stream pool cannot be deleted")
        for s in self.streams(pool):
            self.delete_stream(s)
        pool.lifecycle_state = "DELETED"
        deleted = [p for p in self._pools.values() if p.lifecycle_state == "DELETED"]
        for old in deleted[:-DELETED_KEPT]:
            del self._pools[old.key]
        self._save()
        log.info("deleted stream pool %s (%s)", pool.name, pool.id)

    # ------------------------------------------------------------------ streams

    def _view(self, topic: str) -> StreamView | None:
        meta = self.broker.topic(topic)
        if meta is None:
            return None
        pool = self.pool_of_topic(topic)
        if pool is None:
            return None
        _, name = split_internal_name(topic)
        extra = self._stream_meta.get(meta.topic_id.hex, {})
        cfg = self.broker.storage.topic_config(topic)
        hours = max(1, -(-cfg.retention_ms // HOUR_MS)) if cfg.retention_ms > 0 else 24 * 365
        return StreamView(
            id=stream_ocid(meta.topic_id),
            name=name,
            topic=topic,
            pool=pool,
            partitions=meta.partitions,
            retention_hours=hours,
            compartment_id=str(extra.get("compartment_id", pool.compartment_id)),
            time_created_ms=int(extra.get("time_created_ms", 0)),
            freeform_tags=dict(extra.get("freeform_tags", {})),
            defined_tags=dict(extra.get("defined_tags", {})),
        )

    def streams(self, pool: StreamPool | None = None) -> list[StreamView]:
        """Live streams, of one pool or of all pools."""
        self.ensure_loaded()
        out = []
        for topic in sorted(self.broker.topics()):
            if topic.startswith("__") and not topic.startswith(POOL_PREFIX):
                continue  # internal topics (__consumer_offsets, ...)
            view = self._view(topic)
            if view is None or (pool is not None and view.pool.key != pool.key):
                continue
            out.append(view)
        return out

    def stream(self, stream_id: str) -> StreamView | None:
        """A live stream by OCID."""
        self.ensure_loaded()
        tid = topic_id_of(stream_id)
        if tid is None:
            return None
        meta = self.broker.topic_by_id(tid)
        return self._view(meta.name) if meta is not None else None

    def deleted_stream(self, stream_id: str) -> DeletedStream | None:
        self.ensure_loaded()
        return self._deleted_streams.get(stream_id)

    def deleted_streams(self) -> list[DeletedStream]:
        self.ensure_loaded()
        return list(self._deleted_streams.values())

    def stream_by_name(self, pool: StreamPool, name: str) -> StreamView | None:
        self.ensure_loaded()
        return self._view(internal_topic_name(pool, name))

    def create_stream(
        self,
        pool: StreamPool,
        name: str,
        partitions: int,
        retention_hours: int | None,
        compartment_id: str | None,
        *,
        freeform_tags: dict[str, str] | None = None,
        defined_tags: dict[str, Any] | None = None,
    ) -> StreamView:

        self.ensure_loaded()
        if not name or len(name) > MAX_STREAM_NAME:
            raise CatalogError(400, "InvalidParameter", f"name must be 1 to {MAX_STREAM_NAME} characters")
        if name.startswith(POOL_PREFIX) or name.startswith("__"):
            raise CatalogError(400, "InvalidParameter", "stream names may not start with '__'")
        if partitions < 1:
            raise CatalogError(400, "InvalidParameter", "partitions must be at least 1")
        topic = internal_topic_name(pool, name)
        if self.broker.topic(topic) is not None:
            raise CatalogError(409, "Conflict", f"a stream named {name!r} already exists in this stream pool")
        configs = {}
        if retention_hours is not None:
            configs["retention.ms"] = str(retention_hours * HOUR_MS)
        elif not pool.is_default:
            configs["retention.ms"] = str(pool.log_retention_hours * HOUR_MS)
        try:
            meta = self.broker.create_topic(topic, partitions, configs)
        except KafkaProtocolError as e:
            raise CatalogError(400, "InvalidParameter", str(e) or e.code.name) from None
        self._stream_meta[meta.topic_id.hex] = {
            "compartment_id": compartment_id or pool.compartment_id,
            "time_created_ms": now_ms(),
            "freeform_tags": dict(freeform_tags or {}),
            "defined_tags": dict(defined_tags or {}),
        }
        self._save()
        view = self._view(topic)
        assert view is not None
        return view

    def ensure_topic(self, pool: StreamPool, topic: str) -> bool:
        """Auto-create ``topic`` (an internal name of ``pool``) with the pool's Kafka settings, if allowed."""
        if self.broker.topic(topic) is not None:
            return True
        if not pool.auto_create_topics_enable:
            return False

        try:
            self.broker.create_topic(
                topic, pool.num_partitions, {"retention.ms": str(pool.log_retention_hours * HOUR_MS)}
            )
        except KafkaProtocolError:
            return False
        return True

    def update_stream(
        self,
        view: StreamView,
        *,
        freeform_tags: dict[str, str] | None = None,
        defined_tags: dict[str, Any] | None = None,
        compartment_id: str | None = None,
    ) -> StreamView:
        """Change a stream's tags or compartment (the view given is changed too, except its compartment)."""
        meta = self.broker.topic(view.topic)
        assert meta is not None
        extra = self._stream_meta.setdefault(
            meta.topic_id.hex,
            {"compartment_id": view.compartment_id, "time_created_ms": view.time_created_ms},
        )
        if compartment_id is not None:
            extra["compartment_id"] = compartment_id
        if freeform_tags is not None:
            extra["freeform_tags"] = dict(freeform_tags)
            view.freeform_tags = dict(freeform_tags)
        if defined_tags is not None:
            extra["defined_tags"] = dict(defined_tags)
            view.defined_tags = dict(defined_tags)
        self._save()
        return view

    def delete_stream(self, view: StreamView) -> None:
        meta = self.broker.topic(view.topic)
        if meta is None:
            return
        self.broker.storage.delete_topic(view.topic)
        for i in range(meta.partitions):
            self.broker.waiters.notify(view.topic, i)
        self._stream_meta.pop(meta.topic_id.hex, None)
        self._deleted_streams[view.id] = {
            "id": view.id,
            "name": view.name,
            "pool_id": view.pool.id,
            "partitions": view.partitions,
            "retention_hours": view.retention_hours,
            "compartment_id": view.compartment_id,
            "time_created_ms": view.time_created_ms,
            "freeform_tags": view.freeform_tags,
            "defined_tags": view.defined_tags,
        }
        while len(self._deleted_streams) > DELETED_KEPT:
            del self._deleted_streams[next(iter(self._deleted_streams))]
        self._save()
        log.info("deleted stream %s (%s)", view.name, view.id)

    # ------------------------------------------------------------------ work requests

    def record_work_request(
        self, operation: str, compartment_id: str, entity_type: str, action: str, identifier: str, uri: str
    ) -> WorkRequest:
        wr = WorkRequest(
            id=WORK_REQUEST_OCID_PREFIX + _new_key(),
            operation_type=operation,
            compartment_id=compartment_id,
            entity_type=entity_type,
            action_type=action,
            identifier=identifier,
            entity_uri=uri,
            time_ms=now_ms(),
        )
        self._work_requests[wr.id] = wr
        while len(self._work_requests) > DELETED_KEPT:
            del self._work_requests[next(iter(self._work_requests))]
        return wr

    def work_request(self, wr_id: str) -> WorkRequest | None:
        return self._work_requests.get(wr_id)

    def work_requests(self) -> list[WorkRequest]:
        return list(self._work_requests.values())


def catalog_of(broker: Broker) -> StreamCatalog:
    """The broker's stream catalogue (created on first use, kept on the broker)."""
    return broker.component(StreamCatalog, lambda: StreamCatalog(broker))
