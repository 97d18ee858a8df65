"""The pure core: decode a partition's records, update its state, evaluate checks.

`StreamProcessor.process` returns alerts and rejects as values; Kafka and Redis stay outside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from monitor.codec import AvroDecoder, FieldSpec, infer_fields, load_schema, registry_lookup
from monitor.errors import DecodeError
from monitor.evaluate import evaluate
from monitor.events import Alert, RawRecord, Reject
from monitor.settings import CheckSettings, ModelSettings, Settings, StreamSettings
from monitor.stream_state import DecodedBatch, StreamPartition, event_time_ms


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    alerts: list[Alert]
    rejects: list[Reject]
    valid: int
    next_offset: int


class StreamProcessor:
    """Everything needed to monitor one topic of one model (its features or its predictions)."""

    def __init__(self, settings: Settings, model: ModelSettings, stream: str, conf: StreamSettings) -> None:
        self.model = model
        self.stream = stream
        self.topic = conf.topic
        reader = load_schema(conf.schema_path) if conf.schema_path is not None else None
        lookup = registry_lookup(settings.schema_registry) if conf.format == "confluent" else None
        if reader is None:
            raise DecodeError("no_schema", f"{conf.topic}: a reader schema is needed to infer fields")
        self.decoder = AvroDecoder(reader, wire_format=conf.format, lookup=lookup,
                                   max_payload_bytes=settings.max_payload_bytes)
        skip = {f for f in (model.id_field, model.time_field, model.version_field) if f}
        self.fields: list[FieldSpec] = infer_fields(
            reader, skip=skip, monitor=conf.monitor, exclude=conf.exclude, categorical=conf.categorical
        )
        self.checks: dict[str, CheckSettings] = {f.name: settings.checks_for(model, f.name) for f in self.fields}
        self.block_size = settings.defaults.block_size
        self.window_blocks = settings.defaults.window_blocks

    def new_partition(self, partition: int) -> StreamPartition:
        return StreamPartition(self.model.name, self.stream, self.topic, partition, self.fields, self.checks,
                               self.block_size, self.window_blocks)

    def decode(self, records: list[RawRecord]) -> tuple[DecodedBatch, list[Reject]]:
        rows: list[dict[str, Any]] = []
        offsets: list[int] = []
        times: list[int | None] = []
        rejects: list[Reject] = []
        time_field = self.model.time_field
        decode = self.decoder.decode
        for rec in records:
            try:
                row = decode(rec.value)
            except DecodeError as exc:
                rejects.append(Reject(rec, exc.reason, type(exc.__cause__ or exc).__name__, str(exc)))
                continue
            rows.append(row)
            offsets.append(rec.offset)
            t = event_time_ms(row.get(time_field)) if time_field else None
            times.append(rec.timestamp_ms if t is None else t)
        return DecodedBatch(np.array(offsets, dtype=np.int64), times, rows), rejects

    def process(self, part: StreamPartition, records: list[RawRecord]) -> BatchOutcome:
        """Apply one partition's records (offset order) to its state; return alerts and rejects."""
        batch, rejects = self.decode(records)
        findings = part.apply(batch)
        alerts = evaluate(findings, part, batch, self.checks, self.model.version_field)
        part.rejects += len(rejects)
        return BatchOutcome(alerts, rejects, len(batch), records[-1].offset + 1 if records else -1)


def build_processors(settings: Settings) -> dict[str, StreamProcessor]:
    """One processor per input topic."""
    out = {}
    for model in settings.models:
        for stream, conf in model.streams():
            out[conf.topic] = StreamProcessor(settings, model, stream, conf)
    return out
