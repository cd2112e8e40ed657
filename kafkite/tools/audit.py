"""``kafkite audit``: show and filter the audit trail (``audit.log`` in a broker's ``log.dirs``)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kafkite.config import load_config
from kafkite.doors.audit import AUDIT_FILE, RESULTS, SURFACES, audit_files, read_records

if TYPE_CHECKING:
    from kafkite.tools import Subcommands

_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_when(text: str) -> int:
    """Epoch milliseconds of ``2026-01-02T03:04:05Z``, ``2026-01-02``, or ``30m``/``2h``/``7d`` ago."""
    m = _RELATIVE.match(text.strip())
    if m:
        return int((time.time() - int(m.group(1)) * _UNITS[m.group(2)]) * 1000)
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO time or 30s/15m/2h/7d, got {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.astimezone()
    return int(dt.timestamp() * 1000)


def _path(args: argparse.Namespace) -> Path:
    if args.file:
        return Path(args.file)
    if args.config:
        cfg = load_config(args.config, [])
        explicit: str = cfg["audit.log.file"]
        return Path(explicit) if explicit else cfg.data_dir / AUDIT_FILE
    return Path(args.log_dirs) / AUDIT_FILE


def matches(rec: dict[str, Any], args: argparse.Namespace) -> bool:
    resource = rec.get("resource") or {}
    checks = [
        (args.surface, rec.get("surface")),
        (args.result, rec.get("result")),
    ]
    for wanted, got in checks:
        if wanted and got not in wanted:
            return False
    if args.principal and rec.get("principal") not in args.principal:
        return False
    if args.operation and not any(o.lower() == str(rec.get("operation", "")).lower() for o in args.operation):
        return False
    if args.resource:
        full = f"{resource.get('type')}:{resource.get('name')}"
        if not any(r == resource.get("name") or r == full for r in args.resource):
            return False
    if args.address and rec.get("address") != args.address:
        return False
    ts = int(rec.get("ts") or 0)
    if args.since is not None and ts < args.since:
        return False
    return not (args.until is not None and ts > args.until)


def _short(v: Any, width: int) -> str:
    text = "" if v is None else str(v)
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(rows: list[dict[str, Any]]) -> str:
    header = ("TIME", "SURFACE", "PRINCIPAL", "ADDRESS", "OPERATION", "RESOURCE", "RESULT", "DETAIL")
    lines = []
    for r in rows:
        res = r.get("resource") or {}
        detail = r.get("error") or ""
        if not detail and (r.get("before") is not None or r.get("after") is not None):
            detail = f"{json.dumps(r.get('before'))} -> {json.dumps(r.get('after'))}"
        lines.append(
            (
                str(r.get("time", "")),
                str(r.get("surface", "")),
                _short(r.get("principal"), 40),
                str(r.get("address", "")),
                str(r.get("operation", "")),
                _short(f"{res.get('type')}:{res.get('name')}", 50),
                str(r.get("result", "")),
                _short(detail, 100),
            )
        )
    widths = [
        max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)
    ]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    for line in lines:
        out.append("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    path = _path(args)
    files = audit_files(path)
    if not files:
        print(f"kafkite audit: no audit log at {path}", file=sys.stderr)
        return 1
    rows = [r for r in read_records(files) if matches(r, args)]
    if args.tail is not None:
        rows = rows[-args.tail :] if args.tail > 0 else []
    if args.json:
        for r in rows:
            print(json.dumps(r, separators=(",", ":")))
    else:
        print(_table(rows))
    return 0


def add_parser(sub: Subcommands) -> None:
    p = sub.add_parser(
        "audit",
        help="show and filter the audit trail",
        description="Show the audit trail a broker keeps in log.dirs (audit.log and its rotated files): "
        "control-plane changes and refused attempts on every surface (Kafka, OCI Streaming and Queue REST, "
        "STOMP, console, metrics). Repeated filters of one kind match any of their values.",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--log-dirs", default="./data", help="the broker's log.dirs (default ./data)")
    where.add_argument("--config", metavar="FILE", help="the broker's server.properties")
    where.add_argument("--file", metavar="FILE", help="an audit file (audit.log.file)")
    p.add_argument("--principal", action="append", help="e.g. User:alice")
    p.add_argument("--surface", action="append", choices=SURFACES)
    p.add_argument("--operation", action="append", help="e.g. CreateTopics, DeleteStream, Login")
    p.add_argument("--resource", action="append", help="a resource name, or type:name (topic:orders)")
    p.add_argument("--result", action="append", choices=RESULTS)
    p.add_argument("--address", help="the client address")
    p.add_argument("--since", type=parse_when, help="ISO time or 30m/2h/7d ago")
    p.add_argument("--until", type=parse_when, help="ISO time or 30m/2h/7d ago")
    p.add_argument("--tail", type=int, metavar="N", help="only the last N matching records")
    p.add_argument("--json", action="store_true", help="one JSON record a line, as stored")
    p.set_defaults(func=run)
