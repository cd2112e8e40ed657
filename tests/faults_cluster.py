"""A 3-broker kafkite cluster on PostgreSQL, every process in a network namespace of its own, and the faults
a schedule injects into it (see ``faults_net`` for the network).

Hosts: ``db`` (PostgreSQL), ``b1``..``bN`` (brokers, node ids 1..N, each listening on its own address, port
9092), ``client`` (where the workloads' clients and the harness's probes run). Faults: SIGKILL and restart of
a broker, SIGSTOP/SIGCONT pauses, PostgreSQL restarts (immediate mode: every connection drops), a broker cut
off from the database, from the clients or from everything, and netem delay and loss. Every fault is
recorded in the history with its start and end.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faults_history import History
from faults_net import SUBNET, Network, in_ns
from helpers import BrokerProcess, api_versions_ok, check_no_tracebacks
from test_pg_support import PgServer

from kafkite.config import DEFINITIONS

BROKER_PORT = 9092
PG_PORT = 5432


class NsPgServer(PgServer):
    """PostgreSQL in the ``db`` namespace, listening on its address."""

    def __init__(self, net: Network, host: str = "db") -> None:
        super().__init__()
        self.net = net
        self.host = host
        self.options = ""

    def _run(self, cmd: list[str]) -> None:
        # Every PostgreSQL program runs inside the namespace (a restarted server stays there).
        if cmd and cmd[0].endswith(("pg_ctl",)):
            res = subprocess.run(
                [*self.net.exec_prefix(self.host), *self.as_user, *cmd], capture_output=True, timeout=120
            )
            if res.returncode != 0:
                log = ""
                if self.dir is not None and (self.dir / "server.log").exists():
                    log = (self.dir / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(
                    f"{cmd} failed ({res.returncode}): {res.stderr.decode(errors='replace')}{log}"
                )
            return
        super()._run(cmd)

    def start(self) -> None:
        # initdb as PgServer does, then the server on the namespace's address.
        import pwd
        import tempfile

        self.bin = self.find_bin()
        if self.bin is None:
            reason = self.install()
            if reason:
                raise RuntimeError(reason)
            self.bin = self.find_bin()
            assert self.bin is not None
        self.dir = Path(tempfile.mkdtemp(prefix="kafkite-faults-pg-"))
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
                user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        data = self.dir / "data"
        super()._run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )
        with open(data / "pg_hba.conf", "a") as f:
            f.write(f"host all all {SUBNET}.0/24 trust\n")
        self.port = PG_PORT
        ip = self.net.ip(self.host)
        options = (
            f"-p {PG_PORT} -k {self.dir} -c listen_addresses={ip} -c max_connections=300"
            # Commits are durable against a server crash (a restart in immediate mode), as kafkite assumes; no
            # fsync: the machine itself does not lose power here.
            " -c fsync=off -c synchronous_commit=on -c full_page_writes=off"
        )
        self.options = options
        log = str(self.dir / "server.log")
        self._run(
            [str(self.bin / "pg_ctl"), "-D", str(data), "-l", log, "-o", options, "-w", "-t", "60", "start"]
        )
        self.process_started = True

    def restart(self, mode: str = "immediate") -> None:
        assert self.bin is not None and self.dir is not None
        log = str(self.dir / "server.log")
        data = str(self.dir / "data")
        ctl = [str(self.bin / "pg_ctl"), "-D", data, "-l", log]
        try:
            self._run([*ctl, "-m", mode, "-w", "-t", "60", "restart"])
        except RuntimeError:
            # On a loaded machine pg_ctl may give up waiting for the shutdown: once it is down, start it.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    self._run([*ctl, "status"])
                except RuntimeError:
                    break  # not running
                time.sleep(0.5)
            self._run([*ctl, "-o", self.options, "-w", "-t", "60", "start"])

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@{self.net.ip(self.host)}:{PG_PORT}/{dbname}"

    def new_database(self, prefix: str = "kafkite") -> str:
        return in_ns(self.net.ns("client"), lambda: PgServer.new_database(self, prefix), timeout=60)


class NsBroker(BrokerProcess):
    """``kafkite serve`` inside a host's namespace, listening on the host's address."""

    def __init__(self, net: Network, host: str, data_dir: Path, log_path: Path, overrides: list[str]) -> None:
        super().__init__(data_dir, log_path, overrides, port=BROKER_PORT)
        self.net = net
        self.host = host
        self.paused = False

    @property
    def bootstrap(self) -> str:
        return f"{self.net.ip(self.host)}:{BROKER_PORT}"

    def command(self, extra: Iterable[str] = ()) -> list[str]:
        import sys

        cmd = [*self.net.exec_prefix(self.host), sys.executable, "-m", "kafkite.cli", "serve"]
        settings = [f"log.dirs={self.data_dir}", f"listeners=PLAINTEXT://{self.bootstrap}"]
        settings += [
            f"{k}=" for k in sorted(DEFINITIONS) if k.endswith(".listeners") and k != "advertised.listeners"
        ]
        settings += [*self.overrides, *extra]
        for s in settings:
            cmd += ["--override", s]
        return cmd

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        client = self.net.ns("client")
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker {self.host} exited with {self.proc.returncode}:\n{self.tail()}")
            if in_ns(client, lambda: api_versions_ok(self.bootstrap, timeout=1.0), timeout=10):
                return
            time.sleep(0.1)
        raise RuntimeError(f"broker {self.host} not ready after {timeout}s:\n{self.tail()}")

    def pause(self) -> None:
        if self.running and not self.paused:
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.paused:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            self.paused = False


@dataclass
class Timing:
    """Short timeouts, so faults outlive them quickly."""

    heartbeat_ms: int = 300
    session_timeout_ms: int = 2000  # cluster membership
    group_session_ms: int = 3000  # consumers


class FaultCluster:
    def __init__(
        self,
        root: Path,
        history: History,
        *,
        brokers: int = 3,
        overrides: Iterable[str] = (),
        timing: Timing | None = None,
    ) -> None:
        self.root = root
        self.history = history
        self.timing = timing or Timing()
        self.names = [f"b{i}" for i in range(1, brokers + 1)]
        self.net = Network(["db", *self.names, "client"])
        self.pg: NsPgServer | None = None
        self.brokers: dict[str, NsBroker] = {}
        self.extra = list(overrides)
        self.dsn = ""

    @property
    def client_ns(self) -> str:
        return self.net.ns("client")

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers.values())

    def start(self) -> FaultCluster:
        self.net.create()
        try:
            self.pg = NsPgServer(self.net)
            self.pg.start()
            self.dsn = self.pg.new_database("faults")
            t = self.timing
            for i, name in enumerate(self.names, start=1):
                b = NsBroker(
                    self.net,
                    name,
                    self.root / f"data-{name}",
                    self.root / f"{name}.log",
                    [
                        f"storage.engine={self.dsn}",
                        f"node.id={i}",
                        f"cluster.heartbeat.interval.ms={t.heartbeat_ms}",
                        f"cluster.session.timeout.ms={t.session_timeout_ms}",
                        "group.min.session.timeout.ms=1000",
                        "group.initial.rebalance.delay.ms=0",
                        "transaction.abort.timed.out.transaction.cleanup.interval.ms=1000",
                        *self.extra,
                    ],
                )
                self.brokers[name] = b
                b.start()
        except BaseException:
            self.stop(check=False)
            raise
        return self

    def stop(self, *, check: bool = True) -> None:
        if self.net.created:
            self.net.heal()
        for b in self.brokers.values():
            b.resume()
            with contextlib.suppress(Exception):
                b.stop(timeout=20)
            if b.running:
                b.kill9()
        if self.pg is not None:
            with contextlib.suppress(Exception):
                self.pg.stop()
        self.net.destroy()
        if check:
            for b in self.brokers.values():
                check_no_tracebacks(b)

    # faults ------------------------------------------------------------------------------------------------

    def fault(self, kind: str, host: str, **detail: Any) -> dict[str, Any]:
        return self.history.add("fault", kind=kind, host=host, t_start=self.history.now(), **detail)

    def end(self, fault: dict[str, Any]) -> None:
        fault["t_end"] = self.history.now()

    def kill(self, name: str) -> dict[str, Any]:
        f = self.fault("kill", name)
        self.brokers[name].resume()
        self.brokers[name].kill9()
        return f

    def restart(self, name: str, fault: dict[str, Any] | None = None) -> None:
        b = self.brokers[name]
        if not b.running:
            b.start()
        if fault is not None:
            self.end(fault)

    def pause(self, name: str) -> dict[str, Any]:
        f = self.fault("pause", name)
        self.brokers[name].pause()
        return f

    def resume(self, name: str, fault: dict[str, Any]) -> None:
        self.brokers[name].resume()
        self.end(fault)

    def pg_restart(self) -> None:
        f = self.fault("pg-restart", "db")
        assert self.pg is not None
        self.pg.restart("immediate")
        self.end(f)

    def isolate_from_db(self, name: str) -> dict[str, Any]:
        f = self.fault("isolate-db", name)
        self.net.partition(name, "db")
        return f

    def isolate_from_clients(self, name: str) -> dict[str, Any]:
        f = self.fault("isolate-clients", name)
        self.net.partition(name, "client")
        return f

    def isolate(self, name: str) -> dict[str, Any]:
        f = self.fault("isolate", name)
        self.net.isolate(name)
        return f

    def netem(self, name: str, **kw: Any) -> dict[str, Any]:
        f = self.fault("netem", name, **kw)
        f["how"] = self.net.netem(name, **kw)
        return f

    def heal(self, *open_faults: dict[str, Any]) -> None:
        self.net.heal()
        for b in self.brokers.values():
            b.resume()
        for f in open_faults:
            if "t_end" not in f:
                self.end(f)

    def ensure_running(self) -> None:
        for name, b in self.brokers.items():
            b.resume()
            if not b.running:
                b.start()
                self.history.add("restart", host=name)


# ------------------------------------------------------------------------------------------------ schedules

Schedule = Callable[[FaultCluster, random.Random], None]


def _hold(seconds: float) -> None:
    time.sleep(seconds)


def cycle_kill(c: FaultCluster, rng: random.Random) -> None:
    name = rng.choice(c.names)
    f = c.kill(name)
    _hold(rng.uniform(0.5, 2.0))
    c.restart(name, f)


def cycle_pause(c: FaultCluster, rng: random.Random) -> None:
    """A pause longer than the cluster's and the consumers' session timeouts."""
    name = rng.choice(c.names)
    f = c.pause(name)
    _hold(max(c.timing.session_timeout_ms, c.timing.group_session_ms) / 1000 + rng.uniform(1.0, 3.0))
    c.resume(name, f)


def cycle_pg_restart(c: FaultCluster, rng: random.Random) -> None:
    c.pg_restart()


def cycle_partition_db(c: FaultCluster, rng: random.Random) -> None:
    """One broker cut off from the database for longer than the cluster session timeout."""
    name = rng.choice(c.names)
    f = c.isolate_from_db(name)
    _hold(c.timing.session_timeout_ms / 1000 + rng.uniform(1.0, 3.0))
    c.heal(f)


def cycle_partition_clients(c: FaultCluster, rng: random.Random) -> None:
    name = rng.choice(c.names)
    f = c.isolate_from_clients(name)
    _hold(rng.uniform(2.0, 5.0))
    c.heal(f)


def cycle_netem(c: FaultCluster, rng: random.Random) -> None:
    """Delay, jitter and loss on one broker's or the database's packets."""
    name = rng.choice([*c.names, "db"])
    f = c.netem(name, delay_ms=rng.choice([50, 100, 200]), jitter_ms=30, loss_pct=rng.choice([5, 10, 20]))
    _hold(rng.uniform(2.0, 5.0))
    c.heal(f)


def cycle_mixed(c: FaultCluster, rng: random.Random) -> None:
    rng.choice(
        [cycle_kill, cycle_pause, cycle_pg_restart, cycle_partition_db, cycle_partition_clients, cycle_netem]
    )(c, rng)


SCHEDULES: dict[str, Schedule] = {
    "kill": cycle_kill,
    "pause": cycle_pause,
    "pg-restart": cycle_pg_restart,
    "partition-db": cycle_partition_db,
    "partition-clients": cycle_partition_clients,
    "netem": cycle_netem,
    "mixed": cycle_mixed,
}
