"""Text logs cannot be forged by names from the wire; JSON logs stay one JSON object per line."""

from __future__ import annotations

import io
import json
import logging

import pytest

from kafkite.metrics.logfmt import TRACEBACK_INDENT, escape_control, make_formatter

FORGED = "x\n2099-01-01 00:00:00,000 ERROR kafkite.fake: INJECTED LINE"


def _emit(fmt: str, *args: object, exc: BaseException | None = None) -> str:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(make_formatter(fmt))
    logger = logging.getLogger(f"kafkite.test-escaping-{fmt}")
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    if exc is None:
        logger.info("delete topic %s by %s", *args)
    else:
        try:
            raise exc
        except type(exc):
            logger.exception("failed for %s", *args)
    return out.getvalue()


@pytest.mark.parametrize(
    "name",
    [FORGED, "a\rb", "a\x1b[31mred", "nul\x00", "ls\u2028ps\u2029", "c1\x85\x9b", "tab\there", "del\x7f"],
)
def test_text_log_lines_hold_one_record_each(name: str) -> None:
    text = _emit("text", name, "User:alice\nEVIL")
    lines = text.splitlines()
    assert len(lines) == 1, lines
    assert "INJECTED LINE" not in text or "\\n2099" in text
    assert not any(ch in lines[0] for ch in "\r\x1b\x00\u2028\u2029\x85\x9b\x7f\t")


def test_printable_text_is_unchanged() -> None:
    for s in ("orders", "tenancy/user/pool", "ключ", "emoji 🚀", "back\\slash"):
        assert escape_control(s) == s
    assert escape_control(FORGED) == FORGED.replace("\n", "\\n")


def test_traceback_lines_are_indented_so_none_looks_like_a_record() -> None:
    text = _emit("text", FORGED, exc=ValueError(f"bad name {FORGED}"))
    first, *rest = text.rstrip("\n").split("\n")
    assert "ERROR" in first and "\\n2099" in first
    assert rest and rest[0] == TRACEBACK_INDENT + "Traceback (most recent call last):"
    assert all(line.startswith(TRACEBACK_INDENT) for line in rest), rest


def test_json_lines_stay_json() -> None:
    text = _emit("json", FORGED, "User:bob\r\n")
    lines = text.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["msg"] == f"delete topic {FORGED} by User:bob\r\n"
    text = _emit("json", FORGED, exc=ValueError(FORGED))
    (line,) = text.splitlines()
    record = json.loads(line)
    assert FORGED in record["exc"]
