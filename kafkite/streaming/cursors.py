"""Cursors: opaque base64 tokens saying where a GetMessages continues.

A partition cursor holds (stream, partition, offset). A group cursor holds (stream, group, instance,
commit-on-get, timeout) and the positions reached in the partitions reserved for that instance.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field

CURSOR_VERSION = 1


class CursorError(ValueError):
    """The cursor is not one this server issued (400 InvalidParameter)."""


@dataclass
class Cursor:
    stream: str  # the topic id, hex
    partition: int = -1  # partition cursors only
    offset: int = 0  # partition cursors only
    group: str | None = None  # group cursors: the internal group id
    instance: str = ""
    commit_on_get: bool = True
    timeout_ms: int = 30_000
    positions: dict[int, int] = field(default_factory=dict)  # group cursors: partition -> next offset

    @property
    def is_group(self) -> bool:
        return self.group is not None


def encode(c: Cursor) -> str:
    obj: dict[str, object] = {"v": CURSOR_VERSION, "s": c.stream}
    if c.group is None:
        obj.update(p=c.partition, o=c.offset)
    else:
        obj.update(
            g=c.group,
            i=c.instance,
            c=c.commit_on_get,
            t=c.timeout_ms,
            r={str(p): o for p, o in sorted(c.positions.items())},
        )
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str) -> Cursor:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        obj = json.loads(raw)
        if not isinstance(obj, dict) or obj.get("v") != CURSOR_VERSION:
            raise CursorError("unknown cursor version")
        stream = str(obj["s"])
        if "g" in obj:
            return Cursor(
                stream=stream,
                group=str(obj["g"]),
                instance=str(obj["i"]),
                commit_on_get=bool(obj["c"]),
                timeout_ms=int(obj["t"]),
                positions={int(p): int(o) for p, o in dict(obj["r"]).items()},
            )
        return Cursor(stream=stream, partition=int(obj["p"]), offset=int(obj["o"]))
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        if isinstance(e, CursorError):
            raise
        raise CursorError(f"invalid cursor: {e}") from None
