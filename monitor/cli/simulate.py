"""Realistic feature and prediction events for the example churn model, with injectable incidents.

Columns are drawn with seeded numpy generators, so the same arguments give the same events; incidents
use a generator of their own, so adding one leaves the rest of the stream unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from monitor.core.spec import parse_spec
from monitor.errors import ConfigError

# name -> (generator, standard deviation of the generating distribution)
Gen = Callable[[np.random.Generator, int], np.ndarray]
NUMERIC: dict[str, tuple[Gen, float]] = {
    "age": (lambda r, n: r.normal(42.0, 12.0, n), 12.0),
    "tenure_months": (lambda r, n: r.integers(1, 73, n), float(np.sqrt((72**2 - 1) / 12))),
    "monthly_charges": (lambda r, n: r.normal(65.0, 20.0, n), 20.0),
    "total_charges": (lambda r, n: r.lognormal(7.0, 0.8, n), float(np.sqrt((np.exp(0.64) - 1) * np.exp(14.64)))),
    "support_calls": (lambda r, n: r.poisson(1.5, n), float(np.sqrt(1.5))),
    "session_minutes": (lambda r, n: r.gamma(4.0, 6.0, n), 12.0),
    "days_since_login": (lambda r, n: r.exponential(5.0, n), 5.0),
    "data_usage_gb": (lambda r, n: r.lognormal(2.0, 0.5, n), float(np.sqrt((np.exp(0.25) - 1) * np.exp(4.25)))),
    "discount_rate": (lambda r, n: r.uniform(0.0, 0.3, n), 0.3 / np.sqrt(12)),
    "credit_score": (lambda r, n: r.normal(680.0, 60.0, n), 60.0),
}
MEANS = {"age": 42.0, "tenure_months": 36.5, "monthly_charges": 65.0, "total_charges": float(np.exp(7.32)),
         "support_calls": 1.5, "session_minutes": 24.0, "days_since_login": 5.0,
         "data_usage_gb": float(np.exp(2.125)), "discount_rate": 0.15, "credit_score": 680.0}
INTEGER = {"tenure_months", "support_calls"}
CATEGORICAL: dict[str, tuple[list[str], list[float]]] = {
    "plan": (["basic", "standard", "premium"], [0.5, 0.35, 0.15]),
    "region": (["north", "south", "east", "west", "central"], [0.25, 0.2, 0.2, 0.2, 0.15]),
    "payment_method": (["card", "bank_transfer", "paypal", "invoice"], [0.45, 0.3, 0.2, 0.05]),
}
NULLABLE = {"credit_score": 0.01}
MODEL_VERSION = "churn-2026.11"
KINDS = {
    "nan_burst": "NaN in `rate` of the events of a float feature",
    "shift": "mean shift of `size` standard deviations",
    "variance": "deviations from the mean scaled so the variance is multiplied by `factor`",
    "out_of_range": "`rate` of the values set far outside the usual range (mean + 20 std)",
    "sentinel": "`rate` of the values replaced by the sentinel `value` (default -1)",
    "stuck": "every value replaced by one repeated `value` (default: the feature's mean), a column stuck upstream",
    "new_category": "`rate` of a categorical feature's values replaced by the unseen `value`",
    "drop_field": "the field is left out of the records (the writer schema loses it)",
    "concept": "the true labels follow another rule (feature= is ignored); inputs and scores are unchanged",
}


@dataclass(frozen=True)
class Incident:
    """`kind:key=value,...` from `start` for `length` events (default: to the end). Kinds: see KINDS."""

    kind: str
    feature: str
    start: int
    length: int | None = None
    rate: float = 0.3
    size: float = 1.0
    factor: float = 2.0
    value: str | None = None

    @classmethod
    def parse(cls, text: str) -> Incident:
        """e.g. `nan_burst:feature=credit_score,start=10000,length=2000,rate=0.3`.

        >>> Incident.parse("shift:feature=age,start=20000,size=1.5")
        Incident(kind='shift', feature='age', start=20000, length=None, rate=0.3, size=1.5, factor=2.0, value=None)
        """
        kind, args = parse_spec(text, KINDS, "incident")
        if kind == "concept":
            args.setdefault("feature", "*")
        if "feature" not in args or "start" not in args:
            raise ConfigError(f"incident {kind} needs feature= and start=")
        feature = args["feature"]
        if kind == "new_category":
            if feature not in CATEGORICAL:
                raise ConfigError(f"new_category needs a categorical feature: {sorted(CATEGORICAL)}")
        elif kind not in ("drop_field", "concept") and feature not in NUMERIC:
            raise ConfigError(f"{kind} needs a numeric feature: {sorted(NUMERIC)}")
        if kind == "nan_burst" and feature in INTEGER:
            raise ConfigError(f"nan_burst needs a floating-point feature; {feature} is an integer")
        return cls(kind=kind, **args)

    def active(self, idx: np.ndarray) -> np.ndarray:
        end = self.start + self.length if self.length is not None else np.iinfo(np.int64).max
        return (idx >= self.start) & (idx < end)


@dataclass
class Simulator:
    seed: int = 7
    start_time_ms: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    interval_ms: int = 10
    incidents: list[Incident] = field(default_factory=list)

    def batches(self, events: int, batch: int = 5000) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
        """Yield (feature records, prediction records) in chunks; event i is the i-th of the stream."""
        rng = np.random.default_rng(self.seed)
        incident_rng = np.random.default_rng([self.seed, 1])
        self._label_rng = np.random.default_rng([self.seed, 2])
        for lo in range(0, events, batch):
            n = min(batch, events - lo)
            yield self._chunk(rng, incident_rng, lo, n)

    def dropped_fields(self, index: int) -> set[str]:
        return {i.feature for i in self.incidents if i.kind == "drop_field" and i.active(np.array([index]))[0]}

    def _chunk(self, rng: np.random.Generator, irng: np.random.Generator, lo: int,
               n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        idx = np.arange(lo, lo + n)
        cols = {name: gen(rng, n).astype(np.float64) for name, (gen, _std) in NUMERIC.items()}
        null_masks = {name: rng.random(n) < p for name, p in NULLABLE.items()}
        cats = {name: rng.choice(values, size=n, p=probs).astype(object)
                for name, (values, probs) in CATEGORICAL.items()}
        nan_masks = {name: np.zeros(n, dtype=bool) for name in NUMERIC}
        for inc in self.incidents:
            on = inc.active(idx)
            name = inc.feature
            if inc.kind == "shift":
                cols[name] = np.where(on, cols[name] + inc.size * NUMERIC[name][1], cols[name])
            elif inc.kind == "variance":
                scaled = MEANS[name] + (cols[name] - MEANS[name]) * np.sqrt(inc.factor)
                cols[name] = np.where(on, scaled, cols[name])
            elif inc.kind == "nan_burst":
                nan_masks[name] |= on & (irng.random(n) < inc.rate)
            elif inc.kind == "out_of_range":
                hit = on & (irng.random(n) < inc.rate)
                cols[name] = np.where(hit, MEANS[name] + 20 * NUMERIC[name][1], cols[name])
            elif inc.kind == "sentinel":
                hit = on & (irng.random(n) < inc.rate)
                cols[name] = np.where(hit, float(inc.value or -1), cols[name])
            elif inc.kind == "stuck":
                cols[name] = np.where(on, float(inc.value) if inc.value else round(MEANS[name], 2), cols[name])
            elif inc.kind == "new_category":
                hit = on & (irng.random(n) < inc.rate)
                cats[name] = np.where(hit, inc.value or "unseen", cats[name])
        logit = (
            -1.0
            - 0.04 * (cols["tenure_months"] - 36)
            + 0.5 * (cols["support_calls"] - 1.5)
            + 0.08 * (cols["days_since_login"] - 5)
            + 0.01 * (cols["monthly_charges"] - 65)
        )
        score = 1.0 / (1.0 + np.exp(-logit))
        # True labels: drawn with the model's own probability, so the scores are calibrated; after a
        # `concept` incident they follow another rule (support calls and discounts now matter the other way).
        truth = score.copy()
        for inc in self.incidents:
            if inc.kind == "concept":
                other = 1.0 / (1.0 + np.exp(-(-1.0 - 0.5 * (cols["support_calls"] - 1.5)
                                              + 8.0 * (cols["discount_rate"] - 0.15)
                                              - 0.04 * (cols["tenure_months"] - 36))))
                truth = np.where(inc.active(idx), other, truth)
        labels = (self._label_rng.random(n) < truth).astype(int).tolist()
        features, predictions = [], []
        lists = {k: v.tolist() for k, v in cols.items()}
        nan_lists = {k: v.tolist() for k, v in nan_masks.items()}
        null_lists = {k: v.tolist() for k, v in null_masks.items()}
        cat_lists = {k: v.tolist() for k, v in cats.items()}
        scores = score.tolist()
        drops = [i for i in self.incidents if i.kind == "drop_field"]
        for j in range(n):
            i = lo + j
            event_id = f"evt-{self.seed}-{i:09d}"
            t = self.start_time_ms + i * self.interval_ms
            rec: dict[str, Any] = {"event_id": event_id, "event_time": t, "model_version": MODEL_VERSION}
            for name in NUMERIC:
                v = lists[name][j]
                if nan_lists[name][j]:
                    v = float("nan")
                elif name in INTEGER:
                    v = round(v)
                if name in null_lists and null_lists[name][j]:
                    v = None
                rec[name] = v
            for name in CATEGORICAL:
                rec[name] = cat_lists[name][j]
            for inc in drops:
                if inc.start <= i and (inc.length is None or i < inc.start + inc.length):
                    rec.pop(inc.feature, None)
            features.append(rec)
            predictions.append({"event_id": event_id, "event_time": t, "model_version": MODEL_VERSION,
                                "churn_score": scores[j], "predicted_churn": int(scores[j] >= 0.5),
                                "churned": labels[j]})
        return features, predictions


def without_field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    """A copy of a record schema without one field (what an upstream change that drops it writes)."""
    out = dict(schema)
    out["fields"] = [f for f in schema["fields"] if f["name"] != name]
    return out


@dataclass
class LabelFeed:
    """Delayed, partly missing labels: `push` each prediction, get the labels that arrive at that moment.

    A label arrives `delay` events after its prediction (label_time = the arrival event's time); a seeded
    `missing` share never arrives.
    """

    delay: int = 1000
    missing: float = 0.0
    seed: int = 7
    _queue: list[tuple[str, int]] = field(default_factory=list)
    _rng: np.random.Generator | None = None

    def push(self, prediction: dict[str, Any]) -> list[dict[str, Any]]:
        if self._rng is None:
            self._rng = np.random.default_rng([self.seed, 3])
        if self._rng.random() >= self.missing:
            self._queue.append((prediction["event_id"], int(prediction["churned"])))
        else:
            self._queue.append(("", 0))
        if len(self._queue) <= self.delay:
            return []
        event_id, label = self._queue.pop(0)
        if not event_id:
            return []
        return [{"event_id": event_id, "churned": label, "label_time": prediction["event_time"]}]
