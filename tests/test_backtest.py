"""Issue 14 #2: `model-monitor backtest` on retained history with injected incidents.

200,000 events of the example churn model (the simulator, another seed than the reference) in a Parquet file,
five incidents injected by the backtest itself; the report must find each with its delay, give the alert
rate on the clean part, and be the same when run again. The injections are checked against the rows by hand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from monitor.app.backtest import Injection, inject
from monitor.cli.main import main
from monitor.cli.simulate import Simulator
from monitor.core.profiles import ReferenceProfile
from monitor.errors import ConfigError
from monitor.settings import load_settings
from tests.helpers import EXAMPLES
from tests.test_model_view import build_reference

EVENTS = 200_000
INJECTED = [
    "shift:feature=age,start=30000,length=15000,size=1",
    "nan_burst:feature=monthly_charges,start=60000,length=10000,rate=0.3",
    "new_category:feature=payment_method,start=90000,length=10000,rate=0.2,value=crypto",
    "stuck:feature=credit_score,start=120000,length=10000",
    "score_collapse:start=150000,length=15000",
]


def config(tmp: Path) -> Path:
    cfg = yaml.safe_load((EXAMPLES / "monitor.yaml").read_text())
    model = cfg["models"][0]
    for kind in ("features", "predictions", "labels"):
        model[kind]["schema"] = str(EXAMPLES / model[kind]["schema"])
    model["sentinels"] = {"days_since_login": [-1.0]}
    cfg["redis_url"] = "redis://127.0.0.1:1/0"  # never reached: the reference comes from a file
    path = tmp / "monitor.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def retained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, ReferenceProfile]:
    """The events file, the reference JSON (what `reference export` writes) and the profile."""
    tmp = tmp_path_factory.mktemp("backtest")
    rows = [{**f, **p} for feats, preds in Simulator(seed=21).batches(EVENTS, 20_000)
            for f, p in zip(feats, preds, strict=True)]
    events = tmp / "events.parquet"
    pq.write_table(pa.Table.from_pylist(rows), events)
    reference = build_reference(tmp)
    ref_path = tmp / "reference.json"
    ref_path.write_text(reference.to_json())
    return events, ref_path, reference


def run_cli(tmp: Path, events: Path, ref: Path, out: str, *extra: str) -> dict[str, Any]:
    args = ["backtest", "--config", str(config(tmp)), "--model", "churn", "--input", str(events),
            "--reference", str(ref), "--out", str(tmp / out), *extra]
    for spec in INJECTED:
        args += ["--inject", spec]
    assert main(args) == 0
    assert (tmp / out / "report.html").read_text().count("<tr>") >= len(INJECTED)
    report: dict[str, Any] = json.loads((tmp / out / "report.json").read_text())
    return report


def test_five_injected_incidents_are_found_with_their_delays_and_the_report_repeats(
        tmp_path: Path, retained: tuple[Path, Path, ReferenceProfile]) -> None:
    events, ref, _ = retained
    report = run_cli(tmp_path, events, ref, "one")
    assert report["events"] == EVENTS and report["streams"] == ["features", "predictions"]
    assert report["rejects"] == 0 and report["unencodable"] == 0
    found = {i["injection"]: i for i in report["injected"]}
    assert list(found) == INJECTED
    for spec, entry in found.items():
        assert entry["detected"], (spec, report["checks"])
        # The simulator makes 100 events a second: the delay in events is about 100 x the delay in seconds,
        # and within the incident plus one 10 s window.
        assert 0 <= entry["delay_s"] <= 10 + (entry["end"] - entry["start"]) / 100, entry
        assert abs(entry["delay_events"] - 100 * entry["delay_s"]) <= 101, entry
    assert found[INJECTED[4]]["alert_feature"] in ("churn_score", "*")
    clean = report["clean"]
    # Clean: every event outside the five incidents and the window after each (10 s = 1,000 events).
    assert clean["events"] == EVENTS - sum(15_000 if "length=15000" in s else 10_000 for s in INJECTED) - 5 * 1_000
    assert clean["alerts"] == sum(c["opened_clean"] for c in report["checks"])
    assert clean["per_million_values"] == pytest.approx(clean["alerts"] / clean["events"] * 1e6, rel=1e-5)
    assert report["baselines"]["always_fire"]["detected"] == 5
    assert report["baselines"]["never_fire"]["detected"] == 0
    print(f"backtest: {report['summary']}, clean part {clean}")
    again = run_cli(tmp_path, events, ref, "two")
    assert again == report
    assert (tmp_path / "one" / "report.json").read_bytes() == (tmp_path / "two" / "report.json").read_bytes()


def test_injections_change_exactly_what_they_say(tmp_path: Path) -> None:
    """Each kind against the arithmetic: the right rows, the right values, nothing else touched."""
    settings = load_settings(config(tmp_path), environ={})
    model = settings.model("churn")
    rng = np.random.default_rng(3)
    base = [{"age": float(a), "plan": "basic", "churn_score": float(s), "tenure_months": int(t)}
            for a, s, t in zip(rng.normal(40, 10, 1000), rng.uniform(0, 1, 1000), rng.integers(1, 70, 1000),
                               strict=True)]
    ages = np.array([r["age"] for r in base])
    mean, std = ages.mean(), ages.std(ddof=1)

    def apply(spec: str) -> list[dict[str, Any]]:
        rows = [dict(r) for r in base]
        inject(rows, [Injection.parse(spec, model)], None, seed=0)
        return rows

    rows = apply("shift:feature=age,start=100,length=50,size=2")
    assert [r["age"] for r in rows[:100]] == [r["age"] for r in base[:100]]
    assert [r["age"] for r in rows[150:]] == [r["age"] for r in base[150:]]
    assert np.allclose([rows[i]["age"] - base[i]["age"] for i in range(100, 150)], 2 * std)
    rows = apply("scale:feature=age,start=0,factor=3")
    assert np.allclose([r["age"] for r in rows], mean + 3 * (ages - mean))
    rows = apply("stuck:feature=tenure_months,start=900")
    assert {r["tenure_months"] for r in rows[900:]} == {round(np.mean([r["tenure_months"] for r in base]))}
    rows = apply("nan_burst:feature=age,start=0,rate=0.5")
    hit = sum(math.isnan(r["age"]) for r in rows)
    assert 400 < hit < 600  # a binomial(1000, 0.5)
    assert apply("nan_burst:feature=age,start=0,rate=0.5") == rows  # the same seed, the same rows
    rows = apply("nulls:feature=age,start=500,length=100,rate=1")
    assert [i for i, r in enumerate(rows) if r["age"] is None] == list(range(500, 600))
    rows = apply("new_category:feature=plan,start=0,rate=1,value=gold")
    assert {r["plan"] for r in rows} == {"gold"}
    rows = apply("score_collapse:start=0")  # the model's score_field, pulled to its mean by 0.1
    scores = np.array([r["churn_score"] for r in base])
    assert np.allclose([r["churn_score"] for r in rows], scores.mean() + 0.1 * (scores - scores.mean()))


@pytest.mark.parametrize("spec, message", [
    ("melt:feature=age,start=1", "unknown kind"),
    ("shift:start=1", "needs feature= and start="),
    ("shift:feature=age,start=1,speed=2", "unknown argument 'speed'"),
    ("shift:feature=age,start=x", "not a number"),
    ("nan_burst:feature=age,start=1,rate=2", "0 < rate <= 1"),
])
def test_bad_injections_are_clear_errors(tmp_path: Path, spec: str, message: str) -> None:
    model = load_settings(config(tmp_path), environ={}).model("churn")
    with pytest.raises(ConfigError, match=message):
        Injection.parse(spec, model)
