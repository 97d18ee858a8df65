"""Drift statistics equal independent computations (scipy, or formulas by hand) on the same bins."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, ks_2samp, wasserstein_distance

from monitor.core import stats


def _counts(seed: int, bins: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 400, bins).astype(float)
    cur = rng.integers(0, 60, bins).astype(float)
    cur[rng.integers(0, bins)] = 0  # an empty bin on one side
    return ref, cur


@pytest.mark.parametrize("seed", range(8))
def test_psi_by_hand(seed: int) -> None:
    """PSI = sum (q - p) ln(q/p) with fractions clipped at 1e-4, computed in a plain loop."""
    ref, cur = _counts(seed)
    p, q = ref / ref.sum(), cur / cur.sum()
    expected = 0.0
    for a, b in zip(p.tolist(), q.tolist(), strict=True):
        a, b = max(a, 1e-4), max(b, 1e-4)
        expected += (b - a) * np.log(b / a)
    assert stats.psi(ref, cur) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_js_matches_scipy(seed: int) -> None:
    ref, cur = _counts(seed)
    assert stats.js(ref, cur) == pytest.approx(jensenshannon(ref / ref.sum(), cur / cur.sum(), base=2), abs=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_linf_by_hand(seed: int) -> None:
    ref, cur = _counts(seed)
    assert stats.linf(ref, cur) == pytest.approx(max(abs(a / ref.sum() - b / cur.sum())
                                                     for a, b in zip(ref, cur, strict=True)), abs=1e-12)


@pytest.mark.parametrize("seed", range(8))
def test_ks_matches_scipy_on_binned_samples(seed: int) -> None:
    """Expanding the counts into samples at bin centers, scipy's two-sample KS statistic is ours."""
    ref, cur = _counts(seed)
    centers = np.arange(len(ref), dtype=float)
    a = np.repeat(centers, ref.astype(int))
    b = np.repeat(centers, cur.astype(int))
    assert stats.ks(ref, cur) == pytest.approx(ks_2samp(a, b).statistic, abs=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_wasserstein_matches_scipy(seed: int) -> None:
    ref, cur = _counts(seed)
    centers = np.sort(np.random.default_rng(seed).uniform(-5, 5, len(ref)))
    expected = wasserstein_distance(centers, centers, u_weights=ref, v_weights=cur)
    assert stats.wasserstein(ref, cur, centers) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_chi2_matches_scipy(seed: int) -> None:
    ref, cur = _counts(seed)
    table = stats.pool_sparse(np.vstack([ref, cur]))  # scipy tests the table as pooled for small expectations
    stat, p, dof, _ = chi2_contingency(table, correction=False)
    got = stats.chi2_homogeneity(ref, cur)
    assert got.statistic == pytest.approx(stat, abs=1e-9)
    assert got.p_value == pytest.approx(p, abs=1e-9)
    assert got.dof == dof


def test_benjamini_hochberg_by_hand() -> None:
    """Step-up: the largest k with p_(k) <= k q / m, and every smaller p, are rejected."""
    p = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205])
    # q=0.05, m=8: thresholds 0.00625, 0.0125, 0.01875, 0.025, 0.03125, ...; k = 2.
    assert stats.benjamini_hochberg(p, 0.05).tolist() == [True, True] + [False] * 6
    assert not stats.benjamini_hochberg(np.array([0.2, 0.3]), 0.05).any()


def test_identical_distributions_give_zero() -> None:
    ref = np.array([10.0, 20.0, 30.0])
    for name in ("psi", "js", "linf", "ks"):
        assert stats.statistic(name, ref, ref * 3) == pytest.approx(0.0, abs=1e-12)
    assert stats.chi2_homogeneity(ref, ref * 3).p_value == pytest.approx(1.0)


def test_psi_null_bias_matches_simulation() -> None:
    """Mean PSI of two samples of one distribution is close to (bins - 1)(1/n + 1/m)."""
    rng = np.random.default_rng(5)
    p = np.full(20, 1 / 20)
    values = [stats.psi(rng.multinomial(50_000, p).astype(float), rng.multinomial(1_000, p).astype(float))
              for _ in range(400)]
    assert np.mean(values) == pytest.approx(stats.psi_null_bias(20, 1_000, 50_000), rel=0.1)
    assert stats.effect_floor("psi", 0.1, np.ones(20) * 2_500, np.ones(20) * 50) == pytest.approx(
        0.1 + 19 * (1 / 1_000 + 1 / 50_000), rel=0.02)
    # JS: the divergence's null mean (k - 1)(1/n + 1/m) / (8 ln 2) under the square root, by hand for 3 bins.
    ref, cur = np.full(50, 20_000.0), np.full(50, 20.0)
    assert stats.effect_floor("js", 0.1, ref, cur) == pytest.approx(
        math.sqrt(0.01 + 49 * (1 / 1_000 + 1 / 1e6) / (8 * math.log(2))), rel=0.01)


@pytest.mark.parametrize("k", [5, 50, 200])
@pytest.mark.parametrize("name", ["js", "psi"])
def test_null_means_match_simulation(name: str, k: int) -> None:
    """Issue 11 #19: JS (squared distance) and PSI of two samples of one distribution average what the floor
    adds (simulated here, Zipf-like shares over k categories, 1,000-event windows, 100,000-row references);
    where every bin expects a few events, the second-order approximations agree too."""
    rng = np.random.default_rng(k)
    p = 1.0 / np.arange(1, k + 1)
    p /= p.sum()

    def measure(ref: np.ndarray, cur: np.ndarray) -> float:
        return stats.js(ref, cur) ** 2 if name == "js" else stats.psi(ref, cur)

    values = [measure(rng.multinomial(100_000, p).astype(float), rng.multinomial(1_000, p).astype(float))
              for _ in range(300)]
    scale = 8 * math.log(2) if name == "js" else 1.0
    bias = stats.null_mean(name, p, 1_000) + (k - 1) / 100_000 / scale  # as the floor adds it
    assert np.mean(values) == pytest.approx(bias, rel=0.05)
    if k <= 50:
        assert bias == pytest.approx((k - 1) * (1 / 1_000 + 1 / 100_000) / scale, rel=0.12)


@pytest.mark.parametrize("name", ["psi", "js", "linf", "ks", "wasserstein"])
def test_every_floor_is_rarely_crossed_by_chance(name: str) -> None:
    """Issue 11 #19: on 1,000-event windows of the reference's own distribution (50 categories for the
    fraction statistics, 50 bins of a normal for the others), the statistic seldom exceeds its floor; with
    a fixed threshold JS exceeded 0.1 in 40% of such windows."""
    rng = np.random.default_rng(7)
    if name in ("psi", "js", "linf"):
        p = 1.0 / np.arange(1, 51)
        p /= p.sum()
        centers = None
    else:
        edges = np.linspace(-3, 3, 49)
        cdf = np.r_[0.0, [0.5 * (1 + math.erf(e / math.sqrt(2))) for e in edges], 1.0]
        p = np.diff(cdf)
        centers = np.r_[edges[0] - 0.0625, (edges[:-1] + edges[1:]) / 2, edges[-1] + 0.0625]
    ref = rng.multinomial(100_000, p).astype(float)
    crossed = 0
    for _ in range(2_000):
        cur = rng.multinomial(1_000, p).astype(float)
        value = stats.statistic(name, ref, cur, centers)
        crossed += value > stats.effect_floor(name, 0.1, ref, cur, centers, 1.0)
    assert crossed / 2_000 <= 0.001


def test_pooled_chi_squared_p_values_are_honest_on_sparse_bins() -> None:
    """Issue 11 #19: Poisson(3) counts binned by value, 1,000-event windows: without pooling the tail bins,
    p < 0.001 came about 27 times too often. Pooled, it comes about as often as it should (0.1%)."""
    rng = np.random.default_rng(11)
    bins = np.arange(0, 16)

    def counts(n: int) -> np.ndarray:
        return np.bincount(np.minimum(rng.poisson(3, n), 15), minlength=len(bins)).astype(float)

    ref = counts(100_000)
    small = [stats.chi2_homogeneity(ref, counts(1_000)).p_value < 0.001 for _ in range(4_000)]
    assert np.mean(small) <= 0.003  # 0.001 expected; 27 x that before pooling
    table = stats.pool_sparse(np.vstack([ref, counts(1_000)]))
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    assert expected.min() >= stats.MIN_EXPECTED
