"""Create the pools and streams a plan names, on a Kafka-compatible target or through OCI's admin REST API.

``--target`` as ``host:port`` uses the Kafka admin API (CreateTopics with the planned partitions and
retention); stream pools cannot be made over Kafka, so streams land in the pool the connection belongs to
(its SASL/PLAIN user name ``tenancy/user/poolId`` on OCI and kafkite, otherwise the default pool).
``--target`` as an ``http(s)://`` URL uses the OCI Streaming admin API (version 20180418): pools are found by
name or created, then streams, each waited on until ACTIVE. Applying twice changes nothing: what exists is
reported, not re-created.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from kafkite.client import KafkaClient
from kafkite.protocol.errors import ErrorCode

if TYPE_CHECKING:
    import aiohttp

API = "/20180418"
DEFAULT_COMPARTMENT = "ocid1.compartment.oc1..kafkite"
HOUR_MS = 3_600_000
WAIT_SECONDS = 120.0


@dataclass
class Action:
    kind: str  # "pool" | "stream"
    name: str
    action: str  # "created" | "exists" | "failed" | "skipped" | "would create"
    detail: str = ""
    id: str | None = None


class ApplyError(Exception):
    pass


def is_rest_target(target: str) -> bool:
    return target.startswith(("http://", "https://"))


async def apply_kafka(plan: dict[str, Any], client: KafkaClient, *, dry_run: bool = False) -> list[Action]:
    actions: list[Action] = []
    for pool in plan.get("pools", []):
        actions.append(
            Action(
                "pool",
                pool["name"],
                "skipped",
                "stream pools are made through the OCI admin API (give an http(s):// --target); the streams "
                "go to the pool of this connection",
            )
        )
    await client.refresh_metadata()
    todo = []
    for s in plan.get("streams", []):
        name, parts = s["name"], int(s["partitions"])
        have = client.topics.get(name)
        if have is not None:
            note = "" if have == parts else f"has {have} partitions, the plan says {parts}"
            actions.append(Action("stream", name, "exists", note))
            continue
        if dry_run:
            actions.append(
                Action("stream", name, "would create", f"{parts} partitions, {s['retention_hours']} h")
            )
            continue
        todo.append((name, parts, {"retention.ms": str(int(s["retention_hours"]) * HOUR_MS)}))
    if todo:
        results = await client.create_topics(todo)
        for name, parts, cfg in todo:
            code, msg = results.get(name, (0, None))
            hours = int(cfg["retention.ms"]) // HOUR_MS
            if code == 0:
                actions.append(Action("stream", name, "created", f"{parts} partitions, {hours} h"))
            elif code == ErrorCode.TOPIC_ALREADY_EXISTS:
                actions.append(Action("stream", name, "exists"))
            else:
                actions.append(
                    Action("stream", name, "failed", f"{ErrorCode(code).name}: {msg or ''}".strip())
                )
    return actions


class Admin(ABC):
    """The OCI Streaming admin calls ``apply`` needs; resources come back as dicts with ``id``,
    ``lifecycleState`` and, for streams, ``partitions``."""

    @abstractmethod
    async def pools_named(self, compartment: str, name: str) -> list[dict[str, Any]]: ...

    @abstractmethod
    async def create_pool(
        self, compartment: str, name: str, kafka_settings: dict[str, Any]
    ) -> dict[str, Any]: ...

    @abstractmethod
    async def get_pool(self, pool_id: str) -> dict[str, Any]: ...

    @abstractmethod
    async def streams_named(self, pool_id: str, name: str) -> list[dict[str, Any]]: ...

    @abstractmethod
    async def create_stream(self, pool_id: str, name: str, partitions: int, hours: int) -> dict[str, Any]: ...

    @abstractmethod
    async def get_stream(self, stream_id: str) -> dict[str, Any]: ...


async def wait_active(get: Callable[[str], Awaitable[dict[str, Any]]], ident: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        data = await get(ident)
        state = data.get("lifecycleState")
        if state == "ACTIVE":
            return data
        if state in ("FAILED", "DELETED", "DELETING"):
            raise ApplyError(f"{ident} is {state}")
        if time.monotonic() > deadline:
            raise ApplyError(f"{ident} is still {state} after {WAIT_SECONDS:.0f}s")
        await asyncio.sleep(0.5)


class RestAdmin(Admin):
    """Plain JSON requests (no request signing: for endpoints that do not verify signatures)."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession) -> None:
        self.base = base_url.rstrip("/") + API
        self.session = session

    async def call(
        self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None
    ) -> Any:
        async with self.session.request(method, self.base + path, json=body, params=params) as resp:
            data = await resp.json(content_type=None) if resp.content_length != 0 else None
            if resp.status >= 400:
                code = data.get("code") if isinstance(data, dict) else ""
                message = data.get("message") if isinstance(data, dict) else await resp.text()
                raise ApplyError(f"{method} {path}: HTTP {resp.status} {code}: {message}")
            return data

    async def pools_named(self, compartment: str, name: str) -> list[dict[str, Any]]:
        return list(
            await self.call("GET", "/streampools", params={"compartmentId": compartment, "name": name})
        )

    async def create_pool(
        self, compartment: str, name: str, kafka_settings: dict[str, Any]
    ) -> dict[str, Any]:
        body = {"name": name, "compartmentId": compartment, "kafkaSettings": kafka_settings}
        return dict(await self.call("POST", "/streampools", body))

    async def get_pool(self, pool_id: str) -> dict[str, Any]:
        return dict(await self.call("GET", f"/streampools/{pool_id}"))

    async def streams_named(self, pool_id: str, name: str) -> list[dict[str, Any]]:
        return list(await self.call("GET", "/streams", params={"streamPoolId": pool_id, "name": name}) or [])

    async def create_stream(self, pool_id: str, name: str, partitions: int, hours: int) -> dict[str, Any]:
        body = {"name": name, "partitions": partitions, "retentionInHours": hours, "streamPoolId": pool_id}
        return dict(await self.call("POST", "/streams", body))

    async def get_stream(self, stream_id: str) -> dict[str, Any]:
        return dict(await self.call("GET", f"/streams/{stream_id}"))


class SdkAdmin(Admin):
    """The ``oci`` SDK's StreamAdminClient (signed requests, from an OCI config file), run in threads."""

    def __init__(self, url: str, config_file: str, profile: str = "DEFAULT") -> None:
        import oci

        self.oci = oci
        config = oci.config.from_file(config_file, profile)
        self.client = oci.streaming.StreamAdminClient(
            config, service_endpoint=url, retry_strategy=oci.retry.NoneRetryStrategy()
        )

    @staticmethod
    def _view(obj: Any) -> dict[str, Any]:
        return {
            "id": obj.id,
            "name": obj.name,
            "lifecycleState": obj.lifecycle_state,
            "partitions": getattr(obj, "partitions", None),
        }

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return (await asyncio.to_thread(fn, *args, **kwargs)).data
        except self.oci.exceptions.ServiceError as e:
            raise ApplyError(f"HTTP {e.status} {e.code}: {e.message}") from None

    async def pools_named(self, compartment: str, name: str) -> list[dict[str, Any]]:
        found = await self._call(self.client.list_stream_pools, compartment, name=name)
        return [self._view(p) for p in found]

    async def create_pool(
        self, compartment: str, name: str, kafka_settings: dict[str, Any]
    ) -> dict[str, Any]:
        m = self.oci.streaming.models
        ks = m.KafkaSettings(
            auto_create_topics_enable=kafka_settings.get("autoCreateTopicsEnable"),
            num_partitions=kafka_settings.get("numPartitions"),
            log_retention_hours=kafka_settings.get("logRetentionHours"),
        )
        details = m.CreateStreamPoolDetails(name=name, compartment_id=compartment, kafka_settings=ks)
        return self._view(await self._call(self.client.create_stream_pool, details))

    async def get_pool(self, pool_id: str) -> dict[str, Any]:
        return self._view(await self._call(self.client.get_stream_pool, pool_id))

    async def streams_named(self, pool_id: str, name: str) -> list[dict[str, Any]]:
        found = await self._call(self.client.list_streams, stream_pool_id=pool_id, name=name)
        return [self._view(s) for s in found]

    async def create_stream(self, pool_id: str, name: str, partitions: int, hours: int) -> dict[str, Any]:
        details = self.oci.streaming.models.CreateStreamDetails(
            name=name, partitions=partitions, retention_in_hours=hours, stream_pool_id=pool_id
        )
        return self._view(await self._call(self.client.create_stream, details))

    async def get_stream(self, stream_id: str) -> dict[str, Any]:
        return self._view(await self._call(self.client.get_stream, stream_id))


async def apply_admin(
    plan: dict[str, Any], admin: Admin, *, compartment: str = DEFAULT_COMPARTMENT, dry_run: bool = False
) -> list[Action]:
    actions: list[Action] = []
    pool_ids: dict[str, str] = {}
    for pool in plan.get("pools", []):
        name = pool["name"]
        try:
            found = [
                p for p in await admin.pools_named(compartment, name) if p.get("lifecycleState") != "DELETED"
            ]
            if found:
                pool_ids[name] = found[0]["id"]
                actions.append(Action("pool", name, "exists", id=found[0]["id"]))
                continue
            if dry_run:
                actions.append(Action("pool", name, "would create"))
                continue
            created = await admin.create_pool(compartment, name, pool.get("kafka_settings", {}))
            await wait_active(admin.get_pool, created["id"])
            pool_ids[name] = created["id"]
            actions.append(Action("pool", name, "created", id=created["id"]))
        except ApplyError as e:
            actions.append(Action("pool", name, "failed", str(e)))
    for s in plan.get("streams", []):
        name, parts, hours = s["name"], int(s["partitions"]), int(s["retention_hours"])
        pool_id = pool_ids.get(s["pool"])
        if pool_id is None:
            action = "would create" if dry_run else "failed"
            actions.append(Action("stream", name, action, f"pool {s['pool']} is not available"))
            continue
        try:
            found = await admin.streams_named(pool_id, name)
            live = [f for f in found if f.get("lifecycleState") not in ("DELETED", "DELETING")]
            if live:
                have = live[0].get("partitions")
                note = "" if have == parts else f"has {have} partitions, the plan says {parts}"
                actions.append(Action("stream", name, "exists", note, id=live[0]["id"]))
                continue
            if dry_run:
                actions.append(Action("stream", name, "would create", f"{parts} partitions, {hours} h"))
                continue
            created = await admin.create_stream(pool_id, name, parts, hours)
            await wait_active(admin.get_stream, created["id"])
            actions.append(Action("stream", name, "created", f"{parts} partitions, {hours} h", created["id"]))
        except ApplyError as e:
            actions.append(Action("stream", name, "failed", str(e)))
    return actions


async def apply_rest(
    plan: dict[str, Any],
    url: str,
    *,
    compartment: str = DEFAULT_COMPARTMENT,
    dry_run: bool = False,
    oci_config: str | None = None,
    oci_profile: str = "DEFAULT",
) -> list[Action]:
    """Apply through the OCI admin API at ``url``: signed with the SDK when an OCI config file is given."""
    if oci_config:
        admin = SdkAdmin(url, oci_config, oci_profile)
        return await apply_admin(plan, admin, compartment=compartment, dry_run=dry_run)
    import aiohttp

    async with aiohttp.ClientSession(headers={"accept": "application/json"}) as session:
        return await apply_admin(plan, RestAdmin(url, session), compartment=compartment, dry_run=dry_run)


def actions_json(actions: list[Action]) -> list[dict[str, Any]]:
    return [asdict(a) for a in actions]


def summarize(actions: list[Action]) -> str:
    lines = []
    for a in actions:
        extra = f" ({a.detail})" if a.detail else ""
        ident = f" {a.id}" if a.id else ""
        lines.append(f"{a.kind:6} {a.name}: {a.action}{ident}{extra}")
    return "\n".join(lines)
