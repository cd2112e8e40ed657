"""DescribeClientQuotas and AlterClientQuotas: Kafka's entity precedence and filter matching, the APIs through
kafkite's own codecs and kafka-python's protocol classes, quotas set at run time throttling a confluent-kafka
producer at once and surviving a restart, and CLUSTER_AUTHORIZATION_FAILED for a denied principal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import BrokerFactory, BrokerProcess, RawClient, advertised_api_keys
from test_security_quotas import QUOTA, _produce_rate
from test_security_support import SecureBroker

from kafkite.protocol.api_keys import ApiKey
from kafkite.protocol.errors import ErrorCode
from kafkite.security.quotas import ClientQuotaStore, QuotaError, QuotaManager, check_value, make_entity

pytestmark = pytest.mark.timeout(180)

INVALID = int(ErrorCode.INVALID_REQUEST)
DENIED = int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED)
EXACT, DEFAULT, SPECIFIED = 0, 1, 2


def _entity(**names: str | None) -> list[dict[str, Any]]:
    return [{"entity_type": t.replace("_", "-"), "entity_name": n} for t, n in names.items()]


def alter(
    c: RawClient,
    entity: list[dict[str, Any]],
    ops: dict[str, float | None],
    validate_only: bool = False,
    version: int = 1,
) -> dict[str, Any]:
    """One AlterClientQuotas entry: value None removes the key; the entry's result."""
    body = {
        "entries": [
            {
                "entity": entity,
                "ops": [
                    {"key": k, "value": 0.0 if v is None else v, "remove": v is None} for k, v in ops.items()
                ],
            }
        ],
        "validate_only": validate_only,
    }
    resp = c.request(ApiKey.ALTER_CLIENT_QUOTAS, version, body)
    assert len(resp["entries"]) == 1
    result: dict[str, Any] = resp["entries"][0]
    assert result["entity"] == entity
    return result


def describe(
    c: RawClient, components: list[tuple[str, int, str | None]], strict: bool = False, version: int = 1
) -> dict[str, Any]:
    body = {
        "components": [{"entity_type": t, "match_type": m, "match": n} for t, m, n in components],
        "strict": strict,
    }
    return c.request(ApiKey.DESCRIBE_CLIENT_QUOTAS, version, body)


def described(resp: dict[str, Any]) -> dict[tuple[tuple[str, str | None], ...], dict[str, float]]:
    assert resp["error_code"] == 0, resp
    return {
        tuple(sorted((e["entity_type"], e["entity_name"]) for e in entry["entity"])): {
            v["key"]: v["value"] for v in entry["values"]
        }
        for entry in resp["entries"]
    }


# ------------------------------------------------------------------------------------------ unit


def test_precedence_follows_kafka_and_static_config_is_below_it(tmp_path: Path) -> None:
    settings = {
        "client.quotas": "user=alice:producer_byte_rate=900",
        "quota.producer.default": "1000",
        "quota.consumer.default": str((1 << 63) - 1),
        "quota.request.default": str((1 << 63) - 1),
    }
    store = ClientQuotaStore(tmp_path / "q.json")
    q = QuotaManager(settings.__getitem__, clock=lambda: 0.0, store=store)
    P = "producer_byte_rate"
    assert q.quota(P, "alice", "app") == 900 and q.quota(P, "bob", "app") == 1000
    layers = [
        ((("client-id", None),), 8),
        ((("client-id", "app"),), 7),
        ((("user", None),), 6),
        ((("client-id", None), ("user", None)), 5),
        ((("client-id", "app"), ("user", None)), 4),
        ((("user", "alice"),), 3),
        ((("client-id", None), ("user", "alice")), 2),
        ((("client-id", "app"), ("user", "alice")), 1),
    ]
    # Added from the weakest up, each layer takes over from the one before.
    for entity, value in layers:
        store.alter(entity, {P: value}, [])
        assert q.quota(P, "alice", "app") == value
    # Removed from the strongest down, the next one shows again.
    for (entity, _), (_, below) in zip(reversed(layers), list(reversed(layers))[1:], strict=False):
        store.alter(entity, {}, [P])
        assert q.quota(P, "alice", "app") == below
    assert q.quota(P, "carol", "other") == 8  # /clients/<default> covers everyone
    assert q.quota("consumer_byte_rate", "alice", "app") >= (1 << 63) - 1  # per key: unset keys fall through
    # The store is saved: a new one over the same file sees the same quotas.
    assert (
        ClientQuotaStore(tmp_path / "q.json").entries() == store.entries() == {(("client-id", None),): {P: 8}}
    )
    store.alter((("client-id", None),), {}, [P])
    assert ClientQuotaStore(tmp_path / "q.json").entries() == {}


def test_entity_and_value_checks() -> None:
    assert make_entity([("user", "u"), ("client-id", None)]) == (("client-id", None), ("user", "u"))
    for bad in ([], [("user", "a"), ("user", "b")], [("team", "x")], [("ip", None)], [("ip", "1.2.3.4")]):
        with pytest.raises(QuotaError):
            make_entity(bad)
    check_value("request_rate", 0.5)
    check_value("controller_mutation_rate", 0.5)  # enforced on topic creation and deletion
    for key, value in (
        ("producer_byte_rate", 0),
        ("producer_byte_rate", -5),
        ("producer_byte_rate", 1.5),
        ("consumer_byte_rate", float("nan")),
        ("request_percentage", 50),
        ("controller_mutation_rate", 0),
        ("nope", 1),
    ):
        with pytest.raises(QuotaError):
            check_value(key, value)


def test_describe_filters_match_as_kafka() -> None:
    s = ClientQuotaStore(None)
    u, ud = ("user", "u"), ("user", None)
    c, cd = ("client-id", "c"), ("client-id", None)
    for i, entity in enumerate([(u,), (ud,), (c,), (cd,), (c, u), (cd, ud)]):
        s.alter(entity, {"request_rate": float(i + 1)}, [])

    def found(components: list[tuple[str, int, str | None]], strict: bool = False) -> set[Any]:
        return {e for e, _ in s.describe(components, strict)}

    assert found([]) == set(s.entries())
    assert found([], strict=True) == set()
    assert found([("user", EXACT, "u")]) == {(u,), (c, u)}
    assert found([("user", EXACT, "u")], strict=True) == {(u,)}
    assert found([("user", DEFAULT, None)]) == {(ud,), (cd, ud)}
    assert found([("user", SPECIFIED, None)]) == {(u,), (ud,), (c, u), (cd, ud)}
    assert found([("user", SPECIFIED, None)], strict=True) == {(u,), (ud,)}
    assert found([("user", SPECIFIED, None), ("client-id", DEFAULT, None)]) == {(cd, ud)}
    assert found([("client-id", EXACT, "c")], strict=True) == {(c,)}
    assert found([("ip", SPECIFIED, None)]) == set()
    for bad in (
        [("user", EXACT, None)],
        [("user", DEFAULT, "u")],
        [("user", SPECIFIED, "u")],
        [("user", 7, None)],
        [("team", SPECIFIED, None)],
        [("user", EXACT, "u"), ("user", DEFAULT, None)],
        [("ip", SPECIFIED, None), ("user", SPECIFIED, None)],
    ):
        with pytest.raises(QuotaError):
            s.describe(bad, False)


# ------------------------------------------------------------------------------------------ wire


@pytest.mark.parametrize("version", [0, 1])
def test_alter_describe_remove_over_the_wire(broker_factory: BrokerFactory, version: int) -> None:
    b = broker_factory()
    assert {int(ApiKey.DESCRIBE_CLIENT_QUOTAS), int(ApiKey.ALTER_CLIENT_QUOTAS)} <= advertised_api_keys(
        b.bootstrap
    )
    with RawClient.to(b.bootstrap) as c:
        alice = _entity(user="alice")
        r = alter(c, alice, {"producer_byte_rate": 1024.0, "request_rate": 5.5}, version=version)
        assert r["error_code"] == 0 and r["error_message"] is None
        both = _entity(user="alice", client_id=None)
        assert alter(c, both, {"consumer_byte_rate": 2048.0}, version=version)["error_code"] == 0
        assert alter(c, _entity(user=None), {"consumer_byte_rate": 10.0}, version=version)["error_code"] == 0
        a, ad, cd = ("user", "alice"), ("user", None), ("client-id", None)
        full = {
            (a,): {"producer_byte_rate": 1024.0, "request_rate": 5.5},
            (cd, a): {"consumer_byte_rate": 2048.0},
            (ad,): {"consumer_byte_rate": 10.0},
        }
        assert described(describe(c, [], version=version)) == full
        exact = described(describe(c, [("user", EXACT, "alice")], version=version))
        assert exact == {k: v for k, v in full.items() if a in k}
        strict = described(describe(c, [("user", EXACT, "alice")], strict=True, version=version))
        assert strict == {(a,): full[(a,)]}
        assert described(describe(c, [("user", DEFAULT, None)], version=version)) == {(ad,): full[(ad,)]}
        assert described(describe(c, [("user", SPECIFIED, None)], strict=True, version=version)) == {
            (a,): full[(a,)],
            (ad,): full[(ad,)],
        }
        assert described(describe(c, [("client-id", SPECIFIED, None)], version=version)) == {
            (cd, a): full[(cd, a)]
        }
        bad = describe(c, [("user", EXACT, None)], version=version)
        assert bad["error_code"] == INVALID and bad["entries"] is None
        # validate_only checks without applying.
        r = alter(c, alice, {"producer_byte_rate": 1.0}, validate_only=True, version=version)
        assert r["error_code"] == 0
        assert (
            described(describe(c, [("user", EXACT, "alice")], strict=True))[(a,)]["producer_byte_rate"]
            == 1024
        )
        for ops in (
            {"nope": 1.0},
            {"producer_byte_rate": -1.0},
            {"producer_byte_rate": 0.0},
            {"producer_byte_rate": 1.5},
            {"request_percentage": 50.0},
            {"controller_mutation_rate": -5.0},
        ):
            r = alter(c, alice, ops, version=version)
            assert r["error_code"] == INVALID and r["error_message"], (ops, r)
        for entity in (_entity(team="x"), _entity(ip=None), [], _entity(user="a") + _entity(user="b")):
            assert alter(c, entity, {"request_rate": 1.0}, version=version)["error_code"] == INVALID
        # A bad entry fails alone; the others in the same request apply.
        resp = c.request(
            ApiKey.ALTER_CLIENT_QUOTAS,
            version,
            {
                "entries": [
                    {"entity": alice, "ops": [{"key": "bogus", "value": 1.0, "remove": False}]},
                    {"entity": alice, "ops": [{"key": "request_rate", "value": 0.0, "remove": True}]},
                ],
                "validate_only": False,
            },
        )
        assert [e["error_code"] for e in resp["entries"]] == [INVALID, 0]
        # Removing keys; an entity left without keys is gone.
        assert alter(c, alice, {"producer_byte_rate": None}, version=version)["error_code"] == 0
        assert alter(c, _entity(user=None), {"consumer_byte_rate": None}, version=version)["error_code"] == 0
        assert described(describe(c, [], version=version)) == {(cd, a): full[(cd, a)]}


def test_kafka_python_protocol_classes(broker_factory: BrokerFactory) -> None:
    from kafka import KafkaAdminClient
    from kafka.protocol.admin.client_quotas import AlterClientQuotasRequest, DescribeClientQuotasRequest

    b = broker_factory()
    admin = KafkaAdminClient(bootstrap_servers=b.bootstrap, request_timeout_ms=10_000)
    try:

        def send(request: Any) -> Any:
            return admin._manager.run(admin._manager.send, request)

        def alter_op(key: str, value: float, remove: bool = False, validate_only: bool = False) -> Any:
            req = AlterClientQuotasRequest(
                entries=[([("user", "kp")], [(key, value, remove)])], validate_only=validate_only
            )
            return send(req).entries[0]

        def describe_kp(match_type: int, match: str | None, strict: bool = False) -> dict[Any, Any]:
            resp = send(DescribeClientQuotasRequest(components=[("user", match_type, match)], strict=strict))
            assert resp.error_code == 0
            return {
                tuple((e.entity_type, e.entity_name) for e in entry.entity): {
                    v.key: v.value for v in entry.values
                }
                for entry in resp.entries
            }

        r = alter_op("producer_byte_rate", 4096.0)
        assert r.error_code == 0 and [(e.entity_type, e.entity_name) for e in r.entity] == [("user", "kp")]
        expected = {(("user", "kp"),): {"producer_byte_rate": 4096.0}}
        assert describe_kp(EXACT, "kp") == expected
        assert describe_kp(EXACT, "kp", strict=True) == expected
        assert describe_kp(SPECIFIED, None) == expected
        assert describe_kp(DEFAULT, None) == {}
        assert alter_op("producer_byte_rate", 1.0, validate_only=True).error_code == 0
        assert describe_kp(EXACT, "kp") == expected
        assert alter_op("unknown_key", 1.0).error_code == INVALID
        assert alter_op("consumer_byte_rate", -3.0).error_code == INVALID
        assert alter_op("producer_byte_rate", 0.0, remove=True).error_code == 0
        assert describe_kp(SPECIFIED, None) == {}
    finally:
        admin.close()


# ------------------------------------------------------------------------------------------ end to end


def test_quota_set_at_run_time_throttles_at_once_and_survives_restart(broker_factory: BrokerFactory) -> None:
    b = broker_factory("quota.window.num=2", "quota.window.size.seconds=1")
    limited = _entity(client_id="limited-rt")
    with RawClient.to(b.bootstrap) as c:
        assert alter(c, limited, {"producer_byte_rate": float(QUOTA)})["error_code"] == 0
    rate, _ = _produce_rate(b.bootstrap, "limited-rt", 8.0)
    assert abs(rate - QUOTA) / QUOTA < 0.15, f"produced at {rate:.0f} B/s against a quota of {QUOTA}"
    with RawClient.to(b.bootstrap) as c:
        assert alter(c, limited, {"producer_byte_rate": None})["error_code"] == 0
    free_rate, first_second = _produce_rate(b.bootstrap, "limited-rt", 3.0)
    assert max(free_rate, first_second) > 3 * QUOTA, "still throttled after the quota was removed"
    with RawClient.to(b.bootstrap) as c:
        assert alter(c, limited, {"producer_byte_rate": float(QUOTA)})["error_code"] == 0
    b.restart()
    with RawClient.to(b.bootstrap) as c:
        got = described(describe(c, [("client-id", EXACT, "limited-rt")], strict=True))
        assert got == {(("client-id", "limited-rt"),): {"producer_byte_rate": float(QUOTA)}}
    rate, _ = _produce_rate(b.bootstrap, "limited-rt", 6.0)
    assert abs(rate - QUOTA) / QUOTA < 0.15, f"after a restart: {rate:.0f} B/s against a quota of {QUOTA}"


def _plain_login(c: RawClient, user: str, password: str) -> None:
    assert c.request(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"})["error_code"] == 0
    auth = c.request(ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": f"\0{user}\0{password}".encode()})
    assert auth["error_code"] == 0, auth


def test_authorizer_denies_non_super_users(
    tmp_path: Path, attach_broker: Callable[[BrokerProcess], BrokerProcess]
) -> None:
    b = SecureBroker(
        tmp_path / "data",
        tmp_path / "broker.log",
        {"SASL_PLAINTEXT": "SASL_PLAINTEXT"},
        [
            "authorizer.class.name=kafkite",
            "super.users=User:admin",
            "sasl.enabled.mechanisms=PLAIN",
            "sasl.plain.users=admin=admin-pw,bob=bob-pw",
        ],
    )
    attach_broker(b)
    b.start()
    try:
        address = b.address("SASL_PLAINTEXT")
        with RawClient.to(address) as bob, RawClient.to(address) as admin:
            _plain_login(bob, "bob", "bob-pw")
            _plain_login(admin, "admin", "admin-pw")
            r = alter(bob, _entity(user="bob"), {"producer_byte_rate": 1.0})
            assert r["error_code"] == DENIED and r["error_message"]
            d = describe(bob, [])
            assert d["error_code"] == DENIED and d["entries"] is None
            assert alter(admin, _entity(user="bob"), {"producer_byte_rate": 100.0})["error_code"] == 0
            assert described(describe(admin, [])) == {(("user", "bob"),): {"producer_byte_rate": 100.0}}
            # Denied alterations changed nothing.
            assert alter(bob, _entity(user="bob"), {"producer_byte_rate": None})["error_code"] == DENIED
            assert described(describe(admin, [("user", EXACT, "bob")], strict=True))
    finally:
        b.stop()
