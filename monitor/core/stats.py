"""Window-versus-reference statistics on binned data, and Benjamini-Hochberg across features.

Inputs are bin counts (reference and current) over the same bins; every function is pure numpy/scipy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

PSI_EPS = 1e-4  # fractions are clipped here before the log, as Evidently does
NumericStatistic = Literal["psi", "js", "linf", "ks", "wasserstein"]
CategoricalStatistic = Literal["psi", "js", "linf", "chi2"]


def _fractions(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total > 0 else np.zeros_like(counts, dtype=float)


def psi(ref: np.ndarray, cur: np.ndarray) -> float:
    """Population stability index, sum (q - p) ln(q / p) over bins, fractions clipped at 1e-4.

    >>> round(psi(np.array([50, 50]), np.array([25, 75])), 6)
    0.274653
    """
    p = np.clip(_fractions(ref), PSI_EPS, None)
    q = np.clip(_fractions(cur), PSI_EPS, None)
    return float(np.sum((q - p) * np.log(q / p)))


def js(ref: np.ndarray, cur: np.ndarray) -> float:
    """Jensen-Shannon distance (square root of the divergence, base 2), in [0, 1]."""
    p, q = _fractions(ref), _fractions(cur)
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0)
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0)
    return float(np.sqrt(max(0.5 * (kl_p.sum() + kl_q.sum()), 0.0)))


def linf(ref: np.ndarray, cur: np.ndarray) -> float:
    """L-infinity distance between the bin fractions (Orbit's distribution check)."""
    return float(np.max(np.abs(_fractions(ref) - _fractions(cur))))


def ks(ref: np.ndarray, cur: np.ndarray) -> float:
    """Kolmogorov-Smirnov statistic of the binned distributions: max |CDF difference| at bin edges."""
    return float(np.max(np.abs(np.cumsum(_fractions(ref)) - np.cumsum(_fractions(cur)))))


def wasserstein(ref: np.ndarray, cur: np.ndarray, centers: np.ndarray) -> float:
    """Earth mover's distance between the binned distributions, with each bin's mass at its center."""
    cdf_gap = np.abs(np.cumsum(_fractions(ref)) - np.cumsum(_fractions(cur)))[:-1]
    return float(np.sum(cdf_gap * np.diff(centers)))


@dataclass(frozen=True, slots=True)
class Chi2Result:
    statistic: float
    dof: int
    p_value: float


def chi2_homogeneity(ref: np.ndarray, cur: np.ndarray) -> Chi2Result:
    """Pearson's chi-squared test that reference and current counts come from one distribution.

    A 2 x bins contingency test, so it accounts for the size of both samples; bins empty in both are
    dropped. (scipy.stats.chi2_contingency with correction=False gives the same numbers.)
    """
    table = np.vstack([ref, cur]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return Chi2Result(0.0, 0, 1.0)
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    stat = float(((table - expected) ** 2 / expected).sum())
    dof = table.shape[1] - 1
    from scipy.stats import chi2 as chi2_dist  # here, not at import: `status` and the CLI start without scipy

    return Chi2Result(stat, dof, float(chi2_dist.sf(stat, dof)))


def benjamini_hochberg(p_values: np.ndarray, q: float) -> np.ndarray:
    """Which hypotheses BH rejects at false-discovery rate q.

    >>> benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.5]), 0.05).tolist()
    [True, False, False, False]
    >>> benjamini_hochberg(np.array([0.01, 0.02, 0.03, 0.5]), 0.05).tolist()
    [True, True, True, False]
    """
    m = len(p_values)
    if m == 0:
        return np.zeros(0, dtype=bool)
    order = np.argsort(p_values, kind="stable")
    passed = p_values[order] <= q * np.arange(1, m + 1) / m
    k = int(np.max(np.flatnonzero(passed))) + 1 if passed.any() else 0
    out = np.zeros(m, dtype=bool)
    out[order[:k]] = True
    return out


def psi_null_bias(bins: int, n_cur: float, n_ref: float) -> float:
    """Expected PSI between two samples of one distribution: about (bins - 1)(1/n + 1/m).

    PSI is, to second order, the symmetric chi-squared divergence, whose null mean is (bins-1)/n per sample.
    """
    if n_cur <= 0 or n_ref <= 0:
        return float("inf")
    return (bins - 1) * (1.0 / n_cur + 1.0 / n_ref)


def effect_floor(name: str, threshold: float, ref: np.ndarray, cur: np.ndarray) -> float:
    """The value a statistic must exceed: its threshold, plus PSI's small-sample bias for PSI."""
    if name != "psi":
        return threshold
    return threshold + psi_null_bias(int((ref + cur > 0).sum()), float(cur.sum()), float(ref.sum()))


def statistic(name: str, ref: np.ndarray, cur: np.ndarray, centers: np.ndarray | None = None) -> float:
    if name == "psi":
        return psi(ref, cur)
    if name == "js":
        return js(ref, cur)
    if name == "linf":
        return linf(ref, cur)
    if name == "ks":
        return ks(ref, cur)
    if name == "wasserstein":
        if centers is None:
            raise ValueError("wasserstein needs bin centers")
        return wasserstein(ref, cur, centers)
    if name == "chi2":
        return chi2_homogeneity(ref, cur).statistic
    raise ValueError(f"unknown statistic {name!r}")
