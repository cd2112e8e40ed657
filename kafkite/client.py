"""A small asyncio Kafka client on kafkite's own protocol package.

Used by the CLI (``kafkite group``), the benchmark and tools that talk to any Kafka-compatible broker. It
negotiates API versions per connection, pipelines requests, and routes to partition leaders and coordinators.
"""

from __future__ import annotations

import asyncio
import itertools
import struct
from typing import Any

from kafkite.protocol import framing
from kafkite.protocol.api_keys import ApiKey
from kafkite.protocol.errors import ErrorCode
from kafkite.protocol.messages import registry


class KafkaClientError(Exception):
    def __init__(self, code: int, message: str = "") -> None:
        try:
            name = ErrorCode(code).name
        except ValueError:
            name = f"error {code}"
        super().__init__(f"{name}{': ' + message if message else ''}")
        self.code = code


class BrokerConnection:
    """One TCP connection: requests pipelined, responses matched by correlation id (they arrive in order)."""

    def __init__(self, host: str, port: int, client_id: str = "kafkite") -> None:
        self.host, self.port, self.client_id = host, port, client_id
        self.reg = registry()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, tuple[int, int, asyncio.Future[dict[str, Any]]]] = {}
        self._corr = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self.versions: dict[int, tuple[int, int]] = {}

    async def connect(self, timeout: float = 10.0) -> None:
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), timeout
        )
        self._task = asyncio.create_task(self._read_loop())
        resp = await self.request(
            ApiKey.API_VERSIONS,
            {"client_software_name": "kafkite", "client_software_version": "1"},
            version=3,
        )
        if resp["error_code"]:
            raise KafkaClientError(resp["error_code"], "ApiVersions")
        self.versions = {a["api_key"]: (a["min_version"], a["max_version"]) for a in resp["api_keys"]}

    def version_for(self, api_key: int) -> int:
        api = self.reg.api(api_key)
        if api is None:
            raise KafkaClientError(ErrorCode.UNSUPPORTED_VERSION, f"kafkite has no spec for API {api_key}")
        lo, hi = self.versions.get(api_key, (-1, -1))
        best = min(hi, api.versions.hi)
        if best < max(lo, api.versions.lo):
            raise KafkaClientError(ErrorCode.UNSUPPORTED_VERSION, f"broker does not support {api.name}")
        return best

    async def request(self, api_key: int, body: dict[str, Any], version: int | None = None) -> dict[str, Any]:
        fut = self.send(api_key, body, version)
        assert fut is not None
        return await fut

    def send(
        self, api_key: int, body: dict[str, Any], version: int | None = None, *, expect_response: bool = True
    ) -> asyncio.Future[dict[str, Any]] | None:
        if self._writer is None:
            raise ConnectionError("not connected")
        v = self.version_for(api_key) if version is None else version
        corr = next(self._corr)
        frame = framing.encode_request(self.reg, api_key, v, corr, self.client_id, body)
        fut: asyncio.Future[dict[str, Any]] | None = None
        if expect_response:
            fut = asyncio.get_running_loop().create_future()
            self._pending[corr] = (api_key, v, fut)
        self._writer.write(frame)
        return fut

    async def drain(self) -> None:
        if self._writer is not None:
            await self._writer.drain()

    async def _read_loop(self) -> None:
        assert self._reader is not None
        try:
            while True:
                size = struct.unpack(">i", await self._reader.readexactly(4))[0]
                frame = await self._reader.readexactly(size)
                corr = struct.unpack_from(">i", frame, 0)[0]
                entry = self._pending.pop(corr, None)
                if entry is None:
                    continue
                api_key, v, fut = entry
                try:
                    _, body = framing.decode_response(self.reg, api_key, v, frame)
                except Exception as e:
                    if not fut.done():
                        fut.set_exception(e)
                    continue
                if not fut.done():
                    fut.set_result(body)
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as e:
            err = ConnectionError(f"connection to {self.host}:{self.port} lost: {e}")
        except asyncio.CancelledError:
            err = ConnectionError("connection closed")
        for _, _, fut in self._pending.values():
            if not fut.done():
                fut.set_exception(err)
        self._pending.clear()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (ConnectionError, OSError):
                pass
            self._writer = None
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass


def parse_bootstrap(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for item in bootstrap.split(","):
        item = item.strip()
        if "://" in item:
            item = item.split("://", 1)[1]
        host, _, port = item.rpartition(":")
        out.append((host or "localhost", int(port or 9092)))
    return out


class KafkaClient:
    """Connections to every broker of a cluster, found through Metadata."""

    def __init__(self, bootstrap: str, client_id: str = "kafkite") -> None:
        self.bootstrap = parse_bootstrap(bootstrap)
        self.client_id = client_id
        self.nodes: dict[int, tuple[str, int]] = {}
        self._conns: dict[int | tuple[str, int], BrokerConnection] = {}
        self.leaders: dict[tuple[str, int], int] = {}
        self.topics: dict[str, int] = {}

    async def __aenter__(self) -> KafkaClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        last: Exception | None = None
        for host, port in self.bootstrap:
            conn = BrokerConnection(host, port, self.client_id)
            try:
                await conn.connect()
            except (TimeoutError, OSError, KafkaClientError) as e:
                last = e
                continue
            self._conns[(host, port)] = conn
            await self.refresh_metadata()
            return
        raise ConnectionError(f"no bootstrap server reachable: {last}")

    async def any_connection(self) -> BrokerConnection:
        return next(iter(self._conns.values()))

    async def connection(self, node_id: int) -> BrokerConnection:
        conn = self._conns.get(node_id)
        if conn is None:
            host, port = self.nodes[node_id]
            for key, c in self._conns.items():
                if isinstance(key, tuple) and key == (host, port):
                    self._conns[node_id] = c
                    return c
            conn = BrokerConnection(host, port, self.client_id)
            await conn.connect()
            self._conns[node_id] = conn
        return conn

    async def request(self, api_key: int, body: dict[str, Any], *, node: int | None = None) -> dict[str, Any]:
        conn = await (self.connection(node) if node is not None else self.any_connection())
        return await conn.request(api_key, body)

    async def refresh_metadata(self, topics: list[str] | None = None) -> dict[str, Any]:
        conn = await self.any_connection()
        v = conn.version_for(ApiKey.METADATA)
        body: dict[str, Any] = {
            "topics": None if topics is None else [{"name": t} for t in topics],
            "allow_auto_topic_creation": False,
        }
        resp = await conn.request(ApiKey.METADATA, body, version=v)
        self.nodes = {b["node_id"]: (b["host"], b["port"]) for b in resp["brokers"]}
        for t in resp["topics"]:
            if t["error_code"] == 0:
                self.topics[t["name"]] = len(t["partitions"])
                for p in t["partitions"]:
                    self.leaders[(t["name"], p["partition_index"])] = p["leader_id"]
        return resp

    async def coordinator(self, key: str, key_type: int = 0) -> int:
        conn = await self.any_connection()
        v = conn.version_for(ApiKey.FIND_COORDINATOR)
        if v >= 4:
            resp = await conn.request(
                ApiKey.FIND_COORDINATOR, {"key_type": key_type, "coordinator_keys": [key]}, version=v
            )
            c = resp["coordinators"][0]
        else:
            c = await conn.request(ApiKey.FIND_COORDINATOR, {"key": key, "key_type": key_type}, version=v)
        if c["error_code"]:
            raise KafkaClientError(c["error_code"], f"FindCoordinator {key}")
        self.nodes[c["node_id"]] = (c["host"], c["port"])
        return int(c["node_id"])

    async def list_offsets(self, topic: str, partitions: list[int], timestamp: int) -> dict[int, int]:
        """Offsets per partition for a timestamp (-1 latest, -2 earliest), asking each leader."""
        by_leader: dict[int, list[int]] = {}
        for p in partitions:
            by_leader.setdefault(self.leaders.get((topic, p), -1), []).append(p)
        out: dict[int, int] = {}
        for leader, parts in by_leader.items():
            body = {
                "replica_id": -1,
                "isolation_level": 0,
                "topics": [
                    {
                        "name": topic,
                        "partitions": [{"partition_index": p, "timestamp": timestamp} for p in parts],
                    }
                ],
            }
            resp = await self.request(ApiKey.LIST_OFFSETS, body, node=leader if leader >= 0 else None)
            for t in resp["topics"]:
                for p in t["partitions"]:
                    if p["error_code"]:
                        raise KafkaClientError(p["error_code"], f"ListOffsets {topic}-{p['partition_index']}")
                    out[p["partition_index"]] = p["offset"]
        return out

    async def close(self) -> None:
        seen = set()
        for conn in self._conns.values():
            if id(conn) not in seen:
                seen.add(id(conn))
                await conn.close()
        self._conns.clear()
