"""Issue 14 #2 on a real Kafka: `backtest --from-topics` reads what the model's topics retain with the
daemon's decoder, and reports what a backtest of the same events from a file reports; it writes nothing to
Kafka (the alerts and dead-letter topics stay empty) or Redis (no key under the prefix)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from monitor.cli.main import main
from monitor.cli.simulate import Simulator
from tests.helpers import MODEL_VIEW, Setup, end_offsets, produce_simulated
from tests.test_model_view import build_reference

pytestmark = pytest.mark.integration
EVENTS = 20_000
INJECT = ["shift:feature=age,start=8000,length=6000,size=1",
          "nan_burst:feature=monthly_charges,start=15000,length=3000,rate=0.3"]


@pytest.fixture
def setup(kafka_bootstrap: str, redis_url: str, unique: str, tmp_path: Path) -> Setup:
    s = Setup(unique, kafka_bootstrap, redis_url, tmp_path)
    s.create_topics()
    return s


def backtest(setup: Setup, config: Path, ref: Path, out: str, *source: str) -> dict[str, Any]:
    args = ["backtest", "--config", str(config), "--model", "churn", "--reference", str(ref),
            "--out", str(setup.tmp / out), *source]
    for spec in INJECT:
        args += ["--inject", spec]
    assert main(args) == 0
    report: dict[str, Any] = json.loads((setup.tmp / out / "report.json").read_text())
    return report


def test_a_backtest_of_the_topics_equals_one_of_the_same_events_in_a_file(setup: Setup) -> None:
    produce_simulated(setup, EVENTS, seed=12)
    rows = [{**f, **p} for feats, preds in Simulator(seed=12).batches(EVENTS, 5_000)
            for f, p in zip(feats, preds, strict=True)]
    pq.write_table(pa.Table.from_pylist(rows), setup.tmp / "events.parquet")
    ref = setup.tmp / "reference.json"
    ref.write_text(build_reference(setup.tmp).to_json())
    config = setup.write_config(MODEL_VIEW)

    from_topics = backtest(setup, config, ref, "topics", "--from-topics")
    from_file = backtest(setup, config, ref, "file", "--input", str(setup.tmp / "events.parquet"))
    assert from_topics["events"] == EVENTS and from_topics["undecodable"] == 0
    assert from_topics["summary"] == from_file["summary"] and from_file["summary"]["detected"] == 2
    for key in ("injected", "checks", "clean", "first_event_time", "last_event_time"):
        assert from_topics[key] == from_file[key], key
    assert from_topics["source"].startswith(f"{setup.features} ({EVENTS} records), {setup.predictions}")
    # An offset range: the same offsets of every partition of the features topic (each holds > 2,000).
    assert main(["backtest", "--config", str(config), "--model", "churn", "--reference", str(ref),
                 "--from-topics", "--start-offset", "1000", "--end-offset", "3000",
                 "--out", str(setup.tmp / "offsets")]) == 0
    ranged = json.loads((setup.tmp / "offsets" / "report.json").read_text())
    assert ranged["events"] == 3 * 2_000 and ranged["streams"] == ["features", "predictions"]
    # --since past every record: nothing to replay, a clear error.
    assert main(["backtest", "--config", str(config), "--model", "churn", "--reference", str(ref),
                 "--from-topics", "--since", "2100-01-01T00:00:00Z", "--out", str(setup.tmp / "none")]) == 2
    # Read only: nothing on the alerts or dead-letter topics, no key under the prefix.
    assert sum(end_offsets(setup.bootstrap, setup.alerts).values()) == 0
    assert sum(end_offsets(setup.bootstrap, setup.dead_letter).values()) == 0
    from monitor.io.redis_client import connect

    assert list(connect(setup.redis_url).scan_iter(match=f"*{setup.prefix}*", count=1000)) == []
