"""Server-side partition assignors of consumer groups: ``uniform`` (the default) and ``range``.

An assignor gets every member's subscribed topic ids and current target assignment, and the partition count
of each subscribed topic, and returns the new target assignment of every member.

``uniform`` balances partitions over the members (their counts differ by at most one when they subscribe to
the same topics; as close as subscriptions allow otherwise) and is sticky: a member keeps every partition it
had that it may still own within its share, and the members already holding the most are the ones given the
larger shares, so a member joining or leaving moves as few partitions as balance requires.

``range`` gives each subscriber of a topic one consecutive range of its partitions, members ordered by
instance id (static members first) then member id, so topics with the same partition count are
co-partitioned.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

TopicId = uuid.UUID
Assignment = dict[TopicId, frozenset[int]]

UNIFORM = "uniform"
RANGE = "range"


class AssignorError(Exception):
    """The assignment cannot be computed (a subscribed topic has no metadata)."""


@dataclass(frozen=True)
class MemberSpec:
    member_id: str
    instance_id: str | None
    subscribed: frozenset[TopicId]
    current: Mapping[TopicId, frozenset[int]] = field(default_factory=dict)


class Assignor(Protocol):
    name: str

    def assign(
        self, members: Sequence[MemberSpec], partitions: Mapping[TopicId, int]
    ) -> dict[str, Assignment]:
        """The new target assignment of every member (an entry for each, possibly empty)."""
        ...


def _freeze(assignment: Mapping[TopicId, set[int]]) -> Assignment:
    return {t: frozenset(ps) for t, ps in assignment.items() if ps}


def _check_topics(members: Sequence[MemberSpec], partitions: Mapping[TopicId, int]) -> None:
    for m in members:
        for t in m.subscribed:
            if t not in partitions:
                raise AssignorError(f"member {m.member_id} is subscribed to topic {t} without metadata")


class UniformAssignor:
    name = UNIFORM

    def assign(
        self, members: Sequence[MemberSpec], partitions: Mapping[TopicId, int]
    ) -> dict[str, Assignment]:
        if not members:
            return {}
        _check_topics(members, partitions)
        subscriptions = {m.subscribed for m in members}
        if len(subscriptions) == 1:
            return self._homogeneous(members, partitions)
        return self._heterogeneous(members, partitions)

    @staticmethod
    def _retained(
        members: Sequence[MemberSpec], partitions: Mapping[TopicId, int]
    ) -> dict[str, list[tuple[TopicId, int]]]:
        """What each member has and may keep: subscribed, existing, and not claimed by an earlier member."""
        claimed: set[tuple[TopicId, int]] = set()
        retained: dict[str, list[tuple[TopicId, int]]] = {}
        for m in members:
            keep = []
            for t in sorted(m.current, key=str):
                if t not in m.subscribed:
                    continue
                count = partitions.get(t, 0)
                for p in sorted(m.current[t]):
                    if p < count and (t, p) not in claimed:
                        claimed.add((t, p))
                        keep.append((t, p))
            retained[m.member_id] = keep
        return retained

    def _homogeneous(
        self, members: Sequence[MemberSpec], partitions: Mapping[TopicId, int]
    ) -> dict[str, Assignment]:
        topics = sorted(members[0].subscribed, key=str)
        total = sum(partitions[t] for t in topics)
        n = len(members)
        minimum, extra = divmod(total, n)
        retained = self._retained(members, partitions)
        # The members holding the most get the larger shares: fewer partitions move.
        order = sorted(range(n), key=lambda i: -len(retained[members[i].member_id]))
        quota = {members[i].member_id: minimum + (1 if rank < extra else 0) for rank, i in enumerate(order)}
        result: dict[str, dict[TopicId, set[int]]] = {m.member_id: {} for m in members}
        taken: set[tuple[TopicId, int]] = set()
        for m in members:
            for t, p in retained[m.member_id][: quota[m.member_id]]:
                result[m.member_id].setdefault(t, set()).add(p)
                taken.add((t, p))
        unassigned = [(t, p) for t in topics for p in range(partitions[t]) if (t, p) not in taken]
        it = iter(unassigned)
        for m in members:
            room = quota[m.member_id] - sum(len(ps) for ps in result[m.member_id].values())
            for _ in range(room):
                nxt = next(it, None)
                if nxt is None:
                    break
                result[m.member_id].setdefault(nxt[0], set()).add(nxt[1])
        return {mid: _freeze(a) for mid, a in result.items()}

    def _heterogeneous(
        self, members: Sequence[MemberSpec], partitions: Mapping[TopicId, int]
    ) -> dict[str, Assignment]:
        index = {m.member_id: i for i, m in enumerate(members)}
        subscribers: dict[TopicId, list[int]] = {}
        for i, m in enumerate(members):
            for t in m.subscribed:
                subscribers.setdefault(t, []).append(i)
        owner: dict[tuple[TopicId, int], int] = {}
        load = [0] * len(members)
        for mid, keep in self._retained(members, partitions).items():
            for tp in keep:
                owner[tp] = index[mid]
                load[index[mid]] += 1
        # Topics with the most partitions per subscriber first: the hardest to balance.
        topics = sorted(
            subscribers, key=lambda t: (-partitions[t] / len(subscribers[t]), len(subscribers[t]), str(t))
        )
        for t in topics:
            for p in range(partitions[t]):
                if (t, p) not in owner:
                    best = min(subscribers[t], key=lambda i: (load[i], i))
                    owner[(t, p)] = best
                    load[best] += 1
        # Balance: move a partition from a subscriber with two more than another subscriber of its topic.
        for _ in range(4 * max(len(owner), 1)):
            moved = False
            for t in topics:
                subs = subscribers[t]
                if len(subs) < 2:
                    continue
                lightest = min(subs, key=lambda i: (load[i], i))
                held = [(load[owner[(t, p)]], owner[(t, p)], p) for p in range(partitions[t])]
                held = [h for h in held if h[0] > load[lightest] + 1]
                if not held:
                    continue
                _, heaviest, p = max(held, key=lambda h: (h[0], -h[1], -h[2]))
                owner[(t, p)] = lightest
                load[heaviest] -= 1
                load[lightest] += 1
                moved = True
            if not moved:
                break
        result: dict[str, dict[TopicId, set[int]]] = {m.member_id: {} for m in members}
        for (t, p), i in owner.items():
            result[members[i].member_id].setdefault(t, set()).add(p)
        return {mid: _freeze(a) for mid, a in result.items()}


class RangeAssignor:
    name = RANGE

    def assign(
        self, members: Sequence[MemberSpec], partitions: Mapping[TopicId, int]
    ) -> dict[str, Assignment]:
        if not members:
            return {}
        _check_topics(members, partitions)
        ordered = sorted(
            members,
            key=lambda m: (0, m.instance_id, "") if m.instance_id is not None else (1, "", m.member_id),
        )
        result: dict[str, dict[TopicId, set[int]]] = {m.member_id: {} for m in members}
        for t in sorted({t for m in members for t in m.subscribed}, key=str):
            subs = [m for m in ordered if t in m.subscribed]
            count = partitions[t]
            minimum, extra = divmod(count, len(subs))
            start = 0
            for i, m in enumerate(subs):
                size = minimum + (1 if i < extra else 0)
                if size:
                    result[m.member_id][t] = set(range(start, start + size))
                start += size
        return {mid: _freeze(a) for mid, a in result.items()}


ASSIGNORS: dict[str, Assignor] = {UNIFORM: UniformAssignor(), RANGE: RangeAssignor()}
# Kafka's class names for the same assignors (group.consumer.assignors accepts either).
CLASS_NAMES = {
    "org.apache.kafka.coordinator.group.assignor.UniformAssignor": UNIFORM,
    "org.apache.kafka.coordinator.group.assignor.RangeAssignor": RANGE,
}


def assignor_names(configured: Sequence[str]) -> list[str]:
    """``group.consumer.assignors`` as assignor names (ValueError naming an unknown one)."""
    names = []
    for raw in configured:
        name = CLASS_NAMES.get(raw.strip(), raw.strip())
        if name not in ASSIGNORS:
            raise ValueError(f"group.consumer.assignors: unknown assignor {raw.strip()!r} (uniform, range)")
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("group.consumer.assignors must name at least one assignor")
    return names
