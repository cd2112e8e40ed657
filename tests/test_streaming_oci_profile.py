"""``profile=oci``: OCI Streaming's published limits on the REST and the Kafka surfaces."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import oci
import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)
from oci.streaming.models import (
    CreateCursorDetails,
    CreateGroupCursorDetails,
    CreateStreamDetails,
    PutMessagesDetails,
    PutMessagesDetailsEntry,
)
from test_streaming_support import COMPARTMENT, InProcessBroker, clients, make_api_key

pytestmark = pytest.mark.timeout(120)
SET = AlterConfigOpType.SET
MB = 1024 * 1024


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[InProcessBroker]:
    with InProcessBroker(tmp_path / "data", "profile=oci") as b:
        yield b


@pytest.fixture
def sdk(broker: InProcessBroker, tmp_path: Path) -> tuple[Any, Any]:
    private, _, fp = make_api_key(tmp_path)
    return clients(broker, private, fp)


def entry(value: bytes, key: bytes | None = None) -> PutMessagesDetailsEntry:
    return PutMessagesDetailsEntry(
        key=None if key is None else base64.b64encode(key).decode(), value=base64.b64encode(value).decode()
    )


def test_rest_limits(sdk: tuple[Any, Any]) -> None:
    admin, data = sdk
    # Retention: 24 to 168 hours.
    for hours in (1, 169):
        with pytest.raises(oci.exceptions.ServiceError) as e:
            admin.create_stream(
                CreateStreamDetails(
                    name="s", partitions=1, compartment_id=COMPARTMENT, retention_in_hours=hours
                )
            )
        assert e.value.status == 400 and e.value.code == "InvalidParameter"
        assert "retention" in e.value.message.lower()
    stream = admin.create_stream(
        CreateStreamDetails(name="s", partitions=1, compartment_id=COMPARTMENT, retention_in_hours=24)
    ).data
    assert admin.get_stream(stream.id).data.retention_in_hours == 24

    # 1 MB per message.
    with pytest.raises(oci.exceptions.ServiceError) as e:
        data.put_messages(stream.id, PutMessagesDetails(messages=[entry(b"x" * (2 * MB))]))
    assert e.value.status == 400
    # 1 MB/s per partition: a second 900 KB put within the second still fits the burst, a third does not.
    big = PutMessagesDetails(messages=[entry(b"y" * (900 * 1024), key=b"k")])
    assert data.put_messages(stream.id, big).data.failures == 0
    assert data.put_messages(stream.id, big).data.failures == 0
    with pytest.raises(oci.exceptions.ServiceError) as e:
        data.put_messages(stream.id, big)
    assert e.value.status == 429 and e.value.code == "TooManyRequests"

    # 5 GetMessages per second per partition (and group).
    cursor = data.create_cursor(stream.id, CreateCursorDetails(partition="0", type="LATEST")).data.value
    statuses = []
    for _ in range(10):
        try:
            data.get_messages(stream.id, cursor)
            statuses.append(200)
        except oci.exceptions.ServiceError as err:
            statuses.append(err.status)
    assert statuses.count(429) >= 3 and statuses[:5] == [200] * 5

    # At most 50 consumer groups per stream.
    for i in range(50):
        data.create_group_cursor(stream.id, CreateGroupCursorDetails(group_name=f"g{i}", type="LATEST"))
    with pytest.raises(oci.exceptions.ServiceError) as e:
        data.create_group_cursor(stream.id, CreateGroupCursorDetails(group_name="g50", type="LATEST"))
    assert e.value.status == 400 and e.value.code == "LimitExceeded"
    # An existing group still gets cursors.
    data.create_group_cursor(stream.id, CreateGroupCursorDetails(group_name="g7", type="LATEST"))


def test_kafka_limits(broker: InProcessBroker) -> None:
    ac = AdminClient({"bootstrap.servers": broker.bootstrap})

    def create(topic: NewTopic) -> Any:
        return ac.create_topics([topic])[topic.topic].result(10)

    for config, why in (
        ({"cleanup.policy": "compact"}, "compaction"),
        ({"retention.ms": str(3600 * 1000)}, "retention"),
        ({"max.message.bytes": str(3 * MB)}, "limited to"),
    ):
        with pytest.raises(KafkaException) as e:
            create(NewTopic("t", num_partitions=1, config=config))
        err = e.value.args[0]
        assert err.code() == KafkaError.POLICY_VIOLATION and why in err.str()
    create(NewTopic("t", num_partitions=1, config={"retention.ms": str(48 * 3600 * 1000)}))
    with pytest.raises(KafkaException) as e:
        ac.create_partitions([NewPartitions("t", 2)])["t"].result(10)
    assert e.value.args[0].code() == KafkaError.POLICY_VIOLATION
    res = ConfigResource(
        "topic",
        "t",
        incremental_configs=[ConfigEntry("retention.ms", str(72 * 3600 * 1000), incremental_operation=SET)],
    )
    with pytest.raises(KafkaException) as e:
        ac.incremental_alter_configs([res])[res].result(10)
    assert e.value.args[0].code() == KafkaError.POLICY_VIOLATION

    # 1 MB per message: the broker refuses a 2 MB one.
    p = Producer({"bootstrap.servers": broker.bootstrap, "message.max.bytes": 3 * MB, "linger.ms": 0})
    errors: list[Any] = []
    p.produce("t", value=b"z" * (2 * MB), on_delivery=lambda err, msg: errors.append(err))
    p.flush(30)
    assert errors and errors[0] is not None and errors[0].code() == KafkaError.MSG_SIZE_TOO_LARGE


def test_kafka_producer_is_throttled_to_1mb_per_second(broker: InProcessBroker) -> None:
    ac = AdminClient({"bootstrap.servers": broker.bootstrap})
    ac.create_topics([NewTopic("fast", num_partitions=1)])["fast"].result(10)
    throttles: list[Any] = []
    p = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "linger.ms": 5,
            "batch.size": 64 * 1024,
            "queue.buffering.max.kbytes": 64 * 1024,
            "throttle_cb": throttles.append,
        }
    )
    delivered = [0]

    def on_delivery(err: Any, msg: Any) -> None:
        assert err is None
        delivered[0] += len(msg.value())

    # Offer 3 MB/s for 2 seconds (6 MB); at 1 MB/s (plus a 1 MB burst) it takes about 5 seconds to land.
    chunk = b"m" * (30 * 1024)
    start = time.monotonic()
    while time.monotonic() - start < 2.0:
        for _ in range(3):
            p.produce("fast", value=chunk, on_delivery=on_delivery)
        p.poll(0)
        time.sleep(0.03)
    offered = delivered[0] + len(p) * len(chunk)
    assert p.flush(60) == 0
    elapsed = time.monotonic() - start
    rate = delivered[0] / elapsed
    assert offered >= 5 * MB
    assert 0.6 * MB <= rate <= 1.5 * MB, f"{rate / MB:.2f} MB/s over {elapsed:.1f}s"
    assert throttles, "the broker reported no throttle time"
    print(f"throttled producer: {rate / MB:.2f} MB/s over {elapsed:.1f}s")


def test_kafka_51st_group_on_a_stream_is_refused(broker: InProcessBroker) -> None:
    """Fifty groups may commit offsets on a stream; a new 51st is refused, the first fifty go on."""
    from helpers import RawClient

    ac = AdminClient({"bootstrap.servers": broker.bootstrap})
    ac.create_topics([NewTopic("s", num_partitions=1, config={"retention.ms": str(48 * 3600 * 1000)})])[
        "s"
    ].result(10)
    raw = RawClient.to(broker.bootstrap)

    def commit(group: str) -> int:
        resp = raw.request(
            8,
            8,
            {
                "group_id": group,
                "generation_id_or_member_epoch": -1,
                "member_id": "",
                "topics": [{"name": "s", "partitions": [{"partition_index": 0, "committed_offset": 0}]}],
            },
        )
        return int(resp["topics"][0]["partitions"][0]["error_code"])

    for i in range(50):
        assert commit(f"g{i}") == 0
    assert commit("g50") == KafkaError.POLICY_VIOLATION
    assert commit("g7") == 0  # a group the stream already has keeps committing


def test_kafka_transactions_are_refused(broker: InProcessBroker) -> None:
    p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "tx"})
    with pytest.raises(KafkaException) as e:
        p.init_transactions(10)
    assert e.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
