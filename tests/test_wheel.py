"""kafkite as a user installs it: the built wheel in a fresh virtual environment outside this checkout.

``kafkite serve`` from that environment serves confluent-kafka, kafka-python and aiokafka; an installation
whose protocol specs are gone stops at start-up saying so; and a scratch project that installs the wheel runs
its own tests on the pytest plugin's fixtures.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import REPO, BrokerProcess, clean_env, consume, free_port, produce, serve_and_fail, stop_all
from wheel_support import PLUGIN_TEST_PACKAGES, Dist, pinned

pytestmark = [pytest.mark.timeout(900), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

SPECS = sorted(p.name for p in (REPO / "protocol_specs").glob("*.spec"))
STATIC = sorted(p.name for p in (REPO / "kafkite" / "console" / "static").iterdir())


@pytest.fixture(scope="module")
def dist() -> Dist:
    return Dist()


@pytest.fixture(scope="module")
def serve_venv(dist: Dist) -> Path:
    """A fresh virtual environment with nothing but the wheel (and its dependencies)."""
    return dist.venv("serve")


@pytest.fixture(scope="module")
def plugin_venv(dist: Dist) -> Path:
    """The wheel with pytest and the two clients the scratch project's tests use."""
    return dist.venv("plugin", pinned(PLUGIN_TEST_PACKAGES))


def run(cmd: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd,
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


# ------------------------------------------------------------------------------------------ the distribution


def test_wheel_and_sdist_carry_every_file_read_at_run_time(dist: Dist) -> None:
    sdist, wheel = dist.build()
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        entry_text = z.read(entry_points).decode()
    assert {f"kafkite/protocol_specs/{s}" for s in SPECS} <= names
    assert {f"kafkite/console/static/{s}" for s in STATIC} <= names
    assert {"kafkite/py.typed", "kafkite/__main__.py", "kafkite/pytest_plugin.py"} <= names
    assert "[console_scripts]\nkafkite = kafkite.cli:main" in entry_text
    assert "[pytest11]\nkafkite = kafkite.pytest_plugin" in entry_text
    assert not any(n.startswith(("tests/", "protocol_specs/")) for n in names)  # nothing at the top level
    with tarfile.open(sdist) as t:
        members = {m.split("/", 1)[1] for m in t.getnames() if "/" in m}
    assert {f"protocol_specs/{s}" for s in SPECS} <= members
    assert {f"kafkite/console/static/{s}" for s in STATIC} <= members
    assert {"pyproject.toml", "setup.py", "README.md", "protocol_specs/README.md"} <= members


def test_installed_package_runs_from_the_environment_not_the_checkout(
    serve_venv: Path, tmp_path: Path
) -> None:
    code = "import kafkite, kafkite.protocol.specs as s; print(kafkite.__file__); print(s.specs_dir())"
    res = run([str(serve_venv / "bin" / "python"), "-c", code], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    module, specs = res.stdout.split()
    site = serve_venv / "lib"
    assert Path(module).is_relative_to(site) and Path(specs).is_relative_to(site), res.stdout
    assert not Path(module).is_relative_to(REPO)
    version = run([str(serve_venv / "bin" / "kafkite"), "--version"], cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("kafkite "), version
    assert version.stdout.split()[1][0].isdigit()
    as_module = run([str(serve_venv / "bin" / "python"), "-m", "kafkite", "--version"], cwd=tmp_path)
    assert as_module.stdout == version.stdout
    help_text = run([str(serve_venv / "bin" / "python"), "-m", "kafkite", "serve", "--help"], cwd=tmp_path)
    assert help_text.returncode == 0 and "rest.listeners" in help_text.stdout


# ------------------------------------------------------------------------------------------ kafkite serve


@pytest.fixture(scope="module")
def wheel_broker(serve_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    root = tmp_path_factory.mktemp("wheel-broker")
    b = BrokerProcess(root / "data", root / "broker.log", program=[str(serve_venv / "bin" / "kafkite")])
    b.start()
    yield b
    stop_all([b])


def test_confluent_kafka_round_trip(wheel_broker: BrokerProcess) -> None:
    messages = [(b"k%d" % i, b"confluent-%d" % i) for i in range(100)]
    assert produce(wheel_broker.bootstrap, "wheel-confluent", messages) == list(range(100))
    got = consume(wheel_broker.bootstrap, "wheel-confluent")
    assert [(m.key(), m.value()) for m in got] == messages


def test_kafka_python_round_trip(wheel_broker: BrokerProcess) -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    producer = KafkaProducer(bootstrap_servers=wheel_broker.bootstrap, acks="all")
    try:
        futures = [
            producer.send("wheel-kafka-python", key=b"k%d" % i, value=b"kp-%d" % i) for i in range(100)
        ]
        producer.flush(30)
        assert [f.get(timeout=30).offset for f in futures] == list(range(100))
    finally:
        producer.close(10)
    consumer = KafkaConsumer(
        bootstrap_servers=wheel_broker.bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    try:
        tp = TopicPartition("wheel-kafka-python", 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        got: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + 30
        while len(got) < 100 and time.monotonic() < deadline:
            for msgs in consumer.poll(timeout_ms=500).values():
                got += [(m.key, m.value) for m in msgs]
    finally:
        consumer.close()
    assert got == [(b"k%d" % i, b"kp-%d" % i) for i in range(100)]


def test_aiokafka_round_trip(wheel_broker: BrokerProcess) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    async def main() -> list[tuple[bytes | None, bytes | None]]:
        producer = AIOKafkaProducer(bootstrap_servers=wheel_broker.bootstrap, acks="all")
        await producer.start()
        try:
            for i in range(100):
                await producer.send_and_wait("wheel-aiokafka", key=b"k%d" % i, value=b"aio-%d" % i)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            "wheel-aiokafka",
            bootstrap_servers=wheel_broker.bootstrap,
            group_id="wheel-aiokafka-group",
            auto_offset_reset="earliest",
        )
        await consumer.start()
        got: list[tuple[bytes | None, bytes | None]] = []
        try:
            deadline = time.monotonic() + 30
            while len(got) < 100 and time.monotonic() < deadline:
                for msgs in (await consumer.getmany(timeout_ms=500)).values():
                    got += [(m.key, m.value) for m in msgs]
        finally:
            await consumer.stop()
        return got

    assert asyncio.run(main()) == [(b"k%d" % i, b"aio-%d" % i) for i in range(100)]


# ------------------------------------------------------------------------------------------ a broken install


@pytest.mark.parametrize("removed", ["the directory", "every spec", "Produce.spec"])
def test_broken_install_stops_at_start_up_naming_what_is_missing(
    serve_venv: Path, dist: Dist, tmp_path: Path, removed: str
) -> None:
    # A second copy of the wheel's package, installed by pip beside the environment's dependencies, damaged.
    _, wheel = dist.build()
    target = tmp_path / "site"
    python = str(serve_venv / "bin" / "python")
    res = run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        cwd=tmp_path,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    specs = target / "kafkite" / "protocol_specs"
    if removed == "the directory":
        shutil.rmtree(specs)
    elif removed == "every spec":
        for p in specs.glob("*.spec"):
            p.unlink()
    else:
        (specs / removed).unlink()
    port = free_port()
    cmd = [python, "-m", "kafkite", "serve"]
    for o in (f"listeners=PLAINTEXT://127.0.0.1:{port}", f"log.dirs={tmp_path / 'data'}"):
        cmd += ["--override", o]
    cmd += ["--override", "rest.listeners=", "--override", "stomp.listeners="]
    rc, out, answered = serve_and_fail(cmd, port, tmp_path, clean_env(PYTHONPATH=str(target)))
    assert rc == 1, out
    assert "kafkite: cannot start: broken installation" in out and str(specs) in out, out
    if removed == "the directory":
        assert "the protocol specs are missing" in out and "reinstall kafkite" in out, out
    else:
        assert "Produce.spec (API key 0)" in out, out
        assert ("Fetch.spec (API key 1)" in out) == (removed == "every spec"), out
    assert "Traceback" not in out and "ready" not in out and "listening" not in out, out
    assert answered == []


# ------------------------------------------------------------------------------------------ the pytest plugin

SCRATCH_TESTS = """
import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer, Producer


def test_confluent_kafka_produce_and_consume(kafkite_bootstrap, kafkite_topic):
    producer = Producer({"bootstrap.servers": kafkite_bootstrap})
    for i in range(10):
        producer.produce(kafkite_topic, key=b"k%d" % i, value=b"v%d" % i)
    assert producer.flush(30) == 0
    consumer = Consumer(
        {"bootstrap.servers": kafkite_bootstrap, "group.id": "scratch", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([kafkite_topic])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 10 and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is not None and m.error() is None:
            got.append((m.key(), m.value()))
    consumer.close()
    assert got == [(b"k%d" % i, b"v%d" % i) for i in range(10)]


def test_aiokafka_consumer_group(kafkite_broker, kafkite_topic):
    bootstrap = kafkite_broker.bootstrap_servers
    want = {b"m%d" % i for i in range(20)}

    async def main():
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        for i in range(20):
            await producer.send_and_wait(kafkite_topic, b"m%d" % i)
        await producer.stop()
        consumers = [
            AIOKafkaConsumer(
                kafkite_topic, bootstrap_servers=bootstrap, group_id="scratch", auto_offset_reset="earliest"
            )
            for _ in range(2)
        ]
        for c in consumers:
            await c.start()
        got, owners = set(), 0
        deadline = time.monotonic() + 30
        while (got != want or owners != 1) and time.monotonic() < deadline:
            for c in consumers:
                for msgs in (await c.getmany(timeout_ms=200)).values():
                    got |= {m.value for m in msgs}
            owners = sum(len(c.assignment()) for c in consumers)
        for c in consumers:
            await c.stop()
        return got, owners

    got, owners = asyncio.run(main())
    assert got == want
    assert owners == 1  # the one partition belongs to one member of the group


SEEN = []


def test_a_topic_per_test(kafkite_bootstrap, kafkite_topic, request):
    assert request.node.name in kafkite_topic and kafkite_topic not in SEEN
    SEEN.append(kafkite_topic)
    offsets = []
    producer = Producer({"bootstrap.servers": kafkite_bootstrap})
    producer.produce(kafkite_topic, b"first", on_delivery=lambda err, m: offsets.append(m.offset()))
    assert producer.flush(30) == 0
    assert offsets == [0]  # a topic nobody wrote to before
"""


def test_scratch_project_uses_the_plugin_from_the_installed_wheel(
    pytester: pytest.Pytester, plugin_venv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_scratch=SCRATCH_TESTS)
    pytester.makeini("[pytest]\nfilterwarnings = ignore::DeprecationWarning\n")
    for key in ("PYTHONPATH", "VIRTUAL_ENV", "KAFKITE_SPECS_DIR", "PYTEST_ADDOPTS", "PYTEST_PLUGINS"):
        monkeypatch.delenv(key, raising=False)
    python = str(plugin_venv / "bin" / "python")
    result = pytester.run(
        python, "-m", "pytest", "-p", "no:cacheprovider", "-v", "--durations=3", timeout=300
    )
    result.assert_outcomes(passed=3)
    # The fixtures came from the installed wheel, not from this checkout.
    where = pytester.run(python, "-c", "import kafkite.pytest_plugin as p; print(p.__file__)")
    assert Path(where.stdout.str().strip()).is_relative_to(plugin_venv), where.stdout.str()
