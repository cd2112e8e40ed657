"""A small asyncio Kafka client on kafkite's own protocol package.

Used by the CLI (``kafkite group``, ``kafkite migrate``), the benchmark and tools that talk to any
Kafka-compatible broker. It negotiates API versions per connection, pipelines requests, and routes to
partition leaders and coordinators. Connections may use TLS (stdlib ``ssl``) and SASL (PLAIN,
SCRAM-SHA-256/512), set up from Kafka client properties with ``ClientSecurity.from_properties``.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import ssl
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from kafkite.protocol import framing
from kafkite.protocol.api_keys import ApiKey
from kafkite.protocol.errors import ErrorCode
from kafkite.protocol.messages import registry
from kafkite.security.scram import ScramClient, ScramError

if TYPE_CHECKING:
    from kafkite.protocol.records import RecordInput


class KafkaClientError(Exception):
    def __init__(self, code: int, message: str = "") -> None:
        try:
            name = ErrorCode(code).name
        except ValueError:
            name = f"error {code}"
        super().__init__(f"{name}{': ' + message if message else ''}")
        self.code = code


# ---------------------------------------------------------------------------------------------- security

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_JAAS_OPTION = re.compile(r'(\w+)\s*=\s*"((?:[^"\\]|\\.)*)"')


@dataclass
class ClientSecurity:
    """How a client connects: TLS and SASL settings (Kafka's ``security.protocol`` and friends)."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    username: str = ""
    password: str = field(default="", repr=False)
    ssl_context: ssl.SSLContext | None = None

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @classmethod
    def from_properties(cls, props: dict[str, str]) -> ClientSecurity:
        """Settings from client properties, in librdkafka or Java spelling.

        Understood: ``security.protocol``; ``sasl.mechanism`` (or ``sasl.mechanisms``); ``sasl.username`` and
        ``sasl.password`` or a ``sasl.jaas.config`` with ``username="..." password="..."``;
        ``ssl.ca.location`` (PEM file or directory), ``ssl.certificate.location``, ``ssl.key.location``,
        ``ssl.key.password``, ``ssl.endpoint.identification.algorithm`` (empty or ``none``: no host name
        check) and ``enable.ssl.certificate.verification``. Raises ValueError for anything it cannot honour.
        """
        protocol = props.get("security.protocol", "PLAINTEXT").strip().upper()
        if protocol not in SECURITY_PROTOCOLS:
            raise ValueError(
                f"security.protocol must be one of {', '.join(SECURITY_PROTOCOLS)}, got {protocol}"
            )
        mechanism = (props.get("sasl.mechanism") or props.get("sasl.mechanisms") or "PLAIN").strip().upper()
        if protocol.startswith("SASL") and mechanism not in SASL_MECHANISMS:
            raise ValueError(f"sasl.mechanism must be one of {', '.join(SASL_MECHANISMS)}, got {mechanism}")
        username = props.get("sasl.username", "")
        password = props.get("sasl.password", "")
        jaas = props.get("sasl.jaas.config", "")
        if jaas:
            opts = {k: v.replace('\\"', '"') for k, v in _JAAS_OPTION.findall(jaas)}
            username = opts.get("username", username)
            password = opts.get("password", password)
        if protocol.startswith("SASL") and not username:
            raise ValueError("SASL needs sasl.username (or a sasl.jaas.config with username=...)")
        ctx: ssl.SSLContext | None = None
        if protocol in ("SSL", "SASL_SSL"):
            ctx = ssl.create_default_context()
            ca = props.get("ssl.ca.location", "").strip()
            if ca:
                import os

                if os.path.isdir(ca):
                    ctx.load_verify_locations(capath=ca)
                else:
                    ctx.load_verify_locations(cafile=ca)
            cert = props.get("ssl.certificate.location", "").strip()
            if cert:
                ctx.load_cert_chain(
                    cert,
                    props.get("ssl.key.location", "").strip() or None,
                    props.get("ssl.key.password") or None,
                )
            algo = props.get("ssl.endpoint.identification.algorithm", "https").strip().lower()
            if algo in ("", "none"):
                ctx.check_hostname = False
            if props.get("enable.ssl.certificate.verification", "true").strip().lower() == "false":
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
        return cls(protocol, mechanism, username, password, ctx)


class FetchedPartition(NamedTuple):
    """One partition of a Fetch response."""

    error_code: int
    high_watermark: int
    last_stable_offset: int
    log_start_offset: int
    aborted: list[tuple[int, int]]  # (producer id, first offset) of aborted transactions in the range
    records: bytes
    throttle_time_ms: int


class ProducedPartition(NamedTuple):
    """One partition of a Produce response."""

    error_code: int
    base_offset: int
    error_message: str | None
    throttle_time_ms: int


class BrokerConnection:
    """One TCP connection: requests pipelined, responses matched by correlation id (they arrive in order)."""

    def __init__(
        self, host: str, port: int, client_id: str = "kafkite", *, security: ClientSecurity | None = None
    ) -> None:
        self.host, self.port, self.client_id = host, port, client_id
        self.security = security or ClientSecurity()
        self.reg = registry()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, tuple[int, int, asyncio.Future[dict[str, Any]]]] = {}
        self._corr = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self.versions: dict[int, tuple[int, int]] = {}

    @property
    def closed(self) -> bool:
        """True once the connection is closed or lost (a new one must be opened)."""
        return self._writer is None or self._task is None or self._task.done()

    async def connect(self, timeout: float = 10.0) -> None:
        sec = self.security
        if sec.uses_tls:
            ctx = sec.ssl_context or ssl.create_default_context()
            opened = asyncio.open_connection(
                self.host, self.port, ssl=ctx, server_hostname=self.host if ctx.check_hostname else None
            )
        else:
            opened = asyncio.open_connection(self.host, self.port)
        self._reader, self._writer = await asyncio.wait_for(opened, timeout)
        self._task = asyncio.create_task(self._read_loop())
        resp = await self.request(
            ApiKey.API_VERSIONS,
            {"client_software_name": "kafkite", "client_software_version": "1"},
            version=3,
        )
        if resp["error_code"]:
            raise KafkaClientError(resp["error_code"], "ApiVersions")
        self.versions = {a["api_key"]: (a["min_version"], a["max_version"]) for a in resp["api_keys"]}
        if sec.uses_sasl:
            await asyncio.wait_for(self._authenticate(), timeout)

    async def _authenticate(self) -> None:
        sec = self.security
        hs = await self.request(ApiKey.SASL_HANDSHAKE, {"mechanism": sec.sasl_mechanism}, version=1)
        if hs["error_code"]:
            raise KafkaClientError(
                hs["error_code"], f"SASL {sec.sasl_mechanism} (broker offers {', '.join(hs['mechanisms'])})"
            )
        if sec.sasl_mechanism == "PLAIN":
            await self._sasl_step(b"\x00" + sec.username.encode() + b"\x00" + sec.password.encode())
            return
        scram = ScramClient(sec.sasl_mechanism, sec.username, sec.password)
        try:
            server_first = await self._sasl_step(scram.first())
            server_final = await self._sasl_step(scram.final(server_first))
            verified = scram.verify(server_final)
        except ScramError as e:
            raise KafkaClientError(ErrorCode.SASL_AUTHENTICATION_FAILED, f"SCRAM: {e}") from None
        if not verified:
            raise KafkaClientError(ErrorCode.SASL_AUTHENTICATION_FAILED, "SCRAM: server signature mismatch")

    async def _sasl_step(self, data: bytes) -> bytes:
        resp = await self.request(ApiKey.SASL_AUTHENTICATE, {"auth_bytes": data})
        if resp["error_code"]:
            raise KafkaClientError(resp["error_code"], resp.get("error_message") or "SASL authentication")
        return bytes(resp["auth_bytes"] or b"")

    def supports(self, api_key: int) -> bool:
        """Whether both this client and the broker speak ``api_key`` at a common version."""
        try:
            self.version_for(api_key)
        except KafkaClientError:
            return False
        return True

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
        if self._writer is None or (self._task is not None and self._task.done()):
            raise ConnectionError(f"not connected to {self.host}:{self.port}")
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
        except Exception as e:  # a frame no Kafka broker sends (a negative size): the connection is unusable
            err = ConnectionError(f"connection to {self.host}:{self.port} unusable: {e}")
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

    def __init__(
        self, bootstrap: str, client_id: str = "kafkite", *, security: ClientSecurity | None = None
    ) -> None:
        self.bootstrap = parse_bootstrap(bootstrap)
        self.client_id = client_id
        self.security = security or ClientSecurity()
        self.internal_topics: set[str] = set()
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
            conn = BrokerConnection(host, port, self.client_id, security=self.security)
            try:
                await conn.connect()
            except (TimeoutError, OSError, KafkaClientError) as e:
                await conn.close()
                last = e
                continue
            self._conns[(host, port)] = conn
            await self.refresh_metadata()
            return
        if isinstance(last, KafkaClientError) and last.code == ErrorCode.SASL_AUTHENTICATION_FAILED:
            raise last  # the broker answered: the credentials are wrong, not the address
        raise ConnectionError(f"no bootstrap server reachable: {last}")

    async def any_connection(self) -> BrokerConnection:
        for conn in self._conns.values():
            if not conn.closed:
                return conn
        await self._drop_closed()
        await self.connect()
        return next(iter(self._conns.values()))

    async def _drop_closed(self) -> None:
        for key, conn in list(self._conns.items()):
            if conn.closed:
                del self._conns[key]
                await conn.close()

    async def connection(self, node_id: int) -> BrokerConnection:
        conn = self._conns.get(node_id)
        if conn is not None and conn.closed:
            await self._drop_closed()
            conn = None
        if conn is None:
            host, port = self.nodes[node_id]
            for key, c in self._conns.items():
                if isinstance(key, tuple) and key == (host, port) and not c.closed:
                    self._conns[node_id] = c
                    return c
            conn = BrokerConnection(host, port, self.client_id, security=self.security)
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
                if t.get("is_internal"):
                    self.internal_topics.add(t["name"])
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

    async def list_offsets(
        self, topic: str, partitions: list[int], timestamp: int, *, isolation_level: int = 0
    ) -> dict[int, int]:
        """Offsets per partition for a timestamp (-1 latest, -2 earliest), asking each leader.

        With ``isolation_level=1`` (read committed) "latest" is the last stable offset."""
        by_leader: dict[int, list[int]] = {}
        for p in partitions:
            by_leader.setdefault(self.leaders.get((topic, p), -1), []).append(p)
        out: dict[int, int] = {}
        for leader, parts in by_leader.items():
            body = {
                "replica_id": -1,
                "isolation_level": isolation_level,
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

    # ------------------------------------------------------------------ data and admin helpers

    async def leader_connection(self, topic: str, partition: int) -> BrokerConnection:
        leader = self.leaders.get((topic, partition), -1)
        if leader < 0:
            await self.refresh_metadata([topic])
            leader = self.leaders.get((topic, partition), -1)
        return await (
            self.connection(leader) if leader >= 0 and leader in self.nodes else self.any_connection()
        )

    async def fetch(
        self,
        topic: str,
        partition: int,
        offset: int,
        *,
        max_bytes: int = 1 << 20,
        max_wait_ms: int = 0,
        min_bytes: int = 1,
        isolation_level: int = 0,
    ) -> FetchedPartition:
        """Whole record batches of one partition from ``offset`` (at least one batch, even past max_bytes)."""
        conn = await self.leader_connection(topic, partition)
        v = min(conn.version_for(ApiKey.FETCH), 12)  # by topic name; 13+ name topics by id
        body = {
            "replica_id": -1,
            "max_wait_ms": max_wait_ms,
            "min_bytes": min_bytes,
            "max_bytes": max_bytes,
            "isolation_level": isolation_level,
            "session_id": 0,
            "session_epoch": -1,
            "topics": [
                {
                    "topic": topic,
                    "partitions": [
                        {"partition": partition, "fetch_offset": offset, "partition_max_bytes": max_bytes}
                    ],
                }
            ],
            "forgotten_topics_data": [],
            "rack_id": "",
        }
        resp = await conn.request(ApiKey.FETCH, body, version=v)
        if resp.get("error_code"):
            raise KafkaClientError(resp["error_code"], f"Fetch {topic}-{partition}")
        for t in resp["responses"]:
            for p in t["partitions"]:
                if p["partition_index"] == partition:
                    aborted = [
                        (a["producer_id"], a["first_offset"]) for a in p.get("aborted_transactions") or []
                    ]
                    return FetchedPartition(
                        p["error_code"],
                        p["high_watermark"],
                        p.get("last_stable_offset", -1),
                        p.get("log_start_offset", -1),
                        aborted,
                        bytes(p["records"] or b""),
                        resp.get("throttle_time_ms", 0),
                    )
        raise KafkaClientError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"Fetch {topic}-{partition}: no answer")

    async def produce(
        self,
        topic: str,
        batches: dict[int, bytes],
        *,
        acks: int = -1,
        timeout_ms: int = 30_000,
        transactional_id: str | None = None,
    ) -> dict[int, ProducedPartition]:
        """One record batch per partition, sent to each partition's leader; the answer per partition."""
        by_leader: dict[int, list[int]] = {}
        for p in batches:
            by_leader.setdefault(self.leaders.get((topic, p), -1), []).append(p)
        out: dict[int, ProducedPartition] = {}

        async def send(leader: int, parts: list[int]) -> None:
            conn = await (self.connection(leader) if leader in self.nodes else self.any_connection())
            body = {
                "transactional_id": transactional_id,
                "acks": acks,
                "timeout_ms": timeout_ms,
                "topic_data": [
                    {"name": topic, "partition_data": [{"index": p, "records": batches[p]} for p in parts]}
                ],
            }
            fut = conn.send(ApiKey.PRODUCE, body, expect_response=acks != 0)
            await conn.drain()
            if fut is None:
                for p in parts:
                    out[p] = ProducedPartition(0, -1, None, 0)
                return
            resp = await fut
            throttle = int(resp.get("throttle_time_ms", 0))
            for t in resp["responses"]:
                for pr in t["partition_responses"]:
                    out[pr["index"]] = ProducedPartition(
                        pr["error_code"], pr["base_offset"], pr.get("error_message"), throttle
                    )

        await asyncio.gather(*(send(leader, parts) for leader, parts in by_leader.items()))
        return out

    async def describe_topic_configs(self, topics: list[str]) -> dict[str, dict[str, str | None]]:
        """Every config of each topic (name -> value); a topic the broker refuses is left out."""
        if not topics:
            return {}
        body = {
            "resources": [
                {"resource_type": 2, "resource_name": t, "configuration_keys": None} for t in topics
            ],
            "include_synonyms": False,
            "include_documentation": False,
        }
        resp = await self.request(ApiKey.DESCRIBE_CONFIGS, body)
        out: dict[str, dict[str, str | None]] = {}
        for r in resp["results"]:
            if r["error_code"] == 0:
                out[r["resource_name"]] = {c["name"]: c["value"] for c in r["configs"]}
        return out

    async def create_topics(
        self, topics: list[tuple[str, int, dict[str, str]]], *, timeout_ms: int = 30_000
    ) -> dict[str, tuple[int, str | None]]:
        """Create (name, partitions, configs) topics; (error code, message) per topic, 0 when created."""
        body = {
            "topics": [
                {
                    "name": name,
                    "num_partitions": parts,
                    "replication_factor": -1,
                    "assignments": [],
                    "configs": [{"name": k, "value": v} for k, v in configs.items()],
                }
                for name, parts, configs in topics
            ],
            "timeout_ms": timeout_ms,
            "validate_only": False,
        }
        conn = await self.any_connection()
        resp = await conn.request(ApiKey.CREATE_TOPICS, body)
        return {t["name"]: (t["error_code"], t.get("error_message")) for t in resp["topics"]}

    async def list_groups(self) -> list[dict[str, Any]]:
        """Every group of every broker: group_id, protocol_type, group_state."""
        out: dict[str, dict[str, Any]] = {}
        nodes: list[int | None] = list(self.nodes) or [None]
        for node in nodes:
            resp = await self.request(
                ApiKey.LIST_GROUPS, {"states_filter": [], "types_filter": []}, node=node
            )
            if resp["error_code"]:
                raise KafkaClientError(resp["error_code"], "ListGroups")
            for g in resp["groups"]:
                out[g["group_id"]] = {
                    "group_id": g["group_id"],
                    "protocol_type": g["protocol_type"],
                    "group_state": g.get("group_state", ""),
                    "group_type": g.get("group_type", ""),
                }
        return [out[k] for k in sorted(out)]

    async def describe_group(self, group: str) -> dict[str, Any]:
        coord = await self.coordinator(group)
        resp = await self.request(ApiKey.DESCRIBE_GROUPS, {"groups": [group]}, node=coord)
        g: dict[str, Any] = resp["groups"][0]
        if g["error_code"]:
            raise KafkaClientError(g["error_code"], f"DescribeGroups {group}")
        return g

    async def describe_consumer_group(self, group: str) -> dict[str, Any] | None:
        """ConsumerGroupDescribe of a group of the consumer protocol (KIP-848); None when the group is not
        one (or the broker does not serve the API), so that DescribeGroups describes it instead."""
        coord = await self.coordinator(group)
        conn = await self.connection(coord)
        try:
            conn.version_for(ApiKey.CONSUMER_GROUP_DESCRIBE)
        except KafkaClientError:
            return None
        resp = await conn.request(
            ApiKey.CONSUMER_GROUP_DESCRIBE, {"group_ids": [group], "include_authorized_operations": False}
        )
        g: dict[str, Any] = resp["groups"][0]
        if g["error_code"] == ErrorCode.GROUP_ID_NOT_FOUND:
            return None
        if g["error_code"]:
            raise KafkaClientError(g["error_code"], f"ConsumerGroupDescribe {group}")
        return g

    async def committed_offsets(
        self, group: str, *, require_stable: bool = False
    ) -> dict[tuple[str, int], tuple[int, str | None]]:
        """(offset, metadata) committed by ``group`` for each of its partitions.

        With ``require_stable`` the broker answers UNSTABLE_OFFSET_COMMIT while a transaction holds offsets of
        the group that are not yet committed (the caller retries)."""
        coord = await self.coordinator(group)
        conn = await self.connection(coord)
        # Version 10 names topics by id; this client names them.
        v = min(conn.version_for(ApiKey.OFFSET_FETCH), 9)
        if v >= 8:
            body: dict[str, Any] = {
                "groups": [{"group_id": group, "topics": None}],
                "require_stable": require_stable,
            }
        else:
            body = {"group_id": group, "topics": None, "require_stable": require_stable}
        resp = await conn.request(ApiKey.OFFSET_FETCH, body, version=v)
        if v >= 8:
            g = resp["groups"][0]
            if g["error_code"]:
                raise KafkaClientError(g["error_code"], f"OffsetFetch {group}")
            topics = g["topics"]
        else:
            if resp.get("error_code"):
                raise KafkaClientError(resp["error_code"], f"OffsetFetch {group}")
            topics = resp["topics"]
        out: dict[tuple[str, int], tuple[int, str | None]] = {}
        for t in topics:
            for p in t["partitions"]:
                if p["error_code"] == 0 and p["committed_offset"] >= 0:
                    out[(t["name"], p["partition_index"])] = (p["committed_offset"], p["metadata"])
        return out

    async def commit_offsets(
        self, group: str, offsets: dict[tuple[str, int], tuple[int, str | None]]
    ) -> dict[tuple[str, int], int]:
        """Commit offsets as an admin client does (no member, generation -1); the error per partition."""
        if not offsets:
            return {}
        coord = await self.coordinator(group)
        by_topic: dict[str, list[dict[str, Any]]] = {}
        for (topic, p), (off, meta) in sorted(offsets.items()):
            by_topic.setdefault(topic, []).append(
                {"partition_index": p, "committed_offset": off, "committed_metadata": meta}
            )
        body = {
            "group_id": group,
            "generation_id_or_member_epoch": -1,
            "member_id": "",
            "group_instance_id": None,
            "topics": [{"name": t, "partitions": ps} for t, ps in by_topic.items()],
        }
        conn = await self.connection(coord)
        # Version 10 names topics by id; this client names them.
        resp = await conn.request(
            ApiKey.OFFSET_COMMIT, body, version=min(conn.version_for(ApiKey.OFFSET_COMMIT), 9)
        )
        return {
            (t["name"], p["partition_index"]): p["error_code"]
            for t in resp["topics"]
            for p in t["partitions"]
        }

    # ------------------------------------------------------------------ many partitions at once

    def leader_of(self, topic: str, partition: int) -> int:
        """The leader's node id as last seen in Metadata (-1: unknown)."""
        return self.leaders.get((topic, partition), -1)

    async def fetch_many(
        self,
        offsets: dict[tuple[str, int], int],
        *,
        node: int | None = None,
        max_wait_ms: int = 0,
        min_bytes: int = 1,
        max_bytes: int = 64 << 20,
        partition_max_bytes: int = 1 << 20,
        isolation_level: int = 0,
    ) -> dict[tuple[str, int], FetchedPartition]:
        """One Fetch request for many partitions (all led by ``node``, or sent to any broker when None).

        A consumer's fetch: the broker answers once ``min_bytes`` are there or ``max_wait_ms`` passed. A
        partition missing from the answer is left out of the result."""
        conn = await (
            self.connection(node) if node is not None and node in self.nodes else self.any_connection()
        )
        v = min(conn.version_for(ApiKey.FETCH), 12)  # by topic name; 13+ name topics by id
        by_topic: dict[str, list[dict[str, Any]]] = {}
        for (topic, p), off in offsets.items():
            by_topic.setdefault(topic, []).append(
                {"partition": p, "fetch_offset": off, "partition_max_bytes": partition_max_bytes}
            )
        body = {
            "replica_id": -1,
            "max_wait_ms": max_wait_ms,
            "min_bytes": min_bytes,
            "max_bytes": max_bytes,
            "isolation_level": isolation_level,
            "session_id": 0,
            "session_epoch": -1,
            "topics": [{"topic": t, "partitions": ps} for t, ps in by_topic.items()],
            "forgotten_topics_data": [],
            "rack_id": "",
        }
        resp = await conn.request(ApiKey.FETCH, body, version=v)
        if resp.get("error_code"):
            raise KafkaClientError(resp["error_code"], "Fetch")
        throttle = int(resp.get("throttle_time_ms", 0))
        out: dict[tuple[str, int], FetchedPartition] = {}
        for t in resp["responses"]:
            for p in t["partitions"]:
                aborted = [(a["producer_id"], a["first_offset"]) for a in p.get("aborted_transactions") or []]
                out[(t["topic"], p["partition_index"])] = FetchedPartition(
                    p["error_code"],
                    p["high_watermark"],
                    p.get("last_stable_offset", -1),
                    p.get("log_start_offset", -1),
                    aborted,
                    bytes(p["records"] or b""),
                    throttle,
                )
        return out

    async def produce_many(
        self,
        batches: dict[tuple[str, int], bytes],
        *,
        acks: int = -1,
        timeout_ms: int = 30_000,
        transactional_id: str | None = None,
    ) -> dict[tuple[str, int], ProducedPartition]:
        """One record batch per partition, one Produce request per leader; the answer per partition.

        A partition whose leader's connection fails is answered with NETWORK_EXCEPTION (the caller decides
        whether to retry it); the other leaders' answers stand."""
        by_leader: dict[int, list[tuple[str, int]]] = {}
        for tp in batches:
            by_leader.setdefault(self.leaders.get(tp, -1), []).append(tp)
        out: dict[tuple[str, int], ProducedPartition] = {}

        async def send(leader: int, tps: list[tuple[str, int]]) -> None:
            by_topic: dict[str, list[dict[str, Any]]] = {}
            for t, p in tps:
                by_topic.setdefault(t, []).append({"index": p, "records": batches[(t, p)]})
            body = {
                "transactional_id": transactional_id,
                "acks": acks,
                "timeout_ms": timeout_ms,
                "topic_data": [{"name": t, "partition_data": ps} for t, ps in by_topic.items()],
            }
            try:
                conn = await (self.connection(leader) if leader in self.nodes else self.any_connection())
                fut = conn.send(ApiKey.PRODUCE, body, expect_response=acks != 0)
                await conn.drain()
                if fut is None:
                    for tp in tps:
                        out[tp] = ProducedPartition(0, -1, None, 0)
                    return
                resp = await fut
            except (ConnectionError, OSError) as e:
                for tp in tps:
                    out[tp] = ProducedPartition(int(ErrorCode.NETWORK_EXCEPTION), -1, str(e), 0)
                return
            throttle = int(resp.get("throttle_time_ms", 0))
            for t in resp["responses"]:
                for pr in t["partition_responses"]:
                    out[(t["name"], pr["index"])] = ProducedPartition(
                        pr["error_code"], pr["base_offset"], pr.get("error_message"), throttle
                    )

        await asyncio.gather(*(send(leader, tps) for leader, tps in by_leader.items()))
        return out

    # ------------------------------------------------------------------ more admin

    async def create_partitions(
        self, counts: dict[str, int], *, timeout_ms: int = 30_000
    ) -> dict[str, tuple[int, str | None]]:
        """Grow topics to ``counts`` partitions; (error code, message) per topic, 0 when done."""
        body = {
            "topics": [{"name": t, "count": n, "assignments": None} for t, n in counts.items()],
            "timeout_ms": timeout_ms,
            "validate_only": False,
        }
        resp = await self.request(ApiKey.CREATE_PARTITIONS, body)
        return {r["name"]: (r["error_code"], r.get("error_message")) for r in resp["results"]}

    async def alter_topic_configs(self, topic: str, configs: dict[str, str | None]) -> tuple[int, str | None]:
        """IncrementalAlterConfigs of one topic: set each name to its value, or delete it (None: back to the
        default); (error code, message)."""
        body = {
            "resources": [
                {
                    "resource_type": 2,
                    "resource_name": topic,
                    "configs": [
                        {"name": k, "config_operation": 0 if v is not None else 1, "value": v}
                        for k, v in configs.items()
                    ],
                }
            ],
            "validate_only": False,
        }
        resp = await self.request(ApiKey.INCREMENTAL_ALTER_CONFIGS, body)
        r = resp["responses"][0]
        return int(r["error_code"]), r.get("error_message")

    async def describe_groups(self, groups: list[str]) -> dict[str, dict[str, Any]]:
        """DescribeGroups of each group at its coordinator: group_id, group_state, members, error_code."""
        out: dict[str, dict[str, Any]] = {}
        for g in groups:
            try:
                coord = await self.coordinator(g)
            except KafkaClientError as e:
                out[g] = {"group_id": g, "error_code": e.code, "group_state": "", "members": []}
                continue
            resp = await self.request(ApiKey.DESCRIBE_GROUPS, {"groups": [g]}, node=coord)
            out[g] = resp["groups"][0]
        return out

    # ------------------------------------------------------------------ share groups (KIP-932)

    async def _share_coordinator(self, group: str, api: int) -> BrokerConnection:
        conn = await self.connection(await self.coordinator(group))
        conn.version_for(api)  # KafkaClientError(UNSUPPORTED_VERSION) when the broker does not serve it
        return conn

    async def describe_share_group(self, group: str) -> dict[str, Any] | None:
        """ShareGroupDescribe; None when the group is not a share group (or the broker has none)."""
        coord = await self.coordinator(group)
        conn = await self.connection(coord)
        try:
            conn.version_for(ApiKey.SHARE_GROUP_DESCRIBE)
        except KafkaClientError:
            return None
        resp = await conn.request(
            ApiKey.SHARE_GROUP_DESCRIBE, {"group_ids": [group], "include_authorized_operations": False}
        )
        g: dict[str, Any] = resp["groups"][0]
        if g["error_code"] == ErrorCode.GROUP_ID_NOT_FOUND:
            return None
        if g["error_code"]:
            raise KafkaClientError(g["error_code"], f"ShareGroupDescribe {group}: {g.get('error_message')}")
        return g

    async def share_group_offsets(
        self, group: str, topics: dict[str, list[int]] | None = None
    ) -> dict[tuple[str, int], tuple[int, int]]:
        """DescribeShareGroupOffsets: (start offset, lag) of each share-partition of the group (-1: not
        initialized, or unknown); ``topics`` None: every share-partition the group has."""
        conn = await self._share_coordinator(group, ApiKey.DESCRIBE_SHARE_GROUP_OFFSETS)
        body = {
            "groups": [
                {
                    "group_id": group,
                    "topics": None
                    if topics is None
                    else [{"topic_name": t, "partitions": ps} for t, ps in topics.items()],
                }
            ]
        }
        resp = await conn.request(ApiKey.DESCRIBE_SHARE_GROUP_OFFSETS, body)
        g = resp["groups"][0]
        if g["error_code"]:
            raise KafkaClientError(
                g["error_code"], f"DescribeShareGroupOffsets {group}: {g['error_message']}"
            )
        out: dict[tuple[str, int], tuple[int, int]] = {}
        for t in g["topics"]:
            for p in t["partitions"]:
                if p["error_code"]:
                    raise KafkaClientError(p["error_code"], f"{t['topic_name']}-{p['partition_index']}")
                out[(t["topic_name"], p["partition_index"])] = (p["start_offset"], p.get("lag", -1))
        return out

    async def alter_share_group_offsets(
        self, group: str, offsets: dict[tuple[str, int], int]
    ) -> dict[tuple[str, int], int]:
        """AlterShareGroupOffsets: set the start offset of share-partitions of an empty share group; the
        error per partition (KafkaClientError for the group's own error, NON_EMPTY_GROUP for one)."""
        conn = await self._share_coordinator(group, ApiKey.ALTER_SHARE_GROUP_OFFSETS)
        by_topic: dict[str, list[dict[str, Any]]] = {}
        for (topic, p), off in sorted(offsets.items()):
            by_topic.setdefault(topic, []).append({"partition_index": p, "start_offset": off})
        body = {
            "group_id": group,
            "topics": [{"topic_name": t, "partitions": ps} for t, ps in by_topic.items()],
        }
        resp = await conn.request(ApiKey.ALTER_SHARE_GROUP_OFFSETS, body)
        if resp["error_code"]:
            raise KafkaClientError(
                resp["error_code"], f"AlterShareGroupOffsets {group}: {resp['error_message']}"
            )
        return {
            (t["topic_name"], p["partition_index"]): p["error_code"]
            for t in resp["responses"]
            for p in t["partitions"]
        }

    async def delete_share_group_offsets(self, group: str, topics: list[str]) -> dict[str, int]:
        """DeleteShareGroupOffsets: forget the share-partition state of ``topics`` in an empty share group;
        the error per topic."""
        conn = await self._share_coordinator(group, ApiKey.DELETE_SHARE_GROUP_OFFSETS)
        body = {"group_id": group, "topics": [{"topic_name": t} for t in topics]}
        resp = await conn.request(ApiKey.DELETE_SHARE_GROUP_OFFSETS, body)
        if resp["error_code"]:
            raise KafkaClientError(
                resp["error_code"], f"DeleteShareGroupOffsets {group}: {resp['error_message']}"
            )
        return {t["topic_name"]: t["error_code"] for t in resp["responses"]}

    async def close(self) -> None:
        seen = set()
        for conn in self._conns.values():
            if id(conn) not in seen:
                seen.add(id(conn))
                await conn.close()
        self._conns.clear()


# ---------------------------------------------------------------------------------------------- transactions

# Answers of the transaction coordinator worth asking again (after finding the coordinator anew).
TXN_RETRIABLE = frozenset(
    {
        int(ErrorCode.COORDINATOR_LOAD_IN_PROGRESS),
        int(ErrorCode.COORDINATOR_NOT_AVAILABLE),
        int(ErrorCode.NOT_COORDINATOR),
        int(ErrorCode.CONCURRENT_TRANSACTIONS),
        int(ErrorCode.REQUEST_TIMED_OUT),
    }
)
TXN_FENCED = frozenset(
    {
        int(ErrorCode.PRODUCER_FENCED),
        int(ErrorCode.INVALID_PRODUCER_EPOCH),
        int(ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED),
        int(ErrorCode.INVALID_PRODUCER_ID_MAPPING),
        int(ErrorCode.TRANSACTION_COORDINATOR_FENCED),
    }
)


class TransactionalProducer:
    """A transactional producer over a ``KafkaClient``: Kafka's protocol for ``transactional.id``.

    ``init`` gets the producer id and a new epoch (fencing any earlier producer of the id and aborting its
    open transaction); then, per transaction, ``add_partitions`` / ``add_offsets`` register what the
    transaction touches, ``batch`` builds transactional record batches with per-partition sequence numbers,
    ``produce`` writes them, ``commit_offsets`` commits a group's offsets inside the transaction, and
    ``commit`` or ``abort`` ends it. After a failed transaction call ``init`` again (a new epoch; sequences
    restart).
    """

    def __init__(self, client: KafkaClient, transactional_id: str, *, timeout_ms: int = 60_000) -> None:
        self.client = client
        self.transactional_id = transactional_id
        self.timeout_ms = timeout_ms
        self.producer_id = -1
        self.epoch = -1
        self._sequences: dict[tuple[str, int], int] = {}
        self._partitions: set[tuple[str, int]] = set()
        self._groups: set[str] = set()
        self.in_transaction = False

    async def _coordinator_request(self, api_key: int, body: dict[str, Any], what: str) -> dict[str, Any]:
        """Send to the transaction coordinator, finding it again and retrying on retriable answers."""
        delay = 0.02
        for attempt in range(60):
            try:
                coord = await self.client.coordinator(self.transactional_id, key_type=1)
                conn = await self.client.connection(coord)
                v = conn.version_for(api_key)
                if api_key == ApiKey.ADD_PARTITIONS_TO_TXN:
                    v = min(v, 3)  # 4+ is the brokers' batched form
                resp = await conn.request(api_key, body, version=v)
            except KafkaClientError as e:
                if e.code not in TXN_RETRIABLE or attempt == 59:
                    raise
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)
                continue
            code = _txn_error(api_key, resp)
            if code in TXN_RETRIABLE and attempt < 59:
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)
                continue
            if code:
                raise KafkaClientError(code, f"{what} ({self.transactional_id})")
            return resp
        raise KafkaClientError(int(ErrorCode.REQUEST_TIMED_OUT), what)

    async def init(self) -> None:
        body = {
            "transactional_id": self.transactional_id,
            "transaction_timeout_ms": self.timeout_ms,
            "producer_id": -1,
            "producer_epoch": -1,
        }
        resp = await self._coordinator_request(ApiKey.INIT_PRODUCER_ID, body, "InitProducerId")
        self.producer_id = int(resp["producer_id"])
        self.epoch = int(resp["producer_epoch"])
        self._sequences.clear()
        self._partitions.clear()
        self._groups.clear()
        self.in_transaction = False

    async def add_partitions(self, partitions: list[tuple[str, int]]) -> None:
        new = sorted(set(partitions) - self._partitions)
        if not new:
            return
        by_topic: dict[str, list[int]] = {}
        for t, p in new:
            by_topic.setdefault(t, []).append(p)
        body = {
            "v3_and_below_transactional_id": self.transactional_id,
            "v3_and_below_producer_id": self.producer_id,
            "v3_and_below_producer_epoch": self.epoch,
            "v3_and_below_topics": [{"name": t, "partitions": ps} for t, ps in by_topic.items()],
        }
        await self._coordinator_request(ApiKey.ADD_PARTITIONS_TO_TXN, body, "AddPartitionsToTxn")
        self._partitions.update(new)
        self.in_transaction = True

    async def add_offsets(self, group: str) -> None:
        if group in self._groups:
            return
        body = {
            "transactional_id": self.transactional_id,
            "producer_id": self.producer_id,
            "producer_epoch": self.epoch,
            "group_id": group,
        }
        await self._coordinator_request(ApiKey.ADD_OFFSETS_TO_TXN, body, "AddOffsetsToTxn")
        self._groups.add(group)
        self.in_transaction = True

    async def commit_offsets(
        self, group: str, offsets: dict[tuple[str, int], tuple[int, str | None]]
    ) -> None:
        """TxnOffsetCommit: the group's offsets, visible when the transaction commits."""
        await self.add_offsets(group)
        by_topic: dict[str, list[dict[str, Any]]] = {}
        for (t, p), (off, meta) in sorted(offsets.items()):
            by_topic.setdefault(t, []).append(
                {"partition_index": p, "committed_offset": off, "committed_metadata": meta}
            )
        body = {
            "transactional_id": self.transactional_id,
            "group_id": group,
            "producer_id": self.producer_id,
            "producer_epoch": self.epoch,
            "generation_id": -1,
            "member_id": "",
            "group_instance_id": None,
            "topics": [{"name": t, "partitions": ps} for t, ps in by_topic.items()],
        }
        delay = 0.02
        for attempt in range(60):
            coord = await self.client.coordinator(group)
            resp = await self.client.request(ApiKey.TXN_OFFSET_COMMIT, body, node=coord)
            codes = [p["error_code"] for t in resp["topics"] for p in t["partitions"] if p["error_code"]]
            if not codes:
                return
            if all(c in TXN_RETRIABLE for c in codes) and attempt < 59:
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)
                continue
            raise KafkaClientError(codes[0], f"TxnOffsetCommit {group}")

    def batch(
        self, topic: str, partition: int, recs: Sequence[RecordInput], *, compression: int = 0
    ) -> bytes:
        """A transactional batch of (key, value, headers, timestamp) records, with the partition's next
        sequence number (taken now: produce batches in the order they are built)."""
        # The record codecs (and the compression libraries) are loaded by the transactional producer only.
        from kafkite.protocol.records import build_batch

        seq = self._sequences.get((topic, partition), 0)
        data = build_batch(
            recs,
            compression=compression,
            producer_id=self.producer_id,
            producer_epoch=self.epoch,
            base_sequence=seq,
            transactional=True,
        )
        self._sequences[(topic, partition)] = (seq + len(recs)) & 0x7FFFFFFF
        return data

    def stamp(self, topic: str, partition: int, batch: bytes | bytearray, count: int) -> bytes:
        """An existing record batch made this producer's: producer id, epoch, sequence and the transactional
        flag set, the CRC recomputed (records untouched)."""
        # The record codecs (and the compression libraries) are loaded by the transactional producer only.
        from kafkite.protocol import records as rec

        buf = bytearray(batch)
        seq = self._sequences.get((topic, partition), 0)
        attrs = struct.unpack_from(">h", buf, 21)[0]
        struct.pack_into(">h", buf, 21, (attrs | 0x10) & ~0x20)  # transactional, not a control batch
        struct.pack_into(">qhi", buf, 43, self.producer_id, self.epoch, seq)
        rec.update_crc(buf, 0)
        self._sequences[(topic, partition)] = (seq + count) & 0x7FFFFFFF
        return bytes(buf)

    def next_sequence(self, topic: str, partition: int) -> int:
        return self._sequences.get((topic, partition), 0)

    def rewind(self, topic: str, partition: int, sequence: int) -> None:
        """A batch the broker refused did not use its sequence numbers: the next batch takes them."""
        self._sequences[(topic, partition)] = sequence

    async def produce(
        self, batches: dict[tuple[str, int], bytes]
    ) -> dict[tuple[str, int], ProducedPartition]:
        await self.add_partitions(list(batches))
        return await self.client.produce_many(batches, transactional_id=self.transactional_id)

    async def end(self, commit: bool) -> None:
        if not self.in_transaction:
            return
        body = {
            "transactional_id": self.transactional_id,
            "producer_id": self.producer_id,
            "producer_epoch": self.epoch,
            "committed": commit,
        }
        await self._coordinator_request(ApiKey.END_TXN, body, "EndTxn")
        self._partitions.clear()
        self._groups.clear()
        self.in_transaction = False

    async def commit(self) -> None:
        await self.end(True)

    async def abort(self) -> None:
        await self.end(False)


def _txn_error(api_key: int, resp: dict[str, Any]) -> int:
    """The first error of a transaction coordinator's answer (0: none)."""
    if api_key == ApiKey.ADD_PARTITIONS_TO_TXN:
        if resp.get("error_code"):
            return int(resp["error_code"])
        codes = [
            int(p["partition_error_code"])
            for t in resp.get("results_by_topic_v3_and_below") or []
            for p in t["results_by_partition"]
            if p["partition_error_code"]
        ]
        for c in codes:
            if c != ErrorCode.OPERATION_NOT_ATTEMPTED:
                return c
        return codes[0] if codes else 0
    return int(resp.get("error_code", 0))
