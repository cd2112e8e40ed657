"""The asyncio listeners: one TCP server per configured listener, all sharing one broker.

Each listener name has a security protocol (``listener.security.protocol.map``): PLAINTEXT, SSL (TLS, with
the client certificate's subject as principal when one is presented), SASL_PLAINTEXT or SASL_SSL (SASL
authentication required before any other request). The server also enforces ``max.connections``,
``max.connections.per.ip`` and ``connections.max.idle.ms``, bounds the bytes of large requests held across
all connections (``queued.max.request.bytes``, ``RequestMemory``), closes connections that trickle a request
in (``socket.request.timeout.ms``) and releases the read buffers of idle connections.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import ssl
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, cast

from kafkite.broker.core import Broker
from kafkite.broker.metadata import supported_api_versions
from kafkite.config import ConfigError
from kafkite.protocol import framing
from kafkite.protocol.errors import ErrorCode
from kafkite.security.tls import server_context
from kafkite.server.accept import Listener
from kafkite.server.connection import KafkaConnection
from kafkite.server.listen import bind_tcp, bound_port, close_all

log = logging.getLogger("kafkite.server")

IDLE_TRIM_SECONDS = 1.0  # a connection silent this long gives its read buffer back
RETURN_TO_OS_BYTES = 16 << 20  # freed buffers past which the allocator is asked to give pages back


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim: freed heap pages go back to the system (buffers of closed connections would
    otherwise stay in the process, fragmented between live objects)."""
    if sys.platform != "linux":
        return None
    try:
        import ctypes

        fn = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return cast(Callable[[int], int], fn)


class RequestMemory:
    """Kafka's ``queued.max.request.bytes``: the bytes of large requests (those received into a buffer of
    their own) held across all connections, from their first bytes until their handler has finished.

    A large request's buffer is admitted piece by piece as its bytes arrive (the frame reader asks before
    allocating: its first 256 KiB, then each doubling), so a connection that announces a large request and
    sends nothing holds little. A piece is admitted when it fits under the limit; a new request also waits
    its turn behind requests that asked earlier; the oldest request still arriving always gets its pieces
    (so requests that have begun to arrive cannot all wait on one another: at most one request's worth
    over the limit). Until its piece is admitted a connection does not read. Small requests are not counted
    here: each connection holds at most ``MAX_IN_FLIGHT`` of them. A limit of 0 or less holds nothing back.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.waiting: deque[KafkaConnection] = deque()
        self.receiving: dict[KafkaConnection, None] = {}  # connections in a large request, oldest first
        self._waking = False

    def reserve(self, conn: KafkaConnection, size: int, growing: bool) -> bool:
        if self.limit > 0:
            fits = self.used + size <= self.limit
            if growing:
                ok = fits or next(iter(self.receiving), None) is conn
            else:
                ok = (fits or self.used == 0) and not (self.waiting and self.waiting[0] is not conn)
            if not ok:
                if conn not in self.waiting:
                    self.waiting.append(conn)
                return False
            if self.waiting and conn in self.waiting:
                self.waiting.remove(conn)
        self.used += size
        if not growing:
            self.receiving.setdefault(conn)
        return True

    def done_receiving(self, conn: KafkaConnection) -> None:
        """``conn`` is no longer in the middle of a large request."""
        if self.receiving.pop(conn, 0) is None and self.waiting:
            self._wake_soon()

    def release(self, size: int) -> None:
        if size <= 0:
            return
        self.used -= size
        if self.waiting:
            self._wake_soon()

    def forget(self, conn: KafkaConnection) -> None:
        """``conn`` went away."""
        self.done_receiving(conn)
        if conn in self.waiting:
            self.waiting.remove(conn)
            if self.waiting:
                self._wake_soon()

    def _wake_soon(self) -> None:
        if not self._waking:
            self._waking = True
            asyncio.get_running_loop().call_soon(self._wake)

    def _wake(self) -> None:
        self._waking = False
        for conn in list(self.waiting):
            if conn.closing or conn.draining:
                self.waiting.remove(conn)
                continue
            conn.memory_available()


class KafkaServer:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.servers: list[Listener] = []
        self.connections: set[KafkaConnection] = set()
        self.use_sendfile = True
        self.bound: list[tuple[str, str, int]] = []
        self.protocols: dict[str, str] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._ssl: ssl.SSLContext | None = None
        self._unserved: list[tuple[str, str, list[socket.socket]]] = []  # bound, not yet accepting
        self.request_memory = RequestMemory(int(broker.config["queued.max.request.bytes"]))
        # Buffers of large requests kept for the next ones: an eighth of the request memory, at most 64 MiB.
        queued = int(broker.config["queued.max.request.bytes"])
        self.frame_pool = framing.FramePool(min(64 << 20, queued // 8) if queued > 0 else 64 << 20)
        self._pool_taken = 0
        self.freed_bytes = 0  # read buffers given back since the allocator last returned pages
        self._malloc_trim = _malloc_trim()

    def security_protocol(self, listener: str) -> str:
        return self.protocols.get(listener) or self.broker.config["listener.security.protocol.map"].get(
            listener, "PLAINTEXT"
        )

    def _check_listeners(self) -> ssl.SSLContext | None:
        """Every listener has a security protocol; SSL ones have a usable certificate (raises ConfigError)."""
        proto_map: dict[str, str] = self.broker.config["listener.security.protocol.map"]
        names = [name for name, _, _ in self.broker.config["listeners"]]
        for name in names:
            if name not in proto_map:
                raise ConfigError(
                    f"listeners: {name} has no security protocol; add {name}:PLAINTEXT (or SSL, "
                    "SASL_PLAINTEXT, SASL_SSL) to listener.security.protocol.map"
                )
            self.protocols[name] = proto_map[name]
        if len(set(names)) != len(names):
            raise ConfigError("listeners: each listener needs its own name")
        for name, _, _ in self.broker.config["advertised.listeners"]:
            if name not in names:
                raise ConfigError(
                    f"advertised.listeners: {name} is not one of the listeners ({', '.join(names)})"
                )
        if any(p.endswith("SSL") for p in self.protocols.values()):
            return server_context(self.broker.config)
        return None

    def admission_refusal(self, conn: KafkaConnection) -> str | None:
        """Why a new connection is refused (connection limits), or None."""
        cfg = self.broker.config
        if len(self.connections) > cfg["max.connections"]:
            return f"max.connections={cfg['max.connections']} reached"
        host = conn.peer.rsplit(":", 1)[0]
        if (
            sum(1 for c in self.connections if c.peer.rsplit(":", 1)[0] == host)
            > cfg["max.connections.per.ip"]
        ):
            return f"max.connections.per.ip={cfg['max.connections.per.ip']} reached for {host}"
        return None

    def connections_per_ip(self) -> Counter[str]:
        return Counter(c.peer.rsplit(":", 1)[0] for c in self.connections)

    async def _reap_idle(self) -> None:
        """Close connections idle for longer than connections.max.idle.ms and those whose request has taken
        longer than socket.request.timeout.ms to arrive; give idle connections' read buffers back."""
        while True:
            idle_ms = max(1, int(self.broker.config["connections.max.idle.ms"]))
            frame_ms = max(1, int(self.broker.config["socket.request.timeout.ms"]))
            await asyncio.sleep(min(idle_ms / 4000, frame_ms / 4000, IDLE_TRIM_SECONDS))
            now = time.monotonic()
            for conn in list(self.connections):
                started = conn.frame_started
                if started is not None and not conn.reading_paused and (now - started) * 1000 > frame_ms:
                    log.warning(
                        "closing %s: a request of %d bytes so far took more than %d ms to arrive",
                        conn.peer,
                        conn.frames.buffered,
                        frame_ms,
                    )
                    conn.close()
                elif not conn.pending and (now - conn.last_active) * 1000 > idle_ms:
                    log.info("closing %s: idle for more than %d ms", conn.peer, idle_ms)
                    conn.close()
                elif now - conn.last_active > IDLE_TRIM_SECONDS:
                    held = conn.frames.footprint
                    if conn.frames.trim():
                        self.freed_bytes += held
            pool = self.frame_pool
            if pool.held and pool.taken == self._pool_taken:  # no large request since the last round
                self.freed_bytes += pool.clear()
            self._pool_taken = pool.taken
            if self.freed_bytes >= RETURN_TO_OS_BYTES and self._malloc_trim is not None:
                self._malloc_trim(0)
                self.freed_bytes = 0

    def bind(self) -> None:
        """Bind every listener without accepting connections yet (see :meth:`serve`).

        Raises ConfigError for a listener setting that makes no sense and ListenerError (naming ``listeners``
        and the address) for one that cannot be bound. A listener asked for port 0 gets a free port, and its
        advertised address (when it mirrors the listener) takes the same port.
        """
        self._ssl = self._check_listeners()
        try:
            for name, host, port in self.broker.config["listeners"]:
                address = f"{name}://{host}:{port}"
                socks = bind_tcp("listeners", address, host, port)
                self._unserved.append((name, host, socks))
                self.bound.append((name, host, bound_port(socks)))
        except BaseException:
            self.close_unserved()
            self.bound.clear()
            raise
        ports = {name: port for name, _, port in self.bound}
        if self.broker.config.resolve_listener_ports(ports):
            adv = self.broker.config["advertised.listeners"][0]
            self.broker.advertised = (adv[1], adv[2])

    async def serve(self) -> None:
        """Start accepting connections on the listeners :meth:`bind` bound."""
        loop = asyncio.get_running_loop()
        while self._unserved:
            name, host, socks = self._unserved.pop(0)
            tls = self._ssl if self.protocols[name].endswith("SSL") else None
            port = bound_port(socks)
            # An accept loop of our own: it pauses instead of spinning when descriptors run out.
            srv = Listener(
                loop,
                functools.partial(KafkaConnection, self, name),
                socks,
                ssl_context=tls,
                ssl_handshake_timeout=10.0 if tls is not None else None,
                name=f"{name}://{host or '0.0.0.0'}:{port}",
            )
            srv.start()
            self.servers.append(srv)
            log.info("listening on %s://%s:%d (%s)", name, host or "0.0.0.0", port, self.protocols[name])
        if self._reaper is None:
            self._reaper = loop.create_task(self._reap_idle(), name="idle-connections")

    async def start(self) -> None:
        """Bind and serve every listener."""
        self.bind()
        await self.serve()

    def close_unserved(self) -> None:
        for _, _, socks in self._unserved:
            close_all(socks)
        self._unserved.clear()

    async def stop(self) -> None:
        self.close_unserved()
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for srv in self.servers:
            srv.close()
        for conn in list(self.connections):
            conn.close()
        for srv in self.servers:
            await srv.wait_closed()
        self.servers.clear()

    def api_versions_error_body(self) -> dict[str, Any]:
        return {
            "error_code": int(ErrorCode.UNSUPPORTED_VERSION),
            "api_keys": supported_api_versions(self.broker),
        }
