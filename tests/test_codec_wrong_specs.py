"""The checks against independent encoders catch wrong specs: each kind of mistake a spec can hold (fields
swapped, a wrong type, nullability, tag, version range, flexible range, default, a compact header string)
is made in a copy of a real spec, and the comparison with kafka-python (and with a hand-written class) must
reject it, by the wire layout or by a message that does not survive the trip."""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from codec_support import (
    REG,
    HandWritten,
    MappingError,
    default_differences,
    hand_written_classes,
    hw_check,
    hw_message_atoms,
    kafka_python_classes,
    kafka_schema,
    kafkite_message,
    kp_check,
    kp_fields,
    kp_message_map,
    kp_strategy,
    kp_valid_versions,
    norm_name,
    ours_strategy,
)
from hypothesis import HealthCheck, find, settings
from hypothesis.errors import NoSuchExample

from kafkite.protocol.messages import _compile
from kafkite.protocol.primitives import DecodeError
from kafkite.protocol.specs import FieldSpec, MessageSpec, Versions

KP = kafka_python_classes()
FIXED = ("int8", "int16", "int32", "int64", "bool", "uuid", "float64")

Mutation = Callable[[MessageSpec, int], str | None]  # changes the spec in place; what it did, or None


def _walk(
    fields: list[FieldSpec], version: int, flexible: bool
) -> Iterator[tuple[list[FieldSpec], FieldSpec]]:
    """(siblings, field) for every field of a message, depth first."""
    for f in fields:
        yield fields, f
        if f.fields:
            yield from _walk(f.fields, version, flexible)


def _on_wire(f: FieldSpec, version: int) -> bool:
    return version in f.versions and f.tag is None


def swap_adjacent(msg: MessageSpec, version: int) -> str | None:
    for siblings, f in _walk(msg.fields, version, version in msg.flexible):
        wire = [g for g in siblings if _on_wire(g, version)]
        for a, b in itertools.pairwise(wire):
            if a is f and a.type == b.type and a.type in FIXED:
                i, j = siblings.index(a), siblings.index(b)
                siblings[i], siblings[j] = b, a
                return f"swapped {a.name} and {b.name}"
    return None


def widen_int32(msg: MessageSpec, version: int) -> str | None:
    for _, f in _walk(msg.fields, version, version in msg.flexible):
        if _on_wire(f, version) and f.type == "int32":
            f.type = "int64"
            return f"{f.name} int32 -> int64"
    return None


def drop_nullable(msg: MessageSpec, version: int) -> str | None:
    for _, f in _walk(msg.fields, version, version in msg.flexible):
        if _on_wire(f, version) and version in f.nullable and f.type != "records":
            f.nullable = Versions(1, 0)
            return f"{f.name} not nullable"
    return None


def add_nullable(msg: MessageSpec, version: int) -> str | None:
    for _, f in _walk(msg.fields, version, version in msg.flexible):
        if _on_wire(f, version) and f.type == "string" and version not in f.nullable:
            f.nullable = f.versions
            return f"{f.name} nullable"
    return None


def renumber_tag(msg: MessageSpec, version: int) -> str | None:
    if version not in msg.flexible:
        return None
    for siblings, f in _walk(msg.fields, version, True):
        if f.tag is not None and version in f.versions:
            f.tag = max(g.tag or 0 for g in siblings) + 1
            return f"{f.name} tag -> {f.tag}"
    return None


def start_later(msg: MessageSpec, version: int) -> str | None:
    for _, f in _walk(msg.fields, version, version in msg.flexible):
        if _on_wire(f, version) and f.versions.lo == version:
            f.versions = Versions(version + 1, f.versions.hi)
            return f"{f.name} from v{version + 1}"
    return None


def flexible_later(msg: MessageSpec, version: int) -> str | None:
    if msg.flexible.lo != version:
        return None
    msg.flexible = Versions(version + 1, msg.flexible.hi)
    return f"flexible from v{version + 1}"


def tagged_default(msg: MessageSpec, version: int) -> str | None:
    if version not in msg.flexible:
        return None
    for _, f in _walk(msg.fields, version, True):
        if f.tag is not None and version in f.versions and f.type in ("int32", "int64"):
            f.default, f.has_default = (f.default or 0) + 7, True
            return f"tagged {f.name} default {f.default}"
    return None


def absent_default(msg: MessageSpec, version: int) -> str | None:
    """A default of a field this version lacks (what kafkite's handlers see), where Kafka has the field."""
    theirs = {norm_name(f.name) for f in kp_fields(KP[(msg.api_key, msg.name.endswith("Request"))]._struct)}
    for f in msg.fields:
        if version not in f.versions and f.type in ("int32", "int64") and norm_name(f.name) in theirs:
            f.default, f.has_default = (f.default or 0) + 7, True
            return f"absent {f.name} default {f.default}"
    return None


def compact_client_id(msg: MessageSpec, version: int) -> str | None:
    for f in msg.fields:
        if f.noflex and version in msg.flexible:
            f.noflex = False
            return f"{f.name} compact"
    return None


MUTATIONS: list[Mutation] = [
    swap_adjacent,
    widen_int32,
    drop_nullable,
    add_nullable,
    renumber_tag,
    start_later,
    flexible_later,
    tagged_default,
    absent_default,
    compact_client_id,
]


def _kp_cases() -> Iterator[tuple[Any, MessageSpec, int]]:
    for (key, is_request), cls in sorted(KP.items(), key=lambda kv: (kv[0][0], not kv[0][1])):
        if key != -1 and key not in REG.apis:
            continue
        msg = kafkite_message(key, is_request)
        for version in kp_valid_versions(cls):
            if version in msg.versions:
                yield cls, msg, version


def _first_mutant(mutation: Mutation) -> tuple[Any, MessageSpec, int, str]:
    for cls, msg, version in _kp_cases():
        mutant = copy.deepcopy(msg)
        what = mutation(mutant, version)
        if what is not None:
            return cls, mutant, version, f"{msg.name} v{version}: {what}"
    raise AssertionError(f"{mutation.__name__} applies to no spec")


def _fails(check: Callable[[], None]) -> bool:
    try:
        check()
    except (AssertionError, DecodeError, ValueError, TypeError, IndexError, KeyError, UnicodeDecodeError):
        return True
    return False


SEARCH = settings(max_examples=400, database=None, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.__name__ for m in MUTATIONS])
def test_kafka_python_comparison_rejects(mutation: Mutation) -> None:
    cls, mutant, version, what = _first_mutant(mutation)
    try:
        kp_message_map(cls, mutant, version)
    except MappingError:
        return  # caught by the wire layout
    codec = _compile(mutant, version)
    strategy = kp_strategy(kp_fields(cls._struct), version, version in mutant.flexible)
    try:
        find(
            strategy,
            lambda value: _fails(lambda: kp_check(cls, mutant, codec, version, value)),
            settings=SEARCH,
        )
    except NoSuchExample:
        pytest.fail(f"the comparison with kafka-python accepts a wrong spec: {what}")


HW_MUTATIONS = [swap_adjacent, widen_int32, start_later, flexible_later]


def _first_hw_mutant(mutation: Mutation) -> tuple[HandWritten, MessageSpec, str]:
    """The first aiokafka class that agrees with kafkite's real spec and to which the mutation applies."""
    for hw in hand_written_classes():
        if hw.library != "aiokafka" or hw.key not in REG.apis or hw.version not in REG.apis[hw.key].versions:
            continue
        try:
            hw_message_atoms(hw)
        except MappingError:
            continue  # a class that disagrees with kafkite's real spec already
        mutant = copy.deepcopy(kafkite_message(hw.key, hw.is_request))
        what = mutation(mutant, hw.version)
        if what is not None:
            return hw, mutant, f"{mutant.name} v{hw.version}: {what}"
    raise AssertionError(f"{mutation.__name__} applies to no aiokafka class")


@pytest.mark.parametrize("mutation", HW_MUTATIONS, ids=[m.__name__ for m in HW_MUTATIONS])
def test_hand_written_comparison_rejects(mutation: Mutation) -> None:
    """The same against aiokafka's classes (a swap: by a name found at another position)."""
    hw, mutant, what = _first_hw_mutant(mutation)
    try:
        atoms = hw_message_atoms(hw, mutant)
    except MappingError:
        return  # caught by the wire layout
    codec = _compile(mutant, hw.version)
    strategy = ours_strategy(mutant.fields, hw.version, hw.version in mutant.flexible)

    def check(value: dict[str, Any]) -> None:
        hw_check(hw, mutant, codec, atoms, value)

    try:
        find(strategy, lambda value: _fails(lambda: check(value)), settings=SEARCH)
    except NoSuchExample:
        pytest.fail(f"the comparison with {hw.label} accepts a wrong spec: {what}")


def present_default(msg: MessageSpec, version: int) -> str | None:
    """A default of a field on the wire (what kafkite's encoder writes when a handler leaves it out)."""
    for _, f in _walk(msg.fields, version, version in msg.flexible):
        if _on_wire(f, version) and f.type in ("int32", "int64") and f.has_default:
            f.default = f.default + 7
            return f"{f.name} default {f.default}"
    return None


def test_default_comparison_rejects() -> None:
    cls, mutant, _, what = _first_mutant(present_default)
    wrong = list(default_differences(mutant.fields, kp_fields(kafka_schema(cls)), mutant.name))
    assert wrong, f"the comparison of defaults accepts a wrong spec: {what}"


def test_mutations_leave_the_real_specs_alone() -> None:
    before = {k: dataclasses.astuple(a.request) for k, a in REG.apis.items()}
    for mutation in [*MUTATIONS, present_default]:
        _first_mutant(mutation)
    assert before == {k: dataclasses.astuple(a.request) for k, a in REG.apis.items()}
