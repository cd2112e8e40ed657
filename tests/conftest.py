"""Shared fixtures: kafkite brokers run as real subprocesses on free loopback ports."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import CI, KCAT, BrokerFactory, BrokerProcess, check_no_tracebacks, stop_all

pytest_plugins = ["pytester"]

_BROKERS_KEY = pytest.StashKey[list[BrokerProcess]]()

CI_SKIP = "skipped under CI=true, where every suite must run (mark a test opt_in if it needs what CI lacks)"


def _skip_reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _fail_skip_under_ci(report: pytest.CollectReport | pytest.TestReport) -> None:
    """Under CI=true a skip (a missing tool, server or package) fails the test instead of hiding a gap."""
    report.outcome = "failed"
    report.longrepr = f"{CI_SKIP}: {_skip_reason(report)}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if CI and report.skipped:
        _fail_skip_under_ci(report)


def _attach(request: pytest.FixtureRequest, broker: BrokerProcess) -> None:
    request.node.stash.setdefault(_BROKERS_KEY, []).append(broker)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if (
        CI
        and report.skipped
        and not hasattr(report, "wasxfail")
        and item.get_closest_marker("opt_in") is None
    ):
        _fail_skip_under_ci(report)
    if report.failed:
        for b in item.stash.get(_BROKERS_KEY, []):
            report.sections.append((f"kafkite broker {b.bootstrap} log (tail)", b.tail(80)))


@pytest.fixture
def broker_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BrokerFactory]:
    """Start brokers owned by one test: ``broker_factory("log.flush.on.ack=true")``; stopped afterwards."""
    started: list[BrokerProcess] = []

    def make(*overrides: str, start: bool = True) -> BrokerProcess:
        n = len(started)
        b = BrokerProcess(tmp_path / f"data{n}", tmp_path / f"broker{n}.log", overrides)
        started.append(b)
        _attach(request, b)
        if start:
            b.start()
        return b

    yield make
    stop_all(started)


@pytest.fixture
def broker(broker_factory: BrokerFactory) -> BrokerProcess:
    """A fresh broker of this test's own (restart / kill tests)."""
    return broker_factory()


@pytest.fixture(scope="session")
def _shared_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    root = tmp_path_factory.mktemp("shared-broker")
    b = BrokerProcess(root / "data", root / "broker.log")
    b.start()
    yield b
    b.stop()
    check_no_tracebacks(b)


@pytest.fixture
def shared_broker(request: pytest.FixtureRequest, _shared_broker: BrokerProcess) -> BrokerProcess:
    """One broker for the whole session, for tests that only create uniquely named topics."""
    if not _shared_broker.running:
        _shared_broker.start()
    _attach(request, _shared_broker)
    return _shared_broker


@pytest.fixture
def attach_broker(request: pytest.FixtureRequest) -> Callable[[BrokerProcess], BrokerProcess]:
    """Tie a broker started elsewhere (a module fixture) to this test: its log tail shows on failure."""

    def attach(b: BrokerProcess) -> BrokerProcess:
        _attach(request, b)
        return b

    return attach


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> str:
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:80]
    return f"{base}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def kcat() -> str:
    if KCAT is None:
        pytest.skip("kcat is not installed (apt-get install kcat; make test installs it as root)")
    return KCAT
