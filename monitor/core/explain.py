"""Why the model's output moved: the features ranked by how much their drift can explain it.

A feature's contribution is its drift size — its latest drift statistic over that statistic's threshold (so
PSI, Jensen-Shannon and Wasserstein compare), from the features stream's last evaluation — times its
importance: how much the score moves with it, from the reference (|correlation| with the score, the
correlation ratio for a categorical feature; `reference build`) or the model's `importance:` map. A feature
that drifted a lot but that the model barely uses ranks below a smaller drift of a feature it leans on.
"""

from __future__ import annotations

from typing import Any

from monitor.core.multivariate import MV_ALERT_FIELD

TOP = 5


def rank(last_drift: dict[str, list[Any]], importance: dict[str, float]) -> list[tuple[str, float, float, float, str]]:
    """(feature, contribution, drift size, importance, statistic) for every feature with a drift value, the
    largest contribution first (ties by name). Without any importance known, importance is 1 for all."""
    out = []
    for name, entry in last_drift.items():
        if name == MV_ALERT_FIELD or not entry:
            continue
        check, statistic, threshold = str(entry[0]), float(entry[1]), float(entry[2])
        size = statistic / threshold if threshold > 0 else 0.0
        weight = float(importance.get(name, 0.0)) if importance else 1.0
        out.append((name, size * weight, size, weight, check))
    return sorted(out, key=lambda r: (-r[1], r[0]))


def explanation(last_drift: dict[str, list[Any]], importance: dict[str, float]) -> dict[str, str]:
    """Evidence for a prediction drift or CONCEPT_DRIFT alert: the top features, as text."""
    ranked = rank(last_drift, importance)
    if not ranked:
        return {}
    basis = ("drift size (statistic / threshold) x importance" if importance else
             "drift size (statistic / threshold) only: no importance known (reference without a score column "
             "and no importance: map)")
    lines = [f"{i}. {name} {contribution:.3g} ({check} {size:.3g} x its threshold, importance {weight:.3g})"
             for i, (name, contribution, size, weight, check) in enumerate(ranked[:TOP], start=1)]
    return {"explanation": "; ".join(lines), "explanation_top": ranked[0][0], "explanation_basis": basis}
