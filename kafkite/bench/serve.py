"""A kafkite broker of the benchmark's own: a subprocess on a free loopback port with a temporary data dir."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from kafkite.config import DEFINITIONS


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


READY_LINE = "kafkite ready"


class BrokerStartError(RuntimeError):
    pass


def side_listener_keys() -> list[str]:
    """Broker settings that open listeners besides the Kafka one (``rest.listeners``, ...)."""

    return sorted(
        k
        for k in DEFINITIONS
        if k.endswith(".listeners") and k != "advertised.listeners" and DEFINITIONS[k].acts
    )


def _accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


class ServedBroker:
    """``with ServedBroker(["blackhole=true"]) as b: ... b.bootstrap``; stopped, its data removed, on exit."""

    def __init__(
        self,
        overrides: Sequence[str] = (),
        *,
        data_root: str | None = None,
        label: str = "kafkite",
        start_timeout: float = 30.0,
    ) -> None:
        self.overrides = list(overrides)
        self.data_root = data_root
        self.label = label
        self.start_timeout = start_timeout
        self.host = "127.0.0.1"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: str | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def log_path(self) -> Path:
        assert self._dir is not None
        return Path(self._dir) / "broker.log"

    def start(self) -> ServedBroker:
        self._dir = tempfile.mkdtemp(prefix="kafkite-bench-", dir=self.data_root)
        self.port = free_port(self.host)
        cmd = [sys.executable, "-m", "kafkite.cli", "serve"]
        settings = [
            f"listeners=PLAINTEXT://{self.host}:{self.port}",
            f"log.dirs={os.path.join(self._dir, 'data')}",
            # Side services (REST, STOMP...) would bind fixed ports and collide with a second broker.
            *(f"{key}=" for key in side_listener_keys()),
            "log.level=INFO",
            *self.overrides,
        ]
        for s in settings:
            cmd += ["--override", s]
        with open(self.log_path, "wb") as out:
            # A session of its own: Ctrl-C in the terminal stops the benchmark, which then stops the broker.
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        try:
            return self._wait_ready()
        except BaseException:
            self.stop()  # never leave a broker behind (Ctrl-C while it starts, a failed start)
            raise

    def _wait_ready(self) -> ServedBroker:
        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout
        listening_deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                tail = self.log_tail()
                raise BrokerStartError(f"the {self.label} broker exited at start-up:\n{tail}")
            # Ready once it logs so (its services are up too), or once it listens if it never says it is.
            if READY_LINE in self.log_tail(200) or (
                _accepts(self.host, self.port) and time.monotonic() > listening_deadline
            ):
                return self
            if time.monotonic() > deadline:
                raise BrokerStartError(f"the {self.label} broker was not ready within {self.start_timeout}s")
            time.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> ServedBroker:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def process_memory(pid: int) -> dict[str, float]:
    """Resident memory of a process in MB: {"rss_mb", "peak_rss_mb"} from /proc (empty elsewhere)."""
    out: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    out["rss_mb"] = int(line.split()[1]) / 1024
                elif line.startswith("VmHWM:"):
                    out["peak_rss_mb"] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks
    except (OSError, IndexError, ValueError):
        return None
