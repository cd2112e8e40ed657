"""The built distribution, installed as a user would: ``python -m build`` of this checkout (an sdist, and a
wheel built from that sdist), and fresh virtual environments outside the checkout with the wheel installed.

Building and installing take a while, so the results are kept under the system's temporary directory, keyed on
a digest of every file that goes into the distribution: a changed source builds and installs afresh, an
unchanged one reuses them. A lock file keeps two test runs from building the same one at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE_ROOT = Path(tempfile.gettempdir()) / f"kafkite-wheel-check-{os.getuid()}"
SOURCES = ["pyproject.toml", "setup.py", "README.md", "kafkite", "protocol_specs"]
KEEP_SECONDS = 3600  # another digest's build unused this long is removed (about 200 MB each)
# What the scratch project's tests need beside kafkite, at the versions this suite runs with.
PLUGIN_TEST_PACKAGES = ["pytest", "confluent-kafka", "aiokafka"]
BUILD_TIMEOUT = 600
INSTALL_TIMEOUT = 900


class DistError(RuntimeError):
    pass


def source_digest() -> str:
    h = hashlib.sha256()
    for name in SOURCES:
        root = REPO / name
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in paths:
            if "__pycache__" in p.parts or p.suffix in (".pyc", ".pyo"):
                continue
            h.update(str(p.relative_to(REPO)).encode() + b"\0")
            h.update(p.read_bytes() + b"\0")
    return h.hexdigest()[:20]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _run(cmd: list[str], timeout: float, cwd: Path | None = None) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "KAFKITE_SPECS_DIR")}
    try:
        res = subprocess.run(
            cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as e:
        raise DistError(f"{' '.join(cmd)} did not finish within {timeout:g}s") from e
    if res.returncode != 0:
        raise DistError(
            f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        )


def _prune(keep: Path) -> None:
    """Remove other digests' builds not used for a while."""
    if not CACHE_ROOT.is_dir():
        return
    now = time.time()
    for d in CACHE_ROOT.iterdir():
        if d.is_dir() and d != keep and now - d.stat().st_mtime > KEEP_SECONDS:
            shutil.rmtree(d, ignore_errors=True)


class Dist:
    """This checkout's sdist and wheel, and virtual environments with the wheel installed."""

    def __init__(self) -> None:
        self.digest = source_digest()
        self.root = CACHE_ROOT / self.digest
        _prune(self.root)

    def _done(self, path: Path) -> bool:
        return (path / ".complete").exists()

    @property
    def dist_dir(self) -> Path:
        return self.root / "dist"

    def build(self) -> tuple[Path, Path]:
        """(sdist, wheel): ``python -m build``, which builds the wheel from the sdist."""
        with _locked(self.root / ".lock-dist"):
            if not self._done(self.dist_dir):
                shutil.rmtree(self.dist_dir, ignore_errors=True)
                out = self.root / f"dist-{os.getpid()}"
                shutil.rmtree(out, ignore_errors=True)
                _run(
                    [sys.executable, "-m", "build", "--outdir", str(out), str(REPO)], BUILD_TIMEOUT, cwd=REPO
                )
                (out / ".complete").touch()
                out.rename(self.dist_dir)
        os.utime(self.root)
        sdists = sorted(self.dist_dir.glob("kafkite-*.tar.gz"))
        wheels = sorted(self.dist_dir.glob("kafkite-*.whl"))
        if len(sdists) != 1 or len(wheels) != 1:
            raise DistError(f"expected one sdist and one wheel in {self.dist_dir}, found {sdists + wheels}")
        return sdists[0], wheels[0]

    def venv(self, name: str, extra: list[str] | None = None) -> Path:
        """A virtual environment (outside the checkout) with the wheel and ``extra`` packages installed."""
        _, wheel = self.build()
        # The Python and the extra packages' versions are part of what makes a cached environment current.
        key = hashlib.sha256(repr((sys.version, sorted(extra or []))).encode()).hexdigest()[:10]
        target = self.root / f"venv-{name}-{key}"
        with _locked(self.root / f".lock-{name}"):
            if not self._done(target):
                shutil.rmtree(target, ignore_errors=True)
                _run([sys.executable, "-m", "venv", str(target)], 300)
                python = target / "bin" / "python"
                _run([str(python), "-m", "pip", "install", "-q", str(wheel), *(extra or [])], INSTALL_TIMEOUT)
                (target / ".complete").touch()
        return target


def pinned(packages: list[str]) -> list[str]:
    """``name==version`` of each package as this test environment has it."""
    return [f"{p}=={version(p)}" for p in packages]
