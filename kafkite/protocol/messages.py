"""Request/response codecs compiled from protocol_specs/, one decoder and one encoder per API version.

Decoded messages are plain dicts keyed by the spec's snake_case field names; arrays of structs are lists of
dicts. Fields absent from a version are filled with their defaults when decoding, and ignored when encoding.
``records`` fields decode to a memoryview of the frame (no copy). When encoding, a ``records`` field may be
bytes, a memoryview, None, or a :class:`RecordsChunks` (a list of byte strings and file ranges): the encoder
then returns several parts so that file ranges can be sent without passing through Python.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import CodeType, FunctionType
from typing import Any, Protocol

from kafkite.protocol import primitives as p
from kafkite.protocol.primitives import Buf, DecodeError
from kafkite.protocol.specs import ApiSpec, FieldSpec, MessageSpec, load_all


class Sized(Protocol):
    @property
    def size(self) -> int: ...


class RecordsChunks(list[Any]):
    """Records sent as several chunks: bytes-like objects and objects with a ``size`` (file ranges)."""

    @property
    def size(self) -> int:
        return sum(c.size if hasattr(c, "size") else len(c) for c in self)


class EncodedArray(list[Any]):
    """An array of structs that is never changed once built, whose encoding is kept with it (per codec
    version) the first time it is encoded: a response part that many requests share (the partitions of a
    large topic in Metadata) is encoded once."""

    __slots__ = ("encoded",)

    def __init__(self, items: Any = ()) -> None:
        super().__init__(items)
        self.encoded: dict[object, bytes] = {}


Part = Any  # bytes | bytearray | memoryview | a sized file range
Decoder = Callable[[Buf, int], tuple[dict[str, Any], int]]


# Record chunks of at least this many bytes (a database engine's batches) become parts of their own instead of
# being copied into the encoder's buffer: the response is written from them as they are.
OWN_PART_BYTES = 32 * 1024


class Encoder:
    """Accumulates encoded bytes; records chunks that are not bytes split the output into parts."""

    __slots__ = ("out", "parts")

    def __init__(self) -> None:
        self.out = bytearray()
        self.parts: list[Part] = []

    def add_chunks(self, chunks: RecordsChunks) -> None:
        for c in chunks:
            if isinstance(c, bytes | bytearray | memoryview) and len(c) < OWN_PART_BYTES:
                self.out += c
            else:
                if self.out:
                    self.parts.append(self.out)
                    self.out = bytearray()
                self.parts.append(c)

    def finish(self) -> list[Part]:
        if self.out or not self.parts:
            self.parts.append(self.out)
        return self.parts


StructWriter = Callable[[Encoder, dict[str, Any]], None]
ValueWriter = Callable[[Encoder, Any], None]


def _default_of(f: FieldSpec, version: int) -> Any:
    """A field's value when it is absent: its spec default, else the zero of its type (records: null)."""
    if f.has_default:
        if f.type == "uuid" and f.default is not None:
            return uuid.UUID(str(f.default))
        return f.default
    if f.type == "records":
        return None
    if f.type.startswith("[]"):
        return []
    if f.type == "{}":
        if version in f.nullable:
            return None
        return {g.name: _default_of(g, version) for g in f.fields}
    return _ZEROS.get(f.type, 0)


# Fixed-width types that struct can pack and unpack in runs (bool: any non-zero byte reads as true).
_STRUCT_CODES: dict[str, str] = {
    "bool": "?",
    "int8": "b",
    "int16": "h",
    "int32": "i",
    "int64": "q",
    "uint16": "H",
    "uint32": "I",
    "float64": "d",
}

_ZEROS: dict[str, Any] = {"bool": False, "string": "", "bytes": b"", "uuid": p.ZERO_UUID, "float64": 0.0}


def _is_default(f: FieldSpec, version: int, value: Any) -> bool:
    d = _default_of(f, version)
    if isinstance(value, memoryview):
        value = bytes(value)
    return bool(value == d)


# --------------------------------------------------------------------------------------------- decoding


def _value_reader(f: FieldSpec, version: int, flexible: bool) -> p.Reader:
    compact = flexible and not f.noflex
    nullable = version in f.nullable
    t = f.type
    if t in p.FIXED:
        return p.FIXED[t][0]
    if t == "string":
        return p.string_reader(compact, nullable)
    if t in ("bytes", "records"):
        return p.bytes_reader(compact, nullable or t == "records")
    if t == "{}":
        if nullable:
            return _nullable_struct_reader(_struct_reader(f.fields, version, flexible))
        return _struct_reader(f.fields, version, flexible)
    if t.startswith("[]"):
        elem = (
            _struct_reader(f.fields, version, flexible)
            if t == "[]"
            else _value_reader(FieldSpec("", t[2:], f.versions), version, flexible)
        )
        read_len = p.array_length_reader(compact)
        code = _STRUCT_CODES.get(t[2:])

        def read_array(buf: Buf, pos: int) -> tuple[Any, int]:
            n, pos = read_len(buf, pos)
            if n < 0:
                if nullable:
                    return None, pos
                raise DecodeError(f"null array for non-nullable field {f.name}")
            if code is not None:
                s = struct.Struct(f">{n}{code}")
                if pos + s.size > len(buf):
                    raise DecodeError("truncated array")
                return list(s.unpack_from(buf, pos)), pos + s.size
            items = []
            for _ in range(n):
                item, pos = elem(buf, pos)
                items.append(item)
            return items, pos

        return read_array
    raise AssertionError(t)


def _nullable_struct_reader(read_struct: Decoder) -> p.Reader:
    """A nullable struct: a marker byte (-1 null, 1 present) before its fields."""

    def read(buf: Buf, pos: int) -> tuple[Any, int]:
        marker, pos = p.read_int8(buf, pos)
        if marker < 0:
            return None, pos
        return read_struct(buf, pos)

    return read


def _plan_fields(
    fields: Sequence[FieldSpec], version: int, flexible: bool
) -> list[FieldSpec | tuple[FieldSpec, ...]]:
    """The fields present in ``version`` in wire order, runs of fixed-width ones grouped to pack at once."""
    plan: list[FieldSpec | tuple[FieldSpec, ...]] = []
    run: list[FieldSpec] = []
    for f in fields:
        if version not in f.versions or f.tag is not None:
            continue
        if f.type in _STRUCT_CODES:
            run.append(f)
            continue
        if run:
            plan.append(tuple(run))
            run = []
        plan.append(f)
    if run:
        plan.append(tuple(run))
    return plan


def _group_struct(group: tuple[FieldSpec, ...]) -> struct.Struct:
    return struct.Struct(">" + "".join(_STRUCT_CODES[f.type] for f in group))


_CODE: dict[str, CodeType] = {}


def _code_of(src: str, filename: str) -> CodeType:
    """The compiled source, once per distinct text: the versions of a message mostly share their structs."""
    code = _CODE.get(src)
    if code is None:
        code = _CODE[src] = compile(src, filename, "exec")
    return code


def _boot(stub: FunctionType, a: Any, b: Any) -> Any:
    """A deferred codec function's first call: compile its source, become it, run it."""
    ns = stub.__globals__
    exec(_code_of(ns["__kafkite_src__"], "<kafkite codec>"), ns)
    real = ns[ns["__kafkite_name__"]]
    stub.__code__ = real.__code__
    return real(a, b)


_BOOT_NS: dict[str, Any] = {}
exec("def boot(a, b):\n    return __kafkite_boot__(__kafkite_self__, a, b)\n", _BOOT_NS)
_BOOT_CODE: CodeType = _BOOT_NS["boot"].__code__


def _deferred(src: str, ns: dict[str, Any], name: str) -> Any:
    """A function defined by ``src`` over the names in ``ns``, compiled only when first called (compiling
    every codec of every version at start-up would cost a tenth of a second): until then a stub that, on its
    first call, takes the compiled code as its own, so whoever holds it calls the compiled code directly."""
    stub = FunctionType(_BOOT_CODE, ns, name)
    ns.update(__kafkite_src__=src, __kafkite_name__=name, __kafkite_self__=stub, __kafkite_boot__=_boot)
    return stub


def _struct_reader(fields: Sequence[FieldSpec], version: int, flexible: bool) -> Decoder:
    """A decoder for one struct of one version, compiled to Python source: the fields in wire order as
    straight-line code (runs of fixed-width fields unpacked at once), the dict built in one expression."""
    defaults: dict[str, Any] = {}
    tagged: dict[int, tuple[str, p.Reader]] = {}
    for f in fields:
        if version not in f.versions or f.tag is not None:
            defaults[f.name] = _default_of(f, version)
            if f.tag is not None and flexible and version in f.versions:
                tagged[f.tag] = (f.name, _value_reader(f, version, flexible))
    ns: dict[str, Any] = {"DecodeError": DecodeError, "read_uvarint": p.read_uvarint}
    body: list[str] = []
    values: dict[str, str] = {name: f"D{i}" for i, name in enumerate(defaults)}
    for i, name in enumerate(defaults):
        ns[f"D{i}"] = defaults[name]
    for n, item in enumerate(_plan_fields(fields, version, flexible), 1):
        if isinstance(item, tuple):
            ns[f"S{n}"] = st = _group_struct(item)
            names = [f"v{n}_{j}" for j in range(len(item))]
            body += [
                f"    end = pos + {st.size}",
                "    if end > size:",
                "        raise DecodeError('truncated input')",
                f"    {', '.join(names)}{',' if len(names) == 1 else ''} = S{n}.unpack_from(buf, pos)",
                "    pos = end",
            ]
            for g, v in zip(item, names, strict=True):
                values[g.name] = v
        else:
            ns[f"R{n}"] = _value_reader(item, version, flexible)
            body.append(f"    v{n}, pos = R{n}(buf, pos)")
            values[item.name] = f"v{n}"
    order = list(defaults) + [k for k in values if k not in defaults]
    body.append("    out = {" + ", ".join(f"{k!r}: {values[k]}" for k in order) + "}")
    if flexible:
        ns["read_tags"] = _tag_reader(tagged)
        body.append("    pos = read_tags(buf, pos, out)")
    body.append("    return out, pos")
    src = "def read(buf, pos):\n    size = len(buf)\n" + "\n".join(body) + "\n"
    read: Decoder = _deferred(src, ns, "read")
    return read


def _tag_reader(tagged: dict[int, tuple[str, p.Reader]]) -> Callable[[Buf, int, dict[str, Any]], int]:
    read_uvarint = p.read_uvarint

    def read_tags(buf: Buf, pos: int, out: dict[str, Any]) -> int:
        if pos < len(buf) and buf[pos] == 0:  # no tagged fields: the common case
            return pos + 1
        count, pos = read_uvarint(buf, pos)
        for _ in range(count):
            tag, pos = read_uvarint(buf, pos)
            size, pos = read_uvarint(buf, pos)
            end = pos + size
            if end > len(buf):
                raise DecodeError("tagged field runs past the end of the message")
            known = tagged.get(tag)
            if known is not None:
                value, used = known[1](buf[:end], pos)
                if used != end:
                    raise DecodeError(f"tagged field {known[0]} has {end - used} trailing bytes")
                out[known[0]] = value
            pos = end
        return pos

    return read_tags


# --------------------------------------------------------------------------------------------- encoding


def _value_writer(f: FieldSpec, version: int, flexible: bool) -> ValueWriter:
    compact = flexible and not f.noflex
    nullable = version in f.nullable
    t = f.type
    if t in p.FIXED:
        w = p.FIXED[t][1]
        return lambda enc, v: w(enc.out, v)
    if t == "string":
        ws = p.string_writer(compact, nullable)
        return lambda enc, v: ws(enc.out, v)
    if t == "bytes":
        wb = p.bytes_writer(compact, nullable)
        return lambda enc, v: wb(enc.out, v)
    if t == "records":
        write_len = p.bytes_length_writer(compact)

        def write_records(enc: Encoder, v: Any) -> None:
            if v is None:
                write_len(enc.out, -1)
            elif isinstance(v, RecordsChunks):
                write_len(enc.out, v.size)
                enc.add_chunks(v)
            else:
                write_len(enc.out, len(v))
                enc.out += v

        return write_records
    if t == "{}":
        sw = _struct_writer(f.fields, version, flexible)

        def write_struct(enc: Encoder, v: Any) -> None:
            if nullable:
                # A nullable struct is preceded by a marker byte: -1 for null, 1 for present.
                if v is None:
                    enc.out += b"\xff"
                    return
                enc.out += b"\x01"
            elif v is None:
                v = {}
            sw(enc, v)

        return write_struct
    if t.startswith("[]"):
        if t == "[]":
            elem = _struct_writer(f.fields, version, flexible)
        else:
            elem = _value_writer(FieldSpec("", t[2:], f.versions), version, flexible)
        write_len = p.array_length_writer(compact)

        code = _STRUCT_CODES.get(t[2:])
        packers = [struct.Struct(f">{n}{code}") for n in range(8)] if code is not None else []

        def write_array(enc: Encoder, v: Any) -> None:
            if v is None:
                if not nullable:
                    raise ValueError(f"null given for non-nullable array {f.name}")
                write_len(enc.out, -1)
                return
            n = len(v)
            if compact and n < 127:
                enc.out.append(n + 1)
            else:
                write_len(enc.out, n)
            if code is not None:
                if n:
                    enc.out += packers[n].pack(*v) if n < 8 else struct.pack(f">{n}{code}", *v)
                return
            if type(v) is EncodedArray:
                done = v.encoded.get(write_array)
                if done is None:
                    sub = Encoder()
                    for item in v:
                        elem(sub, item)
                    if sub.parts:  # chunked records are not kept: encoded where they go instead
                        for item in v:
                            elem(enc, item)
                        return
                    done = v.encoded[write_array] = bytes(sub.out)
                enc.out += done
                return
            for item in v:
                elem(enc, item)

        return write_array
    raise AssertionError(t)


def _struct_writer(fields: Sequence[FieldSpec], version: int, flexible: bool) -> StructWriter:
    """An encoder for one struct of one version, compiled to Python source: the fields in wire order as
    straight-line code, runs of fixed-width fields packed at once, leaf types written straight into the
    output buffer."""
    tagged: list[tuple[int, FieldSpec, ValueWriter]] = []
    for f in fields:
        if f.tag is not None and flexible and version in f.versions:
            tagged.append((f.tag, f, _value_writer(f, version, flexible)))
    tagged.sort(key=lambda t: t[0])
    ns: dict[str, Any] = {"struct": struct}
    body: list[str] = []
    for n, item in enumerate(_plan_fields(fields, version, flexible), 1):
        if isinstance(item, tuple):
            ns[f"S{n}"] = _group_struct(item)
            args = []
            for j, g in enumerate(item):
                ns[f"D{n}_{j}"] = _default_of(g, version)
                args.append(f"get({g.name!r}, D{n}_{j})")
            body += [
                f"        label = {'/'.join(g.name for g in item)!r}",
                f"        out += S{n}.pack({', '.join(args)})",
            ]
            continue
        ns[f"D{n}"] = _default_of(item, version)
        body.append(f"        label = {item.name!r}")
        leaf = _leaf_writer(item, version, flexible)
        if leaf is not None:
            ns[f"W{n}"] = leaf
            body.append(f"        W{n}(out, get({item.name!r}, D{n}))")
        else:
            ns[f"W{n}"] = _value_writer(item, version, flexible)
            body += [f"        W{n}(enc, get({item.name!r}, D{n}))", "        out = enc.out"]
    if flexible:
        if tagged:
            ns["write_tags"] = _tag_writer(tagged, version)
            body += ["        write_tags(enc, obj)"]
        else:
            body.append("        out.append(0)")
    if not body:
        body.append("        pass")
    src = (
        "def write(enc, obj):\n"
        "    out = enc.out\n"
        "    get = obj.get\n"
        "    label = ''\n"
        "    try:\n" + "\n".join(body) + "\n"
        "    except (ValueError, TypeError, AttributeError, struct.error) as e:\n"
        "        raise ValueError(f'field {label}: {e}') from None\n"
    )
    write: StructWriter = _deferred(src, ns, "write")
    return write


def _leaf_writer(f: FieldSpec, version: int, flexible: bool) -> Callable[[bytearray, Any], None] | None:
    """The writer of a field that never splits the output (fixed-width, string, bytes), else None."""
    compact = flexible and not f.noflex
    nullable = version in f.nullable
    if f.type in p.FIXED:
        return p.FIXED[f.type][1]
    if f.type == "string":
        return p.string_writer(compact, nullable)
    if f.type == "bytes":
        return p.bytes_writer(compact, nullable)
    return None


def _tag_writer(tagged: list[tuple[int, FieldSpec, ValueWriter]], version: int) -> StructWriter:
    def write_tags(enc: Encoder, obj: dict[str, Any]) -> None:
        present = [
            (tag, f, w) for tag, f, w in tagged if f.name in obj and not _is_default(f, version, obj[f.name])
        ]
        p.write_uvarint(enc.out, len(present))
        for tag, f, w in present:
            sub = Encoder()
            w(sub, obj[f.name])
            body = b"".join(bytes(x) for x in sub.finish())
            p.write_uvarint(enc.out, tag)
            p.write_uvarint(enc.out, len(body))
            enc.out += body

    return write_tags


# --------------------------------------------------------------------------------------------- registry


@dataclass
class MessageCodec:
    spec: MessageSpec
    version: int
    decode: Decoder
    write: StructWriter

    def encode(self, obj: dict[str, Any]) -> list[Part]:
        enc = Encoder()
        self.write(enc, obj)
        return enc.finish()

    def write_into(self, out: bytearray, obj: dict[str, Any]) -> None:
        """Append the encoding to ``out`` (for messages without chunked records)."""
        enc = Encoder()
        enc.out = out
        self.write(enc, obj)
        if enc.parts:
            raise ValueError("chunked records cannot be written into a single buffer")

    def encode_bytes(self, obj: dict[str, Any]) -> bytes:
        return b"".join(bytes(x) for x in self.encode(obj))

    def decode_all(self, data: bytes | bytearray | memoryview) -> dict[str, Any]:
        """Decode a whole buffer; trailing bytes are an error."""
        buf = memoryview(data)
        obj, pos = self.decode(buf, 0)
        if pos != len(buf):
            raise DecodeError(f"{len(buf) - pos} trailing bytes after {self.spec.name} v{self.version}")
        return obj


def _compile(spec: MessageSpec, version: int) -> MessageCodec:
    flexible = version in spec.flexible
    return MessageCodec(
        spec,
        version,
        _struct_reader(spec.fields, version, flexible),
        _struct_writer(spec.fields, version, flexible),
    )


class Registry:
    """Codecs for every API and version in protocol_specs/, compiled lazily."""

    def __init__(self) -> None:
        apis, headers = load_all()
        self.apis: dict[int, ApiSpec] = apis
        self.by_name: dict[str, ApiSpec] = {a.name: a for a in apis.values()}
        self._headers = headers
        self._cache: dict[tuple[int, int, bool], MessageCodec] = {}

    def api(self, key: int) -> ApiSpec | None:
        return self.apis.get(key)

    def request(self, key: int, version: int) -> MessageCodec:
        return self._get(key, version, True)

    def response(self, key: int, version: int) -> MessageCodec:
        return self._get(key, version, False)

    def _get(self, key: int, version: int, is_request: bool) -> MessageCodec:
        ck = (key, version, is_request)
        codec = self._cache.get(ck)
        if codec is None:
            api = self.apis[key]
            if version not in api.versions:
                raise KeyError(f"{api.name} v{version} is not supported")
            codec = _compile(api.request if is_request else api.response, version)
            self._cache[ck] = codec
        return codec

    def header(self, name: str, version: int) -> MessageCodec:
        ck = (-1 if name == "RequestHeader" else -2, version, True)
        codec = self._cache.get(ck)
        if codec is None:
            codec = _compile(self._headers[name], version)
            self._cache[ck] = codec
        return codec

    def request_header_version(self, key: int, version: int) -> int:
        api = self.apis.get(key)
        if api is not None and version in api.flexible:
            return 2
        return 1

    def response_header_version(self, key: int, version: int) -> int:
        # ApiVersions responses always use header v0 so that clients can parse them before negotiation.
        if key == 18:
            return 0
        api = self.apis.get(key)
        return 1 if api is not None and version in api.flexible else 0


_registry: Registry | None = None


def registry() -> Registry:
    global _registry
    if _registry is None:
        _registry = Registry()
    return _registry
