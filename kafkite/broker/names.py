"""Which fields of each API's request and response carry a topic name, a group id or a transactional id.

Declared per API in ``kafkite.broker.apis``; read by the stream-pool wrapper (which maps pool-local names to
internal ones and back) and by the audit trail (which names what a request touched).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TOPIC = "topic"
GROUP = "group"
TXN = "transactional_id"
RESOURCE_TOPIC = 2  # DescribeConfigs/AlterConfigs resource type
RESOURCE_GROUP = 32
KEY_TYPE_GROUP = 0  # FindCoordinator key type


def is_topic_resource(parent: dict[str, Any]) -> bool:
    return bool(parent.get("resource_type") == RESOURCE_TOPIC)


def is_group_resource(parent: dict[str, Any]) -> bool:
    return bool(parent.get("resource_type") == RESOURCE_GROUP)


def is_group_key(parent: dict[str, Any]) -> bool:
    return bool(parent.get("key_type", KEY_TYPE_GROUP) == KEY_TYPE_GROUP)


@dataclass(frozen=True)
class NameField:
    """A field holding a topic name or a group id: its path from the message root ("*": each list element);
    a path ending in "*" is a list of strings. ``when`` tests the dict holding the field."""

    path: tuple[str, ...]
    kind: str
    when: Callable[[dict[str, Any]], bool] | None = None


def field(path: str, kind: str = TOPIC, when: Callable[[dict[str, Any]], bool] | None = None) -> NameField:
    return NameField(tuple(path.split(".")), kind, when)


Fields = tuple[tuple[NameField, ...], tuple[NameField, ...]]  # (request fields, response fields)
NO_NAMES: Fields = ((), ())


def fields(request: list[NameField], response: list[NameField]) -> Fields:
    return tuple(request), tuple(response)


def _walk(node: Any, path: tuple[str, ...], i: int, fn: Callable[[str], str | None], f: NameField) -> bool:
    """Rewrite the names at ``path[i:]`` under ``node``; False when ``node`` should be dropped."""
    key = path[i]
    last = i == len(path) - 1
    if key == "*":
        if not isinstance(node, list):
            return True
        if last:
            node[:] = [m for m in (fn(x) if isinstance(x, str) else x for x in node) if m is not None]
        else:
            node[:] = [el for el in node if _walk(el, path, i + 1, fn, f)]
        return True
    if not isinstance(node, dict):
        return True
    if last:
        if f.when is not None and not f.when(node):
            return True
        value = node.get(key)
        if not isinstance(value, str):
            return True
        mapped = fn(value)
        if mapped is None:
            return False
        node[key] = mapped
        return True
    child = node.get(key)
    if child is None:
        return True
    return _walk(child, path, i + 1, fn, f)


def rewrite(
    msg: dict[str, Any], fields: tuple[NameField, ...] | list[NameField], fn: Callable[[str, str], str | None]
) -> None:
    """Apply ``fn(kind, name)`` to every name field of ``msg``; a None result drops the enclosing element."""
    for f in fields:

        def one(name: str, kind: str = f.kind) -> str | None:
            return fn(kind, name)

        _walk(msg, f.path, 0, one, f)
