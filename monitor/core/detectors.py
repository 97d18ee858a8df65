"""Online change detectors, batched, with explicit serialisable state.

`Adwin` and `PageHinkley` reproduce river's `drift.ADWIN` and `drift.PageHinkley` detections on the
same stream (tests compare them index by index); unlike river's, their state round-trips through JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit


@dataclass(frozen=True, slots=True)
class Detection:
    """A change found at position `index` of the batch passed to `update_many`.

    For ADWIN `statistic` is |mean(W0) - mean(W1)| at the first cut that held and `threshold` the bound
    epsilon it exceeded; for Page-Hinkley they are the test value and the configured threshold.
    """

    index: int
    statistic: float
    threshold: float
    window: int = 0  # values in the detector's window when it fired
    change: float = 0.0  # ADWIN: mean(W1) - mean(W0), the recent part's mean less the older's (0: not known)


MAX_ROWS = 64  # bucket rows: row i summarises 2**i values, so 64 rows cover any window


def _finite(values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The finite values (a detector skips NaN and +-inf: one would leave its sums at nan for good), and where
    each sits in the input (None when all are finite), so detections keep the caller's indices."""
    x = np.ascontiguousarray(values, dtype=np.float64)
    ok = np.isfinite(x)
    if ok.all():
        return x, None
    where = np.flatnonzero(ok)
    return np.ascontiguousarray(x[where]), where


def _at(found: list[Detection], where: np.ndarray | None) -> list[Detection]:
    if where is None:
        return found
    return [Detection(int(where[d.index]), d.statistic, d.threshold, d.window, d.change) for d in found]


@njit(cache=True)
def _epsilon(n0: float, n1: float, width: float, variance: float, delta: float, mwl: float) -> float:
    delta_prime = math.log(2.0 * math.log(width) / delta)
    m_recip = 1.0 / (n0 - mwl + 1.0) + 1.0 / (n1 - mwl + 1.0)
    return math.sqrt(2.0 * m_recip * (variance / width) * delta_prime) + 2.0 / 3.0 * delta_prime * m_recip


@njit(cache=True)
def _adwin_run(values: np.ndarray, tot: np.ndarray, var: np.ndarray, cnt: np.ndarray, fs: np.ndarray,
               ints: np.ndarray, delta: float, clock: int, max_buckets: int, mwl: float, grace: float,
               out: np.ndarray) -> int:  # pragma: no cover - compiled; tested through Adwin
    """ADWIN over a batch, compiled. fs = [total, variance, width], ints = [tick, rows, pending_reset].

    Writes (index, statistic, threshold, width, signed change) of each detection to `out`; returns how many.
    The arithmetic follows river's implementation operation by operation, so results are identical.
    """
    found = 0
    cap = max_buckets + 1
    for i in range(values.shape[0]):
        if ints[2] == 1:  # the update after a detection starts a fresh window
            for r in range(ints[1]):
                cnt[r] = 0
            ints[0] = 0
            ints[1] = 1
            ints[2] = 0
            fs[0] = 0.0
            fs[1] = 0.0
            fs[2] = 0.0
        value = values[i]
        # insert
        tot[0, cnt[0]] = value
        var[0, cnt[0]] = 0.0
        cnt[0] += 1
        fs[2] += 1.0
        if fs[2] > 1.0:
            dv = value - fs[0] / (fs[2] - 1.0)
            fs[1] += (fs[2] - 1.0) * dv * dv / fs[2]
        fs[0] += value
        # compress
        idx = 0
        while cnt[idx] == cap:
            n1 = float(1 << idx)
            t0 = tot[idx, 0]
            t1 = tot[idx, 1]
            mu1 = t0 / n1
            mu2 = t1 / n1
            merged = var[idx, 0] + var[idx, 1] + n1 * 0.5 * (mu1 - mu2) * (mu1 - mu2)
            if idx + 1 == ints[1]:
                ints[1] += 1
                cnt[idx + 1] = 0
            tot[idx + 1, cnt[idx + 1]] = t0 + t1
            var[idx + 1, cnt[idx + 1]] = merged
            cnt[idx + 1] += 1
            for k in range(cnt[idx] - 2):
                tot[idx, k] = tot[idx, k + 2]
                var[idx, k] = var[idx, k + 2]
            cnt[idx] -= 2
            if cnt[idx + 1] <= max_buckets:
                break
            idx += 1
        # detect
        ints[0] += 1
        if ints[0] % clock != 0 or fs[2] <= grace:
            continue
        changed = False
        stat = 0.0
        signed = 0.0
        thr = 0.0
        reduce = True
        while reduce:
            reduce = False
            n0 = 0.0
            n1w = fs[2]
            u0 = 0.0
            u1 = fs[0]
            cut = False
            for row in range(ints[1] - 1, -1, -1):
                size = float(1 << row)
                last_k = cnt[row] - 1
                for k in range(cnt[row]):
                    t = tot[row, k]
                    n0 += size
                    n1w -= size
                    u0 += t
                    u1 -= t
                    if row == 0 and k == last_k:
                        break
                    if n1w >= mwl and n0 >= mwl:
                        eps = _epsilon(n0, n1w, fs[2], fs[1], delta, mwl)
                        if abs(u0 / n0 - u1 / n1w) > eps:
                            if not changed:
                                stat = abs(u0 / n0 - u1 / n1w)
                                signed = u1 / n1w - u0 / n0
                                thr = eps
                            changed = True
                            reduce = True
                            if fs[2] > 0.0:
                                # delete the oldest bucket
                                last = ints[1] - 1
                                n = float(1 << last)
                                u = tot[last, 0]
                                v = var[last, 0]
                                for kk in range(cnt[last] - 1):
                                    tot[last, kk] = tot[last, kk + 1]
                                    var[last, kk] = var[last, kk + 1]
                                cnt[last] -= 1
                                mu = u / n
                                fs[2] -= n
                                fs[0] -= u
                                mu_window = fs[0] / fs[2]
                                fs[1] -= v + n * fs[2] * (mu - mu_window) * (mu - mu_window) / (n + fs[2])
                                if cnt[last] == 0:
                                    ints[1] -= 1
                                cut = True
                                break
                if cut:
                    break
        if changed:
            ints[2] = 1
            out[found, 0] = i
            out[found, 1] = stat
            out[found, 2] = thr
            out[found, 3] = fs[2]
            out[found, 4] = signed
            found += 1
    return found


class Adwin:
    """ADWIN (Bifet & Gavaldà 2007) with exponential-histogram buckets, as in river, compiled with numba.

    After a detection the next update starts a fresh window, like river's wrapper does.

    >>> import random
    >>> rng = random.Random(12345)
    >>> stream = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)
    >>> [d.index for d in Adwin().update_many(np.array(stream, dtype=float))]
    [1023]
    """

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
    ) -> None:
        self.delta = delta
        self.clock = clock
        self.max_buckets = max_buckets
        self.min_window_length = float(min_window_length)
        self.grace_period = float(grace_period)
        self.tot = np.zeros((MAX_ROWS, max_buckets + 1))
        self.var = np.zeros((MAX_ROWS, max_buckets + 1))
        self.cnt = np.zeros(MAX_ROWS, dtype=np.int64)
        self.fs = np.zeros(3)  # total, variance, width
        self.ints = np.array([0, 1, 0], dtype=np.int64)  # tick, rows in use, pending reset

    @property
    def width(self) -> float:
        return float(self.fs[2])

    @property
    def pending_reset(self) -> bool:
        return bool(self.ints[2])

    def update_many(self, values: np.ndarray) -> list[Detection]:
        x, where = _finite(values)
        out = np.zeros((len(x) // max(self.clock, 1) + 2, 5))
        n = _adwin_run(x, self.tot, self.var, self.cnt, self.fs, self.ints, self.delta, self.clock,
                       self.max_buckets, self.min_window_length, self.grace_period, out)
        return _at([Detection(int(out[k, 0]), float(out[k, 1]), float(out[k, 2]), int(out[k, 3]), float(out[k, 4]))
                    for k in range(n)], where)

    def to_state(self) -> dict[str, Any]:
        rows = int(self.ints[1])
        return {
            "total": float(self.fs[0]),
            "variance": float(self.fs[1]),
            "width": float(self.fs[2]),
            "tick": int(self.ints[0]),
            "rows_total": [self.tot[r, : self.cnt[r]].tolist() for r in range(rows)],
            "rows_var": [self.var[r, : self.cnt[r]].tolist() for r in range(rows)],
            "pending_reset": bool(self.ints[2]),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.fs[:] = (float(state["total"]), float(state["variance"]), float(state["width"]))
        rows = len(state["rows_total"])
        self.ints[:] = (int(state["tick"]), max(rows, 1), int(bool(state["pending_reset"])))
        self.cnt[:] = 0
        for r, (ts, vs) in enumerate(zip(state["rows_total"], state["rows_var"], strict=True)):
            self.cnt[r] = len(ts)
            self.tot[r, : len(ts)] = ts
            self.var[r, : len(vs)] = vs


@njit(cache=True)
def _page_hinkley_run(x: np.ndarray, st: np.ndarray, alpha: float, delta: float, threshold: float,
                      min_instances: float, mode: int) -> tuple[int, float]:
    """Advance river's Page-Hinkley over `x`, value by value, with river's arithmetic (so its floats, bit for
    bit); stop at the first detection. `st` = [n, mean, sum_increase, sum_decrease, min_increase,
    max_decrease], updated in place. Returns (index of the detection or -1, its test value)."""
    n, mean, s_inc, s_dec, min_inc, max_dec = st[0], st[1], st[2], st[3], st[4], st[5]
    found, stat = -1, 0.0
    for i in range(len(x)):
        v = x[i]
        n += 1.0
        mean += (1.0 / n) * (v - mean)
        dev = v - mean
        s_inc = alpha * s_inc + dev - delta
        s_dec = alpha * s_dec + dev + delta
        if s_inc < min_inc:
            min_inc = s_inc
        if s_dec > max_dec:
            max_dec = s_dec
        if n >= min_instances:
            t_inc = s_inc - min_inc
            t_dec = max_dec - s_dec
            if mode == 0:
                fired, t = t_inc > threshold, t_inc
            elif mode == 1:
                fired, t = t_dec > threshold, t_dec
            else:
                fired, t = t_inc > threshold or t_dec > threshold, max(t_inc, t_dec)
            if fired:
                found, stat = i, t
                break
    st[0], st[1], st[2], st[3], st[4], st[5] = n, mean, s_inc, s_dec, min_inc, max_dec
    return found, stat


_PH_MODES = {"up": 0, "down": 1, "both": 2}


class PageHinkley:
    """Page-Hinkley test with a fading running mean, as river's; compiled with numba, value by value.

    River's own incremental mean and sums, in its order of operations: the same detections as river at any
    magnitude (a running mean from cumulative sums lost equality on 1e12 + N(0, 1)) and however the stream is
    split into batches. After a detection the scan goes on from the next value, never over the batch again.

    >>> import random
    >>> rng = random.Random(12345)
    >>> stream = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)
    >>> [d.index for d in PageHinkley().update_many(np.array(stream, dtype=float))]
    [1006]
    """

    def __init__(
        self,
        min_instances: int = 30,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
        mode: str = "both",
    ) -> None:
        if mode not in _PH_MODES:
            raise ValueError(f"mode must be up, down or both, not {mode!r}")
        self.min_instances = min_instances
        self.delta = delta
        self.threshold = threshold
        self.alpha = alpha
        self.mode = mode
        self._st = np.zeros(6)
        self._reset()
        self.pending_reset = False

    def _reset(self) -> None:
        self._st[:] = (0.0, 0.0, 0.0, 0.0, math.inf, -1.0)  # river starts max_decrease at -1, not -inf

    @property
    def n(self) -> int:
        return int(self._st[0])

    @property
    def mean(self) -> float:
        return float(self._st[1])

    def update_many(self, values: np.ndarray) -> list[Detection]:
        found: list[Detection] = []
        x, where = _finite(values)
        start = 0
        mode = _PH_MODES[self.mode]
        while start < len(x):
            if self.pending_reset:
                self._reset()
                self.pending_reset = False
            index, stat = _page_hinkley_run(x[start:], self._st, self.alpha, self.delta, self.threshold,
                                            float(self.min_instances), mode)
            if index < 0:
                break
            found.append(Detection(start + index, stat, self.threshold, window=self.n))
            self.pending_reset = True
            start += index + 1
        return _at(found, where)

    def to_state(self) -> dict[str, Any]:
        st = self._st.tolist()
        return {"n": int(st[0]), "mean": st[1], "sum_increase": st[2], "sum_decrease": st[3],
                "min_increase": st[4], "max_decrease": st[5], "pending_reset": self.pending_reset}

    def load_state(self, state: dict[str, Any]) -> None:
        self._st[:] = (float(state["n"]), float(state["mean"]), float(state["sum_increase"]),
                       float(state["sum_decrease"]), float(state["min_increase"]), float(state["max_decrease"]))
        self.pending_reset = bool(state["pending_reset"])


class _ErrorStreamDetector:
    """A detector of the error stream (1 = the model was wrong): per-value update, JSON state."""

    _fields: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.pending_reset = False

    def _reset(self) -> None:
        raise NotImplementedError

    def _update(self, x: float) -> bool:
        raise NotImplementedError

    def update_many(self, values: np.ndarray) -> list[Detection]:
        found = []
        finite, where = _finite(values)
        for i, x in enumerate(finite.tolist()):
            if self.pending_reset:
                self._reset()
                self.pending_reset = False
            if self._update(x):
                self.pending_reset = True
                found.append(Detection(i, *self._statistic()))
        return _at(found, where)

    def _statistic(self) -> tuple[float, float, int]:
        raise NotImplementedError

    def to_state(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in (*self._fields, "pending_reset")}

    def load_state(self, state: dict[str, Any]) -> None:
        for name in (*self._fields, "pending_reset"):
            setattr(self, name, state[name])


class DDM(_ErrorStreamDetector):
    """Drift Detection Method (Gama et al. 2004), as river's `drift.binary.DDM` (river's example finds the
    change at index 1334):

    >>> import random
    >>> rng = random.Random(42)
    >>> stream = rng.choices([0, 1], k=1000) + rng.choices([0, 1], k=1000, weights=[0.3, 0.7])
    >>> [d.index for d in DDM().update_many(np.array(stream))]
    [1334]
    """

    _fields = ("n", "p", "p_min", "s_min", "ps_min")

    def __init__(self, warm_start: int = 30, warning_threshold: float = 2.0, drift_threshold: float = 3.0) -> None:
        super().__init__()
        self.warm_start = warm_start
        self.warning_threshold = warning_threshold
        self.drift_threshold = drift_threshold
        self._reset()

    def _reset(self) -> None:
        self.n = 0
        self.p = 0.0
        self.p_min: float | None = None
        self.s_min: float | None = None
        self.ps_min = math.inf

    def _update(self, x: float) -> bool:
        self.n += 1
        self.p += (x - self.p) / self.n
        s = math.sqrt(self.p * (1 - self.p) / self.n)
        if self.n <= self.warm_start:
            return False
        if self.p + s <= self.ps_min:
            self.p_min, self.s_min, self.ps_min = self.p, s, self.p + s
        assert self.p_min is not None and self.s_min is not None
        self._last = (self.p + s, self.p_min + self.drift_threshold * self.s_min)
        return self.p + s > self.p_min + self.drift_threshold * self.s_min

    def _statistic(self) -> tuple[float, float, int]:
        return self._last[0], self._last[1], self.n


class EDDM(_ErrorStreamDetector):
    """Early Drift Detection Method (Baena-García et al. 2006), as river's `drift.binary.EDDM`.

    The statistic is the ratio of the current to the best (mean + 2 std) distance between errors.
    """

    _fields = ("n", "last_error", "n_errors", "p2s_max", "dist_n", "dist_mean", "dist_m2")

    def __init__(self, warm_start: int = 30, alpha: float = 0.95, beta: float = 0.9) -> None:
        super().__init__()
        if alpha < beta:
            raise ValueError("alpha must be >= beta")
        self.warm_start, self.alpha, self.beta = warm_start, alpha, beta
        self._reset()

    def _reset(self) -> None:
        self.n = 0
        self.last_error = 0
        self.n_errors = 0
        self.p2s_max = -1.0
        self.dist_n = 0
        self.dist_mean = 0.0
        self.dist_m2 = 0.0

    def _update(self, x: float) -> bool:
        self.n += 1
        if x != 1:
            return False
        self.n_errors += 1
        d = float(self.n - self.last_error)
        self.dist_n += 1
        delta = d - self.dist_mean
        self.dist_mean += delta / self.dist_n
        self.dist_m2 += delta * (d - self.dist_mean)
        fired = False
        if self.n > self.warm_start:
            var = self.dist_m2 / (self.dist_n - 1) if self.dist_n > 1 else 0.0
            p2s = self.dist_mean + 2 * var**0.5
            if p2s > self.p2s_max:
                self.p2s_max = p2s
            elif self.n_errors > self.warm_start:
                self._level = p2s / self.p2s_max
                fired = self._level < self.beta
        self.last_error = self.n
        return fired

    def _statistic(self) -> tuple[float, float, int]:
        return self._level, self.beta, self.n


class HDDMA(_ErrorStreamDetector):
    """Hoeffding's-bound drift detection on moving averages (Frías-Blanco et al. 2014), as river's
    `drift.binary.HDDM_A` (one-sided: an increase of the error rate)."""

    _fields = ("z_n", "z_mean", "min_n", "min_mean", "max_n", "max_mean")

    def __init__(self, drift_confidence: float = 0.001, two_sided_test: bool = False) -> None:
        super().__init__()
        self.drift_confidence = drift_confidence
        self.two_sided_test = two_sided_test
        self._reset()

    def _reset(self) -> None:
        self.z_n, self.z_mean = 0, 0.0
        self.min_n, self.min_mean = 0, 0.0
        self.max_n, self.max_mean = 0, 0.0

    def _bound(self, n: int) -> float:
        return math.sqrt(1.0 / (2 * n) * math.log(1.0 / self.drift_confidence))

    def _update(self, x: float) -> bool:
        self.z_n += 1
        self.z_mean += (x - self.z_mean) / self.z_n
        if self.min_n == 0:
            self.min_n, self.min_mean = self.z_n, self.z_mean
        if self.max_n == 0:
            self.max_n, self.max_mean = self.z_n, self.z_mean
        eps_z = self._bound(self.z_n)
        if self.min_mean + self._bound(self.min_n) >= self.z_mean + eps_z:
            self.min_n, self.min_mean = self.z_n, self.z_mean
        if self.max_mean - self._bound(self.max_n) <= self.z_mean - eps_z:
            self.max_n, self.max_mean = self.z_n, self.z_mean
        fired = self._shift(self.min_n, self.z_mean - self.min_mean)
        if self.two_sided_test and not fired:
            fired = self._shift(self.max_n, self.max_mean - self.z_mean)
        return fired

    def _shift(self, n_ref: int, gap: float) -> bool:
        if n_ref == self.z_n:
            return False
        m = (self.z_n - n_ref) / n_ref * (1.0 / self.z_n)
        self._last = (gap, math.sqrt(m / 2 * math.log(2.0 / self.drift_confidence)))
        return gap >= self._last[1]

    def _statistic(self) -> tuple[float, float, int]:
        return self._last[0], self._last[1], self.z_n
