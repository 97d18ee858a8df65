"""A false-alarm budget: `alerts.false_alarms_per_day` of a model turned into each statistical check's threshold.

The budget is split evenly over the model's statistical checks (per numeric field: the window drift test and
the CUSUM; per categorical field: the drift test; both streams). Each check then gets its share b per day:

- **drift**: a window is evaluated at every slot, E = 86,400 s / slot a day; a drift must also have its
  chi-squared p-value below p_max = b / E (Bonferroni over the day's evaluations: sliding windows overlap,
  so the true rate of false incidents is lower still).
- **CUSUM**: a two-sided CUSUM with allowance k on standardised values has an in-control average run length
  ARL0 (Siegmund's approximation for normal values: (e^(2k(h+1.166)) - 2k(h+1.166) - 1) / (2k^2) for one
  side, half that for two); h is set so that ARL0 >= the events of a day / b (evaluated per slot, the CUSUM
  can only fire less often than that).

Pure arithmetic; `monitor.app.pipeline` applies it to the features' settings unless a feature's own
override sets `cusum.h` or `drift.p_max`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DAY_S = 86_400.0
_SIEGMUND = 1.166


def cusum_arl0(h: float, k: float) -> float:
    """In-control average run length (values) of a two-sided CUSUM on N(0, 1) values (Siegmund).

    >>> round(2 * cusum_arl0(4.0, 0.5))  # one side: Montgomery's table gives 336
    338
    """
    b = 2 * k * (h + _SIEGMUND)
    one_side = (math.exp(b) - b - 1) / (2 * k * k)
    return one_side / 2


def cusum_h_for(arl0: float, k: float) -> float:
    """The smallest h whose two-sided ARL0 reaches `arl0` values (bisection on a monotone function)."""
    lo, hi = 0.0, 1.0
    while cusum_arl0(hi, k) < arl0:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        if cusum_arl0(mid, k) < arl0:
            lo = mid
        else:
            hi = mid
    return hi


@dataclass(frozen=True)
class Budget:
    per_day: float  # the model's budget
    checks: int  # statistical checks sharing it
    share: float  # each check's false alarms a day
    events_per_s: float
    evaluations_per_day: float
    drift_p_max: float
    cusum_h: float
    cusum_k: float

    def summary(self) -> dict[str, float | int]:
        return {"false_alarms_per_day": self.per_day, "checks": self.checks, "per_check_per_day": self.share,
                "events_per_s": round(float(self.events_per_s), 3), "evaluations_per_day": self.evaluations_per_day,
                "drift_p_max": float(f"{self.drift_p_max:.4g}"), "cusum_h": round(self.cusum_h, 3),
                "cusum_k": self.cusum_k}


def derive(per_day: float, events_per_s: float, slot_ms: int, drift_checks: int, cusum_checks: int,
           cusum_k: float) -> Budget:
    """Each check's threshold for a model budget of `per_day` false alarms (see the module's doc)."""
    checks = max(1, drift_checks + cusum_checks)
    share = per_day / checks
    evaluations = DAY_S * 1000.0 / slot_ms
    p_max = min(0.5, share / evaluations)
    events = max(events_per_s, 1e-9) * DAY_S
    h = cusum_h_for(events / share, cusum_k)
    return Budget(per_day, checks, share, events_per_s, evaluations, p_max, h, cusum_k)
