"""Sketch blocks agree with numpy computed independently; windows slide and merge."""

from __future__ import annotations

import numpy as np

from monitor.core.sketches import (
    ABOVE,
    BELOW,
    FINITE,
    HEAD,
    MAX,
    MIN,
    MISSING,
    NAN,
    SENTINEL,
    SUM,
    SUMSQ,
    CategoricalWindow,
    N,
    NumericWindow,
    merge_numeric,
    numeric_block,
)


def test_block_matches_numpy() -> None:
    """Counts, moments, range counts and histogram equal numpy's on the same values."""
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, 1000)
    x[rng.choice(1000, 30, replace=False)] = np.nan
    missing = np.zeros(1000, dtype=bool)
    missing[:5] = True
    x[:5] = np.nan
    x[10:14] = -99.0  # sentinels
    interior = np.linspace(-2, 2, 11)
    b = numeric_block(x, missing, interior, 12, (-1.5, 1.5), np.array([-99.0]))
    finite = x[np.isfinite(x) & (x != -99.0)]
    assert b[N] == 1000 and b[MISSING] == 5 and b[NAN] == np.isnan(x).sum() - 5 and b[FINITE] == len(finite)
    assert b[SENTINEL] == 4
    assert np.isclose(b[SUM], finite.sum()) and np.isclose(b[SUMSQ], (finite**2).sum())
    assert b[MIN] == finite.min() and b[MAX] == finite.max()
    assert b[BELOW] == (finite < -1.5).sum() and b[ABOVE] == (finite > 1.5).sum()
    inside, _ = np.histogram(finite, bins=interior)
    hist = b[HEAD:]
    assert hist[0] == (finite < -2).sum() and hist[-1] == (finite >= 2).sum()
    # numpy closes its last bin on the right; ours puts a value equal to 2 in the overflow bin.
    assert hist[1:-1].tolist()[:-1] == inside.tolist()[:-1]
    assert hist[1:-1].sum() == ((finite >= -2) & (finite < 2)).sum()


def test_merge_is_the_block_of_the_union() -> None:
    """Merging two blocks equals the block of the concatenated values (mergeable sketch)."""
    rng = np.random.default_rng(1)
    a, c = rng.normal(size=300), rng.normal(size=200)
    edges = np.linspace(-3, 3, 7)
    no = np.zeros(300, bool), np.zeros(200, bool)
    merged = merge_numeric([numeric_block(a, no[0], edges, 8), numeric_block(c, no[1], edges, 8)])
    whole = numeric_block(np.r_[a, c], np.zeros(500, bool), edges, 8)
    assert np.allclose(merged, whole)


def test_numeric_window_keeps_the_last_blocks_and_example_offsets() -> None:
    """Only the last `blocks` closed blocks are in the window; each bin remembers a first offset."""
    w = NumericWindow(hist_len=3, blocks=3, edges=np.array([1.5, 3.5]))
    for k in range(5):
        w.add(np.full(10, float(k)), np.zeros(10, bool), np.arange(10 * k, 10 * k + 10), (None, None), None)
        w.close_block()
    win = w.window()
    assert win is not None
    assert win[N] == 30 and win[SUM] == 10 * (2 + 3 + 4)
    assert w.examples == [-1, -1, 40]  # the last block held only 4.0, first seen at offset 40


def test_categorical_window_bounds_the_vocabulary() -> None:
    """Categories past max_categories count as __other__; unseen ones (not allowed) and missing are counted."""
    w = CategoricalWindow(max_categories=2, blocks=2)
    vals = ["a", "b", "c", None, "a"]
    w.add(vals, np.array([v is None for v in vals]), allowed={"a"})
    w.close_block()
    assert w.window() == {"a": 2, "b": 1, "__other__": 1, "__n__": 5, "__missing__": 1, "__unseen__": 2}
