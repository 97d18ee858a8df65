"""Reference profiles (the metadata store): built once from training data, stored versioned in Redis.

A profile keeps binned statistics, never raw rows: quantile bin edges and fractions, moments, null/NaN
and sentinel rates per numeric field; top-category frequencies per categorical field.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import redis

from monitor.codec import FieldSpec
from monitor.errors import ConfigError, DependencyUnavailable, MonitorError

MAX_BINS = 50
TOP_CATEGORIES = 50


@dataclass(frozen=True)
class NumericProfile:
    kind: str
    count: int
    null_rate: float
    nan_rate: float
    sentinel_rate: float
    sentinels: list[float]
    min: float | None
    max: float | None
    mean: float | None
    std: float | None
    edges: list[float]  # interior edges: bin i is [edges[i-1], edges[i]); the outer bins are open
    fractions: list[float]  # len(edges) + 1, over the finite non-sentinel values

    def centers(self) -> np.ndarray:
        """Bin centers, the outer bins closed at the reference min and max (for Wasserstein)."""
        e = np.asarray(self.edges, dtype=float)
        lo = self.min if self.min is not None else (e[0] if len(e) else 0.0)
        hi = self.max if self.max is not None else (e[-1] if len(e) else 0.0)
        full = np.r_[min(lo, e[0]) if len(e) else lo, e, max(hi, e[-1]) if len(e) else hi]
        centers: np.ndarray = 0.5 * (full[:-1] + full[1:])
        return centers

    def counts(self) -> np.ndarray:
        finite = self.count * (1 - self.null_rate - self.nan_rate - self.sentinel_rate)
        return np.asarray(self.fractions) * max(finite, 0.0)


@dataclass(frozen=True)
class CategoricalProfile:
    kind: str
    count: int
    null_rate: float
    categories: list[str]  # the most frequent first; the fraction list has one more entry: __other__
    fractions: list[float]

    def counts(self) -> np.ndarray:
        return np.asarray(self.fractions) * self.count * (1 - self.null_rate)


FieldProfile = NumericProfile | CategoricalProfile


@dataclass(frozen=True)
class ReferenceProfile:
    model: str
    version: str
    created_at: str
    source: str
    rows: int
    event_rate: float | None  # events per second over the reference's time span
    fields: dict[str, FieldProfile] = field(default_factory=dict)
    # With labels in the reference data: {"type", "block" (performance sufficient statistics),
    # "expected_accuracy" (CBPE of the reference scores), "metrics"}.
    performance: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> ReferenceProfile:
        raw = json.loads(text)
        fields: dict[str, FieldProfile] = {}
        raw.setdefault("performance", None)
        for name, f in raw.pop("fields").items():
            fields[name] = NumericProfile(**f) if f["kind"] == "numeric" else CategoricalProfile(**f)
        return cls(fields=fields, **raw)


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
    )


def profile_categorical(values: np.ndarray, null: np.ndarray) -> CategoricalProfile:
    n = len(values)
    present = values[~null].astype(str)
    cats, counts = np.unique(present, return_counts=True)
    order = np.lexsort((cats, -counts))[:TOP_CATEGORIES]
    top = cats[order].tolist()
    top_counts = counts[order]
    total = len(present)
    fractions = (np.r_[top_counts, total - top_counts.sum()] / total) if total else np.zeros(len(top) + 1)
    return CategoricalProfile("categorical", n, float(null.sum() / n) if n else 0.0, top, fractions.tolist())


def read_table(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Columns of a CSV, Parquet or Avro container file as (values, null mask)."""
    suffix = path.suffix.lower()
    if not path.exists():
        raise ConfigError(f"reference input {path} does not exist")
    if suffix == ".avro":
        import fastavro

        with path.open("rb") as fh:
            rows: list[dict[str, Any]] = [r for r in fastavro.reader(fh) if isinstance(r, dict)]
        names = list(rows[0]) if rows else []
        out = {}
        for name in names:
            col = [r.get(name) for r in rows]
            null = np.fromiter((v is None for v in col), bool, len(col))
            out[name] = (np.array(col, dtype=object), null)
        return out
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        if suffix in (".parquet", ".pq"):
            table = pq.read_table(path)
        elif suffix in (".csv", ".gz"):
            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
                null_values=["", "null", "NULL"], strings_can_be_null=True))
        else:
            raise ConfigError(f"reference input {path}: expected .csv, .parquet or .avro")
    except pa.ArrowInvalid as exc:
        raise ConfigError(f"reference input {path} cannot be read: {exc}") from exc
    out = {}
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        null = col.is_null().to_numpy(zero_copy_only=False)
        if pa.types.is_floating(col.type) or pa.types.is_integer(col.type) or pa.types.is_boolean(col.type):
            values = col.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False)
        else:
            values = col.cast(pa.string()).fill_null("").to_numpy(zero_copy_only=False)
        out[name] = (values, null)
    return out


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
) -> ReferenceProfile:
    """Profile every monitored field present in the columns (features and, if there, predictions);
    with `performance` and a label column, also the model's reference performance."""
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
    rate = None
    if time_field and time_field in columns:
        t = np.asarray(columns[time_field][0], dtype=np.float64)
        t = t[np.isfinite(t)]
        if len(t) > 1 and t.max() > t.min():
            rate = (len(t) - 1) / ((t.max() - t.min()) / 1000.0)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    perf = reference_performance(columns, performance) if performance is not None else None
    return ReferenceProfile(model, version, created, source, rows, rate, fields, perf)


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
    from monitor.performance import classifier_block, metrics, regressor_block

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


# -- storing ---------------------------------------------------------------------------------------


class ReferenceStore(Protocol):
    def put(self, profile: ReferenceProfile) -> None: ...
    def get(self, model: str, version: str) -> ReferenceProfile: ...
    def versions(self, model: str) -> list[str]: ...
    def activate(self, model: str, version: str) -> None: ...
    def active_version(self, model: str) -> str | None: ...
    def next_version(self, model: str) -> str: ...


class MemoryReferenceStore:
    """In-process reference store, for unit tests and offline replay."""

    def __init__(self) -> None:
        self._profiles: dict[tuple[str, str], str] = {}
        self._active: dict[str, str] = {}

    def put(self, profile: ReferenceProfile) -> None:
        key = (profile.model, profile.version)
        if key in self._profiles:
            raise MonitorError(f"reference {profile.model} {profile.version} exists; profiles are immutable")
        self._profiles[key] = profile.to_json()

    def get(self, model: str, version: str) -> ReferenceProfile:
        if (model, version) not in self._profiles:
            raise MonitorError(f"no reference {version} for model {model}")
        return ReferenceProfile.from_json(self._profiles[(model, version)])

    def versions(self, model: str) -> list[str]:
        return [v for m, v in self._profiles if m == model]

    def activate(self, model: str, version: str) -> None:
        self.get(model, version)
        self._active[model] = version

    def active_version(self, model: str) -> str | None:
        return self._active.get(model)

    def next_version(self, model: str) -> str:
        return f"v{len(self.versions(model)) + 1}"


class RedisReferenceStore:
    """Profiles as immutable JSON strings: `<prefix>:ref:<model>:v:<version>`, a `versions` list,
    an `active` pointer and a `seq` counter for automatic version names."""

    def __init__(self, client: redis.Redis[bytes], prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def _k(self, model: str, *parts: str) -> str:
        return ":".join((self.prefix, "ref", model, *parts))

    def put(self, profile: ReferenceProfile) -> None:
        try:
            created = self.client.set(self._k(profile.model, "v", profile.version), profile.to_json(), nx=True)
            if not created:
                raise MonitorError(f"reference {profile.model} {profile.version} exists; profiles are immutable")
            self.client.rpush(self._k(profile.model, "versions"), profile.version)
        except redis.RedisError as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc

    def get(self, model: str, version: str) -> ReferenceProfile:
        try:
            raw = self.client.get(self._k(model, "v", version))
        except redis.RedisError as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc
        if raw is None:
            raise MonitorError(f"no reference {version} for model {model}")
        return ReferenceProfile.from_json(raw)

    def versions(self, model: str) -> list[str]:
        try:
            return [v.decode() for v in self.client.lrange(self._k(model, "versions"), 0, -1)]
        except redis.RedisError as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc

    def activate(self, model: str, version: str) -> None:
        self.get(model, version)
        try:
            self.client.set(self._k(model, "active"), version)
        except redis.RedisError as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc

    def active_version(self, model: str) -> str | None:
        try:
            raw = self.client.get(self._k(model, "active"))
        except redis.RedisError as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc
        return None if raw is None else raw.decode()

    def next_version(self, model: str) -> str:
        try:
            return f"v{self.client.incr(self._k(model, 'seq'))}"
        except redis.RedisError as exc:
            raise DependencyUnavailable(f"redis: {type(exc).__name__}") from exc


def profile_size(profile: ReferenceProfile) -> int:
    return len(profile.to_json().encode())
