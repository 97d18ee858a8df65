"""The numeric part of a block summary, packed: one little-endian float64 array per block.

A block (`schemas/block.avsc`) carries its numeric fields as three parallel values: `numeric_fields` (names),
`numeric_bins` (histogram length per field, 0 when not binned on reference bins) and `numeric_values`: for
each field in turn a row of `ROW_HEAD + bins` float64s, the sketch head of `monitor.core.sketches` (count,
missing, nan, inf, finite, sum, M2, min, max, below, above, sentinel), then the sum of the finite values
clipped to the reference mean +- clip_z std (`CLIPPED`), then the histogram. Stage 1 writes a block with one
`tobytes`, stage 2 reads it with one `frombuffer` and merges a block into its slot with one vector addition
(and Chan's correction of each field's M2) when both stages see the same fields and bins (the same
reference), which is the rule, not the exception. Blocks written before M2 (`moments` absent in the block)
carried a sum of squares there; `migrate_m2` converts them.
"""

from __future__ import annotations

import numpy as np

from monitor.core.sketches import (
    ABOVE,
    BELOW,
    FINITE,
    HEAD,
    INF,
    M2,
    MAX,
    MIN,
    MISSING,
    NAN,
    SENTINEL,
    SUM,
    combine_m2,
    m2_from_sum_of_squares,
)

CLIPPED = HEAD  # index, in a packed row, of the clipped sum
ROW_HEAD = HEAD + 1  # the histogram starts here
DTYPE = np.dtype("<f8")


def pack(rows: list[np.ndarray]) -> bytes:
    """The rows (each `ROW_HEAD + bins` long) as `numeric_values` bytes."""
    if not rows:
        return b""
    return np.concatenate(rows).astype(DTYPE, copy=False).tobytes()


def packed_row(vector: np.ndarray | None, clipped: float, hist_len: int, binned: bool) -> np.ndarray:
    """A sketch vector (`HEAD + hist_len`, or None for an empty block) and its clipped sum as a packed row."""
    row = np.zeros(ROW_HEAD + (hist_len if binned else 0))
    if vector is None:
        row[MIN], row[MAX] = np.inf, -np.inf
        return row
    row[:HEAD] = vector[:HEAD]
    row[CLIPPED] = clipped
    if binned:
        row[ROW_HEAD:] = vector[HEAD:HEAD + hist_len]
    return row


class Layout:
    """Where each numeric field's row sits in a packed array; merges blocks laid out alike in one addition."""

    def __init__(self, names: list[str], bins: list[int]) -> None:
        if len(names) != len(bins):
            raise ValueError(f"{len(names)} numeric fields but {len(bins)} histogram lengths")
        if any(b < 0 for b in bins):
            raise ValueError("a histogram length is negative")
        self.names = list(names)
        self.bins = [int(b) for b in bins]
        self.key = (tuple(self.names), tuple(self.bins))
        widths = np.array([ROW_HEAD + b for b in self.bins], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64) if len(widths) else \
            np.zeros(0, dtype=np.int64)
        self.size = int(widths.sum())
        self.index = {name: i for i, name in enumerate(self.names)}
        self.mins = self.offsets + MIN
        self.maxs = self.offsets + MAX
        self.finites, self.sums, self.m2s = self.offsets + FINITE, self.offsets + SUM, self.offsets + M2
        # Per field, where its counts of missing, nan, inf, sentinel, below and above values are.
        self.rates = self.offsets[:, None] + np.array([MISSING, NAN, INF, SENTINEL, BELOW, ABOVE])[None, :]

    def empty(self) -> np.ndarray:
        """The packed array of a block with no values (min +inf, max -inf: the identity of `merge`)."""
        out = np.zeros(self.size)
        out[self.mins] = np.inf
        out[self.maxs] = -np.inf
        return out

    def read(self, payload: bytes) -> np.ndarray:
        """`numeric_values` bytes laid out this way; ValueError when the length does not match."""
        if len(payload) != self.size * DTYPE.itemsize:
            raise ValueError(f"numeric_values holds {len(payload)} bytes, the layout needs {self.size * 8}")
        return np.frombuffer(payload, dtype=DTYPE).astype(float)

    def row(self, packed: np.ndarray, name: str) -> np.ndarray:
        i = self.index[name]
        start = int(self.offsets[i])
        return packed[start:start + ROW_HEAD + self.bins[i]]

    def merge(self, acc: np.ndarray, other: np.ndarray) -> None:
        """`acc` += `other` in place, every field's min and max taken as min and max and its M2 combined."""
        low = np.minimum(acc[self.mins], other[self.mins])
        high = np.maximum(acc[self.maxs], other[self.maxs])
        m2 = combine_m2(acc[self.finites], acc[self.sums], acc[self.m2s], other[self.finites], other[self.sums],
                        other[self.m2s])
        acc += other
        acc[self.m2s] = m2
        acc[self.mins] = low
        acc[self.maxs] = high

    def migrate_m2(self, packed: np.ndarray) -> None:
        """A block written before M2 (its slot held the sum of squares), converted in place."""
        if len(self.offsets):
            m2_from_sum_of_squares(packed, self.offsets)

    def convert(self, source: Layout, packed: np.ndarray, keep_histograms: bool) -> np.ndarray:
        """A block laid out as `source` in this layout: fields it lacks are empty; a histogram is kept only
        when `keep_histograms` (same reference) and its length matches, else its bins stay zero."""
        out = self.empty()
        for i, name in enumerate(source.names):
            j = self.index.get(name)
            if j is None:
                continue
            src = source.row(packed, name)
            dst = int(self.offsets[j])
            out[dst:dst + ROW_HEAD] = src[:ROW_HEAD]
            if keep_histograms and source.bins[i] == self.bins[j]:
                out[dst + ROW_HEAD:dst + ROW_HEAD + self.bins[j]] = src[ROW_HEAD:]
        return out


# A categorical field's part of a block: name, count, missing, unseen, counts by category.
CategoricalSummary = tuple[str, int, int, int, dict[str, int]]
INT = np.dtype("<i8")


def pack_categorical(summaries: list[CategoricalSummary]) -> tuple[list[str], list[list[str]], bytes]:
    """`categorical_fields`, `categorical_categories` and `categorical_counts` of a block."""
    counts: list[int] = []
    for _name, count, missing, unseen, cats in summaries:
        counts += [count, missing, unseen, *cats.values()]
    return ([s[0] for s in summaries], [list(s[4]) for s in summaries],
            np.array(counts, dtype=INT).tobytes())


def unpack_categorical(fields: list[str], categories: list[list[str]], counts: bytes) -> list[CategoricalSummary]:
    """`pack_categorical`'s inverse; ValueError when the three do not match."""
    if len(fields) != len(categories):
        raise ValueError(f"{len(fields)} categorical fields but {len(categories)} category lists")
    need = sum(3 + len(c) for c in categories)
    if len(counts) != need * INT.itemsize:
        raise ValueError(f"categorical_counts holds {len(counts)} bytes, the categories need {need * 8}")
    values = np.frombuffer(counts, dtype=INT).tolist()
    out: list[CategoricalSummary] = []
    at = 0
    for name, cats in zip(fields, categories, strict=True):
        out.append((name, values[at], values[at + 1], values[at + 2],
                    dict(zip(cats, values[at + 3:at + 3 + len(cats)], strict=True))))
        at += 3 + len(cats)
    return out
