"""SASL/OAUTHBEARER (RFC 7628) token validation, as Kafka's two validators do it.

* Unsecured JWTs (``alg`` none, empty signature): Kafka's default validator, for development. Its options come
  from the listener's JAAS config, as Kafka reads them: ``unsecuredValidatorPrincipalClaimName`` (``sub``),
  ``unsecuredValidatorScopeClaimName`` (``scope``), ``unsecuredValidatorRequiredScope`` (space-separated) and
  ``unsecuredValidatorAllowableClockSkewMs`` (0). ``exp`` is required, ``iat`` checked when present.
* Signed JWTs verified against a JWKS (``sasl.oauthbearer.jwks.endpoint.url``: a ``file:`` path or an
  ``http(s):`` URL, read again every ``sasl.oauthbearer.jwks.endpoint.refresh.ms`` and when a token names
  an unknown key), as Kafka's OAuthBearerValidatorCallbackHandler: any asymmetric algorithm the key allows
  (RS*, PS*, ES*, EdDSA; never ``none`` or HMAC), ``exp`` and ``iat`` required,
  ``sasl.oauthbearer.expected.audience`` / ``.expected.issuer`` checked when set,
  ``sasl.oauthbearer.clock.skew.seconds`` of leeway, the principal in ``sasl.oauthbearer.sub.claim.name``
  and the scopes in ``sasl.oauthbearer.scope.claim.name``.

Signature verification uses PyJWT with ``cryptography`` (the ``oauth`` extra): a broker configured for JWKS
without them stops at start-up naming the extra.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("kafkite.oauthbearer")

_PACKAGE = "org.apache.kafka.common.security.oauthbearer"
UNSECURED_HANDLER = f"{_PACKAGE}.internals.unsecured.OAuthBearerUnsecuredValidatorCallbackHandler"
JWKS_HANDLER = f"{_PACKAGE}.OAuthBearerValidatorCallbackHandler"
EXTRA_HINT = "pip install 'kafkite[oauth]'"

_KVSEP = "\x01"
_GS2 = re.compile(r"n,(?:a=(?P<authzid>(?:[^=,\x00]|=2C|=3D)+))?,")
_AUTH = re.compile(r"(?P<scheme>\w+) +(?P<token>[-_~+/.a-zA-Z0-9]+=*)")
_KEY = re.compile(r"[A-Za-z]+")
_VALUE = re.compile(r"[\x21-\x7E \t\r\n]+")
_SCOPE_ITEM = re.compile(r"[\x23-\x5B\x5D-\x7E\x21]+")


class TokenError(Exception):
    """A token refused: ``status`` is what the client is told (RFC 7628), the message what the log says."""

    def __init__(self, message: str, status: str = "invalid_token", scope: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.scope = scope

    def challenge(self) -> bytes:
        body: dict[str, str] = {"status": self.status}
        if self.scope is not None:
            body["scope"] = self.scope
        return json.dumps(body, separators=(",", ":")).encode()


class OAuthConfigError(ValueError):
    """The listener's OAUTHBEARER configuration cannot be used; the message says what to change."""


@dataclass
class Token:
    principal: str
    expires_ms: int  # the credential's lifetime ends here (exp)
    scope: frozenset[str] = frozenset()
    issued_ms: int | None = None
    claims: dict[str, Any] = field(default_factory=dict)


@dataclass
class InitialResponse:
    token: str
    authzid: str
    extensions: dict[str, str]


def parse_initial_response(data: bytes) -> InitialResponse:
    """``n,[a=authzid],\\x01auth=Bearer <token>\\x01[key=value\\x01]*\\x01`` (RFC 7628 section 3.1)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise TokenError("the client's initial response is not UTF-8") from None
    m = _GS2.match(text)
    if m is None or not text.endswith(_KVSEP + _KVSEP):
        raise TokenError("invalid OAUTHBEARER client first message")
    rest = text[m.end() :]
    if not rest.startswith(_KVSEP):
        raise TokenError("invalid OAUTHBEARER client first message")
    pairs: dict[str, str] = {}
    for item in rest[1:-2].split(_KVSEP) if rest[1:-2] else []:
        key, sep, value = item.partition("=")
        if not sep or not _KEY.fullmatch(key) or not _VALUE.fullmatch(value):
            raise TokenError(f"invalid OAUTHBEARER key/value pair {key!r}")
        pairs[key] = value
    auth = pairs.pop("auth", None)
    am = _AUTH.fullmatch(auth or "")
    if am is None or am.group("scheme").lower() != "bearer":
        raise TokenError("invalid OAuth bearer token in the client first message")
    authzid = (m.group("authzid") or "").replace("=2C", ",").replace("=3D", "=")
    return InitialResponse(am.group("token"), authzid, pairs)


# ---------------------------------------------------------------------------------------------- unsecured


def _b64json(part: str, what: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        value = json.loads(raw)
    except ValueError:
        raise TokenError(f"malformed {what}") from None
    if not isinstance(value, dict):
        raise TokenError(f"malformed {what}")
    return value


def _scope_of(claims: dict[str, Any], name: str) -> frozenset[str]:
    value = claims.get(name)
    if isinstance(value, str):
        return frozenset({value.strip()}) if value.strip() else frozenset()
    if isinstance(value, list):
        return frozenset(str(v).strip() for v in value if str(v).strip())
    return frozenset()


def _seconds(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenError(f"the {name!r} claim is not a number")
    return float(value)


@dataclass
class UnsecuredValidator:
    """Kafka's OAuthBearerUnsecuredValidatorCallbackHandler: unsigned JWTs, for development only."""

    principal_claim: str = "sub"
    scope_claim: str = "scope"
    required_scope: tuple[str, ...] = ()
    clock_skew_ms: int = 0

    @classmethod
    def from_jaas_options(cls, options: dict[str, str]) -> UnsecuredValidator:
        skew_text = options.get("unsecuredValidatorAllowableClockSkewMs", "").strip() or "0"
        try:
            skew = int(skew_text)
        except ValueError:
            raise OAuthConfigError(
                f"unsecuredValidatorAllowableClockSkewMs: not a number: {skew_text!r}"
            ) from None
        if skew < 0:
            raise OAuthConfigError(f"Allowable clock skew millis must not be negative: {skew}")
        scope = tuple(s for s in options.get("unsecuredValidatorRequiredScope", "").split(" ") if s)
        for s in scope:
            if not _SCOPE_ITEM.fullmatch(s):
                raise OAuthConfigError(f"Invalid scope value: {s}")
        return cls(
            options.get("unsecuredValidatorPrincipalClaimName", "").strip() or "sub",
            options.get("unsecuredValidatorScopeClaimName", "").strip() or "scope",
            scope,
            skew,
        )

    def validate(self, token: str, now_ms: int) -> Token:
        if ".." in token:
            raise TokenError("Malformed compact serialization contains '..'")
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError(
                "Unsecured JWS compact serializations must have 3 dot-separated Base64URL-encoded values"
            )
        header = _b64json(parts[0], "JOSE header")
        claims = _b64json(parts[1], "JWT claims")
        if header.get("alg") != "none":
            raise TokenError("Unsecured JWS must have 'none' for an algorithm")
        if parts[2]:
            raise TokenError("Unsecured JWS must not contain a digital signature")
        exp = _seconds(claims, "exp")
        if exp is None:
            raise TokenError("No expiration time in JWT")
        principal = claims.get(self.principal_claim)
        if not isinstance(principal, str) or not principal.strip():
            raise TokenError(f"No principal name in JWT claim: {self.principal_claim}")
        iat = _seconds(claims, "iat")
        if iat is not None and 1000 * iat > now_ms + self.clock_skew_ms:
            raise TokenError("The Issued At value was after the indicated time plus allowable clock skew")
        if now_ms - self.clock_skew_ms >= 1000 * exp:
            raise TokenError(
                "The indicated time minus allowable clock skew was on or after the Expiration Time"
            )
        if iat is not None and exp <= iat:
            raise TokenError("The Expiration Time was not after the Issued At time")
        scope = _scope_of(claims, self.scope_claim)
        for required in self.required_scope:
            if required not in scope:
                raise TokenError(
                    f"The provided scope ({sorted(scope)}) was missing a required scope ({required})",
                    status="insufficient_scope",
                    scope=str(list(self.required_scope)),
                )
        return Token(principal, round(exp * 1000), scope, None if iat is None else round(iat * 1000), claims)


# ---------------------------------------------------------------------------------------------- JWKS

_ALGORITHMS_BY_KTY = {
    "RSA": ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    "EC": ("ES256", "ES384", "ES512"),
    "OKP": ("EdDSA",),
}


def _require_pyjwt() -> Any:
    try:
        import jwt
        from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: F401  (PyJWT's crypto backend)
    except ImportError:
        raise OAuthConfigError(
            f"sasl.oauthbearer.jwks.endpoint.url needs JWT signature verification: {EXTRA_HINT}"
        ) from None
    return jwt


class JwksValidator:
    """Kafka's OAuthBearerValidatorCallbackHandler with a JWKS: signed JWTs, keys from a file or a URL."""

    def __init__(
        self,
        url: str,
        *,
        audiences: tuple[str, ...] = (),
        issuer: str | None = None,
        clock_skew_s: int = 30,
        scope_claim: str = "scope",
        sub_claim: str = "sub",
        refresh_ms: int = 3_600_000,
        retry_backoff_ms: int = 100,
        retry_backoff_max_ms: int = 10_000,
    ) -> None:
        self.jwt = _require_pyjwt()
        if not url.startswith(("file:", "http://", "https://")):
            raise OAuthConfigError(
                f"sasl.oauthbearer.jwks.endpoint.url: expected file:, http: or https:, got {url!r}"
            )
        self.url = url
        self.audiences = audiences
        self.issuer = issuer
        self.clock_skew_s = clock_skew_s
        self.scope_claim = scope_claim
        self.sub_claim = sub_claim
        self.refresh_ms = refresh_ms
        self.retry_backoff_ms = retry_backoff_ms
        self.retry_backoff_max_ms = retry_backoff_max_ms
        self._keys: list[Any] = []  # PyJWK objects
        self._fetched_at = 0.0
        self._last_attempt = 0.0
        self._backoff_ms = retry_backoff_ms
        self._lock = threading.Lock()
        if not audiences:
            log.warning(
                "OAUTHBEARER tokens are verified without sasl.oauthbearer.expected.audience: any audience"
                " passes"
            )
        if issuer is None:
            log.warning(
                "OAUTHBEARER tokens are verified without sasl.oauthbearer.expected.issuer: any issuer passes"
            )

    # keys ------------------------------------------------------------------------------------------

    def _read(self) -> bytes:
        if self.url.startswith("file:"):
            path = urllib.request.url2pathname(self.url[len("file:") :].removeprefix("//"))
            with open(path, "rb") as f:
                return f.read()
        with urllib.request.urlopen(self.url, timeout=10) as resp:
            data: bytes = resp.read()
            return data

    def refresh(self, *, force: bool = False) -> None:
        """Read the JWKS (blocking: call from a worker thread) when it is due, or at once with ``force``
        (still no more often than the retry back-off allows)."""
        with self._lock:
            now = time.monotonic()
            due = not self._keys or (now - self._fetched_at) * 1000 >= self.refresh_ms
            if not due and not force:
                return
            if (now - self._last_attempt) * 1000 < self._backoff_ms and self._keys:
                return
            self._last_attempt = now
            try:
                data = json.loads(self._read())
                keys = []
                for jwk in data.get("keys", []):
                    try:
                        keys.append(self.jwt.PyJWK.from_dict(jwk))
                    except self.jwt.exceptions.PyJWTError as e:
                        log.warning("JWKS %s: skipping a key (%s)", self.url, e)
            except (OSError, ValueError, AttributeError) as e:
                self._backoff_ms = min(self._backoff_ms * 2, self.retry_backoff_max_ms)
                log.warning("JWKS %s could not be read: %s", self.url, e)
                return
            self._keys = keys
            self._fetched_at = now
            self._backoff_ms = self.retry_backoff_ms
            log.info("JWKS %s: %d keys", self.url, len(keys))

    def needs_refresh(self, token: str) -> bool:
        """Whether validating ``token`` wants the keys fetched first (none yet, due, or an unknown key id)."""
        if not self._keys or (time.monotonic() - self._fetched_at) * 1000 >= self.refresh_ms:
            return True
        try:
            kid = self.jwt.get_unverified_header(token).get("kid")
        except self.jwt.exceptions.PyJWTError:
            return False
        return kid is not None and all(k.key_id != kid for k in self._keys)

    # validation ------------------------------------------------------------------------------------

    def validate(self, token: str, now_ms: int) -> Token:
        jwt = self.jwt
        try:
            header = jwt.get_unverified_header(token)
        except jwt.exceptions.PyJWTError as e:
            raise TokenError(f"Could not validate the access token: {e}") from None
        alg, kid = header.get("alg"), header.get("kid")
        candidates = [k for k in self._keys if kid is None or k.key_id == kid]
        candidates = [k for k in candidates if alg in _ALGORITHMS_BY_KTY.get(k.key_type, ())]
        if not candidates:
            raise TokenError(
                f"Could not validate the access token: no key for kid {kid!r} and algorithm {alg!r}"
            )
        claims: dict[str, Any] | None = None
        error: Exception | None = None
        for key in candidates:
            try:
                claims = jwt.decode(
                    token,
                    key=key.key,
                    algorithms=[alg],
                    audience=list(self.audiences) or None,
                    issuer=self.issuer,
                    leeway=self.clock_skew_s,
                    options={"require": ["exp", "iat"], "verify_aud": bool(self.audiences)},
                )
                break
            except jwt.exceptions.PyJWTError as e:
                error = e
        if claims is None:
            raise TokenError(f"Could not validate the access token: {error}")
        sub = claims.get(self.sub_claim)
        if not isinstance(sub, str) or not sub.strip():
            raise TokenError(f"The {self.sub_claim} claim is missing or empty")
        exp = _seconds(claims, "exp")
        iat = _seconds(claims, "iat")
        assert exp is not None
        return Token(
            sub.strip(),
            round(exp * 1000),
            _scope_of(claims, self.scope_claim),
            None if iat is None else round(iat * 1000),
            claims,
        )


# ---------------------------------------------------------------------------------------------- JAAS


_JAAS_OPTION = re.compile(r'\s*([\w.$-]+)\s*=\s*("((?:[^"\\]|\\.)*)"|[^\s;]+)')


def parse_jaas_options(text: str) -> dict[str, str]:
    """The options of a one-module JAAS config: ``LoginModuleClass required key="value" ... ;``."""
    body = text.strip().rstrip(";").strip()
    parts = body.split(None, 2)
    if len(parts) < 2 or parts[1] not in ("required", "requisite", "sufficient", "optional"):
        raise OAuthConfigError(
            f"sasl.jaas.config: expected '<LoginModule> required key=\"value\" ... ;', got {text!r}"
        )
    options: dict[str, str] = {}
    rest = parts[2] if len(parts) > 2 else ""
    pos = 0
    while pos < len(rest):
        if rest[pos:].strip() == "":
            break
        m = _JAAS_OPTION.match(rest, pos)
        if m is None:
            raise OAuthConfigError(f"sasl.jaas.config: cannot read the options at {rest[pos:]!r}")
        value = m.group(3) if m.group(3) is not None else m.group(2)
        options[m.group(1)] = re.sub(r"\\(.)", r"\1", value)
        pos = m.end()
    return options
