"""Seasonal references: what a feature looks like at each hour of the day, day of the week or hour of the week.

A seasonal profile keeps, per monitored field and season bucket of the reference data (by its time field, in
UTC), the bucket's own counts over the overall profile's bins (numeric) or categories (categorical), with the
numeric mean and std. Buckets with fewer than `min_rows` usable values are not stored: they use the overall
profile (the fallback rule). Stored in the reference profile as

    "seasons": {"by": "hour_of_week", "min_rows": 500,
                "fields": {"amount": {"37": [count, mean, std, [bin counts...]], ...}, ...}}

A window is compared with the mixture of its slots' seasons (weighted by the slots' events) and the online
detectors standardise each value (or slot) by its own season's mean and std.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from monitor.core.profiles import CategoricalProfile, FieldProfile, NumericProfile

SEASONS = {"hour_of_day": 24, "day_of_week": 7, "hour_of_week": 168}
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
DEFAULT_MIN_ROWS = 500
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def buckets(by: str, t_ms: np.ndarray) -> np.ndarray:
    """The season bucket of each event time (ms since the epoch, UTC): hour 0-23, day 0-6 (Monday 0), or
    day * 24 + hour.

    >>> buckets("hour_of_week", np.array([0, 3_600_000 * 25])).tolist()  # 1970-01-01 was a Thursday
    [72, 97]
    """
    t = np.asarray(t_ms, dtype=np.int64)
    hour: np.ndarray = np.floor_divide(t, HOUR_MS) % 24
    if by == "hour_of_day":
        return hour
    day: np.ndarray = (np.floor_divide(t, DAY_MS) + 3) % 7
    if by == "day_of_week":
        return day
    if by == "hour_of_week":
        week: np.ndarray = day * 24 + hour
        return week
    raise ValueError(f"unknown season {by!r} (expected one of {', '.join(SEASONS)})")


def bucket_name(by: str, bucket: int) -> str:
    """A bucket as people say it: "14h", "Tue", "Tue 14h"."""
    if by == "hour_of_day":
        return f"{bucket:02d}h"
    if by == "day_of_week":
        return _DAYS[bucket]
    return f"{_DAYS[bucket // 24]} {bucket % 24:02d}h"


@dataclass(frozen=True)
class Expected:
    """What a window is compared with: reference counts over the field's bins (or categories and "other"),
    the numeric mean and std, and where they come from."""

    counts: np.ndarray
    mean: float | None
    std: float | None
    season: str  # "" for the overall profile; else e.g. "hour_of_week Tue 14h" or a mix "... Tue 14h-Tue 15h"


class FieldSeasons:
    """One field's season profiles as arrays, every bucket filled: a bucket without its own profile carries
    the overall one (`own` says which are its own)."""

    def __init__(self, by: str, overall: FieldProfile, raw: dict[str, list[Any]]) -> None:
        self.by = by
        n = SEASONS[by]
        base = overall.counts()
        self.width = len(base)
        total = float(base.sum())
        self.own = np.zeros(n, dtype=bool)
        self.count = np.full(n, total)
        self.fractions = np.tile(base / total if total > 0 else base, (n, 1))
        mean = overall.mean if isinstance(overall, NumericProfile) else None
        std = overall.std if isinstance(overall, NumericProfile) else None
        self.mean = np.full(n, np.nan if mean is None else mean)
        self.std = np.full(n, std if std else np.nan)
        for key, (count, b_mean, b_std, counts) in raw.items():
            b = int(key)
            c = np.asarray(counts, dtype=float)
            if not 0 <= b < n or len(c) != self.width or c.sum() <= 0:
                continue  # a profile of other bins (not this reference's): the overall profile stands
            self.own[b] = True
            self.count[b] = float(count)
            self.fractions[b] = c / c.sum()
            if b_mean is not None:
                self.mean[b] = float(b_mean)
            if b_std:  # a constant bucket keeps the overall std: standardising by 0 would explode
                self.std[b] = float(b_std)

    def expected(self, slot_buckets: np.ndarray, weights: np.ndarray) -> Expected:
        """The reference for a window whose slots fall in `slot_buckets` with `weights` (events): the
        weighted mixture of their seasons' distributions, sized as the smallest of them (the test then
        allows for the noise of the thinnest season profile)."""
        b = np.asarray(slot_buckets, dtype=np.int64)
        w = np.asarray(weights, dtype=float)
        if w.sum() <= 0:
            w = np.ones(len(b))
        w = w / w.sum()
        mix = w @ self.fractions[b]
        size = float(self.count[b].min())
        mean = std = None
        if np.isfinite(self.mean[b]).all():
            mean = float(w @ self.mean[b])
            if np.isfinite(self.std[b]).all():
                std = math.sqrt(float(w @ (self.std[b] ** 2 + (self.mean[b] - mean) ** 2)))
        used = sorted(set(b.tolist()))
        names = [bucket_name(self.by, u) + ("" if self.own[u] else " (overall)") for u in used]
        label = f"{self.by} {names[0]}" if len(names) == 1 else f"{self.by} {', '.join(names)}"
        return Expected(mix * size, mean, std, label)

    def standardisers(self, t_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The mean and std at each event time (NaN where the overall profile has none): a bucket's own at its
        middle, drawn linearly towards its neighbour's towards their common edge when both have their own
        profile (a cycle is smooth: a step at every hour would look like a change within the hour)."""
        t = np.asarray(t_ms, dtype=np.int64)
        b = buckets(self.by, t)
        span = DAY_MS if self.by == "day_of_week" else HOUR_MS
        frac = (t % span) / span - 0.5  # -0.5 at the bucket's start, 0 in its middle, 0.5 at its end
        nb = (b + np.where(frac >= 0, 1, -1)) % SEASONS[self.by]
        w = np.where(self.own[b] & self.own[nb], np.abs(frac), 0.0)
        return (1 - w) * self.mean[b] + w * self.mean[nb], (1 - w) * self.std[b] + w * self.std[nb]


class SeasonalReference:
    """A reference's seasonal profiles, per field (None for a reference without seasons)."""

    def __init__(self, by: str, min_rows: int, fields: dict[str, FieldSeasons]) -> None:
        self.by, self.min_rows, self.fields = by, min_rows, fields

    @classmethod
    def of(cls, seasons: dict[str, Any] | None, profiles: dict[str, FieldProfile]) -> SeasonalReference | None:
        if not seasons or seasons.get("by") not in SEASONS:
            return None
        by = str(seasons["by"])
        fields = {name: FieldSeasons(by, profiles[name], raw) for name, raw in seasons.get("fields", {}).items()
                  if name in profiles}
        return cls(by, int(seasons.get("min_rows", DEFAULT_MIN_ROWS)), fields)

    def get(self, field: str) -> FieldSeasons | None:
        return self.fields.get(field)


def season_profile(by: str, times: np.ndarray, columns: dict[str, tuple[np.ndarray, np.ndarray]],
                   profiles: dict[str, FieldProfile], min_rows: int = DEFAULT_MIN_ROWS) -> dict[str, Any]:
    """Profile each season bucket of the reference rows (`times`: their event times, ms; NaN where unknown)
    over the overall profiles' bins and categories. Numeric values are the profile's usable ones (finite, not
    a sentinel); a bucket with fewer than `min_rows` of them is left out (it uses the overall profile)."""
    from monitor.core.categories import category_texts

    t = np.asarray(times, dtype=np.float64)
    known = np.isfinite(t)
    bucket = np.full(len(t), -1, dtype=np.int64)
    bucket[known] = buckets(by, t[known].astype(np.int64))
    n = SEASONS[by]
    out: dict[str, dict[str, list[Any]]] = {}
    for name, prof in profiles.items():
        if name not in columns:
            continue
        values, null = columns[name]
        keep = ~np.asarray(null, dtype=bool) & (bucket >= 0)
        if isinstance(prof, NumericProfile):
            x = np.asarray(values, dtype=np.float64)
            keep &= np.isfinite(x)
            if prof.sentinels:
                keep &= ~np.isin(x, prof.sentinels)
            edges = np.asarray(prof.edges, dtype=float)
            bins = np.searchsorted(edges, x[keep], side="right")
            xb, kb = x[keep], bucket[keep]
            counts = np.zeros((n, len(edges) + 1), dtype=np.int64)
            np.add.at(counts, (kb, bins), 1)
            per = counts.sum(axis=1)
            means = np.bincount(kb, weights=xb, minlength=n) / np.maximum(per, 1)
            # Two passes, all buckets at once: squared deviations from each value's own bucket mean.
            m2 = np.bincount(kb, weights=(xb - means[kb]) ** 2, minlength=n)
            field: dict[str, list[Any]] = {}
            for b in np.flatnonzero(per >= max(min_rows, 2)).tolist():
                field[str(b)] = [int(per[b]), float(means[b]), float(np.sqrt(m2[b] / (per[b] - 1))),
                                 counts[b].tolist()]
            out[name] = field
        elif isinstance(prof, CategoricalProfile):
            texts = category_texts(np.asarray(values, dtype=object)[keep]).astype(str)
            index = {c: i for i, c in enumerate(prof.categories)}
            codes = np.array([index.get(c, len(prof.categories)) for c in texts.tolist()], dtype=np.int64)
            kb = bucket[keep]
            counts = np.zeros((n, len(prof.categories) + 1), dtype=np.int64)
            np.add.at(counts, (kb, codes), 1)
            per = counts.sum(axis=1)
            out[name] = {str(b): [int(per[b]), None, None, counts[b].tolist()]
                         for b in np.flatnonzero(per >= max(min_rows, 1)).tolist()}
    return {"by": by, "min_rows": int(min_rows), "fields": out}
