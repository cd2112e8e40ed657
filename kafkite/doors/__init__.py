"""One security model for every door: which surfaces must authenticate, how a door's login becomes a Kafka
principal, and the one authorizer every door asks.

*Secure by default.* When a Kafka listener authenticates its clients (SASL_PLAINTEXT, SASL_SSL, or SSL with
``ssl.client.auth=required``) or ``authorizer.class.name`` is set, Kafka is *secured*, and so must every other
door be:

- the OCI Streaming and OCI Queue REST gateways verify request signatures (``streaming.auth.enable``,
  ``queue.auth.enable``); the broker refuses to start while one of them is on without it;
- STOMP, the web console and the metrics endpoint check logins against the broker's SASL users (the SCRAM
  credentials of the user store, ``sasl.plain.users``; for STOMP also ``stomp.users``).

``security.open.surfaces`` (``streaming,queue,stomp,console,metrics``) runs the doors it names open beside
secured Kafka listeners, with a warning at start-up; nothing else does. With Kafka unsecured (``make run``)
the doors behave as before: the REST gateways verify signatures only when asked, STOMP checks ``stomp.users``
when it is set.

*Principals.* A signature proves which configured key signed the request (its fingerprint), not who the
keyId's user part claims to be: anyone holding a key can put any user OCID in its keyId. So with Kafka
secured, the REST gateways take principals only from ``rest.auth.principal.mapping`` (key fingerprint or
whole keyId -> principal; a key the file does not name is refused), and start-up refuses a signed gateway
without it. With Kafka open there is no authorizer to fool, and a signed request is
``User:<the user OCID of its keyId>`` for the audit trail. A STOMP,
console or metrics login ``name`` is ``User:name``. Every door asks :func:`authorize`, which is the Kafka
authorizer's own decision (``kafkite.security.acl``); refusals and failed logins go to the audit trail.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kafkite.config import BrokerConfig, ConfigError
from kafkite.doors.audit import DENIED, OK, UNAUTHENTICATED, audit_of
from kafkite.doors.audit_kafka import install_kafka_audit
from kafkite.security import security_of
from kafkite.security.acl import CLUSTER_NAME, AclOperation, ResourceType

if TYPE_CHECKING:
    from kafkite.broker.core import Broker

log = logging.getLogger("kafkite.security")

OPEN_KEY = "security.open.surfaces"
_FINGERPRINT = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2})+$")
SURFACES = ("streaming", "queue", "stomp", "console", "metrics")
LOGIN_CACHE_S = 60.0

Op = AclOperation
RT = ResourceType


# ---------------------------------------------------------------------------------------------- policy


def kafka_secured(config: BrokerConfig) -> str | None:
    """Why the Kafka surface is secured (a phrase naming the setting), or None when it is open."""
    protocols: dict[str, str] = config["listener.security.protocol.map"]
    for name, _, _ in config["listeners"]:
        proto = protocols.get(name.upper(), name.upper())
        if proto.startswith("SASL_"):
            return f"listener {name} uses {proto}"
        if proto == "SSL" and config["ssl.client.auth"] == "required":
            return f"listener {name} requires client certificates"
    if config["authorizer.class.name"]:
        return "authorizer.class.name is set"
    return None


def open_surfaces(config: BrokerConfig) -> set[str]:
    return set(config[OPEN_KEY])


def door_secured(config: BrokerConfig, surface: str) -> bool:
    """Must ``surface`` (stomp, console, metrics) authenticate its clients?"""
    return kafka_secured(config) is not None and surface not in open_surfaces(config)


def validate(config: BrokerConfig) -> None:
    """Refuse a configuration leaving a door open beside secured Kafka listeners (before anything binds)."""
    unknown = open_surfaces(config) - set(SURFACES)
    if unknown:
        raise ConfigError(f"{OPEN_KEY}: unknown surface {sorted(unknown)[0]!r}: use {', '.join(SURFACES)}")
    _validate_tls(config)
    why = kafka_secured(config)
    if why is None:
        return
    opened = open_surfaces(config)
    if str(config["rest.listeners"]).strip():
        for surface, key, api in (
            ("streaming", "streaming.auth.enable", "OCI Streaming"),
            ("queue", "queue.auth.enable", "OCI Queue"),
        ):
            if not config[key] and surface not in opened:
                raise ConfigError(
                    f"{key}: the Kafka listeners are secured ({why}) but the {api} REST API on "
                    f"rest.listeners would let anyone in: set {key}=true (with the API keys in "
                    f"{surface}.auth.public.keys), turn the gateway off with rest.listeners=, or run it "
                    f"open on purpose with {OPEN_KEY}={surface}"
                )
            if config[key] and surface not in opened and not config["rest.auth.principal.mapping"]:
                raise ConfigError(
                    f"rest.auth.principal.mapping: the Kafka listeners are secured ({why}) and {key} is on, "
                    "but a signature only proves which API key signed a request, not the user its keyId "
                    "names: map each key's fingerprint to its principal in a file (one '<fingerprint> "
                    "User:<name>' per line) and name it in rest.auth.principal.mapping"
                )


TLS_SCHEMES = {
    "rest.listeners": "https://",
    "stomp.listeners": "stomp+ssl://",
    "console.listener": "https://",
    "metrics.listener": "https://",
}


def _validate_tls(config: BrokerConfig) -> None:
    """A TLS door needs the listeners' certificate (checked before anything binds)."""
    for key, scheme in TLS_SCHEMES.items():
        if scheme in str(config[key]) and not config["ssl.keystore.location"]:
            raise ConfigError(
                f"{key} asks for TLS ({scheme}): set ssl.keystore.location to the PEM certificate and key "
                "the Kafka listeners use"
            )


def log_startup(config: BrokerConfig) -> None:
    why = kafka_secured(config)
    if why is None:
        return
    for surface in sorted(open_surfaces(config)):
        log.warning("=" * 72)
        log.warning(
            "SECURITY: the %s surface runs WITHOUT AUTHENTICATION beside secured Kafka listeners (%s), "
            "because %s names it",
            surface,
            why,
            OPEN_KEY,
        )
        log.warning("=" * 72)


# ---------------------------------------------------------------------------------------------- logins


def _plain_users(config: BrokerConfig) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in str(config["sasl.plain.users"]).split(","):
        item = item.strip()
        if item:
            name, _, password = item.partition("=")
            out[name.strip()] = password
    return out


def _stomp_users(config: BrokerConfig) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in str(config["stomp.users"]).split(","):
        item = item.strip()
        if item:
            name, _, password = item.partition("=")
            out[name.strip()] = password
    return out


def check_password(broker: Broker, username: str, password: str, surface: str) -> bool:
    """Is ``password`` the SASL password of ``username``? (Blocking: SCRAM derives keys.)"""
    if not username:
        return False
    cfg = broker.config
    for table in (_plain_users(cfg), _stomp_users(cfg) if surface == "stomp" else {}):
        expected = table.get(username)
        if expected is not None and hmac.compare_digest(expected.encode(), password.encode()):
            return True
    store = security_of(broker).users
    return bool(store.has_user(username) and store.check_password(username, password))


class LoginChecker:
    """Password checks off the event loop, with a short memory of successful ones (scrapes and STOMP
    reconnects do not derive SCRAM keys every time)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._ok: dict[bytes, float] = {}

    async def check(self, username: str, password: str, surface: str) -> bool:
        token = hashlib.sha256(f"{surface}\x00{username}\x00{password}".encode()).digest()
        now = time.monotonic()
        until = self._ok.get(token)
        if until is not None and until > now:
            return True
        ok = await asyncio.to_thread(check_password, self.broker, username, password, surface)
        if ok:
            if len(self._ok) > 10_000:
                self._ok = {k: v for k, v in self._ok.items() if v > now}
            self._ok[token] = now + LOGIN_CACHE_S
        return ok


def login_checker(broker: Broker) -> LoginChecker:
    return broker.component(LoginChecker, lambda: LoginChecker(broker))


# ---------------------------------------------------------------------------------------------- OCI keys


class PrincipalMap:
    """``rest.auth.principal.mapping``: one ``<key> <principal>`` per line (``#`` comments), the key being a
    key fingerprint or a whole keyId (``tenancy/user/fingerprint``). A user OCID alone is refused: the
    keyId's user part is whatever the signer wrote, only its fingerprint is proven by the signature."""

    def __init__(self, entries: dict[str, str], source: str) -> None:
        self.entries = entries
        self.source = source

    @classmethod
    def load(cls, path: str) -> PrincipalMap:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"rest.auth.principal.mapping: cannot read {path}: {e}") from None
        entries: dict[str, str] = {}
        for lineno, line in enumerate(text.splitlines(), 1):
            s = line.split("#", 1)[0].strip()
            if not s:
                continue
            parts = s.split()
            if len(parts) != 2 or ":" not in parts[1]:
                raise ConfigError(
                    f"rest.auth.principal.mapping: {path}:{lineno}: expected '<fingerprint, keyId or user "
                    f"OCID> <Type:name>', got {s!r}"
                )
            if not (_FINGERPRINT.match(parts[0]) or parts[0].count("/") == 2):
                raise ConfigError(
                    f"rest.auth.principal.mapping: {path}:{lineno}: {parts[0]!r} is neither a key "
                    "fingerprint (aa:bb:...) nor a whole keyId (tenancy/user/fingerprint); a user OCID "
                    "alone cannot be trusted, since any signer may claim it"
                )
            entries[parts[0]] = parts[1]
        return cls(entries, path)

    def principal(self, key_id: str) -> str | None:
        fp = key_id.rsplit("/", 1)[-1]
        for k in (key_id, fp):
            if k and k in self.entries:
                return self.entries[k]
        return None


def principal_mapper(config: BrokerConfig) -> PrincipalMap | None:
    path: str = config["rest.auth.principal.mapping"]
    return PrincipalMap.load(path) if path else None


def oci_principal(key_id: str, mapping: PrincipalMap | None) -> str | None:
    """The principal of a request signed with ``key_id`` (None: the mapping file does not know the key)."""
    if mapping is not None:
        return mapping.principal(key_id)
    parts = key_id.split("/")
    return f"User:{parts[1]}" if len(parts) >= 3 and parts[1] else f"User:{key_id}"


# ---------------------------------------------------------------------------------------------- authorization


@dataclass(frozen=True)
class Caller:
    """Who asks through a door: the principal (None when the door does not authenticate), from where."""

    principal: str | None
    address: str
    surface: str

    @property
    def name(self) -> str:
        return self.principal or "User:ANONYMOUS"


def authorize(
    broker: Broker,
    caller: Caller,
    op: AclOperation,
    rtype: ResourceType,
    name: str,
    *,
    operation: str,
    audit_denial: bool = True,
) -> bool:
    """The Kafka authorizer's decision for ``caller``; without an authorizer everything is allowed.

    A refusal is recorded in the audit trail (``operation`` names what was attempted) unless
    ``audit_denial`` is false (listings filter silently, as Kafka's do).
    """
    authorizer = security_of(broker).authorizer
    if authorizer is None:
        return True
    authorizer.allow_if_no_acl = bool(broker.config["allow.everyone.if.no.acl.found"])
    ok = authorizer.authorize(caller.name, caller.address, op, rtype, name)
    if not ok and audit_denial:
        audit_of(broker).record(
            surface=caller.surface,
            principal=caller.name,
            address=caller.address,
            operation=operation,
            resource_type=rtype.name.lower(),
            resource_name=name,
            result=DENIED,
            error=f"{op.name} on {rtype.name.lower()} {name} is not allowed",
        )
    return ok


def authorize_cluster(broker: Broker, caller: Caller, op: AclOperation, *, operation: str) -> bool:
    return authorize(broker, caller, op, RT.CLUSTER, CLUSTER_NAME, operation=operation)


def audit_unauthenticated(
    broker: Broker, surface: str, address: str, operation: str, why: str, who: str = ""
) -> None:
    audit_of(broker).record(
        surface=surface,
        principal=who or "User:ANONYMOUS",
        address=address,
        operation=operation,
        resource_type="surface",
        resource_name=surface,
        result=UNAUTHENTICATED,
        error=why,
    )


def audit_change(
    broker: Broker,
    caller: Caller,
    operation: str,
    resource_type: str,
    resource_name: str,
    *,
    result: str = OK,
    error: str | None = None,
    before: Any = None,
    after: Any = None,
) -> None:
    audit_of(broker).record(
        surface=caller.surface,
        principal=caller.name,
        address=caller.address,
        operation=operation,
        resource_type=resource_type,
        resource_name=resource_name,
        result=result,
        error=error,
        before=before,
        after=after,
    )


def install(broker: Broker) -> None:
    """Validate the doors' configuration and record Kafka's control-plane changes (called by the wiring once
    every handler is wrapped)."""
    validate(broker.config)
    log_startup(broker.config)

    install_kafka_audit(broker)
