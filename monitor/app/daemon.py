"""The loop of one stage: consume a micro-batch, process it per partition, checkpoint to Redis, publish.

Stage `ingest` reads the models' input topics (stage 1: decode, limits, dead-letter, block summaries);
stage `models` reads the blocks topic in its own consumer group (stage 2: merged views and incidents).
Both handle rebalances (fence + stored offsets), dependency outages (pause, back off, keep polling) and
SIGTERM the same way, and send what they commit through the same `Outbox`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

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

from monitor.app.checkpoint import BLOCKS_MESSAGE_BYTES, Checkpointer, Job, JoinTarget, Owned
from monitor.app.models import ModelPartition, ModelProcessor
from monitor.app.outbox import Outbox
from monitor.app.pipeline import (
    AnyProcessor,
    BatchOutcome,
    LabelProcessor,
    StreamProcessor,
    build_processors,
    model_budget,
)
from monitor.core.labels import LabelPartition
from monitor.core.partition import StreamPartition
from monitor.core.profiles import ReferenceProfile
from monitor.core.reach import expected_window_events, minimums, unreachable
from monitor.core.types import Alert, AlertKind, RawRecord, Reject
from monitor.errors import ConfigError, DependencyUnavailable, FencedError, MonitorError, StateLost
from monitor.io.avro import AlertCodec, BlockCodec, alert_schema_text, register_schema
from monitor.io.history import DriftHistory
from monitor.io.join import LABELS, PREDICTIONS, JoinStore, MemoryJoinStore, watermark
from monitor.io.kafka import Writability, is_fatal, poll_paused, to_raw
from monitor.io.state import PartitionSnapshot, StateStore, check_consistent
from monitor.ops.logs import librdkafka_logger
from monitor.ops.metrics import Metrics
from monitor.ops.page import PageData, render_page
from monitor.ops.status import collect_status
from monitor.profile.store import ReferenceStore
from monitor.settings import ModelSettings, Settings

log = structlog.get_logger("monitor.daemon")
TP = tuple[str, int]
Stage = Literal["ingest", "models"]


# A batch's blocks may wait for its checkpoint (`Daemon._may_defer`) only while the stage has at least this many
# full batches to read over all its partitions (`Daemon.lags`): a real backlog (a catch-up, a replay), not the few
# batches a consumer's prefetch holds when a busy daemon runs a little behind a live stream. Waiting blocks leave
# when the stage has caught up, and the time to catch up depends on how much there is to read over all its
# partitions, not on how it is spread: one bar for 3 partitions or 48. At 3 partitions 15 is the bar measured as
# five batches per partition (at 62% load, with one batch per partition, 3 of 10 incidents waited ~0.55 s longer).
BACKLOG_BATCHES = 15


class Daemon:
    def __init__(self, settings: Settings, store: StateStore, metrics: Metrics | None = None,
                 references: ReferenceStore | None = None, joins: JoinStore | None = None,
                 history: DriftHistory | None = None, stage: Stage = "ingest") -> None:
        self.settings = settings
        self.stage: Stage = stage
        self.group_id = settings.group_id if stage == "ingest" else f"{settings.group_id}.models"
        self.store = store
        self.references = references
        self.joins: JoinStore = joins if joins is not None else MemoryJoinStore()
        self.history: DriftHistory = history if history is not None else DriftHistory(None, "", "")
        self.latest_drift: dict[tuple[str, str, str], tuple[str, float, float]] = {}
        self.recent_alerts: deque[Alert] = deque(maxlen=50)
        self.lags: dict[TP, int] = {}
        # What the HTTP thread reads (status page): copies swapped in whole after each loop iteration, never the
        # structures the loop is changing. (Readiness reads plain flags.)
        self.view = PageView((), MappingProxyType({}), MappingProxyType({}))
        self._last_join_retry = 0.0
        # Per labels partition, the predictions partitions' log positions at its last lookup (memory only: a
        # partition loaded from the store looks everything up once).
        self.join_marks: dict[TP, dict[int, str]] = {}
        self.last_seen: dict[TP, float] = {}
        self.next_store_check = 0.0  # monotonic time of the next `_verify_store`
        self.never_delivered: set[TP] = set()  # input partitions said to have delivered no event yet
        self.unwritable: set[TP] = set()  # input partitions last found refusing writes (`_writable`)
        self.writability: Writability | None = None
        self.lost: dict[TP, str] = {}  # partitions halted because their state is gone (on_state_lost: halt)
        self.topic_partitions: dict[str, int] = {}  # for the event-rate check: a partition sees 1/n
        self._last_silence_check = 0.0
        self._last_reference_check = 0.0
        self.metrics = metrics or Metrics()
        inputs = build_processors(settings)
        self.model_processor: ModelProcessor | None = None
        self.processors: dict[str, AnyProcessor | ModelProcessor]
        if stage == "ingest":
            self.processors = dict(inputs)
        else:
            self.model_processor = ModelProcessor(
                settings, {t: p for t, p in inputs.items() if isinstance(p, StreamProcessor)})
            self.processors = {settings.blocks_topic: self.model_processor}
        self.block_codec = BlockCodec()
        self.checkpointer = Checkpointer(store, self.joins, self.metrics, settings.dead_letter_topic)
        self.owned: dict[TP, Owned] = {}
        self.stop_event = threading.Event()
        self.assigned_once = False
        self.outage: str | None = None
        self.alive = True
        self.outbox = Outbox(store, self.metrics, settings.alerts_topic, settings.blocks_topic, stage)
        self.consumer: Consumer | None = None
        # A fatal error of the consumer (`_FATAL`: e.g. a static member fenced by the coordinator after a broker
        # failover): the loop replaces the consumer (`_replace_consumer`) instead of running on with a dead one.
        self.consumer_fatal: str | None = None
        self.retired: Consumer | None = None  # the consumer being replaced: its rebalance callbacks do nothing
        self._last_probe = 0.0
        self.aligned: set[TP] = set()  # input partitions paused for running ahead in event time
        self.topic_start: dict[str, int] = {}  # the earliest event time seen per input topic (alignment)

    # -- health ---------------------------------------------------------------------------------
    def is_ready(self) -> bool:
        return self.alive and self.assigned_once and self.outage is None and not self.lost

    def is_live(self) -> bool:
        return self.alive

    def status_page(self) -> str:
        return render_status_page([self])

    def stop(self) -> None:
        self.stop_event.set()

    # -- rebalance callbacks ----------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if consumer is self.retired:
            return  # a replaced consumer, closing (`_replace_consumer`)
        committed = None if self.stop_event.is_set() else self._committed(consumer, partitions)
        if committed is None:
            # Stopping: a rebalance can still assign partitions inside close(). Take nothing (no fence, no
            # state): the replica that owns them next will. (The chaos run: raising here crashed the close.)
            consumer.incremental_assign(partitions)
            log.info("partitions.assigned_while_stopping", partitions=[f"{tp.topic}[{tp.partition}]"
                                                                       for tp in partitions])
            return
        try:  # every partition's fence and state in one round trip; one by one (waiting out an outage) if not
            snaps = self.store.acquire_many([(tp.topic, tp.partition) for tp in partitions])
        except DependencyUnavailable:
            snaps = {}
        for tp in partitions:
            tp.offset = self._take(tp.topic, tp.partition, committed.get((tp.topic, tp.partition)),
                                   snaps.get((tp.topic, tp.partition)))
        consumer.incremental_assign(partitions)
        if self.stage == "ingest" and self.settings.model_view.enabled:
            self._initial_lags(consumer, partitions)
        # librdkafka keeps a partition's pause across a rebalance: one paused when it was lost (by an outage's
        # pause, `_align`, `poll_paused`) came back paused and was never read again (a broker outage that
        # outlasted max.poll.interval.ms left every partition so). A partition taken is read, unless halted.
        halted = [tp for tp in partitions if (tp.topic, tp.partition) in self.lost]
        readable = [tp for tp in partitions if (tp.topic, tp.partition) not in self.lost]
        if readable:
            consumer.resume(readable)
        if halted:
            consumer.pause(halted)
        self.assigned_once = True
        self.metrics.assigned.labels(self.stage).set(len(self.owned))
        log.info("partitions.assigned", partitions=[f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in partitions])

    def _committed(self, consumer: Consumer, partitions: list[TopicPartition]) -> dict[TP, int] | None:
        """The group's committed offsets: we commit after every checkpoint, so one means state existed.

        Asked until Kafka answers: taking a partition without them would skip the lost-state check (it
        used to, silently, on any Kafka error). Inside the rebalance callback, so it waits without polling
        (librdkafka heartbeats on its own thread). None once the daemon is stopping."""
        while True:
            try:
                found = consumer.committed([TopicPartition(tp.topic, tp.partition) for tp in partitions], timeout=10)
                failed = [tp.error for tp in found if tp.error is not None]
                if not failed:
                    break
                raise KafkaException(failed[0])
            except KafkaException as exc:
                log.warning("kafka.committed_unavailable", error=str(exc))
                self._outage("kafka", exc, poll=False)
                if self.stop_event.is_set():
                    return None  # stopping: never raise out of a rebalance callback
        return {(tp.topic, tp.partition): tp.offset for tp in found if tp.offset >= 0}

    def _take(self, topic: str, partition: int, committed: int | None = None,
              snap: PartitionSnapshot | None = None) -> int:
        """Fence the partition (unless `snap`: acquired already), load its state and outbox; return where to
        start consuming."""
        while snap is None:
            try:
                snap = self.store.acquire(topic, partition)
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
            self.owned[(topic, partition)] = Owned(snap.fence, None, part, dict(snap.fields),
                                                   starts_again_here=committed is not None or self._from_start)
            self.last_seen[(topic, partition)] = time.monotonic()
            if committed is not None:
                return committed
            return OFFSET_BEGINNING if self.settings.start_from == "earliest" else OFFSET_END
        if snap.fields:
            self._load(part, snap.fields)
        self.owned[(topic, partition)] = Owned(snap.fence, snap.offset, part, dict(snap.fields),
                                               starts_again_here=self._from_start)
        self.last_seen[(topic, partition)] = time.monotonic()
        self.outbox.add((topic, partition), snap.outbox)
        if snap.offset is not None:
            return self._readable_from(topic, partition, snap.offset)
        return OFFSET_BEGINNING if self.settings.start_from == "earliest" else OFFSET_END

    def _readable_from(self, topic: str, partition: int, stored: int) -> int:
        """Where to resume a partition whose state stops at `stored`: there, unless the log no longer starts
        that early (retention deleted records this monitor never read): then at the log start, said and
        counted (`monitor_records_unread_total`), rather than wherever `auto.offset.reset` would go."""
        assert self.consumer is not None
        try:
            low, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5.0,
                                                            cached=False)
        except KafkaException as exc:
            log.warning("kafka.watermarks_unavailable", topic=topic, partition=partition, error=str(exc))
            return stored
        if stored < low:
            log.error("offset.out_of_range", topic=topic, partition=partition, stored_offset=stored,
                      log_start=low, unread=low - stored,
                      reason="the records were deleted (retention) before this monitor read them")
            self.metrics.records_lost.labels(topic, str(partition)).inc(low - stored)
            return low
        if stored > high:
            log.error("offset.out_of_range", topic=topic, partition=partition, stored_offset=stored, log_end=high,
                      reason="the log ends before the stored offset (the topic was deleted and made again, or "
                             "truncated): resuming at its end")
            return high
        return stored

    def _new_partition(self, topic: str, partition: int) -> StreamPartition | LabelPartition | ModelPartition:
        return self.processors[topic].new_partition(partition, self.topic_partitions.get(topic, 1))

    @staticmethod
    def _load(part: StreamPartition | LabelPartition | ModelPartition, fields: dict[str, bytes]) -> None:
        part.load_fields(fields)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if consumer is self.retired:
            return
        # Batches waiting for their checkpoint are written now, while this instance still owns the partitions.
        self._flush_deferred([(tp.topic, tp.partition) for tp in partitions], due_only=False, revoking=True)
        self.outbox.publish(wait=5.0)
        self._release(partitions)
        consumer.incremental_unassign(partitions)
        self.metrics.assigned.labels(self.stage).set(len(self.owned))
        log.info("partitions.revoked", partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions])

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if consumer is self.retired:
            return
        # Write nothing: another instance may own these now, and the fence rejects our late writes.
        self._release(partitions)
        consumer.incremental_unassign(partitions)
        self.metrics.assigned.labels(self.stage).set(len(self.owned))
        log.warning("partitions.lost", partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions])

    def _initial_lags(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """How much each new partition has to read, before its first batch (event-time alignment needs it).

        One ListOffsets request per bound for all partitions (timestamp -1 is the log end, -2 its start), not a
        watermark request per partition: 48 of those took 0.2 s inside the rebalance callback."""
        request = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        try:
            high = consumer.offsets_for_times([TopicPartition(t.topic, t.partition, -1) for t in request], 5.0)
            low = consumer.offsets_for_times([TopicPartition(t.topic, t.partition, -2) for t in request], 5.0)
        except KafkaException as exc:
            log.warning("kafka.offsets_unavailable", error=str(exc))
            return
        for tp, hi, lo in zip(partitions, high, low, strict=True):
            if hi.error is not None or lo.error is not None or hi.offset < 0:
                continue
            start = tp.offset if tp.offset >= 0 else (lo.offset if self.settings.start_from == "earliest"
                                                      else hi.offset)
            self.lags[(tp.topic, tp.partition)] = max(hi.offset - start, 0)

    def _release(self, partitions: list[TopicPartition]) -> None:
        """Forget partitions and their unsent alerts: the next owner re-sends them from the outbox."""
        gone = {(tp.topic, tp.partition) for tp in partitions}
        for tp in gone:
            self.owned.pop(tp, None)
            self.join_marks.pop(tp, None)
            self.lost.pop(tp, None)
            self.lags.pop(tp, None)
            self.aligned.discard(tp)
            processor = self.processors.get(tp[0])
            model = None if processor is None or isinstance(processor, ModelProcessor) else processor.model.name
            self.metrics.forget_partition(tp[0], tp[1], model, getattr(processor, "stream", None))
            self.unwritable.discard(tp)
        self.outbox.release(gone)

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> int:
        s = self.settings
        hooks = {"error_cb": self._on_kafka_error, "logger": librdkafka_logger()}
        self.consumer = self._new_consumer()
        closed = False
        try:
            self.outbox.producer = Producer({**s.producer_config(), **hooks})
            self.checkpointer.producer = self.outbox.producer
            if s.alerts_transactional:
                # With a stable instance id the transactional id is stable too: a restarted replica fences its
                # predecessor's unfinished transactions instead of leaving them to time out.
                tx_id = s.transactional_id or (f"{s.group_id}-alerts-{s.instance_id}" if s.instance_id else
                                               f"{s.group_id}-alerts-{socket.gethostname()}-{os.getpid()}")
                tx_id += "" if self.stage == "ingest" else "-models"
                self.outbox.tx_producer = Producer({**s.producer_config(), **hooks, "transactional.id": tx_id})
                self.outbox.tx_producer.init_transactions(30)
            # The active references before the first record: a record read without its model's reference would
            # be counted by other rules than the replay's (and than the replica's next to it). Redis down at
            # start is an outage like any other, waited out (not ready).
            while not self._refresh_references(force=True) and not self.stop_event.is_set():
                self._outage("redis", DependencyUnavailable("redis: references unreadable"), poll=False)
            while s.alerts_format == "confluent" and not self._register_alert_schema() \
                    and not self.stop_event.is_set():
                pass
            self._subscribe()
            try:
                metadata = self.consumer.list_topics(timeout=10)
                self.topic_partitions = {t: len(md.partitions) for t, md in metadata.topics.items() if md.error is None}
                if self.model_processor is not None:
                    self.model_processor.input_partitions = dict(self.topic_partitions)
            except KafkaException as exc:
                log.warning("kafka.metadata_unavailable", error=str(exc))
            log.info("daemon.started", stage=self.stage, topics=list(self.processors), group=self.group_id)
            self._warn_unreachable()
            for topic, proc in self.processors.items():
                decoder = getattr(proc, "decoder_kind", None)
                if decoder is not None:
                    log.info("topic.decoder", topic=topic, decoder=decoder)
            try:
                while not self.stop_event.is_set() and self.alive and not self.outbox.fatal:
                    if self.consumer_fatal is not None:
                        self._replace_consumer()
                        continue
                    if len(self.outbox) > s.max_outbox:
                        # The alerts topic is not taking alerts: stop adding to the outbox until it drains.
                        self._outage("alerts", DependencyUnavailable(f"{len(self.outbox)} alerts undelivered"))
                        self.outbox.publish(wait=1.0)
                        continue
                    if self.outage == "alerts":
                        self._outage_over()
                    # A consume waits for a full batch or the whole timeout. With outbox entries Kafka has yet to
                    # confirm, or applied batches waiting for their checkpoint, wait at most 50 ms (to forget the
                    # entries; to write the batches once a backlog has ended: a backlog ending on a full batch
                    # kept its last checkpoint waiting batch.timeout_s). The model stage always does: its blocks
                    # come a few at a time, never a full batch, and each waited out the timeout (an incident's
                    # delay, and the end of every backlog). Busy, a full batch comes first: no smaller batches.
                    short = self.stage == "models" or bool(self.outbox.inflight) \
                        or any(o.applied is not None for o in self.owned.values())
                    timeout = min(s.batch.timeout_s, 0.05) if short else s.batch.timeout_s
                    msgs = self.consumer.consume(num_messages=s.batch.max_messages, timeout=timeout)
                    # Caught up: stage 1, a batch that is not full; the model stage, whose batches never are, a
                    # consume that brought nothing (its blocks stopped coming for 50 ms). Then the batches waiting
                    # for their checkpoint are written.
                    caught_up = (not msgs) if self.stage == "models" else len(msgs) < s.batch.max_messages
                    if msgs:
                        self._handle(msgs)
                        self._align()
                    # Batches wait for their checkpoint only while there is a backlog to read (then the next one
                    # writes both); caught up, each is written at once.
                    self._flush_deferred(due_only=not caught_up)
                    self.outbox.publish(wait=0.0)
                    self._probe_kafka()
                    self._check_silence()
                    self._retry_joins()
                    self._verify_store()
                    self._refresh_references()
                    self.metrics.ready.labels(self.stage).set(1 if self.is_ready() else 0)
                    self._publish_view()
            finally:
                log.info("daemon.stopping", stage=self.stage)
                self.outbox.publish(wait=10.0)
                self.consumer.close()  # runs on_revoke: the last batch is already checkpointed
                closed = True
                for producer in (self.outbox.producer, self.outbox.tx_producer):
                    if producer is not None:
                        producer.flush(10.0)
        finally:
            if not closed:  # it stopped before its loop (a bad setting, a dependency down at start)
                with contextlib.suppress(KafkaException, RuntimeError):
                    self.consumer.close()
            # Let the clients go here, not whenever the garbage collector meets the cycle their callbacks make
            # with this object: a consumer left open and destroyed inside a later collection hung a test run
            # in librdkafka's destroy.
            self.consumer = None
            self.outbox.producer = self.outbox.tx_producer = self.checkpointer.producer = None
        return 0 if self.alive and not self.outbox.fatal else 1

    def _new_consumer(self) -> Consumer:
        hooks = {"error_cb": self._on_consumer_error, "logger": librdkafka_logger()}
        try:
            return Consumer({**self.settings.consumer_config(), "group.id": self.group_id, **hooks})
        except KafkaException as exc:  # librdkafka refused the settings (e.g. max.poll.interval.ms too short)
            raise ConfigError(f"kafka/consumer settings: {exc.args[0].str()}") from exc

    def _subscribe(self) -> None:
        assert self.consumer is not None
        self.consumer.subscribe(list(self.processors), on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)

    def _on_consumer_error(self, err: KafkaError) -> None:
        """The consumer's errors: a fatal one (`_FATAL`; e.g. `FENCED_INSTANCE_ID`, a static member the
        coordinator replaced) leaves this consumer unusable, so the loop makes a new one; configuration and
        authorisation errors still end the daemon."""
        if err.code() == KafkaError._FATAL:
            log.error("kafka.consumer_fatal", reason=err.str(), action="replacing the consumer")
            self.consumer_fatal = err.str()
            return
        self._on_kafka_error(err)

    def _replace_consumer(self) -> None:
        """Swap a consumer that librdkafka declared dead for a new one in the same group. Batches applied but
        not yet written are written first (the fence decides whether they still may be); the partitions are
        then released without more writes, as if lost, and the new consumer joins the group and takes what it
        is given from the stored offsets."""
        old, reason = self.consumer, self.consumer_fatal
        owned = [TopicPartition(*tp) for tp in self.owned]
        self._flush_deferred(list(self.owned), due_only=False, revoking=True)
        self.outbox.publish(wait=5.0)
        self._release(owned)
        self.metrics.assigned.labels(self.stage).set(0)
        self.consumer, self.consumer_fatal, self.retired = None, None, old
        if old is not None:
            with contextlib.suppress(KafkaException, RuntimeError):
                old.close()  # its rebalance callbacks see the retired consumer and do nothing
        self.retired = None
        self.metrics.consumer_replacements.labels(self.stage).inc()
        self.consumer = self._new_consumer()
        self._subscribe()
        log.warning("kafka.consumer_replaced", stage=self.stage, reason=reason, released=len(owned))

    def _on_kafka_error(self, err: KafkaError) -> None:
        if is_fatal(err):
            log.error("kafka.fatal", code=err.name(), reason=err.str())
            self.alive = False
            return
        log.warning("kafka.error", code=err.name(), reason=err.str())
        if err.code() == KafkaError._ALL_BROKERS_DOWN and self.outage is None:
            self.outage = "kafka"
            self.metrics.outages.labels("kafka").inc()

    def _register_alert_schema(self) -> bool:
        """`alerts_format: confluent`: alert.avsc under the alerts topic's value subject, before any alert is
        encoded (a registry down at start is an outage, waited out; a refused schema is a config error)."""
        subject = f"{self.settings.alerts_topic}-value"
        try:
            schema_id = register_schema(self.settings.schema_registry, subject, alert_schema_text())
        except DependencyUnavailable as exc:
            self._outage("schema_registry", exc, poll=False)
            return False
        self.checkpointer.codec = AlertCodec(schema_id)
        if self.outage == "schema_registry":
            self._outage_over()
        log.info("alerts.schema_registered", subject=subject, schema_id=schema_id)
        return True

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
        self._outage_over()

    def _handle(self, msgs: list[Message]) -> None:
        started = time.perf_counter()
        by_tp: dict[TP, list[RawRecord]] = defaultdict(list)
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    self._on_consumer_error(err)
                continue
            raw = to_raw(msg)
            by_tp[(raw.topic, raw.partition)].append(raw)
        self._handle_records(by_tp)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    def _handle_records(self, by_tp: Mapping[TP, list[RawRecord]]) -> None:
        """A consume's records, partition by partition; then the batches to write now, of all of them, in one
        round trip to Redis (`_checkpoint_many`), and their offsets committed to the group."""
        jobs = []
        for tp, records in by_tp.items():
            job = self._process_partition(tp, records)
            if job is not None:
                jobs.append(job)
        written = [job for job, ok in zip(jobs, self._checkpoint_many(jobs), strict=True) if ok]
        for job in written:
            assert job.outcome is not None
            self._count(job.tp, job.outcome)
        if written:
            self._commit([TopicPartition(job.tp[0], job.tp[1], job.next_offset) for job in written])

    def _process_partition(self, tp: TP, records: list[RawRecord]) -> Job | None:
        """Apply one partition's records; the batch to write now (None: none, or it waits for a later one)."""
        owned = self.owned.get(tp)
        if owned is None:
            return None  # revoked while the batch was in flight
        position = owned.applied if owned.applied is not None else owned.stored_offset
        if position is not None:
            records = [r for r in records if r.offset >= position]  # already applied
        if not records:
            return None
        self.last_seen[tp] = time.monotonic()
        if tp in self.unwritable:  # it takes writes again
            self.unwritable.discard(tp)
            self.metrics.unwritable.labels(tp[0], str(tp[1])).set(0)
        if tp in self.never_delivered:  # it delivers now
            self.never_delivered.discard(tp)
            self.metrics.never_delivered.labels(tp[0], str(tp[1])).set(0)
        processor = self.processors[tp[0]]
        try:
            outcome = self._apply(tp, owned, processor, records)
        except DependencyUnavailable as exc:
            # The schema registry (or Redis, for the label join) is down: nothing of this batch is committed.
            # Read it again from the stored offset, pause and report not ready until the dependency answers.
            self._reload(tp)
            self._outage(exc.dependency, exc)
            return None
        lag = self._update_lag(tp, outcome.next_offset)
        if not self._may_defer(processor, owned, outcome, lag):
            return self._job(tp, owned, outcome.next_offset, outcome.alerts, outcome.rejects, outcome)
        owned.applied = outcome.next_offset
        owned.deferred_since = owned.deferred_since or time.monotonic()
        owned.waiting_blocks += outcome.blocks
        self._count(tp, outcome)
        return None

    def _count(self, tp: TP, outcome: BatchOutcome) -> None:
        """A batch applied (and written, or waiting for its checkpoint): its events and rejects."""
        processor = self.processors[tp[0]]
        m = self.metrics
        name = processor.model.name if not isinstance(processor, ModelProcessor) else "*"
        m.events.labels(name, processor.stream).inc(outcome.valid)
        for rej in outcome.rejects:
            m.rejects.labels(name, processor.stream, rej.reason).inc()

    def _may_defer(self, processor: AnyProcessor | ModelProcessor, owned: Owned, outcome: BatchOutcome,
                   lag: int | None = None) -> bool:
        """Whether a feature/prediction batch (stage 1) or a blocks batch (stage 2) may wait for a later
        checkpoint: it made no alert, reject or prediction (alerts go out only from a checkpointed outbox;
        rejects go to the dead-letter topic and predictions to the join store just before theirs), nor blocks
        unless a backlog is being read (`BACKLOG_BATCHES` full batches to read over the stage's partitions; its
        blocks wait in `Owned.waiting_blocks` and go out with the checkpoint that writes the state that made them:
        near the end of the log, blocks leave at once), and the oldest waiting batch is younger than
        `checkpoint_interval_ms`. A crash replays the waiting batches from the stored offset (or, before the
        first checkpoint, from where a stage-1 partition started, when a restart starts there again:
        `Owned.starts_again_here`), and makes the same blocks again. (Labels batches are written at once.)
        `lag`: this partition's, just updated (None: unknown)."""
        interval = self.settings.checkpoint_interval_ms
        if not interval or not isinstance(processor, StreamProcessor | ModelProcessor):
            return False
        if owned.stored_offset is None and (not owned.starts_again_here or isinstance(processor, ModelProcessor)):
            # A restart would start at the log end: the records read so far would be skipped. (The model stage,
            # a few partitions, writes its first batch at once as before: nothing to gain.)
            return False
        if self.outage is not None:
            return False  # the first batch through after an outage is written at once: it ends the outage
        backlog = lag is not None and sum(self.lags.values()) >= BACKLOG_BATCHES * self.settings.batch.max_messages
        if outcome.alerts or outcome.rejects or outcome.join_entries or (outcome.blocks and not backlog):
            return False
        return not owned.deferred_since or (time.monotonic() - owned.deferred_since) * 1000 < interval

    @property
    def _from_start(self) -> bool:
        """Whether a partition without a stored offset is read from the log start (`start_from: earliest`)."""
        return self.settings.start_from == "earliest"

    def _flush_deferred(self, partitions: list[TP] | None = None, due_only: bool = True,
                        revoking: bool = False) -> None:
        """Checkpoint the partitions whose applied batches wait (those due, or all of `partitions`), in one
        round trip to Redis. `revoking`: inside the rebalance callback, a failed write is not retried (the next
        owner replays the batches)."""
        now = time.monotonic()
        jobs = []
        for tp in list(self.owned) if partitions is None else partitions:
            owned = self.owned.get(tp)
            if owned is None or owned.applied is None:
                continue
            if due_only and (now - owned.deferred_since) * 1000 < self.settings.checkpoint_interval_ms:
                continue
            jobs.append(self._job(tp, owned, owned.applied, [], []))
        written = self._checkpoint_many(jobs, recovered=False, reload=not revoking)
        commits = [TopicPartition(job.tp[0], job.tp[1], job.next_offset) for job, ok in zip(jobs, written,
                                                                                           strict=True) if ok]
        if commits:
            self._commit(commits)

    def _commit(self, offsets: list[TopicPartition]) -> None:
        """Commit to the group, asynchronously. Only for lag dashboards: the offsets that count are in the state
        store, so a consumer that can no longer commit (fenced, about to be replaced) changes nothing."""
        if self.consumer is None:
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            log.debug("kafka.commit_failed", error=str(exc))

    def _apply(self, tp: TP, owned: Owned, processor: AnyProcessor | ModelProcessor,
               records: list[RawRecord]) -> BatchOutcome:
        """One partition's batch through its stage's processor, in memory (raises `DependencyUnavailable`)."""
        if isinstance(processor, ModelProcessor):
            assert isinstance(owned.part, ModelPartition)
            outcome = processor.process(owned.part, records)
            self._record_views(owned.part)
            return outcome
        if isinstance(processor, LabelProcessor):
            assert isinstance(owned.part, LabelPartition)
            rows, rejects = processor.decode(records)
            # The batch's ids everywhere; the waiting labels' only where a prediction came since they were
            # last looked up (the marks of this partition's last lookup).
            # Read before the lookup: every prediction up to this time is in the store when the lookup runs, so a
            # label expired by it was looked up after its prediction came (another replica may be putting more).
            predictions_time = self._predictions_time(processor)
            lookups, marks = self.joins.get_since(processor.model.name, list(dict.fromkeys(r.event_id for r in rows)),
                                                  list(owned.part.pending), self.join_marks.get(tp, {}))
            self.join_marks[tp] = marks
            given_up = owned.part.counts["expired"] + owned.part.counts["evicted"]
            outcome = processor.process_labels(owned.part, rows, rejects, lookups, records[-1].offset + 1,
                                               predictions_time)
            self._log_given_up(tp, owned.part, given_up, predictions_time)
            perf = owned.part.window_metrics()
            if perf and owned.part.closed_meta:
                metric = "accuracy" if processor.model.type == "classifier" else "mae"
                self.history.record(processor.model.name, "labels", tp[1], int(owned.part.closed_meta[-1][3]),
                                    {metric: (metric, float(perf[metric]), float("nan"))})
            return outcome
        assert isinstance(owned.part, StreamPartition)
        bad_before = owned.part.bad_times
        outcome = processor.process(owned.part, records)
        if owned.part.bad_times > bad_before:  # counted again if a crash replays the batch
            self.metrics.bad_times.labels(processor.model.name, processor.stream).inc(owned.part.bad_times -
                                                                                       bad_before)
        for feature, (statistic, value, _threshold) in owned.part.last_drift.items():
            self.metrics.drift.labels(processor.model.name, processor.stream, feature, statistic,
                                      str(tp[1])).set(value)
        for feature, drift in owned.part.last_drift.items():
            self.latest_drift[(processor.model.name, processor.stream, feature)] = drift
        if owned.part.last_drift:
            self.history.record(processor.model.name, processor.stream, tp[1], owned.part.last_time,
                                owned.part.last_drift)
            owned.part.last_drift = {}
        return outcome

    def _job(self, tp: TP, owned: Owned, next_offset: int, alerts: list[Alert], rejects: list[Reject],
             outcome: BatchOutcome | None = None, blocks: list[dict[str, Any]] | None = None) -> Job:
        """A batch to write, with where its predictions go for the label join (stage 1)."""
        processor = self.processors[tp[0]]
        join = None
        if not isinstance(processor, ModelProcessor):
            perf = processor.model.performance
            labels = processor.model.labels
            join = JoinTarget(processor.model.name, int(perf.join_ttl_s * 1000), perf.max_predictions,
                              self.topic_partitions.get(labels.topic, 0) if labels is not None else 0)
        return Job(tp, owned, next_offset, alerts, rejects, outcome, blocks or [], join)

    def _checkpoint(self, tp: TP, owned: Owned, next_offset: int, alerts: list[Alert], rejects: list[Reject],
                    outcome: BatchOutcome | None = None, blocks: list[dict[str, Any]] | None = None,
                    recovered: bool = True, reload: bool = True) -> bool:
        """Make the batch durable and queue its alerts and blocks for publishing (`_checkpoint_many`)."""
        return self._checkpoint_many([self._job(tp, owned, next_offset, alerts, rejects, outcome, blocks)],
                                     recovered, reload)[0]

    def _checkpoint_many(self, jobs: list[Job], recovered: bool = True, reload: bool = True) -> list[bool]:
        """Make the batches durable (`Checkpointer.write_many`: one round trip to Redis for all), then queue
        each one's alerts and blocks for publishing; per job, False if not written (the partition was fenced,
        or reloaded from the store). A written batch ends an outage, unless `recovered` is False (batches
        applied before it, written late: they say nothing about a schema registry that is down now). With
        `reload` False, a failed write leaves the partition as it is."""
        if not jobs:
            return []
        written = []
        paused = False
        for job, result in zip(jobs, self.checkpointer.write_many(jobs), strict=True):
            if isinstance(result, DependencyUnavailable) and not paused:  # one pause, not one per partition
                self._outage("redis" if "redis" in str(result) else "kafka", result)
                paused = True
            written.append(self._written(job, result, recovered, reload))
        return written

    def _written(self, job: Job, result: dict[str, bytes] | MonitorError, recovered: bool, reload: bool) -> bool:
        """After one job's write: on success, the partition's new stored offset, the end of an outage, the
        label join's progress, and its outbox entries to send; on failure, reload (unless fenced)."""
        tp, owned, alerts, outcome = job.tp, job.owned, job.alerts, job.outcome
        if isinstance(result, FencedError):
            log.warning("partition.fenced", topic=tp[0], partition=tp[1])
            self.owned.pop(tp, None)
            return False
        if isinstance(result, MonitorError):
            # Memory is ahead of the store: drop it, reload what the store has and consume from there.
            if reload:
                self._reload(tp)
            return False
        processor = self.processors[tp[0]]
        owned.stored_offset = job.next_offset
        owned.applied, owned.deferred_since, owned.waiting_blocks = None, 0.0, []
        if self.outage is not None and (recovered or self.outage in ("redis", "kafka")):
            self._outage_over()
        if outcome is not None and outcome.label_lags_ms and isinstance(processor, LabelProcessor):
            for lag in outcome.label_lags_ms:
                self.metrics.label_lag.labels(processor.model.name).observe(lag / 1000.0)
        if isinstance(owned.part, LabelPartition) and isinstance(processor, LabelProcessor):
            reached = owned.part.join_progress()
            if reached >= 0:  # written: predictions a ttl before it may expire now
                try:
                    self.joins.advance(processor.model.name, LABELS, tp[1], reached)
                except DependencyUnavailable as exc:
                    log.warning("join.progress_unwritten", topic=tp[0], partition=tp[1], error=str(exc))
            for result_name, count in owned.part.counts.items():
                self.metrics.joins.labels(processor.model.name, str(tp[1]), result_name).set(count)
            self.metrics.joins.labels(processor.model.name, str(tp[1]), "pending").set(len(owned.part.pending))
        self.outbox.add(tp, result)
        for alert in alerts:
            self.recent_alerts.appendleft(alert)
            self.metrics.alerts.labels(alert.model, alert.kind, alert.check).inc()
            log.info("alert.raised", model=alert.model, feature=alert.feature, kind=str(alert.kind),
                     check=alert.check, status=alert.status, statistic=alert.statistic, threshold=alert.threshold,
                     alert_id=alert.alert_id, offset=alert.source_offset)
        return True

    def _warn_unreachable(self) -> None:
        """At start: the checks whose window cannot hold the events they need at the reference's event rate
        (they would never run); `status` says the same from the windows it sees."""
        view = self.settings.model_view.enabled
        if view and self.model_processor is not None:
            procs = [(p, 1) for p in self.model_processor.stream_processors.values()]
        elif not view:
            procs = [(p, self.topic_partitions.get(t, 1)) for t, p in self.processors.items()
                     if isinstance(p, StreamProcessor)]
        else:
            return
        for proc, partitions in procs:
            rate = proc.reference.event_rate if proc.reference is not None else None
            if not rate:
                continue
            window = self.settings.window_for(proc.model)
            held = expected_window_events(window, rate, partitions)
            for u in unreachable(window, proc.stream, minimums(self.settings, proc.model, proc.stream), held):
                log.warning("check.unreachable", model=proc.model.name, stream=u.stream, check=u.check,
                            needs=u.needs, window_events=round(u.window_events), advice=u.advice)

    @staticmethod
    def _log_given_up(tp: TP, part: LabelPartition, before: int, predictions_time: int) -> None:
        """A line when waiting labels are given up (expired or evicted): they never join (counted again if a
        crash replays the batch)."""
        now = part.counts["expired"] + part.counts["evicted"]
        if now > before:
            log.warning("labels.given_up", topic=tp[0], partition=tp[1], labels=now - before,
                        expired_total=part.counts["expired"], evicted_total=part.counts["evicted"],
                        labels_time=part.max_label_time, predictions_time=predictions_time)

    def _predictions_time(self, processor: LabelProcessor) -> int:
        """How far every partition of the model's predictions topic has been read and stored for the join, in
        event time; -1 while one has not (then no waiting label expires by time)."""
        predictions = processor.model.predictions
        if predictions is None:
            return -1
        progress = self.joins.progress(processor.model.name)[PREDICTIONS]
        mark = watermark(progress, self.topic_partitions.get(predictions.topic, 0))
        return -1 if mark is None else mark

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
            try:  # only the waiting labels a prediction came for since the last lookup (progress read first)
                predictions_time = self._predictions_time(processor)
                lookups, marks = self.joins.get_since(processor.model.name, [], list(part.pending),
                                                      self.join_marks.get(tp, {}))
            except DependencyUnavailable:
                continue
            self.join_marks[tp] = marks
            before = dict(part.counts)
            outcome = processor.process_labels(part, [], [], lookups, owned.stored_offset, predictions_time)
            self._log_given_up(tp, part, before["expired"] + before["evicted"], predictions_time)
            if lookups or part.counts != before or outcome.alerts:  # joined, or the predictions moved on
                self._checkpoint(tp, owned, owned.stored_offset, outcome.alerts, [], outcome)

    def _verify_store(self) -> None:
        """Every `store_check_s`: Redis still holds the fence and offset this replica last wrote for each
        partition it owns. A failover that lost acknowledged writes is otherwise only seen at the partition's
        next checkpoint, and a partition with nothing more to read has none: its lost records would wait for a
        rebalance. A partition found behind (or taken by another owner) goes through `_reload`."""
        now = time.monotonic()
        if now < self.next_store_check or not self.owned:
            return
        self.next_store_check = now + self.settings.store_check_s
        owned = list(self.owned)
        try:
            found = self.store.positions(owned)
        except DependencyUnavailable as exc:
            self._outage("redis", exc)
            return
        for tp in owned:
            mine = self.owned.get(tp)
            if mine is not None and found[tp] != (mine.fence, mine.stored_offset):
                self._reload(tp)

    def _check_silence(self) -> None:
        """Once a second, per owned input partition: tell the model stage when it has gone idle (read to its
        end, no event for `idle_timeout_s`), and raise VOLUME when no event came for the model's `freshness_s`."""
        now = time.monotonic()
        if self.outage is not None:
            # We cannot read (or write what we read): a quiet partition says nothing about the stream. Its
            # silence clock restarts when the dependency answers again (`_outage_over`).
            for tp in self.owned:
                self.last_seen[tp] = now
            return
        if now - self._last_silence_check < 1.0:
            return
        self._last_silence_check = now
        view = self.settings.model_view
        for tp, owned in list(self.owned.items()):
            processor = self.processors[tp[0]]
            if not isinstance(processor, StreamProcessor) or not isinstance(owned.part, StreamPartition):
                continue
            if owned.applied is not None:
                continue  # batches wait for their checkpoint (within checkpoint_interval_ms): not quiet yet
            quiet = now - self.last_seen.get(tp, now)
            freshness = processor.model.freshness_s
            if freshness is not None and quiet >= freshness and not self._writable(tp):
                self.last_seen[tp] = now  # Kafka refuses its writes: its silence clock restarts when it takes them
                continue
            signals: list[dict[str, Any]] = []
            if view.enabled and not owned.part.idle_sent and quiet >= view.idle_timeout_s and self._at_end(tp, owned):
                owned.part.signal_idle()
                signals = owned.part.take_emitted()
                if owned.stored_offset is None:
                    self._send_signals(signals)  # no state to commit yet: the signal alone, at most once more
                    signals = []
            if owned.stored_offset is None:
                self._never_delivered(tp, owned, processor, quiet)
                continue
            alerts, silence = processor.silence(owned.part, quiet)
            if alerts or signals or silence:
                self._checkpoint(tp, owned, owned.stored_offset, alerts, [], blocks=signals + silence)

    def _writable(self, tp: TP) -> bool:
        """Whether the partition can take writes (`Writability`); a change is logged and in
        `monitor_partition_unwritable`."""
        if self.consumer is None:
            return False
        if self.writability is None:
            self.writability = Writability(self.consumer, self.settings.admin_config())
        why = self.writability.check(*tp)
        if why is not None and tp not in self.unwritable:
            self.unwritable.add(tp)
            log.warning("partition.unwritable", topic=tp[0], partition=tp[1], **why,
                        effect="not called silent while Kafka refuses its writes")
            self.metrics.unwritable.labels(tp[0], str(tp[1])).set(1)
        elif why is None and tp in self.unwritable:
            self.unwritable.discard(tp)
            log.info("partition.writable", topic=tp[0], partition=tp[1])
            self.metrics.unwritable.labels(tp[0], str(tp[1])).set(0)
        return why is None

    def _never_delivered(self, tp: TP, owned: Owned, processor: StreamProcessor, quiet: float) -> None:
        """A partition assigned `quiet` seconds ago that has delivered no event, read to its end: after the
        model's `freshness_s`, said once (log, `monitor_partition_never_delivered`) and a VOLUME
        `stream_stopped` alert (checkpointed at the log end, so it goes out once; its first event resolves it)."""
        part = owned.part
        freshness = processor.model.freshness_s
        if not isinstance(part, StreamPartition) or freshness is None or quiet < freshness or \
                "*/stream_stopped" in part.open_alerts:
            return
        if not self._at_end(tp, owned):
            return
        assert self.consumer is not None
        try:
            low, high = self.consumer.get_watermark_offsets(TopicPartition(*tp), timeout=1.0, cached=False)
        except KafkaException:
            return
        log.warning("partition.never_delivered", topic=tp[0], partition=tp[1], quiet_s=round(quiet),
                    log_start=low, log_end=high, freshness_s=freshness,
                    reason="no record since it was assigned" + (" (its records were deleted by retention)"
                                                                if high > 0 and low >= high else ""))
        self.metrics.never_delivered.labels(tp[0], str(tp[1])).set(1)
        self.never_delivered.add(tp)
        alerts, silence = processor.silence(part, quiet, position=high)
        if alerts or silence:
            self._checkpoint(tp, owned, high, alerts, [], blocks=silence)

    def _at_end(self, tp: TP, owned: Owned) -> bool:
        """Whether this replica has read the partition to its high watermark (so its silence is real).

        Asks the broker only when the lag known from fetches says so: a paused partition, or one with data
        left, is not at its end (and this runs every second for every quiet partition)."""
        assert self.consumer is not None
        if tp in self.aligned or self.lags.get(tp, 0) > 0:
            return False
        try:
            low, high = self.consumer.get_watermark_offsets(TopicPartition(*tp), timeout=1.0, cached=False)
            position = owned.stored_offset
            if position is None:
                position = self.consumer.position([TopicPartition(*tp)])[0].offset
        except KafkaException:
            return False
        return high <= low or (position is not None and position >= high)

    def _send_signals(self, signals: list[dict[str, Any]]) -> None:
        producer = self.outbox.producer
        if producer is None:
            return
        for chunk, value in self.block_codec.encode_chunks(signals, BLOCKS_MESSAGE_BYTES):
            producer.produce(self.settings.blocks_topic, key=chunk[0]["model"].encode(), value=value)
        producer.poll(0)

    def _align(self) -> None:
        """Stage 1: pause input partitions whose event time runs `max_skew_ms` ahead of the slowest partition of
        the same topic that still has data to read here, and resume them when it is within half of that.

        Catching up on a backlog, Kafka serves partitions unevenly; without this the model stage would hold
        many slots open for the partitions behind (or, past `max_open_slots`, count their blocks late).
        """
        skew = self.settings.model_view.max_skew_ms
        if self.stage != "ingest" or not skew or not self.settings.model_view.enabled or self.consumer is None:
            return
        times: dict[str, list[tuple[TP, int]]] = {}
        for tp, owned in self.owned.items():
            part = owned.part
            if isinstance(part, StreamPartition) and tp not in self.lost:
                times.setdefault(tp[0], []).append((tp, part.event_time()))
        wanted: set[TP] = set()
        for items in times.values():
            # Partitions with data left. One not read yet counts as being at the earliest time seen on the topic
            # (the stream's start): the others may run `skew` past that while it is fetched, not to the end.
            topic = items[0][0][0]
            start = min([t for _tp, t in items if t >= 0] + [self.topic_start.get(topic, -1)], key=lambda x: (x < 0, x))
            if start >= 0:
                self.topic_start[topic] = start
            behind = [t if t >= 0 else start for tp, t in items
                      if self.lags.get(tp, 0) > 0 and tp not in self.aligned and (t >= 0 or start >= 0)]
            if not behind:
                continue
            floor = min(behind)
            # Hysteresis: paused past `skew`, resumed only within half of it (each pause drops what
            # librdkafka had fetched for the partition, so flapping costs throughput).
            wanted |= {tp for tp, t in items if t >= 0 and self.lags.get(tp, 0) > 0
                       and t > floor + (skew // 2 if tp in self.aligned else skew)}
        pause, resume = wanted - self.aligned, self.aligned - wanted
        if pause:
            self.consumer.pause([TopicPartition(*tp) for tp in sorted(pause)])
        if resume:
            self.consumer.resume([TopicPartition(*tp) for tp in sorted(resume)])
        if pause or resume:
            log.debug("partitions.aligned", paused=len(wanted))
        self.aligned = wanted

    def _record_views(self, part: ModelPartition) -> None:
        """Late and duplicate blocks, and the model-level drift statistics, as metrics."""
        for key, view in part.streams.items():
            model, stream = key.split("/", 1)
            self.metrics.late_blocks.labels(model, stream).set(view.counts["late_blocks"])
            self.metrics.duplicate_blocks.labels(model, stream).set(view.counts["duplicate_blocks"])
            for r in view.last_results:
                if r.kind in (AlertKind.DRIFT, AlertKind.PREDICTION_DRIFT) and r.check != "cusum":
                    self.metrics.drift.labels(model, stream, r.field, r.check, "all").set(r.statistic)
                    self.latest_drift[(model, stream, r.field)] = (r.check, r.statistic, r.threshold)
            if view.last_results and view.last_drift and view.slots and view.slots[-1][6] is not None:
                # Partition -1: the model view over every partition (the report's drift-over-time chart).
                self.history.record(model, stream, -1, int(view.slots[-1][6]),
                                    {f: (d[0], float(d[1]), float(d[2]), *d[3:4]) for f, d in view.last_drift.items()})
            view.last_results = []

    def _refresh_references(self, force: bool = False) -> bool:
        """Load each model's active reference; when it changed, rebuild owned partitions with it. False if a
        reference could not be read (the model keeps the one it has)."""
        if self.references is None:
            return True
        now = time.monotonic()
        if not force and now - self._last_reference_check < self.settings.reference_poll_s:
            return True
        self._last_reference_check = now
        read = True
        for model in self.settings.models:
            topics = [s.topic for _, s in model.streams() if s.topic in self.processors]
            mp = self.model_processor
            current = mp.reference_version(model.name) if mp is not None else (
                self.processors[topics[0]].reference_version if topics else None)
            try:
                version = self.references.active_version(model.name)
                if version == current:
                    continue
                profile = self.references.get(model.name, version) if version is not None else None
            except DependencyUnavailable as exc:
                log.warning("reference.unavailable", model=model.name, error=str(exc))
                read = False
                continue
            log.info("reference.loaded", model=model.name, version=version, stage=self.stage)
            self._log_budget(model, profile)
            if mp is not None:
                mp.set_reference(model.name, profile)
                for owned in self.owned.values():
                    if isinstance(owned.part, ModelPartition):
                        mp.rebuild(owned.part, model.name)
                continue
            for topic in topics:
                processor = self.processors[topic]
                assert not isinstance(processor, ModelProcessor)
                processor.set_reference(profile)
                for tp, owned in self.owned.items():
                    if tp[0] == topic:
                        part = self._new_partition(topic, tp[1])
                        self._load(part, owned.part.to_fields())
                        owned.part = part
        return read

    def _log_budget(self, model: ModelSettings, profile: ReferenceProfile | None) -> None:
        """The thresholds a false-alarm budget derives with this reference (said at start and on a change)."""
        if model.alerts.false_alarms_per_day is None:
            return
        budget = model_budget(self.settings, model, profile)
        if budget is None:
            log.warning("budget.not_derived", model=model.name,
                        reason="no reference with an event rate (its time field), or window.by is not 'time'",
                        effect="the checks keep their configured thresholds")
        else:
            log.info("budget.derived", model=model.name, **budget.summary())

    def _reload(self, tp: TP) -> None:
        assert self.consumer is not None
        self.join_marks.pop(tp, None)  # the stored state's waiting labels were looked up before these marks
        owned = self.owned.get(tp)
        if owned is None:
            return
        snap = self._until_stored(lambda: self.store.read(*tp))
        if snap is None:
            return
        if snap.fence > owned.fence:  # another instance took it
            self.owned.pop(tp, None)
            return
        if snap.fence < owned.fence:
            # The store forgot our acquire: a Redis failover lost the last writes the old master acknowledged.
            # Take the partition again (a token above any handed out before) and go on from what it has.
            log.error("state.behind", topic=tp[0], partition=tp[1], fence=owned.fence, stored_fence=snap.fence)
            snap = self._until_stored(lambda: self.store.acquire(*tp))
            if snap is None:
                return
        if owned.stored_offset is not None and (snap.offset is None or snap.offset < owned.stored_offset):
            # Acknowledged checkpoints are gone with their offsets (state and offset are one write, so they
            # roll back together): the records after the stored offset are consumed again, counted once.
            replayed = owned.stored_offset - (snap.offset or 0)
            log.error("state.rolled_back", topic=tp[0], partition=tp[1], stored_offset=snap.offset,
                      written_offset=owned.stored_offset, records_replayed=replayed,
                      reason="the store lost acknowledged writes (a Redis failover or restart)")
            self.metrics.rollbacks.labels(tp[0], str(tp[1])).inc()
            self.metrics.records_replayed.labels(tp[0], str(tp[1])).inc(replayed)
        part = self._new_partition(*tp)
        if snap.fields:
            self._load(part, snap.fields)
        self.owned[tp] = Owned(snap.fence, snap.offset, part, dict(snap.fields), starts_again_here=self._from_start)
        # What the store's outbox holds is sent (again): after a rollback it can hold entries this replica has
        # delivered since, which would otherwise stay there; a re-sent entry is byte-identical, same id.
        self.outbox.add(tp, snap.outbox)
        if self.outage == "redis":
            self._outage_over()  # the store answered
        start = snap.offset if snap.offset is not None else (
            OFFSET_BEGINNING if self.settings.start_from == "earliest" else OFFSET_END)
        self.consumer.seek(TopicPartition(tp[0], tp[1], start))
        log.info("partition.reloaded", topic=tp[0], partition=tp[1], offset=snap.offset)

    def _until_stored(self, call: Callable[[], PartitionSnapshot]) -> PartitionSnapshot | None:
        """`call` until Redis answers (an outage meanwhile, polling); None if the daemon stops first."""
        while not self.stop_event.is_set():
            try:
                return call()
            except DependencyUnavailable as exc:
                self._outage("redis", exc)
        return None

    def _outage_over(self) -> None:
        """The dependency that was down answers again. While it was down the daemon could not read, or waited
        inside a call to it (a dead-letter write waits up to 30 s for a broker that is down) without coming
        to `_check_silence`: every partition's silence clock restarts now, however the outage was waited out."""
        if self.outage is None:
            return
        log.info("dependency.up", dependency=self.outage)
        self.outage = None
        now = time.monotonic()
        for tp in self.owned:
            self.last_seen[tp] = now

    def _outage(self, dependency: str, exc: Exception, poll: bool = True) -> None:
        """Pause consumption while a dependency is down; keep polling so the group membership holds."""
        if self.outage is None:
            self.metrics.outages.labels(dependency).inc()
            log.warning("dependency.down", dependency=dependency, error=str(exc))
        self.outage = dependency
        self.metrics.ready.labels(self.stage).set(0)
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
                poll_paused(consumer, 0.1)  # serves callbacks and heartbeats; a message is put back
            else:
                time.sleep(0.1)
        if consumer is not None:
            # What is assigned now (a rebalance inside the polls may have changed it), but the halted partitions.
            resume = [tp for tp in consumer.assignment() if (tp.topic, tp.partition) not in self.lost]
            if resume:
                consumer.resume(resume)
            self.aligned = set()  # resumed with the rest; the next batch pauses again what runs ahead

    def _publish_view(self) -> None:
        self.view = PageView(tuple(self.recent_alerts), MappingProxyType(dict(self.lags)),
                             MappingProxyType(dict(self.latest_drift)))

    def _update_lag(self, tp: TP, next_offset: int) -> int | None:
        """The partition's records after `next_offset`, as of the last fetch's high watermark (None: unknown)."""
        assert self.consumer is not None
        try:
            _low, high = self.consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
        except KafkaException:
            return None  # lag is best effort
        if high < 0:
            return None
        self.lags[tp] = max(high - next_offset, 0)
        self.metrics.lag.labels(tp[0], str(tp[1])).set(self.lags[tp])
        return self.lags[tp]


@dataclass(frozen=True)
class PageView:
    """One stage's part of the status page, as of the end of its last loop iteration."""

    recent: tuple[Alert, ...]
    lags: Mapping[TP, int]
    latest: Mapping[tuple[str, str, str], tuple[str, float, float]]


def render_status_page(daemons: list[Daemon]) -> str:
    """The page of this process: the store's merged view of every model, and these stages' alerts and lag."""
    first = daemons[0]
    try:
        status: dict[str, Any] | None = collect_status(first.settings, first.store)
        error = None
    except DependencyUnavailable as exc:
        status, error = None, f"the state store is unreachable: {exc}"
    views = [d.view for d in daemons]  # each an immutable snapshot the loop swapped in
    recent = sorted((a for v in views for a in v.recent), key=lambda a: a.event_time or 0, reverse=True)
    lags = {tp: n for v in views for tp, n in v.lags.items()}
    latest = {k: v for view in views for k, v in view.latest.items()}
    return render_page(PageData(status, all(d.is_ready() for d in daemons), first.settings.group_id,
                                [d.stage for d in daemons], recent[:50], lags, error, latest))
