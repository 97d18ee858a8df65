"""Multivariate drift: how far each event lies from the reference's principal subspace.

At `reference build` the model's numeric features are standardised by the reference's mean and std and a PCA
is fitted; the components that explain `variance_share` of the variance are kept (never all of them). Each
event's **reconstruction error** is the squared distance between its standardised vector and its projection
on those components: what the reference's correlations cannot explain. A changed relationship between
features (two upstream joins swapped, a ratio whose denominator changed unit) moves events off the subspace
while every marginal stays as it was.

The error is a derived numeric field of the features stream, `MV_FIELD`: stage 1 computes it per event (a
matrix product over the batch's columns) and summarises it in every block like any numeric field (so its
windows are exactly-once and merge across partitions); stage 2 compares its window histogram with the
reference's error histogram (the drift test of any numeric feature), reported as check `multivariate` on field
`*`. An event with a missing, non-finite or sentinel value in one of the fields has no error (NaN: not
counted by the test).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from monitor.settings import CheckSettings

MV_FIELD = "*multivariate"  # the derived field (no Avro name starts with "*")
MV_CHECK = "multivariate"
MV_ALERT_FIELD = "*"  # model-wide


@dataclass(frozen=True)
class Multivariate:
    fields: list[str]
    mean: list[float]
    std: list[float]
    components: list[list[float]]  # k rows of len(fields): the kept principal directions (orthonormal)
    explained: list[float]  # every component's share of the variance, the largest first
    variance_share: float
    sentinels: dict[str, list[float]]
    rows: int  # complete rows the PCA was fitted on

    def to_dict(self) -> dict[str, Any]:
        return {"fields": self.fields, "mean": self.mean, "std": self.std, "components": self.components,
                "explained": self.explained, "variance_share": self.variance_share, "sentinels": self.sentinels,
                "rows": self.rows}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Multivariate:
        return cls(**{k: raw[k] for k in ("fields", "mean", "std", "components", "explained", "variance_share",
                                           "sentinels", "rows")})

    def errors(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        """Each event's reconstruction error from its fields' values (float64, NaN where missing); NaN for an
        event with a missing, non-finite or sentinel value in one of the fields."""
        n = len(next(iter(columns.values()))) if columns else 0
        x = np.empty((n, len(self.fields)), dtype=np.float64)
        bad = np.zeros(n, dtype=bool)
        for j, name in enumerate(self.fields):
            col = columns.get(name)
            if col is None:
                bad[:] = True
                continue
            x[:, j] = col
            sentinels = self.sentinels.get(name)
            if sentinels:
                bad |= np.isin(col, sentinels)
        bad |= ~np.isfinite(x).all(axis=1)
        z = (np.where(bad[:, None], 0.0, x) - np.asarray(self.mean)) / np.asarray(self.std)
        c = np.asarray(self.components, dtype=np.float64).reshape(-1, len(self.fields))
        residual = z - (z @ c.T) @ c
        err: np.ndarray = np.einsum("ij,ij->i", residual, residual)
        err[bad] = np.nan
        return err


def fit(columns: dict[str, np.ndarray], fields: list[str], sentinels: dict[str, list[float]],
        variance_share: float = 0.9, max_rows: int = 200_000, seed: int = 0) -> Multivariate | None:
    """The PCA of the complete rows (at most `max_rows`, drawn at random with `seed`); None with fewer than two
    usable fields (a constant field is left out) or too few complete rows."""
    usable = []
    for name in fields:
        col = np.asarray(columns[name], dtype=np.float64)
        ok = np.isfinite(col) & ~np.isin(col, sentinels.get(name, []))
        if ok.sum() > 1 and np.std(col[ok]) > 0:
            usable.append(name)
    if len(usable) < 2:
        return None
    x = np.column_stack([np.asarray(columns[name], dtype=np.float64) for name in usable])
    complete = np.isfinite(x).all(axis=1)
    for j, name in enumerate(usable):
        if sentinels.get(name):
            complete &= ~np.isin(x[:, j], sentinels[name])
    x = x[complete]
    if len(x) < 10 * len(usable):
        return None
    if len(x) > max_rows:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), max_rows, replace=False))]
    mean = x.mean(axis=0)
    std = x.std(axis=0, ddof=1)
    z = (x - mean) / std
    _u, s, vt = np.linalg.svd(z, full_matrices=False)
    var = s ** 2
    explained = var / var.sum()
    # The fewest components reaching the share, and at least one left out (else every error is zero).
    k = min(int(np.searchsorted(np.cumsum(explained), variance_share - 1e-12)) + 1, len(usable) - 1)
    return Multivariate(usable, mean.tolist(), std.tolist(), vt[:k].tolist(), explained.tolist(),
                        float(variance_share), {n: [float(v) for v in sentinels.get(n, [])] for n in usable},
                        len(x))


def multivariate_checks(defaults: CheckSettings) -> CheckSettings:
    """The derived field's settings: only its drift test (the defaults' statistic, fdr and budget); no rate,
    range, stuck or detector checks (an event without an error is one with a missing value, which the
    features' own checks report)."""
    return defaults.model_copy(update={
        "stuck_min_run": 0, "max_nan_rate": 1.0, "max_missing_rate": 1.0, "max_sentinel_rate": 1.0,
        "cusum": defaults.cusum.model_copy(update={"enabled": False}),
        "adwin": defaults.adwin.model_copy(update={"enabled": False}),
        "page_hinkley": defaults.page_hinkley.model_copy(update={"enabled": False})})
