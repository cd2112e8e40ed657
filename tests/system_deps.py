"""What the test suite needs from the machine: ``make test`` runs this before the tests.

Run as root where apt-get is available, it installs whatever is missing (kcat, chromium and its driver,
PostgreSQL, nftables and iproute2 for the fault tests, fuse3 for the power-loss tests). Otherwise it says
which suites will be skipped and why. Under ``CI=true`` a missing tool is an error (exit status 1): the suite
turns skips into failures there, so say so before it starts.

``--no-install`` only reports. Exit status: 0, or 1 under CI=true when something is missing.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
VENV_BIN = Path(sys.executable).parent


@dataclass
class Need:
    what: str
    present: Callable[[], bool]
    suites: str
    apt: tuple[str, ...] = ()  # Debian packages that provide it
    fix: str = ""  # how to get it when apt cannot


def _which(*names: str) -> bool:
    return any(shutil.which(n) for n in names)


def _chromedriver() -> bool:
    return _which("chromedriver") or Path("/usr/lib/chromium/chromedriver").exists()


def _postgresql() -> bool:
    return bool(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or _which("initdb")


def _module(name: str) -> Callable[[], bool]:
    return lambda: importlib.util.find_spec(name) is not None


def _oci_cli() -> bool:
    return bool(shutil.which("oci", path=str(VENV_BIN)) or shutil.which("oci"))


def _mounts() -> bool:
    return os.geteuid() == 0 and _which("mount")


def _libfuse3() -> bool:
    found = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=False).stdout
    return "libfuse3.so" in found


NEEDS = [
    Need("kcat", lambda: _which("kcat", "kafkacat"), "the kcat tests", ("kcat",)),
    Need(
        "chromium",
        lambda: _which("chromium", "chromium-browser", "google-chrome"),
        "the web console's browser test",
        ("chromium",),
    ),
    Need("chromedriver", _chromedriver, "the web console's browser test", ("chromium-driver",)),
    Need("PostgreSQL (initdb)", _postgresql, "the PostgreSQL engine's tests", ("postgresql",)),
    Need(
        "root and mount",
        _mounts,
        "the disk-full test (it mounts a small file system)",
        fix="run the tests as root",
    ),
    Need(
        "root, ip and tc",
        lambda: os.geteuid() == 0 and _which("ip") and _which("tc"),
        "the fault tests (network namespaces)",
        ("iproute2",),
        fix="run the tests as root",
    ),
    Need("nft", lambda: _which("nft"), "the fault tests (network partitions)", ("nftables",)),
    Need(
        "FUSE 3 (fusermount3, libfuse3, /dev/fuse)",
        lambda: _which("fusermount3") and _libfuse3() and os.path.exists("/dev/fuse"),
        "the power-loss tests",
        ("fuse3",),
    ),
    Need("mfusepy", _module("mfusepy"), "the power-loss tests", fix="pip install 'kafkite[test]'"),
    Need("the oci CLI", _oci_cli, "the oci CLI tests", fix="pip install 'kafkite[test]'"),
    Need("matplotlib", _module("matplotlib"), "the --plot test", fix="pip install 'kafkite[test]'"),
    Need(
        "selenium", _module("selenium"), "the web console's browser test", fix="pip install 'kafkite[test]'"
    ),
    Need("psycopg", _module("psycopg"), "the PostgreSQL engine's tests", fix="pip install 'kafkite[test]'"),
]


def can_apt() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def apt_install(packages: list[str]) -> str:
    """'' on success, else the error."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"system_deps: apt-get install {' '.join(packages)}", flush=True)
    try:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, capture_output=True, timeout=900)
        res = subprocess.run(
            ["apt-get", "install", "-y", "-qq", *packages], env=env, capture_output=True, timeout=1800
        )
    except (OSError, subprocess.SubprocessError) as e:
        return str(e)
    return "" if res.returncode == 0 else res.stderr.decode(errors="replace")[-800:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-install", action="store_true", help="only report what is missing")
    args = ap.parse_args(argv)
    missing = [n for n in NEEDS if not n.present()]
    installable = sorted({p for n in missing for p in n.apt})
    if installable and not args.no_install and can_apt():
        error = apt_install(installable)
        if error:
            print(f"system_deps: apt-get install failed: {error}", file=sys.stderr)
        missing = [n for n in NEEDS if not n.present()]
    if not missing:
        return 0
    lines = []
    for n in missing:
        how = f"apt-get install {' '.join(n.apt)} (as root)" if n.apt else n.fix
        lines.append(f"  {n.what} is missing: {n.suites} will be skipped ({how})")
    if CI:
        print("system_deps: CI=true, where a skipped suite is a failure:", file=sys.stderr)
        print("\n".join(lines), file=sys.stderr)
        return 1
    print("system_deps: these suites will be skipped (pytest -rs lists them at the end):", file=sys.stderr)
    print("\n".join(lines), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
