"""One client connection: frames in, handlers run, responses out in request order.

Requests on a connection are started in arrival order (so appends keep their order) and may overlap while
they wait (a long-poll fetch, an fsync); responses are written strictly in request order. Reading pauses when
too many requests are in flight, when the transport's write buffer is full (back-pressure), while a quota
mutes the connection, and while a large request waits for room under ``queued.max.request.bytes`` (the
server's ``RequestMemory``); file ranges in Fetch responses go to the socket with sendfile.

What one connection holds is bounded: its frame reader (a 64 KiB scratch buffer, released when idle, and one
large frame growing as its bytes arrive), at most ``MAX_IN_FLIGHT`` requests, and the responses in order.
A frame must arrive whole within ``socket.request.timeout.ms`` of its first byte, not counting time the
connection was not read from (the server closes a connection that trickles one in).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import deque
from typing import TYPE_CHECKING, Any, cast

from kafkite.broker.core import CloseConnection, RequestContext
from kafkite.protocol import framing
from kafkite.protocol.api_keys import ApiKey
from kafkite.protocol.messages import Part, Registry, registry
from kafkite.protocol.primitives import DecodeError
from kafkite.server import hooks, security

if TYPE_CHECKING:
    from kafkite.server.server import KafkaServer

log = logging.getLogger("kafkite.server")

MAX_IN_FLIGHT = 64
CONNECTION_OVERHEAD = 8 * 1024  # about what an idle connection's objects take (transport, tasks, state)
# File ranges smaller than this are read and written with the rest of the response: one system call
# instead of a sendfile round of its own.
SENDFILE_MIN_BYTES = 64 * 1024
# Parts of a response written with one write when together smaller than this (joined by a copy).
JOIN_MAX_BYTES = 256 * 1024


class KafkaConnection(asyncio.BufferedProtocol):
    def __init__(self, server: KafkaServer, listener: str) -> None:
        self.server = server
        self.broker = server.broker
        self.listener = listener
        self.reg: Registry = registry()
        self.frames = framing.FrameReader(
            server.broker.config["socket.request.max.bytes"], admit=self._admit, pool=server.frame_pool
        )
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.pending: deque[asyncio.Future[list[Part] | None]] = deque()
        self.wakeup: asyncio.Event = asyncio.Event()
        self.writable: asyncio.Event = asyncio.Event()
        self.writable.set()
        self.writer_task: asyncio.Task[None] | None = None
        self.reading_paused = False
        self.memory_blocked = False  # a large frame waits for room in the server's RequestMemory
        self.frame_started: float | None = None  # when the frame being received began to arrive
        self.closing = False
        self.draining = False  # a bad frame arrived: answer the requests before it, read nothing more, close
        self.state: dict[str, Any] = {}  # per-connection state for handlers (SASL, sessions)
        self._discard: bytearray | None = None  # where bytes go once the connection stops reading requests
        self.security_protocol: str = server.security_protocol(listener)
        self.tls = False  # sendfile cannot write into a TLS transport
        self.muted = False  # reading stopped for a quota's throttle time
        self.last_active = time.monotonic()

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the Transport interface without subclassing asyncio.Transport.
        self.transport = t = cast(asyncio.Transport, transport)
        peer = t.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        t.set_write_buffer_limits(high=4 * 1024 * 1024)
        self.writer_task = asyncio.get_running_loop().create_task(self._writer())
        self.server.connections.add(self)
        hooks.connection_opened(self)
        security.connection_made(self, t)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.connections.discard(self)
        memory = self.server.request_memory
        memory.forget(self)
        memory.release(self.frames.reserved)  # the frame arriving and those never started
        self.server.freed_bytes += self.frames.footprint + CONNECTION_OVERHEAD
        self.frames = framing.FrameReader(0)  # the partial frame's buffers go now, not with the object
        for fut in self.pending:
            fut.cancel()
        self.pending.clear()
        self.wakeup.set()
        self.writable.set()
        # Handlers that keep state tied to this connection (share sessions) registered what to do now.
        for callback in self.state.pop("on_close", ()):
            try:
                callback()
            except Exception:
                log.exception("a connection close callback failed")
        hooks.connection_closed(self, exc)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.closing or self.draining:
            if self._discard is None:
                self._discard = bytearray(4096)
            return memoryview(self._discard)
        return self.frames.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        if self.closing or self.draining:
            return
        now = time.monotonic()
        self.last_active = now
        try:
            self.frames.buffer_updated(nbytes)
            self._take_frames()
        except framing.FrameTooLarge as e:
            self.reject(str(e))
            return
        if self.frame_started is None and self.frames.receiving:
            self.frame_started = now
        self.update_reading()

    def _take_frames(self) -> None:
        frames = self.frames
        while (item := frames.pop()) is not None:
            self._dispatch(*item)
            if self.closing or self.draining:
                return
        if not frames.receiving:
            self.frame_started = None
        if not frames.in_large_frame:
            self.server.request_memory.done_receiving(self)
        self.memory_blocked = frames.blocked

    def _admit(self, size: int, growing: bool) -> bool:
        return self.server.request_memory.reserve(self, size, growing)

    def memory_available(self) -> None:
        """The server's RequestMemory has room again: try the frame this connection waits with."""
        if self.closing or self.draining:
            return
        try:
            self.frames.retry()
            self._take_frames()
        except framing.FrameTooLarge as e:  # pragma: no cover - the prefix was checked before it blocked
            self.reject(str(e))
            return
        if self.frame_started is None and self.frames.receiving:
            self.frame_started = time.monotonic()
        self.update_reading()

    def update_reading(self) -> None:
        """Pause or resume reading from the socket according to everything that may hold it."""
        transport = self.transport
        if transport is None or self.closing:
            return
        hold = (
            self.draining
            or self.muted
            or self.memory_blocked
            or len(self.pending) >= (MAX_IN_FLIGHT // 2 if self.reading_paused else MAX_IN_FLIGHT)
        )
        if hold and not self.reading_paused:
            transport.pause_reading()
            self.reading_paused = True
        elif not hold and self.reading_paused:
            transport.resume_reading()
            self.reading_paused = False
            if self.frames.receiving:  # time spent not reading is not the client's: its clock starts again
                self.frame_started = time.monotonic()

    # ------------------------------------------------------------------ requests

    def _dispatch(self, frame: bytearray, reserved: int) -> None:
        if security.raw_sasl_frame(self, frame):  # a SASL token after SaslHandshake v0, not a request
            self.server.request_memory.release(reserved)
            return
        if not self._start(frame, reserved) and reserved:
            self.server.request_memory.release(reserved)

    def _start(self, frame: bytearray, reserved: int) -> bool:
        """Decode and start one request; False if it was not started (its memory is free again)."""
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
                    return False
                raise DecodeError(f"{api.name} v{version} is not supported (supported: {api.versions})")
            # Bytes after the request body are ignored, as Kafka does: librdkafka's Metadata v9+ request for
            # all topics carries three stray bytes after its null topic array.
            body, _ = self.reg.request(key, version).decode(buf, header.header_size)
        except DecodeError as e:
            self.reject(f"malformed request: {e}")
            return False
        refusal = security.refuse_before_auth(self, key)
        if refusal:
            self.reject(refusal)
            return False
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
        # A large frame's buffer goes back to the pool when the request is done, if nothing kept it.
        kept = frame if len(frame) > framing.FrameReader.SMALL else None
        fut = asyncio.ensure_future(self._run(ctx, body, reserved, kept))
        self.pending.append(fut)
        self.wakeup.set()
        return True

    def _respond_now(self, header: framing.RequestHeader, version: int, body: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Part] | None] = loop.create_future()
        parts, _ = framing.encode_response(self.reg, header.api_key, version, header.correlation_id, body)
        fut.set_result(parts)
        self.pending.append(fut)
        self.wakeup.set()

    async def _run(
        self, ctx: RequestContext, body: dict[str, Any], reserved: int, frame: bytearray | None
    ) -> list[Part] | None:
        try:
            return await self._handle(ctx, body)
        finally:
            if reserved:
                self.server.request_memory.release(reserved)
            if frame is not None:
                del body, ctx
                # Two references: this function's and getrefcount's own argument. Any other (the request's
                # records held by a handler, a memoryview of it, a write still queued) keeps it out.
                if sys.getrefcount(frame) == 2:
                    self.server.frame_pool.give(frame)

    async def _handle(self, ctx: RequestContext, body: dict[str, Any]) -> list[Part] | None:
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
        out: list[bytes | bytearray | memoryview] = []
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
                if self.closing or self.transport is None:
                    continue
                if parts is None or self._gather(parts, out):
                    # The responses already answered after this one go out in the same write: one system
                    # call for all the requests a pipelining client has in flight.
                    self._gather_ready(out)
                    if self.reading_paused:
                        self.update_reading()
                    if out:
                        self.transport.write(out[0] if len(out) == 1 else b"".join(out))
                        out.clear()
                    if not self.writable.is_set():
                        await self.writable.wait()
                    continue
                if self.reading_paused:
                    self.update_reading()
                await self._write_parts(loop, parts)
        except (ConnectionError, OSError) as e:
            log.debug("write to %s failed: %s", self.peer, e)
            self.close()
        except Exception:
            log.exception("writer for %s failed", self.peer)
            self.close()

    def _gather(self, parts: list[Part], out: list[bytes | bytearray | memoryview]) -> bool:
        """Add a response's bytes to ``out`` unless it has a file range for sendfile (then False, nothing
        added)."""
        sendfile = self.server.use_sendfile and not self.tls
        for part in parts:
            if (
                not isinstance(part, bytes | bytearray | memoryview)
                and sendfile
                and part.size >= SENDFILE_MIN_BYTES
            ):
                return False
        for part in parts:
            out.append(part if isinstance(part, bytes | bytearray | memoryview) else part.read())
        return True

    def _gather_ready(self, out: list[bytes | bytearray | memoryview]) -> None:
        """Take the responses that are ready at the head of the queue, in order, while they need no
        sendfile."""
        pending = self.pending
        while pending:
            fut = pending[0]
            if not fut.done() or fut.cancelled() or fut.exception() is not None:
                return
            parts = fut.result()
            if parts is not None and not self._gather(parts, out):
                return
            pending.popleft()

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
        if len(pending) == 1:
            transport.write(pending[0])
        elif pending:
            if sum(len(p) for p in pending) < JOIN_MAX_BYTES:
                transport.write(b"".join(pending))
            else:  # large parts (a database engine's batches) written as they are, not joined by a copy
                for p in pending:
                    transport.write(p)
        if not self.writable.is_set():
            await self.writable.wait()

    def reject(self, reason: str) -> None:
        """Bad input: stop reading, still answer the requests received before it (in order), then close."""
        log.warning("closing %s: %s", self.peer, reason)
        self.draining = True
        self.update_reading()
        self.wakeup.set()

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        self.wakeup.set()
        if self.transport is not None:
            self.transport.close()
