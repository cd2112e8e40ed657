"""The sans-io STOMP frame parser and encoder."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kafkite.queue.stomp_frames import (
    HEARTBEAT,
    Frame,
    FrameParser,
    Heartbeat,
    StompParseError,
    encode,
    escape,
    unescape,
)


def parse_all(data: bytes, version: str = "1.2") -> list[Frame | Heartbeat]:
    return FrameParser(version).feed(data)


def test_simple_frame_and_heartbeats() -> None:
    out = parse_all(b"\n\r\nSEND\ndestination:q\n\nhello\x00\n")
    assert out[0] is HEARTBEAT and out[1] is HEARTBEAT and out[3] is HEARTBEAT
    frame = out[2]
    assert isinstance(frame, Frame)
    assert (frame.command, frame.get("destination"), frame.body) == ("SEND", "q", b"hello")


def test_crlf_lines() -> None:
    [frame] = parse_all(b"SEND\r\ndestination:q\r\nfoo:bar\r\n\r\nbody\x00")
    assert isinstance(frame, Frame)
    assert frame.headers == [("destination", "q"), ("foo", "bar")]
    assert frame.body == b"body"


def test_content_length_body_may_hold_nuls() -> None:
    body = b"a\x00b\x00c"
    [frame] = parse_all(encode("SEND", {"destination": "q"}, body))
    assert isinstance(frame, Frame)
    assert frame.body == body
    assert frame.get("content-length") == "5"


def test_incremental_feeding_byte_by_byte() -> None:
    data = (
        encode("MESSAGE", [("a", "1"), ("b", "x:y")], b"payload")
        + b"\n"
        + encode("RECEIPT", {"receipt-id": "7"})
    )
    p = FrameParser()
    out: list[Frame | Heartbeat] = []
    for i in range(len(data)):
        out += p.feed(data[i : i + 1])
    frames = [f for f in out if isinstance(f, Frame)]
    assert [f.command for f in frames] == ["MESSAGE", "RECEIPT"]
    assert frames[0].get("b") == "x:y"
    assert frames[0].body == b"payload"
    assert p.buffered == 0


def test_repeated_header_first_wins() -> None:
    [frame] = parse_all(b"SEND\nfoo:1\nfoo:2\n\n\x00")
    assert isinstance(frame, Frame)
    assert frame.get("foo") == "1"
    assert frame.header_dict() == {"foo": "1"}


def test_header_escapes_by_version() -> None:
    [f12] = parse_all(b"SEND\nk\\cey:a\\nb\\\\c\\rd\n\n\x00", "1.2")
    assert isinstance(f12, Frame)
    assert f12.headers == [("k:ey", "a\nb\\c\rd")]
    [f10] = parse_all(b"SEND\nkey:a\\nb\n\n\x00", "1.0")
    assert isinstance(f10, Frame)
    assert f10.get("key") == "a\\nb"
    with pytest.raises(StompParseError):
        parse_all(b"SEND\nkey:a\\tb\n\n\x00", "1.2")
    with pytest.raises(StompParseError):
        parse_all(b"SEND\nkey:a\\rb\n\n\x00", "1.1")


def test_connect_frames_are_not_unescaped() -> None:
    [frame] = parse_all(b"CONNECT\nlogin:a\\cb\n\n\x00")
    assert isinstance(frame, Frame)
    assert frame.get("login") == "a\\cb"
    assert b"passcode:p\\c" in encode("CONNECTED", {"passcode": "p\\c"})


@pytest.mark.parametrize(
    "data",
    [
        b"SEND\nno-colon-here\n\n\x00",
        b"send\n\n\x00",
        b"SEND\ncontent-length:abc\n\n\x00",
        b"SEND\ncontent-length:3\n\nabcd\x00",
        b"SEND\ncontent-length:-1\n\n\x00",
        b"\rX",
        b"SE ND\n\n\x00",
        b"SEND\nk:\xff\n\n\x00",
    ],
)
def test_malformed_frames(data: bytes) -> None:
    with pytest.raises(StompParseError):
        parse_all(data)


def test_limits() -> None:
    with pytest.raises(StompParseError):
        FrameParser(max_header_bytes=100).feed(b"SEND\n" + b"x" * 200)
    with pytest.raises(StompParseError):
        FrameParser(max_frame_bytes=10).feed(b"SEND\n\n" + b"x" * 20)
    with pytest.raises(StompParseError):
        FrameParser(max_headers=2).feed(b"SEND\na:1\nb:2\nc:3\n\n\x00")


def test_incomplete_frame_waits() -> None:
    p = FrameParser()
    assert p.feed(b"SEND\ndestination:q\n\nhal") == []
    assert p.feed(b"f") == []
    [frame] = p.feed(b"\x00")
    assert isinstance(frame, Frame)
    assert frame.body == b"half"


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)


@given(
    command=st.sampled_from(["SEND", "MESSAGE", "ACK", "ERROR"]),
    headers=st.lists(st.tuples(_text.filter(bool), _text), max_size=5),
    body=st.binary(max_size=64),
    version=st.sampled_from(["1.1", "1.2"]),
    cut=st.integers(min_value=0, max_value=200),
)
def test_round_trip(
    command: str, headers: list[tuple[str, str]], body: bytes, version: str, cut: int
) -> None:
    if version == "1.1":
        headers = [(k, v) for k, v in headers if "\r" not in k + v]
    headers = [(k, v) for k, v in headers if k != "content-length"]
    data = encode(command, headers, body, version=version)
    p = FrameParser(version)
    out = p.feed(data[:cut]) + p.feed(data[cut:])
    [frame] = out
    assert isinstance(frame, Frame)
    assert frame.command == command
    assert frame.body == body
    assert [h for h in frame.headers if h[0] != "content-length"] == headers


@given(_text)
def test_escape_round_trip(text: str) -> None:
    assert unescape(escape(text, "1.2"), "1.2") == text
