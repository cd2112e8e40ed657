"""No silent gaps: under ``CI=true`` a suite skipped for a missing tool fails instead, and ``make test``'s
preflight (tests/system_deps.py) says what is missing before the suite starts.

kcat stays installed: these runs see a PATH without it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

KCAT_TESTS = [
    "tests/test_security_sasl_tls.py::test_kcat_over_ssl",  # skipped by a skipif mark
    "tests/test_cli_tools.py::test_same_output_as_kcat_for_the_same_format",  # skipped by the kcat fixture
]


def env_without_kcat(ci: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
    env["PATH"] = str(Path(sys.executable).parent)  # this environment's scripts: no kcat among them
    if ci:
        env["CI"] = "true"
    return env


def run_pytest(ci: bool) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"]
    return subprocess.run(
        [*cmd, *KCAT_TESTS],
        cwd=REPO,
        env=env_without_kcat(ci),
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def test_without_kcat_the_kcat_tests_are_skipped_and_listed() -> None:
    res = run_pytest(ci=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 skipped" in res.stdout, res.stdout
    assert "SKIPPED" in res.stdout and "kcat is not installed" in res.stdout  # the -rs summary


def test_without_kcat_under_ci_the_kcat_tests_fail() -> None:
    res = run_pytest(ci=True)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "skipped" not in res.stdout.splitlines()[-1], res.stdout
    assert res.stdout.count("skipped under CI=true, where every suite must run") == 2, res.stdout
    assert "kcat is not installed" in res.stdout


def test_opt_in_tests_may_still_skip_under_ci() -> None:
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"]
    env = env_without_kcat(ci=True)
    env.pop("KAFKITE_OTHER_BOOTSTRAP", None)
    res = subprocess.run(
        [*cmd, "tests/test_cli_tools.py::test_errors_are_reported_not_raised[other]"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 0 and "1 skipped" in res.stdout, res.stdout + res.stderr


def run_system_deps(ci: bool) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "tests" / "system_deps.py"), "--no-install"],
        env=env_without_kcat(ci),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("ci", [False, True])
def test_preflight_names_what_is_missing(ci: bool) -> None:
    res = run_system_deps(ci)
    assert res.returncode == (1 if ci else 0), res.stderr
    assert "kcat is missing: the kcat tests will be skipped (apt-get install kcat (as root))" in res.stderr
    if ci:
        assert "CI=true, where a skipped suite is a failure" in res.stderr
