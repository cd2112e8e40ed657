"""SASL on the Kafka surface: SaslHandshake (v0-1) picks a mechanism, SaslAuthenticate (v0-2) carries its
exchange. Each mechanism is a class with one ``step`` per client message; ``MECHANISMS`` lists them by name,
``sasl.enabled.mechanisms`` says which are offered.

The outcome lives on the connection state: ``sasl.mechanism``, ``sasl.authenticated``, ``sasl.username`` and
``principal`` (``User:<name>``).

PLAIN checks the password against ``sasl.plain.users`` (``name=password,...``) and the user store (the SCRAM
credentials of ``kafkite user add``); when both are empty any password is accepted, which the broker says at
start-up. SCRAM-SHA-256 and SCRAM-SHA-512 check against the user store. The user store is also served by
DescribeUserScramCredentials and AlterUserScramCredentials.

OAUTHBEARER (RFC 7628) validates bearer tokens as Kafka's validators do (``kafkite.security.oauthbearer``):
unsigned JWTs with Kafka's unsecured validator by default, signed JWTs against a JWKS when
``sasl.oauthbearer.jwks.endpoint.url`` is set or OAuthBearerValidatorCallbackHandler is named. A refused token
is answered with RFC 7628's error challenge; the client's ``\x01`` then ends the exchange with
SASL_AUTHENTICATION_FAILED. GSSAPI (Kerberos) is not served.

SaslHandshake v1 is followed by SaslAuthenticate requests; v0 by raw tokens outside Kafka framing (a 4-byte
size and the token, answered the same way; a failure closes the connection), as old clients send them.

Re-authentication (KIP-368): a successful SaslAuthenticate tells the client its session lifetime, the shorter
of ``connections.max.reauth.ms`` (per listener and mechanism) and the credential's own (an OAuth token's
expiry).
A request after the session ended closes the connection (``kafkite.server.security``); before that the
client may authenticate again on the same connection, with the same mechanism and as the same principal.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from kafkite.broker.core import Broker, RequestContext
from kafkite.clock import now_ms
from kafkite.config import ConfigError
from kafkite.protocol.errors import ErrorCode
from kafkite.security import oauthbearer as oauth
from kafkite.security import security_of
from kafkite.security.acl import CLUSTER_NAME, AclOperation, ResourceType
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
STATE_RAW = "sasl.raw"  # SaslHandshake v0: the exchange's tokens come as raw frames
STATE_DEADLINE = "sasl.session.deadline"  # time.monotonic() when the session ends (re-authenticate before)
STATE_REAUTH = "sasl.reauth"  # the client announced re-authentication support (SaslAuthenticate v1+)


@dataclass
class StepResult:
    """One step of an exchange: done (with ``username``) or continuing; ``challenge`` goes to the client."""

    challenge: bytes = b""
    done: bool = False
    username: str | None = None
    error: str | None = None  # authentication failed, and why (told to the client)
    expires_ms: int | None = None  # when the credential itself expires (an OAuth token), for the session


class Mechanism(ABC):
    """One SASL mechanism's server side; one instance per connection and exchange."""

    name: ClassVar[str] = ""

    def __init__(self, broker: Broker, listener: str = "PLAINTEXT") -> None:
        self.broker = broker
        self.listener = listener
        self.refused: str | None = None  # set: the exchange fails at its first token with this message

    @abstractmethod
    async def step_async(self, data: bytes) -> StepResult:
        """One step of the exchange: the client's token in, the server's answer out."""


class SyncMechanism(Mechanism):
    """A mechanism whose steps never wait (PLAIN, SCRAM): ``step`` computes the answer at once."""

    @abstractmethod
    def step(self, data: bytes) -> StepResult: ...

    async def step_async(self, data: bytes) -> StepResult:
        if self.refused is not None:
            return StepResult(error=self.refused)
        return self.step(data)


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


class PlainMechanism(SyncMechanism):
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


class ScramMechanism(SyncMechanism):
    """SCRAM-SHA-256/512 against the user store: client-first, then client-final."""

    def __init__(self, broker: Broker, listener: str = "PLAINTEXT") -> None:
        super().__init__(broker, listener)
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


# ---------------------------------------------------------------------------------------------- OAUTHBEARER

Validator = oauth.UnsecuredValidator | oauth.JwksValidator


def oauth_validator(broker: Broker, listener: str) -> Validator:
    """The OAUTHBEARER validator of ``listener`` (built once; raises ConfigError when it cannot be)."""
    cache = broker.oauth_validators
    if listener in cache:
        return cache[listener]
    cfg = broker.config
    mech = "oauthbearer"

    def get(key: str) -> Any:
        return cfg.for_listener(listener, key, mech)

    handler = get("sasl.server.callback.handler.class") or None
    url = get("sasl.oauthbearer.jwks.endpoint.url") or None
    validator: Validator
    try:
        if handler not in (None, oauth.UNSECURED_HANDLER, oauth.JWKS_HANDLER):
            raise oauth.OAuthConfigError(
                f"sasl.server.callback.handler.class: kafkite serves {oauth.UNSECURED_HANDLER} and"
                f" {oauth.JWKS_HANDLER}, not {handler}"
            )
        if handler == oauth.JWKS_HANDLER or (handler is None and url):
            if not url:
                raise oauth.OAuthConfigError(
                    "The OAuth validator for the broker requires sasl.oauthbearer.jwks.endpoint.url to be"
                    f" configured so that JWT signatures can be verified (listener {listener})"
                )
            validator = oauth.JwksValidator(
                url,
                audiences=tuple(get("sasl.oauthbearer.expected.audience") or ()),
                issuer=get("sasl.oauthbearer.expected.issuer") or None,
                clock_skew_s=int(get("sasl.oauthbearer.clock.skew.seconds")),
                scope_claim=get("sasl.oauthbearer.scope.claim.name") or "scope",
                sub_claim=get("sasl.oauthbearer.sub.claim.name") or "sub",
                refresh_ms=int(get("sasl.oauthbearer.jwks.endpoint.refresh.ms")),
                retry_backoff_ms=int(get("sasl.oauthbearer.jwks.endpoint.retry.backoff.ms")),
                retry_backoff_max_ms=int(get("sasl.oauthbearer.jwks.endpoint.retry.backoff.max.ms")),
            )
        else:
            jaas = get("sasl.jaas.config")
            options = oauth.parse_jaas_options(jaas) if jaas else {}
            validator = oauth.UnsecuredValidator.from_jaas_options(options)
    except oauth.OAuthConfigError as e:
        raise ConfigError(f"OAUTHBEARER on listener {listener}: {e}") from None
    cache[listener] = validator
    return validator


class OAuthBearerMechanism(Mechanism):
    """RFC 7628: the client's initial response carries the token; a refused token gets an error challenge,
    which the client acknowledges with ``\x01`` before the exchange fails."""

    name = "OAUTHBEARER"

    def __init__(self, broker: Broker, listener: str = "PLAINTEXT") -> None:
        super().__init__(broker, listener)
        self.error_challenge: str | None = None

    async def step_async(self, data: bytes) -> StepResult:
        if self.refused is not None:
            return StepResult(error=self.refused)
        if self.error_challenge is not None:
            # The client acknowledged the error challenge (\x01): Kafka fails the exchange with it.
            return StepResult(error=self.error_challenge)
        validator = oauth_validator(self.broker, self.listener)
        try:
            first = oauth.parse_initial_response(data)
            if isinstance(validator, oauth.JwksValidator) and validator.needs_refresh(first.token):
                await asyncio.get_running_loop().run_in_executor(None, validator.refresh)
            token = validator.validate(first.token, now_ms())
        except oauth.TokenError as e:
            log.info("OAUTHBEARER token refused: %s", e)
            challenge = e.challenge()
            self.error_challenge = challenge.decode()
            return StepResult(challenge=challenge)
        if first.authzid and first.authzid != token.principal:
            return StepResult(
                error=(
                    "Authentication failed: Client requested an authorization id "
                    f"({first.authzid}) that is different from the token's principal name ({token.principal})"
                )
            )
        return StepResult(done=True, username=token.principal, expires_ms=token.expires_ms)


MECHANISMS: dict[str, type[Mechanism]] = {
    m.name: m for m in (PlainMechanism, ScramSha256, ScramSha512, OAuthBearerMechanism)
}


def enabled_mechanisms(broker: Broker, listener: str | None = None) -> list[str]:
    offered = broker.config["sasl.enabled.mechanisms"]
    if listener is not None:
        offered = broker.config.for_listener(listener, "sasl.enabled.mechanisms")
    return [m for m in offered if m in MECHANISMS]


# ---------------------------------------------------------------------------------------------- handlers


def _state(ctx: RequestContext) -> dict[str, Any]:
    conn = ctx.extra.get("connection")
    state = getattr(conn, "state", None)
    if isinstance(state, dict):
        return state
    return ctx.extra.setdefault("state", {})  # type: ignore[no-any-return]


async def handle_sasl_handshake(broker: Broker, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
    state = _state(ctx)
    mechanisms = enabled_mechanisms(broker, ctx.listener)
    reauthenticating = bool(state.get(STATE_AUTHENTICATED))
    if state.get(STATE_EXCHANGE) is not None or (reauthenticating and not state.get(STATE_REAUTH)):
        # Mid-exchange, or authenticated by a client that never said it can re-authenticate.
        return {"error_code": int(ErrorCode.ILLEGAL_SASL_STATE), "mechanisms": mechanisms}
    mechanism = req["mechanism"]
    if mechanism not in mechanisms:
        return {"error_code": int(ErrorCode.UNSUPPORTED_SASL_MECHANISM), "mechanisms": mechanisms}
    exchange = MECHANISMS[mechanism](broker, ctx.listener)
    if reauthenticating and mechanism != state.get(STATE_MECHANISM):
        # Kafka answers the handshake, then fails the exchange at its first token.
        exchange.refused = (
            f"SASL mechanism '{mechanism}' requested by client is not supported for re-authentication of"
            f" mechanism '{state.get(STATE_MECHANISM)}'"
        )
    else:
        state[STATE_MECHANISM] = mechanism
    state[STATE_EXCHANGE] = exchange
    if ctx.api_version == 0:
        state[STATE_RAW] = True
        log.info(
            "SaslHandshake v0 from %s: %s tokens follow outside Kafka framing", ctx.client_host, mechanism
        )
    return {"error_code": 0, "mechanisms": mechanisms}


def _auth_error(code: ErrorCode, message: str) -> dict[str, Any]:
    return {"error_code": int(code), "error_message": message, "auth_bytes": b"", "session_lifetime_ms": 0}


def session_lifetime_ms(broker: Broker, listener: str, mechanism: str, expires_ms: int | None) -> int | None:
    """Kafka's session lifetime: the shorter of connections.max.reauth.ms and the credential's remaining life;
    None when neither bounds the session."""
    max_reauth = int(broker.config.for_listener(listener, "connections.max.reauth.ms", mechanism) or 0)
    if expires_ms is None and max_reauth <= 0:
        return None
    remaining = None if expires_ms is None else max(0, expires_ms - now_ms())
    if remaining is None:
        return max_reauth
    return remaining if max_reauth <= 0 else min(remaining, max_reauth)


async def authenticate_step(
    broker: Broker, state: dict[str, Any], listener: str, client_host: str, data: bytes
) -> StepResult:
    """Run one step of the connection's exchange and record its outcome on ``state``; failures leave the state
    ready for the connection to be closed."""
    exchange = state.get(STATE_EXCHANGE)
    assert isinstance(exchange, Mechanism)
    reauthenticating = bool(state.get(STATE_AUTHENTICATED))
    result = await exchange.step_async(data)
    if result.error is None and result.done and reauthenticating:
        before, after = state.get(STATE_USERNAME), result.username
        if before != after:
            result = StepResult(
                error=f"Cannot change principals during re-authentication from User.{before}: User.{after}"
            )
    if result.error is not None:
        state.pop(STATE_EXCHANGE, None)
        state.pop(STATE_RAW, None)
        if not reauthenticating:
            state.pop(STATE_MECHANISM, None)
        what = "re-authentication" if reauthenticating else "authentication"
        log.info("SASL %s %s from %s failed: %s", exchange.name, what, client_host, result.error)
        return result
    if result.done:
        if reauthenticating:
            log.info("SASL %s re-authentication from %s as %s", exchange.name, client_host, result.username)
        state.pop(STATE_EXCHANGE, None)
        state.pop(STATE_RAW, None)
        state[STATE_AUTHENTICATED] = True
        state[STATE_USERNAME] = result.username
        state[STATE_PRINCIPAL] = f"User:{result.username}"
        lifetime = session_lifetime_ms(broker, listener, exchange.name, result.expires_ms)
        if lifetime is None:
            state.pop(STATE_DEADLINE, None)
        else:
            state[STATE_DEADLINE] = time.monotonic() + lifetime / 1000
        state["sasl.session.lifetime.ms"] = lifetime or 0
    return result


async def handle_sasl_authenticate(
    broker: Broker, ctx: RequestContext, req: dict[str, Any]
) -> dict[str, Any]:
    state = _state(ctx)
    exchange = state.get(STATE_EXCHANGE)
    if not isinstance(exchange, Mechanism) or state.get(STATE_RAW):
        return _auth_error(ErrorCode.ILLEGAL_SASL_STATE, "SaslAuthenticate without a SaslHandshake first")
    if ctx.api_version >= 1:
        state[STATE_REAUTH] = True
    result = await authenticate_step(
        broker, state, ctx.listener, ctx.client_host, bytes(req["auth_bytes"] or b"")
    )
    if result.error is not None:
        return _auth_error(ErrorCode.SASL_AUTHENTICATION_FAILED, result.error)
    if result.done:
        ctx.principal = state[STATE_PRINCIPAL]
    lifetime = int(state.get("sasl.session.lifetime.ms", 0)) if result.done else 0
    return {
        "error_code": 0,
        "error_message": None,
        "auth_bytes": result.challenge,
        "session_lifetime_ms": lifetime,
    }


async def raw_token(
    broker: Broker, state: dict[str, Any], listener: str, client_host: str, data: bytes
) -> bytes | None:
    """A raw token after SaslHandshake v0: the raw token to answer with, or None when authentication failed
    (the connection is then closed, as Kafka closes it)."""
    result = await authenticate_step(broker, state, listener, client_host, data)
    if result.error is not None:
        return None
    return result.challenge


def log_startup(broker: Broker) -> None:
    """Check the OAUTHBEARER configuration of every SASL listener (ConfigError stops start-up); say how
    SASL/PLAIN checks passwords."""
    protocols = broker.config["listener.security.protocol.map"]
    for name, _, _ in broker.config["listeners"]:
        if protocols.get(name, name).startswith("SASL_") and "OAUTHBEARER" in enabled_mechanisms(
            broker, name
        ):
            oauth_validator(broker, name)
    if not plain_users(broker) and not len(security_of(broker).users):
        log.warning(
            "SASL/PLAIN accepts ANY password: set sasl.plain.users=name=password,... to check them "
            "(the user name still selects the stream pool)"
        )


# ---------------------------------------------------------------------------------------------- user admin


def _authorized(broker: Broker, ctx: RequestContext, operation: int) -> bool:
    authorizer = security_of(broker).authorizer
    return authorizer is None or authorizer.authorize(
        ctx.principal, ctx.client_host, AclOperation(operation), ResourceType.CLUSTER, CLUSTER_NAME
    )


async def handle_describe_user_scram_credentials(
    broker: Broker, ctx: RequestContext, req: dict[str, Any]
) -> dict[str, Any]:
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
