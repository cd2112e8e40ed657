"""kafkite's codec against hand-written protocol classes: aiokafka's and kafka-python's older ones
(``kafka.protocol.old``). For every API, version and direction such a class exists for and kafkite
implements, values drawn from kafkite's spec are encoded by kafkite and decoded by the class, and encoded by
the class and decoded by kafkite; both encodings must be the same bytes. These classes write no tagged
fields (an empty tag buffer); reading kafkite's, they must find exactly the tags kafkite wrote.

Where a class's wire layout differs from kafkite's spec and Apache Kafka's own schema (as kafka-python ships
it) agrees with kafkite in that version, the class is wrong: the case is an expected failure naming both."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from codec_support import (
    REG,
    Atom,
    HandWritten,
    MappingError,
    hand_written_classes,
    hw_check,
    hw_message_atoms,
    kafka_python_classes,
    kafkite_codec,
    kafkite_flexible,
    kafkite_message,
    kp_message_map,
    kp_valid_versions,
    ours_strategy,
)
from helpers import SLOW
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

KP = kafka_python_classes()


def _id(hw: HandWritten) -> str:
    kind = "request" if hw.is_request else "response"
    return f"{hw.library.split()[0]}-{REG.apis[hw.key].name}-v{hw.version}-{kind}"


HAND_WRITTEN = [
    hw for hw in hand_written_classes() if hw.key in REG.apis and hw.version in REG.apis[hw.key].versions
]
CASES = [pytest.param(hw, id=_id(hw)) for hw in HAND_WRITTEN]
EXAMPLES = 300 if SLOW else 8


@cache
def _atoms(hw: HandWritten) -> list[Atom]:
    try:
        return hw_message_atoms(hw)
    except MappingError as e:
        cls = KP.get((hw.key, hw.is_request))
        if cls is not None and hw.version in kp_valid_versions(cls):
            try:
                kp_message_map(cls, kafkite_message(hw.key, hw.is_request), hw.version)
            except MappingError:
                raise e from None
            pytest.xfail(f"{e}; Kafka's schema ({cls.__name__}.json) agrees with kafkite")
        raise


@cache
def _strategy(hw: HandWritten) -> st.SearchStrategy[dict[str, Any]]:
    flexible = kafkite_flexible(hw.key, hw.version, hw.is_request)
    return ours_strategy(kafkite_message(hw.key, hw.is_request).fields, hw.version, flexible)


def test_both_libraries_are_compared() -> None:
    libraries = {hw.library for hw in HAND_WRITTEN}
    assert libraries == {"aiokafka", "kafka-python (old)"}
    assert len(HAND_WRITTEN) > 100


@pytest.mark.parametrize("hw", CASES)
def test_wire_layout_matches_hand_written_schema(hw: HandWritten) -> None:
    _atoms(hw)


@pytest.mark.parametrize("hw", CASES)
@settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), report_multiple_bugs=False
)
@given(data=st.data())
def test_hand_written_and_kafkite_agree(hw: HandWritten, data: st.DataObject) -> None:
    atoms = _atoms(hw)
    value = data.draw(_strategy(hw), label="message")
    msg = kafkite_message(hw.key, hw.is_request)
    hw_check(hw, msg, kafkite_codec(hw.key, hw.version, hw.is_request), atoms, value)
