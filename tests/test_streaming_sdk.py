"""The unmodified OCI Python SDK against kafkite's OCI Streaming REST API: control and data plane, groups."""

from __future__ import annotations

import base64
import datetime
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import oci
import pytest
from oci.streaming.models import (
    CreateCursorDetails,
    CreateGroupCursorDetails,
    CreateStreamDetails,
    CreateStreamPoolDetails,
    KafkaSettings,
    PutMessagesDetails,
    PutMessagesDetailsEntry,
    UpdateGroupDetails,
    UpdateStreamPoolDetails,
)
from test_streaming_support import COMPARTMENT, InProcessBroker, clients, make_api_key

pytestmark = pytest.mark.timeout(120)


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def unb64(s: str | None) -> str | None:
    return None if s is None else base64.b64decode(s).decode()


@pytest.fixture
def api_key(tmp_path: Path) -> tuple[Path, Path, str]:
    return make_api_key(tmp_path)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[InProcessBroker]:
    with InProcessBroker(tmp_path / "data") as b:
        yield b


def make_pool_and_stream(admin: Any, name: str = "orders", partitions: int = 3) -> tuple[Any, Any]:
    pool = admin.create_stream_pool(
        CreateStreamPoolDetails(
            compartment_id=COMPARTMENT,
            name="pool-" + name,
            kafka_settings=KafkaSettings(
                num_partitions=2, auto_create_topics_enable=True, log_retention_hours=48
            ),
        )
    ).data
    assert pool.lifecycle_state == "CREATING"
    pool = oci.wait_until(
        admin, admin.get_stream_pool(pool.id), "lifecycle_state", "ACTIVE", max_wait_seconds=10
    ).data
    stream = admin.create_stream(
        CreateStreamDetails(name=name, partitions=partitions, stream_pool_id=pool.id, retention_in_hours=24)
    ).data
    stream = oci.wait_until(
        admin, admin.get_stream(stream.id), "lifecycle_state", "ACTIVE", max_wait_seconds=10
    ).data
    return pool, stream


def put_all(data: Any, stream_id: str, n: int, prefix: str = "v") -> list[Any]:
    out = []
    for start in range(0, n, 100):
        entries = [
            PutMessagesDetailsEntry(key=b64(f"k{i % 10}"), value=b64(f"{prefix}{i}"))
            for i in range(start, min(n, start + 100))
        ]
        res = data.put_messages(stream_id, PutMessagesDetails(messages=entries)).data
        assert res.failures == 0
        out.extend(res.entries)
    return out


def read_partition(data: Any, stream_id: str, cursor: str, limit: int = 10000) -> list[Any]:
    msgs: list[Any] = []
    while True:
        r = data.get_messages(stream_id, cursor, limit=limit)
        if not r.data:
            return msgs
        msgs.extend(r.data)
        cursor = r.headers["opc-next-cursor"]


def cursor(data: Any, stream_id: str, partition: int, kind: str, **kw: Any) -> str:
    details = CreateCursorDetails(partition=str(partition), type=kind, **kw)
    return str(data.create_cursor(stream_id, details).data.value)


def test_control_plane(broker: InProcessBroker, api_key: tuple[Path, Path, str]) -> None:
    admin, _ = clients(broker, api_key[0], api_key[2])
    pool, stream = make_pool_and_stream(admin)
    assert pool.kafka_settings.num_partitions == 2
    assert pool.kafka_settings.log_retention_hours == 48
    assert pool.kafka_settings.bootstrap_servers == broker.bootstrap
    assert stream.partitions == 3 and stream.retention_in_hours == 24
    assert stream.stream_pool_id == pool.id
    assert stream.messages_endpoint == broker.rest_url
    assert stream.compartment_id == COMPARTMENT

    # A second pool may hold a stream of the same name; the first refuses a duplicate.
    pool2, stream2 = make_pool_and_stream(admin, "orders2")
    other = admin.create_stream(
        CreateStreamDetails(name="orders", partitions=1, stream_pool_id=pool2.id)
    ).data
    assert other.id != stream.id
    with pytest.raises(oci.exceptions.ServiceError) as e:
        admin.create_stream(CreateStreamDetails(name="orders", partitions=1, stream_pool_id=pool.id))
    assert e.value.status == 409

    names = [s.name for s in admin.list_streams(stream_pool_id=pool.id).data]
    assert names == ["orders"]
    assert sorted(s.name for s in admin.list_streams(stream_pool_id=pool2.id).data) == ["orders", "orders2"]
    # Paging: one per page, following opc-next-page.
    everything = oci.pagination.list_call_get_all_results(
        admin.list_streams, compartment_id=COMPARTMENT, limit=1
    ).data
    assert sorted(s.name for s in everything) == ["orders", "orders", "orders2"]
    first = admin.list_streams(compartment_id=COMPARTMENT, limit=1, sort_by="NAME", sort_order="ASC")
    assert first.has_next_page and first.data[0].name == "orders"
    assert [p.name for p in admin.list_stream_pools(COMPARTMENT, name="pool-orders").data] == ["pool-orders"]
    assert "DefaultPool" in [p.name for p in admin.list_stream_pools(COMPARTMENT).data]

    updated = admin.update_stream_pool(
        pool.id, UpdateStreamPoolDetails(name="renamed", freeform_tags={"team": "a"})
    ).data
    assert updated.name == "renamed" and updated.freeform_tags == {"team": "a"}

    # Work requests: the composite operations wait on them.
    composite = oci.streaming.StreamAdminClientCompositeOperations(admin)
    done = composite.create_stream_and_wait_for_state(
        CreateStreamDetails(name="via-wr", partitions=1, stream_pool_id=pool.id),
        wait_for_states=["SUCCEEDED"],
    )
    assert done.data.status == "SUCCEEDED"
    assert done.data.resources[0].entity_type == "stream"

    # Deletion: DELETED stays visible, then 404 for unknown ids; errors are OCI JSON.
    admin.delete_stream(other.id)
    assert admin.get_stream(other.id).data.lifecycle_state == "DELETED"
    assert [s.name for s in admin.list_streams(stream_pool_id=pool2.id).data] == ["orders2"]
    with pytest.raises(oci.exceptions.ServiceError) as e:
        admin.get_stream("ocid1.stream.oc1..nope")
    assert e.value.status == 404 and e.value.code == "NotAuthorizedOrNotFound"
    assert e.value.headers.get("opc-request-id")
    with pytest.raises(oci.exceptions.ServiceError) as e:
        admin.create_stream(CreateStreamDetails(name="x", partitions=0, stream_pool_id=pool.id))
    assert e.value.status == 400 and e.value.code == "InvalidParameter"
    admin.delete_stream_pool(pool2.id)
    assert admin.get_stream_pool(pool2.id).data.lifecycle_state == "DELETED"
    assert admin.get_stream(stream2.id).data.lifecycle_state == "DELETED"


def test_messages_and_cursors(broker: InProcessBroker, api_key: tuple[Path, Path, str]) -> None:
    admin, data = clients(broker, api_key[0], api_key[2])
    _, stream = make_pool_and_stream(admin)
    entries = put_all(data, stream.id, 1000)
    by_partition: dict[int, list[Any]] = {}
    for i, e in enumerate(entries):
        by_partition.setdefault(int(e.partition), []).append((i, e))
    # Keys decide partitions; within a partition offsets follow the put order.
    assert len(by_partition) == 3
    for items in by_partition.values():
        assert [e.offset for _, e in items] == list(range(len(items)))

    total = 0
    for p in range(3):
        msgs = read_partition(data, stream.id, cursor(data, stream.id, p, "TRIM_HORIZON"), limit=77)
        assert [m.offset for m in msgs] == list(range(len(msgs)))
        assert [unb64(m.value) for m in msgs] == [f"v{i}" for i, _ in by_partition[p]]
        assert all(m.stream == "orders" and m.partition == str(p) for m in msgs)
        keys = {unb64(m.key) for m in msgs}
        assert all(f"k{i % 10}" in keys for i, _ in by_partition[p])
        total += len(msgs)
    assert total == 1000

    p0 = by_partition[0]
    at = read_partition(data, stream.id, cursor(data, stream.id, 0, "AT_OFFSET", offset=5), limit=1)
    assert at[0].offset == 5 and unb64(at[0].value) == f"v{p0[5][0]}"
    after = read_partition(data, stream.id, cursor(data, stream.id, 0, "AFTER_OFFSET", offset=5))
    assert after[0].offset == 6 and len(after) == len(p0) - 6
    with pytest.raises(oci.exceptions.ServiceError) as e:
        cursor(data, stream.id, 0, "AT_OFFSET", offset=len(p0) + 10)
    assert e.value.status == 400

    # AT_TIME: from the first message at or after the time.
    ts = at[0].timestamp
    timed = data.get_messages(stream.id, cursor(data, stream.id, 0, "AT_TIME", time=ts), limit=1).data
    assert timed[0].timestamp >= ts and timed[0].offset <= 5
    future = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    assert data.get_messages(stream.id, cursor(data, stream.id, 0, "AT_TIME", time=future)).data == []

    # LATEST: nothing until something new arrives.
    latest = cursor(data, stream.id, 1, "LATEST")
    r = data.get_messages(stream.id, latest)
    assert r.data == []
    key_for_1 = next(
        unb64(m.key) for m in read_partition(data, stream.id, cursor(data, stream.id, 1, "TRIM_HORIZON"))
    )
    data.put_messages(
        stream.id,
        PutMessagesDetails(messages=[PutMessagesDetailsEntry(key=b64(key_for_1), value=b64("new"))]),
    )
    got = data.get_messages(stream.id, r.headers["opc-next-cursor"]).data
    assert [unb64(m.value) for m in got] == ["new"]

    # Null keys go to some partition; garbage cursors are 400.
    res = data.put_messages(
        stream.id, PutMessagesDetails(messages=[PutMessagesDetailsEntry(value=b64("nokey"))])
    ).data
    assert res.entries[0].partition in {"0", "1", "2"} and res.failures == 0
    with pytest.raises(oci.exceptions.ServiceError) as e:
        data.get_messages(stream.id, "not-a-cursor")
    assert e.value.status == 400


def drain_group(
    data: Any, stream_id: str, cursor_value: str, limit: int, max_calls: int
) -> tuple[list[Any], str]:
    msgs: list[Any] = []
    for _ in range(max_calls):
        r = data.get_messages(stream_id, cursor_value, limit=limit)
        cursor_value = r.headers["opc-next-cursor"]
        if not r.data:
            break
        msgs.extend(r.data)
    return msgs, cursor_value


def test_group_cursor_commit_restart_resume(tmp_path: Path, api_key: tuple[Path, Path, str]) -> None:
    b = InProcessBroker(tmp_path / "data").start()
    try:
        admin, data = clients(b, api_key[0], api_key[2])
        _, stream = make_pool_and_stream(admin)
        put_all(data, stream.id, 1000)
        details = CreateGroupCursorDetails(
            group_name="readers",
            type="TRIM_HORIZON",
            instance_name="one",
            commit_on_get=False,
            timeout_in_ms=30000,
        )
        gc = data.create_group_cursor(stream.id, details).data.value
        first, gc = drain_group(data, stream.id, gc, limit=100, max_calls=5)
        assert len(first) == 500
        gc = data.consumer_commit(stream.id, gc).data.value
        data.consumer_heartbeat(stream.id, gc)
        group = data.get_group(stream.id, "readers").data
        assert sum(r.committed_offset or 0 for r in group.reservations) == 500
        assert {r.reserved_instance for r in group.reservations} == {"one"}
    finally:
        b.stop()

    b = InProcessBroker(tmp_path / "data").start()
    try:
        admin, data = clients(b, api_key[0], api_key[2])
        details = CreateGroupCursorDetails(
            group_name="readers", type="TRIM_HORIZON", instance_name="two", commit_on_get=True
        )
        gc = data.create_group_cursor(stream.id, details).data.value
        rest, gc = drain_group(data, stream.id, gc, limit=300, max_calls=20)
        seen = {(m.partition, m.offset) for m in first}
        assert len(rest) == 500
        assert not seen & {(m.partition, m.offset) for m in rest}
        # Commit-on-get: the next get committed everything returned before it.
        group = data.get_group(stream.id, "readers").data
        assert sum(r.committed_offset or 0 for r in group.reservations) == 1000

        # UpdateGroup moves the group's offsets.
        data.update_group(stream.id, "readers", UpdateGroupDetails(type="TRIM_HORIZON"))
        gc = data.create_group_cursor(stream.id, details).data.value
        again, _ = drain_group(data, stream.id, gc, limit=10000, max_calls=10)
        assert len(again) == 1000
    finally:
        b.stop()


def test_group_partitions_are_shared_between_instances(
    broker: InProcessBroker, api_key: tuple[Path, Path, str]
) -> None:
    admin, data = clients(broker, api_key[0], api_key[2])
    _, stream = make_pool_and_stream(admin, partitions=4)
    put_all(data, stream.id, 400)

    def gc(instance: str, timeout: int = 30000) -> str:
        d = CreateGroupCursorDetails(
            group_name="g",
            type="TRIM_HORIZON",
            instance_name=instance,
            timeout_in_ms=timeout,
            commit_on_get=True,
        )
        return str(data.create_group_cursor(stream.id, d).data.value)

    a = gc("a", timeout=1000)
    b = gc("b")
    ra = data.get_messages(stream.id, a).data
    rb = data.get_messages(stream.id, b).data
    pa, pb = {m.partition for m in ra}, {m.partition for m in rb}
    assert pa and pb and not pa & pb
    group = data.get_group(stream.id, "g").data
    assert {r.reserved_instance for r in group.reservations} == {"a", "b"}

    # "a" goes quiet: after its timeout its partitions go to "b".
    import time

    time.sleep(1.2)
    cb = b
    for _ in range(3):
        r = data.get_messages(stream.id, cb)
        cb = r.headers["opc-next-cursor"]
    group = data.get_group(stream.id, "g").data
    assert {r.reserved_instance for r in group.reservations} == {"b"}
