"""The web console: its JSON endpoints, and the page itself end to end in headless Chromium.

The browser test needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package (the test
extra); it skips, saying which is missing, otherwise. Screenshots go to ``test-artifacts/console/``.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO, BrokerProcess, RawClient, free_port

from kafkite.protocol import records

PRODUCE, OFFSET_COMMIT, CREATE_TOPICS = 0, 8, 19
ARTIFACTS = REPO / "test-artifacts" / "console"
BASE_TS = 1_700_000_000_000


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BrokerProcess, str]]:
    root = tmp_path_factory.mktemp("console")
    port = free_port()
    b = BrokerProcess(root / "data", root / "broker.log", [f"console.listener=http://127.0.0.1:{port}"])
    b.start()
    yield b, f"http://127.0.0.1:{port}"
    b.stop()


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def setup_topic(bootstrap: str, topic: str, group: str, needle: str) -> None:
    """Topic with 2 partitions: 30 messages in partition 1 (the needle at offset 17, message i at BASE_TS +
    i s), 5 in partition 0; ``group`` committed offset 10 of partition 1 and 5 of partition 0."""
    with RawClient.to(bootstrap) as c:
        resp = c.request(
            CREATE_TOPICS,
            5,
            {
                "topics": [
                    {
                        "name": topic,
                        "num_partitions": 2,
                        "replication_factor": 1,
                        "assignments": [],
                        "configs": [{"name": "retention.ms", "value": "-1"}],
                    }
                ],
                "timeout_ms": 10000,
                "validate_only": False,
            },
        )
        assert resp["topics"][0]["error_code"] == 0, resp
        p1 = [
            (
                f"key-{i}".encode(),
                (needle if i == 17 else f"message {i}").encode(),
                [("origin", b"console-test")],
                BASE_TS + i * 1000,
            )
            for i in range(30)
        ]
        p0 = [(None, b"\x00\xffbinary", [], BASE_TS) for _ in range(5)]
        for part, recs in ((1, p1), (0, p0)):
            resp = c.request(
                PRODUCE,
                9,
                {
                    "transactional_id": None,
                    "acks": -1,
                    "timeout_ms": 10000,
                    "topic_data": [
                        {
                            "name": topic,
                            "partition_data": [{"index": part, "records": records.build_batch(recs)}],
                        }
                    ],
                },
            )
            assert resp["responses"][0]["partition_responses"][0]["error_code"] == 0, resp
        resp = c.request(
            OFFSET_COMMIT,
            8,
            {
                "group_id": group,
                "generation_id_or_member_epoch": -1,
                "member_id": "",
                "group_instance_id": None,
                "topics": [
                    {
                        "name": topic,
                        "partitions": [
                            {"partition_index": 1, "committed_offset": 10, "committed_metadata": None},
                            {"partition_index": 0, "committed_offset": 5, "committed_metadata": None},
                        ],
                    }
                ],
            },
        )
        assert all(p["error_code"] == 0 for p in resp["topics"][0]["partitions"]), resp


@pytest.fixture(scope="module")
def seeded(console: tuple[BrokerProcess, str]) -> dict[str, str]:
    b, _ = console
    suffix = uuid.uuid4().hex[:8]
    names = {"topic": f"console-{suffix}", "group": f"console-group-{suffix}", "needle": f"needle-{suffix}"}
    setup_topic(b.bootstrap, names["topic"], names["group"], names["needle"])
    return names


# ------------------------------------------------------------------------------------------ JSON endpoints


def test_api_topics_partitions_and_browsing(
    console: tuple[BrokerProcess, str], seeded: dict[str, str]
) -> None:
    _, url = console
    topic = seeded["topic"]
    listed = {t["name"]: t for t in get(url + "/api/topics")}
    assert listed[topic]["partitions"] == 2 and listed[topic]["messages"] == 35
    t = get(f"{url}/api/topics/{topic}")
    assert [(p["partition"], p["start_offset"], p["end_offset"]) for p in t["partitions"]] == [
        (0, 0, 5),
        (1, 0, 30),
    ]
    assert t["partitions"][1]["size_bytes"] > 0
    assert t["configs"] == {"retention.ms": "-1"}
    assert t["groups"] == [
        {
            "group": seeded["group"],
            "state": "Empty",
            "lag": 20,
            "partitions": [
                {"partition": 0, "committed_offset": 5, "lag": 0},
                {"partition": 1, "committed_offset": 10, "lag": 20},
            ],
        }
    ]
    page = get(f"{url}/api/topics/{topic}/messages?partition=1&offset=17&limit=2")
    assert [m["offset"] for m in page["messages"]] == [17, 18]
    assert page["messages"][0]["value"]["text"] == seeded["needle"]
    assert page["messages"][0]["key"]["text"] == "key-17"
    assert page["messages"][0]["headers"] == [
        {"name": "origin", "text": "console-test", "size": 12, "truncated": False}
    ]
    assert page["next_offset"] == 19
    by_time = get(f"{url}/api/topics/{topic}/messages?partition=1&timestamp={BASE_TS + 16500}&limit=1")
    assert by_time["messages"][0]["offset"] == 17
    latest = get(f"{url}/api/topics/{topic}/messages?partition=1&limit=3")
    assert [m["offset"] for m in latest["messages"]] == [27, 28, 29]
    binary = get(f"{url}/api/topics/{topic}/messages?partition=0&offset=0&limit=1")["messages"][0]
    assert binary["value"]["base64"] == "AP9iaW5hcnk=" and binary["key"] == {"text": None, "size": -1}
    with pytest.raises(urllib.error.HTTPError) as e:
        get(f"{url}/api/topics/no-such-topic-{uuid.uuid4().hex}")
    assert e.value.code == 404


def test_api_groups_pools_throughput(console: tuple[BrokerProcess, str], seeded: dict[str, str]) -> None:
    _, url = console
    groups = {g["group"]: g for g in get(url + "/api/groups")}
    assert groups[seeded["group"]]["lag"] == 20 and groups[seeded["group"]]["state"] == "Empty"
    g = get(f"{url}/api/groups/{seeded['group']}")
    assert {(o["partition"], o["committed_offset"], o["log_end_offset"], o["lag"]) for o in g["offsets"]} == {
        (0, 5, 5, 0),
        (1, 10, 30, 20),
    }
    assert g["type"] == "classic"
    # A group of the consumer protocol: its members, their epochs and what they own.
    b, _ = console
    cg = f"kip848-{seeded['group']}"
    with RawClient.to(b.bootstrap) as c:
        resp = c.request(
            68,  # ConsumerGroupHeartbeat
            1,
            {
                "group_id": cg,
                "member_id": "member-1",
                "member_epoch": 0,
                "rebalance_timeout_ms": 30000,
                "subscribed_topic_names": [seeded["topic"]],
                "topic_partitions": [],
            },
        )
        assert resp["error_code"] == 0, resp
    listed = {x["group"]: x for x in get(url + "/api/groups")}
    assert (listed[cg]["type"], listed[cg]["state"], listed[cg]["members"]) == ("consumer", "Stable", 1)
    d = get(f"{url}/api/groups/{cg}")
    assert d["type"] == "consumer" and d["generation"] == 1
    assert d["members"][0]["member_epoch"] == 1 and d["members"][0]["protocol"] == "consumer"
    assert d["members"][0]["assignment"] == [{"topic": seeded["topic"], "partitions": [0, 1]}]
    pools = get(url + "/api/pools")
    default = next(p for p in pools if p["default"])
    assert seeded["topic"] in [s["topic"] for s in default["streams"]]
    assert get(url + "/api/queues") == []
    overview = get(url + "/api/overview")
    assert overview["topics"] >= 1 and overview["groups"] >= 1
    # The sampler saw the produce requests: some point has bytes in.
    deadline = time.monotonic() + 5
    while not any(p["bytes_in"] > 0 for p in get(url + "/api/throughput")["points"]):
        assert time.monotonic() < deadline, "no throughput recorded"
        time.sleep(0.3)


# ------------------------------------------------------------------------------------------ the browser


def _browser(tmp_path: Path) -> Any:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install 'kafkite[test]')")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver") or (
        "/usr/lib/chromium/chromedriver" if Path("/usr/lib/chromium/chromedriver").exists() else None
    )
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium chromium-driver)")
    if driver is None:
        pytest.skip("chromedriver is not installed (apt-get install chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1100",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


def test_console_in_chromium_browses_to_a_message_and_shows_group_lag(
    console: tuple[BrokerProcess, str], seeded: dict[str, str], tmp_path: Path
) -> None:
    from_selenium = pytest.importorskip("selenium.webdriver.support.ui", reason="selenium is not installed")
    _, url = console
    topic, group, needle = seeded["topic"], seeded["group"], seeded["needle"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver = _browser(tmp_path)
    try:
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.select import Select

        # Tables are replaced wholesale when a page loads new data, so an element found a moment
        # ago may be gone by the time it is read: every read retries inside the wait.
        wait = from_selenium.WebDriverWait(
            driver, 15, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
        )

        def shot(name: str) -> None:
            driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))

        def cell(css: str) -> str:
            return str(wait.until(lambda d: d.find_element(By.CSS_SELECTOR, css).text or None))

        def attr(css: str, name: str) -> str:
            return str(wait.until(lambda d: d.find_element(By.CSS_SELECTOR, css).get_attribute(name)))

        # The topics list links to the topic page.
        driver.get(url + "/#/topics")
        link = wait.until(lambda d: d.find_element(By.LINK_TEXT, topic))
        shot("01-topics")
        link.click()
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#partitions tr[data-partition='1']"))
        row = cell("#partitions tr[data-partition='1']").split()
        assert row[:4] == ["1", "0", "30", "30"], row
        # The group's lag, on the topic page.
        lag = cell(f"#topic-groups tr[data-group='{group}'] td[data-lag]")
        assert lag == "20"
        shot("02-topic")

        # Browse to the produced message by offset...
        Select(driver.find_element(By.ID, "browse-partition")).select_by_value("1")
        driver.find_element(By.ID, "browse-offset").send_keys("17")
        driver.find_element(By.ID, "browse-limit").clear()
        driver.find_element(By.ID, "browse-limit").send_keys("5")
        driver.find_element(By.ID, "browse-go").click()
        value = cell("#message-table tr[data-offset='17'] td.value")
        assert value == needle
        assert attr("#message-table tbody tr", "data-offset") == "17"
        assert "key-17" in cell("#message-table tr[data-offset='17']")
        assert "origin=console-test" in cell("#message-table tr[data-offset='17']")
        shot("03-browse-offset")
        # ... the next page follows on ...
        driver.find_element(By.ID, "browse-next").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#message-table tr[data-offset='22']"))
        # ... and by time.
        driver.find_element(By.ID, "browse-offset").clear()
        driver.find_element(By.ID, "browse-time").send_keys(str(BASE_TS + 16500))
        driver.find_element(By.ID, "browse-go").click()
        wait.until(
            lambda d: (
                d.find_element(By.CSS_SELECTOR, "#message-table tbody tr").get_attribute("data-offset")
                == "17"
            )
        )
        assert cell("#message-table tr[data-offset='17'] td.value") == needle
        shot("04-browse-time")

        # The group page: members (none: offsets were committed without joining) and lag per partition.
        driver.get(f"{url}/#/groups/{group}")
        assert cell("#group-lag") == "20"
        assert cell(f"#group-offsets tr[data-topic='{topic}'][data-partition='1'] td[data-lag]") == "20"
        shot("05-group")
        driver.get(url + "/#/groups")
        assert cell(f"#groups tr[data-group='{group}'] td[data-lag]") == "20"

        # The overview draws live throughput charts from the polled endpoint.
        driver.get(url + "/#/")
        wait.until(lambda d: d.find_element(By.ID, "chart-bytes"))
        wait.until(lambda d: "req/s" in d.find_element(By.ID, "live").text)
        shot("06-overview")
        driver.get(url + "/#/pools")
        wait.until(lambda d: d.find_element(By.LINK_TEXT, topic))
        shot("07-pools")
        driver.get(url + "/#/queues")
        wait.until(lambda d: d.find_element(By.ID, "queues"))
        logs = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert not logs, logs
    finally:
        driver.quit()


def test_api_group_members_and_assignment_of_a_live_consumer(
    console: tuple[BrokerProcess, str], seeded: dict[str, str]
) -> None:
    from confluent_kafka import Consumer

    b, url = console
    group = f"live-{seeded['group']}"
    consumer = Consumer(
        {
            "bootstrap.servers": b.bootstrap,
            "group.id": group,
            "client.id": "console-live-consumer",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.subscribe([seeded["topic"]])
        got = 0
        deadline = time.monotonic() + 30
        while got < 35:
            assert time.monotonic() < deadline, f"consumed {got} of 35"
            for m in consumer.consume(num_messages=100, timeout=0.5):
                assert m.error() is None, m.error()
                got += 1
        consumer.commit(asynchronous=False)
        g = get(f"{url}/api/groups/{group}")
        assert g["state"] == "Stable" and g["protocol_type"] == "consumer"
        (member,) = g["members"]
        assert member["client_id"] == "console-live-consumer"
        assert member["assignment"] == [{"topic": seeded["topic"], "partitions": [0, 1]}]
        assert {(o["partition"], o["lag"], o["member_id"]) for o in g["offsets"]} == {
            (0, 0, member["member_id"]),
            (1, 0, member["member_id"]),
        }
    finally:
        consumer.close()


def test_the_page_loads_only_files_an_installation_is_checked_for(
    console: tuple[BrokerProcess, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import re

    from kafkite.config import BrokerConfig
    from kafkite.console import server
    from kafkite.startup import StartupError, check_console_files

    _, url = console
    with urllib.request.urlopen(url + "/", timeout=10) as r:
        page = r.read().decode()
    loaded = re.findall(r'(?:src|href)="/static/([^"]+)"', page)
    assert set(loaded) | {"index.html"} == set(server.STATIC_FILES)
    for name in loaded:
        with urllib.request.urlopen(f"{url}/static/{name}", timeout=10) as r:
            assert r.status == 200 and r.read()
    # An installation missing one of them stops at start-up, naming it.
    monkeypatch.setattr(server, "STATIC", tmp_path)
    (tmp_path / "index.html").write_text("<html></html>")
    with pytest.raises(StartupError) as e:
        check_console_files(BrokerConfig({"console.listener": "http://127.0.0.1:0"}))
    assert "ui.js" in str(e.value) and "console.js" in str(e.value)


def test_topic_operations_in_chromium(console: tuple[BrokerProcess, str], tmp_path: Path) -> None:
    """Create a topic with the form, produce test messages, see them as JSON, text and hex, edit and reset a
    config, add partitions, delete records and the topic: each through the page, each checked with Kafka."""
    ui = pytest.importorskip("selenium.webdriver.support.ui", reason="selenium is not installed")
    from confluent_kafka.admin import AdminClient, ConfigResource
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select

    b, url = console
    topic = f"ui-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver = _browser(tmp_path)
    try:
        wait = ui.WebDriverWait(
            driver, 20, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
        )

        def el(css: str) -> Any:
            return wait.until(lambda d: d.find_element(By.CSS_SELECTOR, css))

        def click(css: str) -> None:
            # Into the middle of the window first: the sticky header would take a click at its top edge.
            e = el(css)
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", e)
            e.click()

        def fill(css: str, value: str) -> None:
            e = el(css)
            e.clear()
            e.send_keys(value)

        def notice(kind: str, contains: str) -> str:
            return str(
                wait.until(
                    lambda d: next(
                        (
                            n.text
                            for n in d.find_elements(By.CSS_SELECTOR, f"#notice .note.{kind}")
                            if contains in n.text
                        ),
                        None,
                    )
                )
            )

        def confirm(typed: str | None = None) -> None:
            el("#confirm[open]")
            if typed:
                fill("#confirm-typed", typed)
            click("#confirm-ok")

        driver.get(url + "/#/topics")
        click("#create-topic-panel > summary")
        fill("#new-topic-name", topic)
        fill("#new-topic-partitions", "2")
        fill("#new-topic-configs", "retention.ms=3600000\nmax.message.bytes=500000")
        click("#create-topic")
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "h1").text == f"Topic {topic}")
        assert len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == 2

        # Test messages: JSON with a key and a header, then binary bytes given as hex.
        click("#produce-panel > summary")
        Select(el("#produce-partition")).select_by_value("0")
        fill("#produce-key", "order-1")
        fill("#produce-value", '{"id": 1, "items": ["a", "b"]}')
        fill("#produce-headers", "source=console")
        click("#produce-send")
        notice("ok", "Produced to partition 0 at offset 0")
        fill("#produce-key", "")
        fill("#produce-value", "00ff41")
        Select(el("#produce-encoding")).select_by_value("hex")
        fill("#produce-headers", "")
        click("#produce-send")
        notice("ok", "at offset 1")
        wait.until(
            lambda d: (
                d.find_element(By.CSS_SELECTOR, "#partitions tr[data-partition='0']").text.split()[:4]
                == ["0", "0", "2", "2"]
            )
        )
        Select(el("#browse-partition")).select_by_value("0")
        fill("#browse-offset", "0")
        click("#browse-go")
        json_cell = el("#message-table tr[data-offset='0'] td.value")
        wait.until(lambda d: '"items": [' in json_cell.text)  # pretty-printed JSON
        assert "source=console" in el("#message-table tr[data-offset='0']").text
        binary = el("#message-table tr[data-offset='1'] td.value").text
        assert "00 ff 41" in binary and "binary" in binary
        Select(el("#render-mode")).select_by_value("hex")
        wait.until(
            lambda d: (
                "7b 22 69 64"
                in d.find_element(By.CSS_SELECTOR, "#message-table tr[data-offset='0'] td.value").text
            )
        )
        Select(el("#render-mode")).select_by_value("text")
        wait.until(
            lambda d: (
                d.find_element(By.CSS_SELECTOR, "#message-table tr[data-offset='0'] td.value").text
                == '{"id": 1, "items": ["a", "b"]}'
            )
        )
        # Search by header and by value text.
        fill("#browse-offset", "")
        fill("#search-header", "source=cons")
        Select(el("#browse-partition")).select_by_value("all")
        click("#browse-go")
        wait.until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, "#message-table tbody tr[data-offset]")) == 1
        )
        driver.save_screenshot(str(ARTIFACTS / "topic-01-produce-and-search.png"))

        # A config: edited in place, then back to its default; a Kafka admin client sees each.
        res = ConfigResource(ConfigResource.Type.TOPIC, topic)
        click("#config-table tr[data-config='retention.ms'] button[data-edit]")
        fill("#config-input", "7200000")
        click("#config-save")
        notice("ok", "retention.ms = 7200000")
        assert admin.describe_configs([res])[res].result(timeout=15)["retention.ms"].value == "7200000"
        row = el("#config-table tr[data-config='retention.ms']")
        assert "DYNAMIC_TOPIC_CONFIG" in row.text and "604800000" in row.text  # the default beside it
        click("#config-table tr[data-config='retention.ms'] button[data-reset]")
        notice("ok", "retention.ms back to its default")
        assert admin.describe_configs([res])[res].result(timeout=15)["retention.ms"].value == "604800000"
        driver.save_screenshot(str(ARTIFACTS / "topic-02-configs.png"))

        # Partitions added; records deleted before an offset (after a confirmation).
        click("#partitions-panel > summary")
        fill("#partitions-count", "3")
        click("#partitions-add")
        notice("ok", "now has 3 partitions")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#partitions tr[data-partition='2']"))
        assert len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == 3
        click("#delete-records-panel > summary")
        Select(el("#delete-records-partition")).select_by_value("0")
        fill("#delete-records-offset", "1")
        click("#delete-records")
        confirm()
        notice("ok", "Partition 0 now starts at offset 1")
        assert el("#partitions tr[data-partition='0']").text.split()[:3] == ["0", "1", "2"]

        # Deleting the topic asks for its name first.
        click("#delete-topic")
        el("#confirm[open]")
        assert el("#confirm-ok").get_attribute("disabled") is not None
        confirm(topic)
        wait.until(lambda d: d.current_url.endswith("#/topics"))
        assert topic not in admin.list_topics(timeout=10).topics
        logs = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert not logs, logs
    finally:
        driver.quit()
