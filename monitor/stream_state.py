"""Per-partition monitor state of one model stream, and its pure batch update.

`StreamPartition.apply(batch)` takes decoded records and returns findings; no I/O, no wall clock.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np

from monitor.codec import FieldSpec
from monitor.detectors import Adwin, PageHinkley
from monitor.settings import CheckSettings
from monitor.sketches import (
    FINITE,
    INF,
    MAX,
    MIN,
    MISSING,
    NAN,
    SUM,
    SUMSQ,
    CategoricalWindow,
    NumericWindow,
    merge_numeric,
    numeric_block,
)
from monitor.sketches import N as COUNT

META_FIELD = "__meta__"


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """Valid decoded records of one partition, in offset order."""

    offsets: np.ndarray  # int64
    event_times: list[int | None]
    rows: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(frozen=True, slots=True)
class Finding:
    """A check crossed its threshold at record `index` of the batch (before cooldown and dedupe)."""

    feature: str
    check: str
    statistic: float
    threshold: float
    index: int
    event_number: int  # 1-based count of valid events of this stream partition at the trigger
    first_offset: int
    first_event_time: int | None
    window_count: int
    evidence: dict[str, str] = field(default_factory=dict)


def event_time_ms(value: Any) -> int | None:
    """Event times arrive as epoch ms (long) or, with a timestamp-millis logical type, as datetimes."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


class NumericFeature:
    kind: Literal["numeric"] = "numeric"

    def __init__(self, spec: FieldSpec, checks: CheckSettings) -> None:
        self.name = spec.name
        self.checks = checks
        self.totals = np.zeros(9)
        self.totals[MIN], self.totals[MAX] = np.inf, -np.inf
        self.warm = [0.0, 0.0, 0.0]  # n, sum, sum of squares of the first `warmup` finite values
        self.mean: float | None = None
        self.std: float | None = None
        self.window = NumericWindow(checks.histogram_bins, checks.window_blocks)
        a, p = checks.adwin, checks.page_hinkley
        self.adwin = Adwin(a.delta, a.clock, a.max_buckets, a.min_window_length, a.grace_period)
        self.ph = PageHinkley(p.min_instances, p.delta, p.threshold, p.alpha, p.mode)

    def column(self, rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        raw = [r.get(self.name) for r in rows]
        missing = np.fromiter((v is None for v in raw), dtype=bool, count=len(raw))
        values = np.array([math.nan if v is None else v for v in raw], dtype=np.float64)
        return values, missing

    def _warm_up(self, values: np.ndarray, finite_idx: np.ndarray) -> int:
        """Feed the warm-up; return how many of the finite values it took."""
        need = self.checks.warmup - int(self.warm[0])
        if need <= 0:
            return 0
        taken = values[finite_idx[:need]]
        self.warm[0] += len(taken)
        self.warm[1] += float(taken.sum())
        self.warm[2] += float(np.dot(taken, taken))
        if self.warm[0] >= self.checks.warmup:
            n, s, ss = self.warm
            self.mean = s / n
            var = max(ss / n - self.mean * self.mean, 0.0) * n / (n - 1)
            self.std = math.sqrt(var) if var > 0 else 1.0
            half = 4.0 * self.std
            self.window.edges = np.linspace(self.mean - half, self.mean + half, self.checks.histogram_bins + 1)
        return len(taken)

    def detector_input(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Indices and standardised, clipped values of the finite values past the warm-up."""
        finite_idx = np.flatnonzero(np.isfinite(values))
        taken = self._warm_up(values, finite_idx)
        idx = finite_idx[taken:]
        if self.mean is None or self.std is None or not len(idx):
            return idx[:0], values[:0]
        z = (values[idx] - self.mean) / self.std
        return idx, np.clip(z, -self.checks.clip_z, self.checks.clip_z)

    def to_state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "totals": self.totals.tolist(),
            "warm": self.warm,
            "mean": self.mean,
            "std": self.std,
            "window": self.window.to_state(),
            "adwin": self.adwin.to_state(),
            "page_hinkley": self.ph.to_state(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.totals = np.array(state["totals"], dtype=float)
        self.warm = [float(x) for x in state["warm"]]
        self.mean, self.std = state["mean"], state["std"]
        self.window.load_state(state["window"])
        self.adwin.load_state(state["adwin"])
        self.ph.load_state(state["page_hinkley"])

    def summary(self) -> dict[str, Any]:
        t = self.totals
        w = self.window.window()
        out: dict[str, Any] = {
            "kind": self.kind,
            "count": int(t[COUNT]),
            "missing": int(t[MISSING]),
            "nan": int(t[NAN]),
            "inf": int(t[INF]),
            "sum": float(t[SUM]),
            "min": None if t[FINITE] == 0 else float(t[MIN]),
            "max": None if t[FINITE] == 0 else float(t[MAX]),
            "warmup_mean": self.mean,
            "warmup_std": self.std,
            "adwin_width": int(self.adwin.width),
            "page_hinkley_n": self.ph.n,
        }
        if w is not None and w[FINITE] > 0:
            mean = w[SUM] / w[FINITE]
            out["window_mean"] = float(mean)
            out["window_std"] = float(math.sqrt(max(w[SUMSQ] / w[FINITE] - mean * mean, 0.0)))
            out["window_count"] = int(w[COUNT])
        return out


class CategoricalFeature:
    kind: Literal["categorical"] = "categorical"

    def __init__(self, spec: FieldSpec, checks: CheckSettings) -> None:
        self.name = spec.name
        self.checks = checks
        self.count = 0
        self.missing = 0
        self.window = CategoricalWindow(checks.max_categories, checks.window_blocks)

    def column(self, rows: list[dict[str, Any]]) -> tuple[list[Any], np.ndarray]:
        raw = [r.get(self.name) for r in rows]
        return raw, np.fromiter((v is None for v in raw), dtype=bool, count=len(raw))

    def to_state(self) -> dict[str, Any]:
        return {"kind": self.kind, "count": self.count, "missing": self.missing, "window": self.window.to_state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.count, self.missing = int(state["count"]), int(state["missing"])
        self.window.load_state(state["window"])

    def summary(self) -> dict[str, Any]:
        w = self.window.window() or {}
        top = sorted(((k, v) for k, v in w.items() if not k.startswith("__n") and k != "__missing__"),
                     key=lambda kv: (-kv[1], kv[0]))[:10]
        return {"kind": self.kind, "count": self.count, "missing": self.missing, "window_top": dict(top)}


Feature = NumericFeature | CategoricalFeature


class StreamPartition:
    """State of one model stream (features or predictions) on one input partition."""

    def __init__(
        self,
        model: str,
        stream: str,
        topic: str,
        partition: int,
        fields: list[FieldSpec],
        checks: dict[str, CheckSettings],
        block_size: int,
        window_blocks: int,
    ) -> None:
        self.model, self.stream, self.topic, self.partition = model, stream, topic, partition
        self.block_size = block_size
        self.window_blocks = window_blocks
        self.events = 0
        self.rejects = 0
        # Block metadata ring: [first_offset, last_offset, first_time, last_time, count]; time -1 = unknown.
        self.closed_meta: list[list[int]] = []
        self.open_meta: list[int] | None = None
        self.quiet_until: dict[str, int] = {}  # "<feature>/<check>" -> event number the cooldown ends
        self.features: dict[str, Feature] = {}
        for spec in fields:
            cls = NumericFeature if spec.kind == "numeric" else CategoricalFeature
            self.features[spec.name] = cls(spec, checks[spec.name])

    # -- the update ------------------------------------------------------------------------------
    def _segments(self, n: int) -> list[tuple[int, int, bool]]:
        """Split batch positions [0, n) at block boundaries: (start, stop, closes_block)."""
        out = []
        start = 0
        fill = self.events % self.block_size
        while start < n:
            stop = min(n, start + self.block_size - fill)
            out.append((start, stop, fill + (stop - start) == self.block_size))
            fill = 0
            start = stop
        return out

    def apply(self, batch: DecodedBatch) -> list[Finding]:
        n = len(batch)
        if n == 0:
            return []
        offsets = batch.offsets
        times = [-1 if t is None else t for t in batch.event_times]
        segments = self._segments(n)
        # Window position before each segment: (first offset, first time, events in window).
        snapshots: list[tuple[int, int, int]] = []
        closes: list[tuple[int, list[int]]] = []  # (end index, window meta) for each closed block
        for start, stop, closes_block in segments:
            meta = self.open_meta or [int(offsets[start]), 0, times[start], 0, 0]
            window_first = self.closed_meta[0] if self.closed_meta else meta
            snapshots.append((window_first[0], window_first[2], sum(m[4] for m in self.closed_meta) + meta[4]))
            meta[1], meta[3] = int(offsets[stop - 1]), times[stop - 1]
            meta[4] += stop - start
            self.open_meta = meta
            if closes_block:
                self.closed_meta.append(meta)
                del self.closed_meta[: -self.window_blocks]
                self.open_meta = None
                closes.append((stop - 1, [*list(self.closed_meta[0]), sum(m[4] for m in self.closed_meta)]))
        events_before = self.events
        self.events += n

        findings: list[Finding] = []

        def window_at(index: int) -> tuple[int, int | None, int]:
            for (start, stop, _), (first, first_t, before) in zip(segments, snapshots, strict=True):
                if start <= index < stop:
                    return first, (None if first_t < 0 else first_t), before + index - start + 1
            raise AssertionError(index)

        for name, feat in self.features.items():
            if isinstance(feat, NumericFeature):
                values, missing = feat.column(batch.rows)
                feat.totals[:9] = _add_totals(feat.totals, values, missing)
                idx, z = feat.detector_input(values)
                close_iter = iter(closes)
                for start, stop, closes_block in segments:
                    feat.window.add(values[start:stop], missing[start:stop])
                    if closes_block:
                        end, meta = next(close_iter)
                        feat.window.close_block()
                        findings += self._rate_checks(feat, end, events_before + end + 1, meta)
                if len(idx):
                    checks = feat.checks
                    if checks.adwin.enabled:
                        for d in feat.adwin.update_many(z):
                            i = int(idx[d.index])
                            first, first_t, count = window_at(i)
                            findings.append(Finding(name, "adwin", d.statistic, d.threshold, i,
                                                    events_before + i + 1, first, first_t, count,
                                                    {"delta": f"{checks.adwin.delta:g}",
                                                     "adwin_width": str(d.window),
                                                     "warmup_mean": f"{feat.mean:.6g}",
                                                     "warmup_std": f"{feat.std:.6g}"}))
                    if checks.page_hinkley.enabled:
                        for d in feat.ph.update_many(z):
                            i = int(idx[d.index])
                            first, first_t, count = window_at(i)
                            findings.append(Finding(name, "page_hinkley", d.statistic,
                                                    d.threshold, i, events_before + i + 1,
                                                    first, first_t, count,
                                                    {"values_since_reset": str(d.window),
                                                     "warmup_mean": f"{feat.mean:.6g}",
                                                     "warmup_std": f"{feat.std:.6g}"}))
            else:
                raw, missing = feat.column(batch.rows)
                feat.count += n
                feat.missing += int(missing.sum())
                close_iter = iter(closes)
                for start, stop, closes_block in segments:
                    feat.window.add(raw[start:stop], missing[start:stop])
                    if closes_block:
                        end, meta = next(close_iter)
                        feat.window.close_block()
                        findings += self._rate_checks(feat, end, events_before + end + 1, meta)
        findings.sort(key=lambda f: (f.index, f.feature, f.check))
        return findings

    def _rate_checks(self, feat: Feature, end: int, event_number: int, meta: list[int]) -> list[Finding]:
        checks = feat.checks
        if isinstance(feat, NumericFeature):
            w = feat.window.window()
            assert w is not None
            n, nan, missing = w[COUNT], w[NAN] + w[INF], w[MISSING]
        else:
            cw = feat.window.window() or {}
            n, nan, missing = cw.get("__n__", 0), 0, cw.get("__missing__", 0)
        if n < checks.min_window_count:
            return []
        first_t = None if meta[2] < 0 else meta[2]
        out = []
        for check, bad, limit in (("nan_rate", nan, checks.max_nan_rate),
                                  ("missing_rate", missing, checks.max_missing_rate)):
            rate = bad / n
            if rate > limit:
                out.append(Finding(feat.name, check, float(rate), limit, end, event_number, meta[0], first_t,
                                   int(meta[5]), {"bad": str(int(bad)), "window_events": str(int(n))}))
        return out

    # -- persistence -----------------------------------------------------------------------------
    def meta_state(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "stream": self.stream,
            "events": self.events,
            "rejects": self.rejects,
            "closed_meta": self.closed_meta,
            "open_meta": self.open_meta,
            "quiet_until": self.quiet_until,
        }

    def to_fields(self) -> dict[str, bytes]:
        """Redis hash fields: `__meta__` and one per feature (`<model>/<feature>`)."""
        out = {META_FIELD: _dumps(self.meta_state())}
        for name, feat in self.features.items():
            out[f"{self.model}/{name}"] = _dumps(feat.to_state())
        return out

    def load_fields(self, fields: dict[str, bytes]) -> None:
        meta = json.loads(fields[META_FIELD])
        self.events, self.rejects = int(meta["events"]), int(meta["rejects"])
        self.closed_meta = meta["closed_meta"]
        self.open_meta = meta["open_meta"]
        self.quiet_until = {k: int(v) for k, v in meta["quiet_until"].items()}
        for name, feat in self.features.items():
            raw = fields.get(f"{self.model}/{name}")
            if raw is not None:
                feat.load_state(json.loads(raw))


def _add_totals(totals: np.ndarray, values: np.ndarray, missing: np.ndarray) -> np.ndarray:
    return merge_numeric([totals[:9], numeric_block(values, missing, None, 0)[:9]])


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
