"""What every REST door shares: bounded JSON bodies, the caller behind a verified OCI signature, TLS sites.

Bad input is a 4xx, never a 5xx: a body larger than ``MAX_BODY_BYTES`` and JSON nested deeper than
``MAX_JSON_DEPTH`` are refused with OCI's ``InvalidParameter`` before any handler looks at them.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from kafkite.config import BrokerConfig, ConfigError
from kafkite.doors import Caller
from kafkite.security.tls import server_context

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_JSON_DEPTH = 64
CALLER_KEY = web.RequestKey("kafkite.caller", Caller)  # who sent the request (set by each gateway)


class BadJson(ValueError):
    """The body is not acceptable JSON; the message says why (for a 400 InvalidParameter)."""


def json_depth_ok(obj: object, limit: int = MAX_JSON_DEPTH) -> bool:
    """Is ``obj`` nested at most ``limit`` arrays/objects deep? (Iterative: no recursion to exhaust.)"""
    stack: list[tuple[object, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        children: Iterable[object]
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return False
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return True


def parse_json(body: bytes) -> Any:
    """Decode a request body: BadJson for anything malformed, too deep or not UTF-8."""
    try:
        obj = json.loads(body)
    except RecursionError:
        raise BadJson(f"the request body is nested more than {MAX_JSON_DEPTH} levels deep") from None
    except (ValueError, UnicodeDecodeError):
        raise BadJson("the request body is not valid JSON") from None
    if not json_depth_ok(obj):
        raise BadJson(f"the request body is nested more than {MAX_JSON_DEPTH} levels deep")
    return obj


async def read_body(request: web.Request) -> bytes:
    """The whole body; BadJson when it is larger than the listener accepts."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BadJson(f"the request body is larger than {MAX_BODY_BYTES} bytes") from None


# ---------------------------------------------------------------------------------------------- TLS sites


def listener_scheme(key: str, spec: str, plain: str, tls: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of one ``scheme://host:port`` listener, the scheme being ``plain`` or ``tls``."""
    try:
        parts = urlsplit(spec.strip() if "://" in spec else f"{plain}://{spec.strip()}")
        port = parts.port
    except ValueError as e:
        raise ConfigError(f"{key}: {e}") from None
    if parts.scheme not in (plain, tls):
        raise ConfigError(f"{key}: expected {plain}://host:port or {tls}://host:port, got {spec.strip()!r}")
    return parts.scheme, parts.hostname or "localhost", port


def tls_context(config: BrokerConfig, key: str) -> ssl.SSLContext:
    """The Kafka listeners' TLS settings (``ssl.*``) for another listener; the error names ``key`` too."""

    try:
        return server_context(config)
    except ConfigError as e:
        raise ConfigError(f"{key} asks for TLS: {e}") from None
