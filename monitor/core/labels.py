"""Delayed labels: join them to predictions, keep live performance windows, detect concept drift.

`LabelPartition.apply(rows, lookups)` is pure: the daemon fetches the predictions a batch of labels needs
from the join store and passes them in; joined events update windows of sufficient statistics and the
error-stream detectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.stats import norm

from monitor.core.detectors import DDM, EDDM, HDDMA, Adwin, Detection
from monitor.core.partition import Finding, RecentIds, detector_fired, detectors_evaluated
from monitor.core.state_codec import encode_fields, read_fields
from monitor.core.types import META_FIELD, AlertKind
from monitor.settings import PerformanceSettings

AUC_BINS = 20
# Classifier block: counts and sums, then the binned scores of positive and of negative events.
C_N, C_CORRECT, C_TP, C_FP, C_FN, C_TN, C_LOGLOSS, C_BRIER, C_SCORED = range(9)
C_HEAD = 9
C_LEN = C_HEAD + 2 * AUC_BINS
# Regressor block.
R_N, R_ABS, R_SQ, R_ERR, R_ABS_SQ = range(5)
R_LEN = 5
EPS = 1e-15
ModelType = Literal["classifier", "regressor"]


def score_bins(scores: np.ndarray) -> np.ndarray:
    """Bin of each score in [0, 1]: AUC_BINS equal-width bins, 1.0 in the last."""
    bins: np.ndarray = np.minimum((np.clip(scores, 0.0, 1.0) * AUC_BINS).astype(int), AUC_BINS - 1)
    return bins


def classifier_block(labels: np.ndarray, preds: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Sufficient statistics of labelled classifier events (labels and predictions 0/1, scores or NaN)."""
    out = np.zeros(C_LEN)
    y, p = labels.astype(int), preds.astype(int)
    out[C_N] = len(y)
    out[C_CORRECT] = int((y == p).sum())
    out[C_TP] = int(((y == 1) & (p == 1)).sum())
    out[C_FP] = int(((y == 0) & (p == 1)).sum())
    out[C_FN] = int(((y == 1) & (p == 0)).sum())
    out[C_TN] = int(((y == 0) & (p == 0)).sum())
    has = np.isfinite(scores)
    s, ys = np.clip(scores[has], EPS, 1 - EPS), y[has]
    out[C_SCORED] = int(has.sum())
    out[C_LOGLOSS] = float(-(ys * np.log(s) + (1 - ys) * np.log(1 - s)).sum())
    out[C_BRIER] = float(((scores[has] - ys) ** 2).sum())
    bins = score_bins(scores[has])
    out[C_HEAD:C_HEAD + AUC_BINS] = np.bincount(bins[ys == 1], minlength=AUC_BINS)
    out[C_HEAD + AUC_BINS:] = np.bincount(bins[ys == 0], minlength=AUC_BINS)
    return out


def regressor_block(labels: np.ndarray, preds: np.ndarray) -> np.ndarray:
    err = preds.astype(float) - labels.astype(float)
    a = np.abs(err)
    return np.array([len(err), a.sum(), (err**2).sum(), err.sum(), (a**2).sum()], dtype=float)


def binned_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC AUC from binned scores: P(score+ > score-) + P(tie)/2, ties meaning the same bin."""
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return math.nan
    below = np.cumsum(neg) - neg
    return float((pos * (below + 0.5 * neg)).sum() / (n_pos * n_neg))


def metrics(block: np.ndarray, kind: ModelType) -> dict[str, float]:
    if kind == "regressor":
        n = block[R_N]
        if n == 0:
            return {}
        return {"mae": block[R_ABS] / n, "rmse": math.sqrt(block[R_SQ] / n), "bias": block[R_ERR] / n}
    n = block[C_N]
    if n == 0:
        return {}
    tp, fp, fn = block[C_TP], block[C_FP], block[C_FN]
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn) if tp + fn else math.nan
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else math.nan
    scored = block[C_SCORED]
    return {
        "accuracy": block[C_CORRECT] / n,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "log_loss": block[C_LOGLOSS] / scored if scored else math.nan,
        "brier": block[C_BRIER] / scored if scored else math.nan,
        "roc_auc": binned_auc(block[C_HEAD:C_HEAD + AUC_BINS], block[C_HEAD + AUC_BINS:]),
    }


@dataclass(frozen=True)
class DropTest:
    metric: str
    reference: float
    current: float
    p_value: float
    drop: float
    threshold: float
    firing: bool


def drop_test(ref: np.ndarray, cur: np.ndarray, kind: ModelType, settings: PerformanceSettings) -> DropTest:
    """Is the window's performance significantly and materially worse than the reference's?

    Classifier: one-sided two-proportion z-test on accuracy, and a drop above `min_drop`.
    Regressor: one-sided Welch z-test on the mean absolute error, and an increase above `min_increase`.
    """
    if kind == "classifier":
        n0, n1 = ref[C_N], cur[C_N]
        a0, a1 = ref[C_CORRECT] / n0, cur[C_CORRECT] / n1
        pooled = (ref[C_CORRECT] + cur[C_CORRECT]) / (n0 + n1)
        se = math.sqrt(max(pooled * (1 - pooled) * (1 / n0 + 1 / n1), 1e-300))
        p = float(norm.sf((a0 - a1) / se))
        return DropTest("accuracy", a0, a1, p, a0 - a1, settings.min_drop,
                        p < settings.alpha and a0 - a1 > settings.min_drop)
    n0, n1 = ref[R_N], cur[R_N]
    m0, m1 = ref[R_ABS] / n0, cur[R_ABS] / n1
    v0 = max(ref[R_ABS_SQ] / n0 - m0 * m0, 0.0) * n0 / max(n0 - 1, 1)
    v1 = max(cur[R_ABS_SQ] / n1 - m1 * m1, 0.0) * n1 / max(n1 - 1, 1)
    se = math.sqrt(max(v0 / n0 + v1 / n1, 1e-300))
    p = float(norm.sf((m1 - m0) / se))
    limit = settings.min_increase * m0
    return DropTest("mae", m0, m1, p, m1 - m0, limit, p < settings.alpha and m1 - m0 > limit)


@dataclass(frozen=True, slots=True)
class LabelRow:
    event_id: str
    label: float
    label_time: int | None
    offset: int


@dataclass
class JoinResult:
    findings: list[Finding]
    joined: int
    lags_ms: list[int] = field(default_factory=list)


PENDING_PREFIX = "p/"


class LabelPartition:
    """Join state and performance windows of one labels partition."""

    def __init__(self, model: str, topic: str, partition: int, kind: ModelType, settings: PerformanceSettings,
                 reference_block: list[float] | None = None) -> None:
        self.model, self.topic, self.partition = model, topic, partition
        self.stream = "labels"
        self.kind: ModelType = kind
        self.settings = settings
        self.events = 0  # label records consumed (valid)
        self.rejects = 0
        self.counts = {"joined": 0, "duplicates": 0, "early": 0, "expired": 0, "evicted": 0, "non_finite": 0}
        self.lag_sum_ms = 0
        self.pending: dict[str, list[Any]] = {}  # id -> [label, label_time, offset], oldest first
        self._pending_fields: dict[str, bytes] = {}  # id -> its stored field (encoded once)
        self.max_label_time = -1
        self.joined_ids = RecentIds(settings.duplicate_memory)
        size = C_LEN if kind == "classifier" else R_LEN
        self.closed: list[list[float]] = []
        self.open: list[float] = [0.0] * size
        self.closed_meta: list[list[int]] = []  # [first_offset, last_offset, first_time, last_time, count]
        self.open_meta: list[int] | None = None
        self.reference = reference_block
        self.baseline: list[float] = [0.0] * size
        self.baseline_blocks = 0
        self.open_alerts: dict[str, dict[str, Any]] = {}
        self.quiet_until: dict[str, int] = {}
        self.join_mark = [0, 0]  # joined, given up: the counts at the last look at the joined share
        self.improvements = 0  # error-stream detections of a falling error, not sent (`alert_on_improvement`)
        self._hits: list[tuple[int, str, Detection]] = []  # a batch's detector firings, taken in event order
        self._hit_rows: tuple[Any, ...] | None = None
        self._new_detectors()

    def _new_detectors(self) -> None:
        s = self.settings
        self.detectors: dict[str, Any] = {}
        binary = self.kind == "classifier"
        for name in s.detectors:
            if name == "ddm" and binary:
                self.detectors[name] = DDM(warm_start=s.ddm_warm_start, drift_threshold=s.ddm_threshold)
            elif name == "eddm" and binary:
                self.detectors[name] = EDDM()
            elif name == "hddm_a" and binary:
                self.detectors[name] = HDDMA(drift_confidence=s.hddm_confidence)
            elif name == "adwin":
                self.detectors[name] = Adwin(delta=s.adwin_delta)

    # -- the join --------------------------------------------------------------------------------
    def ids_needed(self, rows: list[LabelRow]) -> list[str]:
        """Predictions to fetch before `apply`: the batch's ids and those still waiting."""
        return list(dict.fromkeys([*self.pending, *(r.event_id for r in rows)]))

    def apply(self, rows: list[LabelRow], lookups: dict[str, tuple[float | None, float, int | None, str | None]],
              predictions_time: int | None = None) -> JoinResult:
        """Join labels (and waiting ones) to the predictions found; update windows and detectors.

        `lookups` maps an event id to its prediction (score, predicted value, prediction time, model version).
        `predictions_time`: how far every predictions partition has been read, in event time (-1: not known
        yet); a waiting label expires only once both that and this partition's labels are `join_ttl_s` past
        it, so a predictions topic read behind the labels loses none. None (offline): this partition's labels
        alone decide.
        """
        ttl_ms = int(self.settings.join_ttl_s * 1000)
        joined: list[tuple[str, list[Any], tuple[float | None, float, int | None, str | None], bool]] = []
        # 1. waiting labels whose prediction has arrived, oldest first
        for event_id in [i for i in self.pending if i in lookups]:
            joined.append((event_id, self.pending.pop(event_id), lookups[event_id], True))
        this_batch = {j[0] for j in joined}
        # 2. the batch, in offset order
        for row in rows:
            self.events += 1
            if row.label_time is not None:
                self.max_label_time = max(self.max_label_time, row.label_time)
            if row.event_id in self.pending or row.event_id in this_batch or self.joined_ids.contains(row.event_id):
                self.counts["duplicates"] += 1
                continue
            entry = [row.label, row.label_time, row.offset]
            if row.event_id in lookups:
                joined.append((row.event_id, entry, lookups[row.event_id], False))
                this_batch.add(row.event_id)
            else:
                self.pending[row.event_id] = entry
        # 3. waiting labels past their time, or beyond the bound, are given up (counted)
        horizon = self.max_label_time if predictions_time is None else min(self.max_label_time, predictions_time)
        if horizon >= 0:
            for event_id in [i for i, e in self.pending.items() if e[1] is not None and horizon - e[1] > ttl_ms]:
                del self.pending[event_id]
                self.counts["expired"] += 1
        while len(self.pending) > self.settings.max_pending:
            self.pending.pop(next(iter(self.pending)))
            self.counts["evicted"] += 1
        result = self._update(joined)
        result.findings += self._join_share(rows[-1].offset if rows else -1, horizon)
        return result

    def join_progress(self) -> int:
        """How far this partition's labels have been read for the join, in event time: the time of the oldest
        label still waiting for its prediction, else the newest label's (-1 before any). A prediction expires
        only once every labels partition is a ttl past it, so none a waiting label needs goes."""
        times = [e[1] for e in self.pending.values() if e[1] is not None]
        return min(times) if times else self.max_label_time

    def _join_share(self, offset: int, event_time: int) -> list[Finding]:
        """`label_join` (DATA_QUALITY): of the labels settled since the last look (joined, or given up: expired
        or evicted), once `block_size` of them, the share joined; OPEN below `min_join_share`, RESOLVED at
        the first look at or above it."""
        c = self.counts
        joined, given_up = c["joined"], c["expired"] + c["evicted"]
        last_joined, last_given_up = self.join_mark
        settled = (joined - last_joined) + (given_up - last_given_up)
        if settled < self.settings.block_size:
            return []
        self.join_mark = [joined, given_up]
        share = (joined - last_joined) / settled
        limit = self.settings.min_join_share
        key = "labels/label_join"
        status: Literal["OPEN", "RESOLVED"]
        if share < limit and key not in self.open_alerts:
            self.open_alerts[key] = {"since": self.events, "below": 0}
            status = "OPEN"
        elif share >= limit and key in self.open_alerts:
            del self.open_alerts[key]
            status = "RESOLVED"
        else:
            return []
        t = event_time if event_time >= 0 else None
        evidence = {"joined": str(joined - last_joined), "given_up": str(given_up - last_given_up),
                    "expired_total": str(c["expired"]), "evicted_total": str(c["evicted"]),
                    "pending": str(len(self.pending)), "join_ttl_s": f"{self.settings.join_ttl_s:g}"}
        return [Finding("labels", "label_join", AlertKind.DATA_QUALITY, share, limit, offset, t, self.events,
                        offset, t, settled, status, None, evidence)]

    def _update(self, joined: list[Any]) -> JoinResult:
        findings: list[Finding] = []
        if not joined:
            return JoinResult(findings, 0)
        ids = [j[0] for j in joined]
        self.joined_ids.duplicates(ids)  # remember them; duplicates among them were filtered above
        # A NaN or infinite label or prediction would poison the window's metrics and the error detectors for
        # good (an ADWIN total of nan): counted, kept out. (The prediction stream's nan_rate check names them.)
        usable = [j for j in joined if math.isfinite(float(j[1][0])) and math.isfinite(float(j[2][1]))]
        if len(usable) < len(joined):
            self.counts["non_finite"] = self.counts.get("non_finite", 0) + len(joined) - len(usable)
            joined = usable
            if not joined:
                return JoinResult(findings, 0)
        labels = np.array([j[1][0] for j in joined], dtype=float)
        offsets = np.array([j[1][2] for j in joined], dtype=np.int64)
        ltimes = [j[1][1] for j in joined]
        preds = np.array([j[2][1] for j in joined], dtype=float)
        scores = np.array([math.nan if j[2][0] is None else j[2][0] for j in joined], dtype=float)
        versions = [j[2][3] for j in joined]
        lags = [int(lt - j[2][2]) for j, lt in zip(joined, ltimes, strict=True)
                if lt is not None and j[2][2] is not None]
        self.lag_sum_ms += sum(lags)
        self.counts["joined"] += len(joined)
        self.counts["early"] += sum(1 for j in joined if j[3])
        first_number = self.counts["joined"] - len(joined)
        # error-stream detectors, in join order: their firings are taken in event order as the windows are
        # evaluated (`_gate_detectors`), so an incident opens, holds and resolves the same for any batch split
        if self.kind == "classifier":
            errors = (labels.astype(int) != preds.astype(int)).astype(float)
        else:
            errors = np.abs(preds - labels)
        hits = []
        for name, det in self.detectors.items():
            hits += [(first_number + d.index + 1, name, d) for d in det.update_many(errors)]
        self._hits = sorted(hits, key=lambda h: (h[0], h[1]))
        self._hit_rows = (offsets, ltimes, versions)
        # windows of joined events
        size = self.settings.block_size
        start = 0
        while start < len(joined):
            fill = int(self.open_meta[4]) if self.open_meta else 0
            stop = min(len(joined), start + size - fill)
            sl = slice(start, stop)
            block = (classifier_block(labels[sl], preds[sl], scores[sl]) if self.kind == "classifier"
                     else regressor_block(labels[sl], preds[sl]))
            self.open = (np.asarray(self.open) + block).tolist()
            t_first = ltimes[start] if ltimes[start] is not None else -1
            t_last = ltimes[stop - 1] if ltimes[stop - 1] is not None else -1
            meta = self.open_meta or [int(offsets[start]), 0, t_first, 0, 0]
            meta[1], meta[3], meta[4] = int(offsets[stop - 1]), t_last, meta[4] + stop - start
            self.open_meta = meta
            if meta[4] == size:
                findings += self._close_block(first_number + stop, versions[stop - 1])
            start = stop
        findings += self._gate_detectors(None)
        self._hits, self._hit_rows = [], None
        return JoinResult(findings, len(joined), lags)

    def _gate_detectors(self, upto: int | None) -> list[Finding]:
        """The batch's detector firings up to labelled event `upto` (all: None), in order."""
        out: list[Finding] = []
        while self._hits and (upto is None or self._hits[0][0] <= upto):
            number, name, d = self._hits.pop(0)
            assert self._hit_rows is not None
            offsets, ltimes, versions = self._hit_rows
            out += self._detector_finding(name, d, int(offsets[d.index]), ltimes[d.index], number,
                                          versions[d.index])
        return out

    def _detector_finding(self, name: str, d: Detection, offset: int, t: int | None, number: int,
                          version: str | None) -> list[Finding]:
        """A detector's firing on the error stream. Its direction: "worse" (the error rose: DDM, EDDM and
        HDDM_A only see rises; ADWIN's recent mean above the older one) or "better" (ADWIN: the error fell),
        which is not sent unless `alert_on_improvement` (a model getting better is not a page)."""
        better = d.change < 0
        if better and not self.settings.alert_on_improvement:
            self.improvements += 1
            return []
        if not detector_fired(self.open_alerts, f"{'error_falling' if better else 'error'}/{name}", number):
            return []  # its incident is still open: a lasting change is one incident
        evidence = {"detector": name, "labelled_events": str(d.window), "direction": "better" if better else "worse"}
        if d.change:
            evidence["error_change"] = f"{d.change:.4g}"
        return [Finding("error", name, AlertKind.CONCEPT_DRIFT, d.statistic, d.threshold, offset, t, number,
                        offset, t, d.window, "OPEN", version, evidence)]

    def _close_block(self, number: int, version: str | None) -> list[Finding]:
        """Close the open block; evaluate the window (the detector firings up to `number` first)."""
        early = self._gate_detectors(number)
        return early + self._close_and_evaluate(number, version)

    def _close_and_evaluate(self, number: int, version: str | None) -> list[Finding]:
        assert self.open_meta is not None
        block = self.open
        self.closed.append(block)
        del self.closed[: -self.settings.blocks]
        self.closed_meta.append(self.open_meta)
        del self.closed_meta[: -self.settings.blocks]
        self.open = [0.0] * len(block)
        self.open_meta = None
        reference = self.reference
        if reference is None:
            if self.baseline_blocks < self.settings.blocks * self.settings.baseline_windows:
                self.baseline = (np.asarray(self.baseline) + np.asarray(block)).tolist()
                self.baseline_blocks += 1
                return []
            reference = self.baseline
        if len(self.closed) < self.settings.blocks:
            return []
        window = np.sum(np.asarray(self.closed), axis=0)
        test = drop_test(np.asarray(reference), window, self.kind, self.settings)
        out = self._lifecycle(test, window, number, version)
        # A detector's incident resolves after `resolve_windows` windows without a firing of it and with the
        # drop test passing (so a lasting drop keeps it open, whatever the detectors re-arm to).
        last = self.closed_meta[-1]
        for key in detectors_evaluated(self.open_alerts, number - int(window[0]), lambda _k: test.firing,
                                       self.settings.resolve_windows):
            side, check = key.split("/", 1)
            out.append(Finding("error", check, AlertKind.CONCEPT_DRIFT, 0.0, 0.0, last[1],
                               None if last[3] < 0 else last[3], number, self.closed_meta[0][0],
                               None if self.closed_meta[0][2] < 0 else self.closed_meta[0][2], int(window[0]),
                               "RESOLVED", version,
                               {"detector": check, "direction": "better" if side == "error_falling" else "worse",
                                "resolved_by": "no firing and the accuracy test passing for "
                                               f"{self.settings.resolve_windows} windows"}))
        return out

    def _lifecycle(self, test: DropTest, window: np.ndarray, number: int, version: str | None) -> list[Finding]:
        key = f"{test.metric}/concept_drift"
        state = self.open_alerts.get(key)
        status: Literal["OPEN", "RESOLVED"] | None = None
        if test.firing and state is None:
            self.open_alerts[key] = {"since": number, "below": 0}
            status = "OPEN"
        elif state is not None and (test.firing or test.drop >= test.threshold / 2):
            state["below"] = 0  # hysteresis: resolving needs the drop back under half the threshold
        elif state is not None:
            state["below"] += 1
            if state["below"] >= self.settings.resolve_windows:
                del self.open_alerts[key]
                status = "RESOLVED"
        if status is None:
            return []
        first, last = self.closed_meta[0], self.closed_meta[-1]
        evidence = {
            "metric": test.metric,
            "reference_value": f"{test.reference:.4f}",
            "current_value": f"{test.current:.4f}",
            "p_value": f"{test.p_value:.3g}",
            "labelled_events": str(int(window[0])),
            "baseline": "reference profile" if self.reference is not None else "first windows of labels",
        }
        evidence.update({k: f"{v:.4f}" for k, v in metrics(window, self.kind).items()})
        return [Finding(test.metric, "concept_drift", AlertKind.CONCEPT_DRIFT, test.current,
                        test.reference - test.threshold if test.metric == "accuracy"
                        else test.reference + test.threshold,
                        last[1], None if last[3] < 0 else last[3], number, first[0],
                        None if first[2] < 0 else first[2], int(window[0]), status, version, evidence)]

    # -- reading ---------------------------------------------------------------------------------
    def window_metrics(self) -> dict[str, float]:
        if not self.closed:
            return {}
        return metrics(np.sum(np.asarray(self.closed), axis=0), self.kind)

    # -- persistence -----------------------------------------------------------------------------
    def to_fields(self) -> dict[str, bytes]:
        """`__meta__`, and each waiting label in a field of its own (`p/<id>`: a checkpoint writes the labels
        that came and deletes those that left, not all of them)."""
        cache = self._pending_fields
        for event_id in [i for i in cache if i not in self.pending]:
            del cache[event_id]
        for event_id, entry in self.pending.items():
            if event_id not in cache:
                cache[event_id] = encode_fields({PENDING_PREFIX + event_id: entry})[PENDING_PREFIX + event_id]
        state = {
            "model": self.model, "stream": "labels", "kind": self.kind, "events": self.events,
            "rejects": self.rejects, "counts": self.counts, "lag_sum_ms": self.lag_sum_ms,
            "pending_count": len(self.pending), "max_label_time": self.max_label_time,
            "joined_ids": self.joined_ids.to_state(), "closed": self.closed, "open": self.open,
            "closed_meta": self.closed_meta, "open_meta": self.open_meta, "baseline": self.baseline,
            "baseline_blocks": self.baseline_blocks, "open_alerts": self.open_alerts,
            "quiet_until": self.quiet_until, "join_mark": self.join_mark, "improvements": self.improvements,
            "detectors": {name: det.to_state() for name, det in self.detectors.items()},
        }
        out = encode_fields({META_FIELD: state})
        out.update((PENDING_PREFIX + i, raw) for i, raw in cache.items())
        return out

    def load_fields(self, fields: dict[str, bytes]) -> None:
        s = read_fields(fields, [META_FIELD])[META_FIELD]
        self.events, self.rejects = int(s["events"]), int(s["rejects"])
        self.counts = {k: int(v) for k, v in s["counts"].items()}
        self.lag_sum_ms = int(s["lag_sum_ms"])
        if "pending" in s:  # state of 0.2: the waiting labels inside the meta
            self.pending = dict(s["pending"])
        else:  # oldest first: labels wait in the order of their offsets
            names = [k for k in fields if k.startswith(PENDING_PREFIX)]
            entries = read_fields(fields, names)
            self.pending = {k[len(PENDING_PREFIX):]: list(e) for k, e in
                            sorted(entries.items(), key=lambda kv: kv[1][2])}
        self.max_label_time = int(s["max_label_time"])
        self.joined_ids.load_state(s["joined_ids"])
        self.closed, self.open = s["closed"], s["open"]
        self.closed_meta, self.open_meta = s["closed_meta"], s["open_meta"]
        self.baseline, self.baseline_blocks = s["baseline"], int(s["baseline_blocks"])
        self.open_alerts, self.quiet_until = dict(s["open_alerts"]), dict(s["quiet_until"])
        self.improvements = int(s.get("improvements", 0))
        # State of 0.2 has no mark: its settled labels count from here on.
        self.join_mark = [int(x) for x in s.get("join_mark", [self.counts["joined"],
                                                            self.counts["expired"] + self.counts["evicted"]])]
        for name, state in s["detectors"].items():
            if name in self.detectors:
                self.detectors[name].load_state(state)
