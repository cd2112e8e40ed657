"""The STOMP listener over queues: stomp.py clients and raw frames."""

from __future__ import annotations

import asyncio
import queue
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stomp
from test_queue_rest import Clients, QueueServer, get, oci_config, put, stats

from kafkite.queue.stomp_frames import Frame, FrameParser, Heartbeat, encode


class Collector(stomp.ConnectionListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.messages: queue.Queue[Any] = queue.Queue()
        self.errors: queue.Queue[Any] = queue.Queue()
        self.receipts: queue.Queue[str] = queue.Queue()

    def on_message(self, frame: Any) -> None:
        self.messages.put(frame)

    def on_error(self, frame: Any) -> None:
        self.errors.put(frame)

    def on_receipt(self, frame: Any) -> None:
        self.receipts.put(frame.headers["receipt-id"])

    def next(self, timeout: float = 5.0) -> Any:
        return self.messages.get(timeout=timeout)

    def none(self, timeout: float = 0.5) -> bool:
        try:
            self.messages.get(timeout=timeout)
        except queue.Empty:
            return True
        return False


@pytest.fixture
def server(tmp_path: Path) -> Iterator[QueueServer]:
    s = QueueServer(tmp_path / "data", stomp=True).start()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def clients(server: QueueServer, tmp_path: Path) -> Clients:
    return Clients(server.url, oci_config(tmp_path))


def connect(server: QueueServer, **kw: Any) -> tuple[Any, Collector]:
    conn = stomp.Connection12([("127.0.0.1", server.stomp_port)], **kw)
    listener = Collector()
    conn.set_listener("", listener)
    conn.connect("user", "secret", wait=True)
    return conn, listener


def test_producer_and_two_consumers_with_individual_acks(server: QueueServer, clients: Clients) -> None:
    qid = clients.create_queue("work")
    producer, _ = connect(server)
    c1, l1 = connect(server)
    c1.subscribe("/queue/work", id="s1", ack="client-individual", headers={"prefetch": "1"})

    # A NACKed message is redelivered.
    producer.send("work", "a")
    m = l1.next()
    assert m.body == "a"
    assert m.headers["delivery-count"] == "1"
    assert m.headers["subscription"] == "s1"
    c1.nack(m.headers["ack"])
    again = l1.next()
    assert again.body == "a"
    assert again.headers["delivery-count"] == "2"
    assert again.headers["redelivered"] == "true"
    c1.ack(again.headers["ack"], receipt="acked-a")
    assert l1.receipts.get(timeout=5) == "acked-a"

    # Two consumers share the work; prefetch 1 means one unacknowledged message each.
    c2, l2 = connect(server)
    c2.subscribe(qid, id="s2", ack="client-individual", headers={"activemq.prefetchSize": "1"})
    time.sleep(0.2)
    for body in ("b", "c", "d"):
        producer.send("work", body)
    x = l1.next()
    y = l2.next()
    assert {x.body, y.body} <= {"b", "c", "d"} and x.body != y.body
    assert l1.none() and l2.none()  # flow control: the third waits for an ACK
    c2.ack(y.headers["ack"])
    z = l2.next()
    assert z.body not in (x.body, y.body)

    # c1 disconnects holding x unacknowledged: it goes to c2.
    c1.disconnect()
    c2.ack(z.headers["ack"])
    redelivered = l2.next()
    assert redelivered.body == x.body
    assert redelivered.headers["delivery-count"] == "2"
    c2.ack(redelivered.headers["ack"], receipt="done")
    assert l2.receipts.get(timeout=5) == "done"
    assert stats(clients.messages(), qid)["queue"] == {"visible": 0, "in_flight": 0}
    c2.disconnect()
    producer.disconnect()


def test_auto_ack_channels_and_properties(server: QueueServer, clients: Clients) -> None:
    qid = clients.create_queue("auto")
    producer, _ = connect(server)
    producer.send(f"{qid}/red", "r1", headers={"color": "red"})
    producer.send(f"{qid}/blue", "b1")
    consumer, listener = connect(server)
    consumer.subscribe(f"{qid}/red", id="reds", ack="auto")
    m = listener.next()
    assert (m.body, m.headers["channel-id"], m.headers["color"]) == ("r1", "red", "red")
    assert "ack" not in m.headers
    assert listener.none()
    rest = clients.messages()
    assert [x.content for x in get(rest, qid, limit=5)] == ["b1"]  # the other channel, via REST
    consumer.disconnect()
    assert stats(rest, qid)["queue"] == {"visible": 0, "in_flight": 1}

    # REST puts reach STOMP subscribers.
    c2, l2 = connect(server)
    c2.subscribe(f"/queue/{qid}/gr*", id="g", ack="client")
    put(rest, qid, "g1", channel="green")
    put(rest, qid, "g2", channel="grey")
    g1, g2 = l2.next(), l2.next()
    assert {g1.body, g2.body} == {"g1", "g2"}
    c2.ack(g2.headers["ack"], receipt="cumulative")  # ack:client is cumulative
    assert l2.receipts.get(timeout=5) == "cumulative"
    assert stats(rest, qid)["queue"] == {"visible": 0, "in_flight": 1}
    c2.disconnect()


def test_nacks_count_towards_the_dlq(server: QueueServer, clients: Clients) -> None:
    qid = clients.create_queue("stompdlq", dead_letter_queue_delivery_count=2)
    conn, listener = connect(server)
    conn.subscribe("stompdlq", id="s", ack="client-individual")
    conn.send("stompdlq", "bad")
    conn.nack(listener.next().headers["ack"])
    conn.nack(listener.next().headers["ack"])
    assert listener.none(1.0)
    assert stats(clients.messages(), qid)["dlq"] == {"visible": 1, "in_flight": 0}
    conn.disconnect()


# ---------------------------------------------------------------------------------------------- raw frames


class Raw:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.parser = FrameParser()
        self.items: list[Frame | Heartbeat] = []

    def send(self, command: str, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        self.sock.sendall(encode(command, headers or {}, body))

    def next(self, timeout: float = 5.0, heartbeats: bool = False) -> Frame | Heartbeat | None:
        """The next frame (or heart-beat), None when the server closed the connection."""
        deadline = time.monotonic() + timeout
        while True:
            while self.items:
                item = self.items.pop(0)
                if heartbeats or isinstance(item, Frame):
                    return item
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                return None
            self.items += self.parser.feed(data)

    def frame(self, timeout: float = 5.0) -> Frame:
        f = self.next(timeout)
        assert isinstance(f, Frame), f
        return f

    def closed(self) -> bool:
        try:
            return self.next(3) is None
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(server: QueueServer) -> Iterator[Raw]:
    r = Raw(server.stomp_port)
    yield r
    r.close()


def test_connected_frame_and_version_negotiation(raw: Raw) -> None:
    raw.send("CONNECT", {"accept-version": "1.0,1.1", "host": "x"})
    f = raw.frame()
    assert f.command == "CONNECTED"
    assert f.get("version") == "1.1"
    assert f.get("heart-beat") == "500,1000"


def test_unsupported_version_is_an_error(raw: Raw) -> None:
    raw.send("CONNECT", {"accept-version": "2.0"})
    f = raw.frame()
    assert f.command == "ERROR"
    assert raw.closed()


def test_malformed_frame_gets_error_and_close(raw: Raw) -> None:
    raw.send("CONNECT", {"accept-version": "1.2"})
    assert raw.frame().command == "CONNECTED"
    raw.sock.sendall(b"SEND\nthis header has no colon\n\n\x00")
    f = raw.frame()
    assert (f.command, f.get("message")) == ("ERROR", "malformed frame")
    assert raw.closed()


def test_frames_before_connect_and_transactions_are_errors(server: QueueServer) -> None:
    r = Raw(server.stomp_port)
    r.send("SEND", {"destination": "x"}, b"hi")
    assert r.frame().command == "ERROR"
    assert r.closed()
    r.close()
    r = Raw(server.stomp_port)
    r.send("STOMP", {"accept-version": "1.2", "host": "x"})
    assert r.frame().command == "CONNECTED"
    r.send("BEGIN", {"transaction": "t1", "receipt": "r1"})
    f = r.frame()
    assert (f.command, f.get("receipt-id")) == ("ERROR", "r1")
    assert "transactions" in (f.get("message") or "")
    r.close()


def test_unknown_destination_error_with_receipt_id(raw: Raw) -> None:
    raw.send("CONNECT", {"accept-version": "1.2"})
    raw.frame()
    raw.send("SEND", {"destination": "/queue/nope", "receipt": "77"}, b"x")
    f = raw.frame()
    assert (f.command, f.get("message"), f.get("receipt-id")) == ("ERROR", "unknown destination", "77")


def test_receipts_for_send_and_disconnect(raw: Raw, clients: Clients) -> None:
    qid = clients.create_queue("receipts")
    raw.send("CONNECT", {"accept-version": "1.2"})
    raw.frame()
    raw.send("SEND", {"destination": qid, "receipt": "s-1"}, b"body")
    f = raw.frame()
    assert (f.command, f.get("receipt-id")) == ("RECEIPT", "s-1")
    assert stats(clients.messages(), qid)["queue"]["visible"] == 1
    raw.send("DISCONNECT", {"receipt": "bye"})
    f = raw.frame()
    assert (f.command, f.get("receipt-id")) == ("RECEIPT", "bye")
    assert raw.closed()


def test_heart_beats_both_ways(raw: Raw) -> None:
    connected_at = time.monotonic()
    raw.send("CONNECT", {"accept-version": "1.2", "heart-beat": "1000,100"})
    f = raw.frame()
    assert f.get("heart-beat") == "500,1000"
    # We asked for heart-beats every 100 ms; the server sends them at most every 500 ms.
    beat = raw.next(3, heartbeats=True)
    assert beat is not None and not isinstance(beat, Frame)
    assert 0.3 < time.monotonic() - connected_at < 2
    # We promised one every 1000 ms and send nothing: the server gives up after two intervals.
    while True:
        item = raw.next(5, heartbeats=True)
        if item is None:
            break
    assert 1.8 < time.monotonic() - connected_at < 4


def test_credentials_checked_once_per_connection(tmp_path: Path) -> None:
    s = QueueServer(tmp_path / "data", stomp=True, overrides={"stomp.users": "alice=secret"}).start()
    try:
        r = Raw(s.stomp_port)
        r.send("CONNECT", {"accept-version": "1.2", "login": "alice", "passcode": "wrong"})
        f = r.frame()
        assert (f.command, f.get("message")) == ("ERROR", "authentication failed")
        assert r.closed()
        r.close()
        r = Raw(s.stomp_port)
        r.send("CONNECT", {"accept-version": "1.2", "login": "alice", "passcode": "secret"})
        assert r.frame().command == "CONNECTED"
        r.close()
    finally:
        s.close()


def test_ack_after_visibility_lapsed_is_an_error(raw: Raw, clients: Clients) -> None:
    qid = clients.create_queue("lapse")
    raw.send("CONNECT", {"accept-version": "1.2"})
    raw.frame()
    raw.send("SUBSCRIBE", {"id": "1", "destination": qid, "ack": "client-individual", "visibility": "1"})
    put(clients.messages(), qid, "soon stale")
    m = raw.frame()
    assert m.command == "MESSAGE" and m.body == b"soon stale"
    # The delivery lapses and comes straight back to the same subscription as a new delivery.
    again = raw.frame(timeout=5)
    assert again.get("delivery-count") == "2"
    raw.send("ACK", {"id": m.get("ack") or ""})
    f = raw.frame()
    assert f.command == "ERROR"


def test_busy_port_stops_start_up(tmp_path: Path) -> None:
    from kafkite.compose import build_broker
    from kafkite.config import BrokerConfig
    from kafkite.queue.stomp import start_stomp

    async def main() -> None:
        blocker = socket.socket()
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            blocker.bind(("127.0.0.1", 61613))
            blocker.listen()
        except OSError:
            pass  # already busy: just as good
        try:
            explicit = build_broker(
                BrokerConfig({"storage.engine": "memory", "stomp.listeners": "stomp://127.0.0.1:61613"})
            )
            await explicit.start()
            with pytest.raises(OSError):
                await start_stomp(explicit)
            svc = await start_stomp(
                build_broker(
                    BrokerConfig({"storage.engine": "memory", "stomp.listeners": "stomp://127.0.0.1:0"})
                )
            )
            assert svc is not None
            assert "__queues" not in svc.queues.broker.topics()  # no queue, no internal topic
            await svc.stop()
            await explicit.stop()
        finally:
            blocker.close()

    asyncio.run(main())
