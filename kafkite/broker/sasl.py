"""SASL on the Kafka surface: SaslHandshake (v0-1) picks a mechanism, SaslAuthenticate (v0-2) carries its
exchange. Each mechanism is a class with one ``step`` per client message; ``MECHANISMS`` lists them by name.

The outcome lives on the connection state: ``sasl.mechanism``, ``sasl.authenticated`` and ``sasl.username``.
PLAIN checks the password against ``sasl.plain.users`` (``name=password,...``); when that is empty any
password is accepted, which the broker says at start-up.

SaslHandshake v0 is followed by raw SASL tokens outside Kafka framing; kafkite serves the v1 flow (tokens in
SaslAuthenticate requests), which every current client uses once ApiVersions lists SaslAuthenticate.
"""

from __future__ import annotations

import hmac
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from kafkite.broker.core import Broker, RequestContext
from kafkite.protocol.errors import ErrorCode

log = logging.getLogger("kafkite.sasl")

STATE_MECHANISM = "sasl.mechanism"
STATE_AUTHENTICATED = "sasl.authenticated"
STATE_USERNAME = "sasl.username"
STATE_EXCHANGE = "sasl.exchange"


@dataclass
class StepResult:
    """One step of an exchange: done (with ``username``) or continuing; ``challenge`` goes to the client."""

    challenge: bytes = b""
    done: bool = False
    username: str | None = None
    error: str | None = None  # authentication failed, and why (told to the client)


class Mechanism(ABC):
    """One SASL mechanism's server side; one instance per connection and exchange."""

    name: ClassVar[str] = ""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    @abstractmethod
    def step(self, data: bytes) -> StepResult: ...


# ---------------------------------------------------------------------------------------------- PLAIN


def plain_users(broker: Broker) -> dict[str, str]:
    """``sasl.plain.users`` as name -> password (empty: passwords are not checked)."""
    spec: str = broker.config["sasl.plain.users"]
    out: dict[str, str] = {}
    for item in spec.split(","):
        item = item.strip()
        if item:
            name, _, password = item.partition("=")
            out[name.strip()] = password
    return out


class PlainMechanism(Mechanism):
    """RFC 4616: one message ``[authzid] NUL authcid NUL passwd``.

    With ``sasl.plain.users`` set, the user name must be listed, either whole or without its last
    ``/``-separated part (OCI user names end with the stream pool: ``tenancy/user/poolId``).
    """

    name = "PLAIN"

    def step(self, data: bytes) -> StepResult:
        parts = data.split(b"\x00")
        if len(parts) != 3:
            return StepResult(error="malformed PLAIN message")
        try:
            authzid, authcid, passwd = (p.decode("utf-8") for p in parts)
        except UnicodeDecodeError:
            return StepResult(error="PLAIN credentials are not UTF-8")
        if not authcid:
            return StepResult(error="empty user name")
        if authzid and authzid != authcid:
            return StepResult(error="authorization id differs from the user name")
        users = plain_users(self.broker)
        if users:
            expected = users.get(authcid)
            if expected is None and "/" in authcid:
                expected = users.get(authcid.rsplit("/", 1)[0])
            if expected is None or not hmac.compare_digest(expected.encode(), passwd.encode()):
                return StepResult(error="Authentication failed: Invalid username or password")
        return StepResult(done=True, username=authcid)


MECHANISMS: dict[str, type[Mechanism]] = {PlainMechanism.name: PlainMechanism}


def enabled_mechanisms(broker: Broker) -> list[str]:
    return list(MECHANISMS)


# ---------------------------------------------------------------------------------------------- handlers


def _state(ctx: RequestContext) -> dict[str, Any]:
    conn = ctx.extra.get("connection")
    state = getattr(conn, "state", None)
    if isinstance(state, dict):
        return state
    return ctx.extra.setdefault("state", {})  # type: ignore[no-any-return]


async def handle_sasl_handshake(broker: Broker, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
    state = _state(ctx)
    mechanisms = enabled_mechanisms(broker)
    if state.get(STATE_AUTHENTICATED) or state.get(STATE_MECHANISM):
        return {"error_code": int(ErrorCode.ILLEGAL_SASL_STATE), "mechanisms": mechanisms}
    mechanism = req["mechanism"]
    if mechanism not in mechanisms:
        return {"error_code": int(ErrorCode.UNSUPPORTED_SASL_MECHANISM), "mechanisms": mechanisms}
    state[STATE_MECHANISM] = mechanism
    state[STATE_EXCHANGE] = MECHANISMS[mechanism](broker)
    return {"error_code": 0, "mechanisms": mechanisms}


def _auth_error(code: ErrorCode, message: str) -> dict[str, Any]:
    return {"error_code": int(code), "error_message": message, "auth_bytes": b"", "session_lifetime_ms": 0}


async def handle_sasl_authenticate(
    broker: Broker, ctx: RequestContext, req: dict[str, Any]
) -> dict[str, Any]:
    state = _state(ctx)
    exchange = state.get(STATE_EXCHANGE)
    if state.get(STATE_AUTHENTICATED) or not isinstance(exchange, Mechanism):
        return _auth_error(ErrorCode.ILLEGAL_SASL_STATE, "SaslAuthenticate without a SaslHandshake first")
    result = exchange.step(bytes(req["auth_bytes"] or b""))
    if result.error is not None:
        # The client may start over with a new handshake.
        state.pop(STATE_EXCHANGE, None)
        state.pop(STATE_MECHANISM, None)
        log.info("SASL %s authentication from %s failed: %s", exchange.name, ctx.client_host, result.error)
        return _auth_error(ErrorCode.SASL_AUTHENTICATION_FAILED, result.error)
    if result.done:
        state.pop(STATE_EXCHANGE, None)
        state[STATE_AUTHENTICATED] = True
        state[STATE_USERNAME] = result.username
        ctx.principal = f"User:{result.username}"
    return {"error_code": 0, "error_message": None, "auth_bytes": result.challenge, "session_lifetime_ms": 0}


def log_startup(broker: Broker) -> None:
    """Say how SASL/PLAIN checks passwords."""
    if not plain_users(broker):
        log.warning(
            "SASL/PLAIN accepts ANY password: set sasl.plain.users=name=password,... to check them "
            "(the user name still selects the stream pool)"
        )
