"""The loop: consume a micro-batch, process it per partition, checkpoint to Redis, publish, commit.

Handles rebalances (fence + stored offsets), dependency outages (pause, back off, keep polling) and SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any

import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from monitor.app.pipeline import AnyProcessor, BatchOutcome, LabelProcessor, StreamProcessor, build_processors
from monitor.core.labels import LabelPartition
from monitor.core.partition import StreamPartition
from monitor.core.types import Alert, RawRecord, Reject
from monitor.errors import DependencyUnavailable, FencedError, OffsetConflict, StateLost
from monitor.io.avro import AlertCodec
from monitor.io.history import DriftHistory
from monitor.io.join import JoinStore, MemoryJoinStore
from monitor.io.kafka import dead_letter_headers, is_fatal, to_raw
from monitor.io.state import StateStore, check_consistent
from monitor.ops.logs import librdkafka_logger
from monitor.ops.metrics import Metrics
from monitor.profile.store import ReferenceStore
from monitor.settings import Settings

log = structlog.get_logger("monitor.app.daemon")
TP = tuple[str, int]
ALERT_RETRY_S = 5.0


@dataclass
class Owned:
    """A partition this instance owns: its fence token, stored offset and in-memory state."""

    fence: int
    stored_offset: int | None
    part: StreamPartition | LabelPartition


class Daemon:
    def __init__(self, settings: Settings, store: StateStore, metrics: Metrics | None = None,
                 references: ReferenceStore | None = None, joins: JoinStore | None = None,
                 history: DriftHistory | None = None) -> None:
        self.settings = settings
        self.store = store
        self.references = references
        self.joins: JoinStore = joins if joins is not None else MemoryJoinStore()
        self.history: DriftHistory = history if history is not None else DriftHistory(None, "", "")
        self.latest_drift: dict[tuple[str, str, str], tuple[str, float, float]] = {}
        self.recent_alerts: deque[Alert] = deque(maxlen=50)
        self.lags: dict[TP, int] = {}
        self._last_join_retry = 0.0
        self.last_seen: dict[TP, float] = {}
        self.lost: dict[TP, str] = {}  # partitions halted because their state is gone (on_state_lost: halt)
        self.topic_partitions: dict[str, int] = {}  # for the event-rate check: a partition sees 1/n
        self._last_silence_check = 0.0
        self._last_reference_check = 0.0
        self.metrics = metrics or Metrics()
        self.processors: dict[str, AnyProcessor] = build_processors(settings)
        self.codec = AlertCodec()
        self.owned: dict[TP, Owned] = {}
        self.stop_event = threading.Event()
        self.assigned_once = False
        self.outage: str | None = None
        self.alive = True
        # Alerts written to the outbox but not yet confirmed by Kafka: alert_id -> (tp, key, value).
        self.pending: dict[str, tuple[TP, bytes, bytes]] = {}
        self.inflight: set[str] = set()
        self._retry_at: dict[str, float] = {}
        self.delivered: dict[TP, list[str]] = defaultdict(list)
        self.consumer: Consumer | None = None
        self.tx_producer: Producer | None = None
        self._last_probe = 0.0
        self.producer: Producer | None = None

    # -- health ---------------------------------------------------------------------------------
    def is_ready(self) -> bool:
        return self.alive and self.assigned_once and self.outage is None and not self.lost

    def is_live(self) -> bool:
        return self.alive

    def status_page(self) -> str:
        return render_status_page(self)

    def stop(self) -> None:
        self.stop_event.set()

    # -- rebalance callbacks ----------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed = self._committed(consumer, partitions)
        for tp in partitions:
            tp.offset = self._take(tp.topic, tp.partition, committed.get((tp.topic, tp.partition)))
        consumer.incremental_assign(partitions)
        halted = [tp for tp in partitions if (tp.topic, tp.partition) in self.lost]
        if halted:
            consumer.pause(halted)
        self.assigned_once = True
        self.metrics.assigned.set(len(self.owned))
        log.info("partitions.assigned", partitions=[f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in partitions])

    @staticmethod
    def _committed(consumer: Consumer, partitions: list[TopicPartition]) -> dict[TP, int]:
        """The group's committed offsets: we commit after every checkpoint, so one means state existed."""
        try:
            found = consumer.committed([TopicPartition(tp.topic, tp.partition) for tp in partitions], timeout=10)
        except KafkaException as exc:
            log.warning("kafka.committed_unavailable", error=str(exc))
            return {}
        return {(tp.topic, tp.partition): tp.offset for tp in found if tp.offset >= 0}

    def _take(self, topic: str, partition: int, committed: int | None = None) -> int:
        """Fence the partition, load its state and outbox; return where to start consuming."""
        while True:
            try:
                snap = self.store.acquire(topic, partition)
                break
            except DependencyUnavailable as exc:
                # Inside the rebalance callback: wait without polling (librdkafka heartbeats on its own thread).
                self._outage("redis", exc, poll=False)
        problem = None
        try:
            check_consistent(topic, partition, snap)
        except StateLost as exc:
            problem = str(exc)
        if problem is None and snap.offset is None and committed is not None:
            problem = (f"{topic}[{partition}] has no state in Redis but the group committed offset {committed}: "
                       f"Redis lost its data")
        part = self._new_partition(topic, partition)
        if problem is not None:
            self.metrics.state_lost.labels(topic, str(partition)).set(1)
            log.error("state.lost", topic=topic, partition=partition, problem=problem,
                      policy=self.settings.on_state_lost)
            if self.settings.on_state_lost == "halt":
                self.lost[(topic, partition)] = problem
                return committed if committed is not None else OFFSET_END
            # restart: fresh state from the committed offset; the next checkpoint overwrites what is left
            self.owned[(topic, partition)] = Owned(snap.fence, None, part)
            self.last_seen[(topic, partition)] = time.monotonic()
            if committed is not None:
                return committed
            return OFFSET_BEGINNING if self.settings.start_from == "earliest" else OFFSET_END
        if snap.fields:
            part.load_fields(snap.fields)
        self.owned[(topic, partition)] = Owned(snap.fence, snap.offset, part)
        self.last_seen[(topic, partition)] = time.monotonic()
        for alert_id, entry in snap.outbox.items():
            key, _, value = entry.partition(b"\n")
            self.pending[alert_id] = ((topic, partition), key, value)
        if snap.offset is not None:
            return snap.offset
        return OFFSET_BEGINNING if self.settings.start_from == "earliest" else OFFSET_END

    def _new_partition(self, topic: str, partition: int) -> StreamPartition | LabelPartition:
        return self.processors[topic].new_partition(partition, self.topic_partitions.get(topic, 1))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Every batch is checkpointed before the next poll, so there is nothing left to write here.
        self._publish(wait=5.0)
        self._release(partitions)
        consumer.incremental_unassign(partitions)
        self.metrics.assigned.set(len(self.owned))
        log.info("partitions.revoked", partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions])

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Write nothing: another instance may own these now, and the fence rejects our late writes.
        self._release(partitions)
        consumer.incremental_unassign(partitions)
        self.metrics.assigned.set(len(self.owned))
        log.warning("partitions.lost", partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions])

    def _release(self, partitions: list[TopicPartition]) -> None:
        """Forget partitions and their unsent alerts: the next owner re-sends them from the outbox."""
        gone = {(tp.topic, tp.partition) for tp in partitions}
        for tp in gone:
            self.owned.pop(tp, None)
            self.lost.pop(tp, None)
        for alert_id, (tp, _key, _value) in list(self.pending.items()):
            if tp in gone and alert_id not in self.inflight:
                del self.pending[alert_id]

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> int:
        s = self.settings
        hooks = {"error_cb": self._on_kafka_error, "logger": librdkafka_logger()}
        self.consumer = Consumer({**s.consumer_config(), **hooks})
        self.producer = Producer({**s.producer_config(), **hooks})
        if s.alerts_transactional:
            tx_id = s.transactional_id or f"{s.group_id}-alerts-{socket.gethostname()}-{os.getpid()}"
            self.tx_producer = Producer({**s.producer_config(), **hooks, "transactional.id": tx_id})
            self.tx_producer.init_transactions(30)
        self.consumer.subscribe(list(self.processors), on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)
        self._refresh_references(force=True)
        try:
            metadata = self.consumer.list_topics(timeout=10)
            self.topic_partitions = {t: len(metadata.topics[t].partitions) for t in self.processors
                                     if t in metadata.topics and metadata.topics[t].error is None}
        except KafkaException as exc:
            log.warning("kafka.metadata_unavailable", error=str(exc))
        log.info("daemon.started", topics=list(self.processors), group=s.group_id)
        try:
            while not self.stop_event.is_set() and self.alive:
                if len(self.pending) > s.max_outbox:
                    # The alerts topic is not taking alerts: stop adding to the outbox until it drains.
                    self._outage("alerts", DependencyUnavailable(f"{len(self.pending)} alerts undelivered"))
                    self._publish(wait=1.0)
                    continue
                if self.outage == "alerts":
                    self.outage = None
                msgs = self.consumer.consume(num_messages=s.batch.max_messages, timeout=s.batch.timeout_s)
                if msgs:
                    self._handle(msgs)
                self._publish(wait=0.0)
                self._probe_kafka()
                self._check_silence()
                self._retry_joins()
                self._refresh_references()
                self.metrics.ready.set(1 if self.is_ready() else 0)
        finally:
            log.info("daemon.stopping")
            self._publish(wait=10.0)
            self.consumer.close()  # runs on_revoke: the last batch is already checkpointed
            self.producer.flush(10.0)
            if self.tx_producer is not None:
                self.tx_producer.flush(10.0)
        return 0 if self.alive else 1

    def _on_kafka_error(self, err: KafkaError) -> None:
        if is_fatal(err):
            log.error("kafka.fatal", code=err.name(), reason=err.str())
            self.alive = False
            return
        log.warning("kafka.error", code=err.name(), reason=err.str())
        if err.code() == KafkaError._ALL_BROKERS_DOWN and self.outage is None:
            self.outage = "kafka"
            self.metrics.outages.labels("kafka").inc()

    def _probe_kafka(self) -> None:
        """While the brokers were down: a metadata request that answers means they are back."""
        now = time.monotonic()
        if self.outage != "kafka" or now - self._last_probe < 2.0 or self.consumer is None:
            return
        self._last_probe = now
        try:
            self.consumer.list_topics(timeout=2.0)
        except KafkaException:
            return
        log.info("dependency.up", dependency="kafka")
        self.outage = None

    def _handle(self, msgs: list[Message]) -> None:
        started = time.perf_counter()
        by_tp: dict[TP, list[RawRecord]] = defaultdict(list)
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    self._on_kafka_error(err)
                continue
            raw = to_raw(msg)
            by_tp[(raw.topic, raw.partition)].append(raw)
        commits = []
        for tp, records in by_tp.items():
            next_offset = self._process_partition(tp, records)
            if next_offset is not None:
                commits.append(TopicPartition(tp[0], tp[1], next_offset))
        if commits:
            assert self.consumer is not None
            # Only for lag dashboards: the offsets that count are in the state store.
            self.consumer.commit(offsets=commits, asynchronous=True)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    def _process_partition(self, tp: TP, records: list[RawRecord]) -> int | None:
        owned = self.owned.get(tp)
        if owned is None:
            return None  # revoked while the batch was in flight
        if owned.stored_offset is not None:
            records = [r for r in records if r.offset >= owned.stored_offset]  # already applied
        if not records:
            return None
        self.last_seen[tp] = time.monotonic()
        processor = self.processors[tp[0]]
        if isinstance(processor, LabelProcessor):
            assert isinstance(owned.part, LabelPartition)
            rows, rejects, ids = processor.ids_needed(owned.part, records)
            try:
                lookups = self.joins.get(processor.model.name, ids)
            except DependencyUnavailable as exc:
                self._outage("redis", exc)
                self._reload(tp)
                return None
            outcome = processor.process_labels(owned.part, rows, rejects, lookups, records[-1].offset + 1)
            perf = owned.part.window_metrics()
            if perf and owned.part.closed_meta:
                metric = "accuracy" if processor.model.type == "classifier" else "mae"
                self.history.record(processor.model.name, "labels", tp[1], int(owned.part.closed_meta[-1][3]),
                                    {metric: (metric, float(perf[metric]), float("nan"))})
        else:
            assert isinstance(owned.part, StreamPartition)
            outcome = processor.process(owned.part, records)
            for feature, (statistic, value, _threshold) in owned.part.last_drift.items():
                self.metrics.drift.labels(processor.model.name, processor.stream, feature, statistic,
                                          str(tp[1])).set(value)
            for feature, drift in owned.part.last_drift.items():
                self.latest_drift[(processor.model.name, processor.stream, feature)] = drift
            if owned.part.last_drift:
                self.history.record(processor.model.name, processor.stream, tp[1], owned.part.last_time,
                                    owned.part.last_drift)
                owned.part.last_drift = {}
        if not self._checkpoint(tp, owned, outcome.next_offset, outcome.alerts, outcome.rejects, outcome):
            return None
        m = self.metrics
        m.events.labels(processor.model.name, processor.stream).inc(outcome.valid)
        for rej in outcome.rejects:
            m.rejects.labels(processor.model.name, processor.stream, rej.reason).inc()
        self._update_lag(tp, outcome.next_offset)
        return outcome.next_offset

    def _checkpoint(self, tp: TP, owned: Owned, next_offset: int, alerts: list[Alert], rejects: list[Reject],
                    outcome: BatchOutcome | None = None) -> bool:
        """Dead-letter the rejects, then write state + outbox + offset atomically; False if not written.

        1. produce the rejects to the dead-letter topic and wait for Kafka's confirmation;
        2. store the batch's predictions for the label join (idempotent: a replay writes the same entries);
        3. one Redis script: check the fence and the expected offset, write state, outbox and offset;
        4. queue the alerts for publishing (removed from the outbox once Kafka confirms them).
        """
        processor = self.processors[tp[0]]
        try:
            self._dead_letter(rejects)
            if outcome is not None and outcome.join_entries:
                perf = processor.model.performance
                dropped = self.joins.put(processor.model.name, tp[1], outcome.join_entries,
                                         int(perf.join_ttl_s * 1000), perf.max_predictions)
                # Predictions whose label never came (counted again if a crash replays the batch).
                self.metrics.unlabelled.labels(processor.model.name).inc(dropped)
            encoded = {a.alert_id: self.codec.encode(a) for a in alerts}
            key = processor.model.name.encode()
            outbox = {alert_id: key + b"\n" + value for alert_id, value in encoded.items()}
            self.store.commit(tp[0], tp[1], owned.fence, owned.stored_offset, next_offset,
                              owned.part.to_fields(), outbox)
        except FencedError:
            log.warning("partition.fenced", topic=tp[0], partition=tp[1])
            self.owned.pop(tp, None)
            return False
        except (OffsetConflict, DependencyUnavailable) as exc:
            # Memory is ahead of the store: drop it, reload what the store has and consume from there.
            if isinstance(exc, DependencyUnavailable):
                self._outage("redis" if "redis" in str(exc) else "kafka", exc)
            self._reload(tp)
            return False
        owned.stored_offset = next_offset
        self.outage = None
        if outcome is not None and outcome.label_lags_ms:
            for lag in outcome.label_lags_ms:
                self.metrics.label_lag.labels(processor.model.name).observe(lag / 1000.0)
        if isinstance(owned.part, LabelPartition):
            for result, count in owned.part.counts.items():
                self.metrics.joins.labels(processor.model.name, str(tp[1]), result).set(count)
            self.metrics.joins.labels(processor.model.name, str(tp[1]), "pending").set(len(owned.part.pending))
        for alert_id, value in encoded.items():
            self.pending[alert_id] = (tp, key, value)
        for alert in alerts:
            self.recent_alerts.appendleft(alert)
            self.metrics.alerts.labels(alert.model, alert.kind, alert.check).inc()
            log.info("alert.raised", model=alert.model, feature=alert.feature, kind=str(alert.kind),
                     check=alert.check, status=alert.status, statistic=alert.statistic, threshold=alert.threshold,
                     alert_id=alert.alert_id, offset=alert.source_offset)
        return True

    def _retry_joins(self) -> None:
        """Labels that arrived before their prediction: look again every 2 s, not only when labels arrive."""
        now = time.monotonic()
        if now - self._last_join_retry < 2.0:
            return
        self._last_join_retry = now
        for tp, owned in list(self.owned.items()):
            processor = self.processors[tp[0]]
            part = owned.part
            if not isinstance(processor, LabelProcessor) or not isinstance(part, LabelPartition):
                continue
            if not part.pending or owned.stored_offset is None:
                continue
            try:
                lookups = self.joins.get(processor.model.name, list(part.pending))
            except DependencyUnavailable:
                continue
            if lookups:
                outcome = processor.process_labels(part, [], [], lookups, owned.stored_offset)
                self._checkpoint(tp, owned, owned.stored_offset, outcome.alerts, [], outcome)

    def _check_silence(self) -> None:
        """VOLUME alerts for owned partitions with no event for their model's `freshness_s`."""
        now = time.monotonic()
        if now - self._last_silence_check < 1.0:
            return
        self._last_silence_check = now
        for tp, owned in list(self.owned.items()):
            if owned.stored_offset is None:
                continue  # never had an event: a stream that has not started has not stopped
            processor = self.processors[tp[0]]
            if not isinstance(processor, StreamProcessor) or not isinstance(owned.part, StreamPartition):
                continue
            alerts = processor.silence(owned.part, now - self.last_seen.get(tp, now))
            if alerts:
                self._checkpoint(tp, owned, owned.stored_offset, alerts, [])

    def _refresh_references(self, force: bool = False) -> None:
        """Load each model's active reference; when it changed, rebuild owned partitions with it."""
        if self.references is None:
            return
        now = time.monotonic()
        if not force and now - self._last_reference_check < self.settings.reference_poll_s:
            return
        self._last_reference_check = now
        for model in self.settings.models:
            try:
                version = self.references.active_version(model.name)
                topics = [s.topic for _, s in model.streams()]
                if version == self.processors[topics[0]].reference_version:
                    continue
                profile = self.references.get(model.name, version) if version is not None else None
            except DependencyUnavailable as exc:
                log.warning("reference.unavailable", model=model.name, error=str(exc))
                continue
            log.info("reference.loaded", model=model.name, version=version)
            for topic in topics:
                self.processors[topic].set_reference(profile)
                for tp, owned in self.owned.items():
                    if tp[0] == topic:
                        part = self._new_partition(topic, tp[1])
                        part.load_fields(owned.part.to_fields())
                        owned.part = part

    def _reload(self, tp: TP) -> None:
        assert self.consumer is not None
        owned = self.owned.get(tp)
        if owned is None:
            return
        while not self.stop_event.is_set():
            try:
                snap = self.store.read(*tp)
                break
            except DependencyUnavailable as exc:
                self._outage("redis", exc)
        else:
            return
        if snap.fence != owned.fence:
            self.owned.pop(tp, None)
            return
        part = self._new_partition(*tp)
        if snap.fields:
            part.load_fields(snap.fields)
        self.owned[tp] = Owned(owned.fence, snap.offset, part)
        self.outage = None
        start = snap.offset if snap.offset is not None else (
            OFFSET_BEGINNING if self.settings.start_from == "earliest" else OFFSET_END)
        self.consumer.seek(TopicPartition(tp[0], tp[1], start))
        log.info("partition.reloaded", topic=tp[0], partition=tp[1], offset=snap.offset)

    def _outage(self, dependency: str, exc: Exception, poll: bool = True) -> None:
        """Pause consumption while a dependency is down; keep polling so the group membership holds."""
        if self.outage is None:
            self.metrics.outages.labels(dependency).inc()
            log.warning("dependency.down", dependency=dependency, error=str(exc))
        self.outage = dependency
        self.metrics.ready.set(0)
        if not poll:
            self.stop_event.wait(1.0)
            return
        consumer = self.consumer
        assignment = consumer.assignment() if consumer is not None else []
        if consumer is not None and assignment:
            consumer.pause(assignment)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and not self.stop_event.is_set():
            if consumer is not None:
                consumer.poll(0.1)  # paused: returns no messages, serves callbacks and heartbeats
            else:
                time.sleep(0.1)
        if consumer is not None and assignment:
            consumer.resume(assignment)

    def _dead_letter(self, rejects: list[Reject]) -> None:
        """Write rejects to the dead-letter topic and wait for Kafka: the offset may not pass them before."""
        if not rejects:
            return
        assert self.producer is not None
        failures: list[KafkaError] = []

        def report(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.append(err)

        for rej in rejects:
            rec = rej.record
            self.producer.produce(self.settings.dead_letter_topic, key=rec.key, value=rec.value,
                                  headers=dead_letter_headers(rej), on_delivery=report)
            log.info("record.dead_lettered", topic=rec.topic, partition=rec.partition, offset=rec.offset,
                     reason=rej.reason)
        remaining = self.producer.flush(30.0)
        if remaining or failures:
            # Alarm: the offset must not move past a record we could not dead-letter; the batch is redone.
            self.metrics.dead_letter_failures.inc()
            log.error("dead_letter.unwritable", topic=self.settings.dead_letter_topic, failed=len(failures),
                      unconfirmed=remaining, codes=sorted({f.name() for f in failures}))
            raise DependencyUnavailable(f"kafka: dead-letter topic unwritable ({len(failures)} failed)")

    def _publish(self, wait: float) -> None:
        """Send outbox alerts not yet in flight; forget those Kafka confirmed."""
        producer = self.producer
        if producer is None:
            return
        if self.tx_producer is not None:
            self._publish_transaction(self.tx_producer)
            self._forget_delivered()
            return
        now = time.monotonic()
        for alert_id, (tp, key, value) in list(self.pending.items()):
            if alert_id in self.inflight or self._retry_at.get(alert_id, 0.0) > now:
                continue
            self.inflight.add(alert_id)
            producer.produce(self.settings.alerts_topic, key=key, value=value,
                             on_delivery=self._delivery(alert_id, tp))
        if wait > 0:
            producer.flush(wait)
        else:
            producer.poll(0)
        self._forget_delivered()

    def _publish_transaction(self, producer: Producer) -> None:
        """All sendable outbox alerts in one Kafka transaction; delivered only once it commits."""
        now = time.monotonic()
        batch = [(a, v) for a, v in self.pending.items() if self._retry_at.get(a, 0.0) <= now]
        if not batch:
            return
        try:
            producer.begin_transaction()
            for _alert_id, (_tp, key, value) in batch:
                producer.produce(self.settings.alerts_topic, key=key, value=value)
            producer.commit_transaction(30)
        except KafkaException as exc:
            err = exc.args[0]
            log.warning("alert.transaction_failed", code=err.name(), alerts=len(batch))
            self.metrics.alert_failures.inc()
            if err.txn_requires_abort():
                with contextlib.suppress(KafkaException):
                    producer.abort_transaction(30)
            if err.fatal():
                self.alive = False  # a fenced or broken transactional producer: restart the daemon
            for alert_id, _ in batch:
                self._retry_at[alert_id] = time.monotonic() + ALERT_RETRY_S
            return
        for alert_id, (tp, _key, _value) in batch:
            self.pending.pop(alert_id, None)
            self._retry_at.pop(alert_id, None)
            self.delivered[tp].append(alert_id)
            self.metrics.alerts_delivered.inc()

    def _forget_delivered(self) -> None:
        for tp, ids in list(self.delivered.items()):
            try:
                self.store.outbox_done(tp[0], tp[1], ids)
            except DependencyUnavailable:
                continue  # retried on the next loop; a re-sent alert is byte-identical
            del self.delivered[tp]
        self.metrics.outbox.set(len(self.pending))

    def _delivery(self, alert_id: str, tp: TP) -> Any:
        def report(err: KafkaError | None, _msg: Message) -> None:
            self.inflight.discard(alert_id)
            if err is None:
                self.pending.pop(alert_id, None)
                self._retry_at.pop(alert_id, None)
                self.delivered[tp].append(alert_id)
                self.metrics.alerts_delivered.inc()
            else:
                # Kept in the outbox; tried again after a pause, not on every loop.
                self._retry_at[alert_id] = time.monotonic() + ALERT_RETRY_S
                self.metrics.alert_failures.inc()
                log.warning("alert.delivery_failed", alert_id=alert_id, code=err.name())

        return report

    def _update_lag(self, tp: TP, next_offset: int) -> None:
        assert self.consumer is not None
        try:
            _low, high = self.consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
        except KafkaException:
            return  # lag is best effort
        if high >= 0:
            self.lags[tp] = max(high - next_offset, 0)
            self.metrics.lag.labels(tp[0], str(tp[1])).set(self.lags[tp])


def _status_rows(daemon: Daemon) -> list[dict[str, Any]]:
    """Per model stream and feature, on this replica's partitions: statistic and OK / WARNING / ALERT."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for owned in list(daemon.owned.values()):
        part = owned.part
        if not isinstance(part, StreamPartition):
            continue
        for feature in part.features:
            row = rows.setdefault((part.model, part.stream, feature),
                                  {"model": part.model, "stream": part.stream, "feature": feature,
                                   "open": set(), "statistic": "", "value": 0.0, "threshold": 0.0})
            row["open"] |= {k.split("/", 1)[1] for k in part.open_alerts if k.split("/", 1)[0] == feature}
            row["open"] |= {k.split("/", 1)[1] for k, until in part.quiet_until.items()
                            if k.split("/", 1)[0] == feature and until > part.events}
    for (model, stream, feature), (statistic, value, threshold) in daemon.latest_drift.items():
        if (model, stream, feature) in rows:
            rows[(model, stream, feature)].update(statistic=statistic, value=value, threshold=threshold)
    out = list(rows.values())
    for r in out:
        score = r["value"] / r["threshold"] if r["threshold"] else 0.0
        r["state"] = "ALERT" if r["open"] else ("WARNING" if score > 0.5 else "OK")
        r["score"] = score
    order = {"ALERT": 0, "WARNING": 1, "OK": 2}
    return sorted(out, key=lambda r: (order[r["state"]], -r["score"], r["model"], r["feature"]))


def render_status_page(daemon: Daemon) -> str:
    import html

    e = html.escape
    rows = "".join(
        f'<tr class="feature" data-feature="{e(r["feature"])}"><td>{e(r["model"])}</td><td>{e(r["stream"])}</td>'
        f'<td>{e(r["feature"])}</td><td class="{r["state"]}">{r["state"]}</td><td>{e(r["statistic"])}</td>'
        f'<td>{r["value"]:.4f}</td><td>{r["threshold"]:.4f}</td><td>{e(", ".join(sorted(r["open"])))}</td></tr>'
        for r in _status_rows(daemon))
    alerts = "".join(
        f'<tr><td>{e(a.status)}</td><td>{e(str(a.kind))}</td><td>{e(a.check)}</td><td>{e(a.model)}/'
        f'{e(a.feature)}</td><td>{a.statistic:.4g} / {a.threshold:.4g}</td><td>{e(a.message)}</td>'
        f'<td>{e("; ".join(f"{k}={v}" for k, v in list(a.evidence.items())[:4]))}</td></tr>'
        for a in list(daemon.recent_alerts))
    lag = "".join(f"<tr><td>{e(t)}[{p}]</td><td>{n:,}</td></tr>" for (t, p), n in sorted(daemon.lags.items()))
    ready = "ready" if daemon.is_ready() else "NOT READY"
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>model-monitor status</title><link rel="icon" href="data:,"><style>
body{{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#182026;background:#f5f8fa}}
table{{border-collapse:collapse;background:#fff;margin-bottom:18px}}td,th{{padding:3px 10px;text-align:left;
border-bottom:1px solid #e1e8ed}}.OK{{color:#0d8050}}.WARNING{{color:#bf7326}}.ALERT{{color:#c23030;font-weight:600}}
</style></head><body><h1>model-monitor</h1><p>{ready}; group {e(daemon.settings.group_id)};
{len(daemon.owned)} partitions on this replica; refreshes every 5 s</p>
<h2>Features</h2><table id=features><tr><th>model</th><th>stream</th><th>feature</th><th>state</th>
<th>statistic</th><th>value</th><th>threshold</th><th>open checks</th></tr>{rows}</table>
<h2>Recent alerts</h2><table id=alerts><tr><th>status</th><th>kind</th><th>check</th><th>feature</th>
<th>statistic / threshold</th><th>message</th><th>evidence</th></tr>{alerts}</table>
<h2>Consumer lag</h2><table id=lag><tr><th>partition</th><th>events behind</th></tr>{lag}</table></body></html>
"""
