"""SASL/OAUTHBEARER: unsecured JWTs (Kafka's development validator) and JWKS-verified tokens (RS256, ES256)
with confluent-kafka's built-in unsecured token and its oauth_cb; re-authentication (KIP-368); SaslHandshake
v0 raw token framing with kafka-python as an old client."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from helpers import BrokerProcess, RawClient
from test_security_sasl_tls import kafkite_cli
from test_security_support import SecureBroker

from kafkite.protocol.api_keys import ApiKey
from kafkite.security.oauthbearer import (
    JwksValidator,
    TokenError,
    UnsecuredValidator,
    parse_initial_response,
    parse_jaas_options,
)

pytestmark = pytest.mark.timeout(180)

ISSUER = "https://issuer.kafkite.test"
AUDIENCE = "kafkite"


def b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def unsecured(claims: dict[str, Any]) -> str:
    return f"{b64({'alg': 'none'})}.{b64(claims)}."


def client_first(token: str, authzid: str = "") -> bytes:
    return f"n,{'a=' + authzid if authzid else ''},\x01auth=Bearer {token}\x01\x01".encode()


class Keys:
    """Keys made for the test: an RSA and an EC key published in a JWKS file, and one that is not."""

    def __init__(self, directory: Path) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.path = directory / "jwks.json"
        self.write()

    def write(self, extra: list[dict[str, Any]] | None = None) -> None:
        keys = []
        for kid, key, alg in (
            ("rsa-1", self.rsa, jwt.algorithms.RSAAlgorithm),
            ("ec-1", self.ec, jwt.algorithms.ECAlgorithm),
        ):
            jwk = json.loads(alg.to_jwk(key.public_key()))
            jwk.update(kid=kid, use="sig")
            keys.append(jwk)
        self.path.write_text(json.dumps({"keys": keys + (extra or [])}))

    def token(self, sub: str, *, alg: str = "RS256", lifetime: float = 300, **claims: Any) -> str:
        now = time.time()
        body: dict[str, Any] = {
            "sub": sub,
            "iat": int(now),
            "exp": int(now + lifetime),
            "iss": ISSUER,
            "aud": AUDIENCE,
        }
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        key, kid = {
            "RS256": (self.rsa, "rsa-1"),
            "ES256": (self.ec, "ec-1"),
            "stranger": (self.stranger, "rsa-1"),
        }[alg]
        return jwt.encode(body, key, algorithm="ES256" if alg == "ES256" else "RS256", headers={"kid": kid})


# ------------------------------------------------------------------------------------------ unit


def test_client_first_message() -> None:
    first = parse_initial_response(b"n,a=alice,\x01auth=Bearer abc.def.\x01ext=1\x01\x01")
    assert (first.token, first.authzid, first.extensions) == ("abc.def.", "alice", {"ext": "1"})
    for bad in (b"n,,\x01auth=Basic abc\x01\x01", b"y,,auth=Bearer x\x01\x01", b"n,,\x01\x01", b"\xff"):
        with pytest.raises(TokenError):
            parse_initial_response(bad)


def test_unsecured_validator_follows_kafkas() -> None:
    now = int(time.time() * 1000)
    v = UnsecuredValidator()
    tok = v.validate(unsecured({"sub": "alice", "exp": now / 1000 + 60, "scope": ["a", "b"]}), now)
    assert tok.principal == "alice" and tok.scope == {"a", "b"} and tok.expires_ms >= now + 59_000
    for claims, words in (
        ({"sub": "alice"}, "No expiration time"),
        ({"exp": now / 1000 + 60}, "No principal name"),
        ({"sub": "alice", "exp": now / 1000 - 1}, "Expiration Time"),
        ({"sub": "alice", "exp": now / 1000 + 60, "iat": now / 1000 + 30}, "Issued At"),
    ):
        with pytest.raises(TokenError, match=words):
            v.validate(unsecured(claims), now)
    with pytest.raises(TokenError, match="'none'"):
        v.validate(f"{b64({'alg': 'RS256'})}.{b64({'sub': 'a', 'exp': now})}.", now)
    with pytest.raises(TokenError, match="digital signature"):
        v.validate(f"{b64({'alg': 'none'})}.{b64({'sub': 'a', 'exp': now})}.c2ln", now)
    scoped = UnsecuredValidator.from_jaas_options(
        parse_jaas_options(
            "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required "
            'unsecuredValidatorRequiredScope="kafka admin" unsecuredValidatorAllowableClockSkewMs="5000";'
        )
    )
    assert scoped.required_scope == ("kafka", "admin") and scoped.clock_skew_ms == 5000
    with pytest.raises(TokenError) as ei:
        scoped.validate(unsecured({"sub": "a", "exp": now / 1000 + 60, "scope": ["kafka"]}), now)
    assert json.loads(ei.value.challenge())["status"] == "insufficient_scope"
    # Within the skew an expired token still passes.
    assert scoped.validate(unsecured({"sub": "a", "exp": now / 1000 - 2, "scope": ["kafka", "admin"]}), now)


def test_jwks_validator(tmp_path: Path) -> None:
    keys = Keys(tmp_path)
    v = JwksValidator(keys.path.as_uri(), audiences=(AUDIENCE,), issuer=ISSUER, clock_skew_s=5)
    v.refresh()
    now = int(time.time() * 1000)
    assert v.validate(keys.token("alice"), now).principal == "alice"
    assert v.validate(keys.token("bob", alg="ES256"), now).principal == "bob"
    for token in (
        keys.token("eve", alg="stranger"),  # signed by a key the JWKS does not hold
        keys.token("alice", aud="elsewhere"),
        keys.token("alice", iss="https://other"),
        keys.token("alice", lifetime=-60),
        keys.token("alice", iat=None),  # Kafka requires iat
        unsecured({"sub": "alice", "exp": now / 1000 + 60}),  # alg none
        jwt.encode({"sub": "a", "exp": now // 1000 + 60, "iat": now // 1000}, "secret", algorithm="HS256"),
    ):
        with pytest.raises(TokenError):
            v.validate(token, now)
    # A token naming a key the JWKS did not hold yet: the keys are read again.
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rotated.public_key()))
    jwk["kid"] = "rsa-2"
    keys.write([jwk])
    new = jwt.encode(
        {"sub": "carol", "iat": now // 1000, "exp": now // 1000 + 60, "aud": AUDIENCE, "iss": ISSUER},
        rotated,
        algorithm="RS256",
        headers={"kid": "rsa-2"},
    )
    assert v.needs_refresh(new)
    time.sleep(0.2)  # the retry back-off
    v.refresh(force=True)
    assert v.validate(new, now).principal == "carol"


# ------------------------------------------------------------------------------------------ brokers


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys(tmp_path_factory.mktemp("jwks"))


@pytest.fixture(scope="module")
def oauth_broker(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[SecureBroker]:
    """UNSECURED: Kafka's unsecured validator needing scope "kafka"; SIGNED: JWKS-verified tokens, sessions of
    3 s (connections.max.reauth.ms); both with ACLs so that the token's principal decides."""
    root = tmp_path_factory.mktemp("oauth")
    rc = kafkite_cli("user", "--log-dirs", str(root / "data"), "add", "admin", "--password", "admin-pw")
    assert rc.returncode == 0, rc.stderr
    jaas = (
        "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required"
        ' unsecuredValidatorRequiredScope="kafka";'
    )
    b = SecureBroker(
        root / "data",
        root / "broker.log",
        {"UNSECURED": "SASL_PLAINTEXT", "SIGNED": "SASL_PLAINTEXT"},
        [
            "sasl.enabled.mechanisms=OAUTHBEARER,SCRAM-SHA-512,PLAIN",
            f"listener.name.unsecured.oauthbearer.sasl.jaas.config={jaas}",
            "listener.name.signed.oauthbearer.sasl.server.callback.handler.class="
            "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler",
            f"listener.name.signed.oauthbearer.sasl.oauthbearer.jwks.endpoint.url={keys.path.as_uri()}",
            f"sasl.oauthbearer.expected.audience={AUDIENCE}",
            f"sasl.oauthbearer.expected.issuer={ISSUER}",
            "listener.name.signed.oauthbearer.connections.max.reauth.ms=3000",
            "authorizer.class.name=kafkite",
            "super.users=User:admin",
        ],
    )
    b.start()
    yield b
    b.stop()


@pytest.fixture
def ob(oauth_broker: SecureBroker, attach_broker: Callable[[BrokerProcess], BrokerProcess]) -> SecureBroker:
    attach_broker(oauth_broker)
    return oauth_broker


def allow_write(b: SecureBroker, topic: str, user: str) -> None:
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        AdminClient,
        NewTopic,
        ResourcePatternType,
        ResourceType,
    )

    admin = AdminClient(
        {
            "bootstrap.servers": b.address("UNSECURED"),
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "admin",
            "sasl.password": "admin-pw",
        }
    )
    admin.create_topics([NewTopic(topic, 1)])[topic].result(10)
    binding = AclBinding(
        ResourceType.TOPIC,
        topic,
        ResourcePatternType.LITERAL,
        f"User:{user}",
        "*",
        AclOperation.ALL,
        AclPermissionType.ALLOW,
    )
    for f in admin.create_acls([binding]).values():
        f.result(10)


def produce_as(conf: dict[str, Any], topic: str, count: int = 1, pause: float = 0.0) -> list[Any]:
    """Produce ``count`` messages; the delivery errors (None for delivered)."""
    from confluent_kafka import Producer

    results: list[Any] = []
    p = Producer({"message.timeout.ms": 10000, **conf})
    for i in range(count):
        p.produce(topic, b"m-%d" % i, on_delivery=lambda err, msg: results.append(err))
        p.poll(0)
        time.sleep(pause)
    p.flush(20)
    return results


def test_unsecured_tokens_with_librdkafkas_builtin_token(ob: SecureBroker) -> None:
    from confluent_kafka import KafkaError

    topic = f"uns-{uuid.uuid4().hex[:8]}"
    allow_write(ob, topic, "alice")

    def conf(token_config: str) -> dict[str, Any]:
        return {
            "bootstrap.servers": ob.address("UNSECURED"),
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "OAUTHBEARER",
            "enable.sasl.oauthbearer.unsecure.jwt": True,
            "sasl.oauthbearer.config": token_config,
        }

    assert produce_as(conf("principal=alice scope=kafka lifeSeconds=600"), topic) == [None]
    # The token's principal is the one the ACLs see: bob may not write.
    (err,) = produce_as(conf("principal=bob scope=kafka lifeSeconds=600"), topic)
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # Without the scope the listener requires, the token is refused (RFC 7628 error, then the close).
    host, port = ob.address("UNSECURED").split(":")
    with RawClient(host, int(port)) as c:
        assert c.request(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "OAUTHBEARER"})["error_code"] == 0
        now = time.time()
        first = c.request(
            ApiKey.SASL_AUTHENTICATE,
            2,
            {"auth_bytes": client_first(unsecured({"sub": "alice", "exp": now + 60}))},
        )
        assert first["error_code"] == 0
        assert json.loads(bytes(first["auth_bytes"]))["status"] == "insufficient_scope"
        final = c.request(ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": b"\x01"})
        assert final["error_code"] == 58
        assert c.is_closed()


def test_jwks_verified_tokens_with_oauth_cb(ob: SecureBroker, keys: Keys) -> None:
    from confluent_kafka import KafkaError

    topic = f"jwks-{uuid.uuid4().hex[:8]}"
    allow_write(ob, topic, "alice")

    def conf(make: Callable[[], str]) -> dict[str, Any]:
        def oauth_cb(_config: str) -> tuple[str, float]:
            return make(), time.time() + 300

        return {
            "bootstrap.servers": ob.address("SIGNED"),
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "OAUTHBEARER",
            "oauth_cb": oauth_cb,
            "reconnect.backoff.ms": 500,
        }

    assert produce_as(conf(lambda: keys.token("alice")), topic) == [None]
    assert produce_as(conf(lambda: keys.token("alice", alg="ES256")), topic) == [None]
    (err,) = produce_as(conf(lambda: keys.token("bob")), topic)
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # Tokens the JWKS does not verify never authenticate: an unknown signer, another audience, unsigned.
    for make in (
        lambda: keys.token("alice", alg="stranger"),
        lambda: keys.token("alice", aud="another-service"),
        lambda: unsecured({"sub": "alice", "exp": time.time() + 60, "iat": time.time()}),
    ):
        (err,) = produce_as({**conf(make), "message.timeout.ms": 2000}, topic)
        assert err is not None and err.code() != KafkaError.NO_ERROR
    assert "OAUTHBEARER token refused: Could not validate the access token" in ob.log_text()


def test_clients_reauthenticate_and_late_sessions_are_closed(ob: SecureBroker, keys: Keys) -> None:
    topic = f"reauth-{uuid.uuid4().hex[:8]}"
    allow_write(ob, topic, "alice")
    before = ob.log_text().count("SASL OAUTHBEARER re-authentication")

    def oauth_cb(_config: str) -> tuple[str, float]:
        return keys.token("alice"), time.time() + 300

    conf = {
        "bootstrap.servers": ob.address("SIGNED"),
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "OAUTHBEARER",
        "oauth_cb": oauth_cb,
    }
    # Sessions last 3 s on this listener: over 8 s librdkafka re-authenticates on its connections.
    errors = produce_as(conf, topic, count=40, pause=0.2)
    assert errors == [None] * 40
    assert ob.log_text().count("SASL OAUTHBEARER re-authentication") > before
    assert "re-authentication from 127.0.0.1 failed" not in ob.log_text()

    host, port = ob.address("SIGNED").split(":")

    def login(c: RawClient, sub: str) -> dict[str, Any]:
        assert c.request(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "OAUTHBEARER"})["error_code"] == 0
        return c.request(ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": client_first(keys.token(sub))})

    with RawClient(host, int(port)) as c:
        first = login(c, "alice")
        assert first["error_code"] == 0 and 2000 < first["session_lifetime_ms"] <= 3000
        time.sleep(2)
        again = login(c, "alice")  # re-authentication on the live connection renews the session
        assert again["error_code"] == 0 and again["session_lifetime_ms"] > 2000
        time.sleep(2)
        assert c.request(ApiKey.METADATA, 1, {"topics": None})["brokers"]  # 4 s after the first login
        time.sleep(3.2)
        with pytest.raises(ConnectionError):  # the session ended: the request closes the connection
            c.request(ApiKey.METADATA, 1, {"topics": None})
    with RawClient(host, int(port)) as c:  # a re-authentication must not change the principal
        assert login(c, "alice")["error_code"] == 0
        changed = login(c, "mallory")
        assert changed["error_code"] == 58 and "Cannot change principals" in str(changed["error_message"])
        assert c.is_closed()


def test_sasl_handshake_v0_raw_tokens_with_an_old_client(ob: SecureBroker) -> None:
    """kafka-python set for a 0.10.1 broker: SaslHandshake v0, then raw SASL tokens (PLAIN and SCRAM)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError as KpError

    common = {
        "bootstrap_servers": ob.address("UNSECURED"),
        "security_protocol": "SASL_PLAINTEXT",
        "api_version": (0, 10, 1),
        "request_timeout_ms": 5000,
    }
    for mechanism in ("SCRAM-SHA-512", "PLAIN"):
        admin = KafkaAdminClient(
            **common, sasl_mechanism=mechanism, sasl_plain_username="admin", sasl_plain_password="admin-pw"
        )
        try:
            assert isinstance(admin.list_topics(), list)
        finally:
            admin.close()
    assert "SaslHandshake v0 from 127.0.0.1: SCRAM-SHA-512 tokens follow" in ob.log_text()
    assert "SaslHandshake v0 from 127.0.0.1: PLAIN tokens follow" in ob.log_text()
    with pytest.raises(KpError):
        KafkaAdminClient(
            **common,
            sasl_mechanism="SCRAM-SHA-512",
            sasl_plain_username="admin",
            sasl_plain_password="wrong",
            bootstrap_timeout_ms=2000,
        ).list_topics()
    assert "SASL authentication failed (raw tokens after SaslHandshake v0)" in ob.log_text()


def test_jwks_read_from_a_url(tmp_path: Path) -> None:
    import functools
    import http.server
    import threading

    keys = Keys(tmp_path)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
        v = JwksValidator(url, audiences=(AUDIENCE,), issuer=ISSUER)
        assert v.needs_refresh(keys.token("alice"))
        v.refresh()
        assert v.validate(keys.token("alice", alg="ES256"), int(time.time() * 1000)).principal == "alice"
        assert not v.needs_refresh(keys.token("alice"))
    finally:
        server.shutdown()
        server.server_close()
