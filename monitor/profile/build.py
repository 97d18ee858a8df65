"""Reference profiles (the metadata store) built once from training data: CSV, Parquet or Avro files.

A profile keeps binned statistics, never raw rows: quantile bin edges and fractions, moments, null/NaN
and sentinel rates per numeric field; top-category frequencies per categorical field.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from monitor.core.categories import category_texts
from monitor.core.columns import to_number
from monitor.core.labels import classifier_block, metrics, regressor_block
from monitor.core.multivariate import fit as fit_multivariate
from monitor.core.profiles import (
    OTHER_SEGMENT,
    CategoricalProfile,
    FieldProfile,
    NumericProfile,
    ReferenceProfile,
    segment_values,
)
from monitor.core.schema import FieldSpec
from monitor.core.seasons import DEFAULT_MIN_ROWS, SEASONS, season_profile
from monitor.errors import ConfigError

MAX_BINS = 50
TOP_CATEGORIES = 50


# -- building --------------------------------------------------------------------------------------


def quantile_edges(values: np.ndarray, max_bins: int = MAX_BINS) -> np.ndarray:
    """Interior bin edges: quantiles for continuous data, midpoints between values for discrete data.

    >>> quantile_edges(np.array([1.0, 1.0, 2.0, 3.0, 3.0, 3.0])).tolist()
    [1.5, 2.5]
    """
    if len(values) == 0:
        return np.zeros(0)
    distinct = np.unique(values)
    if len(distinct) <= max_bins:
        midpoints: np.ndarray = 0.5 * (distinct[:-1] + distinct[1:])
        return midpoints
    qs = np.quantile(values, np.linspace(0.0, 1.0, max_bins + 1)[1:-1])
    edges: np.ndarray = np.unique(qs)
    return edges


def bin_index(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Bin of each value: 0 below the first interior edge, len(edges) at or above the last."""
    return np.searchsorted(edges, values, side="right")


def profile_numeric(values: np.ndarray, null: np.ndarray, sentinels: list[float]) -> NumericProfile:
    n = len(values)
    present = values[~null]
    nan = ~np.isfinite(present)
    is_sentinel = np.isin(present, sentinels) if sentinels else np.zeros(len(present), bool)
    clean = present[~nan & ~is_sentinel]
    edges = quantile_edges(clean)
    fractions = (np.bincount(bin_index(edges, clean), minlength=len(edges) + 1) / len(clean)
                 if len(clean) else np.zeros(len(edges) + 1))
    return NumericProfile(
        kind="numeric",
        count=n,
        null_rate=float(null.sum() / n) if n else 0.0,
        nan_rate=float(nan.sum() / n) if n else 0.0,
        sentinel_rate=float(is_sentinel.sum() / n) if n else 0.0,
        sentinels=[float(s) for s in sentinels],
        min=float(clean.min()) if len(clean) else None,
        max=float(clean.max()) if len(clean) else None,
        mean=float(clean.mean()) if len(clean) else None,
        std=float(clean.std(ddof=1)) if len(clean) > 1 else None,
        edges=edges.tolist(),
        fractions=fractions.tolist(),
        top_share=float(np.unique(clean, return_counts=True)[1].max() / len(clean)) if len(clean) else None,
    )


def profile_categorical(values: np.ndarray, null: np.ndarray) -> CategoricalProfile:
    n = len(values)
    present = category_texts(values[~null]).astype(str)  # as the stream spells them (`category_text`)
    cats, counts = np.unique(present, return_counts=True)
    order = np.lexsort((cats, -counts))[:TOP_CATEGORIES]
    top = cats[order].tolist()
    top_counts = counts[order]
    total = len(present)
    fractions = (np.r_[top_counts, total - top_counts.sum()] / total) if total else np.zeros(len(top) + 1)
    return CategoricalProfile("categorical", n, float(null.sum() / n) if n else 0.0, top, fractions.tolist())


def read_table(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Columns of a CSV, Parquet or Avro container file as (values, null mask)."""
    if path.suffix.lower() == ".avro":
        rows = read_avro_rows(path, "reference input")
        names = list(rows[0]) if rows else []
        out = {}
        for name in names:
            col = [r.get(name) for r in rows]
            null = np.fromiter((v is None for v in col), bool, len(col))
            out[name] = (np.array(_plain(col), dtype=object), null)
        return out
    import pyarrow as pa

    table = read_arrow_table(path, "reference input")
    out = {}
    for name in table.column_names:
        col = _temporal_as_number(table.column(name).combine_chunks())
        null = col.is_null().to_numpy(zero_copy_only=False)
        if pa.types.is_integer(col.type) or pa.types.is_boolean(col.type):  # kept as such: a category of
            fill = False if pa.types.is_boolean(col.type) else 0           # them is "1" or "True", not "1.0"
            values = col.fill_null(fill).to_numpy(zero_copy_only=False)
        elif pa.types.is_floating(col.type):
            values = col.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False)
        else:
            values = col.cast(pa.string()).fill_null("").to_numpy(zero_copy_only=False)
        out[name] = (values, null)
    return out


def read_avro_rows(path: Path, what: str) -> list[dict[str, Any]]:
    """The records of an Avro container file, as dicts; `what` names the file in errors."""
    import fastavro

    if not path.exists():
        raise ConfigError(f"{what} {path} does not exist")
    with path.open("rb") as fh:
        return [dict(r) for r in fastavro.reader(fh) if isinstance(r, dict)]


def read_arrow_table(path: Path, what: str) -> Any:
    """A Parquet or CSV file as a pyarrow Table (CSV: "", "null" and "NULL" are nulls)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if not path.exists():
        raise ConfigError(f"{what} {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pq.read_table(path)
        if suffix in (".csv", ".gz"):
            return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
                null_values=["", "null", "NULL"], strings_can_be_null=True))
    except pa.ArrowInvalid as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc}") from exc
    raise ConfigError(f"{what} {path}: expected .csv, .parquet or .avro")


def _plain(col: list[Any]) -> list[Any]:
    """Values fastavro returns for logical types as the stream has them: numbers (`to_number`: epoch ms,
    days, ms since midnight, decimal values) and text (a uuid)."""
    if all(v is None or isinstance(v, (int, float, str, bool)) for v in col):
        return col
    return [v if v is None or isinstance(v, (int, float, str, bool)) else
            str(v) if isinstance(v, uuid.UUID) else to_number(v) for v in col]


def _temporal_as_number(col: Any) -> Any:
    """A Parquet/CSV timestamp as epoch ms, a date as days since the epoch, a time of day as ms since midnight,
    a decimal as float64: the numbers the stream's decoder gives for the same Avro logical types."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = col.type
    if pa.types.is_timestamp(t):
        return pc.cast(col, pa.timestamp("ms", tz=t.tz), safe=False).cast(pa.int64())
    if pa.types.is_date32(t):
        return col.cast(pa.int32())
    if pa.types.is_date64(t):  # ms since the epoch, whole days
        return pc.divide(col.cast(pa.int64()), 86_400_000)
    if pa.types.is_time(t):
        return pc.divide(pc.cast(col, pa.time64("us")).cast(pa.int64()).cast(pa.float64()), 1000.0)
    if pa.types.is_decimal(t):
        return col.cast(pa.float64())
    return col


def build_profile(
    model: str,
    specs: list[FieldSpec],
    columns: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    version: str,
    source: str,
    sentinels: dict[str, list[float]],
    time_field: str | None,
    performance: PerformanceColumns | None = None,
    progress: Callable[[str], None] | None = None,
    season: str | None = None,
    season_min_rows: int = DEFAULT_MIN_ROWS,
    feature_fields: list[str] | None = None,
    variance_share: float = 0.9,
    score_field: str | None = None,
    segments: list[str] | None = None,
    max_segments: int = 10,
    segment_min_rows: int = DEFAULT_MIN_ROWS,
) -> ReferenceProfile:
    """Profile every monitored field present in the columns (features and, if there, predictions);
    with `performance` and a label column, also the model's reference performance; with `season`, each
    season bucket of the rows (by `time_field`) too (`monitor.core.seasons`). Of `feature_fields` (the
    features stream's): the PCA of the numeric ones (`monitor.core.multivariate`), and with `score_field` in
    the columns each one's importance to the score."""
    if not columns:
        raise ConfigError(f"reference input {source} has no rows")
    rows = len(next(iter(columns.values()))[0])
    missing = [s.name for s in specs if s.name not in columns]
    present = [s for s in specs if s.name in columns]
    if not present:
        raise ConfigError(f"reference input {source} has none of the monitored fields (missing: {missing})")
    fields: dict[str, FieldProfile] = {}
    for spec in present:
        if progress is not None:
            progress(spec.name)
        values, null = columns[spec.name]
        if spec.kind == "numeric":
            try:
                numeric = np.asarray(values, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"reference column {spec.name} is not numeric") from exc
            fields[spec.name] = profile_numeric(numeric, null, sentinels.get(spec.name, []))
        else:
            fields[spec.name] = profile_categorical(np.asarray(values, dtype=object), null)
    if season is not None:
        if season not in SEASONS:
            raise ConfigError(f"--season {season}: expected one of {', '.join(SEASONS)}")
        if not time_field or time_field not in columns:
            raise ConfigError(f"--season needs the model's time field in the reference input: "
                              f"{time_field or 'the model has no time_field'} is not a column of {source}")
    rate = None
    if time_field and time_field in columns:
        t = np.asarray(columns[time_field][0], dtype=np.float64)
        t = t[np.isfinite(t)]
        if len(t) > 1 and t.max() > t.min():
            rate = (len(t) - 1) / ((t.max() - t.min()) / 1000.0)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    perf = reference_performance(columns, performance) if performance is not None else None
    seasons = None
    if season is not None and time_field is not None:
        t_values, t_null = columns[time_field]
        try:
            times = np.where(t_null, np.nan, np.asarray(t_values, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"time field {time_field} of {source} is not a number of ms since the epoch (or a "
                              f"timestamp)") from exc
        seasons = season_profile(season, times, columns, fields, season_min_rows)
    features = [n for n in (feature_fields or []) if n in fields]
    feature_columns = {n: np.where(columns[n][1], np.nan, np.asarray(columns[n][0], dtype=np.float64))
                       for n in features if isinstance(fields[n], NumericProfile)}
    mv = fit_multivariate(feature_columns, list(feature_columns), sentinels, variance_share)
    multivariate = None
    if mv is not None:
        errors = mv.errors(feature_columns)
        multivariate = {**mv.to_dict(), "profile": asdict(profile_numeric(errors, np.zeros(len(errors), bool), []))}
    importance = None
    if score_field and score_field in columns:
        importance = feature_importance(columns, {n: fields[n] for n in features}, score_field)
    profile = ReferenceProfile(model, version, created, source, rows, rate, fields, perf, seasons, multivariate,
                               importance)
    if segments:
        profile = replace(profile, segments=segment_profiles(profile, specs, columns, sentinels,
                                                              [n for n in features if n not in segments], segments,
                                                              max_segments, segment_min_rows))
    return profile


def segment_profiles(reference: ReferenceProfile, specs: list[FieldSpec],
                     columns: dict[str, tuple[np.ndarray, np.ndarray]], sentinels: dict[str, list[float]],
                     profiled: list[str], segments: list[str], max_segments: int, min_rows: int) -> dict[str, Any]:
    """Each segment's profiles of the `profiled` features over its own rows (segments with fewer than
    `min_rows` rows get none: their view uses the overall profiles)."""
    kinds = {s.name: s.kind for s in specs}
    out: dict[str, dict[str, Any]] = {}
    for name in segments:
        if name not in columns:
            continue
        values, null = columns[name]
        texts = category_texts(np.asarray(values, dtype=object)).astype(str)
        top = segment_values(reference, name, max_segments)
        labels = np.where(null | ~np.isin(texts, top), f"{name}={OTHER_SEGMENT}",
                          np.char.add(f"{name}=", texts.astype(str)))
        for label in [*(f"{name}={v}" for v in top), f"{name}={OTHER_SEGMENT}"]:
            rows = labels == label
            if rows.sum() < min_rows:
                continue
            seg: dict[str, Any] = {}
            for field_name in profiled:
                v, n = columns[field_name]
                if kinds.get(field_name) == "numeric":
                    seg[field_name] = asdict(profile_numeric(np.asarray(v, dtype=np.float64)[rows], n[rows],
                                                             sentinels.get(field_name, [])))
                else:
                    seg[field_name] = asdict(profile_categorical(np.asarray(v, dtype=object)[rows], n[rows]))
            out[label] = seg
    return {"max_segments": max_segments, "min_rows": min_rows, "fields": out}


def feature_importance(columns: dict[str, tuple[np.ndarray, np.ndarray]], fields: dict[str, FieldProfile],
                       score_field: str) -> dict[str, float]:
    """How much the score moves with each feature, in [0, 1]: |Pearson correlation| for a numeric feature,
    the correlation ratio (eta: the share of the score's spread between the categories, square-rooted) for a
    categorical one; over the rows where both are present and finite."""
    score_values, score_null = columns[score_field]
    score = np.where(score_null, np.nan, np.asarray(score_values, dtype=np.float64))
    out: dict[str, float] = {}
    for name, prof in fields.items():
        if name == score_field:
            continue
        values, null = columns[name]
        if isinstance(prof, NumericProfile):
            x = np.where(null, np.nan, np.asarray(values, dtype=np.float64))
            ok = np.isfinite(x) & np.isfinite(score)
            if ok.sum() < 3 or np.std(x[ok]) == 0 or np.std(score[ok]) == 0:
                out[name] = 0.0
                continue
            out[name] = round(float(abs(np.corrcoef(x[ok], score[ok])[0, 1])), 6)
        else:
            ok = ~null & np.isfinite(score)
            if ok.sum() < 3 or np.std(score[ok]) == 0:
                out[name] = 0.0
                continue
            cats, codes = np.unique(category_texts(np.asarray(values, dtype=object)[ok]).astype(str),
                                    return_inverse=True)
            y = score[ok]
            sums = np.bincount(codes, weights=y, minlength=len(cats))
            counts = np.bincount(codes, minlength=len(cats))
            between = float((counts * (sums / counts - y.mean()) ** 2).sum())
            total = float(((y - y.mean()) ** 2).sum())
            out[name] = round(float(np.sqrt(between / total)), 6)
    return out


@dataclass(frozen=True)
class PerformanceColumns:
    kind: str  # classifier | regressor
    label: str
    prediction: str
    score: str | None
    threshold: float = 0.5


def reference_performance(columns: dict[str, tuple[np.ndarray, np.ndarray]],
                          spec: PerformanceColumns) -> dict[str, Any] | None:
    """Performance of the model on the reference rows that have a label and a prediction."""
    if spec.label not in columns or spec.prediction not in columns:
        return None
    (y, y_null), (p, p_null) = columns[spec.label], columns[spec.prediction]
    keep = ~y_null & ~p_null
    y = np.asarray(y, dtype=float)[keep]
    p = np.asarray(p, dtype=float)[keep]
    if not len(y):
        return None
    expected = None
    if spec.kind == "classifier":
        if spec.score in columns:
            s_vals, s_null = columns[spec.score]
            scores = np.where(s_null[keep], np.nan, np.asarray(s_vals, dtype=float)[keep])
        else:
            scores = np.full(len(y), np.nan)
        block = classifier_block(y, p, scores)
        s = scores[np.isfinite(scores)]
        if len(s):
            expected = float(np.where(s >= spec.threshold, s, 1 - s).mean())
    else:
        block = regressor_block(y, p)
    return {"type": spec.kind, "block": block.tolist(), "expected_accuracy": expected,
            "metrics": metrics(block, "classifier" if spec.kind == "classifier" else "regressor")}


