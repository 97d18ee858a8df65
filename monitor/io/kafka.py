"""Kafka at the edge: message conversion, dead-letter records with error headers, topic creation, whether a
partition can take writes.

Kafka errors are sorted into fatal and retriable here, in one place.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType  # type: ignore[attr-defined]  # not re-exported
from confluent_kafka.cimpl import NewTopic

from monitor.core.types import RawRecord, Reject

DLQ_HEADER_PREFIX = "mm.error."


def _bytes(value: str | bytes | None) -> bytes:
    if value is None:
        return b""
    return value.encode() if isinstance(value, str) else value


def to_raw(msg: Message) -> RawRecord:
    """A consumed message (never an error event) as a plain frozen value. (Once per message in the daemon:
    positional arguments, and headers looked at only when there are some.)"""
    ts_type, ts = msg.timestamp()
    raw_headers = msg.headers()
    headers = () if not raw_headers else tuple(
        (str(k), _bytes(v)) for k, v in (raw_headers.items() if isinstance(raw_headers, dict) else raw_headers))
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None
    return RawRecord(topic, partition, offset, msg.key(), msg.value(), headers,
                     ts if ts_type != 0 and ts >= 0 else None)


def dead_letter_headers(reject: Reject) -> list[tuple[str, str | bytes | None]]:
    """The original headers, then ours: why it failed and where it came from (never the payload)."""
    rec = reject.record
    ours = {
        "reason": reject.reason,
        "exception": reject.error_class,
        "message": reject.message,
        "topic": rec.topic,
        "partition": str(rec.partition),
        "offset": str(rec.offset),
    }
    return [*rec.headers, *((DLQ_HEADER_PREFIX + k, v.encode()) for k, v in ours.items())]


def poll_paused(consumer: Consumer, timeout: float) -> bool:
    """Poll a consumer whose partitions are paused, to serve its callbacks and heartbeats, reading nothing. A
    partition assigned inside this poll is not paused and can hand over a message: that partition is paused
    and the message put back (sought to its offset), to be read again after resume rather than skipped.
    (The daemon dropped such a message while Redis was down: one record of a partition taken over during the
    outage was never counted.) True if a message was put back."""
    msg = consumer.poll(timeout)
    if msg is None or msg.error() is not None:
        return False
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None
    consumer.seek(TopicPartition(topic, partition, offset))
    consumer.pause([TopicPartition(topic, partition)])
    return True


def is_fatal(err: KafkaError) -> bool:
    """Fatal errors end the daemon; everything else is retried by librdkafka or by our loop. (A client's fatal
    error reaches `error_cb` as `_FATAL`, whose `fatal()` is not set; the consumer's is handled by replacing it.)"""
    return bool(err.fatal()) or err.code() in (
        KafkaError._FATAL,
        KafkaError._AUTHENTICATION,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError._INVALID_ARG,
    )


def create_topics(
    admin_conf: dict[str, Any], topics: Iterable[str], partitions: int, replication: int = -1
) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    admin = AdminClient(admin_conf)
    existing = set(admin.list_topics(timeout=15).topics)
    wanted = [t for t in dict.fromkeys(topics) if t not in existing]
    if not wanted:
        return []
    futures = admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=replication)
                                   for t in wanted], operation_timeout=30)
    created = []
    for topic, fut in futures.items():
        try:
            fut.result()
            created.append(topic)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created


class Writability:
    """Whether an input partition can take writes now: it has a leader and at least `min.insync.replicas` of
    its replicas in sync (what a producer with acks=all, the default, needs). A partition that cannot is quiet
    because of Kafka, so its quiet says nothing about the stream's producers (a cluster losing brokers one by
    one: the last one still serves reads while every write is refused).

    Metadata comes from the consumer's connection (at most once a second per topic); a topic's
    `min.insync.replicas` from the admin API, once (1 when it cannot be read, e.g. not authorised)."""

    def __init__(self, consumer: Consumer, admin_conf: dict[str, Any]) -> None:
        self.consumer = consumer
        self.admin_conf = admin_conf
        self._min_isr: dict[str, tuple[int, bool, float]] = {}  # topic -> value, read, when
        self._admin: AdminClient | None = None
        self._metadata: dict[str, tuple[float, Any]] = {}

    def min_isr(self, topic: str) -> int:
        """The topic's `min.insync.replicas` (its effective value: a broker default too); 1 while it cannot be
        read, asked again a minute later."""
        known = self._min_isr.get(topic)
        now = time.monotonic()
        if known is not None and (known[1] or now - known[2] < 60.0):
            return known[0]
        value, read = 1, False
        try:
            if self._admin is None:
                self._admin = AdminClient(self.admin_conf)  # kept: a client dropped at once fails its futures
            resource = ConfigResource(ResourceType.TOPIC, topic)
            entries = self._admin.describe_configs([resource], request_timeout=5)[resource].result(timeout=6)
            value, read = int(entries["min.insync.replicas"].value), True
        except (KafkaException, KeyError, ValueError, TimeoutError):
            pass
        self._min_isr[topic] = (value, read, now)
        return value

    def check(self, topic: str, partition: int) -> dict[str, Any] | None:
        """None when the partition can take writes; otherwise what stops it (leader, in-sync replicas, the
        minimum). A metadata request that fails (the brokers unreachable) counts as not writable."""
        now = time.monotonic()
        cached = self._metadata.get(topic)
        if cached is None or now - cached[0] >= 1.0:
            try:
                md = self.consumer.list_topics(topic, timeout=2.0).topics.get(topic)
            except KafkaException:
                md = None
            cached = self._metadata[topic] = (now, md)
        md = cached[1]
        if md is None or md.error is not None or partition not in md.partitions:
            return {"reason": "no metadata for the partition"}
        p = md.partitions[partition]
        need = self.min_isr(topic)
        if p.leader < 0 or len(p.isrs) < need:
            return {"reason": "no leader" if p.leader < 0 else "fewer in-sync replicas than min.insync.replicas",
                    "leader": p.leader, "in_sync": len(p.isrs), "min_insync": need}
        return None
