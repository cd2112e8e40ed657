"""The broker's state and request dispatch: the topic catalogue, partition logs, coordinators, clock."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, TypeVar

from kafkite.clock import now_ms
from kafkite.config import TOPIC_FROM_BROKER, BrokerConfig
from kafkite.log.base import Partition
from kafkite.log.engine import (
    FileStorage,
    InvalidTopicName,
    MemoryStorage,
    Storage,
    TopicMeta,
    check_topic_name,
)
from kafkite.protocol.errors import ErrorCode, KafkaProtocolError
from kafkite.security import Security
from kafkite.security.oauthbearer import JwksValidator, UnsecuredValidator

if TYPE_CHECKING:
    from kafkite.broker.cluster_mode import ClusterMode
    from kafkite.broker.groups.coordinator import GroupCoordinator
    from kafkite.broker.txn.coordinator import TransactionCoordinator
    from kafkite.metrics import BrokerMetrics

log = logging.getLogger("kafkite.broker")
T = TypeVar("T")

DYNAMIC_CONFIG_FILE = "dynamic-broker-configs.json"
DYNAMIC_DEFAULT_CONFIG_FILE = "dynamic-default-broker-configs.json"  # the cluster-wide level (resource "")
LOCK_FILE = ".lock"
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state", "__share_group_state"})
INTERNAL_PREFIXES = ("__queue",)  # the queue mode's message and state logs


def is_internal_topic(name: str) -> bool:
    """Topics the broker keeps for itself: reported as internal and never auto-created."""
    return name in INTERNAL_TOPICS or name.startswith(INTERNAL_PREFIXES)


def validate_topic_name(name: str | None) -> None:
    """Raise INVALID_TOPIC_EXCEPTION unless ``name`` is a legal Kafka topic name."""
    try:
        check_topic_name(name or "")
    except InvalidTopicName as e:
        raise KafkaProtocolError(ErrorCode.INVALID_TOPIC_EXCEPTION, str(e)) from None


class PoolNames(Protocol):
    """How a connection names topics (stream pools give each pool a namespace of its own); set by the
    stream-pool gateway, None when names are used as they are."""

    def internal_topic(self, ctx: RequestContext, name: str) -> str:
        """The internal name of the topic ``ctx``'s connection calls ``name``."""
        ...

    def local_name(self, internal: str) -> str:
        """The name clients of its pool use for the internal topic ``internal``."""
        ...


class CloseConnection(Exception):
    """Raised by a handler that wants the connection closed without a response."""


@dataclass
class RequestContext:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str
    client_host: str
    listener: str = "PLAINTEXT"
    principal: str = "User:ANONYMOUS"
    extra: dict[str, Any] = field(default_factory=dict)


Handler = Callable[["Broker", RequestContext, dict[str, Any]], Awaitable[dict[str, Any] | None]]


class AppendWaiters:
    """Long-poll fetches wait here; an append to a partition wakes every fetch waiting on it."""

    def __init__(self) -> None:
        self._waiters: dict[tuple[str, int], set[asyncio.Future[None]]] = {}

    def waiter(self, keys: list[tuple[str, int]]) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for k in keys:
            self._waiters.setdefault(k, set()).add(fut)
        fut.add_done_callback(lambda f: self._discard(keys, f))
        return fut

    def _discard(self, keys: list[tuple[str, int]], fut: asyncio.Future[None]) -> None:
        for k in keys:
            s = self._waiters.get(k)
            if s is not None:
                s.discard(fut)
                if not s:
                    del self._waiters[k]

    def notify(self, topic: str, partition: int) -> None:
        s = self._waiters.get((topic, partition))
        if s:
            for fut in list(s):
                if not fut.done():
                    fut.set_result(None)


class Broker:
    """Everything a request handler needs, in explicit objects (no module globals)."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.node_id: int = config["node.id"]
        self.storage: Storage = self._make_storage()
        self.waiters = AppendWaiters()
        self.handlers: dict[int, Handler] = {}
        self.cluster_id = ""
        self._tasks: list[asyncio.Task[None]] = []
        self._flush_lock = asyncio.Lock()
        self._flush_pending: set[Partition] = set()
        self._flush_done: asyncio.Future[None] | None = None
        self._cleaning: asyncio.Future[int] | None = None  # the log cleaner pass running in a worker thread
        self.blackhole: bool = config["blackhole"]
        self.dynamic_configs: dict[str, str] = {}
        self.dynamic_default_configs: dict[str, str] = {}
        self._lock: BinaryIO | None = None  # the data directory's lock file, held while running
        self.rest_urls: list[str] = []
        self.groups: GroupCoordinator | None = None  # the group coordinator, wired by kafkite.compose
        self.txn: TransactionCoordinator | None = (
            None  # the transaction coordinator, wired by kafkite.compose
        )
        self.metrics: BrokerMetrics | None = None  # when metrics.listener or console.listener is set
        self._security: Security | None = None
        self._components: dict[type, object] = {}
        self.oauth_validators: dict[
            str, UnsecuredValidator | JwksValidator
        ] = {}  # OAUTHBEARER validators by listener (broker.sasl)
        self.pool_names: PoolNames | None = None  # stream pools' names (kafkite.streaming), when installed
        self.advertised: tuple[str, int] = (
            config["advertised.listeners"][0][1],
            config["advertised.listeners"][0][2],
        )
        # Brokers sharing a PostgreSQL database: placement of partition leaders and group coordinators over
        # the live brokers (kafkite.cluster.Cluster, handed in by kafkite.compose before the coordinators).
        self.cluster: ClusterMode | None = None

    def _make_storage(self) -> Storage:
        defaults = self.config.topic_defaults()
        if self.config["storage.engine"] == "memory":
            return MemoryStorage(default_config=defaults, max_partitions=self.config["max.broker.partitions"])
        if is_postgres(self.config["storage.engine"]):
            # The PostgreSQL engine needs the optional driver (psycopg): loaded only when configured.
            from kafkite.log.pg import PgStorage

            return PgStorage(
                self.config["storage.engine"],
                default_config=defaults,
                pool_size=self.config["storage.postgresql.pool.size"],
            )
        return FileStorage(
            self.config.data_dir,
            default_config=defaults,
            max_partitions=self.config["max.broker.partitions"],
            open_files=self.config["log.open.files.max"] or None,
            inline_bytes=self.config["log.writer.inline.bytes"],
        )

    @property
    def security(self) -> Security:
        """Users, the ACL authorizer and client quotas, made on first use."""
        if self._security is None:
            self._security = Security(self.config)
        return self._security

    def component(self, kind: type[T], make: Callable[[], T]) -> T:
        """The broker's one ``kind`` (the feature registry, a gateway's state: the stream catalogue, the
        queue service, the audit trail), made by ``make`` on first use."""
        found = self._components.get(kind)
        if found is None:
            found = self._components[kind] = make()
        assert isinstance(found, kind)
        return found

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._lock_data_dir()
        await loop.run_in_executor(None, self.storage.load)
        self.cluster_id = self._load_cluster_id()
        self._load_dynamic_configs()
        if self.cluster is not None:
            await self.cluster.start()
        if self.groups is not None:
            await self.groups.start()
        if self.txn is not None:
            await self.txn.start()
        self._tasks.append(asyncio.create_task(self._retention_loop(), name="retention"))
        self._tasks.append(asyncio.create_task(self._flush_loop(), name="flusher"))
        if self.config["log.cleaner.enable"]:
            self._tasks.append(asyncio.create_task(self._cleaner_loop(), name="log-cleaner"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
        self._tasks.clear()
        if self._cleaning is not None:  # a pass runs on in its thread: let it finish before closing the logs
            self.storage.stop_compaction()
            with contextlib.suppress(Exception):
                await self._cleaning
            self._cleaning = None
        if self.txn is not None:
            await self.txn.stop()
        if self.groups is not None:
            await self.groups.stop()
        if self.cluster is not None:
            await self.cluster.stop()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.storage.flush_all)
        self.storage.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _lock_data_dir(self) -> None:
        """Hold an exclusive lock on the data directory so that no second broker appends to the same logs."""
        if self.config["storage.engine"] != "file":
            return
        path = self.config.data_dir / LOCK_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+b")  # noqa: SIM115 - held open for the broker's life
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise OSError(f"log.dirs {path.parent} is in use by another broker (it holds {path})") from None
        self._lock = f

    def _load_cluster_id(self) -> str:
        configured: str = self.config["cluster.id"]
        if configured:
            return configured
        if self.config["storage.engine"] == "memory":
            return _new_cluster_id()
        shared_id = getattr(self.storage, "cluster_id", None)
        if shared_id is not None:
            return str(shared_id(_new_cluster_id()))  # kept in the shared database
        path = self.config.data_dir / "meta.properties"
        if path.exists():
            for line in path.read_text().splitlines():
                if line.startswith("cluster.id="):
                    return line.split("=", 1)[1].strip()
        cid = _new_cluster_id()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"version=1\ncluster.id={cid}\nnode.id={self.node_id}\n")
        return cid

    def _load_dynamic_configs(self) -> None:
        """Re-apply broker configs altered at run time (kept in the data directory)."""
        if self.config["storage.engine"] != "file":
            return
        for filename, cluster_default in ((DYNAMIC_DEFAULT_CONFIG_FILE, True), (DYNAMIC_CONFIG_FILE, False)):
            path = self.config.data_dir / filename
            if not path.exists():
                continue
            try:
                saved = json.loads(path.read_text())
                for name, value in saved.items():
                    self.set_dynamic_config(name, value, persist=False, cluster_default=cluster_default)
            except (OSError, ValueError) as e:
                log.warning("ignoring %s: %s", path, e)

    async def _retention_loop(self) -> None:
        interval = self.config["log.retention.check.interval.ms"] / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                await self.storage.apply_retention_async(now_ms())
            except Exception:
                log.exception("retention pass failed")

    async def _cleaner_loop(self) -> None:
        """The log cleaner: every log.cleaner.backoff.ms, one compaction pass in a worker thread."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.config["log.cleaner.backoff.ms"] / 1000)  # may change at run time
            self._cleaning = loop.run_in_executor(
                None, self.storage.compact, now_ms(), self.config["log.cleaner.dedupe.buffer.size"]
            )
            try:
                await asyncio.shield(self._cleaning)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("log cleaner pass failed")
            self._cleaning = None

    async def _flush_loop(self) -> None:
        """Periodic flusher: fsyncs partitions whose flush.messages / flush.ms policy says so."""
        interval = self.config["log.flush.scheduler.interval.ms"] / 1000
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            due = self.storage.flush_due(now_ms())
            for p in due:
                try:
                    await loop.run_in_executor(None, _flush_all, {p}, self.metrics)
                except Exception:
                    log.exception("flush failed")

    # ------------------------------------------------------------------ catalogue

    def topics(self) -> dict[str, TopicMeta]:
        return dict(self.storage.topics())

    def topic(self, name: str) -> TopicMeta | None:
        return self.storage.topics().get(name)

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicMeta | None:
        for meta in self.storage.topics().values():
            if meta.topic_id == topic_id:
                return meta
        return None

    def partition(self, topic: str, index: int) -> Partition | None:
        meta = self.storage.topics().get(topic)
        if meta is None or not 0 <= index < meta.partitions:
            return None
        return self.storage.partition(topic, index)

    def all_partitions(self) -> list[Partition]:
        return [
            self.storage.partition(t, i)
            for t, m in self.storage.topics().items()
            for i in range(m.partitions)
        ]

    def loaded_partitions(self) -> list[Partition]:
        """The partitions whose logs are loaded (in use since the start), without loading the others."""
        return [log for _, _, log in self.storage.partitions()]

    def create_topic(
        self, name: str, partitions: int | None = None, configs: dict[str, str] | None = None
    ) -> TopicMeta:
        validate_topic_name(name)
        if name in self.storage.topics():
            raise KafkaProtocolError(ErrorCode.TOPIC_ALREADY_EXISTS, f"topic {name!r} already exists")
        n = partitions if partitions is not None and partitions > 0 else self.config["num.partitions"]
        meta = self.storage.create_topic(name, n, dict(configs or {}))
        log.info("created topic %s with %d partitions", name, n)
        return meta

    def auto_create(self, name: str) -> TopicMeta | None:
        """Create ``name`` if auto-creation is on and the name is legal; None otherwise."""
        if not self.config["auto.create.topics.enable"] or is_internal_topic(name):
            return None
        try:
            return self.create_topic(name)
        except KafkaProtocolError:
            return None

    def set_dynamic_config(
        self, name: str, value: str | None, *, persist: bool = True, cluster_default: bool = False
    ) -> None:
        """Set (or with None, remove) a broker config changed at run time through AlterConfigs, for this
        broker or (``cluster_default``) as the cluster-wide default; this broker's own value wins."""
        level = self.dynamic_default_configs if cluster_default else self.dynamic_configs
        if value is None:
            level.pop(name, None)
        else:
            self.config.check(name, value)
            level[name] = value
        effective = self.dynamic_configs.get(name, self.dynamic_default_configs.get(name))
        if effective is None:
            self.config.reset(name)
        else:
            self.config.set(name, effective)
        if name in TOPIC_FROM_BROKER.values():
            self.storage.set_default_config(self.config.topic_defaults())
        if name == "blackhole":
            self.blackhole = self.config["blackhole"]
        if persist and self.config["storage.engine"] == "file":
            path = self.config.data_dir / (
                DYNAMIC_DEFAULT_CONFIG_FILE if cluster_default else DYNAMIC_CONFIG_FILE
            )
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(level, indent=1, sort_keys=True))
            os.replace(tmp, path)
        log.info("broker config %s set to %s", name, value if value is not None else "its static value")

    # ------------------------------------------------------------------ durability

    async def flush_before_ack(self, partitions: set[Partition]) -> None:
        """Group fsyncs: callers arriving while a flush runs share the next one."""
        loop = asyncio.get_running_loop()
        self._flush_pending |= partitions
        if self._flush_done is None:
            self._flush_done = loop.create_future()
        done = self._flush_done
        async with self._flush_lock:
            if done.done():
                await done
                return
            todo, self._flush_pending = self._flush_pending, set()
            self._flush_done = None
            try:
                await loop.run_in_executor(None, _flush_all, todo, self.metrics)
            except BaseException as e:
                done.set_exception(e)
                raise
            done.set_result(None)


def _flush_all(parts: set[Partition], metrics: BrokerMetrics | None = None) -> None:
    for p in parts:
        started = time.perf_counter()
        p.flush()
        if metrics is not None:
            metrics.observe_fsync(time.perf_counter() - started)


def is_postgres(engine: str) -> bool:
    return engine.startswith(("postgresql://", "postgres://"))


def _new_cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
