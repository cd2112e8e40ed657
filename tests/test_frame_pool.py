"""Large requests are received into buffers kept from earlier ones, and no record is the worse for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from kafkite.embedded import EmbeddedBroker

confluent_kafka = pytest.importorskip("confluent_kafka")


def test_large_produce_requests_reuse_buffers_and_every_record_reads_back_intact(tmp_path: Path) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    with EmbeddedBroker(engine="file", data_dir=tmp_path / "data") as broker:
        bootstrap = broker.bootstrap_servers
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("pooled", num_partitions=2, replication_factor=1)])["pooled"].result(20)
        producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "linger.ms": 20,
                "batch.size": 400_000,  # requests of a few hundred KB: each received into a buffer of its own
                "compression.type": "none",
            }
        )
        sent: dict[int, list[bytes]] = {0: [], 1: []}
        failures: list[str] = []

        def report(err: object, msg: object) -> None:
            if err is not None:
                failures.append(str(err))

        for i in range(12_000):
            value = (f"{i:08d}".encode() * 128)[: 700 + i % 600]
            p = i % 2
            producer.produce("pooled", value, key=str(i).encode(), partition=p, on_delivery=report)
            sent[p].append(value)
            if i % 1000 == 999:
                producer.poll(0)
        assert producer.flush(30) == 0 and not failures
        running = broker._require()
        assert running.server.frame_pool.taken > 0, "no large request was received into a kept buffer"

        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "pooled-check",
                "enable.auto.commit": False,
                "check.crcs": True,
                "enable.partition.eof": True,
            }
        )
        got: dict[int, list[bytes]] = {0: [], 1: []}
        try:
            consumer.assign([TopicPartition("pooled", p, 0) for p in (0, 1)])
            ended: set[int] = set()
            while len(ended) < 2:
                for m in consumer.consume(1000, 5):
                    if m.error() is not None:
                        assert m.error().code() == -191, m.error()  # _PARTITION_EOF
                        ended.add(m.partition())
                    else:
                        got[m.partition()].append(m.value())
        finally:
            consumer.close()
        assert got == sent
