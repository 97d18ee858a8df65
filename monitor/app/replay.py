"""Offline replay of both stages in one process: input records in, stage-1 states and model incidents out.

What the daemon computes, with no Kafka or Redis: block summaries go through their Avro encoding, in the
order of the event time that released them (every partition progressing together), into the model stage.
Tests use it as the uninterrupted reference run (no partition is ever idle: no idle signals are sent).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from monitor.app.models import ModelPartition, ModelProcessor
from monitor.app.pipeline import AnyProcessor, StreamProcessor, build_processors
from monitor.core.partition import StreamPartition
from monitor.core.profiles import ReferenceProfile
from monitor.core.types import Alert, RawRecord
from monitor.settings import Settings


@dataclass
class Replay:
    """Both stages' states and outputs after a replay."""

    processors: dict[str, AnyProcessor]
    models: ModelProcessor
    partitions: dict[tuple[str, int], StreamPartition] = field(default_factory=dict)
    model_parts: dict[int, ModelPartition] = field(default_factory=dict)
    stage1_alerts: list[Alert] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)  # the model stage's incidents, in order
    blocks: int = 0


def replay(settings: Settings, records: Mapping[tuple[str, int], list[RawRecord]],
           references: dict[str, ReferenceProfile] | None = None, blocks_partitions: int = 1,
           batch: int = 500, stage2_batch: int = 1) -> Replay:
    """Run `records` (per input topic and partition, in offset order) through stage 1, then stage 2
    (`stage2_batch` blocks messages at a time, as the daemon reads a backlog of them)."""
    processors = build_processors(settings, references)
    streams = {t: p for t, p in processors.items() if isinstance(p, StreamProcessor)}
    models = ModelProcessor(settings, streams)
    counts: dict[str, int] = {}
    for topic, p in records:
        counts[topic] = max(counts.get(topic, 0), p + 1)
    models.input_partitions = counts
    out = Replay(processors, models)
    released: list[tuple[int, str, int, int, bytes, str]] = []
    for (topic, p), recs in sorted(records.items()):
        proc = streams.get(topic)
        if proc is None:
            continue
        part = proc.new_partition(p, counts[topic])
        for lo in range(0, len(recs), batch):
            outcome = proc.process(part, recs[lo:lo + batch])
            out.stage1_alerts += outcome.alerts
            for b in outcome.blocks:
                released.append((int(b["progress_time"]), topic, p, int(b["seq"]), models.codec.encode([b]),
                                 b["model"]))
        out.partitions[(topic, p)] = part
    released.sort(key=lambda r: r[:4])
    out.blocks = len(released)
    offsets: dict[int, int] = {}
    waiting: dict[int, list[RawRecord]] = {}
    for _t, _topic, _p, _seq, value, model in released:
        bp = blocks_partition(model, blocks_partitions)
        offset = offsets.get(bp, 0)
        offsets[bp] = offset + 1
        waiting.setdefault(bp, []).append(RawRecord(settings.blocks_topic, bp, offset, model.encode(), value))
        if len(waiting[bp]) >= stage2_batch:
            mpart = out.model_parts.setdefault(bp, models.new_partition(bp))
            out.alerts += models.process(mpart, waiting.pop(bp)).alerts
    for bp, recs in sorted(waiting.items()):
        mpart = out.model_parts.setdefault(bp, models.new_partition(bp))
        out.alerts += models.process(mpart, recs).alerts
    return out


def blocks_partition(model: str, partitions: int) -> int:
    """Where a model's blocks go in replay (Kafka's own partitioner decides in the daemon; any one will do)."""
    return sum(model.encode()) % partitions
