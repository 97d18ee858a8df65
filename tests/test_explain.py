"""Issue 15 #3: a prediction drift carries the features ranked by drift size x importance.

The importance of each feature is checked against scipy (Pearson's r; the correlation ratio by its
definition); the ranking by hand; and through both stages in process, a prediction drift caused by a
1-sigma shift of the feature the score leans on, while a feature the score barely uses shifts by 3 sigma
(drifting more), names the first one first.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from monitor.app.replay import replay
from monitor.core.explain import explanation, rank
from monitor.core.profiles import CategoricalProfile, NumericProfile, ReferenceProfile
from monitor.core.types import RawRecord
from monitor.profile.build import build_profile, feature_importance
from monitor.settings import load_settings
from tests.helpers import column_records

START = 1_780_000_000_000
STEP_MS = 50
FEATURES = {"type": "record", "name": "F", "fields": [
    {"name": "event_id", "type": "string"}, {"name": "event_time", "type": "long"},
    {"name": "x_hi", "type": "double"}, {"name": "x_lo", "type": "double"}, {"name": "n1", "type": "double"},
    {"name": "plan", "type": "string"}]}
PREDICTIONS = {"type": "record", "name": "P", "fields": [
    {"name": "event_id", "type": "string"}, {"name": "event_time", "type": "long"},
    {"name": "score", "type": "double"}]}


def stream(n: int, seed: int, shift_at: int | None = None) -> dict[str, np.ndarray]:
    """The score leans on x_hi (and a little on plan); x_lo and n1 it barely uses. From `shift_at`: x_hi +1
    sigma, x_lo +3 sigma."""
    rng = np.random.default_rng(seed)
    x_hi, x_lo, n1 = rng.normal(0, 1, n), rng.normal(0, 1, n), rng.normal(0, 1, n)
    plan = rng.choice(np.array(["basic", "plus", "pro"]), n, p=[0.5, 0.3, 0.2])
    if shift_at is not None:
        after = np.arange(n) >= shift_at
        x_hi = x_hi + np.where(after, 1.0, 0.0)
        x_lo = x_lo + np.where(after, 3.0, 0.0)
    logit = 1.5 * x_hi + 0.03 * x_lo + np.where(plan == "pro", 0.3, 0.0) + rng.normal(0, 0.3, n)
    return {"event_time": START + np.arange(n, dtype=np.int64) * STEP_MS, "x_hi": 5 + 2 * x_hi,
            "x_lo": 100 + 10 * x_lo, "n1": n1, "plan": plan, "score": 1 / (1 + np.exp(-logit))}


def test_importance_is_pearsons_r_and_the_correlation_ratio() -> None:
    cols = stream(20_000, seed=1)
    columns = {k: (v, np.zeros(len(v), bool)) for k, v in cols.items()}
    fields = {"x_hi": NumericProfile("numeric", 0, 0, 0, 0, [], None, None, None, None, [], []),
              "x_lo": NumericProfile("numeric", 0, 0, 0, 0, [], None, None, None, None, [], []),
              "plan": CategoricalProfile("categorical", 0, 0.0, [], [])}
    got = feature_importance(columns, fields, "score")
    assert got["x_hi"] == pytest.approx(abs(stats.pearsonr(cols["x_hi"], cols["score"])[0]), abs=1e-6)
    assert got["x_lo"] == pytest.approx(abs(stats.pearsonr(cols["x_lo"], cols["score"])[0]), abs=1e-6)
    y, groups = cols["score"], [cols["score"][cols["plan"] == p] for p in ("basic", "plus", "pro")]
    between = sum(len(g) * (g.mean() - y.mean()) ** 2 for g in groups)
    assert got["plan"] == pytest.approx(float(np.sqrt(between / ((y - y.mean()) ** 2).sum())), abs=1e-6)
    assert got["x_hi"] > 0.8 and got["x_lo"] < 0.1


def test_the_ranking_weighs_drift_size_by_importance() -> None:
    last = {"a": ["psi", 2.0, 0.2, "drift"], "b": ["psi", 0.5, 0.2, "drift"], "c": ["js", 0.05, 0.1, ""],
            "*": ["multivariate", 9.0, 0.1, "drift"]}
    ranked = rank(last, {"a": 0.05, "b": 0.9, "c": 0.5})
    # a: 10 x 0.05 = 0.5; b: 2.5 x 0.9 = 2.25; c: 0.5 x 0.5 = 0.25; the multivariate entry is not a feature.
    assert [(n, round(c, 6)) for n, c, *_ in ranked] == [("b", 2.25), ("a", 0.5), ("c", 0.25)]
    why = explanation(last, {"a": 0.05, "b": 0.9, "c": 0.5})
    assert why["explanation_top"] == "b" and why["explanation"].startswith("1. b 2.25 (psi 2.5 x its threshold")
    assert rank(last, {})[0][0] == "a"  # no importance known: by drift size alone
    assert "drift size (statistic / threshold) only" in explanation(last, {})["explanation_basis"]


def _records(cols: dict[str, np.ndarray], partitions: int = 3) -> dict[tuple[str, int], list[RawRecord]]:
    """Each event on both topics (a schema's writer takes its own fields of the row)."""
    return {**column_records(cols, "m.features", FEATURES, partitions),
            **column_records(cols, "m.predictions", PREDICTIONS, partitions)}


def test_a_prediction_drift_ranks_the_feature_the_score_leans_on_first(tmp_path: Path) -> None:
    from monitor.cli.main import _model_specs

    (tmp_path / "f.avsc").write_text(json.dumps(FEATURES))
    (tmp_path / "p.avsc").write_text(json.dumps(PREDICTIONS))
    cfg = {"window": {"by": "time", "block_ms": 10_000, "blocks": 10, "resolve_windows": 3},
           "models": [{"name": "m", "id_field": "event_id", "time_field": "event_time", "score_field": "score",
                       "features": {"topic": "m.features", "schema": str(tmp_path / "f.avsc")},
                       "predictions": {"topic": "m.predictions", "schema": str(tmp_path / "p.avsc")}}]}
    (tmp_path / "monitor.yaml").write_text(yaml.safe_dump(cfg))
    settings = load_settings(tmp_path / "monitor.yaml", environ={})
    ref_cols = stream(40_000, seed=2)
    ref = build_profile("m", _model_specs(settings, "m"), {k: (v, np.zeros(len(v), bool)) for k, v in ref_cols.items()},
                        version="v1", source="train", sentinels={}, time_field="event_time",
                        feature_fields=[s.name for s in _model_specs(settings, "m", ("features",))],
                        score_field="score")
    assert ref.importance is not None and ref.importance["x_hi"] > 10 * ref.importance["x_lo"]
    out = replay(settings, _records(stream(40_000, seed=3, shift_at=20_000)), {"m": ref})
    opened = [a for a in out.alerts if a.status == "OPEN"]
    pred = next(a for a in opened if str(a.kind) == "PREDICTION_DRIFT" and a.feature == "score")
    text = pred.evidence["explanation"]
    ranked = re.findall(r"\d\. (\w+) ([\d.e+-]+) \((\w+) ([\d.e+-]+) x its threshold, importance ([\d.]+)\)", text)
    sizes = {name: float(size) for name, _c, _s, size, _i in ranked}
    # When the prediction drift opened, the low-importance feature had drifted more than the one the score
    # leans on; the score's drift is still put on the latter first.
    assert sizes["x_lo"] > sizes["x_hi"] > 0, text
    assert next(name for name, *_ in ranked) == "x_hi" == pred.evidence["explanation_top"], text
    for _name, contribution, _s, size, importance in ranked:
        assert float(contribution) == pytest.approx(float(size) * float(importance), rel=0.05, abs=1e-3)
    # The features' own incident (here model-wide: two of four features moved) names both.
    wide = next(a for a in opened if str(a.kind) == "DRIFT")
    assert {"x_hi", "x_lo"} <= set(wide.evidence.get("features", wide.feature).split(", "))
    assert isinstance(ReferenceProfile.from_json(ref.to_json()).importance, dict)


def test_the_report_shows_the_ranking() -> None:
    from monitor.ops.report import render

    alert = {"status": "OPEN", "kind": "PREDICTION_DRIFT", "check": "cusum", "feature": "score", "event_time": 1,
             "source_offset": -1, "alert_id": "a",
             "explanation": "1. x_hi 0.253 (psi 0.265 x its threshold, importance 0.956); 2. x_lo 0.0297 (psi 1.32 x "
                            "its threshold, importance 0.0225)", "explanation_basis": "drift size x importance"}
    page = render("m", None, [], {"totals": {"events": 0, "rejects": 0}}, [alert])
    table = page[page.index("<table id=explanations>"):]
    assert table.index("<li>x_hi 0.253") < table.index("<li>x_lo 0.0297")
