"""The REST listener shared by the OCI Streaming and OCI Queue gateways (aiohttp).

Each gateway registers its routes through ``ROUTES``: "module:function" where ``function(app, broker)`` adds
routes to the aiohttp application. Gateways are adapters over the broker's own state, never a second store.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from kafkite.broker.core import Broker

log = logging.getLogger("kafkite.rest")

ROUTES: list[str] = ["kafkite.streaming.rest:register", "kafkite.queue.rest:register"]

BROKER_KEY = web.AppKey("broker", Broker)


class RestService:
    def __init__(self, runner: web.AppRunner, urls: list[str]) -> None:
        self.runner = runner
        self.urls = urls

    async def stop(self) -> None:
        await self.runner.cleanup()


def build_app(broker: Broker) -> web.Application:
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[BROKER_KEY] = broker
    for ref in ROUTES:
        module, _, name = ref.partition(":")
        getattr(importlib.import_module(module), name)(app, broker)
    return app


async def start_rest(broker: Broker) -> RestService | None:
    spec: str = broker.config["rest.listeners"]
    if not spec.strip():
        return None
    app = build_app(broker)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    urls = []
    for item in spec.split(","):
        parts = urlsplit(item.strip())
        site = web.TCPSite(runner, parts.hostname or "localhost", parts.port or 8090)
        await site.start()
        server: Any = site._server  # the bound port, when 0 was asked for
        port = server.sockets[0].getsockname()[1] if server and server.sockets else parts.port
        urls.append(f"http://{parts.hostname}:{port}")
        log.info("REST gateway listening on http://%s:%s", parts.hostname, port)
    broker.rest_urls = urls
    return RestService(runner, urls)
