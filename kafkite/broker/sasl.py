"""SASL on the Kafka surface: SaslHandshake (v0-1) picks a mechanism, SaslAuthenticate (v0-2) carries its
exchange. Each mechanism is a class with one ``step`` per client message; ``MECHANISMS`` lists them by name,
``sasl.enabled.mechanisms`` says which are offered.

The outcome lives on the connection state: ``sasl.mechanism``, ``sasl.authenticated``, ``sasl.username`` and
``principal`` (``User:<name>``).

PLAIN checks the password against ``sasl.plain.users`` (``name=password,...``) and the user store (the SCRAM
credentials of ``kafkite user add``); when both are empty any password is accepted, which the broker says at
start-up. SCRAM-SHA-256 and SCRAM-SHA-512 check against the user store. The user store is also served by
DescribeUserScramCredentials and AlterUserScramCredentials.

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
from kafkite.security import security_of
from kafkite.security.scram import (
    MECHANISM_CODES,
    MECHANISM_NAMES,
    ScramError,
    ScramServer,
    check_iterations,
    credential_from_salted,
)

log = logging.getLogger("kafkite.sasl")

STATE_MECHANISM = "sasl.mechanism"
STATE_AUTHENTICATED = "sasl.authenticated"
STATE_USERNAME = "sasl.username"
STATE_EXCHANGE = "sasl.exchange"
STATE_PRINCIPAL = "principal"


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
        store = security_of(self.broker).users
        if users or len(store):
            names = [authcid]
            if "/" in authcid:
                names.append(authcid.rsplit("/", 1)[0])
            if not any(_plain_password_ok(users, store, n, passwd) for n in names):
                return StepResult(error="Authentication failed: Invalid username or password")
        return StepResult(done=True, username=authcid)


def _plain_password_ok(users: dict[str, str], store: Any, name: str, password: str) -> bool:
    expected = users.get(name)
    if expected is not None:
        return hmac.compare_digest(expected.encode(), password.encode())
    return bool(store.has_user(name) and store.check_password(name, password))


# ---------------------------------------------------------------------------------------------- SCRAM


class ScramMechanism(Mechanism):
    """SCRAM-SHA-256/512 against the user store: client-first, then client-final."""

    def __init__(self, broker: Broker) -> None:
        super().__init__(broker)
        store = security_of(broker).users
        self.server = ScramServer(self.name, lambda user: store.credential(user, self.name))

    def step(self, data: bytes) -> StepResult:
        try:
            if self.server.state == "initial":
                return StepResult(challenge=self.server.first(data))
            final = self.server.final(data)
        except ScramError as e:
            return StepResult(error=str(e))
        return StepResult(challenge=final, done=True, username=self.server.username)


class ScramSha256(ScramMechanism):
    name = "SCRAM-SHA-256"


class ScramSha512(ScramMechanism):
    name = "SCRAM-SHA-512"


MECHANISMS: dict[str, type[Mechanism]] = {m.name: m for m in (PlainMechanism, ScramSha256, ScramSha512)}


def enabled_mechanisms(broker: Broker) -> list[str]:
    return [m for m in broker.config["sasl.enabled.mechanisms"] if m in MECHANISMS]


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
        state[STATE_PRINCIPAL] = ctx.principal = f"User:{result.username}"
    return {"error_code": 0, "error_message": None, "auth_bytes": result.challenge, "session_lifetime_ms": 0}


def log_startup(broker: Broker) -> None:
    """Say how SASL/PLAIN checks passwords."""
    if not plain_users(broker) and not len(security_of(broker).users):
        log.warning(
            "SASL/PLAIN accepts ANY password: set sasl.plain.users=name=password,... to check them "
            "(the user name still selects the stream pool)"
        )


# ---------------------------------------------------------------------------------------------- user admin


def _authorized(broker: Broker, ctx: RequestContext, operation: int) -> bool:
    from kafkite.security.acl import CLUSTER_NAME, AclOperation, ResourceType

    authorizer = security_of(broker).authorizer
    return authorizer is None or authorizer.authorize(
        ctx.principal, ctx.client_host, AclOperation(operation), ResourceType.CLUSTER, CLUSTER_NAME
    )


async def handle_describe_user_scram_credentials(
    broker: Broker, ctx: RequestContext, req: dict[str, Any]
) -> dict[str, Any]:
    from kafkite.security.acl import AclOperation

    if not _authorized(broker, ctx, AclOperation.DESCRIBE):
        return {
            "error_code": int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED),
            "error_message": "not authorized to describe users",
            "results": [],
        }
    store = security_of(broker).users
    users = store.users()
    requested = [u["name"] for u in req["users"] or []]
    names = requested or sorted(users)
    results = []
    seen: set[str] = set()
    for name in names:
        entry: dict[str, Any] = {"user": name, "error_code": 0, "error_message": None, "credential_infos": []}
        if requested.count(name) > 1:
            if name in seen:
                continue
            entry.update(error_code=int(ErrorCode.DUPLICATE_RESOURCE), error_message="user listed twice")
        elif name not in users:
            entry.update(error_code=int(ErrorCode.RESOURCE_NOT_FOUND), error_message="no such user")
        else:
            entry["credential_infos"] = [
                {"mechanism": MECHANISM_CODES[m], "iterations": c.iterations}
                for m, c in sorted(users[name].items())
            ]
        seen.add(name)
        results.append(entry)
    return {"throttle_time_ms": 0, "error_code": 0, "error_message": None, "results": results}


async def handle_alter_user_scram_credentials(
    broker: Broker, ctx: RequestContext, req: dict[str, Any]
) -> dict[str, Any]:
    from kafkite.security.acl import AclOperation

    store = security_of(broker).users
    errors: dict[str, tuple[ErrorCode, str]] = {}
    order: list[str] = []
    counts: dict[tuple[str, int], int] = {}
    for item in list(req["deletions"]) + list(req["upsertions"]):
        order.append(item["name"])
        counts[(item["name"], item["mechanism"])] = counts.get((item["name"], item["mechanism"]), 0) + 1
    allowed = _authorized(broker, ctx, AclOperation.ALTER)
    for item in list(req["deletions"]) + list(req["upsertions"]):
        name = item["name"]
        if name in errors:
            continue
        if not allowed:
            errors[name] = (ErrorCode.CLUSTER_AUTHORIZATION_FAILED, "not authorized to alter users")
        elif not name:
            errors[name] = (ErrorCode.UNACCEPTABLE_CREDENTIAL, "empty user name")
        elif item["mechanism"] not in MECHANISM_NAMES:
            errors[name] = (
                ErrorCode.UNSUPPORTED_SASL_MECHANISM,
                f"unknown SCRAM mechanism {item['mechanism']}",
            )
        elif counts[(name, item["mechanism"])] > 1:
            errors[name] = (
                ErrorCode.DUPLICATE_RESOURCE,
                "a credential is both deleted and set, or set twice",
            )
    for item in req["upsertions"]:
        name = item["name"]
        if name in errors:
            continue
        try:
            check_iterations(item["iterations"])
        except ValueError as e:
            errors[name] = (ErrorCode.UNACCEPTABLE_CREDENTIAL, str(e))
            continue
        if not item["salt"] or not item["salted_password"]:
            errors[name] = (ErrorCode.UNACCEPTABLE_CREDENTIAL, "empty salt or salted password")
    for item in req["deletions"]:
        name = item["name"]
        if name not in errors and store.credential(name, MECHANISM_NAMES[item["mechanism"]]) is None:
            errors[name] = (ErrorCode.RESOURCE_NOT_FOUND, "no such credential")
    for item in req["deletions"]:
        if item["name"] not in errors:
            store.delete_credential(item["name"], MECHANISM_NAMES[item["mechanism"]])
    for item in req["upsertions"]:
        if item["name"] not in errors:
            mechanism = MECHANISM_NAMES[item["mechanism"]]
            salt = bytes(item["salt"])
            cred = credential_from_salted(mechanism, bytes(item["salted_password"]), salt, item["iterations"])
            store.set_credential(item["name"], mechanism, cred)
    results = []
    for name in dict.fromkeys(order):
        code, message = errors.get(name, (ErrorCode.NO_ERROR, None))
        results.append({"user": name, "error_code": int(code), "error_message": message})
    return {"throttle_time_ms": 0, "results": results}
