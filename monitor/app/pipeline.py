"""The pure core: decode a partition's records, update its state, evaluate checks.

`StreamProcessor.process` returns alerts and rejects as values; Kafka and Redis stay outside.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import structlog

from monitor.core.budget import Budget, derive
from monitor.core.columns import event_time_ms
from monitor.core.evaluate import evaluate
from monitor.core.labels import LabelPartition, LabelRow
from monitor.core.model import ModelStream
from monitor.core.multivariate import MV_FIELD, Multivariate, multivariate_checks
from monitor.core.partition import (
    DecodedBatch,
    Finding,
    StreamPartition,
    TimeCheck,
)
from monitor.core.profiles import (
    OTHER_SEGMENT,
    Contract,
    FieldContract,
    FieldProfile,
    ReferenceProfile,
    segment_values,
)
from monitor.core.schema import FieldSpec, field_types, infer_fields, schema_changes
from monitor.core.seasons import SeasonalReference
from monitor.core.types import Alert, RawRecord, Reject
from monitor.errors import ConfigError, DecodeError
from monitor.io.avro import AvroDecoder, load_schema, registry_lookup
from monitor.io.columnar import ColumnarDecoder, Unsupported
from monitor.io.join import Prediction, encode_prediction
from monitor.profile.contract import load_contract
from monitor.settings import CheckSettings, ModelSettings, Settings, StreamSettings, WindowSettings

log = structlog.get_logger("monitor.pipeline")


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    alerts: list[Alert]
    rejects: list[Reject]
    valid: int
    next_offset: int
    join_entries: dict[str, tuple[bytes, int]] = field(default_factory=dict)  # predictions waiting for labels
    label_lags_ms: list[int] = field(default_factory=list)
    blocks: list[dict[str, Any]] = field(default_factory=list)  # block summaries for the model stage


def _reader_and_decoder(settings: Settings, conf: StreamSettings) -> tuple[dict[str, Any], AvroDecoder]:
    """A topic's reader schema (its fields are what we monitor) and the decoder for its wire format."""
    if conf.schema_path is None:
        raise ConfigError(f"{conf.topic}: a reader schema (.avsc) is needed to know the fields")
    reader = load_schema(conf.schema_path)
    lookup = registry_lookup(settings.schema_registry) if conf.format == "confluent" else None
    return reader, AvroDecoder(reader, wire_format=conf.format, lookup=lookup,
                               max_payload_bytes=settings.max_payload_bytes)


class _ReferenceUser:
    """A processor that bins, standardises or compares with the model's active reference profile."""

    reference: ReferenceProfile | None = None

    def set_reference(self, reference: ReferenceProfile | None) -> None:
        """Use a (new) reference profile; partitions created from now on use it."""
        self.reference = reference

    @property
    def reference_version(self) -> str | None:
        return None if self.reference is None else self.reference.version


class StreamProcessor(_ReferenceUser):
    """Everything needed to monitor one topic of one model (its features or its predictions)."""

    def __init__(self, settings: Settings, model: ModelSettings, stream: str, conf: StreamSettings,
                 reference: ReferenceProfile | None = None, contract: Contract | None = None,
                 check_counts: tuple[int, int] | None = None) -> None:
        self.model = model
        self.stream = stream
        self.topic = conf.topic
        self.model_view = settings.model_view
        self.partition_alerts = settings.partition_alerts
        reader, self.decoder = _reader_and_decoder(settings, conf)
        try:  # the compiled decoder straight to columns; fastavro's rows for schemas it does not read
            self.columnar: ColumnarDecoder | None = ColumnarDecoder(self.decoder)
            self.decoder_kind = "compiled"
        except Unsupported as exc:
            self.columnar = None
            self.decoder_kind = f"fastavro ({exc})"
        skip = {f for f in (model.id_field, model.time_field, model.version_field) if f}
        # The stream's own fields; `fields` adds the derived multivariate one while the reference has it.
        self.base_fields: list[FieldSpec] = infer_fields(
            reader, skip=skip, monitor=conf.monitor, exclude=conf.exclude, categorical=conf.categorical
        )
        self.fields: list[FieldSpec] = list(self.base_fields)
        self.multivariate: Multivariate | None = None
        self.checks: dict[str, CheckSettings] = {f.name: settings.checks_for(model, f.name) for f in self.fields}
        self.checks[MV_FIELD] = multivariate_checks(settings.defaults)
        self._base_checks = dict(self.checks)  # before a false-alarm budget (`set_reference`)
        # The model's checks sharing its budget (given by `build_processors`, counted once per model).
        self._check_counts = check_counts if check_counts is not None else model_check_counts(settings, model)
        self.seasons: SeasonalReference | None = None
        self.window = settings.window_for(model)
        self.limits = settings.limits
        self.numeric_names = [f.name for f in self.base_fields if f.kind == "numeric"]
        self.string_names = [f.name for f, base in ((f, _base(reader, f.name)) for f in self.base_fields)
                             if base in ("string", "enum")]
        if contract is None and model.contract is not None:
            contract = load_contract(model.contract)
        self.contract = contract
        expected = field_types(reader)
        if contract is not None:
            expected.update({n: c.avro_type for n, c in contract.fields.items() if c.avro_type and n in expected})
        self.expected_types = expected
        self.set_reference(reference)

    def set_reference(self, reference: ReferenceProfile | None) -> None:
        """Use a (new) reference profile; partitions created from now on use it, its season profiles of this
        stream's fields (if any), and the thresholds a false-alarm budget derives from its event rate."""
        self.reference = reference
        self.multivariate = self._multivariate(reference)
        self.fields = self.base_fields + ([FieldSpec(MV_FIELD, "numeric", True)] if self.multivariate else [])
        names = {f.name for f in self.base_fields}
        self.seasons = None if reference is None else SeasonalReference.of(
            reference.seasons, {k: v for k, v in reference.fields.items() if k in names})
        self.checks, _budget = budgeted_checks(self.model, self._base_checks, reference, self.window,
                                               self._check_counts)

    def _multivariate(self, reference: ReferenceProfile | None) -> Multivariate | None:
        """The reference's PCA, when this is the features stream, the model turned the check on and the fields
        it was fitted on are numeric fields of this stream."""
        if self.stream != "features" or not self.model.multivariate.enabled or reference is None \
                or not reference.multivariate:
            return None
        mv = Multivariate.from_dict(reference.multivariate)
        numeric = {f.name for f in self.base_fields if f.kind == "numeric"}
        if not set(mv.fields) <= numeric:
            log.warning("multivariate.fields_differ", model=self.model.name, reference=reference.version,
                        missing=sorted(set(mv.fields) - numeric))
            return None
        return mv

    def _profiles(self, segment: str | None = None
                  ) -> tuple[dict[str, FieldProfile] | None, dict[str, FieldContract] | None, float | None]:
        """This stream's reference profiles (a segment's own where the reference has them), contract and CBPE
        reference accuracy."""
        names = {f.name for f in self.fields}
        ref = {k: v for k, v in self.reference.fields.items() if k in names} if self.reference else None
        if ref is not None and segment is not None and self.reference is not None:
            ref.update({k: v for k, v in self.reference.segment_profiles(segment).items() if k in names})
        if ref is not None and self.multivariate is not None and self.reference is not None:
            mv_profile = self.reference.multivariate_profile()
            if mv_profile is not None:
                ref[MV_FIELD] = mv_profile
        contract = ({k: v for k, v in self.contract.fields.items() if k in names}
                    if self.contract is not None else None)
        perf = self.reference.performance if self.reference is not None else None
        cbpe = (perf or {}).get("expected_accuracy") if self.model.performance.cbpe else None
        return ref, contract, cbpe if self._scored else None

    @property
    def _scored(self) -> bool:
        return self.stream == "predictions" and self.model.type == "classifier"

    def new_model_stream(self, expected_partitions: int = 0, segment: str | None = None) -> ModelStream:
        """Stage 2's merged view of this stream over all its input partitions (how many, if known); with
        `segment`, of that segment's events (its slots close when the stream's do)."""
        ref, contract, cbpe = self._profiles(segment)
        fields, checks = (self.fields, self.checks) if segment is None else self.segment_view()
        return ModelStream(self.model.name, self.stream, self.topic, fields, checks, self.window,
                           self.model_view, reference=ref, ref_version=self.reference_version, contract=contract,
                           sentinels=self.model.sentinels,
                           id_field=self.model.id_field if self.stream == "features" and
                           self.model.uniqueness_memory > 0 else None,
                           max_duplicate_rate=self.model.max_duplicate_rate,
                           reference_rate=self.reference.event_rate if self.reference else None,
                           min_rate_ratio=self.model.min_rate_ratio, cbpe_reference=cbpe,
                           cbpe_min_drop=self.model.performance.cbpe_min_drop,
                           cbpe_min_window=self.model.performance.cbpe_min_window, freshness_s=self.model.freshness_s,
                           expected_partitions=expected_partitions, time_check=self._time_check(),
                           seasons=self.seasons, send_possible=self.model.alerts.send_possible, segment=segment)

    def _time_check(self) -> TimeCheck | None:
        """Event-time bounds (time windows only: blocks by count do not follow event time)."""
        if self.window.by != "time":
            return None
        return TimeCheck(self.model.time_field or "*", int(self.window.max_lateness_s * 1000),
                         int(self.window.max_future_s * 1000), self.model.max_bad_time_rate)

    def segments(self) -> list[tuple[str, list[str]]]:
        """(field, the values with a view of their own) of the model's segments: the reference's most frequent
        values of each (none without a reference)."""
        if self.stream != "features" or not self.model.segments or self.reference is None:
            return []
        return [(name, segment_values(self.reference, name, self.model.max_segments)) for name in self.model.segments]

    def segment_labels(self) -> list[str]:
        return [label for name, values in self.segments() for label in
                [*(f"{name}={v}" for v in values), f"{name}={OTHER_SEGMENT}"]]

    def segment_view(self) -> tuple[list[FieldSpec], dict[str, CheckSettings]]:
        """A segment's fields (the stream's, without the segment fields) and checks: its windows need
        min_segment_count events, and the drift tests' false-discovery rate (and budget) is split over the
        segments (Bonferroni across segments, Benjamini-Hochberg across the features of each)."""
        skip = set(self.model.segments)
        fields = [f for f in self.base_fields if f.name not in skip]
        n = max(len(self.segment_labels()), 1)
        least = self.model.min_segment_count
        checks = {}
        for f in fields:
            c = self.checks[f.name]
            drift = c.drift.model_copy(update={"fdr": c.drift.fdr / n, "min_window_count":
                                               max(c.drift.min_window_count, least),
                                               "p_max": None if c.drift.p_max is None else c.drift.p_max / n})
            checks[f.name] = c.model_copy(update={"min_window_count": max(c.min_window_count, least),
                                                  "drift": drift,
                                                  "cusum": c.cusum.model_copy(update={"enabled": False})})
        return fields, checks

    def new_partition(self, partition: int, topic_partitions: int = 1) -> StreamPartition:
        part = self._new_partition(partition, topic_partitions)
        segments = self.segments() if self.model_view.enabled else []
        if segments:
            fields, checks = self.segment_view()
            for name, values in segments:
                labels = {v: f"{name}={v}" for v in values}
                other = f"{name}={OTHER_SEGMENT}"
                part.add_segment(name, labels, other, {label: self._new_partition(partition, topic_partitions,
                                                                                   fields, checks, label)
                                                       for label in [*labels.values(), other]})
        return part

    def _new_partition(self, partition: int, topic_partitions: int = 1, fields: list[FieldSpec] | None = None,
                       checks: dict[str, CheckSettings] | None = None, segment: str | None = None
                       ) -> StreamPartition:
        """A partition of the stream, or of one of its segments (`segment`: a child of the stream's)."""
        child = segment is not None
        ref, contract, cbpe = self._profiles(segment)
        scored = self._scored and not child
        fields = self.fields if fields is None else fields
        checks = self.checks if checks is None else checks
        return StreamPartition(self.model.name, self.stream, self.topic, partition, fields, checks,
                               self.window, reference=ref, ref_version=self.reference_version,
                               contract=contract, sentinels=self.model.sentinels,
                               version_field=self.model.version_field, id_field=self.model.id_field,
                               uniqueness_memory=self.model.uniqueness_memory if self.stream == "features" and
                               not child else 0,
                               max_duplicate_rate=self.model.max_duplicate_rate,
                               reference_rate=self.reference.event_rate if self.reference else None,
                               min_rate_ratio=self.model.min_rate_ratio, topic_partitions=topic_partitions,
                               score_field=self.model.score_field if scored else None,
                               decision_threshold=self.model.decision_threshold,
                               cbpe_reference=cbpe,
                               cbpe_min_drop=self.model.performance.cbpe_min_drop,
                               cbpe_min_window=self.model.performance.cbpe_min_window,
                               emit_blocks=self.model_view.enabled, evaluate=self.partition_alerts and not child,
                               time_check=None if child else self._time_check(), seasons=self.seasons,
                               multivariate=None if child else self.multivariate)

    def decode(self, records: list[RawRecord]) -> tuple[DecodedBatch, list[Reject], list[tuple[int, int, int | None]]]:
        """Valid records, rejects, and (schema id, offset, event time) where each writer schema id first shows."""
        if self.columnar is not None:
            return self._decode_columns(records)
        return self._decode_rows(records)

    def _decode_columns(self, records: list[RawRecord]
                        ) -> tuple[DecodedBatch, list[Reject], list[tuple[int, int, int | None]]]:
        """The compiled decoder's columns; the same rejects, in the same order, as `_decode_rows`."""
        out = self.columnar.decode([rec.value for rec in records])  # type: ignore[union-attr]
        n = len(records)
        stamps = [rec.timestamp_ms for rec in records]
        time_field = self.model.time_field
        if time_field and time_field in out.columns:
            t_values, t_present = out.columns[time_field].event_times()
        else:
            t_values, t_present = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
        times: list[int | None] = [t if ok else s for t, ok, s in zip(t_values.tolist(), t_present.tolist(), stamps,
                                                                         strict=True)]
        bad: dict[int, Reject] = {i: Reject(records[i], exc.reason, type(exc.__cause__ or exc).__name__, str(exc))
                                  for i, exc in out.errors.items()}
        first_seen: dict[int, tuple[int, int | None]] = {}
        ids = out.schema_ids
        for sid in dict.fromkeys(ids[ids >= 0].tolist()):  # Confluent wire format: each writer schema's first
            rows = np.flatnonzero(ids == sid)
            failed, decoded = rows[~out.valid[rows]], rows[out.valid[rows]]
            writer = self.decoder.writer_fields(sid)
            if writer is not None and len(writer) > self.limits.max_fields:
                for i in decoded.tolist():
                    bad[i] = Reject(records[i], "too_many_fields", "LimitExceeded",
                                    f"writer schema has {len(writer)} fields (limit {self.limits.max_fields})")
                rows = failed
            if len(rows):
                first = int(rows[0])
                first_seen[sid] = (records[first].offset, times[first] if out.valid[first] else stamps[first])
        keep = np.flatnonzero(out.valid)
        keep = keep[[i not in bad for i in keep.tolist()]] if bad else keep
        rejects = [bad[i] for i in sorted(bad)]
        offsets = np.array([rec.offset for rec in records], dtype=np.int64)
        if len(keep) == n:  # every record (the usual batch): the columns as decoded
            batch = DecodedBatch(offsets, times, None, stamps, out.columns)
        else:
            kept = keep.tolist()
            batch = DecodedBatch(offsets[keep], [times[i] for i in kept], None, [stamps[i] for i in kept],
                                 {name: col.take(keep) for name, col in out.columns.items()})
        batch, limit_rejects = self._enforce_limits(batch, records)
        rejects += limit_rejects  # after the decoding rejects
        order = sorted(first_seen.items(), key=lambda kv: kv[1][0])
        return batch, rejects, [(sid, off, t) for sid, (off, t) in order]

    def _enforce_limits(self, batch: DecodedBatch, records: list[RawRecord]) -> tuple[DecodedBatch, list[Reject]]:
        """Decoded but unusable: wrong model, a value or string beyond the hard limits (checked per column, the
        first failing check of each record named); the batch without them, and their rejects in offset order."""
        if not len(batch):
            return batch, []
        bad: dict[int, tuple[str, str]] = {}
        m = self.model
        if m.model_field and m.model_id is not None:
            codes, names = batch.categories(m.model_field)  # str() of each value; a missing one is "None"
            ok = np.array([name == m.model_id for name in names] + [m.model_id == "None"])
            for i in np.flatnonzero(~ok[np.where(codes >= 0, codes, len(names))]).tolist():
                bad.setdefault(i, ("unknown_model", f"{m.model_field} is not {m.model_id}"))
        limit = self.limits.max_abs_value
        values = batch.numeric_matrix(self.numeric_names)  # converted once for the limits and the features
        with np.errstate(invalid="ignore"):
            over = np.isfinite(values) & (np.abs(values) > limit)
        if over.any():
            for k in np.flatnonzero(over.any(axis=1)).tolist():
                name = self.numeric_names[k]
                for i in np.flatnonzero(over[k]).tolist():
                    bad.setdefault(i, ("value_too_large", f"{name} exceeds +-{limit:g}"))
        max_len = self.limits.max_string_length
        for name in self.string_names:
            for i in batch.longer_than(name, max_len):
                bad.setdefault(i, ("string_too_long", f"{name} is longer than {max_len} characters"))
        if not bad:
            return batch, []
        by_offset = {rec.offset: rec for rec in records}
        rejects = [Reject(by_offset[int(batch.offsets[i])], reason, "LimitExceeded", message)
                   for i, (reason, message) in sorted(bad.items())]
        return batch.take(np.array([i for i in range(len(batch)) if i not in bad], dtype=np.int64)), rejects

    def _decode_rows(self, records: list[RawRecord]
                     ) -> tuple[DecodedBatch, list[Reject], list[tuple[int, int, int | None]]]:
        """fastavro, record by record, to dicts."""
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
            if decoder.last_schema_id is not None and decoder.last_schema_id not in first_seen:
                writer = decoder.writer_fields(decoder.last_schema_id)
                if writer is not None and len(writer) > self.limits.max_fields:
                    rejects.append(Reject(rec, "too_many_fields", "LimitExceeded",
                                          f"writer schema has {len(writer)} fields (limit {self.limits.max_fields})"))
                    continue
            t = event_time_ms(row.get(time_field)) if time_field else None
            t = rec.timestamp_ms if t is None else t
            if decoder.last_schema_id is not None:
                first_seen.setdefault(decoder.last_schema_id, (rec.offset, t))
            rows.append(row)
            offsets.append(rec.offset)
            times.append(t)
        stamps = {rec.offset: rec.timestamp_ms for rec in records}
        batch = DecodedBatch(np.array(offsets, dtype=np.int64), times, rows, [stamps[o] for o in offsets])
        batch, limit_rejects = self._enforce_limits(batch, records)
        return batch, rejects + limit_rejects, [(sid, off, t) for sid, (off, t) in first_seen.items()]

    def process(self, part: StreamPartition, records: list[RawRecord]) -> BatchOutcome:
        """Apply one partition's records (offset order) to its state; return alerts and rejects."""
        batch, rejects, schema_ids = self.decode(records)
        findings: list[Finding] = []
        for schema_id, offset, event_time in schema_ids:
            writer = self.decoder.writer_fields(schema_id)
            changes = schema_changes(self.expected_types, writer) if writer is not None else []
            findings += part.schema_change(schema_id, changes, offset, event_time)
        findings += part.apply(batch)
        alerts = evaluate(findings, part, self.checks) if self.partition_alerts else []
        part.rejects += len(rejects)
        return BatchOutcome(alerts, rejects, len(batch), records[-1].offset + 1 if records else -1,
                            self._join_entries(batch), blocks=_drain(part))

    def _join_entries(self, batch: DecodedBatch) -> dict[str, tuple[bytes, int]]:
        """Predictions of a model with labels, keyed by event id, for the join store."""
        m = self.model
        if self.stream != "predictions" or m.labels is None or m.id_field is None or m.prediction_field is None:
            return {}
        out = {}
        n = len(batch)
        ids, preds = batch.values(m.id_field), batch.values(m.prediction_field)
        scores = batch.values(m.score_field) if m.score_field else [None] * n
        versions = batch.values(m.version_field) if m.version_field else [None] * n
        for event_id, pred, score, version, t in zip(ids, preds, scores, versions, batch.event_times, strict=True):
            if event_id is None or pred is None:
                continue
            value = encode_prediction((score, float(pred), t, None if version is None else str(version)))
            out[str(event_id)] = (value, t if t is not None else 0)
        return out

    def silence(self, part: StreamPartition, idle_s: float,
                position: int | None = None) -> tuple[list[Alert], list[dict[str, Any]]]:
        """VOLUME alerts and signal blocks for a partition silent too long (the daemon's wall clock);
        `position`: where a partition that never delivered an event is (`StreamPartition.silence`)."""
        if self.model.freshness_s is None:
            return [], []
        findings = part.silence(idle_s, self.model.freshness_s, position)
        alerts = evaluate(findings, part, self.checks) if self.partition_alerts else []
        return alerts, _drain(part)


def _drain(part: StreamPartition) -> list[dict[str, Any]]:
    """The block summaries and signals the last update produced, handed over once, numbered in order."""
    return part.take_emitted()


def _base(schema: dict[str, Any], name: str) -> str | None:
    for f in schema.get("fields", []):
        if f["name"] == name:
            t = f["type"]
            if isinstance(t, list):
                t = next((x for x in t if x != "null"), None)
            if isinstance(t, dict):
                t = t.get("type")
            return t if isinstance(t, str) else None
    return None


class LabelProcessor(_ReferenceUser):
    """The labels topic of a model: decode labels, join them to stored predictions, track performance."""

    stream = "labels"

    def __init__(self, settings: Settings, model: ModelSettings, conf: StreamSettings,
                 reference: ReferenceProfile | None = None) -> None:
        self.model = model
        self.topic = conf.topic
        reader, self.decoder = _reader_and_decoder(settings, conf)
        names = set(field_types(reader))
        for needed in (model.id_field, model.label_field):
            if needed not in names:
                raise ConfigError(f"{conf.topic}: the labels schema has no field {needed!r}")
        self.checks: dict[str, CheckSettings] = {}
        self.set_reference(reference)

    def new_partition(self, partition: int, topic_partitions: int = 1) -> LabelPartition:
        perf = self.reference.performance if self.reference is not None else None
        block = perf["block"] if perf and perf.get("type") == self.model.type else None
        return LabelPartition(self.model.name, self.topic, partition, self.model.type, self.model.performance,
                              block)

    def decode(self, records: list[RawRecord]) -> tuple[list[LabelRow], list[Reject]]:
        rows, rejects = [], []
        m = self.model
        for rec in records:
            try:
                row = self.decoder.decode(rec.value)
                event_id, label = row.get(m.id_field or ""), row.get(m.label_field)
                if event_id is None or label is None:
                    raise DecodeError("missing_field", f"a label needs {m.id_field} and {m.label_field}")
                try:
                    value = float(label)
                except (TypeError, ValueError) as exc:
                    raise DecodeError("bad_label", f"{m.label_field} is not a number") from exc
                if not math.isfinite(value):
                    raise DecodeError("bad_label", f"{m.label_field} is not finite")
            except DecodeError as exc:
                rejects.append(Reject(rec, exc.reason, type(exc.__cause__ or exc).__name__, str(exc)))
                continue
            t = event_time_ms(row.get(m.label_time_field)) if m.label_time_field else None
            rows.append(LabelRow(str(event_id), value, rec.timestamp_ms if t is None else t, rec.offset))
        return rows, rejects

    def ids_needed(self, part: LabelPartition, records: list[RawRecord]) -> tuple[list[LabelRow], list[Reject],
                                                                                   list[str]]:
        rows, rejects = self.decode(records)
        return rows, rejects, part.ids_needed(rows)

    def process_labels(self, part: LabelPartition, rows: list[LabelRow], rejects: list[Reject],
                       lookups: dict[str, Prediction], next_offset: int,
                       predictions_time: int | None = None) -> BatchOutcome:
        """`predictions_time`: how far every predictions partition has been read (`LabelPartition.apply`)."""
        result = part.apply(rows, lookups, predictions_time)
        part.rejects += len(rejects)
        alerts = evaluate(result.findings, part, self.checks)
        return BatchOutcome(alerts, rejects, len(rows), next_offset, label_lags_ms=result.lags_ms)

    def process(self, part: LabelPartition, records: list[RawRecord],
                lookups: dict[str, Prediction] | None = None) -> BatchOutcome:
        """Without `lookups` (tests, replay): every prediction is assumed absent."""
        rows, rejects = self.decode(records)
        return self.process_labels(part, rows, rejects, lookups or {},
                                   records[-1].offset + 1 if records else -1)

    def silence(self, part: LabelPartition, idle_s: float) -> tuple[list[Alert], list[dict[str, Any]]]:
        return [], []  # labels come in bursts, late by design: no freshness alert


AnyProcessor = StreamProcessor | LabelProcessor


def model_check_counts(settings: Settings, model: ModelSettings) -> tuple[int, int]:
    """The model's statistical checks sharing a false-alarm budget: drift tests (every monitored field of
    its features and predictions) and CUSUMs (its numeric fields, where enabled)."""
    drift = cusum = 0
    skip = {f for f in (model.id_field, model.time_field, model.version_field) if f}
    for stream, conf in model.streams():
        if stream == "labels" or conf.schema_path is None:
            continue
        for spec in infer_fields(load_schema(conf.schema_path), skip=skip, monitor=conf.monitor,
                                 exclude=conf.exclude, categorical=conf.categorical):
            checks = settings.checks_for(model, spec.name)
            drift += int(checks.drift.enabled)
            cusum += int(spec.kind == "numeric" and checks.cusum.enabled)
    return drift, cusum


def budgeted_checks(model: ModelSettings, base: dict[str, CheckSettings], reference: ReferenceProfile | None,
                    window: WindowSettings, counts: tuple[int, int]
                    ) -> tuple[dict[str, CheckSettings], Budget | None]:
    """The features' settings under the model's `alerts.false_alarms_per_day` (`monitor.core.budget`): each
    gets the derived CUSUM h and drift p-value ceiling unless its own override sets them. Without a budget,
    a reference event rate or time slots, the settings as they are."""
    per_day = model.alerts.false_alarms_per_day
    if per_day is None or reference is None or not reference.event_rate or window.by != "time":
        return dict(base), None
    budgets: dict[float, Budget] = {}
    out: dict[str, CheckSettings] = {}
    budget: Budget | None = None
    for name, checks in base.items():
        k = checks.cusum.k
        if k not in budgets:
            budgets[k] = derive(per_day, reference.event_rate, window.block_ms, counts[0], counts[1], k)
        budget = budgets[k]
        own = model.overrides.get(name, {})
        cusum = checks.cusum if "h" in (own.get("cusum") or {}) else checks.cusum.model_copy(
            update={"h": budget.cusum_h})
        drift = checks.drift if "p_max" in (own.get("drift") or {}) else checks.drift.model_copy(
            update={"p_max": budget.drift_p_max})
        out[name] = checks.model_copy(update={"cusum": cusum, "drift": drift})
    if budget is None:
        budget = derive(per_day, reference.event_rate, window.block_ms, counts[0], counts[1], 0.5)
    return out, budget


def model_budget(settings: Settings, model: ModelSettings, reference: ReferenceProfile | None) -> Budget | None:
    """The thresholds the model's false-alarm budget derives with this reference (default allowance k), or
    None without one (`budgeted_checks`)."""
    if model.alerts.false_alarms_per_day is None:
        return None
    base = {"*": settings.defaults}
    return budgeted_checks(model, base, reference, settings.window_for(model), model_check_counts(settings, model))[1]


def build_processors(
    settings: Settings, references: dict[str, ReferenceProfile] | None = None
) -> dict[str, AnyProcessor]:
    """One processor per input topic; `references` maps a model name to its active profile."""
    out: dict[str, AnyProcessor] = {}
    references = references or {}
    for model in settings.models:
        contract = load_contract(model.contract) if model.contract is not None else None
        counts = model_check_counts(settings, model)
        for stream, conf in model.streams():
            if stream == "labels":
                out[conf.topic] = LabelProcessor(settings, model, conf, references.get(model.name))
            else:
                out[conf.topic] = StreamProcessor(settings, model, stream, conf, references.get(model.name),
                                                  contract, counts)
        known = {f.name for p in out.values() if isinstance(p, StreamProcessor) and p.model is model
                 for f in p.fields}
        for name in sorted(set(model.overrides) - known):
            close = difflib.get_close_matches(name, sorted(known), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; its fields: {', '.join(sorted(known))}"
            raise ConfigError(f"overrides of model {model.name!r} name {name!r}, which is not one of its "
                              f"monitored fields{hint}")
    return out
