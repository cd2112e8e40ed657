"""The ``metrics.listener`` HTTP endpoint (Prometheus scrapes ``/metrics``), and a helper to serve an
aiohttp application on a listener URL (shared with the console).

``https://`` listeners take the Kafka listeners' ``ssl.*`` settings. When the broker's Kafka listeners are
secured (``kafkite.doors``), a scrape must log in with HTTP Basic authentication as one of the
broker's SASL users (Prometheus' ``basic_auth``), who needs DESCRIBE on the cluster when an authorizer is
configured; refusals are 401/403 and go to the audit trail.
"""

from __future__ import annotations

import base64
import binascii
import logging
import socket
import ssl
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from kafkite.config import ConfigError
from kafkite.doors import Caller, audit_unauthenticated, authorize_cluster, door_secured, login_checker
from kafkite.metrics import CONTENT_TYPE, metrics_of
from kafkite.rest.guard import tls_context
from kafkite.security.acl import AclOperation
from kafkite.server.listen import bind_tcp, bound_port, close_all

log = logging.getLogger("kafkite.metrics")


class HttpService:
    """An aiohttp application on bound sockets: accepting requests once :meth:`serve` runs."""

    def __init__(
        self,
        runner: web.AppRunner,
        url: str,
        sockets: list[socket.socket] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.runner = runner
        self.url = url
        self.sockets = sockets or []
        self.ssl_context = ssl_context

    async def serve(self) -> None:
        while self.sockets:
            await web.SockSite(self.runner, self.sockets.pop(0), ssl_context=self.ssl_context).start()

    async def stop(self) -> None:
        close_all(self.sockets)
        await self.runner.cleanup()


def parse_listener(key: str, spec: str, default_port: int) -> tuple[str, int, str]:
    """(host, port, path) of an ``http[s]://host:port/path`` listener setting."""
    host, port, path, _ = parse_listener_url(key, spec, default_port)
    return host, port, path


def parse_listener_url(key: str, spec: str, default_port: int) -> tuple[str, int, str, str]:
    """(host, port, path, scheme) of an ``http://`` or ``https://host:port/path`` listener setting."""
    try:
        parts = urlsplit(spec.strip() if "://" in spec else "http://" + spec.strip())
        port = parts.port
    except ValueError as e:
        raise ConfigError(f"{key}: {e}") from None
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"{key}: expected http://host:port or https://host:port, got {spec!r}")
    host = parts.hostname or "localhost"
    return host, default_port if port is None else port, parts.path.rstrip("/"), parts.scheme


def listener_tls(broker: Any, key: str, scheme: str) -> ssl.SSLContext | None:
    """The TLS context of an ``https://`` listener (the Kafka listeners' ``ssl.*`` settings)."""
    if scheme != "https":
        return None

    return tls_context(broker.config, key)


def basic_credentials(request: web.Request) -> tuple[str, str] | None:
    """(user, password) of an ``Authorization: Basic`` header, None without a readable one."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, ValueError):
        return None
    return (user, password) if sep else None


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


async def serve(
    app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, int]:
    """Start ``app`` on host:port; the runner and the bound port (port 0 picks a free one)."""
    runner, socks, bound = await bind("http", f"http://{host}:{port}", app, host, port)
    service = HttpService(runner, "", socks, ssl_context)
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
    host, port, path, scheme = parse_listener_url("metrics.listener", spec, 9644)
    tls = listener_tls(broker, "metrics.listener", scheme)
    metrics = metrics_of(broker)
    assert metrics is not None
    secured = door_secured(broker.config, "metrics")

    async def scrape(request: web.Request) -> web.Response:
        if secured:
            address = request.remote or ""
            creds = basic_credentials(request)
            if creds is None or not await login_checker(broker).check(creds[0], creds[1], "metrics"):
                if creds is not None:
                    audit_unauthenticated(
                        broker, "metrics", address, "Scrape", "bad user or password", creds[0]
                    )
                return web.Response(
                    status=401,
                    text="log in as a SASL user (HTTP Basic authentication)\n",
                    headers={"WWW-Authenticate": 'Basic realm="kafkite metrics", charset="UTF-8"'},
                )
            caller = Caller(f"User:{creds[0]}", address, "metrics")
            if not authorize_cluster(broker, caller, AclOperation.DESCRIBE, operation="Scrape"):
                return web.Response(status=403, text=f"{caller.name} may not DESCRIBE the cluster\n")
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
    return MetricsService(runner, f"{scheme}://{host}:{bound}{path or '/metrics'}", socks, tls)


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
