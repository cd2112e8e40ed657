"""kafkite's own client as the mirror uses it, against a real broker: many partitions per Fetch and Produce,
transactions (commit and abort, read back by confluent-kafka read_committed), fencing, admin helpers."""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition
from helpers import BrokerProcess
from test_migrate_support import create_topic, run

from kafkite.client import BrokerConnection, KafkaClient, KafkaClientError, TransactionalProducer
from kafkite.protocol import records
from kafkite.protocol.errors import ErrorCode

pytestmark = pytest.mark.timeout(120)


def rec(i: int) -> tuple[bytes, bytes, list[tuple[str, bytes | None]], int]:
    return (f"k{i}".encode(), f"v{i}".encode(), [("i", str(i).encode())], 1_700_000_000_000 + i)


def committed_values(bootstrap: str, topic: str, partitions: int) -> dict[int, list[bytes]]:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "reader",
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    out: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
    eof: set[int] = set()
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        while len(eof) < partitions:
            m = c.poll(5)
            assert m is not None, "no end of partition"
            err = m.error()
            if err is not None:
                assert err.code() == KafkaError._PARTITION_EOF, err
                eof.add(int(m.partition() or 0))
                continue
            out[int(m.partition() or 0)].append(bytes(m.value() or b""))
    finally:
        c.close()
    return out


def test_many_partitions_per_request_and_transactions(shared_broker: BrokerProcess, topic_name: str) -> None:
    async def main() -> None:
        async with KafkaClient(shared_broker.bootstrap) as c:
            await create_topic(c, topic_name, 3)
            plain = {
                (topic_name, p): records.build_batch([rec(p * 100 + i) for i in range(5)]) for p in range(3)
            }
            got = await c.produce_many(plain)
            assert {tp: r.error_code for tp, r in got.items()} == {(topic_name, p): 0 for p in range(3)}
            fetched = await c.fetch_many({(topic_name, p): 0 for p in range(3)}, isolation_level=1)
            assert sorted(fetched) == [(topic_name, p) for p in range(3)]
            for (_, p), f in fetched.items():
                assert f.error_code == 0 and f.high_watermark == 5
                vals = [
                    r.value
                    for _, h in records.iter_headers(f.records)
                    for r in records.iter_records(f.records, _, h)
                ]
                assert vals == [f"v{p * 100 + i}".encode() for i in range(5)]

            tx = TransactionalProducer(c, f"{topic_name}-tx")
            await tx.init()
            # A committed transaction over two partitions, with a group's offsets in it.
            await tx.produce({(topic_name, 0): tx.batch(topic_name, 0, [rec(1000)])})
            await tx.produce({(topic_name, 1): tx.batch(topic_name, 1, [rec(1001), rec(1002)])})
            await tx.commit_offsets(f"{topic_name}-g", {(topic_name, 0): (3, "m")})
            await tx.commit()
            assert (await c.committed_offsets(f"{topic_name}-g", require_stable=True)) == {
                (topic_name, 0): (3, "m")
            }
            # An aborted one, written with a source batch stamped as this producer's.
            src = records.build_batch(
                [rec(2000), rec(2001)], producer_id=77, producer_epoch=3, base_sequence=9
            )
            stamped = tx.stamp(topic_name, 2, src, 2)
            h = records.read_header(stamped)
            assert records.check_crc(stamped, 0, h) and h.is_transactional and h.producer_id == tx.producer_id
            await tx.produce({(topic_name, 2): stamped})
            await tx.abort()
            # A second producer of the same id fences the first.
            other = TransactionalProducer(c, f"{topic_name}-tx")
            await other.init()
            with pytest.raises(KafkaClientError) as e:
                await tx.produce({(topic_name, 0): tx.batch(topic_name, 0, [rec(3000)])})
                await tx.commit()
            assert e.value.code in (ErrorCode.PRODUCER_FENCED, ErrorCode.INVALID_PRODUCER_EPOCH)
            await other.produce({(topic_name, 0): other.batch(topic_name, 0, [rec(4000)])})
            await other.commit()

            assert await c.create_partitions({topic_name: 4}) == {topic_name: (0, None)}
            code, _ = await c.alter_topic_configs(topic_name, {"retention.ms": "3600000"})
            assert code == 0
            cfg = await c.describe_topic_configs([topic_name])
            assert cfg[topic_name]["retention.ms"] == "3600000"
            groups = await c.describe_groups([f"{topic_name}-g"])
            assert groups[f"{topic_name}-g"]["members"] == []

    run(main())
    values = committed_values(shared_broker.bootstrap, topic_name, 3)
    assert values[0] == [f"v{i}".encode() for i in range(5)] + [b"v1000", b"v4000"]
    assert values[1] == [f"v{100 + i}".encode() for i in range(5)] + [b"v1001", b"v1002"]
    assert values[2] == [f"v{200 + i}".encode() for i in range(5)]


def test_lost_connection_is_replaced(broker: BrokerProcess, topic_name: str) -> None:
    """A client whose broker restarted opens a new connection instead of hanging on the dead one."""

    async def main() -> None:
        async with KafkaClient(broker.bootstrap) as c:
            await create_topic(c, topic_name, 1)
            broker.restart()
            for _ in range(50):
                try:
                    await c.refresh_metadata([topic_name])
                    break
                except (ConnectionError, OSError):
                    await asyncio.sleep(0.1)
            got = await c.produce_many({(topic_name, 0): records.build_batch([rec(1)])})
            assert got[(topic_name, 0)].error_code == 0

    run(main())


def test_a_frame_of_negative_size_fails_the_waiting_requests() -> None:
    """A peer that answers with a negative frame size: the request waiting for its response fails with a
    ConnectionError at once instead of waiting forever."""

    async def main() -> None:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readexactly(4)  # the ApiVersions request's size: answered before its body is read
            writer.write(b"\xff\xff\xff\xfe")
            await writer.drain()
            await reader.read()  # until the client closes
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = BrokerConnection("127.0.0.1", port)
        try:
            with pytest.raises(ConnectionError, match="unusable"):
                await asyncio.wait_for(conn.connect(), 10)
            assert conn.closed
        finally:
            await conn.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())
