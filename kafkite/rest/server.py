"""The REST listener shared by the OCI Streaming and OCI Queue gateways (aiohttp).

``GET /openapi.json`` is the OpenAPI 3 description of every route (``kafkite.rest.openapi``). Each gateway
registers its routes through ``ROUTES``: "module:function" where ``function(app, broker)`` adds
routes to the aiohttp application. Gateways are adapters over the broker's own state, never a second store.
``https://`` listeners take the Kafka listeners' ``ssl.*`` settings.
"""

from __future__ import annotations

import importlib
import logging
import socket
import ssl

from aiohttp import web

from kafkite.broker.core import Broker
from kafkite.rest.guard import MAX_BODY_BYTES, listener_scheme, tls_context
from kafkite.rest.openapi import document
from kafkite.server.listen import bind_tcp, bound_port, close_all

log = logging.getLogger("kafkite.rest")

ROUTES: list[str] = ["kafkite.streaming.rest:register", "kafkite.queue.rest:register"]

BROKER_KEY = web.AppKey("broker", Broker)


class RestService:
    """The REST listener: bound by :func:`bind_rest`, accepting requests once :meth:`serve` runs."""

    def __init__(
        self,
        runner: web.AppRunner,
        urls: list[str],
        sockets: list[socket.socket] | None = None,
        contexts: list[ssl.SSLContext | None] | None = None,
    ) -> None:
        self.runner = runner
        self.urls = urls
        self.sockets = sockets or []
        self.contexts = contexts or [None] * len(self.sockets)  # the TLS context of each socket

    async def serve(self) -> None:
        while self.sockets:
            sock, ctx = self.sockets.pop(0), self.contexts.pop(0)
            await web.SockSite(self.runner, sock, ssl_context=ctx).start()
        for url in self.urls:
            log.info("REST gateway listening on %s", url)

    async def stop(self) -> None:
        close_all(self.sockets)
        await self.runner.cleanup()


def build_app(broker: Broker) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[BROKER_KEY] = broker

    spec = document()

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(spec)

    app.router.add_get("/openapi.json", openapi)
    for ref in ROUTES:
        module, _, name = ref.partition(":")
        getattr(importlib.import_module(module), name)(app, broker)
    return app


async def bind_rest(broker: Broker) -> RestService | None:
    """Bind every ``rest.listeners`` address (ListenerError names the one that cannot be); not serving yet."""
    spec: str = broker.config["rest.listeners"]
    if not spec.strip():
        return None
    listeners = [
        (item.strip(), *listener_scheme("rest.listeners", item, "http", "https"))
        for item in spec.split(",")
        if item.strip()
    ]
    contexts = {
        i: tls_context(broker.config, "rest.listeners")
        for i, (_, scheme, _, _) in enumerate(listeners)
        if scheme == "https"
    }
    app = build_app(broker)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    service = RestService(runner, [])
    try:
        for i, (item, scheme, host, port) in enumerate(listeners):
            socks = bind_tcp("rest.listeners", item, host, 8090 if port is None else port)
            service.sockets += socks
            service.contexts += [contexts.get(i)] * len(socks)
            service.urls.append(f"{scheme}://{host}:{bound_port(socks)}")
    except BaseException:
        await service.stop()
        raise
    broker.rest_urls = service.urls
    return service


async def start_rest(broker: Broker) -> RestService | None:
    """Bind and serve the REST listeners."""
    service = await bind_rest(broker)
    if service is not None:
        await service.serve()
    return service
