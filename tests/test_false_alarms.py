"""Issue 3 acceptance 2: a stationary stream of 20 features over 200 windows raises at most one alarm."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from monitor.app.pipeline import build_processors
from monitor.core.types import RawRecord
from monitor.io.avro import encode_plain, load_schema
from monitor.profile.build import build_profile
from monitor.settings import load_settings
from tests.helpers import PER_PARTITION

NUMERIC = {
    "n_normal": lambda r, n: r.normal(10, 3, n),
    "n_lognormal": lambda r, n: r.lognormal(3, 1.0, n),
    "n_exponential": lambda r, n: r.exponential(2, n),
    "n_uniform": lambda r, n: r.uniform(-1, 1, n),
    "n_gamma": lambda r, n: r.gamma(2, 2, n),
    "n_beta": lambda r, n: r.beta(2, 5, n),
    "n_poisson": lambda r, n: r.poisson(3, n).astype(float),
    "n_binomial": lambda r, n: r.binomial(10, 0.3, n).astype(float),
    "n_t": lambda r, n: r.standard_t(4, n),
    "n_pareto": lambda r, n: r.pareto(3, n),
    "n_bimodal": lambda r, n: np.where(r.random(n) < 0.3, r.normal(-2, 0.5, n), r.normal(3, 1, n)),
    "n_flag": lambda r, n: (r.random(n) < 0.1).astype(float),
    "n_weibull": lambda r, n: r.weibull(1.5, n),
    "n_laplace": lambda r, n: r.laplace(0, 1, n),
}
CATEGORICAL = {
    "c_two": (["a", "b"], [0.7, 0.3]),
    "c_five": (list("abcde"), [0.3, 0.25, 0.2, 0.15, 0.1]),
    "c_skewed": (list("abcdefgh"), [0.6, 0.2, 0.1, 0.04, 0.03, 0.02, 0.007, 0.003]),
    "c_uniform": ([f"k{i}" for i in range(12)], [1 / 12] * 12),
    "c_rare": (["common", "rare"], [0.98, 0.02]),
    "c_three": (["x", "y", "z"], [0.34, 0.33, 0.33]),
}


def _columns(rng: np.random.Generator, n: int) -> dict[str, Any]:
    cols: dict[str, Any] = {name: gen(rng, n) for name, gen in NUMERIC.items()}
    for name, (values, probs) in CATEGORICAL.items():
        cols[name] = rng.choice(values, size=n, p=probs)
    return cols


def test_stationary_stream_has_at_most_one_false_alarm(tmp_path: Path) -> None:
    """20 features x 200 windows of 1,000 events, default settings: every check, at most 1 alert in total."""
    schema = {"type": "record", "name": "Wide", "fields": [{"name": "event_id", "type": "long"}]
              + [{"name": n, "type": "double"} for n in NUMERIC]
              + [{"name": n, "type": "string"} for n in CATEGORICAL]}
    (tmp_path / "wide.avsc").write_text(json.dumps(schema))
    cfg = {"models": [{"name": "wide", "time_field": None, "features": {"topic": "wide", "schema": "wide.avsc"}}],
           **PER_PARTITION}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(cfg))
    settings = load_settings(tmp_path / "m.yaml", environ={})
    rng = np.random.default_rng(2024)

    ref_cols = _columns(rng, 100_000)
    columns = {k: (np.asarray(v), np.zeros(len(v), bool)) for k, v in ref_cols.items()}
    proc0 = build_processors(settings)["wide"]
    profile = build_profile("wide", proc0.fields, columns, version="v1", source="synthetic", sentinels={},
                            time_field=None)
    proc = build_processors(settings, {"wide": profile})["wide"]
    parsed = load_schema(tmp_path / "wide.avsc")
    part = proc.new_partition(0)
    alerts = []
    offset = 0
    for _ in range(40):  # 40 x 5,000 = 200 windows of 1,000 events
        cols = _columns(rng, 5_000)
        lists = {k: np.asarray(v).tolist() for k, v in cols.items()}
        records = []
        for j in range(5_000):
            rec = {"event_id": offset, **{k: lists[k][j] for k in lists}}
            records.append(RawRecord("wide", 0, offset, None, encode_plain(parsed, rec)))
            offset += 1
        alerts += proc.process(part, records).alerts
    assert len(proc.fields) == 20
    assert part.blocks_closed >= 1990
    opened = [(a.feature, a.check) for a in alerts if a.status == "OPEN"]
    assert len(opened) <= 1, opened


# Issue 11 #19: every drift statistic, 10 million stationary values each, at most 1 false alarm per million.
TEN_MILLION_NUMERIC = {
    "normal": lambda r, n: r.normal(10, 3, n),
    "lognormal": lambda r, n: r.lognormal(3, 1.0, n),
    "poisson": lambda r, n: r.poisson(3, n).astype(float),  # discrete, sparse tail bins
}
TEN_MILLION_CATEGORICAL = {
    "five": np.array([0.3, 0.25, 0.2, 0.15, 0.1]),
    "fifty": np.full(50, 1 / 50),
    "zipf200": (1 / np.arange(1, 201)) / (1 / np.arange(1, 201)).sum(),
}


def _stationary_opens(statistic: str, numeric: bool, total: int = 10_000_000, window: int = 1_000,
                      step: int = 100, seed: int = 19) -> int:
    """OPEN alerts of the drift check on stationary streams of `total` values (split over three features),
    with the daemon's decision rule: a chi-squared p-value surviving Benjamini-Hochberg (fdr 0.001) across
    the features of the window and the statistic above its floor; an open check resolves after 3 windows
    clear of the floor by 20%. Windows of `window` values sliding by `step` (a window per block of 100, as
    per-partition windows evaluate; the model view evaluates less often), binned as the pipeline bins."""
    from monitor.core import stats
    from monitor.profile.build import bin_index, profile_numeric

    rng = np.random.default_rng(seed)
    per_feature = total // 3
    features = []  # (reference counts, window counts per step, centers, std)
    if numeric:
        for gen in TEN_MILLION_NUMERIC.values():
            ref_values = gen(rng, 100_000)
            prof = profile_numeric(ref_values, np.zeros(len(ref_values), bool), [])
            edges = np.asarray(prof.edges)
            bins = bin_index(edges, gen(rng, per_feature))
            steps = np.bincount(np.repeat(np.arange(per_feature // step), step) * (len(edges) + 1) + bins[
                : per_feature // step * step], minlength=(per_feature // step) * (len(edges) + 1))
            features.append((prof.counts(), steps.reshape(-1, len(edges) + 1).astype(float), prof.centers(),
                             prof.std))
    else:
        for p in TEN_MILLION_CATEGORICAL.values():
            ref = rng.multinomial(100_000, p).astype(float)
            features.append((ref, rng.multinomial(step, p, size=per_feature // step).astype(float), None, None))
    per_window = window // step
    opens, state = 0, [{"open": False, "clear": 0} for _ in features]
    sums = [np.cumsum(f[1], axis=0) for f in features]
    for t in range(per_window - 1, len(features[0][1])):
        values, floors, p_values = [], [], []
        for (ref, _by_step, centers, std), csum in zip(features, sums, strict=True):
            cur = csum[t] - (csum[t - per_window] if t >= per_window else 0.0)
            value = stats.statistic(statistic, ref, cur, centers)
            scale = std if statistic == "wasserstein" else None
            if scale:
                value /= scale
            values.append(value)
            floors.append(stats.effect_floor(statistic, 0.1 if statistic != "chi2" else 0.0, ref, cur, centers,
                                             scale))
            p_values.append(stats.chi2_homogeneity(ref, cur).p_value)
        significant = stats.benjamini_hochberg(np.array(p_values), 0.001)
        for k, st in enumerate(state):
            firing = bool(significant[k]) and values[k] > floors[k]
            if firing and not st["open"]:
                opens += 1
                st["open"], st["clear"] = True, 0
            elif st["open"]:
                st["clear"] = st["clear"] + 1 if values[k] <= 0.8 * floors[k] else 0
                if st["clear"] >= 3:
                    st["open"] = False
    return opens


@pytest.mark.parametrize(("statistic", "numeric"), [("psi", True), ("js", True), ("linf", True), ("ks", True),
                                                    ("wasserstein", True), ("js", False), ("psi", False),
                                                    ("linf", False), ("chi2", False)])
def test_at_most_one_false_alarm_per_million_values(statistic: str, numeric: bool) -> None:
    """Issue 11 #19: 10 million stationary values per statistic (normal, lognormal and Poisson(3) features, or
    5, 50 and 200-category Zipf features): at most 10 OPEN drift alerts, 1 per million values. With the fixed
    thresholds and the unpooled chi-squared gate the same streams gave 11 (JS, numeric) and 18 (PSI,
    categorical); the issue measured 1.3 per million for JS over ~50 categories, 3.6 on 200 Zipf ones."""
    opens = _stationary_opens(statistic, numeric)
    assert opens <= 10, f"{statistic}: {opens} false alarms in 10 million values"
