"""The asyncio listeners: one TCP server per configured listener, all sharing one broker.

Each listener name has a security protocol (``listener.security.protocol.map``): PLAINTEXT, SSL (TLS, with
the client certificate's subject as principal when one is presented), SASL_PLAINTEXT or SASL_SSL (SASL
authentication required before any other request). The server also enforces ``max.connections``,
``max.connections.per.ip`` and ``connections.max.idle.ms``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections import Counter
from typing import Any

from kafkite.broker.core import Broker
from kafkite.config import ConfigError
from kafkite.protocol.errors import ErrorCode
from kafkite.server.connection import KafkaConnection
from kafkite.server.listen import DEFAULT_BACKLOG, bind_tcp, bound_port, close_all

log = logging.getLogger("kafkite.server")


class KafkaServer:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.servers: list[asyncio.base_events.Server] = []
        self.connections: set[KafkaConnection] = set()
        self.use_sendfile = True
        self.bound: list[tuple[str, str, int]] = []
        self.protocols: dict[str, str] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._ssl: ssl.SSLContext | None = None
        self._unserved: list[tuple[str, str, list[socket.socket]]] = []  # bound, not yet accepting

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
            from kafkite.security.tls import server_context

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
        """Close connections idle for longer than connections.max.idle.ms."""
        while True:
            idle_ms = max(1, int(self.broker.config["connections.max.idle.ms"]))
            await asyncio.sleep(min(idle_ms / 4000, 5.0))
            now = time.monotonic()
            for conn in list(self.connections):
                if not conn.pending and (now - conn.last_active) * 1000 > idle_ms:
                    log.info("closing %s: idle for more than %d ms", conn.peer, idle_ms)
                    conn.close()

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
            for sock in socks:
                srv = await loop.create_server(
                    lambda name=name: KafkaConnection(self, name),
                    sock=sock,
                    backlog=DEFAULT_BACKLOG,
                    ssl=tls,
                    ssl_handshake_timeout=10.0 if tls is not None else None,
                )
                self.servers.append(srv)
            port = bound_port(socks)
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
        from kafkite.broker.metadata import supported_api_versions

        return {
            "error_code": int(ErrorCode.UNSUPPORTED_VERSION),
            "api_keys": supported_api_versions(self.broker),
        }
