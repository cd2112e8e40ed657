"""The embedded broker (``kafkite.embedded``): a broker inside the test process, driven by real clients, that
starts on a free port, takes any broker setting, and leaves no thread, socket or directory behind."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from helpers import REPO, RawClient, consume, produce

import kafkite
from kafkite.config import ConfigError
from kafkite.embedded import AsyncEmbeddedBroker, EmbeddedBroker
from kafkite.server.listen import ListenerError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def threads() -> set[threading.Thread]:
    return set(threading.enumerate())


def refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def settle(before: set[threading.Thread]) -> set[threading.Thread]:
    """Threads started since ``before`` that are still alive after a short grace (client libraries' own
    threads end asynchronously)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = {t for t in threads() - before if t.is_alive()}
        if not left:
            return left
        time.sleep(0.05)
    return {t for t in threads() - before if t.is_alive()}


def test_sync_broker_serves_confluent_kafka_and_leaves_nothing_behind() -> None:
    fds, before = open_fds(), threads()
    with EmbeddedBroker() as broker:
        host, port = broker.host, broker.port
        assert broker.bootstrap_servers == f"127.0.0.1:{port}" and port > 0
        assert broker.config["storage.engine"] == "memory"
        temp_dir = broker.data_dir
        assert temp_dir.is_dir()
        messages = [(b"k%d" % i, b"v%d" % i) for i in range(50)]
        assert produce(broker.bootstrap_servers, "embedded", messages) == list(range(50))
        assert [(m.key(), m.value()) for m in consume(broker.bootstrap_servers, "embedded")] == messages
        names = {t.name for t in threads()}
        assert "kafkite-embedded-broker" in names
    assert refused(host, port)
    assert not temp_dir.exists()
    assert settle(before) == set()
    assert open_fds() <= fds, "sockets or files left open"


def test_metadata_advertises_the_port_it_was_given() -> None:
    with EmbeddedBroker() as broker, RawClient(broker.host, broker.port) as c:
        resp = c.request(3, 9, {"topics": None, "allow_auto_topic_creation": False})
        assert [(b["host"], b["port"]) for b in resp["brokers"]] == [(broker.host, broker.port)]


def test_overrides_and_the_file_engine_keep_data_across_restarts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with EmbeddedBroker("file", data_dir=data, overrides={"num.partitions": 3}) as broker:
        assert broker.data_dir == data
        produce(broker.bootstrap_servers, "kept", [(b"k", b"durable")], partition=2)
    with EmbeddedBroker("file", data_dir=data, overrides=["num.partitions=3"]) as broker:
        got = consume(broker.bootstrap_servers, "kept", partition=2)
        assert [m.value() for m in got] == [b"durable"]
    assert data.is_dir()  # the caller's directory stays


def test_a_broker_left_running_is_stopped_when_the_program_exits(tmp_path: Path) -> None:
    import subprocess
    import sys

    data = tmp_path / "data"
    program = (
        "from confluent_kafka import Producer\n"
        "from kafkite.embedded import EmbeddedBroker\n"
        f"b = EmbeddedBroker('file', data_dir={str(data)!r}).start()\n"
        "p = Producer({'bootstrap.servers': b.bootstrap_servers, 'acks': 'all'})\n"
        "p.produce('left', b'still here')\n"
        "assert p.flush(30) == 0\n"
        "print('exiting without stop()', flush=True)\n"
    )
    res = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "exiting" in res.stdout, res.stderr
    assert "Traceback" not in res.stderr
    with EmbeddedBroker("file", data_dir=data) as broker:  # the lock was released, the log is intact
        assert [m.value() for m in consume(broker.bootstrap_servers, "left")] == [b"still here"]


def test_start_stop_start_again() -> None:
    broker = EmbeddedBroker()
    for _ in range(2):
        broker.start()
        with RawClient(broker.host, broker.port) as c:
            assert c.api_versions()["error_code"] == 0
        broker.stop()
    broker.stop()  # idempotent


def test_bad_override_raises_config_error_and_starts_nothing() -> None:
    before = threads()
    broker = EmbeddedBroker(overrides={"num.partitions": 0})
    with pytest.raises(ConfigError, match=r"num\.partitions"):
        broker.start()
    assert settle(before) == set()


@pytest.mark.parametrize("key", ["rest.listeners", "metrics.listener", "console.listener", "stomp.listeners"])
def test_a_listener_in_use_raises_naming_its_key_and_leaves_nothing_behind(key: str) -> None:
    scheme = "stomp" if key == "stomp.listeners" else "http"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"{scheme}://127.0.0.1:{busy.getsockname()[1]}"
        fds, before = open_fds(), threads()
        with pytest.raises(ListenerError) as e, EmbeddedBroker(overrides={key: address}):
            pass
        assert e.value.key == key and e.value.address == address
        assert str(e.value) == f"{key}: cannot listen on {address}: address already in use"
        assert settle(before) == set()
        assert open_fds() <= fds


def test_side_listeners_on_free_ports() -> None:
    import urllib.error
    import urllib.request

    with EmbeddedBroker(overrides={"rest.listeners": "http://127.0.0.1:0"}) as broker:
        (url,) = broker.rest_urls
        assert url.startswith("http://127.0.0.1:") and not url.endswith((":0", ":8090"))
        try:
            with urllib.request.urlopen(f"{url}/no-such-page", timeout=10) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
        assert status == 404  # the gateway answers


def test_async_broker_serves_aiokafka_on_the_running_loop() -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    before, fds = threads(), open_fds()

    async def main() -> tuple[list[bytes | None], str, int]:
        async with AsyncEmbeddedBroker(overrides={"num.partitions": "2"}) as broker:
            assert "kafkite-embedded-broker" not in {t.name for t in threads()}  # no thread of its own
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
            await producer.start()
            try:
                for i in range(10):
                    await producer.send_and_wait("aio", b"m%d" % i, partition=i % 2)
            finally:
                await producer.stop()
            consumer = AIOKafkaConsumer(
                "aio", bootstrap_servers=broker.bootstrap_servers, group_id="g", auto_offset_reset="earliest"
            )
            await consumer.start()
            got: list[bytes | None] = []
            try:
                deadline = time.monotonic() + 30
                while len(got) < 10 and time.monotonic() < deadline:
                    for msgs in (await consumer.getmany(timeout_ms=200)).values():
                        got += [m.value for m in msgs]
            finally:
                await consumer.stop()
            return got, broker.host, broker.port

    got, host, port = asyncio.run(main())
    assert sorted(got, key=lambda v: v or b"") == sorted(b"m%d" % i for i in range(10))
    assert refused(host, port)
    assert settle(before) == set()
    assert open_fds() <= fds


def test_package_exports_and_version() -> None:
    assert kafkite.EmbeddedBroker is EmbeddedBroker
    assert kafkite.AsyncEmbeddedBroker is AsyncEmbeddedBroker
    assert isinstance(kafkite.__version__, str) and kafkite.__version__[0].isdigit()


# ------------------------------------------------------------------------------------ the README's examples


def readme_block(marker: str) -> str:
    text = (REPO / "README.md").read_text()
    blocks = text.split("```python\n")[1:]
    found = [b.split("```", 1)[0] for b in blocks if marker in b]
    assert len(found) == 1, f"one README example with {marker!r} expected"
    return found[0]


def test_readme_embedding_examples_run() -> None:
    sync_example = readme_block("with EmbeddedBroker(")
    exec(compile(sync_example, "README.md", "exec"), {})
    namespace: dict[str, object] = {}
    exec(compile(readme_block("async with AsyncEmbeddedBroker()"), "README.md", "exec"), namespace)
    main = namespace["main"]
    assert callable(main)
    asyncio.run(main())


def test_readme_pytest_plugin_example_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_readme=readme_block("def test_orders_round_trip("))
    pytester.makeini("[pytest]\nfilterwarnings = ignore::DeprecationWarning\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(passed=2)


def test_plugin_settings_choose_the_engine_and_overrides(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        "[pytest]\n"
        "kafkite_engine = file\n"
        "kafkite_overrides =\n    num.partitions=3\n    log.retention.ms=60000\n"
    )
    pytester.makepyfile(
        test_settings="""
def test_settings(kafkite_broker, kafkite_bootstrap):
    assert kafkite_broker.config["storage.engine"] == "file"
    assert kafkite_broker.config["num.partitions"] == 3
    assert kafkite_broker.config["log.retention.ms"] == 60000
    assert kafkite_bootstrap == kafkite_broker.bootstrap_servers
    assert "kafkite" in str(kafkite_broker.data_dir)
"""
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120).assert_outcomes(passed=1)
    off = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:kafkite", timeout=120)
    off.assert_outcomes(errors=1)  # -p no:kafkite: the fixtures are gone
