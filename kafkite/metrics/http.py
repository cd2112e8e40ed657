"""The ``metrics.listener`` HTTP endpoint (Prometheus scrapes ``/metrics``), and a helper to serve an
aiohttp application on a listener URL (shared with the console)."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from kafkite.metrics import CONTENT_TYPE, metrics_of

log = logging.getLogger("kafkite.metrics")


class HttpService:
    def __init__(self, runner: web.AppRunner, url: str) -> None:
        self.runner = runner
        self.url = url

    async def stop(self) -> None:
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


async def serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start ``app`` on host:port; the runner and the bound port (port 0 picks a free one)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    server: Any = site._server
    if server is not None and server.sockets:
        port = server.sockets[0].getsockname()[1]
    return runner, port


async def start_metrics(broker: Any) -> HttpService | None:
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
    runner, bound = await serve(app, host, port)
    url = f"http://{host}:{bound}{path or '/metrics'}"
    log.info("metrics listening on %s", url)
    return HttpService(runner, url)
