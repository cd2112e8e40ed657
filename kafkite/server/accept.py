"""Listening sockets whose accept loop backs off when the process runs out of descriptors.

asyncio's own accept loop (``loop.create_server``) logs "socket.accept() out of system resource" and retries
after a second when ``accept()`` fails with EMFILE/ENFILE/ENOBUFS/ENOMEM, but CPython 3.11 keeps going round
its loop of ``backlog`` accepts after the failure: one failure becomes up to ``backlog`` log lines and as many
retries, each of which does the same again (a broker out of descriptors logged 227,656 such lines in a
minute). ``Listener`` accepts on its own: on such a failure it stops accepting, logs once, and tries again
after a pause that doubles up to ``MAX_PAUSE_S``; when accepting works again it says so once. Connections
waiting meanwhile stay in the kernel's backlog.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from collections.abc import Callable

log = logging.getLogger("kafkite.server")

OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPTS_PER_WAKEUP = 128
FIRST_PAUSE_S = 0.1
MAX_PAUSE_S = 5.0


class Listener:
    """The accept loop of one listening address (its sockets: IPv4 and IPv6 when the host is empty)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        factory: Callable[[], asyncio.BaseProtocol],
        sockets: list[socket.socket],
        *,
        ssl_context: ssl.SSLContext | None = None,
        ssl_handshake_timeout: float | None = None,
        name: str = "",
    ) -> None:
        self._loop = loop
        self._factory = factory
        self.sockets = sockets
        self._ssl = ssl_context
        self._handshake_timeout = ssl_handshake_timeout
        self._name = name
        self._pause_s = FIRST_PAUSE_S
        self._paused: dict[int, asyncio.TimerHandle] = {}
        self._warned = False
        self.refused = 0  # accept() failures for lack of resources (tests and metrics)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def start(self) -> None:
        """Accept on every socket (bound and listening: see ``kafkite.server.listen.bind_tcp``)."""
        for sock in self.sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as e:
                if e.errno in OUT_OF_RESOURCES:
                    self._pause(sock, e)
                    return
                log.warning("accepting a connection on %s failed: %s", self._name, e)
                return
            if self._warned:
                self._warned = False
                log.warning("accepting connections on %s again", self._name)
            self._pause_s = FIRST_PAUSE_S
            conn.setblocking(False)
            task = self._loop.create_task(self._serve(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _pause(self, sock: socket.socket, error: OSError) -> None:
        """Out of descriptors (or memory): stop accepting on ``sock`` for a while, saying so once."""
        self.refused += 1
        fd = sock.fileno()
        self._loop.remove_reader(fd)
        if not self._warned:
            self._warned = True
            log.error(
                "accepting connections on %s paused: %s; retrying every %.1f s at most (raise the limit, "
                "ulimit -n, or lower log.open.files.max or max.connections)",
                self._name,
                error.strerror or error,
                MAX_PAUSE_S,
            )
        self._paused[fd] = self._loop.call_later(self._pause_s, self._resume, sock)
        self._pause_s = min(self._pause_s * 2, MAX_PAUSE_S)

    def _resume(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        self._paused.pop(fd, None)
        if not self._closed:
            self._loop.add_reader(fd, self._accept, sock)

    async def _serve(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(
                self._factory, conn, ssl=self._ssl, ssl_handshake_timeout=self._handshake_timeout
            )
        except (OSError, ssl.SSLError, TimeoutError) as e:
            log.debug("connection on %s dropped before it started: %s", self._name, e)
            conn.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for handle in self._paused.values():
            handle.cancel()
        self._paused.clear()
        for sock in self.sockets:
            if sock.fileno() >= 0:
                self._loop.remove_reader(sock.fileno())
            sock.close()

    async def wait_closed(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
