"""A kafkite broker inside your own Python program or test suite.

::

    from kafkite.embedded import EmbeddedBroker

    with EmbeddedBroker() as broker:                 # memory engine, a free loopback port
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers})

    async with AsyncEmbeddedBroker(engine="file", overrides={"num.partitions": "3"}) as broker:
        consumer = AIOKafkaConsumer("orders", bootstrap_servers=broker.bootstrap_servers)

:class:`EmbeddedBroker` runs the broker on an asyncio loop in a background thread (for synchronous code, any
client library); :class:`AsyncEmbeddedBroker` runs it on the running loop (for asyncio code). Both start
through the same path as ``kafkite serve`` (``kafkite.startup``), listen on a free port of 127.0.0.1, keep the
REST and STOMP listeners off unless asked for, and on exit close every listener and connection, stop every
task, join the thread and remove the temporary data directory they made.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from kafkite.config import BrokerConfig

if TYPE_CHECKING:  # loaded when the broker starts: importing kafkite.embedded stays cheap
    from kafkite.startup import RunningBroker

__all__ = ["AsyncEmbeddedBroker", "EmbeddedBroker", "EmbeddedBrokerError"]

START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0


class EmbeddedBrokerError(RuntimeError):
    """The broker could not start or stop: the message says why."""


Overrides = Mapping[str, object] | Iterable[str] | None


def _overrides(overrides: Overrides) -> dict[str, str]:
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        return {str(k): _value(v) for k, v in overrides.items()}
    out: dict[str, str] = {}
    for item in overrides:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _stop_left_running(ref: weakref.ref[EmbeddedBroker]) -> None:
    broker = ref()
    if broker is not None:
        broker.stop()


def _at_exit(broker: EmbeddedBroker) -> None:
    """Stop ``broker`` at interpreter exit if it still runs. Thread-exit hooks run (last registered first)
    before executors refuse new work, which the broker needs to flush its logs; plain atexit hooks run after
    that."""
    import concurrent.futures.thread  # noqa: F401 - registers its exit hook first, so that ours runs before

    callback = functools.partial(_stop_left_running, weakref.ref(broker))
    register = getattr(threading, "_register_atexit", None)
    if register is None:
        atexit.register(callback)
        return
    try:
        register(callback)
    except RuntimeError:  # already shutting down
        pass


class _Settings:
    """The broker configuration of an embedded broker and the data directory it owns."""

    def __init__(self, engine: str, data_dir: str | Path | None, host: str, overrides: Overrides) -> None:
        self.engine = engine
        self.host = host
        self.given_dir = Path(data_dir) if data_dir is not None else None
        self.overrides = _overrides(overrides)
        self.temp_dir: str | None = None

    def config(self) -> BrokerConfig:
        """An embedded broker's defaults, then the caller's overrides (validated: ConfigError names a key)."""
        if self.given_dir is None and "log.dirs" not in self.overrides:
            self.temp_dir = tempfile.mkdtemp(prefix="kafkite-embedded-")
        data_dir = str(self.given_dir) if self.given_dir is not None else self.temp_dir
        values: dict[str, str] = {
            "listeners": f"PLAINTEXT://{self.host}:0",
            "storage.engine": self.engine,
            "rest.listeners": "",
            "stomp.listeners": "",
        }
        if data_dir is not None:
            values["log.dirs"] = data_dir
        values.update(self.overrides)
        try:
            return BrokerConfig(values)
        except BaseException:
            self.cleanup()
            raise

    def cleanup(self) -> None:
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None


class _Handle:
    """What both flavours expose once started."""

    _running: RunningBroker | None = None

    @property
    def running(self) -> bool:
        return self._running is not None and not self._running.stopped

    def _require(self) -> RunningBroker:
        if self._running is None:
            raise EmbeddedBrokerError("the embedded broker is not running")
        return self._running

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for a client's ``bootstrap.servers``."""
        return self._require().bootstrap

    @property
    def host(self) -> str:
        return self._require().broker.advertised[0]

    @property
    def port(self) -> int:
        return self._require().broker.advertised[1]

    @property
    def rest_urls(self) -> list[str]:
        """The REST gateway's URLs when ``rest.listeners`` was given (``http://127.0.0.1:0`` picks a port)."""
        return list(self._require().broker.rest_urls)

    @property
    def config(self) -> BrokerConfig:
        return self._require().broker.config

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir


class EmbeddedBroker(_Handle):
    """A broker on its own asyncio loop in a background thread; a context manager, or ``start()``/``stop()``.

    ``engine``: ``"memory"`` (default), ``"file"`` or a ``postgresql://`` URL (any ``storage.engine``).
    ``data_dir``: where the file engine keeps its logs (default: a temporary directory removed on stop).
    ``overrides``: broker settings by Kafka key name, as a mapping or ``"key=value"`` strings.
    """

    def __init__(
        self,
        engine: str = "memory",
        *,
        data_dir: str | Path | None = None,
        overrides: Overrides = None,
        host: str = "127.0.0.1",
    ) -> None:
        self._settings = _Settings(engine, data_dir, host, overrides)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._stop_error: BaseException | None = None

    def start(self) -> EmbeddedBroker:
        if self._thread is not None:
            raise EmbeddedBrokerError("the embedded broker was already started")
        config = self._settings.config()
        self._started = threading.Event()
        self._error = self._stop_error = self._running = None
        self._thread = threading.Thread(
            target=self._run, args=(config,), name="kafkite-embedded-broker", daemon=True
        )
        self._thread.start()
        _at_exit(self)  # a broker left running is still stopped cleanly when the program exits
        if not self._started.wait(START_TIMEOUT):
            raise EmbeddedBrokerError(f"the embedded broker did not start within {START_TIMEOUT:g}s")
        if self._error is not None:
            self._thread.join(STOP_TIMEOUT)
            self._thread = None
            self._settings.cleanup()
            raise self._error
        return self

    def _run(self, config: BrokerConfig) -> None:
        try:
            asyncio.run(self._main(config))
        except BaseException as e:  # reported to the thread that called start() or stop()
            if not self._started.is_set():
                self._error = e
            else:
                self._stop_error = e
        finally:
            self._started.set()

    async def _main(self, config: BrokerConfig) -> None:
        # Loaded when the broker starts: importing kafkite.embedded stays cheap.
        from kafkite.startup import start_broker

        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._running = running = await start_broker(config)
        self._started.set()
        try:
            await self._stop_event.wait()
        finally:
            await running.stop()

    def stop(self) -> None:
        """Stop the broker, join its thread and remove its temporary data directory (idempotent)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:
                pass  # the loop already ended
        thread.join(STOP_TIMEOUT)
        self._loop = None
        self._settings.cleanup()
        if thread.is_alive():
            raise EmbeddedBrokerError(f"the embedded broker did not stop within {STOP_TIMEOUT:g}s")
        if self._stop_error is not None:
            error, self._stop_error = self._stop_error, None
            raise EmbeddedBrokerError(f"the embedded broker failed while stopping: {error!r}") from error

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class AsyncEmbeddedBroker(_Handle):
    """A broker on the running asyncio loop: ``async with AsyncEmbeddedBroker() as broker: ...``.

    Takes the same arguments as :class:`EmbeddedBroker`. Its disk work runs in the loop's default executor,
    whose threads end with the loop.
    """

    def __init__(
        self,
        engine: str = "memory",
        *,
        data_dir: str | Path | None = None,
        overrides: Overrides = None,
        host: str = "127.0.0.1",
    ) -> None:
        self._settings = _Settings(engine, data_dir, host, overrides)

    async def start(self) -> AsyncEmbeddedBroker:
        # Loaded when the broker starts: importing kafkite.embedded stays cheap.
        from kafkite.startup import start_broker

        if self.running:
            raise EmbeddedBrokerError("the embedded broker was already started")
        config = self._settings.config()
        try:
            self._running = await start_broker(config)
        except BaseException:
            self._settings.cleanup()
            raise
        return self

    async def stop(self) -> None:
        """Stop the broker and remove its temporary data directory (idempotent)."""
        running = self._running
        if running is None:
            return
        try:
            await running.stop()
        finally:
            self._settings.cleanup()

    async def __aenter__(self) -> AsyncEmbeddedBroker:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
