"""One client connection: frames in, handlers run, responses out in request order.

Requests on a connection are started in arrival order (so appends keep their order) and may overlap while
they wait (a long-poll fetch, an fsync); responses are written strictly in request order. Reading pauses when
too many requests are in flight or when the transport's write buffer is full (back-pressure), and file ranges
in Fetch responses go to the socket with sendfile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, cast

from kafkite.broker.core import CloseConnection, RequestContext
from kafkite.metrics import hooks
from kafkite.protocol import framing
from kafkite.protocol.api_keys import ApiKey
from kafkite.protocol.messages import Part, Registry, registry
from kafkite.protocol.primitives import DecodeError
from kafkite.security import connection as security

if TYPE_CHECKING:
    from kafkite.server.server import KafkaServer

log = logging.getLogger("kafkite.server")

MAX_IN_FLIGHT = 64
# File ranges smaller than this are read and written with the rest of the response: one system call
# instead of a sendfile round of its own.
SENDFILE_MIN_BYTES = 64 * 1024


class KafkaConnection(asyncio.BufferedProtocol):
    def __init__(self, server: KafkaServer, listener: str) -> None:
        self.server = server
        self.broker = server.broker
        self.listener = listener
        self.reg: Registry = registry()
        self.frames = framing.FrameReader(server.broker.config["socket.request.max.bytes"])
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.pending: deque[asyncio.Future[list[Part] | None]] = deque()
        self.wakeup: asyncio.Event = asyncio.Event()
        self.writable: asyncio.Event = asyncio.Event()
        self.writable.set()
        self.writer_task: asyncio.Task[None] | None = None
        self.reading_paused = False
        self.closing = False
        self.draining = False  # a bad frame arrived: answer the requests before it, read nothing more, close
        self.state: dict[str, Any] = {}  # per-connection state for handlers (SASL, sessions)
        self._discard = bytearray(4096)  # where bytes go once the connection stops reading requests
        self.security_protocol: str = server.security_protocol(listener)
        self.tls = False  # sendfile cannot write into a TLS transport
        self.muted = False  # reading stopped for a quota's throttle time
        self.last_active = time.monotonic()

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the Transport interface without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        transport.set_write_buffer_limits(high=4 * 1024 * 1024)
        self.writer_task = asyncio.get_running_loop().create_task(self._writer())
        self.server.connections.add(self)
        hooks.connection_opened(self)
        security.connection_made(self, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.connections.discard(self)
        for fut in self.pending:
            fut.cancel()
        self.pending.clear()
        self.wakeup.set()
        self.writable.set()
        hooks.connection_closed(self, exc)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.closing or self.draining:
            return memoryview(self._discard)
        return self.frames.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        if self.closing or self.draining:
            return
        self.last_active = time.monotonic()
        try:
            self.frames.buffer_updated(nbytes)
            for frame in self.frames:
                self._dispatch(frame)
                if self.closing or self.draining:
                    return
        except framing.FrameTooLarge as e:
            self._reject(str(e))
            return
        if len(self.pending) >= MAX_IN_FLIGHT and not self.reading_paused and self.transport:
            self.transport.pause_reading()
            self.reading_paused = True

    # ------------------------------------------------------------------ requests

    def _dispatch(self, frame: bytearray) -> None:
        if security.raw_sasl_frame(self, frame):  # a SASL token after SaslHandshake v0, not a request
            return
        buf = memoryview(frame)
        try:
            key, version = framing.peek_key_version(buf)
            api = self.reg.api(key)
            if api is None or key not in self.broker.handlers:
                raise DecodeError(f"unsupported API key {key}")
            header = framing.decode_request_header(
                self.reg, buf, self.reg.request_header_version(key, version)
            )
            if version not in api.versions:
                if key == ApiKey.API_VERSIONS:
                    # Kafka answers an ApiVersions it cannot parse with a v0 response listing its versions.
                    self._respond_now(header, 0, self.server.api_versions_error_body())
                    return
                raise DecodeError(f"{api.name} v{version} is not supported (supported: {api.versions})")
            # Bytes after the request body are ignored, as Kafka does: librdkafka's Metadata v9+ request for
            # all topics carries three stray bytes after its null topic array.
            body, _ = self.reg.request(key, version).decode(buf, header.header_size)
        except DecodeError as e:
            self._reject(f"malformed request: {e}")
            return
        refusal = security.refuse_before_auth(self, key)
        if refusal:
            self._reject(refusal)
            return
        ctx = RequestContext(
            api_key=key,
            api_version=version,
            correlation_id=header.correlation_id,
            client_id=header.client_id or "",
            client_host=self.peer.rsplit(":", 1)[0],
            listener=self.listener,
            principal=self.state.get("principal", "User:ANONYMOUS"),
        )
        ctx.extra["connection"] = self
        ctx.extra["request_size"] = len(frame)
        fut = asyncio.ensure_future(self._run(ctx, body))
        self.pending.append(fut)
        self.wakeup.set()

    def _respond_now(self, header: framing.RequestHeader, version: int, body: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Part] | None] = loop.create_future()
        parts, _ = framing.encode_response(self.reg, header.api_key, version, header.correlation_id, body)
        fut.set_result(parts)
        self.pending.append(fut)
        self.wakeup.set()

    async def _run(self, ctx: RequestContext, body: dict[str, Any]) -> list[Part] | None:
        handler = self.broker.handlers[ctx.api_key]
        started = time.perf_counter()
        try:
            resp = await handler(self.broker, ctx, body)
        except CloseConnection:
            hooks.request_done(self, ctx, body, None, started, failed=True)
            self.close()
            return None
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "handler for api %s v%s failed; closing %s", ctx.api_key, ctx.api_version, self.peer
            )
            hooks.request_done(self, ctx, body, None, started, failed=True)
            self.close()
            return None
        security.after_request(self, ctx, resp)
        hooks.request_done(self, ctx, body, resp, started)
        if resp is None:
            return None
        parts, _ = framing.encode_response(self.reg, ctx.api_key, ctx.api_version, ctx.correlation_id, resp)
        return parts

    async def _writer(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not self.closing:
                if not self.pending:
                    if self.draining:
                        self.close()
                        return
                    self.wakeup.clear()
                    await self.wakeup.wait()
                    continue
                fut = self.pending[0]
                try:
                    parts = await fut
                except asyncio.CancelledError:
                    return
                if self.pending and self.pending[0] is fut:
                    self.pending.popleft()
                if (
                    self.reading_paused
                    and not self.draining
                    and not self.muted
                    and len(self.pending) < MAX_IN_FLIGHT // 2
                    and self.transport
                ):
                    self.transport.resume_reading()
                    self.reading_paused = False
                if parts is None or self.closing or self.transport is None:
                    continue
                await self._write_parts(loop, parts)
        except (ConnectionError, OSError) as e:
            log.debug("write to %s failed: %s", self.peer, e)
            self.close()
        except Exception:
            log.exception("writer for %s failed", self.peer)
            self.close()

    async def _write_parts(self, loop: asyncio.AbstractEventLoop, parts: list[Part]) -> None:
        """Write a response: bytes and small file ranges gathered into one write, large ranges by sendfile."""
        transport = self.transport
        assert transport is not None
        pending: list[bytes | bytearray | memoryview] = []
        for part in parts:
            if isinstance(part, bytes | bytearray | memoryview):
                pending.append(part)
                continue
            if part.size < SENDFILE_MIN_BYTES or not self.server.use_sendfile or self.tls:
                pending.append(part.read())
                continue
            if pending:
                transport.write(b"".join(pending))
                pending = []
            try:
                await loop.sendfile(transport, part.file, part.position, part.size, fallback=False)
            except (asyncio.SendfileNotAvailableError, NotImplementedError):
                self.server.use_sendfile = False
                transport.write(part.read())
        if pending:
            transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        if not self.writable.is_set():
            await self.writable.wait()

    def _reject(self, reason: str) -> None:
        """Bad input: stop reading, still answer the requests received before it (in order), then close."""
        log.warning("closing %s: %s", self.peer, reason)
        self.draining = True
        if self.transport is not None and not self.reading_paused:
            self.transport.pause_reading()
            self.reading_paused = True
        self.wakeup.set()

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        self.wakeup.set()
        if self.transport is not None:
            self.transport.close()
