"""Sliding-window sketches made of fixed-size blocks: counts, moments, min/max and a histogram.

A window is the last `window_blocks` closed blocks; blocks with the same edges merge by addition.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Layout of a numeric block vector; the histogram (with underflow and overflow bins) follows.
N, MISSING, NAN, INF, FINITE, SUM, SUMSQ, MIN, MAX = range(9)
_HEAD = 9


def numeric_block(values: np.ndarray, missing: np.ndarray, edges: np.ndarray | None, bins: int) -> np.ndarray:
    """Summary of one block's values (NaN where missing) as a flat float vector.

    >>> v = np.array([1.0, np.nan, 3.0, np.inf, np.nan])
    >>> b = numeric_block(v, np.array([False, False, False, False, True]), np.array([0.0, 2.0, 4.0]), 2)
    >>> b[:9].tolist()
    [5.0, 1.0, 1.0, 1.0, 2.0, 4.0, 10.0, 1.0, 3.0]
    >>> b[9:].tolist()  # underflow, [0,2), [2,4], overflow
    [0.0, 1.0, 1.0, 0.0]
    """
    out = np.zeros(_HEAD + bins + 2)
    nan = np.isnan(values)
    inf = np.isinf(values)
    finite = values[~(nan | inf)]
    n_missing = int(missing.sum())
    out[N] = len(values)
    out[MISSING] = n_missing
    out[NAN] = int(nan.sum()) - n_missing
    out[INF] = int(inf.sum())
    out[FINITE] = len(finite)
    out[SUM] = float(finite.sum())
    out[SUMSQ] = float(np.dot(finite, finite))
    out[MIN] = float(finite.min()) if len(finite) else np.inf
    out[MAX] = float(finite.max()) if len(finite) else -np.inf
    if edges is not None and len(finite):
        # side="right" puts a value equal to an inner edge in the bin that starts there; the top edge is
        # included in the last bin, as numpy.histogram does.
        idx = np.searchsorted(edges, finite, side="right")
        idx[finite == edges[-1]] = len(edges) - 1
        out[_HEAD:] += np.bincount(idx, minlength=bins + 2)
    return out


def merge_numeric(blocks: list[np.ndarray]) -> np.ndarray:
    """Sum of block vectors, with min/max taken properly."""
    stacked = np.vstack(blocks)
    out: np.ndarray = stacked.sum(axis=0)
    out[MIN] = stacked[:, MIN].min()
    out[MAX] = stacked[:, MAX].max()
    return out


class NumericWindow:
    """Ring of closed numeric blocks plus the open one."""

    def __init__(self, bins: int, window_blocks: int) -> None:
        self.bins = bins
        self.window_blocks = window_blocks
        self.edges: np.ndarray | None = None
        self.closed: list[np.ndarray] = []
        self.open: np.ndarray | None = None

    def add(self, values: np.ndarray, missing: np.ndarray) -> None:
        block = numeric_block(values, missing, self.edges, self.bins)
        self.open = block if self.open is None else merge_numeric([self.open, block])

    def close_block(self) -> None:
        if self.open is not None:
            self.closed.append(self.open)
            del self.closed[: -self.window_blocks]
        self.open = None

    def window(self) -> np.ndarray | None:
        return merge_numeric(self.closed) if self.closed else None

    def to_state(self) -> dict[str, Any]:
        return {
            "edges": None if self.edges is None else self.edges.tolist(),
            "closed": [b.tolist() for b in self.closed],
            "open": None if self.open is None else self.open.tolist(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.edges = None if state["edges"] is None else np.array(state["edges"], dtype=float)
        self.closed = [np.array(b, dtype=float) for b in state["closed"]]
        self.open = None if state["open"] is None else np.array(state["open"], dtype=float)


OTHER = "__other__"


class CategoricalWindow:
    """Ring of closed blocks of category counts (bounded vocabulary; the rest counts as `__other__`)."""

    def __init__(self, max_categories: int, window_blocks: int) -> None:
        self.max_categories = max_categories
        self.window_blocks = window_blocks
        self.vocab: list[str] = []
        self.closed: list[dict[str, int]] = []
        self.open: dict[str, int] = {}

    def add(self, values: list[Any], missing: np.ndarray) -> None:
        present = [str(v) for v, m in zip(values, missing.tolist(), strict=True) if not m]
        tally: dict[str, int] = {}
        for cat in present:
            tally[cat] = tally.get(cat, 0) + 1
        known = set(self.vocab)
        for cat, cnt in sorted(tally.items()):
            if cat not in known and len(self.vocab) < self.max_categories:
                self.vocab.append(cat)
                known.add(cat)
            key = cat if cat in known else OTHER
            self.open[key] = self.open.get(key, 0) + int(cnt)
        self.open["__n__"] = self.open.get("__n__", 0) + len(values)
        self.open["__missing__"] = self.open.get("__missing__", 0) + int(missing.sum())

    def close_block(self) -> None:
        self.closed.append(self.open)
        del self.closed[: -self.window_blocks]
        self.open = {}

    def window(self) -> dict[str, int] | None:
        if not self.closed:
            return None
        out: dict[str, int] = {}
        for block in self.closed:
            for k, v in block.items():
                out[k] = out.get(k, 0) + v
        return out

    def to_state(self) -> dict[str, Any]:
        return {"vocab": self.vocab, "closed": self.closed, "open": self.open}

    def load_state(self, state: dict[str, Any]) -> None:
        self.vocab = list(state["vocab"])
        self.closed = [dict(b) for b in state["closed"]]
        self.open = dict(state["open"])
