"""The ``metrics.listener`` HTTP endpoint (Prometheus scrapes ``/metrics``), and a helper to serve an
aiohttp application on a listener URL (shared with the console)."""

from __future__ import annotations

import logging
import socket
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from kafkite.metrics import CONTENT_TYPE, metrics_of
from kafkite.server.listen import bind_tcp, bound_port, close_all

log = logging.getLogger("kafkite.metrics")


class HttpService:
    """An aiohttp application on bound sockets: accepting requests once :meth:`serve` runs."""

    def __init__(self, runner: web.AppRunner, url: str, sockets: list[socket.socket] | None = None) -> None:
        self.runner = runner
        self.url = url
        self.sockets = sockets or []

    async def serve(self) -> None:
        while self.sockets:
            await web.SockSite(self.runner, self.sockets.pop(0)).start()

    async def stop(self) -> None:
        close_all(self.sockets)
        await self.runner.cleanup()


def parse_listener(key: str, spec: str, default_port: int) -> tuple[str, int, str]:
    """(host, port, path) of an ``http://host:port/path`` listener setting."""
    from kafkite.config import ConfigError

    try:
        parts = urlsplit(spec.strip() if "://" in spec else "http://" + spec.strip())
        port = parts.port
    except ValueError as e:
        raise ConfigError(f"{key}: {e}") from None
    if parts.scheme != "http":
        raise ConfigError(f"{key}: expected http://host:port, got {spec!r}")
    return parts.hostname or "localhost", default_port if port is None else port, parts.path.rstrip("/")


async def bind(
    key: str, spec: str, app: web.Application, host: str, port: int
) -> tuple[web.AppRunner, list[socket.socket], int]:
    """Set ``app`` up on listening sockets for host:port, not serving yet: the runner, the sockets and the
    bound port (port 0 picks a free one). ListenerError names ``key`` and ``spec`` when it cannot bind."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        socks = bind_tcp(key, spec, host, port)
    except BaseException:
        await runner.cleanup()
        raise
    return runner, socks, bound_port(socks)


async def serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start ``app`` on host:port; the runner and the bound port (port 0 picks a free one)."""
    runner, socks, bound = await bind("http", f"http://{host}:{port}", app, host, port)
    service = HttpService(runner, "", socks)
    try:
        await service.serve()
    except BaseException:
        await service.stop()
        raise
    return runner, bound


async def bind_metrics(broker: Any) -> HttpService | None:
    """Bind ``metrics.listener`` (ListenerError names it when it cannot be bound); not serving yet."""
    spec: str = broker.config["metrics.listener"]
    if not spec.strip():
        return None
    host, port, path = parse_listener("metrics.listener", spec, 9644)
    metrics = metrics_of(broker)
    assert metrics is not None

    async def scrape(request: web.Request) -> web.Response:
        body = metrics.registry.render()
        return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=f"kafkite metrics: see {path or '/metrics'}\n")

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    if path and path != "/metrics":
        app.router.add_get(path, scrape)
    app.router.add_get("/", index)
    runner, socks, bound = await bind("metrics.listener", spec.strip(), app, host, port)
    return MetricsService(runner, f"http://{host}:{bound}{path or '/metrics'}", socks)


class MetricsService(HttpService):
    async def serve(self) -> None:
        await super().serve()
        log.info("metrics listening on %s", self.url)


async def start_metrics(broker: Any) -> HttpService | None:
    """Bind and serve the metrics endpoint."""
    service = await bind_metrics(broker)
    if service is not None:
        await service.serve()
    return service
