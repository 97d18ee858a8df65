"""The checkpoint: how a batch's results become durable exactly once, for both stages.

1. the rejects go to the dead-letter topic, and Kafka confirms them, before anything else;
2. the batch's predictions go to the label-join store (idempotent: a replay writes the same entries);
3. one Redis script checks the fence and the expected offset, then writes the partition's state (the fields
   whose bytes changed since the last checkpoint; those no state refers to any more are deleted), its outbox
   entries (alerts; block summaries in as few messages as fit `BLOCKS_MESSAGE_BYTES`) and the new offset.

The batches of all partitions a consume brought are written together (`Checkpointer.write_many`): their
rejects in one wait for Kafka, their scripts in one round trip to Redis (one pipeline on one server), each
script checked and written, or refused, on its own.

The `Outbox` then sends the entries until Kafka confirms them. See ../shared/docs/RELIABILITY.md.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from confluent_kafka import KafkaError, Message, Producer

from monitor.app.models import ModelPartition
from monitor.app.outbox import block_entry_id, encode_entry
from monitor.app.pipeline import BatchOutcome
from monitor.core.labels import LabelPartition
from monitor.core.partition import StreamPartition
from monitor.core.state_codec import changed_fields
from monitor.core.types import Alert, Reject
from monitor.errors import DependencyUnavailable, MonitorError
from monitor.io.avro import AlertCodec, BlockCodec
from monitor.io.join import LABELS, JoinStore, watermark
from monitor.io.kafka import dead_letter_headers
from monitor.io.state import Commit, StateStore
from monitor.ops.metrics import Metrics

log = structlog.get_logger("monitor.checkpoint")
TP = tuple[str, int]
# A message of the blocks topic stays well under Kafka's default 1 MB limit (broker and producer).
BLOCKS_MESSAGE_BYTES = 256 * 1024


@dataclass
class Owned:
    """A partition this instance owns: its fence token, stored offset and in-memory state."""

    fence: int
    stored_offset: int | None
    part: StreamPartition | LabelPartition | ModelPartition
    written: dict[str, bytes] = field(default_factory=dict)  # the state fields as stored (what is in Redis)
    applied: int | None = None  # memory's next offset when batches since the stored one wait for a checkpoint
    deferred_since: float = 0.0  # monotonic time of the first of them
    # The blocks and signals those batches made (while a backlog is read): they leave with their checkpoint.
    waiting_blocks: list[dict[str, Any]] = field(default_factory=list)
    # Never checkpointed (`stored_offset` None), it started where a restart would start again (the log start,
    # or the group's committed offset), not at the log end: its first batches may wait for a checkpoint too.
    starts_again_here: bool = False


@dataclass(frozen=True)
class JoinTarget:
    """Where a predictions partition's join entries go: the model, and how long and how many to keep."""

    model: str
    ttl_ms: int
    max_predictions: int
    labels_partitions: int = 0  # of the model's labels topic (0: not known yet: no prediction expires by time)


@dataclass
class Job:
    """One partition's batch to make durable: its next offset, alerts, rejects, outcome (join entries, blocks)
    and further blocks (signals), and where its join entries go."""

    tp: TP
    owned: Owned
    next_offset: int
    alerts: list[Alert]
    rejects: list[Reject]
    outcome: BatchOutcome | None
    blocks: list[dict[str, Any]]
    join: JoinTarget | None


class Checkpointer:
    """Writes partitions' batches: dead-letter first, then each one's state + outbox + offset in one atomic
    script."""

    def __init__(self, store: StateStore, joins: JoinStore, metrics: Metrics, dead_letter_topic: str) -> None:
        self.store = store
        self.joins = joins
        self.metrics = metrics
        self.dead_letter_topic = dead_letter_topic
        self.codec = AlertCodec()
        self.block_codec = BlockCodec()
        self.producer: Producer | None = None  # the stage's producer (dead letters), set when it runs

    def write(self, tp: TP, owned: Owned, next_offset: int, alerts: list[Alert], rejects: list[Reject],
              outcome: BatchOutcome | None, blocks: list[dict[str, Any]], join: JoinTarget | None
              ) -> dict[str, bytes]:
        """Make the batch durable; return the outbox entries written (for the `Outbox` to send).

        Raises `FencedError` (another instance owns the partition now), `OffsetConflict` (the store is not
        where memory thinks) or `DependencyUnavailable` (Redis or the dead-letter topic): nothing was
        committed then, and the caller reloads from the store."""
        result = self.write_many([Job(tp, owned, next_offset, alerts, rejects, outcome, blocks, join)])[0]
        if isinstance(result, MonitorError):
            raise result
        return result

    def write_many(self, jobs: Sequence[Job]) -> list[dict[str, bytes] | MonitorError]:
        """`write` of each job (batches of different partitions), in one round trip to Redis where it allows:
        the rejects of all first (one wait for Kafka), then each job's join entries, then every state in one
        `StateStore.commit_many`. Each job is written or not on its own; the answer, in order, is its outbox
        entries or the error `write` would have raised."""
        results: list[dict[str, bytes] | MonitorError | None] = [None] * len(jobs)
        try:
            self.dead_letter([r for job in jobs for r in job.rejects])
        except DependencyUnavailable as exc:  # no batch with rejects may be written (their offsets pass them)
            for i, job in enumerate(jobs):
                if job.rejects:
                    results[i] = exc
        staged: list[tuple[int, dict[str, bytes], dict[str, bytes], int]] = []
        commits: list[Commit] = []
        for i, job in enumerate(jobs):
            if results[i] is not None:
                continue
            try:
                self._join(job)
            except DependencyUnavailable as exc:
                results[i] = exc
                continue
            outbox = self._outbox(job)
            owned = job.owned
            fields = owned.part.to_fields()
            changed, gone = changed_fields(fields, owned.written)  # closed blocks, written once, are not again
            commits.append(Commit(job.tp[0], job.tp[1], owned.fence, owned.stored_offset, job.next_offset, changed,
                                  outbox, gone))
            staged.append((i, outbox, fields, sum(len(v) for v in changed.values())))
        for (i, outbox, fields, written), problem in zip(staged, self.store.commit_many(commits), strict=True):
            if problem is not None:
                results[i] = problem
                continue
            job = jobs[i]
            job.owned.written = fields
            self.metrics.state_bytes_written.labels(job.tp[0]).inc(written)
            results[i] = outbox
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    def _join(self, job: Job) -> None:
        """A predictions batch's entries into the label-join store (raises `DependencyUnavailable`)."""
        outcome, join = job.outcome, job.join
        if outcome is None or not outcome.join_entries or join is None:
            return
        # A prediction expires once its own partition and every labels partition are a ttl past it.
        labels = watermark(self.joins.progress(join.model)[LABELS], join.labels_partitions)
        dropped = self.joins.put(join.model, job.tp[1], outcome.join_entries, join.ttl_ms, join.max_predictions,
                                 -1 if labels is None else labels)
        # Predictions whose label never came (counted again if a crash replays the batch).
        self.metrics.unlabelled.labels(join.model).inc(dropped)

    def _outbox(self, job: Job) -> dict[str, bytes]:
        """The job's outbox entries: its alerts, and its blocks in as few messages as fit."""
        outbox = {a.alert_id: encode_entry(a.model.encode(), self.codec.encode(a)) for a in job.alerts}
        made = job.owned.waiting_blocks + (job.outcome.blocks if job.outcome is not None else []) + job.blocks
        for chunk, value in self.block_codec.encode_chunks(made, BLOCKS_MESSAGE_BYTES):
            outbox[blocks_entry_id(job.tp, job.owned, chunk, value)] = encode_entry(chunk[0]["model"].encode(),
                                                                                   value)
        return outbox

    def dead_letter(self, rejects: list[Reject]) -> None:
        """Write rejects to the dead-letter topic and wait for Kafka: the offset may not pass them before."""
        if not rejects:
            return
        producer = self.producer
        assert producer is not None
        failures: list[KafkaError] = []

        def report(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.append(err)

        for rej in rejects:
            rec = rej.record
            producer.produce(self.dead_letter_topic, key=rec.key, value=rec.value,
                             headers=dead_letter_headers(rej), on_delivery=report)
            log.info("record.dead_lettered", topic=rec.topic, partition=rec.partition, offset=rec.offset,
                     reason=rej.reason)
        remaining = producer.flush(30.0)
        if remaining or failures:
            # Alarm: the offset must not move past a record we could not dead-letter; the batch is redone.
            self.metrics.dead_letter_failures.inc()
            log.error("dead_letter.unwritable", topic=self.dead_letter_topic, failed=len(failures),
                      unconfirmed=remaining, codes=sorted({f.name() for f in failures}))
            raise DependencyUnavailable(f"kafka: dead-letter topic unwritable ({len(failures)} failed)")


def blocks_entry_id(tp: TP, owned: Owned, made: Sequence[Mapping[str, Any]], value: bytes) -> str:
    """Outbox ids of block messages sort in the order the blocks were made: by the first block's number in its
    partition's order (`StreamPartition.take_emitted`: the stream's blocks, its segments' and its signals, as
    they must reach the model stage); without one (a state of 0.3), by the first block's sequence number, a
    message of signals alone right after the last block made before it."""
    orders = [int(b["_order"]) for b in made if "_order" in b]
    if orders:
        return block_entry_id(tp[0], tp[1], orders[0])
    seqs = [int(b["seq"]) for b in made if int(b["seq"]) >= 0]
    if seqs:
        return block_entry_id(tp[0], tp[1], seqs[0])
    part = owned.part
    last = part.block_seq - 1 if isinstance(part, StreamPartition) else -1
    anchor = block_entry_id(tp[0], tp[1], last) if last >= 0 else f"blk:{tp[0]}:{tp[1]}:-"
    return f"{anchor}:signal:{owned.stored_offset}:{zlib.crc32(value):08x}"
