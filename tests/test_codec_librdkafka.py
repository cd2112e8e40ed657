"""Request frames as librdkafka writes them: every frame decodes with kafkite's codec and encodes again to the
very same bytes. Checked on the captured corpus in tests/data and on frames captured live from confluent-kafka
producers, a group consumer, a transactional producer, a SASL/SCRAM client and the AdminClient, so that a new
librdkafka is covered too (see librdkafka_capture.py)."""

from __future__ import annotations

import pytest
from helpers import BrokerFactory, free_port
from librdkafka_capture import (
    CORPUS,
    EXPECTED_APIS,
    Frame,
    check_frame,
    listener_overrides,
    load_corpus,
    proxies,
    workload,
)

from kafkite.protocol import framing
from kafkite.protocol.messages import registry

REG = registry()


def _names(keys: set[int] | frozenset[int]) -> list[str]:
    return sorted(REG.apis[k].name if k in REG.apis else str(k) for k in keys)


def test_corpus_frames_re_encode_to_the_same_bytes() -> None:
    meta, frames = load_corpus()
    assert meta["librdkafka"], meta
    problems = [p for f in frames if (p := check_frame(f))]
    assert not problems, "\n".join(problems)
    missing = EXPECTED_APIS - {f.api_key for f in frames}
    assert not missing, f"{CORPUS.name} lacks {_names(missing)}: refresh it (librdkafka_capture.py)"


def test_live_librdkafka_frames_re_encode_to_the_same_bytes(broker_factory: BrokerFactory) -> None:
    with proxies() as (plain, sasl):
        broker = broker_factory(start=False)
        sasl_port = free_port()
        broker.overrides = listener_overrides(broker.port, sasl_port, plain, sasl)
        broker.start()
        plain.upstream = ("127.0.0.1", broker.port)
        sasl.upstream = ("127.0.0.1", sasl_port)
        expected = workload(plain.address, sasl.address)
        frames = plain.captured() + sasl.captured()
    problems = [p for f in frames if (p := check_frame(f))]
    assert not problems, "\n".join(problems)
    sent = {f.api_key for f in frames}
    assert expected <= sent, f"librdkafka sent no {_names(expected - sent)}"
    assert sasl.captured(), "nothing passed the SASL listener's proxy"


def _frame(key: int, version: int, body: dict[str, object]) -> Frame:
    data = framing.encode_request(REG, key, version, 7, "c", body)[4:]
    return Frame(key, version, data)


def test_only_librdkafkas_known_stray_bytes_are_forgiven() -> None:
    all_topics = _frame(3, 12, {"topics": None, "allow_auto_topic_creation": False})
    some_topics = _frame(3, 12, {"topics": [{"name": "t"}]})
    scram = _frame(51, 0, {"deletions": [], "upsertions": []})
    produce = _frame(0, 9, {"acks": -1, "timeout_ms": 1, "topic_data": []})
    assert check_frame(all_topics) is None
    assert check_frame(Frame(3, 12, all_topics.data + b"\x01\x00\x00")) is None
    assert check_frame(Frame(3, 12, some_topics.data + b"\x01\x00\x00")) is not None
    assert check_frame(Frame(3, 12, all_topics.data + b"\x01\x00")) is not None
    assert check_frame(Frame(51, 0, scram.data + b"\x00")) is None
    assert check_frame(Frame(51, 0, scram.data + b"\x01")) is not None
    assert check_frame(Frame(0, 9, produce.data + b"\x00\x00")) is not None
    assert check_frame(Frame(0, 2, produce.data)) is not None  # a version kafkite does not implement


@pytest.mark.parametrize("cut", [1, 5])
def test_a_frame_that_does_not_re_encode_is_reported(cut: int) -> None:
    """A truncated frame, or one whose bool is not 0 or 1 (read as true, written back as 1), is reported."""
    frame = _frame(3, 12, {"topics": [{"name": "t"}], "allow_auto_topic_creation": True})
    assert check_frame(Frame(3, 12, frame.data[:-cut])) is not None
    data = bytearray(frame.data)
    data[-3] = 2  # allow_auto_topic_creation
    assert check_frame(Frame(3, 12, bytes(data))) is not None
