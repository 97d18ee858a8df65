"""The pure core: decode a partition's records, update its state, evaluate checks.

`StreamProcessor.process` returns alerts and rejects as values; Kafka and Redis stay outside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from monitor.codec import (
    AvroDecoder,
    FieldSpec,
    field_types,
    infer_fields,
    load_schema,
    registry_lookup,
    schema_changes,
)
from monitor.contract import Contract, load_contract
from monitor.errors import ConfigError, DecodeError
from monitor.evaluate import evaluate
from monitor.events import Alert, RawRecord, Reject
from monitor.reference import ReferenceProfile
from monitor.settings import CheckSettings, ModelSettings, Settings, StreamSettings
from monitor.stream_state import DecodedBatch, Finding, StreamPartition, event_time_ms


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    alerts: list[Alert]
    rejects: list[Reject]
    valid: int
    next_offset: int


class StreamProcessor:
    """Everything needed to monitor one topic of one model (its features or its predictions)."""

    def __init__(self, settings: Settings, model: ModelSettings, stream: str, conf: StreamSettings,
                 reference: ReferenceProfile | None = None, contract: Contract | None = None) -> None:
        self.model = model
        self.stream = stream
        self.topic = conf.topic
        if conf.schema_path is None:
            raise ConfigError(f"{conf.topic}: a reader schema (.avsc) is needed to know the fields")
        reader = load_schema(conf.schema_path)
        lookup = registry_lookup(settings.schema_registry) if conf.format == "confluent" else None
        self.decoder = AvroDecoder(reader, wire_format=conf.format, lookup=lookup,
                                   max_payload_bytes=settings.max_payload_bytes)
        skip = {f for f in (model.id_field, model.time_field, model.version_field) if f}
        self.fields: list[FieldSpec] = infer_fields(
            reader, skip=skip, monitor=conf.monitor, exclude=conf.exclude, categorical=conf.categorical
        )
        self.checks: dict[str, CheckSettings] = {f.name: settings.checks_for(model, f.name) for f in self.fields}
        self.window = settings.window_for(model)
        if contract is None and model.contract is not None:
            contract = load_contract(model.contract)
        self.contract = contract
        expected = field_types(reader)
        if contract is not None:
            expected.update({n: c.avro_type for n, c in contract.fields.items() if c.avro_type and n in expected})
        self.expected_types = expected
        self.reference: ReferenceProfile | None = None
        self.set_reference(reference)

    def set_reference(self, reference: ReferenceProfile | None) -> None:
        """Use a (new) reference profile; partitions created from now on bin and standardise with it."""
        self.reference = reference

    @property
    def reference_version(self) -> str | None:
        return None if self.reference is None else self.reference.version

    def new_partition(self, partition: int, topic_partitions: int = 1) -> StreamPartition:
        names = {f.name for f in self.fields}
        ref = {k: v for k, v in self.reference.fields.items() if k in names} if self.reference else None
        contract = ({k: v for k, v in self.contract.fields.items() if k in names}
                    if self.contract is not None else None)
        return StreamPartition(self.model.name, self.stream, self.topic, partition, self.fields, self.checks,
                               self.window, reference=ref, ref_version=self.reference_version,
                               contract=contract, sentinels=self.model.sentinels,
                               version_field=self.model.version_field, id_field=self.model.id_field,
                               uniqueness_memory=self.model.uniqueness_memory if self.stream == "features" else 0,
                               max_duplicate_rate=self.model.max_duplicate_rate,
                               reference_rate=self.reference.event_rate if self.reference else None,
                               min_rate_ratio=self.model.min_rate_ratio, topic_partitions=topic_partitions)

    def decode(self, records: list[RawRecord]) -> tuple[DecodedBatch, list[Reject], list[tuple[int, int, int | None]]]:
        """Valid rows, rejects, and (schema id, offset, event time) where each writer schema id first shows."""
        rows: list[dict[str, Any]] = []
        offsets: list[int] = []
        times: list[int | None] = []
        rejects: list[Reject] = []
        first_seen: dict[int, tuple[int, int | None]] = {}
        time_field = self.model.time_field
        decoder = self.decoder
        for rec in records:
            decoder.last_schema_id = None
            try:
                row = decoder.decode(rec.value)
            except DecodeError as exc:
                rejects.append(Reject(rec, exc.reason, type(exc.__cause__ or exc).__name__, str(exc)))
                if decoder.last_schema_id is not None:
                    first_seen.setdefault(decoder.last_schema_id, (rec.offset, rec.timestamp_ms))
                continue
            t = event_time_ms(row.get(time_field)) if time_field else None
            t = rec.timestamp_ms if t is None else t
            if decoder.last_schema_id is not None:
                first_seen.setdefault(decoder.last_schema_id, (rec.offset, t))
            rows.append(row)
            offsets.append(rec.offset)
            times.append(t)
        batch = DecodedBatch(np.array(offsets, dtype=np.int64), times, rows)
        return batch, rejects, [(sid, off, t) for sid, (off, t) in first_seen.items()]

    def process(self, part: StreamPartition, records: list[RawRecord]) -> BatchOutcome:
        """Apply one partition's records (offset order) to its state; return alerts and rejects."""
        batch, rejects, schema_ids = self.decode(records)
        findings: list[Finding] = []
        for schema_id, offset, event_time in schema_ids:
            writer = self.decoder.writer_fields(schema_id)
            changes = schema_changes(self.expected_types, writer) if writer is not None else []
            findings += part.schema_change(schema_id, changes, offset, event_time)
        findings += part.apply(batch)
        alerts = evaluate(findings, part, self.checks)
        part.rejects += len(rejects)
        return BatchOutcome(alerts, rejects, len(batch), records[-1].offset + 1 if records else -1)

    def silence(self, part: StreamPartition, idle_s: float) -> list[Alert]:
        """VOLUME alert for a partition that has been silent too long (the daemon's wall clock)."""
        if self.model.freshness_s is None:
            return []
        return evaluate(part.silence(idle_s, self.model.freshness_s), part, self.checks)


def build_processors(
    settings: Settings, references: dict[str, ReferenceProfile] | None = None
) -> dict[str, StreamProcessor]:
    """One processor per input topic; `references` maps a model name to its active profile."""
    out = {}
    references = references or {}
    for model in settings.models:
        contract = load_contract(model.contract) if model.contract is not None else None
        for stream, conf in model.streams():
            out[conf.topic] = StreamProcessor(settings, model, stream, conf, references.get(model.name), contract)
    return out
