"""Log output: text lines (the default) or one JSON object per line (``log.format=json``).

Structured records carry their fields in ``extra={"fields": {...}}`` (see ``kafkite.server.hooks.fields``):
the JSON formatter puts them at the top level beside ``ts``, ``level``, ``logger`` and ``msg``; the text
formatter shows the message, which already names what matters.

Messages carry strings from the wire (topic and group names, client ids, principals), so a text line could be
forged by a name holding a line break. The text formatter escapes every control character of the formatted
message (``\n`` as ``\\n``, others as ``\\xNN`` / ``\\uNNNN``) and indents every line of a traceback, so that
each line that starts at the left margin is the start of one real record. JSON lines need nothing more:
``json.dumps`` escapes control characters.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, TextIO

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_RESERVED = ("ts", "level", "logger", "msg", "exc")

# C0 and C1 control characters, DEL, and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES: dict[int, str] = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPES.update({0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r", 0x2028: "\\u2028", 0x2029: "\\u2029"})
TRACEBACK_INDENT = "    "


def escape_control(text: str) -> str:
    """``text`` with its control characters written as escapes: one line, whatever it held."""
    if _CONTROL.search(text) is None:
        return text
    return text.translate(_ESCAPES)


def _indent(text: str) -> str:
    return "\n".join(TRACEBACK_INDENT + escape_control(line) for line in text.split("\n"))


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT`` lines whose message cannot break the line; tracebacks indented below it."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        record.message = escape_control(record.getMessage())
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        s = self.formatMessage(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            s += "\n" + _indent(record.exc_text)
        if record.stack_info:
            s += "\n" + _indent(self.formatStack(record.stack_info))
        return s


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        t = time.gmtime(record.created)
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"
        out: dict[str, Any] = {
            "ts": ts,
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            for k, v in extra.items():
                if v is not None and k not in _RESERVED:
                    out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, default=str, separators=(",", ":"), ensure_ascii=False)


def make_formatter(fmt: str) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else TextFormatter()


def configure_logging(config: Any, stream: TextIO | None = None) -> None:
    """Set up the root logger from ``log.level`` and ``log.format`` (replacing earlier handlers)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(make_formatter(config["log.format"]))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(config["log.level"])
