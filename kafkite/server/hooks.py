"""What the connection layer reports: connection events, finished requests, admin changes.

``kafkite.server.connection`` calls ``connection_opened``, ``connection_closed`` and ``request_done``. They
update the broker's metrics (when enabled), write one log line per connection event and per admin change
(loggers ``kafkite.connections`` and ``kafkite.admin``), and with ``log.requests=true`` one line per request
(``kafkite.requests``). A failure here is logged and never reaches the connection.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from typing import Any

from kafkite.broker import apis
from kafkite.metrics import BrokerMetrics, metrics_of
from kafkite.protocol.api_keys import ApiKey
from kafkite.protocol.errors import ErrorCode
from kafkite.protocol.messages import RecordsChunks

log_conn = logging.getLogger("kafkite.connections")
log_admin = logging.getLogger("kafkite.admin")
log_req = logging.getLogger("kafkite.requests")
log = logging.getLogger("kafkite.metrics")

_OPENED = "metrics.opened"
_COUNT = "metrics.requests"

# Offsets inside a record batch header (v2): batch length, attributes, record count.
_LENGTH_AT, _ATTRS_AT, _COUNT_AT, _HEADER_SIZE = 8, 21, 57, 61
_CONTROL_FLAG = 0x20


def fields(**kw: Any) -> dict[str, Any]:
    """``extra=`` for a structured log record: the JSON formatter emits these as top-level keys."""
    return {"fields": kw}


def api_name(key: int) -> str:
    """The ``api`` label of a request, as ``kafkite.broker.apis`` declares it."""
    return apis.LABELS.get(key) or f"Api{key}"


# ------------------------------------------------------------------------------------------ connections


def connection_opened(conn: Any) -> None:
    try:
        conn.state[_OPENED] = time.monotonic()
        conn.state[_COUNT] = 0
        m = metrics_of(conn.broker)
        if m is not None:
            m.connections.inc(1, conn.listener)
            m.connections_opened.inc(1, conn.listener)
        log_conn.info(
            "connection opened from %s on %s",
            conn.peer,
            conn.listener,
            extra=fields(event="connection.open", peer=conn.peer, listener=conn.listener),
        )
    except Exception:
        log.exception("connection_opened hook failed")


def connection_closed(conn: Any, exc: BaseException | None = None) -> None:
    try:
        opened = conn.state.pop(_OPENED, None)
        if opened is None:
            return
        m = metrics_of(conn.broker)
        if m is not None:
            m.connections.dec(1, conn.listener)
        duration = time.monotonic() - opened
        requests = conn.state.get(_COUNT, 0)
        principal = conn.state.get("sasl.username")
        log_conn.info(
            "connection closed from %s on %s after %.3fs and %d requests%s",
            conn.peer,
            conn.listener,
            duration,
            requests,
            f": {exc}" if exc else "",
            extra=fields(
                event="connection.close",
                peer=conn.peer,
                listener=conn.listener,
                duration_s=round(duration, 6),
                requests=requests,
                user=principal,
                error=str(exc) if exc else None,
            ),
        )
    except Exception:
        log.exception("connection_closed hook failed")


# ------------------------------------------------------------------------------------------ requests


def request_done(
    conn: Any,
    ctx: Any,
    req: dict[str, Any],
    resp: dict[str, Any] | None,
    started: float,
    *,
    failed: bool = False,
) -> None:
    """A request finished: ``resp`` is what will be sent (None: no response, as with acks=0)."""
    try:
        elapsed = time.perf_counter() - started
        conn.state[_COUNT] = conn.state.get(_COUNT, 0) + 1
        broker = conn.broker
        name = api_name(ctx.api_key)
        m = metrics_of(broker)
        if m is not None:
            _observe(m, broker, ctx, name, req, resp, elapsed, failed)
        if not failed and resp is not None and ctx.api_key in ADMIN_LOGGERS:
            ADMIN_LOGGERS[ctx.api_key](ctx, req, resp)
        if broker.config["log.requests"]:
            log_req.info(
                "%s v%d correlation %d from %s (%s) took %.3f ms%s",
                name,
                ctx.api_version,
                ctx.correlation_id,
                conn.peer,
                ctx.client_id,
                elapsed * 1000,
                " and failed" if failed else "",
                extra=fields(
                    event="request",
                    api=name,
                    version=ctx.api_version,
                    correlation_id=ctx.correlation_id,
                    client_id=ctx.client_id,
                    peer=conn.peer,
                    listener=ctx.listener,
                    principal=ctx.principal,
                    duration_ms=round(elapsed * 1000, 3),
                    failed=failed,
                    no_response=resp is None,
                ),
            )
    except Exception:
        log.exception("request_done hook failed")


def _observe(
    m: BrokerMetrics,
    broker: Any,
    ctx: Any,
    name: str,
    req: dict[str, Any],
    resp: dict[str, Any] | None,
    elapsed: float,
    failed: bool,
) -> None:
    version = str(ctx.api_version)
    m.requests.inc(1, name, version)
    m.latency.observe(elapsed, name, version)
    if failed:
        m.request_failures.inc(1, name)
        return
    if resp is not None:
        throttle = resp.get("throttle_time_ms") or 0
        if throttle > 0:
            m.throttled.inc(1, name)
            m.throttle_time.inc(throttle / 1000, name)
    if ctx.api_key == ApiKey.PRODUCE:
        _observe_produce(m, req, resp)
    elif ctx.api_key == ApiKey.FETCH and resp is not None:
        _observe_fetch(m, broker, ctx.api_version, req, resp)


def _observe_produce(m: BrokerMetrics, req: dict[str, Any], resp: dict[str, Any] | None) -> None:
    # Responses follow the request's order (stream pools rewrite names: match by position).
    resp_topics = resp["responses"] if resp is not None else []
    for ti, topic in enumerate(req.get("topic_data") or []):
        name = topic["name"]
        out = resp_topics[ti]["partition_responses"] if ti < len(resp_topics) else None
        for pi, pd in enumerate(topic["partition_data"]):
            ok = out[pi]["error_code"] == 0 if out is not None and pi < len(out) else resp is None
            buf = pd.get("records")
            if not ok or buf is None:
                m.produce_errors.inc(1, name)
                continue
            size = len(buf)
            m.bytes_in.inc(size, name)
            m.messages_in.inc(
                _count_records(bytes(buf[:_HEADER_SIZE]) if size >= _HEADER_SIZE else b""), name
            )


def _count_records(header: bytes) -> int:
    if len(header) < _HEADER_SIZE:
        return 0
    count: int = struct.unpack_from(">i", header, _COUNT_AT)[0]
    return max(0, count)


def _observe_fetch(
    m: BrokerMetrics, broker: Any, version: int, req: dict[str, Any], resp: dict[str, Any]
) -> None:
    req_topics = req.get("topics") or []
    for ti, t in enumerate(resp.get("responses") or []):
        name = None
        if ti < len(req_topics):
            rt = req_topics[ti]
            if version >= 13:
                meta = broker.topic_by_id(rt.get("topic_id"))
                name = meta.name if meta is not None else None
            else:
                name = rt.get("topic")
        name = name or t.get("topic") or "?"
        for p in t["partitions"]:
            recs = p.get("records")
            if not recs:
                continue
            size = recs.size if isinstance(recs, RecordsChunks) else len(recs)
            if size <= 0:
                continue
            m.bytes_out.inc(size, name)
            m.messages_out.inc(count_fetched_records(recs), name)


def _read_at(chunk: Any, pos: int, n: int) -> bytes:
    if isinstance(chunk, bytes | bytearray | memoryview):
        return bytes(chunk[pos : pos + n])
    return os.pread(chunk.file.fileno(), n, chunk.position + pos)


def count_fetched_records(recs: Any) -> int:
    """Records in whole batches given as bytes or file ranges (only batch headers are read)."""
    chunks = recs if isinstance(recs, RecordsChunks) else [recs]
    total = 0
    for c in chunks:
        size = len(c) if isinstance(c, bytes | bytearray | memoryview) else c.size
        pos = 0
        while pos + _HEADER_SIZE <= size:
            h = _read_at(c, pos, _HEADER_SIZE)
            if len(h) < _HEADER_SIZE:
                break
            length = struct.unpack_from(">i", h, _LENGTH_AT)[0]
            if length <= 0:
                break
            attrs = struct.unpack_from(">h", h, _ATTRS_AT)[0]
            if not attrs & _CONTROL_FLAG:
                total += _count_records(h)
            pos += 12 + length
    return total


# ------------------------------------------------------------------------------------------ admin changes


def _admin(
    action: str, ctx: Any, resource: str, code: int, message: str | None = None, **details: Any
) -> None:
    outcome = "ok" if code == 0 else _error_name(code)
    detail = " ".join(f"{k}={v}" for k, v in details.items() if v is not None)
    log_admin.info(
        "%s %s by %s from %s (%s): %s%s",
        action,
        resource,
        ctx.principal,
        ctx.client_host,
        ctx.client_id,
        outcome,
        f" ({detail})" if detail else "",
        extra=fields(
            event="admin",
            action=action,
            resource=resource,
            principal=ctx.principal,
            client_host=ctx.client_host,
            client_id=ctx.client_id,
            error_code=code,
            error=None if code == 0 else outcome,
            error_message=message,
            **details,
        ),
    )


def _error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"error {code}"


def _create_topics(ctx: Any, req: dict[str, Any], resp: dict[str, Any]) -> None:
    if req.get("validate_only"):
        return
    asked = {t["name"]: t for t in req.get("topics") or []}
    for t in resp.get("topics") or []:
        r = asked.get(t["name"], {})
        configs = {c["name"]: c["value"] for c in r.get("configs") or []}
        _admin(
            "create topic",
            ctx,
            t["name"],
            t["error_code"],
            t.get("error_message"),
            partitions=r.get("num_partitions"),
            configs=configs or None,
        )


def _delete_topics(ctx: Any, req: dict[str, Any], resp: dict[str, Any]) -> None:
    for t in resp.get("responses") or []:
        _admin(
            "delete topic",
            ctx,
            t.get("name") or str(t.get("topic_id")),
            t["error_code"],
            t.get("error_message"),
        )


def _create_partitions(ctx: Any, req: dict[str, Any], resp: dict[str, Any]) -> None:
    if req.get("validate_only"):
        return
    counts = {t["name"]: t["count"] for t in req.get("topics") or []}
    for r in resp.get("results") or []:
        _admin(
            "create partitions",
            ctx,
            r["name"],
            r["error_code"],
            r.get("error_message"),
            count=counts.get(r["name"]),
        )


_RESOURCE_TYPES = {2: "topic", 4: "broker", 8: "broker logger", 16: "client metrics", 32: "group"}
_OPS = {0: "set", 1: "delete", 2: "append", 3: "subtract"}


def _alter_configs(ctx: Any, req: dict[str, Any], resp: dict[str, Any]) -> None:
    if req.get("validate_only"):
        return
    asked = {(r["resource_type"], r["resource_name"]): r for r in req.get("resources") or []}
    for r in resp.get("responses") or []:
        a = asked.get((r["resource_type"], r["resource_name"]), {})
        changes = {}
        for c in a.get("configs") or []:
            op = _OPS.get(c.get("config_operation", 0), "set")
            changes[c["name"]] = c.get("value") if op == "set" else f"{op} {c.get('value') or ''}".strip()
        kind = _RESOURCE_TYPES.get(r["resource_type"], str(r["resource_type"]))
        _admin(
            f"alter {kind} configs",
            ctx,
            r["resource_name"] or "(cluster default)",
            r["error_code"],
            r.get("error_message"),
            configs=changes or None,
        )


def _delete_records(ctx: Any, req: dict[str, Any], resp: dict[str, Any]) -> None:
    for t in resp.get("topics") or []:
        for p in t["partitions"]:
            _admin(
                "delete records",
                ctx,
                f"{t['name']}-{p['partition_index']}",
                p["error_code"],
                low_watermark=p["low_watermark"],
            )


def _delete_groups(ctx: Any, req: dict[str, Any], resp: dict[str, Any]) -> None:
    for r in resp.get("results") or []:
        _admin("delete group", ctx, r["group_id"], r["error_code"])


def _offset_delete(ctx: Any, req: dict[str, Any], resp: dict[str, Any]) -> None:
    if resp.get("error_code"):
        _admin("delete offsets", ctx, req.get("group_id", ""), resp["error_code"])
        return
    for t in resp.get("topics") or []:
        for p in t["partitions"]:
            _admin(
                "delete offsets",
                ctx,
                f"{req.get('group_id', '')}/{t['name']}-{p['partition_index']}",
                p["error_code"],
            )


ADMIN_LOGGERS: dict[int, Any] = {
    ApiKey.CREATE_TOPICS: _create_topics,
    ApiKey.DELETE_TOPICS: _delete_topics,
    ApiKey.CREATE_PARTITIONS: _create_partitions,
    ApiKey.ALTER_CONFIGS: _alter_configs,
    ApiKey.INCREMENTAL_ALTER_CONFIGS: _alter_configs,
    ApiKey.DELETE_RECORDS: _delete_records,
    ApiKey.DELETE_GROUPS: _delete_groups,
    ApiKey.OFFSET_DELETE: _offset_delete,
}
