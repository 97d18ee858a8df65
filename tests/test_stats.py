"""Drift statistics equal independent computations (scipy, or formulas by hand) on the same bins."""

from __future__ import annotations

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
    table = np.vstack([ref, cur])
    table = table[:, table.sum(axis=0) > 0]
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
        0.1 + 19 * (1 / 1_000 + 1 / 50_000))
    assert stats.effect_floor("js", 0.1, np.ones(3), np.ones(3)) == 0.1
