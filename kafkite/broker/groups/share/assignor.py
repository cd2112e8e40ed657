"""The ``simple`` assignor of share groups (KIP-932), balanced first and sticky second.

Members of a share group may share a partition. Each assignable partition (of a topic some member subscribes
to) gets ``ceil(members / partitions)`` of the members subscribed to its topic, so that with more members than
partitions every member gets partitions (three members of a one-partition topic all consume it), and with
more partitions than members each partition has one member. Members get numbers of partitions that differ by
at most one where their subscriptions allow; a member keeps the partitions it had as far as that balance
permits.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping

TopicId = uuid.UUID


def assign(
    subscriptions: Mapping[str, frozenset[TopicId]],
    partition_counts: Mapping[TopicId, int],
    current: Mapping[str, Mapping[TopicId, frozenset[int]]],
) -> dict[str, dict[TopicId, frozenset[int]]]:
    """The target assignment of every member: ``subscriptions`` (member -> subscribed topic ids that exist),
    ``partition_counts`` (topic id -> partitions) and the members' ``current`` assignments."""
    members = sorted(subscriptions)
    if not members:
        return {}
    subscribers: dict[TopicId, list[str]] = {}
    for m in members:
        for t in subscriptions[m]:
            if partition_counts.get(t, 0) > 0:
                subscribers.setdefault(t, []).append(m)
    targets = [(t, p) for t in sorted(subscribers, key=str) for p in range(partition_counts[t])]
    result: dict[str, dict[TopicId, set[int]]] = {m: {} for m in members}
    if not targets:
        return {m: {} for m in members}
    sharing = max(1, math.ceil(len(members) / len(targets)))
    slots = {tp: min(sharing, len(subscribers[tp[0]])) for tp in targets}
    cap = math.ceil(sum(slots.values()) / len(members))
    holders: dict[tuple[TopicId, int], list[str]] = {tp: [] for tp in targets}
    counts = dict.fromkeys(members, 0)

    def give(m: str, tp: tuple[TopicId, int]) -> None:
        holders[tp].append(m)
        result[m].setdefault(tp[0], set()).add(tp[1])
        counts[m] += 1

    # Stickiness: keep what each member had, within the balance.
    for m in members:
        for t, ps in sorted(current.get(m, {}).items(), key=lambda kv: str(kv[0])):
            if t not in subscriptions[m]:
                continue
            for p in sorted(ps):
                tp = (t, p)
                if tp in holders and len(holders[tp]) < slots[tp] and counts[m] < cap:
                    give(m, tp)
    # Fill the remaining slots, each to the subscribed member with the fewest partitions.
    for tp in targets:
        while len(holders[tp]) < slots[tp]:
            candidates = [m for m in subscribers[tp[0]] if m not in holders[tp]]
            if not candidates:
                break
            give(min(candidates, key=lambda m: (counts[m], members.index(m))), tp)
    return {m: {t: frozenset(ps) for t, ps in parts.items()} for m, parts in result.items()}
