"""The fault harness's checkers find each kind of anomaly in a hand-made history, and none in a clean one."""

from __future__ import annotations

import struct

from faults_history import (
    check_commits,
    check_hangs,
    check_no_strays,
    check_ownership,
    check_produce,
    check_tracebacks,
    check_transactions,
    summarize,
)
from faults_workload import parse_group_metadata


def sends(producer: str, n: int) -> list[dict[str, object]]:
    return [{"op": "send", "producer": producer, "seq": i, "value": f"{producer}-{i}"} for i in range(n)]


def ack(value: str, partition: int, offset: int) -> dict[str, object]:
    return {"op": "ack", "value": value, "partition": partition, "offset": offset}


def test_a_clean_produce_history_has_no_anomaly() -> None:
    events = [*sends("p", 3), ack("p-0", 0, 0), ack("p-1", 0, 1), ack("p-2", 1, 0)]
    final = {0: [(0, b"p-0"), (1, b"p-1")], 1: [(0, b"p-2")]}
    assert check_produce(events, final) == []


def test_lost_duplicated_and_reordered_writes_are_found() -> None:
    events = [*sends("p", 4), ack("p-0", 0, 0), ack("p-1", 0, 1), ack("p-2", 0, 2), ack("p-3", 0, 3)]
    # p-1 is gone, p-0 is there twice, p-3 landed before p-2 (and not where it was acknowledged).
    final = {0: [(0, b"p-0"), (1, b"p-0"), (2, b"p-3"), (3, b"p-2")]}
    counts = summarize(check_produce(events, final))
    assert counts["lost"] == 1
    assert counts["duplicated"] == 1
    assert counts["reordered"] >= 2  # two values away from their acknowledged offsets, one out of send order


def test_transactions_all_or_nothing() -> None:
    txns = [
        {"op": "txn", "txn": "t-0", "values": ["t-0-0", "t-0-1"], "outcome": "commit"},
        {"op": "txn", "txn": "t-1", "values": ["t-1-0", "t-1-1"], "outcome": "abort"},
        {"op": "txn", "txn": "t-2", "values": ["t-2-0", "t-2-1"], "outcome": "unknown"},
        {"op": "txn", "txn": "t-3", "values": ["t-3-0", "t-3-1"], "outcome": "commit"},
    ]
    assert check_transactions(txns, {"t-0-0", "t-0-1", "t-2-0", "t-2-1", "t-3-0", "t-3-1"}) == []
    assert check_transactions(txns, {"t-0-0", "t-0-1", "t-3-0", "t-3-1"}) == []  # unknown: none is fine
    found = check_transactions(txns, {"t-0-0", "t-1-0", "t-1-1", "t-2-1"})
    kinds = sorted((a["kind"], a["txn"]) for a in found)
    assert kinds == [("lost", "t-3"), ("partial", "t-0"), ("partial", "t-1"), ("partial", "t-2")]
    assert check_no_strays({"t-9-0", "t-0-0"}, {"t-0-0"}, "t-") == [{"kind": "partial", "stray": "t-9-0"}]


def test_two_owners_in_one_generation_are_found() -> None:
    def assign(member: str, generation: int, partitions: list[int]) -> dict[str, object]:
        return {
            "op": "assign",
            "group": "g",
            "member": member,
            "generation": generation,
            "partitions": partitions,
        }

    fine = [assign("a", 1, [0, 1]), assign("b", 1, [2]), assign("b", 2, [0, 1, 2])]
    assert check_ownership(fine) == []
    found = check_ownership([*fine, assign("c", 2, [1])])
    assert [(a["generation"], a["partition"], a["members"]) for a in found] == [(2, 1, ["b", "c"])]


def test_committed_offsets_read_back_lower_than_acknowledged_are_found() -> None:
    def commit(t: float, offset: int, ok: bool = True) -> dict[str, object]:
        return {"op": "commit", "group": "g", "t": t, "offsets": {0: offset}, "ok": ok}

    def read(t_invoke: float, offset: int | None) -> dict[str, object]:
        return {"op": "committed", "group": "g", "t_invoke": t_invoke, "offsets": {0: offset}}

    history = [commit(1.0, 10), commit(2.0, 20), commit(3.0, 5, ok=False), read(2.5, 20), read(1.5, 10)]
    assert check_commits(history) == []
    found = check_commits([*history, read(4.0, 10), read(5.0, None)])
    assert [(a["read"], a["acked"]) for a in found] == [(10, 20), (-1, 20)]


def test_requests_without_an_answer_are_hangs_unless_their_broker_was_away() -> None:
    def probe(host: str, start: float, end: float, result: str = "timeout") -> dict[str, object]:
        return {
            "op": "probe",
            "host": host,
            "api": "produce",
            "result": result,
            "t_start": start,
            "t_end": end,
        }

    faults = [{"kind": "pause", "host": "b1", "t_start": 10.0, "t_end": 15.0}]
    events = [
        probe("b1", 9.0, 34.0),
        probe("b2", 9.0, 34.0),
        probe("b1", 20.0, 45.0),
        probe("b2", 1, 2, "ok"),
    ]
    found = check_hangs(events, faults)
    assert [(a["host"], a["t_start"]) for a in found] == [("b2", 9.0), ("b1", 20.0)]


def test_librdkafkas_group_metadata_gives_the_generation_and_member() -> None:
    data = b"CGMDv2:" + struct.pack("<i", 7) + b"group\x00member-1\x00\x00"
    assert parse_group_metadata(data) == (7, "member-1")
    assert parse_group_metadata(b"CGMDv2:" + b"\xff" * 4 + b"g\x00\x00") == (-1, "")
    assert parse_group_metadata(b"nonsense") == (-1, "")


def test_tracebacks_in_broker_logs_are_crashes() -> None:
    log = (
        "2026 INFO fine\nTraceback (most recent call last):\n"
        '  File "/x/kafkite/broker/fetch.py", line 1, in handle_fetch\n    raise X\n'
        "kafkite.log.pg.db.DatabaseError: database error: gone\n"
    )
    found = check_tracebacks({"b1": log, "b2": "all good\n"})
    assert [(a["kind"], a["broker"], a["error"]) for a in found] == [
        ("crash", "b1", "kafkite.log.pg.db.DatabaseError: database error: gone")
    ]
