"""Benchmark producers and consumers, one per process, for the kafkite and confluent-kafka clients.

A worker connects, warms up (producers send for ``warmup`` seconds and wait for every acknowledgement; none of
it is counted), says it is ready, waits for the common start signal, runs until its count, its duration, or
the stop event, and returns a plain dict: messages, bytes, errors, elapsed time, the CPU time the worker
process used, a latency histogram and a timeline. Live totals go to a shared counter array (two slots per
worker: messages, bytes) for the progress line.

At a target rate, producers send each message at its own due time (start + i / rate), so that messages are
spread evenly in time, and stamp each one as it is handed to the client. End-to-end consumers count and time
only messages stamped after the common start: the warm-up's messages are skipped.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypedDict, final

from kafkite.bench.payload import STAMP, STAMP_SIZE, BatchMaker, filler
from kafkite.bench.stats import Histogram, HistogramDict, Timeline, TimelineDict
from kafkite.client import BrokerConnection, KafkaClient, KafkaClientError
from kafkite.protocol import records
from kafkite.protocol.api_keys import ApiKey
from kafkite.protocol.compression import codec_by_name
from kafkite.protocol.errors import ErrorCode

if TYPE_CHECKING:
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Barrier, Event

    from confluent_kafka import Consumer, KafkaError, Message

TopicPartition = tuple[str, int]

# Per-message overhead in a v2 batch for small keys/values (length, attributes, deltas, key, header count).
_RECORD_OVERHEAD = 8


@dataclass
class WorkerSpec:
    role: str  # "producer" | "consumer" | "probe"
    index: int  # index into the shared counters (producers first, then consumers)
    client: str  # "kafkite" | "confluent"
    bootstrap: str
    targets: list[TopicPartition]
    size: int = 1024
    count: int | None = None  # this worker's share; None = until duration or stop
    duration: float | None = None
    rate: float = 0.0  # messages/s for this worker; 0 = unthrottled
    acks: int = -1
    compression: str = "none"
    batch_bytes: int | None = None
    linger_ms: float | None = None
    max_inflight: int = 5
    latency: bool = False  # consumers: decode the send-time stamps (e2e); producers: time every ack
    stamp: bool = True  # producers: write the send time into every message (needed by e2e consumers)
    warmup: float = 0.0  # producers: seconds of uncounted traffic before reporting ready
    warmup_bytes: int = 0  # producers: warm up until this many bytes are acknowledged (``warmup``: at most)
    start_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    end_offsets: dict[TopicPartition, int] | None = None  # consumers stop once every partition reaches these
    interval: float = 0.5
    client_config: dict[str, str] = field(default_factory=dict)
    seed: int = 0


class Cancelled(Exception):
    """The runner stopped the run before it started."""


@final
class Measured(TypedDict):
    """What a worker measured, sent to the runner through the results queue."""

    messages: int
    bytes: int
    errors: int
    first_error: str | None
    start: float
    end: float
    cpu_s: float
    hist: HistogramDict
    timeline: TimelineDict


@final
class Probed(TypedDict):
    """What the second client of a sustained run measured (latencies as Histogram.summary_ms gives them)."""

    probe: bool
    start: float
    end: float
    counts: dict[str, int]
    first_error: str | None
    metadata_ms: dict[str, float | int]
    fetch_from_cache_ms: dict[str, float | int]
    side_produce_ms: dict[str, float | int]
    side_e2e_ms: dict[str, float | int]
    side_lag_at_end: int


@final
class Failed(TypedDict):
    error: str
    traceback: str


@final
class Stopped(TypedDict):
    cancelled: bool


# Final: a result holds exactly its keys, so that a key's presence tells which one it is.
WorkerResult: TypeAlias = Measured | Probed | Failed | Stopped
if TYPE_CHECKING:  # the queue class is generic in the stubs only
    Results: TypeAlias = Queue[tuple[str, int, WorkerResult]]  # (role, index, result)


class Counters(Protocol):
    """Shared integers, two per worker (messages, bytes) by the worker's index: a ctypes array."""

    def __getitem__(self, i: int, /) -> int: ...

    def __setitem__(self, i: int, value: int, /) -> None: ...


class SharedFloat(Protocol):
    """A shared ctypes double (the common start time)."""

    value: float


class Shared:
    """The synchronisation objects a worker process receives from the runner."""

    def __init__(
        self, counters: Counters, ready: Barrier, go: Event, start: SharedFloat, stop: Event
    ) -> None:
        self.counters = counters
        self.ready_barrier = ready
        self.go = go
        self.start_value = start
        self.stop = stop

    def wait_start(self) -> float:
        """Report ready, then block until the runner gives the common start time (wall clock seconds)."""
        try:
            self.ready_barrier.wait(120)
        except threading.BrokenBarrierError:
            if self.stop.is_set():
                raise Cancelled() from None  # the run was interrupted before it started
            raise
        self.go.wait()
        if self.stop.is_set() and not self.start_value.value:
            raise Cancelled()
        return float(self.start_value.value)

    def publish(self, index: int, msgs: int, nbytes: int) -> None:
        self.counters[2 * index] = msgs
        self.counters[2 * index + 1] = nbytes


class _Tally:
    __slots__ = ("bytes", "errors", "last", "msgs")

    def __init__(self) -> None:
        self.msgs = 0
        self.bytes = 0
        self.errors = 0
        self.last = 0.0


def _result(
    tally: _Tally,
    first_error: str | None,
    start: float,
    end: float,
    hist: Histogram,
    timeline: Timeline,
    cpu_s: float,
) -> Measured:
    return {
        "messages": tally.msgs,
        "bytes": tally.bytes,
        "errors": tally.errors,
        "first_error": first_error,
        "start": start,
        "end": end,
        "cpu_s": round(cpu_s, 3),
        "hist": hist.to_dict(),
        "timeline": timeline.to_dict(),
    }


def _per_batch(spec: WorkerSpec, batch_bytes: int) -> int:
    return max(1, batch_bytes // (spec.size + _RECORD_OVERHEAD))


def _warmup_count(spec: WorkerSpec) -> int | None:
    """Messages of a warm-up given in bytes (None: the warm-up lasts ``spec.warmup`` seconds)."""
    return max(1, spec.warmup_bytes // spec.size) if spec.warmup_bytes > 0 else None


def _acks_value(acks: int) -> str:
    return "all" if acks == -1 else str(acks)


# ------------------------------------------------------------------------------------------ kafkite client


class _Limiter:
    """How many messages may be sent now: the count left, and the target rate since the start."""

    def __init__(self, rate: float, count: int | None, duration: float | None, start: float) -> None:
        self.rate = rate
        self.count = count
        self.start = start
        self.deadline = start + duration if duration else None

    def allowed(self, sent: int, now: float) -> int:
        """Messages that may go now (0: wait), or -1 when the worker is done."""
        if self.count is not None and sent >= self.count:
            return -1
        if self.deadline is not None and now >= self.deadline:
            return -1
        left = (self.count - sent) if self.count is not None else 1 << 62
        if self.rate > 0:
            return max(0, min(left, int(self.rate * (now - self.start)) + 1 - sent))
        return left

    def due(self, sent: int) -> float:
        """When message number ``sent`` (from 0) is due under the rate."""
        return self.start + sent / self.rate if self.rate > 0 else self.start

    def wait_for(self, sent: int, now: float) -> float:
        """Seconds until the next message is due under the rate."""
        return max(self.due(sent) - now, 0.0) if self.rate > 0 else 0.0


class _Measure:
    """What one stretch of sending counts: the warm-up's is thrown away, the run's is returned."""

    def __init__(self, start: float, interval: float) -> None:
        self.tally = _Tally()
        self.hist = Histogram()
        self.timeline = Timeline(start, interval)
        self.first_error: list[str] = []


async def _kafkite_produce(spec: WorkerSpec, sh: Shared) -> Measured:

    client = KafkaClient(spec.bootstrap, client_id=f"kafkite-bench-producer-{spec.index}")
    await client.connect()
    try:
        await client.refresh_metadata(sorted({t for t, _ in spec.targets}))
        conns = []
        for tp in spec.targets:
            leader = client.leaders.get(tp, -1)
            if leader < 0:
                raise KafkaClientError(ErrorCode.LEADER_NOT_AVAILABLE, f"no leader for {tp[0]}-{tp[1]}")
            conns.append(await client.connection(leader))
        version = conns[0].version_for(ApiKey.PRODUCE)
        codec = codec_by_name(spec.compression)
        maker = BatchMaker(spec.size, codec, seed=spec.seed)
        per_batch = _per_batch(spec, spec.batch_bytes or 512 * 1024)
        size = spec.size
        stop = sh.stop
        index = spec.index
        ntargets = len(spec.targets)

        async def send(limiter: _Limiter, m: _Measure, publish: bool) -> int:
            state, hist, timeline, first_error = m.tally, m.hist, m.timeline, m.first_error

            def done(t_send: int, n: int, fut: asyncio.Future[dict[str, Any]]) -> None:
                now_ns = time.time_ns()
                try:
                    resp = fut.result()
                    code = resp["responses"][0]["partition_responses"][0]["error_code"]
                except (Exception, asyncio.CancelledError) as e:
                    code = -1
                    if not first_error:
                        first_error.append(f"{type(e).__name__}: {e}")
                if code:
                    state.errors += n
                    if code > 0 and not first_error:
                        first_error.append(ErrorCode(code).name)
                    return
                hist.record((now_ns - t_send) // 1000, n)
                state.msgs += n
                state.bytes += n * size
                now = now_ns / 1e9
                state.last = now
                timeline.add(now, n, n * size)
                if publish:
                    sh.publish(index, state.msgs, state.bytes)

            inflight: set[asyncio.Future[dict[str, Any]]] = set()
            sent = 0
            batches = 0
            while True:
                now = time.time()
                n = limiter.allowed(sent, now)
                if n < 0:
                    break
                if n == 0:
                    # The event loop sleeps in whole milliseconds: at high rates a batch holds the messages
                    # due in that millisecond, each stamped when the batch is sent.
                    await asyncio.sleep(max(limiter.wait_for(sent, now), 0.0002))
                    continue
                if batches % 64 == 0 and stop.is_set():
                    break
                n = min(n, per_batch)
                while len(inflight) >= spec.max_inflight:
                    _, inflight = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                i = batches % ntargets
                topic, partition = spec.targets[i]
                conn = conns[i]
                t_send = time.time_ns()
                batch = maker.build(n, t_send)
                body = {
                    "transactional_id": None,
                    "acks": spec.acks,
                    "timeout_ms": 30000,
                    "topic_data": [
                        {"name": topic, "partition_data": [{"index": partition, "records": batch}]}
                    ],
                }
                fut = conn.send(ApiKey.PRODUCE, body, version, expect_response=spec.acks != 0)
                if fut is None:  # acks=0: counted as sent once written
                    await conn.drain()
                    now_ns = time.time_ns()
                    state.msgs += n
                    state.bytes += n * size
                    state.last = now_ns / 1e9
                    timeline.add(now_ns / 1e9, n, n * size)
                    if publish:
                        sh.publish(index, state.msgs, state.bytes)
                else:
                    fut.add_done_callback(functools.partial(done, t_send, n))
                    inflight.add(fut)
                    await conn.drain()
                sent += n
                batches += 1
            if inflight:
                await asyncio.wait(inflight, timeout=60)
            state.errors = sent - state.msgs  # failed, or never answered
            return sent

        if spec.warmup > 0:
            t0 = time.time()
            await send(
                _Limiter(spec.rate, _warmup_count(spec), spec.warmup, t0), _Measure(t0, spec.interval), False
            )
        start = sh.wait_start()
        cpu0 = time.process_time()
        m = _Measure(start, spec.interval)
        await send(_Limiter(spec.rate, spec.count, spec.duration, start), m, True)
        return _result(
            m.tally,
            m.first_error[0] if m.first_error else None,
            start,
            m.tally.last or time.time(),
            m.hist,
            m.timeline,
            time.process_time() - cpu0,
        )
    finally:
        await client.close()


async def _kafkite_consume(spec: WorkerSpec, sh: Shared) -> Measured:

    client = KafkaClient(spec.bootstrap, client_id=f"kafkite-bench-consumer-{spec.index}")
    await client.connect()
    try:
        await client.refresh_metadata(sorted({t for t, _ in spec.targets}))
        by_conn: dict[int, tuple[BrokerConnection, list[TopicPartition]]] = {}
        for tp in spec.targets:
            leader = client.leaders.get(tp, -1)
            if leader < 0:
                raise KafkaClientError(ErrorCode.LEADER_NOT_AVAILABLE, f"no leader for {tp[0]}-{tp[1]}")
            conn = await client.connection(leader)
            by_conn.setdefault(id(conn), (conn, []))[1].append(tp)
        positions = {tp: spec.start_offsets.get(tp, 0) for tp in spec.targets}
        ends = spec.end_offsets
        hist = Histogram()
        state = _Tally()
        start = sh.wait_start()
        cpu0 = time.process_time()
        start_ns = int(start * 1e9)
        timeline = Timeline(start, spec.interval)
        deadline = start + spec.duration if spec.duration else None
        done_event = asyncio.Event()

        async def fetch_loop(conn: BrokerConnection, tps: list[TopicPartition]) -> None:
            version = min(conn.version_for(ApiKey.FETCH), 12)
            per_partition = max(1 << 20, min(16 << 20, (64 << 20) // len(tps)))

            def request() -> asyncio.Future[dict[str, Any]] | None:
                active = [tp for tp in tps if ends is None or positions[tp] < ends.get(tp, 0)]
                if not active:
                    return None
                topics: dict[str, list[dict[str, Any]]] = {}
                for t, p in active:
                    topics.setdefault(t, []).append(
                        {
                            "partition": p,
                            "fetch_offset": positions[(t, p)],
                            "partition_max_bytes": per_partition,
                        }
                    )
                body = {
                    "replica_id": -1,
                    "max_wait_ms": 100,
                    "min_bytes": 1,
                    "max_bytes": 64 << 20,
                    "isolation_level": 0,
                    "session_id": 0,
                    "session_epoch": -1,
                    "topics": [{"topic": t, "partitions": ps} for t, ps in topics.items()],
                    "forgotten_topics_data": [],
                    "rack_id": "",
                }
                return conn.send(ApiKey.FETCH, body, version)

            fut = request()
            while fut is not None and not done_event.is_set():
                resp = await fut
                now_ns = time.time_ns()
                # Work out the next offsets from the batch headers alone and ask for more at once, so the
                # broker prepares the next response while this one is counted.
                work: list[tuple[memoryview, int, records.BatchHeader, int]] = []
                for t in resp["responses"]:
                    name = t["topic"]
                    for p in t["partitions"]:
                        if p["error_code"]:
                            raise KafkaClientError(p["error_code"], f"Fetch {name}-{p['partition_index']}")
                        buf = p["records"]
                        if not buf:
                            continue
                        tp = (name, p["partition_index"])
                        pos_offset = positions[tp]
                        for pos, h in records.iter_headers(buf):
                            last = h.base_offset + h.last_offset_delta
                            if last < pos_offset:
                                continue
                            if not h.is_control:
                                work.append((buf, pos, h, pos_offset))
                            pos_offset = last + 1
                        positions[tp] = pos_offset
                if (deadline is not None and now_ns / 1e9 >= deadline) or sh.stop.is_set():
                    done_event.set()
                fut = None if done_event.is_set() else request()
                n = nbytes = 0
                for buf, pos, h, from_offset in work:
                    if spec.latency:
                        for r in records.iter_records(buf, pos, h):
                            if r.offset < from_offset or r.value is None:
                                continue
                            if len(r.value) >= STAMP_SIZE:
                                sent_ns = STAMP.unpack_from(r.value, 0)[0]
                                if sent_ns < start_ns:
                                    continue  # sent during the producers' warm-up
                                hist.record((now_ns - sent_ns) // 1000)
                            n += 1
                            nbytes += len(r.value)
                    else:
                        k = h.records_count - max(from_offset - h.base_offset, 0)
                        n += k
                        nbytes += k * spec.size
                if n:
                    state.msgs += n
                    state.bytes += nbytes
                    state.last = now_ns / 1e9
                    timeline.add(now_ns / 1e9, n, nbytes)
                    sh.publish(spec.index, state.msgs, state.bytes)
                if spec.count is not None and state.msgs >= spec.count:
                    done_event.set()

        async def watch_stop() -> None:
            while not done_event.is_set():
                if sh.stop.is_set() or (deadline is not None and time.time() >= deadline):
                    done_event.set()
                    return
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch_stop())
        loops = [asyncio.create_task(fetch_loop(conn, tps)) for conn, tps in by_conn.values()]
        try:
            pending: set[asyncio.Task[None]] = set(loops)
            while pending and not done_event.is_set():
                finished, pending = await asyncio.wait(
                    pending | {watcher}, return_when=asyncio.FIRST_COMPLETED
                )
                pending.discard(watcher)
                for task in finished:
                    if task is not watcher:
                        task.result()
        finally:
            done_event.set()
            for task in [*loops, watcher]:
                task.cancel()
            await asyncio.gather(*loops, watcher, return_exceptions=True)
        return _result(state, None, start, state.last or start, hist, timeline, time.process_time() - cpu0)
    finally:
        await client.close()


# ------------------------------------------------------------------------------------------ confluent-kafka


def _confluent_produce(spec: WorkerSpec, sh: Shared) -> Measured:
    from confluent_kafka import KafkaException, Producer

    conf: dict[str, Any] = {
        "bootstrap.servers": spec.bootstrap,
        "client.id": f"kafkite-bench-producer-{spec.index}",
        "acks": _acks_value(spec.acks),
        "compression.type": spec.compression,
        "linger.ms": 5 if spec.linger_ms is None else spec.linger_ms,
        "batch.size": spec.batch_bytes or 1_000_000,
        "queue.buffering.max.messages": 2_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "enable.idempotence": False,
    }
    if not spec.latency:
        # A Python callback per acknowledgement costs about as much as the produce() call itself: without
        # ack latencies, librdkafka reports failures only and acknowledgements are counted from the
        # number of messages it still holds.
        conf["delivery.report.only.error"] = True
    conf.update(spec.client_config)
    m = _Measure(time.time(), spec.interval)
    now_s = time.time

    def on_delivery(
        err: KafkaError | None, msg: Message
    ) -> None:  # one callback for all messages: cheaper than one each
        if err is not None:
            m.tally.errors += 1
            if not m.first_error:
                m.first_error.append(str(err))
            return
        m.tally.msgs += 1
        m.tally.last = now_s()
        lat = msg.latency()
        if lat is not None:
            m.hist.record(int(lat * 1e6))

    conf["on_delivery"] = on_delivery
    producer = Producer(conf)
    md = producer.list_topics(timeout=30)
    for t, _ in spec.targets:
        if t not in md.topics or md.topics[t].error is not None:
            raise KafkaException(f"topic {t} is not available")

    tail = filler(spec.size, spec.seed)
    fixed = STAMP.pack(0) + tail  # the value of every message when no stamps are needed
    pack = STAMP.pack
    time_ns = time.time_ns
    produce = producer.produce
    poll = producer.poll
    # Unthrottled, like the kafkite client: a batch's worth of messages to each partition in turn. At a rate,
    # one message to each partition in turn. Topics of a single partition are named alone (cheaper than
    # passing the partition).
    per_target = _per_batch(spec, spec.batch_bytes or 512 * 1024)
    targets = spec.targets
    ntargets = len(targets)
    single = len({t for t, _ in targets}) == ntargets
    size = spec.size
    stamp = spec.stamp
    counting_acks = spec.latency

    def acked(sent: int) -> int:
        return m.tally.msgs if counting_acks else sent - len(producer) - m.tally.errors

    def send_one(topic: str, partition: int) -> None:
        value = pack(time_ns()) + tail if stamp else fixed
        while True:
            try:
                if single:
                    produce(topic, value)
                else:
                    produce(topic, value, partition=partition)
                return
            except BufferError:
                poll(0.005)
                if stamp:
                    value = pack(time_ns()) + tail  # stamped when it is really sent

    def send(limiter: _Limiter, publish: bool) -> int:
        sent = 0
        last_acked = 0
        last_account = 0.0

        def account(now: float) -> None:
            nonlocal last_acked
            done = acked(sent)
            if not counting_acks and done > last_acked:
                m.tally.last = now
            if done != last_acked:
                m.timeline.add(now, done - last_acked, (done - last_acked) * size)
                last_acked = done
                if publish:
                    sh.publish(spec.index, done, done * size)

        topic, partition = targets[0]
        if limiter.rate > 0:
            # Each message at its own due time, stamped as it is handed over.
            while True:
                now = now_s()
                if limiter.allowed(sent, now) < 0 or (sent % 64 == 0 and sh.stop.is_set()):
                    break
                wait = limiter.due(sent) - now
                if wait > 0:
                    poll(0)
                    if now - last_account >= 0.05:
                        account(now)
                        last_account = now
                    time.sleep(min(wait, 0.01))
                    continue
                if ntargets > 1:
                    topic, partition = targets[sent % ntargets]
                send_one(topic, partition)
                sent += 1
                poll(0)
        else:
            while True:
                now = now_s()
                n = limiter.allowed(sent, now)
                if n < 0 or sh.stop.is_set():
                    break
                for _ in range(min(n, 1000)):
                    if ntargets > 1 and sent % per_target == 0:
                        topic, partition = targets[(sent // per_target) % ntargets]
                    send_one(topic, partition)
                    sent += 1
                poll(0)
                if now - last_account >= 0.05:
                    account(now)
                    last_account = now
        give_up = now_s() + (limiter.deadline - limiter.start if limiter.deadline else 0) + 300
        while len(producer) > 0 and now_s() < give_up:
            producer.flush(0.05)  # returns as soon as the last message is acknowledged
            account(now_s())
        account(now_s())
        return sent

    if spec.warmup > 0:
        send(_Limiter(spec.rate, _warmup_count(spec), spec.warmup, now_s()), False)
    start = sh.wait_start()
    cpu0 = time.process_time()
    m = _Measure(start, spec.interval)
    sent = send(_Limiter(spec.rate, spec.count, spec.duration, start), True)
    state = m.tally
    state.msgs = acked(sent)
    state.bytes = state.msgs * size
    state.errors = sent - state.msgs  # failed, or never delivered
    return _result(
        state,
        m.first_error[0] if m.first_error else None,
        start,
        state.last or now_s(),
        m.hist,
        m.timeline,
        time.process_time() - cpu0,
    )


def confluent_consumer_config(spec: WorkerSpec) -> dict[str, Any]:
    """The librdkafka settings of a benchmark consumer (``spec.client_config`` applied last)."""
    import uuid

    conf: dict[str, Any] = {
        "bootstrap.servers": spec.bootstrap,
        "client.id": f"kafkite-bench-consumer-{spec.index}",
        "group.id": f"kafkite-bench-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        "fetch.wait.max.ms": 100,
        "fetch.min.bytes": 1,
        "fetch.max.bytes": 52_428_800,
        "max.partition.fetch.bytes": 16_777_216,
        # librdkafka stops fetching a partition once 100,000 messages wait in its queue (queued.min.messages)
        # and then waits fetch.queue.backoff.ms (1 s) before it looks again: with 1 KiB messages that idles
        # the consumer more than half the time. Bound the prefetch by bytes only, and look again soon.
        "queued.min.messages": 10_000_000,
        "queued.max.messages.kbytes": 1_048_576,
        "fetch.queue.backoff.ms": 10,
    }
    conf.update(spec.client_config)
    return conf


def _confluent_consume(spec: WorkerSpec, sh: Shared) -> Measured:
    from confluent_kafka import Consumer, KafkaException, Message
    from confluent_kafka import TopicPartition as CTopicPartition

    consumer = Consumer(confluent_consumer_config(spec))
    try:
        assignment = [CTopicPartition(t, p, spec.start_offsets.get((t, p), 0)) for t, p in spec.targets]
        if spec.latency:
            consumer.assign(assignment)  # from the end of the log: nothing to prefetch before the start
        else:
            # Connect to each leader now (the offsets query goes there), but assign only at the start: an
            # assignment starts fetching, and fetching before the start would not be timed.
            for t, p in spec.targets:
                consumer.get_watermark_offsets(CTopicPartition(t, p), timeout=30)
        expected: int | None = None
        if spec.end_offsets is not None:
            expected = sum(
                max(spec.end_offsets.get(tp, 0) - spec.start_offsets.get(tp, 0), 0) for tp in spec.targets
            )
        if spec.count is not None:
            expected = spec.count if expected is None else min(expected, spec.count)
        hist = Histogram()
        msgs = nbytes = 0
        last = 0.0
        start = sh.wait_start()
        cpu0 = time.process_time()
        timeline = Timeline(start, spec.interval)
        deadline = start + spec.duration if spec.duration else None
        if spec.latency:
            msgs, nbytes, last = _confluent_e2e_loop(consumer, spec, sh, start, deadline, timeline, hist)
        else:
            consumer.assign(assignment)
            consume = consumer.consume
            error_of = Message.error
            while expected is None or msgs < expected:
                # Counting only: no Python work per message (len() of a message is its value's length,
                # read without copying the value out).
                want = 10000 if expected is None else min(10000, expected - msgs)
                batch = consume(want, 0.1)
                now = time.time()
                if batch:
                    n = len(batch)
                    b = sum(map(len, batch))
                    for err in filter(None, map(error_of, batch)):
                        if err.fatal():
                            raise KafkaException(err)
                        n -= 1
                    if n:
                        msgs += n
                        nbytes += b
                        last = now
                        timeline.add(now, n, b)
                        sh.publish(spec.index, msgs, nbytes)
                if sh.stop.is_set() or (deadline is not None and now >= deadline):
                    break
        tally = _Tally()
        tally.msgs, tally.bytes = msgs, nbytes
        return _result(tally, None, start, last or start, hist, timeline, time.process_time() - cpu0)
    finally:
        consumer.close()


def _confluent_e2e_loop(
    consumer: Consumer,
    spec: WorkerSpec,
    sh: Shared,
    start: float,
    deadline: float | None,
    timeline: Timeline,
    hist: Histogram,
) -> tuple[int, int, float]:
    """Receive, timing every message stamped after ``start``: (messages, bytes, time of the last)."""
    from confluent_kafka import KafkaException

    record = hist.record
    unpack = STAMP.unpack_from
    start_ns = int(start * 1e9)
    consume = consumer.consume
    poll = consumer.poll
    msgs = nbytes = 0
    last = 0.0
    while True:
        # consume() waits for a full batch or its timeout, which would add up to that timeout to the
        # measured latency: take what is queued, and when nothing is, wait for the first message only.
        batch = consume(10000, 0)
        if not batch:
            m = poll(0.1)
            batch = [m] if m is not None else []
        now_ns = time.time_ns()
        now = now_ns / 1e9
        if batch:
            n = b = 0
            for m in batch:
                v = m.value()
                if v is None:
                    err = m.error()
                    if err is not None and err.fatal():
                        raise KafkaException(err)
                    continue
                if len(v) >= STAMP_SIZE:
                    sent_ns = unpack(v, 0)[0]
                    if sent_ns < start_ns:
                        continue  # sent during the producers' warm-up
                    record((now_ns - sent_ns) // 1000)
                n += 1
                b += len(v)
            if n:
                msgs += n
                nbytes += b
                last = now
                timeline.add(now, n, b)
                sh.publish(spec.index, msgs, nbytes)
        if sh.stop.is_set() or (deadline is not None and now >= deadline):
            return msgs, nbytes, last


# ------------------------------------------------------------------------------------------ probe


async def _probe(spec: WorkerSpec, sh: Shared) -> Probed:
    """A second client while the producers run: every ``interval`` seconds a Metadata request and a Fetch
    from the start of the side topic (data in the page cache), each on a connection of its own, and a
    consumer of the side topic that a small producer feeds at ``rate`` messages/s (does it keep up?).

    ``targets``: [(side topic, 0), (measured topic, 0)]."""

    side, _ = spec.targets[0]
    main, _ = spec.targets[1]
    maker = BatchMaker(spec.size, seed=spec.seed)
    clients = [KafkaClient(spec.bootstrap, client_id=f"kafkite-bench-probe-{i}") for i in range(3)]
    for c in clients:
        await c.connect()
        await c.refresh_metadata([side, main])
    metadata, fetcher, feeder = clients
    try:
        # Something to read from the page cache, and where the consumer of the side topic starts.
        await feeder.produce(side, {0: bytes(maker.build(100))}, acks=-1)
        end = (await feeder.list_offsets(side, [0], -1))[0]
        meta_hist, fetch_hist, e2e_hist, produce_hist = Histogram(), Histogram(), Histogram(), Histogram()
        counts = {"metadata": 0, "fetch": 0, "side_produced": 0, "side_consumed": 0, "errors": 0}
        errors: list[str] = []
        start = sh.wait_start()
        deadline = start + spec.duration if spec.duration else None

        fed = asyncio.Event()  # the probe's producer has sent its last message

        def done() -> bool:
            return sh.stop.is_set() or (deadline is not None and time.time() >= deadline)

        async def probe_loop() -> None:
            conn = await metadata.any_connection()
            body = {"topics": [{"name": main}], "allow_auto_topic_creation": False}
            while not done():
                t0 = time.perf_counter()
                await conn.request(ApiKey.METADATA, body)
                t1 = time.perf_counter()
                got = await fetcher.fetch(side, 0, 0, max_bytes=256 * 1024)
                t2 = time.perf_counter()
                meta_hist.record(int((t1 - t0) * 1e6))
                counts["metadata"] += 1
                if got.error_code:
                    counts["errors"] += 1
                    errors.append(f"fetch error {got.error_code}")
                else:
                    fetch_hist.record(int((t2 - t1) * 1e6))
                    counts["fetch"] += 1
                await asyncio.sleep(spec.interval)

        async def feed_loop() -> None:
            try:
                await feed()
            finally:
                fed.set()

        async def feed() -> None:
            sent = 0
            t0 = time.time()
            while not done():
                due = t0 + sent / spec.rate if spec.rate > 0 else time.time()
                await asyncio.sleep(max(0.0, due - time.time()))
                send_ns = time.time_ns()
                res = await feeder.produce(side, {0: bytes(maker.build(1, send_ns))}, acks=1)
                if res[0].error_code:
                    counts["errors"] += 1
                    errors.append(f"produce error {res[0].error_code}")
                else:
                    produce_hist.record((time.time_ns() - send_ns) // 1000)
                    counts["side_produced"] += 1
                sent += 1

        async def consume_loop() -> None:
            consumer = KafkaClient(spec.bootstrap, client_id=f"kafkite-bench-probe-consumer-{spec.index}")
            await consumer.connect()
            try:
                position = end
                give_up: float | None = None
                while not fed.is_set() or counts["side_consumed"] < counts["side_produced"]:
                    if fed.is_set():
                        give_up = give_up or time.time() + 30
                        if time.time() > give_up:
                            return
                    got = await consumer.fetch(side, 0, position, max_wait_ms=200, max_bytes=1 << 20)
                    now_ns = time.time_ns()
                    for pos, h in records.iter_headers(got.records):
                        for r in records.iter_records(got.records, pos, h):
                            if r.offset < position or r.value is None:
                                continue
                            e2e_hist.record((now_ns - STAMP.unpack_from(r.value, 0)[0]) // 1000)
                            counts["side_consumed"] += 1
                        position = max(position, h.base_offset + h.last_offset_delta + 1)
            finally:
                await consumer.close()

        await asyncio.gather(probe_loop(), feed_loop(), consume_loop())
        return {
            "probe": True,
            "start": start,
            "end": time.time(),
            "counts": counts,
            "first_error": errors[0] if errors else None,
            "metadata_ms": meta_hist.summary_ms(),
            "fetch_from_cache_ms": fetch_hist.summary_ms(),
            "side_produce_ms": produce_hist.summary_ms(),
            "side_e2e_ms": e2e_hist.summary_ms(),
            "side_lag_at_end": counts["side_produced"] - counts["side_consumed"],
        }
    finally:
        for c in clients:
            await c.close()


# ------------------------------------------------------------------------------------------ process entry


def run_worker(spec: WorkerSpec, sh: Shared) -> Measured | Probed:
    if spec.role == "probe":
        return asyncio.run(_probe(spec, sh))
    if spec.client == "confluent":
        fn = _confluent_produce if spec.role == "producer" else _confluent_consume
        return fn(spec, sh)
    coro = _kafkite_produce(spec, sh) if spec.role == "producer" else _kafkite_consume(spec, sh)
    return asyncio.run(coro)


def worker_main(
    spec: WorkerSpec,
    counters: Counters,
    ready: Barrier,
    go: Event,
    start: SharedFloat,
    stop: Event,
    results: Results,
) -> None:
    """Entry point of a worker process: runs the worker and puts (role, index, result) on ``results``."""
    # Ctrl-C reaches the whole process group: the runner answers it by setting ``stop``, so that every worker
    # finishes cleanly and reports what it measured so far.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sh = Shared(counters, ready, go, start, stop)
    res: WorkerResult
    try:
        res = run_worker(spec, sh)
    except Cancelled:
        res = {"cancelled": True}
    except BaseException as e:
        try:
            ready.abort()
        except Exception:
            pass
        res = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    results.put((spec.role, spec.index, res))
