"""Every queue of one broker: the durable catalogue, each queue's state, admin operations, housekeeping.

The catalogue is the internal topic ``__queues``: one record per change, keyed ``q`` (a queue's full
metadata) or ``w`` (a work request), replayed on start-up with the last record per id winning. Each live
queue owns ``__queue.<key>.messages`` and ``__queue.<key>.state`` (see ``kafkite.queue.engine``).

The REST gateway and the STOMP listener share one ``QueueService`` per broker (``QueueService.of``); each
calls ``acquire`` when it starts and ``release`` when it stops, and the last release stops the service.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator

from kafkite.broker.core import Broker
from kafkite.clock import now_ms
from kafkite.log.base import Partition
from kafkite.metrics.registry import Collected
from kafkite.queue.engine import QueueState, RecordLog
from kafkite.queue.model import (
    LIFECYCLE_STATES,
    PURGE_TYPES,
    QueueError,
    QueueMeta,
    WorkRequest,
    apply_settings,
    conflict,
    invalid,
    new_ocid,
    not_found,
    queue_from_create,
)

log = logging.getLogger("kafkite.queue")

CATALOGUE_TOPIC = "__queues"
MAINTENANCE_INTERVAL_S = 5.0
COMPACT_MIN_RECORDS = 10_000
INTERNAL_TOPIC_CONFIGS = {
    "retention.ms": "-1",
    "retention.bytes": "-1",
    "cleanup.policy": "delete",
    "message.timestamp.type": "CreateTime",
    "compression.type": "producer",
    "max.message.bytes": str(64 * 1024 * 1024),
    "segment.bytes": str(64 * 1024 * 1024),
}


def messages_topic(meta: QueueMeta) -> str:
    return f"__queue.{meta.key}.messages"


def state_topic(meta: QueueMeta) -> str:
    return f"__queue.{meta.key}.state"


class QueueService:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.queues: dict[str, QueueMeta] = {}
        self.states: dict[str, QueueState] = {}
        self.work_requests: dict[str, WorkRequest] = {}
        self.catalogue: RecordLog | None = None
        self._users = 0
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, broker: Broker) -> QueueService:
        def make() -> QueueService:
            svc = cls(broker)
            if broker.metrics is not None:
                broker.metrics.registry.add_collector(svc.collect)
            return svc

        return broker.component(QueueService, make)

    def collect(self) -> Iterator[Collected]:
        """The queues' gauges, fed to the broker's metrics registry."""
        if not self.states:
            return
        msgs = Collected(
            "kafkite_queue_messages", "Messages of a queue by kind (visible, in flight) and part"
        )
        size = Collected(
            "kafkite_queue_size_bytes", "Content bytes held by a queue and its dead-letter queue"
        )
        for qid, st in sorted(self.states.items()):
            meta = self.queues.get(qid)
            name = meta.display_name if meta is not None else qid
            for part, s in st.stats().items():
                msgs.add(s["visibleMessages"], queue=name, part=part, kind="visible")
                msgs.add(s["inFlightMessages"], queue=name, part=part, kind="in_flight")
                size.add(s["sizeInBytes"], queue=name, part=part)
        yield from (msgs, size)

    # ------------------------------------------------------------------ lifecycle

    async def acquire(self) -> None:
        async with self._lock:
            if self._users == 0:
                await self._start()
            self._users += 1

    async def release(self) -> None:
        async with self._lock:
            self._users -= 1
            if self._users == 0:
                await self._stop()

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if CATALOGUE_TOPIC in self.broker.topics():  # created with the first queue
            self.catalogue = RecordLog(self._partition(CATALOGUE_TOPIC))
            await loop.run_in_executor(None, self._load_catalogue)
        for meta in list(self.queues.values()):
            if meta.lifecycle_state in ("DELETING",):
                self._drop_topics(meta)
                meta.lifecycle_state = "DELETED"
                self._save_queue(meta)
            elif meta.live:
                state = self._open_state(meta)
                await loop.run_in_executor(None, state.load)
                state._schedule()
                self.states[meta.id] = state
        self._task = asyncio.create_task(self._maintenance(), name="queue-maintenance")
        log.info("queue service started with %d queues", len(self.states))

    async def _stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for state in self.states.values():
            state.close()
        self.states.clear()
        self.queues.clear()
        self.work_requests.clear()
        self.catalogue = None

    def _partition(self, topic: str) -> Partition:
        if topic not in self.broker.topics():
            self.broker.create_topic(topic, 1, INTERNAL_TOPIC_CONFIGS)
        p = self.broker.partition(topic, 0)
        assert p is not None
        return p

    def _open_state(self, meta: QueueMeta) -> QueueState:
        return QueueState(
            meta,
            RecordLog(self._partition(messages_topic(meta))),
            RecordLog(self._partition(state_topic(meta))),
        )

    def _drop_topics(self, meta: QueueMeta) -> None:
        for topic in (messages_topic(meta), state_topic(meta)):
            if topic in self.broker.topics():
                self.broker.storage.delete_topic(topic)

    def _load_catalogue(self) -> None:
        assert self.catalogue is not None
        for rec in self.catalogue.replay():
            obj = json.loads(rec.value or b"{}")
            if rec.key == b"q":
                meta = QueueMeta.from_record(obj)
                self.queues[meta.id] = meta
            elif rec.key == b"w":
                wr = WorkRequest.from_record(obj)
                self.work_requests[wr.id] = wr

    def _catalogue_log(self) -> RecordLog:
        if self.catalogue is None:
            self.catalogue = RecordLog(self._partition(CATALOGUE_TOPIC))
        return self.catalogue

    def _save_queue(self, meta: QueueMeta) -> None:
        self._catalogue_log().append([(b"q", json.dumps(meta.to_record()).encode(), [], now_ms())])

    def _save_work_request(self, wr: WorkRequest) -> None:
        self._catalogue_log().append([(b"w", json.dumps(wr.to_record()).encode(), [], now_ms())])

    async def durable(self, partitions: set[Partition]) -> None:
        """Wait until appended data is synced when the broker syncs before acknowledging."""
        if self.broker.config["log.flush.on.ack"]:
            await self.broker.flush_before_ack(partitions)

    async def _maintenance(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(MAINTENANCE_INTERVAL_S)
            for state in list(self.states.values()):
                try:
                    state.expire()
                    if state.state_records() > max(COMPACT_MIN_RECORDS, 2 * len(state.msgs)):
                        await self.compact(state, loop)
                except Exception:
                    log.exception("queue %s: housekeeping failed", state.meta.id)

    async def compact(self, state: QueueState, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Snapshot the queue's state, sync it, and trim both of its logs."""
        loop = loop or asyncio.get_running_loop()
        offset = state.write_snapshot()
        parts = list(state.partitions)
        await loop.run_in_executor(None, lambda: [p.flush() for p in parts])
        if not state.closed:
            state.trim(offset)

    # ------------------------------------------------------------------ lookups

    def get(self, queue_id: str) -> QueueMeta:
        meta = self.queues.get(queue_id)
        if meta is None:
            raise not_found(f"queue {queue_id}")
        return meta

    def state(self, queue_id: str) -> QueueState:
        state = self.states.get(queue_id)
        if state is None:
            raise not_found(f"queue {queue_id}")
        return state

    def find(self, name_or_id: str) -> QueueState | None:
        """A live queue by OCID or display name (None when there is none; an error when ambiguous)."""
        if name_or_id in self.states:
            return self.states[name_or_id]
        named = [s for s in self.states.values() if s.meta.display_name == name_or_id]
        if len(named) > 1:
            raise conflict(f"{len(named)} queues are named {name_or_id!r}: use the queue's OCID")
        return named[0] if named else None

    # ------------------------------------------------------------------ admin operations

    def _work_request(self, op: str, meta: QueueMeta, action: str) -> WorkRequest:
        wr = WorkRequest(
            id=new_ocid("queueworkrequest"),
            operation_type=op,
            compartment_id=meta.compartment_id,
            queue_id=meta.id,
            action_type=action,
            time_accepted=now_ms(),
        )
        self.work_requests[wr.id] = wr
        self._save_work_request(wr)
        return wr

    def _catalogue_partitions(self) -> set[Partition]:
        return {self._catalogue_log().partition}

    async def create_queue(self, body: object) -> WorkRequest:
        meta = queue_from_create(body, now_ms())
        state = self._open_state(meta)
        self.queues[meta.id] = meta
        self._save_queue(meta)
        self.states[meta.id] = state
        wr = self._work_request("CREATE_QUEUE", meta, "CREATED")
        await self.durable(self._catalogue_partitions() | state.partitions)
        log.info("created queue %s (%s)", meta.id, meta.display_name)
        return wr

    def _check_etag(self, meta: QueueMeta, if_match: str | None) -> None:
        if if_match and if_match not in ("*", meta.etag):
            raise QueueError(412, "NoEtagMatch", "the if-match value does not match the queue's etag")

    def _live(self, queue_id: str) -> QueueMeta:
        meta = self.get(queue_id)
        if not meta.live:
            raise not_found(f"queue {queue_id}")
        return meta

    async def update_queue(self, queue_id: str, body: object, if_match: str | None = None) -> WorkRequest:
        meta = self._live(queue_id)
        self._check_etag(meta, if_match)
        if not isinstance(body, dict):
            raise invalid("the request body must be a JSON object")
        apply_settings(meta, body)
        meta.time_updated = now_ms()
        meta.version += 1
        self._save_queue(meta)
        wr = self._work_request("UPDATE_QUEUE", meta, "UPDATED")
        await self.durable(self._catalogue_partitions())
        return wr

    async def change_compartment(
        self, queue_id: str, body: object, if_match: str | None = None
    ) -> WorkRequest:
        meta = self._live(queue_id)
        self._check_etag(meta, if_match)
        compartment = body.get("compartmentId") if isinstance(body, dict) else None
        if not isinstance(compartment, str) or not compartment:
            raise invalid("compartmentId is required")
        meta.compartment_id = compartment
        meta.time_updated = now_ms()
        meta.version += 1
        self._save_queue(meta)
        wr = self._work_request("MOVE_QUEUE", meta, "UPDATED")
        await self.durable(self._catalogue_partitions())
        return wr

    async def delete_queue(self, queue_id: str, if_match: str | None = None) -> WorkRequest:
        meta = self._live(queue_id)
        self._check_etag(meta, if_match)
        meta.lifecycle_state = "DELETING"
        meta.time_updated = now_ms()
        meta.version += 1
        self._save_queue(meta)
        state = self.states.pop(meta.id, None)
        if state is not None:
            state.close()
        self._drop_topics(meta)
        meta.lifecycle_state = "DELETED"
        self._save_queue(meta)
        wr = self._work_request("DELETE_QUEUE", meta, "DELETED")
        await self.durable(self._catalogue_partitions())
        log.info("deleted queue %s (%s)", meta.id, meta.display_name)
        return wr

    async def purge_queue(self, queue_id: str, body: object, if_match: str | None = None) -> WorkRequest:
        meta = self._live(queue_id)
        self._check_etag(meta, if_match)
        if not isinstance(body, dict):
            raise invalid("the request body must be a JSON object")
        ptype = body.get("purgeType")
        if ptype not in PURGE_TYPES:
            raise invalid(f"purgeType must be one of {', '.join(PURGE_TYPES)}")
        channels = body.get("channelIds")
        if channels is not None and (
            not isinstance(channels, list) or not all(isinstance(c, str) for c in channels)
        ):
            raise invalid("channelIds must be a list of strings")
        state = self.state(queue_id)
        state.purge(ptype, channels or None)
        wr = self._work_request("PURGE_QUEUE", meta, "UPDATED")
        await self.durable(self._catalogue_partitions() | state.partitions)
        return wr

    def list_queues(
        self,
        compartment_id: str | None = None,
        lifecycle_state: str | None = None,
        display_name: str | None = None,
        queue_id: str | None = None,
    ) -> list[QueueMeta]:
        if lifecycle_state is not None and lifecycle_state not in LIFECYCLE_STATES:
            raise invalid(f"lifecycleState must be one of {', '.join(LIFECYCLE_STATES)}")
        out = []
        for meta in self.queues.values():
            if compartment_id is not None and meta.compartment_id != compartment_id:
                continue
            if lifecycle_state is not None:
                if meta.lifecycle_state != lifecycle_state:
                    continue
            elif meta.lifecycle_state == "DELETED":
                continue
            if display_name is not None and meta.display_name != display_name:
                continue
            if queue_id is not None and meta.id != queue_id:
                continue
            out.append(meta)
        return out

    def get_work_request(self, wr_id: str) -> WorkRequest:
        wr = self.work_requests.get(wr_id)
        if wr is None:
            raise not_found(f"work request {wr_id}")
        return wr
