"""One spelling of a categorical value, in reference profiles, contracts and the stream alike.

A CSV or Parquet reader gives an integer column with gaps as floats ("1.0"), the stream's Avro `int` gives
"1"; a boolean is 1.0 in one and True in the other. Both sides go through `category_text`, so a value is the
same category wherever it was read.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def category_text(value: Any) -> str:
    """A value as its category: integral numbers without a fraction ("1", whether 1 or 1.0), booleans as
    "True"/"False", the rest as `str`.

    >>> [category_text(v) for v in (1, 1.0, 2.5, True, np.int64(7), np.float64(-3.0), "gb", 1e20)]
    ['1', '1', '2.5', 'True', '7', '-3', 'gb', '100000000000000000000']
    """
    if isinstance(value, bool | np.bool_):
        return "True" if value else "False"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        f = float(value)
        return str(int(f)) if math.isfinite(f) and f == math.floor(f) else str(f)
    return str(value)


def category_texts(values: np.ndarray) -> np.ndarray:
    """`category_text` of each value of an array (typed arrays converted in one step)."""
    if values.dtype == np.bool_:
        return np.where(values, "True", "False").astype(object)
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(str).astype(object)
    return np.array([category_text(v) for v in values.tolist()], dtype=object)
