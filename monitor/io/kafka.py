"""Kafka at the edge: message conversion, dead-letter records with error headers, topic creation.

Kafka errors are sorted into fatal and retriable here, in one place.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from monitor.core.types import RawRecord, Reject

DLQ_HEADER_PREFIX = "mm.error."


def _bytes(value: str | bytes | None) -> bytes:
    if value is None:
        return b""
    return value.encode() if isinstance(value, str) else value


def to_raw(msg: Message) -> RawRecord:
    """A consumed message (never an error event) as a plain frozen value."""
    ts_type, ts = msg.timestamp()
    raw_headers = msg.headers() or []
    pairs = raw_headers.items() if isinstance(raw_headers, dict) else raw_headers
    headers = tuple((str(k), _bytes(v)) for k, v in pairs)
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None
    return RawRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        key=msg.key(),
        value=msg.value(),
        headers=headers,
        timestamp_ms=ts if ts_type != 0 and ts >= 0 else None,
    )


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


def is_fatal(err: KafkaError) -> bool:
    """Fatal errors end the daemon; everything else is retried by librdkafka or by our loop."""
    return bool(err.fatal()) or err.code() in (
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
