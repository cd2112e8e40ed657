"""Server-side assignors of consumer groups: balance and stickiness, RE2 regular expressions, the embedded
consumer protocol of classic members."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kafkite.broker.groups.consumer import embedded
from kafkite.broker.groups.consumer.assignors import (
    MemberSpec,
    RangeAssignor,
    UniformAssignor,
    assignor_names,
)
from kafkite.broker.groups.consumer.regex import RegexError, compile_re2, matches

T = [uuid.UUID(int=i + 1) for i in range(6)]


def counts(result: dict[str, dict[uuid.UUID, frozenset[int]]]) -> dict[str, int]:
    return {m: sum(len(ps) for ps in a.values()) for m, a in result.items()}


def owned_once(result: dict[str, dict[uuid.UUID, frozenset[int]]], partitions: dict[uuid.UUID, int]) -> None:
    seen: list[tuple[uuid.UUID, int]] = [(t, p) for a in result.values() for t, ps in a.items() for p in ps]
    assert len(seen) == len(set(seen)), "a partition assigned twice"
    wanted = {(t, p) for t, n in partitions.items() for p in range(n)}
    assert set(seen) == wanted


def test_uniform_spreads_and_keeps_what_it_can() -> None:
    a = UniformAssignor()
    parts = {T[0]: 6}
    subs = frozenset({T[0]})
    first = a.assign([MemberSpec(m, None, subs) for m in ("a", "b", "c")], parts)
    owned_once(first, parts)
    assert sorted(counts(first).values()) == [2, 2, 2]
    # A fourth member: a single partition moves (to it); the others stay where they were.
    second = a.assign(
        [MemberSpec(m, None, subs, first[m]) for m in ("a", "b", "c")] + [MemberSpec("d", None, subs)], parts
    )
    owned_once(second, parts)
    assert sorted(counts(second).values()) == [1, 1, 2, 2]
    moved = sum(len(first[m][T[0]] - second[m].get(T[0], frozenset())) for m in ("a", "b", "c"))
    assert moved == 1
    # A member leaves: its partitions are the only ones to move.
    third = a.assign([MemberSpec(m, None, subs, second[m]) for m in ("a", "b", "d")], parts)
    owned_once(third, parts)
    for m in ("a", "b", "d"):
        assert second[m][T[0]] <= third[m][T[0]]


def test_uniform_heterogeneous_subscriptions_balance() -> None:
    a = UniformAssignor()
    parts = {T[0]: 3, T[1]: 3, T[2]: 2}
    members = [
        MemberSpec("a", None, frozenset({T[0], T[1], T[2]})),
        MemberSpec("b", None, frozenset({T[0]})),
        MemberSpec("c", None, frozenset({T[1], T[2]})),
    ]
    result = a.assign(members, parts)
    owned_once(result, parts)
    for m in members:
        assert set(result[m.member_id]) <= m.subscribed
    assert max(counts(result).values()) - min(counts(result).values()) <= 1


def test_range_is_kafkas_range() -> None:
    parts = {T[0]: 5, T[1]: 5}
    members = [MemberSpec("m2", None, frozenset(parts)), MemberSpec("m1", None, frozenset(parts))]
    result = RangeAssignor().assign(members, parts)
    assert {m: {t: sorted(ps) for t, ps in a.items()} for m, a in result.items()} == {
        "m1": {T[0]: [0, 1, 2], T[1]: [0, 1, 2]},
        "m2": {T[0]: [3, 4], T[1]: [3, 4]},
    }
    # Static members come first, by instance id.
    static = [MemberSpec("m1", None, frozenset(parts)), MemberSpec("zz", "i-a", frozenset(parts))]
    result = RangeAssignor().assign(static, parts)
    assert sorted(result["zz"][T[0]]) == [0, 1, 2]


def test_assignor_names_accept_kafkas_class_names() -> None:
    assert assignor_names(["org.apache.kafka.coordinator.group.assignor.RangeAssignor", "uniform"]) == [
        "range",
        "uniform",
    ]
    with pytest.raises(ValueError, match="unknown assignor"):
        assignor_names(["sticky"])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=4),
    st.lists(st.sets(st.integers(min_value=0, max_value=3), min_size=1), min_size=1, max_size=7),
    st.integers(min_value=0, max_value=6),
)
def test_uniform_property(topic_sizes: list[int], subscriptions: list[set[int]], leaver: int) -> None:
    a = UniformAssignor()
    topics = {T[i]: n for i, n in enumerate(topic_sizes)}
    specs = [
        MemberSpec(f"m{i}", None, frozenset(T[j] for j in sub if j < len(topic_sizes)))
        for i, sub in enumerate(subscriptions)
    ]
    specs = [s for s in specs if s.subscribed]
    if not specs:
        return
    result = a.assign(specs, topics)
    subscribed = {t for s in specs for t in s.subscribed}
    owned_once(result, {t: n for t, n in topics.items() if t in subscribed})
    for s in specs:
        assert set(result[s.member_id]) <= s.subscribed
    if len({s.subscribed for s in specs}) == 1:
        assert max(counts(result).values()) - min(counts(result).values()) <= 1
    # Stickiness: without changes, nothing moves.
    again = a.assign(
        [MemberSpec(s.member_id, None, s.subscribed, result[s.member_id]) for s in specs], topics
    )
    assert again == result
    # A member leaving: the others keep everything they had.
    if len(specs) > 1:
        gone = specs[leaver % len(specs)].member_id
        rest = [
            MemberSpec(s.member_id, None, s.subscribed, result[s.member_id])
            for s in specs
            if s.member_id != gone
        ]
        after = a.assign(rest, topics)
        if len({s.subscribed for s in rest}) == 1:
            for s in rest:
                for t, ps in result[s.member_id].items():
                    assert ps <= after[s.member_id].get(t, frozenset())


@pytest.mark.parametrize(
    ("pattern", "yes", "no"),
    [
        ("^prefix.*", ["prefix", "prefix-b"], ["xprefix"]),
        ("(^a.*)|(^b.*)", ["a1", "b2"], ["c3"]),
        ("orders|payments", ["orders", "payments"], ["orders2"]),
        ("[[:digit:]]+", ["123"], ["12a"]),
        ("\\Qa.b\\E", ["a.b"], ["axb"]),
        ("a{,2}", ["a{,2}"], ["aa"]),
        ("x(?i)ab|c", ["xAB", "C"], ["XAB"]),
        ("\\pL+", ["abc"], ["a1"]),
        ("[^\\d]+", ["abc"], ["a1"]),
        ("(?i)ORDERS\\.v[0-9]", ["orders.v1", "Orders.V2"], ["orders-v1"]),
        ("\\x41\\x{42}c", ["ABc"], ["abc"]),
        ("[]a-c-]+", ["]a-c", "b"], ["d"]),
        ("\\bfoo\\b.*", ["foo.bar", "foo"], ["foobar"]),
        ("a|", ["a"], ["b"]),
        ("(a*)*b", ["aaab", "b"], ["aaa"]),
        ("t\\d{2,3}", ["t12", "t123"], ["t1", "t1234"]),
        ("\\Aevents\\z", ["events"], ["events2"]),
        ("[[:^alpha:]]+", ["123"], ["1a"]),
    ],
)
def test_re2_patterns_match_whole_names(pattern: str, yes: list[str], no: list[str]) -> None:
    for name in yes:
        assert matches(pattern, name), (pattern, name)
    for name in no:
        assert not matches(pattern, name), (pattern, name)


@pytest.mark.parametrize(
    "pattern",
    [
        "(?=a)",
        "(?!a)",
        "(?<=a)b",
        "(?>a)",
        "a\\1",
        "a**",
        "a*+",
        "a++",
        "(a",
        "a)",
        "[a",
        "*a",
        "a{1001}",
        "\\Z",
        "\\e",
        "(?P<n>a)(?P<n>b)",
        "[z-a]",
        "\\p{Nope}",
        "(?#c)",
    ],
)
def test_re2_rejects_what_re2_rejects(pattern: str) -> None:
    with pytest.raises(RegexError):
        compile_re2(pattern)


def test_re2_matching_is_linear_in_the_name() -> None:
    # Exponential for a backtracking matcher; RE2 (and this matcher) read each character once.
    name = "a" * 200
    assert not matches("(a+)+b", name)
    assert not matches("(a|aa)*c", name)
    assert matches("(a|a)*", name)


def test_embedded_consumer_protocol_round_trips() -> None:
    data = embedded.serialize_subscription(
        ["a", "b"], version=3, owned={"a": [1, 2]}, generation_id=7, rack_id="r1"
    )
    sub = embedded.parse_subscription(data)
    assert (sub.version, sub.topics, sub.owned_partitions, sub.generation_id, sub.rack_id) == (
        3,
        ("a", "b"),
        (("a", (1, 2)),),
        7,
        "r1",
    )
    assert embedded.subscription_version(data) == 3
    assert embedded.parse_assignment(embedded.serialize_assignment({"a": [0, 3]}, 1)).partitions == (
        ("a", (0, 3)),
    )
    assert embedded.parse_assignment(b"").partitions == ()
    with pytest.raises(embedded.EmbeddedProtocolError):
        embedded.parse_subscription(b"\x00\x00\x00\x00\x00\x05")
