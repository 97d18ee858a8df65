"""Sketch blocks agree with numpy computed independently; windows slide and merge."""

from __future__ import annotations

import numpy as np

from monitor.sketches import (
    FINITE,
    MAX,
    MIN,
    MISSING,
    NAN,
    SUM,
    SUMSQ,
    CategoricalWindow,
    N,
    NumericWindow,
    merge_numeric,
    numeric_block,
)


def test_block_matches_numpy() -> None:
    """Counts, moments and histogram equal numpy's on the same values."""
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, 1000)
    x[rng.choice(1000, 30, replace=False)] = np.nan
    missing = np.zeros(1000, dtype=bool)
    missing[:5] = True
    x[:5] = np.nan
    edges = np.linspace(-2, 2, 11)
    b = numeric_block(x, missing, edges, 10)
    finite = x[np.isfinite(x)]
    assert b[N] == 1000 and b[MISSING] == 5 and b[NAN] == np.isnan(x).sum() - 5 and b[FINITE] == len(finite)
    assert np.isclose(b[SUM], finite.sum()) and np.isclose(b[SUMSQ], (finite**2).sum())
    assert b[MIN] == finite.min() and b[MAX] == finite.max()
    inside, _ = np.histogram(finite, bins=edges)
    assert b[10:-1].tolist() == inside.tolist()
    assert b[9] == (finite < -2).sum() and b[-1] == (finite > 2).sum()


def test_merge_is_the_block_of_the_union() -> None:
    """Merging two blocks equals the block of the concatenated values (mergeable sketch)."""
    rng = np.random.default_rng(1)
    a, c = rng.normal(size=300), rng.normal(size=200)
    edges = np.linspace(-3, 3, 7)
    no = np.zeros(300, bool), np.zeros(200, bool)
    merged = merge_numeric([numeric_block(a, no[0], edges, 6), numeric_block(c, no[1], edges, 6)])
    whole = numeric_block(np.r_[a, c], np.zeros(500, bool), edges, 6)
    assert np.allclose(merged, whole)


def test_numeric_window_keeps_the_last_blocks() -> None:
    """Only the last `window_blocks` closed blocks are in the window."""
    w = NumericWindow(bins=4, window_blocks=3)
    for k in range(5):
        w.add(np.full(10, float(k)), np.zeros(10, bool))
        w.close_block()
    win = w.window()
    assert win is not None
    assert win[N] == 30 and win[SUM] == 10 * (2 + 3 + 4)


def test_categorical_window_bounds_the_vocabulary() -> None:
    """Categories past max_categories count as __other__; missing values are counted apart."""
    w = CategoricalWindow(max_categories=2, window_blocks=2)
    vals = ["a", "b", "c", None, "a"]
    w.add(vals, np.array([v is None for v in vals]))
    w.close_block()
    assert w.window() == {"a": 2, "b": 1, "__other__": 1, "__n__": 5, "__missing__": 1}
