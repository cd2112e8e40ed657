"""ACLs: the authorizer's rules (patterns, implied operations, DENY first, super users, no-ACL default),
Create/Describe/DeleteAcls through confluent-kafka's admin client, and what users see and may do over
SASL: B is refused produce on a topic A may write, and B's Metadata does not list it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import BrokerProcess, RawClient
from test_security_sasl_tls import kafkite_cli
from test_security_support import Pki, SecureBroker, TlsRawClient, client_ssl_context, make_pki, scram_login

from kafkite.protocol import records
from kafkite.protocol.api_keys import ApiKey
from kafkite.protocol.errors import ErrorCode
from kafkite.security.acl import (
    AclAuthorizer,
    AclBinding,
    AclFilter,
    AclOperation,
    InvalidAcl,
    PatternType,
    PermissionType,
    ResourceType,
)

pytestmark = pytest.mark.timeout(180)

Op = AclOperation
RT = ResourceType
ALLOW = PermissionType.ALLOW
DENY = PermissionType.DENY
LIT = PatternType.LITERAL
PRE = PatternType.PREFIXED


def acl(
    rt: int, name: str, principal: str, op: int, perm: int = ALLOW, pt: int = LIT, host: str = "*"
) -> AclBinding:
    return AclBinding(rt, name, pt, principal, host, op, perm)


# ------------------------------------------------------------------------------------------ unit


def test_authorizer_rules(tmp_path: Path) -> None:
    az = AclAuthorizer(tmp_path / "acls.json", frozenset({"User:admin"}))
    az.add(
        [
            acl(RT.TOPIC, "orders", "User:alice", Op.WRITE),
            acl(RT.TOPIC, "pay-", "User:bob", Op.READ, pt=PRE),
            acl(RT.TOPIC, "*", "User:carol", Op.ALL),
            acl(RT.TOPIC, "orders", "User:carol", Op.WRITE, DENY),
            acl(RT.GROUP, "g", "User:*", Op.READ),
            acl(RT.TOPIC, "hosted", "User:dan", Op.READ, host="10.0.0.1"),
            acl(RT.TOPIC, "cfg", "User:erin", Op.ALTER_CONFIGS),
        ]
    )

    def ok(p: str, op: int, rt: int, name: str, host: str = "127.0.0.1") -> bool:
        return az.authorize(p, host, AclOperation(op), ResourceType(rt), name)

    assert ok("User:alice", Op.WRITE, RT.TOPIC, "orders")
    assert ok("User:alice", Op.DESCRIBE, RT.TOPIC, "orders")  # WRITE implies DESCRIBE
    assert not ok("User:alice", Op.READ, RT.TOPIC, "orders")
    assert not ok("User:alice", Op.WRITE, RT.TOPIC, "orders2")
    assert ok("User:bob", Op.READ, RT.TOPIC, "pay-eu") and ok("User:bob", Op.DESCRIBE, RT.TOPIC, "pay-")
    assert not ok("User:bob", Op.READ, RT.TOPIC, "pa")
    assert ok("User:carol", Op.DELETE, RT.TOPIC, "anything") and ok("User:carol", Op.READ, RT.TOPIC, "orders")
    assert not ok("User:carol", Op.WRITE, RT.TOPIC, "orders")  # DENY wins over ALLOW ALL
    assert ok("User:zed", Op.READ, RT.GROUP, "g") and ok("User:zed", Op.DESCRIBE, RT.GROUP, "g")
    assert not ok("User:zed", Op.DELETE, RT.GROUP, "g")
    assert ok("User:dan", Op.READ, RT.TOPIC, "hosted", "10.0.0.1")
    assert not ok("User:dan", Op.READ, RT.TOPIC, "hosted", "10.0.0.2")
    assert ok("User:erin", Op.DESCRIBE_CONFIGS, RT.TOPIC, "cfg") and not ok(
        "User:erin", Op.DESCRIBE, RT.TOPIC, "cfg"
    )
    assert ok("User:admin", Op.ALTER, RT.CLUSTER, "kafka-cluster")  # super user
    assert not ok("User:zed", Op.READ, RT.GROUP, "no-acls")  # deny by default
    az.allow_if_no_acl = True
    assert ok("User:zed", Op.READ, RT.GROUP, "no-acls")
    assert not ok("User:zed", Op.READ, RT.TOPIC, "orders")  # ACLs exist for orders: they decide
    assert [op.name for op in az.authorized_operations("User:alice", "h", RT.TOPIC, "orders")] == [
        "WRITE",
        "DESCRIBE",
    ]
    assert az.authorize_any("User:alice", "h", Op.WRITE, RT.TOPIC)
    assert not az.authorize_any("User:bob", "h", Op.WRITE, RT.TOPIC)

    # Filters: MATCH finds every ACL that applies to a literal name; LITERAL and PREFIXED match exactly.
    found = az.describe(AclFilter(RT.TOPIC, "pay-eu", PatternType.MATCH))
    assert [b.resource_name for b in found] == ["*", "pay-"]
    assert [b.principal for b in az.describe(AclFilter(RT.ANY, "orders", PatternType.LITERAL))] == [
        "User:alice",
        "User:carol",
    ]
    assert len(az.describe(AclFilter())) == 7
    # Persisted: a new authorizer over the same file sees them; deletions too.
    assert len(AclAuthorizer(tmp_path / "acls.json").acls()) == 7
    gone = az.delete(AclFilter(principal="User:carol"))
    assert len(gone) == 2 and len(AclAuthorizer(tmp_path / "acls.json").acls()) == 5

    for bad in (
        acl(RT.ANY, "x", "User:a", Op.READ),
        acl(RT.TOPIC, "x", "User:a", Op.ANY),
        acl(RT.TOPIC, "x", "User:a", Op.READ, PermissionType.ANY),
        acl(RT.TOPIC, "x", "alice", Op.READ),
        acl(RT.TOPIC, "x", "User:a", Op.READ, pt=PatternType.MATCH),
        acl(RT.CLUSTER, "other", "User:a", Op.ALTER),
        acl(RT.TOPIC, "", "User:a", Op.READ),
    ):
        with pytest.raises(InvalidAcl):
            az.add([bad])


# ------------------------------------------------------------------------------------------ broker


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def acl_broker(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[SecureBroker]:
    root = tmp_path_factory.mktemp("acls")
    for user in ("admin", "alice", "bob"):
        rc = kafkite_cli("user", "--log-dirs", str(root / "data"), "add", user, "--password", f"{user}-pw")
        assert rc.returncode == 0, rc.stderr
    b = SecureBroker(
        root / "data",
        root / "broker.log",
        {"SASL_PLAINTEXT": "SASL_PLAINTEXT", "SSL": "SSL"},
        [
            "authorizer.class.name=kafkite",
            "super.users=User:admin;User:CN=client,O=kafkite-tests",
            f"ssl.keystore.location={pki.server}",
            f"ssl.truststore.location={pki.ca}",
            "ssl.client.auth=required",
        ],
    )
    b.start()
    yield b
    b.stop()


@pytest.fixture
def ab(acl_broker: SecureBroker, attach_broker: Callable[[BrokerProcess], BrokerProcess]) -> SecureBroker:
    attach_broker(acl_broker)
    return acl_broker


def conf(b: SecureBroker, user: str, **extra: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": b.address("SASL_PLAINTEXT"),
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": user,
        "sasl.password": f"{user}-pw",
        **extra,
    }


def produce_one(b: SecureBroker, user: str, topic: str) -> Any:
    """Produce one message as ``user``; the delivery error (None on success)."""
    from confluent_kafka import Producer

    results: list[Any] = []
    p = Producer(conf(b, user, **{"message.timeout.ms": 8000}))
    p.produce(topic, b"hello", on_delivery=lambda err, msg: results.append(err))
    p.flush(15)
    assert results, "no delivery report"
    return results[0]


def sasl_client(b: SecureBroker, user: str) -> RawClient:
    host, port = b.address("SASL_PLAINTEXT").split(":")
    c = RawClient(host, int(port))
    assert scram_login(c, "SCRAM-SHA-512", user, f"{user}-pw")["error_code"] == 0
    return c


def create_acls(b: SecureBroker, bindings: list[Any]) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(conf(b, "admin"))
    for f in admin.create_acls(bindings).values():
        f.result(10)


def test_user_b_denied_produce_and_metadata_while_a_succeeds(ab: SecureBroker) -> None:
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import (
        AclBinding as CAclBinding,
    )
    from confluent_kafka.admin import (
        AclOperation as COp,
    )
    from confluent_kafka.admin import (
        AclPermissionType as CPerm,
    )
    from confluent_kafka.admin import (
        AdminClient,
        NewTopic,
    )
    from confluent_kafka.admin import (
        ResourcePatternType as CPat,
    )
    from confluent_kafka.admin import (
        ResourceType as CRes,
    )

    t = f"t-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(conf(ab, "admin"))
    admin.create_topics([NewTopic(t, 1)])[t].result(10)
    create_acls(
        ab,
        [
            CAclBinding(CRes.TOPIC, t, CPat.LITERAL, "User:*", "*", COp.ALL, CPerm.ALLOW),
            CAclBinding(CRes.TOPIC, t, CPat.LITERAL, "User:bob", "*", COp.ALL, CPerm.DENY),
        ],
    )
    assert produce_one(ab, "alice", t) is None
    err = produce_one(ab, "bob", t)
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert t in AdminClient(conf(ab, "alice")).list_topics(timeout=10).topics
    assert t not in AdminClient(conf(ab, "bob")).list_topics(timeout=10).topics
    # Asked by name, Metadata tells bob he may not see it.
    with sasl_client(ab, "bob") as c:
        resp = c.request(ApiKey.METADATA, 12, {"topics": [{"name": t, "topic_id": uuid.UUID(int=0)}]})
        assert [(x["name"], x["error_code"]) for x in resp["topics"]] == [(t, 29)]
    # The ACLs are listed, and deleting them lifts the restriction (here: back to deny by default).
    from confluent_kafka.admin import AclBindingFilter

    flt = AclBindingFilter(CRes.TOPIC, t, CPat.LITERAL, None, None, COp.ANY, CPerm.ANY)
    described = admin.describe_acls(flt).result(10)
    assert sorted(b.principal for b in described) == ["User:*", "User:bob"]
    deleted = admin.delete_acls([flt])[flt].result(10)
    assert len(deleted) == 2
    assert admin.describe_acls(flt).result(10) == []
    err = produce_one(ab, "alice", t)
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_per_topic_errors_in_one_request(ab: SecureBroker) -> None:
    ok_topic, denied_topic = f"ok-{uuid.uuid4().hex[:6]}", f"no-{uuid.uuid4().hex[:6]}"
    with sasl_client(ab, "admin") as c:
        resp = c.request(
            ApiKey.CREATE_TOPICS,
            5,
            {
                "topics": [
                    {
                        "name": n,
                        "num_partitions": 1,
                        "replication_factor": 1,
                        "assignments": [],
                        "configs": [],
                    }
                    for n in (ok_topic, denied_topic)
                ],
                "timeout_ms": 5000,
            },
        )
        assert [x["error_code"] for x in resp["topics"]] == [0, 0]
        resp = c.request(
            ApiKey.CREATE_ACLS,
            2,
            {
                "creations": [
                    {
                        "resource_type": RT.TOPIC,
                        "resource_name": ok_topic,
                        "resource_pattern_type": LIT,
                        "principal": "User:alice",
                        "host": "*",
                        "operation": op,
                        "permission_type": ALLOW,
                    }
                    for op in (Op.WRITE, Op.READ)
                ]
                + [
                    {
                        "resource_type": RT.GROUP,
                        "resource_name": "alice-group",
                        "resource_pattern_type": LIT,
                        "principal": "User:alice",
                        "host": "*",
                        "operation": Op.READ,
                        "permission_type": ALLOW,
                    }
                ]
            },
        )
        assert [r["error_code"] for r in resp["results"]] == [0, 0, 0]
    batch = records.build_batch([(None, b"v", [], 0)])
    with sasl_client(ab, "alice") as c:
        resp = c.request(
            ApiKey.PRODUCE,
            9,
            {
                "transactional_id": None,
                "acks": -1,
                "timeout_ms": 5000,
                "topic_data": [
                    {"name": n, "partition_data": [{"index": 0, "records": batch}]}
                    for n in (denied_topic, ok_topic)
                ],
            },
        )
        assert [(t["name"], t["partition_responses"][0]["error_code"]) for t in resp["responses"]] == [
            (denied_topic, 29),
            (ok_topic, 0),
        ]
        resp = c.request(
            ApiKey.FETCH,
            12,
            {
                "replica_id": -1,
                "max_wait_ms": 0,
                "min_bytes": 0,
                "max_bytes": 1 << 20,
                "isolation_level": 0,
                "session_id": 0,
                "session_epoch": -1,
                "topics": [
                    {
                        "topic": n,
                        "partitions": [
                            {
                                "partition": 0,
                                "current_leader_epoch": -1,
                                "fetch_offset": 0,
                                "last_fetched_epoch": -1,
                                "log_start_offset": -1,
                                "partition_max_bytes": 1 << 20,
                            }
                        ],
                    }
                    for n in (ok_topic, denied_topic)
                ],
                "forgotten_topics_data": [],
                "rack_id": "",
            },
        )
        codes = [(t["topic"], t["partitions"][0]["error_code"]) for t in resp["responses"]]
        assert codes == [(ok_topic, 0), (denied_topic, 29)]
        assert resp["responses"][0]["partitions"][0]["high_watermark"] == 1
        # Groups: alice may use her group, not another.
        commit = {
            "generation_id_or_member_epoch": -1,
            "member_id": "",
            "group_instance_id": None,
            "topics": [
                {
                    "name": ok_topic,
                    "partitions": [{"partition_index": 0, "committed_offset": 1, "committed_metadata": None}],
                }
            ],
        }
        resp = c.request(ApiKey.OFFSET_COMMIT, 8, {"group_id": "alice-group", **commit})
        assert resp["topics"][0]["partitions"][0]["error_code"] == 0
        resp = c.request(ApiKey.OFFSET_COMMIT, 8, {"group_id": "other-group", **commit})
        assert resp["topics"][0]["partitions"][0]["error_code"] == 30
        resp = c.request(
            ApiKey.FIND_COORDINATOR, 4, {"key_type": 0, "coordinator_keys": ["alice-group", "x"]}
        )
        assert [(x["key"], x["error_code"]) for x in resp["coordinators"]] == [("alice-group", 0), ("x", 30)]
        # Cluster operations need cluster ACLs.
        resp = c.request(
            ApiKey.DESCRIBE_CONFIGS,
            4,
            {"resources": [{"resource_type": 4, "resource_name": "1", "configuration_keys": None}]},
        )
        assert resp["results"][0]["error_code"] == 31
        resp = c.request(
            ApiKey.CREATE_ACLS,
            2,
            {
                "creations": [
                    {
                        "resource_type": RT.TOPIC,
                        "resource_name": denied_topic,
                        "resource_pattern_type": LIT,
                        "principal": "User:alice",
                        "host": "*",
                        "operation": Op.ALL,
                        "permission_type": ALLOW,
                    }
                ]
            },
        )
        assert resp["results"][0]["error_code"] == 31
        # Metadata's authorized operations reflect the ACLs.
        resp = c.request(
            ApiKey.METADATA,
            10,
            {
                "topics": [{"name": ok_topic, "topic_id": uuid.UUID(int=0)}],
                "allow_auto_topic_creation": False,
                "include_cluster_authorized_operations": True,
                "include_topic_authorized_operations": True,
            },
        )
        ops = resp["topics"][0]["topic_authorized_operations"]
        assert ops == (1 << Op.READ) | (1 << Op.WRITE) | (1 << Op.DESCRIBE)
        assert resp["cluster_authorized_operations"] == 0


def test_unauthenticated_and_certificate_principals(ab: SecureBroker, pki: Pki) -> None:
    # The PLAINTEXT listener's clients are User:ANONYMOUS: deny by default.
    with RawClient.to(ab.bootstrap) as c:
        resp = c.request(ApiKey.METADATA, 12, {"topics": None})
        assert resp["topics"] == []
        resp = c.request(
            ApiKey.CREATE_TOPICS,
            5,
            {
                "topics": [
                    {
                        "name": "anon",
                        "num_partitions": 1,
                        "replication_factor": 1,
                        "assignments": [],
                        "configs": [],
                    }
                ],
                "timeout_ms": 5000,
            },
        )
        assert resp["topics"][0]["error_code"] == 29
    # The client certificate CN=client,O=kafkite-tests is a super user; CN=intruder is not.
    host, port = ab.address("SSL").split(":")
    name = f"cert-{uuid.uuid4().hex[:6]}"
    body = {
        "topics": [
            {"name": name, "num_partitions": 1, "replication_factor": 1, "assignments": [], "configs": []}
        ],
        "timeout_ms": 5000,
    }
    with TlsRawClient(host, int(port), client_ssl_context(pki, cert=True)) as c:
        assert c.request(ApiKey.CREATE_TOPICS, 5, body)["topics"][0]["error_code"] == 0
    ctx = client_ssl_context(pki)
    ctx.load_cert_chain(str(pki.other_cert), str(pki.other_key))
    with TlsRawClient(host, int(port), ctx) as c:
        body["topics"][0]["name"] = name + "-2"
        assert c.request(ApiKey.CREATE_TOPICS, 5, body)["topics"][0]["error_code"] == 29
        assert name not in [t["name"] for t in c.request(ApiKey.METADATA, 12, {"topics": None})["topics"]]


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_consumer_group_denied_then_allowed(ab: SecureBroker, protocol: str) -> None:
    from confluent_kafka import Consumer, KafkaError

    t = f"cg-{uuid.uuid4().hex[:6]}"
    group = f"bob-group-{protocol}"
    assert produce_one(ab, "admin", t) is None
    create_acls_raw(ab, [(RT.TOPIC, t, "User:bob", Op.READ)])
    errors: list[Any] = []
    c = Consumer(
        conf(
            ab,
            "bob",
            **{
                "group.id": group,
                "group.protocol": protocol,
                "auto.offset.reset": "earliest",
                "error_cb": errors.append,
            },
        )
    )
    c.subscribe([t])
    got: list[Any] = []
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline and not got:
        m = c.poll(0.5)
        if m is not None:
            got.append(m)
    c.close()
    assert (
        got and got[0].error() is not None and got[0].error().code() == KafkaError.GROUP_AUTHORIZATION_FAILED
    )
    create_acls_raw(ab, [(RT.GROUP, group, "User:bob", Op.READ)])
    c = Consumer(
        conf(ab, "bob", **{"group.id": group, "group.protocol": protocol, "auto.offset.reset": "earliest"})
    )
    c.subscribe([t])
    values = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not values:
        m = c.poll(0.5)
        if m is not None and not m.error():
            values.append(m.value())
    c.close()
    assert values == [b"hello"]


def create_acls_raw(b: SecureBroker, items: list[tuple[int, str, str, int]]) -> None:
    with sasl_client(b, "admin") as c:
        resp = c.request(
            ApiKey.CREATE_ACLS,
            3,
            {
                "creations": [
                    {
                        "resource_type": rt,
                        "resource_name": name,
                        "resource_pattern_type": LIT,
                        "principal": principal,
                        "host": "*",
                        "operation": op,
                        "permission_type": ALLOW,
                    }
                    for rt, name, principal, op in items
                ]
            },
        )
        assert all(r["error_code"] == 0 for r in resp["results"]), resp


def test_consumer_group_regex_resolves_to_topics_the_member_may_describe(ab: SecureBroker) -> None:
    """group.protocol=consumer with SubscribedTopicRegex as alice: the group is assigned only the matching
    topics alice may describe (READ implies it), and picks up a grant at its next regex refresh (a new
    matching topic makes the next heartbeat after ten seconds refresh)."""
    from confluent_kafka import Consumer, KafkaError

    s = uuid.uuid4().hex[:6]
    a, b, secret, c = (f"pay{s}-{x}" for x in ("a", "b", "secret", "c"))
    group = f"g-regex-{s}"
    for t in (a, b, secret):
        assert produce_one(ab, "admin", t) is None
    create_acls_raw(ab, [(RT.GROUP, group, "User:alice", Op.READ), (RT.TOPIC, a, "User:alice", Op.READ)])
    create_acls_raw(ab, [(RT.TOPIC, b, "User:alice", Op.READ)])
    errors: list[Any] = []
    consumer = Consumer(
        conf(
            ab,
            "alice",
            **{
                "group.id": group,
                "group.protocol": "consumer",
                "auto.offset.reset": "earliest",
                "error_cb": errors.append,
                "topic.metadata.refresh.interval.ms": 1000,
            },
        )
    )
    consumer.subscribe([f"^pay{s}-.*"])
    got: dict[str, list[bytes]] = {}

    def consume_until(done: Callable[[], bool], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not done():
            m = consumer.poll(0.5)
            if m is None:
                continue
            assert m.error() is None, m.error()
            got.setdefault(m.topic(), []).append(m.value())

    def assigned_by_broker() -> set[str]:
        """The topics of the group's assignment as the coordinator holds it (described as admin)."""
        with sasl_client(ab, "admin") as admin:
            resp = admin.request(
                ApiKey.CONSUMER_GROUP_DESCRIBE,
                1,
                {"group_ids": [group], "include_authorized_operations": False},
            )
        (described,) = resp["groups"]
        assert described["error_code"] == 0, described
        return {
            t["topic_name"]
            for m in described["members"]
            for t in (m["assignment"] or {}).get("topic_partitions") or []
        }

    try:
        consume_until(lambda: a in got and b in got, 30)
        assert got == {a: [b"hello"], b: [b"hello"]}
        assert {tp.topic for tp in consumer.assignment()} == {a, b}
        assert assigned_by_broker() == {a, b}
        # Alice may now read the secret topic, and a new matching topic she may read appears: the next
        # refresh (ten seconds after the last one at the earliest) resolves both for her.
        create_acls_raw(ab, [(RT.TOPIC, secret, "User:alice", Op.READ), (RT.TOPIC, c, "User:alice", Op.READ)])
        assert produce_one(ab, "admin", c) is None
        consume_until(lambda: secret in got and c in got, 45)
        assert got == {t: [b"hello"] for t in (a, b, secret, c)}
        assert {tp.topic for tp in consumer.assignment()} == {a, b, secret, c}
        assert assigned_by_broker() == {a, b, secret, c}
    finally:
        consumer.close()
    denied = [e for e in errors if e.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED]
    assert not denied, denied


def test_acls_survive_restart_and_bad_acls_are_refused(
    tmp_path: Path, attach_broker: Callable[..., Any]
) -> None:
    pki = make_pki(tmp_path / "pki")
    rc = kafkite_cli("user", "--log-dirs", str(tmp_path / "data"), "add", "admin", "--password", "admin-pw")
    assert rc.returncode == 0
    b = SecureBroker(
        tmp_path / "data",
        tmp_path / "broker.log",
        {"SASL_PLAINTEXT": "SASL_PLAINTEXT"},
        ["authorizer.class.name=kafkite", "super.users=User:admin", "allow.everyone.if.no.acl.found=true"],
    )
    del pki
    attach_broker(b)
    b.start()
    try:
        create_acls_raw(b, [(RT.TOPIC, "secret", "User:admin", Op.ALL)])
        with sasl_client(b, "admin") as c:
            resp = c.request(
                ApiKey.CREATE_ACLS,
                1,
                {
                    "creations": [
                        {
                            "resource_type": RT.TOPIC,
                            "resource_name": "x",
                            "resource_pattern_type": PatternType.MATCH,
                            "principal": "User:a",
                            "host": "*",
                            "operation": Op.READ,
                            "permission_type": ALLOW,
                        }
                    ]
                },
            )
            assert resp["results"][0]["error_code"] == 42
        b.restart()
        # allow.everyone.if.no.acl.found: anonymous clients may use topics without ACLs, not "secret".
        with RawClient.to(b.bootstrap) as c:
            resp = c.request(
                ApiKey.METADATA,
                4,
                {"topics": [{"name": "open"}, {"name": "secret"}], "allow_auto_topic_creation": True},
            )
            assert [(t["name"], t["error_code"]) for t in resp["topics"]] == [("open", 0), ("secret", 29)]
    finally:
        b.stop()


def test_replica_and_feature_apis_need_cluster_or_topic_acls(ab: SecureBroker) -> None:
    t = f"r-{uuid.uuid4().hex[:8]}"
    with sasl_client(ab, "admin") as c:
        created = c.request(
            ApiKey.CREATE_TOPICS,
            5,
            {"topics": [{"name": t, "num_partitions": 2, "replication_factor": 1}], "timeout_ms": 5000},
        )
        assert created["topics"][0]["error_code"] == 0
        elect = c.request(
            ApiKey.ELECT_LEADERS,
            2,
            {"election_type": 0, "topic_partitions": [{"topic": t, "partitions": [0]}]},
        )
        assert elect["error_code"] == 0
        assert elect["replica_election_results"][0]["partition_result"][0]["error_code"] == 84
        described = c.request(ApiKey.DESCRIBE_TOPIC_PARTITIONS, 0, {"topics": [{"name": t}]})
        assert described["topics"][0]["error_code"] == 0
        assert described["topics"][0]["topic_authorized_operations"] != -2147483648
    with sasl_client(ab, "bob") as c:  # no ACLs at all
        elect = c.request(
            ApiKey.ELECT_LEADERS,
            2,
            {"election_type": 0, "topic_partitions": [{"topic": t, "partitions": [0]}]},
        )
        assert elect["error_code"] == 31
        assert elect["replica_election_results"][0]["partition_result"][0]["error_code"] == 31
        feats = c.request(
            ApiKey.UPDATE_FEATURES,
            1,
            {
                "feature_updates": [{"feature": "group.version", "max_version_level": 0}],
                "validate_only": True,
            },
        )
        assert feats["error_code"] == 31
        listed = c.request(ApiKey.LIST_PARTITION_REASSIGNMENTS, 0, {"topics": None})
        assert listed["error_code"] == 31
        altered = c.request(
            ApiKey.ALTER_PARTITION_REASSIGNMENTS,
            0,
            {"topics": [{"name": t, "partitions": [{"partition_index": 0, "replicas": [1]}]}]},
        )
        assert altered["error_code"] == 31
        assert altered["responses"][0]["partitions"][0]["error_code"] == 31
        described = c.request(ApiKey.DESCRIBE_TOPIC_PARTITIONS, 0, {"topics": [{"name": t}]})
        assert [(x["name"], x["error_code"]) for x in described["topics"]] == [(t, 29)]
        everything = c.request(ApiKey.DESCRIBE_TOPIC_PARTITIONS, 0, {"topics": []})
        assert t not in {x["name"] for x in everything["topics"]}
        log_dirs = c.request(ApiKey.DESCRIBE_LOG_DIRS, 4, {"topics": None})
        assert log_dirs["error_code"] == 31


def test_share_group_acls_as_kafka_applies_them(ab: SecureBroker) -> None:
    """ShareGroupHeartbeat and ShareFetch need READ on the group and the topic (DESCRIBE on the topic for the
    heartbeat); DeleteShareGroupOffsets needs DELETE on the group; ShareGroupDescribe DESCRIBE on it."""
    from confluent_kafka import ShareConsumer

    t = f"share-acl-{uuid.uuid4().hex[:6]}"
    group = f"bob-share-{uuid.uuid4().hex[:6]}"
    assert produce_one(ab, "admin", t) is None
    with sasl_client(ab, "admin") as c:
        tid = next(x["topic_id"] for x in c.request(ApiKey.METADATA, 12, {"topics": [{"name": t}]})["topics"])
        resp = c.request(
            ApiKey.INCREMENTAL_ALTER_CONFIGS,
            1,
            {
                "resources": [
                    {
                        "resource_type": 32,
                        "resource_name": group,
                        "configs": [
                            {"name": "share.auto.offset.reset", "config_operation": 0, "value": "earliest"}
                        ],
                    }
                ],
                "validate_only": False,
            },
        )
        assert resp["responses"][0]["error_code"] == 0

    def heartbeat(c: RawClient) -> dict[str, Any]:
        body = {"group_id": group, "member_id": "bob-1", "member_epoch": 0, "subscribed_topic_names": [t]}
        return c.request(ApiKey.SHARE_GROUP_HEARTBEAT, 1, body)

    def share_fetch(c: RawClient) -> dict[str, Any]:
        body = {
            "group_id": group,
            "member_id": "bob-1",
            "share_session_epoch": 0,
            "max_wait_ms": 0,
            "min_bytes": 1,
            "max_bytes": 1 << 20,
            "max_records": 10,
            "batch_size": 10,
            "topics": [
                {"topic_id": tid, "partitions": [{"partition_index": 0, "acknowledgement_batches": []}]}
            ],
            "forgotten_topics_data": [],
        }
        return c.request(ApiKey.SHARE_FETCH, 1, body)

    with sasl_client(ab, "bob") as c:
        assert heartbeat(c)["error_code"] == int(ErrorCode.GROUP_AUTHORIZATION_FAILED)
        assert share_fetch(c)["error_code"] == int(ErrorCode.GROUP_AUTHORIZATION_FAILED)
    create_acls_raw(ab, [(RT.GROUP, group, "User:bob", Op.READ)])
    with sasl_client(ab, "bob") as c:
        assert heartbeat(c)["error_code"] == int(ErrorCode.TOPIC_AUTHORIZATION_FAILED)
        fetched = share_fetch(c)
        assert fetched["error_code"] == 0
        assert fetched["responses"][0]["partitions"][0]["error_code"] == int(
            ErrorCode.TOPIC_AUTHORIZATION_FAILED
        )
        described = c.request(
            ApiKey.SHARE_GROUP_DESCRIBE, 1, {"group_ids": [group], "include_authorized_operations": False}
        )
        # READ on the group implies DESCRIBE: the group is described (it does not exist yet).
        assert described["groups"][0]["error_code"] == int(ErrorCode.GROUP_ID_NOT_FOUND)
    create_acls_raw(ab, [(RT.TOPIC, t, "User:bob", Op.READ)])
    consumer = ShareConsumer(conf(ab, "bob", **{"group.id": group}))
    consumer.subscribe([t])
    values: list[bytes] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not values:
        values += [m.value() for m in consumer.poll(0.5) if m.error() is None]
    consumer.close()
    assert values == [b"hello"]
    delete = {"group_id": group, "topics": [{"topic_name": t}]}
    with sasl_client(ab, "bob") as c:
        resp = c.request(ApiKey.DELETE_SHARE_GROUP_OFFSETS, 0, delete)
        assert resp["error_code"] == int(ErrorCode.GROUP_AUTHORIZATION_FAILED)
    create_acls_raw(ab, [(RT.GROUP, group, "User:bob", Op.DELETE)])
    with sasl_client(ab, "bob") as c:
        deadline = time.monotonic() + 20
        while True:  # the consumer's membership ends with its leaving heartbeat
            resp = c.request(ApiKey.DELETE_SHARE_GROUP_OFFSETS, 0, delete)
            if resp["error_code"] != int(ErrorCode.NON_EMPTY_GROUP) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert resp["error_code"] == 0 and resp["responses"][0]["error_code"] == 0
