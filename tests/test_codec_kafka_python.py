"""kafkite's codec against kafka-python's message classes, which are generated from Apache Kafka's own JSON
schemas: for every API, version and direction both implement, values drawn from Kafka's schema are encoded
by kafka-python and decoded by kafkite, encoded by kafkite and decoded by kafka-python, and both encodings
must be the same bytes. A new spec is covered as soon as kafka-python knows its API (see codec_support.py)."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from codec_support import (
    REG,
    KpMap,
    MappingError,
    default_differences,
    kafka_python_classes,
    kafka_schema,
    kafkite_codec,
    kafkite_flexible,
    kafkite_message,
    kp_check,
    kp_fields,
    kp_message_map,
    kp_strategy,
    kp_valid_versions,
)
from helpers import SLOW
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

KP = kafka_python_classes()


def _cases() -> list[Any]:
    cases = []
    keys = [-1, *sorted(REG.apis)]
    for key in keys:
        for is_request in (True, False):
            cls = KP.get((key, is_request))
            if cls is None:
                continue
            ours = kafkite_message(key, is_request).versions
            name = "Header" if key == -1 else REG.apis[key].name
            for version in kp_valid_versions(cls):
                if version in ours:
                    kind = "request" if is_request else "response"
                    cases.append(pytest.param(key, version, is_request, id=f"{name}-v{version}-{kind}"))
    return cases


CASES = _cases()
EXAMPLES = 300 if SLOW else 8


@cache
def _mapping(key: int, version: int, is_request: bool) -> KpMap:
    return kp_message_map(KP[(key, is_request)], kafkite_message(key, is_request), version)


@cache
def _strategy(key: int, version: int, is_request: bool) -> st.SearchStrategy[dict[str, Any]]:
    cls = KP[(key, is_request)]
    return kp_strategy(kp_fields(cls._struct), version, kafkite_flexible(key, version, is_request))


def test_every_api_kafka_python_knows_is_compared() -> None:
    """Each of kafkite's APIs that kafka-python implements is compared in at least one version."""
    compared = {c.values[0] for c in CASES}
    known = {key for key, _ in KP}
    missing = sorted(REG.apis[k].name for k in REG.apis if k in known and k not in compared)
    assert not missing, f"no version in common with kafka-python: {missing}"
    assert len(CASES) > 100


@pytest.mark.parametrize(("key", "version", "is_request"), CASES)
def test_wire_layout_matches_kafkas_schema(key: int, version: int, is_request: bool) -> None:
    """Field order, types, nullability and tags of kafkite's spec agree with Kafka's schema."""
    try:
        _mapping(key, version, is_request)
    except MappingError as e:
        pytest.fail(str(e))


MESSAGES = sorted({(c.values[0], c.values[2]) for c in CASES})


@pytest.mark.parametrize(("key", "is_request"), MESSAGES)
def test_defaults_match_kafkas_schema(key: int, is_request: bool) -> None:
    """Every field's default is Kafka's: kafkite's decoder gives it where a version lacks the field, and its
    encoder writes it where a handler leaves the field out."""
    cls = KP[(key, is_request)]
    msg = kafkite_message(key, is_request)
    wrong = list(default_differences(msg.fields, kp_fields(kafka_schema(cls)), msg.name))
    assert not wrong, wrong


@pytest.mark.parametrize(("key", "version", "is_request"), CASES)
@settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), report_multiple_bugs=False
)
@given(data=st.data())
def test_kafka_python_and_kafkite_agree(
    key: int, version: int, is_request: bool, data: st.DataObject
) -> None:
    value = data.draw(_strategy(key, version, is_request), label="message")
    kp_check(
        KP[(key, is_request)],
        kafkite_message(key, is_request),
        kafkite_codec(key, version, is_request),
        version,
        value,
        _mapping(key, version, is_request),
    )
