"""`model-monitor backtest`: retained history through the production pipeline, in memory, with injected incidents.

Rows come from a file (CSV, Parquet, Avro container) or from the model's topics (read with the daemon's own
decoder, Confluent or plain). Injected incidents change the rows at chosen event positions; every row is
then encoded as plain Avro with the model's reader schema and replayed through both stages
(`monitor.app.replay`: the same code the daemon runs) with the model's settings and reference. Nothing is
written to Redis or Kafka. The report says, per check and feature, how often it alerted on the clean part of
the replay (alerts per million values and per day) and, per injected incident, whether and how fast it was
detected, next to the trivial always-fire and never-fire baselines. The same inputs give the same report.
"""

from __future__ import annotations

import bisect
import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monitor.app.pipeline import model_budget
from monitor.app.replay import replay
from monitor.core.profiles import CategoricalProfile, NumericProfile, ReferenceProfile
from monitor.core.spec import parse_spec
from monitor.core.types import Alert, RawRecord
from monitor.errors import ConfigError
from monitor.io.avro import encode_plain, load_schema
from monitor.profile.build import read_arrow_table, read_avro_rows
from monitor.settings import ModelSettings, Settings

KINDS = {
    "shift": "values moved by `size` standard deviations (the reference's; the data's without one)",
    "scale": "deviations from the mean multiplied by `factor` (the variance by factor squared)",
    "nan_burst": "`rate` of the values set to NaN (a float field)",
    "nulls": "`rate` of the values set to null (a nullable field)",
    "stuck": "every value replaced by one repeated `value` (default: the mean)",
    "new_category": "`rate` of a categorical field's values replaced by the unseen `value`",
    "score_collapse": "the model's scores pulled towards their mean by `factor` (default 0.1): feature= defaults "
                      "to the model's score_field",
}


@dataclass(frozen=True)
class Injection:
    """`kind:feature=F,start=N[,length=L][,size=S][,factor=F][,rate=R][,value=V]`: from the N-th replayed event
    (0-based) for L events (default: to the end)."""

    text: str
    kind: str
    feature: str
    start: int
    length: int | None = None
    size: float = 1.0
    factor: float = 2.0
    rate: float = 0.3
    value: str | None = None

    @classmethod
    def parse(cls, text: str, model: ModelSettings) -> Injection:
        """e.g. `shift:feature=age,start=50000,length=20000,size=0.5`."""
        kind, args = parse_spec(text, KINDS, "--inject")
        if kind == "score_collapse":
            args.setdefault("factor", 0.1)
            if "feature" not in args:
                if model.score_field is None:
                    raise ConfigError(f"--inject {text!r}: the model has no score_field; give feature=")
                args["feature"] = model.score_field
        if "feature" not in args or "start" not in args:
            raise ConfigError(f"--inject {text!r}: needs feature= and start=")
        if args["start"] < 0 or args.get("length", 1) < 1 or not 0 < args.get("rate", 0.3) <= 1:
            raise ConfigError(f"--inject {text!r}: start >= 0, length >= 1 and 0 < rate <= 1")
        return cls(text=text, kind=kind, **args)

    def end(self, events: int) -> int:
        return events if self.length is None else min(events, self.start + self.length)


# -- reading -----------------------------------------------------------------------------------------

def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a CSV, Parquet or Avro container file, as dicts, in file order."""
    if path.suffix.lower() == ".avro":
        return read_avro_rows(path, "backtest input")
    rows: list[dict[str, Any]] = read_arrow_table(path, "backtest input").to_pylist()
    return rows


# -- the run -----------------------------------------------------------------------------------------

@dataclass
class Stream:
    name: str  # features | predictions
    topic: str
    schema: dict[str, Any]
    fields: list[str]


def _streams(model: ModelSettings, columns: set[str]) -> list[Stream]:
    """The model's feature and prediction streams whose every field without a default is in the rows."""
    out = []
    for name, conf in model.streams():
        if name == "labels" or conf.schema_path is None:
            continue
        schema = load_schema(conf.schema_path)
        fields = [f["name"] for f in schema["fields"]]
        needed = [f["name"] for f in schema["fields"] if "default" not in f and not _nullable(f["type"])]
        missing = [f for f in needed if f not in columns]
        if missing:
            if name == "features":
                raise ConfigError(f"the backtest input has no column for the features' field(s) {missing}")
            continue
        out.append(Stream(name, conf.topic, schema, fields))
    return out


def _is_enum(t: Any) -> bool:
    types = t if isinstance(t, list) else [t]
    return any(isinstance(x, dict) and x.get("type") == "enum" for x in types)


def _nullable(t: Any) -> bool:
    return isinstance(t, list) and "null" in t


def _plain(settings: Settings, model: ModelSettings) -> Settings:
    """The settings of this one model reading plain Avro (the rows are encoded again), no labels."""
    streams = {k: getattr(model, k).model_copy(update={"format": "plain"}) for k in ("features", "predictions")
               if getattr(model, k) is not None}
    only = model.model_copy(update={**streams, "labels": None})
    return settings.model_copy(update={"models": [only]})


def inject(rows: list[dict[str, Any]], injections: list[Injection], reference: ReferenceProfile | None,
           seed: int = 0) -> None:
    """Change `rows` in place as the injections say (rates drawn from a generator seeded by `seed` and the
    injection's position, so a run is repeatable)."""
    for k, inj in enumerate(injections):
        lo, hi = inj.start, inj.end(len(rows))
        if lo >= len(rows):
            raise ConfigError(f"--inject {inj.text!r}: start {lo} is past the {len(rows)} replayed events")
        if inj.feature not in rows[0] and not any(inj.feature in r for r in rows[lo:hi]):
            raise ConfigError(f"--inject {inj.text!r}: no field {inj.feature!r} in the rows")
        rng = np.random.default_rng([seed, k])
        chosen = rng.random(hi - lo) < inj.rate
        prof = reference.fields.get(inj.feature) if reference is not None else None
        if inj.kind == "new_category":
            value = inj.value or "__injected__"
            for i in np.flatnonzero(chosen).tolist():
                rows[lo + i][inj.feature] = value if isinstance(prof, CategoricalProfile) or prof is None \
                    else _like(rows[lo + i][inj.feature], value)
            continue
        if inj.kind == "nulls":
            for i in np.flatnonzero(chosen).tolist():
                rows[lo + i][inj.feature] = None
            continue
        mean, std = _moments(rows, inj.feature, prof)
        for i in range(lo, hi):
            v = rows[i].get(inj.feature)
            if v is None or isinstance(v, (str, bool)):
                continue
            x = float(v)
            if inj.kind == "shift":
                x += inj.size * std
            elif inj.kind in ("scale", "score_collapse"):
                x = mean + (x - mean) * inj.factor
            elif inj.kind == "nan_burst":
                if not chosen[i - lo]:
                    continue
                x = math.nan
            elif inj.kind == "stuck":
                x = float(inj.value) if inj.value is not None else mean
            rows[i][inj.feature] = round(x) if isinstance(v, int) and math.isfinite(x) else x


def _like(old: Any, value: str) -> Any:
    return value if isinstance(old, str) or old is None else type(old)(value)


def _moments(rows: list[dict[str, Any]], field: str, prof: Any) -> tuple[float, float]:
    """The field's mean and std: the reference's, or the replayed rows' own."""
    if isinstance(prof, NumericProfile) and prof.mean is not None and prof.std:
        return prof.mean, prof.std
    x = np.array([float(r[field]) for r in rows if isinstance(r.get(field), (int, float))
                  and not isinstance(r.get(field), bool)], dtype=float)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        raise ConfigError(f"cannot inject into {field}: fewer than two numeric values to measure")
    return float(x.mean()), float(x.std(ddof=1)) or 1.0


def records(rows: list[dict[str, Any]], streams: list[Stream], model: ModelSettings, partitions: int
            ) -> tuple[dict[tuple[str, int], list[RawRecord]], int]:
    """The rows as plain Avro records of each stream, keyed to `partitions` partitions by their id (the
    model's id_field; their position without one); also how many rows could not be encoded."""
    out: dict[tuple[str, int], list[RawRecord]] = {}
    bad = 0
    for i, row in enumerate(rows):
        key = str(row.get(model.id_field, i)) if model.id_field else str(i)
        part = zlib.crc32(key.encode()) % partitions
        stamp = _ms(row.get(model.time_field)) if model.time_field else None
        encoded = []
        try:
            for s in streams:
                encoded.append((s, encode_plain(s.schema, {f: row.get(f) for f in s.fields})))
        except (ValueError, TypeError, AttributeError, KeyError):
            bad += 1
            continue
        for s, value in encoded:
            recs = out.setdefault((s.topic, part), [])
            recs.append(RawRecord(s.topic, part, len(recs), key.encode(), value, timestamp_ms=stamp))
    return out, bad


def _ms(value: Any) -> int | None:
    import datetime as dt

    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int(value.timestamp() * 1000)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return int(value)
    return None


def run(settings: Settings, model_name: str, rows: list[dict[str, Any]], reference: ReferenceProfile | None,
        injections: Iterable[str] = (), partitions: int = 1, seed: int = 0, source: str = "") -> dict[str, Any]:
    """Replay `rows` (after the injections) and report; see the module's doc."""
    model = settings.model(model_name)
    if not rows:
        raise ConfigError("the backtest input has no rows")
    if settings.window_for(model).by != "time":
        raise ConfigError("backtest replays the model view: window.by must be 'time'")
    if not model.time_field:
        raise ConfigError(f"model {model.name}: backtest needs the model's time_field")
    parsed = [Injection.parse(t, model) for t in injections]
    rows = [dict(r) for r in rows]
    inject(rows, parsed, reference, seed)
    streams = _streams(model, set().union(*(r.keys() for r in rows[:1000])))
    for inj in parsed:
        if inj.kind == "new_category" and any(_is_enum(f["type"]) for s in streams for f in s.schema["fields"]
                                              if f["name"] == inj.feature):
            raise ConfigError(f"--inject {inj.text!r}: {inj.feature} is an Avro enum; a new symbol needs a new "
                              f"writer schema, and the reader schema would dead-letter those records "
                              f"(schema_mismatch): inject new categories into a string field")
    plain = _plain(settings, model)
    recs, unencodable = records(rows, streams, model, partitions)
    out = replay(plain, recs, {model.name: reference} if reference is not None else None)
    times = [_ms(r.get(model.time_field)) for r in rows]
    report = build_report(plain, model, out.alerts, parsed, times, reference, source=source,
                          events=len(rows), unencodable=unencodable,
                          rejects=sum(p.rejects for p in out.partitions.values()),
                          streams=[s.name for s in streams], partitions=partitions)
    budget = model_budget(plain, plain.model(model.name), reference)
    if model.alerts.false_alarms_per_day is not None:
        observed = report["clean"]["per_day"]
        report["budget"] = {"false_alarms_per_day": model.alerts.false_alarms_per_day,
                            "derived": budget.summary() if budget is not None else None,
                            "observed_per_day_clean": observed,
                            "within": None if observed is None else observed <= model.alerts.false_alarms_per_day}
    return report


def build_report(settings: Settings, model: ModelSettings, alerts: list[Alert], injections: list[Injection],
                 times: list[int | None], reference: ReferenceProfile | None, **meta: Any) -> dict[str, Any]:
    window = settings.window_for(model)
    window_ms = window.block_ms * window.blocks
    known = sorted(t for t in times if t is not None)
    if not known:
        raise ConfigError(f"no row has a time in {model.time_field}")
    events = len(times)
    # Each injection's event-time span (its first event's time to its last's) and the part of the replay it
    # can be seen in: to its end plus a window (a window still holds its events after it ends).
    spans = []
    for inj in injections:
        first = next((t for t in times[inj.start:inj.end(events)] if t is not None), None)
        last = next((t for t in reversed(times[inj.start:inj.end(events)]) if t is not None), None)
        spans.append((first, last))
    dirty = [(a, b + window_ms) for a, b in spans if a is not None and b is not None]

    def clean(t: int | None) -> bool:
        return t is not None and not any(a <= t <= b for a, b in dirty)

    clean_events = sum(1 for t in times if clean(t))
    clean_days = _clean_span_ms(known, dirty) / 86_400_000
    opened = [a for a in alerts if a.status == "OPEN"]
    per: dict[tuple[str, str], dict[str, Any]] = {}
    for a in opened:
        row = per.setdefault((a.feature, a.check), {"feature": a.feature, "check": a.check, "kind": str(a.kind),
                                                    "opened": 0, "opened_clean": 0})
        row["opened"] += 1
        row["opened_clean"] += int(clean(a.window.last_event_time))
    checks = []
    for row in sorted(per.values(), key=lambda r: (-r["opened_clean"], r["feature"], r["check"])):
        row["per_million_clean"] = _round(row["opened_clean"] / clean_events * 1e6) if clean_events else None
        row["per_day_clean"] = _round(row["opened_clean"] / clean_days) if clean_days > 0 else None
        checks.append(row)
    found = []
    for inj, (first, last) in zip(injections, spans, strict=True):
        hit = _detection(opened, inj.feature, first, last, window_ms)
        entry: dict[str, Any] = {"injection": inj.text, "kind": inj.kind, "feature": inj.feature,
                                 "start": inj.start, "end": inj.end(events), "start_time": first,
                                 "detected": hit is not None}
        if hit is not None and first is not None:
            t = int(hit.window.last_event_time or first)
            entry.update({"delay_s": _round((t - first) / 1000),
                          "delay_events": bisect.bisect_right(known, t) - bisect.bisect_left(known, first),
                          "check": hit.check, "alert_feature": hit.feature, "alert_id": hit.alert_id})
        found.append(entry)
    slots = max(1, math.ceil((known[-1] - known[0] + 1) / window.block_ms))
    total_clean = sum(r["opened_clean"] for r in checks)
    detected = sum(1 for f in found if f["detected"])
    return {
        "model": model.name, "source": meta.get("source", ""), "events": events,
        "streams": meta.get("streams", []), "partitions": meta.get("partitions", 1),
        "rejects": meta.get("rejects", 0), "unencodable": meta.get("unencodable", 0),
        "reference": None if reference is None else {
            "version": reference.version, "rows": reference.rows,
            "season": (reference.seasons or {}).get("by")},
        "window": {"block_ms": window.block_ms, "blocks": window.blocks},
        "first_event_time": known[0], "last_event_time": known[-1],
        "clean": {"events": clean_events, "days": _round(clean_days), "alerts": total_clean,
                  "per_million_values": _round(total_clean / clean_events * 1e6) if clean_events else None,
                  "per_day": _round(total_clean / clean_days) if clean_days > 0 else None},
        "checks": checks,
        "injected": found,
        "summary": {"detected": detected, "injected": len(found),
                    "median_delay_s": _round(float(np.median([f["delay_s"] for f in found if f["detected"]])))
                    if detected else None},
        "baselines": {
            # An alarm at every slot on every check finds every incident at the first slot after it starts,
            # and raises one alert per slot per check on the clean part; one that never fires finds nothing.
            "always_fire": {"detected": len(found), "delay_s": _round(window.block_ms / 1000),
                            "per_million_values_per_check": _round(slots / events * 1e6),
                            "per_day_per_check": _round(86_400_000 / window.block_ms)},
            "never_fire": {"detected": 0, "delay_s": None, "per_million_values_per_check": 0.0,
                           "per_day_per_check": 0.0},
        },
    }


def _detection(opened: list[Alert], feature: str, first: int | None, last: int | None, window_ms: int
               ) -> Alert | None:
    """The first OPEN alert that names the feature (as its feature, or among a model incident's features)
    whose window ends inside the injection's span plus one window."""
    if first is None or last is None:
        return None
    for a in opened:
        t = a.window.last_event_time
        if t is None or not first <= t <= last + window_ms:
            continue
        named = a.feature == feature or feature in a.evidence.get("features", "").split(", ")
        if named:
            return a
    return None


def _clean_span_ms(known: list[int], dirty: list[tuple[int, int]]) -> float:
    """Event time of the replay outside the injections' spans (plus a window each)."""
    lo, hi = known[0], known[-1]
    merged: list[list[int]] = []
    for a, b in sorted(dirty):
        a, b = max(a, lo), min(b, hi)
        if a > b:
            continue
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    covered = sum(b - a for a, b in merged)
    return float(max(0, hi - lo - covered))


def _round(x: float) -> float:
    return float(f"{x:.6g}")


# -- reading the model's topics ---------------------------------------------------------------------

def topic_rows(settings: Settings, model_name: str, since_ms: int | None = None, until_ms: int | None = None,
               max_events: int | None = None, start_offset: int | None = None, end_offset: int | None = None
               ) -> tuple[list[dict[str, Any]], int, str]:
    """The model's feature events retained in Kafka, decoded by the daemon's decoder, each with its
    prediction's fields when the model has a predictions topic and an id_field. The range: from `since_ms`
    (record timestamps) or `start_offset` (in every partition), else the start of the log, to `until_ms` or
    `end_offset` (exclusive, every partition), else the log's end when called; the predictions read are those
    within a minute of the features' record timestamps. Returns the rows in event-time order, how many
    records did not decode, and a description of the range."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    from monitor.app.pipeline import _reader_and_decoder
    from monitor.errors import DecodeError

    model = settings.model(model_name)
    # Partition EOF events end the read at the log's end even when its last offsets are transaction markers.
    consumer = Consumer({**settings.consumer_config(), "group.id": f"model-monitor-backtest-{model.name}",
                         "enable.partition.eof": True})
    bad = 0
    described = []

    def read(conf: Any, since: int | None, until: int | None, first: int | None, last: int | None
             ) -> list[tuple[int, int, int, dict[str, Any]]]:
        nonlocal bad
        _, decoder = _reader_and_decoder(settings, conf)
        md = consumer.list_topics(conf.topic, timeout=15).topics.get(conf.topic)
        if md is None or md.error is not None or not md.partitions:
            raise ConfigError(f"topic {conf.topic} cannot be read: {md.error if md is not None else 'no metadata'}")
        starts, ends = {}, {}
        for p in md.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(conf.topic, p), timeout=15)
            starts[p] = low if first is None else min(max(low, first), high)
            ends[p] = high if last is None else max(min(high, last), starts[p])
        if since is not None:
            found = consumer.offsets_for_times([TopicPartition(conf.topic, p, since) for p in md.partitions],
                                               timeout=15)
            for tp in found:
                starts[tp.partition] = ends[tp.partition] if tp.offset < 0 else max(tp.offset, starts[tp.partition])
        todo = {p for p in md.partitions if starts[p] < ends[p]}
        consumer.assign([TopicPartition(conf.topic, p, starts[p]) for p in md.partitions])
        out: list[tuple[int, int, int, dict[str, Any]]] = []
        while todo and (max_events is None or len(out) < max_events):
            for msg in consumer.consume(1000, 1.0):
                p, offset = msg.partition(), msg.offset()
                if p is None or p not in todo:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        todo.discard(p)
                    continue
                if offset is None:
                    continue
                stamp = msg.timestamp()[1]
                if offset >= ends[p] - 1 or (until is not None and stamp > until):
                    todo.discard(p)
                if offset >= ends[p] or (until is not None and stamp > until):
                    continue
                try:
                    out.append((stamp, p, offset, decoder.decode(msg.value())))
                except DecodeError:
                    bad += 1
        consumer.unassign()
        described.append(f"{conf.topic} ({len(out)} records)")
        return out

    try:
        features = read(model.features, since_ms, until_ms, start_offset, end_offset)
        predictions: list[tuple[int, int, int, dict[str, Any]]] = []
        if model.predictions is not None and model.id_field and features:
            stamps = [r[0] for r in features]
            predictions = read(model.predictions, min(stamps) - 60_000, max(stamps) + 60_000, None, None)
    finally:
        consumer.close()
    by_id = {str(r[3].get(model.id_field)): r[3] for r in predictions} if model.id_field else {}
    # In event-time order (the record timestamp without one), then partition and offset: as the events happened,
    # whatever clock the producers stamped the records with.
    features.sort(key=lambda r: (_ms(r[3].get(model.time_field)) or r[0] if model.time_field else r[0], r[1], r[2]))
    rows = []
    for _stamp, _p, _offset, row in features[:max_events]:
        pred = by_id.get(str(row.get(model.id_field))) if model.id_field else None
        rows.append({**pred, **row} if pred else row)
    return rows, bad, ", ".join(described)
