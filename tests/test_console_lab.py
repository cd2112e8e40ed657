"""The OCI Streaming lab, walked through the web console in headless Chromium: log in, create a stream pool
and a stream, copy the pool's connection settings into a confluent-kafka client that produces, see the
messages in the browser (and through the stream's messages endpoint with the oci SDK), reset the group's
offsets (refused while it has a member, as Kafka refuses), then create a queue, dead-letter a message and move
it back. Screenshots of each step go to ``test-artifacts/console/lab-*.png``.

Needs Debian's ``chromium`` and ``chromium-driver`` and selenium (see tests/test_console.py).
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO, BrokerProcess, check_no_tracebacks, free_port
from test_console import _browser
from test_security_support import SecureBroker
from test_streaming_support import TENANCY, make_api_key

pytestmark = pytest.mark.timeout(300)

ARTIFACTS = REPO / "test-artifacts" / "console"
LAB_USER, LAB_PASSWORD = "labtenancy/labuser", "lab-secret"


@dataclass
class Lab:
    broker: SecureBroker
    console: str
    rest: str
    key: Path
    fingerprint: str


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("lab")
    (root / "key").mkdir()
    private, public, fp = make_api_key(root / "key")
    mapping = root / "principals"
    mapping.write_text(f"{fp} User:admin\n")
    console, rest = free_port(), free_port()
    b = SecureBroker(
        root / "data",
        root / "broker.log",
        {"SASL_PLAINTEXT": "SASL_PLAINTEXT"},
        [
            f"sasl.plain.users=admin=admin-secret,{LAB_USER}={LAB_PASSWORD}",
            f"console.listener=http://127.0.0.1:{console}",
            f"rest.listeners=http://127.0.0.1:{rest}",
            "streaming.auth.enable=true",
            f"streaming.auth.public.keys={public}",
            f"rest.auth.principal.mapping={mapping}",
            "queue.auth.enable=true",
        ],
    )
    b.start()
    try:
        yield Lab(b, f"http://127.0.0.1:{console}", f"http://127.0.0.1:{rest}", private, fp)
    finally:
        b.stop()
    check_no_tracebacks(b)


def oci_config(lab: Lab) -> dict[str, Any]:
    return {
        "user": "ocid1.user.oc1..labadmin",
        "tenancy": TENANCY,
        "fingerprint": lab.fingerprint,
        "key_file": str(lab.key),
        "region": "us-ashburn-1",
    }


def properties(text: str) -> dict[str, str]:
    """A client configuration as the console shows it (``key=value`` lines)."""
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def audit_records(b: BrokerProcess) -> list[dict[str, Any]]:
    path = b.data_dir / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class Page:
    """Small helpers over a selenium driver for the console's pages."""

    def __init__(self, driver: Any, url: str) -> None:
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.d = driver
        self.url = url
        self.by = By
        self.wait = WebDriverWait(
            driver, 20, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
        )

    def go(self, route: str) -> None:
        self.d.get(self.url + "/#" + route)
        self.wait.until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")

    def el(self, css: str) -> Any:
        return self.wait.until(lambda d: d.find_element(self.by.CSS_SELECTOR, css))

    def text(self, css: str) -> str:
        return str(self.wait.until(lambda d: d.find_element(self.by.CSS_SELECTOR, css).text or None))

    def until_text(self, css: str, want: Callable[[str], bool]) -> str:
        return str(
            self.wait.until(
                lambda d: (t := d.find_element(self.by.CSS_SELECTOR, css).text) is not None and want(t) and t
            )
        )

    def fill(self, css: str, value: str) -> None:
        e = self.el(css)
        e.clear()
        e.send_keys(value)

    def click(self, css: str) -> None:
        # Into the middle of the window first: the sticky header would take a click at its top edge.
        e = self.el(css)
        self.d.execute_script("arguments[0].scrollIntoView({block: 'center'})", e)
        e.click()

    def select(self, css: str, value: str) -> None:
        from selenium.webdriver.support.select import Select

        Select(self.el(css)).select_by_value(value)

    def open_panel(self, panel_id: str) -> None:
        if not self.el(f"#{panel_id}").get_attribute("open"):
            self.click(f"#{panel_id} > summary")

    def notice(self, kind: str, contains: str) -> str:
        return str(
            self.wait.until(
                lambda d: next(
                    (
                        n.text
                        for n in d.find_elements(self.by.CSS_SELECTOR, f"#notice .note.{kind}")
                        if contains in n.text
                    ),
                    None,
                )
            )
        )

    def confirm(self, typed: str | None = None) -> None:
        self.el("#confirm[open]")
        if typed is not None:
            self.fill("#confirm-typed", typed)
        self.click("#confirm-ok")
        self.wait.until(lambda d: not d.find_element(self.by.CSS_SELECTOR, "#confirm").get_attribute("open"))

    def shot(self, name: str, show: str | None = None) -> None:
        """A screenshot, scrolled so that ``show`` (a CSS selector) is on it."""
        if show is not None:
            self.d.execute_script("arguments[0].scrollIntoView({block: 'center'})", self.el(show))
        self.d.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def test_the_lab_in_chromium(lab: Lab, tmp_path: Path) -> None:
    pytest.importorskip("selenium.webdriver.support.ui", reason="selenium is not installed")
    import oci
    from confluent_kafka import Consumer, Producer, TopicPartition

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver = _browser(tmp_path)
    page = Page(driver, lab.console)
    consumer: Any = None
    try:
        # The console asks for a login: the broker's SASL users.
        driver.get(lab.console + "/#/pools")
        page.el("#login-form")
        page.fill("#username", "admin")
        page.fill("#password", "admin-secret")
        page.shot("lab-01-login")
        page.click("#login-submit")
        assert page.text("#principal") == "User:admin"

        # 1. A stream pool, and a stream in it with its partitions and retention.
        page.go("/pools")
        page.open_panel("create-pool-panel")
        page.fill("#pool-name", "lab-pool")
        page.click("#create-pool")
        page.until_text("h1", lambda t: t == "Stream pool lab-pool")
        pool_id = urllib.parse.unquote(driver.current_url.split("#/pools/", 1)[1])
        assert pool_id.startswith("ocid1.streampool.oc1..")
        page.open_panel("create-stream-panel")
        page.fill("#stream-name", "lab-stream")
        page.fill("#stream-partitions", "3")
        page.fill("#stream-retention", "48")
        page.click("#create-stream")
        page.notice("ok", "Created stream lab-stream")
        row = page.el("#streams tr[data-stream='lab-stream']")
        stream_id = row.get_attribute("data-stream-id")
        assert stream_id.startswith("ocid1.stream.oc1..") and stream_id in row.text
        assert lab.rest in row.text  # the messages endpoint
        cells = row.text.split()
        assert "3" in cells and "48" in cells
        page.shot("lab-02-pool-and-stream", "#connection-properties")

        # 2. The pool's Kafka connection settings, pasted into a confluent-kafka producer.
        settings = properties(page.text("#connection-properties"))
        assert settings["bootstrap.servers"] == lab.broker.address("SASL_PLAINTEXT")
        assert settings["security.protocol"] == "SASL_PLAINTEXT" and settings["sasl.mechanism"] == "PLAIN"
        assert settings["sasl.username"] == f"<tenancy>/<user>/{pool_id}"
        assert page.text("#conn-username") == settings["sasl.username"]
        conf = {
            **settings,
            "sasl.username": settings["sasl.username"].replace("<tenancy>/<user>", LAB_USER),
            "sasl.password": LAB_PASSWORD,
        }
        producer = Producer({**conf, "acks": "all"})
        errors: list[Any] = []
        for i in range(20):
            value = "needle in the lab" if i == 13 else json.dumps({"n": i, "lab": True})
            producer.produce(
                "lab-stream",
                value.encode(),
                key=f"key-{i}".encode(),
                on_delivery=lambda e, m: e and errors.append(e),
            )
        assert producer.flush(30) == 0 and not errors, errors

        # 3. The messages, in the browser...
        page.click("#streams tr[data-stream='lab-stream'] a.button")
        page.wait.until(
            lambda d: len(d.find_elements(page.by.CSS_SELECTOR, "#message-table tbody tr[data-offset]")) == 20
        )
        assert "needle in the lab" in page.text("#message-table")
        page.shot("lab-03-messages", "#message-table")
        page.fill("#search-value", "NEEDLE")
        page.click("#browse-go")
        page.wait.until(
            lambda d: len(d.find_elements(page.by.CSS_SELECTOR, "#message-table tbody tr[data-offset]")) == 1
        )
        assert "key-13" in page.text("#message-table tbody tr[data-offset]")
        assert "1 matching of 20 scanned" in page.text("#messages-info")
        page.shot("lab-04-search", "#message-table")
        # ... and through the stream's messages endpoint, with the OCID the console showed.
        client = oci.streaming.StreamClient(oci_config(lab), service_endpoint=lab.rest)
        got = 0
        for p in range(3):
            cursor = client.create_cursor(
                stream_id, oci.streaming.models.CreateCursorDetails(partition=str(p), type="TRIM_HORIZON")
            ).data.value
            got += len(client.get_messages(stream_id, cursor, limit=100).data)
        assert got == 20

        # 4. A consumer group: its offsets cannot be reset while it has a member, then they can.
        consumer = Consumer(
            {**conf, "group.id": "lab-group", "enable.auto.commit": False, "auto.offset.reset": "earliest"}
        )
        consumer.subscribe(["lab-stream"])
        seen = 0
        deadline = time.monotonic() + 30
        while seen < 20:
            assert time.monotonic() < deadline, f"consumed {seen} of 20"
            seen += sum(1 for m in consumer.consume(50, 0.5) if m.error() is None)
        consumer.commit(asynchronous=False)
        page.go("/groups")
        driver.find_element(page.by.PARTIAL_LINK_TEXT, "lab-group").click()
        page.until_text("#group-lag", lambda t: t == "0")
        page.open_panel("reset-panel")
        page.select("#reset-to", "earliest")
        page.click("#reset-execute")
        page.confirm()
        refused = page.notice("error", "UNKNOWN_MEMBER_ID")
        assert "only while the group is empty" in refused
        page.shot("lab-05-reset-refused")
        consumer.close()
        consumer = None
        deadline = time.monotonic() + 30
        while "Empty" not in page.text("#view p"):
            assert time.monotonic() < deadline, "the group did not become empty"
            time.sleep(0.5)
            driver.refresh()
            page.wait.until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")
        page.open_panel("reset-panel")
        page.select("#reset-to", "earliest")
        page.click("#reset-preview")
        plan = page.text("#reset-plan-table")
        assert len(page.d.find_elements(page.by.CSS_SELECTOR, "#reset-plan-table tbody tr")) == 3, plan
        page.click("#reset-execute")
        page.confirm()
        page.notice("ok", "Reset the offsets")
        page.until_text("#group-lag", lambda t: t == "20")
        page.shot("lab-06-reset", "#group-offsets")
        probe = Consumer({**conf, "group.id": "lab-group"})
        try:
            committed = probe.committed([TopicPartition("lab-stream", p) for p in range(3)], timeout=15)
            assert [tp.offset for tp in committed] == [0, 0, 0]
        finally:
            probe.close()

        # 5. A queue with a dead letter queue: a message delivered too often lands there, and moves back.
        page.go("/queues")
        page.open_panel("create-queue-panel")
        page.fill("#queue-name", "lab-queue")
        page.fill("#queue-dlq", "1")
        page.click("#create-queue")
        page.until_text("h1", lambda t: t == "Queue lab-queue")
        queue_id = urllib.parse.unquote(driver.current_url.split("#/queues/", 1)[1])
        page.fill("#send-content", "lab message")
        page.click("#send-message")
        page.notice("ok", "Sent message")
        page.fill("#receive-visibility", "0")
        page.click("#receive-messages")
        page.until_text("#received-count", lambda t: t == "1 received")
        assert "lab message" in page.text("#received-table")
        page.click("#receive-messages")  # delivered once already: now it is a dead letter
        page.until_text("#received-count", lambda t: t == "0 received")
        page.until_text("#dlq-stats", lambda t: t.startswith("1 visible"))
        page.click("#view-dlq")
        assert "lab message" in page.text("#dead-letter-table")
        page.shot("lab-07-dead-letter", "#dead-letter-table")
        page.click("#dead-letter-table button[data-move-back]")
        page.notice("ok", "Moved 1 message back")
        page.until_text("#queue-stats", lambda t: t.startswith("1 visible"))
        page.until_text("#dlq-stats", lambda t: t.startswith("0 visible"))
        page.shot("lab-08-moved-back", "#queue-stats")
        queues = oci.queue.QueueClient(oci_config(lab), service_endpoint=lab.rest)
        msgs = queues.get_messages(queue_id, visibility_in_seconds=0, timeout_in_seconds=0, limit=10)
        assert [m.content for m in msgs.data.messages] == ["lab message"]

        # 6. Cleaning up: purge and delete the queue, delete the stream and the pool (each confirmed first).
        page.open_panel("purge-panel")
        page.click("#purge")
        page.confirm()
        page.notice("ok", "Purged")
        page.until_text("#queue-stats", lambda t: t.startswith("0 visible"))
        page.click("#delete-queue")
        page.confirm("lab-queue")
        page.wait.until(lambda d: d.current_url.endswith("#/queues"))
        page.go(f"/pools/{urllib.parse.quote(pool_id)}")
        page.click("#streams button[data-delete-stream]")
        page.confirm("lab-stream")
        page.notice("ok", "Deleted stream lab-stream")
        page.click("#delete-pool")
        page.confirm("lab-pool")
        page.wait.until(lambda d: d.current_url.endswith("#/pools"))
        admin = oci.streaming.StreamAdminClient(oci_config(lab), service_endpoint=lab.rest)
        assert admin.get_stream_pool(pool_id).data.lifecycle_state == "DELETED"
        assert admin.get_stream(stream_id).data.lifecycle_state == "DELETED"

        logs = [
            e for e in driver.get_log("browser") if e.get("level") == "SEVERE" and "/api/" not in e["message"]
        ]
        assert not logs, logs
    finally:
        if consumer is not None:
            consumer.close()
        driver.quit()

    # Every change is in the audit trail, made by User:admin through the console.
    deadline = time.monotonic() + 10
    want = {
        "Login",
        "CreateStreamPool",
        "CreateStream",
        "OffsetCommit",
        "CreateQueue",
        "PutMessages",
        "MoveBack",
        "PurgeQueue",
        "DeleteQueue",
        "DeleteStream",
        "DeleteStreamPool",
    }
    while True:
        done = {
            r["operation"]
            for r in audit_records(lab.broker)
            if r["surface"] == "console" and r["principal"] == "User:admin" and r["result"] == "ok"
        }
        if want <= done or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert want <= done, want - done
    refused = [
        r
        for r in audit_records(lab.broker)
        if r["surface"] == "console" and r["operation"] == "OffsetCommit" and r["result"] != "ok"
    ]
    assert refused and "UNKNOWN_MEMBER_ID" in refused[0]["error"]
