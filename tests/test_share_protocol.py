"""Share groups at the wire (kafkite's codec over a socket to an embedded broker): ShareGroupHeartbeat's
validation, errors and assignments, share sessions and their epochs, acknowledgement errors, acquisition in
batch-optimized and record-limit modes, renew acknowledgements (KIP-1222), lock expiry, the delivery count
limit, gaps and read_committed isolation, the in-flight limit, the share group offset APIs' errors, the
share.version feature, group config validation, and the codecs of the share APIs."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import RawClient

from kafkite.embedded import EmbeddedBroker
from kafkite.protocol import framing
from kafkite.protocol.api_keys import ApiKey
from kafkite.protocol.errors import ErrorCode
from kafkite.protocol.messages import registry
from kafkite.protocol.records import build_batch, iter_headers, iter_records

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

LOCK_MS = 1000
GAP, ACCEPT, RELEASE, REJECT, RENEW = 0, 1, 2, 3, 4


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(
        overrides={
            "group.share.min.record.lock.duration.ms": 1000,
            "group.share.record.lock.duration.ms": LOCK_MS,
            "group.share.partition.max.record.locks": 100,
            "group.share.max.size": 3,
        }
    ) as b:
        yield b


@pytest.fixture
def raw(broker: EmbeddedBroker) -> Iterator[RawClient]:
    with RawClient.to(broker.bootstrap_servers) as c:
        yield c


class Topic:
    def __init__(self, raw: RawClient, partitions: int = 1) -> None:
        self.name = f"sp-{uuid.uuid4().hex[:10]}"
        resp = raw.request(
            ApiKey.CREATE_TOPICS,
            7,
            {
                "topics": [
                    {
                        "name": self.name,
                        "num_partitions": partitions,
                        "replication_factor": 1,
                        "assignments": [],
                        "configs": [],
                    }
                ],
                "timeout_ms": 5000,
                "validate_only": False,
            },
        )
        assert resp["topics"][0]["error_code"] == 0
        self.id: uuid.UUID = resp["topics"][0]["topic_id"]


def produce(raw: RawClient, topic: str, batches: list[bytes], partition: int = 0) -> None:
    for batch in batches:
        body = {
            "transactional_id": None,
            "acks": -1,
            "timeout_ms": 5000,
            "topic_data": [{"name": topic, "partition_data": [{"index": partition, "records": batch}]}],
        }
        resp = raw.request(ApiKey.PRODUCE, 9, body)
        assert resp["responses"][0]["partition_responses"][0]["error_code"] == 0, resp


def values(n: int, prefix: str = "v") -> bytes:
    now = int(time.time() * 1000)
    return build_batch([(None, f"{prefix}{i}".encode(), [], now) for i in range(n)])


def set_configs(raw: RawClient, group: str, **configs: str) -> dict[str, Any]:
    body = {
        "resources": [
            {
                "resource_type": 32,
                "resource_name": group,
                "configs": [
                    {"name": k.replace("_", "."), "config_operation": 0, "value": v}
                    for k, v in configs.items()
                ],
            }
        ],
        "validate_only": False,
    }
    result: dict[str, Any] = raw.request(ApiKey.INCREMENTAL_ALTER_CONFIGS, 1, body)["responses"][0]
    return result


def heartbeat(
    raw: RawClient, group: str, member: str, epoch: int, topics: list[str] | None
) -> dict[str, Any]:
    body = {"group_id": group, "member_id": member, "member_epoch": epoch, "subscribed_topic_names": topics}
    return raw.request(ApiKey.SHARE_GROUP_HEARTBEAT, 1, body)


def join(raw: RawClient, group: str, topic: Topic, member: str = "m1") -> dict[str, Any]:
    resp = heartbeat(raw, group, member, 0, [topic.name])
    assert resp["error_code"] == 0, resp
    return resp


def fetch(
    raw: RawClient,
    group: str,
    member: str,
    epoch: int,
    topic: Topic | None,
    *,
    acks: list[tuple[int, int, list[int]]] | None = None,
    max_records: int = 500,
    version: int = 1,
    mode: int = 0,
    renew: bool = False,
    wait_ms: int = 0,
    partition: int = 0,
    forget: bool = False,
) -> dict[str, Any]:
    topics = []
    if topic is not None and not forget:
        batches = [
            {"first_offset": f, "last_offset": last, "acknowledge_types": t} for f, last, t in acks or []
        ]
        topics = [
            {
                "topic_id": topic.id,
                "partitions": [{"partition_index": partition, "acknowledgement_batches": batches}],
            }
        ]
    body = {
        "group_id": group,
        "member_id": member,
        "share_session_epoch": epoch,
        "max_wait_ms": wait_ms,
        "min_bytes": 1,
        "max_bytes": 1 << 20,
        "max_records": max_records,
        "batch_size": max_records,
        "share_acquire_mode": mode,
        "is_renew_ack": renew,
        "topics": topics,
        "forgotten_topics_data": [{"topic_id": topic.id, "partitions": [partition]}]
        if forget and topic
        else [],
    }
    return raw.request(ApiKey.SHARE_FETCH, version, body)


def acknowledge(
    raw: RawClient,
    group: str,
    member: str,
    epoch: int,
    topic: Topic,
    acks: list[tuple[int, int, list[int]]],
    *,
    version: int = 1,
    renew: bool = False,
) -> dict[str, Any]:
    body = {
        "group_id": group,
        "member_id": member,
        "share_session_epoch": epoch,
        "is_renew_ack": renew,
        "topics": [
            {
                "topic_id": topic.id,
                "partitions": [
                    {
                        "partition_index": 0,
                        "acknowledgement_batches": [
                            {"first_offset": f, "last_offset": last, "acknowledge_types": t}
                            for f, last, t in acks
                        ],
                    }
                ],
            }
        ],
    }
    return raw.request(ApiKey.SHARE_ACKNOWLEDGE, version, body)


def partition_of(resp: dict[str, Any]) -> dict[str, Any]:
    assert resp["error_code"] == 0, resp
    parts = [p for t in resp["responses"] for p in t["partitions"]]
    assert len(parts) == 1, resp
    return parts[0]


def acquired(resp: dict[str, Any]) -> list[tuple[int, int, int]]:
    p = partition_of(resp)
    return [(a["first_offset"], a["last_offset"], a["delivery_count"]) for a in p["acquired_records"]]


def record_offsets(resp: dict[str, Any]) -> list[int]:
    data = bytes(partition_of(resp)["records"] or b"")
    return [r.offset for pos, h in iter_headers(data) if not h.is_control for r in iter_records(data, pos, h)]


def new_group(raw: RawClient, **configs: str) -> str:
    group = f"g-{uuid.uuid4().hex[:8]}"
    assert set_configs(raw, group, share_auto_offset_reset="earliest", **configs)["error_code"] == 0
    return group


# ------------------------------------------------------------------------------------------ heartbeat


def test_heartbeat_validation_as_kafka_answers(raw: RawClient) -> None:
    t = Topic(raw)
    cases = [
        (("g", "", 0, [t.name]), "MemberId can't be empty."),
        (("", "m", 0, [t.name]), "GroupId can't be empty."),
        (("g", "m", 0, None), "SubscribedTopicNames must be set in first request."),
        (("g", "m", 0, []), "SubscribedTopicNames must be set in first request."),
        (("g", "m", -2, [t.name]), "MemberEpoch is invalid."),
    ]
    for args, message in cases:
        resp = heartbeat(raw, *args)
        assert (resp["error_code"], resp["error_message"]) == (ErrorCode.INVALID_REQUEST, message)
    group = f"hb-{uuid.uuid4().hex[:6]}"
    assert heartbeat(raw, group, "m", 1, None)["error_code"] == ErrorCode.GROUP_ID_NOT_FOUND
    assert heartbeat(raw, group, "m", -1, None)["error_code"] == ErrorCode.GROUP_ID_NOT_FOUND
    r = join(raw, group, t)
    assert r["member_epoch"] == 1 and r["heartbeat_interval_ms"] == 5000
    assert r["assignment"] == {"topic_partitions": [{"topic_id": t.id, "partitions": [0]}]}
    assert heartbeat(raw, group, "other", 1, None)["error_code"] == ErrorCode.UNKNOWN_MEMBER_ID
    assert heartbeat(raw, group, "m1", 5, None)["error_code"] == ErrorCode.FENCED_MEMBER_EPOCH
    same = heartbeat(raw, group, "m1", 1, None)
    assert same["error_code"] == 0 and same["assignment"] is None  # nothing changed: no assignment
    # The group's maximum size (group.share.max.size=3 here).
    for m in ("m2", "m3"):
        join(raw, group, t, m)
    full = heartbeat(raw, group, "m4", 0, [t.name])
    assert full["error_code"] == ErrorCode.GROUP_MAX_SIZE_REACHED
    left = heartbeat(raw, group, "m3", -1, None)
    assert left["error_code"] == 0 and left["member_epoch"] == -1
    # A consumer group id is not a share group.
    cg = f"cg-{uuid.uuid4().hex[:6]}"
    body = {
        "group_id": cg,
        "member_id": "c1",
        "member_epoch": 0,
        "rebalance_timeout_ms": 30000,
        "subscribed_topic_names": [t.name],
        "topic_partitions": [],
    }
    assert raw.request(ApiKey.CONSUMER_GROUP_HEARTBEAT, 1, body)["error_code"] == 0
    other = heartbeat(raw, cg, "s1", 0, [t.name])
    assert other["error_code"] == ErrorCode.GROUP_ID_NOT_FOUND
    assert other["error_message"] == f"Group {cg} is not a share group."


def test_simple_assignor_shares_partitions_and_describe_lists_members(raw: RawClient) -> None:
    one, six = Topic(raw, 1), Topic(raw, 6)
    g1 = f"a1-{uuid.uuid4().hex[:6]}"
    for m in ("a", "b", "c"):
        join(raw, g1, one, m)
    # Every member of three gets the only partition (after a heartbeat at the new epoch).
    got = {m: heartbeat(raw, g1, m, 3 if m == "c" else (1 if m == "a" else 2), None) for m in ("a", "b", "c")}
    desc = raw.request(
        ApiKey.SHARE_GROUP_DESCRIBE, 1, {"group_ids": [g1], "include_authorized_operations": False}
    )
    g = desc["groups"][0]
    assert g["error_code"] == 0 and g["group_state"] == "Stable" and g["assignor_name"] == "simple"
    assert all(r["error_code"] == 0 for r in got.values()), got
    assert {
        m["member_id"]: [tp["partitions"] for tp in m["assignment"]["topic_partitions"]] for m in g["members"]
    } == {
        "a": [[0]],
        "b": [[0]],
        "c": [[0]],
    }
    assert all(m["member_epoch"] == g["assignment_epoch"] for m in g["members"])
    # Three members, six partitions: two each, no partition shared.
    g6 = f"a6-{uuid.uuid4().hex[:6]}"
    for m in ("a", "b", "c"):
        join(raw, g6, six, m)
    desc = raw.request(
        ApiKey.SHARE_GROUP_DESCRIBE, 1, {"group_ids": [g6], "include_authorized_operations": False}
    )
    epoch = desc["groups"][0]["assignment_epoch"]
    parts: list[int] = []
    for m in ("a", "b", "c"):
        r = heartbeat(
            raw,
            g6,
            m,
            next(x for x in desc["groups"][0]["members"] if x["member_id"] == m)["member_epoch"],
            None,
        )
        assert r["error_code"] == 0
    desc = raw.request(
        ApiKey.SHARE_GROUP_DESCRIBE, 1, {"group_ids": [g6], "include_authorized_operations": False}
    )
    for m in desc["groups"][0]["members"]:
        assert m["member_epoch"] == epoch
        (tp,) = m["assignment"]["topic_partitions"]
        assert len(tp["partitions"]) == 2 and tp["topic_name"] == six.name
        parts += tp["partitions"]
    assert sorted(parts) == list(range(6))
    # ListGroups lists share groups by type; errors of ShareGroupDescribe.
    listed = raw.request(ApiKey.LIST_GROUPS, 5, {"states_filter": [], "types_filter": ["share"]})["groups"]
    assert {(x["group_id"], x["group_type"], x["protocol_type"]) for x in listed} >= {
        (g1, "share", "share"),
        (g6, "share", "share"),
    }
    missing = raw.request(
        ApiKey.SHARE_GROUP_DESCRIBE, 1, {"group_ids": ["nope"], "include_authorized_operations": False}
    )
    assert missing["groups"][0]["error_code"] == ErrorCode.GROUP_ID_NOT_FOUND


# ------------------------------------------------------------------------------------------ sessions


def test_share_session_epochs_and_errors(raw: RawClient) -> None:
    t = Topic(raw)
    group = new_group(raw)
    join(raw, group, t)
    produce(raw, t.name, [values(3)])
    assert fetch(raw, group, "m1", 1, t)["error_code"] == ErrorCode.SHARE_SESSION_NOT_FOUND
    assert fetch(raw, group, "m1", 0, t, acks=[(0, 0, [ACCEPT])])["error_code"] == ErrorCode.INVALID_REQUEST
    first = fetch(raw, group, "m1", 0, t)
    assert acquired(first) == [(0, 2, 1)] and record_offsets(first) == [0, 1, 2]
    assert first["acquisition_lock_timeout_ms"] == LOCK_MS
    assert fetch(raw, group, "m1", 5, t)["error_code"] == ErrorCode.INVALID_SHARE_SESSION_EPOCH
    ack0 = acknowledge(raw, group, "m1", 0, t, [(0, 0, [ACCEPT])])
    assert ack0["error_code"] == ErrorCode.INVALID_SHARE_SESSION_EPOCH
    ok = acknowledge(raw, group, "m1", 1, t, [(0, 1, [ACCEPT])])
    assert ok["error_code"] == 0 and ok["responses"][0]["partitions"][0]["error_code"] == 0
    # The session moved on to epoch 2: a subsequent fetch with no acquirable records leaves it out.
    nothing = fetch(raw, group, "m1", 2, None)
    assert nothing["error_code"] == 0 and nothing["responses"] == []
    # Forgetting the partition: the session no longer fetches it.
    produce(raw, t.name, [values(2)])
    forgot = fetch(raw, group, "m1", 3, t, forget=True)
    assert forgot["error_code"] == 0 and forgot["responses"] == []
    # The final epoch closes the session and releases what the member held (offset 2).
    final = fetch(raw, group, "m1", -1, t, acks=[(2, 2, [RELEASE])])
    assert final["error_code"] == 0 and partition_of(final)["acknowledge_error_code"] == 0
    assert fetch(raw, group, "m1", 4, t)["error_code"] == ErrorCode.SHARE_SESSION_NOT_FOUND
    again = fetch(raw, group, "m2", 0, t)
    assert acquired(again) == [(2, 2, 2), (3, 4, 1)]


def test_acknowledgement_errors_leave_the_records_as_they_were(raw: RawClient) -> None:
    t = Topic(raw)
    group = new_group(raw)
    join(raw, group, t)
    join(raw, group, t, "m2")
    produce(raw, t.name, [values(4)])
    assert acquired(fetch(raw, group, "m1", 0, t)) == [(0, 3, 1)]
    assert fetch(raw, group, "m2", 0, t)["responses"][0]["partitions"][0]["acquired_records"] == []

    def ack_error(
        member: str, epoch: int, acks: list[tuple[int, int, list[int]]], **kw: Any
    ) -> tuple[int, int]:
        resp = acknowledge(raw, group, member, epoch, t, acks, **kw)
        return resp["error_code"], resp["responses"][0]["partitions"][0]["error_code"] if resp[
            "responses"
        ] else -1

    # Another member's records, offsets never acquired, a bad type, a renew without is_renew_ack, bad lengths.
    assert ack_error("m2", 1, [(0, 0, [ACCEPT])]) == (0, ErrorCode.INVALID_RECORD_STATE)
    assert ack_error("m1", 1, [(3, 9, [ACCEPT])]) == (0, ErrorCode.INVALID_RECORD_STATE)
    assert ack_error("m1", 2, [(0, 0, [7])]) == (0, ErrorCode.INVALID_REQUEST)
    assert ack_error("m1", 3, [(0, 0, [RENEW])], version=2) == (0, ErrorCode.INVALID_REQUEST)
    assert ack_error("m1", 4, [(0, 2, [ACCEPT, ACCEPT])]) == (0, ErrorCode.INVALID_REQUEST)
    # All or nothing: one bad offset and none of the batch is applied.
    assert ack_error("m1", 5, [(0, 1, [ACCEPT]), (2, 2, [ACCEPT]), (3, 3, [ACCEPT]), (3, 3, [ACCEPT])]) == (
        0,
        ErrorCode.INVALID_REQUEST,
    )
    # Per-offset types: accept, release, reject, gap.
    assert ack_error("m1", 6, [(0, 3, [ACCEPT, RELEASE, REJECT, GAP])]) == (0, 0)
    # Below the start offset: already settled, nothing to do (as Kafka); a released record is not acquired.
    assert ack_error("m1", 7, [(0, 0, [ACCEPT])]) == (0, 0)
    assert ack_error("m1", 8, [(1, 1, [ACCEPT])]) == (0, ErrorCode.INVALID_RECORD_STATE)
    assert acquired(fetch(raw, group, "m2", 2, None)) == [(1, 1, 2)]  # only the released one comes back


def test_record_limit_mode_and_batch_optimized_mode(raw: RawClient) -> None:
    t = Topic(raw)
    group = new_group(raw)
    join(raw, group, t)
    produce(raw, t.name, [values(10), values(10)])
    # Version 1 (batch-optimized): whole batches even past max_records.
    assert acquired(fetch(raw, group, "m1", 0, t, max_records=3)) == [
        (0, 2, 1),
        (3, 5, 1),
        (6, 8, 1),
        (9, 9, 1),
    ]
    # Version 2, record-limit mode (KIP-1206): exactly max_records.
    got = fetch(raw, group, "m1", 1, None, max_records=3, version=2, mode=1)
    assert acquired(got) == [(10, 12, 1)]
    assert record_offsets(got) == list(
        range(10, 20)
    )  # the whole batch is sent; the acquired range says which


def test_renew_extends_a_lock_and_lapsed_locks_redeliver(raw: RawClient) -> None:
    t = Topic(raw)
    group = new_group(raw)
    join(raw, group, t)
    join(raw, group, t, "m2")
    produce(raw, t.name, [values(2)])
    assert acquired(fetch(raw, group, "m1", 0, t, version=2)) == [(0, 1, 1)]
    assert fetch(raw, group, "m2", 0, t)["responses"][0]["partitions"][0]["acquired_records"] == []
    for epoch in (1, 2):
        time.sleep(LOCK_MS * 0.6 / 1000)
        renewed = acknowledge(raw, group, "m1", epoch, t, [(0, 0, [RENEW])], version=2, renew=True)
        assert renewed["error_code"] == 0 and renewed["acquisition_lock_timeout_ms"] == LOCK_MS
        assert renewed["responses"][0]["partitions"][0]["error_code"] == 0
    # Offset 1's lock lapsed long ago, offset 0's was renewed: the other member gets only offset 1, count 2.
    assert acquired(fetch(raw, group, "m2", 1, None)) == [(1, 1, 2)]
    # Waiting for records: a lapse wakes a waiting fetch.
    started = time.monotonic()
    woken = fetch(raw, group, "m2", 2, t, acks=[(1, 1, [ACCEPT])], wait_ms=5000)
    assert acquired(woken) == [(0, 0, 2)] and time.monotonic() - started < 3
    late = acknowledge(raw, group, "m1", 3, t, [(0, 0, [ACCEPT])], version=2)
    assert late["responses"][0]["partitions"][0]["error_code"] == ErrorCode.INVALID_RECORD_STATE


def test_delivery_count_limit_archives_and_in_flight_limit_holds(raw: RawClient) -> None:
    t = Topic(raw)
    group = new_group(raw, share_delivery_count_limit="2")
    join(raw, group, t)
    produce(raw, t.name, [values(1)])
    assert acquired(fetch(raw, group, "m1", 0, t)) == [(0, 0, 1)]
    assert acquired(fetch(raw, group, "m1", 1, t, acks=[(0, 0, [RELEASE])])) == [(0, 0, 2)]
    final = fetch(raw, group, "m1", 2, t, acks=[(0, 0, [RELEASE])])  # the second delivery failed too
    assert partition_of(final)["acquired_records"] == []
    offsets = raw.request(
        ApiKey.DESCRIBE_SHARE_GROUP_OFFSETS, 1, {"groups": [{"group_id": group, "topics": None}]}
    )["groups"][0]["topics"][0]["partitions"][0]
    assert (offsets["start_offset"], offsets["lag"]) == (1, 0)
    # At most group.share.partition.max.record.locks (100 here) records in flight: batch-optimized, the
    # batch in which the limit falls is acquired whole (as Kafka aligns on batches); record-limit, exactly.
    t2 = Topic(raw)
    g2 = new_group(raw)
    join(raw, g2, t2)
    produce(raw, t2.name, [values(60), values(60), values(60)])
    assert acquired(fetch(raw, g2, "m1", 0, t2, max_records=500)) == [(0, 119, 1)]
    assert fetch(raw, g2, "m1", 1, None, max_records=500)["responses"] == []  # 120 in flight
    assert acquired(fetch(raw, g2, "m1", 2, t2, acks=[(0, 59, [ACCEPT])], max_records=500)) == [(120, 179, 1)]
    t3 = Topic(raw)
    g3 = new_group(raw)
    join(raw, g3, t3)
    produce(raw, t3.name, [values(60), values(60)])
    assert acquired(fetch(raw, g3, "m1", 0, t3, max_records=500, version=2, mode=1)) == [(0, 99, 1)]


def test_a_fetch_waiting_on_the_in_flight_limit_wakes_when_records_are_accepted(
    raw: RawClient, broker: EmbeddedBroker
) -> None:
    t = Topic(raw)
    group = new_group(raw)
    join(raw, group, t, "m1")
    join(raw, group, t, "m2")
    produce(raw, t.name, [values(60), values(60), values(60)])
    assert acquired(fetch(raw, group, "m1", 0, t)) == [(0, 119, 1)]  # the limit (100) reached
    result: dict[str, Any] = {}

    def waiting_fetch() -> None:
        with RawClient.to(broker.bootstrap_servers) as other:
            began = time.monotonic()
            result["resp"] = fetch(other, group, "m2", 0, t, wait_ms=20_000)
            result["waited"] = time.monotonic() - began

    waiter = threading.Thread(target=waiting_fetch)
    waiter.start()
    time.sleep(0.5)
    assert "resp" not in result  # nothing to acquire: it waits
    assert acknowledge(raw, group, "m1", 1, t, [(0, 59, [ACCEPT])])["error_code"] == 0
    waiter.join(30)
    # Woken by the acceptance that made room under the limit, not by its wait running out.
    assert acquired(result["resp"]) == [(120, 179, 1)]
    assert result["waited"] < 15, result["waited"]


def test_gaps_and_read_committed(raw: RawClient) -> None:
    t = Topic(raw)
    produce(raw, t.name, [values(1, "plain")])
    broker_produce_transactions(raw, t.name)
    # Offsets: 0 a plain record, 1 a committed transaction's and 2 its COMMIT marker, 3 an aborted
    # transaction's and 4 its ABORT marker. Markers are acquired as gaps, acknowledged with GAP.
    for isolation in ("read_uncommitted", "read_committed"):
        group = new_group(raw, share_isolation_level=isolation)
        join(raw, group, t)
        got = acquired(fetch(raw, group, "m1", 0, t))
        offsets = {o for f, last, _ in got for o in range(f, last + 1)}
        if isolation == "read_committed":
            assert offsets == {0, 1, 2, 4}  # the aborted record is archived, never delivered
        else:
            assert offsets == {0, 1, 2, 3, 4}
        acks = [(0, 1, [ACCEPT]), (2, 2, [GAP]), (4, 4, [GAP])] + ([(3, 3, [ACCEPT])] if 3 in offsets else [])
        ack = fetch(raw, group, "m1", 1, t, acks=acks)
        assert partition_of(ack)["acknowledge_error_code"] == 0
        state = raw.request(
            ApiKey.DESCRIBE_SHARE_GROUP_OFFSETS, 1, {"groups": [{"group_id": group, "topics": None}]}
        )["groups"][0]["topics"][0]["partitions"][0]
        assert (state["start_offset"], state["lag"]) == (5, 0)


def broker_produce_transactions(raw: RawClient, topic: str) -> None:
    """Write a committed and then an aborted transaction the way a transactional producer does."""
    for commit in (True, False):
        body = {
            "transactional_id": None,
            "transaction_timeout_ms": 60000,
            "producer_id": -1,
            "producer_epoch": -1,
        }
        txn_id = f"tx-{uuid.uuid4().hex[:6]}"
        body["transactional_id"] = txn_id
        init = raw.request(ApiKey.INIT_PRODUCER_ID, 4, body)
        assert init["error_code"] == 0, init
        pid, epoch = init["producer_id"], init["producer_epoch"]
        add = raw.request(
            ApiKey.ADD_PARTITIONS_TO_TXN,
            3,
            {
                "v3_and_below_transactional_id": txn_id,
                "v3_and_below_producer_id": pid,
                "v3_and_below_producer_epoch": epoch,
                "v3_and_below_topics": [{"name": topic, "partitions": [0]}],
            },
        )
        assert add["results_by_topic_v3_and_below"][0]["results_by_partition"][0]["partition_error_code"] == 0
        now = int(time.time() * 1000)
        value = b"c" if commit else b"a"
        batch = build_batch(
            [(None, value, [], now)],
            producer_id=pid,
            producer_epoch=epoch,
            base_sequence=0,
            transactional=True,
        )
        resp = raw.request(
            ApiKey.PRODUCE,
            9,
            {
                "transactional_id": txn_id,
                "acks": -1,
                "timeout_ms": 5000,
                "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": batch}]}],
            },
        )
        assert resp["responses"][0]["partition_responses"][0]["error_code"] == 0, resp
        end = raw.request(
            ApiKey.END_TXN,
            3,
            {"transactional_id": txn_id, "producer_id": pid, "producer_epoch": epoch, "committed": commit},
        )
        assert end["error_code"] == 0, end


# ------------------------------------------------------------------------------------------ offsets, features


def test_share_group_offset_api_errors(raw: RawClient) -> None:
    t = Topic(raw)
    group = new_group(raw)
    join(raw, group, t)
    busy = raw.request(
        ApiKey.ALTER_SHARE_GROUP_OFFSETS,
        0,
        {
            "group_id": group,
            "topics": [{"topic_name": t.name, "partitions": [{"partition_index": 0, "start_offset": 0}]}],
        },
    )
    assert busy["error_code"] == ErrorCode.NON_EMPTY_GROUP
    gone = raw.request(ApiKey.DELETE_SHARE_GROUP_OFFSETS, 0, {"group_id": "no-such-group", "topics": []})
    assert gone["error_code"] == ErrorCode.GROUP_ID_NOT_FOUND
    described = raw.request(
        ApiKey.DESCRIBE_SHARE_GROUP_OFFSETS,
        1,
        {
            "groups": [
                {"group_id": group, "topics": [{"topic_name": "nope", "partitions": [0]}]},
                {"group_id": "x", "topics": None},
            ]
        },
    )["groups"]
    assert described[0]["topics"][0]["partitions"][0]["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert described[1]["error_code"] == ErrorCode.GROUP_ID_NOT_FOUND
    # A new group is created empty by AlterShareGroupOffsets; a consumer group id is not a share group.
    fresh = f"fresh-{uuid.uuid4().hex[:6]}"
    created = raw.request(
        ApiKey.ALTER_SHARE_GROUP_OFFSETS,
        0,
        {
            "group_id": fresh,
            "topics": [{"topic_name": t.name, "partitions": [{"partition_index": 0, "start_offset": 0}]}],
        },
    )
    assert created["error_code"] == 0 and created["responses"][0]["partitions"][0]["error_code"] == 0
    listed = raw.request(ApiKey.LIST_GROUPS, 5, {"states_filter": ["empty"], "types_filter": ["share"]})[
        "groups"
    ]
    assert fresh in {g["group_id"] for g in listed}


def test_group_config_validation(raw: RawClient) -> None:
    bad = [
        ({"share.record.lock.duration.ms": "500"}, "Value must be at least 1000"),
        (
            {"share.record.lock.duration.ms": "70000"},
            "must be less than or equal to group.share.max.record.lock.duration.ms",
        ),
        ({"share.auto.offset.reset": "sometime"}, "offset reset strategy"),
        ({"share.auto.offset.reset": "by_duration:-PT1H"}, "Negative duration is not allowed."),
        ({"share.isolation.level": "dirty"}, "String must be one of"),
        (
            {"share.delivery.count.limit": "11"},
            "share.delivery.count.limit must be in the range 2 to 10 inclusive.",
        ),
        ({"errors.deadletterqueue.topic.name": "__x"}, "DLQ topic name must not start with '__'"),
        (
            {"share.session.timeout.ms": "1000"},
            "must be greater than or equal to group.share.min.session.timeout.ms",
        ),
    ]
    for configs, message in bad:
        resp = set_configs(raw, "cfg-group", **{k.replace(".", "_"): v for k, v in configs.items()})
        assert resp["error_code"] == ErrorCode.INVALID_CONFIG and message in resp["error_message"], (
            configs,
            resp,
        )
    ok = set_configs(
        raw, "cfg-group", share_auto_offset_reset="by_duration:P1DT2H", share_isolation_level="read_committed"
    )
    assert ok["error_code"] == 0
    described = raw.request(
        ApiKey.DESCRIBE_CONFIGS,
        4,
        {
            "resources": [{"resource_type": 32, "resource_name": "cfg-group", "configuration_keys": None}],
            "include_synonyms": False,
            "include_documentation": True,
        },
    )["results"][0]["configs"]
    by_name = {c["name"]: c for c in described}
    assert by_name["share.auto.offset.reset"]["value"] == "by_duration:P1DT2H"
    assert (
        by_name["share.auto.offset.reset"]["config_source"] == 8
        and by_name["share.auto.offset.reset"]["config_type"] == 2
    )
    assert by_name["share.record.lock.duration.ms"]["value"] == str(LOCK_MS)
    assert by_name["errors.deadletterqueue.copy.record.enable"]["config_type"] == 1


def test_share_version_feature(broker: EmbeddedBroker) -> None:
    with RawClient.to(broker.bootstrap_servers) as raw:
        resp = raw.api_versions(4)
        keys = {a["api_key"]: (a["min_version"], a["max_version"]) for a in resp["api_keys"]}
        assert keys[76] == (1, 1) and keys[77] == (1, 1) and keys[78] == (1, 2) and keys[79] == (1, 2)
        assert keys[90] == (0, 1) and keys[91] == (0, 0) and keys[92] == (0, 0)
        assert {"name": "share.version", "min_version": 0, "max_version": 1} in resp["supported_features"]
        assert {"name": "share.version", "max_version_level": 1, "min_version_level": 1} in resp[
            "finalized_features"
        ]

        def update(level: int) -> None:
            body = {
                "timeout_ms": 5000,
                "feature_updates": [
                    {
                        "feature": "share.version",
                        "max_version_level": level,
                        "upgrade_type": 1 if level else 2,
                    }
                ],
                "validate_only": False,
            }
            assert raw.request(ApiKey.UPDATE_FEATURES, 1, body)["error_code"] == 0

        update(0)
        try:
            t = Topic(raw)
            assert heartbeat(raw, "g", "m", 0, [t.name])["error_code"] == ErrorCode.UNSUPPORTED_VERSION
            assert fetch(raw, "g", "m", 0, t)["error_code"] == ErrorCode.UNSUPPORTED_VERSION
        finally:
            update(1)


# ------------------------------------------------------------------------------------------ codecs


SAMPLES: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}


def _uuid() -> uuid.UUID:
    return uuid.UUID(int=0x1234_5678_9ABC_DEF0_1234_5678_9ABC_DEF0)


def test_share_codecs_round_trip_every_version() -> None:
    """Each request and response of the share APIs encodes, decodes back to the same values and encodes to
    the same bytes; the layout of ShareFetch v2 is checked byte by byte against Kafka 4.2's schema."""
    reg = registry()
    tid = _uuid()
    ack = [{"first_offset": 3, "last_offset": 5, "acknowledge_types": [1, 2, 4]}]
    requests: dict[int, dict[str, Any]] = {
        76: {
            "group_id": "g",
            "member_id": "m",
            "member_epoch": 0,
            "rack_id": None,
            "subscribed_topic_names": ["t"],
        },
        77: {"group_ids": ["g"], "include_authorized_operations": True},
        78: {
            "group_id": "g",
            "member_id": "m",
            "share_session_epoch": 2,
            "max_wait_ms": 500,
            "min_bytes": 1,
            "max_bytes": 1024,
            "max_records": 10,
            "batch_size": 10,
            "share_acquire_mode": 1,
            "is_renew_ack": True,
            "topics": [
                {"topic_id": tid, "partitions": [{"partition_index": 0, "acknowledgement_batches": ack}]}
            ],
            "forgotten_topics_data": [{"topic_id": tid, "partitions": [1]}],
        },
        79: {
            "group_id": "g",
            "member_id": "m",
            "share_session_epoch": 2,
            "is_renew_ack": False,
            "topics": [
                {"topic_id": tid, "partitions": [{"partition_index": 0, "acknowledgement_batches": ack}]}
            ],
        },
        90: {
            "groups": [
                {"group_id": "g", "topics": None},
                {"group_id": "h", "topics": [{"topic_name": "t", "partitions": [0]}]},
            ]
        },
        91: {
            "group_id": "g",
            "topics": [{"topic_name": "t", "partitions": [{"partition_index": 0, "start_offset": 7}]}],
        },
        92: {"group_id": "g", "topics": [{"topic_name": "t"}]},
    }
    for key, body in requests.items():
        api = reg.apis[key]
        for version in range(api.versions.lo, api.versions.hi + 1):
            frame = framing.encode_request(reg, key, version, 9, "c", body)
            hdr = framing.decode_request_header(reg, memoryview(frame)[4:], 2)
            assert (hdr.api_key, hdr.api_version) == (key, version)
            codec = reg.request(key, version)
            decoded, end = codec.decode(memoryview(frame), 4 + hdr.header_size)
            assert end == len(frame)
            assert framing.encode_request(reg, key, version, 9, "c", decoded) == frame, (api.name, version)
    # ShareFetch v2: group id, member id, epoch, max wait, min bytes, max bytes, max records, batch size,
    # acquire mode (int8), is_renew_ack (bool), then the topics (compact arrays, tagged fields).
    frame = framing.encode_request(reg, 78, 2, 9, "c", requests[78])
    body = frame[4 + 2 + 2 + 4 + 2 + 1 + 1 :]  # size, key, version, correlation id, client id "c", tags
    assert body[:6] == b"\x02g\x02m\x00\x00"[:6]
    assert body[4:8] == (2).to_bytes(4, "big")
    assert body[8:20] == (500).to_bytes(4, "big") + (1).to_bytes(4, "big") + (1024).to_bytes(4, "big")
    assert body[20:28] == (10).to_bytes(4, "big") * 2
    assert body[28:30] == b"\x01\x01"  # record-limit mode, renew acknowledgements
    assert body[30] == 2 and bytes(body[31:47]) == tid.bytes
