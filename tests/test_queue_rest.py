"""OCI Queue REST API through the unmodified ``oci`` SDK: admin, messages, visibility, dead letters."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import oci
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from oci.queue import QueueAdminClient, QueueAdminClientCompositeOperations, QueueClient
from oci.queue.models import (
    CreateQueueDetails,
    DeleteMessagesDetails,
    DeleteMessagesDetailsEntry,
    MessageMetadata,
    PurgeQueueDetails,
    PutMessagesDetails,
    PutMessagesDetailsEntry,
    UpdateMessageDetails,
    UpdateMessagesDetails,
    UpdateMessagesDetailsEntry,
    UpdateQueueDetails,
)

from kafkite.compose import build_broker
from kafkite.config import BrokerConfig
from kafkite.queue.rest import register
from kafkite.queue.service import QueueService

COMPARTMENT = "ocid1.compartment.oc1..aaaaaaaatestcompartment"


# ---------------------------------------------------------------------------------------------- harness


class QueueServer:
    """A broker with the queue REST gateway (and optionally STOMP) on an event loop in a background thread."""

    def __init__(
        self, data_dir: Path, *, stomp: bool = False, overrides: dict[str, str] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.stomp = stomp
        self.overrides = overrides or {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.url = ""
        self.stomp_port = 0
        self._runner: web.AppRunner | None = None
        self._stomp_service: Any = None
        self.broker: Any = None

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> QueueServer:
        self.call(self._start())
        return self

    async def _start(self) -> None:
        values = {
            "log.dirs": str(self.data_dir),
            "listeners": "PLAINTEXT://127.0.0.1:9",
            "rest.listeners": "http://127.0.0.1:0",
            "stomp.listeners": "stomp://127.0.0.1:0" if self.stomp else "",
            **self.overrides,
        }
        self.broker = build_broker(BrokerConfig(values))
        await self.broker.start()
        app = web.Application()
        register(app, self.broker)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        if self.stomp:
            from kafkite.queue.stomp import start_stomp

            self._stomp_service = await start_stomp(self.broker)
            self.stomp_port = self._stomp_service.ports[0]

    def stop(self) -> None:
        self.call(self._stop())

    async def _stop(self) -> None:
        if self._stomp_service is not None:
            await self._stomp_service.stop()
            self._stomp_service = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.broker is not None:
            await self.broker.stop()
            self.broker = None

    def close(self) -> None:
        if self.broker is not None:
            self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


_KEY_CACHE: dict[str, Any] = {}


def oci_config(directory: Path) -> dict[str, str]:
    """An OCI SDK config with a fresh API signing key (the server accepts any signature)."""
    if "key" not in _KEY_CACHE:
        _KEY_CACHE["key"] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = _KEY_CACHE["key"]
    path = directory / "oci_api_key.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashlib.md5(der).hexdigest()
    return {
        "tenancy": "ocid1.tenancy.oc1..aaaaaaaatesttenancy",
        "user": "ocid1.user.oc1..aaaaaaaatestuser",
        "fingerprint": ":".join(digest[i : i + 2] for i in range(0, 32, 2)),
        "key_file": str(path),
        "region": "us-ashburn-1",
    }


class Clients:
    def __init__(self, url: str, config: dict[str, str]) -> None:
        self.url = url
        self.config = config
        self.admin = QueueAdminClient(config, service_endpoint=url)
        self.composite = QueueAdminClientCompositeOperations(self.admin)

    def messages(self, endpoint: str | None = None) -> QueueClient:
        return QueueClient(self.config, service_endpoint=endpoint or self.url)

    def create_queue(self, name: str = "q", **settings: Any) -> str:
        details = CreateQueueDetails(display_name=name, compartment_id=COMPARTMENT, **settings)
        wr = self.composite.create_queue_and_wait_for_state(details, wait_for_states=["SUCCEEDED"])
        return str(wr.data.resources[0].identifier)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[QueueServer]:
    s = QueueServer(tmp_path / "data").start()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def clients(server: QueueServer, tmp_path: Path) -> Clients:
    return Clients(server.url, oci_config(tmp_path))


def put(client: QueueClient, queue_id: str, *contents: str, channel: str | None = None) -> list[int]:
    meta = MessageMetadata(channel_id=channel) if channel else None
    entries = [PutMessagesDetailsEntry(content=c, metadata=meta) for c in contents]
    resp = client.put_messages(queue_id, PutMessagesDetails(messages=entries))
    return [m.id for m in resp.data.messages]


def get(client: QueueClient, queue_id: str, **kw: Any) -> list[Any]:
    kw.setdefault("timeout_in_seconds", 0)
    return list(client.get_messages(queue_id, **kw).data.messages)


def stats(client: QueueClient, queue_id: str, **kw: Any) -> dict[str, dict[str, int]]:
    s = client.get_stats(queue_id, **kw).data
    return {
        "queue": {"visible": s.queue.visible_messages, "in_flight": s.queue.in_flight_messages},
        "dlq": {"visible": s.dlq.visible_messages, "in_flight": s.dlq.in_flight_messages},
    }


def dlq_get(client: QueueClient, queue_id: str, **query: Any) -> list[Any]:
    """The kafkite DLQ extension, called through the SDK's own signed-request machinery."""
    resp = client.base_client.call_api(
        resource_path="/queues/{queueId}/dlq/messages",
        method="GET",
        path_params={"queueId": queue_id},
        query_params={"timeoutInSeconds": 0, **query},
        header_params={"accept": "application/json", "content-type": "application/json"},
        response_type="GetMessages",
    )
    return list(resp.data.messages)


def dlq_move_back(client: QueueClient, queue_id: str, body: dict[str, Any] | None = None) -> int:
    resp = client.base_client.call_api(
        resource_path="/queues/{queueId}/dlq/actions/moveBack",
        method="POST",
        path_params={"queueId": queue_id},
        header_params={"accept": "application/json", "content-type": "application/json"},
        body=body or {},
        response_type="object",
    )
    return int(resp.data["movedMessages"])


def service_error(fn: Any, *args: Any, **kw: Any) -> oci.exceptions.ServiceError:
    with pytest.raises(oci.exceptions.ServiceError) as info:
        fn(*args, **kw)
    return info.value


# ---------------------------------------------------------------------------------------------- admin


def test_queue_lifecycle_through_admin_client(clients: Clients) -> None:
    qid = clients.create_queue(
        "orders", visibility_in_seconds=5, timeout_in_seconds=3, dead_letter_queue_delivery_count=4
    )
    assert qid.startswith("ocid1.queue.oc1..")
    q = clients.admin.get_queue(qid)
    assert q.data.display_name == "orders"
    assert q.data.lifecycle_state == "ACTIVE"
    assert q.data.visibility_in_seconds == 5
    assert q.data.timeout_in_seconds == 3
    assert q.data.dead_letter_queue_delivery_count == 4
    assert q.data.retention_in_seconds == 86400
    assert q.data.messages_endpoint == clients.url
    assert q.headers["etag"]

    other = clients.create_queue("audit")
    items = clients.admin.list_queues(compartment_id=COMPARTMENT).data.items
    assert {i.id for i in items} == {qid, other}
    named = clients.admin.list_queues(compartment_id=COMPARTMENT, display_name="audit").data.items
    assert [i.id for i in named] == [other]
    by_name = clients.admin.list_queues(sort_by="displayName", sort_order="ASC").data.items
    assert [i.display_name for i in by_name] == ["audit", "orders"]

    resp = clients.admin.update_queue(qid, UpdateQueueDetails(visibility_in_seconds=9, display_name="o2"))
    wr = clients.admin.get_work_request(resp.headers["opc-work-request-id"]).data
    assert (wr.operation_type, wr.status) == ("UPDATE_QUEUE", "SUCCEEDED")
    q2 = clients.admin.get_queue(qid).data
    assert (q2.visibility_in_seconds, q2.display_name) == (9, "o2")
    assert clients.admin.list_work_requests(compartment_id=COMPARTMENT).data.items

    stale = service_error(
        clients.admin.update_queue, qid, UpdateQueueDetails(timeout_in_seconds=1), if_match='"x"'
    )
    assert (stale.status, stale.code) == (412, "NoEtagMatch")

    clients.admin.delete_queue(other)
    assert clients.admin.get_queue(other).data.lifecycle_state == "DELETED"
    remaining = clients.admin.list_queues(compartment_id=COMPARTMENT).data.items
    assert [i.id for i in remaining] == [qid]
    gone = service_error(clients.messages().get_stats, other)
    assert (gone.status, gone.code) == (404, "NotAuthorizedOrNotFound")


def test_errors_are_oci_json(clients: Clients) -> None:
    e = service_error(clients.admin.get_queue, "ocid1.queue.oc1..nosuchqueue")
    assert (e.status, e.code) == (404, "NotAuthorizedOrNotFound")
    bad = service_error(
        clients.admin.create_queue,
        CreateQueueDetails(display_name="x", compartment_id=COMPARTMENT, visibility_in_seconds=-1),
    )
    assert (bad.status, bad.code) == (400, "InvalidParameter")
    qid = clients.create_queue()
    msgs = clients.messages()
    e2 = service_error(msgs.delete_message, qid, "not-a-receipt")
    assert (e2.status, e2.code) == (400, "InvalidParameter")
    e3 = service_error(msgs.get_messages, qid, limit=1000)
    assert e3.status == 400


# ---------------------------------------------------------------------------------------------- messages


def test_two_consumer_visibility_scenario(clients: Clients) -> None:
    """OCI Queue's example flow, step by step, with two consumers."""
    qid = clients.create_queue("flow", visibility_in_seconds=2)
    endpoint = clients.admin.get_queue(qid).data.messages_endpoint
    producer, a, b = clients.messages(endpoint), clients.messages(endpoint), clients.messages(endpoint)

    # 1. A producer sends a message.
    [mid] = put(producer, qid, "hello")

    # 2. Consumer A receives it.
    [ma] = get(a, qid)
    assert (ma.id, ma.content, ma.delivery_count) == (mid, "hello", 1)

    # 3. Consumer B receives nothing.
    assert get(b, qid) == []

    # 4. Consumer A extends the visibility timeout.
    upd = a.update_message(qid, ma.receipt, UpdateMessageDetails(visibility_in_seconds=2)).data
    assert upd.id == mid
    assert upd.visible_after > ma.visible_after or upd.visible_after == ma.visible_after

    # 5. Consumer B still receives nothing.
    assert get(b, qid) == []
    assert stats(b, qid)["queue"] == {"visible": 0, "in_flight": 1}

    # 6-7. The extension lapses; B's long poll returns the message as soon as it does.
    t0 = time.monotonic()
    [mb] = get(b, qid, timeout_in_seconds=10, visibility_in_seconds=30)
    waited = time.monotonic() - t0
    assert 0.5 < waited < 5
    assert (mb.id, mb.delivery_count) == (mid, 2)
    assert mb.receipt != ma.receipt

    # 8. A receives nothing and can no longer extend or delete the message.
    assert get(a, qid) == []
    e = service_error(a.update_message, qid, ma.receipt, UpdateMessageDetails(visibility_in_seconds=10))
    assert e.status == 404
    e = service_error(a.delete_message, qid, ma.receipt)
    assert e.status == 404

    # 9. B deletes the message; it is gone for good.
    b.delete_message(qid, mb.receipt)
    assert stats(b, qid)["queue"] == {"visible": 0, "in_flight": 0}
    assert get(a, qid, timeout_in_seconds=1) == []
    e = service_error(b.delete_message, qid, mb.receipt)
    assert e.status == 404


def test_long_poll_wakes_when_a_message_arrives(clients: Clients) -> None:
    qid = clients.create_queue("poll")
    consumer, producer = clients.messages(), clients.messages()
    result: dict[str, Any] = {}

    def poll() -> None:
        t0 = time.monotonic()
        result["messages"] = get(consumer, qid, timeout_in_seconds=20)
        result["elapsed"] = time.monotonic() - t0

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.5)
    put(producer, qid, "wake up")
    t.join(10)
    assert [m.content for m in result["messages"]] == ["wake up"]
    assert result["elapsed"] < 3


def test_long_poll_times_out_empty(clients: Clients) -> None:
    qid = clients.create_queue("empty", timeout_in_seconds=1)
    c = clients.messages()
    t0 = time.monotonic()
    assert get(c, qid, timeout_in_seconds=1) == []
    assert 0.8 < time.monotonic() - t0 < 3
    t0 = time.monotonic()
    assert list(c.get_messages(qid).data.messages) == []  # the queue's default timeout (1 s)
    assert 0.8 < time.monotonic() - t0 < 3


def test_batches_channels_and_stats(clients: Clients) -> None:
    qid = clients.create_queue("batches")
    c = clients.messages()
    ids = put(c, qid, "a1", "a2", channel="alpha")
    ids += put(c, qid, "b1", channel="beta")
    ids += put(c, qid, "plain")
    assert ids == sorted(ids) and len(set(ids)) == 4
    assert c.list_channels(qid).data.items == ["alpha", "beta"]
    assert c.list_channels(qid, channel_filter="al*").data.items == ["alpha"]

    s = c.get_stats(qid, channel_id="alpha").data
    assert (s.queue.visible_messages, s.queue.size_in_bytes, s.channel_id) == (2, 4, "alpha")

    got = get(c, qid, channel_filter="beta", limit=10)
    assert [m.content for m in got] == ["b1"]
    assert got[0].metadata.channel_id == "beta"
    rest = get(c, qid, limit=10, visibility_in_seconds=30)
    assert sorted(m.content for m in rest) == ["a1", "a2", "plain"]

    # Batch update and delete with one stale receipt: per-entry results.
    entries = [UpdateMessagesDetailsEntry(receipt=m.receipt, visibility_in_seconds=60) for m in rest]
    r = got[0].receipt
    forged = r[:20] + ("A" if r[20] != "A" else "B") + r[21:]  # another delivery nonce
    entries.append(UpdateMessagesDetailsEntry(receipt=forged, visibility_in_seconds=5))
    res = c.update_messages(qid, UpdateMessagesDetails(entries=entries)).data
    assert res.client_failures == 1
    assert [e.id for e in res.entries[:3]] == [m.id for m in rest]
    assert res.entries[3].error_code in (400, 404)

    dres = c.delete_messages(
        qid, DeleteMessagesDetails(entries=[DeleteMessagesDetailsEntry(receipt=m.receipt) for m in rest])
    ).data
    assert dres.client_failures == 0
    assert stats(c, qid)["queue"] == {"visible": 0, "in_flight": 1}  # b1, still in flight


def test_peek_with_zero_visibility_and_purge(clients: Clients) -> None:
    qid = clients.create_queue("peek")
    c = clients.messages()
    put(c, qid, "x", "y")
    peeked = get(c, qid, visibility_in_seconds=0, limit=5)
    assert len(peeked) == 2
    again = get(c, qid, visibility_in_seconds=0, limit=5)
    assert [m.delivery_count for m in again] == [2, 2]
    e = service_error(c.delete_message, qid, again[0].receipt)
    assert e.status == 404  # a peek's receipt is expired at once
    clients.admin.purge_queue(qid, PurgeQueueDetails(purge_type="NORMAL"))
    assert stats(c, qid)["queue"] == {"visible": 0, "in_flight": 0}


def test_message_fails_three_times_lands_in_dlq_and_moves_back(clients: Clients) -> None:
    qid = clients.create_queue("dlq", visibility_in_seconds=1, dead_letter_queue_delivery_count=3)
    c = clients.messages()
    [mid] = put(c, qid, "poison")
    for attempt in (1, 2, 3):
        [m] = get(c, qid, timeout_in_seconds=10)
        assert (m.id, m.delivery_count) == (mid, attempt)  # received, never deleted
    # After the third delivery lapses the message is in the DLQ, not the queue.
    assert get(c, qid, timeout_in_seconds=3) == []
    assert stats(c, qid) == {"queue": {"visible": 0, "in_flight": 0}, "dlq": {"visible": 1, "in_flight": 0}}

    # It can be read from the DLQ ...
    [d] = dlq_get(c, qid, visibilityInSeconds=0)
    assert (d.id, d.content, d.delivery_count) == (mid, "poison", 4)
    assert stats(c, qid)["dlq"]["visible"] == 1

    # ... and moved back, with a fresh delivery count.
    assert dlq_move_back(c, qid) == 1
    assert stats(c, qid) == {"queue": {"visible": 1, "in_flight": 0}, "dlq": {"visible": 0, "in_flight": 0}}
    [back] = get(c, qid)
    assert (back.id, back.content, back.delivery_count) == (mid, "poison", 1)
    c.delete_message(qid, back.receipt)
    assert stats(c, qid)["queue"] == {"visible": 0, "in_flight": 0}


def test_dlq_purge(clients: Clients) -> None:
    qid = clients.create_queue("dlqpurge", visibility_in_seconds=1, dead_letter_queue_delivery_count=1)
    c = clients.messages()
    put(c, qid, "one", "two")
    assert len(get(c, qid, limit=5)) == 2
    assert get(c, qid, timeout_in_seconds=2) == []
    assert stats(c, qid)["dlq"]["visible"] == 2
    [d] = dlq_get(c, qid, visibilityInSeconds=30)
    c.delete_message(qid, d.receipt)  # a dead letter's receipt deletes it
    assert stats(c, qid)["dlq"] == {"visible": 1, "in_flight": 0}
    clients.admin.purge_queue(qid, PurgeQueueDetails(purge_type="DLQ"))
    assert stats(c, qid)["dlq"] == {"visible": 0, "in_flight": 0}


def test_state_survives_a_restart(tmp_path: Path) -> None:
    config = oci_config(tmp_path)
    s = QueueServer(tmp_path / "data").start()
    try:
        cl = Clients(s.url, config)
        dq = cl.create_queue("dead", visibility_in_seconds=1, dead_letter_queue_delivery_count=1)
        qid = cl.create_queue("durable")
        c = cl.messages()
        put(c, dq, "dead")
        get(c, dq)
        assert get(c, dq, timeout_in_seconds=3) == []  # "dead" lapsed into the DLQ
        put(c, qid, "visible", "inflight", "deleted")
        got = {m.content: m for m in get(c, qid, limit=3, visibility_in_seconds=0)}
        assert set(got) == {"visible", "inflight", "deleted"}
        by = {m.content: m for m in get(c, qid, limit=3, visibility_in_seconds=3600)}
        c.delete_message(qid, by["deleted"].receipt)
        c.update_message(qid, by["visible"].receipt, UpdateMessageDetails(visibility_in_seconds=0))
        # Compact one queue's logs (snapshot, sync, trim) before the restart.
        svc = QueueService.of(s.broker)
        state = svc.state(qid)
        before = state.state_records()
        s.call(svc.compact(state))
        assert state.state_records() < before
        assert state.messages_log.partition.log_start_offset == by["visible"].id
        s.stop()
        s.start()
        cl = Clients(s.url, config)
        c = cl.messages()
        assert [q.display_name for q in cl.admin.list_queues(sort_by="displayName").data.items] == [
            "dead",
            "durable",
        ]
        assert stats(c, dq) == {
            "queue": {"visible": 0, "in_flight": 0},
            "dlq": {"visible": 1, "in_flight": 0},
        }
        assert stats(c, qid) == {
            "queue": {"visible": 1, "in_flight": 1},
            "dlq": {"visible": 0, "in_flight": 0},
        }
        # The in-flight delivery's receipt still works after the restart.
        c.update_message(qid, by["inflight"].receipt, UpdateMessageDetails(visibility_in_seconds=600))
        [v] = get(c, qid)
        assert (v.content, v.delivery_count) == ("visible", 3)
    finally:
        s.close()


def test_signatures_are_verified_when_enabled(tmp_path: Path) -> None:
    config = oci_config(tmp_path)
    key = _KEY_CACHE["key"]
    pem = tmp_path / "api_public.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    s = QueueServer(
        tmp_path / "data", overrides={"queue.auth.enable": "true", "queue.auth.public.keys": str(pem)}
    ).start()
    try:
        cl = Clients(s.url, config)
        qid = cl.create_queue("signed")
        c = cl.messages()
        put(c, qid, "signed body")
        assert [m.content for m in get(c, qid)] == ["signed body"]

        # Unsigned: 401 NotAuthenticated, as JSON.
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{s.url}/20210201/queues/{qid}/stats", timeout=5)
        assert info.value.code == 401
        assert json.loads(info.value.read())["code"] == "NotAuthenticated"

        # Signed by a key the server does not know.
        other_dir = tmp_path / "other"
        other_dir.mkdir()
        other = dict(config)
        other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (other_dir / "k.pem").write_bytes(
            other_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        other["key_file"] = str(other_dir / "k.pem")
        e = service_error(QueueClient(other, service_endpoint=s.url).get_stats, qid)
        assert (e.status, e.code) == (401, "NotAuthenticated")
    finally:
        s.close()
