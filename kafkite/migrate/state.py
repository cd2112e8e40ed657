"""Where a mirror stands: per partition, the source position, the target position and the offset syncs.

**Offset syncs.** A partition's state records, as runs ``[source offset, target offset, count]``, where every
copied record landed: a new run starts whenever the distance between the two offsets changes (a gap in the
source: transaction markers, aborted records, compaction; a gap in the target: transaction markers, records of
other writers). MirrorMaker 2 emits such a sync only now and then and estimates in between (a group committed
between two syncs resumes one record after the older one, re-reading the rest); keeping a sync at every change
of distance makes every translation exact. A target whose partition follows the key (OCI Streaming's
PutMessages) keeps ``[source offset, target partition, target offset, count]`` runs in ``spread`` instead.

**Stores.** ``Checkpoint`` is a JSON file replaced atomically that only ever describes records the target
acknowledged (the at-least-once mode, and every REST target). ``TopicState`` is a one-partition topic on the
target that the exactly-once mode writes in the same transactions as the records it describes, and reads
back read_committed on start: the state and the data commit or vanish together.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kafkite.clock import now_ms

CHECKPOINT_KIND = "kafkite-mirror-checkpoint"
STATE_TOPIC_PREFIX = "__kafkite_mirror."


class MirrorError(Exception):
    """The mirror cannot go on (a state it cannot reconcile, a refused record outside a rehearsal, ...)."""


@dataclass
class PartitionState:
    """Where the copy of one partition stands; only acknowledged (or committed) records are described."""

    topic: str
    partition: int
    start_source: int  # first source offset of the mirrored range
    next_source: int  # next source offset to copy
    first_target: int  # the target's end offset when the mirror began
    next_target: int  # the target offset after the last copied record
    copied: int = 0
    skipped: int = 0  # records the target refused (rehearsals only)
    runs: list[list[int]] = field(default_factory=list)  # [source offset, target offset, count]
    # Targets placing records by key (OCI Streaming PutMessages): [source, target partition, target, count].
    spread: list[list[int]] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.topic}/{self.partition}"

    def record(self, src_offsets: list[int], base_target: int) -> None:
        """The target acknowledged records with these source offsets at ``base_target`` onwards."""
        tgt = base_target
        runs = self.runs
        for src in src_offsets:
            if runs:
                last = runs[-1]
                if last[0] + last[2] == src and last[1] + last[2] == tgt:
                    last[2] += 1
                    tgt += 1
                    continue
            runs.append([src, tgt, 1])
            tgt += 1
        self.copied += len(src_offsets)
        self.next_source = max(self.next_source, src_offsets[-1] + 1)
        self.next_target = tgt

    def record_range(self, src_first: int, count: int, base_target: int) -> None:
        """``count`` records with consecutive source offsets from ``src_first`` landed at ``base_target``."""
        runs = self.runs
        if runs and runs[-1][0] + runs[-1][2] == src_first and runs[-1][1] + runs[-1][2] == base_target:
            runs[-1][2] += count
        else:
            runs.append([src_first, base_target, count])
        self.copied += count
        self.next_source = max(self.next_source, src_first + count)
        self.next_target = base_target + count

    def record_spread(self, src_offsets: list[int], placed: list[tuple[int, int]]) -> None:
        """Records with these source offsets landed at (target partition, target offset) each."""
        runs = self.spread
        for src, (q, tgt) in zip(src_offsets, placed, strict=True):
            if runs:
                last = runs[-1]
                if last[0] + last[3] == src and last[1] == q and last[2] + last[3] == tgt:
                    last[3] += 1
                    continue
            runs.append([src, q, tgt, 1])
        self.copied += len(src_offsets)
        self.next_source = max(self.next_source, src_offsets[-1] + 1)

    def translate(self, committed: int) -> int | None:
        """Where a group committed at source offset ``committed`` resumes on the target (None: not copied)."""
        if committed > self.next_source:
            return None
        if committed >= self.next_source:
            return self.next_target
        if committed <= self.start_source:
            return self.runs[0][1] if self.runs else self.next_target
        lo, hi = 0, len(self.runs)
        while lo < hi:  # first run ending after ``committed``
            mid = (lo + hi) // 2
            src, _, n = self.runs[mid]
            if src + n <= committed:
                lo = mid + 1
            else:
                hi = mid
        if lo == len(self.runs):
            return self.next_target
        src, tgt, _ = self.runs[lo]
        return tgt + max(0, committed - src)

    def target_range(self, upto_source: int) -> tuple[int, int] | None:
        """The target offsets [first, end) holding the copies of source records before ``upto_source``."""
        end = self.translate(upto_source)
        if end is None:
            return None
        first = self.runs[0][1] if self.runs else self.first_target
        return first, end


def translate_spread(
    states: list[PartitionState], committed: dict[int, int], next_targets: dict[int, int]
) -> dict[int, tuple[int, bool]]:
    """Target offsets for a group on a target that places records by key.

    ``committed`` is the group's committed source offset per source partition (a partition without one
    counts as not consumed at all); ``next_targets`` is the offset after the last copied record of each target
    partition. Returns, per target partition, (offset to resume at, exact): the first copied record there
    that the group has not consumed, and whether every record before it was consumed (when records of a
    consumed and an unconsumed source range interleave in one target partition no offset is exact, and the
    earliest unconsumed one is given: nothing is lost, some records are read again).
    """
    first_unconsumed: dict[int, int] = {}
    last_consumed: dict[int, int] = {}
    for st in states:
        c = committed.get(st.partition, st.start_source)
        for src, q, tgt, n in st.spread:
            if src + n <= c:  # all consumed
                last_consumed[q] = max(last_consumed.get(q, -1), tgt + n - 1)
            elif src >= c:  # none consumed
                first_unconsumed[q] = min(first_unconsumed.get(q, tgt), tgt)
            else:
                k = c - src
                last_consumed[q] = max(last_consumed.get(q, -1), tgt + k - 1)
                first_unconsumed[q] = min(first_unconsumed.get(q, tgt + k), tgt + k)
    out: dict[int, tuple[int, bool]] = {}
    for q in sorted(set(first_unconsumed) | set(last_consumed) | set(next_targets)):
        resume = first_unconsumed.get(q, next_targets.get(q, last_consumed.get(q, -1) + 1))
        out[q] = (resume, last_consumed.get(q, -1) < resume)
    return out


# ---------------------------------------------------------------------------------------------- file store


@dataclass
class Checkpoint:
    path: Path
    source: str
    target: str
    partitions: dict[str, PartitionState] = field(default_factory=dict)
    # Target partition -> next offset, per topic, for targets that place records by key.
    spread_ends: dict[str, dict[int, int]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, source: str, target: str) -> Checkpoint:
        if not path.exists():
            return cls(path, source, target)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise MirrorError(f"cannot read the checkpoint {path}: {e}") from e
        if data.get("kind") != CHECKPOINT_KIND:
            raise MirrorError(f"{path} is not a mirror checkpoint")
        if data.get("source") != source or data.get("target") != target:
            raise MirrorError(
                f"{path} belongs to a mirror from {data.get('source')} to {data.get('target')}; "
                "pass another --checkpoint or delete it to start over"
            )
        cp = cls(path, source, target)
        for d in data.get("partitions", []):
            st = PartitionState(**d)
            cp.partitions[st.key] = st
        for t, ends in (data.get("spread_ends") or {}).items():
            cp.spread_ends[t] = {int(q): int(o) for q, o in ends.items()}
        return cp

    def save(self) -> None:
        data: dict[str, Any] = {
            "kind": CHECKPOINT_KIND,
            "version": 1,
            "source": self.source,
            "target": self.target,
            "saved_at_ms": now_ms(),
            "partitions": [asdict(s) for s in self.partitions.values()],
        }
        if self.spread_ends:
            data["spread_ends"] = {t: {str(q): o for q, o in e.items()} for t, e in self.spread_ends.items()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(data, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        try:
            fd = os.open(self.path.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


def default_checkpoint_path(source: str, target: str) -> Path:
    tag = hashlib.sha256(f"{source}\n{target}".encode()).hexdigest()[:12]
    return Path(f"mirror-checkpoint-{tag}.json")


def default_mirror_name(source: str, target: str) -> str:
    return "m" + hashlib.sha256(f"{source}\n{target}".encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------- topic store


def state_topic(name: str) -> str:
    return f"{STATE_TOPIC_PREFIX}{name}"


def sync_record(st: PartitionState, new_runs: list[list[int]]) -> tuple[bytes, bytes]:
    """The (key, value) of one offset-sync record: where the partition stands after a transaction and the
    runs that transaction added."""
    value = {
        "t": st.topic,
        "p": st.partition,
        "s0": st.start_source,
        "t0": st.first_target,
        "ns": st.next_source,
        "nt": st.next_target,
        "sk": st.skipped,
        "r": new_runs,
    }
    return st.key.encode(), json.dumps(value, separators=(",", ":")).encode()


def fold_sync(states: dict[str, PartitionState], value: bytes) -> None:
    """Apply one offset-sync record (in log order) to ``states``."""
    d = json.loads(value)
    key = f"{d['t']}/{d['p']}"
    st = states.get(key)
    if st is None:
        st = states[key] = PartitionState(d["t"], int(d["p"]), d["s0"], d["s0"], d["t0"], d["t0"])
    for src, tgt, n in d.get("r", []):
        st.record_range(int(src), int(n), int(tgt))
    st.next_source = max(st.next_source, int(d["ns"]))
    st.next_target = int(d["nt"])
    st.skipped = int(d.get("sk", 0))
