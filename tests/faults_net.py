"""Network namespaces for fault tests: one private network per run, hosts on it, and the faults between them.

``Network`` creates a hub namespace holding a bridge and one namespace per host (the database, each broker,
the clients), each joined to the bridge by a veth pair, with addresses from 198.18.0.0/24 (the range set
aside for network testing). Everything lives in namespaces of this run: the root namespace's interfaces and
routes are never touched, and traffic never leaves the machine. Namespace names carry the creating process's
id, so parallel runs do not collide, and a run finding namespaces of a process that is gone removes them.

Faults: ``partition(a, b)`` drops every packet between two hosts (nftables rules in both namespaces: silence,
as a cut cable, not refusals); ``netem(host, ...)`` delays, jitters and loses the host's packets (tc netem on
its interface, or where the kernel lacks netem a tbf rate limit and random nftables drops); ``heal()``
removes them all. ``in_ns(host, fn)`` runs ``fn`` in a thread that entered the
host's namespace: sockets it opens (and the threads librdkafka starts from it) stay there.

Needs root, ``ip`` (iproute2, with ``tc``) and ``nft`` (nftables); ``ensure_tools()`` installs what is missing
with apt-get.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
PREFIX = "kfn"
SUBNET = "198.18.0"
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


class NetError(RuntimeError):
    pass


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise NetError(f"{' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def missing_tools() -> list[str]:
    return [t for t in ("ip", "tc", "nft") if shutil.which(t) is None]


def ensure_tools() -> str:
    """Install iproute2 and nftables when missing (root); '' when all is there, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not missing_tools():
        return ""
    if shutil.which("apt-get") is None:
        return f"missing {missing_tools()} and no apt-get to install them"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for attempt in range(2):
        res = subprocess.run(
            ["apt-get", "install", "-y", "-qq", "iproute2", "nftables"],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if res.returncode == 0 and not missing_tools():
            return ""
        if attempt == 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
    return f"cannot install iproute2/nftables: {res.stderr[-500:]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> list[str]:
    """Delete namespaces left by runs whose process is gone (killed before it could clean up)."""
    gone = []
    out = sh("ip", "netns", "list", check=False).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(PREFIX):
            continue
        try:
            pid = int(name[len(PREFIX) :].split("-")[0])
        except ValueError:
            continue
        if not _pid_alive(pid):
            kill_processes_in(name)
            sh("ip", "netns", "del", name, check=False)
            gone.append(name)
    return gone


def kill_processes_in(ns: str) -> None:
    res = sh("ip", "netns", "pids", ns, check=False)
    for pid in res.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), 9)


def enter(ns: str) -> None:
    """Move the calling thread into network namespace ``ns``."""
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise NetError(f"setns({ns}) failed: errno {ctypes.get_errno()}")
    finally:
        os.close(fd)


def in_ns(ns: str, fn: Callable[[], T], *, timeout: float | None = None) -> T:
    """Run ``fn`` in a fresh thread inside namespace ``ns`` and return its result (or raise its error)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            enter(ns)
            box["result"] = fn()
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=run, name=f"in-{ns}", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"{fn!r} in {ns} did not finish in {timeout}s")
    if "error" in box:
        raise box["error"]
    result: T = box["result"]
    return result


def thread_in_ns(ns: str, target: Callable[[], None], name: str) -> threading.Thread:
    """A started thread that enters ``ns`` and then runs ``target``."""

    def run() -> None:
        enter(ns)
        target()

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    return t


class Network:
    """A private network of named hosts, each in a namespace of its own (see the module doc)."""

    def __init__(self, hosts: list[str]) -> None:
        self.run_id = f"{PREFIX}{os.getpid()}-{random.randrange(16**4):04x}"
        self.hub = f"{self.run_id}-hub"
        self.hosts = list(hosts)
        self.ips = {h: f"{SUBNET}.{10 + i}" for i, h in enumerate(self.hosts)}
        self.created: list[str] = []
        self.partitions: set[frozenset[str]] = set()
        self.shaped: set[str] = set()

    def ns(self, host: str) -> str:
        return f"{self.run_id}-{host}"

    def ip(self, host: str) -> str:
        return self.ips[host]

    def exec_prefix(self, host: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns(host)]

    def create(self) -> Network:
        sweep_stale()
        try:
            self._add_ns(self.hub)
            sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
            sh("ip", "-n", self.hub, "link", "set", "br0", "up")
            for i, host in enumerate(self.hosts):
                ns = self.ns(host)
                self._add_ns(ns)
                port = f"v{i}"
                sh(
                    "ip",
                    "-n",
                    self.hub,
                    "link",
                    "add",
                    port,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    ns,
                )
                sh("ip", "-n", self.hub, "link", "set", port, "master", "br0", "up")
                sh("ip", "-n", ns, "addr", "add", f"{self.ips[host]}/24", "dev", "eth0")
                sh("ip", "-n", ns, "link", "set", "eth0", "up")
                sh("ip", "-n", ns, "link", "set", "lo", "up")
                sh(
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "nft",
                    "add table inet kf; "
                    "add chain inet kf input { type filter hook input priority 0; policy accept; }; "
                    "add chain inet kf output { type filter hook output priority 0; policy accept; }",
                )
        except BaseException:
            self.destroy()
            raise
        return self

    def _add_ns(self, ns: str) -> None:
        sh("ip", "netns", "add", ns)
        self.created.append(ns)

    def destroy(self) -> None:
        """Kill whatever still runs in the namespaces and delete them (their interfaces go with them)."""
        for ns in reversed(self.created):
            kill_processes_in(ns)
        for ns in reversed(self.created):
            sh("ip", "netns", "del", ns, check=False)
        self.created = []

    def __enter__(self) -> Network:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # faults ------------------------------------------------------------------------------------------------

    def _nft(self, host: str, script: str) -> None:
        sh("ip", "netns", "exec", self.ns(host), "nft", script)

    def partition(self, a: str, b: str) -> None:
        """Drop every packet between hosts ``a`` and ``b`` (both ways, silently)."""
        for x, y in ((a, b), (b, a)):
            peer = self.ips[y]
            self._nft(
                x,
                f"add rule inet kf input ip saddr {peer} drop; add rule inet kf output ip daddr {peer} drop",
            )
        self.partitions.add(frozenset((a, b)))

    def isolate(self, host: str) -> None:
        """Cut ``host`` off from every other host."""
        for other in self.hosts:
            if other != host and frozenset((host, other)) not in self.partitions:
                self.partition(host, other)

    def netem(self, host: str, *, delay_ms: int = 0, jitter_ms: int = 0, loss_pct: float = 0.0) -> str:
        """Delay (with jitter) and lose the packets ``host`` sends; returns how ("netem", or "tbf+nft").

        Where the kernel has no netem qdisc (sch_netem is a module some kernels lack), the delay is made by a
        slow link instead (tbf: a rate limit whose queue delays packets, up to ``delay_ms``) and the loss by
        an nftables rule dropping that share of the packets at random."""
        ns = self.ns(host)
        args = ["ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", "eth0", "root", "netem"]
        if delay_ms:
            args += ["delay", f"{delay_ms}ms"] + ([f"{jitter_ms}ms"] if jitter_ms else [])
        if loss_pct:
            args += ["loss", f"{loss_pct}%"]
        self.shaped.add(host)
        res = sh(*args, check=False)
        if res.returncode == 0:
            return "netem"
        if "unknown" not in res.stderr.lower():
            raise NetError(f"{' '.join(args)} failed: {res.stderr.strip()}")
        if delay_ms:
            sh(
                "ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf",
                "rate", "2mbit", "burst", "16kb", "latency", f"{delay_ms + jitter_ms}ms",
            )  # fmt: skip
        if loss_pct:
            share = max(1, round(loss_pct))
            self._nft(host, f"add rule inet kf output numgen random mod 100 < {share} drop")
        return "tbf+nft"

    def heal(self) -> None:
        """Remove every partition and every netem qdisc."""
        for host in self.hosts:
            self._nft(host, "flush chain inet kf input; flush chain inet kf output")
        for host in self.shaped:
            sh("ip", "netns", "exec", self.ns(host), "tc", "qdisc", "del", "dev", "eth0", "root", check=False)
        self.partitions.clear()
        self.shaped.clear()

    def describe(self) -> str:
        parts = sorted("-".join(sorted(p)) for p in self.partitions)
        return f"partitions={parts} shaped={sorted(self.shaped)}"


@contextlib.contextmanager
def network(hosts: list[str]) -> Iterator[Network]:
    net = Network(hosts)
    net.create()
    try:
        yield net
    finally:
        net.destroy()
