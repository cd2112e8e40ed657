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
from dataclasses import asdict, dataclass
from typing import Any

from kafkite.client import KafkaClient
from kafkite.protocol.errors import ErrorCode

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


class RestAdmin:
    """The few OCI Streaming admin calls ``apply`` needs, over aiohttp."""

    def __init__(self, base_url: str, session: Any) -> None:
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

    async def wait_active(self, path: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            data = await self.call("GET", path)
            state = data.get("lifecycleState")
            if state == "ACTIVE":
                return dict(data)
            if state in ("FAILED", "DELETED", "DELETING"):
                raise ApplyError(f"{path} is {state}")
            if time.monotonic() > deadline:
                raise ApplyError(f"{path} is still {state} after {WAIT_SECONDS:.0f}s")
            await asyncio.sleep(0.5)


async def apply_rest(
    plan: dict[str, Any], url: str, *, compartment: str = DEFAULT_COMPARTMENT, dry_run: bool = False
) -> list[Action]:
    import aiohttp

    actions: list[Action] = []
    async with aiohttp.ClientSession(headers={"accept": "application/json"}) as session:
        admin = RestAdmin(url, session)
        pool_ids: dict[str, str] = {}
        for pool in plan.get("pools", []):
            name = pool["name"]
            try:
                found = await admin.call(
                    "GET", "/streampools", params={"compartmentId": compartment, "name": name}
                )
                if found:
                    pool_ids[name] = found[0]["id"]
                    actions.append(Action("pool", name, "exists", id=found[0]["id"]))
                    continue
                if dry_run:
                    actions.append(Action("pool", name, "would create"))
                    continue
                created = await admin.call(
                    "POST",
                    "/streampools",
                    {
                        "name": name,
                        "compartmentId": compartment,
                        "kafkaSettings": pool.get("kafka_settings", {}),
                    },
                )
                await admin.wait_active(f"/streampools/{created['id']}")
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
                found = await admin.call("GET", "/streams", params={"streamPoolId": pool_id, "name": name})
                live = [f for f in found or [] if f.get("lifecycleState") not in ("DELETED", "DELETING")]
                if live:
                    have = live[0].get("partitions")
                    note = "" if have == parts else f"has {have} partitions, the plan says {parts}"
                    actions.append(Action("stream", name, "exists", note, id=live[0]["id"]))
                    continue
                if dry_run:
                    actions.append(Action("stream", name, "would create", f"{parts} partitions, {hours} h"))
                    continue
                created = await admin.call(
                    "POST",
                    "/streams",
                    {"name": name, "partitions": parts, "retentionInHours": hours, "streamPoolId": pool_id},
                )
                await admin.wait_active(f"/streams/{created['id']}")
                actions.append(
                    Action("stream", name, "created", f"{parts} partitions, {hours} h", created["id"])
                )
            except ApplyError as e:
                actions.append(Action("stream", name, "failed", str(e)))
    return actions


def actions_json(actions: list[Action]) -> list[dict[str, Any]]:
    return [asdict(a) for a in actions]


def summarize(actions: list[Action]) -> str:
    lines = []
    for a in actions:
        extra = f" ({a.detail})" if a.detail else ""
        ident = f" {a.id}" if a.id else ""
        lines.append(f"{a.kind:6} {a.name}: {a.action}{ident}{extra}")
    return "\n".join(lines)
