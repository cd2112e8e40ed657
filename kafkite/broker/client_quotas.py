"""DescribeClientQuotas and AlterClientQuotas over the quota manager's store of run-time quotas.

What the keys mean, which ones kafkite accepts and how run-time quotas rank against ``client.quotas`` and the
``quota.*.default`` configs is in :mod:`kafkite.security.quotas`. With an authorizer, describing needs
DESCRIBE_CONFIGS and altering ALTER_CONFIGS on the cluster, as in Kafka.
"""

from __future__ import annotations

import logging
from typing import Any

from kafkite.broker.core import Broker, RequestContext
from kafkite.protocol.errors import ErrorCode
from kafkite.security import security_of
from kafkite.security.acl import CLUSTER_NAME, AclOperation, ResourceType
from kafkite.security.quotas import QuotaError, check_value, entity_text, make_entity

log = logging.getLogger("kafkite.quotas")


def _allowed(broker: Broker, ctx: RequestContext, op: AclOperation) -> bool:
    authorizer = security_of(broker).authorizer
    return authorizer is None or authorizer.authorize(
        ctx.principal, ctx.client_host, op, ResourceType.CLUSTER, CLUSTER_NAME
    )


async def handle_describe_client_quotas(
    broker: Broker, ctx: RequestContext, req: dict[str, Any]
) -> dict[str, Any]:
    resp: dict[str, Any] = {"throttle_time_ms": 0, "error_code": 0, "error_message": None, "entries": None}
    if not _allowed(broker, ctx, AclOperation.DESCRIBE_CONFIGS):
        resp.update(
            error_code=int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED),
            error_message=f"{ctx.principal} may not describe client quotas",
        )
        return resp
    store = security_of(broker).quotas.store
    components = [(c["entity_type"], c["match_type"], c["match"]) for c in req["components"]]
    try:
        found = store.describe(components, bool(req["strict"]))
    except QuotaError as e:
        resp.update(error_code=int(ErrorCode.INVALID_REQUEST), error_message=str(e))
        return resp
    resp["entries"] = [
        {
            "entity": [{"entity_type": t, "entity_name": n} for t, n in entity],
            "values": [{"key": k, "value": v} for k, v in sorted(values.items())],
        }
        for entity, values in found
    ]
    return resp


async def handle_alter_client_quotas(
    broker: Broker, ctx: RequestContext, req: dict[str, Any]
) -> dict[str, Any]:
    allowed = _allowed(broker, ctx, AclOperation.ALTER_CONFIGS)
    store = security_of(broker).quotas.store
    results: list[dict[str, Any]] = []
    for entry in req["entries"]:
        out: dict[str, Any] = {
            "error_code": 0,
            "error_message": None,
            "entity": [
                {"entity_type": e["entity_type"], "entity_name": e["entity_name"]} for e in entry["entity"]
            ],
        }
        results.append(out)
        if not allowed:
            out.update(
                error_code=int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED),
                error_message=f"{ctx.principal} may not alter client quotas",
            )
            continue
        sets: dict[str, float] = {}
        removes: list[str] = []
        try:
            entity = make_entity((e["entity_type"], e["entity_name"]) for e in entry["entity"])
            for op in entry["ops"]:
                key = op["key"]
                if key in sets or key in removes:
                    raise QuotaError(f"Duplicate quota key {key}")
                if op["remove"]:
                    check_value(key, 1.0)  # an unknown key is an error even to remove
                    removes.append(key)
                else:
                    check_value(key, op["value"])
                    sets[key] = float(op["value"])
        except QuotaError as e:
            out.update(error_code=int(ErrorCode.INVALID_REQUEST), error_message=str(e))
            continue
        if req["validate_only"]:
            continue
        try:
            store.alter(entity, sets, removes)
        except OSError as e:
            out.update(error_code=int(ErrorCode.KAFKA_STORAGE_ERROR), error_message=str(e))
            continue
        log.info("client quotas of %s: set %s, removed %s", entity_text(entity), sets or "-", removes or "-")
    return {"throttle_time_ms": 0, "entries": results}
