"""Starting and stopping a whole broker: the one start-up path of ``kafkite serve`` and the embedded broker.

:func:`start_broker` checks the installation (every protocol spec the handlers need, the console's
page) and the optional dependencies the configuration asks for, builds the broker, binds *every* listener
(Kafka, REST, STOMP, metrics, console) without serving, starts the broker's state (log recovery,
coordinators), and only then lets every listener accept connections and logs "kafkite ready". Whatever fails
on the way is undone: nothing was served, no socket stays bound, and the error names what to change
(:class:`StartupError`, ``ConfigError``, or ``ListenerError`` naming the configuration key and the address).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from kafkite import compose
from kafkite.config import BrokerConfig
from kafkite.protocol.api_keys import ApiKey
from kafkite.protocol.messages import registry
from kafkite.protocol.specs import SpecError, load_all, specs_dir
from kafkite.server.server import KafkaServer

if TYPE_CHECKING:  # imported when a broker is started: ``kafkite --help`` does not load the broker
    from kafkite.broker.core import Broker
    from kafkite.server.server import KafkaServer

log = logging.getLogger("kafkite")

# Services started beside the Kafka listeners (REST gateways, STOMP, metrics, console): each entry is the
# setting that enables it and "module:function" where ``async def function(broker) -> Service | None``
# binds the service's listeners (raising ListenerError, naming its key, when one cannot be bound) and
# returns an object with ``async def serve()`` (start accepting connections) and ``async def stop()``.
# A service whose setting is empty is not even imported (the embedded broker starts faster without aiohttp).
SERVICES: list[tuple[str, str]] = [
    ("rest.listeners", "kafkite.rest.server:bind_rest"),
    ("stomp.listeners", "kafkite.queue.stomp:bind_stomp"),
    ("metrics.listener", "kafkite.server.metrics_http:bind_metrics"),
    ("console.listener", "kafkite.console.server:bind_console"),
]


class Service(Protocol):
    """A side service once bound: it starts accepting connections with ``serve`` and closes with ``stop``."""

    async def serve(self) -> None: ...

    async def stop(self) -> None: ...


ServiceBinder = Callable[["Broker"], Awaitable[Service | None]]


class StartupError(RuntimeError):
    """Start-up cannot go on (a broken installation, a missing optional dependency): the message says why and
    what to do."""


# module, the setting that needs it, the extra that installs it
OPTIONAL_DEPENDENCIES: list[tuple[str, str, str]] = [
    ("psycopg", "storage.engine=postgresql://...", "postgresql"),
    ("uvloop", "event.loop=uvloop", "uvloop"),
    ("jwt", "sasl.oauthbearer.jwks.endpoint.url", "oauth"),
]


def missing_extra(module: str, wanted_by: str, extra: str) -> str | None:
    """A message naming the extra to install when ``module`` cannot be imported, else None."""
    try:
        if importlib.util.find_spec(module) is not None:
            return None
    except (ImportError, ValueError):
        pass
    return f"{wanted_by} needs {module}: pip install 'kafkite[{extra}]'"


def check_optional_dependencies(config: BrokerConfig) -> None:
    engine: str = config["storage.engine"]
    wanted = {
        "psycopg": engine.startswith(("postgresql://", "postgres://")),
        "uvloop": config["event.loop"] == "uvloop",
        "jwt": any(v for k, v in config.raw.items() if k.endswith("sasl.oauthbearer.jwks.endpoint.url")),
    }
    for module, wanted_by, extra in OPTIONAL_DEPENDENCIES:
        if wanted[module]:
            problem = missing_extra(module, wanted_by, extra)
            if problem is not None:
                raise StartupError(problem)


def spec_file(key: int) -> str:
    """The spec file of an API key by kafkite's naming (PRODUCE -> Produce.spec)."""

    try:
        name = ApiKey(key).name
    except ValueError:
        return f"<API key {key}>.spec"
    return "".join(word.capitalize() for word in name.split("_")) + ".spec"


def check_protocol_specs(api_keys: list[int]) -> None:
    """Every API the broker serves has its spec, the headers too, and every codec compiles: else a
    StartupError naming the files missing and where they were looked for."""

    try:
        apis, headers = load_all()
    except (SpecError, OSError) as e:
        raise StartupError(f"broken installation: {e}") from None
    missing: list[str] = []
    if "RequestHeader" not in headers or "ResponseHeader" not in headers:
        missing.append("Headers.spec (the request and response headers)")
    missing += [f"{spec_file(key)} (API key {key})" for key in sorted(api_keys) if key not in apis]
    if missing:
        raise StartupError(
            f"broken installation: protocol specs missing from {specs_dir()}: {', '.join(missing)}; "
            "reinstall kafkite"
        )
    reg = registry()
    try:  # compile every codec now (a few milliseconds) rather than on a client's first request
        for key in api_keys:
            api = apis[key]
            for version in range(api.versions.lo, min(api.versions.hi, api.versions.lo + 100) + 1):
                reg.request(key, version)
                reg.response(key, version)
        for name, spec in headers.items():
            for version in range(spec.versions.lo, min(spec.versions.hi, spec.versions.lo + 100) + 1):
                reg.header(name, version)
    except (SpecError, KeyError, ValueError) as e:
        raise StartupError(f"broken installation: protocol specs in {specs_dir()}: {e}") from None


def check_console_files(config: BrokerConfig) -> None:
    if not config["console.listener"].strip():
        return
    # The console (aiohttp and its routes) is loaded only when its listener is configured.
    from kafkite.console.server import STATIC, STATIC_FILES

    missing = [name for name in STATIC_FILES if not (STATIC / name).is_file()]
    if missing:
        raise StartupError(
            f"broken installation: the web console's files are missing from {STATIC}: {', '.join(missing)}; "
            "reinstall kafkite (or leave console.listener empty)"
        )


def _binder(ref: str) -> ServiceBinder:
    """The binding function named by "module:function" (see SERVICES)."""
    module, _, name = ref.partition(":")
    binder: ServiceBinder = getattr(importlib.import_module(module), name)
    return binder


@dataclass
class RunningBroker:
    """A started broker: its state, its Kafka listeners and its side services."""

    broker: Broker
    server: KafkaServer
    services: list[Service] = field(default_factory=list)
    stopped: bool = False

    @property
    def bootstrap(self) -> str:
        """host:port of the first listener, as advertised to clients."""
        host, port = self.broker.advertised
        return f"{host}:{port}"

    async def stop(self) -> None:
        """Close every listener and connection, then flush and close every log (idempotent)."""
        if self.stopped:
            return
        self.stopped = True
        log.info("shutting down: closing listeners and flushing every log")
        try:
            for svc in reversed(self.services):
                await svc.stop()
            await self.server.stop()
        finally:
            await self.broker.stop()
        log.info("stopped")


async def start_broker(config: BrokerConfig) -> RunningBroker:
    """Check, bind, start and serve (see the module's docstring); raises before serving anything."""
    check_optional_dependencies(config)

    broker = compose.build_broker(config)
    check_protocol_specs(sorted(broker.handlers))
    check_console_files(config)
    server = KafkaServer(broker)
    server.bind()  # first: a listener asked for port 0 is advertised with its real port from here on
    running = RunningBroker(broker, server)
    started = False
    try:
        await broker.start()
        started = True
        for key, ref in SERVICES:
            if not str(config[key]).strip():
                continue
            svc = await _binder(ref)(broker)
            if svc is not None:
                running.services.append(svc)
        await server.serve()
        for svc in running.services:
            await svc.serve()
    except BaseException:
        for svc in reversed(running.services):
            try:
                await svc.stop()
            except Exception:
                log.exception("stopping a service after a failed start-up")
        await server.stop()
        if started:
            await broker.stop()
        else:  # a start that failed half-way (the data directory is locked, ...): release what it took
            with contextlib.suppress(Exception):
                await broker.stop()
        raise
    if broker.blackhole:
        log.warning("=" * 72)
        log.warning("BLACKHOLE MODE: Produce is acknowledged WITHOUT STORING; Fetch returns nothing.")
        log.warning("This measures the client/loopback ceiling only. Never use it for real data.")
        log.warning("=" * 72)
    host, port = broker.advertised
    log.info(
        "kafkite ready: cluster %s, node %d, advertised as %s:%d",
        broker.cluster_id,
        broker.node_id,
        host,
        port,
    )
    return running
