"""Round-trip and robustness tests for the spec-driven codecs, for every implemented API and version."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kafkite.protocol import primitives as p
from kafkite.protocol.messages import RecordsChunks, registry
from kafkite.protocol.specs import FieldSpec, SpecError, Versions, parse

REG = registry()

INT_RANGES = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint16": (0, 2**16 - 1),
    "uint32": (0, 2**32 - 1),
}


def _value(f: FieldSpec, version: int, flexible: bool) -> st.SearchStrategy[Any]:
    nullable = version in f.nullable
    t = f.type
    base: st.SearchStrategy[Any]
    if t in INT_RANGES:
        lo, hi = INT_RANGES[t]
        base = st.integers(lo, hi)
    elif t == "bool":
        base = st.booleans()
    elif t == "float64":
        base = st.floats(allow_nan=False)
    elif t == "uuid":
        base = st.uuids()
    elif t == "string":
        base = st.text(max_size=20)
    elif t in ("bytes", "records"):
        base = st.binary(max_size=40)
        nullable = nullable or t == "records"
    elif t == "{}":
        base = _struct(f.fields, version, flexible)
    elif t == "[]":
        base = st.lists(_struct(f.fields, version, flexible), max_size=3)
    else:
        base = st.lists(_value(FieldSpec("", t[2:], f.versions), version, flexible), max_size=4)
    return st.one_of(st.none(), base) if nullable else base


def _struct(fields: list[FieldSpec], version: int, flexible: bool) -> st.SearchStrategy[dict[str, Any]]:
    present = {
        f.name: _value(f, version, flexible)
        for f in fields
        if version in f.versions and (f.tag is None or flexible)
    }
    return st.fixed_dictionaries(present)


CASES = [
    (api.key, version, is_request)
    for api in REG.apis.values()
    for version in api.versions
    for is_request in (True, False)
]


def _normalise(obj: Any) -> Any:
    if isinstance(obj, memoryview):
        return bytes(obj)
    if isinstance(obj, dict):
        return {k: _normalise(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_normalise(v) for v in obj]
    return obj


def _subset(expected: Any, actual: Any) -> None:
    """Every value the test supplied comes back; decoded defaults fill the rest."""
    if isinstance(expected, dict):
        for k, v in expected.items():
            _subset(v, actual[k])
    elif isinstance(expected, list):
        assert len(expected) == len(actual)
        for e, a in zip(expected, actual, strict=True):
            _subset(e, a)
    else:
        assert expected == actual


@pytest.mark.parametrize(("key", "version", "is_request"), CASES)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip(key: int, version: int, is_request: bool, data: st.DataObject) -> None:
    api = REG.apis[key]
    msg = api.request if is_request else api.response
    codec = REG.request(key, version) if is_request else REG.response(key, version)
    obj = data.draw(_struct(msg.fields, version, version in api.flexible))
    encoded = codec.encode_bytes(obj)
    decoded = _normalise(codec.decode_all(encoded))
    _subset(obj, decoded)
    # Encoding the decoded message again gives the same bytes.
    assert codec.encode_bytes(codec.decode_all(encoded)) == encoded


@pytest.mark.parametrize(("key", "version", "is_request"), CASES[::3])
@settings(max_examples=15, deadline=None)
@given(junk=st.binary(max_size=64))
def test_garbage_raises_decode_error_only(key: int, version: int, is_request: bool, junk: bytes) -> None:
    codec = REG.request(key, version) if is_request else REG.response(key, version)
    try:
        codec.decode_all(junk)
    except p.DecodeError:
        pass


def test_truncation_is_detected_at_every_cut() -> None:
    codec = REG.request(0, 9)
    body = {
        "transactional_id": None,
        "acks": -1,
        "timeout_ms": 1000,
        "topic_data": [{"name": "t", "partition_data": [{"index": 0, "records": b"x" * 20}]}],
    }
    encoded = codec.encode_bytes(body)
    for cut in range(len(encoded)):
        with pytest.raises(p.DecodeError):
            codec.decode_all(encoded[:cut])


def test_known_bytes_for_metadata_v0_and_api_versions_v3() -> None:
    # Metadata v0: topics array with one string "ab".
    assert REG.request(3, 0).encode_bytes({"topics": [{"name": "ab"}]}) == b"\x00\x00\x00\x01\x00\x02ab"
    # ApiVersions v3 request: compact strings and an empty tag buffer.
    enc = REG.request(18, 3).encode_bytes({"client_software_name": "c", "client_software_version": "1"})
    assert enc == b"\x02c\x021\x00"


def test_tagged_fields_round_trip_and_unknown_tags_skipped() -> None:
    codec = REG.response(1, 12)
    resp = {
        "responses": [
            {
                "topic": "t",
                "partitions": [{"partition_index": 0, "current_leader": {"leader_id": 3, "leader_epoch": 7}}],
            }
        ]
    }
    enc = codec.encode_bytes(resp)
    dec = codec.decode_all(enc)
    assert dec["responses"][0]["partitions"][0]["current_leader"] == {"leader_id": 3, "leader_epoch": 7}
    # A request header v2 with an unknown tagged field (tag 9, 2 bytes) still decodes.
    hdr = REG.header("RequestHeader", 2)
    raw = hdr.encode_bytes(
        {"request_api_key": 3, "request_api_version": 12, "correlation_id": 5, "client_id": "x"}
    )
    assert raw.endswith(b"\x00")
    raw = raw[:-1] + b"\x01\x09\x02zz"
    assert hdr.decode_all(raw)["correlation_id"] == 5


def test_records_chunks_split_output_parts() -> None:
    class Range:
        size = 5

    codec = REG.response(1, 4)
    parts = codec.encode(
        {"responses": [{"topic": "t", "partitions": [{"records": RecordsChunks([b"ab", Range(), b"c"])}]}]}
    )
    assert isinstance(parts[1], Range)
    joined_len = sum(len(x) if not isinstance(x, Range) else x.size for x in parts)
    full = codec.encode_bytes({"responses": [{"topic": "t", "partitions": [{"records": b"ab12345c"}]}]})
    assert joined_len == len(full)


def test_uuid_defaults_and_versions() -> None:
    v = Versions.parse("3+")
    assert 3 in v and 2 not in v and str(v) == "3+"
    assert str(Versions.parse("none")) == "none"
    dec = REG.request(3, 12).decode_all(REG.request(3, 12).encode_bytes({"topics": [{"name": "a"}]}))
    assert dec["topics"][0]["topic_id"] == uuid.UUID(int=0)


def test_spec_parser_errors() -> None:
    with pytest.raises(SpecError):
        parse("api X key=1 versions=0\nrequest\n  a weird 0+\n")
    with pytest.raises(SpecError):
        parse("api X key=1 versions=0\nrequest\n  a int8 0+ bogus\n")


def test_nullable_struct_has_a_marker_byte() -> None:
    """A nullable struct is -1 when null, else 1 and its fields (DescribeTopicPartitions' cursor)."""
    codec = REG.request(75, 0)
    with_cursor = {"topics": [{"name": "a"}], "response_partition_limit": 5}
    cursor = {"topic_name": "a", "partition_index": 3}
    assert codec.encode_bytes({**with_cursor, "cursor": None}).hex() == "0202610000000005ff00"
    data = codec.encode_bytes({**with_cursor, "cursor": cursor})
    assert data.hex() == "0202610000000005010261000000030000"
    assert codec.decode_all(data)["cursor"] == cursor
    assert codec.decode_all(codec.encode_bytes({"topics": []}))["cursor"] is None
