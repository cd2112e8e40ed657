"""The history a fault run records, and the checkers that judge it (Jepsen-style: clients record what they
asked and what they were told; the checkers compare that with what the log holds at the end).

Events are plain dicts with an ``op`` and monotonic times; ``History`` appends them under a lock and can be
written as JSON lines. Each checker returns a list of anomalies (dicts with a ``kind`` and the evidence):

- ``lost``: an acknowledged write (or a committed transaction's record) missing from the final log;
- ``duplicated``: a value of an idempotent producer stored more than once;
- ``reordered``: a producer's values stored out of send order within a partition, or stored at another offset
  than the one acknowledged;
- ``partial``: a transaction seen only in part by a read_committed reader, or an aborted one seen at all;
- ``double_ownership``: one partition assigned to two members in one generation of a group;
- ``backwards``: a committed offset read back lower than one acknowledged before the read started;
- ``hang``: a request neither answered nor failed within its deadline while its broker was reachable;
- ``crash``: a request handler or a broker task that failed with a traceback (its connection closed instead of
  an error code).
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

Event = dict[str, Any]
Anomaly = dict[str, Any]
KINDS = ("lost", "duplicated", "reordered", "partial", "double_ownership", "backwards", "hang", "crash")


class History:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()
        self.t0 = time.monotonic()

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 4)

    def add(self, op: str, **fields: Any) -> Event:
        event = {"op": op, "t": self.now(), **fields}
        with self._lock:
            self.events.append(event)
        return event

    def of(self, *ops: str) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e["op"] in ops]

    def write(self, path: Path) -> None:
        with self._lock, open(path, "w") as f:
            for e in self.events:
                f.write(json.dumps(e, default=str) + "\n")


# --------------------------------------------------------------------------------------------- producers


def check_produce(events: Iterable[Event], final: dict[int, list[tuple[int, bytes]]]) -> list[Anomaly]:
    """Idempotent producers: ``send``/``ack``/``fail`` events (value, producer, seq) against ``final``
    (partition -> [(offset, value)] of the whole topic, read uncommitted)."""
    out: list[Anomaly] = []
    where: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for p, records in final.items():
        for offset, value in records:
            where[value.decode(errors="replace")].append((p, offset))
    acked: dict[str, Event] = {}
    sent: dict[str, Event] = {}
    for e in events:
        if e["op"] == "send":
            sent[e["value"]] = e
        elif e["op"] == "ack":
            acked[e["value"]] = e
    for value, e in acked.items():
        found = where.get(value)
        if not found:
            out.append({"kind": "lost", "value": value, "acked": [e["partition"], e["offset"]]})
        elif (e["partition"], e["offset"]) not in found:
            out.append(
                {"kind": "reordered", "value": value, "acked": [e["partition"], e["offset"]], "found": found}
            )
    for value, found in where.items():
        if value in sent and len(found) > 1:
            out.append({"kind": "duplicated", "value": value, "found": found})
    # Within a partition, each producer's values in send order.
    for p, records in final.items():
        last: dict[str, tuple[int, int]] = {}
        for offset, raw in records:
            e = sent.get(raw.decode(errors="replace"))
            if e is None:
                continue
            producer, seq = e["producer"], e["seq"]
            prev = last.get(producer)
            if prev is not None and seq < prev[0]:
                out.append(
                    {
                        "kind": "reordered",
                        "partition": p,
                        "producer": producer,
                        "seq": seq,
                        "offset": offset,
                        "after": list(prev),
                    }
                )
            last[producer] = (max(seq, prev[0]) if prev else seq, offset)
    return out


# ------------------------------------------------------------------------------------------ transactions


def check_transactions(events: Iterable[Event], committed_read: set[str]) -> list[Anomaly]:
    """``txn`` events (values, outcome commit/abort/unknown) against what a read_committed reader saw."""
    out: list[Anomaly] = []
    known: set[str] = set()
    for e in events:
        if e["op"] != "txn":
            continue
        values = list(e["values"])
        known.update(values)
        seen = [v for v in values if v in committed_read]
        outcome = e["outcome"]
        if seen and len(seen) != len(values):
            out.append(
                {"kind": "partial", "txn": e["txn"], "outcome": outcome, "seen": len(seen), "of": len(values)}
            )
        elif outcome == "commit" and not seen:
            out.append({"kind": "lost", "txn": e["txn"], "outcome": outcome})
        elif outcome == "abort" and seen:
            out.append(
                {"kind": "partial", "txn": e["txn"], "outcome": outcome, "seen": len(seen), "of": len(values)}
            )
    return out


def check_no_strays(committed_read: Iterable[str], known: set[str], prefix: str) -> list[Anomaly]:
    """Values a read_committed reader saw that no transaction wrote (corruption or a mix-up)."""
    return [
        {"kind": "partial", "stray": v} for v in committed_read if v.startswith(prefix) and v not in known
    ]


# ------------------------------------------------------------------------------------------------ groups


def check_ownership(events: Iterable[Event]) -> list[Anomaly]:
    """``assign`` events (member, generation, partitions): no partition held by two members of one
    generation."""
    owner: dict[tuple[str, int, int], str] = {}
    out: list[Anomaly] = []
    for e in events:
        if e["op"] != "assign" or e.get("generation", -1) < 0:
            continue
        for p in e["partitions"]:
            key = (e["group"], e["generation"], p)
            other = owner.setdefault(key, e["member"])
            if other != e["member"]:
                out.append(
                    {
                        "kind": "double_ownership",
                        "group": e["group"],
                        "generation": e["generation"],
                        "partition": p,
                        "members": [other, e["member"]],
                    }
                )
    return out


def check_commits(events: Iterable[Event]) -> list[Anomaly]:
    """``commit`` events (acknowledged offsets, with their completion time) and ``committed`` reads (with
    their invocation time): a read never returns less than an offset acknowledged before it started."""
    acks: dict[tuple[str, int], list[tuple[float, int]]] = defaultdict(list)
    reads: list[Event] = []
    for e in events:
        if e["op"] == "commit" and e.get("ok"):
            for p, off in e["offsets"].items():
                acks[(e["group"], int(p))].append((e["t"], off))
        elif e["op"] == "committed":
            reads.append(e)
    out: list[Anomaly] = []
    for r in reads:
        for p, off in r["offsets"].items():
            got = -1 if off is None or off < 0 else off
            before = [o for t, o in acks[(r["group"], int(p))] if t < r["t_invoke"]]
            if before and got < max(before):
                out.append({"kind": "backwards", "partition": int(p), "read": got, "acked": max(before)})
    return out


# -------------------------------------------------------------------------------------------------- hangs


def check_hangs(events: Iterable[Event], faults: list[Event]) -> list[Anomaly]:
    """``probe`` events that timed out although their broker was neither paused nor cut off from the clients
    at any time during the request."""
    blocked: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for f in faults:
        if f["kind"] in ("pause", "isolate-clients", "kill", "isolate"):
            blocked[f["host"]].append((f["t_start"], f.get("t_end", float("inf"))))
    out: list[Anomaly] = []
    for e in events:
        if e["op"] != "probe" or e["result"] != "timeout":
            continue
        if any(a < e["t_end"] and e["t_start"] < b for a, b in blocked[e["host"]]):
            continue
        out.append({"kind": "hang", "host": e["host"], "api": e["api"], "t_start": e["t_start"]})
    return out


def check_tracebacks(logs: dict[str, str]) -> list[Anomaly]:
    """Tracebacks in the brokers' logs (name -> text), each with the frames and error it ends with."""
    out: list[Anomaly] = []
    for name, text in logs.items():
        for block in text.split("Traceback (most recent call last):")[1:]:
            lines = block.splitlines()
            frames = [line.strip() for line in lines if line.startswith('  File "') and "/kafkite/" in line]
            error = next((line for line in lines if line and not line.startswith((" ", "\t"))), "")
            out.append({"kind": "crash", "broker": name, "at": frames[-1:], "error": error[:200]})
    return out


def summarize(anomalies: Iterable[Anomaly]) -> dict[str, int]:
    counts = dict.fromkeys(KINDS, 0)
    for a in anomalies:
        counts[a["kind"]] = counts.get(a["kind"], 0) + 1
    return counts
