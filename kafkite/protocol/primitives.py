"""Kafka wire primitives: fixed-width integers, unsigned varints, (compact) strings, bytes and UUIDs.

Readers are functions ``(buf, pos) -> (value, new_pos)`` over a memoryview; writers append to a bytearray.
Every reader raises :class:`DecodeError` on truncated or malformed input, never anything else.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable
from typing import Any

Buf = memoryview
Reader = Callable[[Buf, int], tuple[Any, int]]
Writer = Callable[[bytearray, Any], None]

ZERO_UUID = uuid.UUID(int=0)


class DecodeError(ValueError):
    """The bytes do not form a valid message of the expected shape."""


_S_INT8 = struct.Struct(">b")
_S_INT16 = struct.Struct(">h")
_S_INT32 = struct.Struct(">i")
_S_INT64 = struct.Struct(">q")
_S_UINT16 = struct.Struct(">H")
_S_UINT32 = struct.Struct(">I")
_S_FLOAT64 = struct.Struct(">d")


def _fixed(s: struct.Struct) -> tuple[Reader, Writer]:
    size = s.size
    unpack_from = s.unpack_from
    pack = s.pack

    def read(buf: Buf, pos: int) -> tuple[Any, int]:
        if pos + size > len(buf):
            raise DecodeError("truncated input")
        return unpack_from(buf, pos)[0], pos + size

    def write(out: bytearray, value: Any) -> None:
        try:
            out += pack(value)
        except struct.error as e:
            raise ValueError(f"value {value!r} out of range: {e}") from None

    return read, write


read_int8, write_int8 = _fixed(_S_INT8)
read_int16, write_int16 = _fixed(_S_INT16)
read_int32, write_int32 = _fixed(_S_INT32)
read_int64, write_int64 = _fixed(_S_INT64)
read_uint16, write_uint16 = _fixed(_S_UINT16)
read_uint32, write_uint32 = _fixed(_S_UINT32)
read_float64, write_float64 = _fixed(_S_FLOAT64)


def read_bool(buf: Buf, pos: int) -> tuple[bool, int]:
    if pos >= len(buf):
        raise DecodeError("truncated input")
    return buf[pos] != 0, pos + 1


def write_bool(out: bytearray, value: Any) -> None:
    out.append(1 if value else 0)


def read_uvarint(buf: Buf, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    n = len(buf)
    while True:
        if pos >= n:
            raise DecodeError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 28:
            raise DecodeError("unsigned varint is longer than 5 bytes")


def write_uvarint(out: bytearray, value: int) -> None:
    if value < 0:
        raise ValueError(f"unsigned varint cannot hold {value}")
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def uvarint_size(value: int) -> int:
    size = 1
    while value > 0x7F:
        value >>= 7
        size += 1
    return size


def read_uuid(buf: Buf, pos: int) -> tuple[uuid.UUID, int]:
    if pos + 16 > len(buf):
        raise DecodeError("truncated uuid")
    return uuid.UUID(bytes=bytes(buf[pos : pos + 16])), pos + 16


def write_uuid(out: bytearray, value: Any) -> None:
    out += (value or ZERO_UUID).bytes


def _take(buf: Buf, pos: int, length: int) -> tuple[Buf, int]:
    end = pos + length
    if end > len(buf):
        raise DecodeError(f"length {length} runs past the end of the message")
    return buf[pos:end], end


def _decode_utf8(raw: Buf) -> str:
    try:
        return str(raw, "utf-8")
    except UnicodeDecodeError as e:
        raise DecodeError(f"string is not valid UTF-8: {e}") from None


# Strings and bytes come in four flavours: (classic | compact) x (nullable | not).
# Classic lengths are int16 (strings) or int32 (bytes) with -1 for null; compact lengths are
# unsigned varints holding length + 1, with 0 for null.


def string_reader(compact: bool, nullable: bool) -> Reader:
    def read(buf: Buf, pos: int) -> tuple[Any, int]:
        if compact:
            n, pos = read_uvarint(buf, pos)
            n -= 1
        else:
            n, pos = read_int16(buf, pos)
        if n < 0:
            if n == -1 and nullable:
                return None, pos
            raise DecodeError("null or negative length for a non-nullable string")
        raw, pos = _take(buf, pos, n)
        return _decode_utf8(raw), pos

    return read


def string_writer(compact: bool, nullable: bool) -> Writer:
    def write(out: bytearray, value: Any) -> None:
        if value is None:
            if not nullable:
                raise ValueError("null given for a non-nullable string")
            if compact:
                out.append(0)
            else:
                out += b"\xff\xff"
            return
        raw = value.encode("utf-8")
        if compact:
            write_uvarint(out, len(raw) + 1)
        else:
            if len(raw) > 0x7FFF:
                raise ValueError("string longer than 32767 bytes")
            out += _S_INT16.pack(len(raw))
        out += raw

    return write


def bytes_reader(compact: bool, nullable: bool) -> Reader:
    """Bytes are returned as memoryview slices of the input: no copy."""

    def read(buf: Buf, pos: int) -> tuple[Any, int]:
        if compact:
            n, pos = read_uvarint(buf, pos)
            n -= 1
        else:
            n, pos = read_int32(buf, pos)
        if n < 0:
            if n == -1 and nullable:
                return None, pos
            raise DecodeError("null or negative length for non-nullable bytes")
        return _take(buf, pos, n)

    return read


def bytes_length_writer(compact: bool) -> Callable[[bytearray, int], None]:
    """Writes only the length prefix (-1 / 0 for null); the caller appends the payload."""

    def write(out: bytearray, n: int) -> None:
        if compact:
            write_uvarint(out, n + 1)
        else:
            out += _S_INT32.pack(n)

    return write


def bytes_writer(compact: bool, nullable: bool) -> Writer:
    write_len = bytes_length_writer(compact)

    def write(out: bytearray, value: Any) -> None:
        if value is None:
            if not nullable:
                raise ValueError("null given for non-nullable bytes")
            write_len(out, -1)
            return
        write_len(out, len(value))
        out += value

    return write


def array_length_reader(compact: bool) -> Callable[[Buf, int], tuple[int, int]]:
    """Returns the element count, -1 for a null array."""

    def read(buf: Buf, pos: int) -> tuple[int, int]:
        if compact:
            n, pos = read_uvarint(buf, pos)
            n -= 1
        else:
            n, pos = read_int32(buf, pos)
        if n < -1:
            raise DecodeError(f"negative array length {n}")
        # Every element takes at least one byte: a count larger than what is left is malformed.
        if n > len(buf) - pos:
            raise DecodeError(f"array length {n} exceeds the remaining {len(buf) - pos} bytes")
        return n, pos

    return read


def array_length_writer(compact: bool) -> Callable[[bytearray, int], None]:
    def write(out: bytearray, n: int) -> None:
        if compact:
            write_uvarint(out, n + 1)
        else:
            out += _S_INT32.pack(n)

    return write


FIXED: dict[str, tuple[Reader, Writer]] = {
    "bool": (read_bool, write_bool),
    "int8": (read_int8, write_int8),
    "int16": (read_int16, write_int16),
    "int32": (read_int32, write_int32),
    "int64": (read_int64, write_int64),
    "uint16": (read_uint16, write_uint16),
    "uint32": (read_uint32, write_uint32),
    "float64": (read_float64, write_float64),
    "uuid": (read_uuid, write_uuid),
}
