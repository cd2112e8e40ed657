"""pytest fixtures for a kafkite broker inside the test session (registered by the ``pytest11`` entry point).

``kafkite_broker``
    One :class:`kafkite.embedded.EmbeddedBroker` for the whole session, started when a test first asks for it
    and stopped at the end of the session.
``kafkite_bootstrap``
    Its ``host:port``, for a client's ``bootstrap.servers``.
``kafkite_topic``
    A topic name no other test uses (topics are created on first use, or by the test).

Settings (``pytest.ini``, ``pyproject.toml``'s ``[tool.pytest.ini_options]``, or ``-o name=value``):
``kafkite_engine`` (``memory``, the default, or ``file``) and ``kafkite_overrides`` (broker settings, one
``key=value`` per line). ``-p no:kafkite`` disables the plugin.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from kafkite.embedded import EmbeddedBroker

_counter = itertools.count(1)
_SESSION = uuid.uuid4().hex[:6]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "kafkite_engine",
        "storage engine of the kafkite_broker fixture: memory (default) or file",
        default="memory",
    )
    parser.addini(
        "kafkite_overrides",
        "broker settings of the kafkite_broker fixture, one key=value per line",
        type="linelist",
        default=[],
    )


@pytest.fixture(scope="session")
def kafkite_broker(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedBroker]:
    """A kafkite broker for the whole test session, on a free loopback port."""
    # pytest loads this plugin in every suite that has kafkite installed: the broker only when asked for.
    from kafkite.embedded import EmbeddedBroker

    engine = str(pytestconfig.getini("kafkite_engine") or "memory")
    overrides = [str(line) for line in pytestconfig.getini("kafkite_overrides") if str(line).strip()]
    data_dir = tmp_path_factory.mktemp("kafkite") if engine == "file" else None
    with EmbeddedBroker(engine, data_dir=data_dir, overrides=overrides) as broker:
        yield broker


@pytest.fixture
def kafkite_bootstrap(kafkite_broker: EmbeddedBroker) -> str:
    """``host:port`` of the session's kafkite broker."""
    return kafkite_broker.bootstrap_servers


@pytest.fixture
def kafkite_topic(request: pytest.FixtureRequest) -> str:
    """A fresh topic name for this test: its own name, made legal, and a number unique to the session."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-.")[:180] or "topic"
    return f"{base}-{_SESSION}-{next(_counter)}"
