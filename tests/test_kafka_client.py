"""How the daemon uses librdkafka's consumer, on the real broker: what a paused consumer's poll may hand over."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from monitor.io.kafka import poll_paused

pytestmark = pytest.mark.integration


def test_a_partition_assigned_while_paused_loses_no_message(kafka_bootstrap: str, unique: str) -> None:
    """While a dependency is down the daemon pauses its partitions and polls only to stay in the group. A
    partition assigned inside such a poll is not paused, and the poll can return its first message: plain
    `poll` dropped it (the record was never counted: the cluster chaos run's one lost event). `poll_paused`
    puts it back, so after resume every offset is read, from the first."""
    topic = f"paused-{unique}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(200):
        producer.produce(topic, key=str(i).encode(), value=str(i).encode(), partition=i % 2)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"g-{unique}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "partition.assignment.strategy": "cooperative-sticky"})
    consumer.subscribe([topic])  # nothing assigned yet: the assignment happens inside the polls below
    try:
        put_back = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (len(consumer.assignment()) < 2 or not put_back):
            consumer.pause(consumer.assignment())  # as the daemon does when an outage begins
            put_back += poll_paused(consumer, 2.0)  # long enough for the assignment and its first fetch
        assert len(consumer.assignment()) == 2 and put_back, "the case under test: a message was handed over"
        consumer.pause(consumer.assignment())
        for _ in range(5):  # all paused now: nothing more is handed over
            assert not poll_paused(consumer, 0.1)
        consumer.resume(consumer.assignment())
        seen: dict[int, list[int]] = {0: [], 1: []}
        deadline = time.monotonic() + 30
        while sum(map(len, seen.values())) < 200 and time.monotonic() < deadline:
            for msg in consumer.consume(100, 0.5):
                assert msg.error() is None
                seen[msg.partition() or 0].append(msg.offset() or 0)
        assert seen == {0: list(range(100)), 1: list(range(100))}
    finally:
        consumer.close()
