"""What the connection layer asks of security: admission (connection limits), the TLS principal, SASL
gating before authentication, closing after a failed authentication, and quota throttling with muted reads.

Called by ``kafkite.server.connection``; kept here so the connection code stays about framing and ordering.
The arithmetic (quotas, principals, SCRAM) is ``kafkite.security``'s; this module holds the connection state.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from typing import TYPE_CHECKING, Any

from kafkite.broker import apis
from kafkite.broker.sasl import raw_token
from kafkite.doors.audit import UNAUTHENTICATED, audit_of
from kafkite.protocol.api_keys import ApiKey
from kafkite.security import quotas, security_of
from kafkite.security.tls import subject_principal

if TYPE_CHECKING:
    from kafkite.broker.core import RequestContext
    from kafkite.server.connection import KafkaConnection

log = logging.getLogger("kafkite.security")

SASL_APIS = frozenset({int(ApiKey.SASL_HANDSHAKE), int(ApiKey.SASL_AUTHENTICATE)})
# Requests that do not count against request-rate quotas (a throttled client must still be able to connect).
UNMETERED_APIS = apis.PRE_AUTH
_UNMUTE = "quota.unmute"


def is_sasl(conn: KafkaConnection) -> bool:
    return conn.security_protocol.startswith("SASL_")


def connection_made(conn: KafkaConnection, transport: asyncio.Transport) -> None:
    refusal = conn.server.admission_refusal(conn)
    if refusal:
        log.warning("refusing connection from %s on %s: %s", conn.peer, conn.listener, refusal)
        conn.close()
        return
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is not None:
        conn.tls = True
        if conn.security_protocol == "SSL":
            principal = subject_principal(ssl_object.getpeercert())
            if principal:
                conn.state["principal"] = principal


def refuse_before_auth(conn: KafkaConnection, api_key: int) -> str | None:
    """On SASL listeners only ApiVersions and the SASL exchange are served before authentication; once the
    session's lifetime is over (KIP-368) any request closes the connection, as Kafka closes it."""
    if is_sasl(conn) and api_key not in apis.PRE_AUTH and not conn.state.get("sasl.authenticated"):
        return f"API {api_key} before SASL authentication"
    deadline = conn.state.get("sasl.session.deadline")
    if deadline is not None and time.monotonic() > deadline:
        return "SASL session expired: the client did not re-authenticate in time"
    return None


def raw_sasl_frame(conn: KafkaConnection, frame: bytearray) -> bool:
    """After SaslHandshake v0 the exchange goes on in raw tokens (a size, then the token) until it is done;
    answered in order with the connection's responses. True when ``frame`` was such a token."""
    if not conn.state.get("sasl.raw"):
        return False
    fut = asyncio.ensure_future(_raw_sasl_token(conn, bytes(frame)))
    conn.pending.append(fut)
    conn.wakeup.set()
    return True


async def _raw_sasl_token(conn: KafkaConnection, data: bytes) -> list[Any] | None:
    host = conn.peer.rsplit(":", 1)[0]
    token = await raw_token(conn.broker, conn.state, conn.listener, host, data)
    if token is None:
        if conn.broker.config["audit.log.enable"]:
            audit_of(conn.broker).record(
                surface="kafka",
                principal="User:ANONYMOUS",
                address=host,
                operation="SaslAuthenticate",
                resource_type="listener",
                resource_name=conn.listener,
                result=UNAUTHENTICATED,
                error="authentication failed (raw tokens after SaslHandshake v0)",
            )
        conn.reject("SASL authentication failed (raw tokens after SaslHandshake v0)")
        return None
    return [struct.pack(">i", len(token)) + token]


def after_request(conn: KafkaConnection, ctx: RequestContext, resp: dict[str, Any] | None) -> None:
    if ctx.api_key in SASL_APIS:
        if resp is not None and resp.get("error_code") and is_sasl(conn):
            # Kafka answers a failed authentication, then closes the connection.
            conn.reject(f"SASL authentication failed: {resp.get('error_message') or resp['error_code']}")
        return
    if ctx.api_key not in UNMETERED_APIS:
        _throttle(conn, ctx, resp)


# ------------------------------------------------------------------------------------------ quotas


def _fetch_bytes(resp: dict[str, Any]) -> int:
    total = 0
    for t in resp.get("responses") or ():
        for p in t.get("partitions") or ():
            recs = p.get("records")
            if recs is None:
                continue
            size = getattr(recs, "size", None)  # RecordsChunks: a property; file ranges may have a method
            if callable(size):
                size = size()
            total += size if isinstance(size, int) else len(recs)
    return total


def _throttle(conn: KafkaConnection, ctx: RequestContext, resp: dict[str, Any] | None) -> None:
    mgr = security_of(conn.broker).quotas
    principal = ctx.principal
    user = principal.split(":", 1)[1] if ":" in principal else principal
    client = ctx.client_id
    throttle = mgr.record(quotas.REQUEST, user, client, 1)
    if ctx.api_key == ApiKey.PRODUCE:
        throttle = max(throttle, mgr.record(quotas.PRODUCE, user, client, ctx.extra.get("request_size", 0)))
    elif ctx.api_key == ApiKey.FETCH and resp is not None:
        throttle = max(throttle, mgr.record(quotas.FETCH, user, client, _fetch_bytes(resp)))
    # A handler's own quota (the controller mutation quota) asks for the same muting.
    throttle = max(throttle, int(ctx.extra.get("throttle_ms", 0)))
    if throttle <= 0:
        return
    if resp is not None:
        resp["throttle_time_ms"] = max(int(resp.get("throttle_time_ms") or 0), throttle)
    mute(conn, throttle)


def mute(conn: KafkaConnection, throttle_ms: int) -> None:
    """Stop reading from ``conn`` for ``throttle_ms`` (Kafka mutes a throttled client's channel)."""
    if conn.closing or conn.transport is None:
        return
    loop = asyncio.get_running_loop()
    until = loop.time() + throttle_ms / 1000
    old = conn.state.get(_UNMUTE)
    if old is not None:
        if old.when() >= until:
            return
        old.cancel()
    conn.muted = True
    conn.update_reading()
    conn.state[_UNMUTE] = loop.call_at(until, _unmute, conn)


def _unmute(conn: KafkaConnection) -> None:
    conn.state.pop(_UNMUTE, None)
    conn.muted = False
    conn.update_reading()
