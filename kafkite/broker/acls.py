"""CreateAcls, DescribeAcls and DeleteAcls over the broker's ACL authorizer.

Without an authorizer (``authorizer.class.name`` empty) they answer SECURITY_DISABLED, as Kafka does.
Creating and deleting ACLs needs ALTER on the cluster, describing them DESCRIBE on the cluster.
"""

from __future__ import annotations

from typing import Any

from kafkite.broker.core import Broker, RequestContext
from kafkite.protocol.errors import ErrorCode
from kafkite.security import security_of
from kafkite.security.acl import (
    CLUSTER_NAME,
    AclAuthorizer,
    AclBinding,
    AclFilter,
    AclOperation,
    InvalidAcl,
    PatternType,
    ResourceType,
)

_DISABLED = "no authorizer is configured on the broker (set authorizer.class.name)"


def _check(
    broker: Broker, ctx: RequestContext, op: AclOperation
) -> tuple[AclAuthorizer | None, ErrorCode, str | None]:
    authorizer = security_of(broker).authorizer
    if authorizer is None:
        return None, ErrorCode.SECURITY_DISABLED, _DISABLED
    if not authorizer.authorize(ctx.principal, ctx.client_host, op, ResourceType.CLUSTER, CLUSTER_NAME):
        return None, ErrorCode.CLUSTER_AUTHORIZATION_FAILED, f"{ctx.principal} may not {op.name} the cluster"
    return authorizer, ErrorCode.NO_ERROR, None


def _filter(f: dict[str, Any], version: int) -> AclFilter:
    return AclFilter(
        resource_type=f["resource_type_filter"],
        resource_name=f["resource_name_filter"],
        pattern_type=f["pattern_type_filter"] if version >= 1 else PatternType.LITERAL,
        principal=f["principal_filter"],
        host=f["host_filter"],
        operation=f["operation"],
        permission_type=f["permission_type"],
    )


async def handle_create_acls(broker: Broker, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
    authorizer, code, message = _check(broker, ctx, AclOperation.ALTER)
    results: list[dict[str, Any]] = []
    for c in req["creations"]:
        if authorizer is None:
            results.append({"error_code": int(code), "error_message": message})
            continue
        binding = AclBinding(
            resource_type=c["resource_type"],
            resource_name=c["resource_name"],
            pattern_type=c["resource_pattern_type"] if ctx.api_version >= 1 else PatternType.LITERAL,
            principal=c["principal"],
            host=c["host"],
            operation=c["operation"],
            permission_type=c["permission_type"],
        )
        try:
            authorizer.add([binding])
        except InvalidAcl as e:
            results.append({"error_code": int(ErrorCode.INVALID_REQUEST), "error_message": str(e)})
            continue
        except OSError as e:
            results.append({"error_code": int(ErrorCode.KAFKA_STORAGE_ERROR), "error_message": str(e)})
            continue
        results.append({"error_code": 0, "error_message": None})
    return {"throttle_time_ms": 0, "results": results}


async def handle_describe_acls(broker: Broker, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
    authorizer, code, message = _check(broker, ctx, AclOperation.DESCRIBE)
    if authorizer is None:
        return {"throttle_time_ms": 0, "error_code": int(code), "error_message": message, "resources": []}
    f = _filter(req, ctx.api_version)
    try:
        f.validate()
    except InvalidAcl as e:
        return {
            "throttle_time_ms": 0,
            "error_code": int(ErrorCode.INVALID_REQUEST),
            "error_message": str(e),
            "resources": [],
        }
    grouped: dict[tuple[int, str, int], list[dict[str, Any]]] = {}
    for b in authorizer.describe(f):
        grouped.setdefault((b.resource_type, b.resource_name, b.pattern_type), []).append(
            {
                "principal": b.principal,
                "host": b.host,
                "operation": b.operation,
                "permission_type": b.permission_type,
            }
        )
    resources = [
        {"resource_type": rt, "resource_name": name, "pattern_type": pt, "acls": acls}
        for (rt, name, pt), acls in grouped.items()
    ]
    return {"throttle_time_ms": 0, "error_code": 0, "error_message": None, "resources": resources}


async def handle_delete_acls(broker: Broker, ctx: RequestContext, req: dict[str, Any]) -> dict[str, Any]:
    authorizer, code, message = _check(broker, ctx, AclOperation.ALTER)
    results: list[dict[str, Any]] = []
    for raw in req["filters"]:
        if authorizer is None:
            results.append({"error_code": int(code), "error_message": message, "matching_acls": []})
            continue
        f = _filter(raw, ctx.api_version)
        try:
            f.validate()
            gone = authorizer.delete(f)
        except InvalidAcl as e:
            results.append(
                {"error_code": int(ErrorCode.INVALID_REQUEST), "error_message": str(e), "matching_acls": []}
            )
            continue
        except OSError as e:
            results.append(
                {
                    "error_code": int(ErrorCode.KAFKA_STORAGE_ERROR),
                    "error_message": str(e),
                    "matching_acls": [],
                }
            )
            continue
        results.append(
            {
                "error_code": 0,
                "error_message": None,
                "matching_acls": [
                    {
                        "error_code": 0,
                        "error_message": None,
                        "resource_type": b.resource_type,
                        "resource_name": b.resource_name,
                        "pattern_type": b.pattern_type,
                        "principal": b.principal,
                        "host": b.host,
                        "operation": b.operation,
                        "permission_type": b.permission_type,
                    }
                    for b in gone
                ],
            }
        )
    return {"throttle_time_ms": 0, "filter_results": results}
