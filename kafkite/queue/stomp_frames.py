"""STOMP 1.0-1.2 frames without I/O: an incremental parser and an encoder.

A frame is a command line, header lines ``name:value``, an empty line, a body and a NUL byte. Lines end with
LF or CRLF. A ``content-length`` header gives the body's exact size (it may then contain NULs); otherwise
the body runs to the first NUL. End-of-lines between frames are heart-beats. From 1.1 on, header names and
values escape ``\\n``, ``:`` and ``\\\\`` (1.2 also ``\\r``) as ``\\n``, ``\\c``, ``\\\\`` and ``\\r``;
CONNECT and CONNECTED frames are never escaped. When a header is repeated, the first value counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_FRAME_BYTES = 16 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 128

_UNESCAPE = {"n": "\n", "c": ":", "\\": "\\", "r": "\r"}
_NO_ESCAPE_COMMANDS = frozenset({"CONNECT", "CONNECTED"})


class StompParseError(ValueError):
    """The peer sent bytes that are not a STOMP frame; the connection cannot go on."""


@dataclass
class Frame:
    command: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name``."""
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def header_dict(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for k, v in self.headers:
            out.setdefault(k, v)
        return out


class Heartbeat:
    """An end-of-line received between frames."""

    def __repr__(self) -> str:
        return "Heartbeat()"


HEARTBEAT = Heartbeat()


def unescape(text: str, version: str) -> str:
    if version == "1.0" or "\\" not in text:
        return text
    out = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            nxt = text[i + 1 : i + 2]
            if nxt not in _UNESCAPE or (nxt == "r" and version == "1.1"):
                raise StompParseError(f"undefined escape sequence \\{nxt} in a header")
            out.append(_UNESCAPE[nxt])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def escape(text: str, version: str) -> str:
    if version == "1.0":
        return text
    text = text.replace("\\", "\\\\").replace("\n", "\\n").replace(":", "\\c")
    if version != "1.1":
        text = text.replace("\r", "\\r")
    return text


class FrameParser:
    """Feed bytes in, get frames and heart-beats out. ``version`` sets the header escaping rules."""

    def __init__(
        self,
        version: str = "1.2",
        *,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        max_header_bytes: int = MAX_HEADER_BYTES,
        max_headers: int = MAX_HEADERS,
    ) -> None:
        self.version = version
        self.max_frame_bytes = max_frame_bytes
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame | Heartbeat]:
        self._buf += data
        out: list[Frame | Heartbeat] = []
        while True:
            item = self._next()
            if item is None:
                return out
            out.append(item)

    def _next(self) -> Frame | Heartbeat | None:
        buf = self._buf
        if not buf:
            return None
        if buf[0] == 0x0A:
            del buf[:1]
            return HEARTBEAT
        if buf[0] == 0x0D:
            if len(buf) < 2:
                return None
            if buf[1] != 0x0A:
                raise StompParseError("a carriage return not followed by a line feed")
            del buf[:2]
            return HEARTBEAT
        # Command and headers: lines up to the first empty one.
        lines: list[str] = []
        pos = 0
        while True:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if len(buf) > self.max_header_bytes:
                    raise StompParseError(f"frame headers are longer than {self.max_header_bytes} bytes")
                return None
            if nl > self.max_header_bytes:
                raise StompParseError(f"frame headers are longer than {self.max_header_bytes} bytes")
            end = nl - 1 if nl > pos and buf[nl - 1] == 0x0D else nl
            try:
                line = bytes(buf[pos:end]).decode("utf-8")
            except UnicodeDecodeError:
                raise StompParseError("frame headers are not UTF-8") from None
            pos = nl + 1
            if not line:
                break
            lines.append(line)
            if len(lines) > self.max_headers + 1:
                raise StompParseError(f"a frame has more than {self.max_headers} headers")
        command = lines[0]
        if not command.isascii() or not command.isalpha() or not command.isupper():
            raise StompParseError(f"invalid command {command[:40]!r}")
        version = "1.0" if command in _NO_ESCAPE_COMMANDS else self.version
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise StompParseError(f"header line without a colon: {line[:60]!r}")
            headers.append((unescape(name, version), unescape(value, version)))
        length_text = next((v for k, v in headers if k == "content-length"), None)
        if length_text is not None:
            try:
                length = int(length_text)
            except ValueError:
                raise StompParseError(f"invalid content-length {length_text!r}") from None
            if length < 0 or length > self.max_frame_bytes:
                raise StompParseError(f"content-length {length} is out of range")
            if len(buf) < pos + length + 1:
                return None
            if buf[pos + length] != 0:
                raise StompParseError("the frame body is not followed by a NUL byte")
            body = bytes(buf[pos : pos + length])
            del buf[: pos + length + 1]
        else:
            nul = buf.find(b"\x00", pos)
            if nul < 0:
                if len(buf) - pos > self.max_frame_bytes:
                    raise StompParseError(f"frame body is larger than {self.max_frame_bytes} bytes")
                return None
            body = bytes(buf[pos:nul])
            del buf[: nul + 1]
        return Frame(command, headers, body)


def encode(
    command: str,
    headers: list[tuple[str, str]] | dict[str, str] | None = None,
    body: bytes = b"",
    *,
    version: str = "1.2",
    content_length: bool = True,
) -> bytes:
    """One frame as bytes; adds ``content-length`` for a non-empty body unless told not to."""
    items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    if body and content_length and not any(k == "content-length" for k, _ in items):
        items.append(("content-length", str(len(body))))
    v = "1.0" if command in _NO_ESCAPE_COMMANDS else version
    lines = [command] + [f"{escape(k, v)}:{escape(val, v)}" for k, val in items]
    return ("\n".join(lines) + "\n\n").encode("utf-8") + body + b"\x00"
