"""kafkite's codec against encoders it shares nothing with.

Two families of independent protocol classes are installed with the test extra:

* kafka-python 3's schema-driven message classes (``kafka.protocol.*``), generated at import time from Apache
  Kafka's own JSON message schemas, which kafka-python ships;
* hand-written protocol classes: aiokafka's (``aiokafka.protocol``) and kafka-python's older API
  (``kafka.protocol.old``), positional ``Schema`` tuples typed field by field.

For one API version, the field mapping between kafkite's spec and the other side is derived from the two
schemas: the fields on the wire in that version are paired in wire order (tagged fields by tag), their types
and nullability must agree, and the names must not contradict the order (a name found at another position of
the other side is a swap). Values are then drawn from a schema, encoded by one side and decoded by the other,
and compared field by field through that mapping.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import io
import pkgutil
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from kafkite.protocol.messages import MessageCodec, Registry, _default_of, registry
from kafkite.protocol.specs import FieldSpec, MessageSpec

REG: Registry = registry()
ZERO_UUID = uuid.UUID(int=0)
INT32_MIN = -(2**31)

INT_RANGES: dict[str, tuple[int, int]] = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint16": (0, 2**16 - 1),
    "uint32": (0, 2**32 - 1),
    "bitfield": (-(2**31), 2**31 - 1),  # kafka-python's name for an int32 of authorized-operation bits
}


class MappingError(AssertionError):
    """The two schemas disagree on the wire layout of a message version."""


def norm_name(name: str) -> str:
    return name.replace("_", "").lower()


def kafkite_codec(key: int, version: int, is_request: bool) -> MessageCodec:
    if key == -1:
        return REG.header("RequestHeader" if is_request else "ResponseHeader", version)
    return REG.request(key, version) if is_request else REG.response(key, version)


def kafkite_message(key: int, is_request: bool) -> MessageSpec:
    if key == -1:
        return REG._headers["RequestHeader" if is_request else "ResponseHeader"]
    api = REG.apis[key]
    return api.request if is_request else api.response


def kafkite_flexible(key: int, version: int, is_request: bool) -> bool:
    return version in kafkite_message(key, is_request).flexible


def present(f: FieldSpec, version: int, flexible: bool) -> bool:
    """On the wire in ``version``: untagged and in its versions, or tagged in a flexible version."""
    return version in f.versions and (f.tag is None or flexible)


# ----------------------------------------------------------------------------------------------- values


def canonical(value: Any) -> Any:
    """One form for the values of both sides: bytes for buffers, lists for tuples."""
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return value


def assert_same(expected: Any, actual: Any, path: str = "") -> None:
    """Field by field, with the path of the first difference in the message."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        assert expected.keys() == actual.keys(), f"{path}: fields {sorted(expected)} != {sorted(actual)}"
        for k in expected:
            assert_same(expected[k], actual[k], f"{path}.{k}")
    elif isinstance(expected, list) and isinstance(actual, list):
        assert len(expected) == len(actual), f"{path}: {len(expected)} items != {len(actual)}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_same(e, a, f"{path}[{i}]")
    else:
        assert type(expected) is type(actual) or (
            isinstance(expected, float) and isinstance(actual, float)
        ), f"{path}: {expected!r} ({type(expected).__name__}) != {actual!r} ({type(actual).__name__})"
        assert expected == actual, f"{path}: {expected!r} != {actual!r}"


def _bits_to_int(bits: set[int] | None) -> int:
    if bits is None:
        return INT32_MIN
    value = sum(1 << b for b in bits)
    return value - (1 << 32) if value >= 1 << 31 else value


def _int_to_bits(value: int) -> set[int] | None:
    bits = {b for b in range(32) if (value & 0xFFFFFFFF) >> b & 1}
    return None if bits == {31} else bits


@functools.cache
def scalar_strategy(type_name: str) -> st.SearchStrategy[Any]:
    if type_name in INT_RANGES:
        lo, hi = INT_RANGES[type_name]
        edges = sorted({lo, hi, 0, 1, max(lo, -1)})
        return st.one_of(st.sampled_from(edges), st.integers(lo, hi))
    if type_name == "bool":
        return st.booleans()
    if type_name == "float64":
        return st.floats(allow_nan=False)
    if type_name == "uuid":
        return st.one_of(st.just(ZERO_UUID), st.uuids())
    if type_name == "string":
        return st.text(max_size=12)
    if type_name in ("bytes", "records"):
        return st.binary(max_size=24)
    raise AssertionError(f"no strategy for {type_name}")


# -------------------------------------------------------------------------------- kafka-python (JSON)


def kafka_python_classes() -> dict[tuple[int, bool], Any]:
    """kafka-python's schema-driven message classes by (API key, is request); the headers under key -1."""
    with warnings.catch_warnings():  # kafka-python reads its schemas with a deprecated importlib call
        warnings.simplefilter("ignore", DeprecationWarning)
        import kafka.protocol as kp  # type: ignore[import-untyped]
        from kafka.protocol.api_header import RequestHeader, ResponseHeader  # type: ignore[import-untyped]
        from kafka.protocol.api_message import ApiMessage  # type: ignore[import-untyped]

        found: dict[tuple[int, bool], Any] = {(-1, True): RequestHeader, (-1, False): ResponseHeader}
        for info in pkgutil.walk_packages(kp.__path__, "kafka.protocol."):
            if ".old" in info.name or info.name.endswith("generate_stubs"):
                continue
            module = importlib.import_module(info.name)
            for obj in vars(module).values():
                if not inspect.isclass(obj) or not issubclass(obj, ApiMessage) or obj is ApiMessage:
                    continue
                cls: Any = obj
                if getattr(cls, "_json", None) is not None and cls._class_version is None:
                    found[(cls.API_KEY, cls.is_request())] = cls
    return found


def _parse_versions(text: str | None) -> tuple[int, int] | None:
    from kafka.protocol.schemas.fields.base import BaseField  # type: ignore[import-untyped]

    parsed = BaseField.parse_versions(text)
    return None if parsed is None else (int(parsed[0]), int(parsed[1]))


def kp_valid_versions(cls: Any) -> range:
    """The versions Kafka's schema declares valid (kafka-python itself accepts any version from 0)."""
    lo, hi = _parse_versions(cls._json["validVersions"]) or (0, -1)
    return range(lo, hi + 1)


def kp_flexible(cls: Any, version: int) -> bool:
    flex = _parse_versions(cls._json.get("flexibleVersions"))
    return flex is not None and flex[0] <= version <= flex[1]


def kp_fields(f: Any) -> list[Any]:
    """The sub-fields of a kafka-python struct or struct-array field (or of a message's top-level struct)."""
    return list(f.fields.values())


def kp_type(f: Any) -> str:
    """A kafka-python field's type in kafkite's spec vocabulary ("[]", "{}", "[]int32", "int32", ...)."""
    if f.is_struct_array():
        return "[]"
    if f.is_struct():
        return "{}"
    if f.is_array():
        return "[]" + str(f.array_of.type_str)
    return str(f.type_str)


def _kp_tagged(f: Any, version: int, flexible: bool) -> bool:
    return bool(flexible and f.tagged_field_q(version))


def _types_agree(ours: str, theirs: str) -> bool:
    if ours == theirs:
        return True
    pair = {ours, theirs}
    return pair == {"bytes", "records"} or pair == {"int32", "bitfield"}


@dataclass
class KpPair:
    ours: FieldSpec
    theirs: Any
    children: KpMap | None = None


@dataclass
class KpMap:
    """kafkite's fields of one struct paired with kafka-python's for one version."""

    pairs: list[KpPair]
    absent: list[tuple[FieldSpec, Any]] = field(default_factory=list)  # in neither side's wire format
    renames: list[str] = field(default_factory=list)


def map_kafka_python(
    ours: Sequence[FieldSpec], theirs: Sequence[Any], version: int, flexible: bool, path: str
) -> KpMap:
    ours_wire = [f for f in ours if version in f.versions and f.tag is None]
    theirs_wire = [f for f in theirs if f.for_version_q(version) and not _kp_tagged(f, version, flexible)]
    if len(ours_wire) != len(theirs_wire):
        raise MappingError(
            f"{path}: kafkite has {len(ours_wire)} untagged fields {[f.name for f in ours_wire]}, "
            f"Kafka's schema {len(theirs_wire)} {[f.name for f in theirs_wire]}"
        )
    ours_tagged = {f.tag: f for f in ours if flexible and version in f.versions and f.tag is not None}
    theirs_tagged = {
        f.tag: f for f in theirs if f.for_version_q(version) and _kp_tagged(f, version, flexible)
    }
    if ours_tagged.keys() != theirs_tagged.keys():
        raise MappingError(
            f"{path}: kafkite's tagged fields {sorted(ours_tagged)} != Kafka's {sorted(theirs_tagged)}"
        )
    out = KpMap([])
    theirs_names = {norm_name(t.name): i for i, t in enumerate(theirs_wire)}
    pairs = list(zip(ours_wire, theirs_wire, strict=True))
    pairs += [(ours_tagged[tag], theirs_tagged[tag]) for tag in sorted(ours_tagged)]
    for i, (o, t) in enumerate(pairs):
        where = f"{path}.{o.name}"
        if norm_name(o.name) != norm_name(t.name):
            elsewhere = theirs_names.get(norm_name(o.name))
            if elsewhere is not None and o.tag is None:
                raise MappingError(
                    f"{where}: at wire position {i} kafkite has {o.name}, Kafka's schema {t.name} "
                    f"(Kafka has {o.name} at position {elsewhere})"
                )
            out.renames.append(f"{where} = {t.name}")
        if not _types_agree(o.type, kp_type(t)):
            raise MappingError(f"{where}: kafkite type {o.type}, Kafka's {t.type_str}")
        ours_null = version in o.nullable or o.type == "records"
        theirs_null = bool(t.nullable_for_version_q(version))
        if ours_null != theirs_null and o.type != "records":  # kafkite's records are always nullable
            raise MappingError(
                f"{where}: kafkite {'allows' if ours_null else 'forbids'} null, Kafka's schema "
                f"{'allows' if theirs_null else 'forbids'} it"
            )
        pair = KpPair(o, t)
        if o.type in ("[]", "{}"):
            pair.children = map_kafka_python(o.fields, kp_fields(t), version, flexible, where)
            out.renames += pair.children.renames
        out.pairs.append(pair)
    theirs_by_name = {norm_name(t.name): t for t in theirs}
    for o in ours:
        if present(o, version, flexible):
            continue
        t = theirs_by_name.get(norm_name(o.name))
        if t is not None and not t.for_version_q(version) and not t.is_struct():
            out.absent.append((o, t))
    return out


def kp_message_map(cls: Any, msg: MessageSpec, version: int) -> KpMap:
    """kafkite's message spec paired with kafka-python's class in one version; MappingError if they differ."""
    flexible = version in msg.flexible
    if flexible != kp_flexible(cls, version):
        raise MappingError(f"{cls.__name__} v{version}: kafkite flexible={flexible}, Kafka's {not flexible}")
    return map_kafka_python(
        msg.fields, kp_fields(cls._struct), version, flexible, f"{cls.__name__} v{version}"
    )


def kp_check(
    cls: Any,
    msg: MessageSpec,
    codec: MessageCodec,
    version: int,
    value: dict[str, Any],
    mapping: KpMap | None = None,
) -> None:
    """One message (kafka-python-keyed, drawn from Kafka's schema) both ways between kafka-python and kafkite:
    each decodes what the other encoded to the same values, and both encode the same bytes. ``mapping`` is
    ``kp_message_map(cls, msg, version)``, computed when not given."""
    mapping = mapping or kp_message_map(cls, msg, version)
    flexible = version in msg.flexible
    is_header = msg.api_key == -1
    fields = kp_fields(cls._struct)
    expected = kp_canonical(fields, version, flexible, value)

    # kafka-python encodes, kafkite decodes (and fills the fields this version lacks with Kafka's defaults).
    theirs = kp_encode(cls, is_header, version, flexible, to_kafka_python(fields, version, value, cls))
    decoded = codec.decode_all(theirs)
    assert_same(expected, from_kafkite(mapping, decoded), "kafkite decoded")
    wrong_defaults = list(kp_absent_defaults(mapping, version, decoded))
    assert not wrong_defaults, wrong_defaults

    # kafkite encodes, kafka-python decodes.
    ours = codec.encode_bytes(to_kafkite(mapping, value))
    back = from_kafka_python(fields, version, kp_decode(cls, is_header, version, flexible, ours))
    assert_same(expected, kp_canonical(fields, version, flexible, back), "kafka-python decoded")

    # The same bytes, once kafka-python too leaves out tagged fields at their defaults.
    theirs = kp_encode(
        cls, is_header, version, flexible, to_kafka_python(fields, version, value, cls, flexible)
    )
    assert ours == theirs, f"kafkite's encoding {ours.hex()} != kafka-python's {theirs.hex()}"


def kafka_schema(cls: Any) -> Any:
    """Kafka's own schema of a kafka-python class as parsed fields, without kafka-python's patches to it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from kafka.protocol.schemas import StructField, load_json  # type: ignore[import-untyped]

        return StructField(load_json(cls.__name__))


def default_differences(ours: Sequence[FieldSpec], theirs: Sequence[Any], path: str) -> Iterator[str]:
    """Fields whose default (what kafkite's decoder fills in where a version lacks the field, and its encoder
    writes where a handler leaves the field out) differs from Kafka's, for the fields both name alike."""
    by_name = {norm_name(t.name): t for t in theirs}
    for o in ours:
        t = by_name.get(norm_name(o.name))
        if t is None:
            continue
        where = f"{path}.{o.name}"
        if t.is_struct() or t.is_struct_array():
            yield from default_differences(o.fields, kp_fields(t), where)
            if not t.is_struct_array():
                continue
        ours_default = canonical(_default_of(o, 0))
        theirs_default = canonical(_kp_default(t))
        if o.type == "records" and theirs_default == b"":
            theirs_default = None  # Kafka's records default to null
        if ours_default != theirs_default:
            yield f"{where}: kafkite's default {ours_default!r}, Kafka's {theirs_default!r}"


def kp_strategy(fields: Sequence[Any], version: int, flexible: bool) -> st.SearchStrategy[dict[str, Any]]:
    """Values for one struct, keyed by kafka-python's field names, drawn from Kafka's schema."""
    return st.fixed_dictionaries(
        {f.name: _kp_value(f, version, flexible) for f in fields if f.for_version_q(version)}
    )


def _kp_value(f: Any, version: int, flexible: bool) -> st.SearchStrategy[Any]:
    base: st.SearchStrategy[Any]
    if f.is_struct_array():
        base = st.lists(kp_strategy(kp_fields(f), version, flexible), max_size=3)
    elif f.is_struct():
        base = kp_strategy(kp_fields(f), version, flexible)
    elif f.is_array():
        base = st.lists(scalar_strategy(f.array_of.type_str), max_size=4)
    else:
        base = scalar_strategy(f.type_str)
    if f.nullable_for_version_q(version):
        base = st.one_of(st.none(), base)
    if _kp_tagged(f, version, flexible):
        # A tagged field at its default is left out of the message: draw that case often.
        base = st.one_of(st.just(None if f.is_struct() else _kp_default(f)), base)
    return base


def _kp_default(f: Any) -> Any:
    if f.type_str == "bitfield":
        return _bits_to_int(f.default)
    if f.type_str == "uuid" and f.default is None:
        return ZERO_UUID
    return f.default


def kp_struct_defaults(fields: Sequence[Any], version: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields:
        if not f.for_version_q(version):
            continue
        out[f.name] = kp_struct_defaults(kp_fields(f), version) if f.is_struct() else _kp_default(f)
    return out


def _kp_at_default(f: Any, version: int, flexible: bool, v: Any) -> bool:
    if f.is_struct():
        return v is None or kp_canonical(kp_fields(f), version, flexible, v) == kp_struct_defaults(
            kp_fields(f), version
        )
    return bool(canonical(v) == canonical(_kp_default(f)))


def kp_canonical(
    fields: Sequence[Any], version: int, flexible: bool, value: dict[str, Any]
) -> dict[str, Any]:
    """The canonical form of a kafka-python-keyed struct: a null tagged struct becomes its defaults."""
    out: dict[str, Any] = {}
    for f in fields:
        if not f.for_version_q(version):
            continue
        v = value[f.name]
        if f.is_struct():
            if v is None and _kp_tagged(f, version, flexible):
                v = kp_struct_defaults(kp_fields(f), version)
            if v is not None:
                v = kp_canonical(kp_fields(f), version, flexible, v)
        elif f.is_struct_array() and v is not None:
            v = [kp_canonical(kp_fields(f), version, flexible, item) for item in v]
        out[f.name] = canonical(v)
    return out


def to_kafka_python(
    fields: Sequence[Any], version: int, value: dict[str, Any], data_class: Any, flexible: bool | None = None
) -> Any:
    """A kafka-python message object. With ``flexible``, tagged fields at their default are not set, so
    that kafka-python leaves them out of the message as Kafka's own encoder does (given a value, kafka-python
    writes it unless it equals its own default, which is null for a struct or a UUID)."""
    vals = {}
    for f in fields:
        if not f.for_version_q(version):
            continue
        v = value[f.name]
        if flexible and _kp_tagged(f, version, flexible) and _kp_at_default(f, version, flexible, v):
            continue
        if v is not None:
            if f.is_struct():
                v = to_kafka_python(kp_fields(f), version, v, f.data_class, flexible)
            elif f.is_struct_array():
                v = [to_kafka_python(kp_fields(f), version, item, f.data_class, flexible) for item in v]
            elif f.type_str == "bitfield":
                v = _int_to_bits(v)
        vals[f.name] = v
    return data_class(version=version, **vals)


def from_kafka_python(fields: Sequence[Any], version: int, obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields:
        if not f.for_version_q(version):
            continue
        v = getattr(obj, f.name)
        if f.is_struct() and v is not None:
            v = from_kafka_python(kp_fields(f), version, v)
        elif f.is_struct_array() and v is not None:
            v = [from_kafka_python(kp_fields(f), version, item) for item in v]
        elif f.type_str == "bitfield":
            v = _bits_to_int(v)
        elif f.type_str == "uuid" and v is None:
            v = ZERO_UUID
        out[f.name] = v
    return out


def kp_encode(cls: Any, is_header: bool, version: int, flexible: bool, obj: Any) -> bytes:
    if is_header:  # headers: kafka-python encodes them without compact strings (client_id is never compact)
        return bytes(cls._struct.encode(obj, version=version, compact=False, tagged=flexible))
    from kafka.protocol.api_message import ApiMessage

    return bytes(ApiMessage.encode(obj, version=version))


def kp_decode(cls: Any, is_header: bool, version: int, flexible: bool, data: bytes) -> Any:
    """Decode a whole message with kafka-python; bytes left over are an error."""
    if is_header:
        buf = io.BytesIO(data)
        obj = cls._struct.decode(buf, version=version, compact=False, tagged=flexible, data_class=cls)
        end = buf.tell()
    else:
        decode = cls._struct.compiled_decode_from(version, compact=flexible, tagged=flexible, data_class=cls)
        obj, end = decode(memoryview(data), 0)
    assert end == len(data), f"kafka-python left {len(data) - end} of {len(data)} bytes undecoded"
    return obj


def to_kafkite(m: KpMap, value: dict[str, Any]) -> dict[str, Any]:
    """A kafka-python-keyed struct as kafkite's dict (a null tagged struct is left out: its default)."""
    out: dict[str, Any] = {}
    for p in m.pairs:
        v = value[p.theirs.name]
        if p.children is not None and v is not None:
            if p.ours.type == "{}":
                v = to_kafkite(p.children, v)
            else:
                v = [to_kafkite(p.children, item) for item in v]
        elif v is None and p.ours.type == "{}":
            continue
        out[p.ours.name] = v
    return out


def from_kafkite(m: KpMap, value: dict[str, Any]) -> dict[str, Any]:
    """kafkite's decoded dict, keyed and shaped as kafka-python's."""
    out: dict[str, Any] = {}
    for p in m.pairs:
        v = value[p.ours.name]
        if p.children is not None and v is not None:
            if p.ours.type == "{}":
                v = from_kafkite(p.children, v)
            else:
                v = [from_kafkite(p.children, item) for item in v]
        out[p.theirs.name] = canonical(v)
    return out


def kp_absent_defaults(m: KpMap, version: int, decoded: dict[str, Any], path: str = "") -> Iterator[str]:
    """Fields in neither wire format of this version: kafkite's decoded default against Kafka's default."""
    for o, t in m.absent:
        ours = canonical(decoded[o.name])
        theirs = canonical(_kp_default(t))
        if ours != theirs:
            yield f"{path}.{o.name}: kafkite's default {ours!r}, Kafka's {theirs!r}"
    for p in m.pairs:
        v = decoded[p.ours.name]
        if p.children is None or v is None:
            continue
        items = [v] if p.ours.type == "{}" else v
        for i, item in enumerate(items):
            yield from kp_absent_defaults(p.children, version, item, f"{path}.{p.ours.name}[{i}]")


# -------------------------------------------------------------------------- hand-written (positional)


@dataclass(frozen=True)
class HandWritten:
    """A hand-written request or response class of one version."""

    library: str  # "aiokafka" or "kafka-python (old)"
    cls: Any
    key: int
    version: int
    is_request: bool

    @property
    def label(self) -> str:
        return f"{self.library} {self.cls.__module__}.{self.cls.__name__}"


def hand_written_classes() -> list[HandWritten]:
    """aiokafka's and kafka-python's older protocol classes, one per library, API, version and direction."""
    out: list[HandWritten] = []
    for library, package in (("aiokafka", "aiokafka.protocol"), ("kafka-python (old)", "kafka.protocol.old")):
        pkg = importlib.import_module(package)
        seen: set[tuple[int, int, bool]] = set()
        for info in sorted(pkgutil.iter_modules(pkg.__path__, package + "."), key=lambda i: i.name):
            module = importlib.import_module(info.name)
            for name, obj in sorted(vars(module).items()):
                if not inspect.isclass(obj) or obj.__module__ != module.__name__:
                    continue
                key = getattr(obj, "API_KEY", None)
                version = getattr(obj, "API_VERSION", None)
                if not isinstance(key, int) or not isinstance(version, int) or not hasattr(obj, "SCHEMA"):
                    continue
                if "Request" in name:
                    is_request = True
                elif "Response" in name:
                    is_request = False
                else:
                    continue
                ident = (key, version, is_request)
                if ident in seen:
                    continue
                seen.add(ident)
                out.append(HandWritten(library, obj, key, version, is_request))
    return out


def _hw_types(library: str) -> Any:
    return importlib.import_module(
        "aiokafka.protocol.types" if library == "aiokafka" else "kafka.protocol.old.types"
    )


@dataclass
class Atom:
    """One unit of a message's wire format with structs flattened away: a scalar, an array (of atoms) or a
    tag buffer. In a non-flexible version a struct is nothing but its fields one after the other, so kafkite's
    spec and a hand-written class that nests fields differently still have the same atoms."""

    kind: str  # "scalar", "array", "tags" or "nullable struct" (kafkite's; no hand-written class has one)
    type: str  # scalar: a spec type ("int32", "string", ...; "bitfield" for a set of bits); else ""
    compact: bool
    path: str
    element: list[Atom] = field(default_factory=list)  # the atoms of an array's item or a nullable struct


_FIXED = frozenset(
    {"bool", "int8", "int16", "int32", "int64", "uint16", "uint32", "float64", "uuid", "bitfield"}
)


def ours_atoms(fields: Sequence[FieldSpec], version: int, flexible: bool, path: str = "") -> list[Atom]:
    atoms: list[Atom] = []
    for f in fields:
        if version not in f.versions or f.tag is not None:
            continue
        compact = flexible and not f.noflex
        where = f"{path}.{f.name}"
        if f.type == "{}" and version in f.nullable:  # a marker byte, then the struct unless null
            atoms.append(
                Atom("nullable struct", "", compact, where, ours_atoms(f.fields, version, flexible, where))
            )
        elif f.type == "{}":
            atoms += ours_atoms(f.fields, version, flexible, where)
        elif f.type == "[]":
            atoms.append(
                Atom("array", "", compact, where, ours_atoms(f.fields, version, flexible, where + "[]"))
            )
        elif f.type.startswith("[]"):
            atoms.append(
                Atom("array", "", compact, where, [Atom("scalar", f.type[2:], compact, where + "[]")])
            )
        else:
            atoms.append(Atom("scalar", f.type, compact, where))
    if flexible:
        atoms.append(Atom("tags", "", True, f"{path}.<tags>"))
    return atoms


_HW_SCALARS = {
    "Int8": "int8",
    "Int16": "int16",
    "Int32": "int32",
    "Int64": "int64",
    "UInt32": "uint32",
    "Boolean": "bool",
    "Float64": "float64",
    "UUID": "uuid",
    "BitField": "bitfield",
    "Bytes": "bytes",
    "CompactBytes": "bytes",
}


def _hw_scalar_atom(t: Any, types: Any, where: str) -> Atom:
    if isinstance(t, types.String):
        return Atom("scalar", "string", isinstance(t, types.CompactString), where)
    for attr, name in _HW_SCALARS.items():
        if t is getattr(types, attr, None):
            return Atom("scalar", name, attr.startswith("Compact"), where)
    raise MappingError(f"{where}: unknown hand-written type {t!r}")


def theirs_atoms(t: Any, types: Any, path: str = "") -> list[Atom]:
    """The atoms of a hand-written type: a Schema's fields one after the other, an array, a scalar."""
    if t is types.TaggedFields:
        return [Atom("tags", "", True, path)]
    if isinstance(t, types.Schema):
        atoms: list[Atom] = []
        for name, sub in zip(t.names, t.fields, strict=True):
            atoms += theirs_atoms(sub, types, f"{path}.{name}")
        return atoms
    if isinstance(t, types.Array):
        element = theirs_atoms(t.array_of, types, path + "[]")
        return [Atom("array", "", isinstance(t, types.CompactArray), path, element)]
    return [_hw_scalar_atom(t, types, path)]


def _leaf(path: str) -> str:
    return norm_name(path.rsplit(".", 1)[-1].removesuffix("[]"))


def match_atoms(ours: Sequence[Atom], theirs: Sequence[Atom], where: str) -> None:
    """MappingError unless both sides have the same atoms (types, compactness, tag buffers) in one order."""
    theirs_names = {_leaf(t.path): i for i, t in enumerate(theirs)}
    for i, (o, t) in enumerate(zip(ours, theirs, strict=False)):
        problem = ""
        elsewhere = theirs_names.get(_leaf(o.path), i)
        if elsewhere != i and _leaf(o.path) != _leaf(t.path):
            problem = f"kafkite's field is their {t.path}, and their {theirs[elsewhere].path} at {elsewhere}"
        elif o.kind != t.kind:
            problem = f"kafkite has {o.kind} {o.type}, theirs {t.kind} {t.type} ({t.path})"
        elif o.kind == "scalar" and not _types_agree(o.type, t.type):
            problem = f"kafkite type {o.type}, theirs {t.type} ({t.path})"
        elif o.kind != "tags" and o.type not in _FIXED and o.compact != t.compact:
            problem = f"kafkite compact={o.compact}, theirs compact={t.compact} ({t.path})"
        if problem:
            raise MappingError(f"{where}: wire position {i}, {o.path}: {problem}")
        if o.kind == "array":
            match_atoms(o.element, t.element, where)
    if len(ours) != len(theirs):
        side, extra = (
            ("kafkite", ours[len(theirs) :]) if len(ours) > len(theirs) else ("theirs", theirs[len(ours) :])
        )
        raise MappingError(f"{where}: {side} has more fields: {[a.path for a in extra]}")


def hw_message_atoms(hw: HandWritten, msg: MessageSpec | None = None) -> list[Atom]:
    """kafkite's atoms for the class's version (from ``msg``, else kafkite's spec) after checking that the
    class has the same; MappingError if not."""
    msg = msg or kafkite_message(hw.key, hw.is_request)
    flexible = hw.version in msg.flexible
    ours = ours_atoms(msg.fields, hw.version, flexible)
    match_atoms(ours, theirs_atoms(hw.cls.SCHEMA, _hw_types(hw.library)), f"{hw.label} v{hw.version}")
    return ours


def ours_flat(
    fields: Sequence[FieldSpec], version: int, flexible: bool, value: dict[str, Any], tags: bool = True
) -> list[Any]:
    """A kafkite dict as atom values (an array: a list of items, each a list of atom values), a tag buffer as
    the numbers of the tagged fields kafkite writes (those not at their default; none unless ``tags``)."""
    out: list[Any] = []
    for f in fields:
        if version not in f.versions or f.tag is not None:
            continue
        v = value[f.name]
        if f.type == "{}" and version in f.nullable:
            out.append(None if v is None else [ours_flat(f.fields, version, flexible, v, tags)])
        elif f.type == "{}":
            out += ours_flat(f.fields, version, flexible, v, tags)
        elif f.type == "[]":
            out.append(None if v is None else [ours_flat(f.fields, version, flexible, i, tags) for i in v])
        elif f.type.startswith("[]"):
            out.append(None if v is None else [[canonical(i)] for i in v])
        else:
            out.append(canonical(v))
    if flexible:
        written = [
            f.tag
            for f in fields
            if f.tag is not None
            and version in f.versions
            and canonical(value[f.name]) != canonical(_default_of(f, version))
        ]
        out.append(sorted(written) if tags else [])
    return out


def theirs_flat(t: Any, v: Any, types: Any) -> list[Any]:
    """A value a hand-written type decoded, as atom values (a tag buffer: its tag numbers)."""
    if t is types.TaggedFields:
        return [sorted(v or {})]
    if isinstance(t, types.Schema):
        fields = list(t.fields)
        if fields and fields[-1] is types.TaggedFields and len(v) == len(fields) - 1:
            v = [*v, {}]  # kafka-python's older Schema drops an empty tag buffer from nested tuples
        out: list[Any] = []
        for sub, sv in zip(fields, v, strict=True):
            out += theirs_flat(sub, sv, types)
        return out
    if isinstance(t, types.Array):
        return [None if v is None else [theirs_flat(t.array_of, item, types) for item in v]]
    return [_hw_from(t, v, types)]


def _hw_from(t: Any, v: Any, types: Any) -> Any:
    if t is getattr(types, "BitField", None):
        return _bits_to_int(v)
    if t is getattr(types, "UUID", None) and v is None:
        return ZERO_UUID
    return canonical(v)


def theirs_build(t: Any, atoms: Iterator[Any], types: Any) -> Any:
    """The value of a hand-written type from atom values (tag buffers left empty)."""
    if t is types.TaggedFields:
        next(atoms)
        return {}
    if isinstance(t, types.Schema):
        return tuple(theirs_build(sub, atoms, types) for sub in t.fields)
    if isinstance(t, types.Array):
        v = next(atoms)
        return None if v is None else [theirs_build(t.array_of, iter(item), types) for item in v]
    return _hw_to(t, next(atoms), types)


def _hw_to(t: Any, v: Any, types: Any) -> Any:
    return _int_to_bits(v) if t is getattr(types, "BitField", None) else v


def assert_atoms(atoms: Sequence[Atom], expected: Sequence[Any], actual: Sequence[Any], what: str) -> None:
    """Atom values compared one by one, a difference named by kafkite's field path."""
    assert len(expected) == len(actual), f"{what}: {len(expected)} values != {len(actual)}"
    for a, e, g in zip(atoms, expected, actual, strict=True):
        if a.kind in ("array", "nullable struct") and e is not None and g is not None:
            assert len(e) == len(g), f"{what} {a.path}: {len(e)} items != {len(g)}"
            for i, (ei, gi) in enumerate(zip(e, g, strict=True)):
                assert_atoms(a.element, ei, gi, f"{what} [{i}]")
        else:
            assert_same(e, g, f"{what} {a.path}")


def hw_check(
    hw: HandWritten, msg: MessageSpec, codec: MessageCodec, atoms: Sequence[Atom], value: dict[str, Any]
) -> None:
    """One message (drawn from kafkite's spec) both ways between a hand-written class and kafkite: each
    decodes what the other encoded to the same values (the class finds the tags kafkite wrote, and writes
    none), and without tagged fields to write both encode the same bytes."""
    flexible = hw.version in msg.flexible
    expected = ours_flat(msg.fields, hw.version, flexible, value)
    untagged = ours_flat(msg.fields, hw.version, flexible, value, tags=False)

    ours = codec.encode_bytes(value)
    assert_atoms(atoms, expected, hw_flat(hw, hw_decode(hw, ours)), f"{hw.label} decoded")

    theirs = hw_encode(hw, untagged)
    decoded = ours_flat(msg.fields, hw.version, flexible, codec.decode_all(theirs))
    assert_atoms(atoms, untagged, decoded, "kafkite decoded")

    if expected == untagged:
        assert ours == theirs, f"kafkite's encoding {ours.hex()} != {hw.label}'s {theirs.hex()}"


def hw_encode(hw: HandWritten, atoms: Sequence[Any]) -> bytes:
    types = _hw_types(hw.library)
    return bytes(hw.cls(*theirs_build(hw.cls.SCHEMA, iter(atoms), types)).encode())


def hw_flat(hw: HandWritten, values: Sequence[Any]) -> list[Any]:
    return theirs_flat(hw.cls.SCHEMA, values, _hw_types(hw.library))


def ours_strategy(
    fields: Sequence[FieldSpec], version: int, flexible: bool
) -> st.SearchStrategy[dict[str, Any]]:
    """Values for one kafkite struct drawn from kafkite's spec (for the hand-written classes)."""
    return st.fixed_dictionaries(
        {f.name: _ours_value(f, version, flexible) for f in fields if present(f, version, flexible)}
    )


def _ours_value(f: FieldSpec, version: int, flexible: bool) -> st.SearchStrategy[Any]:
    base: st.SearchStrategy[Any]
    if f.type == "[]":
        base = st.lists(ours_strategy(f.fields, version, flexible), max_size=3)
    elif f.type == "{}":
        base = ours_strategy(f.fields, version, flexible)
    elif f.type.startswith("[]"):
        base = st.lists(scalar_strategy(f.type[2:]), max_size=4)
    else:
        base = scalar_strategy(f.type)
    if version in f.nullable or f.type == "records":
        base = st.one_of(st.none(), base)
    if f.tag is not None:
        base = st.one_of(st.just(_default_of(f, version)), base)
    return base


def hw_decode(hw: HandWritten, data: bytes) -> list[Any]:
    """Decode a whole message with the hand-written class's schema; bytes left over are an error."""
    buf = io.BytesIO(data)
    values = [t.decode(buf) for t in hw.cls.SCHEMA.fields]
    assert buf.tell() == len(data), f"{hw.label} left {len(data) - buf.tell()} of {len(data)} bytes undecoded"
    return values


# ------------------------------------------------------------------------------------------ coverage


def _ranges(versions: Sequence[int]) -> str:
    out: list[str] = []
    for v in sorted(set(versions)):
        if out and out[-1].split("-")[-1] == str(v - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{v}"
        else:
            out.append(str(v))
    return ",".join(out) or "-"


def coverage_report() -> str:
    """Which versions of each of kafkite's APIs each independent encoder covers, and which none does."""
    kp = kafka_python_classes()
    hw: dict[tuple[str, int], set[int]] = {}
    for h in hand_written_classes():
        hw.setdefault((h.library, h.key), set()).add(h.version)
    rows = ["| API | kafkite | Kafka's schema (kafka-python) | aiokafka | kafka-python (old) | no encoder |"]
    rows.append("| --- | --- | --- | --- | --- | --- |")
    for key, api in sorted(REG.apis.items()):
        ours = set(api.versions)
        cls = kp.get((key, True))
        theirs = set(kp_valid_versions(cls)) if cls is not None else set()
        aio = hw.get(("aiokafka", key), set())
        old = hw.get(("kafka-python (old)", key), set())
        none = ours - theirs - aio - old
        rows.append(
            f"| {api.name} ({key}) | {_ranges(list(ours))} | {_ranges(list(theirs))} | {_ranges(list(aio))} "
            f"| {_ranges(list(old))} | {_ranges(list(none))} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    print(coverage_report())
