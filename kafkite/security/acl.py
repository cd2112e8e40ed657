"""ACLs with Kafka's types and rules, and the authorizer that applies them.

A binding is a resource pattern (type, name, LITERAL or PREFIXED) and an entry (principal, host, operation,
ALLOW or DENY). Deciding whether a principal may perform an operation on a resource:

1. super users (``super.users``) may do anything;
2. when no ACL at all matches the resource, ``allow.everyone.if.no.acl.found`` decides;
3. a matching DENY wins over any ALLOW;
4. a matching ALLOW grants the operation, and also the operations it implies: READ, WRITE, DELETE and ALTER
   imply DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS; ALL implies every operation;
5. otherwise the request is denied.

A literal name ``*`` matches every resource of its type, principal ``User:*`` every principal, host ``*``
every host. ACLs are kept in ``acls.json`` in the data directory.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from enum import IntEnum
from pathlib import Path

ACLS_FILE = "acls.json"
CLUSTER_NAME = "kafka-cluster"
WILDCARD = "*"
WILDCARD_PRINCIPAL = "User:*"


class ResourceType(IntEnum):
    UNKNOWN = 0
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5
    DELEGATION_TOKEN = 6
    USER = 7


class PatternType(IntEnum):
    UNKNOWN = 0
    ANY = 1
    MATCH = 2
    LITERAL = 3
    PREFIXED = 4


class AclOperation(IntEnum):
    UNKNOWN = 0
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12
    CREATE_TOKENS = 13
    DESCRIBE_TOKENS = 14


class PermissionType(IntEnum):
    UNKNOWN = 0
    ANY = 1
    DENY = 2
    ALLOW = 3


Op = AclOperation
RT = ResourceType
_RESOURCETYPE_CODES = frozenset(int(x) for x in ResourceType)
_PATTERNTYPE_CODES = frozenset(int(x) for x in PatternType)
_ACLOPERATION_CODES = frozenset(int(x) for x in AclOperation)
_PERMISSIONTYPE_CODES = frozenset(int(x) for x in PermissionType)

# An ALLOW of the key also allows these operations.
IMPLIED: dict[AclOperation, frozenset[AclOperation]] = {
    Op.READ: frozenset({Op.DESCRIBE}),
    Op.WRITE: frozenset({Op.DESCRIBE}),
    Op.DELETE: frozenset({Op.DESCRIBE}),
    Op.ALTER: frozenset({Op.DESCRIBE}),
    Op.ALTER_CONFIGS: frozenset({Op.DESCRIBE_CONFIGS}),
}

# The operations that make sense for each resource type (Metadata's authorized-operations bit sets).
OPERATIONS: dict[ResourceType, tuple[AclOperation, ...]] = {
    RT.TOPIC: (
        Op.READ,
        Op.WRITE,
        Op.CREATE,
        Op.DELETE,
        Op.ALTER,
        Op.DESCRIBE,
        Op.DESCRIBE_CONFIGS,
        Op.ALTER_CONFIGS,
    ),
    RT.GROUP: (Op.READ, Op.DELETE, Op.DESCRIBE),
    RT.CLUSTER: (
        Op.CREATE,
        Op.ALTER,
        Op.DESCRIBE,
        Op.CLUSTER_ACTION,
        Op.DESCRIBE_CONFIGS,
        Op.ALTER_CONFIGS,
        Op.IDEMPOTENT_WRITE,
    ),
    RT.TRANSACTIONAL_ID: (Op.WRITE, Op.DESCRIBE),
    RT.DELEGATION_TOKEN: (Op.DESCRIBE,),
    RT.USER: (Op.CREATE_TOKENS, Op.DESCRIBE_TOKENS),
}


class InvalidAcl(ValueError):
    """A binding or filter that Kafka would refuse with INVALID_REQUEST."""


@dataclass(frozen=True, order=True)
class AclBinding:
    resource_type: int
    resource_name: str
    pattern_type: int
    principal: str
    host: str
    operation: int
    permission_type: int

    def validate(self) -> None:
        if self.resource_type in (RT.UNKNOWN, RT.ANY) or self.resource_type not in _RESOURCETYPE_CODES:
            raise InvalidAcl(f"invalid resource type {self.resource_type}")
        if self.pattern_type not in (PatternType.LITERAL, PatternType.PREFIXED):
            raise InvalidAcl(f"invalid pattern type {self.pattern_type}: use LITERAL or PREFIXED")
        if self.operation in (Op.UNKNOWN, Op.ANY) or self.operation not in _ACLOPERATION_CODES:
            raise InvalidAcl(f"invalid operation {self.operation}")
        if self.permission_type not in (PermissionType.ALLOW, PermissionType.DENY):
            raise InvalidAcl(f"invalid permission type {self.permission_type}")
        if not self.resource_name:
            raise InvalidAcl("empty resource name")
        if self.resource_type == RT.CLUSTER and self.resource_name != CLUSTER_NAME:
            raise InvalidAcl(f"the cluster resource is named {CLUSTER_NAME}")
        kind, sep, name = self.principal.partition(":")
        if not sep or not kind or not name:
            raise InvalidAcl(f"invalid principal {self.principal!r}: expected Type:name such as User:alice")
        if not self.host:
            raise InvalidAcl("empty host")

    def matches_resource(self, resource_type: int, name: str) -> bool:
        if self.resource_type != resource_type:
            return False
        if self.pattern_type == PatternType.LITERAL:
            return self.resource_name in (name, WILDCARD)
        return name.startswith(self.resource_name)


@dataclass(frozen=True)
class AclFilter:
    """Describe/DeleteAcls filter: None or ANY matches anything."""

    resource_type: int = RT.ANY
    resource_name: str | None = None
    pattern_type: int = PatternType.ANY
    principal: str | None = None
    host: str | None = None
    operation: int = Op.ANY
    permission_type: int = PermissionType.ANY

    def validate(self) -> None:
        if self.resource_type == RT.UNKNOWN or self.resource_type not in _RESOURCETYPE_CODES:
            raise InvalidAcl(f"invalid resource type filter {self.resource_type}")
        if self.pattern_type == PatternType.UNKNOWN or self.pattern_type not in _PATTERNTYPE_CODES:
            raise InvalidAcl(f"invalid pattern type filter {self.pattern_type}")
        if self.operation == Op.UNKNOWN or self.operation not in _ACLOPERATION_CODES:
            raise InvalidAcl(f"invalid operation filter {self.operation}")
        if (
            self.permission_type == PermissionType.UNKNOWN
            or self.permission_type not in _PERMISSIONTYPE_CODES
        ):
            raise InvalidAcl(f"invalid permission type filter {self.permission_type}")

    def matches(self, b: AclBinding) -> bool:
        if self.resource_type != RT.ANY and b.resource_type != self.resource_type:
            return False
        if self.pattern_type == PatternType.MATCH:
            if self.resource_name is not None:
                if b.pattern_type == PatternType.LITERAL:
                    if b.resource_name not in (self.resource_name, WILDCARD):
                        return False
                elif not self.resource_name.startswith(b.resource_name):
                    return False
        else:
            if self.pattern_type != PatternType.ANY and b.pattern_type != self.pattern_type:
                return False
            if self.resource_name is not None and b.resource_name != self.resource_name:
                return False
        if self.principal is not None and b.principal != self.principal:
            return False
        if self.host is not None and b.host != self.host:
            return False
        if self.operation != Op.ANY and b.operation != self.operation:
            return False
        return not (self.permission_type != PermissionType.ANY and b.permission_type != self.permission_type)


def parse_super_users(spec: str) -> frozenset[str]:
    """``super.users``: principals separated by ``;`` (certificate subjects contain commas)."""
    return frozenset(p.strip() for p in spec.split(";") if p.strip())


class AclAuthorizer:
    """The ACL store and the authorization decision; ``path`` None keeps ACLs in memory only."""

    def __init__(
        self,
        path: Path | None,
        super_users: frozenset[str] = frozenset(),
        allow_if_no_acl: bool = False,
    ) -> None:
        self.path = path
        self.super_users = super_users
        self.allow_if_no_acl = allow_if_no_acl
        self._acls: set[AclBinding] = set()
        self._mutex = threading.Lock()
        if path is not None and path.exists():
            self._acls = self._read(path)

    @staticmethod
    def _read(path: Path) -> set[AclBinding]:
        try:
            raw = json.loads(path.read_text())
            return {AclBinding(**a) for a in raw.get("acls", [])}
        except (OSError, ValueError, TypeError) as e:
            raise ValueError(f"{path}: unreadable ACL file: {e}") from None

    def _write(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = {"version": 1, "acls": [asdict(a) for a in sorted(self._acls)]}
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    # ------------------------------------------------------------------ store

    def acls(self) -> list[AclBinding]:
        return sorted(self._acls)

    def add(self, bindings: list[AclBinding]) -> None:
        for b in bindings:
            b.validate()
        with self._mutex:
            self._acls.update(bindings)
            self._write()

    def describe(self, f: AclFilter) -> list[AclBinding]:
        return sorted(b for b in self._acls if f.matches(b))

    def delete(self, f: AclFilter) -> list[AclBinding]:
        with self._mutex:
            gone = sorted(b for b in self._acls if f.matches(b))
            if gone:
                self._acls.difference_update(gone)
                self._write()
            return gone

    # ------------------------------------------------------------------ decisions

    def is_super_user(self, principal: str) -> bool:
        return principal in self.super_users

    def authorize(self, principal: str, host: str, op: AclOperation, rtype: ResourceType, name: str) -> bool:
        if principal in self.super_users:
            return True
        matching = [b for b in self._acls if b.matches_resource(rtype, name)]
        if not matching:
            return self.allow_if_no_acl
        mine = [
            b
            for b in matching
            if b.principal in (principal, WILDCARD_PRINCIPAL) and b.host in (host, WILDCARD)
        ]
        for b in mine:
            if b.permission_type == PermissionType.DENY and b.operation in (op, Op.ALL):
                return False
        for b in mine:
            if b.permission_type == PermissionType.ALLOW and (
                b.operation in (op, Op.ALL) or op in IMPLIED.get(AclOperation(b.operation), ())
            ):
                return True
        return False

    def authorized_operations(
        self, principal: str, host: str, rtype: ResourceType, name: str
    ) -> list[AclOperation]:
        return [op for op in OPERATIONS.get(rtype, ()) if self.authorize(principal, host, op, rtype, name)]

    def authorize_any(self, principal: str, host: str, op: AclOperation, rtype: ResourceType) -> bool:
        """May ``principal`` perform ``op`` on at least one resource of type ``rtype``? (Kafka lets a
        principal allowed to write some topic produce idempotently.)"""
        if principal in self.super_users:
            return True
        for b in self._acls:
            if (
                b.resource_type == rtype
                and b.permission_type == PermissionType.ALLOW
                and b.principal in (principal, WILDCARD_PRINCIPAL)
                and b.host in (host, WILDCARD)
                and (b.operation in (op, Op.ALL) or op in IMPLIED.get(AclOperation(b.operation), ()))
            ):
                denied = any(
                    d.permission_type == PermissionType.DENY
                    and d.resource_type == rtype
                    and d.operation in (op, Op.ALL)
                    and d.principal in (principal, WILDCARD_PRINCIPAL)
                    and d.host in (host, WILDCARD)
                    and d.pattern_type == PatternType.LITERAL
                    and d.resource_name == WILDCARD
                    for d in self._acls
                )
                return not denied
        return self.allow_if_no_acl and not any(b.resource_type == rtype for b in self._acls)
