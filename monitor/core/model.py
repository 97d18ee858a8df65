"""Stage 2: one model stream seen whole, merged from the block summaries of all its input partitions.

Blocks are merged by event-time slot. A slot closes when the model's watermark (the least progress over
partitions that are not idle, minus `grace_ms`) passes its end; a block for a slot already closed is late:
counted, never reopening it. Each closed slot joins the window (the last `blocks` slots) and the window is
checked: contract rates, drift against the reference with Benjamini-Hochberg across the features, a CUSUM
per numeric feature, stream checks. Results go to `Incidents`. Pure and deterministic given the blocks:
idleness is a signal from stage 1 (which reads the partition's end), not a clock here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from monitor.core import stats
from monitor.core.blocks import CLIPPED, ROW_HEAD, CategoricalSummary, Layout, unpack_categorical
from monitor.core.explain import explanation
from monitor.core.incidents import MODEL_WIDE, CheckResult, Incidents, WindowSpan
from monitor.core.multivariate import MV_FIELD
from monitor.core.partition import (
    CategoricalFeature,
    CheckValue,
    Feature,
    NumericFeature,
    TimeCheck,
    build_features,
    kind_of,
    stream_values,
    window_values,
)
from monitor.core.profiles import FieldContract, FieldProfile
from monitor.core.schema import FieldSpec
from monitor.core.seasons import SeasonalReference, bucket_name, buckets
from monitor.core.sketches import (
    FINITE,
    HEAD,
    M2,
    MISSING_KEY,
    MOMENTS,
    N_KEY,
    SUM,
    UNSEEN_KEY,
    pack_array,
    unpack_array,
)
from monitor.core.sketches import N as COUNT
from monitor.core.types import Alert, AlertKind
from monitor.errors import DecodeError
from monitor.settings import CheckSettings, ModelViewSettings, WindowSettings

Block = dict[str, Any]  # a decoded schemas/block.avsc record
ALL_SENT = 2**62  # the watermark when every partition is idle: all open slots can close
Parsed = tuple[np.ndarray, list[CategoricalSummary]]  # a block's numeric values (this layout), categorical counts
# Per-partition counts kept per slot for evidence: which partitions showed the problem a rate check found.
# The alerts whose evidence ranks the features that can explain them (the predictions stream's).
EXPLAINED = (AlertKind.PREDICTION_DRIFT, AlertKind.CONCEPT_DRIFT)
_PART_COUNTS = {"missing_rate": 0, "nan_rate": 1, "sentinel_rate": 2, "out_of_range": 3, "unseen_category": 4}


class ModelStream:
    """The merged view of one stream (features or predictions) of one model, over all input partitions."""

    def __init__(
        self,
        model: str,
        stream: str,
        topic: str,
        fields: list[FieldSpec],
        checks: dict[str, CheckSettings],
        window: WindowSettings,
        view: ModelViewSettings,
        *,
        reference: dict[str, FieldProfile] | None = None,
        ref_version: str | None = None,
        contract: dict[str, FieldContract] | None = None,
        sentinels: dict[str, list[float]] | None = None,
        id_field: str | None = None,
        max_duplicate_rate: float = 0.01,
        reference_rate: float | None = None,
        min_rate_ratio: float = 0.1,
        cbpe_reference: float | None = None,
        cbpe_min_drop: float = 0.03,
        cbpe_min_window: int = 500,
        freshness_s: float | None = None,
        expected_partitions: int = 0,
        time_check: TimeCheck | None = None,
        seasons: SeasonalReference | None = None,
        send_possible: bool = False,
        segment: str | None = None,
    ) -> None:
        self.model, self.stream, self.topic = model, stream, topic
        # "<field>=<value>": the view of one segment's events; its slots close when the stream's do (`follow`),
        # and it runs the features' window checks and drift only (no stream, stuck or CUSUM checks).
        self.segment = segment
        self.window_settings, self.view = window, view
        self.ref_version = ref_version
        self.id_field = id_field
        self.max_duplicate_rate = max_duplicate_rate
        self.reference_rate = reference_rate
        self.min_rate_ratio = min_rate_ratio
        self.cbpe_reference = cbpe_reference
        self.cbpe_min_drop = cbpe_min_drop
        self.cbpe_min_window = cbpe_min_window
        self.freshness_s = freshness_s
        self.time_check = time_check
        self.send_possible = send_possible
        self.features: dict[str, Feature] = build_features(fields, checks, window.blocks, reference, ref_version,
                                                           contract, sentinels, seasons)
        self.numeric = [f for f in self.features.values() if isinstance(f, NumericFeature)]
        self.categorical = [f for f in self.features.values() if isinstance(f, CategoricalFeature)]
        # Where each numeric field sits in a block's packed `numeric_values` from this reference: blocks laid
        # out so (the rule) merge in one addition, others are converted (`packed`).
        self.layout = Layout([f.name for f in self.numeric],
                             [f.window.hist_len if f.profile is not None and f.profile.edges else 0
                              for f in self.numeric])
        self._layouts: dict[tuple[tuple[str, ...], tuple[int, ...]], Layout] = {self.layout.key: self.layout}
        self.totals = self.layout.empty()  # every block's numeric values added up
        self._bind_totals()
        # partition -> {"next_seq", "ahead": {seq: progress}, "progress", "silent", "idle"}
        self.partitions: dict[str, dict[str, Any]] = {}
        self.pending: dict[int, dict[str, Any]] = {}  # open slots, merged over partitions
        self.closed_slot: int | None = None
        # Window ring, one entry per closed slot: [slot, events, duplicates, expected, scored, first_time,
        # last_time, partitions, model_version, per-partition counts {field: {partition: [5 counts]}},
        # event times out of bounds {partition: count}, longest runs of one value {field: [length, value]}]
        self.slots: list[list[Any]] = []
        self.cusum: dict[str, list[float]] = {f.name: [0.0, 0.0] for f in self.numeric}
        self.warm: dict[str, list[float]] = {f.name: [0.0, 0.0, 0.0] for f in self.numeric}  # n, mean, m2
        self.counts = {"blocks": 0, "events": 0, "duplicate_blocks": 0, "late_blocks": 0, "late_events": 0,
                       "gaps": 0, "forced_closes": 0}
        self.signals: list[CheckResult] = []  # schema changes since the last evaluation
        self.incidents = Incidents(model, stream, topic, len([f for f in self.features if f != MV_FIELD]),
                                   window.resolve_windows,
                                   view.model_incident_share if stream == "features" else 0.0,
                                   window.resolve_margin, segment)
        # The input topic's partition count: one never heard from (no block, no idle signal) holds the watermark.
        self.expected_partitions = expected_partitions
        self.last_results: list[CheckResult] = []  # the last evaluation (not stored; metrics)
        self.last_drift: dict[str, list[Any]] = {}  # field -> [statistic name, value, threshold] (stored: status)
        # The predictions stream: the features stream's last drift and the features' importance, to rank what
        # explains a prediction drift (`monitor.core.explain`); set by the model's partition.
        self.explain: Callable[[], tuple[dict[str, list[Any]], dict[str, float]]] | None = None
        # A segment's view: the fields with an incident open in the whole stream's view. A segment's failing
        # check of such a field opens nothing: the stream's incident has it (one problem, one incident).
        self.stream_open: Callable[[], set[str]] | None = None
        # ... and the stream's rates at its last evaluation: a segment's rate check fails only when its rate is
        # significantly above the stream's (a problem of the whole stream shows in every segment, noisily).
        self.stream_rates: Callable[[], dict[tuple[str, str], float]] | None = None
        self.last_rates: dict[tuple[str, str], float] = {}  # (field, check) -> rate (not stored: set each time)

    # -- input -------------------------------------------------------------------------------------
    def add(self, block: Block, parsed: Parsed | None = None) -> list[Alert]:
        """Take one block (or signal) of one partition; signals (silence, schema) may alert at once.

        `parsed`: the block's values from `parse(block)` when the caller checked them already."""
        part = str(block["partition"])
        state = self.partitions.setdefault(part, {"next_seq": 0, "ahead": {}, "progress": None, "silent": None,
                                                  "idle": False})
        seq = int(block["seq"])
        if seq < 0:
            return self._signal(block, state)
        if parsed is None:
            parsed = self.parse(block)  # before any change: a malformed block changes nothing
        packed, categorical = parsed
        if seq < state["next_seq"] or str(seq) in state["ahead"]:
            self.counts["duplicate_blocks"] += 1  # re-sent after a crash of stage 1: applied already
            return []
        if seq == state["next_seq"]:
            state["next_seq"] += 1
            state["progress"] = int(block["progress_time"])
            while str(state["next_seq"]) in state["ahead"]:  # a gap filled: progress moves past it
                state["progress"] = state["ahead"].pop(str(state["next_seq"]))
                state["next_seq"] += 1
        else:
            self.counts["gaps"] += 1
            state["ahead"][str(seq)] = int(block["progress_time"])
        alerts: list[Alert] = []
        state["silent"] = None
        state["idle"] = False
        self.counts["blocks"] += 1
        self.counts["events"] += int(block["events"])
        self._add_totals(packed, categorical)
        slot = int(block["slot"])
        if self.closed_slot is not None and slot <= self.closed_slot:
            self.counts["late_blocks"] += 1
            self.counts["late_events"] += int(block["events"])
            return alerts
        self._merge(slot, block, packed, categorical)
        return alerts

    def _bind_totals(self) -> None:
        """Each numeric feature's totals (status, report) are a view of its head in `self.totals`."""
        for feat in self.numeric:
            feat.totals = self.layout.row(self.totals, feat.name)[:HEAD]

    def parse(self, block: Block) -> Parsed:
        """The block's numeric values in this stream's layout and its categorical counts; DecodeError when they
        do not add up."""
        names, bins = block.get("numeric_fields") or [], block.get("numeric_bins") or []
        raw = bytes(block.get("numeric_values") or b"")
        same_ref = block.get("reference_version") == self.ref_version
        try:
            if names == self.layout.names and bins == self.layout.bins:  # the rule: compared at C speed
                source: Layout | None = self.layout
            else:
                key = (tuple(names), tuple(int(b) for b in bins))
                source = self._layouts.get(key)
            if source is None:
                source = Layout(list(key[0]), list(key[1]))
                if len(self._layouts) < 64:  # a handful of layouts in practice (references being rolled out)
                    self._layouts[key] = source
            values = source.read(raw)
            if block.get("moments") != MOMENTS and len(values):  # from a stage 1 of 0.1: a sum of squares
                values = values.copy()
                source.migrate_m2(values)
            categorical = unpack_categorical(block.get("categorical_fields") or [],
                                             block.get("categorical_categories") or [],
                                             bytes(block.get("categorical_counts") or b""))
        except ValueError as exc:
            raise DecodeError("bad_block", f"block seq {block['seq']} of partition {block['partition']}: {exc}"
                              ) from exc
        if source is self.layout and same_ref:
            return values, categorical
        return self.layout.convert(source, values, same_ref), categorical

    def _signal(self, block: Block, state: dict[str, Any]) -> list[Alert]:
        part = int(block["partition"])
        results = []
        for change in block.get("schema_changes") or []:
            results.append(CheckResult(change["field"], change["check"], AlertKind.SCHEMA,
                                       float(change["schema_id"]), 0.0, True,
                                       {"schema_id": str(change["schema_id"]), "detail": change["detail"]},
                                       (part,)))
        if block.get("idle") is not None:
            state["idle"] = bool(block["idle"])
            if not state["idle"] and int(block["progress_time"]) >= 0:
                # Back from idle: it holds the watermark at its first new event until that block closes.
                state["progress"] = int(block["progress_time"])
        if block.get("silent_s") is not None:
            state["silent"] = float(block["silent_s"])
            results += self._silence_results()
        if not results:
            return []
        t = int(block["end_time"])
        span = WindowSpan(self.closed_slot if self.closed_slot is not None else -1, t if t >= 0 else None,
                          t if t >= 0 else None, 0, block.get("model_version"))
        return self.incidents.update(results, span, tick=False)

    def _silence_results(self) -> list[CheckResult]:
        if self.freshness_s is None:
            return []
        silent = {int(p): s["silent"] for p, s in self.partitions.items() if s["silent"] is not None}
        if not silent:
            return [CheckResult("*", "stream_stopped", AlertKind.VOLUME, 0.0, self.freshness_s, False)]
        return [CheckResult("*", "stream_stopped", AlertKind.VOLUME, max(silent.values()), self.freshness_s, True,
                            {"topic": self.topic, "partitions": ",".join(str(p) for p in sorted(silent)),
                             "partitions_silent": str(len(silent)), "partitions_known": str(len(self.partitions))},
                            tuple(sorted(silent)))]

    def _add_totals(self, packed: np.ndarray, categorical: list[CategoricalSummary]) -> None:
        self.layout.merge(self.totals, packed)
        for name, count, missing, _unseen, _cats in categorical:
            cfeat = self.features.get(name)
            if isinstance(cfeat, CategoricalFeature):
                cfeat.count += count
                cfeat.missing += missing

    def _merge(self, slot: int, block: Block, packed: np.ndarray, categorical: list[CategoricalSummary]) -> None:
        merged = self.pending.setdefault(slot, {"events": 0, "duplicates": 0, "bad_times": {}, "expected": 0.0,
                                                "scored": 0,
                                                "first_time": None, "last_time": None, "partitions": [],
                                                "version": None, "packed": None, "categorical": {}, "by_part": {}})
        merged["events"] += int(block["events"])
        merged["duplicates"] += int(block["duplicates"])
        runs = merged.setdefault("runs", {})
        for name, length, value in zip(block.get("run_fields") or [], block.get("run_lengths") or [],
                                       block.get("run_values") or [], strict=True):
            if int(length) > runs.get(name, [0])[0]:
                runs[name] = [int(length), float(value)]
        bad = int(block.get("bad_times", 0))
        if bad:
            key, slot_bad = str(block["partition"]), merged.setdefault("bad_times", {})
            slot_bad[key] = slot_bad.get(key, 0) + bad
        merged["expected"] += float(block["expected_correct"])
        merged["scored"] += int(block["scored"])
        start, end = int(block["start_time"]), int(block["end_time"])
        merged["first_time"] = start if merged["first_time"] is None else min(merged["first_time"], start)
        merged["last_time"] = end if merged["last_time"] is None else max(merged["last_time"], end)
        part = int(block["partition"])
        if part not in merged["partitions"]:
            merged["partitions"] = sorted([*merged["partitions"], part])
        if block.get("model_version") is not None:
            merged["version"] = block["model_version"]
        if merged["packed"] is None:
            merged["packed"] = packed.copy()
        else:
            self.layout.merge(merged["packed"], packed)
        # Which partitions showed what the rate checks count (evidence), for the fields where any did.
        rates = packed[self.layout.rates]  # per field: missing, nan, inf, sentinel, below, above
        if rates.any():
            counts = np.stack([rates[:, 0], rates[:, 1] + rates[:, 2], rates[:, 3], rates[:, 4] + rates[:, 5]],
                              axis=1)
            for i in np.flatnonzero(counts.any(axis=1)).tolist():
                self._count_part(merged, self.layout.names[i], part, [*counts[i].tolist(), 0])
        for name, count, missing, unseen, cats in categorical:
            if not isinstance(self.features.get(name), CategoricalFeature):
                continue
            tally = merged["categorical"].setdefault(name, {})
            for k, v in cats.items():
                tally[k] = tally.get(k, 0) + v
            tally[N_KEY] = tally.get(N_KEY, 0) + count
            tally[MISSING_KEY] = tally.get(MISSING_KEY, 0) + missing
            tally[UNSEEN_KEY] = tally.get(UNSEEN_KEY, 0) + unseen
            self._count_part(merged, name, part, [missing, 0, 0, 0, unseen])

    @staticmethod
    def _count_part(merged: dict[str, Any], name: str, part: int, counts: list[int]) -> None:
        if not any(counts):
            return
        by = merged["by_part"].setdefault(name, {})
        prev = by.get(str(part), [0, 0, 0, 0, 0])
        by[str(part)] = [int(a) + int(b) for a, b in zip(prev, counts, strict=True)]

    # -- closing slots -----------------------------------------------------------------------------
    def watermark(self) -> int | None:
        """Event time up to which every partition that is not idle has sent its blocks, minus the grace.

        Stage 1 says when a partition is idle (read to its end, nothing new for idle_timeout_s) and when it
        is not any more; a partition never heard from holds the watermark, as one behind does.
        """
        if any(str(p) not in self.partitions for p in range(self.expected_partitions)):
            return None
        holding = [s["progress"] for s in self.partitions.values() if s["silent"] is None and not s["idle"]]
        if not holding:
            # Everyone idle: each sent its open block when it went idle, so every open slot is complete.
            return ALL_SENT if any(s["idle"] for s in self.partitions.values()) else None
        if any(h is None for h in holding):
            return None  # a first block still missing
        return int(min(holding)) - self.view.grace_ms

    def follow(self, closed_slot: int | None) -> list[Alert]:
        """A segment's view: close its slots up to the one the stream's view closed last (their blocks came
        before the stream's blocks that moved its watermark past them)."""
        return self._close_pending(lambda slot: closed_slot is not None and slot <= closed_slot)

    def advance(self, after_close: Callable[[int], list[Alert]] | None = None) -> list[Alert]:
        """Close every slot the watermark has passed (oldest first) and evaluate the window after each;
        `after_close(slot)` right after each (the segments' views close it too, seeing this view as it was
        at that slot)."""
        if self.segment is not None:
            return []  # a segment follows its stream
        mark = self.watermark()
        slot_ms = self.window_settings.block_ms
        return self._close_pending(lambda slot: mark is not None and (slot + 1) * slot_ms <= mark, after_close)

    def _close_pending(self, passed: Callable[[int], bool],
                       after_close: Callable[[int], list[Alert]] | None = None) -> list[Alert]:
        """Close the open slots, oldest first, while `passed(slot)` (or too many are open)."""
        alerts: list[Alert] = []
        for slot in sorted(self.pending):
            forced = len(self.pending) > self.view.max_open_slots
            if not forced and not passed(slot):
                break
            self.counts["forced_closes"] += int(forced)
            alerts += self._close(slot)
            if after_close is not None:
                alerts += after_close(slot)
        return alerts

    def _close(self, slot: int) -> list[Alert]:
        merged = self.pending.pop(slot)
        self.closed_slot = slot
        vectors = self._vectors(merged["packed"])
        for feat in self.numeric:
            feat.window.open = vectors[feat.name][0] if feat.name in vectors else None
            feat.window.close_block()
        for cfeat in self.categorical:
            cfeat.window.open = dict(merged["categorical"].get(cfeat.name, {}))
            cfeat.window.close_block()
        self.slots.append([slot, merged["events"], merged["duplicates"], merged["expected"], merged["scored"],
                           merged["first_time"], merged["last_time"], merged["partitions"], merged["version"],
                           merged["by_part"], merged.get("bad_times", {}), merged.get("runs", {})])
        del self.slots[: -self.window_settings.blocks]
        detections = self._cusum(vectors, tuple(merged["partitions"]), slot)
        return self._evaluate(detections)

    def _vectors(self, packed: np.ndarray | None) -> dict[str, tuple[np.ndarray, float]]:
        """A merged slot's numeric fields that had values as sketch vectors (`HEAD + hist_len`, the bins zero
        when the blocks had none) with their clipped sums."""
        out: dict[str, tuple[np.ndarray, float]] = {}
        if packed is None:
            return out
        for feat in self.numeric:
            row = self.layout.row(packed, feat.name)
            if row[COUNT] == 0:
                continue  # no block had the field: its window does not slide
            vec = np.zeros(HEAD + feat.window.hist_len)
            vec[:HEAD] = row[:HEAD]
            hist = row[ROW_HEAD:]
            if len(hist) == feat.window.hist_len:
                vec[HEAD:] = hist
            out[feat.name] = (vec, float(row[CLIPPED]))
        return out

    def _slot_time(self, slot: int) -> int:
        """A slot's event time for its season: its middle."""
        return slot * self.window_settings.block_ms + self.window_settings.block_ms // 2

    def _standardiser(self, feat: NumericFeature, vec: np.ndarray | None, slot: int
                      ) -> tuple[float, float, str] | None:
        """Mean and std of the slot's season in the reference, or of the reference, or of the first `warmup`
        finite values (whole slots) without a reference; with what they are."""
        if feat.seasons is not None:
            by = feat.seasons.by
            at = np.array([self._slot_time(slot)])
            b = buckets(by, at)
            means, stds = feat.seasons.standardisers(at)
            if np.isfinite(means[0]) and np.isfinite(stds[0]):
                return float(means[0]), float(stds[0]), f"reference season {by} {bucket_name(by, int(b[0]))}"
        if feat.mean is not None and feat.std:
            return feat.mean, feat.std, "reference"
        warm = self.warm[feat.name]
        if warm[0] >= feat.checks.warmup:
            std = math.sqrt(warm[2] / (warm[0] - 1)) if warm[0] > 1 else 0.0
            return warm[1], std if std > 0 else 1.0, "warm-up"
        if vec is not None and vec[FINITE] > 0:
            # Chan et al.'s parallel update of the slots' (count, mean, M2): stable for any magnitude.
            n_b = float(vec[FINITE])
            mean_b = float(vec[SUM]) / n_b
            m2_b = float(vec[M2])
            n_a, mean_a, m2_a = warm
            n = n_a + n_b
            delta = mean_b - mean_a
            warm[:] = [n, mean_a + delta * n_b / n, m2_a + m2_b + delta * delta * n_a * n_b / n]
        return None

    def _cusum(self, vectors: dict[str, tuple[np.ndarray, float]], partitions: tuple[int, ...], slot: int
               ) -> list[CheckResult]:
        out = []
        for feat in self.numeric:
            conf = feat.checks.cusum
            vec, clipped = vectors.get(feat.name, (None, 0.0))
            std_mean = self._standardiser(feat, vec, slot)
            if not conf.enabled or std_mean is None or vec is None or vec[FINITE] == 0:
                continue
            mean, std, by = std_mean
            n = float(vec[FINITE])
            z_sum = (clipped - n * mean) / std
            c = self.cusum[feat.name]
            c[0] = max(0.0, c[0] + z_sum - conf.k * n)
            c[1] = max(0.0, c[1] - z_sum - conf.k * n)
            if max(c) > conf.h:
                up = c[0] >= c[1]
                out.append(CheckResult(feat.name, "cusum", kind_of("cusum", self.stream), max(c), conf.h, True,
                                       {"direction": "up" if up else "down", "slot_mean": f"{vec[SUM] / n:.6g}",
                                        "mean": f"{mean:.6g}", "std": f"{std:.6g}", "k": f"{conf.k:g}",
                                        "standardised_by": by},
                                       partitions))
                c[0] = c[1] = 0.0  # re-armed: a lasting shift fires again and keeps its incident open
        return out

    def _evaluate(self, detections: list[CheckResult]) -> list[Alert]:
        values, _drift = window_values(self.features, np.array([self._slot_time(int(s[0])) for s in self.slots],
                                                                dtype=np.int64),
                                       np.array([float(s[1]) for s in self.slots]))
        if self.segment is None:
            values += self._stream_checks() + self._stuck_checks()
        everyone = tuple(sorted({p for s in self.slots for p in s[7]}))
        # A possible drift (significant, under the effect floor) is recorded (last_drift: status, history) and
        # alerted only with alerts.send_possible, at severity POSSIBLE.
        results = [CheckResult(v.feature, v.check, kind_of(v.check, self.stream), float(v.statistic),
                               float(v.threshold), v.firing or (self.send_possible and v.level == "possible"),
                               {**v.evidence, "level": v.level} if v.level else dict(v.evidence),
                               self._partitions(v, everyone))
                   for v in values]
        results += detections + self.signals + (self._silence_results() if self.segment is None else [])
        self.last_rates = {(r.field, r.check): r.statistic for r in results if r.check in _PART_COUNTS}
        if self.stream_open is not None and any(r.failing for r in results):
            covered = self.stream_open()
            results = [replace(r, failing=False, evidence={**r.evidence, "explained_by": "the stream's incident"})
                       if r.failing and r.field in covered else r for r in results]
        if self.stream_rates is not None and any(r.failing and r.check in _PART_COUNTS for r in results):
            rates = self.stream_rates()
            n = sum(int(s[1]) for s in self.slots)
            results = [self._versus_stream(r, rates, n) if r.failing and r.check in _PART_COUNTS else r
                       for r in results]
        if self.explain is not None and any(r.failing and r.kind in EXPLAINED for r in results):
            why = explanation(*self.explain())
            results = [replace(r, evidence={**r.evidence, **why}) if r.failing and r.kind in EXPLAINED else r
                       for r in results]
        self.signals = []
        self.last_results = results
        self.last_drift = {r.field: [r.check, r.statistic, r.threshold,
                                     r.evidence.get("level") or ("drift" if r.failing else "")] for r in results
                           if r.kind in (AlertKind.DRIFT, AlertKind.PREDICTION_DRIFT) and r.check != "cusum"}
        first, last = self.slots[0], self.slots[-1]
        span = WindowSpan(int(last[0]), first[5], last[6], sum(int(s[1]) for s in self.slots), last[8])
        return self.incidents.update(results, span)

    def _stuck_checks(self) -> list[CheckValue]:
        """stuck_value: the longest run of one repeated value in the window (any partition), against the run
        length the reference makes too unlikely (`stuck_threshold`)."""
        out = []
        for feat in self.numeric:
            if feat.stuck_threshold is None:
                continue
            length, value = max((s[11].get(feat.name, [0, math.nan]) for s in self.slots), key=lambda r: r[0])
            share = feat.profile.top_share if feat.profile is not None else None
            out.append(CheckValue(feat.name, "stuck_value", float(length), float(feat.stuck_threshold),
                                  length >= feat.stuck_threshold,
                                  {"value": f"{value:.6g}", "run": str(length),
                                   "reference_top_share": f"{share:.3g}" if share is not None else ""}))
        return out

    def _partitions(self, v: CheckValue, everyone: tuple[int, ...]) -> tuple[int, ...]:
        """The partitions that showed what a failing rate check counts; every partition for the others."""
        if v.check == "event_time" and v.firing:
            return tuple(sorted({int(part) for s in self.slots for part in s[10]}))
        index = _PART_COUNTS.get(v.check)
        if index is None or not v.firing:
            return everyone
        hit: set[int] = set()
        for s in self.slots:
            for part, counts in s[9].get(v.feature, {}).items():
                if counts[index]:
                    hit.add(int(part))
        return tuple(sorted(hit))

    def _stream_checks(self) -> list[CheckValue]:
        count = sum(int(s[1]) for s in self.slots)
        out = stream_values(self.id_field, count, sum(int(s[2]) for s in self.slots), self.max_duplicate_rate,
                            self.cbpe_reference, sum(float(s[3]) for s in self.slots),
                            sum(int(s[4]) for s in self.slots), self.cbpe_min_drop,
                            sum(sum(s[10].values()) for s in self.slots), self.time_check, self.cbpe_min_window)
        if self.reference_rate and len(self.slots) == self.window_settings.blocks and count > 1:
            span_s = len(self.slots) * self.window_settings.block_ms / 1000.0
            rate = count / span_s
            limit = self.min_rate_ratio * self.reference_rate
            out.append(CheckValue(MODEL_WIDE, "low_rate", rate, limit, rate < limit,
                                  {"reference_rate": f"{self.reference_rate:.4g}", "window_s": f"{span_s:g}"}))
        return out

    # -- persistence -------------------------------------------------------------------------------
    def _versus_stream(self, r: CheckResult, rates: dict[tuple[str, str], float], n: int) -> CheckResult:
        """A segment's failing rate check against the stream's rate: it stays failing only when a binomial test
        puts the segment's count above the stream's rate (p under the feature's drift FDR, split over the
        segments)."""
        base = rates.get((r.field, r.check))
        feat = self.features.get(r.field)
        if base is None or feat is None or n <= 0:
            return r
        k = round(r.statistic * n)
        p = stats.binomial_above(k, n, base)
        evidence = {**r.evidence, "stream_rate": f"{base:.4g}", "versus_stream_p": f"{p:.3g}"}
        if p < feat.checks.drift.fdr:
            return replace(r, evidence=evidence)
        return replace(r, failing=False, evidence={**evidence, "explained_by": "the stream's own rate"})

    def open_fields(self) -> set[str]:
        """The fields with an open incident (those gathered in a model-wide one too)."""
        out = set()
        for inc in self.incidents.open.values():
            out.add(str(inc["field"]))
            out.update(str(c["field"]) for c in inc["checks"].values())
        return out

    def to_state(self) -> dict[str, Any]:
        return {
            "ref_version": self.ref_version,
            "partitions": self.partitions,
            "pending": {str(k): {**v, "packed": None if v["packed"] is None else pack_array(v["packed"])}
                        for k, v in self.pending.items()},
            "closed_slot": self.closed_slot,
            "slots": self.slots,
            "cusum": self.cusum,
            "warm": self.warm,
            "moments": MOMENTS,
            "counts": self.counts,
            "signals": [[r.field, r.check, str(r.kind), r.statistic, r.threshold, r.evidence, list(r.partitions)]
                        for r in self.signals],
            "incidents": self.incidents.to_state(),
            "last_drift": self.last_drift,
            "features": {name: f.to_state() for name, f in self.features.items()},
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.partitions = state["partitions"]
        self.closed_slot = state["closed_slot"]
        self.counts.update(state["counts"])
        self.incidents.load_state(state["incidents"])
        self.last_drift = dict(state.get("last_drift", {}))
        self.signals = [CheckResult(f, c, AlertKind(k), s, t, True, e, tuple(p))
                        for f, c, k, s, t, e, p in state.get("signals", [])]
        for name, raw in state["features"].items():
            feat = self.features.get(name)
            if feat is not None:
                feat.load_state(raw)
        for feat in self.numeric:
            self.layout.row(self.totals, feat.name)[:HEAD] = feat.totals[:HEAD]
        self._bind_totals()
        if state.get("ref_version") != self.ref_version:
            return  # a new reference: windows, pending slots and detectors start afresh (as in stage 1)
        self.pending = {int(k): {**v, "packed": None if v["packed"] is None else unpack_array(v["packed"])}
                        for k, v in state["pending"].items()}
        if state.get("moments") != MOMENTS:  # written by 0.1: the open slots' M2 slots held sums of squares
            for v in self.pending.values():
                if v["packed"] is not None:
                    self.layout.migrate_m2(v["packed"])
        # Slots of 0.1 (10 entries) get no out-of-bounds counts and no runs.
        self.slots = [s + [{}] * (12 - len(s)) for s in state["slots"]]
        self.cusum.update(state["cusum"])
        self.warm.update(state["warm"])
