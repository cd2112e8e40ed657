"""A STOMP 1.0-1.2 listener over the queues (``stomp.listeners``, default ``stomp://localhost:61613``).

* ``CONNECT``/``STOMP``: the highest common version is chosen; ``login``/``passcode`` are checked once per
  connection. When the broker's Kafka listeners are secured (``kafkite.doors``) they must be a SASL
  user's (``sasl.plain.users``, the SCRAM user store) or one of ``stomp.users``, and the login is the
  principal ``User:<login>`` whose ACLs decide: SEND needs WRITE and SUBSCRIBE READ on the queue (the topic
  named by the queue's OCID), refused with an ERROR frame. Otherwise they are checked against
  ``stomp.users`` (``login=passcode,...``; when empty any login is accepted, and a warning says so).
  ``stomp+ssl://`` listeners take TLS with the Kafka listeners' ``ssl.*`` settings. Heart-beats are
  negotiated as the specification says; a silent client is disconnected.
* ``SEND``: ``destination`` is a queue's OCID or display name, optionally ``/queue/``-prefixed and followed by
  ``/<channelId>``. Headers other than the STOMP ones become the message's custom properties.
* ``SUBSCRIBE``: ``id``, ``destination`` (a channel id or ``prefix*`` after the queue selects channels),
  ``ack`` (``auto``, ``client`` or ``client-individual``), ``prefetch`` or ``activemq.prefetchSize`` (most
  unacknowledged messages, default 10) and ``visibility`` (seconds, default: the queue's). Each delivery is
  a queue delivery with a visibility timeout: its ``MESSAGE`` carries ``message-id`` and ``ack`` (the same
  opaque token), ``subscription``, ``destination``, ``delivery-count`` and the custom properties.
* ``ACK`` deletes, ``NACK`` makes visible again (a failed delivery: it counts towards the dead letter
  queue); with ``ack:client`` both are cumulative. An ACK after the visibility timeout lapsed is an error.
* ``UNSUBSCRIBE``, ``DISCONNECT`` and a lost connection return unacknowledged messages to the queue.
* ``RECEIPT`` for any frame with a ``receipt`` header; ``ERROR`` (then close) for malformed frames, unknown
  destinations, bad credentials and transactions (``BEGIN``/``COMMIT``/``ABORT`` are not supported).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from kafkite.broker.core import Broker
from kafkite.config import ConfigError
from kafkite.doors import Caller, audit_unauthenticated, authorize, door_secured, login_checker
from kafkite.queue.engine import Delivery, Message, QueueState
from kafkite.queue.model import VISIBILITY_MAX, QueueError, check_channel
from kafkite.queue.service import QueueService
from kafkite.queue.stomp_frames import Frame, FrameParser, Heartbeat, StompParseError, encode
from kafkite.rest.guard import listener_scheme, tls_context
from kafkite.security.acl import AclOperation, ResourceType
from kafkite.server.listen import bind_tcp, bound_port

log = logging.getLogger("kafkite.queue.stomp")

VERSIONS = ("1.0", "1.1", "1.2")
DEFAULT_PREFETCH = 10
MAX_PREFETCH = 1000
HEARTBEAT_SEND_MS = 500  # the smallest interval at which we can send heart-beats
HEARTBEAT_RECV_MS = 1000  # the interval at which we would like to receive them
HEARTBEAT_GRACE = 2.0  # a client is dead after this many missed intervals
STOMP_HEADERS = frozenset(
    {"destination", "content-length", "receipt", "transaction", "message-id", "subscription", "ack"}
)


class StompError(Exception):
    """Reported to the client in an ERROR frame, after which the connection is closed."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


def parse_users(spec: str) -> dict[str, str]:
    users: dict[str, str] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        login, sep, passcode = item.partition("=")
        if not sep or not login:
            raise ConfigError(f"stomp.users: expected login=passcode, got {item!r}")
        users[login] = passcode
    return users


class StompService:
    def __init__(
        self, queues: QueueService, users: dict[str, str], broker: Broker | None = None, secured: bool = False
    ) -> None:
        self.queues = queues
        self.users = users
        self.broker = broker if broker is not None else queues.broker
        self.secured = secured  # logins are checked against the broker's SASL users
        self.servers: list[asyncio.Server] = []
        self.connections: set[StompConnection] = set()
        self.ports: list[int] = []
        self.hosts: list[str] = []
        self.schemes: list[str] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = StompConnection(self, reader, writer)
        self.connections.add(conn)
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)

    async def serve(self) -> None:
        for server in self.servers:
            await server.start_serving()
        for scheme, host, port in zip(self.schemes, self.hosts, self.ports, strict=True):
            log.info("STOMP listening on %s://%s:%s", scheme, host, port)
        if self.secured:
            log.info("STOMP: logins are checked against the broker's SASL users; ACLs decide per queue")
        elif not self.users:
            log.warning(
                "STOMP accepts ANY login and passcode: set stomp.users=login=passcode,... to check them"
            )

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        for conn in list(self.connections):
            conn.abort()
        for server in self.servers:
            await server.wait_closed()
        deadline = time.monotonic() + 5
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await self.queues.release()


async def bind_stomp(broker: Broker) -> StompService | None:
    """Bind every ``stomp.listeners`` address (ListenerError names one that cannot be); not serving yet."""
    spec: str = broker.config["stomp.listeners"]
    if not spec.strip():
        return None
    users = parse_users(broker.config["stomp.users"])
    listeners = [
        listener_scheme("stomp.listeners", item, "stomp", "stomp+ssl")
        for item in spec.split(",")
        if item.strip()
    ]
    contexts = {
        i: tls_context(broker.config, "stomp.listeners")
        for i, (scheme, _, _) in enumerate(listeners)
        if scheme == "stomp+ssl"
    }
    secured = door_secured(broker.config, "stomp")
    queues = QueueService.of(broker)
    await queues.acquire()
    service = StompService(queues, users, broker, secured)
    try:
        for i, (scheme, host, want) in enumerate(listeners):
            port = want if want is not None else 61613
            item = f"{scheme}://{host}:{port}"
            socks = bind_tcp("stomp.listeners", item, host, port)
            for sock in socks:
                server = await asyncio.start_server(
                    service._serve, sock=sock, start_serving=False, ssl=contexts.get(i)
                )
                service.servers.append(server)
            service.ports.append(bound_port(socks))
            service.hosts.append(host)
            service.schemes.append(scheme)
    except BaseException:
        for server in service.servers:
            server.close()
        await queues.release()
        raise
    if not service.servers:
        await queues.release()
        return None
    return service


async def start_stomp(broker: Broker) -> StompService | None:
    """Bind and serve the STOMP listeners."""
    service = await bind_stomp(broker)
    if service is not None:
        await service.serve()
    return service


@dataclass
class Pending:
    """A delivery awaiting ACK or NACK."""

    seq: int
    state: QueueState
    delivery: Delivery
    nonce: int

    @property
    def receipt(self) -> str:
        return self.delivery.receipt

    def lapsed(self, now_ms: int) -> bool:
        """The delivery is over: its visibility timeout passed, or the message was deleted or redelivered."""
        m: Message = self.delivery.message
        return self.state.msgs.get(m.id) is not m or m.nonce != self.nonce or m.visible_after_ms <= now_ms


@dataclass
class Subscription:
    id: str
    destination: str
    state: QueueState
    channel: str | None
    ack: str
    prefetch: int
    visibility: int
    unacked: dict[str, Pending] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    kick: asyncio.Future[None] | None = None

    def wake(self) -> None:
        if self.kick is not None and not self.kick.done():
            self.kick.set_result(None)


class StompConnection:
    def __init__(
        self, service: StompService, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.service = service
        self.queues = service.queues
        self.reader = reader
        self.writer = writer
        self.parser = FrameParser("1.2")
        self.version = "1.2"
        self.connected = False
        self.session = uuid.uuid4().hex[:16]
        self.principal: str | None = None
        self.subs: dict[str, Subscription] = {}
        self.seq = itertools.count()
        self.recv_timeout: float | None = None
        self.send_interval: float | None = None
        self.last_write = time.monotonic()
        self.closing = False
        self._heartbeat: asyncio.Task[None] | None = None
        self._main: asyncio.Task[Any] | None = None
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.host = str(peer[0]) if isinstance(peer, tuple) else str(peer)

    def allow(self, state: QueueState, op: AclOperation, operation: str) -> None:
        """The authorizer's decision for this connection's login on a queue; an ERROR frame if refused."""
        caller = Caller(self.principal, self.host, "stomp")
        if not authorize(
            self.service.broker, caller, op, ResourceType.TOPIC, state.meta.id, operation=operation
        ):
            raise StompError(
                "not authorized",
                f"{caller.name} may not {op.name} queue {state.meta.id} ({state.meta.display_name})",
            )

    # ------------------------------------------------------------------ connection loop

    async def run(self) -> None:
        self._main = asyncio.current_task()
        try:
            while not self.closing:
                try:
                    if self.recv_timeout is None:
                        data = await self.reader.read(65536)
                    else:
                        data = await asyncio.wait_for(self.reader.read(65536), self.recv_timeout)
                except TimeoutError:
                    log.info("STOMP %s: no heart-beat from the client, closing", self.peer)
                    break
                if not data:
                    break
                for item in self.parser.feed(data):
                    if isinstance(item, Heartbeat):
                        continue
                    await self.handle(item)
                    if self.closing:
                        break
        except StompParseError as e:
            await self.send_error("malformed frame", str(e))
        except StompError as e:
            await self.send_error(e.message, e.detail)
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("STOMP %s: unexpected error", self.peer)
            with contextlib.suppress(Exception):
                await self.send_error("internal error")
        finally:
            await self.cleanup()

    def abort(self) -> None:
        """Close from the server side (shutdown)."""
        self.closing = True
        if self._main is not None and not self._main.done():
            self._main.cancel()

    async def cleanup(self) -> None:
        self.closing = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        for sub in list(self.subs.values()):
            await self.end_subscription(sub)
        self.subs.clear()
        with contextlib.suppress(Exception):
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 2)

    def write(self, data: bytes) -> None:
        if self.writer.is_closing():
            raise ConnectionResetError("the STOMP connection is closed")
        self.writer.write(data)
        self.last_write = time.monotonic()

    def frame(self, command: str, headers: list[tuple[str, str]], body: bytes = b"") -> None:
        self.write(encode(command, headers, body, version=self.version))

    async def send_error(self, message: str, detail: str = "", receipt: str | None = None) -> None:
        headers = [("message", message), ("content-type", "text/plain")]
        if receipt is not None:
            headers.append(("receipt-id", receipt))
        log.info("STOMP %s: ERROR %s %s", self.peer, message, detail)
        with contextlib.suppress(Exception):
            self.frame("ERROR", headers, (detail or message).encode())
            await asyncio.wait_for(self.writer.drain(), 2)
        self.closing = True

    async def handle(self, frame: Frame) -> None:
        receipt = frame.get("receipt")
        try:
            if not self.connected:
                if frame.command not in ("CONNECT", "STOMP"):
                    raise StompError("not connected", f"the first frame must be CONNECT, not {frame.command}")
                await self.on_connect(frame)
                return
            handler = {
                "SEND": self.on_send,
                "SUBSCRIBE": self.on_subscribe,
                "UNSUBSCRIBE": self.on_unsubscribe,
                "ACK": self.on_ack,
                "NACK": self.on_nack,
                "DISCONNECT": self.on_disconnect,
            }.get(frame.command)
            if handler is None:
                if frame.command in ("BEGIN", "COMMIT", "ABORT"):
                    raise StompError("transactions are not supported")
                if frame.command in ("CONNECT", "STOMP"):
                    raise StompError("already connected")
                raise StompError("unknown command", f"unknown command {frame.command}")
            await handler(frame)
            if receipt is not None and not self.writer.is_closing():
                self.frame("RECEIPT", [("receipt-id", receipt)])
                if frame.command == "DISCONNECT":
                    await self.writer.drain()
                    self.closing = True
        except StompError as e:
            await self.send_error(e.message, e.detail, receipt)
        except QueueError as e:
            await self.send_error(e.message, f"{e.status} {e.code}: {e.message}", receipt)

    # ------------------------------------------------------------------ frames

    async def on_connect(self, frame: Frame) -> None:
        accepted = (frame.get("accept-version") or "1.0").split(",")
        common = [v for v in VERSIONS if v in {a.strip() for a in accepted}]
        if not common:
            raise StompError("unsupported STOMP version", f"supported versions are {', '.join(VERSIONS)}")
        self.version = common[-1]
        self.parser.version = self.version
        users = self.service.users
        login = frame.get("login")
        if self.service.secured:
            passcode = frame.get("passcode") or ""
            if not login or not await login_checker(self.service.broker).check(login, passcode, "stomp"):
                audit_unauthenticated(
                    self.service.broker,
                    "stomp",
                    self.host,
                    "Connect",
                    "bad login or passcode",
                    f"User:{login}",
                )
                raise StompError("authentication failed", "bad login or passcode")
            self.principal = f"User:{login}"
        elif users:
            if login not in users or users[login] != frame.get("passcode"):
                raise StompError("authentication failed", "bad login or passcode")
            self.principal = f"User:{login}"
        headers = [("version", self.version), ("server", "kafkite"), ("session", self.session)]
        if self.version != "1.0":
            cx, cy = _heartbeat(frame.get("heart-beat"))
            if cy > 0:
                self.send_interval = max(HEARTBEAT_SEND_MS, cy) / 1000
            if cx > 0:
                self.recv_timeout = max(HEARTBEAT_RECV_MS, cx) / 1000 * HEARTBEAT_GRACE
            headers.append(("heart-beat", f"{HEARTBEAT_SEND_MS},{HEARTBEAT_RECV_MS}"))
        self.connected = True
        self.frame("CONNECTED", headers)
        if self.send_interval is not None:
            self._heartbeat = asyncio.create_task(self.heartbeats(self.send_interval))

    async def heartbeats(self, interval: float) -> None:
        try:
            while not self.closing:
                await asyncio.sleep(max(0.0, self.last_write + interval - time.monotonic()))
                if time.monotonic() - self.last_write >= interval * 0.99:
                    self.write(b"\n")
        except (ConnectionError, RuntimeError):
            pass

    def resolve(self, destination: str | None) -> tuple[QueueState, str | None]:
        """(queue, channel or channel filter) named by a destination."""
        if not destination:
            raise StompError("missing destination header")
        name = destination.removeprefix("/queue/")
        state = self.queues.find(name)
        if state is not None:
            return state, None
        base, sep, channel = name.rpartition("/")
        if sep:
            state = self.queues.find(base)
            if state is not None and channel:
                return state, channel
        raise StompError("unknown destination", f"no queue named {name!r}")

    async def on_send(self, frame: Frame) -> None:
        if frame.get("transaction") is not None:
            raise StompError("transactions are not supported")
        state, channel = self.resolve(frame.get("destination"))
        self.allow(state, AclOperation.WRITE, "Send")
        if channel is not None:
            if channel.endswith("*"):
                raise StompError("a SEND destination cannot use a channel filter")
            check_channel(channel)
        props = {k: v for k, v in frame.header_dict().items() if k not in STOMP_HEADERS}
        state.put([(frame.body, channel or "", props or None)])
        await self.queues.durable({state.messages_log.partition})

    async def on_subscribe(self, frame: Frame) -> None:
        sub_id = frame.get("id") or ("" if self.version != "1.0" else frame.get("destination") or "")
        if not sub_id:
            raise StompError("missing id header")
        if sub_id in self.subs:
            raise StompError("duplicate subscription id", f"subscription {sub_id!r} already exists")
        ack = frame.get("ack") or "auto"
        if ack not in ("auto", "client", "client-individual"):
            raise StompError(
                "invalid ack mode", f"ack must be auto, client or client-individual, not {ack!r}"
            )
        destination = frame.get("destination") or ""
        state, channel = self.resolve(destination)
        self.allow(state, AclOperation.READ, "Subscribe")
        prefetch = _int_header(
            frame, ("prefetch", "activemq.prefetchSize"), DEFAULT_PREFETCH, 1, MAX_PREFETCH
        )
        visibility = _int_header(frame, ("visibility",), state.meta.visibility_in_seconds, 0, VISIBILITY_MAX)
        sub = Subscription(sub_id, destination, state, channel, ack, prefetch, visibility)
        self.subs[sub_id] = sub
        sub.task = asyncio.create_task(self.deliver(sub), name=f"stomp-sub-{sub_id}")

    async def on_unsubscribe(self, frame: Frame) -> None:
        sub_id = frame.get("id") or frame.get("destination") or ""
        sub = self.subs.pop(sub_id, None)
        if sub is None:
            raise StompError("unknown subscription", f"no subscription {sub_id!r}")
        await self.end_subscription(sub)

    async def on_disconnect(self, frame: Frame) -> None:
        for sub in list(self.subs.values()):
            await self.end_subscription(sub)
        self.subs.clear()
        if frame.get("receipt") is None:
            self.closing = True

    def _pending(self, frame: Frame) -> tuple[Subscription, Pending]:
        ack_id = frame.get("id") if self.version == "1.2" else frame.get("message-id")
        if ack_id is None:
            ack_id = frame.get("message-id") or frame.get("id")
        if not ack_id:
            raise StompError("missing id header", f"{frame.command} needs the message's ack header as id")
        for sub in self.subs.values():
            p = sub.unacked.get(ack_id)
            if p is not None:
                return sub, p
        raise StompError("unknown message", f"no unacknowledged message with id {ack_id!r}")

    def _select(self, sub: Subscription, p: Pending) -> list[Pending]:
        if sub.ack == "client":
            return [q for q in sub.unacked.values() if q.seq <= p.seq]
        return [p]

    async def on_ack(self, frame: Frame) -> None:
        sub, p = self._pending(frame)
        chosen = self._select(sub, p)
        for q in chosen:
            sub.unacked.pop(q.receipt, None)
        sub.wake()
        results = p.state.delete_many([q.receipt for q in chosen])
        await self.queues.durable(p.state.partitions)
        failed = [r for r in results if r is not None]
        if failed:
            raise StompError("acknowledgement failed", failed[0].message)

    async def on_nack(self, frame: Frame) -> None:
        sub, p = self._pending(frame)
        chosen = self._select(sub, p)
        for q in chosen:
            sub.unacked.pop(q.receipt, None)
        p.state.release([q.receipt for q in chosen])
        sub.wake()
        await self.queues.durable(p.state.partitions)

    async def end_subscription(self, sub: Subscription) -> None:
        if sub.task is not None:
            sub.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sub.task
        if sub.unacked and not sub.state.closed:
            receipts = list(sub.unacked)
            sub.unacked.clear()
            n = sub.state.release(receipts)
            log.debug("STOMP %s: returned %d unacknowledged messages of %s", self.peer, n, sub.id)

    # ------------------------------------------------------------------ delivery

    async def deliver(self, sub: Subscription) -> None:
        state = sub.state
        try:
            while not self.closing:
                now = state.clock()
                for receipt in [r for r, p in sub.unacked.items() if p.lapsed(now)]:
                    del sub.unacked[receipt]
                room = sub.prefetch - len(sub.unacked)
                if room > 0:
                    got = state.take(room, sub.visibility, sub.channel)
                    if got:
                        await self.send_messages(sub, got)
                        continue
                sub.kick = state.waiter()
                await sub.kick
                if state.closed:
                    raise StompError("queue deleted", f"the queue of subscription {sub.id!r} was deleted")
        except QueueError as e:
            await self.send_error(e.message, "", None)
            self.abort()
        except StompError as e:
            await self.send_error(e.message, e.detail)
            self.abort()
        except (ConnectionError, RuntimeError):
            self.abort()

    async def send_messages(self, sub: Subscription, got: list[Delivery]) -> None:
        state = sub.state
        for d in got:
            sub.unacked[d.receipt] = Pending(next(self.seq), state, d, d.message.nonce)
        await self.queues.durable(state.partitions)
        for d in got:
            m = d.message
            headers = [
                ("subscription", sub.id),
                ("message-id", d.receipt),
                ("destination", sub.destination),
                ("delivery-count", str(d.delivery_count)),
            ]
            if sub.ack != "auto":
                headers.append(("ack", d.receipt))
            if d.delivery_count > 1:
                headers.append(("redelivered", "true"))
            if m.channel:
                headers.append(("channel-id", m.channel))
            for k, v in (m.props or {}).items():
                if k not in STOMP_HEADERS and k not in ("subscription", "delivery-count", "redelivered"):
                    headers.append((k, v))
            self.frame("MESSAGE", headers, m.content)
        await self.writer.drain()
        if sub.ack == "auto":
            receipts = [d.receipt for d in got]
            for r in receipts:
                sub.unacked.pop(r, None)
            state.delete_many(receipts)
            await self.queues.durable(state.partitions)


def _heartbeat(value: str | None) -> tuple[int, int]:
    if not value:
        return 0, 0
    try:
        cx, cy = (int(x) for x in value.split(","))
    except ValueError:
        raise StompError("invalid heart-beat header", f"expected two integers, got {value!r}") from None
    if cx < 0 or cy < 0:
        raise StompError("invalid heart-beat header", "heart-beat intervals cannot be negative")
    return cx, cy


def _int_header(frame: Frame, names: tuple[str, ...], default: int, lo: int, hi: int) -> int:
    for name in names:
        text = frame.get(name)
        if text is None:
            continue
        try:
            value = int(text)
        except ValueError:
            raise StompError(f"invalid {name} header", f"{name} must be an integer") from None
        if not lo <= value <= hi:
            raise StompError(f"invalid {name} header", f"{name} must be between {lo} and {hi}")
        return value
    return default
