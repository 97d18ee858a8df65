"""The outbox: what a checkpoint committed to send (alerts, block summaries), sent until Kafka confirms it.

Entries are written to Redis in the same atomic script as the state and offsets that produced them
(`StateStore.commit`); this class sends them, retries after a pause, and forgets each one once its delivery
report (or its transaction) succeeded. Both stages use it. Ids decide the topic: `blk:` entries go to the
blocks topic, the others to the alerts topic; block ids sort in their partition's order, so a re-send after a
crash keeps it.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from monitor.errors import DependencyUnavailable
from monitor.io.state import StateStore
from monitor.ops.metrics import Metrics

log = structlog.get_logger("monitor.outbox")
TP = tuple[str, int]
RETRY_S = 5.0
BLOCK_PREFIX = "blk:"


def block_entry_id(topic: str, partition: int, seq: int) -> str:
    """The outbox id of a block summary: sorts by partition, then by sequence number."""
    return f"{BLOCK_PREFIX}{topic}:{partition}:{seq:012d}"


def encode_entry(key: bytes, value: bytes) -> bytes:
    return key + b"\n" + value


class Outbox:
    """Entries committed to the store and not yet confirmed by Kafka, keyed by id."""

    def __init__(self, store: StateStore, metrics: Metrics, alerts_topic: str, blocks_topic: str,
                 stage: str = "ingest") -> None:
        self.store = store
        self.stage = stage
        self.metrics = metrics
        self.alerts_topic = alerts_topic
        self.blocks_topic = blocks_topic
        self.pending: dict[str, tuple[TP, bytes, bytes]] = {}  # id -> (source partition, key, value)
        self.inflight: set[str] = set()
        self.retry_at: dict[str, float] = {}
        self.delivered: dict[TP, list[str]] = defaultdict(list)
        self.producer: Producer | None = None
        self.tx_producer: Producer | None = None
        self.fatal = False  # a transactional producer that can no longer work: the daemon must restart

    def __len__(self) -> int:
        return len(self.pending)

    def topic_of(self, entry_id: str) -> str:
        return self.blocks_topic if entry_id.startswith(BLOCK_PREFIX) else self.alerts_topic

    def add(self, tp: TP, entries: dict[str, bytes]) -> None:
        """Entries just committed, in their order (or found in the store on assignment); blocks by id."""
        blocks = sorted(e for e in entries if e.startswith(BLOCK_PREFIX))
        for entry_id in [e for e in entries if not e.startswith(BLOCK_PREFIX)] + blocks:
            key, _, value = entries[entry_id].partition(b"\n")
            self.pending[entry_id] = (tp, key, value)

    def release(self, gone: set[TP]) -> None:
        """Forget unsent entries of partitions given up: their next owner re-sends them from the store."""
        for entry_id, (tp, _key, _value) in list(self.pending.items()):
            if tp in gone and entry_id not in self.inflight:
                del self.pending[entry_id]

    def publish(self, wait: float) -> None:
        """Send entries not yet in flight; forget those Kafka confirmed."""
        producer = self.producer
        if producer is None:
            return
        if self.tx_producer is not None:
            self._publish_transaction(self.tx_producer)
            self._forget_delivered()
            return
        now = time.monotonic()
        for entry_id, (tp, key, value) in list(self.pending.items()):
            if entry_id in self.inflight or self.retry_at.get(entry_id, 0.0) > now:
                continue
            try:
                producer.produce(self.topic_of(entry_id), key=key, value=value,
                                 on_delivery=self._delivery(entry_id, tp))
            except (KafkaException, BufferError) as exc:
                # Refused before sending (queue full, message too large): kept, tried again after a pause.
                self.retry_at[entry_id] = now + RETRY_S
                self.metrics.alert_failures.inc()
                code = exc.args[0].name() if isinstance(exc, KafkaException) else "QUEUE_FULL"
                log.warning("outbox.produce_refused", entry_id=entry_id, code=code, bytes=len(value))
                continue
            self.inflight.add(entry_id)
        if wait > 0:
            producer.flush(wait)
        else:
            producer.poll(0)
        self._forget_delivered()

    def _publish_transaction(self, producer: Producer) -> None:
        """All sendable entries in one Kafka transaction; delivered only once it commits."""
        now = time.monotonic()
        batch = [(a, v) for a, v in self.pending.items() if self.retry_at.get(a, 0.0) <= now]
        if not batch:
            return
        try:
            producer.begin_transaction()
            for entry_id, (_tp, key, value) in batch:
                producer.produce(self.topic_of(entry_id), key=key, value=value)
            producer.commit_transaction(30)
        except KafkaException as exc:
            err = exc.args[0]
            log.warning("alert.transaction_failed", code=err.name(), alerts=len(batch))
            self.metrics.alert_failures.inc()
            if err.txn_requires_abort():
                with contextlib.suppress(KafkaException):
                    producer.abort_transaction(30)
            if err.fatal():
                self.fatal = True  # a fenced or broken transactional producer: restart the daemon
            for entry_id, _ in batch:
                self.retry_at[entry_id] = time.monotonic() + RETRY_S
            return
        for entry_id, (tp, _key, _value) in batch:
            self._done(entry_id, tp)

    def _done(self, entry_id: str, tp: TP) -> None:
        self.pending.pop(entry_id, None)
        self.retry_at.pop(entry_id, None)
        self.delivered[tp].append(entry_id)
        if not entry_id.startswith(BLOCK_PREFIX):
            self.metrics.alerts_delivered.inc()

    def _forget_delivered(self) -> None:
        for tp, ids in list(self.delivered.items()):
            try:
                self.store.outbox_done(tp[0], tp[1], ids)
            except DependencyUnavailable:
                continue  # retried on the next loop; a re-sent entry is byte-identical
            del self.delivered[tp]
        self.metrics.outbox.labels(self.stage).set(len(self.pending))

    def _delivery(self, entry_id: str, tp: TP) -> Any:
        def report(err: KafkaError | None, _msg: Message) -> None:
            self.inflight.discard(entry_id)
            if err is None:
                self._done(entry_id, tp)
            else:
                # Kept in the outbox; tried again after a pause, not on every loop.
                self.retry_at[entry_id] = time.monotonic() + RETRY_S
                self.metrics.alert_failures.inc()
                log.warning("alert.delivery_failed", alert_id=entry_id, code=err.name())

        return report
