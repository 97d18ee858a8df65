"""Sliding-window sketches made of blocks: counts, moments, min/max, range and sentinel counts, histogram.

A window is the last `blocks` closed blocks; blocks over the same bin edges merge by addition, except the
range (min, max) and the second moment: `M2` is the sum of squared deviations from the block's own mean
(Welford/Chan), combined with Chan's correction (`merge_numeric`), stable at any magnitude where a sum of
squares is not (a feature around 1.7e9 with spread 5 had a negative variance).
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from numba import njit

# Layout of a numeric block vector; the histogram follows the head.
N, MISSING, NAN, INF, FINITE, SUM, M2, MIN, MAX, BELOW, ABOVE, SENTINEL = range(12)
HEAD = 12
MOMENTS = "m2"  # the state and block marker of this meaning of slot M2 (before: a plain sum of squares)


def numeric_block(
    values: np.ndarray,
    missing: np.ndarray,
    edges: np.ndarray | None,
    hist_len: int,
    bounds: tuple[float | None, float | None] = (None, None),
    sentinels: np.ndarray | None = None,
) -> np.ndarray:
    """Summary of one block's values (NaN where missing) as a flat float vector.

    `edges` are interior bin edges: bin 0 is below edges[0], bin len(edges) at or above edges[-1].
    Sentinel values are counted apart and left out of the moments, range and histogram.

    >>> v = np.array([1.0, np.nan, 3.0, np.inf, np.nan, -1.0, 9.0])
    >>> b = numeric_block(v, np.array([0, 0, 0, 0, 1, 0, 0], bool), np.array([2.0]), 2, (0.0, 5.0),
    ...                   np.array([-1.0]))
    >>> b[:HEAD].tolist()  # M2: (1 - 13/3)^2 + (3 - 13/3)^2 + (9 - 13/3)^2 = 104/3
    [7.0, 1.0, 1.0, 1.0, 3.0, 13.0, 34.666666666666664, 1.0, 9.0, 0.0, 1.0, 1.0]
    >>> b[HEAD:].tolist()  # below 2, at or above 2
    [1.0, 2.0]
    """
    if len(values):  # one run of `numeric_blocks`: the batch path and this one cannot disagree
        row: np.ndarray = numeric_blocks(values, missing, np.zeros(1, dtype=np.int64), edges, hist_len, bounds,
                                         sentinels)[0]
        return row
    out = np.zeros(HEAD + hist_len)
    out[MIN], out[MAX] = np.inf, -np.inf
    return out


def numeric_blocks(
    values: np.ndarray,
    missing: np.ndarray,
    starts: np.ndarray,
    edges: np.ndarray | None,
    hist_len: int,
    bounds: tuple[float | None, float | None] = (None, None),
    sentinels: np.ndarray | None = None,
) -> np.ndarray:
    """`numeric_block` of each run `values[starts[i]:starts[i+1]]` (runs non-empty, `starts[0] == 0`), as rows,
    in a few numpy calls for the whole batch instead of a Python loop over the runs.

    >>> v = np.array([1.0, np.nan, 3.0, np.inf, -1.0, 9.0])
    >>> m = np.array([0, 1, 0, 0, 0, 0], bool)
    >>> rows = numeric_blocks(v, m, np.array([0, 2]), np.array([2.0]), 2, (0.0, 5.0), np.array([-1.0]))
    >>> rows[1].tolist() == numeric_block(v[2:], m[2:], np.array([2.0]), 2, (0.0, 5.0), np.array([-1.0])).tolist()
    True
    """
    lo, hi = bounds
    return _blocks_kernel(np.ascontiguousarray(values, dtype=np.float64), np.ascontiguousarray(missing, dtype=bool),
                          np.ascontiguousarray(starts, dtype=np.int64),
                          np.zeros(0) if edges is None else np.ascontiguousarray(edges, dtype=np.float64),
                          hist_len if edges is not None else 0, HEAD + hist_len,
                          -np.inf if lo is None else float(lo), np.inf if hi is None else float(hi),
                          lo is not None, hi is not None,
                          np.zeros(0) if sentinels is None else np.ascontiguousarray(sentinels, dtype=np.float64))


@njit(cache=True, nogil=True)
def _fill_blocks(values: np.ndarray, missing: np.ndarray, starts: np.ndarray, edges: np.ndarray, hist_len: int,
                 lo: float, hi: float, has_lo: bool, has_hi: bool, sentinels: np.ndarray, out: np.ndarray) -> None:
    """`numeric_blocks` compiled, into `out` (zeros, a row per run): one pass per run for counts, sums, range
    and bins, a second for M2 about the run's mean (taken about its first usable value: exact enough at any
    offset)."""
    n = values.shape[0]
    runs = starts.shape[0]
    for r in range(runs):
        a = starts[r]
        b = starts[r + 1] if r + 1 < runs else n
        row = out[r]
        row[N] = b - a
        row[MIN] = np.inf
        row[MAX] = -np.inf
        shift = 0.0
        found = False
        total = 0.0
        shifted_sum = 0.0
        for i in range(a, b):
            v = values[i]
            if missing[i]:
                row[MISSING] += 1
            if np.isnan(v):
                row[NAN] += 1
                continue
            if np.isinf(v):
                row[INF] += 1
                continue
            is_sentinel = False
            for s in sentinels:
                if v == s:
                    is_sentinel = True
                    break
            if is_sentinel:
                row[SENTINEL] += 1
                continue
            row[FINITE] += 1
            total += v
            if not found:
                shift = v
                found = True
            shifted_sum += v - shift
            if v < row[MIN]:
                row[MIN] = v
            if v > row[MAX]:
                row[MAX] = v
            if has_lo and v < lo:
                row[BELOW] += 1
            if has_hi and v > hi:
                row[ABOVE] += 1
            if hist_len:
                row[HEAD + np.searchsorted(edges, v, side="right")] += 1
        row[NAN] -= row[MISSING]
        row[SUM] = total
        mean = shifted_sum / max(row[FINITE], 1.0)
        m2 = 0.0
        if found:
            for i in range(a, b):
                v = values[i]
                if np.isnan(v) or np.isinf(v):
                    continue
                skip = False
                for s in sentinels:
                    if v == s:
                        skip = True
                        break
                if skip:
                    continue
                d = (v - shift) - mean
                m2 += d * d
        row[M2] = m2


@njit(cache=True, nogil=True)
def _blocks_kernel(values: np.ndarray, missing: np.ndarray, starts: np.ndarray, edges: np.ndarray, hist_len: int,
                   width: int, lo: float, hi: float, has_lo: bool, has_hi: bool, sentinels: np.ndarray
                   ) -> np.ndarray:
    out = np.zeros((starts.shape[0], width))
    _fill_blocks(values, missing, starts, edges, hist_len, lo, hi, has_lo, has_hi, sentinels, out)
    return out


@njit(cache=True, nogil=True)
def _blocks_many_kernel(values: np.ndarray, missing: np.ndarray, starts: np.ndarray, edges: np.ndarray,
                        n_edges: np.ndarray, hist_lens: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                        has_lo: np.ndarray, has_hi: np.ndarray, sentinels: np.ndarray, n_sentinels: np.ndarray,
                        clip_lo: np.ndarray, clip_hi: np.ndarray, has_clip: np.ndarray, width: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """`_blocks_kernel` of each row of `values` (a field each; ragged edges and sentinels padded, with their
    lengths), and each run's sum of usable values clipped to [clip_lo, clip_hi] where `has_clip`."""
    fields = values.shape[0]
    n = values.shape[1]
    runs = starts.shape[0]
    out = np.zeros((fields, runs, width))
    clipped = np.zeros((fields, runs))
    for f in range(fields):
        sent = sentinels[f, :n_sentinels[f]]
        _fill_blocks(values[f], missing[f], starts, edges[f, :n_edges[f]], hist_lens[f], lo[f], hi[f], has_lo[f],
                     has_hi[f], sent, out[f])
        for r in range(runs):
            a = starts[r]
            b = starts[r + 1] if r + 1 < runs else n
            total = 0.0
            for i in range(a, b):
                v = values[f, i]
                if not np.isfinite(v):
                    continue
                skip = False
                for x in sent:
                    if v == x:
                        skip = True
                        break
                if skip:
                    continue
                if has_clip[f]:
                    v = min(max(v, clip_lo[f]), clip_hi[f])
                total += v
            clipped[f, r] = total
    return out, clipped


def run_lengths(values: np.ndarray, usable: np.ndarray, last_value: float, last_len: int) -> np.ndarray:
    """Per value, the length of the run of identical usable values it ends (0 where not usable), the run
    carried from the batch before (`last_value` repeated `last_len` times) included.

    >>> run_lengths(np.array([7.0, 7.0, 1.0, 1.0, np.nan, 1.0]), np.array([1, 1, 1, 1, 0, 1], bool), 7.0, 3).tolist()
    [4, 5, 1, 2, 0, 1]
    """
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    prev = np.empty(n)
    prev[0], prev[1:] = last_value, values[:-1]
    prev_ok = np.empty(n, dtype=bool)
    prev_ok[0], prev_ok[1:] = last_len > 0, usable[:-1]
    same = usable & prev_ok & (values == prev)
    idx = np.arange(n)
    start_at = np.maximum.accumulate(np.where(usable & ~same, idx, -1))
    lengths = np.where(start_at < 0, idx + 1 + last_len, idx - start_at + 1)
    return np.where(usable, lengths, 0).astype(np.int64)


def longest_runs(lengths: np.ndarray, values: np.ndarray, starts: np.ndarray) -> tuple[list[int], list[float]]:
    """Per block (`lengths[starts[i]:starts[i+1]]`), the longest run length reached in it and its value.

    >>> longest_runs(np.array([1, 2, 3, 1, 1, 2]), np.array([5.0, 5.0, 5.0, 2.0, 4.0, 4.0]), np.array([0, 3]))
    ([3, 2], [5.0, 4.0])
    """
    n = len(lengths)
    key = lengths.astype(np.int64) * (n + 1) + np.arange(n)
    best = np.maximum.reduceat(key, starts)
    return (best // (n + 1)).tolist(), values[best % (n + 1)].tolist()


def merge_numeric(blocks: list[np.ndarray]) -> np.ndarray:
    """Block vectors combined: counts, sums and bins added, min/max taken as such, M2 by Chan et al.:
    the sum of the blocks' M2 plus n_i (mean_i - mean)^2 for each block (no large squares cancel).

    >>> a = numeric_block(np.array([1e9 + 1, 1e9 + 3]), np.zeros(2, bool), None, 0)
    >>> b = numeric_block(np.array([1e9 + 5]), np.zeros(1, bool), None, 0)
    >>> float(merge_numeric([a, b])[M2])  # the deviations from 1e9 + 3 are -2, 0, 2
    8.0
    """
    if len(blocks) == 2:
        return merge_pair(blocks[0], blocks[1])
    return merge_rows(np.vstack(blocks))


@njit(cache=True, nogil=True)
def merge_pair(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`merge_numeric([a, b])` without stacking them first (it runs per feature and batch)."""
    out: np.ndarray = (0.0 + a) + b  # as `merge_rows` adds them (so -0.0 comes out the same)
    out[MIN] = min(a[MIN], b[MIN])
    out[MAX] = max(a[MAX], b[MAX])
    if out[FINITE] > 0:
        mean = out[SUM] / out[FINITE]
        da = (a[SUM] / a[FINITE] if a[FINITE] > 0 else 0.0) - mean
        db = (b[SUM] / b[FINITE] if b[FINITE] > 0 else 0.0) - mean
        out[M2] = (a[M2] + b[M2]) + (a[FINITE] * da * da + b[FINITE] * db * db)
    return out


@njit(cache=True, nogil=True)
def merge_rows(stacked: np.ndarray) -> np.ndarray:
    """`merge_numeric` of the rows of a matrix, compiled (it runs per feature and batch)."""
    k, width = stacked.shape
    out = np.zeros(width)
    for j in range(width):
        acc = 0.0
        for i in range(k):
            acc += stacked[i, j]
        out[j] = acc
    lo, hi = np.inf, -np.inf
    for i in range(k):
        lo = min(lo, stacked[i, MIN])
        hi = max(hi, stacked[i, MAX])
    out[MIN], out[MAX] = lo, hi
    if out[FINITE] > 0:
        mean = out[SUM] / out[FINITE]
        m2 = 0.0
        spread = 0.0
        for i in range(k):
            m2 += stacked[i, M2]
            c = stacked[i, FINITE]
            d = (stacked[i, SUM] / c if c > 0 else 0.0) - mean
            spread += c * d * d
        out[M2] = m2 + spread
    return out


_HEAD_COLS = np.array([FINITE, SUM, M2, MIN, MAX])


@njit(cache=True, nogil=True)
def _accumulate(counts: np.ndarray, block: np.ndarray, sign: float) -> None:
    """Add (`sign` 1) or take away (-1) a block's whole-number columns (all but sum, M2, min and max)."""
    for j in range(counts.shape[0]):
        if j != SUM and j != M2 and j != MIN and j != MAX:
            counts[j] += sign * block[j]


@njit(cache=True, nogil=True)
def _window_from(counts: np.ndarray, heads: np.ndarray) -> np.ndarray:
    """`merge_rows` of blocks given as the running sum of their columns (`counts`: exact for the whole-number
    ones) and their heads (rows of finite, sum, M2, min, max, in block order): the same operations in the same
    order on the columns that are not whole numbers, so the same bits."""
    out = counts.copy()
    k = heads.shape[0]
    total, lo, hi = 0.0, np.inf, -np.inf
    for i in range(k):
        total += heads[i, 1]
        lo = min(lo, heads[i, 3])
        hi = max(hi, heads[i, 4])
    out[SUM], out[MIN], out[MAX] = total, lo, hi
    m2 = 0.0
    for i in range(k):
        m2 += heads[i, 2]
    out[M2] = m2
    if out[FINITE] > 0:
        mean = total / out[FINITE]
        spread = 0.0
        for i in range(k):
            c = heads[i, 0]
            d = (heads[i, 1] / c if c > 0 else 0.0) - mean
            spread += c * d * d
        out[M2] = m2 + spread
    return out


def combine_m2(n_a: np.ndarray | float, sum_a: np.ndarray | float, m2_a: np.ndarray | float,
               n_b: np.ndarray | float, sum_b: np.ndarray | float, m2_b: np.ndarray | float) -> np.ndarray:
    """M2 of two summaries (count, sum, M2) together (Chan et al.); element-wise over arrays of fields."""
    n_a, n_b = np.asarray(n_a, dtype=float), np.asarray(n_b, dtype=float)
    n = n_a + n_b
    safe_a, safe_b = np.where(n_a > 0, n_a, 1.0), np.where(n_b > 0, n_b, 1.0)
    delta = np.where((n_a > 0) & (n_b > 0), np.asarray(sum_b) / safe_b - np.asarray(sum_a) / safe_a, 0.0)
    out: np.ndarray = np.asarray(m2_a) + np.asarray(m2_b) + delta * delta * n_a * n_b / np.where(n > 0, n, 1.0)
    return out


def m2_from_sum_of_squares(vec: np.ndarray, at: np.ndarray | int = 0) -> None:
    """Migrate vectors written before M2 (slot M2 held the sum of squares) in place: M2 = sumsq - sum^2 / n.
    `at`: where each field's head starts in `vec` (the packed layout of several fields)."""
    heads = np.atleast_1d(np.asarray(at, dtype=np.int64))
    n, total, sq = vec[heads + FINITE], vec[heads + SUM], vec[heads + M2]
    vec[heads + M2] = np.maximum(sq - np.divide(total * total, n, out=np.zeros(len(heads)), where=n > 0), 0.0)


def pack_array(values: np.ndarray) -> np.ndarray:
    """A float vector for a state: float64 (the state codec stores it as raw little-endian bytes)."""
    return np.array(values, dtype=np.float64)


def unpack_array(stored: str | list[float] | np.ndarray) -> np.ndarray:
    """`pack_array`'s inverse, and of what earlier versions wrote: base64 of float64 bytes (JSON state of 0.2),
    a list of numbers (0.1)."""
    if isinstance(stored, str):
        return np.frombuffer(base64.b64decode(stored), dtype="<f8").astype(float)
    return np.array(stored, dtype=float)


class NumericWindow:
    """Ring of closed numeric blocks plus the open one, all over the same bin edges."""

    def __init__(self, hist_len: int, blocks: int, edges: np.ndarray | None = None) -> None:
        self.hist_len = hist_len
        self.blocks = blocks
        self.edges = edges
        # Bin edges found while a block is open (the warm-up's): they apply from the next block on, so every
        # block is binned whole or not at all, wherever the batches were cut.
        self.next_edges: np.ndarray | None = None
        self._closed: list[np.ndarray] = []
        # The window kept as it slides (`_slide`): the running sum of the closed blocks' counts and bins, each
        # block's (finite, sum, M2, min, max), and the window made from them, until the next close.
        self._counts: np.ndarray | None = None
        self._heads: np.ndarray | None = None
        self._window: np.ndarray | None = None
        self.open: np.ndarray | None = None
        # First offset seen in each bin of the open block, then of the last closed block (evidence).
        self.examples_open: list[int] = [-1] * hist_len
        self.track_examples = True  # off in stage 1 of the model view: its windows are never evaluated there
        self.examples: list[int] = [-1] * hist_len

    def add(self, values: np.ndarray, missing: np.ndarray, offsets: np.ndarray,
            bounds: tuple[float | None, float | None], sentinels: np.ndarray | None) -> None:
        block = numeric_block(values, missing, self.edges, self.hist_len, bounds, sentinels)
        self.open = block if self.open is None else merge_numeric([self.open, block])
        if self.edges is not None and self.track_examples:
            ok = np.isfinite(values)
            if sentinels is not None and len(sentinels):
                ok &= ~np.isin(values, sentinels)
            bins = np.searchsorted(self.edges, values[ok], side="right")
            first_bins, first_pos = np.unique(bins, return_index=True)
            for b, pos in zip(first_bins.tolist(), first_pos.tolist(), strict=True):
                if self.examples_open[b] < 0:
                    self.examples_open[b] = int(offsets[ok][pos])

    def add_block(self, block: np.ndarray) -> None:
        """Merge one precomputed block vector (a row of `numeric_blocks`) into the open block."""
        if self.open is None:
            self.open = block.copy()
        else:
            self.open = merge_numeric([self.open, block])

    @property
    def closed(self) -> list[np.ndarray]:
        """The closed blocks, oldest first (read-only arrays: a closed block never changes)."""
        return self._closed

    @closed.setter
    def closed(self, blocks: list[np.ndarray]) -> None:
        self._closed = list(blocks)
        for block in self._closed:
            block.flags.writeable = False
        self._counts = self._heads = self._window = None  # made again from the blocks when next asked

    def close_block(self) -> None:
        if self.open is not None:
            block, self.open = self.open, None
            block.flags.writeable = False
            self._closed.append(block)
            evicted = self._closed[: -self.blocks]
            del self._closed[: -self.blocks]
            self._slide(block, evicted)
        self.open = None
        self.examples = self.examples_open
        self.examples_open = [-1] * self.hist_len

    def _slide(self, block: np.ndarray, evicted: list[np.ndarray]) -> None:
        """Keep the window's running aggregates as a block joins and the oldest leave: counts and bins are
        whole numbers, so adding and subtracting them is exact; the sum, M2 and range are made again from the
        blocks' heads (five numbers a block) in block order, so the window equals `merge_numeric(closed)` to
        the bit, as a window made from a loaded state does."""
        self._window = None
        if self._counts is None or self._heads is None or len(block) != len(self._counts):
            self._counts = self._heads = None  # not kept yet (or the layout changed): made when next asked
            return
        _accumulate(self._counts, block, 1.0)
        for old in evicted:
            _accumulate(self._counts, old, -1.0)
        head = block[_HEAD_COLS][None, :]
        self._heads = np.concatenate((self._heads[len(evicted):], head))

    def window(self) -> np.ndarray | None:
        """The closed blocks merged (`merge_numeric`), from the running aggregates (read-only)."""
        if not self._closed:
            return None
        if self._window is None:
            if self._counts is None or self._heads is None:
                self._counts = np.zeros(len(self._closed[0]))
                for block in self._closed:
                    _accumulate(self._counts, block, 1.0)
                self._heads = np.array([block[_HEAD_COLS] for block in self._closed])
            self._window = _window_from(self._counts, self._heads)
            self._window.flags.writeable = False
        return self._window

    def to_state(self) -> dict[str, Any]:
        return {
            "edges": None if self.edges is None else self.edges.tolist(),
            "next_edges": None if self.next_edges is None else self.next_edges.tolist(),
            "closed": list(self._closed),  # read-only float64 already: the state codec encodes each once
            "open": None if self.open is None else pack_array(self.open),
            "examples_open": self.examples_open,
            "examples": self.examples,
            "moments": MOMENTS,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.edges = None if state["edges"] is None else np.array(state["edges"], dtype=float)
        self.next_edges = None if state.get("next_edges") is None else np.array(state["next_edges"], dtype=float)
        self.closed = [unpack_array(b) for b in state["closed"]]
        self.open = None if state["open"] is None else unpack_array(state["open"])
        if state.get("moments") != MOMENTS:  # written by 0.1: slot M2 held the sum of squares
            for vec in [*self._closed, *([self.open] if self.open is not None else [])]:
                vec.flags.writeable = True
                m2_from_sum_of_squares(vec)
            self.closed = self._closed  # read-only again, the window made again from them
        self.examples_open = list(state["examples_open"])
        self.examples = list(state["examples"])


OTHER = "__other__"
N_KEY, MISSING_KEY, UNSEEN_KEY = "__n__", "__missing__", "__unseen__"
META_KEYS = {N_KEY, MISSING_KEY, UNSEEN_KEY}


def run_tallies(codes: np.ndarray, names: list[str], starts: np.ndarray) -> list[dict[str, int]]:
    """Category counts of each run `codes[starts[i]:starts[i+1]]` (runs non-empty, `starts[0] == 0`; codes of
    `names`, -1 for a missing value, left out), in the order of the codes: one `bincount`, not a loop per run.

    >>> run_tallies(np.array([0, 1, -1, 0, 2]), ["a", "b", "1"], np.array([0, 3]))
    [{'a': 1, 'b': 1}, {'a': 1, '1': 1}]
    """
    runs, k = len(starts), len(names)
    if k == 0:
        return [{} for _ in range(runs)]
    run_of = np.zeros(len(codes), dtype=np.int64)
    run_of[starts[1:]] = 1
    run_of = np.cumsum(run_of)
    use = codes >= 0
    counts = np.bincount(run_of[use] * k + codes[use], minlength=runs * k).reshape(runs, k)
    return [{names[j]: int(row[j]) for j in np.flatnonzero(row).tolist()} for row in counts]


def tally(codes: np.ndarray, names: list[str]) -> dict[str, int]:
    """Counts of the codes (-1 left out) by name, in the order each first appears in `codes`.

    >>> tally(np.array([2, -1, 0, 2]), ["a", "b", "c"])
    {'c': 2, 'a': 1}
    """
    use = codes[codes >= 0]
    if not len(use):
        return {}
    uniq, first, counts = np.unique(use, return_index=True, return_counts=True)
    order = np.argsort(first, kind="stable")
    return {names[int(uniq[j])]: int(counts[j]) for j in order.tolist()}


class CategoricalWindow:
    """Ring of closed blocks of category counts (bounded vocabulary; the rest counts as `__other__`)."""

    def __init__(self, max_categories: int, blocks: int, vocab: list[str] | None = None) -> None:
        self.max_categories = max_categories
        self.blocks = blocks
        self.vocab: list[str] = list(vocab or [])
        self._known: set[str] = set(self.vocab)  # the vocabulary as a set (kept in step with `vocab`)
        self._closed: list[dict[str, int]] = []
        self._window: dict[str, int] | None = None  # the closed blocks' counts, kept as the window slides
        self.open: dict[str, int] = {}

    @property
    def closed(self) -> list[dict[str, int]]:
        """The closed blocks, oldest first (never changed once closed)."""
        return self._closed

    @closed.setter
    def closed(self, blocks: list[dict[str, int]]) -> None:
        self._closed = list(blocks)
        self._window = None  # made again from the blocks when next asked

    def add(self, codes: np.ndarray, names: list[str], allowed: set[str] | None = None) -> None:
        """Values as codes of `names` (-1: missing)."""
        self.add_counts(tally(codes, names), len(codes), int((codes < 0).sum()), allowed)

    def add_counts(self, tally: dict[str, int], count: int, missing: int, allowed: set[str] | None = None) -> None:
        """Merge the counts of `count` values (`missing` of them missing; `tally`: the others by category, in the
        order of their first value) into the open block. The vocabulary grows in the order categories first
        appear in the stream, so where batches were cut changes nothing (nor which ones a full one keeps)."""
        known = self._known
        for cat, cnt in tally.items():
            if cat not in known and len(self.vocab) < self.max_categories:
                self.vocab.append(cat)
                known.add(cat)
            key = cat if cat in known else OTHER
            self.open[key] = self.open.get(key, 0) + cnt
            if allowed is not None and cat not in allowed:
                self.open[UNSEEN_KEY] = self.open.get(UNSEEN_KEY, 0) + cnt
        self.open[N_KEY] = self.open.get(N_KEY, 0) + count
        self.open[MISSING_KEY] = self.open.get(MISSING_KEY, 0) + missing

    def close_block(self) -> None:
        block, self.open = self.open, {}
        self._closed.append(block)
        evicted = self._closed[: -self.blocks]
        del self._closed[: -self.blocks]
        window = self._window
        if window is not None:  # slide the running counts: the new block in, the oldest out (whole numbers)
            for k, v in block.items():
                if v:
                    window[k] = window.get(k, 0) + v
            for old in evicted:
                for k, v in old.items():
                    if v:
                        left = window[k] - v
                        if left:
                            window[k] = left
                        else:
                            del window[k]

    def window(self) -> dict[str, int] | None:
        """The closed blocks' counts added, counts of zero left out (a copy of the running counts)."""
        if not self._closed:
            return None
        if self._window is None:
            out: dict[str, int] = {}
            for block in self._closed:
                for k, v in block.items():
                    if v:
                        out[k] = out.get(k, 0) + v
            self._window = out
        return dict(self._window)

    def to_state(self) -> dict[str, Any]:
        return {"vocab": self.vocab, "closed": self.closed, "open": self.open}

    def load_state(self, state: dict[str, Any]) -> None:
        self.vocab = list(state["vocab"])
        self._known = set(self.vocab)
        self.closed = [dict(b) for b in state["closed"]]
        self.open = dict(state["open"])
