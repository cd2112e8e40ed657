"""One security model for every door: a broker with a SASL listener and an authorizer, driven through the real
client of each door (the oci SDK, stomp.py, curl, a browser, confluent-kafka), and its audit trail.

The browser test needs Debian's ``chromium`` and ``chromium-driver`` and selenium (see tests/test_console.py).
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import oci
import pytest
import stomp
from helpers import REPO, BrokerError, BrokerProcess, RawClient, free_port
from test_console import _browser
from test_queue_stomp import Collector
from test_security_support import SecureBroker
from test_streaming_support import COMPARTMENT, TENANCY, make_api_key

from kafkite.protocol.api_keys import ApiKey

pytestmark = pytest.mark.timeout(300)

ADMIN_OCID = "ocid1.user.oc1..doorsadmin"
READER_OCID = "ocid1.user.oc1..doorsreader"
OTHER_OCID = "ocid1.user.oc1..doorsother"
CARD = "4111 1111 1111 1111"


@dataclass
class Doors:
    broker: SecureBroker
    rest: str
    stomp_port: int
    console: str
    metrics: str
    keys: dict[str, tuple[Path, str]]  # name -> (private key file, fingerprint)
    stranger: tuple[Path, str]
    made: dict[str, Any] = field(default_factory=dict)

    @property
    def sasl(self) -> str:
        return self.broker.address("SASL_PLAINTEXT")

    def kafka_conf(self, user: str, password: str) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.sasl,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN",
            "sasl.username": user,
            "sasl.password": password,
        }

    def sdk(self, who: str, claim: str | None = None) -> dict[str, Any]:
        """The oci SDK config of ``who``'s key; ``claim`` puts another user OCID in its keyId."""
        if who == "stranger":
            key, fp, user = self.stranger[0], self.stranger[1], READER_OCID
        else:
            key, fp = self.keys[who]
            user = {"admin": ADMIN_OCID, "reader": READER_OCID, "other": OTHER_OCID}[who]
        user = claim or user
        return {
            "user": user,
            "tenancy": TENANCY,
            "fingerprint": fp,
            "key_file": str(key),
            "region": "us-ashburn-1",
        }

    def streaming(self, who: str, claim: str | None = None) -> tuple[Any, Any]:
        none = oci.retry.NoneRetryStrategy()
        cfg = self.sdk(who, claim)
        return (
            oci.streaming.StreamAdminClient(cfg, service_endpoint=self.rest, retry_strategy=none),
            oci.streaming.StreamClient(cfg, service_endpoint=self.rest, retry_strategy=none),
        )

    def queues(self, who: str) -> tuple[Any, Any]:
        none = oci.retry.NoneRetryStrategy()
        cfg = self.sdk(who)
        return (
            oci.queue.QueueAdminClient(cfg, service_endpoint=self.rest, retry_strategy=none),
            oci.queue.QueueClient(cfg, service_endpoint=self.rest, retry_strategy=none),
        )


def secured_overrides(rest_port: int, keys: list[Path], mapping: Path) -> list[str]:
    return [
        "authorizer.class.name=kafkite",
        f"super.users=User:admin;User:{ADMIN_OCID}",
        "sasl.plain.users=admin=admin-secret,bob=bob-secret",
        f"rest.listeners=http://127.0.0.1:{rest_port}",
        "streaming.auth.enable=true",
        f"streaming.auth.public.keys={','.join(str(k) for k in keys)}",
        f"rest.auth.principal.mapping={mapping}",
        "queue.auth.enable=true",
    ]


@pytest.fixture(scope="module")
def doors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Doors]:
    root = tmp_path_factory.mktemp("doors")
    keys: dict[str, tuple[Path, str]] = {}
    publics = []
    for name in ("admin", "reader", "other", "stranger"):
        (root / name).mkdir()
        private, public, fp = make_api_key(root / name)
        keys[name] = (private, fp)
        if name != "stranger":
            publics.append(public)
    # Each configured key belongs to one user: the signature proves the key, never the keyId's user part.
    owners = {"admin": ADMIN_OCID, "reader": READER_OCID, "other": OTHER_OCID}
    mapping = root / "principals"
    mapping.write_text("".join(f"{keys[n][1]} User:{ocid}\n" for n, ocid in owners.items()))
    data = root / "data"
    # alice is a SCRAM user of the user store, as `kafkite user add` makes them.
    subprocess.run(
        [sys.executable, "-m", "kafkite.cli", "user", "add", "alice", "--password", "alice-secret",
         "--mechanism", "SCRAM-SHA-512", "--log-dirs", str(data)],
        cwd=REPO, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    rest, stomp_port, console, metrics = free_port(), free_port(), free_port(), free_port()
    b = SecureBroker(
        data,
        root / "broker.log",
        {"SASL_PLAINTEXT": "SASL_PLAINTEXT"},
        [
            *secured_overrides(rest, publics, mapping),
            f"stomp.listeners=stomp://127.0.0.1:{stomp_port}",
            f"console.listener=http://127.0.0.1:{console}",
            f"metrics.listener=http://127.0.0.1:{metrics}",
            "audit.log.topic=__audit",
        ],
    )
    b.start()
    stranger = keys.pop("stranger")
    d = Doors(
        b,
        f"http://127.0.0.1:{rest}",
        stomp_port,
        f"http://127.0.0.1:{console}",
        f"http://127.0.0.1:{metrics}/metrics",
        keys,
        stranger,
    )
    try:
        yield d
    finally:
        b.stop()


@pytest.fixture
def d(doors: Doors, attach_broker: Callable[[BrokerProcess], BrokerProcess]) -> Doors:
    attach_broker(doors.broker)
    return doors


def curl(*args: str) -> tuple[int, dict[str, str], str]:
    """(status, headers, body) of one curl request."""
    raw = subprocess.run(
        ["curl", "-s", "-i", "--max-time", "10", *args], capture_output=True, timeout=30, check=True
    ).stdout
    out = raw.decode("utf-8", errors="replace")
    head, _, body = out.partition("\r\n\r\n")
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


def admin_client(d: Doors, user: str = "admin", password: str = "admin-secret") -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient(d.kafka_conf(user, password))


def create_topic(d: Doors, name: str, partitions: int = 1) -> None:
    from confluent_kafka.admin import NewTopic

    admin = admin_client(d)
    fs = admin.create_topics([NewTopic(name, partitions, 1)], operation_timeout=10)
    fs[name].result(timeout=15)


def allow(d: Doors, principal: str, op: str, rtype: str, name: str) -> None:
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    binding = AclBinding(
        getattr(ResourceType, rtype),
        name,
        ResourcePatternType.LITERAL,
        principal,
        "*",
        getattr(AclOperation, op),
        AclPermissionType.ALLOW,
    )
    admin = admin_client(d)
    for f in admin.create_acls([binding]).values():
        f.result(timeout=15)


def produce(d: Doors, topic: str, value: str) -> None:
    from confluent_kafka import Producer

    p = Producer({**d.kafka_conf("admin", "admin-secret"), "acks": "all"})
    errors: list[Any] = []
    p.produce(topic, value.encode(), on_delivery=lambda err, msg: err and errors.append(err))
    assert p.flush(30) == 0 and not errors, errors


def service_error(fn: Callable[..., Any], *args: Any, **kw: Any) -> oci.exceptions.ServiceError:
    with pytest.raises(oci.exceptions.ServiceError) as info:
        fn(*args, **kw)
    return info.value


def stream_id(d: Doors, name: str) -> str:
    admin, _ = d.streaming("admin")
    streams = admin.list_streams(compartment_id=COMPARTMENT, name=name).data
    if not streams:
        # Streams of the default pool are listed in every compartment, as OCI keeps one pool per compartment.
        pool = admin.list_stream_pools(compartment_id=COMPARTMENT).data[0]
        streams = admin.list_streams(stream_pool_id=pool.id, name=name).data
    assert streams, name
    return str(streams[0].id)


def make_queue(d: Doors, name: str) -> str:
    from oci.queue.models import CreateQueueDetails

    admin, _ = d.queues("admin")
    composite = oci.queue.QueueAdminClientCompositeOperations(admin)
    wr = composite.create_queue_and_wait_for_state(
        CreateQueueDetails(display_name=name, compartment_id=COMPARTMENT), wait_for_states=["SUCCEEDED"]
    )
    return str(wr.data.resources[0].identifier)


def stomp_connect(d: Doors, login: str | None, passcode: str | None) -> tuple[Any, Collector]:
    conn = stomp.Connection12([("127.0.0.1", d.stomp_port)], heartbeats=(0, 0))
    listener = Collector()
    conn.set_listener("c", listener)
    kw: dict[str, Any] = {"wait": True}
    if login is not None:
        kw.update(username=login, passcode=passcode)
    conn.connect(**kw)
    return conn, listener


def close(conn: Any) -> None:
    """Disconnect, whether or not the server already closed the connection (it does after an ERROR)."""
    with contextlib.suppress(Exception):
        conn.disconnect()


def audit_records(d: Doors, *filters: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "kafkite.cli", "audit", "--log-dirs", str(d.broker.data_dir), "--json",
         *filters],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode in (0, 1), out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def wait_audit(d: Doors, predicate: Callable[[dict[str, Any]], bool], n: int = 1) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        got = [r for r in audit_records(d) if predicate(r)]
        if len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


# ---------------------------------------------------------------------------------------------- refusals


def test_unauthenticated_requests_are_refused_on_every_door(d: Doors) -> None:
    # curl without a signature, cookie or password.
    status, _, body = curl(f"{d.rest}/20180418/streams?compartmentId={COMPARTMENT}")
    assert status == 401 and json.loads(body)["code"] == "NotAuthenticated"
    status, _, body = curl(f"{d.rest}/20210201/queues?compartmentId={COMPARTMENT}")
    assert status == 401 and json.loads(body)["code"] == "NotAuthenticated"
    assert curl(f"{d.console}/api/topics")[0] == 401
    status, headers, _ = curl(f"{d.console}/")
    assert status == 303 and headers["location"] == "/login"
    assert curl(f"{d.console}/static/console.js")[0] == 303
    status, headers, _ = curl(d.metrics)
    assert status == 401 and headers["www-authenticate"].startswith("Basic")
    assert curl("-u", "admin:wrong", d.metrics)[0] == 401

    # The oci SDK signing with a key the broker does not know.
    admin, _ = d.streaming("stranger")
    assert service_error(admin.list_streams, compartment_id=COMPARTMENT).status == 401
    qadmin, _ = d.queues("stranger")
    assert service_error(qadmin.list_queues, compartment_id=COMPARTMENT).status == 401

    # stomp.py without a login, and with a wrong passcode.
    for login, passcode in ((None, None), ("bob", "wrong"), ("nobody", "x")):
        with pytest.raises(stomp.exception.ConnectFailedException):
            stomp_connect(d, login, passcode)

    refused = wait_audit(d, lambda r: r["result"] == "unauthenticated", 6)
    assert {r["surface"] for r in refused} >= {"streaming", "queue", "stomp", "metrics"}


def test_signed_reader_reads_and_others_get_not_authorized(d: Doors) -> None:
    create_topic(d, "t")
    produce(d, "t", CARD)
    allow(d, f"User:{READER_OCID}", "READ", "TOPIC", "t")
    sid = stream_id(d, "t")
    from oci.streaming.models import CreateCursorDetails

    # The reader: DESCRIBE (implied by READ) lists and shows the stream; READ reads it.
    admin, data = d.streaming("reader")
    (pool,) = admin.list_stream_pools(compartment_id=COMPARTMENT).data  # the default pool, holding t
    assert "t" in [s.name for s in admin.list_streams(stream_pool_id=pool.id).data]
    cursor = data.create_cursor(sid, CreateCursorDetails(partition="0", type="TRIM_HORIZON")).data.value
    msgs = data.get_messages(sid, cursor).data
    assert [base64.b64decode(m.value).decode() for m in msgs] == [CARD]

    # Another signed principal: OCI's not-authorized error everywhere, and no stream listed.
    admin, data = d.streaming("other")
    e = service_error(data.create_cursor, sid, CreateCursorDetails(partition="0", type="TRIM_HORIZON"))
    assert (e.status, e.code) == (404, "NotAuthorizedOrNotFound")
    e = service_error(data.get_messages, sid, cursor)
    assert (e.status, e.code) == (404, "NotAuthorizedOrNotFound")
    assert service_error(admin.get_stream, sid).status == 404
    assert admin.list_stream_pools(compartment_id=COMPARTMENT).data == []
    assert "t" not in [s.name for s in admin.list_streams(stream_pool_id=pool.id).data]
    from oci.streaming.models import PutMessagesDetails, PutMessagesDetailsEntry

    e = service_error(
        data.put_messages, sid, PutMessagesDetails(messages=[PutMessagesDetailsEntry(value="eA==")])
    )
    assert (e.status, e.code) == (404, "NotAuthorizedOrNotFound")
    # The reader may read, not write.
    _, data = d.streaming("reader")
    e = service_error(
        data.put_messages, sid, PutMessagesDetails(messages=[PutMessagesDetailsEntry(value="eA==")])
    )
    assert e.status == 404
    denied = wait_audit(
        d,
        lambda r: r["surface"] == "streaming" and r["result"] == "denied" and r["operation"] == "PutMessages",
        2,
    )
    assert {r["principal"] for r in denied} == {f"User:{READER_OCID}", f"User:{OTHER_OCID}"}


def test_a_key_claiming_another_users_ocid_stays_its_owner(d: Doors) -> None:
    """The keyId's user part is the signer's to write: the reader's key naming the admin (a super user) in
    its keyId is still the reader, and its refusals are audited under the reader."""
    create_topic(d, "claimed")
    sid = stream_id(d, "claimed")
    from oci.streaming.models import PutMessagesDetails, PutMessagesDetailsEntry

    _, data = d.streaming("reader", claim=ADMIN_OCID)
    e = service_error(
        data.put_messages, sid, PutMessagesDetails(messages=[PutMessagesDetailsEntry(value="eA==")])
    )
    assert (e.status, e.code) == (404, "NotAuthorizedOrNotFound")
    denied = wait_audit(
        d,
        lambda r: (
            r["surface"] == "streaming" and r["result"] == "denied" and r["resource"]["name"] == "claimed"
        ),
        1,
    )
    assert [r["principal"] for r in denied] == [f"User:{READER_OCID}"]
    # The admin's own key is the admin, whatever its keyId claims.
    _, data = d.streaming("admin", claim=READER_OCID)
    data.put_messages(sid, PutMessagesDetails(messages=[PutMessagesDetailsEntry(value="eA==")]))


def test_acls_name_a_pool_stream_as_the_pools_clients_see_it(d: Doors) -> None:
    from oci.streaming.models import (
        CreateCursorDetails,
        CreateStreamDetails,
        CreateStreamPoolDetails,
        PutMessagesDetails,
        PutMessagesDetailsEntry,
    )

    admin, admin_data = d.streaming("admin")
    pool = admin.create_stream_pool(
        CreateStreamPoolDetails(compartment_id=COMPARTMENT, name="doors-pool")
    ).data
    stream = admin.create_stream(
        CreateStreamDetails(name="pooled", partitions=1, stream_pool_id=pool.id)
    ).data
    admin_data.put_messages(
        stream.id, PutMessagesDetails(messages=[PutMessagesDetailsEntry(value="cG9vbGVk")])
    )
    # The ACL names the stream as a Kafka client of the pool sees its topic: "pooled".
    allow(d, f"User:{READER_OCID}", "READ", "TOPIC", "pooled")
    _, data = d.streaming("reader")
    cursor = data.create_cursor(stream.id, CreateCursorDetails(partition="0", type="TRIM_HORIZON")).data.value
    assert [m.value for m in data.get_messages(stream.id, cursor).data] == ["cG9vbGVk"]
    _, data = d.streaming("other")
    e = service_error(data.create_cursor, stream.id, CreateCursorDetails(partition="0", type="TRIM_HORIZON"))
    assert e.status == 404
    # Deleting the pool needs ALTER on the cluster and DELETE on its streams: refused, and audited once.
    other_admin, _ = d.streaming("other")
    assert service_error(other_admin.delete_stream_pool, pool.id).status == 404
    admin.delete_stream_pool(pool.id)
    records = wait_audit(d, lambda r: r["operation"] == "DeleteStreamPool", 2)
    assert sorted((r["principal"], r["result"]) for r in records) == [
        (f"User:{ADMIN_OCID}", "ok"),
        (f"User:{OTHER_OCID}", "denied"),
    ]


def test_stomp_login_without_rights_on_a_queue_gets_an_error_frame(d: Doors) -> None:
    qid = make_queue(d, "doors-q")
    allow(d, "User:alice", "WRITE", "TOPIC", qid)
    allow(d, "User:alice", "READ", "TOPIC", qid)

    # bob is a SASL user with no rights on the queue: authenticated, then refused.
    conn, listener = stomp_connect(d, "bob", "bob-secret")
    try:
        conn.send(destination=f"/queue/{qid}", body="from bob")
        frame = listener.errors.get(timeout=5)
        assert frame.headers["message"] == "not authorized"
        assert "User:bob" in frame.body
    finally:
        close(conn)
    conn, listener = stomp_connect(d, "bob", "bob-secret")
    try:
        conn.subscribe(destination=f"/queue/{qid}", id="s1", ack="client-individual")
        assert listener.errors.get(timeout=5).headers["message"] == "not authorized"
    finally:
        close(conn)

    # alice (a SCRAM user of the user store) has WRITE and READ: her message goes round.
    conn, listener = stomp_connect(d, "alice", "alice-secret")
    try:
        conn.send(destination=f"/queue/{qid}", body="from alice")
        conn.subscribe(destination=f"/queue/{qid}", id="s1", ack="client-individual")
        m = listener.next(timeout=10)
        assert m.body == "from alice"
        conn.ack(m.headers["ack"])
    finally:
        conn.disconnect()
    denied = wait_audit(d, lambda r: r["surface"] == "stomp" and r["result"] == "denied", 2)
    assert {(r["principal"], r["operation"], r["resource"]["name"]) for r in denied} == {
        ("User:bob", "Send", qid),
        ("User:bob", "Subscribe", qid),
    }


def test_queue_rest_acls(d: Doors) -> None:
    from oci.queue.models import PutMessagesDetails, PutMessagesDetailsEntry

    qid = make_queue(d, "doors-rest-q")
    allow(d, f"User:{READER_OCID}", "READ", "TOPIC", qid)
    _, admin_data = d.queues("admin")
    admin_data.put_messages(qid, PutMessagesDetails(messages=[PutMessagesDetailsEntry(content=CARD)]))
    _, reader = d.queues("reader")
    got = reader.get_messages(qid, timeout_in_seconds=0).data.messages
    assert [m.content for m in got] == [CARD]
    e = service_error(
        reader.put_messages, qid, PutMessagesDetails(messages=[PutMessagesDetailsEntry(content="x")])
    )
    assert (e.status, e.code) == (404, "NotAuthorizedOrNotFound")
    _, other = d.queues("other")
    e = service_error(other.get_messages, qid, timeout_in_seconds=0)
    assert (e.status, e.code) == (404, "NotAuthorizedOrNotFound")
    other_admin, _ = d.queues("other")
    assert qid not in [q.id for q in other_admin.list_queues(compartment_id=COMPARTMENT).data.items]


def test_metrics_need_a_sasl_user_allowed_to_describe_the_cluster(d: Doors) -> None:
    status, _, body = curl("-u", "admin:admin-secret", d.metrics)
    assert status == 200 and "kafkite_" in body
    status, _, _ = curl("-u", "alice:alice-secret", d.metrics)
    assert status == 403


def test_console_login_in_chromium_shows_only_what_the_principal_may_see(d: Doors, tmp_path: Path) -> None:
    ui = pytest.importorskip("selenium.webdriver.support.ui", reason="selenium is not installed")
    create_topic(d, "console-visible")
    create_topic(d, "console-hidden")
    produce(d, "console-visible", "hello from the console")
    produce(d, "console-hidden", CARD)
    allow(d, "User:alice", "READ", "TOPIC", "console-visible")
    driver = _browser(tmp_path)
    try:
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
        from selenium.webdriver.common.by import By

        wait = ui.WebDriverWait(
            driver, 15, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
        )
        # Not logged in: every page is the login page, and no topic name leaks.
        driver.get(d.console + "/#/topics")
        wait.until(lambda drv: drv.find_element(By.ID, "login-form"))
        assert urllib.parse.urlsplit(driver.current_url).path == "/login"
        assert "console-visible" not in driver.page_source
        # A wrong password stays on the login page.
        driver.find_element(By.ID, "username").send_keys("alice")
        driver.find_element(By.ID, "password").send_keys("wrong")
        driver.find_element(By.ID, "login-submit").click()
        assert (
            "Wrong user name or password"
            in wait.until(lambda drv: drv.find_element(By.ID, "login-error")).text
        )
        # alice logs in: she sees the topic she may read, not the other.
        driver.find_element(By.ID, "username").clear()
        driver.find_element(By.ID, "username").send_keys("alice")
        driver.find_element(By.ID, "password").send_keys("alice-secret")
        driver.find_element(By.ID, "login-submit").click()
        assert wait.until(lambda drv: drv.find_element(By.ID, "principal")).text == "User:alice"
        driver.get(d.console + "/#/topics")
        wait.until(lambda drv: drv.find_element(By.LINK_TEXT, "console-visible"))
        assert "console-hidden" not in driver.find_element(By.ID, "view").text
        cookie = driver.get_cookie("kafkite_session")
        assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        # The session's JSON endpoints answer as alice.
        jar = f"kafkite_session={cookie['value']}"
        status, _, body = curl(
            "-b", jar, f"{d.console}/api/topics/console-visible/messages?partition=0&offset=0"
        )
        assert status == 200 and json.loads(body)["messages"][0]["value"]["text"] == "hello from the console"
        status, _, body = curl(
            "-b", jar, f"{d.console}/api/topics/console-hidden/messages?partition=0&offset=0"
        )
        assert status == 403 and CARD not in body
        # State-changing requests need the CSRF token (and the console's own origin).
        assert curl("-b", jar, "-X", "POST", f"{d.console}/api/topics")[0] == 403
        # Logging out ends the session.
        driver.find_element(By.ID, "logout").click()
        wait.until(lambda drv: drv.find_element(By.ID, "login-form"))
        assert curl("-b", jar, f"{d.console}/api/topics")[0] == 401
        logs = [
            e for e in driver.get_log("browser") if e.get("level") == "SEVERE" and "401" not in e["message"]
        ]
        assert not logs, logs
    finally:
        driver.quit()
    refused = wait_audit(d, lambda r: r["surface"] == "console" and r["result"] == "denied")
    assert [(r["principal"], r["resource"]["name"]) for r in refused] == [("User:alice", "console-hidden")]


# ---------------------------------------------------------------------------------------------- audit


def sasl_raw(d: Doors, user: str, password: str) -> RawClient:
    c = RawClient.to(d.sasl)
    assert c.request(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"})["error_code"] == 0
    auth = c.request(ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": f"\0{user}\0{password}".encode()})
    assert auth["error_code"] == 0, auth
    return c


def test_every_control_plane_change_and_refusal_is_audited_once(d: Doors) -> None:
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        NewPartitions,
        NewTopic,
        ResourcePatternType,
        ResourceType,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    admin, bob = admin_client(d), admin_client(d, "bob", "bob-secret")

    def ok(fs: dict[Any, Any]) -> None:
        for f in fs.values():
            f.result(timeout=15)

    def refused(fs: dict[Any, Any]) -> None:
        for f in fs.values():
            with pytest.raises(Exception) as e:
                f.result(timeout=15)
            assert "AUTHORIZATION" in str(e.value).upper(), e.value

    # Topics, partitions and configs: permitted for admin, refused for bob.
    ok(admin.create_topics([NewTopic("audited", 1, 1), NewTopic("audited-gone", 1, 1)]))
    refused(bob.create_topics([NewTopic("bobs-topic", 1, 1)]))
    ok(admin.create_partitions([NewPartitions("audited", 2)]))
    retention = ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET)
    ok(admin.incremental_alter_configs([ConfigResource("TOPIC", "audited", incremental_configs=[retention])]))
    refused(
        bob.incremental_alter_configs([ConfigResource("TOPIC", "audited", incremental_configs=[retention])])
    )
    session = ConfigEntry("consumer.session.timeout.ms", "50000", incremental_operation=AlterConfigOpType.SET)
    group_config = ConfigResource(ResourceType.GROUP, "audited-group", incremental_configs=[session])
    ok(admin.incremental_alter_configs([group_config]))
    ok(admin.delete_topics(["audited-gone"], operation_timeout=10))
    refused(bob.delete_topics(["audited"], operation_timeout=10))
    # ACLs and users.
    binding = AclBinding(
        ResourceType.GROUP, "carol-group", ResourcePatternType.LITERAL, "User:carol", "*",
        AclOperation.READ, AclPermissionType.ALLOW,
    )  # fmt: skip
    ok(admin.create_acls([binding]))
    refused(bob.create_acls([binding]))
    upsert = UserScramCredentialUpsertion(
        "carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192), b"pw"
    )
    ok(admin.alter_user_scram_credentials([upsert]))
    refused(bob.alter_user_scram_credentials([upsert]))
    # Group offsets: a reset from outside the group, an offset deletion, a group deletion.
    tps = [TopicPartition("audited", 0, 0), TopicPartition("audited", 1, 0)]
    ok(admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions("audited-group", tps)]))
    with sasl_raw(d, "admin", "admin-secret") as c:
        # Version 10 names the topic by id; the trail names it.
        md = c.request(
            ApiKey.METADATA, 12, {"topics": [{"name": "audited"}], "allow_auto_topic_creation": False}
        )
        commit = {
            "group_id": "audited-ids",
            "generation_id_or_member_epoch": -1,
            "member_id": "",
            "topics": [
                {
                    "topic_id": md["topics"][0]["topic_id"],
                    "partitions": [{"partition_index": 1, "committed_offset": 0}],
                }
            ],
        }
        resp = c.request(ApiKey.OFFSET_COMMIT, 10, commit)
        assert resp["topics"][0]["partitions"][0]["error_code"] == 0, resp
        resp = c.request(
            ApiKey.OFFSET_DELETE,
            0,
            {
                "group_id": "audited-group",
                "topics": [{"name": "audited", "partitions": [{"partition_index": 0}]}],
            },
        )
        assert resp["error_code"] == 0, resp
        quota = {
            "entries": [
                {
                    "entity": [{"entity_type": "user", "entity_name": "bob"}],
                    "ops": [{"key": "producer_byte_rate", "value": 1048576.0, "remove": False}],
                }
            ],
            "validate_only": False,
        }
        assert c.request(ApiKey.ALTER_CLIENT_QUOTAS, 1, quota)["entries"][0]["error_code"] == 0
    with sasl_raw(d, "bob", "bob-secret") as c:
        assert c.request(ApiKey.ALTER_CLIENT_QUOTAS, 1, quota)["entries"][0]["error_code"] == 31
    ok(admin.delete_consumer_groups(["audited-group"]))
    allow(d, "User:bob", "DESCRIBE", "GROUP", "audited-group")  # finds the coordinator, may not delete
    refused(bob.delete_consumer_groups(["audited-group"]))

    # REST control plane: a stream created and deleted by admin, refused to another principal.
    from oci.streaming.models import CreateStreamDetails

    sadmin, _ = d.streaming("admin")
    created = sadmin.create_stream(
        CreateStreamDetails(name="audited-stream", partitions=1, compartment_id=COMPARTMENT)
    ).data
    sadmin.delete_stream(created.id)
    sother, _ = d.streaming("other")
    e = service_error(
        sother.create_stream,
        CreateStreamDetails(name="others-stream", partitions=1, compartment_id=COMPARTMENT),
    )
    assert e.status == 404

    expected = [
        ("kafka", "User:admin", "CreateTopics", "audited", "ok"),
        ("kafka", "User:admin", "CreateTopics", "audited-gone", "ok"),
        ("kafka", "User:bob", "CreateTopics", "bobs-topic", "denied"),
        ("kafka", "User:admin", "CreatePartitions", "audited", "ok"),
        ("kafka", "User:admin", "IncrementalAlterConfigs", "audited", "ok"),
        ("kafka", "User:bob", "IncrementalAlterConfigs", "audited", "denied"),
        ("kafka", "User:admin", "IncrementalAlterConfigs", "audited-group", "ok"),
        ("kafka", "User:admin", "DeleteTopics", "audited-gone", "ok"),
        ("kafka", "User:bob", "DeleteTopics", "audited", "denied"),
        ("kafka", "User:admin", "CreateAcls", "GROUP:carol-group", "ok"),
        ("kafka", "User:bob", "CreateAcls", "GROUP:carol-group", "denied"),
        ("kafka", "User:admin", "AlterUserScramCredentials", "carol", "ok"),
        ("kafka", "User:bob", "AlterUserScramCredentials", "carol", "denied"),
        ("kafka", "User:admin", "OffsetCommit", "audited-group", "ok"),
        ("kafka", "User:admin", "OffsetCommit", "audited-ids", "ok"),
        ("kafka", "User:admin", "OffsetDelete", "audited-group", "ok"),
        ("kafka", "User:admin", "AlterClientQuotas", "user=bob", "ok"),
        ("kafka", "User:bob", "AlterClientQuotas", "user=bob", "denied"),
        ("kafka", "User:admin", "DeleteGroups", "audited-group", "ok"),
        ("kafka", "User:bob", "DeleteGroups", "audited-group", "denied"),
        ("streaming", f"User:{ADMIN_OCID}", "CreateStream", "audited-stream", "ok"),
        ("streaming", f"User:{ADMIN_OCID}", "DeleteStream", "audited-stream", "ok"),
        ("streaming", f"User:{OTHER_OCID}", "CreateStream", "others-stream", "denied"),
    ]

    def key(r: dict[str, Any]) -> tuple[str, str, str, str, str]:
        return (r["surface"], r["principal"], r["operation"], r["resource"]["name"], r["result"])

    wait_audit(d, lambda r: key(r) == expected[-1])
    records = audit_records(d)
    counts = {k: sum(1 for r in records if key(r) == k) for k in expected}
    assert counts == dict.fromkeys(expected, 1), {k: v for k, v in counts.items() if v != 1}
    by_key = {key(r): r for r in records}
    alter = by_key[("kafka", "User:admin", "IncrementalAlterConfigs", "audited", "ok")]
    assert alter["before"] == {"retention.ms": None} and alter["after"] == {"retention.ms": "3600000"}
    assert by_key[("kafka", "User:admin", "CreatePartitions", "audited", "ok")]["before"] == {"partitions": 1}
    alter = by_key[("kafka", "User:admin", "IncrementalAlterConfigs", "audited-group", "ok")]
    assert alter["resource"]["type"] == "group"
    assert alter["before"] == {"consumer.session.timeout.ms": None}
    assert alter["after"] == {"consumer.session.timeout.ms": "50000"}
    assert by_key[("kafka", "User:admin", "OffsetCommit", "audited-ids", "ok")]["after"] == {
        "offsets": {"audited": {"1": 0}}
    }
    assert all(r["address"] == "127.0.0.1" and r["time"].endswith("Z") for r in records)
    # No secret reaches the trail.
    text = (d.broker.data_dir / "audit.log").read_text()
    assert "bob-secret" not in text and "admin-secret" not in text and CARD not in text
    # kafkite audit filters: by principal and result, as a table.
    out = subprocess.run(
        [sys.executable, "-m", "kafkite.cli", "audit", "--log-dirs", str(d.broker.data_dir),
         "--principal", "User:bob", "--result", "denied", "--surface", "kafka"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert out.splitlines()[0].split()[:3] == ["TIME", "SURFACE", "PRINCIPAL"]
    assert "DeleteGroups" in out and "User:admin" not in out


def test_the_audit_topic_is_readable_by_principals_allowed_to(d: Doors) -> None:
    from confluent_kafka import Consumer, TopicPartition

    create_topic(d, "audit-topic-probe")

    def read(user: str, password: str) -> list[dict[str, Any]]:
        c = Consumer(
            {**d.kafka_conf(user, password), "group.id": f"audit-{user}", "enable.auto.commit": False}
        )
        try:
            c.assign([TopicPartition("__audit", 0, 0)])
            out: list[dict[str, Any]] = []
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not any(
                r["operation"] == "CreateTopics" and r["resource"]["name"] == "audit-topic-probe" for r in out
            ):
                m = c.poll(0.5)
                if m is None:
                    continue
                if m.error() is not None:
                    raise RuntimeError(str(m.error()))
                out.append(json.loads(m.value()))
            return out
        finally:
            c.close()

    records = read("admin", "admin-secret")
    probe = [r for r in records if r["resource"]["name"] == "audit-topic-probe"]
    assert [(r["principal"], r["result"]) for r in probe] == [("User:admin", "ok")]
    with pytest.raises(RuntimeError, match=r"(?i)authoriz"):
        read("bob", "bob-secret")


# ---------------------------------------------------------------------------------------------- start-up


def test_secured_broker_refuses_an_open_rest_gateway_unless_opted_in(tmp_path: Path) -> None:
    rest = free_port()
    # The broker of the tests above: a SASL listener, users, an authorizer, the REST gateway.
    base = [
        "sasl.plain.users=admin=admin-secret",
        "authorizer.class.name=kafkite",
        "super.users=User:admin",
        f"rest.listeners=http://127.0.0.1:{rest}",
    ]
    sasl = {"SASL_PLAINTEXT": "SASL_PLAINTEXT"}
    b = SecureBroker(tmp_path / "data", tmp_path / "broker.log", sasl, base)
    with pytest.raises(BrokerError) as e:
        b.start()
    assert "streaming.auth.enable" in str(e.value) and "security.open.surfaces" in str(e.value)
    assert b.proc is not None and b.proc.returncode == 2
    # With the key set, the Queue API is next.
    keys = tmp_path / "k"
    keys.mkdir()
    _, public, fp = make_api_key(keys)
    b2 = SecureBroker(
        tmp_path / "data2", tmp_path / "broker2.log", sasl,
        [*base, "streaming.auth.enable=true", f"streaming.auth.public.keys={public}"],
    )  # fmt: skip
    with pytest.raises(BrokerError) as e:
        b2.start()
    # A signed gateway beside an authorizer needs to know whose each key is.
    assert "rest.auth.principal.mapping" in str(e.value)
    mapping = tmp_path / "principals"
    mapping.write_text(f"{fp} User:x\n")
    b2b = SecureBroker(
        tmp_path / "data2b", tmp_path / "broker2b.log", sasl,
        [*base, "streaming.auth.enable=true", f"streaming.auth.public.keys={public}",
         f"rest.auth.principal.mapping={mapping}"],
    )  # fmt: skip
    with pytest.raises(BrokerError) as e:
        b2b.start()
    assert "queue.auth.enable" in str(e.value)
    # The explicit opt-in starts, loudly.
    b3 = SecureBroker(
        tmp_path / "data3", tmp_path / "broker3.log", sasl, [*base, "security.open.surfaces=streaming,queue"]
    )
    b3.start()
    try:
        status, _, body = curl(f"http://127.0.0.1:{rest}/20180418/streams?compartmentId=c")
        # Open: nothing asks for a signature; the anonymous principal sees what its ACLs allow (nothing).
        assert (status, json.loads(body)) == (200, [])
        assert "WITHOUT AUTHENTICATION" in b3.log_text()
    finally:
        b3.stop()
    # Unsecured Kafka (make run): the gateway runs open as before.
    b4 = BrokerProcess(
        tmp_path / "data4", tmp_path / "broker4.log", [f"rest.listeners=http://127.0.0.1:{free_port()}"]
    )
    b4.start()
    b4.stop()


# ---------------------------------------------------------------------------------------------- TLS


def test_tls_on_the_rest_stomp_console_and_metrics_listeners(tmp_path: Path) -> None:
    from test_security_support import make_pki

    pki = make_pki(tmp_path / "pki")
    rest, stomp_port, console, metrics = free_port(), free_port(), free_port(), free_port()
    b = BrokerProcess(
        tmp_path / "data",
        tmp_path / "broker.log",
        [
            f"ssl.keystore.location={pki.server}",
            f"rest.listeners=https://127.0.0.1:{rest}",
            f"stomp.listeners=stomp+ssl://127.0.0.1:{stomp_port}",
            f"console.listener=https://127.0.0.1:{console}",
            f"metrics.listener=https://127.0.0.1:{metrics}",
        ],
    )
    b.start()
    try:
        ca = ["--cacert", str(pki.ca)]
        status, _, body = curl(*ca, f"https://127.0.0.1:{rest}/20180418/streams?compartmentId=c")
        assert (status, json.loads(body)) == (200, [])
        assert curl(*ca, f"https://127.0.0.1:{console}/api/topics")[0] == 200
        status, _, body = curl(*ca, f"https://127.0.0.1:{metrics}/metrics")
        assert status == 200 and "kafkite_" in body
        # Plain HTTP on a TLS port gets nowhere.
        with pytest.raises(subprocess.CalledProcessError):
            curl(f"http://127.0.0.1:{rest}/openapi.json")
        conn = stomp.Connection12([("127.0.0.1", stomp_port)], heartbeats=(0, 0))
        conn.set_ssl(for_hosts=[("127.0.0.1", stomp_port)], ca_certs=str(pki.ca))
        conn.connect(wait=True)
        assert conn.is_connected()
        conn.disconnect()
    finally:
        b.stop()
    # A TLS listener without a certificate names the key to set.
    b2 = BrokerProcess(
        tmp_path / "data2", tmp_path / "broker2.log", [f"console.listener=https://127.0.0.1:{console}"]
    )
    with pytest.raises(BrokerError) as e:
        b2.start()
    assert "console.listener" in str(e.value) and "ssl.keystore.location" in str(e.value)


# ---------------------------------------------------------------------------------- the console operates


def test_the_console_refuses_what_kafka_refuses_its_user(d: Doors, tmp_path: Path) -> None:
    """bob may see a topic but not delete it: Kafka refuses his DeleteTopics, and so does the console, which
    makes the same request through the same handlers as him; the browser shows the broker's error. Given
    DELETE, he can. (Runs after the other console tests of this module: they count the console's refusals.)"""
    from confluent_kafka import KafkaException

    ui = pytest.importorskip("selenium.webdriver.support.ui", reason="selenium is not installed")
    topic = "console-guarded"
    create_topic(d, topic)
    allow(d, "User:bob", "DESCRIBE", "TOPIC", topic)
    bobs_admin = admin_client(d, "bob", "bob-secret")
    fs = bobs_admin.delete_topics([topic], operation_timeout=10)
    with pytest.raises(KafkaException) as refused:
        fs[topic].result(timeout=15)
    assert "TOPIC_AUTHORIZATION_FAILED" in str(refused.value)

    # Not logged in: the new pages and the OCI API behind them are closed too.
    assert curl(f"{d.console}/api/oci/20180418/streampools?compartmentId=c")[0] == 401
    assert curl("-X", "DELETE", f"{d.console}/api/topics/{topic}")[0] == 401
    driver = _browser(tmp_path)
    artifacts = REPO / "test-artifacts" / "console"
    artifacts.mkdir(parents=True, exist_ok=True)
    try:
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
        from selenium.webdriver.common.by import By

        wait = ui.WebDriverWait(
            driver, 20, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
        )
        driver.get(f"{d.console}/#/pools")
        wait.until(lambda drv: drv.find_element(By.ID, "login-form"))
        assert "Stream pools" not in driver.page_source
        driver.find_element(By.ID, "username").send_keys("bob")
        driver.find_element(By.ID, "password").send_keys("bob-secret")
        driver.find_element(By.ID, "login-submit").click()
        assert wait.until(lambda drv: drv.find_element(By.ID, "principal")).text == "User:bob"

        def delete_in_browser() -> None:
            driver.get(f"{d.console}/#/topics/{topic}")
            wait.until(lambda drv: drv.execute_script("return document.body.dataset.ready") == "1")
            driver.find_element(By.ID, "delete-topic").click()
            wait.until(lambda drv: drv.find_element(By.CSS_SELECTOR, "#confirm[open]"))
            driver.find_element(By.ID, "confirm-typed").send_keys(topic)
            driver.find_element(By.ID, "confirm-ok").click()

        delete_in_browser()
        error = wait.until(
            lambda drv: next(
                (n.text for n in drv.find_elements(By.CSS_SELECTOR, "#notice .note.error") if n.text), None
            )
        )
        assert "TOPIC_AUTHORIZATION_FAILED" in error, error
        driver.save_screenshot(str(artifacts / "security-delete-refused.png"))
        assert topic in admin_client(d).list_topics(timeout=10).topics

        # The same session through curl: the same refusals, with the CSRF token.
        cookie = driver.get_cookie("kafkite_session")
        assert cookie is not None
        jar = f"kafkite_session={cookie['value']}"
        token = json.loads(curl("-b", jar, f"{d.console}/api/session")[2])["csrf_token"]
        auth = ["-b", jar, "-H", f"X-CSRF-Token: {token}", "-H", "Content-Type: application/json"]
        status, _, body = curl(*auth, "-X", "DELETE", f"{d.console}/api/topics/{topic}")
        assert status == 403 and json.loads(body)["code"] == "TOPIC_AUTHORIZATION_FAILED"
        status, _, body = curl(*auth, "-X", "POST", "-d", '{"name": "bobs-topic"}', f"{d.console}/api/topics")
        assert status == 403 and json.loads(body)["code"] == "TOPIC_AUTHORIZATION_FAILED"
        status, _, body = curl(
            *auth, "-X", "POST", "-d", json.dumps({"name": "bobs-pool", "compartmentId": "c"}),
            f"{d.console}/api/oci/20180418/streampools",
        )  # fmt: skip
        assert status == 404 and json.loads(body)["code"] == "NotAuthorizedOrNotFound"

        # Given DELETE on the topic, bob deletes it in the console.
        allow(d, "User:bob", "DELETE", "TOPIC", topic)
        delete_in_browser()
        assert wait.until(lambda drv: drv.current_url.endswith("#/topics"))
        assert topic not in admin_client(d).list_topics(timeout=10).topics
    finally:
        driver.quit()
    mine = [r for r in audit_records(d) if r["surface"] == "console" and r["principal"] == "User:bob"]
    ops = [(r["operation"], r["resource"]["name"], r["result"]) for r in mine]
    assert ops.count(("DeleteTopics", topic, "denied")) == 2, ops
    assert ("DeleteTopics", topic, "ok") in ops
    assert ("CreateTopics", "bobs-topic", "denied") in ops
    assert ("CreateStreamPool", "kafka-cluster", "denied") in ops, ops
