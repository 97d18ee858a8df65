"""The state codec's varint writer, compiled: it runs at every checkpoint. Kept apart from
`monitor.core.state_codec`, whose reader (`status`, `report`) must start without numba."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def encode_varints(values: np.ndarray) -> np.ndarray:
    """`state_codec.varints` (non-negative integers < 2^56 as LEB128, 7 bits a byte), one pass."""
    out = np.empty(values.shape[0] * 8, dtype=np.uint8)
    at = 0
    for v in values:
        while v >= 0x80:
            out[at] = (v & 0x7F) | 0x80
            v >>= 7
            at += 1
        out[at] = v
        at += 1
    return out[:at].copy()
