"""The asyncio listeners: one TCP server per configured listener, all sharing one broker."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kafkite.broker.core import Broker
from kafkite.protocol.errors import ErrorCode
from kafkite.server.connection import KafkaConnection

log = logging.getLogger("kafkite.server")


class KafkaServer:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.servers: list[asyncio.base_events.Server] = []
        self.connections: set[KafkaConnection] = set()
        self.use_sendfile = True
        self.bound: list[tuple[str, str, int]] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for name, host, port in self.broker.config["listeners"]:
            srv = await loop.create_server(
                lambda name=name: KafkaConnection(self, name),  # type: ignore[misc]
                host or None,
                port,
                reuse_address=True,
                backlog=1024,
            )
            self.servers.append(srv)
            sock_port = srv.sockets[0].getsockname()[1]
            self.bound.append((name, host, sock_port))
            log.info("listening on %s://%s:%d", name, host or "0.0.0.0", sock_port)

    async def stop(self) -> None:
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
