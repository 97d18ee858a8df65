"""Per-partition monitor state of one model stream, and its pure batch update.

`StreamPartition.apply(batch)` takes decoded records and returns findings; no I/O, no wall clock.
Blocks group events (by count or event time); at each block close the window of the last blocks is
checked against the data contract and the reference profile, with an OPEN/RESOLVED lifecycle per check.
"""

from __future__ import annotations

import base64
import itertools
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from numba import types as numba_types
from numba.typed import Dict as NumbaDict

from monitor.core import stats
from monitor.core.blocks import CLIPPED, ROW_HEAD, CategoricalSummary, pack, pack_categorical, packed_row
from monitor.core.categories import category_text
from monitor.core.columns import RawColumn, fill_floats, recent_duplicates, to_number
from monitor.core.detectors import Adwin, PageHinkley
from monitor.core.multivariate import MV_ALERT_FIELD, MV_CHECK, MV_FIELD, Multivariate
from monitor.core.profiles import CategoricalProfile, FieldContract, FieldProfile, NumericProfile
from monitor.core.schema import FieldSpec
from monitor.core.seasons import Expected, FieldSeasons, SeasonalReference, bucket_name, buckets
from monitor.core.sketches import (
    ABOVE,
    BELOW,
    FINITE,
    HEAD,
    INF,
    M2,
    MAX,
    META_KEYS,
    MIN,
    MISSING,
    MISSING_KEY,
    MOMENTS,
    N_KEY,
    NAN,
    SENTINEL,
    SUM,
    UNSEEN_KEY,
    CategoricalWindow,
    NumericWindow,
    _blocks_many_kernel,
    longest_runs,
    m2_from_sum_of_squares,
    merge_numeric,
    merge_rows,
    numeric_block,
    run_lengths,
    run_tallies,
)
from monitor.core.sketches import N as COUNT
from monitor.core.state_codec import BLOB_PREFIX, BLOCKS_FIELD, encode_fields, read_fields, split_hot, stored_once
from monitor.core.types import META_FIELD, SEGMENT_PREFIX, AlertKind
from monitor.settings import CheckSettings, WindowSettings

# A block's numeric part as the blocks topic carries it: field names, histogram lengths, packed values.
Packed = tuple[list[str], list[int], "bytes | np.ndarray"]
DETECTOR_CHECKS = {"adwin", "page_hinkley"}


def detector_fired(open_alerts: dict[str, dict[str, Any]], key: str, number: int) -> bool:
    """A detector (`key`: "<field>/<check>") fired at event `number`: True when this opens an incident (an
    OPEN goes out), False when it joins the one still open (a lasting change is one incident, not a page at
    every re-arm)."""
    state = open_alerts.get(key)
    if state is not None:
        state["last"] = number
        return False
    open_alerts[key] = {"since": number, "below": 0, "last": number, "detector": 1}
    return True


def detectors_evaluated(open_alerts: dict[str, dict[str, Any]], window_start: int, holding: Callable[[str], bool],
                        resolve_windows: int) -> list[str]:
    """At a window evaluation (the window holds the events after event number `window_start`): each open
    detector incident whose detector has not fired inside the window and whose field's window checks pass
    (`holding(key)` False) counts a quiet window; after `resolve_windows` in a row it resolves: the stream has
    been stable for a whole window and then some. Returns the keys resolved."""
    resolved = []
    for key, state in list(open_alerts.items()):
        if not state.get("detector"):
            continue
        if state["last"] > window_start or holding(key):
            state["below"] = 0
        else:
            state["below"] += 1
        if state["below"] >= resolve_windows:
            del open_alerts[key]
            resolved.append(key)
    return resolved
DQ_CHECKS = {"missing_rate", "nan_rate", "out_of_range", "sentinel_rate", "unseen_category", "constant",
             "duplicate_id", "event_time", "stuck_value"}
Status = Literal["OPEN", "RESOLVED"]


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """Valid decoded records of one partition, in offset order: as columns (the compiled decoder's) or as rows
    (fastavro's dicts: schemas it does not read, tests). The checks read it through the views below, which give
    the same for both."""

    offsets: np.ndarray  # int64
    event_times: list[int | None]
    rows: list[dict[str, Any]] | None
    received: list[int | None] | None = None  # the Kafka record timestamps (ms), to judge future event times
    columns: dict[str, RawColumn] | None = None

    def __len__(self) -> int:
        return len(self.offsets)

    def numeric(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """A field as float64 (None as NaN; logical types as `to_number` has them) and its nulls."""
        if self.columns is not None:
            col = self.columns.get(name)
            return col.floats() if col is not None else (np.full(len(self), np.nan), np.ones(len(self), bool))
        assert self.rows is not None
        return numeric_column(self.rows, name)

    def numeric_matrix(self, names: list[str]) -> np.ndarray:
        """`numeric(name)[0]` of each name as the rows of one matrix; each column's `numeric` is then a row of
        it (converted in one pass where the compiled decoder's columns allow)."""
        if not names:
            return np.zeros((0, len(self)))
        if self.columns is not None and all(name in self.columns for name in names):
            done = fill_floats([self.columns[name] for name in names])
            if done is not None and done.shape[0] == len(names):
                return done
        return np.stack([self.numeric(name)[0] for name in names])

    def categories(self, name: str) -> tuple[np.ndarray, list[str]]:
        """Codes of `category_text(value)` in order of first appearance (-1: null or absent) and the code's
        names."""
        if self.columns is not None and name in self.columns:
            return self.columns[name].categories()
        index: dict[str, int] = {}
        codes = np.fromiter((-1 if v is None else index.setdefault(category_text(v), len(index))
                             for v in self.values(name)), dtype=np.int64, count=len(self))
        return codes, list(index)

    def text_hashes(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """`zlib.crc32` of each record's `category_text` of `name` (UTF-8) as int64, and where it has a value
        (compiled for a column of strings or plain integers; through `categories` otherwise)."""
        if self.columns is not None and name in self.columns:
            fast = self.columns[name].text_hashes()
            if fast is not None:
                return fast
        codes, names = self.categories(name)
        table = np.array([zlib.crc32(text.encode()) for text in names] or [0], dtype=np.int64)
        present = codes >= 0
        return table[np.where(present, codes, 0)], present

    def values(self, name: str) -> list[Any]:
        """A field's values as fastavro returns them (None where absent): the per-record path, for rare uses."""
        if self.columns is not None:
            col = self.columns.get(name)
            return col.values() if col is not None else [None] * len(self)
        assert self.rows is not None
        return [r.get(name) for r in self.rows]

    def longer_than(self, name: str, characters: int) -> list[int]:
        """Records whose str value of `name` has more than `characters` characters."""
        if self.columns is not None:
            col = self.columns.get(name)
            if col is None:
                return []
            candidates = np.flatnonzero(col.maybe_longer_than(characters)).tolist()  # UTF-8 bytes >= characters
            return [i for i in candidates if isinstance(v := col.value(i), str) and len(v) > characters]
        return [i for i, v in enumerate(self.values(name)) if isinstance(v, str) and len(v) > characters]

    def take(self, rows: np.ndarray) -> DecodedBatch:
        """The batch at `rows` (increasing indexes)."""
        kept = rows.tolist()
        return DecodedBatch(
            self.offsets[rows], [self.event_times[i] for i in kept],
            None if self.rows is None else [self.rows[i] for i in kept],
            None if self.received is None else [self.received[i] for i in kept],
            None if self.columns is None else {name: col.take(rows) for name, col in self.columns.items()})

    def value(self, name: str, i: int) -> Any:
        if self.columns is not None:
            col = self.columns.get(name)
            return None if col is None else col.value(i)
        assert self.rows is not None
        return self.rows[i].get(name)


@dataclass(frozen=True, slots=True)
class Finding:
    """A check crossed its threshold (OPEN) or came back under it (RESOLVED) at `offset`."""

    feature: str
    check: str
    kind: AlertKind
    statistic: float
    threshold: float
    offset: int
    event_time: int | None
    event_number: int  # valid events of this stream partition up to and including the trigger
    first_offset: int
    first_event_time: int | None
    window_count: int
    status: Status = "OPEN"
    model_version: str | None = None
    evidence: dict[str, str] = field(default_factory=dict)


def stuck_threshold(profile: NumericProfile | None, checks: CheckSettings) -> int | None:
    """The run length of one repeated value that `stuck_value` calls stuck: one the reference makes less likely
    than `stuck_alpha` (a run of L copies of the most common value, share p, comes with chance p^(L - 1)), and
    never under `stuck_min_run`. None (off) without a profile of 0.2, with `stuck_min_run: 0`, or when the
    reference holds a single value (the `constant` check's business).

    >>> from monitor.settings import CheckSettings
    >>> prof = NumericProfile("numeric", 100, 0, 0, 0, [], 0.0, 9.0, 4.5, 3.0, [], [1.0], top_share=0.5)
    >>> stuck_threshold(prof, CheckSettings())  # 1 + ln(1e-9) / ln(0.5) = 30.9
    31
    """
    share = profile.top_share if profile is not None else None
    if share is None or not checks.stuck_min_run or share >= 1.0:
        return None
    if share <= 0.0:
        return checks.stuck_min_run
    return max(checks.stuck_min_run, math.ceil(1.0 + math.log(checks.stuck_alpha) / math.log(share)))


def numeric_column(rows: list[dict[str, Any]], name: str) -> tuple[np.ndarray, np.ndarray]:
    """One field of decoded rows as float64 (None as NaN; logical types through `to_number`) and its nulls."""
    raw = [r.get(name) for r in rows]
    missing = np.fromiter((v is None for v in raw), dtype=bool, count=len(raw))
    try:
        values = np.array([math.nan if v is None else v for v in raw], dtype=np.float64)
    except (TypeError, ValueError):  # datetimes, dates, times or decimals: the rare, slower path
        values = np.array([math.nan if v is None else to_number(v) for v in raw], dtype=np.float64)
    return values, missing


def kind_of(check: str, stream: str) -> AlertKind:
    if check in DQ_CHECKS:
        return AlertKind.DATA_QUALITY
    if check.startswith("schema_"):
        return AlertKind.SCHEMA
    if check in ("stream_stopped", "low_rate"):
        return AlertKind.VOLUME
    if check in ("cbpe_accuracy", "concept_drift"):
        return AlertKind.CONCEPT_DRIFT
    return AlertKind.DRIFT if stream == "features" else AlertKind.PREDICTION_DRIFT


@dataclass(frozen=True, slots=True)
class Limits:
    """What a feature's window may look like: the contract's limits, or the defaults without one."""

    max_missing_rate: float
    max_nan_rate: float
    max_sentinel_rate: float
    max_out_of_range_rate: float | None
    max_unseen_rate: float | None
    allow_constant: bool
    bounds: tuple[float | None, float | None]
    sentinels: np.ndarray | None
    allowed: set[str] | None

    @classmethod
    def build(cls, checks: CheckSettings, contract: FieldContract | None, sentinels: list[float]) -> Limits:
        if contract is None:
            return cls(max_missing_rate=checks.max_missing_rate, max_nan_rate=checks.max_nan_rate,
                       max_sentinel_rate=checks.max_sentinel_rate, max_out_of_range_rate=None,
                       max_unseen_rate=None, allow_constant=True, bounds=(None, None),
                       sentinels=np.array(sentinels, dtype=float) if sentinels else None, allowed=None)
        sent = contract.sentinels or sentinels
        return cls(
            max_missing_rate=contract.max_missing_rate,
            max_nan_rate=contract.max_nan_rate,
            max_sentinel_rate=contract.max_sentinel_rate,
            max_out_of_range_rate=contract.max_out_of_range_rate,
            max_unseen_rate=contract.max_unseen_rate if contract.allowed is not None else None,
            allow_constant=contract.allow_constant,
            bounds=(contract.min, contract.max),
            sentinels=np.array(sent, dtype=float) if sent else None,
            allowed=set(contract.allowed) if contract.allowed is not None else None,
        )


@dataclass(frozen=True, slots=True)
class TimeCheck:
    """Which event times count as out of bounds, and how many a window may hold (`window.max_lateness_s`,
    `window.max_future_s`, the model's `max_bad_time_rate`)."""

    field: str  # the model's time field, named by the check
    max_lateness_ms: int  # earlier than the partition's watermark (latest event time seen) by more than this
    max_future_ms: int  # later than the record's Kafka timestamp by more than this
    max_rate: float = 0.0


def screen_times(times: np.ndarray, received: np.ndarray | None, watermark: int, check: TimeCheck
                 ) -> tuple[np.ndarray, np.ndarray, int]:
    """Event times out of bounds are replaced by the partition's watermark, so they never move its windows.

    `times`: ms, -1 = none; `received`: the records' Kafka timestamps (-1 = none); `watermark`: the latest
    in-bounds event time before the batch. Returns the times to use, which were out of bounds, and the new
    watermark. A time is out of bounds if it is later than its record's timestamp + `max_future_ms` (a clock
    or unit error: microseconds read as milliseconds) or earlier than the watermark - `max_lateness_ms`.

    >>> check = TimeCheck("ts", max_lateness_ms=1_000, max_future_ms=100)
    >>> t, bad, mark = screen_times(np.array([5_000, 5_000_000, 5_200, 3_000, -1]),
    ...                             np.array([5_000, 5_000, 5_200, 5_300, 5_300]), 4_000, check)
    >>> t.tolist(), bad.tolist(), mark
    ([5000, 5000, 5200, 5200, -1], [False, True, False, True, False], 5200)
    """
    known = times >= 0
    bad = np.zeros(len(times), dtype=bool)
    if received is not None:
        bad |= known & (received >= 0) & (times > received + check.max_future_ms)
    # The watermark after each event, from in-bounds times only (a late time never raises it).
    marks = np.maximum(np.maximum.accumulate(np.where(known & ~bad, times, -1)), watermark)
    bad |= known & ~bad & (times < marks - check.max_lateness_ms)
    out = np.where(bad, marks, times)
    return out, bad, int(marks[-1]) if len(marks) else watermark


@dataclass(frozen=True, slots=True)
class CheckValue:
    """One check's value at a window evaluation; `firing` before the lifecycle is applied."""

    feature: str
    check: str
    statistic: float
    threshold: float
    firing: bool
    evidence: dict[str, str] = field(default_factory=dict)
    p_value: float | None = None
    # "possible": a drift whose p-value passed the gate but whose statistic is under the effect floor
    level: str = ""


class NumericFeature:
    kind: Literal["numeric"] = "numeric"

    def __init__(self, spec: FieldSpec, checks: CheckSettings, blocks: int, profile: NumericProfile | None,
                 limits: Limits, ref_version: str | None) -> None:
        self.name = spec.name
        self.checks = checks
        self.profile = profile
        self.limits = limits
        self.ref_version = ref_version
        self.totals = np.zeros(HEAD)
        self.totals[MIN], self.totals[MAX] = np.inf, -np.inf
        # n, mean and M2 (sum of squared deviations) of the first `warmup` finite values, all taken relative
        # to the first of them (`warm_shift`, exact to subtract from its neighbours): Chan's parallel update,
        # batch by batch, stays exact at any magnitude (a sum of squares does not: 1.7e9 +- 5).
        self.warm = [0.0, 0.0, 0.0]
        self.warm_shift = 0.0
        self.mean: float | None = None
        self.std: float | None = None
        if profile is not None and profile.edges:
            edges: np.ndarray | None = np.asarray(profile.edges, dtype=float)
            hist_len = len(profile.edges) + 1
        else:
            edges, hist_len = None, checks.histogram_bins + 2
        if profile is not None and profile.mean is not None and profile.std:
            self.mean, self.std = profile.mean, profile.std  # standardise with the reference: no warm-up
        self.window = NumericWindow(hist_len, blocks, edges)
        self.open_clipped = 0.0  # sum of the open block's finite values clipped to the reference mean +- clip_z std
        self.edges_due: int | None = None  # event number after whose block the warm-up's bin edges apply
        # stuck_value: the run of one repeated value this partition is in (its value, its length so far), and
        # the run length the reference makes too unlikely (None: the check is off).
        self.run: list[Any] = [None, 0]
        self.stuck_threshold = stuck_threshold(profile, checks)
        self.seasons: FieldSeasons | None = None  # the reference's season profiles of this field, if any
        self._new_detectors()

    def _new_detectors(self) -> None:
        a, p = self.checks.adwin, self.checks.page_hinkley
        self.adwin = Adwin(a.delta, a.clock, a.max_buckets, a.min_window_length, a.grace_period)
        self.ph = PageHinkley(p.min_instances, p.delta, p.threshold, p.alpha, p.mode)

    def add(self, values: np.ndarray, missing: np.ndarray, offsets: np.ndarray) -> None:
        self.window.add(values, missing, offsets, self.limits.bounds, self.limits.sentinels)
        usable = values[self._usable(values)]
        prof = self.profile
        if prof is not None and prof.mean is not None and prof.std:
            half = self.checks.clip_z * prof.std
            usable = np.clip(usable, prof.mean - half, prof.mean + half)
        self.open_clipped += float(usable.sum())

    def add_run(self, row: np.ndarray, clipped: float) -> None:
        """Merge one run's precomputed block vector (see `run_blocks_all`) into the open block."""
        self.window.add_block(row)
        self.open_clipped += float(clipped)

    def packed_bins(self) -> int:
        """The length of this field's histogram in a block's `numeric_values`: the reference bins, else 0."""
        return self.window.hist_len if self.profile is not None and self.profile.edges else 0

    def packed_row(self) -> np.ndarray:
        """The open block as its row of a block's `numeric_values` (see `monitor.core.blocks`)."""
        return packed_row(self.window.open, self.open_clipped, self.window.hist_len, self.packed_bins() > 0)

    def _usable(self, values: np.ndarray) -> np.ndarray:
        ok = np.isfinite(values)
        if self.limits.sentinels is not None:
            ok &= ~np.isin(values, self.limits.sentinels)
        return np.flatnonzero(ok)

    def _warm_up(self, values: np.ndarray, idx: np.ndarray) -> int:
        """Feed the warm-up (only without a reference); return how many of the values it took."""
        need = self.checks.warmup - int(self.warm[0])
        if self.mean is not None or need <= 0:
            return 0
        taken = values[idx[:need]]
        if len(taken):
            if self.warm[0] == 0:
                self.warm_shift = float(taken[0])
            shifted = taken - self.warm_shift
            n_b = float(len(taken))
            mean_b = float(shifted.mean())
            m2_b = float(np.sum((shifted - mean_b) ** 2))  # two passes over the batch: stable
            n_a, mean_a, m2_a = self.warm
            n = n_a + n_b
            delta = mean_b - mean_a
            self.warm = [n, mean_a + delta * n_b / n, m2_a + m2_b + delta * delta * n_a * n_b / n]
        if self.warm[0] >= self.checks.warmup:
            n, mean, m2 = self.warm
            self.mean = self.warm_shift + mean
            var = m2 / (n - 1) if n > 1 else 0.0
            self.std = math.sqrt(var) if var > 0 else 1.0
            if self.window.edges is None and self.window.next_edges is None:
                half = 4.0 * self.std
                self.window.next_edges = np.linspace(self.mean - half, self.mean + half,
                                                     self.checks.histogram_bins + 1)
        return len(taken)

    def warm_up_batch(self, values: np.ndarray, first_event: int) -> int:
        """Feed the warm-up from a batch, before its values join the windows; return how many it took.

        When the warm-up completes (no reference), its bin edges are due from the block after the one that
        holds the value completing it, wherever the batches were cut (`edges_due`: that value's event number).
        """
        usable = self._usable(values)
        taken = self._warm_up(values, usable)
        if taken and self.window.next_edges is not None and self.edges_due is None:
            self.edges_due = first_event + int(usable[taken - 1])
        return taken

    def adopt_edges(self, last_event: int) -> None:
        """A block ending at `last_event` closed: the warm-up's edges apply from the next block if due."""
        if self.edges_due is not None and self.edges_due <= last_event and self.window.next_edges is not None:
            self.window.edges, self.window.next_edges = self.window.next_edges, None
            self.edges_due = None

    def detector_input(self, values: np.ndarray, taken: int, times: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Indices and standardised, clipped values of the usable values past the warm-up (`taken` of this
        batch's usable values went to it: `warm_up_batch`). With season profiles and the events' `times`,
        each value is standardised by its own season's mean and std (the overall ones without a time)."""
        usable = self._usable(values)
        idx = usable[taken:]
        if self.mean is None or self.std is None or not len(idx):
            return idx[:0], values[:0]
        if self.seasons is not None and times is not None:
            t = np.asarray(times, dtype=np.int64)[idx]
            mean, std = self.seasons.standardisers(np.maximum(t, 0))
            known = (t >= 0) & np.isfinite(mean) & np.isfinite(std)
            z = (values[idx] - np.where(known, mean, self.mean)) / np.where(known, std, self.std)
        else:
            z = (values[idx] - self.mean) / self.std
        return idx, np.clip(z, -self.checks.clip_z, self.checks.clip_z)

    def window_checks(self, min_count: int) -> list[CheckValue]:
        w = self.window.window()
        if w is None or w[COUNT] < min_count:
            return []
        lim, n = self.limits, w[COUNT]
        out = [
            CheckValue(self.name, "missing_rate", w[MISSING] / n, lim.max_missing_rate,
                       w[MISSING] / n > lim.max_missing_rate, {"missing": str(int(w[MISSING]))}),
            CheckValue(self.name, "nan_rate", (w[NAN] + w[INF]) / n, lim.max_nan_rate,
                       (w[NAN] + w[INF]) / n > lim.max_nan_rate, {"nan": str(int(w[NAN])), "inf": str(int(w[INF]))}),
        ]
        if lim.sentinels is not None:
            rate = w[SENTINEL] / n
            out.append(CheckValue(self.name, "sentinel_rate", rate, lim.max_sentinel_rate,
                                  rate > lim.max_sentinel_rate,
                                  {"sentinels": ",".join(f"{s:g}" for s in lim.sentinels)}))
        if lim.max_out_of_range_rate is not None and w[FINITE] > 0:
            rate = (w[BELOW] + w[ABOVE]) / w[FINITE]
            lo, hi = lim.bounds
            out.append(CheckValue(self.name, "out_of_range", rate, lim.max_out_of_range_rate,
                                  rate > lim.max_out_of_range_rate,
                                  {"below_min": str(int(w[BELOW])), "above_max": str(int(w[ABOVE])),
                                   "min": "" if lo is None else f"{lo:.6g}", "max": "" if hi is None else f"{hi:.6g}",
                                   "window_min": f"{w[MIN]:.6g}", "window_max": f"{w[MAX]:.6g}"}))
        if not lim.allow_constant and w[FINITE] >= min_count:
            constant = bool(w[MAX] == w[MIN])
            out.append(CheckValue(self.name, "constant", float(constant), 0.0, constant,
                                  {"value": f"{w[MIN]:.6g}"} if constant else {}))
        return out

    def drift_value(self, expected: Expected | None = None) -> CheckValue | None:
        """The window against the reference: the overall profile, or `expected` (its seasons' mixture)."""
        prof, w = self.profile, self.window.window()
        drift = self.checks.drift
        if prof is None or w is None or not drift.enabled or w[FINITE] < drift.min_window_count:
            return None
        cur = w[HEAD:]
        ref = prof.counts() if expected is None else expected.counts
        ref_mean, ref_std = (prof.mean, prof.std) if expected is None else (expected.mean, expected.std)
        name = drift.numeric_statistic
        centers = prof.centers()
        value = stats.statistic(name, ref, cur, centers)
        if name == "wasserstein" and ref_std:
            value /= ref_std  # normalised, as Evidently's default
        threshold = drift.threshold_for(name)
        floor = stats.effect_floor(name, threshold, ref, cur, centers, ref_std if name == "wasserstein" else None)
        test = stats.chi2_homogeneity(ref, cur)
        mean = w[SUM] / w[FINITE]
        evidence = {
            "p_value": f"{test.p_value:.3g}",
            "configured_threshold": f"{threshold:g}",
            "window_mean": f"{mean:.6g}",
            "window_std": f"{math.sqrt(w[M2] / w[FINITE]):.6g}",
            "window_min": f"{w[MIN]:.6g}",
            "window_max": f"{w[MAX]:.6g}",
            "reference_mean": f"{ref_mean:.6g}" if ref_mean is not None else "",
            "reference_std": f"{ref_std:.6g}" if ref_std is not None else "",
            "reference_version": str(self.ref_version),
        }
        if expected is not None:
            evidence["season"] = expected.season
        evidence.update(_top_bins(ref, cur, _bin_labels(prof.edges), self.window.examples))
        # The alert carries the threshold actually applied (raised by the statistic's small-sample bias).
        return CheckValue(self.name, name, value, floor, value > floor, evidence, test.p_value)

    def to_state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "ref_version": self.ref_version,
            "totals": self.totals.copy(),
            "moments": MOMENTS,
            "warm": {"n": self.warm[0], "mean": self.warm[1], "m2": self.warm[2], "shift": self.warm_shift},
            "mean": self.mean,
            "std": self.std,
            "window": self.window.to_state(),
            "open_clipped": self.open_clipped,
            "edges_due": self.edges_due,
            "adwin": self.adwin.to_state(),
            "page_hinkley": self.ph.to_state(),
            "run": self.run,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.totals = np.array(state["totals"], dtype=float)
        self.run = list(state.get("run", [None, 0]))
        if state.get("moments") != MOMENTS:  # written by 0.1: the totals' slot M2 held the sum of squares
            m2_from_sum_of_squares(self.totals)
        if state.get("ref_version") != self.ref_version:
            return  # a new reference: new bins and standardisation, so windows and detectors start afresh
        warm = state["warm"]
        if isinstance(warm, dict):
            self.warm = [float(warm["n"]), float(warm["mean"]), float(warm["m2"])]
            self.warm_shift = float(warm.get("shift", 0.0))
        else:  # before 0.2: [n, sum, sum of squares]
            n, s, ss = (float(x) for x in warm)
            mean = s / n if n else 0.0
            self.warm = [n, mean, max(ss - n * mean * mean, 0.0)]
        self.mean, self.std = state["mean"], state["std"]
        self.window.load_state(state["window"])
        self.open_clipped = float(state.get("open_clipped", 0.0))
        self.edges_due = state.get("edges_due")
        self.adwin.load_state(state["adwin"])
        self.ph.load_state(state["page_hinkley"])

    def summary(self) -> dict[str, Any]:
        t = self.totals
        out: dict[str, Any] = {
            "kind": self.kind,
            "count": int(t[COUNT]),
            "missing": int(t[MISSING]),
            "nan": int(t[NAN]),
            "inf": int(t[INF]),
            "sentinel": int(t[SENTINEL]),
            "out_of_range": int(t[BELOW] + t[ABOVE]),
            "sum": float(t[SUM]),
            "min": None if t[FINITE] == 0 else float(t[MIN]),
            "max": None if t[FINITE] == 0 else float(t[MAX]),
        }
        return out


class CategoricalFeature:
    kind: Literal["categorical"] = "categorical"

    def __init__(self, spec: FieldSpec, checks: CheckSettings, blocks: int, profile: CategoricalProfile | None,
                 limits: Limits, ref_version: str | None) -> None:
        self.name = spec.name
        self.checks = checks
        self.profile = profile
        self.limits = limits
        self.ref_version = ref_version
        self.count = 0
        self.missing = 0
        vocab = profile.categories if profile is not None else None
        self.seasons: FieldSeasons | None = None
        self.window = CategoricalWindow(max(checks.max_categories, len(vocab or [])), blocks, vocab)

    def add(self, codes: np.ndarray, names: list[str]) -> None:
        """Values as codes of `names` (-1: missing), see `DecodedBatch.categories`."""
        self.count += len(codes)
        self.missing += int((codes < 0).sum())
        self.window.add(codes, names, self.limits.allowed)

    def block_summary(self) -> CategoricalSummary:
        """The open block as its part of a block summary (see `monitor.core.blocks.pack_categorical`)."""
        b = self.window.open
        return (self.name, b.get(N_KEY, 0), b.get(MISSING_KEY, 0), b.get(UNSEEN_KEY, 0),
                {k: b[k] for k in sorted(b) if k not in META_KEYS})  # sorted: the same bytes for any batch cut

    def window_checks(self, min_count: int) -> list[CheckValue]:
        w = self.window.window()
        if w is None or w.get(N_KEY, 0) < min_count:
            return []
        lim, n = self.limits, w[N_KEY]
        present = n - w.get(MISSING_KEY, 0)
        out = [CheckValue(self.name, "missing_rate", w.get(MISSING_KEY, 0) / n, lim.max_missing_rate,
                          w.get(MISSING_KEY, 0) / n > lim.max_missing_rate, {"missing": str(w.get(MISSING_KEY, 0))})]
        if lim.max_unseen_rate is not None and lim.allowed is not None and present > 0:
            rate = w.get(UNSEEN_KEY, 0) / present
            new = sorted(((k, v) for k, v in w.items() if k not in META_KEYS and k not in lim.allowed),
                         key=lambda kv: (-kv[1], kv[0]))[:5]
            out.append(CheckValue(self.name, "unseen_category", rate, lim.max_unseen_rate, rate > lim.max_unseen_rate,
                                  {"new_values": ", ".join(f"{k} ({v})" for k, v in new)}))
        if not lim.allow_constant and present >= min_count:
            cats = [k for k, v in w.items() if k not in META_KEYS and v > 0]
            constant = len(cats) == 1
            out.append(CheckValue(self.name, "constant", float(constant), 0.0, constant,
                                  {"value": cats[0]} if constant else {}))
        return out

    def drift_value(self, expected: Expected | None = None) -> CheckValue | None:
        prof, w = self.profile, self.window.window()
        drift = self.checks.drift
        if prof is None or w is None or not drift.enabled:
            return None
        present = w.get(N_KEY, 0) - w.get(MISSING_KEY, 0)
        if present < drift.min_window_count:
            return None
        known = set(prof.categories)
        cur = np.array([w.get(c, 0) for c in prof.categories]
                       + [sum(v for k, v in w.items() if k not in META_KEYS and k not in known)], dtype=float)
        ref = prof.counts() if expected is None else expected.counts
        name = drift.categorical_statistic
        value = stats.statistic(name, ref, cur)
        threshold = drift.threshold_for(name)
        test = stats.chi2_homogeneity(ref, cur)
        floor = stats.effect_floor(name, threshold, ref, cur)
        evidence = {"p_value": f"{test.p_value:.3g}", "configured_threshold": f"{threshold:g}",
                    "reference_version": str(self.ref_version)}
        if expected is not None:
            evidence["season"] = expected.season
        evidence.update(_top_bins(ref, cur, [*prof.categories, "other"], None))
        # The alert carries the threshold actually applied (raised by the statistic's small-sample bias).
        return CheckValue(self.name, name, value, floor, value > floor, evidence, test.p_value)

    def to_state(self) -> dict[str, Any]:
        return {"kind": self.kind, "ref_version": self.ref_version, "count": self.count, "missing": self.missing,
                "window": self.window.to_state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.count, self.missing = int(state["count"]), int(state["missing"])
        if state.get("ref_version") == self.ref_version:
            self.window.load_state(state["window"])

    def summary(self) -> dict[str, Any]:
        w = self.window.window() or {}
        top = sorted(((k, v) for k, v in w.items() if k not in META_KEYS), key=lambda kv: (-kv[1], kv[0]))[:10]
        return {"kind": self.kind, "count": self.count, "missing": self.missing, "window_top": dict(top)}


Feature = NumericFeature | CategoricalFeature


def _bin_labels(edges: list[float]) -> list[str]:
    e = [f"{x:.4g}" for x in edges]
    if not e:
        return ["all"]
    return [f"<{e[0]}"] + [f"[{a},{b})" for a, b in itertools.pairwise(e)] + [f">={e[-1]}"]


def _top_bins(ref: np.ndarray, cur: np.ndarray, labels: list[str], examples: list[int] | None) -> dict[str, str]:
    """The three bins whose share moved most: reference share, current share, an example offset."""
    p = ref / ref.sum() if ref.sum() else ref
    q = cur / cur.sum() if cur.sum() else cur
    order = np.argsort(-np.abs(q - p), kind="stable")[:3]
    out = {}
    for rank, b in enumerate(order.tolist(), start=1):
        text = f"{labels[b]}: reference {p[b]:.2%}, current {q[b]:.2%}"
        if examples is not None and b < len(examples) and examples[b] >= 0:
            text += f", e.g. offset {examples[b]}"
        out[f"top_bin_{rank}"] = text
    return out


def build_features(fields: list[FieldSpec], checks: dict[str, CheckSettings], blocks: int,
                   reference: dict[str, FieldProfile] | None, ref_version: str | None,
                   contract: dict[str, FieldContract] | None, sentinels: dict[str, list[float]] | None,
                   seasons: SeasonalReference | None = None) -> dict[str, Feature]:
    """The monitored features of a stream, each with its limits, reference profile (and season profiles) and
    window of `blocks`."""
    out: dict[str, Feature] = {}
    reference, contract, sentinels = reference or {}, contract or {}, sentinels or {}
    for spec in fields:
        prof = reference.get(spec.name)
        lim = Limits.build(checks[spec.name], contract.get(spec.name), sentinels.get(spec.name, []))
        if spec.kind == "numeric":
            out[spec.name] = NumericFeature(spec, checks[spec.name], blocks,
                                            prof if isinstance(prof, NumericProfile) else None, lim, ref_version)
        else:
            out[spec.name] = CategoricalFeature(spec, checks[spec.name], blocks,
                                                prof if isinstance(prof, CategoricalProfile) else None, lim,
                                                ref_version)
        if seasons is not None and out[spec.name].profile is not None:
            out[spec.name].seasons = seasons.get(spec.name)
    return out


def window_values(features: dict[str, Feature], times: np.ndarray | None = None, weights: np.ndarray | None = None
                  ) -> tuple[list[CheckValue], list[CheckValue]]:
    """Every feature's window checks, and its drift against the reference gated by Benjamini-Hochberg across
    the features of this window (the chi-squared p-values); also the drift values before the gate.

    `times` and `weights`: the event time (ms) and events of each block of the window, for the features with
    season profiles: their window is compared with the mixture of its blocks' seasons."""
    values: list[CheckValue] = []
    drift: list[CheckValue] = []
    season_of: dict[str, np.ndarray] = {}
    for feat in features.values():
        if feat.name != MV_FIELD:  # the derived field has only its drift test
            values += feat.window_checks(feat.checks.min_window_count)
        expected = None
        if feat.seasons is not None and times is not None and len(times):
            by = feat.seasons.by
            if by not in season_of:
                season_of[by] = buckets(by, times)
            expected = feat.seasons.expected(season_of[by], weights if weights is not None else np.ones(len(times)))
        d = feat.drift_value(expected)
        if d is not None:
            drift.append(d)
    if drift:
        fdr = min(features[d.feature].checks.drift.fdr for d in drift)
        p_values = np.array([1.0 if d.p_value is None else d.p_value for d in drift])
        significant = stats.benjamini_hochberg(p_values, fdr)
        # A false-alarm budget (alerts.false_alarms_per_day) sets a per-evaluation p-value ceiling too.
        ceiling = np.array([features[d.feature].checks.drift.p_max or 1.0 for d in drift])
        significant &= p_values <= ceiling
        gated = [CheckValue(d.feature, d.check, d.statistic, d.threshold, d.firing and bool(sig), d.evidence,
                            d.p_value, "possible" if sig and not d.firing else "")
                 for d, sig in zip(drift, significant.tolist(), strict=True)]
        values += [multivariate_value(v, gated) if v.feature == MV_FIELD else v for v in gated]
    return values, drift


def multivariate_value(v: CheckValue, gated: list[CheckValue]) -> CheckValue:
    """The derived field's drift as the model-wide check `multivariate`. While a numeric feature's own drift
    fails in the same window, it does not fail itself (evidence `explained_by`): it is there for what no
    single feature shows, and one problem should be one incident."""
    evidence = {**v.evidence, "statistic": v.check}
    firing, level = v.firing, v.level
    explained = sorted(g.feature for g in gated if g.firing and g.feature != MV_FIELD)
    if firing and explained:
        firing, level = False, ""
        evidence["explained_by"] = ", ".join(explained)
    return CheckValue(MV_ALERT_FIELD, MV_CHECK, v.statistic, v.threshold, firing, evidence, v.p_value, level)


def stream_values(id_field: str | None, count: int, duplicates: int, max_duplicate_rate: float,
                  cbpe_reference: float | None, expected_correct: float, scored: int,
                  cbpe_min_drop: float, bad_times: int = 0, time_check: TimeCheck | None = None,
                  cbpe_min_window: int = 1) -> list[CheckValue]:
    """Checks of a stream's window rather than a feature: duplicate ids, event times out of bounds, the CBPE
    accuracy estimate (once the window has `cbpe_min_window` scored events: on a few events the estimate
    is noise)."""
    out = []
    if id_field and count:
        out.append(CheckValue(id_field, "duplicate_id", duplicates / count, max_duplicate_rate,
                              duplicates / count > max_duplicate_rate, {"duplicates": str(duplicates)}))
    if time_check is not None and count:
        rate = bad_times / count
        out.append(CheckValue(time_check.field, "event_time", rate, time_check.max_rate,
                              rate > time_check.max_rate,
                              {"out_of_bounds": str(bad_times),
                               "bounds": f"watermark - {time_check.max_lateness_ms / 1000:g} s to record "
                                         f"timestamp + {time_check.max_future_ms / 1000:g} s"}))
    if cbpe_reference is not None and scored and scored >= cbpe_min_window:
        estimate = expected_correct / scored
        out.append(CheckValue("expected_accuracy", "cbpe_accuracy", estimate, cbpe_reference - cbpe_min_drop,
                              cbpe_reference - estimate > cbpe_min_drop,
                              {"estimate": "CBPE: expected accuracy from the prediction scores, assuming they "
                                           "are calibrated; no labels used",
                               "reference_expected_accuracy": f"{cbpe_reference:.4f}",
                               "window_expected_accuracy": f"{estimate:.4f}"}))
    return out


RING_CHUNK = 64
CLOSED_FIELD = "__closed__"
# What changes at every batch in a feature's state: in one field for all features (see `split_hot`).
HOT_PATHS = [("totals",), ("window", "open"), ("open_clipped",), ("run",), ("count",), ("missing",)]


def run_blocks_all(numeric: list[tuple[NumericFeature, np.ndarray, np.ndarray]], starts: np.ndarray
                   ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per run of a batch (runs start at `starts`), every numeric feature's block vector (`numeric_blocks` of its
    values and nulls) and its sum of usable values clipped to the reference mean +- clip_z std, in one compiled
    call for all features."""
    k = len(numeric)
    values = np.ascontiguousarray(np.stack([v for _f, v, _m in numeric]), dtype=np.float64)
    missing = np.ascontiguousarray(np.stack([m for _f, _v, m in numeric]), dtype=bool)
    n_edges = np.zeros(k, dtype=np.int64)
    hist_lens = np.zeros(k, dtype=np.int64)
    n_sentinels = np.zeros(k, dtype=np.int64)
    lo, hi = np.full(k, -np.inf), np.full(k, np.inf)
    has_lo, has_hi, has_clip = np.zeros(k, dtype=bool), np.zeros(k, dtype=bool), np.zeros(k, dtype=bool)
    clip_lo, clip_hi = np.zeros(k), np.zeros(k)
    for j, (feat, _v, _m) in enumerate(numeric):
        edges = feat.window.edges
        if edges is not None:
            n_edges[j], hist_lens[j] = len(edges), feat.window.hist_len
        sent = feat.limits.sentinels
        n_sentinels[j] = 0 if sent is None else len(sent)
        b_lo, b_hi = feat.limits.bounds
        if b_lo is not None:
            lo[j], has_lo[j] = float(b_lo), True
        if b_hi is not None:
            hi[j], has_hi[j] = float(b_hi), True
        prof = feat.profile
        if prof is not None and prof.mean is not None and prof.std:
            half = feat.checks.clip_z * prof.std
            clip_lo[j], clip_hi[j], has_clip[j] = prof.mean - half, prof.mean + half, True
    edges_m = np.zeros((k, max(1, int(n_edges.max(initial=0)))))
    sent_m = np.zeros((k, max(1, int(n_sentinels.max(initial=0)))))
    for j, (feat, _v, _m) in enumerate(numeric):
        if n_edges[j]:
            edges_m[j, :n_edges[j]] = feat.window.edges
        if n_sentinels[j]:
            sent_m[j, :n_sentinels[j]] = feat.limits.sentinels
    widths = [HEAD + feat.window.hist_len for feat, _v, _m in numeric]
    rows, clipped = _blocks_many_kernel(values, missing, np.ascontiguousarray(starts, dtype=np.int64), edges_m,
                                        n_edges, hist_lens, lo, hi, has_lo, has_hi, sent_m, n_sentinels, clip_lo,
                                        clip_hi, has_clip, max(widths))
    return {feat.name: (rows[j, :, :widths[j]], clipped[j]) for j, (feat, _v, _m) in enumerate(numeric)}


class RecentIds:
    """The last `size` event ids of a partition, as CRC-32 hashes in a ring: bounded memory, exact order.

    >>> r = RecentIds(3)
    >>> r.duplicates(["a", "b", "a", "c", "d", "a"]).tolist()  # the last "a" is 4 ids after the one before
    [False, False, True, False, False, False]
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.ring = np.zeros(size, dtype=np.uint32)
        self.filled = 0
        self.pos = 0
        self._last = _new_last()  # hash -> how many ids had been seen when it was last seen
        self._chunks: list[np.ndarray | None] = []  # read-only copies of the ring's chunks (None: changed)

    def duplicates(self, ids: list[Any]) -> np.ndarray:
        index: dict[str, int] = {}
        codes = np.fromiter((-1 if v is None else index.setdefault(str(v), len(index)) for v in ids),
                            dtype=np.int64, count=len(ids))
        return self.duplicates_of(codes, list(index))

    def duplicates_of(self, codes: np.ndarray, names: list[str]) -> np.ndarray:
        """Whether each id (as codes of `names`, the `str` of each id; -1: none) is among the `size` ids before
        it: CRC-32 hashes of the names, then `duplicates_hashed`."""
        table = np.array([zlib.crc32(name.encode()) for name in names] or [0], dtype=np.int64)
        present = codes >= 0
        return self.duplicates_hashed(table[np.where(present, codes, 0)], present)

    def duplicates_hashed(self, hashes: np.ndarray, present: np.ndarray) -> np.ndarray:
        """`duplicates_of` given each id's CRC-32 hash (`DecodedBatch.text_hashes`) and where there is one: one
        compiled pass over the ring."""
        if not self.size:
            return np.zeros(len(hashes), dtype=bool)
        before = self.pos
        out, self.filled, self.pos = recent_duplicates(hashes, present, self.ring, self._last, self.filled,
                                                       self.pos)
        if self.pos - before >= self.size:
            self._chunks = []
        else:
            for k in np.unique((np.arange(before, self.pos) % self.size) // RING_CHUNK).tolist():  # the chunks written
                if k < len(self._chunks):
                    self._chunks[k] = None
        return out

    def contains(self, value: Any) -> bool:
        """Whether `value` is among the remembered ids (no update)."""
        if not self.size or value is None:
            return False
        prev = int(self._last.get(zlib.crc32(str(value).encode()), -1))
        return prev >= 0 and self.pos - prev < self.size

    def to_state(self) -> dict[str, Any]:
        """The ring in chunks of `RING_CHUNK` hashes: a checkpoint rewrites only the chunks a batch wrote (the
        others are the same read-only copies, which the state codec encodes once)."""
        if len(self._chunks) != -(-self.size // RING_CHUNK):
            self._chunks = [None] * -(-self.size // RING_CHUNK)
        for k, chunk in enumerate(self._chunks):
            if chunk is None:
                copy = self.ring[k * RING_CHUNK:(k + 1) * RING_CHUNK].copy()
                copy.flags.writeable = False
                self._chunks[k] = copy
        return {"chunks": list(self._chunks), "filled": self.filled, "pos": self.pos}

    def load_state(self, state: dict[str, Any] | None) -> None:
        if not state or not self.size:
            return
        if "chunks" in state:
            ring = np.concatenate([np.asarray(c, dtype=np.uint32) for c in state["chunks"]] or
                                  [np.zeros(0, dtype=np.uint32)])
        else:  # JSON state of 0.2: the ring in base64
            ring = np.frombuffer(base64.b64decode(state["ring"]), dtype=np.uint32).copy()
        if len(ring) != self.size:
            return  # the memory size changed: start over rather than guess
        self.ring, self.filled, self.pos = ring, int(state["filled"]), int(state["pos"])
        self._chunks = []
        self._last = _new_last()
        for k in range(self.pos - self.filled, self.pos):
            self._last[int(self.ring[k % self.size])] = k


def _new_last() -> Any:
    return NumbaDict.empty(key_type=numba_types.int64, value_type=numba_types.int64)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


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
        window: WindowSettings,
        *,
        reference: dict[str, FieldProfile] | None = None,
        ref_version: str | None = None,
        contract: dict[str, FieldContract] | None = None,
        sentinels: dict[str, list[float]] | None = None,
        version_field: str | None = None,
        id_field: str | None = None,
        uniqueness_memory: int = 0,
        max_duplicate_rate: float = 0.01,
        reference_rate: float | None = None,
        min_rate_ratio: float = 0.1,
        topic_partitions: int = 1,
        score_field: str | None = None,
        decision_threshold: float = 0.5,
        cbpe_reference: float | None = None,
        cbpe_min_drop: float = 0.03,
        cbpe_min_window: int = 500,
        emit_blocks: bool = False,
        evaluate: bool = True,
        time_check: TimeCheck | None = None,
        seasons: SeasonalReference | None = None,
        multivariate: Multivariate | None = None,
    ) -> None:
        self.model, self.stream, self.topic, self.partition = model, stream, topic, partition
        # The reference's PCA: the derived field MV_FIELD is each event's reconstruction error.
        self.multivariate = multivariate
        # Segments (the model's `segments:`): a child partition per segment, fed its events, made by the
        # processor (`add_segment`); a child's blocks carry its label and go out before this partition's block
        # of the same slot, and every child block of a slot this partition closes is closed with it.
        self.segment: str | None = None  # a child's "<field>=<value>"
        self.segment_fields: list[tuple[str, dict[str, str], str]] = []  # (field, value -> label, the others')
        self.children: dict[str, StreamPartition] = {}
        self._screened: list[int | None] = []  # the last batch's event times as the blocks placed them
        # Every block and signal handed out (`take_emitted`) gets the next number: the order the blocks topic
        # must keep for this partition (the stream's blocks and its segments' interleaved), stored.
        self.emit_order = 0
        # Event times out of bounds are counted (`bad_times`) and never move the windows (`screen_times`).
        self.time_check = time_check
        self.watermark = -1  # the latest in-bounds event time seen
        self.bad_times = 0
        # Stage 1 of the model view: a summary of every closed block goes out (`emitted`) to the blocks topic.
        self.emit_blocks = emit_blocks
        # Per-partition windows, detectors and alerts: off when only the model view raises alerts.
        self.evaluate = evaluate
        self.ref_version = ref_version
        self.block_seq = 0
        self.idle_sent = False  # the model stage was told this partition is idle (cleared by the next event)
        self.emitted: list[dict[str, Any]] = []  # block summaries and signals of the last apply (not stored)
        self.window_settings = window
        self.version_field = version_field
        self.id_field = id_field if uniqueness_memory > 0 else None
        self.recent_ids = RecentIds(uniqueness_memory)
        self.max_duplicate_rate = max_duplicate_rate
        self.reference_rate = reference_rate
        self.min_rate_ratio = min_rate_ratio
        self.topic_partitions = topic_partitions
        self.score_field = score_field
        self.decision_threshold = decision_threshold
        self.cbpe_reference = cbpe_reference
        self.cbpe_min_drop = cbpe_min_drop
        self.cbpe_min_window = cbpe_min_window
        self.events = 0
        self.rejects = 0
        self.blocks_closed = 0
        # Block metadata ring: [first_offset, last_offset, first_time, last_time, count, block_id, duplicates,
        # expected correct decisions, scored events (these two for CBPE), event times out of bounds]; time -1 =
        # none.
        self.closed_meta: list[list[Any]] = []
        self.open_meta: list[Any] | None = None
        self.last_version: str | None = None
        self.quiet_until: dict[str, int] = {}  # (0.2: detector cooldowns; detectors open incidents now)
        # "<feature>/<check>" -> {"since", "below"} of an open window check, plus "last" (its latest firing)
        # and "detector" for a detector's incident (`detector_fired`)
        self.open_alerts: dict[str, dict[str, Any]] = {}
        # The batch's detector firings (event number, feature, check, ...), taken in event order as its windows
        # are evaluated (`_gate_detectors`), so an incident opens or holds the same for any batch split.
        self._hits: list[tuple[Any, ...]] = []
        self._opened: list[tuple[Any, ...]] = []
        self.schema_ids: list[int] = []
        # feature -> (statistic, value, threshold) at the last evaluated window (not stored; for metrics/history)
        self.last_drift: dict[str, tuple[str, float, float]] = {}
        self.last_time = -1
        # Without per-partition evaluation the window is never read here: keep only the open block.
        self.features = build_features(fields, checks, window.blocks if evaluate else 1, reference, ref_version,
                                       contract, sentinels, seasons)
        for feat in self.features.values():
            if isinstance(feat, NumericFeature):
                feat.window.track_examples = evaluate
        self.numeric_features = [f for f in self.features.values() if isinstance(f, NumericFeature)]
        self.categorical_features = [f for f in self.features.values() if isinstance(f, CategoricalFeature)]

    # -- blocks ----------------------------------------------------------------------------------
    def _block_ids(self, batch: DecodedBatch, times: list[int]) -> np.ndarray:
        n = len(batch)
        w = self.window_settings
        if w.by == "count":
            return (self.events + np.arange(n)) // w.block_size
        current = self.open_meta[5] if self.open_meta is not None else -1
        raw = np.array([t // w.block_ms if t >= 0 else -1 for t in times], dtype=np.int64)
        # Late events join the open block: block ids never go back.
        return np.maximum.accumulate(np.maximum(raw, current))

    def _longest_runs(self, numeric: list[tuple[NumericFeature, np.ndarray, np.ndarray]], starts: np.ndarray
                      ) -> dict[str, tuple[list[int], list[float]]]:
        """Per numeric feature whose `stuck_value` check is on: each run's (block's) longest run of one repeated
        value and that value; the run in progress is carried to the next batch in the feature's state."""
        out: dict[str, tuple[list[int], list[float]]] = {}
        for feat, values, _missing in numeric:
            if feat.stuck_threshold is None or not len(values):
                continue
            usable = np.isfinite(values)
            if feat.limits.sentinels is not None and len(feat.limits.sentinels):
                usable &= ~np.isin(values, feat.limits.sentinels)
            last, count = feat.run
            lengths = run_lengths(values, usable, math.nan if last is None else float(last), int(count))
            feat.run = [float(values[-1]) if usable[-1] else None, int(lengths[-1])]
            out[feat.name] = longest_runs(lengths, values, starts)
        return out

    def _window_bounds(self) -> tuple[int, int | None, int]:
        first = self.closed_meta[0]
        return first[0], (None if first[2] < 0 else first[2]), sum(m[4] for m in self.closed_meta)

    # -- segments --------------------------------------------------------------------------------
    def add_segment(self, field_name: str, labels: dict[str, str], other: str,
                    children: dict[str, StreamPartition]) -> None:
        """Segment by `field_name`: `labels` maps a value to its child's label, the rest (and no value) go to
        `other`; `children` by label."""
        for label, child in children.items():
            child.segment = label
            self.children[label] = child
        self.segment_fields.append((field_name, labels, other))

    def apply(self, batch: DecodedBatch) -> list[Finding]:
        if not self.children or len(batch) == 0:
            return self._apply(batch)
        mark = len(self.emitted)
        findings = self._apply(batch)
        own = self.emitted[mark:]
        del self.emitted[mark:]
        placed = replace(batch, event_times=self._screened)
        labels = list(self.children)
        for field_name, by_value, other in self.segment_fields:
            codes, names = placed.categories(field_name)
            index = np.array([labels.index(by_value.get(v, other)) for v in names] + [labels.index(other)],
                             dtype=np.int64)
            which = index[codes]  # code -1 (no value) takes the last entry: the others' label
            for k in np.unique(which).tolist():
                self.children[labels[k]].apply(placed.take(np.flatnonzero(which == k)))
        self._close_children(None if self.open_meta is None else int(self.open_meta[5]))
        self.emitted += own
        return findings

    def take_emitted(self) -> list[dict[str, Any]]:
        """The blocks and signals made since the last call, each numbered (`_order`, not part of the Avro
        message) in the order they must reach the model stage."""
        out, self.emitted = self.emitted, []
        for block in out:
            block["_order"] = self.emit_order
            self.emit_order += 1
        return out

    def _close_children(self, below: int | None) -> None:
        """Close the children's open blocks of slots before `below` (None: all), and take their blocks and
        signals, to go out before this partition's."""
        for child in self.children.values():
            if child.open_meta is not None and (below is None or int(child.open_meta[5]) < below):
                child._close_block(child.events, int(child.open_meta[3]))
            self.emitted += child.emitted
            child.emitted = []

    # -- the update ------------------------------------------------------------------------------
    def _apply(self, batch: DecodedBatch) -> list[Finding]:
        n = len(batch)
        if n == 0:
            return []
        offsets = batch.offsets
        times = [-1 if t is None else t for t in batch.event_times]
        bad_times = np.zeros(n, dtype=bool)
        if self.time_check is not None and self.window_settings.by == "time":
            received = None if batch.received is None else np.array(
                [-1 if t is None else t for t in batch.received], dtype=np.int64)
            screened, bad_times, self.watermark = screen_times(np.array(times, dtype=np.int64), received,
                                                               self.watermark, self.time_check)
            if bad_times.any():
                times = screened.tolist()
                self.bad_times += int(bad_times.sum())
        if self.children:
            self._screened = [None if t < 0 else t for t in times]
        findings: list[Finding] = []
        version_field = self.version_field
        if "*/stream_stopped" in self.open_alerts:
            findings.append(self._resolve_silence(int(offsets[0]), batch.event_times[0]))
        if self.idle_sent and self.emit_blocks:
            # Events again: hold the model's watermark from the first of them on, before its block closes.
            t0 = times[0]
            signal = self._signal([int(offsets[0]), int(offsets[0]), t0, t0, 0, -1, 0, 0.0, 0, 0, {}], t0)
            signal["idle"] = False
            self.emitted.append(signal)
            self.idle_sent = False

        numeric = [(f, *batch.numeric(f.name)) for f in self.features.values()
                   if isinstance(f, NumericFeature) and f.name != MV_FIELD]
        mv_feature = self.features.get(MV_FIELD)
        if self.multivariate is not None and isinstance(mv_feature, NumericFeature):
            errors = self.multivariate.errors({f.name: v for f, v, _m in numeric if f.name in self.multivariate.fields})
            numeric.append((mv_feature, errors, np.zeros(n, dtype=bool)))
        categorical = [(f, *batch.categories(f.name)) for f in self.features.values()
                       if isinstance(f, CategoricalFeature)]
        dups = (self.recent_ids.duplicates_hashed(*batch.text_hashes(self.id_field))
                if self.id_field else np.zeros(n, dtype=bool))
        expected, scored = self._expected_correct(batch)
        bids = self._block_ids(batch, times)
        cuts = np.flatnonzero(np.diff(bids)) + 1
        runs = list(zip([0, *cuts.tolist()], [*cuts.tolist(), n], strict=True))
        snapshots: list[tuple[int, int | None, int]] = []
        events_before = self.events
        longest = self._longest_runs(numeric, np.array([a for a, _ in runs], dtype=np.int64))
        # The warm-up (per-partition detectors only) sees the batch before its windows do: see `warm_up_batch`.
        warm_taken = {f.name: f.warm_up_batch(values, events_before) if self.evaluate else 0
                      for f, values, _missing in numeric}
        # Stage 1 of the model view (no per-partition evaluation, so no example offsets): every run's block of
        # every numeric feature in one compiled call instead of a loop over the runs.
        vectorised = bool(numeric) and not any(f.window.track_examples for f, _, _ in numeric)
        starts = np.array([a for a, _ in runs], dtype=np.int64)
        per_run = run_blocks_all(numeric, starts) if vectorised else {}
        if self.emit_blocks and not self.evaluate and (vectorised or not numeric):
            self._apply_runs(runs, bids, offsets, times, dups, expected, scored, bad_times, per_run, categorical,
                             events_before, longest)
            runs = []  # done
        self._hits, self._opened = self._detect(numeric, warm_taken, events_before, times), []
        for k, (start, stop) in enumerate(runs):
            bid = int(bids[start])
            if self.open_meta is not None and self.open_meta[5] != bid:
                findings += self._close_block(events_before + start, times[start])
            meta = self.open_meta or [int(offsets[start]), 0, times[start], 0, 0, bid, 0, 0.0, 0, 0, {}]
            if self.closed_meta:
                first, first_t, before = self._window_bounds()
            else:
                first, first_t, before = meta[0], (None if meta[2] < 0 else meta[2]), 0
            snapshots.append((first, first_t, before + meta[4]))
            meta[1], meta[3] = int(offsets[stop - 1]), times[stop - 1]
            meta[4] += stop - start
            meta[6] += int(dups[start:stop].sum())
            meta[7] += float(expected[start:stop].sum())
            meta[8] += int(scored[start:stop].sum())
            meta[9] += int(bad_times[start:stop].sum())
            _longest_into(meta[10], longest, k)
            self.open_meta = meta
            for feat, values, missing in numeric:
                if vectorised:
                    rows, clipped = per_run[feat.name]
                    feat.add_run(rows[k], clipped[k])
                else:
                    feat.add(values[start:stop], missing[start:stop], offsets[start:stop])
            for cfeat, codes, names in categorical:
                cfeat.add(codes[start:stop], names)
        self.events += n
        if version_field:
            last = batch.value(version_field, n - 1)
            self.last_version = None if last is None else str(last)

        for feat, values, missing in numeric:
            name = feat.name
            if vectorised:
                rows = per_run[feat.name][0]
                batch_totals = merge_rows(np.ascontiguousarray(rows[:, :HEAD]))
            else:
                batch_totals = numeric_block(values, missing, None, 0, feat.limits.bounds, feat.limits.sentinels)
            feat.totals = merge_numeric([feat.totals, batch_totals])
        self._gate_detectors(None)
        for _number, name, check, d, evidence, i in self._opened:
            run = next(k for k, (a, b) in enumerate(runs) if a <= i < b)
            first, first_t, before = snapshots[run]
            findings.append(Finding(
                name, check, kind_of(check, self.stream), d.statistic, d.threshold, int(offsets[i]),
                batch.event_times[i], events_before + i + 1, first, first_t, before + i - runs[run][0] + 1,
                model_version=_text(batch.value(version_field, i)) if version_field else None,
                evidence=evidence))
        self._hits, self._opened = [], []
        findings.sort(key=lambda f: (f.event_number, f.feature, f.check, f.status))
        return findings

    def _detect(self, numeric: list[tuple[NumericFeature, np.ndarray, np.ndarray]], warm_taken: dict[str, int],
                events_before: int, times: list[int]) -> list[tuple[Any, ...]]:
        """The batch's ADWIN and Page-Hinkley firings (per-partition evaluation only), in event order."""
        if not self.evaluate:
            return []
        hits: list[tuple[Any, ...]] = []
        event_times = np.asarray(times, dtype=np.int64) if any(f.seasons for f, _, _ in numeric) else None
        for feat, values, _missing in numeric:
            idx, z = feat.detector_input(values, warm_taken[feat.name], event_times)
            if not len(idx):
                continue
            checks = feat.checks
            found = []
            if checks.adwin.enabled:
                found += [("adwin", d, {"delta": f"{checks.adwin.delta:g}", "adwin_width": str(d.window)})
                          for d in feat.adwin.update_many(z)]
            if checks.page_hinkley.enabled:
                found += [("page_hinkley", d, {"values_since_reset": str(d.window)})
                          for d in feat.ph.update_many(z)]
            for check, d, evidence in found:
                i = int(idx[d.index])
                evidence.update({"standardised_by": "reference" if feat.profile is not None else "warm-up",
                                 "mean": f"{feat.mean:.6g}", "std": f"{feat.std:.6g}"})
                if feat.seasons is not None and event_times is not None and event_times[i] >= 0:
                    by = feat.seasons.by
                    b = int(buckets(by, event_times[i:i + 1])[0])
                    mean, std = feat.seasons.standardisers(event_times[i:i + 1])
                    if np.isfinite(mean[0]) and np.isfinite(std[0]):
                        evidence.update({"standardised_by": f"reference season {by} {bucket_name(by, b)}",
                                         "mean": f"{mean[0]:.6g}", "std": f"{std[0]:.6g}"})
                hits.append((events_before + i + 1, feat.name, check, d, evidence, i))
        hits.sort(key=lambda h: (h[0], h[1], h[2]))
        return hits

    def _gate_detectors(self, upto: int | None) -> None:
        """Take the batch's firings up to event `upto` (all: None) in order: one that opens an incident goes
        out (`_opened`), one while its incident is open holds it (`detector_fired`)."""
        while self._hits and (upto is None or self._hits[0][0] <= upto):
            hit = self._hits.pop(0)
            if detector_fired(self.open_alerts, f"{hit[1]}/{hit[2]}", hit[0]):
                self._opened.append(hit)

    def _apply_runs(self, runs: list[tuple[int, int]], bids: np.ndarray, offsets: np.ndarray, times: list[int],
                    dups: np.ndarray, expected: np.ndarray, scored: np.ndarray, bad_times: np.ndarray,
                    per_run: dict[str, tuple[np.ndarray, np.ndarray]],
                    categorical: list[tuple[CategoricalFeature, np.ndarray, list[str]]], events_before: int,
                    longest: dict[str, tuple[list[int], list[float]]]) -> None:
        """Stage 1 of the model view (no per-partition evaluation): a batch's runs of one block each, summarised.

        The numeric part of every run is a row of one matrix (`per_run`, laid out as the blocks topic packs it),
        so a block closed inside the batch costs a slice, not a call per feature; the feature windows hold only
        the block still open between batches (at most the first run joins it, the last run becomes it).
        """
        starts = np.array([a for a, _ in runs], dtype=np.int64)
        n_dups = np.add.reduceat(dups.astype(np.int64), starts).tolist()
        n_expected = np.add.reduceat(np.asarray(expected, dtype=float), starts).tolist()
        n_scored = np.add.reduceat(np.asarray(scored, dtype=np.int64), starts).tolist()
        n_bad = np.add.reduceat(bad_times.astype(np.int64), starts).tolist()
        numeric = [f for f in self.features.values() if isinstance(f, NumericFeature)]
        packed = self._packed_runs(numeric, per_run, len(runs))
        tallies = [(cfeat, run_tallies(codes, names, starts), np.add.reduceat((codes < 0).astype(np.int64),
                                                                               starts).tolist())
                   for cfeat, codes, names in categorical]
        in_windows = self.open_meta is not None and self.open_meta[5] == int(bids[0])  # run 0 continues a block
        if in_windows:
            for feat in numeric:
                rows, clipped = per_run[feat.name]
                feat.add_run(rows[0], clipped[0])
        last_closed = -1  # the last run closed from its matrix row (-1: none)
        layout = ([f.name for f in numeric], [f.packed_bins() for f in numeric])
        for k, (start, stop) in enumerate(runs):
            bid = int(bids[start])
            if self.open_meta is not None and self.open_meta[5] != bid:
                if k == 0 or (k == 1 and in_windows):
                    self._close_block(events_before + start, times[start])  # the block the windows hold
                else:
                    self._close_block(events_before + start, times[start], (*layout, packed[k - 1]))
                    last_closed = k - 1
            meta = self.open_meta or [int(offsets[start]), 0, times[start], 0, 0, bid, 0, 0.0, 0, 0, {}]
            meta[1], meta[3] = int(offsets[stop - 1]), times[stop - 1]
            meta[4] += stop - start
            meta[6] += n_dups[k]
            meta[7] += n_expected[k]
            meta[8] += n_scored[k]
            meta[9] += n_bad[k]
            _longest_into(meta[10], longest, k)
            self.open_meta = meta
            for cfeat, by_run, missing_by_run in tallies:
                cfeat.count += stop - start
                cfeat.missing += missing_by_run[k]
                cfeat.window.add_counts(by_run[k], stop - start, missing_by_run[k], cfeat.limits.allowed)
        last = len(runs) - 1
        if last > 0 or not in_windows:  # the last run is the open block now: into the windows
            for feat in numeric:
                rows, clipped = per_run[feat.name]
                feat.window.open = rows[last].copy()
                feat.open_clipped = float(clipped[last])
                if last_closed >= 0:
                    feat.window.closed = [rows[last_closed].copy()][-feat.window.blocks:]

    def _packed_runs(self, numeric: list[NumericFeature], per_run: dict[str, tuple[np.ndarray, np.ndarray]],
                     runs: int) -> np.ndarray:
        """Each run's numeric values as the blocks topic packs them (`monitor.core.blocks`): one row per run."""
        widths = [ROW_HEAD + feat.packed_bins() for feat in numeric]
        out = np.empty((runs, sum(widths)), dtype="<f8")
        at = 0
        for feat, width in zip(numeric, widths, strict=True):
            rows, clipped = per_run[feat.name]
            out[:, at:at + HEAD] = rows[:, :HEAD]
            out[:, at + CLIPPED] = clipped
            if width > ROW_HEAD:
                out[:, at + ROW_HEAD:at + width] = rows[:, HEAD:HEAD + width - ROW_HEAD]
            at += width
        return out

    def _close_block(self, event_number: int, next_time: int, packed: Packed | None = None) -> list[Finding]:
        """Close the open block (`next_time`: event time of the event that closed it); evaluate if due.

        `packed`: the block's numeric fields, bins and values when they are not in the feature windows (a
        block opened and closed inside one batch of `_apply_runs`)."""
        assert self.open_meta is not None
        if self.emit_blocks:
            self.emitted.append(self._block_summary(self.open_meta, next_time, packed))
        self.closed_meta.append(self.open_meta)
        del self.closed_meta[: -self.window_settings.blocks]
        self.open_meta = None
        if packed is None:
            for feat in self.numeric_features:
                feat.open_clipped = 0.0
                feat.window.close_block()
                feat.adopt_edges(event_number - 1)
        # (with `packed`, the numeric windows never held this block)
        for cfeat in self.categorical_features:
            cfeat.window.close_block()
        self.blocks_closed += 1
        if not self.evaluate:
            return []
        if self.window_settings.mode == "tumbling" and self.blocks_closed % self.window_settings.blocks:
            return []
        return self._evaluate(event_number)

    def _block_summary(self, meta: list[Any], next_time: int, packed: Packed | None = None) -> dict[str, Any]:
        block = self._signal(meta, next_time)
        if packed is None:
            numeric = self.numeric_features
            packed = ([f.name for f in numeric], [f.packed_bins() for f in numeric], pack([f.packed_row()
                                                                                        for f in numeric]))
        names, bins, values = packed
        block.update(numeric_fields=names, numeric_bins=bins,
                     numeric_values=values if isinstance(values, bytes) else values.tobytes())
        fields, categories, counts = pack_categorical([f.block_summary() for f in self.categorical_features])
        runs = sorted(meta[10].items())
        block.update(run_fields=[name for name, _ in runs], run_lengths=[int(r[0]) for _, r in runs],
                     run_values=[float(r[1]) for _, r in runs])
        block.update(seq=self.block_seq, events=int(meta[4]), duplicates=int(meta[6]), bad_times=int(meta[9]),
                     expected_correct=float(meta[7]), scored=int(meta[8]), categorical_fields=fields,
                     categorical_categories=categories, categorical_counts=counts)
        if self.segment is not None:
            # Stage 2 closes a segment's slots when it closes the stream's: the progress of a child's block is
            # its own last event, which is before the stream block's of the same slot.
            block["progress_time"] = block["end_time"]
        self.block_seq += 1
        return block

    def _signal(self, meta: list[Any], progress: int) -> dict[str, Any]:
        """A block with no data (seq -1): carries a schema change or a silence to the model stage."""
        return {"model": self.model, "stream": self.stream, "segment": self.segment or "", "topic": self.topic,
                "partition": self.partition, "seq": -1, "slot": int(meta[5]), "slot_ms": self.window_settings.block_ms,
                "start_time": int(meta[2]), "end_time": int(meta[3]), "progress_time": int(progress),
                "first_offset": int(meta[0]), "last_offset": int(meta[1]), "events": 0, "duplicates": 0, "bad_times": 0,
                "expected_correct": 0.0, "scored": 0, "model_version": self.last_version,
                "reference_version": self.ref_version, "numeric_fields": [], "numeric_bins": [],
                "numeric_values": b"", "categorical_fields": [], "categorical_categories": [],
                "categorical_counts": b"", "schema_changes": [],
                "silent_s": None, "idle": None, "moments": MOMENTS, "run_fields": [], "run_lengths": [],
                "run_values": []}

    def event_time(self) -> int:
        """The event time of the last event seen (-1 before any)."""
        meta = self.open_meta or (self.closed_meta[-1] if self.closed_meta else None)
        return -1 if meta is None else int(meta[3])

    def signal_idle(self) -> None:
        """Tell the model stage this partition has nothing more for now: it stops holding the watermark.

        The open block goes out first (its progress: just past its last event), so everything this partition
        has read is with the model stage; an event later in the same slot opens a block of its own."""
        self._close_children(None)
        if self.open_meta is not None and self.emit_blocks:
            self._close_block(self.events, int(self.open_meta[3]) + 1 if self.open_meta[3] >= 0 else -1)
        meta = self.open_meta or (self.closed_meta[-1] if self.closed_meta else
                                  [-1, -1, -1, -1, 0, -1, 0, 0.0, 0, 0, {}])
        signal = self._signal(meta, meta[3])
        signal["idle"] = True
        self.emitted.append(signal)
        self.idle_sent = True

    def _evaluate(self, event_number: int) -> list[Finding]:
        timed = [m for m in self.closed_meta if m[2] >= 0 and m[3] >= 0]
        values, drift = window_values(self.features, np.array([(m[2] + m[3]) // 2 for m in timed], dtype=np.int64),
                                      np.array([m[4] for m in timed], dtype=float))
        values += self._stream_checks()
        self.last_drift = {d.feature: (d.check, float(d.statistic), float(d.threshold)) for d in drift}
        self.last_time = self.closed_meta[-1][3] if self.closed_meta else -1
        return self._lifecycle(values, event_number)

    def _expected_correct(self, batch: DecodedBatch) -> tuple[np.ndarray, np.ndarray]:
        """Per event, the probability its decision is right if scores are calibrated (CBPE), and whether scored."""
        if self.score_field is None:
            return np.zeros(len(batch)), np.zeros(len(batch), dtype=bool)
        s = batch.numeric(self.score_field)[0]
        ok = np.isfinite(s)
        s = np.where(ok, np.clip(s, 0.0, 1.0), 0.0)
        return np.where(ok, np.where(s >= self.decision_threshold, s, 1.0 - s), 0.0), ok

    def expected_accuracy(self) -> float | None:
        """CBPE estimate of the accuracy over the window (an estimate: it assumes calibrated scores)."""
        scored = sum(m[8] for m in self.closed_meta)
        return sum(m[7] for m in self.closed_meta) / scored if scored else None

    def _stream_checks(self) -> list[CheckValue]:
        """Checks of the stream rather than a feature: duplicate ids, event rate against the reference."""
        count = sum(m[4] for m in self.closed_meta)
        out = stream_values(self.id_field, count, sum(m[6] for m in self.closed_meta), self.max_duplicate_rate,
                            self.cbpe_reference, sum(m[7] for m in self.closed_meta),
                            sum(m[8] for m in self.closed_meta), self.cbpe_min_drop,
                            sum(m[9] for m in self.closed_meta), self.time_check, self.cbpe_min_window)
        first, last = self.closed_meta[0], self.closed_meta[-1]
        if self.reference_rate and first[2] >= 0 and last[3] > first[2] and count > 1:
            # This partition's share of the stream, scaled by the topic's partition count.
            rate = (count - 1) / ((last[3] - first[2]) / 1000.0) * self.topic_partitions
            limit = self.min_rate_ratio * self.reference_rate
            out.append(CheckValue("*", "low_rate", rate, limit, rate < limit,
                                  {"reference_rate": f"{self.reference_rate:.4g}",
                                   "partitions": str(self.topic_partitions)}))
        return out

    def _lifecycle(self, values: list[CheckValue], event_number: int) -> list[Finding]:
        """OPEN when a check starts firing, nothing while it stays open, RESOLVED after enough quiet windows.
        A detector's incident resolves the same way: windows with no firing of it and its feature's window
        checks passing (`detectors_evaluated`)."""
        out = []
        first, first_t, count = self._window_bounds()
        last = self.closed_meta[-1]
        offset, time = last[1], (None if last[3] < 0 else last[3])
        self._gate_detectors(event_number)
        failing = {v.feature for v in values if v.firing}
        for key in detectors_evaluated(self.open_alerts, event_number - count,
                                       lambda k: k.split("/", 1)[0] in failing, self.window_settings.resolve_windows):
            feature, check = key.split("/", 1)
            out.append(Finding(feature, check, kind_of(check, self.stream), 0.0, 0.0, offset, time, event_number,
                               first, first_t, count, "RESOLVED", self.last_version,
                               {"resolved_by": "no firing and the window checks passing for "
                                               f"{self.window_settings.resolve_windows} windows"}))
        for v in values:
            key = f"{v.feature}/{v.check}"
            state = self.open_alerts.get(key)
            status: Status | None = None
            if v.firing:
                if state is None:
                    self.open_alerts[key] = {"since": event_number, "below": 0}
                    status = "OPEN"
                else:
                    state["below"] = 0
            elif state is not None:
                state["below"] += 1
                if state["below"] >= self.window_settings.resolve_windows:
                    del self.open_alerts[key]
                    status = "RESOLVED"
            if status is not None:
                out.append(Finding(v.feature, v.check, kind_of(v.check, self.stream), float(v.statistic),
                                   float(v.threshold), offset, time, event_number, first, first_t, count, status,
                                   self.last_version, dict(v.evidence)))
        return out

    # -- findings that are not about a window -----------------------------------------------------
    def schema_change(self, schema_id: int, changes: list[tuple[str, str, str]], offset: int,
                      event_time: int | None) -> list[Finding]:
        """SCHEMA findings the first time this partition sees a writer schema id that differs from ours."""
        if schema_id in self.schema_ids:
            return []
        if not changes and self.schema_ids:
            changes = [("*", "schema_new_version", "a new writer schema with the same fields and types")]
        self.schema_ids.append(schema_id)
        if self.emit_blocks:
            t = -1 if event_time is None else event_time
            signal = self._signal([offset, offset, t, t, 0, -1, 0, 0.0, 0], t)
            signal["schema_changes"] = [{"schema_id": schema_id, "field": name, "check": check, "detail": detail}
                                        for name, check, detail in changes]
            self.emitted.append(signal)
        return [Finding(name, check, AlertKind.SCHEMA, float(schema_id), 0.0, offset, event_time, self.events,
                        offset, event_time, 0, "OPEN", self.last_version,
                        {"schema_id": str(schema_id), "detail": detail})
                for name, check, detail in changes]

    def silence(self, idle_s: float, limit_s: float, position: int | None = None) -> list[Finding]:
        """A VOLUME finding when no event has arrived for `limit_s` seconds (the daemon's clock); for a
        partition that never delivered one, when the daemon gives its `position` (the log end it is at)."""
        meta = self.open_meta or (self.closed_meta[-1] if self.closed_meta else None)
        detail = {}
        if meta is None and position is not None:
            meta = [position, position - 1, -1, -1, 0, -1, 0, 0.0, 0, 0, {}]
            detail = {"detail": "no event since this partition was assigned", "next_offset": str(position)}
        if meta is None or idle_s < limit_s or "*/stream_stopped" in self.open_alerts:
            return []
        self.open_alerts["*/stream_stopped"] = {"since": self.events, "below": 0}
        if self.emit_blocks:
            signal = self._signal(meta, meta[3])
            signal["silent_s"] = float(idle_s)
            self.emitted.append(signal)
        t = None if meta[3] < 0 else meta[3]
        return [Finding("*", "stream_stopped", AlertKind.VOLUME, float(idle_s), float(limit_s), meta[1], t,
                        self.events, meta[1], t, 0, "OPEN", self.last_version,
                        {"last_offset": str(meta[1]), "topic": self.topic, **detail})]

    def _resolve_silence(self, offset: int, event_time: int | None) -> Finding:
        del self.open_alerts["*/stream_stopped"]
        return Finding("*", "stream_stopped", AlertKind.VOLUME, 0.0, 0.0, offset, event_time, self.events + 1,
                       offset, event_time, 0, "RESOLVED", self.last_version, {"topic": self.topic})

    # -- persistence -----------------------------------------------------------------------------
    def meta_state(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "stream": self.stream,
            "events": self.events,
            "rejects": self.rejects,
            "blocks_closed": self.blocks_closed,
            "block_seq": self.block_seq,
            "emit_order": self.emit_order,
            "idle_sent": self.idle_sent,
            "closed_meta": self.closed_meta,
            "open_meta": self.open_meta,
            "last_version": self.last_version,
            "quiet_until": self.quiet_until,
            "open_alerts": self.open_alerts,
            "schema_ids": self.schema_ids,
            "recent_ids": self.recent_ids.to_state(),
            "watermark": self.watermark,
            "bad_times": self.bad_times,
        }

    def to_fields(self) -> dict[str, bytes]:
        """Redis hash fields (`monitor.core.state_codec`): `__meta__`, one per feature (`<model>/<feature>`),
        and the blobs they refer to."""
        states = {META_FIELD: self.meta_state()}
        for name, feat in self.features.items():
            states[f"{self.model}/{name}"] = feat.to_state()
        # Changes when a block closes, not at every batch; each block's entry is stored once.
        closed = states[META_FIELD].pop("closed_meta")
        states[CLOSED_FIELD] = {"closed_meta": [stored_once(m, min_bytes=16) for m in closed]}
        out = encode_fields(split_hot(split_hot(states, HOT_PATHS), [("window", "closed")], BLOCKS_FIELD))
        for label, child in self.children.items():  # a child's fields under #seg/<label>/ (blobs are shared)
            out.update({k if k.startswith(BLOB_PREFIX) else f"{SEGMENT_PREFIX}{label}/{k}": v
                        for k, v in child.to_fields().items()})
        return out

    def load_fields(self, fields: dict[str, bytes]) -> None:
        for label, child in self.children.items():
            prefix = f"{SEGMENT_PREFIX}{label}/"
            own = {k[len(prefix):]: v for k, v in fields.items() if k.startswith(prefix)}
            if META_FIELD in own:  # a segment new to this reference starts afresh
                child.load_fields({**own, **{k: v for k, v in fields.items() if k.startswith(BLOB_PREFIX)}})
        fields = {k: v for k, v in fields.items() if not k.startswith(SEGMENT_PREFIX)}
        states = read_fields(fields)
        meta = states[META_FIELD]
        meta.update(states.get(CLOSED_FIELD, {}))
        self.events, self.rejects = int(meta["events"]), int(meta["rejects"])
        self.blocks_closed = int(meta.get("blocks_closed", 0))
        self.block_seq = int(meta.get("block_seq", 0))
        self.emit_order = int(meta.get("emit_order", self.block_seq))
        self.idle_sent = bool(meta.get("idle_sent", False))
        # Block metadata of 0.1 (9 entries) gets no out-of-bounds count and no runs.
        self.closed_meta = [_full_meta(m) for m in meta["closed_meta"]]
        self.open_meta = None if meta["open_meta"] is None else _full_meta(meta["open_meta"])
        self.watermark = int(meta.get("watermark", max([m[3] for m in self.closed_meta] + [-1])))
        self.bad_times = int(meta.get("bad_times", 0))
        self.last_version = meta.get("last_version")
        self.quiet_until = {k: int(v) for k, v in meta["quiet_until"].items()}
        self.open_alerts = dict(meta.get("open_alerts", {}))
        self.schema_ids = list(meta.get("schema_ids", []))
        self.recent_ids.load_state(meta.get("recent_ids"))
        for name, feat in self.features.items():
            state = states.get(f"{self.model}/{name}")
            if state is not None:
                feat.load_state(state)


def _longest_into(acc: dict[str, list[Any]], longest: dict[str, tuple[list[int], list[float]]], k: int) -> None:
    """Fold run `k`'s longest runs into a block's (meta[10]: field -> [length, value]). On a tie the later
    run wins, as inside a batch (`longest_runs` keeps the last position): the same for any batch split."""
    for name, (lengths, values) in longest.items():
        if lengths[k] and lengths[k] >= acc.get(name, [0])[0]:
            acc[name] = [int(lengths[k]), float(values[k])]


def _full_meta(meta: list[Any]) -> list[Any]:
    """Block metadata as this version keeps it: 0.1's 9 entries get no out-of-bounds count and no runs."""
    out = list(meta) + [0] * max(10 - len(meta), 0)
    return [*out, {}] if len(out) < 11 else out


