"""Issue 3 acceptance 2: a stationary stream of 20 features over 200 windows raises at most one alarm."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
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
