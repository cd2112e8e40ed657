"""Binding listener sockets before anything is served.

Start-up binds every listener first (Kafka, REST, STOMP, metrics, console) and only then starts accepting
connections on any of them, so a listener that cannot be bound stops start-up before anything was served.
:func:`bind_tcp` binds and listens (connections wait in the backlog until the server starts serving) and
raises :class:`ListenerError`, which names the configuration key and the address.
"""

from __future__ import annotations

import contextlib
import errno
import socket

DEFAULT_BACKLOG = 1024


class ListenerError(OSError):
    """A listener cannot be bound: the message names the configuration key and the address."""

    def __init__(self, key: str, address: str, reason: str) -> None:
        super().__init__(f"{key}: cannot listen on {address}: {reason}")
        self.key = key
        self.address = address
        self.reason = reason

    def __str__(self) -> str:
        return str(self.args[0])


def _reason(e: OSError) -> str:
    return (e.strerror or str(e)).lower()


def bind_tcp(
    key: str, address: str, host: str | None, port: int, backlog: int = DEFAULT_BACKLOG
) -> list[socket.socket]:
    """Listening, non-blocking sockets for ``host:port`` (one per address family the host resolves to).

    ``host`` empty or None means every interface; port 0 picks a free port (the same one for every family).
    Raises :class:`ListenerError` naming ``key`` and ``address`` (the setting as the user wrote it).
    """
    try:
        infos = socket.getaddrinfo(
            host or None, port, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as e:
        raise ListenerError(key, address, f"cannot resolve {host!r}: {_reason(e)}") from None
    except OSError as e:
        raise ListenerError(key, address, _reason(e)) from None
    seen: set[tuple[int, object]] = set()
    socks: list[socket.socket] = []
    first_error: OSError | None = None
    try:
        for family, type_, proto, _, sockaddr in infos:
            if (family, sockaddr) in seen:
                continue
            seen.add((family, sockaddr))
            if port == 0 and socks:  # every family on the port the first one was given
                sockaddr = (sockaddr[0], socks[0].getsockname()[1], *sockaddr[2:])
            sock = socket.socket(family, type_, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(sockaddr)
                sock.listen(backlog)
                sock.setblocking(False)
            except OSError as e:
                sock.close()
                # A family this machine does not enable (no IPv6 on "localhost"): the others may do.
                if e.errno == errno.EADDRNOTAVAIL and len(infos) > 1:
                    first_error = first_error or e
                    continue
                raise ListenerError(key, address, _reason(e)) from None
            socks.append(sock)
    except BaseException:
        close_all(socks)
        raise
    if not socks:
        raise ListenerError(key, address, _reason(first_error) if first_error else "no address to bind")
    return socks


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.close()
    socks.clear()


def bound_port(socks: list[socket.socket]) -> int:
    return int(socks[0].getsockname()[1])
